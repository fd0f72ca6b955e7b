#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""
presenced --workers 2 on a real Redis Cluster (issue 20): three primaries
and three replicas started here (test_redis_rcluster.RedisCluster), one
`presenced --workers 2 --redis-cluster ...` (12 shards, so 12 logs) on one
port. Worker 1 reads every shard's log and passes each other worker its
part over one socket (redis_shard.c: one feed carrying every shard's
replies).

  feed:   Redis serves one XREAD per shard for the two workers (12 readers
          on the cluster, not 24); watchers on each worker watch users on
          the other, whose users (spread over the shards) flip their status
          12 times each at once: each watcher sees each change of each user
          it watches exactly once, in order, and nothing more; two event
          streams opened before get every user's events once each, in each
          shard's order; the log (read through the per-shard cursor, on
          either worker) chains every user's transitions exactly once.
  kill9:  kill -9 of worker 1 (the reader): worker 2 reads every shard's
          log itself from where the feed stopped (a change made on it right
          after reaches its watcher), the dead worker's users go offline
          once each (instance_lost, reaped per shard), the other worker's
          stay online, the replacement serves and reads for itself (24
          XREADs); the log chains every transition exactly once.

Run: /usr/bin/python3 tests/integration/test_workers_rcluster.py --presenced PATH
"""

import asyncio
import os
import re
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SSE  # noqa: E402
from test_redis_cluster import read_log_records, run_scenarios, statuses, wait_for  # noqa: E402
from test_redis_rcluster import SHARDS, RCluster, chain, in_user_order  # noqa: E402
from test_workers import (FLIPS, chain_problems, children, flip_all,  # noqa: E402
                          frames_until, on_worker, spread_clients, users_on)

LEASE_MS = 1000  # RCluster's


def xreads(rc):
    """Log readers on the cluster: clients whose last command was XREAD,
    summed over every node."""
    return sum(rc.cli(p, "CLIENT", "LIST").count("cmd=xread") for p in rc.ports)


def flip_events(got, users):
    """The status flips' events of users: a stream opened "now" on a worker
    starts where that worker's view of each shard's log ends, which may lag
    behind the users' connects (docs/internals/redis.md): those are left
    out."""
    return [e for e in got if e["data"].get("user_id") in users
            and e["data"]["type"] != "session.connected"
            and not (e["data"]["type"] == "user.online"
                     and e["data"].get("from") == "offline")]


def user_chain(events, start):
    """Each user's transitions must start where the previous ended, from
    start, and no event may come twice (by user, seq and type: seq is per
    shard, a user's events all in its shard)."""
    cur, seen, out = {}, set(), []
    for e in events:
        d = e["data"]
        k = (d.get("user_id"), d["seq"], d["type"])
        if k in seen:
            out.append(f"{k} twice")
        seen.add(k)
        if d["type"] not in ("user.online", "user.idle", "user.offline"):
            continue
        u = d["user_id"]
        was = cur.get(u, start)
        if d["from"] != was:
            out.append(f"{u}: seq {d['seq']} {d['from']}->{d['to']} while {was}")
        cur[u] = d["to"]
    return out


async def _eq(v, want):
    return v == want


async def names_of(d, prefix):
    probe = await spread_clients(d, prefix)
    for cs in probe.values():
        for c in cs:
            await c.close()
    return sorted(k for k in probe if k)


async def test_feed(t, cl):
    d, rc = cl.d[0], cl.rc
    # Logged when worker 1's store attaches, which may come after worker 2
    # answered the start's health check on the shared port.
    said = await wait_for(lambda: _eq("the log goes to the other workers by their "
                                      "interest" in d.stderr_text(), True), 10)
    t.check("feed: worker 1 passes every shard's log by interest", said is not None,
            d.stderr_tail(8))
    names = await names_of(d, "fp")
    t.check("feed: clients on both workers", len(names) == 2, str(names))
    if len(names) != 2:
        return
    w1, w2 = names
    ok = await wait_for(lambda: _eq(xreads(rc), SHARDS), 10)
    t.check(f"feed: the cluster serves one log reader per shard for the two workers "
            f"({SHARDS} XREADs)", ok is not None,
            f"{xreads(rc)} XREAD clients: " + " | ".join(
                ln for p in rc.ports for ln in rc.cli(p, "CLIENT", "LIST").splitlines()
                if "cmd=x" in ln))
    by = await users_on(d, "fu", names, 6)
    a, b = by[w1], by[w2]
    t.check("feed: six flipping users on each worker", len(a) == 6 and len(b) == 6,
            f"{len(a)} {len(b)}")
    if len(a) != 6 or len(b) != 6:
        return
    every = [c.user for c in a + b]
    # Each watcher watches users of the other worker, and one of its own.
    plan = {w1: [c.user for c in b] + [a[0].user], w2: [c.user for c in a] + [b[0].user]}
    watchers = {}
    for w, users in plan.items():
        x = await on_worker(d, f"fw-{w[-2:]}", w, watch=every)
        t.check(f"feed: a watcher lands on {w}", x is not None)
        if x is None:
            return
        await x.send({"type": "subscribe", "users": users, "id": "s"})
        snap = await x.expect_type("presence", 5, snapshot=True)
        t.check(f"feed: the watcher on {w} gets its snapshot", snap is not None)
        watchers[w] = x
    streams = [await SSE.open(d) for _ in range(2)]
    await asyncio.sleep(0.3)

    final = await flip_all(a + b)
    for w, users in plan.items():
        frames = await frames_until(watchers[w], users, FLIPS, 20)
        bad = []
        for u in users:
            n = sum(1 for m in frames for v in m["users"] if v["user_id"] == u)
            end, problems = chain_problems(frames, u)
            if n != FLIPS or problems or end != final:
                bad.append(f"{u}: {n} changes, ends {end}; {problems[:3]}")
        t.check(f"feed: the watcher on {w} sees each of its {len(users)} users' "
                f"{FLIPS} changes exactly once, in order", not bad, "; ".join(bad[:4]))
        stray = {v["user_id"] for m in frames for v in m["users"]} - set(users)
        t.check(f"feed: the watcher on {w} gets no change of a user it does not watch",
                not stray, str(stray))
    # Every flip makes a session.status and a user transition.
    want = 2 * FLIPS * len(every)
    for k, st in enumerate(streams):
        got, deadline = [], time.monotonic() + 20
        while time.monotonic() < deadline:
            got += await st.collect(0.4)
            if len(flip_events(got, every)) >= want:
                break
        got += await st.collect(0.4)
        st.close()
        mine = flip_events(got, every)
        problems = user_chain(mine, "online")
        order = in_user_order(mine)
        t.check(f"feed: event stream {k + 1} gets each user's {2 * FLIPS} events once, "
                f"in its shard's order", len(mine) == want and not problems and not order,
                f"{len(mine)}/{want}; {problems[:3]}; {order}")
    recs = await read_log_records(d)
    _cur, problems = chain(recs, set(every))
    t.check("feed: the log (every shard's, through the cursor) chains every user's "
            "transitions exactly once", not problems, "; ".join(problems[:5]))
    for x in watchers.values():
        await x.close()
    for c in a + b:
        await c.close()


async def test_kill9(t, cl):
    d, rc = cl.d[0], cl.rc
    names = await names_of(d, "kp")
    t.check("kill9: clients on both workers", len(names) == 2, str(names))
    if len(names) != 2:
        return
    w1, w2 = names
    by = await users_on(d, "ku", names, 4)
    a, b = by[w1], by[w2]
    t.check("kill9: four users on each worker", len(a) == 4 and len(b) == 4,
            f"{len(a)} {len(b)}")
    if len(a) != 4 or len(b) != 4:
        return
    ok = await wait_for(lambda: _eq(xreads(rc), SHARDS), 10)
    t.check("kill9: one log reader per shard before the kill", ok is not None,
            f"{xreads(rc)} XREAD clients")
    watched = [c.user for c in a + b]
    watcher = await on_worker(d, "kw", w2, watch=watched)
    t.check("kill9: a watcher lands on worker 2", watcher is not None)
    if watcher is None:
        return
    await watcher.send({"type": "subscribe", "users": watched, "id": 1})
    await watcher.expect_type("presence", 5, snapshot=True)
    m = re.search(r"worker 1 started \(pid (\d+)\)", d.stderr_text())
    reader_pid = int(m.group(1)) if m else None
    t.check("kill9: the supervisor logs worker 1's pid", reader_pid in children(d.pid))
    if reader_pid not in children(d.pid):
        return
    os.kill(reader_pid, signal.SIGKILL)
    for c in b:
        await c.send({"type": "status", "status": "idle"})
    frames, deadline = [], time.monotonic() + 10
    while time.monotonic() < deadline:
        frames += await watcher.changes(0.3)
        if all(any(v["user_id"] == c.user and v["status"] == "idle"
                   for mm in frames for v in mm["users"]) for c in b):
            break
    missing = [c.user for c in b if not any(v["user_id"] == c.user and v["status"] == "idle"
                                            for mm in frames for v in mm["users"])]
    t.check("kill9: worker 1 killed: changes on worker 2 right after (users in several "
            "shards) still reach the watcher on worker 2", not missing, str(missing))
    t.check("kill9: worker 2 logs that it reads the log itself now",
            "log feed ended; reading the log itself" in d.stderr_text(), d.stderr_tail(6))
    lost = [c.user for c in a]

    async def all_offline():
        try:
            st = await statuses(d, lost)
        except ConnectionError:
            return False
        return all(v == "offline" for v in st.values())
    took = await wait_for(all_offline, (LEASE_MS + 5000) / 1000, 0.05)
    t.check(f"kill9: worker 1's {len(lost)} users go offline (lease {LEASE_MS} ms)",
            took is not None, f"took {took}")
    t.note(f"kill9: offline after {1000 * (took or 0):.0f} ms")
    frames += await watcher.changes(0.5)
    for u in lost:
        n = sum(1 for mm in frames for v in mm["users"]
                if v["user_id"] == u and v["status"] == "offline")
        t.check(f"kill9: the watcher on worker 2 sees {u} go offline once", n == 1, f"{n}")
    st = await statuses(d, [c.user for c in b])
    t.check("kill9: the other worker's users stay (idle, as they said)",
            all(v == "idle" for v in st.values()), str(st))
    ok = await wait_for(lambda: _eq(xreads(rc), 2 * SHARDS), 10)
    t.check(f"kill9: after the restart each worker reads every shard's log "
            f"({2 * SHARDS} XREADs)", ok is not None, f"{xreads(rc)} XREAD clients")
    w = await on_worker(d, "kn", w1 + ".1")
    t.check("kill9: the replacement of worker 1 serves", w is not None)
    if w:
        await w.close()
    await asyncio.sleep(0.3)
    recs = await read_log_records(d)
    _cur, problems = chain(recs, set(watched))
    t.check("kill9: every user's transitions chain exactly once in the log", not problems,
            "; ".join(problems[:5]))
    gone = [e["data"] for e in recs if e["data"].get("type") == "session.disconnected"
            and e["data"].get("reason") == "instance_lost"
            and e["data"].get("user_id") in lost]
    t.check("kill9: each of its sessions ends once with reason instance_lost",
            len(gone) == len(lost), f"{len(gone)} for {len(lost)} users")
    await watcher.close()
    for c in b:
        await c.close()


SCENARIOS = [(name, fn, {"n": 1, "extra": {"--workers": "2"}})
             for name, fn in (("feed", test_feed), ("kill9", test_kill9))]


def main():
    if not shutil.which("redis-cli"):
        print("ok   - SKIP: redis-cli not installed")
        print("1 passed, 0 failed")
        return 0
    return run_scenarios(SCENARIOS, 120, cluster=RCluster)


if __name__ == "__main__":
    sys.exit(main())
