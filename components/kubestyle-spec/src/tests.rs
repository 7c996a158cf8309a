//! Parsing and validation of whole specs: fields, lines and messages.

use std::path::PathBuf;

use super::*;

const GOOD: &str = "\
version: 1
name: demo
sources:
  images:
    - images/
    - s3://photos/cats/
  models:
    - uri: s3://models/multistyle26.onnx
      architecture: multistyle26
    - uri: weights/candy.pth
      styles: [\"0\"]
styles: [\"7\", \"3:0.5,12:0.5\"]
output: s3://results/kubestyle/
stylize:
  max_size: 512
";

#[test]
fn good_spec_parses_with_defaults() {
    let s = parse(GOOD).unwrap();
    assert_eq!(s.name, "demo");
    assert_eq!(s.stylize.device, "auto");
    assert_eq!(s.parallelism.transfers, 4);
    assert_eq!(
        s.sources.models[1].styles.as_deref(),
        Some(&["0".to_string()][..])
    );
}

fn errors(text: &str) -> Vec<SpecError> {
    parse(text).unwrap_err()
}

#[test]
fn unknown_keys_are_refused_with_field_and_line() {
    let e = errors(&GOOD.replace("  max_size: 512", "  max_size: 512\n  maxsize: 3"));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].field, "stylize.maxsize");
    assert_eq!(e[0].line, Some(16));
    assert!(e[0].message.contains("unknown field `maxsize`"), "{}", e[0]);

    let e = errors(&GOOD.replace("output:", "endpoint: http://x\noutput:"));
    assert!(
        e[0].message.contains("unknown field `endpoint`"),
        "{}",
        e[0]
    );
    assert_eq!(e[0].line, Some(13));
}

#[test]
fn type_errors_name_the_field_and_line() {
    let e = errors(&GOOD.replace("max_size: 512", "max_size: big"));
    assert_eq!(e[0].field, "stylize.max_size");
    assert_eq!(e[0].line, Some(15));
    let e = errors(&GOOD.replace("architecture: multistyle26", "architecture: vgg"));
    assert_eq!(e[0].field, "sources.models[0].architecture");
    assert_eq!(e[0].line, Some(9));
}

#[test]
fn semantic_errors_are_all_reported_with_lines() {
    let bad = GOOD
        .replace("name: demo", "name: Demo_Run")
        .replace("\"7\", ", "\"7\", \"26\", \"2:-1\", ")
        .replace("s3://photos/cats/", "http://example.com/cat.jpg")
        .replace("weights/candy.pth", "weights/candy.txt");
    let e = errors(&bad);
    let shown: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    let has = |needle: &str, line: usize| {
        assert!(
            e.iter()
                .any(|x| x.to_string().contains(needle) && x.line == Some(line)),
            "{needle} at line {line} in {shown:#?}"
        )
    };
    has("name: invalid run id", 2);
    has("sources.images[1]: \"http://example.com/cat.jpg\"", 6);
    has("sources.models[1].uri", 10);
    has("styles[1]: \"26\": style index 26 is out of range", 12);
    has("styles[2]: \"2:-1\": weight", 12);
}

#[test]
fn line_lookup_walks_keys_and_items() {
    assert_eq!(line_of(GOOD, "sources.models[1].styles"), Some(11));
    assert_eq!(line_of(GOOD, "sources.models[1]"), Some(10));
    assert_eq!(line_of(GOOD, "sources.images[0]"), Some(5));
    assert_eq!(line_of(GOOD, "output"), Some(13));
    assert_eq!(line_of(GOOD, "nothing.here"), None);
}

#[test]
fn kubernetes_section_is_typed() {
    let s = parse(&format!(
        "{GOOD}kubernetes:\n  namespace: styles\n  gpu:\n    shards: 4\n    parallelism: 2\n    same_node: true\n    tolerations:\n      - key: nvidia.com/gpu\n        operator: Exists\n        effect: NoSchedule\n"
    ))
    .unwrap();
    let k = s.kubernetes.unwrap();
    assert_eq!(k.gpu.shards, 4);
    assert_eq!(k.volume.mount_path, "/data");
    let e = errors(&format!("{GOOD}kubernetes:\n  gpu:\n    shard: 4\n"));
    assert!(e[0].message.contains("unknown field `shard`"));
    assert_eq!(e[0].line, Some(18));
}

/// A ReadWriteOnce claim is mounted by one node at a time: parallel shards need
/// ReadWriteMany, one shard at a time, or every shard on one node.
#[test]
fn parallel_shards_on_a_read_write_once_claim_are_refused_with_the_way_out() {
    let k = |extra: &str| {
        format!("{GOOD}kubernetes:\n  gpu:\n    shards: 4\n    parallelism: 2\n{extra}")
    };
    let e = errors(&k(""));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].field, "kubernetes.volume.access_mode");
    for needle in [
        "Multi-Attach",
        "ReadWriteMany",
        "parallelism: 1",
        "same_node: true",
    ] {
        assert!(e[0].message.contains(needle), "{needle}: {}", e[0]);
    }
    parse(&k("    same_node: true\n")).unwrap();
    parse(&k("  volume:\n    access_mode: ReadWriteMany\n")).unwrap();
    parse(&k("  volume:\n    claim: shared\n")).unwrap();
    parse(&k("").replace("parallelism: 2", "parallelism: 1")).unwrap();
    let e = errors(&k(
        "    same_node: true\n  volume:\n    access_mode: ReadWriteOncePod\n",
    ));
    assert!(e[0].message.contains("one pod at a time"), "{}", e[0]);
    let e = errors(&k("  volume:\n    access_mode: ReadWriteSometimes\n"));
    assert!(e[0].message.contains("expected ReadWriteOnce"), "{}", e[0]);
    assert_eq!(e[0].line, Some(21));
    let e = errors(&k(
        "  volume:\n    storage_class: \"\"\n    access_mode: ReadWriteMany\n",
    ));
    assert_eq!(e[0].field, "kubernetes.volume.storage_class");
}

#[test]
fn model_styles_default_to_the_top_level() {
    let l = Loaded {
        spec: parse(GOOD).unwrap(),
        path: "/x/spec.yaml".into(),
        dir: "/x".into(),
        hash: String::new(),
    };
    assert_eq!(
        l.model_styles(),
        vec![
            (
                "multistyle26".to_string(),
                vec!["7".to_string(), "3:0.5,12:0.5".to_string()]
            ),
            ("candy".to_string(), vec!["0".to_string()]),
        ]
    );
    assert_eq!(l.volume(), PathBuf::from("/x/.kubestyle/volume"));
    assert_eq!(l.resolve("images/"), "/x/images/");
    assert_eq!(l.resolve("../out/./a"), "/out/a");
    assert_eq!(l.resolve("s3://b/k/"), "s3://b/k/");
    assert_eq!(l.buckets(), vec!["models", "photos", "results"]);
}

/// The committed schema is what the types generate (as `pipeline schema` prints it), checked
/// here too so that it needs no build of `pipeline`. Regenerate with
/// `KUBESTYLE_UPDATE_SCHEMA=1 cargo test -p pipeline`.
#[test]
fn committed_schema_matches_the_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/pipeline-spec-v1.schema.json"
    );
    let want = format!(
        "{}\n",
        serde_json::to_string_pretty(&schemars::schema_for!(Spec)).unwrap()
    );
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "{path} is stale: run KUBESTYLE_UPDATE_SCHEMA=1 cargo test -p pipeline"
    );
}
