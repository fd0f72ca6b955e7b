#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Backend origins on the Redis store (docs/protocol.md section 5), two
presenced sharing one real redis-server:

  moved:   a backend holding 5,000 sessions through A loses its connection
           and reconnects to B, which takes its sessions over when it
           re-asserts them: no event, then or when A's resume window
           lapses (A's ends of sessions it no longer holds are refused);
  a_dies:  A is killed (-9) with the backend's sessions; the backend moves
           to B and re-asserts before A's lease runs out: no event, and
           A's reaping finds nothing of them to end;
  reaped:  A is killed and the backend does not come back: its users go
           offline (reason instance_lost), as any session of a dead
           instance."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403
from backendlib import Backend, EventTap  # noqa: E402
from test_redis_cluster import run_scenarios, statuses  # noqa: E402

N = 5000
WINDOW_MS = 4000


def mine(evs, prefix):
    return [e for e in evs if str(e.get("user_id", "")).startswith(prefix)]


async def all_status(d, users, want):
    for i in range(0, len(users), 1000):
        got = await statuses(d, users[i:i + 1000])
        bad = {u: s for u, s in got.items() if s != want}
        if bad:
            return bad
    return {}


async def wait_status(d, users, want, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not await all_status(d, users, want):
            return True
        await asyncio.sleep(0.1)
    return False


async def origin_sessions(d, name):
    r = await http(d, "GET", "/v1/origins")
    for o in (r.json() or {}).get("origins", []):
        if o.get("origin") == name:
            return o.get("sessions")
    return None


async def moved(t, cl):
    A, B = cl.d[0], cl.d[1]
    ss = [(f"mv-s{i}", f"mv-u{i}") for i in range(N)]
    users = [u for _, u in ss]
    b = await Backend.connect(A, "mv-app")
    acks = await b.open_many(ss)
    t.eq("A: 5,000 opens applied", sum(a.get("applied", 0) for a in acks), N)
    t.check("B sees them online", await wait_status(B, users, "online", 10))
    tap = await EventTap.open(B)
    b.abort()
    await asyncio.sleep(0.5)
    b = await Backend.connect(B, "mv-app")
    acks = await b.sync(ss)
    t.check("B: the re-assert applied every session, no error",
            sum(a.get("applied", 0) for a in acks) == N and not any("errors" in a for a in acks),
            [a for a in acks if "errors" in a][:1])
    t.eq("B holds the origin's 5,000 sessions", await origin_sessions(B, "mv-app"), N)
    await asyncio.sleep(WINDOW_MS / 1000 + 2.5)
    await tap.quiet(0.5)
    t.eq("moved to B: no event, not even after A's window", mine(tap.events(), "mv-"), [])
    t.eq("A no longer holds the origin", await origin_sessions(A, "mv-app"), None)
    t.eq("every user still online", await all_status(A, users, "online"), {})
    r = await http(B, "GET", "/v1/users/mv-u17/sessions")
    inst = [x.get("instance") for x in (r.json() or {}).get("sessions", [])]
    hz = (await http(B, "GET", "/healthz", auth=False)).json() or {}
    t.eq("the session is B's now", inst, [hz.get("instance")])
    await b.send({"type": "bye"})
    t.check("bye on B: the users go offline", await wait_status(A, users, "offline", 15))
    tap.close()


async def held_by_a(t, cl, prefix, n):
    """A backend holding n sessions through A, seen online on B; then A is
    killed (-9) with the backend: (sessions, users, events tap on B)."""
    A, B = cl.d[0], cl.d[1]
    ss = [(f"{prefix}-s{i}", f"{prefix}-u{i}") for i in range(n)]
    users = [u for _, u in ss]
    b = await Backend.connect(A, f"{prefix}-app")
    await b.open_many(ss)
    t.check(f"{prefix}: B sees them online", await wait_status(B, users, "online", 10))
    tap = await EventTap.open(B)
    # B's stream may still be delivering the connects (its feed reads the
    # log after the users' state is readable): what counts comes after A's
    # death, so the tap starts once it has gone quiet.
    await tap.quiet(0.5)
    tap.mark()
    A.signal(signal.SIGKILL)
    b.abort()
    return ss, users, tap


async def a_dies(t, cl):
    B = cl.d[1]
    ss, users, tap = await held_by_a(t, cl, "ad", 1000)
    b = await Backend.connect(B, "ad-app")
    acks = await b.sync(ss)
    t.check("B took the sessions over before A's lease ran out",
            sum(a.get("applied", 0) for a in acks) == len(ss) and not any("errors" in a for a in acks),
            acks[-1])
    await asyncio.sleep(cl.lease_ms / 1000 + 3)
    await tap.quiet(0.5)
    evs = mine(tap.events(), "ad-")
    t.eq("A died, the backend moved: no session or user event for its users",
         [e for e in evs if e["type"] != "cleanup"], [])
    t.eq("every user still online", await all_status(B, users, "online"), {})
    tap.close()
    await b.close()


async def reaped(t, cl):
    B = cl.d[1]
    _ss, users, tap = await held_by_a(t, cl, "rp", 500)
    t.check("a dead instance's backend sessions are reaped: offline",
            await wait_status(B, users, "offline", cl.lease_ms / 1000 + 10))
    await tap.quiet(0.5)
    offs = [e for e in mine(tap.events(), "rp-") if e["type"] == "user.offline"]
    t.check("... once each, reason instance_lost",
            len(offs) == len(users) and all(e["reason"] == "instance_lost" for e in offs),
            (len(offs), {e["reason"] for e in offs}))
    tap.close()


async def http_ttl(t, cl):
    """HTTP sessions behind a load balancer: renewals alternate between A
    and B; the session lives as long as they come, with no event, and ends
    once after the last."""
    A, B = cl.d[0], cl.d[1]
    tap = await EventTap.open(B)
    body = json.dumps({"user": "lb-user", "ttl_ms": 1500})
    codes = []
    for i in range(8):
        r = await http((A, B)[i % 2], "PUT", "/v1/sessions/lb-1", body=body)
        codes.append(r.status)
        await asyncio.sleep(0.6)
    t.check("renewals on either instance accepted", all(c in (200, 201) for c in codes), codes)
    t.eq("alive after 4.8 s of 1.5 s TTLs renewed on A and B", (await statuses(A, ["lb-user"]))["lb-user"],
         "online")
    t.check("then offline once the renewals stop", await wait_status(A, ["lb-user"], "offline", 8))
    await tap.quiet(0.5)
    evs = [(e["type"], e["reason"]) for e in mine(tap.events(), "lb-user")]
    t.eq("one connect and one timeout end, nothing between",
         evs, [("session.connected", "connect"), ("user.online", "connect"),
               ("session.disconnected", "timeout"), ("user.offline", "timeout")])
    tap.close()


SCENARIOS = [
    ("moved", moved, {"n": 2, "extra": {"--origin-resume-ms": str(WINDOW_MS)}}),
    ("a_dies", a_dies, {"n": 2, "lease": 2000, "extra": {"--origin-resume-ms": str(WINDOW_MS)}}),
    ("reaped", reaped, {"n": 2, "extra": {"--origin-resume-ms": str(WINDOW_MS)}}),
    ("http_ttl", http_ttl, {"n": 2, "extra": {"--offline-grace-ms": "0"}}),
]


if __name__ == "__main__":
    sys.exit(run_scenarios(SCENARIOS, 90))
