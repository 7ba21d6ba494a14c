#!/bin/bash
# trim-unsupported: one node's backing store cannot punch holes (a block
# device without write-zeroes, a filesystem without FALLOC_FL_PUNCH_HOLE;
# here MIRRORD_FAULTS=trim-unsupported, which fails the node's TRIM with
# EOPNOTSUPP as FileBackend reports it). A TRIM punched on the other copy
# only would leave the two copies different. What a user checks:
#   - the client's TRIM succeeds (it is advisory);
#   - the first TRIM that finds the store is resynced, the link stays up, and
#     the copies are identical afterwards;
#   - further TRIMs change neither copy (no resync each time);
#   - once both stores can punch again (beta restarted without the fault),
#     TRIM punches both copies;
#   - the same with the primary's store the one that cannot.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'

# trim NODE OFFSET LENGTH: an NBD TRIM through NODE, then a FLUSH.
trim() {
    "$PY" -c 'import nbd,sys
h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.trim(int(sys.argv[3]), int(sys.argv[2])); h.flush(); h.shutdown()' \
        "$(nbd_unix_uri "$1")" "$2" "$3"
}

# region_sha IMAGE OFFSET LENGTH
region_sha() {
    "$PY" -c 'import hashlib,sys
f = open(sys.argv[1], "rb"); f.seek(int(sys.argv[2])); print(hashlib.sha256(f.read(int(sys.argv[3]))).hexdigest())' "$@"
}
ZERO_MIB=$("$PY" -c 'import hashlib; print(hashlib.sha256(bytes(1 << 20)).hexdigest())')

# no_link_drop LABEL: neither node lost the link since its log mark.
no_link_drop() {
    local d
    d=$(link_drops alpha beta; link_drops beta alpha)
    [ -z "$d" ] && pass "$1: the link stayed up" || fail "$1: the link dropped: $d"
}

setup_pair
must_start alpha
start_with_faults beta trim-unsupported
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"

check "alpha writes 4 MiB of data at 8 MiB" "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((8 * MiB)) $((4 * MiB)) 11
nbd_flush alpha
check_identical "before any TRIM"
log_mark alpha; log_mark beta

# 1. beta cannot punch: the first TRIM punches alpha's copy only; it is
#    resynced, and nothing else changes.
check "a TRIM of 1 MiB at 9 MiB through alpha succeeds" trim alpha $((9 * MiB)) $((1 * MiB))
line=$(wait_log alpha "TRIM $((9 * MiB))\+$((1 * MiB)) was applied on this copy only: resyncing it" 10) \
    && pass "alpha's log: ${line#*: }" || fail "alpha does not say the TRIM was applied on its copy only"
wait_log alpha "the peer's backing store cannot punch holes" 5 >/dev/null \
    && pass "alpha says the peer cannot punch holes" || fail "alpha does not say the peer cannot punch holes"
wait_state alpha synchronized 30 >/dev/null && pass "synchronized again after the TRIM's resync" \
    || fail "not synchronized 30s after the TRIM"
nbd_flush alpha
check_identical "after a TRIM that beta's store could not apply"
check_eq "the trimmed MiB reads as zeros on beta's copy too (resynced from alpha)" "$ZERO_MIB" \
    "$(region_sha "${NODE_IMG[beta]}" $((9 * MiB)) $MiB)"
no_link_drop "TRIM on a store that cannot punch"
check_eq "alpha's status: trim not applied, the peer's store cannot punch" peer-store-cannot-punch \
    "$(status_get alpha .trim)"
check_eq "beta's status: its store cannot punch" local-store-cannot-punch "$(status_get beta .trim)"
check_eq "beta logged no failed write" 0 "$(log_since beta | grep -c 'failed')"

# 2. Known now: a further TRIM changes neither copy.
before=$(region_sha "${NODE_IMG[alpha]}" $((10 * MiB)) $MiB)
log_mark alpha
check "a second TRIM, at 10 MiB, succeeds" trim alpha $((10 * MiB)) $((1 * MiB))
nbd_flush alpha
check_eq "the second TRIM left alpha's data in place" "$before" \
    "$(region_sha "${NODE_IMG[alpha]}" $((10 * MiB)) $MiB)"
check_identical "after the second TRIM"
check_eq "the second TRIM needed no resync" 0 "$(log_since alpha | grep -c 'resyncing it\|resync started')"

# 3. beta restarted with a store that punches: TRIM punches both copies.
stop_node beta
must_start beta
wait_state alpha synchronized 30 >/dev/null || fail "not synchronized after beta's restart"
log_mark alpha
check_eq "alpha's status: trim applied again (beta's new store punches)" applied "$(status_get alpha .trim)"
check "a TRIM at 10 MiB with both stores able to punch" trim alpha $((10 * MiB)) $((1 * MiB))
nbd_flush alpha
check_eq "alpha's copy reads zeros there" "$ZERO_MIB" "$(region_sha "${NODE_IMG[alpha]}" $((10 * MiB)) $MiB)"
check_eq "beta's copy reads zeros there" "$ZERO_MIB" "$(region_sha "${NODE_IMG[beta]}" $((10 * MiB)) $MiB)"
check_eq "and needed no resync" 0 "$(log_since alpha | grep -c 'resyncing it\|resync started')"

# 4. The primary's store is the one that cannot punch: beta punched, so
#    alpha's data is resynced back over beta's hole.
stop_node alpha
start_with_faults alpha trim-unsupported
wait_state alpha synchronized 30 >/dev/null || fail "not synchronized after alpha's restart"
check "alpha writes 1 MiB at 20 MiB" "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((20 * MiB)) $MiB 12
nbd_flush alpha
want=$(region_sha "${NODE_IMG[alpha]}" $((20 * MiB)) $MiB)
log_mark alpha; log_mark beta
check "a TRIM at 20 MiB through alpha succeeds" trim alpha $((20 * MiB)) $MiB
line=$(wait_log alpha "TRIM $((20 * MiB))\+$MiB was applied on the peer's copy only: resyncing it" 10) \
    && pass "alpha's log: ${line#*: }" || fail "alpha does not say the TRIM was applied on beta's copy only"
wait_state alpha synchronized 30 >/dev/null || fail "not synchronized 30s after the TRIM"
nbd_flush alpha
check_eq "alpha kept its data (its store cannot punch)" "$want" \
    "$(region_sha "${NODE_IMG[alpha]}" $((20 * MiB)) $MiB)"
check_identical "after a TRIM that alpha's store could not apply"
no_link_drop "TRIM with the primary's store unable to punch"
check_eq "alpha's status: its own store cannot punch" local-store-cannot-punch "$(status_get alpha .trim)"
ctl alpha status | grep -q "trim .*not applied: this node's backing store cannot punch holes" \
    && pass "mirrorctl status says TRIM is not applied, and why" \
    || fail "mirrorctl status does not show the trim line: $(ctl alpha status)"

pair_finish
