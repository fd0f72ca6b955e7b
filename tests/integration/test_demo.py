#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Demo mode (docs/protocol.md section 3): with --demo, POST /v1/demo/token
hands out a token that connects, GET /v1/demo/users lists the roster, both
without the API key; without --demo those endpoints are not served; --demo
refuses a non-loopback address. Configuration by environment variables
(PRESENCED_*), a flag winning over the environment."""

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
    # The roster needs no key and is read by the demo's pages, which are
    # watchers: an invisible user is offline there as in a snapshot.
    await c.send({"type": "availability", "availability": "invisible", "id": "inv"})
    await c.expect_type("ack", 3, id="inv")
    r = await http(d, "GET", "/v1/demo/users", auth=False)
    us = {u.get("user_id"): u for u in (r.json() or {}).get("users", [])}
    await c.send({"type": "subscribe", "users": ["demo-alice"], "id": 2})
    snap = ((await c.expect_type("presence", 3, id=2)) or {}).get("users", [{}])[0]
    t.check("demo: an invisible user is offline in GET /v1/demo/users, as a watcher sees it",
            us.get("demo-alice", {}).get("status") == "offline"
            and {k: us.get("demo-alice", {}).get(k) for k in ("since", "last_seen", "version")}
            == {k: snap.get(k) for k in ("since", "last_seen", "version")}, (us.get("demo-alice"), snap))
    r = await http(d, "POST", "/v1/demo/token", body="{nope", auth=False)
    t.check("demo: bad JSON -> 400 bad_json", r.status == 400 and r.error_code == "bad_json", r)
    # "carol\u0000x" would be carol's token to cJSON
    r = await http(d, "POST", "/v1/demo/token", body='{"name":"carol\\u0000x"}', auth=False)
    t.check("demo: a name with \\u0000 -> 400 bad_json, no token",
            r.status == 400 and r.error_code == "bad_json" and "token" not in (r.json() or {}), r)
    r = await http(d, "POST", "/v1/demo/token", body={"name": ""}, auth=False)
    t.check("demo: empty name -> 400 bad_user_id", r.status == 400 and r.error_code == "bad_user_id", r)
    r = await http(d, "GET", "/", auth=False)
    t.check("demo: GET / serves the demo page", r.status == 200, r.status)
    await c.close()
    STATE["demo_token"] = j["token"]
    # Only the machine itself may ask: a DNS-rebinding page reaches
    # 127.0.0.1 under its own Host name; any site's page carries its Origin.
    r = await http(d, "POST", "/v1/demo/token", body={"name": "x"}, auth=False,
                   headers={"Host": "evil.example:%d" % d.port})
    t.check("demo: a token asked under a non-loopback Host -> 403 host_not_allowed",
            r.status == 403 and r.error_code == "host_not_allowed", r)
    r = await http(d, "POST", "/v1/demo/token", body={"name": "x"}, auth=False,
                   headers={"Origin": "https://evil.example"})
    t.check("demo: a token asked by another site's page -> 403 origin_not_allowed",
            r.status == 403 and r.error_code == "origin_not_allowed", r)
    for origin in ("http://127.0.0.1:%d" % d.port, "http://localhost:8080", "http://[::1]:1"):
        r = await http(d, "POST", "/v1/demo/token", body={"name": "x"}, auth=False,
                       headers={"Origin": origin, "Host": "localhost:%d" % d.port})
        t.eq(f"demo: a page on loopback ({origin}) gets a token", r.status, 200)


async def _raw(d, raw, timeout=3.0):
    """Send raw bytes, read until EOF or timeout."""
    r, w = await asyncio.open_connection(HOST, d.port)
    w.write(raw.encode("latin-1"))
    await w.drain()
    data = b""
    try:
        while True:
            chunk = await asyncio.wait_for(r.read(65536), timeout)
            if not chunk:
                break
            data += chunk
    except (asyncio.TimeoutError, ConnectionError, OSError):
        pass
    w.close()
    return data


def _head_of(data):
    """(status, lower-cased headers, the rest) of the first response."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else None
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return status, hdrs, rest


async def test_demo_head(t, d, args):
    """RFC 9110 9.3.2: HEAD is GET without the body, as every /v1 GET route
    answers it (5072d66); the demo roster answered 405 (Allow: GET). Each HEAD
    is followed on its connection by a GET of /healthz: a body sent after the
    HEAD's headers would be read as the start of that response."""
    for p in ("/v1/demo/users", "/"):
        g = _head_of(await _raw(d, f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
        data = await _raw(d, f"HEAD {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                             "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        h = _head_of(data)
        nxt = _head_of(h[2])
        t.check(f"demo: HEAD {p} answers as GET ({g[0]}, same Content-Type and Content-Length), "
                "no body before the next response",
                g[0] == 200 and h[0] == 200
                and h[1].get("content-type") == g[1].get("content-type")
                and h[1].get("content-length") == str(len(g[2]))
                and nxt[0] == 200 and b'"status"' in nxt[2], data[:500])
    data = await _raw(d, "DELETE /v1/demo/users HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    st, hd, _ = _head_of(data)
    allow = [x.strip() for x in hd.get("allow", "").split(",")]
    t.check("demo: DELETE /v1/demo/users -> 405 with Allow naming GET and HEAD",
            st == 405 and "GET" in allow and "HEAD" in allow, data[:300])


STATE = {}
ENV_KEY = "env-key-0123456789-0123456789-0123"


async def test_demo_without_its_page(t, d, args):
    """A demo started where its web root is not (the default "web" is
    relative to the working directory) says so when it starts: the page at /
    is a bare 404 otherwise, and a newcomer sees no reason."""
    t.check("demo with its page: no warning about it",
            "no demo page" not in d.stderr_text(), d.stderr_tail())
    d2 = Daemon(args.presenced, {"--demo": "", "--jwt-secret": None,
                                 "--web-root": "/nonexistent/web"}, "demo-no-page")
    try:
        d2.start()
        r = await http(d2, "GET", "/", auth=False)
        t.eq("demo without its page: / is 404", r.status, 404)
        t.check("demo without its page: a warning at the start names the path and --web-root",
                "no demo page at /nonexistent/web/index.html" in d2.stderr_text()
                and "--web-root" in d2.stderr_text(), d2.stderr_tail())
    finally:
        d2.stop()
        d2.cleanup()


async def test_demo_token_not_accepted_elsewhere(t, d, args):
    tok = STATE.get("demo_token")
    if not tok:
        t.check("a demo token was issued earlier", False)
        return
    ws = await RawWS.open(d, tok=tok)
    r = ws.response()
    ws.close()
    t.check("a demo token opens no session on a production instance: 401 token_signature",
            r.status == 401 and r.error_code == "token_signature", r)


async def test_demo_with_secret_refused(t, d, args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCED_")}
    p = subprocess.run([args.presenced, "--listen", "127.0.0.1:%d" % free_port(), "--demo"],
                       capture_output=True, timeout=10,
                       env=dict(env, PRESENCED_JWT_SECRET=JWT_SECRET))
    t.check("--demo with a configured JWT secret: refuses to start, exit 2, says why",
            p.returncode == 2 and b"refusing a JWT secret" in p.stderr
            and JWT_SECRET.encode() not in p.stderr, (p.returncode, p.stderr[-300:]))


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


async def test_secrets_on_the_command_line(t, d, args):
    """The harness passes --api-key and --jwt-secret as flags: the running
    daemon's arguments (what ps shows) no longer hold them, and its log says
    to use the environment or a file (issue 18)."""
    with open(f"/proc/{d.pid}/cmdline", "rb") as f:
        cmdline = f.read()
    t.check("the API key and the JWT secret are blanked from /proc/PID/cmdline",
            API_KEY.encode() not in cmdline and JWT_SECRET.encode() not in cmdline
            and b"--api-key" in cmdline, cmdline[:300])
    err = d.stderr_text()
    t.check("a warning names PRESENCED_API_KEY and PRESENCED_JWT_SECRET",
            "PRESENCED_API_KEY" in err and "PRESENCED_JWT_SECRET" in err, err[-500:])
    t.check("no secret value in the log", API_KEY not in err and JWT_SECRET not in err)
    short = "short-key"
    p = subprocess.run([args.presenced, "--listen", "127.0.0.1:%d" % free_port()],
                       capture_output=True, timeout=10,
                       env={"PRESENCED_API_KEY": short, "PATH": os.environ.get("PATH", "")})
    t.check("an API key of 9 bytes: refused at start (exit 2) with a clear message, not echoed",
            p.returncode == 2 and b"too short" in p.stderr and short.encode() not in p.stderr,
            (p.returncode, p.stderr[-300:]))
    # A webhook secret file others can read: a warning at start.
    import tempfile
    with tempfile.NamedTemporaryFile("w", prefix="whsec-", delete=False) as f:
        f.write("whsec-0123456789-0123456789-0123456789\n")
    os.chmod(f.name, 0o644)
    d2 = Daemon(args.presenced, {"--webhook": f"url=http://127.0.0.1:9/h,secret-file={f.name}"},
                "webhook-secret-file")
    try:
        d2.start()
        err = d2.stderr_text()
        t.check("a webhook secret-file readable by others: warned about at start",
                "readable or writable by group or others" in err and "whsec-0123" not in err,
                err[-400:])
    finally:
        d2.stop()
        d2.cleanup()
        os.unlink(f.name)


async def test_env_config(t, d, args):
    d2 = Daemon(args.presenced, {"--api-key": None, "--heartbeat-ms": "2345"}, "env",
                env={"PRESENCED_LISTEN": HOST + ":{PORT}", "PRESENCED_API_KEY": ENV_KEY,
                     "PRESENCED_HEARTBEAT_MS": "1234", "PRESENCED_TIMEOUT_MS": "7777"},
                listen_flag=False)
    try:
        d2.start()
    except Exception as e:
        t.check("environment: presenced listens on PRESENCED_LISTEN", False, e)
        return
    try:
        t.check("environment: presenced listens on PRESENCED_LISTEN", True)
        r = await http(d2, "GET", "/v1/users/x", auth="Bearer " + ENV_KEY)
        t.eq("environment: PRESENCED_API_KEY is the API key", r.status, 200)
        c = await Client.connect(d2, "envy")
        t.eq("environment: PRESENCED_TIMEOUT_MS applies", c.welcome.get("timeout_ms"), 7777)
        t.eq("a flag wins over the environment (--heartbeat-ms over PRESENCED_HEARTBEAT_MS)",
             c.welcome.get("heartbeat_ms"), 2345)
        await c.close()
    finally:
        d2.stop()
        d2.cleanup()
    p = subprocess.run([args.presenced, "--no-such-flag"], capture_output=True, timeout=10)
    t.check("unknown flag: exit status 2 and a message naming it",
            p.returncode == 2 and b"no-such-flag" in p.stderr, (p.returncode, p.stderr[-200:]))
    p = subprocess.run([args.presenced, "--heartbeat-ms", "abc"], capture_output=True, timeout=10)
    t.check("bad flag value: refused with a message naming the flag",
            p.returncode != 0 and b"heartbeat-ms" in p.stderr, (p.returncode, p.stderr[-200:]))


if __name__ == "__main__":
    src = parse_args().source_dir
    run([
        ("demo", {"--demo": "", "--jwt-secret": None, "--web-root": os.path.join(src, "web")},
         [test_demo, test_demo_head, test_demo_without_its_page],
         {"fresh_client": False}),  # demo tokens: its own secret
        ("no-demo", {}, [test_no_demo, test_demo_token_not_accepted_elsewhere,
                         test_demo_non_loopback, test_demo_with_secret_refused,
                         test_secrets_on_the_command_line,
                         test_env_config]),
    ])
