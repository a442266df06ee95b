#!/usr/bin/env bash
# A proxy cluster behind a virtual IP (issue #15), on a LAN of network namespaces this script
# makes and deletes (a bridge in a namespace of its own, nothing on the machine's links; the
# same set-up as tests/cluster_support and docs/operations.md "A proxy cluster behind a virtual
# IP"):
#
#   p1, p2   `anchorage proxy` in [cluster] mode = "vip", SIP on the VIP 10.88.0.100:5060, API
#            on the host's own address, and a real keepalived each (unicast VRRPv3, adverts
#            every 100 ms, state BACKUP + nopreempt, the anchorage-check script of the guide);
#   svc      redis-server and two `anchorage relay`s;
#   phones   `anchorage callgen` (caller and callee) placing calls with RTP through the VIP.
#
# 1. Main run, --calls N at --rate R held --hold S; every call re-INVITEs once (same SDP), the
#    re-INVITEs spread over N/R s, and `kill -9` of the active proxy lands in the middle of
#    them. Reported: kill → VIP on the other host (ip -n NS -o addr, polled every ~2 ms),
#    kill → first SIP message sent by the new node (its /metrics, polled every ~5 ms) and
#    kill → first re-INVITE delivered through it (the callee's own record), the takeover in
#    the new node's log, the share of re-INVITEs and BYEs sent after the kill that were
#    answered 200, the media gap (callgen's worst gap until the next step; the calls' longest
#    gaps), calls lost.
# 2. Then `kill -9` of the relay holding more calls: the new owner re-anchors them; reported as
#    bench/failover.sh does (detection, move job, callgen's gaps), calls lost.
# 3. --runs K randomised runs: a steady state of --run-calls live calls (new calls, re-INVITEs
#    and BYEs all the time), the active proxy killed at a random moment of it, the killed
#    proxy started again afterwards (it comes back as the backup). Medians and the worst.
#
# Usage: bench/ha.sh [--calls N] [--rate R] [--hold S] [--runs K] [--run-calls M]
#                    [--run-hold S]
#   defaults: 1000 calls at 200/s held 30 s; 20 runs of 300 live calls held 6 s (each run
#   places 600 calls over 12 s and is killed between 6 and 12 s).
#   ANCHORAGE_BIN=path runs another build.
# Needs: root (network namespaces), ip, keepalived, redis-server, redis-cli, python3, curl,
# setsid, runuser. Results in bench/results/ha-<date>/.
set -euo pipefail
cd "$(dirname "$0")/.."

CALLS=1000
RATE=200
HOLD=30
RUNS=20
RUN_CALLS=
RUN_HOLD=6
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) CALLS=$2; shift 2;;
    --rate) RATE=$2; shift 2;;
    --hold) HOLD=$2; shift 2;;
    --runs) RUNS=$2; shift 2;;
    --run-calls) RUN_CALLS=$2; shift 2;;
    --run-hold) RUN_HOLD=$2; shift 2;;
    *) echo "unknown option $1"; exit 2;;
  esac
done
[ -n "$RUN_CALLS" ] || RUN_CALLS=$((CALLS < 300 ? CALLS : 300))

. bench/common.sh
require_tools ip:iproute2 keepalived:keepalived redis-server:redis-server \
  redis-cli:redis-tools python3:python3 curl:curl setsid:util-linux runuser:util-linux
[ "$(id -u)" = 0 ] || { echo "bench/ha.sh makes network namespaces: run it as root"; exit 1; }

# The re-INVITE of the main run: each call's comes REINV s after its set-up, so they run from
# REINV to REINV + N/R s after the start; the kill is in the middle, at N/R + 8 s (8 s: on a
# busy machine the set-up of 1,000 calls ends seconds after N/R, and every call must be up and
# written to Redis first).
SETUP_S=$(python3 -c "print($CALLS / $RATE)")
REINV=$(python3 -c "print(round($SETUP_S / 2 + 8, 3))")
KILL_AT=$(python3 -c "print(round($SETUP_S + 8, 3))")
python3 -c "import sys; sys.exit(0 if $HOLD >= $SETUP_S * 1.5 + 17 else 1)" || {
  echo "--hold $HOLD is too short for $CALLS calls at $RATE/s: the proxy and the relay are killed"
  echo "within 1.5 × calls/rate + 17 s of the start (here $(python3 -c "print($SETUP_S * 1.5 + 17)") s)"
  exit 2
}

anchorage_bin
OUT="bench/results/ha-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ulimit -n 65536 2>/dev/null || true
# keepalived runs the check as nobody (docs/operations.md): it must be able to run the binary.
runuser -u nobody -- "$BIN" --version >/dev/null 2>&1 || {
  echo "user nobody cannot run $BIN (keepalived's check runs as nobody): make its directories"
  echo "readable and searchable by others, or set ANCHORAGE_BIN to a copy that is"
  exit 1
}

VIP=10.88.0.100
SIP_PORT=5060
API=7060
TOKEN="ha-bench-$$"
RELAY_NAMES=(relay-a relay-b)
RELAY_NG=(2223 2224)
RELAY_METRICS=(9101 9102)
RELAY_PORTS=("30000 39999" "40000 49999")
export NO_COLOR=1

# --- cleanup: keepalived first (SIGTERM: it leaves the VRRP group and removes the VIP), then
# every other process by its pid, then the namespaces.
KEEPALIVED=()
cleanup() {
  local k p
  for k in "${KEEPALIVED[@]:-}"; do
    [ -n "$k" ] && kill -TERM "$k" 2>/dev/null || true
  done
  for k in "${KEEPALIVED[@]:-}"; do
    [ -n "$k" ] || continue
    for _ in $(seq 1 40); do kill -0 "$k" 2>/dev/null || break; sleep 0.05; done
  done
  for p in "$OUT"/*/vrrp.pid "$OUT"/*/keepalived.pid; do
    [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  PIDS+=("${KEEPALIVED[@]:-}")
  stop_all
  lan_delete
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lan_create "anch-ha$$" p1 p2 svc phones
NS_SVC=$(lan_ns svc); NS_PH=$(lan_ns phones)
SVC=$(lan_addr svc); PH=$(lan_addr phones)
echo "== LAN: p1 $(lan_addr p1), p2 $(lan_addr p2), svc $SVC, phones $PH; VIP $VIP; namespaces anch-ha$$-*"
# The API is read from the phones host.
API_NS=$NS_PH

# Runs a command in host $1's namespace (in the foreground: a process started in the background
# is started with `ip netns exec` itself, so that $! is the program's pid — ip execs it).
in_ns() { local ns; ns=$(lan_ns "$1"); shift; ip netns exec "$ns" "$@"; }

# --- svc: Redis and the relays.
ip netns exec "$NS_SVC" redis-server --bind "$SVC" --port 6379 --save '' --appendonly no --protected-mode no \
  --dir "$OUT" >"$OUT/redis.log" 2>&1 &
PIDS+=($!); disown $!
RELAY_PID=()
start_relay() { # index log
  local i=$1 range
  read -r -a range <<<"${RELAY_PORTS[$i]}"
  ip netns exec "$NS_SVC" "$BIN" relay --interface "$SVC" --listen-ng "$SVC:${RELAY_NG[$i]}" \
    --control-allow 10.88.0.0/24 --port-min "${range[0]}" --port-max "${range[1]}" \
    --delete-delay 0 --metrics "$SVC:${RELAY_METRICS[$i]}" >"$2" 2>&1 &
  RELAY_PID[$i]=$!; PIDS+=($!); disown $!
}
start_relay 0 "$OUT/relay-a.log"
start_relay 1 "$OUT/relay-b.log"
for _ in $(seq 1 100); do
  in_ns svc redis-cli -h "$SVC" ping 2>/dev/null | grep -q PONG && break
  sleep 0.05
done
relay_sessions() { # index
  in_ns phones curl -sf "http://$SVC:${RELAY_METRICS[$1]}/metrics" \
    | awk '/^anchorage_relay_active_sessions / {print $2}'
}
# The Call-IDs of the call records in Redis.
redis_left() { in_ns svc redis-cli -h "$SVC" --scan --pattern 'anc:call:*' | sed 's/^anc:call://; s/^{//; s/}$//' | sort; }

# --- p1, p2: the proxies (configuration as in docs/operations.md, two nodes).
proxy_config() { # node
  local addr; addr=$(lan_addr "$1")
  cat >"$OUT/$1/proxy.toml" <<CONF
[node]
id = "$1"

[[proxy.listen]]
transport = "udp"
address = "$VIP:$SIP_PORT"
[[proxy.listen]]
transport = "tcp"
address = "$VIP:$SIP_PORT"

[api]
listen = "$addr:$API"
token = "$TOKEN"

[cluster]
store = "redis://$SVC:6379/0"
mode = "vip"
vip = "$VIP"
heartbeat_ms = 250
lease_ms = 1500

[[proxy.relay_set]]
name = "main"
nodes = [
  { name = "relay-a", ng = "$SVC:${RELAY_NG[0]}" },
  { name = "relay-b", ng = "$SVC:${RELAY_NG[1]}" },
]

[proxy.media]
set = "main"
caller_flags = "replace-origin"
callee_flags = "replace-origin"
CONF
}
declare -A PROXY_PID PROXY_STARTS
start_proxy() { # node
  local n=$1 addr; addr=$(lan_addr "$1")
  PROXY_STARTS[$n]=$(( ${PROXY_STARTS[$n]:-0} + 1 ))
  ip netns exec "$(lan_ns "$n")" "$BIN" proxy -c "$OUT/$n/proxy.toml" >"$OUT/$n/proxy-${PROXY_STARTS[$n]}.log" 2>&1 &
  PROXY_PID[$n]=$!; PIDS+=($!); disown $!
  for _ in $(seq 1 200); do
    API_HOST=$addr json /v1/health >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "the proxy on $n did not start:"; tail -20 "$OUT/$n/proxy-${PROXY_STARTS[$n]}.log"; exit 1
}
proxy_log() { echo "$OUT/$1/proxy-${PROXY_STARTS[$1]}.log"; }
for n in p1 p2; do
  mkdir -p "$OUT/$n"
  proxy_config "$n"
  start_proxy "$n"
done

# --- keepalived on p1 and p2 (docs/operations.md: the check script, keepalived.conf).
keepalived_config() { # node peer priority
  local me=$1 peer=$2 addr peer_addr
  addr=$(lan_addr "$me"); peer_addr=$(lan_addr "$peer")
  cat >"$OUT/$me/anchorage-check" <<CHECK
#!/bin/sh
# \$1: this node's management API, e.g. http://10.0.0.11:7060
for n in 1 2 3 4; do
    $BIN ctl --api "\$1" health --timeout-ms 300 >/dev/null 2>&1 || exit 1
    [ "\$n" = 4 ] || sleep 0.2
done
CHECK
  chmod 755 "$OUT/$me/anchorage-check"
  cat >"$OUT/$me/keepalived.conf" <<CONF
global_defs {
    router_id $me
    vrrp_version 3
    script_user nobody nogroup
    enable_script_security
}

vrrp_script anchorage_health {
    script "$OUT/$me/anchorage-check http://$addr:$API"
    interval 1
    timeout 2
    fall 1
    rise 1
}

vrrp_instance anchorage_sip {
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 51
    priority $3
    advert_int 0.1
    unicast_src_ip $addr
    unicast_peer {
        $peer_addr
    }
    virtual_ipaddress {
        $VIP/24 dev eth0
    }
    track_script {
        anchorage_health weight 0
    }
}
CONF
}
start_keepalived() { # node
  # setsid: its own process group, so the VRRP child it forks can be found by the pid file.
  ip netns exec "$(lan_ns "$1")" setsid keepalived --dont-fork --log-console --log-detail --vrrp \
    --use-file "$OUT/$1/keepalived.conf" --pid "$OUT/$1/keepalived.pid" \
    --vrrp_pid "$OUT/$1/vrrp.pid" >"$OUT/$1/keepalived.log" 2>&1 &
  KEEPALIVED+=($!); disown $!
}
# The VRRP state keepalived on $1 entered last.
vrrp_state() { grep -o 'Entering [A-Z]* STATE' "$OUT/$1/keepalived.log" | tail -1 | awk '{print $2}'; }
wait_for() { # seconds description command...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@"; do
    [ $SECONDS -lt $deadline ] || { echo "   timed out waiting for $what"; return 1; }
    sleep 0.05
  done
}
keepalived_config p1 p2 100
keepalived_config p2 p1 99
T0=$(date +%s.%N)
start_keepalived p1
wait_for 15 "the VIP on p1" lan_holds p1 "$VIP" || { tail -30 "$OUT/p1/keepalived.log"; exit 1; }
start_keepalived p2
is_backup() { [ "$(vrrp_state "$1")" = BACKUP ]; }
wait_for 15 "p2's keepalived a backup" is_backup p2 || { tail -30 "$OUT/p2/keepalived.log"; exit 1; }
echo "   keepalived: the VIP on p1, p2 a backup, after $(python3 -c "import time; print(round(time.time() - $T0, 2))") s"
holder() { if lan_holds p1 "$VIP"; then echo p1; elif lan_holds p2 "$VIP"; then echo p2; fi; }
other() { [ "$1" = p1 ] && echo p2 || echo p1; }
role() { API_HOST=$(lan_addr "$1") json /v1/cluster | python3 -c 'import json,sys; print(json.load(sys.stdin)["role"])'; }
is_active() { [ "$(role "$1" 2>/dev/null)" = active ]; }
wait_for 10 "p1 active" is_active p1

# `kill -9` of proxy $1 (the VIP holder) at unix time $3 (the watcher gets ready first: it takes
# a good part of a second to start on a busy machine), measured from the phones host: writes $2 (JSON):
# kill time (unix s), kill → VIP gone from $1 and on the other host (ip -n NS -o addr), kill →
# the other node's first SIP message sent (anchorage_sip_sent_total in its /metrics).
kill_active() { # node json at_unix
  local dead=$1 new; new=$(other "$1")
  in_ns phones python3 - "${PROXY_PID[$dead]}" "$VIP" "$(lan_ns "$dead")" "$(lan_ns "$new")" \
    "http://$(lan_addr "$new"):$API" "$2" "$3" <<'PY'
import json, os, subprocess, sys, threading, time, urllib.request
pid, vip, ns_dead, ns_new, api, out = int(sys.argv[1]), *sys.argv[2:7]
at = float(sys.argv[7])
TIMEOUT = 3.5  # the goal is 1 s; the script goes on meanwhile only after this
def holds(ns):
    r = subprocess.run(["ip", "-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"],
                       capture_output=True, text=True)
    return f"inet {vip}/" in r.stdout
def counters():
    body = urllib.request.urlopen(api + "/metrics", timeout=1).read().decode()
    got = {}
    for line in body.splitlines():
        for name in ("anchorage_sip_sent_total", "anchorage_sip_requests_total"):
            if line.startswith(name + " "):
                got[name] = float(line.split()[1])
    return got
res = {}
base = counters()
time.sleep(max(0.0, at - time.time()))
t0 = time.time()
os.kill(pid, 9)
res["kill_unix"] = t0
res["late_s"] = t0 - at
def watch_vip():
    while time.time() - t0 < TIMEOUT:
        if "vip_gone_s" not in res and not holds(ns_dead):
            res["vip_gone_s"] = time.time() - t0
        if holds(ns_new):
            res["vip_s"] = time.time() - t0
            return
        time.sleep(0.002)
def served():
    while time.time() - t0 < TIMEOUT:
        try:
            c = counters()
        except Exception:
            c = base
        now = time.time() - t0
        if "received_s" not in res and c.get("anchorage_sip_requests_total", 0) > base.get("anchorage_sip_requests_total", 0):
            res["received_s"] = now
        if c.get("anchorage_sip_sent_total", 0) > base.get("anchorage_sip_sent_total", 0):
            res["served_s"] = now
            return
        time.sleep(0.005)
threads = [threading.Thread(target=watch_vip), threading.Thread(target=served)]
for t in threads: t.start()
for t in threads: t.join()
json.dump(res, open(out, "w"))
PY
}

# The new owner's log after a takeover: kill → "this node holds the virtual IP" and the claim.
takeover_from_log() { # log kill_unix
  python3 - "$1" "$2" <<'PY'
import re, sys, datetime
log, t0 = sys.argv[1], float(sys.argv[2])
def at(line):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z", re.sub(r"\x1b\[[0-9;]*m", "", line))
    if not m:
        return None
    d = datetime.datetime.fromisoformat(m.group(1)[:26]).replace(tzinfo=datetime.timezone.utc)
    return d.timestamp() - t0
seen = claimed = None
for line in open(log, errors="replace"):
    clean = re.sub(r"\x1b\[[0-9;]*m", "", line)
    if "this node holds the virtual IP" in clean and at(line) is not None and at(line) > -1:
        seen = at(line)
    if "calls claimed from the store" in clean and seen is not None:
        calls = re.search(r"calls=(\d+)", clean); ms = re.search(r"ms=([0-9.]+)", clean)
        claimed = (at(line), calls and calls.group(1), ms and float(ms.group(1)))
print("   new node's log: VIP seen %s after the kill; %s" % (
    "%.3f s" % seen if seen is not None else "(no line)",
    "claimed %s calls in %.0f ms (done %.3f s after the kill)" % (claimed[1], claimed[2], claimed[0])
    if claimed else "no claim line"))
PY
}

# What the phones saw around the kill (callgen's JSON $1, its clock's start in unix s $2, the
# re-INVITE $3 s after set-up; kill at unix $4; relay killed at unix $5 or "-"; $6: Call-IDs of
# records left in Redis): requests sent after the kill and their outcome, the first re-INVITE
# delivered after it, calls lost, media gaps. Prints lines, then one line of JSON.
#
# A "gap" that ends when the BYE reaches a side is not a media gap: the other side stopped its
# media when it sent the BYE, and a BYE sent while the VIP moved is retransmitted (Timer E,
# 500 ms) before it arrives. Those calls are counted apart ("tail"); their gaps in the call
# itself were shorter than that tail.
after_kill() {
  python3 - "$@" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
epoch, reinv_s, kill = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
relay_kill = None if sys.argv[5] == "-" else (float(sys.argv[5]) - epoch) * 1000
left = set(l.strip() for l in open(sys.argv[6])) if len(sys.argv) > 6 else set()
k = (kill - epoch) * 1000          # the kill on callgen's clock (ms from its start)
hold = rep["options"]["hold_ms"]
re_after = re_ok = bye_after = bye_ok = inv_after = inv_ok = 0
first_reinvite = None
lost, left_calls = [], []
gaps, tails, unmoved, late_start = [], [], [], []
for c in rep["call_list"]:
    uac, uas = c["uac"], c["uas"]
    if c["outcome"] != "completed":
        lost.append((c["call_id"], c["outcome"], c["reason"]))
    if uac is None or uas is None:
        continue
    if uac["start_ms"] >= k - 0.5:
        inv_after += 1
        inv_ok += uac["setup_ms"] is not None
    if uac["setup_ms"] is None:
        continue
    up = uac["start_ms"] + uac["setup_ms"]
    bye_at = up + hold
    if c["call_id"] in left:
        left_calls.append((bye_at - k, c["call_id"], uac["hangup"] == "local" and "caller" or "callee"))
    moves = [r["at_ms"] for r in uac["reinvites"]]
    # The caller's own re-INVITE as the callee got it: not one of a move (those reach both).
    mine = [r["at_ms"] for r in uas["reinvites"]
            if not any(abs(r["at_ms"] - m) < 1000 for m in moves)]
    if uac["reinvites_sent"] > 0:
        sent = up + reinv_s * 1000
        if sent >= k:
            re_after += 1
            dropped_by_it = "re-INVITE" in (c["reason"] or "")
            if any(a >= sent - 5 for a in mine) and not dropped_by_it:
                re_ok += 1
    for a in mine:
        # 50 ms: the VIP takes longer than that to move, so what arrives before went through
        # the dead node just before it died.
        if a > k + 50 and (first_reinvite is None or a < first_reinvite):
            first_reinvite = a
    if bye_at >= k and (uac["hangup"] is not None or uas["hangup"] is not None):
        bye_after += 1
        bye_ok += c["outcome"] == "completed"
    # Each side's longest gap; a tail if it ended at or after the hangup.
    worst, tail = 0.0, 0.0
    for side in (uac, uas):
        m = side["media"]
        if not m:
            continue
        at, gap = m["longest_gap_at_ms"], m["longest_gap_ms"]
        began = side["start_ms"] + (side["setup_ms"] or 0)
        if at is not None and at >= bye_at - 20 and at - gap >= bye_at - 100:
            # Silent from the other side's BYE on (it stopped sending) until the BYE arrived.
            tail = max(tail, gap)
        elif at is not None and at - gap <= began + 50:
            # Silence from the answer to the first packet: the 200 OK (or its ACK) of a call
            # set up across the kill was retransmitted, or callgen itself was late at set-up;
            # not a gap in flowing media.
            late_start.append(gap)
        else:
            worst = max(worst, m["longest_gap_ms"])
    if tail > worst:
        tails.append(tail)
    else:
        gaps.append(worst)
        if relay_kill is not None and not moves:
            unmoved.append(worst)
def pct(v, p):
    v = sorted(v)
    return round(v[max(0, -(-len(v) * p // 100) - 1)], 1) if v else None
share = lambda ok, n: "%d/%d (%.1f %%)" % (ok, n, 100.0 * ok / n) if n else "none"
print("   after the kill: re-INVITEs answered 200 %s, BYEs answered 200 %s, new calls set up %s"
      % (share(re_ok, re_after), share(bye_ok, bye_after), share(inv_ok, inv_after)))
print("   first re-INVITE delivered through the new node (the callee's record): %s"
      % ("%.3f s after the kill" % ((first_reinvite - k) / 1000) if first_reinvite else "none"))
c = rep["calls"]
print("   calls lost (failed or dropped): %d of %d%s" % (c["failed"] + c["dropped"], c["total"],
      "".join("\n     %s %s: %s" % l for l in lost[:10])))
print("   longest media gap per call within the call: p50 %s / p99 %s / max %s ms (n=%d)"
      % (pct(gaps, 50), pct(gaps, 99), pct(gaps, 100), len(gaps)))
if late_start:
    print("   silence from the answer to the first packet (set-up: a 200 or ACK retransmitted across the kill, or the generator late): %d sides, the longest %s ms"
          % (len(late_start), pct(late_start, 100)))
if tails:
    print("   calls whose longest silence is the wait for a BYE sent during the outage: %d (p50 %s / max %s ms)"
          % (len(tails), pct(tails, 50), pct(tails, 100)))
if relay_kill is not None:
    print("   the same for the calls the relay kill did not move: p99 %s / max %s ms (n=%d)"
          % (pct(unmoved, 99), pct(unmoved, 100), len(unmoved)))
if left:
    print("   call records left in Redis: %d; their hangup relative to the kill:" % len(left))
    for t, cid, who in sorted(left_calls):
        print("     %s: BYE from the %s %+.0f ms" % (cid, who, t))
    for cid in sorted(left - set(x[1] for x in left_calls)):
        print("     %s (not in this run's calls)" % cid)
print(json.dumps({"re_after": re_after, "re_ok": re_ok, "bye_after": bye_after, "bye_ok": bye_ok,
                  "inv_after": inv_after, "inv_ok": inv_ok,
                  "first_reinvite_s": (first_reinvite - k) / 1000 if first_reinvite else None,
                  "lost": c["failed"] + c["dropped"], "calls": c["total"],
                  "without_media": c["without_media"], "gap_p99": pct(gaps, 99),
                  "gap_max": pct(gaps, 100), "tails": len(tails), "tail_max": pct(tails, 100),
                  "redis_left": len(left), "late_start": len(late_start),
                  "late_start_max": pct(late_start, 100), "send_late_ms": rep["max_send_late_ms"]}))
PY
}

# The worst media gap callgen has seen so far (its progress line).
worst_gap_so_far() { tr '\r' '\n' <"$1" | grep -o 'worst gap [0-9]* ms' | tail -1 | awk '{print $3}'; }

callgen() { # json log calls rate hold reinvite_after
  ip netns exec "$NS_PH" "$BIN" callgen --proxy "$VIP:$SIP_PORT" --uac "$PH:5080" --uas "$PH:5090" \
    --media-ip "$PH" --calls "$3" --rate "$4" --hold "${5}s" --reinvite-after "${6}s" \
    --bye-by random --json --progress >"$1" 2>"$2" &
  CALLGEN=$!; PIDS+=($CALLGEN)
}
# callgen's clock: its report counts from its start, and its first progress line comes 1 s
# after it; the wall time of that start (unix s), read from its log as the line arrives.
callgen_epoch() { # log
  python3 - "$1" <<'PY'
import sys, time
deadline = time.time() + 60
while time.time() < deadline:
    with open(sys.argv[1], "rb") as f:
        if b"calls up" in f.read():
            print("%.4f" % (time.time() - 1.0))
            sys.exit(0)
    time.sleep(0.001)
sys.exit("callgen printed no progress line")
PY
}
sleep_until() { python3 -c "import time; time.sleep(max(0, $1 - time.time()))"; }
dialogs() { API_HOST=$(lan_addr "$1") json /v1/cluster | python3 -c 'import json,sys; print(json.load(sys.stdin)["dialogs"])'; }

# ---------------------------------------------------------------------------------------------
echo "== main run: $CALLS calls at $RATE/s held ${HOLD}s through the VIP, a re-INVITE each ${REINV}s after set-up"
API_HOST=$(lan_addr p1)
callgen "$OUT/main-callgen.json" "$OUT/main-callgen.log" "$CALLS" "$RATE" "$HOLD" "$REINV"
EPOCH=$(callgen_epoch "$OUT/main-callgen.log"); echo "$EPOCH" >"$OUT/main-epoch"
deadline=$((SECONDS + ${SETUP_S%.*} + 30))
while :; do
  up=$(anchored_calls 2>/dev/null || echo 0)
  printf '\r   calls anchored: %s/%s' "$up" "$CALLS"
  [ "$up" -ge "$CALLS" ] && break
  [ $SECONDS -lt $deadline ] || { echo; echo "   not every call was set up in time"; break; }
  sleep 0.5
done
echo
for _ in $(seq 1 100); do
  dirty=$(json /v1/health | python3 -c 'import json,sys; print(json.load(sys.stdin)["store"]["dirty_calls"])')
  [ "$dirty" = 0 ] && break
  sleep 0.1
done
KILL_WALL=$(python3 -c "print($EPOCH + $KILL_AT)")
alive=$(anchored_calls)
echo "-- 1. kill -9 of the active proxy (p1) with $alive calls, in the middle of their re-INVITEs (+$KILL_AT s)"
kill_active p1 "$OUT/main-kill.json" "$KILL_WALL"
python3 - "$OUT/main-kill.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
f = lambda k: "%.3f s" % r[k] if k in r else "not within 3.5 s"
print("   kill → VIP gone from p1 %s, on p2 %s; p2's first request received %s, first SIP message sent %s"
      % (f("vip_gone_s"), f("vip_s"), f("received_s"), f("served_s")))
if r["late_s"] > 0.05:
    print("   (the kill came %.2f s later than planned)" % r["late_s"])
PY
KILL_UNIX=$(python3 -c "import json; print(json.load(open('$OUT/main-kill.json'))['kill_unix'])")
API_HOST=$(lan_addr p2)
wait_for 10 "p2 active" is_active p2 || true
deadline=$((SECONDS + 5))
while [ $SECONDS -lt $deadline ]; do
  [ "$(dialogs p2 2>/dev/null || echo 0)" -ge "$alive" ] && break; sleep 0.1
done
API_HOST=$(lan_addr p2) json /v1/cluster >"$OUT/main-p2-cluster.json" || true
# What the new owner holds of each call (CSeqs seen, renumbering), for the lost calls below.
API_HOST=$(lan_addr p2) json /v1/calls >"$OUT/main-p2-calls-after-takeover.json" || true
takeover_from_log "$(proxy_log p2)" "$KILL_UNIX"
echo "   p2 holds $(dialogs p2) dialogs; the media gap so far (callgen's worst, all calls): $(worst_gap_so_far "$OUT/main-callgen.log") ms"

# 2. The relay holding more calls, killed once the re-INVITEs of the main run are over.
sleep_until "$(python3 -c "print(max($KILL_UNIX + 4, $EPOCH + $REINV + $SETUP_S + 1.5))")"
GAP_BEFORE_RELAY=$(worst_gap_so_far "$OUT/main-callgen.log")
read -r NAME HELD < <(busiest)
i=0; [ "$NAME" = relay-b ] && i=1
echo "-- 2. kill -9 of $NAME holding $HELD calls, $(python3 -c "import time; print(round(time.time() - $KILL_UNIX, 1))") s after the proxy's; the worst media gap before it: $GAP_BEFORE_RELAY ms"
R0=$(date +%s.%N)
kill -9 "${RELAY_PID[$i]}"
for _ in $(seq 1 1000); do  # polled as fast as ip netns exec + curl go (~20 ms)
  json /v1/relays | grep -q '"state":"down"' && break
  sleep 0.005
done
R1=$(date +%s.%N)
# The new owner's calls one second into the move (CSeqs it sent), for the lost calls below.
(sleep 1; json /v1/calls >"$OUT/main-p2-calls-after-move.json" || true) &
PIDS+=($!)
JOB=$(json /v1/jobs | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][-1]["id"])')
J=$(wait_job_end "$JOB")
R2=$(date +%s.%N)
echo "   detected down after $(echo "$R1 - $R0" | bc) s; move job: $J"
echo "   kill to last call moved: $(echo "$R2 - $R0" | bc) s"
echo "   waiting for the calls to end"
wait "$CALLGEN" || true
report_callgen "$OUT/main-callgen.json"
sleep 2
redis_left >"$OUT/main-redis-left.txt"
after_kill "$OUT/main-callgen.json" "$EPOCH" "$REINV" "$KILL_UNIX" "$R0" "$OUT/main-redis-left.txt" | tee "$OUT/main-after.txt" | sed '$d'
# For each call lost: its own re-INVITE against the kill, and what the new owner held.
python3 - "$OUT" "$EPOCH" "$KILL_UNIX" "$REINV" <<'PY'
import json, sys
out, epoch, kill, reinv = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rep = json.load(open(out + "/main-callgen.json"))
def calls(name):
    try:
        return {c["call_id"]: c for c in json.load(open(out + "/" + name))["calls"]}
    except Exception:
        return {}
taken, moved = calls("main-p2-calls-after-takeover.json"), calls("main-p2-calls-after-move.json")
k = (kill - epoch) * 1000
shown = 0
for c in rep["call_list"]:
    if c["outcome"] == "completed" or not c["uac"] or c["uac"]["setup_ms"] is None:
        continue
    shown += 1
    if shown > 12:
        print("     … (%s)" % "more in main-callgen.json"); break
    u = c["uac"]
    sent = u["start_ms"] + u["setup_ms"] + reinv * 1000
    t, m = taken.get(c["call_id"], {}), moved.get(c["call_id"], {})
    print("     %s: its re-INVITE (CSeq 2) sent %+.0f ms from the kill; the new owner had the caller's last CSeq %s, then sent the callee its own CSeq %s; the callee got %d re-INVITE(s), the caller %d"
          % (c["call_id"], sent - k, t.get("caller", {}).get("last_cseq"),
             m.get("cseq_offsets", {}).get("own_to_callee"), len(c["uas"]["reinvites"]), len(u["reinvites"])))
PY
echo "   left after the last call: $NAME's peer $(relay_sessions $((1 - i))) relay sessions, p2 $(dialogs p2) dialogs, $(wc -l <"$OUT/main-redis-left.txt") call records in Redis"

# Both nodes and both relays back for the randomised runs.
start_relay "$i" "$OUT/$NAME-2.log"
start_proxy p1
wait_for 15 "p1 a backup again" is_backup p1 || true
relay_up() { json /v1/relays | python3 -c 'import json,sys; sys.exit(0 if all(r["state"]=="up" for r in json.load(sys.stdin)["relays"]) else 1)'; }
wait_for 15 "both relays up at p2" relay_up || true

# ---------------------------------------------------------------------------------------------
if [ "$RUNS" -gt 0 ]; then
  RRATE=$(python3 -c "print(round($RUN_CALLS / $RUN_HOLD, 3))")
  RCALLS=$((RUN_CALLS * 2))
  RREINV=$(python3 -c "print($RUN_HOLD / 2)")
  echo "== 3. $RUNS runs: $RUN_CALLS live calls (${RRATE}/s held ${RUN_HOLD}s, a re-INVITE each at ${RREINV}s, $RCALLS calls a run), the active proxy killed at a random moment of the steady state"
  : >"$OUT/runs.jsonl"
  cp "$OUT/main-redis-left.txt" "$OUT/prev-redis-left.txt"
  for run in $(seq 1 "$RUNS"); do
    ACT=$(holder); NEW=$(other "$ACT")
    API_HOST=$(lan_addr "$ACT")
    wait_for 10 "$ACT active" is_active "$ACT" || true
    callgen "$OUT/run$run-callgen.json" "$OUT/run$run-callgen.log" "$RCALLS" "$RRATE" "$RUN_HOLD" "$RREINV"
    EPOCH=$(callgen_epoch "$OUT/run$run-callgen.log"); echo "$EPOCH" >"$OUT/run$run-epoch"
    OFFSET=$(python3 -c "import random; print(round(random.uniform($RUN_HOLD, 2 * $RUN_HOLD), 3))")
    kill_active "$ACT" "$OUT/run$run-kill.json" "$(python3 -c "print($EPOCH + $OFFSET)")"
    KILL_UNIX=$(python3 -c "import json; print(json.load(open('$OUT/run$run-kill.json'))['kill_unix'])")
    wait "$CALLGEN" || true
    sleep 1
    redis_left >"$OUT/run$run-redis-left.txt"
    comm -13 "$OUT/prev-redis-left.txt" "$OUT/run$run-redis-left.txt" >"$OUT/run$run-redis-new.txt"
    cp "$OUT/run$run-redis-left.txt" "$OUT/prev-redis-left.txt"
    LINE=$(after_kill "$OUT/run$run-callgen.json" "$EPOCH" "$RREINV" "$KILL_UNIX" - "$OUT/run$run-redis-new.txt")
    echo "$LINE" | sed '$d' >"$OUT/run$run-after.txt"
    TAKE=$(takeover_from_log "$(proxy_log "$NEW")" "$KILL_UNIX")
    python3 - "$OUT/run$run-kill.json" "$run" "$ACT" "$OFFSET" "$(echo "$LINE" | tail -1)" \
      "$TAKE" >>"$OUT/runs.jsonl" <<'PY'
import json, re, sys
k = json.load(open(sys.argv[1]))
r = json.loads(sys.argv[5])
m = re.search(r"VIP seen ([0-9.]+) s", sys.argv[6]); c = re.search(r"in ([0-9]+) ms", sys.argv[6])
r.update(run=int(sys.argv[2]), killed=sys.argv[3], offset_s=float(sys.argv[4]),
         vip_s=k.get("vip_s"), served_s=k.get("served_s"), received_s=k.get("received_s"),
         seen_s=float(m.group(1)) if m else None, claim_ms=float(c.group(1)) if c else None)
print(json.dumps(r))
PY
    python3 - "$OUT/runs.jsonl" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])][-1]
f = lambda v, u="s": "%.3f %s" % (v, u) if v is not None else "-"
print("   run %2d: %s killed %.1f s in; VIP %s, served %s, first re-INVITE %s; re-INVITEs %d/%d, BYEs %d/%d, new calls %d/%d; lost %d of %d; gap p99 %s max %s ms; BYE-delayed tails %d (max %s ms); records left %d"
      % (r["run"], r["killed"], r["offset_s"], f(r["vip_s"]), f(r["served_s"]), f(r["first_reinvite_s"]),
         r["re_ok"], r["re_after"], r["bye_ok"], r["bye_after"], r["inv_ok"], r["inv_after"],
         r["lost"], r["calls"], r["gap_p99"], r["gap_max"], r["tails"], r["tail_max"], r["redis_left"]))
PY
    # The killed node back (a backup now: nopreempt), and the calls' records gone.
    start_proxy "$ACT"
    wait_for 15 "$ACT a backup again" is_backup "$ACT" || true
    if [ -s "$OUT/run$run-redis-new.txt" ]; then
      sed -n '/call records left/,$p' "$OUT/run$run-after.txt" | head -12 | sed 's/^/       /'
    fi
    phantom=$(dialogs "$NEW")
    [ "$phantom" = 0 ] || echo "           $NEW still holds $phantom dialogs after the run's last call"
    sessions="$(relay_sessions 0)/$(relay_sessions 1)"
    [ "$sessions" = 0/0 ] || echo "           relay sessions left after the run's last call (relay-a/relay-b): $sessions"
  done
  python3 - "$OUT/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def col(k):
    return [r[k] for r in runs if r.get(k) is not None]
def line(name, k, worst=max, unit="s"):
    v = col(k)
    if not v:
        print("   %-44s -" % name); return
    print("   %-44s median %.3f %s, worst %.3f %s (n=%d)" % (name, statistics.median(v), unit, worst(v), unit, len(v)))
print("== summary of %d runs" % len(runs))
line("kill → VIP on the other node", "vip_s")
line("kill → the new node's first SIP message", "served_s")
line("kill → first re-INVITE through the new node", "first_reinvite_s")
line("kill → the new node saw the VIP (its log)", "seen_s")
line("claim of every call (the new node's log)", "claim_ms", unit="ms")
line("longest media gap per call, p99", "gap_p99", unit="ms")
line("longest media gap per call, max", "gap_max", unit="ms")
tot = lambda k: sum(r[k] for r in runs)
print("   after the kills: re-INVITEs answered 200 %d/%d, BYEs %d/%d, new calls set up %d/%d"
      % (tot("re_ok"), tot("re_after"), tot("bye_ok"), tot("bye_after"), tot("inv_ok"), tot("inv_after")))
print("   calls lost: %d of %d (worst run %d)" % (tot("lost"), tot("calls"), max(r["lost"] for r in runs)))
print("   calls whose BYE waited out the outage (a silence at the end, not a gap): %d, the longest %s ms"
      % (tot("tails"), max([r["tail_max"] for r in runs if r["tail_max"] is not None] or [None], key=lambda x: x or 0)))
print("   call records left in Redis after the runs' last calls: %d (runs: %s)"
      % (tot("redis_left"), [r["redis_left"] for r in runs]))
over = [r["run"] for r in runs if (r.get("served_s") or 99) > 1.0]
print("   runs with signalling served later than 1 s after the kill: %s" % (over or "none"))
PY
fi
echo "results in $OUT"
