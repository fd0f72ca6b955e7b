#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What running on Redis Cluster costs the store itself, apart from spreading
over several redis-servers (issue 20): bench_cluster's Redis CPU per session
operation on ONE redis-server three ways, in one run, order rotated:

  single      one Redis, one shard (the plain store)
  shards      the same Redis, --shards S virtual shards (no cluster mode)
  onecluster  a one-node Redis Cluster holding every slot, S shards
              (cluster mode: slot checks per command, the guard key, the
              slot map)

    python3 bench/cluster_one_node.py [--repeats 3] [--duration-ms 3000]
                                      [--shards 12] [--json OUT]

bench/cluster.py measures the target's figure on a 3+3 cluster; on a host
with fewer cores than busy processes that also measures the primaries
sharing cores. This one keeps one redis-server busy in every mode."""
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as C  # noqa: E402


def main():
    a = C.one_server_parser().parse_args()
    d = tempfile.mkdtemp(prefix="presence-bench-one-")
    taken = []
    p1 = C.free_port(taken)
    taken.append(p1)
    p2 = C.free_port(taken)
    plain = C.start_server(d, p1, False)
    one = C.start_server(d, p2, True)
    try:
        C.cli(p2, "CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        for _ in range(100):
            if "cluster_state:ok" in C.cli(p2, "CLUSTER", "INFO"):
                break
            time.sleep(0.1)
        order = ["single", "shards", "onecluster"]
        runs = []
        for r in range(a.repeats):
            for mode in order[r % 3:] + order[:r % 3]:
                if mode == "onecluster":
                    C.cli(p2, "FLUSHALL")
                    res = C.run_bench(a.bench, f"redis://127.0.0.1:{p2}",
                                      [one.pid], [p2], a.duration_ms,
                                      cluster=f"127.0.0.1:{p2}",
                                      shards=a.shards, held=a.held)
                else:
                    C.cli(p1, "FLUSHALL")
                    # run_bench passes --shards only with a cluster.
                    res = C.run_bench(a.bench, f"redis://127.0.0.1:{p1}",
                                      [plain.pid], [p1], a.duration_ms,
                                      shards=a.shards if mode == "shards"
                                      else 1, sharded=mode == "shards",
                                      held=a.held)
                res["mode"] = mode
                res["repeat"] = r
                runs.append(res)
                print(f"repeat {r} {mode:10s}: {res['ops_per_s']:>8.0f} "
                      f"ops/s, Redis {res['redis_us_per_op']:.2f} us/op, "
                      f"errors {res['errors']}", flush=True)
        med = {m: statistics.median(x["redis_us_per_op"] for x in runs
                                    if x["mode"] == m) for m in order}
        load = open("/proc/loadavg").read().split()[:3]
        print(f"\nmedian Redis CPU per operation: single {med['single']:.2f} "
              f"us, {a.shards} shards {med['shards']:.2f} us "
              f"({med['shards'] / med['single']:.2f}x), one-node cluster "
              f"{med['onecluster']:.2f} us "
              f"({med['onecluster'] / med['single']:.2f}x)")
        print(f"load average {' '.join(load)} on {os.cpu_count()} CPUs")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"runs": runs, "medians": med, "loadavg": load}, f,
                          indent=1)
    finally:
        for p in (plain, one):
            p.kill()
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
