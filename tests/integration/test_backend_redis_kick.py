#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""DELETE /v1/sessions/{id} of sessions a backend reported (docs/api.md,
docs/protocol.md sections 5.4 and 5.5) with the Redis store, two presenced
on one real redis-server: asked on the instance that does not hold the
session, as a load balancer may send it, the kick ends it (reason kicked)
and the backend connection holding it is told (`ended`). Before, the 200
said "kicked" and the session stayed.

  http:     a PUT /v1/sessions/{id} session held by A, kicked on B;
  backend:  a GET /v1/backend session held by A, kicked on B."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403
from backendlib import Backend, EventTap  # noqa: E402
from test_redis_cluster import run_scenarios, statuses  # noqa: E402


async def ends_of(tap, user):
    await tap.quiet(0.5)
    return [(e["type"], e["reason"]) for e in tap.events()
            if e.get("user_id") == user and e["type"] in ("session.disconnected", "user.offline")]


async def sessions_of(d, user):
    r = await http(d, "GET", f"/v1/users/{user}/sessions")
    return [s["session_id"] for s in (r.json() or {}).get("sessions", [])]


async def http_session(t, cl):
    A, B = cl.d[0], cl.d[1]
    tap = await EventTap.open(B)
    r = await http(A, "PUT", "/v1/sessions/kick-h1", body=json.dumps({"user": "kick-hu", "ttl_ms": 60000}))
    t.eq("http: the session is created on A", r.status, 201)
    r = await http(B, "DELETE", "/v1/sessions/kick-h1")
    t.eq("http: the kick asked on B answers 200", r.status, 200)
    t.check("http: the session is gone", await wait_for_empty(B, "kick-hu"),
            await sessions_of(B, "kick-hu"))
    t.eq("http: one end, reason kicked", await ends_of(tap, "kick-hu"),
         [("session.disconnected", "kicked"), ("user.offline", "kicked")])
    r = await http(B, "DELETE", "/v1/sessions/kick-h1")
    t.eq("http: kicked again: 404 no_session", (r.status, r.error_code), (404, "no_session"))
    tap.close()


async def backend_session(t, cl):
    A, B = cl.d[0], cl.d[1]
    tap = await EventTap.open(B)
    b = await Backend.connect(A, "kick-origin")
    ack = await b.batch([{"op": "open", "session": "kick-b1", "user": "kick-bu"}])
    t.eq("backend: the session is opened on A", ack.get("applied"), 1)
    r = await http(B, "DELETE", "/v1/sessions/kick-b1")
    t.eq("backend: the kick asked on B answers 200", r.status, 200)
    t.check("backend: the session is gone", await wait_for_empty(B, "kick-bu"),
            await sessions_of(B, "kick-bu"))
    ended = None
    try:
        ended = json.loads(await asyncio.wait_for(b.ws.recv(), 3))
    except Exception as e:
        ended = repr(e)
    t.eq("backend: the backend is told", ended,
         {"type": "ended", "session": "kick-b1", "reason": "kicked"})
    t.eq("backend: one end, reason kicked", await ends_of(tap, "kick-bu"),
         [("session.disconnected", "kicked"), ("user.offline", "kicked")])
    await b.close()
    tap.close()


async def wait_for_empty(d, user, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not await sessions_of(d, user):
            return True
        await asyncio.sleep(0.1)
    return False


SCENARIOS = [
    ("http", http_session, {"n": 2, "extra": {"--offline-grace-ms": "0"}}),
    ("backend", backend_session, {"n": 2, "extra": {"--offline-grace-ms": "0"}}),
]


if __name__ == "__main__":
    sys.exit(run_scenarios(SCENARIOS, 60))
