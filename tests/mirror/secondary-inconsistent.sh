#!/bin/bash
# secondary-inconsistent: a backup tool reading the secondary must never get
# a mix of old and new blocks. While a resync runs into the secondary (here a
# rejoin after a split, rate-limited so it lasts), its NBD export refuses
# READ and BLOCK_STATUS with EIO, also after a kill -9 and restart
# mid-resync (the metadata remembers); the split image before, and the
# synchronized copy after, read normally, and the primary serves throughout.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=128M
VOL_ACK=5s
VOL_EXTRA='initial-sync = "skip"
resync-rate = "4M"'
CHANGED=$((24 * MiB))

start_synced_pair 30
have_ctl || die "split needs mirrorctl"

consistent_is() { [ "$(status_get "$1" .consistent)" = "$2" ]; }
probe() { "${NBDTOOL[@]}" probe "$(nbd_unix_uri "$1")" 0 "$CHANGED"; }

"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" 0 "$CHANGED" 1 || die "writing the first pattern failed"
out=$(ctl alpha split) && pass "split: $out" || die "split failed: $out"
split_sha=$("${NBDTOOL[@]}" sha "$(nbd_unix_uri alpha)") || die "reading alpha failed"
p=$(probe beta)
check_eq "the split image reads normally on beta" "read OK" "$(grep '^read' <<<"$p" | cut -d' ' -f1-2)"
check_eq "block status works on the split image" "block_status OK" "$(grep '^block_status' <<<"$p")"
check_eq "beta's split image is alpha's image at the split" "$split_sha" \
    "$("${NBDTOOL[@]}" sha "$(nbd_unix_uri beta)")"

# Changes after the split: a rejoin must copy them into beta.
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" 0 "$CHANGED" 2 || die "writing the second pattern failed"
new_sha=$("${NBDTOOL[@]}" sha "$(nbd_unix_uri alpha)") || die "reading alpha failed"

log_mark beta
out=$(ctl alpha rejoin) && pass "rejoin: $out" || die "rejoin failed: $out"
wait_for 20 consistent_is beta false || die "beta never reported an inconsistent copy"
p=$(probe beta)
check_eq "mid-resync, a READ of beta's export fails with EIO" "read EIO" "$(grep '^read' <<<"$p")"
check_eq "mid-resync, BLOCK_STATUS of beta's export fails with EIO" "block_status EIO" "$(grep '^block_status' <<<"$p")"
check "beta's log says why reads are refused" \
    grep -q 'refusing reads (EIO) while this copy is not a usable image' "$(node_log beta)"
check_eq "alpha still reads its own copy" "read OK" "$(probe alpha | grep '^read' | cut -d' ' -f1-2)"
left=$(status_get alpha .out_of_sync_bytes)
[ "$left" -gt $((4 * MiB)) ] || die "the resync went too fast to test a restart in it ($left bytes left)"

# A crash mid-resync: the refusal survives the restart.
kill_node beta
must_start beta
check_eq "after kill -9 mid-resync, beta still reports an inconsistent copy" false "$(status_get beta .consistent)"
check_eq "after the restart, a READ of beta's export still fails with EIO" "read EIO" "$(probe beta | grep '^read')"

wait_state alpha synchronized 60 >/dev/null || die "the resync did not finish"
wait_for 10 consistent_is beta true || fail "beta is not consistent after the resync"
p=$(probe beta)
check_eq "after the resync, beta's export reads again" "read OK" "$(grep '^read' <<<"$p" | cut -d' ' -f1-2)"
check_eq "after the resync, block status works again" "block_status OK" "$(grep '^block_status' <<<"$p")"
check_eq "beta's export serves alpha's current image" "$new_sha" "$("${NBDTOOL[@]}" sha "$(nbd_unix_uri beta)")"
stop_pair
check_identical "after the resync"
finish
