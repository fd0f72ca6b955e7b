#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""
Three presenced instances on one Redis behave as one service (issue 4).

Each scenario starts its own redis-server on a unix socket in a temporary
directory (no persistence) and three presenced with --store pointing at it,
short heartbeats and leases for speed, and stops everything by pid.

  cross:     a subscriber on A sees a change caused on B; SSE on any instance
             sees every event; the API answers the same everywhere; a kick
             sent to one instance ends a session held by another.
  kill9:     kill -9 one instance under load: within lease + 1 s each of its
             users is offline unless connected elsewhere; the log (read from
             a survivor from seq 0) holds each user transition exactly once.
  sigstop:   SIGSTOP one instance past its lease, SIGCONT: it is fenced,
             re-registers, re-asserts; presence equals the live connections.
  restart:   Redis restarted empty, and separately FLUSHALL: presence is
             rebuilt within two heartbeats (plus the reconnection backoff
             for a restart).
  sigterm:   SIGTERM on one instance: its users go offline at once, not
             after the lease.
  race:      100 connects and disconnects of one user over the three
             instances end in the right state, no user event duplicated or
             missing.

With PRESENCE_REDIS_TLS=1 (ctest: integration/test_redis_cluster_tls) the
same scenarios run with Redis behind a password and TLS: the instances
connect with rediss://:PASSWORD@127.0.0.1:PORT, verified against a CA made
here by the openssl CLI, and their logs must never show the password.

Run: /usr/bin/python3 tests/integration/test_redis_cluster.py --presenced PATH
"""

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Checks, Client, Daemon, RawWS, SSE, free_port, http, now_ms, parse_args, token,  # noqa: E402
                     sanitizer_report, _die_with_parent)

HB_MS = 200
LEASE_MS = 1000
TLS = os.environ.get("PRESENCE_REDIS_TLS") == "1"
PASSWORD = "cluster-Pw-7f3a"


def _make_certs(d):
    """A CA and a certificate for 127.0.0.1 signed by it, in d."""
    def run(*cmd):
        subprocess.run(list(cmd), cwd=d, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.crt")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey",
        "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out",
        "server.crt")


class Redis:
    """A private redis-server on a unix socket, no persistence. With TLS: a
    password too, and a TLS port for the instances (the socket stays for
    redis-cli)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="presence-redis-")
        self.sock = os.path.join(self.dir, "redis.sock")
        self.proc = None
        self.tls = TLS
        if self.tls:
            _make_certs(self.dir)
            self.port = free_port()
            self.ca = os.path.join(self.dir, "ca.crt")

    def store_flags(self):
        if not self.tls:
            return {"--store": f"unix:{self.sock}"}
        return {"--store": f"rediss://:{PASSWORD}@127.0.0.1:{self.port}",
                "--redis-tls-ca": self.ca}

    def start(self):
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        extra = []
        if self.tls:
            extra = ["--tls-port", str(self.port),
                     "--tls-cert-file", os.path.join(self.dir, "server.crt"),
                     "--tls-key-file", os.path.join(self.dir, "server.key"),
                     "--tls-ca-cert-file", self.ca, "--tls-auth-clients", "no",
                     "--requirepass", PASSWORD]
        self.proc = subprocess.Popen(
            [exe, "--port", "0", "--unixsocket", self.sock, "--save", "",
             "--appendonly", "no", "--dir", self.dir] + extra,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.cli("PING").strip() == "PONG":
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def cli(self, *args):
        try:
            auth = ["-a", PASSWORD, "--no-auth-warning"] if self.tls else []
            r = subprocess.run(["redis-cli", "-s", self.sock] + auth + list(args),
                               capture_output=True, text=True, timeout=5)
            return r.stdout
        except Exception:
            return ""

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def cleanup(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Cluster:
    def __init__(self, binary, n=3, hb=HB_MS, lease=LEASE_MS, extra=None):
        self.redis = Redis()
        self.binary = binary
        self.n = n
        self.flags = {**self.redis.store_flags(),
                      "--redis-heartbeat-ms": str(hb),
                      "--redis-lease-ms": str(lease),
                      "--redis-timeout-ms": "1000",
                      "--shutdown-timeout-ms": "3000"}
        self.flags.update(extra or {})
        self.lease_ms = lease
        self.d = []

    def start(self):
        self.redis.start()
        for i in range(self.n):
            d = Daemon(self.binary, self.flags, f"presenced-{'ABC'[i]}")
            d.start()
            self.d.append(d)
        return self

    def stop(self, t):
        for d in self.d:
            if d.alive():
                code = d.stop()
                t.check(f"{d.name}: SIGTERM stops it with exit status 0", code == 0,
                        f"exit={code} {d.stderr_tail(10)}")
            rep = sanitizer_report(d.stderr_text())
            t.check(f"{d.name}: no sanitizer report", not rep, rep)
            if self.redis.tls:
                t.check(f"{d.name}: the Redis password is in no log line",
                        PASSWORD not in d.stderr_text())

    def cleanup(self):
        for d in self.d:
            d.kill()
            d.cleanup()
        self.redis.cleanup()


async def user(d, uid):
    r = await http(d, "GET", f"/v1/users/{uid}")
    return r.json() if r.status == 200 else {"status": f"http {r.status}"}


async def statuses(d, uids):
    r = await http(d, "POST", "/v1/users/query", body={"user_ids": list(uids)})
    if r.status != 200:
        return {u: f"http {r.status}" for u in uids}
    return {u["user_id"]: u["status"] for u in r.json()["users"]}


async def metrics(d, prefix):
    """The samples of d's /metrics whose names start with prefix."""
    r = await http(d, "GET", "/metrics")
    got = {}
    for line in r.body.decode().splitlines():
        if line.startswith(prefix):
            k, _, v = line.partition(" ")
            got[k] = float(v)
    return got


async def _eq_async(fn, want):
    return await fn() == want


async def wait_for(pred, timeout, step=0.05):
    """Poll an async predicate; seconds it took, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await pred():
            return time.monotonic() - t0
        await asyncio.sleep(step)
    return None


async def read_log_records(d, quiet=0.8, limit=30.0, **cursor):
    """Every event of the cluster log, from its start (every shard's with
    Redis in shards) or after the cursor given as SSE.open's last_event_id or
    after, as seen by instance d: SSE records {id, event, data}."""
    s = await SSE.open(d, **(cursor or {"after": 0}))
    out = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = await s.collect(quiet)
        if not got:
            break
        out += got
    s.close()
    return out


async def read_log(d, quiet=0.8, limit=30.0):
    """Every event of the cluster log, from seq 0, as seen by instance d."""
    return [e["data"] for e in await read_log_records(d, quiet, limit)]


def replay(events, users=None, ids=None):
    """Replay user transitions: each must start where the previous ended
    (a duplicate or a missing one breaks the chain). ids: each event's SSE
    id (a cursor, unique in one stream; needed with Redis in shards, where
    seq is per shard); default its seq. Returns (final status by user, list
    of problems)."""
    cur, problems, seqs = {}, [], set()
    for i, e in enumerate(events):
        k = ids[i] if ids is not None else e["seq"]
        if k in seqs:
            problems.append(f"seq {e['seq']} (id {k}) twice")
        seqs.add(k)
        if not e["type"].startswith("user."):
            continue
        u = e["user_id"]
        if users is not None and u not in users:
            continue
        was = cur.get(u, "offline")
        if e["from"] != was or e["to"] == e["from"]:
            problems.append(f"{u}: seq {e['seq']} {e['from']}->{e['to']} while {was}")
        cur[u] = e["to"]
    return cur, problems


def sessions_live(events, users):
    """session ids connected and not disconnected, per user."""
    live = {}
    for e in events:
        if e.get("user_id") not in users:
            continue
        if e["type"] == "session.connected":
            live.setdefault(e["user_id"], set()).add(e["session_id"])
        elif e["type"] == "session.disconnected":
            live.setdefault(e["user_id"], set()).discard(e["session_id"])
    return live


# --------------------------------------------------------------------------


async def test_cross(t, cl):
    A, B, C = cl.d
    pre = await Client.connect(C, "cross-u")  # online before the subscription
    await asyncio.sleep(0.2)
    watcher = await Client.connect(A, "watcher", watch=["cross-u"])
    await watcher.send({"type": "subscribe", "users": ["cross-u"], "id": 1})
    snap = await watcher.expect_type("presence", 3, snapshot=True)
    t.check("cross: the snapshot on A shows a user connected to C as online",
            snap is not None and snap["users"][0]["status"] == "online", str(snap))
    await pre.close()
    m = await watcher.change("cross-u", 3)
    t.check("cross: A's subscriber sees the user go offline on C",
            m is not None and m["users"][0]["status"] == "offline", str(m))
    sse_c = await SSE.open(C)
    u = await Client.connect(B, "cross-u")
    m = await watcher.change("cross-u", 3)
    t.check("cross: a subscriber on A sees user.online caused on B",
            m is not None and m["users"][0]["status"] == "online", str(m))
    ev, evs = await sse_c.until(lambda e: e["data"].get("type") == "user.online"
                                and e["data"].get("user_id") == "cross-u", 3)
    t.check("cross: SSE on C sees session.connected then user.online from B",
            ev is not None and any(e["data"]["type"] == "session.connected" for e in evs),
            str([e["data"] for e in evs]))
    answers = [await user(d, "cross-u") for d in cl.d]
    same = all(a.get("status") == "online" and a.get("version") == answers[0].get("version")
               and a.get("sessions") == 1 for a in answers)
    t.check("cross: GET /v1/users/{id} answers the same on A, B and C", same, str(answers))
    r = await http(A, "GET", "/v1/users/cross-u/sessions")
    ss = r.json().get("sessions", []) if r.status == 200 else []
    t.check("cross: the sessions of a user held by B are listed on A",
            len(ss) == 1 and ss[0]["session_id"] == u.session_id, f"{r.status} {ss}")
    # /metrics on C (which holds no session now) has the cluster's figures:
    # the watcher on A and the user on B, three live instances.
    async def cluster_metrics():
        return await metrics(C, "presenced_cluster_")
    want = {"presenced_cluster_sessions": 2, "presenced_cluster_users_present": 2,
            "presenced_cluster_instances": 3}
    took = await wait_for(lambda: _eq_async(cluster_metrics, want), 3)
    t.check("cross: /metrics on C counts the sessions and users of the whole cluster",
            took is not None, str(await cluster_metrics()))
    # The two Redis connections an instance holds, up and counted.
    conn = await metrics(C, "presenced_redis_")
    t.check("cross: /metrics on C shows its two Redis connections up and in use",
            conn.get('presenced_redis_up{conn="commands"}') == 1
            and conn.get('presenced_redis_up{conn="reader"}') == 1
            and conn.get('presenced_redis_commands_total{conn="commands"}', 0) > 0
            and conn.get('presenced_redis_commands_total{conn="reader"}', 0) > 0
            and conn.get('presenced_redis_protocol_errors_total{conn="commands"}') == 0,
            str(conn))
    t0 = time.monotonic()
    r = await http(A, "DELETE", f"/v1/sessions/{u.session_id}")
    t.eq("cross: DELETE /v1/sessions/{id} on A for a session on B answers 200", r.status, 200)
    code = await u.wait_closed(3)
    t.check("cross: B closes the kicked client (4001-style kick code)",
            code is not None and code >= 4000, f"close code {code}")
    m = await watcher.change("cross-u", 3)
    t.check("cross: the watcher on A sees the user go offline after the kick",
            m is not None and m["users"][0]["status"] == "offline"
            and m["users"][0]["reason"] == "kicked", str(m))
    t.note(f"cross-instance kick took {1000 * (time.monotonic() - t0):.0f} ms")
    r = await http(C, "DELETE", f"/v1/sessions/{u.session_id}")
    t.eq("cross: kicking it again anywhere answers 404 no_session", r.status, 404)
    await watcher.close()
    sse_c.close()


async def test_kill9(t, cl):
    A, B, C = cl.d
    a_users = [f"k9-a{i}" for i in range(10)]
    b_users = [f"k9-b{i}" for i in range(5)]
    clients = [await Client.connect(A, u) for u in a_users]
    clients += [await Client.connect(B, u) for u in b_users]
    both = await Client.connect(A, "k9-both")
    both_c = await Client.connect(C, "k9-both")
    everyone = set(a_users + b_users + ["k9-both", "k9-load"])
    ok = await wait_for(lambda: _all(C, a_users + b_users + ["k9-both"], "online"), 3)
    t.check("kill9: every user is online, seen from C", ok is not None)

    stop = asyncio.Event()

    async def load():  # connects and disconnects on B and C meanwhile
        n = 0
        while not stop.is_set():
            d = (B, C)[n % 2]
            try:
                c = await Client.connect(d, "k9-load")
                await asyncio.sleep(0.02)
                await c.close()
            except Exception:
                pass
            n += 1
        return n
    loader = asyncio.ensure_future(load())
    await asyncio.sleep(0.3)
    os.kill(A.pid, signal.SIGKILL)
    t_kill = time.monotonic()
    A.proc.wait(5)
    took = await wait_for(lambda: _all(B, a_users, "offline"), (LEASE_MS + 3000) / 1000, 0.02)
    stop.set()
    n = await loader
    t.check(f"kill9: all of A's users offline within lease + 1 s "
            f"({LEASE_MS + 1000} ms) under load ({n} connects meanwhile)",
            took is not None and took <= (LEASE_MS + 1000) / 1000,
            f"took {took}")
    t.note(f"kill -9: A's users offline after {1000 * (took or 0):.0f} ms (lease {LEASE_MS} ms)")
    st = await statuses(B, ["k9-both"] + b_users)
    t.check("kill9: a user also connected to C stays online; B's users stay online",
            all(v == "online" for v in st.values()), str(st))
    await asyncio.sleep(0.5)
    recs = await read_log_records(B)
    log = [e["data"] for e in recs]
    cur, problems = replay(log, everyone, [e["id"] for e in recs])
    t.check("kill9: the log replayed from seq 0 holds each user transition exactly once",
            not problems, "; ".join(problems[:5]))
    want = {u: "offline" for u in a_users}
    want.update({u: "online" for u in b_users + ["k9-both"]})
    want["k9-load"] = "offline"
    t.check("kill9: the replayed log ends in the state the API reports",
            all(cur.get(u, "offline") == s for u, s in want.items()),
            str({u: cur.get(u) for u in want if cur.get(u, "offline") != want[u]}))
    lost = [e for e in log if e["type"] == "session.disconnected"
            and e["reason"] == "instance_lost"]
    cleanups = [e for e in log if e["type"] == "cleanup"]
    # One cleanup per shard that reaped A (one, but with Redis in shards).
    t.check("kill9: A's 11 sessions end with reason instance_lost, one cleanup event per shard",
            len(lost) == 11 and len(cleanups) == getattr(cl, "shards", 1),
            f"{len(lost)} lost, {len(cleanups)} cleanups")
    for c in clients + [both_c]:
        await c.close()


async def _all(d, uids, status):
    st = await statuses(d, uids)
    return all(v == status for v in st.values())


async def test_sigstop(t, cl):
    A, B, C = cl.d
    a_users = [f"st-a{i}" for i in range(5)]
    clients = [await Client.connect(A, u) for u in a_users]
    c_cl = await Client.connect(C, "st-c")
    ok = await wait_for(lambda: _all(B, a_users + ["st-c"], "online"), 3)
    t.check("sigstop: users online before the stop", ok is not None)
    os.kill(A.pid, signal.SIGSTOP)
    gone = await wait_for(lambda: _all(B, a_users, "offline"), (LEASE_MS + 3000) / 1000)
    t.check("sigstop: A stopped past its lease is reaped (its users offline)",
            gone is not None, f"{gone}")
    await asyncio.sleep(0.5)
    os.kill(A.pid, signal.SIGCONT)
    t_cont = time.monotonic()
    back = await wait_for(lambda: _all(B, a_users, "online"), 5)
    t.check("sigstop: after SIGCONT A re-registers and re-asserts its live sessions",
            back is not None, f"{back}")
    t.note(f"SIGCONT -> re-asserted after {1000 * (back or 0):.0f} ms")
    # A client that left while A was stopped must not come back.
    await clients[0].close()
    await asyncio.sleep(0.3)
    st = await statuses(C, a_users + ["st-c"])
    want = {u: "online" for u in a_users[1:] + ["st-c"]}
    want[a_users[0]] = "offline"
    t.check("sigstop: final presence equals the set of live connections", st == want, str(st))
    r = await http(A, "GET", "/healthz")
    t.eq("sigstop: A is healthy again", r.status, 200)
    recs = await read_log_records(C)
    log = [e["data"] for e in recs]
    resync = [e for e in log if e.get("user_id") in a_users and e["reason"] == "resync"
              and e["type"] == "session.connected"]
    t.check("sigstop: the re-asserted sessions carry reason resync", len(resync) == 5,
            f"{len(resync)}")
    _cur, problems = replay(log, set(a_users + ["st-c"]), [e["id"] for e in recs])
    t.check("sigstop: user transitions in the log chain exactly once", not problems,
            "; ".join(problems[:5]))
    for c in clients[1:] + [c_cl]:
        await c.close()


async def test_restart(t, cl):
    A, B, C = cl.d
    users = {"rs-a": A, "rs-b": B, "rs-c": C}
    clients = [await Client.connect(d, u) for u, d in users.items()]
    ok = await wait_for(lambda: _all(A, list(users), "online"), 3)
    t.check("restart: users online on the three instances", ok is not None)

    # FLUSHALL: state lost, Redis still there.
    cl.redis.cli("FLUSHALL")
    t0 = time.monotonic()
    took = await wait_for(lambda: _all(B, list(users), "online"), 5, 0.02)
    t.check(f"flushall: presence rebuilt within two heartbeats + 0.3 s ({2 * HB_MS + 300} ms)",
            took is not None and took <= (2 * HB_MS + 300) / 1000, f"took {took}")
    t.note(f"FLUSHALL -> rebuilt after {1000 * (took or 0):.0f} ms (heartbeat {HB_MS} ms)")

    # Restart empty: the store reconnects (backoff up to 2 s), then
    # re-registers and re-asserts.
    cl.redis.kill()
    await asyncio.sleep(0.3)
    r = await http(A, "GET", "/healthz")
    t.check("restart: /healthz answers 503 store_unavailable while Redis is away",
            r.status == 503 and r.json().get("store_ready") is False, f"{r.status} {r.body}")
    p = await clients[0].ping("away")
    t.check("restart: clients are still served while Redis is away", p is not None)
    cl.redis.start()
    t0 = time.monotonic()
    took = await wait_for(lambda: _all(C, list(users), "online"), 8, 0.02)
    bound = (2 * HB_MS + 2000 + 300) / 1000
    t.check(f"restart: presence rebuilt within two heartbeats + reconnect backoff "
            f"({bound * 1000:.0f} ms)", took is not None and took <= bound, f"took {took}")
    t.note(f"Redis restarted empty -> rebuilt after {1000 * (took or 0):.0f} ms")
    ok = await wait_for(lambda: _healthy(cl.d), 3)
    t.check("restart: every instance healthy again", ok is not None)
    for c in clients:
        await c.close()
    ok = await wait_for(lambda: _all(A, list(users), "offline"), 3)
    t.check("restart: disconnects after the restart go through", ok is not None)


async def _healthy(ds):
    for d in ds:
        r = await http(d, "GET", "/healthz")
        if r.status != 200:
            return False
    return True


async def test_sigterm(t, cl):
    A, B, C = cl.d
    a_users = [f"tm-a{i}" for i in range(5)]
    clients = [await Client.connect(A, u) for u in a_users]
    keep = await Client.connect(B, "tm-b")
    ok = await wait_for(lambda: _all(C, a_users, "online"), 3)
    t.check("sigterm: A's users online", ok is not None)
    A.signal(signal.SIGTERM)
    took = await wait_for(lambda: _all(C, a_users, "offline"), 10, 0.02)
    t.check("sigterm: A's users offline at once (under 1 s; the lease is 6 s)",
            took is not None and took < 1.0, f"took {took}")
    t.note(f"SIGTERM -> offline after {1000 * (took or 0):.0f} ms")
    try:
        A.proc.wait(5)
    except Exception:
        pass
    t.eq("sigterm: A exits with status 0", A.proc.poll(), 0)
    log = await read_log(C)
    ends = [e for e in log if e.get("user_id") in a_users and e["type"] == "user.offline"]
    t.check("sigterm: each user.offline has reason shutdown",
            len(ends) == 5 and all(e["reason"] == "shutdown" for e in ends),
            str([(e["user_id"], e["reason"]) for e in ends]))
    cl_ = [e for e in log if e["type"] == "cleanup"]
    t.check("sigterm: no instance was reaped (clean leave)", not cl_, str(cl_))
    st = await user(B, "tm-b")
    t.eq("sigterm: B's user unaffected", st.get("status"), "online")
    await keep.close()


async def test_rolling(t, cl):
    # A rolling restart (offline grace 2 s): the instance SIGTERMed ends its
    # sessions at once (1001, session.disconnected reason shutdown), but its
    # users go offline only after the grace, as after any disconnect. One
    # that reconnects to another instance within it shows watchers nothing
    # (before, its user.offline and user.online came 0.3 s apart); one that
    # does not goes offline, reason shutdown, fired by a live instance.
    A, B, C = cl.d
    w = await Client.connect(C, "rl-w", watch="*")
    back = await Client.connect(A, "rl-back", tok=token("rl-back", extra={"channels": "*"}))
    gone = await Client.connect(A, "rl-gone")
    await back.send({"type": "join", "channel": "rl-room", "data": {"n": 1}, "id": "j"})
    t.check("rolling: the member joined", await back.expect_type("channel", 3, id="j") is not None)
    await w.send({"type": "subscribe", "users": ["rl-back", "rl-gone"], "id": "s"})
    await w.expect_type("presence", 3)
    A.signal(signal.SIGTERM)
    t.eq("rolling: A closes its clients with 1001", await back.wait_closed(3), 1001)
    back2 = await Client.connect(B, "rl-back", tok=token("rl-back", extra={"channels": "*"}))
    await back2.send({"type": "join", "channel": "rl-room", "data": {"n": 1}, "id": "j2"})
    await back2.expect_type("channel", 3, id="j2")
    seen = await w.changes(3.5)
    got = [(u["user_id"], u["status"], u.get("reason")) for m in seen for u in m["users"]]
    t.eq("rolling: watchers see only the user that did not come back go offline",
         got, [("rl-gone", "offline", "shutdown")])
    st = await user(C, "rl-back")
    t.eq("rolling: the user that came back is online throughout", st.get("status"), "online")
    log = await read_log(C)
    mine = [(e["type"], e.get("user_id"), e.get("reason")) for e in log
            if e.get("user_id") in ("rl-back", "rl-gone") and e["type"].startswith(("user.", "channel."))]
    t.eq("rolling: the log holds no offline, online or leave for the member that came back",
         [x for x in mine if x[1] == "rl-back"],
         [("user.online", "rl-back", "connect"), ("channel.join", "rl-back", "explicit")])
    t.check("rolling: and one user.offline (shutdown) for the one that did not",
            ("user.offline", "rl-gone", "shutdown") in mine, mine)
    try:
        A.proc.wait(5)
    except Exception:
        pass
    t.eq("rolling: A exits with status 0", A.proc.poll(), 0)
    # Then C (B still live: its watcher's user goes into the grace), then
    # B, now the last instance: nobody can take its clients back, so its
    # user goes offline at once, before B exits (a single-instance
    # deployment's SIGTERM too). The grace C left has no instance to fire
    # it; the next instance's fresh start does, with the grace's reason.
    C.signal(signal.SIGTERM)
    C.proc.wait(5)
    B.signal(signal.SIGTERM)
    B.proc.wait(5)
    t_b = now_ms()
    D = Daemon(cl.binary, cl.flags, "presenced-D")
    cl.d.append(D)
    D.start()
    offs = {e["user_id"]: e for e in await read_log(D)
            if e["type"] == "user.offline" and e.get("user_id") in ("rl-back", "rl-w")}
    t.check("rolling: the last instance's user went offline (shutdown) before it exited",
            "rl-back" in offs and offs["rl-back"]["reason"] == "shutdown"
            and offs["rl-back"]["ts"] <= t_b, (offs.get("rl-back"), t_b))
    t.check("rolling: a grace no instance was left to fire ends at the next start, "
            "with its reason (shutdown, not instance_lost)",
            "rl-w" in offs and offs["rl-w"]["reason"] == "shutdown" and offs["rl-w"]["ts"] > t_b,
            (offs.get("rl-w"), t_b))
    for c in (back2, w, gone):
        await c.close()


async def test_race(t, cl):
    rnd = random.Random(4)
    held = []

    async def one(i):
        d = cl.d[i % 3]
        c = await Client.connect(d, "racer")
        await asyncio.sleep(rnd.random() * 0.05)
        if i % 10 == 3:
            held.append(c)  # 10 stay connected
        else:
            await c.close()
    t0 = time.monotonic()
    await asyncio.gather(*[one(i) for i in range(100)])
    t.note(f"race: 100 connects, 90 disconnects in {1000 * (time.monotonic() - t0):.0f} ms")
    await asyncio.sleep(0.3)
    answers = [await user(d, "racer") for d in cl.d]
    t.check("race: with 10 sessions left the user is online with 10 sessions everywhere",
            all(a.get("status") == "online" and a.get("sessions") == 10 for a in answers),
            str(answers))
    await asyncio.gather(*[c.close() for c in held])
    ok = await wait_for(lambda: _all(cl.d[1], ["racer"], "offline"), 3)
    t.check("race: after the last disconnect the user is offline", ok is not None)
    await asyncio.sleep(0.3)
    log = await read_log(cl.d[2])
    cur, problems = replay(log, {"racer"})
    t.check("race: no duplicated or missing user event (replayed chain)",
            not problems and cur.get("racer") == "offline", "; ".join(problems[:5]) + str(cur))
    conn = sum(1 for e in log if e.get("user_id") == "racer" and e["type"] == "session.connected")
    disc = sum(1 for e in log if e.get("user_id") == "racer"
               and e["type"] == "session.disconnected")
    t.check("race: 100 session.connected and 100 session.disconnected",
            conn == 100 and disc == 100, f"{conn} / {disc}")
    on = sum(1 for e in log if e.get("user_id") == "racer" and e["type"] == "user.online")
    off = sum(1 for e in log if e.get("user_id") == "racer" and e["type"] == "user.offline")
    t.check("race: as many user.online as user.offline", on == off and on >= 1, f"{on} / {off}")


async def test_refused_without_welcome(t, cl):
    """Issue 18: with --max-sessions-per-user 2 (counted cluster-wide), the
    third session gets error too_many_sessions and close 4031 and never a
    welcome, as on the embedded store; admitted ones get their welcome."""
    a = await Client.connect(cl.d[0], "limited")
    b = await Client.connect(cl.d[1], "limited")
    t.check("limit: two sessions on two instances welcomed",
            a.welcome.get("type") == "welcome" and b.welcome.get("type") == "welcome")
    for i, d in enumerate(cl.d):
        ws = await RawWS.open(d, tok=token("limited"))
        # A ping sent with the upgrade must not be answered before the refusal.
        await ws.send_json({"type": "ping", "id": "early"})
        code, msgs = await ws.until_close(5, auto_pong=False)
        ws.close()
        types = [m.get("type") if isinstance(m, dict) else m for m in msgs]
        t.check(f"limit: a third session on instance {'AB'[i]}: error too_many_sessions, "
                "close 4031, no welcome",
                code == 4031 and "welcome" not in types and msgs
                and msgs[0].get("code") == "too_many_sessions", (code, msgs))
    await a.close()
    await asyncio.sleep(0.3)
    ws = await RawWS.open(cl.d[0], tok=token("limited"))
    await ws.send_json({"type": "ping", "id": "early"})
    first = await ws.recv_json(5)
    second = await ws.recv_json(5)
    ws.close()
    t.check("limit: once one closed, a new session: welcome first, then the early ping's pong",
            first and first.get("type") == "welcome" and second and second.get("type") == "pong",
            (first, second))
    await b.close()


SCENARIOS = [
    ("cross", test_cross, {}),
    ("kill9", test_kill9, {}),
    ("sigstop", test_sigstop, {}),
    ("restart", test_restart, {}),
    ("sigterm", test_sigterm, {"lease": 6000, "hb": 2000}),
    ("rolling", test_rolling, {"lease": 6000, "hb": 2000,
                               "extra": {"--offline-grace-ms": "2000"}}),
    # 100 sessions of one user at once: over the default per-user limit
    # (64, enforced cluster-wide, which the refusals in a first run showed).
    ("race", test_race, {"extra": {"--max-sessions-per-user": "0"}}),
    ("limit", test_refused_without_welcome, {"n": 2, "extra": {"--max-sessions-per-user": "2"}}),
]


def run_scenarios(scenarios, timeout_s, setup=None, cluster=None):
    """Run (name, fn, cluster kwargs) scenarios, each on a fresh cluster, and
    print the closing line. setup(kw) may return (extra flags, extra args
    for fn, teardown) for scenarios that need more than the cluster.
    cluster: the class of the cluster (default Cluster: one Redis); a
    scenario's own "cluster" in its kwargs overrides it. A scenario function
    with a .timeout attribute (seconds) gets that instead of timeout_s."""
    args = parse_args()
    t = Checks()
    if not shutil.which("redis-server"):
        print("ok   - SKIP: redis-server not installed")
        print("1 passed, 0 failed")
        return 0

    async def run_all():
        for name, fn, kw in scenarios:
            if args.only and args.only not in name:
                continue
            extra, more, teardown = setup(kw) if setup else ({}, (), None)
            kw = dict(kw)
            extra = {**kw.pop("extra", {}), **extra}
            cls = kw.pop("cluster", None) or cluster or Cluster
            cl = cls(args.presenced, extra=extra, **kw)
            limit = getattr(fn, "timeout", timeout_s)
            failed = t.failed
            t0 = time.monotonic()
            try:
                cl.start()
                await asyncio.wait_for(fn(t, cl, *more), limit)
                cl.stop(t)
            except asyncio.TimeoutError:
                t.check(f"{name}: finished within {limit} s", False)
            except Exception as e:
                t.check(f"{name}: ran without exception", False,
                        f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}")
            finally:
                t.note(f"{name}: {time.monotonic() - t0:.1f} s")
                if t.failed > failed or args.verbose:
                    for d in cl.d:
                        t.note(f"--- {d.name} stderr tail:")
                        for line in d.stderr_tail(15).splitlines():
                            t.note(line)
                cl.cleanup()
                if teardown:
                    teardown()
    asyncio.run(run_all())
    print(f"{t.passed} passed, {t.failed} failed", flush=True)
    return 0 if t.failed == 0 else 1


def main():
    return run_scenarios(SCENARIOS, 60)


if __name__ == "__main__":
    sys.exit(main())
