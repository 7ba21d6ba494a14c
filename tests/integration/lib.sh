# shellcheck shell=bash
# Shared helpers for mirrord's client integration tests.
#
# Usage (from a test script):
#   . "$(dirname "$0")/lib.sh"
#   require nbdinfo
#   start_mirrord --listen 127.0.0.1:0 --listen "unix:$T/sock" --export disk="$T/disk.img"
#   ... checks using $PORT $HOST $SOCK $TCP_URI_BASE $UNIX_SOCK ...
#   stop_mirrord
#   finish
#
# Environment:
#   MIRRORD            path to the mirrord binary (required)
#   MIRRORD_LOG_LEVEL  log level passed to mirrord (default: debug)
#   KEEP_TMP=1         keep the temp dir for post-mortem
#   READY_TIMEOUT      seconds to wait for the ready file (default: 20)
#
# Exit codes: 0 all checks passed, 1 a check failed, 77 skipped (missing tool).

set -uo pipefail

TEST_NAME=$(basename "$0" .sh)
N_PASS=0
N_FAIL=0
MIRRORD_PID=""
MIRRORD_LOG=""
READY_FILE=""
PORT=""
HOST=""
SOCK=""
TCP_ADDRS=()
UNIX_SOCKS=()
_MIRRORD_N=0

log() { printf '[%s] %s\n' "$TEST_NAME" "$*" >&2; }

pass() {
    N_PASS=$((N_PASS + 1))
    printf '[%s] PASS: %s\n' "$TEST_NAME" "$*"
}

# Soft failure: record it, keep going so one run reports every broken check.
fail() {
    N_FAIL=$((N_FAIL + 1))
    printf '[%s] FAIL: %s\n' "$TEST_NAME" "$*"
}

# Hard failure: the test cannot meaningfully continue.
die() {
    printf '[%s] FATAL: %s\n' "$TEST_NAME" "$*"
    dump_mirrord_log
    N_FAIL=$((N_FAIL + 1))
    exit 1
}

skip() {
    printf '[%s] SKIP: %s\n' "$TEST_NAME" "$*"
    exit 77
}

require() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || skip "required tool '$c' not installed"
    done
}

# check DESCRIPTION CMD...: pass if CMD exits 0, otherwise fail with its output.
check() {
    local desc=$1; shift
    local out rc
    out=$("$@" 2>&1); rc=$?
    if [ $rc -eq 0 ]; then
        pass "$desc"
    else
        fail "$desc (command: $*; exit $rc)"
        [ -n "$out" ] && printf '%s\n' "$out" | tail -n 20 | sed 's/^/    | /'
    fi
    return $rc
}

# check_eq DESCRIPTION EXPECTED GOT
check_eq() {
    if [ "$2" = "$3" ]; then
        pass "$1"
    else
        fail "$1: expected '$2', got '$3'"
        return 1
    fi
}

_DUMPED_LOG=""
dump_mirrord_log() {
    if [ -n "$MIRRORD_LOG" ] && [ -f "$MIRRORD_LOG" ] && [ "$_DUMPED_LOG" != "$MIRRORD_LOG" ]; then
        _DUMPED_LOG=$MIRRORD_LOG
        printf '[%s] ---- mirrord log (%s, last 60 lines) ----\n' "$TEST_NAME" "$MIRRORD_LOG"
        tail -n 60 "$MIRRORD_LOG" | sed 's/^/    | /'
        printf '[%s] ---- end of mirrord log ----\n' "$TEST_NAME"
    fi
}

_cleanup() {
    local rc=$?
    if [ -n "$MIRRORD_PID" ] && kill -0 "$MIRRORD_PID" 2>/dev/null; then
        kill -KILL "$MIRRORD_PID" 2>/dev/null
        wait "$MIRRORD_PID" 2>/dev/null
    fi
    if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
        dump_mirrord_log
    fi
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        log "keeping temp dir $T"
    else
        rm -rf "$T"
    fi
    exit $rc
}

[ -n "${MIRRORD:-}" ] || { echo "[$TEST_NAME] FATAL: MIRRORD env var (path to the mirrord binary) is not set"; exit 1; }
[ -x "$MIRRORD" ] || { echo "[$TEST_NAME] FATAL: MIRRORD=$MIRRORD is not executable"; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/mirrord-it-$TEST_NAME.XXXXXX") || exit 1
trap _cleanup EXIT
trap 'exit 130' INT TERM

# start_mirrord ARGS...: start mirrord with ARGS plus --ready-file, wait for the
# ready file and parse it:
#   TCP_ADDRS[]  every "tcp" line (host:port, v6 hosts in brackets)
#   HOST, PORT   host and port of the first tcp listener
#   UNIX_SOCKS[] every "unix" line; SOCK = the first one
start_mirrord() {
    _MIRRORD_N=$((_MIRRORD_N + 1))
    READY_FILE="$T/ready.$_MIRRORD_N"
    MIRRORD_LOG="$T/mirrord.$_MIRRORD_N.log"
    rm -f "$READY_FILE"
    log "starting: $MIRRORD $* --ready-file $READY_FILE --log-level ${MIRRORD_LOG_LEVEL:-debug}"
    "$MIRRORD" "$@" --ready-file "$READY_FILE" --log-level "${MIRRORD_LOG_LEVEL:-debug}" \
        >"$MIRRORD_LOG" 2>&1 </dev/null &
    MIRRORD_PID=$!
    local deadline=$((SECONDS + ${READY_TIMEOUT:-20}))
    while [ ! -s "$READY_FILE" ]; do
        if ! kill -0 "$MIRRORD_PID" 2>/dev/null; then
            wait "$MIRRORD_PID"; local rc=$?
            MIRRORD_PID=""
            sed 's/^/    | /' "$MIRRORD_LOG" | tail -n 20
            die "mirrord exited (status $rc) before writing the ready file (its log above)"
        fi
        [ $SECONDS -lt $deadline ] || die "mirrord did not write the ready file $READY_FILE within ${READY_TIMEOUT:-20}s"
        sleep 0.05
    done
    TCP_ADDRS=(); UNIX_SOCKS=(); PORT=""; HOST=""; SOCK=""
    local kind addr
    while read -r kind addr; do
        case "$kind" in
            tcp) TCP_ADDRS+=("$addr") ;;
            unix) UNIX_SOCKS+=("$addr") ;;
            "") ;;
            *) die "unexpected line in ready file: '$kind $addr'" ;;
        esac
    done <"$READY_FILE"
    if [ ${#TCP_ADDRS[@]} -gt 0 ]; then
        PORT=${TCP_ADDRS[0]##*:}
        HOST=${TCP_ADDRS[0]%:*}
        if ! [[ "$PORT" =~ ^[0-9]+$ ]] || [ "$PORT" -eq 0 ]; then
            die "bad tcp address in ready file: ${TCP_ADDRS[0]}"
        fi
    fi
    if [ ${#UNIX_SOCKS[@]} -gt 0 ]; then
        SOCK=${UNIX_SOCKS[0]}
        [ -S "$SOCK" ] || die "ready file names unix socket $SOCK but it is not a socket"
    fi
    log "mirrord pid $MIRRORD_PID ready: tcp=${TCP_ADDRS[*]:-none} unix=${UNIX_SOCKS[*]:-none}"
}

# stop_mirrord: SIGTERM, wait (bounded), assert clean exit 0.
stop_mirrord() {
    [ -n "$MIRRORD_PID" ] || return 0
    if ! kill -0 "$MIRRORD_PID" 2>/dev/null; then
        wait "$MIRRORD_PID"; local rc=$?
        MIRRORD_PID=""
        fail "mirrord died before stop_mirrord (exit status $rc)"
        dump_mirrord_log
        return 1
    fi
    kill -TERM "$MIRRORD_PID"
    local deadline=$((SECONDS + ${STOP_TIMEOUT:-15}))
    while kill -0 "$MIRRORD_PID" 2>/dev/null && [ "$(ps -o stat= -p "$MIRRORD_PID" 2>/dev/null | cut -c1)" != Z ]; do
        if [ $SECONDS -ge $deadline ]; then
            fail "mirrord did not exit within ${STOP_TIMEOUT:-15}s of SIGTERM"
            dump_mirrord_log
            kill -KILL "$MIRRORD_PID"; wait "$MIRRORD_PID" 2>/dev/null
            MIRRORD_PID=""
            return 1
        fi
        sleep 0.05
    done
    wait "$MIRRORD_PID"; local rc=$?
    MIRRORD_PID=""
    if [ $rc -eq 0 ]; then
        pass "mirrord exits 0 on SIGTERM"
    else
        fail "mirrord exit status on SIGTERM: expected 0, got $rc"
        dump_mirrord_log
        return 1
    fi
}

mirrord_alive() {
    [ -n "$MIRRORD_PID" ] && kill -0 "$MIRRORD_PID" 2>/dev/null
}

# URIs for libnbd / qemu.
tcp_uri() { echo "nbd://$HOST:$PORT/${1:-}"; }
unix_uri() { echo "nbd+unix:///${1:-}?socket=$SOCK"; }

# fio_check OUTFILE WANT: fio's JSON shows no errors, no short or dropped I/O,
# and moved data in the directions WANT names ("w", "r", "rw").
fio_check() {
    /usr/bin/python3 - "$1" "$2" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
# fio may print warnings before the JSON document.
j = json.loads(text[text.index("{"):])
want, errs = sys.argv[2], []
for job in j["jobs"]:
    name = job["jobname"]
    if job["error"] != 0:
        errs.append(f"{name}: error={job['error']}")
    if job.get("total_err", 0) != 0:
        errs.append(f"{name}: total_err={job['total_err']}")
    for d in ("read", "write"):
        if job[d].get("short_ios", 0) or job[d].get("drop_ios", 0):
            errs.append(f"{name}: {d} short_ios={job[d].get('short_ios')} drop_ios={job[d].get('drop_ios')}")
    rb, wb = job["read"]["io_bytes"], job["write"]["io_bytes"]
    if "w" in want and wb == 0:
        errs.append(f"{name}: wrote nothing")
    if "r" in want and rb == 0:
        errs.append(f"{name}: read (verified) nothing")
    print(f"{name}: read {rb} bytes, wrote {wb} bytes, error {job['error']}, "
          f"write clat mean {job['write']['clat_ns']['mean'] / 1e6:.2f} ms")
if errs:
    print("\n".join(errs)); sys.exit(1)
EOF
}

# run_fio LABEL WANT [PREFIX-CMD...] -- FIO-ARGS...: fio (after PREFIX-CMD, e.g.
# ip netns exec NS) with JSON output, in $T (where it drops its *-verify.state
# files); pass/fail on its exit status and fio_check. FIO_OUT is the JSON file.
run_fio() {
    local label=$1 want=$2; shift 2
    local pre=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do pre+=("$1"); shift; done
    shift
    FIO_OUT="$T/fio.$(echo "$label" | tr -c 'a-zA-Z0-9' _ | cut -c1-60).json"
    local rc
    (cd "$T" && "${pre[@]}" fio --output-format=json --output="$FIO_OUT" "$@") >"$FIO_OUT.stderr" 2>&1; rc=$?
    if [ $rc -ne 0 ]; then
        fail "$label: fio exit status $rc (expected 0)"
        tail -n 20 "$FIO_OUT.stderr" | sed 's/^/    | /'
        grep -iE 'verify|err|bad' "$FIO_OUT" 2>/dev/null | head -n 10 | sed 's/^/    | /'
        return 1
    fi
    check "$label: fio reports zero errors" fio_check "$FIO_OUT" "$want"
}

# Allocated bytes of a file (st_blocks * 512).
alloc_bytes() { echo $(( $(stat -c %b "$1") * $(stat -c %B "$1") )); }

finish() {
    if mirrord_alive; then stop_mirrord; fi
    printf '%s: %d passed, %d failed\n' "$TEST_NAME" "$N_PASS" "$N_FAIL"
    [ "$N_FAIL" -eq 0 ] && exit 0 || exit 1
}
