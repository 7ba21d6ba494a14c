#!/bin/bash
# resize-meta-enospc: `mirrorctl resize` when one node's metadata file
# system has no room for the larger maps (the metadata file and its
# .backup changes map grow with the volume). Once on the primary's side,
# once on the secondary's. The resize must fail with a message naming the
# node and the reason (and which node grew, if one did), keep
# writes working, leave metadata a restart accepts; once space is freed,
# the same command grows both, and the images stay identical with every
# acknowledged write.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "no mirrorctl"
require mount umount
VOL_SIZE=64M
VOL_ACK=2s
VOL_EXTRA='initial-sync = "skip"
bitmap-granularity = "4K"'
mkdir -p "$T/mmeta"
mount -t tmpfs -o size=4M tmpfs "$T/mmeta" 2>/dev/null || skip "cannot mount a tmpfs"
CLEANUP_HOOKS+=("umount -l $T/mmeta")
BIG=8G

one_side() { # one_side NODE (whose metadata file system is full)
    local full=$1 n out rc sz
    NODE_META[$full]=$T/mmeta/$full.meta
    VOL_SIZE=64M
    fresh_pair
    rm -f "$T/mmeta/"*
    start_pair
    wait_state alpha synchronized 30 >/dev/null || die "[$full full] not synchronized"
    log "[$full full] metadata: $(ls -l "$T/mmeta" | tail -n +2 | awk '{print $5, $9}' | tr '\n' ' ')"
    # Fill the metadata file system, leaving 64K.
    local free_kb
    free_kb=$(df -k --output=avail "$T/mmeta" | tail -n 1)
    fallocate -l $(((free_kb - 64) * 1024)) "$T/mmeta/filler" 2>/dev/null ||
        dd if=/dev/zero of="$T/mmeta/filler" bs=1K count=$((free_kb - 64)) status=none
    start_writer "w-$full" "$(nbd_unix_uri alpha)" 0 $((32 * MiB)) --qd 4 --seed 81
    wait_acks "w-$full" 300 60 || die "the writer did not start"
    VOL_SIZE=$BIG; write_configs
    out=$(timeout 120 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" resize 2>&1); rc=$?
    log "[$full full] resize to $BIG: exit $rc: $out"
    if [ $rc -ne 0 ] && grep -qiE "space|ENOSPC" <<<"$out"; then
        pass "[$full full] resize refused, saying why: $(cut -c1-200 <<<"$out")"
    else
        fail "[$full full] resize: exit $rc, no ENOSPC named: $out"
    fi
    sz="$(status_get alpha .size) $(status_get beta .size)"
    log "[$full full] sizes after the failed resize: $sz; alpha $(node_status alpha | jq -c '{state,link,last_error}') beta $(node_status beta | jq -c '{state,link,last_error}')"
    # The secondary grows first: when the primary then cannot, the pair
    # serves two sizes until the retry, and the message must say so.
    if [ "${sz% *}" = "${sz#* }" ]; then
        pass "[$full full] both nodes serve the same size ($sz)"
    elif grep -q "'beta' grew, but this node could not" <<<"$out"; then
        pass "[$full full] beta grew alone ($sz), and the message says so"
        # For whoever did not see the command's answer: status says it too.
        grep -q "resize incomplete (run .mirrorctl resize. again): 'beta' grew" \
            <<<"$(status_get alpha .last_error)" \
            && pass "[$full full] alpha's status says the resize is incomplete" \
            || fail "[$full full] alpha's status does not say it: $(status_get alpha .last_error)"
    else
        fail "[$full full] the nodes serve different sizes (alpha ${sz% *}, beta ${sz#* }) and the message does not say so"
    fi
    n=$(acks "w-$full"); wait_acks "w-$full" $((n + 200)) 30 && pass "[$full full] writes go on" || fail "[$full full] writes stalled"
    # Space freed: the same command again.
    rm -f "$T/mmeta/filler"
    mount -o remount,size=64M "$T/mmeta"
    out=$(timeout 120 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" resize 2>&1); rc=$?
    check_eq "[$full full] resize after space was freed: exit 0 ($out)" 0 $rc
    check_eq "[$full full] alpha serves $BIG" "$(size_bytes $BIG)" "$(status_get alpha .size)"
    check_eq "[$full full] beta serves $BIG" "$(size_bytes $BIG)" "$(status_get beta .size)"
    check_eq "[$full full] nothing about the resize in alpha's status any more" "" \
        "$(status_get alpha .last_error | grep "resize incomplete")"
    wait_state alpha synchronized 60 >/dev/null || fail "[$full full] not synchronized after the resize"
    stop_writer "w-$full"
    check_eq "[$full full] no write failed" 0 "$WRITER_RC"
    # A restart accepts both metadata files, and nothing needs a full sync.
    stop_pair
    check_identical "[$full full]"
    log_mark alpha
    must_start alpha; must_start beta
    if wait_log alpha "peer 'beta' connected:" 30 >/dev/null; then
        check_eq "[$full full] a restart copies nothing ($(plan_of alpha))" 0 "$(plan_of alpha | grep -oE '[0-9]+$')"
    else
        fail "[$full full] no reconnect after the restart: $(grep -v DEBUG "${NODE_LOG[alpha]}" | tail -n 3)"
    fi
    stop_pair
    verify_writes "[$full full] beta's image holds every acknowledged write" "w-$full" --image "${NODE_IMG[beta]}" 0 $((32 * MiB))
    NODE_META[$full]=$T/$full.meta
    mount -o remount,size=4M "$T/mmeta"
}
one_side alpha
one_side beta
pair_finish
