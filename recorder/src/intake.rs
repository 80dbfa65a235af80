//! Turning one MQTT message into something the recorder accepts, or a dead letter (pure).
//! Checks, in order: a known topic, the size limit, JSON, the protocol version, the typed
//! payload, that the envelope's agent is the topic's agent (an agent must not speak for
//! another), and that the payload's kind is the topic's kind.

use crate::dead_letter::DeadLetter;
use gemfleet_protocol::{AgentId, Envelope, EventKind, Payload, Topic};

#[derive(Debug)]
pub enum Intake {
    /// An outbox event (claim, release, usage, throttle, task).
    Event(Envelope),
    /// A retained status (online/offline).
    Status(Envelope),
}

pub fn decode(topic: &str, payload: &[u8]) -> Result<Intake, Box<DeadLetter>> {
    let dead = |agent: Option<&AgentId>, reason: &'static str, detail: String| {
        Box::new(DeadLetter::new(
            topic,
            agent.map(|a| a.to_string()),
            reason,
            detail,
            payload,
        ))
    };
    let parsed = Topic::parse(topic).map_err(|e| dead(None, "bad_topic", e.to_string()))?;
    let (agent, kind) = match &parsed {
        Topic::AgentEvent(a, k) => (a, Some(*k)),
        Topic::AgentStatus(a) => (a, None),
        _ => {
            return Err(dead(
                None,
                "bad_topic",
                "not a topic the recorder reads".into(),
            ));
        }
    };
    if payload.is_empty() && kind.is_none() {
        // A cleared retained status: nothing to record.
        return Err(dead(Some(agent), "empty", "empty payload".into()));
    }
    // PostgreSQL's jsonb and text cannot hold NUL: refuse it here rather than fail a batch.
    if payload
        .windows(6)
        .any(|w| w.eq_ignore_ascii_case(b"\\u0000"))
    {
        return Err(dead(
            Some(agent),
            "invalid",
            "payload contains a NUL character".into(),
        ));
    }
    let env = Envelope::decode(payload).map_err(|e| dead(Some(agent), e.label(), e.to_string()))?;
    if &env.agent != agent {
        return Err(dead(
            Some(agent),
            "wrong_agent",
            format!(
                "envelope agent {:?} on agent {:?}'s topic",
                env.agent.as_str(),
                agent.as_str()
            ),
        ));
    }
    let expected = match kind {
        Some(EventKind::Claim) => matches!(env.payload, Payload::Claim(_)),
        Some(EventKind::Release) => matches!(env.payload, Payload::Release(_)),
        Some(EventKind::Usage) => matches!(env.payload, Payload::Usage(_)),
        Some(EventKind::Throttle) => matches!(env.payload, Payload::Throttle(_)),
        Some(EventKind::Task) => matches!(env.payload, Payload::Task(_)),
        None => matches!(env.payload, Payload::Status(_)),
    };
    if !expected {
        return Err(dead(
            Some(agent),
            "kind_mismatch",
            format!("payload kind {} on topic {topic}", env.payload.kind()),
        ));
    }
    Ok(if kind.is_some() {
        Intake::Event(env)
    } else {
        Intake::Status(env)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemfleet_protocol::{Payload, Release};

    fn release_env(agent: &str) -> Vec<u8> {
        Envelope::new(
            AgentId::parse(agent).unwrap(),
            Some(1),
            Payload::Release(Release {
                claim_id: uuid::Uuid::now_v7(),
                grant_id: None,
                reason: "x".into(),
            }),
        )
        .encode()
        .unwrap()
    }

    #[test]
    fn accepts_and_refuses() {
        let t = "gemfleet/v1/agents/a1/events/release";
        assert!(matches!(
            decode(t, &release_env("a1")),
            Ok(Intake::Event(_))
        ));
        assert_eq!(
            decode(t, &release_env("a2")).unwrap_err().reason,
            "wrong_agent"
        );
        assert_eq!(
            decode("gemfleet/v1/agents/a1/events/usage", &release_env("a1"))
                .unwrap_err()
                .reason,
            "kind_mismatch"
        );
        assert_eq!(decode(t, b"{nope").unwrap_err().reason, "not_json");
        assert_eq!(
            decode(t, br#"{"v":2}"#).unwrap_err().reason,
            "unsupported_version"
        );
        assert_eq!(
            decode("gemfleet/v1/agents/a#/events/claim", b"{}")
                .unwrap_err()
                .reason,
            "bad_topic"
        );
        assert_eq!(
            decode(t, &vec![b' '; 300 * 1024]).unwrap_err().reason,
            "too_large"
        );
        let mut nul = release_env("a1");
        let s = String::from_utf8(nul.clone())
            .unwrap()
            .replace("\"x\"", "\"\\u0000\"");
        nul = s.into_bytes();
        assert_eq!(decode(t, &nul).unwrap_err().reason, "invalid");
    }
}
