#!/bin/bash
# nbd-tls: NBD_OPT_STARTTLS on the exports (--nbd-tls), with certificates made
# here by openssl: a CA, the server's certificate (127.0.0.1 and localhost),
# a client certificate it signed, one from another CA.
#   - require + CA: nbdinfo and nbdcopy over nbds:// (TCP and unix) with
#     tls-certificates=DIR read and write; checksums of what went in, what
#     came back and the export file all agree; qemu-img with tls-creds-x509;
#   - refused, with the daemon still serving the next client: a plaintext
#     client (NBD_REP_ERR_TLS_REQD, "TLS required" in libnbd's words), a
#     client with a certificate from another CA, a client with none;
#   - optional, no CA: plaintext and TLS clients both served, no client cert;
#   - --nbd-tls without a certificate, or with a group-readable key, stops
#     mirrord with an error naming the option.
. "$(dirname "$0")/lib.sh"
require nbdinfo nbdcopy openssl sha256sum

PKI=$T/pki
mkdir -p "$PKI"
. "$(dirname "$0")/pki.sh"
mkca ca "nbd test CA"
mkca rogue "another CA"
mkcert server localhost ca 2 "IP:127.0.0.1,DNS:localhost"
mkcert client client ca 2
mkcert client-rogue client rogue 2

# clientdir NAME CERT: a libnbd/qemu tls-certificates directory trusting our
# CA and presenting $PKI/CERT (none when CERT is empty).
clientdir() {
    local d=$T/$1
    mkdir -p "$d"
    cp "$PKI/ca.pem" "$d/ca-cert.pem"
    if [ -n "$2" ]; then
        cp "$PKI/$2.pem" "$d/client-cert.pem"
        cp "$PKI/$2.key" "$d/client-key.pem"
        chmod 600 "$d/client-key.pem"
    fi
    echo "$d"
}
GOOD=$(clientdir good client)
ROGUE=$(clientdir rogue client-rogue)
NOCERT=$(clientdir nocert "")

MiB=$((1024 * 1024))
SIZE=$((16 * MiB))
truncate -s $SIZE "$T/disk.img"
head -c $SIZE /dev/urandom >"$T/in.img"

TLS_ARGS=(--nbd-tls-cert "$PKI/server.pem" --nbd-tls-key "$PKI/server.key")
start_mirrord --listen 127.0.0.1:0 --listen "unix:$T/sock" --export disk="$T/disk.img" \
    --nbd-tls require "${TLS_ARGS[@]}" --nbd-tls-ca "$PKI/ca.pem"
tls_uri() { echo "nbds://127.0.0.1:$PORT/disk?tls-certificates=$1"; }
tls_unix_uri() { echo "nbds+unix:///disk?socket=$SOCK&tls-certificates=$1"; }

# A served client: the export's size over TLS.
served() {
    local size
    size=$(nbdinfo --size "$(tls_uri "$GOOD")" 2>&1)
    check_eq "$1" "$SIZE" "$size"
}
served "nbdinfo over TLS with a client certificate reads the size"
grep -q "NBD over TLSv1.[23]" "$MIRRORD_LOG" && pass "the log names the TLS version" ||
    fail "no 'NBD over TLS' line in the log"

check "nbdcopy writes 16 MiB over nbds://" nbdcopy "$T/in.img" "$(tls_uri "$GOOD")"
check "nbdcopy reads it back over nbds+unix://" nbdcopy "$(tls_unix_uri "$GOOD")" "$T/out.img"
in_sum=$(sha256sum <"$T/in.img"); out_sum=$(sha256sum <"$T/out.img"); disk_sum=$(sha256sum <"$T/disk.img")
check_eq "what came back over TLS is what went in" "$in_sum" "$out_sum"
check_eq "the export file holds what went in" "$in_sum" "$disk_sum"

# A plaintext client: refused with TLS_REQD, nothing changed, others served.
out=$(nbdinfo --size "nbd://127.0.0.1:$PORT/disk" 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -qi "tls" <<<"$out"; then
    pass "a plaintext client is refused, and told TLS is required"
else
    fail "plaintext client: exit $rc, output: $out"
fi
grep -q "NBD_OPT_ABORT after being told TLS is required" "$MIRRORD_LOG" &&
    pass "the log says the plaintext client gave up after TLS_REQD" ||
    fail "no log line about the plaintext client's TLS_REQD"
out=$(printf 'x%.0s' $(seq 4096) | nbdcopy - "nbd://127.0.0.1:$PORT/disk" 2>&1); rc=$?
check_eq "a plaintext nbdcopy write is refused" "1" "$([ $rc -ne 0 ] && echo 1 || echo 0)"
check_eq "and the export is unchanged" "$in_sum" "$(sha256sum <"$T/disk.img")"
served "the daemon still serves a TLS client after the plaintext ones"

# Client certificates: one from another CA, and none at all.
out=$(nbdinfo --size "$(tls_uri "$ROGUE")" 2>&1); rc=$?
check_eq "a client certificate from another CA is refused" "1" "$([ $rc -ne 0 ] && echo 1 || echo 0)"
grep -q "certificate (CN = client) was refused" "$MIRRORD_LOG" &&
    pass "the log names the refused certificate" || fail "no log line names the refused certificate"
out=$(nbdinfo --size "$(tls_uri "$NOCERT")" 2>&1); rc=$?
check_eq "a client without a certificate is refused" "1" "$([ $rc -ne 0 ] && echo 1 || echo 0)"
served "the daemon still serves a good client after the refused ones"

if command -v qemu-img >/dev/null; then
    QOBJ="tls-creds-x509,id=tls0,dir=$GOOD,endpoint=client"
    out=$(qemu-img info --object "$QOBJ" --image-opts \
        "driver=nbd,host=127.0.0.1,port=$PORT,export=disk,tls-creds=tls0" 2>&1)
    grep -q "virtual size: 16 MiB" <<<"$out" && pass "qemu-img info over TLS (tls-creds-x509)" ||
        fail "qemu-img info over TLS: $out"
    head -c $MiB /dev/urandom >"$T/q.img"
    check "qemu-img convert writes over TLS" qemu-img convert -n --object "$QOBJ" -f raw "$T/q.img" \
        --target-image-opts "driver=nbd,host=127.0.0.1,port=$PORT,export=disk,tls-creds=tls0"
    check_eq "and the first MiB of the export is what qemu wrote" "$(sha256sum <"$T/q.img")" \
        "$(head -c $MiB "$T/disk.img" | sha256sum)"
else
    log "qemu-img not installed: qemu checks skipped"
fi
stop_mirrord

# optional, no CA: both kinds of client, no client certificate asked for.
start_mirrord --listen 127.0.0.1:0 --export disk="$T/disk.img" --nbd-tls optional "${TLS_ARGS[@]}"
check_eq "optional: a plaintext client is served" "$SIZE" \
    "$(nbdinfo --size "nbd://127.0.0.1:$PORT/disk" 2>&1)"
check_eq "optional: a TLS client without a certificate is served" "$SIZE" \
    "$(nbdinfo --size "$(tls_uri "$NOCERT")" 2>&1)"
stop_mirrord

# Bad settings stop mirrord before it serves anything.
bad_start() { # DESCRIPTION EXPECTED-TEXT ARGS...
    local desc=$1 want=$2; shift 2
    out=$("$MIRRORD" --listen 127.0.0.1:0 --export disk="$T/disk.img" "$@" 2>&1); rc=$?
    if [ $rc -ne 0 ] && grep -qF -- "$want" <<<"$out"; then pass "$desc"
    else fail "$desc: exit $rc, output: $out"; fi
}
bad_start "--nbd-tls require without a certificate is refused, naming --nbd-tls-cert" \
    "needs --nbd-tls-cert" --nbd-tls require
cp "$PKI/server.key" "$T/open.key"; chmod 644 "$T/open.key"
bad_start "a group-readable key is refused, naming nbd-tls-key" \
    "nbd-tls-key \"$T/open.key\" is readable by group or others" \
    --nbd-tls require --nbd-tls-cert "$PKI/server.pem" --nbd-tls-key "$T/open.key"
bad_start "a missing CA file is refused, naming nbd-tls-ca" "nbd-tls-ca \"$T/nosuch.pem\"" \
    --nbd-tls require "${TLS_ARGS[@]}" --nbd-tls-ca "$T/nosuch.pem"
finish
