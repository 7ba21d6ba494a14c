#!/bin/bash
# verify: `mirrorctl verify` (online verify, DRBD's drbdadm verify) on a
# real pair. A synchronized pair with data finds nothing; bytes changed
# behind the daemons' backs in either backing file (on region boundaries,
# across one, inside one) are found exactly, marked, resynced from the
# primary, and the files end byte-identical; a second verify finds nothing.
# Refused on the secondary, while split and with the link down. With
# MIRRORD_OLD (a mirrord built before verify), against such a peer: refused
# as unsupported, and the session and the mirroring go on untouched.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"
bitmap-granularity = "64K"'
G=$((64 * KiB))
require jq
have_ctl || skip "verify needs mirrorctl"
start_synchronized_pair

# verify_wait NODE ARGS...: verify --wait; its JSON result in $T/verify.json.
verify_wait() {
    local n=$1 out rc; shift
    out=$(ctl "$n" verify --wait "$@"); rc=$?
    printf '%s\n' "$out" >"$T/verify.json"
    [ $rc -eq 0 ] || { log "verify --wait $*: exit $rc: $out"; return 1; }
}
found() { jq -r .out_of_sync_bytes "$T/verify.json"; }

# --- 1. data written through the primary: both copies agree
nbd_fill "$(nbd_unix_uri alpha)" 0 $((16 * MiB)) 171 || die "writing through alpha failed"
timeout 60 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" events >"$T/events" 2>&1 &
BG_PIDS+=($!)
# wait_event ERE: a line of `mirrorctl events` matches.
wait_event() { local _; for _ in $(seq 100); do grep -q "$1" "$T/events" && return 0; sleep 0.1; done; return 1; }
wait_event '"volume"' || fail "mirrorctl events did not answer"
check "verify of a synchronized pair completes" verify_wait alpha
check "events reports the verify's end" wait_event '"event":"change".*"result":"completed"'
check_eq "it compared the whole volume" $((64 * MiB)) "$(jq -r .done_bytes "$T/verify.json")"
check_eq "it found nothing out of sync" 0 "$(found)"
check_eq "status shows the last verify completed" completed "$(status_get alpha .verify.result)"
check_eq "status: 0 regions found" 0 "$(status_get alpha .verify.out_of_sync_regions)"
check_eq "nothing was marked" 0 "$(status_get alpha .out_of_sync_bytes)"

# corrupt NODE: changes bytes of NODE's backing file, bypassing mirrord:
# O_DIRECT writes (the page cache copy is dropped, so mirrord's next read
# sees them) and one buffered byte (the page cache mirrord reads). Touches
# 6 regions of 64K: one at its start, one at its end, two across a
# boundary, one in its middle, one by a single byte.
corrupt() {
    local img=${NODE_IMG[$1]}
    dd if=/dev/urandom of="$img" bs=4096 seek=$((1 * MiB / 4096)) count=1 oflag=direct conv=notrunc status=none
    dd if=/dev/urandom of="$img" bs=4096 seek=$((2 * MiB / 4096 - 1)) count=1 oflag=direct conv=notrunc status=none
    dd if=/dev/urandom of="$img" bs=4096 seek=$((3 * MiB / 4096 - 1)) count=2 oflag=direct conv=notrunc status=none
    dd if=/dev/urandom of="$img" bs=4096 seek=$((5 * MiB / 4096 + 5)) count=1 oflag=direct conv=notrunc status=none
    printf '\x00' | dd of="$img" bs=1 seek=$((7 * MiB + 12345)) conv=notrunc,fsync status=none
}
CORRUPT_BYTES=$((6 * G))

# check_repair LABEL NODE: corrupt NODE, verify finds exactly those regions,
# resync copies alpha's data, the files end identical, a second verify is clean.
check_repair() {
    local label=$1 node=$2 base
    corrupt "$node"
    if cmp -s -n $((64 * MiB)) "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}"; then
        fail "$label: the corruption did not change $node's file"
    fi
    base=$(status_get alpha .resynced_bytes_total)
    check "$label: verify completes" verify_wait alpha
    check_eq "$label: verify reports exactly the corrupted regions' bytes" "$CORRUPT_BYTES" "$(found)"
    check_eq "$label: in 6 regions" 6 "$(jq -r .out_of_sync_regions "$T/verify.json")"
    if grep -qE "verify: 3080192\+65536 differs from the peer's copy" "${NODE_LOG[alpha]}"; then
        pass "$label: alpha logs each mismatch with its offset and length"
    else
        fail "$label: no log line for the mismatch at 3080192+65536"
    fi
    wait_state alpha synchronized 60 >/dev/null || fail "$label: alpha not synchronized after the repair"
    check_eq "$label: the repair copied exactly those regions" "$CORRUPT_BYTES" \
        "$(( $(status_get alpha .resynced_bytes_total) - base ))"
    check_eq "$label: nothing left out of sync" 0 "$(status_get alpha .out_of_sync_bytes)"
    check_identical "$label: after the repair"
    check "$label: a second verify completes" verify_wait alpha
    check_eq "$label: the second verify finds nothing" 0 "$(found)"
}

# --- 2. the secondary's copy changed behind its back
check_repair "secondary corrupted" beta
# --- 3. the primary's: verify cannot tell which side is right; like DRBD,
# the primary's data wins (it is what clients read).
check_repair "primary corrupted" alpha
check "beta's export now reads alpha's data (the primary's copy won)" \
    "$PY" - "$(nbd_unix_uri beta)" "${NODE_IMG[alpha]}" <<'PYEOF'
import sys, nbd
h = nbd.NBD(); h.connect_uri(sys.argv[1])
f = open(sys.argv[2], "rb"); f.seek(7 * 2**20); want = f.read(2**20)
sys.exit(0 if h.pread(2**20, 7 * 2**20) == want else 1)
PYEOF

# --- a range: --offset/--length, rounded out to whole regions
out=$(ctl alpha verify --wait --offset $((G + 100)) --length 10) \
    && pass "verify of a range: $(jq -c '{offset, total_bytes}' <<<"$out")" || fail "verify of a range: $out"
check_eq "the range grows to the region it touches" "$G $G" "$(jq -r '"\(.offset) \(.total_bytes)"' <<<"$out")"
refused_ctl "a range outside the volume" alpha "outside the volume" verify --offset $((64 * MiB))

# --- 5. refusals
refused_ctl "verify on the secondary" beta "runs on the primary" verify
# The timer unit (systemd/mirrord-verify@.timer) runs on both hosts with --if-primary.
runs_before=$(status_get alpha .verify.run)
out=$(ctl beta verify --wait --if-primary) && grep -q "not the primary: nothing to verify here" <<<"$out" \
    && pass "verify --if-primary on the secondary succeeds doing nothing: $out" \
    || fail "verify --if-primary on the secondary: $out"
check_eq "... and started no run on the primary" "$runs_before" "$(status_get alpha .verify.run)"
out=$(ctl alpha verify --wait --if-primary --offset 0 --length $G) \
    && check_eq "verify --if-primary on the primary runs it" completed "$(jq -r .result <<<"$out")" \
    || fail "verify --if-primary on the primary: $out"
out=$(ctl alpha split) || die "split failed: $out"
refused_ctl "verify while split" alpha "split" verify
out=$(ctl alpha rejoin --wait) || die "rejoin failed: $out"
check_eq "status after refusals: the last verify is still a range" $G "$(status_get alpha .verify.total_bytes)"
stop_node beta
wait_state alpha 'degraded|disconnected' 30 >/dev/null || fail "alpha did not see beta leave"
refused_ctl "verify with the link down" alpha "not connected" verify
must_start beta
wait_state alpha synchronized 60 >/dev/null || fail "alpha not synchronized after beta came back"

# --- a peer built before verify (its HELLO has no feature flags)
if [ -n "${MIRRORD_OLD:-}" ]; then
    stop_node beta
    MIRRORD=$MIRRORD_OLD must_start beta
    wait_state alpha synchronized 60 >/dev/null || fail "alpha and the old beta do not synchronize"
    log_mark alpha
    refused_ctl "verify against a peer without it" alpha "does not support verify" verify
    nbd_fill "$(nbd_unix_uri alpha)" $((20 * MiB)) $((1 * MiB)) 99 || fail "writing after the refusal failed"
    check_eq "the link stayed up" "" "$(link_drops alpha beta)"
    check_eq "still synchronized" synchronized "$(status_get alpha .state)"
    stop_pair
    check_identical "with the old peer"
else
    log "MIRRORD_OLD unset: the check against a mirrord built before verify is skipped"
fi

pair_finish
