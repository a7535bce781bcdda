//! The event trace of a run: every event delivered to a node, hashed into one fingerprint and,
//! with `--trace`, kept as text.
//!
//! The fingerprint (xxh3-128 over a compact binary record of each event: time, node, kind and
//! the identifying fields of the message, timer or answer) is what the determinism test
//! compares: the same seed must give the same fingerprint, bit for bit.

use xxhash_rust::xxh3::Xxh3;

use crate::consensus::{Message, Millis, Timer};
use crate::types::hash::Hash32;
use crate::types::{Height, Round};

use super::checker::short;

/// One delivered event, as the trace sees it.
#[derive(Debug, Clone, Copy)]
pub enum TraceEvent<'a> {
    /// A message arrived from `from`.
    Message {
        /// Sender label.
        from: &'a str,
        /// The message.
        msg: &'a Message,
    },
    /// A timer fired.
    Timer(Timer),
    /// The block builder answered.
    Built {
        /// Height.
        height: Height,
        /// Round.
        round: Round,
        /// Number of transactions.
        txs: usize,
        /// State root.
        state_root: &'a Hash32,
    },
    /// The block verifier answered.
    Verified {
        /// Height.
        height: Height,
        /// Block.
        block_hash: &'a Hash32,
        /// Verdict.
        valid: bool,
    },
    /// A sync request reached this node (the peer answering it).
    SyncRequest {
        /// Who asked.
        requester: &'a str,
        /// From which height.
        from_height: Height,
    },
    /// The node crashed.
    Crash,
    /// The node restarted.
    Restart,
    /// The heal time was reached (node label is `*`).
    Heal,
}

/// The trace of one run.
pub struct Trace {
    hasher: Xxh3,
    events: u64,
    lines: Option<Vec<String>>,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Trace {
    /// A trace; `keep_lines` keeps a text line per event (for `--trace`).
    pub fn new(keep_lines: bool) -> Trace {
        Trace {
            hasher: Xxh3::new(),
            events: 0,
            lines: keep_lines.then(Vec::new),
        }
    }

    /// Records one delivered event at `at` on node `node` (instance `inst`).
    pub fn record(&mut self, at: Millis, inst: u32, node: &str, ev: TraceEvent<'_>) {
        self.events += 1;
        let mut rec = [0u8; 128];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            let n = bytes.len().min(rec.len() - len);
            rec[len..len + n].copy_from_slice(&bytes[..n]);
            len += n;
        };
        put(&at.to_le_bytes());
        put(&inst.to_le_bytes());
        match ev {
            TraceEvent::Message { msg, .. } => {
                put(&[1]);
                match msg {
                    Message::Proposal(p) => {
                        put(&[0]);
                        put(&p.block.header.height.to_le_bytes());
                        put(&p.round.to_le_bytes());
                        put(&p.proposer.to_le_bytes());
                        put(&p.block.header.proposer.to_le_bytes());
                        put(&p.block.hash());
                        put(&p.signature[..8]);
                        put(&(p.justification.len() as u32).to_le_bytes());
                    }
                    Message::Vote(v) => {
                        put(&[1, v.kind as u8]);
                        put(&v.height.to_le_bytes());
                        put(&v.round.to_le_bytes());
                        put(&v.signer.to_le_bytes());
                        put(&v.block_hash);
                        put(&v.signature[..8]);
                    }
                    Message::RoundChange(rc) => {
                        put(&[2]);
                        put(&rc.height.to_le_bytes());
                        put(&rc.round.to_le_bytes());
                        put(&rc.signer.to_le_bytes());
                        match &rc.prepared {
                            Some(p) => {
                                put(&p.round.to_le_bytes());
                                put(&p.block_hash);
                            }
                            None => put(&[0xff]),
                        }
                        put(&rc.signature[..8]);
                    }
                    Message::Finalized { block: f, .. } => {
                        put(&[3]);
                        put(&f.block.header.height.to_le_bytes());
                        put(&f.block.hash());
                        put(&f.certificate.round.to_le_bytes());
                    }
                }
            }
            TraceEvent::Timer(Timer::Propose { height }) => {
                put(&[2, 0]);
                put(&height.to_le_bytes());
            }
            TraceEvent::Timer(Timer::Round { height, round }) => {
                put(&[2, 1]);
                put(&height.to_le_bytes());
                put(&round.to_le_bytes());
            }
            TraceEvent::Built {
                height,
                round,
                txs,
                state_root,
            } => {
                put(&[3]);
                put(&height.to_le_bytes());
                put(&round.to_le_bytes());
                put(&(txs as u32).to_le_bytes());
                put(state_root);
            }
            TraceEvent::Verified {
                height,
                block_hash,
                valid,
            } => {
                put(&[4, u8::from(valid)]);
                put(&height.to_le_bytes());
                put(block_hash);
            }
            TraceEvent::SyncRequest { from_height, .. } => {
                put(&[5]);
                put(&from_height.to_le_bytes());
            }
            TraceEvent::Crash => put(&[6]),
            TraceEvent::Restart => put(&[7]),
            TraceEvent::Heal => put(&[8]),
        }
        self.hasher.update(&rec[..len]);
        if let Some(lines) = self.lines.as_mut() {
            lines.push(format!("{at:>9} {node:<5} {}", describe(ev)));
        }
    }

    /// Records a notable effect of node `node` (a commit, a rejection, evidence, a sync
    /// request): hashed into the fingerprint, and kept as an indented text line.
    pub fn effect(&mut self, inst: u32, node: &str, key: &[u8], text: impl FnOnce() -> String) {
        self.hasher.update(&inst.to_le_bytes());
        self.hasher.update(key);
        if let Some(lines) = self.lines.as_mut() {
            lines.push(format!("{:>9} {node:<5}   -> {}", "", text()));
        }
    }

    /// Whether text lines are kept.
    pub fn keeps_lines(&self) -> bool {
        self.lines.is_some()
    }

    /// Number of events recorded.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The fingerprint of the events so far, as 32 hex digits.
    pub fn fingerprint(&self) -> String {
        format!("{:032x}", self.hasher.digest128())
    }

    /// The text lines (empty unless kept).
    pub fn take_lines(&mut self) -> Vec<String> {
        self.lines.take().unwrap_or_default()
    }
}

/// Human description of a trace event.
pub fn describe(ev: TraceEvent<'_>) -> String {
    match ev {
        TraceEvent::Message { from, msg } => match msg {
            Message::Proposal(p) => format!(
                "<- {from} PROPOSAL h={} r={} by n{} block {} ({} txs, built by n{} in r={}, {} rc)",
                p.block.header.height,
                p.round,
                p.proposer,
                short(&p.block.hash()),
                p.block.transactions.len(),
                p.block.header.proposer,
                p.block.header.round,
                p.justification.len()
            ),
            Message::Vote(v) => format!(
                "<- {from} {} h={} r={} by n{} block {} sig {}",
                v.kind.name().to_uppercase(),
                v.height,
                v.round,
                v.signer,
                short(&v.block_hash),
                hex::encode(&v.signature[..3])
            ),
            Message::RoundChange(rc) => format!(
                "<- {from} ROUND-CHANGE h={} to r={} by n{} prepared {}",
                rc.height,
                rc.round,
                rc.signer,
                rc.prepared
                    .as_ref()
                    .map(|p| format!("r={} {}", p.round, short(&p.block_hash)))
                    .unwrap_or_else(|| "-".into())
            ),
            Message::Finalized { block: f, .. } => format!(
                "<- {from} FINALIZED h={} block {} cert r={}",
                f.block.header.height,
                short(&f.block.hash()),
                f.certificate.round
            ),
        },
        TraceEvent::Timer(Timer::Propose { height }) => format!("timer propose h={height}"),
        TraceEvent::Timer(Timer::Round { height, round }) => {
            format!("timer round h={height} r={round}")
        }
        TraceEvent::Built {
            height,
            round,
            txs,
            state_root,
        } => format!(
            "built h={height} r={round} {txs} txs state {}",
            short(state_root)
        ),
        TraceEvent::Verified {
            height,
            block_hash,
            valid,
        } => format!(
            "verified h={height} block {} {}",
            short(block_hash),
            if valid { "valid" } else { "INVALID" }
        ),
        TraceEvent::SyncRequest {
            requester,
            from_height,
        } => format!("sync request from {requester} for h>={from_height}"),
        TraceEvent::Crash => "CRASH".into(),
        TraceEvent::Restart => "RESTART".into(),
        TraceEvent::Heal => "HEAL (no more faults)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_depends_on_every_recorded_field() {
        let fp = |at, inst, t| {
            let mut tr = Trace::new(false);
            tr.record(at, inst, "n0", TraceEvent::Timer(t));
            tr.fingerprint()
        };
        let t = Timer::Round {
            height: 3,
            round: 1,
        };
        assert_eq!(fp(5, 0, t), fp(5, 0, t));
        assert_ne!(fp(5, 0, t), fp(6, 0, t));
        assert_ne!(fp(5, 0, t), fp(5, 1, t));
        assert_ne!(
            fp(5, 0, t),
            fp(
                5,
                0,
                Timer::Round {
                    height: 3,
                    round: 2
                }
            )
        );
        let mut tr = Trace::new(true);
        tr.record(7, 2, "n2", TraceEvent::Crash);
        assert_eq!(tr.events(), 1);
        let lines = tr.take_lines();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].contains("n2") && lines[0].contains("CRASH"),
            "{lines:?}"
        );
    }
}
