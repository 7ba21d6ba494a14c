#!/bin/bash
# resync-checksums: checksum-based resync (DRBD's csums-alg) on a real pair.
# Two hosts restored from the same image (identical 64 MiB of random data)
# except 7 regions of beta's, then a new pair with initial-sync = "full":
#  1. resync-checksums = true: the full sync sends exactly the 7 differing
#     regions (beta received that many resync bytes; alpha counts the rest
#     as identical, in status and in the "resync complete" line), the files
#     end identical, and a client writing through alpha during the resync
#     loses nothing: every acknowledged write is on both copies; resync-rate
#     still counts every byte resynced, sent or found identical.
#  2. resync-checksums = false: the same full sync sends everything, and
#     nothing is counted identical.
#  3. beta cannot read one chunk (an injected read error): it cannot digest
#     it, and alpha copies that chunk whole; the rest as in 1.
#  4. (MIRRORD_OLD: a mirrord built before resync-checksums and its VERIFY
#     feature bit) such a peer gets plain copies, with one log line saying so.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
SIZE=$(size_bytes "$VOL_SIZE")
G=$((64 * KiB))
have_ctl || skip "the byte counters are read from mirrorctl status"
# The writer's window, away from the differing regions (its writes reach
# both copies, so the resync finds its regions identical either way).
WOFF=$((48 * MiB)) WWIN=$((8 * MiB))

# config CHECKSUMS [FILE]: the volume file for a new pair (both nodes', or
# FILE); CHECKSUMS "" leaves the key out (a mirrord that predates it refuses it).
config() {
    VOL_EXTRA="initial-sync = \"full\"
bitmap-granularity = \"64K\"
resync-rate = \"16M\"${1:+
resync-checksums = $1}"
    if [ -n "${2:-}" ]; then write_config "$2"; else write_configs; fi
}

# images: alpha's image, random and fully allocated (no hole: a hole is sent
# as a ZERO whatever the setting); beta's a copy with 7 regions of 64K
# changed: one at its start, one at its end, two across a boundary, one in
# its middle, one by a single byte, and the last region of the volume.
images() {
    "$PY" - "${NODE_IMG[alpha]}" "$SIZE" <<'EOF' || die "writing alpha's image failed"
import random, sys
r = random.Random(7)
with open(sys.argv[1], "wb") as f:
    for _ in range(int(sys.argv[2]) >> 20):
        f.write(r.randbytes(1 << 20))
EOF
    # The writer's window starts as zeroes (written, not a hole) on both: its
    # checker takes a block the writer never reached for zeroes.
    dd if=/dev/zero of="${NODE_IMG[alpha]}" bs=1M seek=$((WOFF / MiB)) count=$((WWIN / MiB)) \
        conv=notrunc status=none
    cp "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}"
    local img=${NODE_IMG[beta]}
    dd if=/dev/urandom of="$img" bs=4096 seek=$((1 * MiB / 4096)) count=1 conv=notrunc status=none
    dd if=/dev/urandom of="$img" bs=4096 seek=$((2 * MiB / 4096 - 1)) count=1 conv=notrunc status=none
    dd if=/dev/urandom of="$img" bs=4096 seek=$((3 * MiB / 4096 - 1)) count=2 conv=notrunc status=none
    dd if=/dev/urandom of="$img" bs=4096 seek=$((5 * MiB / 4096 + 5)) count=1 conv=notrunc status=none
    "$PY" -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(int(sys.argv[2])); b = f.read(1); f.seek(-1, 1); f.write(bytes([b[0] ^ 0x5a]))' \
        "$img" $((7 * MiB + 12345))
    dd if=/dev/urandom of="$img" bs=4096 seek=$((SIZE / 4096 - 1)) count=1 conv=notrunc,fsync status=none
    cmp -s "${NODE_IMG[alpha]}" "$img" && die "beta's image did not change"
}
DIFF_BYTES=$((7 * G))

# new_pair CHECKSUMS: both nodes stopped, new metadata, new images, started.
new_pair() {
    stop_pair
    rm -f "${NODE_META[alpha]}" "${NODE_META[beta]}"
    [ -n "${NODE_ADDR[alpha]:-}" ] || pick_ports
    images
    config "$1"
    start_pair
    first_sync_consent alpha
}

# --- 1. checksums on, a client writing through the resync
new_pair true
wait_state alpha resyncing 30 >/dev/null || die "no resync started (the pair did not connect?)"
if log_since alpha | grep -q "resync started: $SIZE bytes to copy (checksums"; then
    pass "alpha logs a full resync with checksums"
else
    fail "no 'resync started: $SIZE bytes to copy (checksums...' line"
fi
start_writer w "$(nbd_unix_uri alpha)" "$WOFF" "$WWIN"
wait_acks w 50 30 || fail "the writer got no acknowledgements during the resync"
check_eq "the writer ran while alpha was resyncing" resyncing "$(status_get alpha .state)"
out=$(ctl alpha status)
if grep -q "identical on the peer so far (not sent)" <<<"$out"; then
    pass "mirrorctl status shows the bytes found identical during the resync"
else
    log "$out"
    fail "mirrorctl status does not show 'identical on the peer so far' while resyncing"
fi
wait_state alpha synchronized 120 >/dev/null || die "the resync did not complete"
finish_writer w "$(nbd_unix_uri alpha)" "$WOFF" "$WWIN" 2000
check_eq "beta received only the differing regions" "$DIFF_BYTES" "$(status_get beta .resynced_bytes_total)"
check_eq "alpha resynced the whole volume" "$SIZE" "$(status_get alpha .resynced_bytes_total)"
check_eq "alpha counts the rest identical on the peer" $((SIZE - DIFF_BYTES)) \
    "$(status_get alpha .resync_same_bytes_total)"
check_eq "nothing left out of sync" 0 "$(status_get alpha .out_of_sync_bytes)"
check_resync_rate "resync-rate counts the identical bytes too" alpha "$SIZE" $((16 * MiB))
line=$(log_since alpha | grep 'resync complete' | tail -n 1)
if grep -q "the peer is up to date: $SIZE bytes, $((SIZE - DIFF_BYTES)) identical on the peer (not sent)" <<<"$line"; then
    pass "the resync complete line counts the identical bytes: ${line#* resync }"
else
    fail "resync complete line: '$line'"
fi
out=$(ctl alpha status)
grep -q "resync checksums.*identical on the peer (not sent)" <<<"$out" \
    && pass "mirrorctl status: $(grep 'resync checksums' <<<"$out" | sed 's/^ *//')" \
    || fail "mirrorctl status has no 'resync checksums' row: $out"
stop_pair
check_identical "with checksums"
verify_writes "beta's image holds every acknowledged write" w --image "${NODE_IMG[beta]}" "$WOFF" "$WWIN"

# --- 2. checksums off: everything is sent
new_pair false
wait_state alpha synchronized 120 >/dev/null || die "the plain resync did not complete"
check_eq "without checksums beta received the whole volume" "$SIZE" "$(status_get beta .resynced_bytes_total)"
check_eq "without checksums nothing is counted identical" 0 "$(status_get alpha .resync_same_bytes_total)"
stop_pair
check_identical "without checksums"

# --- 3. the peer cannot read one chunk of its copy (MIRRORD_FAULTS on beta):
# it answers that VERIFY with an errno, and alpha copies that chunk whole.
stop_pair
rm -f "${NODE_META[alpha]}" "${NODE_META[beta]}"
images
config true
must_start alpha
start_with_faults beta "read-eio=40M:4K"
first_sync_consent alpha
wait_state alpha synchronized 120 >/dev/null || die "the resync with beta's read error did not complete"
check "alpha copies the chunk beta could not digest whole" \
    grep -q "resync: the peer could not digest $((40 * MiB))+$MiB (Input/output error): copying it whole" \
    "${NODE_LOG[alpha]}"
check_eq "beta received the differing regions and that chunk" $((DIFF_BYTES + MiB)) \
    "$(status_get beta .resynced_bytes_total)"
stop_pair
check_identical "after beta's read error"

# --- 4. a peer built before the feature
if [ -n "${MIRRORD_OLD:-}" ]; then
    stop_pair
    rm -f "${NODE_META[alpha]}" "${NODE_META[beta]}"
    images
    config true
    NODE_CFG[beta]=$T/beta-old.toml
    config "" "${NODE_CFG[beta]}"
    must_start alpha
    MIRRORD=$MIRRORD_OLD must_start beta
    wait_state alpha synchronized 120 >/dev/null || die "alpha and the old beta do not synchronize"
    check "alpha says the old peer gets plain copies" \
        grep -q "resync-checksums: the peer's mirrord cannot digest its copy" "${NODE_LOG[alpha]}"
    check_eq "the old peer received the whole volume" "$SIZE" "$(status_get alpha .resynced_bytes_total)"
    check_eq "nothing counted identical" 0 "$(status_get alpha .resync_same_bytes_total)"
    stop_pair
    check_identical "with the old peer"
else
    log "MIRRORD_OLD unset: the check against a mirrord built before resync-checksums is skipped"
fi

pair_finish
