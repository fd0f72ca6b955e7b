# SPDX-License-Identifier: MIT
"""Tokens, the HTTP API client and the event stream against a real presenced."""
import threading
import time

import pytest

from presenced import PresenceAPI, PresenceError, mint_token
from conftest import API_KEY, JWT_SECRET, Presenced, User, free_port, wait_for


def test_tokens_carry_every_claim_the_daemon_reads(presenced, api):
    u = User(presenced, "zoë", watch=["bob"], meta={"device": "phone"}, ttl=60)
    [s] = api.sessions("zoë")
    assert s["session_id"] == u.session_id and s["meta"] == {"device": "phone"}
    u.close()
    import websockets
    for claims, code in [(dict(expires_at=1), "token_expired"), (dict(not_before=2**40), "token_not_yet_valid")]:
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            User(presenced, "bob", **claims)
        assert e.value.status_code == 401, code
    with pytest.raises(websockets.exceptions.InvalidStatusCode):
        User(presenced, "bob", secret="wrong-secret")
    with pytest.raises(ValueError):
        mint_token(JWT_SECRET, "")
    with pytest.raises(ValueError):
        mint_token(JWT_SECRET, "a", watch="bob")


def test_users_sessions_kick(presenced, api):
    a = User(presenced, "alice", meta={"device": "web"})
    b = User(presenced, "alice")
    u = api.get_user("alice")
    assert (u["status"], u["sessions"]) == ("online", 2)
    many = api.get_users(["alice", "nobody", "zoë,x"])
    assert [(x["user_id"], x["status"]) for x in many] == [("alice", "online"), ("nobody", "offline"), ("zoë,x", "offline")]
    assert sorted(s["session_id"] for s in api.sessions("alice")) == sorted([a.session_id, b.session_id])
    api.kick(a.session_id)
    assert a.wait_closed() == 4003
    b.close()
    wait_for(lambda: api.get_user("alice")["status"] == "offline", what="alice offline")


def test_errors_are_typed(presenced, api):
    with pytest.raises(PresenceError) as e:
        api.kick("no-such-session")
    assert (e.value.status, e.value.code) == (404, "no_session")
    with pytest.raises(PresenceError) as e:
        PresenceAPI(presenced.url, "wrong").get_user("a")
    assert (e.value.status, e.value.code) == (401, "unauthorized")
    with pytest.raises(PresenceError) as e:
        api.get_user("x" * 200)
    assert e.value.code == "bad_user_id"
    with pytest.raises(PresenceError) as e:
        # A port nothing listens on (not port 1: another suite's presenced
        # run as root was seen listening there, and answered)
        PresenceAPI(f"http://127.0.0.1:{free_port()}", API_KEY).health()
    assert e.value.code == "network" and e.value.retryable
    assert len(api.get_users([f"u{i}" for i in range(2500)])) == 2500


def read_until(it, pred, timeout=10.0, got=None):
    """Items of `it` up to the first that satisfies pred, read in a thread (bounded), into `got`."""
    got, done = ([] if got is None else got), threading.Event()

    def run():
        for item in it:
            got.append(item)
            if pred(item):
                break
        done.set()
    threading.Thread(target=run, daemon=True).start()
    assert done.wait(timeout), f"stream stalled after {[(i.type, i.data.get('user_id')) for i in got]}"
    return got


def test_event_stream_resumes_by_cursor(presenced, api):
    stream = api.events(retry_s=0.05)
    it = iter(stream)
    got = []
    t = threading.Thread(target=lambda: read_until(it, lambda i: i.type == "user.online", got=got))
    t.start()
    wait_for(lambda: stream.connects == 1, what="stream connected")
    c = User(presenced, "carol")
    t.join(10)
    assert [i.type for i in got] == ["session.connected", "user.online"]
    cursor = stream.cursor
    assert cursor == str(got[1].seq)
    stream.close()

    c.close()
    wait_for(lambda: api.get_user("carol")["status"] == "offline", what="carol offline")
    d = User(presenced, "dave")
    resumed = api.events(after=cursor)
    rest = read_until(iter(resumed), lambda i: i.type == "user.online" and i.data["user_id"] == "dave")
    assert [f"{i.type} {i.data['user_id']}" for i in rest] == [
        "session.disconnected carol", "user.offline carol", "session.connected dave", "user.online dave"]
    assert rest[0].seq == int(cursor) + 1
    resumed.close()
    d.close()


def test_filtered_stream_cursor_moves_past_skipped_events():
    # A filtered stream is sent an id-only block after events it skips: its
    # cursor moves past them, nothing is yielded, and a resume after more
    # skipped events than the log holds (16) gets no gap.
    pd = Presenced("--log-capacity", "16").start()
    held = []
    try:
        api = PresenceAPI(pd.url, API_KEY)
        stream = api.events(types=["user.offline"], retry_s=0.05)
        items = []
        threading.Thread(target=lambda: items.extend(stream), daemon=True).start()
        wait_for(lambda: stream.connects == 1, what="stream connected")
        User(pd, "skip-first").close()
        wait_for(lambda: items, what="skip-first offline")
        seen = items[0]
        assert (seen.type, seen.data["user_id"]) == ("user.offline", "skip-first")
        assert stream.cursor == str(seen.seq)
        # 40 events the filter skips: session.connected and user.online of each.
        held = [User(pd, f"skip{i}") for i in range(20)]
        newest = str(seen.seq + 40)
        wait_for(lambda: stream.cursor == newest, timeout=5,
                 what=f"the cursor moved over the skipped events to {newest}")
        stream.close()
        assert items == [seen], "nothing is yielded for the skipped events"

        resumed = api.events(types=["user.offline"], after=stream.cursor)
        got = []
        threading.Thread(target=lambda: got.extend(read_until(iter(resumed), lambda i: True)), daemon=True).start()
        wait_for(lambda: resumed.connects == 1, what="resumed stream connected")
        held.pop(0).close()
        wait_for(lambda: got, what="the next user.offline")
        resumed.close()
        assert [(i.type, i.data.get("user_id")) for i in got] == [("user.offline", "skip0")]
    finally:
        for u in held:
            u.close()
        pd.stop()


def test_gaps_are_surfaced():
    pd = Presenced("--log-capacity", "16").start()
    try:
        api = PresenceAPI(pd.url, API_KEY)
        for i in range(10):
            User(pd, f"filler{i}").close()
        wait_for(lambda: api.get_user("filler9")["status"] == "offline", what="fillers gone")
        old = api.events(after=0)
        [g] = read_until(iter(old), lambda i: True)
        assert g.gap and g.data["after"] == 0 and g.data["oldest"] > 1
        old.close()

        # a live stream across a restart of presenced: it reconnects by itself,
        # its cursor is beyond the new log: a gap, then the new events
        live = api.events(retry_s=0.05, max_retry_s=0.2)
        it = iter(live)
        got = []
        t = threading.Thread(target=lambda: read_until(
            it, lambda i: i.type == "user.online" and i.data.get("user_id") == "frank", timeout=30, got=got))
        t.start()
        wait_for(lambda: live.connects == 1, what="connected")
        User(pd, "erin").close()
        wait_for(lambda: any(i.data.get("user_id") == "erin" for i in got), what="erin seen")
        pd.stop()
        pd.start()
        wait_for(lambda: live.connects == 2, what="reconnected")
        f = User(pd, "frank")
        t.join(30)
        kinds = [i.type for i in got]
        assert "gap" in kinds, kinds
        assert kinds.index("gap") < max(n for n, i in enumerate(got) if i.data.get("user_id") == "frank")
        f.close()
        live.close()
    finally:
        pd.stop()


def serve_once(reply: bytes) -> int:
    """A loopback server that reads a request and answers `reply` raw, then
    closes: what a client sees of a presenced killed mid-answer or of
    something that is not presenced behind its URL."""
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def run():
        with srv:
            c, _ = srv.accept()
            with c:
                c.recv(65536)
                c.sendall(reply)
    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1]


@pytest.mark.parametrize("reply, status, code", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"user_id\":", 0, "network"),   # cut short
    (b"SSH-2.0-OpenSSH_9.2\r\n", 0, "network"),                                      # not HTTP
    (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 24\r\n\r\n{\"error\":\"Unauthorized\"}", 401, "http_401"),
])
def test_every_failure_is_a_presence_error(reply, status, code):
    api = PresenceAPI(f"http://127.0.0.1:{serve_once(reply)}", API_KEY, timeout=5)
    with pytest.raises(PresenceError) as e:
        api.get_user("alice")
    assert (e.value.status, e.value.code) == (status, code)
    assert e.value.retryable == (status == 0)


def test_event_stream_retries_a_proxy_error_page():
    # A load balancer in front of a restarting presenced answers 503 with a
    # body of its own: the stream waits and retries, as for a refused connection.
    reply = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 31\r\n\r\n{\"error\":\"no healthy upstream\"}"
    errors = []
    stream = PresenceAPI(f"http://127.0.0.1:{serve_once(reply)}", API_KEY).events(retry_s=0.05, on_error=errors.append)
    it = iter(stream)
    t = threading.Thread(target=lambda: errors.append(next(it, "ended")), daemon=True)
    t.start()
    wait_for(lambda: errors, what="the stream's first error")
    stream.close()
    t.join(5)
    assert "503" in str(errors[0]) and errors[-1] == "ended", errors


def test_get_users_of_one_string_is_a_type_error(api):
    # get_users("alice") answered five offline users "a", "l", "i", "c", "e"
    with pytest.raises(TypeError):
        api.get_users("alice")
    assert [u["user_id"] for u in api.get_users(("alice",))] == ["alice"]


def test_typed_answers_declare_every_field(presenced, api):
    # A type checker refuses s["device"] unless Session declares it (py.typed).
    import typing
    from presenced import Session, User as UserType
    u = User(presenced, "ivy", device="mobile")
    try:
        [s] = api.sessions("ivy")
        assert s["device"] == "mobile"
        assert set(s) <= set(typing.get_type_hints(Session)), set(s) - set(typing.get_type_hints(Session))
        assert set(api.get_user("ivy")) <= set(typing.get_type_hints(UserType))
    finally:
        u.close()


def test_an_api_key_read_from_a_file_works_and_is_never_shown(presenced, api):
    # open(path).read() keeps the file's newline: used as the Node SDK uses it
    # (fetch drops the whitespace), where http.client raised a ValueError that
    # printed the whole key and the event stream retried it forever.
    from_file = API_KEY + "\n"
    assert PresenceAPI(presenced.url, from_file).get_user("kim")["user_id"] == "kim"
    stream = PresenceAPI(presenced.url, from_file).events()
    t = threading.Thread(target=lambda: next(iter(stream), None), daemon=True)
    t.start()
    wait_for(lambda: stream.connects == 1, what="the stream connected")
    stream.close()
    t.join(5)
    broken = "sdk-python\r\nX-Secret-Part: hunter2-0123456789"
    with pytest.raises(ValueError) as e:
        PresenceAPI(presenced.url, broken)
    assert "hunter2" not in str(e.value)
    from presenced import EventStream
    with pytest.raises(ValueError) as e:
        EventStream(presenced.url, broken)
    assert "hunter2" not in str(e.value)


def test_a_redirect_to_another_origin_does_not_get_the_api_key():
    # A redirect (a proxy, a moved service) to another host gets the request
    # without the key, as with the Node and Go SDKs; one on the same origin keeps it.
    import socket
    seen = {}

    def listen(host, answer):
        srv = socket.socket()
        srv.bind((host, 0))
        srv.listen(8)

        def run():
            while True:
                c, _ = srv.accept()
                with c:
                    request = c.recv(65536)
                    seen.setdefault(host, []).append(API_KEY.encode() in request)
                    c.sendall(answer(request))
        threading.Thread(target=run, daemon=True).start()
        return srv.getsockname()[1]
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    other = listen("127.0.0.2", lambda r: ok)

    def first(request):
        if request.startswith(b"GET /moved/"):
            return ok
        to = f"http://127.0.0.2:{other}/v1/users/a" if b"/v1/users/a " in request else "/moved/b"
        return f"HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n".encode()
    api = PresenceAPI(f"http://127.0.0.1:{listen('127.0.0.1', first)}", API_KEY, timeout=5)
    api.get_user("a")
    assert seen == {"127.0.0.1": [True], "127.0.0.2": [False]}
    api.get_user("b")                       # to /moved/b on the same origin
    assert seen["127.0.0.1"] == [True, True, True]


def test_an_id_that_is_none_or_empty_is_a_type_error(api):
    # get_user("") asked GET /v1/users/ (404 not_found, while sessions("")
    # answered 400 bad_user_id) and get_user(None) raised "quote_from_bytes()
    # expected bytes"; both are the caller's bug, named as such.
    for call in (lambda: api.get_user(""), lambda: api.get_user(None), lambda: api.kick(""),
                 lambda: api.sessions(None), lambda: api.channel("")):
        with pytest.raises(TypeError, match="non-empty str"):
            call()


def test_event_stream_read_timeout_must_be_positive(api):
    # read_timeout_s=0 connected never (a non-blocking socket), retrying for ever
    for bad in (0, -1, None, "60"):
        with pytest.raises(TypeError, match="read_timeout_s"):
            api.events(read_timeout_s=bad)


def test_a_url_without_its_scheme_is_refused_when_the_client_is_made():
    # "127.0.0.1:7070" (no http://): each API call failed as a retryable
    # 'network' error, the event stream with "expected string or bytes-like
    # object, got 'NoneType'", and a BackendConnection retried it for ever
    # (connect() never returned). Now a ValueError at once, as the Node SDK's
    # TypeError and the Go SDK's CodeBadURL.
    from presenced import BackendConnection
    from presenced.events import EventStream
    for bad in ["127.0.0.1:7070", "localhost:7070", "ftp://127.0.0.1:7070", "http://", "http://h:port", ""]:
        for make in (lambda: PresenceAPI(bad, API_KEY), lambda: EventStream(bad, API_KEY),
                     lambda: BackendConnection(bad, API_KEY, "o")):
            with pytest.raises(ValueError, match="url must be an absolute"):
                make()
    for good in ["http://127.0.0.1:7070", "https://presence.example.com/", "http://[::1]:7070"]:
        PresenceAPI(good, API_KEY).events()
        BackendConnection(good, API_KEY, "o")
    BackendConnection("ws://127.0.0.1:7070", API_KEY, "o")


def test_event_stream_tells_on_error_the_daemons_refusal_as_a_presence_error():
    # presenced at --max-connections answers 503 too_many_connections: the
    # stream retries, and on_error got an OSError holding the text, where the
    # Node and Go SDKs give the PresenceError (code, status, retryable).
    import socket
    pd = Presenced("--max-connections", "1").start()
    held = socket.create_connection(("127.0.0.1", pd.port))
    try:
        time.sleep(0.2)
        errors = []
        stream = PresenceAPI(pd.url, API_KEY).events(retry_s=0.05, max_retry_s=0.1, on_error=errors.append)
        it = iter(stream)
        threading.Thread(target=lambda: next(it, None), daemon=True).start()
        wait_for(lambda: errors, what="the stream's first error")
        e = errors[0]
        assert isinstance(e, PresenceError), repr(e)
        assert (e.status, e.code, e.retryable) == (503, "too_many_connections", True)
        held.close()
        wait_for(lambda: stream.connects == 1, what="the stream connected once the connection was free")
        stream.close()
    finally:
        held.close()
        pd.stop()


def test_a_ttl_under_a_second_is_refused_when_minted():
    # ttl=0 (meant as "no expiry", or an unset setting) or a negative one
    # minted a token dead on arrival: presenced's leeway let it connect for
    # 5 s, then closed it 4001. Refused, as by the Node and Go SDKs; a token
    # expired on purpose is expires_at's.
    for ttl in (0, -60, 0.5, float("nan"), "3600"):
        with pytest.raises(ValueError, match="ttl must be a number of seconds >= 1"):
            mint_token(JWT_SECRET, "tess", ttl=ttl)
    mint_token(JWT_SECRET, "tess", ttl=1)
    mint_token(JWT_SECRET, "tess", ttl=0, expires_at=1)      # expired on purpose


def test_events_declares_the_options_of_event_stream():
    # api.events(**kw: Any) hid every option from type checkers and editors
    # (help(api.events) said "**kw"); its parameters, typed, are
    # EventStream's own but the URL and key, with the same defaults.
    import inspect
    import typing
    from presenced import EventStream
    mine = inspect.signature(PresenceAPI.events).parameters
    theirs = inspect.signature(EventStream.__init__).parameters
    assert sorted(n for n in mine if n != "self") == sorted(n for n in theirs if n not in ("self", "url", "api_key"))
    for name, p in mine.items():
        if name != "self":
            assert p.default == theirs[name].default and p.annotation == theirs[name].annotation, name
    assert typing.get_type_hints(PresenceAPI.events)["return"] is EventStream
