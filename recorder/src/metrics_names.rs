//! Names of the recorder's Prometheus metrics, in one place.

pub const CLAIMS: &str = "gemfleet_recorder_claims_total"; // label outcome=granted|queued|denied|withdrawn
pub const CLAIM_WAIT: &str = "gemfleet_recorder_claim_wait_seconds";
pub const GROUPS: &str = "gemfleet_recorder_quota_groups"; // label state
pub const THROTTLES: &str = "gemfleet_recorder_throttles_total"; // label class
pub const EVENTS: &str = "gemfleet_recorder_ingest_events_total"; // label kind
pub const DUPLICATES: &str = "gemfleet_recorder_ingest_duplicates_total";
pub const BATCHES: &str = "gemfleet_recorder_ingest_batches_total";
pub const BATCH_SECONDS: &str = "gemfleet_recorder_ingest_batch_seconds";
pub const DEAD_LETTERS: &str = "gemfleet_recorder_dead_letters_total"; // label reason
pub const ALERTS: &str = "gemfleet_recorder_alerts_total"; // label code
pub const OPEN_GRANTS: &str = "gemfleet_recorder_open_grants";
pub const QUEUED: &str = "gemfleet_recorder_queued_claims";
pub const DB_ERRORS: &str = "gemfleet_recorder_database_errors_total";
