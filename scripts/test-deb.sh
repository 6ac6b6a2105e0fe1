#!/usr/bin/env bash
# Installs the collector's Debian package on this machine and checks it as
# an operator would use it (CI runs this after scripts/package-deb.sh):
# dpkg -i, the service user, the man pages and completions in place,
# `glimpse-collector check` refusing the bare example (its files do not
# exist yet, exit 78) and accepting it, as the service's user, once the
# PKI and the master key are made the way docs/OPERATIONS.md says. Then
# purges the package and removes what it made, leaving the machine as it was.
#
# Usage: scripts/test-deb.sh PACKAGE.deb   (as root; refuses to run where a
# glimpse-collector package or /etc/glimpse is already installed)
set -euo pipefail

deb=${1:?usage: scripts/test-deb.sh PACKAGE.deb}
[ "$(id -u)" = 0 ] || { echo "test-deb.sh: needs root (dpkg -i)" >&2; exit 77; }
# What an earlier run left when it was killed before its clean-up (it marks
# /etc/glimpse as its own): cleaned up, so that CI does not stay failed.
marker=/etc/glimpse/.left-by-test-deb
if [ -e "$marker" ]; then
  echo "test-deb.sh: removing what an interrupted earlier run left"
  dpkg --purge glimpse-collector >/dev/null 2>&1 || true
  rm -rf /etc/glimpse /var/lib/glimpse
fi
if dpkg-query -W -f='${Status}' glimpse-collector 2>/dev/null | grep -q "ok installed"; then
  echo "test-deb.sh: glimpse-collector is installed here; not replacing it" >&2
  exit 75
fi
if [ -e /etc/glimpse ] || [ -e /var/lib/glimpse ]; then
  echo "test-deb.sh: /etc/glimpse or /var/lib/glimpse exists; not touching it" >&2
  exit 75
fi
had_user=false
getent passwd glimpse >/dev/null && had_user=true

cleanup() {
  dpkg --purge glimpse-collector >/dev/null 2>&1 || true
  rm -rf /etc/glimpse /var/lib/glimpse
  if ! $had_user && getent passwd glimpse >/dev/null; then
    userdel glimpse 2>/dev/null || true
    getent group glimpse >/dev/null && groupdel glimpse 2>/dev/null || true
  fi
}
trap cleanup EXIT

fail() { echo "test-deb.sh: FAIL: $*" >&2; exit 1; }

install -d -m 0755 /etc/glimpse
touch "$marker"
dpkg -i "$deb" >/dev/null
getent passwd glimpse >/dev/null || fail "the package did not create the glimpse user"
glimpse-collector --version | grep -q '^commit:' || fail "glimpse-collector --version has no build information"
glimpse-certs --version >/dev/null
for f in /usr/lib/systemd/system/glimpse-collector.service /usr/lib/sysusers.d/glimpse-collector.conf \
  /usr/share/man/man1/glimpse-collector.1.gz /usr/share/man/man1/glimpse-collector-check.1.gz \
  /usr/share/man/man1/glimpse-certs.1.gz /usr/share/bash-completion/completions/glimpse-collector \
  /usr/share/zsh/vendor-completions/_glimpse-collector /usr/share/fish/vendor_completions.d/glimpse-certs.fish; do
  [ -s "$f" ] || fail "$f is missing"
done
zcat /usr/share/man/man1/glimpse-collector-check.1.gz | grep -q '^\.TH' || fail "the check man page is no roff"

# The example as installed names files that do not exist yet: every one
# of them is reported, with exit 78.
cp /etc/glimpse/collector.toml.example /etc/glimpse/collector.toml
set +e
out=$(glimpse-collector check --config /etc/glimpse/collector.toml 2>&1)
rc=$?
set -e
[ "$rc" = 78 ] || fail "check of the bare example exited $rc, not 78: $out"
for needle in ca.pem collector.pem collector.key master.key; do
  grep -q "$needle" <<<"$out" || fail "check did not name $needle: $out"
done

# The files, made as docs/OPERATIONS.md says ("Installing the collector").
glimpse-certs init --dir /etc/glimpse/pki --san collector.example.net >/dev/null
glimpse-collector master-key --out /etc/glimpse/master.key >/dev/null
# The PKI directory keeps glimpse-certs' modes (0700, keys 0600), owned by
# the service's user: its registrations hold the devices' shared keys.
chown -R glimpse:glimpse /etc/glimpse/pki
chown glimpse:glimpse /etc/glimpse/master.key
runuser -u glimpse -- glimpse-collector check --config /etc/glimpse/collector.toml ||
  fail "check refused the example with its files in place"

if command -v systemd-analyze >/dev/null; then
  systemd-analyze security --offline=true /usr/lib/systemd/system/glimpse-collector.service 2>/dev/null |
    grep 'Overall exposure' || true
fi
echo "test-deb.sh: ok: $(basename "$deb") installs, and check accepts its example"
