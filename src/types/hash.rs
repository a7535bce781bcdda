//! Hashes and what each one is for.
//!
//! - **keccak-256** identifies things: blocks, transactions, committees. It is what Ethereum tooling
//!   expects, and it is the only hash here that is cryptographic.
//! - **xxh3** (64 bit) is for checksums of stored records, dedup keys and shard keys. It is *not*
//!   collision resistant against an adversary: never use it to identify or authenticate anything.

/// A 32-byte keccak-256 digest.
pub type Hash32 = [u8; 32];

/// The all-zero hash (parent of the genesis block, empty roots).
pub const ZERO_HASH: Hash32 = [0u8; 32];

/// keccak-256 of `bytes`.
#[inline]
pub fn keccak256(bytes: &[u8]) -> Hash32 {
    alloy_primitives::keccak256(bytes).0
}

/// keccak-256 of several byte slices, hashed as their concatenation without copying them.
pub fn keccak256_parts(parts: &[&[u8]]) -> Hash32 {
    let mut hasher = alloy_primitives::Keccak256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().0
}

/// xxh3-64 of `bytes`: a checksum or dedup key, never an identity.
#[inline]
pub fn xxh3(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keccak_matches_known_vectors() {
        // keccak-256("") and keccak-256("abc"), the published Keccak test vectors.
        assert_eq!(
            hex::encode(keccak256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
        assert_eq!(
            hex::encode(keccak256(b"abc")),
            "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
        );
    }

    #[test]
    fn keccak_parts_equals_concatenation() {
        assert_eq!(keccak256_parts(&[b"ab", b"", b"c"]), keccak256(b"abc"));
    }

    #[test]
    fn xxh3_is_stable_and_discriminates() {
        assert_eq!(xxh3(b"corecell"), xxh3(b"corecell"));
        assert_ne!(xxh3(b"corecell"), xxh3(b"corecelL"));
    }
}
