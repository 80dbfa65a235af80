//! Task context store: agents save a task's Gemini CLI session (zstd-compressed, sent in
//! base64 chunks below the protocol's size limit) and load it back on any machine.
//!
//! Runs as its own task so that verifying and storing a 64 MiB session never delays a claim.
//! A chunk is acknowledged once buffered; the save is durable when `Saved` arrives (the agent
//! retries a save that got no `Saved`, so chunks lost in a crash only cost a retry).

use crate::dead_letter::DeadLetter;
use base64::Engine;
use gemfleet_protocol::{AgentId, CONTEXT_CHUNK_BYTES, Context, Envelope, Payload, TaskId, Topic};
use rumqttc::{AsyncClient, Publish, QoS};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Largest session accepted, uncompressed (the contract says 64 MiB must round-trip).
pub const MAX_SESSION_BYTES: u64 = 96 * 1024 * 1024;
/// Largest compressed upload accepted.
pub const MAX_COMPRESSED_BYTES: usize = 96 * 1024 * 1024;
const MAX_ASSEMBLIES: usize = 32;
const ASSEMBLY_TTL: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ContextError {
    #[error("chunk {index} of {total} is out of range")]
    BadIndex { index: u32, total: u32 },
    #[error("chunk data is not base64")]
    BadBase64,
    #[error(
        "chunk disagrees with earlier chunks of the same save (task, session, total or sha256)"
    )]
    Inconsistent,
    #[error("context too large (over {MAX_COMPRESSED_BYTES} compressed bytes)")]
    TooLarge,
    #[error("too many saves in progress; retry later")]
    Busy,
    #[error("context is not valid zstd data: {0}")]
    BadZstd(String),
    #[error("context larger than {MAX_SESSION_BYTES} bytes uncompressed")]
    SessionTooLarge,
    #[error("sha256 mismatch: the saved context is {got}, the agent said {want}")]
    Digest { got: String, want: String },
}

/// A complete upload, ready to verify and store.
#[derive(Debug)]
pub struct Upload {
    pub agent: AgentId,
    pub request_id: Uuid,
    pub task_id: TaskId,
    pub session_id: String,
    pub sha256: String,
    pub compressed: Vec<u8>,
}

struct Assembly {
    agent: AgentId,
    task_id: TaskId,
    session_id: String,
    sha256: String,
    chunks: Vec<Option<Vec<u8>>>,
    received: usize,
    bytes: usize,
    started: Instant,
}

/// Collects chunks per request id (pure apart from `Instant` for expiry).
#[derive(Default)]
pub struct Assembler {
    open: HashMap<Uuid, Assembly>,
}

impl Assembler {
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        agent: &AgentId,
        request_id: Uuid,
        task_id: &TaskId,
        session_id: &str,
        index: u32,
        total: u32,
        sha256: &str,
        data: &str,
    ) -> Result<Option<Upload>, ContextError> {
        self.open.retain(|_, a| a.started.elapsed() < ASSEMBLY_TTL);
        let max_chunks = (MAX_COMPRESSED_BYTES / CONTEXT_CHUNK_BYTES + 1) as u32;
        if total == 0 || index >= total || total > max_chunks {
            return Err(ContextError::BadIndex { index, total });
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| ContextError::BadBase64)?;
        if !self.open.contains_key(&request_id) && self.open.len() >= MAX_ASSEMBLIES {
            return Err(ContextError::Busy);
        }
        let a = self.open.entry(request_id).or_insert_with(|| Assembly {
            agent: agent.clone(),
            task_id: task_id.clone(),
            session_id: session_id.to_string(),
            sha256: sha256.to_string(),
            chunks: vec![None; total as usize],
            received: 0,
            bytes: 0,
            started: Instant::now(),
        });
        if &a.agent != agent
            || &a.task_id != task_id
            || a.session_id != session_id
            || a.sha256 != sha256
            || a.chunks.len() != total as usize
        {
            return Err(ContextError::Inconsistent);
        }
        let slot = &mut a.chunks[index as usize];
        if slot.is_none() {
            a.bytes += bytes.len();
            a.received += 1;
            *slot = Some(bytes);
        }
        if a.bytes > MAX_COMPRESSED_BYTES {
            self.open.remove(&request_id);
            return Err(ContextError::TooLarge);
        }
        if a.received < a.chunks.len() {
            return Ok(None);
        }
        let Some(a) = self.open.remove(&request_id) else {
            return Ok(None);
        };
        let mut compressed = Vec::with_capacity(a.bytes);
        for c in a.chunks.into_iter().flatten() {
            compressed.extend_from_slice(&c);
        }
        Ok(Some(Upload {
            agent: a.agent,
            request_id,
            task_id: a.task_id,
            session_id: a.session_id,
            sha256: a.sha256,
            compressed,
        }))
    }
}

/// Decompresses (bounded) and checks the digest of the uncompressed session; returns its size.
pub fn verify(compressed: &[u8], want_sha256: &str) -> Result<u64, ContextError> {
    let dec = zstd::stream::read::Decoder::new(compressed)
        .map_err(|e| ContextError::BadZstd(e.to_string()))?;
    let mut limited = dec.take(MAX_SESSION_BYTES + 1);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = limited
            .read(&mut buf)
            .map_err(|e| ContextError::BadZstd(e.to_string()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > MAX_SESSION_BYTES {
            return Err(ContextError::SessionTooLarge);
        }
        hasher.update(&buf[..n]);
    }
    let got = hex::encode(hasher.finalize());
    if !got.eq_ignore_ascii_case(want_sha256) {
        return Err(ContextError::Digest {
            got,
            want: want_sha256.to_string(),
        });
    }
    Ok(size)
}

pub async fn run(
    pool: PgPool,
    client: AsyncClient,
    me: AgentId,
    mut rx: mpsc::UnboundedReceiver<Publish>,
    stop: CancellationToken,
) {
    let mut asm = Assembler::default();
    loop {
        let p = tokio::select! {
            p = rx.recv() => match p { Some(p) => p, None => return },
            _ = stop.cancelled() => return,
        };
        handle(&pool, &client, &me, &mut asm, &p).await;
        if let Err(e) = client.ack(&p).await {
            tracing::warn!("cannot ack context message: {e}");
        }
    }
}

async fn handle(
    pool: &PgPool,
    client: &AsyncClient,
    me: &AgentId,
    asm: &mut Assembler,
    p: &Publish,
) {
    let refuse = |agent: Option<&AgentId>, reason: &'static str, detail: String| {
        Box::new(DeadLetter::new(
            &p.topic,
            agent.map(|a| a.to_string()),
            reason,
            detail,
            &p.payload,
        ))
    };
    let parsed = match Topic::parse(&p.topic) {
        Ok(Topic::AgentContext(a)) => Ok(a),
        Ok(_) => Err(refuse(None, "bad_topic", "not a context topic".into())),
        Err(e) => Err(refuse(None, "bad_topic", e.to_string())),
    };
    let result = parsed.and_then(|agent| {
        let env = Envelope::decode(&p.payload)
            .map_err(|e| refuse(Some(&agent), e.label(), e.to_string()))?;
        if env.agent != agent {
            return Err(refuse(
                Some(&agent),
                "wrong_agent",
                "envelope agent differs from the topic's".into(),
            ));
        }
        match env.payload {
            Payload::Context(c) => Ok((agent, c)),
            other => Err(refuse(
                Some(&agent),
                "kind_mismatch",
                format!("payload kind {} on a context topic", other.kind()),
            )),
        }
    });
    let (agent, ctx) = match result {
        Ok(x) => x,
        Err(dl) => {
            metrics::counter!(crate::metrics_names::DEAD_LETTERS, "reason" => dl.reason)
                .increment(1);
            let mut w = crate::store::BatchWrite::default();
            w.dead_letters.push(*dl);
            if let Ok(mut tx) = pool.begin().await
                && w.write(&mut tx).await.is_ok()
            {
                let _ = tx.commit().await;
            }
            return;
        }
    };
    let reply =
        |payload: Context| Envelope::new(me.clone(), None, Payload::Context(payload)).encode();
    let inbox = Topic::Inbox(agent.clone()).to_string();
    match ctx {
        Context::SaveChunk {
            request_id,
            task_id,
            session_id,
            index,
            total,
            sha256,
            data,
        } => {
            let saved = match asm.add(
                &agent,
                request_id,
                &task_id,
                &session_id,
                index,
                total,
                &sha256,
                &data,
            ) {
                Ok(None) => return,
                Ok(Some(upload)) => store_upload(pool, upload).await,
                Err(e) => Err(e.to_string()),
            };
            let error = saved.err();
            if let Some(e) = &error {
                tracing::warn!(task = %task_id, "context save refused: {e}");
            }
            if let Ok(bytes) = reply(Context::Saved {
                request_id,
                task_id,
                error,
            }) {
                let _ = client.publish(inbox, QoS::AtLeastOnce, false, bytes).await;
            }
        }
        Context::Load {
            request_id,
            task_id,
        } => {
            let row: Result<Option<(String, String, Vec<u8>)>, _> = sqlx::query_as(
                "SELECT session_id, sha256, compressed FROM task_context WHERE task_id = $1",
            )
            .bind(task_id.as_str())
            .fetch_optional(pool)
            .await;
            match row {
                Ok(Some((session_id, sha256, compressed))) => {
                    let chunks: Vec<&[u8]> = if compressed.is_empty() {
                        vec![&[][..]]
                    } else {
                        compressed.chunks(CONTEXT_CHUNK_BYTES).collect()
                    };
                    let total = chunks.len() as u32;
                    for (i, c) in chunks.into_iter().enumerate() {
                        let msg = Context::Chunk {
                            request_id,
                            task_id: task_id.clone(),
                            session_id: session_id.clone(),
                            index: i as u32,
                            total,
                            sha256: sha256.clone(),
                            data: base64::engine::general_purpose::STANDARD.encode(c),
                        };
                        match reply(msg) {
                            Ok(bytes) => {
                                let _ = client
                                    .publish(inbox.clone(), QoS::AtLeastOnce, false, bytes)
                                    .await;
                            }
                            Err(e) => tracing::error!("cannot encode context chunk: {e}"),
                        }
                    }
                }
                Ok(None) => {
                    if let Ok(bytes) = reply(Context::NotFound {
                        request_id,
                        task_id,
                    }) {
                        let _ = client.publish(inbox, QoS::AtLeastOnce, false, bytes).await;
                    }
                }
                Err(e) => tracing::error!("cannot load context of {task_id}: {e}"),
            }
        }
        _ => {}
    }
}

async fn store_upload(pool: &PgPool, u: Upload) -> Result<(), String> {
    let Upload {
        agent,
        task_id,
        session_id,
        sha256,
        compressed,
        ..
    } = u;
    let (compressed, size) = tokio::task::spawn_blocking(move || {
        let r = verify(&compressed, &sha256);
        (compressed, r.map(|s| (s, sha256)))
    })
    .await
    .map_err(|e| e.to_string())?;
    let (size, sha256) = size.map_err(|e| e.to_string())?;
    let meta = serde_json::json!({
        "session_id": session_id,
        "size_bytes": size,
        "compressed_bytes": compressed.len(),
        "sha256": sha256,
        "saved_by": agent.as_str(),
        "saved_at": chrono::Utc::now(),
    });
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    sqlx::query(
        "INSERT INTO tasks (id, context, owner_agent, session_id, last_updated)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (id) DO UPDATE SET context = EXCLUDED.context,
           session_id = EXCLUDED.session_id, last_updated = now()",
    )
    .bind(task_id.as_str())
    .bind(&meta)
    .bind(agent.as_str())
    .bind(&session_id)
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    sqlx::query(
        "INSERT INTO task_context (task_id, session_id, sha256, size_bytes, compressed, saved_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (task_id) DO UPDATE SET session_id = EXCLUDED.session_id,
           sha256 = EXCLUDED.sha256, size_bytes = EXCLUDED.size_bytes,
           compressed = EXCLUDED.compressed, saved_by = EXCLUDED.saved_by, saved_at = now()",
    )
    .bind(task_id.as_str())
    .bind(&session_id)
    .bind(&sha256)
    .bind(crate::store::to_i64(size))
    .bind(&compressed)
    .bind(agent.as_str())
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_out_of_order_and_verifies() {
        let data = b"hello session ".repeat(10_000);
        let sha = hex::encode(Sha256::digest(&data));
        let z = zstd::encode_all(&data[..], 3).unwrap();
        let parts: Vec<String> = z
            .chunks(100)
            .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
            .collect();
        let n = parts.len() as u32;
        let a = AgentId::parse("a1").unwrap();
        let t = TaskId::parse("t1").unwrap();
        let id = Uuid::now_v7();
        let mut asm = Assembler::default();
        let mut done = None;
        for i in (0..n).rev() {
            done = asm
                .add(&a, id, &t, "s", i, n, &sha, &parts[i as usize])
                .unwrap();
        }
        let up = done.unwrap();
        assert_eq!(up.compressed, z);
        assert_eq!(verify(&up.compressed, &sha).unwrap(), data.len() as u64);
        assert!(matches!(
            verify(&up.compressed, "00"),
            Err(ContextError::Digest { .. })
        ));
        assert!(matches!(
            verify(b"garbage", &sha),
            Err(ContextError::BadZstd(_))
        ));
        assert!(matches!(
            asm.add(&a, id, &t, "s", 5, 2, &sha, ""),
            Err(ContextError::BadIndex { index: 5, total: 2 })
        ));
    }
}
