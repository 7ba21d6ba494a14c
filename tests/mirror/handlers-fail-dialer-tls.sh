#!/bin/bash
# handlers-fail-dialer-tls: handlers-fail-dialer over TLS (see there).
MIRROR_TLS=1 exec bash "$(dirname "$0")/handlers-fail-dialer.sh"
