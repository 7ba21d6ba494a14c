#!/bin/bash
# failover-immediate: the planned failover run as a script does it,
# `mirrorctl demote` on the primary and, as soon as it answers "secondary",
# `mirrorctl promote` on the other node. The demote's answer came before the
# pair had reconnected in standby, so the promote was refused about half the
# time with "the peer is not connected ... Use --force only if the peer is
# lost", pushing the operator towards --force in a healthy pair. Once demote
# answers, promote on the peer must succeed (docs/control-protocol.md: after
# the demote "both nodes are then secondary, connected, in state standby").
# Six role switches, each promote right after its demote; the writes of
# every primary are on both copies at the end.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
WIN=$((4 * MiB))

start_synced_pair 30
have_ctl || skip "needs mirrorctl"
from=alpha to=beta
for round in 1 2 3 4 5 6; do
    off=$(((round - 1) * WIN))
    write_acked "w$round" "$(nbd_unix_uri $from)" $off $WIN 200 --qd 4 --seed $round
    out=$(ctl $from demote) || die "[$round] demote $from: $out"
    if out=$(ctl $to promote); then
        pass "[$round] promote $to right after demote $from answered: $out"
    else
        fail "[$round] promote $to right after demote $from answered: $out"
        wait_state $to standby 20 >/dev/null || die "[$round] no standby after the demote"
        out=$(ctl $to promote) || die "[$round] promote $to in standby: $out"
    fi
    wait_state $to synchronized 30 >/dev/null || die "[$round] $to not synchronized as primary"
    t=$from from=$to to=$t
done
stop_pair $from $to
check_identical "after six role switches"
for round in 1 2 3 4 5 6; do
    verify_writes "round $round's writes on alpha" "w$round" --image "${NODE_IMG[alpha]}" $(((round - 1) * WIN)) $WIN
done
pair_finish
