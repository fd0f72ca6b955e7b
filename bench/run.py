#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/run.py: every benchmark of presenced, side by side with its baselines.

`make bench` runs this after building build-bench (RelWithDebInfo). It runs
bench_engine (the core against its bare table), then each load scenario of
bench/load against a presenced it starts (memory store) and against
bench/echo (the network baseline), repeated, and writes
bench/results/<date>.json and an SVG chart (bench/chart.py).

`make soak` runs `run.py --soak`: a 10-minute churn against one presenced with
its RSS sampled, written to bench/results/<date>-soak.json.

Every process it starts is stopped by its pid. Traffic stays on 127.0.0.0/8.
Sizes fit the 2-core machine in well under 15 minutes; BENCH_REPEATS and the
constants below change them.
"""
import argparse
import datetime
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECRET = "bench-secret"
API_KEY = "bench-key"

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
IDLE_CONNS = 10000       # issue 3: 10,000 idle connections
SCALE_CONNS = 100000     # issue 7: 100,000 concurrent idle sessions
FLIP_CONNS = 1000        # issue 3: 1,000 connections flipping
FLIP_WINDOW = 4          # changes in flight per connection
LAT_RATE = 10000         # issue 3: p99 at 10,000 changes/s
CHURN_SLOTS = 200
RECONNECT_CONNS = 10000  # issue 7: 10,000 reconnects/s after a restart
RECONNECT_RATE = 10000
DURATION_S = 8


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr,
          flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                timeout=timeout) as r:
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
                    f"127.0.0.1:{self.port}"]
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
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.kind} exited at start: see "
                                       f"/tmp/bench-{self.kind}-{self.port}.log")
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not listen on {self.port}")

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
            "--mode", "echo" if srv.kind == "echo" else "presenced",
            "--secret", SECRET, "--pid", str(srv.pid)]
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


def median_of(runs, key):
    vals = []
    for r in runs:
        v = r
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if isinstance(v, (int, float)) and v >= 0:
            vals.append(v)
    return statistics.median(vals) if vals else None


# ---- scenarios ------------------------------------------------------------

def scenario_idle(build, kind, conns, repeats, hold_s=3):
    """Connect storm then idle hold, on a fresh server each time (memory a
    server has freed stays in its RSS, so only a first fill measures it)."""
    runs = []
    for i in range(repeats):
        srv = Server(build, kind, free_port()).start()
        try:
            time.sleep(0.5)
            r = run_load(build, srv, "idle", conns=conns, hold_s=hold_s,
                         concurrency=256, max_s=120)
            if srv.limit_note:
                r["server_limit_note"] = srv.limit_note
            r["server_fd_limit"] = srv.fd_limit
            runs.append(r)
            log(f"idle {kind} #{i+1}: {r['ready']}/{r['requested_conns']} in, "
                f"{r['connect_rate_per_s']:.0f}/s, "
                f"{r.get('rss_per_conn_bytes', -1):.0f} B/conn")
        finally:
            srv.stop()
    return runs


def scenario_repeat(build, srv, scenario, repeats, **kw):
    runs = []
    for i in range(repeats):
        srv.wait_drained()
        r = run_load(build, srv, scenario, **kw)
        runs.append(r)
        key = {"flip": "changes_per_s", "churn": "cycles_per_s",
               "latency": "latency_ms"}[scenario]
        v = r.get(key)
        if isinstance(v, dict):
            v = f"p50 {v['p50']:.2f} ms p99 {v['p99']:.2f} ms"
        log(f"{scenario} {srv.kind} #{i+1}: {key} {v} "
            f"(load {r['loadavg'][0]:.1f})")
    return runs


def scenario_reconnect(build, kind, repeats):
    """Hold RECONNECT_CONNS sessions, restart the server, and let every
    client come back at RECONNECT_RATE/s; the listen queue must not
    overflow (TcpExtListenOverflows is machine-wide: other tenants count
    too, so a non-zero delta is checked against the refused count)."""
    runs = []
    for i in range(repeats):
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
            runs.append(r)
            log(f"reconnect {kind} #{i+1}: {r['reconnected']} back at "
                f"{r['reconnect_rate_per_s']:.0f}/s, overflows "
                f"+{r['listen_overflows_delta']}")
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            srv.stop()
    return runs


def redis_baseline(build):
    """presenced on the Redis store, end to end: the flip scenario (1,000
    WebSocket connections changing status, every change decided by the
    store's script and delivered back to the subscribers) against one
    presenced with --store on a redis-server this starts (unix socket,
    stopped by pid), beside the same scenario on the embedded store from the
    main run (ratio in the summary). redis-server's CPU share over the runs
    says whether Redis or presenced is the limit."""
    redis = subprocess.run(["sh", "-c", "command -v redis-server"],
                           capture_output=True, text=True).stdout.strip()
    if not redis:
        log("redis baseline skipped: no redis-server")
        return {"skipped": "no redis-server on PATH"}
    d = f"/tmp/presence-bench-redis-{os.getpid()}"
    os.makedirs(d, exist_ok=True)
    sock = os.path.join(d, "redis.sock")
    rp = subprocess.Popen([redis, "--port", "0", "--unixsocket", sock,
                           "--save", "", "--appendonly", "no", "--dir", d,
                           "--logfile", "redis.log"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = None
    try:
        deadline = time.time() + 10
        while not os.path.exists(sock) and time.time() < deadline:
            time.sleep(0.05)

        def redis_cpu():
            with open(f"/proc/{rp.pid}/stat") as f:
                parts = f.read().rpartition(")")[2].split()
            return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        srv = Server(build, "presenced", free_port(),
                     extra=["--store", f"unix:{sock}"]).start()
        # Ready once registered with Redis (healthz answers 200 then).
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                http_get(srv.port, "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        c0, t0 = redis_cpu(), time.time()
        runs = scenario_repeat(build, srv, "flip", REPEATS, conns=FLIP_CONNS,
                               window=FLIP_WINDOW, duration_s=DURATION_S,
                               max_s=DURATION_S + 60)
        share = (redis_cpu() - c0) / (time.time() - t0)
        med = median_of(runs, "changes_per_s")
        log(f"redis baseline: presenced on Redis flips {med} changes/s, "
            f"redis-server at {share:.2f} of a core over the runs")
        return {"store": "redis (unix socket)", "flip": runs,
                "flip_changes_per_s_median": med,
                "redis_server_cpu_share": round(share, 2)}
    except Exception as e:  # a failed extra must not lose the whole run
        log(f"redis baseline failed: {e}")
        return {"skipped": f"failed: {e}"}
    finally:
        if srv:
            srv.stop()
        rp.kill()
        rp.wait()
        for f in ("redis.sock", "redis.log"):
            try:
                os.unlink(os.path.join(d, f))
            except OSError:
                pass
        try:
            os.rmdir(d)
        except OSError:
            pass


def redis_store(build):
    """The Redis store's own figures (issue 4), by bench/redis/bench_redis:
    it starts a redis-server on a unix socket, drives 3 presence_t (one
    thread and loop each) through it and reports session operations/s
    beside redis-benchmark's ceilings for the store's connect EVALSHA and a
    plain SET, measured in the same run; then kills an instance holding
    100,000 sessions and reports the ms from its lease's expiry to the
    cleanup event and the longest Redis command meanwhile. Built here when
    the bench build lacks it (it needs hiredis)."""
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


def engine(build):
    path = f"/tmp/bench-engine-{os.getpid()}.json"
    log("bench_engine (the core against its bare table)")
    p = subprocess.run([f"{build}/bench/bench_engine", path],
                       capture_output=True, text=True, timeout=900)
    sys.stderr.write(p.stdout)
    try:
        with open(path) as f:
            res = json.load(f)
        os.unlink(path)
        return res
    except (OSError, ValueError):
        return {"error": p.stderr[-1000:]}


def summarise(res):
    """Medians and ratios, the figures docs/benchmarks.md quotes."""
    s = {}
    sc = res["scenarios"]

    def pair(name, key):
        p = median_of(sc[name]["presenced"], key)
        e = median_of(sc[name]["echo"], key)
        return {"presenced": p, "echo": e,
                "ratio": round(p / e, 3) if p and e else None}
    s["connect_storm_per_s"] = pair("idle", "connect_rate_per_s")
    s["idle_rss_per_conn_bytes"] = pair("idle", "rss_per_conn_bytes")
    s["churn_cycles_per_s"] = pair("churn", "cycles_per_s")
    s["flip_changes_per_s"] = pair("flip", "changes_per_s")
    s["flip_changes_per_server_cpu_s"] = pair("flip",
                                              "changes_per_server_cpu_s")
    s["flip_server_cpu_share"] = pair("flip", "server_cpu_share")
    for q in ("p50", "p99", "p999"):
        s[f"latency_{q}_ms"] = pair("latency", f"latency_ms.{q}")
    s["latency_achieved_per_s"] = pair("latency", "achieved_per_s")
    s["reconnect_per_s"] = pair("reconnect", "reconnect_rate_per_s")
    s["reconnect_listen_overflows"] = {
        k: max((r.get("listen_overflows_delta", 0)
                for r in sc["reconnect"][k]), default=None)
        for k in ("presenced", "echo")}
    eng = res.get("engine", {})
    s["engine_ops_per_s"] = {"engine": eng.get("handle_ops_per_s"),
                             "baseline_table": eng.get(
                                 "baseline_table_ops_per_s"),
                             "ratio": eng.get("handle_ratio")}
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
            "evalsha_ceiling": rs.get("median_evalsha_ceiling_per_s"),
            "ratio": rs.get("ratio_to_evalsha")}
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
    return s


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--soak", action="store_true")
    ap.add_argument("--soak-s", type=float, default=600)
    ap.add_argument("--soak-warm-s", type=float, default=60)
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="one repeat of each, short runs (a smoke test)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.soak:
        return soak(args)
    global REPEATS, DURATION_S
    if args.quick:
        REPEATS, DURATION_S = 1, 3
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
           "repeats": REPEATS, "scenarios": {}}
    got, note = raise_nofile(SCALE_CONNS + 1000)
    if note:
        log("note: " + note)
        res["machine"]["nofile_note"] = note
    res["engine"] = {"skipped": True} if args.skip_engine else engine(build)
    sc = res["scenarios"]

    sc["idle"] = {k: scenario_idle(build, k, IDLE_CONNS, REPEATS)
                  for k in ("presenced", "echo")}
    for kind in ("presenced", "echo"):
        srv = Server(build, kind, free_port()).start()
        try:
            sc.setdefault("churn", {})[kind] = scenario_repeat(
                build, srv, "churn", REPEATS, conns=CHURN_SLOTS,
                duration_s=DURATION_S, max_s=DURATION_S + 30)
            sc.setdefault("flip", {})[kind] = scenario_repeat(
                build, srv, "flip", REPEATS, conns=FLIP_CONNS,
                window=FLIP_WINDOW, duration_s=DURATION_S,
                max_s=DURATION_S + 60)
            sc.setdefault("latency", {})[kind] = scenario_repeat(
                build, srv, "latency", REPEATS, conns=FLIP_CONNS,
                rate=LAT_RATE, duration_s=DURATION_S, max_s=DURATION_S + 60)
            if kind == "presenced":
                srv.wait_drained()
                res["presenced_metrics_after"] = {
                    k: v for k, v in metrics(srv.port).items()
                    if k.startswith("presenced_events_total")
                    or k.startswith("presenced_errors_total")}
        finally:
            srv.stop()
    sc["reconnect"] = {k: scenario_reconnect(build, k, REPEATS)
                       for k in ("presenced", "echo")}

    # Issue 7's 100,000 idle sessions: as many as this machine's descriptor
    # limit lets one presenced hold (the limit is reported when short).
    hard = nofile_hard()
    scale_n = min(SCALE_CONNS, hard - 200)
    if scale_n < SCALE_CONNS:
        log(f"scale: RLIMIT_NOFILE hard limit {hard} < {SCALE_CONNS}: "
            f"running {scale_n} idle sessions instead")
    sc["scale"] = {"presenced": scenario_idle(build, "presenced", scale_n, 1,
                                              hold_s=5)}
    sc["scale"]["presenced"][0]["target_conns"] = SCALE_CONNS
    res["redis"] = redis_baseline(build)
    res["redis_store"] = redis_store(build)

    res["machine"]["loadavg_end"] = loadavg()
    res["wall_s"] = round(time.time() - t_start, 1)
    res["summary"] = summarise(res)
    out = os.path.join(args.out, f"{res['date']}.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    svg = out[:-5] + ".svg"
    subprocess.run([sys.executable, os.path.join(HERE, "chart.py"), out, svg],
                   check=True)
    log(f"wrote {out} and {svg} in {res['wall_s']:.0f} s")
    print(json.dumps(res["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
