//! The record layer of a peer link: after the [handshake](super::handshake), every byte a node
//! sends on the connection travels in AEAD-sealed records under the session keys the handshake
//! derived, so nobody on the path can read (unless encryption is off), change, inject, drop,
//! reorder or replay anything without the connection failing.
//!
//! The module is sans-IO: a [`Sealer`] turns plaintext (coalesced frames) into record bytes to
//! write, in the writer's own buffer; an [`Opener`] owns the buffer the connection is read
//! into and opens each record in place there, handing the frame decoder a slice of it. Record
//! boundaries have nothing to do with frame boundaries.
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
//! - An [`Opener`] holds a fixed buffer ([`RECEIVE_BUFFER_LEN`]) whatever it is fed; it never
//!   moves or copies a record inside it.
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

/// Bytes of an [`Opener`]'s receive buffer: room for a record starting anywhere in the first
/// [`MAX_RECORD_LEN`] bytes (see [`Opener::spare`]).
pub const RECEIVE_BUFFER_LEN: usize = 2 * MAX_RECORD_LEN;

/// Opens records into plaintext (one direction), whatever pieces the bytes arrive in.
///
/// The opener owns the buffer the connection is read into ([`Opener::spare`],
/// [`Opener::filled`]) and opens each record in place there ([`Opener::next_plaintext`]), so a
/// record's bytes are never copied between the read and the frame decoder. No record is ever
/// moved inside the buffer either: reads are sized so that a record begins in the first
/// [`MAX_RECORD_LEN`] bytes and therefore always fits, and the buffer starts over from its
/// front whenever it is empty.
pub struct Opener {
    cipher: LessSafeKey,
    iv: [u8; 12],
    counter: u64,
    encrypt: bool,
    /// The receive buffer ([`RECEIVE_BUFFER_LEN`] bytes, never grown).
    buf: Vec<u8>,
    /// Start of the first record not yet opened.
    start: usize,
    /// End of the bytes read.
    end: usize,
    failed: bool,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("counter", &self.counter)
            .field("encrypt", &self.encrypt)
            .field("buffered", &(self.end - self.start))
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
            buf: vec![0; RECEIVE_BUFFER_LEN],
            start: 0,
            end: 0,
            failed: false,
        }
    }

    /// Records opened so far.
    pub fn records(&self) -> u64 {
        self.counter
    }

    /// Bytes read and not yet opened (at most one record's worth plus what follows it).
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Where to read the next bytes from the connection into (never empty); then call
    /// [`Opener::filled`] with the count read. Call it only once [`Opener::next_plaintext`]
    /// has answered `None` (every whole record opened).
    ///
    /// The read is bounded so that no record begins past [`MAX_RECORD_LEN`]: up to that mark
    /// or, when the first unopened record (or its header) ends beyond it, up to that end
    /// exactly.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        // An out-of-bounds length fails in next_plaintext before any read; capped here anyway.
        let len = self
            .announced()
            .map_or(0, |l| l.min(MAX_RECORD_PLAINTEXT + TAG_LEN));
        let limit = (self.start + RECORD_HEADER_LEN + len).max(MAX_RECORD_LEN);
        assert!(
            self.start < MAX_RECORD_LEN,
            "a record begins past MAX_RECORD_LEN"
        );
        assert!(
            self.end < limit && limit <= RECEIVE_BUFFER_LEN,
            "spare() with a whole record not yet opened"
        );
        &mut self.buf[self.end..limit]
    }

    /// Records that `n` bytes were read into [`Opener::spare`].
    pub fn filled(&mut self, n: usize) {
        assert!(
            self.end + n <= RECEIVE_BUFFER_LEN,
            "filled more than spare() offered"
        );
        self.end += n;
    }

    /// The body length the first unopened record announces, if its header is in (unchecked).
    fn announced(&self) -> Option<usize> {
        if self.end - self.start < RECORD_HEADER_LEN {
            return None;
        }
        let h = &self.buf[self.start..self.start + RECORD_HEADER_LEN];
        Some(u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize)
    }

    /// Opens the next whole record in place and returns its plaintext, or `None` when the
    /// bytes read so far hold no further whole record.
    pub fn next_plaintext(&mut self) -> Result<Option<&[u8]>, RecordError> {
        if self.failed {
            return Err(RecordError::Failed);
        }
        let Some(len) = self.announced() else {
            return Ok(None);
        };
        let at = self.start;
        if !(TAG_LEN..=MAX_RECORD_PLAINTEXT + TAG_LEN).contains(&len) {
            self.failed = true;
            return Err(RecordError::BadLength { len });
        }
        let record_end = at + RECORD_HEADER_LEN + len;
        if self.end < record_end {
            return Ok(None);
        }
        if self.counter == u64::MAX {
            self.failed = true;
            return Err(RecordError::Exhausted);
        }
        let n = Nonce::assume_unique_for_key(nonce(&self.iv, self.counter));
        let tag_at = record_end - TAG_LEN;
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(&self.buf[tag_at..record_end]);
        let tag = Tag::from(tag_bytes);
        let ok = if self.encrypt {
            let (header, body) = self.buf[at..tag_at].split_at_mut(RECORD_HEADER_LEN);
            self.cipher
                .open_in_place_separate_tag(n, Aad::from(&header[..]), tag, body, 0..)
                .is_ok()
        } else {
            let aad = &self.buf[at..tag_at];
            self.cipher
                .open_in_place_separate_tag(n, Aad::from(aad), tag, &mut [], 0..)
                .is_ok()
        };
        if !ok {
            self.failed = true;
            return Err(RecordError::Authentication {
                counter: self.counter,
            });
        }
        self.counter += 1;
        self.start = record_end;
        Ok(Some(&self.buf[at + RECORD_HEADER_LEN..tag_at]))
    }

    /// Takes `input` (any number of bytes read from the connection) and appends to `out` the
    /// plaintext of every record it completes: for callers that read into their own buffer
    /// (one copy more than [`Opener::spare`] and [`Opener::next_plaintext`]).
    pub fn open(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
        if self.failed {
            return Err(RecordError::Failed);
        }
        loop {
            while let Some(plain) = self.next_plaintext()? {
                out.extend_from_slice(plain);
            }
            if input.is_empty() {
                return Ok(());
            }
            let spare = self.spare();
            let take = spare.len().min(input.len());
            spare[..take].copy_from_slice(&input[..take]);
            self.filled(take);
            input = &input[take..];
        }
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
        /// Records of any sizes read in reads of any sizes through `spare` come out whole and
        /// in order, opened where they were read.
        #[test]
        fn records_read_in_place_in_any_reads_come_out_in_order(
            sizes in proptest::collection::vec(prop_oneof![1usize..600, Just(MAX_RECORD_PLAINTEXT), (MAX_RECORD_PLAINTEXT - 50)..MAX_RECORD_PLAINTEXT], 1..6),
            reads in proptest::collection::vec(1usize..(MAX_RECORD_LEN + 10), 1..8),
            encrypt in any::<bool>(),
        ) {
            let messages: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| vec![i as u8 + 1; n]).collect();
            let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let wire = sealed(encrypt, &refs);
            let mut o = Opener::new(&key(1), encrypt);
            let (mut at, mut k, mut got) = (0, 0, Vec::new());
            while at < wire.len() {
                let spare = o.spare();
                let n = reads[k % reads.len()].min(spare.len()).min(wire.len() - at);
                spare[..n].copy_from_slice(&wire[at..at + n]);
                o.filled(n);
                at += n;
                k += 1;
                while let Some(plain) = o.next_plaintext().expect("honest records open") {
                    got.push(plain.to_vec());
                }
            }
            prop_assert_eq!(got, messages);
            prop_assert_eq!(o.buffered(), 0);
        }

        /// Whatever bytes arrive, the opener neither panics nor holds more than one record.
        #[test]
        fn random_bytes_never_panic_or_grow_the_opener(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut o = Opener::new(&key(3), true);
            let mut plain = Vec::new();
            let _ = o.open(&bytes, &mut plain);
            prop_assert!(o.buffered() <= MAX_RECORD_LEN);
            prop_assert_eq!(o.buf.len(), RECEIVE_BUFFER_LEN);
            prop_assert!(plain.is_empty());
        }
    }
}
