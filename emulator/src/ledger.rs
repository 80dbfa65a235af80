//! The ledger: what the emulator answered, per key, project and model. It is the ground truth
//! tests compare a fleet's own accounting against. It names keys, never their secrets.

use std::collections::BTreeMap;

use gemfleet_gemini::Dimension;
use serde::{Deserialize, Serialize};

/// A snapshot of the ledger (what `GET /_emulator/ledger` serves).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// One entry per (key, model) that was used, sorted by key then model.
    pub entries: Vec<LedgerEntry>,
    /// Answers to requests without a usable key identity (no key, or a secret the emulator
    /// does not know), by HTTP status.
    pub unauthenticated: BTreeMap<String, u64>,
}

/// Counters of one (key, project, model).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub key: String,
    pub project: String,
    pub model: String,
    /// Generate requests admitted (counted against the quota group), including ones a fault
    /// then failed.
    pub requests: u64,
    /// Admitted requests answered completely (HTTP 200, full stream).
    pub succeeded: u64,
    /// Input tokens (promptTokenCount) of admitted requests: what the quota counted.
    pub input_tokens: u64,
    /// Of which served from the implicit cache (cachedContentTokenCount), completed answers.
    pub cached_tokens: u64,
    /// candidatesTokenCount of completed answers.
    pub output_tokens: u64,
    /// thoughtsTokenCount of completed answers.
    pub thoughts_tokens: u64,
    /// 429 RESOURCE_EXHAUSTED answers, by the dimensions named in each (one 429 can name
    /// several; `rate_limited_requests` counts the answers).
    pub rate_limited: RateLimited,
    pub rate_limited_requests: u64,
    /// Other error answers by HTTP status ("400", "403", "404", "500", "503"…).
    pub errors: BTreeMap<String, u64>,
    /// 200 streams that carried an error event after some chunks.
    pub stream_errors: u64,
    /// Streams cut mid-way.
    pub dropped_connections: u64,
    /// countTokens calls (not counted against generate quotas).
    pub count_tokens_calls: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimited {
    pub requests_per_minute: u64,
    pub input_tokens_per_minute: u64,
    pub requests_per_day: u64,
    pub input_tokens_per_day: u64,
}

impl RateLimited {
    pub fn add(&mut self, d: Dimension) {
        match d {
            Dimension::RequestsPerMinute => self.requests_per_minute += 1,
            Dimension::InputTokensPerMinute => self.input_tokens_per_minute += 1,
            Dimension::RequestsPerDay => self.requests_per_day += 1,
            Dimension::InputTokensPerDay => self.input_tokens_per_day += 1,
        }
    }

    pub fn get(&self, d: Dimension) -> u64 {
        match d {
            Dimension::RequestsPerMinute => self.requests_per_minute,
            Dimension::InputTokensPerMinute => self.input_tokens_per_minute,
            Dimension::RequestsPerDay => self.requests_per_day,
            Dimension::InputTokensPerDay => self.input_tokens_per_day,
        }
    }
}

impl Ledger {
    /// The entry of one key and model.
    pub fn entry(&self, key: &str, model: &str) -> Option<&LedgerEntry> {
        self.entries
            .iter()
            .find(|e| e.key == key && e.model == model)
    }

    /// The sum of the entries `keep` selects (key/project/model of the result are empty).
    pub fn sum(&self, keep: impl Fn(&LedgerEntry) -> bool) -> LedgerEntry {
        let mut total = LedgerEntry::default();
        for e in self.entries.iter().filter(|e| keep(e)) {
            total.requests += e.requests;
            total.succeeded += e.succeeded;
            total.input_tokens += e.input_tokens;
            total.cached_tokens += e.cached_tokens;
            total.output_tokens += e.output_tokens;
            total.thoughts_tokens += e.thoughts_tokens;
            total.rate_limited_requests += e.rate_limited_requests;
            for d in [
                Dimension::RequestsPerMinute,
                Dimension::InputTokensPerMinute,
                Dimension::RequestsPerDay,
                Dimension::InputTokensPerDay,
            ] {
                for _ in 0..e.rate_limited.get(d) {
                    total.rate_limited.add(d);
                }
            }
            for (status, n) in &e.errors {
                *total.errors.entry(status.clone()).or_default() += n;
            }
            total.stream_errors += e.stream_errors;
            total.dropped_connections += e.dropped_connections;
            total.count_tokens_calls += e.count_tokens_calls;
        }
        total
    }

    /// Totals over every entry.
    pub fn totals(&self) -> LedgerEntry {
        self.sum(|_| true)
    }

    /// Totals of one key over all models.
    pub fn for_key(&self, key: &str) -> LedgerEntry {
        self.sum(|e| e.key == key)
    }

    /// Totals of one model over all keys.
    pub fn for_model(&self, model: &str) -> LedgerEntry {
        self.sum(|e| e.model == model)
    }
}

/// The mutable book behind snapshots.
#[derive(Debug, Default)]
pub(crate) struct Book {
    entries: BTreeMap<(String, String), LedgerEntry>,
    unauthenticated: BTreeMap<String, u64>,
}

impl Book {
    pub fn entry(&mut self, key: &str, project: &str, model: &str) -> &mut LedgerEntry {
        self.entries
            .entry((key.to_owned(), model.to_owned()))
            .or_insert_with(|| LedgerEntry {
                key: key.to_owned(),
                project: project.to_owned(),
                model: model.to_owned(),
                ..LedgerEntry::default()
            })
    }

    pub fn unauthenticated(&mut self, status: u16) {
        *self.unauthenticated.entry(status.to_string()).or_default() += 1;
    }

    pub fn snapshot(&self) -> Ledger {
        Ledger {
            entries: self.entries.values().cloned().collect(),
            unauthenticated: self.unauthenticated.clone(),
        }
    }
}

impl LedgerEntry {
    pub fn error(&mut self, status: u16) {
        *self.errors.entry(status.to_string()).or_default() += 1;
    }
}
