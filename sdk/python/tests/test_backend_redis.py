# SPDX-License-Identifier: MIT
"""The backend connection against two presenced instances sharing one real
redis-server (a private one on a unix socket, stopped by its pid): what only
a Redis store answers (protocol.md 5.2, 5.4). Skipped without redis-server."""
import asyncio
import shutil
import socket
import subprocess
import tempfile

import pytest

from presenced import BackendConnection, LeftNotice, PresenceAPI
from conftest import API_KEY, Presenced, wait_for


def _ping(sock):
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(1)
        c.connect(sock)
        c.sendall(b"PING\r\n")
        return c.recv(16).startswith(b"+PONG")


@pytest.fixture(scope="module")
def two():
    """Two presenced on one redis-server; a session may be in 2 channels."""
    exe = shutil.which("redis-server")
    if not exe:
        pytest.skip("no redis-server")
    d = tempfile.mkdtemp(prefix="sdk-python-redis-")
    sock = f"{d}/redis.sock"
    redis = subprocess.Popen([exe, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no",
                              "--dir", d], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    pds = []
    try:
        wait_for(lambda: _ping(sock), 5, "redis-server PING")
        for _ in range(2):
            pds.append(Presenced("--store", f"unix:{sock}", "--max-channels-per-session", "2",
                                 "--redis-timeout-ms", "5000").start())
        yield pds
    finally:
        for p in pds:
            p.stop()
        redis.kill()
        redis.wait()
        shutil.rmtree(d, ignore_errors=True)


def test_a_join_the_store_refuses_is_told_with_its_code(two):
    # The origin moves from A to B, whose record of the session it takes
    # over has no channel: B acknowledges the join of a third channel, and
    # the store, which counts the first two, refuses it (too_many_channels).
    # on_left_notice gets the code and message; on_left had the reason only.
    A, B = two
    api_b = PresenceAPI(B.url, API_KEY)

    async def main():
        a = BackendConnection(A.url, API_KEY, "py-jr")
        await a.connect()
        s = a.open("jr-u", session="py-jr-s1")
        a.join(s, "jr-a")
        a.join(s, "jr-b")
        await a.flush()
        await asyncio.to_thread(wait_for, lambda: api_b.channel("jr-b")["count"] == 1, 5, "B sees jr-b")
        await a.end()

        b = BackendConnection(B.url, API_KEY, "py-jr")
        notices = []
        b.on_left_notice = notices.append
        b.open("jr-u", session=s)
        b.join(s, "jr-c", {"x": 1})
        await b.connect()
        for _ in range(100):
            if notices:
                break
            await asyncio.sleep(0.05)
        try:
            assert len(notices) == 1, notices
            n = notices[0]
            assert isinstance(n, LeftNotice)
            assert n._replace(message="") == LeftNotice(s, "jr-u", "jr-c", "refused", "too_many_channels", "")
            assert n.message, n
            assert b.sessions[s]["channels"] == {}
            assert (await asyncio.to_thread(api_b.channel, "jr-c"))["count"] == 0
        finally:
            await b.end(bye=True)
    asyncio.run(asyncio.wait_for(main(), 30))
