#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""HTTP/1.1 conformance (RFC 9110, RFC 9112) as a client, a proxy or an
attacker meets it, over raw sockets: each test sends what such a peer sends
and asserts what it would see (status, headers, where the next response
starts, whether the connection stays open).

Not repeated here: smuggling heads (test_hostile 'http_strictness'), header
and body limits in general (test_limits), the WebSocket handshake's
refusals (test_auth) and frame errors (tests/data/malformed)."""

import asyncio
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403
from harness import _parse_head  # noqa: E402

FLAGS = {"--max-header-bytes": "4096", "--max-body": "65536",
         "--http-request-timeout-ms": "3000"}

AUTH = f"Authorization: Bearer {API_KEY}\r\n"


async def exchange(d, raw, timeout=3.0):
    """Send raw bytes, read until EOF or timeout. (data, eof)"""
    r, w = await asyncio.open_connection(HOST, d.port)
    w.write(raw if isinstance(raw, bytes) else raw.encode("latin-1"))
    await w.drain()
    data, eof = b"", False
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            chunk = await asyncio.wait_for(r.read(65536), left)
        except asyncio.TimeoutError:
            break
        except (ConnectionError, OSError):
            eof = True
            break
        if not chunk:
            eof = True
            break
        data += chunk
    w.close()
    return data, eof


def responses(data, methods):
    """Split data into responses, one per request method in methods (a HEAD
    response has no body whatever its Content-Length says). Returns a list of
    (status, headers, body), (None, {}, b"") for each one missing; what is
    left over ends the list as bytes."""
    out = []
    for m in methods:
        i = data.find(b"\r\n\r\n")
        if i < 0:
            out.append((None, {}, b""))
            continue
        status, headers = _parse_head(data[:i])
        data = data[i + 4:]
        n = 0 if m == "HEAD" or status in (100, 204, 304) else int(headers.get("content-length", 0))
        out.append((status, headers, data[:n]))
        data = data[n:]
    out.append(data)
    return out


def error_code(body):
    try:
        return json.loads(body)["error"]["code"]
    except Exception:
        return None


async def test_head(t, d, args):
    """RFC 9110 9.3.2: HEAD is GET without the body, and a server that has GET
    on a resource should have HEAD there too. Each HEAD is followed on the same
    connection by a GET of /healthz: a body sent after the HEAD's headers would
    be read as the start of that response."""
    c = await Client.connect(d, "headed")
    paths = ["/v1/users/headed", "/v1/users?ids=headed,other", "/v1/users/headed/sessions",
             "/v1/users/headed/availability", "/v1/users/headed/message",
             "/v1/users/headed/channels", "/v1/channels", "/v1/origins", "/healthz",
             "/v1/users/%ff"]
    for p in paths:
        get, _ = await exchange(d, f"GET {p} HTTP/1.1\r\nHost: x\r\n{AUTH}Connection: close\r\n\r\n")
        g = responses(get, ["GET"])[0]
        raw = (f"HEAD {p} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n"
               "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, eof = await exchange(d, raw)
        rs = responses(data, ["HEAD", "GET"])
        ok = rs[1][0] is not None and rs[0][0] == g[0]
        if ok:
            h = rs[0][1]
            ok = (h.get("content-type") == g[1].get("content-type") and
                  h.get("content-length") == str(len(g[2])) and
                  h.get("connection") == "keep-alive" and
                  rs[1][0] == 200 and b'"status"' in rs[1][2] and rs[2] == b"" and eof)
        t.check(f"HEAD {p}: GET's status and headers ({g[0]}), no body, the connection "
                "kept for the next request", ok, data[:600])
    # The event stream: its headers, no event, and no stream left open.
    data, eof = await exchange(d, f"HEAD /v1/events HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n", 2.0)
    rs = responses(data, ["HEAD"])
    t.check("HEAD /v1/events: 200 text/event-stream, no body, closed",
            len(rs) == 2 and rs[0][0] == 200 and
            rs[0][1].get("content-type") == "text/event-stream" and rs[1] == b"" and eof,
            data[:400])
    # Without the key HEAD is refused as GET is.
    data, _ = await exchange(d, "HEAD /v1/users/headed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    rs = responses(data, ["HEAD"])
    t.check("HEAD without the API key: 401, no body", rs[0][0] == 401 and rs[-1] == b"", data[:300])
    # 405 names HEAD among the methods wherever GET is one.
    for m, p in [("POST", "/v1/users/headed"), ("POST", "/v1/users"), ("POST", "/v1/events"),
                 ("DELETE", "/v1/channels"), ("POST", "/v1/users/headed/availability"),
                 ("POST", "/v1/users/headed/channels")]:
        data, _ = await exchange(d, f"{m} {p} HTTP/1.1\r\nHost: x\r\n{AUTH}"
                                    "Content-Length: 0\r\nConnection: close\r\n\r\n")
        rs = responses(data, [m])
        allow = [x.strip() for x in rs[0][1].get("allow", "").split(",")]
        t.check(f"{m} {p}: 405 with Allow naming GET and HEAD",
                rs[0][0] == 405 and "GET" in allow and "HEAD" in allow, data[:300])
    await c.close()


async def test_expect_continue(t, d, args):
    """RFC 9110 10.1.1: a server that gets "Expect: 100-continue" answers at
    once, with 100 (Continue) or a final status. curl sends it for bodies over
    1 KB and waits a second for it; other clients wait for good. The body is
    only sent once the 100 has come."""
    body = json.dumps({"user_ids": ["cont"]}).encode()
    head = (f"POST /v1/users/query HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
    r, w = await asyncio.open_connection(HOST, d.port)
    w.write(head.encode())
    await w.drain()
    try:
        interim = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 2.0)
    except asyncio.TimeoutError:
        interim = b"(nothing within 2 s)"
    t.check("Expect: 100-continue: 100 Continue before the body is sent",
            interim.startswith(b"HTTP/1.1 100 "), interim)
    w.write(body)
    await w.drain()
    try:
        rest = await asyncio.wait_for(r.read(), 3.0)
    except asyncio.TimeoutError:
        rest = b""
    w.close()
    rs = responses(rest, ["POST"])
    t.check("... then the body is read and answered: 200 with the user",
            rs[0][0] == 200 and b'"cont"' in rs[0][2], rest[:300])
    # A body over the limit: the final answer at once (413), no 100.
    data, eof = await exchange(d, f"POST /v1/users/query HTTP/1.1\r\nHost: x\r\n{AUTH}"
                                  "Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n", 2.0)
    t.check("Expect: 100-continue with a body over --max-body: 413 at once, no 100, closed",
            data.startswith(b"HTTP/1.1 413 ") and b" 100 " not in data and eof, data[:300])
    # The body sent at once anyway (a client that does not wait): one answer.
    data, eof = await exchange(d, head.encode() + body)
    rs = responses(data, ["POST"])
    t.check("Expect: 100-continue with the body already sent: 200 (a 100 before it allowed)",
            (rs[0][0] == 200 or (rs[0][0] == 100 and responses(data, ["POST", "POST"])[1][0] == 200))
            and eof, data[:300])


async def test_host_required(t, d, args):
    """RFC 9112 3.2: "A server MUST respond with a 400 (Bad Request) status
    code to any HTTP/1.1 request message that lacks a Host header field." A
    proxy in front may route by Host; presenced reads it for the same-origin
    check of a WebSocket handshake and the demo's DNS-rebinding check."""
    data, eof = await exchange(d, f"GET /v1/users/nohost HTTP/1.1\r\n{AUTH}\r\n")
    rs = responses(data, ["GET"])
    t.check("HTTP/1.1 without Host: 400 bad_request, then closed",
            rs[0][0] == 400 and error_code(rs[0][2]) == "bad_request" and eof, data[:300])
    data, eof = await exchange(d, "GET /healthz HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n")
    t.check("HTTP/1.1 with an empty Host (allowed by RFC 9110 7.2): 200",
            data.startswith(b"HTTP/1.1 200 "), data[:300])
    data, eof = await exchange(d, "GET /healthz HTTP/1.0\r\n\r\n")
    rs = responses(data, ["GET"])
    t.check("HTTP/1.0 without Host (it has none): 200, then closed",
            rs[0][0] == 200 and b'"status"' in rs[0][2] and eof, data[:300])


async def test_absolute_form(t, d, args):
    """RFC 9112 3.2.2: "a server MUST accept the absolute-form in requests",
    the form a client sends when it believes it talks to a proxy (and some
    proxies forward as is). The path is the URL's, the host its authority."""
    data, _ = await exchange(d, f"GET http://x/v1/users/absolute HTTP/1.1\r\nHost: x\r\n{AUTH}"
                                "Connection: close\r\n\r\n")
    rs = responses(data, ["GET"])
    t.check("GET http://x/v1/users/absolute: 200, that user",
            rs[0][0] == 200 and b'"user_id":"absolute"' in rs[0][2], data[:300])
    data, _ = await exchange(d, "GET HTTPS://X:443/healthz?probe=1 HTTP/1.1\r\nHost: x\r\n"
                                "Connection: close\r\n\r\n")
    t.check("GET HTTPS://X:443/healthz?probe=1 (scheme case-insensitive, a port, a query): 200",
            data.startswith(b"HTTP/1.1 200 ") and b'"status"' in data, data[:300])
    data, _ = await exchange(d, f"GET http://x/v1/users?ids=a,b HTTP/1.1\r\nHost: x\r\n{AUTH}"
                                "Connection: close\r\n\r\n")
    t.check("GET http://x/v1/users?ids=a,b: the query read from the URL",
            data.startswith(b"HTTP/1.1 200 ") and b'"user_id":"b"' in data, data[:300])
    # The handshake's same-origin check reads the URL's authority, not Host
    # (RFC 9112 3.2.2: the Host header is ignored then).
    ok_origin = f"http://{HOST}:{d.port}"
    ws = await RawWS.open(d, path=f"http://{HOST}:{d.port}/v1/ws?token={token('absws')}",
                          headers={"Host": "elsewhere.example", "Origin": ok_origin})
    t.eq("WebSocket handshake to an absolute URL of this server, Origin that server: 101",
         ws.status, 101)
    ws.close()
    ws = await RawWS.open(d, path=f"http://elsewhere.example/v1/ws?token={token('absws')}",
                          headers={"Origin": ok_origin})
    t.check("... to another host's absolute URL with a matching Host header: 403",
            ws.status == 403 and ws.response().error_code == "origin_not_allowed",
            (ws.status, ws.body))
    ws.close()
    for target, why in [("http://user@x/healthz", "userinfo (RFC 9110 4.2.4)"),
                        ("ftp://x/healthz", "another scheme"),
                        ("http:///healthz", "an empty host")]:
        data, eof = await exchange(d, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n")
        rs = responses(data, ["GET"])
        t.check(f"GET {target} ({why}): 400 bad_request, closed",
                rs[0][0] == 400 and error_code(rs[0][2]) == "bad_request" and eof, data[:300])


async def test_uri_too_long(t, d, args):
    """RFC 9110 15.5.15: a target longer than the server will read is 414 (URI
    Too Long), which tells a client to shorten the URL (fewer ids in
    ?ids=, POST /v1/users/query instead), where 431 tells it to drop headers.
    --max-header-bytes 4096 here."""
    ids = ",".join(f"user{i}" for i in range(700))
    data, eof = await exchange(d, f"GET /v1/users?ids={ids} HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n")
    rs = responses(data, ["GET"])
    t.check("a 5 KB target: 414 uri_too_long (JSON), then closed",
            rs[0][0] == 414 and error_code(rs[0][2]) == "uri_too_long" and eof, data[:300])
    data, eof = await exchange(d, f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 5000}\r\n\r\n")
    rs = responses(data, ["GET"])
    t.check("a short target, a 5 KB header: still 431 headers_too_large",
            rs[0][0] == 431 and error_code(rs[0][2]) == "headers_too_large" and eof, data[:300])


async def test_chunked_body(t, d, args):
    """A chunked request body (RFC 9112 7.1) is read, extensions ignored; one
    whose chunk sizes add up past --max-body (65536 here) is refused (413) as
    soon as the size line says so, not after the bytes have been sent."""
    body = json.dumps({"user_ids": ["chunky"]}).encode()
    chunks = b"5;ext=1\r\n" + body[:5] + b"\r\n" + b"%x\r\n" % (len(body) - 5) + body[5:] + b"\r\n0\r\n\r\n"
    data, eof = await exchange(d, (f"POST /v1/users/query HTTP/1.1\r\nHost: x\r\n{AUTH}"
                                   "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode() + chunks)
    rs = responses(data, ["POST"])
    t.check("a chunked body in two chunks, one with an extension: 200",
            rs[0][0] == 200 and b'"chunky"' in rs[0][2], data[:300])
    head = (f"POST /v1/users/query HTTP/1.1\r\nHost: x\r\n{AUTH}"
            "Transfer-Encoding: chunked\r\n\r\n")
    for label, sizes in [("one chunk of 1 GB", b"40000000\r\n"),
                         ("a chunk of 60 KB, then one of 60 KB",
                          b"f000\r\n" + b"a" * 0xf000 + b"\r\nf000\r\n")]:
        t0 = time.monotonic()
        data, eof = await exchange(d, head.encode() + sizes, 2.0)
        rs = responses(data, ["POST"])
        t.check(f"{label} declared: 413 body_too_large at once, then closed",
                rs[0][0] == 413 and error_code(rs[0][2]) == "body_too_large" and eof
                and time.monotonic() - t0 < 1.5, data[:300])


async def test_transfer_codings(t, d, args):
    """RFC 9112 6.1: a transfer coding the server does not know is 501, and an
    HTTP/1.0 message with Transfer-Encoding has faulty framing (a 1.0 proxy
    would not have decoded it): either way the body's end is not known, so the
    connection is closed after the answer."""
    body = b'{"user_ids":["tc"]}'
    gz = (f"POST /v1/users/query HTTP/1.1\r\nHost: x\r\n{AUTH}"
          "Transfer-Encoding: gzip, chunked\r\n\r\n%x\r\n" % len(body)).encode() + body + b"\r\n0\r\n\r\n"
    data, eof = await exchange(d, gz)
    rs = responses(data, ["POST"])
    t.check("Transfer-Encoding: gzip, chunked: 501 not_implemented, then closed",
            rs[0][0] == 501 and error_code(rs[0][2]) == "not_implemented" and eof, data[:300])
    old = (f"POST /v1/users/query HTTP/1.0\r\nHost: x\r\n{AUTH}"
           "Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(body)).encode() + body + b"\r\n0\r\n\r\n"
    data, eof = await exchange(d, old)
    rs = responses(data, ["POST"])
    t.check("HTTP/1.0 with Transfer-Encoding: chunked: 400 bad_request, then closed",
            rs[0][0] == 400 and error_code(rs[0][2]) == "bad_request" and eof, data[:300])
    ok = (f"POST /v1/users/query HTTP/1.1\r\nHost: x\r\n{AUTH}Connection: close\r\n"
          "Transfer-Encoding: Chunked\r\n\r\n%x\r\n" % len(body)).encode() + body + b"\r\n0\r\n\r\n"
    data, eof = await exchange(d, ok)
    t.check("Transfer-Encoding: Chunked (case-insensitive): 200",
            data.startswith(b"HTTP/1.1 200 ") and b'"tc"' in data, data[:300])


async def test_refused_upgrade_says_close(t, d, args):
    """An upgrade request that is refused ends its connection (the bytes after
    it may be frames already): the answer must say so (Connection: close, RFC
    9112 9.6), or a client that reuses connections sends its next request
    into a socket being closed."""
    for label, h in [("version 8", {"Sec-WebSocket-Version": "8"}),
                     ("no key", {"Sec-WebSocket-Key": None}),
                     ("a bad token", None)]:
        ws = await RawWS.open(d, tok="bad" if h is None else token("refused"), headers=h)
        try:
            eof = await asyncio.wait_for(ws.reader.read(1), 2.0) == b""
        except (asyncio.TimeoutError, ConnectionError):
            eof = False
        ws.close()
        t.check(f"a refused handshake ({label}): {ws.status} says Connection: close, and closes",
                ws.status in (400, 401, 426) and "close" in
                [x.strip().lower() for x in ws.headers.get("connection", "").split(",")] and eof,
                (ws.status, ws.headers, eof))


async def test_chunked_framing(t, d, args):
    """The chunked body's framing read as strictly as the head (RFC 9112 7.1,
    docs/security.md "request smuggling"): a proxy that frames a body by the
    grammar and one that is lenient see different requests in the same bytes
    when the chunk data is not followed by CRLF, a line ends in a bare LF or
    a trailer line is folded. Each is one 400 bad_request, then closed, and
    the request behind it is never answered."""
    body = b'{"user_ids":["framed"]}'
    head = (f"POST /v1/users/query HTTP/1.1\r\nHost: x\r\n{AUTH}"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    size = b"%x" % len(body)
    inner = f"GET /v1/users/smuggled HTTP/1.1\r\nHost: x\r\n{AUTH}Connection: close\r\n\r\n".encode()
    cases = [
        ("chunk data followed by two other bytes than CRLF", size + b"\r\n" + body + b"XX0\r\n\r\n"),
        ("chunk data followed by a bare LF", size + b"\r\n" + body + b"\n0\r\n\r\n"),
        ("whitespace after a chunk size", size + b" \r\n" + body + b"\r\n0\r\n\r\n"),
        ("a trailer line ending in a bare LF", size + b"\r\n" + body + b"\r\n0\r\nX-T: 1\n\r\n"),
        ("a folded trailer line", size + b"\r\n" + body + b"\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"),
        ("whitespace before a trailer's colon", size + b"\r\n" + body + b"\r\n0\r\nX-T : 1\r\n\r\n"),
    ]
    for label, chunks in cases:
        data, eof = await exchange(d, head + chunks + inner)
        rs = responses(data, ["POST", "GET"])
        t.check(f"{label}: one 400 bad_request, then closed",
                rs[0][0] == 400 and error_code(rs[0][2]) == "bad_request" and rs[1][0] is None
                and eof and b"smuggled" not in data, data[:400])
    # Well-formed: an extension (with BWS before ';') and a trailer field.
    ok = size + b" ;x=1\r\n" + body + b"\r\n0\r\nX-T: 1\r\n\r\n"
    data, eof = await exchange(d, head + ok + inner)
    rs = responses(data, ["POST", "GET"])
    t.check("a chunk extension after BWS and a trailer field: 200, then the next request 200",
            rs[0][0] == 200 and b'"framed"' in rs[0][2] and rs[1][0] == 200
            and b'"smuggled"' in rs[1][2], data[:400])


async def test_date_header(t, d, args):
    """RFC 9110 6.6.1: an origin server with a clock "MUST generate a Date
    header field in all 2xx, 3xx, and 4xx responses" (caches and clients
    compute ages and skew from it), in the IMF-fixdate form (5.6.7)."""
    import email.utils
    checks = [("GET /healthz", "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
              ("GET /v1/users/dated", f"GET /v1/users/dated HTTP/1.1\r\nHost: x\r\n{AUTH}"
                                       "Connection: close\r\n\r\n"),
              ("a 404", "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
              ("a 400 (unparsable)", "GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n"),
              ("HEAD /v1/events", f"HEAD /v1/events HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n")]
    for label, raw in checks:
        data, _ = await exchange(d, raw, 2.0)
        rs = responses(data, ["HEAD" if raw.startswith("HEAD") else "GET"])
        date = rs[0][1].get("date", "")
        ok = bool(re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|"
                               r"Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT", date))
        if ok:
            ok = abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) < 5
        t.check(f"{label}: {rs[0][0]} with a Date header, IMF-fixdate, now", ok, data[:300])
    sse = await SSE.open(d)
    date = sse.headers.get("date", "")
    sse.close()
    t.check("GET /v1/events: 200 with a Date header", date.endswith(" GMT"), sse.headers)


async def test_upgrade_required(t, d, args):
    """RFC 9110 15.5.22: a 426 "MUST send an Upgrade header field to indicate
    the required protocol(s)", and 7.8: with "upgrade" in Connection, so that
    no intermediary forwards it. A client offered an unsupported WebSocket
    version learns from it (and from Sec-WebSocket-Version, RFC 6455 4.4)
    what to retry with."""
    for path in ("/v1/ws?token=" + token("ver"), "/v1/backend?origin=ver"):
        ws = await RawWS.open(d, path=path, headers={"Sec-WebSocket-Version": "8",
                                                     "Authorization": f"Bearer {API_KEY}"})
        conn = [x.strip().lower() for x in ws.headers.get("connection", "").split(",")]
        t.check(f"GET {path.split('?')[0]} with version 8: 426 with Upgrade: websocket, "
                "Connection naming upgrade, Sec-WebSocket-Version: 13",
                ws.status == 426 and ws.headers.get("upgrade", "").lower() == "websocket"
                and "upgrade" in conn and ws.headers.get("sec-websocket-version") == "13",
                (ws.status, ws.headers))
        ws.close()


async def test_connection_management(t, d, args):
    """RFC 9112 9.3 and 9.6: an HTTP/1.0 request closes unless it asks for
    keep-alive; "Connection: close" ends the connection after its answer and
    what was pipelined behind it is not answered; a body on a GET is read
    past, not taken for the next request."""
    data, eof = await exchange(d, "GET /healthz HTTP/1.0\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n")
    rs = responses(data, ["GET", "GET"])
    t.check("HTTP/1.0: one answer saying Connection: close, then closed",
            rs[0][0] == 200 and rs[0][1].get("connection") == "close" and rs[1][0] is None and eof,
            data[:300])
    data, eof = await exchange(d, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                                  "GET /healthz HTTP/1.0\r\n\r\n")
    rs = responses(data, ["GET", "GET"])
    t.check("HTTP/1.0 with Connection: keep-alive: kept (keep-alive said), the next answered",
            rs[0][1].get("connection") == "keep-alive" and rs[1][0] == 200 and eof, data[:400])
    data, eof = await exchange(d, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                  "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    rs = responses(data, ["GET", "GET"])
    t.check("Connection: close: one answer saying close, the pipelined request unanswered",
            rs[0][0] == 200 and rs[0][1].get("connection") == "close" and rs[1][0] is None and eof,
            data[:300])
    data, eof = await exchange(d, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n"
                                  "GET /nope HTTP/1.1\r\n"
                                  f"GET /v1/users/after HTTP/1.1\r\nHost: x\r\n{AUTH}Connection: close\r\n\r\n")
    rs = responses(data, ["GET", "GET"])
    t.check("a GET with a 20-byte body that looks like a request: the body skipped, two answers",
            rs[0][0] == 200 and rs[1][0] == 200 and b'"after"' in rs[1][2] and eof, data[:400])


async def test_field_value_whitespace(t, d, args):
    """RFC 9112 5: a field value "might be preceded and/or followed by optional
    whitespace (OWS)", which is not part of it. An API key or a WebSocket
    key followed by a space (a hand-made header, a proxy's rewrite) is the
    same key."""
    data, _ = await exchange(d, f"GET /v1/users/ows HTTP/1.1\r\nHost: x\r\n"
                                f"Authorization: Bearer {API_KEY} \t\r\nConnection: close\r\n\r\n")
    t.check("Authorization: Bearer <key> followed by SP HT: 200",
            data.startswith(b"HTTP/1.1 200 ") and b'"ows"' in data, data[:300])
    ws = await RawWS.open(d, tok=token("ows"), headers={"Sec-WebSocket-Version": "13 ",
                                                      "Upgrade": "websocket\t"})
    t.eq("a handshake with Sec-WebSocket-Version: 13 and Upgrade: websocket followed by "
         "whitespace: 101", ws.status, 101)
    ws.close()


async def test_empty_lines_trickled(t, d, args):
    """RFC 9112 2.2: a server "SHOULD ignore at least one empty line (CRLF)
    received prior to the request-line", but a client that sends nothing
    else is a slowloris: each CRLF resets the idle timer, so only the
    request timeout (--http-request-timeout-ms 3000 here, counted from the
    first byte) can end it."""
    data, eof = await exchange(d, "\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    t.check("two empty lines before a request: ignored, the request answered",
            data.startswith(b"HTTP/1.1 200 ") and eof, data[:200])
    r, w = await asyncio.open_connection(HOST, d.port)
    t0 = time.monotonic()
    data, eof = b"", False
    while time.monotonic() - t0 < 8 and not eof:
        try:
            w.write(b"\r\n")
            await w.drain()
        except (ConnectionError, OSError):
            pass
        try:
            chunk = await asyncio.wait_for(r.read(4096), 0.25)
            data += chunk
            eof = not chunk
        except asyncio.TimeoutError:
            pass
        except (ConnectionError, OSError):
            eof = True
    w.close()
    rs = responses(data, ["GET"])
    t.check("CRLF after CRLF, every 250 ms: 408 request_timeout, then closed, within 6 s",
            rs[0][0] == 408 and error_code(rs[0][2]) == "request_timeout" and eof
            and time.monotonic() - t0 < 6, (round(time.monotonic() - t0, 1), data[:200]))


async def test_www_authenticate(t, d, args):
    """RFC 9110 15.5.2: "The server generating a 401 response MUST send a
    WWW-Authenticate header field" naming how to authenticate: the API's
    401 did, a WebSocket handshake's 401 token_* did not."""
    for label, tok in [("no token", None), ("a malformed token", "x.y"),
                       ("an expired token", token("wwwauth", exp_in=-3600))]:
        ws = await RawWS.open(d, tok=tok)
        t.check(f"handshake with {label}: 401 with WWW-Authenticate: Bearer",
                ws.status == 401 and ws.headers.get("www-authenticate", "").startswith("Bearer"),
                (ws.status, ws.headers))
        ws.close()
    data, _ = await exchange(d, "GET /v1/users/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    rs = responses(data, ["GET"])
    t.check("the API without a key: 401 with WWW-Authenticate: Bearer",
            rs[0][0] == 401 and rs[0][1].get("www-authenticate", "").startswith("Bearer"), data[:300])


async def trickle(d, pieces, gap=0.05, timeout=3.0):
    """Send pieces one by one, gap apart (each its own read on the server),
    then read until EOF or timeout. (data, eof)"""
    r, w = await asyncio.open_connection(HOST, d.port)
    for p in pieces:
        w.write(p)
        await w.drain()
        await asyncio.sleep(gap)
    data, eof = b"", False
    deadline = time.monotonic() + timeout
    while not eof and time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(r.read(65536), deadline - time.monotonic())
        except asyncio.TimeoutError:
            break
        except (ConnectionError, OSError):
            chunk = b""
        data += chunk
        eof = not chunk
    w.close()
    return data, eof


async def test_unknown_method(t, d, args):
    """RFC 9110 15.6.2: a method the server does not recognise gets 501 (Not
    Implemented); 405 is for a method it knows that the resource does not
    take. http-parser fails on any method outside its list, and such a
    request was answered 400 bad_request "invalid HTTP method", as garbage
    is; one it knows but presenced never implements (PROPFIND) got 405 with
    an Allow header. Both are now 501 not_implemented, closed; bytes that
    are not a request line (method SP target SP HTTP/1.x, the method a
    token) stay 400, as "HELLO THERE" or a TLS handshake."""
    head = " /v1/users HTTP/1.1\r\nHost: x\r\n" + AUTH + "\r\n"
    for m in ["BREW", "PROPFIND", "get", "M-SEARCHING", "X_CUSTOM.1"]:
        data, eof = await exchange(d, m + head)
        rs = responses(data, ["GET"])
        t.check(f"{m} /v1/users: 501 not_implemented (JSON), Connection: close, closed",
                rs[0][0] == 501 and error_code(rs[0][2]) == "not_implemented"
                and rs[0][1].get("content-type") == "application/json"
                and rs[0][1].get("connection") == "close" and eof, data[:300])
    # Cut inside the method, as a slow client or a small segment cuts it:
    # the parser has refused "BR", the rest of the method decides.
    data, eof = await trickle(d, [b"B", b"R", b"EW", b" /heal", b"thz HTTP/1", b".1\r",
                                  b"\nHost: x\r\n\r\n"])
    rs = responses(data, ["GET"])
    t.check("BREW sent in pieces (B|R|EW| /heal|thz HTTP/1|.1...): 501 not_implemented, closed",
            rs[0][0] == 501 and error_code(rs[0][2]) == "not_implemented" and eof, data[:300])
    # Not a method: 400, whole or in pieces.
    for label, pieces in [("a control byte in the method", [b"BR\x01EW" + head.encode()]),
                          ("no space after the method", [b"BREW\r\nHost: x\r\n\r\n"]),
                          ("not HTTP (HELLO THERE)", [b"HELLO THERE\r\n\r\n"]),
                          ("no version", [b"BREW /healthz\r\nHost: x\r\n\r\n"]),
                          ("HTTP/2.0", [b"BREW /healthz HTTP/2.0\r\nHost: x\r\n\r\n"]),
                          ("in pieces, a space in the version", [b"BR", b"EW / HTTP/1.1 \r\n\r\n"]),
                          ("a space first", [b" GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"]),
                          ("binary", [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"]),
                          ("BR then a control byte, in pieces", [b"BR", b"\x00EW" + head.encode()]),
                          ("BR then a tab, in pieces", [b"BR", b"EW\t/ HTTP/1.1\r\n\r\n"])]:
        data, eof = await trickle(d, pieces)
        rs = responses(data, ["GET"])
        t.check(f"{label}: 400 bad_request, closed",
                rs[0][0] == 400 and error_code(rs[0][2]) == "bad_request" and eof, data[:300])
    # A method that never ends is timed out as any request (3 s here).
    t0 = time.monotonic()
    data, eof = await trickle(d, [b"BREW", b"BREWBREW"], timeout=6.0)
    rs = responses(data, ["GET"])
    t.check("a method that never ends: 408 request_timeout within 5 s, closed",
            rs[0][0] == 408 and error_code(rs[0][2]) == "request_timeout" and eof
            and time.monotonic() - t0 < 5, (round(time.monotonic() - t0, 1), data[:200]))
    # No CORS (docs/api.md, Authentication): a browser's preflight is 501
    # like any method presenced does not implement, and allows no origin.
    data, eof = await exchange(d, "OPTIONS /v1/users/bob HTTP/1.1\r\nHost: x\r\n"
                                  "Origin: https://app.example.com\r\n"
                                  "Access-Control-Request-Method: GET\r\n\r\n")
    rs = responses(data, ["OPTIONS"])
    t.check("CORS preflight (OPTIONS with Origin): 501, no Access-Control-* header, closed",
            rs[0][0] == 501 and not any(k.startswith("access-control-") for k in rs[0][1])
            and eof, data[:300])
    # A method presenced has, on a resource without it: still 405 + Allow,
    # and the connection kept.
    data, eof = await exchange(d, "DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    rs = responses(data, ["DELETE", "GET"])
    t.check("DELETE /healthz: still 405 with Allow: GET, HEAD, the connection kept",
            rs[0][0] == 405 and rs[0][1].get("allow") == "GET, HEAD" and rs[1][0] == 200, data[:500])
    r = await http(d, "GET", "/healthz", auth=False)
    t.eq("after them all: a new client is served", r.status, 200)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime + stime


async def test_fd_limit(t, d, args):
    """Idle connections past the open file limit (ulimit -n 100, so 50
    connections and 25 waiting for a 503 at most, half the spare, the rest
    dropped at once; EMFILE if anything else takes the descriptors):
    accept() failing must not make the loop spin (the listener stays
    readable), and once they are gone new clients are served."""
    class Limited(Daemon):
        def argv(self):
            return ["prlimit", "--nofile=100:100"] + super().argv()

    d2 = Limited(args.presenced, {"--max-connections-per-ip": "0"}, "nofile-100")
    try:
        d2.start()
    except Exception as e:
        t.check("under ulimit -n 100: presenced starts", False, e)
        d2.cleanup()
        return
    socks = []
    try:
        for _ in range(200):
            try:
                socks.append(socket.create_connection((HOST, d2.port), timeout=2))
            except OSError:
                break
        await asyncio.sleep(0.5)
        c0 = cpu_ticks(d2.pid)
        await asyncio.sleep(2.0)
        used = cpu_ticks(d2.pid) - c0
        t.check(f"{len(socks)} idle connections past the file limit: the daemon idles "
                "(under 0.2 s of CPU in 2 s)", used < 20, f"{used} ticks")
        for s in socks:
            s.close()
        socks = []
        await asyncio.sleep(1.0)
        r = await http(d2, "GET", "/healthz", auth=False)
        t.eq("after they closed: a new client is served", r.status, 200)
    finally:
        for s in socks:
            s.close()
        d2.stop()
        d2.cleanup()


if __name__ == "__main__":
    run([
        ("http-rfc", FLAGS,
         [test_head, test_expect_continue, test_host_required, test_absolute_form,
          test_uri_too_long, test_chunked_body, test_transfer_codings,
          test_refused_upgrade_says_close, test_chunked_framing,
          test_date_header, test_upgrade_required, test_connection_management,
          test_field_value_whitespace, test_empty_lines_trickled, test_www_authenticate,
          test_unknown_method, test_fd_limit]),
    ])
