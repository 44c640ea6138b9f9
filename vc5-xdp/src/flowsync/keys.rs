//! The flow-sync key file (`flow_sync_key: FILE`).
//!
//! One key per line, `ID HEX`: ID a decimal 0–255, HEX 64 hex digits (32
//! bytes). `#` starts a comment; blank lines are allowed. The first key
//! seals what is sent; every listed key opens what is received, by the ID
//! in the datagram, so a key is rotated by listing the new key second on
//! every host, then first, then removing the old one. A file that group or
//! others may read is refused: the key is what keeps the reals, which also
//! receive the group, from reading or forging flows.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zeroize::{Zeroize, Zeroizing};

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;

/// One 32-byte key, wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub(crate) [u8; KEY_LEN]);

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Key {
    pub fn new(bytes: [u8; KEY_LEN]) -> Self {
        Key(bytes)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material, not even in a panic message.
        f.write_str("Key(..)")
    }
}

/// The keys of one key file, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<(u8, Key)>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} has mode {mode:04o}: group or others may read it; chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file line {line}: expected `ID HEX`")]
    MissingField { line: usize },
    #[error("key file line {line}: unexpected text after the key")]
    TrailingField { line: usize },
    #[error("key file line {line}: key id {text:?} is not a number 0-255")]
    BadId { line: usize, text: String },
    #[error("key file line {line}: key has {len} hex digits, expected 64")]
    BadLength { line: usize, len: usize },
    #[error("key file line {line}: key is not hexadecimal")]
    BadHex { line: usize },
    #[error("key file line {line}: key id {id} is listed twice")]
    DuplicateId { line: usize, id: u8 },
    #[error("key file lists no key")]
    Empty,
}

impl Keyring {
    /// A keyring from `(id, key)` pairs; the first seals.
    pub fn new(keys: Vec<(u8, Key)>) -> Option<Self> {
        (!keys.is_empty()).then_some(Keyring { keys })
    }

    /// Reads and parses a key file, refusing one that group or others can read.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let io = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions {
                path: path.to_owned(),
                mode: mode & 0o7777,
            });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        Self::parse(&text)
    }

    /// Parses key-file text (no permission check).
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut keys: Vec<(u8, Key)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("");
            let mut fields = content.split_whitespace();
            let Some(id_text) = fields.next() else {
                continue;
            };
            let hex = fields.next().ok_or(KeyFileError::MissingField { line })?;
            if fields.next().is_some() {
                return Err(KeyFileError::TrailingField { line });
            }
            let id: u8 = id_text.parse().map_err(|_| KeyFileError::BadId {
                line,
                text: id_text.to_owned(),
            })?;
            let key = parse_hex(hex, line)?;
            if keys.iter().any(|(k, _)| *k == id) {
                return Err(KeyFileError::DuplicateId { line, id });
            }
            keys.push((id, key));
        }
        Self::new(keys).ok_or(KeyFileError::Empty)
    }

    /// The key that seals what this host sends, and its id.
    pub fn sealing(&self) -> (u8, &Key) {
        let (id, key) = &self.keys[0];
        (*id, key)
    }

    /// The key that opens a datagram carrying `id`.
    pub fn get(&self, id: u8) -> Option<&Key> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, key)| key)
    }

    pub fn ids(&self) -> impl Iterator<Item = u8> + '_ {
        self.keys.iter().map(|(id, _)| *id)
    }
}

fn parse_hex(hex: &str, line: usize) -> Result<Key, KeyFileError> {
    if hex.len() != 2 * KEY_LEN {
        return Err(KeyFileError::BadLength {
            line,
            len: hex.len(),
        });
    }
    let mut bytes = [0u8; KEY_LEN];
    for (b, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let digit = |c: u8| {
            (c as char)
                .to_digit(16)
                .ok_or(KeyFileError::BadHex { line })
        };
        *b = (digit(pair[0])? << 4 | digit(pair[1])?) as u8;
    }
    let key = Key(bytes);
    bytes.zeroize();
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "FFEEDDCCBBAA99887766554433221100ffeeddccbbaa99887766554433221100";

    #[test]
    fn parses_keys_comments_and_blank_lines() {
        let text = format!("# flow sync keys\n\n7 {K1}   # current\n  200\t{K2}\n");
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec![7, 200]);
        let (id, key) = ring.sealing();
        assert_eq!(id, 7);
        assert_eq!(key.0[..4], [0, 1, 2, 3]);
        assert_eq!(ring.get(200).unwrap().0[..2], [0xff, 0xee]);
        assert!(ring.get(8).is_none());
    }

    #[test]
    fn rejects_malformed_lines_with_line_numbers() {
        let bad = |text: &str| Keyring::parse(text).unwrap_err();
        assert!(matches!(bad(""), KeyFileError::Empty));
        assert!(matches!(bad("# only\n\n"), KeyFileError::Empty));
        assert!(matches!(
            bad("\n1\n"),
            KeyFileError::MissingField { line: 2 }
        ));
        assert!(matches!(
            bad(&format!("1 {K1} x")),
            KeyFileError::TrailingField { line: 1 }
        ));
        assert!(matches!(
            bad(&format!("\n\n256 {K1}")),
            KeyFileError::BadId { line: 3, .. }
        ));
        assert!(matches!(
            bad(&format!("-1 {K1}")),
            KeyFileError::BadId { line: 1, .. }
        ));
        assert!(matches!(
            bad("1 abcd"),
            KeyFileError::BadLength { line: 1, len: 4 }
        ));
        assert!(matches!(
            bad(&format!("1 {}", &K1.replace('a', "g"))),
            KeyFileError::BadHex { line: 1 }
        ));
        assert!(matches!(
            bad(&format!("1 {K1}\n1 {K2}")),
            KeyFileError::DuplicateId { line: 2, id: 1 }
        ));
        // Every message names the line, for the operator.
        assert!(bad("\n\nx y").to_string().contains("line 3"));
    }

    #[test]
    fn key_debug_hides_material() {
        let ring = Keyring::parse(&format!("1 {K1}")).unwrap();
        let shown = format!("{ring:?}");
        assert!(!shown.contains("0, 1, 2"), "{shown}");
    }

    fn key_file(mode: u32) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "3 {K1}").unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn load_refuses_group_or_world_readable_files() {
        for mode in [0o644, 0o640, 0o604, 0o660, 0o601] {
            let f = key_file(mode);
            match Keyring::load(f.path()) {
                Err(KeyFileError::Permissions { mode: m, .. }) => assert_eq!(m, mode),
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        for mode in [0o600, 0o400] {
            let f = key_file(mode);
            let ring = Keyring::load(f.path()).unwrap();
            assert_eq!(ring.sealing().0, 3);
        }
    }

    #[test]
    fn load_reports_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Keyring::load(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, KeyFileError::Io { .. }));
        assert!(err.to_string().contains("nope"));
    }
}
