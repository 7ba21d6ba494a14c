#!/bin/bash
# enospc: the backing file lives on a filesystem that fills up. Writes that
# need new space fail with ENOSPC (the error the spec names), the client's
# session and the server survive, data written before is intact, overwrites
# of already allocated blocks still succeed, and nothing is reported durable
# that is not.
. "$(dirname "$0")/lib.sh"
require qemu-io mount umount

FS=$T/small
mkdir -p "$FS"
if ! mount -t tmpfs -o size=24m tmpfs "$FS" 2>/dev/null; then
    skip "cannot mount a tmpfs here (needs root and mount permission)"
fi
trap 'rc=$?; umount -l "$FS" 2>/dev/null; (exit $rc); _cleanup' EXIT
truncate -s 64M "$FS/disk.img"   # sparse: the filesystem holds only 24 MiB

start_mirrord --listen 127.0.0.1:0 --export disk="$FS/disk.img"
URI=$(tcp_uri disk)

check "the first 8 MiB are written" qemu-io -f raw "$URI" -c 'write -P 0x5a 0 8M'
out=$(qemu-io -f raw "$URI" -c 'write -P 0x6b 16M 32M' -c 'flush' 2>&1)
if echo "$out" | grep -q "No space left on device"; then
    pass "a write past the free space fails with ENOSPC"
else
    fail "expected ENOSPC for a write past the free space, got: $(echo "$out" | tail -n 3)"
fi
mirrord_alive && pass "mirrord survives a full filesystem" || die "mirrord died on ENOSPC"
check "data written before is intact" qemu-io -f raw -r "$URI" -c 'read -P 0x5a 0 8M'
check "an overwrite of allocated blocks still succeeds (and flushes)" \
    qemu-io -f raw "$URI" -c 'write -P 0x7c 0 1M' -c 'flush' -c 'read -P 0x7c 0 1M'
check "another client is served normally" qemu-io -f raw -r "$URI" -c 'read -P 0x5a 1M 7M'
# Free space again (trim punches holes): writes succeed once there is room.
check "after a trim frees space, new writes succeed" \
    qemu-io -f raw "$URI" -c 'discard 16M 32M' -c 'write -P 0x11 16M 4M' -c 'flush' -c 'read -P 0x11 16M 4M'
stop_mirrord
finish
