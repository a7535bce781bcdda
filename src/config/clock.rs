//! The machine's wall clock, the one place a room reads real time from.
//!
//! The consensus core never calls it: time enters the core as an input (`Input::Tick`,
//! `now` arguments), so the simulator can drive the same code on a virtual clock. Shards call
//! [`now_ms`] when they hand the core an input, stamp a proposal or age a pooled transaction.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before the epoch).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
