#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/ab.py BUILD_A BUILD_B [--rounds N] [--conns N] [--server-arg=F]: two presenced builds
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
    ap.add_argument("--server-arg", action="append", default=[],
                    help="a flag for both presenced builds (repeatable), e.g. "
                    "--server-arg=--log-capacity=64: the transition log's "
                    "ring, which fills as sessions connect, left out")
    args = ap.parse_args()
    bench.raise_nofile(args.conns + 1000)
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
    for key in ("rss_per_conn_bytes", "connect_rate_per_s",
                "connects_per_server_cpu_s"):
        a, b = bench.spread(res["a"], key), bench.spread(res["b"], key)
        if a and b:
            print(f"{key:<28} A {a['median']:,.1f} [{a['min']:,.1f}.."
                  f"{a['max']:,.1f}]  B {b['median']:,.1f} [{b['min']:,.1f}.."
                  f"{b['max']:,.1f}]  B/A {b['median'] / a['median']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
