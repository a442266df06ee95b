#!/usr/bin/env bash
# Media relay benchmark: our relay (`anchorage relay`) and Debian's rtpengine (userspace
# forwarding, `--table=-1`) in the same run, with the same load generator.
#
# For each N, for each relay (their order alternates from one N to the next): start the relay
# pinned to core 1 with one worker thread, then bench/rtpload pinned to core 0 sets up N calls
# straight over the ng protocol (offer/answer, no SIP), sends RTP on all 2N streams for D
# seconds (50 packets/s per stream, 172-byte RTP: 100·N packets/s into the relay and as many
# out), checks loss, relay delay and symmetric RTP (every packet must come from the relay
# address advertised to its receiver), deletes the calls; then the relay is stopped.
#
# Relay CPU = utime+stime of all the relay's threads (/proc/PID/stat), read by rtpload at the
# end of its warm-up second and at the end of the blast, in % of one core. rtpload also reports
# its own CPU and the rest of the machine's ("other load", from /proc/stat idle): the machine
# is shared: a step with more than 15 % of a core of other load is run again (up to TRIES=3
# tries; the discarded tries stay in table.txt as "#" lines), and marked "busy" if the last try
# was busy too.
# A step passes when every call was set up, loss < 0.1 %, and no packet came from an
# unexpected address or reached the wrong stream. Each stream side has its own socket, so a
# saturated relay first queues (the delay grows to tens of ms, packets wait in ~200 KB socket
# buffers) before it drops: the summary also gives the largest N that passed with a p99 relay
# delay under 20 ms (one packet interval), the stricter figure. A step where more than 0.1 % of
# the packets were dropped at rtpload's own sockets is INVALID (the generator, on one core,
# could not keep up: about 200,000 packets/s each way, N = 2000, is its limit here).
#
# With --srtp, every call has one leg SDES-SRTP and the other plain (issue 17's benchmark):
# the offer asks for transport-protocol RTP/SAVP towards side B, B answers the relay's
# AES_CM_128_HMAC_SHA1_80 line with a key of its own, rtpload protects what B sends and
# authenticates and decrypts what B receives (its CPU for that is on core 0, with the rest of
# the generator's), so each relay decrypts one direction and encrypts the other of every call.
# A step also fails if a packet B received did not authenticate with the relay's key.
#
# With --rtpp, the same under RTPProxy's control protocol: rtpload sets each call up with `U`
# and `L` and ends it with `D` (no SDP), against a real RTPProxy (sippy's, from the PyPI package
# rtp.io in .venv, pinned to core 1 like the others: its CPU is the whole Python process's,
# RTPProxy's threads and an idle interpreter) and our relay answering RTPProxy's protocol
# (`anchorage relay --listen-rtpp`, named anchorage-rtpp in the table), in the same run.
#
# Usage: bench/relay.sh [-d SECONDS] [--only rtpengine|anchorage|rtpproxy|anchorage-rtpp]
#                       [--srtp | --rtpp] [N ...]
#   -d SECONDS   blast duration per step (default 20; env DUR)
#   --only X     run one relay only
#   --srtp       one leg SDES-SRTP, the other plain (default: plain RTP on both)
#   --rtpp       RTPProxy's protocol: RTPProxy against anchorage-rtpp instead of rtpengine
#                against anchorage
#   N ...        calls per step (default: 250 500 1000 1500 2000; env NS)
# Needs: rtpengine (Debian package rtpengine-daemon), taskset, ss; builds bench/rtpload
# (release, own target dir bench/rtpload/target). Uses target/release/anchorage if it has the
# `relay` subcommand (or $ANCHORAGE_BIN); it never builds the workspace.
# Results: bench/results/relay-<date>/ (table.txt, one JSON per step, relay logs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DUR=${DUR:-20}
TRIES=${TRIES:-3}
ONLY=
SRTP=()
RTPP=()
NS_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -d) DUR=$2; shift 2;;
    --only) ONLY=$2; shift 2;;
    --srtp) SRTP=(--srtp); shift;;
    --rtpp) RTPP=(--rtpp); shift;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) NS_ARGS+=("$1"); shift;;
  esac
done
if [ ${#NS_ARGS[@]} -gt 0 ]; then NS=("${NS_ARGS[@]}"); else read -r -a NS <<< "${NS:-250 500 1000 1500 2000}"; fi

# The two relays compared: theirs and ours, under ng or RTPProxy's protocol.
if [ ${#RTPP[@]} -gt 0 ]; then
  [ ${#SRTP[@]} -eq 0 ] || { echo "--srtp and --rtpp do not go together (RTPProxy does not do SRTP)"; exit 2; }
  THEM=rtpproxy; US=anchorage-rtpp
  # start_rtpproxy (the real RTPProxy from rtp.io)
  . bench/common.sh
else
  THEM=rtpengine; US=anchorage
  command -v rtpengine >/dev/null || { echo "rtpengine not found: install the Debian package rtpengine-daemon (apt-get install --no-install-recommends rtpengine-daemon)"; exit 1; }
fi
for tool in taskset ss; do command -v "$tool" >/dev/null || { echo "missing tool: $tool"; exit 1; }; done
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores (relay on core 1, load generator on core 0)"; exit 1; }

echo "== building bench/rtpload (release, bench/rtpload/target)"
(cd bench/rtpload && CARGO_TARGET_DIR="$ROOT/bench/rtpload/target" cargo build --release --quiet)
RTPLOAD=$ROOT/bench/rtpload/target/release/rtpload

BIN=${ANCHORAGE_BIN:-$ROOT/target/release/anchorage}
RELAYS=()
if [ "$ONLY" != "$US" ]; then RELAYS+=("$THEM"); fi
if [ "$ONLY" != "$THEM" ]; then
  if [ -x "$BIN" ] && help=$("$BIN" relay --help 2>&1) && ! grep -qi "not built yet" <<< "$help"; then
    RELAYS+=("$US")
  else
    echo "anchorage relay not available: build it with cargo build --release"
  fi
fi
[ ${#RELAYS[@]} -gt 0 ] || { echo "no relay to measure"; exit 1; }

OUT=$ROOT/bench/results/relay${SRTP:+-srtp}${RTPP:+-rtpp}-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The relays have ~4 sockets per call; rtpload one per stream side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

free_udp_port() { # first port from $1 up that nothing listens on (any address)
  local p=$1
  while ss -Hlun "sport = :$p" | grep -q .; do p=$((p + 1)); done
  echo "$p"
}
NG_RTPE=$(free_udp_port 42223)
NG_OURS=$(free_udp_port $((NG_RTPE + 1)))
RTPP_THEIRS=$(free_udp_port $((NG_OURS + 1)))
RTPP_OURS=$(free_udp_port $((RTPP_THEIRS + 1)))

busy_pct() { # machine busy over 1 s, % of one core (the machine has 200 %)
  local a b
  a=$(awk '/^cpu /{print $5+$6}' /proc/stat)
  sleep 1
  b=$(awk '/^cpu /{print $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" -v n="$(nproc)" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { v = n * 100 - (b - a) * 100 / hz; if (v < 0) v = 0; printf "%.0f", v }'
}
wait_quiet() { # up to 60 s for < 15 % of a core busy during 2 consecutive seconds
  local i quiet=0 b
  for i in $(seq 1 60); do
    b=$(busy_pct)
    if [ "$b" -lt 15 ]; then quiet=$((quiet + 1)); [ $quiet -ge 2 ] && return 0; else quiet=0; fi
  done
  echo "  machine not quiet (last second: ${b} % of a core busy), measuring anyway"
}

start_relay() { # name -> sets RELAY_PID, NG
  local name=$1
  case "$name" in
    rtpengine)
      NG=127.0.0.1:$NG_RTPE
      # --config-file=none: ignore /etc/rtpengine/rtpengine.conf. No Redis unless asked for.
      taskset -c 1 rtpengine --config-file=none --foreground --log-stderr --table=-1 \
        --interface=127.0.0.1 --listen-ng="$NG" --port-min=20000 --port-max=29999 \
        --num-threads=1 --delete-delay=0 --log-level=3 --pidfile="$OUT/rtpengine.pid" \
        >>"$OUT/rtpengine.log" 2>&1 </dev/null &
      ;;
    anchorage)
      NG=127.0.0.1:$NG_OURS
      taskset -c 1 "$BIN" relay --listen-ng "$NG" --interface 127.0.0.1 --port-min 30000 \
        --port-max 39999 --num-threads 1 --delete-delay 0 >>"$OUT/anchorage.log" 2>&1 </dev/null &
      ;;
    anchorage-rtpp)
      # Controlled over its RTPProxy socket ($NG is where rtpload sends); its ng socket idles.
      NG=127.0.0.1:$RTPP_OURS
      taskset -c 1 "$BIN" relay --listen-ng "127.0.0.1:$NG_OURS" --listen-rtpp "udp:$NG" \
        --interface 127.0.0.1 --port-min 30000 --port-max 39999 --num-threads 1 \
        --delete-delay 0 >>"$OUT/anchorage-rtpp.log" 2>&1 </dev/null &
      ;;
    rtpproxy)
      NG=127.0.0.1:$RTPP_THEIRS
      start_rtpproxy "$RTPP_THEIRS" 20000 29999 "$OUT/rtpproxy.log" taskset -c 1 || return 1
      ;;
  esac
  RELAY_PID=$!
  PIDS+=("$RELAY_PID")
  local i
  for i in $(seq 1 100); do
    kill -0 "$RELAY_PID" 2>/dev/null || { echo "$name exited at start:"; tail -20 "$OUT/$name.log"; return 1; }
    "$RTPLOAD" --ng "$NG" --ping --timeout-ms 100 "${RTPP[@]}" 2>/dev/null && return 0
  done
  echo "$name does not answer ng ping on $NG:"; tail -20 "$OUT/$name.log"; return 1
}

stop_relay() {
  local i
  kill -TERM "$RELAY_PID" 2>/dev/null || true
  for i in $(seq 1 50); do kill -0 "$RELAY_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$RELAY_PID" 2>/dev/null || true
  wait "$RELAY_PID" 2>/dev/null || true
  PIDS=()
}

get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" "$2"; }

ROW_FMT='%-14s %6s %7s %8s %8s %6s %17s %7s %10s %7s %6s %8s  %s\n'
header() {
  printf "$ROW_FMT" relay calls streams "pkt/s in" "loss %" "lossy" "delay p50/p99/max" "CPU %" "CPU %/1000" "gen %" "other" "asym" "result"
  printf "$ROW_FMT" "" "" "" "" "" streams "µs" "1 core" streams "CPU" "load" "pkts" ""
}

declare -A BEST BEST20 CPUK
# One step; returns 3 when the machine's other load made it worthless (then retried).
run_step() { # relay N try
  local name=$1 n=$2 try=$3
  local res="$OUT/$name-$n-t$try.result" json="$OUT/$name-$n-t$try.json" log="$OUT/$name-$n-t$try.rtpload.log"
  echo "-- N=$n $name (try $try/$TRIES): waiting for a quiet machine"
  wait_quiet
  if ! start_relay "$name"; then
    printf "$ROW_FMT" "$name" "$n" - - - - - - - - - - "relay did not start" | tee -a "$OUT/table.txt"
    return
  fi
  echo "-- N=$n $name: pid $RELAY_PID, ng $NG; $((2 * n)) streams for $DUR s"
  set +e
  timeout $((DUR + 120 + n / 10)) taskset -c 0 "$RTPLOAD" --ng "$NG" --calls "$n" --duration "$DUR" \
    --watch-pid "$RELAY_PID" --json "$json" --label "$name" "${SRTP[@]}" "${RTPP[@]}" >"$res" 2>"$log"
  local rc=$?
  set -e
  kill -0 "$RELAY_PID" 2>/dev/null || echo "   $name died during the step (see $OUT/$name.log)"
  stop_relay
  if [ $rc -ne 0 ] || ! grep -q '^RESULT' "$res"; then
    echo "   rtpload failed (exit $rc):"; tail -5 "$log" | sed 's/^/     /'
    printf "$ROW_FMT" "$name" "$n" - - - - - - - - - - "rtpload failed" | tee -a "$OUT/table.txt"
    return
  fi
  sed 's/^/   /' "$log"
  local streams pps loss lossy p50 p99 max cpu cpuk gen other mism misr setupf late slots
  streams=$(get streams "$res"); pps=$(get sent_pps "$res"); loss=$(get loss_pct "$res")
  lossy=$(get streams_with_loss "$res"); p50=$(get delay_p50_us "$res"); p99=$(get delay_p99_us "$res")
  max=$(get delay_max_us "$res"); cpu=$(get relay_cpu_pct "$res"); cpuk=$(get relay_cpu_per_1000_streams "$res")
  gen=$(get rtpload_cpu_pct "$res"); other=$(get other_load_pct "$res"); mism=$(get src_mismatch "$res")
  misr=$(get misrouted "$res"); setupf=$(get setup_failed "$res"); late=$(get late_slots "$res"); slots=$(get slots "$res")
  local rdrops gdrops; rdrops=$(get relay_socket_drops "$res"); gdrops=$(get rtpload_socket_drops "$res")
  local verdict=pass notes=()
  if [ "$setupf" != 0 ]; then verdict=FAIL; notes+=("$setupf calls not set up"); fi
  if awk -v l="$loss" 'BEGIN{exit !(l >= 0.1)}'; then verdict=FAIL; notes+=("loss"); fi
  if [ "$mism" != 0 ]; then verdict=FAIL; notes+=("$mism pkts from an unexpected address"); fi
  if [ "$misr" != 0 ]; then verdict=FAIL; notes+=("$misr pkts on the wrong stream"); fi
  local srtpf; srtpf=$(get srtp_failures "$res")
  if [ "${srtpf:-0}" != 0 ]; then verdict=FAIL; notes+=("$srtpf SRTP packets failed at rtpload"); fi
  if [ "$p99" = null ] || [ "$p99" -ge 20000 ]; then notes+=("queueing: p99 >= 20 ms"); fi
  if [ "${rdrops:-0}" != 0 ]; then notes+=("$rdrops dropped at relay sockets"); fi
  if [ "${gdrops:-0}" != 0 ]; then
    notes+=("$gdrops dropped at rtpload sockets")
    # the load generator could not keep up with its receive queues: the loss is not the relay's
    if [ "$mism$misr$setupf" = 000 ] && awk -v d="$gdrops" -v s="$(get sent "$res")" 'BEGIN{exit !(d * 1000 > s)}'; then
      verdict=INVALID
    fi
  fi
  local busy=0
  if awk -v o="$other" 'BEGIN{exit !(o > 15)}'; then busy=1; notes+=("busy: other load"); fi
  if awk -v g="$gen" -v l="$late" -v s="$slots" 'BEGIN{exit !(g > 90 || l > s / 20)}'; then notes+=("generator saturated: $late late slots"); fi
  local row
  row=$(IFS=','; printf "$ROW_FMT" "$name" "$n" "$streams" "$pps" "$loss" "$lossy" "$p50/$p99/$max" "$cpu" "$cpuk" "$gen" "$other" "$mism" \
    "$verdict${notes[*]:+ (${notes[*]})}")
  if [ $busy = 1 ] && [ "$try" -lt "$TRIES" ]; then
    echo "# $row  [discarded: other load, retrying]" | tee -a "$OUT/table.txt"
    return 3
  fi
  echo "$row" | tee -a "$OUT/table.txt"
  if [ "$verdict" = pass ] && [ "$n" -gt "${BEST[$name]:-0}" ]; then BEST[$name]=$n; fi
  if [ "$verdict" = pass ] && [ "$p99" != null ] && [ "$p99" -lt 20000 ] && [ "$n" -gt "${BEST20[$name]:-0}" ]; then
    BEST20[$name]=$n
  fi
  CPUK[$name-$n]=$cpuk
}

{
  echo "relay benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, ${DUR} s per step, N: ${NS[*]}${SRTP:+, one leg SDES-SRTP (AES_CM_128_HMAC_SHA1_80) and the other plain}"
  if [ "$THEM" = rtpengine ]; then
    echo "versions: rtpengine $(dpkg-query -W -f '${Version}' rtpengine-daemon 2>/dev/null || echo '?') (--table=-1 --num-threads=1), ng $NG_RTPE; relays on core 1, rtpload on core 0"
  else
    echo "relays on core 1, rtpload on core 0 (over RTPProxy's protocol)"
  fi
  if [[ " ${RELAYS[*]} " == *" $US "* ]]; then
    echo "$US: $BIN ($(stat -c %y "$BIN" | cut -d. -f1)), ${RTPP:+RTPProxy protocol on udp:127.0.0.1:$RTPP_OURS, }ng $NG_OURS; relay CPU = all its threads"
  fi
  if [ "$THEM" = rtpproxy ]; then
    echo "rtpproxy: sippy's RTPProxy from rtp.io $("${RTPP_PYTHON:-$ROOT/.venv/bin/python}" -c 'import importlib.metadata as m; print(m.version("rtp.io"))' 2>/dev/null || echo '?') (-l 127.0.0.1 -d WARN), control udp:127.0.0.1:$RTPP_THEIRS; CPU = its whole Python process"
  fi
  echo "socket buffers: kernel defaults (rmem_default $(cat /proc/sys/net/core/rmem_default), rmem_max $(cat /proc/sys/net/core/rmem_max)); sysctls not changed"
  header
} | tee "$OUT/table.txt"

i=0
for n in "${NS[@]}"; do
  order=("${RELAYS[@]}")
  if [ $((i % 2)) -eq 1 ] && [ ${#RELAYS[@]} -eq 2 ]; then order=("${RELAYS[1]}" "${RELAYS[0]}"); fi
  for r in "${order[@]}"; do
    for try in $(seq 1 "$TRIES"); do
      rc=0; run_step "$r" "$n" "$try" || rc=$?
      [ $rc -eq 3 ] || break
    done
  done
  i=$((i + 1))
done

{
  echo
  header
  grep -E '^(rtpengine|anchorage|rtpproxy|anchorage-rtpp) +[0-9]' "$OUT/table.txt"
  echo
  for r in "${RELAYS[@]}"; do
    echo "largest N with loss < 0.1 %: $r ${BEST[$r]:-none} calls ($((2 * ${BEST[$r]:-0})) streams)"
    echo "largest N with loss < 0.1 % and p99 delay < 20 ms: $r ${BEST20[$r]:-none} calls ($((2 * ${BEST20[$r]:-0})) streams)"
  done
  if [ ${#RELAYS[@]} -eq 2 ]; then
    if [ "${BEST[$THEM]:-0}" -gt 0 ]; then
      echo "ratio $US/$THEM (largest N, loss < 0.1 %): $(awk -v a="${BEST[$US]:-0}" -v b="${BEST[$THEM]}" 'BEGIN{printf "%.2f", a / b}')"
    fi
    if [ "${BEST20[$THEM]:-0}" -gt 0 ]; then
      echo "ratio $US/$THEM (largest N, loss < 0.1 % and p99 < 20 ms): $(awk -v a="${BEST20[$US]:-0}" -v b="${BEST20[$THEM]}" 'BEGIN{printf "%.2f", a / b}')"
    fi
    for n in "${NS[@]}"; do
      a=${CPUK[$US-$n]:-}; b=${CPUK[$THEM-$n]:-}
      if [ -n "$a" ] && [ -n "$b" ] && [ "$a" != null ] && [ "$b" != null ]; then
        echo "N=$n CPU per 1000 streams: $THEM $b %, $US $a % -> $THEM/$US $(awk -v a="$a" -v b="$b" 'BEGIN{ if (a > 0) printf "%.2f", b / a; else print "-" }')"
      fi
    done
  fi
  echo "results: $OUT"
} | tee -a "$OUT/table.txt.summary"
cat "$OUT/table.txt.summary" >> "$OUT/table.txt" && rm -f "$OUT/table.txt.summary"
