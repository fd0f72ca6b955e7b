#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/ab.py BUILD_A BUILD_B [--scenario idle|flip] [--rounds N] [--conns N]
[--server-arg=F]: two presenced builds
side by side on the idle scenario (connect storm, then 10,000 held), rounds
interleaved (A B, then B A), for a change's effect on memory and on the
storm: RSS per connection, sessions/s and sessions per server CPU-second,
median [min..max] of each. A build directory needs presenced and
bench/presence_load (`cmake --build DIR --target presenced presence_load`);
to keep the binary from before a change, copy it: mkdir -p /tmp/a/bench &&
cp build-bench/presenced /tmp/a/ && cp build-bench/bench/presence_load
/tmp/a/bench/.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--conns", type=int, default=bench.IDLE_CONNS)
    ap.add_argument("--scenario", choices=("idle", "flip"), default="idle",
                    help="idle (default): the connect storm and RSS; flip: "
                    "1,000 sessions flipping status, changes per server "
                    "CPU-second (one server per build, kept for the rounds)")
    ap.add_argument("--loadgen-batch", action="store_true",
                    help="flip: the load generator sends the flips one read "
                    "owes in one write (run.py --loadgen-batch)")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="a flag for both presenced builds (repeatable), e.g. "
                    "--server-arg=--log-capacity=64: the transition log's "
                    "ring, which fills as sessions connect, left out")
    args = ap.parse_args()
    bench.raise_nofile(args.conns + 1000)
    if args.scenario == "flip":
        return flip_ab(args)
    res = {"a": [], "b": []}
    for r in range(args.rounds):
        for side in ("a", "b") if r % 2 == 0 else ("b", "a"):
            build = getattr(args, side)
            x = bench.idle_once(build, "presenced", args.conns, r,
                               extra=args.server_arg)
            res[side].append(x)
            print(f"{side} #{r + 1}: {x.get('rss_per_conn_bytes', -1):.0f} "
                  f"B/conn, {x['connect_rate_per_s']:.0f}/s, "
                  f"{x.get('connects_per_server_cpu_s', -1):.0f} per server "
                  f"CPU-s (load {x['loadavg'][0]:.1f})", flush=True)
    return summary(res, ("rss_per_conn_bytes", "connect_rate_per_s",
                         "connects_per_server_cpu_s"))


def summary(res, keys):
    """Each figure's median [min..max] per build and the ratio B/A."""
    for key in keys:
        a, b = bench.spread(res["a"], key), bench.spread(res["b"], key)
        if a and b:
            print(f"{key:<28} A {a['median']:,.1f} [{a['min']:,.1f}.."
                  f"{a['max']:,.1f}]  B {b['median']:,.1f} [{b['min']:,.1f}.."
                  f"{b['max']:,.1f}]  B/A {b['median'] / a['median']:.3f}")
    return 0


def flip_ab(args):
    """The flip scenario of run.py (1,000 sessions, 4 flips in flight each)
    against each build's presenced, rounds interleaved A B / B A."""
    keys = ("changes_per_server_cpu_s", "changes_per_s")
    srvs = {side: bench.Server(getattr(args, side), "presenced",
                               bench.free_port(),
                               extra=args.server_arg).start()
            for side in ("a", "b")}
    res = {"a": [], "b": []}
    try:
        for r in range(args.rounds):
            for side in ("a", "b") if r % 2 == 0 else ("b", "a"):
                x = bench.scenario_once(
                    getattr(args, side), srvs[side], "flip", r,
                    conns=bench.FLIP_CONNS, window=bench.FLIP_WINDOW,
                    batch=int(args.loadgen_batch),
                    duration_s=bench.DURATION_S,
                    max_s=bench.DURATION_S + 60)
                res[side].append(x)
                print(f"{side} #{r + 1}: {x.get(keys[0], -1):,.0f} changes "
                      f"per server CPU-s, {x.get(keys[1], -1):,.0f}/s (load "
                      f"{x['loadavg'][0]:.1f})", flush=True)
    finally:
        for srv in srvs.values():
            srv.stop()
    return summary(res, keys)


if __name__ == "__main__":
    sys.exit(main())
