//! Tampered block bodies (TEST ONLY, cargo feature `byzantine`): what a node with the
//! `tamper-bodies` behaviour (`config::byzantine::Behaviour::TamperBodies`) does to every
//! finalized block it sends.

/// `frame` with other transactions under the same header and certificate when it is a
/// finalized-block frame (the last transaction's bytes changed, or one added to an empty
/// block); any other frame as it is.
pub fn tamper_block_frame(frame: std::sync::Arc<Vec<u8>>) -> std::sync::Arc<Vec<u8>> {
    use crate::types::frame::{FrameKind, FRAME_HEADER_LEN};
    if frame.len() <= FRAME_HEADER_LEN || frame[4] != FrameKind::FinalizedBlock as u8 {
        return frame;
    }
    let mut payload = rkyv::util::AlignedVec::<16>::new();
    payload.extend_from_slice(&frame[FRAME_HEADER_LEN..]);
    let Ok(mut block) =
        rkyv::from_bytes::<crate::types::FinalizedBlock, rkyv::rancor::Error>(&payload)
    else {
        return frame;
    };
    match block.block.transactions.last_mut() {
        Some(tx) => {
            if let Some(b) = tx.bytes.last_mut() {
                *b ^= 0x01;
            }
        }
        None => block
            .block
            .transactions
            .push(crate::types::chain::SignedTransaction {
                bytes: vec![0x02, 0xc0],
            }),
    }
    std::sync::Arc::new(crate::types::frame::encode_frame(&block))
}
