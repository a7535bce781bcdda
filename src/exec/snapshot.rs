//! State snapshots on disk, and the state a node starts from.
//!
//! # Files
//!
//! Snapshots live in `<data dir>/state/`, one file per snapshot named
//! `state-<height, 20 digits>.snap`, holding [`State::encode_snapshot`]'s bytes (versioned and
//! checksummed; layout in [`crate::exec::state`]). A snapshot is written to a `.tmp` file,
//! fsynced, renamed into place and the folder fsynced, so a crash leaves either the whole
//! snapshot or none (a leftover `.tmp` is ignored and removed by the next write). The newest
//! [`SNAPSHOTS_KEPT`] are kept.
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

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::crypto::tx::decode_transaction;
use crate::exec::state::State;
use crate::exec::transfer::BASE_FEE_WEI;
use crate::node::genesis::Genesis;
use crate::store::BlockIndex;
use crate::types::BlockHeader;

/// Folder of the snapshots inside the data directory.
pub const SNAPSHOT_DIR: &str = "state";
/// A snapshot is written after every this many finalized blocks.
pub const SNAPSHOT_INTERVAL_BLOCKS: u64 = 1000;
/// How many snapshots are kept.
pub const SNAPSHOTS_KEPT: usize = 2;
/// Progress of a long replay is logged this often.
const REPLAY_PROGRESS: std::time::Duration = std::time::Duration::from_secs(2);

fn snapshot_name(height: u64) -> String {
    format!("state-{height:020}.snap")
}

/// The snapshots in `dir`, newest first: (height, path). Files that are not snapshots by
/// name are ignored.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name
            .strip_prefix("state-")
            .and_then(|n| n.strip_suffix(".snap"))
        else {
            continue;
        };
        if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(height) = digits.parse::<u64>() {
                out.push((height, entry.path()));
            }
        }
    }
    out.sort_unstable_by_key(|b| std::cmp::Reverse(b.0));
    Ok(out)
}

/// Writes a snapshot of `state` (at its height) durably into `dir` and removes all but the
/// newest [`SNAPSHOTS_KEPT`]. Returns the file written.
pub fn write(dir: &Path, state: &State) -> Result<PathBuf, String> {
    use std::io::Write;
    let start = Instant::now();
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let bytes = state.encode_snapshot();
    let path = dir.join(snapshot_name(state.height()));
    let tmp = path.with_extension("snap.tmp");
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    {
        let mut file = std::fs::File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
        file.write_all(&bytes).map_err(|e| io("writing", &tmp, e))?;
        file.sync_all().map_err(|e| io("syncing", &tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| io("renaming", &tmp, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing", dir, e))?;
    for (_, old) in list(dir)?.into_iter().skip(SNAPSHOTS_KEPT) {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(file = %old.display(), error = %e, "could not remove an old snapshot");
        }
    }
    tracing::info!(
        height = state.height(),
        accounts = state.len(),
        bytes = bytes.len(),
        ms = start.elapsed().as_millis() as u64,
        file = %path.display(),
        "state snapshot written"
    );
    Ok(path)
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

/// The state after the last finalized block of a recovered data directory: the newest usable
/// snapshot plus a replay of the blocks after it (see the module doc).
pub fn load_state(
    data_dir: &Path,
    genesis: &Genesis,
    head: &BlockHeader,
    index: &BlockIndex,
) -> Result<State, String> {
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
        match replay(data_dir, &log, &mut state) {
            Ok(()) => return Ok(state),
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
