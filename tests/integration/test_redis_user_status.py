#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Status that people set on three presenced sharing one real Redis
(docs/protocol.md section 6): availability and the status message set
through one instance are seen, masked, by a watcher on another and, unmasked,
by the API of the third; the instance that set a message with an expiry is
killed (SIGKILL) before it: the live ones clear it once, one user.message
(reason expired) in the log and one change for the watcher."""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403
from test_redis_cluster import read_log, run_scenarios, user, wait_for  # noqa: E402
from test_user_status import device_map_follows  # noqa: E402


def entry(msg, uid):
    for u in (msg or {}).get("users", []):
        if u.get("user_id") == uid:
            return u
    return None


async def test_settings_across_instances(t, cl):
    A, B, C = cl.d
    ann = await Client.connect(A, "rs-ann")
    watcher = await Client.connect(C, "rs-watch", watch="*")
    await watcher.send({"type": "subscribe", "users": ["rs-ann"], "id": 1})
    snap = await watcher.expect_type("presence", snapshot=True)
    v0 = (entry(snap, "rs-ann") or {}).get("version", 0)
    versions = []

    await ann.send({"type": "availability", "availability": "dnd", "id": "a"})
    t.check("dnd set through A: ack", await ann.expect_type("ack", id="a") is not None)
    ch = entry(await watcher.change("rs-ann", timeout=5), "rs-ann") or {}
    t.check("watcher on C: one change, online + dnd",
            ch.get("status") == "online" and ch.get("availability") == "dnd", ch)
    versions.append(ch.get("version"))
    j = await user(B, "rs-ann")
    t.check("API of B: the truth, online + dnd", j.get("status") == "online"
            and j.get("availability") == "dnd", j)
    await ann.send({"type": "status", "status": "idle", "id": "s"})
    await ann.expect_type("ack", id="s")
    t.eq("watcher on C: idle under dnd sends nothing", await watcher.changes(1.0, "rs-ann"), [])
    j = await user(B, "rs-ann")
    t.eq("API of B: idle (the truth)", j.get("status"), "idle")

    await ann.send({"type": "message", "text": "Back soon", "expires_in": 3, "id": "m"})
    t.check("message through A: ack", await ann.expect_type("ack", id="m") is not None)
    ch = entry(await watcher.change("rs-ann", timeout=5), "rs-ann") or {}
    t.check("watcher on C: the message", ch.get("change") == "message"
            and (ch.get("message") or {}).get("text") == "Back soon", ch)
    versions.append(ch.get("version"))
    # A dies before the expiry, without a word. Its session is reaped
    # (rs-ann goes offline, reason instance_lost) and, separately, the
    # message expires: cleared by B or C, once.
    A.kill()
    got = []
    for _ in range(20):
        got += [entry(m, "rs-ann") for m in await watcher.changes(0.5, "rs-ann")]
        if any(g and g.get("reason") == "expired" for g in got):
            break
    got += [entry(m, "rs-ann") for m in await watcher.changes(2.0, "rs-ann")]
    msgs = [g for g in got if g and g.get("change") == "message"]
    t.check("after A's death the message expires anyway: one change, reason expired",
            len(msgs) == 1 and msgs[0].get("message") is None
            and msgs[0].get("reason") == "expired", got)
    versions += [g.get("version") for g in sorted(
        (g for g in got if g), key=lambda g: g.get("seq", 0))]
    t.eq("watcher: the shown version moved by one with each change it was sent "
         "(the hidden idle moved none), across instances",
         versions, list(range(v0 + 1, v0 + 1 + len(versions))))
    j = await user(B, "rs-ann")
    t.check("API of B: message gone, dnd kept", j.get("message") is None
            and j.get("availability") == "dnd", j)
    evs = [e for e in await read_log(B) if isinstance(e, dict)
           and e.get("type") == "user.message" and e.get("user_id") == "rs-ann"]
    t.eq("the log: user.message set, then expired once",
         [e.get("reason") for e in evs], ["explicit", "expired"])
    await watcher.close()
    try:
        await ann.close()
    except Exception:
        pass


async def test_device_map_across_instances(t, cl):
    # The user's web session on A, its mobile on B, the watcher on C: the
    # devices an availability change carries come from the store, not from
    # what one instance holds.
    A, B, C = cl.d
    web = await Client.connect(A, "rs-dm")
    mobile = await Client.connect(B, "rs-dm", tok=token("rs-dm", extra={"device": "mobile"}))
    watcher = await Client.connect(C, "rs-dm-watch", watch="*")
    await device_map_follows(t, web, mobile, watcher, "rs-dm", timeout=5)
    for c in (web, mobile, watcher):
        await c.close()


SCENARIOS = [("settings", test_settings_across_instances, {}),
             ("device-map", test_device_map_across_instances, {})]

if __name__ == "__main__":
    sys.exit(run_scenarios(SCENARIOS, 90))
