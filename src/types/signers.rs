//! The signer bitmap of a certificate: which council members signed.
//!
//! Layout: bit `i` stands for council index `i`; it lives in byte `i / 8` at bit position
//! `i % 8` (least significant bit first). A bitmap for a council of `n` is exactly
//! `ceil(n / 8)` bytes and every bit at index `>= n` is zero, so each signer set has exactly one
//! encoding (no malleability: the same certificate cannot be re-encoded with another bitmap).

use super::{CouncilIndex, MAX_COUNCIL_SIZE};

/// Bytes of a bitmap for a council of `council_size` members.
#[inline]
pub const fn bitmap_len(council_size: usize) -> usize {
    council_size.div_ceil(8)
}

/// An all-zero bitmap for a council of `council_size`.
pub fn empty(council_size: usize) -> Vec<u8> {
    assert!(
        council_size <= MAX_COUNCIL_SIZE,
        "council larger than MAX_COUNCIL_SIZE"
    );
    vec![0u8; bitmap_len(council_size)]
}

/// Sets the bit of `index`. Panics if `index` is outside the bitmap (a caller bug).
pub fn set(bitmap: &mut [u8], index: CouncilIndex) {
    let i = index as usize;
    assert!(i / 8 < bitmap.len(), "signer index {i} outside bitmap");
    bitmap[i / 8] |= 1 << (i % 8);
}

/// Whether the bit of `index` is set (false outside the bitmap).
#[inline]
pub fn contains(bitmap: &[u8], index: CouncilIndex) -> bool {
    let i = index as usize;
    bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// How many bits are set.
pub fn count(bitmap: &[u8]) -> usize {
    bitmap.iter().map(|b| b.count_ones() as usize).sum()
}

/// The set indices, ascending.
pub fn iter(bitmap: &[u8]) -> impl Iterator<Item = CouncilIndex> + '_ {
    bitmap.iter().enumerate().flat_map(|(byte_index, &byte)| {
        (0..8u32)
            .filter_map(move |bit| (byte & (1 << bit) != 0).then_some(byte_index as u32 * 8 + bit))
    })
}

/// Checks that `bitmap` is the canonical encoding of a signer set of a council of
/// `council_size`: the right length and no bits at or past `council_size`.
pub fn check_canonical(bitmap: &[u8], council_size: usize) -> Result<(), &'static str> {
    if bitmap.len() != bitmap_len(council_size) {
        return Err("signer bitmap length does not match the council size");
    }
    let tail_bits = council_size % 8;
    if tail_bits != 0 {
        let last = bitmap[bitmap.len() - 1];
        if last >> tail_bits != 0 {
            return Err("signer bitmap names an index outside the council");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_contains_count_iter_agree() {
        let mut bm = empty(21);
        assert_eq!(bm.len(), 3);
        for i in [0u32, 7, 8, 20] {
            set(&mut bm, i);
        }
        assert!(contains(&bm, 7) && contains(&bm, 20) && !contains(&bm, 1) && !contains(&bm, 99));
        assert_eq!(count(&bm), 4);
        assert_eq!(iter(&bm).collect::<Vec<_>>(), vec![0, 7, 8, 20]);
        assert!(check_canonical(&bm, 21).is_ok());
    }

    #[test]
    fn non_canonical_bitmaps_are_refused() {
        let mut bm = empty(21);
        bm[2] |= 1 << 5; // index 21: outside a council of 21
        assert!(check_canonical(&bm, 21).is_err());
        assert!(check_canonical(&[0u8; 2], 21).is_err());
        assert!(check_canonical(&[0u8; 4], 21).is_err());
        assert!(check_canonical(&[0xff], 8).is_ok());
    }
}
