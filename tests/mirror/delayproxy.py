#!/usr/bin/python3
"""A TCP forwarder that delays every byte by a configurable time, each way.

  delayproxy.py LISTEN_HOST:PORT TARGET_HOST:PORT DELAY_FILE READY_FILE

The delay (milliseconds, one way) is read from DELAY_FILE when it changes
(missing or empty: 0). Order is kept per direction. Used by the netns test
where the kernel has no netem qdisc: `tc qdisc ... netem delay 50ms` is
25 ms each way here. READY_FILE is written once listening.
"""

import asyncio
import os
import sys
import time


class Delay:
    def __init__(self, path):
        self.path, self.mtime, self.ms = path, None, 0.0

    def get(self):
        try:
            m = os.stat(self.path).st_mtime_ns
        except OSError:
            return 0.0
        if m != self.mtime:
            self.mtime = m
            try:
                self.ms = float(open(self.path).read().strip() or 0)
            except (OSError, ValueError):
                self.ms = 0.0
        return self.ms / 1000.0


async def pump(reader, writer, delay):
    q = asyncio.Queue()

    async def send():
        while True:
            due, data = await q.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            await q.put((time.monotonic() + delay.get(), data))
    except (ConnectionError, OSError):
        pass
    await q.put((0, None))
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def main():
    lh, lp = sys.argv[1].rsplit(":", 1)
    th, tp = sys.argv[2].rsplit(":", 1)
    delay = Delay(sys.argv[3])

    async def handle(cr, cw):
        try:
            tr, tw = await asyncio.wait_for(asyncio.open_connection(th, int(tp)), 3)
        except (OSError, asyncio.TimeoutError):
            cw.close()
            return
        a = asyncio.create_task(pump(cr, tw, delay))
        b = asyncio.create_task(pump(tr, cw, delay))
        # One side closing ends both (a dead peer must not linger).
        done, pending = await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        for w in (cw, tw):
            w.close()

    srv = await asyncio.start_server(handle, lh, int(lp), reuse_address=True)
    with open(sys.argv[4] + ".tmp", "w") as f:
        f.write("ready\n")
    os.rename(sys.argv[4] + ".tmp", sys.argv[4])
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
