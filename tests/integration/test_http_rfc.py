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
    (status, headers, body); what is left over ends the list as bytes."""
    out = []
    for m in methods:
        i = data.find(b"\r\n\r\n")
        if i < 0:
            break
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
        ok = len(rs) == 3 and rs[0][0] == g[0]
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
        allow = [x.strip() for x in rs[0][1].get("allow", "").split(",")] if len(rs) > 1 else []
        t.check(f"{m} {p}: 405 with Allow naming GET and HEAD",
                rs[0][0] == 405 and "GET" in allow and "HEAD" in allow, data[:300])
    await c.close()


if __name__ == "__main__":
    run([
        ("http-rfc", FLAGS, [test_head]),
    ])
