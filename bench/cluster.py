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
                             [--instructions]

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
it.

--instructions also counts the instructions the serving redis-servers (the
one Redis, the one with a replica, each cluster's primaries; the replicas
run natively) execute per operation, with valgrind's callgrind: a figure
the host does not move. The CPU ratio swings 1.10-1.47 from run to run on
this 2-core host for the same code, as six redis-servers and the load
generator share two cores (cache, context switches) where the one Redis
has a core to itself. It prints each run's count beside its CPU figures,
then the medians, the two like-with-like ratios and each primary's share.
bench_cluster reads INFO commandstats of every node right before its
window and right after it, so each server dumps its counts on entering
and leaving INFO (--dump-before/--dump-after=infoCommand): the dump
between its two INFOs is its window, without the setup (FLUSHALL, the held
sessions, the warm-up) and the INFOs. Its operations: bench_cluster's two
counts (those completed inside all the INFO reads, those from the start
of the first to the end of the last) differ by up to 2x on the cluster (a
read waits for a busy server's loop), so the servers count them over the
same spans: four per HSETNX, as each slot cycles connect, idle, online,
end, and a connect makes exactly one (count_instructions). A server runs
uninstrumented (valgrind, ~5x slower, not ~50x) until the held sessions
are open (Arm), so the default --held (the store's population, the same
as without --instructions) costs seconds, not minutes. Instrumented, a
server answers 1,500-3,500 operations a second, so the store's command
timeout and lease are raised (SLOW_STORE) and bench_cluster runs its
native 2,000 slots an instance (--cg-slots sets fewer: CG_SLOTS says what
that changes). The servers run with --hz 1 (a second
holds few operations; the timer's work would weigh ten times more per
operation than at native speed), and the clusters with a node timeout of
60 s (the cluster cron, once a second at --hz 1, would otherwise fail a
slowed node); each cluster's state and primaries are checked after every
run. After each run the same servers are counted idle for 5 s (the timer,
the cluster bus, the replicas' pings): printed, and subtracted for a
second pair of ratios. A run in which the store lost a connection
(errors: it then also counts the recovery) is run again, twice at most;
the summary names the runs kept with errors or with index sweeps by the
hundred (HSCAN: the store's recovery from a connection or lease lost
before the window). On a busy host (2026-12-06-1321, other tests
running) every cluster run at 300 slots was so disturbed, 10-25 % more
an operation: the count does not move with the host only while the
store keeps its connections, which the raised timeout and lease see to
since c930238 (2026-12-06).
Four modes twice, at --duration-ms 20000, take ~6 minutes. A mode's
count moves 0.3-5 % from one repeat to the next, nearly all of it inside
the script: Lua's garbage collector (its steps, 4.5-6.3 thousand
instructions an operation in three runs of the one Redis with a replica:
its work comes in cycles over the whole heap, few to a window) and how
the instances' cycles interleave (which events the script decides);
Redis's own commands (scriptCall) moved under 1 % in those runs.

At 2,000 slots the calls carry 55-63 operations under callgrind on the
cluster and ~70 on one Redis (natively 33-51 and 64-66). At 300 slots
they carried fewer on the cluster (13-14 at 300 slots, 7-8 at 150; on one
Redis 50-57): the per-call cost (the FCALL, its TIME, lease
ZSCORE, epoch HGET, INCRBY, log XADD and the XREADs it wakes) is spread
over fewer operations, and the cluster's figure is the larger for it.
The ops per FCALL are printed for each mode, and --cg-slots sets the
slots: runs at two settings give, per mode, instructions = a per
operation + b per call (on 2026-12-06, at 150 and 300 slots: b
~190,000-210,000 and a ~89,000 on either cluster, where one Redis's whole
figure was 80,000-86,000), from which the figure at the native calls'
sizes follows. Work the store does by the second rather than by the
operation (heartbeats, its index sweeps: HSCAN) also weighs tens of
times more per operation than natively, and is not in the idle count (no
instance is connected then): a cluster run whose window caught a sweep
counted up to ~5 % more."""
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
import threading
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


# --instructions: pid -> the directory of its callgrind dumps, for each
# redis-server run under callgrind.
CG = {}


def start_server(d, port, cluster, callgrind=False, node_timeout=5000):
    args = PIN[1:] + ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", d,
            "--logfile", f"redis-{port}.log"]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file",
                 f"nodes-{port}.conf", "--cluster-node-timeout",
                 str(node_timeout)]
    if callgrind:
        # Not instrumented until Arm turns it on (once the held sessions
        # are open); every INFO is then framed by two dumps
        # (window_instructions says why). --hz 1: a second under callgrind
        # holds few operations, and the timer's work (expiry, rehash, the
        # cluster cron) would otherwise weigh ten times as much per
        # operation as it does at native speed.
        cg = os.path.join(d, f"cg-{port}")
        os.makedirs(cg)
        args = PIN[1:] + ["valgrind", "--tool=callgrind",
                          f"--log-file={cg}/valgrind.log",
                          f"--callgrind-out-file={cg}/cg.out",
                          "--collect-atstart=yes", "--instr-atstart=no",
                          "--dump-before=infoCommand",
                          "--dump-after=infoCommand"] + \
            args[len(PIN[1:]):] + ["--hz", "1"]
    p = subprocess.Popen(args)
    if callgrind:
        CG[p.pid] = cg
    for _ in range(3000 if callgrind else 200):
        if "PONG" in cli(port, "PING"):
            return p
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on {port} did not start")


def cg_dumps(pid):
    """The callgrind dumps server pid wrote since the last call, in order,
    each (trigger, instructions: its 'summary:' line); removed."""
    d = CG[pid]
    fs = sorted((f for f in os.listdir(d) if f.startswith("cg.out.")),
                key=lambda f: int(f.split(".")[2].split("-")[0]))
    out = []
    for f in fs:
        trig, n = "", None
        with open(os.path.join(d, f)) as fh:
            for line in fh:
                if line.startswith("desc: Trigger:"):
                    trig = line.split(":", 2)[2].strip()
                elif line.startswith("summary:"):
                    n = int(line.split()[1])
                    break
        out.append((trig, n))
        os.unlink(os.path.join(d, f))
    return out


def window_instructions(pid):
    """The instructions server pid executed between the two INFOs of a
    bench_cluster run (its window) or of idle_instructions: the dump that
    follows the first INFO's --dump-after. Each INFO makes two dumps
    (before, after), so the run's are: setup (FLUSHALL, the held
    sessions, the warm-up), the first INFO, the window, the second INFO."""
    ds = cg_dumps(pid)
    after = [k for k, (t, _) in enumerate(ds) if "dump-after" in t]
    if len(after) != 2 or "dump-before" not in ds[after[0] + 1][0] \
            or after[1] != after[0] + 2:
        raise RuntimeError(f"callgrind dumps of {pid}: expected two INFOs, "
                           f"got {[t for t, _ in ds]}")
    return ds[after[0] + 1][1]


def idle_instructions(ports, pids, secs):
    """Instructions a second each server executes with no operations (the
    timer, the cluster bus, replication pings): framed by two INFOs like a
    bench_cluster window."""
    for pid in pids:
        cg_dumps(pid)
    for p in ports:
        cli(p, "INFO", "commandstats")
    time.sleep(secs)
    for p in ports:
        cli(p, "INFO", "commandstats")
    return [window_instructions(pid) / secs for pid in pids]


def cg_instr(pids, on):
    """Callgrind's instrumentation on or off in servers pids (each named:
    callgrind_control without a pid acts on every callgrind run)."""
    ps = [subprocess.Popen(["callgrind_control",
                            "--instr=" + ("on" if on else "off"), str(pid)],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
          for pid in pids if pid in CG]
    for p in ps:
        p.wait(timeout=120)


def cmdstats_calls(port, names):
    """INFO commandstats calls of the commands names, on port."""
    out = dict.fromkeys(names, 0)
    for line in cli(port, "INFO", "commandstats").splitlines():
        for n in names:
            if line.startswith(f"cmdstat_{n}:calls="):
                out[n] = int(line.split("=")[1].split(",")[0])
    return out


# Held sessions (the three instances together) still to open when Arm
# turns instrumentation on: none. bench_cluster opens them 1,000 in flight
# an instance; instrumented, a server then takes seconds between two
# answers to one connection and the store drops it (command_timeout_ms,
# 2 s): operations fail by the million. Turned on with 1,000 (of 6,000)
# still to open, one run in three failed so (300 slots).
ARM_LEFT = 0


class Arm(threading.Thread):
    """--instructions: turns the servers' instrumentation on once the held
    sessions are open. Until then they run uninstrumented (valgrind
    without counting: ~5x slower than native, not ~50x), so the 60,000
    opens of the default --held take seconds, not minutes, and a server
    answers each connection well within the store's command timeout.
    bench_cluster's window starts after the last open and a 1 s warm-up:
    the instrumented tail of the opens and the warm-up fall in the dump
    before its first INFO, not in the window. Progress: the servers'
    HSETNX calls (a held open makes exactly one, in the session index; the
    cycling, which starts after them, also HDELs: seen, the opens are
    over, instrumentation goes on at once)."""

    def __init__(self, meas, held):
        super().__init__(daemon=True)
        self.ports = [p for p, _ in meas]
        self.pids = [pid for _, pid in meas]
        self.base = [cmdstats_calls(p, ("hsetnx", "hdel")) for p in self.ports]
        self.target = 3 * held - ARM_LEFT
        self.stop = threading.Event()
        self.armed = None
        if self.target <= 0:
            cg_instr(self.pids, True)
            self.armed = (0.0, 0)

    def run(self):
        t0 = time.time()
        while self.armed is None and not self.stop.is_set():
            now = [cmdstats_calls(p, ("hsetnx", "hdel")) for p in self.ports]
            opened = sum(n["hsetnx"] - b["hsetnx"]
                         for n, b in zip(now, self.base))
            ended = sum(n["hdel"] - b["hdel"] for n, b in zip(now, self.base))
            if opened >= self.target or ended > 0:
                cg_instr(self.pids, True)
                self.armed = (time.time() - t0, opened)
                return
            time.sleep(0.1)


# bench_cluster's --slots with --instructions (0: its own 2,000, each
# instance keeping that many operations in flight, as natively). An
# instrumented server answers 1,500-3,500 operations a second: with 6,000
# in flight it takes seconds between two answers to one connection, and
# with the store's default command timeout (2 s) the store dropped the
# connection and operations failed by the million while it reconnected;
# until SLOW_STORE raised it, runs used 300 slots (450 still failed one
# run in three). At 300 a call carries ~57 operations on one Redis and
# 13-14 on the cluster (each instance's 300 slots over 12 shards, ~25 a
# shard), so the cluster pays its script's per-call cost over fewer
# operations than natively (the last paragraph of the docstring); fewer
# slots than 2,000 measure that per-call cost.
CG_SLOTS = 0

# With --instructions, the store's command timeout and lease (bench_cluster
# --command-timeout-ms, --lease-ms): a call to a server under callgrind
# waits seconds behind the others, and the store's defaults (2 s, 6 s)
# dropped the connection or lost the lease at more than 300 slots. With
# these the runs keep their connections at the native 2,000 slots.
SLOW_STORE = ["--command-timeout-ms", "60000", "--lease-ms", "180000"]


def cg_begin(meas, held):
    """--instructions, before a run: the servers' (port, pid) dumps of the
    setup dropped, Arm started."""
    for _, pid in meas:
        cg_dumps(pid)
    arm = Arm(meas, held)
    if arm.armed is None:
        arm.start()
    return arm


# Seconds each run's servers are watched idle after it (idle_instructions).
IDLE_S = 5


def count_instructions(res, meas, arm):
    """--instructions: each server's instructions over the run's window,
    per operation, and what the same servers execute idle (the timer, the
    cluster bus): printed, and kept in res.

    The window is each server's span between bench_cluster's two INFO
    reads (window_instructions): the commands it reports (INFO
    commandstats, second read less first, summed over the servers) are
    counted over the same spans. Its operation counts are not: ops are
    those completed between its last first read and its first second read,
    commands_ops those from the start of the first reads to the end of the
    second, and under callgrind a read waits for the server's loop, up to
    a second or more on a loaded primary: the two differ by up to 2x on
    the cluster. The operations in the spans: 4 per HSETNX. Each slot
    cycles connect -> idle -> online -> end, and a connect makes exactly
    one HSETNX (the session index's entry; nothing else does: the held
    opens make one each, 3,000 for 3,000), so over a span the operations
    are four times the connects, within 3 a slot (where each slot's cycle
    stands at the span's ends: +-~50 operations over 900 slots, against
    30,000-60,000). Printed beside bench_cluster's two counts, which
    bracket it within 1 % in the native runs of 2026-12-06-0129; under
    callgrind it was up to 2 % above both in the one Redis's runs, whose
    answers reach the instances a little after the server's span ends.

    That holds while the slots' cycles are spread. Until 2026-12-06 16:05
    every slot started with a connect at once, and on one Redis the store's
    queue kept them in step: rounds of ~6,000 operations of one kind, a
    round of connects every fourth, so a 20 s window at 2,000 slots caught
    whole rounds (48,000 or 40,000 operations by HSETNX where bench_cluster
    counted 36,854-47,617; 72,000-123,000 instructions an operation for
    the same code). bench_cluster now starts its slots a quarter at a time
    (start_groups), and with one server the operations are its completions
    between the first read's answer and the second's (info_ops: the server
    ran nothing else between them but the answers in transit at either
    end); 4 x HSETNX is printed beside it (2-10 % apart in the runs of
    16:05). The cluster's three spans differ: 4 per HSETNX there."""
    pids = [pid for _, pid in meas]
    arm.stop.set()
    if arm.is_alive():
        arm.join()
    if arm.armed is None:
        raise RuntimeError("instrumentation never went on: no held opens seen")
    res["armed_after_s"], res["armed_at_opened"] = arm.armed
    ins = [window_instructions(pid) for pid in pids]
    lo, hi = res["ops"], max(res.get("commands_ops", 0), res["ops"])
    by_hsetnx = 4 * res.get("commands", {}).get("hsetnx", [0, 0])[0]
    ops = res["info_ops"] if len(pids) == 1 else by_hsetnx
    tot = sum(ins)
    idle = idle_instructions([p for p, _ in meas], pids, IDLE_S)
    cg_instr(pids, False)
    m = statistics.mean(ins)
    res["instructions_per_server"] = ins
    res["instructions_ops"] = ops
    res["instructions_per_op"] = tot / ops if ops else 0
    res["instructions_ops_bracket"] = [lo, hi]
    res["idle_instructions_per_s"] = idle
    # The background's part of the window: idle rate x the window's length.
    res["idle_share"] = sum(idle) * res["seconds"] / tot if tot else 0
    res["instructions_spread"] = [x / m - 1 for x in ins] if m else []
    res["hscan_per_op"] = (res.get("commands", {}).get("hscan", [0, 0])[0]
                           / ops if ops else 0)
    how = ("completions between the INFO answers; 4 x HSETNX "
           f"{by_hsetnx}" if len(pids) == 1 else "4 x HSETNX")
    print(f"    instructions: {tot / 1e6:.1f} M / {ops:.0f} ops ({how}; "
          f"bench_cluster's {lo}-{hi}) = "
          f"{res['instructions_per_op']:,.0f} per op"
          + (f"; per server (M) {[round(x / 1e6, 1) for x in ins]}, spread "
             f"{[f'{x * 100:+.1f}%' for x in res['instructions_spread']]}"
             if len(ins) > 1 else "")
          + f"; idle {sum(idle) / 1e6:.2f} M/s "
          f"({res['idle_share'] * 100:.1f} % of the window); instrumented "
          f"{res['armed_after_s']:.1f} s in, {res['armed_at_opened']} held "
          f"open", flush=True)


def instructions_summary(runs):
    """--instructions: the medians per mode, the ratios beside the CPU
    ones, the spread over primaries; returned for --json."""
    med = {}
    for mode in ("single", "replicated", "cluster", "cluster-plain"):
        xs = [x for x in runs if x["mode"] == mode]
        v = [x["instructions_per_op"] for x in xs]
        net = [x["instructions_per_op"] * (1 - x["idle_share"]) for x in xs]
        med[mode] = {"per_op": statistics.median(v),
                     "per_op_runs": v,
                     "repeat_spread": (max(v) - min(v)) / statistics.mean(v),
                     "per_op_less_idle": statistics.median(net),
                     "ops_per_fcall": statistics.median(
                         x["ops_per_fcall"] for x in xs)}
    def r(a, b, k="per_op"):
        return med[a][k] / med[b][k] if med[b][k] else float("inf")
    out = {"modes": med,
           "ratio_plain": r("cluster-plain", "single"),
           "ratio_replicated": r("cluster", "replicated"),
           "ratio": r("cluster", "single"),
           "ratio_plain_less_idle": r("cluster-plain", "single",
                                      "per_op_less_idle"),
           "ratio_replicated_less_idle": r("cluster", "replicated",
                                           "per_op_less_idle"),
           "replication": r("replicated", "single"),
           "replication_cluster": r("cluster", "cluster-plain"),
           "worst_spread": max((abs(v) for x in runs
                                if x["mode"].startswith("cluster")
                                for v in x["instructions_spread"]),
                               default=0)}
    print("\nRedis instructions per session operation (callgrind; the serving "
          "servers: one Redis, the primaries), medians:")
    for mode, m in med.items():
        print(f"  {mode:13s} {m['per_op']:>10,.0f} (repeats "
              f"{', '.join(f'{v:,.0f}' for v in m['per_op_runs'])}: "
              f"{m['repeat_spread'] * 100:.1f} % apart; less the idle "
              f"servers' {m['per_op_less_idle']:,.0f}; "
              f"{m['ops_per_fcall']:.1f} ops per fcall)")
    rp, rr = out["ratio_plain"], out["ratio_replicated"]
    print(f"  3 primaries, no replicas / one Redis: {rp:.3f} (target <= 1.2) "
          f"{'PASS' if rp <= 1.2 else 'MISS'}; less idle "
          f"{out['ratio_plain_less_idle']:.3f}")
    print(f"  3 primaries + 3 replicas / one Redis with a replica: {rr:.3f} "
          f"(target <= 1.2) {'PASS' if rr <= 1.2 else 'MISS'}; less idle "
          f"{out['ratio_replicated_less_idle']:.3f}")
    print(f"  3 primaries + 3 replicas / one Redis without one (unlike): "
          f"{out['ratio']:.3f}; a replica's cost to its primary: one Redis "
          f"{out['replication']:.3f}x, the cluster "
          f"{out['replication_cluster']:.3f}x")
    print(f"  instructions spread across primaries: worst "
          f"{out['worst_spread'] * 100:+.1f} % of the mean (target within "
          f"+-20 %) {'PASS' if out['worst_spread'] <= 0.2 else 'MISS'}")
    # Kept after three tries with errors, or whose window held index walks
    # (HSCAN) beyond the periodic sweep's: their counts hold the store's
    # recovery from a lost connection or lease (reconnecting, sweeping; the
    # lost connection may come before the window), 5-20 % more a run at 300
    # slots, where those runs made 0.3-0.7 HSCAN an operation. At 2,000
    # slots the orphan sweep's one pass a shard (a shard's ~5,500 sessions
    # in 16,381 buckets: an HSCAN an entry) made 0.09-0.24 in clean runs
    # (2026-12-06 16:08); before it went to one pass a shard, 0.43-0.48.
    bad = [f"{x['mode']} (repeat {x['repeat']}: {x['errors']} errors, "
           f"{x['hscan_per_op']:.2f} HSCAN an op)" for x in runs
           if x["errors"] or x["hscan_per_op"] > 0.3]
    out["runs_disturbed"] = bad
    if bad:
        print(f"  runs disturbed by the store's recovery (errors, or HSCAN "
              f"above 0.3 an op; counts inflated): {', '.join(bad)}")
    return out


def run_bench(bench, url, pids, ports, dur, cluster=None, shards=12,
              sharded=False, rate=0, held=0, timeout=120, slots=0,
              slow=False):
    cmd = [bench, "--url", url, "--pids", ",".join(map(str, pids)),
           "--ports", ",".join(map(str, ports)), "--duration-ms", str(dur)]
    if slow:
        cmd += SLOW_STORE
    if held:
        cmd += ["--held", str(held)]
    if slots:
        cmd += ["--slots", str(slots)]
    if rate:
        cmd += ["--rate", str(rate)]
    if cluster:
        cmd += ["--cluster", cluster, "--shards", str(shards)]
    elif sharded:
        cmd += ["--shards", str(shards)]
    out = subprocess.run((PIN[0] if PIN else []) + cmd, capture_output=True,
                         text=True, timeout=timeout)
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
    ap.add_argument("--instructions", action="store_true",
                    help="also count the instructions the serving "
                    "redis-servers execute per operation (callgrind; the "
                    "replicas run natively): a figure the host's cores and "
                    "load do not move")
    ap.add_argument("--cg-slots", type=int, default=CG_SLOTS,
                    help="with --instructions, bench_cluster's slots an "
                    "instance (%(default)s; CG_SLOTS; 0: bench_cluster's "
                    "own, 2,000, as natively): fewer make smaller calls, "
                    "for the script's per-call cost")
    ap.add_argument("--json")
    a = ap.parse_args()
    cg = a.instructions
    # A run under callgrind: the held sessions alone take a minute or more.
    tmo = 1800 if cg else 120
    slots = a.cg_slots if cg else 0
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
        single = start_server(d, sport, False, callgrind=cg)
        procs.append(single)
        # The same single Redis with a replica, as production runs it: a
        # primary pays for replicating the script's writes.
        rport = free_port(taken + [sport])
        taken.append(rport)
        single_r = start_server(d, rport, False, callgrind=cg)
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
            # --instructions: the primaries under callgrind. redis-cli
            # makes the first three nodes given the primaries (one host:
            # checked below, and after every run). A node of a cluster is
            # failed once it has not answered for the node timeout: 60 s
            # under callgrind, where a node answers tens of times slower
            # (at --hz 1 the cluster cron, which pings and times out
            # nodes, runs once a second: enough for a timeout of 60 s).
            nodes = {p: start_server(d, p, True, callgrind=cg and k < 3,
                                     node_timeout=60000 if cg else 5000)
                     for k, p in enumerate(ports)}
            procs.extend(nodes.values())
            subprocess.run(["redis-cli", "--cluster", "create"] +
                           [f"127.0.0.1:{p}" for p in ports] +
                           ["--cluster-replicas", "1" if replicas else "0",
                            "--cluster-yes"],
                           capture_output=True, timeout=300 if cg else 60,
                           check=True)
            for _ in range(300):
                ok = all("cluster_state:ok" in cli(p, "CLUSTER", "INFO")
                         for p in ports)
                synced = sum("master_link_status:up" in
                             cli(p, "INFO", "replication") for p in ports)
                if ok and synced == len(ports) // 2 * replicas:
                    break
                time.sleep(0.1)
            if cg:
                check_cluster(ports, ports[:3])
            return ports, nodes

        def check_cluster(ports, primaries):
            """--instructions: the cluster is up and its primaries are
            the nodes under callgrind (no node was failed over)."""
            roles = {p: cli(p, "ROLE").split("\n")[0] for p in ports}
            bad = [p for p in ports if "cluster_state:ok" not in
                   cli(p, "CLUSTER", "INFO")]
            if bad or sorted(p for p in ports if roles[p] == "master") \
                    != sorted(primaries):
                raise RuntimeError(f"cluster {ports}: state not ok on {bad} "
                                   f"or primaries not {primaries}: {roles}")
        clusters = {"cluster": make_cluster(True),
                    "cluster-plain": make_cluster(False)}
        runs = []
        retried = {}
        for r in range(a.repeats):
            order = ("single", "replicated", "cluster", "cluster-plain")
            todo = list(order[r % 4:] + order[:r % 4])
            while todo:
                mode = todo.pop(0)
                if mode == "single":
                    cli(sport, "FLUSHALL")
                    meas = [(sport, single.pid)]
                    arm = cg_begin(meas, a.held) if cg else None
                    res = run_bench(a.bench, f"redis://127.0.0.1:{sport}",
                                    [single.pid], [sport], a.duration_ms,
                                    rate=a.rate, held=a.held, timeout=tmo,
                                    slots=slots, slow=cg)
                elif mode == "replicated":
                    cli(rport, "FLUSHALL")
                    meas = [(rport, single_r.pid)]
                    arm = cg_begin(meas, a.held) if cg else None
                    res = run_bench(a.bench, f"redis://127.0.0.1:{rport}",
                                    [single_r.pid], [rport], a.duration_ms,
                                    rate=a.rate, held=a.held, timeout=tmo,
                                    slots=slots, slow=cg)
                else:
                    ports, nodes = clusters[mode]
                    roles = {p: cli(p, "ROLE").split("\n")[0] for p in ports}
                    primaries = [p for p in ports if roles[p] == "master"]
                    replicas = [p for p in ports if roles[p] != "master"]
                    seeds = ",".join(f"127.0.0.1:{p}" for p in primaries)
                    for p in primaries:
                        cli(p, "FLUSHALL")
                    meas = [(p, nodes[p].pid) for p in primaries]
                    arm = cg_begin(meas, a.held) if cg else None
                    res = run_bench(
                        a.bench, f"redis://127.0.0.1:{primaries[0]}",
                        [nodes[p].pid for p in primaries + replicas],
                        primaries, a.duration_ms, cluster=seeds,
                        shards=a.shards, rate=a.rate, held=a.held,
                        timeout=tmo, slots=slots, slow=cg)
                    if cg:
                        check_cluster(ports, ports[:3])
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
                if cg:
                    # A run in which the store lost a connection (a
                    # server slowed past its 2 s command timeout: errors)
                    # counts the recovery (reconnecting, re-asserting its
                    # sessions), and one whose instrumentation came on
                    # after the window opened counts nothing: run again.
                    counted = True
                    try:
                        count_instructions(res, meas, arm)
                        bad = f"{res['errors']} errors" if res["errors"] \
                            else ""
                    except RuntimeError as e:
                        cg_instr([pid for _, pid in meas], False)
                        bad, counted = str(e), False
                    retried[r, mode] = retried.get((r, mode), 0) + 1
                    if bad and retried[r, mode] <= 2:
                        print(f"    {bad}: run again", flush=True)
                        runs.remove(res)
                        todo.insert(0, mode)
                    elif bad and not counted:
                        print(f"    {bad}, three times: left out",
                              flush=True)
                        runs.remove(res)
                    elif bad:
                        print(f"    {bad}, three times: kept", flush=True)
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
        print(f"\nRedis CPU per session operation, medians (primaries' CPU"
              + ("; under callgrind: valgrind's CPU, not a figure)" if cg
                 else "):"))
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
        isum = instructions_summary(runs) if cg else None
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
                           "worst_cpu_spread": worst_c, "loadavg": load,
                           **({"instructions": isum,
                               "cg_slots": a.cg_slots} if cg else {})}, f,
                          indent=1)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
