//! The configuration as an operator meets it: shipped files, defaults, environment overrides,
//! and errors that name the file, the line and the key.

use std::{env, fs, net::SocketAddr, path::Path, path::PathBuf, process::Command, time::Duration};

use config::Source;
use webtrunk::config::{Config, ConfigError};

/// A TOML file in the temp dir, unique to this process and test, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = env::temp_dir().join(format!("webtrunk-config-{}-{name}", std::process::id()));
        fs::write(&path, text).expect("write to the temp dir");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn conf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf")
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|addr| addr.parse().expect("socket address literal")).collect()
}

fn lines(problems: &[ConfigError]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// `text` fails `check` with exactly one problem, which names the file, the line and `key`.
fn rejects(name: &str, text: &str, key: &str, line: u32) -> ConfigError {
    let file = TempFile::new(name, text);
    let mut problems = Config::check(&file.0).expect_err("accepted");
    assert_eq!(problems.len(), 1, "{}", lines(&problems));
    let message = problems[0].to_string();
    let prefix = format!("{}:{line}: key `{key}`: ", file.0.display());
    assert!(message.starts_with(&prefix), "{message:?} does not start with {prefix:?}");
    problems.remove(0)
}

fn assert_builtin_defaults(config: &Config) {
    assert_eq!(config.server.domains, ["localhost"]);
    assert_eq!(config.server.shutdown_timeout, Duration::from_secs(5));
    assert_eq!(config.listen.udp, addrs(&["127.0.0.1:5060"]));
    assert_eq!(config.listen.tcp, addrs(&["127.0.0.1:5060"]));
    assert_eq!(config.listen.tls, addrs(&["127.0.0.1:5061"]));
    assert_eq!(config.listen.ws, addrs(&["127.0.0.1:8080"]));
    assert_eq!(config.listen.wss, addrs(&["127.0.0.1:8443"]));
    assert_eq!((&config.tls.certificate, &config.tls.private_key), (&None, &None));
    assert_eq!(config.websocket.paths, ["/", "/ws"]);
    assert_eq!(config.websocket.ping_interval, Duration::from_secs(30));
    assert_eq!(config.websocket.idle_timeout, Duration::from_secs(90));
    assert_eq!(config.limits.max_message_size, 65_536);
    assert_eq!(config.limits.max_headers, 128);
    assert_eq!(config.limits.max_connections, 10_000);
    assert_eq!(config.limits.max_connections_per_ip, 256);
    assert_eq!(config.limits.handshake_timeout, Duration::from_secs(5));
    assert_eq!(config.limits.tcp_idle_timeout, Duration::from_secs(600));
    assert_eq!(config.log.level, "info");
    assert!(config.validate().is_empty(), "{}", lines(&config.validate()));
}

#[test]
fn every_shipped_file_checks_clean() {
    let mut checked = 0;
    for entry in fs::read_dir(conf_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            // Users files have their own shape; everything else is a main configuration.
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("users")) {
                let users = webtrunk::config::users::load(&path).unwrap_or_else(|p| panic!("{}", p.join("\n")));
                assert!(!users.is_empty(), "{} lists no user", path.display());
            } else {
                Config::check(&path).unwrap_or_else(|problems| panic!("{}", lines(&problems)));
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no .toml file in {}", conf_dir().display());
}

#[test]
fn shipped_example_shows_every_key_at_its_default() {
    let path = conf_dir().join("webtrunk.toml");
    let mut expected = Config::default();
    expected.server.state_dir = "/var/lib/webtrunk".into();
    assert_eq!(Config::check(&path).unwrap(), expected);

    // Keys whose default is "unset" can only appear commented out.
    let text = fs::read_to_string(&path).unwrap();
    let defaults = config::Config::try_from(&Config::default()).unwrap().collect().unwrap();
    for (section, table) in defaults {
        assert!(text.contains(&format!("\n[{section}]\n")), "[{section}] missing");
        for key in table.into_table().unwrap().into_keys() {
            let shown = text.lines().any(|line| line.trim_start_matches("# ").starts_with(&format!("{key} = ")));
            assert!(shown, "{section}.{key} missing");
        }
    }
}

#[test]
fn partial_file_keeps_defaults_for_the_rest() {
    let file = TempFile::new("partial.toml", "[limits]\nmax_headers = 64\n[listen]\nwss = []\n");
    let mut expected = Config::default();
    expected.limits.max_headers = 64;
    expected.listen.wss.clear();
    assert_eq!(Config::check(&file.0).unwrap(), expected);
}

#[test]
fn unknown_key_is_named_with_file_and_line() {
    let problem = rejects("unknown.toml", "[listen]\nudpp = [\"127.0.0.1:5060\"]\n", "listen.udpp", 2);
    assert!(matches!(problem, ConfigError::UnknownKey { .. }));
}

#[test]
fn unknown_section_is_named_once() {
    rejects("section.toml", "[server]\n\n[metrics]\nport = 9100\nbind = \"x\"\n", "metrics", 3);
}

#[test]
fn wrong_type_is_named_with_file_and_line() {
    let problem = rejects("type.toml", "[limits]\nmax_message_size = \"big\"\n", "limits.max_message_size", 2);
    assert!(matches!(problem, ConfigError::BadValue { .. }));
}

#[test]
fn bad_socket_address_is_named_with_file_and_line() {
    let text = "[listen]\ntcp = []\nudp = [\"127.0.0.1:5060\", \"localhost:5060\"]\n";
    let problem = rejects("addr.toml", text, "listen.udp[1]", 3);
    assert!(problem.to_string().ends_with("invalid socket address syntax"), "{problem}");
}

#[test]
fn bad_duration_is_named_with_file_and_line() {
    rejects("duration.toml", "[websocket]\n  ping_interval = \"soon\"\n", "websocket.ping_interval", 2);
}

#[test]
fn syntax_error_and_missing_file_name_the_file() {
    let file = TempFile::new("syntax.toml", "[listen\nudp = 1\n");
    let problems = Config::check(&file.0).expect_err("accepted");
    assert!(matches!(&problems[..], [ConfigError::Syntax { .. }]), "{}", lines(&problems));
    assert!(problems[0].to_string().contains(&file.0.display().to_string()));
    assert!(problems[0].to_string().contains("line 1"), "{}", problems[0]);

    let missing = env::temp_dir().join("webtrunk-config-does-not-exist.toml");
    let problems = Config::check(&missing).expect_err("accepted");
    assert!(matches!(&problems[..], [ConfigError::Unreadable { .. }]), "{}", lines(&problems));
}

#[test]
fn check_reports_every_semantic_problem_at_once() {
    let text = "[websocket]\npaths = [\"/\", \"ws\"]\nping_interval = \"30s\"\nidle_timeout = \"10s\"\n\n\
                [listen]\ntcp = [\"127.0.0.1:5060\"]\nws = [\"127.0.0.1:5060\"]\n";
    let file = TempFile::new("semantic.toml", text);
    let problems = Config::check(&file.0).expect_err("accepted");
    let at = |line: u32, key: &str| format!("{}:{line}: key `{key}`: ", file.0.display());
    let expected = [at(2, "websocket.paths"), at(4, "websocket.idle_timeout"), at(8, "listen.ws")];
    assert_eq!(problems.len(), expected.len(), "{}", lines(&problems));
    for (problem, prefix) in problems.iter().zip(&expected) {
        assert!(problem.to_string().starts_with(prefix), "{problem} does not start with {prefix}");
    }
    assert!(problems[2].to_string().contains("`listen.tcp`"), "{}", problems[2]);
}

#[test]
fn validate_covers_each_rule() {
    let mut config = Config::default();
    config.server.domains = vec!["sip.example.com".into(), "bad_host".into()];
    config.tls.certificate = Some("/nonexistent/cert.pem".into());
    config.limits.max_message_size = 512;
    config.limits.max_connections_per_ip = 20_000;
    config.limits.handshake_timeout = Duration::ZERO;
    config.listen.tls = addrs(&["0.0.0.0:5060"]);
    config.log.level = "webtrunk=loud".into();
    let problems = config.validate();
    let keys = [
        "server.domains",
        "limits.handshake_timeout",
        "tls.certificate",
        "limits.max_message_size",
        "limits.max_connections_per_ip",
        "listen.tls",
        "log.level",
    ];
    assert_eq!(problems.len(), keys.len(), "{}", lines(&problems));
    for (problem, key) in problems.iter().zip(keys) {
        assert!(problem.to_string().starts_with(&format!("built-in defaults: key `{key}`: ")), "{problem}");
    }

    let mut config = Config::default();
    config.server.domains = Vec::new();
    config.websocket.ping_interval = Duration::ZERO;
    let cert = TempFile::new("cert.pem", "");
    config.tls.certificate = Some(cert.0.clone());
    config.tls.private_key = Some(env::temp_dir().join("webtrunk-config-no-key.pem"));
    let problems = config.validate();
    assert!(matches!(
        &problems[..],
        [ConfigError::NoDomains { .. }, ConfigError::ZeroDuration { .. }, ConfigError::TlsFileMissing { .. }]
    ));
}

#[test]
fn ephemeral_ports_and_separate_addresses_do_not_collide() {
    let mut config = Config::default();
    let ephemeral = addrs(&["127.0.0.1:0"]);
    config.listen.tcp.clone_from(&ephemeral);
    config.listen.tls.clone_from(&ephemeral);
    config.listen.ws = addrs(&["127.0.0.1:0", "127.0.0.2:8080", "0.0.0.0:8081"]);
    config.listen.wss = addrs(&["[::1]:8080", "[::1]:8443"]);
    config.server.domains = vec!["[::1]".into(), "10.0.0.1".into(), "example.com.".into()];
    assert!(config.validate().is_empty(), "{}", lines(&config.validate()));
}

// The environment is read in child copies of this binary: edition 2024 makes `env::set_var`
// unsafe, the crate forbids unsafe, and a child cannot race the other tests.

const SCENARIO: &str = "CONFIG_TEST_SCENARIO";

/// Runs `child_scenario` in a child with exactly `vars` as its environment.
fn in_child(scenario: &str, vars: &[(&str, &str)]) {
    let output = Command::new(env::current_exe().expect("path of this test binary"))
        .args(["--exact", "child_scenario", "--nocapture", "--test-threads=1"])
        .env_clear()
        .env(SCENARIO, scenario)
        .envs(vars.iter().copied())
        .output()
        .expect("run a child copy of this test binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = format!("{scenario}:\n{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && stdout.contains("1 passed"), "{report}");
}

#[test]
fn child_scenario() {
    let Ok(scenario) = env::var(SCENARIO) else { return };
    let state_dir = || Config::load(None).unwrap().server.state_dir;
    match scenario.as_str() {
        "defaults" => {
            let config = Config::load(None).unwrap();
            assert_builtin_defaults(&config);
            assert_eq!(config.server.state_dir, Path::new("/srv/state/webtrunk"));
        }
        "systemd" => assert_eq!(state_dir(), Path::new("/var/lib/webtrunk")),
        "home" => assert_eq!(state_dir(), Path::new("/home/alice/.local/state/webtrunk")),
        "bare" => assert_eq!(state_dir(), Path::new("webtrunk-state")),
        "overrides" => {
            let file = TempFile::new("env.toml", "[listen]\nudp = [\"127.0.0.1:6000\"]\n[limits]\nmax_headers = 64\n");
            let config = Config::load(Some(&file.0)).unwrap();
            assert_eq!(config.listen.udp, addrs(&["127.0.0.1:5070", "127.0.0.1:5071"]));
            assert_eq!(config.limits.max_message_size, 2048);
            assert_eq!(config.limits.max_headers, 64);
            assert_eq!(config.server.domains, ["a.example", "b.example"]);
            assert!(config.listen.wss.is_empty());
            assert_eq!(config.log.level, "info,webtrunk=debug");
            assert!(config.validate().is_empty(), "{}", lines(&config.validate()));
        }
        "env_type" => {
            let message = Config::load(None).unwrap_err().to_string();
            assert!(message.starts_with("environment WEBTRUNK__LIMITS__MAX_HEADERS: key `limits.max_headers`: "));
        }
        "env_unknown" => {
            let message = Config::load(None).unwrap_err().to_string();
            assert_eq!(message, "environment WEBTRUNK__LISTEN__UDPP: key `listen.udpp`: unknown key");
        }
        "env_semantic" => {
            let file = TempFile::new("env-semantic.toml", "[websocket]\npaths = [\"/sip\"]\n");
            let problems = Config::load(Some(&file.0)).unwrap().validate();
            let expected = "environment WEBTRUNK__WEBSOCKET__PATHS: key `websocket.paths`: `sip` must start with '/'";
            assert!(lines(&problems).starts_with(expected), "{}", lines(&problems));
        }
        other => panic!("unknown scenario {other}"),
    }
}

#[test]
fn no_file_gives_the_builtin_defaults() {
    in_child("defaults", &[("XDG_STATE_HOME", "/srv/state"), ("HOME", "/home/alice")]);
}

#[test]
fn state_dir_prefers_systemd_then_xdg_then_home() {
    in_child("systemd", &[("STATE_DIRECTORY", "/var/lib/webtrunk:/var/lib/other"), ("XDG_STATE_HOME", "/srv")]);
    in_child("home", &[("XDG_STATE_HOME", "relative/is/ignored"), ("HOME", "/home/alice")]);
    in_child("bare", &[]);
}

#[test]
fn environment_overrides_file_and_defaults() {
    in_child(
        "overrides",
        &[
            ("WEBTRUNK__LISTEN__UDP", "127.0.0.1:5070,127.0.0.1:5071"),
            ("WEBTRUNK__LIMITS__MAX_MESSAGE_SIZE", "2048"),
            ("WEBTRUNK__SERVER__DOMAINS", "a.example,b.example"),
            ("WEBTRUNK__LISTEN__WSS", ""),
            ("WEBTRUNK__LOG__LEVEL", "info,webtrunk=debug"),
        ],
    );
}

#[test]
fn environment_problems_name_the_variable() {
    in_child("env_type", &[("WEBTRUNK__LIMITS__MAX_HEADERS", "lots")]);
    in_child("env_unknown", &[("WEBTRUNK__LISTEN__UDPP", "127.0.0.1:5060")]);
    in_child("env_semantic", &[("WEBTRUNK__WEBSOCKET__PATHS", "sip")]);
}
