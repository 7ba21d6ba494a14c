#!/bin/bash
# failover-cycles: demote / promote again and again, each time with a writer
# on the primary when the demote starts. After every role change the old
# role's half (replicator or applier) is released once nothing in flight
# names it, so the daemons' open descriptors and memory stay flat; every
# acknowledged write is on both copies, which end identical.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=128M
VOL_EXTRA='initial-sync = "skip"'
CYCLES=${CYCLES:-6}   # demote + promote pairs (each node demoted CYCLES/2 times)
WIN=$((8 * MiB))

setup_pair
start_pair
have_ctl || die "failover-cycles needs mirrorctl"
wait_state alpha synchronized 30 >/dev/null || die "alpha not synchronized"

fds() { ls "/proc/${NODE_PID[$1]}/fd" | wc -l; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/${NODE_PID[$1]}/status"; }
released() { log_all "$1" | grep -c "released the $2 of the previous role"; }

declare -A F0 R0
primary=alpha other=beta
for i in $(seq 1 "$CYCLES"); do
    start_writer w$i "$(nbd_unix_uri $primary)" $((i * WIN)) $WIN --qd 8 --seed $((50 + i))
    wait_acks w$i 300 60 || fail "cycle $i: the writer on $primary did not start"
    out=$(ctl $primary demote) || fail "cycle $i: demote $primary: $out"
    stop_writer w$i
    wait_state $other standby 20 >/dev/null || fail "cycle $i: $other did not reach standby"
    out=$(ctl $other promote) || fail "cycle $i: promote $other: $out"
    wait_state $primary synchronized 30 >/dev/null && wait_state $other synchronized 30 >/dev/null \
        || fail "cycle $i: not synchronized after promoting $other: $(status_get $primary .state)"
    tmp=$primary; primary=$other; other=$tmp
    if [ "$i" -eq 2 ]; then
        sleep 1   # let the last role change's halves be released (a 100 ms tick)
        for n in alpha beta; do F0[$n]=$(fds $n) R0[$n]=$(rss_kb $n); done
    fi
done
pass "$CYCLES demote/promote cycles under a writer, each synchronized after"
sleep 1
for n in alpha beta; do
    f=$(fds $n) r=$(rss_kb $n)
    [ "$f" -le $((F0[$n] + 1)) ] \
        && pass "$n: open descriptors flat: ${F0[$n]} after cycle 2, $f after cycle $CYCLES" \
        || fail "$n: descriptors grew from ${F0[$n]} to $f"
    [ "$r" -le $((R0[$n] + 4096)) ] \
        && pass "$n: RSS flat: ${R0[$n]} kB after cycle 2, $r kB after cycle $CYCLES" \
        || fail "$n: RSS grew from ${R0[$n]} kB to $r kB"
done
demotes=$(( $(released alpha replicator) + $(released beta replicator) ))
promotes=$(( $(released alpha applier) + $(released beta applier) ))
check_eq "every demoted node released its replicator" "$CYCLES" "$demotes"
check_eq "every promoted node released its applier" "$CYCLES" "$promotes"

stop_pair
for i in $(seq 1 "$CYCLES"); do
    for n in alpha beta; do
        verify_writes "$n holds every write acknowledged in cycle $i" w$i --image "${NODE_IMG[$n]}" \
            $((i * WIN)) $WIN
    done
done
check_identical "after $CYCLES failover cycles"

finish
