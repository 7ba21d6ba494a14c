#!/bin/bash
# handlers-new-meta: a primary with new metadata (a replaced metadata
# disk, a reset) plans a full sync; the secondary's copy is consistent, so
# its before-resync-target runs first and the plan is refused meanwhile.
# The primary must plan FULL again once the handler exited 0, never take its
# own refused plan's base for "unrelated data": the pair ends synchronized
# and the images identical, with no --force-full-sync restart.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
have_ctl || skip "needs mirrorctl"

# before.sh: slow (2 s), so several handshakes meet it running.
cat >"$T/before.sh" <<EOS
#!/bin/bash
echo "plan=\$MIRROR_PLAN" >>"$T/before.runs"
sleep 2
EOS
chmod 755 "$T/before.sh"
VOL_EXTRA="before-resync-target = \"$T/before.sh\"
handler-timeout = \"30s\""
runs() { [ -f "$T/before.runs" ] && wc -l <"$T/before.runs" || echo 0; }

start_synced_pair 60
check_eq "the initial sync into beta's new copy ran no handler" 0 "$(runs)"
nbd_fill "$(nbd_unix_uri alpha)" $((8 * MiB)) $((8 * MiB)) 23 || die "write through alpha"
stop_pair

# alpha's metadata is lost: it starts over with new metadata (a full sync).
# Its copy's history is unknown: read-only until the pair agrees a plan, or
# until the operator takes it as the current one (here: the writes below
# land while beta's handler refuses the plan).
rm -f "${NODE_META[alpha]}"
must_start beta
log_mark alpha
must_start alpha
check_eq "alpha, primary with new metadata, is read-only at first" false "$(status_get alpha .writable)"
check "promote --force takes alpha's copy as the current one" ctl alpha promote --force
# Written while the handshakes are refused: the full sync must carry it.
nbd_fill "$(nbd_unix_uri alpha)" $((32 * MiB)) $((4 * MiB)) 77 || die "write through alpha after its restart"
wait_state alpha synchronized 60 >/dev/null \
    && pass "the pair synchronized after alpha's new metadata" \
    || fail "the pair did not synchronize (alpha: $(status_get alpha .state), $(status_get alpha .last_error))"
check_eq "before-resync-target ran once, for a full sync" "plan=full" "$(cat "$T/before.runs" 2>/dev/null)"
if log_since alpha | grep -q "unrelated data"; then
    fail "alpha took its refused full plan's retry for unrelated data"
else
    pass "alpha planned the full sync again after the refusal"
fi
stop_pair
check_identical "after the full sync"
pair_finish
