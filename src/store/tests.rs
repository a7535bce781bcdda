//! Block log tests on real files (tempdirs) through glommio DMA files, with tiny segments.

use std::path::Path;

use super::*;
use crate::types::chain::SignedTransaction;
use crate::types::FinalizedBlock;

/// Segments of three pages: a few blocks each.
const TINY_SEGMENT: u64 = 3 * 4096;

fn genesis() -> BlockHeader {
    super::fixtures::genesis_header()
}

/// The child of `parent` with `txs` transactions of `tx_bytes` bytes (see
/// [`super::fixtures::child_block`]).
fn child(parent: &BlockHeader, txs: usize, tx_bytes: usize) -> FinalizedBlock {
    let height = parent.height + 1;
    let transactions: Vec<SignedTransaction> = (0..txs)
        .map(|i| SignedTransaction {
            bytes: vec![(height as usize + i) as u8 | 1; tx_bytes],
        })
        .collect();
    super::fixtures::child_block(parent, transactions)
}

/// `count` blocks after `parent`, of varied sizes (0 to 12 transactions of 110 bytes), so
/// records cross page boundaries at varied offsets.
fn chain(parent: &BlockHeader, count: usize) -> Vec<FinalizedBlock> {
    let mut blocks: Vec<FinalizedBlock> = Vec::with_capacity(count);
    for _ in 0..count {
        let parent = blocks.last().map_or(parent, |b| &b.block.header);
        let height = parent.height + 1;
        blocks.push(child(parent, (height * 5 % 13) as usize, 110));
    }
    blocks
}

/// Runs `body` on a glommio executor with little io memory, as the node's shards do.
fn on_executor<T>(body: impl std::future::Future<Output = T>) -> T {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("glommio executor")
        .run(body)
}

/// Recovers `dir`, appends `blocks`, and stops cleanly (`close`) or as a crash would (drop).
fn append(dir: &Path, blocks: &[FinalizedBlock], segment_limit: u64, clean_stop: bool) {
    let recovered = recover(dir, &genesis()).expect("recover");
    on_executor(async {
        let log = BlockLog::open(dir, recovered.index, &recovered.head, segment_limit)
            .await
            .expect("open");
        for block in blocks {
            log.append(block).await.expect("append");
        }
        if clean_stop {
            log.close().await.expect("close");
        }
    });
}

/// Every block of `dir` through `replay_blocks` from `from`: (height, hash) in order.
fn replayed(dir: &Path, index: &BlockIndex, from: Height) -> Vec<(Height, [u8; 32])> {
    let mut seen = Vec::new();
    replay_blocks(dir, index, from, |block| {
        seen.push((
            block.block.header.height.to_native(),
            block.block.header.hash(),
        ));
        Ok(())
    })
    .expect("replay");
    seen
}

fn expected(blocks: &[FinalizedBlock], from: Height) -> Vec<(Height, [u8; 32])> {
    blocks
        .iter()
        .filter(|b| b.block.header.height >= from)
        .map(|b| (b.block.header.height, b.block.hash()))
        .collect()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read segment");
    bytes[offset as usize] ^= 0x40;
    std::fs::write(path, bytes).expect("write segment");
}

#[test]
fn blocks_across_tiny_segments_recover_with_head_index_and_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = chain(&genesis(), 60);
    append(dir.path(), &blocks, TINY_SEGMENT, true);

    let recovered = recover(dir.path(), &genesis()).expect("recover");
    let last = &blocks[59].block.header;
    assert_eq!(recovered.head, *last);
    assert_eq!(recovered.cut, (0, 0), "a clean stop leaves no padding");
    let index = &recovered.index;
    assert_eq!((index.head_height(), index.blocks()), (60, 60));
    let segments: Vec<SegmentSummary> = index.segments().collect();
    assert!(segments.len() >= 4, "{segments:?}");
    let files = list_segments(dir.path()).expect("list");
    assert_eq!(files.len(), segments.len());
    for (k, (summary, (first_height, path))) in segments.iter().zip(&files).enumerate() {
        assert_eq!(summary.first_height, *first_height);
        assert_eq!(*path, segment_path(dir.path(), *first_height));
        // A segment stays within the limit, and every file ends at its last record.
        assert!(summary.end <= TINY_SEGMENT, "{summary:?}");
        assert_eq!(std::fs::metadata(path).unwrap().len(), summary.end);
        if k + 1 < segments.len() {
            assert_eq!(
                summary.first_height + summary.blocks,
                segments[k + 1].first_height
            );
        }
    }
    assert_eq!(segments[0].first_height, 1);
    // Every height is located where its record is.
    for block in &blocks {
        let height = block.block.header.height;
        let location = index.locate(height).expect("indexed");
        assert_eq!(
            location.len as usize,
            crate::types::to_bytes(block).len(),
            "height {height}"
        );
    }
    assert_eq!(replayed(dir.path(), index, 0), expected(&blocks, 1));
    assert_eq!(replayed(dir.path(), index, 37), expected(&blocks, 37));
    assert!(replayed(dir.path(), index, 61).is_empty());
    // The tool scan sees the same.
    let headers = finalized_headers(dir.path(), &genesis()).expect("headers");
    assert_eq!(headers.len(), 60);
    assert_eq!(headers[59], *last);
}

#[test]
fn a_restart_appends_at_the_logical_end_after_a_crash_or_a_clean_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = chain(&genesis(), 45);
    // A crash: the last segment keeps its page padding.
    append(dir.path(), &blocks[..20], TINY_SEGMENT, false);
    let scan = scan_block_log(dir.path(), &genesis()).expect("scan");
    let last = scan.segments.last().expect("a segment");
    assert_eq!(last.tail, Tail::ZeroPadding);
    assert_eq!(last.file_len % 4096, 0, "DMA writes whole pages");
    assert!(last.file_len > last.good_len);
    let padding = last.file_len - last.good_len;
    assert_eq!(
        recover(dir.path(), &genesis()).expect("recover").cut.0,
        padding
    );
    // Restart after the crash (recover cuts, then appends), then a clean stop and restart.
    append(dir.path(), &blocks[20..33], TINY_SEGMENT, false);
    append(dir.path(), &blocks[33..40], TINY_SEGMENT, true);
    append(dir.path(), &blocks[40..], TINY_SEGMENT, true);
    let recovered = recover(dir.path(), &genesis()).expect("recover");
    assert_eq!(recovered.head, blocks[44].block.header);
    assert_eq!(
        replayed(dir.path(), &recovered.index, 1),
        expected(&blocks, 1)
    );
}

#[test]
fn a_torn_tail_in_the_last_segment_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = chain(&genesis(), 30);
    append(dir.path(), &blocks[..25], TINY_SEGMENT, false);
    let recovered = recover(dir.path(), &genesis()).expect("recover");
    let last = recovered.index.last_segment().expect("a segment");
    let path = segment_path(dir.path(), last.first_height);
    // Half of the next record written at the logical end, then page padding: a torn write.
    let next = encode_record(&crate::types::to_bytes(&blocks[25]));
    let mut bytes = std::fs::read(&path).expect("read");
    assert_eq!(bytes.len() as u64, last.end);
    bytes.extend_from_slice(&next[..next.len() / 2]);
    bytes.resize(bytes.len().next_multiple_of(4096), 0);
    std::fs::write(&path, &bytes).expect("write");
    let scan = scan_block_log(dir.path(), &genesis()).expect("scan");
    assert_eq!(scan.segments.last().unwrap().tail, Tail::Torn);
    let recovered = recover(dir.path(), &genesis()).expect("recover");
    assert_eq!(recovered.head, blocks[24].block.header);
    assert_eq!(recovered.cut.0, bytes.len() as u64 - last.end);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), last.end);
    // The node goes on from there.
    append(dir.path(), &blocks[25..], TINY_SEGMENT, true);
    let recovered = recover(dir.path(), &genesis()).expect("recover");
    assert_eq!(
        replayed(dir.path(), &recovered.index, 1),
        expected(&blocks, 1)
    );
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_or_mid_last_segment_refuses_naming_file_and_offset() {
    let blocks = chain(&genesis(), 60);
    // At least three segments, the last holding at least two blocks.
    let setup = || {
        let dir = tempfile::tempdir().expect("tempdir");
        on_executor(async {
            let log = BlockLog::open(dir.path(), BlockIndex::new(), &genesis(), TINY_SEGMENT)
                .await
                .expect("open");
            for block in &blocks {
                log.append(block).await.expect("append");
                let index = log.index();
                if index.segments().count() >= 3 && index.last_segment().unwrap().blocks >= 2 {
                    break;
                }
            }
            log.close().await.expect("close");
        });
        let index = recover(dir.path(), &genesis()).expect("recover").index;
        (dir, index)
    };
    let refused = |dir: &Path| {
        let err = recover(dir, &genesis()).expect_err("corruption refused");
        let db = scan_block_log(dir, &genesis()).expect_err("db check refuses too");
        assert_eq!(err.to_string(), db.to_string());
        err.to_string()
    };

    // The last record of the first (sealed) segment: a torn tail anywhere else, corruption
    // in a sealed one.
    let (dir, index) = setup();
    let first = index.segments().next().expect("a segment");
    let height = first.first_height + first.blocks - 1;
    let at = index.locate(height).expect("indexed");
    let path = segment_path(dir.path(), at.segment);
    flip_byte(&path, at.offset + RECORD_HEADER_LEN as u64 + 7);
    let text = refused(dir.path());
    assert!(
        text.contains(&path.display().to_string())
            && text.contains(&format!("corrupt record at offset {}", at.offset))
            && text.contains("sealed segment"),
        "{text}"
    );

    // A record header in the middle of a sealed segment (the second one).
    let (dir, index) = setup();
    let second = index.segments().nth(1).expect("two segments");
    let at = index.locate(second.first_height + 1).expect("indexed");
    let path = segment_path(dir.path(), at.segment);
    flip_byte(&path, at.offset + 1);
    let text = refused(dir.path());
    assert!(
        text.contains(&path.display().to_string())
            && text.contains(&format!("corrupt record at offset {}", at.offset)),
        "{text}"
    );

    // The first record of the last segment, with more records after it: a flipped bit is no
    // lost sector, so it is corruption, not a torn write (`store::record` tests the rules).
    let (dir, index) = setup();
    let last = index.last_segment().expect("a segment");
    assert!(last.blocks >= 2, "{last:?}");
    let at = index.locate(last.first_height).expect("indexed");
    assert_eq!(at.offset, 0);
    let path = segment_path(dir.path(), at.segment);
    flip_byte(&path, RECORD_HEADER_LEN as u64 + 100);
    let text = refused(dir.path());
    assert!(
        text.contains(&path.display().to_string())
            && text.contains("corrupt record at offset 0")
            && text.contains("data follows it"),
        "{text}"
    );
}

/// A crash during a multi-page append can leave the write's later pages on the disk and
/// not its first (the one holding the new record's header): recovery cuts the whole write,
/// keeps every block before it, and the log appends again from there.
#[test]
fn a_torn_write_whose_first_page_is_lost_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = chain(&genesis(), 30);
    append(dir.path(), &blocks[..25], SEGMENT_BYTES, false);
    let recovered = recover(dir.path(), &genesis()).expect("recover");
    let path = segment_path(dir.path(), 1);
    // The next write: blocks 26-29 from the logical end, padded to a page.
    let mut next = Vec::new();
    for b in &blocks[25..29] {
        next.extend_from_slice(&encode_record(&crate::types::to_bytes(b)));
    }
    let on_disk = std::fs::read(&path).expect("read");
    let end = recovered.index.last_segment().expect("segment").end as usize;
    let page_end = end.next_multiple_of(4096);
    let mut written = on_disk[..end].to_vec();
    written.extend_from_slice(&next);
    written.resize(written.len().next_multiple_of(4096), 0);
    assert!(written.len() > page_end, "the write must cross a page");
    // The first page as it was before the write (the old records, zeros after), the rest as
    // written.
    let mut torn = on_disk[..end].to_vec();
    torn.resize(page_end, 0);
    torn.extend_from_slice(&written[page_end..]);
    std::fs::write(&path, &torn).expect("write");
    let recovered = recover(dir.path(), &genesis()).expect("recovers");
    assert_eq!(recovered.head, blocks[24].block.header);
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), end as u64);
    // The log goes on from there.
    append(dir.path(), &blocks[25..], SEGMENT_BYTES, true);
    let recovered = recover(dir.path(), &genesis()).expect("recover");
    assert_eq!(recovered.head, blocks[29].block.header);
}

#[test]
fn a_missing_middle_segment_refuses_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = chain(&genesis(), 40);
    append(dir.path(), &blocks, TINY_SEGMENT, true);
    let files = list_segments(dir.path()).expect("list");
    assert!(files.len() >= 3);
    std::fs::remove_file(&files[1].1).expect("remove");
    let err = recover(dir.path(), &genesis()).expect_err("gap refused");
    let text = err.to_string();
    assert!(
        text.contains(&files[2].1.display().to_string())
            && text.contains(&segment_file_name(files[1].0))
            && text.contains("missing"),
        "{text}"
    );
    // A missing first segment too.
    std::fs::remove_file(&files[0].1).expect("remove");
    let text = recover(dir.path(), &genesis())
        .expect_err("gap refused")
        .to_string();
    assert!(text.contains(&segment_file_name(1)), "{text}");
}

#[test]
fn the_old_single_file_layout_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(LEGACY_BLOCK_LOG_FILE), [1, 2, 3]).expect("write");
    let text = recover(dir.path(), &genesis())
        .expect_err("old layout refused")
        .to_string();
    assert!(
        text.contains("blocks.log") && text.contains("layout") && text.contains("segment"),
        "{text}"
    );
    std::fs::remove_file(dir.path().join(LEGACY_BLOCK_LOG_FILE)).expect("remove");
    std::fs::write(dir.path().join("blocks-12.log"), [1]).expect("write");
    let text = recover(dir.path(), &genesis())
        .expect_err("bad name refused")
        .to_string();
    assert!(text.contains("not a block log segment name"), "{text}");
}

#[test]
fn reads_for_sync_serving_cross_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = chain(&genesis(), 40);
    append(dir.path(), &blocks[..30], TINY_SEGMENT, true);
    let recovered = recover(dir.path(), &genesis()).expect("recover");
    on_executor(async {
        let log = BlockLog::open(dir.path(), recovered.index, &recovered.head, TINY_SEGMENT)
            .await
            .expect("open");
        // Appends during serving roll over too; reads see every block, in any order.
        for block in &blocks[30..] {
            log.append(block).await.expect("append");
        }
        assert!(log.index().segments().count() >= 4);
        let order: Vec<usize> = (0..40).chain((0..40).rev()).chain([0, 39, 5, 35]).collect();
        for k in order {
            let height = k as u64 + 1;
            let payload = log.read(height).await.expect("read").expect("stored");
            assert_eq!(
                payload.as_slice(),
                crate::types::to_bytes(&blocks[k]).as_slice()
            );
            let frame = block_frame(height, &payload).expect("frame");
            assert_eq!(frame, crate::types::frame::encode_frame(&blocks[k]));
        }
        assert!(log.read(41).await.expect("read").is_none());
        assert!(block_frame(2, &log.read(1).await.unwrap().unwrap()).is_err());
        log.close().await.expect("close");
    });
}

#[test]
fn a_block_larger_than_the_segment_limit_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut blocks = chain(&genesis(), 3);
    let big = child(&blocks[2].block.header, 100, 110);
    blocks.push(big);
    let after = chain(&blocks[3].block.header, 2);
    blocks.extend(after);
    append(dir.path(), &blocks, 4096, true);
    let recovered = recover(dir.path(), &genesis()).expect("recover");
    let segments: Vec<SegmentSummary> = recovered.index.segments().collect();
    let big = segments
        .iter()
        .find(|s| s.first_height == 4)
        .expect("a segment starts at the big block");
    assert_eq!(big.blocks, 1);
    assert!(big.end > 4096);
    assert_eq!(
        replayed(dir.path(), &recovered.index, 1),
        expected(&blocks, 1)
    );
}

#[test]
fn an_empty_last_segment_left_by_a_crash_at_roll_over_is_appended_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = chain(&genesis(), 20);
    append(dir.path(), &blocks[..10], TINY_SEGMENT, true);
    // The crash came after the new segment was created, before its first record.
    std::fs::write(segment_path(dir.path(), 11), []).expect("create");
    let recovered = recover(dir.path(), &genesis()).expect("recover");
    assert_eq!(recovered.head.height, 10);
    append(dir.path(), &blocks[10..], TINY_SEGMENT, true);
    let recovered = recover(dir.path(), &genesis()).expect("recover");
    assert!(recovered.index.segments().any(|s| s.first_height == 11));
    assert_eq!(
        replayed(dir.path(), &recovered.index, 1),
        expected(&blocks, 1)
    );
    // An empty segment with one after it is not a crash leftover.
    std::fs::write(segment_path(dir.path(), 21), []).expect("create");
    std::fs::write(segment_path(dir.path(), 22), []).expect("create");
    let text = recover(dir.path(), &genesis())
        .expect_err("empty sealed segment")
        .to_string();
    assert!(text.contains("holds no block"), "{text}");
}

#[test]
fn the_first_append_of_a_new_data_directory_starts_segment_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = chain(&genesis(), 1);
    append(dir.path(), &blocks, SEGMENT_BYTES, true);
    assert_eq!(
        list_segments(dir.path()).expect("list"),
        vec![(1, segment_path(dir.path(), 1))]
    );
    assert_eq!(
        recover(dir.path(), &genesis()).expect("recover").head,
        blocks[0].block.header
    );
}

#[test]
fn a_batch_append_rolls_over_like_single_appends() {
    let blocks = chain(&genesis(), 50);
    let one_by_one = tempfile::tempdir().expect("tempdir");
    append(one_by_one.path(), &blocks, TINY_SEGMENT, true);
    let batched = tempfile::tempdir().expect("tempdir");
    on_executor(async {
        let log = BlockLog::open(batched.path(), BlockIndex::new(), &genesis(), TINY_SEGMENT)
            .await
            .expect("open");
        log.append_all(&blocks[..1]).await.expect("append");
        log.append_all(&blocks[1..45]).await.expect("append");
        log.append_all(&blocks[45..]).await.expect("append");
        log.close().await.expect("close");
    });
    let segments = |dir: &Path| -> Vec<SegmentSummary> {
        let recovered = recover(dir, &genesis()).expect("recover");
        assert_eq!(replayed(dir, &recovered.index, 1), expected(&blocks, 1));
        recovered.index.segments().collect()
    };
    assert_eq!(segments(batched.path()), segments(one_by_one.path()));
}

#[test]
fn a_data_directory_given_by_a_relative_path_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The same directory, relative to the working directory.
    let cwd = std::env::current_dir().expect("cwd");
    let mut relative = std::path::PathBuf::new();
    for _ in cwd.components().skip(1) {
        relative.push("..");
    }
    relative.push(dir.path().strip_prefix("/").expect("absolute tempdir"));
    assert!(relative.is_relative());
    let blocks = chain(&genesis(), 12);
    append(&relative, &blocks, TINY_SEGMENT, true);
    let recovered = recover(dir.path(), &genesis()).expect("recover");
    assert_eq!(recovered.head, blocks[11].block.header);
}

/// A batch larger than one write may hold is written in parts (each within the torn window
/// recovery allows; `write_records` asserts it), and reads back whole.
#[test]
fn a_batch_over_the_write_limit_is_written_in_parts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tx = crate::types::MAX_TX_BYTES;
    let per_block = (6 << 20) / tx;
    let mut blocks: Vec<FinalizedBlock> = Vec::new();
    for _ in 0..4 {
        let parent = blocks.last().map_or(genesis(), |b| b.block.header.clone());
        blocks.push(child(&parent, per_block, tx));
    }
    let total: usize = blocks.iter().map(|b| crate::types::to_bytes(b).len()).sum();
    assert!(total as u64 > block_log::MAX_WRITE_BYTES, "{total}");
    let recovered = recover(dir.path(), &genesis()).expect("recover");
    on_executor(async {
        let log = BlockLog::open(dir.path(), recovered.index, &recovered.head, SEGMENT_BYTES)
            .await
            .expect("open");
        log.append_all(&blocks).await.expect("append");
        log.close().await.expect("close");
    });
    let recovered = recover(dir.path(), &genesis()).expect("recover");
    assert_eq!(recovered.head, blocks[3].block.header);
    assert_eq!(recovered.cut, (0, 0));
}

#[test]
fn a_log_holding_a_forged_body_from_an_older_version_is_cut_back_once_and_refilled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut blocks = chain(&genesis(), 60);
    // Block 25 as a tampering peer sent it: its genuine, certified header with other
    // transactions (an older version stored it without checking).
    let genuine_25 = blocks[24].clone();
    blocks[24].block.transactions = vec![SignedTransaction {
        bytes: vec![0xee; 99],
    }];
    assert_eq!(blocks[24].block.hash(), genuine_25.block.hash());
    append(dir.path(), &blocks, TINY_SEGMENT, true);
    // `db check`'s scan names the block; the old version wrote no marker.
    let (_, forged) = scan_block_log_with_bodies(dir.path(), &genesis()).expect("scan");
    assert_eq!(forged, Some(25));
    std::fs::remove_file(dir.path().join(BODIES_CHECKED_FILE)).expect("no marker");

    let recovered = recover(dir.path(), &genesis()).expect("recover repairs");
    assert_eq!(recovered.forged_body_cut, Some(25));
    assert_eq!(recovered.head, blocks[23].block.header, "cut back to 24");
    assert!(dir.path().join(BODIES_CHECKED_FILE).exists());
    assert_eq!(
        replayed(dir.path(), &recovered.index, 1),
        expected(&blocks[..24], 1)
    );
    // The genuine 25 and the rest (fetched from peers) extend the cut log.
    blocks[24] = genuine_25;
    append(dir.path(), &blocks[24..], TINY_SEGMENT, true);
    let recovered = recover(dir.path(), &genesis()).expect("recover");
    assert_eq!(recovered.forged_body_cut, None);
    assert_eq!(recovered.head, blocks[59].block.header);
    let (_, forged) = scan_block_log_with_bodies(dir.path(), &genesis()).expect("scan");
    assert_eq!(forged, None);
}

#[test]
fn a_forged_body_in_the_first_block_of_a_segment_removes_that_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut blocks = chain(&genesis(), 40);
    append(dir.path(), &blocks[..1], TINY_SEGMENT, true);
    let segments = list_segments(dir.path()).expect("list");
    assert_eq!(segments.len(), 1);
    // Find a height that starts a segment once all 40 are written, and forge it.
    let probe = tempfile::tempdir().expect("tempdir");
    append(probe.path(), &blocks, TINY_SEGMENT, true);
    let starts: Vec<Height> = list_segments(probe.path())
        .expect("list")
        .iter()
        .map(|(h, _)| *h)
        .collect();
    let at = starts[2];
    blocks[at as usize - 1]
        .block
        .transactions
        .push(SignedTransaction {
            bytes: vec![1, 2, 3],
        });
    append(dir.path(), &blocks[1..], TINY_SEGMENT, true);
    std::fs::remove_file(dir.path().join(BODIES_CHECKED_FILE)).expect("no marker");
    let recovered = recover(dir.path(), &genesis()).expect("recover repairs");
    assert_eq!(recovered.forged_body_cut, Some(at));
    assert_eq!(recovered.head.height, at - 1);
    let left: Vec<Height> = list_segments(dir.path())
        .expect("list")
        .iter()
        .map(|(h, _)| *h)
        .collect();
    assert_eq!(
        left,
        starts[..2].to_vec(),
        "the forged block's segment is gone"
    );
}
