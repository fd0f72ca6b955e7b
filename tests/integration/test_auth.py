#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Pre-upgrade refusals of GET /v1/ws (docs/protocol.md section 1.1): every
token error as HTTP 401 with a JSON error body, 400 bad_upgrade, 426
bad_version; and that good tokens (with aud, nbf in the past, meta, watch)
are accepted."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403


def claims(**kw):
    c = {"sub": "alice", "exp": int(time.time()) + 3600, "aud": JWT_AUDIENCE}
    for k, v in kw.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


async def refused(t, d, name, tok, status, code, headers=None, path=None):
    ws = await RawWS.open(d, tok=tok, headers=headers, path=path)
    r = ws.response()
    ws.close()
    ok = r.status == status and r.error_code == code
    t.check(f"{name}: HTTP {status} {code}", ok, r)
    if r.status != 101:
        j = r.json()
        t.check(f"{name}: JSON error body with a message",
                isinstance(j, dict) and isinstance(j.get("error", {}).get("message"), str)
                and "application/json" in r.headers.get("content-type", ""), r)
    return r


async def test_token_refusals(t, d, args):
    now = int(time.time())
    cases = [
        ("no token", None, "token_missing"),
        ("token not 3 parts", "abc.def", "token_malformed"),
        ("token bad base64url", "@@@.###.$$$", "token_malformed"),
        ("token payload not JSON", make_jwt("not json"), "token_malformed"),
        ("token header not JSON", make_jwt(claims(), header="{nope"), "token_malformed"),
        ("expired token", make_jwt(claims(exp=now - 3600)), "token_expired"),
        ("bad signature", make_jwt(claims(), secret="some-other-secret"), "token_signature"),
        ("tampered payload", None, "token_signature"),
        ("alg none", make_jwt(claims(), header={"alg": "none", "typ": "JWT"}, sign="none"), "token_alg"),
        ("alg none with a valid-looking HS256 signature",
         make_jwt(claims(), header={"alg": "none", "typ": "JWT"}), "token_alg"),
        ("RS256 header", make_jwt(claims(), header={"alg": "RS256", "typ": "JWT"}), "token_alg"),
        ("HS512 header", make_jwt(claims(), header={"alg": "HS512", "typ": "JWT"}), "token_alg"),
        ("wrong aud", make_jwt(claims(aud="someone-else")), "token_audience"),
        ("no aud while --jwt-audience is set", make_jwt(claims(aud=None)), "token_audience"),
        ("iat in the future beyond the 5 s leeway", make_jwt(claims(iat=now + 60)),
         "token_not_yet_valid"),
        ("nbf in the future", make_jwt(claims(nbf=now + 3600)), "token_not_yet_valid"),
        ("missing sub", make_jwt(claims(sub=None)), "token_claims"),
        ("missing exp", make_jwt(claims(exp=None)), "token_claims"),
        ("sub not a string", make_jwt(claims(sub=42)), "token_claims"),
        ("exp not a number", make_jwt(claims(exp="tomorrow")), "token_claims"),
        ("sub empty", make_jwt(claims(sub="")), "token_claims"),
        ("sub of 129 bytes", make_jwt(claims(sub="u" * 129)), "token_claims"),
        ("sub with a control character", make_jwt(claims(sub="a\nb")), "token_claims"),
    ]
    good = make_jwt(claims())
    h, p, s = good.split(".")
    tampered = h + "." + b64url(json.dumps(claims(sub="mallory"))) + "." + s
    for name, tok, code in cases:
        if name == "tampered payload":
            tok = tampered
        await refused(t, d, name, tok, 401, code)
    # Two tokens (a good one and another, or the same twice): which one a
    # proxy in front logged or checked is a guess; refused, not the first
    # taken. Two statuses likewise.
    other = make_jwt(claims(sub="mallory"))
    await refused(t, d, "token given twice", None, 401, "token_malformed",
                  path=f"/v1/ws?token={good}&token={other}")
    await refused(t, d, "the same token given twice", None, 401, "token_malformed",
                  path=f"/v1/ws?token={good}&token={good}")
    await refused(t, d, "status given twice", None, 400, "bad_status",
                  path=f"/v1/ws?status=idle&status=online&token={good}")
    long_tok = make_jwt(claims(meta={"pad": "x" * 4500}))
    await refused(t, d, "token over 4096 bytes (headers under the limit)", long_tok, 401, "token_malformed")
    # Nothing was admitted: no session for these users.
    r = await http(d, "GET", "/v1/users/alice/sessions")
    t.check("refused tokens created no session",
            r.status == 200 and (r.json() or {}).get("sessions") == [], r)


async def test_token_accepted(t, d, args):
    now = int(time.time())
    for name, c in [
        ("plain token", claims(sub="ok1")),
        ("token with our aud in an array", claims(sub="ok2", aud=["other", JWT_AUDIENCE])),
        ("token with iat 3 s ahead (within the leeway)", claims(sub="ok5", iat=now + 3)),
        ("token with nbf in the past", claims(sub="ok3", nbf=now - 60)),
        ("token with watch and meta", claims(sub="ok4", watch=["x"], meta={"device": "phone"})),
        ("128-byte sub", claims(sub="u" * 128)),
        ("UTF-8 sub", claims(sub="zoë-𝄞")),
    ]:
        ws = await RawWS.open(d, tok=make_jwt(c))
        ok = ws.status == 101
        w = await ws.recv_json(3) if ok else None
        t.check(f"accepted: {name} -> 101 and welcome",
                ok and w and w.get("type") == "welcome" and w.get("user_id") == c["sub"], (ws.status, ws.body, w))
        ws.close()


async def test_upgrade_errors(t, d, args):
    tok = token("upg")
    await refused(t, d, "no Upgrade header", tok, 400, "bad_upgrade", headers={"Upgrade": None})
    await refused(t, d, "no Connection header", tok, 400, "bad_upgrade", headers={"Connection": None})
    await refused(t, d, "no Sec-WebSocket-Key", tok, 400, "bad_upgrade",
                  headers={"Sec-WebSocket-Key": None})
    await refused(t, d, "Upgrade: h2c", tok, 400, "bad_upgrade", headers={"Upgrade": "h2c"})
    await refused(t, d, "Sec-WebSocket-Key not the base64 of 16 bytes", tok, 400, "bad_upgrade",
                  headers={"Sec-WebSocket-Key": "c2hvcnQ="})
    # RFC 6455: the key and the version appear once (11.3.1, 11.3.5), and
    # the request is HTTP/1.1 at least (4.1). Two keys were read as the
    # first, an HTTP/1.0 request upgraded.
    base = (f"GET /v1/ws?token={tok} HTTP/1.1\r\nHost: {HOST}:{d.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
    for name, raw, code in (
            ("two Sec-WebSocket-Key headers",
             base + "Sec-WebSocket-Key: b3RoZXIga2V5IGhlcmUhIQ==\r\n\r\n", "bad_request"),
            ("two Sec-WebSocket-Version headers", base + "Sec-WebSocket-Version: 13\r\n\r\n",
             "bad_request"),
            ("an HTTP/1.0 upgrade", base.replace("HTTP/1.1", "HTTP/1.0", 1) + "\r\n", "bad_upgrade")):
        r = await http_raw(d.port, raw.encode())
        t.check(f"{name}: 400 {code}", r.status == 400 and r.error_code == code, r)
    # Order of the checks (protocol.md 1.1): upgrade headers before version before token.
    await refused(t, d, "no Upgrade and no token: the upgrade check answers first", None, 400,
                  "bad_upgrade", headers={"Upgrade": None})
    await refused(t, d, "version 8 and an expired token: the version check answers first",
                  token("upg", exp_in=-3600), 426, "bad_version", headers={"Sec-WebSocket-Version": "8"})
    r = await refused(t, d, "Sec-WebSocket-Version 8", tok, 426, "bad_version",
                      headers={"Sec-WebSocket-Version": "8"})
    t.eq("426 carries Sec-WebSocket-Version: 13", r.headers.get("sec-websocket-version"), "13")
    # Missing version: either reading of the table is reasonable (not an
    # upgrade -> 400, or not 13 -> 426).
    ws = await RawWS.open(d, tok=tok, headers={"Sec-WebSocket-Version": None})
    r = ws.response()
    ws.close()
    t.check("no Sec-WebSocket-Version: 400 bad_upgrade or 426 bad_version",
            (r.status, r.error_code) in ((400, "bad_upgrade"), (426, "bad_version")), r)
    # Case-insensitive header values are fine.
    ws = await RawWS.open(d, tok=tok, headers={"Upgrade": "WebSocket", "Connection": "keep-alive, Upgrade"})
    t.eq("Upgrade: WebSocket / Connection: keep-alive, Upgrade -> 101", ws.status, 101)
    ws.close()
    # Plain GET /v1/ws without any upgrade headers and no token.
    r = await http(d, "GET", "/v1/ws", auth=False)
    t.check("plain GET /v1/ws without token: 400 bad_upgrade (upgrade checked before the token)",
            r.status == 400 and r.error_code == "bad_upgrade", r)
    r = await http(d, "POST", "/v1/ws?token=" + tok, body="", auth=False)
    t.check("POST /v1/ws: 405 method_not_allowed", r.status == 405 and r.error_code == "method_not_allowed", r)


async def test_token_policy(t, d, args):
    """--jwt-issuer and --jwt-max-lifetime-s (docs/protocol.md 1.1)."""
    now = int(time.time())
    iss = "https://auth.example.com"
    cases = [
        ("no iss while --jwt-issuer is set", claims(), "token_issuer"),
        ("another iss", claims(iss="https://evil.example.com"), "token_issuer"),
        ("a lifetime of 2 h over --jwt-max-lifetime-s 3600",
         claims(iss=iss, iat=now, exp=now + 7200), "token_lifetime"),
        ("no iat and exp a year ahead", claims(iss=iss, exp=now + 365 * 86400), "token_lifetime"),
    ]
    for name, c, code in cases:
        await refused(t, d, name, make_jwt(c), 401, code)
    ws = await RawWS.open(d, tok=make_jwt(claims(sub="pol", iss=iss, iat=now, exp=now + 3600)))
    w = await ws.recv_json(3) if ws.status == 101 else None
    ws.close()
    t.check("our iss and a 1 h lifetime: 101 and welcome",
            w is not None and w.get("type") == "welcome", (ws.status, ws.body))


async def test_api_key_is_not_the_jwt_secret(t, d, args):
    """The same value as API key and JWT secret would let whoever sees the
    key (every backend request carries it) sign tokens for any user, and
    whoever mints tokens call the backend API: refused at start."""
    import subprocess
    same = "same-secret-for-both-0123456789abcdef"
    env = {"PATH": os.environ.get("PATH", ""), "PRESENCED_API_KEY": same, "PRESENCED_JWT_SECRET": same}
    p = subprocess.Popen([args.presenced, "--listen", "127.0.0.1:%d" % free_port()],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        _, err = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # it started: stop it
        p.kill()
        _, err = p.communicate()
        p.returncode = "still running after 5 s"
    t.check("the API key equal to the JWT secret: refused at start (exit 2), saying why, not echoed",
            p.returncode == 2 and b"api-key" in err and b"jwt-secret" in err
            and same.encode() not in err, (p.returncode, err[-300:]))


if __name__ == "__main__":
    run([
        ("auth", {}, [test_token_refusals, test_token_accepted, test_upgrade_errors,
                      test_api_key_is_not_the_jwt_secret]),
        ("policy", {"--jwt-issuer": "https://auth.example.com", "--jwt-max-lifetime-s": "3600"},
         [test_token_policy], {"fresh_client": False}),  # its tokens need an iss
    ])
