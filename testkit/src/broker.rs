//! A private mosquitto process for one test: start, stop, kill, restart, pause, resume.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

use crate::broker_config;
pub use crate::broker_config::MAX_PACKET_BYTES;

/// How long a broker may take to accept TCP connections (it usually needs ~0.3 s).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop may take before the kit falls back to SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Fresh ports tried when another process grabbed the allocated one first.
const PORT_ATTEMPTS: usize = 3;
/// Debian installs mosquitto in /usr/sbin, which a non-root PATH often lacks.
const EXTRA_BIN_DIRS: [&str; 2] = ["/usr/sbin", "/usr/local/sbin"];

/// A private mosquitto on 127.0.0.1, configured from a generated file in its own temp dir
/// (persistence on, anonymous clients allowed, 1 MiB packets). Dropping it kills the process
/// and removes the directory.
#[derive(Debug)]
pub struct Broker {
    host: String,
    port: u16,
    binary: PathBuf,
    config_path: PathBuf,
    output_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    // Last field: dropped after the child is killed.
    dir: TempDir,
}

impl Broker {
    /// Starts a broker with the kit's defaults on a free loopback port.
    pub async fn start() -> anyhow::Result<Broker> {
        Self::start_with("").await
    }

    /// Starts a broker with extra mosquitto.conf lines (password_file, acl_file, listeners, …).
    ///
    /// An extra option replaces the kit's default for the same option. When the extra config
    /// has `listener` lines the default listener is left out and the first listener's port
    /// becomes [`Broker::port`]; write `listener {port} 127.0.0.1` to keep the allocated port.
    /// `{dir}` expands to the broker's private directory. See `docs/testkit.md`.
    pub async fn start_with(extra_config: &str) -> anyhow::Result<Broker> {
        let binary = find_mosquitto()?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("gemfleet-mosquitto-")
                .tempdir()
                .context("creating the broker's temp dir")?;
            let allocated = crate::free_port();
            let rendered = broker_config::render(allocated, dir.path(), extra_config)?;
            let config_path = dir.path().join("mosquitto.conf");
            std::fs::write(&config_path, &rendered.text)
                .with_context(|| format!("writing {}", config_path.display()))?;
            let mut broker = Broker {
                host: "127.0.0.1".to_owned(),
                port: rendered.port,
                binary: binary.clone(),
                config_path,
                output_path: dir.path().join("mosquitto.out"),
                log_path: dir.path().join("mosquitto.log"),
                child: None,
                dir,
            };
            match broker.spawn_and_wait().await {
                Ok(()) => return Ok(broker),
                Err(e) => {
                    let retry = broker.log().contains("Address already in use")
                        && rendered.port == allocated;
                    last_error = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("mosquitto did not start")))
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("mqtt://{}:{}", self.host, self.port)
    }

    /// The broker's private directory (config, persistence file, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id while the broker runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the process was started and has not been stopped or killed through this handle.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Client options for this broker: keep-alive 5 s and 1 MiB packets both ways (rumqttc's
    /// 10 KiB default drops the connection on bigger messages).
    pub fn mqtt_options(&self, client_id: &str) -> rumqttc::MqttOptions {
        let mut options = rumqttc::MqttOptions::new(client_id, self.host.clone(), self.port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        options
    }

    /// Graceful stop: SIGTERM (mosquitto then writes its persistence file), wait; SIGKILL if it
    /// has not exited after 10 s. A stopped broker is a no-op.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let pid = to_pid(pid)?;
            kill(pid, Signal::SIGTERM).context("sending SIGTERM to mosquitto")?;
            // A paused broker would keep the SIGTERM pending forever.
            let _ = kill(pid, Signal::SIGCONT);
        }
        match timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(status) => {
                status.context("waiting for mosquitto to exit")?;
            }
            Err(_) => {
                child
                    .kill()
                    .await
                    .context("killing mosquitto after SIGTERM timed out")?;
            }
        }
        Ok(())
    }

    /// Abrupt stop: SIGKILL, no persistence write. A stopped broker is a no-op.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("killing mosquitto")?;
        }
        Ok(())
    }

    /// Starts the broker again on the same port with the same data dir (stopping it gracefully
    /// first if it still runs) and waits until it accepts connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn_and_wait().await
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// Mosquitto's own output and log so far, for failure messages.
    pub fn log(&self) -> String {
        let mut text = String::new();
        for (label, path) in [("output", &self.output_path), ("log", &self.log_path)] {
            if let Ok(bytes) = std::fs::read(path)
                && !bytes.is_empty()
            {
                text.push_str(&format!("--- mosquitto {label} ({}) ---\n", path.display()));
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        text
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("the broker on port {} is not running", self.port))?;
        kill(to_pid(pid)?, signal).with_context(|| format!("sending {signal} to mosquitto"))
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        // Append: a restarted broker's output follows the previous run's in `log()`.
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.output_path)
            .with_context(|| format!("opening {}", self.output_path.display()))?;
        let stderr = output
            .try_clone()
            .context("duplicating the output file handle")?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(output))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready().await {
            let _ = self.kill().await;
            return Err(e.context(format!("mosquitto log:\n{}", self.log())));
        }
        Ok(())
    }

    /// Ready = the process is alive and accepts a TCP connection on its port.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self
                .child
                .as_mut()
                .ok_or_else(|| anyhow!("mosquitto is not running"))?;
            if let Some(status) = child.try_wait().context("checking mosquitto")? {
                self.child = None;
                bail!(
                    "mosquitto ({}) exited with {status} before accepting connections on port {}",
                    self.config_path.display(),
                    self.port
                );
            }
            let attempt = timeout(
                Duration::from_millis(500),
                TcpStream::connect((self.host.as_str(), self.port)),
            )
            .await;
            if let Ok(Ok(_stream)) = attempt {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "mosquitto did not accept connections on {}:{} within {READY_TIMEOUT:?}",
                    self.host,
                    self.port
                );
            }
            sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SIGKILL also ends a paused (SIGSTOPped) process.
            let _ = child.start_kill();
        }
    }
}

fn to_pid(pid: u32) -> anyhow::Result<Pid> {
    let raw = i32::try_from(pid).context("process id out of range")?;
    Ok(Pid::from_raw(raw))
}

/// `mosquitto` from PATH, else from the sbin folders Debian uses.
fn find_mosquitto() -> anyhow::Result<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates = path_dirs
        .into_iter()
        .chain(EXTRA_BIN_DIRS.iter().map(PathBuf::from));
    for dir in candidates {
        let binary = dir.join("mosquitto");
        if is_executable(&binary) {
            return Ok(binary);
        }
    }
    bail!(
        "mosquitto not found on PATH nor in {}: install it with `apt-get install mosquitto` \
         (.ci/run does this)",
        EXTRA_BIN_DIRS.join(", ")
    )
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
