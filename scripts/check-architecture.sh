#!/usr/bin/env bash
# Checks the crate-level dependency rules of docs/ARCHITECTURE.md
# ("Dependency rules", "Crates") with `cargo tree`: each crate's normal
# dependencies, transitively, with its default features (dev and build
# dependencies do not count). Prints one line per rule and exits non-zero
# if any rule is broken, naming it; a crate the rules name that is not in
# the workspace breaks its rules too, so a rename cannot pass silently.
#
# Usage: scripts/check-architecture.sh   (from anywhere in the repository;
# Cargo.lock must be up to date, as for the rest of CI;
# CARGO names another cargo)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo=${CARGO:-cargo}
broken=()

# deps CRATE: the names of every package CRATE depends on (not CRATE
# itself), one per line; fails, printing cargo's error, if cargo cannot
# resolve CRATE.
deps() {
  local crate=$1 tree
  tree=$("$cargo" tree --quiet --locked -e normal -p "$crate" --prefix none -f '{p}' 2>&1) || {
    echo "$tree"
    return 1
  }
  # "name vX.Y.Z (path) (*)" -> "name"; the first line is the crate itself.
  tail -n +2 <<<"$tree" | cut -d' ' -f1 | sort -u
}

# rule TEXT CRATE CHECK...: CHECK is "no NAME" (CRATE must not depend on
# NAME) or "only-glimpse NAME..." (every glimpse-* dependency of CRATE must
# be one of the NAMEs; none given: no glimpse crate at all).
rule() {
  local text=$1 crate=$2 found offending=()
  shift 2
  if ! found=$(deps "$crate" 2>&1); then
    local why="cargo tree could not resolve it: ${found##*$'\n'}"
    [[ $found == *"did not match any packages"* ]] && why="crate $crate is not in this workspace"
    broken+=("$text ($why)")
    echo "FAIL  $text: $why"
    return
  fi
  case $1 in
    no)
      shift
      for name in "$@"; do
        grep -qxF "$name" <<<"$found" && offending+=("$name")
      done
      ;;
    only-glimpse)
      shift
      while read -r name; do
        [[ $name == glimpse-* ]] || continue
        local allowed=false
        for ok in "$@"; do [[ $name == "$ok" ]] && allowed=true; done
        $allowed || offending+=("$name")
      done <<<"$found"
      ;;
  esac
  if [ ${#offending[@]} -gt 0 ]; then
    broken+=("$text (depends on ${offending[*]})")
    echo "FAIL  $text: depends on ${offending[*]}"
  else
    echo "ok    $text"
  fi
}

# Every crate of the layout, so that a crate the rules only name (as a
# forbidden dependency) cannot pass them by being missing or renamed.
layout=(glimpse-common glimpse-files glimpse-agent glimpse-libpcap glimpse-store glimpse-objects glimpse-collector
  glimpse-api glimpse-admin-client glimpse-demo glimpse-certs glimpse-tests glimpse-benches glimpse-docgen
  glimpse-postgres)
missing=()
for crate in "${layout[@]}"; do
  "$cargo" tree --quiet --locked -e normal -p "$crate" --depth 0 >/dev/null 2>&1 || missing+=("$crate")
done
if [ ${#missing[@]} -gt 0 ]; then
  broken+=("0. every crate of the layout is in the workspace (missing or unresolvable: ${missing[*]})")
  echo "FAIL  0. every crate of the layout is in the workspace: missing or unresolvable: ${missing[*]}"
else
  echo "ok    0. every crate of the layout is in the workspace"
fi

rule "1. glimpse-common depends on no other glimpse crate" \
  glimpse-common only-glimpse
rule "2. glimpse-common (default features) depends on no tokio" \
  glimpse-common no tokio
rule "1b. glimpse-files depends on no glimpse crate but glimpse-common" \
  glimpse-files only-glimpse glimpse-common
rule "1c. glimpse-files depends on no tokio" \
  glimpse-files no tokio
rule "3. glimpse-agent depends on no glimpse crate but glimpse-common, glimpse-files and glimpse-libpcap" \
  glimpse-agent only-glimpse glimpse-common glimpse-files glimpse-libpcap
rule "4a. glimpse-libpcap depends on no other glimpse crate" \
  glimpse-libpcap only-glimpse
rule "4b. glimpse-libpcap depends on no tokio" \
  glimpse-libpcap no tokio
rule "5a. glimpse-store depends on no glimpse crate but glimpse-common" \
  glimpse-store only-glimpse glimpse-common
rule "5b. glimpse-store depends on no tokio" \
  glimpse-store no tokio
rule "5c. glimpse-objects depends on no glimpse crate but glimpse-common, glimpse-store and glimpse-files" \
  glimpse-objects only-glimpse glimpse-common glimpse-store glimpse-files
rule "5d. glimpse-objects depends on no aws-lc-rs (object_store's S3 client on ring)" \
  glimpse-objects no aws-lc-rs aws-lc-sys
rule "6. glimpse-admin-client depends on no glimpse crate but glimpse-common, glimpse-files and glimpse-api" \
  glimpse-admin-client only-glimpse glimpse-common glimpse-files glimpse-api
rule "6b. glimpse-api depends on no glimpse crate" \
  glimpse-api only-glimpse
rule "6c. glimpse-api depends on no tokio and no HTTP crate" \
  glimpse-api no tokio hyper axum
rule "7. glimpse-collector depends on neither glimpse-agent, glimpse-certs, glimpse-libpcap, glimpse-demo nor the pcap crate" \
  glimpse-collector no glimpse-agent glimpse-certs glimpse-libpcap glimpse-demo pcap
rule "9. glimpse-demo links no libpcap (depends on no pcap crate)" \
  glimpse-demo no pcap
rule "8a. glimpse-certs depends on no glimpse crate but glimpse-common and glimpse-files" \
  glimpse-certs only-glimpse glimpse-common glimpse-files
rule "8b. glimpse-certs depends on no tokio" \
  glimpse-certs no tokio
rule "10. glimpse-postgres depends on no glimpse crate but glimpse-store, glimpse-common and glimpse-files" \
  glimpse-postgres only-glimpse glimpse-store glimpse-common glimpse-files
rule "10b. glimpse-postgres depends on no collector service or device crate" \
  glimpse-postgres no glimpse-collector glimpse-agent glimpse-libpcap

if [ ${#broken[@]} -gt 0 ]; then
  echo >&2
  echo "architecture rules broken (docs/ARCHITECTURE.md, \"Dependency rules\"):" >&2
  printf '  %s\n' "${broken[@]}" >&2
  exit 1
fi
echo "all architecture rules hold"
