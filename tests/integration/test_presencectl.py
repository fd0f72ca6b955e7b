#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""presencectl against the real daemon (issue 9): status, sessions, kick,
stats and watch, human and --json output, the documented exit codes
(0 ok, 1 refused or not found, 2 usage, 3 unreachable, 4 auth refused),
watch resuming with Last-Event-ID after a dropped connection (through a
proxy that cuts it) and after a daemon restart; /metrics names follow the
Prometheus conventions and the Grafana dashboard only queries metrics that
exist. Also the operator's side of presenced: --config with a secret file,
--check-config, JSON logs with one line per error class. presencectl is
found next to presenced."""

import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import *  # noqa: E402,F401,F403

CTL = None  # set in main


def ctl_env(d=None, url=None, key=API_KEY, tz=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCECTL_")}
    if tz is not None:
        env["TZ"] = tz
    if url is None and d is not None:
        url = f"http://{HOST}:{d.port}"
    if url is not None:
        env["PRESENCECTL_URL"] = url
    if key is not None:
        env["PRESENCECTL_API_KEY"] = key
    return env


async def ctl(*argv, d=None, url=None, key=API_KEY, timeout=15, tz=None):
    """Run presencectl; returns (exit code, stdout, stderr)."""
    p = await asyncio.create_subprocess_exec(
        CTL, *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=ctl_env(d, url, key, tz))
    try:
        out, err = await asyncio.wait_for(p.communicate(), timeout)
    except asyncio.TimeoutError:
        p.kill()
        out, err = await p.communicate()
        return None, out.decode(), err.decode()
    return p.returncode, out.decode(), err.decode()


def loads(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


class Watch:
    """presencectl watch --json running in the background, lines collected."""

    def __init__(self):
        self.proc = None
        self.events = []
        self.err = b""
        self.tasks = []

    @classmethod
    async def start(cls, url, *extra):
        w = cls()
        w.proc = await asyncio.create_subprocess_exec(
            CTL, "watch", "--json", *extra, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=ctl_env(url=url))
        w.tasks = [asyncio.ensure_future(w._read()), asyncio.ensure_future(w._read_err())]
        return w

    async def _read(self):
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            self.events.append(loads(line.decode()) or {"unparsed": line.decode()})

    async def _read_err(self):
        while True:
            chunk = await self.proc.stderr.read(4096)
            if not chunk:
                return
            self.err += chunk

    async def until(self, pred, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if pred(e):
                    return e
            await asyncio.sleep(0.02)
        return None

    def seqs(self):
        return [e["seq"] for e in self.events if isinstance(e.get("seq"), int)]

    async def stop(self):
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for t in self.tasks:
            try:
                await asyncio.wait_for(t, 2)
            except (asyncio.TimeoutError, Exception):
                t.cancel()
        return self.proc.returncode


def is_ev(e, typ, user):
    return e.get("type") == typ and e.get("user_id") == user


async def streams_open(port, n=1, timeout=10.0):
    """Wait until presenced on port has n event streams open: a watch that
    follows new events only must be connected before the events happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = await http_raw(port, build_request("GET", "/metrics",
                                                   {"Authorization": f"Bearer {API_KEY}"}), 2)
            m = re.search(r"^presenced_event_streams (\d+)$", r.body.decode(), re.M)
            if m and int(m.group(1)) >= n:
                return True
        except (OSError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.05)
    return False


# --------------------------------------------------------------------------


async def test_status(t, d, args):
    alice = await Client.connect(d, "pc-alice", meta={"device": "laptop"})
    bob = await Client.connect(d, "pc-bob")
    await bob.send({"type": "status", "status": "idle", "id": 1})
    await bob.expect_type("ack", 3)
    rc, out, err = await ctl("status", "pc-alice", "pc-bob", "pc-nobody", d=d)
    t.eq("status: exit 0", rc, 0)
    rows = {l.split()[0]: l.split() for l in out.splitlines()[1:] if l.strip()}
    t.check("status: a header line", out.startswith("USER"), out)
    t.eq("status: human output, one row per user with its status",
         {u: r[1] for u, r in rows.items()},
         {"pc-alice": "online", "pc-bob": "idle", "pc-nobody": "offline"})
    t.eq("status: session counts", rows.get("pc-alice", [None] * 3)[2], "1")
    rc, out, err = await ctl("--json", "status", "pc-alice", "pc-bob", "pc-nobody", d=d)
    j = loads(out)
    t.eq("status --json: exit 0", rc, 0)
    t.eq("status --json: users in order with status",
         [(u.get("user_id"), u.get("status")) for u in (j or {}).get("users", [])],
         [("pc-alice", "online"), ("pc-bob", "idle"), ("pc-nobody", "offline")])
    t.check("status --json: the API fields", j and all(
        k in j["users"][0] for k in ("since", "last_seen", "sessions", "version")), out)
    # An id that needs escaping, and one that starts with "--" after "--".
    rc, out, _ = await ctl("status", "--json", "--", "--odd id/é", d=d)
    j = loads(out)
    t.check("status: ids are escaped; '--' ends the options",
            rc == 0 and j and j["users"][0]["user_id"] == "--odd id/é", (rc, out))
    # Many users in one call (batched by 1000 per query).
    ids = [f"pc-many-{i}" for i in range(1500)]
    rc, out, _ = await ctl("--json", "status", *ids, d=d)
    j = loads(out) or {}
    t.check("status: 1500 users in batches", rc == 0 and len(j.get("users", [])) == 1500,
            (rc, len(j.get("users", []))))
    rc, out, err = await ctl("status", "", d=d)
    t.eq("status: an invalid (empty) id is refused by the server: exit 1", rc, 1)
    await alice.ws.close()
    await bob.ws.close()


async def test_numbers_as_written(t, d, args):
    """sessions and channel (status and the others too: one path) print
    every number as presenced wrote it. A client's data and a token's meta
    are kept as written (protocol.md 4.2), and presencectl printed them again
    through cJSON's doubles: a 16-digit number ending in 0 came out as
    1.79665755029203e+15, a 20-digit one lost its last digits."""
    meta = '{"uid":1796657552029230,"big":12345678901234567891,"ratio":0.30000000000000004}'
    c = await Client.connect(d, "pc-num", meta=json.loads(meta),
                             tok=token("pc-num", meta=json.loads(meta), extra={"channels": "*"}))
    data = '{"id":1796657552029230,"big":12345678901234567891,"small":-1.5e-7}'
    await c.send('{"type":"join","channel":"pc-num-room","id":1,"data":' + data + '}')
    await c.expect_type("channel", 3, id=1)
    rc, out, _ = await ctl("--json", "channel", "pc-num-room", d=d)
    t.check("channel --json: a member's data with its numbers as written",
            rc == 0 and f'"data":{data}' in out, (rc, out))
    t.eq("channel --json: the count", (loads(out) or {}).get("count"), 1)
    rc, out, _ = await ctl("channel", "pc-num-room", d=d)
    t.check("channel: the DATA column as written", rc == 0 and data in out, (rc, out))
    rc, out, _ = await ctl("--json", "sessions", "pc-num", d=d)
    t.check("sessions --json: the meta with its numbers as written",
            rc == 0 and f'"meta":{meta}' in out, (rc, out))
    rc, out, _ = await ctl("sessions", "pc-num", d=d)
    t.check("sessions: the META column as written", rc == 0 and meta in out, (rc, out))
    # stats --json: the event sequence (16 digits, numbered from the start
    # time in microseconds) as /metrics wrote it, also when it ends in 0.
    seq = None
    for i in range(12):
        r = await http(d, "GET", "/metrics")
        m = re.search(r"^presenced_event_sequence (\d+)$", r.body.decode(), re.M)
        if m and m.group(1).endswith("0"):
            seq = m.group(1)
            break
        await c.send({"type": "update", "channel": "pc-num-room", "data": {"n": i}, "id": 10 + i})
        await c.expect_type("ack", 3, id=10 + i)
    rc, out, _ = await ctl("--json", "stats", d=d)
    t.check("stats --json: a sequence number ending in 0 as /metrics wrote it",
            seq and f'"presenced_event_sequence":{seq}' in out,
            (seq, re.findall(r'"presenced_event_sequence":[^,}]*', out)))
    await c.close()


async def test_ws_session_example(t, d, args):
    """examples/ws_session.py, the README tour's terminal client: it holds a
    session (the user is online), prints what the server sends, and its end
    takes the user offline."""
    ex = os.path.join(args.source_dir, "examples", "ws_session.py")
    p = await asyncio.create_subprocess_exec(
        "/usr/bin/python3", ex, "--url", f"ws://{HOST}:{d.port}", "--secret", JWT_SECRET,
        "--audience", JWT_AUDIENCE, "--watch", "pc-ex-other", "pc-ex",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    first = await asyncio.wait_for(p.stdout.readline(), 10)
    welcome = loads(first.decode()) or {}
    t.check("ws_session.py: prints the welcome, for its user",
            welcome.get("type") == "welcome" and welcome.get("user_id") == "pc-ex", first)
    snap = loads((await asyncio.wait_for(p.stdout.readline(), 10)).decode()) or {}
    t.check("ws_session.py: --watch subscribes (a presence snapshot follows)",
            snap.get("type") == "presence", snap)
    rc, out, _ = await ctl("--json", "status", "pc-ex", d=d)
    t.eq("ws_session.py: its user is online", ((loads(out) or {}).get("users") or [{}])[0]
         .get("status"), "online")
    p.terminate()
    await asyncio.wait_for(p.wait(), 10)
    for _ in range(50):
        rc, out, _ = await ctl("--json", "status", "pc-ex", d=d)
        if ((loads(out) or {}).get("users") or [{}])[0].get("status") == "offline":
            break
        await asyncio.sleep(0.1)
    t.eq("ws_session.py: ended, its user goes offline",
         ((loads(out) or {}).get("users") or [{}])[0].get("status"), "offline")
    # --token: a token signed elsewhere (the tour's demo token); its sub is
    # the user, and a user named beside it is refused before connecting.
    p = await asyncio.create_subprocess_exec(
        "/usr/bin/python3", ex, "--url", f"ws://{HOST}:{d.port}", "--token",
        token("pc-ex-tok"), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    first = await asyncio.wait_for(p.stdout.readline(), 10)
    t.eq("ws_session.py --token: the welcome is for the token's user",
         (loads(first.decode()) or {}).get("user_id"), "pc-ex-tok")
    p.terminate()
    await asyncio.wait_for(p.wait(), 10)
    p = await asyncio.create_subprocess_exec(
        "/usr/bin/python3", ex, "--token", token("pc-ex-tok"), "someone",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(p.communicate(), 10)
    t.check("ws_session.py: --token with a user is a usage error (exit 2)",
            p.returncode == 2 and b"names its user" in err, (p.returncode, err))


async def test_sessions_and_kick(t, d, args):
    a1 = await Client.connect(d, "pc-carol", meta={"device": "phone"})
    a2 = await Client.connect(d, "pc-carol")
    rc, out, err = await ctl("sessions", "pc-carol", d=d)
    t.eq("sessions: exit 0", rc, 0)
    t.check("sessions: human output lists both sessions with meta",
            a1.session_id in out and a2.session_id in out and '{"device":"phone"}' in out, out)
    rc, out, _ = await ctl("sessions", "pc-carol", "--json", d=d)
    j = loads(out) or {}
    t.eq("sessions --json: the session ids",
         sorted(s.get("session_id") for s in j.get("sessions", [])),
         sorted([a1.session_id, a2.session_id]))
    rc, out, _ = await ctl("sessions", "pc-nobody", d=d)
    t.check("sessions: a user without sessions: exit 0, said so",
            rc == 0 and "no open session" in out, (rc, out))
    rc, out, err = await ctl("kick", a1.session_id, d=d)
    t.check("kick: exit 0 and says kicked", rc == 0 and a1.session_id in out, (rc, out, err))
    code = await a1.wait_closed(5)
    t.eq("kick: the client is closed with 4003", code, 4003)
    rc, out, err = await ctl("kick", a1.session_id, d=d)
    t.eq("kick: an unknown session: exit 1", rc, 1)
    t.check("kick: an unknown session: said on stderr", "no such session" in err, err)
    rc, out, err = await ctl("--json", "kick", a1.session_id, d=d)
    t.eq("kick --json: unknown session", (rc, (loads(out) or {}).get("kicked")), (1, False))
    rc, out, err = await ctl("--json", "kick", a2.session_id, d=d)
    t.eq("kick --json: kicked", (rc, (loads(out) or {}).get("kicked")), (0, True))
    await a2.wait_closed(5)


async def test_exit_codes(t, d, args):
    rc, _, err = await ctl("status", "x", d=d, key="wrong-key")
    t.eq("a wrong API key: exit 4", rc, 4)
    t.check("a wrong API key: said on stderr", "API key refused" in err, err)
    rc, _, err = await ctl("status", "x", d=d, key=None)
    t.eq("no API key: exit 4", rc, 4)
    rc, _, _ = await ctl("kick", "s", d=d, key="wrong-key")
    t.eq("kick with a wrong API key: exit 4", rc, 4)
    rc, _, _ = await ctl("watch", "--retries", "0", d=d, key="wrong-key")
    t.eq("watch with a wrong API key: exit 4 (no retry)", rc, 4)
    # A cursor the log does not know: the server's reason, not "HTTP 400" alone.
    rc, _, err = await ctl("watch", "--after", "not-a-cursor", d=d)
    t.check("watch --after with no cursor of the log: exit 1 with the server's reason",
            rc == 1 and "HTTP 400 from /v1/events: " in err and "sequence number" in err,
            (rc, err))
    closed = free_port()
    rc, _, err = await ctl("status", "x", url=f"http://{HOST}:{closed}")
    t.eq("server unreachable: exit 3", rc, 3)
    t.check("server unreachable: said on stderr", "cannot reach" in err, err)
    # a URL's credentials stay out of the message (scripts log stderr)
    rc, _, err = await ctl("status", "x", url=f"http://app:s3cr/et@{HOST}:{closed}")
    t.check("server unreachable, credentials in the URL: not in the message",
            rc == 3 and "cannot reach http://***@" in err and "s3cr" not in err, err)
    rc, _, _ = await ctl("stats", url=f"http://{HOST}:{closed}")
    t.eq("stats, server unreachable: exit 3", rc, 3)
    rc, _, _ = await ctl("watch", "--retries", "1", url=f"http://{HOST}:{closed}")
    t.eq("watch, server unreachable, --retries 1: exit 3", rc, 3)
    for argv, what in ((["frobnicate"], "an unknown command"), ([], "no command"),
                       (["status"], "status without a user"),
                       (["sessions", "a", "b"], "sessions with two users"),
                       (["kick"], "kick without a session"),
                       (["--nope", "stats"], "an unknown option"),
                       (["--url", "ftp://x", "stats"], "a bad URL"),
                       (["watch", "--count", "x"], "a bad number"),
                       (["--api-key-file", "/nonexistent/key", "stats"], "a missing key file")):
        rc, _, err = await ctl(*argv, d=d)
        t.check(f"usage: {what}: exit 2 with a message", rc == 2 and "presencectl:" in err,
                (rc, err))
    rc, out, _ = await ctl("--help", d=d)
    t.check("--help: exit 0, lists the exit codes", rc == 0 and "Exit status" in out, out)
    rc, out, _ = await ctl("--version", d=d)
    t.check("--version", rc == 0 and out.startswith("presencectl "), out)
    # The key from a file, the URL and the key from the environment.
    with tempfile.NamedTemporaryFile("w", prefix="pctl-key-", delete=False) as f:
        f.write(API_KEY + "\n")
    try:
        rc, out, _ = await ctl("--api-key-file", f.name, "--url", f"http://{HOST}:{d.port}",
                               "status", "x", key=None)
        t.eq("--api-key-file and --url: exit 0", rc, 0)
    finally:
        os.unlink(f.name)
    rc, out, _ = await ctl("status", "x", "--api-key", API_KEY, d=d, key="wrong")
    t.eq("--api-key wins over PRESENCECTL_API_KEY", rc, 0)


async def test_watch_silent_server(t, d, args):
    """A server that accepts the connection and never answers (a stopped
    presenced, a proxy without its upstream): each watch attempt ends after
    --timeout, said on stderr, where it waited for --idle-timeout (60 s)."""
    held = []

    async def hold(r, w):  # accept, read, answer nothing
        held.append(w)
        try:
            while await r.read(4096):
                pass
        except (ConnectionError, OSError):
            pass

    srv = await asyncio.start_server(hold, HOST, 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        t0 = time.monotonic()
        rc, _, err = await ctl("watch", "--timeout", "1", "--retries", "0",
                               url=f"http://{HOST}:{port}", timeout=20)
        took = time.monotonic() - t0
        # /healthz (for the instance) and /v1/events: --timeout each.
        t.check("watch against a server that never answers: exit 3 within a few "
                f"--timeout 1 (took {took:.1f} s), says it had no answer",
                rc == 3 and took < 8 and "no answer from /v1/events within --timeout 1 s" in err,
                (rc, took, err[-300:]))
    finally:
        for w in held:
            w.close()
        srv.close()
        await srv.wait_closed()


async def test_stats_and_metrics(t, d, args):
    c = await Client.connect(d, "pc-stats")
    # /metrics needs the API key (docs/security.md): without one, stats says
    # to give it; with it, the figures.
    rc, out, err = await ctl("stats", d=d, key=None)
    t.check("stats without an API key: exit 4 (refused), 401, says to give one",
            rc == 4 and "401" in err and "--api-key" in err, (rc, out, err))
    rc, out, err = await ctl("stats", d=d)
    t.eq("stats: exit 0 with the API key", rc, 0)
    for word in ("instance", "uptime", "connections", "sessions", "users", "events",
                 "errors", "write queue"):
        t.check(f"stats: human output shows {word}", re.search(rf"^{word}\b", out, re.M), out)
    rc, out, _ = await ctl("stats", "--json", d=d)
    j = loads(out) or {}
    m = j.get("metrics", {})
    t.check("stats --json: instance and metrics", j.get("instance") and isinstance(m, dict), out)
    t.check("stats --json: sessions >= 1", m.get("presenced_sessions", 0) >= 1, m.get("presenced_sessions"))
    users = {s["labels"].get("status"): s["value"] for s in m.get("presenced_users", [])}
    t.check("stats --json: users by status", users.get("online", 0) >= 1, users)
    await c.ws.close()

    # Prometheus naming conventions, checked on the live exposition.
    r = await http(d, "GET", "/metrics")
    text = r.body.decode()
    types, helps, bad = {}, set(), []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
        elif line.startswith("# HELP "):
            helps.add(line.split(" ")[2])
        elif line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            if name not in types:
                bad.append(f"{name}: no # TYPE before it")
    for name, typ in types.items():
        if not name.startswith("presenced_"):
            bad.append(f"{name}: no presenced_ prefix")
        if name not in helps:
            bad.append(f"{name}: no # HELP")
        if typ == "counter" and not name.endswith("_total"):
            bad.append(f"{name}: a counter without _total")
        if typ != "counter" and name.endswith("_total"):
            bad.append(f"{name}: _total on a {typ}")
        if re.search(r"_(ms|milliseconds|kb|mb|minutes|hours)(_total)?$", name):
            bad.append(f"{name}: not a base unit (seconds, bytes)")
    t.check("metrics: every family has HELP and TYPE, presenced_ prefix, _total counters, "
            "base units", not bad, bad)
    # The Grafana dashboard only queries metrics that exist (webhook families
    # appear only with endpoints configured, cluster ones on the Redis store:
    # test_redis_cluster.py checks those).
    with open(os.path.join(args.source_dir, "contrib", "grafana", "presenced.json")) as f:
        dash = json.load(f)
    used = set(re.findall(r"presenced_[a-z_]+", json.dumps(dash)))
    missing = sorted(n for n in used if not n.startswith(("presenced_webhook_", "presenced_cluster_"))
                     and n not in types)
    t.check("contrib/grafana/presenced.json: every metric it queries exists", used and not missing,
            missing)


async def test_watch_json_and_human(t, d, args):
    url = f"http://{HOST}:{d.port}"
    w = await Watch.start(url)
    t.check("watch: connected", await streams_open(d.port))
    c = await Client.connect(d, "pc-watch")
    e = await w.until(lambda e: is_ev(e, "user.online", "pc-watch"))
    t.check("watch --json: session.connected then user.online, one object per line",
            e and any(is_ev(x, "session.connected", "pc-watch") for x in w.events), w.events)
    await c.ws.close()
    e = await w.until(lambda e: is_ev(e, "user.offline", "pc-watch"))
    t.check("watch --json: user.offline after the close", e is not None, w.events[-3:])
    t.eq("watch: SIGTERM ends it with exit 0", await w.stop(), 0)
    # Human output and --count / --after: replay from a cursor, then exit 0.
    first = w.seqs()[0] if w.seqs() else 0
    rc, out, err = await ctl("watch", "--after", str(first - 1), "--count", "4", d=d)
    lines = out.splitlines()
    t.eq("watch --after --count 4: exit 0", rc, 0)
    t.check("watch (human): four lines with #seq, type, user and the change",
            len(lines) == 4 and f"#{first}" in lines[0] and "pc-watch" in lines[0]
            and "session.connected" in lines[0] and "offline -> online" in lines[1]
            and "session.disconnected" in lines[2] and "online -> offline" in lines[2]
            and "user.offline" in lines[3], out)


def iso(ms, offset_min, with_ms=False):
    """ms since the epoch as presencectl must print it in a zone offset_min
    east of UTC: ISO 8601 with the offset (Z for UTC)."""
    import datetime
    tz = datetime.timezone(datetime.timedelta(minutes=offset_min))
    dt = datetime.datetime.fromtimestamp(ms // 1000, tz)
    out = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if with_ms:
        out += ".%03d" % (ms % 1000)
    if offset_min == 0:
        return out + "Z"
    sign = "+" if offset_min > 0 else "-"
    return out + "%s%02d:%02d" % (sign, abs(offset_min) // 60, abs(offset_min) % 60)


async def test_times_carry_their_zone(t, d, args):
    """Times in the human output say their zone: 'SINCE 2026-12-08 06:31:02'
    read on another host, in a ticket or across a DST change was an hour
    off, or five and a half. TZ is a POSIX zone (no tzdata needed): IST-5:30
    is UTC+05:30, XST+3 is UTC-03:00."""
    c = await Client.connect(d, "pc-tz")
    r = await http(d, "GET", "/v1/users/pc-tz")
    since = r.json()["since"]
    r = await http(d, "GET", "/v1/users/pc-tz/sessions")
    connected = r.json()["sessions"][0]["connected"]
    for tz, off in (("IST-5:30", 330), ("XST+3", -180), ("UTC0", 0)):
        rc, out, _ = await ctl("status", "pc-tz", d=d, tz=tz)
        t.check(f"status TZ={tz}: SINCE in ISO 8601 with the zone ({iso(since, off)})",
                rc == 0 and iso(since, off) in out, out)
        rc, out, _ = await ctl("sessions", "pc-tz", d=d, tz=tz)
        t.check(f"sessions TZ={tz}: CONNECTED in ISO 8601 with the zone",
                rc == 0 and iso(connected, off) in out, out)
    rc, out, _ = await ctl("--json", "watch", "--after", "0", "--count", "1", d=d)
    first = loads(out.splitlines()[0]) if out.strip() else None
    rc, out, _ = await ctl("watch", "--after", "0", "--count", "1", d=d, tz="IST-5:30")
    t.check("watch TZ=IST-5:30: each line starts with the event's time in ISO 8601, "
            "milliseconds and zone",
            rc == 0 and first and out.startswith(iso(first["ts"], 330, True) + " #"),
            (out, first))
    await c.ws.close()


class Proxy:
    """A TCP proxy to the daemon whose connections the test can cut."""

    def __init__(self, target_port):
        self.target = target_port
        self.conns = []
        self.server = None
        self.port = None
        self.accepted = 0

    async def start(self):
        self.server = await asyncio.start_server(self._on_conn, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _pipe(self, r, w):
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def _on_conn(self, r, w):
        self.accepted += 1
        try:
            ur, uw = await asyncio.open_connection(HOST, self.target)
        except OSError:
            w.close()
            return
        tasks = [asyncio.ensure_future(self._pipe(r, uw)), asyncio.ensure_future(self._pipe(ur, w))]
        self.conns.append((w, uw, tasks))

    def cut(self):
        for w, uw, tasks in self.conns:
            for x in (w, uw):
                try:
                    x.transport.abort()
                except Exception:
                    pass
            for tk in tasks:
                tk.cancel()
        self.conns = []

    async def close(self):
        self.cut()
        self.server.close()
        await self.server.wait_closed()


@timeout(40)
async def test_watch_resumes_after_disconnect(t, d, args):
    proxy = Proxy(d.port)
    await proxy.start()
    w = await Watch.start(f"http://{HOST}:{proxy.port}")
    try:
        t.check("watch through the proxy: connected", await streams_open(d.port))
        c1 = await Client.connect(d, "pc-resume-1")
        await w.until(lambda e: is_ev(e, "user.online", "pc-resume-1"))
        # Cut the stream and, until watch reconnects, refuse the proxy's
        # clients: events happen while watch is away.
        proxy.server.close()
        proxy.cut()
        c2 = await Client.connect(d, "pc-resume-2")
        await c1.ws.close()
        await asyncio.sleep(0.5)
        proxy.server = await asyncio.start_server(proxy._on_conn, HOST, proxy.port)
        e = await w.until(lambda e: is_ev(e, "user.offline", "pc-resume-1"), 10)
        t.check("watch: reconnects after the stream was cut", e is not None,
                (w.events[-4:], w.err.decode()[-300:]))
        t.check("watch: the events missed while away are printed",
                any(is_ev(x, "user.online", "pc-resume-2") for x in w.events), w.events)
        seqs = w.seqs()
        t.check("watch: resumed with Last-Event-ID: no event lost or repeated",
                seqs and seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs)
        t.check("watch: said it reconnects", b"reconnect" in w.err, w.err.decode())
        await c2.ws.close()
    finally:
        await w.stop()
        await proxy.close()


class FilterProxy(Proxy):
    """A proxy that asks presenced for a filtered stream (watch has no filter
    option of its own): GET /v1/events gains ?types=user.offline. Records the
    Last-Event-ID of each stream request."""

    def __init__(self, target):
        super().__init__(target)
        self.last_event_ids = []

    async def _on_conn(self, r, w):
        try:
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            w.close()
            return
        if head.startswith(b"GET /v1/events "):
            head = head.replace(b"GET /v1/events ", b"GET /v1/events?types=user.offline ", 1)
            m = re.search(rb"\r\nLast-Event-ID: ([^\r]*)\r\n", head, re.I)
            self.last_event_ids.append(m.group(1).decode() if m else None)
        try:
            ur, uw = await asyncio.open_connection(HOST, self.target)
        except OSError:
            w.close()
            return
        uw.write(head)
        tasks = [asyncio.ensure_future(self._pipe(r, uw)), asyncio.ensure_future(self._pipe(ur, w))]
        self.conns.append((w, uw, tasks))


@timeout(40)
async def test_watch_filtered_cursor(t, d, args):
    """--log-capacity 16: a filtered stream's id-only blocks (after events it
    skipped) print nothing and move watch's cursor, so its reconnect after
    many skipped events resumes without a gap."""
    proxy = FilterProxy(d.port)
    await proxy.start()
    w = await Watch.start(f"http://{HOST}:{proxy.port}")
    held = []
    try:
        t.check("filtered watch: connected", await streams_open(d.port))
        c = await Client.connect(d, "pc-filt-first")
        await c.ws.close()
        first = await w.until(lambda e: is_ev(e, "user.offline", "pc-filt-first"))
        t.check("filtered watch: prints the event its filter lets through", first is not None, w.events)
        # 40 events the filter skips (session.connected, user.online),
        # more than twice the log's 16; then the stream is cut.
        held = [await Client.connect(d, f"pc-filt-{i}") for i in range(20)]
        await asyncio.sleep(0.5)
        proxy.cut()
        await held[0].ws.close()
        e = await w.until(lambda e: is_ev(e, "user.offline", "pc-filt-0"), 10)
        t.check("filtered watch: reconnects and prints the next event", e is not None,
                (w.events, w.err.decode()[-300:]))
        newest = str(first["seq"] + 40) if first else None
        t.eq("filtered watch: resumed with the cursor of the id-only block, past the skipped events",
             proxy.last_event_ids[1:2], [newest])
        t.check("filtered watch: no gap notice on the resume",
                not any(x.get("type") == "gap" for x in w.events), w.events)
        t.eq("filtered watch: nothing printed for the id-only blocks",
             [(x.get("type"), x.get("user_id")) for x in w.events],
             [("user.offline", "pc-filt-first"), ("user.offline", "pc-filt-0")])
    finally:
        await w.stop()
        await proxy.close()
        for c in held:
            await c.ws.close()


def start_on(d, port):
    """Start a Daemon on a given port (the harness picks a free one)."""
    saved = harness.free_port
    harness.free_port = lambda: port
    try:
        d.start()
    finally:
        harness.free_port = saved


@timeout(60)
async def test_watch_across_restart(t, d, args):
    port = free_port()
    d1 = Daemon(args.presenced, None, "restart-1")
    d2 = Daemon(args.presenced, None, "restart-2")
    w = None
    try:
        start_on(d1, port)
        w = await Watch.start(f"http://{HOST}:{port}")
        t.check("restart: watch connected", await streams_open(port))
        c = await Client.connect(d1, "pc-restart-1")
        await w.until(lambda e: is_ev(e, "user.online", "pc-restart-1"))
        d1.stop()
        e = await w.until(lambda e: is_ev(e, "user.offline", "pc-restart-1"), 5)
        t.check("restart: watch prints the shutdown's user.offline", e and e.get("reason") == "shutdown", e)
        await asyncio.sleep(1.0)  # watch retries against a closed port meanwhile
        t.check("restart: watch keeps running while presenced is down", w.proc.returncode is None)
        start_on(d2, port)
        c2 = await Client.connect(d2, "pc-restart-2")
        e = await w.until(lambda e: is_ev(e, "user.online", "pc-restart-2"), 40)
        t.check("restart: watch resumes on the new daemon and prints its events", e is not None,
                (w.events[-3:], w.err.decode()[-400:]))
        t.check("restart: watch notices the new instance",
                b"restarted" in w.err, w.err.decode()[-400:])
        t.check("restart: the new run's session.connected is not skipped",
                any(is_ev(x, "session.connected", "pc-restart-2") for x in w.events), w.events[-4:])
        await c2.ws.close()
        del c
    finally:
        if w:
            await w.stop()
        for x in (d1, d2):
            x.stop()
            t.check(f"{x.name}: no sanitizer report", not sanitizer_report(x.stderr_text()),
                    sanitizer_report(x.stderr_text()))
            x.cleanup()


@timeout(40)
async def test_config_file_and_logs(t, d, args):
    """presenced --config with a secret file, --check-config, JSON logs with
    one line per error class."""
    tmp = tempfile.mkdtemp(prefix="pctl-conf-")
    key = os.path.join(tmp, "api-key")
    with open(key, "w") as f:
        f.write(API_KEY + "\n")
    good = os.path.join(tmp, "good.conf")
    with open(good, "w") as f:
        f.write(f"# test\napi-key-file = {key}\nlog-format = json\nlog-level = info\n")
    bad = os.path.join(tmp, "bad.conf")
    with open(bad, "w") as f:
        f.write("log-format = json\nmax-frame = lots\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCED_")}

    async def run_pd(*argv):
        p = await asyncio.create_subprocess_exec(
            args.presenced, *argv, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await asyncio.wait_for(p.communicate(), 10)
        return p.returncode, out.decode(), err.decode()

    rc, out, err = await run_pd("--config", good, "--check-config")
    t.check("--check-config: a good file prints ok, exit 0", rc == 0 and out.strip() == "ok",
            (rc, out, err))
    rc, out, err = await run_pd("--config", bad, "--check-config")
    t.check("--check-config: a bad file gives FILE:LINE: key: reason, exit 2",
            rc == 2 and f"{bad}:2: max-frame: expected an integer" in err, (rc, err))
    rc, out, err = await run_pd("--config", good, "--api-key-file", os.path.join(tmp, "none"),
                                "--check-config")
    t.check("--check-config: an unreadable secret file, exit 2",
            rc == 2 and "api-key-file" in err, (rc, err))
    rc, out, err = await run_pd("--config", bad)
    t.eq("a bad file: presenced does not start, exit 2", rc, 2)

    pd = Daemon(args.presenced, {"--api-key": None, "--config": good}, "config-file")
    try:
        pd.start()
        rc, out, _ = await ctl("status", "x", d=pd)
        t.eq("the API key from the file's api-key-file is the one in force", rc, 0)
        for _ in range(30):
            await http(pd, "GET", "/v1/users/x", auth="Bearer wrong")
        r = await http(pd, "GET", "/metrics")
        m = re.search(r'^presenced_errors_total\{code="unauthorized"\} (\d+)$', r.body.decode(), re.M)
        t.check("30 refused requests are counted", m and int(m.group(1)) >= 30, m.group(0) if m else r.body[-400:])
        await asyncio.sleep(0.2)
        lines = [l for l in pd.stderr_text().splitlines() if l.strip()]
        recs = [loads(l) for l in lines]
        t.check("--log-format json: every stderr line is a JSON object with ts, level, msg",
                lines and all(isinstance(r, dict) and {"ts", "level", "msg"} <= r.keys()
                              for r in recs), lines[:5])
        unauth = [r for r in recs if isinstance(r, dict) and r.get("code") == "unauthorized"]
        t.eq("one log line for 30 errors of one class (never one per request)", len(unauth), 1)
        t.check("the error line carries its code, level warn and the instance",
                unauth and unauth[0].get("level") == "warn" and unauth[0].get("instance"), unauth)
    finally:
        code = pd.stop()
        t.eq("config-file daemon: SIGTERM, exit 0", code, 0)
        t.check("config-file daemon: no sanitizer report", not sanitizer_report(pd.stderr_text()),
                sanitizer_report(pd.stderr_text()))
        pd.cleanup()
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)


def main():
    global CTL
    args = parse_args()
    CTL = os.path.join(os.path.dirname(os.path.abspath(args.presenced)), "presencectl")
    if not os.access(CTL, os.X_OK):
        print(f"FAIL - presencectl not found next to presenced ({CTL})")
        print("0 passed, 1 failed")
        sys.exit(1)
    run([
        ("presencectl", {}, [test_status, test_sessions_and_kick, test_exit_codes,
                             test_watch_silent_server,
                             test_stats_and_metrics, test_watch_json_and_human,
                             test_watch_resumes_after_disconnect,
                             test_ws_session_example, test_numbers_as_written,
                             test_times_carry_their_zone]),
        ("presencectl-restart", {}, [test_watch_across_restart]),
        ("presencectl-filtered", {"--log-capacity": "16"}, [test_watch_filtered_cursor]),
        ("config-and-logs", {}, [test_config_file_and_logs]),
    ])


if __name__ == "__main__":
    main()
