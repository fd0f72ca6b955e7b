#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""GET /v1/events query values as URL encoders write them (docs/api.md):
?types= percent-encoded (',' as %2C, '*' as %2A, as Python's urlencode and
URLSearchParams send them) filters like the plain form. A filtered stream
moves its reader's cursor over the events it skips (id-only blocks), so a
reader resuming after many skipped events that the bounded log evicted gets
no gap notice (docs/protocol.md, "Cursors")."""

import asyncio
import json
import os
import time
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

    # A list as URLSearchParams.append, Python's urlencode(doseq) and Go's
    # url.Values write it: types once per element. Only the first was read:
    # the stream answered 200 and left the other types' events out.
    q = urllib.parse.urlencode({"types": ["user.online", "user.offline"]}, doseq=True)
    t.eq("a list as urlencode(doseq) writes it: types twice", q,
         "types=user.online&types=user.offline")
    got = await user_events(d, q)
    t.eq("types=user.online&types=user.offline: 200, both types", got,
         (200, ["user.online", "user.offline"]))
    got = await user_events(d, "types=user.online&types=nope")
    t.eq("a second types naming no type: 400 bad_request", got, (400, "bad_request"))
    for q in ("after=0&after=5", "channel_prefix=a&channel_prefix=b"):
        got = await user_events(d, q)
        t.eq(f"{q}: one value given twice: 400 bad_request", got, (400, "bad_request"))


class CursorSSE(SSE):
    """The harness's reader (which keeps every id: line as its last event id,
    as an EventSource does, and counts id-only blocks), with drain."""

    async def drain(self, until_id, timeout):
        """Read until last_id is until_id (or timeout); the events read."""
        out = []
        deadline = time.monotonic() + timeout
        while self.last_id != until_id:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                ev = await self.next(left)
            except asyncio.TimeoutError:
                break
            if ev is None:
                break
            out.append(ev)
        return out


async def test_filtered_cursor_moves(t, d, args):
    # --log-capacity 16: a filtered stream whose reader saw its last event
    # long ago, with 40 skipped events since, resumes without a gap.
    paths = {"types": "/v1/events?types=user.offline", "channel_prefix": "/v1/events?channel_prefix=room:"}
    streams = {}
    for label, path in paths.items():
        st = await CursorSSE.open(d, path=path)
        t.eq(f"{label}: filtered stream opens", st.status, 200)
        streams[label] = st
    plain = await CursorSSE.open(d)
    # One event each filter lets through: their readers' last event.
    c = await Client.connect(d, "cur-first", tok=token("cur-first", extra={"channels": ["room:*"]}))
    await c.send({"type": "join", "channel": "room:cur", "id": "j1"})
    t.check("cur-first joins room:cur", await c.expect_type("channel", 3, id="j1") is not None)
    await c.close()
    for label, st in streams.items():
        ev, _ = await st.until(lambda e: e["data"].get("user_id") == "cur-first"
                               and e["event"] in ("user.offline", "channel.leave"), 5)
        t.check(f"{label}: its event is sent", ev is not None)
    # 40 events both filters skip (session.connected, user.online), more
    # than twice the log's 16.
    clients = [await Client.connect(d, f"cur-{i}") for i in range(20)]
    ev, ref = await plain.until(lambda e: ev_is(e, "user.online", user_id="cur-19"), 5)
    t.check("the skipped events are in the log", ev is not None and len(ref) >= 40, len(ref))
    newest = ev["id"] if ev else None
    for label, st in streams.items():
        got = await st.drain(newest, 3)
        t.eq(f"{label}: no skipped event is dispatched", got, [])
        t.eq(f"{label}: the reader's cursor moved to the newest event (id-only blocks)",
             st.last_id, newest)
        t.check(f"{label}: an id-only block per log read at most, not per skipped event",
                1 <= st.id_only <= 40, st.id_only)
        t.check(f"{label}: id-only blocks carry no event name",
                not getattr(st, "id_only_with_event", False))
        st.close()
    t.eq("unfiltered stream: no id-only block", plain.id_only, 0)
    plain.close()
    # Resume each with the last id its reader holds: no gap, and the next
    # event it asks for comes.
    resumed = {}
    for label, st in streams.items():
        resumed[label] = await CursorSSE.open(d, path=paths[label], last_event_id=st.last_id)
    c = await Client.connect(d, "cur-last", tok=token("cur-last", extra={"channels": ["room:*"]}))
    await c.send({"type": "join", "channel": "room:cur", "id": "j2"})
    t.check("cur-last joins room:cur", await c.expect_type("channel", 3, id="j2") is not None)
    await c.close()
    for label, st in resumed.items():
        first = await st.next(5)
        t.check(f"{label}: resumed after the skipped events: no gap notice",
                first is not None and first["event"] != "gap", first)
        t.check(f"{label}: resumed: the next event it asks for",
                first is not None and first["data"].get("user_id") == "cur-last", first)
        st.close()
    for x in clients:
        await x.close()
    # ?after=0 once the log has dropped events: a gap from 0, then the
    # oldest event kept (docs/api.md, Resuming).
    st = await CursorSSE.open(d, after=0)
    evs = await st.collect(1.0)
    st.close()
    t.check("?after=0 after the log dropped events: a gap from 0, then the oldest kept",
            len(evs) >= 2 and evs[0]["event"] == "gap" and evs[0]["data"].get("after") == 0
            and str(evs[0]["data"].get("oldest")) == evs[1]["id"],
            [(e["event"], e["id"], e["data"] if e["event"] == "gap" else "") for e in evs[:2]])


if __name__ == "__main__":
    run([
        ("sse", {}, [test_types_percent_encoded]),
        ("sse-filtered-cursor", {"--log-capacity": "16"}, [test_filtered_cursor_moves]),
    ])
