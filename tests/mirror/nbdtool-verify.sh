#!/bin/bash
# The write checker itself (nbdtool.py verify), on hand-built images and
# logs: a block missing its last acknowledged write is found, and with
# --acked-before only writes acknowledged before the cutoff are required
# (the soak's check of a secondary after its primary went on alone).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
/usr/bin/python3 -c 'import nbd' 2>/dev/null || { echo "SKIP: no python3-libnbd"; exit 77; }
/usr/bin/python3 - "$T" "$HERE" <<'PY' || exit 1
import subprocess, sys
T, here = sys.argv[1], sys.argv[2]
sys.path.insert(0, here)
import nbdtool
bs = 4096
img = bytearray(4 * bs)
img[0:bs] = nbdtool.block_data(7, 1, 0, bs)        # block 0 holds write 1, not its last (3)
img[bs:2 * bs] = nbdtool.block_data(7, 2, bs, bs)  # block 1 holds its last, write 2
open(f"{T}/img", "wb").write(img)
open(f"{T}/log", "w").write("S 7 4096\nA 1 0 1000\nA 2 4096 2000\nA 3 0 3000\nX stopped\n")
fails = 0
for extra, want in (([], 1), (["--acked-before", "3001"], 1), (["--acked-before", "3000"], 0),
                    (["--acked-before", "1500"], 0)):
    r = subprocess.run(["/usr/bin/python3", f"{here}/nbdtool.py", "verify", "--image", f"{T}/img",
                        "--log", f"{T}/log", "--offset", "0", "--window", str(4 * bs)] + extra,
                       capture_output=True, text=True)
    ok = r.returncode == want
    fails += not ok
    print(("PASS" if ok else "FAIL") + f": verify {' '.join(extra) or '(all acks)'} exits {r.returncode}, want {want}")
    if not ok:
        print(r.stdout + r.stderr)
sys.exit(1 if fails else 0)
PY
