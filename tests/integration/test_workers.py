#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""
--workers 2: one command, two presenced processes on one port and one Redis
(issue 20, "every core").

Each scenario starts its own redis-server (test_redis_cluster.Redis) and one
`presenced --workers 2` on one port; an observer is a plain presenced on the
same Redis where the workers are gone.

  spread:   clients connecting repeatedly land on both workers (each session
            names its instance: <base>-w1 / <base>-w2); a watcher on one
            worker sees users on the other come and go.
  kill9:    kill -9 of one worker: each of its users goes offline once
            (session.disconnected reason instance_lost, one user.offline in
            the log), the other worker's users stay online, and the
            supervisor starts a replacement (a new instance) that serves.
  sigterm:  SIGTERM of the supervisor ends both workers (exit status 0) and
            their users go offline at once (reason shutdown), as seen from
            the observer.
  feed:     one log reader per machine: Redis serves one XREAD for the two
            workers, worker 1 hands the log to worker 2; a watcher on worker
            2 sees changes of users on both workers. kill -9 of worker 1 (the
            reader): worker 2 reads the log itself from where the feed
            stopped, and a change made on worker 2 right after still reaches
            its watcher; the replacement reads for itself (two XREADs).
  interest: the reader passes each worker only the events its clients watch
            (interest-based delivery): six users on both workers flip their
            status 12 times each at once (the writes of a worker batch into
            shared log entries, which the reader cuts per worker); watchers
            on both workers see every change of each user they watch exactly
            once, in order (each frame's `from` is the previous status), and
            nothing more; a user nobody on worker 2 watched, watched there
            after the burst (and again after the first watcher left), is
            seen at once; a channel observed on worker 2 sees a join and a
            leave made on worker 1; event streams open on both workers are
            each woken for every live event.
  webhook:  one endpoint configured on --workers 2 (routed by interest): one
            worker delivers it, and every event of users connecting and
            leaving on both workers reaches the receiver exactly once, in
            log order.
  metrics:  /metrics reached through the shared port holds every worker's
            figures, each sample labelled worker="1" / worker="2" (whichever
            worker answers), every family under one HELP and TYPE, the
            cluster's figures once and unlabelled; a worker's counter never
            goes back from one scrape to the next (it jumped between the
            workers' values, read by Prometheus as resets); the open
            WebSocket gauges of the two workers add up to the clients open.
  embedded: --workers 2 without --store is refused with a clear message.

Run: /usr/bin/python3 tests/integration/test_workers.py --presenced PATH
"""

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_KEY, SSE, Checks, Client, Daemon, HookReceiver,  # noqa: E402
                     free_port, http, http_sync, parse_args, sanitizer_report, token)
from test_redis_cluster import (Redis, read_log, replay, statuses,  # noqa: E402
                                wait_for)

HB_MS = 200
LEASE_MS = 1000


def flags(redis, workers=2):
    f = {**redis.store_flags(), "--redis-heartbeat-ms": str(HB_MS),
         "--redis-lease-ms": str(LEASE_MS), "--redis-timeout-ms": "1000",
         "--shutdown-timeout-ms": "3000"}
    if workers:
        f["--workers"] = str(workers)
    return f


def children(pid):
    """The pids of pid's child processes (the workers)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return sorted(int(x) for x in f.read().split())
    except OSError:
        return []


async def instance_of(d, c, wait_s=3.0):
    """The instance holding client c's session (from the sessions API).
    On Redis the welcome can come before the session's write is in the
    store (under ASan on a cluster, by a few hundred ms), so the session is
    looked for until it shows, for up to wait_s; None if it never does."""
    deadline = time.monotonic() + wait_s
    while True:
        r = await http(d, "GET", f"/v1/users/{c.user}/sessions")
        for s in (r.json().get("sessions", []) if r.status == 200 else []):
            if s["session_id"] == c.session_id:
                return s.get("instance")
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.05)


async def spread_clients(d, prefix, limit=60):
    """Connect users prefix-0, prefix-1... until both workers hold some.
    Returns {instance: [client, ...]}."""
    by = {}
    for i in range(limit):
        c = await Client.connect(d, f"{prefix}-{i}")
        by.setdefault(await instance_of(d, c), []).append(c)
        # A session whose instance was not found (None) is no worker.
        named = [v for k, v in by.items() if k]
        if len(named) >= 2 and all(len(v) >= 2 for v in named):
            break
    return by


async def test_spread(t, d, redis):
    by = await spread_clients(d, "sp")
    names = sorted(k for k in by if k)
    t.check("spread: repeated connects land on both workers (two instances)",
            len(names) == 2, str({k: len(v) for k, v in by.items()}))
    base = names[0].rsplit("-w", 1)[0] if names else ""
    t.check("spread: the instances are <base>-w1 and <base>-w2",
            names == [f"{base}-w1", f"{base}-w2"], str(names))
    if len(names) != 2:
        return
    a, b = by[names[0]][0], by[names[1]][0]
    # A watcher that lands on a's worker, watching b's user (on the other).
    watcher = None
    for i in range(30):
        w = await Client.connect(d, f"sp-watch-{i}", watch=[b.user])
        if await instance_of(d, w) == names[0]:
            watcher = w
            break
        await w.close()
    t.check("spread: a watcher lands on the first worker", watcher is not None)
    if watcher is None:
        return
    await watcher.send({"type": "subscribe", "users": [b.user], "id": 1})
    snap = await watcher.expect_type("presence", 3, snapshot=True)
    t.check("spread: the watcher on worker 1 sees a user on worker 2 online",
            snap is not None and snap["users"][0]["status"] == "online", str(snap))
    await b.close()
    m = await watcher.change(b.user, 3)
    t.check("spread: ... and sees that user go offline when it disconnects",
            m is not None and m["users"][0]["status"] == "offline", str(m))
    inst = []

    async def two_instances():
        r = await http(d, "GET", "/metrics")
        inst[:] = [ln for ln in r.body.decode().splitlines()
                   if ln.startswith("presenced_cluster_instances")]
        return inst == ["presenced_cluster_instances 2"]
    t.check("spread: /metrics counts the two workers as two live instances",
            await wait_for(two_instances, 5) is not None, str(inst))
    for cs in by.values():
        for c in cs:
            await c.close()
    await watcher.close()
    await a.close()


async def test_kill9(t, d, redis):
    by = await spread_clients(d, "k9")
    names = sorted(k for k in by if k)
    t.check("kill9: clients on both workers", len(names) == 2, str(list(by)))
    if len(names) != 2:
        return
    pids = children(d.pid)
    t.check("kill9: the supervisor has two worker processes", len(pids) == 2, str(pids))
    # Worker 2's pid, from the supervisor's log.
    m = re.search(r"worker 2 started \(pid (\d+)\)", d.stderr_text())
    victim_pid = int(m.group(1)) if m else None
    t.check("kill9: the supervisor logs worker 2's pid", victim_pid in pids,
            f"{victim_pid} {pids}")
    if victim_pid not in pids:
        return
    victim_inst = [n for n in names if n.endswith("-w2")][0]
    lost_users = [c.user for c in by[victim_inst]]
    kept_users = [c.user for n, cs in by.items() if n != victim_inst for c in cs]
    os.kill(victim_pid, signal.SIGKILL)

    async def all_offline():
        # A connection the kernel put in the dead worker's accept queue in
        # its last moments is reset (SO_REUSEPORT): a client retries.
        try:
            st = await statuses(d, lost_users)
        except ConnectionError:
            return False
        return all(v == "offline" for v in st.values())
    took = await wait_for(all_offline, (LEASE_MS + 4000) / 1000, 0.05)
    t.check(f"kill9: the killed worker's {len(lost_users)} users go offline "
            f"(lease {LEASE_MS} ms)", took is not None, f"took {took}")
    t.note(f"kill9: offline after {1000 * (took or 0):.0f} ms")
    st = await statuses(d, kept_users)
    t.check("kill9: the other worker's users stay online",
            all(v == "online" for v in st.values()), str(st))

    async def replaced():
        now = children(d.pid)
        return len(now) == 2 and victim_pid not in now
    t.check("kill9: the supervisor starts a replacement worker",
            await wait_for(replaced, 5) is not None, str(children(d.pid)))
    new_inst = None
    for i in range(40):
        c = await Client.connect(d, f"k9-new-{i}")
        inst = await instance_of(d, c)
        await c.close()
        if inst not in names:
            new_inst = inst
            break
    t.check("kill9: the replacement serves clients as a new instance (<base>-w2.1)",
            new_inst == victim_inst + ".1", f"{new_inst}")
    await asyncio.sleep(0.3)
    log = await read_log(d)
    everyone = set(lost_users + kept_users)
    cur, problems = replay(log, everyone)
    t.check("kill9: each user transition exactly once in the log", not problems,
            "; ".join(problems[:5]))
    lost = [e for e in log if e["type"] == "session.disconnected"
            and e.get("reason") == "instance_lost" and e.get("user_id") in lost_users]
    offs = [e for e in log if e["type"] == "user.offline" and e.get("user_id") in lost_users]
    t.check("kill9: each of its sessions ends once with reason instance_lost, "
            "each user goes offline once",
            len(lost) == len(lost_users) and len(offs) == len(lost_users),
            f"{len(lost)} lost, {len(offs)} offline, {len(lost_users)} users")
    t.check("kill9: the supervisor logged the death and the restart",
            "worker 2 died (killed by signal 9)" in d.stderr_text(), d.stderr_tail(8))
    for cs in by.values():
        for c in cs:
            await c.close()


async def stopped_by(t, d, observer, sig, label, group=False):
    by = await spread_clients(d, label[:5])
    names = sorted(k for k in by if k)
    t.check(f"{label}: clients on both workers", len(names) == 2, str(list(by)))
    users = [c.user for cs in by.values() for c in cs]
    watcher = await Client.connect(observer, f"{label[:5]}-watch", watch=users)
    await watcher.send({"type": "subscribe", "users": users, "id": 1})
    await watcher.expect_type("presence", 3, snapshot=True)
    pids = children(d.pid)
    t0 = time.monotonic()
    if group:
        # systemd's KillMode=control-group (the unit's default) and a
        # terminal's Ctrl-C signal every process, the workers too, while the
        # supervisor forwards the signal as well.
        for p in pids:
            os.kill(p, sig)
    code = d.stop(timeout=8, sig=sig)
    t.check(f"{label}: the supervisor exits with status 0", code == 0,
            f"exit={code} {d.stderr_tail(8)}")
    t.check(f"{label}: both worker processes are gone",
            all(not os.path.exists(f"/proc/{p}") or
                open(f"/proc/{p}/stat").read().split()[2] == "Z" for p in pids), str(pids))
    offline, reasons = set(), set()
    deadline = time.monotonic() + 3
    while len(offline) < len(users) and time.monotonic() < deadline:
        try:
            m = await watcher.recv(max(0.05, deadline - time.monotonic()))
        except Exception:
            break
        if m.get("type") == "presence" and m.get("snapshot") is False:
            for u in m["users"]:
                if u["status"] == "offline":
                    offline.add(u["user_id"])
                    reasons.add(u.get("reason"))
    took = time.monotonic() - t0
    t.check(f"{label}: all {len(users)} users go offline (seen from another instance)",
            offline == set(users), f"{len(offline)} of {len(users)}")
    t.check(f"{label}: ... with reason shutdown, not after the lease",
            reasons == {"shutdown"}, str(reasons))
    t.note(f"{label}: users offline {1000 * took:.0f} ms after the {label.upper()}")
    if group:
        t.check(f"{label}: no worker takes the signal delivered twice for a second one",
                "second signal" not in d.stderr_text(), d.stderr_tail(12))
    await watcher.close()
    for cs in by.values():
        for c in cs:
            await c.close()


async def test_sigterm(t, d, redis, observer):
    await stopped_by(t, d, observer, signal.SIGTERM, "sigterm")


# systemd stops the unit by signalling every process of its cgroup: each
# worker gets SIGTERM from systemd and again from the supervisor, the same
# request, which must not count as an operator's second signal (a stop at
# once: the Redis leave and the webhooks' last deliveries cut short).
async def test_sigterm_group(t, d, redis, observer):
    await stopped_by(t, d, observer, signal.SIGTERM, "cgroup sigterm", group=True)


# "nohup presenced --workers 2 &": SIGHUP stays ignored by the supervisor
# and the workers alike. The supervisor waited for it (a blocked signal is
# kept even when ignored) and passed it on to workers that ignore it, then
# SIGKILLed them at --shutdown-timeout-ms + 2 s.
async def test_nohup(t, d, redis):
    x = Daemon(d.binary, {**flags(redis), "--shutdown-timeout-ms": "300"}, "nohup")
    x.port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCED_")}
    p = subprocess.Popen(x.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    try:
        async def up():
            try:
                return http_sync(x.port, "GET", "/healthz", timeout=1.0)[0] == 200
            except OSError:
                return False
        t.check("nohup: the workers serve", await wait_for(up, 10) is not None)
        p.send_signal(signal.SIGHUP)
        await asyncio.sleep(3.0)  # past the SIGKILL 2.3 s after a stop
        t.check("nohup: after SIGHUP the supervisor and its workers still run and serve",
                p.poll() is None and len(children(p.pid)) == 2 and await up(),
                f"exit={p.poll()} workers={children(p.pid)}")
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=10)
        text = out.decode("utf-8", "replace")
        t.eq("nohup: SIGTERM still stops it, exit status 0", p.returncode, 0)
        t.check("nohup: no worker was killed", "killed by signal" not in text, text[-600:])
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


# A terminal hangup ends the supervisor as SIGTERM does, and it passes the
# signal on: each worker shuts down as on SIGTERM (server.c, on_signal).
async def test_sighup(t, d, redis, observer):
    await stopped_by(t, d, observer, signal.SIGHUP, "sighup")


def parse_metrics(text):
    """{(name, labels as a sorted tuple): value}, the HELP names in order,
    and what breaks the text format (a family's samples apart from its
    HELP and TYPE, a family described twice)."""
    samples, helps, problems, family = {}, [], [], None
    for ln in text.splitlines():
        if ln.startswith("# HELP "):
            family = ln.split()[2]
            if family in helps:
                problems.append(f"{family} described twice")
            helps.append(family)
            continue
        if not ln or ln.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', ln)
        if not m:
            problems.append(f"not a sample: {ln}")
            continue
        name, labels = m.group(1), tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"',
                                                           m.group(2) or "")))
        if name != family:
            problems.append(f"{name} outside its family (under {family})")
        samples[(name, labels)] = float(m.group(3))
    return samples, helps, problems


async def test_metrics(t, d, redis):
    # Clients on both workers, so the two workers' gauges differ.
    by = await spread_clients(d, "mx")
    open_clients = sum(len(v) for k, v in by.items())
    await asyncio.sleep(1.5)  # each worker publishes its figures every second
    accepted = {"1": [], "2": []}
    seen_workers, problems, ws_sums, answered = set(), [], [], []
    for i in range(12):
        r = await http(d, "GET", "/metrics")
        samples, helps, bad = parse_metrics(r.body.decode())
        problems += bad
        for (name, labels), v in samples.items():
            lab = dict(labels)
            if name == "presenced_connections_accepted_total" and "worker" in lab:
                accepted[lab["worker"]].append(v)
            if "worker" in lab:
                seen_workers.add(lab["worker"])
        ws_sums.append(sum(v for (name, labels), v in samples.items()
                           if name == "presenced_websocket_connections"))
        answered.append(samples.get(("presenced_metrics_workers", ())))
        cl = [k for k in samples if k[0] == "presenced_cluster_instances"]
        if cl != [("presenced_cluster_instances", ())]:
            problems.append(f"cluster_instances as {cl}")
    t.check("metrics: every scrape holds both workers' samples, labelled worker=\"1\" and \"2\"",
            seen_workers == {"1", "2"} and all(len(v) == 12 for v in accepted.values()),
            f"{seen_workers} {[len(v) for v in accepted.values()]}")
    t.check("metrics: ... in the text format (each family once, its samples under it; the "
            "cluster's figures once, unlabelled)", not problems, problems[:5])
    t.check("metrics: presenced_metrics_workers 2 in every scrape", answered == [2.0] * 12,
            answered)
    # Worker 2 gets the log from worker 1's reader and has no reader
    # connection of its own: its reader showed 0 for ever, and the alert
    # operations.md advises (presenced_redis_up == 0 for a few seconds) fired.
    ups = {dict(lab).get("worker"): v for (name, lab), v in samples.items()
           if name == "presenced_redis_up" and dict(lab).get("conn") == "reader"}
    t.check("metrics: presenced_redis_up{conn=\"reader\"} 1 on both workers (worker 2 is "
            "fed the log by worker 1)", ups == {"1": 1.0, "2": 1.0}, ups)
    # A label value holding '}' and a quote (a webhook's name=): the worker
    # label goes after it, not inside it.
    owners = sorted(dict(lab)["worker"] for (name, lab), _v in samples.items()
                    if name == "presenced_webhook_owner"
                    and dict(lab).get("endpoint") == 'odd}na\\"me')
    t.check("metrics: a label value holding '}' and '\"' keeps its value, the worker label "
            "after it", owners == ["1", "2"],
            [k for k in samples if k[0] == "presenced_webhook_owner"])
    t.check("metrics: each worker's connections_accepted_total never goes back from one "
            "scrape to the next (no false counter resets)",
            all(v == sorted(v) for v in accepted.values()), accepted)
    t.check(f"metrics: the workers' presenced_websocket_connections add up to the "
            f"{open_clients} clients open", ws_sums and ws_sums[-1] == open_clients, ws_sums)
    # presencectl stats sums the workers (it showed whichever worker answered).
    ctl = os.path.join(os.path.dirname(os.path.abspath(d.binary)), "presencectl")
    if os.path.exists(ctl):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCECTL_")}
        env.update(PRESENCECTL_URL=f"http://127.0.0.1:{d.port}", PRESENCECTL_API_KEY=API_KEY)
        r = subprocess.run([ctl, "stats"], capture_output=True, text=True, timeout=10, env=env)
        t.check(f"metrics: presencectl stats says 'workers 2' and counts the {open_clients} "
                f"WebSocket clients of both", r.returncode == 0
                and re.search(r"^workers\s+2 ", r.stdout, re.M)
                and re.search(rf"\(websocket {open_clients},", r.stdout), r.stdout + r.stderr)
        # The Redis connections' 0/1 gauges, summed, read as counts
        # ("commands 2"): shown as how many of the workers have each up.
        t.check("metrics: presencectl stats shows redis up as 'commands 2/2, reader 2/2'",
                re.search(r"^redis up\s+commands 2/2, reader 2/2$", r.stdout, re.M),
                r.stdout)
        # The same label values read back by presencectl: a quote inside one
        # ended it there, and worker="k" after it became a label of its own.
        r = subprocess.run([ctl, "--json", "stats"], capture_output=True, text=True, timeout=10,
                           env=env)
        try:
            owner = json.loads(r.stdout)["metrics"].get("presenced_webhook_owner", [])
        except (ValueError, KeyError, AttributeError):
            owner = None
        t.eq("metrics: presencectl --json stats reads the label values back whole "
             "(a name holding '}' and '\"', then the worker)",
             sorted((x.get("labels", {}).get("endpoint"), x.get("labels", {}).get("worker"))
                    for x in owner or []), [('odd}na"me', "1"), ('odd}na"me', "2")])
    for cs in by.values():
        for c in cs:
            await c.close()


def test_embedded(t, binary):
    r = subprocess.run([binary, "--workers", "2", "--listen", "127.0.0.1:1"],
                       capture_output=True, text=True, timeout=10)
    t.check("embedded: --workers 2 without --store is refused (exit 2)",
            r.returncode == 2, f"rc={r.returncode}")
    t.check("embedded: ... with a message naming --workers and the shared store",
            "--workers" in r.stderr and "store" in r.stderr, r.stderr)
    r = subprocess.run([binary, "--workers", "1", "--check-config"],
                       capture_output=True, text=True, timeout=10)
    t.check("embedded: --workers 1 (one process) is fine without Redis",
            r.returncode == 0, r.stderr)


def xreads(redis):
    """Redis clients whose last command was XREAD: the log readers."""
    return redis.cli("CLIENT", "LIST").count("cmd=xread")


async def on_worker(d, user, name, watch=None, claims=None):
    """A client of user that landed on worker instance name (claims: more
    claims for its token)."""
    for i in range(40):
        u = f"{user}-{i}"
        tok = token(u, watch=watch, extra=claims) if claims else None
        c = await Client.connect(d, u, watch=watch, tok=tok)
        if await instance_of(d, c) == name:
            return c
        await c.close()
    return None


async def test_feed(t, d, redis):
    by = await spread_clients(d, "fd")
    names = sorted(k for k in by if k)
    t.check("feed: clients on both workers", len(names) == 2, str(list(by)))
    if len(names) != 2:
        return
    w1, w2 = names
    ok = await wait_for(lambda: _eq(xreads(redis), 1), 3)
    t.check("feed: Redis serves one log reader for the two workers", ok is not None,
            f"{xreads(redis)} XREAD clients")
    u1, u2 = by[w1][0], by[w2][0]
    watcher = await on_worker(d, "fd-watch", w2, watch=[u1.user, u2.user])
    t.check("feed: a watcher lands on worker 2", watcher is not None)
    if watcher is None:
        return
    await watcher.send({"type": "subscribe", "users": [u1.user, u2.user], "id": 1})
    await watcher.expect_type("presence", 3, snapshot=True)
    for c, where in ((u1, "worker 1"), (u2, "worker 2")):
        await c.send({"type": "status", "status": "idle"})
        m = await watcher.change(c.user, 3)
        t.check(f"feed: the watcher on worker 2 sees a change made on {where}",
                m is not None and m["users"][0]["status"] == "idle", str(m))
    m = re.search(r"worker 1 started \(pid (\d+)\)", d.stderr_text())
    reader_pid = int(m.group(1)) if m else None
    t.check("feed: the supervisor logs worker 1's pid", reader_pid in children(d.pid))
    if reader_pid not in children(d.pid):
        return
    os.kill(reader_pid, signal.SIGKILL)
    await u2.send({"type": "status", "status": "online"})
    m = await watcher.change(u2.user, 3)
    t.check("feed: worker 1 killed: a change on worker 2 right after still reaches "
            "the watcher on worker 2 (it reads the log itself)",
            m is not None and m["users"][0]["status"] == "online", str(m))
    t.check("feed: worker 2 logs that it reads the log itself now",
            "log feed ended; reading the log itself" in d.stderr_text(), d.stderr_tail(6))
    ok = await wait_for(lambda: _eq(xreads(redis), 2), 5)
    t.check("feed: after the restart each worker reads the log (two XREADs)",
            ok is not None, f"{xreads(redis)} XREAD clients")
    w = await on_worker(d, "fd-new", w1 + ".1")
    t.check("feed: the replacement of worker 1 serves", w is not None)
    if w:
        m = await watcher.change(u1.user, (LEASE_MS + 4000) / 1000)
        t.check("feed: the watcher sees worker 1's user go (instance_lost)",
                m is not None and m["users"][0]["status"] == "offline", str(m))
        await w.close()
    await watcher.close()
    for cs in by.values():
        for c in cs:
            await c.close()


FLIPS = 12


def chain_problems(frames, user, start="online"):
    """A watcher's changes of user must each start where the previous ended
    (a duplicate or a missed one breaks the chain)."""
    cur, out = start, []
    for m in frames:
        for u in m.get("users", []):
            if u.get("user_id") != user:
                continue
            if u.get("from") != cur:
                out.append(f"{user}: from {u.get('from')} after {cur}")
            cur = u.get("status")
    return cur, out


async def flip_all(clients):
    """Each client flips its status FLIPS times (idle, online, ...), all at
    once; returns the status they end in."""
    async def flips(c):
        for k in range(FLIPS):
            await c.send({"type": "status", "status": "idle" if k % 2 == 0 else "online"})
    await asyncio.gather(*(flips(c) for c in clients))
    return "idle" if FLIPS % 2 else "online"


async def frames_until(x, users, n, timeout):
    """Watcher x's change frames until each of users changed n times (or
    timeout s), then half a second more: anything past n is a duplicate."""
    frames, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        frames += await x.changes(0.3)
        got = {u: sum(1 for m in frames for v in m["users"] if v["user_id"] == u)
               for u in users}
        if all(k >= n for k in got.values()):
            break
    frames += await x.changes(0.5)
    return frames


async def users_on(d, prefix, names, per):
    """Clients of users prefix-0, prefix-1... until each worker named holds
    per of them: {instance: [client, ...]}."""
    by, extra = {n: [] for n in names}, []
    for i in range(12 * per):
        c = await Client.connect(d, f"{prefix}-{i}")
        w = await instance_of(d, c)
        if w in by and len(by[w]) < per:
            by[w].append(c)
        else:
            extra.append(c)
        if all(len(v) >= per for v in by.values()):
            break
    for c in extra:
        await c.close()
    return by


async def test_interest(t, d, redis):
    # Logged when worker 1's store attaches, which may come after worker 2
    # answered the start's health check on the shared port.
    said = await wait_for(lambda: _eq("the log goes to the other workers by their "
                                      "interest" in d.stderr_text(), True), 10)
    t.check("interest: worker 1 passes the log by interest", said is not None,
            d.stderr_tail(8))
    probe = await spread_clients(d, "ip")
    names = sorted(k for k in probe if k)
    for cs in probe.values():
        for c in cs:
            await c.close()
    t.check("interest: clients on both workers", len(names) == 2, str(list(probe)))
    if len(names) != 2:
        return
    w1, w2 = names
    by = await users_on(d, "in", names, 3)
    a, b = by[w1], by[w2]
    t.check("interest: three flipping users on each worker", len(a) == 3 and len(b) == 3,
            f"{len(a)} {len(b)}")
    if len(a) != 3 or len(b) != 3:
        return
    every = [c.user for c in a + b]
    # What each watcher watches: both workers' users, and b[2] by nobody on
    # worker 2 (its events are routed away from worker 2).
    plan = {w1: [a[0].user, a[1].user, b[0].user, b[2].user],
            w2: [a[0].user, a[2].user, b[1].user]}
    watchers = {}
    for w, users in plan.items():
        x = await on_worker(d, f"iw-{w[-2:]}", w, watch=every)
        t.check(f"interest: a watcher lands on {w}", x is not None)
        if x is None:
            return
        await x.send({"type": "subscribe", "users": users, "id": "s"})
        snap = await x.expect_type("presence", 5, snapshot=True)
        t.check(f"interest: the watcher on {w} gets its snapshot", snap is not None)
        watchers[w] = x

    final = await flip_all(a + b)
    for w, users in plan.items():
        x = watchers[w]
        frames = await frames_until(x, users, FLIPS, 15)
        for u in users:
            n = sum(1 for m in frames for v in m["users"] if v["user_id"] == u)
            end, problems = chain_problems(frames, u)
            t.check(f"interest: the watcher on {w} sees each of {u}'s {FLIPS} changes "
                    f"exactly once, in order", n == FLIPS and not problems and end == final,
                    f"{n} changes, ends {end}; {problems[:4]}")
        stray = {v["user_id"] for m in frames for v in m["users"]} - set(users)
        t.check(f"interest: the watcher on {w} gets no change of a user it does not watch",
                not stray, str(stray))
    # Watched on worker 2 only now: counted before the snapshot is asked.
    for round_ in (1, 2):
        late = await on_worker(d, f"il{round_}", w2, watch=every)
        t.check(f"interest: late watcher {round_} lands on worker 2", late is not None)
        if late is None:
            return
        await late.send({"type": "subscribe", "users": [b[2].user], "id": "s"})
        snap = await late.expect_type("presence", 5, snapshot=True)
        cur = (snap or {}).get("users", [{}])[0].get("status")
        nxt = "online" if cur == "idle" else "idle"
        await b[2].send({"type": "status", "status": nxt})
        m = await late.change(b[2].user, 5)
        t.check(f"interest: late watcher {round_} on worker 2 sees {b[2].user} "
                f"(watched by nobody there before) go {nxt}",
                m is not None and m["users"][0]["status"] == nxt, str(m))
        more = await late.changes(0.4)
        t.check(f"interest: ... once", not more, str(more))
        await late.close()
    # Channels: routed by the channel's name.
    obs = await on_worker(d, "io", w2, claims={"channels": "*", "observe": "*"})
    t.check("interest: a channel observer lands on worker 2", obs is not None)
    if obs is None:
        return
    await obs.send({"type": "observe", "channel": "in-room", "id": "o"})
    t.check("interest: the observer gets the channel's snapshot",
            await obs.expect_type("channel", 5, id="o") is not None)
    j = await on_worker(d, "ij", w1, claims={"channels": "*"})
    t.check("interest: a member lands on worker 1", j is not None)
    if j is None:
        return
    for what in ("join", "leave"):
        await j.send({"type": what, "channel": "in-room", "id": what})
        m, _ = await obs.expect(lambda x: x.get("type") == "channel"
                                and x.get("event") == what
                                and x.get("member", {}).get("user_id") == j.user, 5)
        t.check(f"interest: the observer on worker 2 sees the {what} made on worker 1",
                m is not None, str(m))
    await j.close()
    await obs.close()
    # Event streams open on both workers (4 connections: the kernel spreads
    # them) count every event while open: each is woken for every change,
    # whoever watches it.
    end = max([e["seq"] for e in await read_log(d, quiet=0.4)] or [0])
    streams = [await SSE.open(d, after=end) for _ in range(4)]
    for i in range(5):
        c = await Client.connect(d, f"ise-{i}")
        await c.close()
    for k, st in enumerate(streams):
        got, deadline = [], time.monotonic() + 10
        while time.monotonic() < deadline and len(got) < 20:
            got += [e["data"]["seq"] for e in await st.collect(0.3)]
        st.close()
        t.check(f"interest: event stream {k + 1} gets the 20 live events of 5 users "
                f"coming and going, once each", sorted(got) == list(range(end + 1, end + 21)),
                f"{len(got)} events")
    for x in watchers.values():
        await x.close()
    for c in a + b:
        await c.close()


async def test_webhook(t, d, redis, rx):
    async def owned():
        # Each scrape reaches one worker; the owner answers 1 sooner or later.
        r = await http(d, "GET", "/metrics")
        return re.search(r'^presenced_webhook_owner\{endpoint="wk",worker="[12]"\} 1$',
                         r.body.decode(), re.M) is not None
    t.check("webhook: a worker holds the endpoint's lease",
            await wait_for(owned, 10, 0.1) is not None)
    start = max([e["seq"] for e in await read_log(d, quiet=0.4)] or [0])
    # Users on both workers (the kernel spreads the connects) come and go.
    for i in range(20):
        c = await Client.connect(d, f"wk-{i}")
        await c.close()
    await asyncio.sleep(0.5)
    log = [e for e in await read_log(d) if e["seq"] > start]
    t.check("webhook: 20 users came and went: 80 events in the log", len(log) == 80,
            str(len(log)))
    want = [e["seq"] for e in log]

    async def done():
        got = [e["seq"] for _h, b, _r in rx.batches() for e in b["events"]]
        return bool(want) and bool(got) and max(got) >= want[-1]
    await wait_for(done, 10, 0.1)
    await asyncio.sleep(0.5)  # a copy from the other worker would be here by now
    got = [e["seq"] for _h, b, _r in rx.batches() for e in b["events"] if e["seq"] > start]
    t.check("webhook: every event delivered exactly once, in log order (one worker "
            "delivers, fed every event)", got == want,
            f"got {len(got)} want {len(want)}: missing {sorted(set(want) - set(got))[:5]}, "
            f"twice {len(got) - len(set(got))}")


async def _eq(v, want):
    return v == want


def main():
    args = parse_args()
    t = Checks()
    test_embedded(t, args.presenced)
    if not shutil.which("redis-server"):
        print("ok   - SKIP: redis-server not installed")
        print(f"{t.passed} passed, {t.failed} failed")
        return 0 if t.failed == 0 else 1

    async def run_all():
        for name, fn in (("spread", test_spread), ("kill9", test_kill9),
                         ("feed", test_feed), ("interest", test_interest),
                         ("metrics", test_metrics),
                         ("webhook", test_webhook), ("sigterm", test_sigterm),
                         ("cgroup", test_sigterm_group), ("nohup", test_nohup),
                         ("sighup", test_sighup)):
            if args.only and args.only not in name:
                continue
            redis = Redis()
            d = obs = rx = None
            failed = t.failed
            try:
                redis.start()
                f = flags(redis)
                more = ()
                if name == "metrics":  # a receiver that is not there: its labels only
                    f["--webhook"] = ('url=http://127.0.0.1:9/hook,secret=whsec-workers-'
                                      '0123456789abcdef0123456789,name=odd}na"me')
                if name == "webhook":
                    rx = HookReceiver()
                    f["--webhook"] = f"url={rx.url()},secret=whsec-workers-0123456789abcdef0123456789,name=wk"
                    f["--webhook-batch-ms"] = "50"
                    more = (rx,)
                d = Daemon(args.presenced, f, f"workers-{name}")
                d.start()
                if name in ("sigterm", "sighup", "cgroup"):
                    obs = Daemon(args.presenced, flags(redis, 0), "observer")
                    obs.start()
                    more = (obs,)
                await asyncio.wait_for(fn(t, d, redis, *more), 60)
                for x in (d, obs):
                    if x and x.alive():
                        code = x.stop(timeout=8)
                        t.check(f"{name}: {x.name} stops with exit status 0 on SIGTERM",
                                code == 0, f"exit={code}")
                    if x:
                        rep = sanitizer_report(x.stderr_text())
                        t.check(f"{name}: no sanitizer report from {x.name}", not rep, rep)
            except asyncio.TimeoutError:
                t.check(f"{name}: finished within 60 s", False)
            except Exception as e:
                import traceback
                t.check(f"{name}: ran without exception", False,
                        f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}")
            finally:
                for x in (d, obs):
                    if x and (t.failed > failed or args.verbose):
                        t.note(f"--- {x.name} stderr tail:")
                        for line in x.stderr_tail(15).splitlines():
                            t.note(line)
                    if x:
                        x.kill()
                        x.cleanup()
                redis.cleanup()
                if rx:
                    rx.stop()
    asyncio.run(run_all())
    print(f"{t.passed} passed, {t.failed} failed", flush=True)
    return 0 if t.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
