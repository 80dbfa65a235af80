//! gemfleet's dev-only test kit: real services for tests, never mocks.
//!
//! - [`Broker`]: a private `mosquitto` on a free loopback port, from a generated config, with
//!   the fault-injection handles the reliability tests need (stop, kill, restart on the same
//!   port and data dir, pause/resume).
//! - [`TestDb`]: a fresh PostgreSQL database per test on the machine's server (`DATABASE_URL`),
//!   optionally with the workspace migrations applied, dropped again afterwards.
//! - [`mqtt`]: bounded waits on a rumqttc event loop (ConnAck, SubAck, PubAck, a publish).
//! - Small helpers: [`workspace_root`], [`free_port`], [`init_crypto`], [`gemini_cli`].
//!
//! A missing service is an error with a message that says how to get it, so a test that needs
//! it fails loudly instead of passing without having run.

mod broker;
mod broker_config;
mod db;
pub mod mqtt;

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::Once;

use anyhow::{Context, bail};

pub use broker::{Broker, MAX_PACKET_BYTES};
pub use broker_config::BrokerConfigError;
pub use db::{DEFAULT_DATABASE_URL, TestDb, migrator};

/// The root of the Cargo workspace (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // This crate lives at <root>/testkit; the path is fixed at compile time, which is what tests
    // want (they run from their own crate's folder, not the root).
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match manifest.parent() {
        Some(root) => root.to_path_buf(),
        None => manifest,
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The OS picks it (bind to port 0), so concurrent tests rarely collide; the listener is closed
/// before returning, so a small race remains and [`Broker::start`] retries on "address in use".
pub fn free_port() -> u16 {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        // Binding port 0 on loopback only fails when the machine has no usable network stack;
        // nothing a test can do then, and the next bind will report the real error.
        Err(_) => 0,
    }
}

/// Installs rustls' ring crypto provider for the process, once. Call it before any TLS/HTTPS.
pub fn init_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed, which is fine for tests.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The pinned Gemini CLI, `<root>/node_modules/.bin/gemini`.
pub fn gemini_cli() -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let cli = root.join("node_modules").join(".bin").join("gemini");
    if !cli.exists() {
        bail!(
            "Gemini CLI not found at {}: run `npm ci` at the repo root ({}) to install the pinned \
             @google/gemini-cli",
            cli.display(),
            root.display()
        );
    }
    // Resolve the npm symlink so callers get a path that works from any working directory.
    cli.canonicalize()
        .with_context(|| format!("resolving {}", cli.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let root = workspace_root();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"), "{}", root.display());
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn init_crypto_is_idempotent() {
        init_crypto();
        init_crypto();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
