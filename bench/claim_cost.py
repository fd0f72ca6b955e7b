#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What the cluster-wide claim of a session id a backend chose costs
(docs/internals/redis.md, "Session ids across shards"): bench_cluster's
Redis CPU per session operation (connect -> idle -> online -> end) on one
redis-server with --shards S, sessions opened as presenced's WebSocket
sessions (random ids, no claim) and as a backend's (chosen ids, claimed and
released in the id's shard), alternately, order rotated each repeat.

    python3 bench/claim_cost.py [--repeats 3] [--duration-ms 3000]
                                [--shards 12] [--json OUT]
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as C  # noqa: E402


def main():
    a = C.one_server_parser().parse_args()
    d = tempfile.mkdtemp(prefix="presence-bench-claim-")
    port = C.free_port([])
    srv = C.start_server(d, port, False)
    runs = []
    try:
        order = ["random", "chosen"]
        for r in range(a.repeats):
            for mode in order[r % 2:] + order[:r % 2]:
                C.cli(port, "FLUSHALL")
                cmd = [a.bench, "--url", f"redis://127.0.0.1:{port}",
                       "--pids", str(srv.pid), "--ports", str(port),
                       "--duration-ms", str(a.duration_ms),
                       "--shards", str(a.shards), "--held", str(a.held)]
                if mode == "chosen":
                    cmd.append("--chosen-ids")
                out = subprocess.run(cmd, capture_output=True, text=True,
                                     timeout=120)
                if out.returncode:
                    raise RuntimeError(out.stderr)
                res = json.loads(out.stdout.strip().splitlines()[-1])
                res["mode"] = mode
                res["repeat"] = r
                res["loadavg"] = open("/proc/loadavg").read().split()[:3]
                runs.append(res)
                print(f"repeat {r} {mode:7s}: {res['ops_per_s']:>8.0f} ops/s, "
                      f"Redis {res['redis_us_per_op']:.2f} us/op, errors "
                      f"{res['errors']}, load {' '.join(res['loadavg'])}",
                      flush=True)
        med = {m: statistics.median(x["redis_us_per_op"] for x in runs
                                    if x["mode"] == m) for m in order}
        print(f"\nmedian Redis CPU per operation, {a.shards} shards: random ids "
              f"{med['random']:.2f} us, chosen ids {med['chosen']:.2f} us "
              f"({med['chosen'] / med['random']:.2f}x; a cycle is 4 "
              f"operations, so a claim + release costs "
              f"{4 * (med['chosen'] - med['random']):.1f} us per session)")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"runs": runs, "medians": med}, f, indent=1)
    finally:
        srv.kill()
        srv.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
