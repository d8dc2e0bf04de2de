//! Running a browser script (tests/browser/*.sh) inside a private network namespace, and
//! failing (never skipping) when a tool it needs is missing.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Panics naming every missing program and npm package; `programs` are looked up on PATH
/// besides what every browser test needs (unshare, ip, node, chromium, jssip, esbuild,
/// playwright-core).
pub fn check_installed(programs: &[(&str, &str)]) {
    let mut missing = Vec::new();
    for (program, package) in [("unshare", "util-linux"), ("ip", "iproute2"), ("node", "nodejs")].iter().chain(programs)
    {
        if !on_path(program) {
            missing.push(format!("{package} ({program})"));
        }
    }
    if !Path::new("/usr/bin/chromium").is_file() {
        missing.push("chromium (apt-get install chromium)".to_owned());
    }
    assert!(missing.is_empty(), "the browser test needs: {}; scripts/test installs them", missing.join(", "));
    let node = manifest_dir().join("tests/node");
    for package in ["jssip", "esbuild", "playwright-core"] {
        assert!(
            node.join("node_modules").join(package).is_dir(),
            "npm package {package} is not installed: run `npm ci` in {} (scripts/test does this)",
            node.display()
        );
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A fresh work directory under the system temp dir.
pub fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("webtrunk-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `timeout -k 5 <namespace_limit> unshare [-r] -n -- bash tests/browser/<script>
/// <webtrunk> <workdir>`, killed on drop, and given up after `limit` (a little more than
/// `namespace_limit`) as the last resort.
pub async fn run_in_namespace(script: &str, workdir: &Path, namespace_limit: Duration, limit: Duration) -> Output {
    let mut command = tokio::process::Command::new("timeout");
    command.args(["-k", "5", &namespace_limit.as_secs().to_string(), "unshare"]);
    // Without root, a user namespace maps us to root inside it (needs unprivileged user
    // namespaces); as root a plain network namespace is enough.
    if !is_root() {
        command.arg("-r");
    }
    command
        .args(["-n", "--", "bash"])
        .arg(manifest_dir().join("tests/browser").join(script))
        .arg(env!("CARGO_BIN_EXE_webtrunk"))
        .arg(workdir)
        .current_dir(manifest_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(limit, command.output())
        .await
        .expect("the browser script finishes within its time limit")
        .expect("timeout, unshare and bash run")
}
