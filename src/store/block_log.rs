//! The block log as the store shard writes and reads it: segment files through glommio DMA
//! files (O_DIRECT), with the height index kept up to date.
//!
//! A DMA write must start and end on the file's alignment, so the log keeps the bytes of the
//! last, partly filled page of the current segment in memory and rewrites that page together
//! with the new record, zero-padded to the next page boundary, then fdatasyncs. The file is
//! therefore page-rounded on disk; its logical end is the end of the last record (the index
//! knows it, and the recovery scan finds it where the zero padding starts). The partial page
//! is rewritten with the very bytes it already holds, so a torn rewrite leaves the earlier
//! records as they were.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{Directory, DmaFile, OpenOptions};
use rkyv::util::AlignedVec;

use super::index::{BlockIndex, SegmentSummary};
use super::record::{append_record, parse_record_header, MAX_RECORD_BYTES, RECORD_HEADER_LEN};
use super::segments::{segment_path, MAX_SEGMENT_FILE_BYTES};
use super::StoreError;
use crate::types::hash::{xxh3, Hash32};
use crate::types::{BlockHeader, FinalizedBlock, Height};

/// A segment is sealed and a new one started before a record would take it past this size
/// (a record larger than this gets a segment of its own).
pub const SEGMENT_BYTES: u64 = 256 * 1024 * 1024;
/// The most record bytes one write (then fdatasync) of [`BlockLog::append_all`] holds; a
/// larger batch is written in parts. Bounds what a crash can tear: see [`TORN_WINDOW`].
pub const MAX_WRITE_BYTES: u64 = 16 * 1024 * 1024;
/// The torn window of the last segment's scan (`record::Ending::Open`): one write's
/// records plus the zero padding to its page boundary (pages are at most 64 KiB).
pub const TORN_WINDOW: u64 = MAX_WRITE_BYTES + 64 * 1024;
const _: () = assert!((RECORD_HEADER_LEN + MAX_RECORD_BYTES) as u64 <= MAX_WRITE_BYTES);
/// Smallest unit of a DMA write: the page size, or the device's alignment when larger.
const MIN_WRITE_UNIT: u64 = 4096;

/// The block log of the store shard. Appends are sequential (one writer); reads may run
/// concurrently with an append, since indexed records are never rewritten with other bytes.
/// Every method keeps its `RefCell` borrows short and never holds one across an await.
pub struct BlockLog {
    dir: PathBuf,
    directory: Directory,
    segment_limit: u64,
    /// The DMA write unit of the segment files.
    page: u64,
    state: RefCell<LogState>,
    /// An append is running.
    appending: Cell<bool>,
}

struct LogState {
    index: BlockIndex,
    head_hash: Hash32,
    /// The last segment, open read-write.
    current: Rc<DmaFile>,
    /// The bytes of the current segment from its last page boundary to its logical end
    /// (shorter than a page): what the next write starts with.
    partial_page: Vec<u8>,
    /// The sealed segment read last, kept open for the next read.
    sealed_reader: Option<(Height, Rc<DmaFile>)>,
}

/// Resets [`BlockLog::appending`] however an append ends.
struct AppendGuard<'a>(&'a Cell<bool>);

impl Drop for AppendGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

fn glommio_error(path: &Path) -> impl FnOnce(glommio::GlommioError<()>) -> StoreError + '_ {
    move |e| StoreError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

fn align_down(v: u64, unit: u64) -> u64 {
    v - v % unit
}

fn align_up(v: u64, unit: u64) -> u64 {
    v.div_ceil(unit) * unit
}

async fn open_segment(path: &Path, create: bool) -> Result<DmaFile, StoreError> {
    // Read+write even to read: a write-only DMA create logs a spurious error on current
    // kernels (DESIGN.md section 5).
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .dma_open(path)
        .await
        .map_err(glommio_error(path))
}

/// A scratch file that makes glommio's first DMA open on the data directory's device probe
/// io_uring polling (IOPOLL) on real data; removed again right away.
const DMA_PROBE_FILE: &str = ".dma-probe";

/// Works around glommio 0.9's IOPOLL probe: the first DMA open on a device (per thread) reads
/// the opened file's first block in polled mode and caches "pollable" if that read succeeds.
/// On an empty file (a new segment) the read succeeds without reaching the device, so a
/// device without poll queues (virtio disks, most cloud volumes) is cached as pollable and
/// every later read of written data fails with EOPNOTSUPP (glommio issues #605, #670). Opening
/// a file with one written and synced block first makes the probe read the device and cache
/// the right answer.
async fn probe_direct_io(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(DMA_PROBE_FILE);
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&path).map_err(super::io_error(&path))?;
        file.write_all(&[0xa5; MIN_WRITE_UNIT as usize])
            .map_err(super::io_error(&path))?;
        file.sync_data().map_err(super::io_error(&path))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(&path)
        .await
        .map_err(glommio_error(&path))?;
    let _ = file.close().await;
    std::fs::remove_file(&path).map_err(super::io_error(&path))
}

impl BlockLog {
    /// Opens the block log of `dir` for appending after recovery: `index` and `head` come from
    /// [`super::recover`] (the last segment already cut to its logical end). Starts the first
    /// segment when there is none. Segments roll over at `segment_limit` bytes
    /// ([`SEGMENT_BYTES`] in the node; tests use tiny ones).
    pub async fn open(
        dir: &Path,
        mut index: BlockIndex,
        head: &BlockHeader,
        segment_limit: u64,
    ) -> Result<BlockLog, StoreError> {
        assert!(
            segment_limit > 0
                && segment_limit + (RECORD_HEADER_LEN + MAX_RECORD_BYTES) as u64
                    <= MAX_SEGMENT_FILE_BYTES,
            "segment limit {segment_limit} keeps record offsets within u32"
        );
        assert_eq!(
            index.head_height(),
            head.height,
            "the index ends at the head"
        );
        probe_direct_io(dir).await?;
        // glommio opens files relative to the working directory but directories only by
        // absolute path (it passes no directory descriptor).
        let absolute = std::path::absolute(dir).map_err(super::io_error(dir))?;
        let directory = Directory::open(&absolute)
            .await
            .map_err(glommio_error(dir))?;
        let (first_height, end, create) = match index.last_segment() {
            Some(last) => (last.first_height, last.end, false),
            None => {
                index.start_segment(head.height + 1);
                (head.height + 1, 0, true)
            }
        };
        let path = segment_path(dir, first_height);
        let file = open_segment(&path, create).await?;
        if create {
            directory.sync().await.map_err(glommio_error(dir))?;
        }
        let page = file.alignment().max(MIN_WRITE_UNIT);
        assert!(page.is_power_of_two(), "DMA alignment is a power of two");
        let size = file.file_size().await.map_err(glommio_error(&path))?;
        if size < end {
            return Err(StoreError::Corrupt {
                path,
                offset: size,
                problem: format!("the file ends before its indexed end {end}"),
                context: "the file changed since recovery",
            });
        }
        if size > end {
            // Recovery cuts a torn tail; anything left after the logical end (zero padding of
            // a scan without the cut) would otherwise outlive a shorter rewrite.
            file.truncate(end).await.map_err(glommio_error(&path))?;
            file.fdatasync().await.map_err(glommio_error(&path))?;
        }
        let page_start = align_down(end, page);
        let partial_page = if end > page_start {
            let read = file
                .read_at_aligned(page_start, page as usize)
                .await
                .map_err(glommio_error(&path))?;
            let want = (end - page_start) as usize;
            if read.len() < want {
                return Err(StoreError::Corrupt {
                    path,
                    offset: page_start,
                    problem: format!("read {} of the {want} bytes of the last page", read.len()),
                    context: "the file changed since recovery",
                });
            }
            read[..want].to_vec()
        } else {
            Vec::new()
        };
        Ok(BlockLog {
            dir: dir.to_path_buf(),
            directory,
            segment_limit,
            page,
            state: RefCell::new(LogState {
                index,
                head_hash: head.hash(),
                current: Rc::new(file),
                partial_page,
                sealed_reader: None,
            }),
            appending: Cell::new(false),
        })
    }

    /// Height of the last block in the log.
    pub fn head_height(&self) -> Height {
        self.state.borrow().index.head_height()
    }

    /// A copy of the height index (tests and tools).
    pub fn index(&self) -> BlockIndex {
        self.state.borrow().index.clone()
    }

    /// Appends `block`, the head's child, and returns once its record is fdatasynced.
    /// Rolls over to a new segment first when the record would take the current one past
    /// the segment limit. An error may leave part of a batch written but not indexed; the
    /// caller must stop (a node that cannot persist must not vote) and recover.
    pub async fn append(&self, block: &FinalizedBlock) -> Result<(), StoreError> {
        self.append_all(std::slice::from_ref(block)).await
    }

    /// Appends `blocks` (the head's child, its child, ...) with one DMA write and one
    /// fdatasync per segment they go into, and returns once all are durable (a group commit:
    /// sync and bulk loads).
    pub async fn append_all(&self, blocks: &[FinalizedBlock]) -> Result<(), StoreError> {
        assert!(!self.appending.replace(true), "appends are sequential");
        let _guard = AppendGuard(&self.appending);
        let (mut parent_height, mut parent_hash) = {
            let state = self.state.borrow();
            (state.index.head_height(), state.head_hash)
        };
        let mut segment_end = self.current_segment().end;
        // The records for the current segment, and each one's height and payload length.
        let mut records = Vec::new();
        let mut entries: Vec<(Height, usize)> = Vec::new();
        for block in blocks {
            let header = &block.block.header;
            assert_eq!(
                header.height,
                parent_height + 1,
                "blocks are appended in height order"
            );
            assert_eq!(
                header.parent_hash, parent_hash,
                "a block is appended only onto its parent"
            );
            let payload = crate::types::to_bytes(block);
            let record_len = (RECORD_HEADER_LEN + payload.len()) as u64;
            let end = segment_end + records.len() as u64;
            let rolls_over = end > 0 && end + record_len > self.segment_limit;
            let too_big = records.len() as u64 + record_len > MAX_WRITE_BYTES;
            if (rolls_over || too_big) && !records.is_empty() {
                // `parent_hash` is still the hash of the last block in `records`.
                self.write_records(&records, &entries, parent_hash).await?;
                segment_end += records.len() as u64;
                records.clear();
                entries.clear();
            }
            if rolls_over {
                self.roll_over(header.height).await?;
                segment_end = 0;
            }
            append_record(&mut records, &payload);
            entries.push((header.height, payload.len()));
            parent_height = header.height;
            parent_hash = header.hash();
        }
        if !records.is_empty() {
            self.write_records(&records, &entries, parent_hash).await?;
        }
        Ok(())
    }

    fn current_segment(&self) -> SegmentSummary {
        self.state
            .borrow()
            .index
            .last_segment()
            .expect("the log always has a current segment")
    }

    /// Writes `records` (encoded, for the blocks `entries`, the last one's hash `head_hash`)
    /// at the logical end of the current segment: the partial last page, the records and
    /// zero padding to the next page boundary in one DMA write, then fdatasync; then indexes
    /// them.
    async fn write_records(
        &self,
        records: &[u8],
        entries: &[(Height, usize)],
        head_hash: Hash32,
    ) -> Result<(), StoreError> {
        let (file, partial_page, segment) = {
            let state = self.state.borrow();
            let segment = state.index.last_segment().expect("a current segment");
            (state.current.clone(), state.partial_page.clone(), segment)
        };
        assert!(
            records.len() as u64 <= MAX_WRITE_BYTES,
            "one write holds at most MAX_WRITE_BYTES: the torn window of recovery relies on it"
        );
        let path = segment_path(&self.dir, segment.first_height);
        let end = segment.end;
        let page_start = end - partial_page.len() as u64;
        assert_eq!(page_start % self.page, 0, "writes start on a page");
        let used = partial_page.len() + records.len();
        let write_len = align_up(used as u64, self.page) as usize;
        let mut buffer = file.alloc_dma_buffer(write_len);
        let bytes = buffer.as_bytes_mut();
        bytes[..partial_page.len()].copy_from_slice(&partial_page);
        bytes[partial_page.len()..used].copy_from_slice(records);
        bytes[used..].fill(0);
        let new_end = end + records.len() as u64;
        let new_partial_start = (align_down(new_end, self.page) - page_start) as usize;
        let new_partial_page = bytes[new_partial_start..used].to_vec();
        let written = file
            .write_at(buffer, page_start)
            .await
            .map_err(glommio_error(&path))?;
        if written != write_len {
            return Err(StoreError::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short write: {written} of {write_len} bytes at offset {page_start}"),
                ),
            });
        }
        file.fdatasync().await.map_err(glommio_error(&path))?;
        let mut state = self.state.borrow_mut();
        let mut offset = end;
        for &(height, len) in entries {
            state.index.push(height, offset, len);
            offset += (RECORD_HEADER_LEN + len) as u64;
        }
        assert_eq!(offset, new_end, "the entries are the records written");
        state.partial_page = new_partial_page;
        state.head_hash = head_hash;
        Ok(())
    }

    /// Seals the current segment (cut to its logical end, so a sealed segment holds exactly
    /// its records) and starts the segment of `first_height`. The cut is durable before the
    /// new file exists, and the new file's directory entry before any record goes into it.
    async fn roll_over(&self, first_height: Height) -> Result<(), StoreError> {
        let (sealed, sealed_first, end) = {
            let state = self.state.borrow();
            let last = state.index.last_segment().expect("a current segment");
            (state.current.clone(), last.first_height, last.end)
        };
        let sealed_path = segment_path(&self.dir, sealed_first);
        sealed
            .truncate(end)
            .await
            .map_err(glommio_error(&sealed_path))?;
        sealed
            .fdatasync()
            .await
            .map_err(glommio_error(&sealed_path))?;
        let path = segment_path(&self.dir, first_height);
        let file = open_segment(&path, true).await?;
        self.directory
            .sync()
            .await
            .map_err(glommio_error(&self.dir))?;
        let mut state = self.state.borrow_mut();
        state.index.start_segment(first_height);
        state.current = Rc::new(file);
        state.partial_page.clear();
        // The segment just sealed is the likeliest to be read next by a peer catching up.
        state.sealed_reader = Some((sealed_first, sealed));
        Ok(())
    }

    /// The payload of the block at `height` (its rkyv archive, 16-aligned), read with a DMA
    /// read and checked against its length and checksum; `None` when the height is not in
    /// the log. Errors name the segment file and the record's offset.
    pub async fn read(&self, height: Height) -> Result<Option<AlignedVec<16>>, StoreError> {
        let (location, file) = {
            let state = self.state.borrow();
            let Some(location) = state.index.locate(height) else {
                return Ok(None);
            };
            let current = state
                .index
                .last_segment()
                .expect("a current segment")
                .first_height;
            let file = if location.segment == current {
                Some(state.current.clone())
            } else {
                match &state.sealed_reader {
                    Some((segment, file)) if *segment == location.segment => Some(file.clone()),
                    _ => None,
                }
            };
            (location, file)
        };
        let path = segment_path(&self.dir, location.segment);
        let file = match file {
            Some(file) => file,
            None => {
                let file = Rc::new(
                    OpenOptions::new()
                        .read(true)
                        .dma_open(&path)
                        .await
                        .map_err(glommio_error(&path))?,
                );
                self.state.borrow_mut().sealed_reader = Some((location.segment, file.clone()));
                file
            }
        };
        let want = RECORD_HEADER_LEN + location.len as usize;
        let bytes = file
            .read_at(location.offset, want)
            .await
            .map_err(glommio_error(&path))?;
        let changed = |problem: String| StoreError::Corrupt {
            path: path.clone(),
            offset: location.offset,
            problem,
            context: "the file changed since recovery",
        };
        if bytes.len() != want {
            return Err(changed(format!(
                "read {} of the record's {want} bytes",
                bytes.len()
            )));
        }
        let mut header = [0u8; RECORD_HEADER_LEN];
        header.copy_from_slice(&bytes[..RECORD_HEADER_LEN]);
        let (len, sum) = parse_record_header(&header);
        let payload = &bytes[RECORD_HEADER_LEN..];
        if len != location.len as usize || xxh3(payload) != sum {
            return Err(changed("length or checksum mismatch".into()));
        }
        let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        Ok(Some(aligned))
    }

    /// Cuts the current segment to its logical end (dropping the page padding), fdatasyncs
    /// and closes the files. For a clean stop; a crash instead leaves the padding, which
    /// recovery cuts.
    pub async fn close(self) -> Result<(), StoreError> {
        let state = self.state.into_inner();
        let last = state.index.last_segment().expect("a current segment");
        let path = segment_path(&self.dir, last.first_height);
        state
            .current
            .truncate(last.end)
            .await
            .map_err(glommio_error(&path))?;
        state
            .current
            .fdatasync()
            .await
            .map_err(glommio_error(&path))?;
        drop(state.sealed_reader);
        // Another holder (a cancelled read) would close it on drop.
        let _ = state.current.close_rc().await;
        let _ = self.directory.close().await;
        Ok(())
    }
}
