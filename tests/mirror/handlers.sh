#!/bin/bash
# handlers: DRBD's before-resync-target / after-resync-target on the
# secondary. A rejoin after a split, with a before-resync-target that
# snapshots the secondary's backing file (cp --sparse) and records its
# environment: it runs once, with the right environment, before any resync
# write (the snapshot is the split-time image, and the copy is still that
# image when the handler exits); after-resync-target runs once the copies
# converged; the copies end identical. An interrupted resync resumed (the
# primary killed mid-resync) does not run before-resync-target again: the
# copy is torn by then. A forced full sync into the consistent copy runs it
# (MIRROR_PLAN=full) and the primary plans FULL again after the refusal. The
# volume file's handler keys are checked at start.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=128M
BASE_EXTRA='initial-sync = "skip"
resync-rate = "16M"
handler-timeout = "30s"'
VOL_EXTRA=$BASE_EXTRA
have_ctl || skip "needs mirrorctl"

# before.sh: one line per run in before.env; a snapshot of the backing file;
# the backing file's checksum when it exits (nothing may write it meanwhile).
cat >"$T/before.sh" <<EOF
#!/bin/bash
n=\$(( \$(wc -l <"$T/before.env" 2>/dev/null || echo 0) + 1 ))
cp --sparse=always "\$MIRROR_BACKING" "$T/snap.\$n.img" || exit 9
sleep 1
echo "run=\$n volume=\$MIRROR_VOLUME node=\$MIRROR_NODE peer=\$MIRROR_PEER backing=\$MIRROR_BACKING plan=\$MIRROR_PLAN bytes=\$MIRROR_RESYNC_BYTES stdin=\$(readlink /proc/self/fd/0) at_exit=\$(sha256sum <"\$MIRROR_BACKING" | cut -d' ' -f1)" >>"$T/before.env"
EOF
# after.sh: one line per run, with the checksum of the backing file then.
cat >"$T/after.sh" <<EOF
#!/bin/bash
echo "volume=\$MIRROR_VOLUME node=\$MIRROR_NODE peer=\$MIRROR_PEER backing=\$MIRROR_BACKING plan=\${MIRROR_PLAN-unset} sha=\$(sha256sum <"\$MIRROR_BACKING" | cut -d' ' -f1)" >>"$T/after.log"
EOF
chmod 755 "$T/before.sh" "$T/after.sh"
runs() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
beta_inconsistent() { [ "$(status_get beta .consistent)" = false ]; }
resync_progressed() { [ "$(status_get alpha .resync.done_bytes)" -gt 0 ]; }
after_done() { [ "$(status_get beta .handlers.after_resync_target.running)" = false ]; }
after_runs_reach() { [ "$(runs "$T/after.log")" -ge "$1" ]; }

# --- 5. config errors: refused at start, the file and the key named
# refused_with LABEL KEY-LINE ERE: beta, with KEY-LINE in [volume], does not start.
refused_with() {
    VOL_EXTRA="$BASE_EXTRA
$2"
    write_configs
    start_refused "$1" beta "$3"
}
setup_pair
refused_with "a relative before-resync-target is refused" 'before-resync-target = "before.sh"' \
    "vol.toml: volume.before-resync-target: \"before.sh\" must be an absolute path"
refused_with "a missing after-resync-target is refused" "after-resync-target = \"$T/missing.sh\"" \
    "vol.toml: volume.after-resync-target: \"$T/missing.sh\" does not exist"
cp "$T/after.sh" "$T/noexec.sh"; chmod 644 "$T/noexec.sh"
refused_with "a before-resync-target that is not executable is refused" \
    "before-resync-target = \"$T/noexec.sh\"" \
    "vol.toml: volume.before-resync-target: \"$T/noexec.sh\" is not executable"

VOL_EXTRA="$BASE_EXTRA
before-resync-target = \"$T/before.sh\"
after-resync-target = \"$T/after.sh\""
write_configs
start_pair
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"
check_eq "a new pair (nothing resynced into beta's copy) runs no handler" 0 "$(runs "$T/before.env")"

# --- 1. split, write, rejoin: the snapshot is the split-time image
nbd_fill "$(nbd_unix_uri alpha)" $((4 * MiB)) $((4 * MiB)) 17 || die "write before the split"
out=$(ctl alpha split) || die "split: $out"
split_sha=$(sha_of "${NODE_IMG[beta]}")
nbd_fill "$(nbd_unix_uri alpha)" $((4 * MiB)) $((8 * MiB)) 42 || die "write after the split"
check_eq "beta's image is still the split-time image" "$split_sha" "$(sha_of "${NODE_IMG[beta]}")"
out=$(ctl alpha rejoin --wait) && pass "rejoin --wait: $out" || fail "rejoin: $out"
wait_state alpha synchronized 30 >/dev/null || fail "alpha not synchronized after rejoin"
check_eq "before-resync-target ran once" 1 "$(runs "$T/before.env")"
env1=$(sed -n 1p "$T/before.env")
check_eq "before-resync-target's environment" \
    "run=1 volume=db node=beta peer=alpha backing=${NODE_IMG[beta]} plan=bitmap bytes=$((8 * MiB)) stdin=/dev/null" \
    "${env1% at_exit=*}"
check_eq "the snapshot is the split-time image (taken before any resync write)" \
    "$split_sha" "$(sha_of "$T/snap.1.img")"
check_eq "beta's copy was untouched until before-resync-target exited" \
    "$split_sha" "${env1##* at_exit=}"
wait_for 10 test -s "$T/after.log" || fail "after-resync-target did not run"
check_eq "after-resync-target ran once" 1 "$(runs "$T/after.log")"
after1=$(sed -n 1p "$T/after.log")
check_eq "after-resync-target's environment" \
    "volume=db node=beta peer=alpha backing=${NODE_IMG[beta]} plan=unset" "${after1% sha=*}"
check_eq "after-resync-target ran after the copies converged" \
    "$(sha_of "${NODE_IMG[alpha]}")" "${after1##* sha=}"
st=$(node_status beta)
check_eq "beta's status counts one before-resync-target run" 1 \
    "$(jq -r .handlers.before_resync_target.runs <<<"$st")"
check_eq "beta's status: its result" "exit 0" \
    "$(jq -r .handlers.before_resync_target.last_result <<<"$st")"
check_eq "the copies converged" "$(sha_of "${NODE_IMG[alpha]}")" "$(sha_of "${NODE_IMG[beta]}")"
wait_for 10 after_done || fail "after-resync-target still running in beta's status"
check_eq "beta's mirrord reaped its handlers (no zombie child)" 0 \
    "$(ps --ppid "${NODE_PID[beta]}" -o stat= | grep -c '^Z')"

# --- 4. an interrupted resync resumed does not run it again
out=$(ctl alpha split) || die "split: $out"
nbd_fill "$(nbd_unix_uri alpha)" $((16 * MiB)) $((64 * MiB)) 99 || die "write after the second split"
out=$(ctl alpha rejoin) || fail "rejoin: $out"
wait_for 30 beta_inconsistent \
    || die "the resync into beta did not start"
check_eq "the second rejoin ran before-resync-target" 2 "$(runs "$T/before.env")"
wait_for 10 resync_progressed || fail "no resync progress"
kill_node alpha   # mid-resync (64 MiB at 16 MiB/s)
check_eq "beta's copy is inconsistent (the resync was interrupted)" false \
    "$(status_get beta .consistent)"
must_start alpha
wait_state alpha synchronized 60 >/dev/null || fail "the resumed resync did not finish"
check_eq "the resumed resync did not run before-resync-target again" 2 "$(runs "$T/before.env")"
wait_for 10 after_runs_reach 2 || fail "after-resync-target did not run"
check_eq "after-resync-target ran once more, after the resumed resync" 2 "$(runs "$T/after.log")"
stop_pair
check_identical "after the resumed resync"

# --- a full sync into a consistent copy (--force-full-sync): refused until
# the handler exited 0, then planned FULL again and run
must_start beta
must_start alpha --force-full-sync
wait_state alpha synchronized 60 >/dev/null || fail "the forced full sync did not finish"
check_eq "the full sync ran before-resync-target once more" 3 "$(runs "$T/before.env")"
env3=$(sed -n 3p "$T/before.env")
check_eq "... with MIRROR_PLAN=full" "plan=full" "$(grep -o 'plan=[a-z]*' <<<"$env3")"
check_eq "... and MIRROR_RESYNC_BYTES the volume's size" "bytes=$(size_bytes "$VOL_SIZE")" \
    "$(grep -o 'bytes=[0-9]*' <<<"$env3")"
grep -q "unrelated data" "$(node_log alpha)" \
    && fail "alpha took the refused full plan's retry for unrelated data" \
    || pass "alpha planned the full sync again after the refusal"
stop_pair
check_identical "after the full sync"
pair_finish
