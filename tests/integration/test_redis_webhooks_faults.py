#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""
Webhooks with the Redis store under faults (docs/webhooks.md, "Several
instances (Redis store)" and "Backlog and the gap notice"): presenced
instances on one redis-server this test starts, one endpoint configured on
each, one HTTP receiver on 127.0.0.1 whose answers the test controls.

  redis_away:     Redis SIGSTOPped past the lease and the command timeout,
                  first while the endpoint is up to date, then while events
                  flow: no instance claims to own the endpoint while Redis
                  is away; after SIGCONT exactly one owns it again, every
                  event of the log (read back with GET /v1/events) is
                  delivered, none that was acknowledged with a 2xx is
                  delivered again except the one batch in flight when Redis
                  went away (the documented at-least-once), in order.
  redis_restart:  Redis shut down with its data saved and started again:
                  the same `instance`, delivery resumes where it stopped,
                  nothing repeated or skipped. Then Redis restarted empty:
                  a new `instance` (a new stream), every event after the new
                  claim delivered once under it, none under the old one.
  flushall:       Redis FLUSHALLed (a loss of every key, as a restart
                  without persistence), first with every instance stopped
                  and the one not owning the endpoint continued first (its
                  overdue claim reaches the empty Redis before it
                  registers again), then three times while events flow (the
                  owner reads the new log before it learns that its lease
                  is gone): after each, a new `instance`; no gap notice
                  ever (the new log's numbers jump a million past the old
                  ones, which is no gap), the lost-events and gaps counters
                  stay 0 on every instance, and delivery goes on from the
                  end of the new log: every event after the new owner's
                  cursor, once, under the new `instance`.
  owner_sigstop:  the owning presenced SIGSTOPped past its lease while
                  events flow: another instance takes over and delivers;
                  SIGCONT: the old owner is fenced (the cursor in Redis never
                  moves back, nothing it delivered is delivered again after
                  it resumes, duplicates only of the batch in flight at the
                  stop), and exactly one instance owns the endpoint.
  trim:           the receiver answers 500 while events accumulate, the
                  stream is trimmed (XTRIM presence:log MINID) past the
                  endpoint's cursor; when the receiver answers 200 again:
                  the batch in hand as it was, then one gap notice
                  {after, oldest, missed} starting at the oldest event the
                  API still returns, then every later event, once.

Uses the Redis and cluster helpers of test_redis_cluster.py and the
ownership helpers of test_redis_webhooks.py.
Run: /usr/bin/python3 tests/integration/test_redis_webhooks_faults.py --presenced PATH
"""

import asyncio
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Client, HookReceiver, http  # noqa: E402
from test_redis_cluster import read_log, run_scenarios, wait_for  # noqa: E402
from test_redis_webhooks import (NAME, SECRET, cursor, owner_flags,  # noqa: E402
                                 signed, the_owner)

BATCH_MAX = 10
TIMEOUT_MS = 1000  # --redis-timeout-ms of run_scenarios' clusters


class Receiver(HookReceiver):
    """The suite's endpoint (harness.HookReceiver) with its name and secret."""

    def spec(self):
        return f"url={self.url()},secret={SECRET},name={NAME}"


def seqs(rec):
    return [e["seq"] for e in rec["b"]["events"]]


def acked(recs):
    return [r for r in recs if 200 <= r["status"] < 300]


def repeated(rx, since):
    """Seqs in batches acknowledged at or after `since` that an earlier
    acknowledged batch already held, and for each the index (among the
    acknowledged batches) of the batch that held it first."""
    first, dup, where = {}, [], []
    for i, r in enumerate(acked(rx.records())):
        for x in seqs(r):
            if x not in first:
                first[x] = i
            elif r["t"] >= since:
                dup.append(x)
                where.append(first[x])
    return dup, where


def one_batch(dup, where):
    """The documented duplication: one batch (<= --webhook-batch-max
    events) sent again, once: every repeated event was first delivered in
    the same earlier batch."""
    return not dup or (len(set(where)) == 1 and len(dup) == len(set(dup))
                       and len(dup) <= BATCH_MAX)


async def log_after(d, start, quiet=0.5):
    """The cluster's events after seq `start`, through GET /v1/events on d."""
    await asyncio.sleep(quiet)
    return [e for e in await read_log(d) if "type" in e and e["seq"] > start]


async def wait_delivered(rx, want, timeout=10.0, instance=None):
    """Wait until every seq in `want` was acknowledged (under `instance`)."""
    want = set(want)

    async def done():
        got = set()
        for r in acked(rx.records()):
            if instance is None or r["b"]["instance"] == instance:
                got.update(seqs(r))
        return want <= got
    return await wait_for(done, timeout, 0.05) is not None


def first_copies(rx, lo, instance=None):
    """Acknowledged events with seq > lo in arrival order, first copy of
    each, and all copies (with duplicates)."""
    out, allc, seen = [], [], set()
    for r in acked(rx.records()):
        if instance is not None and r["b"]["instance"] != instance:
            continue
        for e in r["b"]["events"]:
            if e["seq"] <= lo:
                continue
            allc.append(e["seq"])
            if e["seq"] not in seen:
                seen.add(e["seq"])
                out.append(e)
    return out, allc


def check_log_delivered(t, label, rx, log, lo, instance=None):
    """Every event of `log` (seq > lo) delivered, field for field, first
    copies in order, nothing that is not in the log."""
    evs, _ = first_copies(rx, lo, instance)
    got = [e["seq"] for e in evs]
    want = [e["seq"] for e in log]
    t.check(f"{label}: every event of the log (GET /v1/events) was delivered, none skipped",
            set(want) <= set(got), f"missing {sorted(set(want) - set(got))[:10]}")
    t.check(f"{label}: nothing delivered that the log does not hold",
            set(got) <= set(want), f"extra {sorted(set(got) - set(want))[:10]}")
    t.check(f"{label}: first deliveries in log order", got == sorted(got), str(got[:40]))
    t.check(f"{label}: the delivered events are the log's, field for field",
            evs == log, "differ")


async def churn(ds, prefix, n, each=3.0, retry_for=10.0):
    """n users connect and leave, spread over the instances (4 events each);
    each step bounded by `each`. A refused or slow connect is tried again
    for `retry_for` s (an instance may still be re-asserting after a Redis
    restart, slowly under ASan on a loaded machine); 0 while Redis is
    meant to be away. Returns the users that never got through, with why."""
    failed = []
    for i in range(n):
        user, deadline = f"{prefix}{i}", time.monotonic() + retry_for
        while True:
            try:
                c = await asyncio.wait_for(Client.connect(ds[i % len(ds)], user), each)
                await asyncio.wait_for(c.ws.close(), each)
                break
            except Exception as e:  # noqa: BLE001 (any failure is retried or reported)
                if time.monotonic() >= deadline:
                    failed.append(f"{user}: {e!r}")
                    break
                await asyncio.sleep(0.2)
    return failed


async def churn_delivered(cl, rx, prefix, n, start):
    """A churn, then whether all of the log after `start` was acknowledged
    and the owner stored the last event as its cursor."""
    await churn(cl.d, prefix, n)
    log = await log_after(cl.d[0], start)
    ok = await wait_delivered(rx, [e["seq"] for e in log])
    return ok and await wait_for(lambda: _cursor_is(cl, log[-1]["seq"]), 3) is not None


async def check_resumed(t, cl, rx, label, prefix, start, why_no_dup):
    """After Redis came back: a churn of 6 users is delivered, nothing
    acknowledged before is delivered again, and every event of the log
    after `start` reached the receiver."""
    await churn(cl.d, prefix, 6)
    log = await log_after(cl.d[0], start)
    t.check(f"{label}: delivery resumed up to the last event",
            await wait_delivered(rx, [e["seq"] for e in log]))
    await asyncio.sleep(0.3)
    dup, _ = repeated(rx, 0)
    t.eq(f"{label}: {why_no_dup}", dup, [])
    check_log_delivered(t, label, rx, log, start)


async def no_owner(ds):
    return all(v == 0 for v in await owner_flags(ds))


async def metric(d, family):
    r = await http(d, "GET", "/metrics", timeout=2.0)
    m = re.search(r'^' + family + r'\{endpoint="' + NAME + r'"\} (\S+)$', r.body.decode(), re.M)
    return float(m.group(1)) if m else None


def log_id(cl):
    return cl.redis.cli("GET", "presence:wh:log-id").strip()


# --------------------------------------------------------------------------


async def test_redis_away(t, cl, rx):
    owner, _ = await the_owner(cl.d)
    t.check("away: one instance owns the endpoint", owner is not None)
    start = cursor(cl)
    t.check("away: the cursor is stored", start is not None)
    t.check("away: delivered and the cursor stored before Redis goes away",
            await churn_delivered(cl, rx, "ra-a", 8, start))
    iid = log_id(cl)

    # 1. Redis stopped while the endpoint is up to date.
    os.kill(cl.redis.proc.pid, signal.SIGSTOP)
    t_stop = time.monotonic()
    try:
        gone = await wait_for(lambda: no_owner(cl.d), (cl.lease_ms + TIMEOUT_MS + 2000) / 1000)
        t.check("away: while Redis is stopped no instance claims the endpoint "
                "(owner 0 everywhere within lease + command timeout)",
                gone is not None and gone <= (cl.lease_ms + TIMEOUT_MS + 500) / 1000,
                f"took {gone}")
        await asyncio.sleep(max(0, (cl.lease_ms + TIMEOUT_MS + 600) / 1000
                                - (time.monotonic() - t_stop)))
        t.eq("away: still no owner past lease + command timeout",
             await owner_flags(cl.d), [0] * len(cl.d))
    finally:
        os.kill(cl.redis.proc.pid, signal.SIGCONT)
    new, took = await the_owner(cl.d, 5.0)
    t.check("away: exactly one owner again after SIGCONT", new is not None)
    t.note(f"Redis back: one owner after {1000 * (took or 0):.0f} ms")
    await check_resumed(t, cl, rx, "away", "ra-b", start,
                        "no event acknowledged before is delivered again "
                        "(nothing was in flight)")

    # 2. Redis stopped while events flow (a batch may be in flight).
    mark = time.monotonic()
    stop = asyncio.Event()

    async def load():
        n = 0
        while not stop.is_set():
            await churn(cl.d, f"ra-l{n}-", 2, each=1.0, retry_for=0)
            n += 1
    rx.delay = 0.2  # answers take a while: the stop likely catches one in flight
    loader = asyncio.ensure_future(load())
    await asyncio.sleep(0.8)
    os.kill(cl.redis.proc.pid, signal.SIGSTOP)
    t_stop = time.monotonic()
    try:
        await asyncio.sleep(0.3)
        stop.set()
        gone = await wait_for(lambda: no_owner(cl.d), (cl.lease_ms + TIMEOUT_MS + 2000) / 1000)
        t.check("away (load): no owner while Redis is stopped", gone is not None, f"{gone}")
        await asyncio.sleep(0.3)
    finally:
        os.kill(cl.redis.proc.pid, signal.SIGCONT)
    t_cont = time.monotonic()
    rx.delay = 0.0
    n_away = len([r for r in rx.records(t_stop) if r["t"] < t_cont])
    late = [(r["b"]["first_seq"], round(r["t"] - t_stop, 3)) for r in rx.records(t_stop)
            if t_stop + cl.lease_ms / 1000 + 0.3 < r["t"] < t_cont]
    t.eq("away (load): no request sent once the lease ran out while Redis was stopped",
         late, [])
    await asyncio.wait_for(loader, 10)
    new, _ = await the_owner(cl.d, 5.0)
    t.check("away (load): exactly one owner again after SIGCONT", new is not None)
    await churn(cl.d, "ra-c", 4)
    log = await log_after(cl.d[0], start)
    t.check("away (load): delivery resumed up to the last event",
            await wait_delivered(rx, [e["seq"] for e in log]))
    await asyncio.sleep(0.3)
    dup, earlier = repeated(rx, mark)
    t.check(f"away (load): repeated only the batch in flight when Redis went away "
            f"(at most {BATCH_MAX} events, all of one earlier batch)",
            one_batch(dup, earlier), f"{len(dup)} repeated: {dup[:20]}")
    t.note(f"Redis away under load: {len(dup)} events delivered twice; "
           f"{n_away} requests while stopped")
    check_log_delivered(t, "away (load)", rx, log, start)
    bs = rx.records()
    t.check("away: every request signed", all(signed(r["h"], r["raw"]) for r in bs))
    t.eq("away: one `instance` throughout (Redis kept its data)",
         {r["b"]["instance"] for r in bs}, {iid})
    t.eq("away: the cursor in Redis is the last event", cursor(cl), log[-1]["seq"])
    f = await owner_flags(cl.d)
    t.eq("away: presenced_webhook_owner settles to exactly one instance", sorted(f),
         [0] * (len(cl.d) - 1) + [1])


async def _cursor_is(cl, v):
    return cursor(cl) == v


async def test_redis_restart(t, cl, rx):
    owner, _ = await the_owner(cl.d)
    t.check("restart: one instance owns the endpoint", owner is not None)
    start = cursor(cl)
    t.check("restart: delivered and the cursor stored before the restart",
            await churn_delivered(cl, rx, "rr-a", 6, start))
    iid = log_id(cl)

    # 1. Shut down with its data saved, started again on the same files.
    cl.redis.cli("SHUTDOWN", "SAVE")
    cl.redis.proc.wait(5)
    gone = await wait_for(lambda: no_owner(cl.d), (cl.lease_ms + 2000) / 1000)
    t.check("restart: no owner while Redis is down", gone is not None, f"{gone}")
    cl.redis.start()
    t.eq("restart (data kept): the log id survived the restart", log_id(cl), iid)
    new, took = await the_owner(cl.d, 8.0)
    t.check("restart (data kept): exactly one owner again", new is not None)
    t.note(f"Redis restarted with its data: one owner after {1000 * (took or 0):.0f} ms")
    await check_resumed(t, cl, rx, "restart (data kept)", "rr-b", start,
                        "no event delivered twice (nothing was in flight)")
    t.eq("restart (data kept): one `instance` throughout",
         {r["b"]["instance"] for r in rx.records()}, {iid})

    # 2. Restarted empty, twice: a new stream each time. The first script
    # call on the empty Redis (which sets the log's id) comes from d[0]
    # alone, the others stopped meanwhile: the second time d[0] sets the id
    # again, so an instance offering the id it set before is caught
    # whichever instance set the first one.
    prev = iid
    for rnd in (1, 2):
        label = f"restart (empty, {rnd})"
        cl.redis.kill()
        try:
            os.unlink(os.path.join(cl.redis.dir, "dump.rdb"))
        except OSError:
            pass
        t_empty = time.monotonic()
        for d in cl.d[1:]:
            d.signal(signal.SIGSTOP)
        try:
            cl.redis.start()
            ok = await wait_for(lambda: _has_log_id(cl), 5, 0.01)
        finally:
            for d in cl.d[1:]:
                d.signal(signal.SIGCONT)
        t.check(f"{label}: the log's id set again", ok is not None)
        new, took = await the_owner(cl.d, 8.0)
        t.check(f"{label}: exactly one owner", new is not None)
        t.note(f"Redis restarted empty: one owner after {1000 * (took or 0):.0f} ms")
        ok = await wait_for(lambda: _has_cursor(cl), 3)
        t.check(f"{label}: the new owner stored a cursor", ok is not None)
        await asyncio.sleep(1.0)  # the instances re-assert meanwhile
        c0 = cursor(cl)
        nid = log_id(cl)
        t.check(f"{label}: a new log id, so a new `instance` (a new stream)",
                nid and nid != prev, f"{nid} after {prev}")
        failed = await churn(cl.d, f"rr-c{rnd}-", 6)
        t.eq(f"{label}: every instance admits sessions again", failed, [])
        log2 = await log_after(cl.d[0], c0)
        # Each user's whole cycle; a connect retried after a timeout may
        # add a second one, so users are counted, not events.
        cycles = {e["user_id"] for e in log2 if e.get("type") == "user.offline"
                  and e["user_id"].startswith(f"rr-c{rnd}-")}
        t.eq(f"{label}: the new log holds the new events (each user online, then offline)",
             sorted(cycles), [f"rr-c{rnd}-{i}" for i in range(6)])
        t.check(f"{label}: delivery resumed, under the new `instance`",
                await wait_delivered(rx, [e["seq"] for e in log2], instance=nid))
        await asyncio.sleep(0.3)
        check_log_delivered(t, label, rx, log2, c0, instance=nid)
        _, allc = first_copies(rx, c0, nid)
        t.check(f"{label}: each event of the new stream once", len(allc) == len(set(allc)),
                f"{len(allc)} copies of {len(set(allc))}")
        before = {(r["b"]["instance"], x) for r in acked(rx.records()) if r["t"] < t_empty
                  for x in seqs(r)}
        clash = sorted(x for r in acked(rx.records(t_empty)) for x in seqs(r)
                       if (r["b"]["instance"], x) in before)
        t.eq(f"{label}: a receiver deduplicating on (instance, seq) drops none of the "
             "new stream's events", clash, [])
        t.eq(f"{label}: no gap notice (a new stream starts at its end)",
             [r["b"]["gap"] for r in rx.records(t_empty) if "gap" in r["b"]], [])
        late = [r["b"]["instance"] for r in rx.records(t_empty) if r["b"]["instance"] != nid]
        t.eq(f"{label}: nothing delivered under an earlier `instance` after the restart",
             late, [])
        prev = nid
    f = await owner_flags(cl.d)
    t.eq("restart: presenced_webhook_owner settles to exactly one instance", sorted(f),
         [0] * (len(cl.d) - 1) + [1])


async def test_flushall(t, cl, rx):
    owner, _ = await the_owner(cl.d)
    t.check("flushall: one instance owns the endpoint", owner is not None)
    start = cursor(cl)
    t.check("flushall: delivered and the cursor stored before the first FLUSHALL",
            await churn_delivered(cl, rx, "fa-a", 4, start))
    ids = [log_id(cl)]

    # 1. Every instance stopped across the FLUSHALL, the owner the longest:
    # the other's claim and heartbeat are both due when it runs again, so
    # its claim reaches the emptied Redis before it has registered again.
    others = [d for d in cl.d if d is not owner]
    for d in cl.d:
        d.signal(signal.SIGSTOP)
    try:
        t.eq("flushall 0: FLUSHALL", cl.redis.cli("FLUSHALL").strip(), "OK")
        await asyncio.sleep(0.5)  # > --redis-heartbeat-ms
        for d in others:
            d.signal(signal.SIGCONT)
        new, _ = await the_owner(others, 5.0)
        t.check("flushall 0: the instance continued first owns the endpoint",
                new is not None)
    finally:
        for d in cl.d:
            d.signal(signal.SIGCONT)
    ids.append(log_id(cl))
    t.check("flushall 0: a new log id, so a new `instance` (a new stream)",
            ids[-1] and ids[-1] not in ids[:-1], str(ids))
    c0 = cursor(cl)
    await churn(cl.d, "fa-b", 4)
    log = await log_after(cl.d[0], c0 or 0)
    t.check("flushall 0: delivery goes on, under the new `instance`",
            await wait_delivered(rx, [e["seq"] for e in log], instance=ids[-1]))

    # 2. FLUSHALL while events flow.
    stop = asyncio.Event()

    async def load():
        n = 0
        while not stop.is_set():
            # Sessions are refused for a moment after each FLUSHALL (the
            # instances register again): not retried, the load goes on.
            await churn(cl.d, f"fa-l{n}-", 2, each=1.0, retry_for=0)
            n += 1
    loader = asyncio.ensure_future(load())
    try:
        for rnd in (1, 2, 3):
            await asyncio.sleep(1.0)  # events flow, the owner delivers them
            t.eq(f"flushall {rnd}: FLUSHALL", cl.redis.cli("FLUSHALL").strip(), "OK")
            ok = await wait_for(lambda: _has_cursor(cl), 5)
            t.check(f"flushall {rnd}: an owner again, with a cursor stored", ok is not None)
            ids.append(log_id(cl))
            t.check(f"flushall {rnd}: a new log id, so a new `instance` (a new stream)",
                    ids[-1] and ids[-1] not in ids[:-1], str(ids))
    finally:
        stop.set()
        await asyncio.wait_for(loader, 10)
    await asyncio.sleep(1.0)  # the instances re-assert meanwhile
    new, _ = await the_owner(cl.d, 5.0)
    t.check("flushall: exactly one owner at the end", new is not None)
    c0 = cursor(cl)
    await churn(cl.d, "fa-z", 4)
    log = await log_after(cl.d[0], c0)
    t.check("flushall: delivery goes on after the last FLUSHALL, under the new `instance`",
            await wait_delivered(rx, [e["seq"] for e in log], instance=ids[-1]))
    await asyncio.sleep(0.3)
    check_log_delivered(t, "flushall", rx, log, c0, instance=ids[-1])
    _, allc = first_copies(rx, c0, ids[-1])
    t.check("flushall: each event of the last stream once", len(allc) == len(set(allc)),
            f"{len(allc)} copies of {len(set(allc))}")
    gaps = [(r["b"]["instance"], r["b"]["gap"]) for r in rx.records() if "gap" in r["b"]]
    t.eq("flushall: no gap notice was sent (the new log's jump is no gap)", gaps, [])
    for fam in ("presenced_webhook_gaps_total", "presenced_webhook_lost_events_total",
                "presenced_webhook_behind"):
        t.eq(f"flushall: {fam} is 0 on every instance",
             [await metric(d, fam) for d in cl.d], [0.0] * len(cl.d))
    f = await owner_flags(cl.d)
    t.eq("flushall: presenced_webhook_owner settles to exactly one instance", sorted(f),
         [0] * (len(cl.d) - 1) + [1])


async def _has_log_id(cl):
    return bool(log_id(cl))


async def _has_cursor(cl):
    return cursor(cl) is not None


async def test_owner_sigstop(t, cl, rx):
    owner, _ = await the_owner(cl.d)
    t.check("sigstop: one owner", owner is not None)
    others = [d for d in cl.d if d is not owner]
    start = cursor(cl)
    rx.delay = 0.2  # answers take a while: the stop likely catches one in flight
    samples = []
    stop = asyncio.Event()

    async def sample():
        while not stop.is_set():
            c = await asyncio.get_running_loop().run_in_executor(None, cursor, cl)
            if c is not None:
                samples.append(c)
            await asyncio.sleep(0.02)

    async def load():
        n = 0
        while not stop.is_set():
            await churn(others, f"os-{n}-", 2, each=2.0, retry_for=0)
            n += 1
    tasks = [asyncio.ensure_future(sample()), asyncio.ensure_future(load())]
    stopped = False
    try:
        await asyncio.sleep(1.0)
        owner.signal(signal.SIGSTOP)
        stopped = True
        t_stop = time.monotonic()
        new, took = await the_owner(others, (cl.lease_ms + 3000) / 1000)
        t.check(f"sigstop: another instance owns the endpoint within lease + 1 s "
                f"({cl.lease_ms + 1000} ms)",
                new is not None and took <= (cl.lease_ms + 1000) / 1000, f"took {took}")
        t.note(f"owner stopped: new owner after {1000 * (time.monotonic() - t_stop):.0f} ms")
        n0 = len(acked(rx.records(time.monotonic())))
        await asyncio.sleep(1.5)
        t.check("sigstop: the new owner delivers while the old one is stopped",
                len(acked(rx.records(time.monotonic() - 1.5))) > n0)
        t_cont = time.monotonic()
        owner.signal(signal.SIGCONT)
        stopped = False
        await asyncio.sleep(1.5)  # the old owner runs again, events keep flowing
    finally:
        if stopped:
            owner.signal(signal.SIGCONT)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    rx.delay = 0.0
    log = await log_after(others[0], start)
    t.check("sigstop: every event delivered", await wait_delivered(rx, [e["seq"] for e in log]))
    await asyncio.sleep(0.5)
    back = [i for i in range(1, len(samples)) if samples[i] < samples[i - 1]]
    t.check("sigstop: the cursor in Redis never moved back",
            not back, str([(samples[i - 1], samples[i]) for i in back[:5]]))
    t.eq("sigstop: the cursor ends at the last event", cursor(cl), log[-1]["seq"])
    dup_after, _ = repeated(rx, t_cont)
    t.eq("sigstop: after SIGCONT nothing acknowledged before is delivered again",
         dup_after, [])
    dup, earlier = repeated(rx, 0)
    t.check(f"sigstop: repeated only the batch in flight at the stop "
            f"(at most {BATCH_MAX} events, all of one earlier batch)",
            one_batch(dup, earlier), f"{len(dup)} repeated: {dup[:20]}")
    t.note(f"owner SIGSTOP: {len(dup)} events delivered twice")
    check_log_delivered(t, "sigstop", rx, log, start)
    t.check("sigstop: every request signed",
            all(signed(r["h"], r["raw"]) for r in rx.records()))
    f = await owner_flags(cl.d)
    t.eq("sigstop: exactly one instance owns the endpoint afterwards", sorted(f),
         [0] * (len(cl.d) - 1) + [1])
    t.eq("sigstop: and it is not the fenced one", f[cl.d.index(owner)], 0)
    t.check("sigstop: the old owner says it stopped delivering",
            "stops delivering it" in owner.stderr_text(), owner.stderr_tail(5))
    r = await http(owner, "GET", "/healthz")
    t.eq("sigstop: the old owner is healthy again", r.status, 200)


async def test_trim(t, cl, rx):
    owner, _ = await the_owner(cl.d)
    t.check("trim: one owner", owner is not None)
    start = cursor(cl)
    rx.status = 500
    t_down = time.monotonic()
    await churn(cl.d, "tr-a", 15)  # 60 events
    ok = await wait_for(lambda: _failed(rx, t_down, 2), 5)
    t.check("trim: the owner retries while the receiver answers 500", ok is not None)
    held = {(r["b"]["first_seq"], r["b"]["last_seq"]) for r in rx.records(t_down)}
    t.eq("trim: the retries repeat one batch", len(held), 1)
    (h_first, h_last), = held if len(held) == 1 else {(0, 0)}
    t.eq("trim: the batch in hand starts after the cursor", h_first, start + 1)
    log = await log_after(cl.d[0], start, 0.2)
    last = log[-1]["seq"]
    trim_to = last - 10
    t.check("trim: the log holds more than the batch in hand", trim_to > h_last + 2,
            f"{trim_to} {h_last}")
    n = cl.redis.cli("XTRIM", "presence:log", "MINID", str(trim_to)).strip()
    t.check("trim: XTRIM presence:log MINID removed entries", n.isdigit() and int(n) > 0, n)
    full = [e for e in await read_log(cl.d[0]) if "type" in e]
    oldest = full[0]["seq"]
    t.check("trim: GET /v1/events now starts past the batch in hand",
            h_last + 1 < oldest <= trim_to, f"oldest {oldest}, held {h_last}, trim {trim_to}")
    await asyncio.sleep(0.5)  # more failed attempts after the trim
    rx.status = 200
    t_up = time.monotonic()
    ok = await wait_delivered(rx, [e["seq"] for e in full if e["seq"] > h_last])
    t.check("trim: delivery goes on once the receiver answers 200", ok)
    await churn(cl.d, "tr-b", 3)  # and continues normally afterwards
    after = [e for e in await log_after(cl.d[0], 0) if e["seq"] >= oldest]
    ok = await wait_delivered(rx, [e["seq"] for e in after])
    t.check("trim: later events delivered too", ok)
    await asyncio.sleep(0.3)
    good = acked(rx.records(t_up))
    t.check("trim: the first 2xx delivery is the batch in hand, as it was (no gap notice)",
            good and (good[0]["b"]["first_seq"], good[0]["b"]["last_seq"]) == (h_first, h_last)
            and "gap" not in good[0]["b"],
            str(good[0]["b"] if good else None)[:300])
    gap = good[1]["b"] if len(good) > 1 else {}
    want = {"after": h_last, "oldest": oldest, "missed": oldest - h_last - 1}
    t.eq("trim: the next delivery carries the gap notice {after, oldest, missed}",
         gap.get("gap"), want)
    t.check("trim: ... and starts at the oldest event still in the log",
            gap.get("first_seq") == oldest and gap.get("events")
            and gap["events"][0]["seq"] == oldest, str(gap)[:300])
    t.check("trim: the gap notice's headers say the same range",
            len(good) > 1 and good[1]["h"].get("presence-seq-first") == str(oldest))
    t.eq("trim: exactly one gap notice",
         sum(1 for r in rx.records() if r["status"] == 200 and "gap" in r["b"]), 1)
    lost = [s for r in acked(rx.records()) for s in seqs(r) if h_last < s < oldest]
    t.eq("trim: no event of the trimmed range is delivered", lost, [])
    check_log_delivered(t, "trim", rx, after, oldest - 1)
    _, allc = first_copies(rx, start)
    t.check("trim: no event delivered twice", len(allc) == len(set(allc)), str(len(allc)))
    t.eq("trim: presenced_webhook_gaps_total on the owner",
         await metric(owner, "presenced_webhook_gaps_total"), 1.0)
    t.eq("trim: presenced_webhook_lost_events_total on the owner",
         await metric(owner, "presenced_webhook_lost_events_total"), float(want["missed"]))
    t.eq("trim: presenced_webhook_behind back to 0",
         await metric(owner, "presenced_webhook_behind"), 0.0)
    t.eq("trim: the cursor in Redis is the last event", cursor(cl), after[-1]["seq"])
    f = await owner_flags(cl.d)
    t.eq("trim: still exactly one owner", sorted(f), [0] * (len(cl.d) - 1) + [1])


async def _failed(rx, since, n):
    return sum(1 for r in rx.records(since) if r["status"] == 500) >= n


SCENARIOS = [
    ("redis_away", test_redis_away, {"n": 2}),
    ("redis_restart", test_redis_restart, {"n": 2}),
    ("flushall", test_flushall, {"n": 2}),
    ("owner_sigstop", test_owner_sigstop, {}),
    ("trim", test_trim, {"n": 2}),
]


def main():
    def setup(kw):
        rx = Receiver()
        extra = {"--webhook": rx.spec(), "--webhook-batch-ms": "50",
                 "--webhook-batch-max": str(BATCH_MAX),
                 "--webhook-retry-min-ms": "100", "--webhook-retry-max-ms": "400",
                 "--webhook-timeout-ms": "3000"}
        return extra, (rx,), rx.stop
    return run_scenarios(SCENARIOS, 55, setup)


if __name__ == "__main__":
    sys.exit(main())
