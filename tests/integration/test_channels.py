#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Channels end to end on one presenced (docs/protocol.md section 4,
docs/api.md "Channels"): join/update/leave/observe over real WebSocket
clients, snapshots then one message per change, grants from token claims,
every limit and bad input answered by its documented error and nothing else,
the backend endpoints (members paged, count, channels under a prefix, a
user's channels, removal) and channel events on GET /v1/events with type and
channel-prefix filters."""

import asyncio
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403


def chan_tok(user, channels=None, observe=None, **kw):
    extra = {}
    if channels is not None:
        extra["channels"] = channels
    if observe is not None:
        extra["observe"] = observe
    return token(user, extra=extra, **kw)


async def join(c, ch, data=None, ident=None):
    msg = {"type": "join", "channel": ch, "id": ident or f"j-{ch}"}
    if data is not None:
        msg["data"] = data
    await c.send(msg)
    return await c.expect_type("channel", 3, id=ident or f"j-{ch}")


def is_change(ch, event=None, user=None):
    def pred(m):
        return (m.get("type") == "channel" and m.get("channel") == ch and m.get("snapshot") is False
                and (event is None or m.get("event") == event)
                and (user is None or m.get("member", {}).get("user_id") == user))
    return pred


async def test_members_and_changes(t, d, args):
    a = await Client.connect(d, "ch-ann", tok=chan_tok("ch-ann", ["room:*"]))
    b = await Client.connect(d, "ch-bob", tok=chan_tok("ch-bob", "*"))
    snap = await join(a, "room:1", {"name": "Ann", "color": "#e33"})
    t.check("join answers a snapshot with the same id", snap is not None, snap)
    t.eq("the snapshot holds the joiner with its data",
         [(m["user_id"], m["status"], m["data"]) for m in (snap or {}).get("members", [])],
         [("ch-ann", "online", {"name": "Ann", "color": "#e33"})])
    t.eq("count 1, no more", ((snap or {}).get("count"), (snap or {}).get("more")), (1, False))
    await a.collect(0.2)
    snap = await join(b, "room:1", {"name": "Bob"})
    t.eq("bob's snapshot: both members, in user id order",
         [m["user_id"] for m in (snap or {}).get("members", [])], ["ch-ann", "ch-bob"])
    m, _ = await a.expect(is_change("room:1", "join", "ch-bob"), 3)
    t.check("ann gets one join message for bob", m is not None)
    t.eq("the change: count, data, from, reason, version",
         m and (m["count"], m["member"]["data"], m["from"], m["reason"], m["member"]["version"]),
         (2, {"name": "Bob"}, "offline", "explicit", 1))
    # A second session of bob: a member already, nothing for ann.
    b2 = await Client.connect(d, "ch-bob", tok=chan_tok("ch-bob", "*"))
    await join(b2, "room:1", {"name": "Bob"})
    t.eq("a second session of a member: no message to others",
         [x for x in await a.collect(0.4) if x.get("type") == "channel"], [])
    await b.send({"type": "update", "channel": "room:1", "data": {"name": "Bob", "typing": True}, "id": "u1"})
    t.check("update is acked", await b.expect_type("ack", 3, id="u1") is not None)
    m, _ = await a.expect(is_change("room:1", "update", "ch-bob"), 3)
    t.eq("one update message with the new data", m and m["member"]["data"], {"name": "Bob", "typing": True})
    # Status in the channel follows the sessions in it.
    await b.send({"type": "status", "status": "idle"})
    await b2.send({"type": "status", "status": "idle"})
    m, _ = await a.expect(lambda x: is_change("room:1", "update", "ch-bob")(x)
                          and x["member"]["status"] == "idle", 3)
    t.check("bob idle in both sessions: the member is idle", m is not None)
    # Leaving: one of two sessions changes nothing; the last one leaves.
    await b2.send({"type": "leave", "channel": "room:1", "id": "l2"})
    t.check("leave is acked", await b2.expect_type("ack", 3, id="l2") is not None)
    await b2.close()
    await b.close()
    m, skipped = await a.expect(is_change("room:1", "leave", "ch-bob"), 3)
    t.check("bob's last session gone: one leave", m is not None)
    t.eq("the leave: count 1, status offline", m and (m["count"], m["member"]["status"]), (1, "offline"))
    t.eq("no other change of bob before it (only the data/status updates)",
         [x["event"] for x in skipped if is_change("room:1", user="ch-bob")(x)], [])
    # "snapshot": false: the join is answered by an ack, no member list;
    # the changes come as for any member.
    c = await Client.connect(d, "ch-cat", tok=chan_tok("ch-cat", "*"))
    await c.send({"type": "join", "channel": "room:1", "data": {"name": "Cat"}, "snapshot": False,
                  "id": "ns"})
    ack, before = await c.expect(lambda x: x.get("id") == "ns", 3)
    t.eq("a join with snapshot false is acked", (ack or {}).get("type"), "ack")
    t.eq("and sends no snapshot (its own join's change comes first, as to every member)",
         [x.get("snapshot") for x in before if x.get("type") == "channel"], [False])
    m, _ = await a.expect(is_change("room:1", "join", "ch-cat"), 3)
    t.eq("the others see the join as any other", m and (m["count"], m["member"]["data"]),
         (2, {"name": "Cat"}))
    await a.send({"type": "update", "channel": "room:1", "data": {"name": "Ann2"}, "id": "u2"})
    m, _ = await c.expect(is_change("room:1", "update", "ch-ann"), 3)
    t.eq("the member without a snapshot gets the channel's changes",
         m and m["member"]["data"], {"name": "Ann2"})
    await c.send({"type": "leave", "channel": "room:1", "id": "cl"})
    t.check("its leave is acked", await c.expect_type("ack", 3, id="cl") is not None)
    await c.close()
    await a.close()


async def test_observe_and_grants(t, d, args):
    lobby = await Client.connect(d, "ch-lobby", tok=chan_tok("ch-lobby", observe=["game:*"]))
    await lobby.send({"type": "join", "channel": "game:1", "id": "j"})
    e = await lobby.expect_type("error", 3, id="j")
    t.eq("observe grant does not allow joining", (e or {}).get("code"), "channel_not_allowed")
    await lobby.send({"type": "observe", "channel": "game:1", "id": "o"})
    snap = await lobby.expect_type("channel", 3, id="o")
    t.eq("observe answers a snapshot (empty channel: count 0)", snap and (snap["count"], snap["members"]), (0, []))
    p = await Client.connect(d, "ch-player", tok=chan_tok("ch-player", ["game:1"]))
    await join(p, "game:1", {"team": "red"})
    m, _ = await lobby.expect(is_change("game:1", "join", "ch-player"), 3)
    t.check("an observer gets the changes without being a member", m is not None)
    r = await http(d, "GET", "/v1/channels/game:1")
    t.eq("the observer is not counted", (r.json() or {}).get("count"), 1)
    await lobby.send({"type": "unobserve", "channel": "game:1", "id": "u"})
    t.check("unobserve is acked", await lobby.expect_type("ack", 3, id="u") is not None)
    await p.send({"type": "update", "channel": "game:1", "data": {"team": "blue"}, "id": "x"})
    await p.expect_type("ack", 3, id="x")
    t.eq("after unobserve: nothing more", [x for x in await lobby.collect(0.4) if x.get("type") == "channel"], [])
    await p.send({"type": "join", "channel": "game:2", "id": "g2"})
    e = await p.expect_type("error", 3, id="g2")
    t.eq("an exact-name grant allows only that name", (e or {}).get("code"), "channel_not_allowed")
    none = await Client.connect(d, "ch-none")
    await none.send({"type": "join", "channel": "game:1", "id": "n"})
    e = await none.expect_type("error", 3, id="n")
    t.eq("no channels claim: nothing may be joined", (e or {}).get("code"), "channel_not_allowed")
    for x in (lobby, p, none):
        await x.close()


async def test_limits_and_bad_input(t, d, args):
    c = await Client.connect(d, "ch-lim", tok=chan_tok("ch-lim", "*"))
    cases = [
        ({"type": "join"}, "bad_channel"),
        ({"type": "join", "channel": ""}, "bad_channel"),
        ({"type": "join", "channel": 7}, "bad_channel"),
        ({"type": "join", "channel": "a\u0001b"}, "bad_channel"),
        ({"type": "join", "channel": "x" * 17}, "bad_channel"),  # --max-channel-name 16
        ({"type": "join", "channel": "ok", "data": [1, 2]}, "bad_data"),
        ({"type": "join", "channel": "ok", "data": "text"}, "bad_data"),
        ({"type": "join", "channel": "ok", "data": {"k": "v" * 80}}, "data_too_large"),  # 64 bytes
        ({"type": "join", "channel": "ok", "snapshot": "no"}, "bad_field"),
        ({"type": "join", "channel": "ok", "snapshot": 0}, "bad_field"),
        ({"type": "update", "channel": "ok", "data": {}}, "not_joined"),
        ({"type": "update", "channel": "ok"}, "bad_data"),
        ({"type": "leave", "channel": "ok"}, "not_joined"),
    ]
    for i, (msg, code) in enumerate(cases):
        await c.send({**msg, "id": f"c{i}"})
        e = await c.expect_type("error", 3, id=f"c{i}")
        t.eq(f"{json.dumps(msg)[:60]} -> {code}", (e or {}).get("code"), code)
    r = await http(d, "GET", "/v1/channels?prefix=")
    t.eq("nothing was joined by the refused requests", (r.json() or {}).get("channels"), [])
    # Two channels per session (--max-channels-per-session 2), joined and
    # observed together.
    await join(c, "l1")
    await c.send({"type": "observe", "channel": "l2", "id": "o2"})
    await c.expect_type("channel", 3, id="o2")
    await c.send({"type": "join", "channel": "l3", "id": "l3"})
    e = await c.expect_type("error", 3, id="l3")
    t.eq("a third channel -> too_many_channels", (e or {}).get("code"), "too_many_channels")
    snap = await join(c, "l1", {"again": 1}, ident="again")
    t.check("joining one already joined is allowed (new data)", snap is not None)
    r = await http(d, "GET", "/v1/channels/l3")
    t.eq("l3 has no member", (r.json() or {}).get("count"), 0)
    # Join rate (--channel-joins-per-s 3): l1 (join), l2 (observe), l3
    # (refused above but counted), again: the window may have rolled; flood.
    d2 = await Client.connect(d, "ch-rate", tok=chan_tok("ch-rate", "*"))
    codes = []
    for i in range(6):
        await d2.send({"type": "observe", "channel": "r", "id": f"r{i}"})
        m, _ = await d2.expect(lambda x: x.get("id") == f"r{i}", 3)
        codes.append((m or {}).get("code") or (m or {}).get("type"))
    t.check("over 3 joins/observes a second -> join_rate", "join_rate" in codes, codes)
    t.check("the connection stays open after every refusal", await c.ping("alive") is not None
            and await d2.ping("alive") is not None)
    for x in (c, d2):
        await x.close()


async def test_backend_api(t, d, args):
    cs = []
    for i in range(5):
        u = f"api-u{i}"
        c = await Client.connect(d, u, tok=chan_tok(u, "*"))
        await join(c, "doc:1", {"n": i})
        if i < 2:
            await join(c, "doc:2")
        cs.append(c)
    r = await http(d, "GET", "/v1/channels/doc:1/members?limit=2")
    j = r.json() or {}
    t.eq("members page 1: 2 of 5, in user id order, next cursor",
         (r.status, j.get("count"), [m["user_id"] for m in j.get("members", [])], j.get("next")),
         (200, 5, ["api-u0", "api-u1"], "api-u1"))
    m0 = (j.get("members") or [{}])[0]
    t.check("a member carries data and its sessions",
            m0.get("data") == {"n": 0} and len(m0.get("sessions", [])) == 1
            and m0["sessions"][0].get("session_id") == cs[0].session_id, m0)
    seen = [m["user_id"] for m in j.get("members", [])]
    while j.get("next"):
        r = await http(d, "GET", "/v1/channels/doc:1/members?limit=2&after=" + urllib.parse.quote(j["next"]))
        j = r.json() or {}
        seen += [m["user_id"] for m in j.get("members", [])]
    t.eq("paging lists every member once", seen, [f"api-u{i}" for i in range(5)])
    r = await http(d, "GET", "/v1/channels?prefix=doc:")
    t.eq("channels under a prefix with counts", (r.json() or {}).get("channels"),
         [{"channel": "doc:1", "count": 5, "shown_count": 5},
          {"channel": "doc:2", "count": 2, "shown_count": 2}])
    r = await http(d, "GET", "/v1/users/api-u1/channels")
    t.eq("a user's channels", [x["channel"] for x in (r.json() or {}).get("channels", [])], ["doc:1", "doc:2"]
         if [x["channel"] for x in (r.json() or {}).get("channels", [])][:1] == ["doc:1"]
         else ["doc:2", "doc:1"])
    sse = await SSE.open(d, path="/v1/events?types=channel.*&channel_prefix=doc:2")
    r = await http(d, "DELETE", "/v1/channels/doc:2/members/api-u1")
    t.eq("remove a user: 200", (r.status, r.json()), (200, {"removed": "api-u1", "channel": "doc:2"}))
    left = await cs[1].expect_type("left", 3, channel="doc:2")
    t.eq("its session is told: left, kicked", (left or {}).get("reason"), "kicked")
    r = await http(d, "DELETE", "/v1/channels/doc:2/members/api-u1")
    t.eq("removing again: 404 not_member", (r.status, r.error_code), (404, "not_member"))
    evs = await sse.collect(0.6)
    t.eq("SSE filtered to channel.* of doc:2: exactly the removal",
         [(e["event"], e["data"].get("user_id"), e["data"].get("reason")) for e in evs if isinstance(e["data"], dict)],
         [("channel.leave", "api-u1", "kicked")])
    sse.close()
    for path, code in [("/v1/channels/%01bad", "bad_channel"), ("/v1/channels/doc:1/members?limit=0", "bad_request"),
                       ("/v1/channels/doc:1/members?limit=1001", "bad_request"),
                       ("/v1/channels/doc:1/members/%01x", "bad_user_id")]:
        r = await http(d, "GET" if "members/" not in path else "DELETE", path)
        t.eq(f"{path} -> 400 {code}", (r.status, r.error_code), (400, code))
    r = await http(d, "POST", "/v1/channels/doc:1")
    t.eq("wrong method -> 405", r.status, 405)
    for c in cs:
        await c.close()


async def test_events_stream(t, d, args):
    sse = await SSE.open(d)
    c = await Client.connect(d, "ev-ann", tok=chan_tok("ev-ann", "*"))
    await join(c, "ev:1", {"name": "Ann"})
    await c.close()
    evs = await sse.collect(0.8)
    chan = [e["data"] for e in evs if isinstance(e["data"], dict) and e["data"].get("type", "").startswith("channel.")]
    t.eq("SSE: channel.join then channel.leave", [x["type"] for x in chan], ["channel.join", "channel.leave"])
    j = chan[0] if chan else {}
    t.eq("channel.join fields", (j.get("channel"), j.get("user_id"), j.get("data"), j.get("count"),
                                 j.get("from"), j.get("to"), j.get("version"), j.get("reason")),
         ("ev:1", "ev-ann", {"name": "Ann"}, 1, "offline", "online", 1, "explicit"))
    order = [e["data"]["type"] for e in evs if isinstance(e["data"], dict)
             and e["data"].get("type") in ("session.disconnected", "user.offline", "channel.leave")]
    t.eq("order: session event, user event, then the channel's", order,
         ["session.disconnected", "user.offline", "channel.leave"])
    sse.close()
    r = await http(d, "GET", "/v1/events?types=nonsense.x")
    t.eq("an unknown type filter -> 400", r.status, 400)


async def test_invisible_members(t, d, args):
    a = await Client.connect(d, "iv-ann", tok=chan_tok("iv-ann", "*"))
    b = await Client.connect(d, "iv-bob", tok=chan_tok("iv-bob", "*"))
    await join(a, "iv-room", {"n": "a"})
    await join(b, "iv-room", {"n": "b"})
    await a.collect(0.3)
    await b.send({"type": "availability", "availability": "invisible", "id": "inv"})
    await b.expect_type("ack", 3, id="inv")
    m, _ = await a.expect(is_change("iv-room", "leave", "iv-bob"), 3)
    t.check("bob goes invisible: ann sees him leave (a visibility change)",
            m is not None and m.get("visibility") is True and m["member"]["status"] == "offline", m)
    c = await Client.connect(d, "iv-cat", tok=chan_tok("iv-cat", "*"))
    snap = await join(c, "iv-room")
    t.eq("a new member's snapshot leaves the invisible member out",
         sorted(x["user_id"] for x in (snap or {}).get("members", [])), ["iv-ann", "iv-cat"])
    await b.send({"type": "update", "channel": "iv-room", "data": {"n": "b2"}, "id": "u"})
    await b.expect_type("ack", 3, id="u")
    t.eq("an invisible member's changes reach no other member",
         [x for x in await a.collect(0.4) if is_change("iv-room", user="iv-bob")(x)], [])
    r = await http(d, "GET", "/v1/channels/iv-room/members")
    mb = {x["user_id"]: x for x in (r.json() or {}).get("members", [])}
    t.eq("the backend sees the truth: bob a member, invisible",
         (mb.get("iv-bob", {}).get("availability"), mb.get("iv-bob", {}).get("status")), ("invisible", "online"))
    await b.send({"type": "availability", "availability": "auto", "id": "vis"})
    m, _ = await a.expect(is_change("iv-room", "join", "iv-bob"), 3)
    t.check("visible again: ann sees him join, with his current data",
            m is not None and m["member"]["data"] == {"n": "b2"} and m["member"]["status"] == "online", m)
    for x in (a, b, c):
        await x.close()


async def test_page_of_shown_members(t, d, args):
    """A snapshot's page (--channel-page 3 here) is full of members the
    client is shown: invisible members are not in it and do not take room
    in it. A page cut short by them, with more after it, said that some
    member in it was hidden."""
    cs = {}
    for u in ("pg-a", "pg-b", "pg-c", "pg-d", "pg-e", "pg-f"):
        cs[u] = await Client.connect(d, u, tok=chan_tok(u, "*"))
        if u in ("pg-b", "pg-c"):
            await cs[u].send({"type": "availability", "availability": "invisible", "id": "i"})
            await cs[u].expect_type("ack", 3, id="i")
        await join(cs[u], "pg-room", {"u": u})
    w = await Client.connect(d, "pg-w", tok=chan_tok("pg-w", observe="*"))
    await w.send({"type": "observe", "channel": "pg-room", "id": "o1"})
    snap = await w.expect_type("channel", 3, id="o1") or {}
    t.eq("a full page of shown members, more after it, the shown count",
         ([m.get("user_id") for m in snap.get("members", [])], snap.get("more"), snap.get("count")),
         (["pg-a", "pg-d", "pg-e"], True, 4))
    for u in ("pg-e", "pg-f"):
        await cs[u].send({"type": "leave", "channel": "pg-room", "id": "l"})
        await cs[u].expect_type("ack", 3, id="l")
    await w.send({"type": "observe", "channel": "pg-room", "id": "o2"})
    snap = await w.expect_type("channel", 3, id="o2") or {}
    t.eq("the rest of the channel after two hidden members: every shown one, no more, their count",
         ([m.get("user_id") for m in snap.get("members", [])], snap.get("more"), snap.get("count")),
         (["pg-a", "pg-d"], False, 2))
    await cs["pg-b"].send({"type": "observe", "channel": "pg-room", "id": "o3"})
    snap = await cs["pg-b"].expect_type("channel", 3, id="o3") or {}
    t.eq("an invisible member's own session lists itself (and the count is what others see)",
         ([m.get("user_id") for m in snap.get("members", [])], snap.get("count")),
         (["pg-a", "pg-b", "pg-d"], 2))
    for x in list(cs.values()) + [w]:
        await x.close()


async def answer_of(c, rid, timeout=5):
    """The frame answering request rid (a page, an error, an ack)."""
    m, _ = await c.expect(lambda x: x.get("id") == rid and x.get("type") in ("channel", "error", "ack"),
                          timeout)
    return m or {}


def ids_of(frame):
    return [m.get("user_id") for m in frame.get("members", [])]


async def test_members_pages(t, d, args):
    """A snapshot shows the first --channel-page members (3 here) with more;
    {"type":"members","after":...} reads the next page over the WebSocket,
    as GET /v1/channels/{name}/members?after= does for a backend: each page
    as the session is shown it (invisible members left out but its own),
    more until the last, for a joined or an observed channel only, after a
    valid user id only. Without it a browser saw 3 members of 8. d may be a
    Redis-backed instance (test_redis_channels runs this too)."""
    room = "mp-room"
    users = ["mp-a", "mp-b", "mp-c", "mp-d", "mp-e", "mp-f", "mp-g", "mp-h"]
    cs = {}
    for u in users:
        cs[u] = await Client.connect(d, u, tok=chan_tok(u, "*"))
        if u == "mp-c":
            await cs[u].send({"type": "availability", "availability": "invisible", "id": "i"})
            await cs[u].expect_type("ack", 3, id="i")
        await join(cs[u], room, {"u": u})
    w = await Client.connect(d, "mp-w", tok=chan_tok("mp-w", observe="*"))
    await w.send({"type": "members", "channel": room, "id": "early"})
    e = await answer_of(w, "early")
    t.eq("members of a channel neither joined nor observed: not_joined, id echoed",
         (e.get("type"), e.get("code")), ("error", "not_joined"))
    await w.send({"type": "observe", "channel": room, "id": "o"})
    snap = await w.expect_type("channel", 3, id="o") or {}
    t.eq("the snapshot: the first page, more", (ids_of(snap), snap.get("more")),
         (["mp-a", "mp-b", "mp-d"], True))
    await w.send({"type": "members", "channel": room, "after": "mp-d", "id": 2})
    p2 = await answer_of(w, 2)
    t.eq("members after the snapshot's last: the next page, flagged page, more",
         (p2.get("type"), p2.get("snapshot"), p2.get("page"), ids_of(p2), p2.get("more")),
         ("channel", False, True, ["mp-e", "mp-f", "mp-g"], True))
    t.check("a page's members carry what a snapshot's do (status, data, since, version)",
            all(set(m) >= {"user_id", "status", "availability", "data", "since", "version"}
                and m["data"] == {"u": m["user_id"]} for m in p2.get("members", [])), p2)
    t.check("a page carries no count (the client's is newer: the snapshot's, then every change's)",
            "count" not in p2, p2)
    await w.send({"type": "members", "channel": room, "after": "mp-g", "id": 3})
    p3 = await answer_of(w, 3)
    t.eq("the last page: more false", (ids_of(p3), p3.get("more")), (["mp-h"], False))
    # A change of a member of a later page, before that page is asked: the
    # page holds it (ordered as a snapshot is: versions say which is newer).
    await cs["mp-f"].send({"type": "update", "channel": room, "data": {"u": "mp-f", "n": 2}, "id": "u"})
    ch, _ = await w.expect(is_change(room, "update", "mp-f"), 3)
    await w.send({"type": "members", "channel": room, "after": "mp-d", "id": 4})
    p4 = await answer_of(w, 4)
    got = [m for m in p4.get("members", []) if m["user_id"] == "mp-f"]
    t.check("a page read after a change holds it, at the change's version or newer",
            ch is not None and len(got) == 1 and got[0]["data"] == {"u": "mp-f", "n": 2}
            and got[0]["version"] >= ch["member"]["version"], (ch, got))
    await w.send({"type": "members", "channel": room, "id": 5})
    p5 = await answer_of(w, 5)
    t.eq("no after: the first page again", (ids_of(p5), p5.get("more")), (["mp-a", "mp-b", "mp-d"], True))
    await w.send({"type": "members", "channel": room, "after": None, "id": 6})
    t.eq("after null: the first page too", ids_of(await answer_of(w, 6)), ["mp-a", "mp-b", "mp-d"])
    await cs["mp-c"].send({"type": "members", "channel": room, "after": "mp-b", "id": 7})
    t.eq("an invisible member's own session (joined) finds itself in its page",
         ids_of(await answer_of(cs["mp-c"], 7)), ["mp-c", "mp-d", "mp-e"])
    await w.send({"type": "members", "channel": room, "after": "mp-bz", "id": 8})
    t.eq("after a user id that is no member: the members after it",
         ids_of(await answer_of(w, 8)), ["mp-d", "mp-e", "mp-f"])
    for bad, label in ((5, "a number"), ("", "empty"), ("a\u0001b", "a control character"),
                       (["mp-d"], "an array"), ("x" * 129, "over 128 bytes")):
        await w.send({"type": "members", "channel": room, "after": bad, "id": "bad"})
        e = await answer_of(w, "bad")
        t.eq(f"after {label}: bad_field", (e.get("type"), e.get("code")), ("error", "bad_field"))
    await w.send({"type": "members", "channel": "mp-other", "id": "other"})
    e = await answer_of(w, "other")
    t.eq("another channel (allowed, not observed): not_joined", (e.get("type"), e.get("code")),
         ("error", "not_joined"))
    await w.send({"type": "unobserve", "channel": room, "id": "uo"})
    await w.expect_type("ack", 3, id="uo")
    await w.send({"type": "members", "channel": room, "after": "mp-d", "id": "gone"})
    e = await answer_of(w, "gone")
    t.eq("after unobserve: not_joined", (e.get("type"), e.get("code")), ("error", "not_joined"))
    await w.send({"type": "ping", "id": "alive"})
    t.check("refusals close nothing: the connection answers a ping", await w.expect_type("pong", 3, id="alive") is not None)
    for x in list(cs.values()) + [w]:
        await x.close()


async def test_page_past_hidden_run(t, d, args):
    """A run of invisible members longer than the pages a snapshot reads
    (the first and 8 more, 3 members each here) left the page empty with
    more after it: a client asking for the page after its last member had
    none to give, and the member past the run was never shown. The page
    now holds at least the next shown member."""
    room = "hr-room"
    cs = []
    for k in range(30):
        u = f"hr-{k:02d}"
        c = await Client.connect(d, u, tok=chan_tok(u, "*"))
        await c.send({"type": "availability", "availability": "invisible", "id": "i"})
        await c.expect_type("ack", 3, id="i")
        await join(c, room)
        cs.append(c)
    z = await Client.connect(d, "hr-zed", tok=chan_tok("hr-zed", "*"))
    await join(z, room)
    w = await Client.connect(d, "hr-w", tok=chan_tok("hr-w", observe="*"))
    await w.send({"type": "observe", "channel": room, "id": "o"})
    snap = await w.expect_type("channel", 3, id="o") or {}
    t.eq("30 invisible members before the one shown: the snapshot shows it, no more, count 1",
         (ids_of(snap), snap.get("more"), snap.get("count")), (["hr-zed"], False, 1))
    await w.send({"type": "members", "channel": room, "id": "p"})
    p = await answer_of(w, "p")
    t.eq("a page from the start: the same", (ids_of(p), p.get("more")), (["hr-zed"], False))
    for x in cs + [z, w]:
        await x.close()
test_page_past_hidden_run.timeout = 60


async def masked_members(t, da, db, label):
    """Other members see a member exactly as watchers see a user
    (docs/protocol.md 4.1, 6.1): one frame when what they are shown changes,
    none when it does not; an invisible member is absent. bob's session is
    on da, the members looking at him on db (the same daemon, or another
    instance sharing the Redis store)."""
    room = f"mask-{label}"
    a = await Client.connect(db, "mk-ann", tok=chan_tok("mk-ann", "*"))
    b = await Client.connect(da, "mk-bob", tok=chan_tok("mk-bob", "*"))
    await join(a, room, {"n": "a"})
    await join(b, room, {"n": "b"})
    m, _ = await a.expect(is_change(room, "join", "mk-bob"), 5)
    t.check(f"{label}: ann sees bob join", m is not None, m)

    async def bob_frames(secs=0.8):
        return [x for x in await a.collect(secs) if is_change(room, user="mk-bob")(x)]

    async def bob_does(msg, ident):
        await b.send(dict(msg, id=ident))
        await b.expect_type("ack", 5, id=ident)

    await bob_does({"type": "availability", "availability": "dnd"}, "dnd")
    got = await bob_frames()
    t.eq(f"{label}: bob sets dnd: one frame, shown online + dnd",
         [(x["event"], x["member"]["status"], x["member"]["availability"]) for x in got],
         [("update", "online", "dnd")])
    await b.send({"type": "status", "status": "idle"})
    t.eq(f"{label}: idle under dnd: no frame to ann (she is shown online either way)",
         await bob_frames(), [])
    await b.send({"type": "status", "status": "online"})
    t.eq(f"{label}: online again under dnd: no frame", await bob_frames(), [])
    await b.send({"type": "status", "status": "idle"})
    await bob_frames(0.4)
    await bob_does({"type": "update", "channel": room, "data": {"n": "b2"}}, "u1")
    got = await bob_frames()
    t.eq(f"{label}: data under dnd while idle: one frame, status and from both the shown online",
         [(x["event"], x["member"]["status"], x.get("from"), x["member"]["data"]) for x in got],
         [("update", "online", "online", {"n": "b2"})])
    await bob_does({"type": "availability", "availability": "away"}, "away")
    got = await bob_frames()
    t.eq(f"{label}: dnd -> away: one frame, shown idle",
         [(x["member"]["status"], x["member"]["availability"]) for x in got], [("idle", "away")])
    await b.send({"type": "status", "status": "online"})
    t.eq(f"{label}: online under away: no frame", await bob_frames(), [])

    await bob_does({"type": "availability", "availability": "invisible"}, "inv")
    got = await bob_frames()
    t.eq(f"{label}: invisible: one frame, bob leaves, shown offline",
         [(x["event"], x["member"]["status"]) for x in got], [("leave", "offline")])
    await b.send({"type": "status", "status": "idle"})
    await b.collect(0.3)
    await bob_does({"type": "update", "channel": room, "data": {"n": "b3"}}, "u2")
    t.eq(f"{label}: an invisible member's status and data changes: no frame", await bob_frames(), [])
    c = await Client.connect(db, "mk-cat", tok=chan_tok("mk-cat", "*"))
    snap = await join(c, room)
    t.eq(f"{label}: a new member's snapshot leaves the invisible member out",
         sorted(x["user_id"] for x in (snap or {}).get("members", [])), ["mk-ann", "mk-cat"])
    await a.collect(0.3)
    r = await http(db, "GET", f"/v1/channels/{room}/members")
    mb = {x["user_id"]: x for x in (r.json() or {}).get("members", [])}
    t.eq(f"{label}: the backend sees the truth: bob idle, invisible",
         (mb.get("mk-bob", {}).get("status"), mb.get("mk-bob", {}).get("availability")),
         ("idle", "invisible"))
    await bob_does({"type": "availability", "availability": "auto"}, "auto")
    got = await bob_frames()
    t.eq(f"{label}: visible again: one frame, bob joins, idle, with the data set while invisible",
         [(x["event"], x["member"]["status"], x["member"]["data"]) for x in got],
         [("join", "idle", {"n": "b3"})])
    snap = await join(c, room, ident="again")
    t.eq(f"{label}: and the snapshot lists him, idle",
         [(x["user_id"], x["status"]) for x in (snap or {}).get("members", []) if x["user_id"] == "mk-bob"],
         [("mk-bob", "idle")])
    for x in (a, b, c):
        await x.close()


async def hidden_counts(t, da, db, dc, label):
    """An invisible member is not counted by the other members
    (docs/protocol.md 4.1): snapshots and changes carry the shown count
    (backends get both); going invisible is one leave-like frame with the
    count one less, coming back one join-like frame with it one more; a
    change under dnd that shows nothing sends nothing; the version members
    see moves by one per frame they get. bob's session is on da, ann looks
    from db, cat from dc (one daemon, or three sharing a Redis)."""
    room = f"cnt-{label}"
    a = await Client.connect(db, "hc-ann", tok=chan_tok("hc-ann", "*"))
    c = await Client.connect(dc, "hc-cat", tok=chan_tok("hc-cat", "*"))
    b = await Client.connect(da, "hc-bob", tok=chan_tok("hc-bob", "*"))
    await join(a, room, {"n": "a"})
    await join(c, room, {"n": "c"})

    async def bob_does(msg, ident):
        await b.send(dict(msg, id=ident))
        await b.expect_type("ack", 5, id=ident)

    async def bob_frames(x, secs=0.8):
        return [m for m in await x.collect(secs) if is_change(room, user="hc-bob")(m)]

    await bob_does({"type": "availability", "availability": "invisible"}, "inv0")
    snap = await join(b, room, {"n": "b"})
    t.eq(f"{label}: bob joins invisible: his own snapshot lists him, counts the 2 others",
         (snap or {}).get("count"), 2)
    t.eq(f"{label}: bob's invisible join: no frame to ann", await bob_frames(a), [])
    snap = await join(c, room, ident="again")
    t.eq(f"{label}: cat's snapshot: 2 listed, count 2 (not 3)",
         (sorted(x["user_id"] for x in (snap or {}).get("members", [])), (snap or {}).get("count")),
         (["hc-ann", "hc-cat"], 2))
    r = await http(dc, "GET", f"/v1/channels?prefix={room}")
    t.eq(f"{label}: the backend listing: count 3 (the truth), shown_count 2",
         [(x.get("count"), x.get("shown_count")) for x in (r.json() or {}).get("channels", [])], [(3, 2)])

    await bob_does({"type": "availability", "availability": "auto"}, "vis")
    got = await bob_frames(a)
    t.eq(f"{label}: visible: one join-like frame, count 3",
         [(x["event"], x.get("count"), x["member"]["status"]) for x in got], [("join", 3, "online")])
    v0 = got[0]["member"]["version"] if got else 0
    await bob_does({"type": "availability", "availability": "dnd"}, "dnd")
    got = await bob_frames(a)
    t.eq(f"{label}: dnd: one update, count 3, the version one more",
         [(x["event"], x.get("count"), x["member"].get("version")) for x in got], [("update", 3, v0 + 1)])
    await b.send({"type": "status", "status": "idle"})
    t.eq(f"{label}: online -> idle under dnd: no frame", await bob_frames(a), [])
    await b.send({"type": "status", "status": "online"})
    t.eq(f"{label}: idle -> online under dnd: no frame", await bob_frames(a), [])
    await bob_does({"type": "update", "channel": room, "data": {"n": "b2"}}, "u1")
    got = await bob_frames(a)
    t.eq(f"{label}: a data change: one frame, the version one more (the hidden moves skipped none)",
         [(x["event"], x.get("count"), x["member"].get("version")) for x in got], [("update", 3, v0 + 2)])

    await bob_does({"type": "availability", "availability": "invisible"}, "inv")
    got = await bob_frames(a)
    t.eq(f"{label}: invisible: one leave-like frame, count 2",
         [(x["event"], x.get("count"), x["member"]["status"]) for x in got], [("leave", 2, "offline")])
    await b.collect(0.3)
    await bob_does({"type": "update", "channel": room, "data": {"n": "b3"}}, "u2")
    t.eq(f"{label}: an invisible member's data change: no frame to ann", await bob_frames(a), [])
    own = [m for m in await b.collect(0.5) if is_change(room, user="hc-bob")(m)]
    t.eq(f"{label}: bob's own session gets it, marked hidden, the count without him",
         [(x.get("hidden"), x.get("count"), x["member"]["data"]) for x in own], [(True, 2, {"n": "b3"})])
    await c.send({"type": "leave", "channel": room, "id": "cl"})
    await c.expect_type("ack", 5, id="cl")
    m, _ = await a.expect(is_change(room, "leave", "hc-cat"), 5)
    t.eq(f"{label}: cat leaves: ann is shown count 1 (bob, invisible, not counted)",
         (m or {}).get("count"), 1)
    r = await http(db, "GET", f"/v1/channels?prefix={room}")
    t.eq(f"{label}: backend: count 2, shown_count 1",
         [(x.get("count"), x.get("shown_count")) for x in (r.json() or {}).get("channels", [])], [(2, 1)])
    await b.close()
    await asyncio.sleep(0.5)
    t.eq(f"{label}: bob's session ends while invisible: no frame to ann", await bob_frames(a), [])
    r = await http(dc, "GET", f"/v1/channels?prefix={room}")
    t.eq(f"{label}: backend after bob's end: count 1, shown_count 1",
         [(x.get("count"), x.get("shown_count")) for x in (r.json() or {}).get("channels", [])], [(1, 1)])
    b = await Client.connect(da, "hc-bob", tok=chan_tok("hc-bob", "*"))
    await join(b, room, {"n": "b4"})
    t.eq(f"{label}: bob back, still invisible: no frame to ann", await bob_frames(a), [])
    await bob_does({"type": "availability", "availability": "auto"}, "vis2")
    got = await bob_frames(a)
    t.eq(f"{label}: visible again: one join-like frame, count 2",
         [(x["event"], x.get("count")) for x in got], [("join", 2)])
    for x in (a, b, c):
        await x.close()


async def test_masked_members(t, d, args):
    await masked_members(t, d, d, "embedded")


async def test_hidden_counts(t, d, args):
    await hidden_counts(t, d, d, d, "embedded")


async def test_presencectl(t, d, args):
    ctl_path = os.path.join(os.path.dirname(os.path.abspath(args.presenced)), "presencectl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCECTL_")}
    env.update(PRESENCECTL_URL=f"http://{HOST}:{d.port}", PRESENCECTL_API_KEY=API_KEY)

    async def ctl(*argv):
        p = await asyncio.create_subprocess_exec(ctl_path, *argv, stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await asyncio.wait_for(p.communicate(), 15)
        return p.returncode, out.decode(), err.decode()

    watch = await asyncio.create_subprocess_exec(ctl_path, "watch", stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE, env=env)
    await asyncio.sleep(0.5)
    cs = []
    for i in range(3):
        c = await Client.connect(d, f"ctl-u{i}", tok=chan_tok(f"ctl-u{i}", "*"))
        await join(c, "ctl room", {"name": f"U{i}"})
        cs.append(c)
    rc, out, err = await ctl("channel", "ctl room")
    t.eq("presencectl channel NAME: exit 0", rc, 0)
    t.check("it prints the count and every member with its data",
            "3 members" in out and all(f"ctl-u{i}" in out and f'"name":"U{i}"' in out for i in range(3)), out + err)
    rc, out, _ = await ctl("--json", "channel", "ctl room")
    j = json.loads(out) if rc == 0 else {}
    t.eq("presencectl --json channel: count and members", (j.get("count"), len(j.get("members", []))), (3, 3))
    await cs[0].close()
    await asyncio.sleep(0.6)
    watch.terminate()
    out = (await asyncio.wait_for(watch.communicate(), 5))[0].decode()
    t.check("presencectl watch shows channel events with the channel and data",
            "channel.join" in out and "channel ctl room" in out and '"name":"U1"' in out
            and "channel.leave" in out, out[-800:])
    for c in cs[1:]:
        await c.close()


HOOKS = HookReceiver()


async def test_webhook_filters(t, d, args):
    c = await Client.connect(d, "wh-ann", tok=chan_tok("wh-ann", "*"))
    await join(c, "hook:1", {"n": 1})
    await join(c, "other:1")
    await c.send({"type": "leave", "channel": "hook:1", "id": "l"})
    await c.expect_type("ack", 3, id="l")
    await c.close()
    got = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = [e for _, b, _ in HOOKS.batches() for e in b.get("events", [])]
        if len(got) >= 2:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    got = [e for _, b, _ in HOOKS.batches() for e in b.get("events", [])]
    t.eq("webhook events=channel.*,channel-prefix=hook: gets only hook:1's join and leave",
         [(e["type"], e["channel"], e.get("data")) for e in got],
         [("channel.join", "hook:1", {"n": 1}), ("channel.leave", "hook:1", None)])


async def test_data_kept_as_written(t, d, args):
    # A member's data and a session's meta reach others as their client
    # wrote them: an id of 19 digits keeps its digits (the server printed
    # its parsed tree again, where a number is a double, and sent
    # 1234567890123456768), and a number JSON does not write (007) is
    # refused rather than sent on.
    data = {"msg": 1234567890123456789, "x": 0.30000000000000004, "s": "\u00e9\"\\"}
    meta = {"account": 9007199254740993}
    a = await Client.connect(d, "big-ann", tok=chan_tok("big-ann", "*", meta=meta))
    b = await Client.connect(d, "big-bob", tok=chan_tok("big-bob", "*"))
    await join(a, "big:1", data)
    snap = await join(b, "big:1")
    got = [m["data"] for m in (snap or {}).get("members", []) if m["user_id"] == "big-ann"]
    t.eq("a member's data in another's snapshot: every digit", got, [data])
    await a.send({"type": "update", "channel": "big:1", "data": {"n": 12345678901234567890123}, "id": 7})
    m, _ = await b.expect(is_change("big:1", "update", "big-ann"), 3)
    t.eq("an update's data: every digit", m and m["member"]["data"], {"n": 12345678901234567890123})
    r = await http(d, "GET", "/v1/channels/big:1/members")
    got = [m["data"] for m in (r.json() or {}).get("members", []) if m["user_id"] == "big-ann"]
    t.eq("the API's member data: every digit", got, [{"n": 12345678901234567890123}])
    r = await http(d, "GET", "/v1/users/big-ann/sessions")
    t.eq("the token's meta in the session list: every digit",
         [s.get("meta") for s in (r.json() or {}).get("sessions", [])], [meta])
    await a.ws.send('{"type":"update","channel":"big:1","data":{"n":007},"id":8}')
    e = await a.expect_type("error", 3)
    t.eq("data with 007 (not JSON to other readers): bad_json", e and e.get("code"), "bad_json")


if __name__ == "__main__":
    run([
        ("channels", {"--offline-grace-ms": "0", "--max-channel-name": "16",
                      "--max-channel-data": "64", "--max-channels-per-session": "2",
                      "--channel-joins-per-s": "3"},
         [test_members_and_changes, test_observe_and_grants, test_limits_and_bad_input]),
        ("channels-api", {"--offline-grace-ms": "0"}, [test_backend_api, test_events_stream,
                                                       test_presencectl, test_invisible_members,
                                                       test_masked_members, test_hidden_counts,
                                                       test_data_kept_as_written]),
        ("channels-page", {"--offline-grace-ms": "0", "--channel-page": "3"},
         [test_page_of_shown_members, test_members_pages, test_page_past_hidden_run]),
        ("channels-hooks", {"--offline-grace-ms": "0", "--webhook-batch-ms": "20",
                            "--webhook": f"url={HOOKS.url()},secret=whsec-channels-0123456789abcdef012345,events=channel.*,"
                                         "channel-prefix=hook:"}, [test_webhook_filters]),
    ])
