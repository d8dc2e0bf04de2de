//! The shipped systemd unit: hardened as the design asks, wired to the CLI, and accepted
//! by systemd-analyze where systemd is installed.

use std::path::Path;

fn unit() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/webtrunk.service"))
        .expect("conf/webtrunk.service is readable")
}

fn directive(unit: &str, key: &str) -> Vec<String> {
    unit.lines().filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('=').map(str::to_string)).collect()
}

#[test]
fn unit_is_hardened_and_runs_the_cli() {
    let unit = unit();
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("StateDirectory", "webtrunk"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("NoNewPrivileges", "yes"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(directive(&unit, key), vec![value.to_string()], "{key}");
    }
    let start = directive(&unit, "ExecStart").join(" ");
    assert!(start.contains("webtrunk run --config /etc/webtrunk/webtrunk.toml"), "{start}");
    let pre = directive(&unit, "ExecStartPre").join(" ");
    assert!(pre.contains("webtrunk check-config /etc/webtrunk/webtrunk.toml"), "{pre}");
}

#[test]
fn systemd_accepts_the_unit() {
    let out = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .expect("systemd-analyze is installed (scripts/test installs Debian's systemd)");
    assert!(out.status.success());
    let dir = std::env::temp_dir().join(format!("webtrunk-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("webtrunk.service");
    // Point the unit at the binary cargo built, so verify can check the commands exist.
    std::fs::write(&path, unit().replace("/usr/local/bin/webtrunk", env!("CARGO_BIN_EXE_webtrunk"))).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}
