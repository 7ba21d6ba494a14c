#!/bin/bash
# bitmap-corrupt: the primary's metadata (dirty bitmap) is damaged while it
# holds unreplicated writes (it wrote while the secondary was down, then
# stopped cleanly). Whatever the damage, the restarted primary says why in
# its log, stays primary, and copies the WHOLE volume to the secondary (it
# can no longer know which regions differ); afterwards the copies are
# identical. Three kinds of damage, each on a new pair:
#   truncate   the file cut to its two superblocks (maps missing)
#   dirty-map  16 bytes flipped in the middle of the dirty map block
#   superblock bytes flipped in both superblock slots
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=256M
VOL_EXTRA='initial-sync = "skip"'
SIZE=$(size_bytes "$VOL_SIZE")

# flip FILE OFFSET COUNT: xor COUNT bytes at OFFSET with 0xff.
flip() {
    "$PY" - "$@" <<'EOF'
import sys
path, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(n)
    f.seek(off)
    f.write(bytes(x ^ 0xFF for x in b))
EOF
}

# u64 FILE OFFSET: a big-endian u64 of the metadata file.
u64() { "$PY" -c 'import sys,struct; f=open(sys.argv[1],"rb"); f.seek(int(sys.argv[2])); print(struct.unpack(">Q", f.read(8))[0])' "$1" "$2"; }

# run KIND WHY-ERE
run() {
    local kind=$1 why=$2 meta=${NODE_META[alpha]} line
    log "---- $kind"
    kill_node alpha; kill_node beta
    rm -f "${NODE_META[alpha]}" "${NODE_META[beta]}" "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}"
    setup_pair
    start_pair
    wait_log alpha "peer 'beta' connected:" 30 >/dev/null || die "[$kind] the pair did not connect"
    wait_state alpha synchronized 60 >/dev/null || die "[$kind] the pair did not synchronize"

    # Unreplicated writes: beta down, alpha writes 4M in two places.
    stop_node beta
    if have_ctl; then
        wait_state alpha 'degraded|disconnected' 20 >/dev/null || fail "[$kind] alpha not degraded after beta stopped"
    fi
    check "[$kind] alpha writes with beta down" \
        "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((32 * MiB)) $((2 * MiB)) 3
    check "[$kind] alpha writes more with beta down" \
        "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((200 * MiB)) $((2 * MiB)) 4
    stop_node alpha

    # The damage.
    local sz dm
    sz=$(stat -c %s "$meta")
    case $kind in
        truncate) truncate -s 8192 "$meta" ;;
        dirty-map)
            dm=$(u64 "$meta" 112)   # superblock field dm_offset (blocks)
            flip "$meta" $((dm * 4096 + 2048)) 16 ;;
        superblock)
            flip "$meta" 40 64; flip "$meta" $((4096 + 40)) 64 ;;
    esac
    log "[$kind] alpha's metadata ($sz bytes) damaged"

    must_start alpha
    if line=$(wait_log alpha "$why" 5); then
        pass "[$kind] alpha's log says why: ${line#*: }"
    else
        fail "[$kind] alpha's log has no line matching /$why/"
        log_since alpha | grep -v debug | head -n 8 | sed 's/^/    | /'
    fi
    if log_since alpha | grep -q "primary on node 'alpha'"; then
        pass "[$kind] alpha is still the primary"
    else
        fail "[$kind] alpha lost its primary role with its metadata: $(log_since alpha | grep -oE "(primary|secondary) on node 'alpha'")"
        have_ctl && echo "    | alpha's status: $(node_status alpha | jq -c '{role, state, consistent, link, out_of_sync_bytes}')"
    fi
    must_start beta
    if line=$(wait_log alpha "peer 'beta' connected:" 20); then
        read -r -a plan <<<"$(plan_of alpha)"
        check_eq "[$kind] a full resync: the whole volume is copied (${plan[*]:0:${#plan[@]}-1})" \
            "$SIZE" "${plan[-1]:-0}"
    else
        fail "[$kind] alpha and beta did not agree on a resync within 20s"
        (log_since alpha; log_since beta) | grep -E 'warn|error' | tail -n 4 | sed 's/^/    | /'
        return
    fi
    wait_state alpha synchronized 120 >/dev/null && pass "[$kind] synchronized after the full resync" \
        || fail "[$kind] not synchronized 120s after the resync started"
    stop_node alpha
    stop_node beta
    check_identical "[$kind] after the full resync"
}

run truncate "metadata .*truncated"
run dirty-map "metadata.*(dirty|map|block)"
run superblock "metadata .*(superblock|slot|checksum|magic)"

pair_finish
