//! Checking that blocks are final: the commit-certificate rules shared by the council's
//! [`Machine`](super::Machine) (catch-up) and the [`Follower`](super::Follower) of PNs and ENs.
//!
//! A [`FinalizedBlock`] at height `h` is final for a node whose head is the header at `h - 1`
//! when:
//! 1. the block extends the head: `height = head.height + 1` and `parent_hash = head.hash()`;
//! 2. its certificate names it: `certificate.block_hash = block.hash()`;
//! 3. the certificate has the right shape: kind COMMIT, height `h`, a canonical signer bitmap
//!    over the council, every signer a member of the committee elected for `h` (from the
//!    head's randao mix), and at least the committee's quorum of signers;
//! 4. its aggregate signature verifies: one `fast_aggregate_verify` of the signers' keys on the
//!    certificate's signing message under the vote domain.
//!
//! A *run* of finalized blocks (a sync answer: each extends the one before) is checked with one
//! batched multi-pairing ([`SignatureScheme::verify_aggregates_batch`]); if the batch fails, the
//! blocks are checked one by one up to the first bad one, so a bad certificate costs at most
//! one batch plus one check per block before it.

use super::machine::ConsensusConfig;
use super::scheme::SignatureScheme;
use crate::crypto::bls::Domain;
use crate::crypto::election::Committee;
use crate::types::{
    signers, BlockHeader, BlsSignatureBytes, FinalizedBlock, Height, QuorumCertificate, VoteKind,
};

/// Everything about a certificate but its signature (rule 3): kind, height, a canonical bitmap
/// of committee members only, at least a quorum of them.
pub fn certificate_shape_ok(
    cert: &QuorumCertificate,
    kind: VoteKind,
    height: Height,
    council_size: usize,
    committee: &Committee,
) -> bool {
    cert.kind == kind
        && cert.height == height
        && signers::check_canonical(&cert.signers, council_size).is_ok()
        && signers::iter(&cert.signers).all(|s| committee.contains(s))
        && signers::count(&cert.signers) >= committee.quorum()
}

/// How many leading blocks of `run` are final on top of `head`, whose successor's committee is
/// `committee` (rules 1 to 4 for each block, each height's committee elected from the header
/// before it). `batch` allows the one-multi-pairing check of the whole run first (worth it for
/// runs of two or more).
pub fn final_prefix<S: SignatureScheme>(
    scheme: &S,
    config: &ConsensusConfig,
    head: &BlockHeader,
    committee: &Committee,
    run: &[FinalizedBlock],
) -> usize {
    // Rules 1 to 3 for every block, and each one's committee.
    let mut committees = Vec::with_capacity(run.len());
    let mut parent = head.clone();
    let mut next_committee = committee.clone();
    let mut linked = 0;
    for f in run {
        let height = parent.height + 1;
        if f.block.header.height != height
            || f.block.header.parent_hash != parent.hash()
            || f.certificate.block_hash != f.block.hash()
            || !certificate_shape_ok(
                &f.certificate,
                VoteKind::Commit,
                height,
                config.council_size,
                &next_committee,
            )
        {
            break;
        }
        linked += 1;
        committees.push(next_committee);
        parent = f.block.header.clone();
        next_committee = Committee::elect(
            config.council_size,
            config.committee_size,
            height + 1,
            &parent.mix,
        );
    }
    let run = &run[..linked];
    if run.is_empty() {
        return 0;
    }
    let messages: Vec<[u8; 53]> = run
        .iter()
        .map(|f| f.certificate.signing_message(config.chain_id))
        .collect();
    let items: Vec<(&[u8], &[u8], &BlsSignatureBytes)> = run
        .iter()
        .zip(&messages)
        .map(|(f, m)| {
            (
                f.certificate.signers.as_slice(),
                m.as_slice(),
                &f.certificate.signature,
            )
        })
        .collect();
    // Rule 4: one batch for a run, then one by one on failure.
    if items.len() > 1 && scheme.verify_aggregates_batch(Domain::Vote, &items) {
        return items.len();
    }
    items
        .iter()
        .take_while(|(signers, message, signature)| {
            scheme.verify_aggregate(signers, Domain::Vote, message, signature)
        })
        .count()
}
