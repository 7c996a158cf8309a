//! What the weight targets share: the limits they read under and the checks they run.

use std::path::Path;
use std::sync::OnceLock;

use kubestyle_weights::Architecture;
use kubestyle_weights::weights::{ReadLimits, WeightFile};

/// 16 MiB: above both architectures' float32 weights (6.7 MB at most), so `read_checked` is
/// reached, and low enough that `read_all` of a deflate bomb stays within `-rss_limit_mb`.
pub const LIMITS: ReadLimits = ReadLimits {
    max_weight_bytes: 16 << 20,
};

/// A scratch directory for the lifetime of the process (under `$TMPDIR`, which
/// `scripts/fuzz.sh` points at a directory it removes afterwards).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("kubestyle-fuzz")
            .tempdir()
            .expect("scratch directory")
    })
    .path()
}

/// Everything a caller may do with an opened header: both architecture checks (and the reads
/// they allow), detection, and reading every tensor. Errors are expected; panics are bugs.
pub fn exercise(file: &WeightFile) {
    let _ = file.shapes();
    let _ = Architecture::detect_names(|k| file.tensors().contains_key(k));
    for arch in [Architecture::TransformerNet, Architecture::MultiStyle26] {
        if let Ok((map, dropped)) = file.read_checked(arch) {
            assert!(dropped.iter().all(|k| !map.contains_key(k)));
            for (name, shape) in arch.expected() {
                let t = &map[&name];
                assert_eq!(t.shape, shape, "{name}");
                assert_eq!(t.data.len(), shape.iter().product::<usize>(), "{name}");
            }
        }
    }
    if let Ok(map) = file.read_all() {
        for (name, t) in &map {
            let info = &file.tensors()[name];
            assert_eq!(t.shape, info.shape, "{name}");
            assert_eq!(t.data.len() as u64, info.elements, "{name}");
        }
    }
}
