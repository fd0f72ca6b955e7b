#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""
presenced against a Redis that answers wrongly or not at all (issue 17).

A TCP proxy in this test sits between presenced and a private redis-server
and, when told, replaces the reply to the store's user query with:
integers where strings belong (a proxy once crashed the daemon with that),
a status where an array belongs, an array header announcing 320,000,000
elements, half a reply then a closed connection; or stops forwarding
replies altogether. Each time GET /v1/users/{id} answers 503 (store error)
and the next request, once the store is back, answers 200 again; the daemon
never dies, and stops cleanly with no sanitizer report.

Run: /usr/bin/python3 tests/integration/test_redis_proxy.py --presenced PATH
"""

import asyncio
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Checks, Client, Daemon, http, parse_args,  # noqa: E402
                     sanitizer_report)
from test_redis_cluster import Redis  # noqa: E402


def resp_parse(buf, pos=0):
    """One RESP value from buf[pos:]: (value, end) or None if incomplete.
    Arrays are lists, bulk strings bytes, errors ("-", text)."""
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        return None
    t, line, nxt = buf[pos:pos + 1], buf[pos + 1:nl], nl + 2
    if t in (b"+", b"-"):
        return ((t.decode(), line), nxt)
    if t == b":":
        return (int(line), nxt)
    if t == b"$":
        n = int(line)
        if n < 0:
            return (None, nxt)
        if len(buf) < nxt + n + 2:
            return None
        return (buf[nxt:nxt + n], nxt + n + 2)
    if t == b"*":
        n = int(line)
        out = []
        for _ in range(max(n, 0)):
            r = resp_parse(buf, nxt)
            if r is None:
                return None
            v, nxt = r
            out.append(v)
        return (out if n >= 0 else None, nxt)
    raise ValueError(f"not RESP: {buf[pos:pos + 20]!r}")


async def frames(reader, on_data):
    """Each complete RESP value read from reader, as (value, its bytes);
    on_data(bytes) is awaited for every read first."""
    buf = b""
    while True:
        data = await reader.read(65536)
        if not data:
            return
        await on_data(data)
        buf += data
        while (r := resp_parse(buf)) is not None:
            value, end = r
            raw, buf = buf[:end], buf[end:]
            yield value, raw


CORRUPT = {
    "integers": b"*2\r\n:0\r\n*7\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n:1\r\n",
    "status": b"+OK\r\n",
    "huge": b"*320000000\r\n:1\r\n",
}


class Proxy:
    """Forwards TCP to the Redis socket; replaces the reply to the next
    command whose op (FCALL's fourth argument) is target, or stalls."""

    def __init__(self, sock):
        self.sock = sock
        self.mode = None
        self.target = "q_user"
        self.stalled = asyncio.Event()
        self.stalled.set()  # set: replies flow
        self.corrupted = 0
        self.server = None
        self.port = 0
        self.tasks = set()

    async def start(self):
        self.server = await asyncio.start_server(self.accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def accept(self, dr, dw):
        try:
            ur, uw = await asyncio.open_unix_connection(self.sock)
        except OSError:
            dw.close()
            return
        ops = []
        t1 = asyncio.ensure_future(self.up(dr, uw, ops))
        t2 = asyncio.ensure_future(self.down(ur, dw, ops))
        self.tasks |= {t1, t2}
        await asyncio.wait([t1, t2], return_when=asyncio.FIRST_COMPLETED)
        for t in (t1, t2):
            t.cancel()
        for w in (dw, uw):
            w.close()

    async def up(self, dr, uw, ops):
        async def forward(data):
            uw.write(data)
        async for cmd, _ in frames(dr, forward):
            name = cmd[0].upper() if isinstance(cmd, list) and cmd else b""
            # FCALL fn numkeys keys... op ... (FCALL_RO, a query's, and EVALSHA alike)
            at = (3 + int(cmd[2]) if name in (b"FCALL", b"FCALL_RO", b"EVALSHA")
                  and len(cmd) > 2 else 0)
            op = cmd[at] if at and len(cmd) > at else name
            # Queries asked while the store is busy go together (qbatch):
            # one holding the target is the target's reply.
            if op == b"qbatch" and self.target.encode() in cmd[at + 1:]:
                op = self.target.encode()
            ops.append(op.decode(errors="replace"))

    async def down(self, ur, dw, ops):
        async def hold(data):
            await self.stalled.wait()
        async for _, raw in frames(ur, hold):
            op = ops.pop(0) if ops else "?"
            if self.mode and op == self.target:
                mode, self.mode = self.mode, None
                self.corrupted += 1
                if mode == "truncate":
                    dw.write(raw[:len(raw) // 2])
                    await dw.drain()
                    return  # closes both sides
                raw = CORRUPT[mode]
            dw.write(raw)

    def stop(self):
        self.server.close()
        for t in self.tasks:
            t.cancel()


async def user_status(d, uid):
    r = await http(d, "GET", f"/v1/users/{uid}", timeout=10)
    return r.status, (r.json().get("status") if r.status == 200 else None)


async def back(d, uid, timeout=8.0):
    """Seconds until GET /v1/users/{uid} answers 200 online again."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        st = await user_status(d, uid)
        if st == (200, "online"):
            return time.monotonic() - t0
        await asyncio.sleep(0.1)
    return None


async def scenario(t, args):
    redis = Redis()
    redis.tls = False  # the proxy speaks to the socket in plain RESP
    redis.start()
    px = Proxy(redis.sock)
    await px.start()
    d = Daemon(args.presenced, {"--store": f"redis://127.0.0.1:{px.port}",
                                "--redis-heartbeat-ms": "200",
                                "--redis-lease-ms": "1000",
                                "--redis-timeout-ms": "500"}, "presenced")
    loop = asyncio.get_running_loop()
    try:
        # Blocking calls in a thread: the proxy runs on this loop.
        await loop.run_in_executor(None, d.start)
        c = await Client.connect(d, "alice")
        t.check("the user is online through the proxy", await back(d, "alice") is not None)
        for mode in ("integers", "status", "huge", "truncate"):
            px.mode = mode
            before = px.corrupted
            st = await user_status(d, "alice")
            t.check(f"{mode}: the user query answers 503", st[0] == 503 and
                    px.corrupted == before + 1, f"{st} corrupted={px.corrupted - before}")
            t.check(f"{mode}: presenced lives on", d.alive())
            took = await back(d, "alice")
            t.check(f"{mode}: the next queries answer 200 online again", took is not None)
            t.note(f"{mode}: back in {took} s")
        px.stalled.clear()
        t0 = time.monotonic()
        st = await user_status(d, "alice")
        took = time.monotonic() - t0
        t.check("stalled: the user query answers 503 within the timeout",
                st[0] == 503 and took < 3, f"{st} after {took:.2f} s")
        px.stalled.set()
        t.check("stalled: answers come back once Redis does",
                await back(d, "alice", 10) is not None)
        del c
        code = await loop.run_in_executor(None, d.stop)
        t.check("SIGTERM stops presenced with exit status 0", code == 0,
                f"exit={code} {d.stderr_tail(10)}")
        rep = sanitizer_report(d.stderr_text())
        t.check("no sanitizer report", not rep, rep)
    finally:
        if t.failed:
            for line in d.stderr_tail(20).splitlines():
                t.note(line)
        d.kill()
        d.cleanup()
        px.stop()
        redis.cleanup()


def main():
    args = parse_args()
    t = Checks()
    if not shutil.which("redis-server"):
        print("ok   - SKIP: redis-server not installed")
        print("1 passed, 0 failed")
        return 0
    asyncio.run(asyncio.wait_for(scenario(t, args), 120))
    print(f"{t.passed} passed, {t.failed} failed", flush=True)
    return 0 if t.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
