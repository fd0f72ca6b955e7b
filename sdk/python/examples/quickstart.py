#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A backend's first hour with presenced (run by the tests): mint a client
token for alice and print it (a browser connects with it), follow the event
stream until she is online, look her sessions up, kick the session, see her go.

  PRESENCED_URL=http://127.0.0.1:7070 PRESENCED_API_KEY=... PRESENCED_JWT_SECRET=... python3 quickstart.py
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from presenced import PresenceAPI, PresenceError, mint_token  # noqa: E402

url = os.environ.get("PRESENCED_URL", "http://127.0.0.1:7070")
api = PresenceAPI(url, os.environ["PRESENCED_API_KEY"])
token = mint_token(os.environ["PRESENCED_JWT_SECRET"], "alice", ttl=600, meta={"device": "web"})

# Print the token once the stream is open, so no event of the browser is missed.
events = api.events(on_connect=lambda: print(f"connect to {url.replace('http', 'ws', 1)}/v1/ws?token={token}", flush=True))
for item in events:
    if item.gap:
        continue
    e = item.data
    print(f"event {item.seq} {item.type} {e['user_id']} ({e['reason']})", flush=True)
    if item.type == "user.online":
        user = api.get_user("alice")
        [session] = api.sessions("alice")
        print(f"alice is {user['status']} with {user['sessions']} session(s), device {session['meta']['device']}", flush=True)
        api.kick(session["session_id"])
    if item.type == "user.offline":
        break
try:
    api.kick("gone")
except PresenceError as err:
    print(f"kick again: {err.status} {err.code}")
