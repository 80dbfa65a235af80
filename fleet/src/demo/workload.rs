//! The demo's workload: one summary task per source file of a real repository, and follow-up
//! prompts on some of them that must run on another agent (so they resume a moved session).

use anyhow::{Context, bail};
use std::path::Path;

/// One Gemini CLI run to make.
#[derive(Debug, Clone)]
pub struct Job {
    pub task: String,
    pub prompt: String,
    /// A follow-up continues the task's conversation and must run on another agent than the
    /// task's first run.
    pub follow_up: bool,
    /// Agents this job must not run on (the one that died under it, or the first run's agent).
    pub not_on: Vec<usize>,
}

/// Source files of `repo` as git tracks them (`*.rs`), sorted, at most `max`.
pub fn source_files(repo: &Path, max: usize) -> anyhow::Result<Vec<String>> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["ls-files", "--", "*.rs"])
        .output()
        .with_context(|| format!("listing the files of {} with git", repo.display()))?;
    if !out.status.success() {
        bail!(
            "{} is not a git repository (git ls-files failed): pass --repo with a checkout",
            repo.display()
        );
    }
    let mut files: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("/tests/") && !l.starts_with("target/"))
        .map(str::to_string)
        .collect();
    files.sort();
    files.truncate(max);
    if files.is_empty() {
        bail!("{} has no tracked .rs files to summarise", repo.display());
    }
    Ok(files)
}

/// A task id for file number `i`: `sum-007-arbiter` (valid as a protocol name).
pub fn task_id(i: usize, file: &str) -> String {
    let stem = Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("file");
    let clean: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    format!("sum-{i:03}-{clean}")
}

/// First-pass jobs, one per file.
pub fn first_jobs(files: &[String]) -> Vec<Job> {
    files
        .iter()
        .enumerate()
        .map(|(i, f)| Job {
            task: task_id(i, f),
            prompt: format!("Summarise the source file {f} of this repository in three sentences."),
            follow_up: false,
            not_on: vec![],
        })
        .collect()
}

/// The follow-up prompt for a task.
pub fn follow_up(task: &str, first_agent: usize) -> Job {
    Job {
        task: task.to_string(),
        prompt: "Now list the two most important functions from that summary and say why.".into(),
        follow_up: true,
        not_on: vec![first_agent],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_valid_protocol_names() {
        for (i, f) in ["recorder/src/arbiter/mod.rs", "a b/ü.rs", ".hidden.rs"]
            .iter()
            .enumerate()
        {
            let id = task_id(i, f);
            assert!(gemfleet_protocol::TaskId::parse(id.clone()).is_ok(), "{id}");
        }
    }
}
