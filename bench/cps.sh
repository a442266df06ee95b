#!/usr/bin/env bash
# Calls per second through a SIP proxy, ours and Kamailio's in the same run: signalling only,
# or with --media every call's SDP anchored on a media relay (our proxy + `anchorage relay`
# against Kamailio's rtpengine module + Debian's rtpengine, both relays in userspace).
#
# SIPp UAC -> proxy -> SIPp UAS on loopback, with the scenarios Kamailio's figures in
# ../shared/peers were measured with: INVITE/100/180/200/ACK, a 1 s hold, BYE/200, following
# Record-Route. The caller addresses the callee and sends to the proxy (-rsa). For each system the
# rate steps up until a step fails. A step passes when every call was placed and none failed,
# and the achieved rate is at least 95 % of the target (the criterion of ../shared/peers).
# CPU is the proxy's own process tree (utime+stime from /proc) over the step.
#
# Usage: bench/cps.sh [--quick] [--steps SECONDS] [--media] [--rtpproxy] [--redis] [--overload] [--old BIN] [RATE ...]
#   --quick   5 s steps instead of 20 s
#   --steps   step length in seconds (the issues ask for 30)
#   --media   anchor every call on a relay (offer, answer, delete per call)
#   --rtpproxy with --media (implied), also run our proxy with a real RTPProxy node as its media
#             engine (sippy's RTPProxy from the PyPI package rtp.io in .venv, started with its
#             normal command line; U, L and D per call, the proxy rewriting the SDP), in the
#             same run, between our proxy + relay and Kamailio + rtpengine; its relay CPU is
#             the RTPProxy process's
#   --redis   also run our proxy with its calls in Redis ([cluster] store on a redis-server this
#             script starts), in the same run: its CPU per call counts the proxy's and Redis's,
#             and the ratio to the memory store is printed per rate both passed
#   --overload after each system's ladder, steps at 1.2x, 1.5x and 2x its highest clean rate,
#             then a recovery step at 1000/s: calls ok, failed, answered 503, whether the
#             proxy (and relay) lived through it, the proxy's peak RSS, and whether the relay
#             was ever marked down (ours)
#   --old BIN also run an older anchorage build (e.g. before a redesign) in the same run, between
#             this tree's and Kamailio, and print the ratio new/old
#   RATE ...  the ladder (default: 500 1000 1500 2000 3000 4000 5000 6000)
# Needs: sipp (sip-tester), kamailio; builds anchorage in release.
set -euo pipefail
cd "$(dirname "$0")/.."

STEP=20
MEDIA=0
RTPPROXY=0
OVERLOAD=0
REDIS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) STEP=5; shift;;
    --steps) STEP=$2; shift 2;;
    --media) MEDIA=1; shift;;
    --rtpproxy) MEDIA=1; RTPPROXY=1; shift;;
    --overload) OVERLOAD=1; shift;;
    --redis) REDIS=1; shift;;
    --old) OLD_BIN=$2; shift 2;;
    *) break;;
  esac
done
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(500 1000 1500 2000 3000 4000 5000 6000)

TOOLS=(sipp kamailio)
[ "$MEDIA" = 1 ] && TOOLS+=(rtpengine)
[ "$REDIS" = 1 ] && TOOLS+=(redis-server)
for tool in "${TOOLS[@]}"; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool (run scripts/test to install it)"; exit 1; }
done

# The binary (this tree's release build, or $ANCHORAGE_BIN) and start_rtpproxy.
. bench/common.sh
anchorage_bin

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 -- "-$p" "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

PROXY_PORT=25060
UAS_PORT=25080
UAC_PORT=25070
NG_PORT=25223
RTPP_PORT=25224
REDIS_PORT=25379

# Kamailio: the peers' configuration in its no-media profile, moved to our ports.
sed -e "s/127.0.0.1:5060/127.0.0.1:$PROXY_PORT/g" \
    -e "s/#!define UAS_PORT \"5080\"/#!define UAS_PORT \"$UAS_PORT\"/" \
    -e "s/udp:127.0.0.1:2223/udp:127.0.0.1:$NG_PORT/" \
    ../shared/peers/kamailio.cfg > "$WORK/kamailio.cfg"
# Our proxy's configuration with media: one relay node, the flags Kamailio's script uses.
cat > "$WORK/anchorage.toml" <<EOF
[[proxy.listen]]
transport = "udp"
address = "127.0.0.1:$PROXY_PORT"

[[proxy.relay_set]]
name = "main"
nodes = [{ name = "relay", ng = "127.0.0.1:$NG_PORT" }]

[proxy.media]
set = "main"
caller_flags = "replace-origin ICE=remove"
callee_flags = "replace-origin ICE=remove"
EOF

# With a real RTPProxy node as the engine (--rtpproxy): OpenSIPS' `o` letter, RTPProxy's
# counterpart of replace-origin (the proxy writes the SDP itself).
cat > "$WORK/anchorage-rtpproxy.toml" <<EOF
[[proxy.listen]]
transport = "udp"
address = "127.0.0.1:$PROXY_PORT"

[[proxy.relay_set]]
name = "main"
nodes = [{ name = "rtpp", rtpproxy = "udp:127.0.0.1:$RTPP_PORT" }]

[proxy.media]
set = "main"
caller = { rtpproxy_flags = "o" }
callee = { rtpproxy_flags = "o" }
EOF

# The same with every call in Redis (--redis).
{ cat "$WORK/anchorage.toml"
  printf '\n[node]\nid = "bench-1"\n\n[cluster]\nstore = "redis://127.0.0.1:%s/0"\n' "$REDIS_PORT"
} > "$WORK/anchorage-redis.toml"

# The binary of an anchorage system: this tree's, or the older one of --old.
bin_of() { if [ "$1" = anchorage-old ]; then echo "$OLD_BIN"; else echo "$BIN"; fi; }

# Redis for --redis: no persistence (the proxy's records are what is measured); sets EXTRA_PID,
# whose CPU counts with the proxy's.
EXTRA_PID=
start_redis() {
  setsid redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
  EXTRA_PID=$!
  PIDS+=("$EXTRA_PID")
  sleep 0.5
  kill -0 "$EXTRA_PID" || { echo "redis-server did not start:"; tail -20 "$WORK/redis.log"; exit 1; }
}

start_relay() { # name -> sets RELAY_PID
  case "$1" in
    anchorage-rtpproxy)
      start_rtpproxy "$RTPP_PORT" 30000 49999 "$WORK/relay.log" setsid || exit 1
      RELAY_PID=$RTPP_PID;;
    anchorage|anchorage-old|anchorage-redis)
      setsid "$(bin_of "$1")" relay --listen-ng "127.0.0.1:$NG_PORT" --interface 127.0.0.1 \
        --port-min 30000 --port-max 49999 --delete-delay 0 >"$WORK/relay.log" 2>&1 &
      RELAY_PID=$!;;
    kamailio)
      setsid rtpengine --config-file=none --foreground --table=-1 \
        --interface=127.0.0.1 --listen-ng="127.0.0.1:$NG_PORT" --port-min=30000 --port-max=49999 \
        --delete-delay=0 --log-level=5 --log-stderr >"$WORK/relay.log" 2>&1 &
      RELAY_PID=$!;;
  esac
  PIDS+=("$RELAY_PID")
  sleep 1
  kill -0 "$RELAY_PID" || { echo "relay for $1 did not start:"; tail -20 "$WORK/relay.log"; exit 1; }
}

start_system() { # name -> sets SYS_PID
  case "$1" in
    anchorage|anchorage-old|anchorage-redis|anchorage-rtpproxy)
      if [ "$1" = anchorage-redis ]; then
        start_redis
        local config="$WORK/anchorage-redis.toml"
        if [ "$MEDIA" = 0 ]; then
          printf '[[proxy.listen]]\ntransport = "udp"\naddress = "127.0.0.1:%s"\n\n[node]\nid = "bench-1"\n\n[cluster]\nstore = "redis://127.0.0.1:%s/0"\n' \
            "$PROXY_PORT" "$REDIS_PORT" > "$WORK/anchorage-redis-sig.toml"
          config="$WORK/anchorage-redis-sig.toml"
        fi
        setsid "$BIN" proxy -c "$config" >"$WORK/anchorage.log" 2>&1 &
      elif [ "$1" = anchorage-rtpproxy ]; then
        setsid "$BIN" proxy -c "$WORK/anchorage-rtpproxy.toml" >"$WORK/anchorage.log" 2>&1 &
      elif [ "$MEDIA" = 1 ]; then
        setsid "$(bin_of "$1")" proxy -c "$WORK/anchorage.toml" >"$WORK/anchorage.log" 2>&1 &
      else
        setsid "$(bin_of "$1")" proxy --listen "udp:127.0.0.1:$PROXY_PORT" >"$WORK/anchorage.log" 2>&1 &
      fi
      SYS_PID=$!;;
    kamailio)
      local media_define=()
      [ "$MEDIA" = 1 ] && media_define=(-A WITH_RTPENGINE)
      setsid kamailio -DD -E -f "$WORK/kamailio.cfg" -A CHILDREN=8 -A "CTL_SOCK=\"unix:$WORK/ctl\"" \
        "${media_define[@]}" -m 1024 -M 16 -Y "$WORK" >"$WORK/kamailio.log" 2>&1 &
      SYS_PID=$!;;
  esac
  PIDS+=("$SYS_PID")
  # Ready when listening; Kamailio also forks its workers after binding: wait for its control
  # socket, then a second more.
  for _ in $(seq 1 100); do
    if [ "$1" != kamailio ] && grep -q "SIP udp on" "$WORK/anchorage.log" 2>/dev/null; then break; fi
    if [ "$1" = kamailio ] && [ -S "$WORK/ctl" ]; then break; fi
    sleep 0.1
  done
  sleep 1
  kill -0 "$SYS_PID" || { echo "$1 did not start:"; tail -20 "$WORK/$1.log"; exit 1; }
}

# CPU seconds (user+system) of a process tree: the group led by $1.
cpu_of() {
  local total=0 pid
  for pid in $(pgrep -g "$1" 2>/dev/null || echo "$1"); do
    if [ -r "/proc/$pid/stat" ]; then
      local f; f=$(awk '{print $14+$15}' "/proc/$pid/stat")
      total=$((total + f))
    fi
  done
  echo "$total"
}

run_step() { # system rate -> prints result line, returns 0 on pass
  local sys=$1 rate=$2 calls=$(( $2 * STEP ))
  setsid sipp -sf ../shared/peers/scenarios/uas.xml -i 127.0.0.1 -p "$UAS_PORT" -mp 26000 \
    -key rtp_ip 127.0.0.3 -key rtp_port 42000 -buff_size 4194304 -nostdin -bg >/dev/null 2>&1 || true
  sleep 0.3
  ss -Huln "sport = :$UAS_PORT" 2>/dev/null | grep -q . || { echo "the SIPp UAS did not start on port $UAS_PORT"; return 1; }
  local ticks; ticks=$(getconf CLK_TCK)
  local cpu0; cpu0=$(cpu_of "$SYS_PID")
  local xcpu0=0; [ -n "$EXTRA_PID" ] && xcpu0=$(cpu_of "$EXTRA_PID")
  local rcpu0=0; [ "$MEDIA" = 1 ] && rcpu0=$(cpu_of "$RELAY_PID")
  local t0; t0=$(date +%s.%N)
  set +e
  timeout $((STEP + 40)) sipp -sf ../shared/peers/scenarios/uac.xml "127.0.0.1:$UAS_PORT" \
    -rsa "127.0.0.1:$PROXY_PORT" -key rtp_ip 127.0.0.2 -key rtp_port 40000 -buff_size 4194304 \
    -i 127.0.0.1 -p "$UAC_PORT" -mp 26100 -nostdin -m "$calls" -r "$rate" -rp 1000 -d 1000 -l $((rate * 4)) \
    -timeout $((STEP + 30))s -trace_stat -stf "$WORK/stat.csv" \
    -trace_err -error_file "$WORK/errors.log" >/dev/null 2>&1
  local code=$?
  set -e
  local cpu1; cpu1=$(cpu_of "$SYS_PID")
  local xcpu1=0; [ -n "$EXTRA_PID" ] && xcpu1=$(cpu_of "$EXTRA_PID")
  local rcpu1=0; [ "$MEDIA" = 1 ] && rcpu1=$(cpu_of "$RELAY_PID")
  local t1; t1=$(date +%s.%N)
  # The UAS must be gone (and its port free) before the next step starts its own: a UAS that
  # lingers makes the next one fail to bind, and every call of that step time out.
  pkill -9 -f "sipp -sf ../shared/peers/scenarios/uas.xml" 2>/dev/null || true
  for _ in $(seq 1 100); do
    ss -Huln "sport = :$UAS_PORT" 2>/dev/null | grep -q . || break
    sleep 0.1
  done
  local ok failed
  ok=$(tail -1 "$WORK/stat.csv" | awk -F';' '{print $16}')
  failed=$(tail -1 "$WORK/stat.csv" | awk -F';' '{print $18}')
  # 503s the callers got (SIPp logs each unexpected message with its status line).
  REFUSED_503=$(grep -c "SIP/2.0 503" "$WORK/errors.log" 2>/dev/null || true)
  # Calls are placed over STEP seconds and the last ends 1 s later (the hold): the placing rate
  # is the calls over the elapsed time less the hold.
  local secs; secs=$(echo "$t1 - $t0" | bc)
  local achieved; achieved=$(echo "scale=0; $calls / ($secs - 1)" | bc)
  # With --redis, Redis's CPU counts with the proxy's.
  local cpu_s; cpu_s=$(echo "scale=3; ($cpu1 - $cpu0 + $xcpu1 - $xcpu0) / $ticks" | bc)
  local per_k; per_k=$(echo "scale=3; $cpu_s * 1000 / ($ok + 1)" | bc)
  CPUK[$sys,$rate]=$per_k
  local relay_s; relay_s=$(echo "scale=3; ($rcpu1 - $rcpu0) / $ticks" | bc)
  local store_s; store_s=$(echo "scale=3; ($xcpu1 - $xcpu0) / $ticks" | bc)
  local pass=no
  if [ "$code" -eq 0 ] && [ "${failed:-1}" -eq 0 ] && [ "${ok:-0}" -eq "$calls" ] \
     && [ "$(echo "$achieved * 100 >= $rate * 95" | bc)" -eq 1 ]; then pass=yes; fi
  printf '%-9s rate %5s  calls %6s ok %6s failed %4s  achieved %5s/s  proxy cpu %6ss (Redis %ss)  cpu/1k calls %6ss  relay cpu %6ss  load %s  pass %s\n' \
    "$sys" "$rate" "$calls" "${ok:-?}" "${failed:-?}" "$achieved" "$cpu_s" "$store_s" "$per_k" "$relay_s" "$(cut -d' ' -f1 /proc/loadavg)" "$pass"
  if [ "$pass" = no ] && [ -s "$WORK/errors.log" ]; then
    echo "  first errors reported by SIPp:"; grep -v '^$' "$WORK/errors.log" | head -4 | sed 's/^/    /'
  fi
  rm -f "$WORK/stat.csv" "$WORK/errors.log"
  [ "$pass" = yes ]
}

rss_kb() { # process tree led by $1: the largest RSS in it
  local best=0 pid r
  for pid in $(pgrep -g "$1" 2>/dev/null || echo "$1"); do
    r=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${r:-0}" -gt "$best" ] && best=$r
  done
  echo "$best"
}

# Past capacity: 1.2x, 1.5x and 2x the highest clean rate, then 1000/s again.
overload_steps() { # system best
  local sys=$1 best=$2 peak=0
  [ "$best" -gt 0 ] || { echo "$sys: no clean rate to multiply"; return; }
  for mult in 1.2 1.5 2.0 recovery; do
    local rate
    if [ "$mult" = recovery ]; then rate=1000; else rate=$(echo "$best * $mult / 1" | bc); fi
    ( while kill -0 "$SYS_PID" 2>/dev/null; do rss_kb "$SYS_PID" >>"$WORK/rss"; sleep 1; done ) &
    local sampler=$!
    run_step "$sys" "$rate" >"$WORK/step.txt" || true
    kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
    peak=$(sort -n "$WORK/rss" 2>/dev/null | tail -1); rm -f "$WORK/rss"
    local alive=yes relay_alive=-
    kill -0 "$SYS_PID" 2>/dev/null || alive=no
    if [ "$MEDIA" = 1 ]; then relay_alive=yes; kill -0 "$RELAY_PID" 2>/dev/null || relay_alive=no; fi
    local marked_down=-
    if [ "$sys" != kamailio ]; then
      marked_down=no
      grep -q "relay node is down" "$WORK/anchorage.log" && marked_down=yes
    fi
    printf '  overload %-8s %-9s %s  503s %6s  proxy alive %s (peak RSS %s MiB)  relay alive %s  relay marked down %s
'       "$mult" "$sys" "$(head -1 "$WORK/step.txt" | sed 's/  load .*//')" "$REFUSED_503" "$alive"       "$(( ${peak:-0} / 1024 ))" "$relay_alive" "$marked_down"
    [ "$alive" = yes ] || break
    sleep 2
  done
}

declare -A BEST CPUK
SYSTEMS=(anchorage)
[ "$REDIS" = 1 ] && SYSTEMS+=(anchorage-redis)
[ "$RTPPROXY" = 1 ] && SYSTEMS+=(anchorage-rtpproxy)
[ -n "${OLD_BIN:-}" ] && SYSTEMS+=(anchorage-old)
SYSTEMS+=(kamailio)
for sys in "${SYSTEMS[@]}"; do
  if [ "$MEDIA" = 1 ]; then start_relay "$sys"; fi
  start_system "$sys"
  BEST[$sys]=0
  for rate in "${RATES[@]}"; do
    if run_step "$sys" "$rate"; then BEST[$sys]=$rate; else break; fi
  done
  if [ "$OVERLOAD" = 1 ]; then overload_steps "$sys" "${BEST[$sys]}"; fi
  kill -9 -- "-$SYS_PID" "$SYS_PID" 2>/dev/null || true
  if [ "$MEDIA" = 1 ]; then kill -9 -- "-$RELAY_PID" "$RELAY_PID" 2>/dev/null || true; fi
  if [ -n "$EXTRA_PID" ]; then kill -9 -- "-$EXTRA_PID" "$EXTRA_PID" 2>/dev/null || true; EXTRA_PID=; fi
  sleep 1
done

PROFILE="signalling only"
[ "$MEDIA" = 1 ] && PROFILE="media anchored on a relay (anchorage relay / rtpengine)"
echo "highest rate with zero failed calls (${STEP}s steps, $PROFILE): anchorage ${BEST[anchorage]}/s, kamailio ${BEST[kamailio]}/s"
if [ "${BEST[kamailio]}" -gt 0 ]; then
  echo "ratio anchorage/kamailio: $(echo "scale=2; ${BEST[anchorage]} / ${BEST[kamailio]}" | bc)"
fi
if [ -n "${OLD_BIN:-}" ]; then
  echo "older build ($OLD_BIN): ${BEST[anchorage-old]}/s"
  if [ "${BEST[anchorage-old]}" -gt 0 ]; then
    echo "ratio anchorage/older build: $(echo "scale=2; ${BEST[anchorage]} / ${BEST[anchorage-old]}" | bc)"
  fi
fi
if [ "$RTPPROXY" = 1 ]; then
  echo "with a real RTPProxy node as the engine: ${BEST[anchorage-rtpproxy]}/s; CPU per 1,000 calls (proxy):"
  for rate in "${RATES[@]}"; do
    m=${CPUK[anchorage,$rate]:-}; r=${CPUK[anchorage-rtpproxy,$rate]:-}; k=${CPUK[kamailio,$rate]:-}
    [ -n "$r" ] && echo "  rate $rate/s: with our relay ${m:--}s, with RTPProxy ${r}s, Kamailio ${k:--}s"
  done
  if [ "${BEST[kamailio]}" -gt 0 ]; then
    echo "ratio anchorage-rtpproxy/kamailio: $(echo "scale=2; ${BEST[anchorage-rtpproxy]} / ${BEST[kamailio]}" | bc)"
  fi
fi
if [ "$REDIS" = 1 ]; then
  echo "with the Redis store: ${BEST[anchorage-redis]}/s; CPU per 1,000 calls (proxy + Redis) against the memory store:"
  for rate in "${RATES[@]}"; do
    m=${CPUK[anchorage,$rate]:-}; r=${CPUK[anchorage-redis,$rate]:-}
    if [ -n "$m" ] && [ -n "$r" ] && [ "$(echo "$m > 0" | bc)" -eq 1 ]; then
      echo "  rate $rate/s: memory ${m}s, redis ${r}s, ratio $(echo "scale=3; $r / $m" | bc)"
    fi
  done
  if [ "${BEST[kamailio]}" -gt 0 ]; then
    echo "ratio anchorage-redis/kamailio: $(echo "scale=2; ${BEST[anchorage-redis]} / ${BEST[kamailio]}" | bc)"
  fi
fi
