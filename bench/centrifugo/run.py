#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/centrifugo/run.py: presenced and Centrifugo side by side.

Not part of `make test` (it builds Centrifugo with the Go toolchain the
first time, and runs for minutes): `make bench-centrifugo`, or

    python3 bench/centrifugo/run.py [--rounds 2] [--only memory,redis]

Centrifugo v6.9.1 is installed once with `go install
github.com/centrifugal/centrifugo/v6@v6.9.1` into $(go env GOPATH)/bin (or
$CENTRIFUGO names a binary) and reused after that. Both servers are started
here on free loopback ports, stopped by pid, and driven by the same load
generator (bench/load: --mode centrifugo speaks Centrifugo's JSON protocol),
with the same HS256 tokens. Centrifugo is configured for presence and
join/leave on a namespace ("pr"), plus a presence-only namespace ("ls") for
the list; first on its memory engine, then on a redis-server this script
starts, the same one presenced's Redis store then uses (flushed between).

Both sides use channels, the same names and the same steps (presenced's
`join` where Centrifugo's client sends `subscribe`; see docs/benchmarks.md):

  row                   presenced                      Centrifugo
  idle connection       connected, joined pr:u<i> and  connected, subscribed to
                        pr:u<i+1>                      pr:u<i> and pr:u<i+1>
  join/leave            connect, 2 joins, close: a     connect, 2 subscribes,
                        join and a leave in pr:u<i>,   close: the same, as
                        a frame to its other member;   pushes (a subscribe
                        the joins "snapshot": false    answers no presence
                        (an ack, no member list)       list)
  join/leave with       the same, each join answered   (none: its subscribe
  snapshots             by the channel's members       has no list)
  session alone         connect, close (no join): the  connect, close (no
  (Redis)               session and its user, kept in  subscribe): nothing in
                        Redis; subtracted from the     Redis; subtracted
                        join/leave cycle, half of the  alike: the row "CPU us
                        rest is a join's or a leave's  per join/leave, the
                        own                            sessions apart"
  join to member        1,000 members in pr:u1000;     the same with subscribe
                        u1000 connects and joins:      and join pushes
                        delay to each member's
                        channel join frame
  presence list         GET /v1/users/u0/sessions      POST /api/presence of
                        with 10,000 sessions of u0     ls:u0 with 10,000
                        (not a channel: see below)     clients

Rounds are interleaved (A B, then B A); medians with min and max, ratios of
medians; the load average beside every run. Writes
bench/results/<date>-centrifugo.json (<date>-<HHMM>-centrifugo.json when that
exists: an earlier run is never overwritten) and prints the table.
"""
import argparse
import datetime
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import run as bench  # noqa: E402  (bench/run.py: servers, load, stats)

CENTRIFUGO_MODULE = "github.com/centrifugal/centrifugo/v6@v6.9.1"
IDLE_CONNS = 10000
FANOUT_MEMBERS = 1000
LIST_MEMBERS = 10000
CHURN_SLOTS = 200
DURATION_S = 6
LIST_REQUESTS = 30
log = bench.log


def centrifugo_binary():
    """The cached binary, built once (a few minutes of CPU) when missing."""
    exe = os.environ.get("CENTRIFUGO")
    if exe:
        return exe
    gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True,
                            text=True).stdout.strip() or os.path.expanduser(
                                "~/go")
    exe = os.path.join(gopath, "bin", "centrifugo")
    if not os.path.exists(exe):
        if not shutil.which("go"):
            raise SystemExit("centrifugo bench: no Go toolchain and no "
                             "$CENTRIFUGO binary")
        log(f"go install {CENTRIFUGO_MODULE} (once; cached in {exe})")
        subprocess.run(["nice", "go", "install", CENTRIFUGO_MODULE],
                       check=True)
    return exe


class Redis:
    """A redis-server on a free loopback TCP port (both servers reach it the
    same way), stopped by pid."""

    def __init__(self):
        self.port = bench.free_port()
        self.dir = f"/tmp/presence-bench-cf-redis-{os.getpid()}"
        os.makedirs(self.dir, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir,
             "--logfile", "redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                self.cmd("PING")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cmd(self, *args):
        """One command over RESP; the reply's first line or bulk string."""
        with socket.create_connection(("127.0.0.1", self.port), 2) as s:
            out = f"*{len(args)}\r\n" + "".join(
                f"${len(str(a))}\r\n{a}\r\n" for a in args)
            s.sendall(out.encode())
            f = s.makefile("rb")
            line = f.readline().decode().rstrip("\r\n")
            if line.startswith("$"):
                n = int(line[1:])
                return f.read(n + 2)[:-2].decode() if n >= 0 else None
            return line[1:]

    def used_memory(self):
        for line in self.cmd("INFO", "memory").splitlines():
            if line.startswith("used_memory:"):
                return int(line.split(":")[1])
        return -1

    def log_bytes(self):
        """MEMORY USAGE of presenced's log (the stream under the default
        prefix, which the bench's presenced uses); 0 when there is none."""
        v = self.cmd("MEMORY", "USAGE", "presence:log", "SAMPLES", "0")
        return int(v) if v else 0

    def cpu_s(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            parts = f.read().rpartition(")")[2].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Centrifugo:
    """Centrifugo with the same secret, presence + join/leave on "pr"."""

    def __init__(self, exe, redis=None):
        self.kind, self.exe, self.redis = "centrifugo", exe, redis
        self.port = bench.free_port()
        self.proc = None
        self.dir = f"/tmp/presence-bench-cf-{os.getpid()}-{self.port}"

    def config(self):
        ns = dict(presence=True, allow_subscribe_for_client=True,
                  allow_presence_for_subscriber=True)
        c = {"http_server": {"address": "127.0.0.1", "port": self.port},
             "log": {"level": "error"},
             "client": {"token": {"hmac_secret_key": bench.SECRET},
                        "allowed_origins": ["*"]},
             "http_api": {"key": bench.API_KEY},
             "channel": {"namespaces": [
                 dict(name="pr", join_leave=True, force_push_join_leave=True,
                      **ns),
                 dict(name="ls", **ns)]},
             "usage_stats": {"disabled": True}}
        if self.redis:
            c["engine"] = {"type": "redis", "redis": {
                "address": [f"redis://127.0.0.1:{self.redis.port}"]}}
        return c

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        cfg = os.path.join(self.dir, "config.json")
        with open(cfg, "w") as f:
            json.dump(self.config(), f)
        logf = open(os.path.join(self.dir, "log"), "ab")
        self.proc = subprocess.Popen([self.exe, "-c", cfg], stdout=logf,
                                     stderr=logf, cwd=self.dir,
                                     preexec_fn=lambda: bench.raise_nofile(
                                         200000))
        bench.wait_listening(self.proc, self.port, "centrifugo",
                             f"{self.dir}/log", timeout=15)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def wait_drained(self, timeout=10):
        time.sleep(1.0)  # no connection gauge to poll without the admin API

    def presence_list(self, channel):
        body = json.dumps({"channel": channel})
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        t0 = time.perf_counter()
        c.request("POST", "/api/presence", body,
                  {"X-API-Key": bench.API_KEY,
                   "Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        dt = time.perf_counter() - t0
        c.close()
        n = len(json.loads(data).get("result", {}).get("presence", {}))
        return dt * 1000, n, len(data)


def presenced(build, redis=None):
    # no grace: Centrifugo has none, a close is a leave at once
    extra = ["--offline-grace-ms", "0", "--channel-grace-ms", "0",
             "--max-sessions-per-user", "0"]
    if redis:
        extra += ["--store", f"redis://127.0.0.1:{redis.port}"]
    srv = bench.Server(build, "presenced", bench.free_port(), extra=extra)
    srv.start()
    deadline = time.time() + 10
    while time.time() < deadline:  # registered with its store
        try:
            bench.http_get(srv.port, "/healthz")
            break
        except OSError:
            time.sleep(0.1)
    return srv


def presenced_list(srv, user):
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    t0 = time.perf_counter()
    c.request("GET", f"/v1/users/{user}/sessions",
              headers={"Authorization": f"Bearer {bench.API_KEY}"})
    r = c.getresponse()
    data = r.read()
    dt = time.perf_counter() - t0
    c.close()
    return dt * 1000, len(json.loads(data).get("sessions", [])), len(data)


def load_argv(build, srv, scenario, **kw):
    argv = [f"{build}/bench/presence_load", "--scenario", scenario,
            "--target", f"127.0.0.1:{srv.port}", "--mode",
            "centrifugo" if srv.kind == "centrifugo" else "presenced",
            "--secret", bench.SECRET, "--pid", str(srv.pid)]
    if srv.kind != "centrifugo" and not kw.get("one_user"):
        argv += ["--channels", "1"]  # joins in place of subscribes
    for k, v in kw.items():
        argv += ["--" + k.replace("_", "-"), str(v)]
    return argv


def held(build, srv, conns, during, **kw):
    """An idle run of `conns` sessions; `during()` runs while they are all
    held (the load generator says so on stderr), its result kept."""
    argv = load_argv(build, srv, "idle", conns=conns, hold_s=kw.pop(
        "hold_s", 30), concurrency=256, max_s=150, **kw)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    extra = None
    try:
        for line in p.stderr:
            if "sessions in" in line:
                time.sleep(1.0)  # let the last joins settle
                extra = during()
                break
    finally:
        if p.poll() is None:
            p.terminate()  # ends the hold: the figures are taken
        out, _ = p.communicate(timeout=60)
    return extra


def row_idle(build, mk, redis):
    """RSS per idle connection (10,000 held), and with Redis the bytes Redis
    holds per presence."""
    srv = mk()
    try:
        time.sleep(0.5)
        mem0 = redis.used_memory() if redis else None
        rss0 = bench.Server.rss_kb(srv)

        def during():
            # 1 s after the last one in, and again 6 s later: a garbage
            # collected runtime (Go) may give back what the storm left
            # behind; the later figure is the one reported
            first = bench.Server.rss_kb(srv)
            time.sleep(6)
            return {"rss_kb_1s": first, "rss_kb": bench.Server.rss_kb(srv),
                    "redis_used": redis.used_memory() if redis else None,
                    "redis_log": redis.log_bytes() if redis else None}
        got = held(build, srv, IDLE_CONNS, during)
        r = {"conns": IDLE_CONNS, "loadavg": bench.loadavg()}
        if got:
            r["rss_per_conn_bytes"] = (got["rss_kb"] - rss0) * 1024 / IDLE_CONNS
            r["rss_per_conn_bytes_at_1s"] = (got["rss_kb_1s"] - rss0) * 1024 \
                / IDLE_CONNS
            if redis:
                # per connection: two channel memberships on both sides
                # (its own channel and the watched one), and for presenced
                # the session, its user and the log's entries
                r["redis_bytes_per_presence"] = (got["redis_used"] - mem0) \
                    / IDLE_CONNS
                r["redis_presence_entries_per_conn"] = 2
                # presenced's transition log apart: its entries are a cost
                # per event, bounded by --log-capacity (a log that has
                # wrapped takes no more for a new connection), where the
                # rest is what each connection holds (Centrifugo keeps no
                # log: 0)
                if got.get("redis_log") is not None:
                    r["redis_log_bytes_per_conn"] = got["redis_log"] / \
                        IDLE_CONNS
                    r["redis_bytes_per_presence_without_log"] = \
                        r["redis_bytes_per_presence"] - \
                        r["redis_log_bytes_per_conn"]
        return r
    finally:
        srv.stop()


def row_churn(build, srv, redis, snapshot=False, session_only=False):
    """Join/leave throughput: connect, subscribe, close, by CHURN_SLOTS
    clients for DURATION_S; with Redis, redis-server's CPU per cycle.
    presenced's joins ask for no member list ("snapshot": false), as a
    Centrifugo subscribe answers none; snapshot=True: the default join,
    answered by the channel's members (presenced only: "churn_snap").
    session_only=True: connect and close, nothing joined or subscribed
    ("churn_session"): what the session itself costs Redis per cycle."""
    c0 = redis.cpu_s() if redis else 0
    kw = {} if snapshot or srv.kind == "centrifugo" else {"snapshot": 0}
    if session_only:
        kw = {"session_only": 1}
    r = run_load(build, srv, "churn", conns=CHURN_SLOTS,
                 duration_s=DURATION_S, max_s=DURATION_S + 30, **kw)
    if redis and r.get("cycles"):
        cpu_us = (redis.cpu_s() - c0) * 1e6
        if session_only:
            r["redis_cpu_us_per_cycle"] = cpu_us / r["cycles"]
        else:
            # a cycle is one join and one leave: two presence operations
            r["redis_cpu_us_per_presence_op"] = cpu_us / (2 * r["cycles"])
    return r


def sessions_apart(out):
    """Each round's join/leave CPU with that round's session-alone cycle
    taken off (half of it a join or a leave): a join's and a leave's own
    Redis CPU. presenced keeps each session and its user in Redis (the
    connect and the close are writes there); Centrifugo's connect and close
    write nothing there, so its figure barely moves. The two runs of a
    round were neighbours in time."""
    for kind in ("presenced", "centrifugo"):
        for x, b in zip(out["churn"][kind], out["churn_session"][kind]):
            op = x.get("redis_cpu_us_per_presence_op")
            cyc = b.get("redis_cpu_us_per_cycle")
            if op is not None and cyc is not None:
                x["redis_cpu_us_per_presence_op_sessions_apart"] = \
                    op - cyc / 2


def row_fanout(build, srv):
    return run_load(build, srv, "fanout", conns=FANOUT_MEMBERS + 1,
                    duration_s=DURATION_S, warm_s=2, max_s=DURATION_S + 60)


def run_load(build, srv, scenario, **kw):
    p = subprocess.run(load_argv(build, srv, scenario, **kw),
                       capture_output=True, text=True,
                       timeout=float(kw.get("max_s", 120)) + 30)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"load generator failed ({p.returncode}): "
                           f"{p.stderr[-2000:]}")
    res = json.loads(lines[-1])
    res["loadavg"] = bench.loadavg()
    return res


def row_list(build, mk):
    """Presence list latency at LIST_MEMBERS members, over HTTP."""
    srv = mk()
    try:
        if srv.kind == "centrifugo":
            kw = dict(watch=0, channel_ns="ls")

            def one():
                return srv.presence_list("ls:u0000000")
        else:
            # 10,000 sessions of one user, listed whole: a presenced channel
            # of 10,000 users built over WebSockets would deliver every join
            # to every member (50 M frames; presenced has no channel kind
            # without join/leave, Centrifugo's "ls"), and its member list
            # pages at 1,000
            kw = dict(one_user=1)

            def one():
                return presenced_list(srv, "u0000000")

        def during():
            samples = [one() for _ in range(LIST_REQUESTS)]
            ms = sorted(s[0] for s in samples)
            return {"requests": LIST_REQUESTS, "members": samples[-1][1],
                    "bytes": samples[-1][2],
                    "p50_ms": statistics.median(ms),
                    "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
                    "max_ms": ms[-1]}
        r = held(build, srv, LIST_MEMBERS, during, **kw) or {}
        r["loadavg"] = bench.loadavg()
        return r
    finally:
        srv.stop()


def note(what, x, *figures):
    """One progress line: the figures a run has, and the load average."""
    got = [f"{x[k]:,.1f} {unit}" for k, unit in figures if k in x]
    log(f"{what}: {', '.join(got) or 'no figure'} (load {x['loadavg'][0]:.1f})")


def variant(build, exe, store, rounds):
    """Every row, interleaved by round, on one store (memory or redis)."""
    redis = Redis() if store == "redis" else None
    out = {k: {"presenced": [], "centrifugo": []}
           for k in ("idle", "churn", "churn_snap", "churn_session", "fanout",
                     "list")}
    mks = {"presenced": lambda: presenced(build, redis),
           "centrifugo": lambda: Centrifugo(exe, redis).start()}
    order = lambda r: ("presenced", "centrifugo") if r % 2 == 0 else (
        "centrifugo", "presenced")
    try:
        for r in range(rounds):
            for kind in order(r):
                if redis:
                    redis.cmd("FLUSHALL")
                x = row_idle(build, mks[kind], redis)
                out["idle"][kind].append(x)
                note(f"{store} idle {kind} #{r+1}", x,
                     ("rss_per_conn_bytes", "B RSS/conn"),
                     ("redis_bytes_per_presence", "B in Redis/conn"))
            for kind in order(r):
                if redis:
                    redis.cmd("FLUSHALL")
                srv = mks[kind]()
                try:
                    x = row_churn(build, srv, redis)
                    out["churn"][kind].append(x)
                    note(f"{store} join/leave {kind} #{r+1}", x,
                         ("cycles_per_s", "cycles/s"),
                         ("redis_cpu_us_per_presence_op",
                          "us Redis CPU per join or leave"))
                    if kind == "presenced":
                        # the same with each join answered by its
                        # members (what Centrifugo's subscribe has not)
                        if redis:
                            srv.stop()
                            redis.cmd("FLUSHALL")
                            srv = mks[kind]()
                        x = row_churn(build, srv, redis, snapshot=True)
                        out["churn_snap"][kind].append(x)
                        note(f"{store} join/leave with snapshots {kind} "
                             f"#{r+1}", x, ("cycles_per_s", "cycles/s"),
                             ("redis_cpu_us_per_presence_op",
                              "us Redis CPU per join or leave"))
                    if store == "memory":
                        srv.wait_drained()
                        x = row_fanout(build, srv)
                        out["fanout"][kind].append(x)
                        d = x.get("join_to_member_ms", {})
                        log(f"{store} fanout {kind} #{r+1}: {x.get('joins')} "
                            f"joins, p50 {d.get('p50')} p99 {d.get('p99')} ms"
                            f" (load {x['loadavg'][0]:.1f})")
                finally:
                    srv.stop()
            if redis:  # the session alone: a Redis figure
                for kind in order(r):
                    redis.cmd("FLUSHALL")
                    srv = mks[kind]()
                    try:
                        x = row_churn(build, srv, redis, session_only=True)
                        out["churn_session"][kind].append(x)
                        note(f"{store} session alone {kind} #{r+1}", x,
                             ("cycles_per_s", "cycles/s"),
                             ("redis_cpu_us_per_cycle",
                              "us Redis CPU per connect and close"))
                    finally:
                        srv.stop()
            if store == "memory":
                for kind in order(r):
                    x = row_list(build, mks[kind])
                    out["list"][kind].append(x)
                    log(f"{store} list {kind} #{r+1}: {x.get('members')} "
                        f"members, p50 {x.get('p50_ms', -1):.2f} ms "
                        f"(load {x['loadavg'][0]:.1f})")
    finally:
        if redis:
            redis.stop()
    if redis:
        sessions_apart(out)
    return out


ROWS = [
    # (store, row, key, label, better)
    ("memory", "idle", "rss_per_conn_bytes", "RSS per idle connection, 10k "
     "(B, 10,000 held)", "lower"),
    ("memory", "churn", "cycles_per_s", "join+leave cycles/s (200 clients)",
     "higher"),
    ("memory", "fanout", "join_to_member_ms.p50", "join to member p50, 1k members "
     "(ms)", "lower"),
    ("memory", "fanout", "join_to_member_ms.p99", "join to member p99, 1k members "
     "(ms)", "lower"),
    ("memory", "fanout", "joins_per_s", "joins/s seen by 1k members (all of them)",
     "higher"),
    ("memory", "list", "p50_ms", "presence list of 10k, p50 (ms)", "lower"),
    ("memory", "list", "p99_ms", "presence list of 10k, p99 (ms)", "lower"),
    ("redis", "idle", "rss_per_conn_bytes", "Redis: RSS per idle connection "
     "(B, 10,000 held)", "lower"),
    ("redis", "idle", "redis_bytes_per_presence", "Redis: bytes in Redis per conn "
     "(B, 10,000 held)", "lower"),
    # the same without presenced's log (a cost per event, bounded by
    # --log-capacity; Centrifugo keeps none): what each connection holds
    ("redis", "idle", "redis_bytes_per_presence_without_log", "Redis: the same, "
     "presenced's log apart (B)", "lower"),
    ("redis", "churn", "cycles_per_s", "Redis: join+leave cycles/s",
     "higher"),
    ("redis", "churn", "redis_cpu_us_per_presence_op", "Redis: CPU us per join/leave "
     "(redis-server)", "lower"),
    # the same with each side's session-alone cycle (connect, close) taken
    # off: the joins' and leaves' own work; presenced's sessions and users,
    # which Centrifugo does not keep in Redis, apart (sessions_apart)
    ("redis", "churn", "redis_cpu_us_per_presence_op_sessions_apart",
     "Redis: CPU us per join/leave, the sessions apart", "lower"),
    ("redis", "churn_session", "redis_cpu_us_per_cycle", "Redis: CPU us per "
     "session alone (connect, close)", "lower"),
    # presenced alone: each join answered by the channel's members
    ("memory", "churn_snap", "cycles_per_s", "cycles/s, with snapshots "
     "(presenced only)", "higher"),
    ("redis", "churn_snap", "cycles_per_s", "Redis: cycles/s, with snapshots "
     "(presenced only)", "higher"),
    ("redis", "churn_snap", "redis_cpu_us_per_presence_op", "Redis: CPU us, "
     "with snapshots (presenced only)", "lower"),
]


def summarise(res):
    rows = []
    for store, row, key, label, better in ROWS:
        v = res.get(store, {}).get(row)
        if not v:
            continue
        p = bench.spread(v["presenced"], key)
        c = bench.spread(v["centrifugo"], key)
        pm, cm = (p or {}).get("median"), (c or {}).get("median")
        ratio = round(pm / cm, 3) if pm and cm else None
        ahead = None
        if pm is not None and cm is not None:
            ahead = pm > cm if better == "higher" else pm < cm
        rows.append({"store": store, "row": row, "key": key, "figure": label,
                     "better": better, "presenced": p, "centrifugo": c,
                     "ratio": ratio, "presenced_ahead": ahead})
    return rows


def fmt(s):
    if not s:
        return "n/a"
    f = (lambda x: f"{x:,.2f}") if abs(s["median"]) < 100 else (
        lambda x: f"{x:,.0f}")
    return f"{f(s['median'])} [{f(s['min'])}..{f(s['max'])}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(bench.ROOT,
                                                    "build-bench"))
    ap.add_argument("--out", default=os.path.join(bench.HERE, "results"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default="memory,redis")
    args = ap.parse_args()
    exe = centrifugo_binary()
    version = subprocess.run([exe, "version"], capture_output=True,
                             text=True).stdout.strip()
    bench.raise_nofile(200000)
    res = {"date": datetime.date.today().isoformat(),
           "started": datetime.datetime.now().isoformat(timespec="seconds"),
           "centrifugo": {"module": CENTRIFUGO_MODULE, "version": version},
           "presenced_build": bench.build_info(args.build),
           "machine": {"nproc": os.cpu_count(),
                       "loadavg_start": bench.loadavg(),
                       "nofile_hard_limit": bench.nofile_hard()},
           "rounds": args.rounds}
    for store in args.only.split(","):
        res[store] = variant(args.build, exe, store, args.rounds)
    res["machine"]["loadavg_end"] = bench.loadavg()
    res["summary"] = summarise(res)
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, f"{res['date']}-centrifugo.json")
    if os.path.exists(out):  # an earlier run's (perhaps committed): kept
        out = os.path.join(args.out, f"{res['date']}-"
                           f"{datetime.datetime.now():%H%M}-centrifugo.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    la = res["machine"]["loadavg_start"][0], res["machine"]["loadavg_end"][0]
    print(f"\npresenced vs Centrifugo ({CENTRIFUGO_MODULE}), medians "
          f"[min..max] of {args.rounds} interleaved rounds, load "
          f"{la[0]:.1f} -> {la[1]:.1f}")
    for r in res["summary"]:
        verdict = {True: "presenced ahead", False: "CENTRIFUGO AHEAD",
                   None: "n/a"}[r["presenced_ahead"]]
        print(f"  {r['figure']:<46} presenced {fmt(r['presenced']):<28} "
              f"centrifugo {fmt(r['centrifugo']):<28} ratio {r['ratio']}  "
              f"{verdict}")
    svg = out[:-5] + ".svg"
    subprocess.run([sys.executable, os.path.join(HERE, "chart.py"), out,
                    svg], check=False)
    log(f"wrote {out} and {svg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
