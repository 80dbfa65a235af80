//! The bridge's durable spool: alerts received but not yet posted to Slack.
//!
//! An append-only JSON-lines file, fsynced before the MQTT message is acknowledged, so neither
//! a webhook outage nor a bridge crash loses an alert. Records:
//! - `add`: an alert with its spool sequence number and event id;
//! - `done`: every alert up to this sequence number was delivered (or rejected for good);
//! - `seen`: an event id delivered earlier, kept across compaction for de-duplication.
//!
//! Alerts are rare (a handful a minute even in a bad hour), so a synchronous write + fsync per
//! alert is cheap, and the simple format stays readable with `jq` during an incident.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use gemfleet_protocol::Alert;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const SPOOL_FILE: &str = "spool.jsonl";
/// Event ids remembered after delivery, so a redelivered MQTT message is not posted twice.
/// The broker redelivers only unacknowledged messages, which are recent; 10 000 is plenty.
const SEEN_CAPACITY: usize = 10_000;
/// Rewrite the file after this many records since the last rewrite.
const COMPACT_AFTER: usize = 2_000;

/// One alert waiting for Slack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpooledAlert {
    pub seq: u64,
    /// The envelope's event id (UUID v7).
    pub id: Uuid,
    /// When the recorder raised it (the envelope's timestamp).
    pub ts: DateTime<Utc>,
    pub alert: Alert,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Add(SpooledAlert),
    Done { upto: u64 },
    Seen { id: Uuid },
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool record could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

pub struct Spool {
    dir: PathBuf,
    file: File,
    pending: VecDeque<SpooledAlert>,
    seen: HashSet<Uuid>,
    seen_order: VecDeque<Uuid>,
    next_seq: u64,
    records_since_compact: usize,
    /// Lines that could not be parsed when the spool was opened.
    pub skipped_lines: usize,
}

impl Spool {
    /// Opens (or creates) the spool in `dir` and replays it.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        let io = |source| SpoolError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(SPOOL_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|source| SpoolError::Io {
                path: path.clone(),
                source,
            })?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            file: file.try_clone().map_err(io)?,
            pending: VecDeque::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            next_seq: 1,
            records_since_compact: 0,
            skipped_lines: 0,
        };
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut reader = BufReader::new(&mut file);
        let mut line = String::new();
        let mut complete_len: u64 = 0;
        let mut done_upto = 0;
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(io)?;
            if n == 0 {
                break;
            }
            if !line.ends_with('\n') {
                // A write torn by a crash: the alert it carried was never acknowledged to the
                // broker, which will deliver it again.
                spool.skipped_lines += 1;
                break;
            }
            complete_len += n as u64;
            spool.records_since_compact += 1;
            match serde_json::from_str::<Record>(&line) {
                Ok(Record::Add(a)) => {
                    spool.next_seq = spool.next_seq.max(a.seq + 1);
                    spool.remember(a.id);
                    spool.pending.push_back(a);
                }
                Ok(Record::Done { upto }) => done_upto = done_upto.max(upto),
                Ok(Record::Seen { id }) => spool.remember(id),
                Err(_) => spool.skipped_lines += 1,
            }
        }
        spool.pending.retain(|a| a.seq > done_upto);
        // Cut a torn tail so the next append starts on a fresh line.
        file.set_len(complete_len).map_err(io)?;
        Ok(spool)
    }

    fn remember(&mut self, id: Uuid) {
        if self.seen.insert(id) {
            self.seen_order.push_back(id);
            while self.seen_order.len() > SEEN_CAPACITY {
                if let Some(old) = self.seen_order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }

    fn append(&mut self, record: &Record) -> Result<(), SpoolError> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        let io = |source| SpoolError::Io {
            path: self.dir.join(SPOOL_FILE),
            source,
        };
        self.file.write_all(&line).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.records_since_compact += 1;
        Ok(())
    }

    /// Spools an alert durably. Returns false (and writes nothing) for an event id already
    /// spooled or delivered: MQTT QoS 1 may deliver a message twice.
    pub fn add(&mut self, id: Uuid, ts: DateTime<Utc>, alert: Alert) -> Result<bool, SpoolError> {
        if self.seen.contains(&id) {
            return Ok(false);
        }
        let spooled = SpooledAlert {
            seq: self.next_seq,
            id,
            ts,
            alert,
        };
        self.append(&Record::Add(spooled.clone()))?;
        self.next_seq += 1;
        self.remember(id);
        self.pending.push_back(spooled);
        Ok(true)
    }

    /// The oldest `max` alerts waiting, in arrival order.
    pub fn peek(&self, max: usize) -> Vec<SpooledAlert> {
        self.pending.iter().take(max).cloned().collect()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Records that every alert up to `upto` was handled; compacts the file now and then.
    pub fn mark_delivered(&mut self, upto: u64) -> Result<(), SpoolError> {
        self.append(&Record::Done { upto })?;
        while self.pending.front().is_some_and(|a| a.seq <= upto) {
            self.pending.pop_front();
        }
        if self.records_since_compact >= COMPACT_AFTER {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file as the remembered ids plus the pending alerts (temp file, fsync,
    /// rename), so it does not grow without bound.
    pub fn compact(&mut self) -> Result<(), SpoolError> {
        let path = self.dir.join(SPOOL_FILE);
        let tmp = self.dir.join(format!("{SPOOL_FILE}.tmp"));
        let io = |source| SpoolError::Io {
            path: path.clone(),
            source,
        };
        let pending: HashSet<Uuid> = self.pending.iter().map(|a| a.id).collect();
        let mut out = Vec::new();
        for id in self.seen_order.iter().filter(|id| !pending.contains(id)) {
            out.extend(serde_json::to_vec(&Record::Seen { id: *id })?);
            out.push(b'\n');
        }
        for a in &self.pending {
            out.extend(serde_json::to_vec(&Record::Add(a.clone()))?);
            out.push(b'\n');
        }
        {
            let mut f = File::create(&tmp).map_err(io)?;
            f.write_all(&out).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.file = OpenOptions::new().append(true).open(&path).map_err(io)?;
        self.records_since_compact = self.seen_order.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemfleet_protocol::Severity;

    fn alert(text: &str) -> Alert {
        Alert {
            severity: Severity::Warning,
            code: "dead_letter".into(),
            text: text.into(),
            key: None,
            project: None,
            model: None,
            agent: None,
            until: None,
        }
    }

    #[test]
    fn pending_alerts_survive_a_reopen_in_order_and_delivered_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        {
            let mut s = Spool::open(dir.path()).unwrap();
            for (i, id) in ids.iter().enumerate() {
                assert!(s.add(*id, Utc::now(), alert(&format!("a{i}"))).unwrap());
            }
            let first_two = s.peek(2);
            s.mark_delivered(first_two[1].seq).unwrap();
        }
        let mut s = Spool::open(dir.path()).unwrap();
        let texts: Vec<String> = s.peek(10).into_iter().map(|a| a.alert.text).collect();
        assert_eq!(texts, ["a2", "a3", "a4"]);
        // Delivered and pending ids are both remembered.
        assert!(!s.add(ids[0], Utc::now(), alert("dup")).unwrap());
        assert!(!s.add(ids[4], Utc::now(), alert("dup")).unwrap());
        assert!(s.add(Uuid::now_v7(), Utc::now(), alert("a5")).unwrap());
        assert_eq!(s.peek(10).last().unwrap().seq, 6);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_the_spool_stays_usable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path()).unwrap();
            s.add(Uuid::now_v7(), Utc::now(), alert("kept")).unwrap();
        }
        let path = dir.path().join(SPOOL_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"op\":\"add\",\"seq\":2,\"id\":\"01")
            .unwrap();
        drop(f);
        let mut s = Spool::open(dir.path()).unwrap();
        assert_eq!(s.skipped_lines, 1);
        s.add(Uuid::now_v7(), Utc::now(), alert("after")).unwrap();
        let s = Spool::open(dir.path()).unwrap();
        let texts: Vec<String> = s.peek(10).into_iter().map(|a| a.alert.text).collect();
        assert_eq!(texts, ["kept", "after"]);
        assert_eq!(s.skipped_lines, 0);
    }

    #[test]
    fn compaction_keeps_pending_alerts_and_remembered_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        let old = Uuid::now_v7();
        s.add(old, Utc::now(), alert("old")).unwrap();
        s.mark_delivered(1).unwrap();
        s.add(Uuid::now_v7(), Utc::now(), alert("pending")).unwrap();
        s.compact().unwrap();
        s.add(Uuid::now_v7(), Utc::now(), alert("newer")).unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        let texts: Vec<String> = s.peek(10).into_iter().map(|a| a.alert.text).collect();
        assert_eq!(texts, ["pending", "newer"]);
        assert!(!s.add(old, Utc::now(), alert("dup")).unwrap());
    }
}
