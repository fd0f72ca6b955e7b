#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""GET /v1/events on the Redis store (docs/api.md, "The event stream")
while Redis does not answer: a stream whose log read failed (Redis
SIGSTOPped past --redis-timeout-ms) gets its events once Redis answers
again, without waiting for a new event. Before, it waited for the next
event of the cluster however long that took (a keepalive did not wake it).

Uses the Redis and cluster helpers of test_redis_cluster.py."""

import asyncio
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SSE, Client  # noqa: E402
from test_redis_cluster import run_scenarios  # noqa: E402


async def stream_after_redis_pause(t, cl):
    d = cl.d[0]
    for i in range(5):
        c = await Client.connect(d, f"paused-{i}")
        await c.close()
    await asyncio.sleep(0.5)
    # Nothing happens after this: only a retry can bring the events.
    os.kill(cl.redis.proc.pid, signal.SIGSTOP)
    try:
        sse = await SSE.open(d, after=0)
        t.eq("stream opened while Redis is stopped: 200", sse.status, 200)
        await asyncio.sleep(1.5)  # past --redis-timeout-ms: the read failed
    finally:
        os.kill(cl.redis.proc.pid, signal.SIGCONT)
    t0 = time.monotonic()
    ev, evs = await sse.until(lambda e: e["event"] == "user.offline"
                              and e["data"].get("user_id") == "paused-4", 8)
    t.check("the events come once Redis answers, with no new event", ev is not None,
            [(e["event"], e["data"].get("user_id")) for e in evs][-5:])
    t.note(f"first events {time.monotonic() - t0:.2f} s after Redis resumed")
    users = [e["data"]["user_id"] for e in evs if e["event"] == "user.online"
             and str(e["data"].get("user_id", "")).startswith("paused-")]
    t.eq("each of them once, in order", users, [f"paused-{i}" for i in range(5)])
    sse.close()


SCENARIOS = [
    ("redis_paused", stream_after_redis_pause,
     {"n": 1, "lease": 6000, "hb": 2000, "extra": {"--redis-timeout-ms": "500"}}),
]


if __name__ == "__main__":
    sys.exit(run_scenarios(SCENARIOS, 60))
