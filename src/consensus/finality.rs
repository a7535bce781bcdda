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
//! 4. its body is the one the header commits to: the header's `transactions_root` is the root
//!    of the transactions carried (each hashed once, with keccak-256; the hashes are handed
//!    back, so nobody downstream hashes them again);
//! 5. its aggregate signature verifies: one `fast_aggregate_verify` of the signers' keys on the
//!    certificate's signing message under the vote domain.
//!
//! Rule 4 matters because the certificate signs the header alone: a peer can pair a genuine,
//! certified header with other transactions. Such a block is as much a lie as a forged
//! certificate, and is refused the same way (its sender is banned). The cheap rules 1 to 4 run
//! before any pairing, so a forged body costs its hashes, never a signature check.
//!
//! A *run* of finalized blocks (a sync answer: each extends the one before) is checked with one
//! batched multi-pairing ([`SignatureScheme::verify_aggregates_batch`]); if the batch fails, the
//! blocks are checked one by one up to the first bad one, so a bad certificate costs at most
//! one batch plus one check per block before it.

use super::machine::ConsensusConfig;
use super::scheme::SignatureScheme;
use crate::crypto::bls::Domain;
use crate::crypto::election::Committee;
use crate::types::chain::transactions_root_of_hashes;
use crate::types::hash::{keccak256, Hash32};
use crate::types::{
    signers, Block, BlockHeader, BlsSignatureBytes, FinalizedBlock, Height, QuorumCertificate,
    VoteKind,
};

/// Why the first block of a run that is not final is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFinal {
    /// Rule 1: it does not extend the block before it.
    Unlinked,
    /// Rules 2 and 3: the certificate names another block or has the wrong shape.
    CertificateShape,
    /// Rule 4: the transactions are not the ones the header commits to.
    Body,
    /// Rule 5: the aggregate signature does not verify.
    Signature,
}

impl NotFinal {
    /// What the sender did, for logs and ban reasons.
    pub fn describe(self) -> &'static str {
        match self {
            NotFinal::Unlinked => "does not extend the chain",
            NotFinal::CertificateShape => "carries a malformed commit certificate",
            NotFinal::Body => "carries transactions its header does not commit to",
            NotFinal::Signature => "carries a commit certificate whose signature does not verify",
        }
    }
}

/// The verdict on a run: how many leading blocks are final, their transactions' hashes, and
/// why the block after them is not (when there is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalPrefix {
    /// The keccak-256 hash of every transaction of each final block, in order: one entry per
    /// final block (so `tx_hashes.len()` is the prefix's length).
    pub tx_hashes: Vec<Vec<Hash32>>,
    /// Why block `tx_hashes.len()` of the run is not final, if the run has one more.
    pub refused: Option<NotFinal>,
}

impl FinalPrefix {
    /// How many leading blocks are final.
    pub fn len(&self) -> usize {
        self.tx_hashes.len()
    }

    /// No block of the run is final.
    pub fn is_empty(&self) -> bool {
        self.tx_hashes.is_empty()
    }
}

/// Rule 4: the hashes of `block`'s transactions when its header commits to them.
pub fn body_hashes(block: &Block) -> Option<Vec<Hash32>> {
    let hashes: Vec<Hash32> = block
        .transactions
        .iter()
        .map(|tx| keccak256(&tx.bytes))
        .collect();
    (transactions_root_of_hashes(hashes.iter().copied()) == block.header.transactions_root)
        .then_some(hashes)
}

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

/// Which leading blocks of `run` are final on top of `head`, whose successor's committee is
/// `committee` (rules 1 to 5 for each block, each height's committee elected from the header
/// before it). A run of two or more is first checked with one multi-pairing.
pub fn final_prefix<S: SignatureScheme>(
    scheme: &S,
    config: &ConsensusConfig,
    head: &BlockHeader,
    committee: &Committee,
    run: &[FinalizedBlock],
) -> FinalPrefix {
    // Rules 1 to 4 for every block (each height's committee elected from the header before).
    let mut parent = head.clone();
    let mut next_committee = committee.clone();
    let mut tx_hashes = Vec::with_capacity(run.len());
    let mut refused = None;
    for f in run {
        let height = parent.height + 1;
        if f.block.header.height != height || f.block.header.parent_hash != parent.hash() {
            refused = Some(NotFinal::Unlinked);
            break;
        }
        if f.certificate.block_hash != f.block.hash()
            || !certificate_shape_ok(
                &f.certificate,
                VoteKind::Commit,
                height,
                config.council_size,
                &next_committee,
            )
        {
            refused = Some(NotFinal::CertificateShape);
            break;
        }
        let Some(hashes) = body_hashes(&f.block) else {
            refused = Some(NotFinal::Body);
            break;
        };
        tx_hashes.push(hashes);
        parent = f.block.header.clone();
        next_committee = Committee::elect(
            config.council_size,
            config.committee_size,
            height + 1,
            &parent.mix,
        );
    }
    let run = &run[..tx_hashes.len()];
    if run.is_empty() {
        return FinalPrefix { tx_hashes, refused };
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
    // Rule 5: one batch for a run, then one by one on failure.
    if items.len() > 1 && scheme.verify_aggregates_batch(Domain::Vote, &items) {
        return FinalPrefix { tx_hashes, refused };
    }
    let signed = items
        .iter()
        .take_while(|(signers, message, signature)| {
            scheme.verify_aggregate(signers, Domain::Vote, message, signature)
        })
        .count();
    if signed < tx_hashes.len() {
        tx_hashes.truncate(signed);
        refused = Some(NotFinal::Signature);
    }
    FinalPrefix { tx_hashes, refused }
}
