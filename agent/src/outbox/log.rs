//! The outbox's file: an append-only log of JSON lines, fsynced before an event is
//! published. Chosen over an embedded database because it needs no dependency, is readable
//! with `cat`, and its only write pattern (append, then trim everything acknowledged) is
//! exactly what a log does well. Recovery reads it line by line; a torn last line (a crash
//! mid-write) is cut off, a damaged line elsewhere is skipped and counted.
//!
//! Lines: `{"gemfleet_outbox":1,"next_seq":N}` (header, persists the counter), an encoded
//! envelope (an event), or `{"ack":N}` (a watermark seen, so a restart replays less).

use super::state::{OutboxState, Pending};
use gemfleet_protocol::{Envelope, EventKind, Payload};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("outbox file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "outbox file {path} is in use by another gemfleet-agent (one daemon per data dir; stop it or use another --data-dir)"
    )]
    Locked { path: PathBuf },
}

#[derive(Serialize, Deserialize)]
struct Header {
    gemfleet_outbox: u32,
    next_seq: u64,
}

#[derive(Serialize, Deserialize)]
struct AckLine {
    ack: u64,
}

/// One parsed line of the log.
#[derive(Debug)]
pub enum Record {
    Header { next_seq: u64 },
    Ack(u64),
    Event { seq: u64, pending: Pending },
}

/// Parses one line. `None` when it is not a valid record.
pub fn parse_line(line: &[u8]) -> Option<Record> {
    if let Ok(h) = serde_json::from_slice::<Header>(line) {
        return Some(Record::Header {
            next_seq: h.next_seq,
        });
    }
    if let Ok(a) = serde_json::from_slice::<AckLine>(line) {
        return Some(Record::Ack(a.ack));
    }
    let env = Envelope::decode(line).ok()?;
    let seq = env.seq?;
    let kind = event_kind(&env.payload)?;
    Some(Record::Event {
        seq,
        pending: Pending {
            kind,
            ts: env.ts,
            bytes: line.to_vec(),
        },
    })
}

/// The outbox topic kind of a payload, `None` for payloads that are not outbox events.
pub fn event_kind(p: &Payload) -> Option<EventKind> {
    Some(match p {
        Payload::Claim(_) => EventKind::Claim,
        Payload::Release(_) => EventKind::Release,
        Payload::Usage(_) => EventKind::Usage,
        Payload::Throttle(_) => EventKind::Throttle,
        Payload::Task(_) => EventKind::Task,
        _ => return None,
    })
}

/// The open log file.
pub struct Log {
    path: PathBuf,
    file: File,
    len: u64,
}

/// What recovery found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Recovery {
    pub events: usize,
    pub damaged_lines: usize,
    pub torn_tail_bytes: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Log {
    /// Opens (or creates) the log at `path`, locks it for this process, and rebuilds the
    /// state. A new log's counter starts at the current unix time in microseconds, so a
    /// re-created outbox never reuses sequence numbers the recorder has seen.
    pub fn open(path: &Path, max_bytes: u64) -> Result<(Log, OutboxState, Recovery), LogError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(path))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io(path))?;
        if file.try_lock().is_err() {
            return Err(LogError::Locked {
                path: path.to_path_buf(),
            });
        }
        let mut state = OutboxState::new(now_micros(), max_bytes);
        let mut rec = Recovery::default();
        let mut good_len = 0u64;
        let mut saw_header = false;
        {
            file.seek(SeekFrom::Start(0)).map_err(io(path))?;
            let mut reader = BufReader::new(&file);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line).map_err(io(path))?;
                if n == 0 {
                    break;
                }
                let complete = line.ends_with(b"\n");
                let body = line.strip_suffix(b"\n").unwrap_or(&line);
                match parse_line(body) {
                    Some(r) if complete => {
                        good_len += n as u64;
                        match r {
                            Record::Header { next_seq } => {
                                if !saw_header {
                                    // The first header replaces the fresh counter.
                                    state = OutboxState::new(next_seq, max_bytes);
                                    saw_header = true;
                                } else {
                                    state.raise_next(next_seq);
                                }
                            }
                            Record::Ack(w) => {
                                state.ack(w);
                            }
                            Record::Event { seq, pending } => {
                                rec.events += 1;
                                state.insert(seq, pending);
                            }
                        }
                    }
                    _ if !complete => {
                        rec.torn_tail_bytes = n as u64;
                        break;
                    }
                    _ => {
                        good_len += n as u64;
                        rec.damaged_lines += 1;
                    }
                }
            }
        }
        let file_len = file.metadata().map_err(io(path))?.len();
        if file_len > good_len {
            file.set_len(good_len).map_err(io(path))?;
        }
        let mut log = Log {
            path: path.to_path_buf(),
            file,
            len: good_len,
        };
        if !saw_header {
            log.append_line(&header_line(state.next_seq()), true)?;
        }
        Ok((log, state, rec))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one line; with `sync` it is on disk when this returns.
    pub fn append_line(&mut self, line: &[u8], sync: bool) -> Result<(), LogError> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        self.file.write_all(&buf).map_err(io(&self.path))?;
        if sync {
            self.file.sync_data().map_err(io(&self.path))?;
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    pub fn append_ack(&mut self, watermark: u64) -> Result<(), LogError> {
        let line = serde_json::to_vec(&AckLine { ack: watermark }).unwrap_or_default();
        // Not synced: losing it only means replaying a few committed events after a crash.
        self.append_line(&line, false)
    }

    /// Rewrites the log with only what `state` holds (write a temporary file, fsync, rename,
    /// fsync the directory), so the file never grows without bound.
    pub fn compact(&mut self, state: &OutboxState) -> Result<(), LogError> {
        let tmp = self.path.with_extension("compact");
        let mut out = File::create(&tmp).map_err(io(&tmp))?;
        let mut len = 0u64;
        let mut write = |bytes: &[u8]| -> Result<(), LogError> {
            out.write_all(bytes).map_err(io(&tmp))?;
            out.write_all(b"\n").map_err(io(&tmp))?;
            len += bytes.len() as u64 + 1;
            Ok(())
        };
        write(&header_line(state.next_seq()))?;
        write(
            &serde_json::to_vec(&AckLine {
                ack: state.watermark(),
            })
            .unwrap_or_default(),
        )?;
        for (_, p) in state.iter() {
            write(&p.bytes)?;
        }
        out.sync_all().map_err(io(&tmp))?;
        drop(out);
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        if file.try_lock().is_err() {
            return Err(LogError::Locked {
                path: self.path.clone(),
            });
        }
        self.file = file;
        self.len = len;
        Ok(())
    }
}

fn header_line(next_seq: u64) -> Vec<u8> {
    serde_json::to_vec(&Header {
        gemfleet_outbox: 1,
        next_seq,
    })
    .unwrap_or_default()
}

fn now_micros() -> u64 {
    let micros = chrono::Utc::now().timestamp_micros();
    u64::try_from(micros).unwrap_or(1)
}
