#!/usr/bin/env bash
# Runs systemd-analyze verify on our units, with ExecStart pointing at the
# built binaries (verify checks that the executable exists).
set -euo pipefail
src=$1 mirrord=$2 mirrorctl=$3
command -v systemd-analyze >/dev/null || exit 77
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for u in mirrord@.service mirrord-verify@.service mirrord-verify@.timer; do
  sed -e "s|/usr/local/sbin/mirrord |$mirrord |" -e "s|/usr/local/sbin/mirrorctl |$mirrorctl |" \
    "$src/$u" >"$tmp/$u"
done
mkdir -p "$tmp/etc"
out=$(cd "$tmp" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$tmp/mirrord@db.service" \
  "$tmp/mirrord-verify@db.service" "$tmp/mirrord-verify@db.timer" 2>&1 || true)
# Ignore only what a container without systemd as PID 1 cannot provide.
bad=$(echo "$out" | grep -vE 'modprobe@nbd.service|network-online.target|multi-user.target|timers.target|^$|Failed to load|Unit .* not found|Cannot add dependency' || true)
if [ -n "$bad" ]; then
  echo "systemd-analyze verify reported:"; echo "$out"; exit 1
fi
echo "systemd-analyze verify: mirrord@.service, mirrord-verify@.service, mirrord-verify@.timer OK"
echo "${out:-(no output)}"
