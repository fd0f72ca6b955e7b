#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/run.py: every benchmark of presenced, side by side with its baselines.

`make bench` runs this after building build-bench (RelWithDebInfo). It runs
bench_engine (the core against its bare table), then each load scenario of
bench/load against a presenced it starts (memory store) and against
bench/echo (the network baseline), repeated, and writes
bench/results/<date>.json and an SVG chart (bench/chart.py).

Every comparison is interleaved: round r runs presenced then echo, round
r+1 echo then presenced (A B, B A, ...), so a neighbour's burst on this
shared machine lands on both sides alike; each figure is reported as
min / median / max of its runs, and a ratio is the ratio of the medians
of the same run. The load average is printed beside every run.

`make soak` runs `run.py --soak`: a 10-minute churn against one presenced with
its RSS sampled, written to bench/results/<date>-soak.json. `make soak-redis`
runs `run.py --soak --soak-store redis`: the mixed soak of two presenced on
one redis-server (channels, subscriptions, settings, an event stream),
written to bench/results/<date>-soak-redis.json.

Every process it starts is stopped by its pid. Traffic stays on 127.0.0.0/8.
Sizes fit the 2-core machine in well under 15 minutes; BENCH_REPEATS and the
constants below change them.
"""
import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECRET = "bench-secret-0123456789-abcdefghijkl"
API_KEY = "bench-key-0123456789-abcdefghijklmnop"

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
QUICK = False  # --quick: one short round of everything (the smoke test)
# Whether bench/echo writes a read's frames in one write, as presenced
# writes a connection's frames of one loop turn (the default since
# 2026-12-04 19:30: like with like), or one write per frame
# (--echo-per-frame, the baseline issue 21 was first measured against,
# which makes more syscalls than presenced and flatters it: flips 1.04
# against it, 0.70-0.73 against the coalescing echo on the same host).
ECHO_COALESCE = True
# Whether bench/echo answers with frames of presenced's sizes (--same-frames:
# a status change with a frame the size of the watcher's `presence` change,
# ~270 bytes, a subscribe with one the size of the snapshot; the default
# since 2026-12-06 21:40), or echoes what it got (--echo-own-frames: the
# ~35-byte status frame back, ~7.7x fewer bytes a change than presenced
# sends, the baseline the figures before were measured against).
ECHO_SAME_FRAMES = True
# With them, whether the echo answers a status change on the watcher's
# connection, as presenced does (presence_echo --relay, presence_load
# --relay 1: the generator names each connection's place in its ring; the
# default since 2026-12-06 21:58), or back on the socket it came in on
# (--echo-no-relay): one socket a change instead of two, ~0.3 us less of
# the kernel's a change on this host.
ECHO_RELAY = True
# Whether the load generator sends the flips one read of completions owes in
# one write (presence_load --batch 1, the default since 2026-12-04 19:30),
# or one write per flip (--loadgen-per-flip, the method of the figures
# before 2026-12-04 04:30). With one write per flip the generator, not the
# server, limits the flip on this machine (about 45,000 changes/s against
# 95,000-110,000 batched).
LOADGEN_BATCH = True
IDLE_CONNS = 10000       # issue 3: 10,000 idle connections
# Seconds of status flips (10 connections) each server gets before the idle
# storm, so that the idle figures are a running server's (--fresh-idle: 0,
# a server that has done nothing). presenced's transition log fills its
# ring (--log-capacity events: ~17 MB at the default, bounded) over its
# first ~170,000 events; on a fresh server the storm's 20,000 events fill
# part of it and the RSS per connection counted ~290 B of log pages
# (docs/benchmarks-journal.md, "A running server, medians of the channel..."). Four
# seconds are ~700,000 flips here, several laps; echo gets the same flips.
IDLE_WARM_S = 4.0
IDLE_WARM_CONNS = 10
SCALE_CONNS = 100000     # issue 7: 100,000 concurrent idle sessions
FLIP_CONNS = 1000        # issue 3: 1,000 connections flipping
FLIP_WINDOW = 4          # changes in flight per connection
# The flip's rounds, at least (not with --quick): its rounds' ratios spread
# 0.57-0.99 on this host within minutes, so that three or five of them can
# land on either side of the target's line (2026-12-06 22:01: 0.929 by the
# ratio of five medians, 0.735 by the median of those rounds' ratios); ten
# agreed within 0.01 (22:03).
FLIP_MIN_ROUNDS = 10
LAT_RATE = 10000         # issue 3: p99 at 10,000 changes/s
CHURN_SLOTS = 200
RECONNECT_CONNS = 10000  # issue 7: 10,000 reconnects/s after a restart
RECONNECT_RATE = 10000
DURATION_S = 8


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr,
          flush=True)


def free_port():
    """A free loopback port below the ephemeral range (32768-60999), where no
    outgoing connection can take it between this pick and the server's bind
    (tests/integration/harness.py, free_port)."""
    rnd = random.SystemRandom()
    for _ in range(200):
        port = rnd.randrange(23000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("free_port: no free port in 23000-29999")


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def nofile_hard():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def raise_nofile(want):
    """As many descriptors as asked, or the hard limit: returns what we got
    and, when short, why (raising the hard limit needs CAP_SYS_RESOURCE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
        return want, None
    except (ValueError, OSError) as e:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard, (f"cannot raise RLIMIT_NOFILE to {want} (hard limit "
                      f"{hard}; needs CAP_SYS_RESOURCE): {e}")


def listen_overflows():
    """TcpExtListenOverflows and ListenDrops, absolute, without touching
    nstat's history file (-s)."""
    out = subprocess.run(["nstat", "-asz", "TcpExtListenOverflows",
                          "TcpExtListenDrops"], capture_output=True,
                         text=True).stdout
    vals = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("TcpExt"):
            vals[parts[0]] = int(parts[1])
    return vals


def http_get(port, path, timeout=2):
    # The API key: /metrics needs it (docs/security.md).
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": "Bearer " + API_KEY})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def metrics(port):
    out = {}
    try:
        for line in http_get(port, "/metrics").splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
    except OSError:
        pass
    return out


def wait_listening(proc, port, what, logpath, timeout=10):
    """Until a server started as proc accepts on 127.0.0.1:port."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited at start: see {logpath}")
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


class Server:
    """presenced or bench/echo, started with as many descriptors as the
    machine allows, stopped by pid."""

    def __init__(self, build, kind, port, nofile=200000, extra=()):
        self.kind, self.port, self.build = kind, port, build
        self.nofile, self.extra = nofile, list(extra)
        self.proc = None
        self.limit_note = None

    def argv(self):
        if self.kind == "echo":
            return [f"{self.build}/bench/presence_echo", "--listen",
                    f"127.0.0.1:{self.port}"] + (
                        ["--coalesce"] if ECHO_COALESCE else []) + (
                        ["--same-frames"] if ECHO_SAME_FRAMES else []) + (
                        ["--relay"] if ECHO_SAME_FRAMES and ECHO_RELAY
                        else [])
        return [f"{self.build}/presenced", "--listen", f"127.0.0.1:{self.port}",
                "--jwt-secret", SECRET, "--api-key", API_KEY,
                "--max-connections", "200000",
                # The figures are the server's, not its per-client limits.
                "--max-msgs-per-sec", "1000000",
                # Every transition emitted at once, as in the figures taken
                # before the default offline grace became 10 s.
                "--offline-grace-ms", "0",
                "--log-level", "warn"] + self.extra

    def start(self):
        got = {}

        def pre():
            n, note = raise_nofile(self.nofile)
            got["n"] = n
        # The limit is raised in the child; compute the note here as well.
        n, note = self.nofile, None
        hard = nofile_hard()
        if hard < self.nofile:
            n, note = hard, (f"{self.kind}: RLIMIT_NOFILE hard limit is {hard}"
                             f", below the {self.nofile} asked; raising it "
                             "needs CAP_SYS_RESOURCE (not granted here)")
        self.limit_note, self.fd_limit = note, n
        logf = open(f"/tmp/bench-{self.kind}-{self.port}.log", "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=logf, stderr=logf,
                                     preexec_fn=pre)
        wait_listening(self.proc, self.port, self.kind,
                       f"/tmp/bench-{self.kind}-{self.port}.log")
        return self

    @property
    def pid(self):
        return self.proc.pid

    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def stop(self, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def wait_drained(self, timeout=20):
        """The previous run's clients are gone (presenced counts them)."""
        if self.kind == "echo":
            time.sleep(0.5)
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = metrics(self.port)
            if m.get("presenced_websocket_connections", 1) == 0:
                return
            time.sleep(0.2)
        log(f"warning: presenced still holds "
            f"{m.get('presenced_websocket_connections')} connections")


def run_load(build, srv, scenario, **kw):
    argv = [f"{build}/bench/presence_load", "--scenario", scenario,
            "--target", f"127.0.0.1:{srv.port}",
            "--mode", srv.kind if srv.kind in ("echo", "centrifugo")
            else "presenced",
            "--secret", SECRET, "--pid", str(srv.pid)]
    if srv.kind == "echo" and ECHO_SAME_FRAMES and ECHO_RELAY:
        argv += ["--relay", "1"]
    for k, v in kw.items():
        argv += ["--" + k.replace("_", "-"), str(v)]
    max_s = float(kw.get("max_s", 120))
    p = subprocess.run(argv, capture_output=True, text=True,
                       timeout=max_s + 30)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"load generator failed ({p.returncode}): "
                           f"{p.stderr[-2000:]}")
    res = json.loads(lines[-1])
    res["loadavg"] = loadavg()
    return res


KINDS = ("presenced", "echo")


def order(r):
    """Round r's order: A B, then B A, then A B ..."""
    return KINDS if r % 2 == 0 else KINDS[::-1]


def values_of(runs, key):
    vals = []
    for r in runs:
        v = r
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if isinstance(v, (int, float)) and v >= 0:
            vals.append(v)
    return vals


def spread(runs, key):
    """min / median / max of a figure over the runs (None when absent)."""
    v = values_of(runs, key)
    if not v:
        return None
    return {"min": min(v), "median": statistics.median(v), "max": max(v),
            "n": len(v)}


def median_of(runs, key):
    vals = values_of(runs, key)
    return statistics.median(vals) if vals else None


# ---- scenarios ------------------------------------------------------------

def warm_server(build, srv):
    """IDLE_WARM_S seconds of flips on IDLE_WARM_CONNS connections, then
    the server drained: what it did, or None (IDLE_WARM_S 0)."""
    if IDLE_WARM_S <= 0:
        return None
    w = run_load(build, srv, "flip", conns=IDLE_WARM_CONNS,
                 duration_s=IDLE_WARM_S, warm_s=0, max_s=IDLE_WARM_S + 30)
    srv.wait_drained()
    time.sleep(0.5)
    return {"flip_s": IDLE_WARM_S, "conns": IDLE_WARM_CONNS,
            "changes": w.get("changes"),
            "changes_per_s": w.get("changes_per_s"),
            "rss_kb_after": srv.rss_kb()}


def idle_once(build, kind, conns, i=0, hold_s=3, extra=()):
    """Connect storm then idle hold, on a new server that has only run
    IDLE_WARM_S seconds of flips on IDLE_WARM_CONNS connections (memory a
    server has freed stays in its RSS and is reused, so the warm-up uses
    few connections; only the storm's own fill is measured). extra: more
    flags for presenced."""
    srv = Server(build, kind, free_port(), extra=extra).start()
    try:
        time.sleep(0.5)
        warm = warm_server(build, srv)
        r = run_load(build, srv, "idle", conns=conns, hold_s=hold_s,
                     concurrency=256, max_s=120)
        r["server_warm_up"] = warm
        if srv.limit_note:
            r["server_limit_note"] = srv.limit_note
        r["server_fd_limit"] = srv.fd_limit
        log(f"idle {kind} #{i+1}: {r['ready']}/{r['requested_conns']} in, "
            f"{r['connect_rate_per_s']:.0f}/s, "
            f"{r.get('rss_per_conn_bytes', -1):.0f} B/conn "
            f"(load {r['loadavg'][0]:.1f})")
        return r
    finally:
        srv.stop()


def scenario_idle(build, kind, conns, repeats, hold_s=3):
    return [idle_once(build, kind, conns, i, hold_s) for i in range(repeats)]


def interleaved_idle(build, conns, repeats):
    out = {k: [] for k in KINDS}
    for r in range(repeats):
        for kind in order(r):
            out[kind].append(idle_once(build, kind, conns, r))
    return out


def scenario_once(build, srv, scenario, i=0, **kw):
    srv.wait_drained()
    r = run_load(build, srv, scenario, **kw)
    key = {"flip": "changes_per_s", "churn": "cycles_per_s",
           "latency": "latency_ms"}[scenario]
    v = r.get(key)
    if isinstance(v, dict):
        v = f"p50 {v['p50']:.2f} ms p99 {v['p99']:.2f} ms"
    log(f"{scenario} {srv.kind} #{i+1}: {key} {v} "
        f"(load {r['loadavg'][0]:.1f})")
    return r


def scenario_repeat(build, srv, scenario, repeats, **kw):
    return [scenario_once(build, srv, scenario, i, **kw)
            for i in range(repeats)]


def scenario_reconnect(build, kind, repeats):
    """Hold RECONNECT_CONNS sessions, restart the server, and let every
    client come back at RECONNECT_RATE/s; the listen queue must not
    overflow (TcpExtListenOverflows is machine-wide: other tenants count
    too, so a non-zero delta is checked against the refused count)."""
    return [reconnect_once(build, kind, i) for i in range(repeats)]


def reconnect_once(build, kind, i=0):
    if True:
        port = free_port()
        srv = Server(build, kind, port).start()
        argv = [f"{build}/bench/presence_load", "--scenario", "reconnect",
                "--target", f"127.0.0.1:{port}", "--mode",
                "echo" if kind == "echo" else "presenced", "--secret", SECRET,
                "--conns", str(RECONNECT_CONNS), "--rate", str(RECONNECT_RATE),
                "--max-s", "90"]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            if line.strip() != "READY":
                raise RuntimeError(f"reconnect: load generator said {line!r}")
            before = listen_overflows()
            t0 = time.time()
            srv.stop()
            srv.start()
            restart_s = time.time() - t0
            out, err = p.communicate(timeout=120)
            after = listen_overflows()
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            if not lines:
                raise RuntimeError(f"reconnect failed: {err[-2000:]}")
            r = json.loads(lines[-1])
            r["restart_s"] = round(restart_s, 3)
            r["listen_overflows_delta"] = (after.get("TcpExtListenOverflows", 0)
                                           - before.get("TcpExtListenOverflows", 0))
            r["listen_drops_delta"] = (after.get("TcpExtListenDrops", 0)
                                       - before.get("TcpExtListenDrops", 0))
            r["loadavg"] = loadavg()
            log(f"reconnect {kind} #{i+1}: {r['reconnected']} back at "
                f"{r['reconnect_rate_per_s']:.0f}/s, overflows "
                f"+{r['listen_overflows_delta']} (load {r['loadavg'][0]:.1f})")
            return r
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            srv.stop()


@contextlib.contextmanager
def redis_unix():
    """A redis-server of its own on a unix socket in a fresh directory, no
    persistence: yields (socket path, its process), or None when there is no
    redis-server on PATH. Stopped by pid and its directory removed after."""
    redis = shutil.which("redis-server")
    if not redis:
        yield None
        return
    d = tempfile.mkdtemp(prefix="presence-bench-redis-")
    sock = os.path.join(d, "redis.sock")
    rp = subprocess.Popen([redis, "--port", "0", "--unixsocket", sock,
                           "--save", "", "--appendonly", "no", "--dir", d,
                           "--logfile", "redis.log"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while not os.path.exists(sock):
            if time.time() > deadline or rp.poll() is not None:
                raise RuntimeError(f"redis-server did not start (see {d})")
            time.sleep(0.05)
        yield sock, rp
    finally:
        rp.kill()
        rp.wait()
        shutil.rmtree(d, ignore_errors=True)


def build_info(build):
    """How build's presenced was compiled, from its CMake cache: the build
    type, the profile (PRESENCE_PGO: OFF, or USE after scripts/pgo.sh) and
    LTO; {} when there is no cache."""
    keys = {"CMAKE_BUILD_TYPE": "type", "PRESENCE_PGO": "pgo",
            "PRESENCE_LTO": "lto", "CMAKE_C_COMPILER": "cc"}
    out = {}
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                name = k.split(":")[0]
                if name in keys:
                    out[keys[name]] = v
    except OSError:
        pass
    return out


def wait_healthy(srv, timeout=10):
    """Until presenced answers /healthz (on a store: once registered)."""
    deadline = time.time() + timeout
    while True:
        try:
            http_get(srv.port, "/healthz")
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def redis_baseline(build):
    """presenced on the Redis store, end to end: the flip scenario (1,000
    WebSocket connections changing status, every change decided by the
    store's script and delivered back to the subscribers) against one
    presenced with --store on a redis-server this starts (redis_unix),
    beside the same scenario on the embedded store from the main run (ratio
    in the summary). redis-server's CPU share over the runs says whether
    Redis or presenced is the limit."""
    try:
        with redis_unix() as r:
            if r is None:
                log("redis baseline skipped: no redis-server")
                return {"skipped": "no redis-server on PATH"}
            sock, rp = r

            def redis_cpu():
                with open(f"/proc/{rp.pid}/stat") as f:
                    parts = f.read().rpartition(")")[2].split()
                return (int(parts[11]) + int(parts[12])) / \
                    os.sysconf("SC_CLK_TCK")
            # presenced stops before its redis-server does (it leaves the
            # store on the way out).
            srv = Server(build, "presenced", free_port(),
                         extra=["--store", f"unix:{sock}"]).start()
            try:
                wait_healthy(srv)
                c0, t0 = redis_cpu(), time.time()
                runs = scenario_repeat(build, srv, "flip", REPEATS,
                                       conns=FLIP_CONNS, window=FLIP_WINDOW,
                                       duration_s=DURATION_S,
                                       max_s=DURATION_S + 60)
                share = (redis_cpu() - c0) / (time.time() - t0)
            finally:
                srv.stop()
            med = median_of(runs, "changes_per_s")
            log(f"redis baseline: presenced on Redis flips {med} changes/s, "
                f"redis-server at {share:.2f} of a core over the runs")
            return {"store": "redis (unix socket)", "flip": runs,
                    "flip_changes_per_s_median": med,
                    "redis_server_cpu_share": round(share, 2)}
    except Exception as e:  # a failed extra must not lose the whole run
        log(f"redis baseline failed: {e}")
        return {"skipped": f"failed: {e}"}


def redis_store(build):
    """The Redis store's own figures (issues 4 and 21), by
    bench/redis/bench_redis: it starts a redis-server on a unix socket,
    drives 3 presence_t (one thread and loop each) through it and reports
    session operations/s and Redis's CPU and EVALSHA time per operation,
    the Redis time of one unbatched connect (redis-benchmark sending the
    store's script, commandstats), then kills an instance holding 100,000
    sessions and reports the ms from its lease's expiry to the cleanup
    event, the longest Redis command meanwhile and Redis's memory per
    session. Built here when the bench build lacks it (it needs hiredis)."""
    exe = f"{build}/bench/bench_redis"
    subprocess.run(["cmake", "--build", build, "--target", "bench_redis"],
                   capture_output=True)
    if not os.path.exists(exe):
        log("redis store: skipped (no bench_redis: hiredis missing?)")
        return {"skipped": "bench_redis not built"}
    log("redis store: bench_redis (3 instances, redis-benchmark, reaping)")
    p = subprocess.run([exe, "--repeats", str(REPEATS)], capture_output=True,
                       text=True, timeout=1200)
    sys.stderr.write(p.stderr)
    try:
        return json.loads(p.stdout)
    except ValueError:
        return {"skipped": f"bench_redis failed (exit {p.returncode})"}


ENGINE_RUNS = [
    # (name, argv): the figures issue 21's targets name, each from its own
    # invocation because the session/user mix changes the memory figure.
    ("1_per_user_100k", ["--sessions", "100000", "--sessions-per-user", "1",
                         "--runs", "5"]),
    ("1_per_user_1m", ["--sessions", "1000000", "--sessions-per-user", "1",
                       "--runs", "1"]),
    ("4_per_user_1m", ["--sessions", "1000000", "--sessions-per-user", "4",
                       "--runs", "3"]),
]


def engine(build):
    """bench_engine at 1 and 4 sessions per user: connect, status and
    disconnect rates apart, and the heap per session of each mix."""
    out = {}
    for name, args in ENGINE_RUNS:
        path = f"/tmp/bench-engine-{os.getpid()}.json"
        log(f"bench_engine {' '.join(args)} (load {loadavg()[0]:.1f})")
        p = subprocess.run([f"{build}/bench/bench_engine", "--json", path]
                           + args, capture_output=True, text=True,
                           timeout=900)
        sys.stderr.write(p.stdout)
        try:
            with open(path) as f:
                out[name] = json.load(f)
            os.unlink(path)
            out[name]["loadavg"] = loadavg()
        except (OSError, ValueError):
            out[name] = {"error": p.stderr[-1000:]}
    # The chart's figures (all four kinds by handle at 4 per user, beside
    # the bare table).
    four = out.get("4_per_user_1m", {})
    if "ops_per_s" in four:
        out["handle_ops_per_s"] = four["ops_per_s"]["all_by_handle"]["median"]
        out["baseline_table_ops_per_s"] = four["table_ops_per_s"]["all"][
            "median"]
    return out


# Issue 21's targets: (key, label, unit, target, direction). The figures
# come from the summary; "ge" means at least the target, "le" at most.
TARGETS_BENCH = [
    ("engine_connect_1pu_100k", "engine connect creating its user, 1 session "
     "per user, 100 k", "/s", 3e6, "ge"),
    ("engine_bytes_1pu_1m", "engine bytes per session, 1 session per user, "
     "1 M", "B", 160, "le"),
    ("idle_rss_per_conn_10k", "RSS per idle WebSocket, 10,000 connections",
     "B", 1000, "le"),
    ("flip_vs_echo", "status changes/s vs echo doing the same work", "x",
     0.9, "ge"),
    ("storm_vs_echo", "connect storm vs echo", "x", 0.8, "ge"),
    # Issue 14: status that people set, on one core (per CPU-second), at
    # 1 M sessions, 4 per user; the slower of the two kinds.
    ("engine_settings_per_cpu_s", "engine availability and message changes "
     "per CPU-second (the slower)", "/s", 3e6, "ge"),
]


def target_row(key, label, unit, target, direction, value, **extra):
    ok = None if value is None else (
        value >= target if direction == "ge" else value <= target)
    row = {"figure": label, "value": value, "unit": unit, "target": target,
           "direction": direction, "ok": ok}
    row.update(extra)
    return row


def print_targets(title, rows):
    """The issue's table beside what was measured: a miss says MISS."""
    print(f"\n{title}")
    for key, r in rows.items():
        v = r["value"]
        vs = "n/a" if v is None else (f"{v:,.2f}" if abs(v) < 100
                                      else f"{v:,.0f}")
        cmp = ">=" if r["direction"] == "ge" else "<="
        verdict = {True: "ok", False: "MISS", None: "NOT MEASURED"}[r["ok"]]
        note = f"  ({r['note']})" if r.get("note") else ""
        print(f"  {r['figure']:<62} {vs:>12} {r['unit']:<3} target "
              f"{cmp} {r['target']:,}  {verdict}{note}")
    sys.stdout.flush()


def summarise(res):
    """Medians (with min and max) and ratios of medians, the figures
    docs/benchmarks.md quotes, and the issues' targets beside them."""
    s = {}
    sc = res["scenarios"]

    def pair(name, key):
        p = spread(sc.get(name, {}).get("presenced", []), key)
        e = spread(sc.get(name, {}).get("echo", []), key)
        pm = p["median"] if p else None
        em = e["median"] if e else None
        # Round by round (the two runs of a round were neighbours in time):
        # the median of those ratios, a second view of the same run.
        pv = values_of(sc.get(name, {}).get("presenced", []), key)
        ev = values_of(sc.get(name, {}).get("echo", []), key)
        rr = [a / b for a, b in zip(pv, ev) if b] if len(pv) == len(ev) \
            else []
        return {"presenced": pm, "echo": em,
                "presenced_min_max": [p["min"], p["max"]] if p else None,
                "echo_min_max": [e["min"], e["max"]] if e else None,
                "ratio": round(pm / em, 3) if pm and em else None,
                "round_ratios": [round(x, 3) for x in rr],
                "median_round_ratio": (round(statistics.median(rr), 3)
                                       if rr else None)}
    s["connect_storm_per_s"] = pair("idle", "connect_rate_per_s")
    s["connect_storm_per_server_cpu_s"] = pair("idle",
                                               "connects_per_server_cpu_s")
    s["idle_rss_per_conn_bytes"] = pair("idle", "rss_per_conn_bytes")
    s["churn_cycles_per_s"] = pair("churn", "cycles_per_s")
    s["flip_changes_per_s"] = pair("flip", "changes_per_s")
    s["flip_changes_per_server_cpu_s"] = pair("flip",
                                              "changes_per_server_cpu_s")
    s["flip_server_cpu_share"] = pair("flip", "server_cpu_share")
    # The flip's floor: presenced's changes per second of its kernel time
    # alone (its sockets' reads, writes and waits) over the echo's changes
    # per second of all its CPU, the ratio presenced would read if its own
    # code cost nothing. A target above it cannot be reached by presenced's
    # code; only by fewer or cheaper syscalls a change.
    sysp = pair("flip", "changes_per_server_sys_cpu_s")["presenced"]
    cpue = s["flip_changes_per_server_cpu_s"]["echo"]
    s["flip_ratio_if_own_code_free"] = (round(sysp / cpue, 3)
                                        if sysp and cpue else None)
    # The same split per change, in microseconds, on both sides (medians of
    # the runs): the kernel's share (reads, writes, wakeups) and the
    # process's own. On this host the kernel's share of a change reads
    # 1.13-1.17x the echo's with the same bytes sent (--same-frames; the
    # answer goes to another socket than the one read), so it bounds the
    # ratio before presenced's code does.
    s["flip_us_per_change"] = {}
    for k in ("presenced", "echo"):
        runs = [r for r in sc.get("flip", {}).get(k, [])
                if r.get("changes") and r.get("server_sys_cpu_s") is not None]
        if runs:
            s["flip_us_per_change"][k] = {
                "kernel": round(statistics.median(
                    r["server_sys_cpu_s"] / r["changes"] * 1e6
                    for r in runs), 3),
                "own": round(statistics.median(
                    (r["server_cpu_s"] - r["server_sys_cpu_s"]) /
                    r["changes"] * 1e6 for r in runs), 3)}
    for q in ("p50", "p99", "p999"):
        s[f"latency_{q}_ms"] = pair("latency", f"latency_ms.{q}")
    s["latency_achieved_per_s"] = pair("latency", "achieved_per_s")
    s["reconnect_per_s"] = pair("reconnect", "reconnect_rate_per_s")
    s["reconnect_listen_overflows"] = {
        k: max((r.get("listen_overflows_delta", 0)
                for r in sc.get("reconnect", {}).get(k, [])), default=None)
        for k in ("presenced", "echo")}
    s["frames_note"] = (
        "echo gets the same frames: 101 + a welcome-shaped frame, then "
        "snapshot-sized and presence-change-sized answers to the subscribe "
        "and to each status frame (--same-frames)" + (
            ", the latter on the watcher's connection as presenced's "
            "(--relay)" if ECHO_RELAY else "") if ECHO_SAME_FRAMES else
        "echo gets the same frames in: 101 + a welcome-shaped frame, the "
        "client's subscribe echoed in place of the snapshot, each status "
        "frame (~35 B) echoed in place of the subscriber's presence frame "
        "(~270 B) (--echo-own-frames)")
    eng = res.get("engine", {})
    s["engine"] = {}
    for name, _ in ENGINE_RUNS:
        e = eng.get(name, {})
        if "ops_per_s" in e:
            s["engine"][name] = {
                "connect": e["ops_per_s"]["connect"],
                "status_by_handle": e["ops_per_s"]["status_by_handle"],
                "disconnect_by_handle": e["ops_per_s"]["disconnect_by_handle"],
                "table_insert": e["table_ops_per_s"]["insert"],
                "heap_bytes_per_session": e["heap_bytes_per_session"]}
            # Per CPU-second of bench_engine (the wall clock on a shared
            # machine counts the neighbours), when it reports them.
            cpu = e.get("ops_per_cpu_s", {})
            for k in ("connect", "status_by_handle", "disconnect_by_handle",
                      "availability_change", "message_set_clear"):
                if k in cpu:
                    s["engine"][name][k + "_per_cpu_s"] = cpu[k]
    rb = res.get("redis", {})
    if rb.get("flip_changes_per_s_median"):
        mem = s["flip_changes_per_s"]["presenced"]
        red = rb["flip_changes_per_s_median"]
        s["flip_changes_per_s_redis_store"] = {
            "redis": red, "memory": mem,
            "ratio": round(red / mem, 3) if mem else None,
            "redis_server_cpu_share": rb.get("redis_server_cpu_share")}
    rs = res.get("redis_store", {})
    if isinstance(rs, dict) and rs.get("median_ops_per_s"):
        s["redis_store_ops_per_s"] = {
            "store": rs["median_ops_per_s"],
            "redis_cpu_us_per_op": rs.get("median_redis_cpu_us_per_op"),
            "unbatched_connect_us_per_call": rs.get(
                "median_unbatched_connect_us_per_call"),
            "targets_issue21": rs.get("targets")}
    scale = sc.get("scale", {}).get("presenced", [])
    if scale:
        r = scale[0]
        s["scale_idle"] = {"target": SCALE_CONNS, "reached": r.get("ready"),
                           "rss_per_conn_bytes": r.get("rss_per_conn_bytes"),
                           "limit_note": r.get("server_limit_note")}
    # Issue 3 and 7 targets, pass or fail as measured.
    t = {}
    rss = s["idle_rss_per_conn_bytes"]["presenced"]
    t["issue3_idle_10k_rss_le_2KB"] = {"value": rss, "target": 2048,
                                       "ok": rss is not None and rss <= 2048}
    f = s["flip_changes_per_s"]["presenced"]
    t["issue3_flip_ge_50k_per_s"] = {"value": f, "target": 50000,
                                     "ok": f is not None and f >= 50000}
    p99 = s["latency_p99_ms"]["presenced"]
    t["issue3_p99_lt_5ms_at_10k"] = {"value": p99, "target": 5,
                                     "ok": p99 is not None and p99 < 5}
    rc = s["reconnect_per_s"]["presenced"]
    ov = s["reconnect_listen_overflows"]["presenced"]
    t["issue7_reconnect_10k_per_s_no_overflow"] = {
        "value": rc, "overflows": ov, "target": RECONNECT_RATE,
        "ok": rc is not None and rc >= 0.95 * RECONNECT_RATE and ov == 0}
    if "scale_idle" in s:
        t["issue7_100k_idle"] = {"value": s["scale_idle"]["reached"],
                                 "target": SCALE_CONNS,
                                 "ok": (s["scale_idle"]["reached"] or 0)
                                 >= SCALE_CONNS}
    if "redis_store_ops_per_s" in s:
        v = s["redis_store_ops_per_s"]["store"]
        t["issue4_redis_ge_50k_ops_per_s"] = {"value": v, "target": 50000,
                                              "ok": v >= 50000}
    s["targets"] = t
    s["targets_issue21"] = issue21_targets(s)
    return s


def settings_per_cpu_s(e):
    """Issue 14: availability changes and message sets+clears per
    CPU-second at 1 M x 4, the slower of the two medians."""
    c = e.get("4_per_user_1m", {})
    a = c.get("availability_change_per_cpu_s", {}).get("median")
    m = c.get("message_set_clear_per_cpu_s", {}).get("median")
    return None if a is None or m is None else min(a, m)


def issue21_targets(s):
    e = s.get("engine", {})
    fig = {
        "engine_connect_1pu_100k": e.get("1_per_user_100k", {}).get(
            "connect", {}).get("median"),
        "engine_bytes_1pu_1m": e.get("1_per_user_1m", {}).get(
            "heap_bytes_per_session"),
        "idle_rss_per_conn_10k": s["idle_rss_per_conn_bytes"]["presenced"],
        "flip_vs_echo": s["flip_changes_per_s"]["ratio"],
        "storm_vs_echo": s["connect_storm_per_s"]["ratio"],
        "engine_settings_per_cpu_s": settings_per_cpu_s(e),
    }
    e100 = e.get("1_per_user_100k", {})

    def med(d, k):
        v = d.get(k, {}).get("median")
        return None if v is None else f"{v / 1e6:.2f} M"
    notes = {
        # The other session operations beside connect (issue 21: they must
        # not get slower), by handle, wall clock then per CPU-second.
        "engine_connect_1pu_100k": "per CPU-second %s; status %s (%s/CPU-s),"
        " disconnect %s (%s/CPU-s)" % (
            med(e100, "connect_per_cpu_s"), med(e100, "status_by_handle"),
            med(e100, "status_by_handle_per_cpu_s"),
            med(e100, "disconnect_by_handle"),
            med(e100, "disconnect_by_handle_per_cpu_s")),
        "engine_bytes_1pu_1m": "at 4 per user: %s B" % e.get(
            "4_per_user_1m", {}).get("heap_bytes_per_session"),
        "idle_rss_per_conn_10k": "echo %s B" % (
            round(s["idle_rss_per_conn_bytes"]["echo"])
            if s["idle_rss_per_conn_bytes"]["echo"] else None),
        "flip_vs_echo": "per server CPU-second: %s" % s[
            "flip_changes_per_server_cpu_s"]["ratio"] + (
            "; with presenced's own code free: %s" % s[
                "flip_ratio_if_own_code_free"]
            if s.get("flip_ratio_if_own_code_free") else "") + (
            "; us a change, kernel / own code: presenced %s / %s, echo "
            "%s / %s" % (
                s["flip_us_per_change"]["presenced"]["kernel"],
                s["flip_us_per_change"]["presenced"]["own"],
                s["flip_us_per_change"]["echo"]["kernel"],
                s["flip_us_per_change"]["echo"]["own"])
            if len(s.get("flip_us_per_change", {})) == 2 else ""),
        "storm_vs_echo": "per server CPU-second: %s" % s[
            "connect_storm_per_server_cpu_s"]["ratio"],
    }
    return {k: target_row(k, label, unit, tgt, d, fig[k],
                          **({"note": notes[k]} if k in notes and
                             "None" not in notes[k] else {}))
            for k, label, unit, tgt, d in TARGETS_BENCH}


def soak(args):
    build = args.build
    srv = Server(build, "presenced", free_port()).start()
    try:
        log(f"soak: churn of {CHURN_SLOTS} slots for {args.soak_s} s, RSS "
            "every 5 s")
        r = run_load(build, srv, "churn", conns=CHURN_SLOTS,
                     duration_s=args.soak_s, max_s=args.soak_s + 60,
                     rss_interval_s=5)
    finally:
        srv.stop()
    series = r.get("rss_series", [])
    warm = args.soak_warm_s
    after = [kb for t, kb in series if t >= warm]
    base = statistics.median(after[:6]) if len(after) >= 6 else None
    end = statistics.median(after[-6:]) if len(after) >= 6 else None
    growth = (end - base) / base * 100 if base and end else None
    r["warmup_s"] = warm
    r["rss_base_kb"], r["rss_end_kb"] = base, end
    r["rss_growth_pct"] = round(growth, 3) if growth is not None else None
    r["target_growth_pct"] = 2.0
    r["ok"] = growth is not None and growth < 2.0
    date = datetime.date.today().isoformat()
    out = os.path.join(args.out, f"{date}-soak.json")
    with open(out, "w") as f:
        json.dump(r, f, indent=1)
    log(f"soak: {r['cycles']} cycles ({r['cycles_per_s']:.0f}/s), RSS "
        f"{base} -> {end} kB after {warm} s warm-up: {growth:+.2f} % "
        f"({'ok' if r['ok'] else 'OVER 2 %'}); wrote {out}")
    return 0 if r["ok"] else 1


def redis_info_memory(sock):
    """redis-server's used_memory and the log's own bytes (MEMORY USAGE of
    presence:log), through redis-cli on its socket."""
    def cli(*a):
        return subprocess.run(["redis-cli", "-s", sock] + list(a),
                              capture_output=True, text=True,
                              timeout=10).stdout
    used = next((int(ln.split(":")[1]) for ln in cli("INFO", "memory").split()
                 if ln.startswith("used_memory:")), -1)
    try:
        log_b = int(cli("MEMORY", "USAGE", "presence:log", "SAMPLES", "0"))
    except ValueError:
        log_b = 0
    return used, log_b


def http_put(port, path, body, timeout=2):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
        method="PUT", headers={"Authorization": "Bearer " + API_KEY,
                               "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status


def soak_redis(args):
    """--soak --soak-store redis: what a deployment on Redis does all day, for
    --soak-s: two presenced on one redis-server (this script's), 200 slots of
    churn with channels on A (connect, 2 joins, close), 200 of churn with
    subscriptions on B, the same users' availability and status message
    set over the API of each in turn (~10 a second, messages expiring after
    2 s), and an event stream read on A throughout. Sampled every 10 s: both
    daemons' RSS, and redis-server's used_memory less the log (the log is
    bounded by --log-capacity: full after the first seconds). Growth after
    --soak-warm-s: the median of the first six samples against the last
    six, < 2 % for each."""
    import threading
    build = args.build
    with redis_unix() as r:
        if r is None:
            log("soak: no redis-server on PATH")
            return 2
        sock, _ = r
        extra = ["--store", f"unix:{sock}", "--channel-grace-ms", "0"]
        a = Server(build, "presenced", free_port(), extra=extra).start()
        b = Server(build, "presenced", free_port(), extra=extra).start()
        stop = threading.Event()
        threads, results, errors = [], {}, {"settings": 0, "settings_ok": 0}
        sse = None
        try:
            wait_healthy(a)
            wait_healthy(b)
            sse = subprocess.Popen(
                ["curl", "-sN", "-H", "Authorization: Bearer " + API_KEY,
                 f"http://127.0.0.1:{a.port}/v1/events"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def load(name, srv, **kw):
                results[name] = run_load(build, srv, "churn",
                                         conns=CHURN_SLOTS,
                                         duration_s=args.soak_s,
                                         max_s=args.soak_s + 60, **kw)

            def settings():
                i = 0
                avail = ("auto", "dnd", "away", "invisible")
                while not stop.is_set():
                    srv = (a, b)[i % 2]
                    u = f"u{i % CHURN_SLOTS}"
                    try:
                        http_put(srv.port, f"/v1/users/{u}/availability",
                                 {"availability": avail[i % 4]})
                        http_put(srv.port, f"/v1/users/{u}/message",
                                 {"text": f"m{i}", "expires_in": 2})
                        errors["settings_ok"] += 2
                    except OSError:
                        errors["settings"] += 1
                    i += 1
                    stop.wait(0.1)
            threads = [threading.Thread(target=load, args=("A", a),
                                        kwargs={"channels": 1}),
                       threading.Thread(target=load, args=("B", b)),
                       threading.Thread(target=settings)]
            for t in threads:
                t.start()
            log(f"soak (redis): two presenced, churn with channels on A and "
                f"with subscriptions on B, settings and an event stream, "
                f"{args.soak_s} s, sampled every 10 s")
            series, t0 = [], time.time()
            while threads[0].is_alive() or threads[1].is_alive():
                used, log_b = redis_info_memory(sock)
                series.append([round(time.time() - t0, 1), a.rss_kb(),
                               b.rss_kb(), used, log_b])
                time.sleep(10)
        finally:
            stop.set()
            for t in threads:
                t.join()
            if sse:
                sse.kill()
                sse.wait()
            a.stop()
            b.stop()
    warm = args.soak_warm_s
    after = [x for x in series if x[0] >= warm]
    out = {"store": "redis", "duration_s": args.soak_s, "warmup_s": warm,
           "series": series, "series_columns": ["s", "rss_a_kb", "rss_b_kb",
                                                "redis_used_memory",
                                                "redis_log_bytes"],
           "load": results, "settings": errors, "target_growth_pct": 2.0,
           "growth_pct": {}}
    ok = len(after) >= 12
    for name, col in (("rss_a", 1), ("rss_b", 2), ("redis_without_log", None)):
        vals = [x[3] - x[4] if col is None else x[col] for x in after]
        if len(vals) < 12:
            continue
        base, end = statistics.median(vals[:6]), statistics.median(vals[-6:])
        g = round((end - base) / base * 100, 3)
        out["growth_pct"][name] = {"base": base, "end": end, "pct": g}
        ok = ok and g < 2.0
    for k in ("A", "B"):
        r = results.get(k, {})
        bad = sum(r.get(f, 0) for f in ("failed", "connect_errors",
                                        "upgrade_errors", "error_messages",
                                        "server_closes", "protocol_errors",
                                        "write_errors"))
        out.setdefault("load_errors", {})[k] = bad
        ok = ok and bad == 0 and bool(r)
    out["ok"] = ok
    date = datetime.date.today().isoformat()
    path = os.path.join(args.out, f"{date}-soak-redis.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    g = out["growth_pct"]
    log("soak (redis): cycles A %s (%s/s), B %s (%s/s); growth after %s s: "
        "RSS A %s %%, RSS B %s %%, Redis without the log %s %%; settings "
        "%d ok, %d failed (%s); wrote %s" % (
            results.get("A", {}).get("cycles"),
            results.get("A", {}).get("cycles_per_s"),
            results.get("B", {}).get("cycles"),
            results.get("B", {}).get("cycles_per_s"), warm,
            g.get("rss_a", {}).get("pct"), g.get("rss_b", {}).get("pct"),
            g.get("redis_without_log", {}).get("pct"), errors["settings_ok"],
            errors["settings"], "ok" if ok else "OVER 2 % or errors", path))
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--soak", action="store_true")
    ap.add_argument("--soak-s", type=float, default=600)
    ap.add_argument("--soak-warm-s", type=float, default=60)
    ap.add_argument("--soak-store", choices=("memory", "redis"),
                    default="memory",
                    help="redis: the mixed soak of two presenced on one "
                    "redis-server (soak_redis)")
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="one repeat of each, short runs (a smoke test)")
    ap.add_argument("--only", default="",
                    help="comma-separated parts to run (engine, idle, churn, "
                    "flip, latency, reconnect, scale, redis, redis_store); "
                    "default all")
    ap.add_argument("--echo-coalesce", action="store_true",
                    help="(the default) bench/echo writes each read's answers "
                    "in one write, as presenced coalesces a connection's "
                    "frames per loop turn")
    ap.add_argument("--echo-per-frame", action="store_true",
                    help="bench/echo writes one write per frame (more "
                    "syscalls than presenced: the older, flattering baseline)")
    ap.add_argument("--echo-own-frames", action="store_true",
                    help="bench/echo sends back the frames it got (a status "
                    "change's ~35 bytes against presenced's ~270: the "
                    "baseline before 2026-12-06 21:40); default: frames of "
                    "presenced's sizes (presence_echo --same-frames)")
    ap.add_argument("--echo-no-relay", action="store_true",
                    help="bench/echo answers a status change on the socket "
                    "it came in on; default: on the watcher's connection, "
                    "as presenced does (presence_echo --relay)")
    ap.add_argument("--loadgen-batch", action="store_true",
                    help="(the default) the flip's load generator sends the "
                    "flips one read owes in one write")
    ap.add_argument("--loadgen-per-flip", action="store_true",
                    help="one write per flip (limits the flip before the "
                    "server does)")
    ap.add_argument("--repeats", type=int, default=0,
                    help="rounds of each comparison (default BENCH_REPEATS "
                    "or 3)")
    ap.add_argument("--fresh-idle", action="store_true",
                    help="the idle storm on a server that has done nothing "
                    "(the method before 2026-12-04 18:30); default: after "
                    "IDLE_WARM_S seconds of flips on %d connections"
                    % IDLE_WARM_CONNS)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.soak:
        return soak_redis(args) if args.soak_store == "redis" else soak(args)
    global REPEATS, DURATION_S, ECHO_COALESCE, LOADGEN_BATCH, IDLE_WARM_S
    global ECHO_SAME_FRAMES, ECHO_RELAY, QUICK
    ECHO_COALESCE = not args.echo_per_frame
    ECHO_SAME_FRAMES = not args.echo_own_frames
    ECHO_RELAY = not args.echo_no_relay
    if args.fresh_idle:
        IDLE_WARM_S = 0
    LOADGEN_BATCH = not args.loadgen_per_flip
    if args.quick:
        REPEATS, DURATION_S, QUICK = 1, 3, True
    if args.repeats:
        REPEATS = args.repeats
    only = set(filter(None, args.only.split(",")))

    def want(part):
        return not only or part in only
    build = args.build
    t_start = time.time()
    res = {"date": datetime.date.today().isoformat(),
           "started": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": {"nproc": os.cpu_count(), "kernel": platform.release(),
                       "loadavg_start": loadavg(),
                       "nofile_hard_limit": nofile_hard(),
                       "somaxconn": int(open(
                           "/proc/sys/net/core/somaxconn").read()),
                       "tcp_max_syn_backlog": int(open(
                           "/proc/sys/net/ipv4/tcp_max_syn_backlog").read())},
           "repeats": REPEATS, "scenarios": {},
           "presenced_build": build_info(build),
           "idle_server": (f"after {IDLE_WARM_S:g} s of flips on "
                           f"{IDLE_WARM_CONNS} connections" if IDLE_WARM_S
                           else "fresh (--fresh-idle)"),
           "echo_writes": ("one write per read" if ECHO_COALESCE
                           else "one write per frame (--echo-per-frame)"),
           "echo_frames": ("presenced's sizes (--same-frames)"
                           if ECHO_SAME_FRAMES else
                           "the frames it got (--echo-own-frames)") + (
                               ", a change answered on the watcher's "
                               "connection (--relay)"
                               if ECHO_SAME_FRAMES and ECHO_RELAY else ""),
           "loadgen_flip_writes": ("one write per read's flips"
                                   if LOADGEN_BATCH else
                                   "one write per flip (--loadgen-per-flip)")}
    got, note = raise_nofile(SCALE_CONNS + 1000)
    if note:
        log("note: " + note)
        res["machine"]["nofile_note"] = note
    res["only"] = sorted(only) or "all"
    b = res["presenced_build"]
    log(f"presenced from {build}: {b.get('type', '?')}, LTO "
        f"{b.get('lto', '?')}, profile (PRESENCE_PGO) {b.get('pgo', 'OFF')}")
    res["engine"] = ({"skipped": True} if args.skip_engine or not
                     want("engine") else engine(build))
    sc = res["scenarios"]

    # Interleaved: each round runs both servers, the order rotated.
    if want("idle"):
        sc["idle"] = interleaved_idle(build, IDLE_CONNS, REPEATS)
    # The servers only for the scenarios that use them (`--only engine`
    # needs no presenced binary).
    srvs = ({k: Server(build, k, free_port()).start() for k in KINDS}
            if any(want(n) for n in ("churn", "flip", "latency")) else {})
    try:
        plan = [("churn", dict(conns=CHURN_SLOTS, duration_s=DURATION_S,
                               max_s=DURATION_S + 30)),
                ("flip", dict(conns=FLIP_CONNS, window=FLIP_WINDOW,
                              batch=int(LOADGEN_BATCH),
                              duration_s=DURATION_S, max_s=DURATION_S + 60)),
                ("latency", dict(conns=FLIP_CONNS, rate=LAT_RATE,
                                 duration_s=DURATION_S,
                                 max_s=DURATION_S + 60))]
        for name, kw in plan:
            if not want(name):
                continue
            sc[name] = {k: [] for k in KINDS}
            rounds = REPEATS
            if name == "flip" and not QUICK:
                rounds = max(REPEATS, FLIP_MIN_ROUNDS)
            for r in range(rounds):
                for kind in order(r):
                    sc[name][kind].append(
                        scenario_once(build, srvs[kind], name, r, **kw))
        if srvs:
            srvs["presenced"].wait_drained()
        res["presenced_metrics_after"] = {} if not srvs else {
            k: v for k, v in metrics(srvs["presenced"].port).items()
            if k.startswith("presenced_events_total")
            or k.startswith("presenced_errors_total")}
    finally:
        for srv in srvs.values():
            srv.stop()
    if want("reconnect"):
        sc["reconnect"] = {k: [] for k in KINDS}
        for r in range(REPEATS):
            for kind in order(r):
                sc["reconnect"][kind].append(reconnect_once(build, kind, r))

    # Issue 7's 100,000 idle sessions: as many as this machine's descriptor
    # limit lets one presenced hold (the limit is reported when short).
    hard = nofile_hard()
    scale_n = min(SCALE_CONNS, hard - 200)
    if want("scale"):
        if scale_n < SCALE_CONNS:
            log(f"scale: RLIMIT_NOFILE hard limit {hard} < {SCALE_CONNS}: "
                f"running {scale_n} idle sessions instead")
        sc["scale"] = {"presenced": scenario_idle(build, "presenced", scale_n,
                                                  1, hold_s=5)}
        sc["scale"]["presenced"][0]["target_conns"] = SCALE_CONNS
    res["redis"] = (redis_baseline(build) if want("redis")
                    else {"skipped": "not asked for (--only)"})
    res["redis_store"] = (redis_store(build) if want("redis_store")
                          else {"skipped": "not asked for (--only)"})

    res["machine"]["loadavg_end"] = loadavg()
    res["wall_s"] = round(time.time() - t_start, 1)
    res["summary"] = summarise(res)
    tag = "" if not only else "-" + "-".join(sorted(only))
    out = os.path.join(args.out, f"{res['date']}{tag}.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    svg = out[:-5] + ".svg"
    subprocess.run([sys.executable, os.path.join(HERE, "chart.py"), out, svg],
                   check=True)
    log(f"wrote {out} and {svg} in {res['wall_s']:.0f} s")
    print(json.dumps(res["summary"], indent=1))
    print_summary(res)
    return 0


def fmt_spread(v, mm):
    if v is None:
        return "n/a"
    f = (lambda x: f"{x:,.2f}") if abs(v) < 100 else (lambda x: f"{x:,.0f}")
    return f"{f(v)} [{f(mm[0])}..{f(mm[1])}]" if mm else f(v)


def print_summary(res):
    """Medians [min..max] of both sides and the ratio of medians, then the
    issue's targets beside their figures."""
    s = res["summary"]
    la = res["machine"]["loadavg_start"][0], res["machine"]["loadavg_end"][0]
    print(f"\nInterleaved medians [min..max] of {res['repeats']} rounds, "
          f"load average {la[0]:.1f} at start, {la[1]:.1f} at end")
    for key in ("connect_storm_per_s", "connect_storm_per_server_cpu_s",
                "idle_rss_per_conn_bytes",
                "churn_cycles_per_s", "flip_changes_per_s",
                "flip_changes_per_server_cpu_s", "latency_p50_ms",
                "latency_p99_ms", "reconnect_per_s"):
        x = s[key]
        if x["presenced"] is None and x["echo"] is None:
            continue
        print(f"  {key:<32} presenced {fmt_spread(x['presenced'], x['presenced_min_max']):<32}"
              f" echo {fmt_spread(x['echo'], x['echo_min_max']):<32} ratio {x['ratio']}"
              f" (rounds {x['round_ratios']})")
    print(f"  (same frames on both sides: {s['frames_note']})")
    print_targets("Targets (make bench)", s["targets_issue21"])
    rt = (s.get("redis_store_ops_per_s") or {}).get("targets_issue21")
    if rt:
        print("  Redis store (bench_redis):")
        for k, r in rt.items():
            verdict = {True: "ok", False: "MISS", None: "NOT MEASURED"}[
                r.get("ok")]
            cmp = ">=" if r.get("direction") == "ge" else "<="
            print(f"    {k:<40} {r['value']:>10,.2f} [{r['min']:.2f}.."
                  f"{r['max']:.2f}] target {cmp} {r['target']:,}  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
