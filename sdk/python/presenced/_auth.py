# SPDX-License-Identifier: MIT
"""The API key as an Authorization header, one rule for every client here."""


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
