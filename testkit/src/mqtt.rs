//! Small rumqttc helpers for tests: drive an event loop until the event a test waits for.
//!
//! Each helper polls the event loop itself, so a test needs no background task; every wait is
//! bounded, and a timeout is an error naming what was awaited.

use std::time::Duration;

use anyhow::{anyhow, bail};
use rumqttc::{ConnAck, Event, EventLoop, Packet, Publish};
use tokio::time::{Instant, timeout_at};

/// Polls until the broker's ConnAck, failing on a connection error or after `within`.
pub async fn wait_connack(eventloop: &mut EventLoop, within: Duration) -> anyhow::Result<ConnAck> {
    let deadline = Instant::now() + within;
    loop {
        match poll_until(eventloop, deadline, "ConnAck").await? {
            Event::Incoming(Packet::ConnAck(ack)) => return Ok(ack),
            _ => continue,
        }
    }
}

/// Polls until the next incoming Publish, failing on a connection error or after `within`.
pub async fn next_publish(eventloop: &mut EventLoop, within: Duration) -> anyhow::Result<Publish> {
    let deadline = Instant::now() + within;
    loop {
        match poll_until(eventloop, deadline, "an incoming publish").await? {
            Event::Incoming(Packet::Publish(publish)) => return Ok(publish),
            _ => continue,
        }
    }
}

/// Polls until the broker acknowledges subscription requests (SubAck), or fails after `within`.
pub async fn wait_suback(eventloop: &mut EventLoop, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        match poll_until(eventloop, deadline, "SubAck").await? {
            Event::Incoming(Packet::SubAck(_)) => return Ok(()),
            _ => continue,
        }
    }
}

/// Polls until the broker acknowledges a QoS 1 publish (PubAck), or fails after `within`.
pub async fn wait_puback(eventloop: &mut EventLoop, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        match poll_until(eventloop, deadline, "PubAck").await? {
            Event::Incoming(Packet::PubAck(_)) => return Ok(()),
            _ => continue,
        }
    }
}

async fn poll_until(
    eventloop: &mut EventLoop,
    deadline: Instant,
    what: &str,
) -> anyhow::Result<Event> {
    match timeout_at(deadline, eventloop.poll()).await {
        Ok(Ok(event)) => Ok(event),
        Ok(Err(e)) => Err(anyhow!(
            "MQTT connection error while waiting for {what}: {e}"
        )),
        Err(_) => bail!("timed out waiting for {what}"),
    }
}
