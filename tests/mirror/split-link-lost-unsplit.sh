#!/bin/bash
# split-link-lost-unsplit: a split that fails because the link was lost while
# its writes drained made no split, and the pair mirrors again by itself once
# the link is back; so does a `mirrorctl backup` whose split failed that way.
#
# Before, the failed split left kFlagSplit set on the primary: the next
# session was a split one (standby) and the pair stayed split, unmirrored,
# until an operator's rejoin. `mirrorctl backup` (a nightly job, say) then
# failed with nothing copied and nothing to rejoin: the mirror stayed off
# after one link blip during a backup's split.
#
# The link: alpha and beta in two namespaces, beta's replies cut one way (a
# tbf qdisc that passes nothing) while a writer keeps mirrored writes in
# flight, so the split waits for them to drain until alpha gives up on beta.
. "$(dirname "$0")/pairlib.sh"
require ip tc
have_ctl || skip "no mirrorctl"
netns_nodes slu 10.129.0

VOL_SIZE=64M
VOL_ACK=1s
ACK_MS=1000
VOL_EXTRA='initial-sync = "skip"'
WIN=$((16 * MiB))

start_synced_pair 30

# split_cut NAME OFF CMD...: with a writer on alpha at OFF and beta's
# replies cut, CMD (a split) fails; after the heal the pair synchronizes with
# no rejoin.
split_cut() {
    local name=$1 off=$2 out rc; shift 2
    start_writer "$name" "$(nbd_unix_uri alpha)" $off $WIN --qd 8 --seed "${#name}"
    wait_acks "$name" 500 60 || die "the writer did not start"
    netns_cut b
    out=$(timeout 60 "$@" 2>&1); rc=$?
    log "$name: exit $rc with beta's replies cut: $out"
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "lost during the split.*no split was made" <<<"$out"; then
        pass "$name: fails, saying no split was made"
    else
        fail "$name: exit $rc: $out (expected a failure saying no split was made)"
    fi
    # Not split: degraded, tracking for the peer (a split reported then made
    # `split` answer "already split" and `rejoin` "not split").
    check_eq "$name: alpha's state before the heal" degraded "$(status_get alpha .state)"
    netns_heal
    if wait_state alpha synchronized 60 >/dev/null; then
        pass "$name: synchronized again by itself after the heal (no rejoin)"
    else
        fail "$name: not synchronized 60 s after the heal: alpha $(status_get alpha .state), beta $(status_get beta .state)"
    fi
    check_eq "$name: beta's state" synchronized "$(status_get beta .state)"
    finish_writer "$name" "$(nbd_unix_uri alpha)" $off $WIN $ACK_MS
    if [ "$(status_get alpha .state)" = split ]; then  # (the next case starts synchronized)
        log "$name: rejoin: $(ctl alpha rejoin --wait)"
    fi
}

split_cut split 0 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" split
split_cut backup $WIN "$MIRRORCTL" --config "$T/vol.toml" --node alpha backup --to "$T/backup.img"
[ -e "$T/backup.img" ] && fail "the failed backup left a file at its path" \
    || pass "the failed backup left no file at its path"

stop_pair
check_identical "after the failed splits"
verify_writes "beta's image holds split's writes" split --image "${NODE_IMG[beta]}" 0 $WIN
verify_writes "beta's image holds backup's writes" backup --image "${NODE_IMG[beta]}" $WIN $WIN
pair_finish
