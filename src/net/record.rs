//! The record layer of a peer link: after the [handshake](super::handshake), every byte a node
//! sends on the connection travels in AEAD-sealed records under the session keys the handshake
//! derived, so nobody on the path can read (unless encryption is off), change, inject, drop,
//! reorder or replay anything without the connection failing.
//!
//! The module is sans-IO: a [`Sealer`] turns plaintext (coalesced frames) into record bytes to
//! write, an [`Opener`] turns the bytes read into plaintext (which the frame decoder then
//! reads). Record boundaries have nothing to do with frame boundaries.
//!
//! # Record layout
//!
//! ```text
//! u32 body length (big-endian) | body
//! ```
//!
//! `body` is at least [`TAG_LEN`] and at most [`MAX_RECORD_PLAINTEXT`] + [`TAG_LEN`] bytes:
//!
//! - *encrypted* (the default): `AES-256-GCM ciphertext || tag`, the additional data being the
//!   four length bytes;
//! - *integrity only* (both sides run with `network.encryption = false`): `plaintext || tag`,
//!   the tag being AES-256-GCM's over an empty message with the length bytes and the plaintext
//!   as additional data (GMAC: authenticated, not secret).
//!
//! The nonce of record `n` (counted from 0 per direction) is the direction's 12-byte IV with
//! `n` (big-endian) XORed into its last eight bytes. Keys and IVs differ per direction and per
//! connection (the handshake derives them from a fresh X25519 exchange), so a (key, nonce)
//! pair never repeats: the counter only goes up, and a direction that would pass 2^64 records
//! fails instead of wrapping ([`RecordError::Exhausted`]).
//!
//! # What attacks run into
//!
//! - A flipped bit anywhere (length, ciphertext, tag): the tag does not verify.
//! - An injected record: it is not sealed under the session key.
//! - A replayed, dropped or reordered record: the receiver's counter names another nonce, so
//!   the tag does not verify (records are never skipped or accepted twice).
//! - A truncated stream: a partial record is never handed on; the connection just ends.
//!
//! Any failure is [`RecordError`]: the connection is closed and counted as a link failure. It
//! blames the path, not the peer (no ban): an honest peer's records are always good.
//!
//! # Invariants
//!
//! - Plaintext leaves an [`Opener`] only after its record's tag verified, in order.
//! - An [`Opener`] holds at most one record's bytes ([`MAX_RECORD_LEN`]) whatever it is fed.
//! - After an error, an [`Opener`] or [`Sealer`] refuses everything (fail closed).

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};

/// Bytes of a record's length prefix.
pub const RECORD_HEADER_LEN: usize = 4;
/// Bytes of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Most plaintext bytes in one record (larger writes become several records).
pub const MAX_RECORD_PLAINTEXT: usize = 256 * 1024;
/// Most bytes of one whole record on the wire.
pub const MAX_RECORD_LEN: usize = RECORD_HEADER_LEN + MAX_RECORD_PLAINTEXT + TAG_LEN;

/// One direction's key material, from the handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct DirectionKey {
    /// AES-256 key.
    pub key: [u8; 32],
    /// Nonce base.
    pub iv: [u8; 12],
}

impl std::fmt::Debug for DirectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectionKey(..)")
    }
}

/// Why a record could not be sealed or opened. Every variant means: close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A record's length is below a tag or above [`MAX_RECORD_LEN`].
    #[error("link record of {len} bytes (a record body holds {TAG_LEN} to {} bytes)", MAX_RECORD_PLAINTEXT + TAG_LEN)]
    BadLength {
        /// The body length read.
        len: usize,
    },
    /// The tag does not verify: the bytes were changed, injected, replayed or reordered.
    #[error("link record {counter} fails authentication (changed, injected, replayed or reordered on the path)")]
    Authentication {
        /// The record's number in its direction.
        counter: u64,
    },
    /// The direction's record counter would wrap.
    #[error("link record counter exhausted")]
    Exhausted,
    /// A call after an earlier error.
    #[error("link already failed")]
    Failed,
}

fn nonce(iv: &[u8; 12], counter: u64) -> [u8; 12] {
    let mut n = *iv;
    for (b, c) in n[4..].iter_mut().zip(counter.to_be_bytes()) {
        *b ^= c;
    }
    n
}

/// The AES-256-GCM key of one direction (ring's, with its AES-NI / VAES and CLMUL code).
fn cipher(key: &DirectionKey) -> LessSafeKey {
    // A 32-byte key is what AES-256 takes; ring refuses only other lengths.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key.key).expect("a 32-byte AES-256 key"))
}

/// Seals plaintext into records (one direction).
pub struct Sealer {
    cipher: LessSafeKey,
    iv: [u8; 12],
    counter: u64,
    encrypt: bool,
    failed: bool,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("counter", &self.counter)
            .field("encrypt", &self.encrypt)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for the direction `key`; `encrypt` false seals for integrity only.
    pub fn new(key: &DirectionKey, encrypt: bool) -> Sealer {
        Sealer {
            cipher: cipher(key),
            iv: key.iv,
            counter: 0,
            encrypt,
            failed: false,
        }
    }

    /// Records sealed so far.
    pub fn records(&self) -> u64 {
        self.counter
    }

    /// Appends to `out` the records carrying `plaintext` (split at [`MAX_RECORD_PLAINTEXT`]).
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        if self.failed {
            return Err(RecordError::Failed);
        }
        for chunk in plaintext.chunks(MAX_RECORD_PLAINTEXT) {
            let start = self.begin(out);
            out.extend_from_slice(chunk);
            self.finish(out, start)?;
        }
        Ok(())
    }

    /// Starts a record at the end of `out` (room for its header); append at most
    /// [`MAX_RECORD_PLAINTEXT`] bytes of plaintext to `out`, then call [`Sealer::finish`] with
    /// the returned start. Lets a writer build records in its own buffer without a copy.
    pub fn begin(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(&[0; RECORD_HEADER_LEN]);
        start
    }

    /// Seals the record begun at `start` (its plaintext is `out[start + 4..]`) in place and
    /// appends its tag.
    pub fn finish(&mut self, out: &mut Vec<u8>, start: usize) -> Result<(), RecordError> {
        if self.failed {
            return Err(RecordError::Failed);
        }
        let plain_len = out.len() - start - RECORD_HEADER_LEN;
        assert!(
            plain_len <= MAX_RECORD_PLAINTEXT,
            "a record holds at most MAX_RECORD_PLAINTEXT"
        );
        {
            if self.counter == u64::MAX {
                self.failed = true;
                return Err(RecordError::Exhausted);
            }
            let body_len = plain_len + TAG_LEN;
            let header = (body_len as u32).to_be_bytes();
            out[start..start + RECORD_HEADER_LEN].copy_from_slice(&header);
            let n = Nonce::assume_unique_for_key(nonce(&self.iv, self.counter));
            let tag = if self.encrypt {
                let data = &mut out[start + RECORD_HEADER_LEN..];
                self.cipher
                    .seal_in_place_separate_tag(n, Aad::from(header), data)
            } else {
                // Header and plaintext are the additional data of an empty message.
                let aad = &out[start..];
                self.cipher
                    .seal_in_place_separate_tag(n, Aad::from(aad), &mut [])
            };
            // AES-GCM refuses only messages over 2^36 bytes; a chunk is 256 KiB.
            let tag: Tag = tag.expect("a record is far below AES-GCM's message limit");
            out.extend_from_slice(tag.as_ref());
            self.counter += 1;
        }
        Ok(())
    }

    /// Appends `bytes` to the stream being built in `out`, beginning and finishing records as
    /// they fill; `open` is the start of the record being filled (from [`Sealer::begin`]).
    pub fn append(
        &mut self,
        out: &mut Vec<u8>,
        open: &mut usize,
        mut bytes: &[u8],
    ) -> Result<(), RecordError> {
        while !bytes.is_empty() {
            let filled = out.len() - *open - RECORD_HEADER_LEN;
            if filled == MAX_RECORD_PLAINTEXT {
                self.finish(out, *open)?;
                *open = self.begin(out);
                continue;
            }
            let take = (MAX_RECORD_PLAINTEXT - filled).min(bytes.len());
            out.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        Ok(())
    }
}

/// Opens records into plaintext (one direction), whatever pieces the bytes arrive in.
pub struct Opener {
    cipher: LessSafeKey,
    iv: [u8; 12],
    counter: u64,
    encrypt: bool,
    /// Bytes of the record being received (at most [`MAX_RECORD_LEN`]).
    pending: Vec<u8>,
    failed: bool,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("counter", &self.counter)
            .field("encrypt", &self.encrypt)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener for the direction `key`; `encrypt` as the peer's [`Sealer`].
    pub fn new(key: &DirectionKey, encrypt: bool) -> Opener {
        Opener {
            cipher: cipher(key),
            iv: key.iv,
            counter: 0,
            encrypt,
            pending: Vec::new(),
            failed: false,
        }
    }

    /// Records opened so far.
    pub fn records(&self) -> u64 {
        self.counter
    }

    /// Takes `input` (any number of bytes read from the connection) and appends to `out` the
    /// plaintext of every record it completes.
    pub fn open(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        if self.failed {
            return Err(RecordError::Failed);
        }
        while !input.is_empty() {
            // A whole record at hand and nothing pending: opened straight into `out` (one copy).
            if self.pending.is_empty() && input.len() >= RECORD_HEADER_LEN {
                let len = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
                if !(TAG_LEN..=MAX_RECORD_PLAINTEXT + TAG_LEN).contains(&len) {
                    self.failed = true;
                    return Err(RecordError::BadLength { len });
                }
                if input.len() >= RECORD_HEADER_LEN + len {
                    let (record, rest) = input.split_at(RECORD_HEADER_LEN + len);
                    self.open_whole(record, out)?;
                    input = rest;
                    continue;
                }
            }
            // Header first, then the body it announces.
            let want = if self.pending.len() < RECORD_HEADER_LEN {
                RECORD_HEADER_LEN
            } else {
                RECORD_HEADER_LEN + self.body_len()?
            };
            let take = (want - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() == RECORD_HEADER_LEN {
                self.body_len()?;
            }
            if self.pending.len() > RECORD_HEADER_LEN
                && self.pending.len() == RECORD_HEADER_LEN + self.body_len()?
            {
                self.open_pending(out)?;
            }
        }
        debug_assert!(self.pending.len() <= MAX_RECORD_LEN);
        Ok(())
    }

    /// The body length in the pending header, checked.
    fn body_len(&mut self) -> Result<usize, RecordError> {
        let mut header = [0u8; RECORD_HEADER_LEN];
        header.copy_from_slice(&self.pending[..RECORD_HEADER_LEN]);
        let len = u32::from_be_bytes(header) as usize;
        if !(TAG_LEN..=MAX_RECORD_PLAINTEXT + TAG_LEN).contains(&len) {
            self.failed = true;
            return Err(RecordError::BadLength { len });
        }
        Ok(len)
    }

    /// Opens one whole `record` (header, body) into the end of `out`.
    fn open_whole(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        if self.counter == u64::MAX {
            self.failed = true;
            return Err(RecordError::Exhausted);
        }
        let n = Nonce::assume_unique_for_key(nonce(&self.iv, self.counter));
        let tag_at = record.len() - TAG_LEN;
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(&record[tag_at..]);
        let tag = Tag::from(tag_bytes);
        let (header, data) = (
            &record[..RECORD_HEADER_LEN],
            &record[RECORD_HEADER_LEN..tag_at],
        );
        let start = out.len();
        let ok = if self.encrypt {
            out.extend_from_slice(data);
            self.cipher
                .open_in_place_separate_tag(n, Aad::from(header), tag, &mut out[start..], 0..)
                .is_ok()
        } else {
            let ok = self
                .cipher
                .open_in_place_separate_tag(n, Aad::from(&record[..tag_at]), tag, &mut [], 0..)
                .is_ok();
            if ok {
                out.extend_from_slice(data);
            }
            ok
        };
        if !ok {
            out.truncate(start);
            self.failed = true;
            return Err(RecordError::Authentication {
                counter: self.counter,
            });
        }
        self.counter += 1;
        Ok(())
    }

    fn open_pending(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        if self.counter == u64::MAX {
            self.failed = true;
            return Err(RecordError::Exhausted);
        }
        let n = Nonce::assume_unique_for_key(nonce(&self.iv, self.counter));
        let tag_at = self.pending.len() - TAG_LEN;
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(&self.pending[tag_at..]);
        let tag = Tag::from(tag_bytes);
        let ok = if self.encrypt {
            let (header, body) = self.pending.split_at_mut(RECORD_HEADER_LEN);
            let data = &mut body[..tag_at - RECORD_HEADER_LEN];
            self.cipher
                .open_in_place_separate_tag(n, Aad::from(&header[..]), tag, data, 0..)
                .is_ok()
        } else {
            let aad = &self.pending[..tag_at];
            self.cipher
                .open_in_place_separate_tag(n, Aad::from(aad), tag, &mut [], 0..)
                .is_ok()
        };
        let data = &self.pending[RECORD_HEADER_LEN..tag_at];
        if !ok {
            self.failed = true;
            return Err(RecordError::Authentication {
                counter: self.counter,
            });
        }
        out.extend_from_slice(data);
        self.counter += 1;
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> DirectionKey {
        DirectionKey {
            key: [b; 32],
            iv: [b ^ 0x5a; 12],
        }
    }

    fn sealed(encrypt: bool, messages: &[&[u8]]) -> Vec<u8> {
        let mut s = Sealer::new(&key(1), encrypt);
        let mut out = Vec::new();
        for m in messages {
            s.seal(m, &mut out).expect("seal");
        }
        out
    }

    #[test]
    fn records_round_trip_in_any_pieces_in_both_modes_and_hide_the_plaintext_only_when_encrypting()
    {
        let big = vec![7u8; MAX_RECORD_PLAINTEXT * 2 + 5];
        for encrypt in [true, false] {
            let wire = sealed(encrypt, &[b"hello", &big, b"!"]);
            // Four records: "hello", two full ones and a 5-byte one for `big`, and "!".
            assert_eq!(
                wire.len(),
                5 + big.len() + 1 + 5 * (RECORD_HEADER_LEN + TAG_LEN)
            );
            let shows = wire.windows(5).any(|w| w == b"hello");
            assert_eq!(shows, !encrypt, "encrypt={encrypt}");
            for piece in [1, 3, 4096, wire.len()] {
                let mut o = Opener::new(&key(1), encrypt);
                let mut plain = Vec::new();
                for chunk in wire.chunks(piece) {
                    o.open(chunk, &mut plain).expect("open");
                }
                assert_eq!(o.records(), 5);
                let mut expected = b"hello".to_vec();
                expected.extend_from_slice(&big);
                expected.push(b'!');
                assert_eq!(plain, expected, "pieces of {piece}");
            }
        }
    }

    #[test]
    fn a_flipped_bit_an_injected_a_replayed_or_a_reordered_record_fails_and_the_opener_stays_failed(
    ) {
        for encrypt in [true, false] {
            let one = sealed(encrypt, &[b"first"]);
            let two = sealed(encrypt, &[b"first", b"second"]);
            let second = two[one.len()..].to_vec();
            let cases: Vec<(&str, Vec<u8>)> = vec![
                ("flipped tag", {
                    let mut w = two.clone();
                    let last = w.len() - 1;
                    w[last] ^= 1;
                    w
                }),
                ("flipped data", {
                    let mut w = two.clone();
                    w[RECORD_HEADER_LEN + 1] ^= 0x80;
                    w
                }),
                ("replayed", [one.clone(), one.clone()].concat()),
                ("reordered", [second.clone(), one.clone()].concat()),
                ("injected", {
                    let mut other = Sealer::new(&key(2), encrypt);
                    let mut w = one.clone();
                    other.seal(b"evil", &mut w).expect("seal");
                    w
                }),
            ];
            for (what, wire) in cases {
                let mut o = Opener::new(&key(1), encrypt);
                let mut plain = Vec::new();
                let err = o.open(&wire, &mut plain).expect_err(what);
                assert!(
                    matches!(err, RecordError::Authentication { .. }),
                    "{what}: {err}"
                );
                assert!(!plain.windows(4).any(|w| w == b"evil"), "{what}");
                assert_eq!(o.open(b"x", &mut plain), Err(RecordError::Failed));
            }
        }
    }

    #[test]
    fn records_built_in_place_open_like_sealed_ones() {
        let big = vec![3u8; MAX_RECORD_PLAINTEXT + 100];
        for encrypt in [true, false] {
            let mut s = Sealer::new(&key(1), encrypt);
            let mut out = Vec::new();
            let mut open = s.begin(&mut out);
            s.append(&mut out, &mut open, b"frame one").unwrap();
            s.append(&mut out, &mut open, &big).unwrap();
            s.finish(&mut out, open).unwrap();
            assert_eq!(s.records(), 2, "the big frame spills into a second record");
            let mut o = Opener::new(&key(1), encrypt);
            let mut plain = Vec::new();
            o.open(&out, &mut plain).unwrap();
            assert_eq!(&plain[..9], b"frame one");
            assert_eq!(&plain[9..], &big[..]);
        }
    }

    #[test]
    fn a_length_out_of_bounds_fails_before_anything_is_buffered() {
        let mut o = Opener::new(&key(1), true);
        let mut plain = Vec::new();
        let huge = ((MAX_RECORD_PLAINTEXT + TAG_LEN + 1) as u32).to_be_bytes();
        assert!(matches!(
            o.open(&huge, &mut plain),
            Err(RecordError::BadLength { .. })
        ));
        let mut o = Opener::new(&key(1), true);
        assert!(matches!(
            o.open(&3u32.to_be_bytes(), &mut plain),
            Err(RecordError::BadLength { len: 3 })
        ));
    }

    #[test]
    fn nonces_differ_per_record() {
        let iv = [9u8; 12];
        let all: std::collections::BTreeSet<[u8; 12]> = (0..1000u64)
            .chain([u64::MAX - 1])
            .map(|c| nonce(&iv, c))
            .collect();
        assert_eq!(all.len(), 1001);
    }

    proptest! {
        /// Whatever bytes arrive, the opener neither panics nor holds more than one record.
        #[test]
        fn random_bytes_never_panic_or_grow_the_opener(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut o = Opener::new(&key(3), true);
            let mut plain = Vec::new();
            let _ = o.open(&bytes, &mut plain);
            prop_assert!(o.pending.len() <= MAX_RECORD_LEN);
            prop_assert!(plain.is_empty());
        }
    }
}
