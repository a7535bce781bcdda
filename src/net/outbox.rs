//! A connection's outgoing side: its bounded queue of frames, the doorbell that wakes its
//! writer, and the writer task that coalesces queued frames into records (sealed on peer
//! links) and writes them.

use super::*;

/// An outgoing queue of one connection: frames waiting for its writer task, bounded in count
/// and bytes, and a doorbell that wakes the writer (dropping the outbox ends the writer).
pub(super) struct Outbox {
    pub(super) connection: u64,
    pub(super) queue: Rc<RefCell<OutQueue>>,
    pub(super) doorbell: local_channel::LocalSender<()>,
}

/// Frames waiting to be written, and their total size.
#[derive(Default)]
pub(super) struct OutQueue {
    pub(super) frames: VecDeque<Arc<Vec<u8>>>,
    pub(super) bytes: usize,
}

pub(super) fn new_outbox(state: &Shared) -> (Outbox, Rc<RefCell<OutQueue>>, Doorbell) {
    let mut s = state.borrow_mut();
    s.next_connection += 1;
    let (doorbell, ring) = local_channel::new_bounded(1);
    let queue = Rc::new(RefCell::new(OutQueue::default()));
    (
        Outbox {
            connection: s.next_connection,
            queue: queue.clone(),
            doorbell,
        },
        queue,
        ring,
    )
}

/// The receiving side of an outbox's wake-up signal.
pub(super) type Doorbell = local_channel::LocalReceiver<()>;

/// Writes an outbox's frames to the socket until the outbox is dropped or the socket fails.
/// Frames queued together are coalesced into one write of up to [`READ_CHUNK`] bytes, sealed
/// into records ([`record`]) on the way out.
pub(super) async fn write_frames(
    writer: &mut futures_lite::io::WriteHalf<TcpStream>,
    mut sealer: Option<record::Sealer>,
    queue: Rc<RefCell<OutQueue>>,
    doorbell: Doorbell,
    counters: Arc<NetCounters>,
    stats: Arc<ShardStats>,
) {
    // Frames are copied once, into this buffer: as they are (client ingress) or into records
    // that are then sealed in place (peer links).
    let mut buffer = Vec::with_capacity(READ_CHUNK + 64);
    loop {
        buffer.clear();
        let mut open = sealer.as_ref().map(|s| s.begin(&mut buffer));
        let mut failed = false;
        {
            let mut q = queue.borrow_mut();
            while let Some(frame) = q.frames.front() {
                if buffer.len() > RECORD_OVERHEAD && buffer.len() + frame.len() > READ_CHUNK {
                    break;
                }
                match (sealer.as_mut(), open.as_mut()) {
                    (Some(sealer), Some(open)) => {
                        failed |= sealer.append(&mut buffer, open, frame).is_err();
                    }
                    _ => buffer.extend_from_slice(frame),
                }
                q.bytes -= frame.len();
                q.frames.pop_front();
                stats.queue_depth.fetch_sub(1, Relaxed);
            }
        }
        let empty = match open {
            Some(start) => buffer.len() == start + record::RECORD_HEADER_LEN && start == 0,
            None => buffer.is_empty(),
        };
        if empty {
            if doorbell.recv().await.is_none() {
                break;
            }
            continue;
        }
        if let (Some(sealer), Some(start)) = (sealer.as_mut(), open) {
            failed |= sealer.finish(&mut buffer, start).is_err();
        }
        if failed || writer.write_all(&buffer).await.is_err() {
            break;
        }
        counters.bytes_out.fetch_add(buffer.len() as u64, Relaxed);
    }
    let _ = writer.close().await;
}

/// Bytes a record adds before its plaintext (the coalescing rule counts plaintext only).
pub(super) const RECORD_OVERHEAD: usize = record::RECORD_HEADER_LEN;
