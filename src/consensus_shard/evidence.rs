//! What a CN keeps about misbehaving council members: the durable evidence log and the count
//! of bad signatures that gets a peer banned.
//!
//! **Evidence log.** Every [`Evidence`] the machine reports (two validly signed, conflicting
//! votes or proposals from one member for one slot) is appended as one line to
//! `<data_dir>/evidence.log` ([`EVIDENCE_LOG`]), so an operator can see who equivocated, when,
//! and both conflicting block hashes with the member's signature of each (anyone holding the
//! genesis can check the two signatures, so the line proves the equivocation by itself):
//!
//! ```text
//! time_ms=1764277200123 height=12 round=0 kind=prepare signer=3 node_id=0x1f… first=0xab… second=0xcd… first_signature=0x… second_signature=0x…
//! ```
//!
//! A vote's signature signs [`crate::types::VoteKind::signing_message`] (chain id, height,
//! round, block hash) and a proposal's [`crate::types::Proposal::signing_message`] (the same
//! fields under another tag), so each line can be checked on its own.
//!
//! The log is bounded: one line per `(signer, height, round, kind)` (the last
//! [`DEDUP_WINDOW`] keys are remembered, also across restarts for the lines already in the
//! file), and nothing is appended once the file holds [`MAX_EVIDENCE_LOG_BYTES`] (a warning is
//! logged once; the metrics still count). Lines are written without fsync: evidence is a
//! report for operators, not consensus state, so the consensus path never waits on a disk
//! flush for it (the page cache write is a few microseconds, and at most a few lines per
//! height). A write error is logged and otherwise ignored.
//!
//! **Strikes.** A consensus message arrives only over the authenticated connection of the
//! member that signed it (the net shard refuses relayed ones), so a message refused for what
//! only its signer can have done (a signature that does not verify, an unjustified proposal, a
//! bad round change, spam for far rounds:
//! [`crate::consensus::Rejection::is_misbehaviour`]) was sent by that
//! member's node. One could be a bug; a stream of them is an attack on the verifier's CPU (each
//! costs signature work). So each is counted, and [`STRIKE_BAN_THRESHOLD`] of them from one
//! member within [`STRIKE_WINDOW`] get its connection closed and its node id banned for the
//! net shard's ban time ([`crate::net::PeerLimits::ban`]); it may reconnect afterwards.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::consensus::{Evidence, EvidenceKind};
use crate::types::{CouncilIndex, Height, Round};

/// The evidence log's file name in the data folder.
pub const EVIDENCE_LOG: &str = "evidence.log";
/// The evidence log is not appended to beyond this size.
pub const MAX_EVIDENCE_LOG_BYTES: u64 = 16 * 1024 * 1024;
/// `(signer, height, round, kind)` keys remembered for deduplication.
pub const DEDUP_WINDOW: usize = 4096;
/// Strikes (refusals of misbehaviour) against one member within [`STRIKE_WINDOW`] that get
/// it banned.
pub const STRIKE_BAN_THRESHOLD: u32 = 8;
/// The window [`STRIKE_BAN_THRESHOLD`] is counted over.
pub const STRIKE_WINDOW: Duration = Duration::from_secs(60);

/// One evidence line's identity.
type EvidenceKey = (CouncilIndex, Height, Round, EvidenceKind);

/// The append-only, bounded, deduplicated evidence log of a CN.
#[derive(Debug)]
pub struct EvidenceLog {
    path: PathBuf,
    /// Node ids of the council, by council index (named in each line).
    council: Vec<[u8; 20]>,
    bytes: u64,
    seen: BTreeSet<EvidenceKey>,
    order: VecDeque<EvidenceKey>,
    full_reported: bool,
}

impl EvidenceLog {
    /// The log in `data_dir`; the keys of the lines already there are remembered (the last
    /// [`DEDUP_WINDOW`] of them).
    pub fn open(data_dir: &Path, council: Vec<[u8; 20]>) -> EvidenceLog {
        let path = data_dir.join(EVIDENCE_LOG);
        let mut log = EvidenceLog {
            path,
            council,
            bytes: 0,
            seen: BTreeSet::new(),
            order: VecDeque::new(),
            full_reported: false,
        };
        // Read back at most the cap (the file never grows past it by more than one line).
        if let Ok(text) = std::fs::read(&log.path) {
            log.bytes = text.len() as u64;
            for line in String::from_utf8_lossy(&text).lines() {
                if let Some(key) = parse_key(line) {
                    log.remember(key);
                }
            }
        }
        log
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn remember(&mut self, key: EvidenceKey) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > DEDUP_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// Appends `evidence` (seen at `time_ms`) unless its slot is already logged or the log is
    /// full. Returns whether a line was written.
    pub fn record(&mut self, evidence: &Evidence, time_ms: u64) -> bool {
        let key = (
            evidence.signer,
            evidence.height,
            evidence.round,
            evidence.kind,
        );
        if self.seen.contains(&key) {
            return false;
        }
        if self.bytes >= MAX_EVIDENCE_LOG_BYTES {
            if !self.full_reported {
                self.full_reported = true;
                tracing::warn!(path = %self.path.display(), "evidence log full; not appending");
            }
            return false;
        }
        let node_id = self
            .council
            .get(evidence.signer as usize)
            .map_or_else(|| "unknown".to_string(), |id| crate::config::to_hex(id));
        let line = format!(
            "time_ms={time_ms} height={} round={} kind={} signer={} node_id={node_id} first={} second={} first_signature={} second_signature={}\n",
            evidence.height,
            evidence.round,
            evidence.kind.name(),
            evidence.signer,
            crate::config::to_hex(&evidence.first.0),
            crate::config::to_hex(&evidence.second.0),
            crate::config::to_hex(&evidence.first.1),
            crate::config::to_hex(&evidence.second.1),
        );
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        match written {
            Ok(()) => {
                self.bytes += line.len() as u64;
                self.remember(key);
                true
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot append to the evidence log");
                false
            }
        }
    }
}

/// The `(signer, height, round, kind)` of a line written by [`EvidenceLog::record`].
fn parse_key(line: &str) -> Option<EvidenceKey> {
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let kind = match field("kind")? {
        "prepare" => EvidenceKind::Prepare,
        "commit" => EvidenceKind::Commit,
        "proposal" => EvidenceKind::Proposal,
        _ => return None,
    };
    Some((
        field("signer")?.parse().ok()?,
        field("height")?.parse().ok()?,
        field("round")?.parse().ok()?,
        kind,
    ))
}

/// Counts strikes per council member over a sliding window and says when one has earned
/// enough to be banned. Driven with the caller's clock.
#[derive(Debug, Default)]
pub struct MisbehaviourStrikes {
    /// Per member: when each of its recent strikes happened (at most the threshold).
    recent: BTreeMap<CouncilIndex, VecDeque<Instant>>,
}

impl MisbehaviourStrikes {
    /// Notes a strike against `signer` at `now`; `true` when that makes
    /// [`STRIKE_BAN_THRESHOLD`] within [`STRIKE_WINDOW`] (the count then starts
    /// over, so a banned member that comes back and keeps going is banned again).
    pub fn strike(&mut self, signer: CouncilIndex, now: Instant) -> bool {
        let times = self.recent.entry(signer).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > STRIKE_WINDOW)
        {
            times.pop_front();
        }
        times.push_back(now);
        if times.len() >= STRIKE_BAN_THRESHOLD as usize {
            times.clear();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(signer: CouncilIndex, height: Height, kind: EvidenceKind) -> Evidence {
        Evidence {
            signer,
            kind,
            height,
            round: 1,
            first: ([1; 32], [0xa1; 96]),
            second: ([2; 32], [0xa2; 96]),
        }
    }

    #[test]
    fn one_line_per_slot_naming_the_signer_and_both_hashes_also_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let council = vec![[0xaa; 20], [0xbb; 20], [0xcc; 20], [0xdd; 20]];
        let mut log = EvidenceLog::open(dir.path(), council.clone());
        assert!(log.record(&evidence(3, 7, EvidenceKind::Prepare), 1000));
        assert!(!log.record(&evidence(3, 7, EvidenceKind::Prepare), 1001));
        assert!(log.record(&evidence(3, 7, EvidenceKind::Commit), 1002));
        assert!(log.record(&evidence(3, 8, EvidenceKind::Proposal), 1003));
        drop(log);
        let mut log = EvidenceLog::open(dir.path(), council);
        assert!(!log.record(&evidence(3, 8, EvidenceKind::Proposal), 1004));
        assert!(log.record(&evidence(2, 8, EvidenceKind::Proposal), 1005));
        let text = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(
            lines[0],
            format!(
                "time_ms=1000 height=7 round=1 kind=prepare signer=3 node_id=0x{} first=0x{} second=0x{} first_signature=0x{} second_signature=0x{}",
                "dd".repeat(20),
                "01".repeat(32),
                "02".repeat(32),
                "a1".repeat(96),
                "a2".repeat(96)
            )
        );
        assert!(lines[3].contains("signer=2 node_id=0xcccc"));
    }

    #[test]
    fn a_full_log_is_not_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVIDENCE_LOG);
        std::fs::write(&path, vec![b'x'; MAX_EVIDENCE_LOG_BYTES as usize]).unwrap();
        let mut log = EvidenceLog::open(dir.path(), vec![[0; 20]; 4]);
        assert!(!log.record(&evidence(1, 1, EvidenceKind::Commit), 1));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            MAX_EVIDENCE_LOG_BYTES
        );
    }

    #[test]
    fn a_stream_of_bad_signatures_is_banned_one_is_not() {
        let mut strikes = MisbehaviourStrikes::default();
        let t0 = Instant::now();
        // One now and then (further apart than the window) never adds up.
        for i in 0..20u64 {
            let at = t0 + (STRIKE_WINDOW + Duration::from_secs(1)) * i as u32;
            assert!(!strikes.strike(1, at));
        }
        // A burst does, for the member that sends it only.
        let t1 = t0 + STRIKE_WINDOW * 40;
        for i in 1..STRIKE_BAN_THRESHOLD {
            assert!(!strikes.strike(2, t1 + Duration::from_millis(i as u64)));
            assert!(!strikes.strike(3, t1 + Duration::from_millis(i as u64)));
        }
        assert!(strikes.strike(2, t1 + Duration::from_secs(1)));
        // Counting starts over after a ban.
        assert!(!strikes.strike(2, t1 + Duration::from_secs(2)));
    }
}
