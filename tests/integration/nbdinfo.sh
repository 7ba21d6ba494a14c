#!/bin/bash
# nbdinfo against mirrord: export listing, sizes, capability flags, read-only,
# and the base:allocation map of a file with known data and holes.
. "$(dirname "$0")/lib.sh"
require nbdinfo /usr/bin/python3 dd truncate

KiB=1024; MiB=$((1024 * 1024))

# rw export with a size that is not a power of two.
DISK_SIZE=$((10 * MiB + 12 * KiB))
truncate -s $DISK_SIZE "$T/disk.img"
# ro export with content.
RO_SIZE=$((1 * MiB))
head -c $RO_SIZE /dev/urandom >"$T/ro.img"
# Map export: data/holes at known, 4 KiB aligned places.
MAP_SIZE=$((8 * MiB))
truncate -s $MAP_SIZE "$T/map.img"
put() { # put OFFSET LENGTH: write random data
    dd if=/dev/urandom of="$T/map.img" bs=4096 count=$(($2 / 4096)) seek=$(($1 / 4096)) conv=notrunc,fsync status=none
}
put 0 $((64 * KiB))
put $((1 * MiB)) $((4 * KiB))
put $((4 * MiB - 8 * KiB)) $((16 * KiB))
put $((8 * MiB - 4 * KiB)) $((4 * KiB))
sync "$T/map.img"
# offset length type (0 = data, 3 = hole,zero), adjacent extents merged.
EXPECTED_MAP="0 65536 0
65536 983040 3
1048576 4096 0
1052672 3133440 3
4186112 16384 0
4202496 4182016 3
8384512 4096 0"

# Sanity check the test's own premise: the filesystem keeps the holes.
actual_alloc=$(alloc_bytes "$T/map.img")
[ "$actual_alloc" -le $((200 * KiB)) ] || skip "filesystem under $T does not keep holes (map.img allocates $actual_alloc bytes)"

LISTEN=(--listen 127.0.0.1:0 --listen "unix:$T/sock")
HAVE_V6=0
if [ -r /proc/net/if_inet6 ] && grep -q '^00000000000000000000000000000001' /proc/net/if_inet6 &&
   /usr/bin/python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1",0))' 2>/dev/null; then
    HAVE_V6=1
    LISTEN+=(--listen "[::1]:0")
fi

start_mirrord "${LISTEN[@]}" \
    --export disk="$T/disk.img" \
    --export-ro ro="$T/ro.img" \
    --export map="$T/map.img" \
    --description disk="Main rw disk" \
    --description ro="Read-only golden image"

check_eq "ready file lists one unix socket" "1" "${#UNIX_SOCKS[@]}"
check_eq "ready file lists $((1 + HAVE_V6)) tcp listener(s)" "$((1 + HAVE_V6))" "${#TCP_ADDRS[@]}"

for transport in tcp unix; do
    if [ $transport = tcp ]; then base=$(tcp_uri); uri() { tcp_uri "$1"; }
    else base=$(unix_uri); uri() { unix_uri "$1"; }; fi

    # --- listing -------------------------------------------------------
    if nbdinfo --list --json "$base" >"$T/list.$transport.json" 2>"$T/list.$transport.err"; then
        pass "[$transport] nbdinfo --list --json succeeds"
        check "[$transport] nbdinfo --list shows disk/ro/map with descriptions, sizes, ro flags" \
            /usr/bin/python3 - "$T/list.$transport.json" $DISK_SIZE $RO_SIZE $MAP_SIZE <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
disk, ro, mp = (int(x) for x in sys.argv[2:5])
ex = {e["export-name"]: e for e in j["exports"]}
errs = []
want = {
    "disk": dict(size=disk, desc="Main rw disk", ro=False),
    "ro": dict(size=ro, desc="Read-only golden image", ro=True),
    "map": dict(size=mp, desc=None, ro=False),
}
for name, w in want.items():
    e = ex.get(name)
    if e is None:
        errs.append(f"export {name!r} missing from list (got {sorted(ex)})")
        continue
    if e.get("export-size") != w["size"]:
        errs.append(f"{name}: export-size expected {w['size']} got {e.get('export-size')}")
    if w["desc"] is not None and e.get("description") != w["desc"]:
        errs.append(f"{name}: description expected {w['desc']!r} got {e.get('export-description')!r}")
    if e.get("is_read_only") != w["ro"]:
        errs.append(f"{name}: is_read_only expected {w['ro']} got {e.get('is_read_only')}")
    mn, pr, mx = (e.get("block_size_" + k) for k in ("minimum", "preferred", "maximum"))
    if mn is not None:
        p2 = lambda v: v > 0 and v & (v - 1) == 0
        if not (p2(mn) and p2(pr) and mn <= pr <= mx and mx >= 512):
            errs.append(f"{name}: insane block sizes min={mn} pref={pr} max={mx}")
extra = set(ex) - set(want) - {""}
if extra:
    errs.append(f"unexpected exports listed: {sorted(extra)}")
if errs:
    print(json.dumps(j)); print("\n".join(errs)); sys.exit(1)
EOF
    else
        fail "[$transport] nbdinfo --list --json $base failed: $(cat "$T/list.$transport.err")"
    fi
    # The human-readable listing a user reads.
    if nbdinfo --list "$base" >"$T/list.$transport.txt" 2>&1; then
        ok=1
        for s in 'export="disk"' 'export="ro"' 'export="map"' "description: Main rw disk" \
                 "description: Read-only golden image" "export-size: $DISK_SIZE" "export-size: $RO_SIZE"; do
            grep -qF "$s" "$T/list.$transport.txt" || { ok=0; fail "[$transport] nbdinfo --list text output lacks '$s'"; }
        done
        [ $ok = 1 ] && pass "[$transport] nbdinfo --list text output shows names, descriptions, sizes"
    else
        fail "[$transport] nbdinfo --list $base failed: $(cat "$T/list.$transport.txt")"
    fi

    # --- sizes -----------------------------------------------------------
    check_eq "[$transport] --size disk" "$DISK_SIZE" "$(nbdinfo --size "$(uri disk)" 2>&1)"
    check_eq "[$transport] --size ro" "$RO_SIZE" "$(nbdinfo --size "$(uri ro)" 2>&1)"
    check_eq "[$transport] --size map" "$MAP_SIZE" "$(nbdinfo --size "$(uri map)" 2>&1)"
    check_eq "[$transport] --size of default export (empty name) = first export" "$DISK_SIZE" "$(nbdinfo --size "$(uri "")" 2>&1)"

    # --- capability flags on the rw export ---------------------------------
    for cap in flush fua trim zero fast-zero cache multi-conn df structured-reply write read connect; do
        nbdinfo --can "$cap" "$(uri disk)" >"$T/can.out" 2>&1; rc=$?
        if [ $rc -eq 0 ]; then pass "[$transport] nbdinfo --can $cap (rw export) is true"
        else fail "[$transport] nbdinfo --can $cap (rw export): expected exit 0 (true), got $rc $(cat "$T/can.out")"; fi
    done
    nbdinfo --is read-only "$(uri disk)" >"$T/is.out" 2>&1; rc=$?
    check_eq "[$transport] nbdinfo --is read-only on rw export exits 2 (false) $(cat "$T/is.out")" 2 $rc

    # --- read-only export ----------------------------------------------------
    nbdinfo --is read-only "$(uri ro)" >"$T/is.out" 2>&1; rc=$?
    check_eq "[$transport] nbdinfo --is read-only on ro export exits 0 (true) $(cat "$T/is.out")" 0 $rc
    nbdinfo --can write "$(uri ro)" >"$T/is.out" 2>&1; rc=$?
    check_eq "[$transport] nbdinfo --can write on ro export exits 2 (false) $(cat "$T/is.out")" 2 $rc

    # --- map -----------------------------------------------------------------
    if nbdinfo --map --json "$(uri map)" >"$T/map.$transport.json" 2>"$T/map.err"; then
        got=$(/usr/bin/python3 - "$T/map.$transport.json" <<'EOF'
import json, sys
out = []
for e in json.load(open(sys.argv[1])):
    o, l, t = e["offset"], e["length"], e["type"]
    if out and out[-1][2] == t and out[-1][0] + out[-1][1] == o:
        out[-1][1] += l
    else:
        out.append([o, l, t])
print("\n".join(" ".join(map(str, x)) for x in out))
EOF
)
        if [ "$got" = "$EXPECTED_MAP" ]; then
            pass "[$transport] nbdinfo --map reports exactly the data/hole extents of the backing file"
        else
            fail "[$transport] nbdinfo --map extents differ (offset length type)"
            diff <(echo "$EXPECTED_MAP") <(echo "$got") | sed 's/^/    | /'
        fi
    else
        fail "[$transport] nbdinfo --map --json $(uri map) failed: $(cat "$T/map.err")"
    fi
    totals=$(nbdinfo --map --totals "$(uri map)" 2>&1)
    data_total=$(awk '$3 == 0 {print $1}' <<<"$totals")
    check_eq "[$transport] nbdinfo --map --totals data bytes" $((64 * KiB + 4 * KiB + 16 * KiB + 4 * KiB)) "$data_total"

    # --- unknown export --------------------------------------------------------
    if nbdinfo --size "$(uri no-such-export)" >"$T/nx.out" 2>&1; then
        fail "[$transport] nbdinfo on a non-existent export name unexpectedly succeeded: $(cat "$T/nx.out")"
    else
        pass "[$transport] nbdinfo on a non-existent export name fails"
    fi
    mirrord_alive || die "mirrord died during [$transport] checks"
done

# --- IPv6 listener --------------------------------------------------------------
if [ $HAVE_V6 = 1 ]; then
    v6=""
    for a in "${TCP_ADDRS[@]}"; do [[ "$a" == \[* ]] && v6=$a; done
    if [ -n "$v6" ]; then
        check_eq "[tcp6] --size disk over $v6" "$DISK_SIZE" "$(nbdinfo --size "nbd://$v6/disk" 2>&1)"
        nbdinfo --can multi-conn "nbd://$v6/disk" >/dev/null 2>&1
        check_eq "[tcp6] --can multi-conn over $v6" 0 $?
    else
        fail "ready file has no [v6]:port line although --listen [::1]:0 was given (${TCP_ADDRS[*]})"
    fi
else
    log "no IPv6 loopback: skipping [::1] listener checks"
fi

# The backing files are untouched by all this probing.
check_eq "map.img still allocates only the data extents" "$actual_alloc" "$(alloc_bytes "$T/map.img")"

stop_mirrord
finish
