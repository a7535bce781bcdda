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
use crate::types::hash::Hash32;
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
    /// Stored in place of an unverified vote of the same signer whose signature turned out
    /// not to verify (a forgery sent ahead of the real vote): the signer sent a bad signature.
    ForgeryReplaced,
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
                // An unverified stored signature may be a forgery sent ahead of the real vote:
                // a different signature that verifies replaces it.
                if !existing.verified && existing.signature != vote.signature {
                    let valid = verified
                        || scheme.verify(
                            vote.signer,
                            Domain::Vote,
                            &vote.signing_message(chain_id),
                            &vote.signature,
                        );
                    if valid {
                        existing.signature = vote.signature;
                        existing.verified = true;
                        return Added::ForgeryReplaced;
                    }
                }
                if verified {
                    existing.verified |= existing.signature == vote.signature;
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
                return Added::ForgeryReplaced;
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

    /// The hash and signature `signer` voted with, if any.
    pub fn signed_vote_of(&self, signer: CouncilIndex) -> Option<(Hash32, BlsSignatureBytes)> {
        self.by_signer
            .get(&signer)
            .map(|e| (e.block_hash, e.signature))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::scheme::FastScheme;

    const CHAIN: u64 = 1001;

    fn vote(signer: CouncilIndex, hash: Hash32, forged: bool) -> Vote {
        let mut v = Vote {
            kind: VoteKind::Commit,
            height: 5,
            round: 0,
            block_hash: hash,
            signer,
            signature: [0; 96],
        };
        v.signature = if forged {
            [0xee; 96]
        } else {
            FastScheme::new(signer, 4).sign(Domain::Vote, &v.signing_message(CHAIN))
        };
        v
    }

    fn certify(set: &mut VoteSet, hash: Hash32) -> (Option<QuorumCertificate>, Vec<CouncilIndex>) {
        let scheme = FastScheme::new(0, 4);
        set.certify(&scheme, CHAIN, 4, VoteKind::Commit, 5, 0, &hash, 3)
    }

    #[test]
    fn a_quorum_certifies_with_one_aggregate_check() {
        let scheme = FastScheme::new(0, 4);
        let mut set = VoteSet::default();
        for s in 0..3 {
            assert_eq!(
                set.add(&scheme, CHAIN, &vote(s, [1; 32], false), false),
                Added::Stored
            );
        }
        let (cert, refused) = certify(&mut set, [1; 32]);
        let cert = cert.expect("quorum");
        assert!(refused.is_empty());
        assert_eq!(
            signers::iter(&cert.signers).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(scheme.verify_aggregate(
            &cert.signers,
            Domain::Vote,
            &cert.signing_message(CHAIN),
            &cert.signature
        ));
    }

    #[test]
    fn a_bad_signature_is_found_named_and_dropped() {
        let scheme = FastScheme::new(0, 4);
        let mut set = VoteSet::default();
        set.add(&scheme, CHAIN, &vote(0, [1; 32], false), false);
        set.add(&scheme, CHAIN, &vote(1, [1; 32], true), false);
        set.add(&scheme, CHAIN, &vote(2, [1; 32], false), false);
        let (cert, refused) = certify(&mut set, [1; 32]);
        assert!(cert.is_none(), "two valid votes are below the quorum of 3");
        assert_eq!(refused, vec![1]);
        // Signer 1's real vote still counts afterwards.
        set.add(&scheme, CHAIN, &vote(1, [1; 32], false), false);
        assert!(certify(&mut set, [1; 32]).0.is_some());
    }

    #[test]
    fn a_forgery_sent_ahead_does_not_shadow_the_real_vote() {
        let scheme = FastScheme::new(0, 4);
        let mut set = VoteSet::default();
        set.add(&scheme, CHAIN, &vote(1, [1; 32], true), false);
        assert_eq!(
            set.add(&scheme, CHAIN, &vote(1, [1; 32], false), false),
            Added::ForgeryReplaced,
            "the forgery is reported"
        );
        set.add(&scheme, CHAIN, &vote(0, [1; 32], false), false);
        set.add(&scheme, CHAIN, &vote(2, [1; 32], false), false);
        let (cert, refused) = certify(&mut set, [1; 32]);
        assert!(cert.is_some() && refused.is_empty());
    }

    #[test]
    fn two_valid_votes_for_different_blocks_are_evidence() {
        let scheme = FastScheme::new(0, 4);
        let mut set = VoteSet::default();
        let first = vote(2, [1; 32], false);
        set.add(&scheme, CHAIN, &first, false);
        match set.add(&scheme, CHAIN, &vote(2, [9; 32], false), false) {
            Added::Equivocation { first: (hash, sig) } => {
                assert_eq!((hash, sig), ([1; 32], first.signature))
            }
            other => panic!("expected evidence, got {other:?}"),
        }
        // A forged second vote is no evidence against the signer.
        assert_eq!(
            set.add(&scheme, CHAIN, &vote(2, [8; 32], true), false),
            Added::BadSignature
        );
        assert_eq!(set.vote_of(2), Some([1; 32]), "the first vote is kept");
    }
}
