#!/bin/bash
# faults: the test-only fault injection (MIRRORD_FAULTS, docs/reliability.md)
# seen by a real client on a plain export. A write to a failing range gets
# EIO and changes nothing, writes elsewhere succeed; a disk that fills after
# N writes answers ENOSPC; a simulated power loss (SIGUSR2) keeps exactly the
# flushed and FUA writes on the file; a store that cannot punch holes keeps
# its data on TRIM, which still succeeds; a bad MIRRORD_FAULTS is refused.
. "$(dirname "$0")/lib.sh"
require qemu-io
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"

IMG=$T/disk.img
truncate -s 16M "$IMG"

# --- write-eio on [1M, 1M+64K)
MIRRORD_FAULTS=write-eio=1M:64K start_mirrord --listen "unix:$T/sock" --export disk="$IMG"
grep -q "TEST FAULTS injected: write-eio=1048576:65536" "$MIRRORD_LOG" \
    && pass "mirrord warns that faults are injected" || fail "no TEST FAULTS warning in the log"
out=$(qemu-io -f raw "$(unix_uri disk)" -c 'write -P 0x33 1M 4k' 2>&1)
grep -q "Input/output error" <<<"$out" && pass "a write to the failing range gets EIO" \
    || fail "expected EIO for a write to the failing range, got: $out"
out=$(qemu-io -f raw "$(unix_uri disk)" -c 'write -P 0x33 1020k 8k' 2>&1)
grep -q "Input/output error" <<<"$out" && pass "a write overlapping the failing range gets EIO" \
    || fail "expected EIO for a write overlapping the range, got: $out"
check "writes elsewhere succeed" qemu-io -f raw "$(unix_uri disk)" -c 'write -P 0x44 2M 64k' -c flush
check "the failed writes changed nothing" qemu-io -f raw -r "$(unix_uri disk)" -c 'read -P 0 1M 64k' \
    -c 'read -P 0 1020k 4k' -c 'read -P 0x44 2M 64k'
stop_mirrord

# --- enospc-after: the 4th write and every later one
MIRRORD_FAULTS=enospc-after=3 start_mirrord --listen "unix:$T/sock" --export disk="$IMG"
out=$(qemu-io -f raw "$(unix_uri disk)" -c 'write -P 1 0 4k' -c 'write -P 2 4k 4k' -c 'write -P 3 8k 4k' \
    -c 'write -P 4 12k 4k' 2>&1)
grep -q "No space left on device" <<<"$out" && pass "the 4th write gets ENOSPC" \
    || fail "expected ENOSPC on the 4th write, got: $out"
check "the first three writes landed, the 4th did not" qemu-io -f raw -r "$(unix_uri disk)" \
    -c 'read -P 1 0 4k' -c 'read -P 2 4k 4k' -c 'read -P 3 8k 4k' -c 'read -P 0 12k 4k'
mirrord_alive && pass "mirrord survives injected ENOSPC" || die "mirrord died"
stop_mirrord

# --- trim-unsupported: a store that cannot punch holes keeps its data, and
# the client's TRIM (advisory in the NBD spec) still succeeds
MIRRORD_FAULTS=trim-unsupported start_mirrord --listen "unix:$T/sock" --export disk="$IMG"
check "a TRIM on a store that cannot punch succeeds for the client" /usr/bin/python3 -c '
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"\x55" * 65536, 3 << 20)
h.trim(65536, 3 << 20)
h.flush()
h.shutdown()' "$(unix_uri disk)"
check "and left the data in place" qemu-io -f raw -r "$(unix_uri disk)" -c 'read -P 0x55 3M 64k'
stop_mirrord

# --- power loss: flushed and FUA data stay, the rest is dropped
MIRRORD_FAULTS=power-loss start_mirrord --listen "unix:$T/sock" --export disk="$IMG"
# libnbd, not qemu-io: qemu flushes when it closes the image.
check "writes: flushed, FUA, and not flushed" /usr/bin/python3 -c '
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(b"\x5a" * 65536, 4 << 20)
h.flush()
h.pwrite(b"\x6b" * 4096, 4 << 20)
h.pwrite(b"\x7c" * 65536, 5 << 20)
h.pwrite(b"\x8d" * 65536, 6 << 20, nbd.CMD_FLAG_FUA)
h.pwrite(b"\x9e" * 4096, 7 << 20)
h.shutdown()' "$(unix_uri disk)"
kill -USR2 "$MIRRORD_PID"
deadline=$((SECONDS + 10))
while mirrord_alive && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
mirrord_alive && die "mirrord survived SIGUSR2 with power-loss"
wait "$MIRRORD_PID"; rc=$?
MIRRORD_PID=""
check_eq "the power loss kills mirrord with SIGKILL" 137 "$rc"
grep -q "simulated power loss (SIGUSR2): 3 unsynced writes" "$MIRRORD_LOG" \
    && pass "it logs the dropped writes: $(grep -o 'simulated power loss.*' "$MIRRORD_LOG")" \
    || fail "no 'simulated power loss ... 3 unsynced writes' line: $(grep -i 'power' "$MIRRORD_LOG")"
start_mirrord --listen "unix:$T/sock" --export-ro disk="$IMG"
check "after the power loss: the flushed write survives, its unflushed overwrite does not" \
    qemu-io -f raw -r "$(unix_uri disk)" -c 'read -P 0x5a 4M 64k'
check "the FUA write survives, the unflushed ones are gone" qemu-io -f raw -r "$(unix_uri disk)" \
    -c 'read -P 0x8d 6M 64k' -c 'read -P 0 5M 64k' -c 'read -P 0 7M 4k'
stop_mirrord

# --- a bad specification is refused before anything is served
out=$(MIRRORD_FAULTS=write-eio=12 "$MIRRORD" --listen "unix:$T/sock2" --export disk="$IMG" 2>&1); rc=$?
check_eq "a bad MIRRORD_FAULTS exits 2" 2 "$rc"
grep -q "MIRRORD_FAULTS: write-eio: expected OFFSET:LENGTH" <<<"$out" && pass "and says why: $out" \
    || fail "unclear error for a bad MIRRORD_FAULTS: $out"
finish
