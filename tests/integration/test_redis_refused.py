#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes that Redis refuses without running them (OOM at maxmemory with
noeviction, MISCONF after a failed save, NOREPLICAS under
min-replicas-to-write, BUSY, LOADING): the instance holds its sessions, as
when it cannot reach Redis, and re-asserts them once Redis takes writes
again. Two presenced share one real redis-server; while Redis refuses every
write (maxmemory 1, then min-replicas-to-write 1), one instance ends a
session, connects another and changes a status; afterwards the other
instance's API shows each of those (no ghost left online, no session
missing), within a few heartbeats, and the refusals left a few log lines,
not one per write. Meanwhile the API still answers, from what Redis holds
(queries go by FCALL_RO). And an evicting maxmemory-policy is warned of."""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403
from test_redis_cluster import run_scenarios, user, wait_for  # noqa: E402

# A lease far longer than the refusals: nobody is reaped meanwhile, so only
# the re-assert can mend what the refused writes left out.
HB, LEASE = 300, 20000


async def refusal(t, cl, refuse, allow, what):
    A, B = cl.d
    tag = what.split()[0].lower()
    ann = await Client.connect(A, f"{tag}-ann")
    bob = await Client.connect(A, f"{tag}-bob")
    t.check(f"{what}: B sees ann and bob online", await wait_for(
        lambda: _both(B, tag, "online", "online"), 5) is not None)
    lines0 = A.stderr_text().count("redis:")
    cl.redis.cli(*refuse)
    # A write Redis refuses, then more behind it: an end, a status change,
    # a connect, and a burst of changes (each would have logged a line).
    await bob.ws.close()
    await ann.send({"type": "status", "status": "idle", "id": "i"})
    carol = await Client.connect(A, f"{tag}-carol")
    t.check(f"{what}: a client connecting meanwhile is welcomed",
            (carol.welcome or {}).get("type") == "welcome", carol.welcome)
    # One change every 50 ms for 2 s: each would go out as a call of its
    # own, and log its own refusal.
    for i in range(40):
        await carol.send({"type": "status", "status": "idle" if i % 2 == 0 else "online"})
        await asyncio.sleep(0.05)
    # Queries run by FCALL_RO, which Redis takes while it refuses writes:
    # B answers from what Redis holds (bob's end is not in it yet).
    j = await user(B, f"{tag}-bob")
    t.eq(f"{what}: while refused, B's API answers from what Redis holds",
         j.get("status"), "online")
    cl.redis.cli(*allow)
    ok = await wait_for(lambda: _final(B, tag), 6) is not None
    got = {u: (await user(B, f"{tag}-{u}")).get("status") for u in ("ann", "bob", "carol")}
    t.check(f"{what}: once Redis takes writes, B sees what A holds "
            f"(ann idle, bob offline, carol online)", ok, got)
    lines = A.stderr_text().count("redis:") - lines0
    t.check(f"{what}: the refusals logged a few lines, not one per write ({lines})",
            0 < lines <= 20, A.stderr_tail(8))
    await ann.close()
    await carol.close()


async def _both(B, tag, a, b):
    return ((await user(B, f"{tag}-ann")).get("status") == a and
            (await user(B, f"{tag}-bob")).get("status") == b)


async def _final(B, tag):
    return (await _both(B, tag, "idle", "offline") and
            (await user(B, f"{tag}-carol")).get("status") == "online")


async def test_refused(t, cl):
    await refusal(t, cl, ("CONFIG", "SET", "maxmemory", "1"),
                  ("CONFIG", "SET", "maxmemory", "0"), "OOM (maxmemory)")
    await refusal(t, cl, ("CONFIG", "SET", "min-replicas-to-write", "1"),
                  ("CONFIG", "SET", "min-replicas-to-write", "0"),
                  "NOREPLICAS (min-replicas-to-write)")


async def test_eviction_policy(t, cl):
    """An evicting maxmemory-policy is said at registration: with it Redis
    removes presence's keys silently when memory runs short, where
    noeviction refuses writes, which the instances handle (above)."""
    (A,) = cl.d
    await asyncio.sleep(0.5)
    t.check("noeviction (Redis's default): no warning about the policy",
            "maxmemory-policy" not in A.stderr_text(), A.stderr_tail(5))
    cl.redis.cli("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    A.stop()
    A.start()
    said = await wait_for(lambda: _said(A, "maxmemory-policy is not noeviction"), 5)
    t.check("allkeys-lru: the instance warns at registration, naming the policy",
            said is not None and "allkeys-lru" in A.stderr_text(), A.stderr_tail(5))


async def _said(d, what):
    return what in d.stderr_text()


SCENARIOS = [
    ("refused", test_refused, {"n": 2, "hb": HB, "lease": LEASE}),
    ("policy", test_eviction_policy, {"n": 1, "hb": HB, "lease": LEASE}),
]


if __name__ == "__main__":
    sys.exit(run_scenarios(SCENARIOS, 90))
