# SPDX-License-Identifier: MIT
"""An app server's own WebSocket connections reported as sessions: the
websockets package's server with `async with backend.track(...)`, and a plain
ASGI app behind TrackASGI on uvicorn (a real ASGI server; Starlette's too when
installed). Real clients connect to it; the real presenced (offline grace 0)
says who is online."""
import asyncio
import urllib.parse

import pytest

from presenced import BackendConnection, PresenceAPI, PresenceError, TrackASGI, session_from_scope
from conftest import API_KEY, Presenced, free_port


async def user_is(api, user_id, status, sessions, timeout=10.0):
    """Waits until presenced reports the user so; fails with what it said last."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        u = await asyncio.to_thread(api.get_user, user_id)
        if (u["status"], u["sessions"]) == (status, sessions):
            return
        if loop.time() > end:
            raise AssertionError(f"{user_id}: {u['status']} with {u['sessions']} sessions, not {status} with {sessions}")
        await asyncio.sleep(0.05)


def user_of(path):
    return urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("user", [None])[0]


async def client(port, user, path="/ws"):
    import websockets
    return await websockets.connect(f"ws://127.0.0.1:{port}{path}?user={user}")


def test_context_manager_with_a_websockets_server(pd):
    import websockets
    api = PresenceAPI(pd.url, API_KEY)

    async def main():
        backend = BackendConnection(pd.url, API_KEY, "py-track-ws")
        await backend.connect()

        async def handler(ws, path=None):
            async with backend.track(user_of(path or ws.path), device="web") as session:
                async for message in ws:
                    if message == "raise":
                        raise RuntimeError("the handler failed")
                    backend.set_status(session, message)   # the client's idle / online
        port = free_port()
        server = await websockets.serve(handler, "127.0.0.1", port)
        try:
            c1 = await client(port, "alice")
            await user_is(api, "alice", "online", 1)
            c2 = await client(port, "alice")               # a second tab: one user, two sessions
            await user_is(api, "alice", "online", 2)
            await c1.send("idle")
            await c2.send("idle")
            await user_is(api, "alice", "idle", 2)
            await c1.close()
            await user_is(api, "alice", "idle", 1)
            await c2.close()
            await user_is(api, "alice", "offline", 0)

            c3 = await client(port, "bob")
            await user_is(api, "bob", "online", 1)
            await c3.send("raise")                         # the handler raises: closed all the same
            await user_is(api, "bob", "offline", 0)
            await c3.close()
            assert backend.sessions == {}
        finally:
            server.close()
            await server.wait_closed()
            await backend.end(bye=True)
    asyncio.run(asyncio.wait_for(main(), 60))


def test_context_manager_closes_on_cancellation(pd):
    api = PresenceAPI(pd.url, API_KEY)

    async def main():
        backend = BackendConnection(pd.url, API_KEY, "py-track-cancel")
        await backend.connect()
        entered = asyncio.Event()

        async def serve_forever():
            async with backend.track("carol"):
                entered.set()
                await asyncio.sleep(3600)
        task = asyncio.ensure_future(serve_forever())
        await entered.wait()
        await user_is(api, "carol", "online", 1)
        task.cancel()                                      # a shutdown, a timeout
        await asyncio.gather(task, return_exceptions=True)
        await user_is(api, "carol", "offline", 0)
        with pytest.raises(ValueError):
            backend.track("carol", status="away")
        t = backend.track("carol")
        assert backend.sessions == {}                      # nothing until entered
        with t as session:                                 # the plain `with` of threaded apps
            assert set(backend.sessions) == {session}
        t.close()                                          # again: nothing
        assert backend.sessions == {}
        await backend.end(bye=True)
    asyncio.run(asyncio.wait_for(main(), 30))


async def ws_app(scope, receive, send, backend):
    """A plain ASGI WebSocket endpoint, no framework."""
    msg = await receive()
    assert msg["type"] == "websocket.connect"
    if user_of("?" + scope["query_string"].decode()) == "refused":
        await send({"type": "websocket.close", "code": 4003})  # the app's own auth says no
        return
    await send({"type": "websocket.accept"})
    session = session_from_scope(scope)
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            return
        if msg.get("text") == "raise":
            raise RuntimeError("the app failed")
        backend.set_status(session, msg["text"])


async def run_uvicorn(app, port):
    import uvicorn
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None          # pytest's, not the server's
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return server, task


def test_asgi_middleware_on_uvicorn(pd):
    pytest.importorskip("uvicorn")
    import websockets
    api = PresenceAPI(pd.url, API_KEY)

    async def main():
        backend = BackendConnection(pd.url, API_KEY, "py-track-asgi")
        await backend.connect()

        def identify(scope):
            return user_of("?" + scope["query_string"].decode())
        app = TrackASGI(lambda s, r, se: ws_app(s, r, se, backend), backend, identify)
        port = free_port()
        server, task = await run_uvicorn(app, port)
        try:
            c1 = await client(port, "dora")
            await user_is(api, "dora", "online", 1)
            c2 = await client(port, "dora")
            await user_is(api, "dora", "online", 2)
            await c1.send("idle")
            await c2.send("idle")
            await user_is(api, "dora", "idle", 2)
            await c1.close()
            await user_is(api, "dora", "idle", 1)
            await c2.close()
            await user_is(api, "dora", "offline", 0)

            c3 = await client(port, "erin")
            await user_is(api, "erin", "online", 1)
            await c3.send("raise")
            await user_is(api, "erin", "offline", 0)
            await c3.close()

            with pytest.raises(websockets.exceptions.InvalidStatusCode):
                await client(port, "refused")              # refused before accept: never a session
            assert backend.sessions == {}
            assert backend.stats["ops_sent"] == 8          # 3 opens, 2 statuses, 3 closes: none for "refused"
        finally:
            server.should_exit = True
            await task
            await backend.end(bye=True)
    asyncio.run(asyncio.wait_for(main(), 60))


def test_asgi_middleware_with_starlette(pd):
    pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocketDisconnect
    api = PresenceAPI(pd.url, API_KEY)

    async def main():
        backend = BackendConnection(pd.url, API_KEY, "py-track-starlette")
        await backend.connect()

        async def endpoint(websocket):
            await websocket.accept()
            session = session_from_scope(websocket.scope)
            try:
                while True:
                    backend.set_status(session, await websocket.receive_text())
            except WebSocketDisconnect:
                pass
        app = Starlette(routes=[WebSocketRoute("/ws", endpoint)], middleware=[
            Middleware(TrackASGI, backend=backend,
                       identify=lambda scope: {"user_id": user_of("?" + scope["query_string"].decode()), "device": "web"})])
        port = free_port()
        server, task = await run_uvicorn(app, port)
        try:
            c = await client(port, "fay")
            await user_is(api, "fay", "online", 1)
            await c.send("idle")
            await user_is(api, "fay", "idle", 1)
            await c.close()
            await user_is(api, "fay", "offline", 0)
        finally:
            server.should_exit = True
            await task
            await backend.end(bye=True)
    asyncio.run(asyncio.wait_for(main(), 60))
