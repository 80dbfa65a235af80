-- gemfleet initial schema. The three tables of the original design (api_keys, usage_log, tasks)
-- keep their columns; everything else extends them. docs/schema.md explains each deviation.

-- Google Cloud projects: quotas are per project and model, so limits hang off projects.
CREATE TABLE projects (
    project_id    TEXT PRIMARY KEY,
    tier          TEXT NOT NULL DEFAULT 'free' CHECK (tier IN ('free', 'paid')),
    -- active | dead (suspended/denied) | config (API disabled, billing missing) | billing_blocked
    state         TEXT NOT NULL DEFAULT 'active'
                  CHECK (state IN ('active', 'dead', 'config', 'billing_blocked')),
    state_reason  TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Per (project, model) limits. NULL = no limit known in that dimension; 0 = no quota.
-- `configured_*` is what the operator set; `rpm`.. are the effective limits, which 429 bodies
-- may lower (source = 'learned').
CREATE TABLE model_limits (
    project_id      TEXT NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    model           TEXT NOT NULL,
    rpm             BIGINT CHECK (rpm >= 0),
    tpm             BIGINT CHECK (tpm >= 0),
    rpd             BIGINT CHECK (rpd >= 0),
    tpd             BIGINT CHECK (tpd >= 0),
    configured_rpm  BIGINT,
    configured_tpm  BIGINT,
    configured_rpd  BIGINT,
    configured_tpd  BIGINT,
    source          TEXT NOT NULL DEFAULT 'configured' CHECK (source IN ('configured', 'learned')),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, model)
);

-- Quota-group state as last published on quota/{project}/{model}/state.
CREATE TABLE quota_groups (
    project_id  TEXT NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    model       TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'cooling', 'exhausted', 'no_quota')),
    until       TIMESTAMPTZ,
    dimension   TEXT,
    reason      TEXT,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, model)
);

-- Original: api_keys (key_name unique, last_used, quota_exhausted, daily_request_count,
-- daily_token_total, disabled_until). Added: the project, a fingerprint, the secret encrypted
-- with an AEAD (never plaintext), and an explicit state with its reason.
CREATE TABLE api_keys (
    id                   BIGSERIAL PRIMARY KEY,
    key_name             TEXT NOT NULL UNIQUE,
    project_id           TEXT NOT NULL REFERENCES projects (project_id),
    fingerprint          TEXT NOT NULL,
    secret_nonce         BYTEA NOT NULL,
    secret_ciphertext    BYTEA NOT NULL,
    state                TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled')),
    disabled_reason      TEXT,
    -- With state = 'disabled': NULL means until an operator enables the key.
    disabled_until       TIMESTAMPTZ,
    last_used            TIMESTAMPTZ,
    -- True while the key's quota group is exhausted for the Pacific day.
    quota_exhausted      BOOLEAN NOT NULL DEFAULT false,
    -- Counters for the current Pacific day, reset at midnight America/Los_Angeles.
    daily_request_count  BIGINT NOT NULL DEFAULT 0,
    daily_token_total    BIGINT NOT NULL DEFAULT 0,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Agents seen on the broker, their presence, and the outbox watermark acknowledged to them.
CREATE TABLE agents (
    agent_id     TEXT PRIMARY KEY,
    state        TEXT NOT NULL DEFAULT 'online' CHECK (state IN ('online', 'offline')),
    version      TEXT,
    first_seen   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Highest outbox sequence number such that every event up to it is committed.
    watermark    BIGINT NOT NULL DEFAULT 0
);

-- Every claim the arbiter saw and what became of it. A grant is a claim with a key.
-- Requests in a window are counted from granted claims (outcome <> 'released').
CREATE TABLE claims (
    claim_id            UUID PRIMARY KEY,
    agent_id            TEXT NOT NULL,
    model               TEXT NOT NULL,
    task_id             TEXT,
    est_input_tokens    BIGINT NOT NULL,
    received_at         TIMESTAMPTZ NOT NULL,
    -- queued | granted | denied | withdrawn
    state               TEXT NOT NULL CHECK (state IN ('queued', 'granted', 'denied', 'withdrawn')),
    denial_reason       TEXT,
    grant_id            UUID UNIQUE,
    key_name            TEXT,
    project_id          TEXT,
    granted_at          TIMESTAMPTZ,
    lease_expires       TIMESTAMPTZ,
    -- Input tokens charged to the group: the estimate until usage corrects it.
    charged_input_tokens BIGINT NOT NULL DEFAULT 0,
    -- open | used | failed | released | abandoned (only for granted claims)
    outcome             TEXT CHECK (outcome IN ('open', 'used', 'failed', 'released', 'abandoned')),
    closed_at           TIMESTAMPTZ
);
CREATE INDEX claims_group_window ON claims (project_id, model, granted_at) WHERE state = 'granted';
CREATE INDEX claims_open ON claims (agent_id) WHERE outcome = 'open';

-- Append-only log of every event ingested, unique by event id (idempotent ingest).
CREATE TABLE events (
    event_id     UUID PRIMARY KEY,
    agent_id     TEXT NOT NULL,
    seq          BIGINT,
    kind         TEXT NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    body         JSONB NOT NULL
);
CREATE INDEX events_agent_seq ON events (agent_id, seq);
CREATE INDEX events_kind_ts ON events (kind, ts);

CREATE FUNCTION events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();

-- Original: usage_log (key_name, task_id, request_timestamp, token_count, request_type).
-- Added: the event id (unique: a duplicate event is stored once), who and what, and the token
-- breakdown usageMetadata gives. token_count is totalTokenCount.
CREATE TABLE usage_log (
    id                  BIGSERIAL PRIMARY KEY,
    event_id            UUID NOT NULL UNIQUE,
    key_name            TEXT NOT NULL,
    task_id             TEXT,
    request_timestamp   TIMESTAMPTZ NOT NULL,
    token_count         BIGINT NOT NULL,
    request_type        TEXT NOT NULL,
    agent_id            TEXT NOT NULL,
    project_id          TEXT NOT NULL,
    model               TEXT NOT NULL,
    claim_id            UUID,
    grant_id            UUID,
    http_status         INTEGER NOT NULL DEFAULT 200,
    prompt_tokens       BIGINT NOT NULL DEFAULT 0,
    cached_tokens       BIGINT NOT NULL DEFAULT 0,
    candidates_tokens   BIGINT NOT NULL DEFAULT 0,
    thoughts_tokens     BIGINT NOT NULL DEFAULT 0,
    tool_prompt_tokens  BIGINT NOT NULL DEFAULT 0,
    complete            BOOLEAN NOT NULL DEFAULT true,
    latency_ms          BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX usage_log_ts ON usage_log (request_timestamp);
CREATE INDEX usage_log_key_ts ON usage_log (key_name, request_timestamp);
CREATE INDEX usage_log_task ON usage_log (task_id);

-- Failures agents reported, with their classification (QUOTAS.md).
CREATE TABLE throttles (
    id              BIGSERIAL PRIMARY KEY,
    event_id        UUID NOT NULL UNIQUE,
    ts              TIMESTAMPTZ NOT NULL,
    agent_id        TEXT NOT NULL,
    key_name        TEXT NOT NULL,
    project_id      TEXT NOT NULL,
    model           TEXT NOT NULL,
    task_id         TEXT,
    claim_id        UUID,
    http_status     INTEGER NOT NULL,
    class           TEXT NOT NULL,
    scope           TEXT NOT NULL,
    dimension       TEXT,
    retry_after_ms  BIGINT,
    until           TIMESTAMPTZ,
    quota_limit     BIGINT,
    tier            TEXT,
    quota_id        TEXT,
    in_stream       BOOLEAN NOT NULL DEFAULT false,
    absorbed        BOOLEAN NOT NULL DEFAULT false,
    reason          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX throttles_ts ON throttles (ts);

-- Original: tasks (id, context JSONB, last_updated, status). `context` now holds the context's
-- metadata (session id, size, digest, who saved it); the session file itself, which can be
-- megabytes, lives compressed in task_context. Added: owner agent, attempts, and totals.
CREATE TABLE tasks (
    id             TEXT PRIMARY KEY,
    context        JSONB,
    last_updated   TIMESTAMPTZ NOT NULL DEFAULT now(),
    status         TEXT NOT NULL DEFAULT 'created'
                   CHECK (status IN ('created', 'running', 'succeeded', 'failed', 'interrupted')),
    owner_agent    TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    session_id     TEXT,
    requests       BIGINT NOT NULL DEFAULT 0,
    input_tokens   BIGINT NOT NULL DEFAULT 0,
    output_tokens  BIGINT NOT NULL DEFAULT 0,
    total_tokens   BIGINT NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The task's Gemini CLI session file, zstd-compressed.
CREATE TABLE task_context (
    task_id           TEXT PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    session_id        TEXT NOT NULL,
    sha256            TEXT NOT NULL,
    size_bytes        BIGINT NOT NULL,
    compressed        BYTEA NOT NULL,
    saved_by          TEXT NOT NULL,
    saved_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Input the recorder could not accept, with the reason. Never the raw bytes of a message that
-- could carry a secret: an excerpt with any "secret" value redacted, its size and digest.
CREATE TABLE dead_letters (
    id               BIGSERIAL PRIMARY KEY,
    received_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    topic            TEXT NOT NULL,
    agent_id         TEXT,
    reason           TEXT NOT NULL,
    detail           TEXT NOT NULL,
    payload_size     BIGINT NOT NULL,
    payload_sha256   TEXT NOT NULL,
    excerpt          TEXT NOT NULL DEFAULT ''
);

-- Alerts raised, as published on alerts/{severity}.
CREATE TABLE alerts (
    id          BIGSERIAL PRIMARY KEY,
    event_id    UUID NOT NULL UNIQUE,
    raised_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    severity    TEXT NOT NULL,
    code        TEXT NOT NULL,
    text        TEXT NOT NULL,
    key_name    TEXT,
    project_id  TEXT,
    model       TEXT,
    agent_id    TEXT,
    until       TIMESTAMPTZ
);

-- Small recorder bookkeeping (e.g. the Pacific day the counters were last reset for).
CREATE TABLE recorder_state (
    name   TEXT PRIMARY KEY,
    value  JSONB NOT NULL
);
