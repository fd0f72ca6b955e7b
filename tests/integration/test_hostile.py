#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Hostile clients (docs/security.md): each attack ends in a clear refusal with
the documented code, the daemon keeps serving everybody else meanwhile, and
its memory (VmRSS) is back near its baseline afterwards.

Not repeated here (see test_limits, test_auth, test_malformed): a frame just
over --max-frame, the basic alg none / RS256 / HS512 refusals, one session
over the per-user limit, one slow reader. This file pushes the same limits
harder, and adds slow attacks (slowloris, never-finishing frame) and mixing
attacks (pipelined garbage, another user's session id, key confusion)."""

import asyncio
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403

FLAGS = {
    "--max-frame": "1024",
    "--max-message": "4096",
    "--max-msgs-per-sec": "50",
    "--max-sessions-per-user": "3",
    "--max-watch": "20",
    "--http-request-timeout-ms": "1000",
    "--heartbeat-ms": "500",
    "--timeout-ms": "2000",
    "--allowed-origins": "https://app.example.com, https://other.example.com/, "
                         "https://*.tenants.example",
}

# RSS may grow this much over the attacks and stay grown (allocator caches,
# the event log filling up to --log-capacity). A sanitizer build keeps freed
# memory in quarantine, so it gets more room.
RSS_TOLERANCE_KB = 16 * 1024
RSS_TOLERANCE_SANITIZER_KB = 96 * 1024

STATE = {}


def is_sanitizer_build(path):
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


async def bystander_ok(t, d, label):
    """A client that was connected before the attack still gets answers."""
    c = STATE.get("bystander")
    p = await c.ping(f"by-{int(time.time() * 1000) % 100000}") if c else None
    t.check(f"{label}: a connected bystander is still served", p is not None)


async def raw_conn(d):
    return await asyncio.wait_for(asyncio.open_connection(HOST, d.port), 5)


async def read_all(reader, timeout):
    """Everything until EOF (or the timeout); returns (bytes, eof_seen)."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except asyncio.TimeoutError:
            return data, False
        except (ConnectionError, OSError):
            return data, True
        if not chunk:
            return data, True
        data += chunk


def parse_http(data):
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None, None
    try:
        code = json.loads(body.decode()).get("error", {}).get("code")
    except ValueError:
        code = None
    return status, code


# --------------------------------------------------------------------------


async def test_baseline(t, d, args):
    STATE["bystander"] = await Client.connect(d, "bystander", watch="*")
    # Warm up the allocator and every code path once before measuring.
    for i in range(3):
        c = await Client.connect(d, f"warm{i}")
        await c.ping("w")
        await c.close()
    await http(d, "GET", "/v1/users/warm0")
    await asyncio.sleep(0.3)
    STATE["rss0"] = d.rss_kb()
    t.check("baseline: VmRSS readable", STATE["rss0"] is not None)
    t.note(f"baseline VmRSS {STATE['rss0']} kB")


async def test_slowloris(t, d, args):
    # Header lines trickled in, one every 200 ms, on 20 connections at once:
    # each must get 408 request_timeout (--http-request-timeout-ms 1000) and
    # be closed, although bytes keep coming (the idle timer alone never
    # fires).
    conns = [await raw_conn(d) for _ in range(20)]
    for r, w in conns:
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    stop = False

    async def trickle(w):
        i = 0
        while not stop:
            try:
                w.write(b"X-Slow-%d: y\r\n" % i)
                await w.drain()
            except (ConnectionError, OSError):
                return
            i += 1
            await asyncio.sleep(0.2)

    tasks = [asyncio.ensure_future(trickle(w)) for _, w in conns]
    await bystander_ok(t, d, "slowloris")
    r = await http(d, "GET", "/healthz", auth=False)
    t.eq("slowloris: a normal request meanwhile is answered", r.status, 200)
    results = await asyncio.gather(*(read_all(r, 8) for r, _ in conns))
    elapsed = time.monotonic() - t0
    stop = True
    for task in tasks:
        task.cancel()
    answers = [parse_http(data) for data, _ in results]
    t.check("slowloris: every trickling connection gets 408 request_timeout",
            all(a == (408, "request_timeout") for a in answers), answers[:3])
    t.check("slowloris: every trickling connection is closed",
            all(eof for _, eof in results), [eof for _, eof in results])
    t.check("slowloris: cut within a few seconds (timeout 1 s + sweep)", elapsed < 6, elapsed)
    for _, w in conns:
        w.close()
    # A slow body is cut the same way.
    r, w = await raw_conn(d)
    w.write(b"POST /v1/users/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode() +
            b"\r\nContent-Length: 1000\r\n\r\n{")
    data, eof = await read_all(r, 5)
    w.close()
    t.eq("slow body: 408 request_timeout", parse_http(data), (408, "request_timeout"))


async def test_never_finishing_frame(t, d, args):
    ws = await RawWS.open(d, tok=token("trickler"))
    await ws.recv_json(3)
    # A text frame announcing 1000 bytes whose payload arrives a byte every
    # 250 ms: bytes keep coming, but no frame ever completes.
    key = b"\x01\x02\x03\x04"
    await ws.send_raw(bytes([0x81, 0x80 | 126]) + struct.pack("!H", 1000) + key)
    t0 = time.monotonic()
    stop = False

    async def trickle():
        while not stop:
            try:
                await ws.send_raw(b"\x7a")
            except (ConnectionError, OSError):
                return
            await asyncio.sleep(0.25)

    task = asyncio.ensure_future(trickle())
    # No pongs: they would be frames inside our unfinished frame.
    code, _ = await ws.until_close(8, auto_pong=False)
    stop = True
    task.cancel()
    ws.close()
    t.eq("never-finishing frame: closed with 4008 (heartbeat lost)", code, 4008)
    t.check("never-finishing frame: cut near --timeout-ms (2 s)", time.monotonic() - t0 < 5,
            time.monotonic() - t0)
    await bystander_ok(t, d, "never-finishing frame")


async def test_million_tiny_frames(t, d, args):
    ws = await RawWS.open(d, tok=token("tiny"))
    await ws.recv_json(3)
    # A million empty masked pings (6 MB), written as fast as the socket
    # takes them. --max-msgs-per-sec 50 must cut it long before the end.
    frame = bytes([0x89, 0x80, 1, 2, 3, 4])
    chunk = frame * 10000
    t0 = time.monotonic()
    sent = 0

    async def flood():
        nonlocal sent
        try:
            for _ in range(100):
                ws.writer.write(chunk)
                await ws.writer.drain()
                sent += 10000
        except (ConnectionError, OSError):
            pass

    task = asyncio.ensure_future(flood())
    code, msgs = await ws.until_close(10, auto_pong=False)
    elapsed = time.monotonic() - t0
    task.cancel()
    ws.close()
    t.eq("a million tiny frames: closed with 4029", code, 4029)
    errs = [m for m in msgs if isinstance(m, dict) and m.get("type") == "error"]
    t.check("a million tiny frames: error rate_limited before the close",
            errs and errs[-1].get("code") == "rate_limited", msgs[-3:])
    t.check("a million tiny frames: cut within 5 s", elapsed < 5, elapsed)
    t.note(f"tiny frames: {sent} written before the cut, {elapsed:.2f} s")
    await bystander_ok(t, d, "a million tiny frames")


async def test_oversized_frames(t, d, args):
    cases = [
        ("64-bit length of 2^62 bytes, no payload sent: 1009 at once",
         bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 62) + b"\0\0\0\0", 1009),
        ("64-bit length with the top bit set: 1002",
         bytes([0x81, 0xFF]) + struct.pack("!Q", 1 << 63) + b"\0\0\0\0", 1002),
        ("16-bit length 65535 over --max-frame 1024: 1009",
         bytes([0x82, 0xFE]) + struct.pack("!H", 65535) + b"\0\0\0\0", 1009),
        ("ping of 126 bytes (control frames at most 125): 1002",
         ws_frame(0x9, b"p" * 126), 1002),
    ]
    for label, data, want in cases:
        ws = await RawWS.open(d, tok=token("big"))
        await ws.recv_json(3)
        await ws.send_raw(data)
        code, _ = await ws.until_close(3, auto_pong=False)
        ws.close()
        t.eq(label, code, want)
    # 16 MB actually sent in 1000-byte fragments: the message limit (4096)
    # cuts it after a few fragments, and the daemon does not buffer the rest.
    ws = await RawWS.open(d, tok=token("big"))
    await ws.recv_json(3)
    part = ws_frame(0x1, b"a" * 1000, fin=False)
    cont = ws_frame(0x0, b"a" * 1000, fin=False)

    async def push():
        try:
            ws.writer.write(part)
            for _ in range(16000):
                ws.writer.write(cont)
                await ws.writer.drain()
        except (ConnectionError, OSError):
            pass

    task = asyncio.ensure_future(push())
    code, _ = await ws.until_close(8, auto_pong=False)
    task.cancel()
    ws.close()
    t.eq("16 MB in fragments under --max-frame: 1009 at --max-message", code, 1009)
    await bystander_ok(t, d, "oversized frames")


async def test_utf8_split(t, d, args):
    async def run(fragments, expect_code, label):
        ws = await RawWS.open(d, tok=token("utf8"))
        await ws.recv_json(3)
        for i, f in enumerate(fragments):
            await ws.send_frame(0x1 if i == 0 else 0x0, f, fin=(i == len(fragments) - 1))
        if expect_code is None:
            m = await ws.recv_json(3)
            ws.close()
            t.check(label, m is not None and m.get("type") == "pong", m)
        else:
            code, _ = await ws.until_close(3, auto_pong=False)
            ws.close()
            t.eq(label, code, expect_code)

    emoji = "\U0001F600".encode()
    pre, post = b'{"type":"ping","id":"', b'"}'
    await run([pre + emoji[:2], emoji[2:] + post], None,
              "valid 4-byte character split across fragments: accepted")
    await run([pre + emoji[:1], emoji[1:3], emoji[3:] + post], None,
              "valid character split over three fragments: accepted")
    await run([pre + b"\xf0\x9f", b"\x28\x8c" + post], 1007,
              "invalid continuation in the next fragment: 1007")
    await run([pre + b"\xed", b"\xa0\x80" + post], 1007,
              "surrogate (ED A0 80) split across fragments: 1007")
    await run([pre + b"\xf4", b"\x90\x80\x80" + post], 1007,
              "code point over U+10FFFF split across fragments: 1007")
    await run([pre, b"\xe2\x82"], 1007, "message ending inside a character: 1007")
    # Refused on the byte that proves it, before the message is complete: a
    # further fragment is never needed.
    ws = await RawWS.open(d, tok=token("utf8"))
    await ws.recv_json(3)
    await ws.send_frame(0x1, pre + b"\xc0\xaf", fin=False)
    code, _ = await ws.until_close(3, auto_pong=False)
    ws.close()
    t.eq("overlong in an unfinished message: 1007 without waiting for the end", code, 1007)
    await bystander_ok(t, d, "invalid UTF-8")


async def test_subscription_flood(t, d, args):
    c = await Client.connect(d, "subflood", watch="*")
    # One message naming 100 users (one frame under --max-frame): refused as
    # a whole before any id is looked at.
    await c.send({"type": "subscribe", "users": [f"u{i}" for i in range(100)], "id": 1})
    m = await c.expect_type("error", 3, id=1)
    t.check("100 users in one subscribe over --max-watch 20: too_many_watched",
            m is not None and m.get("code") == "too_many_watched", m)
    # Fill up to the limit, then keep asking for more, as fast as possible.
    await c.send({"type": "subscribe", "users": [f"s{i}" for i in range(20)], "id": 2})
    m = await c.expect_type("presence", 3, id=2)
    t.check("subscribe up to --max-watch: snapshot", m is not None and len(m.get("users", [])) == 20, m)
    closed = None
    for i in range(300):
        try:
            await c.send({"type": "subscribe", "users": [f"x{i}-{k}" for k in range(10)]})
        except websockets.exceptions.ConnectionClosed as e:
            closed = e.code
            break
    if closed is None:
        closed = await c.wait_closed(5)
    errs = [m for m in c.backlog if m.get("type") == "error"]
    t.check("subscription flood: refused with too_many_watched while under the rate",
            any(e.get("code") == "too_many_watched" for e in errs), errs[:3])
    t.eq("subscription flood: closed with 4029 at the rate limit", closed, 4029)
    await asyncio.sleep(0.3)
    r = await http(d, "GET", "/v1/users/subflood")
    t.eq("subscription flood: the session is gone", (r.json() or {}).get("sessions"), 0)
    await bystander_ok(t, d, "subscription flood")


async def test_token_replay(t, d, args):
    tok = token("replay", exp_in=2)
    c = await Client.connect(d, "replay", tok=tok)
    t.check("short-lived token: admitted", c.welcome.get("type") == "welcome", c.welcome)
    code = await c.wait_closed(6)
    t.eq("short-lived token: the live session is closed with 4001 at expiry", code, 4001)
    ws = await RawWS.open(d, tok=tok)
    r = ws.response()
    ws.close()
    t.check("the same token replayed after expiry: 401 token_expired",
            r.status == 401 and r.error_code == "token_expired", r)


async def test_other_users_session(t, d, args):
    alice = await Client.connect(d, "alice")
    sid = alice.session_id
    bob = await Client.connect(d, "bob", watch="*")
    # A client has no message that names a session: extra fields naming
    # alice's are ignored, and bob acts on his own session only.
    await bob.send({"type": "status", "status": "idle", "session_id": sid, "user_id": "alice",
                    "id": "s"})
    await bob.expect_type("ack", 3, id="s")
    r = await http(d, "GET", "/v1/users/alice")
    t.eq("bob's status message naming alice's session: alice stays online",
         (r.json() or {}).get("status"), "online")
    r = await http(d, "GET", "/v1/users/bob")
    t.eq("... and it set bob's own session idle", (r.json() or {}).get("status"), "idle")
    await bob.send({"type": "kick", "session_id": sid, "id": "k"})
    m = await bob.expect_type("error", 3, id="k")
    t.check("a 'kick' message from a client: unknown_type", m and m.get("code") == "unknown_type", m)
    # Kicking is the backend's, behind the API key.
    r = await http(d, "DELETE", f"/v1/sessions/{sid}", auth=False)
    t.check("kick without the API key: 401 unauthorized", r.status == 401 and r.error_code == "unauthorized", r)
    r = await http(d, "DELETE", f"/v1/sessions/{sid}", auth=False,
                   headers={"Authorization": "Bearer " + API_KEY[:-1] + "x"})
    t.check("kick with a wrong API key: 401 unauthorized", r.status == 401, r)
    r = await http(d, "DELETE", f"/v1/sessions/{sid}", auth=False,
                   headers={"Authorization": "Bearer " + token("bob")})
    t.check("kick with a client's JWT as the API key: 401 unauthorized", r.status == 401, r)
    r = await http(d, "GET", f"/v1/users/alice/sessions", auth=False)
    t.check("another user's session list without the API key: 401", r.status == 401, r)
    p = await alice.ping("still")
    t.check("after all that alice's session is untouched", p is not None)
    # A WebSocket URL carrying the API key instead of a JWT.
    ws = await RawWS.open(d, tok=API_KEY)
    r = ws.response()
    ws.close()
    t.check("the API key as a client token: 401 token_malformed",
            r.status == 401 and r.error_code == "token_malformed", r)
    await alice.close()
    await bob.close()


async def test_alg_confusion(t, d, args):
    now = int(time.time())
    claims = {"sub": "mallory", "exp": now + 600, "watch": "*"}
    fake_pub = ("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"
                "\n-----END PUBLIC KEY-----\n")
    cases = [
        ("alg None (capitalised), no signature", make_jwt(claims, header={"alg": "None"}, sign="none"),
         "token_alg"),
        ("alg NONE with our HMAC", make_jwt(claims, header={"alg": "NONE", "typ": "JWT"}), "token_alg"),
        ("RS256 header, HMAC keyed with a public key (RS/HS confusion)",
         make_jwt(claims, header={"alg": "RS256"}, secret=fake_pub), "token_alg"),
        ("HS256 keyed with a public key", make_jwt(claims, secret=fake_pub), "token_signature"),
        ("HS256 keyed with the backend API key", make_jwt(claims, secret=API_KEY), "token_signature"),
        ("HS256 keyed with an empty secret", make_jwt(claims, secret=""), "token_signature"),
        ("alg as an array", make_jwt(claims, header={"alg": ["HS256"]}), "token_alg"),
        ("jwk header carrying the attacker's key",
         make_jwt(claims, header={"alg": "HS256", "jwk": {"kty": "oct", "k": "QUFB"}}, secret="AAA"),
         "token_signature"),
    ]
    for label, tok, want in cases:
        ws = await RawWS.open(d, tok=tok)
        r = ws.response()
        ws.close()
        t.check(f"{label}: 401 {want}", r.status == 401 and r.error_code == want, r)


async def test_sessions_storm(t, d, args):
    # 40 connections of one user at once, over --max-sessions-per-user 3.
    async def one():
        ws = await RawWS.open(d, tok=token("storm"))
        first = await ws.recv_json(3)
        if first and first.get("type") == "welcome":
            return ("welcome", ws)
        code, _ = await ws.until_close(3, auto_pong=False)
        ws.close()
        return (first.get("code") if first else None, code)

    res = await asyncio.gather(*(one() for _ in range(40)))
    welcomed = [x[1] for x in res if x[0] == "welcome"]
    refused = [x for x in res if x[0] != "welcome"]
    t.eq("40 sessions of one user at once: exactly 3 admitted", len(welcomed), 3)
    t.check("... the other 37: error too_many_sessions then 4031",
            all(x == ("too_many_sessions", 4031) for x in refused), refused[:3])
    r = await http(d, "GET", "/v1/users/storm")
    t.eq("... the user holds 3 sessions", (r.json() or {}).get("sessions"), 3)
    for ws in welcomed:
        await ws.send_frame(0x8, close_payload(1000))
        await ws.until_close(2, auto_pong=False)
        ws.close()
    await asyncio.sleep(0.3)
    r = await http(d, "GET", "/v1/users/storm")
    t.eq("... and none once they closed", (r.json() or {}).get("sessions"), 0)
    await bystander_ok(t, d, "sessions storm")


async def test_pipelined_garbage(t, d, args):
    def upgrade(tok):
        return (f"GET /v1/ws?token={tok} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n").encode()

    # Accepted upgrade followed, in the same write, by an HTTP request: those
    # bytes are WebSocket frames now ('G' = FIN 0, RSV1, opcode 7): 1002.
    r, w = await raw_conn(d)
    w.write(upgrade(token("piper")) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data, eof = await read_all(r, 3)
    w.close()
    t.check("upgrade + pipelined HTTP: 101, welcome, then close 1002",
            data.startswith(b"HTTP/1.1 101") and b"welcome" in data
            and _close_code(data) == 1002, data[:300])
    t.check("... and the daemon did not answer the pipelined request", b"uptime_s" not in data)
    # Refused upgrade (bad token) followed by a request: only the 401 comes
    # back, the connection is closed, the rest is never executed.
    r, w = await raw_conn(d)
    w.write(upgrade("garbage") + b"DELETE /v1/sessions/x HTTP/1.1\r\nAuthorization: Bearer "
            + API_KEY.encode() + b"\r\n\r\n")
    data, eof = await read_all(r, 4)
    w.close()
    t.check("refused upgrade + pipelined request: one 401, then closed",
            data.startswith(b"HTTP/1.1 401") and data.count(b"HTTP/1.1") == 1 and eof, data[:300])
    # Random binary after a valid upgrade.
    r, w = await raw_conn(d)
    w.write(upgrade(token("piper2")) + os.urandom(4096))
    data, eof = await read_all(r, 3)
    w.close()
    t.check("upgrade + 4 KB of random bytes: a close with a protocol code (1002/1007/1009/1003)",
            _close_code(data) in (1002, 1003, 1007, 1009, 1008, 4029), (_close_code(data), data[-40:]))
    await bystander_ok(t, d, "pipelined garbage")


def _close_code(data):
    """The code of the first close frame the server sent after its 101."""
    i = data.find(b"\r\n\r\n")
    if i < 0:
        return None
    p = i + 4
    while p + 2 <= len(data):
        b0, b1 = data[p], data[p + 1]
        n = b1 & 0x7F
        p += 2
        if n == 126:
            n = struct.unpack("!H", data[p:p + 2])[0]
            p += 2
        elif n == 127:
            n = struct.unpack("!Q", data[p:p + 8])[0]
            p += 8
        if b0 & 0x0F == 0x8:
            return struct.unpack("!H", data[p:p + 2])[0] if n >= 2 else 1005
        p += n
    return None


async def test_http_strictness(t, d, args):
    """Request heads a stricter proxy would read differently (docs/security.md,
    HTTP strictness): each gets one 400 bad_request and the connection is
    closed, so nothing after it is ever answered as a request."""
    auth = b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
    inner = b"GET /v1/users/smuggled HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n"
    cases = [
        ("whitespace before a header colon",
         b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n"),
        ("a folded header line",
         b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
        ("bare LF line ends", b"GET /healthz HTTP/1.1\nHost: x\n\n"),
        ("a bare LF ending one header line",
         b"GET /healthz HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n"),
        ("an HTTP/0.9 request line", b"GET /healthz\r\n\r\n"),
        ("two Content-Length headers",
         b"POST /v1/users/query HTTP/1.1\r\nHost: x\r\n" + auth +
         b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}"),
        ("two Transfer-Encoding headers",
         b"POST /v1/users/query HTTP/1.1\r\nHost: x\r\n" + auth +
         b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("two Host headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
        ("two Authorization headers",
         b"GET /v1/users/a HTTP/1.1\r\nHost: x\r\n" + auth +
         b"Authorization: Bearer nope\r\n\r\n"),
        # The smuggling itself: a proxy that trims the space reads the
        # second request as this one's body; presenced must not answer it.
        ("a body behind 'Content-Length :' (smuggled request)",
         b"POST /v1/users/query HTTP/1.1\r\nHost: x\r\n" + auth +
         b"Content-Length : %d\r\n\r\n" % len(inner) + inner),
        ("a body behind 'Transfer-Encoding :' (smuggled request)",
         b"POST /v1/users/query HTTP/1.1\r\nHost: x\r\n" + auth +
         b"Transfer-Encoding : chunked\r\n\r\n%x\r\n" % len(inner) + inner +
         b"\r\n0\r\n\r\n"),
        ("a body behind a folded Content-Length (smuggled request)",
         b"POST /v1/users/query HTTP/1.1\r\nHost: x\r\n" + auth +
         b"X-Pad: a\r\n Content-Length: %d\r\n\r\n" % len(inner) + inner),
    ]
    for label, raw in cases:
        r, w = await raw_conn(d)
        w.write(raw)
        data, eof = await read_all(r, 3)
        w.close()
        t.check(f"{label}: one 400 bad_request, then closed",
                parse_http(data) == (400, "bad_request") and eof and
                len(re.findall(rb"HTTP/1\.1 \d{3} ", data)) == 1 and b"smuggled" not in data,
                data[:400])
    # A well-formed request with the same headers once each is still fine.
    r, w = await raw_conn(d)
    w.write(b"GET /v1/users/a HTTP/1.1\r\nHost: x\r\n" + auth + b"Connection: close\r\n\r\n")
    data, _ = await read_all(r, 3)
    w.close()
    t.eq("the same request with each header once: 200", parse_http(data)[0], 200)
    await bystander_ok(t, d, "HTTP strictness")


async def test_origins(t, d, args):
    """Cross-site WebSocket hijacking: a page on another site opening a
    WebSocket with a visitor's token is refused before the token is read;
    no Origin (not a browser) and the same origin are allowed."""
    tok = token("origin-user")
    for label, origin, want in [
        ("another site's page", "https://evil.example", 403),
        ("a look-alike of our host on another port", f"http://{HOST}:{d.port + 1}", 403),
        ("an opaque origin (sandboxed frame, file://)", "null", 403),
        ("the same origin (Origin's host = Host)", f"http://{HOST}:{d.port}", 101),
        ("the same origin, other case", f"HTTP://{HOST}:{d.port}".upper().replace("HTTP", "http"),
         101),
        ("an origin listed in --allowed-origins", "https://app.example.com", 101),
        ("a listed origin, listed with a trailing slash", "https://other.example.com", 101),
        # https://*.tenants.example: its subdomains at any depth, same scheme
        # and port; not the domain itself, not a look-alike, not http
        ("a subdomain under a listed *.", "https://acme.tenants.example", 101),
        ("a deeper subdomain under a listed *.", "https://eu.acme.tenants.example", 101),
        ("the domain a *. is listed for", "https://tenants.example", 403),
        ("a look-alike of a *. domain", "https://eviltenants.example", 403),
        ("a *. domain as a prefix of another", "https://acme.tenants.example.evil", 403),
        ("a *. subdomain over another scheme", "http://acme.tenants.example", 403),
        ("a *. subdomain on another port", "https://acme.tenants.example:8443", 403),
        ("a host no browser sends, ending in a *. domain", "https://evil.example#.tenants.example",
         403),
    ]:
        ws = await RawWS.open(d, tok=tok, headers={"Origin": origin})
        r = ws.response()
        ws.close()
        if want == 403:
            t.check(f"Origin of {label}: 403 origin_not_allowed",
                    r.status == 403 and r.error_code == "origin_not_allowed", r)
        else:
            t.eq(f"Origin of {label}: 101", r.status, 101)
    ws = await RawWS.open(d, tok=tok)
    t.eq("no Origin (a backend or native client): 101", ws.status, 101)
    ws.close()
    ws = await RawWS.open(d, tok="garbage", headers={"Origin": "https://evil.example"})
    r = ws.response()
    ws.close()
    t.check("a foreign Origin is refused before the token is looked at",
            r.status == 403 and r.error_code == "origin_not_allowed", r)


async def test_close_reasons(t, d, args):
    """Server-initiated closes end the session with a reason of their own
    (docs/api.md), not "disconnect", which is the client's own close."""
    sse = await SSE.open(d)
    await asyncio.sleep(0.2)

    async def flood(ws):
        try:
            ws.writer.write(bytes([0x89, 0x80, 1, 2, 3, 4]) * 200)
            await ws.writer.drain()
        except (ConnectionError, OSError):
            pass

    async def binary(ws):
        await ws.send_frame(0x2, b"\x01\x02")

    async def big(ws):
        await ws.send_frame(0x1, b"x" * 2000)

    async def bad_utf8(ws):
        await ws.send_frame(0x1, b'{"type":"ping","id":"\xc0\xaf"}')

    async def unmasked(ws):
        await ws.send_raw(bytes([0x81, 0x02]) + b"{}")

    async def malformed(ws):
        for _ in range(10):
            await ws.send_text("nope")

    async def clean(ws):
        await ws.send_frame(0x8, close_payload(1000))

    cases = [("reason-rate", flood, "rate_limited", 4029),
             ("reason-binary", binary, "binary_message", 1003),
             ("reason-big", big, "message_too_big", 1009),
             ("reason-utf8", bad_utf8, "protocol_error", 1007),
             ("reason-unmasked", unmasked, "protocol_error", 1002),
             ("reason-malformed", malformed, "malformed_messages", 1008),
             ("reason-clean", clean, "disconnect", 1000)]
    for user, act, _, _ in cases:
        ws = await RawWS.open(d, tok=token(user))
        await ws.recv_json(3)
        await act(ws)
        code, _ = await ws.until_close(5, auto_pong=False)
        ws.close()
        STATE.setdefault("close_codes", {})[user] = code
    ws = await RawWS.open(d, tok=token("reason-expiry", exp_in=2))
    await ws.recv_json(3)
    code, _ = await ws.until_close(6)
    ws.close()
    STATE["close_codes"]["reason-expiry"] = code
    cases.append(("reason-expiry", None, "token_expired", 4001))
    want = {u for u, _, _, _ in cases}
    got = {}
    deadline = time.monotonic() + 8
    while want - set(got) and time.monotonic() < deadline:
        try:
            ev = await sse.next(max(0.1, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if ev is None:
            break
        dd = ev.get("data")
        if isinstance(dd, dict) and dd.get("type") == "session.disconnected" \
                and dd.get("user_id") in want:
            got[dd["user_id"]] = dd.get("reason")
    sse.close()
    for user, _, reason, code in cases:
        t.check(f"{user}: closed with {code}, session.disconnected reason {reason}",
                STATE["close_codes"].get(user) == code and got.get(user) == reason,
                (STATE["close_codes"].get(user), got.get(user)))


async def test_memory_back(t, d, args):
    await asyncio.sleep(2.5)   # lingering closes end, timers sweep
    rss0, rss1 = STATE.get("rss0"), d.rss_kb()
    tol = RSS_TOLERANCE_SANITIZER_KB if is_sanitizer_build(args.presenced) else RSS_TOLERANCE_KB
    t.note(f"VmRSS baseline {rss0} kB, after the attacks {rss1} kB, tolerance {tol} kB")
    t.check(f"memory back near baseline after the attacks (growth < {tol // 1024} MB)",
            rss0 is not None and rss1 is not None and rss1 - rss0 < tol, (rss0, rss1))
    r = await http(d, "GET", "/metrics")
    m = re.search(rb"presenced_connections(?:_open)?\s+(\d+)", r.body or b"")
    t.note(f"open connections now: {m.group(1).decode() if m else '?'}")
    await STATE["bystander"].close()


# --------------------------------------------------------------------------
# Per-client limits (a daemon of their own: the main group's bystander and
# baseline must not count against them).

LIMIT_FLAGS = {
    "--max-connections-per-ip": "8",
    "--connection-limit-exempt": "none",   # the tests connect from loopback
    "--http-first-byte-ms": "700",
}


async def test_connections_per_ip(t, d, args):
    # The harness's /healthz probes at startup count until the daemon has
    # seen them close.
    await asyncio.sleep(0.5)
    held = []
    for _ in range(8):
        r, w = await raw_conn(d)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")   # never finished
        held.append((r, w))
    await asyncio.sleep(0.2)
    r, w = await raw_conn(d)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data, eof = await read_all(r, 3)
    w.close()
    t.check("the 9th connection of one address over --max-connections-per-ip 8: "
            "closed unanswered", data == b"" and eof, data[:200])
    r0, w0 = held.pop()
    w0.close()
    await asyncio.sleep(0.3)
    r, w = await raw_conn(d)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data, _ = await read_all(r, 3)
    w.close()
    t.eq("one of them closed: a new connection from the address is served",
         parse_http(data)[0], 200)
    for _, w in held:
        w.close()
    await asyncio.sleep(0.3)
    m = await http(d, "GET", "/metrics")
    t.check("refusals counted in /metrics (too_many_connections_per_ip)",
            b"too_many_connections_per_ip" in (m.body or b""), (m.body or b"")[-300:])


async def test_first_byte_timeout(t, d, args):
    # A connection that never sends a byte is closed after
    # --http-first-byte-ms (700 ms here), long before --http-idle-ms.
    t0 = time.monotonic()
    r, w = await raw_conn(d)
    data, eof = await read_all(r, 5)
    elapsed = time.monotonic() - t0
    w.close()
    t.check("a silent connection is closed near --http-first-byte-ms (700 ms)",
            eof and data == b"" and 0.5 < elapsed < 4.5, (eof, data[:100], elapsed))
    # A client that spoke is not cut by it: it gets its answer.
    r, w = await raw_conn(d)
    await asyncio.sleep(0.1)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(1.2)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data, _ = await read_all(r, 3)
    w.close()
    t.eq("a keep-alive connection that spoke outlives --http-first-byte-ms",
         len(re.findall(rb"HTTP/1\.1 200 ", data)), 2)


async def test_max_connections_clamped(t, d, args):
    # Started under an open file limit of 200 with --max-connections 100000:
    # the daemon says so and keeps its connection limit under the file limit.
    class Limited(Daemon):
        def argv(self):
            return ["prlimit", "--nofile=200:200"] + super().argv()

    d2 = Limited(args.presenced, {"--max-connections": "100000",
                                  "--max-connections-per-ip": "0"}, "nofile-200")
    try:
        d2.start()
    except Exception as e:
        t.check("under ulimit -n 200: presenced starts", False, e)
        d2.cleanup()
        return
    try:
        err = d2.stderr_text()
        t.check("under ulimit -n 200: a warning says --max-connections was lowered to 136",
                "--max-connections 100000 lowered to 136" in err, err[-400:])
        conns = []
        for _ in range(136):
            conns.append(await raw_conn(d2))
        r, w = await raw_conn(d2)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data, _ = await read_all(r, 3)
        w.close()
        t.eq("the 137th connection: 503 too_many_connections (not EMFILE)",
             parse_http(data), (503, "too_many_connections"))
        for _, w in conns:
            w.close()
        await asyncio.sleep(0.5)
        r = await http(d2, "GET", "/healthz", auth=False)
        t.eq("after they closed: served again", r.status, 200)
    finally:
        d2.stop()
        d2.cleanup()


async def test_log_escaping(t, d, args):
    """An id holding bidirectional controls (U+202E RIGHT-TO-LEFT OVERRIDE,
    U+2066) reaches a log line (a refused subscribe quotes it): every log
    format writes them as escapes, never as the raw characters a terminal
    would act on."""
    evil = "rlo\u202eevil\u2066x"
    for fmt, want in (("text", "rlo\\u{202e}evil\\u{2066}x"),
                      ("logfmt", "rlo\\u202eevil\\u2066x"),
                      ("json", None)):
        d2 = Daemon(args.presenced, {"--log-format": fmt}, f"log-{fmt}")
        try:
            d2.start()
            c = await Client.connect(d2, "logger")
            await c.send({"type": "subscribe", "users": [evil], "id": 1})
            m = await c.expect_type("error", 3, id=1)
            await c.close()
            await asyncio.sleep(0.2)
            err = d2.stderr_text()
            raw = err.encode("utf-8")
            line = [x for x in err.splitlines() if "does not allow watching" in x]
            t.check(f"--log-format {fmt}: the refusal is logged",
                    m is not None and m.get("code") == "not_allowed" and line, (m, err[-300:]))
            t.check(f"--log-format {fmt}: no raw U+202E or U+2066 in the log",
                    b"\xe2\x80\xae" not in raw and b"\xe2\x81\xa6" not in raw, line)
            if want:
                t.check(f"--log-format {fmt}: written as {want}", line and want in line[0], line)
            else:
                ok = False
                try:
                    ok = bool(line) and evil in json.loads(line[0])["msg"]
                except ValueError:
                    pass
                t.check("--log-format json: the line is JSON and decodes to the id", ok, line)
        finally:
            d2.stop()
            d2.cleanup()


async def test_control_bytes_as_whitespace(t, d, args):
    """JSON allows four whitespace bytes between tokens; cJSON skips every
    byte up to 0x20, NUL included. A message with such a byte between
    tokens was taken, and the value around it was passed on as the client
    wrote it: a NUL cut a channel member's data short, a raw control byte
    went out as is, and every member got a message that is not JSON
    (found by fuzz_session)."""
    def tok(user):
        return token(user, extra={"channels": ["ctl:*"]})

    async def texts(ws, secs):
        out = []
        end = time.monotonic() + secs
        while time.monotonic() < end:
            try:
                m = await ws.recv(end - time.monotonic())
            except asyncio.TimeoutError:
                break
            if m[0] != "text":
                break
            out.append(m[1])
        return out

    def is_json(text):
        try:
            json.loads(text)
            return True
        except ValueError:
            return False

    member = await RawWS.open(d, tok=tok("ctl-member"))
    await member.recv_json()  # welcome
    await member.send_json({"type": "join", "channel": "ctl:1", "id": "j"})
    await texts(member, 0.5)
    # The member reads (and answers pings) all along, in the background.
    seen = []

    async def read_member():
        while True:
            seen.extend(await texts(member, 0.2))

    reader = asyncio.create_task(read_member())
    bad = await RawWS.open(d, tok=tok("ctl-bad"))
    await bad.recv_json()
    # The id first: a value after the byte could not be found again in the
    # text, so an id behind it was refused (bad_field) by chance.
    for msg in [b'{"type":"join","id":"a","channel":"ctl:1","data":{"n":1\x00}}',
                b'{"type":"join","id":"b","channel":"ctl:1","data":{"n":1\x01,"m":2}}',
                b'{"type":"join","id":"c","channel":"ctl:1","data":{"n":\x01"x"}}',
                b'{"type":"ping","id":\x1f 7}']:
        await bad.send_text(msg)
        got = await texts(bad, 0.5)
        t.check(f"{msg!r}: refused with error bad_json",
                len(got) == 1 and is_json(got[0]) and json.loads(got[0]).get("code") == "bad_json",
                got)
    await asyncio.sleep(0.3)
    t.eq("the channel's member got nothing from them (no join, no text that is not JSON)",
         seen, [])
    await bad.send_text(b'{"type":"join","channel":"ctl:1","data":{"n":1},"id":"d"}')
    await asyncio.sleep(0.5)
    reader.cancel()
    t.check("a join written as JSON still reaches the member",
            len(seen) == 1 and is_json(seen[0]) and json.loads(seen[0])["member"]["data"] == {"n": 1},
            seen)
    r = await http(d, "PUT", "/v1/sessions/ctl-http", body=b'{"user":"ctl-u",\x0b"ttl_ms":30000}')
    t.eq("an HTTP body with one: 400 bad_json", (r.status, r.error_code), (400, "bad_json"))
    member.close()
    bad.close()


test_slowloris.timeout = 30
test_close_reasons.timeout = 40
test_million_tiny_frames.timeout = 30
test_oversized_frames.timeout = 30
test_sessions_storm.timeout = 40


if __name__ == "__main__":
    run([
        ("hostile", FLAGS,
         [test_baseline, test_slowloris, test_never_finishing_frame, test_million_tiny_frames,
          test_oversized_frames, test_utf8_split, test_subscription_flood, test_token_replay,
          test_other_users_session, test_alg_confusion, test_sessions_storm,
          test_pipelined_garbage, test_http_strictness, test_origins, test_close_reasons,
          test_control_bytes_as_whitespace, test_memory_back]),
        ("per-client limits", LIMIT_FLAGS,
         [test_connections_per_ip, test_first_byte_timeout, test_max_connections_clamped,
          test_log_escaping]),
    ])
