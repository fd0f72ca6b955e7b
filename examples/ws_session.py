#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Hold one presence session on a presenced, from a terminal.

    examples/ws_session.py --url ws://127.0.0.1:7070 --secret SECRET [--watch bob]... alice
    examples/ws_session.py --token TOKEN [--watch bob]...

Signs a token for the user (HS256 with presenced's --jwt-secret, as an
application backend would), or takes one already signed (--token: a demo
daemon's POST /v1/demo/token, or your backend's), opens the WebSocket,
subscribes to the users given with --watch and prints every message the
server sends (the welcome, presence snapshots and changes) until Ctrl-C or
the server closes. Type "idle" or "online" and Enter to change this
session's status.

Needs Debian's python3-websockets (scripts/deps.sh installs it).
"""
import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import sys
import time

import websockets


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(user, secret, audience=None, watch=(), ttl_s=3600):
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    c = {"sub": user, "exp": int(time.time()) + ttl_s}
    if audience:
        c["aud"] = audience
    if watch:
        c["watch"] = list(watch)  # the backend says whom a session may watch
    claims = b64url(json.dumps(c).encode())
    sig = hmac.new(secret.encode(), f"{head}.{claims}".encode(), hashlib.sha256).digest()
    return f"{head}.{claims}.{b64url(sig)}"


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="ws://127.0.0.1:7070", help="presenced base URL (ws://)")
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--secret", help="presenced's --jwt-secret: the token is signed here")
    how.add_argument("--token", help="a token already signed (its sub is the user)")
    ap.add_argument("--audience", help="presenced's --jwt-audience, if it has one")
    ap.add_argument("--watch", action="append", default=[], metavar="USER",
                    help="a user to subscribe to (repeat for more)")
    ap.add_argument("user", nargs="?", help="the user (with --secret)")
    a = ap.parse_args()
    if a.secret and not a.user:
        ap.error("a user is needed with --secret")
    if a.token and a.user:
        ap.error("--token names its user itself (its sub)")
    tok = a.token or token(a.user, a.secret, a.audience, a.watch)
    url = f"{a.url.rstrip('/')}/v1/ws?token={tok}"
    try:
        ws = await websockets.connect(url, close_timeout=2)
    except (OSError, websockets.exceptions.InvalidStatusCode) as e:
        print(f"ws_session: cannot connect to {a.url}: {e}", file=sys.stderr)
        return 3
    if a.watch:
        await ws.send(json.dumps({"type": "subscribe", "users": a.watch}))
    loop = asyncio.get_running_loop()

    pending = [b""]  # a line typed in part

    def typed(fd):
        # Status changes typed on stdin, read when the loop sees a line: a
        # thread blocked in readline() instead would keep Ctrl-C from ending
        # the program (asyncio.run waits for its executor's threads).
        data = os.read(fd, 1024)
        if not data:  # Ctrl-D: nothing more to read, the session stays
            loop.remove_reader(fd)
            return
        *lines, pending[0] = (pending[0] + data).split(b"\n")
        for line in lines:
            st = line.decode(errors="replace").strip()
            if st in ("idle", "online"):
                asyncio.ensure_future(ws.send(json.dumps({"type": "status", "status": st})))

    # Only a foreground job reads the terminal: a background one (`&`) that
    # tried would be stopped by the shell (SIGTTIN), session and all.
    fg = False
    try:
        fg = sys.stdin.isatty() and os.getpgrp() == os.tcgetpgrp(sys.stdin.fileno())
    except OSError:
        pass
    if fg:
        loop.add_reader(sys.stdin.fileno(), typed, sys.stdin.fileno())
    # Ctrl-C closes the WebSocket (1000): presenced ends the session at once
    # and the program ends with the server's answer. asyncio.run's own Ctrl-C
    # cancelled the tasks of the websockets library, which then waited on
    # the open socket: the program did not end.
    loop.add_signal_handler(signal.SIGINT, lambda: asyncio.ensure_future(ws.close()))
    try:
        async for msg in ws:
            print(msg, flush=True)
    except websockets.exceptions.ConnectionClosed:
        pass
    finally:
        if fg:
            loop.remove_reader(sys.stdin.fileno())
    print(f"closed: code {ws.close_code} {ws.close_reason or ''}".rstrip(), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(0)
