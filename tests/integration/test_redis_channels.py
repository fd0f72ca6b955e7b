#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""
Channels on three presenced instances sharing one Redis (issue 13).

  kill9:    kill -9 of an instance: each of its members leaves exactly once,
            reason instance_lost (a member with a session on another
            instance stays); observers elsewhere see it; the API agrees.
  sigstop:  SIGSTOP past the lease, then SIGCONT: the stopped instance's
            member leaves once (instance_lost), and comes back once
            (reason resync) when the instance re-asserts.
  restart:  Redis restarted empty: every membership is re-asserted, with its
            data, and changes go on.
  restart-hidden: the same with invisible members: re-asserted, they are
            still not shown (no frame about them to the other members or
            to a watcher, not in a new snapshot) and, once the store has
            them again, not counted in the shown count; again with
            --redis-shards 4.
  masked:   a member with a session on one instance, members looking at it
            on another: what they are shown is masked by its availability
            (dnd, away, invisible) exactly as on the embedded store
            (test_channels.masked_members).
  hidden:   an invisible member is not counted by the others: snapshots and
            changes on every instance carry the shown count, going invisible
            and back is one leave-/join-like frame (test_channels.hidden_counts);
            again with --redis-shards 4 (counts summed over the shards).
  page:     a snapshot's page full of shown members though invisible ones
            come first (test_channels.test_page_of_shown_members), one shard
            and 4.
  members:  the pages after a snapshot over the WebSocket ({"type":"members"},
            test_channels.test_members_pages), one shard and 4.
  hidden-run-reads: a members request past 60 invisible members under
            --channel-page 1 reads Redis 14 times, not once a member.
  regrant:  a token refresh that no longer grants a channel takes the
            session out of it (test_token_refresh.test_refresh_narrows_channels):
            the session on A, the other member and the API on B.
  update-lost: an update answered store_unavailable (Redis down) is not
            made when Redis comes back: the re-assert brings the member
            back with the data it had, and no other member sees the new.
  rejoin-lost: a join of a channel the session is in already, with new
            data, answered store_unavailable (Redis down): the same as
            update-lost, the member comes back with the data it had.
  observe-lost: an observe answered store_unavailable (its snapshot could
            not be read) does not observe: once Redis is back, the
            channel's changes do not reach that connection.
  activity-store-down: an update answered store_unavailable (Redis down)
            by a session idle by inactivity is activity: online once Redis
            is back, where a session that sent only a ping stays idle.
  fifty:    50 WebSocket sessions of one user over the three instances join
            one channel in random order, then leave in random order: one
            channel.join and one channel.leave in the cluster's log.

Run: /usr/bin/python3 tests/integration/test_redis_channels.py --presenced PATH
"""

import asyncio
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Client, http, token  # noqa: E402
from test_channels import (hidden_counts, masked_members, test_members_pages,  # noqa: E402
                           test_page_of_shown_members)
from test_token_refresh import test_refresh_narrows_channels  # noqa: E402
from test_redis_cluster import (LEASE_MS, read_log, run_scenarios,  # noqa: E402
                                wait_for)


def tok(user):
    return token(user, extra={"channels": "*"})


async def connect_join(d, user, ch, data=None):
    c = await Client.connect(d, user, tok=tok(user))
    msg = {"type": "join", "channel": ch, "id": "j"}
    if data is not None:
        msg["data"] = data
    await c.send(msg)
    snap = await c.expect_type("channel", 5, id="j")
    return c, snap


async def members(d, ch):
    r = await http(d, "GET", f"/v1/channels/{ch}/members?limit=1000")
    if r.status != 200:
        return None
    return {m["user_id"]: m for m in r.json().get("members", [])}


def channel_events(log, ch, user=None):
    return [e for e in log if e.get("type", "").startswith("channel.") and e.get("channel") == ch
            and (user is None or e.get("user_id") == user)]


async def test_kill9(t, cl):
    A, B, C = cl.d
    a, _ = await connect_join(A, "k9-a", "room", {"n": "a"})
    m1, _ = await connect_join(A, "k9-multi", "room")
    m2, _ = await connect_join(B, "k9-multi", "room")
    c, _ = await connect_join(C, "k9-c", "room")
    obs = await Client.connect(C, "k9-obs", tok=tok("k9-obs"))
    await obs.send({"type": "observe", "channel": "room", "id": "o"})
    snap = await obs.expect_type("channel", 5, id="o")
    t.eq("kill9: the observer's snapshot on C lists members of A, B and C",
         sorted(m["user_id"] for m in (snap or {}).get("members", [])), ["k9-a", "k9-c", "k9-multi"])
    A.kill()
    t0 = time.monotonic()

    async def a_gone():
        ms = await members(B, "room")
        return ms is not None and "k9-a" not in ms
    took = await wait_for(a_gone, (LEASE_MS + 4000) / 1000)
    t.check("kill9: the dead instance's member leaves within lease + 4 s", took is not None, f"{took}")
    t.note(f"kill -9 -> member gone after {1000 * (time.monotonic() - t0):.0f} ms")
    m, _ = await obs.expect(lambda x: x.get("type") == "channel" and x.get("event") == "leave"
                            and x["member"]["user_id"] == "k9-a", 3)
    t.check("kill9: the observer on C sees the leave, reason instance_lost",
            m is not None and m.get("reason") == "instance_lost", m)
    await asyncio.sleep(0.5)
    log = await read_log(B)
    ev = channel_events(log, "room", "k9-a")
    t.eq("kill9: k9-a in the log: one join, one leave (instance_lost)",
         [(e["type"], e["reason"]) for e in ev],
         [("channel.join", "explicit"), ("channel.leave", "instance_lost")])
    ev = channel_events(log, "room", "k9-multi")
    t.eq("kill9: a member with a session on B stays (one join, no leave)",
         [e["type"] for e in ev if e["type"] != "channel.update"], ["channel.join"])
    ms = await members(C, "room")
    t.eq("kill9: the API on C lists the survivors", sorted(ms or {}), ["k9-c", "k9-multi"])
    t.eq("kill9: k9-multi keeps one session in the channel", len((ms or {}).get("k9-multi", {}).get("sessions", [])), 1)
    for x in (m2, c, obs):
        await x.close()
    del a, m1


async def test_sigstop(t, cl):
    A, B, C = cl.d
    a, _ = await connect_join(A, "st-a", "room", {"n": 1})
    b, _ = await connect_join(B, "st-b", "room")
    os.kill(A.pid, signal.SIGSTOP)

    async def a_out():
        ms = await members(B, "room")
        return ms is not None and "st-a" not in ms
    gone = await wait_for(a_out, (LEASE_MS + 4000) / 1000)
    t.check("sigstop: A stopped past its lease: its member leaves", gone is not None, f"{gone}")
    await asyncio.sleep(0.3)
    os.kill(A.pid, signal.SIGCONT)

    async def a_back():
        ms = await members(B, "room")
        return ms is not None and "st-a" in ms
    back = await wait_for(a_back, 6)
    t.check("sigstop: after SIGCONT A re-asserts the membership", back is not None, f"{back}")
    ms = await members(C, "room")
    t.eq("sigstop: with its data", (ms or {}).get("st-a", {}).get("data"), {"n": 1})
    await asyncio.sleep(0.3)
    log = await read_log(C)
    t.eq("sigstop: st-a in the log: join, leave (instance_lost), join (resync), once each",
         [(e["type"], e["reason"]) for e in channel_events(log, "room", "st-a")],
         [("channel.join", "explicit"), ("channel.leave", "instance_lost"), ("channel.join", "resync")])
    t.eq("sigstop: st-b (on B) untouched", [e["type"] for e in channel_events(log, "room", "st-b")],
         ["channel.join"])
    for x in (a, b):
        await x.close()


async def test_restart(t, cl):
    A, B, C = cl.d
    cs = []
    for i, d in enumerate(cl.d):
        c, _ = await connect_join(d, f"rs-{i}", "room", {"i": i})
        cs.append(c)
    cl.redis.kill()
    await asyncio.sleep(0.3)
    cl.redis.start()

    async def all_back():
        ms = await members(B, "room")
        return ms is not None and sorted(ms) == ["rs-0", "rs-1", "rs-2"]
    took = await wait_for(all_back, 8, 0.05)
    t.check("restart: Redis restarted empty: every membership re-asserted", took is not None, f"{took}")
    t.note(f"Redis restarted empty -> memberships back after {1000 * (took or 0):.0f} ms")
    ms = await members(C, "room") or {}
    t.eq("restart: with their data", [ms.get(f"rs-{i}", {}).get("data") for i in range(3)],
         [{"i": 0}, {"i": 1}, {"i": 2}])
    await cs[0].send({"type": "update", "channel": "room", "data": {"i": 9}, "id": "u"})
    t.check("restart: updates go on", await cs[0].expect_type("ack", 5, id="u") is not None)
    m, _ = await cs[1].expect(lambda x: x.get("type") == "channel" and x.get("event") == "update"
                              and x["member"]["user_id"] == "rs-0" and x["member"]["data"] == {"i": 9}, 5)
    t.check("restart: and reach members on other instances", m is not None)
    for c in cs:
        await c.close()


async def test_restart_hidden(t, cl):
    A, B, C = cl.d
    room = "rh-room"
    ann, _ = await connect_join(A, "rh-ann", room, {"n": "a"})
    cat, _ = await connect_join(C, "rh-cat", room, {"n": "c"})
    # Five invisible members over the three instances: whether a re-assert
    # shows one depends on the order the instances' calls reach Redis, so
    # several make a wrong order show (one alone did in 2 runs of 6).
    inv = [f"rh-inv{k}" for k in range(5)]
    hid = []
    for k, user in enumerate(inv):
        c = await Client.connect(cl.d[(k + 1) % 3], user, tok=tok(user))
        await c.send({"type": "availability", "availability": "invisible", "id": "inv"})
        await c.expect_type("ack", 5, id="inv")
        await c.send({"type": "join", "channel": room, "data": {"n": user}, "id": "j"})
        await c.expect_type("channel", 5, id="j")
        hid.append(c)

    async def listing():
        r = await http(B, "GET", f"/v1/channels?prefix={room}")
        if r.status != 200:
            return None
        return [(x.get("count"), x.get("shown_count"))
                for x in (r.json() or {}).get("channels", [])]
    t.eq("restart-hidden: before: count 7, shown_count 2", await listing(), [(7, 2)])
    # And a watcher of the invisible users (not in the channel): shown
    # offline before, and nothing else after the re-assert.
    w = await Client.connect(A, "rh-w", watch=inv)
    await w.send({"type": "subscribe", "users": inv, "id": "s"})
    snap = await w.expect_type("presence", 5, snapshot=True)
    t.eq("restart-hidden: a watcher's snapshot: the invisible users offline",
         sorted((u["user_id"], u["status"]) for u in (snap or {}).get("users", [])),
         [(u, "offline") for u in inv])
    await ann.collect(0.3)
    cl.redis.kill()
    await asyncio.sleep(0.3)
    cl.redis.start()

    async def settled():
        return await listing() == [(7, 2)]
    took = await wait_for(settled, 10, 0.05)
    t.check("restart-hidden: after the re-assert: count 7, shown_count 2 again",
            took is not None, f"{await listing()}")
    t.note(f"restart-hidden: listing back to (7, 2) after {1000 * (took or 0):.0f} ms")
    about_hidden = [m for m in await ann.collect(1.0)
                    if m.get("type") == "channel" and m.get("channel") == room
                    and (m.get("member") or {}).get("user_id", "").startswith("rh-inv")]
    t.eq("restart-hidden: no frame about the invisible members to the others", about_hidden, [])
    shown = [(u["user_id"], u["status"]) for m in await w.collect(0.3)
             if m.get("type") == "presence" for u in m.get("users", [])
             if u.get("status") != "offline"]
    t.eq("restart-hidden: the watcher is not shown an invisible user online", shown, [])
    dan, snap = await connect_join(C, "rh-dan", room, {"n": "d"})
    t.eq("restart-hidden: a new member's snapshot: no invisible member listed, count 3 with dan",
         (sorted(x["user_id"] for x in (snap or {}).get("members", [])), (snap or {}).get("count")),
         (["rh-ann", "rh-cat", "rh-dan"], 3))
    for c in [ann, cat, dan, w] + hid:
        await c.close()


async def answer(c, rid, timeout):
    """The ack or error answering request rid."""
    m, _ = await c.expect(lambda x: x.get("type") in ("ack", "error") and x.get("id") == rid,
                          timeout)
    return m


async def test_update_lost(t, cl):
    A, B, _ = cl.d
    a, _ = await connect_join(A, "ul-a", "room", {"v": 1})
    b, _ = await connect_join(B, "ul-b", "room")
    cl.redis.kill()
    await asyncio.sleep(0.5)
    await a.send({"type": "update", "channel": "room", "data": {"v": 2}, "id": "u"})
    m = await answer(a, "u", 5)
    t.eq("update-lost: an update while Redis is down is answered store_unavailable",
         (m or {}).get("code"), "store_unavailable")
    await b.collect(0.2)
    cl.redis.start()

    async def back():
        ms = await members(B, "room")
        return ms is not None and sorted(ms) == ["ul-a", "ul-b"]
    took = await wait_for(back, 8, 0.05)
    t.check("update-lost: Redis restarted empty: the memberships are re-asserted",
            took is not None, f"{took}")
    await asyncio.sleep(0.5)
    ms = await members(B, "room") or {}
    t.eq("update-lost: the member comes back with the data it had, not the refused update's",
         ms.get("ul-a", {}).get("data"), {"v": 1})
    seen = [x for x in await b.collect(1.0) if x.get("type") == "channel"
            and (x.get("member") or {}).get("data") == {"v": 2}]
    t.eq("update-lost: the other member is never shown the refused update's data", seen, [])
    await a.send({"type": "update", "channel": "room", "data": {"v": 3}, "id": "u2"})
    t.eq("update-lost: an update once Redis is back is acked", (await answer(a, "u2", 5) or {}).get("type"), "ack")
    m, _ = await b.expect(lambda x: x.get("type") == "channel" and x.get("event") == "update"
                          and x["member"]["user_id"] == "ul-a" and x["member"]["data"] == {"v": 3}, 5)
    t.check("update-lost: and reaches the other member", m is not None)
    for x in (a, b):
        await x.close()


async def test_rejoin_lost(t, cl):
    A, B, _ = cl.d
    a, _ = await connect_join(A, "rl-a", "room", {"v": 1})
    b, _ = await connect_join(B, "rl-b", "room")
    cl.redis.kill()
    await asyncio.sleep(0.5)
    # A join of a channel the session is in already, with new data (what a
    # client does to change its data, or on a reconnect of its own).
    await a.send({"type": "join", "channel": "room", "data": {"v": 2}, "id": "j2"})
    m, _ = await a.expect(lambda x: x.get("id") == "j2", 5)
    t.eq("rejoin-lost: a re-join while Redis is down is answered store_unavailable",
         ((m or {}).get("type"), (m or {}).get("code")), ("error", "store_unavailable"))
    await b.collect(0.2)
    cl.redis.start()

    async def back():
        ms = await members(B, "room")
        return ms is not None and sorted(ms) == ["rl-a", "rl-b"]
    took = await wait_for(back, 8, 0.05)
    t.check("rejoin-lost: Redis restarted empty: the memberships are re-asserted",
            took is not None, f"{took}")
    await asyncio.sleep(0.5)
    ms = await members(B, "room") or {}
    t.eq("rejoin-lost: the member comes back with the data it had, not the refused re-join's",
         ms.get("rl-a", {}).get("data"), {"v": 1})
    seen = [x for x in await b.collect(1.0) if x.get("type") == "channel"
            and (x.get("member") or {}).get("data") == {"v": 2}]
    t.eq("rejoin-lost: the other member is never shown the refused re-join's data", seen, [])
    await a.send({"type": "update", "channel": "room", "data": {"v": 3}, "id": "u"})
    t.eq("rejoin-lost: the session is still a member: an update is acked",
         (await answer(a, "u", 5) or {}).get("type"), "ack")
    for x in (a, b):
        await x.close()


async def test_observe_lost(t, cl):
    A, B, _ = cl.d
    b, _ = await connect_join(B, "ol-b", "room", {"v": 1})
    obs = await Client.connect(A, "ol-obs", tok=tok("ol-obs"))
    cl.redis.kill()
    await asyncio.sleep(0.5)
    await obs.send({"type": "observe", "channel": "room", "id": "o"})
    m = await obs.expect(lambda x: x.get("id") == "o", 5)
    m = m[0]
    t.eq("observe-lost: an observe while Redis is down is answered store_unavailable",
         ((m or {}).get("type"), (m or {}).get("code")), ("error", "store_unavailable"))
    cl.redis.start()

    async def back():
        ms = await members(A, "room")
        return ms is not None and sorted(ms) == ["ol-b"]
    took = await wait_for(back, 8, 0.05)
    t.check("observe-lost: Redis restarted empty: the member is re-asserted", took is not None, f"{took}")
    await b.send({"type": "update", "channel": "room", "data": {"v": 2}, "id": "u"})
    t.eq("observe-lost: the member's update is acked", (await answer(b, "u", 5) or {}).get("type"), "ack")
    got = [x for x in await obs.collect(1.5) if x.get("type") == "channel"]
    t.eq("observe-lost: the connection whose observe failed gets none of the channel's frames", got, [])
    await obs.send({"type": "observe", "channel": "room", "id": "o2"})
    snap = await obs.expect_type("channel", 5, id="o2")
    t.eq("observe-lost: observing again works: the snapshot lists the member",
         [x["user_id"] for x in (snap or {}).get("members", [])], ["ol-b"])
    await b.send({"type": "update", "channel": "room", "data": {"v": 3}, "id": "u2"})
    m, _ = await obs.expect(lambda x: x.get("type") == "channel" and x.get("event") == "update"
                            and x["member"]["data"] == {"v": 3}, 5)
    t.check("observe-lost: and then gets the channel's changes", m is not None)
    for x in (b, obs):
        await x.close()


async def test_activity_store_down(t, cl):
    """--inactivity-ms 4000. A request the server took that the store then
    fails (store_unavailable: Redis down) is activity all the same: the
    user did act (docs/protocol.md 1.2). A session idle by inactivity that
    sends an update while Redis is down is online once Redis is back (the
    re-assert carries its status); one that sent only a ping stays idle."""
    A, B, _ = cl.d
    a, _ = await connect_join(A, "as-a", "room", {"v": 1})
    ctl, _ = await connect_join(A, "as-ctl", "room")

    async def status(u):
        r = await http(B, "GET", f"/v1/users/{u}")
        return (r.json() or {}).get("status") if r.status == 200 else None

    async def both_idle():
        return await status("as-a") == "idle" and await status("as-ctl") == "idle"
    t.check("activity-store-down: both sessions idle by inactivity",
            await wait_for(both_idle, 8, 0.1) is not None)
    cl.redis.kill()
    await asyncio.sleep(0.5)
    await a.send({"type": "update", "channel": "room", "data": {"v": 2}, "id": "u"})
    t.eq("activity-store-down: an update while Redis is down is answered store_unavailable",
         (await answer(a, "u", 5) or {}).get("code"), "store_unavailable")
    await ctl.send({"type": "ping", "id": "p"})
    await ctl.expect_type("pong", 3, id="p")
    cl.redis.start()

    async def back():
        return await status("as-a") not in (None, "offline") and await status("as-ctl") not in (None, "offline")
    t.check("activity-store-down: Redis back empty: both re-asserted", await wait_for(back, 3, 0.05) is not None)
    t.eq("activity-store-down: the session whose user acted is online, the other still idle",
         (await status("as-a"), await status("as-ctl")), ("online", "idle"))
    for x in (a, ctl):
        await x.close()


async def test_fifty(t, cl):
    rnd = random.Random(1313)
    cs = []
    for k in range(50):
        cs.append(await Client.connect(cl.d[k % 3], "fifty", tok=tok("fifty")))
    order = list(range(50))
    rnd.shuffle(order)
    for k in order:
        await cs[k].send({"type": "join", "channel": "hall", "id": f"j{k}"})
    for k in order:
        await cs[k].expect_type("channel", 5, id=f"j{k}")
    rnd.shuffle(order)
    for k in order:
        await cs[k].send({"type": "leave", "channel": "hall", "id": f"l{k}"})
    for k in order:
        await cs[k].expect_type("ack", 5, id=f"l{k}")
    await asyncio.sleep(0.5)
    log = await read_log(cl.d[1])
    t.eq("fifty: 50 sessions on 3 instances: one channel.join, one channel.leave, nothing else",
         [e["type"] for e in channel_events(log, "hall")], ["channel.join", "channel.leave"])
    for c in cs:
        await c.close()
test_fifty.timeout = 60


async def test_masked(t, cl):
    await masked_members(t, cl.d[0], cl.d[1], "redis")


async def test_hidden(t, cl):
    await hidden_counts(t, cl.d[0], cl.d[1], cl.d[2], "redis")


async def test_page(t, cl):
    await test_page_of_shown_members(t, cl.d[1], None)


async def test_members(t, cl):
    await test_members_pages(t, cl.d[1], None)


def fcalls(r):
    """The script calls Redis has answered (FCALL, FCALL_RO, EVALSHA)."""
    n = 0
    for line in r.cli("INFO", "commandstats").splitlines():
        name, _, rest = line.partition(":")
        if name in ("cmdstat_fcall", "cmdstat_fcall_ro", "cmdstat_evalsha"):
            n += int(rest.split(",")[0].split("=")[1])
    return n


async def test_hidden_run_reads(t, cl):
    """A run of invisible members before the first one shown: a request
    (members, or a snapshot) read on a page (--channel-page) at a time for
    as long as the run went, a million members a million / page reads from
    one message. Past the first nine reads they grow (to 1,000 members):
    60 invisible members under --channel-page 1 take 14 reads, not 61."""
    room = "hrr-room"
    cs = []
    for k in range(60):
        u = f"hrr-{k:02d}"
        c = await Client.connect(cl.d[k % 3], u, tok=tok(u))
        await c.send({"type": "availability", "availability": "invisible", "id": "i"})
        await c.expect_type("ack", 5, id="i")
        await c.send({"type": "join", "channel": room, "id": "j"})
        await c.expect_type("channel", 5, id="j")
        cs.append(c)
    z, _ = await connect_join(cl.d[0], "hrr-zed", room)
    w, _ = await connect_join(cl.d[1], "hrr-w", room)
    await asyncio.sleep(0.3)
    before = fcalls(cl.redis)
    await w.send({"type": "members", "channel": room, "id": "p"})
    p = await w.expect_type("channel", 10, id="p") or {}
    reads = fcalls(cl.redis) - before
    t.eq("past 60 invisible members: the first shown, then more",
         ([m["user_id"] for m in p.get("members", [])], p.get("more")), (["hrr-w"], True))
    t.check("... in at most 20 script calls (one a member: 61), the cluster's own included",
            reads <= 20, reads)
    await w.send({"type": "members", "channel": room, "after": "hrr-w", "id": "q"})
    q = await w.expect_type("channel", 10, id="q") or {}
    t.eq("the next page: the last one", ([m["user_id"] for m in q.get("members", [])], q.get("more")),
         (["hrr-zed"], False))
    for x in cs + [z, w]:
        await x.close()
test_hidden_run_reads.timeout = 90


async def test_regrant(t, cl):
    await test_refresh_narrows_channels(t, cl.d[0], None, cl.d[1])


SCENARIOS = [
    ("masked", test_masked, {"extra": {"--offline-grace-ms": "0"}}),
    ("hidden", test_hidden, {"extra": {"--offline-grace-ms": "0"}}),
    # The same in 4 shards: the users' members in different shards, each
    # frame's count the channel's (summed), a visibility frame's too.
    ("hidden-shards", test_hidden, {"extra": {"--offline-grace-ms": "0", "--redis-shards": "4"}}),
    ("kill9", test_kill9, {"extra": {"--offline-grace-ms": "0"}}),
    ("sigstop", test_sigstop, {"extra": {"--offline-grace-ms": "0"}}),
    ("restart", test_restart, {"extra": {"--offline-grace-ms": "0"}}),
    ("restart-hidden", test_restart_hidden, {"extra": {"--offline-grace-ms": "0"}}),
    ("restart-hidden-shards", test_restart_hidden,
     {"extra": {"--offline-grace-ms": "0", "--redis-shards": "4"}}),
    ("page", test_page, {"extra": {"--offline-grace-ms": "0", "--channel-page": "3"}}),
    ("page-shards", test_page, {"extra": {"--offline-grace-ms": "0", "--channel-page": "3",
                                          "--redis-shards": "4"}}),
    ("members", test_members, {"extra": {"--offline-grace-ms": "0", "--channel-page": "3"}}),
    ("members-shards", test_members, {"extra": {"--offline-grace-ms": "0", "--channel-page": "3",
                                                "--redis-shards": "4"}}),
    ("hidden-run-reads", test_hidden_run_reads,
     {"extra": {"--offline-grace-ms": "0", "--channel-page": "1"}}),
    ("regrant", test_regrant, {"extra": {"--offline-grace-ms": "0"}}),
    ("update-lost", test_update_lost, {"extra": {"--offline-grace-ms": "0"}}),
    ("rejoin-lost", test_rejoin_lost, {"extra": {"--offline-grace-ms": "0"}}),
    ("observe-lost", test_observe_lost, {"extra": {"--offline-grace-ms": "0"}}),
    ("activity-store-down", test_activity_store_down,
     {"extra": {"--offline-grace-ms": "0", "--inactivity-ms": "4000"}}),
    ("fifty", test_fifty, {"extra": {"--offline-grace-ms": "0", "--max-sessions-per-user": "0"}}),
]


if __name__ == "__main__":
    sys.exit(run_scenarios(SCENARIOS, 60))
