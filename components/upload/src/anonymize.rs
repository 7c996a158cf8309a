//! `publish --anonymize`: keyed hashes in place of what identifies an input.
//!
//! An input's ID is `anon-` + the first 32 hex digits (128 bits) of HMAC-SHA-256(salt, its
//! source): its `s3://` URI, or its path as given. The salt is secret
//! (`KUBESTYLE_ANONYMIZE_SALT`, at least 16 bytes; from a Kubernetes Secret in a cluster), so
//! an ID cannot be recomputed from a guessed source without it, and the same input gets the
//! same ID in every run with the same salt (tables of several runs join on it); another salt
//! gives unrelated IDs.
//!
//! Every string that names an input — its source, its path and name on the volume, the
//! sources and lists the download stage was given, the styled output's path and key (which
//! contain the input's path) — is registered with what replaces it; the published text files
//! (manifest copies, logs, results, SHA256SUMS) are the originals with every registered string
//! replaced, longest first, and are checked afterwards: a file still containing one is never
//! published ([`Anonymizer::leak`]).

use hmac::{Hmac, Mac};
use kubestyle_manifest::StageError;
use kubestyle_manifest::command::upload::{ANONYMIZE_SALT_ENV, check_salt};
use sha2::Sha256;

/// The prefix of every ID.
pub const ID_PREFIX: &str = "anon-";

/// The keyed hash and the strings it hides.
pub struct Anonymizer {
    mac: Hmac<Sha256>,
    /// (original, replacement), longest original first once [`Anonymizer::seal`]ed.
    hidden: Vec<(String, String)>,
}

impl std::fmt::Debug for Anonymizer {
    /// Never the salt.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Anonymizer({} strings hidden)", self.hidden.len())
    }
}

impl Anonymizer {
    /// With the salt of `KUBESTYLE_ANONYMIZE_SALT`; a missing or short salt is a usage error.
    pub fn from_env() -> Result<Anonymizer, StageError> {
        let salt = check_salt(std::env::var_os(ANONYMIZE_SALT_ENV)).map_err(StageError::Usage)?;
        Ok(Anonymizer::with_salt(&salt))
    }

    pub fn with_salt(salt: &[u8]) -> Anonymizer {
        Anonymizer {
            // HMAC takes a key of any length.
            mac: Hmac::<Sha256>::new_from_slice(salt).unwrap_or_else(|_| unreachable!()),
            hidden: Vec::new(),
        }
    }

    /// The ID of `source`.
    pub fn id(&self, source: &str) -> String {
        let mut m = self.mac.clone();
        m.update(source.as_bytes());
        let digest = m.finalize().into_bytes();
        format!("{ID_PREFIX}{}", hex::encode(&digest[..16]))
    }

    /// Which salt this is, for the step cache's key (an ID of a fixed text; not the salt).
    pub fn fingerprint(&self) -> String {
        self.id("kubestyle anonymize salt fingerprint")
    }

    /// Hide `original` (if not empty) behind `replacement` in every published text.
    pub fn hide(&mut self, original: &str, replacement: impl Into<String>) {
        if !original.is_empty() && !self.hidden.iter().any(|(o, _)| o == original) {
            self.hidden.push((original.to_string(), replacement.into()));
        }
    }

    /// Hide `original` behind its own ID.
    pub fn hide_as_id(&mut self, original: &str) {
        let id = self.id(original);
        self.hide(original, id);
    }

    /// Done registering: replacements go longest first, so that a path is replaced whole before
    /// a name inside it.
    pub fn seal(&mut self) {
        self.hidden
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    }

    /// `text` with every hidden string replaced.
    pub fn scrub(&self, text: &str) -> String {
        let mut t = text.to_string();
        for (o, r) in &self.hidden {
            if t.contains(o.as_str()) {
                t = t.replace(o.as_str(), r);
            }
        }
        t
    }

    /// A hidden string still in `bytes`, if any (what must never be published).
    pub fn leak(&self, bytes: &[u8]) -> Option<&str> {
        self.hidden
            .iter()
            .map(|(o, _)| o.as_str())
            .find(|o| memmem(bytes, o.as_bytes()))
    }
}

fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_keyed_stable_and_salt_dependent() {
        let a = Anonymizer::with_salt(b"0123456789abcdef-salt-one");
        let b = Anonymizer::with_salt(b"0123456789abcdef-salt-one");
        let c = Anonymizer::with_salt(b"0123456789abcdef-salt-two");
        let id = a.id("s3://photos/cats/tom.jpg");
        assert_eq!(id, b.id("s3://photos/cats/tom.jpg"));
        assert_ne!(id, c.id("s3://photos/cats/tom.jpg"));
        assert_ne!(id, a.id("s3://photos/cats/tom2.jpg"));
        assert_eq!(id.len(), ID_PREFIX.len() + 32);
        // HMAC-SHA-256 (RFC 4231 test case 2), first 16 bytes.
        let k = Anonymizer::with_salt(b"Jefe");
        assert_eq!(
            k.id("what do ya want for nothing?"),
            "anon-5bdcc146bf60754e6a042426089575c7"
        );
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert!(!format!("{a:?}").contains("salt-one"));
    }

    #[test]
    fn longest_first_and_leaks_are_found() {
        let mut a = Anonymizer::with_salt(b"0123456789abcdef");
        a.hide("images/tom.jpg", "X");
        a.hide("runs/r/inputs/images/tom.jpg", "Y");
        a.hide("", "never");
        a.seal();
        assert_eq!(
            a.scrub("at runs/r/inputs/images/tom.jpg and images/tom.jpg"),
            "at Y and X"
        );
        assert_eq!(a.leak(b"clean"), None);
        assert_eq!(a.leak(b"..images/tom.jpg.."), Some("images/tom.jpg"));
    }
}
