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
    r = await http(d, "GET", "/metrics")
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


async def test_refresh_narrows_channels(t, d, args, db=None):
    """A refresh whose "channels" / "observe" no longer grant a channel the
    session is in takes it out at once, as "watch" does for subscriptions:
    the other members see it leave, the backend no longer lists it, and no
    more of that channel's frames reach the session. db: where bob and the
    API are (another instance on Redis: test_redis_channels 'regrant')."""
    def tok(user, **grants):
        return token(user, exp_in=3600, extra=grants)
    alice_d, d = d, db or d
    bob = await Client.connect(d, "rg-bob", tok=tok("rg-bob", channels="*"))
    for i, ch in enumerate(["rg-a", "rg-b", "rg-lobby"]):
        await bob.send({"type": "join", "channel": ch, "id": f"bj{i}"})
        await bob.expect_type("channel", 3, id=f"bj{i}")
    alice = await Client.connect(alice_d, "rg-alice",
                                 tok=tok("rg-alice", channels=["rg-a", "rg-b"], observe=["rg-lobby"]))
    await alice.send({"type": "join", "channel": "rg-a", "data": {"n": 1}, "id": "j1"})
    await alice.send({"type": "join", "channel": "rg-b", "data": {"n": 2}, "id": "j2"})
    await alice.send({"type": "observe", "channel": "rg-lobby", "id": "o1"})
    for i in ("j1", "j2", "o1"):
        t.check(f"the first token grants {i}", await alice.expect_type("channel", 3, id=i) is not None)
    await bob.collect(0.3)
    await alice.collect(0.2)

    # The new token keeps rg-a only, and observes nothing.
    await alice.send({"type": "token", "token": tok("rg-alice", channels=["rg-a"]), "id": "t1"})
    ack = await alice.expect_type("ack", 3, id="t1") or {}
    t.eq("the ack names the channel left and the one no longer observed",
         (sorted(ack.get("left", [])), ack.get("unobserved")), (["rg-b"], ["rg-lobby"]))
    # Her own leave of rg-b (as after a leave message), and the notice a
    # backend's removal gives, so that a client drops both channels.
    notices = sorted((m.get("channel"), m.get("reason")) for m in await alice.collect(0.5)
                     if m.get("type") == "left")
    t.eq("alice is told she left rg-b and no longer observes rg-lobby",
         notices, [("rg-b", "not_allowed"), ("rg-lobby", "not_allowed")])
    leave = None
    for m in await bob.collect(0.8):
        if m.get("type") == "channel" and m.get("channel") == "rg-b" and m.get("event") == "leave":
            leave = m
    t.check("a member of rg-b sees alice leave it",
            leave is not None and (leave.get("member") or {}).get("user_id") == "rg-alice", leave)
    r = await http(d, "GET", "/v1/channels/rg-b/members")
    t.eq("the backend lists bob alone in rg-b",
         [m.get("user_id") for m in (r.json() or {}).get("members", [])], ["rg-bob"])
    r = await http(d, "GET", "/v1/channels/rg-a/members")
    t.eq("alice stays in rg-a, still granted",
         sorted(m.get("user_id") for m in (r.json() or {}).get("members", [])), ["rg-alice", "rg-bob"])
    await bob.send({"type": "update", "channel": "rg-b", "data": {"b": 1}, "id": "u1"})
    await bob.send({"type": "update", "channel": "rg-lobby", "data": {"b": 2}, "id": "u2"})
    await bob.send({"type": "update", "channel": "rg-a", "data": {"b": 3}, "id": "u3"})
    got = [m.get("channel") for m in await alice.collect(0.8) if m.get("type") == "channel"]
    t.eq("alice gets rg-a's changes only, none of rg-b or rg-lobby", got, ["rg-a"])
    await alice.send({"type": "update", "channel": "rg-b", "data": {"n": 3}, "id": "u4"})
    e = await alice.expect_type("error", 3, id="u4")
    t.eq("rg-b is no longer joined", (e or {}).get("code"), "not_joined")
    for x in (alice, bob):
        await x.close()
test_refresh_narrows_channels.timeout = 20


if __name__ == "__main__":
    run([
        ("token-refresh", {"--heartbeat-ms": "500", "--offline-grace-ms": "0"},
         [test_refresh_100, test_refresh_refused, test_refresh_narrows_channels]),
    ])
