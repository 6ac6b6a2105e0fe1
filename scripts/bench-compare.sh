#!/usr/bin/env bash
# Puts Glimpse's ingest rate next to the limits of this machine and next to
# rsyslog doing the closest job, all measured in one run on the same machine:
#
#   limits   AES-256-GCM (openssl speed), loopback TCP (iperf3) and rustls
#            bulk transfer over loopback (glimpse-bench tls-bulk);
#   Glimpse  glimpse-bench run: agents stream records to a collector over
#            mutual TLS, the collector encrypts, fsyncs and acknowledges;
#   rsyslog  the same records as RFC 5425 syslog (octet-counted frames over
#            mutually-authenticated TLS) into rsyslogd's imtcp, written one
#            line per message by omfile; fed by glimpse-bench syslog.
#
#   scripts/bench-compare.sh [--devices N] [--seconds S] [--json FILE]
#                            [--no-rsyslog-fsync]
#
# N (default 100) is the number of connections (devices) for Glimpse and
# for rsyslog alike, S (default 10) the seconds of load. --json FILE also
# writes every figure as one JSON object. --no-rsyslog-fsync skips the
# second rsyslog run, in which omfile fsyncs every batch.
#
# glimpse-bench is ${GLIMPSE_BENCH:-target/release/glimpse-bench}; unless
# GLIMPSE_BENCH is set it is built first (cargo build --release --locked).
# Missing tools (openssl, iperf3, rsyslog with its TLS driver, python3) are
# installed with apt-get. rsyslog uses its OpenSSL driver where installed,
# else GnuTLS's; BENCH_RSYSLOG_DRIVER=ossl|gtls chooses.
#
# Exit status: 0 when every measure ran and neither Glimpse nor rsyslog
# lost a record, 1 otherwise.

# The measures run through measure() and the cleanup through a trap: calls
# the linter cannot follow, so it would call every function they use dead.
# shellcheck disable=SC2317
set -euo pipefail

devices=100
seconds=10
json_out=
rsyslog_fsync=1
while [ $# -gt 0 ]; do
  case "$1" in
    --devices) devices=${2:?--devices needs a number}; shift 2 ;;
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --json) json_out=${2:?--json needs a file}; shift 2 ;;
    --no-rsyslog-fsync) rsyslog_fsync=0; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "bench-compare: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $devices =~ ^[1-9][0-9]*$ ]] || { echo "bench-compare: --devices must be a positive integer" >&2; exit 2; }
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "bench-compare: --seconds must be a positive integer" >&2; exit 2; }
# Paths given by the caller are relative to their cwd, which is left below.
if [ -n "$json_out" ]; then
  case "$json_out" in /*) ;; *) json_out=$PWD/$json_out ;; esac
fi
bench=${GLIMPSE_BENCH:-}
case "$bench" in /* | "") ;; */*) bench=$PWD/$bench ;; esac

cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'bench-compare: %s\n' "$*" >&2; }
die() { warn "$*"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-compare.XXXXXX")
pids=()
policy_rc_d_ours=0
sudo_=()
[ "$(id -u)" = 0 ] || sudo_=(sudo)
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$policy_rc_d_ours" = 1 ]; then "${sudo_[@]}" rm -f /usr/sbin/policy-rc.d; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops one process this script started, so a later measure does not share
# the CPUs with it.
stop() {
  local pid=$1 p keep=()
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${pids[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# ---------------------------------------------------------------- tools
rsyslog_has_driver() {
  local f
  for f in /usr/lib/*/rsyslog/lmnsd_"$1".so /usr/lib/rsyslog/lmnsd_"$1".so; do
    [ -e "$f" ] && return 0
  done
  return 1
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_[@]}" apt-get install -y -q "$@" >>"$tmp/apt.log" 2>&1 && return 0
  # A fresh machine may have no package lists yet, or stale ones.
  "${sudo_[@]}" apt-get update -q >>"$tmp/apt.log" 2>&1 || true
  "${sudo_[@]}" apt-get install -y -q "$@" >>"$tmp/apt.log" 2>&1
}

want=()
command -v openssl >/dev/null || want+=(openssl)
command -v iperf3 >/dev/null || want+=(iperf3)
command -v python3 >/dev/null || want+=(python3)
command -v rsyslogd >/dev/null || want+=(rsyslog)
if [ ${#want[@]} -gt 0 ] || ! { rsyslog_has_driver ossl || rsyslog_has_driver gtls; }; then
  log "installing ${want[*]} and an rsyslog TLS driver if missing"
  # Installing rsyslog runs its init script where there is no systemd;
  # a policy-rc.d that denies keeps a system rsyslogd from starting behind
  # our back and competing for the CPUs we measure on. (Where systemd does
  # start one, Debian's configuration only reads /dev/log and the kernel
  # log: no port, so it does not clash with ours.)
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo_[@]}" chmod +x /usr/sbin/policy-rc.d
    policy_rc_d_ours=1
  fi
  if [ ${#want[@]} -gt 0 ] && ! apt_install "${want[@]}"; then
    tail -n 20 "$tmp/apt.log" >&2
    die "apt-get install ${want[*]} failed"
  fi
  # Whichever TLS driver installs: OpenSSL's first, GnuTLS's otherwise.
  if ! rsyslog_has_driver ossl && ! rsyslog_has_driver gtls; then
    apt_install rsyslog-openssl || apt_install rsyslog-gnutls || true
  fi
  if [ "$policy_rc_d_ours" = 1 ]; then "${sudo_[@]}" rm -f /usr/sbin/policy-rc.d; policy_rc_d_ours=0; fi
fi
# OpenSSL's driver is preferred: the same TLS library as openssl speed.
if [ -n "${BENCH_RSYSLOG_DRIVER:-}" ]; then
  rsyslog_has_driver "$BENCH_RSYSLOG_DRIVER" || die "rsyslog driver lmnsd_$BENCH_RSYSLOG_DRIVER is not installed"
  rsyslog_driver=$BENCH_RSYSLOG_DRIVER
elif rsyslog_has_driver ossl; then
  rsyslog_driver=ossl
elif rsyslog_has_driver gtls; then
  rsyslog_driver=gtls
else
  tail -n 20 "$tmp/apt.log" >&2 || true
  die "no rsyslog TLS driver (rsyslog-openssl or rsyslog-gnutls) could be installed"
fi

if [ -z "$bench" ]; then
  bench=${CARGO_TARGET_DIR:-target}/release/glimpse-bench
  log "building glimpse-bench"
  cargo build --release --locked -p glimpse-benches --bin glimpse-bench >&2
fi
command -v "$bench" >/dev/null || die "glimpse-bench not found or not executable: $bench"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Reads the kernel's table rather than connecting: a probe connection
# would count as iperf3's one test (-1) or as an rsyslog session.
wait_listening() {
  local port=$1 pid=$2 hex i
  hex=$(printf '%04X' "$port")
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 1
    if awk -v p=":$hex" '$2 ~ p"$" && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# The last JSON object in a command's stdout, on one line or pretty-printed,
# so that progress lines or a banner before it do not break parsing.
last_json() {
  python3 -c '
import json, sys
text = open(sys.argv[1]).read()
dec = json.JSONDecoder()
starts = [i for i, c in enumerate(text) if c == "{" and (i == 0 or text[i - 1] == "\n")]
for i in reversed(starts):
    try:
        obj, _ = dec.raw_decode(text, i)
    except ValueError:
        continue
    if isinstance(obj, dict):
        print(json.dumps(obj))
        sys.exit(0)
sys.exit("no JSON object in " + sys.argv[1])
' "$1"
}

# Runs a measure, keeping the JSON object it prints in $tmp/NAME.json. A
# measure that fails is reported and the script goes on with the others;
# figures it printed before failing (a bench that exits non-zero because
# records were lost, say) are still shown. Called from an `if`, a shell
# function runs without errexit, so the functions given to it check each
# step themselves.
failed=()
measure() {
  local name=$1 rc=0; shift
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
  if ! last_json "$tmp/$name.out" >"$tmp/$name.json" 2>/dev/null; then
    rm -f "$tmp/$name.json"
    [ "$rc" != 0 ] || rc=1
  fi
  [ "$rc" = 0 ] && return 0
  warn "$name failed (status $rc); last lines of its output:"
  tail -n 15 "$tmp/$name.err" "$tmp/$name.out" >&2 || true
  failed+=("$name")
  return 1
}

# ---------------------------------------------------------------- machine
cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
python3 - "$tmp/machine.json" "$(nproc)" "${cpu_model:-unknown}" "$(uname -r)" \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$devices" "$seconds" \
  "$(openssl version)" "$(iperf3 --version 2>&1 | head -n 1)" \
  "$(rsyslogd -v 2>&1 | awk 'NR == 1 { print $2 }')" "$rsyslog_driver" <<'EOF'
import json, sys
keys = ["nproc", "cpu_model", "kernel", "date", "devices", "seconds",
        "openssl", "iperf3", "rsyslog", "rsyslog_tls_driver"]
vals = sys.argv[2:]
d = dict(zip(keys, vals))
for k in ("nproc", "devices", "seconds"):
    d[k] = int(d[k])
json.dump(d, open(sys.argv[1], "w"))
EOF

# ---------------------------------------------------------------- limits
openssl_speed() {
  # -mr prints bytes per second with a header of block sizes, which is
  # steadier to parse than the human table in 1000s of bytes.
  openssl speed -mr -evp aes-256-gcm -seconds 3 2>/dev/null | python3 -c '
import json, sys
sizes = rates = None
for line in sys.stdin:
    f = line.strip().split(":")
    if f[0] == "+H":
        sizes = [int(x) for x in f[1:]]
    elif f[0] == "+F":
        rates = [float(x) for x in f[3:]]
if not sizes or not rates:
    sys.exit("no +H/+F lines from openssl speed -mr")
print(json.dumps({"bytes_per_sec": dict(zip(map(str, sizes), rates)),
                  "mib_per_sec": {str(s): r / 1048576 for s, r in zip(sizes, rates)}}))
'
}
log "openssl speed -evp aes-256-gcm (18 s)"
measure openssl openssl_speed || true

iperf3_loopback() {
  local port pid
  port=$(free_port)
  # Not -D: in the foreground of a background job its pid is ours to stop.
  iperf3 -s -1 -B 127.0.0.1 -p "$port" >"$tmp/iperf3-server.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_listening "$port" "$pid" || { cat "$tmp/iperf3-server.log" >&2; stop "$pid"; return 1; }
  iperf3 -c 127.0.0.1 -p "$port" -t 5 -J >"$tmp/iperf3-client.json" || { stop "$pid"; return 1; }
  stop "$pid"
  python3 -c '
import json, sys
bps = json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]
print(json.dumps({"bits_per_sec": bps, "mib_per_sec": bps / 8 / 1048576}))
' "$tmp/iperf3-client.json"
}
log "iperf3 over loopback (5 s)"
measure iperf3 iperf3_loopback || true

log "rustls bulk over loopback ($seconds s)"
measure rustls "$bench" tls-bulk --seconds "$seconds" --json || true

# ---------------------------------------------------------------- Glimpse
log "Glimpse: $devices devices for $seconds s"
measure glimpse "$bench" run --devices "$devices" --seconds "$seconds" --records capture --json || true

# ---------------------------------------------------------------- rsyslog
pki=$tmp/pki
mkdir -p "$pki"
rsyslog_name='bench-rsyslog'
# ECDSA P-256 is accepted by rsyslog's OpenSSL and GnuTLS drivers and by
# rustls alike; the SAN and key usages are what rustls/webpki insist on.
make_pki() {
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$pki/ca.key" -out "$pki/ca.pem" -days 2 -subj /CN=bench-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
  local name cn eku
  while read -r name cn eku; do
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
      -keyout "$pki/$name.key" -out "$pki/$name.csr" -subj "/CN=$cn"
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=DNS:%s\n' \
      "$eku" "$cn" >"$pki/$name.ext"
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
      -CAcreateserial -days 2 -extfile "$pki/$name.ext" -out "$pki/$name.pem"
  done <<EOF
server $rsyslog_name serverAuth
client bench-client clientAuth
EOF
}
make_pki >"$tmp/pki.log" 2>&1 || { cat "$tmp/pki.log" >&2; die "making the throwaway CA failed"; }

# MODE buffered: what an operator tunes for throughput. Each batch the
# queue hands omfile (up to queue.dequeueBatchSize messages) goes out in one
# write() from a 4 MiB buffer; nothing is fsynced. asyncWriting was tried
# and is no faster here, and its flush timer (whole seconds) would leave up
# to a second of lines unwritten at the end of a run, counted against
# rsyslog. rsyslog never acknowledges a record to the sender (RFC 5425 has
# no acks), whereas Glimpse fsyncs a batch before acknowledging it, so this
# run promises much less than Glimpse does.
# MODE fsync: the same, and the file is fsynced after every batch: the
# nearest rsyslog gets to Glimpse's durability, still with no
# acknowledgement to the sender.
rsyslog_conf() {
  local mode=$1 dir=$2 port=$3 omfile_opts
  omfile_opts='asyncWriting="off" ioBufferSize="4m" flushOnTXEnd="on"'
  if [ "$mode" = fsync ]; then
    omfile_opts+=' sync="on"'
  fi
  cat <<EOF
# No imuxsock and no imklog: this rsyslogd must not take /dev/log or the
# kernel log from the system, only its own TCP port.
global(
  workDirectory="$dir/work"
  maxMessageSize="64k"
  # Reverse lookups of 127.0.0.1 would only time connection setup against
  # whatever resolver the machine has.
  net.enableDNS="off"
  defaultNetstreamDriver="$rsyslog_driver"
  defaultNetstreamDriverCAFile="$pki/ca.pem"
  defaultNetstreamDriverCertFile="$pki/server.pem"
  defaultNetstreamDriverKeyFile="$pki/server.key"
)
# A comparison where rsyslog drops messages means nothing: the queue is far
# larger than a run's backlog, nothing is discarded as it fills up (the
# discard mark is the size, and severity 8 and above matches no message),
# and a full queue holds imtcp back (TCP pushes back on the senders) for 10
# minutes before it would discard.
main_queue(
  queue.type="LinkedList"
  queue.size="10000000"
  queue.discardMark="10000000"
  queue.discardSeverity="8"
  queue.timeoutEnqueue="600000"
  queue.dequeueBatchSize="4096"
  queue.workerThreads="2"
)
# Its counters tell whether anything was discarded, independently of the
# line count.
module(load="impstats" interval="1" resetCounters="off" log.syslog="off" log.file="$dir/impstats.log")
module(load="imtcp"
  streamDriver.name="$rsyslog_driver"
  streamDriver.mode="1"
  streamDriver.authMode="x509/certvalid"
  maxSessions="$((devices * 2 + 100))"
)
input(type="imtcp" address="127.0.0.1" port="$port" ruleset="bench")
ruleset(name="bench") {
  action(type="omfile" file="$dir/messages.log" template="RSYSLOG_FileFormat" $omfile_opts)
}
EOF
}

proc_cpu_secs() {
  awk -v tck="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / tck }' "/proc/$1/stat"
}
proc_hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

rsyslog_run() {
  local mode=$1
  local dir=$tmp/rsyslog-$mode port pid cpu0 cpu1 t0 t1 lines hwm rc=0
  mkdir -p "$dir/work"
  port=$(free_port)
  rsyslog_conf "$mode" "$dir" "$port" >"$dir/rsyslog.conf"
  rsyslogd -N1 -f "$dir/rsyslog.conf" >"$dir/check.log" 2>&1 || { cat "$dir/check.log" >&2; return 1; }
  # -n keeps it in the foreground of a background job: $! is rsyslogd
  # itself, to stop and to measure; -i keeps the pid file out of /run.
  rsyslogd -n -f "$dir/rsyslog.conf" -i "$dir/rsyslogd.pid" >"$dir/rsyslogd.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_listening "$port" "$pid" || { cat "$dir/rsyslogd.log" >&2; stop "$pid"; return 1; }
  cpu0=$(proc_cpu_secs "$pid")
  t0=$EPOCHREALTIME
  "$bench" syslog --target "127.0.0.1:$port" --ca "$pki/ca.pem" \
    --cert "$pki/client.pem" --key "$pki/client.key" --server-name "$rsyslog_name" \
    --devices "$devices" --seconds "$seconds" --records capture \
    --output-file "$dir/messages.log" --collector-pid "$pid" --json || rc=$?
  t1=$EPOCHREALTIME
  # Empty when rsyslogd died during the run; the report then shows n/a.
  cpu1=$(proc_cpu_secs "$pid" 2>/dev/null) || cpu1=
  hwm=$(proc_hwm_kib "$pid" 2>/dev/null) || hwm=
  # impstats writes every second; its last line must cover the end of the run.
  sleep 1.5
  stop "$pid"
  [ "$rc" = 0 ] || tail -n 15 "$dir/rsyslogd.log" >&2
  lines=$(wc -l <"$dir/messages.log" 2>/dev/null) || lines=0
  # The script's own view, independent of glimpse-bench and counted after
  # rsyslogd has flushed and exited: lines in the file, rsyslogd's CPU over
  # the bench's wall time, and the main queue's counters.
  python3 - "$dir/impstats.log" "$lines" "$cpu0" "$cpu1" "$t0" "$t1" "$hwm" <<'EOF' >"$tmp/rsyslog-$mode.own.json" || rc=1
import json, re, sys
stats, lines, cpu0, cpu1, t0, t1, hwm = sys.argv[1:]
q = {}
try:
    for line in open(stats):
        if "main Q:" in line:
            q = dict(re.findall(r"(\S+)=(\d+)", line))
except FileNotFoundError:
    pass
wall = float(t1) - float(t0)
print(json.dumps({
    "lines_in_file": int(lines),
    "wall_seconds": wall,
    "rsyslogd_cpu_cores": (float(cpu1) - float(cpu0)) / wall if cpu1 and wall > 0 else None,
    "rsyslogd_peak_rss_kib": int(hwm) if hwm else None,
    "main_queue": {k: int(v) for k, v in q.items()},
}))
EOF
  # Hundreds of MB per run: gone before the next measure writes its own.
  rm -f "$dir/messages.log"
  return "$rc"
}
log "rsyslog ($rsyslog_driver, omfile without fsync): $devices devices for $seconds s"
measure rsyslog-buffered rsyslog_run buffered || true
if [ "$rsyslog_fsync" = 1 ]; then
  log "rsyslog ($rsyslog_driver, omfile fsync per batch): $devices devices for $seconds s"
  measure rsyslog-fsync rsyslog_run fsync || true
fi

# ---------------------------------------------------------------- report
status=0
python3 - "$tmp" "$json_out" <<'EOF' || status=1
import json, os, sys

tmp, json_out = sys.argv[1], sys.argv[2]

def load(name):
    try:
        with open(os.path.join(tmp, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

machine = load("machine")
ossl, iperf, rustls, glimpse = load("openssl"), load("iperf3"), load("rustls"), load("glimpse")
runs = {}
for mode in ("buffered", "fsync"):
    bench = load("rsyslog-" + mode)
    if bench is not None or os.path.exists(os.path.join(tmp, "rsyslog-" + mode)):
        runs[mode] = {"bench": bench, "script": load("rsyslog-%s.own" % mode)}

def get(d, *path):
    for p in path:
        if not isinstance(d, dict) or d.get(p) is None:
            return None
        d = d[p]
    return d

def ratio(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

def num(x, unit="", digits=1):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        s = f"{x:,.{digits}f}"
    else:
        s = f"{x:,}"
    return s + (" " + unit if unit else "")

def frac(x):
    if x is None:
        return "n/a"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"

aes16k = get(ossl, "mib_per_sec", "16384")
aes256 = get(ossl, "mib_per_sec", "256")
aes64 = get(ossl, "mib_per_sec", "64")
tcp = get(iperf, "mib_per_sec")
tls = get(rustls, "mib_per_sec")
g_rps = get(glimpse, "records_per_sec")
g_mib = get(glimpse, "mib_per_sec")

rows = []
def row(measure, result="", r=""):
    rows.append((measure, result, r))

row("machine: CPUs (nproc)", num(get(machine, "nproc")))
row("machine: CPU model", get(machine, "cpu_model") or "n/a")
row("machine: kernel", get(machine, "kernel") or "n/a")
row("machine: date (UTC)", get(machine, "date") or "n/a")
row("load", f"{get(machine, 'devices')} devices x {get(machine, 'seconds')} s")
row("AES-256-GCM, openssl, 1 core, 16 KiB blocks", num(aes16k, "MiB/s"))
row("AES-256-GCM, openssl, 1 core, 256 B blocks", num(aes256, "MiB/s"))
row("AES-256-GCM, openssl, 1 core, 64 B blocks", num(aes64, "MiB/s"))
row("loopback TCP, iperf3, 1 stream", num(tcp, "MiB/s"))
row(f"rustls bulk over loopback ({get(rustls, 'cipher_suite') or '?'})", num(tls, "MiB/s"))

def stored_cell(sent, stored, equal):
    if sent is None and stored is None:
        return "n/a"
    if stored is None or equal is None:
        return f"not verified ({num(sent)} sent)"
    return f"{'yes' if equal else 'NO'} ({num(stored)} of {num(sent)})"

row("Glimpse records/s", num(g_rps, digits=0))
row("Glimpse MiB/s", num(g_mib, "MiB/s", 2))
row("Glimpse record size (encoded, average)", num(get(glimpse, "record_bytes"), "B"))
lat = [get(glimpse, "latency_us", k) for k in ("p50", "p99", "max")]
row("Glimpse ack latency p50 / p99 / max",
    "n/a" if lat == [None] * 3 else " / ".join(num(x, digits=0) for x in lat) + " us")
row("Glimpse collector CPU / peak RSS",
    f"{num(get(glimpse, 'collector', 'cpu_cores'), 'cores', 2)} / {num(get(glimpse, 'collector', 'peak_rss_kib'), 'KiB')}")
row("Glimpse connections / errors", f"{num(get(glimpse, 'connections'))} / {num(get(glimpse, 'errors'))}")
row("Glimpse records acked", num(get(glimpse, "records_acked")))
row("Glimpse stored = sent", stored_cell(get(glimpse, "records_sent"), get(glimpse, "records_stored"),
                                         get(glimpse, "stored_equals_sent")))

labels = {"buffered": "rsyslog (no fsync)", "fsync": "rsyslog (fsync per batch)"}
ratios = {}
lost = False
for mode, run in runs.items():
    b, s, L = run["bench"], run["script"], labels[mode]
    sent = get(b, "records_sent")
    lines = get(s, "lines_in_file")
    if lines is None:
        lines = get(b, "records_stored")
    equal = None if sent is None or lines is None else lines == sent
    if equal is False:
        lost = True
    cpu = get(b, "collector", "cpu_cores")
    if cpu is None:
        cpu = get(s, "rsyslogd_cpu_cores")
    rss = get(b, "collector", "peak_rss_kib")
    if rss is None:
        rss = get(s, "rsyslogd_peak_rss_kib")
    q = get(s, "main_queue") or {}
    row(f"{L} records/s", num(get(b, "records_per_sec"), digits=0))
    row(f"{L} MiB/s", num(get(b, "mib_per_sec"), "MiB/s", 2))
    row(f"{L} lines written = sent", stored_cell(sent, lines, equal))
    row(f"{L} queue discarded (full / nearly full), peak depth",
        f"{num(q.get('discarded.full'))} / {num(q.get('discarded.nf'))}, {num(q.get('maxqsize'))}")
    row(f"{L} rsyslogd CPU / peak RSS", f"{num(cpu, 'cores', 2)} / {num(rss, 'KiB')}")
    row(f"{L} connections / errors", f"{num(get(b, 'connections'))} / {num(get(b, 'errors'))}")
    # Rates of runs that lost records compare nothing (and a syslog run
    # that lost some also timed out waiting for them).
    spoilt = equal is False or get(glimpse, "stored_equals_sent") is False
    r = None if spoilt else ratio(g_rps, get(b, "records_per_sec"))
    ratios[f"glimpse_over_rsyslog_{mode}_records_per_sec"] = r
    row(f"Glimpse / {L}, records/s", "", "n/a: records lost" if spoilt else frac(r))
    ratios[f"rsyslog_{mode}_mib_over_rustls_bulk"] = ratio(get(b, "mib_per_sec"), tls)
    row(f"{L} MiB/s / rustls bulk", "", frac(ratios[f"rsyslog_{mode}_mib_over_rustls_bulk"]))

for key, label, base in (("rustls_bulk", "rustls bulk", tls),
                         ("iperf3", "loopback TCP (iperf3)", tcp),
                         ("aes_256_gcm_16k", "AES-256-GCM 16 KiB (openssl, 1 core)", aes16k)):
    ratios[f"glimpse_mib_over_{key}"] = ratio(g_mib, base)
    row(f"Glimpse MiB/s / {label}", "", frac(ratios[f"glimpse_mib_over_{key}"]))

w = [max(len(r[i]) for r in rows + [("measure", "result", "ratio")]) for i in range(3)]
line = lambda c: "| " + " | ".join(c[i].ljust(w[i]) for i in range(3)) + " |"
print(line(("measure", "result", "ratio")))
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in rows:
    print(line(r))
print()
print("Glimpse acknowledges a record only after the collector has fsynced it; rsyslog never")
print("acknowledges anything to the sender. rsyslog (no fsync): omfile writes each batch of up to")
print("4096 messages to the page cache. rsyslog (fsync per batch): the same, then fsync (sync=on).")
print("openssl speed is one core; iperf3 is one TCP stream.")

if json_out:
    with open(json_out, "w") as f:
        json.dump({"machine": machine, "openssl_aes_256_gcm": ossl, "iperf3_loopback": iperf,
                   "rustls_bulk": rustls, "glimpse": glimpse,
                   "rsyslog": {m: {"bench": r["bench"], "script": r["script"]} for m, r in runs.items()},
                   "ratios": ratios}, f, indent=2)
        f.write("\n")

if lost or get(glimpse, "stored_equals_sent") is False:
    print("bench-compare: records were lost (see 'stored = sent' / 'lines written = sent')", file=sys.stderr)
    sys.exit(1)
EOF

if [ ${#failed[@]} -gt 0 ]; then
  warn "measures that failed: ${failed[*]}"
  status=1
fi
exit "$status"
