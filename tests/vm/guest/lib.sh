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

# start_mirrord DIR NAME MIRRORD_ARGS...: mirrord MIRRORD_ARGS in the background, with
# --ready-file DIR/NAME.ready and --log-level info; its output appended to DIR/NAME.log, its
# pid in DIR/NAME.pid. Returns once the ready file exists (30 s at most).
start_mirrord() {
  _dir=$1 _name=$2; shift 2
  rm -f "$_dir/$_name.ready"
  mirrord "$@" --ready-file "$_dir/$_name.ready" --log-level info >>"$_dir/$_name.log" 2>&1 &
  echo $! >"$_dir/$_name.pid"
  _i=0
  while [ ! -s "$_dir/$_name.ready" ]; do
    kill -0 "$(cat "$_dir/$_name.pid")" 2>/dev/null || die "mirrord $_name exited at start"
    _i=$((_i + 1))
    [ $_i -le 600 ] || die "mirrord $_name wrote no ready file in 30 s"
    usleep 50000
  done
  step "mirrord $_name pid $(cat "$_dir/$_name.pid") ready: $(tr '\n' ' ' <"$_dir/$_name.ready")"
}

# stop_mirrord DIR NAME [STATUS]: SIGTERM the mirrord start_mirrord started; it must exit
# with STATUS (default 0).
stop_mirrord() {
  _pid=$(cat "$1/$2.pid")
  kill -TERM "$_pid" || die "mirrord $2 (pid $_pid) is not running"
  _rc=0
  wait "$_pid" || _rc=$?
  [ "$_rc" = "${3:-0}" ] || die "mirrord $2 exited with status $_rc after SIGTERM, expected ${3:-0}"
  step "mirrord $2 exited with status $_rc"
}

# nbd_io DESC URI QEMU_IO_ARGS...: qemu-io on the raw NBD export URI (QEMU_IO_ARGS: options
# and -c commands); every command must succeed and every pattern read back must match
# (qemu-io says "... failed" for either). Its output in $IO_OUT.
IO_OUT=/tmp/qemu-io.out
nbd_io() {
  _desc=$1 _uri=$2; shift 2
  _rc=0
  qemu-io -f raw "$_uri" "$@" >"$IO_OUT" 2>&1 || _rc=$?
  if [ "$_rc" != 0 ] || grep -q "failed" "$IO_OUT"; then
    cat "$IO_OUT"
    die "$_desc: qemu-io exited $_rc"
  fi
  step "ok: $_desc"
}
