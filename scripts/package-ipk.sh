#!/usr/bin/env bash
# Builds the OpenWrt package (.ipk) of the agent from a device build:
# /usr/bin/glimpse-agent, the procd init script /etc/init.d/glimpse, the
# UCI config /etc/config/glimpse (turned into agent.toml by the agent at
# every start), dnsmasq's DHCP fingerprint script
# /usr/libexec/glimpse-dhcp-fingerprint, and a sysupgrade keep list for /etc/glimpse. The ipk is what
# OpenWrt's ipkg-build makes: a tar.gz of debian-binary, data.tar.gz and
# control.tar.gz. Needs tar and gzip only.
#
# Usage: scripts/package-ipk.sh [--arch ARCH] [--out DIR] TARGET BINARY[:NAME]...
#   TARGET  the Rust target triple the binaries were built for (picks the
#           OpenWrt architecture: aarch64_generic, arm_cortex-a7_neon-vfpv4,
#           mipsel_24kc, mips_24kc, x86_64); --arch names another
#   BINARY  a program to install in /usr/bin, under NAME if given; one must
#           be glimpse-agent (e.g. target/aarch64-unknown-linux-musl/agent/glimpse-agent)
#   --out   where the .ipk goes (default: target/ipk)
# Prints the package's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

arch=
out=target/ipk
while [ $# -gt 0 ]; do
  case $1 in
    --arch) arch=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    --*) echo "package-ipk.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || { echo "usage: scripts/package-ipk.sh [--arch ARCH] [--out DIR] TARGET BINARY[:NAME]..." >&2; exit 64; }
target=$1
shift
if [ -z "$arch" ]; then
  case $target in
    aarch64-*) arch=aarch64_generic ;;
    armv7-*) arch=arm_cortex-a7_neon-vfpv4 ;;
    mipsel-*) arch=mipsel_24kc ;;
    mips-*) arch=mips_24kc ;;
    x86_64-*) arch=x86_64 ;;
    *) echo "package-ipk.sh: no OpenWrt architecture known for $target; pass --arch" >&2; exit 64 ;;
  esac
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
package=glimpse-agent
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
data=$stage/data
control=$stage/control
install -d "$data/usr/bin" "$data/usr/libexec" "$data/etc/init.d" "$data/etc/config" "$data/etc/glimpse" "$data/lib/upgrade/keep.d" "$control"

have_agent=false
for spec in "$@"; do
  path=${spec%%:*}
  name=$(basename "$path")
  [ "$spec" != "$path" ] && name=${spec#*:}
  [ -f "$path" ] || { echo "package-ipk.sh: $path: no such file" >&2; exit 66; }
  install -m 0755 "$path" "$data/usr/bin/$name"
  [ "$name" = glimpse-agent ] && have_agent=true
done
$have_agent || { echo "package-ipk.sh: no binary named glimpse-agent (use BINARY:glimpse-agent)" >&2; exit 64; }
install -m 0755 agent/packaging/openwrt/glimpse.init "$data/etc/init.d/glimpse"
install -m 0600 agent/packaging/openwrt/glimpse.uci "$data/etc/config/glimpse"
# dnsmasq's dhcp-script for client device details (OPERATIONS.md): installed,
# not enabled; the administrator points dnsmasq at it.
install -m 0755 agent/packaging/openwrt/glimpse-dhcp-fingerprint "$data/usr/libexec/glimpse-dhcp-fingerprint"
# Credentials live in /etc/glimpse: kept across firmware upgrades.
echo /etc/glimpse/ >"$data/lib/upgrade/keep.d/$package"
chmod 0644 "$data/lib/upgrade/keep.d/$package"

installed=$(du -sb "$data" | cut -f1)
cat >"$control/control" <<CONTROL
Package: $package
Version: $version
Architecture: $arch
Maintainer: Glimpse operators <root@localhost>
Section: net
Installed-Size: $installed
Description: Glimpse telemetry agent: device metadata and header-only
 captures to a Glimpse collector over mutual TLS or SSH. Configure in
 /etc/config/glimpse, then: uci set glimpse.agent.enabled=1; uci commit glimpse;
 /etc/init.d/glimpse start
CONTROL
echo /etc/config/glimpse >"$control/conffiles"
cat >"$control/postinst" <<'POSTINST'
#!/bin/sh
# Into an image being built (IPKG_INSTROOT set): nothing runs.
[ -n "${IPKG_INSTROOT}" ] && exit 0
/etc/init.d/glimpse enable
exit 0
POSTINST
cat >"$control/prerm" <<'PRERM'
#!/bin/sh
[ -n "${IPKG_INSTROOT}" ] && exit 0
/etc/init.d/glimpse stop 2>/dev/null
/etc/init.d/glimpse disable
exit 0
PRERM
chmod 0755 "$control/postinst" "$control/prerm"
echo 2.0 >"$stage/debian-binary"

tar_opts=(--format=gnu --numeric-owner --owner=0 --group=0 --sort=name)
tar "${tar_opts[@]}" -C "$data" -czf "$stage/data.tar.gz" .
tar "${tar_opts[@]}" -C "$control" -czf "$stage/control.tar.gz" .
mkdir -p "$out"
ipk="$out/${package}_${version}_${arch}.ipk"
tar --format=gnu --numeric-owner --owner=0 --group=0 -C "$stage" -czf "$ipk" ./debian-binary ./data.tar.gz ./control.tar.gz
echo "$ipk"
