//! The ground floor: what every room reads before and while it runs. Node keys, the genesis,
//! one node's configuration, the roles and shards they name, and the wall clock. It imports
//! only `types` and `crypto`; nothing here knows a shard.
//!
//! Every file read here is untrusted input. Loading bounds the file size before reading it,
//! refuses unknown fields, validates every field, and reports a [`ConfigError`] that names the
//! file, the field and what is wrong. Nothing here panics on file contents.
//!
//! - [`keys`]: the node key file (BLS key, proof of possession, node id), created mode 0600.
//! - [`genesis`]: the genesis file (chain id, council with proofs of possession, committee size,
//!   block period, prefunded accounts) and the dev-network generator behind `corecell genesis`.
//!   The genesis state root is handed in by the loader ([`genesis::GenesisStateRoot`]): the
//!   account state belongs to the exec room.
//! - [`node`]: one node's TOML config (role, addresses, peers, allowlist, placement), with
//!   [`Role`], [`Shard`], [`Placement`] and [`PeerEntry`] re-exported here.
//! - [`clock`]: the wall clock the shards read (the consensus core gets time as an input).
//! - `byzantine` (feature `byzantine`, tests only): the `[byzantine]` section's behaviours.
//!
//! A config together with the genesis and key it names, cross-checked, is the wiring's
//! `node::setup::NodeSetup`.

#[cfg(feature = "byzantine")]
pub mod byzantine;
pub mod clock;
pub mod genesis;
pub mod keys;
pub mod node;

pub use node::{NodeConfig, PeerEntry, Placement, Role, Shard};

use std::path::{Path, PathBuf};

/// A refusal to load a file, naming the file, the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{problem}", file.display(), if field.is_empty() { String::new() } else { format!("field `{field}`: ") })]
pub struct ConfigError {
    /// The file being loaded.
    pub file: PathBuf,
    /// The offending field (dotted path), or empty for the file as a whole.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl ConfigError {
    /// An error about `field` of `file`.
    pub fn new(file: &Path, field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Reads a whole file, refusing one larger than `max_bytes` before reading it.
pub fn read_bounded(path: &Path, max_bytes: u64) -> Result<String, ConfigError> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| ConfigError::new(path, "", format!("cannot open: {e}")))?;
    let len = file
        .metadata()
        .map_err(|e| ConfigError::new(path, "", format!("cannot stat: {e}")))?
        .len();
    if len > max_bytes {
        return Err(ConfigError::new(
            path,
            "",
            format!("file is {len} bytes, more than the limit of {max_bytes}"),
        ));
    }
    let mut text = String::with_capacity(len as usize);
    file.take(max_bytes + 1)
        .read_to_string(&mut text)
        .map_err(|e| ConfigError::new(path, "", format!("cannot read as UTF-8 text: {e}")))?;
    if text.len() as u64 > max_bytes {
        return Err(ConfigError::new(
            path,
            "",
            format!("file grew past the limit of {max_bytes} bytes while read"),
        ));
    }
    Ok(text)
}

/// Parses TOML into `T`. On failure the error names the field (the key on the failing line,
/// under its `[table]`) and the line.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        let Some(span) = e.span() else {
            return ConfigError::new(path, "", message);
        };
        // A span from the parser should sit on a char boundary; make sure before slicing.
        let mut start = span.start.min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let line_no = text[..start].matches('\n').count() + 1;
        ConfigError::new(
            path,
            field_at(text, start),
            format!("{message} (line {line_no})"),
        )
    })
}

/// The dotted key of the `key = value` line holding byte `offset`, prefixed by the nearest
/// `[table]` or `[[array]]` header above it; empty when the line holds no key.
fn field_at(text: &str, offset: usize) -> String {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let Some((key, _)) = line.split_once('=') else {
        return String::new();
    };
    let key = key.trim().trim_matches('"');
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    }
}

/// Decodes a `0x`-prefixed (or bare) hex string of exactly `N` bytes.
pub fn parse_hex_array<const N: usize>(
    file: &Path,
    field: &str,
    value: &str,
) -> Result<[u8; N], ConfigError> {
    let digits = value.strip_prefix("0x").unwrap_or(value);
    if digits.len() != 2 * N {
        return Err(ConfigError::new(
            file,
            field,
            format!(
                "expected {N} bytes of hex ({} digits), got {} digits",
                2 * N,
                digits.len()
            ),
        ));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out)
        .map_err(|e| ConfigError::new(file, field, format!("not hex: {e}")))?;
    Ok(out)
}

/// `0x`-prefixed lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}
