//! The genesis file, and the generator of local development networks (`corecell genesis`).
//!
//! ```toml
//! chain_id = 1001
//! timestamp_ms = 1780000000000   # genesis block time
//! committee_size = 4             # committee drawn per height from the council
//! block_period_ms = 500          # target time between blocks; 0: propose as soon as the last is final
//! execution = "transfer"         # "transfer" (signed Ethereum transfers, the default) or "raw"
//! [[council]]                    # the consensus nodes, in council-index order
//! name = "cn0"
//! node_id = "0x…"
//! bls_public_key = "0x…"
//! proof_of_possession = "0x…"
//! [[accounts]]                   # prefunded accounts
//! address = "0x…"
//! balance = "1000000000000000000000000"   # wei, decimal
//! ```
//!
//! Loading validates every field and checks every council key's proof of possession once
//! (the resulting [`CouncilKeys`] is the cache of decompressed keys the node then uses).
//!
//! `execution` says what a chain's transactions are. `transfer`: signed Ethereum value
//! transfers, executed against the account state, whose root every header carries (the
//! genesis header's is the root of the prefunded accounts). `raw`: opaque byte strings that
//! are ordered and finalized but not executed (state root zero): a benchmark mode that
//! measures consensus, networking and storage without execution.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

use super::keys::NodeKey;
use super::node::{
    check_name, BootnodeSection, ConfigFile, ListenSection, NetworkSection, PeerSection, Role,
    RpcSection, RuntimeSection,
};
use super::{parse_hex_array, parse_toml, read_bounded, to_hex, ConfigError};
use crate::crypto::bls::{BlsSecretKey, CouncilKeys};
use crate::crypto::election::genesis_mix;
use crate::crypto::tx::address_of_secret;
use crate::types::hash::{keccak256_parts, Hash32, ZERO_HASH};
use crate::types::{BlockHeader, MAX_COUNCIL_SIZE};

/// A genesis file larger than this is refused unread.
pub const MAX_GENESIS_BYTES: u64 = 256 * 1024 * 1024;
/// The most prefunded accounts a genesis may list.
pub const MAX_GENESIS_ACCOUNTS: usize = 1_000_000;
/// Shortest block period accepted: 0 proposes the next block as soon as the last is final.
pub const MIN_BLOCK_PERIOD_MS: u64 = 0;
/// Longest block period accepted.
pub const MAX_BLOCK_PERIOD_MS: u64 = 60_000;
/// Default chain id of generated networks.
pub const DEFAULT_CHAIN_ID: u64 = 1001;
/// Default block period of generated networks.
pub const DEFAULT_BLOCK_PERIOD_MS: u64 = 500;
/// Default first port of generated networks: node k listens on base+k (p2p), base+1000+k
/// (JSON-RPC), base+2000+k (metrics) and base+3000+k (ingress). From 28000 all four lie below
/// Linux's default ephemeral range (32768-60999) for up to 1,768 nodes, so no outgoing
/// connection on the machine can be handed one of them as its local port before a node binds
/// it.
pub const DEFAULT_BASE_PORT: u16 = 28000;
/// Default number of prefunded test accounts.
pub const DEFAULT_TEST_ACCOUNTS: usize = 1000;
/// Balance of each generated test account: one million ether, in wei.
pub const TEST_ACCOUNT_BALANCE_WEI: u128 = 1_000_000 * 1_000_000_000_000_000_000;

/// One council member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouncilMember {
    /// Name (the CN's node name).
    pub name: String,
    /// Node id.
    pub node_id: [u8; 20],
    /// Compressed BLS public key.
    pub public_key: [u8; 48],
    /// Proof of possession.
    pub proof_of_possession: [u8; 96],
}

/// A prefunded account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisAccount {
    /// Address.
    pub address: [u8; 20],
    /// Balance in wei.
    pub balance: U256,
}

/// A validated genesis.
#[derive(Debug, Clone)]
pub struct Genesis {
    /// EIP-155 chain id; also bound into every consensus signature.
    pub chain_id: u64,
    /// Genesis block time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Committee size per height (at most the council size).
    pub committee_size: usize,
    /// Target block period, ms.
    pub block_period_ms: u64,
    /// The council in index order.
    pub council: Vec<CouncilMember>,
    /// The council's validated, decompressed keys.
    pub council_keys: CouncilKeys,
    /// Prefunded accounts.
    pub accounts: Vec<GenesisAccount>,
    /// What the chain's transactions are.
    pub execution: ExecutionMode,
    /// The state root of the prefunded accounts (zero for [`ExecutionMode::Raw`]).
    pub state_root: Hash32,
}

/// What a chain's transactions are (see the module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionMode {
    /// Signed Ethereum value transfers, executed; headers carry the state root.
    #[default]
    Transfer,
    /// Opaque transactions, ordered and finalized, not executed.
    Raw,
}

impl ExecutionMode {
    /// The name used in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ExecutionMode::Transfer => "transfer",
            ExecutionMode::Raw => "raw",
        }
    }
}

/// The file format.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    /// Chain id.
    pub chain_id: u64,
    /// Genesis time.
    pub timestamp_ms: u64,
    /// Committee size.
    pub committee_size: usize,
    /// Block period.
    pub block_period_ms: u64,
    /// Council.
    pub council: Vec<CouncilMemberFile>,
    /// What the transactions are (default: transfer).
    #[serde(default)]
    pub execution: ExecutionMode,
    /// Accounts.
    #[serde(default)]
    pub accounts: Vec<AccountFile>,
}

/// A `[[council]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouncilMemberFile {
    /// Name.
    pub name: String,
    /// Node id, hex.
    pub node_id: String,
    /// Public key, hex.
    pub bls_public_key: String,
    /// Proof of possession, hex.
    pub proof_of_possession: String,
}

impl From<&CouncilMember> for CouncilMemberFile {
    fn from(m: &CouncilMember) -> Self {
        CouncilMemberFile {
            name: m.name.clone(),
            node_id: to_hex(&m.node_id),
            bls_public_key: to_hex(&m.public_key),
            proof_of_possession: to_hex(&m.proof_of_possession),
        }
    }
}

/// An `[[accounts]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountFile {
    /// Address, hex.
    pub address: String,
    /// Balance in wei, decimal.
    pub balance: String,
}

/// The state root of a transfer chain's genesis accounts. The account state, and so the
/// definition of its root, belongs to the exec room (`exec::genesis_state_root`), which this
/// floor may not import: whoever loads a genesis hands it in. An error names what is wrong
/// with the accounts (their balances overflow, too many).
pub type GenesisStateRoot =
    fn(chain_id: u64, accounts: &[GenesisAccount]) -> Result<Hash32, String>;

impl Genesis {
    /// Loads and validates a genesis file; `state_root` gives the root of its accounts.
    pub fn load(path: &Path, state_root: GenesisStateRoot) -> Result<Genesis, ConfigError> {
        let text = read_bounded(path, MAX_GENESIS_BYTES)?;
        let file: GenesisFile = parse_toml(path, &text)?;
        Genesis::validate(path, &file, state_root)
    }

    /// Validates a parsed genesis; `state_root` gives the root of its accounts.
    pub fn validate(
        path: &Path,
        file: &GenesisFile,
        state_root: GenesisStateRoot,
    ) -> Result<Genesis, ConfigError> {
        let err = |field: &str, problem: String| ConfigError::new(path, field, problem);
        if file.chain_id == 0 {
            return Err(err("chain_id", "must be non-zero".into()));
        }
        if !(MIN_BLOCK_PERIOD_MS..=MAX_BLOCK_PERIOD_MS).contains(&file.block_period_ms) {
            return Err(err(
                "block_period_ms",
                format!(
                    "{} is outside {MIN_BLOCK_PERIOD_MS}..={MAX_BLOCK_PERIOD_MS}",
                    file.block_period_ms
                ),
            ));
        }
        let n = file.council.len();
        if n == 0 || n > MAX_COUNCIL_SIZE {
            return Err(err(
                "council",
                format!("{n} members; a council has 1 to {MAX_COUNCIL_SIZE}"),
            ));
        }
        if file.committee_size == 0 || file.committee_size > n {
            return Err(err(
                "committee_size",
                format!(
                    "{} must be between 1 and the council size {n}",
                    file.committee_size
                ),
            ));
        }
        let mut council = Vec::with_capacity(n);
        let mut names = BTreeSet::new();
        for (i, m) in file.council.iter().enumerate() {
            let at = |f: &str| format!("council[{i}].{f}");
            check_name(&m.name).map_err(|p| ConfigError::new(path, at("name"), p))?;
            if !names.insert(m.name.as_str()) {
                return Err(ConfigError::new(
                    path,
                    at("name"),
                    format!("name {} used twice", m.name),
                ));
            }
            let member = CouncilMember {
                name: m.name.clone(),
                node_id: parse_hex_array(path, &at("node_id"), &m.node_id)?,
                public_key: parse_hex_array(path, &at("bls_public_key"), &m.bls_public_key)?,
                proof_of_possession: parse_hex_array(
                    path,
                    &at("proof_of_possession"),
                    &m.proof_of_possession,
                )?,
            };
            if crate::crypto::bls::node_id_of(&member.public_key) != member.node_id {
                return Err(ConfigError::new(
                    path,
                    at("node_id"),
                    "does not match bls_public_key",
                ));
            }
            council.push(member);
        }
        let pairs: Vec<_> = council
            .iter()
            .map(|m| (m.public_key, m.proof_of_possession))
            .collect();
        let council_keys = CouncilKeys::new(&pairs).map_err(|e| match e {
            crate::crypto::bls::CouncilError::Member { index, error } => {
                ConfigError::new(path, format!("council[{index}]"), error.to_string())
            }
            other => ConfigError::new(path, "council", other.to_string()),
        })?;
        if file.accounts.len() > MAX_GENESIS_ACCOUNTS {
            return Err(err(
                "accounts",
                format!(
                    "{} accounts, more than {MAX_GENESIS_ACCOUNTS}",
                    file.accounts.len()
                ),
            ));
        }
        let mut accounts = Vec::with_capacity(file.accounts.len());
        let mut addresses = BTreeSet::new();
        for (i, a) in file.accounts.iter().enumerate() {
            let at = |f: &str| format!("accounts[{i}].{f}");
            let address: [u8; 20] = parse_hex_array(path, &at("address"), &a.address)?;
            if !addresses.insert(address) {
                return Err(ConfigError::new(
                    path,
                    at("address"),
                    format!("{} listed twice", a.address),
                ));
            }
            let balance =
                parse_wei(&a.balance).map_err(|p| ConfigError::new(path, at("balance"), p))?;
            accounts.push(GenesisAccount { address, balance });
        }
        let state_root = match file.execution {
            ExecutionMode::Transfer => {
                state_root(file.chain_id, &accounts).map_err(|e| err("accounts", e))?
            }
            ExecutionMode::Raw => ZERO_HASH,
        };
        Ok(Genesis {
            chain_id: file.chain_id,
            timestamp_ms: file.timestamp_ms,
            committee_size: file.committee_size,
            block_period_ms: file.block_period_ms,
            council,
            council_keys,
            accounts,
            execution: file.execution,
            state_root,
        })
    }

    /// The council index of the member with this public key.
    pub fn council_index(&self, public_key: &[u8; 48]) -> Option<u32> {
        self.council
            .iter()
            .position(|m| &m.public_key == public_key)
            .map(|i| i as u32)
    }

    /// The genesis mix (see `election::genesis_mix`).
    pub fn mix(&self) -> [u8; 32] {
        let keys: Vec<[u8; 48]> = self.council.iter().map(|m| m.public_key).collect();
        genesis_mix(self.chain_id, &keys)
    }

    /// The header of block 0; its state root is [`Genesis::state_root`].
    pub fn header(&self) -> BlockHeader {
        BlockHeader {
            parent_hash: ZERO_HASH,
            height: 0,
            round: 0,
            timestamp_ms: self.timestamp_ms,
            proposer: 0,
            randao_reveal: [0u8; 96],
            mix: self.mix(),
            transactions_root: crate::types::chain::transactions_root(std::iter::empty()),
            state_root: self.state_root,
            committee_digest: ZERO_HASH,
        }
    }
}

/// Parses a decimal wei amount.
pub fn parse_wei(text: &str) -> Result<U256, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("\"{text}\" is not a decimal amount of wei"));
    }
    U256::from_str_radix(text, 10).map_err(|e| format!("\"{text}\": {e}"))
}

/// The private key of deterministic test account `i`:
/// `keccak256("corecell-dev-account-v1" || be_u64(i) || be_u64(attempt))`, taking the first
/// attempt that is a valid secp256k1 key. These keys are public knowledge: development only.
pub fn test_account_secret(i: u64) -> [u8; 32] {
    (0u64..)
        .map(|attempt| {
            keccak256_parts(&[
                b"corecell-dev-account-v1",
                &i.to_be_bytes(),
                &attempt.to_be_bytes(),
            ])
        })
        .find(|k| address_of_secret(k).is_ok())
        .unwrap_or_else(|| {
            unreachable!("a keccak output is a valid secp256k1 key with overwhelming probability")
        })
}

/// What `corecell genesis` is asked to build.
#[derive(Debug, Clone)]
pub struct NetworkSpec {
    /// Consensus nodes (the council).
    pub cns: usize,
    /// Proxy nodes, spread over the CNs' cells round-robin.
    pub pns: usize,
    /// Endpoint nodes.
    pub ens: usize,
    /// Address all nodes listen on.
    pub host: IpAddr,
    /// First p2p port; see [`NetworkSpec::ports`].
    pub base_port: u16,
    /// Committee size (default: the whole council).
    pub committee_size: Option<usize>,
    /// Block period.
    pub block_period_ms: u64,
    /// Prefunded test accounts.
    pub accounts: usize,
    /// Chain id.
    pub chain_id: u64,
    /// Genesis time.
    pub timestamp_ms: u64,
    /// Derive node keys from this seed instead of the OS random source (reproducible networks).
    pub seed: Option<u64>,
    /// What the chain's transactions are.
    pub execution: ExecutionMode,
}

/// One node of a generated network.
#[derive(Debug, Clone)]
pub struct PlannedNode {
    /// Name (also its folder).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Its config file.
    pub config_path: PathBuf,
    /// Node id.
    pub node_id: [u8; 20],
    /// p2p address.
    pub p2p: SocketAddr,
    /// JSON-RPC address (ENs).
    pub rpc: Option<SocketAddr>,
    /// Metrics address.
    pub metrics: SocketAddr,
    /// Native ingress address (ENs; CNs when the network has no ENs).
    pub ingress: Option<SocketAddr>,
}

/// What `corecell genesis` wrote.
#[derive(Debug, Clone)]
pub struct GeneratedNetwork {
    /// The genesis file.
    pub genesis_path: PathBuf,
    /// The test accounts file.
    pub accounts_path: PathBuf,
    /// Every node, CNs first.
    pub nodes: Vec<PlannedNode>,
}

impl NetworkSpec {
    /// Ports of node number `k` (CNs, then PNs, ENs, bootnodes): p2p `base + k`, JSON-RPC
    /// `base + 1000 + k`, metrics `base + 2000 + k`, native ingress `base + 3000 + k`.
    pub fn ports(&self, k: usize) -> Result<(u16, u16, u16, u16), String> {
        let at = |offset: usize| {
            u16::try_from(self.base_port as usize + offset + k)
                .map_err(|_| format!("--base-port {} leaves no room for {} nodes (ports up to base + 3000 + nodes must fit in 65535)", self.base_port, self.node_count()))
        };
        Ok((at(0)?, at(1000)?, at(2000)?, at(3000)?))
    }

    /// CNs + PNs + ENs + bootnodes.
    pub fn node_count(&self) -> usize {
        self.cns + self.pns + self.ens + self.bootnode_count()
    }

    /// One PN bootnode if there are PNs, one EN bootnode if there are ENs.
    pub fn bootnode_count(&self) -> usize {
        usize::from(self.pns > 0) + usize::from(self.ens > 0)
    }

    /// Checks the spec before anything is written.
    pub fn check(&self) -> Result<(), String> {
        if self.cns == 0 || self.cns > MAX_COUNCIL_SIZE {
            return Err(format!("--cns must be 1 to {MAX_COUNCIL_SIZE}"));
        }
        if self.ens > 0 && self.pns == 0 {
            return Err("ENs connect only to PNs: --ens needs --pns of at least 1".into());
        }
        if self.pns > 10_000 || self.ens > 10_000 {
            return Err("at most 10000 PNs and 10000 ENs".into());
        }
        if let Some(c) = self.committee_size {
            if c == 0 || c > self.cns {
                return Err(format!(
                    "--committee-size must be 1 to --cns ({})",
                    self.cns
                ));
            }
        }
        if !(MIN_BLOCK_PERIOD_MS..=MAX_BLOCK_PERIOD_MS).contains(&self.block_period_ms) {
            return Err(format!(
                "--block-period-ms must be {MIN_BLOCK_PERIOD_MS} to {MAX_BLOCK_PERIOD_MS}"
            ));
        }
        if self.accounts > MAX_GENESIS_ACCOUNTS {
            return Err(format!("--accounts must be at most {MAX_GENESIS_ACCOUNTS}"));
        }
        if self.chain_id == 0 {
            return Err("--chain-id must be non-zero".into());
        }
        self.ports(self.node_count().saturating_sub(1)).map(|_| ())
    }

    fn node_key(&self, k: usize) -> Result<NodeKey, String> {
        match self.seed {
            Some(seed) => {
                let s = keccak256_parts(&[
                    b"corecell-dev-node-key-v1",
                    &seed.to_be_bytes(),
                    &(k as u64).to_be_bytes(),
                ]);
                Ok(NodeKey::from_secret(BlsSecretKey::from_seed(&s)))
            }
            None => NodeKey::generate().map_err(|e| format!("the OS random source failed: {e}")),
        }
    }

    /// Writes the network into `out`: `genesis.toml`, `accounts.json`, and for each node
    /// `<name>/config.toml` and `<name>/key.toml`. Refuses a folder that already holds a
    /// genesis, so nothing is silently overwritten.
    pub fn generate(&self, out: &Path) -> Result<GeneratedNetwork, String> {
        self.check()?;
        let genesis_path = out.join("genesis.toml");
        if genesis_path.exists() {
            return Err(format!(
                "{} already exists; choose an empty --out folder",
                genesis_path.display()
            ));
        }
        std::fs::create_dir_all(out)
            .map_err(|e| format!("cannot create {}: {e}", out.display()))?;

        // Plan: names, roles, keys, addresses.
        let mut roles = Vec::new();
        roles.extend((0..self.cns).map(|i| (format!("cn{i}"), Role::Cn)));
        roles.extend((0..self.pns).map(|i| (format!("pn{i}"), Role::Pn)));
        roles.extend((0..self.ens).map(|i| (format!("en{i}"), Role::En)));
        if self.pns > 0 {
            roles.push(("boot-pn".into(), Role::Bootnode));
        }
        if self.ens > 0 {
            roles.push(("boot-en".into(), Role::Bootnode));
        }
        let mut keys = Vec::with_capacity(roles.len());
        let mut nodes = Vec::with_capacity(roles.len());
        for (k, (name, role)) in roles.into_iter().enumerate() {
            let key = self.node_key(k)?;
            let (p2p, rpc, metrics, ingress) = self.ports(k)?;
            nodes.push(PlannedNode {
                config_path: out.join(&name).join("config.toml"),
                name,
                role,
                node_id: key.node_id,
                p2p: SocketAddr::new(self.host, p2p),
                rpc: (role == Role::En).then_some(SocketAddr::new(self.host, rpc)),
                metrics: SocketAddr::new(self.host, metrics),
                // Clients talk to ENs only; a network without ENs takes them at its CNs.
                ingress: (role == Role::En || (role == Role::Cn && self.ens == 0))
                    .then_some(SocketAddr::new(self.host, ingress)),
            });
            keys.push(key);
        }

        // Genesis.
        let council: Vec<CouncilMember> = nodes
            .iter()
            .zip(&keys)
            .filter(|(n, _)| n.role == Role::Cn)
            .map(|(n, k)| CouncilMember {
                name: n.name.clone(),
                node_id: k.node_id,
                public_key: k.public_key,
                proof_of_possession: k.proof_of_possession,
            })
            .collect();
        let test_accounts: Vec<([u8; 32], [u8; 20])> = (0..self.accounts as u64)
            .map(|i| {
                let secret = test_account_secret(i);
                let address = address_of_secret(&secret).map_err(|e| e.to_string())?;
                Ok((secret, address))
            })
            .collect::<Result<_, String>>()?;
        let file = GenesisFile {
            chain_id: self.chain_id,
            timestamp_ms: self.timestamp_ms,
            committee_size: self.committee_size.unwrap_or(self.cns),
            block_period_ms: self.block_period_ms,
            execution: self.execution,
            council: council.iter().map(CouncilMemberFile::from).collect(),
            accounts: test_accounts
                .iter()
                .map(|(_, a)| AccountFile {
                    address: to_hex(a),
                    balance: TEST_ACCOUNT_BALANCE_WEI.to_string(),
                })
                .collect(),
        };
        let body = toml::to_string(&file).map_err(|e| format!("cannot encode genesis: {e}"))?;
        write_file(
            &genesis_path,
            &format!("# corecell genesis, written by `corecell genesis`\n{body}"),
        )?;

        // Test accounts, published the way local Ethereum dev chains publish theirs.
        let accounts_path = out.join("accounts.json");
        let accounts_json = serde_json::json!({
            "warning": "DEVELOPMENT KEYS ONLY: these private keys are derived from a public formula; never fund them on a real network",
            "chain_id": self.chain_id,
            "derivation": "secret_i = keccak256(\"corecell-dev-account-v1\" || be_u64(i) || be_u64(attempt)), first valid attempt",
            "accounts": test_accounts.iter().map(|(s, a)| serde_json::json!({
                "address": to_hex(a),
                "private_key": to_hex(s),
                "balance_wei": TEST_ACCOUNT_BALANCE_WEI.to_string(),
            })).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&accounts_json).map_err(|e| e.to_string())?;
        write_file(&accounts_path, &text)?;

        // One folder per node: key and config.
        for (k, node) in nodes.iter().enumerate() {
            let dir = out.join(&node.name);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            keys[k]
                .write(&dir.join("key.toml"), false)
                .map_err(|e| format!("cannot write {}: {e}", dir.join("key.toml").display()))?;
            let config = self.node_config(k, &nodes);
            let body =
                toml::to_string(&config).map_err(|e| format!("cannot encode config: {e}"))?;
            write_file(
                &node.config_path,
                &format!(
                    "# corecell {} node {}, written by `corecell genesis`\n{body}",
                    node.role.name(),
                    node.name
                ),
            )?;
        }
        Ok(GeneratedNetwork {
            genesis_path,
            accounts_path,
            nodes,
        })
    }

    /// The config of node `k`: who it dials and whom it admits.
    ///
    /// - CN: dials every other CN (full mesh); admits the other CNs and its cell's PNs.
    /// - PN `j` belongs to cell `j mod cns`: dials its CN and the other PNs, asks the PN
    ///   bootnode; admits its CN, the other PNs and every EN.
    /// - EN: asks the EN bootnode which PNs to dial; admits PNs and other ENs.
    /// - PN bootnode: admits PNs, hands out PNs. EN bootnode: admits ENs, hands out PNs.
    fn node_config(&self, k: usize, nodes: &[PlannedNode]) -> ConfigFile {
        let me = &nodes[k];
        let cell_of = |n: &PlannedNode| -> Option<usize> {
            let j: usize = n.name.strip_prefix("pn")?.parse().ok()?;
            Some(j % self.cns)
        };
        let my_cn_index = |n: &PlannedNode| {
            n.name
                .strip_prefix("cn")
                .and_then(|s| s.parse::<usize>().ok())
        };
        let others = |role: Role| {
            nodes
                .iter()
                .filter(move |n| n.role == role && n.name != me.name)
        };
        let entry = |n: &PlannedNode| PeerSection {
            name: n.name.clone(),
            role: n.role,
            node_id: to_hex(&n.node_id),
            address: n.p2p,
        };
        let bootnode_named = |name: &'static str| {
            nodes
                .iter()
                .filter(move |n| n.role == Role::Bootnode && n.name == name)
        };

        let (peers, bootnodes, allow): (Vec<&PlannedNode>, Vec<&PlannedNode>, Vec<&PlannedNode>) =
            match me.role {
                Role::Cn => {
                    let cell = my_cn_index(me);
                    let my_pns = others(Role::Pn).filter(|p| cell_of(p) == cell);
                    (
                        others(Role::Cn).collect(),
                        vec![],
                        others(Role::Cn).chain(my_pns).collect(),
                    )
                }
                Role::Pn => {
                    let cell = cell_of(me);
                    let my_cn = others(Role::Cn).filter(|c| my_cn_index(c) == cell);
                    let peers = my_cn.clone().chain(others(Role::Pn)).collect();
                    let allow = my_cn
                        .chain(others(Role::Pn))
                        .chain(others(Role::En))
                        .collect();
                    (peers, bootnode_named("boot-pn").collect(), allow)
                }
                Role::En => (
                    vec![],
                    bootnode_named("boot-en").collect(),
                    others(Role::Pn).chain(others(Role::En)).collect(),
                ),
                Role::Bootnode if me.name == "boot-pn" => (
                    others(Role::Pn).collect(),
                    vec![],
                    others(Role::Pn).collect(),
                ),
                Role::Bootnode => (
                    others(Role::Pn).collect(),
                    vec![],
                    others(Role::En).collect(),
                ),
            };
        ConfigFile {
            role: me.role,
            name: me.name.clone(),
            genesis: PathBuf::from("../genesis.toml"),
            key_file: PathBuf::from("key.toml"),
            data_dir: PathBuf::from("data"),
            network: NetworkSection {
                listen: me.p2p,
                allowlist: allow.iter().map(|n| to_hex(&n.node_id)).collect(),
                peers: peers.into_iter().map(entry).collect(),
                bootnodes: bootnodes.into_iter().map(entry).collect(),
                encryption: true,
            },
            rpc: me.rpc.map(|listen| RpcSection {
                listen,
                index_mib: crate::config::node::DEFAULT_RPC_INDEX_MIB,
            }),
            ingress: me.ingress.map(|listen| ListenSection { listen }),
            metrics: Some(ListenSection { listen: me.metrics }),
            runtime: RuntimeSection::default(),
            storage: Default::default(),
            bootnode: (me.role == Role::Bootnode).then(|| BootnodeSection {
                serves: if me.name == "boot-pn" {
                    Role::Pn
                } else {
                    Role::En
                },
            }),
            byzantine: None,
        }
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A network spec for tests: loopback, 5 test accounts, reproducible keys.
#[cfg(test)]
pub(crate) fn test_network_spec(cns: usize, pns: usize, ens: usize) -> NetworkSpec {
    NetworkSpec {
        cns,
        pns,
        ens,
        host: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        base_port: 40000,
        committee_size: None,
        block_period_ms: 500,
        accounts: 5,
        chain_id: 1001,
        timestamp_ms: 1_700_000_000_000,
        seed: Some(7),
        execution: Default::default(),
    }
}
