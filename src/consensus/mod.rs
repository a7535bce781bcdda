//! The sans-IO IBFT consensus core.
//!
//! [`Machine`] decides one block per height among the height's committee. It has no sockets,
//! clocks, threads or randomness: time, messages and the results of block building and
//! checking come in as [`Input`]s (with the driver's clock), and everything it wants done goes
//! out as [`Effect`]s. The node's consensus shard and the simulator (`crate::sim`) drive the
//! same code.
//!
//! # Protocol
//!
//! IBFT as corrected by Moniz, "The Istanbul BFT Consensus Algorithm" (2020, arXiv
//! 2002.03613), run per height `h` by the committee elected for `h`
//! (`crypto::election::Committee`, seeded by the parent block's randao mix). Terms: `n` the
//! committee size, `f = floor((n - 1) / 3)` the faults tolerated,
//! `q = floor((n + f) / 2) + 1` the quorum, `r_i` this node's round, `(pr, pv)` its prepared
//! round and value (its *lock*, a [`crate::types::PreparedCertificate`]).
//!
//! 1. **Start of height.** `r_i = 0`, no lock. The proposer of round 0 waits until
//!    `parent.timestamp + block_period`, has the driver build a block ([`Effect::BuildBlock`]),
//!    and broadcasts PRE-PREPARE. Its header carries `reveal_h = BLS_sign(sk, chain_id || h)`,
//!    the new mix, and the committee digest. Every node starts the timer of round 0.
//! 2. **PRE-PREPARE(h, r, B)** is accepted when it is signed by `committee.proposer(r)`, the
//!    reveal verifies under that key (proof of election), the header extends this node's head
//!    (parent hash, mix, committee digest, timestamp, transactions root), `r >= r_i`, and for
//!    `r > 0` it is *justified*: it carries round changes for `(h, r)` from a quorum of
//!    distinct members, each valid, and if any carries a prepared certificate, `B` is the block
//!    of the one with the highest round. A justified proposal for `r > r_i` moves the node to
//!    `r`. After the driver confirms the block's contents ([`Effect::VerifyBlock`]), a
//!    committee member sends PREPARE(h, r, hash(B)).
//! 3. **A quorum of PREPAREs** for `(h, r_i, hash)` forms a prepared certificate: the node
//!    sets its lock `(pr, pv) = (r_i, hash)` and sends COMMIT(h, r_i, hash).
//! 4. **A quorum of COMMITs** for `(h, r, hash)` in any round forms a commit certificate: the
//!    block is final ([`Effect::Commit`]) and the node moves to `h + 1`. Finality is immediate;
//!    nothing undoes it.
//! 5. **Timeout of round `r_i`**: move to `r_i + 1`, restart the timer, broadcast
//!    ROUND-CHANGE(h, r_i + 1) carrying the lock's prepared certificate, if any. Round `r`
//!    lasts `min(base * 2^r, max)` after its start (round 0: after the proposal time). With
//!    the defaults (base 400 ms) a failed proposer costs about 400 ms, not Kaia's
//!    `10 s + 2^r s`.
//! 6. **f + 1 ROUND-CHANGEs for rounds above `r_i`**: at least one honest member timed out, so
//!    the node moves to the lowest round among the `f + 1` highest and sends its own
//!    ROUND-CHANGE (this bounds how long honest nodes stay in different rounds).
//! 7. **A quorum of ROUND-CHANGEs for `r_i`** at the proposer of `r_i`: it proposes the block
//!    of the highest prepared certificate among them, or a new block if none carries one, with
//!    those round changes as the justification.
//!
//! Only committee members' messages count; a message from outside the committee or the
//! council is refused and reported ([`Effect::Rejected`]).
//!
//! # Why it is safe
//!
//! Two quorums share at least `2q - n >= f + 1` members (because `2q >= n + f + 1`), so at
//! least one honest member is in both. Hence (a) no two different blocks get a prepare quorum
//! in one round, since an honest member prepares at most once per round; (b) if a block `B` is
//! committed in round `r`, a quorum locked on `B` in `r`; any quorum of round changes for a
//! later round holds an honest member locked on `B` (or on a later prepared value, which by
//! induction is `B`), whose certificate is the highest, so every justified proposal after `r`
//! is `B`. And `n - f >= q`: the honest members alone can always form a quorum, which with
//! growing round timeouts gives liveness after GST.
//!
//! # Costs and evidence
//!
//! Votes are stored unverified and checked as one aggregate when a quorum for one block is
//! reached: about one pairing check per quorum, not per vote. Only if the aggregate fails are
//! the votes checked one by one, and each bad signer is named ([`votes`]). A proposal's
//! signature and its block's randao reveal are checked together
//! ([`SignatureScheme::verify_each`]: with BLS one multi-pairing with weights unknown to the
//! proposer), one by one only to name a bad one; a node does not check its own. Two different
//! validly signed votes from one member for one `(height, round, kind)`, or two validly signed
//! proposals of different blocks by one proposer for one `(height, round)`, are reported as
//! [`Evidence`] ([`EvidenceKind`]), once per member, round and kind. A second proposal for a
//! round costs one signature check only when its block differs from the one held (so a flood
//! of copies costs nothing); its block is kept if its header is valid, so a node that held the
//! other block can still finalize the one a commit quorum certifies. CNs do not relay
//! proposals, so a proposer that sends each block to a disjoint set of peers is caught by no
//! single node's proposals; its prepares then split, the round fails and changes, and its
//! double votes, if any, are caught as vote evidence.
//!
//! # Durability
//!
//! Before a signed message leaves the node, what it commits the node to is in an
//! [`Effect::Persist`] earlier in the same batch: own votes ([`WalRecord::Voted`]), proposals,
//! round changes, and the lock ([`WalRecord::Prepared`]). A machine restarted with its last
//! finalized header and its WAL never signs a vote that conflicts with one it signed before
//! (it asserts this). A finalized block is handed over as [`Effect::Commit`] before anything
//! of the next height is sent.
//!
//! # Catch-up
//!
//! Messages for later heights are buffered, bounded: up to [`machine::MAX_FUTURE_HEIGHTS`]
//! ahead (further is refused as [`Rejection::TooFarAhead`]), per height in count and per
//! signer ([`machine::MAX_FUTURE_MESSAGES_PER_SIGNER`]), and in bytes over all heights
//! ([`machine::MAX_FUTURE_BYTES`]) and per signer ([`machine::future_bytes_per_signer`], so a
//! member flooding it leaves the others their share). A message two or more heights ahead, a round timeout while later messages wait, or a commit quorum whose
//! block never arrived, makes the node ask a peer for finalized blocks
//! ([`Effect::RequestSync`]). A [`crate::types::FinalizedBlock`] for the current height with a
//! valid commit certificate of the committee is adopted at once.

pub mod finality;
pub mod follower;
pub mod machine;
pub mod scheme;
pub mod types;
pub mod votes;

pub use follower::{Adopted, Follower, FollowerEffect, FollowerInput};
pub use machine::{ConsensusConfig, Machine, Weakening};
pub use scheme::{BlsScheme, FastScheme, SignatureScheme};
pub use types::{
    Effect, Evidence, EvidenceKind, Input, Message, Millis, Rejection, Timer, WalRecord,
};

#[cfg(test)]
mod tests;
