# SPDX-License-Identifier: MIT
"""Webhooks from a real presenced into a Flask view (verify_webhook), a WSGI
app mounted in Flask (WSGIWebhook) and a FastAPI app serving an ASGIWebhook
on uvicorn: every event once; forged, stale and replayed requests refused; a
failed handler gets the batch again."""
import asyncio
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from presenced import ASGIWebhook, WebhookError, WebhookGuard, WSGIWebhook, mint_token, verify_webhook
from conftest import Presenced, User, free_port, wait_for

SECRET = "sdk-python-webhook-secret-0123456789"
got = {"flask": [], "wsgi": [], "asgi": []}
captured = []
attempts = {"asgi": 0}


@pytest.fixture(scope="module")
def setup():
    from flask import Flask, request
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.serving import make_server
    from fastapi import FastAPI
    import uvicorn

    guard = WebhookGuard()
    app = Flask("receiver")

    @app.post("/hook")
    def hook():
        body = request.get_data()
        captured.append((dict(request.headers), body))
        try:
            d = verify_webhook(SECRET, request.headers, body, guard=guard)
        except WebhookError as e:
            return {"error": {"code": e.code, "message": e.message}}, e.status
        got["flask"].extend(d.events)
        return "", 204

    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/wsgi": WSGIWebhook(SECRET, lambda d: got["wsgi"].extend(d.events))})
    flask_port = free_port()
    srv = make_server("127.0.0.1", flask_port, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    async def on_asgi(d):
        attempts["asgi"] += 1
        if attempts["asgi"] == 1:
            raise RuntimeError("database down")     # presenced retries the batch
        got["asgi"].extend(d.events)
    fast = FastAPI()
    fast.add_route("/hook", ASGIWebhook(SECRET, on_asgi), methods=["POST"])  # an ASGI app at exactly /hook
    asgi_port = free_port()
    userver = uvicorn.Server(uvicorn.Config(fast, host="127.0.0.1", port=asgi_port, log_level="warning", lifespan="off"))
    threading.Thread(target=userver.run, daemon=True).start()
    wait_for(lambda: userver.started, what="uvicorn")

    hook = lambda name, url: ["--webhook", f"url={url},secret={SECRET},name={name}"]  # noqa: E731
    pd = Presenced(*hook("flask", f"http://127.0.0.1:{flask_port}/hook"),
                   *hook("wsgi", f"http://127.0.0.1:{flask_port}/wsgi"),
                   *hook("asgi", f"http://127.0.0.1:{asgi_port}/hook"),
                   "--webhook-batch-ms", "10", "--webhook-retry-min-ms", "50", "--webhook-retry-max-ms", "100").start()
    yield pd, flask_port
    pd.stop()
    srv.shutdown()
    userver.should_exit = True


def test_every_receiver_gets_every_event_once(setup):
    pd, _ = setup
    User(pd, "alice").close()
    want = ["session.connected", "user.online", "session.disconnected", "user.offline"]
    # The daemon's first event is its fresh-start cleanup (docs/webhooks.md).
    def kinds(name):
        return [e["type"] for e in got[name] if e["type"] != "cleanup"]
    for name in got:
        wait_for(lambda: len(kinds(name)) >= 4, what=f"{name} deliveries")
        assert kinds(name) == want, name
    assert attempts["asgi"] >= 2, "the failed delivery was sent again"


def post(port, headers, body):
    h = {"Content-Type": "application/json", **{k: v for k, v in headers.items() if v is not None}}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/hook", data=body, headers=h, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["error"]["code"]


def sign(ts, body):
    return "v1=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()


def test_replayed_forged_stale_refused(setup):
    _, port = setup
    # A delivery naming alice (the first is the fresh-start cleanup).
    wait_for(lambda: any(b"alice" in b for _h, b in captured), what="a captured delivery")
    headers, body = next((h, b) for h, b in captured if b"alice" in b)
    ts, sig = headers["Presence-Timestamp"], headers["Presence-Signature"]
    n = len(got["flask"])
    assert post(port, {"Presence-Timestamp": ts, "Presence-Signature": sig}, body) == (409, "replayed")
    # The same capture with an entry that matches nothing added: still the
    # delivery seen, refused as a replay.
    for padded in (sig + ",v1=00", "v1=00, " + sig):
        assert post(port, {"Presence-Timestamp": ts, "Presence-Signature": padded}, body) == (409, "replayed"), padded
    assert post(port, {"Presence-Timestamp": ts, "Presence-Signature": sig}, body.replace(b"alice", b"mallo")) == (401, "bad_signature")
    old = str(int(time.time() * 1000) - 600000)
    assert post(port, {"Presence-Timestamp": old, "Presence-Signature": sign(old, body)}, body) == (401, "stale")
    assert post(port, {"Presence-Timestamp": ts}, body) == (401, "missing_signature")
    now = str(int(time.time() * 1000))
    assert post(port, {"Presence-Timestamp": now, "Presence-Signature": sign(now, body)}, body) == (204, None)
    assert len(got["flask"]) == n, "a batch sent again is not applied twice"


def test_verify_rotation_and_guard():
    body = json.dumps({"instance": "i1", "first_seq": 1, "last_seq": 2, "events": [{"seq": 1}, {"seq": 2}]}).encode()
    ts = str(int(time.time() * 1000))
    k = lambda key: "v1=" + hmac.new(key, ts.encode() + b"." + body, hashlib.sha256).hexdigest()  # noqa: E731
    guard = WebhookGuard()
    d = verify_webhook(["old", "new"], [(b"presence-timestamp", ts.encode()), (b"presence-signature", f"v1=00, {k(b'new')}".encode())], body, guard=guard)
    assert len(d.events) == 2
    # The captured request again, its junk entry dropped or another added:
    # the entry that verified was seen, so it is a replay (the raw header was
    # the key).
    for replay in (k(b"new"), k(b"new") + ",v1=11"):
        with pytest.raises(WebhookError) as e:
            verify_webhook("new", {"presence-timestamp": ts, "presence-signature": replay}, body, guard=guard)
        assert e.value.code == "replayed", replay
    # A retry of the batch (a new timestamp, signed anew) with a junk entry:
    # accepted, its events dropped by seq.
    ts2 = str(int(ts) + 1)
    sig2 = "v1=" + hmac.new(b"new", ts2.encode() + b"." + body, hashlib.sha256).hexdigest()
    d2 = verify_webhook("new", {"presence-timestamp": ts2, "presence-signature": sig2 + ",v1=11"}, body, guard=guard)
    assert d2.duplicates == 2 and d2.events == []
    # Rotation, both entries sent: a replay carrying only one is still refused.
    ts3 = str(int(ts) + 2)
    k3 = lambda key: "v1=" + hmac.new(key, ts3.encode() + b"." + body, hashlib.sha256).hexdigest()  # noqa: E731
    both = f"{k3(b'old')},{k3(b'new')}"
    assert verify_webhook(["old", "new"], {"presence-timestamp": ts3, "presence-signature": both}, body, guard=guard).duplicates == 2
    for one in (k3(b"old"), k3(b"new")):
        with pytest.raises(WebhookError) as e:
            verify_webhook(["old", "new"], {"presence-timestamp": ts3, "presence-signature": one}, body, guard=guard)
        assert e.value.code == "replayed", one
    with pytest.raises(WebhookError) as e:
        verify_webhook("other", {"presence-timestamp": ts, "presence-signature": k(b"new")}, body)
    assert (e.value.code, e.value.status) == ("bad_signature", 401)
    with pytest.raises(WebhookError) as e:
        verify_webhook("new", {"presence-timestamp": ts, "presence-signature": k(b"new")}, b"[1]" if False else b'{"x":1}')
    assert e.value.code == "bad_signature"


def test_a_tolerance_that_is_not_a_number_is_refused():
    # float("nan") (an unset setting read as a float) compared false with
    # every age: an hour-old delivery verified, so a captured one stayed
    # valid for ever. Refused where it is given.
    body = b'{"instance":"i1","first_seq":1,"last_seq":1,"events":[{"seq":1}]}'
    ts = str(int(time.time() * 1000) - 3600_000)
    sig = "v1=" + hmac.new(b"s", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    for bad in (float("nan"), float("inf"), -1, "300", None, True):
        with pytest.raises(ValueError):
            verify_webhook("s", {"presence-timestamp": ts, "presence-signature": sig}, body, tolerance_s=bad)
        with pytest.raises(ValueError):
            WebhookGuard(tolerance_s=bad)
        with pytest.raises(ValueError):
            WSGIWebhook("s", lambda d: None, tolerance_s=bad)
    with pytest.raises(WebhookError) as e:
        verify_webhook("s", {"presence-timestamp": ts, "presence-signature": sig}, body)
    assert e.value.code == "stale"


def test_mint_token_refuses_milliseconds():
    # expires_at=time.time() * 1000 made a token valid for ~50,000 years,
    # which presenced accepts.
    with pytest.raises(ValueError, match="milliseconds"):
        mint_token("s", "ann", expires_at=int(time.time() * 1000) + 60_000)
    with pytest.raises(ValueError):
        mint_token("s", "ann", expires_at=float("nan"))
    assert mint_token("s", "ann", expires_at=int(time.time()) + 60)


def test_timestamp_of_other_digits_refused(setup):
    # A Presence-Timestamp is ASCII digits (milliseconds); "²" is a digit to
    # str.isdigit() but not to int(), and Arabic-Indic digits are another
    # spelling of a number presenced never sends: both 401 bad_timestamp.
    _, port = setup
    body = b'{"instance":"i","first_seq":1,"last_seq":1,"events":[]}'
    now = str(int(time.time() * 1000)).translate(str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"))
    for ts in ("\u00b2", now):
        with pytest.raises(WebhookError) as e:
            verify_webhook(SECRET, {"Presence-Timestamp": ts, "Presence-Signature": sign(ts, body)}, body)
        assert (e.value.code, e.value.status) == ("bad_timestamp", 401)
    # the receiver answers it (a header of one Latin-1 byte), not a 500
    assert post(port, {"Presence-Timestamp": "\u00b2", "Presence-Signature": "v1=00"}, body) == (401, "bad_timestamp")


def test_forget_reopens_only_what_the_failed_delivery_brought():
    # Events 1-10 applied; then a batch 5-15 (the in-flight batch sent again
    # by a new owner on Redis) whose handler fails, and a batch 1-10 sent
    # again after a lost answer whose handler fails: their retries bring only
    # what was never applied, never 1-10 a second time.
    guard = WebhookGuard()

    def deliver(first, last):
        body = json.dumps({"instance": "i1", "first_seq": first, "last_seq": last,
                           "events": [{"seq": n} for n in range(first, last + 1)]}).encode()
        ts = str(int(time.time() * 1000))
        time.sleep(0.002)                 # every attempt its own timestamp, as presenced signs them
        return verify_webhook(SECRET, {"Presence-Timestamp": ts, "Presence-Signature": sign(ts, body)}, body, guard=guard)
    assert len(deliver(1, 10).events) == 10
    failed = deliver(5, 15)
    assert [e["seq"] for e in failed.events] == [11, 12, 13, 14, 15]
    guard.forget(failed)
    assert [e["seq"] for e in deliver(5, 15).events] == [11, 12, 13, 14, 15]
    again = deliver(1, 10)
    assert again.events == []
    guard.forget(again)
    assert deliver(1, 10).events == []


def test_a_retry_during_a_slow_handler_waits_for_its_outcome():
    # presenced retries a batch after --webhook-timeout-ms, while the first
    # attempt's handler may still run. That retry is answered 409 in_progress
    # (presenced tries again later), not 204 with its events dropped as
    # applied: when the slow attempt then failed, the batch was lost.
    import io
    release, applied, calls = threading.Event(), [], []

    def on_delivery(d):
        calls.append(d)
        if len(calls) == 1:
            release.wait(5)
            raise RuntimeError("database down")
        applied.extend(e["seq"] for e in d.events)
    app = WSGIWebhook(SECRET, on_delivery)
    body = json.dumps({"instance": "i1", "first_seq": 1, "last_seq": 2, "events": [{"seq": 1}, {"seq": 2}]}).encode()

    def attempt(out):
        ts = str(int(time.time() * 1000))
        time.sleep(0.002)                 # every attempt its own timestamp and signature
        environ = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
                   "HTTP_PRESENCE_TIMESTAMP": ts, "HTTP_PRESENCE_SIGNATURE": sign(ts, body)}
        app(environ, lambda status, headers: out.append(int(status.split()[0])))
    first = []
    t = threading.Thread(target=attempt, args=(first,))
    t.start()
    wait_for(lambda: calls, what="the first attempt in its handler")
    retry = []
    attempt(retry)
    release.set()
    t.join(5)
    assert (first, retry) == ([500], [409])
    again = []
    attempt(again)
    assert again == [204] and applied == [1, 2]


def test_a_request_other_than_a_post_is_405_naming_post(setup):
    # The 405 of WSGIWebhook and ASGIWebhook had no Allow header (RFC 9110
    # 15.5.6 wants one), where the Go and Node receivers name POST.
    _, flask_port = setup
    req = urllib.request.Request(f"http://127.0.0.1:{flask_port}/wsgi", method="GET")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert (e.value.code, e.value.headers.get("Allow")) == (405, "POST")
    assert json.loads(e.value.read())["error"]["code"] == "method_not_allowed"

    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(msg):
        sent.append(msg)
    asyncio.run(ASGIWebhook(SECRET, lambda d: None)({"type": "http", "method": "GET"}, receive, send))
    assert sent[0]["status"] == 405 and (b"allow", b"POST") in sent[0]["headers"]
