//! Streaming SHA-256 and the validated hex digest type used in manifests.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::StageError;

/// A SHA-256 digest as 64 lowercase hex characters. Construction validates.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Sha256Hex(#[schemars(regex(pattern = r"^[0-9a-f]{64}$"))] String);

#[derive(Debug, thiserror::Error)]
#[error("not a SHA-256 digest (want 64 lowercase hex characters): {0:?}")]
pub struct BadDigest(pub String);

impl Sha256Hex {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Sha256Hex(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // Validated on construction.
        hex::decode_to_slice(&self.0, &mut out).unwrap_or_default();
        out
    }
}

impl FromStr for Sha256Hex {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Self, BadDigest> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Sha256Hex(s.to_string()))
        } else {
            Err(BadDigest(s.chars().take(80).collect()))
        }
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Hex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// Incremental SHA-256 with a byte count.
#[derive(Default, Clone)]
pub struct Hasher {
    inner: Sha256,
    bytes: u64,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.bytes += data.len() as u64;
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn finish(self) -> (Sha256Hex, u64) {
        (
            Sha256Hex::from_bytes(self.inner.finalize().into()),
            self.bytes,
        )
    }
}

/// A writer that hashes everything written through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
        }
    }
    pub fn finish(self) -> (W, Sha256Hex, u64) {
        let (d, n) = self.hasher.finish();
        (self.inner, d, n)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub fn sha256_bytes(data: &[u8]) -> Sha256Hex {
    Sha256Hex::from_bytes(Sha256::digest(data).into())
}

/// Hash a reader to its end, in 256 KiB chunks.
pub fn sha256_reader(r: impl Read) -> std::io::Result<(Sha256Hex, u64)> {
    sha256_reader_sized(r, CHUNK)
}

const CHUNK: usize = 256 * 1024;

/// [`sha256_reader`] with a buffer of `chunk` bytes (a 6 KB file needs no 256 KiB buffer zeroed:
/// that memset was most of the time of verifying 20,000 small outputs).
fn sha256_reader_sized(mut r: impl Read, chunk: usize) -> std::io::Result<(Sha256Hex, u64)> {
    let mut h = Hasher::new();
    let mut buf = vec![0u8; chunk.clamp(4096, CHUNK)];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(h.finish())
}

/// SHA-256 and size of a file.
pub fn sha256_file(path: impl AsRef<Path>) -> Result<(Sha256Hex, u64), StageError> {
    let path = path.as_ref();
    let f = std::fs::File::open(path).map_err(|e| StageError::read(path, e))?;
    // One byte more than the file, so that its end is seen by the second read.
    let chunk = f
        .metadata()
        .map(|m| usize::try_from(m.len()).unwrap_or(CHUNK).saturating_add(1))
        .unwrap_or(CHUNK);
    sha256_reader_sized(f, chunk).map_err(|e| StageError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn known_vectors() {
        assert_eq!(sha256_bytes(b"").as_str(), EMPTY);
        assert_eq!(sha256_bytes(b"abc").as_str(), ABC);
        let (d, n) = sha256_reader(&b"abc"[..]).unwrap();
        assert_eq!((d.as_str(), n), (ABC, 3));
    }

    #[test]
    fn streaming_matches_one_shot_across_chunk_boundaries() {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut h = Hasher::new();
        for c in data.chunks(7777) {
            h.update(c);
        }
        assert_eq!(h.finish(), (sha256_bytes(&data), data.len() as u64));
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (inner, d, n) = w.finish();
        assert_eq!(inner, data);
        assert_eq!((d, n), (sha256_bytes(&data), data.len() as u64));
    }

    #[test]
    fn parse_validates() {
        assert!(ABC.parse::<Sha256Hex>().is_ok());
        assert!(ABC.to_uppercase().parse::<Sha256Hex>().is_err());
        assert!(ABC[1..].parse::<Sha256Hex>().is_err());
        assert!(format!("{}g", &ABC[1..]).parse::<Sha256Hex>().is_err());
        let d: Sha256Hex = ABC.parse().unwrap();
        assert_eq!(Sha256Hex::from_bytes(d.to_bytes()), d);
        assert!(serde_json::from_str::<Sha256Hex>("\"abc\"").is_err());
        assert_eq!(
            serde_json::from_str::<Sha256Hex>(&format!("\"{ABC}\"")).unwrap(),
            d
        );
    }

    #[test]
    fn file_hash_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap().0.as_str(), ABC);
        let err = sha256_file(dir.path().join("missing")).unwrap_err();
        assert_eq!(err.exit_status(), crate::ExitStatus::InputMissing);
    }
}
