# Shared by the bench scripts (sourced, not run): the binary to measure and the process list.

# BIN: $ANCHORAGE_BIN if set (e.g. an older build, for a side-by-side run), else this tree's
# release build, made now.
anchorage_bin() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
  if [ -n "${ANCHORAGE_BIN:-}" ]; then
    BIN=$ANCHORAGE_BIN
  else
    echo "== building (release)"
    cargo build --release --quiet
    BIN="$CARGO_TARGET_DIR/release/anchorage"
  fi
}

# Processes started by the script (PIDS+=($!)); stop_all kills and reaps them.
PIDS=()
stop_all() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] || continue
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  PIDS=()
}

# A proxy configuration with two relay nodes relay-a and relay-b in set "main":
# two_relay_config FILE SIP_PORT API_PORT NG_A NG_B [EXTRA_TOML]
# With RELAY_ENGINE=rtpproxy the two nodes are RTPProxy nodes at udp:127.0.0.1:NG_A and NG_B.
two_relay_config() {
  local a="ng = \"127.0.0.1:$4\"" b="ng = \"127.0.0.1:$5\""
  if [ "${RELAY_ENGINE:-ng}" = rtpproxy ]; then
    a="rtpproxy = \"udp:127.0.0.1:$4\""; b="rtpproxy = \"udp:127.0.0.1:$5\""
  fi
  cat > "$1" <<CONF
[[proxy.listen]]
transport = "udp"
address = "127.0.0.1:$2"

[api]
listen = "127.0.0.1:$3"

[[proxy.relay_set]]
name = "main"
nodes = [
  { name = "relay-a", $a },
  { name = "relay-b", $b },
]

[proxy.media]
set = "main"
caller_flags = "replace-origin"
callee_flags = "replace-origin"
${6:-}
CONF
}

# A real RTPProxy: sippy's, embedded in the PyPI package rtp.io, from the .venv scripts/test
# makes (or $RTPP_PYTHON), started with its normal command line; its media on 127.0.0.1.
# start_rtpproxy CONTROL_PORT PORT_MIN PORT_MAX LOG [LAUNCHER ...] -> sets RTPP_PID (LAUNCHER:
# e.g. setsid, or taskset -c 1, put before the Python process). Waits until it runs.
start_rtpproxy() {
  local control=$1 min=$2 max=$3 log=$4; shift 4
  local python=${RTPP_PYTHON:-$PWD/.venv/bin/python}
  "$python" -c 'import rtp.io' 2>/dev/null || {
    echo "RTPProxy needs the PyPI package rtp.io in $python (scripts/test makes .venv with it)"; return 1; }
  "$@" "$python" -u -c "import time
from rtp.io import rtpproxy
r = rtpproxy(extra_args=['-F', '-s', 'udp:127.0.0.1:$control', '-l', '127.0.0.1', '-m', '$min', '-M', '$max', '-d', 'WARN'])
print('rtpproxy ready', flush=True)
while True:
    time.sleep(3600)" >"$log" 2>&1 </dev/null &
  RTPP_PID=$!
  local _i
  for _i in $(seq 1 150); do
    grep -q "rtpproxy ready" "$log" 2>/dev/null && return 0
    kill -0 "$RTPP_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "RTPProxy did not start on udp:127.0.0.1:$control:"; tail -20 "$log"; return 1
}

# The management API of the proxy at 127.0.0.1:$API: GET a path.
json() { curl -sf "http://127.0.0.1:$API$1"; }

# Calls anchored on every relay, as the proxy counts them.
anchored_calls() {
  json /v1/relays | python3 -c 'import json,sys; print(sum(r["calls"] for r in json.load(sys.stdin)["relays"]))'
}

# Waits until re-anchoring job $1 has finished; prints its JSON.
wait_job_end() {
  local id=$1
  while :; do
    local j; j=$(json "/v1/jobs/$id")
    if echo "$j" | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["finished"] else 1)'; then
      echo "$j"; return
    fi
    sleep 0.05
  done
}

# callgen's verdict (its --json file $1): calls, media gaps, packets.
report_callgen() {
  python3 - "$1" <<'PY'
import json,sys
r=json.load(open(sys.argv[1]))
c=r["calls"]
def q(k):
    d=r[k]
    return "p50 %s / p99 %s / max %s ms (n=%s)" % (d["p50"], d["p99"], d["max"], d["count"])
print("   calls: total %d, set up %d, completed %d, failed %d, dropped %d, without media %d"
      % (c["total"], c["set_up"], c["completed"], c["failed"], c["dropped"], c["without_media"]))
print("   longest media gap per call:", q("longest_gap_ms"))
print("   gap around each re-INVITE: ", q("reinvite_gap_ms"))
print("   re-INVITE to media:        ", q("reinvite_to_media_ms"))
print("   packets:", r["packets"])
print("   callgen's own max send lateness: %s ms" % r["max_send_late_ms"])
PY
}
