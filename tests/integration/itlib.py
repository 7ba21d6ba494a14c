"""Shared harness for mirrord's Python integration tests (the Python twin of lib.sh).

Run the tests with /usr/bin/python3 (Debian's python3-libnbd lives there).

    from itlib import Harness
    H = Harness("nbdsh")
    srv = H.start("--listen", "127.0.0.1:0", "--listen", f"unix:{H.tmp}/sock", "--export", f"disk={path}")
    H.case("description", fn)   # fn raises AssertionError(msg) on failure
    H.finish()                  # stops servers (asserting exit 0 on SIGTERM), prints summary, exits

Environment: MIRRORD (binary, required), MIRRORD_LOG_LEVEL (default debug),
KEEP_TMP=1, READY_TIMEOUT (s, default 20).
Exit codes: 0 all passed, 1 something failed, 77 skipped.
"""

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

SKIP = 77


class Server:
    def __init__(self, harness, args):
        self.h = harness
        n = len(harness.servers) + 1
        self.ready_path = os.path.join(harness.tmp, f"ready.{n}")
        self.log_path = os.path.join(harness.tmp, f"mirrord.{n}.log")
        level = os.environ.get("MIRRORD_LOG_LEVEL", "debug")
        cmd = [harness.mirrord, *args, "--ready-file", self.ready_path, "--log-level", level]
        harness.log("starting: " + " ".join(cmd))
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=subprocess.STDOUT)
        self.stopped = False
        deadline = time.monotonic() + float(os.environ.get("READY_TIMEOUT", "20"))
        while not (os.path.exists(self.ready_path) and os.path.getsize(self.ready_path) > 0):
            rc = self.proc.poll()
            if rc is not None:
                self.stopped = True
                harness.fatal(f"mirrord exited (status {rc}) before writing the ready file\n" + self.log_tail())
            if time.monotonic() > deadline:
                harness.fatal(f"mirrord did not write {self.ready_path} in time\n" + self.log_tail())
            time.sleep(0.05)
        self.tcp = []   # [(host, port)], host without brackets
        self.unix = []  # [path]
        with open(self.ready_path) as f:
            for line in f:
                if not line.strip():
                    continue
                kind, addr = line.split(None, 1)
                addr = addr.strip()
                if kind == "tcp":
                    host, port = addr.rsplit(":", 1)
                    self.tcp.append((host.strip("[]"), int(port)))
                elif kind == "unix":
                    self.unix.append(addr)
                else:
                    harness.fatal(f"unexpected ready file line: {line!r}")
        harness.log(f"mirrord pid {self.pid} ready: tcp={self.tcp} unix={self.unix}")

    @property
    def pid(self):
        return self.proc.pid

    @property
    def host(self):
        return self.tcp[0][0]

    @property
    def port(self):
        return self.tcp[0][1]

    @property
    def sock(self):
        return self.unix[0]

    def uri(self, name="", transport="tcp"):
        if transport == "tcp":
            h = self.host
            if ":" in h:
                h = f"[{h}]"
            return f"nbd://{h}:{self.port}/{name}"
        return f"nbd+unix:///{name}?socket={self.sock}"

    def alive(self):
        if self.proc.poll() is not None:
            return False
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def status(self, key):
        """A numeric field of /proc/PID/status in kB (e.g. VmRSS)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise KeyError(key)

    def rss_kib(self):
        return self.status("VmRSS")

    def nfds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def fds(self):
        out = {}
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                out[int(fd)] = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                pass
        return out

    def log_tail(self, n=60):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()[-n:]
        except OSError:
            return ""
        return (f"---- mirrord log {self.log_path} (last {n} lines) ----\n" +
                "\n".join("    | " + l for l in lines) + "\n---- end of mirrord log ----")

    def stop(self, timeout=15):
        """SIGTERM and wait; returns the exit status (None if it had to be killed)."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.log_file.close()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stopped = True


class Harness:
    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0
        self.servers = []
        self.mirrord = os.environ.get("MIRRORD", "")
        if not self.mirrord:
            print(f"[{name}] FATAL: MIRRORD env var (path to the mirrord binary) is not set", flush=True)
            sys.exit(1)
        if not os.access(self.mirrord, os.X_OK):
            print(f"[{name}] FATAL: MIRRORD={self.mirrord} is not executable", flush=True)
            sys.exit(1)
        self.tmp = tempfile.mkdtemp(prefix=f"mirrord-it-{name}.", dir=os.environ.get("TMPDIR", "/tmp"))
        atexit.register(self._cleanup)

    def _cleanup(self):
        for s in self.servers:
            s.kill()
        if os.environ.get("KEEP_TMP") == "1":
            self.log(f"keeping temp dir {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def log(self, msg):
        print(f"[{self.name}] {msg}", file=sys.stderr, flush=True)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def start(self, *args):
        s = Server(self, list(args))
        self.servers.append(s)
        return s

    def require_module(self, name, package):
        """Import module name, or skip the test saying which package provides it."""
        try:
            return __import__(name)
        except ImportError:
            self.skip(f"{package} (import {name}) is not available for {sys.executable}")

    def passed_(self, msg):
        self.passed += 1
        print(f"[{self.name}] PASS: {msg}", flush=True)

    def fail(self, msg):
        self.failed += 1
        print(f"[{self.name}] FAIL: {msg}", flush=True)

    def fatal(self, msg):
        print(f"[{self.name}] FATAL: {msg}", flush=True)
        sys.exit(1)

    def skip(self, msg):
        print(f"[{self.name}] SKIP: {msg}", flush=True)
        sys.exit(SKIP)

    def case(self, title, fn, *args, **kwargs):
        """Run one check: fn raises AssertionError (or anything) on failure."""
        try:
            fn(*args, **kwargs)
        except AssertionError as e:
            self.fail(f"{title}: {e}")
            return False
        except Exception as e:  # noqa: BLE001 - report and keep going
            self.fail(f"{title}: unexpected {type(e).__name__}: {e}")
            print("    | " + traceback.format_exc().replace("\n", "\n    | "), flush=True)
            return False
        self.passed_(title)
        return True

    def stop_all(self):
        for s in self.servers:
            if s.stopped:
                continue
            if not s.alive():
                rc = s.stop()
                self.fail(f"mirrord pid {s.pid} died before the end of the test (exit status {rc})")
                print(s.log_tail(), flush=True)
                continue
            rc = s.stop()
            if rc == 0:
                self.passed_("mirrord exits 0 on SIGTERM")
            else:
                self.fail(f"mirrord exit status on SIGTERM: expected 0, got {rc}")
                print(s.log_tail(), flush=True)

    def finish(self):
        self.stop_all()
        if self.failed:
            for s in self.servers:
                print(s.log_tail(), flush=True)
        print(f"{self.name}: {self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(1 if self.failed else 0)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)
