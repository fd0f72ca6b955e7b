#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Heartbeats and inactivity (docs/protocol.md sections 1.2, 1.3): server
pings every heartbeat_ms; a client that never answers is closed with 4008 and
its user goes offline with reason timeout; a client that answers pings stays;
with --inactivity-ms a session that sends nothing but keepalives (pongs,
pings) becomes idle (reason inactivity) and online again on its next real
message; a client-set idle stays idle; a message answered by an error
(malformed or refused) is not activity, nor is a members page read, and a
status idle on a session idle by inactivity shows no online in between."""

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403


async def test_heartbeat_timeout(t, d, args):
    # --heartbeat-ms 200 --timeout-ms 1000
    sse = await SSE.open(d)
    good = await Client.connect(d, "answers-pings")     # websockets answers pings
    t.check("welcome: heartbeat_ms and timeout_ms are the configured ones",
            good.welcome.get("heartbeat_ms") == 200 and good.welcome.get("timeout_ms") == 1000, good.welcome)
    ws = await RawWS.open(d, tok=token("silent"))
    t.eq("silent client: upgraded", ws.status, 101)
    w = await ws.recv_json(3, auto_pong=False)
    t.check("silent client: welcome", w and w.get("type") == "welcome", w)
    sid = (w or {}).get("session_id")
    t0 = time.monotonic()
    code, msgs = await ws.until_close(6, auto_pong=False)
    dt = time.monotonic() - t0
    t.check("silent client: received server pings", ws.pings >= 2, ws.pings)
    t.eq("silent client (never pongs): closed with 4008", code, 4008)
    t.check("silent client: closed after about timeout_ms (1 s), not much later", 0.8 <= dt <= 3.0, dt)
    ev, evs = await sse.until(lambda e: ev_is(e, "user.offline", user_id="silent"), 3)
    sd = [e for e in evs if ev_is(e, "session.disconnected", user_id="silent")]
    t.check("silent client: session.disconnected with reason timeout",
            sd and sd[0]["data"].get("reason") == "timeout" and sd[0]["data"].get("session_id") == sid,
            ev_brief(evs))
    t.check("silent client: user.offline with reason timeout",
            ev is not None and ev["data"].get("reason") == "timeout", ev_brief(evs))
    ws.close()
    # The well-behaved client, silent at the application level but answering
    # pings, is still connected (pongs count as activity).
    await asyncio.sleep(0.5)
    p = await good.ping("alive")
    t.check("client answering pings but sending no messages stays connected > timeout_ms", p is not None)
    r = await http(d, "GET", "/v1/users/answers-pings")
    t.eq("its user is still online", (r.json() or {}).get("status"), "online")
    # Raw client that answers pings with pongs only.
    ws = await RawWS.open(d, tok=token("pong-only"))
    await ws.recv_json(3)
    deadline = time.monotonic() + 2.0
    closed = None
    while time.monotonic() < deadline:
        try:
            m = await ws.recv(0.3, auto_pong=True)
        except asyncio.TimeoutError:
            continue
        if m[0] in ("close", "eof"):
            closed = m
            break
    t.check("raw client answering pings with pongs stays connected for 2 s", closed is None, closed)
    ws.close()
    # Application pings alone also keep a session (without answering
    # WebSocket pings).
    ws = await RawWS.open(d, tok=token("app-pinger"))
    await ws.recv_json(3, auto_pong=False)
    deadline = time.monotonic() + 2.0
    closed = None
    n = 0
    while time.monotonic() < deadline and closed is None:
        await ws.send_json({"type": "ping", "id": n})
        n += 1
        end = time.monotonic() + 0.25
        while time.monotonic() < end:
            try:
                m = await ws.recv(max(0.01, end - time.monotonic()), auto_pong=False)
            except asyncio.TimeoutError:
                break
            if m[0] in ("close", "eof"):
                closed = m
                break
    t.check("client sending app pings (no WebSocket pongs) stays connected for 2 s", closed is None, closed)
    ws.close()
    await good.close()
    sse.close()
test_heartbeat_timeout.timeout = 30


async def test_inactivity(t, d, args):
    # --inactivity-ms 300, heartbeat long so that no pongs happen.
    w = await Client.connect(d, "iw", watch="*")
    await w.send({"type": "subscribe", "users": ["quiet"], "id": 1})
    await w.expect_type("presence", 3, id=1)
    sse = await SSE.open(d)
    q = await Client.connect(d, "quiet")
    m = await w.change("quiet", 2)
    t.check("inactivity: online on connect", m and m["users"][0].get("status") == "online", m)
    t0 = time.monotonic()
    m = await w.change("quiet", 3)
    dt = time.monotonic() - t0
    u = (m or {}).get("users", [{}])[0]
    t.check("inactivity: silent session becomes idle, reason inactivity",
            u.get("status") == "idle" and u.get("from") == "online" and u.get("reason") == "inactivity", m)
    t.check("inactivity: after about 300 ms", 0.15 <= dt <= 1.5, dt)
    ev, evs = await sse.until(lambda e: ev_is(e, "user.idle", user_id="quiet"), 3)
    st = [e for e in evs if ev_is(e, "session.status", user_id="quiet")]
    t.check("inactivity: SSE session.status reason inactivity before user.idle",
            st and st[0]["data"].get("reason") == "inactivity" and ev is not None
            and int(st[0]["id"]) < int(ev["id"]) and ev["data"].get("reason") == "inactivity", ev_brief(evs))
    # A real message (not a keepalive: test_keepalives_not_activity).
    await q.send({"type": "unsubscribe", "users": ["nobody"], "id": 1})
    m = await w.change("quiet", 2)
    u = (m or {}).get("users", [{}])[0]
    t.check("inactivity: next message -> online again, reason inactivity",
            u.get("status") == "online" and u.get("from") == "idle" and u.get("reason") == "inactivity", m)
    # Client-set idle stays idle despite messages.
    await q.send({"type": "status", "status": "idle", "id": 2})
    m = await w.change("quiet", 2)
    u = (m or {}).get("users", [{}])[0]
    t.check("inactivity: client sets idle -> idle, reason explicit",
            u.get("status") == "idle" and u.get("reason") == "explicit", m)
    for i in range(6):
        await q.send({"type": "unsubscribe", "users": ["nobody"], "id": 10 + i})
        await asyncio.sleep(0.12)
    ch = await w.changes(0.3, "quiet")
    t.eq("inactivity: a session the client set idle stays idle while it sends messages", len(ch), 0)
    await q.send({"type": "status", "status": "online", "id": 3})
    m = await w.change("quiet", 2)
    u = (m or {}).get("users", [{}])[0]
    t.check("inactivity: client sets online -> online, reason explicit",
            u.get("status") == "online" and u.get("reason") == "explicit", m)
    # Staying active keeps it online.
    for i in range(8):
        await q.send({"type": "unsubscribe", "users": ["nobody"], "id": 20 + i})
        await asyncio.sleep(0.1)
    ch = await w.changes(0.05, "quiet")
    t.eq("inactivity: a session sending messages every 100 ms stays online", len(ch), 0)
    await q.close()
    await w.close()
    sse.close()
test_inactivity.timeout = 30


async def test_refused_not_activity(t, d, args):
    # --inactivity-ms 300, heartbeat long. A frame the server answers with
    # an error did nothing for the user: it is not activity (protocol.md
    # 1.2), neither keeping a session online nor bringing an idle one back.
    w = await Client.connect(d, "rw", watch="*")
    await w.send({"type": "subscribe", "users": ["refused"], "id": 1})
    await w.expect_type("presence", 3, id=1)
    q = await Client.connect(d, "refused")   # its token grants no channel, watches only itself
    bad = [
        "{",                                                     # bad_json
        {"type": "nonsense", "id": "x1"},                        # unknown_type
        {"type": "subscribe", "users": ["someone"], "id": "x2"},  # not_allowed
        {"type": "leave", "channel": "room", "id": "x3"},         # not_joined
        {"type": "update", "channel": "room", "data": {}, "id": "x4"},  # not_joined
        {"type": "join", "channel": "room", "id": "x5"},          # channel_not_allowed
        {"type": "observe", "channel": "room", "id": "x6"},       # channel_not_allowed
    ]
    codes = []
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < 1.2:       # four times --inactivity-ms
        msg = bad[k % len(bad)]
        k += 1
        if msg == "{" and k > len(bad):
            continue  # the malformed ones count towards the 1008 close
        await q.send(msg)
        m = await q.expect_type("error", 2)
        codes.append((m or {}).get("code"))
        await asyncio.sleep(0.08)
    t.eq("refused: each frame answered by an error",
         sorted(set(codes)), ["bad_json", "channel_not_allowed", "not_allowed", "not_joined", "unknown_type"])
    ch = [(u.get("status"), u.get("reason")) for m in await w.changes(0.1, "refused") for u in m["users"]]
    t.eq("refused: a session sending only refused frames goes idle after --inactivity-ms",
         ch, [("online", "connect"), ("idle", "inactivity")])
    for msg in bad[1:]:
        await q.send(msg)
        await q.expect_type("error", 2)
    ch = await w.changes(0.4, "refused")
    t.eq("refused: refused frames do not bring the idle session online", ch, [])
    # Setting idle a session idle by inactivity: it stays idle (the client's
    # now), no online in between.
    await q.send({"type": "status", "status": "idle", "id": "si"})
    await q.expect_type("ack", 2, id="si")
    ch = await w.changes(0.4, "refused")
    t.eq("refused: status idle on a session idle by inactivity shows no online in between",
         [(u.get("status"), u.get("reason")) for m in ch for u in m["users"]], [])
    await q.send({"type": "status", "status": "online", "id": "so"})
    m = await w.change("refused", 2)
    t.eq("refused: status online brings it back (reason explicit)",
         [(u.get("status"), u.get("reason")) for u in (m or {}).get("users", [])], [("online", "explicit")])
    await q.close()
    await w.close()
test_refused_not_activity.timeout = 30


async def test_members_not_activity(t, d, args):
    # --inactivity-ms 300. A members request (the next page of a channel's
    # members, docs/protocol.md 4.2) is a read the client library makes by
    # itself after a snapshot with more, as it refreshes its token: a tab
    # reading a big room while its user is away does not stay online.
    w = await Client.connect(d, "mw", watch="*")
    await w.send({"type": "subscribe", "users": ["pager"], "id": 1})
    await w.expect_type("presence", 3, id=1)
    q = await Client.connect(d, "pager", tok=token("pager", extra={"channels": "*"}))
    await q.send({"type": "join", "channel": "big", "id": "j"})
    await q.expect_type("channel", 3, id="j")
    t0 = time.monotonic()
    pages = 0
    while time.monotonic() - t0 < 1.2:       # four times --inactivity-ms
        await q.send({"type": "members", "channel": "big", "after": "a", "id": "m"})
        pages += (await q.expect_type("channel", 2, id="m")) is not None
        await asyncio.sleep(0.08)
    t.check("members: each request answered by its page", pages >= 8, pages)
    ch = [(u.get("status"), u.get("reason")) for m in await w.changes(0.1, "pager") for u in m["users"]]
    t.eq("members: a session reading only pages goes idle after --inactivity-ms",
         ch, [("online", "connect"), ("idle", "inactivity")])
    await q.send({"type": "members", "channel": "big", "id": "m2"})
    await q.expect_type("channel", 2, id="m2")
    t.eq("members: a page read does not bring the idle session online", await w.changes(0.4, "pager"), [])
    await q.send({"type": "update", "channel": "big", "data": {"typing": True}, "id": "u"})
    m = await w.change("pager", 2)
    t.eq("members: an update (the user's) brings it back (reason inactivity)",
         [(u.get("status"), u.get("reason")) for u in (m or {}).get("users", [])], [("online", "inactivity")])
    await q.close()
    await w.close()
test_members_not_activity.timeout = 30


async def test_token_expiry(t, d, args):
    sse = await SSE.open(d)
    c = await Client.connect(d, "short-lived", tok=token("short-lived", exp_in=2))
    t.check("token expiring in 2 s: admitted", c.welcome.get("type") == "welcome", c.welcome)
    t0 = time.monotonic()
    code = await c.wait_closed(6)
    dt = time.monotonic() - t0
    t.eq("token expired while connected: closed with 4001", code, 4001)
    errs = [m for m in c.backlog if m.get("type") == "error"]
    t.check("token expired while connected: an error token_expired before the close",
            errs and errs[-1].get("code") == "token_expired", c.backlog)
    t.check("token expired while connected: closed soon after exp (within 4 s)", code is not None and dt <= 4.5, dt)
    ev, evs = await sse.until(lambda e: ev_is(e, "user.offline", user_id="short-lived"), 3)
    t.check("token expired while connected: user goes offline", ev is not None, ev_brief(evs))
    sse.close()
test_token_expiry.timeout = 20


async def test_keepalives_not_activity(t, d, args):
    # --inactivity-ms 600 --heartbeat-ms 100 --timeout-ms 5000. Keepalives
    # keep a connection open, not its session active: browsers answer the
    # server's pings by themselves and the JS client pings after 25 s of
    # silence, so counted, a tab its user had left never became idle.
    w = await Client.connect(d, "pw", watch="*")
    await w.send({"type": "subscribe", "users": ["ponger", "pinger", "mute", "busy"], "id": 1})
    await w.expect_type("presence", 3, id=1)
    ponger = await Client.connect(d, "ponger")          # websockets answers pings
    pinger = await Client.connect(d, "pinger")          # and sends app pings too
    busy = await Client.connect(d, "busy")              # and sends real messages
    mute = await RawWS.open(d, tok=token("mute"))       # never answers pings
    await mute.recv_json(3, auto_pong=False)
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 1.8:
        n += 1
        await pinger.send({"type": "ping", "id": n})
        await busy.send({"type": "unsubscribe", "users": ["nobody"], "id": n})
        await asyncio.sleep(0.1)
    msgs = await w.collect(0.2)
    ch = {}
    for m in msgs:
        if m.get("type") == "presence" and m.get("snapshot") is False:
            u = m["users"][0]
            ch.setdefault(u["user_id"], []).append((u.get("status"), u.get("reason")))
    went_idle = [("online", "connect"), ("idle", "inactivity")]
    t.eq("keepalives: a client only answering the server's pings goes idle after --inactivity-ms",
         ch.get("ponger"), went_idle)
    t.eq("keepalives: a client sending only app pings (every 100 ms) goes idle too",
         ch.get("pinger"), went_idle)
    t.eq("keepalives: a client sending real messages stays online", ch.get("busy"), [("online", "connect")])
    t.eq("no pongs, no messages: idle after --inactivity-ms", ch.get("mute"), went_idle)
    pongs = [m for m in pinger.backlog + await pinger.collect(0.2) if m.get("type") == "pong"]
    t.check("keepalives: the pings are answered (the connection stays up)", len(pongs) >= n - 1, (len(pongs), n))
    mute.close()
    for c in (ponger, pinger, busy):
        await c.close()
    await w.close()
test_keepalives_not_activity.timeout = 20


async def test_http_idle(t, d, args):
    # --http-idle-ms 500: a connection that never finishes its request is not
    # held for ever (DESIGN.md 5: over a limit, never a leak).
    reader, writer = await asyncio.open_connection(HOST, d.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await writer.drain()
    t0 = time.monotonic()
    try:
        data = await asyncio.wait_for(reader.read(), 5)
        closed = True
    except asyncio.TimeoutError:
        data, closed = b"", False
    dt = time.monotonic() - t0
    t.check("unfinished HTTP request: connection closed by the server after --http-idle-ms",
            closed and dt < 4, (closed, round(dt, 2), data[:100]))
    writer.close()
    reader, writer = await asyncio.open_connection(HOST, d.port)
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(reader.read(), 5)
        closed = True
    except asyncio.TimeoutError:
        closed = False
    t.check("connection that sends nothing: closed after --http-idle-ms", closed and time.monotonic() - t0 < 4)
    writer.close()
test_http_idle.timeout = 20


if __name__ == "__main__":
    run([
        ("heartbeat", {"--heartbeat-ms": "200", "--timeout-ms": "1000"}, [test_heartbeat_timeout]),
        ("token-expiry", {}, [test_token_expiry]),
        ("keepalives", {"--inactivity-ms": "600", "--heartbeat-ms": "100", "--timeout-ms": "5000"},
         [test_keepalives_not_activity]),
        ("http-idle", {"--http-idle-ms": "500"}, [test_http_idle]),
        ("inactivity", {"--inactivity-ms": "300", "--heartbeat-ms": "60000"}, [test_inactivity]),
        ("refused", {"--inactivity-ms": "300", "--heartbeat-ms": "60000"},
         [test_refused_not_activity, test_members_not_activity]),
    ])
