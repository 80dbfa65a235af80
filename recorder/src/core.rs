//! The core loop: ingest batches, arbiter IO, notices, alerts, timers and the daily reset.
//! See [`crate::service`] for the commit-then-ack-then-publish order it keeps.

use crate::arbiter::{Arbiter, Decision, GrantOutcome, GroupId, PendingClaim};
use crate::clock::Clock;
use crate::crypto::MasterKey;
use crate::intake::{self, Intake};
use crate::metrics_names as m;
use crate::mqtt::Inbound;
use crate::policy::{self, AlertSpec, ProjectState};
use crate::service::Health;
use crate::settings::Settings;
use crate::store::{self, BatchWrite, ClaimRow, CloseRow, EventRow, Fleet, to_i64};
use crate::watermark::Watermark;
use chrono::{DateTime, NaiveDate, Utc};
use gemfleet_gemini::{Tier, pacific};
use gemfleet_protocol::{
    Ack, AgentId, Alert, Denial, DenialReason, Envelope, Grant, GroupCondition, KeyCondition,
    KeyName, KeyState, ModelName, Payload, Presence, ProjectId, QuotaState, Severity, Topic,
};
use rumqttc::{AsyncClient, Publish, QoS};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A message to publish after the commit.
struct Out {
    topic: String,
    retain: bool,
    payload: Vec<u8>,
}

pub struct Core {
    settings: Settings,
    clock: Arc<dyn Clock>,
    pool: PgPool,
    master: MasterKey,
    client: AsyncClient,
    me: AgentId,
    arbiter: Arbiter,
    fleet: Fleet,
    watermarks: HashMap<AgentId, Watermark>,
    last_reset_day: Option<NaiveDate>,
    last_dead_letter_alert: Option<Instant>,
    db_down_reported: bool,
    health: Arc<Health>,
}

/// The outputs of one batch, applied after its commit.
#[derive(Default)]
struct Turn {
    w: BatchWrite,
    out: Vec<Out>,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        clock: Arc<dyn Clock>,
        pool: PgPool,
        master: MasterKey,
        client: AsyncClient,
        me: AgentId,
        arbiter: Arbiter,
        health: Arc<Health>,
    ) -> Self {
        Core {
            settings,
            clock,
            pool,
            master,
            client,
            me,
            arbiter,
            fleet: Fleet::default(),
            watermarks: HashMap::new(),
            last_reset_day: None,
            last_dead_letter_alert: None,
            db_down_reported: false,
            health,
        }
    }

    /// (Re)builds every piece of in-memory state from the database: the restart path and
    /// the recovery path after a failed transaction are the same.
    pub async fn load(&mut self) -> Result<(), sqlx::Error> {
        let now = self.clock.now();
        let fleet = store::load_fleet(&self.pool, &self.master).await?;
        self.arbiter = Arbiter::new(self.arbiter.settings());
        self.arbiter.configure(fleet.arbiter.clone(), now);
        // Everything that can still count: the sliding minute and the Pacific day so far.
        let since = (now - self.arbiter.settings().minute)
            .min(pacific::start_of(pacific::day_of(now)))
            .min(now - self.arbiter.settings().lease);
        let grants = store::load_grants(&self.pool, since).await?;
        self.arbiter.restore_grants(grants, now);
        for c in store::load_queued(&self.pool).await? {
            self.arbiter.restore_queued(c);
        }
        self.fleet = fleet;
        self.watermarks = store::load_watermarks(&self.pool).await?;
        self.last_reset_day = store::last_reset_day(&self.pool).await?;
        self.health.database_ok.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Inbound>, stop: CancellationToken) {
        // Every state is published retained at start, so late subscribers and agents that
        // missed a change see the truth.
        self.publish_all_states().await;
        loop {
            let now = self.clock.now();
            let wake = self.arbiter.next_wake(now);
            let wait = (wake - now)
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_millis(self.settings.max_tick_ms));
            let mut msgs = Vec::new();
            let mut reload = false;
            let mut broker_down = None;
            tokio::select! {
                first = rx.recv() => {
                    let Some(first) = first else { break };
                    let mut next = Some(first);
                    while let Some(item) = next {
                        match item {
                            Inbound::Message(p) => msgs.push(p),
                            Inbound::Reload => reload = true,
                            Inbound::BrokerDown(d) => broker_down = Some(d),
                        }
                        if msgs.len() >= self.settings.batch_max {
                            break;
                        }
                        next = rx.try_recv().ok();
                    }
                }
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => break,
            }
            if reload {
                self.reload().await;
            }
            self.turn(msgs, broker_down, &stop).await;
        }
        tracing::info!("core loop stopped");
    }

    /// One batch (possibly empty: timers only), retried until it commits or we stop. A batch
    /// the database refuses for its data (not for being down) is split: each message alone,
    /// and the one still refused is dead-lettered, so one bad row can never stall ingest.
    async fn turn(
        &mut self,
        msgs: Vec<Publish>,
        broker_down: Option<Duration>,
        stop: &CancellationToken,
    ) {
        if let Some(err) = self.commit_turn(&msgs, broker_down, stop).await {
            tracing::warn!(
                "batch refused by the database ({err}); retrying its messages one by one"
            );
            for m in &msgs {
                if let Some(err) = self.commit_turn(std::slice::from_ref(m), None, stop).await {
                    self.dead_letter_alone(m, &err).await;
                }
            }
        }
    }

    /// Commits one batch, then acks and publishes. Returns the error text when the database
    /// refused the data itself (SQLSTATE class 22 or 23); retries everything else.
    async fn commit_turn(
        &mut self,
        msgs: &[Publish],
        broker_down: Option<Duration>,
        stop: &CancellationToken,
    ) -> Option<String> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            match self.try_turn(msgs, broker_down).await {
                Ok(turn) => {
                    if self.db_down_reported {
                        self.db_down_reported = false;
                        tracing::info!("database reachable again");
                    }
                    metrics::counter!(m::BATCHES).increment(1);
                    metrics::histogram!(m::BATCH_SECONDS).record(started.elapsed().as_secs_f64());
                    // Acknowledge only now that the transaction committed.
                    for p in msgs {
                        if let Err(e) = self.client.ack(p).await {
                            tracing::warn!("cannot ack: {e}");
                        }
                    }
                    for o in turn.out {
                        let qos = QoS::AtLeastOnce;
                        if let Err(e) = self.client.publish(o.topic, qos, o.retain, o.payload).await
                        {
                            tracing::warn!("cannot publish: {e}");
                        }
                    }
                    metrics::gauge!(m::OPEN_GRANTS).set(self.arbiter.open_grants() as f64);
                    metrics::gauge!(m::QUEUED).set(self.arbiter.queued() as f64);
                    return None;
                }
                Err(e) => {
                    metrics::counter!(m::DB_ERRORS).increment(1);
                    // Undo the in-memory effects of the failed batch first.
                    let data_error = refused_data(&e);
                    if data_error {
                        if let Err(e) = self.load().await {
                            tracing::error!("cannot reload state: {e}");
                        }
                        return Some(short(&e.to_string()));
                    }
                    self.health.database_ok.store(false, Ordering::Relaxed);
                    tracing::error!("batch of {} messages not committed: {e}", msgs.len());
                    if !self.db_down_reported {
                        self.db_down_reported = true;
                        self.publish_alert_only(AlertSpec {
                            severity: Severity::Critical,
                            code: "database_unreachable",
                            text: format!(
                                "the recorder cannot write to PostgreSQL: {}",
                                short(&e.to_string())
                            ),
                            until: None,
                        })
                        .await;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return None,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if let Err(e) = self.load().await {
                        tracing::error!("cannot reload state: {e}");
                    }
                }
            }
        }
    }

    /// Stores a message the database refused as a dead letter, then acks it.
    async fn dead_letter_alone(&mut self, p: &Publish, err: &str) {
        metrics::counter!(m::DEAD_LETTERS, "reason" => "database_rejected").increment(1);
        let dl = crate::dead_letter::DeadLetter::new(
            &p.topic,
            None,
            "database_rejected",
            err.to_string(),
            &p.payload,
        );
        let mut w = BatchWrite::default();
        w.dead_letters.push(dl);
        let stored = async {
            let mut tx = self.pool.begin().await?;
            w.write(&mut tx).await?;
            tx.commit().await
        }
        .await;
        match stored {
            Ok(()) => {
                if let Err(e) = self.client.ack(p).await {
                    tracing::warn!("cannot ack: {e}");
                }
            }
            // Left unacknowledged: the broker redelivers it after a reconnect.
            Err(e) => tracing::error!("cannot store dead letter: {e}"),
        }
    }

    async fn try_turn(
        &mut self,
        msgs: &[Publish],
        broker_down: Option<Duration>,
    ) -> Result<Turn, sqlx::Error> {
        let now = self.clock.now();
        let mut turn = Turn::default();
        let mut items = Vec::with_capacity(msgs.len());
        let mut rows = Vec::with_capacity(msgs.len());
        for p in msgs {
            match intake::decode(&p.topic, &p.payload) {
                Ok(item) => {
                    let env = match &item {
                        Intake::Event(e) | Intake::Status(e) => e,
                    };
                    rows.push(EventRow {
                        event_id: env.id,
                        agent: env.agent.to_string(),
                        seq: env.seq.map(to_i64),
                        kind: env.payload.kind(),
                        ts: env.ts,
                        body: String::from_utf8_lossy(&p.payload).into_owned(),
                    });
                    items.push(item);
                }
                Err(dl) if dl.reason == "empty" => {}
                Err(dl) => {
                    metrics::counter!(m::DEAD_LETTERS, "reason" => dl.reason).increment(1);
                    tracing::warn!(topic = %dl.topic, reason = dl.reason, "dead letter: {}", dl.detail);
                    let alert_due = self.last_dead_letter_alert.is_none_or(|t| {
                        t.elapsed().as_secs() >= self.settings.dead_letter_alert_secs
                    });
                    if alert_due {
                        self.last_dead_letter_alert = Some(Instant::now());
                        let agent = dl.agent_id.as_deref().and_then(|a| AgentId::parse(a).ok());
                        self.alert(
                            &mut turn,
                            AlertSpec {
                                severity: Severity::Warning,
                                code: "dead_letter",
                                text: format!(
                                    "refused input on {} ({}): {}",
                                    dl.topic,
                                    dl.reason,
                                    short(&dl.detail)
                                ),
                                until: None,
                            },
                            Subject {
                                agent,
                                ..Default::default()
                            },
                        );
                    }
                    turn.w.dead_letters.push(*dl);
                }
            }
        }
        if let Some(d) = broker_down {
            self.alert(
                &mut turn,
                AlertSpec {
                    severity: Severity::Critical,
                    code: "broker_unreachable",
                    text: format!(
                        "the recorder could not reach the MQTT broker for {}s",
                        d.as_secs()
                    ),
                    until: None,
                },
                Subject::default(),
            );
        }

        let mut tx = self.pool.begin().await?;
        let mut new_ids = store::insert_events(&mut tx, &rows).await?;
        // Claims already decided (a redelivery, or the same claim id in a new envelope) are
        // answered again from the table, never arbitrated twice.
        let claim_ids: Vec<Uuid> = items
            .iter()
            .filter_map(|i| match i {
                Intake::Event(Envelope {
                    payload: Payload::Claim(c),
                    ..
                }) => Some(c.claim_id),
                _ => None,
            })
            .collect();
        let stored = store::stored_claims(&mut tx, &claim_ids).await?;
        let mut decisions = Vec::new();
        let mut touched_agents = HashSet::new();
        for item in items {
            match item {
                Intake::Event(env) => {
                    metrics::counter!(m::EVENTS, "kind" => env.payload.kind()).increment(1);
                    if let Some(seq) = env.seq {
                        let wm = self.watermarks.entry(env.agent.clone()).or_default();
                        if wm.committed(seq) {
                            touched_agents.insert(env.agent.clone());
                        }
                    }
                    // `remove`: a second copy of the same event in this batch is a duplicate too.
                    let is_new = new_ids.remove(&env.id);
                    let decided = match &env.payload {
                        Payload::Claim(c) => stored.get(&c.claim_id),
                        _ => None,
                    };
                    if let Some(s) = decided {
                        if !is_new {
                            metrics::counter!(m::DUPLICATES).increment(1);
                        }
                        self.resend(&env.agent, s, &mut turn);
                    } else if is_new {
                        self.apply_event(env, now, &mut turn, &mut decisions);
                    } else {
                        metrics::counter!(m::DUPLICATES).increment(1);
                    }
                }
                Intake::Status(env) => {
                    if new_ids.remove(&env.id) {
                        self.apply_status(env, now, &mut turn, &mut decisions, &mut touched_agents);
                    }
                }
            }
        }
        self.arbiter.tick(now, &mut decisions);
        for d in decisions {
            self.apply_decision(d, now, &mut turn);
        }
        let today = pacific::day_of(now);
        if self.last_reset_day != Some(today) {
            turn.w.daily_reset = Some(today);
            tracing::info!(%today, "daily reset (midnight America/Los_Angeles)");
        }
        for agent in touched_agents {
            if let Some(wm) = self.watermarks.get(&agent) {
                turn.w
                    .watermarks
                    .insert(agent.to_string(), to_i64(wm.get()));
                let ack = Payload::Ack(Ack {
                    watermark: wm.get(),
                });
                self.push(&mut turn, Topic::Ack(agent), ack);
            }
        }
        turn.w.write(&mut tx).await?;
        tx.commit().await?;
        if let Some(day) = turn.w.daily_reset {
            self.last_reset_day = Some(day);
        }
        self.health.database_ok.store(true, Ordering::Relaxed);
        Ok(turn)
    }

    fn apply_event(
        &mut self,
        env: Envelope,
        now: DateTime<Utc>,
        turn: &mut Turn,
        decisions: &mut Vec<Decision>,
    ) {
        let agent = env.agent.clone();
        match env.payload {
            Payload::Claim(c) => {
                let deadline =
                    env.ts + chrono::Duration::milliseconds(c.max_wait_ms.min(86_400_000) as i64);
                self.arbiter.claim(
                    PendingClaim {
                        claim_id: c.claim_id,
                        agent,
                        model: c.model,
                        est_input_tokens: c.est_input_tokens,
                        task_id: c.task_id,
                        avoid_keys: c.avoid_keys,
                        request_type: c.request_type,
                        claimed_at: env.ts,
                        deadline,
                        received_at: now,
                    },
                    now,
                    decisions,
                );
            }
            Payload::Release(r) => self.arbiter.release(r.claim_id, now, decisions),
            Payload::Usage(u) => {
                turn.w
                    .key_used(u.key.as_str(), 1, to_i64(u.tokens.total), env.ts);
                turn.w.usage.push(store::UsageRow {
                    event_id: env.id,
                    key_name: u.key.to_string(),
                    task_id: u.task_id.as_ref().map(|t| t.to_string()),
                    ts: env.ts,
                    token_count: to_i64(u.tokens.total),
                    request_type: u.request_type.as_str(),
                    agent_id: agent.to_string(),
                    project_id: u.project.to_string(),
                    model: u.model.to_string(),
                    claim_id: u.claim_id,
                    grant_id: u.grant_id,
                    http_status: i32::from(u.http_status),
                    prompt: to_i64(u.tokens.prompt),
                    cached: to_i64(u.tokens.cached),
                    candidates: to_i64(u.tokens.candidates),
                    thoughts: to_i64(u.tokens.thoughts),
                    tool_prompt: to_i64(u.tokens.tool_prompt),
                    complete: u.complete,
                    latency_ms: to_i64(u.latency_ms),
                });
                self.arbiter
                    .used(u.claim_id, u.tokens.prompt, now, decisions);
            }
            Payload::Throttle(t) => {
                metrics::counter!(m::THROTTLES, "class" => t.classification.class.as_str())
                    .increment(1);
                turn.w.key_used(t.key.as_str(), 1, 0, env.ts);
                self.arbiter.failed(t.claim_id, now, decisions);
                self.apply_throttle(&t, env.ts, now, turn);
                turn.w.throttles.push(store::ThrottleRow {
                    event_id: env.id,
                    ts: env.ts,
                    agent_id: agent.to_string(),
                    throttle: t,
                });
            }
            Payload::Task(t) => turn.w.tasks.push(store::TaskRow {
                agent_id: agent.to_string(),
                ts: env.ts,
                event: t,
            }),
            _ => {}
        }
    }

    fn apply_throttle(
        &mut self,
        t: &gemfleet_protocol::Throttle,
        ts: DateTime<Utc>,
        now: DateTime<Utc>,
        turn: &mut Turn,
    ) {
        let group = GroupId {
            project: t.project.clone(),
            model: t.model.clone(),
        };
        let tier = self
            .fleet
            .tiers
            .get(&t.project)
            .copied()
            .unwrap_or(Tier::Free);
        let floor = chrono::Duration::milliseconds(self.settings.cooldown_floor_ms as i64);
        let e = policy::effects(t, ts, now, self.arbiter.limits(&group), tier, floor);
        let subject = Subject {
            key: Some(t.key.clone()),
            project: Some(t.project.clone()),
            model: Some(t.model.clone()),
            agent: None,
        };
        if let Some(l) = e.limits {
            self.arbiter.set_limits(&group, l);
            turn.w.limits.push((group.clone(), l));
        }
        if let Some(tier) = e.tier {
            self.fleet.tiers.insert(t.project.clone(), tier);
            turn.w.tiers.push((
                t.project.to_string(),
                if tier == Tier::Paid { "paid" } else { "free" },
            ));
        }
        let mut became_cold = false;
        if let Some((cond, until, dim, reason)) = e.group {
            // Never shorten a longer cold state (e.g. a cooldown after the day is exhausted).
            let current = self.arbiter.condition(&group);
            let keep = matches!(current, Some((GroupCondition::Exhausted | GroupCondition::NoQuota, u)) if cond == GroupCondition::Cooling && u.is_none_or(|u| until.is_some_and(|n| u > n)));
            if current.is_some() && !keep {
                self.arbiter.set_condition(&group, cond, until);
                let dim_s = dim
                    .and_then(|d| serde_json::to_value(d).ok())
                    .and_then(|v| v.as_str().map(str::to_string));
                self.fleet
                    .group_notes
                    .insert(group.clone(), (Some(reason.clone()), dim_s.clone()));
                turn.w.group_states.push(store::GroupStateRow {
                    group: group.clone(),
                    condition: cond,
                    until,
                    dimension: dim_s,
                    reason: Some(reason.clone()),
                });
                let state = Payload::QuotaState(QuotaState {
                    project: group.project.clone(),
                    model: group.model.clone(),
                    state: cond,
                    until,
                    dimension: dim,
                    reason: Some(reason),
                });
                self.push(
                    turn,
                    Topic::QuotaState(group.project.clone(), group.model.clone()),
                    state,
                );
                metrics::counter!(m::GROUPS, "state" => store::condition_str(cond)).increment(1);
                became_cold = true;
            }
        }
        if e.keys_exhausted {
            turn.w.keys_exhausted.push(t.project.to_string());
        }
        if let Some(reason) = e.disable_key {
            self.disable_key(&t.key, &reason, turn);
            turn.w.key_disables.push((t.key.to_string(), reason));
        }
        if let Some((state, reason)) = e.project {
            self.arbiter.mark_project_unusable(&t.project);
            turn.w
                .project_states
                .push((t.project.to_string(), state.as_str(), reason.clone()));
            if state == ProjectState::Dead {
                let keys: Vec<KeyName> = self
                    .fleet
                    .keys
                    .iter()
                    .filter(|(_, r)| r.project == t.project && r.active)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in keys {
                    self.disable_key(&k, &format!("project dead: {reason}"), turn);
                }
            }
            became_cold = true;
        }
        for a in e.alerts {
            self.alert(turn, a, subject.clone());
        }
        if became_cold && self.arbiter.model_all_cold(&t.model) {
            self.alert(
                turn,
                AlertSpec {
                    severity: Severity::Critical,
                    code: "model_exhausted",
                    text: format!("every quota group serving model {} is cold", t.model),
                    until: None,
                },
                Subject {
                    model: Some(t.model.clone()),
                    ..Default::default()
                },
            );
        }
    }

    fn disable_key(&mut self, key: &KeyName, reason: &str, turn: &mut Turn) {
        self.arbiter.set_key_active(key, false);
        if let Some(rec) = self.fleet.keys.get_mut(key) {
            rec.active = false;
            rec.reason = Some(reason.to_string());
            let state = Payload::KeyState(KeyState {
                key: key.clone(),
                fingerprint: rec.fingerprint.clone(),
                project: rec.project.clone(),
                state: KeyCondition::Disabled,
                reason: Some(reason.to_string()),
                until: None,
            });
            self.push(turn, Topic::KeyState(key.clone()), state);
        }
    }

    fn apply_status(
        &mut self,
        env: Envelope,
        now: DateTime<Utc>,
        turn: &mut Turn,
        decisions: &mut Vec<Decision>,
        touched: &mut HashSet<AgentId>,
    ) {
        let Payload::Status(s) = env.payload else {
            return;
        };
        match s.state {
            Presence::Online => {
                turn.w
                    .presence
                    .insert(env.agent.to_string(), ("online", Some(s.version)));
                let wm = self.watermarks.entry(env.agent.clone()).or_default();
                if let Some(floor) = s.outbox_floor {
                    wm.floor(floor);
                }
                // Always answer an online status with the current watermark.
                touched.insert(env.agent.clone());
            }
            Presence::Offline => {
                turn.w
                    .presence
                    .insert(env.agent.to_string(), ("offline", None));
                let n = self.arbiter.agent_offline(&env.agent, now, decisions);
                if n > 0 {
                    self.alert(
                        turn,
                        AlertSpec {
                            severity: Severity::Warning,
                            code: "agent_offline_with_grants",
                            text: format!(
                                "agent {} went offline with {n} open grant(s); closed as abandoned (they still count)",
                                env.agent
                            ),
                            until: None,
                        },
                        Subject { agent: Some(env.agent.clone()), ..Default::default() },
                    );
                }
            }
        }
    }

    fn apply_decision(&mut self, d: Decision, now: DateTime<Utc>, turn: &mut Turn) {
        match d {
            Decision::Granted(g) => {
                metrics::counter!(m::CLAIMS, "outcome" => "granted").increment(1);
                let waited = (g.granted_at - g.claim.received_at)
                    .to_std()
                    .unwrap_or_default();
                metrics::histogram!(m::CLAIM_WAIT).record(waited.as_secs_f64());
                // api_keys.last_used follows usage reports (one statement fewer per grant
                // batch); the arbiter's own LRU order is in memory and rebuilt from claims.
                let count_only =
                    g.claim.request_type == gemfleet_protocol::RequestType::CountTokens;
                let rec = self.fleet.keys.get(&g.key);
                if let Some(rec) = rec {
                    let grant = Payload::Grant(Grant {
                        claim_id: g.claim.claim_id,
                        grant_id: g.grant_id,
                        key: g.key.clone(),
                        fingerprint: rec.fingerprint.clone(),
                        secret: rec.secret.clone(),
                        project: g.project.clone(),
                        model: g.claim.model.clone(),
                        lease_expires: g.lease_expires,
                    });
                    self.push(turn, Topic::Inbox(g.claim.agent.clone()), grant);
                }
                turn.w.claim(ClaimRow {
                    state: "granted",
                    denial_reason: None,
                    grant_id: Some(g.grant_id),
                    key_name: Some(g.key.to_string()),
                    project_id: Some(g.project.to_string()),
                    granted_at: Some(g.granted_at),
                    lease_expires: Some(g.lease_expires),
                    charged: to_i64(g.charged),
                    outcome: Some(if count_only { "used" } else { "open" }),
                    claim: g.claim,
                });
            }
            Decision::Queued(c) => {
                metrics::counter!(m::CLAIMS, "outcome" => "queued").increment(1);
                turn.w.claim(claim_row(c, "queued", None));
            }
            Decision::Denied {
                claim,
                reason,
                message,
                retry_at,
            } => {
                metrics::counter!(m::CLAIMS, "outcome" => "denied").increment(1);
                let denial = Payload::Denial(Denial {
                    claim_id: claim.claim_id,
                    reason,
                    message: message.clone(),
                    retry_at,
                });
                self.push(turn, Topic::Inbox(claim.agent.clone()), denial);
                turn.w.claim(claim_row(
                    claim,
                    "denied",
                    Some(format!("{}: {message}", reason_str(reason))),
                ));
            }
            Decision::Withdrawn { claim, why } => {
                metrics::counter!(m::CLAIMS, "outcome" => "withdrawn").increment(1);
                turn.w.claim(claim_row(claim, "withdrawn", Some(why)));
            }
            Decision::Closed {
                claim_id,
                outcome,
                charged,
                at,
                ..
            } => {
                turn.w.close(CloseRow {
                    claim_id,
                    outcome: outcome.as_str(),
                    charged: charged.map(to_i64),
                    closed_at: at,
                });
                if outcome == GrantOutcome::Abandoned {
                    tracing::info!(%claim_id, "grant abandoned");
                }
            }
            Decision::GroupChanged { group, condition } => {
                let _ = now;
                turn.w.group_states.push(store::GroupStateRow {
                    group: group.clone(),
                    condition,
                    until: None,
                    dimension: None,
                    reason: None,
                });
                self.fleet.group_notes.insert(group.clone(), (None, None));
                let state = Payload::QuotaState(QuotaState {
                    project: group.project.clone(),
                    model: group.model.clone(),
                    state: condition,
                    until: None,
                    dimension: None,
                    reason: None,
                });
                self.push(turn, Topic::QuotaState(group.project, group.model), state);
            }
        }
    }

    /// A redelivered claim: answer again with what was decided (the first answer may have
    /// been lost in a crash between commit and publish).
    fn resend(&mut self, agent: &AgentId, s: &store::StoredClaim, turn: &mut Turn) {
        // Only to the agent that made the claim: another agent naming its claim id must never
        // receive its grant (and secret).
        if s.agent_id != agent.as_str() {
            tracing::warn!(agent = %agent, claim = %s.claim_id, "claim id of another agent ignored");
            return;
        }
        let Ok(model) = ModelName::parse(s.model.clone()) else {
            return;
        };
        match s.state.as_str() {
            "granted" if s.outcome.as_deref() == Some("open") => {
                let (Some(grant_id), Some(key), Some(project), Some(lease)) = (
                    s.grant_id,
                    s.key_name.as_deref().and_then(|k| KeyName::parse(k).ok()),
                    s.project_id
                        .as_deref()
                        .and_then(|p| ProjectId::parse(p).ok()),
                    s.lease_expires,
                ) else {
                    return;
                };
                if let Some(rec) = self.fleet.keys.get(&key) {
                    let grant = Payload::Grant(Grant {
                        claim_id: s.claim_id,
                        grant_id,
                        key: key.clone(),
                        fingerprint: rec.fingerprint.clone(),
                        secret: rec.secret.clone(),
                        project,
                        model,
                        lease_expires: lease,
                    });
                    self.push(turn, Topic::Inbox(agent.clone()), grant);
                }
            }
            "denied" => {
                let denial = Payload::Denial(Denial {
                    claim_id: s.claim_id,
                    reason: DenialReason::WaitTooLong,
                    message: s.denial_reason.clone().unwrap_or_default(),
                    retry_at: None,
                });
                self.push(turn, Topic::Inbox(agent.clone()), denial);
            }
            _ => {}
        }
    }

    fn push(&self, turn: &mut Turn, topic: Topic, payload: Payload) {
        let retain = topic.retained();
        match Envelope::new(self.me.clone(), None, payload).encode() {
            Ok(bytes) => turn.out.push(Out {
                topic: topic.to_string(),
                retain,
                payload: bytes,
            }),
            Err(e) => tracing::error!("cannot encode message for {topic}: {e}"),
        }
    }

    fn alert(&self, turn: &mut Turn, spec: AlertSpec, subject: Subject) {
        metrics::counter!(m::ALERTS, "code" => spec.code).increment(1);
        tracing::warn!(
            code = spec.code,
            severity = spec.severity.as_str(),
            "alert: {}",
            spec.text
        );
        let alert = Alert {
            severity: spec.severity,
            code: spec.code.to_string(),
            text: spec.text,
            key: subject.key,
            project: subject.project,
            model: subject.model,
            agent: subject.agent,
            until: spec.until,
        };
        let env = Envelope::new(self.me.clone(), None, Payload::Alert(alert.clone()));
        turn.w.alerts.push(store::AlertRow {
            event_id: env.id,
            alert,
        });
        match env.encode() {
            Ok(bytes) => turn.out.push(Out {
                topic: Topic::Alert(spec.severity).to_string(),
                retain: false,
                payload: bytes,
            }),
            Err(e) => tracing::error!("cannot encode alert: {e}"),
        }
    }

    /// An alert that cannot be stored (the database is the problem): publish only.
    async fn publish_alert_only(&self, spec: AlertSpec) {
        let mut turn = Turn::default();
        self.alert(&mut turn, spec, Subject::default());
        self.publish_turn(turn).await;
    }

    /// Re-reads keys, projects and limits (after an admin change) and publishes what changed.
    async fn reload(&mut self) {
        let now = self.clock.now();
        let fleet = match store::load_fleet(&self.pool, &self.master).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("cannot reload configuration: {e}");
                return;
            }
        };
        let changed_groups = self.arbiter.configure(fleet.arbiter.clone(), now);
        let mut turn = Turn::default();
        for (k, rec) in &fleet.keys {
            let before = self.fleet.keys.get(k).map(|r| (r.active, r.reason.clone()));
            if before != Some((rec.active, rec.reason.clone())) {
                self.push(&mut turn, Topic::KeyState(k.clone()), key_state(k, rec));
            }
        }
        for (k, rec) in &self.fleet.keys {
            if !fleet.keys.contains_key(k) {
                let mut gone = rec.clone();
                gone.active = false;
                gone.reason = Some("removed".into());
                self.push(&mut turn, Topic::KeyState(k.clone()), key_state(k, &gone));
            }
        }
        self.fleet = fleet;
        self.push_quota_states(&mut turn, changed_groups);
        self.publish_turn(turn).await;
    }

    /// Publishes what a turn produced, outside any transaction (notices only; nothing to ack).
    async fn publish_turn(&self, turn: Turn) {
        for o in turn.out {
            let _ = self
                .client
                .publish(o.topic, QoS::AtLeastOnce, o.retain, o.payload)
                .await;
        }
    }

    /// Adds the retained state of each group to the turn.
    fn push_quota_states(&self, turn: &mut Turn, groups: impl IntoIterator<Item = GroupId>) {
        for g in groups {
            if let Some(p) = self.quota_state(&g) {
                self.push(
                    turn,
                    Topic::QuotaState(g.project.clone(), g.model.clone()),
                    p,
                );
            }
        }
    }

    fn quota_state(&self, g: &GroupId) -> Option<Payload> {
        let (cond, until) = self.arbiter.condition(g)?;
        let (reason, dim) = self.fleet.group_notes.get(g).cloned().unwrap_or_default();
        Some(Payload::QuotaState(QuotaState {
            project: g.project.clone(),
            model: g.model.clone(),
            state: cond,
            until,
            dimension: dim.and_then(|d| serde_json::from_value(serde_json::Value::String(d)).ok()),
            reason,
        }))
    }

    async fn publish_all_states(&mut self) {
        let mut turn = Turn::default();
        for (k, rec) in &self.fleet.keys {
            self.push(&mut turn, Topic::KeyState(k.clone()), key_state(k, rec));
        }
        let groups: Vec<GroupId> = self
            .fleet
            .arbiter
            .groups
            .iter()
            .map(|g| g.group.clone())
            .collect();
        self.push_quota_states(&mut turn, groups);
        self.publish_turn(turn).await;
    }
}

#[derive(Debug, Clone, Default)]
struct Subject {
    key: Option<KeyName>,
    project: Option<ProjectId>,
    model: Option<ModelName>,
    agent: Option<AgentId>,
}

fn key_state(k: &KeyName, rec: &store::KeyRecord) -> Payload {
    Payload::KeyState(KeyState {
        key: k.clone(),
        fingerprint: rec.fingerprint.clone(),
        project: rec.project.clone(),
        state: if rec.active {
            KeyCondition::Active
        } else {
            KeyCondition::Disabled
        },
        reason: if rec.active { None } else { rec.reason.clone() },
        until: None,
    })
}

fn claim_row(claim: PendingClaim, state: &'static str, denial: Option<String>) -> ClaimRow {
    ClaimRow {
        claim,
        state,
        denial_reason: denial,
        grant_id: None,
        key_name: None,
        project_id: None,
        granted_at: None,
        lease_expires: None,
        charged: 0,
        outcome: None,
    }
}

fn reason_str(r: DenialReason) -> &'static str {
    match r {
        DenialReason::NoKey => "no_key",
        DenialReason::Exhausted => "exhausted",
        DenialReason::WaitTooLong => "wait_too_long",
        DenialReason::Invalid => "invalid",
    }
}

/// Whether PostgreSQL refused the data itself (data exception or constraint violation), as
/// opposed to being unreachable or busy: retrying the same rows would fail forever.
fn refused_data(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
        _ => false,
    }
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}
