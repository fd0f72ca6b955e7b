# SPDX-License-Identifier: MIT
"""The backend session connection (docs/protocol.md section 5): one WebSocket
at /v1/backend over which this process reports the sessions it holds.

Operations are batched (one frame per loop turn, at most max_ops each) and
acknowledged by seq. The connection keeps the list of live sessions and their
channels itself: after every (re)connect it re-asserts the whole list (sync,
only net differences become events) and re-joins the channels, so operations
made while disconnected need no replay.

Needs the ``websockets`` package (the one dependency of this SDK, only for
this module: Debian's python3-websockets, or ``pip install presenced[backend]``).

asyncio::

    backend = BackendConnection(url, api_key, origin="api-1")
    await backend.connect()
    sid = backend.open("alice", meta={"name": "Alice"})
    backend.set_status(sid, "idle")
    await backend.flush()

from threads (Flask, Django)::

    backend = BackendConnection(url, api_key, origin="api-1").start_thread()
    sid = backend.open("alice")        # thread-safe
    backend.flush_sync()
"""
import asyncio
import base64
import http.client
import json
import os
import threading
import urllib.parse
import uuid
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from ._auth import bearer, check_url
from .errors import BackendRefused, PresenceError, _error_of
from .track import TrackedSession


class LeftNotice(NamedTuple):
    """A session of this origin taken out of a channel (protocol.md 5.4): by
    the API (``remove_from_channel``, reason ``"kicked"``), or a join or
    update that Redis refused after its ack (reason ``"refused"``, with the
    op's ``code``: ``too_many_channels``, ``no_session``, ``not_joined``,
    ``internal``, and a ``message``; both ``""`` for a removal)."""
    session: str
    user: str
    channel: str
    reason: str
    code: str = ""
    message: str = ""


class BackendConnection:
    def __init__(self, url: str, api_key: str, origin: str, *, retry_s: float = 0.25,
                 max_retry_s: float = 10.0, max_ops: int = 1000):
        # 1000 ops per frame: presenced spends about half the CPU per op it spends
        # in frames of 10,000 (bench/sdk_node_backend.js)
        check_url(url, "BackendConnection", ("http", "https", "ws", "wss"))
        # Checked here, when the connection is made, not at connect(): a name
        # presenced refuses (400 bad_origin) is a caller's bug (and None
        # failed in quote_from_bytes()).
        if (not isinstance(origin, str) or not 1 <= len(origin.encode()) <= 128
                or any(ord(c) < 0x20 or ord(c) == 0x7F for c in origin)):
            raise ValueError(f"BackendConnection: origin must be 1..128 bytes without control characters, "
                             f"stable per process (such as 'chat-1'), not {origin!r:.40}")
        base = url.rstrip("/").replace("http", "ws", 1)
        self.url = f"{base}/v1/backend?origin={urllib.parse.quote(origin, safe='')}"
        bearer(api_key)                  # refused here, not at connect
        self.api_key = api_key
        self.origin = origin
        self.retry_s, self.max_retry_s, self.max_ops = retry_s, max_retry_s, max_ops
        # session id -> {"user", "status", "meta", "device", "channels": {channel: data}}
        self.sessions: Dict[str, Dict[str, Any]] = {}
        self._left_while_down: Dict[str, set] = {}
        self._queue: List[Dict[str, Any]] = []
        self._inflight: Dict[int, List[Dict[str, Any]]] = {}
        self._frames: Dict[int, str] = {}    # seq -> the frame as sent, for a rate_limited one
        self._seq = 0
        self._ws = None
        self._ready = False
        self._closed = False
        self._taken_over = False
        self._fatal: Optional[PresenceError] = None    # origin_taken_over: why connect() cannot
        self._ended = False         # end() was called
        self._bye = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._flush_scheduled = False
        self._acked = None          # asyncio.Condition, made on the loop
        self._ready_event = None
        self._task = None
        self._pinger = None         # _ping_loop of the connection
        self._silent = 0            # its heartbeat, once it dropped a silent connection
        self.connects = 0
        self.welcome: Optional[Dict[str, Any]] = None
        self.stats = {"ops_sent": 0, "ops_acked": 0, "op_errors": 0}
        self.on_rejected: Optional[Callable[[Dict[str, Any], str, str], None]] = None
        self.on_ended: Optional[Callable[[str, Optional[str], str], None]] = None
        # (session, user, channel, reason): a session removed from a channel by
        # presenced's API (remove_from_channel); the channel has left its list.
        self.on_left: Optional[Callable[[str, str, str, str], None]] = None
        # on_left with the whole notice: a refused join's code and message,
        # which on_left's arguments cannot carry. When set, on_left is not called.
        self.on_left_notice: Optional[Callable[[LeftNotice], None]] = None
        self.on_error: Optional[Callable[[Exception], None]] = None
        # (welcome): every welcome, the first and each reconnect's, once the
        # re-assert is queued, as the Node SDK's 'ready' event (the end of an
        # outage, for a log or a metric).
        self.on_connect: Optional[Callable[[Dict[str, Any]], None]] = None

    # ---- running --------------------------------------------------------------

    async def connect(self) -> Dict[str, Any]:
        """Start (keeps reconnecting until end()); returns the first welcome."""
        if self._task is not None and self._task.done() and self._task.cancelled() and not self._ended:
            # The first connect() was given up on (asyncio.wait_for): try
            # again, as Go's Connect after its ctx ended (this raised the
            # CancelledError of the attempt given up on).
            self._closed, self._task = False, None
        if self._task is not None:
            # Started already. A second connect() (two start-up hooks) made a
            # second connection of this origin, which took the first over; the
            # first's stop then left neither sending. It now waits for the
            # same connection, as the Node and Go SDKs' do.
            return await self._wait_connected(first=False)
        self._loop = asyncio.get_running_loop()
        self._acked = asyncio.Condition()
        self._ready_event = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())
        return await self._wait_connected(first=True)

    async def _wait_connected(self, first: bool) -> Dict[str, Any]:
        if not self._task.done():
            if self._ready:
                return self.welcome
            waiter = asyncio.ensure_future(self._ready_event.wait())
            try:
                done, _ = await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                waiter.cancel()
                if first:
                    # Given up on (asyncio.wait_for, start_thread's timeout): stop
                    # reconnecting too, or the connection would come up later behind
                    # the caller's back and hold the origin beside its next attempt.
                    self._stop_connecting()
                    await asyncio.gather(self._task, return_exceptions=True)
                raise
            if self._task not in done:
                return self.welcome
            waiter.cancel()
        self._task.result()              # raises the fatal error (a refusal)
        if self._fatal is not None:
            raise self._fatal            # origin_taken_over
        if not first or self.welcome is None:
            raise RuntimeError("BackendConnection: ended (end() was called, or it stopped); make a new one")
        return self.welcome

    def _stop_connecting(self):
        self._closed = True
        if self._task is not None:
            self._task.cancel()

    def start_thread(self, timeout: float = 10.0) -> "BackendConnection":
        """Run the connection in a thread of its own (for threaded apps); the
        operations are then thread-safe. Returns once connected."""
        started = threading.Event()
        errors: List[BaseException] = []
        loop = asyncio.new_event_loop()
        connecting: List[asyncio.Future] = []

        def run():
            asyncio.set_event_loop(loop)

            async def main():
                try:
                    await self.connect()
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    errors.append(e)
            connecting.append(asyncio.ensure_future(main(), loop=loop))
            loop.run_until_complete(connecting[0])
            started.set()
            if not errors:
                # Runs until end_sync() stops it (after end() completed on it).
                self._thread_loop = True
                loop.run_forever()
            loop.close()
        thread = threading.Thread(target=run, daemon=True, name=f"presenced-backend-{self.origin}")
        thread.start()
        if not started.wait(timeout):
            # Cancelling connect() stops the reconnecting (see connect), then
            # the thread ends: nothing is left to connect later.
            loop.call_soon_threadsafe(lambda: [f.cancel() for f in connecting])
            thread.join(5)
            raise TimeoutError("presenced backend connection: no welcome")
        if errors:
            raise errors[0]
        return self

    def _connect_args(self):
        websockets = _websockets()
        headers = {"Authorization": bearer(self.api_key)}
        major = int(websockets.__version__.split(".")[0])
        if major >= 14:
            conn = websockets.connect(self.url, additional_headers=headers, compression=None, max_size=None)
        else:
            conn = websockets.connect(self.url, extra_headers=headers, compression=None, max_size=None)
        # Follow no redirect, as the Node SDK's ws does not: websockets carried
        # the API key to any host a redirect named. Refused, it is retried.
        if hasattr(conn, "process_redirect"):    # the asyncio client (14 and later)
            conn.process_redirect = lambda exc: exc
        else:                                    # the legacy client: one attempt, no redirect
            conn.MAX_REDIRECTS_ALLOWED = 1
        return conn

    def _refusal_body(self) -> bytes:
        """The body of presenced's refusal of this connection's upgrade, asked
        again over http.client (for a websockets that keeps none); b"" when
        it cannot be had. Follows no redirect, as the connection does not."""
        u = urllib.parse.urlsplit(self.url)
        cls = http.client.HTTPSConnection if u.scheme == "wss" else http.client.HTTPConnection
        conn = cls(u.hostname, u.port, timeout=5)
        try:
            conn.request("GET", f"{u.path}?{u.query}", headers={
                "Authorization": bearer(self.api_key), "Upgrade": "websocket", "Connection": "Upgrade",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), "Sec-WebSocket-Version": "13"})
            res = conn.getresponse()
            return res.read(4096) if res.status >= 400 else b""
        except (OSError, http.client.HTTPException):
            return b""
        finally:
            conn.close()

    async def _run(self):
        _websockets()
        delay = self.retry_s
        while not self._closed:
            try:
                async with self._connect_args() as ws:
                    self._ws = ws
                    delay = self.retry_s
                    async for raw in ws:
                        self._on_message(json.loads(raw))
            except Exception as e:  # noqa: BLE001
                status = getattr(e, "status_code", None) or getattr(getattr(e, "response", None), "status_code", None)
                # 409 bad_origin: a reserved origin name ("http", the origin of
                # PUT /v1/sessions), which was retried for ever.
                if status in (400, 401, 409):
                    self._closed = True
                    # The daemon's code and message: websockets 14+ keeps the
                    # body of the refusal; before 14 (Debian 12 has 10.4) it
                    # keeps none, and the error said "presenced refused the
                    # backend connection: 401" instead of the daemon's
                    # message: the refusal is then asked for again.
                    body = getattr(getattr(e, "response", None), "body", None)
                    if body is None:
                        body = await asyncio.get_running_loop().run_in_executor(None, self._refusal_body)
                    err = _error_of(body or b"") or {}
                    refused = BackendRefused(status, err.get("code") or {401: "unauthorized", 409: "bad_origin"}.get(status, "bad_request"),
                                             err.get("message") or f"presenced refused the backend connection: {status}")
                    refused.__cause__ = e
                    self._fatal = refused
                    if self.connects == 0:
                        raise refused        # connect() raises it
                    # Refused on a reconnect (the API key rotated, presenced
                    # restarted with another): it stopped without a word (an
                    # exception in a task no one awaits), where the Node SDK
                    # emits 'fatal' and the Go SDK calls OnError.
                    if self.on_error:
                        self.on_error(refused)
                    break
                if getattr(getattr(e, "rcvd", None), "code", None) == 4009:
                    self._taken_over = True
                elif self.on_error and not self._closed:
                    if self._silent:         # dropped by _ping_loop: say why
                        e = PresenceError(0, "network", f"presenced answered no ping for {self._silent} ms: reconnecting")
                    self.on_error(e)
            finally:
                self._silent = 0
                self._on_close()
            if self._taken_over:
                # Another process connected with this origin: only another
                # process can take over a live connection of ours, and taking it
                # back starts a loop in which each sync ends the other's
                # sessions. The newer one keeps it; this one stops, as the Node
                # and Go SDKs' do (operations now change the local list only),
                # and says so once, with the same error as they do: a
                # PresenceError origin_taken_over, not retryable.
                self._closed = True
                self._fatal = PresenceError(0, "origin_taken_over",
                                            f"origin {self.origin} taken over by another connection "
                                            "(is another process using this origin?): stopped")
                if self.on_error:
                    self.on_error(self._fatal)
                break
            if self._closed:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_s)

    async def _ping_loop(self, ws, every_ms: int):
        # A path that dies without FIN or RST (a NAT or load balancer that
        # forgot the connection, a frozen host) is noticed only by asking.
        # websockets' own keepalive (20 s, then 20 s for the pong) noticed it
        # after up to 40 s, past the lease and near the end of the resume
        # window, where the Node and Go SDKs ping every heartbeat_ms of the
        # welcome and drop the connection when no pong came by the next one.
        while True:
            await asyncio.sleep(every_ms / 1000)
            try:
                pong = await ws.ping()
                await asyncio.wait_for(pong, every_ms / 1000)
            except asyncio.TimeoutError:
                if ws is self._ws:
                    self._silent = every_ms
                    ws.transport.abort() if hasattr(ws, "transport") else await ws.close()
                return
            except Exception:  # noqa: BLE001 - the connection ended: _run reconnects
                return

    def _on_close(self):
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
        # Unsent or unacknowledged ops are in self.sessions: the re-assert carries
        # them, all but a leave (a resumed origin keeps its memberships): keep those.
        for op in [o for ops in self._inflight.values() for o in ops] + self._queue:
            if op.get("op") == "leave" and op.get("session") in self.sessions:
                self._left_while_down.setdefault(op["session"], set()).add(op["channel"])
        self._ready = False
        self._ws = None
        self._inflight.clear()
        self._frames.clear()
        self._queue.clear()
        self._notify_acked()

    def _notify_acked(self):
        async def notify():
            async with self._acked:
                self._acked.notify_all()
        if self._acked is not None:
            asyncio.ensure_future(notify())

    # ---- messages ------------------------------------------------------------

    def _on_message(self, msg: Dict[str, Any]):
        t = msg.get("type")
        if t == "welcome":
            self.welcome = msg
            self.connects += 1
            if msg.get("max_ops"):
                self.max_ops = min(self.max_ops, msg["max_ops"])
            self._reassert()
            self._ready = True
            if msg.get("heartbeat_ms") and self._pinger is None:
                self._pinger = asyncio.ensure_future(self._ping_loop(self._ws, int(msg["heartbeat_ms"])))
            self._ready_event.set()
            self._schedule()
            if self.on_connect:
                self.on_connect(msg)
        elif t == "ack":
            ops = self._inflight.pop(msg.get("seq"), None)
            self._frames.pop(msg.get("seq"), None)
            if ops is None:
                return
            self.stats["ops_acked"] += len(ops)
            for err in msg.get("errors") or []:
                op = ops[err["index"]] if err["index"] < len(ops) else {}
                if op.get("op") == "leave" and err.get("code") == "not_joined":
                    continue    # a leave sent again after a reconnect: left already
                self.stats["op_errors"] += 1
                self._undo(op, err.get("code", ""))
                if self.on_rejected:
                    self.on_rejected(op, err.get("code", ""), err.get("message", ""))
            self._notify_acked()
        elif t == "ended":
            s = self.sessions.pop(msg.get("session"), None)
            if self.on_ended:
                self.on_ended(msg.get("session"), s["user"] if s else None, msg.get("reason", ""))
        elif t == "left":
            # A removal by presenced's API: out of the list, or the next
            # re-assert would join the channel again. presenced sends those of
            # a detached origin before the welcome, so the re-assert that the
            # welcome starts no longer carries them.
            sid, channel = msg.get("session"), msg.get("channel")
            s = self.sessions.get(sid)
            if not s or channel not in s["channels"]:
                return
            del s["channels"][channel]
            self._left_while_down.get(sid, set()).discard(channel)
            if self.on_left_notice:
                self.on_left_notice(LeftNotice(sid, s["user"], channel, msg.get("reason", ""),
                                               msg.get("code") or "", msg.get("message") or ""))
            elif self.on_left:
                self.on_left(sid, s["user"], channel, msg.get("reason", ""))
        elif t == "error":
            if msg.get("code") == "origin_taken_over":     # the close 4009 follows, and is reported
                self._taken_over = True
                return
            if msg.get("code") == "rate_limited" and msg.get("seq") in self._inflight:
                # The same frame again later, as the Node SDK does: a sync frame
                # too, whose sessions were dropped here before (after a restart
                # of presenced they were never opened again).
                self._loop.call_later((msg.get("retry_ms") or 100) / 1000, self._resend, msg["seq"], self._ws)
            elif msg.get("seq") in self._inflight:
                self._inflight.pop(msg["seq"])
                self._frames.pop(msg["seq"], None)
                self._notify_acked()
            if self.on_error:
                # A PresenceError with the frame's code (codes.RATE_LIMITED,
                # codes.BAD_FIELD...), as the Node SDK's 'error' has .code and
                # the Go SDK's OnError an *Error: it was a RuntimeError whose
                # code was only in its text.
                self.on_error(PresenceError(0, str(msg.get("code") or "bad_response"),
                                            f"backend frame refused: {msg.get('message')}"))

    def _undo(self, op: Dict[str, Any], code: str):
        sid = op.get("session")
        if not sid:
            return
        s = self.sessions.get(sid)
        if op.get("op") == "open" and code != "internal":
            if s and s["user"] == op.get("user"):
                del self.sessions[sid]
        elif op.get("op") == "join":
            if s:
                s["channels"].pop(op.get("channel"), None)
        elif code in ("no_session", "session_owned"):
            self.sessions.pop(sid, None)

    def _reassert(self):
        items = []
        for sid, s in self.sessions.items():
            it = {"session": sid, "user": s["user"], "status": s["status"]}
            if s["meta"]:
                it["meta"] = s["meta"]
            if s["device"]:
                it["device"] = s["device"]
            items.append(it)
        i = 0
        while True:
            chunk = items[i:i + self.max_ops]
            i += self.max_ops
            self._send({"type": "sync", "seq": self._next_seq(), "sessions": chunk, "done": i >= len(items)},
                       [{"op": "sync", **x} for x in chunk])
            if i >= len(items):
                break
        ops = []
        for sid, chans in self._left_while_down.items():
            if sid in self.sessions:
                ops += [{"op": "leave", "session": sid, "channel": c} for c in chans]
        self._left_while_down.clear()
        for sid, s in self.sessions.items():
            ops += [{"op": "join", "session": sid, "channel": c, "data": d} for c, d in s["channels"].items()]
        self._queue[:0] = ops

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, frame: Dict[str, Any], ops: List[Dict[str, Any]]):
        text = json.dumps(frame, separators=(",", ":"))
        self._inflight[frame["seq"]] = ops
        self._frames[frame["seq"]] = text
        self.stats["ops_sent"] += len(ops)
        asyncio.ensure_future(self._ws.send(text))

    def _resend(self, seq: int, ws):
        # Only on the connection that refused it: after a reconnect the re-assert carries everything.
        if ws is self._ws and ws is not None and seq in self._frames:
            asyncio.ensure_future(ws.send(self._frames[seq]))

    def _schedule(self):
        if self._flush_scheduled or not self._ready:
            return
        self._flush_scheduled = True
        self._loop.call_soon(self._flush_queue)

    def _flush_queue(self):
        self._flush_scheduled = False
        if not self._ready or self._ws is None:
            return
        while self._queue:
            ops, self._queue = self._queue[:self.max_ops], self._queue[self.max_ops:]
            self._send({"type": "batch", "seq": self._next_seq(), "ops": ops}, ops)

    def _push(self, op: Dict[str, Any]):
        if self._ready:
            self._queue.append(op)
            self._schedule()

    def _call(self, fn, *args, **kw):
        """Run fn on the connection's loop: at once from that loop, else thread-safely (and wait)."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or not loop.is_running():
            return fn(*args, **kw)
        fut = asyncio.run_coroutine_threadsafe(_as_coro(fn, *args, **kw), loop)
        return fut.result(10)

    # ---- operations ------------------------------------------------------------

    def open(self, user_id: str, *, session: Optional[str] = None, status: str = "online",
             meta: Optional[Dict[str, Any]] = None, device: Optional[str] = None) -> str:
        """A new session of this origin; returns its id (random unless given)."""
        _check_status(status)
        sid = session or str(uuid.uuid4())

        def do():
            self.sessions[sid] = {"user": user_id, "status": status, "meta": meta, "device": device, "channels": {}}
            op = {"op": "open", "session": sid, "user": user_id}
            if status != "online":
                op["status"] = status
            if meta:
                op["meta"] = meta
            if device:
                op["device"] = device
            self._push(op)
        self._call(do)
        return sid

    def set_status(self, session: str, status: str) -> bool:
        """"online" / "idle" (the seed's setStatusOnline / setStatusIdle)."""
        _check_status(status)

        def do():
            s = self.sessions.get(session)
            if not s:
                return False
            if s["status"] != status:
                s["status"] = status
                self._push({"op": "status", "session": session, "status": status})
            return True
        return self._call(do)

    def close(self, session: str) -> bool:
        def do():
            if self.sessions.pop(session, None) is None:
                return False
            self._left_while_down.pop(session, None)
            self._push({"op": "close", "session": session})
            return True
        return self._call(do)

    def join(self, session: str, channel: str, data: Optional[Dict[str, Any]] = None) -> bool:
        def do():
            s = self.sessions.get(session)
            if not s:
                return False
            s["channels"][channel] = data
            self._push({"op": "join", "session": session, "channel": channel, "data": data})
            return True
        return self._call(do)

    def update(self, session: str, channel: str, data: Optional[Dict[str, Any]]) -> bool:
        def do():
            s = self.sessions.get(session)
            if not s or channel not in s["channels"]:
                return False
            s["channels"][channel] = data
            self._push({"op": "update", "session": session, "channel": channel, "data": data})
            return True
        return self._call(do)

    def leave(self, session: str, channel: str) -> bool:
        def do():
            s = self.sessions.get(session)
            if not s or channel not in s["channels"]:
                return False
            del s["channels"][channel]
            if self._ready:
                self._push({"op": "leave", "session": session, "channel": channel})
            else:
                self._left_while_down.setdefault(session, set()).add(channel)
            return True
        return self._call(do)

    def track(self, user_id: str, *, session: Optional[str] = None, status: str = "online",
              meta: Optional[Dict[str, Any]] = None, device: Optional[str] = None) -> "TrackedSession":
        """A session of user_id open while a block runs, closed when it is left
        by any path (return, exception, cancellation):

            async with backend.track("alice", device="web") as session:
                async for message in websocket: ...

        Also a plain `with` (threaded apps, start_thread()). Opens on entry."""
        _check_status(status)
        return TrackedSession(self, user_id, session=session, status=status, meta=meta, device=device)

    async def flush(self) -> None:
        """Every operation so far acknowledged (or the connection lost: the re-assert carries them)."""
        if self._acked is None:
            # Before connect(): nothing was sent, and the sessions opened so
            # far go with connect()'s re-assert (as the Node and Go SDKs'
            # flush return). It raised a TypeError about a context manager.
            return
        self._flush_queue()
        last = self._seq
        async with self._acked:
            await self._acked.wait_for(lambda: not any(s <= last for s in self._inflight))

    def flush_sync(self, timeout: float = 30.0) -> None:
        if self._loop is None:
            return                   # before start_thread(): as flush() before connect()
        asyncio.run_coroutine_threadsafe(self.flush(), self._loop).result(timeout)

    async def end(self, bye: bool = False) -> None:
        """Stop. bye=True ends every session now; otherwise presenced keeps them
        for its resume window (a restarted process with this origin takes them back)."""
        if self._ready:
            await self.flush()
        self._closed = self._ended = True
        ws = self._ws
        if ws is not None:
            if bye:
                await ws.send(json.dumps({"type": "bye"}))
                try:
                    await asyncio.wait_for(ws.wait_closed(), 5)
                except asyncio.TimeoutError:
                    pass
            await ws.close()
        if self._task is not None:
            if ws is None:
                # Waiting to reconnect (up to max_retry_s) or connecting:
                # nothing to close cleanly, so no reason to wait for it.
                self._task.cancel()
            # Its errors (and its cancellation) are how it ended, on purpose.
            await asyncio.gather(self._task, return_exceptions=True)

    def end_sync(self, bye: bool = False, timeout: float = 30.0) -> None:
        """end() from another thread; stops the thread of start_thread()."""
        try:
            asyncio.run_coroutine_threadsafe(self.end(bye), self._loop).result(timeout)
        finally:
            if getattr(self, "_thread_loop", False):
                self._loop.call_soon_threadsafe(self._loop.stop)

    async def reconnect(self) -> None:
        """Drop the connection (tests, failover): it reconnects and re-asserts."""
        if self._ws is not None:
            self._ws.transport.abort() if hasattr(self._ws, "transport") else await self._ws.close()


def _websockets():
    # The one dependency, of this module only (pyproject's extra "backend"):
    # without it connect() said only "No module named 'websockets'".
    try:
        import websockets
    except ImportError as e:
        raise ModuleNotFoundError("presenced.BackendConnection needs the websockets package: "
                                  "pip install 'presenced[backend]' (or Debian's python3-websockets)",
                                  name="websockets") from e
    return websockets


def _check_status(status: str) -> None:
    # Refused here, not only by presenced: the list keeps what was asked, and
    # its re-assert after the next reconnect would carry the refused status,
    # which presenced refuses again and so ends the session.
    if status not in ("online", "idle"):
        raise ValueError(f"status must be 'online' or 'idle', not {status!r}")


async def _as_coro(fn, *args, **kw):
    return fn(*args, **kw)
