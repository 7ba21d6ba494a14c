# shellcheck shell=bash
# The test PKI of the pair TLS tests (tls.sh, tls-reload.sh): in $T/pki, with
# the helpers of ../integration/pki.sh (after pairlib.sh: uses T, die).
PKI=$T/pki
mkdir -p "$PKI"
. "$(dirname "${BASH_SOURCE[0]}")/../integration/pki.sh"
