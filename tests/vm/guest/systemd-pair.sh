#!/bin/bash
# systemd-pair.sh - guest test vm.systemd_pair: mirrord@.service under a real systemd (PID 1).
#
# Runs in tests/vm/systemd-init.sh's guest: the host's Debian userland, booted with its own
# systemd, `cmake --install` tree already copied in (VM_ROOT_OVERLAY). What a user checks:
#   1. systemd loads mirrord@.service from where `cmake --install` put it;
#   2. a pair on this one host, mirrord@db-alpha + mirrord@db-beta (copies of the same volume
#      file; /etc/mirrord/INSTANCE.env picks the node; alpha's backing store is a file in
#      /var/lib/mirrord, beta's a block device, /dev/loopN, with the unit's sandboxing
#      unchanged): `systemctl start` returns once both
#      sent READY=1, both active, StatusText set, the pair synchronizes, and the status line
#      follows the volume's state ("synchronized, ...");
#   3. data written through the primary's NBD socket is on both copies;
#   4. SIGSTOP the primary: it stops petting the watchdog; systemd kills it (WatchdogSec=),
#      restarts it (Restart=on-failure, NRestarts=1), the pair resynchronizes, the data is
#      still there, and the secondary was never restarted;
#   5. the shipped unit attaches alpha's /dev/nbd0 itself (`device =`, no drop-in: the unit
#      keeps CAP_SYS_ADMIN); ext4 on it, mounted, a dd conv=fsync write loop; `systemctl
#      restart` of the primary while mounted: the daemon logs that it left the device
#      attached, the new one re-attaches it (RECONFIGURE), the writer sees no error, the files
#      are intact after a remount, the pair resynchronizes;
#   6. unmounted, `systemctl stop`: both exit with status 0, /dev/nbd0 is detached, their
#      metadata records a clean shutdown, and the two copies are identical.
# Environment (GUEST_ENV): VOL_SIZE (default 16M).
set -uo pipefail
# shellcheck disable=SC1091  # packed by systemd-init.sh
. /vmtest/lib.sh

VOL_SIZE=${VOL_SIZE:-16M}
A=mirrord@db-alpha.service
B=mirrord@db-beta.service
STATE=/var/lib/mirrord   # the unit's StateDirectory: writable under ProtectSystem=strict
RUN=/run/mirrord         # its RuntimeDirectory

on_exit() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    systemctl --no-pager status "$A" "$B"
    journalctl --no-pager -b -n 60 -u "$A" -u "$B" -o short-monotonic
  fi
  exit "$rc"
}
trap on_exit EXIT

# props UNIT: the unit's properties into P[...] (one systemctl call: each costs ~1 s under TCG)
declare -A P
props() {
  local k v
  P=()
  while IFS='=' read -r k v; do P[$k]=$v; done < <(systemctl show \
    -p ActiveState,SubState,Result,StatusText,MainPID,NRestarts,WatchdogUSec,FragmentPath "$1")
}
ctl() { local n=$1; shift; mirrorctl --socket "$RUN/db-$n.ctl" "$@"; }
# status NODE: "node role state" from `mirrorctl status --json` (one call: ~1 s under TCG)
status() { ctl "$1" status --json 2>/dev/null | jq -r '"\(.node) \(.role) \(.state)"'; }

# until_true SECONDS WHAT CMD...: poll CMD every 0.5 s (each systemctl or mirrorctl call is
# itself a fraction of a second of CPU under TCG); fail after SECONDS.
until_true() {
  local secs=$1 limit=$(($1 * 2)) what=$2 i=0
  shift 2
  until "$@"; do
    i=$((i + 1))
    [ "$i" -le "$limit" ] || die "$what: not true after $secs s"
    sleep 0.5
  done
}
state_is() {  # state_is NODE STATE: also leaves the whole line in $ST
  ST=$(status "$1")
  [ "${ST##* }" = "$2" ]
}
wait_synchronized() {
  until_true "${1:-60}" "pair synchronized" state_is alpha synchronized
  local a=$ST
  until_true 10 "beta synchronized" state_is beta synchronized
  [ "$a" = "alpha primary synchronized" ] && [ "$ST" = "beta secondary synchronized" ] ||
    die "unexpected node/role/state: '$a' and '$ST' (the .env files pick the nodes)"
  step "pair synchronized: $a; $ST"
}
alpha_io() {  # alpha_io QEMU_IO_COMMAND: nbd_io (lib.sh) through the primary's NBD socket
  nbd_io "NBD $1" "nbd+unix:///db?socket=$RUN/db-alpha.nbd" -c "$1"
}
images_equal() {  # through the loop device: its page cache is what beta wrote
  cmp "$STATE/alpha.img" "$B_DEV" || die "$1: the two copies differ"
  step "$1: alpha.img and $B_DEV identical"
}
# meta_clean NODE: the newest superblock (higher sequence) has kFlagCleanShutdown (0x1);
# docs/bitmap-format.md: magic at 0, sequence (u64 BE) at 16, flags (u32 BE) at 28.
meta_clean() {
  local f=$STATE/$1.meta hex slot off best_seq='' best_flags='' seq flags
  hex=$(od -An -tx1 -v -N 8192 "$f" | tr -d ' \n')   # both slots, 2 hex digits a byte
  for slot in 0 1; do
    off=$((slot * 8192))
    [ "${hex:off:16}" = 4d495252424d5031 ] || continue   # "MIRRBMP1"
    seq=${hex:off+32:16} flags=${hex:off+56:8}
    if [ -z "$best_seq" ] || [[ $seq > $best_seq ]]; then best_seq=$seq best_flags=$flags; fi
  done
  [ -n "$best_seq" ] || die "$f: no valid superblock"
  (( 0x$best_flags & 1 )) || die "$1: metadata flags 0x$best_flags lack the clean-shutdown bit"
  step "$1: metadata records a clean shutdown (flags 0x$best_flags, sequence 0x$best_seq)"
}

# ---- 1. the installed unit ----------------------------------------------------------------
for f in /usr/local/sbin/mirrord /usr/local/sbin/mirrorctl; do
  [ -x "$f" ] || die "$f not installed"
done
props "$A"
[ "${P[FragmentPath]}" = /usr/local/lib/systemd/system/mirrord@.service ] ||
  die "systemd loads $A from '${P[FragmentPath]}', not the installed unit"
step "systemd loads $A from ${P[FragmentPath]}"

# ---- 2. a pair on this host ---------------------------------------------------------------
mkdir -p /etc/mirrord "$STATE"
head -c 32 /dev/urandom | base64 >/etc/mirrord/db.secret
chmod 600 /etc/mirrord/db.secret
truncate -s "$VOL_SIZE" "$STATE/alpha.img" "$STATE/beta.img"
# Not all zeros: the initial full sync has something to copy.
dd if=/dev/urandom of="$STATE/alpha.img" bs=1M count=2 seek=3 conv=notrunc status=none
modprobe loop && B_DEV=$(losetup --find --show "$STATE/beta.img") || die "losetup failed"
node() {  # node NAME PORT BACKING [EXTRA_KEYS]
  cat <<EOF

[[node]]
name = "$1"
address = "127.0.0.1:$2"
backing = "$3"
metadata = "$STATE/$1.meta"
nbd-listen = ["unix:$RUN/db-$1.nbd"]
control = "$RUN/db-$1.ctl"
${4:-}
EOF
}
{
  cat <<EOF
[volume]
name = "db"
size = "$VOL_SIZE"
secret-file = "/etc/mirrord/db.secret"
primary = "alpha"
ack-timeout = "2s"
EOF
  # The kernel retries a request unanswered for 8 s (one the stopped daemon had not read)
  # and waits up to 60 s for the restarted daemon's sockets.
  node alpha 7788 "$STATE/alpha.img" 'device = "/dev/nbd0"
device-timeout = "8s"
dead-connection-timeout = "60s"'
  node beta 7789 "$B_DEV"
} >/etc/mirrord/db-alpha.toml
cp /etc/mirrord/db-alpha.toml /etc/mirrord/db-beta.toml
printf 'MIRRORD_ARGS=--node alpha\nMIRRORCTL_ARGS=--node alpha\n' >/etc/mirrord/db-alpha.env
printf 'MIRRORD_ARGS=--node beta\nMIRRORCTL_ARGS=--node beta\n' >/etc/mirrord/db-beta.env

t0=$(date +%s.%N)
systemctl start "$B" "$A" || die "systemctl start failed (status $?)"
step "systemctl start returned after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
for u in "$A" "$B"; do
  props "$u"
  [ "${P[ActiveState]}/${P[SubState]}" = active/running ] ||
    die "$u is ${P[ActiveState]}/${P[SubState]} after start"
  [ -n "${P[StatusText]}" ] || die "$u: no StatusText (sd_notify STATUS=)"
  step "$u active/running, MainPID ${P[MainPID]}, StatusText '${P[StatusText]}'"
done
[ -S "$RUN/db-alpha.ctl" ] && [ -S "$RUN/db-beta.nbd" ] || die "no sockets in $RUN"
# beta's disk is a block device (it may hold anything) and neither node has a history: the
# first sync waits for the operator's word on the node whose copy is current (DRBD's first
# `primary --force`).
beta_refused() { journalctl -b -u "$B" --no-pager -o cat | grep -q "neither node records its copy's history"; }
until_true 30 "beta refuses a first sync over its disk" beta_refused
out=$(ctl alpha promote --force) || die "promote --force on alpha: $out"
step "mirrorctl promote --force on alpha: $out"
wait_synchronized 60
# The watchdog ping carries the volume's state (every WatchdogSec/2).
status_synced() { props "$A"; case "${P[StatusText]}" in synchronized*) return 0;; esac; return 1; }
until_true 20 "$A StatusText says synchronized" status_synced
step "$A StatusText '${P[StatusText]}'"
images_equal "after the initial sync"

# ---- 3. data through the primary ------------------------------------------------------------
alpha_io "write -P 0xa5 1M 4M"

# ---- 4. a hung daemon: the watchdog ---------------------------------------------------------
props "$B"
pid_b=${P[MainPID]}
props "$A"
pid=${P[MainPID]}
kill -STOP "$pid" || die "SIGSTOP $pid"
t0=$(date +%s.%N)
step "SIGSTOP $A (pid $pid), WatchdogUSec=${P[WatchdogUSec]}"
restarted() {
  props "$A"
  [ "${P[NRestarts]}" = 1 ] && [ "${P[ActiveState]}" = active ] &&
    [ "${P[MainPID]}" != "$pid" ] && [ "${P[MainPID]}" != 0 ]
}
# The daemon pings every WatchdogSec/2, so systemd cannot act before WatchdogSec/2 from now:
# do not burn the guest's CPU polling until then.
wd=${P[WatchdogUSec]%s}
[[ $wd =~ ^[0-9]+$ ]] && [ "$wd" -ge 2 ] || die "$A: unexpected WatchdogUSec '${P[WatchdogUSec]}'"
sleep $((wd / 2 - 1))
until_true 90 "$A restarted by the watchdog" restarted
step "$A restarted after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s:" \
     "MainPID ${P[MainPID]}, NRestarts ${P[NRestarts]}"
! kill -0 "$pid" 2>/dev/null || die "the stopped daemon (pid $pid) is still there"
wd_line=$(journalctl -b -u "$A" --no-pager -o cat | grep -m1 "Watchdog timeout") ||
  die "the journal does not say the watchdog fired"
step "journal: $wd_line"
props "$B"
[ "${P[MainPID]}" = "$pid_b" ] && [ "${P[NRestarts]}" = 0 ] || die "$B was restarted too"
wait_synchronized 60
alpha_io "read -P 0xa5 1M 4M"
alpha_io "write -P 0x5a 8M 2M"

# ---- 5. the attached /dev/nbd0: restart while mounted ------------------------------------
dev_state() { ctl alpha status --json 2>/dev/null | jq -r '"\(.device.path) \(.device.state)"'; }
[ "$(dev_state)" = "/dev/nbd0 attached" ] || die "alpha's device: '$(dev_state)', not attached"
[ "$(cat /sys/block/nbd0/backend)" = mirrord:db:alpha ] ||
  die "/dev/nbd0 backend '$(cat /sys/block/nbd0/backend)'"
step "the shipped unit attached /dev/nbd0 (backend $(cat /sys/block/nbd0/backend))"
mkfs.ext4 -q -F /dev/nbd0 || die "mkfs.ext4 /dev/nbd0"
mkdir -p /mnt/db && mount -t ext4 -o noinit_itable /dev/nbd0 /mnt/db || die "mount /dev/nbd0"
FILES=8
for i in $(seq $FILES); do head -c 512K /dev/urandom >"/tmp/src$i"; done
(
  for i in $(seq $FILES); do
    dd if="/tmp/src$i" of="/mnt/db/f$i" bs=128k conv=fsync 2>>/tmp/load.err ||
      { echo "write $i failed" >>/tmp/load.err; exit 1; }
    echo "$i" >/tmp/load.progress
  done
) &
load=$!
progress_at_least() { [ "$(cat /tmp/load.progress 2>/dev/null || echo 0)" -ge "$1" ]; }
until_true 60 "the write loop reaches file 2" progress_at_least 2
props "$A"
pid=${P[MainPID]}
since=$(date '+%Y-%m-%d %H:%M:%S')
systemctl restart "$A" || die "systemctl restart $A failed (status $?)"
props "$A"
[ "${P[ActiveState]}" = active ] && [ "${P[MainPID]}" != "$pid" ] ||
  die "$A after restart: ${P[ActiveState]}, MainPID ${P[MainPID]} (was $pid)"
journal=$(journalctl -b -u "$A" --since "$since" --no-pager -o cat)
grep -q "/dev/nbd0 is in use .*leaving it attached" <<<"$journal" ||
  die "the stopped daemon did not log that it left the mounted /dev/nbd0 attached"
! grep -q "detached /dev/nbd0" <<<"$journal" || die "systemctl restart detached the mounted /dev/nbd0"
grep -q "re-attached export 'db' to /dev/nbd0 (RECONFIGURE" <<<"$journal" ||
  die "the restarted daemon did not re-attach /dev/nbd0"
step "systemctl restart $A while mounted: MainPID $pid -> ${P[MainPID]}, /dev/nbd0 left" \
     "attached and re-attached"
wait "$load" || die "the writer saw an error across systemctl restart: $(cat /tmp/load.err)"
step "all $FILES files written with conv=fsync across the restart, no error"
umount /mnt/db || die "umount"
mount -t ext4 -o ro /dev/nbd0 /mnt/db || die "remount"
for i in $(seq $FILES); do cmp "/tmp/src$i" "/mnt/db/f$i" || die "f$i differs after the restart"; done
umount /mnt/db || die "umount"
if dmesg | grep -iE 'I/O error|EXT4-fs error|Buffer I/O'; then die "the kernel logged I/O errors (above)"; fi
step "remounted: all $FILES files intact, no I/O error in dmesg"
wait_synchronized 60

# ---- 5b. the verify timer's service, on both hosts' instances ----------------------------
props mirrord-verify@db-alpha.timer
[ "${P[FragmentPath]}" = /usr/local/lib/systemd/system/mirrord-verify@.timer ] ||
  die "the verify timer is not installed: '${P[FragmentPath]}'"
systemctl start mirrord-verify@db-alpha.service mirrord-verify@db-beta.service ||
  die "the verify service failed: $(journalctl -q -o cat -u 'mirrord-verify@*' | tail -n 5)"
journal=$(journalctl -q -o cat -u mirrord-verify@db-beta.service)
grep -q "not the primary: nothing to verify here" <<<"$journal" ||
  die "mirrord-verify@db-beta did not skip the secondary: $journal"
[ "$(ctl alpha status --json | jq -r .verify.result)" = completed ] ||
  die "alpha's last verify: $(ctl alpha status --json | jq -c .verify)"
step "mirrord-verify@: a completed verify on the primary, nothing on the secondary"

# ---- 6. a clean stop ------------------------------------------------------------------------
# systemd drops an inactive unit's exit status as soon as it unloads it, so read it from the
# journal: at debug level systemd logs every main process's exit code and status.
systemctl log-level debug
since=$(date '+%Y-%m-%d %H:%M:%S')
systemctl stop "$A" "$B" || die "systemctl stop failed (status $?)"
systemctl log-level info
for u in "$A" "$B"; do
  props "$u"
  [ "${P[ActiveState]}" = inactive ] || die "$u is ${P[ActiveState]} after stop (result ${P[Result]})"
  exit_line=$(journalctl -b -u "$u" --since "$since" --no-pager -o cat | grep -m1 "Main process exited")
  case "$exit_line" in
    "$u: Main process exited, code=exited, status=0/SUCCESS"*) ;;
    *) die "$u after systemctl stop: '${exit_line:-no exit logged}'" ;;
  esac
  step "$u inactive: $exit_line"
done
[ "$(cat /sys/block/nbd0/size)" = 0 ] && [ ! -e /sys/block/nbd0/pid ] ||
  die "/dev/nbd0 still attached after systemctl stop (size $(cat /sys/block/nbd0/size))"
step "the unmounted /dev/nbd0 was detached by systemctl stop"
meta_clean alpha
meta_clean beta
images_equal "after systemctl stop"
step "systemd_pair: OK"
