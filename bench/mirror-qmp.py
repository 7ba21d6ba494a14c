#!/usr/bin/env python3
"""Minimal QMP client for bench/mirror-bench.sh (python3 standard library only).

  mirror-qmp.py SOCKET start-mirror JOB SOURCE TARGET [TIMEOUT_S]
      blockdev-mirror sync=full copy-mode=write-blocking, then wait until the job is
      ready (BLOCK_JOB_READY / query-block-jobs ready=true). Prints the job as JSON.
  mirror-qmp.py SOCKET query-jobs      prints query-block-jobs
  mirror-qmp.py SOCKET nodes           prints query-named-block-nodes (name, driver, file)
"""
import json
import socket
import sys
import time


class QMP:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QMP socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r)
                continue
            if "error" in r:
                raise RuntimeError(f"{name}: {r['error']}")
            return r.get("return")


def main():
    path, what = sys.argv[1], sys.argv[2]
    q = QMP(path)
    if what == "start-mirror":
        job, src, tgt = sys.argv[3:6]
        timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 600
        q.cmd("blockdev-mirror", **{"job-id": job, "device": src, "target": tgt,
                                   "sync": "full", "copy-mode": "write-blocking"})
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            jobs = [j for j in q.cmd("query-block-jobs") if j["device"] == job]
            if not jobs:
                raise SystemExit(f"job {job} vanished; events: {q.events}")
            if jobs[0].get("ready"):
                jobs[0]["seconds_to_ready"] = round(time.monotonic() - t0, 3)
                print(json.dumps(jobs[0]))
                return
            time.sleep(0.05)
        raise SystemExit(f"job {job} not ready after {timeout} s")
    elif what == "query-jobs":
        print(json.dumps(q.cmd("query-block-jobs")))
    elif what == "nodes":
        print(json.dumps([{"node": n.get("node-name"), "drv": n.get("drv"),
                           "file": n.get("file")} for n in q.cmd("query-named-block-nodes")]))
    else:
        raise SystemExit(f"unknown command {what}")


if __name__ == "__main__":
    main()
