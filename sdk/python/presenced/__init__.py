# SPDX-License-Identifier: MIT
"""presenced: the Python SDK of presenced (protocol v1).

Client tokens, webhook verification (with WSGI and ASGI helpers for Flask,
FastAPI and the like), a typed client of the backend HTTP API and an event
stream that resumes by cursor. Standard library only.
"""
from . import codes
from .errors import PresenceError, WebhookError
from .tokens import mint_token
from .webhooks import verify_webhook, WebhookGuard, Delivery, WSGIWebhook, ASGIWebhook
from .api import PresenceAPI, User, Session
from .events import EventStream, StreamItem
from .backend import BackendConnection, LeftNotice
from .track import TrackedSession, TrackASGI, session_from_scope

PROTOCOL_VERSION = 1
__version__ = "1.0.0"

__all__ = [
    "PROTOCOL_VERSION", "codes", "PresenceError", "WebhookError", "mint_token", "verify_webhook",
    "WebhookGuard", "Delivery", "WSGIWebhook", "ASGIWebhook", "PresenceAPI", "User", "Session",
    "EventStream", "StreamItem", "BackendConnection", "LeftNotice",
    "TrackedSession", "TrackASGI", "session_from_scope",
]
