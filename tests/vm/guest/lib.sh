# shellcheck shell=sh
# lib.sh - helpers for guest test scripts, packed as /lib/vmtest.sh (busybox ash).
# Guest tests start with:  . /lib/vmtest.sh
#
# Environment from the host (run-vm.sh): VM_NBD_HOST VM_NBD_PORT (the host's NBD server as
# the guest reaches it), VM_SHARE (1 if /share is mounted), plus everything in GUEST_ENV.

# Progress line on the console, with guest uptime.
step() { echo "VMTEST-STEP [$(cut -d' ' -f1 /proc/uptime)s]: $*"; }
# Fail the guest test (guest-init prints the verdict and diagnostics).
die()  { echo "VMTEST-FAIL: $*"; exit 1; }
# Run a command; fail the test with its status if it fails.
run()  { "$@" || die "command failed (status $?): $*"; }

# nbd_connect DEV MODE [nbd-client options...]
#   MODE netlink (nbd-client's default) or ioctl (-L). Connects DEV to the host server and
#   waits until the kernel has set the capacity: with -L, nbd-client's parent can return before
#   its child has done NBD_SET_SIZE + NBD_DO_IT.
nbd_connect() {
  _dev=$1 _mode=$2; shift 2
  _flag=
  [ "$_mode" = ioctl ] && _flag=-L
  step "nbd-client ${_flag:+$_flag }${*:+$* }$VM_NBD_HOST $VM_NBD_PORT $_dev"
  # shellcheck disable=SC2086  # $_flag is empty or one word
  run nbd-client $_flag -b 4096 -t 30 "$@" "$VM_NBD_HOST" "$VM_NBD_PORT" "$_dev"
  _i=0
  while [ "$(blockdev --getsize64 "$_dev" 2>/dev/null || echo 0)" -eq 0 ]; do
    _i=$((_i + 1))
    [ $_i -le 200 ] || die "$_dev still has size 0 10s after nbd-client returned"
    usleep 50000
  done
  step "$_dev connected ($_mode): $(blockdev --getsize64 "$_dev") bytes," \
       "client pid $(cat "/sys/block/${_dev#/dev/}/pid" 2>/dev/null)"
}

# nbd_disconnect DEV: disconnect and wait until the kernel has released the device.
nbd_disconnect() {
  run nbd-client -d "$1"
  _i=0
  while [ -e "/sys/block/${1#/dev/}/pid" ]; do
    _i=$((_i + 1))
    [ $_i -le 200 ] || die "$1 still connected 10s after nbd-client -d"
    usleep 50000
  done
  step "$1 disconnected"
}

# sha256_of FILE: prints the hex digest only.
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
