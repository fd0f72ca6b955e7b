#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/smoke.py --build DIR: the bench tools still work (ctest bench/smoke).

Not a benchmark: tiny sizes, a few seconds, no figure judged. It fails when
a tool no longer runs or no longer measures what docs/benchmarks.md says:
bench_engine's options and JSON; the load generator against presenced and
against bench/echo with the same frames (the echo baseline counts a session
in only after its subscribe came back), flips counted on both, the fanout
and channel scenarios on presenced's channels; the runner's interleaved summary with
min/median/max, ratios and issue 21's target rows; bench_redis --help.
Servers are started by bench/run.py's own code and stopped by pid.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as bench  # noqa: E402

failures = []
checks = 0


def check(ok, what):
    global checks
    checks += 1
    print(f"{'ok' if ok else 'FAIL'} - {what}", flush=True)
    if not ok:
        failures.append(what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    args = ap.parse_args()
    b = args.build
    bench.raise_nofile(4096)

    p = subprocess.run([f"{b}/bench/bench_engine", "--help"],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 0 and "--sessions-per-user" in p.stdout,
          "bench_engine --help prints the options and exits 0")
    p = subprocess.run([f"{b}/bench/bench_engine", "--sessions", "x"],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 2, "bench_engine refuses a bad number (exit 2)")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "e.json")
        p = subprocess.run([f"{b}/bench/bench_engine", "--sessions", "4000",
                            "--sessions-per-user", "1", "--runs", "1",
                            "--channels", "10", "--json", out],
                           capture_output=True, text=True, timeout=120)
        e = json.load(open(out)) if p.returncode == 0 else {}
    ops = e.get("ops_per_s", {})
    check(e.get("sessions") == 4000 and e.get("users") == 4000 and
          all(ops.get(k, {}).get("median", 0) > 0 for k in
              ("connect", "status_by_handle", "disconnect_by_handle")),
          "bench_engine: connect, status and disconnect reported apart")

    srvs = {k: bench.Server(b, k, bench.free_port()).start()
            for k in bench.KINDS}
    try:
        res = {"scenarios": {}}
        sc = res["scenarios"]
        for name, kw in (("idle", dict(conns=100, hold_s=0.2, max_s=60)),
                         ("flip", dict(conns=50, window=2, duration_s=1,
                                       warm_s=0.3, max_s=60))):
            sc[name] = {k: [] for k in bench.KINDS}
            for r in range(2):
                for kind in bench.order(r):
                    sc[name][kind].append(bench.scenario_once(
                        b, srvs[kind], name, r, **kw) if name != "idle" else
                        bench.run_load(b, srvs[kind], name, **kw))
        for kind in bench.KINDS:
            i, f = sc["idle"][kind][0], sc["flip"][kind][0]
            check(i["ready"] == 100 and i["error_messages"] == 0,
                  f"{kind}: 100 sessions in, subscribe answered")
            check(f.get("changes", 0) > 0 and f["protocol_errors"] == 0,
                  f"{kind}: flips counted end to end")
        fo = bench.run_load(b, srvs["presenced"], "fanout", conns=21,
                            duration_s=1, warm_s=0.3, channels=1, max_s=60)
        check(fo.get("joins", 0) > 0 and not fo["timed_out"] and
              fo["join_to_member_ms"]["n"] == 20 * fo["joins"],
              "fanout on presenced's channels: every member told of "
              "every join")
        ch = bench.run_load(b, srvs["presenced"], "channel", conns=20,
                            churn_conns=4, churn_rate=8, update_rate=2,
                            duration_s=2.5, warm_s=0.5, rss_interval_s=0.5,
                            max_s=60)
        lat = ch.get("latency_ms", {})
        check(ch.get("ready") == 24 and ch.get("updates", 0) > 0 and
              ch.get("joins", 0) + ch.get("leaves", 0) > 0 and
              ch.get("untimed_frames") == 0 and ch["error_messages"] == 0 and
              lat.get("n", 0) >= 19 * ch["updates"] and
              0 < lat.get("p50", -1) <= lat.get("p99", -1) and
              ch.get("slow_consumer_closes") == 0 and
              len(ch.get("rss_series", [])) >= 3,
              "channel: every change timed at every member (updates, joins "
              "and leaves), close codes and RSS reported")
        if failures and failures[-1].startswith("channel:"):
            # Which part failed: the check above is one line for many terms.
            print("# channel run:", {k: ch.get(k) for k in (
                "ready", "updates", "joins", "leaves", "untimed_frames",
                "error_messages", "slow_consumer_closes")},
                "latency n/p50/p99:", lat.get("n"), lat.get("p50"), lat.get("p99"),
                "rss samples:", len(ch.get("rss_series", [])), flush=True)
        # The warm-up the idle storm and the channel run after (short here).
        bench.IDLE_WARM_S = 0.5
        w = bench.warm_server(b, srvs["presenced"])
        check(w is not None and w.get("changes", 0) > 0 and
              w.get("rss_kb_after", 0) > 0,
              "warm_server: flips served, the server's RSS read after")
        # bench/channel.py's verdict on the medians of several runs.
        import channel as chb
        runs = [{"latency_ms": {"p99": p}, "rss_growth_pct": g,
                 "frames_per_s": 115000, "slow_consumer_closes": c}
                for p, g, c in ((8.0, 0.0, 0), (12.0, 3.0, 0), (9.0, 0.5, 1))]
        m = chb.medians(runs)["targets"]
        check(m["p99"]["value"] == 9.0 and m["p99"]["ok"] and
              m["rss"]["value"] == 0.5 and m["rss"]["ok"] and
              m["slow"]["value"] == 1 and not m["slow"]["ok"],
              "channel.py --repeats: p99 and RSS on the medians, closes "
              "summed over the runs")
        s = bench.summarise(dict(res, engine={}, redis={}, redis_store={}))
        x = s["flip_changes_per_s"]
        check(x["presenced_min_max"] is not None and
              len(x["round_ratios"]) == 2 and x["ratio"] is not None,
              "summary: min/max, per-round ratios and the ratio of medians")
        t = s["targets_issue21"]
        check(t["flip_vs_echo"]["ok"] in (True, False) and
              t["engine_bytes_1pu_1m"]["ok"] is None,
              "issue 21 targets: measured rows judged, the rest not "
              "measured")
    finally:
        for srv in srvs.values():
            srv.stop()
    if os.path.exists(f"{b}/bench/bench_redis"):
        p = subprocess.run([f"{b}/bench/bench_redis", "--help"],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode == 0 and "usage" in p.stdout,
              "bench_redis --help exits 0 without running")
    print(f"{checks - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
