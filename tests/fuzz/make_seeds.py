#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpora of the fuzzers (tests/fuzz/corpus/<harness>/).

Deterministic: run it again after changing it and commit the result. Each
seed is named by the SHA-1 of its bytes, as libFuzzer names its own units.
"""
import base64
import hashlib
import hmac
import json
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
# The secrets of fuzz_jwt.c (byte 1 of its input picks one), as presenced
# runs with them: the shortest accepted (32 bytes), openssl rand -base64 48
# (one HMAC block), -hex 64 (longer than a block) and demo mode's 32 random
# bytes. fuzz_http's server uses the second (its API key is 44 bytes).
JWT_SECRETS = [
    b"fuzz-jwt-secret-32-bytes-long!!!",
    b"q9Zb2Xr7Qk1mVt8Hc3Lw5Np0Ys6Jd4Fa+Ge9Ru2Ti7Oh1Kx5Bv3Mz8Cn0Pl6Ws4/",
    b"3f9a1c7e5b2d8046e1f3a5c7b9d0e2f4a6c8b0d2e4f6a8c0b2d4e6f8a0c2b4d6"
    b"e8f0a2c4b6d8e0f2a4c6b8d0e2f4a6c8b0d2e4f6a8c0b2d4e6f8a0c2b4d6e8f1",
    bytes.fromhex("8e0013fa7c000091d24bee05603ac91fb7220084" "5df019a63e71cc089b44e500"),
]
SECRET = JWT_SECRETS[1]                   # fuzz_http's --jwt-secret
API_KEY = "fuzz-api-key-Yk3Qm9Tz5Rw1Hs7Lc2Vn8Bd4Jg6Pxa="  # fuzz_http's --api-key (44)
NOW = 1700000000                           # fuzz_http's fixed clock
rng = random.Random(6455)


def b64u(b):
    if isinstance(b, str):
        b = b.encode()
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(claims, header=None, secret=SECRET, sig=None):
    h = header if isinstance(header, str) else json.dumps(header or {"alg": "HS256", "typ": "JWT"},
                                                          separators=(",", ":"))
    c = claims if isinstance(claims, str) else json.dumps(claims, separators=(",", ":"))
    si = b64u(h) + "." + b64u(c)
    if sig is None:
        sig = b64u(hmac.new(secret, si.encode(), hashlib.sha256).digest())
    return si + "." + sig


def frame(op, payload=b"", fin=True, rsv=0, mask=True, key=None, length=None):
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    n = len(payload) if length is None else length
    mb = 0x80 if mask else 0
    if n < 126 and length is None:
        h = bytes([b0, mb | n])
    elif n < 65536:
        h = bytes([b0, mb | 126]) + struct.pack("!H", n)
    else:
        h = bytes([b0, mb | 127]) + struct.pack("!Q", n)
    if not mask:
        return h + payload
    key = key or bytes(rng.randrange(256) for _ in range(4))
    return h + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


# FUZZ_SEEDS_OUT: write the corpora there instead (check_seeds.py compares
# them with the committed ones).
OUT = os.environ.get("FUZZ_SEEDS_OUT") or os.path.join(HERE, "corpus")


def write(name, seeds):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for s in seeds:
        if isinstance(s, str):
            s = s.encode()
        with open(os.path.join(d, hashlib.sha1(s).hexdigest()), "wb") as f:
            f.write(s)


# ---- WebSocket frames: 2 selector bytes (limits, split), then the stream.
ws_streams = [
    frame(1, '{"type":"ping"}'),
    frame(1, '{"type":"sub', fin=False) + frame(9, b"hi") + frame(0, 'scribe"}'),
    frame(2, b"\x00\x01\x02"),
    frame(8, struct.pack("!H", 1000) + b"bye"),
    frame(8, b""),
    frame(8, struct.pack("!H", 1005)),
    frame(8, struct.pack("!H", 4000) + b"\xce\xba"),
    frame(9, b"x" * 125),
    frame(10, b""),
    frame(1, "é€😀".encode()),
    frame(1, b"\xf0\x9f", fin=False) + frame(0, b"\x98\x80"),
    frame(1, b"\xed\xa0\x80"),
    frame(1, b"\xc0\xaf"),
    frame(1, b"\xf4\x90\x80\x80"),
    frame(1, b"a" * 300),
    frame(1, b"a" * 200, length=200),
    frame(2, b"b" * 70000),
    frame(1, b"hi", mask=False),
    frame(1, b"hi", rsv=4),
    frame(3, b""),
    frame(0, b"cont"),
    frame(9, b"", fin=False),
    bytes([0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]),
    bytes([0x81, 0xFE, 0x00, 0x05]) + b"\x01\x02\x03\x04" + b"hello",
    frame(1, "x", fin=False) + frame(1, "y"),
    b"".join(frame(1, '{"type":"ping"}') for _ in range(20)),
    frame(8, bytes([0x03, 0xE8, 0xff])),
    frame(8, b"\x03"),
]
write("fuzz_ws", [bytes([sel, split]) + s for s in ws_streams
                  for sel, split in ((0, 0), (0x09, 1), (0x1b, 200))])

# ---- JWT: 2 selector bytes (policy; secret, issuer, lifetime), then the
# token, signed with the secret byte 1 picks.
good = {"sub": "alice", "exp": NOW + 3600}


def tokens(secret):
    def t(claims, **kw):
        return jwt(claims, secret=kw.pop("secret", secret), **kw)
    return [
        t(good),
        t(dict(good, watch="*", meta={"device": "phone"})),
        t(dict(good, watch=["bob", "carol"], aud="presence-tests", nbf=NOW - 10)),
        t(dict(good, aud=["x", "presence-tests"])),
        t(dict(good, exp=NOW - 100)),
        t(dict(good, exp=1.5e300)),
        t(good, header={"alg": "none"}, sig=""),
        t(good, header={"alg": "RS256", "typ": "JWT"}),
        t(good, header={"alg": "HS256", "crit": ["exp"]}),
        t(good, header='{"alg":"HS256","alg":"HS256"}'),
        t('{"sub":"a\\u0000b","exp":1800000000}'),
        t('{"sub":"alice","sub":"bob","exp":1800000000}'),
        t(good, secret=b"other"),
        t(good, secret=secret[:-1]),  # one byte short of ours
        t(good)[:-3],
        # What an application's token endpoint mints: issuer, issued-at,
        # device, channel patterns (docs/protocol.md 1.1).
        t(dict(good, iss="https://auth.example", iat=NOW - 5, aud="presence-tests",
               device="web", channels=["room:*", "lobby"], observe="*",
               watch=["bob"], meta={"name": "Alice", "team": [1, 2]})),
        t(dict(good, iss="https://other.example", iat=NOW)),
        t(dict(good, iat=NOW + 600)),
        t(dict(good, iat=NOW - 10, exp=NOW + 90000)),
        t(dict(good, device="a b", channels=["*x*"])),
        "a.b",
        "...",
        "eyJhbGciOiJIUzI1NiJ9..sig",
    ]


# (byte 0, byte 1): both clocks' edges, every secret, with and without an
# issuer and a lifetime limit.
jwt_sels = [(0, 0), (0x13, 1), (0x4b, 2), (0x93, 3), (0x13, 1 | 4 | 8 | 16), (0x1b, 2 | 8)]
write("fuzz_jwt", [bytes([sel, k]) + tok.encode() for sel, k in jwt_sels
                   for tok in tokens(JWT_SECRETS[k & 3])]
      + [bytes([0x40, k]) + json.dumps(dict(good, watch="*")).encode() for k in range(4)]
      + [bytes([0x41, 0x0d]) + b'{"sub":"bob","exp":1800000000,"meta":{"a":[1,2,{"b":null}]},'
         b'"iss":"https://auth.example","aud":"presence-tests","iat":1699999999}'])

# ---- Configuration: NUL-separated argv, "=NAME=VALUE" for the environment.
confs = [
    ["--listen", "127.0.0.1:7070", "--api-key", "k"],
    ["--listen=[::1]:0", "--demo"],
    ["--demo", "--listen", "10.0.0.1:80"],
    ["--max-frame", "4096", "--max-message", "1024"],
    ["--max-frame=125", "--max-message=67108864", "--log-level", "debug"],
    ["=PRESENCED_MAX_WATCH=5", "--max-watch", "18446744073709551617"],
    ["=PRESENCED_LISTEN=localhost:99999"],
    ["=PRESENCED_DEMO=yes", "--demo=0"],
    ["--help"],
    ["--version"],
    ["--heartbeat-ms", "-1"],
    ["--timeout-ms"],
    ["--unknown"],
    ["positional"],
    ["--jwt-secret", "", "--jwt-audience=aud"],
]
# Webhooks: presenced refuses a secret under 32 bytes (1435475), so the
# seeds' secrets are longer and reach the parsing behind that check (the
# events, the name, the channel prefix, the list's limit and sources); one
# is 31 bytes, the refusal's edge. check_seeds.py runs each through
# presenced --check-config.
WH_SECRET = "fuzz-webhook-secret-0123456789abcdef"  # 36 bytes
WH_HEX = hashlib.sha256(b"fuzz webhook").hexdigest()  # 64, as openssl rand -hex 32
webhook_confs = [
    ["--webhook", f"url=http://127.0.0.1:1/h,secret={WH_SECRET},events=user.online"],
    ["--webhook", f"url=https://hooks.example/p?a=1,secret={WH_HEX},"
     "events=user.*|channel.join|channel.leave,name=audit,channel-prefix=room:"],
    ["--webhook", "url=http://127.0.0.1:2/f,secret-file=/nonexistent/wh.key,events=*"],
    ["--webhook", f"url=http://h/1,secret={WH_SECRET[:32]}", "--webhook",
     f"url=http://h/2,secret={WH_HEX},events=session.*|cleanup", "--webhook-batch-max", "1",
     "--webhook-batch-ms=0", "--webhook-timeout-ms", "100", "--webhook-retry-min-ms=10",
     "--webhook-retry-max-ms", "3600000"],
    # The environment's list is replaced by the flags' (a later source).
    [f"=PRESENCED_WEBHOOK=url=http://env/1,secret={WH_HEX},name=env",
     "--webhook", f"url=http://flag/1,events=user.idle,secret={WH_SECRET}"],
    [f"=PRESENCED_WEBHOOK=url=http://env/2,secret={WH_SECRET},events=user.offline"],
    # Refused behind the length check: after secret=, a ',' in the secret.
    ["--webhook", f"url=http://h/x,secret={WH_SECRET},x=1"],
    ["--webhook", f"url=http://h/x,secret={WH_SECRET},events=nope"],
    ["--webhook", f"url=http://h/x,secret={WH_SECRET},events=user.*,events=*"],
    ["--webhook", f"url=http://h/x,secret={WH_SECRET},name="],
    ["--webhook", f"url=http://h x,secret={WH_SECRET}"],
    ["--webhook", f"url=ftp://h/x,secret={WH_SECRET}"],
    ["--webhook", f"url=http://h/x,secret={WH_SECRET},secret-file=/k"],
    # Seventeen endpoints: the sixteenth is the last one taken.
    sum((["--webhook", f"url=http://h/{i},secret={WH_SECRET}"] for i in range(17)), []),
    # 31 bytes: refused.
    ["--webhook", f"url=http://h/x,secret={WH_SECRET[:31]},events=user.online"],
]
confs += webhook_confs
# Client tokens' policy with secrets presenced accepts (32 bytes or more):
# every --jwt-* option, the environment's secrets, and the refusals behind
# the length check (31 bytes; the same value for both).
JS = JWT_SECRETS[1].decode()
confs += [
    ["--jwt-secret", JS, "--api-key", API_KEY, "--jwt-audience=presence-tests",
     "--jwt-issuer", "https://auth.example", "--jwt-max-lifetime-s", "86400",
     "--jwt-leeway-s", "300"],
    ["=PRESENCED_JWT_SECRET=" + JWT_SECRETS[2].decode(), "=PRESENCED_API_KEY=" + API_KEY,
     "--jwt-leeway-s=0", "--jwt-max-lifetime-s=315360000"],
    ["--jwt-secret", JS[:31], "--api-key", API_KEY],
    ["--jwt-secret", JS, "--api-key", JS],
    ["--jwt-secret", JS, "--demo"],
    ["--jwt-secret-file", "/nonexistent/jwt.key", "--api-key", API_KEY],
]
# Configuration files (docs/configuration.md): two NULs, then the text.
conf_files = [
    "# /etc/presenced/presenced.conf\nlisten = 127.0.0.1:7070\napi-key-file = /etc/presenced/api-key\n"
    "offline-grace-ms = 5000\nlog-format = logfmt\n"
    "webhook = url=https://a.example/hook,secret-file=/etc/presenced/wh-a\n"
    "webhook = url=https://b.example/hook,secret-file=/etc/presenced/wh-b,events=user.*\n"
    'jwt-audience = "my app"\n',
    "\ufeffdemo = yes\r\nmax-frame = 4096\r\n\t# comment\r\n\r\nlisten=[::1]:0",
    'jwt-issuer = "https://auth.example/\\"x\\\\"\njwt-secret = ' + JS + "\n",
    "max-frame = 64k\n", "max-frame = 4096\nmax-frame = 8192\n", "maxframe = 1\n",
    'jwt-audience = "unterminated\n', 'jwt-audience = "a\\n"\n', "config = /etc/x\n",
    "demo = maybe\n", "= value\n", "API_KEY = x\n", "webhook\n",
]
confs_file_seeds = [b"\0\0" + f.encode() for f in conf_files]
write("fuzz_config", ["\0".join(c) for c in confs] + confs_file_seeds)

# ---- Client messages: 1 selector byte (max_users), then the frame's text.
msgs = [
    '{"type":"ping"}', '{"type":"ping","id":7}', '{"type":"ping","id":"x"}',
    '{"type":"status","status":"idle","id":1}', '{"type":"status","status":"offline"}',
    '{"type":"status","status":3}', '{"type":"subscribe","users":["bob","carol"],"id":"s"}',
    '{"type":"subscribe","users":["a","b","c","d","e","f"]}', '{"type":"subscribe","users":[1]}',
    '{"type":"subscribe","users":["b\\u0000b"]}', '{"type":"unsubscribe","users":["bob"],"id":2}',
    '{"type":"unsubscribe","users":"bob"}', '{"type":"nope"}', '{}', '[]', '"str"', '',
    '{"type":"ping"} x', '{"type":"ping"}  \n', '{"type":"ping","id":' + '"' + 'i' * 70 + '"}',
    '{"type":"ping","id":{"a":1}}', '{"type":"ping","id":1e308}', '{"type":"ping",', '{"a":' * 50,
    '{"type":"subscribe","users":["' + "u" * 129 + '"]}', '{"type":"subscribe","users":["\\u0001"]}',
    '{"type":"token","token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln","id":3}',
    '{"type":"token"}', '{"type":"token","token":""}', '{"type":"token","token":["x"]}',
    # Status that people set (docs/protocol.md section 6).
    '{"type":"availability","availability":"dnd","id":4}', '{"type":"availability"}',
    '{"type":"availability","availability":"busy"}', '{"type":"availability","availability":[1]}',
    '{"type":"message","text":"In a meeting","emoji":"\\ud83d\\udcc5","expires_in":3600,"id":5}',
    '{"type":"message","text":"x","expires_at":1764324000000}', '{"type":"message"}',
    '{"type":"message","text":null,"emoji":null}', '{"type":"message","text":"' + "x" * 200 + '"}',
    '{"type":"message","text":"a\\nb"}', '{"type":"message","text":"\\ud800"}',
    '{"type":"message","text":"x","expires_in":0}', '{"type":"message","text":"x","expires_in":1.5}',
    '{"type":"message","text":"x","expires_in":1e300}', '{"type":"message","text":"x","expires_in":-1}',
    '{"type":"message","text":"x","expires_in":5,"expires_at":5}', '{"type":"message","emoji":7}',
    # Channels (docs/protocol.md section 4).
    '{"type":"join","channel":"room:1","data":{"name":"Ann","color":"#e33"},"id":6}',
    '{"type":"join","channel":"room:1"}', '{"type":"join","channel":"room:1","data":null}',
    '{"type":"join","channel":""}', '{"type":"join","channel":7}', '{"type":"join"}',
    '{"type":"join","channel":"' + "c" * 129 + '"}', '{"type":"join","channel":"a\\u0001b"}',
    '{"type":"join","channel":"a\\u0000b"}', '{"type":"join","channel":"x","data":[1]}',
    '{"type":"join","channel":"x","data":"s"}', '{"type":"join","channel":"x","data":{"a":' * 20,
    '{"type":"update","channel":"room:1","data":{"typing":true},"id":7}',
    '{"type":"update","channel":"room:1"}', '{"type":"update","channel":"room:1","data":null}',
    '{"type":"leave","channel":"room:1","id":8}', '{"type":"leave"}',
    '{"type":"observe","channel":"lobby","id":9}', '{"type":"observe","channel":["lobby"]}',
    '{"type":"unobserve","channel":"lobby"}', '{"type":"unobserve","channel":"\\ud800"}',
]
write("fuzz_wsmsg", [bytes([sel]) + m.encode() for m in msgs for sel in (2, 1)])


# ---- HTTP: 1 selector byte (server, split), then what a client sends.
def req(method, path, headers=None, body=b""):
    h = {"Host": "127.0.0.1"}
    h.update(headers or {})
    if body:
        h["Content-Length"] = str(len(body))
    out = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    return out.encode() + (body.encode() if isinstance(body, str) else body)


AUTH = {"Authorization": "Bearer " + API_KEY}
UP = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
tok_a = jwt({"sub": "alice", "exp": NOW + 3600, "watch": "*"})
tok_b = jwt({"sub": "bob", "exp": NOW + 3600})
http_inputs = [
    req("GET", "/healthz"),
    req("HEAD", "/healthz"),
    req("POST", "/healthz"),
    req("GET", "/metrics"),
    req("GET", "/v1/users/bob", AUTH),
    req("GET", "/v1/users/bob"),
    req("GET", "/v1/users/bob", {"Authorization": "bearer wrong"}),
    req("GET", "/v1/users?ids=a,b,c", AUTH),
    req("POST", "/v1/users/query", AUTH, '{"user_ids":["a","b"]}'),
    req("POST", "/v1/users/query", AUTH, '{"user_ids":[1]}'),
    req("GET", "/v1/users/bob/sessions", AUTH),
    req("DELETE", "/v1/sessions/00000000-0000-4000-8000-000000000000", AUTH),
    req("GET", "/v1/events?after=0", AUTH),
    req("GET", "/v1/events", dict(AUTH, **{"Last-Event-ID": "5"})),
    req("GET", "/nope"),
    req("GET", "/index.html"),
    req("GET", "/../etc/passwd"),
    req("POST", "/v1/demo/token", {}, '{"name":"alice"}'),
    req("GET", "/v1/demo/users"),
    req("GET", "/healthz") + req("GET", "/metrics") + req("GET", "/v1/users/x", AUTH),
    req("GET", "/v1/ws?token=" + tok_a, UP),
    req("GET", "/v1/ws?token=" + tok_a, UP) + frame(1, '{"type":"subscribe","users":["bob"],"id":1}')
    + frame(1, '{"type":"status","status":"idle"}') + frame(9, b"p") + frame(8, struct.pack("!H", 1000)),
    req("GET", "/v1/ws?token=" + tok_b, UP) + frame(1, '{"type":"subscribe","users":["carol"]}')
    + frame(1, b"\xff") ,
    req("GET", "/v1/ws?token=" + tok_b, UP) + b"GET / HTTP/1.1\r\n\r\n",
    req("GET", "/v1/ws?token=" + tok_b, UP) + b"".join(frame(1, '{"type":"ping"}') for _ in range(60)),
    req("GET", "/v1/ws?token=" + jwt({"sub": "alice", "exp": NOW - 1}), UP),
    req("GET", "/v1/ws?token=" + jwt({"sub": "alice", "exp": NOW + 60}, header={"alg": "none"}, sig=""), UP),
    req("GET", "/v1/ws", UP),
    req("POST", "/v1/ws?token=" + tok_b, UP),
    req("GET", "/v1/ws?token=" + tok_b, dict(UP, **{"Sec-WebSocket-Version": "8"})),
    req("GET", "/v1/ws?token=%zz", UP),
    b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /v1/users/query HTTP/1.1\r\nAuthorization: Bearer " + API_KEY.encode() + b"\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n10\r\n{\"user_ids\":[\"a\"\r\n2\r\n]}\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
    b"GET /healthz HTTP/1.0\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(70)) + b"\r\n",
    # With Host (an HTTP/1.1 request without one is refused before its body
    # is read): a chunked body with an extension and a trailer, an
    # absolute-form target, Expect: 100-continue, empty lines first.
    b"POST /v1/users/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode() + b"\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n10 ;a=b\r\n{\"user_ids\":[\"a\"\r\n2\r\n]}\r\n"
    b"0\r\nX-T: 1\r\n\r\n",
    req("GET", "http://127.0.0.1/v1/users/bob?x=1", AUTH),
    req("POST", "/v1/users/query", dict(AUTH, Expect="100-continue"), '{"user_ids":["a"]}'),
    b"\r\n" + req("HEAD", "/v1/events", AUTH),
    # Methods: one http-parser does not know (501, decided on the whole
    # request line), one it knows and presenced does not implement (501),
    # a request line that is not one (400), a known one after an unknown.
    req("BREW", "/v1/users", AUTH),
    req("PROPFIND", "/healthz"),
    b"HELLO THERE\r\n\r\n",
    req("GET", "/healthz") + req("X-Custom.1", "/metrics"),
]
# Past what the first seeds reach, with the API key or a token that allows
# it: the event stream's filters, channels, status that people set, the
# sessions an application reports (PUT /v1/sessions, the backend's
# WebSocket and its frames), and a client's channel and status messages.
tok_c = jwt({"sub": "carol", "exp": NOW + 3600, "iat": NOW - 1, "device": "phone",
             "channels": ["room:*", "lobby"], "observe": "*", "watch": ["alice", "bob"]})
BUP = dict(UP, **AUTH)
http_inputs += [
    req("GET", "/v1/events?types=user.online,user.offline,channel.join&channel_prefix=room:", AUTH),
    req("GET", "/v1/events?after=1-2-3&types=nope", AUTH),
    req("GET", "/v1/events?channel_prefix=%ff%00", dict(AUTH, **{"Last-Event-ID": "0-0"})),
    req("GET", "/v1/channels", AUTH),
    req("GET", "/v1/channels/room:1/members?after=alice&limit=2", AUTH),
    req("GET", "/v1/channels/room%3A1", AUTH),
    req("GET", "/v1/users/carol/channels", AUTH),
    req("PUT", "/v1/users/bob/availability", AUTH, '{"availability":"dnd"}'),
    req("PUT", "/v1/users/bob/message", AUTH, '{"text":"Lunch","emoji":"\\ud83c\\udf54","expires_in":600}'),
    req("DELETE", "/v1/users/bob/message", AUTH),
    req("GET", "/v1/users/bob/availability", AUTH),
    req("PUT", "/v1/sessions/fn-42", AUTH, '{"user":"alice","ttl_ms":30000,"status":"idle","device":"web"}')
    + req("PUT", "/v1/sessions/fn-42", AUTH, '{"user":"alice","ttl_ms":1000,"meta":{"a":1}}')
    + req("GET", "/v1/origins", AUTH) + req("DELETE", "/v1/sessions/fn-42", AUTH),
    req("PUT", "/v1/sessions/fn-43", AUTH, '{"user":"","ttl_ms":5}'),
    req("GET", "/v1/backend?origin=api-1", BUP)
    + frame(1, '{"type":"batch","seq":1,"ops":[{"op":"open","session":"b1","user":"alice"}]}')
    + frame(1, '{"type":"batch","seq":2,"ops":[{"op":"join","session":"b1","channel":"room:1",'
               '"data":{"n":1}},{"op":"status","session":"b1","status":"idle"}]}')
    + frame(1, '{"type":"batch","seq":3,"ops":[{"op":"update","session":"b1","channel":"room:1",'
               '"data":{}},{"op":"leave","session":"b1","channel":"room:1"},{"op":"close","session":"b1"}]}')
    + frame(1, '{"type":"ping","id":1}') + frame(1, '{"type":"bye"}'),
    req("GET", "/v1/backend?origin=api-2", BUP)
    + frame(1, '{"type":"sync","seq":1,"sessions":[{"session":"b2","user":"bob"}],"done":false}')
    + frame(1, '{"type":"sync","seq":2,"sessions":[],"done":true}')
    + frame(1, '{"type":"batch","seq":2,"ops":[]}') + frame(1, b"\xff") + frame(8, b""),
    req("GET", "/v1/backend?origin=http", BUP),
    req("GET", "/v1/backend", BUP),
    req("GET", "/v1/backend?origin=api-1", UP),
    req("GET", "/v1/ws?status=idle&token=" + tok_c, UP)
    + frame(1, '{"type":"join","channel":"room:1","data":{"name":"C"},"id":1}')
    + frame(1, '{"type":"update","channel":"room:1","data":{"typing":true}}')
    + frame(1, '{"type":"observe","channel":"lobby","id":2}')
    + frame(1, '{"type":"availability","availability":"dnd"}')
    + frame(1, '{"type":"message","text":"brb","expires_in":60}')
    + frame(1, '{"type":"status","status":"online"}')
    + frame(1, '{"type":"leave","channel":"room:1"}') + frame(1, '{"type":"unobserve","channel":"lobby"}')
    + frame(1, '{"type":"token","token":"' + tok_c + '"}'),
    req("GET", "/v1/ws?status=away&token=" + tok_c, UP),
    req("GET", "/v1/ws?token=" + tok_c, UP) + frame(1, '{"type":"join","channel":"secret:1"}')
    + frame(1, '{"type":"token","token":"' + jwt({"sub": "mallory", "exp": NOW + 60}) + '"}'),
]
write("fuzz_http", [bytes([sel]) + r for r in http_inputs for sel in (0, 1, 2 * 7, 1 + 2 * (64 + 9))])
# ---- Redis replies (RESP), in the store's packed log format.
def resp(x):
    if x is None:
        return b"$-1\r\n"
    if isinstance(x, int):
        return b":%d\r\n" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"$%d\r\n%s\r\n" % (len(x), x)
    return b"*%d\r\n" % len(x) + b"".join(resp(e) for e in x)


def s16(x, n=2):
    """A string as the script packs it (store format 6 on): length + 1 (0:
    absent), the bytes, a NUL."""
    if x is None:
        return b"\0" * n + b"\0"
    if isinstance(x, str):
        x = x.encode()
    return (len(x) + 1).to_bytes(n, "little") + x + b"\0"


def u(v, n):
    return v.to_bytes(n, "little")


def header(caller, ts=1764320000001, epoch=1764320000000):
    return u(ts, 6) + u(epoch, 6) + s16(caller)


COUNT, INST, META = 32768, 65536, 131072


def pev(ty, reason, fr, to, ver, inst=None, sid=None, uid=None, meta=None,
        count=None, tail=b""):
    """An event (store format 9: only the fields it has, each flagged above
    its type): inst None is the caller (the header's)."""
    tf = (ty + (COUNT if count is not None else 0) + (INST if inst is not None else 0) +
          (META if meta is not None else 0))
    return (u(tf, 3) + u(reason, 1) + u(fr, 1) + u(to, 1) + u(ver, 4) +
            (u(count, 4) if count is not None else b"") +
            (s16(inst) if inst is not None else b"") +
            (s16(sid) + s16(uid) if not ty & DITTO else b"") +
            (s16(meta, 4) if meta is not None else b"") + tail)


def entry(last, caller, evs):
    return [b"%d-0" % last, [b"k", b"%d" % len(evs), b"p",
                             header(caller) + b"".join(evs)]]


DEV, SV, DITTO, DITTO_DEV, WEB = 256, 512, 8192, 16384, 262144
conn = pev(0 + DEV + SV + WEB, 1, 0, 1, 1, None, "s1", "alice",
           '{"device":"web tab"}', tail=u(0, 1) + u(1, 1) + u(0, 4))
uon = pev(3 + DEV + SV + DITTO + DITTO_DEV, 1, 0, 1, 1, tail=u(1, 4))
idle = pev(2 + DEV + SV, 3, 1, 2, 1, None, "s2", "bob",
           tail=s16("mobile") + u(1, 1) + u(2, 1) + u(1, 4))
lost = pev(1 + SV, 8, 1, 0, 2, "victim", "s9", "carol", tail=u(2, 4))
clean = pev(6, 8, 0, 0, 0, "victim", count=100000)
wipe = pev(6, 8, 0, 0, 0, "")
join = pev(7 + SV + 4096, 1, 0, 1, 3, None, "s1", "alice", '{"x":1}', count=2,
           tail=s16("room") + u(1, 4) + u(2, 4))
msg = pev(11 + SV, 3, 1, 1, 4, None, None, "alice",
          tail=s16("lunch", 4) + s16(None) + u(0, 6) + u(3, 4))
# A UUID session id in the 20-byte form (store format 11, src/core/uuid.h):
# f70a3608-29da-4401-806c-4d556b4d3cc9; then one with a byte below 0x80,
# and one whose padding bits are not zeros (both passed on as they are).
SID20 = bytes.fromhex("fffbc2c6e0c1a7b4c480e08dc4ead5d6cd9eb2a0")
conn20 = pev(0 + SV, 1, 0, 1, 1, None, SID20, "alice", tail=u(1, 4))
low20 = pev(0 + SV, 1, 0, 1, 1, None, SID20[:10] + b"\x01" + SID20[11:], "bob",
            tail=u(1, 4))
pad20 = pev(0 + SV, 1, 0, 1, 1, None, SID20[:-1] + b"\xff", "carol", tail=u(1, 4))
redis_inputs = [
    resp([entry(2, "inst-a", [conn, uon]), entry(3, "inst-b", [idle])]),
    resp([entry(13, "inst-a", [conn20, uon, low20, pad20])]),
    resp([entry(5, "inst-a", [lost, clean])]),
    resp([entry(7, "inst-a", [wipe])]),
    resp([entry(9, "inst-a", [join, msg])]),
    resp([0, [0, 2, 0, 1], b"12", b"3", header("inst-a") + conn + uon + idle]),
    resp([0, b"", b"9", b"1", header("inst-b") + clean]),
    resp([-11]),
    resp([0, [b"1764320000000", b"41", b"0"]]),
    resp([[b"tab\there", None, 3, [b"x"]], b"ERR"]),
    resp([entry(2, "inst-a", [conn])]),                       # count says 1, id fine
    resp([[b"4-0", [b"k", b"2", b"p", header("inst-a") + conn]]]),  # fewer than k
    resp([[b"4-0", [b"k", b"1", b"p", (header("inst-a") + conn)[:-3]]]]),  # cut
    resp([[b"4-1", [b"k", b"1", b"p", header("inst-a") + conn]]]),  # not our id
    resp([[b"1-0", [b"k", b"5", b"p", header("inst-a") + conn * 5]]]),  # > seqs
    resp([[b"4-0", [b"k", b"1", b"p", header("inst-a") + uon]]]),  # ditto first
    b"-ERR unknown command\r\n",
    # The user query's reply, right and with integers for its strings (a
    # proxy answering for Redis once crashed the daemon with that).
    resp([0, [b"1", b"2", b"1", b"7", b"1764320000000", b"0", b"1764320000500"]]),
    resp([0, [1, 2, 1, 7, 1764320000000, 0, 1764320000500]]),
    # Headers past the reader's limits: refused before anything is built.
    b"*320000000\r\n:1\r\n",
    b"$999999999\r\nabc",
    b"*1\r\n" * 12 + b":1\r\n",
]
write("fuzz_redis", redis_inputs)

# ---- Conversations (fuzz_session): 1 selector byte (backend or client,
# which token or origin, time between messages), then messages one a line.
client_convs = [
    ['{"type":"subscribe","users":["bob","carol"],"id":1}', '{"type":"status","status":"idle"}',
     '{"type":"status","status":"online","id":2}', '{"type":"unsubscribe","users":["bob"]}'],
    ['{"type":"join","channel":"room:1","data":{"name":"A","color":"#e33"},"id":1}',
     '{"type":"update","channel":"room:1","data":{"typing":true},"id":2}',
     '{"type":"observe","channel":"lobby","id":3}', '{"type":"leave","channel":"room:1","id":4}',
     '{"type":"unobserve","channel":"lobby"}', '{"type":"join","channel":"room:2"}'],
    ['{"type":"availability","availability":"dnd","id":1}',
     '{"type":"message","text":"In a meeting","emoji":"\\ud83d\\udcc5","expires_in":1,"id":2}',
     '{"type":"ping","id":3}', '{"type":"message","text":null}', '{"type":"availability","availability":"auto"}'],
    ['{"type":"join","channel":"room:1"}', '{"type":"join","channel":"room:1"}',
     '{"type":"join","channel":"secret"}', '{"type":"subscribe","users":["a","b","c","d","e","f"]}',
     '{"type":"token","token":"x.y.z"}', '{"type":"ping"}'],
    ['{"type":"ping"}'] * 30,
    ['\x09ping', '\x0a', '\x02\x00\x01', '{"type":"ping"}', '\x08\x03\xe8bye'],
    ['{"type":"join","channel":"room:1","data":{"a":' + '[' * 30 + ']' * 30 + '}}'],
]
backend_convs = [
    ['{"type":"batch","seq":1,"ops":[{"op":"open","session":"s1","user":"alice","device":"web"},'
     '{"op":"open","session":"s2","user":"bob","status":"idle","meta":{"n":1}}]}',
     '{"type":"batch","seq":2,"ops":[{"op":"join","session":"s1","channel":"room:1","data":{"c":1}},'
     '{"op":"status","session":"s2","status":"online"},{"op":"update","session":"s1","channel":"room:1",'
     '"data":null}]}',
     '{"type":"batch","seq":3,"ops":[{"op":"leave","session":"s1","channel":"room:1"},'
     '{"op":"close","session":"s1"},{"op":"close","session":"s9"}]}',
     '{"type":"ping","id":4}', '{"type":"bye"}'],
    ['{"type":"sync","seq":1,"sessions":[{"session":"s1","user":"alice"}],"done":false}',
     '{"type":"sync","seq":2,"sessions":[{"session":"s2","user":"bob","status":"idle"}],"done":true}',
     '{"type":"batch","seq":3,"ops":[{"op":"open","session":"s1","user":"carol"}]}',
     '{"type":"batch","seq":3,"ops":[]}', '{"type":"batch","seq":2,"ops":[]}'],
    ['{"type":"batch","seq":1,"ops":[' + ','.join('{"op":"open","session":"s%d","user":"u%d"}' % (i, i % 3)
                                             for i in range(12)) + ']}',
     '{"type":"sync","seq":2,"sessions":[],"done":true}'],
    ['{"type":"batch","seq":1,"ops":[{"op":"open","session":"s1","user":"alice"},'
     '{"op":"join","session":"s1","channel":"room:1"},{"op":"join","session":"s1","channel":"room:2"}]}',
     '\x09', '\x08\x03\xe8'],
]
session_seeds = []
for conv in client_convs:
    for sel in (0, 2 << 1 | 8 << 3, 1 << 1 | 31 << 3, 3 << 1 | 4 << 3):
        session_seeds.append(bytes([sel]) + "\n".join(conv).encode("latin-1"))
for conv in backend_convs:
    for sel in (1, 1 | 1 << 1 | 8 << 3, 1 | 3 << 1 | 31 << 3):
        session_seeds.append(bytes([sel]) + "\n".join(conv).encode("latin-1"))
write("fuzz_session", session_seeds)

print("seeds written")

# ---- Backend frames (GET /v1/backend): 1 selector byte (max_ops), then the
# frame's text.
bframes = [
    '{"type":"batch","seq":1,"ops":[{"op":"open","session":"s1","user":"u1","meta":{"a":1},"device":"web"}]}',
    '{"type":"batch","seq":2,"ops":[{"op":"status","session":"s1","status":"idle"},{"op":"close","session":"s1"}]}',
    '{"type":"batch","seq":3,"ops":[{"op":"join","session":"s1","channel":"room:1","data":{"c":"red"}},'
    '{"op":"update","session":"s1","channel":"room:1","data":null},{"op":"leave","session":"s1","channel":"room:1"}]}',
    '{"type":"batch","seq":4,"ops":["x",1,null,{},{"op":"fly"},{"op":"open"},{"op":"open","session":"","user":"u"},'
    '{"op":"open","session":"s","user":"u","status":"offline"},{"op":"open","session":"s","user":"u","meta":[1]},'
    '{"op":"open","session":"s","user":"u","device":"a b"},{"op":"join","session":"s","channel":""}]}',
    '{"type":"sync","seq":5,"sessions":[{"session":"s1","user":"u1","status":"idle"},{"session":"s2","user":"u2"}],"done":true}',
    '{"type":"sync","seq":6,"sessions":[],"done":"yes"}', '{"type":"ping","id":7}', '{"type":"ping","id":{"x":1}}',
    '{"type":"bye"}', '{"type":"batch","seq":-1,"ops":[]}', '{"type":"batch","seq":1.5,"ops":[]}',
    '{"type":"batch","seq":9007199254740993,"ops":[]}', '{"type":"batch","ops":[]}', '{"type":"batch","seq":1,"ops":{}}',
    '{"type":"batch","seq":1,"ops":[{"op":"open","session":"a\\u0000b","user":"u"}]}', '{"type":"warp"}', '{}', '[]',
    'not json', '{"type":"batch","seq":1,"ops":[' + ','.join(['{"op":"close","session":"s"}'] * 5) + ']}',
]
write("fuzz_bmsg", [bytes([sel]) + f.encode() for f in bframes for sel in (1, 2)])
