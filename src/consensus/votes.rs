//! Vote collection with optimistic aggregate verification.
//!
//! Votes for one `(round, kind)` are stored unverified as they arrive. When the votes for one
//! block hash reach a quorum, their signatures are aggregated and checked with one
//! `verify_aggregate` (one pairing check with BLS). Only if that fails is each unverified
//! vote checked on its own (the bisection: here, a linear scan of the unverified ones, since a
//! failure is rare and names every bad signer at once); bad votes are dropped and reported.
//!
//! Invariants: at most one vote per signer is kept per `(round, kind)` (the first valid one);
//! a second, different, vote from the same signer is checked and, if both verify, becomes
//! equivocation evidence.

use std::collections::BTreeMap;

use super::scheme::SignatureScheme;
use crate::crypto::bls::Domain;
use crate::crypto::hash::Hash32;
use crate::types::{
    signers, BlsSignatureBytes, CouncilIndex, QuorumCertificate, Round, Vote, VoteKind,
};

/// One stored vote.
#[derive(Debug, Clone)]
struct Entry {
    block_hash: Hash32,
    signature: BlsSignatureBytes,
    verified: bool,
}

/// What adding a vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// Stored (or a duplicate of a stored vote).
    Stored,
    /// The signer already voted for another block: both signatures verify.
    Equivocation {
        /// The stored vote's hash and signature.
        first: (Hash32, BlsSignatureBytes),
    },
    /// The vote's signature does not verify (checked because it conflicted with a stored vote).
    BadSignature,
}

/// The votes of one `(height, round, kind)`.
#[derive(Debug, Clone, Default)]
pub struct VoteSet {
    by_signer: BTreeMap<CouncilIndex, Entry>,
}

impl VoteSet {
    /// Adds a vote from a committee member (the caller checked membership and height).
    pub fn add<S: SignatureScheme>(
        &mut self,
        scheme: &S,
        chain_id: u64,
        vote: &Vote,
        verified: bool,
    ) -> Added {
        if let Some(existing) = self.by_signer.get_mut(&vote.signer) {
            if existing.block_hash == vote.block_hash {
                if !existing.verified && verified {
                    existing.signature = vote.signature;
                    existing.verified = true;
                }
                return Added::Stored;
            }
            let message = vote.signing_message(chain_id);
            if !scheme.verify(vote.signer, Domain::Vote, &message, &vote.signature) {
                return Added::BadSignature;
            }
            let stored_message =
                vote.kind
                    .signing_message(chain_id, vote.height, vote.round, &existing.block_hash);
            if !existing.verified
                && !scheme.verify(
                    vote.signer,
                    Domain::Vote,
                    &stored_message,
                    &existing.signature,
                )
            {
                // The stored vote was a forgery: replace it with the valid one.
                *existing = Entry {
                    block_hash: vote.block_hash,
                    signature: vote.signature,
                    verified: true,
                };
                return Added::Stored;
            }
            existing.verified = true;
            return Added::Equivocation {
                first: (existing.block_hash, existing.signature),
            };
        }
        self.by_signer.insert(
            vote.signer,
            Entry {
                block_hash: vote.block_hash,
                signature: vote.signature,
                verified,
            },
        );
        Added::Stored
    }

    /// How many signers voted for `block_hash`.
    pub fn count_for(&self, block_hash: &Hash32) -> usize {
        self.by_signer
            .values()
            .filter(|e| &e.block_hash == block_hash)
            .count()
    }

    /// The hash `signer` voted for, if any.
    pub fn vote_of(&self, signer: CouncilIndex) -> Option<Hash32> {
        self.by_signer.get(&signer).map(|e| e.block_hash)
    }

    /// Tries to fold the votes for `block_hash` into a certificate of `quorum` or more signers.
    /// Returns the certificate and the signers whose votes were refused (bad signatures, now
    /// dropped).
    #[allow(clippy::too_many_arguments)]
    pub fn certify<S: SignatureScheme>(
        &mut self,
        scheme: &S,
        chain_id: u64,
        council_size: usize,
        kind: VoteKind,
        height: u64,
        round: Round,
        block_hash: &Hash32,
        quorum: usize,
    ) -> (Option<QuorumCertificate>, Vec<CouncilIndex>) {
        let message = kind.signing_message(chain_id, height, round, block_hash);
        let mut refused = Vec::new();
        for attempt in 0..2 {
            let voters: Vec<(CouncilIndex, BlsSignatureBytes)> = self
                .by_signer
                .iter()
                .filter(|(_, e)| &e.block_hash == block_hash)
                .map(|(&s, e)| (s, e.signature))
                .collect();
            if voters.len() < quorum.max(1) {
                return (None, refused);
            }
            let mut bitmap = signers::empty(council_size);
            voters
                .iter()
                .for_each(|(s, _)| signers::set(&mut bitmap, *s));
            let sigs: Vec<&BlsSignatureBytes> = voters.iter().map(|(_, sig)| sig).collect();
            if let Some(aggregate) = scheme.aggregate(&sigs) {
                if scheme.verify_aggregate(&bitmap, Domain::Vote, &message, &aggregate) {
                    for (s, _) in &voters {
                        if let Some(e) = self.by_signer.get_mut(s) {
                            e.verified = true;
                        }
                    }
                    let cert = QuorumCertificate {
                        kind,
                        height,
                        round,
                        block_hash: *block_hash,
                        signers: bitmap,
                        signature: aggregate,
                    };
                    return (Some(cert), refused);
                }
            }
            // The optimistic check failed: find the bad votes one by one, drop them, retry once.
            assert_eq!(
                attempt, 0,
                "an aggregate of individually verified votes must verify"
            );
            for (signer, signature) in voters {
                let entry_verified = self.by_signer.get(&signer).is_some_and(|e| e.verified);
                if !entry_verified && !scheme.verify(signer, Domain::Vote, &message, &signature) {
                    self.by_signer.remove(&signer);
                    refused.push(signer);
                } else if let Some(e) = self.by_signer.get_mut(&signer) {
                    e.verified = true;
                }
            }
        }
        (None, refused)
    }
}
