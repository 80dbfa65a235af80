use std::time::Duration;

use gemfleet_testkit::mqtt::{next_publish, wait_connack, wait_puback, wait_suback};
use gemfleet_testkit::{Broker, MAX_PACKET_BYTES};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, Packet, QoS};
use tokio::time::{Instant, sleep, timeout};

const WAIT: Duration = Duration::from_secs(10);

async fn connect(broker: &Broker, id: &str) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(broker.mqtt_options(id), 16);
    let ack = wait_connack(&mut eventloop, WAIT).await.unwrap();
    assert_eq!(ack.code, ConnectReturnCode::Success);
    (client, eventloop)
}

async fn publish_retained(broker: &Broker, topic: &str, payload: &[u8]) {
    let (client, mut eventloop) = connect(broker, "publisher").await;
    client
        .publish(topic, QoS::AtLeastOnce, true, payload.to_vec())
        .await
        .unwrap();
    wait_puback(&mut eventloop, WAIT).await.unwrap();
    client.disconnect().await.unwrap();
}

async fn read_retained(broker: &Broker, id: &str, topic: &str) -> rumqttc::Publish {
    let (client, mut eventloop) = connect(broker, id).await;
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    next_publish(&mut eventloop, WAIT).await.unwrap()
}

#[tokio::test]
async fn retained_message_reaches_a_second_client() {
    let broker = Broker::start().await.unwrap();
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port()));

    publish_retained(
        &broker,
        "gemfleet/v1/keys/k1/state",
        b"{\"state\":\"active\"}",
    )
    .await;
    let got = read_retained(&broker, "reader", "gemfleet/v1/keys/+/state").await;

    assert_eq!(got.topic, "gemfleet/v1/keys/k1/state");
    assert_eq!(&got.payload[..], b"{\"state\":\"active\"}");
    assert!(
        got.retain,
        "a late subscriber sees the message flagged as retained"
    );
    assert!(
        broker.log().contains("mosquitto version"),
        "{}",
        broker.log()
    );
}

#[tokio::test]
async fn messages_up_to_the_packet_limit_pass_both_ways() {
    let broker = Broker::start().await.unwrap();
    // 300 KiB: far beyond rumqttc's 10 KiB default, within the kit's 1 MiB limit.
    let big = vec![b'x'; 300 * 1024];
    assert!(big.len() < MAX_PACKET_BYTES);
    publish_retained(&broker, "t/big", &big).await;
    let got = read_retained(&broker, "reader", "t/big").await;
    assert_eq!(got.payload.len(), big.len());
}

/// The reconnect loop an agent runs: keep polling, back off on errors, resume on ConnAck.
#[tokio::test]
async fn restart_keeps_port_and_data_and_the_client_reconnects() {
    let mut broker = Broker::start().await.unwrap();
    let port = broker.port();
    publish_retained(&broker, "t/persisted", b"before restart").await;

    let (client, mut eventloop) = connect(&broker, "survivor").await;
    broker.restart().await.unwrap();
    assert_eq!(broker.port(), port);

    let mut errors = 0;
    let mut backoff = Duration::from_millis(50);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "no reconnect; log:\n{}",
            broker.log()
        );
        match timeout(WAIT, eventloop.poll()).await.expect("poll hung") {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                break;
            }
            Ok(_) => {}
            Err(_) => {
                errors += 1;
                sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
    assert!(
        errors > 0,
        "the client must have seen the old connection drop"
    );

    // The reconnected session works, and the graceful restart kept the persisted retained message.
    client
        .subscribe("t/persisted", QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = next_publish(&mut eventloop, WAIT).await.unwrap();
    assert_eq!(&got.payload[..], b"before restart");
}

#[tokio::test]
async fn killed_broker_refuses_connections_until_restarted() {
    let mut broker = Broker::start().await.unwrap();
    broker.kill().await.unwrap();
    assert!(!broker.is_running());
    assert!(
        tokio::net::TcpStream::connect((broker.host(), broker.port()))
            .await
            .is_err()
    );

    broker.restart().await.unwrap();
    connect(&broker, "after-kill").await;
}

#[tokio::test]
async fn paused_broker_answers_only_after_resume() {
    let broker = Broker::start().await.unwrap();
    let (client, mut eventloop) = connect(&broker, "watcher").await;
    client
        .subscribe("t/paused", QoS::AtLeastOnce)
        .await
        .unwrap();
    wait_suback(&mut eventloop, WAIT).await.unwrap();

    broker.pause().unwrap();
    // The kernel still accepts the TCP connection, but a frozen broker cannot send a ConnAck.
    let (_late, mut late_loop) = AsyncClient::new(broker.mqtt_options("late"), 16);
    assert!(
        wait_connack(&mut late_loop, Duration::from_millis(700))
            .await
            .is_err()
    );

    broker.resume().unwrap();
    let ack = wait_connack(&mut late_loop, WAIT).await.unwrap();
    assert_eq!(ack.code, ConnectReturnCode::Success);
    // The first client's session survived the pause.
    client
        .publish("t/paused", QoS::AtLeastOnce, false, "hi")
        .await
        .unwrap();
    let got = next_publish(&mut eventloop, WAIT).await.unwrap();
    assert_eq!(&got.payload[..], b"hi");
}

#[tokio::test]
async fn extra_config_enables_password_authentication() {
    // The password file must exist before mosquitto reads its config: create it in a dir of
    // our own, then point the broker at it.
    let auth = tempfile::tempdir().unwrap();
    let pw = auth.path().join("passwd");
    let status = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&pw)
        .args(["agent-1", "s3cret"])
        .status()
        .expect("mosquitto_passwd (package mosquitto) must be installed");
    assert!(status.success());

    let extra = format!("allow_anonymous false\npassword_file {}\n", pw.display());
    let broker = Broker::start_with(&extra).await.unwrap();

    let (_anon, mut anon_loop) = AsyncClient::new(broker.mqtt_options("anonymous"), 16);
    let refused = wait_connack(&mut anon_loop, WAIT).await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("NotAuthorized"),
        "{refused:#}"
    );

    let mut options = broker.mqtt_options("agent-1");
    options.set_credentials("agent-1", "s3cret");
    let (_ok, mut ok_loop) = AsyncClient::new(options, 16);
    assert_eq!(
        wait_connack(&mut ok_loop, WAIT).await.unwrap().code,
        ConnectReturnCode::Success
    );
}

#[tokio::test]
async fn extra_listeners_replace_the_default_one() {
    let second = gemfleet_testkit::free_port();
    let extra = format!("listener {{port}} 127.0.0.1\nlistener {second} 127.0.0.1\n");
    let broker = Broker::start_with(&extra).await.unwrap();
    assert_ne!(broker.port(), second);
    connect(&broker, "first").await;
    let options = rumqttc::MqttOptions::new("second", "127.0.0.1", second);
    let (_c, mut eventloop) = AsyncClient::new(options, 16);
    assert_eq!(
        wait_connack(&mut eventloop, WAIT).await.unwrap().code,
        ConnectReturnCode::Success
    );
}

#[tokio::test]
async fn a_broken_config_fails_with_mosquittos_own_message() {
    let err = Broker::start_with("no_such_option 1").await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("no_such_option"), "{text}");
}
