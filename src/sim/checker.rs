//! Invariant checkers: agreement, validity, honest evidence, chain order and liveness.
//!
//! - **Agreement**: no two honest nodes finalize different blocks at one height.
//! - **Validity**: every block an honest node finalizes extends its previous block, carries a
//!   header consistent with the election (committee digest, proposer on the committee, mix =
//!   `parent.mix xor H(reveal)`, reveal verifies), valid contents, and a commit certificate for
//!   exactly this block signed by a quorum of the committee elected for its height from the
//!   parent's mix, whose aggregate verifies under the run's scheme.
//! - **Evidence**: no honest node is ever named in an [`Evidence`].
//! - **Chain**: an honest node commits heights in order, one at a time.
//! - **Liveness** (checked by the simulator): after the heal time every honest node finalizes
//!   enough more heights within a bound.
//!
//! The checks take plain values, so they are tested on hand-made chains (see the tests).

use std::collections::BTreeMap;

use crate::consensus::{Evidence, Millis, SignatureScheme};
use crate::crypto::bls::Domain;
use crate::crypto::election::{next_mix, randao_message, Committee};
use crate::types::hash::Hash32;
use crate::types::{
    signers, Block, BlockHeader, CommitCertificate, CouncilIndex, Height, VoteKind,
};

use super::exec::block_is_valid;

/// What a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// Two different blocks finalized at one height.
    Agreement,
    /// A finalized block or its certificate is not valid.
    Validity,
    /// An honest node was named in evidence.
    HonestEvidence,
    /// An honest node committed out of order.
    Chain,
    /// Not enough progress after the heal time.
    Liveness,
    /// The run panicked (a machine assertion, or a simulator bug).
    Panic,
}

impl ViolationKind {
    /// Whether this is a safety violation (everything but liveness).
    pub fn is_safety(self) -> bool {
        self != ViolationKind::Liveness
    }

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::Agreement => "agreement",
            ViolationKind::Validity => "validity",
            ViolationKind::HonestEvidence => "honest-evidence",
            ViolationKind::Chain => "chain",
            ViolationKind::Liveness => "liveness",
            ViolationKind::Panic => "panic",
        }
    }
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub kind: ViolationKind,
    /// Virtual time it was detected.
    pub at: Millis,
    /// What happened.
    pub description: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {} ms: {}",
            self.kind.name(),
            self.at,
            self.description
        )
    }
}

/// Short hex of a hash for messages.
pub fn short(h: &Hash32) -> String {
    hex::encode(&h[..4])
}

/// Checks everything about one finalized block that needs only its parent (validity).
/// `council`/`committee` are the run's sizes; `scheme` verifies signatures.
pub fn check_finalized<S: SignatureScheme>(
    scheme: &S,
    chain_id: u64,
    council: usize,
    committee_size: usize,
    parent: &BlockHeader,
    block: &Block,
    cert: &CommitCertificate,
) -> Result<(), String> {
    let h = &block.header;
    let hash = block.hash();
    if h.height != parent.height + 1 || h.parent_hash != parent.hash() {
        return Err(format!(
            "block {} at height {} does not extend the parent {} at height {}",
            short(&hash),
            h.height,
            short(&parent.hash()),
            parent.height
        ));
    }
    if cert.kind != VoteKind::Commit {
        return Err(format!(
            "certificate of height {} is a {} certificate",
            h.height,
            cert.kind.name()
        ));
    }
    if cert.height != h.height || cert.block_hash != hash {
        return Err(format!(
            "certificate is for height {} block {}, not height {} block {}",
            cert.height,
            short(&cert.block_hash),
            h.height,
            short(&hash)
        ));
    }
    let committee = Committee::elect(council, committee_size, h.height, &parent.mix);
    signers::check_canonical(&cert.signers, council)
        .map_err(|e| format!("certificate of height {}: {e}", h.height))?;
    let outside: Vec<CouncilIndex> = signers::iter(&cert.signers)
        .filter(|&s| !committee.contains(s))
        .collect();
    if !outside.is_empty() {
        return Err(format!(
            "certificate of height {} signed by {:?}, not on the committee {:?}",
            h.height,
            outside,
            committee.members()
        ));
    }
    let count = signers::count(&cert.signers);
    if count < committee.quorum() {
        return Err(format!(
            "certificate of height {} has {} signers {:?}, below the quorum {} of {}",
            h.height,
            count,
            signers::iter(&cert.signers).collect::<Vec<_>>(),
            committee.quorum(),
            committee.size()
        ));
    }
    if !scheme.verify_aggregate(
        &cert.signers,
        Domain::Vote,
        &cert.signing_message(chain_id),
        &cert.signature,
    ) {
        return Err(format!(
            "certificate of height {} round {}: the aggregate signature does not verify",
            h.height, cert.round
        ));
    }
    if h.committee_digest != committee.digest() {
        return Err(format!(
            "block of height {} carries committee digest {}, the elected committee's is {}",
            h.height,
            short(&h.committee_digest),
            short(&committee.digest())
        ));
    }
    if !committee.contains(h.proposer) || committee.proposer(h.round) != h.proposer {
        return Err(format!(
            "block of height {} round {} proposed by {}, the round's elected proposer is {}",
            h.height,
            h.round,
            h.proposer,
            committee.proposer(h.round)
        ));
    }
    if !scheme.verify(
        h.proposer,
        Domain::Randao,
        &randao_message(chain_id, h.height),
        &h.randao_reveal,
    ) {
        return Err(format!(
            "block of height {}: the randao reveal does not verify under proposer {}",
            h.height, h.proposer
        ));
    }
    if h.mix != next_mix(&parent.mix, &h.randao_reveal) {
        return Err(format!(
            "block of height {}: mix is not parent.mix xor H(reveal)",
            h.height
        ));
    }
    if !block_is_valid(block) {
        return Err(format!(
            "block {} of height {} has invalid contents (roots do not match)",
            short(&hash),
            h.height
        ));
    }
    Ok(())
}

/// The run's safety checker: fed every commit and every evidence as they happen.
#[derive(Debug)]
pub struct Checker<S> {
    scheme: S,
    chain_id: u64,
    council: usize,
    committee: usize,
    honest: Vec<bool>,
    finalized: BTreeMap<Height, (Hash32, String)>,
    /// Violations found so far.
    pub violations: Vec<Violation>,
    /// Evidence against Byzantine members (expected in Byzantine scenarios).
    pub byzantine_evidence: u64,
    /// Commits checked.
    pub commits: u64,
}

impl<S: SignatureScheme> Checker<S> {
    /// A checker for a run; `honest[i]` says whether council member `i` is honest.
    pub fn new(
        scheme: S,
        chain_id: u64,
        council: usize,
        committee: usize,
        honest: Vec<bool>,
    ) -> Checker<S> {
        Checker {
            scheme,
            chain_id,
            council,
            committee,
            honest,
            finalized: BTreeMap::new(),
            violations: Vec::new(),
            byzantine_evidence: 0,
            commits: 0,
        }
    }

    /// Whether council member `i` is honest.
    pub fn is_honest(&self, i: CouncilIndex) -> bool {
        self.honest.get(i as usize).copied().unwrap_or(false)
    }

    fn violate(&mut self, kind: ViolationKind, at: Millis, description: String) {
        // One report per distinct description is enough (a broken node repeats itself).
        if self.violations.len() < 100
            && !self
                .violations
                .iter()
                .any(|v| v.kind == kind && v.description == description)
        {
            self.violations.push(Violation {
                kind,
                at,
                description,
            });
        }
    }

    /// An honest node `node` (label for reports) finalized `block` on top of `parent` (its own
    /// previous durable block, or the genesis).
    pub fn on_commit(
        &mut self,
        at: Millis,
        node: &str,
        parent: &BlockHeader,
        block: &Block,
        cert: &CommitCertificate,
    ) {
        self.commits += 1;
        let height = block.header.height;
        let hash = block.hash();
        if height != parent.height + 1 {
            self.violate(
                ViolationKind::Chain,
                at,
                format!(
                    "{node} committed height {height} on top of height {}",
                    parent.height
                ),
            );
            return;
        }
        if let Err(e) = check_finalized(
            &self.scheme,
            self.chain_id,
            self.council,
            self.committee,
            parent,
            block,
            cert,
        ) {
            self.violate(ViolationKind::Validity, at, format!("{node}: {e}"));
        }
        match self.finalized.get(&height) {
            None => {
                self.finalized.insert(height, (hash, node.to_string()));
            }
            Some((first, first_node)) if *first != hash => {
                let description = format!(
                    "height {height}: {first_node} finalized {} but {node} finalized {} (round {})",
                    short(first),
                    short(&hash),
                    cert.round
                );
                self.violate(ViolationKind::Agreement, at, description);
            }
            Some(_) => {}
        }
    }

    /// Node `reporter` produced `evidence`.
    pub fn on_evidence(&mut self, at: Millis, reporter: &str, evidence: &Evidence) {
        if self.is_honest(evidence.signer) {
            self.violate(
                ViolationKind::HonestEvidence,
                at,
                format!(
                    "{reporter} accused honest n{} of two {} votes at height {} round {}: {} and {}",
                    evidence.signer,
                    evidence.kind.name(),
                    evidence.height,
                    evidence.round,
                    short(&evidence.first.0),
                    short(&evidence.second.0)
                ),
            );
        } else {
            self.byzantine_evidence += 1;
        }
    }

    /// Records a chain-order problem found by the driver.
    pub fn on_chain_error(&mut self, at: Millis, description: String) {
        self.violate(ViolationKind::Chain, at, description);
    }

    /// Records a liveness failure found by the driver.
    pub fn on_liveness(&mut self, at: Millis, description: String) {
        self.violate(ViolationKind::Liveness, at, description);
    }

    /// The highest height anyone finalized.
    pub fn highest(&self) -> Height {
        self.finalized.keys().next_back().copied().unwrap_or(0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::consensus::FastScheme;
    use crate::types::{BlsSignatureBytes, FinalizedBlock, QuorumCertificate};

    use super::super::exec::{state_root, tx_root};
    use super::super::rng::SimRng;

    pub const CHAIN: u64 = 1001;

    pub fn genesis() -> BlockHeader {
        crate::sim::world::genesis_header(0xc4ec)
    }

    /// A correct child of `parent`: elected proposer, reveal, mix, digest, valid contents, and
    /// a commit certificate signed by the first `signers` committee members (or a quorum).
    pub fn child(
        parent: &BlockHeader,
        n: usize,
        c: usize,
        rng: &mut SimRng,
        signers_count: Option<usize>,
    ) -> FinalizedBlock {
        let height = parent.height + 1;
        let committee = Committee::elect(n, c, height, &parent.mix);
        let proposer = committee.proposer(0);
        let reveal =
            FastScheme::new(proposer, n).sign(Domain::Randao, &randao_message(CHAIN, height));
        let txs = super::super::exec::random_transactions(rng, 0, 3);
        let parent_hash = parent.hash();
        let header = BlockHeader {
            parent_hash,
            height,
            round: 0,
            timestamp_ms: parent.timestamp_ms + 500,
            proposer,
            randao_reveal: reveal,
            mix: next_mix(&parent.mix, &reveal),
            transactions_root: tx_root(&txs),
            state_root: state_root(&parent_hash, &txs),
            committee_digest: committee.digest(),
        };
        let block = Block {
            header,
            transactions: txs,
        };
        let certificate = certify(
            &block,
            n,
            &committee.members()[..signers_count.unwrap_or(committee.quorum())],
        );
        FinalizedBlock { block, certificate }
    }

    pub fn certify(block: &Block, n: usize, who: &[CouncilIndex]) -> QuorumCertificate {
        let msg = VoteKind::Commit.signing_message(CHAIN, block.header.height, 0, &block.hash());
        let mut bitmap = signers::empty(n);
        let mut sigs: Vec<BlsSignatureBytes> = Vec::new();
        for &s in who {
            signers::set(&mut bitmap, s);
            sigs.push(FastScheme::new(s, n).sign(Domain::Vote, &msg));
        }
        let refs: Vec<&BlsSignatureBytes> = sigs.iter().collect();
        QuorumCertificate {
            kind: VoteKind::Commit,
            height: block.header.height,
            round: 0,
            block_hash: block.hash(),
            signers: bitmap,
            signature: FastScheme::new(0, n).aggregate(&refs).unwrap_or([0; 96]),
        }
    }

    fn chain(n: usize, c: usize, len: usize, seed: u64) -> Vec<FinalizedBlock> {
        let mut rng = SimRng::new(seed);
        let mut out: Vec<FinalizedBlock> = Vec::new();
        let mut parent = genesis();
        for _ in 0..len {
            let f = child(&parent, n, c, &mut rng, None);
            parent = f.block.header.clone();
            out.push(f);
        }
        out
    }

    fn checker(n: usize, c: usize) -> Checker<FastScheme> {
        Checker::new(FastScheme::new(0, n), CHAIN, n, c, vec![true; n])
    }

    fn check_one(
        n: usize,
        c: usize,
        parent: &BlockHeader,
        f: &FinalizedBlock,
    ) -> Result<(), String> {
        check_finalized(
            &FastScheme::new(0, n),
            CHAIN,
            n,
            c,
            parent,
            &f.block,
            &f.certificate,
        )
    }

    #[test]
    fn a_correct_chain_passes_on_every_node() {
        for (n, c) in [(4, 4), (7, 4), (10, 7)] {
            let ch = chain(n, c, 20, 1);
            let mut k = checker(n, c);
            for node in ["n0", "n1"] {
                let mut parent = genesis();
                for f in &ch {
                    k.on_commit(10, node, &parent, &f.block, &f.certificate);
                    parent = f.block.header.clone();
                }
            }
            assert!(k.violations.is_empty(), "{:?}", k.violations);
            assert_eq!(k.highest(), 20);
            assert_eq!(k.commits, 40);
        }
    }

    #[test]
    fn two_blocks_at_one_height_break_agreement() {
        let a = chain(4, 4, 3, 1);
        let b = chain(4, 4, 3, 2); // other transactions: other hashes from height 1 on
        let mut k = checker(4, 4);
        k.on_commit(1, "n0", &genesis(), &a[0].block, &a[0].certificate);
        k.on_commit(2, "n1", &genesis(), &b[0].block, &b[0].certificate);
        assert_eq!(k.violations.len(), 1, "{:?}", k.violations);
        assert_eq!(k.violations[0].kind, ViolationKind::Agreement);
        assert!(k.violations[0].description.contains("height 1"));
        assert!(k.violations[0].kind.is_safety());
    }

    #[test]
    fn bad_certificates_and_headers_are_invalid() {
        let (n, c) = (7, 4);
        let mut rng = SimRng::new(3);
        let g = genesis();
        let good = child(&g, n, c, &mut rng, None);
        assert_eq!(check_one(n, c, &g, &good), Ok(()));
        let committee = Committee::elect(n, c, 1, &g.mix);
        let outsider = (0..n as u32).find(|&i| !committee.contains(i)).unwrap();

        let expect = |f: &FinalizedBlock, needle: &str| {
            let e = check_one(n, c, &g, f).expect_err(needle);
            assert!(e.contains(needle), "`{e}` lacks `{needle}`");
        };
        // One signer short of the quorum (quorum of 4 is 3).
        let mut f = good.clone();
        f.certificate = certify(&f.block, n, &committee.members()[..2]);
        expect(&f, "below the quorum");
        // A signer off the committee.
        let mut who = committee.members()[..3].to_vec();
        who[0] = outsider;
        f.certificate = certify(&f.block, n, &who);
        expect(&f, "not on the committee");
        // The aggregate does not match the bitmap.
        let mut f = good.clone();
        f.certificate.signature[5] ^= 1;
        expect(&f, "does not verify");
        // A prepare certificate.
        let mut f = good.clone();
        f.certificate.kind = VoteKind::Prepare;
        expect(&f, "prepare certificate");
        // For another block.
        let mut f = good.clone();
        f.certificate.block_hash = [9; 32];
        expect(&f, "not height 1 block");
        // A non-canonical bitmap.
        let mut f = good.clone();
        f.certificate.signers.push(0);
        expect(&f, "bitmap");
        // Invalid contents.
        let mut f = good.clone();
        f.block.header.state_root = [1; 32];
        f.certificate = certify(&f.block, n, &committee.members()[..3]);
        expect(&f, "invalid contents");
        // A wrong mix.
        let mut f = good.clone();
        f.block.header.mix = [2; 32];
        f.certificate = certify(&f.block, n, &committee.members()[..3]);
        expect(&f, "mix");
        // A proposer that was not elected.
        let mut f = good.clone();
        f.block.header.proposer = outsider;
        f.certificate = certify(&f.block, n, &committee.members()[..3]);
        expect(&f, "elected proposer");
        // Not extending the parent.
        let mut f = good.clone();
        f.block.header.parent_hash = [3; 32];
        expect(&f, "does not extend");
        // A wrong committee digest.
        let mut f = good.clone();
        f.block.header.committee_digest = [4; 32];
        f.certificate = certify(&f.block, n, &committee.members()[..3]);
        expect(&f, "committee digest");
    }

    #[test]
    fn evidence_against_an_honest_node_is_a_violation() {
        let mut k = Checker::new(
            FastScheme::new(0, 4),
            CHAIN,
            4,
            4,
            vec![true, true, false, true],
        );
        let ev = |signer| Evidence {
            signer,
            kind: crate::consensus::EvidenceKind::Prepare,
            height: 3,
            round: 0,
            first: ([1; 32], [0; 96]),
            second: ([2; 32], [0; 96]),
        };
        k.on_evidence(5, "n0", &ev(2));
        assert!(k.violations.is_empty());
        assert_eq!(k.byzantine_evidence, 1);
        k.on_evidence(6, "n0", &ev(1));
        assert_eq!(k.violations.len(), 1);
        assert_eq!(k.violations[0].kind, ViolationKind::HonestEvidence);
        k.on_evidence(7, "n0", &ev(1));
        assert_eq!(k.violations.len(), 1, "the same report once");
    }

    #[test]
    fn out_of_order_commits_are_chain_violations() {
        let ch = chain(4, 4, 3, 1);
        let mut k = checker(4, 4);
        k.on_commit(1, "n0", &genesis(), &ch[1].block, &ch[1].certificate);
        assert_eq!(k.violations.len(), 1);
        assert_eq!(k.violations[0].kind, ViolationKind::Chain);
    }
}
