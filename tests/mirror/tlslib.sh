# shellcheck shell=bash
# A test PKI for the TLS tests (tls.sh, tls-reload.sh), made with openssl
# req/x509 in $PKI (after pairlib.sh: uses T, die).
PKI=$T/pki
mkdir -p "$PKI"
# newkey NAME: an EC P-256 key only its owner can read.
newkey() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$1.key" 2>/dev/null ||
        die "openssl genpkey failed"
    chmod 600 "$PKI/$1.key"
}
# mkca NAME CN
mkca() {
    newkey "$1"
    openssl req -x509 -new -key "$PKI/$1.key" -out "$PKI/$1.pem" -subj "/CN=$2" -days 2 \
        2>/dev/null || die "openssl req (CA $1) failed"
}
# mkcert NAME CN CA DAYS [SUBJECT]: a certificate for CN (also its DNS
# subjectAltName) signed by CA, valid for DAYS days (-1: it expired a day
# before it began); SUBJECT defaults to /CN=CN.
mkcert() {
    newkey "$1"
    openssl req -new -key "$PKI/$1.key" -out "$PKI/$1.csr" -subj "${5:-/CN=$2}" 2>/dev/null ||
        die "openssl req ($1) failed"
    printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$2" >"$PKI/$1.ext"
    openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$3.pem" -CAkey "$PKI/$3.key" -CAcreateserial \
        -out "$PKI/$1.pem" -days "$4" -extfile "$PKI/$1.ext" 2>/dev/null || die "openssl x509 ($1) failed"
}
