//! The live view of a fleet from the broker, as an operator's `mosquitto_sub` would see it:
//! retained key states, quota-group states and agents' presence.

use gemfleet_protocol::{Envelope, GroupCondition, KeyCondition, Payload, Presence, Topic};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the watcher has seen so far.
#[derive(Debug, Default, Clone)]
pub struct View {
    /// Disabled keys and why.
    pub cold_keys: BTreeMap<String, String>,
    /// Quota groups not open, as `project/model` → state.
    pub cold_groups: BTreeMap<String, String>,
    pub agents_online: BTreeMap<String, bool>,
    pub alerts: Vec<String>,
}

/// Subscribes to the fleet's retained states and alerts; the view updates in the background
/// until the returned client is dropped (and its task with it).
pub async fn start(
    host: &str,
    port: u16,
) -> anyhow::Result<(Arc<Mutex<View>>, tokio::task::JoinHandle<()>)> {
    let mut opts = rumqttc::MqttOptions::new(format!("watch-{}", std::process::id()), host, port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let view = Arc::new(Mutex::new(View::default()));
    let v = view.clone();
    let task = tokio::spawn(async move {
        let topics = [
            gemfleet_protocol::filter::key_states(),
            gemfleet_protocol::filter::quota_states(),
            gemfleet_protocol::filter::agent_status(),
            gemfleet_protocol::filter::alerts(),
        ];
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for t in &topics {
                        let _ = client.try_subscribe(t.clone(), QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(mut view) = v.lock() {
                        apply(&mut view, &p.topic, &p.payload);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    });
    Ok((view, task))
}

fn apply(view: &mut View, topic: &str, payload: &[u8]) {
    let Ok(topic) = Topic::parse(topic) else {
        return;
    };
    if payload.is_empty() {
        return;
    }
    let Ok(env) = Envelope::decode(payload) else {
        return;
    };
    match (topic, env.payload) {
        (Topic::KeyState(k), Payload::KeyState(s)) => {
            if s.state == KeyCondition::Disabled {
                view.cold_keys
                    .insert(k.to_string(), s.reason.unwrap_or_default());
            } else {
                view.cold_keys.remove(k.as_str());
            }
        }
        (Topic::QuotaState(p, m), Payload::QuotaState(s)) => {
            let name = format!("{p}/{m}");
            let state = match s.state {
                GroupCondition::Open => None,
                GroupCondition::Cooling => Some("cooling"),
                GroupCondition::Exhausted => Some("exhausted"),
                GroupCondition::NoQuota => Some("no quota"),
            };
            match state {
                Some(st) => view.cold_groups.insert(name, st.to_string()),
                None => view.cold_groups.remove(&name),
            };
        }
        (Topic::AgentStatus(a), Payload::Status(s)) => {
            view.agents_online
                .insert(a.to_string(), s.state == Presence::Online);
        }
        (Topic::Alert(sev), Payload::Alert(a)) => {
            view.alerts.push(format!("[{}] {}", sev.as_str(), a.text));
        }
        _ => {}
    }
}
