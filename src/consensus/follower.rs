//! The follower of a PN or EN: it adopts the blocks the council finalizes, without voting.
//!
//! A follower holds the last finalized header it adopted (its *head*) and the committee
//! elected for the next height. It is sans-IO like the [`Machine`](super::Machine): finalized
//! blocks from peers and clock ticks come in as [`FollowerInput`]s with the driver's time, and
//! what it wants done goes out as [`FollowerEffect`]s.
//!
//! # Rules
//!
//! - A block is adopted only when it is final by the rules of [`super::finality`]:
//!   it extends the head, its transactions are the ones its header commits to, and its commit
//!   certificate is a quorum of the committee elected for its height, checked with one
//!   aggregate signature verification (a run of buffered successors is checked with one
//!   batched multi-pairing). Adopting it is [`FollowerEffect::Commit`], which carries the
//!   transactions' hashes (computed once, by the check) and the bytes the block arrived in (a
//!   PN relays exactly those, so it never relays a copy it did not check); the driver makes it
//!   durable before reporting it final.
//! - A block for the next height that is not final is refused ([`FollowerEffect::Reject`]):
//!   the peer that sent it is lying (an honest peer forwards only what it adopted), and the
//!   driver bans it. A refused copy changes nothing else: a genuine copy of the same height
//!   from another peer, before or after it, is judged on its own.
//! - A block at or below the head is ignored (a duplicate from another peer; no signature work
//!   is spent on it).
//! - A block further ahead is buffered, at most [`MAX_BUFFERED_HEIGHTS`] heights ahead,
//!   [`MAX_BLOCKS_PER_HEIGHT`] candidates per height and [`MAX_BUFFERED_BYTES`] in all (bounded
//!   memory whatever peers send), and the follower asks for the blocks in between
//!   ([`FollowerEffect::RequestSync`]). Buffered blocks are checked once the height before
//!   them is adopted. A block beyond the window, or one the byte budget has no room for, is
//!   dropped unread: nothing about it can be judged without the heights in between, and an
//!   honest upstream of a lagging follower sends such blocks too, so it costs no ban.
//! - With nothing adopted for [`SYNC_POLL_MS`], the follower asks for blocks anyway (after a
//!   restart, or when its upstream peer died and a new one knows more). Sync requests go out at
//!   most once per [`SYNC_RETRY_MS`].
//!
//! # Invariants
//!
//! - The head only moves forward, one height per [`FollowerEffect::Commit`], each adopted block
//!   extending the one before (asserted).
//! - `committee` is always the committee elected for `head.height + 1` from `head.mix`.
//! - Every buffered block is above `head.height + 1` or waits to be tried; none is at or below
//!   the head after [`Follower::handle`] returns.

use std::collections::BTreeMap;

use super::finality;
use super::machine::ConsensusConfig;
use super::scheme::SignatureScheme;
use super::types::Millis;
use crate::crypto::election::Committee;
use crate::types::hash::Hash32;
use crate::types::{BlockHeader, FinalizedBlock, Height, PeerSlot};
use std::sync::Arc;

/// Heights beyond the next one whose blocks are buffered.
pub const MAX_BUFFERED_HEIGHTS: u64 = 256;
/// Candidate blocks buffered per height (a liar may send a forged one before the real one).
pub const MAX_BLOCKS_PER_HEIGHT: usize = 4;
/// Bytes of buffered blocks (their transactions plus [`BLOCK_OVERHEAD_BYTES`] each), at most:
/// sixteen blocks of the largest size.
pub const MAX_BUFFERED_BYTES: usize = 16 * crate::types::MAX_BLOCK_TX_BYTES;
/// What a buffered block is charged beyond its transactions (header, certificate, frame).
pub const BLOCK_OVERHEAD_BYTES: usize = 1024;
/// Sync requests go out at most this often.
pub const SYNC_RETRY_MS: Millis = 250;
/// With no block adopted for this long, the follower asks for blocks anyway.
pub const SYNC_POLL_MS: Millis = 2000;

/// What happens to a follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerInput {
    /// A finalized block from a peer (nothing about it checked yet).
    Finalized {
        /// The peer's slot.
        from: PeerSlot,
        /// The block.
        block: Box<FinalizedBlock>,
        /// The bytes it arrived in, when the driver relays adopted blocks (a PN).
        received: Option<Arc<Vec<u8>>>,
    },
    /// The driver's clock ticked (every few hundred milliseconds).
    Tick,
}

/// What a follower wants done, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerEffect {
    /// Adopt this final block: make it durable, then apply it and pass it on.
    Commit(Box<Adopted>),
    /// This peer sent a block for the next height that is not final: refuse it and ban the
    /// peer.
    Reject {
        /// The peer's slot.
        from: PeerSlot,
        /// The block's height.
        height: Height,
        /// What is wrong with it.
        why: finality::NotFinal,
    },
    /// Ask an upstream peer for finalized blocks from `from_height` on.
    RequestSync {
        /// First height wanted.
        from_height: Height,
    },
}

/// A block found final, with what the check learnt and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// The block.
    pub block: FinalizedBlock,
    /// The keccak-256 hash of each of its transactions, in order.
    pub tx_hashes: Vec<Hash32>,
    /// The peer it came from.
    pub from: PeerSlot,
    /// The bytes it arrived in (see [`FollowerInput::Finalized`]).
    pub received: Option<Arc<Vec<u8>>>,
}

/// A block waiting in the buffer.
#[derive(Debug, Clone)]
struct Candidate {
    from: PeerSlot,
    block: FinalizedBlock,
    received: Option<Arc<Vec<u8>>>,
}

impl Candidate {
    /// What it is charged against [`MAX_BUFFERED_BYTES`].
    fn bytes(&self) -> usize {
        let txs: usize = self
            .block
            .block
            .transactions
            .iter()
            .map(|t| t.bytes.len())
            .sum();
        txs + BLOCK_OVERHEAD_BYTES
    }
}

/// The follower of one PN or EN.
#[derive(Debug)]
pub struct Follower<S> {
    scheme: S,
    config: ConsensusConfig,
    head: BlockHeader,
    committee: Committee,
    /// Blocks above `head.height + 1`, per height, with the peer each came from.
    buffered: BTreeMap<Height, Vec<Candidate>>,
    /// Sum of the buffered candidates' [`Candidate::bytes`].
    buffered_bytes: usize,
    /// The highest height any peer claimed a block for (bounded by the buffer window).
    highest_seen: Height,
    /// When the head last moved (or the follower started).
    last_progress: Millis,
    /// When the last sync request went out.
    last_sync_request: Option<Millis>,
}

impl<S: SignatureScheme> Follower<S> {
    /// A follower whose last adopted block is `head`, started at `now`.
    pub fn new(config: ConsensusConfig, scheme: S, head: BlockHeader, now: Millis) -> Follower<S> {
        let committee = Committee::elect(
            config.council_size,
            config.committee_size,
            head.height + 1,
            &head.mix,
        );
        Follower {
            scheme,
            config,
            highest_seen: head.height,
            head,
            committee,
            buffered: BTreeMap::new(),
            buffered_bytes: 0,
            last_progress: now,
            last_sync_request: None,
        }
    }

    /// The signature scheme (tests count its checks).
    pub fn scheme(&self) -> &S {
        &self.scheme
    }

    /// The last adopted header.
    pub fn head(&self) -> &BlockHeader {
        &self.head
    }

    /// The highest height a peer has sent a block for (at least the head's).
    pub fn highest_seen(&self) -> Height {
        self.highest_seen.max(self.head.height)
    }

    /// Blocks waiting in the buffer.
    pub fn buffered(&self) -> usize {
        self.buffered.values().map(Vec::len).sum()
    }

    /// Bytes the buffered blocks are charged (at most [`MAX_BUFFERED_BYTES`]).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Handles one input at the driver's time `now`.
    pub fn handle(&mut self, now: Millis, input: FollowerInput) -> Vec<FollowerEffect> {
        let mut out = Vec::new();
        match input {
            FollowerInput::Finalized {
                from,
                block,
                received,
            } => {
                let height = block.block.header.height;
                let next = self.head.height + 1;
                let candidate = Candidate {
                    from,
                    block: *block,
                    received,
                };
                if height < next {
                    // A duplicate or stale block: nothing to do.
                } else if height == next {
                    self.adopt_from(now, candidate, &mut out);
                } else if height - next <= MAX_BUFFERED_HEIGHTS {
                    self.highest_seen = self.highest_seen.max(height);
                    self.buffer(candidate);
                } else {
                    // Too far ahead to buffer: the blocks in between come by sync first.
                    self.highest_seen = self.highest_seen.max(next + MAX_BUFFERED_HEIGHTS);
                }
                if self.highest_seen > self.head.height {
                    self.request_sync(now, &mut out);
                }
            }
            FollowerInput::Tick => {
                if now.saturating_sub(self.last_progress) >= SYNC_POLL_MS {
                    self.request_sync(now, &mut out);
                }
            }
        }
        self.check();
        out
    }

    /// Buffers a block above the next height, if its height and the byte budget have room.
    fn buffer(&mut self, candidate: Candidate) {
        let bytes = candidate.bytes();
        if self.buffered_bytes + bytes > MAX_BUFFERED_BYTES {
            return;
        }
        let slot = self
            .buffered
            .entry(candidate.block.block.header.height)
            .or_default();
        if slot.len() < MAX_BLOCKS_PER_HEIGHT {
            slot.push(candidate);
            self.buffered_bytes += bytes;
        }
    }

    /// Tries `first` (a block for the next height) with the buffered blocks that extend it;
    /// on a refusal, tries the other buffered candidates for the next height.
    fn adopt_from(&mut self, now: Millis, first: Candidate, out: &mut Vec<FollowerEffect>) {
        let mut candidate = Some(first);
        while let Some(first) = candidate.take() {
            let mut run = vec![first];
            while let Some(next) = self.take_successor(&run[run.len() - 1].block) {
                run.push(next);
            }
            let blocks: Vec<FinalizedBlock> = run.iter().map(|c| c.block.clone()).collect();
            let verdict = finality::final_prefix(
                &self.scheme,
                &self.config,
                &self.head,
                &self.committee,
                &blocks,
            );
            let mut run = run.into_iter();
            // (`zip` asks the hashes first, so the first refused block stays in `run`.)
            for (tx_hashes, c) in verdict.tx_hashes.into_iter().zip(run.by_ref()) {
                self.adopt(now, c, tx_hashes, out);
            }
            if let Some(bad) = run.next() {
                out.push(FollowerEffect::Reject {
                    from: bad.from,
                    height: bad.block.block.header.height,
                    why: verdict
                        .refused
                        .expect("a block after the final prefix is refused"),
                });
                // The blocks after the bad one may still be genuine (a forged certificate for
                // a real block): they wait for a valid copy of the bad one's height.
                for later in run {
                    self.buffer(later);
                }
            }
            self.drop_buffered_at_or_below_head();
            candidate = self.take_next_candidate();
        }
    }

    fn drop_buffered_at_or_below_head(&mut self) {
        let keep = self.buffered.split_off(&(self.head.height + 1));
        for c in std::mem::replace(&mut self.buffered, keep)
            .into_values()
            .flatten()
        {
            self.buffered_bytes -= c.bytes();
        }
    }

    /// A buffered candidate for the next height, if any.
    fn take_next_candidate(&mut self) -> Option<Candidate> {
        let next = self.head.height + 1;
        let slot = self.buffered.get_mut(&next)?;
        let first = slot.remove(0);
        if slot.is_empty() {
            self.buffered.remove(&next);
        }
        self.buffered_bytes -= first.bytes();
        Some(first)
    }

    /// Removes and returns a buffered block that extends `parent` (by height and parent hash).
    fn take_successor(&mut self, parent: &FinalizedBlock) -> Option<Candidate> {
        let height = parent.block.header.height + 1;
        let parent_hash = parent.block.hash();
        let slot = self.buffered.get_mut(&height)?;
        let at = slot
            .iter()
            .position(|c| c.block.block.header.parent_hash == parent_hash)?;
        let found = slot.remove(at);
        if slot.is_empty() {
            self.buffered.remove(&height);
        }
        self.buffered_bytes -= found.bytes();
        Some(found)
    }

    /// Adopts a block already checked final on top of the head.
    fn adopt(
        &mut self,
        now: Millis,
        c: Candidate,
        tx_hashes: Vec<Hash32>,
        out: &mut Vec<FollowerEffect>,
    ) {
        let f = c.block;
        assert_eq!(
            f.block.header.height,
            self.head.height + 1,
            "adopted in order"
        );
        assert_eq!(
            f.block.header.parent_hash,
            self.head.hash(),
            "adopted onto the head"
        );
        self.head = f.block.header.clone();
        self.committee = Committee::elect(
            self.config.council_size,
            self.config.committee_size,
            self.head.height + 1,
            &self.head.mix,
        );
        self.last_progress = now;
        out.push(FollowerEffect::Commit(Box::new(Adopted {
            block: f,
            tx_hashes,
            from: c.from,
            received: c.received,
        })));
    }

    fn request_sync(&mut self, now: Millis, out: &mut Vec<FollowerEffect>) {
        if self
            .last_sync_request
            .is_some_and(|t| now.saturating_sub(t) < SYNC_RETRY_MS)
        {
            return;
        }
        self.last_sync_request = Some(now);
        out.push(FollowerEffect::RequestSync {
            from_height: self.head.height + 1,
        });
    }

    fn check(&self) {
        debug_assert!(self
            .buffered
            .keys()
            .all(|&h| h > self.head.height && h <= self.head.height + 1 + MAX_BUFFERED_HEIGHTS));
        debug_assert!(self
            .buffered
            .values()
            .all(|v| !v.is_empty() && v.len() <= MAX_BLOCKS_PER_HEIGHT));
        debug_assert_eq!(
            self.buffered_bytes,
            self.buffered
                .values()
                .flatten()
                .map(Candidate::bytes)
                .sum::<usize>()
        );
        assert!(self.buffered_bytes <= MAX_BUFFERED_BYTES);
    }
}
