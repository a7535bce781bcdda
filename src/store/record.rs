//! The record layout shared by the block log segments and the consensus WAL, and the streaming
//! scan that checks a file record by record.
//!
//! Record: `le_u32 payload length | le_u64 xxh3(payload) | payload`.

use std::io::Read;
use std::path::Path;

use rkyv::util::AlignedVec;

use super::{io_error, StoreError};
use crate::types::frame::MAX_FINALIZED_BLOCK_PAYLOAD;
use crate::types::hash::xxh3;

/// Bytes of a record header: length and checksum.
pub const RECORD_HEADER_LEN: usize = 12;
/// Largest record payload accepted on recovery.
pub const MAX_RECORD_BYTES: usize = MAX_FINALIZED_BLOCK_PAYLOAD;
/// Read buffer of a scan.
const READ_BUFFER: usize = 1024 * 1024;

/// Encodes one record.
pub fn encode_record(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    append_record(&mut out, payload);
    out
}

/// Appends one record to `out`.
pub fn append_record(out: &mut Vec<u8>, payload: &[u8]) {
    assert!(
        !payload.is_empty() && payload.len() <= MAX_RECORD_BYTES,
        "record payload of {} bytes is outside 1..={MAX_RECORD_BYTES}",
        payload.len()
    );
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&xxh3(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Splits a record header into payload length and checksum.
pub(crate) fn parse_record_header(header: &[u8; RECORD_HEADER_LEN]) -> (usize, u64) {
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[..4]);
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&header[4..]);
    (u32::from_le_bytes(len) as usize, u64::from_le_bytes(sum))
}

/// How a scanned file is allowed to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The file is still appended to (the last block log segment, the WAL), one write and one
    /// fsync at a time, each write at most `torn_window` bytes from the first byte it changes
    /// to its end. A crash before the fsync can leave any subset of that write's sectors on the
    /// disk, in any order (those lost read as zeros): a bad record with nothing after it but
    /// zeros, or with a lost sector and non-zero bytes ending within `torn_window` of its
    /// start, may be that write torn, and ends the scan.
    Open {
        /// The most bytes one write spans (see above).
        torn_window: u64,
    },
    /// The file is never written again (a sealed segment): it ends exactly at its last
    /// record, and any bad record or trailing byte is corruption.
    Sealed,
}

/// What follows the last good record of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Nothing: the file ends at its last good record.
    Clean,
    /// Zero bytes only: the page padding a DMA write leaves after the last record (or a
    /// record whose write never reached the disk).
    ZeroPadding,
    /// A partly written record (maybe followed by zeros): a write torn by a crash.
    Torn,
}

/// How a file scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// Length of the good prefix: where the next record goes.
    pub good_len: u64,
    /// What follows it.
    pub tail: Tail,
}

/// Reads the records of a file from `source` (`len` bytes long) in order, one at a time, so
/// memory stays at one record whatever the file's size. Each good payload (in 16-aligned
/// memory) goes to `visit` with its record's offset; `visit` checks it and an `Err` makes the
/// record bad.
///
/// With [`Ending::Open`], a bad record (short header, length out of range, past the end,
/// checksum mismatch, refused by `visit`) ends the scan as a torn tail when everything after
/// it is zeros, or when it shows a lost sector (a zeroed header, or a zeroed sector-aligned
/// [`SECTOR`] in its payload) and the non-zero bytes from its start on fit in the torn window:
/// the sectors of the last, unsynced write reach the disk in any order, so its first may be
/// lost and later ones kept. A bad record without a lost sector (a flipped bit) and data after
/// it, or with data beyond the window, is corruption. A record whose length field is damaged
/// but which starts within one largest record of the end may be the last one, torn, and also
/// ends the scan. With [`Ending::Sealed`], every bad
/// record and every byte after the last record is corruption.
pub(crate) fn read_records(
    path: &Path,
    source: impl Read,
    len: u64,
    ending: Ending,
    mut visit: impl FnMut(u64, &AlignedVec<16>) -> Result<(), String>,
) -> Result<ScanEnd, StoreError> {
    let mut reader = std::io::BufReader::with_capacity(READ_BUFFER, source);
    let io = |e| io_error(path)(e);
    let mut at = 0u64;
    let mut payload = AlignedVec::<16>::new();
    let context = match ending {
        Ending::Open { .. } => {
            "data follows it, and it is no torn write (no lost sector in it, or more data after it \
             than one write spans); refusing to start"
        }
        Ending::Sealed => {
            "in a sealed segment, which ends exactly at its last record; refusing to start"
        }
    };
    while at < len {
        let corrupt = |problem: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            offset: at,
            problem,
            context,
        };
        if len - at < RECORD_HEADER_LEN as u64 {
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).map_err(io)?;
            let zeros = rest.iter().all(|b| *b == 0);
            if ending == Ending::Sealed {
                return Err(corrupt(format!(
                    "{} bytes after the last record, too few for a record header",
                    len - at
                )));
            }
            let tail = if zeros { Tail::ZeroPadding } else { Tail::Torn };
            return Ok(ScanEnd { good_len: at, tail });
        }
        let mut header = [0u8; RECORD_HEADER_LEN];
        reader.read_exact(&mut header).map_err(io)?;
        let (size, sum) = parse_record_header(&header);
        let end = at + (RECORD_HEADER_LEN + size) as u64;
        if size == 0 || size > MAX_RECORD_BYTES || end > len {
            let problem =
                format!("record length {size} is out of range or runs past the end of the file");
            let Ending::Open { torn_window } = ending else {
                return Err(corrupt(problem));
            };
            // Zero padding reads as a zero length. A length out of range or past the end is a
            // torn header or payload when the record can be the file's last one (it starts
            // within one largest record of the end). A zeroed header with data after it within
            // the torn window is the last write with its first sector lost. Otherwise it is
            // corruption.
            let could_be_last = len - at <= (RECORD_HEADER_LEN + MAX_RECORD_BYTES) as u64;
            let rest = nonzero_extent(&mut reader).map_err(io)?;
            let zeroed = header.iter().all(|b| *b == 0);
            if rest == 0 && zeroed {
                return Ok(ScanEnd {
                    good_len: at,
                    tail: Tail::ZeroPadding,
                });
            }
            let extent = RECORD_HEADER_LEN as u64 + rest;
            let lost_first_sector = zeroed && extent <= torn_window;
            if rest == 0 || lost_first_sector || (size != 0 && could_be_last) {
                return Ok(ScanEnd {
                    good_len: at,
                    tail: Tail::Torn,
                });
            }
            return Err(corrupt(problem));
        }
        // One buffer for every record: memory stays at the largest record.
        payload.clear();
        payload.resize(size, 0);
        reader.read_exact(&mut payload).map_err(io)?;
        let problem = if xxh3(&payload) != sum {
            Some("checksum mismatch".to_string())
        } else {
            visit(at, &payload).err()
        };
        if let Some(problem) = problem {
            if let Ending::Open { torn_window } = ending {
                // A torn write loses whole sectors, which read as zeros: a bad record with a
                // zeroed sector in it and no more data after it than one write spans is the
                // last write torn. A bad record without one (a flipped bit) is corruption.
                let rest = nonzero_extent(&mut reader).map_err(io)?;
                let payload_at = at + RECORD_HEADER_LEN as u64;
                let lost_sector = has_zeroed_sector(payload_at, &payload);
                if rest == 0 || (lost_sector && end - at + rest <= torn_window) {
                    return Ok(ScanEnd {
                        good_len: at,
                        tail: Tail::Torn,
                    });
                }
            }
            return Err(corrupt(problem));
        }
        at = end;
    }
    Ok(ScanEnd {
        good_len: at,
        tail: Tail::Clean,
    })
}

/// The unit a torn write loses: a disk sector (pages are whole multiples of it).
const SECTOR: u64 = 512;

/// Whether `bytes`, which start at file offset `offset`, contain a whole sector-aligned run of
/// [`SECTOR`] zero bytes (what a sector that never reached the disk reads as).
fn has_zeroed_sector(offset: u64, bytes: &[u8]) -> bool {
    let first = offset.next_multiple_of(SECTOR) - offset;
    bytes.get(first as usize..).is_some_and(|aligned| {
        aligned
            .chunks_exact(SECTOR as usize)
            .any(|sector| sector.iter().all(|b| *b == 0))
    })
}

/// Reads `reader` to its end and returns how far its non-zero bytes reach: the offset just
/// past the last non-zero byte (0 if everything left is zeros).
fn nonzero_extent(reader: &mut impl Read) -> std::io::Result<u64> {
    let mut chunk = vec![0u8; 64 * 1024];
    let (mut read, mut extent) = (0u64, 0u64);
    loop {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Ok(extent);
        }
        if let Some(last) = chunk[..n].iter().rposition(|b| *b != 0) {
            extent = read + last as u64 + 1;
        }
        read += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An open file whose writes are tiny: only a bad record with nothing but zeros after it
    /// can be torn.
    const OPEN: Ending = Ending::Open { torn_window: 0 };

    /// Scans in-memory bytes: (records seen, how the scan ended) or the error.
    fn scan(path: &str, bytes: &[u8], ending: Ending) -> Result<(Vec<u64>, ScanEnd), StoreError> {
        let mut offsets = Vec::new();
        let end = read_records(
            Path::new(path),
            std::io::Cursor::new(bytes),
            bytes.len() as u64,
            ending,
            |offset, payload| {
                assert!(!payload.is_empty());
                offsets.push(offset);
                Ok(())
            },
        )?;
        Ok((offsets, end))
    }

    fn three_records() -> Vec<u8> {
        let mut bytes = Vec::new();
        for i in 1..=3u8 {
            append_record(&mut bytes, &vec![i; 100 * i as usize]);
        }
        bytes
    }

    #[test]
    fn a_zeroed_length_with_records_after_it_is_corruption() {
        let mut bytes = encode_record(&[1; 16]);
        let second = bytes.len();
        append_record(&mut bytes, &[2; 16]);
        append_record(&mut bytes, &[3; 16]);
        bytes[second..second + 4].copy_from_slice(&0u32.to_le_bytes());
        let err = scan("z.log", &bytes, OPEN).expect_err("corruption");
        assert!(
            err.to_string().contains(&format!("offset {second}")),
            "{err}"
        );
    }

    #[test]
    fn a_visitor_refusal_in_the_middle_is_corruption() {
        let mut bytes = encode_record(&[1; 16]);
        let second = bytes.len() as u64;
        append_record(&mut bytes, &[2; 16]);
        append_record(&mut bytes, &[3; 16]);
        let err = read_records(
            Path::new("v.log"),
            std::io::Cursor::new(&bytes),
            bytes.len() as u64,
            OPEN,
            |_, payload| {
                if payload[0] == 2 {
                    Err("refused".into())
                } else {
                    Ok(())
                }
            },
        )
        .expect_err("refused record in the middle");
        assert!(err
            .to_string()
            .contains(&format!("offset {second}: refused")));
    }

    #[test]
    fn records_round_trip_and_torn_tails_and_padding_end_the_scan() {
        let bytes = three_records();
        let good = bytes.len() as u64;
        let (records, end) = scan("test.log", &bytes, OPEN).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(
            end,
            ScanEnd {
                good_len: good,
                tail: Tail::Clean
            }
        );
        // Torn: half a record at the end.
        let mut torn = bytes.clone();
        torn.extend_from_slice(&encode_record(&[9; 50])[..30]);
        let (records, end) = scan("test.log", &torn, OPEN).unwrap();
        assert_eq!(
            (records.len(), end.good_len, end.tail),
            (3, good, Tail::Torn)
        );
        // A torn header of a few bytes.
        let mut short = bytes.clone();
        short.extend_from_slice(&[7, 0, 0]);
        let end = scan("test.log", &short, OPEN).unwrap().1;
        assert_eq!((end.good_len, end.tail), (good, Tail::Torn));
        // Zero padding after the last record (what a DMA write leaves) is not a torn write.
        for pad in [3, 4096] {
            let mut padded = bytes.clone();
            padded.extend(std::iter::repeat_n(0, pad));
            let end = scan("test.log", &padded, OPEN).unwrap().1;
            assert_eq!((end.good_len, end.tail), (good, Tail::ZeroPadding));
        }
        // A torn record followed by padding is torn.
        let mut torn_padded = torn.clone();
        torn_padded.extend_from_slice(&[0; 4000]);
        let end = scan("test.log", &torn_padded, OPEN).unwrap().1;
        assert_eq!((end.good_len, end.tail), (good, Tail::Torn));
    }

    #[test]
    fn a_sealed_file_refuses_any_bad_record_or_trailing_byte() {
        let bytes = three_records();
        let good = bytes.len() as u64;
        assert_eq!(
            scan("s.log", &bytes, Ending::Sealed).unwrap().1.good_len,
            good
        );
        for extra in [&[0u8; 3][..], &[0; 4096], &encode_record(&[9; 50])[..30]] {
            let mut longer = bytes.clone();
            longer.extend_from_slice(extra);
            let err = scan("s.log", &longer, Ending::Sealed).expect_err("trailing bytes");
            let text = err.to_string();
            assert!(
                text.contains("s.log") && text.contains(&format!("offset {good}")),
                "{text}"
            );
        }
        // A flipped byte in the last record of a sealed file is corruption, not a torn tail.
        let mut flipped = bytes.clone();
        let last = bytes.len() - 5;
        flipped[last] ^= 1;
        let err = scan("s.log", &flipped, Ending::Sealed).expect_err("flipped byte");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn corruption_in_the_middle_refuses_and_names_the_offset() {
        let first = encode_record(&[1; 64]);
        let mut bytes = first.clone();
        append_record(&mut bytes, &[2; 64]);
        append_record(&mut bytes, &[3; 64]);
        bytes[first.len() + RECORD_HEADER_LEN + 5] ^= 0xff;
        let err = scan("x.log", &bytes, OPEN).expect_err("corruption refused");
        let text = err.to_string();
        assert!(text.contains("x.log") && text.contains(&format!("offset {}", first.len())));
        // The same damage in the last record is a torn tail.
        let mut last = encode_record(&[1; 64]);
        let at = last.len();
        append_record(&mut last, &[2; 64]);
        last[at + RECORD_HEADER_LEN + 1] ^= 1;
        let end = scan("x.log", &last, OPEN).unwrap().1;
        assert_eq!((end.good_len, end.tail), (at as u64, Tail::Torn));
    }

    #[test]
    fn oversized_lengths_never_allocate() {
        let mut bytes = encode_record(&[1; 8]);
        let good = bytes.len() as u64;
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0xaa; 20]);
        let end = scan("y", &bytes, OPEN).unwrap().1;
        assert_eq!((end.good_len, end.tail), (good, Tail::Torn));
    }

    #[test]
    fn a_bad_record_is_torn_when_it_lost_a_sector_and_the_data_after_it_fits_in_one_write() {
        // The last write held records 2 and 3; its first sector never reached the disk, a
        // later one did: zeros where record 2's header was, record 3 intact after.
        let mut bytes = encode_record(&[1; 58]);
        let second = bytes.len();
        append_record(&mut bytes, &[2; 58]);
        append_record(&mut bytes, &[3; 58]);
        bytes[second..second + 70].fill(0);
        let window = Ending::Open { torn_window: 140 };
        let end = scan("t.log", &bytes, window).unwrap().1;
        assert_eq!((end.good_len, end.tail), (second as u64, Tail::Torn));
        // A middle sector of record 2 lost, record 3 after it: torn too.
        let mut middle = encode_record(&[1; 58]);
        append_record(&mut middle, &[2; 1500]);
        append_record(&mut middle, &[3; 58]);
        let sector = (second as u64 + RECORD_HEADER_LEN as u64).next_multiple_of(SECTOR) as usize;
        middle[sector..sector + SECTOR as usize].fill(0);
        let wide = Ending::Open { torn_window: 4096 };
        let end = scan("t.log", &middle, wide).unwrap().1;
        assert_eq!((end.good_len, end.tail), (second as u64, Tail::Torn));
        // A flipped bit in record 2 with record 3 after it: no sector lost, corruption.
        let mut flipped = encode_record(&[1; 58]);
        append_record(&mut flipped, &[2; 58]);
        append_record(&mut flipped, &[3; 58]);
        flipped[second + RECORD_HEADER_LEN + 3] ^= 1;
        let err = scan("t.log", &flipped, wide).expect_err("a flipped bit");
        assert!(
            err.to_string().contains(&format!("offset {second}")),
            "{err}"
        );
        // The lost sectors with more non-zero data after them than one write spans:
        // corruption.
        let narrow = Ending::Open { torn_window: 139 };
        let err = scan("t.log", &bytes, narrow).expect_err("beyond one write");
        assert!(
            err.to_string().contains(&format!("offset {second}")),
            "{err}"
        );
        let err = scan("t.log", &middle, Ending::Open { torn_window: 200 })
            .expect_err("beyond one write");
        assert!(
            err.to_string().contains(&format!("offset {second}")),
            "{err}"
        );
    }
}
