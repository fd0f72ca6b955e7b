#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Every JSON answer the documentation shows has the fields presenced really
sends, in its order. A newcomer compares what curl, a WebSocket or a webhook
gives them with the examples: a field the example lacks (or one presenced no
longer sends) reads as a bug of theirs or of ours.

The check runs a real presenced through one scenario that makes it send each
kind of answer the documents show (HTTP answers, WebSocket messages of
clients and backends, events of the stream, webhook deliveries), keeps every
JSON object it sent, and then reads the JSON objects of the documents' code
blocks (```json blocks, the data: lines and bodies of plain ``` blocks, and
the "# {...}" answers in ```sh blocks) and of the code spans in the prose and
tables that hold one of three members or more. Each must match one object presenced
sent: the same members in the same order (a "…" or "..." member of the
example stands for members left out, which then only have to appear in that
order), values of the same JSON type (a "…" value stands for any), and a
"type", "event" or "snapshot" member equal to the one sent. Nested objects
are matched the same way against the sent object's, except the
application's own `data` and `meta`. What clients and backends send
(batches, subscribes) is not checked: it is not an answer. Every metric the
documents name (presenced_...) must be one of its /metrics.

    /usr/bin/python3 tests/docs/examples.py --presenced build/presenced

Exits 1 and names each example that matches nothing, beside the nearest
object presenced sent. Uses tests/integration/harness.py (Debian's
python3-websockets).
"""
import asyncio
import json
import os
import re
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402
from harness import (API_KEY, HOST, Daemon, HookReceiver, http_sync,  # noqa: E402
                     token, websockets)

# The documents a newcomer follows (the others are references that other
# checks keep: c-api.md by tests/unit, the benchmarks by their runs).
FILES = ["README.md", "docs/getting-started.md", "docs/concepts.md", "docs/api.md",
         "docs/protocol.md", "docs/webhooks.md", "docs/security.md", "docs/guides/meteor.md",
         "docs/guides/socketio.md", "sdk/node/README.md", "sdk/python/README.md",
         "sdk/go/README.md", "clients/js/README.md"]

# What a client or a backend sends: examples of requests, not answers.
CLIENT_TYPES = {"status", "subscribe", "unsubscribe", "token", "join", "update", "leave",
                "observe", "unobserve", "availability", "message", "ping", "batch", "sync",
                "bye", "members"}
# Members whose value is the application's own JSON, not presenced's.
OPAQUE = {"data", "meta"}
# Members that map names of the application's (device kinds) to values of
# presenced's: the names are free, each value is matched.
MAPS = {"devices"}
# Examples that are no answer: a configuration file (docs/guides/meteor.md),
# the bodies of a PUT /v1/sessions and of a PUT .../message; and one answer
# this scenario cannot get (a gap of Redis in shards, protocol.md Cursors).
NOT_ANSWERS = [{"presenced"}, {"user", "ttl_ms", "status", "meta", "device"},
               {"text", "emoji", "expires_in"}, {"after", "oldest", "shard"}]
# A devices map shown alone (api.md): its names are the application's.
NOT_ANSWERS.append({"web", "mobile"})
# A backend's join refused by the store after its ack (protocol.md 5.4): only
# Redis answers later than the ack, and this scenario runs the embedded store
# (test_redis_backend 'join_refused' checks it).
NOT_ANSWERS.append({"type", "session", "channel", "reason", "code", "message"})

MORE = "…"  # a member standing for members left out


# ---- the examples -----------------------------------------------------------

def normalise(text):
    """An example's text as JSON: an elided value is null (any value), an
    elided list or object empty or null, elided members one MORE member."""
    t = text.replace("...", MORE)
    t = re.sub(r"\[\s*…[^\[\]{}]*…\s*\]", "[]", t)     # […as above…]
    t = re.sub(r"\{\s*…\s*\}", "null", t)
    t = re.sub(r"\[\s*…\s*\]", "[]", t)
    t = re.sub(r":\s*…", ":null", t)
    t = re.sub(r",\s*…\s*\}", ',"…":0}', t)
    t = re.sub(r",\s*…\s*,", ',"…":0,', t)
    t = re.sub(r",\s*…\s*\]", "]", t)
    return t


def json_values(text):
    """The JSON values of a ```json block, one after another; ValueError
    when it holds anything else."""
    dec = json.JSONDecoder()
    i, out = 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return out
        o, end = dec.raw_decode(text, i)
        out.append((text[:i].count("\n"), o))
        i = end


def json_objects(text):
    dec = json.JSONDecoder()
    i, out = 0, []
    while True:
        j = text.find("{", i)
        if j < 0:
            return out
        try:
            o, end = dec.raw_decode(text, j)
        except ValueError:
            i = j + 1
            continue
        out.append((text[:j].count("\n"), o))
        i = end


def members(o):
    if isinstance(o, dict):
        return len(o) + sum(members(v) for v in o.values())
    if isinstance(o, list):
        return sum(members(v) for v in o)
    return 0


def examples():
    """(file, line, object) of every JSON example in a code block of FILES;
    object None for a ```json block that is not JSON."""
    for rel in FILES:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            text = f.read()
        # Indented blocks too: the README's tour is a numbered list.
        for m in re.finditer(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", text, re.S | re.M):
            lang, body = m.group(1), m.group(2)
            first = text[:m.start(2)].count("\n") + 1
            if lang == "sh":
                # The answers shown as comments after a command ("# {...}",
                # an event stream's "# data: {...}").
                body = "\n".join(re.sub(r"^\s*# (data: )?", "", l)
                                 if re.match(r"\s*# (data: )?\{", l) else ""
                                 for l in body.splitlines())
            elif lang not in ("json", ""):
                continue
            if lang == "json":
                try:
                    found = json_values(normalise(body))
                except ValueError as e:
                    yield rel, first, None, str(e)
                    continue
            else:
                found = json_objects(normalise(body))
            for line, o in found:
                if not isinstance(o, dict):
                    continue
                if o.get("type") in CLIENT_TYPES or set(o) in NOT_ANSWERS:
                    continue
                yield rel, first + line, o, None
        # Answers shown in the prose and in tables, as code spans of three
        # members or more, nested ones counted (shorter ones are requests
        # or a field's value); "X\\|null" (a table's "or null") is X.
        prose = re.sub(r"^[ \t]*```.*?^[ \t]*```", lambda m: "\n" * m.group(0).count("\n"),
                       text, flags=re.S | re.M)
        for m in re.finditer(r"`(\{[^`]*\})`", prose):
            try:
                o = json.loads(normalise(m.group(1).replace("\\|null", "")))
            except ValueError:
                continue
            if isinstance(o, dict) and members(o) >= 3 and o.get("type") not in CLIENT_TYPES \
                    and set(o) not in NOT_ANSWERS:
                yield rel, prose[:m.start()].count("\n") + 1, o, None


# ---- matching ---------------------------------------------------------------

def same_kind(a, b):
    if a is None or b is None:
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return True
    return type(a) is type(b)


def subsequence(want, have):
    it = iter(have)
    return all(k in it for k in want)


def match(doc, real):
    """Whether the example object doc shows the object real."""
    if not isinstance(real, dict):
        return False
    keys = [k for k in doc if k != MORE]
    if MORE in doc:
        if not subsequence(keys, list(real)):
            return False
    elif keys != list(real):
        return False
    for k in ("type", "event", "snapshot"):
        if k in doc and doc[k] is not None and doc[k] != real.get(k):
            return False
    for k in keys:
        d, r = doc[k], real[k]
        if not same_kind(d, r):
            return False
        if k in OPAQUE:
            continue
        if k in MAPS and isinstance(d, dict):
            if not all(any(match_value(x, y) for y in r.values()) for x in d.values()):
                return False
            continue
        if isinstance(d, dict) and not match(d, r):
            return False
        if isinstance(d, list):
            for x in d:
                if isinstance(x, dict) and not any(match(x, y) for y in r):
                    return False
    return True


def match_value(d, r):
    return match(d, r) if isinstance(d, dict) else same_kind(d, r)


def nearest(doc, corpus):
    same = [r for r in corpus if all(doc.get(k) is None or doc.get(k) == r.get(k)
                                     for k in ("type", "event"))] or corpus
    return min(same, key=lambda r: len(set(doc) ^ set(r)))


# ---- what presenced sends ---------------------------------------------------

class Corpus:
    """Every JSON object presenced sent in the scenario (nested ones too, as
    examples show parts of answers)."""

    def __init__(self):
        self.objects = []
        self.lock = threading.Lock()

    def add(self, o):
        if isinstance(o, dict):
            with self.lock:
                self.objects.append(o)
            for k, v in o.items():
                if k not in OPAQUE:
                    self.add(v)
        elif isinstance(o, list):
            for v in o:
                self.add(v)

    def add_text(self, text):
        try:
            self.add(json.loads(text))
        except ValueError:
            pass


def api(d, corpus, method, path, body=None, auth=True):
    h = {"Authorization": f"Bearer {API_KEY}"} if auth else {}
    status, _h, raw = http_sync(d.port, method, path, h, body)
    corpus.add_text(raw.decode("utf-8", "replace"))
    return status, raw


def read_stream(d, corpus, path, done):
    """GET path (an event stream) until presenced closes it; every data:
    line kept."""
    s = socket.create_connection((HOST, d.port), timeout=5)
    s.settimeout(0.2)  # to see `done` soon: the stream itself never ends
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {API_KEY}\r\n"
              "Accept: text/event-stream\r\n\r\n".encode())
    buf = b""
    try:
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                if done.is_set():  # and nothing more came
                    break
                continue
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    for line in buf.decode("utf-8", "replace").splitlines():
        if line.startswith("data:"):
            corpus.add_text(line[5:].strip())


class WS:
    def __init__(self, ws, corpus):
        self.ws, self.corpus, self.msgs = ws, corpus, []
        self.task = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, url, corpus, **kw):
        return cls(await websockets.connect(url, ping_interval=None, close_timeout=2, **kw), corpus)

    async def _read(self):
        try:
            async for m in self.ws:
                self.msgs.append(json.loads(m))
                self.corpus.add_text(m)
        except websockets.exceptions.ConnectionClosed:
            pass

    async def send(self, o):
        await self.ws.send(json.dumps(o))

    async def until(self, pred, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for m in self.msgs:
                if pred(m):
                    return m
            await asyncio.sleep(0.02)
        raise RuntimeError("no such message: " + json.dumps(self.msgs[-5:]))

    async def close(self):
        await self.ws.close()
        await asyncio.wait_for(self.task, 5)


async def scenario(d, rx, corpus):
    ws_url = lambda tok: d.ws_url(tok)  # noqa: E731
    grants = {"channels": "*", "observe": "*"}

    # Clients: bob with two sessions (one idle, with meta), carol idle.
    bob = await WS.open(ws_url(token("bob", watch="*", meta={"device": "phone"}, extra=grants)),
                        corpus)
    bob2 = await WS.open(ws_url(token("bob", extra=grants)), corpus)
    await bob2.send({"type": "status", "status": "idle", "id": 5})
    await bob2.until(lambda m: m.get("type") == "ack")
    carol = await WS.open(ws_url(token("carol", watch=["bob", "carol"], extra=grants)), corpus)
    await carol.send({"type": "join", "channel": "room:2", "id": 1})
    await carol.send({"type": "observe", "channel": "lobby", "id": 2})
    await carol.until(lambda m: m.get("type") == "channel" and m.get("id") == 2)
    await carol.send({"type": "subscribe", "users": ["bob", "carol"], "id": 7})
    await carol.until(lambda m: m.get("type") == "presence" and m.get("snapshot"))
    # Answered per user: bob listed, dave (outside carol's watch) named.
    await carol.send({"type": "subscribe", "users": ["bob", "dave"], "id": 8})
    await carol.until(lambda m: m.get("type") == "presence" and m.get("id") == 8)
    await carol.send({"type": "ping", "id": 9})
    await carol.send({"type": "status", "status": "asleep", "id": 10})  # an error
    await carol.send({"type": "subscribe", "users": ["dave"], "id": 11})  # not allowed
    await carol.until(lambda m: m.get("type") == "error" and m.get("id") == 11)
    await carol.send({"type": "status", "status": "idle"})

    # What people set, by the API and by a client; a message that expires.
    api(d, corpus, "PUT", "/v1/users/bob/availability", {"availability": "dnd"})
    api(d, corpus, "GET", "/v1/users/bob/availability")
    api(d, corpus, "PUT", "/v1/users/bob/message",
        {"text": "Lunch", "emoji": "\U0001f96a", "expires_in": 1800})
    api(d, corpus, "GET", "/v1/users/bob/message")
    await bob.send({"type": "message", "text": "In a meeting", "emoji": "\U0001f4c5",
                    "expires_in": 1, "id": 3})
    await carol.until(lambda m: m.get("type") == "presence" and any(
        u.get("change") == "message" for u in m.get("users", [])))
    # A device's own change: bob's phone session idle while bob stays online.
    await bob.send({"type": "status", "status": "idle"})
    await bob.send({"type": "status", "status": "online"})
    await carol.send({"type": "subscribe", "users": ["bob"], "id": 12})  # a snapshot with all
    await carol.until(lambda m: m.get("type") == "presence" and m.get("id") == 12)

    # The backend API.
    api(d, corpus, "GET", "/v1/users/bob")
    api(d, corpus, "GET", "/v1/users?ids=bob,carol,zo%C3%AB")
    api(d, corpus, "POST", "/v1/users/query", {"user_ids": ["bob", "carol"]})
    api(d, corpus, "GET", "/v1/users/bob/sessions")
    api(d, corpus, "GET", "/v1/users/bob%00")                   # 400 bad_user_id
    api(d, corpus, "GET", "/healthz", auth=False)
    api(d, corpus, "PUT", "/v1/sessions/fn-42", {"user": "alice", "ttl_ms": 30000})
    api(d, corpus, "GET", "/v1/origins")

    # Channels: ann joins, cat joins, updates and leaves; ann is removed.
    ann = await WS.open(ws_url(token("ann", extra=grants)), corpus)
    await ann.send({"type": "join", "channel": "room:1", "data": {"name": "Ann"}, "id": 1})
    await ann.until(lambda m: m.get("type") == "channel" and m.get("snapshot"))
    cat = await WS.open(ws_url(token("cat", extra=grants)), corpus)
    await cat.send({"type": "join", "channel": "room:1", "data": {"name": "Cat"}, "id": 1})
    await cat.send({"type": "update", "channel": "room:1", "data": {"name": "Cat", "typing": True},
                    "id": 2})
    await cat.until(lambda m: m.get("type") == "ack" and m.get("id") == 2)
    # The page after the snapshot's last member (protocol.md 4.2, 4.3).
    await ann.send({"type": "members", "channel": "room:1", "after": "ann", "id": 6})
    await ann.until(lambda m: m.get("type") == "channel" and m.get("id") == 6)
    api(d, corpus, "GET", "/v1/channels/room:1")
    api(d, corpus, "GET", "/v1/channels/room:1/members?limit=100")
    api(d, corpus, "GET", "/v1/channels?prefix=room")
    api(d, corpus, "GET", "/v1/users/ann/channels")
    await cat.close()
    await ann.until(lambda m: m.get("event") == "leave")
    api(d, corpus, "DELETE", "/v1/channels/room:1/members/ann")
    await ann.until(lambda m: m.get("type") == "left")

    # A token refresh that takes a watch and the channels away.
    await carol.send({"type": "token", "id": 12, "token": token("carol", watch=["carol"])})
    await carol.until(lambda m: m.get("type") == "ack" and "exp" in m)

    # A backend connection: a batch with a refused op, a re-assert, a ping, a
    # frame refused, a kick and a removal from a channel; then it comes back.
    burl = f"ws://{HOST}:{d.port}/v1/backend?origin=api-3"
    hdr = {"Authorization": f"Bearer {API_KEY}"}
    b = await WS.open(burl, corpus, extra_headers=hdr)
    await b.until(lambda m: m.get("type") == "welcome")
    await b.send({"type": "batch", "seq": 17, "ops": [
        {"op": "open", "session": "s-1", "user": "alice", "meta": {"name": "Alice"},
         "device": "web"},
        {"op": "status", "session": "s-1", "status": "idle"},
        {"op": "close", "session": "s-9"},
        {"op": "join", "session": "s-1", "channel": "room:1", "data": {"color": "red"}}]})
    await b.until(lambda m: m.get("type") == "ack" and m.get("seq") == 17)
    await b.send({"type": "sync", "seq": 18, "sessions": [
        {"session": "s-1", "user": "alice", "status": "idle"}, {"session": "s-2", "user": "bob"}],
        "done": True})
    await b.until(lambda m: m.get("type") == "ack" and m.get("seq") == 18)
    await b.send({"type": "ping", "id": 1})
    await b.send({"type": "batch", "seq": 19, "ops": 7})
    await b.until(lambda m: m.get("type") == "error")
    api(d, corpus, "GET", "/v1/origins")
    api(d, corpus, "DELETE", "/v1/channels/room:1/members/alice")
    api(d, corpus, "DELETE", "/v1/sessions/s-2")
    await b.until(lambda m: m.get("type") == "ended")
    await b.until(lambda m: m.get("type") == "left")
    await b.close()
    b = await WS.open(burl, corpus, extra_headers=hdr)          # resumed
    await b.until(lambda m: m.get("type") == "welcome")
    await b.send({"type": "bye"})
    await b.close()

    # A kick, the session a user does not have, a user going offline.
    sid = bob2.msgs[0]["session_id"]
    api(d, corpus, "DELETE", f"/v1/sessions/{sid}")
    api(d, corpus, "DELETE", f"/v1/sessions/{sid}")
    await bob.close()
    await bob2.close()
    await carol.close()
    await ann.close()

    # A refused upgrade (an expired token): its JSON error body.
    _s, _h, raw = http_sync(d.port, "GET", "/v1/ws?token=" + token("bob", exp_in=-60), {
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    corpus.add_text(raw.decode())

    # The webhook endpoint was down while more events than the log holds
    # happened: it gets a gap notice once it answers again.
    rx.status = 204
    end = time.monotonic() + 10
    while time.monotonic() < end and not any("gap" in body for _h, body, _r in rx.batches()):
        await asyncio.sleep(0.1)
    # Then a delivery as webhooks.md shows one: a client connects.
    dave = await WS.open(ws_url(token("dave", meta={"name": "Dave"})), corpus)
    end = time.monotonic() + 10
    while time.monotonic() < end and not any(
            e.get("type") == "user.online" and e.get("user_id") == "dave"
            for _h, body, _r in rx.batches() for e in body.get("events", [])):
        await asyncio.sleep(0.05)
    await dave.close()
    # The event stream of a cursor before this run: a gap, then the log.
    done = threading.Event()
    t = threading.Thread(target=read_stream, args=(d, corpus, "/v1/events?after=1", done),
                         daemon=True)
    t.start()
    await asyncio.sleep(0.5)
    done.set()
    t.join(10)


def metric_names(d):
    """The metric names of presenced's /metrics (a histogram's by its base
    name too)."""
    _s, _h, raw = http_sync(d.port, "GET", "/metrics", {"Authorization": f"Bearer {API_KEY}"})
    names = set()
    for line in raw.decode().splitlines():
        m = re.match(r"(presenced_\w+)", line) if not line.startswith("#") else None
        if m:
            names.add(m.group(1))
            names.add(re.sub(r"_(bucket|sum|count)$", "", m.group(1)))
    return names


def metrics_named(names):
    """(file, line, name) of every presenced_* metric the documents name
    that /metrics does not have."""
    for rel in FILES:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                for m in re.finditer(r"\bpresenced_[a-z_]*[a-z]", line):
                    if m.group(0) not in names:
                        yield rel, i, m.group(0)


async def demo_answers(binary, corpus):
    """The demo mode's own endpoints, on a presenced started with --demo."""
    d = Daemon(binary, {"--jwt-secret": None, "--jwt-audience": None, "--demo": ""}, "demo")
    try:
        d.start()
        for method, path, body in (("POST", "/v1/demo/token", {"name": "alice"}),
                                   ("GET", "/v1/demo/users", None)):
            _s, _h, raw = http_sync(d.port, method, path, None, body)
            corpus.add_text(raw.decode())
    finally:
        d.stop()
        d.cleanup()


def main():
    args = harness.parse_args()
    corpus = Corpus()
    rx = HookReceiver()
    rx.status = 503  # down until the log has moved past its cursor
    d = Daemon(args.presenced, {"--log-capacity": "16", "--webhook-retry-min-ms": "50",
                                "--webhook-retry-max-ms": "100", "--webhook-batch-ms": "0",
                                "--webhook": f"url={rx.url()},secret=whsec-docs-0123456789abcdef0123456789,name=docs"},
               "docs-examples")
    d.start()
    # The whole log from the start, as the scenario makes it.
    done = threading.Event()
    stream = threading.Thread(target=read_stream, args=(d, corpus, "/v1/events?after=0", done),
                              daemon=True)
    stream.start()
    try:
        asyncio.run(asyncio.wait_for(scenario(d, rx, corpus), 60))
        metrics = metric_names(d)
        asyncio.run(demo_answers(args.presenced, corpus))
    finally:
        d.stop()   # ends the stream: presenced closes it at shutdown
        done.set()
        stream.join(10)
        d.cleanup()
        rx.stop()
    for _h, body, _raw in rx.batches():
        corpus.add(body)

    bad = 0
    n = 0
    for rel, line, o, err in examples():
        n += 1
        if o is None:
            bad += 1
            print(f"{rel}:{line}: a json block that is not JSON: {err}")
            continue
        if any(match(o, r) for r in corpus.objects):
            continue
        bad += 1
        print(f"{rel}:{line}: no answer of presenced has these members:\n"
              f"    shown: {json.dumps(o, ensure_ascii=False)}\n"
              f"    sent:  {json.dumps(nearest(o, corpus.objects), ensure_ascii=False)}")
    # The metrics the documents name (a dashboard or an alert built from them).
    for rel, line, name in metrics_named(metrics):
        bad += 1
        print(f"{rel}:{line}: {name} is no metric of presenced's /metrics")
    print(f"{n} JSON examples, {len(corpus.objects)} objects sent by presenced, {len(metrics)} "
          f"metrics: {bad} wrong")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
