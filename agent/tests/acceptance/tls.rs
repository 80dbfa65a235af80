//! A remote agent reaches the broker's TLS listener with the CA from `broker.tls_ca_file`
//! (certificates made by broker-config/make-test-ca), and a missing CA file is a clear error.

use gemfleet_agent::daemon;
use gemfleet_agent::settings::Settings as AgentSettings;
use gemfleet_testkit::{Broker, free_port, workspace_root};
use std::time::Duration;

#[tokio::test]
async fn an_agent_connects_over_tls_with_the_ca_file() {
    gemfleet_testkit::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = std::process::Command::new(workspace_root().join("broker-config/make-test-ca"))
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make-test-ca: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tls_port = free_port();
    let p = |f: &str| certs.join(f).display().to_string();
    let broker = Broker::start_with(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
        p("ca.crt"),
        p("server.crt"),
        p("server.key")
    ))
    .await
    .unwrap();

    let mut s = AgentSettings::default();
    s.agent_id = Some("tls-edge".into());
    s.data_dir = Some(dir.path().join("agent"));
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.broker.host = "localhost".into();
    s.broker.port = tls_port;
    s.broker.tls_ca_file = Some(certs.join("ca.crt"));
    let d = daemon::start(s.clone(), false).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !d.shared.mesh.is_connected() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no TLS session; broker log:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.shutdown(Duration::from_millis(200)).await;

    // A CA file that is not there is refused at start, naming the setting.
    let mut bad = s;
    bad.data_dir = Some(dir.path().join("agent-2"));
    bad.broker.tls_ca_file = Some(dir.path().join("nope.crt"));
    let err = match daemon::start(bad, false).await {
        Ok(_) => panic!("started without its CA file"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("broker.tls_ca_file"), "{err}");
}

#[tokio::test]
async fn a_non_loopback_listen_address_is_refused_unless_allowed() {
    gemfleet_testkit::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let mut s = AgentSettings::default();
    s.agent_id = Some("open-edge".into());
    s.data_dir = Some(dir.path().join("agent"));
    s.listen = "0.0.0.0:0".parse().unwrap();
    let err = match daemon::start(s.clone(), false).await {
        Ok(_) => panic!("served the fleet's keys on every interface"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("refusing to listen on 0.0.0.0"), "{err}");
    s.allow_remote_clients = true;
    let d = daemon::start(s, false).await.unwrap();
    assert!(d.addr().ip().is_unspecified());
    d.shutdown(Duration::from_millis(100)).await;
}
