-- What the arbiter needs to restore a queued claim after a restart, exactly as it arrived:
-- its deadline (ts + max_wait_ms), the keys it must not get, and its request type.
ALTER TABLE claims ADD COLUMN deadline     TIMESTAMPTZ;
ALTER TABLE claims ADD COLUMN avoid_keys   TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE claims ADD COLUMN request_type TEXT NOT NULL DEFAULT 'stream';
-- The claim's own timestamp (the agent's clock), for FIFO order across a restart.
ALTER TABLE claims ADD COLUMN claimed_at   TIMESTAMPTZ;
CREATE INDEX claims_queued ON claims (received_at) WHERE state = 'queued';
CREATE INDEX claims_day ON claims (granted_at) WHERE state = 'granted';
