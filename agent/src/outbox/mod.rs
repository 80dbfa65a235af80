//! The durable outbox: every event is on disk before it is published, and leaves only when
//! the recorder's watermark covers it. [`state`] is the pure bookkeeping, [`log`] the file.

pub mod log;
pub mod state;

use chrono::{DateTime, Utc};
use gemfleet_protocol::{AgentId, Envelope, EventKind, Payload, Topic};
use state::{AdmitError, Fill, OutboxState, Pending};
use std::path::Path;
use std::sync::Mutex;

pub use log::{LogError, Recovery};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Full(#[from] AdmitError),
    #[error("{0} is not an outbox event")]
    NotAnEvent(&'static str),
    #[error("cannot encode event: {0}")]
    Encode(String),
    #[error("outbox lock poisoned")]
    Poisoned,
}

/// Compact when at least this many bytes of the file are no longer needed.
const COMPACT_SLACK_BYTES: u64 = 1024 * 1024;

/// A snapshot for `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxStatus {
    pub depth: usize,
    pub pending_bytes: u64,
    pub max_bytes: u64,
    pub file_bytes: u64,
    pub floor: u64,
    pub next_seq: u64,
    pub watermark: u64,
    pub oldest_seq: Option<u64>,
    pub oldest_ts: Option<DateTime<Utc>>,
    pub near_full: bool,
    pub full: bool,
}

/// One event ready to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub seq: u64,
    pub topic: String,
    pub bytes: Vec<u8>,
    pub ts: DateTime<Utc>,
}

pub struct Outbox {
    agent: AgentId,
    inner: Mutex<(log::Log, OutboxState)>,
    compact_slack: std::sync::atomic::AtomicU64,
}

impl Outbox {
    pub fn open(
        agent: AgentId,
        path: &Path,
        max_bytes: u64,
    ) -> Result<(Outbox, Recovery), OutboxError> {
        let (log, state, rec) = log::Log::open(path, max_bytes)?;
        Ok((
            Outbox {
                agent,
                inner: Mutex::new((log, state)),
                compact_slack: COMPACT_SLACK_BYTES.into(),
            },
            rec,
        ))
    }

    fn topic(&self, kind: EventKind) -> String {
        Topic::AgentEvent(self.agent.clone(), kind).to_string()
    }

    /// Writes `payload` durably with the next sequence number and returns what to publish.
    /// Blocking (fsync): call from a blocking-capable context.
    pub fn append(&self, payload: Payload) -> Result<(Outgoing, Envelope), OutboxError> {
        let kind = log::event_kind(&payload).ok_or(OutboxError::NotAnEvent(payload.kind()))?;
        let mut g = self.inner.lock().map_err(|_| OutboxError::Poisoned)?;
        let (log, state) = &mut *g;
        let seq = state.next_seq();
        let env = Envelope::new(self.agent.clone(), Some(seq), payload);
        let bytes = env
            .encode()
            .map_err(|e| OutboxError::Encode(e.to_string()))?;
        state.admit(kind, bytes.len())?;
        log.append_line(&bytes, true)?;
        let taken = state.take_seq();
        debug_assert_eq!(taken, seq);
        state.insert(
            seq,
            Pending {
                kind,
                ts: env.ts,
                bytes: bytes.clone(),
            },
        );
        Ok((
            Outgoing {
                seq,
                topic: self.topic(kind),
                bytes,
                ts: env.ts,
            },
            env,
        ))
    }

    /// Applies a watermark; compacts the file when enough of it is dead. Returns how many
    /// events were dropped.
    pub fn ack(&self, watermark: u64) -> Result<usize, OutboxError> {
        let mut g = self.inner.lock().map_err(|_| OutboxError::Poisoned)?;
        let (log, state) = &mut *g;
        let dropped = state.ack(watermark);
        if dropped > 0 {
            log.append_ack(watermark)?;
            if log.len()
                > state.pending_bytes()
                    + self
                        .compact_slack
                        .load(std::sync::atomic::Ordering::Relaxed)
            {
                log.compact(state)?;
            }
        }
        Ok(dropped)
    }

    /// Everything pending, oldest first (optionally only what was written before `before`).
    pub fn pending(&self, before: Option<DateTime<Utc>>) -> Vec<Outgoing> {
        let Ok(g) = self.inner.lock() else {
            return Vec::new();
        };
        g.1.iter()
            .filter(|(_, p)| before.is_none_or(|b| p.ts < b))
            .map(|(seq, p)| Outgoing {
                seq,
                topic: self.topic(p.kind),
                bytes: p.bytes.clone(),
                ts: p.ts,
            })
            .collect()
    }

    /// How much dead space the file may hold before it is rewritten (default 1 MiB).
    pub fn set_compact_slack(&self, bytes: u64) {
        self.compact_slack
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn floor(&self) -> u64 {
        self.inner.lock().map(|g| g.1.floor()).unwrap_or(0)
    }

    pub fn depth(&self) -> usize {
        self.inner.lock().map(|g| g.1.depth()).unwrap_or(0)
    }

    pub fn status(&self) -> Option<OutboxStatus> {
        let g = self.inner.lock().ok()?;
        let (log, s) = &*g;
        let oldest = s.oldest();
        Some(OutboxStatus {
            depth: s.depth(),
            pending_bytes: s.pending_bytes(),
            max_bytes: s.max_bytes(),
            file_bytes: log.len(),
            floor: s.floor(),
            next_seq: s.next_seq(),
            watermark: s.watermark(),
            oldest_seq: oldest.map(|(q, _)| q),
            oldest_ts: oldest.map(|(_, p)| p.ts),
            near_full: s.fill() != Fill::Normal,
            full: s.fill() == Fill::Full,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemfleet_protocol::{Release, TaskEvent, TaskId, TaskStatus};
    use std::io::Write;

    fn agent() -> AgentId {
        AgentId::parse("edge-1").unwrap()
    }
    fn release() -> Payload {
        Payload::Release(Release {
            claim_id: uuid::Uuid::now_v7(),
            grant_id: None,
            reason: "test".into(),
        })
    }

    #[test]
    fn events_survive_a_reopen_and_the_counter_never_goes_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("outbox.log");
        let (o, _) = Outbox::open(agent(), &p, 1 << 20).unwrap();
        let (a, _) = o.append(release()).unwrap();
        let (b, _) = o.append(release()).unwrap();
        assert_eq!(b.seq, a.seq + 1);
        assert!(
            a.seq > 1_700_000_000_000_000,
            "a new outbox starts at unix micros"
        );
        assert!(a.topic.ends_with("/agents/edge-1/events/release"));
        drop(o);
        let (o, rec) = Outbox::open(agent(), &p, 1 << 20).unwrap();
        assert_eq!(rec.events, 2);
        assert_eq!(o.depth(), 2);
        assert_eq!(o.floor(), a.seq);
        o.ack(a.seq).unwrap();
        drop(o);
        let (o, _) = Outbox::open(agent(), &p, 1 << 20).unwrap();
        assert_eq!(o.depth(), 1);
        o.ack(b.seq).unwrap();
        let (c, _) = o.append(release()).unwrap();
        assert_eq!(c.seq, b.seq + 1);
    }

    #[test]
    fn a_second_daemon_on_the_same_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("outbox.log");
        let (_o, _) = Outbox::open(agent(), &p, 1 << 20).unwrap();
        assert!(matches!(
            Outbox::open(agent(), &p, 1 << 20),
            Err(OutboxError::Log(LogError::Locked { .. }))
        ));
    }

    #[test]
    fn a_torn_last_line_is_cut_and_a_damaged_line_skipped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("outbox.log");
        let (o, _) = Outbox::open(agent(), &p, 1 << 20).unwrap();
        let (a, _) = o.append(release()).unwrap();
        drop(o);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"garbage line\n{\"v\":1,\"id\":\"tor").unwrap();
        drop(f);
        let (o, rec) = Outbox::open(agent(), &p, 1 << 20).unwrap();
        assert_eq!((rec.events, rec.damaged_lines), (1, 1));
        assert!(rec.torn_tail_bytes > 0);
        let (b, _) = o.append(release()).unwrap();
        assert_eq!(b.seq, a.seq + 1);
        drop(o);
        let (o, rec) = Outbox::open(agent(), &p, 1 << 20).unwrap();
        assert_eq!(rec.torn_tail_bytes, 0);
        assert_eq!(o.depth(), 2);
    }

    #[test]
    fn the_bound_refuses_claims_and_compaction_keeps_what_is_pending() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("outbox.log");
        let (o, _) = Outbox::open(agent(), &p, 4000).unwrap();
        let task = Payload::Task(TaskEvent {
            task_id: TaskId::parse("t").unwrap(),
            status: TaskStatus::Running,
            session_id: None,
            requests: 0,
            input_tokens: 0,
            output_tokens: 0,
            total_tokens: 0,
            duration_ms: 0,
            exit_code: None,
        });
        let mut last = 0;
        loop {
            match o.append(task.clone()) {
                Ok((out, _)) => last = out.seq,
                Err(OutboxError::Full(_)) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(o.status().unwrap().near_full);
        o.ack(last - 1).unwrap();
        assert_eq!(o.depth(), 1);
        // Many appends and acks: the file stays small.
        o.set_compact_slack(16 * 1024);
        for _ in 0..500 {
            let (out, _) = o.append(release()).unwrap();
            o.ack(out.seq).unwrap();
        }
        let st = o.status().unwrap();
        assert_eq!(st.depth, 0);
        assert!(st.file_bytes < 32 * 1024, "file grew to {}", st.file_bytes);
    }
}
