#!/usr/bin/env python3
"""Control-socket abuse for tests/mirror/ctl-client-limits.sh: ctl-flood.py SOCKET MODE [N]"""
import socket, sys, time, json, os
sock, mode = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 and mode != "raw" else 1
def conn():
    s = socket.socket(socket.AF_UNIX); s.connect(sock); return s
if mode == "idle":            # N idle connections, held until stdin closes / killed
    held = [conn() for _ in range(n)]
    print("holding", len(held), flush=True)
    time.sleep(float(os.environ.get("HOLD", "3600")))
elif mode == "stream":        # send N MiB without newline, never read
    s = conn(); chunk = b"a" * 65536; sent = 0
    s.settimeout(10)
    try:
        for i in range(n * 16):
            s.sendall(chunk); sent += len(chunk)
    except Exception as e:
        print("stream stopped after", sent, "bytes:", e)
    else:
        print("stream sent", sent, "bytes")
    time.sleep(float(os.environ.get("HOLD", "0")))
elif mode == "lines":         # N garbage lines pipelined, never read, then hold
    s = conn(); s.settimeout(10); sent = 0
    line = b'{"version":1,"command":"status","args":{}}\n'
    try:
        for i in range(n):
            s.sendall(line * 1000); sent += 1000
    except Exception as e:
        print("lines stopped after", sent, ":", e)
    else:
        print("lines sent", sent)
    time.sleep(float(os.environ.get("HOLD", "0")))
elif mode == "pipeline":      # N requests of argv[4] sent at once, every reply read
    import threading
    s = conn(); cmd = sys.argv[4] if len(sys.argv) > 4 else "status"
    line = json.dumps({"version": 1, "command": cmd, "args": {}}).encode() + b"\n"
    threading.Thread(target=lambda: s.sendall(line * n), daemon=True).start()
    s.settimeout(60); buf = b""; codes = {}; got = 0
    try:
        while got < n:
            d = s.recv(1 << 20)
            if not d: break
            buf += d
            *done, buf = buf.split(b"\n")
            for r in done:
                j = json.loads(r); got += 1
                k = "ok" if j.get("ok") else j.get("code", "?")
                codes[k] = codes.get(k, 0) + 1
    except Exception as e:
        print("stopped:", e)
    print("replies", got, " ".join(f"{k}={v}" for k, v in sorted(codes.items())), flush=True)
elif mode == "wait-close":    # one idle connection: what the daemon sends before it closes it
    s = conn(); s.settimeout(float(os.environ.get("HOLD", "120"))); t0 = time.monotonic(); got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d: break
            got += d
    except Exception as e:
        print("not closed:", e)
    print(f"closed after {time.monotonic() - t0:.0f} s:", got.decode(errors="replace").strip(), flush=True)
elif mode == "raw":           # one raw request from argv[3], print reply
    s = conn(); s.settimeout(10)
    try:
        s.sendall(sys.argv[3].encode() + b"\n")
    except OSError:
        pass    # closed first (a refused connection): its one line is still queued
    try:
        print(s.recv(65536).decode(errors="replace").strip()[:300])
    except Exception as e:
        print("no reply:", e)
