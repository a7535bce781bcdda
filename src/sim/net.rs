//! The network model: per-message latency with jitter, loss, duplication and partitions.
//!
//! Every message is given its fate when it is sent: dropped (by a partition in force at that
//! moment, or by random loss), delivered once after `latency`, or delivered twice after two
//! independent latencies. Latency is drawn uniformly from `min..=max` per copy, so messages
//! overtake each other (reordering falls out of the jitter). Loss and duplication only happen
//! before the run's heal time; partitions only within their own window (which scenarios end by
//! the heal time). After the heal time the network is reliable and its delay bounded by `max`:
//! the partial-synchrony model in which IBFT must make progress.

use crate::consensus::Millis;
use crate::types::CouncilIndex;

use super::rng::SimRng;

/// Latency and fault probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetParams {
    /// Smallest one-way latency.
    pub min_latency_ms: u64,
    /// Largest one-way latency.
    pub max_latency_ms: u64,
    /// Probability that a message is lost (before the heal time).
    pub drop: f64,
    /// Probability that a message is delivered twice (before the heal time).
    pub duplicate: f64,
}

impl NetParams {
    /// A reliable network with 5-50 ms of latency.
    pub const RELIABLE: NetParams = NetParams {
        min_latency_ms: 5,
        max_latency_ms: 50,
        drop: 0.0,
        duplicate: 0.0,
    };
}

/// Which links a partition cuts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Members of different groups cannot reach each other (both ways). A council member in
    /// no group reaches everyone.
    Symmetric {
        /// The sides.
        groups: Vec<Vec<CouncilIndex>>,
    },
    /// Messages from any of `from` to any of `to` are lost; the other direction works.
    OneWay {
        /// Senders whose messages are lost.
        from: Vec<CouncilIndex>,
        /// Receivers that do not get them.
        to: Vec<CouncilIndex>,
    },
}

impl Cut {
    /// Whether this cut blocks `from -> to`.
    pub fn blocks(&self, from: CouncilIndex, to: CouncilIndex) -> bool {
        match self {
            Cut::Symmetric { groups } => {
                let side = |x: CouncilIndex| groups.iter().position(|g| g.contains(&x));
                match (side(from), side(to)) {
                    (Some(a), Some(b)) => a != b,
                    _ => false,
                }
            }
            Cut::OneWay { from: f, to: t } => f.contains(&from) && t.contains(&to),
        }
    }
}

/// A cut in force during `start..end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// When it starts.
    pub start: Millis,
    /// When it heals.
    pub end: Millis,
    /// What it cuts.
    pub cut: Cut,
}

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Lost to a partition.
    Partitioned,
    /// Lost at random.
    Lost,
    /// Delivered at this time.
    Deliver(Millis),
    /// Delivered twice, at these times.
    Duplicate(Millis, Millis),
}

/// Counters of what the network did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Lost to partitions.
    pub partitioned: u64,
    /// Lost at random.
    pub lost: u64,
    /// Delivered twice.
    pub duplicated: u64,
}

/// The network of one run.
#[derive(Debug, Clone)]
pub struct Network {
    params: NetParams,
    partitions: Vec<Partition>,
    heal_at: Millis,
    rng: SimRng,
    /// Counters.
    pub stats: NetStats,
}

impl Network {
    /// A network with `params` and `partitions`, faults (loss, duplication) until `heal_at`.
    pub fn new(
        params: NetParams,
        partitions: Vec<Partition>,
        heal_at: Millis,
        rng: SimRng,
    ) -> Network {
        Network {
            params,
            partitions,
            heal_at,
            rng,
            stats: NetStats::default(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &NetParams {
        &self.params
    }

    /// The partitions.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// Whether `from` can reach `to` at `now` (no partition in force cuts the link).
    pub fn link_open(&self, from: CouncilIndex, to: CouncilIndex, now: Millis) -> bool {
        !self
            .partitions
            .iter()
            .any(|p| p.start <= now && now < p.end && p.cut.blocks(from, to))
    }

    fn latency(&mut self) -> Millis {
        self.rng
            .range(self.params.min_latency_ms, self.params.max_latency_ms)
    }

    /// Decides the fate of one message sent `from -> to` at `now`.
    pub fn transmit(&mut self, from: CouncilIndex, to: CouncilIndex, now: Millis) -> Fate {
        self.stats.sent += 1;
        if !self.link_open(from, to, now) {
            self.stats.partitioned += 1;
            return Fate::Partitioned;
        }
        let faulty = now < self.heal_at;
        if faulty && self.rng.chance(self.params.drop) {
            self.stats.lost += 1;
            return Fate::Lost;
        }
        let first = now + self.latency();
        if faulty && self.rng.chance(self.params.duplicate) {
            self.stats.duplicated += 1;
            let second = now + self.latency();
            return Fate::Duplicate(first, second);
        }
        Fate::Deliver(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_partition_cuts_both_ways_only_in_its_window() {
        let p = Partition {
            start: 100,
            end: 200,
            cut: Cut::Symmetric {
                groups: vec![vec![0, 1], vec![2, 3]],
            },
        };
        let mut net = Network::new(NetParams::RELIABLE, vec![p], 0, SimRng::new(1));
        assert!(net.link_open(0, 2, 99));
        assert!(!net.link_open(0, 2, 100));
        assert!(!net.link_open(3, 1, 150));
        assert!(net.link_open(0, 1, 150), "same side");
        assert!(net.link_open(2, 3, 150), "same side");
        assert!(net.link_open(0, 4, 150), "4 is on no side");
        assert!(net.link_open(0, 2, 200), "healed");
        assert_eq!(net.transmit(0, 2, 150), Fate::Partitioned);
        assert!(matches!(net.transmit(0, 1, 150), Fate::Deliver(t) if (155..=200).contains(&t)));
        assert_eq!(net.stats.partitioned, 1);
        assert_eq!(net.stats.sent, 2);
    }

    #[test]
    fn one_way_partition_cuts_one_direction() {
        let p = Partition {
            start: 0,
            end: 1000,
            cut: Cut::OneWay {
                from: vec![1],
                to: vec![0, 2],
            },
        };
        let net = Network::new(NetParams::RELIABLE, vec![p], 0, SimRng::new(1));
        assert!(!net.link_open(1, 0, 10));
        assert!(!net.link_open(1, 2, 10));
        assert!(net.link_open(1, 3, 10));
        assert!(net.link_open(0, 1, 10), "the other direction works");
        assert!(net.link_open(2, 1, 10));
    }

    #[test]
    fn loss_and_duplication_follow_their_rates_until_heal() {
        let params = NetParams {
            min_latency_ms: 5,
            max_latency_ms: 50,
            drop: 0.2,
            duplicate: 0.1,
        };
        let mut net = Network::new(params, vec![], 10_000, SimRng::new(5));
        let (mut lost, mut dup, mut min, mut max) = (0, 0, u64::MAX, 0);
        for _ in 0..10_000 {
            match net.transmit(0, 1, 0) {
                Fate::Lost => lost += 1,
                Fate::Duplicate(a, b) => {
                    dup += 1;
                    min = min.min(a).min(b);
                    max = max.max(a).max(b);
                }
                Fate::Deliver(t) => {
                    min = min.min(t);
                    max = max.max(t);
                }
                Fate::Partitioned => unreachable!(),
            }
        }
        assert!((1_700..2_300).contains(&lost), "{lost}");
        assert!((600..1_000).contains(&dup), "{dup}"); // 10% of the 80% not lost
        assert_eq!((min, max), (5, 50));
        assert_eq!(net.stats.lost, lost);
        // After the heal time: no loss, no duplication.
        for _ in 0..1000 {
            assert!(matches!(net.transmit(0, 1, 10_000), Fate::Deliver(_)));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_fates() {
        let params = NetParams {
            min_latency_ms: 1,
            max_latency_ms: 100,
            drop: 0.3,
            duplicate: 0.3,
        };
        let run = |seed| {
            let mut net = Network::new(params, vec![], u64::MAX, SimRng::new(seed));
            (0..200).map(|i| net.transmit(0, 1, i)).collect::<Vec<_>>()
        };
        assert_eq!(run(8), run(8));
        assert_ne!(run(8), run(9));
    }
}
