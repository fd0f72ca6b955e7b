# SPDX-License-Identifier: MIT
"""examples/quickstart.py against a real presenced; the test plays the browser
with the token the example prints."""
import asyncio
import os
import pathlib
import subprocess
import sys
import threading

from conftest import API_KEY, JWT_SECRET

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def test_quickstart(presenced):
    import websockets
    env = {**os.environ, "PRESENCED_URL": presenced.url, "PRESENCED_API_KEY": API_KEY, "PRESENCED_JWT_SECRET": JWT_SECRET}
    p = subprocess.Popen([sys.executable, str(EXAMPLE)], env=env, stdout=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    assert first.startswith("connect to ws://"), first
    ws_url = first.split(" ", 2)[2].strip()
    closed = []

    async def browser():
        async with websockets.connect(ws_url) as ws:
            try:
                async for _ in ws:
                    pass
            except websockets.exceptions.ConnectionClosed:
                pass
            closed.append(ws.close_code)
    t = threading.Thread(target=lambda: asyncio.run(browser()), daemon=True)
    t.start()
    out, _ = p.communicate(timeout=20)
    t.join(5)
    lines = [line.split(" ", 2)[2] if line.startswith("event ") else line for line in out.strip().split("\n")]
    assert lines == [
        "session.connected alice (connect)",
        "user.online alice (connect)",
        "alice is online with 1 session(s), device web",
        "session.disconnected alice (kicked)",
        "user.offline alice (kicked)",
        "kick again: 404 no_session",
    ]
    assert p.returncode == 0
    assert closed == [4003]
