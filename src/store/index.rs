//! The height index of the block log: height -> (segment, offset, length).
//!
//! Built by the recovery scan and extended by every append. Per segment it keeps the first
//! height, one `u32` offset per record and the segment's logical end; a record's payload
//! length is the distance to the next record (or to the end) minus the record header, so the
//! index costs 4 bytes per block (400 KB per 100,000 blocks) and no header is kept.

use crate::types::Height;

use super::record::RECORD_HEADER_LEN;

/// Where one block's record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLocation {
    /// The segment, named by its first height (see [`super::segment_file_name`]).
    pub segment: Height,
    /// Byte offset of the record (its header) in the segment.
    pub offset: u64,
    /// Payload length of the record.
    pub len: u32,
}

/// A summary of one indexed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Height of its first record (the height in its name).
    pub first_height: Height,
    /// How many blocks it holds (heights `first_height..first_height + blocks`).
    pub blocks: u64,
    /// Its logical end: the length of its records.
    pub end: u64,
}

#[derive(Clone)]
struct SegmentIndex {
    first_height: Height,
    /// Offset of each record, index `h - first_height`; contiguous: each record ends where the
    /// next starts, the last one at `end`.
    offsets: Vec<u32>,
    end: u64,
}

/// Height -> record location for every finalized block in the block log.
#[derive(Clone, Default)]
pub struct BlockIndex {
    segments: Vec<SegmentIndex>,
}

impl std::fmt::Debug for BlockIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockIndex")
            .field("segments", &self.segments.len())
            .field("first_height", &self.first_height())
            .field("head_height", &self.head_height())
            .finish()
    }
}

impl BlockIndex {
    /// An empty index.
    pub fn new() -> BlockIndex {
        BlockIndex::default()
    }

    /// Height of the first indexed block's segment, if any segment is indexed.
    pub fn first_height(&self) -> Option<Height> {
        self.segments.first().map(|s| s.first_height)
    }

    /// Height of the last indexed block; the height before the first segment when no block is
    /// indexed (0 for an empty index).
    pub fn head_height(&self) -> Height {
        match self.segments.last() {
            Some(s) => s.first_height + s.offsets.len() as u64 - 1,
            None => 0,
        }
    }

    /// Number of indexed blocks.
    pub fn blocks(&self) -> u64 {
        self.segments.iter().map(|s| s.offsets.len() as u64).sum()
    }

    /// The indexed segments in height order.
    pub fn segments(&self) -> impl Iterator<Item = SegmentSummary> + '_ {
        self.segments.iter().map(|s| SegmentSummary {
            first_height: s.first_height,
            blocks: s.offsets.len() as u64,
            end: s.end,
        })
    }

    /// The last segment (the one appended to), if any.
    pub fn last_segment(&self) -> Option<SegmentSummary> {
        self.segments.last().map(|s| SegmentSummary {
            first_height: s.first_height,
            blocks: s.offsets.len() as u64,
            end: s.end,
        })
    }

    /// Where the block at `height` is, if it is indexed.
    pub fn locate(&self, height: Height) -> Option<RecordLocation> {
        // The segment with the largest first height <= height.
        let at = self
            .segments
            .partition_point(|s| s.first_height <= height)
            .checked_sub(1)?;
        let segment = &self.segments[at];
        let k = usize::try_from(height - segment.first_height).ok()?;
        let offset = u64::from(*segment.offsets.get(k)?);
        let next = match segment.offsets.get(k + 1) {
            Some(next) => u64::from(*next),
            None => segment.end,
        };
        let len = next - offset - RECORD_HEADER_LEN as u64;
        Some(RecordLocation {
            segment: segment.first_height,
            offset,
            len: u32::try_from(len).expect("indexed record lengths fit u32"),
        })
    }

    /// Starts a new (empty) segment whose first block will be at `first_height`, the height
    /// after the head. The previous segment, if any, must hold at least one block.
    pub(crate) fn start_segment(&mut self, first_height: Height) {
        assert!(
            first_height >= 1,
            "height 0 is the genesis, never in the log"
        );
        if let Some(last) = self.segments.last() {
            assert!(!last.offsets.is_empty(), "a sealed segment holds blocks");
            assert_eq!(
                first_height,
                self.head_height() + 1,
                "segments are contiguous in height"
            );
        }
        self.segments.push(SegmentIndex {
            first_height,
            offsets: Vec::new(),
            end: 0,
        });
    }

    /// Records the block at `height` (the head's next) at `offset` of the last segment, with
    /// a payload of `len` bytes. Offsets must fit `u32` (segments stay below 4 GiB).
    pub(crate) fn push(&mut self, height: Height, offset: u64, len: usize) {
        let head = self.head_height();
        let segment = self
            .segments
            .last_mut()
            .expect("a segment is started first");
        assert_eq!(height, head + 1, "blocks are indexed in height order");
        assert_eq!(offset, segment.end, "records are contiguous in a segment");
        segment
            .offsets
            .push(u32::try_from(offset).expect("segment offsets fit u32"));
        segment.end = offset + (RECORD_HEADER_LEN + len) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_heights_across_segments() {
        let mut index = BlockIndex::new();
        assert_eq!((index.head_height(), index.locate(1)), (0, None));
        index.start_segment(1);
        assert_eq!(index.head_height(), 0);
        index.push(1, 0, 100);
        index.push(2, 112, 50);
        index.start_segment(3);
        index.push(3, 0, 10);
        assert_eq!(index.head_height(), 3);
        assert_eq!(index.blocks(), 3);
        assert_eq!(
            index.locate(2),
            Some(RecordLocation {
                segment: 1,
                offset: 112,
                len: 50
            })
        );
        assert_eq!(
            index.locate(3),
            Some(RecordLocation {
                segment: 3,
                offset: 0,
                len: 10
            })
        );
        assert_eq!(index.locate(0), None);
        assert_eq!(index.locate(4), None);
        assert_eq!(index.last_segment().map(|s| s.end), Some(22));
    }

    #[test]
    #[should_panic(expected = "segments are contiguous")]
    fn a_gap_between_segments_is_a_bug() {
        let mut index = BlockIndex::new();
        index.start_segment(1);
        index.push(1, 0, 10);
        index.start_segment(3);
    }
}
