#!/usr/bin/env bash
# Re-anchoring under load: live calls with media (anchorage callgen) through `anchorage proxy`
# across two `anchorage relay` processes.
#
#   kill:  the relay holding more calls is killed with `kill -9`; reported: failure detection
#          time (kill to the proxy marking the node down), time until the move job ended (the
#          last call's re-INVITEs answered), callgen's longest media gap per call (p50/p99/max)
#          and the gap around each re-INVITE, calls lost.
#   stop:  the same with `kill -STOP` (a hung relay: no ICMP, found by its silence window).
#   drain: the same calls, the relay drained with `anchorage ctl drain` while it lives;
#          reported: total time, calls moved per second, the media gaps (ideally none).
#
# Usage: bench/failover.sh [--calls N] [--rate R] [--hold SECONDS]
#                          [--phase kill|stop|drain|both|all] [--health-ms MS] [--no-media]
#                          [--rtpproxy]
#   defaults: 1000 calls set up at 200/s, held 25 s, phases kill and drain ("both"; "all" adds
#   stop), health pings every 100 ms (the proxy's default).
#   --rtpproxy: the two relay nodes are real RTPProxy processes (sippy's RTPProxy from the PyPI
#   package rtp.io in .venv) driven by the proxy as RTPProxy nodes, instead of `anchorage relay`.
#   ANCHORAGE_BIN=path runs another build (e.g. the previous one, for a side-by-side run).
# Needs: the release build (made here), python3. Results in bench/results/failover-<date>/.
set -euo pipefail
cd "$(dirname "$0")/.."

CALLS=1000
RATE=200
HOLD=25
PHASE=both
HEALTH_MS=100
MEDIA_ARG=()
RELAY_ENGINE=ng
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) CALLS=$2; shift 2;;
    --rate) RATE=$2; shift 2;;
    --hold) HOLD=$2; shift 2;;
    --phase) PHASE=$2; shift 2;;
    --health-ms) HEALTH_MS=$2; shift 2;;
    --no-media) MEDIA_ARG=(--no-media); shift;;
    --rtpproxy) RELAY_ENGINE=rtpproxy; shift;;
    *) echo "unknown option $1"; exit 2;;
  esac
done
command -v python3 >/dev/null || { echo "missing tool: python3"; exit 1; }

. bench/common.sh
anchorage_bin
OUT="bench/results/failover-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || true

SIP=26060; API=26061; NG_A=26223; NG_B=26224; UAS=26090
trap stop_all EXIT

two_relay_config "$OUT/proxy.toml" "$SIP" "$API" "$NG_A" "$NG_B" "[proxy.relay_health]
interval_ms = $HEALTH_MS"

start_system() { # phase
  if [ "$RELAY_ENGINE" = rtpproxy ]; then
    start_rtpproxy "$NG_A" 30000 39999 "$OUT/$1-relay-a.log" || exit 1
    PIDS+=("$RTPP_PID"); RELAY_A=$RTPP_PID
    start_rtpproxy "$NG_B" 40000 49999 "$OUT/$1-relay-b.log" || exit 1
    PIDS+=("$RTPP_PID"); RELAY_B=$RTPP_PID
  else
    "$BIN" relay --listen-ng "127.0.0.1:$NG_A" --interface 127.0.0.1 --port-min 30000 \
      --port-max 39999 --delete-delay 0 >"$OUT/$1-relay-a.log" 2>&1 &
    PIDS+=($!); RELAY_A=$!
    "$BIN" relay --listen-ng "127.0.0.1:$NG_B" --interface 127.0.0.1 --port-min 40000 \
      --port-max 49999 --delete-delay 0 >"$OUT/$1-relay-b.log" 2>&1 &
    PIDS+=($!); RELAY_B=$!
  fi
  "$BIN" proxy -c "$OUT/proxy.toml" >"$OUT/$1-proxy.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 50); do
    curl -sf "http://127.0.0.1:$API/v1/relays" >/dev/null 2>&1 && break
    sleep 0.1
  done
}


# Places the calls in the background; waits until all are up.
start_calls() { # phase
  "$BIN" callgen --proxy "127.0.0.1:$SIP" --uas "127.0.0.1:$UAS" --calls "$CALLS" \
    --rate "$RATE" --hold "${HOLD}s" "${MEDIA_ARG[@]}" --json --progress >"$OUT/$1-callgen.json" \
    2>"$OUT/$1-callgen.log" &
  CALLGEN=$!; PIDS+=($CALLGEN)
  local deadline=$((SECONDS + CALLS / RATE + 20))
  while [ $SECONDS -lt $deadline ]; do
    local up
    up=$(anchored_calls)
    printf '\r   calls anchored: %s/%s' "$up" "$CALLS"
    [ "$up" -ge "$CALLS" ] && { echo; return 0; }
    sleep 0.5
  done
  echo; echo "   not every call was set up in time (see $OUT/$1-callgen.log)"
}




# A relay failure: signal 9 (kill) or STOP (hang) to the relay holding more calls.
fail_phase() { # phase signal
  local phase=$1 sig=$2
  echo "== $phase ($sig): $CALLS calls at $RATE/s, held ${HOLD}s, health pings every ${HEALTH_MS} ms, relay nodes: $RELAY_ENGINE"
  start_system "$phase"
  start_calls "$phase"
  sleep 2
  read -r NAME HELD < <(busiest)
  PID=$RELAY_A; [ "$NAME" = relay-b ] && PID=$RELAY_B
  echo "   signal $sig to $NAME (pid $PID) holding $HELD calls"
  T0=$(date +%s.%N)
  kill "-$sig" "$PID"
  while ! json /v1/relays | grep -q '"state":"down"'; do sleep 0.005; done
  T1=$(date +%s.%N)
  echo "   detected down after $(echo "$T1 - $T0" | bc) s ($(json /v1/relays | python3 -c '
import json,sys
r=[r for r in json.load(sys.stdin)["relays"] if r["state"]=="down"][0]
print("reason %s, silent %s ms" % (r.get("down_reason"), r.get("down_silent_ms")))' 2>/dev/null || echo "reason not reported"))"
  # The job the proxy started for the dead node is the newest one.
  JOB=$(json /v1/jobs | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][-1]["id"])')
  J=$(wait_job_end "$JOB")
  T2=$(date +%s.%N)
  echo "   move job: $J"
  echo "   detection to last call moved: $(echo "$T2 - $T1" | bc) s; $sig to last call moved: $(echo "$T2 - $T0" | bc) s"
  echo "   waiting for the calls to end"
  wait "$CALLGEN" || true
  report_callgen "$OUT/$phase-callgen.json"
  [ "$sig" = STOP ] && kill -CONT "$PID" 2>/dev/null
  stop_all
}

if [ "$PHASE" = kill ] || [ "$PHASE" = both ] || [ "$PHASE" = all ]; then
  fail_phase kill 9
fi
if [ "$PHASE" = stop ] || [ "$PHASE" = all ]; then
  fail_phase stop STOP
fi

if [ "$PHASE" = drain ] || [ "$PHASE" = both ] || [ "$PHASE" = all ]; then
  echo "== drain: $CALLS calls at $RATE/s, held ${HOLD}s"
  start_system drain
  start_calls drain
  sleep 2
  read -r NAME HELD < <(busiest)
  echo "   draining $NAME holding $HELD calls"
  T0=$(date +%s.%N)
  "$BIN" ctl --api "127.0.0.1:$API" drain "$NAME" | tee "$OUT/drain-ctl.txt" | sed 's/^/   /'
  T1=$(date +%s.%N)
  SECS=$(echo "$T1 - $T0" | bc)
  echo "   drain of $HELD calls: $SECS s with ctl (it polls every 100 ms), $(echo "scale=0; $HELD / $SECS" | bc) calls/s"
  JOB_S=$(tail -1 "$OUT/drain-ctl.txt" | sed -n 's/.* \([0-9.]*\) s, finished/\1/p')
  [ -n "$JOB_S" ] && echo "   the job itself: $JOB_S s, $(echo "scale=0; $HELD / $JOB_S" | bc) calls/s"
  wait "$CALLGEN" || true
  report_callgen "$OUT/drain-callgen.json"
  stop_all
fi
echo "results in $OUT"
