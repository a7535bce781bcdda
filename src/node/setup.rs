//! A node's whole start-up input: its config, the genesis and the key the config names,
//! loaded and cross-checked. `corecell node --config FILE --check` is exactly this.

use std::path::Path;

use crate::config::genesis::Genesis;
use crate::config::keys::NodeKey;
use crate::config::{to_hex, ConfigError};
use crate::config::{NodeConfig, Role};

/// A loaded, cross-checked node set-up.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// The node's config.
    pub config: NodeConfig,
    /// The genesis.
    pub genesis: Genesis,
    /// The node's key.
    pub key: NodeKey,
    /// For a CN: its council index.
    pub council_index: Option<u32>,
}

impl NodeSetup {
    /// Loads the config, then the genesis and key it names, and checks that they fit:
    /// a CN's key is a council key and its CN peers are council members; a node of another
    /// role holds no council key; no node lists itself as a peer.
    pub fn load(config_path: &Path) -> Result<NodeSetup, ConfigError> {
        let config = NodeConfig::load(config_path)?;
        for (field, file) in [("genesis", &config.genesis), ("key_file", &config.key_file)] {
            if !file.is_file() {
                return Err(ConfigError::new(
                    config_path,
                    field,
                    format!("{} does not exist or is not a file", file.display()),
                ));
            }
        }
        let genesis = Genesis::load(&config.genesis, crate::exec::genesis_state_root)?;
        let key = NodeKey::load(&config.key_file)?;
        let council_index = genesis.council_index(&key.public_key);
        let err = |field: &str, problem: String| ConfigError::new(config_path, field, problem);
        match (config.role, council_index) {
            (Role::Cn, None) => {
                return Err(err(
                    "key_file",
                    format!(
                        "the key {} is not in the genesis council; a CN must hold a council key",
                        to_hex(&key.node_id)
                    ),
                ))
            }
            (Role::Cn, Some(i)) if genesis.council[i as usize].name != config.name => {
                return Err(err(
                    "name",
                    format!(
                        "the council names this key {:?}",
                        genesis.council[i as usize].name
                    ),
                ))
            }
            (Role::Pn | Role::En | Role::Bootnode, Some(i)) => {
                return Err(err(
                    "key_file",
                    format!(
                        "this {} holds council key #{i}; council keys belong to CNs only",
                        config.role.name()
                    ),
                ))
            }
            _ => {}
        }
        for (i, peer) in config.peers.iter().enumerate() {
            if peer.node_id == key.node_id {
                return Err(err(
                    &format!("network.peers[{i}].node_id"),
                    "is this node's own id".into(),
                ));
            }
            if peer.role == Role::Cn && !genesis.council.iter().any(|m| m.node_id == peer.node_id) {
                return Err(err(
                    &format!("network.peers[{i}].node_id"),
                    "names a CN that is not in the genesis council".into(),
                ));
            }
        }
        Ok(NodeSetup {
            config,
            genesis,
            key,
            council_index,
        })
    }
}
