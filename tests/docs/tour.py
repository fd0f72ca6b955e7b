#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The commands a newcomer types first, run as the documents write them.

README.md's tour and docs/getting-started.md are followed command by command
against a real presenced started the way `make run` starts it (the
Makefile's API key, --demo), only the port changed to a free one and
./build/ to the build directory under test:

  - getting-started's "Ask from a backend" block in bash (the event stream
    stopped after a while, where the reader types Ctrl-C) while alice goes
    idle: alice's answer, the two users, a user.idle event on the stream;
    its presencectl commands;
  - the demo token block and examples/ws_session.py, in a terminal (a pty):
    the welcome and alice's snapshot print, typing "idle" makes carol idle,
    Ctrl-C ends the program within seconds and carol's session with it;
  - webhooks.md's example receiver, as its block starts it (the port
    changed), fed by presenced with the block's --webhook: users online in
    its SQLite table; at a shutdown both offline, the one with a session and
    the one in its offline grace; the next start's cleanup changes nothing;
  - webhooks.md's Python and JavaScript verify(), on a delivery presenced
    signed and on one changed;
  - the README's cluster step (with redis-server): two instances on one
    Redis, the first killed, the second's presencectl watch prints the
    instance_lost events the README shows;
  - every --flag these documents give is one of presenced, presencectl or
    the examples.

    /usr/bin/python3 tests/docs/tour.py --presenced build/presenced

Exits 1 and names each step whose output is not what the documents say.
Uses tests/integration/harness.py (Debian's python3-websockets).
"""
import asyncio
import base64
import json
import os
import pty
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402
from harness import HOST, Checks, Daemon, free_port, http_sync, websockets  # noqa: E402

DOC_PORT = "127.0.0.1:7070"


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def section(text, heading):
    """The text under a heading, to the next heading of any level (a "# "
    line inside a code block is a comment, not a heading)."""
    out, inside, fence = [], False, False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#+ ", line):
            if inside:
                break
            inside = line.lstrip("#").strip() == heading
            continue
        if inside:
            out.append(line)
    if not out:
        raise SystemExit(f"tour.py: no heading {heading!r}: the check needs updating")
    return "".join(out)


def sh_blocks(text):
    """The ```sh blocks of text, indentation removed (the README's tour is a
    numbered list)."""
    out = []
    for m in re.finditer(r"^([ \t]*)```sh\n(.*?)^[ \t]*```", text, re.S | re.M):
        ind = len(m.group(1))
        out.append("\n".join(l[ind:] for l in m.group(2).splitlines()) + "\n")
    return out


def span(text, pattern):
    """The first code span of text that matches pattern."""
    for m in re.finditer(r"`([^`\n]+)`", text):
        if re.search(pattern, m.group(1)):
            return m.group(1)
    raise SystemExit(f"tour.py: no code span matching {pattern!r}: the check needs updating")


def makefile_var(name):
    m = re.search(r"^" + name + r"\s*\?=\s*(\S+)", read("Makefile"), re.M)
    return m.group(1)


class Tour:
    def __init__(self, binary):
        self.binary = os.path.abspath(binary)
        self.build = os.path.dirname(self.binary)
        self.t = Checks()

    def local(self, cmd, port):
        """A documented command for this run: the daemon on port, the
        binaries of the build under test."""
        cmd = cmd.replace(DOC_PORT, f"{HOST}:{port}")
        return re.sub(r"(?<![\w/])\./build/", self.build + "/", cmd)

    def bash(self, script, env=None, timeout=30):
        e = dict(os.environ, **(env or {}))
        p = subprocess.run(["bash", "-c", script], cwd=ROOT, env=e, capture_output=True,
                           text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def clean(self, d):
        """A stopped daemon's stderr holds no sanitizer report (an ASan
        build), then its files go."""
        if d.proc is not None:
            rep = harness.sanitizer_report(d.stderr_text())
            self.t.check(f"{d.name}: no sanitizer report", not rep, rep)
        d.cleanup()

    # ---- getting-started, section 3: asking from a backend ---------------

    async def backend_block(self, d, block, what, ids):
        """A block of curl commands (answers for ids, then the event
        stream) run while alice is online, then goes idle; her session is
        returned, still open."""
        # The stream never ends: the reader stops it with Ctrl-C.
        script = self.local(block, d.port).replace("curl -sN", "timeout 4 curl -sN")
        tok = demo_token(d.port, "alice")
        ws = await websockets.connect(d.ws_url(tok), ping_interval=None)
        await ws.recv()  # the welcome: alice is online
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", script, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        # The answers first (alice online), then alice idle while the
        # stream is open: a stream reads from the time it opened, so a
        # machine slow to start curl still sees a later change.
        head = b""
        while head.count(b'"user_id":"alice"') < len(ids):
            chunk = await asyncio.wait_for(proc.stdout.read(4096), 10)
            if not chunk:
                break
            head += chunk
        for st in ("idle", "online", "idle"):
            await asyncio.sleep(0.5)
            await ws.send(json.dumps({"type": "status", "status": st}))
        out, err = await asyncio.wait_for(proc.communicate(), 15)
        out = (head + out).decode()
        # The answers one after the other (a JSON body ends without a
        # newline), then the stream.
        answers, i = [], 0
        while len(answers) < len(ids):
            try:
                o, i = json.JSONDecoder().raw_decode(out, i)
            except ValueError:
                break
            answers.append(o)
        for n, want in enumerate(ids):
            got = answers[n] if n < len(answers) else None
            if isinstance(got, dict) and "users" in got:
                got = [u.get("user_id") for u in got["users"]]
            elif isinstance(got, dict):
                got = got.get("user_id") if got.get("status") == "online" else got
            self.t.eq(f"{what}: curl {n + 1} answers {want}", got, want)
        self.t.check(f"{what}: the event stream shows alice's user.idle",
                     re.search(r"^event: user\.idle\ndata: \{[^\n]*\"user_id\":\"alice\"", out,
                               re.M) is not None, out[-600:] + err.decode()[-300:])
        return ws

    async def ask(self, d, readme, gs):
        # README's step 2, with the key make run sets.
        tour = section(readme, "A five-minute tour")
        block = next(b for b in sh_blocks(tour) if "/v1/events" in b)
        await (await self.backend_block(d, block, "README tour 2", ["alice"])).close()
        block = sh_blocks(section(gs, "3. Ask from a backend"))[0]
        ws = await self.backend_block(d, block, "getting-started 3", ["alice", ["alice", "bob"]])
        # The prose's presencectl commands, with the block's key.
        key = re.search(r"^KEY=(\S+)", block, re.M).group(1)
        ctl = os.path.join(self.build, "presencectl")
        if not os.path.exists(ctl):
            self.t.note("presencectl not built here: its commands not run")
        else:
            cmd = span(section(gs, "3. Ask from a backend"), r"^PRESENCECTL_API_KEY=.*status alice")
            rc, o, e = self.bash(f"KEY={key}; " + self.local(cmd, d.port).replace(
                "presencectl ", f"presencectl --url http://{HOST}:{d.port} ", 1))
            self.t.check("getting-started 3: presencectl status alice shows alice idle",
                         rc == 0 and re.search(r"^alice +idle +1 ", o, re.M), (rc, o, e))
        await ws.close()

    # ---- a session from a terminal: the token and ws_session.py ----------

    def session(self, d, script, who, what):
        """script (a token block and ws_session.py) in a pty, as typed in a
        terminal: what it prints, "idle" typed, then Ctrl-C."""
        pid, fd = pty.fork()
        if pid == 0:
            # A terminal's Ctrl-C: the signal the shell running this test
            # may have ignored (a background job's) is the default again.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.chdir(ROOT)
            os.execvp("bash", ["bash", "-c", script])
        out = b""

        def drain(until, seconds=10):
            nonlocal out
            end = time.monotonic() + seconds
            while time.monotonic() < end and not until(out.decode(errors="replace")):
                r, _, _ = select.select([fd], [], [], 0.05)
                if r:
                    try:
                        out += os.read(fd, 65536)
                    except OSError:  # the program ended: the pty is closed
                        return
        try:
            drain(lambda o: '"snapshot":true' in o)
            text = out.decode(errors="replace")
            welcome = next((loads(l) for l in text.splitlines() if '"welcome"' in l), None)
            self.t.check(f"{what}: prints the welcome for {who}",
                         isinstance(welcome, dict) and welcome.get("user_id") == who, text[-400:])
            self.t.check(f"{what}: then alice's snapshot", '"user_id":"alice"' in text.split(
                '"snapshot":true', 1)[-1], text[-400:])
            os.write(fd, b"idle\n")
            st = None
            for _ in range(50):
                st = user(d.port, who)
                if st.get("status") == "idle":
                    break
                time.sleep(0.1)
            self.t.eq(f"{what}: typing idle makes {who} idle", st.get("status"), "idle")
            os.write(fd, b"\x03")  # Ctrl-C
            t0 = time.monotonic()
            code = None
            while time.monotonic() - t0 < 5:
                p, status = os.waitpid(pid, os.WNOHANG)
                if p:
                    code = status
                    break
                drain(lambda o: False, 0.05)
            self.t.check(f"{what}: Ctrl-C ends it (within 5 s)", code is not None,
                         out.decode(errors="replace")[-300:])
            sessions = None
            for _ in range(50):
                sessions = user(d.port, who).get("sessions")
                if sessions == 0:
                    break
                time.sleep(0.1)
            self.t.eq(f"{what}: Ctrl-C ends {who}'s session", sessions, 0)
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            os.close(fd)

    def sessions_of_the_docs(self, d, readme, gs):
        # README step 3: its block holds both the token and the session.
        tour = section(readme, "A five-minute tour")
        block = next(b for b in sh_blocks(tour) if "ws_session.py --token" in b)
        self.session(d, self.local(block, d.port).replace(
            "examples/ws_session.py", f"examples/ws_session.py --url ws://{HOST}:{d.port}"),
            "carol", "README tour 3")
        # getting-started 4: the token block, then the command in the prose.
        s4 = section(gs, "4. Connect a client of your own")
        block = sh_blocks(s4)[0]
        cmd = span(s4, r"ws_session\.py --token")
        self.session(d, self.local(block, d.port) + cmd.replace(
            "ws_session.py", f"ws_session.py --url ws://{HOST}:{d.port}") + "\n",
            "carol", "getting-started 4")

    # ---- webhooks.md's example receiver ------------------------------------

    async def receiver(self):
        block = sh_blocks(section(read("docs/webhooks.md"), "An example receiver"))[0]
        lines = [l for l in block.splitlines() if l.strip()]
        rx_line = next(l for l in lines if "webhook_receiver.py" in l)
        hook = re.search(r'--webhook "([^"]*)"', next(l for l in lines if "--webhook" in l)).group(1)
        query = re.search(r"sqlite3 app\.db '([^']*)'", block).group(1)
        rx_port = free_port()
        tmp = tempfile.mkdtemp(prefix="docs-tour-")
        secret = subprocess.run(["openssl", "rand", "-hex", "32"], capture_output=True,
                                text=True).stdout.strip()
        # The receiver as the block starts it; its database in a directory of ours.
        rx_cmd = rx_line.rstrip(" &").replace("--port 9000", f"--port {rx_port}").replace(
            "examples/", ROOT + "/examples/")
        rx = subprocess.Popen(["bash", "-c", "exec " + rx_cmd], cwd=tmp,
                              env=dict(os.environ, WHSEC=secret),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        spec = hook.replace("$WHSEC", secret).replace(":9000/", f":{rx_port}/")
        # The default offline grace, as the block's presenced has.
        flags = {"--webhook": spec, "--offline-grace-ms": "10000"}
        d = Daemon(self.binary, flags, "docs-tour-webhooks")
        d2 = Daemon(self.binary, flags, "docs-tour-webhooks-2")
        try:
            d.start()
            db = os.path.join(tmp, "app.db")

            def rows():
                try:
                    with sqlite3.connect(db) as c:
                        return {x[0]: x[1:] for x in c.execute(query).fetchall()}
                except sqlite3.Error:
                    return {}

            async def until(pred):
                for _ in range(100):
                    if pred(rows()):
                        break
                    await asyncio.sleep(0.1)
                return rows()
            alice = await websockets.connect(d.ws_url(harness.token("alice")), ping_interval=None)
            bob = await websockets.connect(d.ws_url(harness.token("bob")), ping_interval=None)
            got = await until(lambda r: [r.get(u, [None])[0] for u in ("alice", "bob")]
                              == ["online", "online"])
            self.t.check("webhooks.md receiver: alice and bob online in its users table, "
                         "last_online set", all(got.get(u, [None])[0] == "online"
                                                and got[u][1] for u in ("alice", "bob")),
                         (got, d.stderr_tail(5)))
            # alice's tab closes: she is in her offline grace when presenced
            # stops; bob still has his session.
            await alice.close()
            await asyncio.sleep(0.3)
            d.stop()
            got = await until(lambda r: [r.get(u, [0])[0] for u in ("alice", "bob")]
                              == [None, None])
            self.t.check("webhooks.md shutdown: a user with a session goes offline",
                         got.get("bob", [0])[0] is None, got)
            self.t.check("webhooks.md shutdown: a user in its offline grace too",
                         got.get("alice", [0])[0] is None, got)
            await bob.close()
            # The next start's cleanup ("fresh_start": true) is taken as the
            # example takes it: every user offline, as they are already.
            d2.start()
            await asyncio.sleep(1)
            got = rows()
            self.t.check("webhooks.md receiver: after the next start's fresh-start cleanup "
                         "every user is offline", [got.get(u, [0])[0] for u in ("alice", "bob")]
                         == [None, None], got)
        finally:
            for x in (d, d2):
                x.stop()
                self.clean(x)
            rx.terminate()
            rx.wait(5)
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- webhooks.md's verify functions -------------------------------------

    async def verify(self):
        """webhooks.md's Python and JavaScript verify(), run as written on a
        delivery presenced signed: true for it, false for one byte changed."""
        doc = read("docs/webhooks.md")
        py = re.search(r"^### Python\n+```python\n(.*?)```", doc, re.S | re.M).group(1)
        js = re.search(r"^### JavaScript \(node\)\n+```js\n(.*?)```", doc, re.S | re.M).group(1)
        secret = "whsec-docs-tour-0123456789abcdef0123456789"
        rx = harness.HookReceiver()
        d = Daemon(self.binary, {"--webhook": f"url={rx.url()},secret={secret}",
                                 "--webhook-batch-ms": "0"}, "docs-tour-verify")
        try:
            d.start()
            for _ in range(100):
                if rx.batches():
                    break
                await asyncio.sleep(0.05)
        finally:
            d.stop()
            self.clean(d)
            rx.stop()
        if not self.t.check("webhooks.md verify: a delivery came", rx.batches()):
            return
        h, _b, raw = rx.batches()[0]
        headers = {"Presence-Timestamp": h["presence-timestamp"],
                   "Presence-Signature": h["presence-signature"]}
        changed = raw + b" "
        ns = {}
        exec(py, ns)  # the document's function, as written
        self.t.check("webhooks.md Python verify(): true for presenced's delivery",
                     ns["verify"](secret.encode(), headers, raw) is True)
        self.t.check("webhooks.md Python verify(): false for a changed body",
                     ns["verify"](secret.encode(), headers, changed) is False)
        if not shutil.which("node"):
            self.t.note("no node: webhooks.md's JavaScript verify() not run")
            return
        # The document's function, then a call of it as its comment says:
        # node's lower-case header names, the raw body as a Buffer.
        prog = js + (
            "const h = JSON.parse(process.argv[2]);\n"
            "const body = Buffer.from(process.argv[3], 'base64');\n"
            "console.log(JSON.stringify([verify(process.argv[1], h, body),\n"
            "  verify(process.argv[1], h, Buffer.concat([body, Buffer.from(' ')]))]));\n")
        lower = {k.lower(): v for k, v in headers.items()}
        p = subprocess.run(["node", "-e", prog, secret, json.dumps(lower),
                            base64.b64encode(raw).decode()], capture_output=True, text=True)
        self.t.eq("webhooks.md JavaScript verify(): true for the delivery, false changed",
                  (p.stdout.strip(), p.stderr[-300:]), ("[true,false]", ""))

    # ---- README step 5: a cluster on one Redis ---------------------------

    def cluster(self, readme):
        redis = os.environ.get("REDIS_SERVER", "")  # CMake's find_program, if any
        if not os.path.isfile(redis):
            redis = shutil.which("redis-server")
        ctl = os.path.join(self.build, "presencectl")
        if not redis or not shutil.which("redis-cli") or not os.path.exists(ctl):
            self.t.note("no redis-server, redis-cli or presencectl: the cluster step not run")
            return
        tour = section(readme, "A five-minute tour")
        blocks = [b for b in sh_blocks(tour) if "6390" in b]
        start, stop = blocks[0], blocks[1]
        ports = {"6390": str(free_port()), "7071": str(free_port()), "7072": str(free_port())}
        script = start + "sleep 12\n" + stop
        for a, b in ports.items():
            script = script.replace(a, b)
        script = self.local(script, 0).replace("cmake --build build --target presencectl", ":")
        script = script.replace("redis-server ", redis + " ")
        # Whatever happens, nothing of it outlives the check.
        script = ("trap 'kill -9 $pid1 $pid2 $pid3 $pid4 2>/dev/null; redis-cli -p "
                  f"{ports['6390']} shutdown nosave 2>/dev/null' EXIT\n") + script
        rc, out, err = self.bash(script, timeout=60)
        rep = harness.sanitizer_report(err)
        self.t.check("README tour 5: no sanitizer report", not rep, rep)
        self.t.check("README tour 5: ws_session.py ends with instance 1 (close 1006)",
                     "closed: code 1006" in out, out[-600:] + err[-600:])
        self.t.check("README tour 5: status alice, asked on instance 2, is online",
                     re.search(r"^alice +online +1 ", out, re.M) is not None, out[-600:])
        for line in (r"session\.disconnected alice online -> offline session \S+ \(instance_lost\)",
                     r"user\.offline +alice online -> offline session \S+ \(instance_lost\)",
                     r"cleanup +\(instance_lost\)"):
            self.t.check(f"README tour 5: watch prints {line.split(' ')[0]}",
                         re.search(line, out) is not None, out[-800:] + err[-400:])


# The documents whose flags are checked, and the flags of other programs
# they show (cmake, redis-server, pkg-config, meteor npm).
FLAG_DOCS = ["README.md", "docs/getting-started.md", "docs/concepts.md", "docs/webhooks.md",
             "docs/security.md", "docs/guides/meteor.md", "docs/guides/socketio.md",
             "docs/c-api.md", "docs/internals/core.md", "docs/internals/server.md"]
OTHER_FLAGS = {"--build", "--target", "--install", "--prefix", "--daemonize", "--save",
               "--libs", "--cflags"}


def flags(t, build):
    """Every --flag the documents give is one of presenced, presencectl or
    the examples (their --help), or of the other programs they show."""
    known = set(OTHER_FLAGS)
    progs = [[os.path.join(build, "presenced"), "--help"],
             [os.path.join(build, "presencectl"), "--help"],
             ["/usr/bin/python3", os.path.join(ROOT, "examples", "ws_session.py"), "--help"],
             ["/usr/bin/python3", os.path.join(ROOT, "examples", "webhook_receiver.py"),
              "--help"]]
    for argv in progs:
        if os.path.exists(argv[0]):
            p = subprocess.run(argv, capture_output=True, text=True)
            known |= set(re.findall(r"--[a-z][a-z0-9-]*", p.stdout + p.stderr))
    for rel in FLAG_DOCS:
        for n, line in enumerate(read(rel).splitlines(), 1):
            for f in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line):
                if f not in known:
                    t.check(f"{rel}:{n}: {f} is a flag of no program", False, line.strip())
    # The defaults of the limit tables (security.md section 3, webhooks.md's
    # tuning) are presenced's: the "(N)" that ends the flag's --help line.
    ph = subprocess.run([os.path.join(build, "presenced"), "--help"], capture_output=True,
                        text=True).stdout
    defaults = dict(re.findall(r"^\s+(--[a-z0-9-]+)\s.*\((?:default )?([^()]*)\)\s*$", ph,
                               re.M))
    n = 0
    for rel in ("docs/security.md", "docs/webhooks.md"):
        for line in read(rel).splitlines():
            m = re.match(r"\| `(--[a-z0-9-]+)`(?: / `(--[a-z0-9-]+)`)? \| ([^|]*) \|", line)
            if not m:
                continue
            cells = m.group(3).split("/") if m.group(2) else [m.group(3)]
            for fl, cell in zip((m.group(1), m.group(2)), cells):
                num = re.match(r"\s*(\d+(?:,\d{3})*)", cell)  # 1,048,576 or 100000
                n += 1
                if not num or num.group(1).replace(",", "") != defaults.get(fl):
                    t.check(f"{rel}: {fl}'s default", False,
                            f"the table says {cell.strip()!r}, --help {defaults.get(fl)!r}")
    t.check("the limit tables' defaults are presenced's", n >= 20, f"{n} rows read")


def loads(s):
    try:
        return json.loads(s)
    except ValueError:
        return None


def demo_token(port, name):
    _s, _h, raw = http_sync(port, "POST", "/v1/demo/token", None, {"name": name})
    return json.loads(raw)["token"]


def user(port, uid):
    key = makefile_var("API_KEY")
    _s, _h, raw = http_sync(port, "GET", f"/v1/users/{uid}", {"Authorization": f"Bearer {key}"})
    return loads(raw.decode()) or {}


def main():
    args = harness.parse_args()
    tour = Tour(args.presenced)
    t = tour.t
    readme, gs = read("README.md"), read("docs/getting-started.md")
    # `make run` as the documents describe it: the key they give, the page
    # where they send the reader.
    key, port = makefile_var("API_KEY"), makefile_var("PORT")
    for rel, text in (("README.md", readme), ("docs/getting-started.md", gs)):
        t.check(f"{rel} gives make run's API key", key in text, key)
        t.check(f"{rel} sends the reader to make run's port", f"http://127.0.0.1:{port}/" in text)
    flags(t, tour.build)
    d = Daemon(tour.binary, {"--api-key": None, "--jwt-secret": None, "--jwt-audience": None,
                             "--offline-grace-ms": None, "--demo": ""},
               "docs-tour", env={"PRESENCED_API_KEY": key})
    try:
        d.start()
        asyncio.run(tour.ask(d, readme, gs))
        tour.sessions_of_the_docs(d, readme, gs)
    finally:
        d.stop()
        tour.clean(d)
    asyncio.run(tour.receiver())
    asyncio.run(tour.verify())
    tour.cluster(readme)
    print(f"{t.passed} passed, {t.failed} failed")
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
