//! The recorder's MQTT session: options from settings, and the one task that drives the
//! event loop (RUST-STACK.md: one poller, never publish().await from it, resubscribe on
//! every ConnAck, capped backoff on errors, manual acks).

use crate::settings::Settings;
use gemfleet_protocol::filter;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Largest MQTT packet either way: well above the protocol's payload limit, so an oversized
/// payload reaches the decoder (and the dead-letter table) instead of killing the connection.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error("cannot read broker CA file {path}: {source}")]
    Ca {
        path: String,
        source: std::io::Error,
    },
}

pub fn options(s: &Settings) -> Result<MqttOptions, MqttSetupError> {
    let mut o = MqttOptions::new(s.recorder_id.clone(), s.broker.host.clone(), s.broker.port);
    o.set_keep_alive(Duration::from_secs(s.broker.keep_alive_secs.max(1)));
    o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    o.set_manual_acks(true);
    // A persistent session: QoS 1 events queue at the broker while the recorder restarts.
    o.set_clean_session(false);
    o.set_request_channel_capacity(8192);
    o.set_inflight(1000);
    let user = s
        .broker
        .username
        .clone()
        .unwrap_or_else(|| s.recorder_id.clone());
    if let Some(pw) = &s.broker.password {
        o.set_credentials(user, pw.clone());
    }
    if let Some(ca) = &s.broker.tls_ca_file {
        let pem = std::fs::read(ca).map_err(|source| MqttSetupError::Ca {
            path: ca.clone(),
            source,
        })?;
        o.set_transport(rumqttc::Transport::tls(pem, None, None));
    }
    Ok(o)
}

/// Where incoming messages go.
pub enum Inbound {
    Message(Publish),
    /// Keys or limits changed in the database.
    Reload,
    /// The broker has been unreachable this long (sent once per outage).
    BrokerDown(Duration),
}

/// Subscriptions of the recorder.
pub fn subscriptions() -> Vec<rumqttc::SubscribeFilter> {
    [filter::agent_events(), filter::agent_status()]
        .into_iter()
        .chain([filter::agent_context()])
        .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce))
        .collect()
}

/// Drives the event loop until cancelled (then until the disconnect is sent). Context
/// requests go to `context_tx`, everything else to `core_tx`.
pub async fn poll_loop(
    client: AsyncClient,
    mut eventloop: EventLoop,
    core_tx: mpsc::UnboundedSender<Inbound>,
    context_tx: mpsc::UnboundedSender<Publish>,
    connected: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut down_since: Option<std::time::Instant> = None;
    let mut down_reported = false;
    loop {
        // Not cancelled here: after a stop the loop must keep polling so the final acks and
        // the disconnect go out; the disconnect ends it.
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(50);
                down_since = None;
                down_reported = false;
                tracing::info!("connected to the broker");
                if let Err(e) = client.try_subscribe_many(subscriptions()) {
                    tracing::error!("cannot subscribe: {e}");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let is_context = p.topic.ends_with("/context");
                let sent = if is_context {
                    context_tx.send(p).is_ok()
                } else {
                    core_tx.send(Inbound::Message(p)).is_ok()
                };
                if !sent && !stop.is_cancelled() {
                    tracing::warn!("service stopped; message left unacknowledged for redelivery");
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                tracing::info!("disconnected from the broker");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                connected.store(false, Ordering::Relaxed);
                if stop.is_cancelled() {
                    return;
                }
                let since = *down_since.get_or_insert_with(std::time::Instant::now);
                tracing::warn!("broker connection: {e}; retrying in {backoff:?}");
                if !down_reported && since.elapsed() > Duration::from_secs(10) {
                    down_reported = true;
                    let _ = core_tx.send(Inbound::BrokerDown(since.elapsed()));
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
