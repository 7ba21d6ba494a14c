#!/usr/bin/env bash
# install-deps.sh - install every Debian 12 package that mirrord needs to build, test and demo.
#
# One pinned list, grouped by purpose. Idempotent: when every package is already installed it
# does not touch apt at all (and then needs no root). Installing needs root.
set -euo pipefail

PACKAGES=(
  # --- toolchain -------------------------------------------------------------------------------
  build-essential cmake ninja-build pkg-config
  clang libclang-rt-14-dev          # Fuzz build (libFuzzer) and clang tooling
  # --- libraries mirrord links against ---------------------------------------------------------
  liburing-dev                      # io_uring data path
  libnl-genl-3-dev libnl-3-dev      # nbd generic-netlink attach
  nlohmann-json3-dev                # control protocol
  libcli11-dev                      # command line
  libtomlplusplus-dev               # config files
  libsystemd-dev                    # sd_notify
  libssl-dev                        # checksums / TLS
  libnbd-dev                        # integration tests drive mirrord through libnbd
  googletest libgtest-dev libgmock-dev  # unit tests
  # --- real NBD clients and servers for integration tests and the demo ------------------------
  libnbd-bin                        # nbdinfo, nbdcopy, nbdsh
  python3-libnbd python3
  nbdkit                            # reference server
  nbd-server nbd-client             # reference server; kernel client tool (packed into the VM)
  qemu-utils                        # qemu-io, qemu-img, qemu-nbd
  fio                               # benchmarks
  # --- kernel-VM tests (tests/vm): Debian's kernel under qemu, busybox initramfs --------------
  qemu-system-x86 linux-image-amd64 busybox-static cpio kmod socat
  e2fsprogs                         # mke2fs/e2fsck in the guest, e2fsck/debugfs on the host
  dmsetup xfsprogs                  # vm.sync_error: device-mapper and XFS in the guest
  sqlite3                           # vm.mirror_split_sqlite: a database in the guest
  # --- base tools the scripts use ---------------------------------------------------------------
  iproute2 util-linux procps
  jq                                # tests read `mirrorctl status --json`
  systemd                           # systemd-analyze verify; booted in the VM (vm.systemd_pair)
)

log() { echo "[install-deps] $*"; }

if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
  echo "install-deps.sh: needs a Debian 12 (bookworm) system with apt-get" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  log "all ${#PACKAGES[@]} packages already installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: missing packages: ${missing[*]}" >&2
  echo "install-deps.sh: installing them needs root (apt-get); run: sudo $0" >&2
  exit 1
fi
log "installing ${#missing[@]} missing package(s): ${missing[*]}"

export DEBIAN_FRONTEND=noninteractive
apt_update() { log "apt-get update"; apt-get update -qq; }
# Refresh the package lists when they are absent (fresh image) or older than a day.
lists=/var/lib/apt/lists
if [ -z "$(find "$lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 -print -quit 2>/dev/null)" ]; then
  apt_update
fi
install() {
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/install-deps.$$.log 2>&1
}
if ! install; then
  # stale lists point at versions the mirror no longer has: refresh once and retry
  log "install failed; refreshing package lists and retrying"
  apt_update
  if ! install; then
    tail -n 40 /tmp/install-deps.$$.log >&2
    rm -f /tmp/install-deps.$$.log
    echo "install-deps.sh: apt-get install failed" >&2
    exit 1
  fi
fi
rm -f /tmp/install-deps.$$.log
log "done"
