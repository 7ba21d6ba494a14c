#!/bin/bash
# new-pair-tail-data: a new pair whose backing files are larger than the
# volume, with old bytes only past the volume's end (a file reused for a
# smaller volume, or one a resize test left). Those bytes are not the
# volume's: the pair syncs at once, as on blank files, and never waits for
# the operator's word (that is for copies whose volume area holds data,
# wrong-primary). A file holding data inside the volume still waits.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M
VOL_ACK=1s

for init in full skip; do
    VOL_EXTRA="initial-sync = \"$init\""
    fresh_pair
    # 8 MiB of old bytes 4 MiB past the end, on both nodes (the images grow).
    for n in alpha beta; do
        head -c $((8 * MiB)) /dev/urandom | dd of="${NODE_IMG[$n]}" bs=1M seek=68 conv=notrunc status=none
    done
    start_pair
    if wait_state alpha synchronized 20 >/dev/null; then
        pass "[$init] a new pair with old bytes only past the volume's end synchronizes"
    else
        fail "[$init] it does not: $(status_get alpha '.state + ": " + .last_error')"
    fi
    write_acked w "$(nbd_unix_uri alpha)" 0 $((16 * MiB)) 200
    check "[$init] client FLUSH" nbd_flush alpha
    verify_writes "[$init] beta holds every acknowledged write" w --uri "$(nbd_unix_uri beta)" 0 $((16 * MiB))
done

# The counter-check: old bytes inside the volume on beta still wait for the word.
VOL_EXTRA='initial-sync = "full"'
fresh_pair
head -c $((8 * MiB)) /dev/urandom | dd of="${NODE_IMG[beta]}" bs=1M seek=40 conv=notrunc status=none
start_pair
sleep 3
out=$(status_get alpha '.state + ": " + .last_error')
grep -q "^degraded: neither node records its copy's history" <<<"$out" \
    && pass "data inside beta's volume area: no sync without the operator" \
    || fail "data inside beta's volume area: $out"
pair_finish
