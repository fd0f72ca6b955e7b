#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""presenced under a low open file limit (ulimit -n, LimitNOFILE=), as an
operator meets it: a limit below --max-connections lowers the connection
limit with a warning naming the limit and serves; a limit too low to start
at all fails with exit 1 and a line that names the limit and how to raise it
(it said only "cannot create the event loop", or "cannot listen on ...: too
many open files")."""

import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Checks, free_port, http_sync, parse_args  # noqa: E402


def start(binary, nofile, port):
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCED_")}
    return subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=limit)


def too_low(t, binary, nofile, what):
    p = start(binary, nofile, free_port())
    try:
        out, _ = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    text = out.decode("utf-8", "replace")
    t.eq(f"ulimit -n {nofile}: exit status 1", p.returncode, 1)
    t.check(f"ulimit -n {nofile}: {what}, naming the limit and how to raise it",
            f"the open file limit is {nofile}: raise it with ulimit -n or LimitNOFILE=" in text,
            text.strip())


def main():
    args = parse_args()
    t = Checks()
    # Too few for the event loop itself (stdio, epoll, its wake-up pipes).
    too_low(t, args.presenced, 7, "cannot create the event loop")
    # Enough for the loop, not for the listening socket.
    too_low(t, args.presenced, 10, "cannot listen")
    # Low but workable: the connection limit is lowered to fit, and it serves.
    port = free_port()
    p = start(args.presenced, 200, port)
    try:
        ok = False
        for _ in range(100):
            try:
                st, _h, _b = http_sync(port, "GET", "/healthz", timeout=1.0)
                ok = st == 200
                break
            except OSError:
                if p.poll() is not None:
                    break
                time.sleep(0.05)
        t.check("ulimit -n 200: serves /healthz", ok)
    finally:
        p.terminate()
        try:
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
    text = out.decode("utf-8", "replace")
    t.check("ulimit -n 200: warns that --max-connections was lowered to fit",
            "--max-connections 100000 lowered to " in text and
            "the open file limit is 200 (raise it with LimitNOFILE= or ulimit -n)" in text,
            text.strip())
    t.eq("ulimit -n 200: exit status 0 on SIGTERM", p.returncode, 0)
    print(f"{t.passed} passed, {t.failed} failed", flush=True)
    return 0 if t.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
