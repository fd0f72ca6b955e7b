#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""GET /v1/events (docs/protocol.md section 2.1): events in order with id: =
seq, the session event before the user event it caused, resume by
Last-Event-ID and ?after= losing nothing, the gap event when the cursor fell
out of the log, keepalive comments; offline grace (flap control)."""

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def well_formed(evs):
    """Every event: id == data.seq, event == data.type, seq strictly increasing."""
    last = -1
    for e in evs:
        dd = e.get("data")
        if not isinstance(dd, dict):
            return f"data not JSON: {e}"
        if str(dd.get("seq")) != e.get("id"):
            return f"id {e.get('id')} != seq {dd.get('seq')}"
        if dd.get("type") != e.get("event"):
            return f"event {e.get('event')} != type {dd.get('type')}"
        if not is_int(dd.get("seq")) or dd["seq"] <= last:
            return f"seq not increasing: {last} then {dd.get('seq')}"
        if not is_int(dd.get("ts")) or not isinstance(dd.get("reason"), str):
            return f"ts/reason missing: {dd}"
        last = dd["seq"]
    return None


async def test_stream_order(t, d, args):
    sse = await SSE.open(d)
    t.eq("SSE: 200", sse.status, 200)
    t.check("SSE: text/event-stream", sse.headers.get("content-type", "").startswith("text/event-stream"),
            sse.headers)
    # Starts at new events only: this user connected before the stream.
    early = await Client.connect(d, "early-bird")
    await asyncio.sleep(0.2)
    sse2 = await SSE.open(d)
    c = await Client.connect(d, "alice", meta={"app": "web"})
    await c.send({"type": "status", "status": "idle", "id": 1})
    await c.expect_type("ack", 3)
    await c.send({"type": "status", "status": "online", "id": 2})
    await c.expect_type("ack", 3)
    await c.close()
    ev, evs = await sse2.until(lambda e: ev_is(e, "user.offline", user_id="alice"), 5)
    t.check("SSE without cursor: starts at new events only",
            not any(ev_is(e, "session.connected", user_id="early-bird") for e in evs), ev_brief(evs))
    mine = [e for e in evs if e["data"].get("user_id") == "alice"]
    types = [(e["data"]["type"], e["data"].get("reason")) for e in mine]
    want = [("session.connected", "connect"), ("user.online", "connect"),
            ("session.status", "explicit"), ("user.idle", "explicit"),
            ("session.status", "explicit"), ("user.online", "explicit"),
            ("session.disconnected", "disconnect"), ("user.offline", "disconnect")]
    t.eq("SSE: the session events come before the user events they caused, with reasons", types, want)
    err = well_formed(evs)
    t.check("SSE: id == seq, event == type, seq increasing, ts and reason present", err is None, err)
    if len(mine) == len(want):
        sc, uo = mine[0]["data"], mine[1]["data"]
        t.check("session.connected: carries session_id and the token's meta",
                sc.get("session_id") == c.session_id and sc.get("meta") == {"app": "web"}, sc)
        t.check("user.online: from offline to online, causing session, version",
                uo.get("from") == "offline" and uo.get("to") == "online"
                and uo.get("session_id") == c.session_id and is_int(uo.get("version")), uo)
        vs = [e["data"].get("version") for e in mine if e["data"]["type"].startswith("user.")]
        t.check("user events: version strictly increasing", all(is_int(v) for v in vs)
                and all(a < b for a, b in zip(vs, vs[1:])), vs)
        ui = mine[3]["data"]
        t.check("user.idle: from online to idle", ui.get("from") == "online" and ui.get("to") == "idle", ui)
        st = mine[2]["data"]
        t.check("session.status: names the session", st.get("session_id") == c.session_id, st)
    # The first stream sees the same events for alice.
    ev, evs1 = await sse.until(lambda e: ev_is(e, "user.offline", user_id="alice"), 5)
    ids1 = [e["id"] for e in evs1 if e["data"].get("user_id") == "alice"]
    t.eq("SSE: two consumers see the same events", ids1, [e["id"] for e in mine])
    await early.close()
    sse.close()
    sse2.close()


async def test_resume(t, d, args):
    # An empty Last-Event-ID (what a reader holding no id sends back) is no
    # cursor: new events only, as without the header; it was a 400.
    empty = await SSE.open(d, last_event_id="")
    t.eq("an empty Last-Event-ID: 200, the stream starts", empty.status, 200)
    e0 = await Client.connect(d, "res-empty")
    ev, evs = await empty.until(lambda e: ev_is(e, "user.online", user_id="res-empty"), 3)
    t.check("an empty Last-Event-ID: new events come", ev is not None, ev_brief(evs))
    empty.close()
    await e0.close()
    watch = await SSE.open(d)          # continuous consumer, the reference
    sse = await SSE.open(d)
    a = await Client.connect(d, "res-a")
    ev, evs = await sse.until(lambda e: ev_is(e, "user.online", user_id="res-a"), 3)
    t.check("resume: first events seen", ev is not None, ev_brief(evs))
    if ev is None:
        return
    cursor = ev["id"]
    sse.close()
    # Events while the consumer is away.
    b = await Client.connect(d, "res-b")
    await a.send({"type": "status", "status": "idle", "id": 1})
    await a.expect_type("ack", 3)
    await b.close()
    await a.close()
    ref_ev, ref = await watch.until(lambda e: ev_is(e, "user.offline", user_id="res-a"), 5)
    after_ref = [e["id"] for e in ref if int(e["id"]) > int(cursor)]
    t.check("resume: reference consumer saw the events", ref_ev is not None and len(after_ref) >= 8,
            ev_brief(ref))
    r1 = await SSE.open(d, last_event_id=cursor)
    got_ev, got = await r1.until(lambda e: ev_is(e, "user.offline", user_id="res-a"), 5)
    t.eq("resume with Last-Event-ID: exactly the events after the cursor, nothing lost",
         [e["id"] for e in got], after_ref)
    t.check("resume: no gap event", not any(e["event"] == "gap" for e in got))
    r1.close()
    r2 = await SSE.open(d, after=cursor)
    got_ev, got = await r2.until(lambda e: ev_is(e, "user.offline", user_id="res-a"), 5)
    t.eq("resume with ?after=: exactly the events after the cursor", [e["id"] for e in got], after_ref)
    r2.close()
    # The resumed stream goes on live.
    r3 = await SSE.open(d, last_event_id=ref[-1]["id"])
    c = await Client.connect(d, "res-c")
    got_ev, got = await r3.until(lambda e: ev_is(e, "user.online", user_id="res-c"), 5)
    t.check("resume at the newest event: continues with live events only",
            got_ev is not None and [e["data"]["type"] for e in got] == ["session.connected", "user.online"],
            ev_brief(got))
    await c.close()
    r3.close()
    watch.close()


async def test_cursor_ahead(t, d, args):
    # A consumer of a previous presenced run (the embedded log starts again at
    # every start) comes back with a cursor beyond the newest event. protocol.md
    # does not name this case; DESIGN.md section 4 says a consumer loses nothing
    # still in the log and knows when it fell behind. Accepted: a gap event, or
    # the new events delivered. Not accepted: new events silently skipped.
    s = await SSE.open(d, last_event_id=10 ** 9)
    c = await Client.connect(d, "ahead")
    await c.close()
    evs = await s.collect(1.0)
    t.check("cursor beyond the newest event: new events not silently skipped (gap or delivered)",
            any(e["event"] == "gap" for e in evs) or any(ev_is(e, "user.online", user_id="ahead") for e in evs),
            ev_brief(evs))
    s.close()
    s = await SSE.open(d, last_event_id="abc")
    r = s.response()
    s.close()
    t.check("Last-Event-ID not a number: 400 bad_request", r.status == 400 and r.error_code == "bad_request", r)


async def test_sse_auth(t, d, args):
    s = await SSE.open(d, auth=False)
    r = s.response()
    s.close()
    t.check("SSE without API key: 401 unauthorized", r.status == 401 and r.error_code == "unauthorized", r)


async def test_keepalive(t, d, args):
    s = await SSE.open(d)
    await s.collect(2.5)
    # At the interval asked: they came once a housekeeping second (2 in
    # 2.5 s) when the interval was under it.
    t.check("SSE: keepalive comment lines every 200 ms (8 or more in 2.5 s with --sse-keepalive-ms 200)",
            s.comments >= 8, s.comments)
    s.close()


async def test_gap(t, d, args):
    # --log-capacity 16: make ~40 events, then resume from 1.
    watch = await SSE.open(d)
    clients = []
    for i in range(10):
        clients.append(await Client.connect(d, f"gap-{i}"))
    for c in clients:
        await c.close()
    ev, ref = await watch.until(lambda e: ev_is(e, "user.offline", user_id="gap-9"), 5)
    t.check("gap: events produced", ev is not None and len(ref) >= 40, len(ref))
    last = int(ref[-1]["id"])
    s = await SSE.open(d, last_event_id=1)
    first = await s.next(3)
    t.eq("gap: a cursor that fell out of the log gets a gap event first", (first or {}).get("event"), "gap")
    gd = (first or {}).get("data") or {}
    t.check("gap: data {after, oldest} with after = the cursor",
            isinstance(gd, dict) and gd.get("after") == 1 and is_int(gd.get("oldest")) and gd["oldest"] > 2, gd)
    oldest = gd.get("oldest", 0) if isinstance(gd, dict) else 0
    t.check("gap: oldest is within the last 16 events", is_int(oldest) and last - 16 < oldest <= last,
            (oldest, last))
    rest = []
    while True:
        try:
            e = await s.next(0.7)
        except asyncio.TimeoutError:
            break
        if e is None:
            break
        rest.append(e)
    t.check("gap: continues from the oldest event kept",
            rest and int(rest[0]["id"]) == oldest and int(rest[-1]["id"]) == last, ev_brief(rest[:3]))
    ref_ids = [e["id"] for e in ref if int(e["id"]) >= oldest]
    t.eq("gap: then every event kept, in order", [e["id"] for e in rest], ref_ids)
    s.close()
    # A cursor inside the log: no gap.
    s = await SSE.open(d, last_event_id=ref[-4]["id"])
    first = await s.next(3)
    t.check("no gap when the cursor is still in the log", first and first.get("event") != "gap"
            and first.get("id") == ref[-3]["id"], first)
    s.close()
    watch.close()


async def test_grace(t, d, args):
    # --offline-grace-ms 1500
    w = await Client.connect(d, "gw", watch="*")
    await w.send({"type": "subscribe", "users": ["flappy"], "id": 1})
    await w.expect_type("presence", 3, id=1)
    sse = await SSE.open(d)
    c = await Client.connect(d, "flappy")
    ch = await w.changes(0.5, "flappy")
    t.eq("grace: connect -> one change (online)", len(ch), 1)
    # Page reload: close and reconnect within the grace.
    await c.close()
    await asyncio.sleep(0.3)
    c = await Client.connect(d, "flappy")
    ch = await w.changes(2.2, "flappy")
    t.eq("grace: reconnect within the grace -> no presence change", len(ch), 0)
    evs = await sse.collect(0.3)
    fl = [e for e in evs if isinstance(e["data"], dict) and e["data"].get("user_id") == "flappy"]
    types = [e["data"]["type"] for e in fl]
    t.check("grace: session events are not delayed, no user event",
            types[-2:] == ["session.disconnected", "session.connected"]
            and "user.offline" not in types and types.count("user.online") == 1, types)
    r = await http(d, "GET", "/v1/users/flappy")
    t.eq("grace: user still online", (r.json() or {}).get("status"), "online")
    # Now leave for good.
    await c.close()
    t_close = now_ms()
    t0 = time.monotonic()
    m = await w.change("flappy", 4)
    dt = time.monotonic() - t0
    u = (m or {}).get("users", [{}])[0]
    t.check("grace: after the grace -> offline", u.get("status") == "offline", m)
    t.check("grace: offline comes after ~1.5 s, not before", 1.2 <= dt <= 3.5, dt)
    t.check("grace: offline change keeps last_seen (the time the user left)",
            is_int(u.get("last_seen")) and t_close - 3000 <= u["last_seen"] <= t_close + 500, (u, t_close))
    ev, evs = await sse.until(lambda e: ev_is(e, "user.offline", user_id="flappy"), 3)
    t.check("grace: SSE user.offline after the grace", ev is not None, ev_brief(evs))
    r = await http(d, "GET", "/v1/users/flappy")
    j = r.json() or {}
    t.check("grace: backend shows offline with last_seen", j.get("status") == "offline"
            and j.get("last_seen", 0) > 0 and j.get("sessions") == 0, j)
    await w.close()
    sse.close()
test_grace.timeout = 20


async def test_default_grace(t, d, args):
    # No --offline-grace-ms: the default (10 s) hides a reload and a reconnect
    # for a fresh token, each about a second long.
    w = await Client.connect(d, "dgw", watch="*")
    await w.send({"type": "subscribe", "users": ["reloader"], "id": 1})
    await w.expect_type("presence", 3, id=1)
    sse = await SSE.open(d)
    c = await Client.connect(d, "reloader")
    t.eq("default grace: connect -> one change (online)", len(await w.changes(0.5, "reloader")), 1)
    for what in ("page reload", "token reconnect"):
        await c.close()
        await asyncio.sleep(1.0)
        c = await Client.connect(d, "reloader")
    ch = await w.changes(1.5, "reloader")
    t.eq("default grace: two reconnects after ~1 s each -> no change for watchers", len(ch), 0)
    evs = await sse.collect(0.3)
    types = [e["data"]["type"] for e in evs
             if isinstance(e["data"], dict) and e["data"].get("user_id") == "reloader"]
    t.check("default grace: no user.offline, one user.online",
            "user.offline" not in types and types.count("user.online") == 1, types)
    await c.close()
    await w.close()
    sse.close()
test_default_grace.timeout = 20


if __name__ == "__main__":
    run([
        ("events", {"--sse-keepalive-ms": "200"}, [test_stream_order, test_resume, test_sse_auth, test_cursor_ahead,
                                                  test_keepalive]),
        ("events-gap", {"--log-capacity": "16"}, [test_gap]),
        ("grace", {"--offline-grace-ms": "1500"}, [test_grace]),
        ("default-grace", {"--offline-grace-ms": None}, [test_default_grace]),
    ])
