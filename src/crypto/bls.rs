//! BLS12-381 signatures (blst, `min_pk`): keys, proofs of possession, votes, aggregates and
//! quorum certificates.
//!
//! Scheme: the IETF BLS signature draft's *proof-of-possession* ciphersuite over BLS12-381 with
//! 48-byte compressed G1 public keys and 96-byte compressed G2 signatures
//! (`BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_`). Each purpose has its own domain separation
//! tag ([`Domain`]), so a signature made for one purpose never verifies for another.
//!
//! Invariants:
//! - A public key is used only after it was decompressed, checked to be in the G1 subgroup and
//!   not the identity, and (for council keys) its proof of possession verified. This is what
//!   makes `fast_aggregate_verify` safe against rogue-key attacks: [`CouncilKeys`] holds only such
//!   keys, decompressed once and cached.
//! - Signatures from outside are subgroup-checked when verified (`sig_groupcheck = true`).
//! - A certificate is checked in this order: canonical signer bitmap, every signer a committee
//!   member, at least a quorum of signers, then one pairing check of the aggregate signature
//!   against the sum of the signers' cached keys ([`CouncilKeys::verify_certificate`]).
//! - Batch verification of many certificates uses random 64-bit scalars from caller-supplied
//!   entropy, so a forger cannot make invalid certificates cancel out; the caller must supply
//!   fresh unpredictable entropy (the consensus core is sans-IO: randomness is an input).

use blst::min_pk::{AggregatePublicKey, AggregateSignature, PublicKey, SecretKey, Signature};
use blst::BLST_ERROR;

use crate::crypto::election::Committee;
use crate::types::consensus::{ArchivedQuorumCertificate, QuorumCertificate, VoteKind};
use crate::types::hash::{keccak256_parts, Hash32};
use crate::types::MAX_COUNCIL_SIZE;
use crate::types::{signers, BlsPublicKeyBytes, BlsSignatureBytes, CouncilIndex, Height, Round};

/// Domain separation tag for consensus votes, proposals and round changes.
pub const DST_VOTE: &[u8] = b"CORECELL_V1_VOTE_BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
/// Domain separation tag for randao reveals.
pub const DST_RANDAO: &[u8] = b"CORECELL_V1_RANDAO_BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
/// Domain separation tag for proofs of possession.
pub const DST_POP: &[u8] = b"CORECELL_V1_BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
/// Domain separation tag for the peer handshake.
pub const DST_HANDSHAKE: &[u8] =
    b"CORECELL_V1_HANDSHAKE_BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// What a signature is for. Each purpose signs under its own domain tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// Votes, proposals, round changes.
    Vote,
    /// Randao reveals.
    Randao,
    /// Proof of possession of a key.
    ProofOfPossession,
    /// Peer handshake challenges.
    Handshake,
}

impl Domain {
    /// The domain separation tag.
    pub const fn dst(self) -> &'static [u8] {
        match self {
            Domain::Vote => DST_VOTE,
            Domain::Randao => DST_RANDAO,
            Domain::ProofOfPossession => DST_POP,
            Domain::Handshake => DST_HANDSHAKE,
        }
    }
}

/// Why a BLS operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlsError {
    /// Key material too short, or not a valid scalar.
    #[error("invalid BLS secret key")]
    BadSecretKey,
    /// Not a valid compressed G1 point in the subgroup, or the identity.
    #[error("invalid BLS public key: {0:?}")]
    BadPublicKey(BLST_ERROR),
    /// Not a valid compressed G2 point.
    #[error("invalid BLS signature encoding: {0:?}")]
    BadSignatureEncoding(BLST_ERROR),
    /// The signature does not verify.
    #[error("BLS signature does not verify")]
    VerifyFailed,
    /// The proof of possession does not verify.
    #[error("proof of possession does not verify for this key")]
    BadProofOfPossession,
    /// Nothing to aggregate.
    #[error("cannot aggregate an empty set")]
    Empty,
    /// A signer index outside the council.
    #[error("signer {0} is not a council member")]
    UnknownSigner(CouncilIndex),
}

/// A BLS secret key. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct BlsSecretKey(SecretKey);

impl std::fmt::Debug for BlsSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlsSecretKey(<secret>)")
    }
}

/// Key-generation info string (the `key_info` of the IETF KeyGen).
const KEYGEN_INFO: &[u8] = b"corecell-bls-keygen-v1";

impl BlsSecretKey {
    /// Derives a key from 32 bytes of seed material (IETF KeyGen with our info string). The
    /// same seed always gives the same key.
    pub fn from_seed(seed: &[u8; 32]) -> BlsSecretKey {
        match SecretKey::key_gen(seed, KEYGEN_INFO) {
            Ok(sk) => BlsSecretKey(sk),
            // key_gen fails only for input keying material shorter than 32 bytes.
            Err(e) => unreachable!("key_gen with a 32-byte seed failed: {e:?}"),
        }
    }

    /// A fresh key from the operating system's random source.
    pub fn random() -> Result<BlsSecretKey, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(BlsSecretKey::from_seed(&seed))
    }

    /// Parses a 32-byte big-endian scalar (refuses zero and values outside the field).
    pub fn from_bytes(bytes: &[u8]) -> Result<BlsSecretKey, BlsError> {
        SecretKey::from_bytes(bytes)
            .map(BlsSecretKey)
            .map_err(|_| BlsError::BadSecretKey)
    }

    /// The 32-byte big-endian scalar. Handle with care.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key.
    pub fn public_key(&self) -> BlsPublicKey {
        BlsPublicKey(self.0.sk_to_pk())
    }

    /// Signs `message` under `domain`'s tag.
    pub fn sign(&self, domain: Domain, message: &[u8]) -> BlsSignature {
        BlsSignature(self.0.sign(message, domain.dst(), &[]))
    }

    /// A proof of possession: the signature of the compressed public key under [`DST_POP`].
    pub fn prove_possession(&self) -> BlsSignature {
        let pk = self.public_key().to_bytes();
        self.sign(Domain::ProofOfPossession, &pk)
    }
}

/// A BLS public key, decompressed and validated (in G1, not the identity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlsPublicKey(PublicKey);

impl BlsPublicKey {
    /// Decompresses and validates a 48-byte key: on the curve, in the subgroup, not the
    /// identity.
    pub fn from_bytes(bytes: &[u8]) -> Result<BlsPublicKey, BlsError> {
        PublicKey::key_validate(bytes)
            .map(BlsPublicKey)
            .map_err(BlsError::BadPublicKey)
    }

    /// The 48-byte compressed form.
    pub fn to_bytes(&self) -> BlsPublicKeyBytes {
        self.0.to_bytes()
    }

    /// Verifies `signature` on `message` under `domain`'s tag.
    pub fn verify(
        &self,
        domain: Domain,
        message: &[u8],
        signature: &BlsSignature,
    ) -> Result<(), BlsError> {
        match signature
            .0
            .verify(true, message, domain.dst(), &[], &self.0, false)
        {
            BLST_ERROR::BLST_SUCCESS => Ok(()),
            _ => Err(BlsError::VerifyFailed),
        }
    }

    /// Verifies a proof of possession of this key.
    pub fn verify_possession(&self, proof: &BlsSignature) -> Result<(), BlsError> {
        let pk = self.to_bytes();
        self.verify(Domain::ProofOfPossession, &pk, proof)
            .map_err(|_| BlsError::BadProofOfPossession)
    }

    /// A short identity of the key for logs and node ids: the first 20 bytes of
    /// keccak-256 of the compressed key.
    pub fn node_id(&self) -> [u8; 20] {
        node_id_of(&self.to_bytes())
    }
}

/// The node id of a compressed BLS public key: `keccak256(pk)[..20]`.
pub fn node_id_of(pk: &BlsPublicKeyBytes) -> [u8; 20] {
    let h: Hash32 = keccak256_parts(&[pk]);
    let mut id = [0u8; 20];
    id.copy_from_slice(&h[..20]);
    id
}

/// A BLS signature (a decompressed G2 point; subgroup-checked when verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlsSignature(Signature);

impl BlsSignature {
    /// Decompresses a 96-byte signature. The subgroup check happens at verification.
    pub fn from_bytes(bytes: &[u8]) -> Result<BlsSignature, BlsError> {
        Signature::from_bytes(bytes)
            .map(BlsSignature)
            .map_err(BlsError::BadSignatureEncoding)
    }

    /// The 96-byte compressed form.
    pub fn to_bytes(&self) -> BlsSignatureBytes {
        self.0.to_bytes()
    }

    /// Aggregates signatures into one by point addition.
    ///
    /// The parts are not subgroup-checked here (that check costs ~50 us each, about 98% of
    /// aggregation): the aggregate is subgroup-checked when it is verified, and when an
    /// aggregate fails, the parts are verified one by one, each with its own subgroup check,
    /// which names the bad signer. Parts that cancel each other's non-subgroup components can
    /// only come from signers who jointly control the aggregate anyway.
    pub fn aggregate(signatures: &[&BlsSignature]) -> Result<BlsSignature, BlsError> {
        if signatures.is_empty() {
            return Err(BlsError::Empty);
        }
        let sigs: Vec<&Signature> = signatures.iter().map(|s| &s.0).collect();
        AggregateSignature::aggregate(&sigs, false)
            .map(|agg| BlsSignature(agg.to_signature()))
            .map_err(BlsError::BadSignatureEncoding)
    }
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// A prepared certificate where a commit certificate was due, or the reverse.
    #[error("expected a {expected} certificate, got {got}")]
    WrongKind {
        /// Kind required by the caller.
        expected: &'static str,
        /// Kind carried.
        got: &'static str,
    },
    /// The certificate is for a height other than the committee's.
    #[error("certificate for height {got}, committee is for height {expected}")]
    WrongHeight {
        /// The committee's height.
        expected: Height,
        /// The certificate's height.
        got: Height,
    },
    /// The bitmap has the wrong length or bits past the council.
    #[error("signer bitmap: {0}")]
    Bitmap(&'static str),
    /// A signer is in the council but not in this height's committee.
    #[error("signer {0} is not a member of the committee")]
    NotCommitteeMember(CouncilIndex),
    /// Fewer signers than a quorum.
    #[error("{have} signers, a quorum needs {need}")]
    BelowQuorum {
        /// Signers in the bitmap.
        have: usize,
        /// Quorum of the committee.
        need: usize,
    },
    /// The aggregated signature is malformed or does not verify.
    #[error("aggregate signature: {0}")]
    Signature(BlsError),
}

/// A borrowed view of a certificate, native or archived.
#[derive(Debug, Clone, Copy)]
pub struct CertificateView<'a> {
    /// Prepare or commit.
    pub kind: VoteKind,
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// Certified block hash.
    pub block_hash: &'a Hash32,
    /// Signer bitmap.
    pub signers: &'a [u8],
    /// Aggregated signature.
    pub signature: &'a BlsSignatureBytes,
}

impl<'a> From<&'a QuorumCertificate> for CertificateView<'a> {
    fn from(c: &'a QuorumCertificate) -> Self {
        CertificateView {
            kind: c.kind,
            height: c.height,
            round: c.round,
            block_hash: &c.block_hash,
            signers: &c.signers,
            signature: &c.signature,
        }
    }
}

impl<'a> From<&'a ArchivedQuorumCertificate> for CertificateView<'a> {
    fn from(c: &'a ArchivedQuorumCertificate) -> Self {
        CertificateView {
            kind: c.kind.to_native(),
            height: c.height.to_native(),
            round: c.round.to_native(),
            block_hash: &c.block_hash,
            signers: c.signers.as_slice(),
            signature: &c.signature,
        }
    }
}

/// Why a council could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CouncilError {
    /// No members.
    #[error("the council is empty")]
    Empty,
    /// More members than [`MAX_COUNCIL_SIZE`].
    #[error("the council has {0} members, more than the maximum of {MAX_COUNCIL_SIZE}")]
    TooLarge(usize),
    /// A member's key or proof is invalid.
    #[error("council member {index}: {error}")]
    Member {
        /// Council index.
        index: CouncilIndex,
        /// What is wrong.
        error: BlsError,
    },
    /// The same key twice.
    #[error("council members {first} and {second} have the same key")]
    Duplicate {
        /// First index.
        first: CouncilIndex,
        /// Second index.
        second: CouncilIndex,
    },
}

/// The council's public keys, each validated and proof-of-possession-checked once, kept
/// decompressed so certificate checks only add points and do one pairing check.
#[derive(Debug, Clone)]
pub struct CouncilKeys {
    keys: Vec<BlsPublicKey>,
}

impl CouncilKeys {
    /// Validates every `(public key, proof of possession)` pair, in council order.
    pub fn new(
        members: &[(BlsPublicKeyBytes, BlsSignatureBytes)],
    ) -> Result<CouncilKeys, CouncilError> {
        if members.is_empty() {
            return Err(CouncilError::Empty);
        }
        if members.len() > MAX_COUNCIL_SIZE {
            return Err(CouncilError::TooLarge(members.len()));
        }
        let mut seen = std::collections::HashMap::with_capacity(members.len());
        let mut keys = Vec::with_capacity(members.len());
        for (i, (pk_bytes, pop_bytes)) in members.iter().enumerate() {
            let index = i as CouncilIndex;
            let member = |error| CouncilError::Member { index, error };
            let pk = BlsPublicKey::from_bytes(pk_bytes).map_err(member)?;
            let pop = BlsSignature::from_bytes(pop_bytes).map_err(member)?;
            pk.verify_possession(&pop).map_err(member)?;
            if let Some(first) = seen.insert(*pk_bytes, index) {
                return Err(CouncilError::Duplicate {
                    first,
                    second: index,
                });
            }
            keys.push(pk);
        }
        Ok(CouncilKeys { keys })
    }

    /// Number of council members.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the council is empty (never, once constructed).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key of council member `index`.
    pub fn key(&self, index: CouncilIndex) -> Option<&BlsPublicKey> {
        self.keys.get(index as usize)
    }

    /// Verifies one member's signature under `domain`.
    pub fn verify(
        &self,
        signer: CouncilIndex,
        domain: Domain,
        message: &[u8],
        signature: &BlsSignatureBytes,
    ) -> Result<(), BlsError> {
        let key = self.key(signer).ok_or(BlsError::UnknownSigner(signer))?;
        let sig = BlsSignature::from_bytes(signature)?;
        key.verify(domain, message, &sig)
    }

    /// The sum of the signers' keys, after the bitmap, membership and quorum checks.
    fn certificate_key(
        &self,
        cert: &CertificateView<'_>,
        expected: VoteKind,
        committee: &Committee,
    ) -> Result<PublicKey, CertificateError> {
        if cert.kind != expected {
            return Err(CertificateError::WrongKind {
                expected: expected.name(),
                got: cert.kind.name(),
            });
        }
        if cert.height != committee.height() {
            return Err(CertificateError::WrongHeight {
                expected: committee.height(),
                got: cert.height,
            });
        }
        signers::check_canonical(cert.signers, self.keys.len())
            .map_err(CertificateError::Bitmap)?;
        if let Some(outsider) = signers::iter(cert.signers).find(|&i| !committee.contains(i)) {
            return Err(CertificateError::NotCommitteeMember(outsider));
        }
        let (have, need) = (signers::count(cert.signers), committee.quorum());
        if have < need {
            return Err(CertificateError::BelowQuorum { have, need });
        }
        self.aggregate_key(cert.signers)
            .map_err(CertificateError::Signature)
    }

    /// The sum of the keys of the council members in a canonical `signers` bitmap.
    fn aggregate_key(&self, signers: &[u8]) -> Result<PublicKey, BlsError> {
        let mut aggregate: Option<AggregatePublicKey> = None;
        for index in signers::iter(signers) {
            let key = &self.key(index).ok_or(BlsError::UnknownSigner(index))?.0;
            match aggregate.as_mut() {
                None => aggregate = Some(AggregatePublicKey::from_public_key(key)),
                Some(agg) => agg
                    .add_public_key(key, false)
                    .map_err(BlsError::BadPublicKey)?,
            }
        }
        aggregate.map(|a| a.to_public_key()).ok_or(BlsError::Empty)
    }

    /// Verifies an aggregate signature of every council member in `signers` (a canonical
    /// bitmap) on one `message` under `domain`: one pairing check for any number of signers.
    pub fn verify_aggregate(
        &self,
        signers: &[u8],
        domain: Domain,
        message: &[u8],
        signature: &BlsSignatureBytes,
    ) -> Result<(), BlsError> {
        signers::check_canonical(signers, self.keys.len())
            .map_err(|_| BlsError::UnknownSigner(self.keys.len() as CouncilIndex))?;
        let key = self.aggregate_key(signers)?;
        let sig = BlsSignature::from_bytes(signature)?;
        match sig
            .0
            .fast_aggregate_verify_pre_aggregated(true, message, domain.dst(), &key)
        {
            BLST_ERROR::BLST_SUCCESS => Ok(()),
            _ => Err(BlsError::VerifyFailed),
        }
    }

    /// Verifies signatures of council members, each `(signer, domain, message, signature)`
    /// under its own domain, with one multi-pairing: a random linear combination with 64-bit
    /// scalars derived from `entropy` and one final exponentiation for all (two signatures
    /// cost about one and a half single checks instead of two). `entropy` must be
    /// unpredictable to whoever produced the signatures: with known scalars a signer could
    /// shift one signature by a value another cancels, so neither verifies alone while the
    /// combination does. `Ok` only if every one is valid; on failure, callers re-check one by
    /// one to find the bad one.
    pub fn verify_each_batch(
        &self,
        items: &[(CouncilIndex, Domain, &[u8], &BlsSignatureBytes)],
        entropy: &[u8; 32],
    ) -> Result<(), BlsError> {
        let mut combined: Option<blst::Pairing<'static>> = None;
        for (i, (signer, domain, message, signature)) in items.iter().enumerate() {
            let key = self.key(*signer).ok_or(BlsError::UnknownSigner(*signer))?;
            let sig = BlsSignature::from_bytes(&signature[..])?;
            let key: &blst::blst_p1_affine = (&key.0).into();
            let sig: &blst::blst_p2_affine = (&sig.0).into();
            let scalar = batch_scalar(entropy, i);
            // Keys were validated when the council was built; signatures are subgroup-checked.
            let mut pairing = blst::Pairing::new(true, domain.dst());
            if pairing.mul_n_aggregate(key, false, sig, true, &scalar.b, 64, message, &[])
                != BLST_ERROR::BLST_SUCCESS
            {
                return Err(BlsError::VerifyFailed);
            }
            pairing.commit();
            match combined.as_mut() {
                None => combined = Some(pairing),
                Some(all) => {
                    if all.merge(&pairing) != BLST_ERROR::BLST_SUCCESS {
                        return Err(BlsError::VerifyFailed);
                    }
                }
            }
        }
        match combined {
            None => Ok(()),
            Some(all) if all.finalverify(None) => Ok(()),
            Some(_) => Err(BlsError::VerifyFailed),
        }
    }

    /// Verifies many aggregate signatures, each of the members of a canonical `signers` bitmap
    /// on its own message under `domain`, with one multi-pairing (random linear combination
    /// with 64-bit scalars derived from `entropy`). `entropy` must be unpredictable to whoever
    /// produced the signatures. `Ok` only if every one is valid; on failure, callers re-check
    /// one by one to find the bad one.
    pub fn verify_aggregates_batch(
        &self,
        domain: Domain,
        items: &[(&[u8], &[u8], &BlsSignatureBytes)],
        entropy: &[u8; 32],
    ) -> Result<(), BlsError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut keys = Vec::with_capacity(items.len());
        let mut sigs = Vec::with_capacity(items.len());
        for (signers, _, signature) in items {
            signers::check_canonical(signers, self.keys.len())
                .map_err(|_| BlsError::UnknownSigner(self.keys.len() as CouncilIndex))?;
            keys.push(self.aggregate_key(signers)?);
            sigs.push(BlsSignature::from_bytes(&signature[..])?.0);
        }
        let msgs: Vec<&[u8]> = items.iter().map(|(_, m, _)| *m).collect();
        verify_batch(domain.dst(), &keys, &sigs, &msgs, entropy)
    }

    /// Verifies a certificate of `expected` kind against this height's committee: canonical
    /// bitmap, members only, at least a quorum, and one `fast_aggregate_verify` (pre-aggregated
    /// keys) of the signature over the shared vote message.
    pub fn verify_certificate<'a>(
        &self,
        chain_id: u64,
        cert: impl Into<CertificateView<'a>>,
        expected: VoteKind,
        committee: &Committee,
    ) -> Result<(), CertificateError> {
        let cert = cert.into();
        let key = self.certificate_key(&cert, expected, committee)?;
        let sig = BlsSignature::from_bytes(cert.signature).map_err(CertificateError::Signature)?;
        let msg = cert
            .kind
            .signing_message(chain_id, cert.height, cert.round, cert.block_hash);
        match sig
            .0
            .fast_aggregate_verify_pre_aggregated(true, &msg, DST_VOTE, &key)
        {
            BLST_ERROR::BLST_SUCCESS => Ok(()),
            _ => Err(CertificateError::Signature(BlsError::VerifyFailed)),
        }
    }

    /// Verifies many commit certificates with one multi-pairing (random linear combination).
    ///
    /// Each entry is a certificate and the committee of its height. `entropy` must be fresh and
    /// unpredictable to whoever produced the certificates. Returns `Ok` only if every
    /// certificate is valid; on failure, callers re-check one by one to find the bad one.
    pub fn verify_certificates_batch<'a>(
        &self,
        chain_id: u64,
        certs: &[(CertificateView<'a>, &Committee)],
        entropy: &[u8; 32],
    ) -> Result<(), CertificateError> {
        if certs.is_empty() {
            return Ok(());
        }
        let mut keys = Vec::with_capacity(certs.len());
        let mut sigs = Vec::with_capacity(certs.len());
        let mut msgs = Vec::with_capacity(certs.len());
        for (cert, committee) in certs {
            keys.push(self.certificate_key(cert, VoteKind::Commit, committee)?);
            sigs.push(
                BlsSignature::from_bytes(cert.signature)
                    .map_err(CertificateError::Signature)?
                    .0,
            );
            msgs.push(cert.kind.signing_message(
                chain_id,
                cert.height,
                cert.round,
                cert.block_hash,
            ));
        }
        let msg_refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
        verify_batch(DST_VOTE, &keys, &sigs, &msg_refs, entropy)
            .map_err(CertificateError::Signature)
    }
}

/// The 64-bit weight of item `i` of a batch: the first 8 bytes of `keccak(entropy || i)` as a
/// little-endian scalar, forced odd (never zero).
fn batch_scalar(entropy: &[u8; 32], i: usize) -> blst::blst_scalar {
    let r = keccak256_parts(&[entropy, &(i as u64).to_be_bytes()]);
    let mut scalar = blst::blst_scalar::default();
    scalar.b[..8].copy_from_slice(&r[..8]);
    scalar.b[0] |= 1;
    scalar
}

/// One multi-pairing check of `sigs[i]` by `keys[i]` on `msgs[i]` for all `i`, weighted by
/// [`batch_scalar`]s.
fn verify_batch(
    dst: &[u8],
    keys: &[PublicKey],
    sigs: &[Signature],
    msgs: &[&[u8]],
    entropy: &[u8; 32],
) -> Result<(), BlsError> {
    debug_assert!(keys.len() == sigs.len() && sigs.len() == msgs.len());
    let rands: Vec<blst::blst_scalar> = (0..keys.len()).map(|i| batch_scalar(entropy, i)).collect();
    let key_refs: Vec<&PublicKey> = keys.iter().collect();
    let sig_refs: Vec<&Signature> = sigs.iter().collect();
    match Signature::verify_multiple_aggregate_signatures(
        msgs, dst, &key_refs, false, &sig_refs, true, &rands, 64,
    ) {
        BLST_ERROR::BLST_SUCCESS => Ok(()),
        _ => Err(BlsError::VerifyFailed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::election::Committee;
    use crate::types::consensus::QuorumCertificate;

    const CHAIN: u64 = 1001;

    fn key(i: u8) -> BlsSecretKey {
        BlsSecretKey::from_seed(&[i; 32])
    }

    fn council(n: u8) -> (Vec<BlsSecretKey>, CouncilKeys) {
        let sks: Vec<_> = (0..n).map(key).collect();
        let members: Vec<_> = sks
            .iter()
            .map(|sk| (sk.public_key().to_bytes(), sk.prove_possession().to_bytes()))
            .collect();
        let keys = CouncilKeys::new(&members).expect("valid council");
        (sks, keys)
    }

    /// A commit certificate signed by `signers` (each signing `msg_hash`).
    fn certificate(
        sks: &[BlsSecretKey],
        council_size: usize,
        signers_idx: &[CouncilIndex],
        height: Height,
        block_hash: Hash32,
    ) -> QuorumCertificate {
        let msg = VoteKind::Commit.signing_message(CHAIN, height, 0, &block_hash);
        let sigs: Vec<BlsSignature> = signers_idx
            .iter()
            .map(|&i| sks[i as usize].sign(Domain::Vote, &msg))
            .collect();
        let refs: Vec<&BlsSignature> = sigs.iter().collect();
        let mut bitmap = signers::empty(council_size);
        for &i in signers_idx {
            signers::set(&mut bitmap, i);
        }
        QuorumCertificate {
            kind: VoteKind::Commit,
            height,
            round: 0,
            block_hash,
            signers: bitmap,
            signature: BlsSignature::aggregate(&refs)
                .expect("non-empty")
                .to_bytes(),
        }
    }

    #[test]
    fn keys_are_deterministic_from_seed_and_round_trip() {
        assert_eq!(key(1).public_key(), key(1).public_key());
        assert_ne!(key(1).public_key(), key(2).public_key());
        let sk = key(3);
        let back = BlsSecretKey::from_bytes(&sk.to_bytes()).expect("valid scalar");
        assert_eq!(back.public_key(), sk.public_key());
        let pk = BlsPublicKey::from_bytes(&sk.public_key().to_bytes()).expect("valid key");
        assert_eq!(pk, sk.public_key());
        assert!(
            BlsSecretKey::from_bytes(&[0u8; 32]).is_err(),
            "zero scalar refused"
        );
        assert!(
            format!("{sk:?}").contains("secret")
                && !format!("{sk:?}").contains(&hex::encode(sk.to_bytes()))
        );
    }

    #[test]
    fn wrong_message_key_or_domain_is_rejected() {
        let sk = key(1);
        let pk = sk.public_key();
        let sig = sk.sign(Domain::Vote, b"block");
        assert_eq!(pk.verify(Domain::Vote, b"block", &sig), Ok(()));
        assert_eq!(
            pk.verify(Domain::Vote, b"blocK", &sig),
            Err(BlsError::VerifyFailed)
        );
        assert_eq!(
            key(2).public_key().verify(Domain::Vote, b"block", &sig),
            Err(BlsError::VerifyFailed)
        );
        for other in [Domain::Randao, Domain::ProofOfPossession, Domain::Handshake] {
            assert_eq!(
                pk.verify(other, b"block", &sig),
                Err(BlsError::VerifyFailed),
                "{other:?}"
            );
        }
    }

    #[test]
    fn malformed_keys_and_signatures_are_errors() {
        assert!(BlsPublicKey::from_bytes(&[0u8; 48]).is_err());
        assert!(BlsPublicKey::from_bytes(&[0xffu8; 48]).is_err());
        assert!(BlsPublicKey::from_bytes(&[1u8; 47]).is_err());
        // The compressed identity point (0xc0 then zeros) is refused as a key.
        let mut identity = [0u8; 48];
        identity[0] = 0xc0;
        assert!(BlsPublicKey::from_bytes(&identity).is_err());
        assert!(BlsSignature::from_bytes(&[0xffu8; 96]).is_err());
        assert!(BlsSignature::from_bytes(&[1u8; 95]).is_err());
    }

    #[test]
    fn proof_of_possession_binds_the_key() {
        let (a, b) = (key(1), key(2));
        assert_eq!(
            a.public_key().verify_possession(&a.prove_possession()),
            Ok(())
        );
        assert_eq!(
            a.public_key().verify_possession(&b.prove_possession()),
            Err(BlsError::BadProofOfPossession)
        );
        // A signature of the key bytes under another domain is no proof of possession.
        let wrong = a.sign(Domain::Vote, &a.public_key().to_bytes());
        assert_eq!(
            a.public_key().verify_possession(&wrong),
            Err(BlsError::BadProofOfPossession)
        );
    }

    /// The rogue-key attack: an attacker registers `pk_r = g^a - pk_victim`, so that the
    /// aggregate of victim and rogue keys is `g^a` and the attacker alone can forge a "two-signer"
    /// aggregate. Without proofs of possession it works; the council refuses the rogue key
    /// because the attacker cannot sign with `pk_r`'s secret.
    #[test]
    fn rogue_key_without_valid_proof_of_possession_is_rejected() {
        use blst::*;
        let victim = key(1);
        let attacker = key(9);
        let rogue_bytes: [u8; 48] = unsafe {
            let mut va = blst_p1_affine::default();
            let mut aa = blst_p1_affine::default();
            assert_eq!(
                blst_p1_uncompress(&mut va, victim.public_key().to_bytes().as_ptr()),
                BLST_ERROR::BLST_SUCCESS
            );
            assert_eq!(
                blst_p1_uncompress(&mut aa, attacker.public_key().to_bytes().as_ptr()),
                BLST_ERROR::BLST_SUCCESS
            );
            let (mut vp, mut ap, mut sum) =
                (blst_p1::default(), blst_p1::default(), blst_p1::default());
            blst_p1_from_affine(&mut vp, &va);
            blst_p1_from_affine(&mut ap, &aa);
            blst_p1_cneg(&mut vp, true);
            blst_p1_add_or_double(&mut sum, &ap, &vp);
            let mut out = [0u8; 48];
            blst_p1_compress(out.as_mut_ptr(), &sum);
            out
        };
        let rogue = BlsPublicKey::from_bytes(&rogue_bytes).expect("the rogue key is a valid point");
        // The attack is real: the attacker's lone signature verifies as an aggregate of both.
        let msg = b"commit block X";
        let forged = attacker.sign(Domain::Vote, msg);
        assert_eq!(
            forged.0.fast_aggregate_verify(
                true,
                msg,
                DST_VOTE,
                &[&victim.public_key().0, &rogue.0]
            ),
            BLST_ERROR::BLST_SUCCESS
        );
        // But the council admits keys only with a proof of possession, which the attacker
        // cannot make for the rogue key: every proof it can produce is refused.
        let members = vec![
            (
                victim.public_key().to_bytes(),
                victim.prove_possession().to_bytes(),
            ),
            (
                rogue_bytes,
                attacker
                    .sign(Domain::ProofOfPossession, &rogue_bytes)
                    .to_bytes(),
            ),
        ];
        assert!(matches!(
            CouncilKeys::new(&members),
            Err(CouncilError::Member {
                index: 1,
                error: BlsError::BadProofOfPossession
            })
        ));
        let members = vec![
            members[0],
            (rogue_bytes, attacker.prove_possession().to_bytes()),
        ];
        assert!(matches!(
            CouncilKeys::new(&members),
            Err(CouncilError::Member { index: 1, .. })
        ));
    }

    /// `a + sign * b` for two compressed G2 points (test helper for crafted signatures).
    fn g2_combine(a: &BlsSignatureBytes, b: &BlsSignatureBytes, negate_b: bool) -> [u8; 96] {
        use blst::*;
        unsafe {
            let (mut aa, mut ba) = (blst_p2_affine::default(), blst_p2_affine::default());
            assert_eq!(
                blst_p2_uncompress(&mut aa, a.as_ptr()),
                BLST_ERROR::BLST_SUCCESS
            );
            assert_eq!(
                blst_p2_uncompress(&mut ba, b.as_ptr()),
                BLST_ERROR::BLST_SUCCESS
            );
            let (mut ap, mut bp, mut sum) =
                (blst_p2::default(), blst_p2::default(), blst_p2::default());
            blst_p2_from_affine(&mut ap, &aa);
            blst_p2_from_affine(&mut bp, &ba);
            blst_p2_cneg(&mut bp, negate_b);
            blst_p2_add_or_double(&mut sum, &ap, &bp);
            let mut out = [0u8; 96];
            blst_p2_compress(out.as_mut_ptr(), &sum);
            out
        }
    }

    #[test]
    fn signatures_under_different_domains_verify_in_one_batch_and_a_bad_one_fails_it() {
        let (sks, keys) = council(4);
        let entropy = [7u8; 32];
        let vote_msg = b"proposal of block X";
        let randao_msg = b"randao of height 9";
        let vote_sig = sks[2].sign(Domain::Vote, vote_msg).to_bytes();
        let reveal = sks[2].sign(Domain::Randao, randao_msg).to_bytes();
        let other = sks[1].sign(Domain::Vote, b"another").to_bytes();
        let items = [
            (2, Domain::Vote, &vote_msg[..], &vote_sig),
            (2, Domain::Randao, &randao_msg[..], &reveal),
            (1, Domain::Vote, &b"another"[..], &other),
        ];
        assert_eq!(keys.verify_each_batch(&items, &entropy), Ok(()));
        assert_eq!(keys.verify_each_batch(&items[..2], &entropy), Ok(()));
        assert_eq!(keys.verify_each_batch(&[], &entropy), Ok(()));
        // Each item is checked under its own domain: swapping the domains fails.
        let swapped = [
            (2, Domain::Randao, &vote_msg[..], &vote_sig),
            (2, Domain::Vote, &randao_msg[..], &reveal),
        ];
        assert!(keys.verify_each_batch(&swapped, &entropy).is_err());
        // A wrong signer, message or signature anywhere fails the whole batch.
        let mut bad = items;
        bad[2].0 = 3;
        assert!(keys.verify_each_batch(&bad, &entropy).is_err());
        let mut bad = items;
        bad[1].2 = b"randao of height 10";
        assert!(keys.verify_each_batch(&bad, &entropy).is_err());
        let mut bad = items;
        bad[0].3 = &other;
        assert!(keys.verify_each_batch(&bad, &entropy).is_err());
        bad[0].0 = 99;
        assert_eq!(
            keys.verify_each_batch(&bad, &entropy),
            Err(BlsError::UnknownSigner(99))
        );
    }

    /// The attack the random weights stop: the signer shifts one signature by a point and the
    /// other by its negation. Neither verifies alone, but their plain sum is the sum of the
    /// valid ones, so an unweighted batch would accept them.
    #[test]
    fn signatures_shifted_to_cancel_out_fail_the_batch() {
        let (sks, keys) = council(4);
        let vote_msg = b"proposal of block X";
        let randao_msg = b"randao of height 9";
        let vote_sig = sks[0].sign(Domain::Vote, vote_msg).to_bytes();
        let reveal = sks[0].sign(Domain::Randao, randao_msg).to_bytes();
        let shift = sks[0].sign(Domain::Vote, b"any point").to_bytes();
        let shifted_sig = g2_combine(&vote_sig, &shift, false);
        let shifted_reveal = g2_combine(&reveal, &shift, true);
        assert!(keys
            .verify(0, Domain::Vote, vote_msg, &shifted_sig)
            .is_err());
        assert!(keys
            .verify(0, Domain::Randao, randao_msg, &shifted_reveal)
            .is_err());
        // The shifts cancel in the plain sum.
        assert_eq!(
            g2_combine(&shifted_sig, &shifted_reveal, false),
            g2_combine(&vote_sig, &reveal, false)
        );
        for seed in 0..8u8 {
            let items = [
                (0, Domain::Vote, &vote_msg[..], &shifted_sig),
                (0, Domain::Randao, &randao_msg[..], &shifted_reveal),
            ];
            assert!(keys.verify_each_batch(&items, &[seed; 32]).is_err());
        }
    }

    #[test]
    fn council_refuses_duplicates_and_empty() {
        let a = key(1);
        let entry = (a.public_key().to_bytes(), a.prove_possession().to_bytes());
        assert_eq!(CouncilKeys::new(&[]).err(), Some(CouncilError::Empty));
        assert_eq!(
            CouncilKeys::new(&[entry, entry]).err(),
            Some(CouncilError::Duplicate {
                first: 0,
                second: 1
            })
        );
    }

    #[test]
    fn certificate_of_a_quorum_verifies_with_one_check() {
        let (sks, council) = council(7);
        let committee = Committee::elect(7, 7, 5, &[3u8; 32]);
        let quorum = committee.quorum();
        assert_eq!(quorum, 5);
        let cert = certificate(&sks, 7, &committee.members()[..quorum], 5, [9u8; 32]);
        assert_eq!(
            council.verify_certificate(CHAIN, &cert, VoteKind::Commit, &committee),
            Ok(())
        );
        // The archived form verifies the same way.
        let bytes = crate::types::to_bytes(&cert);
        let archived =
            rkyv::access::<ArchivedQuorumCertificate, rkyv::rancor::Error>(&bytes).expect("valid");
        assert_eq!(
            council.verify_certificate(CHAIN, archived, VoteKind::Commit, &committee),
            Ok(())
        );
        // Another chain id, kind or block hash does not.
        assert!(council
            .verify_certificate(CHAIN + 1, &cert, VoteKind::Commit, &committee)
            .is_err());
        assert!(matches!(
            council.verify_certificate(CHAIN, &cert, VoteKind::Prepare, &committee),
            Err(CertificateError::WrongKind { .. })
        ));
        let mut other = cert.clone();
        other.block_hash = [8u8; 32];
        assert_eq!(
            council.verify_certificate(CHAIN, &other, VoteKind::Commit, &committee),
            Err(CertificateError::Signature(BlsError::VerifyFailed))
        );
    }

    #[test]
    fn aggregate_with_one_bad_signature_is_rejected() {
        let (sks, council) = council(4);
        let committee = Committee::elect(4, 4, 1, &[0u8; 32]);
        let hash = [7u8; 32];
        let msg = VoteKind::Commit.signing_message(CHAIN, 1, 0, &hash);
        let bad_msg = VoteKind::Commit.signing_message(CHAIN, 1, 0, &[6u8; 32]);
        let sigs: Vec<BlsSignature> = (0..4)
            .map(|i| sks[i].sign(Domain::Vote, if i == 2 { &bad_msg } else { &msg }))
            .collect();
        let refs: Vec<&BlsSignature> = sigs.iter().collect();
        let mut bitmap = signers::empty(4);
        (0..4).for_each(|i| signers::set(&mut bitmap, i));
        let cert = QuorumCertificate {
            kind: VoteKind::Commit,
            height: 1,
            round: 0,
            block_hash: hash,
            signers: bitmap,
            signature: BlsSignature::aggregate(&refs)
                .expect("non-empty")
                .to_bytes(),
        };
        assert_eq!(
            council.verify_certificate(CHAIN, &cert, VoteKind::Commit, &committee),
            Err(CertificateError::Signature(BlsError::VerifyFailed))
        );
    }

    #[test]
    fn certificate_naming_a_non_member_or_below_quorum_is_rejected() {
        let (sks, council) = council(7);
        let committee = Committee::elect(7, 4, 3, &[1u8; 32]);
        let outsider = (0..7)
            .find(|i| !committee.contains(*i))
            .expect("3 outsiders");
        let mut signers_idx = committee.members()[..3].to_vec();
        signers_idx.push(outsider);
        let cert = certificate(&sks, 7, &signers_idx, 3, [2u8; 32]);
        assert_eq!(
            council.verify_certificate(CHAIN, &cert, VoteKind::Commit, &committee),
            Err(CertificateError::NotCommitteeMember(outsider))
        );
        let cert = certificate(&sks, 7, &committee.members()[..2], 3, [2u8; 32]);
        assert_eq!(
            council.verify_certificate(CHAIN, &cert, VoteKind::Commit, &committee),
            Err(CertificateError::BelowQuorum { have: 2, need: 3 })
        );
        // A bit past the council (index 7 of a 7-member council) is refused before any crypto.
        let mut cert = certificate(&sks, 7, &committee.members()[..3], 3, [2u8; 32]);
        cert.signers[0] |= 0x80;
        assert!(matches!(
            council.verify_certificate(CHAIN, &cert, VoteKind::Commit, &committee),
            Err(CertificateError::Bitmap(_))
        ));
        // A certificate for another height than the committee's is refused.
        let cert = certificate(&sks, 7, &committee.members()[..3], 4, [2u8; 32]);
        assert!(matches!(
            council.verify_certificate(CHAIN, &cert, VoteKind::Commit, &committee),
            Err(CertificateError::WrongHeight {
                expected: 3,
                got: 4
            })
        ));
    }

    #[test]
    fn batch_verification_accepts_good_and_rejects_one_bad() {
        let (sks, council) = council(10);
        let committees: Vec<Committee> = (1..=10)
            .map(|h| Committee::elect(10, 7, h, &[h as u8; 32]))
            .collect();
        let mut certs: Vec<QuorumCertificate> = committees
            .iter()
            .map(|c| {
                certificate(
                    &sks,
                    10,
                    &c.members()[..c.quorum()],
                    c.height(),
                    [c.height() as u8; 32],
                )
            })
            .collect();
        let entropy = [42u8; 32];
        let batch = |certs: &[QuorumCertificate]| {
            let views: Vec<(CertificateView<'_>, &Committee)> = certs
                .iter()
                .zip(committees.iter())
                .map(|(c, m)| (CertificateView::from(c), m))
                .collect();
            council.verify_certificates_batch(CHAIN, &views, &entropy)
        };
        assert_eq!(batch(&certs), Ok(()));
        // Swap two certificates' signatures: each is a valid signature, but of the wrong message.
        let s = certs[3].signature;
        certs[3].signature = certs[4].signature;
        certs[4].signature = s;
        assert_eq!(
            batch(&certs),
            Err(CertificateError::Signature(BlsError::VerifyFailed))
        );
    }

    #[test]
    fn aggregate_batch_accepts_good_and_rejects_one_bad() {
        let (sks, council) = council(7);
        let certs: Vec<QuorumCertificate> = (1..=5u64)
            .map(|h| certificate(&sks, 7, &[0, 2, 3, 5, 6], h, [h as u8; 32]))
            .collect();
        let messages: Vec<[u8; 53]> = certs.iter().map(|c| c.signing_message(CHAIN)).collect();
        let items = |certs: &[QuorumCertificate]| -> Result<(), BlsError> {
            let items: Vec<(&[u8], &[u8], &BlsSignatureBytes)> = certs
                .iter()
                .zip(&messages)
                .map(|(c, m)| (c.signers.as_slice(), m.as_slice(), &c.signature))
                .collect();
            council.verify_aggregates_batch(Domain::Vote, &items, &[9; 32])
        };
        assert_eq!(items(&certs), Ok(()));
        let mut wrong_signers = certs.clone();
        signers::set(&mut wrong_signers[2].signers, 1);
        assert_eq!(items(&wrong_signers), Err(BlsError::VerifyFailed));
        let mut flipped = certs.clone();
        flipped[4].signature = certs[0].signature;
        assert_eq!(items(&flipped), Err(BlsError::VerifyFailed));
        let mut garbage = certs;
        garbage[1].signature = [0xff; 96];
        assert!(items(&garbage).is_err());
    }
}
