#!/usr/bin/env bash
# Peak resident set (VmHWM) of the native agent, built with the device
# profile (`agent`), streaming one access point's metadata (the OpenWrt
# fixture tree, a collection a second) over mutual TLS to a collector on
# 127.0.0.1, for SECONDS seconds after it connects; then SIGTERM, which it
# must answer with exit 0.
#
#   scripts/agent-memory.sh [SECONDS]     (default 20)
#
# The collector and the demo PKI come from the dev build (the collector's
# own speed is not what is measured), or from BIN_DIR if set (a directory
# holding glimpse-collector and glimpse-demo). AGENT=path measures another
# agent binary instead, RUNNER="qemu-mipsel -L /usr/mipsel-linux-gnu" runs
# it under an emulator (whose own memory is then included). Output in
# target/agent-memory/.
# scripts/cross-test.sh measures the same under qemu-user per target.
set -euo pipefail

SECONDS_STREAMING=${1:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/target/agent-memory
cd "$ROOT"

if [ -z "${AGENT:-}" ]; then
  cargo build --locked --profile agent -p glimpse-agent
  AGENT=$ROOT/target/agent/glimpse-agent
fi
read -r -a RUN <<< "${RUNNER:-}"
if [ -z "${BIN_DIR:-}" ]; then
  cargo build --locked -p glimpse-collector -p glimpse-demo
  BIN_DIR=$ROOT/target/debug
fi
COLLECTOR=$BIN_DIR/glimpse-collector

rm -rf "$OUT"
mkdir -p "$OUT"
DEMO=$OUT/demo
"$BIN_DIR/glimpse-demo" --dir "$DEMO" --agents 1 --seconds 1 > "$OUT/demo.log" 2>&1 ||
  { cat "$OUT/demo.log"; exit 1; }
cp -r "$ROOT/agent/tests/fixtures/probe/openwrt-ap" "$OUT/sysroot"
# The demo's ap-1 config with the fixture tree, a spool and consent of
# this run; it stays in agents/ so that its certificate paths resolve.
config=$DEMO/agents/memory.toml
sed -e "s|^sysroot = .*|sysroot = \"$OUT/sysroot\"|" \
    -e "s|^consent_file = .*|consent_file = \"$OUT/consent\"|" \
    -e "s|^path = \"state/.*spool\"|path = \"$OUT/agent.spool\"|" \
    "$DEMO/agents/acme-ap-1.toml" > "$config"

"$COLLECTOR" serve --config "$DEMO/collector.toml" > "$OUT/collector.log" 2>&1 &
collector=$!
agent=
trap 'kill -TERM $collector ${agent:-} 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$OUT/collector.log" && break; sleep 0.2; done

"${RUN[@]}" "$AGENT" run --config "$config" > "$OUT/agent.log" 2>&1 &
agent=$!
for _ in $(seq 100); do grep -q "connected to collector" "$OUT/agent.log" && break; sleep 0.2; done
grep -q "connected to collector" "$OUT/agent.log" || { tail -20 "$OUT/agent.log"; exit 1; }
sleep "$SECONDS_STREAMING"
status=$(grep -E '^(VmHWM|VmRSS|RssAnon|RssFile|Threads):' "/proc/$agent/status" | tr -s ' \t' ' ' | paste -sd ' ')
kill -TERM $agent
rc=0
wait $agent || rc=$?
acked=$(sed -n 's/.*stopped acked=\([0-9]*\).*/\1/p' "$OUT/agent.log" | tail -1)
echo "agent $(stat -c %s "$AGENT") B; after ${SECONDS_STREAMING} s streaming: $status; acked ${acked:-?} records; exit $rc on SIGTERM"
[ $rc = 0 ]
