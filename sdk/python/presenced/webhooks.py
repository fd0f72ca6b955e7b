# SPDX-License-Identifier: MIT
"""Webhook deliveries (docs/webhooks.md): verify the signature over the raw
body, refuse stale timestamps and replayed requests, drop events already
applied (deliveries are at least once; (instance, seq) is the key). WSGI and
ASGI apps for Flask, FastAPI and anything else that mounts one."""
import hashlib
import hmac
import inspect
import json
import math
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from .errors import WebhookError

Secret = Union[str, bytes]
_TIMESTAMP = re.compile(r"[0-9]{1,16}")


@dataclass
class Delivery:
    """One verified delivery. ``events`` holds only events not applied before."""
    instance: str
    first_seq: int
    last_seq: int
    events: List[Dict[str, Any]]
    gap: Optional[Dict[str, int]] = None
    duplicates: int = 0
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)


class WebhookGuard:
    """What was delivered, in this process: the signatures seen inside the
    tolerance window (a replay repeats one; a genuine retry is signed anew) and
    the last seq applied per log instance. Persist ``last_seq`` with your data
    if a restart must not re-apply a batch. Thread-safe."""

    def __init__(self, tolerance_s: float = 300, max_signatures: int = 100000):
        _check_tolerance(tolerance_s)
        self.tolerance_ms = tolerance_s * 1000
        self.max_signatures = max_signatures
        self._seen: "OrderedDict[str, int]" = OrderedDict()
        self.last_seq: Dict[str, int] = {}
        self._handling: set = set()     # log instances a WSGI/ASGI app is handling a delivery of
        self._lock = threading.Lock()

    def seen(self, signature: Union[str, Sequence[str]], ts: int, now_ms: float) -> bool:
        """True if seen before (a replay). ``signature``: the verified entry
        of Presence-Signature (``v1=<hex>``), or all of them when several
        verified (one per secret during a rotation): a replay carrying any one
        is refused, and each is remembered. Not the raw header, which a replay
        can pad with an entry that matches nothing (``,v1=00``)."""
        sigs = [signature] if isinstance(signature, str) else list(signature)
        with self._lock:
            while self._seen:
                sig, t = next(iter(self._seen.items()))
                if t >= now_ms - self.tolerance_ms and len(self._seen) < self.max_signatures:
                    break
                del self._seen[sig]
            if any(s in self._seen for s in sigs):
                return True
            for s in sigs:
                self._seen[s] = ts
            return False

    def fresh(self, body: Dict[str, Any]) -> List[Dict[str, Any]]:
        with self._lock:
            last = self.last_seq.get(body["instance"], 0)
            events = [e for e in body["events"] if e.get("seq", 0) > last]
            if body.get("last_seq", 0) > last:
                self.last_seq[body["instance"]] = body["last_seq"]
            return events

    def _begin(self, instance: str) -> bool:
        with self._lock:
            if instance in self._handling:
                return False
            self._handling.add(instance)
            return True

    def _end(self, instance: str) -> None:
        with self._lock:
            self._handling.discard(instance)

    def forget(self, delivery: Delivery) -> None:
        """The handler failed: let presenced's retry of this batch through,
        back to just before the events it held that were new, as the Node and
        Go SDKs' guards do. Not to first_seq - 1: a batch sent again after a
        lost answer, or one overlapping events applied before, would have its
        retry apply those a second time."""
        if not delivery.events:
            return                  # nothing of it was new: nothing to open again
        first_new = min(e.get("seq", 0) for e in delivery.events)
        with self._lock:
            self.last_seq[delivery.instance] = min(self.last_seq.get(delivery.instance, 0), first_new - 1)


def _header(headers: Any, name: str) -> str:
    if isinstance(headers, Mapping) or hasattr(headers, "get"):
        for key in (name, name.lower(), name.title()):
            v = headers.get(key)
            if v is not None:
                return v.decode("latin-1") if isinstance(v, bytes) else str(v)
        if not isinstance(headers, Mapping):
            return ""
        for k, v in headers.items():   # a plain dict with other casing
            if str(k).lower() == name.lower():
                return str(v)
        return ""
    for k, v in headers:                # an iterable of (name, value) pairs
        k = k.decode("latin-1") if isinstance(k, bytes) else k
        if k.lower() == name.lower():
            return v.decode("latin-1") if isinstance(v, bytes) else v
    return ""


def verify_webhook(secret: Union[Secret, Sequence[Secret]], headers: Any, body: bytes, *,
                   tolerance_s: float = 300, now: Optional[float] = None,
                   guard: Optional[WebhookGuard] = None) -> Delivery:
    """Verify one delivery and parse it; raises WebhookError.

    ``secret``: the endpoint's secret, or several during a key rotation.
    ``headers``: any mapping (case-insensitive or not) or (name, value) pairs.
    ``body``: the raw bytes as received (never a re-serialised JSON).
    """
    return _verify(secret, headers, body, tolerance_s, now, guard, exclusive=False)


def _check_tolerance(tolerance_s) -> None:
    # NaN compares false with everything, so a tolerance of NaN (float() of
    # an unset setting) let a timestamp of any age through: a captured
    # delivery stayed valid for ever.
    if (isinstance(tolerance_s, bool) or not isinstance(tolerance_s, (int, float))
            or not math.isfinite(tolerance_s) or tolerance_s < 0):
        raise ValueError(f"tolerance_s must be a finite number of seconds >= 0, not {tolerance_s!r}")


def _verify(secret, headers, body, tolerance_s, now, guard, exclusive: bool) -> Delivery:
    _check_tolerance(tolerance_s)
    secrets = [s.encode() if isinstance(s, str) else s
               for s in (secret if isinstance(secret, (list, tuple)) else [secret]) if s]
    if not secrets:
        raise ValueError("verify_webhook: secret is required")
    if isinstance(body, str):
        body = body.encode()
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise WebhookError("no_raw_body", "the raw request body is needed", 500)
    body = bytes(body)
    ts = _header(headers, "Presence-Timestamp")
    sig = _header(headers, "Presence-Signature")
    if not sig:
        raise WebhookError("missing_signature", "no Presence-Signature header")
    # ASCII digits only, as the Node and Go SDKs: str.isdigit() also takes
    # "²" (int() then raised ValueError: a 500 instead of a 401) and other
    # scripts' digits, which no presenced sends.
    if not _TIMESTAMP.fullmatch(ts):
        raise WebhookError("bad_timestamp", "no valid Presence-Timestamp header")
    now_ms = (time.time() if now is None else now) * 1000
    if abs(now_ms - int(ts)) > tolerance_s * 1000:
        raise WebhookError("stale", f"timestamp {ts} is more than {tolerance_s} s from this clock")
    parts = [p.strip() for p in sig.split(",")]
    matched = []    # the entries that verified, each once: the replay guard's key
    for s in secrets:
        want = "v1=" + hmac.new(s, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        ok = False
        for p in parts:
            ok |= hmac.compare_digest(p.encode(), want.encode())
        if ok and want not in matched:
            matched.append(want)
    if not matched:
        raise WebhookError("bad_signature", "signature does not match")
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("events"), list) or not isinstance(data.get("instance"), str):
        raise WebhookError("bad_body", "signed, but not a delivery", 400)
    # exclusive (the WSGI and ASGI apps, which know when handling ends): while
    # a delivery of this log instance is handled, another is refused with 409,
    # which presenced retries. Its retry after --webhook-timeout-ms came
    # while a slow handler still ran, found the events marked applied and was
    # answered 204; if the handler then failed, the batch was lost. As the Go
    # SDK's WebhookHandler does.
    if guard is not None and exclusive and not guard._begin(data["instance"]):
        raise WebhookError("in_progress", "a delivery of this log instance is still being handled", 409)
    try:
        # Keyed on what verified, not on the raw header (see WebhookGuard.seen).
        if guard is not None and guard.seen(matched, int(ts), now_ms):
            raise WebhookError("replayed", "this request was delivered before", 409)
        events = guard.fresh(data) if guard is not None else data["events"]
    except BaseException:
        if guard is not None and exclusive:
            guard._end(data["instance"])
        raise
    return Delivery(instance=data["instance"], first_seq=data.get("first_seq", 0), last_seq=data.get("last_seq", 0),
                    events=events, gap=data.get("gap"), duplicates=len(data["events"]) - len(events), raw=data)


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


_REASONS = {204: "No Content", 400: "Bad Request", 401: "Unauthorized", 405: "Method Not Allowed",
            409: "Conflict", 413: "Payload Too Large", 500: "Internal Server Error"}


class _Handler:
    def __init__(self, secret, on_delivery, tolerance_s, guard, max_body):
        _check_tolerance(tolerance_s)
        self.secret = secret
        self.on_delivery = on_delivery
        self.tolerance_s = tolerance_s
        self.guard = WebhookGuard(tolerance_s) if guard is True else guard
        self.max_body = max_body

    def verify(self, headers, body) -> Delivery:
        """Verified, and with a guard marked in progress until done(delivery)."""
        return _verify(self.secret, headers, body, self.tolerance_s, None, self.guard, exclusive=True)

    def done(self, delivery: Delivery) -> None:
        if self.guard is not None:
            self.guard._end(delivery.instance)


class WSGIWebhook(_Handler):
    """A WSGI app that receives deliveries: answers 204 once ``on_delivery(delivery)``
    returned, 500 if it raised (presenced then retries), 401/409/400 when refused.
    Mount it (werkzeug's DispatcherMiddleware, or any WSGI router) or serve it alone."""

    def __init__(self, secret, on_delivery: Callable[[Delivery], Any], *, tolerance_s: float = 300,
                 guard: Union[WebhookGuard, bool, None] = True, max_body: int = 16 << 20):
        super().__init__(secret, on_delivery, tolerance_s, guard, max_body)

    def __call__(self, environ, start_response) -> Iterable[bytes]:
        def answer(status: int, body: bytes = b""):
            headers = [("Content-Type", "application/json")] if body else []
            # A 405 names the method it takes (RFC 9110 15.5.6), as the Go and Node receivers' do.
            if status == 405:
                headers.append(("Allow", "POST"))
            start_response(f"{status} {_REASONS.get(status, '')}", headers + [("Content-Length", str(len(body)))])
            return [body]
        if environ.get("REQUEST_METHOD") != "POST":
            return answer(405, _error_body("method_not_allowed", "POST only"))
        try:
            n = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            n = 0
        if n > self.max_body:
            return answer(413, _error_body("body_too_large", f"body over {self.max_body} bytes"))
        body = environ["wsgi.input"].read(n) if n else b""
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        try:
            delivery = self.verify(headers, body)
        except WebhookError as e:
            return answer(e.status, _error_body(e.code, e.message))
        try:
            self.on_delivery(delivery)
        except Exception as e:  # noqa: BLE001 - any failure of the handler: let presenced retry
            if self.guard is not None:
                self.guard.forget(delivery)
            return answer(500, _error_body("handler_failed", str(e)))
        finally:
            self.done(delivery)
        return answer(204)


class ASGIWebhook(_Handler):
    """An ASGI app that receives deliveries, routed at exactly its path in FastAPI
    or Starlette: ``app.add_route("/hook", ASGIWebhook(...), methods=["POST"])``
    (a mount answers /hook with a redirect to /hook/, which presenced does not
    follow). ``on_delivery`` may be a plain or an async function."""

    def __init__(self, secret, on_delivery: Callable[[Delivery], Any], *, tolerance_s: float = 300,
                 guard: Union[WebhookGuard, bool, None] = True, max_body: int = 16 << 20):
        super().__init__(secret, on_delivery, tolerance_s, guard, max_body)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        async def answer(status: int, body: bytes = b""):
            headers = [(b"content-length", str(len(body)).encode())]
            if body:
                headers.append((b"content-type", b"application/json"))
            if status == 405:
                headers.append((b"allow", b"POST"))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        if scope.get("method") != "POST":
            return await answer(405, _error_body("method_not_allowed", "POST only"))
        chunks, n = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            n += len(chunk)
            if n > self.max_body:
                return await answer(413, _error_body("body_too_large", f"body over {self.max_body} bytes"))
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        try:
            delivery = self.verify(scope.get("headers", []), b"".join(chunks))
        except WebhookError as e:
            return await answer(e.status, _error_body(e.code, e.message))
        try:
            r = self.on_delivery(delivery)
            if inspect.isawaitable(r):
                await r
        except Exception as e:  # noqa: BLE001
            if self.guard is not None:
                self.guard.forget(delivery)
            self.done(delivery)
            return await answer(500, _error_body("handler_failed", str(e)))
        except BaseException:
            self.done(delivery)     # cancelled (the client went away): not applied
            if self.guard is not None:
                self.guard.forget(delivery)
            raise
        self.done(delivery)
        await answer(204)
