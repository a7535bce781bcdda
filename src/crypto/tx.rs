//! Ethereum signed transactions: decoding EIP-2718 envelopes and recovering the sender.
//!
//! corecell accepts the three Ethereum transaction types that a plain value/contract call needs:
//!
//! - **legacy** (untagged RLP list) with [EIP-155] replay protection,
//! - **EIP-2930** (type `0x01`, access lists),
//! - **EIP-1559** (type `0x02`, base fee + priority fee).
//!
//! [`decode_transaction`] parses an [EIP-2718] envelope with alloy and recovers the sender with
//! alloy's libsecp256k1 backend. It runs **once, at admission**: everything downstream (mempool,
//! block building, execution) works with the resulting [`DecodedTx`] and never recovers again.
//!
//! # Invariants
//!
//! - **Bounded input.** The length is checked against [`MAX_TX_BYTES`] before any decoding, so a
//!   peer cannot make us parse (or hash) an arbitrarily large blob.
//! - **Supported types only.** The type byte is classified before alloy sees the input. Type `0x03`
//!   (EIP-4844 blob) and `0x04` (EIP-7702 set-code) are refused with
//!   [`TxError::UnsupportedType`], even when well formed; so is every other type byte in
//!   `0x00..=0x7f` other than `0x01`/`0x02` (a literal `0x00` prefix is not a legacy encoding).
//!   A first byte in `0x80..=0xbf` (an RLP string, not a list) is [`TxError::Malformed`].
//! - **Exactly one canonical envelope.** Trailing bytes are refused ([`TxError::TrailingBytes`]),
//!   and the decoded transaction must re-encode to exactly the input bytes
//!   ([`TxError::NonCanonical`]), so one transaction has exactly one byte string and one hash.
//! - **EIP-155 replay protection.** Legacy transactions signed without a chain id (`v` = 27/28)
//!   are refused ([`TxError::MissingChainId`]). The chain id is reported in [`DecodedTx`]; checking
//!   it against the node's own chain id is the caller's job.
//! - **EIP-2 low-s.** Signatures with `s > secp256k1n / 2` are refused ([`TxError::HighS`]), so a
//!   signature cannot be malleated into a second valid encoding of the same transaction.
//! - **Identity.** [`DecodedTx::hash`] is keccak-256 of the exact envelope bytes (the standard
//!   Ethereum transaction hash: for typed transactions the type byte is included).
//! - **No panics.** Every input, however malformed, yields `Ok` or a [`TxError`].
//!
//! [`address_of_secret`] and [`sign_transfer`] are real (non-test) helpers for the load generator
//! and tests: they derive addresses and sign simple transfers. They are not wallet-grade key
//! handling (secret keys are not zeroized).
//!
//! [EIP-155]: https://eips.ethereum.org/EIPS/eip-155
//! [EIP-2718]: https://eips.ethereum.org/EIPS/eip-2718

use alloy_consensus::crypto::SECP256K1N_HALF;
use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::{
    SignableTransaction, Signed, Transaction, TxEip1559, TxEip2930, TxEnvelope, TxLegacy,
};
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
use alloy_primitives::{Address, Bytes, Signature, TxKind, B256, U256};
use secp256k1::{Message, PublicKey, SecretKey, SECP256K1};

use crate::types::hash::{keccak256, Hash32};
use crate::types::MAX_TX_BYTES;

/// The transaction types corecell accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxType {
    /// Untagged legacy transaction; accepted only with an EIP-155 chain id.
    Legacy,
    /// EIP-2930 (type `0x01`).
    Eip2930,
    /// EIP-1559 (type `0x02`).
    Eip1559,
}

impl TxType {
    /// A short, stable name for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            TxType::Legacy => "legacy",
            TxType::Eip2930 => "eip2930",
            TxType::Eip1559 => "eip1559",
        }
    }

    /// The EIP-2718 type number (0 for legacy, which is encoded without a type byte).
    pub const fn type_byte(self) -> u8 {
        match self {
            TxType::Legacy => 0,
            TxType::Eip2930 => 1,
            TxType::Eip1559 => 2,
        }
    }
}

/// A decoded transaction whose sender has been recovered and whose signature is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedTx {
    /// keccak-256 of the exact envelope bytes.
    pub hash: Hash32,
    /// The recovered sender address.
    pub sender: [u8; 20],
    /// Which of the supported types this is.
    pub tx_type: TxType,
    /// The chain id the transaction was signed for (EIP-155 `v` for legacy).
    pub chain_id: u64,
    /// Sender nonce.
    pub nonce: u64,
    /// Gas limit.
    pub gas_limit: u64,
    /// EIP-1559 max fee per gas; the gas price for legacy and EIP-2930.
    pub max_fee_per_gas: u128,
    /// EIP-1559 max priority fee per gas; the gas price for legacy and EIP-2930.
    pub max_priority_fee_per_gas: u128,
    /// Recipient; `None` for contract creation.
    pub to: Option<[u8; 20]>,
    /// Value transferred, in wei.
    pub value: U256,
    /// Length of the call data (`input`), in bytes.
    pub input_len: usize,
    /// Length of the whole envelope, in bytes.
    pub encoded_len: usize,
}

impl DecodedTx {
    /// Price per gas actually paid at `base_fee` (EIP-1559 rule):
    /// `min(max_fee_per_gas, base_fee + max_priority_fee_per_gas)`; the gas price for legacy and
    /// EIP-2930 transactions.
    ///
    /// This does not check includability: a transaction with `max_fee_per_gas < base_fee` cannot
    /// be included, and the caller must check that separately.
    pub fn effective_gas_price(&self, base_fee: u128) -> u128 {
        match self.tx_type {
            TxType::Legacy | TxType::Eip2930 => self.max_fee_per_gas,
            TxType::Eip1559 => self
                .max_fee_per_gas
                .min(base_fee.saturating_add(self.max_priority_fee_per_gas)),
        }
    }
}

/// Why a transaction was refused (or could not be signed).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TxError {
    /// Zero bytes.
    #[error("empty transaction")]
    Empty,
    /// Larger than [`MAX_TX_BYTES`]; nothing was decoded.
    #[error("transaction is {len} bytes, the limit is {max}")]
    TooLarge {
        /// The input length.
        len: usize,
        /// The limit ([`MAX_TX_BYTES`]).
        max: usize,
    },
    /// An EIP-2718 type corecell does not accept (3 = EIP-4844 blob, 4 = EIP-7702, or unknown).
    #[error("unsupported transaction type {0:#04x} (accepted: legacy, 0x01, 0x02)")]
    UnsupportedType(u8),
    /// The bytes are not a valid envelope of the announced type.
    #[error("malformed transaction: {0}")]
    Malformed(String),
    /// A valid envelope followed by extra bytes.
    #[error("{extra} trailing bytes after the transaction")]
    TrailingBytes {
        /// How many bytes follow the envelope.
        extra: usize,
    },
    /// The envelope decodes but does not re-encode to the same bytes.
    #[error("transaction is not canonically encoded")]
    NonCanonical,
    /// A legacy transaction without EIP-155 replay protection (`v` = 27 or 28).
    #[error("legacy transaction without an EIP-155 chain id (no replay protection)")]
    MissingChainId,
    /// Signature `s` above `secp256k1n / 2` (EIP-2).
    #[error("signature s value is above secp256k1n/2 (EIP-2)")]
    HighS,
    /// The signature is invalid: no public key can be recovered from it.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// A secret key that is zero or not below the curve order.
    #[error("invalid secp256k1 secret key")]
    InvalidSecretKey,
}

/// Decodes an EIP-2718 envelope, checks it against the invariants in the module docs, and
/// recovers the sender.
pub fn decode_transaction(bytes: &[u8]) -> Result<DecodedTx, TxError> {
    let first = *bytes.first().ok_or(TxError::Empty)?;
    if bytes.len() > MAX_TX_BYTES {
        return Err(TxError::TooLarge {
            len: bytes.len(),
            max: MAX_TX_BYTES,
        });
    }
    // Classify the type byte ourselves, before alloy, so refusals are precise and no parser runs
    // for types we do not accept (0x00..=0x7f is a type byte, 0xc0.. an RLP list = legacy).
    let expected = match first {
        0x01 => TxType::Eip2930,
        0x02 => TxType::Eip1559,
        0xc0..=0xff => TxType::Legacy,
        0x80..=0xbf => {
            return Err(TxError::Malformed(
                "expected a type byte or an RLP list, found an RLP string".into(),
            ))
        }
        ty => return Err(TxError::UnsupportedType(ty)),
    };

    // Decode as exactly the announced type. (`TxEnvelope::decode_2718` would, for a malformed
    // legacy list, try every envelope variant in turn and report only "unexpected type 0".)
    let mut rest = bytes;
    let decoded = match expected {
        TxType::Legacy => Signed::<TxLegacy>::decode_2718(&mut rest).map(TxEnvelope::Legacy),
        TxType::Eip2930 => Signed::<TxEip2930>::decode_2718(&mut rest).map(TxEnvelope::Eip2930),
        TxType::Eip1559 => Signed::<TxEip1559>::decode_2718(&mut rest).map(TxEnvelope::Eip1559),
    };
    let envelope = decoded.map_err(|e| TxError::Malformed(format!("{}: {e}", expected.name())))?;
    if !rest.is_empty() {
        return Err(TxError::TrailingBytes { extra: rest.len() });
    }
    if envelope.encode_2718_len() != bytes.len() || envelope.encoded_2718() != bytes {
        return Err(TxError::NonCanonical);
    }

    // Legacy transactions without EIP-155 have no chain id: refused (replay protection).
    let chain_id = envelope.chain_id().ok_or(TxError::MissingChainId)?;
    // Checked explicitly so the refusal is precise; `recover_signer` enforces it again.
    if envelope.signature().s() > SECP256K1N_HALF {
        return Err(TxError::HighS);
    }
    let sender = envelope
        .recover_signer()
        .map_err(|e| TxError::BadSignature(e.to_string()))?;
    let max_fee_per_gas = envelope.max_fee_per_gas();
    Ok(DecodedTx {
        hash: keccak256(bytes),
        sender: sender.into(),
        tx_type: expected,
        chain_id,
        nonce: envelope.nonce(),
        gas_limit: envelope.gas_limit(),
        max_fee_per_gas,
        // Legacy and EIP-2930 have one gas price, which is both the cap and the tip.
        max_priority_fee_per_gas: envelope
            .max_priority_fee_per_gas()
            .unwrap_or(max_fee_per_gas),
        to: envelope.kind().to().map(|address| (*address).into()),
        value: envelope.value(),
        input_len: envelope.input().len(),
        encoded_len: bytes.len(),
    })
}

/// The Ethereum address of a secp256k1 secret key: the last 20 bytes of keccak-256 of the
/// uncompressed public key (without its `0x04` tag).
pub fn address_of_secret(secret: &[u8; 32]) -> Result<[u8; 20], TxError> {
    let key = SecretKey::from_byte_array(secret).map_err(|_| TxError::InvalidSecretKey)?;
    let public = PublicKey::from_secret_key_global(&key).serialize_uncompressed();
    let digest = keccak256(&public[1..]);
    let mut address = [0u8; 20];
    address.copy_from_slice(&digest[12..]);
    Ok(address)
}

/// A plain value transfer (no call data, empty access list), for [`sign_transfer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Chain id (always set: legacy transfers are signed with EIP-155).
    pub chain_id: u64,
    /// Sender nonce.
    pub nonce: u64,
    /// Recipient.
    pub to: [u8; 20],
    /// Value in wei.
    pub value: U256,
    /// Gas limit (21000 for a transfer to an account without code).
    pub gas_limit: u64,
    /// EIP-1559 max fee per gas; the gas price for legacy and EIP-2930.
    pub max_fee_per_gas: u128,
    /// EIP-1559 max priority fee per gas; ignored for legacy and EIP-2930.
    pub max_priority_fee_per_gas: u128,
}

/// Signs `transfer` as a `tx_type` transaction with `secret` and returns the EIP-2718 envelope
/// bytes (what [`decode_transaction`] accepts).
///
/// Signatures are deterministic (RFC 6979) and low-s (libsecp256k1 always normalizes).
pub fn sign_transfer(
    secret: &[u8; 32],
    tx_type: TxType,
    transfer: &Transfer,
) -> Result<Vec<u8>, TxError> {
    let to = TxKind::Call(Address::from(transfer.to));
    let envelope = match tx_type {
        TxType::Legacy => TxEnvelope::Legacy(sign_tx(
            secret,
            TxLegacy {
                chain_id: Some(transfer.chain_id),
                nonce: transfer.nonce,
                gas_price: transfer.max_fee_per_gas,
                gas_limit: transfer.gas_limit,
                to,
                value: transfer.value,
                input: Bytes::new(),
            },
        )?),
        TxType::Eip2930 => TxEnvelope::Eip2930(sign_tx(
            secret,
            TxEip2930 {
                chain_id: transfer.chain_id,
                nonce: transfer.nonce,
                gas_price: transfer.max_fee_per_gas,
                gas_limit: transfer.gas_limit,
                to,
                value: transfer.value,
                access_list: Default::default(),
                input: Bytes::new(),
            },
        )?),
        TxType::Eip1559 => TxEnvelope::Eip1559(sign_tx(
            secret,
            TxEip1559 {
                chain_id: transfer.chain_id,
                nonce: transfer.nonce,
                gas_limit: transfer.gas_limit,
                max_fee_per_gas: transfer.max_fee_per_gas,
                max_priority_fee_per_gas: transfer.max_priority_fee_per_gas,
                to,
                value: transfer.value,
                access_list: Default::default(),
                input: Bytes::new(),
            },
        )?),
    };
    Ok(envelope.encoded_2718())
}

/// Signs any alloy transaction's signature hash with `secret`.
fn sign_tx<T: SignableTransaction<Signature>>(
    secret: &[u8; 32],
    tx: T,
) -> Result<Signed<T>, TxError> {
    let signature = sign_hash(secret, tx.signature_hash())?;
    Ok(tx.into_signed(signature))
}

/// Recoverable ECDSA over a 32-byte prehash, as an alloy [`Signature`] (r, s, y parity).
fn sign_hash(secret: &[u8; 32], hash: B256) -> Result<Signature, TxError> {
    let key = SecretKey::from_byte_array(secret).map_err(|_| TxError::InvalidSecretKey)?;
    let signature = SECP256K1.sign_ecdsa_recoverable(&Message::from_digest(hash.0), &key);
    let (recovery_id, compact) = signature.serialize_compact();
    let y_parity = match i32::from(recovery_id) {
        0 => false,
        1 => true,
        // 2 and 3 mean r overflowed the curve order (probability ~2^-127); Ethereum's y parity
        // cannot express them.
        other => {
            return Err(TxError::BadSignature(format!(
                "recovery id {other} cannot be encoded"
            )))
        }
    };
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&compact[..32]);
    s.copy_from_slice(&compact[32..]);
    Ok(Signature::new(
        U256::from_be_bytes(r),
        U256::from_be_bytes(s),
        y_parity,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::{TxEip4844, TxEip7702};
    use proptest::prelude::*;

    /// The EIP-155 example: nonce 9, 20 gwei, 21000 gas, to 0x35..35, 1 ether, chain id 1.
    const EIP155_TX: &str = "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83";
    const EIP155_SECRET: [u8; 32] = [0x46; 32];
    const EIP155_SENDER: &str = "9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f";

    const SECRET: [u8; 32] = [0x11; 32];
    const ALL_TYPES: [TxType; 3] = [TxType::Legacy, TxType::Eip2930, TxType::Eip1559];

    fn transfer() -> Transfer {
        Transfer {
            chain_id: 1001,
            nonce: 7,
            to: [0xab; 20],
            value: U256::from(123_456_789u64),
            gas_limit: 21_000,
            max_fee_per_gas: 50_000_000_000,
            max_priority_fee_per_gas: 2_000_000_000,
        }
    }

    fn signed(tx_type: TxType) -> Vec<u8> {
        sign_transfer(&SECRET, tx_type, &transfer()).expect("test key is valid")
    }

    /// The envelope of `bytes` with its signature replaced by `f(signature)`, re-encoded.
    fn with_signature(bytes: &[u8], f: impl Fn(&Signature) -> Signature) -> Vec<u8> {
        let envelope = TxEnvelope::decode_2718_exact(bytes).expect("valid test tx");
        let envelope = match envelope {
            TxEnvelope::Legacy(s) => {
                TxEnvelope::Legacy(Signed::new_unhashed(s.tx().clone(), f(s.signature())))
            }
            TxEnvelope::Eip2930(s) => {
                TxEnvelope::Eip2930(Signed::new_unhashed(s.tx().clone(), f(s.signature())))
            }
            TxEnvelope::Eip1559(s) => {
                TxEnvelope::Eip1559(Signed::new_unhashed(s.tx().clone(), f(s.signature())))
            }
            _ => unreachable!("only supported types are built in tests"),
        };
        envelope.encoded_2718()
    }

    #[test]
    fn eip155_published_example() {
        let bytes = hex::decode(EIP155_TX).unwrap();
        let tx = decode_transaction(&bytes).unwrap();
        assert_eq!(hex::encode(tx.sender), EIP155_SENDER);
        assert_eq!(tx.tx_type, TxType::Legacy);
        assert_eq!(tx.chain_id, 1);
        assert_eq!(tx.nonce, 9);
        assert_eq!(tx.max_fee_per_gas, 20_000_000_000);
        assert_eq!(tx.max_priority_fee_per_gas, 20_000_000_000);
        assert_eq!(tx.gas_limit, 21_000);
        assert_eq!(tx.to, Some([0x35; 20]));
        assert_eq!(tx.value, U256::from(1_000_000_000_000_000_000u64));
        assert_eq!(tx.input_len, 0);
        assert_eq!(tx.encoded_len, bytes.len());
        assert_eq!(tx.hash, keccak256(&bytes));
        assert_eq!(tx.effective_gas_price(1_000_000_000_000), 20_000_000_000);

        assert_eq!(
            hex::encode(address_of_secret(&EIP155_SECRET).unwrap()),
            EIP155_SENDER
        );
        // RFC 6979 signing reproduces the published signature byte for byte.
        let resigned = sign_transfer(
            &EIP155_SECRET,
            TxType::Legacy,
            &Transfer {
                chain_id: 1,
                nonce: 9,
                to: [0x35; 20],
                value: U256::from(1_000_000_000_000_000_000u64),
                gas_limit: 21_000,
                max_fee_per_gas: 20_000_000_000,
                max_priority_fee_per_gas: 0,
            },
        )
        .unwrap();
        assert_eq!(hex::encode(resigned), EIP155_TX);
    }

    #[test]
    fn sign_and_decode_round_trip_all_types() {
        let sender = address_of_secret(&SECRET).unwrap();
        let t = transfer();
        for tx_type in ALL_TYPES {
            let bytes = signed(tx_type);
            let tx = decode_transaction(&bytes).unwrap();
            assert_eq!(tx.sender, sender, "{}", tx_type.name());
            assert_eq!(tx.tx_type, tx_type);
            assert_eq!(tx.chain_id, t.chain_id);
            assert_eq!(tx.nonce, t.nonce);
            assert_eq!(tx.gas_limit, t.gas_limit);
            assert_eq!(tx.to, Some(t.to));
            assert_eq!(tx.value, t.value);
            assert_eq!(tx.input_len, 0);
            assert_eq!(tx.encoded_len, bytes.len());
            assert_eq!(tx.hash, keccak256(&bytes));
            assert_eq!(tx.max_fee_per_gas, t.max_fee_per_gas);
            match tx_type {
                TxType::Legacy => assert!(bytes[0] >= 0xc0),
                TxType::Eip2930 | TxType::Eip1559 => assert_eq!(bytes[0], tx_type.type_byte()),
            }
            let expected_priority = match tx_type {
                TxType::Eip1559 => t.max_priority_fee_per_gas,
                _ => t.max_fee_per_gas,
            };
            assert_eq!(tx.max_priority_fee_per_gas, expected_priority);
            // The hash is the same one alloy computes.
            let alloy_hash = *TxEnvelope::decode_2718_exact(&bytes).unwrap().tx_hash();
            assert_eq!(tx.hash, alloy_hash.0);
        }
        // Different types of the same transfer are different transactions.
        assert_ne!(signed(TxType::Eip2930), signed(TxType::Eip1559));
    }

    #[test]
    fn effective_gas_price_follows_eip1559() {
        let mut tx = decode_transaction(&signed(TxType::Eip1559)).unwrap();
        tx.max_fee_per_gas = 100;
        tx.max_priority_fee_per_gas = 2;
        assert_eq!(tx.effective_gas_price(50), 52);
        assert_eq!(tx.effective_gas_price(99), 100);
        assert_eq!(tx.effective_gas_price(200), 100);
        assert_eq!(tx.effective_gas_price(u128::MAX), 100);
        for tx_type in [TxType::Legacy, TxType::Eip2930] {
            let tx = decode_transaction(&signed(tx_type)).unwrap();
            assert_eq!(tx.effective_gas_price(0), transfer().max_fee_per_gas);
            assert_eq!(
                tx.effective_gas_price(u128::MAX),
                transfer().max_fee_per_gas
            );
        }
    }

    #[test]
    fn contract_creation_and_call_data() {
        let tx = sign_tx(
            &SECRET,
            TxEip1559 {
                chain_id: 5,
                gas_limit: 1_000_000,
                to: TxKind::Create,
                input: Bytes::from(vec![0x60; 1000]),
                ..Default::default()
            },
        )
        .unwrap();
        let bytes = TxEnvelope::Eip1559(tx).encoded_2718();
        let decoded = decode_transaction(&bytes).unwrap();
        assert_eq!(decoded.to, None);
        assert_eq!(decoded.input_len, 1000);
        assert_eq!(decoded.sender, address_of_secret(&SECRET).unwrap());
    }

    #[test]
    fn refuses_empty() {
        assert_eq!(decode_transaction(&[]), Err(TxError::Empty));
    }

    #[test]
    fn size_limit_is_checked_before_decoding() {
        let junk = vec![0xffu8; MAX_TX_BYTES + 1];
        assert_eq!(
            decode_transaction(&junk),
            Err(TxError::TooLarge {
                len: MAX_TX_BYTES + 1,
                max: MAX_TX_BYTES
            })
        );
        // A well-formed, validly signed transaction just over the limit is refused; one at the
        // limit is accepted.
        let make = |input_len: usize| {
            let tx = sign_tx(
                &SECRET,
                TxEip1559 {
                    chain_id: 1,
                    gas_limit: 30_000_000,
                    to: TxKind::Call(Address::ZERO),
                    input: Bytes::from(vec![1u8; input_len]),
                    ..Default::default()
                },
            )
            .unwrap();
            TxEnvelope::Eip1559(tx).encoded_2718()
        };
        let overhead = make(0).len() + 8; // +8 covers the longer RLP length prefix of the input
        let mut input_len = MAX_TX_BYTES - overhead;
        while make(input_len + 1).len() <= MAX_TX_BYTES {
            input_len += 1;
        }
        let at_limit = make(input_len);
        assert!(at_limit.len() <= MAX_TX_BYTES);
        assert_eq!(decode_transaction(&at_limit).unwrap().input_len, input_len);
        let over = make(input_len + 1);
        assert!(over.len() > MAX_TX_BYTES);
        assert!(matches!(
            decode_transaction(&over),
            Err(TxError::TooLarge { .. })
        ));
    }

    #[test]
    fn refuses_every_truncation() {
        for tx_type in ALL_TYPES {
            let bytes = signed(tx_type);
            for len in 0..bytes.len() {
                let result = decode_transaction(&bytes[..len]);
                assert!(result.is_err(), "{} prefix {len} accepted", tx_type.name());
                if len == 0 {
                    assert_eq!(result, Err(TxError::Empty));
                } else {
                    assert!(matches!(result, Err(TxError::Malformed(_))), "{result:?}");
                }
            }
        }
    }

    #[test]
    fn refuses_trailing_bytes() {
        for tx_type in ALL_TYPES {
            let bytes = signed(tx_type);
            for garbage in [&[0x00][..], &[0x80], &[0xc0], &[1, 2, 3]] {
                let mut long = bytes.clone();
                long.extend_from_slice(garbage);
                assert_eq!(
                    decode_transaction(&long),
                    Err(TxError::TrailingBytes {
                        extra: garbage.len()
                    })
                );
            }
            let twice = [bytes.clone(), bytes.clone()].concat();
            assert_eq!(
                decode_transaction(&twice),
                Err(TxError::TrailingBytes { extra: bytes.len() })
            );
        }
    }

    #[test]
    fn refuses_legacy_without_chain_id() {
        let tx = sign_tx(
            &SECRET,
            TxLegacy {
                chain_id: None,
                nonce: 1,
                gas_price: 1_000_000_000,
                gas_limit: 21_000,
                to: TxKind::Call(Address::ZERO),
                value: U256::from(1u8),
                input: Bytes::new(),
            },
        )
        .unwrap();
        let envelope = TxEnvelope::Legacy(tx);
        // The signature itself is fine: alloy recovers our address from it.
        assert_eq!(
            envelope.recover_signer().unwrap().0 .0,
            address_of_secret(&SECRET).unwrap()
        );
        let bytes = envelope.encoded_2718();
        // v is 27 or 28: the last field before r is a single byte 0x1b/0x1c.
        assert!(bytes
            .windows(2)
            .any(|w| w == [0x1b, 0xa0] || w == [0x1c, 0xa0]));
        assert_eq!(decode_transaction(&bytes), Err(TxError::MissingChainId));
    }

    #[test]
    fn tampered_signature_never_yields_the_original_sender() {
        let sender = address_of_secret(&SECRET).unwrap();
        for tx_type in ALL_TYPES {
            let bytes = signed(tx_type);
            // Flip bits in r and in s through alloy.
            for bit in [0usize, 7, 100, 200] {
                let flip = U256::from(1u8) << bit;
                for tampered in [
                    with_signature(&bytes, |s| Signature::new(s.r() ^ flip, s.s(), s.v())),
                    with_signature(&bytes, |s| Signature::new(s.r(), s.s() ^ flip, s.v())),
                ] {
                    match decode_transaction(&tampered) {
                        Ok(tx) => assert_ne!(tx.sender, sender),
                        Err(e) => assert!(
                            matches!(e, TxError::BadSignature(_) | TxError::HighS),
                            "{e:?}"
                        ),
                    }
                }
            }
            // Flip the y parity.
            let flipped = with_signature(&bytes, |s| Signature::new(s.r(), s.s(), !s.v()));
            match decode_transaction(&flipped) {
                Ok(tx) => assert_ne!(tx.sender, sender),
                Err(e) => assert!(matches!(e, TxError::BadSignature(_)), "{e:?}"),
            }
            // Flip the last byte of the raw envelope, which is the low byte of s.
            let mut raw = bytes.clone();
            let last = raw.len() - 1;
            raw[last] ^= 0x01;
            match decode_transaction(&raw) {
                Ok(tx) => assert_ne!(tx.sender, sender),
                Err(e) => assert!(matches!(e, TxError::BadSignature(_)), "{e:?}"),
            }
            // r = 0 cannot be recovered at all.
            let zero_r = with_signature(&bytes, |s| Signature::new(U256::ZERO, s.s(), s.v()));
            assert!(matches!(
                decode_transaction(&zero_r),
                Err(TxError::BadSignature(_))
            ));
        }
    }

    #[test]
    fn refuses_high_s() {
        let order = U256::from_be_bytes(secp256k1::constants::CURVE_ORDER);
        let sender = address_of_secret(&SECRET).unwrap();
        for tx_type in ALL_TYPES {
            let bytes = signed(tx_type);
            // (r, n - s, !v) is the malleated twin: a valid signature by the same key.
            let high = with_signature(&bytes, |s| Signature::new(s.r(), order - s.s(), !s.v()));
            let envelope = TxEnvelope::decode_2718_exact(&high).unwrap();
            assert_eq!(envelope.recover_signer_unchecked().unwrap().0 .0, sender);
            assert_eq!(decode_transaction(&high), Err(TxError::HighS));
        }
    }

    #[test]
    fn refuses_unsupported_types() {
        // Well-formed, validly signed EIP-4844 and EIP-7702 transactions are refused by type.
        let blob = TxEnvelope::Eip4844(
            sign_tx(
                &SECRET,
                alloy_consensus::TxEip4844Variant::TxEip4844(TxEip4844 {
                    chain_id: 1,
                    gas_limit: 21_000,
                    max_fee_per_blob_gas: 1,
                    blob_versioned_hashes: vec![B256::repeat_byte(1)],
                    ..Default::default()
                }),
            )
            .unwrap(),
        )
        .encoded_2718();
        assert_eq!(blob[0], 0x03);
        assert_eq!(decode_transaction(&blob), Err(TxError::UnsupportedType(3)));
        let set_code = TxEnvelope::Eip7702(
            sign_tx(
                &SECRET,
                TxEip7702 {
                    chain_id: 1,
                    gas_limit: 100_000,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
        .encoded_2718();
        assert_eq!(set_code[0], 0x04);
        assert_eq!(
            decode_transaction(&set_code),
            Err(TxError::UnsupportedType(4))
        );
        // Any bytes behind those type bytes, and every other type byte, are refused the same way.
        for ty in (0x00..=0x7fu8).filter(|t| *t != 1 && *t != 2) {
            assert_eq!(decode_transaction(&[ty]), Err(TxError::UnsupportedType(ty)));
            assert_eq!(
                decode_transaction(&[ty, 0xc0, 0x01]),
                Err(TxError::UnsupportedType(ty))
            );
        }
        // An RLP string is neither a type byte nor a legacy list.
        assert!(matches!(
            decode_transaction(&[0x80]),
            Err(TxError::Malformed(_))
        ));
        assert!(matches!(
            decode_transaction(&[0x82, 0xc0, 0xc0]),
            Err(TxError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_non_canonical_rlp() {
        // The EIP-155 example's outer list header with a non-minimal length (0xf8 0x6c written as
        // 0xf9 0x00 0x6c): alloy's strict RLP decoder refuses it before our re-encoding check.
        let bytes = hex::decode(EIP155_TX).unwrap();
        assert_eq!(&bytes[..2], &[0xf8, 0x6c]);
        let mut long = vec![0xf9, 0x00, 0x6c];
        long.extend_from_slice(&bytes[2..]);
        assert!(matches!(
            decode_transaction(&long),
            Err(TxError::Malformed(_))
        ));
        // Nonce 9 written as a one-byte string (0x81 0x09) instead of the byte itself.
        let mut padded = vec![0xf8, 0x6d, 0x81];
        padded.extend_from_slice(&bytes[2..]);
        assert!(matches!(
            decode_transaction(&padded),
            Err(TxError::Malformed(_))
        ));
    }

    #[test]
    fn invalid_secret_keys_are_refused() {
        assert_eq!(address_of_secret(&[0; 32]), Err(TxError::InvalidSecretKey));
        assert_eq!(
            address_of_secret(&secp256k1::constants::CURVE_ORDER),
            Err(TxError::InvalidSecretKey)
        );
        assert_eq!(
            sign_transfer(&[0xff; 32], TxType::Eip1559, &transfer()),
            Err(TxError::InvalidSecretKey)
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_transaction(&bytes);
        }

        #[test]
        fn random_bytes_behind_a_plausible_prefix_never_panic(
            prefix in prop::sample::select(vec![0x01u8, 0x02, 0xf8, 0xf9, 0xc0, 0xf7]),
            bytes in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut input = vec![prefix];
            input.extend_from_slice(&bytes);
            let _ = decode_transaction(&input);
        }

        #[test]
        fn mutations_of_a_valid_tx_never_panic(
            ty in 0usize..3,
            edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
        ) {
            let original = signed(ALL_TYPES[ty]);
            let mut bytes = original.clone();
            for (at, byte, op) in edits {
                let at = at % (bytes.len() + 1);
                match op {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => { bytes.remove(at); }
                    _ => bytes.push(byte),
                }
            }
            if let Ok(tx) = decode_transaction(&bytes) {
                // Whatever is accepted is self-consistent.
                prop_assert_eq!(tx.hash, keccak256(&bytes));
                prop_assert_eq!(tx.encoded_len, bytes.len());
                if bytes != original {
                    prop_assert_ne!(tx.hash, keccak256(&original));
                }
            }
        }

        #[test]
        fn round_trip_random_transfers(
            ty in 0usize..3,
            secret in any::<[u8; 32]>(),
            chain_id in any::<u64>(),
            nonce in any::<u64>(),
            to in any::<[u8; 20]>(),
            value in any::<[u8; 32]>(),
            gas_limit in any::<u64>(),
            max_fee_per_gas in any::<u128>(),
            max_priority_fee_per_gas in any::<u128>(),
        ) {
            let Ok(sender) = address_of_secret(&secret) else {
                return Err(TestCaseError::reject("secret out of range"));
            };
            let transfer = Transfer {
                chain_id,
                nonce,
                to,
                value: U256::from_be_bytes(value),
                gas_limit,
                max_fee_per_gas,
                max_priority_fee_per_gas,
            };
            let bytes = sign_transfer(&secret, ALL_TYPES[ty], &transfer).unwrap();
            let tx = decode_transaction(&bytes).unwrap();
            prop_assert_eq!(tx.sender, sender);
            prop_assert_eq!(tx.tx_type, ALL_TYPES[ty]);
            prop_assert_eq!(tx.chain_id, chain_id);
            prop_assert_eq!(tx.nonce, nonce);
            prop_assert_eq!(tx.to, Some(to));
            prop_assert_eq!(tx.value, transfer.value);
            prop_assert_eq!(tx.gas_limit, gas_limit);
            prop_assert_eq!(tx.max_fee_per_gas, max_fee_per_gas);
        }
    }
}
