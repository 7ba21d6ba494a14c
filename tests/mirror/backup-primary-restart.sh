#!/bin/bash
# backup-primary-restart: the primary's daemon crashes (kill -9) and is
# restarted (systemd's Restart=on-failure) while `mirrorctl backup` copies the
# secondary's image. The split survives the restart (it is in the primary's
# metadata) and the secondary's image, which the copy reads, never changed:
# the image is the split instant's. What a user checks:
#   - the backup succeeds with an image equal to the primary's data at the
#     split (beta's copy, which no write reached since), or fails saying why;
#   - either way, the pair mirrors again afterwards by itself: no rejoin by
#     the operator (a nightly job must never leave the pair unmirrored).
# beta's reads are slowed (read-delay-ms) so that the copy lasts long enough
# for alpha's crash and restart to land inside it.
#
# Before, (during) the restarted primary no longer knew the split's instant (status:
# last_split null), so the backup took the split for one made since ("the
# split ended during the copy: the pair is split again, at 0"), threw the
# complete image away and did not rejoin: the pair stayed split. (after) It
# took an unreachable primary for a split that was over ("not rejoining: the
# split this backup made is over"): the pair stayed split.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "no mirrorctl"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
setup_pair
start_with_faults beta read-delay-ms=400
must_start alpha
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"
nbd_fill "$(nbd_unix_uri alpha)" 0 $((24 * MiB)) 5 || die "write through alpha"

# backup_across NAME WHEN: a full backup to $T/NAME.img while alpha is
# killed during the copy and restarted at once (WHEN = during) or only once
# the copy is over (WHEN = after: the backup finds no primary to ask).
backup_across() {
    local name=$1 when=$2 img=$T/$1.img bpid rc
    "$MIRRORCTL" --config "$T/vol.toml" --node alpha backup --to "$img" >"$T/$name.out" 2>&1 &
    bpid=$!
    BG_PIDS+=("$bpid")
    wait_for 20 grep -q "^backup: [1-9]" "$T/$name.out" \
        || die "$name: the copy did not start: $(cat "$T/$name.out")"
    kill_node alpha
    if [ "$when" = after ]; then
        wait_for 30 grep -q "^backup: 100%" "$T/$name.out" || fail "$name: the copy did not end"
        sleep 2   # (not readiness: the backup finds alpha gone for a while)
    fi
    must_start alpha
    log "$name: alpha restarted: $(status_get alpha '"\(.state) last_split=\(.last_split)"')"
    nbd_fill "$(nbd_unix_uri alpha)" $((32 * MiB)) $MiB 9 || fail "$name: a write through the restarted alpha failed"
    wait "$bpid"; rc=$?
    log "$name: backup exit $rc: $(tr '\n' ' ' <"$T/$name.out")"
    if [ $rc -eq 0 ]; then
        pass "$name: the backup succeeded across alpha's restart"
        check "$name: its image holds the data written before the split" \
            cmp -n $((24 * MiB)) "$img" "${NODE_IMG[beta]}"
    else
        grep -q "fail\|ended\|cannot\|not recorded" "$T/$name.out" \
            && pass "$name: the backup failed and says why (exit $rc)" \
            || fail "$name: the backup failed (exit $rc) without saying why"
    fi
    if wait_state alpha synchronized 60 >/dev/null; then
        pass "$name: the pair mirrors again by itself after the backup (no rejoin)"
    else
        fail "$name: the pair stays $(status_get alpha .state) after the backup: $(tr '\n' ' ' <"$T/$name.out")"
        log "$name: rejoin: $(ctl alpha rejoin --wait)"
    fi
}

backup_across during during
backup_across after after
stop_pair
check_identical "after the backup across alpha's restart"
pair_finish
