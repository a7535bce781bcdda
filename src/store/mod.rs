//! The store shard: the block log of finalized blocks and the consensus WAL, both fsynced
//! before anything that depends on them leaves the node.
//!
//! # Files in the data directory
//! - `blocks-<first height, 20 digits>.log` (e.g. `blocks-00000000000000000001.log`): the
//!   block log, one record per finalized block in height order from height 1, split into
//!   append-only segment files written through glommio DMA files ([`BlockLog`]). A segment is
//!   named for the height of its first block, so names sort by height.
//! - `consensus.wal`: the records the consensus core asked to persist ([`WalRecord`]), emptied
//!   once a commit makes them stale and the file has grown past [`WAL_ROTATE_BYTES`] (a
//!   buffered file: it is small and truncated).
//! - `blocks.log`, the single block log file of the first layout, is refused on start with a
//!   message telling the operator the layout changed (pre-release: no migration).
//! - `state/state-<height, 20 digits>.snap`: the exec shard's state snapshots, written here
//!   for it ([`snapshots`]; their format is `exec::snapshot`'s).
//! - `.dma-probe`: a one-page scratch file written and removed when the block log opens (see
//!   `block_log::probe_direct_io`: a glommio polling probe workaround).
//!
//! The shard's door (its requests, replies and channel ends) is [`door`], re-exported here.
//!
//! # Record layout (segments and WAL)
//! `le_u32 payload length | le_u64 xxh3(payload) | payload`, where the payload is the rkyv
//! archive of a `FinalizedBlock` or a `WalRecord` (see [`record`]).
//!
//! # Segment rules
//! - A record is appended at the logical end of the last segment. Before a record would take
//!   that segment past the segment limit ([`SEGMENT_BYTES`]), the segment is sealed: cut to its
//!   logical end and fdatasynced, then the next segment is created, named for the record's
//!   height, and the directory fsynced. A record larger than the limit gets a segment alone.
//! - A sealed segment (any but the last) ends exactly at its last record and holds at least
//!   one. The first segment is named for height 1; each next one for the height after the
//!   previous one's last block: a gap in names (a missing segment) is corruption.
//! - DMA writes are whole pages: the last page is rewritten with the new record and zero
//!   padding to the page boundary. So the last segment's length is page-rounded while the
//!   node runs; its logical end is where the records end and the zeros start. Recovery cuts
//!   the file back to it, so the next append starts there, not at the rounded length; a clean
//!   stop cuts it too.
//!
//! # Height index
//! [`BlockIndex`]: height -> (segment, offset, length), built by the recovery scan and kept up
//! to date by appends; 4 bytes per block (see [`index`]). Recovery keeps no header but the
//! head's. Sync serving and [`replay_blocks`] read through it and check each record again.
//!
//! # Recovery, torn tails and corruption
//! [`recover`], run before the shards start, streams every segment and the WAL one record at
//! a time (memory stays at one record, whatever the log's size) and checks each record:
//! length within [`MAX_RECORD_BYTES`], checksum, archive validation, and for blocks the next
//! height and the parent hash. The last segment and the WAL are written one write at a time,
//! each fsynced before the next, and each at most a *torn window* long (the block log splits
//! a larger batch at [`block_log::MAX_WRITE_BYTES`], the WAL at [`WAL_MAX_WRITE_BYTES`]): a
//! crash can tear only the last write, and its sectors reach the disk in any order (its
//! first, holding the new record's header, may be lost while later ones are kept; a lost
//! sector reads as zeros). So in the last segment and the WAL, a bad record followed only by
//! zero bytes (page padding), or one showing a lost sector (a zeroed header, or a zeroed
//! aligned sector in its payload) whose non-zero data ends within the torn window of its
//! start, or one with a damaged length within one largest record of the end, is a torn write:
//! the file is cut back to the last good record (nothing in that write was acknowledged). A
//! bad record without a lost sector (a flipped bit) and data after it, one with data beyond
//! the window, or any bad record or trailing byte in a sealed segment, is corruption: the node
//! refuses to start and names the file and offset.
//! `corecell db check` runs the same scans read-only.
//!
//! # Invariants
//! A block is appended only at `head + 1` and with `parent_hash = head.hash()`;
//! [`StoreRequest::Commit`] is answered only after the block's record is fdatasynced, and
//! [`StoreRequest::Persist`] only after the WAL records are. Records in the log are never
//! rewritten with other bytes (the partial-page rewrite writes the same bytes again).

pub mod block_log;
pub mod door;
pub mod fixtures;
pub mod index;
pub mod record;
pub mod segments;
pub mod snapshots;
pub use door::{PeerFrame, StoreChannels, StoreReply, StoreRequest, SyncServe};
pub use snapshots::SnapshotWrite;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use glommio::io::{BufferedFile, OpenOptions};

pub use block_log::{BlockLog, SEGMENT_BYTES};
pub use index::{BlockIndex, RecordLocation, SegmentSummary};
pub use record::{encode_record, Tail, MAX_RECORD_BYTES, RECORD_HEADER_LEN};
pub use segments::{
    finalized_block_digests, finalized_headers, list_segments, replay_blocks, scan_block_log,
    scan_block_log_with_bodies, segment_file_name, segment_path, BlockDigest, BlockLogScan,
    SegmentScan, LEGACY_BLOCK_LOG_FILE,
};

use crate::consensus::WalRecord;
use crate::runtime::{ShardStats, Tx};
use crate::types::chain::ArchivedFinalizedBlock;
use crate::types::frame::{FrameHeader, FRAME_HEADER_LEN};
use crate::types::network::MAX_SYNC_BLOCKS;
use crate::types::{BlockHeader, FrameKind, Height};
use record::{append_record, read_records, Ending};

/// The most bytes one WAL write holds (a persist batch larger than this is written and
/// fsynced in parts): the torn window of the WAL's scan, see `record::Ending::Open`. Two of
/// the largest records (a proposal's block and the votes beside it).
pub const WAL_MAX_WRITE_BYTES: u64 = 2 * (RECORD_HEADER_LEN + MAX_RECORD_BYTES) as u64;

/// Consensus WAL file name.
pub const WAL_FILE: &str = "consensus.wal";
/// A write plus fsync slower than this is logged.
pub const SLOW_WRITE: std::time::Duration = std::time::Duration::from_millis(100);
/// The WAL is emptied at a commit once it is larger than this.
pub const WAL_ROTATE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A state snapshot could not be written.
    #[error("writing a state snapshot: {0}")]
    Snapshot(String),
    /// A bad record that cannot be a torn write.
    #[error("{path}: corrupt record at offset {offset}: {problem} ({context})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong.
        problem: String,
        /// Why this is corruption rather than a torn write, and what follows.
        context: &'static str,
    },
    /// A segment whose name does not follow the previous segment's last height.
    #[error("{path}: segment starts at height {first_height}, but the block log before it ends at height {}: the segment for height {expected} ({}) is missing (refusing to start)", expected - 1, segment_file_name(*expected))]
    Gap {
        /// The segment after the gap.
        path: PathBuf,
        /// The first height in its name.
        first_height: Height,
        /// The height the next segment had to start at.
        expected: Height,
    },
    /// Files that do not form a block log of this layout.
    #[error("{path}: {problem}")]
    Layout {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a consensus WAL holds, read without changing it.
#[derive(Debug)]
pub struct WalScan {
    /// Every good record, in order.
    pub records: Vec<WalRecord>,
    /// Length of the good prefix of the file.
    pub good_len: u64,
    /// Length of the file.
    pub file_len: u64,
    /// What follows the good prefix.
    pub tail: Tail,
}

/// Reads and checks the consensus WAL of `dir` without changing it (a missing WAL is empty).
pub fn scan_wal(dir: &Path) -> Result<WalScan, StoreError> {
    let path = dir.join(WAL_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(WalScan {
                records: Vec::new(),
                good_len: 0,
                file_len: 0,
                tail: Tail::Clean,
            })
        }
        Err(e) => return Err(io_error(&path)(e)),
    };
    let file_len = file.metadata().map_err(io_error(&path))?.len();
    let mut records = Vec::new();
    let ending = Ending::Open {
        torn_window: WAL_MAX_WRITE_BYTES,
    };
    let end = read_records(&path, file, file_len, ending, |_, payload| {
        let record = rkyv::from_bytes::<WalRecord, rkyv::rancor::Error>(payload)
            .map_err(|e| e.to_string())?;
        records.push(record);
        Ok(())
    })?;
    Ok(WalScan {
        records,
        good_len: end.good_len,
        file_len,
        tail: end.tail,
    })
}

/// What a data directory holds, found before the node starts.
#[derive(Debug)]
pub struct Recovered {
    /// The head: the last finalized block's header (the genesis header when none).
    pub head: BlockHeader,
    /// Height -> (segment, offset, length) of every finalized block.
    pub index: BlockIndex,
    /// WAL records about heights above the head, in order.
    pub wal: Vec<WalRecord>,
    /// Length of the good part of the WAL.
    pub wal_len: u64,
    /// Bytes cut from the end of the last block log segment (a torn write or page padding)
    /// and of the WAL.
    pub cut: (u64, u64),
    /// The height the block log was cut back from because its block there carried
    /// transactions its header does not commit to (a log written by a version that did not
    /// check bodies; see [`BODIES_CHECKED_FILE`]).
    pub forged_body_cut: Option<Height>,
}

/// The file whose presence says the block log's bodies were all checked against their
/// headers: written by the first start of a version that checks every body before storing
/// it, which checks the log once (see [`recover`]); later starts skip that scan.
pub const BODIES_CHECKED_FILE: &str = "block-bodies.checked";

/// Reads the block log and WAL of `dir` (creating the directory), cuts the last segment and
/// the WAL back to their last good record, and checks the chain links back to `genesis`.
/// Keeps no block header but the head's.
///
/// A block log without [`BODIES_CHECKED_FILE`] (written by an older version, which stored
/// blocks without checking their bodies) is checked once, every body against its header. A
/// block whose transactions its header does not commit to was stored from a tampering peer:
/// the log is cut back to the block before it (said in the log), the node fetches the rest
/// from its peers, and the marker is written so later starts skip the check.
pub fn recover(dir: &Path, genesis: &BlockHeader) -> Result<Recovered, StoreError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let marker = dir.join(BODIES_CHECKED_FILE);
    let mut forged_body_cut = None;
    let log = if marker.exists() {
        scan_block_log(dir, genesis)?
    } else {
        let started = Instant::now();
        let (log, forged) = segments::scan_block_log_with_bodies(dir, genesis)?;
        if log.blocks() > 0 {
            tracing::info!(
                blocks = log.blocks(),
                seconds = started.elapsed().as_secs_f64(),
                "block log: checked every block's transactions against its header (once, for \
                 a data directory written by an older version)"
            );
        }
        let log = match forged {
            None => log,
            Some(height) => {
                tracing::warn!(
                    height,
                    head = log.head.height,
                    "block log: block {height} holds transactions its certified header does \
                     not commit to (stored from a tampering peer by an older version); \
                     cutting the log back to height {} and fetching the rest from peers",
                    height - 1
                );
                segments::cut_block_log(dir, &log, height)?;
                forged_body_cut = Some(height);
                scan_block_log(dir, genesis)?
            }
        };
        std::fs::write(
            &marker,
            b"every block in this log was checked against its header\n",
        )
        .map_err(io_error(&marker))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
        log
    };
    let mut cut_log = 0;
    if let Some(last) = log.segments.last() {
        if last.file_len > last.good_len {
            cut_log = last.file_len - last.good_len;
            truncate(&last.path, last.good_len)?;
        }
    }
    let wal = scan_wal(dir)?;
    let cut_wal = wal.file_len - wal.good_len;
    if cut_wal > 0 {
        truncate(&dir.join(WAL_FILE), wal.good_len)?;
    }
    let head = log.head;
    Ok(Recovered {
        wal: wal
            .records
            .into_iter()
            .filter(|r| r.height() > head.height)
            .collect(),
        head,
        index: log.index,
        wal_len: wal.good_len,
        cut: (cut_log, cut_wal),
        forged_body_cut,
    })
}

fn truncate(path: &Path, len: u64) -> Result<(), StoreError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    file.set_len(len).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Runs the store shard until consensus and net have both closed their channels, then
/// fsyncs and closes the files. I/O errors are fatal (a node that cannot persist must not
/// vote): they are returned and the node stops.
pub async fn run(
    dir: PathBuf,
    recovered: Recovered,
    channels: StoreChannels,
    stats: Arc<ShardStats>,
) -> Result<(), StoreError> {
    let log = Rc::new(BlockLog::open(&dir, recovered.index, &recovered.head, SEGMENT_BYTES).await?);
    let wal_path = dir.join(WAL_FILE);
    let wal = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .buffered_open(&wal_path)
        .await
        .map_err(|e| io_error(&wal_path)(e.into()))?;
    let mut wal_len = recovered.wal_len;
    let StoreChannels {
        from_consensus,
        to_consensus,
        from_net,
        to_net,
        from_exec,
    } = channels;
    let to_net = Rc::new(to_net);
    let serve = {
        let log = log.clone();
        let stats = stats.clone();
        let to_net = to_net.clone();
        glommio::spawn_local(async move {
            while let Some(req) = from_net.recv().await {
                if !serve_blocks(&log, req, &to_net, &stats).await {
                    return;
                }
            }
        })
    };
    // State snapshots from exec, written one after another beside the consensus work; the
    // first failure stops the shard (a node that cannot write must not go on).
    let (failed_tx, failed) = glommio::channels::local_channel::new_bounded::<String>(1);
    let snapshots = from_exec.map(|from_exec| {
        let folder = dir.join(snapshots::SNAPSHOT_DIR);
        let stats = stats.clone();
        glommio::spawn_local(async move {
            while let Some(snapshot) = from_exec.recv().await {
                stats.count_in();
                let start = Instant::now();
                let written = snapshots::write(&folder, snapshot).await;
                stats.add_busy(start);
                if let Err(e) = written {
                    let _ = failed_tx.try_send(e);
                    return;
                }
            }
            // Exec is done; the shard ends when consensus is.
            futures_lite::future::pending::<()>().await;
        })
    });
    let mut result = Ok(());
    loop {
        let next = futures_lite::future::or(async { Ok(from_consensus.recv().await) }, async {
            Err(failed.recv().await)
        })
        .await;
        let req = match next {
            Ok(Some(req)) => req,
            Ok(None) => break,
            Err(Some(e)) => {
                result = Err(StoreError::Snapshot(e));
                break;
            }
            // Without an exec shard nothing sends snapshots: only consensus is awaited.
            Err(None) => match from_consensus.recv().await {
                Some(req) => req,
                None => break,
            },
        };
        stats.count_in();
        let start = Instant::now();
        let reply = match req {
            StoreRequest::Persist(records) => {
                if let Err(e) = persist_wal(&wal, &records, &mut wal_len).await {
                    result = Err(io_error(&wal_path)(e.into()));
                    break;
                }
                StoreReply::Persisted
            }
            StoreRequest::Commit(block) => {
                let height = block.block.header.height;
                if let Err(e) = log.append(&block).await {
                    result = Err(e);
                    break;
                }
                if wal_len > WAL_ROTATE_BYTES {
                    let rotate = async {
                        wal.truncate(0).await?;
                        wal.fdatasync().await
                    };
                    if let Err(e) = rotate.await {
                        result = Err(io_error(&wal_path)(e.into()));
                        break;
                    }
                    wal_len = 0;
                }
                StoreReply::Committed(height)
            }
        };
        stats.add_busy(start);
        let took = start.elapsed();
        if took > SLOW_WRITE {
            tracing::warn!(
                ?reply,
                took_ms = took.as_millis() as u64,
                "slow durable write"
            );
        }
        stats.count_out();
        if to_consensus.send(reply).await.is_err() {
            break;
        }
    }
    drop(to_consensus);
    serve.cancel().await;
    if let Some(snapshots) = snapshots {
        snapshots.cancel().await;
    }
    let _ = wal.fdatasync().await;
    let _ = wal.close().await;
    match Rc::try_unwrap(log) {
        Ok(log) => {
            if let Err(e) = log.close().await {
                tracing::warn!(%e, "closing the block log");
            }
        }
        Err(_) => tracing::warn!("block log still in use at the end of the store shard"),
    }
    result
}

/// Appends `records` to the WAL at `*wal_len` and fsyncs them, advancing `*wal_len`. The
/// records go out in writes of at most [`WAL_MAX_WRITE_BYTES`], each fsynced before the next,
/// so a crash can tear only the last, within the recovery scan's torn window. A batch is one
/// write unless it would pass that bound (rare: a vote is a few hundred bytes).
async fn persist_wal(
    wal: &BufferedFile,
    records: &[WalRecord],
    wal_len: &mut u64,
) -> glommio::Result<(), ()> {
    let mut pending = Vec::new();
    for record in records {
        let payload = crate::types::to_bytes(record);
        let size = (RECORD_HEADER_LEN + payload.len()) as u64;
        if !pending.is_empty() && pending.len() as u64 + size > WAL_MAX_WRITE_BYTES {
            write_wal(wal, std::mem::take(&mut pending), wal_len).await?;
        }
        append_record(&mut pending, &payload);
        assert!(pending.len() as u64 <= WAL_MAX_WRITE_BYTES);
    }
    if !pending.is_empty() {
        write_wal(wal, pending, wal_len).await?;
    }
    Ok(())
}

async fn write_wal(
    wal: &BufferedFile,
    bytes: Vec<u8>,
    wal_len: &mut u64,
) -> glommio::Result<(), ()> {
    let len = bytes.len() as u64;
    wal.write_at(bytes, *wal_len).await?;
    wal.fdatasync().await?;
    *wal_len += len;
    Ok(())
}

/// Sends a peer up to [`MAX_SYNC_BLOCKS`] finalized blocks from the height it asked for, each
/// as the stored archive bytes in a frame (read back and checked, not re-encoded). Returns
/// false when the net shard is gone.
async fn serve_blocks(
    log: &BlockLog,
    req: SyncServe,
    to_net: &Tx<PeerFrame>,
    stats: &ShardStats,
) -> bool {
    stats.count_in();
    let start = Instant::now();
    let first = req.from_height.max(1);
    let last = log
        .head_height()
        .min(first.saturating_add(MAX_SYNC_BLOCKS - 1));
    for height in first..=last {
        let frame = match log
            .read(height)
            .await
            .map(|p| p.map(|p| block_frame(height, &p)))
        {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            Ok(Some(Err(problem))) => {
                tracing::error!(height, problem, "block log record no longer decodes");
                break;
            }
            Err(e) => {
                tracing::error!(height, %e, "sync read failed");
                break;
            }
        };
        stats.count_out();
        if to_net
            .send(PeerFrame {
                peer: req.peer,
                frame: Arc::new(frame),
            })
            .await
            .is_err()
        {
            return false;
        }
    }
    stats.add_busy(start);
    true
}

/// A finalized-block frame around a stored payload, after checking that the payload is the
/// archive of the block at `height`.
fn block_frame(height: Height, payload: &[u8]) -> Result<Vec<u8>, String> {
    let block = crate::types::frame::access::<ArchivedFinalizedBlock>("block", payload)
        .map_err(|e| e.to_string())?;
    let found = block.block.header.height.to_native();
    if found != height {
        return Err(format!("expected height {height}, found {found}"));
    }
    let header = FrameHeader {
        kind: FrameKind::FinalizedBlock,
        len: u32::try_from(payload.len()).map_err(|e| e.to_string())?,
    };
    assert!(
        payload.len() <= FrameKind::FinalizedBlock.max_payload(),
        "stored blocks are within the frame limit"
    );
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    frame.extend_from_slice(&header.to_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

#[cfg(test)]
mod tests;
