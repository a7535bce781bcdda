//! The open-loop load generator: batches of transactions sent to CNs' native ingress ports,
//! each batch's scheduled send time recorded, and its fate taken from the node's
//! [`IngressAck`]s. Two workloads:
//!
//! - **`raw`**: opaque transactions of a fixed size, made up as they are sent. They are unique:
//!   `run id (8) | target (4) | sequence (8) | padding`, so no two transactions of a run, or of
//!   two runs, collide in the pools' dedup.
//! - **`transfer`**: signed Ethereum value transfers between the genesis test accounts
//!   ([`test_account_secret`]), all signed before the load starts ([`TransferPlan::sign`]) so
//!   signing costs the generator nothing while it runs. See [`TransferPlan`] for who sends
//!   what to which target.
//!
//! Open loop: batches leave on a fixed schedule (every [`BATCH_INTERVAL`]) whatever the
//! network does; a batch's transactions are due at the schedule's time, and when the sender
//! falls behind its schedule (the socket blocks, or the machine is saturated) the lag is
//! measured and reported, never hidden: latency is counted from the scheduled time, so a
//! late sender shows as latency, and `behind_ms` says by how much it ran late. Each sender
//! also publishes how far through its schedule it has sent, so a sender stuck in a write (a
//! node that stopped reading) shows its growing lag while it is stuck
//! ([`LoadStats::take_behind_window`]), not only once it gets going again. Writes wait at most
//! [`WRITE_POLL`] at a time and give up once the load is stopped, so stopping never waits on a
//! node that does not read.
//!
//! Answers: one batch may get several [`IngressAck`]s (immediate refusals, one per reason with
//! a count; later one FINAL and one DROPPED with their counts); the [`AckLedger`] tracks each
//! open batch until its answers' counts add up to its size. FINAL transactions count as
//! finalized with the latency from the batch's scheduled send time, DROPPED ones as dropped,
//! every other status as rejected under its [`IngressAck::status_name`].
//!
//! Threads: per target, one sender and one receiver (plain threads, not executors: the load
//! generator is not the node). Shared per target: the [`AckLedger`], written before a batch is
//! sent and read when its answers arrive.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_primitives::U256;

use super::report::LatencyHistogram;
use crate::config::genesis::test_account_secret;
use crate::crypto::tx::{address_of_secret, sign_transfer, Transfer, TxType};
use crate::exec::batch_frame;
use crate::exec::mempool::{DEFAULT_MAX_PER_SENDER, DEFAULT_MIN_GAS_PRICE, DEFAULT_NONCE_WINDOW};
use crate::exec::state::TRANSFER_GAS;
use crate::types::chain::SignedTransaction;
use crate::types::frame::{FrameDecoder, Message};
use crate::types::network::{IngressAck, MAX_BATCH_TXS, MAX_BATCH_TX_BYTES};

/// How often a target gets a batch.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(5);
/// A blocked write to a target is retried at this interval, and abandoned once the load stops.
pub const WRITE_POLL: Duration = Duration::from_millis(200);
/// A sender's published progress once it has nothing more to send (finished or failed).
const SENDER_DONE: u64 = u64::MAX;
/// Smallest raw transaction (room for the uniqueness prefix).
pub const MIN_TX_SIZE: usize = 20;
/// The most transfers a run may pre-sign (about 150 bytes of memory each).
pub const MAX_PRESIGNED_TXS: u64 = 5_000_000;
/// Transfers are signed for this long beyond the run's duration, so a run that stops a little
/// late (the caller's stop lands after the duration) still has transactions to send.
pub const SCHEDULE_SLACK: Duration = Duration::from_secs(1);
/// Value of every transfer, in wei.
pub const TRANSFER_VALUE_WEI: u64 = 1;
/// Max fee per gas of every transfer (the gas price of legacy and EIP-2930 ones): twice the
/// pools' minimum, so a rising base fee does not price them out at once.
pub const TRANSFER_MAX_FEE_PER_GAS: u128 = 2 * DEFAULT_MIN_GAS_PRICE;
/// Max priority fee per gas of the EIP-1559 transfers: 1 gkei.
pub const TRANSFER_MAX_PRIORITY_FEE_PER_GAS: u128 = 1_000_000_000;
/// Above this many transactions per second per sender, a sender would have more than half its
/// nonce window ([`DEFAULT_NONCE_WINDOW`]) and pool share ([`DEFAULT_MAX_PER_SENDER`]) pending
/// at about one second of finality: the run warns and suggests more accounts.
pub const MAX_QUIET_SENDER_RATE: u64 = {
    let limit = if DEFAULT_NONCE_WINDOW < DEFAULT_MAX_PER_SENDER as u64 {
        DEFAULT_NONCE_WINDOW
    } else {
        DEFAULT_MAX_PER_SENDER as u64
    };
    limit / 2
};
/// A sender this far behind its schedule is worth a warning: the generator, not only the
/// network, may be what limits the run (its lag is part of the measured latency).
pub const BEHIND_WARNING_MS: u64 = 100;
/// The most error messages a run keeps (the rest are only counted).
pub const MAX_NOTED_ERRORS: usize = 64;
/// Pre-signing hands out work in chunks of this many transactions.
const SIGN_CHUNK: usize = 1024;

/// What to send.
#[derive(Debug)]
pub struct LoadSpec {
    /// Ingress addresses, one connection each.
    pub targets: Vec<SocketAddr>,
    /// The transactions.
    pub workload: LoadWorkload,
}

/// The transactions of a load run.
#[derive(Debug)]
pub enum LoadWorkload {
    /// Opaque transactions made up as they are sent; the rate is split evenly over the
    /// targets.
    Raw {
        /// Transactions per second, in total.
        rate: u64,
        /// Bytes per transaction.
        tx_size: usize,
    },
    /// Pre-signed transfers, one schedule per target (its rate included).
    Transfer(TransferSchedule),
}

/// Who sends what to whom in the `transfer` workload, and how fast.
///
/// The senders are the test accounts `first_account .. first_account + accounts`
/// ([`test_account_secret`]); below, sender `i` (in `0..accounts`) is test account
/// `first_account + i`.
///
/// - Sender `i` sends to sender `(i + 1) mod accounts`, 1 wei, gas limit 21000, max fee
///   [`TRANSFER_MAX_FEE_PER_GAS`], priority fee [`TRANSFER_MAX_PRIORITY_FEE_PER_GAS`], signed
///   for `chain_id`; the type rotates with the nonce (legacy EIP-155, EIP-2930, EIP-1559).
///   Nonces start at `nonce_start` (0 on a fresh genesis; an account that already sent `n`
///   transactions on the chain needs `n`, or the nodes refuse the run's first ones as
///   `nonce-too-low`).
/// - Sender `i` always goes to target `i mod targets`, so one sender's nonces arrive in order
///   at one CN. Target `g`'s senders are `g, g + targets, g + 2 targets, ...` (fewer than
///   `accounts`); call their number `m`.
/// - Transaction `t` of target `g` is sent by its sender number `t mod m` with nonce
///   `nonce_start + t div m`: round robin over the target's senders.
/// - Target `g` gets `rate * m / accounts` transactions per second, so every sender sends at
///   `rate / accounts`; a target without senders gets none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferPlan {
    /// Genesis test accounts taking part
    /// (`test_account_secret(first_account..first_account + accounts)`).
    pub accounts: u64,
    /// The first test account taking part (0 for a fresh chain's first run).
    pub first_account: u64,
    /// Every sender's first nonce (0 for accounts that never sent).
    pub nonce_start: u64,
    /// Chain id the transfers are signed for (the genesis's).
    pub chain_id: u64,
    /// Ingress targets the senders are split over.
    pub targets: u64,
    /// Transactions per second, in total.
    pub rate: u64,
    /// How long the load runs (transfers are signed for [`SCHEDULE_SLACK`] more).
    pub duration: Duration,
}

impl TransferPlan {
    /// Checks the plan before anything is signed: something to send, and at most
    /// [`MAX_PRESIGNED_TXS`] transactions.
    pub fn check(&self) -> Result<(), String> {
        if self.accounts == 0 {
            return Err(
                "the transfer workload needs at least one test account (--accounts)".into(),
            );
        }
        if self.targets == 0 {
            return Err("no ingress target to send to".into());
        }
        if self.chain_id == 0 {
            return Err("the transfer workload needs a non-zero chain id".into());
        }
        if self.rate == 0 || self.duration.is_zero() {
            return Err("the transfer workload needs a rate and a duration above 0".into());
        }
        if self.first_account.checked_add(self.accounts).is_none() {
            return Err(format!(
                "test accounts {} + {} are beyond the last one",
                self.first_account, self.accounts
            ));
        }
        let total = self.total();
        if total > MAX_PRESIGNED_TXS {
            return Err(format!(
                "the transfer workload pre-signs every transaction: {total} for {} tx/s over {} s \
                 (+{} s of slack) is more than the {MAX_PRESIGNED_TXS} this generator holds; \
                 lower --rate or --duration",
                self.rate,
                self.duration.as_secs_f64(),
                SCHEDULE_SLACK.as_secs()
            ));
        }
        if self.nonce_start.checked_add(total).is_none() {
            return Err(format!(
                "--nonce-start {} leaves no room for {total} more nonces",
                self.nonce_start
            ));
        }
        Ok(())
    }

    /// The test account indexes of the senders, in sender order.
    pub fn account_range(&self) -> std::ops::Range<u64> {
        self.first_account..self.first_account.saturating_add(self.accounts)
    }

    /// How many senders target `target` has.
    pub fn senders(&self, target: u64) -> u64 {
        if target >= self.targets || target >= self.accounts {
            return 0;
        }
        (self.accounts - target).div_ceil(self.targets)
    }

    /// Transactions per second target `target` gets.
    pub fn target_rate(&self, target: u64) -> f64 {
        if self.accounts == 0 {
            return 0.0;
        }
        self.rate as f64 * self.senders(target) as f64 / self.accounts as f64
    }

    /// Transactions per second each sender sends.
    pub fn sender_rate(&self) -> f64 {
        self.rate as f64 / self.accounts.max(1) as f64
    }

    /// How many transactions target `target`'s schedule holds: what its rate owes by the end
    /// of the duration plus [`SCHEDULE_SLACK`] (the same rounding as the sender's).
    pub fn target_len(&self, target: u64) -> u64 {
        due_by(self.target_rate(target), self.duration + SCHEDULE_SLACK)
    }

    /// Transactions in all the targets' schedules.
    pub fn total(&self) -> u64 {
        (0..self.targets.min(self.accounts))
            .map(|g| self.target_len(g))
            .fold(0u64, u64::saturating_add)
    }

    /// The sender (test account index, `first_account` included) and nonce (`nonce_start`
    /// included) of transaction `t` of target `target`; `None` when the target has no senders.
    pub fn slot(&self, target: u64, t: u64) -> Option<(u64, u64)> {
        let senders = self.senders(target);
        if senders == 0 {
            return None;
        }
        let sender = target + (t % senders) * self.targets;
        Some((
            self.first_account.saturating_add(sender),
            self.nonce_start.saturating_add(t / senders),
        ))
    }

    /// The transaction type of a nonce: legacy, EIP-2930, EIP-1559 in turn.
    pub fn tx_type(nonce: u64) -> TxType {
        match nonce % 3 {
            0 => TxType::Legacy,
            1 => TxType::Eip2930,
            _ => TxType::Eip1559,
        }
    }

    /// The transfer a sender signs with `nonce`, to `recipient`'s address.
    pub fn transfer(&self, nonce: u64, recipient: [u8; 20]) -> Transfer {
        Transfer {
            chain_id: self.chain_id,
            nonce,
            to: recipient,
            value: U256::from(TRANSFER_VALUE_WEI),
            gas_limit: TRANSFER_GAS,
            max_fee_per_gas: TRANSFER_MAX_FEE_PER_GAS,
            max_priority_fee_per_gas: TRANSFER_MAX_PRIORITY_FEE_PER_GAS,
        }
    }

    /// A warning when each sender would send faster than [`MAX_QUIET_SENDER_RATE`]: at about a
    /// second of finality its pending transactions would reach the pool's per-sender cap and
    /// nonce window, and the pool would refuse the rest (`sender-full`, `nonce-too-high`).
    pub fn sender_rate_warning(&self) -> Option<String> {
        let per_sender = self.sender_rate();
        if per_sender <= MAX_QUIET_SENDER_RATE as f64 {
            return None;
        }
        let enough = self.rate.div_ceil(MAX_QUIET_SENDER_RATE);
        Some(format!(
            "{per_sender:.1} tx/s per sender ({} tx/s over {} accounts): at ~1 s finality a \
             sender would have more pending than the pool's {DEFAULT_MAX_PER_SENDER} per sender \
             and {DEFAULT_NONCE_WINDOW}-nonce window allow, so expect sender-full and \
             nonce-too-high refusals; use --accounts {enough} or more",
            self.rate, self.accounts
        ))
    }

    /// Signs every target's schedule on all cores, printing progress when `progress` is set.
    pub fn sign(&self, progress: bool) -> Result<TransferSchedule, String> {
        self.check()?;
        let started = Instant::now();
        let accounts = usize::try_from(self.accounts).map_err(|e| e.to_string())?;
        // keys[i] is sender i's: test account first_account + i.
        let keys = run_parallel(accounts, None, |i| {
            let account = self.first_account + i as u64;
            let secret = test_account_secret(account);
            let address =
                address_of_secret(&secret).map_err(|e| format!("test account {account}: {e}"))?;
            Ok((secret, address))
        })?;
        // Target g's transactions are entries starts[g]..starts[g + 1] of one flat list.
        let mut starts = vec![0u64];
        for g in 0..self.targets {
            let end = starts[starts.len() - 1] + self.target_len(g);
            starts.push(end);
        }
        let total = usize::try_from(starts[starts.len() - 1]).map_err(|e| e.to_string())?;
        let label = progress.then(|| format!("signing {total} transfers"));
        let mut flat = run_parallel(total, label.as_deref(), |k| {
            let k = k as u64;
            let target = (starts.partition_point(|&s| s <= k) - 1) as u64;
            let (sender, nonce) = self
                .slot(target, k - starts[target as usize])
                .ok_or_else(|| format!("target {target} has transactions but no sender"))?;
            let sender = sender - self.first_account;
            let (secret, _) = &keys[sender as usize];
            let (_, recipient) = keys[((sender + 1) % self.accounts) as usize];
            let bytes = sign_transfer(
                secret,
                Self::tx_type(nonce),
                &self.transfer(nonce, recipient),
            )
            .map_err(|e| {
                format!(
                    "signing nonce {nonce} of test account {}: {e}",
                    self.first_account + sender
                )
            })?;
            Ok(SignedTransaction { bytes })
        })?;
        let bytes: u64 = flat.iter().map(|t| t.bytes.len() as u64).sum();
        let mut targets = Vec::with_capacity(self.targets as usize);
        for g in (0..self.targets).rev() {
            let transactions = flat.split_off(starts[g as usize] as usize);
            targets.push(TargetSchedule {
                rate: self.target_rate(g),
                transactions,
            });
        }
        targets.reverse();
        if progress {
            println!(
                "signed {total} transfers from test accounts {}..{} (nonces from {}) in {:.1} s",
                self.first_account,
                self.first_account + self.accounts,
                self.nonce_start,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(TransferSchedule {
            targets,
            bytes,
            plan: *self,
        })
    }
}

/// Transactions a rate owes after `elapsed` (rounded down).
fn due_by(rate: f64, elapsed: Duration) -> u64 {
    (rate * elapsed.as_secs_f64()) as u64
}

/// `make(0..len)` computed on all cores in chunks of [`SIGN_CHUNK`], in order; with a label,
/// prints `"<label>... N%"` about once a second and stops at the first error.
fn run_parallel<T: Send>(
    len: usize,
    label: Option<&str>,
    make: impl Fn(usize) -> Result<T, String> + Sync,
) -> Result<Vec<T>, String> {
    let chunks = len.div_ceil(SIGN_CHUNK);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(chunks)
        .max(1);
    let next_chunk = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || -> Result<Vec<(usize, Vec<T>)>, String> {
        let mut mine = Vec::new();
        // Each pass claims a distinct chunk: at most `chunks` passes in all.
        for _ in 0..chunks {
            let c = next_chunk.fetch_add(1, Relaxed);
            if c >= chunks || failed.load(Relaxed) {
                break;
            }
            let range = c * SIGN_CHUNK..((c + 1) * SIGN_CHUNK).min(len);
            let n = range.len();
            let items = range.map(&make).collect::<Result<Vec<T>, String>>();
            match items {
                Ok(items) => mine.push((c, items)),
                Err(e) => {
                    failed.store(true, Relaxed);
                    return Err(e);
                }
            }
            done.fetch_add(n, Relaxed);
        }
        Ok(mine)
    };
    let results = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
        let mut last_print = Instant::now();
        // Ends when the workers do (their work is bounded).
        while !workers.iter().all(|w| w.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            if let Some(label) = label {
                if last_print.elapsed() >= Duration::from_secs(1) {
                    println!("{label}... {}%", done.load(Relaxed) * 100 / len.max(1));
                    last_print = Instant::now();
                }
            }
        }
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a signing thread panicked".into()))
            })
            .collect::<Vec<_>>()
    });
    let mut chunks_done = Vec::with_capacity(chunks);
    for r in results {
        chunks_done.extend(r?);
    }
    chunks_done.sort_unstable_by_key(|(c, _)| *c);
    let mut out = Vec::with_capacity(len);
    for (_, items) in chunks_done {
        out.extend(items);
    }
    if out.len() != len {
        return Err(format!("computed {} of {len} items", out.len()));
    }
    Ok(out)
}

/// Pre-signed transfers, per target, in sending order (see [`TransferPlan`]).
#[derive(Debug)]
pub struct TransferSchedule {
    targets: Vec<TargetSchedule>,
    bytes: u64,
    plan: TransferPlan,
}

#[derive(Debug)]
struct TargetSchedule {
    /// Transactions per second.
    rate: f64,
    transactions: Vec<SignedTransaction>,
}

impl TransferSchedule {
    /// The plan it was signed from.
    pub fn plan(&self) -> &TransferPlan {
        &self.plan
    }

    /// Transactions in all targets' schedules.
    pub fn len(&self) -> usize {
        self.targets.iter().map(|t| t.transactions.len()).sum()
    }

    /// Whether no target has anything to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The mean size of a signed transfer, bytes (0 when empty).
    pub fn mean_tx_bytes(&self) -> usize {
        self.bytes.checked_div(self.len() as u64).unwrap_or(0) as usize
    }

    /// Target `target`'s transactions in sending order.
    pub fn target(&self, target: usize) -> &[SignedTransaction] {
        self.targets
            .get(target)
            .map_or(&[], |t| t.transactions.as_slice())
    }
}

/// Live and final figures of a load run, shared with the caller.
#[derive(Debug)]
pub struct LoadStats {
    /// Transactions sent.
    pub submitted: AtomicU64,
    /// Transactions acknowledged final.
    pub finalized: AtomicU64,
    /// Transactions admitted, then dropped by a node's pool before any block included them.
    pub dropped: AtomicU64,
    /// Transactions refused at once, by [`IngressAck`] status code.
    rejected: [AtomicU64; 256],
    /// Acknowledged transactions that belong to no open batch (a node answered a batch that
    /// was never sent or was already settled); counted nowhere else.
    pub unmatched: AtomicU64,
    /// Largest lag of a sender behind its schedule since the start, in ms.
    pub behind_ms: AtomicU64,
    /// Largest lag of a sender behind its schedule since the last
    /// [`LoadStats::take_behind_window`], in ms.
    behind_window_ms: AtomicU64,
    /// When the load started: the senders' schedules count from here.
    epoch: Instant,
    /// Per sender: the scheduled time, in microseconds since `epoch`, up to which it has sent
    /// everything ([`SENDER_DONE`] once it has nothing more to send).
    sent_through_us: Vec<AtomicU64>,
    /// Lowest block height a FINAL answer named (`u64::MAX` before the first).
    lowest_final_height: AtomicU64,
    /// Highest block height a FINAL answer named (0 before the first).
    highest_final_height: AtomicU64,
    /// Finality latency of every final transaction since the start.
    pub latency: Mutex<LatencyHistogram>,
    /// Finality latency since the last [`LoadStats::take_window`].
    pub window: Mutex<LatencyHistogram>,
    /// Connection and protocol errors seen (the first [`MAX_NOTED_ERRORS`]).
    pub errors: Mutex<Vec<String>>,
    /// Errors beyond [`MAX_NOTED_ERRORS`], only counted.
    pub errors_not_kept: AtomicU64,
}

impl Default for LoadStats {
    fn default() -> Self {
        LoadStats::for_senders(0)
    }
}

impl LoadStats {
    /// Figures of a load of `senders` senders (one per target) starting now.
    pub fn for_senders(senders: usize) -> LoadStats {
        LoadStats {
            epoch: Instant::now(),
            sent_through_us: (0..senders).map(|_| AtomicU64::new(0)).collect(),
            submitted: AtomicU64::new(0),
            finalized: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            unmatched: AtomicU64::new(0),
            behind_ms: AtomicU64::new(0),
            behind_window_ms: AtomicU64::new(0),
            lowest_final_height: AtomicU64::new(u64::MAX),
            highest_final_height: AtomicU64::new(0),
            latency: Mutex::default(),
            window: Mutex::default(),
            errors: Mutex::default(),
            errors_not_kept: AtomicU64::new(0),
        }
    }

    /// The latency histogram of the last window, reset.
    pub fn take_window(&self) -> LatencyHistogram {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *w)
    }

    /// The largest lag behind schedule since the last call, in ms, reset; a sender stuck in
    /// a write counts with its lag so far ([`LoadStats::lag_now_ms`]), which also goes into
    /// `behind_ms`.
    pub fn take_behind_window(&self) -> u64 {
        let now = self.lag_now_ms();
        self.behind_ms.fetch_max(now, Relaxed);
        self.behind_window_ms.swap(0, Relaxed).max(now)
    }

    /// How far the most belated sender is behind its schedule right now, in ms: the time since
    /// the first batch it has not finished sending was due (0 for senders that keep up, have
    /// finished or have failed).
    pub fn lag_now_ms(&self) -> u64 {
        let now_us = self.epoch.elapsed().as_micros() as u64;
        let interval_us = BATCH_INTERVAL.as_micros() as u64;
        self.sent_through_us
            .iter()
            .map(|s| s.load(Relaxed))
            .filter(|&through| through != SENDER_DONE)
            .map(|through| now_us.saturating_sub(through.saturating_add(interval_us)) / 1000)
            .max()
            .unwrap_or(0)
    }

    /// Records that sender `sender` has sent everything due by `due`.
    fn sent_through(&self, sender: usize, due: Instant) {
        if let Some(slot) = self.sent_through_us.get(sender) {
            slot.store(
                due.saturating_duration_since(self.epoch).as_micros() as u64,
                Relaxed,
            );
        }
    }

    /// Records that sender `sender` has nothing more to send.
    fn sender_done(&self, sender: usize) {
        if let Some(slot) = self.sent_through_us.get(sender) {
            slot.store(SENDER_DONE, Relaxed);
        }
    }

    /// Records that a sender ran `ms` behind its schedule.
    fn note_behind(&self, ms: u64) {
        self.behind_ms.fetch_max(ms, Relaxed);
        self.behind_window_ms.fetch_max(ms, Relaxed);
    }

    /// The lowest and highest block heights the nodes' FINAL answers named; `None` before the
    /// first.
    pub fn final_heights(&self) -> Option<(u64, u64)> {
        let highest = self.highest_final_height.load(Relaxed);
        let lowest = self.lowest_final_height.load(Relaxed);
        (lowest <= highest).then_some((lowest, highest))
    }

    /// Transactions refused, all reasons together.
    pub fn rejected_total(&self) -> u64 {
        self.rejected
            .iter()
            .map(|c| c.load(Relaxed))
            .fold(0, u64::saturating_add)
    }

    /// Transactions refused, by [`IngressAck::status_name`] (reasons never seen are absent).
    pub fn rejected_by_reason(&self) -> BTreeMap<String, u64> {
        let mut by_reason = BTreeMap::new();
        for (status, count) in self.rejected.iter().enumerate() {
            let count = count.load(Relaxed);
            if count > 0 {
                let total: &mut u64 = by_reason
                    .entry(IngressAck::status_name(status as u8).to_string())
                    .or_default();
                *total = total.saturating_add(count);
            }
        }
        by_reason
    }

    /// Keeps an error message (the first [`MAX_NOTED_ERRORS`]; later ones are only counted).
    pub fn note_error(&self, message: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < MAX_NOTED_ERRORS {
            errors.push(message);
        } else {
            self.errors_not_kept.fetch_add(1, Relaxed);
        }
    }

    /// Counts one answer of a node, given what the ledger made of it, at `now`; `height` is
    /// the answer's block height (meaningful for FINAL).
    fn record(&self, status: u8, height: u64, answered: &Answered, now: Instant) {
        let count = u64::from(answered.counted);
        match status {
            IngressAck::FINAL => {
                self.finalized.fetch_add(count, Relaxed);
                if count > 0 {
                    self.lowest_final_height.fetch_min(height, Relaxed);
                    self.highest_final_height.fetch_max(height, Relaxed);
                }
                if let Some(due) = answered.due {
                    let us = now.saturating_duration_since(due).as_micros() as u64;
                    if let Ok(mut h) = self.latency.lock() {
                        h.record_n(us, count);
                    }
                    if let Ok(mut h) = self.window.lock() {
                        h.record_n(us, count);
                    }
                }
            }
            IngressAck::DROPPED => {
                self.dropped.fetch_add(count, Relaxed);
            }
            other => {
                self.rejected[usize::from(other)].fetch_add(count, Relaxed);
            }
        }
        self.unmatched
            .fetch_add(u64::from(answered.unmatched), Relaxed);
    }
}

/// The batches of one connection that are not settled yet: sent, and not all their
/// transactions answered.
#[derive(Debug, Default)]
pub struct AckLedger {
    open: HashMap<u64, OpenBatch>,
}

#[derive(Debug, Clone, Copy)]
struct OpenBatch {
    /// When the batch was due to be sent (latency counts from here).
    due: Instant,
    /// Its transactions.
    size: u32,
    /// How many of them an answer has covered.
    answered: u32,
}

/// What one answer meant for its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The batch's scheduled send time; `None` when the batch is not open.
    pub due: Option<Instant>,
    /// Transactions of the answer that count (at most the batch's unanswered ones).
    pub counted: u32,
    /// Transactions of the answer beyond the batch's unanswered ones, or of an answer to a
    /// batch that is not open.
    pub unmatched: u32,
    /// Whether the batch is now settled (every transaction answered).
    pub settled: bool,
}

impl AckLedger {
    /// Records batch `batch_id` of `size` transactions, due at `due`, before it is sent.
    pub fn sent(&mut self, batch_id: u64, due: Instant, size: u32) {
        self.open.insert(
            batch_id,
            OpenBatch {
                due,
                size,
                answered: 0,
            },
        );
    }

    /// Takes an answer about `count` transactions of batch `batch_id`; the batch is forgotten
    /// once its answers' counts add up to its size.
    pub fn answer(&mut self, batch_id: u64, count: u32) -> Answered {
        let Some(batch) = self.open.get_mut(&batch_id) else {
            return Answered {
                due: None,
                counted: 0,
                unmatched: count,
                settled: false,
            };
        };
        let counted = count.min(batch.size - batch.answered);
        batch.answered += counted;
        let answered = Answered {
            due: Some(batch.due),
            counted,
            unmatched: count - counted,
            settled: batch.answered == batch.size,
        };
        if answered.settled {
            self.open.remove(&batch_id);
        }
        answered
    }

    /// Batches sent and not settled.
    pub fn open_batches(&self) -> usize {
        self.open.len()
    }
}

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Figures.
    pub stats: Arc<LoadStats>,
}

impl Load {
    /// Connects to every target and starts sending.
    pub fn start(spec: LoadSpec) -> Result<Load, String> {
        if spec.targets.is_empty() {
            return Err("no ingress target to send to".into());
        }
        let sources: Vec<(f64, TxSource)> = match spec.workload {
            LoadWorkload::Raw { rate, tx_size } => {
                if !(MIN_TX_SIZE..=crate::types::MAX_TX_BYTES).contains(&tx_size) {
                    return Err(format!(
                        "--tx-size {tx_size} is outside {MIN_TX_SIZE}..={}",
                        crate::types::MAX_TX_BYTES
                    ));
                }
                let mut run_id = [0u8; 8];
                getrandom::fill(&mut run_id).map_err(|e| format!("no randomness: {e}"))?;
                let per_target = rate as f64 / spec.targets.len() as f64;
                (0..spec.targets.len())
                    .map(|_| (per_target, TxSource::Raw { run_id, tx_size }))
                    .collect()
            }
            LoadWorkload::Transfer(schedule) => {
                if schedule.targets.len() != spec.targets.len() {
                    return Err(format!(
                        "the transfers were signed for {} targets, not {}",
                        schedule.targets.len(),
                        spec.targets.len()
                    ));
                }
                schedule
                    .targets
                    .into_iter()
                    .map(|t| (t.rate, TxSource::Presigned(t.transactions)))
                    .collect()
            }
        };
        // Connect everywhere first, so every schedule starts at the same moment.
        let mut streams = Vec::with_capacity(spec.targets.len());
        for addr in &spec.targets {
            let stream = TcpStream::connect_timeout(addr, Duration::from_secs(5))
                .map_err(|e| format!("connecting to ingress {addr}: {e}"))?;
            let _ = stream.set_nodelay(true);
            stream
                .set_write_timeout(Some(WRITE_POLL))
                .map_err(|e| format!("ingress {addr}: {e}"))?;
            streams.push(stream);
        }
        let stats = Arc::new(LoadStats::for_senders(spec.targets.len()));
        let start = stats.epoch;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (t, ((addr, stream), (rate, source))) in
            spec.targets.iter().zip(streams).zip(sources).enumerate()
        {
            let reader = stream
                .try_clone()
                .map_err(|e| format!("ingress {addr}: {e}"))?;
            let ledger: Arc<Mutex<AckLedger>> = Arc::default();
            let sender = Sender {
                stream,
                target: t as u32,
                rate,
                source,
                ledger: ledger.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                start,
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("load-send-{t}"))
                    .spawn(move || sender.run())
                    .map_err(|e| e.to_string())?,
            );
            let (stats, stop, addr) = (stats.clone(), stop.clone(), *addr);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("load-recv-{t}"))
                    .spawn(move || receive(reader, addr, ledger, stats, stop))
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(Load {
            stop,
            threads,
            stats,
        })
    }

    /// Stops sending (answers still in flight are not waited for) and joins the threads.
    pub fn stop(mut self) -> Arc<LoadStats> {
        self.stop.store(true, Relaxed);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        self.stats.clone()
    }
}

impl Drop for Load {
    /// A load dropped without [`Load::stop`] (a run that failed half-way) still stops: its
    /// threads see the flag within a batch interval or a read timeout and end on their own.
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// Where a sender's transactions come from.
enum TxSource {
    /// Made up as they are sent: `tx_size` bytes, unique by run id, target and sequence.
    Raw { run_id: [u8; 8], tx_size: usize },
    /// Signed before the load, sent in order; each is moved out when sent.
    Presigned(Vec<SignedTransaction>),
}

impl TxSource {
    /// How many transactions there are to send.
    fn limit(&self) -> u64 {
        match self {
            TxSource::Raw { .. } => u64::MAX,
            TxSource::Presigned(txs) => txs.len() as u64,
        }
    }

    /// The most transactions a batch may hold within the batch limits.
    fn max_per_batch(&self) -> usize {
        let longest = match self {
            TxSource::Raw { tx_size, .. } => *tx_size,
            TxSource::Presigned(txs) => txs.iter().map(|t| t.bytes.len()).max().unwrap_or(1),
        };
        MAX_BATCH_TXS
            .min(MAX_BATCH_TX_BYTES / longest.max(1))
            .max(1)
    }

    /// Transactions `first..first + n` of this source (`first + n <= limit()`).
    fn take(&mut self, target: u32, first: u64, n: usize) -> Vec<SignedTransaction> {
        match self {
            TxSource::Raw { run_id, tx_size } => (first..first + n as u64)
                .map(|seq| {
                    let mut bytes = vec![0x5a; *tx_size];
                    bytes[..8].copy_from_slice(run_id);
                    bytes[8..12].copy_from_slice(&target.to_be_bytes());
                    bytes[12..20].copy_from_slice(&seq.to_be_bytes());
                    SignedTransaction { bytes }
                })
                .collect(),
            TxSource::Presigned(txs) => {
                let first = first as usize;
                txs[first..first + n]
                    .iter_mut()
                    .map(|t| SignedTransaction {
                        bytes: std::mem::take(&mut t.bytes),
                    })
                    .collect()
            }
        }
    }
}

struct Sender {
    stream: TcpStream,
    target: u32,
    /// Transactions per second.
    rate: f64,
    source: TxSource,
    ledger: Arc<Mutex<AckLedger>>,
    stats: Arc<LoadStats>,
    stop: Arc<AtomicBool>,
    start: Instant,
}

impl Sender {
    fn run(self) {
        let (stats, target) = (self.stats.clone(), self.target as usize);
        self.send();
        stats.sender_done(target);
    }

    fn send(mut self) {
        let max_per_batch = self.source.max_per_batch();
        let limit = self.source.limit();
        let mut seq: u64 = 0;
        let mut batch_id: u64 = 0;
        let mut tick: u32 = 0;
        while !self.stop.load(Relaxed) {
            if seq >= limit {
                // A target without senders (fewer accounts than targets) has nothing to say.
                if limit > 0 {
                    self.stats.note_error(format!(
                        "target {} sent its whole schedule ({limit} transactions) before the load stopped",
                        self.target
                    ));
                }
                self.stats.sender_done(self.target as usize);
                while !self.stop.load(Relaxed) {
                    std::thread::sleep(BATCH_INTERVAL);
                }
                break;
            }
            tick += 1;
            let due = self.start + BATCH_INTERVAL * tick;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else {
                self.stats.note_behind((now - due).as_millis() as u64);
            }
            // Transactions due by this tick, minus those already sent.
            let target_total = due_by(self.rate, BATCH_INTERVAL * tick).min(limit);
            let mut owed = target_total.saturating_sub(seq);
            while owed > 0 {
                let n = owed.min(max_per_batch as u64) as usize;
                let txs = self.source.take(self.target, seq, n);
                let frame = batch_frame(batch_id, txs);
                self.ledger
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .sent(batch_id, due, n as u32);
                match write_until_stopped(&mut self.stream, &frame, &self.stop) {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        self.stats
                            .note_error(format!("sending to target {}: {e}", self.target));
                        return;
                    }
                }
                self.stats.submitted.fetch_add(n as u64, Relaxed);
                seq += n as u64;
                batch_id += 1;
                owed -= n as u64;
            }
            self.stats.sent_through(self.target as usize, due);
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

/// Writes all of `bytes`, waiting on a node that does not read [`WRITE_POLL`] at a time:
/// `Ok(true)` when written, `Ok(false)` when the load was stopped first (the rest is not
/// sent), an error when the connection failed.
fn write_until_stopped(
    stream: &mut TcpStream,
    bytes: &[u8],
    stop: &AtomicBool,
) -> std::io::Result<bool> {
    let mut written = 0;
    // Each pass writes something or waits at most WRITE_POLL; the loop ends at the latest one
    // poll after the stop.
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                if stop.load(Relaxed) {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn receive(
    mut stream: TcpStream,
    addr: SocketAddr,
    ledger: Arc<Mutex<AckLedger>>,
    stats: Arc<LoadStats>,
    stop: Arc<AtomicBool>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Ends when the node closes the connection, on an error, or within a read timeout of stop.
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Relaxed) {
                    return;
                }
                continue;
            }
            Err(e) => {
                if !stop.load(Relaxed) {
                    stats.note_error(format!("reading from {addr}: {e}"));
                }
                return;
            }
        };
        let now = Instant::now();
        let mut input = &buf[..n];
        loop {
            let frame = match decoder.decode(&mut input) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    stats.note_error(format!("bad frame from {addr}: {e}"));
                    return;
                }
            };
            let Ok(Message::IngressAck(ack)) = frame.message() else {
                stats.note_error(format!(
                    "{addr} sent a {} frame on the ingress port",
                    frame.kind.name()
                ));
                return;
            };
            let ack = IngressAck {
                batch_id: ack.batch_id.to_native(),
                status: ack.status,
                height: ack.height.to_native(),
                count: ack.count.to_native(),
            };
            account_answer(&ack, now, &ledger, &stats, addr);
        }
    }
}

/// Counts one answer from the node at `addr` against its batch.
fn account_answer(
    ack: &IngressAck,
    now: Instant,
    ledger: &Mutex<AckLedger>,
    stats: &LoadStats,
    addr: SocketAddr,
) {
    let answered = ledger
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .answer(ack.batch_id, ack.count);
    if answered.unmatched > 0 {
        stats.note_error(format!(
            "{addr} answered {} transactions of batch {} ({}) that were not outstanding",
            answered.unmatched,
            ack.batch_id,
            IngressAck::status_name(ack.status)
        ));
    }
    stats.record(ack.status, ack.height, &answered, now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tx::decode_transaction;
    use std::collections::BTreeSet;

    fn plan(accounts: u64, targets: u64, rate: u64, secs: u64) -> TransferPlan {
        TransferPlan {
            accounts,
            first_account: 0,
            nonce_start: 0,
            chain_id: 1001,
            targets,
            rate,
            duration: Duration::from_secs(secs),
        }
    }

    #[test]
    fn senders_are_partitioned_over_targets_and_nonces_are_contiguous() {
        for (accounts, targets) in [(10, 3), (7, 7), (5, 8), (1000, 4), (1, 1)] {
            let p = plan(accounts, targets, 100, 2);
            // Per sender: the target it was seen at and the nonces it got, in schedule order.
            let mut seen: HashMap<u64, (u64, Vec<u64>)> = HashMap::new();
            for g in 0..targets {
                let m = p.senders(g);
                // Cover several rounds of the target's senders.
                for t in 0..m * 5 {
                    let (sender, nonce) = p.slot(g, t).expect("a target with senders");
                    assert!(sender < accounts);
                    assert_eq!(sender % targets, g, "sender {sender} at target {g}");
                    let entry = seen.entry(sender).or_insert((g, Vec::new()));
                    assert_eq!(entry.0, g, "sender {sender} at two targets");
                    entry.1.push(nonce);
                }
                if m == 0 {
                    assert_eq!(p.slot(g, 0), None);
                    assert_eq!(p.target_rate(g), 0.0);
                }
            }
            assert_eq!(
                seen.keys().copied().collect::<BTreeSet<_>>(),
                (0..accounts).collect::<BTreeSet<_>>(),
                "every account sends, at exactly one target ({accounts} over {targets})"
            );
            for (sender, (_, nonces)) in &seen {
                assert_eq!(nonces, &(0..5).collect::<Vec<u64>>(), "sender {sender}");
            }
            let sum: u64 = (0..targets).map(|g| p.senders(g)).sum();
            assert_eq!(sum, accounts);
            let rates: f64 = (0..targets).map(|g| p.target_rate(g)).sum();
            assert!((rates - 100.0).abs() < 1e-9, "rates add up to the total");
        }
    }

    #[test]
    fn schedule_round_robins_over_a_targets_senders() {
        let p = plan(10, 3, 100, 1);
        // Target 1's senders: 1, 4, 7.
        let slots: Vec<_> = (0..7).map(|t| p.slot(1, t).expect("senders")).collect();
        assert_eq!(
            slots,
            [(1, 0), (4, 0), (7, 0), (1, 1), (4, 1), (7, 1), (1, 2)]
        );
        // Target 0 has 4 senders of 10 accounts: 40 tx/s, for 1 s + 1 s of slack.
        assert_eq!(p.senders(0), 4);
        assert_eq!(p.target_len(0), 80);
        assert_eq!(p.total(), 80 + 60 + 60);
    }

    #[test]
    fn signed_schedule_decodes_to_the_planned_transfers() {
        let p = plan(5, 2, 30, 1);
        let schedule = p.sign(false).expect("signs");
        assert_eq!(schedule.len() as u64, p.total());
        assert_eq!(schedule.len(), 36 + 24);
        let address = |i: u64| address_of_secret(&test_account_secret(i)).expect("valid key");
        let mut types = BTreeSet::new();
        for g in 0..2u64 {
            let txs = schedule.target(g as usize);
            assert_eq!(txs.len() as u64, p.target_len(g));
            for (t, tx) in txs.iter().enumerate() {
                let (sender, nonce) = p.slot(g, t as u64).expect("senders");
                let d = decode_transaction(&tx.bytes).expect("decodes");
                assert_eq!(d.sender, address(sender), "target {g} tx {t}");
                assert_eq!(d.nonce, nonce);
                assert_eq!(d.chain_id, 1001);
                assert_eq!(d.to, Some(address((sender + 1) % 5)));
                assert_eq!(d.value, U256::from(1u64));
                assert_eq!(d.gas_limit, 21_000);
                assert_eq!(d.max_fee_per_gas, 50_000_000_000);
                assert_eq!(d.tx_type, TransferPlan::tx_type(nonce));
                if d.tx_type == TxType::Eip1559 {
                    assert_eq!(d.max_priority_fee_per_gas, 1_000_000_000);
                }
                types.insert(d.tx_type.name());
            }
        }
        assert_eq!(types.len(), 3, "all three types: {types:?}");
        let mean = schedule.mean_tx_bytes();
        assert!((100..130).contains(&mean), "mean transfer size {mean}");
        assert!(schedule.target(2).is_empty());
    }

    #[test]
    fn a_plan_can_start_at_other_accounts_and_nonces() {
        let p = TransferPlan {
            first_account: 50,
            nonce_start: 7,
            ..plan(4, 2, 40, 1)
        };
        // Target 1's senders are accounts 51 and 53, from nonce 7.
        let slots: Vec<_> = (0..4).map(|t| p.slot(1, t).expect("senders")).collect();
        assert_eq!(slots, [(51, 7), (53, 7), (51, 8), (53, 8)]);
        assert_eq!(p.account_range(), 50..54);
        let schedule = p.sign(false).expect("signs");
        let address = |i: u64| address_of_secret(&test_account_secret(i)).expect("valid key");
        for g in 0..2u64 {
            for (t, tx) in schedule.target(g as usize).iter().enumerate() {
                let (sender, nonce) = p.slot(g, t as u64).expect("senders");
                let d = decode_transaction(&tx.bytes).expect("decodes");
                assert_eq!(d.sender, address(sender));
                assert_eq!(d.nonce, nonce);
                // Recipients stay inside the plan's accounts: 53 pays 50.
                let next = 50 + (sender - 50 + 1) % 4;
                assert_eq!(d.to, Some(address(next)));
                assert_eq!(d.tx_type, TransferPlan::tx_type(nonce));
            }
        }
        let past_the_end = TransferPlan {
            first_account: u64::MAX - 2,
            ..p
        };
        assert!(past_the_end.check().is_err());
        let no_nonces_left = TransferPlan {
            nonce_start: u64::MAX - 5,
            ..p
        };
        assert!(no_nonces_left
            .check()
            .expect_err("overflow")
            .contains("--nonce-start"));
    }

    #[test]
    fn lag_windows_reset_and_final_heights_span_the_answers() {
        let stats = LoadStats::default();
        assert_eq!(stats.final_heights(), None);
        stats.note_behind(30);
        stats.note_behind(12);
        assert_eq!(stats.take_behind_window(), 30);
        assert_eq!(stats.take_behind_window(), 0);
        stats.note_behind(5);
        assert_eq!(stats.take_behind_window(), 5);
        assert_eq!(
            stats.behind_ms.load(Relaxed),
            30,
            "the run's largest lag stays"
        );

        let ledger = Mutex::new(AckLedger::default());
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("address");
        let t0 = Instant::now();
        for id in 0..3 {
            ledger.lock().expect("lock").sent(id, t0, 2);
        }
        let ack = |batch_id, status, height| IngressAck {
            batch_id,
            status,
            height,
            count: 2,
        };
        account_answer(&ack(0, IngressAck::FINAL, 12), t0, &ledger, &stats, addr);
        account_answer(&ack(1, IngressAck::FINAL, 10), t0, &ledger, &stats, addr);
        // Refusals and drops carry no block height that counts.
        account_answer(&ack(2, IngressAck::DROPPED, 99), t0, &ledger, &stats, addr);
        assert_eq!(stats.final_heights(), Some((10, 12)));
    }

    #[test]
    fn plan_refuses_what_it_cannot_sign_and_warns_about_fast_senders() {
        assert!(plan(1000, 4, 10_000, 30).check().is_ok());
        let too_many = plan(1000, 4, 1_000_000, 60).check().expect_err("too many");
        assert!(
            too_many.contains("lower --rate or --duration") && too_many.contains("61000000"),
            "{too_many}"
        );
        assert!(plan(0, 4, 100, 1).check().is_err());
        assert!(plan(10, 0, 100, 1).check().is_err());
        assert!(plan(10, 4, 0, 1).check().is_err());
        assert!(plan(10, 4, 100, 0).check().is_err());

        assert_eq!(plan(1000, 4, 32_000, 1).sender_rate_warning(), None);
        let warning = plan(16, 4, 10_000, 1)
            .sender_rate_warning()
            .expect("625 tx/s per sender");
        assert!(warning.contains("625.0 tx/s per sender"), "{warning}");
        assert!(warning.contains("--accounts 313"), "{warning}");
    }

    #[test]
    fn answers_settle_a_batch_when_their_counts_add_up() {
        let mut ledger = AckLedger::default();
        let t0 = Instant::now();
        ledger.sent(7, t0, 10);
        ledger.sent(8, t0, 3);
        let a = ledger.answer(7, 2);
        assert_eq!(
            a,
            Answered {
                due: Some(t0),
                counted: 2,
                unmatched: 0,
                settled: false
            }
        );
        assert!(!ledger.answer(7, 1).settled);
        assert!(!ledger.answer(7, 6).settled);
        assert_eq!(ledger.open_batches(), 2);
        // One DROPPED answer settles it (2 + 1 + 6 + 1 = 10).
        assert!(ledger.answer(7, 1).settled);
        assert_eq!(ledger.open_batches(), 1);
        // A further answer to a settled batch counts nowhere.
        assert_eq!(
            ledger.answer(7, 4),
            Answered {
                due: None,
                counted: 0,
                unmatched: 4,
                settled: false
            }
        );
        // An answer counting more than is outstanding is cut to what is.
        let over = ledger.answer(8, 5);
        assert_eq!((over.counted, over.unmatched, over.settled), (3, 2, true));
        assert_eq!(ledger.open_batches(), 0);
    }

    #[test]
    fn answers_are_counted_by_reason_with_latency_for_final_ones() {
        let stats = LoadStats::default();
        let ledger = Mutex::new(AckLedger::default());
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("address");
        let t0 = Instant::now();
        ledger.lock().expect("lock").sent(1, t0, 10);
        ledger.lock().expect("lock").sent(2, t0, 4);
        let ack = |batch_id, status, count| IngressAck {
            batch_id,
            status,
            height: 0,
            count,
        };
        let at = t0 + Duration::from_millis(40);
        account_answer(
            &ack(1, IngressAck::REFUSED_NONCE_TOO_HIGH, 2),
            t0,
            &ledger,
            &stats,
            addr,
        );
        account_answer(
            &ack(1, IngressAck::REFUSED_SENDER_FULL, 1),
            t0,
            &ledger,
            &stats,
            addr,
        );
        account_answer(
            &ack(2, IngressAck::REFUSED_NONCE_TOO_HIGH, 1),
            t0,
            &ledger,
            &stats,
            addr,
        );
        account_answer(
            &ack(2, IngressAck::REFUSED_POOL_FULL, 3),
            t0,
            &ledger,
            &stats,
            addr,
        );
        account_answer(&ack(1, IngressAck::FINAL, 6), at, &ledger, &stats, addr);
        assert_eq!(ledger.lock().expect("lock").open_batches(), 1);
        account_answer(&ack(1, IngressAck::DROPPED, 1), at, &ledger, &stats, addr);
        assert_eq!(ledger.lock().expect("lock").open_batches(), 0);

        assert_eq!(stats.finalized.load(Relaxed), 6);
        assert_eq!(stats.dropped.load(Relaxed), 1);
        assert_eq!(stats.rejected_total(), 7);
        let expected: BTreeMap<String, u64> = [
            ("nonce-too-high".to_string(), 3),
            ("sender-full".to_string(), 1),
            ("pool-full".to_string(), 3),
        ]
        .into_iter()
        .collect();
        assert_eq!(stats.rejected_by_reason(), expected);
        let latency = stats.latency.lock().expect("lock").clone();
        assert_eq!(latency.count(), 6);
        assert_eq!(latency.min(), Some(40_000));
        assert_eq!(latency.max(), Some(40_000));
        assert_eq!(stats.take_window().count(), 6);
        assert!(stats.take_window().is_empty());
        assert_eq!(stats.unmatched.load(Relaxed), 0);
        assert!(stats.errors.lock().expect("lock").is_empty());

        // An answer to a settled batch is unmatched, noted, and counted nowhere else.
        account_answer(&ack(1, IngressAck::FINAL, 5), at, &ledger, &stats, addr);
        assert_eq!(stats.finalized.load(Relaxed), 6);
        assert_eq!(stats.unmatched.load(Relaxed), 5);
        assert_eq!(stats.errors.lock().expect("lock").len(), 1);
    }

    #[test]
    fn unknown_statuses_are_rejections_named_unknown() {
        let stats = LoadStats::default();
        let ledger = Mutex::new(AckLedger::default());
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("address");
        let t0 = Instant::now();
        ledger.lock().expect("lock").sent(0, t0, 5);
        for (status, count) in [(200u8, 2u32), (201, 3)] {
            let ack = IngressAck {
                batch_id: 0,
                status,
                height: 0,
                count,
            };
            account_answer(&ack, t0, &ledger, &stats, addr);
        }
        assert_eq!(
            stats.rejected_by_reason(),
            [("unknown".to_string(), 5)].into_iter().collect()
        );
        assert_eq!(stats.finalized.load(Relaxed), 0);
    }

    /// A node on `listener` for one connection: answers every batch of `n >= 2` transactions
    /// with one `nonce-too-high` refusal, then FINAL for `n - 2` and DROPPED for 1 (a batch of
    /// one gets FINAL). Returns every transaction it got, in arrival order.
    fn answering_node(listener: std::net::TcpListener) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut decoder = FrameDecoder::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = Vec::new();
        while Instant::now() < deadline {
            let n = match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => continue,
            };
            let mut input = &buf[..n];
            while let Some(frame) = decoder.decode(&mut input).expect("frame") {
                let Ok(Message::TxBatch(batch)) = frame.message() else {
                    panic!("not a batch");
                };
                let id = batch.id.to_native();
                let n = batch.transactions.len() as u32;
                got.extend(batch.transactions.iter().map(|t| t.bytes.to_vec()));
                let parts: &[(u8, u32)] = if n >= 2 {
                    &[
                        (IngressAck::REFUSED_NONCE_TOO_HIGH, 1),
                        (IngressAck::FINAL, n - 2),
                        (IngressAck::DROPPED, 1),
                    ]
                } else {
                    &[(IngressAck::FINAL, n)]
                };
                for &(status, count) in parts.iter().filter(|(_, c)| *c > 0) {
                    let ack = crate::types::frame::encode_frame(&IngressAck {
                        batch_id: id,
                        status,
                        height: 1,
                        count,
                    });
                    stream.write_all(&ack).expect("answer");
                }
            }
        }
        got
    }

    #[test]
    fn transfer_load_sends_its_schedule_and_settles_partial_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let node = std::thread::spawn(move || answering_node(listener));
        // 200 tx/s over 0.1 s + 1 s of slack: 220 transfers from 4 senders, in ~1.1 s.
        let p = TransferPlan {
            duration: Duration::from_millis(100),
            ..plan(4, 1, 200, 1)
        };
        let schedule = p.sign(false).expect("signs");
        assert_eq!(schedule.len(), 220);
        let load = Load::start(LoadSpec {
            targets: vec![addr],
            workload: LoadWorkload::Transfer(schedule),
        })
        .expect("starts");
        let stats = load.stats.clone();
        let answered = |s: &LoadStats| {
            s.finalized.load(Relaxed) + s.dropped.load(Relaxed) + s.rejected_total()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while answered(&stats) < 220 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let stats = load.stop();
        let got = node.join().expect("node");

        assert_eq!(stats.submitted.load(Relaxed), 220);
        assert_eq!(got.len(), 220);
        // Every sender's nonces arrived in order, 0, 1, 2, ...
        let mut nonces: HashMap<[u8; 20], Vec<u64>> = HashMap::new();
        for bytes in &got {
            let d = decode_transaction(bytes).expect("decodes");
            assert_eq!(d.chain_id, 1001);
            nonces.entry(d.sender).or_default().push(d.nonce);
        }
        assert_eq!(nonces.len(), 4);
        for (sender, n) in &nonces {
            assert_eq!(n, &(0..55).collect::<Vec<u64>>(), "{sender:?}");
        }
        // Every batch settled; per batch of n >= 2: 1 refused, n - 2 final, 1 dropped.
        let rejected = stats.rejected_total();
        let dropped = stats.dropped.load(Relaxed);
        let finalized = stats.finalized.load(Relaxed);
        assert_eq!(rejected + dropped + finalized, 220);
        assert_eq!(
            stats.rejected_by_reason(),
            [("nonce-too-high".to_string(), rejected)]
                .into_iter()
                .collect()
        );
        assert_eq!(rejected, dropped);
        assert!(rejected > 0);
        assert_eq!(stats.latency.lock().expect("lock").count(), finalized);
        assert_eq!(stats.unmatched.load(Relaxed), 0);
        let errors = stats.errors.lock().expect("lock").clone();
        assert!(
            errors.iter().all(|e| e.contains("sent its whole schedule")),
            "{errors:?}"
        );
    }

    #[test]
    fn errors_kept_are_bounded() {
        let stats = LoadStats::default();
        for i in 0..MAX_NOTED_ERRORS + 5 {
            stats.note_error(format!("error {i}"));
        }
        assert_eq!(stats.errors.lock().expect("lock").len(), MAX_NOTED_ERRORS);
        assert_eq!(stats.errors_not_kept.load(Relaxed), 5);
    }

    #[test]
    fn raw_transactions_are_unique_and_sized() {
        let mut source = TxSource::Raw {
            run_id: [9; 8],
            tx_size: 64,
        };
        let a = source.take(1, 0, 3);
        let b = source.take(2, 0, 3);
        let all: BTreeSet<_> = a.iter().chain(&b).map(|t| t.bytes.clone()).collect();
        assert_eq!(all.len(), 6);
        assert!(a.iter().all(|t| t.bytes.len() == 64));
        assert_eq!(
            source.max_per_batch(),
            MAX_BATCH_TXS.min(MAX_BATCH_TX_BYTES / 64)
        );
    }
}
