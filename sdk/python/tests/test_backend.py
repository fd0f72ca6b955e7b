# SPDX-License-Identifier: MIT
"""The backend session connection against a real presenced: sessions reported,
batched and acknowledged; a dropped connection and a restarted backend
re-assert their list with no event; a kick comes back as ended. Skipped, with
the reason, on a presenced without /v1/origins."""
import asyncio
import threading
import time

import pytest

from presenced import BackendConnection, PresenceAPI, PresenceError
from presenced.errors import BackendRefused
from conftest import API_KEY, Presenced, free_port, wait_for


def test_open_status_close_with_acks(pd):
    api = PresenceAPI(pd.url, API_KEY)

    async def main():
        b = BackendConnection(pd.url, API_KEY, "py-a")
        w = await b.connect()
        assert w["resumed"] is False
        s1 = b.open("alice", meta={"name": "Alice"}, device="web")
        b.open("bob", status="idle")
        await b.flush()
        assert b.stats["ops_acked"] == 2
        users = await asyncio.to_thread(api.get_users, ["alice", "bob"])
        assert [(u["status"], u["sessions"]) for u in users] == [("online", 1), ("idle", 1)]
        b.set_status(s1, "idle")
        await b.flush()
        assert (await asyncio.to_thread(api.get_user, "alice"))["status"] == "idle"
        rejected = []
        b.on_rejected = lambda op, code, msg: rejected.append(code)
        b.open("")
        await b.flush()
        assert rejected == ["bad_user_id"] and len(b.sessions) == 2
        await b.end(bye=True)
        users = await asyncio.to_thread(api.get_users, ["alice", "bob"])
        assert [u["status"] for u in users] == ["offline", "offline"]
    asyncio.run(asyncio.wait_for(main(), 20))


def test_reassert_after_drop_and_restart_emits_nothing(pd):
    api = PresenceAPI(pd.url, API_KEY)
    ids = [f"p-{i}" for i in range(100)]
    stream = api.events(retry_s=0.05)
    items = []
    threading.Thread(target=lambda: items.extend(stream), daemon=True).start()
    wait_for(lambda: stream.connects == 1, what="stream")

    async def first():
        b = BackendConnection(pd.url, API_KEY, "py-b", retry_s=0.02)
        await b.connect()
        for i, sid in enumerate(ids):
            b.open(f"u{i % 20}", session=sid)
        await b.flush()
        return b
    async def run():
        b = await first()
        # every event of the opens read first (100 sessions, 20 users), then count from there
        while sum(i.type in ("session.connected", "user.online") for i in items) < 120:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        n = len(items)
        await b.reconnect()                  # the network drops
        while b.connects < 2:
            await asyncio.sleep(0.01)
        await b.flush()
        await b.end()                        # a plain close: kept for the resume window
        b2 = BackendConnection(pd.url, API_KEY, "py-b")    # a restarted process
        for i, sid in enumerate(ids):
            b2.open(f"u{i % 20}", session=sid)
        w = await b2.connect()
        await b2.flush()
        await asyncio.sleep(0.2)
        assert w["resumed"] is True
        assert items[n:] == [], [(i.type, i.data.get("session_id")) for i in items[n:]]
        await b2.end(bye=True)
    asyncio.run(asyncio.wait_for(run(), 30))
    stream.close()


def test_kick_comes_back_as_ended_threaded(pd):
    api = PresenceAPI(pd.url, API_KEY)
    b = BackendConnection(pd.url, API_KEY, "py-c").start_thread()
    ended = []
    b.on_ended = lambda sid, user, reason: ended.append((sid, user, reason))
    sid = b.open("carol")          # from this (non-loop) thread
    b.flush_sync()
    api.kick(sid)
    wait_for(lambda: ended, what="ended")
    assert ended == [(sid, "carol", "kicked")] and sid not in b.sessions
    b.end_sync(bye=True)


def test_removal_by_the_api_comes_back_as_left(pd):
    # DELETE /v1/channels/{name}/members/{user} of a session of ours: on_left,
    # the channel leaves the list, and no re-assert joins it again, also when
    # the removal came while the connection was down.
    api = PresenceAPI(pd.url, API_KEY)

    async def main():
        # retry_s: time enough to remove a member while the connection is down.
        b = BackendConnection(pd.url, API_KEY, "py-rm", retry_s=0.6, max_retry_s=0.6)
        await b.connect()
        get = lambda fn, *a: asyncio.to_thread(fn, *a)  # noqa: E731
        left = []
        b.on_left = lambda sid, user, channel, reason: left.append((sid, user, channel, reason))
        try:
            s = b.open("rmuser")
            b.join(s, "room:rm", {"n": 1})
            b.join(s, "room:rm2")
            await b.flush()
            await get(api.remove_from_channel, "room:rm", "rmuser")
            for _ in range(60):
                if left:
                    break
                await asyncio.sleep(0.05)
            assert left == [(s, "rmuser", "room:rm", "kicked")]
            assert list(b.sessions[s]["channels"]) == ["room:rm2"]
            await b.reconnect()
            while b.connects < 2:
                await asyncio.sleep(0.02)
            await b.flush()
            assert (await get(api.channel, "room:rm"))["count"] == 0, "the re-assert joined it again"
            assert (await get(api.channel, "room:rm2"))["count"] == 1

            await b.reconnect()           # removed while the connection is down
            for _ in range(60):
                rows = [o for o in await get(api.origins) if o["origin"] == "py-rm"]
                if rows and rows[0]["state"] == "detached":
                    break
                await asyncio.sleep(0.05)
            await get(api.remove_from_channel, "room:rm2", "rmuser")
            while b.connects < 3:
                await asyncio.sleep(0.02)
            await b.flush()
            assert [x[2] for x in left] == ["room:rm", "room:rm2"]
            assert b.sessions[s]["channels"] == {}
            assert (await get(api.channel, "room:rm2"))["count"] == 0, "the re-assert after the outage joined it again"
            assert b.stats["op_errors"] == 0
        finally:
            await b.end(bye=True)
    asyncio.run(asyncio.wait_for(main(), 30))


def test_channels_through_connection_and_api(pd):
    api = PresenceAPI(pd.url, API_KEY)

    async def main():
        b = BackendConnection(pd.url, API_KEY, "py-ch", retry_s=0.02)
        await b.connect()
        try:
            ann, bob = b.open("ann"), b.open("bob")
            b.join(ann, "room:1", {"color": "red"})
            b.join(bob, "room:1")
            b.join(bob, "room:2", {"color": "blue"})
            await b.flush()
            get = lambda fn, *a: asyncio.to_thread(fn, *a)  # noqa: E731
            assert await get(api.channel, "room:1") == {"channel": "room:1", "count": 2}
            page = await get(api.channel_members, "room:1", 1)
            assert page["members"][0]["user_id"] == "ann" and page["members"][0]["data"] == {"color": "red"}
            assert [m["user_id"] for m in await get(lambda: list(api.all_channel_members("room:1", 1)))] == ["ann", "bob"]
            assert (await get(api.channels, "room:"))["channels"] == [{"channel": "room:1", "count": 2, "shown_count": 2}, {"channel": "room:2", "count": 1, "shown_count": 1}]
            assert sorted(c["channel"] for c in await get(api.user_channels, "bob")) == ["room:1", "room:2"]
            await b.reconnect()                      # sync, then the joins again
            while b.connects < 2:
                await asyncio.sleep(0.01)
            await b.flush()
            assert (await get(api.channel, "room:1"))["count"] == 2
            await get(api.remove_from_channel, "room:2", "bob")
            with pytest.raises(PresenceError) as e:
                await get(api.remove_from_channel, "room:2", "bob")
            assert e.value.code == "not_member"
        finally:
            await b.end(bye=True)
        assert (await asyncio.to_thread(api.channel, "room:1"))["count"] == 0
    asyncio.run(asyncio.wait_for(main(), 20))


def test_http_sessions_with_a_ttl(pd):
    api = PresenceAPI(pd.url, API_KEY)
    assert api.put_session("pfn-1", "fay", 1000)["created"] is True
    assert api.put_session("pfn-1", "fay", 1000, status="idle")["created"] is False
    assert api.get_user("fay")["status"] == "idle"
    # its device kind, which PUT /v1/sessions takes (the SDK sent none: every
    # serverless session was "web")
    assert api.put_session("pfn-3", "fay", 1000, device="mobile")["created"] is True
    assert {s["session_id"]: s["device"] for s in api.sessions("fay")} == {"pfn-1": "web", "pfn-3": "mobile"}
    assert api.get_user("fay")["devices"]["mobile"]["sessions"] == 1
    assert any(o["origin"] == "http" for o in api.origins())
    with pytest.raises(PresenceError) as e:
        api.put_session("pfn-2", "fay", 10)
    assert e.value.code == "bad_ttl"
    wait_for(lambda: api.get_user("fay")["status"] == "offline", timeout=5, what="the TTL to lapse")


def test_a_connect_given_up_does_not_connect_later():
    # presenced not up yet: start_thread's timeout and asyncio.wait_for give up
    # on connect(); nothing of either may connect once presenced comes up (a
    # connection left retrying would hold the origin beside the caller's next
    # attempt, each taking it over from the other).
    late = Presenced()
    late.port = free_port()
    b = BackendConnection(late.url, API_KEY, "py-late-thread", retry_s=0.05, max_retry_s=0.1)
    with pytest.raises(TimeoutError):
        b.start_thread(timeout=0.5)

    async def main():
        c = BackendConnection(late.url, API_KEY, "py-late-async", retry_s=0.05, max_retry_s=0.1)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(c.connect(), 0.5)
        await asyncio.to_thread(late.start)
        await asyncio.sleep(1.0)                     # ten retry periods
        return await asyncio.to_thread(PresenceAPI(late.url, API_KEY).origins)
    try:
        assert asyncio.run(asyncio.wait_for(main(), 20)) == []
        assert not [t.name for t in threading.enumerate() if t.name.startswith("presenced-backend-py-late")]
    finally:
        late.stop()


def test_a_status_presenced_refuses_is_refused_at_the_call(pd):
    # "away" is an availability, not a session status: refused at once, and
    # the session is left as it was, also through the next reconnect's re-assert.
    api = PresenceAPI(pd.url, API_KEY)

    async def main():
        b = BackendConnection(pd.url, API_KEY, "py-st", retry_s=0.02)
        await b.connect()
        try:
            sid = b.open("gus")
            await b.flush()
            with pytest.raises(ValueError):
                b.set_status(sid, "away")
            with pytest.raises(ValueError):
                b.open("hal", status="busy")
            assert b.sessions[sid]["status"] == "online" and len(b.sessions) == 1
            await b.reconnect()
            while b.connects < 2:
                await asyncio.sleep(0.01)
            await b.flush()
            user = await asyncio.to_thread(api.get_user, "gus")
            assert (user["status"], user["sessions"]) == ("online", 1)
        finally:
            await b.end(bye=True)
    asyncio.run(asyncio.wait_for(main(), 20))


def test_an_api_key_read_from_a_file_connects(pd):
    # The file's newline went into the upgrade request: presenced answered 400
    # and the connection gave up as refused.
    async def main():
        b = BackendConnection(pd.url, API_KEY + "\n", "py-key")
        assert (await b.connect())["type"] == "welcome"
        await b.end()
    asyncio.run(asyncio.wait_for(main(), 10))
    with pytest.raises(ValueError) as e:
        BackendConnection(pd.url, "sdk-python\r\nX-Secret-Part: hunter2-0123456789", "py-key")
    assert "hunter2" not in str(e.value)


def test_a_rate_limited_reassert_is_sent_again():
    # presenced restarted: the re-assert opens the backend's 150 sessions in
    # sync frames of 50 under a limit of 100 ops a second; the frame refused
    # with rate_limited is sent again later, as a batch is (it was dropped:
    # 50 users stayed offline though the backend held their sessions).
    rl = Presenced("--backend-ops-per-sec", "100").start()
    api = PresenceAPI(rl.url, API_KEY)

    def held():
        return sum(o["sessions"] for o in api.origins() if o["origin"] == "py-rl")

    async def main():
        b = BackendConnection(rl.url, API_KEY, "py-rl", retry_s=0.05, max_retry_s=0.2, max_ops=50)
        await b.connect()
        for i in range(150):
            b.open(f"rl{i}")
        await b.flush()
        while await asyncio.to_thread(held) < 150:   # the opens were rate limited too
            await asyncio.sleep(0.1)
        await asyncio.to_thread(rl.stop)
        await asyncio.to_thread(rl.start)
        while b.connects < 2:
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 5
        while await asyncio.to_thread(held) < 150 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(held) == 150 == len(b.sessions)
        await b.end(bye=True)
    try:
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        rl.stop()


def test_on_connect_hears_every_welcome(pd):
    # The first welcome and a reconnect's, as the Node SDK's 'ready' event:
    # a Python backend could not tell when an outage ended.
    async def main():
        b = BackendConnection(pd.url, API_KEY, "py-oc", retry_s=0.02)
        welcomes = []
        b.on_connect = welcomes.append
        await b.connect()
        b.open("ocuser")
        await b.flush()
        await b.reconnect()
        for _ in range(100):
            if len(welcomes) == 2:
                break
            await asyncio.sleep(0.05)
        try:
            assert [(w["origin"], w["resumed"], w["sessions"]) for w in welcomes] == \
                [("py-oc", False, 0), ("py-oc", True, 1)], welcomes
        finally:
            await b.end(bye=True)
    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_refused_frame_is_a_presence_error_with_its_code():
    # A frame presenced refuses (protocol.md 5.2's error frame) reaches
    # on_error as a PresenceError with the frame's code, as the Node SDK's
    # 'error' has .code and the Go SDK's OnError an *Error: it was a
    # RuntimeError whose code was only in its text. Here rate_limited: 150
    # opens in frames of 50 under 100 ops a second.
    from presenced import codes
    rl = Presenced("--backend-ops-per-sec", "100").start()

    async def main():
        b = BackendConnection(rl.url, API_KEY, "py-rf", max_ops=50)
        errors = []
        b.on_error = errors.append
        await b.connect()
        for i in range(150):
            b.open(f"rf{i}")
        await b.flush()
        try:
            assert errors, "no on_error for the rate limited frame"
            e = errors[0]
            assert isinstance(e, PresenceError), repr(e)
            assert (e.code, e.status, e.retryable) == (codes.RATE_LIMITED, 0, True), repr(e)
            assert "frame refused" in str(e), str(e)
        finally:
            await b.end(bye=True)
    try:
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        rl.stop()
    # The frame codes no retry heals are not retryable (status 0, as for no answer).
    for code in (codes.BAD_JSON, codes.UNKNOWN_TYPE, codes.BAD_FIELD, codes.TOO_MANY_OPS):
        assert not PresenceError(0, code, "x").retryable, code


def test_a_redirect_is_not_followed_with_the_api_key():
    # An upgrade answered with a redirect to another host: the Node SDK's ws
    # follows none; websockets went there with the Authorization header.
    import socket
    seen = []

    def listen(host, answer):
        srv = socket.socket()
        srv.bind((host, 0))
        srv.listen(8)

        def run():
            while True:
                c, _ = srv.accept()
                with c:
                    seen.append((host, API_KEY.encode() in c.recv(65536)))
                    c.sendall(answer)
        threading.Thread(target=run, daemon=True).start()
        return srv.getsockname()[1]
    other = listen("127.0.0.2", b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    first = listen("127.0.0.1", f"HTTP/1.1 302 Found\r\nLocation: ws://127.0.0.2:{other}/v1/backend?origin=py-r\r\n"
                                "Content-Length: 0\r\n\r\n".encode())

    async def main():
        b = BackendConnection(f"http://127.0.0.1:{first}", API_KEY, "py-r", retry_s=0.05, max_retry_s=0.1)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(b.connect(), 0.5)
    asyncio.run(main())
    assert seen and all(s == ("127.0.0.1", True) for s in seen), seen


def test_end_while_presenced_is_down_returns_at_once():
    # The connection waits retry_s and more between attempts; end() (an app
    # shutting down) ended only after that wait.
    gone = Presenced().start()

    async def main():
        b = BackendConnection(gone.url, API_KEY, "py-end", retry_s=5, max_retry_s=10)
        await b.connect()
        await asyncio.to_thread(gone.stop)
        while b._ws is not None:
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        await b.end()
        return time.monotonic() - t0
    try:
        assert asyncio.run(asyncio.wait_for(main(), 20)) < 1
    finally:
        gone.stop()


def test_a_connection_taken_over_stops(pd):
    # A second process with the same origin takes it over (close 4009); the
    # first reconnected and took it back, ~10 times a second each, every sync
    # ending the other's sessions. It stops now, as the Node and Go SDKs' do.
    api = PresenceAPI(pd.url, API_KEY)

    async def main():
        first = BackendConnection(pd.url, API_KEY, "py-same", retry_s=0.05, max_retry_s=0.2)
        second = BackendConnection(pd.url, API_KEY, "py-same", retry_s=0.05, max_retry_s=0.2)
        errors = []
        first.on_error = errors.append
        await first.connect()
        first.open("ole")
        await first.flush()
        await second.connect()
        second.open("pia")
        await second.flush()
        await asyncio.sleep(1.0)
        assert (first.connects, second.connects) == (1, 1)
        # The same error as the Node and Go SDKs give: a PresenceError with the
        # code, not retryable (it was a RuntimeError "backend frame refused:
        # origin_taken_over: ...", with no code to match on).
        assert [(type(e), e.code, e.status, e.retryable) for e in errors] == \
            [(PresenceError, "origin_taken_over", 0, False)], errors
        users = await asyncio.to_thread(api.get_users, ["ole", "pia"])
        assert [(u["status"], u["version"]) for u in users] == [("offline", 2), ("online", 1)]
        first.open("quinn")                     # the local list only: no error
        await first.end()
        await second.end(bye=True)
    asyncio.run(asyncio.wait_for(main(), 20))


def test_readme_restart_takes_the_sessions_back(pd):
    # The README's restart snippet, as written: a process that restarts with
    # the same origin and opens the sessions it still serves before connect()
    # takes them back with no event; the README said only that "a restarted
    # process takes them back", and one that connected first and opened them
    # after ended them all (an empty re-assert), then opened them anew.
    import pathlib
    import re
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    [snippet] = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "session=sid" in b]
    api = PresenceAPI(pd.url, API_KEY)
    held = [(f"rs-{i}", f"ru{i}", {"room:rs": {"x": 1}} if i == 0 else {}) for i in range(3)]

    async def before_restart():
        b = BackendConnection(pd.url, API_KEY, "chat-1")
        await b.connect()
        for sid, user, _ in held:
            b.open(user, session=sid)
        b.join(held[0][0], "room:rs", {"x": 1})
        await b.flush()
        await b.end()                        # the process stops; presenced keeps its sessions
    asyncio.run(asyncio.wait_for(before_restart(), 10))
    stream = api.events(retry_s=0.05)
    items = []
    threading.Thread(target=lambda: items.extend(stream), daemon=True).start()
    wait_for(lambda: stream.connects == 1, what="stream")

    async def restarted():
        scope = {"BackendConnection": BackendConnection, "url": pd.url, "api_key": API_KEY, "held": held}
        exec("async def _main():\n" + "".join("    " + line + "\n" for line in snippet.splitlines()) +
             "    return backend\n", scope)
        backend = await scope["_main"]()
        await backend.flush()
        await asyncio.sleep(0.3)
        assert backend.welcome["resumed"] is True
        assert items == [], [(i.type, i.data.get("session_id")) for i in items]
        assert [u["sessions"] for u in api.get_users([u for _, u, _ in held])] == [1, 1, 1]
        assert api.channel("room:rs")["count"] == 1      # its channels stay with it
        # and the SDK knows them: a leave after the restart is sent (without the
        # join again it returned False and the member stayed)
        assert backend.leave(held[0][0], "room:rs") is True
        await backend.flush()
        assert api.channel("room:rs")["count"] == 0
        await backend.end(bye=True)
    try:
        asyncio.run(asyncio.wait_for(restarted(), 10))
    finally:
        stream.close()


def test_a_refused_connection_is_a_presence_error(pd):
    # A wrong API key: connect() raised a bare ConnectionRefusedError ("presenced
    # refused the backend connection: 401"), with no code to match on, where
    # the Node and Go SDKs give the daemon's code. Now a PresenceError
    # (unauthorized, 401, not retryable) that is still a ConnectionRefusedError.
    b = BackendConnection(pd.url, "a-wrong-key-0123456789-0123456789", "py-refused")
    with pytest.raises(PresenceError) as e:
        asyncio.run(asyncio.wait_for(b.connect(), 10))
    assert (e.value.status, e.value.code, e.value.retryable) == (401, "unauthorized", False)
    assert isinstance(e.value, ConnectionRefusedError)
    # The daemon's message, as its HTTP API gives it (and the Node and Go
    # SDKs), with any websockets: before 14 it keeps no body, and the message
    # was "presenced refused the backend connection: 401".
    with pytest.raises(PresenceError) as api_e:
        PresenceAPI(pd.url, "a-wrong-key-0123456789-0123456789").origins()
    assert e.value.message == api_e.value.message


def test_a_bad_origin_is_refused_when_the_connection_is_made():
    # presenced refuses it (400 bad_origin) at connect(); before websockets 14
    # kept the refusal's body (now asked for again) that said only
    # "bad_request: ... 400", and None raised "quote_from_bytes() expected
    # bytes". A ValueError naming the rule when the connection is made.
    for bad in ["", "x" * 129, "a\nb", None, 7]:
        with pytest.raises(ValueError, match="origin must be 1..128 bytes"):
            BackendConnection("http://127.0.0.1:7070", API_KEY, bad)
    BackendConnection("http://127.0.0.1:7070", API_KEY, "é" * 64)      # 128 bytes


def test_a_reserved_origin_is_refused_not_retried(pd):
    # "http" is the origin of PUT /v1/sessions: presenced answers the upgrade
    # 409 bad_origin, which connect() retried for ever (it never returned).
    b = BackendConnection(pd.url, API_KEY, "http")
    with pytest.raises(PresenceError) as e:
        asyncio.run(asyncio.wait_for(b.connect(), 5))
    assert (e.value.status, e.value.code) == (409, "bad_origin")
    assert "reserved" in e.value.message, e.value.message      # the daemon's, whatever websockets keeps


def test_without_websockets_connect_names_the_package_to_install(monkeypatch):
    # pip install sdk/python installs no websockets (only the "backend"
    # extra does): connect() said "No module named 'websockets'" and no more.
    import sys
    monkeypatch.setitem(sys.modules, "websockets", None)     # as if not installed
    b = BackendConnection("http://127.0.0.1:1", API_KEY, "py-nows")
    with pytest.raises(ModuleNotFoundError, match=r"presenced\[backend\]"):
        asyncio.run(asyncio.wait_for(b.connect(), 5))


def test_flush_before_connect_returns(pd):
    # The README's restart: sessions opened before connect(). A flush() then
    # raised "TypeError: 'NoneType' object does not support the asynchronous
    # context manager protocol" (flush_sync() an AttributeError), where the
    # Node and Go SDKs' flush returns: nothing was sent yet.
    async def main():
        b = BackendConnection(pd.url, API_KEY, "py-preflush")
        b.open("pre", session="pre-1")
        await b.flush()
        b.flush_sync()
        await b.connect()
        await b.flush()
        assert PresenceAPI(pd.url, API_KEY).get_user("pre")["status"] == "online"
        await b.end(bye=True)
    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_second_connect_waits_for_the_same_connection(pd):
    # connect() twice (two start-up hooks) opened a second connection of the
    # same origin, which took the first over; the first's stop then left
    # neither sending (open() after it reached no one) and on_error said
    # origin_taken_over. As the Node SDK's: the second call waits for the
    # same connection; after end() or a takeover, connect() says why.
    api = PresenceAPI(pd.url, API_KEY)

    async def main():
        b = BackendConnection(pd.url, API_KEY, "py-connect2")
        errors = []
        b.on_error = errors.append
        w1, w2 = await asyncio.gather(b.connect(), b.connect())
        w3 = await b.connect()
        assert w1 is w2 is w3 and b.connects == 1
        await asyncio.sleep(0.3)
        b.open("twice", session="twice-1")
        await b.flush()
        assert (await asyncio.to_thread(api.get_user, "twice"))["status"] == "online"
        assert errors == [] and b.connects == 1, errors
        await b.end(bye=True)
        with pytest.raises(RuntimeError, match="ended"):
            await b.connect()

        first = BackendConnection(pd.url, API_KEY, "py-connect3")
        told = []
        first.on_error = told.append
        await first.connect()
        second = BackendConnection(pd.url, API_KEY, "py-connect3")
        await second.connect()
        await wait_for_async(lambda: told)
        with pytest.raises(PresenceError) as e:
            await first.connect()
        assert e.value.code == "origin_taken_over"
        await second.end(bye=True)
    asyncio.run(asyncio.wait_for(main(), 15))


async def wait_for_async(fn, timeout=5.0):
    end = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.02)


def test_a_refusal_on_a_reconnect_is_told_to_on_error():
    # presenced restarted with another API key (a rotation done in the wrong
    # order): the reconnect is refused 401 and the connection stops. It
    # stopped without a word (an exception in a task no one awaited), where
    # the Node SDK emits 'fatal' and the Go SDK calls OnError.
    d = Presenced().start()
    try:
        async def main():
            b = BackendConnection(d.url, API_KEY, "py-rotated", retry_s=0.05, max_retry_s=0.1)
            told = []
            b.on_error = told.append
            await b.connect()
            d.stop()
            d.args = ["--api-key", "a-rotated-key-0123456789-0123456789"]
            d.start()
            await wait_for_async(lambda: told, timeout=10)
            assert [(type(e), e.status, e.code) for e in told] == [(BackendRefused, 401, "unauthorized")], told
            with pytest.raises(PresenceError) as e:
                await b.connect()
            assert e.value is told[0]
            await b.end()
        asyncio.run(asyncio.wait_for(main(), 20))
    finally:
        d.stop()


def test_a_silent_presenced_is_noticed_by_the_heartbeat():
    # A presenced that stops answering without closing the connection (a
    # frozen host, SIGSTOP here; a NAT that forgot the path is the same):
    # websockets' own keepalive noticed it after up to 40 s (20 s between
    # pings, 20 s for the pong), past the lease, where the Node and Go SDKs
    # ping every heartbeat_ms of the welcome and drop it by the next one.
    import signal
    d = Presenced("--origin-lease-ms", "1500").start()       # heartbeat_ms 500
    try:
        async def main():
            b = BackendConnection(d.url, API_KEY, "py-silent", retry_s=0.05, max_retry_s=0.1)
            told = []
            b.on_error = told.append
            w = await b.connect()
            assert w["heartbeat_ms"] == 500
            b.open("quiet", session="quiet-1")
            await b.flush()
            await asyncio.sleep(1.5)                            # pongs come meanwhile
            assert told == []
            d.proc.send_signal(signal.SIGSTOP)
            try:
                await wait_for_async(lambda: told, timeout=5)
            finally:
                d.proc.send_signal(signal.SIGCONT)
            assert isinstance(told[0], PresenceError) and told[0].code == "network" and "ping" in str(told[0]), told
            await wait_for_async(lambda: b.connects == 2, timeout=10)
            await b.flush()
            assert (await asyncio.to_thread(PresenceAPI(d.url, API_KEY).get_user, "quiet"))["status"] == "online"
            await b.end(bye=True)
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        d.stop()


def test_connect_again_after_one_given_up_on():
    # asyncio.wait_for(backend.connect(), 5) timed out (presenced frozen, a
    # host not answering yet): the next connect() raised the CancelledError
    # of the attempt given up on, where Go's Connect after its ctx ended
    # tries again. It tries again now.
    import signal
    d = Presenced().start()
    try:
        async def main():
            b = BackendConnection(d.url, API_KEY, "py-again", retry_s=0.05, max_retry_s=0.1)
            d.proc.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(b.connect(), 0.5)
            finally:
                d.proc.send_signal(signal.SIGCONT)
            w = await asyncio.wait_for(b.connect(), 10)
            assert w["origin"] == "py-again" and b.connects == 1
            await b.end(bye=True)
        asyncio.run(asyncio.wait_for(main(), 20))
    finally:
        d.stop()
