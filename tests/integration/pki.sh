# shellcheck shell=bash
# Test certificates made with openssl: a CA, and certificates it signs.
# Sourced after lib.sh (uses die); files go to $PKI (set it first).
#   mkca NAME CN                    $PKI/NAME.pem, $PKI/NAME.key
#   mkcert NAME CN CA DAYS [SAN] [SUBJECT] [EKU]
#                                   signed by CA, valid DAYS days (-1: it
#                                   expired a day before it began); SAN
#                                   defaults to DNS:CN, SUBJECT to /CN=CN,
#                                   EKU to serverAuth,clientAuth

# newkey NAME: an EC P-256 key only its owner can read.
newkey() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$1.key" 2>/dev/null ||
        die "openssl genpkey failed"
    chmod 600 "$PKI/$1.key"
}
mkca() {
    newkey "$1"
    openssl req -x509 -new -key "$PKI/$1.key" -out "$PKI/$1.pem" -subj "/CN=$2" -days 2 \
        2>/dev/null || die "openssl req (CA $1) failed"
}
mkcert() {
    newkey "$1"
    openssl req -new -key "$PKI/$1.key" -out "$PKI/$1.csr" -subj "${6:-/CN=$2}" 2>/dev/null ||
        die "openssl req ($1) failed"
    printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "${5:-DNS:$2}" "${7:-serverAuth,clientAuth}" \
        >"$PKI/$1.ext"
    openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$3.pem" -CAkey "$PKI/$3.key" -CAcreateserial \
        -out "$PKI/$1.pem" -days "$4" -extfile "$PKI/$1.ext" 2>/dev/null || die "openssl x509 ($1) failed"
}
