#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Client protocol v1 (docs/protocol.md section 1.2): every client message and
every reply, presence as a subscriber sees it, user transitions across two
sessions of one user, message-level error codes."""

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


async def test_welcome(t, d, args):
    c1 = await Client.connect(d, "alice")
    w = c1.welcome
    t.eq("welcome: type", w.get("type"), "welcome")
    t.eq("welcome: protocol 1", w.get("protocol"), 1)
    t.check("welcome: session_id is a non-empty string",
            isinstance(w.get("session_id"), str) and 1 <= len(w["session_id"]) <= 128, w)
    t.eq("welcome: user_id is the token's sub", w.get("user_id"), "alice")
    t.check("welcome: heartbeat_ms is a positive integer",
            is_int(w.get("heartbeat_ms")) and w["heartbeat_ms"] > 0, w)
    t.check("welcome: timeout_ms is a positive integer",
            is_int(w.get("timeout_ms")) and w["timeout_ms"] > 0, w)
    c2 = await Client.connect(d, "alice")
    t.check("welcome: two sessions of one user get different session ids",
            c2.session_id and c2.session_id != c1.session_id, (c1.session_id, c2.session_id))
    await c1.close()
    await c2.close()


async def test_ping_pong(t, d, args):
    c = await Client.connect(d, "pinger")
    before = now_ms()
    await c.send({"type": "ping", "id": 9})
    m = await c.recv()
    t.eq("ping: answered by pong", m.get("type"), "pong")
    t.eq("ping: pong carries the numeric id", m.get("id"), 9)
    t.check("ping: pong has ts in ms near now",
            is_int(m.get("ts")) and before - 5000 <= m["ts"] <= now_ms() + 5000, m)
    await c.send({"type": "ping", "id": "abc"})
    m = await c.recv()
    t.check("ping: pong carries the string id", m.get("type") == "pong" and m.get("id") == "abc", m)
    await c.send({"type": "ping"})
    m = await c.recv()
    t.check("ping without id: pong without id", m.get("type") == "pong" and "id" not in m, m)
    await c.close()


async def test_status_ack(t, d, args):
    c = await Client.connect(d, "acker")
    await c.send({"type": "status", "status": "idle", "id": 5})
    m = await c.expect_type("ack", 3)
    t.check("status idle with id: ack with the same id", m is not None and m.get("id") == 5, m)
    await c.send({"type": "status", "status": "online", "id": "s-2"})
    m = await c.expect_type("ack", 3)
    t.check("status online with string id: ack with the same id",
            m is not None and m.get("id") == "s-2", m)
    r = await http(d, "GET", "/v1/users/acker")
    t.eq("status online: backend sees the user online", (r.json() or {}).get("status"), "online")
    await c.send({"type": "status", "status": "idle", "id": 6})
    await c.expect_type("ack", 3, id=6)
    r = await http(d, "GET", "/v1/users/acker")
    t.eq("status idle: backend sees the user idle", (r.json() or {}).get("status"), "idle")
    await c.close()


async def test_subscribe_snapshot(t, d, args):
    bob = await Client.connect(d, "bob")
    await bob.send({"type": "status", "status": "idle", "id": 1})
    await bob.expect_type("ack", 3)
    carol = await Client.connect(d, "carol")
    w = await Client.connect(d, "watcher1", watch="*")
    t0 = now_ms()
    await w.send({"type": "subscribe", "users": ["bob", "carol", "ghost-never-seen"], "id": 7})
    m = await w.expect_type("presence", 3)
    t.check("subscribe: answered by a presence snapshot", m is not None and m.get("snapshot") is True, m)
    if m is None:
        return
    t.eq("subscribe: snapshot carries the request id", m.get("id"), 7)
    users = {u.get("user_id"): u for u in m.get("users", [])}
    t.eq("subscribe: snapshot lists every named user", sorted(users), ["bob", "carol", "ghost-never-seen"])
    b = users.get("bob", {})
    t.eq("snapshot: idle user shown idle", b.get("status"), "idle")
    t.eq("snapshot: online user shown online", users.get("carol", {}).get("status"), "online")
    g = users.get("ghost-never-seen", {})
    t.eq("snapshot: never-seen user shown offline", g.get("status"), "offline")
    t.check("snapshot: never-seen user has since 0 and last_seen 0",
            g.get("since") == 0 and g.get("last_seen") == 0, g)
    for name in ("bob", "carol"):
        u = users.get(name, {})
        t.check(f"snapshot: {name} has integer since/last_seen/version",
                is_int(u.get("since")) and is_int(u.get("last_seen")) and is_int(u.get("version"))
                and 0 < u["since"] <= t0 + 5000 and u["last_seen"] > 0, u)
    # A user who was seen and went offline keeps last_seen.
    dave = await Client.connect(d, "dave")
    await dave.close()
    await asyncio.sleep(0.3)
    await w.send({"type": "subscribe", "users": ["dave"], "id": 8})
    m = await w.expect_type("presence", 3, id=8)
    u = (m or {}).get("users", [{}])[0]
    t.check("snapshot: user who left is offline with last_seen kept",
            u.get("status") == "offline" and is_int(u.get("last_seen")) and u["last_seen"] > 0, m)
    for c in (bob, carol, w):
        await c.close()


async def test_changes_exactly_once(t, d, args):
    w = await Client.connect(d, "watcher2", watch=["erin"])
    await w.send({"type": "subscribe", "users": ["erin"], "id": 1})
    snap = await w.expect_type("presence", 3, id=1)
    t.check("changes: snapshot of an offline user", snap and snap["users"][0]["status"] == "offline", snap)
    erin = await Client.connect(d, "erin")
    ch = await w.changes(0.7, "erin")
    t.eq("changes: connect seen as exactly one presence change", len(ch), 1)
    if ch:
        u = ch[0]["users"]
        t.eq("changes: one user per change message", len(u), 1)
        u = u[0]
        t.check("changes: offline -> online, reason connect",
                u.get("status") == "online" and u.get("from") == "offline" and u.get("reason") == "connect", u)
        t.check("changes: change has since, last_seen, version, seq",
                all(is_int(u.get(k)) for k in ("since", "last_seen", "version", "seq")), u)
    v0 = ch[0]["users"][0].get("version", 0) if ch else 0
    seq0 = ch[0]["users"][0].get("seq", 0) if ch else 0
    await erin.send({"type": "status", "status": "idle"})
    ch = await w.changes(0.7, "erin")
    t.eq("status idle: subscriber sees exactly one presence change", len(ch), 1)
    if ch:
        u = ch[0]["users"][0]
        t.check("status idle: online -> idle, reason explicit",
                u.get("status") == "idle" and u.get("from") == "online" and u.get("reason") == "explicit", u)
        t.check("status idle: version increased", is_int(u.get("version")) and u["version"] > v0, u)
        v0 = u.get("version", v0)
        seq0 = u.get("seq", 0)
    await erin.send({"type": "status", "status": "idle"})
    ch = await w.changes(0.5, "erin")
    t.eq("status idle again: no presence change", len(ch), 0)
    await erin.send({"type": "status", "status": "online"})
    ch = await w.changes(0.7, "erin")
    t.eq("status online: subscriber sees exactly one presence change", len(ch), 1)
    if ch:
        u = ch[0]["users"][0]
        t.check("status online: idle -> online, reason explicit",
                u.get("status") == "online" and u.get("from") == "idle" and u.get("reason") == "explicit", u)
        t.check("status online: version and seq increased",
                u.get("version", 0) > v0 and u.get("seq", 0) > seq0, u)
    await erin.close()
    ch = await w.changes(0.7, "erin")
    t.eq("disconnect: subscriber sees exactly one presence change", len(ch), 1)
    if ch:
        u = ch[0]["users"][0]
        t.check("disconnect: online -> offline, reason disconnect, last_seen kept",
                u.get("status") == "offline" and u.get("from") == "online"
                and u.get("reason") == "disconnect" and u.get("last_seen", 0) > 0, u)
    await w.close()


async def test_unsubscribe(t, d, args):
    w = await Client.connect(d, "watcher3", watch="*")
    frank = await Client.connect(d, "frank")
    await w.send({"type": "subscribe", "users": ["frank"], "id": "s"})
    await w.expect_type("presence", 3, id="s")
    await frank.send({"type": "status", "status": "idle"})
    ch = await w.changes(0.5, "frank")
    t.eq("unsubscribe: change seen while subscribed", len(ch), 1)
    await w.send({"type": "unsubscribe", "users": ["frank"], "id": 11})
    m = await w.expect_type("ack", 3)
    t.check("unsubscribe with id: ack with the same id", m is not None and m.get("id") == 11, m)
    await frank.send({"type": "status", "status": "online"})
    await frank.close()
    ch = await w.changes(0.7, "frank")
    t.eq("unsubscribe: no presence changes after it", len(ch), 0)
    p = await w.ping("still")
    t.check("unsubscribe: connection still works", p is not None)
    await w.close()


async def test_two_sessions(t, d, args):
    w = await Client.connect(d, "watcher4", watch="*")
    await w.send({"type": "subscribe", "users": ["gina"], "id": 1})
    await w.expect_type("presence", 3, id=1)
    s1 = await Client.connect(d, "gina")
    s2 = await Client.connect(d, "gina")
    ch = await w.changes(0.7, "gina")
    t.eq("two sessions: second connect emits no second user change", len(ch), 1)
    await s1.send({"type": "status", "status": "idle"})
    ch = await w.changes(0.5, "gina")
    t.eq("two sessions: one session idle while the other online: no user change", len(ch), 0)
    r = await http(d, "GET", "/v1/users/gina")
    t.check("two sessions: backend shows online with 2 sessions",
            (r.json() or {}).get("status") == "online" and (r.json() or {}).get("sessions") == 2, r)
    await s2.send({"type": "status", "status": "idle"})
    ch = await w.changes(0.5, "gina")
    t.check("two sessions: both idle -> user idle (one change)",
            len(ch) == 1 and ch[0]["users"][0].get("status") == "idle", ch)
    await s2.send({"type": "status", "status": "online"})
    ch = await w.changes(0.5, "gina")
    t.check("two sessions: second session online while first idle -> user online",
            len(ch) == 1 and ch[0]["users"][0].get("status") == "online"
            and ch[0]["users"][0].get("from") == "idle", ch)
    await s1.send({"type": "status", "status": "online"})
    ch = await w.changes(0.4, "gina")
    t.eq("two sessions: first session online too: no user change", len(ch), 0)
    await s2.close()
    ch = await w.changes(0.6, "gina")
    t.eq("two sessions: closing one of two online sessions emits no user event", len(ch), 0)
    s3 = await Client.connect(d, "gina")
    await s1.send({"type": "status", "status": "idle"})
    await w.changes(0.4, "gina")
    await s3.close()
    ch = await w.changes(0.6, "gina")
    t.check("two sessions: closing the only online session leaves the idle one -> user idle",
            len(ch) == 1 and ch[0]["users"][0].get("status") == "idle"
            and ch[0]["users"][0].get("from") == "online", ch)
    await s1.close()
    ch = await w.changes(0.6, "gina")
    t.check("two sessions: closing the last session -> user offline",
            len(ch) == 1 and ch[0]["users"][0].get("status") == "offline", ch)
    await w.close()


async def test_watch_claim(t, d, args):
    c = await Client.connect(d, "hank")
    await c.send({"type": "subscribe", "users": ["hank"], "id": 1})
    m = await c.recv()
    t.check("watch absent: may subscribe to itself",
            m.get("type") == "presence" and m.get("snapshot") is True and m.get("id") == 1, m)
    await c.send({"type": "subscribe", "users": ["ivy"], "id": 2})
    m = await c.recv()
    t.check("watch absent: subscribing to someone else -> error not_allowed with id",
            m.get("type") == "error" and m.get("code") == "not_allowed" and m.get("id") == 2, m)
    t.check("error: carries a message", isinstance(m.get("message"), str) and m.get("message"), m)
    p = await c.ping("after-error")
    t.check("error: connection stays open", p is not None)
    await c.close()
    c = await Client.connect(d, "ian", watch=["jo"])
    await c.send({"type": "subscribe", "users": ["jo"], "id": 3})
    m = await c.recv()
    t.check("watch list: listed user allowed", m.get("type") == "presence" and m.get("id") == 3, m)
    await c.send({"type": "subscribe", "users": ["kim"], "id": 4})
    m = await c.recv()
    t.check("watch list: unlisted user -> not_allowed",
            m.get("type") == "error" and m.get("code") == "not_allowed", m)
    await c.close()


async def test_subscribe_partly_allowed(t, d, args):
    # A subscribe is answered per user (docs/protocol.md 1.2): the allowed
    # users are watched and listed, the others named in not_allowed.
    jo = await Client.connect(d, "jo")
    c = await Client.connect(d, "pia", watch=["jo", "lu"])
    await c.send({"type": "subscribe", "users": ["kim", "jo", "ned", "lu"], "id": 5})
    m = await c.recv()
    t.eq("partly allowed: answered by a snapshot with the request's id",
         ((m or {}).get("type"), (m or {}).get("snapshot"), (m or {}).get("id")), ("presence", True, 5))
    t.eq("partly allowed: the snapshot lists the allowed users",
         [(u["user_id"], u["status"]) for u in (m or {}).get("users", [])], [("jo", "online"), ("lu", "offline")])
    t.eq("partly allowed: and names the refused ones in not_allowed", (m or {}).get("not_allowed"), ["kim", "ned"])
    lu = await Client.connect(d, "lu")
    ch = await c.change("lu", 3)
    t.check("partly allowed: an allowed user's change arrives",
            ch is not None and ch["users"][0].get("status") == "online", ch)
    kim = await Client.connect(d, "kim")
    got = [x for x in await c.collect(0.5) if x.get("type") == "presence"]
    t.eq("partly allowed: a refused user's changes do not", got, [])
    await c.send({"type": "subscribe", "users": ["jo"], "id": 6})
    m = await c.recv()
    t.check("all allowed: no not_allowed field", m.get("type") == "presence" and "not_allowed" not in m, m)
    await c.send({"type": "subscribe", "users": ["kim", "ned"], "id": 7})
    m = await c.recv()
    t.eq("none allowed: an error not_allowed, as before",
         ((m or {}).get("type"), (m or {}).get("code"), (m or {}).get("id")), ("error", "not_allowed", 7))
    for x in (c, jo, lu, kim):
        await x.close()


async def test_message_errors(t, d, args):
    c = await Client.connect(d, "errs", watch="*")
    cases = [
        ("not JSON", "hello", "bad_json"),
        ("JSON array", "[1,2]", "bad_json"),
        ("no type", '{"status":"idle"}', "unknown_type"),
        ("unknown type", '{"type":"dance","id":3}', "unknown_type"),
        ("status missing", '{"type":"status","id":4}', "bad_field"),
        ("status bad value", '{"type":"status","status":"away","id":5}', "bad_status"),
        ("subscribe without users", '{"type":"subscribe","id":6}', "bad_field"),
        ("subscribe users not array", '{"type":"subscribe","users":"bob"}', "bad_field"),
        ("subscribe empty id", '{"type":"subscribe","users":[""]}', "bad_user_id"),
        ("subscribe 129-byte id", '{"type":"subscribe","users":["%s"]}' % ("x" * 129), "bad_user_id"),
        ("unsubscribe without users", '{"type":"unsubscribe"}', "bad_field"),
    ]
    # protocol.md gives no number for "too many malformed messages" (1008):
    # a fresh connection every 4 errors keeps well under any sane threshold.
    for i, (name, text, code) in enumerate(cases):
        if i and i % 4 == 0:
            await c.close()
            c = await Client.connect(d, "errs", watch="*")
        await c.send(text)
        m = await c.expect_type("error", 3)
        t.check(f"error {code}: {name}", m is not None and m.get("code") == code, m)
    await c.send('{"type":"status","status":"away","id":"e1"}')
    m = await c.expect_type("error", 3)
    t.check("error: carries the request id", m is not None and m.get("id") == "e1", m)
    p = await c.ping("alive")
    t.check("errors: connection stays open after each", p is not None)
    await c.close()


async def test_too_many_malformed(t, d, args):
    # protocol.md 1.3: 1008 follows the tenth malformed message on one connection.
    c = await Client.connect(d, "spammer")
    errs = 0
    for i in range(9):
        await c.send("not json %d" % i)
        m = await c.expect_type("error", 3)
        errs += m is not None and m.get("code") == "bad_json"
    p = await c.ping("nine")
    t.check("nine malformed messages: nine errors, connection still open", errs == 9 and p is not None,
            (errs, p))
    await c.send("not json 10")
    m = await c.expect_type("error", 3)
    closed = await c.wait_closed(3)
    t.check("tenth malformed message: error bad_json first", m is not None and m.get("code") == "bad_json", m)
    t.eq("tenth malformed message: closed with 1008", closed, 1008)
    # Refusals that are not malformed messages do not count (protocol.md 1.3).
    c = await Client.connect(d, "curious")
    n = 0
    for i in range(12):
        await c.send({"type": "subscribe", "users": [f"secret{i}"], "id": i})
        m = await c.expect_type("error", 3)
        n += m is not None and m.get("code") == "not_allowed"
    p = await c.ping("still")
    t.check("twelve not_allowed refusals: no 1008, connection open", n == 12 and p is not None, (n, p))
    await c.close()
    # A status message a person typed or picked badly is answered, never
    # counted: fourteen refused texts and expiries keep the connection, however
    # the server finds each (a control character, an expiry of 0 seconds, a
    # text too long, an expiry in the past).
    c = await Client.connect(d, "typist")
    bad = [({"text": "two\nlines"}, "bad_message"), ({"text": "x", "expires_in": 0}, "bad_expiry"),
           ({"emoji": "e" * 65}, "bad_message"), ({"text": "x", "expires_in": 1.5}, "bad_expiry")] * 3
    bad += [({"text": "x" * 5000}, "bad_message"), ({"text": "x", "expires_at": 1}, "bad_expiry")]
    got = []
    for i, (msg, code) in enumerate(bad):
        await c.send(dict(msg, type="message", id=i))
        m = await c.expect_type("error", 3)
        got.append((m or {}).get("code") == code)
    p = await c.ping("typing")
    t.check("fourteen refused status messages: no 1008, connection open", all(got) and p is not None, (got, p))
    # A wrong availability word is the client's code, as a wrong status is:
    # the tenth closes.
    for i in range(10):
        await c.send({"type": "availability", "availability": "busy", "id": i})
    closed = await c.wait_closed(3)
    t.eq("ten bad_availability: closed with 1008", closed, 1008)
test_too_many_malformed.timeout = 20


async def test_since_last_seen(t, d, args):
    t0 = now_ms()
    c = await Client.connect(d, "lena")
    r = await http(d, "GET", "/v1/users/lena")
    j = r.json() or {}
    t.check("since: set at the transition time", is_int(j.get("since")) and t0 - 2000 <= j["since"] <= now_ms() + 2000, j)
    await asyncio.sleep(0.3)
    await c.send({"type": "status", "status": "idle", "id": 1})
    await c.expect_type("ack", 3)
    j2 = (await http(d, "GET", "/v1/users/lena")).json() or {}
    t.check("since: moves on online -> idle", j2.get("since", 0) >= j.get("since", 0) + 200, (j, j2))
    await c.close()


async def test_many_subscribers(t, d, args):
    ws = [await Client.connect(d, f"fan{i}", watch="*") for i in range(3)]
    for i, w in enumerate(ws):
        await w.send({"type": "subscribe", "users": ["star"], "id": i})
        await w.expect_type("presence", 3, id=i)
    star = await Client.connect(d, "star")
    await star.send({"type": "status", "status": "idle"})
    counts = []
    for w in ws:
        ch = await w.changes(0.5, "star")
        counts.append([m["users"][0].get("status") for m in ch])
    t.eq("three subscribers each see the two changes once, in order", counts, [["online", "idle"]] * 3)
    await star.close()
    for w in ws:
        await w.close()


async def test_ws_control_frames(t, d, args):
    ws = await RawWS.open(d, tok=token("ctl"))
    await ws.recv_json(3)
    await ws.send_frame(0x9, b"hello")
    f = await ws.recv_frame(3)
    t.check("WebSocket ping frame: answered by a pong frame with the same payload",
            f is not None and f[1] == 0xA and f[2] == b"hello", f)
    # Two messages in one TCP write, then one split across writes.
    await ws.send_raw(ws_frame(1, '{"type":"ping","id":1}') + ws_frame(1, '{"type":"ping","id":2}'))
    a = await ws.recv_json(3)
    b = await ws.recv_json(3)
    t.check("two frames in one TCP segment: both answered in order",
            (a or {}).get("id") == 1 and (b or {}).get("id") == 2, (a, b))
    fr = ws_frame(1, '{"type":"ping","id":3}')
    for i in range(len(fr)):
        await ws.send_raw(fr[i:i + 1])
        await asyncio.sleep(0.001)
    m = await ws.recv_json(3)
    t.check("a frame sent one byte at a time: answered", (m or {}).get("id") == 3, m)
    await ws.send_frame(0x8, close_payload(1000, b"bye"))
    code, _ = await ws.until_close(3)
    t.eq("client close 1000: server answers with close 1000", code, 1000)
    ws.close()


async def test_abrupt_disconnect(t, d, args):
    sse = await SSE.open(d)
    ws = await RawWS.open(d, tok=token("vanish"))
    w = await ws.recv_json(3)
    ws.writer.transport.abort()      # TCP reset, no close frame
    ev, evs = await sse.until(lambda e: ev_is(e, "user.offline", user_id="vanish"), 3)
    sd = [e for e in evs if ev_is(e, "session.disconnected", user_id="vanish")]
    t.check("TCP dropped without a close frame: session.disconnected reason disconnect, then user.offline",
            sd and sd[0]["data"].get("reason") == "disconnect" and ev is not None
            and int(sd[0]["id"]) < int(ev["id"]), ev_brief(evs))
    sse.close()


async def test_crowd(t, d, args):
    sse = await SSE.open(d)
    n = 20
    clients = await asyncio.gather(*(Client.connect(d, "crowd") for _ in range(n)))
    t.eq("20 concurrent sessions of one user: 20 distinct session ids",
         len({c.session_id for c in clients}), n)
    await asyncio.gather(*(c.close() for c in clients))
    ev, evs = await sse.until(lambda e: ev_is(e, "user.offline", user_id="crowd"), 5)
    evs += await sse.collect(0.3)
    mine = [e["data"]["type"] for e in evs if e["data"].get("user_id") == "crowd"]
    t.check("20 concurrent connects then closes: 20 session.connected, 20 session.disconnected",
            mine.count("session.connected") == n and mine.count("session.disconnected") == n, mine)
    t.check("... and exactly one user.online and one user.offline",
            mine.count("user.online") == 1 and mine.count("user.offline") == 1
            and mine.count("user.idle") == 0, mine)
    t.check("... user.online after the first session.connected, user.offline after the last disconnect",
            mine and mine.index("user.online") == 1 and mine[-1] == "user.offline", mine)
    r = await http(d, "GET", "/v1/users/crowd")
    t.check("... and the user ends offline with 0 sessions",
            (r.json() or {}).get("status") == "offline" and (r.json() or {}).get("sessions") == 0, r)
    sse.close()


async def test_ws_rfc6455(t, d, args):
    """RFC 6455 end to end, where tests/data/ws checks the parser alone: the
    close handshake echoes a valid code (7.4: 1000-1003, 1007-1014 and
    3000-4999) and answers an invalid one with 1002; a ping of the 125 bytes a
    control frame may hold is echoed; an unsolicited pong is ignored (5.5.3);
    extensions and subprotocols offered are declined by omission (4.2.2), so
    a frame with RSV1 (what permessage-deflate would set) is 1002."""
    for code in (1000, 1001, 1003, 1011, 3000, 4999):
        ws = await RawWS.open(d, tok=token(f"close{code}"))
        await ws.recv_json(3)
        await ws.send_frame(0x8, close_payload(code, b"bye"))
        got, _ = await ws.until_close(3)
        ws.close()
        t.eq(f"client close {code}: the server's close echoes {code}", got, code)
    for code in (999, 1004, 1005, 1006, 1015, 1016, 2999, 5000):
        ws = await RawWS.open(d, tok=token(f"close{code}"))
        await ws.recv_json(3)
        await ws.send_frame(0x8, close_payload(code))
        got, _ = await ws.until_close(3)
        ws.close()
        t.eq(f"client close with the invalid code {code}: close 1002", got, 1002)
    ws = await RawWS.open(d, tok=token("ctl125"))
    await ws.recv_json(3)
    await ws.send_frame(0xA, b"unasked")
    await ws.send_frame(0x9, b"p" * 125)
    f = await ws.recv_frame(3)
    t.check("an unsolicited pong is ignored, then a 125-byte ping gets its pong",
            f is not None and f[1] == 0xA and f[2] == b"p" * 125, f)
    ws.close()
    ws = await RawWS.open(d, tok=token("pmd"), headers={
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Protocol": "chat, superchat"})
    t.check("permessage-deflate and subprotocols offered: 101 naming neither",
            ws.status == 101 and "sec-websocket-extensions" not in ws.headers
            and "sec-websocket-protocol" not in ws.headers, (ws.status, ws.headers))
    await ws.recv_json(3)
    await ws.send_frame(0x1, b'{"type":"ping"}', rsv=4)
    got, _ = await ws.until_close(3)
    ws.close()
    t.eq("... and a frame with RSV1 set (compressed) then: close 1002", got, 1002)


if __name__ == "__main__":
    run([
        ("protocol", {"--max-msgs-per-sec": "2000"}, [
            test_welcome, test_ping_pong, test_status_ack, test_subscribe_snapshot,
            test_changes_exactly_once, test_unsubscribe, test_two_sessions, test_watch_claim,
            test_subscribe_partly_allowed,
            test_message_errors, test_since_last_seen, test_many_subscribers,
            test_ws_control_frames, test_abrupt_disconnect, test_crowd, test_too_many_malformed,
            test_ws_rfc6455,
        ]),
    ])
