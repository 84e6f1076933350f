//! File I/O: the append-only JSON Lines sink and reading a file for verification.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tg_model::Chained;

use ed25519_dalek::VerifyingKey;

use crate::verify::{VerifyReport, verify_chain};

/// Bytes of one audit line, newline excluded. A longer line is reported as bad
/// rather than read into memory without bound.
pub const LINE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Bytes read per step when scanning backwards for the last line.
const TAIL_CHUNK_BYTES: u64 = 64 * 1024;

/// Reads a JSON Lines audit file and verifies its chain.
///
/// A last line with no newline (a write torn by a crash) is reported as `torn`;
/// [`JsonlSink::open`] repairs that by cutting it.
pub fn verify_file(path: impl AsRef<Path>) -> io::Result<VerifyReport> {
    verify_file_with(path, None)
}

/// Verifies stored lines (as the store keeps them, in chain order); `key` checks checkpoint signatures.
pub fn verify_lines(lines: &[String], key: Option<&VerifyingKey>) -> VerifyReport {
    verify_chain(
        lines.iter().enumerate().map(|(i, l)| {
            (
                i.saturating_add(1),
                serde_json::from_str(l).map_err(|e| format!("bad json: {e}")),
            )
        }),
        key,
    )
}

/// [`verify_file`], and with `key` every checkpoint's signature must verify with it.
pub fn verify_file_with(
    path: impl AsRef<Path>,
    key: Option<&VerifyingKey>,
) -> io::Result<VerifyReport> {
    let file = File::open(path.as_ref())?;
    let mut reader = BufReader::new(file);
    let mut line_no = 0usize;
    let mut stopped = false;
    let mut read_error: Option<io::Error> = None;
    // Streamed: memory stays at one line whatever the file's size.
    let lines = std::iter::from_fn(|| {
        if stopped {
            return None;
        }
        let mut buf = Vec::new();
        let limit = u64::try_from(LINE_BYTES_MAX)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        match reader.by_ref().take(limit).read_until(b'\n', &mut buf) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => {
                read_error = Some(e);
                return None;
            }
        }
        line_no = line_no.saturating_add(1);
        let terminated = buf.last() == Some(&b'\n');
        if terminated {
            buf.pop();
        }
        let item = if buf.len() > LINE_BYTES_MAX {
            Err(format!("bad json: line exceeds {LINE_BYTES_MAX} bytes"))
        } else if !terminated {
            Err("torn: last line has no newline (a write cut short)".to_owned())
        } else {
            serde_json::from_slice(&buf).map_err(|e| format!("bad json: {e}"))
        };
        // Nothing after the first unreadable line can be checked against it.
        stopped = item.is_err();
        Some((line_no, item))
    });
    let report = verify_chain(lines, key);
    match read_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Append-only JSON Lines sink: one chain record (a run's or a step's) per line, synced after each batch.
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    file: File,
    /// Seq of the last record in the file, kept so appends can refuse gaps and repeats.
    last_seq: Option<u64>,
}

impl JsonlSink {
    /// Opens (creating directories and file as needed) for appending, cutting a
    /// torn last line left by a crash.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut sink = JsonlSink {
            path,
            file,
            last_seq: None,
        };
        sink.last_seq = sink.last_seq()?;
        Ok(sink)
    }

    /// The file this sink appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `seq` of the last complete line, or `None` for an empty file. A torn
    /// last line (no newline) is cut off first, and the cut synced.
    pub fn last_seq(&self) -> io::Result<Option<u64>> {
        let mut file = &self.file;
        let len = file.metadata()?.len();
        let complete_end = last_newline_end(&mut file, len)?;
        if complete_end < len {
            // INVARIANT: only bytes after the last newline are ever cut; they
            // are a record the crash interrupted, which the store still holds.
            file.set_len(complete_end)?;
            file.sync_data()?;
        }
        if complete_end == 0 {
            return Ok(None);
        }
        // The last line spans [start, complete_end - 1).
        let body_end = complete_end.saturating_sub(1);
        let start = last_newline_end(&mut file, body_end)?;
        let line_len = usize::try_from(body_end.saturating_sub(start)).unwrap_or(usize::MAX);
        if line_len > LINE_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "last audit line of {} is {line_len} bytes, over {LINE_BYTES_MAX}",
                    self.path.display()
                ),
            ));
        }
        let mut buf = vec![0u8; line_len];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        let value: serde_json::Value = serde_json::from_slice(&buf).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "last audit line of {} is not json: {e}",
                    self.path.display()
                ),
            )
        })?;
        match value.get("seq").and_then(serde_json::Value::as_u64) {
            Some(seq) => Ok(Some(seq)),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("last audit line of {} has no seq", self.path.display()),
            )),
        }
    }

    /// Appends records, one line each, then syncs the data to disk.
    ///
    /// Refuses (with `InvalidInput`, writing nothing) a batch whose seqs do not
    /// continue the file by exactly one each, so the file never gets a gap or a
    /// duplicate.
    pub fn append<R: Chained>(&mut self, records: &[R]) -> io::Result<()> {
        let mut expected = self.last_seq.map_or(1, |s| s.saturating_add(1));
        let mut out = Vec::new();
        for record in records {
            if record.chain_seq() != expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "audit record seq {} does not continue {} (expected {expected})",
                        record.chain_seq(),
                        self.path.display()
                    ),
                ));
            }
            serde_json::to_writer(&mut out, record).map_err(io::Error::other)?;
            out.push(b'\n');
            expected = expected.saturating_add(1);
        }
        if out.is_empty() {
            return Ok(());
        }
        // One write for the whole batch: a crash leaves at most one torn line.
        // A write that fails (a full disk writes part of it) is cut off
        // again, so the retry does not leave a torn line mid-file.
        let before = self.file.metadata()?.len();
        if let Err(e) = self
            .file
            .write_all(&out)
            .and_then(|()| self.file.sync_data())
        {
            if let Err(cut) = self.file.set_len(before) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{e}; the partial write could not be cut: {cut}"),
                ));
            }
            return Err(e);
        }
        self.last_seq = records.last().map(Chained::chain_seq).or(self.last_seq);
        Ok(())
    }
}

/// The offset just past the last `\n` before `end` (0 if there is none).
fn last_newline_end(file: &mut &File, end: u64) -> io::Result<u64> {
    let mut pos = end;
    let mut buf = vec![0u8; usize::try_from(TAIL_CHUNK_BYTES).unwrap_or(64 * 1024)];
    while pos > 0 {
        let step = pos.min(TAIL_CHUNK_BYTES);
        let start = pos.saturating_sub(step);
        let chunk = buf
            .get_mut(..usize::try_from(step).unwrap_or(0))
            .ok_or_else(|| io::Error::other("tail chunk out of range"))?;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start
                .saturating_add(u64::try_from(i).unwrap_or(0))
                .saturating_add(1));
        }
        pos = start;
    }
    Ok(0)
}
