//! The layered network end to end: four CNs, two PNs, two ENs and the PN and EN bootnodes as
//! real `corecell` node processes on loopback.
//!
//! What these tests prove:
//!
//! 1. Blocks and transactions cross the tiers: the topology is CN mesh / PN / EN (no CN talks
//!    to an EN, CNs take no clients), an alloy client's transfers sent to en0's JSON-RPC reach
//!    the CNs only through the PNs, become final, and their effect is visible through en1's
//!    JSON-RPC; every node's block log (CN, PN, EN) holds the same chain after a clean stop.
//! 2. A peer that sends a non-final block at the next height is banned by the PN or EN
//!    follower: below-quorum, wrong-signer-set and wrong-message commit certificates, each
//!    sent by a rogue impersonating an allowed peer with that peer's real key; the forged
//!    block never enters the target's chain and the network keeps finalizing.
//! 3. An EN whose transaction-carrying PN is killed keeps following through the other PN, its
//!    clients' transfers still become final, the PN catches up after a restart, and the EN's
//!    block log has no gap.
//! 4. The PN bootnode refuses a PN missing from its allowlist, and admits it after the
//!    allowlist is fixed and the bootnode reloaded with SIGHUP.
//! 5. Twenty rounds of kill -9 and restart, or SIGSTOP / SIGCONT, of random CNs, PNs and ENs
//!    under load: the network finalizes after every round, every transaction answered FINAL is
//!    in the chain, and all chains agree.
//! 6. The whole network (bootnodes included) killed with SIGKILL at once under load: after the
//!    restart every transaction an EN answered FINAL is in that EN's and cn0's block logs, the
//!    chain continues, and all chains agree.
//! 7. PNs re-read their allowlist on SIGHUP: an EN missing from it is admitted without a
//!    restart, a config that no longer validates is refused naming the field (the old list
//!    stays), and an EN removed from it has its links closed (no ban).
//!
//! Ports: test t uses base 36000 + 20 t (p2p base+k, JSON-RPC base+1000+k, metrics
//! base+2000+k, ingress base+3000+k for node k in the generator's order: cn0..cn3, pn0, pn1,
//! en0, en1, boot-pn, boot-en). Hygiene as in `tests/common`: every process is reaped, every
//! wait has a deadline, tests are serialized.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use common::*;
use corecell::config::genesis::test_account_secret;
use corecell::config::keys::NodeKey;
use corecell::config::node::Role;
use corecell::crypto::bls::{BlsSignature, Domain};
use corecell::crypto::election::Committee;
use corecell::crypto::tx::{sign_transfer, Transfer, TxType};
use corecell::exec::transfer::BASE_FEE_WEI;
use corecell::net::handshake::{Handshake, Side, AUTH_LEN, HELLO_LEN};
use corecell::types::chain::transactions_root;
use corecell::types::frame::encode_frame;
use corecell::types::hash::{keccak256, Hash32};
use corecell::types::{
    signers, Block, BlockHeader, CouncilIndex, FinalizedBlock, QuorumCertificate, VoteKind,
};

const PNS: usize = 2;
const ENS: usize = 2;
/// Test accounts in the genesis (test 3 sends one transfer from each of many accounts).
const ACCOUNTS: usize = 200;
/// How long a transfer gets to become final (debug build, 2 cores).
const RECEIPT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn signer(i: u64) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&B256::from(test_account_secret(i))).expect("test key")
}

/// Generates 4 CN + 2 PN + 2 EN + 2 bootnodes and starts them all, waiting until every node
/// is connected as its role requires.
fn start(base: u16, block_period_ms: u64) -> Net {
    let mut net = Net::generate_tiers(base, block_period_ms, ACCOUNTS, PNS, ENS);
    net.spawn_all();
    net
}

/// Polls `eth_getTransactionReceipt` until it answers or `within` passes.
async fn receipt_within<P: Provider>(
    provider: &P,
    hash: B256,
    within: Duration,
) -> Option<TransactionReceipt> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(r)) = provider.get_transaction_receipt(hash).await {
            return Some(r);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether something accepts TCP connections at `addr`.
fn listens(addr: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        // A connection to itself (nothing listening, ephemeral-range port) is no listener.
        Ok(s) => s.local_addr().ok() != Some(addr),
        Err(_) => false,
    }
}

#[test]
fn blocks_and_transactions_cross_the_tiers_and_an_alloy_client_gets_receipts_from_an_en() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = start(36000, 500);
    let cns = net.of_role(Role::Cn);
    let pns = net.of_role(Role::Pn);
    let ens = net.of_role(Role::En);
    let (en0, en1) = (net.index("en0"), net.index("en1"));
    let ready_after = started.elapsed();

    // Topology, from the nodes' own peer gauges.
    for &i in &cns {
        let name = &net.nodes[i].name;
        assert_eq!(net.sample(i, PEERS_EN), 0.0, "{name} has an EN peer");
        assert_eq!(
            net.sample(i, PEERS_CN),
            (CNS - 1) as f64,
            "{name} is not meshed"
        );
        // PN j belongs to cn(j mod 4): cn0 and cn1 have one PN each, cn2 and cn3 none.
        let own_pns = (0..PNS).filter(|j| j % CNS == i).count() as f64;
        assert_eq!(
            net.sample(i, PEERS_PN),
            own_pns,
            "{name}'s PN peers are not its cell's PNs"
        );
        assert!(
            !net.nodes[i].serves_ingress,
            "{name} is configured for clients"
        );
        assert!(
            !listens(net.nodes[i].ingress),
            "something listens on {name}'s ingress port {} in a network with ENs",
            net.nodes[i].ingress
        );
    }
    for &i in &ens {
        let name = &net.nodes[i].name;
        assert_eq!(net.sample(i, PEERS_CN), 0.0, "{name} has a CN peer");
        assert_eq!(net.sample(i, PEERS_EN), 0.0, "{name} has an EN peer");
        // Control for the CN check above: the same probe finds an EN's ingress.
        assert!(
            listens(net.nodes[i].ingress),
            "{name}'s ingress port {} does not listen",
            net.nodes[i].ingress
        );
    }
    for &i in &pns {
        assert_eq!(
            net.sample(i, PEERS_EN),
            ENS as f64,
            "{} does not serve both ENs",
            net.nodes[i].name
        );
    }

    // Transfers from test account 0 through en0's JSON-RPC, with alloy's wallet filling
    // nonce, gas and fees.
    let to = Address::repeat_byte(0x42);
    let values: [u64; 3] = [1_000, 2_000, 3_000];
    let (en0_url, en1_url) = (net.nodes[en0].rpc_url(), net.nodes[en1].rpc_url());
    let receipts: Vec<TransactionReceipt> = runtime().block_on(async {
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer(0)))
            .connect_http(en0_url.parse().expect("url"));
        assert_eq!(provider.get_chain_id().await.expect("chain id"), CHAIN_ID);
        let mut hashes = Vec::new();
        for v in values {
            let pending = provider
                .send_transaction(
                    TransactionRequest::default()
                        .with_to(to)
                        .with_value(U256::from(v)),
                )
                .await
                .expect("en0 takes the transfer");
            hashes.push(*pending.tx_hash());
        }
        let mut receipts = Vec::new();
        for hash in hashes {
            let r = receipt_within(&provider, hash, RECEIPT).await;
            receipts.push(r.unwrap_or_else(|| {
                panic!(
                    "no receipt for {hash} from en0 within {RECEIPT:?}\n{}",
                    tail(&net.nodes[en0].log(), 30)
                )
            }));
        }
        receipts
    });
    for r in &receipts {
        assert!(r.status(), "transfer {} failed", r.transaction_hash);
        assert_eq!(r.to, Some(to));
        assert_eq!(r.from, signer(0).address());
    }
    let last_block = receipts
        .iter()
        .map(|r| r.block_number.expect("a receipt names its block"))
        .max()
        .expect("three receipts");

    // en1 saw the same: once its JSON-RPC reaches that block, the balance and the receipts.
    runtime().block_on(async {
        let provider = ProviderBuilder::new().connect_http(en1_url.parse().expect("url"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = provider.get_block_number().await.unwrap_or(0);
            if n >= last_block {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "en1's JSON-RPC is at block {n}, not {last_block}, after 30 s\n{}",
                tail(&net.nodes[en1].log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let balance = provider.get_balance(to).await.expect("balance from en1");
        assert_eq!(
            balance,
            U256::from(values.iter().sum::<u64>()),
            "en1's balance of the recipient"
        );
        for r in &receipts {
            let theirs = provider
                .get_transaction_receipt(r.transaction_hash)
                .await
                .expect("receipt lookup at en1")
                .expect("en1 has the receipt of a transfer in a block it executed");
            assert_eq!(theirs.block_hash, r.block_hash, "en1 and en0 disagree");
        }
    });

    // The CNs took the transactions although no client can reach them; PNs relayed.
    for &i in &cns {
        let admitted = net.sample(i, POOL_ADMITTED);
        assert!(
            admitted >= values.len() as f64,
            "{} admitted {admitted} transactions, expected at least {}",
            net.nodes[i].name,
            values.len()
        );
    }
    for &i in &pns {
        let relayed = net.sample(i, RELAYED);
        assert!(relayed > 0.0, "{} relayed nothing", net.nodes[i].name);
    }

    let lengths = net.stop_all_and_assert_agree();
    for (name, len) in &lengths {
        assert!(
            *len as u64 >= last_block,
            "{name}'s block log ends at {len}, before block {last_block} of the transfers"
        );
    }
    eprintln!(
        "ready in {ready_after:.1?}; transfers final by block {last_block}; logs {lengths:?} agree; {:.1?}",
        started.elapsed()
    );
}

/// How a forged commit certificate is wrong.
#[derive(Debug, Clone, Copy)]
enum Forgery {
    /// cn0 and cn1 sign the right message: 2 of 4, below the quorum of 3.
    BelowQuorum,
    /// cn0, cn1, cn2 sign the right message; the bitmap names cn1, cn2, cn3.
    WrongSigners,
    /// cn0, cn1, cn2 sign the message of round 1; the certificate says round 0.
    WrongMessage,
}

fn bitmap(members: &[CouncilIndex]) -> Vec<u8> {
    let mut b = signers::empty(CNS);
    for &m in members {
        signers::set(&mut b, m);
    }
    b
}

/// A block extending `head` with a commit certificate forged as `how` says, signed with the
/// CNs' real keys. Checked here against the council keys: the certificate does not verify,
/// and the same certificate repaired in the one aspect `how` breaks does.
fn forge(net: &Net, cn_keys: &[NodeKey], head: &BlockHeader, how: Forgery) -> FinalizedBlock {
    let header = BlockHeader {
        parent_hash: head.hash(),
        height: head.height + 1,
        round: 0,
        timestamp_ms: now_ms(),
        proposer: 0,
        randao_reveal: [0u8; 96],
        mix: nonce(),
        transactions_root: transactions_root(std::iter::empty::<&[u8]>()),
        state_root: head.state_root,
        committee_digest: head.committee_digest,
    };
    let block = Block {
        header,
        transactions: vec![],
    };
    let (signed_by, named, signed_round): (&[CouncilIndex], &[CouncilIndex], u32) = match how {
        Forgery::BelowQuorum => (&[0, 1], &[0, 1], 0),
        Forgery::WrongSigners => (&[0, 1, 2], &[1, 2, 3], 0),
        Forgery::WrongMessage => (&[0, 1, 2], &[0, 1, 2], 1),
    };
    let unsigned = QuorumCertificate {
        kind: VoteKind::Commit,
        height: block.header.height,
        round: 0,
        block_hash: block.hash(),
        signers: bitmap(named),
        signature: [0u8; 96],
    };
    let sign = |members: &[CouncilIndex], round: u32| {
        let message = QuorumCertificate {
            round,
            ..unsigned.clone()
        }
        .signing_message(CHAIN_ID);
        let sigs: Vec<BlsSignature> = members
            .iter()
            .map(|&m| cn_keys[m as usize].secret.sign(Domain::Vote, &message))
            .collect();
        let refs: Vec<&BlsSignature> = sigs.iter().collect();
        BlsSignature::aggregate(&refs)
            .expect("aggregate of real signatures")
            .to_bytes()
    };
    let certificate = QuorumCertificate {
        signature: sign(signed_by, signed_round),
        ..unsigned.clone()
    };
    let committee = Committee::elect(
        CNS,
        net.genesis.committee_size,
        block.header.height,
        &head.mix,
    );
    let verify = |c: &QuorumCertificate| {
        net.genesis
            .council_keys
            .verify_certificate(CHAIN_ID, c, VoteKind::Commit, &committee)
    };
    assert!(
        verify(&certificate).is_err(),
        "{how:?}: the forged certificate verifies"
    );
    let repaired = match how {
        Forgery::BelowQuorum => QuorumCertificate {
            signers: bitmap(&[0, 1, 2]),
            signature: sign(&[0, 1, 2], 0),
            ..unsigned
        },
        Forgery::WrongSigners => QuorumCertificate {
            signers: bitmap(signed_by),
            ..certificate.clone()
        },
        Forgery::WrongMessage => QuorumCertificate {
            round: signed_round,
            ..certificate.clone()
        },
    };
    verify(&repaired).unwrap_or_else(|e| {
        panic!("{how:?}: the certificate repaired in that one aspect does not verify: {e:?}")
    });
    FinalizedBlock { block, certificate }
}

/// A rogue connection to node `target` that proves node `as_node`'s identity with its real
/// key file (blocking std socket, the real handshake). Panics unless the target admits it.
fn impersonate(net: &Net, as_node: usize, target: usize) -> SealedSocket {
    let me = &net.nodes[as_node];
    let key = NodeKey::load(&me.dir.join("key.toml")).expect("the impersonated node's key file");
    let t = &net.nodes[target];
    let mut s = connect(t.p2p);
    let mut hs = Handshake::new(
        Side::Dialer,
        &key.secret,
        CHAIN_ID,
        me.role,
        nonce(),
        key_exchange(),
    );
    s.write_all(&hs.hello()).expect("send hello");
    let mut hello = [0u8; HELLO_LEN];
    read_exact_within(&mut s, &mut hello, IO).unwrap_or_else(|e| panic!("{}'s hello: {e}", t.name));
    let (role, id) = (t.role, t.node_id);
    let auth = hs
        .on_peer_hello(&hello, |r, i| {
            if r == role && i == id {
                Ok(())
            } else {
                Err(format!("expected {role:?} {}", hex::encode(id)))
            }
        })
        .unwrap_or_else(|e| panic!("{}'s hello is not genuine: {e:?}", t.name));
    s.write_all(&auth).expect("send auth");
    let mut their_auth = [0u8; AUTH_LEN];
    read_exact_within(&mut s, &mut their_auth, IO).unwrap_or_else(|e| {
        panic!(
            "{} did not admit a peer proving {}'s key: {e}\n{}",
            t.name,
            me.name,
            tail(&t.log(), 20)
        )
    });
    let session = hs
        .on_peer_auth(&their_auth)
        .unwrap_or_else(|e| panic!("{}'s Auth: {e:?}", t.name));
    SealedSocket::new(s, &session.keys)
}

/// Lines of node `i`'s log that report a ban for a non-final block at `height`.
fn ban_lines(net: &Net, i: usize, height: u64) -> usize {
    let text = std::fs::read_to_string(net.nodes[i].log()).unwrap_or_default();
    let reason = format!("sent block {height}, which carries a");
    text.lines()
        .filter(|l| l.contains("peer banned") && l.contains(&reason))
        .count()
}

/// Sends a block forged as `how` at `target`'s head + 1 as `as_node`, until the target bans
/// the sender for it (a real block may overtake the forged one, which is then dropped as a
/// duplicate: retried with a fresh head). Returns the forged block.
fn forge_until_banned(
    net: &mut Net,
    cn_keys: &[NodeKey],
    as_node: usize,
    target: usize,
    how: Forgery,
) -> FinalizedBlock {
    let cn0 = net.index("cn0");
    let target_name = net.nodes[target].name.clone();
    for attempt in 1..=5 {
        // Right after the target adopts a block, the next one is a block period away.
        let h0 = net.sample(target, HEIGHT) as u64;
        net.wait_heights(&[target], &[h0 + 1], Duration::from_secs(20));
        let head_height = net.sample(target, HEIGHT) as u64;
        let Some(head) = net
            .headers(cn0)
            .into_iter()
            .find(|h| h.height == head_height)
        else {
            continue;
        };
        let forged = forge(net, cn_keys, &head, how);
        let violations = net.sample(target, VIOLATIONS);
        let mut s = impersonate(net, as_node, target);
        s.write_sealed(&encode_frame(&forged))
            .expect("send the forged block");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut banned = false;
        while Instant::now() < deadline {
            net.assert_running(&[target]);
            if net.nodes[target]
                .metric(VIOLATIONS)
                .is_some_and(|v| v > violations)
            {
                banned = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (closed, _) = read_until_closed(&mut s.stream, Duration::from_secs(5));
        drop(s);
        if banned {
            assert!(
                closed,
                "{target_name} banned {} but kept the connection open",
                net.nodes[as_node].name
            );
            let height = forged.block.header.height;
            let deadline = Instant::now() + Duration::from_secs(5);
            while ban_lines(net, target, height) == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert_eq!(
                ban_lines(net, target, height),
                1,
                "{target_name} counted a violation, but its log has no (or more than one) \"peer banned\" line for the non-final block {height}\n{}",
                tail(&net.nodes[target].log(), 30)
            );
            eprintln!(
                "{how:?}: {target_name} banned {} for block {height} (attempt {attempt})",
                net.nodes[as_node].name
            );
            return forged;
        }
        let now = net.sample(target, HEIGHT) as u64;
        assert!(
            now > head_height,
            "{target_name} neither banned {} for the forged block {} ({how:?}) nor moved past height {head_height} within 5 s\n{}",
            net.nodes[as_node].name,
            head_height + 1,
            tail(&net.nodes[target].log(), 30)
        );
        eprintln!(
            "{how:?}: overtaken by the real block {} (attempt {attempt}); again",
            head_height + 1
        );
    }
    panic!("{how:?}: the real block overtook the forged one 5 times at {target_name}");
}

#[test]
fn forged_certificates_are_refused_by_pns_and_ens_and_the_sender_banned() {
    let _serial = serial();
    let started = Instant::now();
    // A long block period leaves the forged block time to arrive before the real one.
    let mut net = start(36020, 2000);
    let cn_keys: Vec<NodeKey> = net
        .of_role(Role::Cn)
        .iter()
        .map(|&i| NodeKey::load(&net.nodes[i].dir.join("key.toml")).expect("a CN's key file"))
        .collect();
    let (cn0, pn0, pn1, en0, en1) = (
        net.index("cn0"),
        net.index("pn0"),
        net.index("pn1"),
        net.index("en0"),
        net.index("en1"),
    );
    let cases = [
        (pn0, en0, Forgery::BelowQuorum),
        (cn0, pn0, Forgery::WrongSigners),
        (pn1, en1, Forgery::WrongMessage),
    ];
    let mut forged = Vec::new();
    for (as_node, target, how) in cases {
        let block = forge_until_banned(&mut net, &cn_keys, as_node, target, how);
        forged.push((target, block));
    }

    // Everyone keeps finalizing (each target still has another upstream).
    let all = net.chain_nodes();
    let before = net.heights(&all);
    let targets: Vec<u64> = before.iter().map(|h| h + 2).collect();
    net.wait_heights(&all, &targets, Duration::from_secs(40));

    let lengths = net.stop_all_and_assert_agree();
    let cn0_chain = net.chain(cn0);
    for (target, block) in &forged {
        let chain = net.chain(*target);
        let name = &net.nodes[*target].name;
        let height = block.block.header.height as usize;
        let forged_hash: Hash32 = block.block.hash();
        assert!(
            !chain.iter().any(|b| b.header_hash == forged_hash),
            "the forged block {height} is in {name}'s chain"
        );
        assert!(
            chain.len() >= height && cn0_chain.len() >= height,
            "{name} or cn0 never got past the forged height {height}"
        );
        assert_eq!(
            chain[height - 1],
            cn0_chain[height - 1],
            "{name} holds another block than cn0 at {height}"
        );
    }
    eprintln!(
        "three forgeries refused and their senders banned; heights {before:?} -> at least {targets:?}; logs {lengths:?} agree; {:.1?}",
        started.elapsed()
    );
}

/// A lower bound of the transaction batches PN `i` relayed: `corecell_relayed_frames_total`
/// counts each relayed batch and each relayed block (a block at most once, and only those
/// pushed to it, not synced), so relayed frames minus height. One scrape; a block relayed
/// between the reads of the two samples adds one, so callers demand a margin.
fn relayed_batches_at_least(net: &Net, i: usize) -> f64 {
    let samples = net.nodes[i]
        .metrics()
        .unwrap_or_else(|| panic!("{} serves no metrics", net.nodes[i].name));
    let get = |name: &str| {
        sample_of(&samples, name).unwrap_or_else(|| panic!("{} has no {name}", net.nodes[i].name))
    };
    get(RELAYED) - get(HEIGHT)
}

/// One transfer the load sent: its hash, and when it was sent.
struct Sent {
    hash: B256,
    at: Instant,
}

/// Sends one transfer every `every` to `url` until `stop`, each from its own test account
/// (nonce 0), so that a transfer lost with a dead PN cannot hold back the ones after it.
fn spawn_load(
    url: String,
    first_account: u64,
    every: Duration,
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
) -> std::thread::JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        runtime().block_on(async {
            let provider = ProviderBuilder::new().connect_http(url.parse().expect("url"));
            let to = Address::repeat_byte(0x77);
            let mut account = first_account;
            while !stop.load(Ordering::Relaxed) {
                if account >= ACCOUNTS as u64 {
                    return Err(format!("out of test accounts after {account}"));
                }
                let bytes = sign_transfer(
                    &test_account_secret(account),
                    TxType::Eip1559,
                    &Transfer {
                        chain_id: CHAIN_ID,
                        nonce: 0,
                        to: to.into_array(),
                        value: alloy_primitives::U256::from(1u8),
                        gas_limit: 21_000,
                        max_fee_per_gas: 2 * BASE_FEE_WEI,
                        max_priority_fee_per_gas: 1,
                    },
                )
                .map_err(|e| format!("signing: {e:?}"))?;
                let at = Instant::now();
                let pending = provider
                    .send_raw_transaction(&bytes)
                    .await
                    .map_err(|e| format!("en0 refused transfer {account}: {e}"))?;
                let hash = *pending.tx_hash();
                if hash.0 != keccak256(&bytes) {
                    return Err(format!("en0 answered hash {hash} for transfer {account}"));
                }
                sent.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(Sent { hash, at });
                account += 1;
                tokio::time::sleep(every).await;
            }
            Ok(())
        })
    })
}

#[test]
fn an_en_that_loses_its_pn_fails_over_and_misses_no_block() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = Net::generate_tiers(36040, 500, ACCOUNTS, PNS, ENS);
    let (cn0, pn0, pn1, en0) = (
        net.index("cn0"),
        net.index("pn0"),
        net.index("pn1"),
        net.index("en0"),
    );
    // en0 sends its transactions to its connected PN with the lowest slot, and slots are
    // handed out in order of connection: pn1 starts only once en0 is connected to pn0, so
    // pn0 is the PN that carries en0's transactions.
    let mut first = net.of_role(Role::Bootnode);
    first.extend(net.of_role(Role::Cn));
    first.push(pn0);
    first.extend(net.of_role(Role::En));
    for &i in &first {
        net.spawn(i);
    }
    net.wait_metric(en0, PEERS_PN, 1.0, STARTUP);
    net.spawn(pn1);
    net.wait_ready(STARTUP);
    net.wait_heights(&[en0], &[2], Duration::from_secs(30));

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let load = spawn_load(
        net.nodes[en0].rpc_url(),
        1,
        Duration::from_millis(250),
        stop.clone(),
        sent.clone(),
    );
    let sent_count = |sent: &Arc<Mutex<Vec<Sent>>>| {
        sent.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while sent_count(&sent) < 8 {
        assert!(
            Instant::now() < deadline && !load.is_finished(),
            "the load sent {} transfers in 20 s",
            sent_count(&sent)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // pn0 carries en0's transactions: it relayed transaction batches (the node counts a
    // relayed block or batch as one relayed frame, and relays each block at most once).
    let pn0_batches = relayed_batches_at_least(&net, pn0);
    assert!(
        pn0_batches >= 4.0,
        "pn0 relayed at least {pn0_batches} transaction batches of the {} transfers sent to en0 so far: it does not carry en0's transactions",
        sent_count(&sent)
    );
    let pn1_batches_before = relayed_batches_at_least(&net, pn1);

    // pn0 dies under load.
    let killed_at = Instant::now();
    net.kill(pn0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while net.nodes[en0].metric(PEERS_PN) != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "en0 still counts {:?} PN peers 10 s after pn0 was killed",
            net.nodes[en0].metric(PEERS_PN)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let noticed_at = Instant::now();
    // en0 follows through pn1 alone.
    let h = net.sample(en0, HEIGHT) as u64;
    net.wait_heights(&[en0], &[h + 6], Duration::from_secs(30));
    let en0_without_pn0 = net.sample(en0, HEIGHT) as u64 - h;
    let pn1_batches = relayed_batches_at_least(&net, pn1) - pn1_batches_before;
    assert!(
        pn1_batches >= 3.0,
        "pn1 relayed at least {pn1_batches} transaction batches while pn0 was down: en0's transactions did not move to pn1"
    );

    // pn0 comes back and catches up; en0 reconnects to it.
    net.spawn(pn0);
    let target = net.sample(cn0, HEIGHT) as u64;
    net.wait_heights(&[pn0], &[target], Duration::from_secs(60));
    net.wait_ready(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    load.join()
        .expect("the load thread does not panic")
        .unwrap_or_else(|e| panic!("load: {e}\n{}", tail(&net.nodes[en0].log(), 30)));
    let sent = std::mem::take(
        &mut *sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );

    // Every transfer sent after en0 noticed the loss (and before, unless it was in flight to
    // pn0 at the kill) becomes final at en0.
    let en0_url = net.nodes[en0].rpc_url();
    let (mut after_kill, mut before_kill, mut lost_in_flight) = (0, 0, 0);
    runtime().block_on(async {
        let provider = ProviderBuilder::new().connect_http(en0_url.parse().expect("url"));
        for s in &sent {
            let must = s.at >= noticed_at || s.at + Duration::from_secs(2) < killed_at;
            let within = if must { RECEIPT } else { Duration::from_secs(5) };
            match receipt_within(&provider, s.hash, within).await {
                Some(r) => {
                    assert!(r.status(), "transfer {} failed", s.hash);
                    if s.at >= noticed_at {
                        after_kill += 1;
                    } else {
                        before_kill += 1;
                    }
                }
                None if !must => lost_in_flight += 1,
                None => panic!(
                    "transfer {} sent {:?} after the kill found no receipt at en0 within {RECEIPT:?}\n{}",
                    s.hash,
                    s.at.saturating_duration_since(killed_at),
                    tail(&net.nodes[en0].log(), 30)
                ),
            }
        }
    });
    assert!(
        after_kill >= 4,
        "only {after_kill} transfers were sent after en0 noticed the kill"
    );

    let chain_nodes = net.chain_nodes();
    let lengths = net.stop_all_and_assert_agree();
    let en0_headers = net.headers(en0);
    let cn0_chain = net.chain(cn0);
    for (k, header) in en0_headers.iter().enumerate() {
        assert_eq!(
            header.height,
            k as u64 + 1,
            "en0's block log skips from {} to {}",
            k,
            header.height
        );
        assert_eq!(
            Some(header.hash()),
            cn0_chain.get(k).map(|b| b.header_hash),
            "en0 and cn0 differ at height {}",
            k + 1
        );
    }
    assert!(en0_headers.len() as u64 >= target, "en0 stopped short");
    eprintln!(
        "pn0 (>= {pn0_batches} batches relayed) killed; en0 +{en0_without_pn0} blocks and pn1 >= {pn1_batches} batches relayed without it; {} transfers final ({after_kill} after the kill, {before_kill} before, {lost_in_flight} lost in flight to pn0); logs of {} nodes {lengths:?} agree; {:.1?}",
        after_kill + before_kill,
        chain_nodes.len(),
        started.elapsed()
    );
}

#[test]
fn a_pn_missing_from_the_pn_bootnode_allowlist_is_admitted_after_a_reload() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = Net::generate_tiers(36060, 1000, 16, PNS, ENS);
    let (boot_pn, pn0, pn1) = (net.index("boot-pn"), net.index("pn0"), net.index("pn1"));
    let config = net.nodes[boot_pn].dir.join("config.toml");
    let original = std::fs::read_to_string(&config).expect("boot-pn's config");
    let pn1_id = format!("0x{}", hex::encode(net.nodes[pn1].node_id));
    let pn0_id = format!("0x{}", hex::encode(net.nodes[pn0].node_id));
    let mut doc: toml::Table = toml::from_str(&original).expect("boot-pn's config is TOML");
    {
        let allow = doc
            .get_mut("network")
            .and_then(|n| n.get_mut("allowlist"))
            .and_then(|a| a.as_array_mut())
            .expect("boot-pn's config has network.allowlist");
        let before = allow.len();
        allow.retain(|v| v.as_str() != Some(pn1_id.as_str()));
        assert_eq!(allow.len() + 1, before, "pn1 was on boot-pn's allowlist");
        assert!(
            allow.iter().any(|v| v.as_str() == Some(pn0_id.as_str())),
            "pn0 stays on boot-pn's allowlist"
        );
    }
    std::fs::write(&config, toml::to_string(&doc).expect("encode")).expect("write config");

    // The PN bootnode, the CNs and the PNs (the ENs and their bootnode play no part here).
    // The bootnode first, so that pn0's first query finds it listening (a refused connect is
    // logged as a failed query too, and would be taken for a refusal).
    net.spawn(boot_pn);
    net.wait_ready_of(&[boot_pn], STARTUP);
    let mut which = vec![boot_pn];
    which.extend(net.of_role(Role::Cn));
    which.extend([pn0, pn1]);
    for &i in &which[1..] {
        net.spawn(i);
    }
    net.wait_ready_of(&which, STARTUP);
    net.wait_metric(boot_pn, PEERS, 1.0, Duration::from_secs(20));
    let refused_before = net.sample(boot_pn, REFUSED);
    // pn1 asks every 2 s: over 5 s it is refused at least twice more, and never registers.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert_eq!(
            net.nodes[boot_pn].metric(PEERS),
            Some(1.0),
            "boot-pn's registrations while pn1 is not allowed\n{}",
            tail(&net.nodes[boot_pn].log(), 20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    net.wait_metric(
        boot_pn,
        REFUSED,
        refused_before + 2.0,
        Duration::from_secs(5),
    );
    let pn1_log = std::fs::read_to_string(net.nodes[pn1].log()).expect("pn1's log");
    assert!(
        pn1_log.contains("bootnode query failed"),
        "pn1 does not report the refused bootnode query\n{}",
        tail(&net.nodes[pn1].log(), 20)
    );
    let pn0_log = std::fs::read_to_string(net.nodes[pn0].log()).expect("pn0's log");
    assert!(
        !pn0_log.contains("bootnode query failed"),
        "pn0's bootnode query failed although it is allowed\n{}",
        tail(&net.nodes[pn0].log(), 20)
    );

    // Fix the allowlist, reload.
    std::fs::write(&config, &original).expect("restore config");
    let reloaded_at = Instant::now();
    net.nodes[boot_pn]
        .proc
        .as_mut()
        .expect("boot-pn runs")
        .signal(libc::SIGHUP);
    net.wait_metric(boot_pn, PEERS, 2.0, Duration::from_secs(15));
    let took = reloaded_at.elapsed();
    let refusals = net.sample(boot_pn, REFUSED);
    net.assert_running(&which);

    net.stop(&which);
    eprintln!(
        "pn1 refused ({refusals} refusals) until the SIGHUP reload, registered {took:.1?} after it; {:.1?}",
        started.elapsed()
    );
}

/// `text` (a node config) with `node_id` removed from `network.allowlist` (`keep` false) or
/// added back (`keep` true).
fn with_allowlisted(text: &str, node_id: &[u8; 20], keep: bool) -> String {
    let id = format!("0x{}", hex::encode(node_id));
    let mut doc: toml::Table = toml::from_str(text).expect("a config is TOML");
    let allow = doc
        .get_mut("network")
        .and_then(|n| n.get_mut("allowlist"))
        .and_then(|a| a.as_array_mut())
        .expect("network.allowlist");
    allow.retain(|v| v.as_str() != Some(id.as_str()));
    if keep {
        allow.push(toml::Value::String(id));
    }
    toml::to_string(&doc).expect("encode")
}

#[test]
fn pns_admit_and_drop_an_en_on_sighup_and_refuse_a_broken_config_keeping_the_old_list() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = Net::generate_tiers(36120, 500, 16, PNS, ENS);
    let (pns, en1) = (net.of_role(Role::Pn), net.index("en1"));
    let en1_id = net.nodes[en1].node_id;
    let configs: Vec<(usize, std::path::PathBuf, String)> = pns
        .iter()
        .map(|&p| {
            let path = net.nodes[p].dir.join("config.toml");
            let text = std::fs::read_to_string(&path).expect("PN config");
            (p, path, text)
        })
        .collect();
    let write_all = |keep: bool| {
        for (_, path, text) in &configs {
            std::fs::write(path, with_allowlisted(text, &en1_id, keep)).expect("write config");
        }
    };
    let hup = |net: &mut Net| {
        for &p in &pns {
            net.nodes[p]
                .proc
                .as_mut()
                .expect("PN runs")
                .signal(libc::SIGHUP);
        }
    };
    // en1 is on no PN's allowlist at start: a new EN the PNs do not know yet.
    write_all(false);
    net.spawn_all_unready();
    let others: Vec<usize> = (0..net.nodes.len()).filter(|&i| i != en1).collect();
    net.wait_ready_of(&others, STARTUP);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        net.sample(en1, PEERS_PN),
        0.0,
        "en1 got in before it was admitted"
    );
    net.assert_running(&[en1]);

    // Admit it at run time: SIGHUP, no restart.
    write_all(true);
    let at = Instant::now();
    hup(&mut net);
    net.wait_metric(en1, PEERS_PN, PNS as f64, STARTUP);
    let admitted_after = at.elapsed();
    let target = net.heights(&[net.index("cn0")])[0] + 2;
    net.wait_heights(&[en1], &[target], STARTUP);
    for &p in &pns {
        assert!(net.log_lines(p, "permissions reloaded") >= 1);
    }

    // A config that no longer validates is refused, the field named, and the list kept.
    for (_, path, text) in &configs {
        let broken = text.replacen("listen = ", "listen = \"not an address\" #", 1);
        std::fs::write(path, broken).expect("write config");
    }
    hup(&mut net);
    let deadline = Instant::now() + STARTUP;
    while pns
        .iter()
        .any(|&p| net.log_lines(p, "permission reload refused") == 0)
    {
        assert!(
            Instant::now() < deadline,
            "the broken config was not refused"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused_line = std::fs::read_to_string(net.nodes[pns[0]].log())
        .unwrap_or_default()
        .lines()
        .find(|l| l.contains("permission reload refused"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        refused_line.contains("listen"),
        "the field is named: {refused_line}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(net.sample(en1, PEERS_PN), PNS as f64, "the old list stays");

    // Drop it: its links close, without a ban, and it stays out.
    write_all(false);
    hup(&mut net);
    net.wait_until_metric(en1, PEERS_PN, |v| v == 0.0, STARTUP);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        net.sample(en1, PEERS_PN),
        0.0,
        "en1 came back although dropped"
    );
    for &p in &pns {
        assert_eq!(net.sample(p, VIOLATIONS), 0.0, "a reload is not a ban");
    }
    net.assert_running(&[en1]);
    write_all(true);
    let lengths = net.stop_all_and_assert_agree();
    eprintln!(
        "en1 admitted {admitted_after:.1?} after SIGHUP, refused config kept the list, dropped \
         on the next SIGHUP; chains {lengths:?}; {:.1?}",
        started.elapsed()
    );
}

/// A small deterministic generator for the fault schedule (xorshift64*), so a failing run can
/// be replayed with its seed.
struct Schedule(u64);

impl Schedule {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below as u64) as usize
    }
}

/// Twenty rounds, each a kill -9 and restart or a one-second SIGSTOP/SIGCONT of a node picked at
/// random among the CNs, PNs and ENs, under a transfer load entering at both ENs. After every
/// round the whole network must finalize two more blocks; at the end every node's chain agrees
/// and every transaction answered FINAL is in it. `CORECELL_CHAOS_SEED` replays a schedule.
#[test]
fn twenty_rounds_of_kills_and_pauses_across_the_tiers_lose_nothing_final() {
    let _serial = serial();
    let started = Instant::now();
    let seed = std::env::var("CORECELL_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() | 1);
    eprintln!("fault schedule seed {seed} (CORECELL_CHAOS_SEED={seed} replays it)");
    let mut schedule = Schedule(seed);
    let mut net = Net::generate_tiers(36080, 500, ACCOUNTS, PNS, ENS);
    net.spawn_all();
    let chain_nodes = net.chain_nodes();
    let (en0, en1) = (net.index("en0"), net.index("en1"));
    // The load: a batch of 16 transfers every 300 ms into each EN's native ingress, from
    // accounts of its own; a client reconnects when its EN restarts.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<std::thread::JoinHandle<TransferClient>> = [(en0, 0..16), (en1, 16..32)]
        .into_iter()
        .map(|(i, accounts)| {
            let mut client = TransferClient::new(net.nodes[i].ingress, CHAIN_ID, accounts);
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    client.run_for(Duration::from_millis(300), Duration::from_millis(300));
                }
                client
            })
        })
        .collect();

    const ROUNDS: usize = 20;
    let mut log = Vec::new();
    for round in 0..ROUNDS {
        let victim = chain_nodes[schedule.next(chain_nodes.len())];
        let kill = schedule.next(2) == 0;
        let before = net
            .heights(&net.of_role(Role::Cn))
            .into_iter()
            .max()
            .unwrap_or(0);
        let name = net.nodes[victim].name.clone();
        if kill {
            net.kill(victim);
            std::thread::sleep(Duration::from_millis(300));
            net.spawn(victim);
        } else {
            let proc = net.nodes[victim].proc.as_mut().expect("running");
            proc.signal(libc::SIGSTOP);
            std::thread::sleep(Duration::from_secs(1));
            proc.signal(libc::SIGCONT);
        }
        let targets = vec![before + 2; chain_nodes.len()];
        net.wait_heights(&chain_nodes, &targets, Duration::from_secs(60));
        let action = if kill {
            "kill -9 + restart"
        } else {
            "pause 1 s"
        };
        log.push(format!("round {round}: {action} {name} at height {before}"));
    }
    eprintln!("{}", log.join("\n"));
    stop.store(true, Ordering::Relaxed);
    let mut finalized = std::collections::HashSet::new();
    for client in clients {
        let mut client = client.join().expect("load thread");
        client.drain(Duration::from_secs(10));
        finalized.extend(client.finalized);
    }
    assert!(
        !finalized.is_empty(),
        "no transaction was answered FINAL during the faults"
    );
    let cn0 = net.index("cn0");
    let in_chain = chain_transactions(&net.nodes[cn0].dir.join("data"), &net.genesis);
    let missing = finalized.difference(&in_chain).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} transactions answered FINAL are not in cn0's chain",
        finalized.len()
    );
    let stopped = net.stop_all_and_assert_agree();
    eprintln!(
        "{ROUNDS} rounds of faults: {} transactions final and in the chain; chains {stopped:?}; {:.1?}",
        finalized.len(),
        started.elapsed()
    );
}

/// Every node of the tiered network (bootnodes included) killed with SIGKILL at once under
/// load, then restarted: every transaction an EN answered FINAL before the crash is in that
/// EN's block log and in cn0's after the restart (an EN acks only what it made durable), the
/// chain continues, and all chains agree.
#[test]
fn the_whole_tiered_network_killed_at_once_restarts_and_loses_nothing_final() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = Net::generate_tiers(36100, 500, ACCOUNTS, PNS, ENS);
    net.spawn_all();
    let (en0, en1, cn0) = (net.index("en0"), net.index("en1"), net.index("cn0"));
    let mut clients = [
        (
            en0,
            TransferClient::new(net.nodes[en0].ingress, CHAIN_ID, 0..16),
        ),
        (
            en1,
            TransferClient::new(net.nodes[en1].ingress, CHAIN_ID, 16..32),
        ),
    ];
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        for (_, c) in clients.iter_mut() {
            c.run_for(Duration::from_millis(200), Duration::from_millis(200));
        }
    }
    for (_, c) in clients.iter_mut() {
        c.poll_acks();
    }
    // Everyone at once.
    let everyone: Vec<usize> = (0..net.nodes.len()).collect();
    for &i in &everyone {
        net.nodes[i]
            .proc
            .as_mut()
            .expect("running")
            .signal(libc::SIGKILL);
    }
    for &i in &everyone {
        let p = net.nodes[i].proc.as_mut().expect("running");
        p.wait_until(Instant::now() + IO).expect("dies on SIGKILL");
    }
    let before: Vec<(usize, std::collections::HashSet<Hash32>)> = clients
        .iter()
        .map(|(i, c)| (*i, c.finalized.clone()))
        .collect();
    let total: usize = before.iter().map(|(_, f)| f.len()).sum();
    assert!(total > 0, "nothing was answered FINAL before the crash");

    net.spawn_all();
    for (en, finalized) in &before {
        for at in [*en, cn0] {
            let chain = chain_transactions(&net.nodes[at].dir.join("data"), &net.genesis);
            let missing = finalized.difference(&chain).count();
            assert_eq!(
                missing,
                0,
                "{missing} of {} transactions {} answered FINAL before the crash are not in {}'s log",
                finalized.len(),
                net.nodes[*en].name,
                net.nodes[at].name
            );
        }
    }
    let chain_nodes = net.chain_nodes();
    let heights = net.heights(&chain_nodes);
    let top = heights.iter().copied().max().unwrap_or(0);
    net.wait_heights(
        &chain_nodes,
        &vec![top + 3; chain_nodes.len()],
        Duration::from_secs(60),
    );
    let stopped = net.stop_all_and_assert_agree();
    eprintln!(
        "whole network killed: {total} transactions final before the crash all kept; chains {stopped:?}; {:.1?}",
        started.elapsed()
    );
}
