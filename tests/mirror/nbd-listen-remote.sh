#!/bin/bash
# nbd-listen-remote: NBD clients are not authenticated, so a node's NBD
# listener must stay on loopback or a Unix socket unless the volume file asks
# for more by name (nbd-allow-remote = true in that [[node]] table):
#   - nbd-listen = ["0.0.0.0:0"] alone: mirrord refuses to start (exit 2),
#     the error names the file, the key and why; nothing is listening and the
#     image is unchanged;
#   - the same with nbd-allow-remote = true: it starts, listens on 0.0.0.0
#     and a real client (nbdinfo) reads the volume through it;
#   - nbd-allow-remote = "tls" without nbd-tls = "require": refused, naming
#     nbd-tls; with it (and a server certificate): a plaintext client is
#     refused, a TLS client reads the volume, and mirrorctl status --json
#     says {"nbd": {"tls": "require"}}.
. "$(dirname "$0")/pairlib.sh"
require nbdinfo openssl

setup_pair
dd if=/dev/urandom of="${NODE_IMG[alpha]}" bs=1M count=1 conv=notrunc status=none
sha=$(sha_of "${NODE_IMG[alpha]}")

NODE_NBD[alpha]='"unix:'"$T"'/alpha.nbd", "0.0.0.0:0"'
write_configs
start_node alpha
check_eq "a wildcard nbd-listen without consent: mirrord exits 2" 2 "${NODE_EXIT[alpha]:-running}"
want="$T/vol.toml: node[1].nbd-listen[2]: \"0.0.0.0:0\" is not a loopback address, and NBD clients are not authenticated"
if grep -qF -- "$want" "$(node_log alpha)"; then
    pass "the error names file, key and why: $(grep -F -- "$want" "$(node_log alpha)" | cut -c1-160)..."
else
    fail "no line '$want' in alpha's output: $(tail -n 3 "$(node_log alpha)")"
fi
if grep -qF "set nbd-allow-remote = true" "$(node_log alpha)"; then
    pass "the error says how to allow it"
else
    fail "the error does not name nbd-allow-remote"
fi
if [ -e "$T/alpha.nbd" ]; then fail "the refused node left a socket behind"; else pass "nothing was bound"; fi
check_eq "the image is unchanged" "$sha" "$(sha_of "${NODE_IMG[alpha]}")"

NODE_EXTRA[alpha]='nbd-allow-remote = true'
write_configs
must_start alpha
case "${NODE_TCP[alpha]}" in
    0.0.0.0:*) pass "with nbd-allow-remote = true it listens on ${NODE_TCP[alpha]}" ;;
    *) fail "expected a 0.0.0.0 listener, the ready file says '${NODE_TCP[alpha]}'" ;;
esac
port=${NODE_TCP[alpha]##*:}
size=$(nbdinfo --size "nbd://127.0.0.1:$port/$VOL_NAME" 2>&1)
check_eq "nbdinfo reads the volume's size through the remote-capable listener" \
    "$(size_bytes "$VOL_SIZE")" "$size"
stop_node alpha
check_eq "the image is unchanged after serving reads" "$sha" "$(sha_of "${NODE_IMG[alpha]}")"

NODE_EXTRA[alpha]='nbd-allow-remote = "tls"'
write_configs
start_node alpha
check_eq "nbd-allow-remote = \"tls\" without nbd-tls: mirrord exits 2" 2 "${NODE_EXIT[alpha]:-running}"
want="$T/vol.toml: node[1].nbd-tls: must be \"require\""
grep -qF -- "$want" "$(node_log alpha)" && pass "the error names nbd-tls" ||
    fail "no line '$want' in alpha's output: $(tail -n 3 "$(node_log alpha)")"

PKI=$T/pki
mkdir -p "$PKI"
. "$(dirname "$0")/../integration/pki.sh"
mkca ca "nbd test CA"
mkcert server localhost ca 2 "IP:127.0.0.1,DNS:localhost"
mkdir -p "$T/client"
cp "$PKI/ca.pem" "$T/client/ca-cert.pem"
NODE_EXTRA[alpha]="nbd-allow-remote = \"tls\"
nbd-tls = \"require\"
nbd-tls-cert = \"$PKI/server.pem\"
nbd-tls-key = \"$PKI/server.key\""
write_configs
must_start alpha
port=${NODE_TCP[alpha]##*:}
out=$(nbdinfo --size "nbd://127.0.0.1:$port/$VOL_NAME" 2>&1)
if [ $? -ne 0 ] && grep -qi tls <<<"$out"; then pass "a plaintext client is refused: TLS required"
else fail "plaintext client against nbd-tls = require: $out"; fi
check_eq "a TLS client reads the volume's size over nbds://" "$(size_bytes "$VOL_SIZE")" \
    "$(nbdinfo --size "nbds://127.0.0.1:$port/$VOL_NAME?tls-certificates=$T/client" 2>&1)"
if have_ctl; then
    check_eq "status --json shows the NBD listener requires TLS" "require false" \
        "$(status_get alpha '"\(.nbd.tls) \(.nbd.client_certificates)"')"
fi
stop_node alpha
check_eq "the image is unchanged" "$sha" "$(sha_of "${NODE_IMG[alpha]}")"

pair_finish
