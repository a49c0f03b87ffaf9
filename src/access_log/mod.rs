//! The access log: one line per HTTP request and per WebSocket session.
//!
//! Workers never wait on the log. A record is rendered where it ends and
//! handed to a bounded queue; one writer thread drains it in batches, one
//! write per batch. When the queue is full (the disk or the reader of
//! stdout is slower than the traffic) lines are dropped and counted, never
//! waited for. `reopen` (SIGUSR1) closes and reopens a log file, after
//! logrotate moved it away; a reload may point the log somewhere else.

mod format;
mod record;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use prometheus::IntCounter;

pub use format::{Format, UnknownField};
pub use record::{
    bounded, header_text, rfc3339_millis, Kind, Record, SessionFacts, TlsFacts, UpstreamFacts,
    MAX_METHOD, MAX_PATH,
};

/// Lines waiting for the writer at most; more are dropped and counted.
const QUEUE_LINES: usize = 16 * 1024;

/// Bytes of lines waiting for the writer at most: hostile requests make
/// long lines, and the queue must stay small whatever they send.
const QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// Room the queue keeps beyond its lines for reopen, retarget and flush,
/// so a full queue never loses them.
const CONTROL_ROOM: usize = 64;

/// How often the writer may warn that it cannot write.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How long the writer lets lines gather after the first one arrives: it
/// then writes them in one go, and requests never wake it one by one.
const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// Opens `path` for appending, creating it (mode 0640 where it is new).
pub fn open_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    options.open(path)
}

enum Message {
    Line(Vec<u8>),
    Reopen,
    Retarget(Target),
    /// Write everything queued before this, then say so.
    Flush(SyncSender<()>),
}

/// The handle every request and session logs through; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    shared: Arc<Shared>,
}

struct Shared {
    queue: SyncSender<Message>,
    /// Bytes of lines queued and not yet taken by the writer.
    queued_bytes: Arc<AtomicUsize>,
    /// Lines queued and not yet taken by the writer.
    queued_lines: Arc<AtomicUsize>,
    /// `None` while the log is off: nothing is rendered.
    format: ArcSwapOption<Format>,
    dropped: AtomicU64,
    dropped_metric: Option<IntCounter>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("on", &self.is_on())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl AccessLog {
    /// Starts the writer thread; `output` is `None` for a log that is off.
    /// `dropped` counts lines the full queue refused.
    pub fn start(
        output: Option<(Target, Format)>,
        dropped: Option<IntCounter>,
    ) -> io::Result<AccessLog> {
        let (queue, lines) = mpsc::sync_channel(QUEUE_LINES + CONTROL_ROOM);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let queued_lines = Arc::new(AtomicUsize::new(0));
        let taken = (Arc::clone(&queued_bytes), Arc::clone(&queued_lines));
        let (target, format) = match output {
            Some((target, format)) => (Some(target), Some(Arc::new(format))),
            None => (None, None),
        };
        let sink = match &target {
            Some(target) => Sink::open(target)?,
            None => Sink::Off,
        };
        std::thread::Builder::new()
            .name("wsgate-access-log".into())
            .spawn(move || write_lines(lines, sink, taken))?;
        Ok(AccessLog {
            shared: Arc::new(Shared {
                queue,
                queued_bytes,
                queued_lines,
                format: ArcSwapOption::new(format),
                dropped: AtomicU64::new(0),
                dropped_metric: dropped,
            }),
        })
    }

    /// Whether records are written; callers skip building them when not.
    pub fn is_on(&self) -> bool {
        self.shared.format.load().is_some()
    }

    /// Renders `record` and queues it, or drops and counts it.
    pub fn write(&self, record: &Record) {
        let Some(format) = self.shared.format.load_full() else {
            return;
        };
        let line = format.render(record);
        let len = line.len();
        let shared = &self.shared;
        let bytes = shared.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let lines = shared.queued_lines.fetch_add(1, Ordering::Relaxed);
        // Lines stop short of the channel's capacity, so control messages fit.
        let accepted = bytes + len <= QUEUE_BYTES
            && lines < QUEUE_LINES
            && self.send(Message::Line(line)).is_ok();
        if !accepted {
            shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            shared.queued_lines.fetch_sub(1, Ordering::Relaxed);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(metric) = &shared.dropped_metric {
                metric.inc();
            }
        }
    }

    /// Lines dropped since start because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Closes and reopens the log file (after logrotate renamed it).
    pub fn reopen(&self) {
        self.control(Message::Reopen);
    }

    /// Writes what is queued, waiting at most `within` (at shutdown, so
    /// the last lines are not lost with the process).
    pub fn flush(&self, within: Duration) {
        let (done, wait) = mpsc::sync_channel(1);
        self.control(Message::Flush(done));
        let _ = wait.recv_timeout(within);
    }

    /// Points the log at `output` from now on (a reload changed `[log]`).
    pub fn retarget(&self, output: Option<(Target, Format)>) {
        match output {
            Some((target, format)) => {
                self.control(Message::Retarget(target));
                self.shared.format.store(Some(Arc::new(format)));
            }
            None => self.shared.format.store(None),
        }
    }

    fn send(&self, message: Message) -> Result<(), TrySendError<Message>> {
        self.shared.queue.try_send(message)
    }

    /// Queues a control message in the room lines leave free; only a
    /// flood of control messages (64 signals before the writer's next
    /// batch) could lose one, and then an equal one is already queued.
    fn control(&self, message: Message) {
        if let Err(TrySendError::Full(_)) = self.send(message) {
            tracing::warn!(
                "access log: too many reopen or reload requests at once; one was dropped"
            );
        }
    }
}

/// A request's record waiting for its response body to end (or be
/// abandoned): it counts the body's bytes and is written when dropped.
#[derive(Debug)]
pub struct Pending {
    record: Box<Record>,
    log: AccessLog,
    started: Instant,
}

impl Pending {
    /// `record`, timed from `started` (when the request head arrived).
    pub fn new(record: Box<Record>, log: AccessLog, started: Instant) -> Pending {
        Pending {
            record,
            log,
            started,
        }
    }

    /// `bytes` more of the response body went out.
    pub fn sent(&mut self, bytes: usize) {
        self.record.bytes_sent += bytes as u64;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.record.duration = self.started.elapsed();
        self.log.write(&self.record);
    }
}

/// Where the writer thread writes.
enum Sink {
    Off,
    Stdout(BufWriter<io::Stdout>),
    Stderr(BufWriter<io::Stderr>),
    File(BufWriter<File>, PathBuf),
}

impl Sink {
    fn open(target: &Target) -> io::Result<Sink> {
        Ok(match target {
            Target::Stdout => Sink::Stdout(BufWriter::new(io::stdout())),
            Target::Stderr => Sink::Stderr(BufWriter::new(io::stderr())),
            Target::File(path) => Sink::File(BufWriter::new(open_file(path)?), path.clone()),
        })
    }

    fn writer(&mut self) -> Option<&mut dyn Write> {
        match self {
            Sink::Off => None,
            Sink::Stdout(out) => Some(out),
            Sink::Stderr(out) => Some(out),
            Sink::File(out, _) => Some(out),
        }
    }
}

/// The writer thread: waits for a first line, lets more gather for
/// [`BATCH_WINDOW`] (senders do not wake a thread that is not waiting), then
/// writes them all and flushes once; until every handle is gone.
fn write_lines(
    lines: Receiver<Message>,
    mut sink: Sink,
    (queued_bytes, queued_lines): (Arc<AtomicUsize>, Arc<AtomicUsize>),
) {
    let mut last_warning: Option<Instant> = None;
    let mut warn = |what: &str, error: &io::Error| {
        if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            last_warning = Some(Instant::now());
            tracing::warn!(%error, "access log: {what}");
        }
    };
    while let Ok(first) = lines.recv() {
        if !matches!(first, Message::Flush(_)) {
            std::thread::sleep(BATCH_WINDOW);
        }
        let mut next = Some(first);
        let mut flushed = Vec::new();
        while let Some(message) = next {
            match message {
                Message::Flush(done) => flushed.push(done),
                Message::Line(line) => {
                    queued_bytes.fetch_sub(line.len(), Ordering::Relaxed);
                    queued_lines.fetch_sub(1, Ordering::Relaxed);
                    if let Some(out) = sink.writer() {
                        if let Err(error) = out.write_all(&line) {
                            warn("cannot write", &error);
                        }
                    }
                }
                Message::Reopen => {
                    if let Sink::File(out, path) = &mut sink {
                        let _ = out.flush();
                        match open_file(path) {
                            Ok(file) => *out = BufWriter::new(file),
                            Err(error) => warn("cannot reopen the file", &error),
                        }
                    }
                }
                Message::Retarget(target) => {
                    if let Some(out) = sink.writer() {
                        let _ = out.flush();
                    }
                    match Sink::open(&target) {
                        Ok(opened) => sink = opened,
                        Err(error) => warn("cannot open the new target", &error),
                    }
                }
            }
            next = lines.try_recv().ok();
        }
        if let Some(out) = sink.writer() {
            if let Err(error) = out.flush() {
                warn("cannot write", &error);
            }
        }
        for done in flushed {
            let _ = done.try_send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_and_a_reopen_follows_a_rename() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("access.log");
        let log = AccessLog::start(
            Some((
                Target::File(path.clone()),
                Format::parse("$status").expect("format"),
            )),
            None,
        )
        .expect("start");
        let mut record = test_record();
        log.write(&record);
        wait_for(&path, "200\n");
        std::fs::rename(&path, dir.path().join("access.log.1")).expect("rotate");
        log.reopen();
        record.status = 404;
        log.write(&record);
        wait_for(&path, "404\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("access.log.1")).expect("rotated"),
            "200\n"
        );
    }

    fn wait_for(path: &Path, contents: &str) {
        for _ in 0..500 {
            if std::fs::read_to_string(path).is_ok_and(|text| text == contents) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{} never held {contents:?}", path.display());
    }

    fn test_record() -> Record {
        Record::example()
    }
}
