//! Node keys, genesis and per-node configuration: everything a node reads before it starts.
//!
//! Every file here is untrusted input. Loading bounds the file size before reading it,
//! refuses unknown fields, validates every field, and reports a [`ConfigError`] that names the
//! file, the field and what is wrong. Nothing here panics on file contents.
//!
//! - [`keys`]: the node key file (BLS key, proof of possession, node id), created mode 0600.
//! - [`genesis`]: the genesis file (chain id, council with proofs of possession, committee size,
//!   block period, prefunded accounts) and the dev-network generator behind `corecell genesis`.
//! - [`config`]: one node's TOML config (role, addresses, peers, allowlist, placement).
//! - [`setup`]: a config together with the genesis and key it names, cross-checked.

pub mod config;
pub mod genesis;
pub mod keys;
pub mod setup;

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

/// Parses TOML into `T`, reporting the failing key path when toml names one.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().to_string();
        let at = e.span().map(|span| {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        });
        ConfigError::new(path, "", format!("{message}{}", at.unwrap_or_default()))
    })
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
