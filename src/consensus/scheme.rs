//! The signature scheme the consensus machine signs and verifies with.
//!
//! The machine is generic over [`SignatureScheme`] so that the simulator can run most seeds
//! with [`FastScheme`] (a keyed hash, thousands of times faster, *not secure*) and a share of
//! them with [`BlsScheme`] (the production scheme: BLS12-381 via `crypto::bls`). Both produce
//! 96-byte signatures, so the wire types are the same.
//!
//! Contract of every scheme:
//! - `verify(signer, d, m, sign_d(m))` holds exactly for the signer's own signatures;
//! - `verify_aggregate(bitmap, d, m, aggregate(sigs))` holds when `sigs` are the signatures on
//!   `m` of exactly the members in `bitmap` (each once);
//! - nothing panics on any input bytes.

use crate::crypto::bls::{BlsSecretKey, BlsSignature, CouncilKeys, Domain};
use crate::types::hash::keccak256_parts;
use crate::types::{signers, BlsSignatureBytes, CouncilIndex};

/// What the consensus machine needs from a signature scheme.
pub trait SignatureScheme {
    /// Signs `message` under `domain` with this node's own key.
    fn sign(&self, domain: Domain, message: &[u8]) -> BlsSignatureBytes;
    /// Whether `signature` is council member `signer`'s signature on `message` under `domain`.
    fn verify(
        &self,
        signer: CouncilIndex,
        domain: Domain,
        message: &[u8],
        signature: &BlsSignatureBytes,
    ) -> bool;
    /// Folds signatures on one message into one; `None` if any part is malformed or the list
    /// is empty.
    fn aggregate(&self, signatures: &[&BlsSignatureBytes]) -> Option<BlsSignatureBytes>;
    /// Whether `signature` is the aggregate of the signatures on `message` of every member set
    /// in the canonical `signers` bitmap.
    fn verify_aggregate(
        &self,
        signers: &[u8],
        domain: Domain,
        message: &[u8],
        signature: &BlsSignatureBytes,
    ) -> bool;
    /// Whether every item `(signer, domain, message, signature)` passes
    /// [`SignatureScheme::verify`]. A scheme may check them all at once (BLS: one
    /// multi-pairing); `false` says only that some item is bad.
    fn verify_each(&self, items: &[(CouncilIndex, Domain, &[u8], &BlsSignatureBytes)]) -> bool {
        items.iter().all(|(signer, domain, message, signature)| {
            self.verify(*signer, *domain, message, signature)
        })
    }
    /// Whether every item `(signers, message, signature)` passes
    /// [`SignatureScheme::verify_aggregate`] under `domain`. A scheme may check them all at
    /// once (BLS: one multi-pairing); `false` says only that some item is bad.
    fn verify_aggregates_batch(
        &self,
        domain: Domain,
        items: &[(&[u8], &[u8], &BlsSignatureBytes)],
    ) -> bool {
        items.iter().all(|(signers, message, signature)| {
            self.verify_aggregate(signers, domain, message, signature)
        })
    }
}

/// The production scheme: this node's BLS key and the council's cached keys.
#[derive(Debug, Clone)]
pub struct BlsScheme {
    secret: BlsSecretKey,
    council: std::sync::Arc<CouncilKeys>,
}

impl BlsScheme {
    /// A scheme signing with `secret` and verifying against `council`.
    pub fn new(secret: BlsSecretKey, council: std::sync::Arc<CouncilKeys>) -> BlsScheme {
        BlsScheme { secret, council }
    }
}

impl SignatureScheme for BlsScheme {
    fn sign(&self, domain: Domain, message: &[u8]) -> BlsSignatureBytes {
        self.secret.sign(domain, message).to_bytes()
    }

    fn verify(
        &self,
        signer: CouncilIndex,
        domain: Domain,
        message: &[u8],
        signature: &BlsSignatureBytes,
    ) -> bool {
        self.council
            .verify(signer, domain, message, signature)
            .is_ok()
    }

    fn aggregate(&self, signatures: &[&BlsSignatureBytes]) -> Option<BlsSignatureBytes> {
        let parsed: Vec<BlsSignature> = signatures
            .iter()
            .map(|s| BlsSignature::from_bytes(&s[..]))
            .collect::<Result<_, _>>()
            .ok()?;
        let refs: Vec<&BlsSignature> = parsed.iter().collect();
        BlsSignature::aggregate(&refs).ok().map(|s| s.to_bytes())
    }

    fn verify_aggregate(
        &self,
        signers: &[u8],
        domain: Domain,
        message: &[u8],
        signature: &BlsSignatureBytes,
    ) -> bool {
        self.council
            .verify_aggregate(signers, domain, message, signature)
            .is_ok()
    }

    fn verify_each(&self, items: &[(CouncilIndex, Domain, &[u8], &BlsSignatureBytes)]) -> bool {
        let entropy = self.batch_entropy(items.iter().map(|(_, _, m, sig)| (*m, *sig)));
        self.council.verify_each_batch(items, &entropy).is_ok()
    }

    fn verify_aggregates_batch(
        &self,
        domain: Domain,
        items: &[(&[u8], &[u8], &BlsSignatureBytes)],
    ) -> bool {
        let entropy = self.batch_entropy(items.iter().map(|(_, m, sig)| (*m, *sig)));
        self.council
            .verify_aggregates_batch(domain, items, &entropy)
            .is_ok()
    }
}

impl BlsScheme {
    /// The entropy of a batch check's scalars, which must be unpredictable to whoever made the
    /// signatures: derived from this node's secret key and the batch's messages and
    /// signatures (deterministic, so the simulator replays, yet unknown to any peer).
    fn batch_entropy<'a>(
        &self,
        items: impl Iterator<Item = (&'a [u8], &'a BlsSignatureBytes)>,
    ) -> [u8; 32] {
        let secret = self.secret.to_bytes();
        let mut parts: Vec<&[u8]> = vec![b"corecell-batch-verify-v1", &secret];
        for (message, signature) in items {
            parts.push(message);
            parts.push(&signature[..]);
        }
        keccak256_parts(&parts)
    }
}

/// **Insecure** simulator scheme: member `i`'s signature on `m` under domain `d` is
/// `keccak(i, d, m)` stretched to 96 bytes, and an aggregate is the XOR of its parts.
///
/// Anyone can compute anyone's signature, so it proves nothing against an adversary that
/// knows the formula; the simulator's Byzantine actors sign only as themselves, so it checks
/// the protocol logic at a fraction of the cost of BLS. Never used outside the simulator and
/// tests.
#[derive(Debug, Clone)]
pub struct FastScheme {
    me: CouncilIndex,
    council_size: usize,
}

impl FastScheme {
    /// The scheme of council member `me` in a council of `council_size`.
    pub fn new(me: CouncilIndex, council_size: usize) -> FastScheme {
        FastScheme { me, council_size }
    }

    fn signature_of(signer: CouncilIndex, domain: Domain, message: &[u8]) -> BlsSignatureBytes {
        let tag = [domain as u8];
        let signer = signer.to_be_bytes();
        let mut out = [0u8; 96];
        for (i, chunk) in out.chunks_mut(32).enumerate() {
            let h = keccak256_parts(&[b"fast-scheme", &[i as u8], &tag, &signer, message]);
            chunk.copy_from_slice(&h);
        }
        out
    }
}

impl SignatureScheme for FastScheme {
    fn sign(&self, domain: Domain, message: &[u8]) -> BlsSignatureBytes {
        FastScheme::signature_of(self.me, domain, message)
    }

    fn verify(
        &self,
        signer: CouncilIndex,
        domain: Domain,
        message: &[u8],
        signature: &BlsSignatureBytes,
    ) -> bool {
        (signer as usize) < self.council_size
            && FastScheme::signature_of(signer, domain, message) == *signature
    }

    fn aggregate(&self, signatures: &[&BlsSignatureBytes]) -> Option<BlsSignatureBytes> {
        if signatures.is_empty() {
            return None;
        }
        let mut out = [0u8; 96];
        for s in signatures {
            out.iter_mut().zip(s.iter()).for_each(|(o, b)| *o ^= b);
        }
        Some(out)
    }

    fn verify_aggregate(
        &self,
        signers: &[u8],
        domain: Domain,
        message: &[u8],
        signature: &BlsSignatureBytes,
    ) -> bool {
        if signers::check_canonical(signers, self.council_size).is_err()
            || signers::count(signers) == 0
        {
            return false;
        }
        let parts: Vec<BlsSignatureBytes> = signers::iter(signers)
            .map(|i| FastScheme::signature_of(i, domain, message))
            .collect();
        let refs: Vec<&BlsSignatureBytes> = parts.iter().collect();
        self.aggregate(&refs).is_some_and(|agg| agg == *signature)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn check_contract<S: SignatureScheme>(schemes: &[S]) {
        let msg = b"vote";
        let sigs: Vec<BlsSignatureBytes> =
            schemes.iter().map(|s| s.sign(Domain::Vote, msg)).collect();
        let s0 = &schemes[0];
        assert!(s0.verify(1, Domain::Vote, msg, &sigs[1]));
        assert!(!s0.verify(2, Domain::Vote, msg, &sigs[1]), "another signer");
        assert!(
            !s0.verify(1, Domain::Randao, msg, &sigs[1]),
            "another domain"
        );
        assert!(
            !s0.verify(1, Domain::Vote, b"other", &sigs[1]),
            "another message"
        );
        assert!(
            !s0.verify(99, Domain::Vote, msg, &sigs[1]),
            "outside the council"
        );
        let mut bitmap = signers::empty(schemes.len());
        for i in [0u32, 2, 3] {
            signers::set(&mut bitmap, i);
        }
        let agg = s0
            .aggregate(&[&sigs[0], &sigs[2], &sigs[3]])
            .expect("aggregate");
        assert!(s0.verify_aggregate(&bitmap, Domain::Vote, msg, &agg));
        signers::set(&mut bitmap, 1);
        assert!(
            !s0.verify_aggregate(&bitmap, Domain::Vote, msg, &agg),
            "a signer too many"
        );
        let bad = s0.aggregate(&[&sigs[0], &sigs[2], &[7u8; 96]]);
        if let Some(bad) = bad {
            signers::set(&mut bitmap, 1);
            assert!(!s0.verify_aggregate(&bitmap, Domain::Vote, msg, &bad));
        }
        assert!(s0.aggregate(&[]).is_none());
        // Several signatures under their own domains at once.
        let reveal = schemes[1].sign(Domain::Randao, b"randao");
        let each = [
            (1, Domain::Vote, &msg[..], &sigs[1]),
            (1, Domain::Randao, &b"randao"[..], &reveal),
            (3, Domain::Vote, &msg[..], &sigs[3]),
        ];
        assert!(s0.verify_each(&each));
        assert!(s0.verify_each(&[]));
        for bad in 0..each.len() {
            let mut items = each;
            items[bad].1 = match items[bad].1 {
                Domain::Vote => Domain::Randao,
                _ => Domain::Vote,
            };
            assert!(!s0.verify_each(&items), "item {bad} in another domain");
            let mut items = each;
            items[bad].0 = 2;
            assert!(!s0.verify_each(&items), "item {bad} by another signer");
            let mut items = each;
            items[bad].0 = 99;
            assert!(!s0.verify_each(&items), "item {bad} outside the council");
        }
    }

    #[test]
    fn fast_scheme_keeps_the_contract() {
        let schemes: Vec<FastScheme> = (0..4).map(|i| FastScheme::new(i, 4)).collect();
        check_contract(&schemes);
    }

    /// The BLS schemes of a council of `n` members with deterministic keys from `seed`.
    pub(crate) fn bls_council(n: u8, seed: u8) -> Vec<BlsScheme> {
        let sks: Vec<BlsSecretKey> = (0..n)
            .map(|i| BlsSecretKey::from_seed(&[seed.wrapping_add(i); 32]))
            .collect();
        let members: Vec<_> = sks
            .iter()
            .map(|s| (s.public_key().to_bytes(), s.prove_possession().to_bytes()))
            .collect();
        let council = std::sync::Arc::new(CouncilKeys::new(&members).expect("council"));
        sks.into_iter()
            .map(|s| BlsScheme::new(s, council.clone()))
            .collect()
    }

    #[test]
    fn bls_scheme_keeps_the_contract() {
        check_contract(&bls_council(4, 1));
    }
}
