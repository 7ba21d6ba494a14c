#!/bin/bash
# tls-reload: rotating a node's certificate without restarting mirrord.
#   - beta's certificate and key are replaced in place and `mirrorctl
#     reload-tls` loads them: the link session running goes on with the old
#     certificate (alpha's status still shows it), the next session (the
#     rejoin after a split) uses the new one (alpha's status shows its
#     subject), and beta was never restarted;
#   - a bad file (a group-readable key) is refused with a message naming it,
#     and the certificate loaded before stays in use: the next session still
#     comes up;
#   - a writer through all of it: no failed write, every acknowledged write
#     on beta's copy.
. "$(dirname "$0")/pairlib.sh"
require openssl
have_ctl || skip "needs mirrorctl"
. "$(dirname "$0")/tlslib.sh"
mkca ca "mirrord test CA"
mkcert alpha alpha ca 2
mkcert beta-v1 beta ca 2
mkcert beta-v2 beta ca 2 DNS:beta "/O=rotated/CN=beta"
# beta's configured files: rotated by copying over them.
cp -p "$PKI/beta-v1.pem" "$PKI/beta.pem"
cp -p "$PKI/beta-v1.key" "$PKI/beta.key"

VOL_EXTRA="tls = true
tls-ca = \"$PKI/ca.pem\""
NODE_EXTRA[alpha]="tls-cert = \"$PKI/alpha.pem\"
tls-key = \"$PKI/alpha.key\""
NODE_EXTRA[beta]="tls-cert = \"$PKI/beta.pem\"
tls-key = \"$PKI/beta.key\""
start_synced_pair 120
beta_pid=${NODE_PID[beta]}
check_eq "alpha sees beta's first certificate" "CN = beta" "$(status_get alpha .link_security.peer_certificate)"

WIN_OFF=$((16 * MiB)) WIN=$((16 * MiB))
start_writer w "$(nbd_unix_uri alpha)" $WIN_OFF $WIN --qd 8

ctl() { local n=$1; shift; timeout 60 "$MIRRORCTL" --socket "${NODE_CTL[$n]}" "$@"; }
# new_session LABEL: split and rejoin: the rejoin reconnects the link.
new_session() {
    ctl alpha split >/dev/null || fail "$1: split failed"
    ctl alpha rejoin --wait >/dev/null || fail "$1: rejoin failed"
    check_eq "$1: synchronized" synchronized "$(status_get alpha .state)"
}

# ---------------------------------------------------- a good rotation --
cp "$PKI/beta-v2.pem" "$PKI/beta.pem"
cp "$PKI/beta-v2.key" "$PKI/beta.key"
out=$(ctl beta reload-tls 2>&1) && pass "reload-tls: $out" || fail "reload-tls failed: $out"
check_eq "the running session keeps the old certificate" "CN = beta" \
    "$(status_get alpha .link_security.peer_certificate)"
new_session "after the reload"
check_eq "the next session presents the new certificate" "O = rotated, CN = beta" \
    "$(status_get alpha .link_security.peer_certificate)"
kill -0 "$beta_pid" 2>/dev/null && pass "beta's mirrord was not restarted (pid $beta_pid still runs)" \
    || fail "beta's first mirrord (pid $beta_pid) is gone"

# --------------------------------------------------- a bad new key --
cp -p "$PKI/beta.key" "$PKI/beta.key.good"
chmod 640 "$PKI/beta.key"
out=$(ctl beta reload-tls 2>&1) && fail "reload-tls accepted a group-readable key: $out" \
    || pass "reload-tls refuses a group-readable key"
grep -q "tls-key \"$PKI/beta.key\" is readable by group or others" <<<"$out" \
    && pass "the refusal names the file and the problem" || fail "the refusal does not say why: $out"
grep -q "stay in use" <<<"$out" && pass "the refusal says the old files stay in use" \
    || fail "the refusal does not say what stays in use: $out"
new_session "after the refused reload"
check_eq "the certificate loaded before is still in use" "O = rotated, CN = beta" \
    "$(status_get alpha .link_security.peer_certificate)"
chmod 600 "$PKI/beta.key"

stop_writer w 60
check_eq "the writer saw no failed write" 0 "$WRITER_RC"
wait_state alpha synchronized 60 >/dev/null || fail "not synchronized at the end"
nbd_flush alpha
stop_pair
check_identical "copies after the rotations"
verify_writes "every acknowledged write is on beta's copy" w --image "${NODE_IMG[beta]}" $WIN_OFF $WIN
pair_finish
