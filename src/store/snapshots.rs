//! The folder of state snapshots (`<data_dir>/state`): file names, listing, and the
//! durable write the store shard does for the exec shard ([`SnapshotWrite`]).
//!
//! The exec shard encodes its state (the format is `exec::snapshot`'s) and sends the bytes
//! here; the store shard writes them without blocking its executor (glommio buffered file,
//! io_uring): to `state-<height>.snap.tmp`, fdatasynced, renamed into place, the folder
//! fsynced, then all but the newest [`SNAPSHOTS_KEPT`] removed. A crash at any point leaves
//! either the whole new snapshot or none (a `.tmp` is never read). A snapshot is only ever of
//! a height already durable in the block log (the exec shard learns of a block only after its
//! fsync), so the log always covers it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::types::Height;

/// The snapshot folder, under the data directory.
pub const SNAPSHOT_DIR: &str = "state";
/// Snapshots kept (the newest; older ones are removed after each write).
pub const SNAPSHOTS_KEPT: usize = 2;
/// Bytes handed to one write.
const WRITE_CHUNK: usize = 1 << 20;

/// A snapshot for the store shard to write (from the exec shard).
#[derive(Debug)]
pub struct SnapshotWrite {
    /// The height of the state.
    pub height: Height,
    /// Accounts in it (for the log line).
    pub accounts: usize,
    /// The encoded state.
    pub bytes: Vec<u8>,
}

/// The file name of the snapshot at `height` (zero-padded, so names sort by height).
pub fn snapshot_name(height: Height) -> String {
    format!("state-{height:020}.snap")
}

/// The snapshot files in `dir`, newest first, by the height in their names (files not named
/// like a snapshot are ignored; a missing folder holds none).
pub fn list(dir: &Path) -> Result<Vec<(Height, PathBuf)>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let name = entry.file_name();
        let Some(digits) = name
            .to_str()
            .and_then(|n| n.strip_prefix("state-"))
            .and_then(|n| n.strip_suffix(".snap"))
        else {
            continue;
        };
        if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(height) = digits.parse::<u64>() {
                out.push((height, entry.path()));
            }
        }
    }
    out.sort_unstable_by_key(|b| std::cmp::Reverse(b.0));
    Ok(out)
}

/// Writes `snapshot` durably into `dir` and removes all but the newest [`SNAPSHOTS_KEPT`];
/// returns the file written. Runs in a glommio executor (the store shard's).
pub async fn write(dir: &Path, snapshot: SnapshotWrite) -> Result<PathBuf, String> {
    use glommio::io::{BufferedFile, Directory};
    let start = Instant::now();
    let io =
        |what: &str, p: &Path, e: glommio::GlommioError<()>| format!("{what} {}: {e}", p.display());
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join(snapshot_name(snapshot.height));
    let tmp = path.with_extension("snap.tmp");
    let len = snapshot.bytes.len();
    {
        let mut file = BufferedFile::create(&tmp)
            .await
            .map_err(|e| io("creating", &tmp, e))?;
        // In chunks of WRITE_CHUNK (each write takes its buffer); a write may take part of
        // its chunk, and the rest goes in the next.
        let bytes = snapshot.bytes;
        let mut at = 0usize;
        while at < bytes.len() {
            let end = (at + WRITE_CHUNK).min(bytes.len());
            let wrote = file
                .write_at(bytes[at..end].to_vec(), at as u64)
                .await
                .map_err(|e| io("writing", &tmp, e))?;
            if wrote == 0 {
                return Err(format!("writing {}: no progress", tmp.display()));
            }
            at += wrote.min(end - at);
        }
        file.fdatasync().await.map_err(|e| io("syncing", &tmp, e))?;
        file.rename(&path)
            .await
            .map_err(|e| io("renaming", &tmp, e))?;
        file.close().await.map_err(|e| io("closing", &path, e))?;
    }
    let folder = Directory::open(dir)
        .await
        .map_err(|e| io("opening", dir, e))?;
    folder.sync().await.map_err(|e| io("syncing", dir, e))?;
    folder.close().await.map_err(|e| io("closing", dir, e))?;
    for (_, old) in list(dir)?.into_iter().skip(SNAPSHOTS_KEPT) {
        if let Err(e) = glommio::io::remove(&old).await {
            tracing::warn!(file = %old.display(), error = %e, "could not remove an old snapshot");
        }
    }
    tracing::info!(
        height = snapshot.height,
        accounts = snapshot.accounts,
        bytes = len,
        ms = start.elapsed().as_millis() as u64,
        file = %path.display(),
        "state snapshot written"
    );
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_written_whole_under_their_height_and_only_the_newest_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join(SNAPSHOT_DIR);
        let written = glommio::LocalExecutorBuilder::default()
            .spawn({
                let folder = folder.clone();
                move || async move {
                    let mut written = Vec::new();
                    for height in [10u64, 30, 20] {
                        // Larger than one write chunk, and not a multiple of it.
                        let bytes: Vec<u8> = (0..3_000_000u32)
                            .map(|i| (i ^ height as u32) as u8)
                            .collect();
                        let snapshot = SnapshotWrite {
                            height,
                            accounts: 1,
                            bytes,
                        };
                        written.push(write(&folder, snapshot).await.expect("writes"));
                    }
                    written
                }
            })
            .expect("executor")
            .join()
            .expect("joins");
        assert_eq!(written[0], folder.join("state-00000000000000000010.snap"));
        // 10 was the oldest once 30 and 20 were written: removed.
        let kept: Vec<u64> = list(&folder)
            .expect("lists")
            .iter()
            .map(|(h, _)| *h)
            .collect();
        assert_eq!(kept, [30, 20]);
        let bytes = std::fs::read(folder.join(snapshot_name(30))).expect("reads");
        assert_eq!(bytes.len(), 3_000_000);
        assert!(bytes
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i as u32 ^ 30) as u8));
        let names: Vec<String> = std::fs::read_dir(&folder)
            .expect("folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn only_files_named_like_snapshots_are_listed_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            snapshot_name(5),
            snapshot_name(500),
            "state-5.snap".to_string(),
            format!("{}.tmp", snapshot_name(900)),
            "notes.txt".to_string(),
        ] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        let heights: Vec<u64> = list(dir.path())
            .expect("lists")
            .iter()
            .map(|(h, _)| *h)
            .collect();
        assert_eq!(heights, [500, 5]);
        assert!(list(&dir.path().join("missing"))
            .expect("a missing folder")
            .is_empty());
    }
}
