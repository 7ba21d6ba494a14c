#!/bin/sh
# shellcheck shell=sh
# systemd-init.sh - /init of the systemd guest (run-vm.sh GUEST_INIT=, see systemd-vm.sh).
#
# Boots the HOST's own Debian userland under a real systemd as PID 1, in a throw-away VM:
#   /        = overlayfs: the host's root, read-only over virtio-9p (SHARE_DIR=/), under a
#              tmpfs upper layer (everything written in the guest stays in guest RAM)
#   PID 1    = the host's /lib/systemd/systemd, started on vmtest.target only:
#              vmtest.service runs /vmtest/run.sh, which runs the guest test (GUEST_TEST),
#              prints "VMTEST-RESULT: PASS|FAIL ..." on the console and powers off.
# Units that only slow a boot down or reach for the outside world (timers, getty, network
# configuration, time sync, udev: nothing here waits for a device unit) are masked in the
# overlay; the host's own files are not touched.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

set -a
# shellcheck source=/dev/null
. /etc/vmtest.env
set +a
# shellcheck disable=SC1091  # packed from tests/vm/guest/lib.sh
. /lib/vmtest.sh

fail() {
  echo "VMTEST-RESULT: FAIL $*"
  dmesg | tail -n 30
  poweroff -f
  sleep 5
  exit 1
}

step "kernel $(uname -r), initramfs reached after $(cut -d' ' -f1 /proc/uptime)s"
for m in virtio_pci 9pnet_virtio 9p overlay; do
  modprobe "$m" || fail "modprobe $m"
done

mkdir -p /host /rw /newroot
# cache=loose: the host's root does not change under a test, and TCG makes every
# uncached 9p round trip expensive.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostshare /host ||
  fail "mounting the host's root over 9p (is SHARE_DIR=/ ?)"
[ -x /host/lib/systemd/systemd ] || fail "the host has no /lib/systemd/systemd"
mount -t tmpfs -o mode=0755 tmpfs /rw || fail "tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot ||
  fail "overlayfs over the 9p root"

# The harness: the guest test, its environment and helpers, and the unit that runs them.
R=/newroot
mkdir -p "$R/vmtest"
cp /guest-test.sh /etc/vmtest.env "$R/vmtest/"
cp /lib/vmtest.sh "$R/vmtest/lib.sh"
cat >"$R/vmtest/run.sh" <<'EOF'
#!/bin/bash
# Run by vmtest.service: the guest test under a time limit, then the verdict.
set -a; . /vmtest/vmtest.env; set +a
. /vmtest/lib.sh
step "$(systemctl --version | sed -n 1p | cut -d' ' -f1-2) started the guest test"
rc=0
timeout -k 5 "$VM_GUEST_TIMEOUT" bash /vmtest/guest-test.sh || rc=$?
if [ "$rc" = 0 ]; then
  step "guest test passed, MemFree $(awk '/MemFree/{print $2 $3}' /proc/meminfo)"
  echo "VMTEST-RESULT: PASS"
else
  [ "$rc" != 124 ] || echo "VMTEST-WATCHDOG: guest test still running after ${VM_GUEST_TIMEOUT}s"
  echo "---- guest diagnostics ----"
  systemctl --no-pager list-units --failed
  journalctl --no-pager -b -n 80 -o short-monotonic
  echo "---- end of guest diagnostics ----"
  echo "VMTEST-RESULT: FAIL guest test $VM_TEST_NAME exited with status $rc"
fi
EOF
chmod 755 "$R/vmtest/run.sh"

U=$R/etc/systemd/system
mkdir -p "$U"
cat >"$U/vmtest.target" <<'EOF'
[Unit]
Description=mirrord VM test
Requires=vmtest.service
After=vmtest.service
EOF
cat >"$U/vmtest.service" <<'EOF'
[Unit]
Description=mirrord VM test: /vmtest/run.sh
SuccessAction=poweroff-force
FailureAction=poweroff-force
[Service]
Type=oneshot
ExecStart=/vmtest/run.sh
StandardInput=null
StandardOutput=tty
StandardError=tty
TTYPath=/dev/console
EOF
for u in timers.target getty.target getty@tty1.service serial-getty@ttyS0.service \
         systemd-timesyncd.service systemd-pstore.service networking.service \
         ifupdown-wait-online.service systemd-networkd-wait-online.service \
         systemd-networkd.service NetworkManager.service NetworkManager-wait-online.service \
         apt-daily.service apt-daily-upgrade.service e2scrub_reap.service \
         systemd-random-seed.service systemd-update-utmp.service \
         systemd-hwdb-update.service ldconfig.service systemd-firstboot.service \
         systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service \
         systemd-udevd-control.socket systemd-udevd-kernel.socket \
         systemd-sysusers.service systemd-modules-load.service systemd-sysctl.service \
         systemd-binfmt.service proc-sys-fs-binfmt_misc.automount kmod-static-nodes.service \
         systemd-journal-flush.service systemd-tmpfiles-setup-dev.service \
         sys-fs-fuse-connections.mount sys-kernel-config.mount sys-kernel-debug.mount \
         sys-kernel-tracing.mount dev-hugepages.mount dev-mqueue.mount \
         modprobe@dm_mod.service modprobe@fuse.service modprobe@loop.service \
         modprobe@configfs.service modprobe@drm.service modprobe@efi_pstore.service \
         apparmor.service auditd.service keyboard-setup.service console-setup.service \
         lvm2-monitor.service lvm2-lvmpolld.socket blk-availability.service \
         plymouth-start.service plymouth-read-write.service systemd-rfkill.service; do
  ln -sf /dev/null "$U/$u"
done
# No generators: each is a process start, slow under TCG, and none has work here (no fstab,
# gettys, SysV scripts or GPT auto-mounts wanted).
for d in system-generators system-environment-generators; do
  mkdir -p "$R/etc/systemd/$d"
  for g in "$R/usr/lib/systemd/$d"/*; do
    [ -e "$g" ] && ln -sf /dev/null "$R/etc/systemd/$d/${g##*/}"
  done
done
: >"$R/etc/fstab"          # nothing to mount: / is already the overlay
# The journal in RAM only: nothing to flush to /var/log at boot.
mkdir -p "$R/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' >"$R/etc/systemd/journald.conf.d/vmtest.conf"
# Empty /tmp and /var/tmp of our own: systemd-tmpfiles would otherwise empty the host's
# through the overlay, one 9p lookup and one whiteout per file.
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp" && mount -t tmpfs -o mode=1777 tmpfs "$R/var/tmp" ||
  fail "tmpfs on /tmp"
# Files to install over the root before systemd starts (e.g. a `cmake --install` DESTDIR
# tree): VM_ROOT_OVERLAY names a directory of the host.
if [ -n "${VM_ROOT_OVERLAY:-}" ]; then
  [ -d "/host$VM_ROOT_OVERLAY" ] || fail "VM_ROOT_OVERLAY $VM_ROOT_OVERLAY is not a directory"
  cp -a "/host$VM_ROOT_OVERLAY/." "$R/" || fail "copying VM_ROOT_OVERLAY into the root"
  step "installed $(find "/host$VM_ROOT_OVERLAY" ! -type d | wc -l) files from $VM_ROOT_OVERLAY"
fi
echo vmtest >"$R/etc/hostname"
# The host may be a container: systemd must see this VM, not the host's marker file.
rm -f "$R/.dockerenv"

step "switching to the host's root over 9p + overlayfs; exec systemd"
mount --move /dev "$R/dev"
mount --move /proc "$R/proc"
mount --move /sys "$R/sys"
# VM_SYSTEMD_ARGS replaces the default arguments, for debugging e.g.
#   GUEST_ENV="VM_SYSTEMD_ARGS=--log-target=kmsg" APPEND_EXTRA="systemd.log_level=debug"
# shellcheck disable=SC2086  # empty or one argument, not quoted so that empty is none
exec switch_root "$R" /lib/systemd/systemd --unit=vmtest.target ${VM_SYSTEMD_ARGS:---log-level=notice}
