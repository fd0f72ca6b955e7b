# SPDX-License-Identifier: MIT
"""The API key as an Authorization header, and presenced's URL: one rule for
every client here."""
import urllib.parse


def bearer(api_key: str) -> str:
    """``Bearer <key>``. Whitespace around the key is dropped, as fetch drops
    it for the Node SDK: a key read from a file ends with a newline, which
    http.client refused with a ValueError printing the whole key (and the event
    stream retried forever). A control character inside the key is refused
    without showing it."""
    if not isinstance(api_key, str):
        raise TypeError(f"api_key must be a str, not {type(api_key).__name__}")
    key = api_key.strip(" \t\r\n")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise ValueError("api_key holds a control character (the key is not shown)")
    return f"Bearer {key}"


def check_url(url: str, who: str, schemes=("http", "https")) -> None:
    """Refuse at construction a URL no request can go to. "127.0.0.1:7070"
    without its scheme (the usual one) failed each API call as a retryable
    ``network`` error, the event stream with a TypeError about None, and a
    BackendConnection retried it for ever; the Node SDK throws a TypeError and
    the Go SDK answers CodeBadURL. The URL is not shown: it may hold
    credentials."""
    try:
        u = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        ok = u is not None and u.scheme in schemes and bool(u.hostname) and (u.port or 0) >= 0
    except ValueError:               # a port that is not a number
        ok = False
    if not ok:
        raise ValueError(f"{who}: url must be an absolute {' or '.join(s + '://' for s in schemes)} URL, "
                         "such as http://127.0.0.1:7070")
