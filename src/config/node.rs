//! One node's configuration file (TOML).
//!
//! ```toml
//! role = "cn"                    # cn | pn | en | bootnode
//! name = "cn0"                   # unique in the network; used in logs
//! genesis = "../genesis.toml"    # relative paths are relative to this file's folder
//! key_file = "key.toml"
//! data_dir = "data"
//!
//! [network]
//! listen = "127.0.0.1:28000"     # p2p address
//! allowlist = ["0x…"]            # node ids admitted inbound; empty admits no one
//! encryption = true              # peer links encrypted (false: integrity only, trusted LAN;
//!                                #   a link is encrypted when either end asks)
//! [[network.peers]]              # nodes this one dials
//! name = "cn1"
//! role = "cn"
//! node_id = "0x…"
//! address = "127.0.0.1:28001"
//! # [[network.bootnodes]] has the same shape: bootnodes to ask for peers (CN, PN and EN)
//!
//! [rpc]                          # EN only: JSON-RPC
//! listen = "127.0.0.1:8545"
//! index_mib = 256                # recent blocks, transactions and receipts kept for it
//! [ingress]                      # CN or EN, optional: native client ingress (TxBatch frames)
//! listen = "127.0.0.1:31000"
//! [metrics]                      # optional: Prometheus
//! listen = "127.0.0.1:9100"
//! [runtime]
//! placement = "auto"             # "auto", "unbound", or a table { net = 0, consensus = 1, … }
//! io_memory_kib = 2048           # io_uring memory per shard; small so memlock limits don't bite
//! [storage]
//! snapshot_interval_blocks = 1000  # CN: a state snapshot after every this many blocks
//! [bootnode]                     # bootnode only
//! serves = "pn"                  # the tier it serves: "cn", "pn" or "en" (see net::bootnode)
//! [byzantine]                    # TEST ONLY, CN only: needs a build with `--features byzantine`
//! behaviours = ["equivocate", "double-vote", "bad-signature", "future-height"]
//! seed = 7                       # (see consensus_shard::byzantine; a build without the feature refuses it)
//! ```
//!
//! A bootnode's `allowlist` names the nodes it admits, its `[[network.peers]]` the nodes it
//! hands out besides those that registered (roles it hands out: cn for `serves = "cn"`, pn and
//! en for `"pn"`, pn for `"en"`). A running bootnode re-reads both on SIGHUP.
//!
//! Loading refuses unknown fields and checks every field; errors name the file and the field.
//! Allowlists fail closed: an empty or missing allowlist admits no inbound peer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{parse_hex_array, parse_toml, read_bounded, ConfigError};

/// A config larger than this is refused unread.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// The most peers, bootnodes or allowlist entries a config may list.
pub const MAX_CONFIG_PEERS: usize = 4096;
/// Smallest `io_memory_kib` accepted.
pub const MIN_IO_MEMORY_KIB: u32 = 256;
/// Largest `io_memory_kib` accepted (1 GiB).
pub const MAX_IO_MEMORY_KIB: u32 = 1024 * 1024;
/// Default `io_memory_kib`: 2 MiB, small enough for a default memlock limit.
pub const DEFAULT_IO_MEMORY_KIB: u32 = 2048;
/// Default `storage.snapshot_interval_blocks`.
pub const DEFAULT_SNAPSHOT_INTERVAL_BLOCKS: u64 = 1000;
/// Largest `storage.snapshot_interval_blocks`.
pub const MAX_SNAPSHOT_INTERVAL_BLOCKS: u64 = 10_000_000;
/// Default `rpc.index_mib`.
pub const DEFAULT_RPC_INDEX_MIB: u64 = 256;
/// Largest `rpc.index_mib` (64 GiB).
pub const MAX_RPC_INDEX_MIB: u64 = 64 * 1024;
/// Largest CPU index a placement table may name.
pub const MAX_CPU_INDEX: usize = 4095;
/// Longest node name.
pub const MAX_NAME_LEN: usize = 64;

/// What a node is in the layered network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Consensus node: a council member in the CN mesh.
    Cn,
    /// Proxy node: shields its cell's CN, relays between CNs and ENs.
    Pn,
    /// Endpoint node: serves clients over JSON-RPC.
    En,
    /// Bootnode: admits permitted nodes and tells them whom to connect to.
    Bootnode,
}

impl Role {
    /// The lowercase name used in configs and logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Cn => "cn",
            Role::Pn => "pn",
            Role::En => "en",
            Role::Bootnode => "bootnode",
        }
    }

    /// The role's byte on the wire (peer handshake): `cn` 1, `pn` 2, `en` 3, `bootnode` 4.
    /// Zero is never a role, so an all-zero field is refused.
    pub const fn to_byte(self) -> u8 {
        match self {
            Role::Cn => 1,
            Role::Pn => 2,
            Role::En => 3,
            Role::Bootnode => 4,
        }
    }

    /// The role of a wire byte, if it names one (inverse of [`Role::to_byte`]).
    pub const fn from_byte(byte: u8) -> Option<Role> {
        match byte {
            1 => Some(Role::Cn),
            2 => Some(Role::Pn),
            3 => Some(Role::En),
            4 => Some(Role::Bootnode),
            _ => None,
        }
    }

    /// The shards a node of this role runs.
    pub fn shards(self) -> &'static [Shard] {
        match self {
            Role::Cn => &[Shard::Net, Shard::Consensus, Shard::Exec, Shard::Store],
            Role::Pn => &[Shard::Net, Shard::Consensus, Shard::Store],
            Role::En => &[Shard::Net, Shard::Consensus, Shard::Exec, Shard::Store],
            Role::Bootnode => &[Shard::Net],
        }
    }
}

/// A shard: one glommio executor owning one part of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shard {
    /// Sockets, peers, frames.
    Net,
    /// The IBFT machine and BLS work (a PN's or EN's: the follower, checking certificates).
    Consensus,
    /// Mempool, execution, state.
    Exec,
    /// Block log, WAL, snapshots.
    Store,
    /// JSON-RPC (EN).
    Rpc,
}

impl Shard {
    /// Every shard, in placement order.
    pub const ALL: [Shard; 5] = [
        Shard::Net,
        Shard::Consensus,
        Shard::Exec,
        Shard::Store,
        Shard::Rpc,
    ];

    /// The name used in placement tables.
    pub fn name(self) -> &'static str {
        match self {
            Shard::Net => "net",
            Shard::Consensus => "consensus",
            Shard::Exec => "exec",
            Shard::Store => "store",
            Shard::Rpc => "rpc",
        }
    }

    /// The shard of a placement-table key.
    pub fn from_name(name: &str) -> Option<Shard> {
        Shard::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Where shards run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Spread shards over the CPUs the process may use; share executors when there are fewer
    /// CPUs than shards.
    Auto,
    /// Do not pin (tests, containers with changing CPU sets).
    Unbound,
    /// Pin each shard to the CPU given.
    Fixed(BTreeMap<Shard, usize>),
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::Auto => f.write_str("auto"),
            Placement::Unbound => f.write_str("unbound"),
            Placement::Fixed(table) => {
                let pins: Vec<String> = table
                    .iter()
                    .map(|(s, cpu)| format!("{}={cpu}", s.name()))
                    .collect();
                write!(f, "{}", pins.join(","))
            }
        }
    }
}

/// A peer or bootnode entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    /// Its name (for logs).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its node id (`keccak256(bls_public_key)[..20]`), proven in the handshake.
    pub node_id: [u8; 20],
    /// Where to dial it.
    pub address: SocketAddr,
}

/// A validated node configuration, with paths resolved against the config's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Role.
    pub role: Role,
    /// Name.
    pub name: String,
    /// Genesis file.
    pub genesis: PathBuf,
    /// Key file.
    pub key_file: PathBuf,
    /// Data folder.
    pub data_dir: PathBuf,
    /// p2p listen address.
    pub listen: SocketAddr,
    /// Nodes to dial.
    pub peers: Vec<PeerEntry>,
    /// Bootnodes to ask for peers.
    pub bootnodes: Vec<PeerEntry>,
    /// Node ids admitted inbound (empty: no one).
    pub allowlist: BTreeSet<[u8; 20]>,
    /// `network.encryption`: ask for encrypted peer links (integrity is always protected).
    pub encryption: bool,
    /// JSON-RPC listen address (EN).
    pub rpc_listen: Option<SocketAddr>,
    /// MiB of recent blocks, transactions and receipts kept for JSON-RPC (EN).
    pub rpc_index_mib: u64,
    /// Prometheus metrics listen address.
    pub metrics_listen: Option<SocketAddr>,
    /// Native client ingress listen address (CN, EN).
    pub ingress_listen: Option<SocketAddr>,
    /// Shard placement.
    pub placement: Placement,
    /// io_uring memory per executor, KiB.
    pub io_memory_kib: u32,
    /// A state snapshot after every this many finalized blocks.
    pub snapshot_interval_blocks: u64,
    /// For a bootnode: the tier it serves.
    pub bootnode_serves: Option<Role>,
    /// Test-only Byzantine behaviours of a CN (`[byzantine]`).
    #[cfg(feature = "byzantine")]
    pub byzantine: Option<crate::config::byzantine::ByzantineSettings>,
}

/// The file format (also written by `corecell genesis`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Role.
    pub role: Role,
    /// Name.
    pub name: String,
    /// Genesis path.
    pub genesis: PathBuf,
    /// Key file path.
    pub key_file: PathBuf,
    /// Data folder path.
    pub data_dir: PathBuf,
    /// `[network]`.
    pub network: NetworkSection,
    /// `[rpc]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<RpcSection>,
    /// `[ingress]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<ListenSection>,
    /// `[metrics]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<ListenSection>,
    /// `[runtime]`.
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// `[storage]`.
    #[serde(default)]
    pub storage: StorageSection,
    /// `[bootnode]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootnode: Option<BootnodeSection>,
    /// `[byzantine]`: test-only misbehaviour of a CN. Parsed by every build so that a build
    /// without the `byzantine` feature can refuse it by name rather than as an unknown field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byzantine: Option<ByzantineSection>,
}

/// `[byzantine]` (test only; see `consensus_shard::byzantine`, built with the `byzantine` feature).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByzantineSection {
    /// Behaviour names: "equivocate", "double-vote", "bad-signature", "future-height".
    pub behaviours: Vec<String>,
    /// Seed of the Byzantine layer's choices.
    #[serde(default)]
    pub seed: u64,
}

/// `[storage]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// A state snapshot after every this many finalized blocks.
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval_blocks: u64,
}

fn default_snapshot_interval() -> u64 {
    DEFAULT_SNAPSHOT_INTERVAL_BLOCKS
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            snapshot_interval_blocks: DEFAULT_SNAPSHOT_INTERVAL_BLOCKS,
        }
    }
}

/// `[network]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// p2p listen address.
    pub listen: SocketAddr,
    /// Node ids admitted inbound.
    #[serde(default)]
    pub allowlist: Vec<String>,
    /// Nodes to dial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerSection>,
    /// Bootnodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bootnodes: Vec<PeerSection>,
    /// Whether this node asks for encrypted peer links (integrity protection is always on).
    #[serde(default = "encryption_default")]
    pub encryption: bool,
}

fn encryption_default() -> bool {
    true
}

/// A `[[network.peers]]` or `[[network.bootnodes]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Node id, hex.
    pub node_id: String,
    /// Address.
    pub address: SocketAddr,
}

/// `[rpc]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcSection {
    /// Listen address.
    pub listen: SocketAddr,
    /// MiB of recent blocks, transactions and receipts the EN keeps for JSON-RPC.
    #[serde(default = "default_rpc_index_mib")]
    pub index_mib: u64,
}

fn default_rpc_index_mib() -> u64 {
    DEFAULT_RPC_INDEX_MIB
}

/// `[metrics]` or `[ingress]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// Listen address.
    pub listen: SocketAddr,
}

/// `[runtime]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// `"auto"`, `"unbound"`, or a table from shard name to CPU.
    #[serde(default = "default_placement")]
    pub placement: PlacementSection,
    /// io_uring memory per executor, KiB.
    #[serde(default = "default_io_memory")]
    pub io_memory_kib: u32,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        RuntimeSection {
            placement: default_placement(),
            io_memory_kib: DEFAULT_IO_MEMORY_KIB,
        }
    }
}

fn default_placement() -> PlacementSection {
    PlacementSection::Mode("auto".to_string())
}

fn default_io_memory() -> u32 {
    DEFAULT_IO_MEMORY_KIB
}

/// The placement as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PlacementSection {
    /// `"auto"` or `"unbound"`.
    Mode(String),
    /// `{ net = 0, … }`.
    Table(BTreeMap<String, usize>),
}

/// `[bootnode]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootnodeSection {
    /// The tier this bootnode serves: `cn`, `pn` or `en`.
    pub serves: Role,
}

impl NodeConfig {
    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = read_bounded(path, MAX_CONFIG_BYTES)?;
        let file: ConfigFile = parse_toml(path, &text)?;
        NodeConfig::validate(path, file)
    }

    /// Validates a parsed config; `path` locates relative paths and names the file in errors.
    pub fn validate(path: &Path, file: ConfigFile) -> Result<NodeConfig, ConfigError> {
        let err = |field: &str, problem: String| ConfigError::new(path, field, problem);
        check_name(&file.name).map_err(|p| err("name", p))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        for (field, p) in [
            ("genesis", &file.genesis),
            ("key_file", &file.key_file),
            ("data_dir", &file.data_dir),
        ] {
            if p.as_os_str().is_empty() {
                return Err(err(field, "must not be empty".into()));
            }
        }

        let peers = peer_entries(path, "network.peers", &file.network.peers)?;
        let bootnodes = peer_entries(path, "network.bootnodes", &file.network.bootnodes)?;
        if file.network.allowlist.len() > MAX_CONFIG_PEERS {
            return Err(err(
                "network.allowlist",
                format!("more than {MAX_CONFIG_PEERS} entries"),
            ));
        }
        let mut allowlist = BTreeSet::new();
        for (i, id) in file.network.allowlist.iter().enumerate() {
            let field = format!("network.allowlist[{i}]");
            if !allowlist.insert(parse_hex_array::<20>(path, &field, id)?) {
                return Err(err(&field, format!("duplicate node id {id}")));
            }
        }

        // Role rules.
        let role = file.role;
        let allowed_peer_roles: &[Role] = match role {
            Role::Cn => &[Role::Cn, Role::Pn],
            Role::Pn => &[Role::Cn, Role::Pn, Role::En],
            Role::En => &[Role::Pn, Role::En],
            Role::Bootnode => &[Role::Cn, Role::Pn, Role::En],
        };
        for (i, p) in peers.iter().enumerate() {
            if !allowed_peer_roles.contains(&p.role) {
                return Err(err(
                    &format!("network.peers[{i}].role"),
                    format!("a {} does not dial a {}", role.name(), p.role.name()),
                ));
            }
        }
        for (i, b) in bootnodes.iter().enumerate() {
            if b.role != Role::Bootnode {
                return Err(err(
                    &format!("network.bootnodes[{i}].role"),
                    "must be \"bootnode\"".into(),
                ));
            }
        }
        let rpc_listen = file.rpc.as_ref().map(|r| r.listen);
        let rpc_index_mib = file
            .rpc
            .as_ref()
            .map_or(DEFAULT_RPC_INDEX_MIB, |r| r.index_mib);
        if !(1..=MAX_RPC_INDEX_MIB).contains(&rpc_index_mib) {
            return Err(err(
                "rpc.index_mib",
                format!("{rpc_index_mib} is outside 1..={MAX_RPC_INDEX_MIB}"),
            ));
        }
        match (role, rpc_listen) {
            (Role::En, None) => {
                return Err(err(
                    "rpc.listen",
                    "an EN serves JSON-RPC: set [rpc] listen".into(),
                ))
            }
            (Role::Cn | Role::Pn | Role::Bootnode, Some(_)) => {
                return Err(err(
                    "rpc",
                    format!("a {} does not serve JSON-RPC; only ENs do", role.name()),
                ))
            }
            _ => {}
        }
        let bootnode_serves = match (role, file.bootnode) {
            (Role::Bootnode, Some(b)) if matches!(b.serves, Role::Cn | Role::Pn | Role::En) => {
                let handed_out = bootnode_hands_out(b.serves);
                for (i, p) in peers.iter().enumerate() {
                    if !handed_out.contains(&p.role) {
                        return Err(err(
                            &format!("network.peers[{i}].role"),
                            format!(
                                "a {} bootnode does not hand out a {}",
                                b.serves.name(),
                                p.role.name()
                            ),
                        ));
                    }
                }
                Some(b.serves)
            }
            (Role::Bootnode, Some(b)) => {
                return Err(err(
                    "bootnode.serves",
                    format!(
                        "must be \"cn\", \"pn\" or \"en\", not \"{}\"",
                        b.serves.name()
                    ),
                ))
            }
            (Role::Bootnode, None) => {
                return Err(err(
                    "bootnode.serves",
                    "a bootnode must say which tier it serves".into(),
                ))
            }
            (_, Some(_)) => {
                return Err(err(
                    "bootnode",
                    format!(
                        "only a bootnode has a [bootnode] section, this is a {}",
                        role.name()
                    ),
                ))
            }
            (_, None) => None,
        };
        let metrics_listen = file.metrics.map(|m| m.listen);
        let ingress_listen = file.ingress.map(|m| m.listen);
        if ingress_listen.is_some() && !matches!(role, Role::Cn | Role::En) {
            return Err(err(
                "ingress",
                format!(
                    "only CNs and ENs take native ingress, this is a {}",
                    role.name()
                ),
            ));
        }
        let mut ports = vec![("network.listen", file.network.listen)];
        ports.extend(rpc_listen.map(|a| ("rpc.listen", a)));
        ports.extend(metrics_listen.map(|a| ("metrics.listen", a)));
        ports.extend(ingress_listen.map(|a| ("ingress.listen", a)));
        for (i, (fa, a)) in ports.iter().enumerate() {
            for (fb, b) in &ports[i + 1..] {
                if a == b && a.port() != 0 {
                    return Err(err(fb, format!("address {b} is already used by {fa}")));
                }
            }
        }

        let placement = placement(path, role, &file.runtime.placement)?;
        let io = file.runtime.io_memory_kib;
        if !(MIN_IO_MEMORY_KIB..=MAX_IO_MEMORY_KIB).contains(&io) {
            return Err(err(
                "runtime.io_memory_kib",
                format!("{io} is outside {MIN_IO_MEMORY_KIB}..={MAX_IO_MEMORY_KIB}"),
            ));
        }

        let snapshot_interval_blocks = file.storage.snapshot_interval_blocks;
        if !(1..=MAX_SNAPSHOT_INTERVAL_BLOCKS).contains(&snapshot_interval_blocks) {
            return Err(err(
                "storage.snapshot_interval_blocks",
                format!("{snapshot_interval_blocks} is outside 1..={MAX_SNAPSHOT_INTERVAL_BLOCKS}"),
            ));
        }

        #[cfg(not(feature = "byzantine"))]
        if file.byzantine.is_some() {
            return Err(err(
                "byzantine",
                "Byzantine behaviours are test-only: this build has none (build with \
                 `--features byzantine`), so it refuses to run a node configured to misbehave"
                    .into(),
            ));
        }
        #[cfg(feature = "byzantine")]
        let byzantine = match file.byzantine {
            None => None,
            Some(section) => Some(byzantine_settings(path, role, section)?),
        };

        Ok(NodeConfig {
            path: path.to_path_buf(),
            role,
            name: file.name,
            genesis: resolve(&file.genesis),
            key_file: resolve(&file.key_file),
            data_dir: resolve(&file.data_dir),
            listen: file.network.listen,
            peers,
            bootnodes,
            allowlist,
            encryption: file.network.encryption,
            rpc_listen,
            rpc_index_mib,
            metrics_listen,
            ingress_listen,
            placement,
            io_memory_kib: io,
            snapshot_interval_blocks,
            bootnode_serves,
            #[cfg(feature = "byzantine")]
            byzantine,
        })
    }
}

/// Checks a `[byzantine]` section: a CN's, at least one known behaviour, none twice.
#[cfg(feature = "byzantine")]
fn byzantine_settings(
    path: &Path,
    role: Role,
    section: ByzantineSection,
) -> Result<crate::config::byzantine::ByzantineSettings, ConfigError> {
    use crate::config::byzantine::Behaviour;
    let err = |field: &str, problem: String| ConfigError::new(path, field, problem);
    if role != Role::Cn && role != Role::Pn {
        return Err(err(
            "byzantine",
            format!(
                "only a CN or a PN misbehaves in tests, this is a {}",
                role.name()
            ),
        ));
    }
    if section.behaviours.is_empty() {
        return Err(err(
            "byzantine.behaviours",
            "name at least one behaviour".into(),
        ));
    }
    let mut behaviours = BTreeSet::new();
    for (i, name) in section.behaviours.iter().enumerate() {
        let field = format!("byzantine.behaviours[{i}]");
        let b = Behaviour::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Behaviour::ALL.iter().map(|b| b.name()).collect();
            err(
                &field,
                format!("unknown behaviour {name:?}; known: {}", known.join(", ")),
            )
        })?;
        if !behaviours.insert(b) {
            return Err(err(&field, format!("{name:?} is listed twice")));
        }
        if role == Role::Pn && b != Behaviour::TamperBodies {
            return Err(err(
                &field,
                format!("{name:?} is a CN's behaviour; a PN can only \"tamper-bodies\""),
            ));
        }
    }
    Ok(crate::config::byzantine::ByzantineSettings {
        behaviours,
        seed: section.seed,
    })
}

/// The roles a bootnode serving `serves` hands out (and so may list in `[[network.peers]]`):
/// CNs to CNs; PNs and ENs to PNs; PNs to ENs.
pub fn bootnode_hands_out(serves: Role) -> &'static [Role] {
    match serves {
        Role::Cn => &[Role::Cn],
        Role::Pn => &[Role::Pn, Role::En],
        Role::En => &[Role::Pn],
        Role::Bootnode => &[],
    }
}

/// Checks a node name: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("must be 1 to {MAX_NAME_LEN} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "character {c:?} not allowed (use letters, digits, '-' and '_')"
        ));
    }
    Ok(())
}

fn peer_entries(
    path: &Path,
    field: &str,
    entries: &[PeerSection],
) -> Result<Vec<PeerEntry>, ConfigError> {
    if entries.len() > MAX_CONFIG_PEERS {
        return Err(ConfigError::new(
            path,
            field,
            format!("more than {MAX_CONFIG_PEERS} entries"),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let at = |f: &str| format!("{field}[{i}].{f}");
        check_name(&e.name).map_err(|p| ConfigError::new(path, at("name"), p))?;
        let node_id = parse_hex_array::<20>(path, &at("node_id"), &e.node_id)?;
        if !seen.insert(node_id) {
            return Err(ConfigError::new(
                path,
                at("node_id"),
                format!("node id {} listed twice", e.node_id),
            ));
        }
        if e.address.port() == 0 || e.address.ip().is_unspecified() {
            return Err(ConfigError::new(
                path,
                at("address"),
                format!("{} is not a dialable address", e.address),
            ));
        }
        out.push(PeerEntry {
            name: e.name.clone(),
            role: e.role,
            node_id,
            address: e.address,
        });
    }
    Ok(out)
}

fn placement(
    path: &Path,
    role: Role,
    section: &PlacementSection,
) -> Result<Placement, ConfigError> {
    let field = "runtime.placement";
    match section {
        PlacementSection::Mode(m) if m == "auto" => Ok(Placement::Auto),
        PlacementSection::Mode(m) if m == "unbound" => Ok(Placement::Unbound),
        PlacementSection::Mode(m) => Err(ConfigError::new(
            path,
            field,
            format!(
                "\"{m}\" is not a placement: use \"auto\", \"unbound\" or a table of shard = cpu"
            ),
        )),
        PlacementSection::Table(table) => {
            let mut fixed = BTreeMap::new();
            for (name, &cpu) in table {
                let shard = Shard::from_name(name).ok_or_else(|| {
                    ConfigError::new(
                        path,
                        format!("{field}.{name}"),
                        "unknown shard (net, consensus, exec, store, rpc)",
                    )
                })?;
                if !role.shards().contains(&shard) {
                    return Err(ConfigError::new(
                        path,
                        format!("{field}.{name}"),
                        format!("a {} has no {name} shard", role.name()),
                    ));
                }
                if cpu > MAX_CPU_INDEX {
                    return Err(ConfigError::new(
                        path,
                        format!("{field}.{name}"),
                        format!("cpu {cpu} above {MAX_CPU_INDEX}"),
                    ));
                }
                fixed.insert(shard, cpu);
            }
            if let Some(missing) = role.shards().iter().find(|s| !fixed.contains_key(s)) {
                return Err(ConfigError::new(
                    path,
                    format!("{field}.{}", missing.name()),
                    format!(
                        "a {} needs a CPU for its {} shard",
                        role.name(),
                        missing.name()
                    ),
                ));
            }
            Ok(Placement::Fixed(fixed))
        }
    }
}
