# SPDX-License-Identifier: MIT
"""Reporting an app server's own connections as sessions of a
BackendConnection (the Node SDK's trackWebSocketServer for Python): a session
is open exactly while the code serving its connection runs, and closed by
whatever path that code leaves (return, exception, cancellation), so that no
session stays online behind a connection that is gone.

    async with backend.track("alice", device="web") as session:
        async for message in websocket: ...

    app = TrackASGI(app, backend, identify=lambda scope: user_of(scope))

Neither Starlette nor FastAPI is imported: TrackASGI is plain ASGI."""
import inspect
from typing import Any, Awaitable, Callable, Dict, Optional, Union

SCOPE_KEY = "presenced.session"


class TrackedSession:
    """What BackendConnection.track() returns: an async (or plain) context
    manager whose target is the session id. The session opens on entry, not
    before: a track() never entered opens nothing."""

    def __init__(self, backend, user_id: str, **options: Any):
        self._backend, self._user_id, self._options = backend, user_id, options
        self.session: Optional[str] = None
        self._closed = False

    def open(self) -> str:
        if self.session is None:
            self.session = self._backend.open(self._user_id, **self._options)
        return self.session

    def close(self) -> None:
        """Close the session (once; later calls do nothing)."""
        if self.session is not None and not self._closed:
            self._closed = True
            self._backend.close(self.session)

    # close() is synchronous (it queues the op), so it runs in full even when
    # the exit is a cancellation: nothing here awaits.
    async def __aenter__(self) -> str:
        return self.open()

    async def __aexit__(self, *exc) -> bool:
        self.close()
        return False

    def __enter__(self) -> str:
        return self.open()

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


Identity = Union[None, str, Dict[str, Any]]


def _identity(who: Identity) -> Optional[Dict[str, Any]]:
    if not who:
        return None
    if isinstance(who, str):
        return {"user_id": who}
    if isinstance(who, dict) and who.get("user_id"):
        return who
    raise TypeError(f"TrackASGI: identify must return a user id, a dict with 'user_id', or None, not {who!r:.60}")


def session_from_scope(scope: Dict[str, Any]) -> Optional[str]:
    """The session TrackASGI opened for this WebSocket (None when none: not
    identified, or not accepted yet). In Starlette/FastAPI:
    session_from_scope(websocket.scope)."""
    return scope.get(SCOPE_KEY)


class TrackASGI:
    """ASGI middleware: each WebSocket connection the app accepts is a session
    of the user identify(scope) names (a user id, or a dict with "user_id",
    "meta", "device", "status"; None: not reported; may be async), closed when
    the app returns for that connection, whether it returns, raises or is
    cancelled. HTTP and lifespan scopes pass through untouched.

    The session opens when the app sends websocket.accept, not at
    websocket.connect: a connection the app refuses (websocket.close before
    accepting, after its own authentication) never shows the user online.
    Its id is then in scope["presenced.session"] (session_from_scope), for
    backend.set_status(session, "idle"), backend.join(...).

    Starlette / FastAPI: app.add_middleware(TrackASGI, backend=backend, identify=...)."""

    def __init__(self, app, backend, identify: Callable[[Dict[str, Any]], Union[Identity, Awaitable[Identity]]]):
        self.app, self.backend, self.identify = app, backend, identify

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        who = self.identify(scope)
        if inspect.isawaitable(who):
            who = await who
        who = _identity(who)
        if who is None:
            return await self.app(scope, receive, send)
        options = {k: who[k] for k in ("meta", "device", "status") if who.get(k) is not None}
        tracked = TrackedSession(self.backend, who["user_id"], **options)

        async def tracking_send(message):
            if message["type"] == "websocket.accept" and tracked.session is None:
                # Before the accept goes out: the app's accept() returns with
                # the id in its scope already.
                scope[SCOPE_KEY] = tracked.open()
            await send(message)
        try:
            await self.app(scope, receive, tracking_send)
        finally:
            tracked.close()
