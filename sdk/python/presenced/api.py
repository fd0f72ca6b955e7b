# SPDX-License-Identifier: MIT
"""A typed client of presenced's backend HTTP API (docs/api.md)."""
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, Iterator, List, Optional, TypedDict, Union

from ._auth import bearer, check_url
from .errors import PresenceError, _error_of
from .events import EventStream


class _UserBase(TypedDict):
    user_id: str
    status: str          # "online" | "idle" | "offline"
    since: int           # ms since the epoch; 0: never seen
    last_seen: int
    sessions: int
    version: int


class User(_UserBase, total=False):
    availability: str    # "auto" | "dnd" | "away" | "invisible" (the truth, never masked)
    availability_since: int
    last_active: int     # last online, not idle (ms)
    message: Optional[Dict[str, Any]]   # {"text", "emoji", "expires", "set"} or None
    devices: Dict[str, Dict[str, Any]]  # kind -> {"status", "sessions"}


class Session(TypedDict):
    session_id: str
    status: str          # "online" | "idle"
    meta: Optional[Dict[str, Any]]
    connected: int
    since: int
    instance: str
    device: str          # the device kind: "web" unless the token or the backend named one


def _q(s: str) -> str:
    """One id or channel name in a path. None or "" would be a request to
    another endpoint or none (404 not_found, or "quote_from_bytes() expected
    bytes"): a caller's bug, named as such, as the Node SDK does."""
    if not isinstance(s, str) or s == "":
        raise TypeError(f"an id or channel name must be a non-empty str, not {s!r}")
    return urllib.parse.quote(s, safe="")


def _origin(url: str):
    u = urllib.parse.urlsplit(url)
    return u.scheme, u.hostname, u.port or (443 if u.scheme == "https" else 80)


class _KeyStaysWithItsOrigin(urllib.request.HTTPRedirectHandler):
    """Redirects keep the API key only to the same scheme, host and port, as
    fetch does for the Node SDK and net/http for the Go SDK; urllib sent it on
    to wherever a redirect pointed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(new.full_url) != _origin(req.full_url):
            new.remove_header("Authorization")
        return new


_opener = urllib.request.build_opener(_KeyStaysWithItsOrigin)


class PresenceAPI:
    """``PresenceAPI("http://127.0.0.1:7070", api_key)``. Every failure raises
    PresenceError (``status``, ``code``: the daemon's code or "network")."""

    def __init__(self, url: str, api_key: str, *, timeout: float = 10.0):
        bearer(api_key)                  # refused here, not at the first call
        check_url(url, "PresenceAPI")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Accept": "application/json", "Authorization": bearer(self.api_key)}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with _opener.open(req, timeout=self.timeout) as res:
                text = res.read()
                status = res.status
        except urllib.error.HTTPError as e:
            try:
                text = e.read()
            except (OSError, http.client.HTTPException):
                text = b""
            err = _error_of(text)
            if err is not None:
                raise PresenceError(e.code, err.get("code") or f"http_{e.code}", str(err.get("message", ""))) from None
            raise PresenceError(e.code, f"http_{e.code}", text[:200].decode("utf-8", "replace")) from None
        except (urllib.error.URLError, OSError) as e:
            raise PresenceError(0, "network", str(getattr(e, "reason", e))) from e
        except http.client.HTTPException as e:
            # Not OSErrors, so urllib lets them through: an answer cut short
            # (presenced killed mid-body: IncompleteRead) or one that is not
            # HTTP (BadStatusLine). No usable answer came, as for a refused
            # connection, and a retry may well get one.
            raise PresenceError(0, "network", f"{type(e).__name__}: {e}"[:200]) from e
        try:
            return json.loads(text)
        except ValueError:
            raise PresenceError(status, "bad_response", "the answer is not JSON") from None

    def get_user(self, user_id: str) -> User:
        """GET /v1/users/{id}"""
        return self.request("GET", f"/v1/users/{_q(user_id)}")

    def get_users(self, user_ids: List[str]) -> List[User]:
        """POST /v1/users/query in requests of 1000 ids; in the order asked."""
        if isinstance(user_ids, (str, bytes)):
            # A str is a sequence too: get_users("alice") asked for "a", "l", ...
            raise TypeError("get_users: user_ids must be a list of user ids, not one string")
        out: List[User] = []
        for i in range(0, len(user_ids), 1000):
            out += self.request("POST", "/v1/users/query", {"user_ids": list(user_ids[i:i + 1000])})["users"]
        return out

    def sessions(self, user_id: str) -> List[Session]:
        """GET /v1/users/{id}/sessions"""
        return self.request("GET", f"/v1/users/{_q(user_id)}/sessions")["sessions"]

    def kick(self, session_id: str) -> None:
        """DELETE /v1/sessions/{id}: the client is closed with 4003; PresenceError "no_session" if gone."""
        self.request("DELETE", f"/v1/sessions/{_q(session_id)}")

    # ---- channels (protocol.md section 4) ----

    def channel(self, name: str) -> Dict[str, Any]:
        """GET /v1/channels/{name}: {"channel", "count"}"""
        return self.request("GET", f"/v1/channels/{_q(name)}")

    def channel_members(self, name: str, limit: int = 100, after: Optional[str] = None) -> Dict[str, Any]:
        """One page: {"count", "members", "next"} (next is None on the last page)."""
        q = {"limit": limit, **({"after": after} if after is not None else {})}
        return self.request("GET", f"/v1/channels/{_q(name)}/members?{urllib.parse.urlencode(q)}")

    def all_channel_members(self, name: str, limit: int = 1000) -> Iterator[Dict[str, Any]]:
        """Every member, page after page."""
        after: Optional[str] = None
        while True:
            page = self.channel_members(name, limit, after)
            yield from page["members"]
            after = page.get("next")
            if after is None:
                return

    def channels(self, prefix: str = "", limit: int = 100, after: Optional[str] = None) -> Dict[str, Any]:
        """Active channels under a prefix: {"channels": [{"channel", "count", "shown_count"}], "next"}"""
        q: Dict[str, Any] = {"limit": limit}
        if prefix:
            q["prefix"] = prefix
        if after is not None:
            q["after"] = after
        return self.request("GET", f"/v1/channels?{urllib.parse.urlencode(q)}")

    def user_channels(self, user_id: str) -> List[Dict[str, Any]]:
        return self.request("GET", f"/v1/users/{_q(user_id)}/channels")["channels"]

    def remove_from_channel(self, name: str, user_id: str) -> None:
        """Every session of the user leaves the channel (reason kicked); "not_member" if none was in it."""
        self.request("DELETE", f"/v1/channels/{_q(name)}/members/{_q(user_id)}")

    # ---- status that people set (protocol.md section 6) ----

    def set_availability(self, user_id: str, availability: str) -> Dict[str, Any]:
        """"auto", "dnd", "away" or "invisible"."""
        return self.request("PUT", f"/v1/users/{_q(user_id)}/availability", {"availability": availability})

    def set_message(self, user_id: str, text: str, emoji: Optional[str] = None,
                    expires_in_s: Optional[int] = None, expires_at_ms: Optional[int] = None) -> Any:
        body: Dict[str, Any] = {"text": text}
        if emoji is not None:
            body["emoji"] = emoji
        if expires_in_s is not None:
            body["expires_in"] = expires_in_s
        if expires_at_ms is not None:
            body["expires_at"] = expires_at_ms
        return self.request("PUT", f"/v1/users/{_q(user_id)}/message", body)

    def clear_message(self, user_id: str) -> None:
        self.request("DELETE", f"/v1/users/{_q(user_id)}/message")

    # ---- backend-reported sessions (protocol.md section 5) ----

    def put_session(self, session_id: str, user_id: str, ttl_ms: int, status: Optional[str] = None,
                    meta: Optional[Dict[str, Any]] = None, device: Optional[str] = None) -> Dict[str, Any]:
        """Create or renew a session with a TTL (serverless backends); ``device``
        is its device kind ("web" when absent), kept from the creation."""
        body: Dict[str, Any] = {"user": user_id, "ttl_ms": ttl_ms}
        if status is not None:
            body["status"] = status
        if meta is not None:
            body["meta"] = meta
        if device is not None:
            body["device"] = device
        return self.request("PUT", f"/v1/sessions/{_q(session_id)}", body)

    def origins(self) -> List[Dict[str, Any]]:
        """GET /v1/origins: the backends reporting sessions."""
        return self.request("GET", "/v1/origins")["origins"]

    def health(self) -> Dict[str, Any]:
        return self.request("GET", "/healthz")

    def events(self, *, after: Union[int, str, None] = None, types: Union[str, List[str], None] = None,
               channel_prefix: Optional[str] = None, retry_s: float = 0.5, max_retry_s: float = 15.0,
               read_timeout_s: float = 60.0, on_error: Optional[Callable[[Exception], None]] = None,
               on_connect: Optional[Callable[[], None]] = None) -> EventStream:
        """GET /v1/events as an iterator that resumes by cursor; see EventStream."""
        # The options spelt out (they were **kw: Any): a type checker and an
        # editor saw none of them, and a misspelt one (cursor=, channelPrefix=)
        # went unchecked until run. EventStream imported at the top: a name only
        # in a string annotation made the stream Any to type checkers.
        return EventStream(self.url, self.api_key, after=after, types=types, channel_prefix=channel_prefix,
                           retry_s=retry_s, max_retry_s=max_retry_s, read_timeout_s=read_timeout_s,
                           on_error=on_error, on_connect=on_connect)
