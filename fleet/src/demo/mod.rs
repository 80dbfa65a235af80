//! `gemfleet-fleet demo`: the main job end to end on real input. A local fleet (recorder,
//! emulator upstream, three agents) runs real Gemini CLI tasks over a repository's source
//! files through four keys in two projects whose limits force queuing; mid-run one key is
//! revoked upstream and one agent is killed (its task is finished by another). Live progress
//! while it runs, and a report at the end that checks the fleet's books against the emulator's.

pub mod workload;

use crate::procs;
use crate::report::{self, Report, RunRecord};
use crate::stack::{self, KeyPlan, Plan, ProjectPlan, Stack};
use crate::watch;
use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::task::JoinSet;
use workload::Job;

/// What the demo does; the defaults are the README's run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub work_dir: PathBuf,
    pub server_url: String,
    pub database: String,
    pub repo: PathBuf,
    pub gemini: PathBuf,
    pub agents: usize,
    pub max_tasks: usize,
    pub follow_ups: usize,
    pub minute_seconds: f64,
    /// Requests per (compressed) minute per project.
    pub rpm: u64,
    pub model: String,
    /// Print progress lines (a terminal gets one redrawn line).
    pub progress: bool,
}

/// Everything the demo saw, for the report and for tests.
pub struct DemoOutcome {
    pub report: Report,
    pub work_dir: PathBuf,
    pub database_url: String,
}

const REVOKED_KEY: &str = "alpha-2";

fn plan(o: &DemoOptions) -> Plan {
    let project = |name: &str| ProjectPlan {
        name: name.into(),
        tier: "free",
        rpm: o.rpm,
        tpm: 2_000_000,
        rpd: 10_000,
    };
    let key = |name: &str, project: &str| KeyPlan {
        name: name.into(),
        project: project.into(),
    };
    Plan {
        work_dir: o.work_dir.clone(),
        server_url: o.server_url.clone(),
        database: o.database.clone(),
        minute_seconds: o.minute_seconds,
        model: o.model.clone(),
        projects: vec![project("proj-alpha"), project("proj-beta")],
        keys: vec![
            key("alpha-1", "proj-alpha"),
            key(REVOKED_KEY, "proj-alpha"),
            key("beta-1", "proj-beta"),
            key("beta-2", "proj-beta"),
        ],
        agents: (0..o.agents)
            .map(|i| format!("agent-{}", (b'a' + i as u8) as char))
            .collect(),
    }
}

struct Running {
    job: Job,
    pgid: Option<i32>,
}

/// Runs the demo and returns its outcome; the fleet is stopped before returning.
pub async fn run(o: DemoOptions) -> anyhow::Result<DemoOutcome> {
    let files = workload::source_files(&o.repo, o.max_tasks)?;
    let agent_bin = procs::bin("gemfleet-agent")?;
    let started = Instant::now();
    let say = |what: &str| {
        if o.progress {
            println!("  starting {what}…");
        }
    };
    if o.progress {
        println!(
            "gemfleet demo: {} tasks over {} ({} agents, 4 keys in 2 projects, {} requests per {}-second minute per project)",
            files.len(),
            o.repo.display(),
            o.agents,
            o.rpm,
            o.minute_seconds
        );
    }
    let mut stack = Stack::start(plan(&o), &say).await?;
    let (view, watcher) = watch::start(stack.broker.host(), stack.broker.port()).await?;

    let mut queue: VecDeque<Job> = workload::first_jobs(&files).into();
    let total_jobs = files.len() + o.follow_ups.min(files.len());
    let mut follow_ups_left = o.follow_ups.min(files.len());
    let mut busy: Vec<Option<Running>> = (0..o.agents).map(|_| None).collect();
    let mut set: JoinSet<(usize, Job, anyhow::Result<procs::Finished>, Duration)> = JoinSet::new();
    let mut records: Vec<RunRecord> = Vec::new();
    let mut first_agent: HashMap<String, usize> = HashMap::new();
    let mut revoked_at: Option<chrono::DateTime<chrono::Utc>> = None;
    let mut killed: Option<(usize, String)> = None;
    let victim = 1.min(o.agents.saturating_sub(1));
    let mut done = 0usize;
    let mut last_print = Instant::now() - Duration::from_secs(10);
    let tty = std::io::stdout().is_terminal();

    loop {
        // Hand out work to idle agents.
        for (i, slot) in busy.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let Some(pos) = queue.iter().position(|j| !j.not_on.contains(&i)) else {
                continue;
            };
            let Some(job) = queue.remove(pos) else {
                continue;
            };
            let mut cmd = Command::new(&agent_bin);
            cmd.arg("run")
                .args(stack.agent_args(i))
                .arg("--task")
                .arg(&job.task)
                .arg("--model")
                .arg(&o.model)
                .arg("--cwd")
                .arg(&o.repo)
                .arg("--gemini")
                .arg(&o.gemini)
                .arg("--")
                .arg("-p")
                .arg(&job.prompt)
                .arg("-o")
                .arg("json");
            // Its own process group: killing the "machine" kills the run and its gemini too.
            cmd.process_group(0);
            let (child_cmd, pgid_tx) = (cmd, tokio::sync::oneshot::channel::<Option<u32>>());
            let (tx, rx) = pgid_tx;
            let j = job.clone();
            set.spawn(async move {
                let t0 = Instant::now();
                let out = procs::output_with_pid(child_cmd, tx).await;
                (i, j, out, t0.elapsed())
            });
            let pgid = rx.await.ok().flatten().and_then(|p| i32::try_from(p).ok());
            *slot = Some(Running { job, pgid });
        }

        // Mid-run events: revoke a key upstream after a third, kill an agent after half.
        if revoked_at.is_none() && done * 3 >= total_jobs {
            stack.revoke_key(REVOKED_KEY).await?;
            revoked_at = Some(chrono::Utc::now());
            if o.progress {
                println!(
                    "\n  ⚡ revoked key {REVOKED_KEY} upstream (the emulator now rejects it as invalid)"
                );
            }
        }
        if killed.is_none()
            && done * 2 >= total_jobs
            && o.agents > 1
            && let Some(Running { job, pgid }) = busy[victim].as_ref()
        {
            let task = job.task.clone();
            stack.agents[victim].proc.kill9().await?;
            if let Some(pg) = pgid {
                let _ = killpg(Pid::from_raw(*pg), Signal::SIGKILL);
            }
            killed = Some((victim, task.clone()));
            if o.progress {
                println!(
                    "\n  ⚡ killed {} (kill -9, with its running task {task}); restarting its daemon",
                    stack.agents[victim].id
                );
            }
        }

        if queue.is_empty() && busy.iter().all(Option::is_none) {
            break;
        }

        // Wait for a run to end (or a second for the progress line).
        let ended = tokio::time::timeout(Duration::from_secs(1), set.join_next()).await;
        if let Ok(Some(joined)) = ended {
            let (i, job, out, took) = joined.context("a run's task failed")?;
            busy[i] = None;
            let was_killed = killed
                .as_ref()
                .is_some_and(|(v, t)| *v == i && *t == job.task)
                && !records.iter().any(|r| r.killed);
            let record =
                RunRecord::from_output(&job, stack.agents[i].id.clone(), out, took, was_killed);
            if was_killed {
                // The machine died under this run: finish it elsewhere, and bring the machine back.
                let mut again = job.clone();
                again.not_on.push(i);
                queue.push_front(again);
                let a = &stack.agents[i];
                let (id, port, up) = (
                    a.id.clone(),
                    stack.broker.port(),
                    stack.emulator_url.clone(),
                );
                let logs = stack.plan.work_dir.join("logs");
                stack.agents[i] =
                    stack::start_agent(&agent_bin, &id, &stack.plan.work_dir, port, &up, &logs)
                        .await?;
            } else {
                done += 1;
                if record.exit_code == 0 && !job.follow_up {
                    first_agent.insert(job.task.clone(), i);
                    if follow_ups_left > 0
                        && (done.is_multiple_of(2) || queue.len() < follow_ups_left)
                    {
                        follow_ups_left -= 1;
                        queue.push_back(workload::follow_up(&job.task, i));
                    }
                }
            }
            records.push(record);
        }

        if o.progress && (tty || last_print.elapsed() >= Duration::from_secs(5)) {
            last_print = Instant::now();
            let v = view.lock().map(|v| v.clone()).unwrap_or_default();
            let running = busy.iter().filter(|b| b.is_some()).count();
            let cold: Vec<String> = v
                .cold_keys
                .iter()
                .map(|(k, why)| format!("{k} ({why})"))
                .collect();
            let groups: Vec<String> = v
                .cold_groups
                .iter()
                .map(|(g, s)| format!("{g} {s}"))
                .collect();
            let line = format!(
                "[{:>4}s] runs done {done}/{total_jobs} · running {running} · waiting {} · cold keys: {} · cooling groups: {}",
                started.elapsed().as_secs(),
                queue.len(),
                if cold.is_empty() {
                    "none".into()
                } else {
                    cold.join(", ")
                },
                if groups.is_empty() {
                    "none".into()
                } else {
                    groups.join(", ")
                },
            );
            if tty {
                print!("\r{line:<150}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            } else {
                println!("{line}");
            }
        }
    }
    if o.progress {
        println!();
    }
    // Let the last events land (agents flush their outboxes), then read the books.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ledger = stack.ledger().await?;
    let view_now = view.lock().map(|v| v.clone()).unwrap_or_default();
    watcher.abort();
    let report = report::gather(
        &stack.pool,
        &ledger,
        records,
        REVOKED_KEY,
        revoked_at,
        killed.map(|(i, t)| (stack.agents[i].id.clone(), t)),
        view_now,
        started.elapsed(),
    )
    .await?;
    let database_url = stack.database_url.clone();
    stack.stop().await;
    Ok(DemoOutcome {
        report,
        work_dir: o.work_dir.clone(),
        database_url,
    })
}
