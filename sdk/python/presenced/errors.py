# SPDX-License-Identifier: MIT
"""The daemon's errors: an HTTP status plus {"error": {"code", "message"}}."""
import json
from typing import Any, Dict, Optional


class PresenceError(Exception):
    """An error answer of presenced (or no answer: status 0, code "network").

    ``code`` is the daemon's stable error code (docs/api.md#errors):
    ``no_session``, ``bad_user_id``, ``unauthorized``, ``store_unavailable``, ...
    """

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        """No answer (but origin_taken_over: another process holds the origin;
        or a BackendConnection frame refused for its content, which sent again
        is refused again), a 5xx, 408 or 429."""
        return ((self.status == 0 and self.code not in _NOT_RETRYABLE_WITHOUT_STATUS) or self.status >= 500
                or self.status in (408, 429))


_NOT_RETRYABLE_WITHOUT_STATUS = ("origin_taken_over", "bad_json", "unknown_type", "bad_field", "too_many_ops")


class BackendRefused(PresenceError, ConnectionRefusedError):
    """presenced refused a BackendConnection (401 ``unauthorized``, 400
    ``bad_origin``...): a PresenceError with the daemon's code, as the Node and
    Go SDKs give it, and still the ConnectionRefusedError it was before."""


class WebhookError(Exception):
    """A delivery refused by verification; ``status`` is the HTTP status to answer."""

    def __init__(self, code: str, message: str, status: int = 401):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def _error_of(text: bytes) -> Optional[Dict[str, Any]]:
    """The {"error": {...}} object of an error answer, or None when the body is
    something else (a proxy's HTML page, or its own {"error": "text"})."""
    try:
        err = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return None
    return err if isinstance(err, dict) else None
