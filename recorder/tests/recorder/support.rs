//! Shared helpers: a migrated database, a private broker, a recorder in this process, and a
//! test agent speaking protocol v1 over a real MQTT connection.

use chrono::{DateTime, Utc};
use gemfleet_protocol::{
    AgentId, AgentStatus, Claim, Envelope, EventKind, KeyName, ModelName, Payload, Presence,
    ProjectId, RequestType, Secret, Topic, filter,
};
use gemfleet_recorder::crypto::MasterKey;
use gemfleet_recorder::settings::Settings;
use gemfleet_recorder::{Clock, Recorder, RunningRecorder, admin};
use gemfleet_testkit::{Broker, TestDb};
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const MODEL: &str = "gemini-2.5-flash";

pub struct Env {
    pub db: TestDb,
    pub broker: Broker,
    pub settings: Settings,
    pub master: MasterKey,
}

pub async fn env() -> Env {
    env_with("").await
}

pub async fn env_with(broker_extra: &str) -> Env {
    gemfleet_testkit::init_crypto();
    let db = TestDb::migrated().await.expect("database");
    let broker = Broker::start_with(broker_extra).await.expect("broker");
    let master = MasterKey::generate();
    let mut settings = Settings {
        database_url: db.url.clone(),
        recorder_id: format!("recorder-{}", &Uuid::new_v4().simple().to_string()[..8]),
        master_key: Some(master.to_base64()),
        minute_seconds: 1.0,
        http_listen: "127.0.0.1:0".parse().unwrap(),
        config_reload_secs: 1,
        max_tick_ms: 20,
        ..Settings::default()
    };
    settings.broker.host = broker.host().to_string();
    settings.broker.port = broker.port();
    Env {
        db,
        broker,
        settings,
        master,
    }
}

impl Env {
    pub async fn start(&self) -> RunningRecorder {
        Recorder::start(self.settings.clone())
            .await
            .expect("recorder starts")
    }
    pub async fn start_with_clock(&self, clock: Arc<dyn Clock>) -> RunningRecorder {
        Recorder::start_with_clock(self.settings.clone(), clock)
            .await
            .expect("recorder starts")
    }

    /// A project with limits for MODEL and keys `names`.
    pub async fn seed(&self, project: &str, limits: &str, keys: &[&str]) {
        let p = ProjectId::parse(project).unwrap();
        admin::add_project(&self.db.pool, &p, gemfleet_gemini::Tier::Free)
            .await
            .unwrap();
        let l = admin::parse_limits(limits).unwrap();
        admin::set_limits(&self.db.pool, &p, &ModelName::parse(MODEL).unwrap(), l)
            .await
            .unwrap();
        for k in keys {
            admin::add_key(
                &self.db.pool,
                &self.master,
                &KeyName::parse(*k).unwrap(),
                &p,
                &Secret::new(format!("AIzaSy-secret-of-{k}-0123456789")),
            )
            .await
            .unwrap();
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Polls `sql` (a count) until it equals `want` or `within` passes.
    pub async fn wait_count(&self, sql: &str, want: i64, within: Duration) -> i64 {
        let end = tokio::time::Instant::now() + within;
        loop {
            let n = self.count(sql).await;
            if n == want || tokio::time::Instant::now() > end {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A test agent: a real MQTT client that publishes envelopes and collects what it receives.
pub struct TestAgent {
    pub id: AgentId,
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    pub task: JoinHandle<()>,
    pub seq: u64,
}

impl TestAgent {
    /// Connects as `id`, with an offline last will, subscribed to its inbox and ack and to
    /// `extra` filters; returns once subscribed.
    pub async fn connect(broker: &Broker, id: &str, extra: &[String]) -> TestAgent {
        let agent = AgentId::parse(id).unwrap();
        let mut opts = broker.mqtt_options(id);
        let will = Envelope::new(
            agent.clone(),
            None,
            Payload::Status(AgentStatus {
                state: Presence::Offline,
                version: "test".into(),
                capabilities: vec![],
                outbox_floor: None,
            }),
        );
        opts.set_last_will(LastWill::new(
            Topic::AgentStatus(agent.clone()).to_string(),
            will.encode().unwrap(),
            QoS::AtLeastOnce,
            true,
        ));
        opts.set_keep_alive(Duration::from_secs(2));
        let (client, mut el) = AsyncClient::new(opts, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = vec![filter::inbox(&agent), filter::ack(&agent)];
        subs.extend(extra.iter().cloned());
        let c2 = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        // One SUBSCRIBE, one SUBACK: retained messages all come after it.
                        let filters = subs
                            .iter()
                            .map(|s| rumqttc::SubscribeFilter::new(s.clone(), QoS::AtLeastOnce));
                        let _ = c2.try_subscribe_many(filters);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = tx.send(("$suback".to_string(), vec![]));
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let mut a = TestAgent {
            id: agent,
            client,
            rx,
            task,
            seq: 0,
        };
        a.raw_next(Duration::from_secs(5), |t, _| t == "$suback")
            .await
            .expect("suback");
        a
    }

    pub async fn publish_raw(&self, topic: &str, bytes: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, bytes)
            .await
            .unwrap();
    }

    /// Publishes an outbox event (next seq) stamped `ts`.
    pub async fn send_at(&mut self, payload: Payload, ts: DateTime<Utc>) -> Envelope {
        self.seq += 1;
        let kind = EventKind::parse(payload.kind()).expect("an event kind");
        let env = Envelope::at(self.id.clone(), Some(self.seq), payload, ts);
        let topic = Topic::AgentEvent(self.id.clone(), kind).to_string();
        self.publish_raw(&topic, env.encode().unwrap()).await;
        env
    }

    pub async fn send(&mut self, payload: Payload) -> Envelope {
        self.send_at(payload, Utc::now()).await
    }

    pub async fn online(&self, outbox_floor: Option<u64>) {
        let env = Envelope::new(
            self.id.clone(),
            None,
            Payload::Status(AgentStatus {
                state: Presence::Online,
                version: "test".into(),
                capabilities: vec![],
                outbox_floor,
            }),
        );
        self.client
            .publish(
                Topic::AgentStatus(self.id.clone()).to_string(),
                QoS::AtLeastOnce,
                true,
                env.encode().unwrap(),
            )
            .await
            .unwrap();
    }

    async fn raw_next(
        &mut self,
        within: Duration,
        mut pred: impl FnMut(&str, &[u8]) -> bool,
    ) -> Option<(String, Vec<u8>)> {
        let end = tokio::time::Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some((t, b))) if pred(&t, &b) => return Some((t, b)),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// The next envelope on a topic ending with `suffix` whose payload passes `pred`.
    pub async fn next(
        &mut self,
        suffix: &str,
        within: Duration,
        mut pred: impl FnMut(&Payload) -> bool,
    ) -> Option<(String, Envelope)> {
        let end = tokio::time::Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            let (t, b) = self.raw_next(left, |t, _| t.ends_with(suffix)).await?;
            if b.is_empty() {
                continue;
            }
            if let Ok(env) = Envelope::decode(&b)
                && pred(&env.payload)
            {
                return Some((t, env));
            }
        }
    }
}

pub fn claim(tokens: u64, max_wait_ms: u64) -> Claim {
    Claim {
        claim_id: Uuid::now_v7(),
        model: ModelName::parse(MODEL).unwrap(),
        est_input_tokens: tokens,
        task_id: None,
        avoid_keys: vec![],
        max_wait_ms,
        request_type: RequestType::Stream,
    }
}
