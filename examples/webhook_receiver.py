#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A backend that keeps its users' presence from presenced's webhooks.

The seed's "Basic Usage" (a `status` and a `lastOnline` field on the user
record, set by onUserOnline / onUserIdle / onUserOffline / onCleanup) done the
presenced way: presenced POSTs signed batches of events, this server verifies
them and updates a `users` table in SQLite. Standard library only.

    WHSEC=$(openssl rand -hex 32)   # presenced refuses a secret under 32 bytes
    python3 examples/webhook_receiver.py --port 9000 --db app.db --secret "$WHSEC"
    presenced --webhook "url=http://127.0.0.1:9000/hook,secret=$WHSEC,events=user.*|cleanup" ...

Table `users`: id, status ('online', 'idle', or NULL for offline, as the
seed unsets it), last_online (ms since the epoch, set when the user comes
online), version (presenced's per-user transition counter).

At-least-once delivery means a batch can arrive twice (a retry after a lost
answer). Deliveries come in order per endpoint, so remembering the last seq
applied per presenced instance is enough to make every event apply once:
table `streams` (instance, last_seq) is updated in the same transaction as
the users it changed.

Options --presenced and --api-key (optional): after a gap notice (presenced
dropped events this receiver never got) re-read the status of every known
user from GET /v1/users?ids=..., the documented recovery.
"""

import argparse
import hashlib
import hmac
import http.client
import http.server
import json
import os
import sqlite3
import sys
import threading
import time
import urllib.parse

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
  id          TEXT PRIMARY KEY,
  status      TEXT CHECK (status IN ('online', 'idle')),
  last_online INTEGER,
  version     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS streams (
  instance TEXT PRIMARY KEY,
  last_seq INTEGER NOT NULL
);
"""


def verify(secret, headers, body, tolerance_s):
    """True if Presence-Signature holds a v1 HMAC-SHA256 of
    "<Presence-Timestamp>.<body>" and the timestamp is recent."""
    ts = headers.get("Presence-Timestamp", "")
    sig = headers.get("Presence-Signature", "")
    if not (ts.isascii() and ts.isdigit()) or abs(time.time() * 1000 - int(ts)) > tolerance_s * 1000:
        return False
    want = "v1=" + hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(part.strip(), want) for part in sig.split(","))


def apply_event(db, e):
    uid = e.get("user_id")
    t = e["type"]
    if t == "user.online":
        db.execute("INSERT INTO users (id, status, last_online, version) VALUES (?, 'online', ?, ?) "
                   "ON CONFLICT(id) DO UPDATE SET status = 'online', last_online = excluded.last_online, "
                   "version = excluded.version", (uid, e["ts"], e.get("version", 0)))
    elif t == "user.idle":
        db.execute("INSERT INTO users (id, status, version) VALUES (?, 'idle', ?) "
                   "ON CONFLICT(id) DO UPDATE SET status = 'idle', version = excluded.version",
                   (uid, e.get("version", 0)))
    elif t == "user.offline":
        db.execute("INSERT INTO users (id, status, version) VALUES (?, NULL, ?) "
                   "ON CONFLICT(id) DO UPDATE SET status = NULL, version = excluded.version",
                   (uid, e.get("version", 0)))
    elif t == "cleanup" and e.get("fresh_start"):
        # A fresh start: presenced knows no one; the seed's onCleanup().
        # A dead instance's cleanup (fresh_start false, on Redis) is not
        # one: its sessions' user.offline events came before it, and users
        # connected to live instances are still online.
        db.execute("UPDATE users SET status = NULL")


def resync(db, base, key):
    """After a gap: ask presenced for the current status of known users."""
    ids = [r[0] for r in db.execute("SELECT id FROM users")]
    u = urllib.parse.urlsplit(base)
    for i in range(0, len(ids), 1000):
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
        try:
            conn.request("POST", "/v1/users/query", json.dumps({"user_ids": ids[i:i + 1000]}),
                         {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            users = json.loads(conn.getresponse().read())["users"]
        finally:
            conn.close()
        for x in users:
            st = x["status"] if x["status"] in ("online", "idle") else None
            db.execute("UPDATE users SET status = ?, version = ?, "
                       "last_online = CASE WHEN ? = 'online' THEN ? ELSE last_online END WHERE id = ?",
                       (st, x["version"], st, x["since"], x["user_id"]))


def handle_batch(db, batch, opts):
    """Apply one delivery in one transaction; returns events applied."""
    inst = batch["instance"]
    applied = 0
    with db:  # BEGIN ... COMMIT (ROLLBACK on an exception: presenced retries)
        row = db.execute("SELECT last_seq FROM streams WHERE instance = ?", (inst,)).fetchone()
        last = row[0] if row else 0
        if "gap" in batch:
            print(f"gap: events {batch['gap']['after'] + 1}..{batch['gap']['oldest'] - 1} "
                  f"of {inst} were lost", file=sys.stderr)
            if opts.presenced and opts.api_key:
                resync(db, opts.presenced, opts.api_key)
        for e in batch["events"]:
            if e["seq"] <= last:
                continue  # already applied: a redelivery
            apply_event(db, e)
            last = e["seq"]
            applied += 1
        last = max(last, batch.get("last_seq", last))
        db.execute("INSERT INTO streams (instance, last_seq) VALUES (?, ?) "
                   "ON CONFLICT(instance) DO UPDATE SET last_seq = excluded.last_seq", (inst, last))
    return applied


def make_handler(opts, db):
    secret = opts.secret.encode()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status, obj):
            out = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            if not verify(secret, self.headers, body, opts.tolerance):
                return self.reply(401, {"error": "bad signature"})
            try:
                batch = json.loads(body)
                with lock:
                    applied = handle_batch(db, batch, opts)
            except (ValueError, KeyError, TypeError) as err:
                # Malformed for good: 400 makes presenced drop it, not retry.
                return self.reply(400, {"error": str(err)})
            except sqlite3.Error as err:
                # Our database is the problem: 503 makes presenced retry.
                return self.reply(503, {"error": str(err)})
            self.reply(200, {"applied": applied})

        def log_message(self, fmt, *args):
            if opts.verbose:
                super().log_message(fmt, *args)

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--db", default="presence.db")
    ap.add_argument("--secret", default=os.environ.get("PRESENCE_WEBHOOK_SECRET"))
    ap.add_argument("--tolerance", type=int, default=300, help="seconds of clock skew accepted")
    ap.add_argument("--presenced", help="base URL of presenced, for resync after a gap")
    ap.add_argument("--api-key", default=os.environ.get("PRESENCED_API_KEY"))
    ap.add_argument("--verbose", action="store_true")
    opts = ap.parse_args()
    if not opts.secret:
        ap.error("--secret (or PRESENCE_WEBHOOK_SECRET) is required")
    # presenced keeps its connection open between batches, so each
    # connection gets a thread; the one database connection is shared under
    # a lock (batches of one endpoint arrive one at a time anyway).
    db = sqlite3.connect(opts.db, check_same_thread=False)
    db.executescript(SCHEMA)
    srv = http.server.ThreadingHTTPServer((opts.host, opts.port), make_handler(opts, db))
    srv.daemon_threads = True
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        db.close()


if __name__ == "__main__":
    main()
