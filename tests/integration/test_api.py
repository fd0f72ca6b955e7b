#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Backend HTTP API (docs/protocol.md section 2): users one and many (GET and
POST), sessions with meta from the token, kick (client closed 4003, events with
reason kicked), API key refusals, 404/405/400/413, /healthz, /metrics."""

import asyncio
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


async def test_api_key(t, d, args):
    for name, auth in [("no Authorization", False),
                       ("wrong key", "Bearer not-the-key"),
                       ("key without Bearer", API_KEY),
                       ("Basic scheme", "Basic " + b64url(API_KEY + ":x")),
                       ("key with a suffix", "Bearer " + API_KEY + "x"),
                       ("key prefix only", "Bearer " + API_KEY[:-1])]:
        for path in ("/v1/users/alice", "/v1/events", "/v1/users?ids=a"):
            r = await http(d, "GET", path, auth=auth)
            t.check(f"API key: {name} on GET {path} -> 401 unauthorized",
                    r.status == 401 and r.error_code == "unauthorized", r)
    r = await http(d, "DELETE", "/v1/sessions/whatever", auth=False)
    t.check("API key: DELETE /v1/sessions without key -> 401", r.status == 401 and r.error_code == "unauthorized", r)
    r = await http(d, "POST", "/v1/users/query", body={"user_ids": ["a"]}, auth=False)
    t.check("API key: POST /v1/users/query without key -> 401", r.status == 401 and r.error_code == "unauthorized", r)
    r = await http(d, "GET", "/v1/users/alice", auth="bearer " + API_KEY)
    t.note(f"lower-case 'bearer' scheme answered {r.status}")


async def test_get_user(t, d, args):
    t0 = now_ms()
    c1 = await Client.connect(d, "bob", meta={"device": "phone", "n": 1})
    c2 = await Client.connect(d, "bob", meta={"device": "laptop"})
    r = await http(d, "GET", "/v1/users/bob")
    j = r.json() or {}
    t.eq("GET /v1/users/{id}: 200", r.status, 200)
    t.check("GET /v1/users/{id}: JSON content type", "application/json" in r.headers.get("content-type", ""), r.headers)
    t.eq("GET /v1/users/{id}: user_id", j.get("user_id"), "bob")
    t.eq("GET /v1/users/{id}: status online", j.get("status"), "online")
    t.eq("GET /v1/users/{id}: sessions 2", j.get("sessions"), 2)
    t.check("GET /v1/users/{id}: since/last_seen/version integers",
            all(is_int(j.get(k)) for k in ("since", "last_seen", "version"))
            and t0 - 2000 <= j.get("since", 0) <= now_ms() + 2000, j)
    r = await http(d, "GET", "/v1/users/nobody-ever")
    j = r.json() or {}
    t.check("GET /v1/users/{unknown}: 200 offline, sessions 0, since/last_seen 0",
            r.status == 200 and j.get("status") == "offline" and j.get("sessions") == 0
            and j.get("since") == 0 and j.get("last_seen") == 0, r)
    # URL-encoded ids.
    c3 = await Client.connect(d, "zoë smith")
    r = await http(d, "GET", "/v1/users/zo%C3%AB%20smith")
    t.check("GET /v1/users/{percent-encoded UTF-8 id}: found online",
            r.status == 200 and (r.json() or {}).get("user_id") == "zoë smith"
            and (r.json() or {}).get("status") == "online", r)
    r = await http(d, "GET", "/v1/users/" + "u" * 129)
    t.check("GET /v1/users/{129-byte id}: 400 bad_user_id", r.status == 400 and r.error_code == "bad_user_id", r)
    r = await http(d, "GET", "/v1/users/a%01b")
    t.check("GET /v1/users/{id with control char}: 400 bad_user_id",
            r.status == 400 and r.error_code == "bad_user_id", r)

    # Sessions with meta.
    r = await http(d, "GET", "/v1/users/bob/sessions")
    j = r.json() or {}
    t.eq("GET /v1/users/{id}/sessions: 200", r.status, 200)
    t.eq("sessions: user_id", j.get("user_id"), "bob")
    ss = {s.get("session_id"): s for s in j.get("sessions", [])}
    t.eq("sessions: both session ids listed", sorted(ss), sorted([c1.session_id, c2.session_id]))
    s1 = ss.get(c1.session_id, {})
    t.eq("sessions: meta from the token", s1.get("meta"), {"device": "phone", "n": 1})
    t.eq("sessions: other session's meta", ss.get(c2.session_id, {}).get("meta"), {"device": "laptop"})
    t.eq("sessions: status online", s1.get("status"), "online")
    t.check("sessions: connected/since integers, instance string",
            is_int(s1.get("connected")) and is_int(s1.get("since")) and isinstance(s1.get("instance"), str), s1)
    t_idle = now_ms()
    await c2.send({"type": "status", "status": "idle", "id": 1})
    await c2.expect_type("ack", 3)
    t_ack = now_ms()
    r = await http(d, "GET", "/v1/users/bob/sessions")
    ss = {s.get("session_id"): s for s in (r.json() or {}).get("sessions", [])}
    t.eq("sessions: a session set idle is listed idle", ss.get(c2.session_id, {}).get("status"), "idle")
    # protocol.md: times are milliseconds since the epoch. The session's
    # since is the time of its status change, to the millisecond.
    since = ss.get(c2.session_id, {}).get("since", 0)
    t.check("sessions: since of a status change is in ms (between the request and its ack)",
            t_idle - 20 <= since <= t_ack + 20, (t_idle, since, t_ack))
    c4 = await Client.connect(d, "no-meta")
    r = await http(d, "GET", "/v1/users/no-meta/sessions")
    ss = (r.json() or {}).get("sessions", [])
    t.check("sessions: meta is null when the token had none", len(ss) == 1 and "meta" in ss[0]
            and ss[0]["meta"] is None, r)
    await c4.close()
    r = await http(d, "GET", "/v1/users/nobody-ever/sessions")
    t.check("sessions of unknown user: 200 with empty list",
            r.status == 200 and (r.json() or {}).get("sessions") == [], r)

    # Many users.
    r = await http(d, "GET", "/v1/users?ids=bob,nobody-ever,zo%C3%AB%20smith")
    j = r.json() or {}
    us = j.get("users", [])
    t.eq("GET /v1/users?ids=: 200", r.status, 200)
    t.eq("GET /v1/users?ids=: every asked user answered", sorted(u.get("user_id") for u in us),
         sorted(["bob", "nobody-ever", "zoë smith"]))
    if [u.get("user_id") for u in us] != ["bob", "nobody-ever", "zoë smith"]:
        t.note("users are not answered in the order asked (protocol.md does not say)")
    m = {u.get("user_id"): u for u in us}
    t.check("GET /v1/users?ids=: statuses",
            m.get("bob", {}).get("status") == "online" and m.get("nobody-ever", {}).get("status") == "offline"
            and m.get("bob", {}).get("sessions") == 2, us)
    r = await http(d, "POST", "/v1/users/query", body={"user_ids": ["nobody-ever", "bob"]})
    j = r.json() or {}
    us = j.get("users", [])
    t.check("POST /v1/users/query: same answer",
            r.status == 200 and sorted(u.get("user_id") for u in us) == ["bob", "nobody-ever"]
            and {u.get("user_id"): u for u in us}.get("bob", {}).get("status") == "online"
            and {u.get("user_id"): u for u in us}.get("bob", {}).get("sessions") == 2, r)
    ids = ",".join(f"u{i}" for i in range(1000))
    r = await http(d, "POST", "/v1/users/query", body={"user_ids": ids.split(",")})
    t.check("POST /v1/users/query with 1000 ids: 200 with 1000 users",
            r.status == 200 and len((r.json() or {}).get("users", [])) == 1000, r.status)
    r = await http(d, "POST", "/v1/users/query", body={"user_ids": [f"u{i}" for i in range(1001)]})
    t.check("POST /v1/users/query with 1001 ids: 400 bad_request",
            r.status == 400 and r.error_code == "bad_request", r)
    r = await http(d, "POST", "/v1/users/query", body="{not json")
    t.check("POST /v1/users/query bad JSON: 400 bad_json", r.status == 400 and r.error_code == "bad_json", r)
    # What a reader other than cJSON would read otherwise: bob's NUL-cut id
    # answered as bob, the first of two user_ids, an object with text after
    # it. Refused as client messages and tokens are (docs/api.md, Errors).
    for name, b in (("an id with \\u0000", '{"user_ids":["bob\\u0000x"]}'),
                    ("user_ids twice", '{"user_ids":["bob"],"user_ids":["eve"]}'),
                    ("text after the object", '{"user_ids":["bob"]} {"user_ids":["eve"]}'),
                    ("not an object", '["bob"]')):
        r = await http(d, "POST", "/v1/users/query", body=b)
        t.check(f"POST /v1/users/query, {name}: 400 bad_json",
                r.status == 400 and r.error_code == "bad_json" and "users" not in (r.json() or {}), r)
    r = await http(d, "POST", "/v1/users/query", body='{"user_ids":["bob\\\\u0000x"]}')
    t.check("POST /v1/users/query, an id holding a backslash then u0000 (text, not a NUL): answered as it is",
            r.status == 200 and [u.get("user_id") for u in (r.json() or {}).get("users", [])] == ["bob\\u0000x"], r)
    r = await http(d, "POST", "/v1/users/query", body={"ids": ["a"]})
    t.check("POST /v1/users/query without user_ids: 400 bad_request",
            r.status == 400 and r.error_code == "bad_request", r)
    r = await http(d, "POST", "/v1/users/query", body={"user_ids": ["ok", ""]})
    t.check("POST /v1/users/query with an empty id: 400 bad_user_id",
            r.status == 400 and r.error_code == "bad_user_id", r)
    # docs/api.md: an empty id is a bad id (issue 18: they were dropped).
    for q in ("a,,b", ",", "", "a,", ",a"):
        r = await http(d, "GET", "/v1/users?ids=" + q)
        t.check(f"GET /v1/users?ids={q} (an empty item): 400 bad_user_id",
                r.status == 400 and r.error_code == "bad_user_id", r)
    # C1 control characters (U+0080..U+009F, here NEL U+0085) are control
    # characters too (issue 18).
    for label, path in (("in ids=", "/v1/users?ids=a,x%C2%85y"),
                        ("in the path", "/v1/users/x%C2%85y"),
                        ("U+009F in the path", "/v1/users/x%C2%9Fy")):
        r = await http(d, "GET", path)
        t.check(f"a C1 control character {label}: 400 bad_user_id",
                r.status == 400 and r.error_code == "bad_user_id", r)
    r = await http(d, "GET", "/v1/users/x%C2%A0y")
    t.eq("U+00A0 (the first character after C1) is fine in an id", r.status, 200)
    ws = await RawWS.open(d, tok=token("nel\u0085user"))
    r = ws.response()
    ws.close()
    t.check("a token whose sub holds NEL (U+0085): 401 token_claims",
            r.status == 401 and r.error_code == "token_claims", r)
    c4 = await Client.connect(d, "c1-watcher", watch="*")
    await c4.send({"type": "subscribe", "users": ["ok", "a\u0085b"], "id": 9})
    m = await c4.expect_type("error", 3, id=9)
    t.check("subscribe to an id holding NEL: error bad_user_id",
            m is not None and m.get("code") == "bad_user_id", m)
    await c4.close()
    r = await http(d, "GET", "/v1/users?ids=a,%01")
    t.check("GET /v1/users?ids= with a control character: 400 bad_user_id",
            r.status == 400 and r.error_code == "bad_user_id", r)
    r = await http(d, "GET", "/v1/users")
    t.check("GET /v1/users without ids: 400 bad_request (or 200 with no users)",
            (r.status == 400 and r.error_code == "bad_request")
            or (r.status == 200 and (r.json() or {}).get("users") == []), r)
    for c in (c1, c2, c3):
        await c.close()


async def test_kick(t, d, args):
    sse = await SSE.open(d)
    t.eq("SSE opened", sse.status, 200)
    c = await Client.connect(d, "kicky", meta={"k": 1})
    other = await Client.connect(d, "kicky")
    r = await http(d, "DELETE", f"/v1/sessions/{c.session_id}")
    t.check("DELETE /v1/sessions/{id}: 200 {kicked: id}",
            r.status == 200 and (r.json() or {}).get("kicked") == c.session_id, r)
    code = await c.wait_closed(3)
    t.eq("kick: client closed with 4003", code, 4003)
    errs = [m for m in c.backlog if m.get("type") == "error"]
    t.check("kick: an error kicked before the close", errs and errs[-1].get("code") == "kicked", c.backlog)
    ev, evs = await sse.until(lambda e: ev_is(e, "session.disconnected", session_id=c.session_id), 3)
    t.check("kick: session.disconnected with reason kicked",
            ev is not None and ev["data"].get("reason") == "kicked" and ev["data"].get("user_id") == "kicky",
            ev_brief(evs))
    p = await other.ping("x")
    t.check("kick: the user's other session is untouched", p is not None)
    r = await http(d, "GET", "/v1/users/kicky")
    t.check("kick: user still online with 1 session",
            (r.json() or {}).get("status") == "online" and (r.json() or {}).get("sessions") == 1, r)
    r = await http(d, "DELETE", f"/v1/sessions/{other.session_id}")
    code = await other.wait_closed(3)
    t.eq("kick last session: client closed with 4003", code, 4003)
    ev, evs = await sse.until(lambda e: ev_is(e, "user.offline", user_id="kicky"), 3)
    t.check("kick last session: user.offline with reason kicked",
            ev is not None and ev["data"].get("reason") == "kicked", ev_brief(evs))
    r = await http(d, "DELETE", f"/v1/sessions/{c.session_id}")
    t.check("DELETE an already-kicked session: 404 no_session", r.status == 404 and r.error_code == "no_session", r)
    r = await http(d, "DELETE", "/v1/sessions/no-such-session")
    t.check("DELETE unknown session: 404 no_session", r.status == 404 and r.error_code == "no_session", r)
    sse.close()


async def test_errors(t, d, args):
    for method, path, status, code in [
        ("GET", "/v1/nope", 404, "not_found"),
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/v1/users/bob/sessions/extra", 404, "not_found"),
        ("PUT", "/v1/users/bob", 405, "method_not_allowed"),
        ("DELETE", "/v1/users/bob", 405, "method_not_allowed"),
        ("POST", "/v1/users/bob/sessions", 405, "method_not_allowed"),
        ("GET", "/v1/sessions/abc", 405, "method_not_allowed"),
        ("GET", "/v1/users/query", None, None),
        ("POST", "/v1/events", 405, "method_not_allowed"),
        ("POST", "/healthz", 405, "method_not_allowed"),
    ]:
        r = await http(d, method, path, body="{}" if method in ("PUT", "POST") else None)
        if status is None:
            # GET /v1/users/query reads as the user "query": 200 or 405 both reasonable.
            t.check(f"{method} {path}: 200 (user 'query') or 405", r.status in (200, 405), r)
            continue
        t.check(f"{method} {path}: {status} {code}", r.status == status and r.error_code == code, r)
        if status == 405:
            t.check(f"{method} {path}: 405 has an Allow header", "allow" in r.headers, r.headers)
    raw = build_request("POST", "/v1/users/query",
                        {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json",
                         "Content-Length": "200000000"}, None)
    r = await http_raw(d.port, raw)
    t.check("body over the limit (Content-Length 200 MB): 413 body_too_large",
            r.status == 413 and r.error_code == "body_too_large", r)


async def test_healthz_metrics(t, d, args):
    r = await http(d, "GET", "/healthz", auth=False)
    j = r.json() or {}
    t.check("/healthz: 200 {status: ok, instance, uptime_s}",
            r.status == 200 and j.get("status") == "ok" and isinstance(j.get("instance"), str)
            and is_int(j.get("uptime_s")), r)
    c = await Client.connect(d, "metric-user")
    c2 = await Client.connect(d, "metric-user2")
    # /metrics needs the API key: its counts include invisible users, whom
    # everyone else is shown offline (docs/security.md).
    for auth, what in ((False, "no key"), ("Bearer wrong-key", "a wrong key")):
        for method in ("GET", "HEAD"):
            r = await http(d, method, "/metrics", auth=auth)
            t.check(f"/metrics, {method} with {what}: 401 unauthorized, WWW-Authenticate: Bearer, "
                    "no figures", r.status == 401 and r.headers.get("www-authenticate") == "Bearer"
                    and (method == "HEAD" or r.error_code == "unauthorized")
                    and b"presenced_" not in r.body, r)
    r = await http(d, "GET", "/metrics")
    t.eq("/metrics: 200 with the API key", r.status, 200)
    t.check("/metrics: text/plain content type", r.headers.get("content-type", "").startswith("text/plain"), r.headers)
    text = r.body.decode("utf-8", "replace")
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})?'
                        r' (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)( -?[0-9]+)?$')
    bad = []
    names = {}
    types = {}
    for line in text.split("\n"):
        if line == "":
            continue
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) != 4 or parts[3] not in ("counter", "gauge", "histogram", "summary", "untyped"):
                bad.append(line)
            else:
                types[parts[2]] = parts[3]
            continue
        if line.startswith("#"):
            continue
        m = sample.match(line)
        if not m:
            bad.append(line)
            continue
        names.setdefault(m.group(1), []).append(line)
    t.check("/metrics: every line is valid Prometheus text", not bad and names, bad[:5])
    t.check("/metrics: ends with a newline", text.endswith("\n"))
    t.check("/metrics: has presenced_sessions", "presenced_sessions" in names, sorted(names)[:40])
    t.check("/metrics: has presenced_events_total", "presenced_events_total" in names, sorted(names)[:40])
    vals = [float(l.rsplit(" ", 1)[1]) for l in names.get("presenced_sessions", []) if "{" not in l]
    t.check("/metrics: presenced_sessions counts the 2 open sessions",
            vals and vals[0] >= 2, names.get("presenced_sessions"))
    typed = [n for n in names if not any(n == b or n.startswith(b + "_") for b in types)]
    t.check("/metrics: every metric has a # TYPE line", not typed, typed[:10])
    ev = names.get("presenced_events_total", [])
    t.check("/metrics: presenced_events_total labelled by type",
            any('type="user.online"' in l or "user.online" in l or "user_online" in l for l in ev), ev)
    before = sum(float(l.rsplit(" ", 1)[1]) for l in names.get("presenced_events_total", []))
    c3 = await Client.connect(d, "metric-user3")
    await c3.close()
    await asyncio.sleep(0.2)
    r = await http(d, "GET", "/metrics")
    after = sum(float(l.rsplit(" ", 1)[1]) for l in r.body.decode().split("\n")
                if l.startswith("presenced_events_total"))
    t.check("/metrics: presenced_events_total grows with events (+4 for a connect and close)",
            after - before >= 4, (before, after))
    await c.close()
    await c2.close()


async def test_metrics_open(t, d, args):
    # --metrics-open: a scrape on a private port needs no key.
    r = await http(d, "GET", "/metrics", auth=False)
    t.check("--metrics-open: /metrics 200 without a key",
            r.status == 200 and b"presenced_sessions" in r.body, r)
    r = await http(d, "GET", "/v1/users/x", auth=False)
    t.eq("--metrics-open: the API still needs the key", r.status, 401)


async def test_keep_alive(t, d, args):
    # Three requests pipelined on one connection, answered in order.
    reader, writer = await asyncio.open_connection(HOST, d.port)
    h = {"Authorization": f"Bearer {API_KEY}", "Connection": None}
    writer.write(build_request("GET", "/v1/users/ka1", h) + build_request("GET", "/healthz", h)
                 + build_request("GET", "/v1/users/ka3", h))
    await writer.drain()
    data = b""
    answers = []
    deadline = time.monotonic() + 5
    while len(answers) < 3 and time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if not chunk:
            break
        data += chunk
        while True:
            r = harness_complete(data)
            if r is None:
                break
            answers.append(r[0])
            data = r[1]
    writer.close()
    t.check("keep-alive: three pipelined requests answered in order",
            [(a.status, (a.json() or {}).get("user_id", (a.json() or {}).get("status"))) for a in answers]
            == [(200, "ka1"), (200, "ok"), (200, "ka3")], answers)


def harness_complete(data):
    """One complete Content-Length response off the front of data: (Response, rest) or None."""
    i = data.find(b"\r\n\r\n")
    if i < 0:
        return None
    from harness import _parse_head
    status, headers = _parse_head(data[:i])
    n = int(headers.get("content-length", "0"))
    if len(data) < i + 4 + n:
        return None
    return Response(status, headers, data[i + 4:i + 4 + n]), data[i + 4 + n:]


async def test_plus_in_a_path(t, d, args):
    # A '+' in a path is itself (RFC 3986); only a query's form encoding
    # reads it as a space. /v1/users/ann+tag@example.com asked about
    # "ann tag@example.com": curl users and any client that does not
    # encode '+' in a path got another user's answer.
    c = await Client.connect(d, "ann+tag@example.com")
    for path in ("/v1/users/ann+tag@example.com", "/v1/users/ann%2Btag@example.com"):
        r = await http(d, "GET", path)
        j = r.json() or {}
        t.eq(f"GET {path}: that user, online", (j.get("user_id"), j.get("status")),
             ("ann+tag@example.com", "online"))
    r = await http(d, "GET", "/v1/users/ann+tag@example.com/sessions")
    t.eq("its sessions by a bare '+': the one session", len((r.json() or {}).get("sessions", [])), 1)
    r = await http(d, "GET", "/v1/users/a%20b")
    t.eq("%20 is still a space", (r.json() or {}).get("user_id"), "a b")
    r = await http(d, "GET", "/v1/users?ids=ann+tag@example.com")
    t.eq("in a query a '+' is still a space (form encoding)",
         [u.get("user_id") for u in (r.json() or {}).get("users", [])], ["ann tag@example.com"])
    await c.close()


async def test_body_not_utf8(t, d, args):
    # JSON is UTF-8 (RFC 8259 8.1). A meta holding the byte 0xFF was taken
    # (201) and passed on as written: the event stream then carried bytes
    # that are no UTF-8, and the documented Python consumer
    # (raw.decode("utf-8")) stopped on them, as a webhook receiver's JSON
    # reader would refuse the batch.
    sse = await SSE.open(d)
    bad = [b"a\xffb", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]
    for i, junk in enumerate(bad):
        body = b'{"user":"u8-user","ttl_ms":30000,"meta":{"n":"' + junk + b'"}}'
        r = await http(d, "PUT", f"/v1/sessions/u8-{i}", body=body)
        t.check(f"PUT /v1/sessions meta with {junk!r}: 400 bad_json saying UTF-8",
                r.status == 400 and r.error_code == "bad_json" and b"UTF-8" in r.body, r)
    r = await http(d, "POST", "/v1/users/query", body=b'{"user_ids":["a\xffb"]}')
    t.check("POST /v1/users/query with a 0xFF byte: 400 bad_json",
            r.status == 400 and r.error_code == "bad_json", r)
    r = await http(d, "PUT", "/v1/sessions/u8-ok",
                   body='{"user":"u8-user","ttl_ms":30000,"meta":{"n":"zoë € 😀"}}'.encode())
    t.eq("UTF-8 text in meta is taken: 201", r.status, 201)
    ev, _ = await sse.until(lambda e: ev_is(e, "session.connected", user_id="u8-user"), 5)
    t.check("the stream carries the good session, meta as sent",
            ev is not None and ev["data"].get("meta") == {"n": "zoë € 😀"}, ev)
    t.check("no other session of that user was created",
            [s_["session_id"] for s_ in ((await http(d, "GET", "/v1/users/u8-user/sessions")).json()
                                         or {}).get("sessions", [])] == ["u8-ok"])
    sse.close()
    await http(d, "DELETE", "/v1/sessions/u8-ok")


async def test_user_named_query(t, d, args):
    # Any 1..128-byte id is a user's, "query" too: GET /v1/users/query was
    # answered 405 (Allow: POST), so an SDK's getUser("query") failed.
    c = await Client.connect(d, "query")
    r = await http(d, "GET", "/v1/users/query")
    j = r.json() or {}
    t.eq("GET /v1/users/query: the user named query, online",
         (r.status, j.get("user_id"), j.get("status")), (200, "query", "online"))
    r = await http(d, "HEAD", "/v1/users/query")
    t.eq("HEAD /v1/users/query: 200", r.status, 200)
    r = await http(d, "POST", "/v1/users/query", body={"user_ids": ["query"]})
    t.eq("POST /v1/users/query is still the query",
         [(u.get("user_id"), u.get("status")) for u in (r.json() or {}).get("users", [])],
         [("query", "online")])
    r = await http(d, "DELETE", "/v1/users/query")
    t.check("DELETE /v1/users/query: 405, Allow names GET, HEAD, POST",
            r.status == 405 and r.headers.get("allow") == "GET, HEAD, POST", r)
    await c.close()


async def test_repeated_query_parameters(t, d, args):
    # A list in Python's requests (params={"ids": [...]}), Go's url.Values
    # and URLSearchParams.append comes as one ids= per element. presenced
    # read the first one alone: 200 with bob only, carol silently missing.
    import urllib.parse
    c = await Client.connect(d, "rep-carol")
    q = urllib.parse.urlencode({"ids": ["rep-bob", "rep-carol"]}, doseq=True)
    t.eq("a list as urlencode(doseq) writes it: ids twice", q, "ids=rep-bob&ids=rep-carol")
    r = await http(d, "GET", "/v1/users?" + q)
    j = r.json() or {}
    t.eq("GET /v1/users?ids=a&ids=b: 200, one entry per id, in order",
         (r.status, [(u.get("user_id"), u.get("status")) for u in j.get("users", [])]),
         (200, [("rep-bob", "offline"), ("rep-carol", "online")]))
    r = await http(d, "GET", "/v1/users?ids=a,b&other=1&ids=c%2Cd")
    t.eq("ids=a,b&...&ids=c%2Cd: a, b and 'c,d'",
         [u.get("user_id") for u in (r.json() or {}).get("users", [])], ["a", "b", "c,d"])
    r = await http(d, "GET", "/v1/users?ids=a&ids=")
    t.check("an empty second ids: 400 bad_user_id", r.status == 400 and r.error_code == "bad_user_id", r)
    # A single value given twice is refused, not guessed at.
    for path, name in (("/v1/channels/room:rep/members?limit=5&limit=500", "limit"),
                       ("/v1/channels?prefix=a&prefix=b", "prefix"),
                       ("/v1/channels?after=a&limit=2&after=b", "after")):
        r = await http(d, "GET", path)
        t.check(f"GET {path}: 400 bad_request naming {name}",
                r.status == 400 and r.error_code == "bad_request" and name in r.body.decode(), r)
    await c.close()


if __name__ == "__main__":
    run([
        ("api", {}, [test_api_key, test_get_user, test_kick, test_errors, test_healthz_metrics,
                 test_keep_alive, test_plus_in_a_path, test_repeated_query_parameters,
                 test_user_named_query, test_body_not_utf8]),
        ("api-metrics-open", {"--metrics-open": ""}, [test_metrics_open]),
    ])
