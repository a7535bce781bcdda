//! The store shard: the block log of finalized blocks and the consensus WAL, both fsynced
//! before anything that depends on them leaves the node.
//!
//! Files in the data directory:
//! - `blocks.log`: one record per finalized block, in height order from height 1;
//! - `consensus.wal`: the records the consensus core asked to persist ([`WalRecord`]), emptied
//!   once a commit makes them stale and the file has grown past [`WAL_ROTATE_BYTES`].
//!
//! Record layout (both files): `le_u32 payload length | le_u64 xxh3(payload) | payload`, where
//! the payload is the rkyv archive of a `FinalizedBlock` or a `WalRecord`.
//!
//! Recovery ([`recover`], run before the shards start) streams each file one record at a time
//! (memory stays at one record, whatever the log's size) and checks each record: length
//! within [`MAX_RECORD_BYTES`], checksum, archive validation, and for blocks the next height
//! and the parent hash. A bad record that ends the file (or is followed only by zero bytes, or
//! has a damaged length and starts within one largest record of the end) is a torn write: the
//! file is cut back to the last good record. A bad record with data after it is corruption in
//! the middle: the node refuses to start and names the file and offset. `corecell db check`
//! runs the same scans read-only.
//!
//! Invariants: a block is appended only at `head + 1` and with `parent_hash = head.hash()`;
//! [`StoreRequest::Commit`] is answered only after the block's record is fdatasynced, and
//! [`StoreRequest::Persist`] only after the WAL record is.
//!
//! This is the first cut: one segment file, an in-memory height index, glommio buffered files.
//! Segments, DMA files and snapshots arrive with the storage issue.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use glommio::io::{BufferedFile, OpenOptions};
use rkyv::util::AlignedVec;

use crate::consensus::WalRecord;
use crate::crypto::hash::xxh3;
use crate::runtime::{Rx, ShardStats, Tx};
use crate::types::chain::ArchivedFinalizedBlock;
use crate::types::frame::{encode_frame, MAX_FINALIZED_BLOCK_PAYLOAD};
use crate::types::network::MAX_SYNC_BLOCKS;
use crate::types::{BlockHeader, CouncilIndex, FinalizedBlock, Height};

/// Block log file name.
pub const BLOCK_LOG_FILE: &str = "blocks.log";
/// Consensus WAL file name.
pub const WAL_FILE: &str = "consensus.wal";
/// Bytes of a record header: length and checksum.
pub const RECORD_HEADER_LEN: usize = 12;
/// Read buffer of a scan.
const READ_BUFFER: usize = 1024 * 1024;
/// Largest record payload accepted on recovery.
pub const MAX_RECORD_BYTES: usize = MAX_FINALIZED_BLOCK_PAYLOAD;
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
    /// A bad record with valid-looking data after it.
    #[error("{path}: corrupt record at offset {offset}: {problem} (data follows it, so this is not a torn write; refusing to start)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
}

/// Encodes one record.
pub fn encode_record(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= MAX_RECORD_BYTES, "record too large");
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&xxh3(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads the records of a file from `source` (`len` bytes long) in order, one at a time, so
/// memory stays at one record whatever the file's size. Each good payload (in 16-aligned
/// memory) goes to `visit` with its record's offset; `visit` checks it and an `Err` makes the
/// record bad. Returns the length of the good prefix.
///
/// A bad record (short header, length out of range, past the end, checksum mismatch, refused
/// by `visit`) that ends the file, or after which only zero bytes follow, is a torn tail: the
/// scan stops there. A bad record with anything else after it is corruption.
fn read_records(
    path: &Path,
    source: impl Read,
    len: u64,
    mut visit: impl FnMut(u64, &AlignedVec<16>) -> Result<(), String>,
) -> Result<u64, StoreError> {
    let mut reader = std::io::BufReader::with_capacity(READ_BUFFER, source);
    let io = |e| io_error(path)(e);
    let mut at = 0u64;
    let mut payload = AlignedVec::<16>::new();
    while at < len {
        if len - at < RECORD_HEADER_LEN as u64 {
            break; // a torn header
        }
        let mut header = [0u8; RECORD_HEADER_LEN];
        reader.read_exact(&mut header).map_err(io)?;
        let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&header[4..12]);
        let end = at + (RECORD_HEADER_LEN + size) as u64;
        let corrupt = |problem: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            offset: at,
            problem,
        };
        if size == 0 || size > MAX_RECORD_BYTES || end > len {
            // Zero padding reads as a zero length. A length out of range or past the end is a
            // torn header or payload when the record can be the file's last one (it starts
            // within one largest record of the end). Otherwise, or with data after a zero
            // length, it is corruption.
            let could_be_last = len - at <= (RECORD_HEADER_LEN + MAX_RECORD_BYTES) as u64;
            if (size != 0 && could_be_last) || only_zeros(&mut reader).map_err(io)? {
                break;
            }
            return Err(corrupt(format!(
                "record length {size} is out of range or runs past the end of the file"
            )));
        }
        // One buffer for every record: memory stays at the largest record.
        payload.clear();
        payload.resize(size, 0);
        reader.read_exact(&mut payload).map_err(io)?;
        let problem = if xxh3(&payload) != u64::from_le_bytes(sum) {
            Some("checksum mismatch".to_string())
        } else {
            visit(at, &payload).err()
        };
        if let Some(problem) = problem {
            if only_zeros(&mut reader).map_err(io)? {
                break;
            }
            return Err(corrupt(problem));
        }
        at = end;
    }
    Ok(at)
}

/// Whether everything left in `reader` is zero bytes (the padding a torn write can leave).
fn only_zeros(reader: &mut impl Read) -> std::io::Result<bool> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Ok(true);
        }
        if chunk[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

/// Opens `path` for a scan: the file and its length (an empty source when it does not exist).
fn open_for_scan(path: &Path) -> Result<(Option<std::fs::File>, u64), StoreError> {
    match std::fs::File::open(path) {
        Ok(file) => {
            let len = file.metadata().map_err(io_error(path))?.len();
            Ok((Some(file), len))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, 0)),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Scans the records of the file at `path` (see [`read_records`]); a missing file is empty.
fn scan_file(
    path: &Path,
    visit: impl FnMut(u64, &AlignedVec<16>) -> Result<(), String>,
) -> Result<(u64, u64), StoreError> {
    let (file, len) = open_for_scan(path)?;
    let good = match file {
        Some(file) => read_records(path, file, len, visit)?,
        None => 0,
    };
    Ok((good, len))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a block log holds: every good block's header and record position, and how much of the
/// file is good. Reading it changes nothing (see [`recover`] for the repair).
#[derive(Debug)]
pub struct BlockLogScan {
    /// Headers of the blocks, heights 1..=n in order.
    pub headers: Vec<BlockHeader>,
    /// Byte offset and payload length of each block's record, index `h - 1` for height `h`.
    pub index: Vec<(u64, u32)>,
    /// Length of the good prefix of the file.
    pub good_len: u64,
    /// Length of the file.
    pub file_len: u64,
}

/// Reads and checks the block log of `dir` without changing it: each record's checksum,
/// archive and limits, and that it extends the previous block (the first one `genesis`).
/// A torn tail ends the scan; corruption in the middle is an error naming file and offset.
pub fn scan_block_log(dir: &Path, genesis: &BlockHeader) -> Result<BlockLogScan, StoreError> {
    let path = dir.join(BLOCK_LOG_FILE);
    let mut headers: Vec<BlockHeader> = Vec::new();
    let mut index = Vec::new();
    let mut parent = (genesis.height, genesis.hash());
    let (good_len, file_len) = scan_file(&path, |offset, payload| {
        let block = crate::types::frame::access::<ArchivedFinalizedBlock>("block", payload)
            .map_err(|e| e.to_string())?;
        block.check_limits().map_err(|e| e.to_string())?;
        let header = &block.block.header;
        if header.height.to_native() != parent.0 + 1 || header.parent_hash != parent.1 {
            return Err(format!(
                "block at height {} does not extend height {}",
                header.height.to_native(),
                parent.0
            ));
        }
        parent = (header.height.to_native(), header.hash());
        headers.push(
            rkyv::deserialize::<BlockHeader, rkyv::rancor::Error>(header)
                .map_err(|e| e.to_string())?,
        );
        index.push((offset, payload.len() as u32));
        Ok(())
    })?;
    Ok(BlockLogScan {
        headers,
        index,
        good_len,
        file_len,
    })
}

/// Every finalized block header of a data directory's block log, by height from 1 (the
/// testnet's agreement check and block-interval figures).
pub fn finalized_headers(
    dir: &Path,
    genesis: &BlockHeader,
) -> Result<Vec<BlockHeader>, StoreError> {
    scan_block_log(dir, genesis).map(|scan| scan.headers)
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
}

/// Reads and checks the consensus WAL of `dir` without changing it.
pub fn scan_wal(dir: &Path) -> Result<WalScan, StoreError> {
    let path = dir.join(WAL_FILE);
    let mut records = Vec::new();
    let (good_len, file_len) = scan_file(&path, |_, payload| {
        let record = rkyv::from_bytes::<WalRecord, rkyv::rancor::Error>(payload)
            .map_err(|e| e.to_string())?;
        records.push(record);
        Ok(())
    })?;
    Ok(WalScan {
        records,
        good_len,
        file_len,
    })
}

/// What a data directory holds, found before the node starts.
#[derive(Debug)]
pub struct Recovered {
    /// The head: the last finalized block's header (the genesis header when none).
    pub head: BlockHeader,
    /// Byte offset and length of each finalized block's record, index `h - 1` for height `h`.
    pub index: Vec<(u64, u32)>,
    /// Length of the good part of the block log (where the next record goes).
    pub block_log_len: u64,
    /// WAL records about heights above the head, in order.
    pub wal: Vec<WalRecord>,
    /// Length of the good part of the WAL.
    pub wal_len: u64,
    /// Bytes cut from torn tails (block log, WAL).
    pub cut: (u64, u64),
}

/// Reads the block log and WAL of `dir` (creating the directory), cuts torn tails, and checks
/// the chain links back to `genesis`.
pub fn recover(dir: &Path, genesis: &BlockHeader) -> Result<Recovered, StoreError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let log = scan_block_log(dir, genesis)?;
    let cut_log = log.file_len - log.good_len;
    if cut_log > 0 {
        truncate(&dir.join(BLOCK_LOG_FILE), log.good_len)?;
    }
    let wal = scan_wal(dir)?;
    let cut_wal = wal.file_len - wal.good_len;
    if cut_wal > 0 {
        truncate(&dir.join(WAL_FILE), wal.good_len)?;
    }
    let head = log
        .headers
        .last()
        .cloned()
        .unwrap_or_else(|| genesis.clone());
    Ok(Recovered {
        wal: wal
            .records
            .into_iter()
            .filter(|r| r.height() > head.height)
            .collect(),
        head,
        index: log.index,
        block_log_len: log.good_len,
        wal_len: wal.good_len,
        cut: (cut_log, cut_wal),
    })
}

/// Reads the finalized blocks of heights `from_height..=index.len()` of `dir`'s block log in
/// order and hands each (checked again: checksum, archive, height) to `visit`; `index` is
/// [`Recovered::index`]. Used before the shards start, to bring the exec state from its
/// snapshot up to the head. Returns the first error, the visitor's included.
pub fn replay_blocks(
    dir: &Path,
    index: &[(u64, u32)],
    from_height: Height,
    mut visit: impl FnMut(&ArchivedFinalizedBlock) -> Result<(), String>,
) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let first = from_height.max(1);
    if first > index.len() as u64 {
        return Ok(());
    }
    let path = dir.join(BLOCK_LOG_FILE);
    let file =
        std::fs::File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut record = AlignedVec::<16>::new();
    for height in first..=index.len() as u64 {
        let (offset, len) = index[(height - 1) as usize];
        record.clear();
        record.resize(RECORD_HEADER_LEN + len as usize, 0);
        file.read_exact_at(&mut record, offset)
            .map_err(|e| format!("reading {} at offset {offset}: {e}", path.display()))?;
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&record[4..12]);
        // Move the payload to the front so it stays 16-aligned for the archive.
        record.as_mut_slice().copy_within(RECORD_HEADER_LEN.., 0);
        record.resize(len as usize, 0);
        if xxh3(&record) != u64::from_le_bytes(sum) {
            return Err(format!(
                "{} at offset {offset}: checksum mismatch (the file changed since recovery)",
                path.display()
            ));
        }
        let block = crate::types::frame::access::<ArchivedFinalizedBlock>("block", &record)
            .map_err(|e| format!("{} at offset {offset}: {e}", path.display()))?;
        if block.block.header.height.to_native() != height {
            return Err(format!(
                "{} at offset {offset}: expected height {height}, found {}",
                path.display(),
                block.block.header.height.to_native()
            ));
        }
        visit(block)?;
    }
    Ok(())
}

fn truncate(path: &Path, len: u64) -> Result<(), StoreError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    file.set_len(len).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// What other shards ask of the store.
#[derive(Debug)]
pub enum StoreRequest {
    /// Append these WAL records and fsync; answer [`StoreReply::Persisted`].
    Persist(Vec<WalRecord>),
    /// Append this finalized block and fsync; answer [`StoreReply::Committed`].
    Commit(Arc<FinalizedBlock>),
    /// Send finalized blocks to a peer that is behind; answer [`StoreReply::Served`] once
    /// they are handed to the net shard.
    Serve(SyncServe),
}

/// The store's answers to the consensus shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreReply {
    /// The WAL records are durable.
    Persisted,
    /// The block at this height is durable.
    Committed(Height),
    /// The blocks asked for are on their way.
    Served,
}

/// A request from the net shard: send `peer` finalized blocks from `from_height` on.
#[derive(Debug, Clone, Copy)]
pub struct SyncServe {
    /// Who asked.
    pub peer: CouncilIndex,
    /// First height wanted.
    pub from_height: Height,
}

/// A frame for the net shard to send to one council member.
#[derive(Debug)]
pub struct PeerFrame {
    /// To whom.
    pub peer: CouncilIndex,
    /// The frame bytes.
    pub frame: Arc<Vec<u8>>,
}

/// The channels of the store shard.
pub struct StoreChannels {
    /// Requests from consensus.
    pub from_consensus: Rx<StoreRequest>,
    /// Answers to consensus.
    pub to_consensus: Tx<StoreReply>,
    /// Sync requests from the net shard.
    pub from_net: Rx<SyncServe>,
    /// Sync answers for the net shard.
    pub to_net: Tx<PeerFrame>,
}

/// The open files and what is known about them. The file handles are `Rc`s so a task can
/// clone one out and await I/O on it without holding the `RefCell` borrow across the await.
struct Files {
    log: Rc<BufferedFile>,
    log_len: u64,
    index: Vec<(u64, u32)>,
    wal: Rc<BufferedFile>,
    wal_len: u64,
}

async fn open_rw(path: &Path) -> Result<BufferedFile, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .buffered_open(path)
        .await
        .map_err(|e| StoreError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        })
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
    let files = Rc::new(std::cell::RefCell::new(Files {
        log: Rc::new(open_rw(&dir.join(BLOCK_LOG_FILE)).await?),
        log_len: recovered.block_log_len,
        index: recovered.index,
        wal: Rc::new(open_rw(&dir.join(WAL_FILE)).await?),
        wal_len: recovered.wal_len,
    }));
    let StoreChannels {
        from_consensus,
        to_consensus,
        from_net,
        to_net,
    } = channels;
    let to_net = Rc::new(to_net);
    let serve = {
        let files = files.clone();
        let stats = stats.clone();
        let to_net = to_net.clone();
        let log_path = dir.join(BLOCK_LOG_FILE);
        glommio::spawn_local(async move {
            while let Some(req) = from_net.recv().await {
                if !serve_blocks(&files, &log_path, req, &to_net, &stats).await {
                    return;
                }
            }
        })
    };
    let mut result = Ok(());
    while let Some(req) = from_consensus.recv().await {
        stats.count_in();
        let start = Instant::now();
        let reply = match req {
            StoreRequest::Persist(records) => {
                let mut bytes = Vec::new();
                for r in &records {
                    bytes.extend(encode_record(&crate::types::to_bytes(r)));
                }
                let (wal, at) = {
                    let f = files.borrow();
                    (f.wal.clone(), f.wal_len)
                };
                let path = dir.join(WAL_FILE);
                let len = bytes.len() as u64;
                let write = async {
                    wal.write_at(bytes, at).await?;
                    wal.fdatasync().await
                };
                if let Err(e) = write.await {
                    result = Err(io_error(&path)(e.into()));
                    break;
                }
                files.borrow_mut().wal_len += len;
                StoreReply::Persisted
            }
            StoreRequest::Commit(block) => {
                let height = block.block.header.height;
                let payload = crate::types::to_bytes(&*block);
                let record = encode_record(&payload);
                let (log, wal, at, rotate) = {
                    let f = files.borrow();
                    assert_eq!(
                        height as usize,
                        f.index.len() + 1,
                        "blocks are committed in height order"
                    );
                    (
                        f.log.clone(),
                        f.wal.clone(),
                        f.log_len,
                        f.wal_len > WAL_ROTATE_BYTES,
                    )
                };
                let path = dir.join(BLOCK_LOG_FILE);
                let len = record.len() as u64;
                let write = async {
                    log.write_at(record, at).await?;
                    log.fdatasync().await?;
                    if rotate {
                        wal.truncate(0).await?;
                        wal.fdatasync().await?;
                    }
                    Ok::<(), glommio::GlommioError<()>>(())
                };
                if let Err(e) = write.await {
                    result = Err(io_error(&path)(e.into()));
                    break;
                }
                let mut f = files.borrow_mut();
                f.index.push((at, payload.len() as u32));
                f.log_len += len;
                if rotate {
                    f.wal_len = 0;
                }
                StoreReply::Committed(height)
            }
            StoreRequest::Serve(req) => {
                let log_path = dir.join(BLOCK_LOG_FILE);
                serve_blocks(&files, &log_path, req, &to_net, &stats).await;
                StoreReply::Served
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
    if let Ok(files) = Rc::try_unwrap(files) {
        let files = files.into_inner();
        for file in [files.log, files.wal] {
            let _ = file.fdatasync().await;
            if let Ok(file) = Rc::try_unwrap(file) {
                let _ = file.close().await;
            }
        }
    }
    result
}

/// Sends a peer up to [`MAX_SYNC_BLOCKS`] finalized blocks from the height it asked for.
/// Returns false when the net shard is gone.
async fn serve_blocks(
    files: &Rc<std::cell::RefCell<Files>>,
    log_path: &Path,
    req: SyncServe,
    to_net: &Tx<PeerFrame>,
    stats: &ShardStats,
) -> bool {
    stats.count_in();
    let start = Instant::now();
    let reads: Vec<(u64, u32)> = {
        let f = files.borrow();
        let first = req.from_height.max(1);
        f.index
            .iter()
            .skip(usize::try_from(first - 1).unwrap_or(usize::MAX))
            .take(MAX_SYNC_BLOCKS as usize)
            .copied()
            .collect()
    };
    for (offset, len) in reads {
        // Files are only appended to, so a read of an indexed record needs no lock; clone the
        // handle's reference out of the RefCell before awaiting.
        let log = files.borrow().log.clone();
        let read = log
            .read_at(offset + RECORD_HEADER_LEN as u64, len as usize)
            .await;
        let Ok(bytes) = read else {
            tracing::warn!(file = %log_path.display(), offset, "sync read failed");
            break;
        };
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(&bytes);
        let Ok(block) = rkyv::from_bytes::<FinalizedBlock, rkyv::rancor::Error>(&aligned) else {
            tracing::error!(file = %log_path.display(), offset, "block log record no longer decodes");
            break;
        };
        let frame = Arc::new(encode_frame(&block));
        stats.count_out();
        if to_net
            .send(PeerFrame {
                peer: req.peer,
                frame,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans in-memory bytes: (records seen, good length) or the error.
    fn read_records(path: &Path, bytes: &[u8], _: ()) -> Result<(Vec<u64>, u64), StoreError> {
        let mut offsets = Vec::new();
        let good = super::read_records(
            path,
            std::io::Cursor::new(bytes),
            bytes.len() as u64,
            |offset, payload| {
                assert!(!payload.is_empty());
                offsets.push(offset);
                Ok(())
            },
        )?;
        Ok((offsets, good))
    }

    #[test]
    fn a_zeroed_length_with_records_after_it_is_corruption() {
        let mut bytes = encode_record(&[1; 16]);
        let second = bytes.len();
        bytes.extend(encode_record(&[2; 16]));
        bytes.extend(encode_record(&[3; 16]));
        bytes[second..second + 4].copy_from_slice(&0u32.to_le_bytes());
        let err = read_records(Path::new("z.log"), &bytes, ()).expect_err("corruption");
        assert!(
            err.to_string().contains(&format!("offset {second}")),
            "{err}"
        );
    }

    #[test]
    fn a_visitor_refusal_in_the_middle_is_corruption() {
        let mut bytes = encode_record(&[1; 16]);
        let second = bytes.len() as u64;
        bytes.extend(encode_record(&[2; 16]));
        bytes.extend(encode_record(&[3; 16]));
        let err = super::read_records(
            Path::new("v.log"),
            std::io::Cursor::new(&bytes),
            bytes.len() as u64,
            |_, payload| {
                if payload[0] == 2 {
                    Err("refused".into())
                } else {
                    Ok(())
                }
            },
        )
        .expect_err("refused record in the middle");
        assert!(err
            .to_string()
            .contains(&format!("offset {second}: refused")));
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let mut bytes = Vec::new();
        for i in 1..=3u8 {
            bytes.extend(encode_record(&vec![i; 100 * i as usize]));
        }
        let good = bytes.len() as u64;
        let path = Path::new("test.log");
        let (records, len) = read_records(path, &bytes, ()).unwrap();
        assert_eq!((records.len(), len), (3, good));
        // Torn: half a record at the end.
        let mut torn = bytes.clone();
        torn.extend_from_slice(&encode_record(&[9; 50])[..30]);
        let (records, len) = read_records(path, &torn, ()).unwrap();
        assert_eq!((records.len(), len), (3, good));
        // Zero padding after the last record is a torn tail too.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 4096]);
        assert_eq!(read_records(path, &padded, ()).unwrap().1, good);
    }

    #[test]
    fn corruption_in_the_middle_refuses_and_names_the_offset() {
        let first = encode_record(&[1; 64]);
        let mut bytes = first.clone();
        bytes.extend(encode_record(&[2; 64]));
        bytes.extend(encode_record(&[3; 64]));
        bytes[first.len() + RECORD_HEADER_LEN + 5] ^= 0xff;
        let err = read_records(Path::new("x.log"), &bytes, ()).expect_err("corruption refused");
        let text = err.to_string();
        assert!(text.contains("x.log") && text.contains(&format!("offset {}", first.len())));
        // The same damage in the last record is a torn tail.
        let mut last = encode_record(&[1; 64]);
        let at = last.len();
        last.extend(encode_record(&[2; 64]));
        last[at + RECORD_HEADER_LEN + 1] ^= 1;
        assert_eq!(
            read_records(Path::new("x.log"), &last, ()).unwrap().1,
            at as u64
        );
    }

    #[test]
    fn oversized_lengths_never_allocate() {
        let mut bytes = encode_record(&[1; 8]);
        let good = bytes.len() as u64;
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0xaa; 20]);
        assert_eq!(read_records(Path::new("y"), &bytes, ()).unwrap().1, good);
    }
}
