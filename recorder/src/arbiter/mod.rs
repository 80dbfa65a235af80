//! The claim arbiter: a pure state machine (no IO, no clock of its own — every call takes
//! `now`). The IO layer feeds it claims, releases, outcomes and the fleet's configuration,
//! persists what it decides ([`Decision`]s) in one transaction, and only then publishes.
//!
//! Rules (ARCHITECTURE.md "Claims", QUOTAS.md):
//! - a grant needs an active key whose quota group is open and has room in every dimension
//!   now (requests and input tokens per sliding minute and per Pacific day);
//! - claims wait FIFO per model; a waiting claim is granted the moment room frees, or denied
//!   at its deadline (`ts + max_wait_ms`); a claim that arrives after its deadline plus a grace
//!   (a replay from an outbox after an outage) is withdrawn, never granted;
//! - among eligible groups the one with the most headroom wins (spreads load across
//!   projects), then the least-recently-used key of that project;
//! - grants whose lease expires unreported are closed as abandoned and keep counting.

pub mod ledger;

use chrono::{DateTime, Duration, Utc};
use gemfleet_protocol::{
    AgentId, DenialReason, GroupCondition, KeyName, ModelName, ProjectId, RequestType, TaskId,
};
use ledger::{Ledger, Limits, Room};
use std::collections::{BTreeMap, HashMap, VecDeque};
use uuid::Uuid;

/// A quota group: limits apply per project and model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId {
    pub project: ProjectId,
    pub model: ModelName,
}

/// A claim as the arbiter sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingClaim {
    pub claim_id: Uuid,
    pub agent: AgentId,
    pub model: ModelName,
    pub est_input_tokens: u64,
    pub task_id: Option<TaskId>,
    pub avoid_keys: Vec<KeyName>,
    pub request_type: RequestType,
    /// The agent's timestamp of the claim.
    pub claimed_at: DateTime<Utc>,
    /// `claimed_at + max_wait_ms`.
    pub deadline: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
}

/// A grant the arbiter made.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantMade {
    pub claim: PendingClaim,
    pub grant_id: Uuid,
    pub key: KeyName,
    pub project: ProjectId,
    pub granted_at: DateTime<Utc>,
    pub lease_expires: DateTime<Utc>,
    pub charged: u64,
}

/// How a granted claim ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOutcome {
    Used,
    Failed,
    Released,
    Abandoned,
}

impl GrantOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantOutcome::Used => "used",
            GrantOutcome::Failed => "failed",
            GrantOutcome::Released => "released",
            GrantOutcome::Abandoned => "abandoned",
        }
    }
}

/// What the arbiter decided; the IO layer persists each, then publishes.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Granted(GrantMade),
    Queued(PendingClaim),
    Denied {
        claim: PendingClaim,
        reason: DenialReason,
        message: String,
        retry_at: Option<DateTime<Utc>>,
    },
    /// Stale (seen after its deadline) or withdrawn by the agent: never granted, no reply.
    Withdrawn {
        claim: PendingClaim,
        why: String,
    },
    /// A grant closed; `charged` is the final input-token charge when it changed.
    Closed {
        claim_id: Uuid,
        agent: AgentId,
        outcome: GrantOutcome,
        charged: Option<u64>,
        at: DateTime<Utc>,
    },
    /// A group's condition changed by time (a cooldown or a day ended).
    GroupChanged {
        group: GroupId,
        condition: GroupCondition,
    },
}

/// Configuration of one group, from model_limits + quota_groups.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    pub group: GroupId,
    pub limits: Limits,
    pub condition: GroupCondition,
    pub until: Option<DateTime<Utc>>,
}

/// Configuration of one key, from api_keys.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyConfig {
    pub key: KeyName,
    pub project: ProjectId,
    pub active: bool,
    pub last_used: Option<DateTime<Utc>>,
}

/// The fleet's configuration: groups, keys and which projects are usable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetConfig {
    pub groups: Vec<GroupConfig>,
    pub keys: Vec<KeyConfig>,
    /// Projects whose state is not `active` (dead, config, billing_blocked).
    pub unusable_projects: Vec<ProjectId>,
}

#[derive(Debug, Clone)]
struct Group {
    limits: Limits,
    condition: GroupCondition,
    until: Option<DateTime<Utc>>,
    ledger: Ledger,
}

impl Group {
    fn cold(&self) -> bool {
        self.condition != GroupCondition::Open || self.limits.no_quota()
    }
}

#[derive(Debug, Clone)]
struct Key {
    project: ProjectId,
    active: bool,
    last_used: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct OpenGrant {
    agent: AgentId,
    group: GroupId,
    granted_at: DateTime<Utc>,
    lease_expires: DateTime<Utc>,
    charged: u64,
}

/// Arbiter settings.
#[derive(Debug, Clone, Copy)]
pub struct ArbiterSettings {
    /// The sliding minute (60 s in production; compressed in tests).
    pub minute: Duration,
    /// How long a grant may stay unreported before it is closed as abandoned.
    pub lease: Duration,
    /// Slack for clock skew before a claim past its deadline counts as a stale replay.
    pub stale_grace: Duration,
}

/// A granted claim as stored, for rebuilding the ledgers after a restart.
#[derive(Debug, Clone)]
pub struct StoredGrant {
    pub claim_id: Uuid,
    pub agent: AgentId,
    pub group: GroupId,
    pub key: KeyName,
    pub granted_at: DateTime<Utc>,
    pub lease_expires: DateTime<Utc>,
    pub charged: u64,
    pub open: bool,
}

pub struct Arbiter {
    settings: ArbiterSettings,
    groups: BTreeMap<GroupId, Group>,
    keys: BTreeMap<KeyName, Key>,
    unusable_projects: Vec<ProjectId>,
    queues: HashMap<ModelName, VecDeque<PendingClaim>>,
    open: HashMap<Uuid, OpenGrant>,
}

/// Why no group can take a claim now.
struct NoRoom {
    reason: DenialReason,
    message: String,
    /// Earliest time a group frees for this claim; None when nothing will.
    frees_at: Option<DateTime<Utc>>,
}

impl Arbiter {
    pub fn new(settings: ArbiterSettings) -> Self {
        Arbiter {
            settings,
            groups: BTreeMap::new(),
            keys: BTreeMap::new(),
            unusable_projects: Vec::new(),
            queues: HashMap::new(),
            open: HashMap::new(),
        }
    }

    pub fn settings(&self) -> ArbiterSettings {
        self.settings
    }

    /// Applies the fleet's configuration; ledgers of known groups are kept. Returns the groups
    /// whose condition changed (to publish).
    pub fn configure(&mut self, cfg: FleetConfig, now: DateTime<Utc>) -> Vec<GroupId> {
        let mut changed = Vec::new();
        let mut groups = BTreeMap::new();
        for g in cfg.groups {
            let (ledger, before) = match self.groups.remove(&g.group) {
                Some(old) => (old.ledger, Some(old.condition)),
                None => (Ledger::new(self.settings.minute, now), None),
            };
            if before != Some(g.condition) {
                changed.push(g.group.clone());
            }
            groups.insert(
                g.group,
                Group {
                    limits: g.limits,
                    condition: g.condition,
                    until: g.until,
                    ledger,
                },
            );
        }
        self.groups = groups;
        let mut keys = BTreeMap::new();
        for k in cfg.keys {
            // The in-memory last use is fresher than the database's between batches.
            let last_used = match self.keys.get(&k.key) {
                Some(old) => old.last_used.max(k.last_used),
                None => k.last_used,
            };
            keys.insert(
                k.key,
                Key {
                    project: k.project,
                    active: k.active,
                    last_used,
                },
            );
        }
        self.keys = keys;
        self.unusable_projects = cfg.unusable_projects;
        changed
    }

    /// Rebuilds ledgers and open grants from stored grants (restart path).
    pub fn restore_grants(&mut self, grants: Vec<StoredGrant>, now: DateTime<Utc>) {
        for g in grants {
            if let Some(group) = self.groups.get_mut(&g.group) {
                group.ledger.advance(now);
                group
                    .ledger
                    .charge(g.granted_at, g.claim_id, g.charged, now);
            }
            if let Some(k) = self.keys.get_mut(&g.key) {
                k.last_used = k.last_used.max(Some(g.granted_at));
            }
            if g.open {
                self.open.insert(
                    g.claim_id,
                    OpenGrant {
                        agent: g.agent,
                        group: g.group,
                        granted_at: g.granted_at,
                        lease_expires: g.lease_expires,
                        charged: g.charged,
                    },
                );
            }
        }
    }

    /// Puts back a claim that was queued before a restart (in arrival order).
    pub fn restore_queued(&mut self, claim: PendingClaim) {
        self.queues
            .entry(claim.model.clone())
            .or_default()
            .push_back(claim);
    }

    /// Sets a group's condition (from a throttle). Unknown groups are ignored.
    pub fn set_condition(
        &mut self,
        group: &GroupId,
        condition: GroupCondition,
        until: Option<DateTime<Utc>>,
    ) {
        if let Some(g) = self.groups.get_mut(group) {
            g.condition = condition;
            g.until = until;
        }
    }

    /// Lowers a group's limits (learned from a 429).
    pub fn set_limits(&mut self, group: &GroupId, limits: Limits) {
        if let Some(g) = self.groups.get_mut(group) {
            g.limits = limits;
        }
    }

    pub fn limits(&self, group: &GroupId) -> Option<Limits> {
        self.groups.get(group).map(|g| g.limits)
    }

    pub fn condition(&self, group: &GroupId) -> Option<(GroupCondition, Option<DateTime<Utc>>)> {
        self.groups.get(group).map(|g| (g.condition, g.until))
    }

    /// Disables or enables a key at once (from a throttle).
    pub fn set_key_active(&mut self, key: &KeyName, active: bool) {
        if let Some(k) = self.keys.get_mut(key) {
            k.active = active;
        }
    }

    pub fn mark_project_unusable(&mut self, project: &ProjectId) {
        if !self.unusable_projects.contains(project) {
            self.unusable_projects.push(project.clone());
        }
    }

    /// Whether every group serving `model` is cold (and there is at least one).
    pub fn model_all_cold(&self, model: &ModelName) -> bool {
        let mut any = false;
        for (id, g) in self.groups.iter().filter(|(id, _)| &id.model == model) {
            any = true;
            if !g.cold() && !self.unusable_projects.contains(&id.project) {
                return false;
            }
        }
        any
    }

    /// Numbers for /metrics and `status`.
    pub fn queued(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }
    pub fn open_grants(&self) -> usize {
        self.open.len()
    }
    pub fn is_open(&self, claim_id: &Uuid) -> bool {
        self.open.contains_key(claim_id)
    }

    /// A new claim.
    pub fn claim(&mut self, claim: PendingClaim, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        // The same claim id again (a buggy or hostile sender, not a replayed event, which the
        // IO layer filters): never a second grant.
        if self.open.contains_key(&claim.claim_id)
            || self
                .queues
                .values()
                .any(|q| q.iter().any(|c| c.claim_id == claim.claim_id))
        {
            return;
        }
        if now > claim.deadline + self.settings.stale_grace {
            out.push(Decision::Withdrawn {
                claim,
                why: "stale: seen after its deadline (replayed after an outage?)".into(),
            });
            return;
        }
        if !self.groups.keys().any(|g| g.model == claim.model) {
            let message = format!(
                "no project has limits configured for model {}; configure them with \
                 `gemfleet-recorder projects set PROJECT --limit {}=rpm=…`",
                claim.model, claim.model
            );
            out.push(Decision::Denied {
                claim,
                reason: DenialReason::NoKey,
                message,
                retry_at: None,
            });
            return;
        }
        let queue_busy = self.queues.get(&claim.model).is_some_and(|q| !q.is_empty());
        let attempt = self.try_grant(&claim, now);
        let frees_at = match attempt {
            Ok(g) if !queue_busy => {
                out.push(Decision::Granted(self.commit_grant(claim, g, now)));
                return;
            }
            // Room now, but others wait ahead of it (FIFO per model): it frees for this one
            // no earlier than for them.
            Ok(_) => Some(now),
            Err(NoRoom {
                reason,
                message,
                frees_at,
            }) => match frees_at {
                Some(at) if at <= claim.deadline => Some(at),
                _ => {
                    out.push(Decision::Denied {
                        claim,
                        reason,
                        message,
                        retry_at: frees_at,
                    });
                    return;
                }
            },
        };
        if queue_busy && claim.deadline <= now {
            out.push(Decision::Denied {
                claim,
                reason: DenialReason::WaitTooLong,
                message: "other claims for this model are waiting and this claim cannot wait"
                    .into(),
                retry_at: frees_at,
            });
            return;
        }
        out.push(Decision::Queued(claim.clone()));
        self.queues
            .entry(claim.model.clone())
            .or_default()
            .push_back(claim);
    }

    /// A released claim: an unused grant returns its reservation; a queued claim is withdrawn.
    pub fn release(&mut self, claim_id: Uuid, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        if let Some(g) = self.open.remove(&claim_id) {
            if let Some(group) = self.groups.get_mut(&g.group) {
                group.ledger.advance(now);
                group.ledger.refund(claim_id, g.granted_at, g.charged);
            }
            out.push(Decision::Closed {
                claim_id,
                agent: g.agent,
                outcome: GrantOutcome::Released,
                charged: Some(0),
                at: now,
            });
            return;
        }
        for q in self.queues.values_mut() {
            if let Some(pos) = q.iter().position(|c| c.claim_id == claim_id) {
                if let Some(claim) = q.remove(pos) {
                    out.push(Decision::Withdrawn {
                        claim,
                        why: "released by the agent".into(),
                    });
                }
                return;
            }
        }
    }

    /// A granted request was answered: the actual prompt tokens replace the estimate.
    pub fn used(
        &mut self,
        claim_id: Uuid,
        prompt_tokens: u64,
        now: DateTime<Utc>,
        out: &mut Vec<Decision>,
    ) {
        // Late usage of a grant already closed (abandoned) changes nothing here: its charge
        // stays the estimate until the next restart rebuilds the ledgers from the claims table.
        if let Some(g) = self.open.remove(&claim_id) {
            if let Some(gr) = self.groups.get_mut(&g.group) {
                gr.ledger.advance(now);
                gr.ledger
                    .correct(claim_id, g.granted_at, g.charged, prompt_tokens);
            }
            out.push(Decision::Closed {
                claim_id,
                agent: g.agent,
                outcome: GrantOutcome::Used,
                charged: Some(prompt_tokens),
                at: now,
            });
        }
    }

    /// A granted request failed: the attempt keeps counting.
    pub fn failed(&mut self, claim_id: Uuid, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        if let Some(g) = self.open.remove(&claim_id) {
            out.push(Decision::Closed {
                claim_id,
                agent: g.agent,
                outcome: GrantOutcome::Failed,
                charged: None,
                at: now,
            });
        }
    }

    /// The agent went offline (its last will): its open grants are abandoned and still count,
    /// its queued claims are withdrawn. Returns how many grants were open.
    pub fn agent_offline(
        &mut self,
        agent: &AgentId,
        now: DateTime<Utc>,
        out: &mut Vec<Decision>,
    ) -> usize {
        let ids: Vec<Uuid> = self
            .open
            .iter()
            .filter(|(_, g)| &g.agent == agent)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.open.remove(id);
            out.push(Decision::Closed {
                claim_id: *id,
                agent: agent.clone(),
                outcome: GrantOutcome::Abandoned,
                charged: None,
                at: now,
            });
        }
        for q in self.queues.values_mut() {
            let (gone, keep): (VecDeque<_>, VecDeque<_>) =
                q.drain(..).partition(|c| &c.agent == agent);
            *q = keep;
            for claim in gone {
                out.push(Decision::Withdrawn {
                    claim,
                    why: "agent went offline".into(),
                });
            }
        }
        ids.len()
    }

    /// Time passes: conditions end, leases expire, waiting claims are granted or denied.
    pub fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Decision>) {
        for (id, g) in self.groups.iter_mut() {
            g.ledger.advance(now);
            if matches!(
                g.condition,
                GroupCondition::Cooling | GroupCondition::Exhausted
            ) && g.until.is_some_and(|u| u <= now)
            {
                g.condition = GroupCondition::Open;
                g.until = None;
                out.push(Decision::GroupChanged {
                    group: id.clone(),
                    condition: GroupCondition::Open,
                });
            }
        }
        let expired: Vec<Uuid> = self
            .open
            .iter()
            .filter(|(_, g)| g.lease_expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(g) = self.open.remove(&id) {
                out.push(Decision::Closed {
                    claim_id: id,
                    agent: g.agent,
                    outcome: GrantOutcome::Abandoned,
                    charged: None,
                    at: now,
                });
            }
        }
        let models: Vec<ModelName> = self.queues.keys().cloned().collect();
        for model in models {
            while let Some(head) = self.queues.get(&model).and_then(|q| q.front()).cloned() {
                // Past its deadline the agent has stopped waiting: a grant would be wasted.
                let attempt = if head.deadline < now {
                    self.try_grant(&head, now).and(Err(NoRoom {
                        reason: DenialReason::WaitTooLong,
                        message: "no room before its deadline".into(),
                        frees_at: Some(now),
                    }))
                } else {
                    self.try_grant(&head, now)
                };
                match attempt {
                    Ok(g) => {
                        self.pop_head(&model);
                        out.push(Decision::Granted(self.commit_grant(head, g, now)));
                    }
                    Err(no)
                        if head.deadline <= now
                            || no.frees_at.is_none_or(|f| f > head.deadline) =>
                    {
                        self.pop_head(&model);
                        out.push(Decision::Denied {
                            claim: head,
                            reason: no.reason,
                            message: format!("waited until its deadline: {}", no.message),
                            retry_at: no.frees_at,
                        });
                    }
                    Err(_) => break,
                }
            }
            if self.queues.get(&model).is_some_and(VecDeque::is_empty) {
                self.queues.remove(&model);
            }
        }
    }

    fn pop_head(&mut self, model: &ModelName) {
        if let Some(q) = self.queues.get_mut(model) {
            q.pop_front();
        }
    }

    /// The next instant something may change without input: a queued claim's room or
    /// deadline, a lease expiry, a condition's end, the Pacific midnight.
    pub fn next_wake(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut wake = gemfleet_gemini::pacific::next_midnight(now);
        for g in self.groups.values() {
            if let Some(u) = g.until {
                wake = wake.min(u);
            }
        }
        for g in self.open.values() {
            wake = wake.min(g.lease_expires);
        }
        for q in self.queues.values() {
            if let Some(head) = q.front() {
                wake = wake.min(head.deadline);
                if let Err(NoRoom {
                    frees_at: Some(at), ..
                }) = self.try_grant(head, now)
                {
                    wake = wake.min(at);
                }
            }
        }
        wake.max(now)
    }

    /// Picks a group and key for `claim` at `now`, or says why none and when one frees.
    fn try_grant(
        &self,
        claim: &PendingClaim,
        now: DateTime<Utc>,
    ) -> Result<(GroupId, KeyName), NoRoom> {
        let count_only = claim.request_type == RequestType::CountTokens;
        let tokens = if count_only {
            0
        } else {
            claim.est_input_tokens
        };
        let mut best: Option<(f64, &GroupId, KeyName)> = None;
        let mut frees_at: Option<DateTime<Utc>> = None;
        let mut saw_key = false;
        let mut saw_fit = false;
        for (id, g) in self.groups.iter().filter(|(id, _)| id.model == claim.model) {
            if self.unusable_projects.contains(&id.project) {
                continue;
            }
            let Some(key) = self.lru_key(&id.project, &claim.avoid_keys) else {
                continue;
            };
            saw_key = true;
            if count_only {
                // count_tokens needs an active key, not generate quota.
                return Ok((id.clone(), key));
            }
            if g.cold() {
                if let (Some(u), false) = (g.until, g.limits.no_quota()) {
                    frees_at = Some(frees_at.map_or(u, |f| f.min(u)));
                }
                continue;
            }
            if !g.limits.could_ever_fit(tokens) {
                continue;
            }
            saw_fit = true;
            match g.ledger.room(&g.limits, tokens, now) {
                Room::Now => {
                    let h = g.ledger.headroom(&g.limits, tokens);
                    if best.as_ref().is_none_or(|(bh, _, _)| h > *bh) {
                        best = Some((h, id, key));
                    }
                }
                Room::At(at) => frees_at = Some(frees_at.map_or(at, |f| f.min(at))),
                Room::Never => {}
            }
        }
        if let Some((_, id, key)) = best {
            return Ok((id.clone(), key));
        }
        if !saw_key {
            return Err(NoRoom {
                reason: DenialReason::NoKey,
                message: format!("no active key serves model {}", claim.model),
                frees_at: None,
            });
        }
        if !saw_fit && frees_at.is_none() {
            let any_warm_group = self
                .groups
                .iter()
                .any(|(id, g)| id.model == claim.model && !g.cold());
            return Err(if any_warm_group {
                NoRoom {
                    reason: DenialReason::Invalid,
                    message: format!(
                        "{} input tokens exceed every group's per-minute or per-day token limit",
                        tokens
                    ),
                    frees_at: None,
                }
            } else {
                NoRoom {
                    reason: DenialReason::Exhausted,
                    message: format!(
                        "every quota group of model {} is cold or has no quota",
                        claim.model
                    ),
                    frees_at: None,
                }
            });
        }
        Err(NoRoom {
            reason: if saw_fit {
                DenialReason::WaitTooLong
            } else {
                DenialReason::Exhausted
            },
            message: match frees_at {
                Some(at) => format!(
                    "no room for model {} before {}",
                    claim.model,
                    at.to_rfc3339()
                ),
                None => format!("no room for model {}", claim.model),
            },
            frees_at,
        })
    }

    /// The least-recently-used active key of `project`, not in `avoid`.
    fn lru_key(&self, project: &ProjectId, avoid: &[KeyName]) -> Option<KeyName> {
        self.keys
            .iter()
            .filter(|(name, k)| k.active && &k.project == project && !avoid.contains(name))
            .min_by_key(|(_, k)| k.last_used)
            .map(|(name, _)| name.clone())
    }

    fn commit_grant(
        &mut self,
        claim: PendingClaim,
        (group, key): (GroupId, KeyName),
        now: DateTime<Utc>,
    ) -> GrantMade {
        let count_only = claim.request_type == RequestType::CountTokens;
        let charged = if count_only {
            0
        } else {
            claim.est_input_tokens
        };
        if !count_only && let Some(g) = self.groups.get_mut(&group) {
            g.ledger.charge(now, claim.claim_id, charged, now);
        }
        if let Some(k) = self.keys.get_mut(&key) {
            k.last_used = Some(now);
        }
        let lease_expires = now + self.settings.lease;
        if !count_only {
            self.open.insert(
                claim.claim_id,
                OpenGrant {
                    agent: claim.agent.clone(),
                    group: group.clone(),
                    granted_at: now,
                    lease_expires,
                    charged,
                },
            );
        }
        GrantMade {
            grant_id: Uuid::now_v7(),
            key,
            project: group.project,
            granted_at: now,
            lease_expires,
            charged,
            claim,
        }
    }

    /// Minute and day usage of a group, for `status`.
    pub fn usage(&self, group: &GroupId) -> Option<(u64, u64, u64, u64)> {
        self.groups.get(group).map(|g| {
            (
                g.ledger.minute_requests(),
                g.ledger.minute_tokens(),
                g.ledger.day_requests(),
                g.ledger.day_tokens(),
            )
        })
    }
}

#[cfg(test)]
mod tests;
