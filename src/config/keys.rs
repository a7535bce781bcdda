//! The node key file: a node's BLS secret key and the public facts derived from it.
//!
//! Format (TOML, mode 0600, never world- or group-readable):
//!
//! ```toml
//! # corecell node key: secret, keep this file mode 0600
//! version = 1
//! node_id = "0x…"            # keccak256(bls_public_key)[..20]
//! bls_public_key = "0x…"     # 48-byte compressed G1 point
//! proof_of_possession = "0x…" # BLS signature of the public key under the PoP tag
//! bls_secret_key = "0x…"     # 32-byte scalar
//! ```
//!
//! The public fields are redundant on purpose: an operator can read them without tools, and
//! loading re-derives them from the secret key and refuses a file where they disagree.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{parse_hex_array, parse_toml, read_bounded, to_hex, ConfigError};
use crate::crypto::bls::{BlsPublicKey, BlsSecretKey, BlsSignature};

/// Key files are tiny; anything larger is not one.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;
/// The key file format version this build writes and reads.
pub const KEY_FILE_VERSION: u32 = 1;

/// A node's key and what derives from it.
#[derive(Debug, Clone)]
pub struct NodeKey {
    /// The BLS secret key (consensus votes, randao, handshake).
    pub secret: BlsSecretKey,
    /// Its public key, compressed.
    pub public_key: [u8; 48],
    /// Proof of possession of the public key.
    pub proof_of_possession: [u8; 96],
    /// The node id: `keccak256(public_key)[..20]`.
    pub node_id: [u8; 20],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    node_id: String,
    bls_public_key: String,
    proof_of_possession: String,
    bls_secret_key: String,
}

impl NodeKey {
    /// The key and derived facts for a secret key.
    pub fn from_secret(secret: BlsSecretKey) -> NodeKey {
        let pk = secret.public_key();
        NodeKey {
            public_key: pk.to_bytes(),
            proof_of_possession: secret.prove_possession().to_bytes(),
            node_id: pk.node_id(),
            secret,
        }
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<NodeKey, getrandom::Error> {
        BlsSecretKey::random().map(NodeKey::from_secret)
    }

    /// The file contents.
    pub fn to_toml(&self) -> String {
        let file = KeyFile {
            version: KEY_FILE_VERSION,
            node_id: to_hex(&self.node_id),
            bls_public_key: to_hex(&self.public_key),
            proof_of_possession: to_hex(&self.proof_of_possession),
            bls_secret_key: to_hex(&self.secret.to_bytes()),
        };
        let body =
            toml::to_string(&file).unwrap_or_else(|e| unreachable!("flat struct serializes: {e}"));
        format!("# corecell node key: secret, keep this file mode 0600\n{body}")
    }

    /// Writes the key file with mode 0600. Refuses to overwrite an existing file unless
    /// `overwrite` is set.
    pub fn write(&self, path: &Path, overwrite: bool) -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).mode(0o600);
        if overwrite {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        let mut file = options.open(path)?;
        // An existing file keeps its old mode on truncate: force 0600.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(self.to_toml().as_bytes())?;
        file.sync_all()
    }

    /// Loads and checks a key file: mode not readable by group or others, known version, a
    /// valid secret key, and public fields that match it.
    pub fn load(path: &Path) -> Result<NodeKey, ConfigError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| ConfigError::new(path, "", format!("cannot stat key file: {e}")))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::new(
                path,
                "",
                format!("key file mode is {mode:03o}; it must not be readable by group or others (chmod 600)"),
            ));
        }
        let text = read_bounded(path, MAX_KEY_FILE_BYTES)?;
        let file: KeyFile = parse_toml(path, &text)?;
        if file.version != KEY_FILE_VERSION {
            return Err(ConfigError::new(
                path,
                "version",
                format!(
                    "unsupported key file version {} (this build reads {KEY_FILE_VERSION})",
                    file.version
                ),
            ));
        }
        let secret_bytes: [u8; 32] = parse_hex_array(path, "bls_secret_key", &file.bls_secret_key)?;
        let secret = BlsSecretKey::from_bytes(&secret_bytes)
            .map_err(|e| ConfigError::new(path, "bls_secret_key", e.to_string()))?;
        let key = NodeKey::from_secret(secret);
        let public_key: [u8; 48] = parse_hex_array(path, "bls_public_key", &file.bls_public_key)?;
        if public_key != key.public_key {
            return Err(ConfigError::new(
                path,
                "bls_public_key",
                "does not match bls_secret_key",
            ));
        }
        let pop: [u8; 96] =
            parse_hex_array(path, "proof_of_possession", &file.proof_of_possession)?;
        let pop_ok = BlsSignature::from_bytes(&pop)
            .ok()
            .zip(BlsPublicKey::from_bytes(&public_key).ok())
            .is_some_and(|(sig, pk)| pk.verify_possession(&sig).is_ok());
        if !pop_ok {
            return Err(ConfigError::new(
                path,
                "proof_of_possession",
                "does not verify for bls_public_key",
            ));
        }
        let node_id: [u8; 20] = parse_hex_array(path, "node_id", &file.node_id)?;
        if node_id != key.node_id {
            return Err(ConfigError::new(
                path,
                "node_id",
                "does not match bls_public_key",
            ));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_load_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.toml");
        let key = NodeKey::from_secret(BlsSecretKey::from_seed(&[1; 32]));
        key.write(&path, false).expect("write");
        assert_eq!(
            std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777,
            0o600
        );
        let back = NodeKey::load(&path).expect("load");
        assert_eq!(back.public_key, key.public_key);
        assert_eq!(back.node_id, key.node_id);
        // No silent overwrite.
        assert!(key.write(&path, false).is_err());
        key.write(&path, true).expect("explicit overwrite");
    }

    #[test]
    fn readable_by_others_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.toml");
        NodeKey::from_secret(BlsSecretKey::from_seed(&[2; 32]))
            .write(&path, false)
            .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = NodeKey::load(&path).expect_err("0644 refused");
        assert!(err.problem.contains("chmod 600"), "{err}");
    }

    #[test]
    fn tampered_fields_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.toml");
        let key = NodeKey::from_secret(BlsSecretKey::from_seed(&[3; 32]));
        let other = NodeKey::from_secret(BlsSecretKey::from_seed(&[4; 32]));
        let good = key.to_toml();
        let cases = [
            (
                good.replace(&to_hex(&key.public_key), &to_hex(&other.public_key)),
                "bls_public_key",
            ),
            (
                good.replace(
                    &to_hex(&key.proof_of_possession),
                    &to_hex(&other.proof_of_possession),
                ),
                "proof_of_possession",
            ),
            (
                good.replace(&to_hex(&key.node_id), &to_hex(&other.node_id)),
                "node_id",
            ),
            (
                good.replace(&to_hex(&key.secret.to_bytes()), "0x1234"),
                "bls_secret_key",
            ),
            (good.replace("version = 1", "version = 9"), "version"),
        ];
        for (text, field) in cases {
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            let err = NodeKey::load(&path).expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
        std::fs::write(&path, format!("{good}\nextra = 1\n")).expect("write");
        assert!(NodeKey::load(&path)
            .expect_err("unknown field")
            .problem
            .contains("extra"));
    }
}
