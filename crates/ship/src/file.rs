//! A JSON Lines file, one record per line, rotated by size.
//!
//! Appends only: a line once written is never rewritten (a torn last line
//! left by a crash is cut, as `tg_audit::JsonlSink` does: its record is still
//! in the store and is written again). Each batch is synced before `send`
//! returns. When the next line would take the live file past `rotate_bytes`,
//! it is synced and renamed to `<path>.<n>` (`n` counting up, so the highest
//! is the newest and a rotated file never changes name again), and only the
//! `keep` newest rotated files are kept.
//!
//! Resumable: on open the sink reads the `seq` of the last line (of the live
//! file, or of the newest rotated file when the live one is empty) and skips
//! every record at or below it, so a replayed batch is written once.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tg_config::FileSinkConfig;

use crate::{BatchLimits, SendFuture, ShipError, ShipRecord, Sink, check_batch};

/// Longest line read back when resuming (as `tg_audit::LINE_BYTES_MAX`).
pub const LINE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Bytes read per step when scanning backwards for the last line.
const TAIL_CHUNK_BYTES: u64 = 64 * 1024;

pub struct FileSink {
    name: String,
    path: PathBuf,
    rotate_bytes: u64,
    keep: u32,
    limits: BatchLimits,
    /// Opened at the first send; dropped after an I/O error so the next send
    /// reopens (and cuts whatever a failed write left).
    state: Arc<Mutex<Option<Live>>>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

struct Live {
    file: File,
    size: u64,
    last_seq: Option<u64>,
    /// The number the next rotated file gets.
    next_index: u64,
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// Position just after the last `\n` before `end`, searching at most `limit` bytes back.
fn after_last_newline(file: &mut File, end: u64, limit: u64) -> io::Result<Option<u64>> {
    let floor = end.saturating_sub(limit);
    let mut hi = end;
    let mut buf = Vec::new();
    while hi > floor {
        let lo = hi.saturating_sub(TAIL_CHUNK_BYTES).max(floor);
        let n = usize::try_from(hi - lo).unwrap_or(0);
        buf.resize(n, 0);
        file.seek(SeekFrom::Start(lo))?;
        file.read_exact(&mut buf)?;
        if let Some(i) = buf.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(lo + u64::try_from(i).unwrap_or(0) + 1));
        }
        hi = lo;
    }
    Ok(None)
}

/// Cuts a torn (unterminated) tail, then returns the file's length and the
/// `seq` of its last line.
fn last_seq(file: &mut File, path: &Path) -> io::Result<(u64, Option<u64>)> {
    let len = file.metadata()?.len();
    let complete_end = match after_last_newline(file, len, LINE_BYTES_MAX + 1)? {
        Some(e) => e,
        None if len <= LINE_BYTES_MAX => 0,
        None => {
            return Err(io::Error::other(format!(
                "{}: last line is over {LINE_BYTES_MAX} bytes",
                path.display()
            )));
        }
    };
    if complete_end < len {
        // INVARIANT: only bytes after the last newline are cut (a write the
        // crash interrupted; the store still holds its record).
        file.set_len(complete_end)?;
        file.sync_data()?;
    }
    if complete_end == 0 {
        return Ok((0, None));
    }
    let line_end = complete_end - 1;
    let start = after_last_newline(file, line_end, LINE_BYTES_MAX + 1)?.unwrap_or(0);
    let mut line = vec![0u8; usize::try_from(line_end - start).unwrap_or(0)];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut line)?;
    let seq = serde_json::from_slice::<SeqOnly>(&line)
        .map_err(|e| {
            io::Error::other(format!(
                "{}: the last line has no readable seq: {e}",
                path.display()
            ))
        })?
        .seq;
    Ok((complete_end, Some(seq)))
}

impl FileSink {
    pub fn new(config: &FileSinkConfig) -> Self {
        FileSink {
            name: config.name.clone(),
            path: config.path.clone(),
            rotate_bytes: config.rotate_bytes,
            keep: config.keep,
            limits: BatchLimits {
                records_max: config.batch_records_max,
                bytes_max: config.batch_bytes_max,
            },
            state: Arc::new(Mutex::new(None)),
        }
    }

    /// The `seq` of the last record written (opening the file if needed).
    pub async fn last_seq(&self) -> Result<Option<u64>, ShipError> {
        let state = self.state.clone();
        let me = self.settings();
        tokio::task::spawn_blocking(move || {
            let mut guard = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let live = me.ensure(&mut guard)?;
            Ok(live.last_seq)
        })
        .await
        .map_err(|e| ShipError::retry(format!("file sink task: {e}")))?
        .map_err(|e: io::Error| ShipError::retry(format!("file sink: {e}")))
    }

    fn settings(&self) -> Settings {
        Settings {
            path: self.path.clone(),
            rotate_bytes: self.rotate_bytes,
            keep: self.keep,
        }
    }

    async fn deliver(&self, batch: &[ShipRecord]) -> Result<(), ShipError> {
        check_batch(&self.limits, batch)?;
        if let Some(r) = batch
            .iter()
            .find(|r| r.json.contains('\n') || r.json.contains('\r') || r.json.is_empty())
        {
            return Err(ShipError::refused(
                "record is empty or spans lines (JSON Lines needs one line per record)",
                Some(r.seq),
            ));
        }
        let lines: Vec<(u64, String)> = batch.iter().map(|r| (r.seq, r.json.clone())).collect();
        let state = self.state.clone();
        let me = self.settings();
        tokio::task::spawn_blocking(move || {
            let mut guard = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let out = me.write(&mut guard, &lines);
            if out.is_err() {
                // Reopen next time: the reopen cuts a half-written line.
                *guard = None;
            }
            out
        })
        .await
        .map_err(|e| ShipError::retry(format!("file sink task: {e}")))?
        .map_err(|e| ShipError::retry(format!("file sink: {e}")))
    }
}

/// What the blocking half needs (owned, `'static`).
struct Settings {
    path: PathBuf,
    rotate_bytes: u64,
    keep: u32,
}

impl Settings {
    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Rotated files' numbers, ascending.
    fn rotated(&self) -> io::Result<Vec<u64>> {
        let prefix = format!("{}.", self.file_name());
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir())? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(n) = name
                .strip_prefix(&prefix)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn rotated_path(&self, n: u64) -> PathBuf {
        self.dir().join(format!("{}.{n}", self.file_name()))
    }

    fn open_live(&self) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
    }

    fn ensure<'g>(&self, guard: &'g mut Option<Live>) -> io::Result<&'g mut Live> {
        if guard.is_none() {
            std::fs::create_dir_all(self.dir())?;
            let mut file = self.open_live()?;
            self.sync_dir()?;
            let (size, mut last) = last_seq(&mut file, &self.path)?;
            let rotated = self.rotated()?;
            if last.is_none()
                && let Some(newest) = rotated.last()
            {
                let p = self.rotated_path(*newest);
                let mut f = OpenOptions::new().read(true).write(true).open(&p)?;
                last = last_seq(&mut f, &p)?.1;
            }
            *guard = Some(Live {
                file,
                size,
                last_seq: last,
                next_index: rotated.last().map_or(1, |n| n.saturating_add(1)),
            });
        }
        guard
            .as_mut()
            .ok_or_else(|| io::Error::other("file sink state missing"))
    }

    fn sync_dir(&self) -> io::Result<()> {
        // Makes renames and creations durable (a no-op where directories cannot be opened).
        match File::open(self.dir()) {
            Ok(d) => d.sync_all().or(Ok(())),
            Err(_) => Ok(()),
        }
    }

    fn rotate(&self, live: &mut Live) -> io::Result<()> {
        live.file.sync_data()?;
        let to = self.rotated_path(live.next_index);
        std::fs::rename(&self.path, &to)?;
        live.next_index = live.next_index.saturating_add(1);
        live.file = self.open_live()?;
        live.size = 0;
        let rotated = self.rotated()?;
        let excess = rotated
            .len()
            .saturating_sub(usize::try_from(self.keep).unwrap_or(usize::MAX));
        for n in rotated.iter().take(excess) {
            std::fs::remove_file(self.rotated_path(*n))?;
        }
        self.sync_dir()
    }

    fn write(&self, guard: &mut Option<Live>, lines: &[(u64, String)]) -> io::Result<()> {
        let live = self.ensure(guard)?;
        let mut wrote = false;
        for (seq, json) in lines {
            // Idempotent replay: what the file already holds is skipped.
            if live.last_seq.is_some_and(|last| *seq <= last) {
                continue;
            }
            let len = u64::try_from(json.len())
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            if live.size > 0 && live.size.saturating_add(len) > self.rotate_bytes {
                self.rotate(live)?;
            }
            let mut line = Vec::with_capacity(json.len() + 1);
            line.extend_from_slice(json.as_bytes());
            line.push(b'\n');
            live.file.write_all(&line)?;
            live.size = live.size.saturating_add(len);
            live.last_seq = Some(*seq);
            wrote = true;
        }
        if wrote {
            live.file.sync_data()?;
        }
        Ok(())
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn limits(&self) -> BatchLimits {
        self.limits
    }

    fn send<'a>(&'a self, batch: &'a [ShipRecord]) -> SendFuture<'a> {
        Box::pin(self.deliver(batch))
    }
}
