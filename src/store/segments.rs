//! Block log segment files: names, the recovery scan that checks them and builds the height
//! index, and the synchronous replay used before the shards start.

use std::path::{Path, PathBuf};

use rkyv::util::AlignedVec;

use super::index::BlockIndex;
use super::record::{parse_record_header, read_records, Ending, Tail, RECORD_HEADER_LEN};
use super::{io_error, StoreError};
use crate::types::chain::ArchivedFinalizedBlock;
use crate::types::hash::xxh3;
use crate::types::{BlockHeader, Height};

/// What every segment file name starts with.
pub const SEGMENT_PREFIX: &str = "blocks-";
/// What every segment file name ends with.
pub const SEGMENT_SUFFIX: &str = ".log";
/// Digits of the first height in a segment file name (zero-padded, so names sort by height).
const SEGMENT_HEIGHT_DIGITS: usize = 20;
/// The single block log file of the first storage layout, refused on start.
pub const LEGACY_BLOCK_LOG_FILE: &str = "blocks.log";
/// Segments stay below this size, so record offsets fit `u32` in the index.
pub const MAX_SEGMENT_FILE_BYTES: u64 = u32::MAX as u64;

/// The file name of the segment whose first block is at `first_height`:
/// `blocks-00000000000000000001.log` for height 1.
pub fn segment_file_name(first_height: Height) -> String {
    format!("{SEGMENT_PREFIX}{first_height:0SEGMENT_HEIGHT_DIGITS$}{SEGMENT_SUFFIX}")
}

/// The path of the segment of `dir` whose first block is at `first_height`.
pub fn segment_path(dir: &Path, first_height: Height) -> PathBuf {
    dir.join(segment_file_name(first_height))
}

/// The first height in a segment file name; `None` for a name that is not a segment's,
/// `Some(Err)` for a name that looks like one but is malformed.
fn parse_segment_name(name: &str) -> Option<Result<Height, ()>> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_HEIGHT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Err(()));
    }
    Some(digits.parse::<Height>().map_err(|_| ()))
}

/// The segment files of `dir` sorted by first height (none when `dir` does not exist).
/// Refuses a data directory of the old single-file layout and malformed segment names.
pub fn list_segments(dir: &Path) -> Result<Vec<(Height, PathBuf)>, StoreError> {
    let legacy = dir.join(LEGACY_BLOCK_LOG_FILE);
    if legacy.exists() {
        return Err(StoreError::Layout {
            path: legacy,
            problem: format!(
                "this data directory holds a block log of the old single-file layout; the \
                 block log is now segment files ({}, ...) and pre-release data is not \
                 migrated: move this data directory away (or delete it) and start the node \
                 on an empty one",
                segment_file_name(1)
            ),
        });
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir)(e)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_segment_name(name) {
            None => {}
            Some(Ok(height)) if height >= 1 => segments.push((height, entry.path())),
            Some(_) => {
                return Err(StoreError::Layout {
                    path: entry.path(),
                    problem: format!(
                        "not a block log segment name (expected {SEGMENT_PREFIX}<first height, \
                         {SEGMENT_HEIGHT_DIGITS} digits, at least 1>{SEGMENT_SUFFIX})"
                    ),
                })
            }
        }
    }
    segments.sort();
    Ok(segments)
}

/// One segment as a scan found it.
#[derive(Debug, Clone)]
pub struct SegmentScan {
    /// The file.
    pub path: PathBuf,
    /// Height of its first block (from its name).
    pub first_height: Height,
    /// Good blocks in it.
    pub blocks: u64,
    /// Length of the file.
    pub file_len: u64,
    /// Length of its good records (its logical end).
    pub good_len: u64,
    /// What follows the good records (only the last segment may have anything).
    pub tail: Tail,
}

/// What a block log holds: its segments, its head and the height index. Reading it changes
/// nothing (see [`super::recover`] for the repair).
#[derive(Debug)]
pub struct BlockLogScan {
    /// The segments in height order.
    pub segments: Vec<SegmentScan>,
    /// The last good block's header (the genesis header when there is none).
    pub head: BlockHeader,
    /// Height -> record location of every good block.
    pub index: BlockIndex,
}

impl BlockLogScan {
    /// Number of good blocks.
    pub fn blocks(&self) -> u64 {
        self.segments.iter().map(|s| s.blocks).sum()
    }
}

/// Reads and checks the block log of `dir` without changing it: every segment in height
/// order, one record at a time (each record's length, checksum, archive and limits, and that
/// its block extends the previous one, the first one `genesis`). Segment names must follow
/// each other without a gap; every segment but the last is sealed and must end exactly at its
/// last good record; the last may end in zero padding or a torn write, reported in its
/// [`SegmentScan::tail`]. Corruption is an error naming file and offset.
pub fn scan_block_log(dir: &Path, genesis: &BlockHeader) -> Result<BlockLogScan, StoreError> {
    scan_segments(dir, genesis, |_| Ok(()))
}

/// [`scan_block_log`] that also checks every block's body against its header (each
/// transaction hashed; the header's `transactions_root` recomputed), and the height of the
/// first block whose transactions are not the ones its certified header commits to. Such a
/// record is sound as a record (checksum, archive, links: its header is genuine), so the scan
/// goes on past it; what to do about it is the caller's ([`super::recover`] cuts the log
/// back, `db check` reports it).
pub fn scan_block_log_with_bodies(
    dir: &Path,
    genesis: &BlockHeader,
) -> Result<(BlockLogScan, Option<Height>), StoreError> {
    let mut first_forged = None;
    let scan = scan_segments(dir, genesis, |block| {
        if first_forged.is_none() && block.block.check_transactions_root().is_err() {
            first_forged = Some(block.block.header.height.to_native());
        }
        Ok(())
    })?;
    Ok((scan, first_forged))
}

/// Cuts the block log of `dir` (as `scan` found it) back to the blocks below `height`: the
/// segment holding `height` is truncated at its record (removed when that record is its
/// first) and every later segment removed, then the directory is fsynced. The heights cut
/// are fetched again from peers (the node's sync), like those of a node that was down.
pub(crate) fn cut_block_log(
    dir: &Path,
    scan: &BlockLogScan,
    height: Height,
) -> Result<(), StoreError> {
    let location = scan
        .index
        .locate(height)
        .expect("the height to cut at is in the log");
    for segment in scan.segments.iter().rev() {
        if segment.first_height > location.segment {
            std::fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
        } else if segment.first_height == location.segment {
            if location.offset == 0 {
                std::fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
            } else {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&segment.path)
                    .map_err(io_error(&segment.path))?;
                file.set_len(location.offset)
                    .map_err(io_error(&segment.path))?;
                file.sync_all().map_err(io_error(&segment.path))?;
            }
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Every finalized block header of a data directory's block log, by height from 1 (the
/// testnet's agreement check and block-interval figures). A tool: it holds every header.
pub fn finalized_headers(
    dir: &Path,
    genesis: &BlockHeader,
) -> Result<Vec<BlockHeader>, StoreError> {
    let mut headers = Vec::new();
    scan_segments(dir, genesis, |block| {
        headers.push(
            rkyv::deserialize::<BlockHeader, rkyv::rancor::Error>(&block.block.header)
                .map_err(|e| e.to_string())?,
        );
        Ok(())
    })?;
    Ok(headers)
}

/// A whole finalized block's identity, for comparing nodes' chains: its header hash and a
/// digest of its body (xxh3-128 over each transaction's length and bytes: a fast check that
/// two logs hold the same transactions, not a commitment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockDigest {
    /// The header's hash.
    pub header_hash: crate::types::hash::Hash32,
    /// The body digest.
    pub body: u128,
}

/// The [`BlockDigest`] of every finalized block of a data directory's block log, by height
/// from 1 (the testnet's agreement check). A tool: it holds one digest per block.
pub fn finalized_block_digests(
    dir: &Path,
    genesis: &BlockHeader,
) -> Result<Vec<BlockDigest>, StoreError> {
    let mut digests = Vec::new();
    scan_segments(dir, genesis, |block| {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for tx in block.block.transactions.iter() {
            hasher.update(&(tx.bytes.len() as u64).to_le_bytes());
            hasher.update(&tx.bytes);
        }
        digests.push(BlockDigest {
            header_hash: block.certificate.block_hash,
            body: hasher.digest128(),
        });
        Ok(())
    })?;
    Ok(digests)
}

/// The scan of [`scan_block_log`]; each good block also goes to `on_block` (whose refusal
/// makes the record bad). The first segment is named for the height after genesis and each
/// next one for the height after the previous one's last block.
///
/// Memory: one record, the index (4 bytes per block) and the head header.
pub(crate) fn scan_segments(
    dir: &Path,
    genesis: &BlockHeader,
    mut on_block: impl FnMut(&ArchivedFinalizedBlock) -> Result<(), String>,
) -> Result<BlockLogScan, StoreError> {
    let files = list_segments(dir)?;
    let mut index = BlockIndex::new();
    let mut head = genesis.clone();
    let mut head_hash = genesis.hash();
    let mut segments = Vec::with_capacity(files.len());
    for (k, (first_height, path)) in files.iter().enumerate() {
        let first_height = *first_height;
        if first_height != head.height + 1 {
            return Err(StoreError::Gap {
                path: path.clone(),
                first_height,
                expected: head.height + 1,
            });
        }
        let ending = if k + 1 < files.len() {
            Ending::Sealed
        } else {
            Ending::Open {
                torn_window: super::block_log::TORN_WINDOW,
            }
        };
        let file = std::fs::File::open(path).map_err(io_error(path))?;
        let file_len = file.metadata().map_err(io_error(path))?.len();
        if ending == Ending::Sealed && file_len == 0 {
            return Err(StoreError::Layout {
                path: path.clone(),
                problem: "a sealed segment (one with a segment after it) holds no block".into(),
            });
        }
        if file_len > MAX_SEGMENT_FILE_BYTES {
            return Err(StoreError::Layout {
                path: path.clone(),
                problem: format!(
                    "{file_len} bytes: a segment is at most {MAX_SEGMENT_FILE_BYTES} bytes"
                ),
            });
        }
        index.start_segment(first_height);
        let mut blocks = 0u64;
        let end = read_records(path, file, file_len, ending, |offset, payload| {
            let block = crate::types::frame::access::<ArchivedFinalizedBlock>("block", payload)
                .map_err(|e| e.to_string())?;
            block.check_limits().map_err(|e| e.to_string())?;
            let header = &block.block.header;
            let height = header.height.to_native();
            if height != head.height + 1 || header.parent_hash != head_hash {
                return Err(format!(
                    "block at height {height} does not extend height {} (the next block of \
                     this segment is height {})",
                    head.height,
                    head.height + 1
                ));
            }
            on_block(block)?;
            // check_limits checked that the certificate's block hash is the header's hash.
            head_hash = block.certificate.block_hash;
            head = rkyv::deserialize::<BlockHeader, rkyv::rancor::Error>(header)
                .map_err(|e| e.to_string())?;
            index.push(height, offset, payload.len());
            blocks += 1;
            Ok(())
        })?;
        segments.push(SegmentScan {
            path: path.clone(),
            first_height,
            blocks,
            file_len,
            good_len: end.good_len,
            tail: end.tail,
        });
    }
    Ok(BlockLogScan {
        segments,
        head,
        index,
    })
}

/// Reads the finalized blocks of heights `from_height..=index.head_height()` of `dir`'s block
/// log in order, across segments, and hands each (checked again: length, checksum, archive,
/// height) to `visit`; `index` is [`super::Recovered::index`]. Used before the shards start,
/// to bring the exec state from its snapshot up to the head. Returns the first error, the
/// visitor's included; errors name the file and offset.
pub fn replay_blocks(
    dir: &Path,
    index: &BlockIndex,
    from_height: Height,
    mut visit: impl FnMut(&ArchivedFinalizedBlock) -> Result<(), String>,
) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let Some(first_indexed) = index.first_height() else {
        return Ok(());
    };
    let mut open: Option<(Height, PathBuf, std::fs::File)> = None;
    let mut record = AlignedVec::<16>::new();
    for height in from_height.max(first_indexed)..=index.head_height() {
        let location = index
            .locate(height)
            .expect("every height from the first segment to the head is indexed");
        if open.as_ref().map(|(s, _, _)| *s) != Some(location.segment) {
            let path = segment_path(dir, location.segment);
            let file = std::fs::File::open(&path)
                .map_err(|e| format!("opening {}: {e}", path.display()))?;
            open = Some((location.segment, path, file));
        }
        let Some((_, path, file)) = open.as_ref() else {
            unreachable!("a segment was just opened");
        };
        let offset = location.offset;
        let at = |problem: String| format!("{} at offset {offset}: {problem}", path.display());
        record.clear();
        record.resize(RECORD_HEADER_LEN + location.len as usize, 0);
        file.read_exact_at(&mut record, offset)
            .map_err(|e| at(format!("reading: {e}")))?;
        let mut header = [0u8; RECORD_HEADER_LEN];
        header.copy_from_slice(&record[..RECORD_HEADER_LEN]);
        let (len, sum) = parse_record_header(&header);
        // Move the payload to the front so it stays 16-aligned for the archive.
        record.as_mut_slice().copy_within(RECORD_HEADER_LEN.., 0);
        record.resize(location.len as usize, 0);
        if len != location.len as usize || xxh3(&record) != sum {
            return Err(at(
                "length or checksum mismatch (the file changed since recovery)".into(),
            ));
        }
        let block = crate::types::frame::access::<ArchivedFinalizedBlock>("block", &record)
            .map_err(|e| at(e.to_string()))?;
        let found = block.block.header.height.to_native();
        if found != height {
            return Err(at(format!("expected height {height}, found {found}")));
        }
        visit(block)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_by_height_and_parse_back() {
        assert_eq!(segment_file_name(1), "blocks-00000000000000000001.log");
        assert_eq!(
            parse_segment_name(&segment_file_name(u64::MAX)),
            Some(Ok(u64::MAX))
        );
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(parse_segment_name("consensus.wal"), None);
        assert_eq!(parse_segment_name("blocks-12.log"), Some(Err(())));
        assert_eq!(
            parse_segment_name("blocks-99999999999999999999.log"),
            Some(Err(()))
        );
    }
}
