#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Status that people set (docs/protocol.md section 6) through the real daemon:
availability and the status message from a client and from a backend, what
watchers see (masked, exactly one message per visible change), what backends
see (the truth) in the API and the event stream, message expiry, the device
claim, and bad input refused with the documented codes, nothing stored."""

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403
from test_redis_cluster import read_log_records  # noqa: E402


def entry(msg, user):
    for u in (msg or {}).get("users", []):
        if u.get("user_id") == user:
            return u
    return None


async def user_truth(d, user):
    r = await http(d, "GET", f"/v1/users/{user}")
    return r.json() or {}


async def test_watcher_sees_masked_changes_once(t, d, args):
    alice = await Client.connect(d, "alice")
    bob = await Client.connect(d, "bob", watch="*")
    sse = await SSE.open(d)
    await bob.send({"type": "subscribe", "users": ["alice"], "id": 1})
    snap = await bob.expect_type("presence", snapshot=True)
    u = entry(snap, "alice") or {}
    t.check("snapshot: online, availability auto, devices {web: online}, message null",
            u.get("status") == "online" and u.get("availability") == "auto"
            and u.get("devices") == {"web": "online"} and u.get("message") is None
            and isinstance(u.get("last_active"), int), u)

    await alice.send({"type": "availability", "availability": "dnd", "id": "a1"})
    t.check("availability dnd: ack", await alice.expect_type("ack", id="a1") is not None)
    ch = entry(await bob.change("alice"), "alice") or {}
    t.check("watcher: one change, status online, availability dnd",
            ch.get("change") == "status" and ch.get("status") == "online"
            and ch.get("availability") == "dnd", ch)
    t.eq("watcher: the change's version is the snapshot's + 1",
         ch.get("version"), (u.get("version") or 0) + 1)
    v_dnd = ch.get("version")

    # idle under dnd: nothing a watcher sees changes, so nothing is sent.
    await alice.send({"type": "status", "status": "idle", "id": "s1"})
    await alice.expect_type("ack", id="s1")
    await alice.send({"type": "status", "status": "online", "id": "s2"})
    await alice.expect_type("ack", id="s2")
    got = await bob.changes(0.6, "alice")
    t.eq("watcher: idle and back under dnd send nothing", got, [])
    # Nor does the version a watcher is shown move: a new subscriber's
    # snapshot says what the last change said (the user's own version,
    # which backends see, moved twice).
    await bob.send({"type": "subscribe", "users": ["alice"], "id": 3})
    snap = await bob.expect_type("presence", snapshot=True, id=3)
    t.eq("watcher: the shown version did not move with the hidden idle",
         (entry(snap, "alice") or {}).get("version"), v_dnd)
    j = await user_truth(d, "alice")
    t.check("backend: the truth, online + dnd", j.get("status") == "online"
            and j.get("availability") == "dnd" and j.get("availability_since", 0) > 0, j)

    await alice.send({"type": "availability", "availability": "invisible", "id": "a2"})
    await alice.expect_type("ack", id="a2")
    ch = entry(await bob.change("alice"), "alice") or {}
    t.check("invisible: the watcher sees offline, availability auto, like an absent user",
            ch.get("status") == "offline" and ch.get("availability") == "auto", ch)
    t.eq("invisible: the next version", ch.get("version"), v_dnd + 1)
    # A new watcher: offline, no devices, indistinguishable from absent.
    carol = await Client.connect(d, "carol", watch="*")
    await carol.send({"type": "subscribe", "users": ["alice", "nobody-here"], "id": 2})
    snap = await carol.expect_type("presence", snapshot=True)
    a, n = entry(snap, "alice") or {}, entry(snap, "nobody-here") or {}
    t.check("invisible in a snapshot: offline, auto, devices {}",
            a.get("status") == "offline" and a.get("availability") == "auto"
            and a.get("devices") == {}, a)
    t.check("invisible shows the same fields as an absent user",
            sorted(a.keys()) == sorted(n.keys()), (a, n))
    j = await user_truth(d, "alice")
    t.check("backend: the truth, online + invisible, devices web online",
            j.get("status") == "online" and j.get("availability") == "invisible"
            and (j.get("devices") or {}).get("web", {}).get("status") == "online", j)
    # Activity while invisible: nothing.
    await alice.send({"type": "status", "status": "idle", "id": "s3"})
    await alice.expect_type("ack", id="s3")
    t.eq("watcher: idle while invisible sends nothing", await bob.changes(0.5, "alice"), [])
    await alice.send({"type": "availability", "availability": "auto", "id": "a3"})
    await alice.expect_type("ack", id="a3")
    ch = entry(await bob.change("alice"), "alice") or {}
    t.check("back to auto (idle): one change, idle", ch.get("status") == "idle"
            and ch.get("from") == "offline", ch)
    t.eq("back to auto: the next version (the idle while invisible moved none)",
         ch.get("version"), v_dnd + 2)
    j = await user_truth(d, "alice")
    t.check("backend: the user's own version moved with every change",
            j.get("version", 0) > v_dnd + 2, j)
    # The same availability again: no event, no message.
    await alice.send({"type": "availability", "availability": "auto", "id": "a4"})
    await alice.expect_type("ack", id="a4")
    t.eq("setting it again sends nothing", await bob.changes(0.4, "alice"), [])

    evs = [e["data"] for e in await sse.collect(0.5) if isinstance(e.get("data"), dict)]
    av = [e for e in evs if e.get("type") == "user.availability" and e.get("user_id") == "alice"]
    t.eq("events: one user.availability per change (dnd, invisible, auto)",
         [(e.get("from"), e.get("to")) for e in av],
         [("auto", "dnd"), ("dnd", "invisible"), ("invisible", "auto")])
    t.check("events: user.availability carries the computed status and a version",
            all(e.get("status") in ("online", "idle") and isinstance(e.get("version"), int)
                and e.get("reason") == "explicit" for e in av), av)
    idle = [e for e in evs if e.get("type") == "user.idle" and e.get("user_id") == "alice"]
    t.check("events: backends see the hidden idle (truth), with availability",
            len(idle) >= 2 and all("availability" in e for e in idle), idle)
    sse.close()
    for c in (alice, bob, carol):
        await c.close()


def apply_change(held, ch):
    """What a client does with a change (docs/protocol.md 6.4): status and
    availability always, the device when named, the whole map when given."""
    held = dict(held)
    held["status"], held["availability"] = ch.get("status"), ch.get("availability")
    devices = dict(held.get("devices") or {})
    if "devices" in ch:
        devices = dict(ch["devices"])
    if ch.get("device"):
        if ch.get("device_status") == "offline":
            devices.pop(ch["device"], None)
        else:
            devices[ch["device"]] = ch.get("device_status")
    held["devices"] = devices
    return held


async def device_map_follows(t, web, mobile, watcher, user, timeout=3.0):
    """A watcher that applies changes onto its snapshot holds what a fresh
    snapshot says after every availability change, devices included: under
    dnd an idle device shows online, under invisible none shows, under away
    each shows idle (docs/protocol.md 6.1). web and mobile are two sessions
    of user, on the devices their names say."""
    async def fresh(ident):
        await watcher.send({"type": "subscribe", "users": [user], "id": ident})
        snap = await watcher.expect_type("presence", snapshot=True, id=ident)
        return entry(snap, user) or {}

    held = await fresh("dm0")
    t.eq("device map: the snapshot shows both devices online",
         held.get("devices"), {"web": "online", "mobile": "online"})
    await mobile.send({"type": "status", "status": "idle", "id": "dm-idle"})
    await mobile.expect_type("ack", id="dm-idle")
    held = apply_change(held, entry(await watcher.change(user, timeout), user) or {})
    t.eq("device map: mobile idle under auto", held.get("devices"),
         {"web": "online", "mobile": "idle"})
    steps = [("dnd", {"web": "online", "mobile": "online"}),
             ("invisible", {}),
             ("away", {"web": "idle", "mobile": "idle"}),
             ("auto", {"web": "online", "mobile": "idle"})]
    for i, (av, want) in enumerate(steps):
        await web.send({"type": "availability", "availability": av, "id": f"dm-a{i}"})
        await web.expect_type("ack", id=f"dm-a{i}")
        ch = entry(await watcher.change(user, timeout), user) or {}
        t.eq(f"device map: the {av} change carries the shown map", ch.get("devices"), want)
        held = apply_change(held, ch)
        now = await fresh(f"dm{i + 1}")
        t.eq(f"device map: after {av}, the changes applied equal a fresh snapshot",
             {k: held.get(k) for k in ("status", "availability", "devices")},
             {k: now.get(k) for k in ("status", "availability", "devices")})


def veiled(u, lo, hi):
    """The fields of a watcher's entry u that fall strictly inside (lo, hi),
    a period the user spent invisible: none may (docs/protocol.md 6.1)."""
    return {k: u.get(k) for k in ("since", "last_seen", "last_active")
            if isinstance(u.get(k), int) and lo < u[k] < hi}


async def times_stay_veiled(t, ad, bd, wd, uid, timeout=3.0):
    """The user's sessions on ad, the API of bd, a watcher on wd (one daemon
    or three instances), an offline grace of 1.5 s. Invisible, connected,
    active, then gone: its availability set back to auto by a backend (1)
    once it is offline, (2) in its offline grace. No watcher's snapshot or
    change may then show a time from the period it spent invisible (a
    last_seen after it went invisible proves it was there); the API shows
    the truth. The privacy leak of 2026-12-07: both failed. (3) Auto set
    while still connected: the snapshot's since is not before it."""
    w = await Client.connect(wd, uid + "-w", watch="*")
    await w.send({"type": "subscribe", "users": [uid], "id": "v0"})
    await w.expect_type("presence", timeout, snapshot=True, id="v0")

    async def api():
        r = await http(bd, "GET", f"/v1/users/{uid}")
        return r.json() or {}

    async def gone():
        for _ in range(60):
            if (await api()).get("status") == "offline":
                return True
            await asyncio.sleep(0.1)
        return False

    async def snapshot(ident):
        await w.send({"type": "subscribe", "users": [uid], "id": ident})
        return entry(await w.expect_type("presence", timeout, snapshot=True, id=ident), uid) or {}

    for case in ("offline", "grace"):
        ann = await Client.connect(ad, uid)
        await ann.send({"type": "availability", "availability": "invisible", "id": "a"})
        await ann.expect_type("ack", timeout, id="a")
        t_inv = (await api()).get("availability_since") or 0
        await asyncio.sleep(0.6)
        await ann.send({"type": "status", "status": "idle", "id": "s1"})
        await ann.expect_type("ack", timeout, id="s1")
        await ann.send({"type": "status", "status": "online", "id": "s2"})
        await ann.expect_type("ack", timeout, id="s2")
        await asyncio.sleep(0.6)
        await ann.close()
        if case == "offline":
            t.check(f"{case}: offline after the grace", await gone())
        else:
            await asyncio.sleep(0.3)  # in the 1.5 s grace
        await w.collect(0.2)  # what going invisible and online sent
        t_auto = now_ms()
        r = await http(bd, "PUT", f"/v1/users/{uid}/availability", body={"availability": "auto"})
        t.eq(f"{case}: a backend sets auto", r.status, 200)
        if case == "grace":
            t.check(f"{case}: offline once the grace ends", await gone())
        truth = await api()
        t.check(f"{case}: the API shows the truth, last seen after going invisible",
                t_inv < (truth.get("last_seen") or 0) < t_auto, (t_inv, truth, t_auto))
        # The daemon's clock is read once a loop turn: its time for the
        # change may be a little before ours. She was last seen 0.3 s
        # before it at least.
        hi = t_auto - 100
        for m in await w.collect(0.3):
            ch = entry(m, uid)
            if ch:
                t.eq(f"{case}: the watcher's {ch.get('status')} change shows no time of "
                     "the invisible period", veiled(ch, t_inv, hi), {})
        u = await snapshot(f"v-{case}")
        t.check(f"{case}: a new snapshot: offline", u.get("status") == "offline", u)
        t.eq(f"{case}: a new snapshot shows no time of the invisible period",
             veiled(u, t_inv, hi), {})
    # Connected before going invisible, auto set while still connected:
    # online again since then, not since it connected (which would say it
    # was there all along).
    ann = await Client.connect(ad, uid)
    await w.change(uid, timeout=timeout)
    await asyncio.sleep(0.3)
    await ann.send({"type": "availability", "availability": "invisible", "id": "a"})
    await ann.expect_type("ack", timeout, id="a")
    await asyncio.sleep(0.6)
    t_auto = now_ms()
    r = await http(bd, "PUT", f"/v1/users/{uid}/availability", body={"availability": "auto"})
    t.eq("online: a backend sets auto", r.status, 200)
    u = await snapshot("v-online")
    t.check("online: a new snapshot shows it online since it came back",
            u.get("status") == "online" and (u.get("since") or 0) >= t_auto - 100, (u, t_auto))
    await ann.close()
    t.check("online: offline after the grace", await gone())
    await w.collect(0.3)
    # Seen again: the times are its own again.
    t_back = now_ms()
    ann = await Client.connect(ad, uid)
    ch = entry(await w.change(uid, timeout=timeout), uid) or {}
    await ann.close()
    t.check("seen again: an online change since its return",
            ch.get("status") == "online" and (ch.get("since") or 0) >= t_back - 100, ch)
    t.check("gone again: offline after the grace", await gone())
    u = await snapshot("v-back")
    t.check("gone again: a new snapshot shows the true last_seen",
            u.get("status") == "offline" and (u.get("last_seen") or 0) >= t_back - 100, (u, t_back))
    await w.close()


async def member_since_veiled(t, ad, wd, uid, timeout=3.0):
    """The user's session on ad, the other members on wd (one daemon or two
    instances). It is a member of room-a, goes invisible, joins room-b
    unseen, stays, and comes back: the other members saw it leave room-a
    when it went invisible and join both when it came back, so no member's
    since they are shown may date from before it came back (one from before
    would tell them it stayed in room-a all along, or when it joined room-b
    unseen: docs/protocol.md 4.1). The API keeps the true since."""
    ra, rb = f"{uid}-a", f"{uid}-b"
    grants = {"channels": "*", "observe": "*"}
    ann = await Client.connect(ad, uid, tok=token(uid, extra=grants))
    w = await Client.connect(wd, f"{uid}-w", tok=token(f"{uid}-w", watch="*", extra=grants))
    await ann.send({"type": "join", "channel": ra, "id": "ja"})
    await ann.expect_type("channel", timeout, id="ja")
    await w.send({"type": "join", "channel": ra, "id": "wa"})
    await w.expect_type("channel", timeout, id="wa")
    await w.send({"type": "observe", "channel": rb, "id": "wb"})
    await w.expect_type("channel", timeout, id="wb")
    await asyncio.sleep(0.3)
    await ann.send({"type": "availability", "availability": "invisible", "id": "inv"})
    await ann.expect_type("ack", timeout, id="inv")
    # The server's times (a client's clock may be a few ms off).
    t_inv = (await user_truth(ad, uid)).get("availability_since", 0)
    await asyncio.sleep(0.3)
    await ann.send({"type": "join", "channel": rb, "data": {"n": 1}, "id": "jb"})
    await ann.expect_type("channel", timeout, id="jb")
    await asyncio.sleep(0.6)  # the period to hide
    await ann.send({"type": "availability", "availability": "auto", "id": "auto"})
    await ann.expect_type("ack", timeout, id="auto")
    back = (await user_truth(ad, uid)).get("availability_since", 0)

    def visible_join(m):
        return (m.get("type") == "channel" and m.get("visibility") is True
                and m.get("event") == "join" and (m.get("member") or {}).get("user_id") == uid)
    frame, _ = await w.expect(visible_join, timeout, "the visibility join")
    since = ((frame or {}).get("member") or {}).get("since", 0)
    t.check("back from invisible: the others' join frame shows a since from when it came back, "
            "not from before it went invisible", since >= back > t_inv > 0, (since, back, t_inv))
    for ch, ident in ((ra, "sa"), (rb, "sb")):
        await w.send({"type": "observe", "channel": ch, "id": ident})
        snap = await w.expect_type("channel", timeout, id=ident) or {}
        m = next((m for m in snap.get("members", []) if m.get("user_id") == uid), {})
        t.check(f"a new snapshot of {ch}: listed, since no earlier than when it came back",
                m.get("status") == "online" and m.get("since", 0) >= back, (m, back))
    # The user's own since as a watcher is shown it (the veil, 6.1): from
    # when it came back too.
    await w.send({"type": "subscribe", "users": [uid], "id": "su"})
    u = entry(await w.expect_type("presence", timeout, id="su"), uid) or {}
    t.check("a watcher's snapshot of the user: online since it came back",
            u.get("status") == "online" and u.get("since", 0) >= back, (u, back))
    for ch, lo, hi in ((ra, 1, t_inv), (rb, t_inv, back)):
        r = await http(ad, "GET", f"/v1/channels/{ch}/members")
        m = next((m for m in (r.json() or {}).get("members", []) if m.get("user_id") == uid), {})
        t.check(f"the API: {ch}'s true since (its join), before it came back",
                lo <= m.get("since", 0) < hi, (m, lo, hi))
    for c in (ann, w):
        await c.close()


async def test_member_since_veiled(t, d, args):
    await member_since_veiled(t, d, d, "msv-ann")


async def test_times_stay_veiled(t, d, args):
    await times_stay_veiled(t, d, d, d, "veil-ann")


async def test_device_map_follows_availability(t, d, args):
    web = await Client.connect(d, "dm-ann")
    mobile = await Client.connect(d, "dm-ann", tok=token("dm-ann", extra={"device": "mobile"}))
    watcher = await Client.connect(d, "dm-watch", watch="*")
    await device_map_follows(t, web, mobile, watcher, "dm-ann")
    for c in (web, mobile, watcher):
        await c.close()


async def test_message_and_expiry(t, d, args):
    dave = await Client.connect(d, "dave")
    eve = await Client.connect(d, "eve", watch="*")
    sse = await SSE.open(d)
    await eve.send({"type": "subscribe", "users": ["dave"], "id": 1})
    await eve.expect_type("presence", snapshot=True)
    await dave.send({"type": "message", "text": "In a meeting", "emoji": "📅",
                     "expires_in": 1, "id": "m1"})
    t.check("message: ack", await dave.expect_type("ack", id="m1") is not None)
    ch = entry(await eve.change("dave"), "dave") or {}
    msg = ch.get("message") or {}
    t.check("watcher: change message with text, emoji, expiry",
            ch.get("change") == "message" and msg.get("text") == "In a meeting"
            and msg.get("emoji") == "📅" and isinstance(msg.get("expires"), int), ch)
    j = await user_truth(d, "dave")
    t.check("backend: message in GET /v1/users/{id}",
            (j.get("message") or {}).get("text") == "In a meeting", j)
    ch = entry(await eve.change("dave", timeout=4), "dave") or {}
    t.check("at expiry: one change, message null, reason expired",
            ch.get("change") == "message" and ch.get("message") is None
            and ch.get("reason") == "expired", ch)
    t.eq("nothing after the expiry", await eve.changes(1.2, "dave"), [])
    j = await user_truth(d, "dave")
    t.check("backend: message gone", j.get("message") is None, j)
    evs = [e["data"] for e in await sse.collect(0.3) if isinstance(e.get("data"), dict)]
    um = [e for e in evs if e.get("type") == "user.message" and e.get("user_id") == "dave"]
    t.eq("events: user.message set then expired, once each",
         [(e.get("reason"), (e.get("message") or {}).get("text")) for e in um],
         [("explicit", "In a meeting"), ("expired", None)])
    sse.close()
    await dave.close()
    await eve.close()
test_message_and_expiry.timeout = 20


async def test_backend_sets_for_any_user(t, d, args):
    r = await http(d, "PUT", "/v1/users/frank/availability", body={"availability": "away"})
    t.check("PUT availability: 200 with the setting",
            r.status == 200 and (r.json() or {}).get("availability") == "away", r)
    r = await http(d, "PUT", "/v1/users/frank/message",
                   body={"text": "On leave", "emoji": ":palm_tree:", "expires_at": now_ms() + 3600_000})
    j = r.json() or {}
    t.check("PUT message: 200 with the message",
            r.status == 200 and (j.get("message") or {}).get("text") == "On leave", r)
    r = await http(d, "GET", "/v1/users/frank/availability")
    j = r.json() or {}
    t.check("GET availability: 200, away, when it was set",
            r.status == 200 and j.get("user_id") == "frank" and j.get("availability") == "away"
            and j.get("availability_since", 0) > 0, r)
    r = await http(d, "GET", "/v1/users/frank/message")
    j = r.json() or {}
    t.check("GET message: 200, the message with its expiry and set time",
            r.status == 200 and (j.get("message") or {}).get("text") == "On leave"
            and (j.get("message") or {}).get("expires", 0) > now_ms()
            and (j.get("message") or {}).get("set", 0) > 0, r)
    r = await http(d, "GET", "/v1/users/nobody-yet/message")
    t.check("GET message of a user never seen: 200, null",
            r.status == 200 and (r.json() or {}).get("message", 1) is None, r)
    j = await user_truth(d, "frank")
    t.check("an absent user: offline, the setting kept (away, message)",
            j.get("status") == "offline" and j.get("availability") == "away"
            and (j.get("message") or {}).get("emoji") == ":palm_tree:", j)
    # The user connects: away shows idle to watchers; the message too.
    frank = await Client.connect(d, "frank", tok=token("frank", extra={"device": "mobile"}))
    gina = await Client.connect(d, "gina", watch="*")
    await gina.send({"type": "subscribe", "users": ["frank"], "id": 1})
    u = entry(await gina.expect_type("presence", snapshot=True), "frank") or {}
    t.check("watcher: away shows idle, devices {mobile: idle}, message",
            u.get("status") == "idle" and u.get("availability") == "away"
            and u.get("devices") == {"mobile": "idle"}
            and (u.get("message") or {}).get("text") == "On leave", u)
    r = await http(d, "GET", "/v1/users/frank/sessions")
    ss = (r.json() or {}).get("sessions") or [{}]
    t.eq("sessions: the token's device", ss[0].get("device"), "mobile")
    r = await http(d, "DELETE", "/v1/users/frank/message")
    t.check("DELETE message: 200, message null",
            r.status == 200 and (r.json() or {}).get("message", 1) is None, r)
    ch = entry(await gina.change("frank"), "frank") or {}
    t.check("watcher: the clear as one change", ch.get("change") == "message"
            and ch.get("message") is None and ch.get("reason") == "explicit", ch)
    r = await http(d, "GET", "/v1/users?ids=frank,gina")
    us = (r.json() or {}).get("users") or []
    t.check("many users: each with its own availability and devices",
            len(us) == 2 and us[0].get("availability") == "away"
            and list((us[0].get("devices") or {}).keys()) == ["mobile"]
            and list((us[1].get("devices") or {}).keys()) == ["web"], us)
    await frank.close()
    await gina.close()


async def test_bad_input(t, d, args):
    c = await Client.connect(d, "henry")
    cases = [
        ({"type": "availability", "availability": "busy"}, "bad_availability"),
        ({"type": "availability"}, "bad_availability"),
        ({"type": "availability", "availability": 3}, "bad_availability"),
        ({"type": "message", "text": "x" * 129}, "bad_message"),
        ({"type": "message", "text": "two\nlines"}, "bad_message"),
        ({"type": "message", "text": 5}, "bad_message"),
        ({"type": "message", "emoji": "e" * 65}, "bad_message"),
        ({"type": "message", "text": "x", "expires_in": 0}, "bad_expiry"),
        ({"type": "message", "text": "x", "expires_in": 34560001}, "bad_expiry"),
        ({"type": "message", "text": "x", "expires_in": 1.5}, "bad_expiry"),
        ({"type": "message", "text": "x", "expires_in": "60"}, "bad_expiry"),
        ({"type": "message", "text": "x", "expires_at": now_ms() - 1000}, "bad_expiry"),
        ({"type": "message", "text": "x", "expires_at": now_ms() + 401 * 86400_000}, "bad_expiry"),
        ({"type": "message", "text": "x", "expires_in": 5, "expires_at": now_ms() + 9000}, "bad_expiry"),
    ]
    for i, (msg, code) in enumerate(cases):
        if i and i % 8 == 0:
            # The tenth malformed message on one connection closes it (1008).
            await c.close()
            c = await Client.connect(d, "henry")
        msg["id"] = i
        await c.send(msg)
        m = await c.expect_type("error", id=i)
        t.check(f"ws {msg}: error {code}", (m or {}).get("code") == code, m)
    # Invalid UTF-8 inside JSON text is refused by the WebSocket layer (1007),
    # so it is tried over HTTP below.
    j = await user_truth(d, "henry")
    t.check("ws: nothing stored", j.get("availability") == "auto" and j.get("message") is None, j)
    hcases = [
        ("PUT", "/v1/users/henry/availability", {"availability": "offline"}, 400, "bad_availability"),
        ("PUT", "/v1/users/henry/availability", b"{", 400, "bad_json"),
        # one reader's dnd is another's auto; "dnd\u0000" is dnd to cJSON;
        # text after the object is a second document
        ("PUT", "/v1/users/henry/availability", b'{"availability":"dnd","availability":"auto"}', 400, "bad_json"),
        ("PUT", "/v1/users/henry/availability", b'{"availability":"dnd\\u0000"}', 400, "bad_json"),
        ("PUT", "/v1/users/henry/availability", b'{"availability":"dnd"} x', 400, "bad_json"),
        ("PUT", "/v1/users/henry/message", b'{"text":"a\\u0000b"}', 400, "bad_json"),
        ("PUT", "/v1/users/henry/message", b'{"text":"ok","emoji":"x\\u0000"}', 400, "bad_json"),
        ("PUT", "/v1/users/henry/message", {"text": "y" * 200}, 400, "bad_message"),
        ("PUT", "/v1/users/henry/message", b'{"text":"bad \xff utf8"}', 400, None),
        ("PUT", "/v1/users/henry/message", {"text": "y", "expires_at": 5}, 400, "bad_expiry"),
        ("DELETE", "/v1/users/henry/availability", None, 405, "method_not_allowed"),
        ("POST", "/v1/users/henry/message", {"text": "y"}, 405, "method_not_allowed"),
        ("PUT", "/v1/users/bad%01id/availability", {"availability": "dnd"}, 400, "bad_user_id"),
    ]
    for method, path, body, status, code in hcases:
        r = await http(d, method, path, body=body)
        t.check(f"http {method} {path} {body!r:.40}: {status} {code}",
                r.status == status and (code is None or r.error_code == code), r)
    j = await user_truth(d, "henry")
    t.check("http: nothing stored", j.get("availability") == "auto" and j.get("message") is None, j)
    # null is no text, as an absent one (protocol.md 6.3): a message with
    # neither text nor emoji clears.
    await c.send({"type": "message", "text": "hi", "id": "set"})
    t.check("ws: a message set", await c.expect_type("ack", id="set") is not None)
    await c.send({"type": "message", "text": None, "emoji": None, "id": "null"})
    t.check("ws: text null: ack (a clear)", await c.expect_type("ack", id="null") is not None)
    j = await user_truth(d, "henry")
    t.eq("ws: text null cleared the message", j.get("message", 1), None)
    # A device claim with a control character: the token is refused.
    tok = token("ivan", extra={"device": "pho\nne"})
    try:
        bad = await Client.connect(d, "ivan", tok=tok)
        t.check("device claim with a control character: refused", False, bad.welcome)
        await bad.close()
    except Exception as e:
        t.check("device claim with a control character: refused (401)", "401" in str(e), str(e))
    await c.close()


async def idle_open(t, dc, dw, uid, timeout=3.0):
    """A session that opens idle (?status=idle, docs/protocol.md 1): its
    user, offline, becomes idle with no online in between, for a watcher
    (on dw) and in the event log (one user.idle, reason connect, no
    user.online); a second idle session changes nothing a watcher sees; an
    online user opening an idle session emits only its session.connected;
    a status other than online or idle is a 400 bad_status, nothing opened.
    dc: the instance the sessions open on."""
    bad = await RawWS.open(dc, tok=token(uid) + "&status=away")
    r = bad.response()
    bad.close()
    t.check("?status=away: HTTP 400 bad_status with a JSON error",
            r.status == 400 and r.error_code == "bad_status", r)
    w = await Client.connect(dw, uid + "-w", watch="*")
    await w.send({"type": "subscribe", "users": [uid], "id": 1})
    snap = await w.expect_type("presence", timeout, snapshot=True)
    t.eq("idle open: the watcher's snapshot says offline",
         (entry(snap, uid) or {}).get("status"), "offline")
    # The query rides after the token (Client builds ?token=...).
    a = await Client.connect(dc, uid, tok=token(uid) + "&status=idle")
    t.check("idle open: welcomed", (a.welcome or {}).get("type") == "welcome", a.welcome)
    # The welcome says the status the session opened with: a client can
    # tell that the server honoured ?status=idle (an older one ignores it).
    t.eq("idle open: the welcome says status idle", (a.welcome or {}).get("status"), "idle")
    ch = entry(await w.change(uid, timeout), uid) or {}
    t.check("idle open: the watcher's first change is idle (offline -> idle, no online)",
            ch.get("status") == "idle" and ch.get("from") == "offline"
            and ch.get("device_status") == "idle" and ch.get("reason") == "connect", ch)
    t.eq("idle open: nothing more for the watcher", await w.changes(1.0, uid), [])
    j = (await http(dw, "GET", f"/v1/users/{uid}")).json() or {}
    t.check("idle open: the API says idle, one session",
            j.get("status") == "idle" and j.get("sessions") == 1, j)
    b = await Client.connect(dc, uid, tok=token(uid) + "&status=idle")
    t.eq("a second idle session: nothing for the watcher", await w.changes(1.0, uid), [])
    await a.send({"type": "status", "status": "online", "id": "on"})
    await a.expect_type("ack", timeout, id="on")
    ch = entry(await w.change(uid, timeout), uid) or {}
    t.eq("back online: the watcher sees online", ch.get("status"), "online")
    c = await Client.connect(dc, uid, tok=token(uid) + "&status=idle")
    t.eq("an idle session of an online user: nothing for the watcher",
         await w.changes(1.0, uid), [])
    log = [e["data"] for e in await read_log_records(dw)]
    mine = [(e.get("type"), e.get("reason"), e.get("from"), e.get("to")) for e in log
            if isinstance(e, dict) and e.get("user_id") == uid]
    t.eq("the log: each real transition once, the sessions opened idle", mine, [
        ("session.connected", "connect", None, "idle"),
        ("user.idle", "connect", "offline", "idle"),
        ("session.connected", "connect", None, "idle"),
        ("session.status", "explicit", "idle", "online"),
        ("user.online", "explicit", "idle", "online"),
        ("session.connected", "connect", None, "idle")])
    d = await Client.connect(dc, uid, tok=token(uid))
    t.eq("a session opened without ?status: the welcome says status online",
         (d.welcome or {}).get("status"), "online")
    for x in (a, b, c, d, w):
        await x.close()


async def test_idle_open(t, d, args):
    await idle_open(t, d, d, "idle-ann")


async def ctl(d, *argv):
    """presencectl (next to presenced) against d: (exit code, stdout, stderr)."""
    binary = os.path.join(os.path.dirname(os.path.abspath(parse_args().presenced)), "presencectl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCECTL_")}
    env.update(PRESENCECTL_URL=f"http://{HOST}:{d.port}", PRESENCECTL_API_KEY=API_KEY)
    p = await asyncio.create_subprocess_exec(binary, *argv, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(p.communicate(), 15)
    return p.returncode, out.decode(), err.decode()


async def test_presencectl(t, d, args):
    rc, out, err = await ctl(d, "availability", "jack", "dnd")
    t.check("presencectl availability USER dnd: exit 0, says so",
            rc == 0 and "availability dnd" in out, (rc, out, err))
    rc, out, err = await ctl(d, "availability", "jack")
    t.check("presencectl availability USER: the truth", rc == 0
            and "availability dnd, status offline" in out, (rc, out, err))
    rc, out, err = await ctl(d, "availability", "jack", "busy")
    t.check("presencectl availability USER busy: exit 1, bad_availability",
            rc == 1 and "bad_availability" in err, (rc, out, err))
    rc, out, err = await ctl(d, "message", "jack", "Out sick", "--emoji", "🤒", "--clear-after", "3600")
    t.check("presencectl message USER TEXT --emoji --clear-after: set, with its expiry",
            rc == 0 and "🤒 Out sick" in out and "clears at" in out, (rc, out, err))
    rc, out, err = await ctl(d, "--json", "message", "jack")
    j = json.loads(out or "{}") if rc == 0 else {}
    t.check("presencectl --json message USER: the user's message",
            (j.get("message") or {}).get("text") == "Out sick", (rc, out, err))
    rc, out, err = await ctl(d, "message", "jack", "--clear")
    t.check("presencectl message USER --clear", rc == 0 and "no status message" in out, (rc, out, err))
    rc, out, err = await ctl(d, "message", "jack", "x" * 129)
    t.check("presencectl message with 129 characters: exit 1, bad_message",
            rc == 1 and "bad_message" in err, (rc, out, err))


async def test_configured_limit(t, d, args):
    c = await Client.connect(d, "kate")
    await c.send({"type": "message", "text": "é" * 10, "id": 1})
    t.check("--message-max-chars 10: ten characters (20 bytes) are accepted",
            await c.expect_type("ack", id=1) is not None)
    await c.send({"type": "message", "text": "x" * 11, "id": 2})
    m = await c.expect_type("error", id=2)
    t.check("--message-max-chars 10: eleven are bad_message", (m or {}).get("code") == "bad_message", m)
    await c.close()


if __name__ == "__main__":
    run([
        ("user-status", {"--offline-grace-ms": "0"},
         [test_watcher_sees_masked_changes_once, test_device_map_follows_availability,
          test_message_and_expiry,
          test_backend_sets_for_any_user, test_bad_input, test_presencectl,
          test_idle_open]),
        ("user-status-limit", {"--offline-grace-ms": "0", "--message-max-chars": "10"},
         [test_configured_limit]),
        ("user-status-grace", {"--offline-grace-ms": "1500"},
         [test_times_stay_veiled, test_member_since_veiled]),
    ])
