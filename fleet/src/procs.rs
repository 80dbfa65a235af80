//! Child processes of the fleet (emulator, recorder, agents): spawned with their output in a log
//! file, found next to this binary, stopped politely or killed on purpose.

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// Path of a gemfleet binary built beside this one (`target/<profile>/NAME`). Test binaries live
/// one level deeper (`target/<profile>/deps/`), so the parent is tried too.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    bail!(
        "{name} is not built next to {}: run `cargo build --workspace --bins` (add --release for a \
         release build) first",
        exe.display()
    )
}

/// A running child with its output captured in `log`.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> anyhow::Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = file.try_clone().context("duplicating a log file handle")?;
        cmd.stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null());
        cmd.kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, no goodbye: what a crash or power loss looks like to everyone else.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.pid() {
            let pid = i32::try_from(pid).context("pid out of range")?;
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.wait().await;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn terminate(&mut self, grace: Duration) {
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

/// The last `lines` lines of a file ("" when unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until `url` answers HTTP (any status) or `within` passes.
pub async fn wait_http(url: &str, within: Duration, proc: &mut Proc) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if client.get(url).send().await.is_ok() {
            return Ok(());
        }
        if !proc.is_running() {
            bail!(
                "{} exited while starting; its log ends:\n{}",
                proc.name,
                proc.log_tail(20)
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{} did not answer at {url} within {within:?}; its log ends:\n{}",
                proc.name,
                proc.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Output of a finished command.
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion, feeding `stdin` when given. A non-zero exit is not an error here;
/// callers decide (see [`check`]).
pub async fn output(mut cmd: Command, stdin: Option<&str>) -> anyhow::Result<Finished> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let shown = format!("{:?}", cmd.as_std().get_program());
    let mut child = cmd.spawn().with_context(|| format!("starting {shown}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .context("writing to a child's stdin")?;
        drop(pipe);
    }
    let out = child
        .wait_with_output()
        .await
        .with_context(|| format!("waiting for {shown}"))?;
    Ok(Finished {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `cmd` and fails with its stderr unless it exits 0.
pub async fn check(cmd: Command, stdin: Option<&str>, what: &str) -> anyhow::Result<String> {
    let out = output(cmd, stdin).await?;
    if out.code != 0 {
        bail!("{what} failed (exit {}): {}", out.code, out.stderr.trim());
    }
    Ok(out.stdout)
}

/// Like [`output`], but tells `pid` the child's pid as soon as it runs (so the caller can
/// signal its process group).
pub async fn output_with_pid(
    mut cmd: Command,
    pid: tokio::sync::oneshot::Sender<Option<u32>>,
) -> anyhow::Result<Finished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("{:?}", cmd.as_std().get_program());
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = pid.send(None);
            return Err(anyhow::Error::new(e).context(format!("starting {shown}")));
        }
    };
    let _ = pid.send(child.id());
    let out = child
        .wait_with_output()
        .await
        .with_context(|| format!("waiting for {shown}"))?;
    Ok(Finished {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
