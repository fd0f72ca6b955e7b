#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Token refresh in place (docs/protocol.md section 1.2, {"type":"token"}):
a token refreshed 100 times on one connection emits no event and never
disconnects, the new expiry holds past the old one, and the old grants are
gone; a token for another user or an invalid one is refused with its code
and the old expiry stands (closed with 4001 at the old exp)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403


async def metric(d, name):
    r = await http(d, "GET", "/metrics", auth=False)
    for line in r.body.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None


async def test_refresh_100(t, d, args):
    w = await Client.connect(d, "rf-watcher", watch="*")
    await w.send({"type": "subscribe", "users": ["rf-alice"], "id": 1})
    await w.expect_type("presence", 3, id=1)
    # The first token expires in 3 s and lets alice watch carol.
    c = await Client.connect(d, "rf-alice", tok=token("rf-alice", exp_in=3, watch=["rf-carol"]))
    t.check("welcome carries the token's exp", isinstance(c.welcome.get("exp"), int)
            and abs(c.welcome["exp"] - (int(time.time()) + 3)) <= 2, c.welcome)
    await c.send({"type": "subscribe", "users": ["rf-carol"], "id": "s1"})
    t.check("the first token allows watching carol",
            await c.expect_type("presence", 3, id="s1") is not None)
    await w.changes(0.3)  # alice's own online
    sse = await SSE.open(d)
    acks, first_unsub, later_unsub = 0, None, []
    for i in range(100):
        tok = token("rf-alice", exp_in=3600 + i, watch=["rf-dave"])
        await c.send({"type": "token", "token": tok, "id": i})
        m = await c.expect_type("ack", 3, id=i)
        if m and abs(m.get("exp", 0) - (int(time.time()) + 3600 + i)) <= 1:
            acks += 1
        if i == 0:
            first_unsub = (m or {}).get("unsubscribed")
        elif m and "unsubscribed" in m:
            later_unsub.append(m["unsubscribed"])
        await asyncio.sleep(0.015)  # under the 100 messages/s limit
    t.eq("100 refreshes: 100 acks with the new exp", acks, 100)
    t.eq("the first refresh ends the subscription to carol (not in the new watch)",
         first_unsub, ["rf-carol"])
    t.eq("later refreshes end nothing", later_unsub, [])
    await c.send({"type": "subscribe", "users": ["rf-carol"], "id": "s2"})
    e = await c.expect_type("error", 3, id="s2")
    t.eq("old grant gone: subscribing to carol is refused", (e or {}).get("code"), "not_allowed")
    await c.send({"type": "subscribe", "users": ["rf-dave"], "id": "s3"})
    t.check("new grant: dave may be watched", await c.expect_type("presence", 3, id="s3") is not None)
    carol = await Client.connect(d, "rf-carol")
    # Past the first token's exp (3 s) and a housekeeping sweep: still open.
    await asyncio.sleep(4.5)
    pong = await c.ping("after-exp")
    t.check("past the old exp: still connected (the new exp holds)", pong is not None)
    msgs = await c.collect(0.3)
    t.check("no change of carol reaches alice after the grant went",
            not any(m.get("type") == "presence" and any(u.get("user_id") == "rf-carol"
                                                       for u in m.get("users", [])) for m in msgs), msgs)
    r = await http(d, "GET", "/v1/users/rf-alice/sessions")
    ss = (r.json() or {}).get("sessions", [])
    t.check("the same single session throughout",
            [x.get("session_id") for x in ss] == [c.session_id], ss)
    evs = await sse.collect(0.5)
    mine = [e for e in evs if isinstance(e["data"], dict) and e["data"].get("user_id") == "rf-alice"]
    t.eq("no event for alice during 100 refreshes", ev_brief(mine), ev_brief([]))
    t.eq("watchers see no change of alice", len(await w.changes(0.3, "rf-alice")), 0)
    t.eq("presenced_token_refreshes_total counts them", await metric(d, "presenced_token_refreshes_total"), 100)
    sse.close()
    for x in (c, carol, w):
        await x.close()
test_refresh_100.timeout = 40


async def test_refresh_refused(t, d, args):
    c = await Client.connect(d, "rf-bob", tok=token("rf-bob", exp_in=4))
    cases = [
        ("another user's token", token("rf-mallory", exp_in=3600), "token_user_mismatch"),
        ("a token signed with another secret", token("rf-bob", exp_in=3600, secret="not-the-secret-at-all-xx"),
         "token_signature"),
        ("an expired token", token("rf-bob", exp_in=-60), "token_expired"),
        ("alg none", make_jwt({"sub": "rf-bob", "exp": int(time.time()) + 3600},
                              header={"alg": "none", "typ": "JWT"}, sign="none"), "token_alg"),
        ("garbage", "a.b", "token_malformed"),
        ("another audience", token("rf-bob", exp_in=3600, aud="someone-else"), "token_audience"),
    ]
    for i, (name, tok, code) in enumerate(cases):
        await c.send({"type": "token", "token": tok, "id": f"r{i}"})
        e = await c.expect_type("error", 3, id=f"r{i}")
        t.eq(f"refused: {name} -> {code}", (e or {}).get("code"), code)
    for i, bad in enumerate([{"type": "token"}, {"type": "token", "token": ""}, {"type": "token", "token": 7}]):
        await c.send({**bad, "id": f"b{i}"})
        e = await c.expect_type("error", 3, id=f"b{i}")
        t.eq(f"malformed token message {bad} -> bad_field", (e or {}).get("code"), "bad_field")
    t.check("still connected after the refusals", await c.ping("alive") is not None)
    t0 = time.monotonic()
    code = await c.wait_closed(8)
    t.eq("the old expiry stands: closed with 4001", code, 4001)
    t.check("closed around the old exp (4 s), not later", time.monotonic() - t0 < 6.5, time.monotonic() - t0)
test_refresh_refused.timeout = 30


if __name__ == "__main__":
    run([
        ("token-refresh", {"--heartbeat-ms": "500", "--offline-grace-ms": "0"},
         [test_refresh_100, test_refresh_refused]),
    ])
