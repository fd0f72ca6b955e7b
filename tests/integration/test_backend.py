#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Backend session connections (docs/protocol.md section 5) against a real
presenced: a backend client holding 10,000 sessions; killed, its users go
offline once, after the resume window, with reason origin_lost; restarted
inside the window and re-asserting its list, nothing at all is emitted; a
re-assert with differences emits exactly those. Bad input: per-op errors
with the valid ops applied, ownership, frames refused whole, oversized
frames, malformed floods, rate limits, lease loss, take-over, bye, kicks,
HTTP sessions with a TTL."""

import fcntl
import os
import sys
import termios
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403
from backendlib import Backend, EventTap  # noqa: E402

N = 10000
WINDOW_MS = 3000


def sessions_of(prefix, n=N):
    return [(f"{prefix}-s{i}", f"{prefix}-u{i}") for i in range(n)]


def mine(evs, prefix):
    return [e for e in evs if str(e.get("user_id", "")).startswith(prefix + "-")]


async def origin_row(d, name):
    r = await http(d, "GET", "/v1/origins")
    for o in (r.json() or {}).get("origins", []):
        if o.get("origin") == name:
            return o
    return None


async def test_kill_after_window(t, d, args):
    b = await Backend.connect(d, "bk-kill")
    t.check("welcome: a fresh origin", b.welcome.get("resumed") is False
            and b.welcome.get("resume_ms") == WINDOW_MS, b.welcome)
    ss = sessions_of("bk")
    acks = await b.open_many(ss)
    t.eq("10,000 opens in 10 batches: all applied, no errors",
         (sum(a.get("applied", 0) for a in acks), [a for a in acks if "errors" in a]), (N, []))
    row = await origin_row(d, "bk-kill")
    t.check("GET /v1/origins: connected with 10,000 sessions",
            row and row["state"] == "connected" and row["sessions"] == N, row)
    r = await http(d, "GET", "/v1/users/bk-u1234")
    t.eq("a reported user is online", (r.json() or {}).get("status"), "online")
    tap = await EventTap.open(d)
    t0 = time.monotonic()
    b.abort()
    await asyncio.sleep(WINDOW_MS / 1000 * 0.6)
    early = mine(tap.events(), "bk")
    t.eq("inside the window: no event for its users", len(early), 0)
    row = await origin_row(d, "bk-kill")
    t.check("GET /v1/origins: detached, still 10,000 sessions",
            row and row["state"] == "detached" and row["sessions"] == N, row)
    got = None
    while time.monotonic() - t0 < WINDOW_MS / 1000 + 20:
        await asyncio.sleep(0.25)
        offs = [e for e in mine(tap.events(), "bk") if e["type"] == "user.offline"]
        if len(offs) >= N:
            got = time.monotonic() - t0
            break
    await tap.quiet(0.5)
    evs = mine(tap.events(), "bk")
    offs = [e for e in evs if e["type"] == "user.offline"]
    t.check("every user offline after the window", got is not None, len(offs))
    t.check("not before the window", got is None or got >= WINDOW_MS / 1000, got)
    t.note(f"10,000 sessions ended {1000 * (got or 0):.0f} ms after the kill (window {WINDOW_MS} ms)")
    t.eq("each user offline exactly once", len({e["user_id"] for e in offs}), len(offs))
    t.check("user.offline and session.disconnected carry reason origin_lost",
            all(e["reason"] == "origin_lost" for e in evs
                if e["type"] in ("user.offline", "session.disconnected")), {e["reason"] for e in evs})
    t.eq("nothing else: one disconnect and one offline per user",
         sorted({e["type"] for e in evs}), ["session.disconnected", "user.offline"])
    t.eq("the origin is gone", await origin_row(d, "bk-kill"), None)
    tap.close()
test_kill_after_window.timeout = 90


async def test_restart_inside_window(t, d, args):
    b = await Backend.connect(d, "br-restart")
    ss = sessions_of("br")
    await b.open_many(ss)
    tap = await EventTap.open(d)
    b.abort()
    await asyncio.sleep(1.0)
    b = await Backend.connect(d, "br-restart")
    t.check("welcome after a restart: resumed with its 10,000 sessions",
            b.welcome.get("resumed") is True and b.welcome.get("sessions") == N, b.welcome)
    t0 = time.monotonic()
    acks = await b.sync(ss)
    took = time.monotonic() - t0
    t.check("re-assert: every session applied, none opened or closed",
            acks[-1].get("opened") == 0 and acks[-1].get("closed") == 0
            and sum(a.get("applied", 0) for a in acks) == N, acks[-1])
    t.note(f"re-assert of 10,000 sessions in {1000 * took:.0f} ms (10 frames, Python client)")
    await asyncio.sleep(WINDOW_MS / 1000 + 1.0)
    await tap.quiet(0.3)
    t.eq("restart inside the window: no event at all", mine(tap.events(), "br"), [])
    row = await origin_row(d, "br-restart")
    t.check("the origin is connected with its 10,000 sessions",
            row and row["state"] == "connected" and row["sessions"] == N, row)
    # The backend's users changed while it was away: 10 left, 5 came.
    b.abort()
    await asyncio.sleep(0.3)
    b = await Backend.connect(d, "br-restart")
    changed = ss[10:] + [(f"br-new{i}", f"br-newu{i}") for i in range(5)]
    acks = await b.sync(changed)
    t.check("re-assert with differences: 5 opened, 10 closed",
            acks[-1].get("opened") == 5 and acks[-1].get("closed") == 10, acks[-1])
    await tap.quiet(0.5)
    evs = mine(tap.events(), "br")
    offs = sorted(e["user_id"] for e in evs if e["type"] == "user.offline")
    ons = sorted(e["user_id"] for e in evs if e["type"] == "user.online")
    t.eq("only the differences: 10 users offline", offs, sorted(u for _, u in ss[:10]))
    t.eq("only the differences: 5 users online", ons, sorted(f"br-newu{i}" for i in range(5)))
    await b.send({"type": "bye"})
    try:
        await asyncio.wait_for(b.ws.wait_closed(), 5)
    except asyncio.TimeoutError:
        pass
    t.eq("bye: closed with 1000", b.ws.close_code, 1000)
    await tap.quiet(0.5)
    offs = [e for e in mine(tap.events(), "br") if e["type"] == "user.offline"]
    t.eq("bye: every session ended at once", len(offs), 10 + len(changed))
    tap.close()
test_restart_inside_window.timeout = 90


async def test_presencectl_origins(t, d, args):
    ctl = os.path.join(os.path.dirname(os.path.abspath(args.presenced)), "presencectl")
    b = await Backend.connect(d, "ctl-app")
    await b.open_many([(f"ctl-s{i}", f"ctl-u{i % 7}") for i in range(25)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCECTL_")}
    env.update({"PRESENCECTL_URL": f"http://{HOST}:{d.port}", "PRESENCECTL_API_KEY": API_KEY})
    for argv in (["--json", "origins"], ["origins"]):
        p = await asyncio.create_subprocess_exec(ctl, *argv, stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await asyncio.wait_for(p.communicate(), 15)
        out = out.decode()
        if argv[0] == "--json":
            rows = {o["origin"]: o for o in (json.loads(out or "{}").get("origins") or [])}
            t.check("presencectl --json origins: ctl-app connected with 25 sessions",
                    p.returncode == 0 and rows.get("ctl-app", {}).get("sessions") == 25
                    and rows["ctl-app"]["state"] == "connected", out)
        else:
            line = [x for x in out.splitlines() if x.startswith("ctl-app")]
            t.check("presencectl origins: a table row with the state and the count",
                    p.returncode == 0 and line and line[0].split()[1:3] == ["connected", "25"], out)
    await b.send({"type": "bye"})
    await b.close()


async def test_bad_input(t, d, args):
    a = await Backend.connect(d, "bad-a")
    other = await Backend.connect(d, "bad-b")
    await other.batch([{"op": "open", "session": "bad-b1", "user": "bob"}])
    ws_client = await Client.connect(d, "wendy")
    ack = await a.batch([
        {"op": "open", "session": "bad-a1", "user": "ann"},
        "not an object",
        {"op": "fly", "session": "bad-a2"},
        {"op": "open", "session": "", "user": "ann"},
        {"op": "open", "session": "bad-a3", "user": "x\u0001"},
        {"op": "status", "session": "bad-a1", "status": "offline"},
        {"op": "open", "session": "bad-b1", "user": "bob"},
        {"op": "close", "session": "bad-b1"},
        {"op": "close", "session": ws_client.session_id},
        {"op": "status", "session": "bad-nobody", "status": "idle"},
        {"op": "open", "session": "bad-a1", "user": "someone-else"},
        {"op": "open", "session": "bad-a4", "user": "ann", "meta": [1]},
        {"op": "open", "session": "bad-a5", "user": "ann", "device": "bad device!"},
        {"op": "join", "session": "bad-a1", "channel": ""},
        {"op": "leave", "session": "bad-a1", "channel": "never-joined"},
        {"op": "open", "session": "bad-a6", "user": "ann", "status": "idle", "device": "mobile"},
    ])
    codes = {e["index"]: e["code"] for e in ack.get("errors", [])}
    t.eq("a batch with bad items: the valid ones applied", ack.get("applied"), 2)
    t.eq("each bad item reported by its index", codes, {
        1: "bad_op", 2: "bad_op", 3: "bad_session_id", 4: "bad_user_id", 5: "bad_status",
        6: "session_owned", 7: "session_owned", 8: "session_owned", 9: "no_session",
        10: "session_exists", 11: "bad_meta", 12: "bad_device", 13: "bad_channel", 14: "not_joined"})
    r = await http(d, "GET", "/v1/users/bob")
    t.eq("another origin's session untouched", (r.json() or {}).get("sessions"), 1)
    t.check("the client's session untouched", await ws_client.ping() is not None)
    r = await http(d, "GET", "/v1/users/ann/sessions")
    t.eq("ann has the two valid sessions, bad-a6 idle",
         sorted((x["session_id"], x["status"]) for x in (r.json() or {}).get("sessions", [])),
         [("bad-a1", "online"), ("bad-a6", "idle")])
    t.eq("the device of an open is the session's",
         {x["session_id"]: x.get("device") for x in (r.json() or {}).get("sessions", [])},
         {"bad-a1": "web", "bad-a6": "mobile"})
    # Frames refused whole: nothing of them applied.
    for i, (frame, code) in enumerate([
            ("not json", "bad_json"), ('{"type":"warp"}', "unknown_type"),
            ('{"type":"batch","seq":-1,"ops":[]}', "bad_field"),
            ('{"type":"batch","seq":1.5,"ops":[]}', "bad_field"),
            # 2^53 + 1 reads as 2^53: it was acked as a seq it is not
            ('{"type":"batch","seq":9007199254740993,"ops":[]}', "bad_field"),
            ('{"type":"batch","seq":5,"ops":{}}', "bad_field"),
            ('{"type":"batch","seq":6,"ops":[{"op":"open","session":"z\\u0000","user":"u"}]}', "bad_field")]):
        await a.send(frame)
        m, _ = await asyncio.wait_for(a.ws.recv(), 3), None
        m = json.loads(m)
        t.eq(f"frame refused whole: {frame[:40]} -> {code}", (m.get("type"), m.get("code")), ("error", code))
    big = [{"op": "open", "session": f"bad-many{i}", "user": "many"} for i in range(101)]
    a.seq += 1
    await a.send({"type": "batch", "seq": a.seq, "ops": big})
    m = await a.answer(a.seq)
    t.eq("over --backend-max-ops: too_many_ops, nothing applied", (m.get("type"), m.get("code")),
         ("error", "too_many_ops"))
    r = await http(d, "GET", "/v1/users/many")
    t.eq("... and no session of it exists", (r.json() or {}).get("sessions"), 0)
    # Flooding: over --backend-ops-per-sec (200) in one second.
    codes = []
    for k in range(4):
        m = await a.batch([{"op": "status", "session": "bad-a1", "status": "online"}] * 90)
        codes.append(m.get("code") or m.get("type"))
    t.check("a flooding backend gets rate_limited with retry_ms, nothing applied",
            "rate_limited" in codes, codes)
    await asyncio.sleep(1.1)
    m = await a.batch([{"op": "status", "session": "bad-a1", "status": "idle"}])
    t.eq("after the second: applied again", m.get("applied"), 1)
    # A kick by the API: the backend is told.
    r = await http(d, "DELETE", "/v1/sessions/bad-a6")
    t.eq("kick of a backend session: 200", r.status, 200)
    m = None
    for _ in range(20):
        if any(n.get("type") == "ended" for n in a.notices):
            break
        try:
            a.notices.append(json.loads(await asyncio.wait_for(a.ws.recv(), 0.2)))
        except asyncio.TimeoutError:
            pass
    ended = [n for n in a.notices if n.get("type") == "ended"]
    t.eq("the backend gets an ended notice with the reason", ended[:1],
         [{"type": "ended", "session": "bad-a6", "reason": "kicked"}])
    m = await a.batch([{"op": "status", "session": "bad-a6", "status": "idle"}])
    t.eq("the kicked session is no longer the origin's", m["errors"][0]["code"], "no_session")
    # Take-over: a second connection for the same origin.
    a2 = await Backend.connect(d, "bad-a")
    t.check("take-over: resumed with its sessions", a2.welcome.get("resumed") is True
            and a2.welcome.get("sessions") == 1, a2.welcome)
    t.eq("the older connection is closed with 4009", await a.close_code(), 4009)
    # Malformed floods: ten bad frames close with 1008.
    for _ in range(10):
        await a2.send("{")
    t.eq("ten malformed frames: closed with 1008", await a2.close_code(), 1008)
    # Oversized frame: 1009.
    a3 = await Backend.connect(d, "bad-a")
    try:
        await a3.send('{"type":"batch","seq":1,"ops":[],"pad":"' + "x" * 70000 + '"}')
    except Exception:
        pass
    t.eq("a frame over --backend-max-message: closed with 1009", await a3.close_code(), 1009)
    r = await http(d, "GET", "/v1/users/ann")
    t.eq("closes keep the origin's sessions (resume window)", (r.json() or {}).get("sessions"), 1)
    # Refusals before the upgrade.
    for name, hdrs, path, status, code in [
            ("no API key", {}, "/v1/backend?origin=x", 401, "unauthorized"),
            ("wrong API key", {"Authorization": "Bearer nope"}, "/v1/backend?origin=x", 401, "unauthorized"),
            ("no origin", {"Authorization": "Bearer " + API_KEY}, "/v1/backend", 400, "bad_origin"),
            ("bad origin", {"Authorization": "Bearer " + API_KEY}, "/v1/backend?origin=%01", 400, "bad_origin"),
            ("reserved origin", {"Authorization": "Bearer " + API_KEY}, "/v1/backend?origin=http", 409,
             "bad_origin"),
            # Which of two names owns the sessions would be a guess.
            ("origin given twice", {"Authorization": "Bearer " + API_KEY},
             "/v1/backend?origin=api-1&origin=api-2", 400, "bad_origin")]:
        ws = await RawWS.open(d, path=path, headers=hdrs)
        r = ws.response()
        ws.close()
        t.eq(f"upgrade refused: {name}", (r.status, r.error_code), (status, code))
    await other.close()
    await ws_client.close()
test_bad_input.timeout = 60


async def test_lease_and_limits(t, d, args):
    # --origin-lease-ms 600: a backend that sends nothing (and answers no
    # ping: a raw socket) loses its connection with 4008.
    ws = await RawWS.open(d, path="/v1/backend?origin=silent",
                          headers={"Authorization": "Bearer " + API_KEY})
    t.eq("raw backend upgraded", ws.response().status, 101)
    code = None
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 5:
            f = await ws.recv_frame(5)
            if f is None:
                break
            if f[1] == 0x8:
                code = int.from_bytes(f[2][:2], "big")
                break
    except Exception:
        pass
    ws.close()
    t.eq("silent past the lease: closed with 4008", code, 4008)
    # --max-origins 2: a third name is refused.
    b1 = await Backend.connect(d, "lim-1")
    b2 = await Backend.connect(d, "lim-2")
    await b1.batch([{"op": "open", "session": "lim-s1", "user": "lim"}])
    ws = await RawWS.open(d, path="/v1/backend?origin=lim-3", headers={"Authorization": "Bearer " + API_KEY})
    r = ws.response()
    ws.close()
    t.eq("over --max-origins: 503 too_many_origins", (r.status, r.error_code), (503, "too_many_origins"))
    # An idle backend whose library only answers pings keeps its lease: the
    # server pings every third of it.
    t.eq("welcome: pings every third of the lease", b1.welcome.get("heartbeat_ms"), 200)
    await asyncio.sleep(2.0)
    m = await b1.batch([{"op": "status", "session": "lim-s1", "status": "idle"}])
    t.eq("idle for 2 s with a 600 ms lease: still connected", m.get("applied"), 1)
    await b1.close()
    await b2.close()
test_lease_and_limits.timeout = 30


async def test_http_sessions(t, d, args):
    tap = await EventTap.open(d)
    body = json.dumps({"user": "fn-user", "ttl_ms": 1500, "meta": {"via": "lambda"}})
    r = await http(d, "PUT", "/v1/sessions/fn-1", body=body)
    t.check("PUT creates: 201 with created true", r.status == 201 and (r.json() or {}).get("created") is True, r)
    t.eq("201's status line says Created", r.reason, "Created")
    for i in range(4):
        await asyncio.sleep(0.8)
        r = await http(d, "PUT", "/v1/sessions/fn-1", body=body)
        t.check(f"renewal {i + 1}: 200 created false", r.status == 200 and (r.json() or {}).get("created") is False, r)
    r = await http(d, "GET", "/v1/users/fn-user")
    t.eq("renewed past its first TTL: still online", (r.json() or {}).get("status"), "online")
    await asyncio.sleep(2.8)
    r = await http(d, "GET", "/v1/users/fn-user")
    t.eq("not renewed: offline after the TTL", (r.json() or {}).get("status"), "offline")
    await tap.quiet(0.3)
    evs = [e for e in tap.events() if e.get("user_id") == "fn-user"]
    t.eq("one connect, one timeout end",
         [(e["type"], e["reason"]) for e in evs if e["type"].startswith("session.")],
         [("session.connected", "connect"), ("session.disconnected", "timeout")])
    for name, b, status, code in [
            ("bad JSON", "{", 400, "bad_json"),
            ("no user", json.dumps({"ttl_ms": 2000}), 400, "bad_user_id"),
            ("TTL too short", json.dumps({"user": "u", "ttl_ms": 5}), 400, "bad_ttl"),
            ("bad status", json.dumps({"user": "u", "ttl_ms": 2000, "status": "away"}), 400, "bad_status"),
            ("meta not an object", json.dumps({"user": "u", "ttl_ms": 2000, "meta": 3}), 400, "bad_meta"),
            ("device with a control character",
             json.dumps({"user": "u", "ttl_ms": 2000, "device": "ph\none"}), 400, "bad_device"),
            ("device not a string", json.dumps({"user": "u", "ttl_ms": 2000, "device": 7}), 400, "bad_device"),
            # whole milliseconds, as expires_in is whole seconds
            ("TTL not whole", json.dumps({"user": "u", "ttl_ms": 2000.5}), 400, "bad_ttl"),
            # "u\u0000x" would be user u to cJSON; the same user twice is
            # one user to one reader and another to the next
            ("a NUL in the user", '{"user":"u\\u0000x","ttl_ms":2000}', 400, "bad_json"),
            ("user twice", '{"user":"u","ttl_ms":2000,"user":"v"}', 400, "bad_json")]:
        r = await http(d, "PUT", "/v1/sessions/fn-2", body=b)
        t.eq(f"PUT refused: {name}", (r.status, r.error_code), (status, code))
    r = await http(d, "GET", "/v1/users/u/sessions")
    t.eq("refused PUTs stored nothing", (r.json() or {}).get("sessions"), [])
    # null is absent, as for meta and device (it was 400 bad_status)
    r = await http(d, "PUT", "/v1/sessions/fn-5",
                   body=json.dumps({"user": "null-user", "ttl_ms": 5000, "status": None, "meta": None}))
    t.eq("PUT with status null: 201, online", (r.status, ((await http(d, "GET", "/v1/users/null-user")).json() or {}).get("status")),
         (201, "online"))
    r = await http(d, "PUT", "/v1/sessions/fn-4",
                   body=json.dumps({"user": "kiosk-user", "ttl_ms": 5000, "device": "kiosk-2"}))
    t.eq("PUT with a device: 201", r.status, 201)
    r = await http(d, "GET", "/v1/users/kiosk-user")
    t.eq("the user's devices: the session's own word",
         list(((r.json() or {}).get("devices") or {}).keys()), ["kiosk-2"])
    await http(d, "PUT", "/v1/sessions/fn-3", body=json.dumps({"user": "a", "ttl_ms": 5000}))
    r = await http(d, "PUT", "/v1/sessions/fn-3", body=json.dumps({"user": "b", "ttl_ms": 5000}))
    t.eq("PUT for another user: 409 session_exists", (r.status, r.error_code), (409, "session_exists"))
    t.eq("409's status line says Conflict", r.reason, "Conflict")
    c = await Client.connect(d, "wsuser")
    r = await http(d, "PUT", "/v1/sessions/" + c.session_id, body=json.dumps({"user": "wsuser", "ttl_ms": 5000}))
    t.eq("PUT on a client's session: 409", (r.status, r.error_code), (409, "session_exists"))
    await c.close()
    tap.close()
test_http_sessions.timeout = 30


def reset_after_batch(port, origin, ops):
    """Open a backend connection, send one batch, then reset the connection
    (SO_LINGER 0) without reading the ack, as soon as the batch has reached
    presenced's host (the send queue is empty): while presenced applies a
    long batch the reset comes in, and the ack's write fails."""
    # The welcome may wait for the previous round's batch, which presenced
    # is still applying: 3,500 ops took an ASan build past 5 s on a loaded
    # two-core host (the case's own 90 s bounds the whole).
    s = socket.create_connection((HOST, port), timeout=20)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /v1/backend?origin={origin} HTTP/1.1\r\nHost: {HOST}\r\n"
               f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {API_KEY}\r\n\r\n").encode())
    got = b""
    while b"welcome" not in got:
        more = s.recv(4096)
        if not more:
            break
        got += more
    s.sendall(ws_frame(0x1, json.dumps({"type": "batch", "seq": 1, "ops": ops})))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        # SIOCOUTQ (TIOCOUTQ): bytes not yet acknowledged by the peer
        if struct.unpack("i", fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0] == 0:
            break
        time.sleep(0.0002)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    return b"welcome" in got


async def test_reset_during_batch(t, d, args):
    # A long batch (3,000 opens, then 500 refused ops), the connection reset
    # while presenced applies it: the ack cannot be written, and the
    # connection's state must not be used after that failed write closed
    # it (ASan saw a heap-use-after-free there).
    # Three rounds: five took ASan's build past 30 s in a loaded full run.
    for i in range(3):
        ops = [{"op": "open", "session": f"rst{i}-s{j}", "user": f"rst{i}-u{j}",
                "meta": {"n": j}} for j in range(3000)]
        ops += [{"op": "close", "session": f"rst{i}-nope-{j}"} for j in range(500)]
        ok = reset_after_batch(d.port, f"rst{i}", ops)
        t.check(f"reset after a batch ({i}): the connection was upgraded", ok)
        await asyncio.sleep(0.1)
    t.check("reset after a batch: presenced still runs", d.alive(), d.stderr_tail())
    b = await Backend.connect(d, "rst2")
    t.check("reset after a batch: the origin connects again", b.welcome.get("type") == "welcome",
            b.welcome)
    await b.close()
test_reset_during_batch.timeout = 90


async def test_meta_and_data_as_written(t, d, args):
    # A backend's meta and data reach readers as it wrote them: numbers keep
    # every digit (the server printed cJSON's tree again, where a number is
    # a double: 9007199254740993 came back 9007199254740992).
    meta, data = {"account": 9007199254740993}, {"msg": 1234567890123456789, "x": 0.30000000000000004}
    b = await Backend.connect(d, "digits")
    await b.batch([{"op": "open", "session": "dg-1", "user": "dg-ann", "meta": meta},
                   {"op": "join", "session": "dg-1", "channel": "dg-room", "data": data}])
    r = await http(d, "GET", "/v1/users/dg-ann/sessions")
    t.eq("a backend session's meta: every digit", [s.get("meta") for s in (r.json() or {}).get("sessions", [])], [meta])
    r = await http(d, "GET", "/v1/channels/dg-room/members")
    t.eq("a backend member's data: every digit", [m.get("data") for m in (r.json() or {}).get("members", [])], [data])
    r = await http(d, "PUT", "/v1/sessions/dg-2", body=json.dumps({"user": "dg-bob", "ttl_ms": 5000, "meta": meta}))
    t.eq("PUT /v1/sessions: 201", r.status, 201)
    r = await http(d, "GET", "/v1/users/dg-bob/sessions")
    t.eq("an HTTP session's meta: every digit", [s.get("meta") for s in (r.json() or {}).get("sessions", [])], [meta])
    await b.close()


async def channel_count(d, name):
    r = await http(d, "GET", f"/v1/channels/{name}")
    return (r.json() or {}).get("count")


async def test_channel_removal(t, d, args):
    # DELETE /v1/channels/{name}/members/{user} of a backend's session: the
    # backend is told ("left", protocol.md 5.4), at once when connected and
    # before its next welcome when detached, so that its re-assert (sync,
    # then the joins it still holds, as the SDKs do) does not undo the
    # removal. Without the notice the SDKs joined the channel again at their
    # next reconnect.
    b = await Backend.connect(d, "rm-origin")
    a = await b.batch([{"op": "open", "session": "rm-s1", "user": "rm-u"},
                       {"op": "open", "session": "rm-s2", "user": "rm-u"},
                       {"op": "open", "session": "rm-s3", "user": "rm-v"},
                       {"op": "join", "session": "rm-s1", "channel": "rm-a"},
                       {"op": "join", "session": "rm-s1", "channel": "rm-b", "data": {"n": 1}},
                       {"op": "join", "session": "rm-s3", "channel": "rm-a"}])
    t.eq("removal: six ops applied", (a.get("applied"), a.get("errors")), (6, None))
    # What a backend SDK keeps: each session's channels, re-joined after a
    # reconnect.
    held = {"rm-s1": {"rm-a", "rm-b"}, "rm-s2": set(), "rm-s3": {"rm-a"}}

    def apply_notices(frames):
        for n in frames:
            if n.get("type") == "left":
                held.get(n.get("session"), set()).discard(n.get("channel"))

    async def reassert(bk):
        await bk.sync([("rm-s1", "rm-u"), ("rm-s2", "rm-u"), ("rm-s3", "rm-v")])
        ops = [{"op": "join", "session": s, "channel": c} for s, cs in sorted(held.items()) for c in sorted(cs)]
        return await bk.batch(ops) if ops else None

    r = await http(d, "DELETE", "/v1/channels/rm-a/members/rm-u")
    t.eq("removal: DELETE answers 200", r.status, 200)
    await b.batch([])  # every frame written before this ack has been read
    left = [n for n in b.notices if n.get("type") == "left"]
    t.eq("removal: the backend is told, for the session that was in the channel only",
         left, [{"type": "left", "session": "rm-s1", "channel": "rm-a", "reason": "kicked"}])
    apply_notices(b.notices)
    t.eq("removal: the channel counts the other user only", await channel_count(d, "rm-a"), 1)
    a = await b.batch([{"op": "leave", "session": "rm-s1", "channel": "rm-a"}])
    t.eq("removal: the session is out of the channel (leave: not_joined)",
         [e["code"] for e in a.get("errors", [])], ["not_joined"])

    # A reconnect and its re-assert: the removal stays.
    b.abort()
    await asyncio.sleep(0.2)
    b = await Backend.connect(d, "rm-origin")
    t.check("removal: resumed", b.welcome.get("resumed") is True, b.welcome)
    await reassert(b)
    t.eq("removal: after a reconnect and a re-assert, still out (count 1)",
         await channel_count(d, "rm-a"), 1)
    t.eq("removal: the channel it kept is still joined", await channel_count(d, "rm-b"), 1)

    # Removed while detached: told before the next welcome.
    b.abort()
    await asyncio.sleep(0.2)
    row = await origin_row(d, "rm-origin")
    t.eq("removal: the origin is detached", row and row["state"], "detached")
    r = await http(d, "DELETE", "/v1/channels/rm-b/members/rm-u")
    t.eq("removal while detached: 200", r.status, 200)
    b = await Backend.connect(d, "rm-origin")
    t.eq("removal while detached: told before the welcome",
         b.early, [{"type": "left", "session": "rm-s1", "channel": "rm-b", "reason": "kicked"}])
    apply_notices(b.early)
    await reassert(b)
    t.eq("removal while detached: the re-assert did not join it again (count 0)",
         await channel_count(d, "rm-b"), 0)
    t.eq("removal: the other user stays in rm-a", await channel_count(d, "rm-a"), 1)
    await b.send({"type": "bye"})
    await b.close()


async def test_take_over(t, d, args):
    # One origin, two connections to one instance (protocol.md 5.1): the
    # newest wins; the older one is told origin_taken_over, closed with
    # 4009, and nothing it sends after applies; the sessions and the notices
    # pass to the newer one.
    a = await Backend.connect(d, "to-origin")
    ack = await a.batch([{"op": "open", "session": "to-s1", "user": "to-u"}])
    t.eq("take-over: the first connection opens a session", ack.get("applied"), 1)
    a2 = await Backend.connect(d, "to-origin")
    t.eq("take-over: the newer connection resumes the session",
         (a2.welcome.get("resumed"), a2.welcome.get("sessions")), (True, 1))
    try:
        await a.send({"type": "batch", "seq": 9, "ops": [{"op": "close", "session": "to-s1"}]})
    except Exception:
        pass
    frames = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(a.ws.recv(), 3)))
    except Exception:
        pass
    t.eq("take-over: the older connection is told origin_taken_over, and nothing else",
         [(f.get("type"), f.get("code")) for f in frames], [("error", "origin_taken_over")])
    t.eq("take-over: then closed with 4009", a.ws.close_code, 4009)
    t.check("take-over: with a reason a person can read", "another connection" in (a.ws.close_reason or ""),
            a.ws.close_reason)
    r = await http(d, "GET", "/v1/users/to-u")
    t.eq("take-over: what the older one sent after it was not applied (still online)",
         (r.json() or {}).get("status"), "online")
    ack = await a2.batch([{"op": "status", "session": "to-s1", "status": "idle"}])
    t.eq("take-over: the newer connection holds the session", (ack.get("applied"), ack.get("errors")), (1, None))
    r = await http(d, "DELETE", "/v1/sessions/to-s1")
    await a2.batch([])
    t.eq("take-over: notices go to the newer connection",
         [n for n in a2.notices if n.get("type") == "ended"],
         [{"type": "ended", "session": "to-s1", "reason": "kicked"}])
    await a2.send({"type": "bye"})
    await a2.close()


async def test_join_over_the_limit(t, d, args):
    # The embedded store decides a join inside the call: a join it refuses
    # (over --max-channels-per-session, 2 here) is refused in the batch's own
    # ack, and nobody lists the session in the channel. (On Redis the ack
    # comes first and a left notice with reason refused follows:
    # test_redis_backend 'join_refused'.)
    b = await Backend.connect(d, "jl-origin")
    a = await b.batch([{"op": "open", "session": "jl-s1", "user": "jl-u"},
                       {"op": "join", "session": "jl-s1", "channel": "jl-a"},
                       {"op": "join", "session": "jl-s1", "channel": "jl-b"},
                       {"op": "join", "session": "jl-s1", "channel": "jl-c"},
                       {"op": "update", "session": "jl-s1", "channel": "jl-c", "data": {"x": 1}}])
    t.eq("join over the limit: refused in the ack, the update of it too",
         (a.get("applied"), [(e["index"], e["code"]) for e in a.get("errors", [])]),
         (3, [(3, "too_many_channels"), (4, "not_joined")]))
    r = await http(d, "GET", "/v1/channels/jl-c/members")
    t.eq("join over the limit: nobody listed in the channel",
         ((r.json() or {}).get("count"), (r.json() or {}).get("members")), (0, []))
    await b.batch([])
    t.eq("join over the limit: no notice besides the ack", b.notices, [])
    await b.send({"type": "bye"})
    await b.close()


async def backend_idle_open(t, db, dt, prefix):
    """A backend open and an HTTP PUT with status idle (protocol.md 5,
    api.md): the session opens idle in one store write, so a user with no
    other session goes offline -> idle (one user.idle, reason connect) and
    never online; a second idle session of the user emits only its
    session.connected. db: the instance the backend and the PUT talk to;
    dt: the one whose event stream is read."""
    tap = await EventTap.open(dt)
    b = await Backend.connect(db, prefix + "-origin")
    u = prefix + "-u"
    a = await b.batch([{"op": "open", "session": prefix + "-s1", "user": u, "status": "idle"}])
    t.eq("backend open idle: applied", (a.get("applied"), a.get("errors")), (1, None))
    a = await b.batch([{"op": "open", "session": prefix + "-s2", "user": u, "status": "idle"}])
    t.eq("a second backend open idle: applied", (a.get("applied"), a.get("errors")), (1, None))
    hu = prefix + "-h"
    r = await http(db, "PUT", f"/v1/sessions/{prefix}-h1",
                   body=json.dumps({"user": hu, "ttl_ms": 60000, "status": "idle"}))
    t.eq("PUT with status idle: 201", r.status, 201)
    for who in (u, hu):
        r = await http(dt, "GET", f"/v1/users/{who}")
        t.eq(f"{who}: idle", (r.json() or {}).get("status"), "idle")
    await tap.quiet(0.6)
    evs = [(e.get("type"), e.get("reason"), e.get("from"), e.get("to")) for e in tap.events()
           if e.get("user_id") == u]
    t.eq("backend: offline -> idle once, no online; the second session only connects", evs, [
        ("session.connected", "connect", None, "idle"),
        ("user.idle", "connect", "offline", "idle"),
        ("session.connected", "connect", None, "idle")])
    evs = [(e.get("type"), e.get("reason"), e.get("from"), e.get("to")) for e in tap.events()
           if e.get("user_id") == hu]
    t.eq("PUT: offline -> idle once, no online", evs, [
        ("session.connected", "connect", None, "idle"),
        ("user.idle", "connect", "offline", "idle")])
    tap.close()
    await b.send({"type": "bye"})
    await b.close()


async def test_idle_open(t, d, args):
    await backend_idle_open(t, d, d, "bi")


if __name__ == "__main__":
    run([
        ("backend", {"--origin-resume-ms": str(WINDOW_MS)},
         [test_kill_after_window, test_restart_inside_window, test_presencectl_origins]),
        ("backend-bad", {"--backend-max-ops": "100", "--backend-ops-per-sec": "200",
                         "--backend-max-message": "65536"}, [test_bad_input]),
        ("backend-limits", {"--origin-lease-ms": "600", "--max-origins": "2"},
         [test_lease_and_limits]),
        ("http-sessions", {}, [test_http_sessions, test_meta_and_data_as_written]),
        ("backend-idle-open", {}, [test_idle_open]),
        ("backend-reset", {}, [test_reset_during_batch]),
        ("backend-removal", {}, [test_channel_removal]),
        ("backend-join-limit", {"--max-channels-per-session": "2"},
         [test_join_over_the_limit, test_take_over]),
    ])
