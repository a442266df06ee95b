#!/usr/bin/env bash
# Restart recovery (issue #14): live calls with media (anchorage callgen) through
# `anchorage proxy` with its calls in Redis, across two `anchorage relay` processes; then
# `kill -9` of the proxy and a start of the same node. A baseline phase first, in the same
# run: the same calls drained by a proxy that did not restart (the single-node figure). Reported: how long the new process took
# to load every call (its own log line), the calls it found against those alive, then every
# call re-anchored (relay-a drained) by the restarted proxy: how long the move took, the gap
# around each re-INVITE and the longest media gap per call (callgen), and the calls lost.
#
# Usage: bench/restart.sh [--calls N] [--rate R] [--hold SECONDS]
#   defaults: 1000 calls set up at 200/s, held 40 s.
#   ANCHORAGE_BIN=path runs another build.
# Needs: the release build (made here), python3, curl, redis-server. Results in
# bench/results/restart-<date>/.
set -euo pipefail
cd "$(dirname "$0")/.."

CALLS=1000
RATE=200
HOLD=40
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) CALLS=$2; shift 2;;
    --rate) RATE=$2; shift 2;;
    --hold) HOLD=$2; shift 2;;
    *) echo "unknown option $1"; exit 2;;
  esac
done
for tool in python3 curl redis-server; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool"; exit 1; }
done

. bench/common.sh
anchorage_bin
OUT="bench/results/restart-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || true

SIP=28060; API=28061; NG_A=28223; NG_B=28224; UAS=28090; REDIS=28379; MET_A=28225; MET_B=28226
trap stop_all EXIT

two_relay_config "$OUT/proxy.toml" "$SIP" "$API" "$NG_A" "$NG_B" "
[node]
id = \"bench-restart\"

[cluster]
store = \"redis://127.0.0.1:$REDIS/0\""

redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT" \
  >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
"$BIN" relay --listen-ng "127.0.0.1:$NG_A" --interface 127.0.0.1 --port-min 30000 \
  --port-max 39999 --delete-delay 0 --metrics "127.0.0.1:$MET_A" >"$OUT/relay-a.log" 2>&1 &
PIDS+=($!)
"$BIN" relay --listen-ng "127.0.0.1:$NG_B" --interface 127.0.0.1 --port-min 40000 \
  --port-max 49999 --delete-delay 0 --metrics "127.0.0.1:$MET_B" >"$OUT/relay-b.log" 2>&1 &
PIDS+=($!)

start_proxy() { # log file
  "$BIN" proxy -c "$OUT/proxy.toml" >"$1" 2>&1 &
  PROXY=$!; PIDS+=($PROXY)
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$API/v1/health" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "the proxy did not start:"; tail -20 "$1"; exit 1
}

# One phase: the calls, then (restart) kill -9 and a start of the proxy, then relay-a drained.
# The baseline phase drains the same way without the restart, for the single-node figure in
# the same run.
phase() { # restart|baseline
  local phase=$1
  echo "== $phase: $CALLS calls at $RATE/s held ${HOLD}s through a proxy with the Redis store"
  start_proxy "$OUT/$phase-proxy-1.log"
  # Every call on relay-a, so the drain moves them all.
  curl -sf -X POST "http://127.0.0.1:$API/v1/relays/relay-a/undrain" >/dev/null
  curl -sf -X POST "http://127.0.0.1:$API/v1/relays/relay-b/drain" >/dev/null
  "$BIN" callgen --proxy "127.0.0.1:$SIP" --uas "127.0.0.1:$UAS" --calls "$CALLS" \
    --rate "$RATE" --hold "${HOLD}s" --json --progress >"$OUT/$phase-callgen.json" \
    2>"$OUT/$phase-callgen.log" &
  CALLGEN=$!; PIDS+=($CALLGEN)
  local deadline=$((SECONDS + CALLS / RATE + 30)) up
  while :; do
    up=$(anchored_calls)
    printf '\r   calls anchored: %s/%s' "$up" "$CALLS"
    [ "$up" -ge "$CALLS" ] && break
    [ $SECONDS -lt $deadline ] || { echo; echo "   not every call was set up in time"; break; }
    sleep 0.5
  done
  echo
  curl -sf -X POST "http://127.0.0.1:$API/v1/relays/relay-b/undrain" >/dev/null
  # Every change written before the crash (the store's own backlog is what a crash would lose).
  for _ in $(seq 1 100); do
    dirty=$(json /v1/health | python3 -c 'import json,sys; print(json.load(sys.stdin)["store"]["dirty_calls"])')
    [ "$dirty" = 0 ] && break
    sleep 0.1
  done
  local alive; alive=$(anchored_calls)
  if [ "$phase" = restart ]; then
    echo "   kill -9 of the proxy with $alive calls, then the same node started again"
    local t0 t1; t0=$(date +%s.%N)
    kill -9 "$PROXY"
    wait "$PROXY" 2>/dev/null || true
    start_proxy "$OUT/$phase-proxy-2.log"
    t1=$(date +%s.%N)
    echo "   $(grep -m1 -o "[0-9]* calls loaded from the store in [0-9]* ms" "$OUT/$phase-proxy-2.log" || echo "no load line")"
    echo "   kill to API serving again: $(echo "$t1 - $t0" | bc) s; calls found $(anchored_calls) of $alive"
  fi
  echo "   every call re-anchored (relay-a drained)"
  local t2 t3 job j; t2=$(date +%s.%N)
  job=$(curl -sf -X POST "http://127.0.0.1:$API/v1/relays/relay-a/drain" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  j=$(wait_job_end "$job")
  t3=$(date +%s.%N)
  echo "   move job: $j"
  echo "   drain to last call moved: $(echo "$t3 - $t2" | bc) s"
  echo "   waiting for the calls to end"
  wait "$CALLGEN" || true
  report_callgen "$OUT/$phase-callgen.json"
  sleep 2
  echo "   relay sessions left after the last call: relay-a $(sessions "$MET_A"), relay-b $(sessions "$MET_B")"
  kill -9 "$PROXY" 2>/dev/null || true
  wait "$PROXY" 2>/dev/null || true
}

sessions() { curl -sf "http://127.0.0.1:$1/metrics" | awk '/^anchorage_relay_active_sessions / {print $2}'; }

phase baseline
phase restart
echo "results in $OUT"
