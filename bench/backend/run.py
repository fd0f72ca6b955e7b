#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The backend session connection's figures (issue 15, docs/benchmarks.md):

  hold      one presenced holds SESSIONS backend-reported sessions over CONNS
            backend connections: RSS per session (RSS after minus RSS of the
            idle daemon, over the sessions; one user per session);
  reassert  a backend with 100,000 sessions drops its connection, comes
            back inside the resume window and syncs the same list: the time
            from its first sync frame to the last ack, and the events
            emitted meanwhile (must be 0);
  ops       open/status/close cycles through CONNS backend connections on
            the embedded store: session ops per second.

    python3 bench/backend/run.py --build build-bench [--sessions 1000000]
        [--conns 64] [--reassert 100000] [--ops-seconds 10] [--ops-conns 2]

presenced and bench_backend come from the build directory; a RelWithDebInfo
build (make bench's build-bench) is what the figures are taken with."""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

KEY = "bench-api-key-0123456789-abcdefghijklmnop"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def events_total(port):
    # The API key: /metrics needs it (docs/security.md).
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                 headers={"Authorization": "Bearer " + KEY})
    body = urllib.request.urlopen(req, timeout=10).read().decode()
    return sum(int(float(l.split()[-1])) for l in body.splitlines()
               if l.startswith("presenced_events_total{"))


class Daemon:
    def __init__(self, build, extra):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [f"{build}/presenced", "--listen", f"127.0.0.1:{self.port}", "--api-key", KEY,
             "--log-level", "warn", "--offline-grace-ms", "0", "--max-connections", "1000"] + extra,
            stdin=subprocess.DEVNULL)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("presenced did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def driver(build, port, *args):
    return subprocess.Popen([f"{build}/bench/bench_backend", str(port), KEY] + [str(a) for a in args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def hold(a):
    d = Daemon(a.build, [])
    try:
        time.sleep(0.5)
        before = rss_kb(d.proc.pid)
        p = driver(a.build, d.port, "hold", a.sessions, a.conns, a.id_pad)
        res = json.loads(p.stdout.readline())
        time.sleep(1.0)
        after = rss_kb(d.proc.pid)
        p.stdin.close()
        p.wait(60)
        res.update(id_pad=a.id_pad, rss_before_kb=before, rss_after_kb=after,
                   rss_bytes_per_session=round((after - before) * 1024 / a.sessions, 1))
        return res
    finally:
        d.stop()


def reassert(a):
    d = Daemon(a.build, ["--origin-resume-ms", "60000"])
    try:
        p = driver(a.build, d.port, "reassert", a.reassert)
        opened = json.loads(p.stdout.readline())
        ev0 = events_total(d.port)
        p.stdin.write("go\n")
        p.stdin.flush()
        res = json.loads(p.stdout.readline())
        time.sleep(0.5)
        res["events_during_reassert"] = events_total(d.port) - ev0
        res["opened_before"] = opened["applied"]
        p.stdin.close()
        p.wait(60)
        return res
    finally:
        d.stop()


def ops(a):
    d = Daemon(a.build, [])
    try:
        p = driver(a.build, d.port, "ops", a.ops_seconds, a.ops_conns)
        res = json.loads(p.stdout.readline())
        p.wait(60)
        return res
    finally:
        d.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build-bench")
    ap.add_argument("--sessions", type=int, default=1000000)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--id-pad", type=int, default=0,
                    help="hold: extra bytes in every session and user id (26: UUID-long ids)")
    ap.add_argument("--reassert", type=int, default=100000)
    ap.add_argument("--ops-seconds", type=float, default=10)
    ap.add_argument("--ops-conns", type=int, default=2)
    ap.add_argument("--only", choices=["hold", "reassert", "ops"])
    a = ap.parse_args()
    results = {}
    for name, fn in (("hold", hold), ("reassert", reassert), ("ops", ops)):
        if a.only and a.only != name:
            continue
        results[name] = r = fn(a)
        print(json.dumps(r), flush=True)
    targets = []
    if "hold" in results:
        r = results["hold"]
        targets.append((f"{r['sessions']:,} sessions over {r['connections']} connections: "
                        f"{r['rss_bytes_per_session']} B RSS per session", r["rss_bytes_per_session"] <= 400
                        and r["applied"] == r["sessions"], "<= 400 B"))
    if "reassert" in results:
        r = results["reassert"]
        targets.append((f"re-assert of {r['sessions']:,} sessions: {1000 * r['seconds']:.0f} ms, "
                        f"{r['events_during_reassert']} events", r["seconds"] < 1
                        and r["events_during_reassert"] == 0 and r["resumed"], "< 1 s, 0 events"))
    if "ops" in results:
        r = results["ops"]
        targets.append((f"{r['ops_per_s']:,.0f} session ops/s over {r['connections']} backend connections",
                        r["ops_per_s"] >= 200000, ">= 200,000/s"))
    for text, ok, want in targets:
        print(f"{'ok  ' if ok else 'MISS'} {text} (target {want})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
