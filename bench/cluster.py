#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Redis Cluster figures (issue 20): Redis CPU per session operation on a
3-primary, 3-replica Redis Cluster (12 virtual shards) against one Redis
with a replica, and on 3 primaries without replicas against one Redis
without one, in the same run, and how evenly the primaries share the calls.
Each cluster is compared with the one Redis that pays as much for
replication (a primary sends every script's writes to its replica: 1.1-1.2x
its CPU here); the 3+3 cluster against the bare Redis is printed too.

    python3 bench/cluster.py [--bench build/bench/bench_cluster]
                             [--repeats 2] [--duration-ms 4000] [--json OUT]

--shards S sets the cluster's virtual shards (12 by default). Each
repeat runs bench_cluster (3 instances, 2,000 slots each, cycling
connect -> idle -> online -> end; --held sessions each held open through
the run, 20,000 by default: bench_cluster.c says why) against one
redis-server, one with a replica, then each cluster, alternately. Redis CPU: the CPU time of the redis-server
processes serving the calls (the one Redis; the three primaries) over the
window, per completed operation; the replicas' CPU is printed apart.
The order of the three rotates from one repeat to the next (a loaded host
drifts). Spread: each primary's data commands over the window (INFO
commandstats: the scripts' HGET, HSET, XADD...) against the mean; its
FCALLs and CPU are printed beside it. Targets: cluster / single <= 1.2
(like with like, both pairs), every primary within +-20 % of the mean.

--rate R paces each instance at R operations a second (bench_cluster
--rate), the same in every mode. By default each slot starts its next
operation when its last one is answered (the most the nodes take). Each
session's user is drawn anew at its connect (bench_cluster.c,
session_user), so in either loop a primary gets the operations of the
users it holds, however fast the host lets it answer: the spread is the
key layout's. Until 2026-12-05 slot k was user k for the whole run, and
closed, a primary the scheduler favoured answered its own slots sooner
and was handed more (spread up to +21 % on this 2-core host, against
2-7 % since; the CPU ratio rose from 1.18-1.22 to 1.28-1.32 with it, in
the same interleaved runs: docs/benchmarks.md).

The CPU window holds only the operations: the INFO reads around it (slow
on a loaded host: seconds, which an earlier version counted in the CPU and
not in the operations, inflating the cluster's figure most) are outside
it."""
import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port(taken):
    while True:
        p = random.randint(20000, 50000)
        if any(abs(p - t) < 2 or abs(p - t - 10000) < 2 or abs(p + 10000 - t) < 2
               for t in taken):
            continue
        ok = True
        for q in (p, p + 10000):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", q))
            except OSError:
                ok = False
            s.close()
        if ok:
            return p


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port)] + list(args),
                          capture_output=True, text=True, timeout=10).stdout


# --pin: every redis-server on the last CPU, the bench on the others
# (taskset), the same in every mode; see main's --pin.
PIN = []


def start_server(d, port, cluster):
    args = PIN[1:] + ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", d,
            "--logfile", f"redis-{port}.log"]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file",
                 f"nodes-{port}.conf", "--cluster-node-timeout", "5000"]
    p = subprocess.Popen(args)
    for _ in range(200):
        if "PONG" in cli(port, "PING"):
            return p
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on {port} did not start")


def run_bench(bench, url, pids, ports, dur, cluster=None, shards=12,
              sharded=False, rate=0, held=0):
    cmd = [bench, "--url", url, "--pids", ",".join(map(str, pids)),
           "--ports", ",".join(map(str, ports)), "--duration-ms", str(dur)]
    if held:
        cmd += ["--held", str(held)]
    if rate:
        cmd += ["--rate", str(rate)]
    if cluster:
        cmd += ["--cluster", cluster, "--shards", str(shards)]
    elif sharded:
        cmd += ["--shards", str(shards)]
    out = subprocess.run((PIN[0] if PIN else []) + cmd, capture_output=True,
                         text=True, timeout=120)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


# Sessions each of bench_cluster's three instances holds open through a run
# (60,000 in the store, 5,000 a shard at 12): a store worth sharding holds
# many, and with only the ~4,500 cycling ones each shard's session index
# stays under Redis's hash-max-listpack-entries (512) and is a listpack that
# HSETNX scans (4-17 us a call) while one shard's is a hashtable (0.5 us):
# the modes would be measured in different encodings (bench_cluster.c).
HELD = 20000


def add_held(ap):
    """--held, the same in every bench that runs bench_cluster."""
    ap.add_argument("--held", type=int, default=HELD,
                    help="sessions each instance holds open through a run "
                    "(%(default)s): the store's population; 0 leaves only "
                    "the cycling ones, few enough a shard that Redis keeps "
                    "each shard's session index as a listpack")


def one_server_parser():
    """The options of the benches that run bench_cluster against one
    redis-server (cluster_one_node.py, claim_cost.py)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "bench",
                                                    "bench_cluster"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration-ms", type=int, default=3000)
    ap.add_argument("--shards", type=int, default=12)
    add_held(ap)
    ap.add_argument("--json")
    return ap


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "bench",
                                                    "bench_cluster"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--duration-ms", type=int, default=4000)
    ap.add_argument("--shards", type=int, default=12,
                    help="virtual shards on the cluster (12)")
    ap.add_argument("--rate", type=float, default=0,
                    help="operations a second per instance, paced (open "
                    "loop; 0: closed loop, the most the nodes take)")
    add_held(ap)
    ap.add_argument("--pin", action="store_true",
                    help="every redis-server on the last CPU, the bench on "
                    "the others: the redis-servers of every mode share one "
                    "core, so the primaries do not also take the bench's")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.pin:
        n = os.cpu_count()
        PIN[:] = [["taskset", "-c", f"0-{n - 2}" if n > 2 else "0"],
                  "taskset", "-c", str(n - 1)]
    d = tempfile.mkdtemp(prefix="presence-bench-cluster-")
    procs = []
    try:
        taken = []
        sport = free_port(taken)
        taken.append(sport)
        single = start_server(d, sport, False)
        procs.append(single)
        # The same single Redis with a replica, as production runs it: a
        # primary pays for replicating the script's writes.
        rport = free_port(taken + [sport])
        taken.append(rport)
        single_r = start_server(d, rport, False)
        procs.append(single_r)
        rep_port = free_port(taken)
        taken.append(rep_port)
        procs.append(start_server(d, rep_port, False))
        cli(rep_port, "REPLICAOF", "127.0.0.1", str(rport))
        # The 3+3 cluster (the issue's), and 3 primaries without replicas:
        # each compared with the one Redis that pays as much for
        # replication (with a replica, without one).
        def make_cluster(replicas):
            ports = []
            for _ in range(6 if replicas else 3):
                p = free_port(taken)
                taken.append(p)
                ports.append(p)
            nodes = {p: start_server(d, p, True) for p in ports}
            procs.extend(nodes.values())
            subprocess.run(["redis-cli", "--cluster", "create"] +
                           [f"127.0.0.1:{p}" for p in ports] +
                           ["--cluster-replicas", "1" if replicas else "0",
                            "--cluster-yes"],
                           capture_output=True, timeout=60, check=True)
            for _ in range(300):
                ok = all("cluster_state:ok" in cli(p, "CLUSTER", "INFO")
                         for p in ports)
                synced = sum("master_link_status:up" in
                             cli(p, "INFO", "replication") for p in ports)
                if ok and synced == len(ports) // 2 * replicas:
                    break
                time.sleep(0.1)
            return ports, nodes
        clusters = {"cluster": make_cluster(True),
                    "cluster-plain": make_cluster(False)}
        runs = []
        for r in range(a.repeats):
            order = ("single", "replicated", "cluster", "cluster-plain")
            for mode in order[r % 4:] + order[:r % 4]:
                if mode == "single":
                    cli(sport, "FLUSHALL")
                    res = run_bench(a.bench, f"redis://127.0.0.1:{sport}",
                                    [single.pid], [sport], a.duration_ms,
                                    rate=a.rate, held=a.held)
                elif mode == "replicated":
                    cli(rport, "FLUSHALL")
                    res = run_bench(a.bench, f"redis://127.0.0.1:{rport}",
                                    [single_r.pid], [rport], a.duration_ms,
                                    rate=a.rate, held=a.held)
                else:
                    ports, nodes = clusters[mode]
                    roles = {p: cli(p, "ROLE").split("\n")[0] for p in ports}
                    primaries = [p for p in ports if roles[p] == "master"]
                    replicas = [p for p in ports if roles[p] != "master"]
                    seeds = ",".join(f"127.0.0.1:{p}" for p in primaries)
                    for p in primaries:
                        cli(p, "FLUSHALL")
                    res = run_bench(
                        a.bench, f"redis://127.0.0.1:{primaries[0]}",
                        [nodes[p].pid for p in primaries + replicas],
                        primaries, a.duration_ms, cluster=seeds,
                        shards=a.shards, rate=a.rate, held=a.held)
                    n = len(primaries)
                    cpu_p = sum(res["cpu_per_pid"][:n])
                    res["replica_cpu_s"] = sum(res["cpu_per_pid"][n:])
                    res["redis_cpu_s"] = cpu_p
                    res["redis_us_per_op"] = (cpu_p * 1e6 / res["ops"]
                                              if res["ops"] else 0)
                    # Spread: each primary's data commands (the scripts'
                    # own HGET, HSET, XADD...: the work) against the mean.
                    # The FCALL count alone varies with batch sizes: printed
                    # beside it, with each primary's CPU.
                    def rel(v):
                        m = statistics.mean(v) if v else 0
                        return [x / m - 1 for x in v] if m else []
                    res["spread"] = rel(res["data_commands_per_port"])
                    res["fcall_spread"] = rel(res["fcalls_per_port"])
                    res["cpu_spread"] = rel(res["cpu_per_pid"][:n])
                res["mode"] = mode
                res["repeat"] = r
                runs.append(res)
                print(f"repeat {r} {mode:10s}: {res['ops_per_s']:>8.0f} ops/s, "
                      f"Redis {res['redis_us_per_op']:.2f} us/op"
                      + (f" (replicas +{res['replica_cpu_s'] * 1e6 / max(res['ops'], 1):.2f} us/op), "
                         f"data commands per primary {res['data_commands_per_port']} "
                         f"(fcalls {res['fcalls_per_port']}, CPU s "
                         f"{[round(x, 2) for x in res['cpu_per_pid'][:n]]})"
                         if mode.startswith("cluster") else "")
                      + f", errors {res['errors']}", flush=True)
                # Where Redis's time went, as it times its commands (usec
                # per operation, wall-clock inside Redis: inflated where
                # the node waited for a CPU), how many operations one FCALL
                # carried, and the events decided per operation (the
                # instances share users: how often a user changes status
                # depends on how their cycles interleave).
                cmds = res.get("commands", {})
                cops = max(res.get("commands_ops", 0), 1)
                fc = cmds.get("fcall", [0, 0])[0]
                res["ops_per_fcall"] = cops / fc if fc else 0
                evs = sum(res.get("event_mix", {}).values())
                top = sorted(cmds.items(), key=lambda kv: -kv[1][1])[:5]
                print("    " + f"{evs:.2f} events per op; "
                      + (f"{cops / fc:.1f} ops per fcall; " if fc else "")
                      + ", ".join(f"{k} {v[0] / cops:.3f} calls {v[1] / cops:.2f} us"
                                  for k, v in top) + " per op", flush=True)
        s = statistics.median(x["redis_us_per_op"] for x in runs
                              if x["mode"] == "single")
        c = statistics.median(x["redis_us_per_op"] for x in runs
                              if x["mode"] == "cluster")
        cp = statistics.median(x["redis_us_per_op"] for x in runs
                               if x["mode"] == "cluster-plain")
        sr = statistics.median(x["redis_us_per_op"] for x in runs
                               if x["mode"] == "replicated")
        worst = max(abs(v) for x in runs if x["mode"] == "cluster"
                    for v in x["spread"])
        worst_f = max(abs(v) for x in runs if x["mode"] == "cluster"
                      for v in x["fcall_spread"])
        worst_c = max(abs(v) for x in runs if x["mode"] == "cluster"
                      for v in x["cpu_spread"])
        ratio = c / s if s else float("inf")
        ratio_r = c / sr if sr else float("inf")
        ratio_p = cp / s if s else float("inf")
        load = open("/proc/loadavg").read().split()[:3]
        print(f"\nRedis CPU per session operation, medians (primaries' CPU):")
        print(f"  3 primaries, no replicas {cp:.2f} us / one Redis {s:.2f} us: "
              f"{ratio_p:.2f} (target <= 1.2) "
              f"{'PASS' if ratio_p <= 1.2 else 'MISS'}")
        print(f"  3 primaries + 3 replicas {c:.2f} us / one Redis with a "
              f"replica {sr:.2f} us: {ratio_r:.2f} (target <= 1.2) "
              f"{'PASS' if ratio_r <= 1.2 else 'MISS'}")
        print(f"  3 primaries + 3 replicas / one Redis without one (unlike: "
              f"replication on one side only): {ratio:.2f}")
        print(f"load spread across primaries: worst {worst * 100:+.1f} % of the "
              f"mean (target within +-20 %) "
              f"{'PASS' if worst <= 0.2 else 'MISS'} (data commands; FCALLs "
              f"{worst_f * 100:+.1f} %, CPU {worst_c * 100:+.1f} %)")
        print(f"load average {' '.join(load)} on {os.cpu_count()} CPUs")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"runs": runs, "held_per_instance": a.held,
                           "single_us_per_op": s,
                           "replicated_us_per_op": sr,
                           "cluster_us_per_op": c,
                           "cluster_plain_us_per_op": cp, "ratio": ratio,
                           "ratio_replicated": ratio_r,
                           "ratio_plain": ratio_p,
                           "worst_spread": worst,
                           "worst_fcall_spread": worst_f,
                           "worst_cpu_spread": worst_c, "loadavg": load}, f,
                          indent=1)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
