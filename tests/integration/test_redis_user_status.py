#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Status that people set on three presenced sharing one real Redis
(docs/protocol.md section 6): availability and the status message set
through one instance are seen, masked, by a watcher on another and, unmasked,
by the API of the third; the instance that set a message with an expiry is
killed (SIGKILL) before it: the live ones clear it once, one user.message
(reason expired) in the log and one change for the watcher."""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403
from test_redis_cluster import read_log, run_scenarios, user, wait_for  # noqa: E402
from test_user_status import device_map_follows, idle_open, member_since_veiled, times_stay_veiled  # noqa: E402


def entry(msg, uid):
    for u in (msg or {}).get("users", []):
        if u.get("user_id") == uid:
            return u
    return None


async def test_settings_across_instances(t, cl):
    A, B, C = cl.d
    ann = await Client.connect(A, "rs-ann")
    watcher = await Client.connect(C, "rs-watch", watch="*")
    await watcher.send({"type": "subscribe", "users": ["rs-ann"], "id": 1})
    snap = await watcher.expect_type("presence", snapshot=True)
    v0 = (entry(snap, "rs-ann") or {}).get("version", 0)
    versions = []

    await ann.send({"type": "availability", "availability": "dnd", "id": "a"})
    t.check("dnd set through A: ack", await ann.expect_type("ack", id="a") is not None)
    ch = entry(await watcher.change("rs-ann", timeout=5), "rs-ann") or {}
    t.check("watcher on C: one change, online + dnd",
            ch.get("status") == "online" and ch.get("availability") == "dnd", ch)
    versions.append(ch.get("version"))
    j = await user(B, "rs-ann")
    t.check("API of B: the truth, online + dnd", j.get("status") == "online"
            and j.get("availability") == "dnd", j)
    await ann.send({"type": "status", "status": "idle", "id": "s"})
    await ann.expect_type("ack", id="s")
    t.eq("watcher on C: idle under dnd sends nothing", await watcher.changes(1.0, "rs-ann"), [])
    j = await user(B, "rs-ann")
    t.eq("API of B: idle (the truth)", j.get("status"), "idle")

    await ann.send({"type": "message", "text": "Back soon", "expires_in": 3, "id": "m"})
    t.check("message through A: ack", await ann.expect_type("ack", id="m") is not None)
    ch = entry(await watcher.change("rs-ann", timeout=5), "rs-ann") or {}
    t.check("watcher on C: the message", ch.get("change") == "message"
            and (ch.get("message") or {}).get("text") == "Back soon", ch)
    versions.append(ch.get("version"))
    # A dies before the expiry, without a word. Its session is reaped
    # (rs-ann goes offline, reason instance_lost) and, separately, the
    # message expires: cleared by B or C, once.
    A.kill()
    got = []
    for _ in range(20):
        got += [entry(m, "rs-ann") for m in await watcher.changes(0.5, "rs-ann")]
        if any(g and g.get("reason") == "expired" for g in got):
            break
    got += [entry(m, "rs-ann") for m in await watcher.changes(2.0, "rs-ann")]
    msgs = [g for g in got if g and g.get("change") == "message"]
    t.check("after A's death the message expires anyway: one change, reason expired",
            len(msgs) == 1 and msgs[0].get("message") is None
            and msgs[0].get("reason") == "expired", got)
    versions += [g.get("version") for g in sorted(
        (g for g in got if g), key=lambda g: g.get("seq", 0))]
    t.eq("watcher: the shown version moved by one with each change it was sent "
         "(the hidden idle moved none), across instances",
         versions, list(range(v0 + 1, v0 + 1 + len(versions))))
    j = await user(B, "rs-ann")
    t.check("API of B: message gone, dnd kept", j.get("message") is None
            and j.get("availability") == "dnd", j)
    evs = [e for e in await read_log(B) if isinstance(e, dict)
           and e.get("type") == "user.message" and e.get("user_id") == "rs-ann"]
    t.eq("the log: user.message set, then expired once",
         [e.get("reason") for e in evs], ["explicit", "expired"])
    await watcher.close()
    try:
        await ann.close()
    except Exception:
        pass


async def test_device_map_across_instances(t, cl):
    # The user's web session on A, its mobile on B, the watcher on C: the
    # devices an availability change carries come from the store, not from
    # what one instance holds.
    A, B, C = cl.d
    web = await Client.connect(A, "rs-dm")
    mobile = await Client.connect(B, "rs-dm", tok=token("rs-dm", extra={"device": "mobile"}))
    watcher = await Client.connect(C, "rs-dm-watch", watch="*")
    await device_map_follows(t, web, mobile, watcher, "rs-dm", timeout=5)
    for c in (web, mobile, watcher):
        await c.close()


async def test_invisible_across_instances(t, cl):
    """An invisible user's sessions on A and B, a watcher and a fellow
    channel member on C: a second session (another device), idle, a data
    change, a reconnect inside the offline grace, B's death (its session
    reaped) and a reconnect after it show C nothing at all; a new snapshot
    on C shows an absent user; the API shows the truth; visible again, C
    gets one online change and one join. (The privacy probe of 2026-12-07:
    every step already held; kept so that none regresses.)"""
    A, B, C = cl.d
    grants = {"channels": "*"}
    w = await Client.connect(C, "ri-w", tok=token("ri-w", watch="*", extra=grants))
    await w.send({"type": "subscribe", "users": ["ri-ann"], "id": 1})
    await w.expect_type("presence", 5, snapshot=True)
    await w.send({"type": "join", "channel": "ri-room", "id": "j"})
    await w.expect_type("channel", 5, id="j")
    ann = await Client.connect(A, "ri-ann", tok=token("ri-ann", extra=grants))
    await w.change("ri-ann", timeout=5)  # online, while still visible
    await ann.send({"type": "availability", "availability": "invisible", "id": "a"})
    await ann.expect_type("ack", 5, id="a")
    ch = entry(await w.change("ri-ann", timeout=5), "ri-ann") or {}
    t.check("going invisible on A: the watcher on C sees offline", ch.get("status") == "offline"
            and ch.get("availability") == "auto", ch)
    t_inv = ch.get("since")
    await ann.send({"type": "join", "channel": "ri-room", "data": {"n": 1}, "id": "j"})
    await ann.expect_type("channel", 5, id="j")
    ann2 = await Client.connect(B, "ri-ann", tok=token("ri-ann", extra={**grants, "device": "mobile"}))
    await ann2.send({"type": "join", "channel": "ri-room", "data": {"n": 2}, "id": "j"})
    await ann2.expect_type("channel", 5, id="j")
    await ann2.send({"type": "status", "status": "idle", "id": "s"})
    await ann2.expect_type("ack", 5, id="s")
    await ann.close()  # the offline grace (1.5 s) starts for A's session only
    await asyncio.sleep(0.3)
    ann = await Client.connect(A, "ri-ann", tok=token("ri-ann", extra=grants))
    await ann.send({"type": "join", "channel": "ri-room", "data": {"n": 3}, "id": "j"})
    await ann.expect_type("channel", 5, id="j")
    B.kill()  # ann2 is reaped by A or C: instance_lost
    async def one_session():
        return (await user(C, "ri-ann")).get("sessions") == 1
    t.check("B's session of hers is reaped", await wait_for(one_session, 15) is not None)
    await ann.close()
    await asyncio.sleep(0.3)
    ann = await Client.connect(A, "ri-ann", tok=token("ri-ann", extra=grants))
    await ann.send({"type": "join", "channel": "ri-room", "data": {"n": 4}, "id": "j"})
    await ann.expect_type("channel", 5, id="j")
    def about_ann(m):
        return entry(m, "ri-ann") is not None or (m.get("member") or {}).get("user_id") == "ri-ann"
    seen = [m for m in await w.collect(2.5) if about_ann(m)]
    t.eq("C is sent nothing about the invisible user through all of it", seen, [])
    await w.send({"type": "subscribe", "users": ["ri-ann"], "id": 2})
    u = entry(await w.expect_type("presence", 5, id=2), "ri-ann") or {}
    t.check("a new snapshot on C: offline, no devices, times stopped when she went invisible",
            u.get("status") == "offline" and u.get("devices") == {}
            and u.get("last_seen") == t_inv == u.get("since") and u.get("last_active", 0) <= t_inv, (u, t_inv))
    await w.send({"type": "observe", "channel": "ri-room", "id": "o"})
    snap = await w.expect_type("channel", 5, id="o") or {}
    t.eq("the channel on C: she is not listed or counted",
         ([m.get("user_id") for m in snap.get("members", [])], snap.get("count")), (["ri-w"], 1))
    j = await user(C, "ri-ann")
    t.check("the API of C: the truth, online and invisible, one session",
            j.get("status") == "online" and j.get("availability") == "invisible" and j.get("sessions") == 1, j)
    await ann.send({"type": "availability", "availability": "auto", "id": "b"})
    await ann.expect_type("ack", 5, id="b")
    got = [m for m in await w.collect(1.5) if about_ann(m)]
    t.eq("visible again: C gets one online change and one join",
         sorted((m["type"], (entry(m, "ri-ann") or {}).get("status") if m["type"] == "presence"
                 else (m.get("event"), m.get("member", {}).get("data"))) for m in got),
         [("channel", ("join", {"n": 4})), ("presence", "online")])
    for c in (ann, w):
        await c.close()


async def test_veil_across_instances(t, cl):
    # Her sessions on A, the backend on B, the watcher on C: the veil is
    # the store's, so every instance masks by it.
    A, B, C = cl.d
    await times_stay_veiled(t, A, B, C, "rv-ann", timeout=5)


async def test_member_since_across_instances(t, cl):
    # Her session on A, the other members on C: the veil's end comes with
    # the member listing from the store (member_reply), and C's frames and
    # snapshots show no since from before she came back.
    A, B, C = cl.d
    await member_since_veiled(t, A, C, "rm-ann", timeout=5)


async def test_idle_open_across_instances(t, cl):
    # Her sessions open idle on A (the script's connect with the status),
    # the watcher and the log read on C.
    A, B, C = cl.d
    await idle_open(t, A, C, "ri-idle", timeout=5)


SCENARIOS = [("settings", test_settings_across_instances, {}),
             ("device-map", test_device_map_across_instances, {}),
             ("invisible", test_invisible_across_instances, {"extra": {"--offline-grace-ms": "1500"}}),
             ("veil", test_veil_across_instances, {"extra": {"--offline-grace-ms": "1500"}}),
             ("member-since", test_member_since_across_instances, {}),
             ("idle-open", test_idle_open_across_instances, {})]

if __name__ == "__main__":
    sys.exit(run_scenarios(SCENARIOS, 90))
