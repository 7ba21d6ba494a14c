#!/bin/bash
# fua-stress-pair: the page-cache coherence workload of FUA writes
# (tests/integration/fuaworkload.py) through the primary of a synchronized
# pair. Both nodes write through FileBackend, whose lone aligned FUA writes go
# O_DIRECT beside buffered writes to the same pages (the secondary applies
# the primary's writes, FUA flags included, concurrently). Every request
# succeeds and every read matches the model; after a clean stop of both
# nodes, both backing files on disk (fsync, evicted, O_DIRECT read) equal the
# model byte for byte, and both nodes' logs show direct FUA writes (else the
# test proved nothing). SEED=N replays the workload, ROUNDS=N scales it.
. "$(dirname "$0")/pairlib.sh"

WORKLOAD=("$PY" "$MIRROR_DIR/../integration/fuaworkload.py")
VOL_SIZE=8M   # small: requests share pages often
SEED=${SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
ROUNDS=${ROUNDS:-4}
log "SEED=$SEED ROUNDS=$ROUNDS (replay with SEED=$SEED)"

setup_pair
# Initial data on alpha, nonzero everywhere: a stale page differs from new
# data. The initial full sync copies it to beta.
dd if=/dev/urandom of="${NODE_IMG[alpha]}" bs=1M count=8 conv=notrunc status=none
start_pair
wait_state alpha synchronized 120 >/dev/null || die "alpha: not synchronized after the initial sync"
wait_state beta synchronized 30 >/dev/null || die "beta: not synchronized after the initial sync"
pass "the pair is synchronized"

log_mark alpha
sent_args=()
if out=$("${WORKLOAD[@]}" run --uri "$(nbd_unix_uri alpha)" --state "$T/model" \
        --seed "$SEED" --rounds "$ROUNDS" \
        --evict "${NODE_IMG[alpha]}" --evict "${NODE_IMG[beta]}" 2>&1); then
    pass "workload through alpha: every request succeeded, every read and the final NBD view matched: $(echo "$out" | tail -n 1)"
    sent_args=(--sent "$(echo "$out" | tail -n 1 | python3 -c 'import json, sys; print(json.load(sys.stdin)["write_fua"])')")
else
    fail "workload through alpha (SEED=$SEED): $out"
fi
drops=$(link_drops alpha beta)
if [ -z "$drops" ]; then
    pass "the replication link held during the workload"
else
    fail "the link dropped during the workload: $(echo "$drops" | head -n 2)"
fi
if have_ctl; then
    check_eq "alpha still synchronized after the workload" synchronized "$(status_get alpha .state)"
fi

stop_node alpha
stop_node beta
[ -s "$T/model" ] || die "the workload saved no model"
for n in alpha beta; do
    check "$n's backing file on disk (fsync, evicted, O_DIRECT read) equals the model" \
        "${WORKLOAD[@]}" check-disk --state "$T/model" "${NODE_IMG[$n]}"
    if out=$(log_all "$n" | "${WORKLOAD[@]}" check-fua-stats "${sent_args[@]}" 2>&1); then
        pass "$n: $(echo "$out" | head -n 1): every FUA write the client sent, some of them direct"
    else
        fail "$n: $(echo "$out" | tr '\n' ' ')"
    fi
done
check_identical "after the workload and a clean stop"

pair_finish
