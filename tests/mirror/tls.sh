#!/bin/bash
# tls: the replication link over TLS 1.3 (volume.tls = true), with
# certificates made here by openssl req/x509: a CA, one certificate per node
# naming the node, and the bad ones.
#   - a TLS pair full-syncs, mirrors a verified nbdtool workload, converges
#     (identical images, every acknowledged write on the secondary's copy),
#     and both logs say TLSv1.3;
#   - refused, with a log line saying who and why, no plan agreed and both
#     images unchanged: beta's certificate from another CA, expired, naming
#     another node; a plaintext peer either way round; a wrong secret inside
#     TLS (the HMAC is still required);
#   - a missing certificate or a group-readable key stops mirrord at start;
#   - mirrorctl status (JSON and table) shows the session: protocol, cipher,
#     peer certificate, certificate+hmac; a plaintext pair shows hmac only;
#   - no log holds the secret or a byte of a private key.
. "$(dirname "$0")/pairlib.sh"
require openssl dd

. "$(dirname "$0")/tlslib.sh"
mkca ca "mirrord test CA"
mkca rogue "another CA"
mkcert alpha alpha ca 2
mkcert beta beta ca 2
mkcert beta-rogue beta rogue 2
mkcert beta-expired beta ca -1
mkcert beta-gamma gamma ca 2
mkcert alpha-server alpha ca 2 "" "" serverAuth

TLS_EXTRA="tls = true
tls-ca = \"$PKI/ca.pem\""
# node_tls NODE CERT: NODE presents $PKI/CERT.pem (key $PKI/CERT.key).
node_tls() { NODE_EXTRA[$1]="tls-cert = \"$PKI/$2.pem\"
tls-key = \"$PKI/$2.key\""; }
node_tls alpha alpha
node_tls beta beta

# Each node reads its own file: A_MODE/B_MODE "tls" or "plain", beta's secret.
A_MODE=tls B_MODE=tls B_SECRET=$VOL_SECRET
# write_mode_config FILE MODE SECRET
write_mode_config() {
    local ea=${NODE_EXTRA[alpha]} eb=${NODE_EXTRA[beta]}
    if [ "$2" = plain ]; then
        NODE_EXTRA[alpha]=""; NODE_EXTRA[beta]=""
        VOL_EXTRA="" VOL_SECRET=$3 write_config "$1"
    else
        VOL_EXTRA=$TLS_EXTRA VOL_SECRET=$3 write_config "$1"
    fi
    NODE_EXTRA[alpha]=$ea; NODE_EXTRA[beta]=$eb
}
write_configs() {
    write_mode_config "$T/alpha.toml" "$A_MODE" "$VOL_SECRET"
    write_mode_config "$T/beta.toml" "$B_MODE" "$B_SECRET"
}
NODE_CFG[alpha]=$T/alpha.toml
NODE_CFG[beta]=$T/beta.toml
new_pair() { rm -f "${NODE_META[alpha]}" "${NODE_META[beta]}"; write_configs; }

setup_pair
dd if=/dev/urandom of="${NODE_IMG[alpha]}" bs=1M count=8 conv=notrunc status=none
dd if=/dev/urandom of="${NODE_IMG[beta]}" bs=1M count=8 seek=32 conv=notrunc status=none

# logged LABEL NODE TEXT: some log of NODE in this test holds TEXT (fixed).
logged() {
    local line
    # (not grep -m1: under pipefail, cat's SIGPIPE would fail the pipeline)
    line=$(log_all "$2" | grep -F -- "$3" | sed -n 1p)
    if [ -n "$line" ]; then
        pass "$1: ${line#*: }"
    else
        fail "$1: no '$3' in $2's logs"
    fi
}

# ------------------------------------------------------- refusals first --
# (a new pair: a connection would mean a full sync overwriting beta)

node_tls beta beta-rogue; new_pair
refused "beta's certificate is from another CA" \
    "certificate \(CN = beta\) was refused: unable to get local issuer certificate"
logged "[another CA] beta's log says alpha refused it" beta \
    "TLS handshake failed: the peer refused this node (tlsv1 alert unknown ca)"

node_tls beta beta-expired; new_pair
refused "beta's certificate has expired" "certificate \(CN = beta\) was refused: certificate has expired"
logged "[expired] beta warned at start that its own certificate expired" beta \
    "tls-cert \"$PKI/beta-expired.pem\" (CN = beta) expired on"

node_tls beta beta-gamma; new_pair
refused "beta's certificate names gamma" "certificate \(CN = gamma\) was refused: it does not name node 'beta'"
node_tls beta beta

# alpha's certificate is for servers only: refused when alpha dials (it
# does: its name sorts first), and alpha said so at start.
node_tls alpha alpha-server; new_pair
refused "alpha's certificate has no clientAuth" "certificate \(CN = alpha\) was refused: unsuitable certificate purpose"
logged "[serverAuth only] alpha warned at start that peers refuse it when it dials" alpha \
    "tls-cert \"$PKI/alpha-server.pem\" (CN = alpha) has no clientAuth extended key usage: peers refuse it when this node dials"
node_tls alpha alpha

B_MODE=plain; new_pair
refused "beta has tls off (plaintext), alpha on" "the peer speaks TLS, but tls is off on this node"
B_MODE=tls A_MODE=plain; new_pair
refused "alpha has tls off (plaintext), beta on" \
    "TLS handshake failed: the peer speaks the plaintext link protocol"
A_MODE=tls

# Both TLS, wrong secret on beta: TLS is up, the HMAC still refuses.
B_SECRET=another-secret-0123456789; new_pair
refused "TLS up, wrong secret on beta" "authentication failed"
logged "[wrong secret] the TLS session was up before the HMAC refused" alpha ": TLSv1.3 TLS_"
B_SECRET=$VOL_SECRET

# ------------------------------------------------- refused at start-up --

NODE_EXTRA[beta]="tls-cert = \"$PKI/missing.pem\"
tls-key = \"$PKI/beta.key\""; new_pair
start_node beta
check_eq "[missing certificate] mirrord exits 1" 1 "${NODE_EXIT[beta]:-running}"
logged "[missing certificate] the error names the file, node and certificate" beta \
    "beta.toml: node 'beta': tls-cert \"$PKI/missing.pem\": cannot load the certificate"

node_tls beta beta; chmod 640 "$PKI/beta.key"; new_pair
start_node beta
check_eq "[group-readable key] mirrord exits 1" 1 "${NODE_EXIT[beta]:-running}"
logged "[group-readable key] the error says what is wrong with which file" beta \
    "tls-key \"$PKI/beta.key\" is readable by group or others; run chmod 600"
chmod 600 "$PKI/beta.key"

# ------------------------------------------------ a mirrored TLS pair --

new_pair
sa=$(sha_of "${NODE_IMG[alpha]}")
start_pair
first_sync_consent alpha
wait_state alpha synchronized 120 >/dev/null || die "the TLS pair did not synchronize"
for n in alpha beta; do
    other=alpha; [ "$n" = alpha ] && other=beta
    line=$(log_since "$n" | grep -E "replication with .*: TLSv1\.3 TLS_[A-Z0-9_]+, peer CN = $other\$" | sed -n 1p)
    if [ -n "$line" ]; then
        pass "$n's log: ${line#* replication with }"
    else
        fail "$n: no TLSv1.3 session in the log"
    fi
done
check_eq "alpha's image unchanged by the full sync" "$sa" "$(sha_of "${NODE_IMG[alpha]}")"
# What the operator sees: mirrorctl status says the link is encrypted, with
# what, whose certificate, and that the secret was checked too.
for n in alpha beta; do
    other=alpha; [ "$n" = alpha ] && other=beta
    check_eq "[$n status] link encrypted" true "$(status_get $n .link_security.encrypted)"
    check_eq "[$n status] protocol" TLSv1.3 "$(status_get $n .link_security.protocol)"
    cipher=$(status_get $n .link_security.cipher)
    [[ "$cipher" =~ ^TLS_[A-Z0-9_]+$ ]] && pass "[$n status] cipher $cipher" || fail "[$n status] cipher '$cipher'"
    check_eq "[$n status] peer certificate" "CN = $other" "$(status_get $n .link_security.peer_certificate)"
    check_eq "[$n status] authentication" certificate+hmac "$(status_get $n .link_security.authentication)"
done
table=$("$MIRRORCTL" --socket "${NODE_CTL[alpha]}" status)
grep -qE "link security +TLSv1\.3 TLS_[A-Z0-9_]+, peer CN = beta; authenticated by certificate and shared secret" <<<"$table" \
    && pass "mirrorctl status (table) shows the TLS session" || fail "mirrorctl status lacks the TLS line: $table"

# Outside the random data written into the images above.
start_writer w1 "$(nbd_unix_uri alpha)" $((64 * MiB)) $((32 * MiB)) --duration 8 --qd 16
wait_writer w1 60
check_eq "the writer stopped on request with no failed write" 0 "$WRITER_RC"
acked=$(writer_field w1 acked)
[ "${acked:-0}" -gt 100 ] && pass "$acked writes acknowledged over the TLS link" ||
    fail "only ${acked:-0} writes acknowledged"
check "16 MiB written with a known pattern and flushed through the TLS pair" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((100 * MiB)) $((16 * MiB)) 7
wait_state alpha synchronized 60 >/dev/null || fail "the pair is not synchronized after the writes"
nbd_flush alpha
stop_pair
check_identical "TLS pair after the writes"
verify_writes "every acknowledged write is on beta's copy" w1 --image "${NODE_IMG[beta]}" $((64 * MiB)) $((32 * MiB))

# ------------------------------------ a plaintext pair, for comparison --

A_MODE=plain B_MODE=plain; new_pair
start_pair
first_sync_consent alpha
wait_state alpha synchronized 120 >/dev/null || die "the plaintext pair did not synchronize"
for n in alpha beta; do
    check_eq "[plaintext, $n status] link not encrypted" false "$(status_get $n .link_security.encrypted)"
    check_eq "[plaintext, $n status] authentication by the secret only" hmac "$(status_get $n .link_security.authentication)"
    check_eq "[plaintext, $n status] no peer certificate" null "$(status_get $n .link_security.peer_certificate)"
done
"$MIRRORCTL" --socket "${NODE_CTL[beta]}" status | grep -q "link security *NOT encrypted" \
    && pass "mirrorctl status (table) says the plaintext link is not encrypted" \
    || fail "mirrorctl status does not say the link is not encrypted"
stop_pair
# Started here, not inside $(...): a subshell's start_node would record the
# pid only there, and stop_node could not stop it.
must_start beta
check_eq "[stopped] no link, no link_security" null "$(status_get beta .link_security)"
stop_node beta
A_MODE=tls B_MODE=tls

# ------------------------------------------------------------ secrets --

leaks=""
grep -qF "$VOL_SECRET" "$T"/*.log && leaks="$leaks the secret;"
grep -qF another-secret-0123456789 "$T"/*.log && leaks="$leaks beta's wrong secret;"
for k in "$PKI"/*.key; do
    # Every base64 line of the key body, and the PEM marker.
    while read -r l; do
        [ ${#l} -ge 16 ] && grep -qF -- "$l" "$T"/*.log && leaks="$leaks a line of $(basename "$k");"
    done < <(grep -v -- '-----' "$k")
done
grep -q "PRIVATE KEY" "$T"/*.log && leaks="$leaks a PEM private key marker;"
if [ -z "$leaks" ]; then
    pass "no log holds the secret or any private key material ($(cat "$T"/*.log | wc -l) lines checked)"
else
    fail "the logs leak:$leaks"
fi

pair_finish
