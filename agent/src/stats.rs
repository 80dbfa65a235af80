//! Per-task request bookkeeping for `run`'s summary and `status`, pure.

use gemfleet_protocol::Tokens;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStats {
    /// Upstream requests answered (usage reported).
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    /// Upstream failures (throttle events), and how many of them the client never saw.
    pub failures: u64,
    pub absorbed: u64,
    /// Requests answered with "nothing can be granted" (the CLI was told to stop).
    pub stopped: u64,
    pub keys: BTreeSet<String>,
}

impl TaskStats {
    /// What happened between `before` and `self` (for one run of a task).
    pub fn since(&self, before: &TaskStats) -> TaskStats {
        TaskStats {
            requests: self.requests.saturating_sub(before.requests),
            input_tokens: self.input_tokens.saturating_sub(before.input_tokens),
            output_tokens: self.output_tokens.saturating_sub(before.output_tokens),
            total_tokens: self.total_tokens.saturating_sub(before.total_tokens),
            failures: self.failures.saturating_sub(before.failures),
            absorbed: self.absorbed.saturating_sub(before.absorbed),
            stopped: self.stopped.saturating_sub(before.stopped),
            // Keys are those the task has used so far (a set cannot be subtracted per run).
            keys: self.keys.clone(),
        }
    }
}

/// Stats by task id ("" for requests without a task).
#[derive(Debug, Default)]
pub struct StatsBook {
    by_task: BTreeMap<String, TaskStats>,
}

impl StatsBook {
    fn entry(&mut self, task: Option<&str>) -> &mut TaskStats {
        self.by_task
            .entry(task.unwrap_or("").to_string())
            .or_default()
    }
    pub fn usage(&mut self, task: Option<&str>, key: &str, t: &Tokens) {
        let s = self.entry(task);
        s.requests += 1;
        s.input_tokens += t.prompt;
        s.output_tokens += t.candidates + t.thoughts;
        s.total_tokens += t.total;
        s.keys.insert(key.to_string());
    }
    pub fn failure(&mut self, task: Option<&str>, key: &str, absorbed: bool) {
        let s = self.entry(task);
        s.failures += 1;
        if absorbed {
            s.absorbed += 1;
        }
        s.keys.insert(key.to_string());
    }
    pub fn stopped(&mut self, task: Option<&str>) {
        self.entry(task).stopped += 1;
    }
    pub fn get(&self, task: &str) -> TaskStats {
        self.by_task.get(task).cloned().unwrap_or_default()
    }
    pub fn all(&self) -> TaskStats {
        let mut total = TaskStats::default();
        for s in self.by_task.values() {
            total.requests += s.requests;
            total.input_tokens += s.input_tokens;
            total.output_tokens += s.output_tokens;
            total.total_tokens += s.total_tokens;
            total.failures += s.failures;
            total.absorbed += s.absorbed;
            total.stopped += s.stopped;
            total.keys.extend(s.keys.iter().cloned());
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_and_failures_add_up_per_task_and_a_run_is_a_difference() {
        let mut b = StatsBook::default();
        let t = Tokens {
            prompt: 10,
            candidates: 3,
            thoughts: 1,
            total: 14,
            ..Tokens::default()
        };
        b.usage(Some("t1"), "k1", &t);
        let before = b.get("t1");
        b.usage(Some("t1"), "k2", &t);
        b.failure(Some("t1"), "k1", true);
        b.usage(None, "k1", &t);
        let run = b.get("t1").since(&before);
        assert_eq!(
            (
                run.requests,
                run.input_tokens,
                run.output_tokens,
                run.total_tokens
            ),
            (1, 10, 4, 14)
        );
        assert_eq!((run.failures, run.absorbed), (1, 1));
        assert_eq!(b.all().requests, 3);
    }
}
