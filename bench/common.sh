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

# The management API of the proxy at ${API_HOST:-127.0.0.1}:$API: GET a path. With API_NS set,
# curl runs in that network namespace (a proxy on a LAN of namespaces, bench/ha.sh).
json() {
  ${API_NS:+ip netns exec "$API_NS"} curl -sf "http://${API_HOST:-127.0.0.1}:$API$1"
}

# Calls anchored on every relay, as the proxy counts them.
anchored_calls() {
  json /v1/relays | python3 -c 'import json,sys; print(sum(r["calls"] for r in json.load(sys.stdin)["relays"]))'
}

# The relay holding more calls, as the proxy counts them: "name calls".
busiest() {
  json /v1/relays | python3 -c '
import json,sys
r=max(json.load(sys.stdin)["relays"], key=lambda r: r["calls"])
print(r["name"], r["calls"])'
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

# Exits naming the first missing tool: require_tools TOOL[:DEBIAN-PACKAGE] ...
require_tools() {
  local t tool pkg
  for t in "$@"; do
    tool=${t%%:*}; pkg=${t#*:}
    command -v "$tool" >/dev/null && continue
    if [ "$pkg" != "$t" ]; then
      echo "missing tool: $tool (Debian package $pkg)"
    else
      echo "missing tool: $tool"
    fi
    exit 1
  done
}

# A LAN of network namespaces, as crates/testkit/src/lan.rs builds for the tests: one namespace
# holds only a bridge; each host is a namespace joined to it by a veth pair made in the bridge's
# namespace with its host end (eth0) moved straight into the host's, so nothing appears on the
# machine's own links. Host i (from 1, in the order named) gets 10.88.0.(10+i)/24, lo up and
# net.ipv4.ip_nonlocal_bind=1 (a proxy binds a virtual IP it does not hold yet).
#   lan_create PREFIX HOST...   namespaces PREFIX-br and PREFIX-HOST (PREFIX unique: pid)
#   lan_ns HOST / lan_addr HOST the namespace and address of a host
#   lan_delete                  deletes every namespace lan_create made
LAN_PREFIX=
LAN_HOSTS=()
LAN_NETNS=()
lan_create() {
  LAN_PREFIX=$1; shift
  local br="$LAN_PREFIX-br" i=0 host ns
  ip netns add "$br"; LAN_NETNS+=("$br")
  ip -n "$br" link set lo up
  ip -n "$br" link add br0 type bridge
  ip -n "$br" link set br0 up
  for host in "$@"; do
    i=$((i + 1)); ns="$LAN_PREFIX-$host"
    ip netns add "$ns"; LAN_NETNS+=("$ns"); LAN_HOSTS+=("$host")
    ip -n "$br" link add "h$i" type veth peer name eth0 netns "$ns"
    ip -n "$br" link set "h$i" master br0
    ip -n "$br" link set "h$i" up
    ip -n "$ns" addr add "10.88.0.$((10 + i))/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_nonlocal_bind=1
  done
}
lan_ns() { echo "$LAN_PREFIX-$1"; }
lan_addr() {
  local i
  for i in "${!LAN_HOSTS[@]}"; do
    [ "${LAN_HOSTS[$i]}" = "$1" ] && { echo "10.88.0.$((11 + i))"; return; }
  done
  echo "no host $1 on the LAN" >&2; return 1
}
lan_delete() {
  local ns
  for ns in "${LAN_NETNS[@]:-}"; do
    [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null || true
  done
  LAN_NETNS=(); LAN_HOSTS=()
}
# Whether host $1's eth0 has address $2 now (ip -n NS -o addr).
lan_holds() {
  ip -n "$(lan_ns "$1")" -o -4 addr show dev eth0 | grep -q "inet $2/"
}
