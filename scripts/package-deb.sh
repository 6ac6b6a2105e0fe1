#!/usr/bin/env bash
# Builds the Debian package of the collector and its tools:
# glimpse-collector and glimpse-certs in /usr/bin, the systemd unit and
# sysusers file, /etc/glimpse/collector.toml.example, man pages and bash,
# zsh and fish completions (written by glimpse-docgen from the clap
# definitions). With dpkg-deb alone: no cargo-deb or debhelper to install.
#
# Usage: scripts/package-deb.sh [--profile PROFILE] [--out DIR] [--no-build]
#   --profile  cargo profile to build and package (default: release; CI
#              packages its dev build, which `cargo test` has just built)
#   --out      where the .deb goes (default: target/debian)
#   --no-build package what target/<profile dir>/ already holds
# Prints the package's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
out=target/debian
build=true
while [ $# -gt 0 ]; do
  case $1 in
    --profile) profile=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=false; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "package-deb.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
for tool in dpkg-deb dpkg gzip; do
  command -v "$tool" >/dev/null || { echo "package-deb.sh: $tool is needed (apt-get install dpkg gzip)" >&2; exit 69; }
done

cargo=${CARGO:-cargo}
# cargo puts the dev profile in target/debug, every other in target/<name>.
case $profile in dev|debug) profile=dev; bin_dir=target/debug ;; *) bin_dir=target/$profile ;; esac
if $build; then
  "$cargo" build --locked --profile "$profile" -p glimpse-collector -p glimpse-certs -p glimpse-docgen
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
package=glimpse-collector
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root

install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" "$root/usr/lib/sysusers.d" \
  "$root/etc/glimpse" "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions" \
  "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d" \
  "$root/usr/share/doc/$package"
for bin in glimpse-collector glimpse-certs; do
  install -m 0755 "$bin_dir/$bin" "$root/usr/bin/$bin"
  # A dev build's debug information is most of its size.
  if command -v strip >/dev/null; then strip --strip-debug "$root/usr/bin/$bin"; fi
done
install -m 0644 collector/packaging/systemd/glimpse-collector.service "$root/usr/lib/systemd/system/"
install -m 0644 collector/packaging/systemd/glimpse-collector.sysusers "$root/usr/lib/sysusers.d/glimpse-collector.conf"
install -m 0644 collector/packaging/collector.example.toml "$root/etc/glimpse/collector.toml.example"

docs=$stage/docs
"$bin_dir/glimpse-docgen" --out "$docs" glimpse-collector glimpse-certs
for page in "$docs"/man/man1/*.1; do
  gzip -9n <"$page" >"$root/usr/share/man/man1/$(basename "$page").gz"
done
chmod 0644 "$root"/usr/share/man/man1/*.gz
for bin in glimpse-collector glimpse-certs; do
  install -m 0644 "$docs/completions/bash/$bin.bash" "$root/usr/share/bash-completion/completions/$bin"
  install -m 0644 "$docs/completions/zsh/_$bin" "$root/usr/share/zsh/vendor-completions/_$bin"
  install -m 0644 "$docs/completions/fish/$bin.fish" "$root/usr/share/fish/vendor_completions.d/$bin.fish"
done
cat >"$root/usr/share/doc/$package/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: glimpse
License: Apache-2.0

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
chmod 0644 "$root/usr/share/doc/$package/copyright"

installed_kib=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: $package
Version: $version
Architecture: $arch
Maintainer: Glimpse operators <root@localhost>
Section: net
Priority: optional
Depends: libc6
Installed-Size: $installed_kib
Description: Glimpse network-device telemetry collector and PKI tool
 glimpse-collector receives telemetry from Glimpse agents on access points
 (mutual TLS) and switches and gateways (SSH), and stores each
 organisation's data encrypted with its own AES-256 key. glimpse-certs makes
 the root CA and the collector, device and admin certificates.
 .
 The service is not started on installation: create the files
 /etc/glimpse/collector.toml.example names, copy it to collector.toml, run
 glimpse-collector check, then systemctl enable --now glimpse-collector.
CONTROL
echo /etc/glimpse/collector.toml.example >"$root/DEBIAN/conffiles"

cat >"$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  # The service's user (glimpse-collector.sysusers); adduser where
  # systemd-sysusers is missing (a container without systemd).
  if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers glimpse-collector.conf
  elif ! getent passwd glimpse >/dev/null; then
    adduser --system --group --home /var/lib/glimpse --no-create-home glimpse
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # An upgrade restarts a running collector; a first install starts
    # nothing (it has no certificates yet).
    if systemctl is-active --quiet glimpse-collector; then systemctl restart glimpse-collector || true; fi
  fi
fi
POSTINST
cat >"$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl disable --now glimpse-collector >/dev/null 2>&1 || true
fi
PRERM
cat >"$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
# The data in /var/lib/glimpse, the keys in /etc/glimpse and the user stay,
# even on purge: they are the organisations' data and its keys. Remove them
# by hand (docs/OPERATIONS.md).
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
POSTRM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/${package}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip --build "$root" "$deb" >/dev/null
echo "$deb"
