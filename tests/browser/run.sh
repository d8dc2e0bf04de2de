#!/usr/bin/env bash
# Two headless Chromium browsers with JsSIP pages call each other through webtrunk.
#
# Usage (as root, in a fresh network namespace so that WebRTC sees only 127.0.0.1):
#   unshare -n -- bash tests/browser/run.sh <webtrunk-binary> <workdir>
# Brings lo up, writes a config and users file into <workdir>, starts webtrunk with
# RUST_LOG=webtrunk=debug (log: <workdir>/webtrunk.log), waits for its WS port, runs
# tests/browser/call.mjs and exits with its code (0 ok, 1 a check failed, 2 timeout).
# On failure the tail of the webtrunk log goes to stderr. WEBTRUNK_LOG overrides the
# RUST_LOG filter (e.g. webtrunk=trace prints every SIP message).
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: unshare -n -- bash $0 <webtrunk-binary> <workdir>" >&2
  exit 1
fi
bin=$1
workdir=$2
here=$(cd "$(dirname "$0")" && pwd)
ws_port=8080

ip link set lo up
mkdir -p "$workdir"
log=$workdir/webtrunk.log

cat >"$workdir/users.toml" <<'EOF'
[[user]]
name = "alice"
password = "alice-secret"

[[user]]
name = "bob"
password = "bob-secret"

[[user]]
name = "carol"
password = "carol-secret"
EOF

mkdir -p "$workdir/state"
cat >"$workdir/webtrunk.toml" <<EOF
[server]
domains = ["localhost"]
state_dir = "$workdir/state"

[listen]
udp = ["127.0.0.1:0"]
tcp = []
tls = []
ws = ["127.0.0.1:$ws_port"]
wss = []

[registrar]
users_file = "$workdir/users.toml"
EOF

webtrunk_pid=
cleanup() {
  if [ -n "$webtrunk_pid" ]; then
    kill "$webtrunk_pid" 2>/dev/null || true
    wait "$webtrunk_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

RUST_LOG=${WEBTRUNK_LOG:-webtrunk=debug} "$bin" run --config "$workdir/webtrunk.toml" >"$log" 2>&1 &
webtrunk_pid=$!

# Wait (up to 10 s) until the WS port accepts connections.
for _ in $(seq 1 100); do
  if ! kill -0 "$webtrunk_pid" 2>/dev/null; then
    echo "run.sh: webtrunk exited at startup; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$ws_port") 2>/dev/null; then
    break
  fi
  sleep 0.1
done
if ! (exec 3<>"/dev/tcp/127.0.0.1/$ws_port") 2>/dev/null; then
  echo "run.sh: webtrunk is not listening on 127.0.0.1:$ws_port after 10 s; its log:" >&2
  tail -n 50 "$log" >&2
  exit 1
fi

rc=0
timeout -k 5 75 node "$here/call.mjs" "ws://127.0.0.1:$ws_port" "$workdir" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "run.sh: call.mjs exited with $rc; last lines of $log:" >&2
  tail -n 150 "$log" >&2
fi
exit "$rc"
