#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Limits (docs/protocol.md section 1.3 and DESIGN.md section 5): frame and
message size -> 1009, messages per second -> 4029, sessions per user -> error
then 4031, watched users -> too_many_watched, header bytes -> 431,
connections -> 503, slow reader -> 4030 without the daemon's memory growing
without end. Each time the daemon keeps serving everybody else."""

import asyncio
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403


async def test_frame_size(t, d, args):
    # --max-frame 1024 --max-message 4096
    c = await Client.connect(d, "big")
    await c.send({"type": "ping", "id": "x" * 20, "pad": "y" * 900})
    m = await c.expect_type("pong", 3)
    t.check("frame under --max-frame: answered", m is not None, m)
    await c.send({"type": "ping", "pad": "y" * 2000})
    code = await c.wait_closed(3)
    t.eq("frame over --max-frame: closed with 1009", code, 1009)
    # A message made of fragments each under the frame limit, over the message limit.
    ws = await RawWS.open(d, tok=token("big2"))
    await ws.recv_json(3)
    body = ('{"type":"ping","pad":"' + "z" * 5000 + '"}').encode()
    chunks = [body[i:i + 1000] for i in range(0, len(body), 1000)]
    for i, ch in enumerate(chunks):
        await ws.send_frame(0x1 if i == 0 else 0x0, ch, fin=(i == len(chunks) - 1))
    code, msgs = await ws.until_close(3)
    t.eq("message over --max-message in small fragments: closed with 1009", code, 1009)
    ws.close()
    # Fragments adding up to less than the limit are fine.
    ws = await RawWS.open(d, tok=token("big3"))
    await ws.recv_json(3)
    body = ('{"type":"ping","id":"frag","pad":"' + "z" * 2500 + '"}').encode()
    chunks = [body[i:i + 1000] for i in range(0, len(body), 1000)]
    for i, ch in enumerate(chunks):
        await ws.send_frame(0x1 if i == 0 else 0x0, ch, fin=(i == len(chunks) - 1))
    m = await ws.recv_json(3)
    t.check("fragmented message under --max-message: answered", m and m.get("type") == "pong"
            and m.get("id") == "frag", m)
    ws.close()


async def test_rate(t, d, args):
    # --max-msgs-per-sec 20
    c = await Client.connect(d, "slowpoke")
    for i in range(10):
        await c.send({"type": "ping", "id": i})
        await asyncio.sleep(0.11)
    got = [m for m in await c.collect(0.3) if m.get("type") == "pong"]
    t.eq("rate: 10 messages in 1.1 s under a 20/s limit are all answered", len(got), 10)
    c = await Client.connect(d, "flooder")
    closed = None
    for i in range(200):
        try:
            await c.send({"type": "ping", "id": i})
        except websockets.exceptions.ConnectionClosed as e:
            closed = e.code
            break
    if closed is None:
        closed = await c.wait_closed(3)
    t.eq("rate: 200 messages at once over a 20/s limit: closed with 4029", closed, 4029)
    errs = [m for m in c.backlog if m.get("type") == "error"]
    t.check("rate: an error rate_limited before the close",
            errs and errs[-1].get("code") == "rate_limited", errs or c.backlog[-3:])
    r = await http(d, "GET", "/v1/users/flooder")
    t.eq("rate: flooder's session removed", (r.json() or {}).get("sessions"), 0)


async def test_sessions_per_user(t, d, args):
    # --max-sessions-per-user 2
    a = await Client.connect(d, "many")
    b = await Client.connect(d, "many")
    ws = await RawWS.open(d, tok=token("many"))
    t.eq("3rd session: upgraded (refused after the upgrade with a close code)", ws.status, 101)
    code, msgs = await ws.until_close(3)
    errs = [m for m in msgs if isinstance(m, dict) and m.get("type") == "error"]
    t.check("3rd session: an error too_many_sessions first",
            len(errs) == 1 and errs[0].get("code") == "too_many_sessions", msgs)
    t.check("3rd session: no welcome", not any(isinstance(m, dict) and m.get("type") == "welcome" for m in msgs), msgs)
    t.eq("3rd session: closed with 4031", code, 4031)
    ws.close()
    pa = await a.ping("a")
    pb = await b.ping("b")
    t.check("sessions limit: the first two sessions are untouched", pa is not None and pb is not None)
    r = await http(d, "GET", "/v1/users/many")
    t.eq("sessions limit: user has 2 sessions", (r.json() or {}).get("sessions"), 2)
    await b.close()
    await asyncio.sleep(0.2)
    c = await Client.connect(d, "many")
    t.check("sessions limit: a slot freed by a close can be reused", c.welcome.get("type") == "welcome", c.welcome)
    for x in (a, c):
        await x.close()


async def test_watch_limit(t, d, args):
    # --max-watch 5
    c = await Client.connect(d, "watchy", watch="*")
    await c.send({"type": "subscribe", "users": [f"w{i}" for i in range(6)], "id": 1})
    m = await c.recv()
    t.check("watch limit: 6 users at once over 5 -> error too_many_watched",
            m.get("type") == "error" and m.get("code") == "too_many_watched" and m.get("id") == 1, m)
    await c.send({"type": "subscribe", "users": [f"w{i}" for i in range(3)], "id": 2})
    m = await c.recv()
    t.check("watch limit: 3 users -> snapshot", m.get("type") == "presence" and m.get("id") == 2, m)
    await c.send({"type": "subscribe", "users": ["w3", "w4", "w5"], "id": 3})
    m = await c.recv()
    t.check("watch limit: 3 more (6 in all) -> error too_many_watched",
            m.get("type") == "error" and m.get("code") == "too_many_watched", m)
    await c.send({"type": "subscribe", "users": ["w0", "w3", "w4"], "id": 4})
    m = await c.recv()
    t.check("watch limit: re-subscribing to a watched user does not count twice (5 in all)",
            m.get("type") == "presence" and m.get("id") == 4, m)
    await c.send({"type": "unsubscribe", "users": ["w0", "w1"], "id": 5})
    await c.expect_type("ack", 3, id=5)
    await c.send({"type": "subscribe", "users": ["w7", "w8"], "id": 6})
    m = await c.recv()
    t.check("watch limit: unsubscribing frees room", m.get("type") == "presence" and m.get("id") == 6, m)
    p = await c.ping("alive")
    t.check("watch limit: connection stays open", p is not None)
    await c.close()


async def test_header_bytes(t, d, args):
    # --max-header-bytes 2048
    r = await http(d, "GET", "/healthz", headers={"X-Pad": "p" * 1000}, auth=False)
    t.eq("headers under the limit: 200", r.status, 200)
    r = await http(d, "GET", "/healthz", headers={"X-Pad": "p" * 4000}, auth=False)
    t.check("headers over --max-header-bytes: 431 headers_too_large",
            r.status == 431 and r.error_code == "headers_too_large", r)
    r = await http(d, "GET", "/v1/users/bob", headers={f"X-Pad-{i}": "p" * 100 for i in range(40)})
    t.check("many headers over the limit: 431 headers_too_large",
            r.status == 431 and r.error_code == "headers_too_large", r)
    ws = await RawWS.open(d, tok=token("hdr"), headers={"X-Pad": "p" * 4000})
    r = ws.response()
    ws.close()
    t.check("WebSocket upgrade with headers over the limit: 431 headers_too_large",
            r.status == 431 and r.error_code == "headers_too_large", r)
    r = await http(d, "GET", "/v1/users/" + "x" * 3000)
    t.check("request line over the limit: 431 (or 414) with a JSON error",
            r.status in (431, 414) and r.error_code is not None, r)


async def test_connections(t, d, args):
    # --max-connections 4
    await asyncio.sleep(0.3)   # let the harness's health-check connection go
    clients = []
    for i in range(4):
        clients.append(await Client.connect(d, f"conn{i}"))
    ws = await RawWS.open(d, tok=token("conn-extra"))
    r = ws.response()
    ws.close()
    t.check("connection over --max-connections: 503 too_many_connections",
            r.status == 503 and r.error_code == "too_many_connections", r)
    try:
        r = await http(d, "GET", "/healthz", auth=False)
        t.check("HTTP connection over the limit: 503", r.status == 503, r)
    except Exception as e:
        t.check("HTTP connection over the limit: 503", False, e)
    p = await clients[0].ping("still")
    t.check("connection limit: existing clients keep working", p is not None)
    await clients[0].close()
    await asyncio.sleep(0.3)
    c = await Client.connect(d, "conn-after")
    t.check("connection limit: a freed slot can be used again", c.welcome.get("type") == "welcome")
    await c.close()
    for c in clients[1:]:
        await c.close()
    await asyncio.sleep(0.3)


def _ask(sock, raw, timeout=3.0):
    """Send raw on a blocking socket; read one answer (head and a body of
    its Content-Length). (status, headers, body); status None at EOF."""
    sock.settimeout(timeout)
    sock.sendall(raw)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, {}, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    n = int(headers.get("content-length", 0))
    while len(body) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split(" ")[1]), headers, body


def _dropped(sock):
    """Whether the daemon has closed this (silent) connection: EOF or a
    reset, with no byte of an answer before it."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except (ConnectionError, OSError):
        return True


async def test_over_limit_burst(t, d, args):
    """Connections past --max-connections are held to be answered 503 (until
    their first byte, or --http-first-byte-ms), each on a descriptor of the
    spare between the connection limit and the open file limit, which
    everything else the daemon opens needs too. Up to 64 were held: under a
    file limit 64 above the connection limit (what presenced lowers
    --max-connections to), a burst of 64 silent connects took every spare
    descriptor, and the daemon could open nothing (EMFILE on accept, on its
    own files) until they timed out. Now at most half the spare is held
    (32 here); further connections are dropped at once, unanswered, as
    docs/security.md says. Demo mode, so that a request needs a file opened
    (its page)."""
    class Limited(Daemon):
        def argv(self):
            return ["prlimit", "--nofile=72:72"] + super().argv()

    web = os.path.join(args.source_dir, "web")
    d2 = Limited(args.presenced, {"--max-connections": "8", "--http-first-byte-ms": "30000",
                                  "--demo": "", "--jwt-secret": None, "--web-root": web},
                 "burst-nofile-72")
    try:
        d2.start()
    except Exception as e:
        t.check("under ulimit -n 72: presenced starts", False, e)
        d2.cleanup()
        return
    socks = []
    try:
        await asyncio.sleep(0.3)   # the harness's start-up check goes
        page = socket.create_connection((HOST, d2.port), timeout=3)
        socks.append(page)
        get_page = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        st, _, body = _ask(page, get_page)
        t.check("a keep-alive client fetches the demo page", st == 200 and len(body) > 100, (st, body[:100]))
        for _ in range(7):         # the other 7 of --max-connections 8, silent
            socks.append(socket.create_connection((HOST, d2.port), timeout=3))
        await asyncio.sleep(0.3)
        burst = [socket.create_connection((HOST, d2.port), timeout=3) for _ in range(64)]
        socks += burst
        await asyncio.sleep(1.0)
        dropped = [s for s in burst if _dropped(s)]
        held = [s for s in burst if s not in dropped]
        t.check("64 silent connections past --max-connections 8 (64 spare descriptors): "
                "32 held (half the spare), 32 dropped at once",
                len(held) == 32 and len(dropped) == 32, (len(held), len(dropped)))
        nfd = len(os.listdir(f"/proc/{d2.pid}/fd"))
        t.check("the daemon's open descriptors leave a quarter of the spare free (<= 56 of 72)",
                nfd <= 56, nfd)
        st, _, body = _ask(page, get_page)
        t.check("during the burst the daemon still opens its files: the page is served (200)",
                st == 200 and len(body) > 100, (st, body[:200]))
        t0 = time.monotonic()
        late = socket.create_connection((HOST, d2.port), timeout=3)
        socks.append(late)
        gone = False
        while not gone and time.monotonic() - t0 < 2:
            await asyncio.sleep(0.05)
            gone = _dropped(late)
        t.check("a connection made after the burst: dropped at once (under 1 s), unanswered",
                gone and time.monotonic() - t0 < 1, round(time.monotonic() - t0, 2))
        h = held[0]
        h.setblocking(True)
        st, _, body = _ask(h, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        code = None
        try:
            code = json.loads(body)["error"]["code"]
        except Exception:
            pass
        t.check("a held connection that speaks: 503 too_many_connections",
                st == 503 and code == "too_many_connections", (st, body[:200]))
        for s in socks:
            s.close()
        socks = []
        await asyncio.sleep(0.5)
        r = await http(d2, "GET", "/healthz", auth=False)
        t.eq("after they closed: a new client is served", r.status, 200)
    finally:
        for s in socks:
            s.close()
        d2.stop()
        rep = sanitizer_report(d2.stderr_text())
        t.check("burst: no sanitizer report in that daemon's stderr", not rep, rep)
        d2.cleanup()


async def test_slow_reader(t, d, args):
    # --max-write-queue 65536, --max-msgs-per-sec high
    rss0 = d.rss_kb()
    slow = await RawWS.open(d, tok=token("slow", watch="*"), rcvbuf=4096)
    t.eq("slow reader: upgraded", slow.status, 101)
    w = await slow.recv_json(3)
    n_users = 20
    users = [f"flip{i}" for i in range(n_users)]
    await slow.send_json({"type": "subscribe", "users": users, "id": 1})
    # From here on the slow client never reads.
    flippers = []
    for u in users:
        flippers.append(await Client.connect(d, u, max_queue=None))
    flips = 1500
    t0 = time.monotonic()

    async def flip(c):
        for i in range(flips):
            await c.send('{"type":"status","status":"%s"}' % ("idle" if i % 2 == 0 else "online"))
            if i % 100 == 0:
                await asyncio.sleep(0)
    await asyncio.gather(*(flip(c) for c in flippers))
    # Wait until the daemon dropped the slow session (asked through the API:
    # an SSE consumer would itself have to keep up with the flood).
    dropped = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = await http(d, "GET", "/v1/users/slow")
        if (r.json() or {}).get("sessions") == 0:
            dropped = True
            break
        await asyncio.sleep(0.2)
    t.note(f"slow reader: flood of {n_users * flips} changes sent in {time.monotonic() - t0:.1f}s")
    rss1 = d.rss_kb()
    t.check("slow reader: its session is dropped", dropped)
    # Now read what the slow client got: data, then a close with 4030.
    code, nframes, nbytes = await slow.drain_to_eof(30)
    t.eq("slow reader: closed with 4030", code, 4030)
    t.note(f"slow reader: {nframes} frames, {nbytes} bytes were buffered for it")
    slow.close()
    t.check("slow reader: daemon memory stays bounded (RSS growth < 64 MB)",
            rss0 is not None and rss1 is not None and rss1 - rss0 < 65536, (rss0, rss1))
    t.note(f"RSS before {rss0} kB, after flood {rss1} kB")
    p = await flippers[0].ping("after")
    t.check("slow reader: other clients keep working", p is not None)
    for c in flippers:
        await c.close()
test_slow_reader.timeout = 60


async def test_slow_sse(t, d, args):
    # --log-capacity 1000: an event stream consumer that stops reading while
    # ~60000 events happen falls out of the log. It must then get a gap (or be
    # closed so it resumes), never make the daemon buffer without end.
    rss0 = d.rss_kb()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (HOST, d.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2 ** 16)
    writer.write(("GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % API_KEY).encode())
    await writer.drain()
    flippers = [await Client.connect(d, f"sflip{i}", max_queue=None) for i in range(10)]

    async def flip(c):
        for i in range(1500):
            await c.send('{"type":"status","status":"%s"}' % ("idle" if i % 2 == 0 else "online"))
            if i % 100 == 0:
                await asyncio.sleep(0)
    await asyncio.gather(*(flip(c) for c in flippers))
    # Let the daemon process everything (the flippers' own requests are answered in order).
    for c in flippers:
        await c.ping("done", timeout=20)
    rss1 = d.rss_kb()
    t.check("slow event consumer: daemon memory stays bounded (RSS growth < 64 MB)",
            rss0 is not None and rss1 is not None and rss1 - rss0 < 65536, (rss0, rss1))
    # Now read everything the consumer gets for a while.
    data = bytearray()
    deadline = time.monotonic() + 20
    eof = gap = False
    while time.monotonic() < deadline and not gap:
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 20), 3.0)
        except asyncio.TimeoutError:
            break       # stalled for 3 s without telling the consumer anything
        except (ConnectionError, OSError):
            eof = True
            break
        if not chunk:
            eof = True
            break
        data += chunk
        gap = b"event: gap" in data[-len(chunk) - 20:]
    text = data.decode("utf-8", "replace")
    t.check("slow event consumer: told it fell behind (gap event) or disconnected to resume",
            gap or eof, (len(data), text[-300:]))
    t.note(f"slow event consumer: {'gap event' if gap else 'no gap'}, "
           f"{'disconnected' if eof else 'still connected'}, {len(data)} bytes read")
    writer.close()
    p = await flippers[0].ping("after")
    t.check("slow event consumer: other clients keep working", p is not None)
    for c in flippers:
        await c.close()
test_slow_sse.timeout = 60


async def test_many_clients(t, d, args):
    n = 400
    sem = asyncio.Semaphore(50)

    async def one(i):
        async with sem:
            return await Client.connect(d, f"many{i % 100}")
    clients = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    ok = [c for c in clients if isinstance(c, Client) and c.welcome.get("type") == "welcome"]
    t.eq(f"{n} concurrent clients: all welcomed", len(ok), n)
    r = await http(d, "GET", "/metrics")
    line = [l for l in r.body.decode().split("\n") if l.startswith("presenced_sessions ")]
    t.check(f"{n} concurrent clients: presenced_sessions = {n}", line and float(line[0].split()[1]) == n, line)
    r = await http(d, "GET", "/v1/users/many7")
    t.eq("each of 100 users holds 4 sessions", (r.json() or {}).get("sessions"), 4)
    await asyncio.gather(*(c.close() for c in ok))
    await asyncio.sleep(0.5)
    r = await http(d, "GET", "/metrics")
    line = [l for l in r.body.decode().split("\n") if l.startswith("presenced_sessions ")]
    t.check("after they all close: presenced_sessions = 0", line and float(line[0].split()[1]) == 0, line)
test_many_clients.timeout = 60


if __name__ == "__main__":
    run([
        ("limits", {"--max-frame": "1024", "--max-message": "4096", "--max-msgs-per-sec": "20",
                    "--max-sessions-per-user": "2", "--max-watch": "5", "--max-header-bytes": "2048"},
         [test_frame_size, test_rate, test_sessions_per_user, test_watch_limit, test_header_bytes]),
        ("connections", {"--max-connections": "4"}, [test_connections, test_over_limit_burst]),
        ("slow-reader", {"--max-write-queue": "65536", "--max-msgs-per-sec": "1000000"},
         [test_slow_reader, test_many_clients]),
        ("slow-sse", {"--max-msgs-per-sec": "1000000",
                      "--log-capacity": "1000"}, [test_slow_sse]),
    ])
