#!/usr/bin/env bash
# Browser <-> plain-RTP trunk calls through webtrunk with rtpengine bridging the media.
#
# Usage (as root, in a fresh network namespace so that WebRTC sees only 127.0.0.1):
#   unshare -n -- bash tests/browser/run_trunk.sh <webtrunk-binary> <workdir>
# Brings lo up and starts, each bounded and each ended by its PID on exit:
#   - rtpengine (userspace, --table=-1), ng on 127.0.0.1:$ng_port, log <workdir>/rtpengine.log;
#     --delete-delay=0 so a deleted call leaves its list at once;
#   - SIPp as the trunk on UDP 127.0.0.1:$trunk_port (tests/sipp/trunk_media_answer.xml,
#     -rtp_echo on 127.0.0.1:$trunk_media_port), one call; its exit code goes to
#     <workdir>/trunk_sipp.rc, its errors to <workdir>/trunk_sipp_errors.log;
#   - webtrunk (ws://127.0.0.1:$ws_port, UDP 127.0.0.1:$sip_port) with <workdir>/webtrunk.toml
#     ([media] rtpengine, a "carrier" trunk with media = "bridge", route "0", DID +15550100
#     for alice), log <workdir>/webtrunk.log;
# then runs tests/browser/trunk_call.mjs and exits with its code (0 ok, 1 a check failed,
# 2 timeout). On failure the tails of the logs go to stderr. WEBTRUNK_LOG overrides the
# RUST_LOG filter (e.g. webtrunk=trace prints every SIP message).
set -euo pipefail

if [ "$#" -ne 2 ]; then
  echo "usage: unshare -n -- bash $0 <webtrunk-binary> <workdir>" >&2
  exit 1
fi
bin=$1
workdir=$2
here=$(cd "$(dirname "$0")" && pwd)
sipp_dir=$(cd "$here/../sipp" && pwd)

# A fresh namespace has nothing bound: fixed ports are free.
ws_port=8080
sip_port=5060
ng_port=22222
trunk_port=5070
trunk_media_port=16000
carrier_port=5080
carrier_media_port=16100
rtp_min=30000
rtp_max=30099

ip link set lo up
mkdir -p "$workdir"
log=$workdir/webtrunk.log
rtpengine_log=$workdir/rtpengine.log
trunk_rc=$workdir/trunk_sipp.rc
trunk_errors=$workdir/trunk_sipp_errors.log
rm -f "$trunk_rc" "$trunk_errors"

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

# A UDP port answers when something is bound there: ss lists it.
udp_bound() {
  ss -Hlun "sport = :$1" | grep -q .
}

wait_for() {
  local what=$1 pid=$2 check=$3 logfile=$4
  for _ in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run_trunk.sh: $what exited at startup; its log:" >&2
      tail -n 50 "$logfile" >&2 || true
      exit 1
    fi
    if eval "$check"; then
      return 0
    fi
    sleep 0.1
  done
  echo "run_trunk.sh: $what is not ready after 10 s; its log:" >&2
  tail -n 50 "$logfile" >&2 || true
  exit 1
}

rtpengine_bin=$(command -v rtpengine || echo /usr/sbin/rtpengine)
"$rtpengine_bin" --config-file=none --foreground --table=-1 --interface=127.0.0.1 \
  --listen-ng=127.0.0.1:$ng_port --port-min=$rtp_min --port-max=$rtp_max \
  --delete-delay=0 --log-stderr --log-level=6 </dev/null >"$rtpengine_log" 2>&1 &
pids+=($!)
wait_for rtpengine "${pids[-1]}" "udp_bound $ng_port" "$rtpengine_log"

# The trunk: one call, bounded by -timeout; the wrapper records SIPp's exit code. SIPp's own
# PID is what cleanup kills (the wrapper then ends too).
(
  rc=0
  sipp -sf "$sipp_dir/trunk_media_answer.xml" -i 127.0.0.1 -p $trunk_port -t u1 -m 1 \
    -mi 127.0.0.1 -mp $trunk_media_port -rtp_echo -nostdin -timeout 70s \
    -trace_err -error_file "$trunk_errors" </dev/null >/dev/null 2>>"$trunk_errors" &
  echo $! >"$workdir/trunk_sipp.pid"
  wait $! || rc=$?
  echo "$rc" >"$trunk_rc"
) &
pids+=($!)
wait_for "the trunk SIPp" "${pids[-1]}" "udp_bound $trunk_port" "$trunk_errors"
pids+=("$(cat "$workdir/trunk_sipp.pid")")

cat >"$workdir/users.toml" <<'EOF'
[[user]]
name = "alice"
password = "alice-secret"

[[user]]
name = "bob"
password = "bob-secret"
EOF

media_table="[media]
rtpengine = [\"127.0.0.1:$ng_port\"]
timeout = \"1s\"
retries = 2
"
trunk_media='media = "bridge"
codecs = ["PCMU", "PCMA"]'

mkdir -p "$workdir/state"
cat >"$workdir/webtrunk.toml" <<EOF
[server]
domains = ["localhost"]
state_dir = "$workdir/state"

[listen]
udp = ["127.0.0.1:$sip_port"]
tcp = []
tls = []
ws = ["127.0.0.1:$ws_port"]
wss = []

[registrar]
users_file = "$workdir/users.toml"

[proxy]
# SIPp plays one scenario and would take an OPTIONS ping for a call.
trunk_health_interval = "0s"

$media_table
[[trunk]]
name = "carrier"
targets = [{ host = "127.0.0.1", port = $trunk_port }]
transport = "udp"
inbound_sources = ["127.0.0.1"]
# The trunk SIPp listens on UDP only: keep large INVITEs on UDP (loopback has no MTU
# problem) rather than switching to TCP as RFC 3261 §18.1.1 asks for over 1300 bytes.
large_message = "send"
$trunk_media

[[route]]
name = "out"
pattern = "0"
trunks = ["carrier"]

[[did]]
number = "+15550100"
users = ["alice"]
EOF

RUST_LOG=${WEBTRUNK_LOG:-webtrunk=debug} "$bin" run --config "$workdir/webtrunk.toml" >"$log" 2>&1 &
pids+=($!)
wait_for webtrunk "${pids[-1]}" "(exec 3<>/dev/tcp/127.0.0.1/$ws_port) 2>/dev/null" "$log"

rc=0
RTPENGINE_NG=127.0.0.1:$ng_port WEBTRUNK_UDP=127.0.0.1:$sip_port \
  CARRIER_SIP_PORT=$carrier_port CARRIER_MEDIA_PORT=$carrier_media_port \
  TRUNK_SIPP_RC=$trunk_rc TRUNK_SIPP_ERRORS=$trunk_errors \
  timeout -k 5 85 node "$here/trunk_call.mjs" "ws://127.0.0.1:$ws_port" "$workdir" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "run_trunk.sh: trunk_call.mjs exited with $rc" >&2
  for file in "$trunk_errors" "$workdir/carrier_sipp_errors.log" "$rtpengine_log" "$log"; do
    if [ -s "$file" ]; then
      echo "---- last lines of $file:" >&2
      tail -n 80 "$file" >&2
    fi
  done
fi
exit "$rc"
