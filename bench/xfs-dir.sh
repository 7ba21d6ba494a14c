#!/usr/bin/env bash
# Mount an XFS filesystem at DIR for the benchmarks' backing files (BENCH_DIR=DIR), so a
# run can compare the same servers on XFS as well as on the root ext4 filesystem.
#
#   bench/xfs-dir.sh DIR [SIZE]    # SIZE of the image, default 8G; idempotent
#   bench/xfs-dir.sh --remove DIR  # unmount, detach, delete the image
#
# Why XFS: it completes buffered writes without blocking (io_uring issues them inline),
# while every buffered write to ext4 is handed to an io-wq worker thread, a context
# switch each way (docs/benchmarks.md, "Backing filesystem"). There is no spare disk, so
# the filesystem lives in an image file on the same disk (DIR.img), attached with
# `losetup --direct-io=on`: the loop device then reads and writes the image with O_DIRECT
# and passes flushes down, so FUA and FLUSH still reach the disk instead of the host
# filesystem's page cache. Every server in a run sees the same layers.
set -euo pipefail

usage() { echo "usage: $0 DIR [SIZE] | $0 --remove DIR" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
command -v mkfs.xfs >/dev/null || { echo "mkfs.xfs missing: apt-get install -y xfsprogs" >&2; exit 2; }

loop_of() { losetup -j "$1" -O NAME --noheadings | head -n1; }

if [[ $1 == --remove ]]; then
  [[ $# -eq 2 ]] || usage
  dir=$(realpath -m "$2")
  if mountpoint -q "$dir"; then umount "$dir"; fi
  dev=$(loop_of "$dir.img" 2>/dev/null || true)
  [[ -n $dev ]] && losetup -d "$dev"
  rm -f "$dir.img"
  rmdir "$dir" 2>/dev/null || true
  exit 0
fi

dir=$(realpath -m "$1")
size=${2:-8G}
if mountpoint -q "$dir"; then
  fs=$(findmnt -n -o FSTYPE "$dir")
  [[ $fs == xfs ]] || { echo "$dir is already a mount point of $fs, not xfs" >&2; exit 1; }
  echo "$dir"
  exit 0
fi
mkdir -p "$dir"
img=$dir.img
dev=$(loop_of "$img" 2>/dev/null || true)
if [[ -z $dev ]]; then
  rm -f "$img"
  truncate -s "$size" "$img"
  dev=$(losetup --direct-io=on -f --show "$img")
  mkfs.xfs -q -f "$dev"
fi
if [[ $(cat "/sys/block/${dev#/dev/}/loop/dio" 2>/dev/null) != 1 ]]; then
  echo "warning: $dev does not use direct I/O: flushes stop in the host page cache" >&2
fi
mount "$dev" "$dir"
echo "$dir"
