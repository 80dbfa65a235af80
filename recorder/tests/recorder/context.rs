//! Task context: a 64 MiB session saved in chunks and loaded back byte for byte.

use crate::ingest::handshake;
use crate::support::*;
use base64::Engine;
use gemfleet_protocol::{CONTEXT_CHUNK_BYTES, Context, Envelope, Payload, TaskId, Topic};
use sha2::{Digest, Sha256};
use std::time::Duration;
use uuid::Uuid;

/// 64 MiB of session-like text (compressible, but not trivially).
fn session(len: usize) -> Vec<u8> {
    let words: Vec<&[u8]> = vec![
        b"{\"role\":\"model\",",
        b"\"parts\":[{\"text\":",
        b"fn main() {",
        b"tokens",
        b"\n",
        b"gemini ",
        b"quota ",
        b"}]}",
    ];
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % words.len() as u64) as usize]);
        out.extend_from_slice(format!("{:x}", x >> 40).as_bytes());
    }
    out.truncate(len);
    out
}

async fn send_context(a: &TestAgent, ctx: Context) {
    let env = Envelope::new(a.id.clone(), None, Payload::Context(ctx));
    a.publish_raw(
        &Topic::AgentContext(a.id.clone()).to_string(),
        env.encode().unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_session_round_trips() {
    let env = env().await;
    let rec = env.start().await;
    let mut a = TestAgent::connect(&env.broker, "edge-1", &[]).await;
    handshake(&mut a).await;
    let task = TaskId::parse("task-1").unwrap();

    let data = session(64 * 1024 * 1024);
    let sha = hex::encode(Sha256::digest(&data));
    let compressed = tokio::task::spawn_blocking({
        let data = data.clone();
        move || zstd::encode_all(&data[..], 1).unwrap()
    })
    .await
    .unwrap();
    let chunks: Vec<&[u8]> = compressed.chunks(CONTEXT_CHUNK_BYTES).collect();
    let total = chunks.len() as u32;
    let request_id = Uuid::now_v7();
    for (i, c) in chunks.iter().enumerate() {
        send_context(
            &a,
            Context::SaveChunk {
                request_id,
                task_id: task.clone(),
                session_id: "s-1".into(),
                index: i as u32,
                total,
                sha256: sha.clone(),
                data: base64::engine::general_purpose::STANDARD.encode(c),
            },
        )
        .await;
    }
    let (_, saved) = a
        .next("/inbox", Duration::from_secs(120), |p| {
            matches!(p, Payload::Context(Context::Saved { .. }))
        })
        .await
        .expect("saved");
    let Payload::Context(Context::Saved { error, .. }) = saved.payload else {
        unreachable!()
    };
    assert_eq!(error, None);
    assert_eq!(
        env.count("SELECT size_bytes FROM task_context WHERE task_id = 'task-1'")
            .await,
        data.len() as i64
    );
    assert_eq!(
        env.count("SELECT (context->>'size_bytes')::int8 FROM tasks WHERE id = 'task-1'")
            .await,
        data.len() as i64
    );

    let load_id = Uuid::now_v7();
    send_context(
        &a,
        Context::Load {
            request_id: load_id,
            task_id: task.clone(),
        },
    )
    .await;
    let mut parts: Vec<Option<Vec<u8>>> = Vec::new();
    let mut got = 0;
    loop {
        let (_, e) = a
            .next("/inbox", Duration::from_secs(120), |p| {
                matches!(p, Payload::Context(Context::Chunk { .. }))
            })
            .await
            .expect("chunk");
        let Payload::Context(Context::Chunk {
            request_id,
            index,
            total,
            sha256,
            data,
            ..
        }) = e.payload
        else {
            unreachable!()
        };
        assert_eq!(request_id, load_id);
        assert_eq!(sha256, sha);
        if parts.is_empty() {
            parts = vec![None; total as usize];
        }
        if parts[index as usize].is_none() {
            got += 1;
        }
        parts[index as usize] = Some(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap(),
        );
        if got == parts.len() {
            break;
        }
    }
    let back: Vec<u8> = parts.into_iter().flatten().flatten().collect();
    let restored = zstd::decode_all(&back[..]).unwrap();
    assert!(restored == data, "restored session differs");

    // Unknown task; and a save whose digest does not match is refused, not stored.
    send_context(
        &a,
        Context::Load {
            request_id: Uuid::now_v7(),
            task_id: TaskId::parse("nope").unwrap(),
        },
    )
    .await;
    a.next("/inbox", Duration::from_secs(10), |p| {
        matches!(p, Payload::Context(Context::NotFound { .. }))
    })
    .await
    .expect("not found");
    let small = zstd::encode_all(&b"hello"[..], 1).unwrap();
    send_context(
        &a,
        Context::SaveChunk {
            request_id: Uuid::now_v7(),
            task_id: TaskId::parse("task-2").unwrap(),
            session_id: "s".into(),
            index: 0,
            total: 1,
            sha256: "00".repeat(32),
            data: base64::engine::general_purpose::STANDARD.encode(&small),
        },
    )
    .await;
    let (_, s) = a
        .next("/inbox", Duration::from_secs(10), |p| {
            matches!(p, Payload::Context(Context::Saved { .. }))
        })
        .await
        .expect("saved reply");
    let Payload::Context(Context::Saved { error, .. }) = s.payload else {
        unreachable!()
    };
    assert!(error.unwrap().contains("sha256 mismatch"));
    assert_eq!(
        env.count("SELECT count(*) FROM task_context WHERE task_id = 'task-2'")
            .await,
        0
    );
    rec.shutdown().await.unwrap();
}
