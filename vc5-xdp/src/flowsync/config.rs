//! `vc5-flowsync`'s keys in vc5d's configuration file (YAML or JSON, the
//! same file). Only these keys are read and every other key is ignored:
//! vc5d validates the whole file strictly, with positions.
//!
//! - `multicast: GROUP:PORT` (required; a multicast group, port ≠ 0),
//! - `flow_sync_key: FILE` (required; relative to the file's directory),
//! - `flow_sync_rate` (records/s accepted per sender, default
//!   [`DEFAULT_RATE`]), `flow_sync_resync_rate` (records/s sent in a dump,
//!   default [`DEFAULT_RESYNC_RATE`]), both within [`MIN_RATE`]..=[`MAX_RATE`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::settings::{DEFAULT_RATE, DEFAULT_RESYNC_RATE, MAX_RATE, MIN_RATE};

/// Largest configuration file read (as vc5d).
const MAX_FILE_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSyncConfig {
    pub group: SocketAddr,
    pub key_file: PathBuf,
    pub rate: u32,
    pub resync_rate: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

#[derive(serde::Deserialize)]
struct Raw {
    multicast: Option<Scalar>,
    flow_sync_key: Option<String>,
    flow_sync_rate: Option<u64>,
    flow_sync_resync_rate: Option<u64>,
}

/// A value that should be a string; anything else is named in the error.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Other(serde::de::IgnoredAny),
}

/// Reads `path` and extracts flow sync's settings.
pub fn load(path: &Path) -> Result<FlowSyncConfig, ConfigError> {
    use std::io::Read;
    let file = path.display().to_string();
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|source| ConfigError::Io {
            file: file.clone(),
            source,
        })?;
    let invalid = |message: String| ConfigError::Invalid {
        file: file.clone(),
        message,
    };
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(invalid("the file is larger than 16 MiB".into()));
    }
    let text = String::from_utf8(bytes).map_err(|_| invalid("the file is not UTF-8".into()))?;
    let mut c = parse(&text).map_err(invalid)?;
    if c.key_file.is_relative()
        && let Some(dir) = path.parent()
    {
        c.key_file = dir.join(&c.key_file);
    }
    Ok(c)
}

/// Extracts flow sync's settings from configuration text.
pub fn parse(text: &str) -> Result<FlowSyncConfig, String> {
    let options = serde_saphyr::options! {
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_nodes: 4_000_000,
            max_events: 8_000_064,
        },
    };
    let raw: Option<Raw> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| e.to_string())?;
    let raw = raw.ok_or("the configuration is empty")?;
    let m = match raw.multicast {
        None => {
            return Err("no `multicast` (the flow-sync group, e.g. 224.0.0.1:9999): flow sync is not configured".into());
        }
        Some(Scalar::Other(_)) => {
            return Err(
                "multicast must be IP:PORT as a string; quote an IPv6 group: \"[ff02::1234]:9999\""
                    .into(),
            );
        }
        Some(Scalar::Text(m)) => m,
    };
    let group: SocketAddr = m.trim().parse().map_err(|_| {
        format!(
            "invalid multicast address {m:?}: expected IP:PORT, e.g. 224.0.0.1:9999 or [ff02::1234]:9999"
        )
    })?;
    if !group.ip().is_multicast() {
        return Err(format!(
            "multicast: {} is not a multicast address",
            group.ip()
        ));
    }
    if group.port() == 0 {
        return Err("multicast: the port must not be 0".into());
    }
    let key = raw
        .flow_sync_key
        .ok_or("no `flow_sync_key` (the flow-sync key file): flow sync is not configured")?;
    if key.trim().is_empty() {
        return Err("flow_sync_key is empty".into());
    }
    let rate = |v: Option<u64>, name: &str, default: u32| -> Result<u32, String> {
        match v {
            None => Ok(default),
            Some(v) if (MIN_RATE as u64..=MAX_RATE as u64).contains(&v) => Ok(v as u32),
            Some(v) => Err(format!(
                "{name}: {v} is out of range ({MIN_RATE} to {MAX_RATE} records per second)"
            )),
        }
    };
    Ok(FlowSyncConfig {
        group,
        key_file: PathBuf::from(key),
        rate: rate(raw.flow_sync_rate, "flow_sync_rate", DEFAULT_RATE)?,
        resync_rate: rate(
            raw.flow_sync_resync_rate,
            "flow_sync_resync_rate",
            DEFAULT_RESYNC_RATE,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &str = r#"
multicast: 224.0.0.1:9999
flow_sync_key: keys/flowsync.key
rhi:
  as_number: 65000
  peers: [10.10.100.3, 10.10.100.4]
services:
  - name: nginx
    addr: 192.168.101.1
    port: [80, 443]
    real: nginx
    checks:
      - {name: http check, type: http, port: 80, path: /alive}
reals:
  nginx: [10.10.100.10, 10.10.100.11]
"#;

    #[test]
    fn reads_its_keys_and_ignores_the_rest() {
        let c = parse(ORIGINAL).unwrap();
        assert_eq!(c.group, "224.0.0.1:9999".parse().unwrap());
        assert_eq!(c.key_file, PathBuf::from("keys/flowsync.key"));
        assert_eq!((c.rate, c.resync_rate), (DEFAULT_RATE, DEFAULT_RESYNC_RATE));
        let c = parse(&format!(
            "{ORIGINAL}flow_sync_rate: 1000\nflow_sync_resync_rate: 2000\nflow_sync_wait: 5s\n"
        ))
        .unwrap();
        assert_eq!((c.rate, c.resync_rate), (1000, 2000));
        let json = r#"{"multicast": "[ff02::1234]:9999", "flow_sync_key": "/k", "services": []}"#;
        assert_eq!(
            parse("multicast: \"[ff02::1234]:9999\"\nflow_sync_key: /k\n")
                .unwrap()
                .group,
            "[ff02::1234]:9999".parse().unwrap()
        );
        let c = parse(json).unwrap();
        assert_eq!(c.group, "[ff02::1234]:9999".parse().unwrap());
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let err = |t: &str| parse(t).unwrap_err();
        assert!(err("flow_sync_key: /k\n").contains("no `multicast`"));
        assert!(err("multicast: 224.0.0.1:9999\n").contains("no `flow_sync_key`"));
        assert!(
            err("multicast: 10.0.0.1:9999\nflow_sync_key: /k\n")
                .contains("10.0.0.1 is not a multicast address")
        );
        assert!(err("multicast: 224.0.0.1\nflow_sync_key: /k\n").contains("expected IP:PORT"));
        assert!(err("multicast: 224.0.0.1:0\nflow_sync_key: /k\n").contains("port"));
        assert!(
            err("multicast: 224.0.0.1:1\nflow_sync_key: /k\nflow_sync_rate: 5\n")
                .contains("out of range")
        );
        assert!(err("").contains("empty"));
        // Unquoted, YAML reads an IPv6 group as a list.
        assert!(err("multicast: [ff02::1]\nflow_sync_key: /k\n").contains("quote"));
        assert!(err("multicast: 5\nflow_sync_key: /k\n").contains("multicast"));
        assert!(!err("multicast: [1, 2\n").is_empty());
    }

    #[test]
    fn key_file_is_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vc5.yaml");
        std::fs::write(&p, ORIGINAL).unwrap();
        let c = load(&p).unwrap();
        assert_eq!(c.key_file, dir.path().join("keys/flowsync.key"));
        assert!(matches!(
            load(&dir.path().join("none.yaml")),
            Err(ConfigError::Io { .. })
        ));
    }
}
