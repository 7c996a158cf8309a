//! Unit tests of the readers: hostile headers and limits.

use super::*;

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn field(tag: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint(tag << 3 | 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// ModelProto{graph{initializer: each body}}.
fn model(initializers: &[Vec<u8>]) -> Vec<u8> {
    let mut graph = Vec::new();
    for t in initializers {
        field(5, t, &mut graph);
    }
    let mut m = Vec::new();
    field(7, &graph, &mut m);
    m
}

/// A float TensorProto with packed dims and raw data.
fn tensor(name: &str, dims: &[i64], raw: &[u8]) -> Vec<u8> {
    let mut packed = Vec::new();
    for &d in dims {
        varint(d as u64, &mut packed);
    }
    let mut t = Vec::new();
    field(1, &packed, &mut t);
    t.extend_from_slice(&[0x10, 1]); // data_type = FLOAT
    field(8, name.as_bytes(), &mut t);
    field(9, raw, &mut t);
    t
}

fn open(name: &str, bytes: &[u8]) -> Result<WeightFile, WeightsError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    open_weights(&p, &ReadLimits::default())
}

fn err(r: Result<WeightFile, WeightsError>) -> String {
    let e = r.unwrap_err();
    assert!(matches!(e, WeightsError::Invalid(_)), "{e:?}");
    e.to_string()
}

#[test]
fn onnx_packed_dims_are_checked_without_panicking() {
    let ok = open("a.onnx", &model(&[tensor("w", &[2, 1], &[0; 8])])).unwrap();
    assert_eq!(ok.tensors()["w"].shape, [2, 1]);
    assert_eq!(ok.read_all().unwrap()["w"].data, [0.0, 0.0]);
    let e = err(open("a.onnx", &model(&[tensor("w", &[-5], &[])])));
    assert!(e.contains("w has a negative dimension (-5)"), "{e}");
    let big = 1i64 << 40;
    let e = err(open("a.onnx", &model(&[tensor("w", &[big, big], &[])])));
    assert!(e.contains("element count overflows"), "{e}");
    let e = err(open("a.onnx", &model(&[tensor("w", &[1; 17], &[0; 4])])));
    assert!(e.contains("rank 17"), "{e}");
    let e = err(open("a.onnx", &model(&[tensor("w", &[3], &[0; 7])])));
    assert!(e.contains("7 bytes of raw_data"), "{e}");
    // A graph field running past the end of the file.
    let mut cut = model(&[tensor("w", &[2, 1], &[0; 8])]);
    cut.truncate(cut.len() - 3);
    let e = err(open("a.onnx", &cut));
    assert!(e.contains("not an ONNX model"), "{e}");
}

#[test]
fn onnx_initializer_count_is_bounded() {
    // Empty initializers cost 2 bytes each on disk; they are counted, not collected.
    let mut graph = Vec::new();
    for _ in 0..=MAX_TENSORS {
        field(5, &[], &mut graph);
    }
    let mut m = Vec::new();
    field(7, &graph, &mut m);
    let e = err(open("a.onnx", &m));
    assert!(e.contains("more than 4096"), "{e}");
}

#[test]
fn safetensors_header_size_is_checked_before_parsing() {
    let mut b = (1u64 << 40).to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    let e = err(open("a.safetensors", &b));
    assert!(
        e.contains("safetensors header of 1099511627776 bytes"),
        "{e}"
    );
}

#[test]
fn read_checked_reads_only_after_the_architecture_check() {
    // A correct name with a wrong shape: refused, naming the tensor, without reading.
    let f = open(
        "a.onnx",
        &model(&[tensor("conv1.conv2d.weight", &[2], &[0; 8])]),
    )
    .unwrap();
    let e = f
        .read_checked(Architecture::TransformerNet)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("conv1.conv2d.weight has shape [2], expected [32, 3, 9, 9]"),
        "{e}"
    );
}
