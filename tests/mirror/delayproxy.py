#!/usr/bin/python3
"""A TCP forwarder that delays, stalls, loses or blackholes traffic, each way.

  delayproxy.py LISTEN_HOST:PORT TARGET_HOST:PORT CONTROL_FILE READY_FILE

CONTROL_FILE is re-read when it changes (missing or empty: no fault):

  DELAY_MS [loss=PERCENT] [down] [seed=N]

  DELAY_MS    every byte is delayed this long, one way (netem's "delay 50ms"
              is 25 here); order is kept per direction
  loss=P      emulates P% packet loss as TCP shows it to applications: each
              forwarded chunk stalls with probability P/100 for 200-600 ms
              (a retransmission timeout), and one chunk in 20 of those resets
              the connection instead
  down        a partition: nothing is forwarded (data and connection closes
              wait) until the word is gone; new connections are accepted but
              carry nothing until then

LISTEN port 0 picks a free port. READY_FILE is written once listening, with
the bound address ("HOST:PORT"). Used by the mirror and fault tests because
the kernel here may have no netem qdisc (docs/reliability.md).
"""

import asyncio
import os
import random
import sys
import time


class Control:
    def __init__(self, path):
        self.path, self.mtime = path, None
        self.delay, self.loss, self.down = 0.0, 0.0, False
        self.rng = random.Random(0)

    def refresh(self):
        try:
            m = os.stat(self.path).st_mtime_ns
        except OSError:
            self.delay, self.loss, self.down = 0.0, 0.0, False
            return
        if m == self.mtime:
            return
        self.mtime = m
        try:
            words = open(self.path).read().split()
        except OSError:
            return
        delay, loss, down = 0.0, 0.0, False
        for i, w in enumerate(words):
            try:
                if i == 0 and w[0].isdigit():
                    delay = float(w) / 1000.0
                elif w.startswith("loss="):
                    loss = float(w[5:]) / 100.0
                elif w.startswith("seed="):
                    self.rng.seed(int(w[5:]))
                elif w == "down":
                    down = True
            except ValueError:
                pass
        self.delay, self.loss, self.down = delay, loss, down

    async def wait_up(self):
        while True:
            self.refresh()
            if not self.down:
                return
            await asyncio.sleep(0.05)


class Reset(Exception):
    pass


async def pump(reader, writer, ctl):
    q = asyncio.Queue()

    async def send():
        while True:
            due, data = await q.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await ctl.wait_up()
            if data is None:
                break
            if ctl.loss and ctl.rng.random() < ctl.loss:
                if ctl.rng.random() < 0.05:
                    raise Reset()
                await asyncio.sleep(ctl.rng.uniform(0.2, 0.6))
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            ctl.refresh()
            await q.put((time.monotonic() + ctl.delay, data))
    except (ConnectionError, OSError):
        pass
    await q.put((time.monotonic() + ctl.delay, None))
    await sender


async def main():
    lh, lp = sys.argv[1].rsplit(":", 1)
    th, tp = sys.argv[2].rsplit(":", 1)
    ctl = Control(sys.argv[3])

    async def handle(cr, cw):
        await ctl.wait_up()
        try:
            tr, tw = await asyncio.wait_for(asyncio.open_connection(th, int(tp)), 3)
        except (OSError, asyncio.TimeoutError):
            cw.close()
            return
        a = asyncio.create_task(pump(cr, tw, ctl))
        b = asyncio.create_task(pump(tr, cw, ctl))
        # One side closing (or a reset) ends both: a dead peer must not linger.
        done, pending = await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        reset = any(not t.cancelled() and isinstance(t.exception(), Reset) for t in done)
        for w in (cw, tw):
            if reset:
                w.transport.abort()
            else:
                w.close()

    srv = await asyncio.start_server(handle, lh, int(lp), reuse_address=True)
    host, port = srv.sockets[0].getsockname()[:2]
    with open(sys.argv[4] + ".tmp", "w") as f:
        f.write(f"{host}:{port}\n")
    os.rename(sys.argv[4] + ".tmp", sys.argv[4])
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
