//! Consensus benchmarks: the IBFT machine's own cost per finalized height, and one simulator
//! seed-run.
//!
//! - `machine/instant`: 4 (and 7) machines with the fast scheme driven through 100 heights by
//!   `sim::instant` (instant, lossless, in-order delivery; no network model, no checkers). The
//!   throughput unit is one finalized height, so criterion prints time per height (for all the
//!   machines together).
//! - `sim/seed_run`: one `honest` simulator run, 4 validators, 50 heights, fast scheme: network
//!   model, trace fingerprint and checkers included. Its inverse is the seed-runs per core
//!   second of `corecell sim`.
//!
//! Run with `cargo bench --bench consensus`. See `perf/RESULTS.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use corecell::sim::instant::drive_instant_fast;
use corecell::sim::{run, RunOptions, Scenario, SchemeChoice};

const HEIGHTS: u64 = 100;

fn machine(c: &mut Criterion) {
    let mut g = c.benchmark_group("machine");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(HEIGHTS));
    for n in [4usize, 7] {
        // Check once, outside the timed loop, that the run really finalizes every height.
        let check = drive_instant_fast(n, HEIGHTS, 1);
        assert_eq!(
            check.heights, HEIGHTS,
            "instant run of {n} stalled: {check:?}"
        );
        g.bench_with_input(BenchmarkId::new("instant", n), &n, |b, &n| {
            b.iter(|| black_box(drive_instant_fast(n, HEIGHTS, 1)))
        });
    }
    g.finish();
}

fn sim(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let mut o = RunOptions::new(Scenario::Honest, 1);
    o.council = Some(4);
    o.committee = Some(4);
    o.heights = 50;
    o.scheme = SchemeChoice::Fast;
    let check = run(&o);
    assert!(check.violations.is_empty(), "{:?}", check.violations);
    g.throughput(Throughput::Elements(1));
    g.bench_function("seed_run/4_validators_50_heights", |b| {
        b.iter(|| black_box(run(&o)))
    });
    g.finish();
}

criterion_group!(benches, machine, sim);
criterion_main!(benches);
