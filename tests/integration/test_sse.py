#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""GET /v1/events query values as URL encoders write them (docs/api.md):
?types= percent-encoded (',' as %2C, '*' as %2A, as Python's urlencode and
URLSearchParams send them) filters like the plain form."""

import asyncio
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403


async def user_events(d, query):
    """Open the stream with query, make one user come and go, return
    (status, the types of that user's events seen)."""
    sse = await SSE.open(d, path="/v1/events?" + query)
    if sse.status != 200:
        return sse.status, sse.response().error_code
    c = await Client.connect(d, "enc")
    await c.close()
    _, evs = await sse.until(lambda e: ev_is(e, "user.offline", user_id="enc"), 5)
    sse.close()
    return 200, [e["event"] for e in evs if e["data"].get("user_id") == "enc"]


async def test_types_percent_encoded(t, d, args):
    q = urllib.parse.urlencode({"types": "user.online,user.offline"})
    t.check("query as urlencode writes it: ',' as %2C", "%2C" in q, q)
    got = await user_events(d, q)
    t.eq("types=user.online%2Cuser.offline: 200, only those two types", got,
         (200, ["user.online", "user.offline"]))
    q = urllib.parse.urlencode({"types": "user.*"})
    t.check("query as urlencode writes it: '*' as %2A", "%2A" in q, q)
    got = await user_events(d, q)
    t.eq("types=user.%2A: 200, the user events", got, (200, ["user.online", "user.offline"]))
    got = await user_events(d, "types=user.%2")
    t.eq("types with a broken escape: 400 bad_request", got, (400, "bad_request"))
    got = await user_events(d, "types=nope.%2A")
    t.eq("types naming no type, encoded: 400 bad_request", got, (400, "bad_request"))


if __name__ == "__main__":
    run([
        ("sse", {}, [test_types_percent_encoded]),
    ])
