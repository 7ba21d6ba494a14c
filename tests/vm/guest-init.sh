#!/bin/sh
# shellcheck shell=sh
# guest-init.sh - PID 1 of the throw-away kernel-VM guest (busybox ash).
#
# Packed as /init by run-vm.sh. Loads the Debian kernel's modules, brings up the one NIC
# (qemu slirp with restrict=on: the only reachable address is $VM_NBD_HOST:$VM_NBD_PORT,
# forwarded to the host's NBD server), mounts the optional 9p share, then runs the guest test
# /guest-test.sh and reports on the serial console:
#     VMTEST-RESULT: PASS            (only printed here, only when the test exited 0)
#     VMTEST-RESULT: FAIL <reason>
# and powers off. A watchdog dumps diagnostics and powers off if the test hangs.

export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin   # real tools before busybox applets
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The initramfs is already writable RAM. Never mount a tmpfs over /tmp: packed binaries keep
# their host paths (maybe under /tmp) and would vanish.
mkdir -p /dev/pts /tmp /mnt /run

# Written by run-vm.sh: VM_* settings plus the GUEST_ENV variables, all exported.
set -a
# shellcheck source=/dev/null
. /etc/vmtest.env
set +a
# shellcheck disable=SC1091  # packed from tests/vm/guest/lib.sh
. /lib/vmtest.sh

finish() {  # $1 = PASS | "FAIL reason"
  echo "VMTEST-RESULT: $1"
  sync
  poweroff -f
  # If poweroff failed, PID 1 exiting panics the kernel; panic=-1 + qemu -no-reboot ends qemu.
  sleep 5
  exit 1
}

diagnostics() {
  echo "---- guest diagnostics ----"
  grep -H . /sys/block/nbd*/pid 2>/dev/null
  # shellcheck disable=SC2009  # busybox has no pgrep -a; drop the [kernel threads]
  ps | grep -v " \[[^]]*\]\$"
  echo w > /proc/sysrq-trigger 2>/dev/null   # stacks of blocked (D state) tasks into dmesg
  dmesg | sed -n "/Run \/init/,\$p" | tail -n 60   # kernel messages since /init started
  echo "---- end of guest diagnostics ----"
}

echo 1 > /proc/sys/vm/overcommit_memory   # small guests: daemons with big up-front mappings
step "kernel $(uname -r), boot took $(cut -d' ' -f1 /proc/uptime)s," \
     "MemFree $(awk '/MemFree/{print $2 $3}' /proc/meminfo)"

for m in virtio_pci virtio_net nbd ext4 $VM_MODULES; do
  modprobe "$m" || { diagnostics; finish "FAIL modprobe $m"; }
done
step "modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"

if [ "$VM_SHARE" = 1 ]; then
  mkdir -p /share
  { modprobe 9pnet_virtio && modprobe 9p &&
    mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostshare /share; } ||
    finish "FAIL mounting the 9p share"
  step "host directory mounted read-only at /share"
fi

# No udev in the initramfs: the NIC keeps its kernel name eth0.
{ ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0; } ||
  { diagnostics; finish "FAIL network setup"; }

# Watchdog: report a hang from inside (stacks + dmesg) before the host's TIMEOUT kills qemu.
(
  sleep "$VM_GUEST_TIMEOUT"
  echo "VMTEST-WATCHDOG: guest test still running after ${VM_GUEST_TIMEOUT}s"
  diagnostics
  finish "FAIL guest test timed out after ${VM_GUEST_TIMEOUT}s"
) &

step "running guest test $VM_TEST_NAME"
sh /guest-test.sh
rc=$?
if [ "$rc" -eq 0 ]; then
  step "guest test passed, MemFree $(awk '/MemFree/{print $2 $3}' /proc/meminfo)"
  finish PASS
fi
diagnostics
finish "FAIL guest test $VM_TEST_NAME exited with status $rc"
