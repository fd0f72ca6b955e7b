# SPDX-License-Identifier: MIT
"""Fixtures: a real presenced (PRESENCED, else build/presenced of the
repository) on a free loopback port, stopped by its pid; WebSocket users."""
import asyncio
import json
import os
import pathlib
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "sdk" / "python"))

from presenced import mint_token  # noqa: E402

PRESENCED = os.environ.get("PRESENCED") or str(ROOT / "build" / "presenced")
API_KEY = "sdk-python-test-key-0123456789-abcd"
JWT_SECRET = "sdk-python-jwt-secret-0123456789-ab"


_given = set()


def free_port() -> int:
    """A loopback port nothing listens on, in 14000-15999: below Linux's
    ephemeral range (a port bound to 0 and closed again is free for any
    outgoing connection, another suite's run beside this one, to take before
    presenced binds it) and apart from the other suites' ranges (the Node
    SDK 12000-13999, the Go SDK 16000-17999, the browser 18000-19999, the
    integration suites 23000-29999)."""
    rnd = random.SystemRandom()
    for _ in range(200):
        port = rnd.randrange(14000, 16000)
        if port in _given:  # a caller may take several before binding any
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError("free_port: no free port in 14000-15999")


def wait_for(fn, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception:  # noqa: BLE001 - retried until the deadline
            pass
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Presenced:
    def __init__(self, *args):
        self.args = list(args)
        self.port = None
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        if not os.access(PRESENCED, os.X_OK):
            raise RuntimeError(f"presenced not found at {PRESENCED} (set PRESENCED)")
        # A port taken between free_port() and presenced's bind: it exits at
        # once, and a port of its own choosing is tried again (a restart
        # keeps the port it was given).
        fixed = self.port is not None
        for attempt in range(3):
            if not fixed:
                self.port = free_port()
            try:
                return self._start_once()
            except RuntimeError as e:
                if fixed or attempt == 2 or "address already in use" not in str(e).lower():
                    raise

    def _start_once(self):
        self.proc = subprocess.Popen([PRESENCED, "--listen", f"127.0.0.1:{self.port}", "--api-key", API_KEY,
                                      "--jwt-secret", JWT_SECRET, "--log-level", "warn", "--offline-grace-ms", "0", *self.args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def healthy():
            if self.proc.poll() is not None:
                return "exited"
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                return r.status == 200 and "up"
        if wait_for(healthy, what="presenced /healthz") == "exited":
            raise RuntimeError("presenced exited: " + self.proc.stderr.read().decode())
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()


class User:
    """A client's WebSocket session (the websockets package, in its own thread)."""

    def __init__(self, pd, user_id, secret=JWT_SECRET, **claims):
        import websockets
        self.messages, self.close_code, self.session_id = [], None, None
        self._welcome = threading.Event()
        self._closed = threading.Event()
        self._loop = asyncio.new_event_loop()
        token = mint_token(secret, user_id, **claims)
        url = f"ws://127.0.0.1:{pd.port}/v1/ws?token={token}"
        self.error = None

        async def main():
            try:
                async with websockets.connect(url) as ws:
                    self._ws = ws
                    async for m in ws:
                        msg = json.loads(m)
                        self.messages.append(msg)
                        if msg["type"] == "welcome":
                            self.session_id = msg["session_id"]
                            self._welcome.set()
                    self.close_code = ws.close_code
            except websockets.exceptions.ConnectionClosed as e:
                self.close_code = e.code
            except Exception as e:  # noqa: BLE001 - a refused upgrade: kept for the test
                self.error = e
            finally:
                self._welcome.set()
                self._closed.set()
        self._thread = threading.Thread(target=lambda: self._loop.run_until_complete(main()), daemon=True)
        self._thread.start()
        self._welcome.wait(10)
        if self.error is not None:
            raise self.error

    def close(self):
        if not self._closed.is_set():
            asyncio.run_coroutine_threadsafe(self._ws.close(), self._loop)
        self._closed.wait(5)

    def wait_closed(self, timeout=5.0):
        assert self._closed.wait(timeout), "connection still open"
        return self.close_code


@pytest.fixture(scope="module")
def presenced():
    pd = Presenced("--log-capacity", "64").start()
    yield pd
    pd.stop()


@pytest.fixture(scope="module")
def pd():
    """A presenced of the module's own, for the backend connection's tests
    (test_backend, test_track): skipped where it has no GET /v1/backend."""
    from presenced import PresenceAPI, PresenceError
    d = Presenced().start()
    try:
        PresenceAPI(d.url, API_KEY).origins()
    except PresenceError as e:
        d.stop()
        pytest.skip(f"this presenced has no backend session connection (GET /v1/origins: {e.status})")
    yield d
    d.stop()


@pytest.fixture()
def api(presenced):
    from presenced import PresenceAPI
    return PresenceAPI(presenced.url, API_KEY)
