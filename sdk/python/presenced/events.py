# SPDX-License-Identifier: MIT
"""The event stream (GET /v1/events) as an iterator that reconnects by itself
and resumes after the last event it yielded (Last-Event-ID): nothing still in
presenced's log is lost or repeated. A gap (events left the log, or presenced
restarted) is yielded as its own item: re-read the users you care about."""
import http.client
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

from ._auth import bearer, check_url
from .errors import PresenceError, _error_of


class _Retry(Exception):
    """An error answer worth retrying (5xx, 429...): the PresenceError for on_error."""

    def __init__(self, error: PresenceError):
        super().__init__(str(error))
        self.error = error


@dataclass
class StreamItem:
    type: str                 # the event type, or "gap"
    seq: Optional[int]        # None for a gap
    data: Dict[str, Any]      # the event; for a gap {"after", "oldest"}

    @property
    def gap(self) -> bool:
        return self.type == "gap"


class EventStream:
    """``for item in api.events(after=saved_cursor): ...``

    ``cursor`` is past the last event yielded (and past the events a filter
    skipped after it): store it with what you applied and pass it back as
    ``after``. Failed connections are retried
    (backoff from ``retry_s`` to ``max_retry_s``; ``on_error`` sees each);
    ``types`` ("user.*", ["channel.join", ...]) and ``channel_prefix`` filter
    on the server; a
    wrong key or a refused cursor raises PresenceError. ``close()`` (from any
    thread) ends the iteration.
    """

    def __init__(self, url: str, api_key: str, *, after: Union[int, str, None] = None,
                 retry_s: float = 0.5, max_retry_s: float = 15.0, read_timeout_s: float = 60.0,
                 on_error: Optional[Callable[[Exception], None]] = None,
                 on_connect: Optional[Callable[[], None]] = None,
                 types: Union[str, List[str], None] = None, channel_prefix: Optional[str] = None):
        # 0 made the socket non-blocking (every connect failed, retried for
        # ever) and None waited for ever on a dead path: refused, as the Node SDK does.
        if isinstance(read_timeout_s, bool) or not isinstance(read_timeout_s, (int, float)) or not read_timeout_s > 0:
            raise TypeError(f"EventStream: read_timeout_s must be a number of seconds > 0, not {read_timeout_s!r}")
        check_url(url, "EventStream")
        u = urllib.parse.urlsplit(url)
        self._host, self._port = u.hostname, u.port or (443 if u.scheme == "https" else 80)
        self._https = u.scheme == "https"
        self._prefix = u.path.rstrip("/")
        q = {}
        if types:
            q["types"] = types if isinstance(types, str) else ",".join(types)
        if channel_prefix:
            q["channel_prefix"] = channel_prefix
        self._query = ("?" + urllib.parse.urlencode(q)) if q else ""
        bearer(api_key)                  # refused here, not retried in __iter__
        self.api_key = api_key
        self.cursor: Optional[str] = None if after is None else str(after)
        self.retry_s, self.max_retry_s, self.read_timeout_s = retry_s, max_retry_s, read_timeout_s
        self.on_error, self.on_connect = on_error, on_connect
        self.connects = 0
        self._closed = threading.Event()
        self._conn: Optional[http.client.HTTPConnection] = None

    def close(self) -> None:
        self._closed.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(2)
            except OSError:
                pass

    def __iter__(self) -> Iterator[StreamItem]:
        delay = self.retry_s
        while not self._closed.is_set():
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.read_timeout_s)
            self._conn = conn
            headers = {"Authorization": bearer(self.api_key), "Accept": "text/event-stream"}
            if self.cursor is not None:
                headers["Last-Event-ID"] = self.cursor
            try:
                conn.request("GET", self._prefix + "/v1/events" + self._query, headers=headers)
                res = conn.getresponse()
                if res.status != 200:
                    text = res.read()
                    err = _error_of(text)
                    if err is not None:
                        e = PresenceError(res.status, err.get("code") or f"http_{res.status}", str(err.get("message", "")))
                    else:
                        e = PresenceError(res.status, f"http_{res.status}", text[:200].decode("utf-8", "replace"))
                    if res.status in (400, 401):
                        raise e            # does not heal by retrying
                    # Retried, and on_error sees the PresenceError itself (its
                    # code, retryable), as the Node and Go SDKs' streams give
                    # it: it was an OSError holding its text.
                    raise _Retry(e)
                self.connects += 1
                if self.on_connect:
                    self.on_connect()
                delay = self.retry_s
                ev: Dict[str, Any] = {"data": []}
                for raw in res:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line == "":
                        if ev["data"]:
                            item = self._item(ev)
                            if item is not None:
                                yield item
                        elif ev.get("id"):
                            # An id-only block: events a filtered stream
                            # skipped. The cursor moves past them and nothing
                            # is yielded (kept back, a resume from a cursor
                            # the log had evicted got a spurious gap).
                            self.cursor = ev["id"]
                        ev = {"data": []}
                    elif line.startswith(":"):
                        continue           # keepalive comment
                    else:
                        name, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if name == "data":
                            ev["data"].append(value)
                        else:
                            ev[name] = value
                    if self._closed.is_set():
                        return
            except PresenceError:
                raise
            except (_Retry, OSError, http.client.HTTPException, ValueError) as e:
                if self._closed.is_set():
                    return
                if self.on_error:
                    self.on_error(e.error if isinstance(e, _Retry) else e)
            finally:
                conn.close()
                self._conn = None
            if self._closed.wait(delay):
                return
            delay = min(delay * 2, self.max_retry_s)

    def _item(self, ev: Dict[str, Any]) -> Optional[StreamItem]:
        data = json.loads("\n".join(ev["data"]))
        kind = ev.get("event", "message")
        if kind == "gap":
            return StreamItem("gap", None, data)
        if ev.get("id"):
            self.cursor = ev["id"]
        return StreamItem(kind, data.get("seq"), data)
