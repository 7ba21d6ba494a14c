#!/bin/bash
# read-repair: the primary's disk cannot read a few sectors (bad sectors:
# MIRRORD_FAULTS=bad-sector=OFF:LEN, reads of the range fail with EIO until
# a write covers it, as a disk remaps a sector on write). What a user checks:
#   - while mirroring, a client's read of a bad sector succeeds with the right
#     data, answered by the secondary's copy; the sector is rewritten on the
#     primary, so the next read is served locally again; status counts it;
#   - the copies stay identical, and the link never drops for it;
#   - with the peer gone, or while split with the region changed since, the
#     secondary's copy cannot answer for it: the read fails with EIO (never
#     stale data), and the log says why;
#   - the same sector reads fine once the mirror is back and synchronized.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
A=$((1 * MiB)) B=$((3 * MiB)) C=$((5 * MiB)) D=$((7 * MiB)) E=$((9 * MiB)) F=$((11 * MiB)) SECTOR=4096
have_ctl || skip "read-repair needs mirrorctl"

# read_sha NODE OFFSET LENGTH: sha256 of an NBD read through NODE; prints
# "EIO" (exit 1) when the read fails.
read_sha() {
    "$PY" -c 'import hashlib,nbd,sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
try:
    print(hashlib.sha256(h.pread(int(sys.argv[3]), int(sys.argv[2]))).hexdigest())
except nbd.Error as e:
    print("EIO" if "EIO" in str(e) else "error: %s" % e); sys.exit(1)
h.shutdown()' "$(nbd_unix_uri "$1")" "$2" "$3"
}
# image_sha NODE OFFSET LENGTH: the same bytes straight from NODE's backing file.
image_sha() { backing_sha "$@"; }
no_link_drop() {
    local d
    d=$(link_drops alpha beta)
    [ -z "$d" ] && pass "$1: the link stayed up" || fail "$1: the link dropped: $d"
}

setup_pair
start_synchronized_pair
check "alpha writes 8 MiB of data at 0" "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" 0 $((8 * MiB)) 21
check_identical "before any read"
# The sectors go bad after they were written (a write would remap them).
stop_node alpha
start_with_faults alpha "bad-sector=$A:$SECTOR,bad-sector=$B:$SECTOR,bad-sector=$C:$SECTOR,bad-sector=$D:$SECTOR,bad-sector=$E:$SECTOR"
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize again"
log_mark alpha; log_mark beta

# 1. Mirroring: the read of a bad sector is answered by beta's copy, and the
#    sector rewritten on alpha. A 64 KiB read around it, so the client gets
#    the good data around the sector too.
want=$(image_sha beta $((A - 16384)) 65536)
check_eq "a 64 KiB read across alpha's bad sector at 1 MiB returns the data (from beta's copy)" \
    "$want" "$(read_sha alpha $((A - 16384)) 65536)"
wait_log alpha "reading $((A - 16384))\+65536 failed: .*reading the peer's copy" 5 >/dev/null \
    && pass "alpha logs the read error and that beta's copy answers it" \
    || fail "alpha does not log the read error"
wait_log alpha "$((A - 16384))\+65536 rewritten from the peer's copy" 5 >/dev/null \
    && pass "alpha logs the rewrite" || fail "alpha does not log the rewrite"
check_eq "alpha's status: 1 read answered by the peer, 1 rewritten, 1 disk error" "1 1 1" \
    "$(status_get alpha '"\(.reads_from_peer) \(.read_repairs) \(.local_io_errors)"')"
check_eq "the second read of that sector is served by alpha's own disk (rewritten)" \
    "$(image_sha beta $A $SECTOR)" "$(read_sha alpha $A $SECTOR)"
check_eq "alpha's status: still 1 read answered by the peer" 1 "$(status_get alpha .reads_from_peer)"
out=$(ctl alpha status)
grep -q "read errors.*1 read this disk failed answered by the peer's copy; 1 rewritten here" <<<"$out" \
    && pass "mirrorctl status shows the corrected read error" \
    || fail "mirrorctl status does not show it: $out"
check_eq "alpha's state is synchronized, nothing out of sync" "synchronized 0" \
    "$(status_get alpha '"\(.state) \(.out_of_sync_bytes)"')"
no_link_drop "a read error answered by the peer"
nbd_flush alpha
check_identical "after the repair"

# 2. The peer is gone: beta's copy cannot answer, and the read fails.
stop_node beta
wait_state alpha 'disconnected|degraded' 30 >/dev/null || fail "alpha did not notice beta stopped"
log_mark alpha
check_eq "with beta stopped, the read of the bad sector at 3 MiB fails with EIO" EIO \
    "$(read_sha alpha $B $SECTOR)"
wait_log alpha "reading $B\+$SECTOR failed: .*the mirror is not connected" 5 >/dev/null \
    && pass "alpha logs why the peer cannot answer" || fail "alpha does not say why"
check_eq "reads elsewhere still work with beta stopped" "$(image_sha alpha $((4 * MiB)) $MiB)" \
    "$(read_sha alpha $((4 * MiB)) $MiB)"
must_start beta
wait_state alpha synchronized 30 >/dev/null || fail "not synchronized after beta came back"
check_eq "beta back: the same read returns the data" "$(image_sha beta $B $SECTOR)" \
    "$(read_sha alpha $B $SECTOR)"
check_eq "alpha's status: 2 reads answered by the peer, 2 rewritten" "2 2" \
    "$(status_get alpha '"\(.reads_from_peer) \(.read_repairs)"')"

# 3. Split, and the region of the bad sector at 5 MiB changed since: beta's
#    copy of it is the split's image, older than alpha's. The read fails.
out=$(ctl alpha split) && pass "split: $out" || fail "split: $out"
check "a write next to the bad sector (same 64 KiB region) while split" \
    nbd_fill "$(nbd_unix_uri alpha)" $((C + 8192)) 4096 7
log_mark alpha
check_eq "split, region changed: the read of the bad sector fails with EIO (no stale data)" EIO \
    "$(read_sha alpha $C $SECTOR)"
wait_log alpha "reading $C\+$SECTOR failed: .*(the mirror is not connected|out of date)" 5 >/dev/null \
    && pass "alpha logs why beta's copy cannot answer" || fail "alpha does not say why"
# A client rewrites the sector (what fsck or the database would do): the
# disk remaps it; rejoin then resyncs the region.
check "the client rewrites the bad sector" nbd_fill "$(nbd_unix_uri alpha)" $C $SECTOR 9
out=$(ctl alpha rejoin --wait) && pass "rejoin: $out" || fail "rejoin: $out"
check_eq "after rejoin the sector reads back as written" \
    "$("$PY" -c 'import hashlib; print(hashlib.sha256(bytes([9]) * 4096).hexdigest())')" \
    "$(read_sha alpha $C $SECTOR)"
check_eq "alpha's status: still 2 reads answered by the peer" 2 "$(status_get alpha .reads_from_peer)"
nbd_flush alpha
check_identical "after the split, the rewrite and the rejoin"

# 4. A region the resync must copy holds a bad sector: the resync cannot
#    read it. It copies the rest, keeps that region out of sync and says
#    so, retries every 10 s (no busy loop), and finishes once a client write
#    remapped the sector.
out=$(ctl alpha split) && pass "split again: $out" || fail "split again: $out"
check "a write next to the bad sector at 7 MiB while split" \
    nbd_fill "$(nbd_unix_uri alpha)" $((D + 8192)) 4096 5
check "a write elsewhere while split" nbd_fill "$(nbd_unix_uri alpha)" $((12 * MiB)) 65536 6
log_mark alpha
out=$(ctl alpha rejoin) && pass "rejoin starts: $out" || fail "rejoin: $out"
wait_log alpha "resync: this node's disk could not read 1 chunk" 20 >/dev/null \
    && pass "alpha says the resync could not read a chunk and retries" \
    || fail "alpha does not say the resync could not read a chunk"
sleep 2
check_eq "alpha: resyncing, the region with the bad sector still out of sync" "resyncing 65536" \
    "$(status_get alpha '"\(.state) \(.out_of_sync_bytes)"')"
status_get alpha .last_error | grep -q "could not read 1 chunk(s) the peer lacks (65536 bytes out of sync)" \
    && pass "alpha's status names the problem" || fail "alpha's status: $(status_get alpha .last_error)"
n=$(log_since alpha | grep -c "resync: reading $D+")
[ "$n" -ge 1 ] && [ "$n" -le 2 ] && pass "the unreadable chunk was tried $n time(s) in 2 s (no busy loop)" \
    || fail "the unreadable chunk was tried $n times in 2 s"
check_eq "reading the bad sector meanwhile fails (the peer's copy is out of date)" EIO \
    "$(read_sha alpha $D $SECTOR)"
check "the client rewrites the bad sector" nbd_fill "$(nbd_unix_uri alpha)" $D $SECTOR 4
wait_state alpha synchronized 30 >/dev/null && pass "synchronized after the retry" \
    || fail "not synchronized 30 s after the sector was rewritten"
check_eq "alpha's last error is cleared" "" "$(status_get alpha .last_error)"
nbd_flush alpha
check_identical "after the resync that met a bad sector"

# 5. mirrorctl verify is a scrub too (md's "repair"): a bad sector on alpha
#    that no client read (9 MiB) is rewritten from beta's copy; one on beta
#    (11 MiB) is marked out of sync and resynced, which rewrites it there.
#    Verify works in 1 MiB chunks: each repair covers its chunk.
stop_node beta
start_with_faults beta "bad-sector=$F:$SECTOR"
wait_state alpha synchronized 30 >/dev/null || fail "not synchronized with beta's bad sector"
reads_before=$(status_get alpha .reads_from_peer)
out=$(ctl alpha verify --wait) && pass "verify --wait: $out" || fail "verify --wait: $out"
check_eq "verify: completed; 1 MiB rewritten on alpha, 1 MiB unreadable on beta, none left unread" \
    "completed 1048576 1048576 0" \
    "$(status_get alpha '"\(.verify.result) \(.verify.repaired_bytes) \(.verify.peer_unreadable_bytes) \(.verify.unreadable_bytes)"')"
out=$(ctl alpha status)
grep -q "1.0 MiB unreadable here, rewritten from the peer's copy; 1.0 MiB unreadable on the peer, resynced there" <<<"$out" \
    && pass "mirrorctl status shows what verify repaired" || fail "mirrorctl status: $out"
wait_state alpha synchronized 30 >/dev/null && pass "synchronized after the verify's resync" \
    || fail "not synchronized after the verify"
check_eq "the bad sector on alpha reads locally now" "$(image_sha beta $E $SECTOR) $reads_before" \
    "$(read_sha alpha $E $SECTOR) $(status_get alpha .reads_from_peer)"
out=$(ctl alpha verify --wait) && pass "a second verify: $out" || fail "a second verify: $out"
check_eq "the second verify finds nothing" "completed 0 0 0 0" \
    "$(status_get alpha '"\(.verify.result) \(.verify.out_of_sync_bytes) \(.verify.repaired_bytes) \(.verify.peer_unreadable_bytes) \(.verify.unreadable_bytes)"')"
nbd_flush alpha
check_identical "after the scrub"

pair_finish
