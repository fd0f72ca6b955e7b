#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""
Chaos against channels and status that people set on three presenced
sharing one real Redis, checked from the outside: every channel member
transition (channel.join / update / leave) appears once in the event
stream read from a surviving instance (each event continues its member's
chain: a join only of a non-member, an update or a leave only of a member,
versions one apart), and once it is over, GET /v1/channels/{name}/members
on every live instance lists exactly the users whose live sessions are
joined (a lost member, a ghost or a duplicate trips one of them).

  storm-kill9:   join/update/leave storms on every instance, kill -9 of A in
                 the middle: A's members leave once each, reason
                 instance_lost, no sooner than its lease; a user with a
                 session on B too stays.
  grace-kill9:   the same with a 400 ms channel grace and sessions that
                 drop and come back (reloads) during the storm.
  shards-kill9:  storm-kill9 with the store in 4 shards.
  redis-sigstop: the storm while redis-server is SIGSTOPped for 2.5 leases.
  msg-sigstop:   a message due while redis-server is SIGSTOPped for 2.5
                 leases is cleared once (apart from the storm, whose events
                 can pass the bounded log before it is read).
  msg-stopped:   a message set while redis-server is stopped is answered
                 only once Redis has it (ack, then set and cleared once) or
                 store_unavailable; never acknowledged and then lost.
  slow-partition: A reaches Redis through a proxy that delays every reply,
                 then cuts A off past its lease, then heals, under the storm.
  flushall:      FLUSHALL in the middle of the storm (the stream, kept
                 open, crosses the loss): each live member is re-asserted
                 once (reason resync), none lost, none doubled.
  restart:       the same with redis-server restarted without persistence.
                 Both: availability and a message set through each
                 instance are re-asserted once (resync), not three times.
  snapshot-lost: a join the store made whose member listing then fails is
                 answered as done (ack), not store_unavailable.
  reobserve:     observe, unobserve, observe again before the first
                 observe's answer (A's replies held), the first one's reply
                 lost or late: the session observes (the last request),
                 and an unobserve then stops the frames.
  rejoin-race:   join, leave, join again, the first join's reply lost: the
                 session is a member (the last request), listed everywhere.
  backend:       sessions a backend reports over GET /v1/backend joined to
                 channels, their origin's instance killed: a backend that
                 does not come back loses its members once (instance_lost);
                 one that re-asserts on B keeps them.
  backend-storm: a backend joining and leaving in batches across a kill -9
                 of its instance, re-asserted on B before the lease: no
                 membership lost or left for it.
  resync-join:   joins of WebSocket and backend sessions while A re-asserts
                 5,000 sessions after a FLUSHALL: none answered 'internal',
                 no acknowledged backend join lost.
  msg-kill:      a status message expiring at the very moment its instance
                 is killed: cleared once (user.message reason expired), the
                 user's session reaped once.
  skew:          an instance whose wall clock is 30 s off (an LD_PRELOAD
                 shim built here): a message set through it with
                 expires_in expires after that many seconds of Redis's
                 clock, not 30 s early or late; the storm and a kill -9 on
                 it hold as above.

Run: /usr/bin/python3 tests/integration/test_redis_chaos_channels.py --presenced PATH
"""

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import HOST, Client, Daemon, http, now_ms, token  # noqa: E402
from backendlib import Backend, EventTap  # noqa: E402
from test_redis_cluster import (HB_MS, LEASE_MS, Cluster, read_log,  # noqa: E402
                                run_scenarios, wait_for)

CHANS = ["cx-0", "cx-1", "cx-2"]
SHARDED = False   # set while a scenario runs with --redis-shards
FLAGS = {"--offline-grace-ms": "0", "--channel-joins-per-s": "1000"}


def tok(user, extra=None):
    return token(user, extra={"channels": "*", **(extra or {})})


# --------------------------------------------------------------------------
# The storm: WebSocket sessions joining, updating and leaving at random,
# each keeping what the server answered (joined, not joined, or unknown).


class Sess:
    def __init__(self, d, user, c):
        self.d = d
        self.user = user
        self.c = c
        self.joined = set()
        self.unknown = set()   # no answer, or an answer that leaves it open
        self.dead = False
        self.n = 0
        self.odd = []          # answers the protocol does not allow
        self.anchor = False    # joined before the storm, then still
        self.reconnects = False  # drop the connection now and then, and come back

    async def ask(self, msg, timeout=4.0):
        """The answer to msg (its id), or None (no answer / connection gone)."""
        self.n += 1
        rid = f"r{self.n}"
        msg = dict(msg, id=rid)
        try:
            await self.c.send(msg)
            m, _ = await self.c.expect(lambda x: x.get("id") == rid, timeout)
            return m
        except Exception as e:
            self.dead = True
            self.why = f"{type(e).__name__}: {e}"
            return None

    async def join(self, ch, data):
        m = await self.ask({"type": "join", "channel": ch, "data": data,
                            "snapshot": random.random() < 0.5})
        if m is None:
            self.unknown.add(ch)
        elif m.get("type") in ("channel", "ack"):
            self.joined.add(ch)
            self.unknown.discard(ch)
        elif m.get("type") == "error" and m.get("code") == "store_unavailable":
            # docs/protocol.md 4.5: the join did not happen.
            self.joined.discard(ch)
            self.unknown.discard(ch)
        else:
            self.odd.append(("join", ch, m))
            self.unknown.add(ch)

    async def leave(self, ch):
        m = await self.ask({"type": "leave", "channel": ch})
        if m is None:
            self.unknown.add(ch)
            self.joined.discard(ch)
        elif m.get("type") == "ack" or m.get("code") == "not_joined":
            if m.get("code") == "not_joined" and ch in self.joined:
                self.odd.append(("leave", ch, m))
            self.joined.discard(ch)
            self.unknown.discard(ch)
        else:
            self.joined.discard(ch)
            self.unknown.add(ch)

    async def update(self, ch, data):
        m = await self.ask({"type": "update", "channel": ch, "data": data})
        if m is None:
            self.unknown.add(ch)
            self.joined.discard(ch)
        elif m.get("type") == "error" and m.get("code") == "not_joined":
            self.odd.append(("update", ch, m))
            self.joined.discard(ch)
        elif m.get("type") != "ack":
            self.joined.discard(ch)
            self.unknown.add(ch)

    async def run(self, until, rnd):
        if self.anchor:
            return
        k = 0
        while time.monotonic() < until and not self.dead:
            ch = rnd.choice(CHANS)
            k += 1
            if self.reconnects and rnd.random() < 0.06:
                await self.reconnect(rnd.random() < 0.5)
            elif ch in self.joined and rnd.random() < 0.4:
                await self.update(ch, {"u": self.user, "k": k})
            elif ch in self.joined or ch in self.unknown:
                await self.leave(ch)
            else:
                await self.join(ch, {"u": self.user, "k": k})
            await asyncio.sleep(rnd.random() * 0.03)

    async def reconnect(self, drop):
        """End this session (a dropped TCP connection or a close) and open
        another of the same user on the same instance: its memberships end
        into the channel grace, which a join of the new one may cancel."""
        try:
            if drop:
                self.c.ws.transport.abort()
                await asyncio.wait_for(self.c.ws.wait_closed(), 2)
            else:
                await self.c.close()
        except Exception:
            pass
        self.joined, self.unknown = set(), set()
        try:
            self.c = await Client.connect(self.d, self.user, tok=tok(self.user))
        except Exception:
            self.dead = True

    async def settle(self):
        """Make every open question a definite answer: leave the channels
        whose state is unknown (an ack and not_joined both mean out)."""
        for _ in range(20):
            if self.dead or not self.unknown:
                return
            for ch in sorted(self.unknown):
                await self.leave(ch)
            if self.unknown:
                await asyncio.sleep(0.3)


async def open_sessions(cl, per=3, multi=True, prefix="u"):
    """per users on each instance, and one user with a session on A and B."""
    out = []
    for i, d in enumerate(cl.d):
        for k in range(per):
            user = f"{prefix}{'abc'[i]}{k}"
            out.append(Sess(d, user, await Client.connect(d, user, tok=tok(user))))
    if multi:
        for d in cl.d[:2]:
            out.append(Sess(d, f"{prefix}multi", await Client.connect(d, f"{prefix}multi",
                                                                      tok=tok(f"{prefix}multi"))))
    # An anchor per instance: in every channel from the start, doing
    # nothing. A storm's failed joins and local leaves empty its own
    # sessions' channels during an outage; an anchor's memberships must
    # come through it (or leave once, with their instance).
    for i, d in enumerate(cl.d):
        user = f"{prefix}anchor{'abc'[i]}"
        s = Sess(d, user, await Client.connect(d, user, tok=tok(user)))
        for ch in CHANS:
            await s.join(ch, {"anchor": user})
        s.anchor = True
        out.append(s)
    return out


def expected(sessions):
    """channel -> users with a live session joined to it."""
    want = {ch: set() for ch in CHANS}
    for s in sessions:
        if not s.dead:
            for ch in s.joined:
                want[ch].add(s.user)
    return want


async def members(d, ch):
    r = await http(d, "GET", f"/v1/channels/{ch}/members?limit=1000")
    if r.status != 200:
        return None
    return sorted(m["user_id"] for m in r.json().get("members", []))


async def count(d, ch):
    r = await http(d, "GET", f"/v1/channels/{ch}")
    return r.json().get("count") if r.status == 200 else None


def chain(evs, reset_after=None, unique_seq=True):
    """Replay channel events (in stream order). Returns (members by
    channel, problems, last event per (channel, user)). reset_after: index
    after which the store lost everything (memberships restart empty)."""
    st, problems, last, seqs = {}, [], {}, set()
    for i, e in enumerate(evs):
        if reset_after is not None and i == reset_after:
            st = {}
        s = e.get("seq")
        # (In shards each shard numbers its own events: a member's chain
        # still trips on a duplicate, the seq cannot.)
        if unique_seq and s in seqs:
            problems.append(f"seq {s} twice")
        seqs.add(s)
        typ = e.get("type", "")
        if not typ.startswith("channel."):
            continue
        k = (e["channel"], e["user_id"])
        mem, v = st.get(k, (False, 0))
        what = f"{k} seq {s} {typ} {e.get('reason')} v{e.get('version')}"
        if typ == "channel.join":
            if mem:
                problems.append(f"join of a member: {what}")
            if e.get("from") != "offline" or e.get("version") != 1:
                problems.append(f"join not from offline at version 1: {what}")
            st[k] = (True, e.get("version", 0))
        elif typ == "channel.update":
            if not mem:
                problems.append(f"update of a non-member: {what}")
            elif e.get("version") != v + 1:
                problems.append(f"update version after v{v}: {what}")
            st[k] = (True, e.get("version", 0))
        elif typ == "channel.leave":
            if not mem:
                problems.append(f"leave of a non-member: {what}")
            elif e.get("version") != v + 1:
                problems.append(f"leave version after v{v}: {what}")
            if e.get("to") != "offline":
                problems.append(f"leave not to offline: {what}")
            st[k] = (False, 0)
        last[k] = e
    mem = {ch: set() for ch in CHANS}
    for (ch, u), (m, _v) in st.items():
        if m and ch in mem:
            mem[ch].add(u)
    return mem, problems, last


async def converged(t, label, live, sessions, evs=None, reset_after=None, timeout=8.0):
    """Every live instance lists exactly the expected members (and counts
    them); the stream's replay ends there too."""
    dead = sorted(f"{s.user}@{s.d.name[-1]}" for s in sessions if s.dead)
    if dead:
        t.note(f"{label}: sessions gone: {dead}")
    want = {ch: sorted(v) for ch, v in expected(sessions).items()}

    async def agree():
        for d in live:
            for ch in CHANS:
                if await members(d, ch) != want[ch]:
                    return False
        return True
    took = await wait_for(agree, timeout, 0.1)
    got = {d.name: {ch: await members(d, ch) for ch in CHANS} for d in live}
    t.check(f"{label}: every live instance lists exactly the members with a live joined session",
            took is not None, f"want {want} got {got}")
    cnt = {d.name: [await count(d, ch) for ch in CHANS] for d in live}
    t.check(f"{label}: the channels' counts agree with them",
            all(c == [len(want[ch]) for ch in CHANS] for c in cnt.values()), f"{cnt} want {want}")
    odd = [(s.user, o) for s in sessions for o in s.odd]
    t.eq(f"{label}: no update/leave of a joined channel answered not_joined", odd, [])
    if evs is not None:
        mem, problems, last = chain(evs, reset_after, unique_seq=not SHARDED)
        t.eq(f"{label}: each member transition once in the stream (a valid chain per member)",
             problems[:8], [])
        t.eq(f"{label}: the stream's replay ends with the same members",
             {ch: sorted(v) for ch, v in mem.items()}, want)
        anchors = sorted({s.user for s in sessions if s.anchor and not s.dead})
        if reset_after is not None:
            again = sorted((e["channel"], e["user_id"]) for e in evs[reset_after:]
                           if e["user_id"] in anchors and e["type"] == "channel.join")
            t.eq(f"{label}: after the loss each anchor membership is re-asserted once, reason resync",
                 again, sorted((ch, u) for ch in CHANS for u in anchors))
            t.eq(f"{label}: ... and those joins say resync",
                 sorted({e.get("reason") for e in evs[reset_after:]
                         if e["user_id"] in anchors and e["type"] == "channel.join"}), ["resync"])
        return last
    return None


def chan_events(evs):
    return [e for e in evs if isinstance(e, dict) and str(e.get("type", "")).startswith("channel.")
            and e.get("channel") in CHANS]


async def storm(sessions, seconds, seed):
    until = time.monotonic() + seconds
    await asyncio.gather(*(s.run(until, random.Random(seed * 1000 + i))
                           for i, s in enumerate(sessions)))


async def settle(sessions):
    await asyncio.gather(*(s.settle() for s in sessions))


async def close_all(sessions):
    # Dropped, not closed: a close handshake with a killed instance waits
    # out its timeout, and how the sessions end is no longer looked at.
    async def drop(c):
        try:
            c.ws.transport.abort()
            await asyncio.wait_for(c.ws.wait_closed(), 2)
        except Exception:
            pass
    await asyncio.gather(*(drop(s.c) for s in sessions))


# --------------------------------------------------------------------------


async def test_storm_kill9(t, cl, skewed=False):
    A, B, C = cl.d
    label = "skew-kill9" if skewed else "storm-kill9"
    ss = await open_sessions(cl)
    task = asyncio.ensure_future(storm(ss, 3.5, 7))
    await asyncio.sleep(1.5)
    on_a = {s.user: set(s.joined) | set(s.unknown) for s in ss if s.d is A}
    kill_ms = now_ms()
    A.kill()
    await task
    await settle([s for s in ss if s.d is not A])
    for s in ss:
        if s.d is A:
            s.dead = True
    # A's members are gone only after its lease.
    last = await converged(t, label, [B, C], ss, timeout=LEASE_MS / 1000 + 6)
    await asyncio.sleep(0.5)
    evs = chan_events(await read_log(C))
    last = await converged(t, label + " (log)", [B, C], ss, evs)
    a_only = [u for u in on_a if u.startswith("ua") or u == "uanchora"]
    bad = []
    for u in a_only:
        for ch in CHANS:
            e = (last or {}).get((ch, u))
            # Left before the kill (or a leave A sent just before it,
            # which Redis may run a moment after the process is gone).
            if e is None or e["type"] == "channel.leave" and e["ts"] < kill_ms + 200 \
                    and e.get("reason") != "instance_lost":
                continue
            if e["type"] != "channel.leave" or e.get("reason") != "instance_lost":
                bad.append((ch, u, e["type"], e.get("reason")))
            elif e["ts"] < kill_ms + LEASE_MS - HB_MS - 150:
                bad.append((ch, u, "left before the lease ran out", e["ts"] - kill_ms))
    t.eq(f"{label}: A's members still in at the kill leave once, reason instance_lost, after its lease",
         bad, [])
    nlost = sum(1 for (ch, u), e in (last or {}).items() if u.startswith("ua")
                and e["type"] == "channel.leave" and e.get("reason") == "instance_lost")
    t.note(f"{label}: {nlost} memberships of A's users reaped; "
           f"{len(evs)} channel events in all")
    await close_all(ss)
test_storm_kill9.timeout = 60


async def test_grace_kill9(t, cl):
    """The storm with a channel grace of 400 ms and sessions that drop and
    come back (a reload): A killed meanwhile. A member whose session
    ended leaves once, after its grace, whichever instance fires it, A's
    too; a reload inside the grace is no leave."""
    A, B, C = cl.d
    ss = await open_sessions(cl, prefix="g")
    for s in ss:
        s.reconnects = not s.anchor
    task = asyncio.ensure_future(storm(ss, 4.0, 5))
    await asyncio.sleep(1.5)
    A.kill()
    await task
    for s in ss:
        if s.d is A:
            s.dead = True
    await settle([s for s in ss if s.d is not A])
    await converged(t, "grace-kill9", [B, C], ss, timeout=LEASE_MS / 1000 + 6)
    await asyncio.sleep(0.8)
    evs = chan_events(await read_log(C))
    await converged(t, "grace-kill9 (log)", [B, C], ss, evs)
    t.note(f"grace-kill9: {len(evs)} channel events, reasons "
           f"{sorted(set(e.get('reason') for e in evs))}")
    await close_all(ss)
test_grace_kill9.timeout = 60


async def test_redis_sigstop(t, cl):
    A, B, C = cl.d
    ss = await open_sessions(cl)
    task = asyncio.ensure_future(storm(ss, 5.0, 11))
    await asyncio.sleep(1.0)
    os.kill(cl.redis.proc.pid, signal.SIGSTOP)
    await asyncio.sleep(2.5 * LEASE_MS / 1000)
    os.kill(cl.redis.proc.pid, signal.SIGCONT)
    await task
    await settle(ss)
    await converged(t, "redis-sigstop", cl.d, ss, timeout=8)
    await asyncio.sleep(0.5)
    evs = chan_events(await read_log(B))
    await converged(t, "redis-sigstop (log)", cl.d, ss, evs)
    t.note(f"redis-sigstop: {len(evs)} channel events, reasons "
           f"{sorted(set(e.get('reason') for e in evs))}")
    await close_all(ss)


async def test_msg_sigstop(t, cl):
    """A message due while Redis is stopped past the lease: cleared once
    when it is back. Apart from the storm of redis-sigstop, whose events
    can pass the bounded log before it is read."""
    A, B, C = cl.d
    mc = await Client.connect(C, "sg-msg")
    await mc.send({"type": "message", "text": "x", "expires_at": now_ms() + 1000, "id": "m"})
    await mc.expect_type("ack", 5, id="m")

    async def stored():
        return any(e.get("type") == "user.message" and e.get("user_id") == "sg-msg"
                   for e in await read_log(B))
    # The ack comes once Redis has the message; B's log shows it once B's
    # reader has it: the message must be in the store before the stop.
    await wait_for(stored, 5)
    os.kill(cl.redis.proc.pid, signal.SIGSTOP)
    await asyncio.sleep(2.5 * LEASE_MS / 1000)
    os.kill(cl.redis.proc.pid, signal.SIGCONT)

    async def cleared():
        return [e.get("reason") for e in await read_log(B)
                if e.get("type") == "user.message" and e.get("user_id") == "sg-msg"] == \
            ["explicit", "expired"]
    await wait_for(cleared, 8)
    log = await read_log(B)
    t.eq("msg-sigstop: the message due during the stop: set once, cleared once (expired)",
         [e.get("reason") for e in log if e.get("type") == "user.message"
          and e.get("user_id") == "sg-msg"], ["explicit", "expired"])
    await mc.close()
test_msg_sigstop.timeout = 40


async def test_msg_stopped(t, cl):
    """A message set over the WebSocket while redis-server is already
    stopped, due before it is back: its answer tells the truth. An ack
    while Redis cannot have the write told the client it was set, and the
    write lost with the connection was then never shown to anyone."""
    A, B, C = cl.d
    mc = await Client.connect(C, "sg-stopped")
    os.kill(cl.redis.proc.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(0.1)
        await mc.send({"type": "message", "text": "x", "expires_in": 1, "id": "m"})
        early = await mc.expect(lambda m: m.get("id") == "m", 0.6)
        t.eq("msg-stopped: no answer while Redis cannot have the write",
             early[0], None)
        await asyncio.sleep(2.5 * LEASE_MS / 1000 - 0.7)
    finally:
        os.kill(cl.redis.proc.pid, signal.SIGCONT)
    ans, _ = await mc.expect(lambda m: m.get("id") == "m", 10)
    kind = ans and (ans["type"] if ans["type"] == "ack" else ans.get("code"))
    t.check("msg-stopped: answered, by an ack or store_unavailable",
            kind in ("ack", "store_unavailable"), ans)
    t.note(f"msg-stopped: answered {kind}")

    async def reasons():
        return [e.get("reason") for e in await read_log(B)
                if e.get("type") == "user.message" and e.get("user_id") == "sg-stopped"]
    if kind == "ack":
        # Acknowledged: shown (set) and then cleared at its expiry, once.
        async def both():
            return await reasons() == ["explicit", "expired"]
        await wait_for(both, 8)
        t.eq("msg-stopped: an acknowledged message is set once, cleared once",
             await reasons(), ["explicit", "expired"])
    await mc.close()
test_msg_stopped.timeout = 40


test_redis_sigstop.timeout = 60


async def _loss(t, cl, how):
    A, B, C = cl.d
    tap = await EventTap.open(C)
    ss = await open_sessions(cl)
    # Status people set, through each instance: every instance keeps it
    # (from the log) and re-asserts it after the loss; the store applies
    # it once.
    setters = []
    for i, d in enumerate(cl.d):
        u = f"set-{'abc'[i]}"
        c = await Client.connect(d, u)
        await c.send({"type": "availability", "availability": "dnd", "id": "a"})
        await c.expect_type("ack", 5, id="a")
        await c.send({"type": "message", "text": f"t{i}", "expires_in": 3600, "id": "m"})
        await c.expect_type("ack", 5, id="m")
        setters.append((u, c))
    task = asyncio.ensure_future(storm(ss, 4.0, 23))
    await asyncio.sleep(1.5)
    before = len(tap.events())
    if how == "flushall":
        t.eq("flushall: FLUSHALL", cl.redis.cli("FLUSHALL").strip(), "OK")
    else:
        cl.redis.kill()
        await asyncio.sleep(0.3)
        cl.redis.start()
    await task
    await settle(ss)
    await converged(t, how, cl.d, ss, timeout=10)
    await tap.quiet(0.8, 10)
    evs = tap.events()
    tap.close()
    # The loss: the first event whose seq jumps (a million ahead) after the
    # events seen before it.
    cut = None
    for i in range(max(before, 1), len(evs)):
        if evs[i].get("seq", 0) > evs[i - 1].get("seq", 0) + 500000:
            cut = i
            break
    t.check(f"{how}: the stream on C goes on past the loss (seq jumped ahead)", cut is not None,
            [e.get("seq") for e in evs[max(0, before - 2):before + 3]])
    ce = chan_events(evs)
    reset = None
    if cut is not None:
        reset = sum(1 for e in evs[:cut] if e in ce)
    await converged(t, f"{how} (stream)", cl.d, ss, ce, reset_after=reset)
    if cut is not None:
        got = sorted((e["user_id"], e["type"], e.get("reason")) for e in evs[cut:]
                     if e.get("type") in ("user.availability", "user.message")
                     and str(e.get("user_id")).startswith("set-"))
        t.eq(f"{how}: each setting re-asserted once after the loss (reason resync), "
             "though three instances hold it",
             got, sorted((u, typ, "resync") for u, _c in setters
                         for typ in ("user.availability", "user.message")))
    for i, (u, c) in enumerate(setters):
        j = (await http(B, "GET", f"/v1/users/{u}")).json() or {}
        t.check(f"{how}: {u}'s settings are back", j.get("availability") == "dnd"
                and (j.get("message") or {}).get("text") == f"t{i}", j)
        await c.close()
    resync = [e for e in ce[reset or 0:] if e.get("reason") == "resync"]
    if os.environ.get("CHAOS_DEBUG") and cut is not None:
        for e in evs[cut - 5:cut + 40]:
            t.note(f"{e.get('seq')} {e.get('type')} {e.get('reason')} {e.get('channel')} "
                   f"{e.get('user_id')} v{e.get('version')} {e.get('session_id')}")
    t.note(f"{how}: {len(ce)} channel events, {len(resync)} resync after the loss "
           f"(cut at {cut}/{len(evs)}, channel events before it {reset})")
    await close_all(ss)


async def test_flushall(t, cl):
    await _loss(t, cl, "flushall")
test_flushall.timeout = 60


async def test_restart(t, cl):
    await _loss(t, cl, "restart")
test_restart.timeout = 60


# --------------------------------------------------------------------------
# A slow Redis and a partition: A goes to Redis through this proxy.


class SlowProxy:
    def __init__(self, sock, delay=0.05):
        self.sock = sock
        self.delay = delay
        self.cut = False
        self.conns = []

    async def start(self):
        self.server = await asyncio.start_server(self.accept, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def accept(self, dr, dw):
        if self.cut:
            dw.close()
            return
        try:
            ur, uw = await asyncio.open_unix_connection(self.sock)
        except OSError:
            dw.close()
            return
        pair = (dw, uw)
        self.conns.append(pair)

        async def pump(r, w, slow):
            try:
                while True:
                    data = await r.read(65536)
                    if not data or self.cut:
                        break
                    # Read at each reply, so that a delay set later slows
                    # the connections already open (it was read once, at
                    # accept, and later settings changed nothing).
                    delay = self.delay if slow else 0
                    if delay:
                        await asyncio.sleep(delay)
                    if self.cut:
                        break
                    w.write(data)
            except Exception:
                pass
            finally:
                for x in pair:
                    x.close()
        await asyncio.gather(pump(dr, uw, False), pump(ur, dw, True))

    def partition(self, on):
        self.cut = on
        if on:
            for pair in self.conns:
                for x in pair:
                    x.close()
            self.conns = []

    def stop(self):
        self.server.close()


class ProxiedCluster(Cluster):
    """A reaches Redis through a proxy (self.proxy, made by make_proxy and
    started by astart(), with the instances: `instances` of them, all n
    when None); the others directly. Here a SlowProxy."""
    instances = None

    def make_proxy(self, sock):
        return SlowProxy(sock)

    def start(self):
        self.redis.start()
        return self

    async def astart(self):
        self.proxy = self.make_proxy(self.redis.sock)
        await self.proxy.start()
        loop = asyncio.get_running_loop()
        for i in range(self.instances or self.n):
            flags = dict(self.flags)
            if i == 0:
                flags["--store"] = f"redis://{HOST}:{self.proxy.port}"
            d = Daemon(self.binary, flags, f"presenced-{'ABC'[i]}")
            await loop.run_in_executor(None, d.start)
            self.d.append(d)


async def test_slow_partition(t, cl):
    await cl.astart()
    A, B, C = cl.d
    ss = await open_sessions(cl)
    task = asyncio.ensure_future(storm(ss, 7.0, 31))
    await asyncio.sleep(1.5)
    cl.proxy.delay = 0.25           # slow: a quarter of the lease a reply
    await asyncio.sleep(1.5)
    cl.proxy.partition(True)       # then cut off past the lease
    await asyncio.sleep(2.5 * LEASE_MS / 1000)
    cl.proxy.partition(False)
    cl.proxy.delay = 0.02
    await task
    await settle(ss)
    await converged(t, "slow-partition", cl.d, ss, timeout=10)
    await asyncio.sleep(0.5)
    evs = chan_events(await read_log(C))
    await converged(t, "slow-partition (log)", cl.d, ss, evs)
    t.note(f"slow-partition: {len(evs)} channel events, "
           f"{sum(1 for e in evs if e.get('reason') == 'instance_lost')} instance_lost, "
           f"{sum(1 for e in evs if e.get('reason') == 'resync')} resync")
    await close_all(ss)
    cl.proxy.stop()
test_slow_partition.timeout = 60


class CorruptingCluster(ProxiedCluster):
    """A reaches Redis through test_redis_proxy's Proxy (a reply of one
    kind replaced by garbage, on demand); B directly."""
    instances = 2

    def make_proxy(self, sock):
        from test_redis_proxy import Proxy
        return Proxy(sock)


async def _empty(d, ch):
    return await members(d, ch) == []


async def test_snapshot_lost(t, cl):
    """A join the store made whose snapshot then fails: the client must not
    be told the join did not happen (docs/protocol.md 4.5) while the
    others list it as a member."""
    await cl.astart()
    A, B = cl.d
    c = await Client.connect(A, "sl-ann", tok=tok("sl-ann"))
    cl.proxy.target = "q_mbrief"
    cl.proxy.mode = "status"
    await c.send({"type": "join", "channel": "cx-0", "data": {"n": 1}, "id": "j"})
    m, _ = await c.expect(lambda x: x.get("id") == "j", 6)
    t.check("snapshot-lost: the listing's reply was replaced", cl.proxy.corrupted == 1,
            cl.proxy.corrupted)
    listed = "sl-ann" in (await members(B, "cx-0") or [])
    said_no = m is not None and m.get("type") == "error"
    t.check("snapshot-lost: the answer to the join agrees with the store "
            "(no error while it is a member, no snapshot while it is not)",
            (listed and not said_no) or (not listed and said_no), f"answer {m}, listed on B: {listed}")
    if m is not None and m.get("type") == "channel":
        t.check("snapshot-lost: the snapshot lists the joiner",
                "sl-ann" in [x["user_id"] for x in m.get("members", [])], m)
    # Its leave then works either way, and nothing is left behind.
    await c.send({"type": "leave", "channel": "cx-0", "id": "l"})
    m, _ = await c.expect(lambda x: x.get("id") == "l", 6)
    t.check("snapshot-lost: a leave then is acknowledged", m is not None and m.get("type") == "ack", m)
    # A leave is acknowledged once applied locally (channels.c): the store
    # has it a moment later, when A's write queue reaches Redis. B reads
    # Redis: the channel must become empty, and stay so.
    await wait_for(lambda: _empty(B, "cx-0"), 5)
    t.eq("snapshot-lost: and the channel is empty", await members(B, "cx-0"), [])
    await c.close()
    cl.proxy.stop()
test_snapshot_lost.timeout = 30


async def _answers(c, ids, timeout):
    """The frames answering the requests ids (by id), in arrival order, and
    every other frame read meanwhile."""
    got, other = [], []
    t0 = time.monotonic()
    while len(got) < len(ids) and time.monotonic() - t0 < timeout:
        try:
            m = await c.recv(timeout=max(0.05, timeout - (time.monotonic() - t0)))
        except asyncio.TimeoutError:
            break
        (got if m.get("id") in ids else other).append(m)
    return got, other


async def test_reobserve(t, cl):
    """observe, unobserve, observe again before the first observe's answer
    (A's replies slowed by its proxy): whatever the first observe's answer
    is, the session ends observing (the last request), gets the channel's
    changes, and one unobserve then stops them."""
    await cl.astart()
    A, B = cl.d
    m = await Client.connect(B, "ro-m", tok=tok("ro-m"))
    await m.send({"type": "join", "channel": "cx-1", "data": {"v": 1}, "id": "j"})
    await m.expect_type("channel", 5, id="j")
    c = await Client.connect(A, "ro-obs", tok=tok("ro-obs"))
    for fail in (True, False):
        tag = "the first observe failing" if fail else "the first observe answered late"
        # Held replies: the three requests are all in before any answer.
        cl.proxy.stalled.clear()
        if fail:
            cl.proxy.target = "q_mbrief"
            cl.proxy.mode = "status"
        for msg in ({"type": "observe", "channel": "cx-1", "id": "o1"},
                    {"type": "unobserve", "channel": "cx-1", "id": "u"},
                    {"type": "observe", "channel": "cx-1", "id": "o2"}):
            await c.send(msg)
        await asyncio.sleep(0.3)
        cl.proxy.stalled.set()
        got, _ = await _answers(c, {"o1", "u", "o2"}, 6)
        by = {x["id"]: x for x in got}
        if fail:
            t.check("reobserve: the first observe's reply was replaced", cl.proxy.corrupted == 1,
                    cl.proxy.corrupted)
        t.eq(f"reobserve ({tag}): o1, u and o2 each answered",
             sorted(by), ["o1", "o2", "u"])
        t.eq(f"reobserve ({tag}): the second observe is answered by a snapshot listing the member",
             [x["user_id"] for x in by.get("o2", {}).get("members", [])], ["ro-m"])
        await m.send({"type": "update", "channel": "cx-1", "data": {"v": 2 if fail else 3}, "id": "u1"})
        await m.expect_type("ack", 5, id="u1")
        ch = [x for x in await c.collect(1.0) if x.get("type") == "channel"]
        t.eq(f"reobserve ({tag}): the session observes: the member's update reaches it",
             [(x.get("event"), x["member"].get("data")) for x in ch],
             [("update", {"v": 2 if fail else 3})])
        await c.send({"type": "unobserve", "channel": "cx-1", "id": "u2"})
        await c.expect_type("ack", 5, id="u2")
        await m.send({"type": "update", "channel": "cx-1", "data": {"v": 9}, "id": "u3"})
        await m.expect_type("ack", 5, id="u3")
        ch = [x for x in await c.collect(1.0) if x.get("type") == "channel"]
        t.eq(f"reobserve ({tag}): after an unobserve nothing more comes", ch, [])
    await m.close()
    await c.close()
    cl.proxy.stop()
test_reobserve.timeout = 40


async def test_rejoin_race(t, cl):
    """join, leave, join again before the first join's answer, the first
    join's reply lost (replaced): the session ends a member (the last
    request), as its second join's snapshot says, and the others see it."""
    await cl.astart()
    A, B = cl.d
    m = await Client.connect(B, "rr-m", tok=tok("rr-m"))
    await m.send({"type": "observe", "channel": "cx-2", "id": "o"})
    await m.expect_type("channel", 5, id="o")
    c = await Client.connect(A, "rr-c", tok=tok("rr-c"))
    cl.proxy.stalled.clear()
    cl.proxy.target = "join"
    cl.proxy.mode = "status"
    for msg in ({"type": "join", "channel": "cx-2", "data": {"n": 1}, "id": "j1"},
                {"type": "leave", "channel": "cx-2", "id": "l"},
                {"type": "join", "channel": "cx-2", "data": {"n": 2}, "id": "j2"}):
        await c.send(msg)
    await asyncio.sleep(0.3)
    cl.proxy.stalled.set()
    got, _ = await _answers(c, {"j1", "l", "j2"}, 6)
    by = {x["id"]: x for x in got}
    t.check("rejoin-race: the first join's reply was replaced", cl.proxy.corrupted == 1,
            cl.proxy.corrupted)
    t.eq("rejoin-race: the second join is answered by a snapshot listing the joiner",
         [x["user_id"] for x in by.get("j2", {}).get("members", [])], ["rr-c"])
    await asyncio.sleep(0.5)
    t.eq("rejoin-race: the store lists the session's user as a member",
         await members(B, "cx-2"), ["rr-c"])
    await c.send({"type": "update", "channel": "cx-2", "data": {"n": 3}, "id": "u"})
    m2, _ = await c.expect(lambda x: x.get("id") == "u", 5)
    t.eq("rejoin-race: an update of the channel is acked (still joined here)",
         (m2 or {}).get("type"), "ack")
    await m.close()
    await c.close()
    cl.proxy.stop()
test_rejoin_race.timeout = 30


# --------------------------------------------------------------------------


async def test_backend(t, cl):
    A, B, C = cl.d
    lost = await Backend.connect(A, "bk-lost")
    kept = await Backend.connect(A, "bk-kept")
    ops_l, ops_k, sess_k = [], [], []
    for i in range(6):
        ops_l += [{"op": "open", "session": f"bl-{i}", "user": f"bl{i}"},
                  {"op": "join", "session": f"bl-{i}", "channel": CHANS[i % 3], "data": {"i": i}}]
        ops_k += [{"op": "open", "session": f"bk-{i}", "user": f"bk{i}"},
                  {"op": "join", "session": f"bk-{i}", "channel": CHANS[i % 3], "data": {"i": i}}]
        sess_k.append((f"bk-{i}", f"bk{i}"))
    # bl0 is also in cx-0 through a WebSocket session on B: it stays.
    ws = await Client.connect(B, "bl0", tok=tok("bl0"))
    await ws.send({"type": "join", "channel": "cx-0", "data": {"ws": 1}, "id": "j"})
    await ws.expect_type("channel", 5, id="j")
    for b, ops in ((lost, ops_l), (kept, ops_k)):
        a = await b.batch(ops)
        t.check(f"backend {b.origin}: batch acknowledged without errors",
                a.get("type") == "ack" and not a.get("errors"), a)
    want = {"cx-0": ["bk0", "bk3", "bl0", "bl3"], "cx-1": ["bk1", "bk4", "bl1", "bl4"],
            "cx-2": ["bk2", "bk5", "bl2", "bl5"]}

    async def listed(d, w):
        return {ch: await members(d, ch) for ch in CHANS} == w
    t.check("backend: B lists every member", await wait_for(lambda: listed(B, want), 5) is not None,
            {ch: await members(B, ch) for ch in CHANS})
    A.kill()
    kill_ms = now_ms()
    lost.abort()
    kept.abort()
    # The kept backend reconnects to B at once and re-asserts its sessions
    # and their joins, before A's lease runs out.
    kb = await Backend.connect(B, "bk-kept")
    acks = await kb.sync(sess_k)
    a = await kb.batch([{"op": "join", "session": s, "channel": CHANS[i % 3], "data": {"i": i}}
                        for i, (s, _u) in enumerate(sess_k)])
    t.check("backend: the re-assert on B is acknowledged without errors",
            all(not x.get("errors") for x in acks) and not a.get("errors"), (acks, a))
    want2 = {ch: [u for u in us if not u.startswith("bl") or u == "bl0" and ch == "cx-0"]
             for ch, us in want.items()}
    took = await wait_for(lambda: listed(C, want2), LEASE_MS / 1000 + 6)
    t.check("backend: after A's lease the lost origin's members are gone, the kept ones stay",
            took is not None, {ch: await members(C, ch) for ch in CHANS})
    await asyncio.sleep(1.0)
    t.check("backend: and B agrees", await listed(B, want2), {ch: await members(B, ch) for ch in CHANS})
    evs = chan_events(await read_log(C))
    _mem, problems, last = chain(evs)
    t.eq("backend: each member transition once in the log", problems[:8], [])
    got = sorted((ch, u, e["type"], e.get("reason")) for (ch, u), e in last.items()
                 if e["type"] != "channel.join")
    t.eq("backend: the lost origin's members left once, reason instance_lost; "
         "bl0 (on B too) stays; the re-asserted ones left never",
         [x for x in got if x[2] == "channel.leave"],
         sorted((CHANS[i % 3], f"bl{i}", "channel.leave", "instance_lost") for i in range(1, 6)))
    early = [(e["channel"], e["user_id"]) for e in evs if e["type"] == "channel.leave"
             and e["ts"] < kill_ms + LEASE_MS - HB_MS - 150]
    t.eq("backend: none before A's lease ran out", early, [])
    kept_evs = [(e["channel"], e["user_id"], e["type"], e.get("reason")) for e in evs
                if e["user_id"].startswith("bk") and e["type"] != "channel.join"]
    t.eq("backend: the kept origin's members: no event after their join", kept_evs, [])
    await kb.close()
    await ws.close()
test_backend.timeout = 60


async def test_backend_storm(t, cl):
    """A backend on A joining, updating and leaving for its sessions in
    batches when A is killed; it reconnects to B at once, re-asserts its
    sessions (sync) and their channels (join what it holds, leave what it
    is unsure of), and goes on there. Its sessions are adopted before A's
    lease runs out: none of their memberships leaves (instance_lost or
    otherwise) for it, and the lists end as the backend holds them."""
    A, B, C = cl.d
    rnd = random.Random(77)
    sess = [(f"bs-{i}", f"bs{i}") for i in range(8)]
    joined = {sid: set() for sid, _u in sess}
    unknown = {sid: set() for sid, _u in sess}
    b = await Backend.connect(A, "bs-origin")
    a = await b.batch([{"op": "open", "session": sid, "user": u} for sid, u in sess])
    t.check("backend-storm: sessions opened", not a.get("errors"), a)

    async def round_(b):
        ops = []
        for _ in range(6):
            sid = rnd.choice(sess)[0]
            ch = rnd.choice(CHANS)
            if ch in joined[sid] and rnd.random() < 0.4:
                ops.append({"op": "update", "session": sid, "channel": ch, "data": {"k": rnd.random()}})
            elif ch in joined[sid] or ch in unknown[sid]:
                ops.append({"op": "leave", "session": sid, "channel": ch})
            else:
                ops.append({"op": "join", "session": sid, "channel": ch, "data": {"s": sid}})
        for op in ops:   # in flight: unknown until acknowledged
            if op["op"] != "update":
                unknown[op["session"]].add(op["channel"])
        # Acks come before the store's answer: unthrottled, this loop
        # writes ~40,000 events a second and the log (100,000) is trimmed
        # before it is read.
        await asyncio.sleep(0.01)
        ans = await b.batch(ops, timeout=3)
        bad = {e["index"]: e.get("code") for e in ans.get("errors", [])}
        for i, op in enumerate(ops):
            sid, ch = op["session"], op["channel"]
            if op["op"] == "update":
                continue
            if i in bad and bad[i] != "not_joined":
                continue   # left unknown
            unknown[sid].discard(ch)
            if op["op"] == "join" and i not in bad:
                joined[sid].add(ch)
            else:
                joined[sid].discard(ch)

    t_end = time.monotonic() + 1.5
    while time.monotonic() < t_end:
        await round_(b)
    task = asyncio.ensure_future(round_(b))
    await asyncio.sleep(0.005)
    A.kill()
    kill_ms = now_ms()
    try:
        await task
    except Exception:
        pass   # the batch in flight: its ops stay unknown
    b.abort()
    b = await Backend.connect(B, "bs-origin")
    acks = await b.sync(sess)
    ops = []
    for sid, _u in sess:
        ops += [{"op": "join", "session": sid, "channel": ch, "data": {"s": sid}} for ch in sorted(joined[sid])]
        ops += [{"op": "leave", "session": sid, "channel": ch} for ch in sorted(unknown[sid])]
    a = await b.batch(ops)
    bad = [e for e in a.get("errors", []) if not (ops[e["index"]]["op"] == "leave" and e.get("code") == "not_joined")]
    t.check("backend-storm: re-asserted on B before A's lease ran out",
            all(not x.get("errors") for x in acks) and not bad and now_ms() - kill_ms < LEASE_MS,
            (acks, a, now_ms() - kill_ms))
    for sid, _u in sess:
        unknown[sid] = set()
    t_end = time.monotonic() + 1.5
    while time.monotonic() < t_end:
        await round_(b)
    want = {ch: sorted({u for sid, u in sess if ch in joined[sid]}) for ch in CHANS}

    async def agree():
        for d in (B, C):
            for ch in CHANS:
                if await members(d, ch) != want[ch]:
                    return False
        return True
    await asyncio.sleep(LEASE_MS / 1000 + 1)   # A reaped by then
    took = await wait_for(agree, 5)
    t.check("backend-storm: B and C list the members as the backend holds them", took is not None,
            (want, {ch: await members(C, ch) for ch in CHANS}))
    evs = chan_events(await read_log(C))
    mem, problems, _last = chain(evs)
    t.eq("backend-storm: each member transition once in the log", problems[:8], [])
    if problems and os.environ.get("CHAOS_DEBUG"):
        k = problems[0].split("(")[1].split(")")[0]
        for e in evs:
            if f"'{e['channel']}', '{e['user_id']}'" == k:
                t.note(f"{e['seq']} {e['type']} {e.get('reason')} v{e.get('version')} ts-kill {e['ts'] - kill_ms}")
    t.eq("backend-storm: the log's replay ends with the same members",
         {ch: sorted(v) for ch, v in mem.items()}, want)
    lost = [(e["channel"], e["user_id"]) for e in evs if e.get("reason") == "instance_lost"]
    t.eq("backend-storm: no membership left for A's death (the sessions moved to B first)", lost, [])
    await b.close()
test_backend_storm.timeout = 40


async def test_resync_join(t, cl):
    """Joins while A re-asserts its sessions after a FLUSHALL: A holds
    5,000 sessions of a backend, so its re-assert takes many calls, and
    six WebSocket sessions opened after them (re-asserted last) and the
    backend for its last ten sessions join and leave meanwhile. A join of a session Redis does not hold again yet is
    asserted by that session's re-assert, still to come: answered as
    done (not 'internal'), and a backend's (acknowledged before the store
    answers) not lost; the lists end as the answers say."""
    A, B, C = cl.d
    b = await Backend.connect(A, "rj-origin")
    await b.open_many([(f"rj-{i}", f"rj{i}") for i in range(5000)])
    ws = []
    for k in range(6):
        u = f"rjw{k}"
        ws.append(Sess(A, u, await Client.connect(A, u, tok=tok(u))))
    t0 = time.monotonic()
    answers = []

    async def spam(s):
        n = 0
        while time.monotonic() - t0 < 2.5:
            n += 1
            ch = CHANS[n % 3]
            if ch in s.joined:
                await s.leave(ch)
            else:
                m = await s.ask({"type": "join", "channel": ch, "snapshot": False})
                answers.append(str((m or {}).get("code") or (m or {}).get("type")))
                if m is not None and m.get("type") == "ack":
                    s.joined.add(ch)
            await asyncio.sleep(0.012)   # under 100 messages a second
    # The backend joins and leaves for its last sessions meanwhile: an op
    # acknowledged without an error is the backend's truth (it re-asserts
    # nothing of its channels later: docs/protocol.md 5.3).
    late = [Sess(A, f"rj{i}", None) for i in range(4990, 5000)]

    async def bspam():
        n = 0
        while time.monotonic() - t0 < 2.5:
            n += 1
            ops = []
            for s in late:
                ch = CHANS[n % 3]
                ops.append({"op": "leave" if ch in s.joined else "join",
                            "session": f"rj-{s.user[2:]}", "channel": ch})
            a = await b.batch(ops)
            bad = {e["index"] for e in a.get("errors", [])}
            for i, (s, op) in enumerate(zip(late, ops)):
                if i not in bad:
                    (s.joined.add if op["op"] == "join" else s.joined.discard)(op["channel"])
            await asyncio.sleep(0.015)
    task = asyncio.gather(bspam(), *(spam(s) for s in ws))
    await asyncio.sleep(0.5)
    t.eq("resync-join: FLUSHALL", cl.redis.cli("FLUSHALL").strip(), "OK")
    await task
    t.note(f"resync-join: answers {sorted(set(answers))}")
    t.note(f"resync-join: {[s.why for s in ws if s.dead]}")
    t.eq("resync-join: no join answered 'internal'",
         sorted(set(a for a in answers if a not in ("ack", "store_unavailable"))), [])
    await converged(t, "resync-join", cl.d, ws + late, timeout=8)
    await b.close()
    await close_all(ws)
test_resync_join.timeout = 40


# --------------------------------------------------------------------------


async def test_msg_kill(t, cl):
    A, B, C = cl.d
    users = [f"mk{i}" for i in range(4)]
    cs = []
    for i, u in enumerate(users):
        c = await Client.connect(A, u)
        # Expiries spread around the kill: 1.0 s to 1.15 s after now.
        await c.send({"type": "message", "text": f"m{i}", "expires_at": now_ms() + 1000 + 50 * i,
                      "id": "m"})
        t.check(f"msg-kill: {u}'s message set", await c.expect_type("ack", 5, id="m") is not None)
        cs.append(c)
    at = now_ms() + 1000 - 80
    await asyncio.sleep(max(0, at - now_ms()) / 1000)
    # Kill A when the first expiry is due: whichever instance sees a message
    # due clears it (A's own poll may be on its way).
    A.kill()
    await asyncio.sleep(LEASE_MS / 1000 + 2.5)
    log = await read_log(B)
    for u in users:
        got = [(e["type"], e.get("reason")) for e in log if e.get("user_id") == u
               and e["type"] in ("user.message", "user.offline", "session.disconnected")]
        t.eq(f"msg-kill: {u}: the message set, cleared once (expired); reaped once",
             sorted(got), sorted([("user.message", "explicit"), ("user.message", "expired"),
                                  ("session.disconnected", "instance_lost"),
                                  ("user.offline", "instance_lost")]))
        r = await http(C, "GET", f"/v1/users/{u}")
        j = r.json() or {}
        t.check(f"msg-kill: {u}: C shows no message, offline", j.get("message") is None
                and j.get("status") == "offline", j)
test_msg_kill.timeout = 30


# --------------------------------------------------------------------------
# A skewed clock: an LD_PRELOAD shim that moves CLOCK_REALTIME (and its
# coarse variant, and gettimeofday/time) by PRESENCE_SKEW_MS.

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
static long long off(void) {
  const char *s = getenv("PRESENCE_SKEW_MS");
  return s ? atoll(s) : 0;
}
static void add(struct timespec *ts, long long ms) {
  long long ns = (long long)ts->tv_nsec + (ms % 1000) * 1000000LL;
  ts->tv_sec += ms / 1000 + ns / 1000000000LL;
  ns %= 1000000000LL;
  if (ns < 0) { ns += 1000000000LL; ts->tv_sec -= 1; }
  ts->tv_nsec = ns;
}
int clock_gettime(clockid_t id, struct timespec *ts) {
  static int (*real)(clockid_t, struct timespec *);
  if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
  int rc = real(id, ts);
  if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) add(ts, off());
  return rc;
}
int gettimeofday(struct timeval *tv, void *tz) {
  struct timespec ts;
  int rc = clock_gettime(CLOCK_REALTIME, &ts);
  (void)tz;
  if (rc == 0 && tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
  return rc;
}
time_t time(time_t *t) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (t) *t = ts.tv_sec;
  return ts.tv_sec;
}
"""


def build_shim():
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    d = tempfile.mkdtemp(prefix="chaos-skew-")
    src = os.path.join(d, "skew.c")
    with open(src, "w") as f:
        f.write(SHIM)
    so = os.path.join(d, "skew.so")
    r = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", so, src, "-ldl"],
                       capture_output=True, text=True)
    return so if r.returncode == 0 else None


class SkewedCluster(Cluster):
    """A's wall clock is off by self.skew_ms (B and C are right)."""
    skew_ms = 0

    def start(self):
        self.redis.start()
        self.shim = build_shim()
        if not self.shim:
            raise RuntimeError("no C compiler for the clock shim")
        for i in range(self.n):
            # An ASan build wants its runtime first: the shim goes before
            # it, which its check would refuse (the shim intercepts nothing
            # ASan does).
            asan = ":".join(x for x in (os.environ.get("ASAN_OPTIONS", ""),
                                        "verify_asan_link_order=0") if x)
            env = {"LD_PRELOAD": self.shim, "PRESENCE_SKEW_MS": str(self.skew_ms),
                   "ASAN_OPTIONS": asan} if i == 0 else None
            d = Daemon(self.binary, self.flags, f"presenced-{'ABC'[i]}", env=env)
            d.start()
            self.d.append(d)
        return self

    def cleanup(self):
        super().cleanup()
        if getattr(self, "shim", None):
            shutil.rmtree(os.path.dirname(self.shim), ignore_errors=True)


async def test_skew(t, cl):
    A, B, C = cl.d
    skew = cl.skew_ms
    # A message with expires_in set through A clears by Redis's clock.
    c = await Client.connect(A, "sk-a")
    w = await Client.connect(C, "sk-w", watch="*")
    await w.send({"type": "subscribe", "users": ["sk-a"], "id": 1})
    await w.expect_type("presence", 5, snapshot=True)
    await c.send({"type": "message", "text": "soon", "expires_in": 3, "id": "m"})
    t.check(f"skew {skew:+d} ms: the message set through A", await c.expect_type("ack", 5, id="m") is not None)
    t0 = time.monotonic()
    got = None
    while time.monotonic() - t0 < 3 + abs(skew) / 1000 + 3:
        ch = await w.change("sk-a", timeout=0.5)
        if ch and any(u.get("change") == "message" and u.get("message") is None
                      for u in ch.get("users", [])):
            got = time.monotonic() - t0
            break
    t.check(f"skew {skew:+d} ms: expires_in 3 on A is cleared 3 s later by Redis's clock "
            f"(2.5-4.5 s), not {skew / 1000:+.0f} s off", got is not None and 2.5 <= got <= 4.5,
            f"cleared after {got} s")
    await c.close()
    await w.close()
    # The expiry a backend is shown is the one the store keeps, on Redis's
    # clock, whichever instance answers: the PUT's answer through A, GET
    # through B. An expires_at (this test's clock, Redis's) is kept as
    # given, not moved by A's error.
    r = await http(A, "PUT", "/v1/users/sk-h/message", body={"text": "x", "expires_in": 600})
    put = ((r.json() or {}).get("message") or {}).get("expires") if r.status == 200 else None
    r = await http(B, "GET", "/v1/users/sk-h/message")
    got = ((r.json() or {}).get("message") or {}).get("expires") if r.status == 200 else None
    t.check(f"skew {skew:+d} ms: expires_in: the PUT's answer through A shows the expiry "
            f"GET through B shows (within 100 ms)",
            put is not None and got is not None and abs(put - got) <= 100, (put, got))
    at = now_ms() + 600000
    r = await http(A, "PUT", "/v1/users/sk-h/message", body={"text": "y", "expires_at": at})
    put = ((r.json() or {}).get("message") or {}).get("expires") if r.status == 200 else None
    r = await http(B, "GET", "/v1/users/sk-h/message")
    got = ((r.json() or {}).get("message") or {}).get("expires") if r.status == 200 else None
    t.eq(f"skew {skew:+d} ms: expires_at through A is kept as given (answer, GET through B)",
         (put, got), (at, at))
    if skew < 0:   # once is enough: the storm does not look at the clock
        await test_storm_kill9(t, cl, skewed=True)
test_skew.timeout = 80


def skewed(skew_ms):
    """SkewedCluster with A's clock off by skew_ms."""
    return type("Skewed", (SkewedCluster,), {"skew_ms": skew_ms})


def sharded_flag(kw):
    """run_scenarios' setup: chain() checks unique sequence numbers only
    while the store is one log (--redis-shards gives one per shard)."""
    global SHARDED
    SHARDED = "--redis-shards" in kw.get("extra", {})
    return {}, (), None


def main():
    def sc(name, fn, cls=Cluster, **extra):
        return (name, fn, {"cluster": cls, "extra": {**FLAGS, **extra}})
    scenarios = [
        sc("storm-kill9", test_storm_kill9),
        sc("grace-kill9", test_grace_kill9, **{"--offline-grace-ms": "400"}),
        # The same storm with the store in 4 shards: a channel's members in
        # their users' shards, each reaped by its shard.
        sc("shards-kill9", test_storm_kill9, **{"--redis-shards": "4"}),
        sc("redis-sigstop", test_redis_sigstop),
        sc("msg-sigstop", test_msg_sigstop),
        sc("msg-stopped", test_msg_stopped),
        sc("slow-partition", test_slow_partition, ProxiedCluster),
        sc("flushall", test_flushall),
        sc("restart", test_restart),
        sc("snapshot-lost", test_snapshot_lost, CorruptingCluster),
        sc("reobserve", test_reobserve, CorruptingCluster),
        sc("rejoin-race", test_rejoin_race, CorruptingCluster),
        sc("backend", test_backend),
        sc("backend-storm", test_backend_storm),
        sc("resync-join", test_resync_join),
        sc("msg-kill", test_msg_kill),
        sc("skew-behind", test_skew, skewed(-30000)),
        sc("skew-ahead", test_skew, skewed(30000)),
    ]
    return run_scenarios(scenarios, 60, setup=sharded_flag)

if __name__ == "__main__":
    sys.exit(main())
