//! Slack message text for a batch of alerts (pure).
//!
//! One post carries a whole batch: a burst of alerts becomes one message with one block per
//! alert, instead of a dozen notifications in the same second.

use chrono::{DateTime, Utc};
use gemfleet_protocol::{Alert, Severity};
use serde_json::{Value, json};

use super::spool::SpooledAlert;

/// Longest alert text quoted in a post; Slack refuses sections over 3000 characters.
const MAX_TEXT_CHARS: usize = 1500;

pub fn severity_emoji(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => ":information_source:",
        Severity::Warning => ":warning:",
        Severity::Critical => ":rotating_light:",
        Severity::Security => ":closed_lock_with_key:",
    }
}

/// Slack's mrkdwn control characters (`&`, `<`, `>`) escaped, so a hostile alert text cannot
/// inject links or @channel mentions.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

/// A Slack date token: shown in each reader's own time zone, with a UTC fallback.
fn slack_date(t: DateTime<Utc>) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} {{time}}|{}>",
        t.timestamp(),
        t.format("%Y-%m-%d %H:%M UTC")
    )
}

/// One alert as mrkdwn: emoji, severity, code, text; then what it concerns and until when.
pub fn alert_line(alert: &Alert, raised_at: DateTime<Utc>) -> String {
    let mut line = format!(
        "{} *{}* `{}` {}",
        severity_emoji(alert.severity),
        alert.severity.as_str(),
        escape(&alert.code),
        escape(&truncate(&alert.text, MAX_TEXT_CHARS)),
    );
    let mut about = Vec::new();
    if let Some(k) = &alert.key {
        about.push(format!("key `{}`", escape(k.as_str())));
    }
    if let Some(p) = &alert.project {
        about.push(format!("project `{}`", escape(p.as_str())));
    }
    if let Some(m) = &alert.model {
        about.push(format!("model `{}`", escape(m.as_str())));
    }
    if let Some(a) = &alert.agent {
        about.push(format!("agent `{}`", escape(a.as_str())));
    }
    if let Some(until) = alert.until {
        about.push(format!("until {}", slack_date(until)));
    }
    about.push(format!("raised {}", slack_date(raised_at)));
    line.push_str("\n> ");
    line.push_str(&about.join(" · "));
    line
}

/// The JSON body for Slack's incoming webhook: `text` (used by notifications and clients
/// without blocks) plus one section block per alert.
pub fn batch_message(batch: &[SpooledAlert]) -> Value {
    let worst = batch
        .iter()
        .map(|a| a.alert.severity)
        .max()
        .unwrap_or(Severity::Info);
    let summary = if batch.len() == 1 {
        batch
            .first()
            .map(|a| {
                format!(
                    "{} gemfleet {}: {}",
                    severity_emoji(a.alert.severity),
                    a.alert.severity.as_str(),
                    escape(&truncate(&a.alert.text, 200))
                )
            })
            .unwrap_or_default()
    } else {
        format!(
            "{} gemfleet: {} alerts (worst: {})",
            severity_emoji(worst),
            batch.len(),
            worst.as_str()
        )
    };
    let blocks: Vec<Value> = batch
        .iter()
        .map(|a| json!({"type": "section", "text": {"type": "mrkdwn", "text": alert_line(&a.alert, a.ts)}}))
        .collect();
    json!({ "text": summary, "blocks": blocks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use gemfleet_protocol::{KeyName, ProjectId};
    use uuid::Uuid;

    fn alert(severity: Severity, text: &str) -> Alert {
        Alert {
            severity,
            code: "key_dead".into(),
            text: text.into(),
            key: Some(KeyName::parse("key-1").unwrap()),
            project: Some(ProjectId::parse("proj-a").unwrap()),
            model: None,
            agent: None,
            until: Some(Utc.with_ymd_and_hms(2026, 12, 4, 8, 0, 0).unwrap()),
        }
    }

    #[test]
    fn a_line_names_severity_code_key_project_and_until() {
        let t = Utc.with_ymd_and_hms(2026, 12, 3, 18, 0, 0).unwrap();
        let line = alert_line(&alert(Severity::Critical, "key-1 is dead"), t);
        assert!(
            line.starts_with(":rotating_light: *critical* `key_dead` key-1 is dead"),
            "{line}"
        );
        assert!(
            line.contains("key `key-1`") && line.contains("project `proj-a`"),
            "{line}"
        );
        assert!(line.contains("until <!date^1796371200^"), "{line}");
        assert!(line.contains("2026-12-04 08:00 UTC"), "{line}");
    }

    #[test]
    fn hostile_text_cannot_mention_channels_or_links() {
        let t = Utc::now();
        let line = alert_line(
            &alert(Severity::Info, "<!channel> <https://evil|click> & co"),
            t,
        );
        assert!(
            !line.contains("<!channel>") && !line.contains("<https"),
            "{line}"
        );
        assert!(
            line.contains("&lt;!channel&gt;") && line.contains("&amp; co"),
            "{line}"
        );
    }

    #[test]
    fn a_batch_has_one_block_per_alert_and_summarises_the_worst() {
        let batch: Vec<SpooledAlert> = [Severity::Info, Severity::Security, Severity::Warning]
            .into_iter()
            .enumerate()
            .map(|(i, s)| SpooledAlert {
                seq: i as u64,
                id: Uuid::now_v7(),
                ts: Utc::now(),
                alert: alert(s, "x"),
            })
            .collect();
        let msg = batch_message(&batch);
        assert_eq!(msg["blocks"].as_array().unwrap().len(), 3);
        assert!(
            msg["text"]
                .as_str()
                .unwrap()
                .contains("3 alerts (worst: security)")
        );
    }

    #[test]
    fn long_texts_are_truncated() {
        let long = "x".repeat(10_000);
        let line = alert_line(&alert(Severity::Info, &long), Utc::now());
        assert!(line.chars().count() < 2000);
    }
}
