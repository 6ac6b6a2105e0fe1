#!/usr/bin/env bash
# Measures the collector on its distributed backends next to the embedded
# store, in one run on this machine: the same load through glimpse-bench run
#
#   local    one collector, control plane and segments in its data directory
#            (redb, segment files, fsync): the default;
#   dist-1   one collector, control plane in PostgreSQL, segments in an
#            S3-compatible object store (Garage);
#   dist-2   two collectors sharing that PostgreSQL database, that bucket
#            and the master key, the devices spread over them;
#
# and with --metadata the same three again with metadata records. The
# script starts what the distributed runs need and tears it down again:
# a throwaway PostgreSQL cluster (initdb and pg_ctl in a temporary
# directory, as the postgres user when run as root, 127.0.0.1 on a free
# port, trust authentication, a database `glimpse`, migrated with
# glimpse-collector migrate) and a one-node Garage with a bucket and a key.
#
#   scripts/bench-distributed.sh [--devices N] [--seconds S] [--records KIND]
#                                [--batch B] [--window W] [--rate R] [--orgs K]
#                                [--metadata] [--flush-interval-ms MS]
#                                [--json FILE] [--keep]
#                                [-- more glimpse-bench run options]
#
# N (default 100) devices stream for S (default 10) seconds, KIND (capture,
# metadata or mixed; default capture) records; --batch, --window, --rate,
# --orgs and anything after -- go to every glimpse-bench run unchanged.
# --metadata adds the three runs with --records metadata.
# --flush-interval-ms sets [storage.s3] flush_interval_ms, the object
# store's group commit window (default: the collector's, 25). --json FILE
# writes every run's report, the database's and the bucket's counters and
# the machine as one JSON object. --keep leaves the temporary directory
# (configs, logs, the PostgreSQL and Garage data) for a look afterwards.
#
# Needs PostgreSQL (initdb, pg_ctl, psql: apt-get install postgresql),
# Garage 2.x (cargo install garage --locked; $GARAGE names another binary)
# and python3. glimpse-bench and glimpse-collector are
# ${GLIMPSE_BENCH:-target/release/glimpse-bench} and
# ${GLIMPSE_COLLECTOR:-target/release/glimpse-collector}; unless both are
# set they are built first (cargo build --release --locked).
#
# Exit status: 0 when every run ran and each stored exactly what it sent,
# 1 otherwise, 2 for a bad argument.

# Cleanup runs from a trap: the linter cannot follow the call.
# shellcheck disable=SC2317
set -euo pipefail

devices=100
seconds=10
records=capture
metadata=0
json_out=
keep=0
flush_ms=
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --devices) devices=${2:?--devices needs a number}; shift 2 ;;
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --records) records=${2:?--records needs capture, metadata or mixed}; shift 2 ;;
    --batch | --window | --rate | --orgs) pass+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    --metadata) metadata=1; shift ;;
    --flush-interval-ms) flush_ms=${2:?--flush-interval-ms needs a number}; shift 2 ;;
    --json) json_out=${2:?--json needs a file}; shift 2 ;;
    --keep) keep=1; shift ;;
    --) shift; pass+=("$@"); break ;;
    -h | --help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "bench-distributed: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $devices =~ ^[1-9][0-9]*$ ]] || { echo "bench-distributed: --devices must be a positive integer" >&2; exit 2; }
[[ $seconds =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "bench-distributed: --seconds must be a number" >&2; exit 2; }
[[ -z $flush_ms || $flush_ms =~ ^[1-9][0-9]*$ ]] || { echo "bench-distributed: --flush-interval-ms must be a positive integer" >&2; exit 2; }
case "$records" in capture | metadata | mixed) ;; *)
  echo "bench-distributed: --records must be capture, metadata or mixed" >&2; exit 2 ;;
esac
# Paths given by the caller are relative to their cwd, which is left below.
abs() { case "$1" in /* | "") printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
json_out=$(abs "$json_out")
bench=$(abs "${GLIMPSE_BENCH:-}")
collector=$(abs "${GLIMPSE_COLLECTOR:-}")

cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-distributed: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
# Debian's newest /usr/lib/postgresql/<version>/bin, else PATH's (as the
# tests find it: tests/src/postgres.rs).
pg_bin=
while read -r dir; do
  if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then pg_bin=$dir; fi
done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
if [ -z "$pg_bin" ] && command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
  pg_bin=$(dirname "$(command -v initdb)")
fi
[ -n "$pg_bin" ] || die "PostgreSQL (initdb, pg_ctl) not found; install it: apt-get install postgresql"
psql=$pg_bin/psql
[ -x "$psql" ] || psql=$(command -v psql) || die "psql not found; install it: apt-get install postgresql-client"
garage=${GARAGE:-$(command -v garage || true)}
[ -n "$garage" ] || [ ! -x "$HOME/.cargo/bin/garage" ] || garage=$HOME/.cargo/bin/garage
if [ -z "$garage" ] || [ ! -x "$garage" ]; then
  die "Garage not found; install it: cargo install garage --locked (2.x), or name it in \$GARAGE"
fi
command -v python3 >/dev/null || die "python3 not found; install it: apt-get install python3"
run_as=()
if [ "$(id -u)" = 0 ]; then
  # PostgreSQL refuses to run as root.
  id postgres >/dev/null 2>&1 || die "no postgres user to run PostgreSQL as; install it: apt-get install postgresql"
  run_as=(runuser -u postgres --)
fi

if [ -z "$bench" ] || [ -z "$collector" ]; then
  target=${CARGO_TARGET_DIR:-target}
  log "building glimpse-bench and glimpse-collector (release)"
  cargo build --release --locked -p glimpse-benches --bin glimpse-bench -p glimpse-collector --bin glimpse-collector >&2
  [ -n "$bench" ] || bench=$(abs "$target/release/glimpse-bench")
  [ -n "$collector" ] || collector=$(abs "$target/release/glimpse-collector")
fi
[ -x "$bench" ] || die "glimpse-bench not found or not executable: $bench"
[ -x "$collector" ] || die "glimpse-collector not found or not executable: $collector"

# ---------------------------------------------------------------- teardown
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-distributed.XXXXXX")
# The postgres user must reach its directory below; nothing here is
# listable, and the secrets are 0600 files of their own.
chmod 711 "$tmp"
garage_pid=
pg_running=0
cleanup() {
  if [ -n "$garage_pid" ]; then
    kill -TERM "$garage_pid" 2>/dev/null || true
    wait "$garage_pid" 2>/dev/null || true
  fi
  if [ "$pg_running" = 1 ]; then
    "${run_as[@]}" "$pg_bin/pg_ctl" -w -D "$tmp/pg/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ "$keep" = 1 ]; then
    printf 'bench-distributed: kept %s\n' "$tmp" >&2
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Retries "$@" for up to 60 s (a server still starting, a layout still
# spreading); prints its output once it succeeds.
retry() {
  local i out
  for ((i = 0; i < 600; i++)); do
    if out=$("$@" 2>&1); then
      printf '%s\n' "$out"
      return 0
    fi
    sleep 0.1
  done
  printf '%s\n' "$out" >&2
  return 1
}

# ---------------------------------------------------------------- PostgreSQL
pg_port=$(free_port)
mkdir -p "$tmp/pg"
[ ${#run_as[@]} = 0 ] || chown postgres "$tmp/pg"
log "PostgreSQL $("$pg_bin/pg_ctl" --version | awk '{ print $3 }') on 127.0.0.1:$pg_port"
"${run_as[@]}" "$pg_bin/initdb" -U glimpse -A trust -E UTF8 --locale=C -D "$tmp/pg/data" >"$tmp/initdb.log" 2>&1 \
  || { cat "$tmp/initdb.log" >&2; die "initdb failed"; }
# Durable as in production: fsync and synchronous_commit on (the defaults).
"${run_as[@]}" "$pg_bin/pg_ctl" -w -t 60 -D "$tmp/pg/data" -l "$tmp/pg/server.log" \
  -o "-p $pg_port -k $tmp/pg -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200" start >/dev/null \
  || { cat "$tmp/pg/server.log" >&2; die "pg_ctl start failed"; }
pg_running=1
pg_pid=$(head -n 1 "$tmp/pg/data/postmaster.pid")
sql() { "$psql" -X -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U glimpse -d "${2:-glimpse}" -c "$1"; }
retry sql "CREATE DATABASE glimpse" postgres >/dev/null || die "creating the glimpse database failed"

# ---------------------------------------------------------------- Garage
s3_port=$(free_port)
rpc_port=$(free_port)
mkdir -p "$tmp/garage"
cat >"$tmp/garage/garage.toml" <<EOF
metadata_dir = "$tmp/garage/meta"
data_dir = "$tmp/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
EOF
chmod 600 "$tmp/garage/garage.toml"
log "Garage $("$garage" --version | awk '{ print $2 }') on 127.0.0.1:$s3_port"
RUST_LOG=garage=warn "$garage" -c "$tmp/garage/garage.toml" server >"$tmp/garage/garage.log" 2>&1 &
garage_pid=$!
g() { "$garage" -c "$tmp/garage/garage.toml" "$@"; }
retry g status >/dev/null || { tail -n 20 "$tmp/garage/garage.log" >&2; die "Garage did not answer"; }
node=$(g node id -q | cut -d@ -f1)
g layout assign -z dc1 -c 1G "$node" >/dev/null
g layout apply --version 1 >/dev/null
retry g bucket create glimpse >/dev/null || die "garage bucket create failed"
key=$(retry g key create glimpse-bench) || die "garage key create failed"
key_id=$(awk -F': *' '/Key ID:/ { print $2; exit }' <<<"$key")
key_secret=$(awk -F': *' '/Secret key:/ { print $2; exit }' <<<"$key")
if [ -z "$key_id" ] || [ -z "$key_secret" ]; then die "no key in garage's answer"; fi
retry g bucket allow --read --write glimpse --key "$key_id" >/dev/null || die "garage bucket allow failed"
retry python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$s3_port" \
  >/dev/null || die "Garage's S3 API never opened"

# ---------------------------------------------------------------- backends
(umask 077 && printf '%s\n' "$key_secret" >"$tmp/s3.secret")
cat >"$tmp/backends.toml" <<EOF
# The [control] and [storage] tables of every bench collector (glimpse-bench
# run --backend-config); relative paths are resolved beside this file.
[control]
backend = "postgres"

[control.postgres]
url = "host=127.0.0.1 port=$pg_port user=glimpse dbname=glimpse"
tls = "disable"                   # loopback

[storage]
backend = "s3"

[storage.s3]
endpoint = "http://127.0.0.1:$s3_port"
region = "garage"
bucket = "glimpse"
access_key_id = "$key_id"
secret_access_key_file = "s3.secret"
allow_http = true                 # loopback
EOF
[ -z "$flush_ms" ] || printf 'flush_interval_ms = %s\n' "$flush_ms" >>"$tmp/backends.toml"
# migrate reads only the [control] tables, but takes a whole collector
# config; nothing else in it is opened.
cat >"$tmp/migrate.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "unused"
master_key_file = "unused.key"
[tls]
ca = "unused.pem"
cert = "unused.pem"
key = "unused.key"
EOF
cat "$tmp/backends.toml" >>"$tmp/migrate.toml"
"$collector" migrate --config "$tmp/migrate.toml" >"$tmp/migrate.log" 2>&1 \
  || { cat "$tmp/migrate.log" >&2; die "glimpse-collector migrate failed"; }
log "$(tail -n 1 "$tmp/migrate.log")"

# ---------------------------------------------------------------- runs
# Transactions committed and rolled back in the glimpse database so far
# (each backend reports its counts when it ends at the latest: read after
# a run, whose collectors have exited).
pg_commits() { sql "SELECT xact_commit FROM pg_stat_database WHERE datname = 'glimpse'" | tr -d ' '; }
pg_rollbacks() { sql "SELECT xact_rollback FROM pg_stat_database WHERE datname = 'glimpse'" | tr -d ' '; }
# The segment catalog (one row per segment object) and the database's size.
pg_catalog() {
  sql "SELECT count(*), coalesce(sum(length(row)), 0), pg_database_size('glimpse') FROM glimpse_segments" | tr '|' ' '
}
# `garage bucket info` counts the bucket's objects and their size
# ("Size: 35.2 MB (33.6 MiB)", so to 0.1 of the binary unit).
bucket_counts() {
  g bucket info glimpse | python3 -c '
import re, sys
text = sys.stdin.read()
objects = re.search(r"Objects:\s*(\d+)", text)
size = re.search(r"Size:[^(\n]*\(([\d.]+)\s*(B|KiB|MiB|GiB|TiB)\)", text)
units = {"B": 0, "KiB": 1, "MiB": 2, "GiB": 3, "TiB": 4}
nbytes = int(float(size.group(1)) * 1024 ** units[size.group(2)]) if size else 0
print(objects.group(1) if objects else 0, nbytes)
'
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

kinds=("$records")
[ "$metadata" = 0 ] || [ "$records" = metadata ] || kinds+=(metadata)
runs=()
failed=()
load_before=$(loadavg)
for kind in "${kinds[@]}"; do
  for setup in local dist-1 dist-2; do
    name=$kind-$setup
    args=(run --devices "$devices" --seconds "$seconds" --records "$kind" --json "${pass[@]}")
    case "$setup" in
      local) args+=(--dir "$tmp/bench-local") ;;
      # Both distributed setups on one bench directory: its master.key
      # wraps the organisations' keys in the shared database.
      dist-1) args+=(--dir "$tmp/bench-dist" --backend-config "$tmp/backends.toml" --collectors 1) ;;
      dist-2) args+=(--dir "$tmp/bench-dist" --backend-config "$tmp/backends.toml" --collectors 2) ;;
    esac
    # The database's and the object store's CPU while the fleet streams
    # (PostgreSQL with its backends); both sit idle in the local runs.
    args+=(--measure "postgres=$pg_pid" --measure "garage=$garage_pid")
    commits0=$(pg_commits)
    rollbacks0=$(pg_rollbacks)
    read -r rows0 row_bytes0 db_bytes0 < <(pg_catalog)
    read -r objects0 bytes0 < <(bucket_counts)
    log "$name: glimpse-bench ${args[*]} (load average $(loadavg))"
    rc=0
    "$bench" "${args[@]}" >"$tmp/$name.json" 2>"$tmp/$name.err" || rc=$?
    commits1=$(pg_commits)
    rollbacks1=$(pg_rollbacks)
    read -r rows1 row_bytes1 db_bytes1 < <(pg_catalog)
    read -r objects1 bytes1 < <(bucket_counts)
    printf '{"pg_commits": %s, "pg_rollbacks": %s, "catalog_rows": %s, "catalog_row_bytes": %s, "pg_database_bytes": %s, "objects": %s, "bytes": %s}\n' \
      "$((commits1 - commits0))" "$((rollbacks1 - rollbacks0))" \
      "$((rows1 - rows0))" "$((row_bytes1 - row_bytes0))" "$((db_bytes1 - db_bytes0))" \
      "$((objects1 - objects0))" "$((bytes1 - bytes0))" \
      >"$tmp/$name.backend.json"
    if [ "$rc" != 0 ] || ! python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$tmp/$name.json" 2>/dev/null; then
      printf 'bench-distributed: %s failed (status %s):\n' "$name" "$rc" >&2
      tail -n 15 "$tmp/$name.err" "$tmp/$name.json" >&2 || true
      failed+=("$name")
    fi
    runs+=("$name")
  done
done
load_after=$(loadavg)

# ---------------------------------------------------------------- summary
python3 - "$tmp" "$json_out" "$load_before" "$load_after" "$devices" "$seconds" "$flush_ms" "${runs[@]}" <<'EOF'
import json, os, sys

tmp, json_out, load_before, load_after, devices, seconds, flush_ms = sys.argv[1:8]
runs = sys.argv[8:]
reports = {}
for name in runs:
    try:
        report = json.load(open(os.path.join(tmp, name + ".json")))
    except (OSError, ValueError):
        report = None
    backend = json.load(open(os.path.join(tmp, name + ".backend.json")))
    reports[name] = {"report": report, "backend": backend}

def mib(kib):
    return kib / 1024

rows = [("run", "records/s", "MiB/s", "ack p50", "ack p99", "collector CPU", "peak RSS", "PG CPU", "Garage CPU",
         "PG commits/batch", "objects/s", "stored = sent")]
for name, r in reports.items():
    rep, backend = r["report"], r["backend"]
    if rep is None:
        rows.append((name, "failed", "", "", "", "", "", "", "", "", "", "no"))
        continue
    c = rep.get("collector") or {}
    each = rep.get("collectors") or []
    cpu = f"{c.get('cpu_cores', 0):.2f}"
    rss = f"{mib(c.get('peak_rss_kib', 0)):.0f} MiB"
    if len(each) > 1:
        cpu += " (" + " + ".join(f"{e['cpu_cores']:.2f}" for e in each) + ")"
        rss += " (" + " + ".join(f"{mib(e['peak_rss_kib']):.0f}" for e in each) + ")"
    batches = rep["records_acked"] / max(rep["batch"], 1)
    distributed = "dist" in name
    others = {o["name"]: o.get("cpu_cores") for o in rep.get("others", [])}
    def cores(which):
        value = others.get(which)
        return f"{value:.2f}" if distributed and value is not None else "-"
    rows.append((
        name,
        f"{rep['records_per_sec']:,.0f}",
        f"{rep['mib_per_sec']:.1f}",
        f"{rep['latency_us']['p50'] / 1000:.1f} ms",
        f"{rep['latency_us']['p99'] / 1000:.1f} ms",
        cpu,
        rss,
        cores("postgres"),
        cores("garage"),
        f"{backend['pg_commits'] / batches:.2f}" if distributed and batches else "-",
        f"{backend['objects'] / rep['seconds']:.0f}" if distributed and rep["seconds"] else "-",
        "yes" if rep.get("stored_equals_sent") else "NO",
    ))
widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
for n, row in enumerate(rows):
    print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if n == 0:
        print("  ".join("-" * w for w in widths))
print()
first = next((r["report"] for r in reports.values() if r["report"]), None)
if first:
    m = first["machine"]
    print(f"{devices} devices, {seconds} s each, {first['batch']} records a batch; flush interval "
          + (flush_ms + " ms" if flush_ms else "25 ms (the default)") + "; "
          f"machine: {m['cores']} cores, {m['cpu']}; load average before {load_before}, after {load_after}")
for name, r in reports.items():
    rep, backend = r["report"], r["backend"]
    if rep and "dist" in name:
        print(f"{name}: {rep['records_acked'] / max(rep['batch'], 1):,.0f} batches, "
              f"{backend['pg_commits']:,} PostgreSQL commits ({backend['pg_rollbacks']:,} rolled back), "
              f"{backend['objects']:,} objects ({backend['bytes'] / 1048576:.1f} MiB) in {rep['seconds']:.1f} s; "
              f"{backend['catalog_rows']:,} catalog rows ({backend['catalog_row_bytes'] / 1024:.0f} KiB), "
              f"database +{backend['pg_database_bytes'] / 1048576:.1f} MiB")
if json_out:
    json.dump({"devices": int(devices), "seconds": float(seconds), "flush_interval_ms": flush_ms or None,
               "load_before": load_before,
               "load_after": load_after, "runs": reports}, open(json_out, "w"), indent=2)
EOF

if [ ${#failed[@]} -gt 0 ]; then
  die "failed: ${failed[*]}"
fi
