#!/usr/bin/env bash
# Soak: calls with media through `anchorage proxy` and two `anchorage relay` processes for a
# long time (anchorage callgen), sampling every 10 s the proxy's and the relays' RSS and open
# file descriptors, the relays' sessions and port pairs in use. Reported: RSS growth after
# warm-up (the first tenth of the run) to the end, per process; sessions and ports left after
# the last call; callgen's verdict. The samples go to samples.csv and a chart to soak.svg.
#
# Usage: bench/soak.sh [--duration SECONDS] [--rate R] [--hold SECONDS] [--interval SECONDS]
#   defaults: 3600 s at 200 calls/s, each call held 3 s (about 600 calls with media alive),
#   samples every 10 s.
#   ANCHORAGE_BIN=path runs another build.
# Needs: the release build (made here), python3, curl. Results in bench/results/soak-<date>/.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=3600
RATE=200
HOLD=3
INTERVAL=10
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2;;
    --rate) RATE=$2; shift 2;;
    --hold) HOLD=$2; shift 2;;
    --interval) INTERVAL=$2; shift 2;;
    *) echo "unknown option $1"; exit 2;;
  esac
done
for tool in python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool"; exit 1; }
done

. bench/common.sh
anchorage_bin
OUT="bench/results/soak-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

SIP=27060; API=27061; NG_A=27223; NG_B=27224; MET_A=27225; MET_B=27226; UAS=27090
trap stop_all EXIT

two_relay_config "$OUT/proxy.toml" "$SIP" "$API" "$NG_A" "$NG_B"

"$BIN" relay --listen-ng "127.0.0.1:$NG_A" --interface 127.0.0.1 --port-min 30000 \
  --port-max 39999 --delete-delay 0 --metrics "127.0.0.1:$MET_A" >"$OUT/relay-a.log" 2>&1 &
RELAY_A=$!; PIDS+=($RELAY_A)
"$BIN" relay --listen-ng "127.0.0.1:$NG_B" --interface 127.0.0.1 --port-min 40000 \
  --port-max 49999 --delete-delay 0 --metrics "127.0.0.1:$MET_B" >"$OUT/relay-b.log" 2>&1 &
RELAY_B=$!; PIDS+=($RELAY_B)
"$BIN" proxy -c "$OUT/proxy.toml" >"$OUT/proxy.log" 2>&1 &
PROXY=$!; PIDS+=($PROXY)
for _ in $(seq 1 50); do
  curl -sf "http://127.0.0.1:$API/v1/relays" >/dev/null 2>&1 && break
  sleep 0.1
done

CALLS=$((DURATION * RATE))
echo "== soak: $CALLS calls at $RATE/s held ${HOLD}s for ${DURATION}s, samples every ${INTERVAL}s"
"$BIN" callgen --proxy "127.0.0.1:$SIP" --uas "127.0.0.1:$UAS" --calls "$CALLS" \
  --rate "$RATE" --hold "${HOLD}s" --json >"$OUT/callgen.json" 2>"$OUT/callgen.log" &
CALLGEN=$!; PIDS+=($CALLGEN)

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
gauge() { # url series
  curl -sf "$1" | awk -v s="$2" 'index($0, s" ") == 1 {v += $NF} END {print v + 0}'
}

echo "t_s,proxy_rss_kb,proxy_fds,relay_a_rss_kb,relay_a_fds,relay_b_rss_kb,relay_b_fds,relay_sessions,relay_port_pairs_in_use,proxy_dialogs" >"$OUT/samples.csv"
sample() { # t
  local sessions=0 pairs=0
  for m in $MET_A $MET_B; do
    sessions=$((sessions + $(gauge "http://127.0.0.1:$m/metrics" anchorage_relay_active_sessions)))
    pairs=$((pairs + $(curl -sf "http://127.0.0.1:$m/metrics" | awk '/^anchorage_relay_port_pairs\{.*state="in_use"/ {v += $NF} END {print v + 0}')))
  done
  local dialogs
  dialogs=$(gauge "http://127.0.0.1:$API/metrics" anchorage_dialogs)
  echo "$1,$(rss_kb $PROXY),$(fds $PROXY),$(rss_kb $RELAY_A),$(fds $RELAY_A),$(rss_kb $RELAY_B),$(fds $RELAY_B),$sessions,$pairs,$dialogs" >>"$OUT/samples.csv"
}

START=$SECONDS
while kill -0 "$CALLGEN" 2>/dev/null; do
  T=$((SECONDS - START))
  sample "$T"
  printf '\r   %5d s: %s' "$T" "$(tail -1 "$OUT/samples.csv")"
  sleep "$INTERVAL"
done
echo
wait "$CALLGEN" || true
sleep 3
sample $((SECONDS - START))
echo "   after the last call: $(tail -1 "$OUT/samples.csv")"

python3 - "$OUT" <<'PY'
import csv, json, sys
out = sys.argv[1]
rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(f"{out}/samples.csv"))]
during = rows[:-1] or rows
warm = max(1, len(during) // 10)
lines = []
for who in ("proxy", "relay_a", "relay_b"):
    after_warm = during[warm - 1][f"{who}_rss_kb"]
    end = during[-1][f"{who}_rss_kb"]
    peak = max(r[f"{who}_rss_kb"] for r in during[warm - 1:])
    growth = 100.0 * (end - after_warm) / after_warm if after_warm else 0.0
    lines.append(f"   {who}: RSS after warm-up {after_warm/1024:.1f} MiB, at the end {end/1024:.1f} MiB "
                 f"(growth {growth:+.1f} %), peak {peak/1024:.1f} MiB; fds {during[warm-1][who + '_fds']:.0f} -> {during[-1][who + '_fds']:.0f}")
last = rows[-1]
lines.append(f"   after the last call: relay sessions {last['relay_sessions']:.0f}, port pairs in use "
             f"{last['relay_port_pairs_in_use']:.0f}, proxy dialogs {last['proxy_dialogs']:.0f}")
try:
    r = json.load(open(f"{out}/callgen.json"))
    c = r["calls"]
    lines.append(f"   calls: total {c['total']}, completed {c['completed']}, failed {c['failed']}, "
                 f"dropped {c['dropped']}, without media {c['without_media']}; packets {r['packets']}")
except Exception as e:  # the report is still useful without callgen's verdict
    lines.append(f"   callgen report unreadable: {e}")
print("\n".join(lines))
open(f"{out}/summary.txt", "w").write("\n".join(lines) + "\n")

# The chart: RSS of each process (MiB, left axis) and relay sessions (right axis) over time.
W, H, L, R, T, B = 900, 420, 70, 70, 30, 50
tmax = max(r["t_s"] for r in rows) or 1
rss_max = max(max(r[k] for r in rows) for k in ("proxy_rss_kb", "relay_a_rss_kb", "relay_b_rss_kb")) / 1024 * 1.15 or 1
ses_max = max(r["relay_sessions"] for r in rows) * 1.15 or 1
def x(t): return L + (W - L - R) * t / tmax
def y(v, top): return H - B - (H - T - B) * v / top
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="18" text-anchor="middle">Soak: RSS and relay sessions over time ({out.split("/")[-1]})</text>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{W-R}" y1="{T}" x2="{W-R}" y2="{H-B}" stroke="black"/>']
for i in range(6):
    v = rss_max * i / 5; s = ses_max * i / 5; t = tmax * i / 5
    svg.append(f'<text x="{L-6}" y="{y(v, rss_max)+4}" text-anchor="end">{v:.0f}</text>')
    svg.append(f'<text x="{W-R+6}" y="{y(s, ses_max)+4}">{s:.0f}</text>')
    svg.append(f'<text x="{x(t)}" y="{H-B+16}" text-anchor="middle">{t:.0f}</text>')
svg.append(f'<text x="{W/2}" y="{H-12}" text-anchor="middle">seconds</text>')
svg.append(f'<text x="16" y="{H/2}" transform="rotate(-90 16 {H/2})" text-anchor="middle">RSS, MiB</text>')
svg.append(f'<text x="{W-14}" y="{H/2}" transform="rotate(90 {W-14} {H/2})" text-anchor="middle">relay sessions</text>')
series = [("proxy_rss_kb", "#1f77b4", "proxy RSS", rss_max, 1024),
          ("relay_a_rss_kb", "#d62728", "relay-a RSS", rss_max, 1024),
          ("relay_b_rss_kb", "#2ca02c", "relay-b RSS", rss_max, 1024),
          ("relay_sessions", "#999999", "relay sessions", ses_max, 1)]
for i, (k, color, label, top, div) in enumerate(series):
    pts = " ".join(f"{x(r['t_s']):.1f},{y(r[k]/div, top):.1f}" for r in rows)
    svg.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>')
    svg.append(f'<rect x="{L+10+i*170}" y="{T+4}" width="12" height="3" fill="{color}"/>')
    svg.append(f'<text x="{L+26+i*170}" y="{T+10}">{label}</text>')
svg.append("</svg>")
open(f"{out}/soak.svg", "w").write("\n".join(svg))
PY
echo "results in $OUT (samples.csv, soak.svg, summary.txt)"
