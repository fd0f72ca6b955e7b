# SPDX-License-Identifier: MIT
"""A backend session connection for the tests (docs/protocol.md section 5):
a real WebSocket client on GET /v1/backend that reports sessions in batches,
waits for each ack, and re-asserts its list with sync."""

import asyncio
import json

import websockets

from harness import API_KEY


class Backend:
    def __init__(self, ws, welcome, origin):
        self.ws = ws
        self.welcome = welcome
        self.origin = origin
        self.seq = 0
        self.notices = []  # "ended" and other frames that are not answers

    @classmethod
    async def connect(cls, d, origin, key=API_KEY, **kw):
        ws = await asyncio.wait_for(websockets.connect(
            f"ws://127.0.0.1:{d.port}/v1/backend?origin={origin}",
            extra_headers={"Authorization": "Bearer " + key}, ping_interval=None,
            max_size=2 ** 26, close_timeout=2, **kw), 6)
        # Notices held for a detached origin (a channel removal: "left")
        # come before the welcome, so that a backend re-asserting at the
        # welcome has dropped them already: kept in early.
        early = []
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
        while welcome.get("type") == "left":
            early.append(welcome)
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
        b = cls(ws, welcome, origin)
        b.early = early
        return b

    async def answer(self, seq, timeout=10.0):
        """The ack or error frame of batch seq (other frames are kept)."""
        while True:
            m = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if m.get("type") in ("ack", "error") and m.get("seq") == seq:
                return m
            self.notices.append(m)

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    async def batch(self, ops, timeout=10.0):
        self.seq += 1
        await self.send({"type": "batch", "seq": self.seq, "ops": ops})
        return await self.answer(self.seq, timeout)

    async def open_many(self, sessions, chunk=1000):
        """sessions: [(session id, user id)]; returns the acks."""
        acks = []
        for i in range(0, len(sessions), chunk):
            acks.append(await self.batch([{"op": "open", "session": s, "user": u}
                                          for s, u in sessions[i:i + chunk]]))
        return acks

    async def sync(self, sessions, chunk=1000):
        """Re-assert sessions ([(session id, user id)]) in frames of chunk;
        returns the acks, the last with opened/closed."""
        acks = []
        n = len(sessions)
        for i in range(0, max(n, 1), chunk):
            self.seq += 1
            part = [{"session": s, "user": u} for s, u in sessions[i:i + chunk]]
            await self.send({"type": "sync", "seq": self.seq, "sessions": part,
                             "done": i + chunk >= n})
            acks.append(await self.answer(self.seq))
        return acks

    async def close_code(self, timeout=3.0):
        """Read until the server closes; its close code."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except Exception:
            pass
        return self.ws.close_code

    def abort(self):
        """Drop the TCP connection with no close frame (a crashed backend)."""
        self.ws.transport.abort()

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 3)
        except Exception:
            pass


class EventTap:
    """Every event of GET /v1/events from the moment it is opened, read in
    the background and parsed on demand (linear in the bytes, for the tens
    of thousands of events of these tests)."""

    @classmethod
    async def open(cls, d):
        self = cls()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", d.port)
        self.writer.write((f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                           f"Authorization: Bearer {API_KEY}\r\n\r\n").encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.chunked = b"chunked" in head.lower()
        self.raw = bytearray()
        self.skip = 0  # events before mark(): left out of events()
        self.task = asyncio.ensure_future(self._pump())
        self.last_rx = asyncio.get_event_loop().time()
        return self

    async def _pump(self):
        try:
            while True:
                data = await self.reader.read(1 << 20)
                if not data:
                    return
                self.raw += data
                self.last_rx = asyncio.get_event_loop().time()
        except (ConnectionError, asyncio.CancelledError):
            return

    async def quiet(self, seconds, limit=60.0):
        """Wait until nothing arrived for seconds (at most limit)."""
        loop = asyncio.get_event_loop()
        start = loop.time()
        while loop.time() - start < limit:
            await asyncio.sleep(0.1)
            if loop.time() - self.last_rx >= seconds:
                return True
        return False

    def mark(self):
        """From now on events() leaves out the events received so far."""
        self.skip += len(self.events())

    def events(self):
        """The events so far (since mark()): a list of dicts (the JSON of
        each data line)."""
        raw = bytes(self.raw)
        body = bytearray()
        i = 0
        if not self.chunked:
            body, raw = bytearray(raw), b""
        while raw:  # de-chunk
            j = raw.find(b"\r\n", i)
            if j < 0:
                break
            size = int(raw[i:j].split(b";")[0] or b"0", 16)
            if size == 0 or len(raw) < j + 2 + size + 2:
                break
            body += raw[j + 2:j + 2 + size]
            i = j + 2 + size + 2
        out = []
        for line in body.decode("utf-8", "replace").split("\n"):
            if line.startswith("data: {"):
                try:
                    out.append(json.loads(line[6:]))
                except ValueError:
                    pass
        return out[self.skip:]

    def close(self):
        self.task.cancel()
        try:
            self.writer.close()
        except Exception:
            pass
