//! State snapshots on disk, and the state a node starts from.
//!
//! # Files
//!
//! Snapshots live in `<data dir>/state/`, one file per snapshot named
//! `state-<height, 20 digits>.snap`, holding [`State::encode_snapshot`]'s bytes (versioned and
//! checksummed; layout in [`crate::exec::state`]). The exec shard encodes the state
//! ([`snapshot_of`]) and the store shard writes it ([`crate::store::snapshots`]): to a `.tmp`
//! file, fsynced, renamed into place and the folder fsynced, so a crash leaves either the whole
//! snapshot or none (a leftover `.tmp` is ignored). The newest
//! [`SNAPSHOTS_KEPT`](crate::store::snapshots::SNAPSHOTS_KEPT) are kept.
//!
//! # Restart
//!
//! [`load_state`]: the newest snapshot at or below the block log's head that decodes, is for
//! this chain and whose root matches the block header at its height, then a replay of the
//! finalized blocks after it from the block log (each block executed and its state root
//! checked against its header). A snapshot that fails a check is skipped with a warning and the
//! next older one (or the genesis) is used: a damaged snapshot costs replay time, never
//! correctness. Invariant: a snapshot at height `h` is written only after block `h` is durable
//! in the block log (the exec shard learns of a block only after its fsync), so the log always
//! reaches every snapshot's height.

use std::path::Path;
use std::time::Instant;

use crate::config::genesis::Genesis;
use crate::crypto::tx::decode_transaction;
use crate::exec::state::State;
use crate::exec::transfer::BASE_FEE_WEI;
use crate::store::snapshots::{list, SnapshotWrite, SNAPSHOT_DIR};
use crate::store::BlockIndex;
use crate::types::BlockHeader;

/// A snapshot is written after every this many finalized blocks.
pub const SNAPSHOT_INTERVAL_BLOCKS: u64 = 1000;
/// Progress of a long replay is logged this often.
const REPLAY_PROGRESS: std::time::Duration = std::time::Duration::from_secs(2);

/// The snapshot of `state` for the store shard to write
/// ([`crate::store::snapshots::write`]).
pub fn snapshot_of(state: &State) -> SnapshotWrite {
    SnapshotWrite {
        height: state.height(),
        accounts: state.len(),
        bytes: state.encode_snapshot(),
    }
}

/// The decodable snapshots of this chain at or below `head`, newest first (see the module
/// doc; whether each matches its block header is checked during the replay).
fn candidates(dir: &Path, chain_id: u64, head: u64) -> Result<Vec<State>, String> {
    let mut out = Vec::new();
    for (height, path) in list(dir)? {
        if height > head {
            tracing::warn!(file = %path.display(), head, "snapshot above the block log's head; skipped");
            continue;
        }
        let state = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| State::decode_snapshot(&bytes).map_err(|e| e.to_string()));
        match state {
            Ok(state) if state.chain_id() == chain_id && state.height() == height => {
                out.push(state)
            }
            Ok(_) => {
                tracing::warn!(file = %path.display(), "snapshot of another chain or height; skipped")
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "snapshot unusable; skipped")
            }
        }
    }
    Ok(out)
}

/// Below this many transactions a block is decoded on the calling thread.
const PARALLEL_DECODE_MIN: usize = 256;

/// Decodes (and recovers the senders of) `raw` into `out`, in order, on all CPUs for large
/// blocks: signature recovery is nearly all of a replay's cost.
pub fn decode_all(
    raw: &[&[u8]],
    out: &mut Vec<crate::crypto::tx::DecodedTx>,
) -> Result<(), String> {
    out.clear();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if raw.len() < PARALLEL_DECODE_MIN || threads < 2 {
        for (i, tx) in raw.iter().enumerate() {
            out.push(
                decode_transaction(tx)
                    .map_err(|e| format!("transaction {i} does not decode: {e}"))?,
            );
        }
        return Ok(());
    }
    let chunk = raw.len().div_ceil(threads);
    let parts: Vec<Result<Vec<crate::crypto::tx::DecodedTx>, String>> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = raw
                .chunks(chunk)
                .enumerate()
                .map(|(c, txs)| {
                    scope.spawn(move || {
                        txs.iter()
                            .enumerate()
                            .map(|(i, tx)| {
                                decode_transaction(tx).map_err(|e| {
                                    format!("transaction {} does not decode: {e}", c * chunk + i)
                                })
                            })
                            .collect::<Result<Vec<_>, String>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a decoding thread panicked".into()))
                })
                .collect()
        });
    for part in parts {
        out.extend(part?);
    }
    Ok(())
}

/// Where [`audit_state`] starts its replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStart {
    /// The genesis: every block executed (an independent check of the chain).
    Genesis,
    /// The newest usable snapshot, as a restart does.
    NewestSnapshot,
}

/// What [`audit_state`] found.
#[derive(Debug)]
pub struct StateAudit {
    /// The state at the block log's head.
    pub state: State,
    /// The snapshot the replay started from (`None`: the genesis).
    pub snapshot_height: Option<u64>,
    /// Whether the state's root is the head header's (every earlier block's root was checked
    /// during the replay).
    pub root_matches_head: bool,
    /// Whether `Σ balances + burned` is the genesis supply.
    pub supply_conserved: bool,
}

/// Replays a data directory's state to its head and checks it against the head's header and
/// the genesis supply: the state check of `db check`, the testnet report and the crash tests.
/// An error is a block that does not replay (it names the height).
pub fn audit_state(
    data_dir: &Path,
    genesis: &Genesis,
    head: &BlockHeader,
    index: &BlockIndex,
    start: ReplayStart,
) -> Result<StateAudit, String> {
    let (mut state, snapshot_height) = match start {
        ReplayStart::Genesis => (replay_from_genesis(data_dir, genesis, head, index)?, None),
        ReplayStart::NewestSnapshot => {
            let loaded = load_state(data_dir, genesis, head, index)?;
            (loaded.state, loaded.snapshot_height)
        }
    };
    let supply = genesis
        .accounts
        .iter()
        .fold(alloy_primitives::U256::ZERO, |s, a| {
            s.saturating_add(a.balance)
        });
    let supply_conserved = state.total_balance().saturating_add(state.burned()) == supply;
    let root_matches_head = state.height() == head.height && state.root() == head.state_root;
    Ok(StateAudit {
        state,
        snapshot_height,
        root_matches_head,
        supply_conserved,
    })
}

/// A data directory's block log: its head and index (from recovery or a read-only scan).
struct ChainLog<'a> {
    head: &'a BlockHeader,
    index: &'a BlockIndex,
}

/// Why a replay stopped.
enum ReplayError {
    /// The snapshot's root is not its header's: try an older one.
    SnapshotMismatch,
    /// The chain cannot be replayed: the node must not start.
    Fatal(String),
}

/// What [`load_state`] produced.
#[derive(Debug)]
pub struct LoadedState {
    /// The state at the block log's head.
    pub state: State,
    /// The height of the snapshot it started from (`None`: the genesis).
    pub snapshot_height: Option<u64>,
}

/// The state after the last finalized block of a recovered data directory: the newest usable
/// snapshot plus a replay of the blocks after it (see the module doc).
pub fn load_state(
    data_dir: &Path,
    genesis: &Genesis,
    head: &BlockHeader,
    index: &BlockIndex,
) -> Result<LoadedState, String> {
    let log = ChainLog { head, index };
    let head = log.head.height;
    let mut snapshots = candidates(&data_dir.join(SNAPSHOT_DIR), genesis.chain_id, head)?;
    snapshots.reverse(); // popped newest first
    loop {
        let mut state = match snapshots.pop() {
            Some(state) => state,
            None => State::from_genesis(genesis.chain_id, &genesis.accounts)
                .map_err(|e| format!("genesis accounts: {e}"))?,
        };
        let from_genesis = state.height() == 0;
        if from_genesis && state.root() != genesis.header().state_root {
            return Err("the genesis accounts do not give the genesis header's state root".into());
        }
        let snapshot_height = (!from_genesis).then(|| state.height());
        match replay(data_dir, &log, &mut state) {
            Ok(()) => {
                return Ok(LoadedState {
                    state,
                    snapshot_height,
                })
            }
            Err(ReplayError::SnapshotMismatch) => {
                assert!(!from_genesis, "the genesis root was checked above");
                tracing::warn!(
                    height = state.height(),
                    "snapshot does not match the block header at its height; trying an older one"
                );
            }
            Err(ReplayError::Fatal(e)) => return Err(e),
        }
    }
}

/// The state replayed from the genesis through every finalized block of a recovered data
/// directory, ignoring snapshots (an independent check of a node's chain: every block executed
/// and its header's state root compared).
pub fn replay_from_genesis(
    data_dir: &Path,
    genesis: &Genesis,
    head: &BlockHeader,
    index: &BlockIndex,
) -> Result<State, String> {
    let log = ChainLog { head, index };
    let mut state = State::from_genesis(genesis.chain_id, &genesis.accounts)
        .map_err(|e| format!("genesis accounts: {e}"))?;
    if state.root() != genesis.header().state_root {
        return Err("the genesis accounts do not give the genesis header's state root".into());
    }
    match replay(data_dir, &log, &mut state) {
        Ok(()) => Ok(state),
        Err(ReplayError::Fatal(e)) => Err(e),
        Err(ReplayError::SnapshotMismatch) => unreachable!("the genesis root was checked above"),
    }
}

/// Replays the finalized blocks after `state`'s height into it. The block at the state's own
/// height (none for the genesis) is read first to check the state's root against its header.
fn replay(data_dir: &Path, log: &ChainLog<'_>, state: &mut State) -> Result<(), ReplayError> {
    let head = log.head.height;
    let base = state.height();
    if base == head && base > 0 && log.head.state_root != state.root() {
        return Err(ReplayError::SnapshotMismatch);
    }
    if base >= head {
        return Ok(());
    }
    tracing::info!(
        from = base + 1,
        head,
        "replaying finalized blocks into the state"
    );
    let start = Instant::now();
    let mut last_progress = Instant::now();
    let mut txs = Vec::new();
    let mut mismatch = false;
    let result = crate::store::replay_blocks(data_dir, log.index, base.max(1), |block| {
        let header = &block.block.header;
        let height = header.height.to_native();
        if height == base {
            if header.state_root != state.root() {
                mismatch = true;
                return Err("snapshot mismatch".into());
            }
            return Ok(());
        }
        let raw: Vec<&[u8]> = block
            .block
            .transactions
            .iter()
            .map(|t| t.bytes.as_slice())
            .collect();
        decode_all(&raw, &mut txs).map_err(|e| format!("block {height}: {e}"))?;
        state
            .execute_block(&txs, None, BASE_FEE_WEI)
            .map_err(|e| format!("block {height} does not execute: {e}"))?;
        let root = state.root();
        if root != header.state_root {
            return Err(format!(
                "state diverged at height {height}: the header says 0x{}, replay computed 0x{}",
                hex::encode(header.state_root),
                hex::encode(root)
            ));
        }
        if last_progress.elapsed() >= REPLAY_PROGRESS {
            last_progress = Instant::now();
            tracing::info!(height, head, "replaying");
        }
        Ok(())
    });
    match result {
        Err(_) if mismatch => Err(ReplayError::SnapshotMismatch),
        Err(e) => Err(ReplayError::Fatal(e)),
        Ok(()) => {
            tracing::info!(
                blocks = head - base,
                ms = start.elapsed().as_millis() as u64,
                "state replayed"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::genesis::test_account_secret;
    use crate::crypto::tx::{address_of_secret, sign_transfer, Transfer, TxType};
    use crate::exec::transfer::TransferEngine;
    use crate::store::BlockLog;
    use crate::types::{Block, FinalizedBlock, QuorumCertificate, VoteKind};
    use std::path::PathBuf;

    /// A generated genesis (5 test accounts) in `dir`.
    fn genesis(dir: &Path) -> Genesis {
        let spec = crate::config::genesis::test_network_spec(1, 0, 0);
        let net = spec.generate(&dir.join("net")).expect("generate");
        Genesis::load(&net.genesis_path, crate::exec::genesis_state_root).expect("genesis")
    }

    /// `count` finalized blocks of one transfer each (account 0 paying account 1), executed
    /// by a transfer engine so their state roots are right; the engine's states after each.
    fn chain(genesis: &Genesis, count: u64) -> (Vec<FinalizedBlock>, Vec<State>) {
        let secret = test_account_secret(0);
        let to = address_of_secret(&test_account_secret(1)).expect("key");
        let state = State::from_genesis(genesis.chain_id, &genesis.accounts).expect("state");
        let mut engine = TransferEngine::new(state);
        let mut parent = genesis.header();
        let (mut blocks, mut states) = (Vec::new(), Vec::new());
        for nonce in 0..count {
            let tx = sign_transfer(
                &secret,
                TxType::Eip1559,
                &Transfer {
                    chain_id: genesis.chain_id,
                    nonce,
                    to,
                    value: alloy_primitives::U256::from(1u8),
                    gas_limit: 21_000,
                    max_fee_per_gas: 2 * BASE_FEE_WEI,
                    max_priority_fee_per_gas: 1,
                },
            )
            .expect("sign");
            engine.admit_batch([tx.as_slice()].into_iter(), None, 0);
            let (transactions, state_root) = engine.build(parent.height + 1);
            let mut header = parent.clone();
            header.parent_hash = parent.hash();
            header.height += 1;
            header.transactions_root = crate::types::chain::transactions_root(
                transactions.iter().map(|t| t.bytes.as_slice()),
            );
            header.state_root = state_root;
            let block = FinalizedBlock {
                certificate: QuorumCertificate {
                    kind: VoteKind::Commit,
                    height: header.height,
                    round: 0,
                    block_hash: header.hash(),
                    signers: vec![1],
                    signature: [0; 96],
                },
                block: Block {
                    header: header.clone(),
                    transactions,
                },
            };
            engine.finalize(&block).expect("finalizes");
            let mut copy = State::decode_snapshot(&engine.final_state().encode_snapshot())
                .expect("round trip");
            copy.root();
            states.push(copy);
            blocks.push(block);
            parent = header;
        }
        (blocks, states)
    }

    /// Writes `blocks` into the block log of `data`; returns the recovered head and index.
    fn write_log(
        data: &Path,
        genesis: &Genesis,
        blocks: &[FinalizedBlock],
    ) -> crate::store::Recovered {
        let recovered = crate::store::recover(data, &genesis.header()).expect("recover");
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .make()
            .expect("executor")
            .run(async {
                let log = BlockLog::open(data, recovered.index, &recovered.head, 1 << 20)
                    .await
                    .expect("open");
                for b in blocks {
                    log.append(b).await.expect("append");
                }
                log.close().await.expect("close");
            });
        crate::store::recover(data, &genesis.header()).expect("recover")
    }

    /// The store shard's durable write, on an executor of its own.
    fn write(dir: &Path, state: &State) -> Result<PathBuf, String> {
        let snapshot = snapshot_of(state);
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor")
            .run(crate::store::snapshots::write(dir, snapshot))
    }

    #[test]
    fn snapshots_are_kept_two_newest_first_and_leftovers_ignored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let g = genesis(tmp.path());
        let (_, states) = chain(&g, 4);
        let dir = tmp.path().join("state");
        for s in &states {
            write(&dir, s).expect("written");
        }
        std::fs::write(dir.join("state-00000000000000000009.snap.tmp"), b"torn").expect("tmp");
        std::fs::write(dir.join("notes.txt"), b"x").expect("other");
        let listed: Vec<u64> = list(&dir).expect("list").iter().map(|(h, _)| *h).collect();
        assert_eq!(listed, vec![4, 3], "the two newest, newest first");
    }

    #[test]
    fn restart_uses_the_newest_good_snapshot_and_replays_the_rest() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let g = genesis(tmp.path());
        let data = tmp.path().join("data");
        let (blocks, mut states) = chain(&g, 6);
        let recovered = write_log(&data, &g, &blocks);
        assert_eq!(recovered.head.height, 6);
        let dir = data.join(SNAPSHOT_DIR);
        let head_root = states[5].root();
        let load = || {
            let mut loaded =
                load_state(&data, &g, &recovered.head, &recovered.index).expect("loads");
            assert_eq!(loaded.state.height(), 6);
            assert_eq!(loaded.state.root(), head_root);
            loaded.snapshot_height
        };

        // No snapshot: the genesis plus 6 blocks.
        assert_eq!(load(), None);
        // Snapshots at 2 and 4: the one at 4 plus 2 blocks.
        write(&dir, &states[1]).expect("written");
        write(&dir, &states[3]).expect("written");
        assert_eq!(load(), Some(4));
        // A corrupt newest snapshot: the one at 2 is used instead.
        let newest = dir.join("state-00000000000000000004.snap");
        let mut bytes = std::fs::read(&newest).expect("read");
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        std::fs::write(&newest, &bytes).expect("write");
        assert_eq!(load(), Some(2));
        // A well-formed snapshot that is not this chain's state at its height (the state of
        // height 5 filed as height 4): its root differs from header 4's, so it is skipped.
        let mut wrong = states[4].encode_snapshot();
        wrong[20..28].copy_from_slice(&4u64.to_be_bytes());
        let n = wrong.len() - 8;
        let sum = crate::types::hash::xxh3(&wrong[..n]);
        wrong[n..].copy_from_slice(&sum.to_be_bytes());
        std::fs::write(&newest, &wrong).expect("write");
        assert_eq!(load(), Some(2));
        // A snapshot above the head is ignored.
        let mut above = states[5].clone();
        above
            .execute_block(&[], None, BASE_FEE_WEI)
            .expect("empty block");
        // (Written by hand: `write` would also drop the oldest snapshot.)
        std::fs::write(
            dir.join(crate::store::snapshots::snapshot_name(7)),
            above.encode_snapshot(),
        )
        .expect("write");
        assert_eq!(load(), Some(2), "the snapshot above the head is skipped");
        // And the replay from the genesis agrees.
        let mut full =
            replay_from_genesis(&data, &g, &recovered.head, &recovered.index).expect("replays");
        assert_eq!(full.root(), head_root);
    }

    #[test]
    fn a_block_that_does_not_reproduce_its_state_root_stops_the_replay() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let g = genesis(tmp.path());
        let data = tmp.path().join("data");
        let (mut blocks, _) = chain(&g, 3);
        // Re-seal block 2 with a wrong state root (and its child's parent hash).
        blocks[1].block.header.state_root = [9; 32];
        blocks[1].certificate.block_hash = blocks[1].block.hash();
        blocks[2].block.header.parent_hash = blocks[1].block.hash();
        blocks[2].certificate.block_hash = blocks[2].block.hash();
        let recovered = write_log(&data, &g, &blocks);
        let err = load_state(&data, &g, &recovered.head, &recovered.index).unwrap_err();
        assert!(err.contains("state diverged at height 2"), "{err}");
    }
}
