#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Docker is not available where the tests run, so this checks what can be checked without
//! it: docker-compose.yml parses; every file it, the Dockerfiles and the systemd units refer to
//! exists; every environment variable is one the binaries read (loaded through the binaries'
//! own settings types), every host:port points at a port the target service listens on, every
//! broker user has a password entry; and the commands of the compose services and systemd units
//! parse with the binaries' own command lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Parser;
use serde_norway::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let mut value: Value = serde_norway::from_str(&text).expect("docker-compose.yml is valid YAML");
    value.apply_merge().expect("YAML merge keys resolve");
    value
}

fn services(c: &Value) -> BTreeMap<String, Value> {
    c["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

fn env_of(service: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(map) = service["environment"].as_mapping() {
        for (k, v) in map {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => panic!("environment value {other:?} is not a scalar"),
            };
            out.insert(k.as_str().unwrap().to_owned(), value);
        }
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `${NAME}`, `${NAME:?msg}`, `${NAME:-default}` → the names, and the value with each
/// interpolation replaced by a plausible stand-in.
fn interpolations(value: &str) -> (Vec<String>, String) {
    let mut names = Vec::new();
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("unclosed ${") + start;
        let inner = &rest[start + 2..end];
        let name = inner.split([':', '-', '?']).next().unwrap();
        names.push(name.to_owned());
        out.push_str("stand-in");
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    (names, out)
}

fn with_prefix(env: &BTreeMap<String, String>, prefix: &str) -> config::Map<String, String> {
    env.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), interpolations(v).1))
        .collect()
}

fn load<T: serde::de::DeserializeOwned>(
    prefix: &str,
    vars: config::Map<String, String>,
) -> Result<T, String> {
    config::Config::builder()
        .add_source(
            config::Environment::with_prefix(prefix)
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(vars)),
        )
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| e.to_string())
}

/// The plain listener's port in broker-config/mosquitto.conf.
fn broker_port() -> u16 {
    let conf = std::fs::read_to_string(root().join("broker-config/mosquitto.conf")).unwrap();
    let line = conf
        .lines()
        .find(|l| l.starts_with("listener ") && l.ends_with("127.0.0.1"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

#[test]
fn compose_has_the_demo_services() {
    let names: BTreeSet<String> = services(&compose()).into_keys().collect();
    for s in [
        "postgres",
        "mosquitto",
        "recorder",
        "emulator",
        "agent-1",
        "agent-2",
    ] {
        assert!(names.contains(s), "service {s} missing: {names:?}");
    }
}

#[test]
fn every_file_compose_and_the_dockerfiles_refer_to_exists() {
    let root = root();
    let mut dockerfiles = BTreeSet::new();
    for (name, s) in services(&compose()) {
        let build = &s["build"];
        if !build.is_null() {
            let context = root.join(build["context"].as_str().unwrap_or("."));
            assert!(
                context.is_dir(),
                "{name}: build context {} missing",
                context.display()
            );
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
            assert!(
                dockerfile.is_file(),
                "{name}: {} missing",
                dockerfile.display()
            );
            dockerfiles.insert(dockerfile);
        }
        // Bind mounts: host path exists; remember where they appear in the container.
        let mut mounts = Vec::new();
        for v in strings(&s["volumes"]) {
            let mut parts = v.split(':');
            let (src, dst) = (parts.next().unwrap(), parts.next().unwrap());
            if src.starts_with("./") {
                let host = root.join(src);
                assert!(host.exists(), "{name}: volume source {src} missing");
                mounts.push((dst.to_owned(), host));
            }
        }
        // Scripts run from a bind mount exist on the host (and are executable for sh -c use).
        for arg in strings(&s["entrypoint"])
            .into_iter()
            .chain(strings(&s["command"]))
        {
            for (dst, host) in &mounts {
                if let Some(rel) = arg.strip_prefix(dst.as_str()) {
                    let file = host.join(rel.trim_start_matches('/'));
                    assert!(file.is_file(), "{name}: {arg} → {} missing", file.display());
                }
            }
        }
    }
    assert!(dockerfiles.len() >= 3, "{dockerfiles:?}");
    for dockerfile in dockerfiles {
        let text = std::fs::read_to_string(&dockerfile).unwrap();
        for line in text
            .lines()
            .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
        {
            let args: Vec<&str> = line.split_whitespace().skip(1).collect();
            for src in &args[..args.len() - 1] {
                assert!(
                    root.join(src).exists(),
                    "{}: COPY source {src} missing",
                    dockerfile.display()
                );
            }
        }
        assert!(
            text.matches("FROM ").count() >= 2,
            "{}: not a multi-stage build",
            dockerfile.display()
        );
    }
    let agent = std::fs::read_to_string(root.join("deploy/Dockerfile.agent")).unwrap();
    assert!(
        agent.contains("package-lock.json") && agent.contains("npm ci"),
        "agent image must install the pinned CLI"
    );
}

#[test]
fn environment_names_are_read_by_the_binaries_and_interpolations_are_documented() {
    let root = root();
    let example = std::fs::read_to_string(root.join("deploy/compose/env.example")).unwrap();
    // Names read outside the prefixed settings structs: the sources and scripts must mention them.
    let mut sources = String::new();
    for dir in [
        "recorder/src",
        "agent/src",
        "emulator/src",
        "deploy/compose",
    ] {
        for entry in walk(&root.join(dir)) {
            sources.push_str(&std::fs::read_to_string(entry).unwrap_or_default());
        }
    }
    for (name, s) in services(&compose()) {
        let env = env_of(&s);
        for (var, value) in &env {
            for used in interpolations(value).0 {
                assert!(
                    example.contains(&format!("{used}=")),
                    "{name}: ${{{used}}} not in deploy/compose/env.example"
                );
            }
            let prefixed = [
                "GEMFLEET_RECORDER_",
                "GEMFLEET_AGENT_",
                "GEMFLEET_SLACK_BRIDGE_",
            ]
            .iter()
            .any(|p| var.starts_with(p));
            let image_own =
                var.starts_with("POSTGRES_") || var.starts_with("GEMFLEET_MQTT_PASSWORD_");
            if !prefixed && !image_own {
                assert!(
                    sources.contains(&format!("\"{var}\"")) || sources.contains(var.as_str()),
                    "{name}: {var} is read by nothing"
                );
            }
        }
        let recorder = with_prefix(&env, "GEMFLEET_RECORDER_");
        if !recorder.is_empty() {
            // deny_unknown_fields: a misspelt name fails here.
            load::<gemfleet_recorder::Settings>("GEMFLEET_RECORDER", recorder)
                .unwrap_or_else(|e| panic!("{name}: recorder settings: {e}"));
        }
        let bridge = with_prefix(&env, "GEMFLEET_SLACK_BRIDGE_");
        if !bridge.is_empty() {
            load::<gemfleet_recorder::slack_bridge::SlackBridgeSettings>(
                "GEMFLEET_SLACK_BRIDGE",
                bridge,
            )
            .unwrap_or_else(|e| panic!("{name}: bridge settings: {e}"));
        }
        let agent = with_prefix(&env, "GEMFLEET_AGENT_");
        if !agent.is_empty() {
            type Agent = gemfleet_agent::settings::Settings;
            load::<Agent>("GEMFLEET_AGENT", agent.clone())
                .unwrap_or_else(|e| panic!("{name}: agent settings: {e}"));
            // The agent ignores unknown names, so each variable must change the settings.
            let default = format!(
                "{:?}",
                load::<Agent>("GEMFLEET_AGENT", config::Map::new()).unwrap()
            );
            for (var, value) in agent {
                let changed = |v: String| {
                    let one = config::Map::from([(var.clone(), v)]);
                    load::<Agent>("GEMFLEET_AGENT", one)
                        .map(|s| format!("{s:?}") != default)
                        .unwrap_or(false)
                };
                let alt = match value.parse::<u64>() {
                    Ok(n) => (n + 1).to_string(),
                    Err(_) => format!("{value}x"),
                };
                assert!(
                    changed(value.clone()) || changed(alt),
                    "{name}: {var} is not an agent setting"
                );
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn hosts_ports_and_broker_users_agree() {
    let c = compose();
    let all = services(&c);
    let broker = broker_port();
    let emulator_port = port_of(&env_of(&all["emulator"])["GEMFLEET_EMULATOR_LISTEN"]);
    let recorder_env = env_of(&all["recorder"]);
    let http_port = port_of(&recorder_env["GEMFLEET_RECORDER_HTTP_LISTEN"]);
    assert!(
        strings(&all["recorder"]["ports"])
            .iter()
            .any(|p| p.ends_with(&format!(":{http_port}")))
    );
    assert!(
        strings(&all["mosquitto"]["ports"])
            .iter()
            .any(|p| p.ends_with(&format!(":{broker}")))
    );
    assert!(
        recorder_env["DATABASE_URL"].contains("@postgres:5432/"),
        "{}",
        recorder_env["DATABASE_URL"]
    );

    // name:VAR pairs the broker creates passwords for.
    let users: BTreeMap<String, String> = env_of(&all["mosquitto"])["GEMFLEET_BROKER_USERS"]
        .split_whitespace()
        .map(|e| {
            let (u, v) = e.split_once(':').unwrap();
            (u.to_owned(), v.to_owned())
        })
        .collect();
    for role in ["recorder", "ops", "slack-bridge"] {
        assert!(users.contains_key(role), "no broker user {role}");
    }
    let mut clients = 0;
    for (name, s) in &all {
        let env = env_of(s);
        for prefix in [
            "GEMFLEET_RECORDER_",
            "GEMFLEET_AGENT_",
            "GEMFLEET_SLACK_BRIDGE_",
        ] {
            let Some(host) = env.get(&format!("{prefix}BROKER__HOST")) else {
                continue;
            };
            clients += 1;
            assert_eq!(host, "mosquitto", "{name}");
            let port: u16 = env[&format!("{prefix}BROKER__PORT")].parse().unwrap();
            assert_eq!(port, broker, "{name}: broker port");
            let user = env
                .get(&format!("{prefix}BROKER__USERNAME"))
                .or_else(|| env.get("GEMFLEET_AGENT_AGENT_ID"))
                .unwrap_or_else(|| panic!("{name}: no broker username"));
            let var = users
                .get(user)
                .unwrap_or_else(|| panic!("{name}: user {user} has no broker password"));
            let password = &env[&format!("{prefix}BROKER__PASSWORD")];
            assert_eq!(
                interpolations(password).0,
                vec![var.clone()],
                "{name}: password variable"
            );
        }
        if let Some(url) = env.get("GEMFLEET_AGENT_UPSTREAM_BASE_URL") {
            assert_eq!(url, &format!("http://emulator:{emulator_port}"), "{name}");
        }
    }
    assert!(
        clients >= 4,
        "recorder, bridge and two agents talk to the broker"
    );
    // The entrypoint's rewrite matches the config's listener lines.
    let script =
        std::fs::read_to_string(root().join("deploy/compose/mosquitto-entrypoint.sh")).unwrap();
    let conf = std::fs::read_to_string(root().join("broker-config/mosquitto.conf")).unwrap();
    assert!(
        script.contains("listener 1883 127\\.0\\.0\\.1")
            && conf.lines().any(|l| l == "listener 1883 127.0.0.1")
    );
    assert!(script.contains("/^listener 8883$/d") && conf.lines().any(|l| l == "listener 8883"));
}

/// The ExecStart line of a unit, split on whitespace, without the binary.
fn exec_start(unit: &str) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(root().join("deploy/systemd").join(unit)).unwrap();
    for must in [
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "User=gemfleet",
    ] {
        assert!(text.contains(must), "{unit}: {must} missing");
    }
    let line = text.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    let mut words = line
        .trim_start_matches("ExecStart=")
        .split_whitespace()
        .map(str::to_owned);
    let bin = words.next().unwrap();
    (bin, words.collect())
}

#[test]
fn commands_parse_with_the_binaries_command_lines() {
    for unit in ["gemfleet-recorder.service", "gemfleet-slack-bridge.service"] {
        let (bin, args) = exec_start(unit);
        assert!(bin.ends_with("/gemfleet-recorder"), "{unit}");
        gemfleet_recorder::cli::Cli::try_parse_from(std::iter::once(bin).chain(args))
            .unwrap_or_else(|e| panic!("{unit}: {e}"));
    }
    let (bin, args) = exec_start("gemfleet-agent.service");
    assert!(bin.ends_with("/gemfleet-agent"));
    gemfleet_agent::cli::Cli::try_parse_from(std::iter::once(bin).chain(args))
        .unwrap_or_else(|e| panic!("gemfleet-agent.service: {e}"));

    for (name, s) in services(&compose()) {
        let command = strings(&s["command"]);
        if command.is_empty() {
            continue;
        }
        let dockerfile = s["build"]["dockerfile"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if dockerfile.ends_with("Dockerfile.recorder") {
            gemfleet_recorder::cli::Cli::try_parse_from(
                std::iter::once("gemfleet-recorder".to_owned()).chain(command),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    // Every recorder command of the demo setup script parses (continuations joined, leading
    // VAR=value assignments and a trailing `|| true` dropped).
    let setup = std::fs::read_to_string(root().join("deploy/compose/demo-setup.sh")).unwrap();
    let joined = setup.replace("\\\n", " ");
    let mut checked = 0;
    for line in joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
    {
        let line = line.split("||").next().unwrap();
        let words: Vec<&str> = line
            .split_whitespace()
            .skip_while(|w| w.contains('='))
            .collect();
        if words.first() == Some(&"gemfleet-recorder") {
            gemfleet_recorder::cli::Cli::try_parse_from(&words)
                .unwrap_or_else(|e| panic!("demo-setup.sh: {line}: {e}"));
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "only {checked} recorder commands found in demo-setup.sh"
    );
    // The demo workload calls real agent subcommands.
    let workload = std::fs::read_to_string(root().join("deploy/compose/demo-workload.sh")).unwrap();
    gemfleet_agent::cli::Cli::try_parse_from(["gemfleet-agent", "serve"]).unwrap();
    gemfleet_agent::cli::Cli::try_parse_from([
        "gemfleet-agent",
        "run",
        "--task",
        "demo-1",
        "--",
        "-p",
        "hi",
    ])
    .unwrap();
    assert!(
        workload.contains("gemfleet-agent serve") && workload.contains("gemfleet-agent run --task")
    );
}
