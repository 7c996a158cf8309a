//! Parsing and validation of whole specs: fields, lines and messages.

use std::path::PathBuf;

use super::*;
use crate::bounds;

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

/// Promise: `publish_models` is a flag; with `anonymize` it is refused, saying why (a card
/// names its weights' source).
#[test]
fn publish_models_is_refused_with_anonymize() {
    assert!(
        parse(&format!("{GOOD}publish_models: true\n"))
            .unwrap()
            .publish_models
    );
    assert!(!parse(GOOD).unwrap().publish_models);
    let e = errors(&format!("{GOOD}publish_models: true\nanonymize: true\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].field, "publish_models");
    assert_eq!(e[0].line, Some(16));
    assert!(e[0].message.contains("anonymize"), "{}", e[0]);
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
/// `KUBESTYLE_UPDATE_SCHEMA=1 cargo test -p pipeline` (or `-p kubestyle-spec`).
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
    if std::env::var_os("KUBESTYLE_UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "{path} is stale: run KUBESTYLE_UPDATE_SCHEMA=1 cargo test -p pipeline"
    );
}

/// `field` (`a.b.c`) in the generated JSON Schema: properties followed through `$ref`,
/// `anyOf` (an optional section) and `allOf`.
fn schema_field(field: &str) -> serde_json::Value {
    let root = serde_json::to_value(schemars::schema_for!(Spec)).unwrap();
    let deref = |mut v: serde_json::Value| loop {
        if let Some(r) = v.get("$ref").and_then(|r| r.as_str()) {
            let name = r.rsplit('/').next().unwrap();
            v = root["$defs"][name].clone();
        } else if let Some(alts) = v
            .get("anyOf")
            .or_else(|| v.get("allOf"))
            .and_then(|a| a.as_array())
        {
            v = alts
                .iter()
                .find(|a| a.get("type") != Some(&serde_json::json!("null")))
                .unwrap()
                .clone();
        } else {
            return v;
        }
    };
    let mut v = root.clone();
    for part in field.split('.') {
        v = deref(v)["properties"][part].clone();
        assert!(!v.is_null(), "{field}: no {part} in the schema");
    }
    v
}

/// A spec with `value` at `field` (`a.b.c`), the sections on the way created.
#[test]
fn style_controls_are_checked_per_style_and_globally() {
    let s = parse(
        &GOOD
            .replace("\"7\", ", "\"7~preserve-colour~strength=0.6\", ")
            .replace(
                "  max_size: 512",
                "  max_size: 512\n  preserve_colour: true\n  strength: 0.5",
            ),
    )
    .unwrap();
    assert!(s.stylize.preserve_colour);
    assert_eq!(s.stylize.strength, Some(0.5));
    assert_eq!(s.styles[0], "7~preserve-colour~strength=0.6");
    let bad = GOOD
        .replace("\"7\", ", "\"7~strength=2\", \"7~sepia\", ")
        .replace("  max_size: 512", "  max_size: 512\n  strength: 1.5");
    let e = errors(&bad);
    let shown: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    for needle in [
        "styles[0]: \"7~strength=2\": strength=\"2\" must be a number from 0 to 1",
        "styles[1]: \"7~sepia\": unknown control \"sepia\"",
        "stylize.strength: 1.5 must be a number from 0 to 1",
    ] {
        assert!(
            shown.iter().any(|s| s.contains(needle)),
            "{needle} in {shown:#?}"
        );
    }
    // The schema bounds the strength as the validator does.
    let f = schema_field("stylize.strength");
    assert_eq!(f["minimum"], 0.0, "{f}");
    assert_eq!(f["maximum"], 1.0, "{f}");
}

fn spec_with(field: &str, value: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_yaml_ng::from_str(GOOD).unwrap();
    let parts: Vec<&str> = field.split('.').collect();
    let mut at = &mut v;
    for p in &parts[..parts.len() - 1] {
        if at.get(*p).is_none() {
            at[*p] = serde_json::json!({});
        }
        at = &mut at[*p];
    }
    at[parts[parts.len() - 1]] = value;
    serde_yaml_ng::to_string(&v).unwrap()
}

/// Promise: the published JSON Schema and `pipeline validate` bound every number of the spec
/// alike (one source, `bounds`): each field's schema carries the range, and the validator
/// refuses one below and one above it.
#[test]
fn every_number_is_bounded_alike_by_the_schema_and_the_validator() {
    let fields = [
        ("kubernetes.gpu.shards", bounds::SHARDS),
        ("kubernetes.gpu.parallelism", bounds::GPU_PARALLELISM),
        ("kubernetes.gpu.per_pod", bounds::GPUS_PER_POD),
        ("kubernetes.backoff_limit", bounds::BACKOFF_LIMIT),
        (
            "kubernetes.active_deadline_seconds",
            bounds::ACTIVE_DEADLINE_SECONDS,
        ),
        ("kubernetes.ttl_seconds_after_finished", bounds::TTL_SECONDS),
        ("parallelism.transfers", bounds::TRANSFERS),
        ("parallelism.threads", bounds::THREADS),
        ("stylize.max_size", bounds::MAX_SIZE),
        ("stylize.max_pixels", bounds::MAX_PIXELS),
    ];
    for (field, r) in fields {
        let s = deref_numbers(schema_field(field));
        assert_eq!(s.0, Some(r.min), "{field}: schema minimum");
        assert_eq!(s.1, Some(r.max), "{field}: schema maximum");
        for bad in [r.min - 1, r.max + 1] {
            let text = spec_with(field, bad.into());
            // Below the type's range (a negative u32) is the typed parse's error, also exit 2.
            let e = errors(&text);
            assert!(
                e.iter().any(|e| e.field == field),
                "{field} = {bad} passes: {e:?}"
            );
        }
        let at_max = parse(&spec_with(field, r.max.into()))
            .err()
            .unwrap_or_default();
        assert!(
            !at_max
                .iter()
                .any(|e| e.field == field && e.message.contains("out of range")),
            "{field} = {} (the maximum) refused: {at_max:?}",
            r.max
        );
    }
}

fn deref_numbers(v: serde_json::Value) -> (Option<i64>, Option<i64>) {
    (
        v.get("minimum").and_then(|m| m.as_i64()),
        v.get("maximum").and_then(|m| m.as_i64()),
    )
}

/// Promise: hostile `kubernetes` values are refused by `validate` (exit 2) before `render` or
/// `submit` allocate for them or meet the API server's 422: the review's list.
#[test]
fn hostile_kubernetes_values_are_refused_with_their_field() {
    let cases: [(&str, serde_json::Value); 14] = [
        ("kubernetes.gpu.shards", 2_000_000_000u32.into()),
        ("kubernetes.volume.size", "ten gigs".into()),
        ("kubernetes.backoff_limit", (-5).into()),
        ("kubernetes.gpu.per_pod", 0.into()),
        ("kubernetes.volume.mount_path", "/tmp".into()),
        ("kubernetes.volume.mount_path", "/tmp/data".into()),
        ("kubernetes.volume.mount_path", "/".into()),
        ("kubernetes.volume.mount_path", "/data/../tmp".into()),
        ("kubernetes.volume.mount_path", "data".into()),
        ("kubernetes.service_account", "../admin".into()),
        ("kubernetes.s3_secret", "Not A Name".into()),
        ("kubernetes.registry", "evil registry".into()),
        ("kubernetes.tag", "a:b".into()),
        ("parallelism.transfers", 1000.into()),
    ];
    for (field, value) in cases {
        let e = errors(&spec_with(field, value.clone()));
        assert!(
            e.iter().any(|e| e.field == field),
            "{field} = {value} passes: {e:?}"
        );
    }
    let e = errors(&spec_with(
        "kubernetes.resources",
        serde_json::json!({"stylize": {"memory": "lots", "cpu": "2"}}),
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].field, "kubernetes.resources.stylize.memory");
    let e = errors(&spec_with(
        "kubernetes.gpu.tolerations",
        serde_json::json!([{"key": "a b", "operator": "Sometimes", "effect": "Never"}]),
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    // What a cluster takes passes.
    parse(&spec_with(
        "kubernetes",
        serde_json::json!({
            "registry": "localhost:5000/team/kubestyle", "tag": "v1.2.3-rc.1",
            "s3_secret": "s3-creds", "service_account": "kubestyle",
            "volume": {"size": "1.5Ti", "mount_path": "/mnt/data", "storage_class": "gp3"},
            "resources": {"stylize": {"cpu": "500m", "memory": "8Gi"}},
            "gpu": {"node_selector": {"nvidia.com/gpu.product": "A100"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
        }),
    ))
    .unwrap();
}

/// Promise: a spec whose YAML aliases would expand past `MAX_EXPANDED_BYTES` is refused (exit
/// 2) without the expansion being allocated: a 64 KiB anchored string aliased 100,000 times
/// (6.4 GB expanded) used to abort the process.
#[test]
fn aliases_expanding_past_the_bound_are_refused_without_allocating_them() {
    // 512 KiB anchored, aliased 100,000 times in a list of strings: 51 GB once expanded.
    let big = "x".repeat(512 << 10);
    let aliases = vec!["*big"; 100_000].join(",");
    let text = GOOD
        .replace(
            "name: demo",
            &format!("name: demo\ndescription: &big {big}"),
        )
        .replace(
            "styles: [\"7\", \"3:0.5,12:0.5\"]",
            &format!("styles: [{aliases}]"),
        );
    assert!(
        text.len() as u64 <= bounds::MAX_SPEC_BYTES,
        "{}",
        text.len()
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].message.contains("aliases expand"), "{}", e[0]);
    // A few aliases of a small anchor are still fine.
    let s = parse(&GOOD.replace(
        "styles: [\"7\", \"3:0.5,12:0.5\"]",
        "styles: [&s \"7\", *s, *s]",
    ))
    .unwrap();
    assert_eq!(s.styles, ["7", "7", "7"]);
}

/// Promise: a spec file over `MAX_SPEC_BYTES` is refused as such, without being read whole.
#[test]
fn a_spec_file_over_the_bound_is_refused_unread() {
    let dir = tempfile_dir();
    let path = dir.join("spec.yaml");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(bounds::MAX_SPEC_BYTES * 1024).unwrap();
    let e = load(&path).unwrap_err();
    assert!(e.errors[0].message.contains("larger than"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("kubestyle-spec-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Promise: a source of images never yields a model: a weights file named among the images
/// is refused, with the way out.
#[test]
fn a_weights_file_among_the_images_is_refused() {
    let e = errors(&GOOD.replace(
        "    - images/\n",
        "    - images/\n    - s3://photos/evil.pth\n",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].field, "sources.images[1]");
    assert!(e[0].message.contains("sources.models"), "{}", e[0]);
}

/// The specs the repository ships (examples, the cluster and kind specs, the fuzz seeds that
/// are meant to pass) stay within the bounds.
#[test]
fn the_shipped_specs_are_within_the_bounds() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for f in [
        "examples/demo.yaml",
        "examples/s3.yaml",
        "examples/transformer-net.yaml",
        "manifests/example-spec.yaml",
        "manifests/ci/kind-spec.yaml",
        "fuzz/corpus/spec/demo.yaml",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{f}")).unwrap();
        if let Err(e) = parse(&text) {
            panic!("{f}: {e:?}");
        }
    }
}

/// Found by the `spec` fuzz target: malformed YAML (an unclosed flow mapping) is refused at
/// once, not walked for ever by the alias bound's check.
#[test]
fn malformed_yaml_is_refused_at_once() {
    let text = "version: 1\nname: big\nsources:\n  images: [a/]\n  models: [{ud: 0}\n  backoff_limit: -5\n";
    let t = std::time::Instant::now();
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
}
