#!/usr/bin/python3
"""Demo mode (docs/protocol.md section 3): with --demo, POST /v1/demo/token
hands out a token that connects, GET /v1/demo/users lists the roster, both
without the API key; without --demo those endpoints are not served; --demo
refuses a non-loopback address."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403


async def test_demo(t, d, args):
    r = await http(d, "POST", "/v1/demo/token", body={"name": "demo-alice"}, auth=False)
    j = r.json() or {}
    t.check("demo: POST /v1/demo/token without API key -> token and user_id",
            r.status == 200 and isinstance(j.get("token"), str) and j.get("user_id") == "demo-alice", r)
    if r.status != 200:
        return
    c = await Client.connect(d, "demo-alice", tok=j["token"])
    t.eq("demo: the token connects", c.welcome.get("user_id"), "demo-alice")
    await c.send({"type": "subscribe", "users": ["demo-bob"], "id": 1})
    m = await c.recv()
    t.check("demo: the token may watch anyone (watch \"*\")", m.get("type") == "presence" and m.get("id") == 1, m)
    r = await http(d, "GET", "/v1/demo/users", auth=False)
    us = {u.get("user_id"): u for u in (r.json() or {}).get("users", [])}
    t.check("demo: GET /v1/demo/users lists the connected user online",
            r.status == 200 and us.get("demo-alice", {}).get("status") == "online", r)
    r = await http(d, "POST", "/v1/demo/token", body="{nope", auth=False)
    t.check("demo: bad JSON -> 400 bad_json", r.status == 400 and r.error_code == "bad_json", r)
    r = await http(d, "POST", "/v1/demo/token", body={"name": ""}, auth=False)
    t.check("demo: empty name -> 400 bad_user_id", r.status == 400 and r.error_code == "bad_user_id", r)
    r = await http(d, "GET", "/", auth=False)
    t.check("demo: GET / serves the demo page", r.status == 200, r.status)
    await c.close()


async def test_no_demo(t, d, args):
    r = await http(d, "POST", "/v1/demo/token", body={"name": "x"}, auth=False)
    t.check("without --demo: POST /v1/demo/token hands out no token",
            r.status in (401, 404) and "token" not in (r.json() or {}), r)
    r = await http(d, "POST", "/v1/demo/token", body={"name": "x"})
    t.check("without --demo: POST /v1/demo/token with API key -> 404 not_found",
            r.status == 404 and r.error_code == "not_found", r)


async def test_demo_non_loopback(t, d, args):
    p = subprocess.run([args.presenced, "--listen", "0.0.0.0:%d" % free_port(), "--demo",
                        "--api-key", API_KEY], capture_output=True, timeout=10,
                       env={k: v for k, v in os.environ.items() if not k.startswith("PRESENCED_")})
    t.check("--demo on a non-loopback address: refuses to start (non-zero exit)", p.returncode != 0,
            (p.returncode, p.stderr[-300:]))


if __name__ == "__main__":
    src = parse_args().source_dir
    run([
        ("demo", {"--demo": "", "--web-root": os.path.join(src, "web")}, [test_demo]),
        ("no-demo", {}, [test_no_demo, test_demo_non_loopback]),
    ])
