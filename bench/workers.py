#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/workers.py: do --workers add hidden cost? (issue 20)

One redis-server (unix socket, no persistence, started and stopped here by
pid), and against it, in interleaved rounds (1 worker, 2 workers, 2, 1, ...),
one presenced on the Redis store, started with --workers 2 or as a single
process. Each round runs bench/load's flip scenario (--conns sessions, each
keeping --window status changes in flight; every change travels WebSocket ->
worker -> the store's script -> Redis log -> the subscriber's worker -> its
subscriber) and reads, over the same measuring window:

  - presenced CPU per change: the process and its children (all workers;
    bench/load --pid sums them), as us per change;
  - Redis CPU per change: redis-server's CPU time (bench/load --store-pid)
    over the changes counted.

The machine has 2 cores shared with the load generator and redis-server, so
the changes/s figure says nothing about the speed-up; the per-change CPU
figures are what --workers could add (every worker reads the whole shared
log, so its cost per change is the one to watch). Not part of `make test`.

With --nointerest an arm runs --workers N with the shared reader passing
every event to every worker (PRESENCED_BENCH_NO_INTEREST=1), as before
interest-based delivery. With --nofeed an arm runs --workers N with each worker reading the
log from Redis itself (PRESENCED_BENCH_NO_LOG_FEED=1), as before the shared
log reader: the before and after of that change in one interleaved run.
--scenario latency offers --rate changes/s instead of saturating (per-change
figures then include the idle cost of the connections, and scripts carry
one operation each, as at production rates). Redis's output bytes per
change (INFO stats, connects included) are reported for each round.

    cmake --build build-bench --target presenced presence_load
    python3 bench/workers.py [--build build-bench] [--rounds 4] [--duration-s 5]
        [--conns 1000] [--nointerest] [--nofeed] [--scenario flip|latency --rate 3000]
        [--base OTHER_BUILD] [--shards S] [--loadgen-batch]
        [--out bench/results/DATE-workers.json]
"""
import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  (Server, run_load, free_port, loadavg, log)


def redis_start(d):
    exe = shutil.which("redis-server")
    if not exe:
        sys.exit("bench/workers.py: redis-server is not installed")
    sock = os.path.join(d, "redis.sock")
    p = subprocess.Popen([exe, "--port", "0", "--unixsocket", sock, "--save", "",
                          "--appendonly", "no", "--dir", d],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        if os.path.exists(sock) and redis_cli(sock, "PING") == "PONG":
            return p, sock
        time.sleep(0.05)
    p.kill()
    sys.exit("bench/workers.py: redis-server did not start")


def redis_cli(sock, *args):
    r = subprocess.run(["redis-cli", "-s", sock] + list(args),
                       capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


def wait_instances(port, n, timeout=15):
    """Every worker registered with Redis (cluster instances from /metrics)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if bench.metrics(port).get("presenced_cluster_instances") == n:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


ARM_ENV = {"nofeed": "PRESENCED_BENCH_NO_LOG_FEED",
           "nointerest": "PRESENCED_BENCH_NO_INTEREST"}


def one_round(build, sock, redis_pid, arm, args, r):
    if arm.endswith("base"):  # the same arm on the --base build
        build, arm = args.base, arm[:-4]
        res = one_round(build, sock, redis_pid, arm, args, r)
        res["arm"] = arm + "base"
        return res
    return one_round_of(build, sock, redis_pid, arm, args, r)


def one_round_of(build, sock, redis_pid, arm, args, r):
    """arm: "1", "N" (--workers N, one log reader per machine passing each
    worker the events its clients watch), "Nnointerest" (--workers N, the
    reader passing every event to every worker, as before interest) or
    "Nnofeed" (--workers N, each worker reading the log itself, as before
    the feed)."""
    workers = int(re.match(r"\d+", arm).group())
    extra = ["--store", f"unix:{sock}"]
    if args.shards > 1:
        extra += ["--redis-shards", str(args.shards)]
    if workers > 1:
        extra += ["--workers", str(workers)]
    env = [v for k, v in ARM_ENV.items() if arm.endswith(k)]
    for v in env:
        os.environ[v] = "1"
    try:
        srv = bench.Server(build, "presenced", bench.free_port(), extra=extra).start()
    finally:
        for v in env:
            os.environ.pop(v, None)
    try:
        if not wait_instances(srv.port, workers):
            raise RuntimeError(f"{workers} worker(s) did not all register")
        kw = dict(conns=args.conns, duration_s=args.duration_s,
                  store_pid=redis_pid, max_s=args.duration_s + 60)
        if args.scenario == "flip":
            kw["window"] = args.window
            if args.loadgen_batch:
                kw["batch"] = 1
        else:
            kw["rate"] = args.rate
        redis_cli(sock, "CONFIG", "RESETSTAT")
        res = bench.run_load(build, srv, args.scenario, **kw)
        stats = redis_cli(sock, "INFO", "stats")
        for line in stats.splitlines():
            if line.startswith("total_net_output_bytes:"):
                res["redis_net_output_bytes"] = int(line.split(":")[1])
        # Script calls per change: how full the workers' calls are (each
        # worker batches only its own clients' changes).
        m = re.search(r"cmdstat_fcall:calls=(\d+)", redis_cli(sock, "INFO", "commandstats"))
        if m and res.get("changes"):
            res["fcalls_per_change"] = round(int(m.group(1)) / res["changes"], 4)
    finally:
        srv.stop()
        redis_cli(sock, "FLUSHALL")
    cps = res.get("changes_per_server_cpu_s")
    res["workers"] = workers
    res["arm"] = arm
    res["presenced_cpu_us_per_change"] = round(1e6 / cps, 3) if cps else None
    bench.log(f"round {r + 1}, {arm}: {res.get('changes_per_s', 0):.0f} "
              f"changes/s, presenced {res['presenced_cpu_us_per_change']} us/change, "
              f"redis {res.get('store_cpu_us_per_change')} us/change, "
              f"{res.get('fcalls_per_change')} script calls/change "
              f"(load {res['loadavg'][0]:.1f})")
    return res


def med(runs, key):
    v = [x[key] for x in runs if isinstance(x.get(key), (int, float))]
    return {"median": statistics.median(v), "min": min(v), "max": max(v),
            "values": v} if v else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-bench")
    ap.add_argument("--rounds", type=int, default=4,
                    help="rounds of each side, interleaved 1 2, 2 1, ...")
    ap.add_argument("--duration-s", type=float, default=5)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--nofeed", action="store_true",
                    help="a third arm: --workers N with every worker reading "
                         "the log itself (PRESENCED_BENCH_NO_LOG_FEED=1)")
    ap.add_argument("--nointerest", action="store_true",
                    help="an arm: --workers N with the shared reader passing "
                         "every event to every worker "
                         "(PRESENCED_BENCH_NO_INTEREST=1)")
    ap.add_argument("--scenario", default="flip", choices=("flip", "latency"),
                    help="flip: saturate; latency: --rate changes/s offered")
    ap.add_argument("--rate", type=int, default=3000)
    ap.add_argument("--loadgen-batch", action="store_true",
                    help="presence_load --batch 1: the flips one read owes in "
                         "one write, so presenced, not the generator, is the "
                         "limit (bench/run.py); every arm uses this build's "
                         "generator")
    ap.add_argument("--shards", type=int, default=1,
                    help="--redis-shards S for every arm (S logs on the one "
                         "Redis; the feed then carries every shard's)")
    ap.add_argument("--base", default=None,
                    help="another build (e.g. main before a change): its 1 and "
                         "N arms run interleaved with this build's")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    d = tempfile.mkdtemp(prefix="presence-bench-workers-")
    rp, sock = redis_start(d)
    arms = (["1", str(args.workers)]
            + ([f"{args.workers}nointerest"] if args.nointerest else [])
            + ([f"{args.workers}nofeed"] if args.nofeed else []))
    if args.base:
        args.base = os.path.abspath(args.base)
        arms += ["1base", f"{args.workers}base"]
    runs = {a: [] for a in arms}
    load0 = bench.loadavg()
    t0 = datetime.datetime.utcnow()
    try:
        for r in range(args.rounds):
            # Rotated each round (A B C D, B C D A, ...) and reversed every
            # other, so no arm always follows the same one.
            k = r % len(arms)
            rot = arms[k:] + arms[:k]
            for a in (rot if r % 2 == 0 else rot[::-1]):
                runs[a].append(one_round(build, sock, rp.pid, a, args, r))
    finally:
        rp.kill()
        rp.wait()
        shutil.rmtree(d, ignore_errors=True)
    summary = {}
    for w, rs in runs.items():
        for x in rs:
            ch = x.get("changes") or x.get("sent")
            if x.get("redis_net_output_bytes") and ch:
                x["redis_out_bytes_per_change"] = round(x["redis_net_output_bytes"] / ch, 1)
        summary[f"workers_{w}"] = {
            "presenced_cpu_us_per_change": med(rs, "presenced_cpu_us_per_change"),
            "redis_cpu_us_per_change": med(rs, "store_cpu_us_per_change"),
            "redis_out_bytes_per_change": med(rs, "redis_out_bytes_per_change"),
            "changes_per_s": med(rs, "changes_per_s"),
            "fcalls_per_change": med(rs, "fcalls_per_change")}
    one = summary["workers_1"]

    def ratio(key, arm):
        a, b = one[key], summary[f"workers_{arm}"][key]
        return round(b["median"] / a["median"], 3) if a and b and a["median"] else None
    for a in arms[1:]:
        if a == "1base":
            continue
        sfx = "" if a == str(args.workers) else "_" + a
        summary["ratio_presenced_cpu" + sfx] = ratio("presenced_cpu_us_per_change", a)
        summary["ratio_redis_cpu" + sfx] = ratio("redis_cpu_us_per_change", a)
    if args.base:  # the base build's own ratio, N workers over its 1
        b1, bn = summary["workers_1base"], summary[f"workers_{args.workers}base"]
        for key, name in (("presenced_cpu_us_per_change", "presenced"),
                          ("redis_cpu_us_per_change", "redis")):
            if b1[key] and bn[key] and b1[key]["median"]:
                summary[f"base_ratio_{name}_cpu"] = round(
                    bn[key]["median"] / b1[key]["median"], 3)
    out = {"date": t0.isoformat(timespec="seconds") + "Z",
           "command": " ".join([os.path.relpath(__file__, os.getcwd())] + sys.argv[1:]),
           "conns": args.conns, "window": args.window, "duration_s": args.duration_s,
           "scenario": args.scenario, "rate": args.rate if args.scenario == "latency" else None,
           "loadavg_start": load0, "loadavg_end": bench.loadavg(),
           "summary": summary, "runs": {str(k): v for k, v in runs.items()}}
    path = args.out or os.path.join(
        HERE, "results", f"{t0.strftime('%Y-%m-%d')}-workers.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(summary, indent=1))
    bench.log(f"wrote {path}")


if __name__ == "__main__":
    main()
