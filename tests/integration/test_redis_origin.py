#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A backend origin's name is exclusive across instances on the Redis store
(docs/protocol.md 5.1, docs/internals/backend.md "One origin, one
connection"): two presenced sharing one real redis-server, real backend
WebSocket connections.

  taken_over: the backend holds a session through A and connects again
           through B with the same origin: A's connection gets
           origin_taken_over and is closed with 4009 within a second, B's
           welcome says resumed, and B's sync takes the session over;
  in_flight: A is stopped (SIGSTOP) while the backend reconnects to B and
           re-asserts there; the old connection's frame that A reads once
           it runs again (a join, an update, a status) is not applied: no
           member in the channel, the status unchanged, and the
           connection closed with 4009;
  notice_lost: the same with B's claim taken off the stream before A
           reads it: A's connection stays, and the store refuses its join,
           update, leave and status of the session B adopted;
  taken_over_shards, in_flight_shards: the same in three shards (the
           claim in shard 0, the sessions in their users' shards);
  taken_over_rcluster: the same on a real Redis Cluster;
  removed_away: the backend holds a session in three channels through A
           and loses its connection; two channels' memberships are
           removed meanwhile (DELETE .../members/..., one through B's API,
           one through A's): when it connects again through B, B tells it
           both removals before its welcome (A held them in Redis, not in
           its memory), so the re-assert an SDK sends (sync, then a join of
           each channel it still holds) does not join them again; the
           third stays. A later connection is told nothing twice; the same
           in three shards (the notices with the claim in shard 0);
  answer_lost: the same removal held, then the backend connects through C,
           which reaches Redis through a proxy that holds Redis's answers
           past the store's timeout: C's claim ran in Redis but C never
           heard (the connection is closed, store_unavailable); the next
           connection (through A) is still told (the notices are removed
           only once told), and the one after is not told again;
  holder_killed: A is killed (-9) holding two origins: one reconnected to
           B inside A's lease is resumed there (its session adopted, alive
           after A's reaping); the other, connected to B after A's lease
           ran out, is a fresh origin (resumed false) that B accepts and
           keeps: a dead holder blocks nothing past its lease."""

import os
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403
from backendlib import Backend  # noqa: E402
from test_redis_cluster import run_scenarios, statuses  # noqa: E402
from test_redis_rcluster import RCluster  # noqa: E402


async def wait_status(d, user, want, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if (await statuses(d, [user]))[user] == want:
            return True
        await asyncio.sleep(0.05)
    return False


async def members(d, channel):
    r = await http(d, "GET", f"/v1/channels/{channel}/members")
    return sorted(m.get("user_id") for m in (r.json() or {}).get("members", []))


async def member_data(d, channel, user):
    r = await http(d, "GET", f"/v1/channels/{channel}/members")
    for m in (r.json() or {}).get("members", []):
        if m.get("user_id") == user:
            return m.get("data")
    return None


async def wait_members(d, channel, want, timeout=5.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await members(d, channel) == want:
            return True
        await asyncio.sleep(0.05)
    return False


async def closed_with(b, timeout):
    """The frames b reads until the server closes it, and the close code
    (None when still open after timeout seconds)."""
    frames = []
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            m = await asyncio.wait_for(b.ws.recv(), timeout - (time.monotonic() - t0))
            frames.append(json.loads(m))
    except asyncio.TimeoutError:
        return frames, None
    except Exception:
        pass
    return frames, b.ws.close_code


async def instance_of(d):
    return ((await http(d, "GET", "/healthz", auth=False)).json() or {}).get("instance")


async def session_owner(d, user):
    r = await http(d, "GET", f"/v1/users/{user}/sessions")
    return [x.get("instance") for x in (r.json() or {}).get("sessions", [])]


async def wait_owner(d, user, inst, timeout=5.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await session_owner(d, user) == [inst]:
            return True
        await asyncio.sleep(0.05)
    return False


async def taken_over(t, cl):
    A, B = cl.d[0], cl.d[1]
    a = await Backend.connect(A, "to-app")
    ack = await a.batch([{"op": "open", "session": "to-s1", "user": "to-u"}])
    t.eq("A: the open applied", ack.get("applied"), 1)
    t.check("B sees to-u online", await wait_status(B, "to-u", "online", 5))
    t0 = time.monotonic()
    b = await Backend.connect(B, "to-app")
    t.eq("B's welcome: resumed (A held the origin)", b.welcome.get("resumed"), True)
    frames, code = await closed_with(a, 3.0)
    took = time.monotonic() - t0
    t.eq("A's connection: told origin_taken_over",
         [f.get("code") for f in frames if f.get("type") == "error"], ["origin_taken_over"])
    t.eq("... and closed with 4009", code, 4009)
    t.check("... within a second of B's claim", took < 1.5, f"{took:.2f} s")
    acks = await b.sync([("to-s1", "to-u")])
    t.eq("B's sync takes the session over", (acks[-1].get("applied"), acks[-1].get("errors")), (1, None))
    # Acknowledged once sent: the store has it a moment later.
    t.check("the session is B's", await wait_owner(A, "to-u", await instance_of(B)),
            await session_owner(A, "to-u"))
    ack = await b.batch([{"op": "status", "session": "to-s1", "status": "idle"}])
    t.eq("B's writes apply", ack.get("applied"), 1)
    t.check("... idle", await wait_status(A, "to-u", "idle", 5))
    # Back to A: B's connection is the superseded one now.
    a2 = await Backend.connect(A, "to-app")
    t.eq("back to A: resumed (B held it)", a2.welcome.get("resumed"), True)
    frames, code = await closed_with(b, 3.0)
    t.eq("B's connection closed with 4009", code, 4009)
    acks = await a2.sync([("to-s1", "to-u")])
    t.eq("A's sync: applied", acks[-1].get("applied"), 1)
    t.check("the session is A's again (its stale record checked, adopted back)",
            await wait_owner(B, "to-u", await instance_of(A)), await session_owner(B, "to-u"))
    await a2.send({"type": "bye"})
    t.check("A's bye ends the session", await wait_status(B, "to-u", "offline", 5))
    await a2.close()


async def in_flight(t, cl):
    A, B = cl.d[0], cl.d[1]
    a = await Backend.connect(A, "if-app")
    ack = await a.batch([{"op": "open", "session": "if-s1", "user": "if-u"},
                         {"op": "join", "session": "if-s1", "channel": "if-c1", "data": {"v": 1}}])
    t.eq("A: open and join applied", ack.get("applied"), 2)
    t.check("B sees if-u in if-c1", await wait_members(B, "if-c1", ["if-u"]))
    # A stops (a long GC pause, a stalled VM): its old connection is still
    # open when the backend reconnects through B and re-asserts there.
    A.signal(signal.SIGSTOP)
    try:
        b = await Backend.connect(B, "if-app")
        t.eq("B's welcome: resumed", b.welcome.get("resumed"), True)
        acks = await b.sync([("if-s1", "if-u")])
        t.eq("B's sync adopts the session", acks[-1].get("applied"), 1)
        ack = await b.batch([{"op": "join", "session": "if-s1", "channel": "if-c1", "data": {"v": 1}}])
        t.eq("B re-joins its channel", ack.get("applied"), 1)
        # The frame the old connection had in flight: A reads it when it
        # runs again, beside the news of B's claim.
        await a.send({"type": "batch", "seq": 99, "ops": [
            {"op": "join", "session": "if-s1", "channel": "if-c2"},
            {"op": "update", "session": "if-s1", "channel": "if-c1", "data": {"v": 2}},
            {"op": "status", "session": "if-s1", "status": "idle"}]})
    finally:
        A.signal(signal.SIGCONT)
    frames, code = await closed_with(a, 3.0)
    t.eq("A's old connection closed with 4009", code, 4009)
    await asyncio.sleep(0.5)
    t.eq("its join was not applied: nobody in if-c2 (on B)", await members(B, "if-c2"), [])
    t.eq("... nor on A", await members(A, "if-c2"), [])
    t.eq("its update was not applied: the data is B's", await member_data(B, "if-c1", "if-u"), {"v": 1})
    t.eq("its status was not applied: still online", (await statuses(B, ["if-u"]))["if-u"], "online")
    t.check("the session is B's", await wait_owner(B, "if-u", await instance_of(B)))
    await b.send({"type": "bye"})
    t.check("B's bye ends it", await wait_status(A, "if-u", "offline", 5))
    await b.close()


async def notice_lost(t, cl):
    """The store's own fence, without the notice: A is stopped while B
    claims the name and adopts the session, and B's claim is taken off the
    stream before A can read it (a reader that lags past the stream's
    length loses it the same way). A's old connection stays open and its
    frame is acknowledged, but the store refuses every write of a session
    that B holds: nothing of it is applied."""
    A, B = cl.d[0], cl.d[1]
    a = await Backend.connect(A, "nl-app")
    ack = await a.batch([{"op": "open", "session": "nl-s1", "user": "nl-u"},
                         {"op": "join", "session": "nl-s1", "channel": "nl-c1", "data": {"v": 1}}])
    t.eq("A: open and join applied", ack.get("applied"), 2)
    t.check("B sees nl-u in nl-c1", await wait_members(B, "nl-c1", ["nl-u"]))
    A.signal(signal.SIGSTOP)
    try:
        # A's log reader, blocked in XREAD, would be handed B's claim the
        # moment it is added: its connection goes first (A reconnects it
        # once it runs again, and reads on from the entry it read last).
        for line in cl.redis.cli("CLIENT", "LIST").splitlines():
            if "cmd=xread" in line:
                cl.redis.cli("CLIENT", "KILL", "ID", line.split()[0].split("=")[1])
        b = await Backend.connect(B, "nl-app")
        acks = await b.sync([("nl-s1", "nl-u")])
        t.eq("B's sync adopts the session", acks[-1].get("applied"), 1)
        ack = await b.batch([{"op": "join", "session": "nl-s1", "channel": "nl-c1", "data": {"v": 1}}])
        t.eq("B re-joins its channel", ack.get("applied"), 1)
        t.eq("B's claim is on the stream", cl.redis.cli("XLEN", "presence:kicks").strip(), "1")
        cl.redis.cli("XTRIM", "presence:kicks", "MAXLEN", "0")
        await a.send({"type": "batch", "seq": 99, "ops": [
            {"op": "join", "session": "nl-s1", "channel": "nl-c2"},
            {"op": "update", "session": "nl-s1", "channel": "nl-c1", "data": {"v": 2}},
            {"op": "leave", "session": "nl-s1", "channel": "nl-c1"},
            {"op": "status", "session": "nl-s1", "status": "idle"}]})
    finally:
        A.signal(signal.SIGCONT)
    ack = await a.answer(99)
    t.eq("A, never told: its frame is acknowledged", ack.get("type"), "ack")
    await asyncio.sleep(0.5)
    t.eq("its join was refused by the store: nobody in nl-c2", await members(B, "nl-c2"), [])
    t.eq("its update and leave too: nl-c1 keeps B's member and data",
         (await members(B, "nl-c1"), await member_data(B, "nl-c1", "nl-u")), (["nl-u"], {"v": 1}))
    t.eq("its status too: still online", (await statuses(B, ["nl-u"]))["nl-u"], "online")
    await b.send({"type": "bye"})
    t.check("B's bye ends it", await wait_status(A, "nl-u", "offline", 5))
    await b.close()
    await a.close()


async def holder_killed(t, cl):
    A, B = cl.d[0], cl.d[1]
    a1 = await Backend.connect(A, "hk-one")
    await a1.batch([{"op": "open", "session": "hk-s1", "user": "hk-u1"}])
    a2 = await Backend.connect(A, "hk-two")
    await a2.batch([{"op": "open", "session": "hk-s2", "user": "hk-u2"}])
    t.check("B sees both online", await wait_status(B, "hk-u1", "online", 5)
            and await wait_status(B, "hk-u2", "online", 5))
    A.signal(signal.SIGKILL)
    a1.abort()
    a2.abort()
    b1 = await Backend.connect(B, "hk-one")
    t.eq("inside A's lease: B resumes hk-one", b1.welcome.get("resumed"), True)
    acks = await b1.sync([("hk-s1", "hk-u1")])
    t.eq("... and adopts its session", acks[-1].get("applied"), 1)
    t.check("A's lease runs out: hk-u2 is reaped (offline)",
            await wait_status(B, "hk-u2", "offline", cl.lease_ms / 1000 + 10))
    b2 = await Backend.connect(B, "hk-two")
    t.eq("past A's lease: hk-two is a fresh origin on B", (b2.welcome.get("resumed"), b2.welcome.get("sessions")),
         (False, 0))
    ack = await b2.batch([{"op": "open", "session": "hk-s3", "user": "hk-u2"}])
    t.eq("... that B accepts", ack.get("applied"), 1)
    frames, code = await closed_with(b2, 1.5)
    t.eq("... and keeps (not closed)", code, None)
    t.check("hk-u2 online again through B", await wait_status(B, "hk-u2", "online", 5))
    t.eq("hk-u1, adopted before A's lease ran out, is still online",
         (await statuses(B, ["hk-u1"]))["hk-u1"], "online")
    for b in (b1, b2):
        await b.send({"type": "bye"})
        await b.close()


async def origin_state(d, name):
    r = await http(d, "GET", "/v1/origins")
    for o in (r.json() or {}).get("origins", []):
        if o.get("origin") == name:
            return o.get("state")
    return None


async def channel_count(d, name):
    return ((await http(d, "GET", f"/v1/channels/{name}")).json() or {}).get("count")


async def removed_away(t, cl):
    A, B = cl.d[0], cl.d[1]
    a = await Backend.connect(A, "ra-app")
    ack = await a.batch([{"op": "open", "session": "ra-s1", "user": "ra-u"},
                         {"op": "join", "session": "ra-s1", "channel": "ra-1"},
                         {"op": "join", "session": "ra-s1", "channel": "ra-2"},
                         {"op": "join", "session": "ra-s1", "channel": "ra-3"}])
    t.eq("A: open and three joins applied", (ack.get("applied"), ack.get("errors")), (4, None))
    # What a backend SDK keeps: the session's channels, re-joined after a
    # reconnect unless it was told they went.
    held = {"ra-1", "ra-2", "ra-3"}
    t.check("B sees the three memberships",
            await wait_members(B, "ra-3", ["ra-u"]), await members(B, "ra-3"))
    a.abort()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5 and await origin_state(A, "ra-app") != "detached":
        await asyncio.sleep(0.05)
    t.eq("A: the origin is detached", await origin_state(A, "ra-app"), "detached")
    r = await http(B, "DELETE", "/v1/channels/ra-1/members/ra-u")
    t.eq("removed through B's API: 200", r.status, 200)
    r = await http(A, "DELETE", "/v1/channels/ra-2/members/ra-u")
    t.eq("removed through A's API: 200", r.status, 200)
    # A learns of B's removal from the store's events: give it a moment.
    await asyncio.sleep(0.5)
    b = await Backend.connect(B, "ra-app")
    t.eq("B's welcome: resumed", b.welcome.get("resumed"), True)
    left = sorted((n.get("session"), n.get("channel"), n.get("reason"))
                  for n in b.early if n.get("type") == "left")
    t.eq("B tells both removals before its welcome",
         left, [("ra-s1", "ra-1", "kicked"), ("ra-s1", "ra-2", "kicked")])
    for n in b.early:
        if n.get("type") == "left":
            held.discard(n.get("channel"))
    acks = await b.sync([("ra-s1", "ra-u")])
    t.eq("B's sync: applied", acks[-1].get("applied"), 1)
    ack = await b.batch([{"op": "join", "session": "ra-s1", "channel": c} for c in sorted(held)])
    t.eq("the re-assert re-joins what it still holds", (ack.get("applied"), ack.get("errors")),
         (1, None))
    t.eq("ra-1 stays empty after the re-assert", await channel_count(A, "ra-1"), 0)
    t.eq("ra-2 stays empty after the re-assert", await channel_count(A, "ra-2"), 0)
    t.eq("ra-3 keeps its member", await channel_count(A, "ra-3"), 1)
    # Told once: the next connection (back through A) hears nothing.
    a2 = await Backend.connect(A, "ra-app")
    t.eq("a later connection is told nothing again",
         [n for n in a2.early if n.get("type") == "left"], [])
    await a2.send({"type": "bye"})
    await a2.close()


async def answer_lost(t, cl):
    from test_redis_chaos_channels import SlowProxy
    A = cl.d[0]
    proxy = SlowProxy(cl.redis.sock, delay=0)
    await proxy.start()
    C = Daemon(cl.binary, {**cl.flags, "--store": f"redis://127.0.0.1:{proxy.port}"},
               "presenced-C")
    await asyncio.get_running_loop().run_in_executor(None, C.start)
    cl.d.append(C)  # stopped and checked with the others
    a = await Backend.connect(A, "al-app")
    ack = await a.batch([{"op": "open", "session": "al-s1", "user": "al-u"},
                         {"op": "join", "session": "al-s1", "channel": "al-1"},
                         {"op": "join", "session": "al-s1", "channel": "al-2"}])
    t.eq("A: open and two joins applied", (ack.get("applied"), ack.get("errors")), (3, None))
    a.abort()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5 and await origin_state(A, "al-app") != "detached":
        await asyncio.sleep(0.05)
    r = await http(A, "DELETE", "/v1/channels/al-1/members/al-u")
    t.eq("removed while detached: 200", r.status, 200)
    await asyncio.sleep(0.3)
    # Redis's answers to C now come 3 s late, past its 1 s timeout.
    proxy.delay = 3.0
    c = await Backend.connect(C, "al-app")
    frames, _code = await closed_with(c, 5.0)
    first = [c.welcome] + frames
    t.eq("C: the claim's answer never came (store_unavailable, no welcome)",
         [f.get("code") or f.get("type") for f in first if f.get("type") in ("error", "welcome")][:1],
         ["store_unavailable"])
    proxy.delay = 0
    await asyncio.sleep(4.0)  # the late answers drain
    a2 = await Backend.connect(A, "al-app")
    t.eq("the next connection is still told the removal, before its welcome",
         [(n.get("session"), n.get("channel")) for n in a2.early if n.get("type") == "left"],
         [("al-s1", "al-1")])
    a2.abort()
    await asyncio.sleep(0.3)
    a3 = await Backend.connect(A, "al-app")
    t.eq("told, it is not told again", [n for n in a3.early if n.get("type") == "left"], [])
    await a3.send({"type": "bye"})
    await a3.close()
    proxy.stop()


SCENARIOS = [
    ("taken_over", taken_over, {"n": 2}),
    ("answer_lost", answer_lost, {"n": 1, "lease": 6000}),
    ("removed_away", removed_away, {"n": 2}),
    ("removed_away_shards", removed_away, {"n": 2, "extra": {"--redis-shards": "3"}}),
    ("in_flight", in_flight, {"n": 2, "lease": 4000}),
    ("notice_lost", notice_lost, {"n": 2, "lease": 4000}),
    # In shards the claim and its notice live in shard 0, the sessions in
    # their users' shards.
    ("taken_over_shards", taken_over, {"n": 2, "extra": {"--redis-shards": "3"}}),
    ("in_flight_shards", in_flight, {"n": 2, "lease": 4000, "extra": {"--redis-shards": "3"}}),
    # And on a real Redis Cluster (3 primaries): shard 0's slot holds the
    # claim, its notice reaches every instance's reader of that node.
    ("taken_over_rcluster", taken_over, {"n": 2, "cluster": RCluster}),
    ("holder_killed", holder_killed, {"n": 2, "lease": 2000}),
]


if __name__ == "__main__":
    if not shutil.which("redis-cli"):
        SCENARIOS = [x for x in SCENARIOS if x[2].get("cluster") is not RCluster]
    sys.exit(run_scenarios(SCENARIOS, 60))
