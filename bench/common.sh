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
two_relay_config() {
  cat > "$1" <<CONF
[[proxy.listen]]
transport = "udp"
address = "127.0.0.1:$2"

[api]
listen = "127.0.0.1:$3"

[[proxy.relay_set]]
name = "main"
nodes = [
  { name = "relay-a", ng = "127.0.0.1:$4" },
  { name = "relay-b", ng = "127.0.0.1:$5" },
]

[proxy.media]
set = "main"
caller_flags = "replace-origin"
callee_flags = "replace-origin"
${6:-}
CONF
}
