#!/bin/bash
# backup: mirrorctl backup copies the split secondary's image to a sparse
# file and rejoins; the secondary publishes the regions changed since that
# backup point as the NBD context mirrord:dirty-since-backup (checked with
# nbdinfo --map); an incremental backup under a running writer copies only
# those regions and its result equals the secondary's image at the second
# split instant. Bad requests (an existing target, an image without a backup
# record) fail with a reason and change nothing.
. "$(dirname "$0")/pairlib.sh"

require nbdinfo jq
VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
CTX=mirrord:dirty-since-backup
IMG=$T/backup.img

start_synced_pair 30
have_ctl || die "backup needs mirrorctl"
backup() { "$MIRRORCTL" --config "$T/vol.toml" --node alpha backup "$@"; }
# changed_map NODE: the NBD context's extents as "OFFSET LENGTH" lines of changed regions.
changed_map() {
    nbdinfo --json --map="$CTX" "$(nbd_unix_uri "$1")" | jq -r '.[] | select(.type == 1) | "\(.offset) \(.length)"'
}
changed_total() { changed_map "$1" | awk '{s += $2} END {print s + 0}'; }

nbd_fill "$(nbd_uri alpha)" 0 $((1 * MiB)) 1 || die "write through alpha"
nbd_fill "$(nbd_uri alpha)" $((10 * MiB)) $((2 * MiB)) 2 || die "write through alpha"

# --- a full backup
check "nbdinfo lists the $CTX context on the secondary" \
    bash -c "nbdinfo --list --json '$(nbd_unix_uri beta)' | jq -e '.exports[0].contexts | index(\"$CTX\")'"
out=$(backup --to "$IMG" 2>"$T/full.err") && pass "full backup: $out" \
    || die "full backup failed: $out $(cat "$T/full.err")"
check "a full backup prints plain progress lines off a terminal" grep -q "^backup: 100%" "$T/full.err"
check "the full image equals the primary's" cmp -n "$(size_bytes "$VOL_SIZE")" "$IMG" "${NODE_IMG[alpha]}"
alloc=$(alloc_bytes "$IMG")
[ "$alloc" -le $((4 * MiB)) ] && pass "the image is sparse: $alloc bytes allocated for 3 MiB of data" \
    || fail "the image is not sparse: $alloc bytes allocated for 3 MiB of data"
point=$(jq -r .point "$IMG.mirrord.json")
check_eq "the secondary records the backup point" "$point" "$(status_get beta .backup.point)"
check_eq "nothing changed since the backup point" 0 "$(changed_total beta)"
wait_state alpha synchronized 30 >/dev/null || fail "not synchronized after the backup"

# --- changes since the backup point, as the NBD context shows them
nbd_fill "$(nbd_uri alpha)" $((20 * MiB)) $((1 * MiB)) 3 || fail "write through alpha"
nbd_fill "$(nbd_uri alpha)" $((10 * MiB)) $((64 * KiB)) 4 || fail "write through alpha"
"$PY" - "$(nbd_uri alpha)" <<'PYEOF' || fail "zeroing through alpha"
import sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.zero(1 << 20, 0); h.flush(); h.shutdown()
PYEOF
check_eq "$CTX on the secondary lists exactly the changed regions" \
    "0 $((MiB)) $((10 * MiB)) $((64 * KiB)) $((20 * MiB)) $((MiB))" "$(changed_map beta | xargs)"
check_eq "status counts the changed bytes" $((2 * MiB + 64 * KiB)) "$(status_get beta .backup.changed_bytes)"
check "mirrorctl status shows the changed bytes since the backup point" \
    grep -q "since backup .*2.1 MiB changed (backup point $point)" <<<"$("$MIRRORCTL" --socket "${NODE_CTL[beta]}" status)"

# --- refusals that change nothing
sha_before=$(sha_of "$IMG")
out=$(backup --to "$IMG" 2>&1) && fail "a full backup over an existing image: accepted" \
    || check "a full backup over an existing image is refused" grep -q "exists" <<<"$out"
out=$(backup --incremental --to "$T/other.img" 2>&1) && fail "incremental without a record: accepted" \
    || check "an incremental backup without a backup record is refused" grep -q "full backup" <<<"$out"
check_eq "the image is unchanged by the refusals" "$sha_before" "$(sha_of "$IMG")"
check_eq "alpha is still synchronized" synchronized "$(status_get alpha .state)"

# --- an incremental backup while a writer runs; the --post hook runs right
# after the split, so it copies the secondary's split image to compare with.
start_writer w "$(nbd_uri alpha)" $((32 * MiB)) $((8 * MiB)) --qd 4 --seed 5
wait_acks w 200 60 || die "the writer did not get going"
out=$(backup --incremental --to "$IMG" --post "cp '${NODE_IMG[beta]}' '$T/at-split.img'" 2>"$T/incr.err") \
    && pass "incremental backup under load: $out" || fail "incremental backup failed: $out $(cat "$T/incr.err")"
check "the incremental image equals the secondary's image at the second split" \
    cmp -n "$(size_bytes "$VOL_SIZE")" "$IMG" "$T/at-split.img"
copied=$(sed -nE 's/.*: ([0-9]+) bytes copied.*/\1/p' <<<"$out")
[ -n "$copied" ] && [ "$copied" -le $((2 * MiB + 64 * KiB + 8 * MiB)) ] \
    && pass "the incremental copied $copied bytes: only changed regions (<= $((2 * MiB + 64 * KiB + 8 * MiB)))" \
    || fail "the incremental copied '$copied' bytes (at most $((2 * MiB + 64 * KiB + 8 * MiB)) changed)"
check_eq "the new backup point is recorded" "$(jq -r .point "$IMG.mirrord.json")" "$(status_get beta .backup.point)"
[ "$(jq -r .point "$IMG.mirrord.json")" -gt "$point" ] && pass "the backup point moved on" \
    || fail "the backup point did not move on"

stop_writer w
check_eq "the writer saw no error" 0 "$WRITER_RC"
wait_state alpha synchronized 60 >/dev/null || fail "alpha not synchronized after the incremental"
# --- on a terminal: a progress bar (script(1) provides the terminal)
if command -v script >/dev/null; then
    wait_state alpha synchronized 60 >/dev/null || fail "alpha not synchronized before the third backup"
    script -qec "'$MIRRORCTL' --config '$T/vol.toml' --node alpha backup --to '$T/tty.img'" \
        "$T/tty.out" >/dev/null 2>&1 </dev/null || fail "full backup on a terminal failed: $(tail -c 300 "$T/tty.out")"
    check "on a terminal the progress is a bar redrawn in place" grep -q $'\rbackup \[#' "$T/tty.out"
    check "the backup made on a terminal equals the primary's image" \
        cmp -n "$(size_bytes "$VOL_SIZE")" "$T/tty.img" "${NODE_IMG[alpha]}"
    wait_state alpha synchronized 60 >/dev/null || fail "alpha not synchronized after the third backup"
else
    log "script(1) missing: the progress bar is not checked"
fi

stop_pair
check_identical "after three backups"
finish
