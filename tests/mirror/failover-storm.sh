#!/bin/bash
# failover-storm: two "shells" send demote, promote (never --force), split
# and rejoin to either node at random for 60 s, while a third writes a
# marker into one of 16 1 MiB slots through whichever node is writable.
# Every command must return (timeout) with exit 0 or 1 and a message; the
# two nodes must never both be primary; no split brain may come of it; at
# the end (one primary, synchronized) both images are identical and every
# slot holds its last acknowledged marker.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "no mirrorctl"
VOL_SIZE=64M
VOL_ACK=2s
VOL_EXTRA='initial-sync = "skip"'
start_synced_pair 30
start_status_monitor "$T/mon.jsonl" alpha beta

mkdir -p "$T/cmds"
shell() { # shell NAME SEED SECONDS
    local name=$1 end=$((SECONDS + $3)) node cmd out rc
    RANDOM=$2
    while [ $SECONDS -lt $end ]; do
        node=$([ $((RANDOM % 2)) = 0 ] && echo alpha || echo beta)
        case $((RANDOM % 5)) in
            0|1) cmd=demote ;; 2|3) cmd=promote ;; 4) cmd=$([ $((RANDOM % 2)) = 0 ] && echo split || echo rejoin) ;;
        esac
        out=$(timeout 90 "$MIRRORCTL" --socket "${NODE_CTL[$node]}" $cmd 2>&1); rc=$?
        printf '%s %s %s rc=%d %s\n' "$(date +%T.%N | cut -c1-12)" "$node" "$cmd" $rc "$(tr '\n' ' ' <<<"$out" | cut -c1-250)" >>"$T/cmds/$name"
        sleep "0.$((RANDOM % 5))"
    done
}
marker() { # marker SECONDS: the markers, "SLOT BYTE ok|fail" in $T/markers
    local end=$((SECONDS + $1)) k b=1 n
    while [ $SECONDS -lt $end ]; do
        k=$((RANDOM % 16)); b=$((b % 250 + 1))
        for n in alpha beta; do
            [ "$(status_get "$n" '.role == "primary" and .writable')" = true ] || continue
            if nbd_fill "$(nbd_unix_uri "$n")" $((k * MiB)) $MiB $b >/dev/null 2>&1; then
                echo "$k $b ok $n" >>"$T/markers"
            else
                echo "$k $b fail $n" >>"$T/markers"
            fi
            break
        done
        sleep 0.1
    done
}
shell s1 11 60 & P1=$!
shell s2 22 60 & P2=$!
marker 62 & P3=$!
wait $P1 $P2 $P3
cat "$T"/cmds/s1 "$T"/cmds/s2 | sort >"$T/cmds.all"
log "$(wc -l <"$T/cmds.all") commands: $(awk '{print $3, $4}' "$T/cmds.all" | sort | uniq -c | tr -s ' \n' ' ')"
grep -E ' rc=1 ' "$T/cmds.all" | cut -d' ' -f2- | sed -E 's/[0-9a-f]{16}/G/g; s/[0-9]{4,}/N/g' | sort | uniq -c | sort -rn | head -n 20 | sed 's/^/    | /'
odd=$(grep -vE ' rc=[01] ' "$T/cmds.all" | head -n 5)
[ -z "$odd" ] && pass "every command returned 0 or 1" || fail "commands with another exit status (4: timed out, 124: hung): $odd"
log "markers: $(awk '{print $3}' "$T/markers" | sort | uniq -c | tr -s ' \n' ' ')"

# Two primaries: a node that says it is primary with a primary peer.
both=$(jq -r 'select(.ctl_failed == null and .role == "primary" and .peer_role == "primary") | .t + " " + .node' \
    "$T/mon.jsonl" | head -n 3 | tr '\n' ';')
[ -z "$both" ] && pass "no node ever saw itself and its peer primary" || fail "two primaries: $both"
check_no_divergence_logged

# Back to one synchronized primary.
for n in alpha beta; do log "$n: $(node_status $n | jq -c '{role,state,link,writable,last_error}')"; done
if [ "$(status_get alpha .role)" != primary ] && [ "$(status_get beta .role)" != primary ]; then
    out=$(ctl alpha promote) && log "promote alpha: $out" || fail "promote alpha at the end: $out"
fi
for n in alpha beta; do [ "$(status_get $n .state)" = split ] && ctl $n rejoin >/dev/null; done
P=$([ "$(status_get alpha .role)" = primary ] && echo alpha || echo beta)
if wait_state $P synchronized 60 >/dev/null; then
    pass "synchronized at the end ($P primary)"
else
    fail "not synchronized at the end: $(node_status $P | jq -c '{role,state,link,last_error}')"
fi
check_status_truth "[status]" "$T/mon.jsonl"
stop_pair
check_identical "after the storm"
# Every slot holds its last acknowledged marker (a failed one leaves it unknown).
"$PY" - "$T/markers" "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}" <<'PYEOF' >"$T/slots.out"
import sys
last = {}
for line in open(sys.argv[1]):
    k, b, res, _ = line.split()
    last[int(k)] = int(b) if res == "ok" else None
bad = []
for img in sys.argv[2:]:
    f = open(img, "rb")
    for k, b in sorted(last.items()):
        if b is None:
            continue
        f.seek(k << 20)
        d = f.read(1 << 20)
        if d != bytes([b]) * (1 << 20):
            bad.append(f"{img}: slot {k} should hold {b}, holds {sorted(set(d))[:4]}")
print("\n".join(bad) if bad else f"ok {sum(v is not None for v in last.values())}")
PYEOF
if grep -q '^ok' "$T/slots.out"; then
    pass "every slot holds its last acknowledged marker on both images ($(cut -d' ' -f2 "$T/slots.out") slots)"
else
    fail "acknowledged markers lost: $(head -n 4 "$T/slots.out")"
fi
pair_finish
