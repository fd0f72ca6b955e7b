#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What presenced says at start, as an operator or a script reads it.

  port0:         --listen 127.0.0.1:0 (and [::1]:0) asks the kernel for a
                 free port: the start line names the port bound (it said
                 ":0"), and that port serves /healthz.
  workers-port0: --workers 2 --listen 127.0.0.1:0: the supervisor picks one
                 port and both workers serve on it (each worker asked the
                 kernel for a port of its own: two ports, neither named).
  workers-port0/workers-port: with every worker killed, a process of another
                 user cannot bind and listen on the port before they come
                 back (the supervisor holds it with SO_REUSEPORT alone).
  busy:          a port already taken, on the Redis store: exit 1 with
                 "cannot listen", and no "leaving Redis" line (the instance
                 never joined: the line told of a join and an outage that
                 never happened), nor a registration with Redis after the
                 failure; the same with --workers 2, where the supervisor
                 stops with "failed at startup".

Run: /usr/bin/python3 tests/integration/test_startup.py --presenced PATH
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (BASE_FLAGS, Checks, _die_with_parent,  # noqa: E402
                     http_sync, listens_on, parse_args, sanitizer_report)
from test_redis_cluster import Redis  # noqa: E402


def argv(binary, listen, extra=None):
    a = [binary, "--listen", listen]
    for k, v in {**BASE_FLAGS, **(extra or {})}.items():
        a += [k, v]
    return a


def env():
    return {k: v for k, v in os.environ.items() if not k.startswith("PRESENCED_")}


class Proc:
    """presenced with its stderr read into a file."""

    def __init__(self, args):
        self.err = open(os.path.join(TMP, f"err-{time.monotonic_ns()}"), "w+b")
        self.p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.err,
                                  stderr=self.err, env=env(), preexec_fn=_die_with_parent)

    def text(self):
        self.err.flush()
        with open(self.err.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_line(self, pattern, count=1, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.text())
            if len(found) >= count or self.p.poll() is not None:
                return found
            time.sleep(0.05)
        return re.findall(pattern, self.text())

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                return self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
        return self.p.wait()


def healthz(port):
    try:
        st, _h, _b = http_sync(port, "GET", "/healthz", timeout=2.0)
        return st
    except OSError as e:
        return str(e)


def test_port0(t, binary, host):
    listen = f"[{host}]:0" if ":" in host else f"{host}:0"
    d = Proc(argv(binary, listen))
    try:
        lines = d.wait_line(r"listening on (\S+) \(")
        t.check(f"port0 {host}: a start line", len(lines) == 1, d.text())
        if not lines:
            return
        m = re.match(r"^(.*):(\d+)$", lines[0])
        port = int(m.group(2)) if m else 0
        t.check(f"port0 {host}: the start line names the port bound, not 0 ({lines[0]})",
                m is not None and port != 0 and m.group(1) == listen.rsplit(":", 1)[0],
                lines[0])
        if port:
            t.check(f"port0 {host}: presenced listens on that port", listens_on(d.p.pid, port))
            if ":" not in host:
                t.eq(f"port0 {host}: /healthz on that port", healthz(port), 200)
        t.eq(f"port0 {host}: exit status 0 on SIGTERM", d.stop(), 0)
        rep = sanitizer_report(d.text())
        t.check(f"port0 {host}: no sanitizer report", not rep, rep)
    finally:
        d.stop()


def test_workers_port0(t, binary, redis):
    d = Proc(argv(binary, "127.0.0.1:0", {**redis.store_flags(), "--workers": "2",
                                          "--shutdown-timeout-ms": "3000"}))
    try:
        sup = d.wait_line(r"supervising 2 workers on 127\.0\.0\.1:(\d+)")
        ports = d.wait_line(r"listening on 127\.0\.0\.1:(\d+) \(", count=2)
        t.check("workers-port0: the supervisor names a port, not 0",
                len(sup) == 1 and sup[0] != "0", d.text())
        t.check("workers-port0: both workers say they listen on that same port",
                len(ports) == 2 and set(ports) == set(sup), f"supervisor {sup}, workers {ports}")
        if sup and sup[0] != "0":
            port = int(sup[0])
            t.eq("workers-port0: /healthz on that port", healthz(port), 200)
            workers = []
            with open(f"/proc/{d.p.pid}/task/{d.p.pid}/children") as f:
                workers = [int(x) for x in f.read().split()]
            t.check("workers-port0: each of the two workers listens on it",
                    len(workers) == 2 and all(listens_on(w, port) for w in workers),
                    f"workers {workers}")
            if len(workers) == 2:
                port_held_while_workers_down(t, d, port, workers)
        t.eq("workers-port0: exit status 0 on SIGTERM", d.stop(), 0)
        rep = sanitizer_report(d.text())
        t.check("workers-port0: no sanitizer report", not rep, rep)
    finally:
        d.stop()


# Another user's process, ready before the workers go: on "go" it binds
# the port as a second server would (SO_REUSEADDR, SO_REUSEPORT) and listens.
SQUATTER = """
import socket, sys
sys.stdin.readline()
t = socket.socket()
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
try:
    t.bind(("127.0.0.1", int(sys.argv[1])))
    t.listen()
    print("bound", flush=True)
except OSError as e:
    print("refused", e.errno, flush=True)
"""


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def port_held_while_workers_down(t, d, port, workers, name="workers-port0"):
    """The port the supervisor picked stays its own while no worker listens
    (every worker restarting): its reservation was bound with SO_REUSEADDR,
    which lets a socket of any user bind a port whose other sockets do not
    listen, and listen on it; the workers coming back then could not bind
    (another user's SO_REUSEPORT socket), and the squatter took the clients'
    connections, tokens and API keys with them."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        t.note(f"SKIP {name} squatter: needs root (setpriv to another user)")
        return
    sq = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-c", SQUATTER, str(port)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for w in workers:
            os.kill(w, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while not all(gone(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.001)
        sq.stdin.write("go\n")
        sq.stdin.flush()
        got = sq.stdout.readline().strip()
    finally:
        sq.kill()
        sq.wait()
    t.check(f"{name}: with every worker down, another user cannot bind and listen on "
            "the supervisor's port", got.startswith("refused"), got)
    deadline = time.monotonic() + 10
    while healthz(port) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    t.eq(f"{name}: the workers come back on it", healthz(port), 200)


def test_workers_fixed_port(t, binary, redis):
    """A port given, not picked: held by the supervisor too while every
    worker restarts."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    d = Proc(argv(binary, f"127.0.0.1:{port}", {**redis.store_flags(), "--workers": "2",
                                                "--shutdown-timeout-ms": "3000"}))
    try:
        d.wait_line(r"listening on 127\.0\.0\.1:(\d+) \(", count=2)
        with open(f"/proc/{d.p.pid}/task/{d.p.pid}/children") as f:
            workers = [int(x) for x in f.read().split()]
        t.check("workers-port: both workers listen on the port given",
                len(workers) == 2 and all(listens_on(w, port) for w in workers), d.text())
        if len(workers) == 2:
            port_held_while_workers_down(t, d, port, workers, "workers-port")
        t.eq("workers-port: exit status 0 on SIGTERM", d.stop(), 0)
    finally:
        d.stop()


def test_busy(t, binary, redis, workers):
    name = "busy --workers 2" if workers else "busy"
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    extra = {**redis.store_flags(), "--shutdown-timeout-ms": "3000"}
    if workers:
        extra["--workers"] = "2"
    d = Proc(argv(binary, f"127.0.0.1:{port}", extra))
    try:
        try:
            code = d.p.wait(20)
        except subprocess.TimeoutExpired:
            code = None
        text = d.text()
        t.eq(f"{name}: exit status 1", code, 1)
        t.check(f"{name}: 'cannot listen on 127.0.0.1:{port}: address already in use'",
                f"cannot listen on 127.0.0.1:{port}: address already in use" in text, text)
        if workers:
            t.check(f"{name}: the supervisor says a worker failed at startup",
                    "failed at startup" in text, text)
        t.check(f"{name}: no 'leaving Redis' line (the instance never joined)",
                "leaving Redis" not in text, text)
        # Its registration, in flight at the failure, completed afterwards:
        # a lease in Redis nobody renews, until another instance reaped it.
        t.check(f"{name}: and it does not register with Redis after the failure",
                "instance registered" not in text, text)
        rep = sanitizer_report(text)
        t.check(f"{name}: no sanitizer report", not rep, rep)
    finally:
        d.stop()
        s.close()


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s6:
            s6.bind(("::1", 0))
        return True
    except OSError:
        return False


TMP = None


def main():
    global TMP
    import tempfile
    args = parse_args()
    t = Checks()
    TMP = tempfile.mkdtemp(prefix="presenced-startup-")
    try:
        if not args.only or "port0" in args.only:
            test_port0(t, args.presenced, "127.0.0.1")
            if ipv6_loopback():
                test_port0(t, args.presenced, "::1")
        if not shutil.which("redis-server"):
            print("ok   - SKIP: redis-server not installed")
        else:
            redis = Redis()
            try:
                redis.start()
                if not args.only or "workers" in args.only:
                    test_workers_port0(t, args.presenced, redis)
                    test_workers_fixed_port(t, args.presenced, redis)
                if not args.only or "busy" in args.only:
                    test_busy(t, args.presenced, redis, False)
                    test_busy(t, args.presenced, redis, True)
            finally:
                redis.cleanup()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    print(f"{t.passed} passed, {t.failed} failed", flush=True)
    return 0 if t.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
