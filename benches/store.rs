//! Block log benchmarks: durable appends through glommio DMA files, and the restart scan.
//!
//! - `append/{empty_block,750_txs_of_110_bytes}`: `BlockLog::append` of one finalized block,
//!   returning after its fdatasync (what the store shard does per commit: rkyv encode, one
//!   DMA write of the partial last page plus the record, fdatasync). Throughput in blocks.
//! - `append_bytes/...`: the same, throughput in record bytes (length + checksum + archive).
//! - `append_all/64_empty_blocks`: 64 blocks in one `append_all` (one write, one fdatasync):
//!   what a group commit would give. Throughput in blocks.
//! - `recover/100000_empty_blocks`: `store::recover` (the restart scan: every record's
//!   checksum, archive validation, limits, chain links; builds the height index) of a data
//!   directory of 100,000 empty blocks, built once in a temporary directory. Page cache warm.
//! - `recover/2000_blocks_750_txs`: the same over 2,000 blocks of 750 transactions (about
//!   180 MB), throughput in bytes: the scan rate a restart of a full chain pays per byte.
//!   `..._cold` evicts the segment from the page cache before each scan (posix_fadvise
//!   DONTNEED on its files only), so the scan reads the disk.
//!
//! Blocks carry a structurally valid commit certificate with a dummy signature (the store does
//! not verify signatures). Data directories are temporary directories under `TMPDIR` (set it to
//! put them on the disk to measure). Building blocks is never timed.
//!
//! Run with `cargo bench --bench store`, one group with e.g. `cargo bench --bench store -- recover`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};

use corecell::store::{self, BlockIndex, BlockLog, SEGMENT_BYTES};
use corecell::types::chain::SignedTransaction;
use corecell::types::{BlockHeader, FinalizedBlock};

/// Blocks built and appended per timed chunk.
const CHUNK: usize = 64;

fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(2 << 20)
        .make()
        .expect("glommio executor")
}

fn genesis() -> BlockHeader {
    store::fixtures::genesis_header()
}

/// The transactions every block of a shape carries.
struct Body {
    transactions: Vec<SignedTransaction>,
}

impl Body {
    fn new(txs: usize, tx_bytes: usize) -> Body {
        let transactions: Vec<SignedTransaction> = (0..txs)
            .map(|i| SignedTransaction {
                bytes: (0..tx_bytes)
                    .map(|k| (i * 31 + k * 7 + 1) as u8 | 1)
                    .collect(),
            })
            .collect();
        Body { transactions }
    }
}

/// `count` blocks after `parent` carrying `body`.
fn blocks_after(parent: &BlockHeader, body: &Body, count: usize) -> Vec<FinalizedBlock> {
    let mut blocks: Vec<FinalizedBlock> = Vec::with_capacity(count);
    for _ in 0..count {
        let parent = blocks.last().map_or(parent, |b| &b.block.header);
        blocks.push(store::fixtures::child_block(
            parent,
            body.transactions.clone(),
        ));
    }
    blocks
}

fn record_bytes(block: &FinalizedBlock) -> u64 {
    (store::RECORD_HEADER_LEN + corecell::types::to_bytes(block).len()) as u64
}

fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("corecell-bench-store-{name}-"))
        .tempdir()
        .expect("temporary directory")
}

/// Times `per_call` blocks per `append_all` call (1 = `append`) onto an open log, building
/// the blocks (untimed) in chunks.
fn bench_appends(
    c: &mut Criterion,
    group: &str,
    name: &str,
    body: &Body,
    per_call: usize,
    throughput: impl Fn(&FinalizedBlock) -> Throughput,
) {
    let ex = executor();
    let dir = temp_dir(name);
    let log = ex
        .run(BlockLog::open(
            dir.path(),
            BlockIndex::new(),
            &genesis(),
            SEGMENT_BYTES,
        ))
        .expect("open block log");
    let mut head = genesis();
    let sample = blocks_after(&head, body, 1);
    let mut g = c.benchmark_group(group);
    g.sample_size(20)
        .measurement_time(Duration::from_secs(6))
        .throughput(throughput(&sample[0]));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let calls = left.min(CHUNK);
                let blocks = blocks_after(&head, body, calls * per_call);
                head = blocks[blocks.len() - 1].block.header.clone();
                let start = Instant::now();
                ex.run(async {
                    for call in blocks.chunks(per_call) {
                        log.append_all(call).await.expect("append");
                    }
                });
                total += start.elapsed();
                left -= calls;
            }
            total
        })
    });
    g.finish();
    ex.run(log.close()).expect("close");
}

fn append(c: &mut Criterion) {
    let empty = Body::new(0, 0);
    let full = Body::new(750, 110);
    for (name, body) in [("empty_block", &empty), ("750_txs_of_110_bytes", &full)] {
        bench_appends(c, "append", name, body, 1, |_| Throughput::Elements(1));
        bench_appends(c, "append_bytes", name, body, 1, |block| {
            Throughput::Bytes(record_bytes(block))
        });
    }
    bench_appends(c, "append_all", "64_empty_blocks", &empty, CHUNK, |_| {
        Throughput::Elements(CHUNK as u64)
    });
}

/// A data directory of `count` blocks carrying `body`, written in batches of 1,000.
fn data_dir(name: &str, body: &Body, count: usize) -> (tempfile::TempDir, u64) {
    let dir = temp_dir(name);
    let ex = executor();
    let started = Instant::now();
    let log = ex
        .run(BlockLog::open(
            dir.path(),
            BlockIndex::new(),
            &genesis(),
            SEGMENT_BYTES,
        ))
        .expect("open block log");
    let mut head = genesis();
    let mut bytes = 0;
    let mut left = count;
    while left > 0 {
        let blocks = blocks_after(&head, body, left.min(1000));
        head = blocks[blocks.len() - 1].block.header.clone();
        bytes += blocks.iter().map(record_bytes).sum::<u64>();
        ex.run(log.append_all(&blocks)).expect("append");
        left -= blocks.len();
    }
    ex.run(log.close()).expect("close");
    eprintln!(
        "{name}: {count} blocks, {bytes} bytes in {} segment(s), built in {:.1?}",
        store::list_segments(dir.path()).expect("segments").len(),
        started.elapsed()
    );
    (dir, bytes)
}

fn recover(c: &mut Criterion) {
    let mut g = c.benchmark_group("recover");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let (small, _) = data_dir("100000_empty_blocks", &Body::new(0, 0), 100_000);
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("100000_empty_blocks", |b| {
        b.iter(|| {
            let recovered = store::recover(small.path(), &genesis()).expect("recover");
            assert_eq!(recovered.head.height, 100_000);
            recovered
        })
    });
    drop(small);
    let (large, bytes) = data_dir("2000_blocks_750_txs", &Body::new(750, 110), 2000);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("2000_blocks_750_txs", |b| {
        b.iter(|| {
            let recovered = store::recover(large.path(), &genesis()).expect("recover");
            assert_eq!(recovered.head.height, 2000);
            recovered
        })
    });
    g.bench_function("2000_blocks_750_txs_cold", |b| {
        b.iter_batched(
            || evict_from_page_cache(large.path()),
            |()| {
                let recovered = store::recover(large.path(), &genesis()).expect("recover");
                assert_eq!(recovered.head.height, 2000);
                recovered
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Drops the page-cache pages of every file in `dir` (only those: the rest of the machine
/// keeps its cache), so the next scan reads from the disk.
fn evict_from_page_cache(dir: &std::path::Path) {
    use std::os::fd::AsRawFd;
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let file = std::fs::File::open(entry.expect("entry").path()).expect("open");
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise");
    }
}

criterion_group!(benches, append, recover);
criterion_main!(benches);
