#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/pgo_train.py: the training run of a profile-guided build.

scripts/pgo.sh builds presenced instrumented (PRESENCE_PGO=GENERATE), runs
this, then builds it again with the profile this run wrote
(PRESENCE_PGO=USE). What runs here is what the profile favours, so it is
the daemon's everyday work, through the same load generator as the
benchmarks (bench/load). On the embedded store: status changes with
watchers (flip), a connect storm and idle connections (idle), connections
opening, subscribing and closing (churn), and changes at a steady rate
(latency). Then, when a redis-server is on PATH, flips and churn on the
Redis store (a redis-server started here on a unix socket, stopped by pid):
without it the Redis store's code is compiled as without a profile. About
20 seconds, on 127.0.0.1 only.

    python3 bench/pgo_train.py --build BUILD

presenced is stopped with SIGTERM, so that it exits normally: the profile
is written at exit (scripts/pgo.sh checks that it was). A step that fails
raises, and the script exits non-zero.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench  # noqa: E402  (bench/run.py: servers, load)

EMBEDDED = [("flip", dict(conns=1000, window=4, batch=1, duration_s=5,
                          warm_s=0)),
            # 2,000 connections: the profile needs the path, not the
            # size, and a host whose descriptor limit is 4,096 runs it
            ("idle", dict(conns=2000, concurrency=256, hold_s=1)),
            ("churn", dict(conns=200, duration_s=3)),
            ("latency", dict(conns=1000, rate=10000, duration_s=3))]
ON_REDIS = [("flip", dict(conns=500, window=4, batch=1, duration_s=3,
                          warm_s=0)),
            ("churn", dict(conns=100, duration_s=2))]


def train(build, steps, extra=(), what="embedded store"):
    srv = bench.Server(build, "presenced", bench.free_port(), nofile=20000,
                       extra=extra).start()
    try:
        bench.wait_healthy(srv)
        for name, kw in steps:
            r = bench.run_load(build, srv, name, **kw)
            rate = next((f"{k} {r[k]:.0f}" for k in
                         ("changes_per_s", "cycles_per_s", "connect_rate_per_s")
                         if k in r), "")
            bench.log(f"pgo training, {what}: {name} {rate}")
            srv.wait_drained()
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True,
                    help="the build directory holding presenced and "
                    "bench/presence_load")
    a = ap.parse_args()
    train(a.build, EMBEDDED)
    with bench.redis_unix() as r:
        if r is None:
            bench.log("pgo training: no redis-server on PATH, the Redis "
                      "store untrained")
            return
        train(a.build, ON_REDIS, ["--store", f"unix:{r[0]}"], "Redis store")


if __name__ == "__main__":
    main()
