#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Webhooks (docs/webhooks.md) against a real HTTP receiver: the same event
JSON as the event stream, in order, batched, signed; retries after 500 and
after the receiver was down; a gap notice past the backlog limit; a slow
receiver does not slow WebSocket clients; per-endpoint metrics; delivery
across a daemon restart; the example receiver keeps its SQLite table."""

import asyncio
import atexit
import hashlib
import hmac
import http.server as httpserver
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403

SECRET = "whsec-test-0123456789abcdef0123456789"  # 32 bytes at least


# --------------------------------------------------------------------------
# The receiver: a real HTTP server in a thread, scriptable from the tests


class Receiver:
    """Records every request. statuses: codes answered to the next requests
    (then 200); stall: seconds each request is held before the answer."""

    def __init__(self, name="rx", tls=None):
        self.name = name
        self.tls = tls          # (certificate file, key file): an https receiver
        self.lock = threading.Lock()
        self.requests = []      # (headers dict lower-case, body bytes, time)
        self.answered = []      # the status answered to each request
        self.statuses = []
        self.always = None      # a status answered to every request
        self.location = None    # the Location header of a 3xx answer
        self.stall = 0.0
        self.server = None
        self.conns = set()
        self.port = free_port()
        self.start()

    def start(self):
        rx = self

        class H(httpserver.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                if rx.tls:
                    self.request.do_handshake()
                super().setup()
                with rx.lock:
                    rx.conns.add(self.connection)

            def finish(self):
                with rx.lock:
                    rx.conns.discard(self.connection)
                super().finish()

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                with rx.lock:
                    status = rx.statuses.pop(0) if rx.statuses else (rx.always or 200)
                    rx.requests.append((hdrs, body, time.monotonic()))
                    rx.answered.append(status)
                    stall = rx.stall
                if stall:
                    time.sleep(stall)
                out = b'{"ok":true}'
                self.send_response(status)
                if 300 <= status < 400 and rx.location:
                    self.send_header("Location", rx.location)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = httpserver.ThreadingHTTPServer((HOST, self.port), H)
        if self.tls:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            # The handshake in the handler's thread (setup), not in accept:
            # a client that refuses the certificate must not stall the
            # accepting thread.
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
            # A sender refusing the certificate (what some tests check)
            # fails the handshake: not a traceback on the test's output.
            self.server.handle_error = lambda *a: None
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        """Down for real: no listener, and the kept-alive connections cut."""
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}/hook"

    def spec(self, **kw):
        s = f"url={self.url},secret={SECRET}"
        for k, v in kw.items():
            s += f",{k.replace('_', '-')}={v}"
        return s

    def clear(self):
        with self.lock:
            self.requests = []
            self.answered = []

    def snapshot(self):
        with self.lock:
            return list(self.requests)

    def ok_bodies(self):
        """Bodies of requests that were answered 2xx: the last attempt of
        each batch (a retried batch is recorded once per attempt)."""
        with self.lock:
            pairs = list(zip(self.requests, self.answered))
        return [(h, json.loads(b)) for (h, b, _t), st in pairs if 200 <= st < 300]

    def events(self):
        """Every event received, deduplicated by (instance, seq), in arrival
        order, plus the number of duplicates seen."""
        seen, out, dups = set(), [], 0
        for _h, body in self.ok_bodies():
            for e in body.get("events", []):
                k = (body.get("instance"), e["seq"])
                if k in seen:
                    dups += 1
                    continue
                seen.add(k)
                out.append(e)
        return out, dups

    async def wait_seq(self, seq, timeout=8.0):
        """Wait until an event with seq >= seq arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            evs, _ = self.events()
            if evs and max(e["seq"] for e in evs) >= seq:
                return True
            await asyncio.sleep(0.05)
        return False


def verify(headers, body, secret=SECRET, tolerance_ms=300000):
    """The receiver side of docs/webhooks.md: v1 = hex HMAC-SHA256 of
    timestamp + "." + body."""
    ts = headers.get("presence-timestamp", "")
    sig = headers.get("presence-signature", "")
    if not ts.isdigit() or abs(now_ms() - int(ts)) > tolerance_ms:
        return False
    want = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(p.strip(), "v1=" + want) for p in sig.split(","))


async def metrics(d):
    r = await http(d, "GET", "/metrics")
    return r.body.decode()


def metric(text, name, endpoint):
    m = re.search(r"^" + re.escape(name) + r'\{endpoint="' + re.escape(endpoint)
                  + r'"\} ([0-9.]+)$', text, re.M)
    return float(m.group(1)) if m else None


async def burst(d, users, prefix):
    """Connect and close one client per user: 4 events each."""
    for i in range(users):
        c = await Client.connect(d, f"{prefix}{i}")
        await c.close()
    await asyncio.sleep(0.1)


async def last_seq(d):
    r = await http(d, "GET", "/metrics")
    m = re.search(r"^presenced_event_sequence (\d+)$", r.body.decode(), re.M)
    return int(m.group(1))


async def settle(d, quiet=0.5, limit=10.0):
    """Wait until no new event happened for quiet seconds (under load the
    daemon may still be processing the closes of a burst); the last seq."""
    last, since, t0 = await last_seq(d), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() - t0 < limit:
        await asyncio.sleep(0.1)
        now = await last_seq(d)
        if now != last:
            last, since = now, time.monotonic()
    return last


def run_start(seq):
    """Whether seq is the first of a run of the embedded store: its log is
    numbered from the start time in microseconds (+1), so that every run's
    numbers are above the last run's and a cursor from before a restart
    reads as a gap."""
    return isinstance(seq, int) and (seq - 1) % 1000 == 0 and abs((seq - 1) // 1000 - now_ms()) < 120_000


def contiguous(evs, first=None):
    seqs = [e["seq"] for e in evs]
    if not seqs:
        return "no events"
    start = seqs[0] if first is None else first
    if seqs != list(range(start, start + len(seqs))):
        return f"not contiguous/in order: {seqs[:40]}"
    return None


TUNING = {"--webhook-batch-ms": "150", "--webhook-batch-max": "5",
          "--webhook-retry-min-ms": "50", "--webhook-retry-max-ms": "300",
          "--shutdown-timeout-ms": "3000"}

RX = Receiver("main")


# --------------------------------------------------------------------------
# Group: one endpoint


async def test_fresh_start_cleanup(t, d, args):
    """Issue 18: the embedded store starts empty, so the previous process's
    users are gone; the first event of the log is a fresh-start cleanup and
    the webhook delivers it (and GET /v1/events from the start has it)."""
    ok = await RX.wait_seq(1)
    evs, _ = RX.events()
    first = evs[0] if evs else {}
    t.check("fresh start: the webhook's first event is cleanup, the run's first seq, fresh_start true",
            ok and first.get("type") == "cleanup" and run_start(first.get("seq"))
            and first.get("fresh_start") is True and "instance" not in first
            and "session_ids" not in first, first)
    sse = await SSE.open(d, after=0)
    ev = await sse.next(3)
    sse.close()
    dd = (ev or {}).get("data") or {}
    t.check("fresh start: GET /v1/events?after=0 starts with the same cleanup",
            dd.get("type") == "cleanup" and run_start(dd.get("seq")) and dd.get("fresh_start") is True, ev)


async def test_order_batching_signature(t, d, args):
    RX.clear()
    sse = await SSE.open(d)
    await burst(d, 6, "ord")          # 24 events
    want_last = await last_seq(d)
    ok = await RX.wait_seq(want_last)
    t.check("webhook: every event arrives", ok, f"last={want_last}")
    stream = await sse.collect(0.5)
    sse.close()
    evs, dups = RX.events()
    t.eq("webhook: no duplicate without failures", dups, 0)
    t.check("webhook: events in order, none missing", contiguous(evs) is None, contiguous(evs))
    by_seq = {e["data"]["seq"]: e["data"] for e in stream if isinstance(e.get("data"), dict)}
    # The stream opened after the start: the fresh-start cleanup (seq 1) is
    # only in the webhook's deliveries.
    evs = [e for e in evs if e["seq"] > 1]
    same = all(by_seq.get(e["seq"]) == e for e in evs)
    t.check("webhook: each event is the exact JSON of the event stream",
            same and len(by_seq) >= len(evs), f"{len(by_seq)} vs {len(evs)}")
    reqs = RX.snapshot()
    t.check("webhook: every request is signed (v1 HMAC-SHA256 over ts.body)",
            all(verify(h, b) for h, b, _ in reqs), [h.get("presence-signature") for h, _, _ in reqs][:2])
    h, b, _ = reqs[0]
    t.check("webhook: a tampered body or another secret fails verification",
            not verify(h, b + b" ") and not verify(h, b, secret="other"))
    bodies = [json.loads(b) for _, b, _ in reqs]
    sizes = [len(x["events"]) for x in bodies]
    t.check("webhook: batches of at most --webhook-batch-max events, some with several",
            max(sizes) <= 5 and max(sizes) > 1, sizes)
    hdr_ok = all(h.get("presence-seq-first") == str(x["first_seq"])
                 and h.get("presence-seq-last") == str(x["last_seq"])
                 and x["events"][0]["seq"] >= x["first_seq"]
                 and x["events"][-1]["seq"] == x["last_seq"]
                 and h.get("content-type") == "application/json"
                 and h.get("presence-instance") == x["instance"]
                 and h.get("presence-attempt") == "1"
                 for (h, _, _), x in zip(reqs, bodies))
    t.check("webhook: headers match the body (first/last seq, instance, attempt)", hdr_ok,
            [(h.get("presence-seq-first"), h.get("presence-seq-last")) for h, _, _ in reqs][:5])
    r = await http(d, "GET", "/healthz", auth=False)
    t.eq("webhook: body instance is /healthz instance", bodies[0]["instance"], r.json()["instance"])


async def test_retry_after_500(t, d, args):
    RX.clear()
    with RX.lock:
        RX.statuses = [500, 503, 500]
    start = await last_seq(d)
    await burst(d, 1, "r500")
    end = await settle(d)
    ok = await RX.wait_seq(end)
    reqs = RX.snapshot()
    t.check("retry: delivered after three failures", ok and len(reqs) >= 4, len(reqs))
    firsts = [h.get("presence-seq-first") for h, _, _ in reqs[:4]]
    attempts = [h.get("presence-attempt") for h, _, _ in reqs[:4]]
    t.check("retry: the same batch is retried (same first seq), attempt counted",
            len(set(firsts)) == 1 and attempts == ["1", "2", "3", "4"], (firsts, attempts))
    gaps = [b - a for (_, _, a), (_, _, b) in zip(reqs, reqs[1:4])]
    t.check("retry: with a backoff between attempts", all(g >= 0.02 for g in gaps), gaps)
    evs, _ = RX.events()
    t.check("retry: nothing lost, in order", contiguous(evs, start + 1) is None, contiguous(evs, start + 1))
    m = await metrics(d)
    t.check("retry: retries and failures counted in /metrics",
            (metric(m, "presenced_webhook_retries_total", RX.url) or 0) >= 3
            and (metric(m, "presenced_webhook_failures_total", RX.url) or 0) >= 3,
            [l for l in m.splitlines() if "webhook" in l and not l.startswith("#")])


async def test_receiver_down_then_back(t, d, args):
    RX.clear()
    start = await last_seq(d)
    RX.stop()
    await burst(d, 5, "down")
    end = await settle(d)
    await asyncio.sleep(1.0)
    m = await metrics(d)
    lag = metric(m, "presenced_webhook_lag_events", RX.url)
    lag_s = metric(m, "presenced_webhook_lag_seconds", RX.url)
    t.check("down: lag in events and seconds while the receiver is down",
            lag is not None and lag >= end - start and lag_s is not None and lag_s >= 0.5,
            (lag, lag_s, end - start))
    RX.start()
    ok = await RX.wait_seq(end, timeout=6)
    evs, _ = RX.events()
    t.check("down: delivery resumes when the receiver is back", ok)
    t.check("down: in order and nothing lost", contiguous(evs, start + 1) is None,
            contiguous(evs, start + 1))
    c = await Client.connect(d, "down-after")
    p = await c.ping("x")
    await c.close()
    t.check("down: clients were served all along", p is not None)
    await asyncio.sleep(0.3)
    m = await metrics(d)
    t.eq("down: lag back to 0", metric(m, "presenced_webhook_lag_events", RX.url), 0.0)


test_receiver_down_then_back = timeout(40)(test_receiver_down_then_back)


async def test_4xx_dropped(t, d, args):
    RX.clear()
    with RX.lock:
        RX.statuses = [400]
    before = await metrics(d)
    await burst(d, 1, "bad")
    end = await last_seq(d)
    await burst(d, 1, "good")
    end2 = await last_seq(d)
    ok = await RX.wait_seq(end2)
    m = await metrics(d)
    dropped = (metric(m, "presenced_webhook_dropped_total", RX.url) or 0) - \
        (metric(before, "presenced_webhook_dropped_total", RX.url) or 0)
    reqs = RX.snapshot()
    t.check("400: the refused batch is dropped, not retried; later events delivered",
            ok and dropped >= 1 and all(h.get("presence-attempt") == "1" for h, _, _ in reqs),
            (ok, dropped, [h.get("presence-attempt") for h, _, _ in reqs]))
    t.check("400: stderr says which events were dropped",
            re.search(r"webhook .*HTTP 400: dropping events", d.stderr_text()) is not None)
    _ = end


async def test_redirect_not_followed(t, d, args):
    # A receiver that moved (an http:// URL now 301 to https://, a path that
    # gained a slash): the redirect is not followed, the batch is retried
    # (nothing is lost), and the log line says where it points: "HTTP 301"
    # alone left the operator to find the new address.
    RX.clear()
    with RX.lock:
        RX.statuses = [301, 301]
        RX.location = f"http://{HOST}:{RX.port}/hook/v2?token=sekrit"
    await burst(d, 1, "moved")
    end = await last_seq(d)
    ok = await RX.wait_seq(end)
    with RX.lock:
        RX.location = None
    reqs = RX.snapshot()
    paths_ok = all(h.get("presence-attempt") == str(i + 1) for i, (h, _, _) in enumerate(reqs[:3]))
    t.check("301: not followed, the same batch retried to url= (attempts 1, 2, 3), then delivered",
            ok and len(reqs) >= 3 and paths_ok, [h.get("presence-attempt") for h, _, _ in reqs])
    err = d.stderr_text()
    t.check("301: the log line names where it points, without its query",
            re.search(r"HTTP 301, a redirect to http://[0-9.:]+/hook/v2: not followed, set url= to it", err)
            is not None and "sekrit" not in err,
            [ln for ln in err.splitlines() if "301" in ln][-2:])


async def test_url_checked_at_start(t, d, args):
    # A URL libcurl cannot send to (no host, a port out of range) passed the
    # start and --check-config, then every delivery failed ("URL using
    # bad/illegal format") and was retried for good. Now refused with exit
    # code 2 naming the problem, the URL (its password) not quoted.
    base = [args.presenced, "--api-key", API_KEY, "--jwt-secret", JWT_SECRET]
    for url, why in ((f"http://{HOST}:99999/hook", "Port number"),
                     ("http://u:pw-sekrit@:8080/hook", "no host")):
        for mode in (["--check-config"], ["--listen", f"{HOST}:{free_port()}"]):
            try:
                p = subprocess.run(base + mode + ["--webhook", f"url={url},secret={SECRET}"],
                                   capture_output=True, text=True, timeout=10)
            except subprocess.TimeoutExpired:  # started and ran: not refused
                p = subprocess.CompletedProcess(mode, None, "", "still running after 10 s")
            t.check(f"{mode[0]} url={url.replace('pw-sekrit', '***')}: exit code 2, "
                    f"'--webhook: url: {why}...'",
                    p.returncode == 2 and f"--webhook: url: {why}" in p.stderr
                    and "sekrit" not in p.stderr, (p.returncode, p.stderr[-300:]))
    # A scheme is case-insensitive: HTTP:// delivers like http://.
    rx = Receiver("upper")
    up = Daemon(args.presenced, dict(TUNING, **{"--webhook": f"url=HTTP://{HOST}:{rx.port}/hook,secret={SECRET}"}),
                "upper")
    try:
        up.start()
        c = await Client.connect(up, "upper-scheme")
        end = await last_seq(up)
        t.check("url=HTTP://...: accepted, and the events are delivered", await rx.wait_seq(end))
        await c.close()
    finally:
        up.cleanup()
        rx.stop()


@timeout(60)
async def test_private_ca(t, d, args):
    """ca=PATH: an https receiver whose certificate a private CA signed (made
    here with openssl) is trusted through that CA, and only through it; a
    ca= file missing, unreadable, holding no certificate, or beside an
    http:// url is refused at the start with exit 2, as a secret-file is.
    There was no ca= key: such a receiver could not be trusted at all."""
    from test_redis_cluster import _make_certs
    tmp = tempfile.mkdtemp(prefix="presenced-webhook-ca-")
    other = os.path.join(tmp, "other")
    os.mkdir(other)
    rx = None
    ds = []
    try:
        _make_certs(tmp)
        _make_certs(other)  # a CA that did not sign the receiver's certificate
        ca = os.path.join(tmp, "ca.crt")
        rx = Receiver("tls", tls=(os.path.join(tmp, "server.crt"), os.path.join(tmp, "server.key")))

        def daemon(name, extra):
            x = Daemon(args.presenced, dict(TUNING, **{"--webhook": rx.spec(name=name, **extra)}), name)
            ds.append(x)
            x.start()
            return x

        good = daemon("private-ca", {"ca": ca})
        c = await Client.connect(good, "ca-user")
        end = await last_seq(good)
        t.check("ca=: events reach the https receiver signed by the private CA",
                await rx.wait_seq(end, 10), good.stderr_tail(5))
        got = rx.snapshot()
        t.check("ca=: ... signed (v1 HMAC) as over http",
                got and all(verify(h, raw) for h, raw, _t in got), len(got))
        await c.close()
        good.cleanup()
        for name, extra, why in (("system-ca", {}, "without ca= (the system's CAs)"),
                                 ("other-ca", {"ca": os.path.join(other, "ca.crt")},
                                  "with ca= another CA")):
            rx.clear()
            x = daemon(name, extra)
            c = await Client.connect(x, f"{name}-user")
            await asyncio.sleep(1.0)
            failures = metric(await metrics(x), "presenced_webhook_failures_total", name)
            t.check(f"{why}: the receiver is not trusted: nothing delivered, failures "
                    f"counted, the log names the certificate",
                    not rx.ok_bodies() and (failures or 0) >= 1
                    and "certificate" in x.stderr_text().lower(),
                    (len(rx.ok_bodies()), failures, x.stderr_tail(3)))
            await c.close()
            x.cleanup()
        # ca= alone: the system's directory of CAs (libcurl's CAPATH, Debian's
        # /etc/ssl/certs) is not consulted either. Here a directory holding
        # the receiver's CA is mounted over /etc/ssl/certs in a mount
        # namespace of presenced's own: the receiver is trusted without ca=
        # (the check can fail), and not with ca= naming another CA.
        sysdir = os.path.join(tmp, "sys")
        pinned = os.path.join(tmp, "pinned")
        os.mkdir(sysdir)
        os.mkdir(pinned)
        h = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", ca],
                           capture_output=True, text=True, check=True).stdout.strip()
        shutil.copy(ca, os.path.join(sysdir, f"{h}.0"))
        shutil.copy(ca, os.path.join(sysdir, "ca-certificates.crt"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=pinned-ca", "-keyout", "ca.key", "-out", "ca.crt"],
                       cwd=pinned, check=True, capture_output=True)
        mount_ok = subprocess.run(["unshare", "-m", "sh", "-c",
                                   f"mount --bind {sysdir} /etc/ssl/certs && test -f "
                                   f"/etc/ssl/certs/{h}.0"], capture_output=True).returncode == 0

        class SysCA(Daemon):
            def argv(self):
                return ["unshare", "-m", "sh", "-c",
                        f'mount --bind {sysdir} /etc/ssl/certs && exec "$@"', "sh"] + super().argv()

        if not mount_ok:
            t.note("SKIP ca= alone: no mount namespace here (unshare -m)")
        for name, extra, want in (() if not mount_ok else
                                  (("sys-dir", {}, True),
                                   ("sys-dir-pinned", {"ca": os.path.join(pinned, "ca.crt")}, False))):
            rx.clear()
            x = SysCA(args.presenced, dict(TUNING, **{"--webhook": rx.spec(name=name, **extra)}), name)
            ds.append(x)
            x.start()
            c = await Client.connect(x, f"{name}-user")
            end = await last_seq(x)
            if want:
                t.check("the receiver's CA in the system's directory (no ca=): trusted",
                        await rx.wait_seq(end, 10), x.stderr_tail(3))
            else:
                await asyncio.sleep(1.0)
                failures = metric(await metrics(x), "presenced_webhook_failures_total", name)
                t.check("ca= another CA, the receiver's CA in the system's directory: not "
                        "trusted (ca= alone, not beside the system's CAs)",
                        not rx.ok_bodies() and (failures or 0) >= 1,
                        (len(rx.ok_bodies()), failures, x.stderr_tail(3)))
            await c.close()
            x.cleanup()
        notpem = os.path.join(tmp, "not-a-cert.pem")
        with open(notpem, "w") as f:
            f.write("not a certificate\n")
        unreadable = os.path.join(tmp, "unreadable.crt")
        shutil.copy(ca, unreadable)
        os.chmod(unreadable, 0)
        cases = [(f"url={rx.url},secret={SECRET},ca={tmp}/missing.crt",
                  f"webhook: cannot read ca {tmp}/missing.crt: No such file or directory"),
                 (f"url={rx.url},secret={SECRET},ca={notpem}",
                  f"webhook: ca {notpem}: no PEM certificate in it"),
                 (f"url=http://{HOST}:{rx.port}/hook,secret={SECRET},ca={ca}",
                  "webhook: ca= is for an https:// url")]
        if os.geteuid() != 0:  # root reads a file of mode 000
            cases.append((f"url={rx.url},secret={SECRET},ca={unreadable}",
                          f"webhook: cannot read ca {unreadable}: Permission denied"))
        base = [args.presenced, "--api-key", API_KEY, "--jwt-secret", JWT_SECRET]
        for spec, want in cases:
            for mode in (["--check-config"], ["--listen", f"{HOST}:{free_port()}"]):
                try:
                    p = subprocess.run(base + mode + ["--webhook", spec],
                                       capture_output=True, text=True, timeout=10)
                except subprocess.TimeoutExpired:  # started and ran: not refused
                    p = subprocess.CompletedProcess(mode, None, "", "still running after 10 s")
                t.check(f"{mode[0]}: exit code 2, '{want}'",
                        p.returncode == 2 and want in p.stderr, (p.returncode, p.stderr[-300:]))
    finally:
        for x in ds:
            x.cleanup()
        if rx:
            rx.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def test_slow_receiver_does_not_slow_clients(t, d, args):
    RX.clear()
    with RX.lock:
        RX.stall = 2.0
    watcher = await Client.connect(d, "rtt-watcher", watch="*")
    await burst(d, 3, "slow")
    await asyncio.sleep(0.2)
    rtts = []
    for i in range(20):
        t0 = time.monotonic()
        p = await watcher.ping(f"p{i}")
        rtts.append(time.monotonic() - t0 if p else 9.9)
        await asyncio.sleep(0.05)
    stalled = len(RX.snapshot())
    with RX.lock:
        RX.stall = 0.0
    await watcher.close()
    t.check("slow receiver: a request is held by the receiver meanwhile", stalled >= 1, stalled)
    t.check("slow receiver: WebSocket round trips stay fast (max < 150 ms)",
            max(rtts) < 0.15, f"max={max(rtts):.3f}s")
    end = await last_seq(d)
    t.check("slow receiver: everything delivered afterwards", await RX.wait_seq(end, 10))


test_slow_receiver_does_not_slow_clients = timeout(40)(test_slow_receiver_does_not_slow_clients)


async def test_metrics_delivered(t, d, args):
    await asyncio.sleep(0.3)
    m = await metrics(d)
    evs, _ = RX.events()
    names = ["presenced_webhook_delivered_total", "presenced_webhook_retries_total",
             "presenced_webhook_failures_total", "presenced_webhook_lag_events",
             "presenced_webhook_lag_seconds", "presenced_webhook_behind",
             "presenced_webhook_gaps_total"]
    missing = [n for n in names if metric(m, n, RX.url) is None]
    t.check("metrics: every webhook family with the endpoint label", not missing, missing)
    t.check("metrics: delivered_total counts events",
            (metric(m, "presenced_webhook_delivered_total", RX.url) or 0) >= len(evs))
    t.eq("metrics: not behind", metric(m, "presenced_webhook_behind", RX.url), 0.0)


# --------------------------------------------------------------------------
# Group: two endpoints, filters, one of them failing

RX_USERS = Receiver("users")
RX_FAIL = Receiver("fail")
RX_UWILD = Receiver("user-wildcard")


async def test_filters_and_isolation(t, d, args):
    with RX_FAIL.lock:
        RX_FAIL.always = 500
    await burst(d, 3, "flt")
    end = await last_seq(d)
    await asyncio.sleep(1.0)
    evs, _ = RX_USERS.events()
    types = {e["type"] for e in evs}
    t.check("filter: only user.online/user.offline delivered", types == {"user.online", "user.offline"}, types)
    t.eq("filter: one online and one offline per user", len(evs), 6)
    reqs = RX_USERS.snapshot()
    t.check("filter: last_seq header covers the skipped session events too",
            max(int(h["presence-seq-last"]) for h, _, _ in reqs) == end,
            [h.get("presence-seq-last") for h, _, _ in reqs])
    t.check("isolation: the failing endpoint is being retried", len(RX_FAIL.snapshot()) >= 3,
            len(RX_FAIL.snapshot()))
    m = await metrics(d)
    t.check("isolation: failing endpoint has its own label and lag",
            (metric(m, "presenced_webhook_lag_events", "failing") or 0) >= 12
            and metric(m, "presenced_webhook_lag_events", RX_USERS.url) == 0, m[-1500:])
    with RX_FAIL.lock:
        RX_FAIL.always = None
    t.check("isolation: the failing endpoint catches up when it recovers",
            await RX_FAIL.wait_seq(end, 6))


async def test_wildcard_events(t, d, args):
    """events=user.* is every user.* type, as ?types=user.* on the event
    stream: user.availability and user.message too, no session event."""
    c = await Client.connect(d, "wild")
    r1 = await http(d, "PUT", "/v1/users/wild/availability", body=json.dumps({"availability": "dnd"}))
    r2 = await http(d, "PUT", "/v1/users/wild/message", body=json.dumps({"text": "Lunch"}))
    t.check("wildcard: availability and message set", r1.status == 200 and r2.status == 200,
            (r1, r2))
    await c.close()
    end = await last_seq(d)
    await RX_UWILD.wait_seq(end, 6)
    types = [e["type"] for e in RX_UWILD.events()[0] if e.get("user_id") == "wild"]
    t.eq("wildcard: events=user.* delivers every user event, availability and message included",
         types, ["user.online", "user.availability", "user.message", "user.offline"])


# --------------------------------------------------------------------------
# Group: backlog limit (small log)

RX_BL = Receiver("backlog")


async def test_backlog_gap(t, d, args):
    await burst(d, 1, "pre")
    first_end = await settle(d)
    await RX_BL.wait_seq(first_end)
    RX_BL.stop()
    await burst(d, 12, "bl")            # 48 events, the log keeps 16
    end = await settle(d)
    await asyncio.sleep(0.3)
    m = await metrics(d)
    t.eq("backlog: the endpoint is marked behind in /metrics",
         metric(m, "presenced_webhook_behind", RX_BL.url), 1.0)
    t.check("backlog: one log line says it fell behind",
            d.stderr_text().count("fell behind the transition log") == 1, d.stderr_tail(8))
    RX_BL.clear()
    RX_BL.start()
    ok = await RX_BL.wait_seq(end, 8)
    bodies = [b for _, b in RX_BL.ok_bodies()]
    gaps = [b["gap"] for b in bodies if "gap" in b]
    t.check("backlog: delivery resumes", ok)
    t.check("backlog: exactly one gap notice {after, oldest, missed}",
            len(gaps) == 1 and gaps[0]["after"] >= first_end
            and gaps[0]["oldest"] == gaps[0]["after"] + gaps[0]["missed"] + 1
            and gaps[0]["oldest"] > gaps[0]["after"] + 1, gaps)
    if gaps:
        after_gap = [e for b in bodies for e in b["events"] if e["seq"] >= gaps[0]["oldest"]]
        t.check("backlog: events from the oldest kept one on, in order",
                contiguous(after_gap, gaps[0]["oldest"]) is None and after_gap[-1]["seq"] == end,
                contiguous(after_gap, gaps[0]["oldest"]))
        t.check("backlog: the events kept before the gap notice were the batch in hand",
                all(e["seq"] <= gaps[0]["after"] for b in bodies if "gap" not in b
                    and bodies.index(b) < len(bodies) for e in b["events"]
                    if e["seq"] < gaps[0]["oldest"]))
    await asyncio.sleep(0.2)
    m = await metrics(d)
    t.check("backlog: not behind any more, gap and lost events counted",
            metric(m, "presenced_webhook_behind", RX_BL.url) == 0.0
            and metric(m, "presenced_webhook_gaps_total", RX_BL.url) == 1.0
            and (metric(m, "presenced_webhook_lost_events_total", RX_BL.url) or 0) > 0,
            [l for l in m.splitlines() if "webhook" in l and not l.startswith("#")])


test_backlog_gap = timeout(40)(test_backlog_gap)


# --------------------------------------------------------------------------
# Group: restart (the test stops and restarts the daemon itself)

RX_RS = Receiver("restart")


async def test_restart(t, d, args):
    clients = [await Client.connect(d, f"rs{i}") for i in range(3)]
    await asyncio.sleep(0.1)
    inst1 = (await http(d, "GET", "/healthz", auth=False)).json()["instance"]
    code = d.stop(timeout=8)
    t.eq("restart: SIGTERM exits 0 after flushing webhooks", code, 0)
    for c in clients:
        await c.close()
    evs, dups = RX_RS.events()
    mine = [e for e in evs if True]
    shut = [e for e in mine if e.get("reason") == "shutdown"]
    t.check("restart: the shutdown's own events were delivered before exit",
            len([e for e in shut if e["type"] == "user.offline"]) == 3, [e["type"] for e in shut])
    t.check("restart: first run delivered in order from its first number, nothing missing",
            mine and run_start(mine[0]["seq"]) and contiguous(mine) is None, contiguous(mine))
    cursor1 = mine[-1]["seq"] if mine else 0
    n1 = len(mine)
    d2 = Daemon(args.presenced, d.flags, "restart-2")
    d2.start()
    try:
        c = await Client.connect(d2, "rs-after")
        await c.close()
        end = await last_seq(d2)
        inst2 = (await http(d2, "GET", "/healthz", auth=False)).json()["instance"]
        deadline = time.monotonic() + 8
        while True:
            bodies = [b for _, b in RX_RS.ok_bodies()]
            second = [e for b in bodies if b["instance"] == inst2 for e in b["events"]]
            ok = second and second[-1]["seq"] >= end
            if ok or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        t.check("restart: a new instance id, sequence numbers start above the first run's",
                ok and inst2 != inst1 and second and run_start(second[0]["seq"])
                and second[0]["seq"] > cursor1, (inst1, inst2, cursor1, second[:1]))
        t.check("restart: the new run's first delivery is its fresh-start cleanup "
                "(the previous run's users are gone)",
                second and second[0]["type"] == "cleanup" and second[0].get("fresh_start") is True,
                second[:1])
        # A reader of the event stream resumes with its cursor of the first
        # run once the second has logged more events than the first: it is
        # told of a gap and gets the second run's log whole, fresh-start
        # cleanup first. (Numbered from 1 in each run, the cursor fell
        # inside the second run's log and the stream went on silently from
        # there: the cleanup and every event before were lost to it.)
        i = 0
        while second and await last_seq(d2) - second[0]["seq"] < n1 + 2:
            await burst(d2, 1, f"rs-more{i}-")
            i += 1
        sse = await SSE.open(d2, last_event_id=cursor1)
        got = [await sse.next(3), await sse.next(3)]
        sse.close()
        t.check("restart: a stream resumed with the first run's cursor: a gap, then the second "
                "run's fresh-start cleanup",
                got[0] and got[0]["event"] == "gap" and got[1] and got[1]["event"] == "cleanup"
                and got[1]["data"].get("fresh_start") is True, got)
        evs, dups = RX_RS.events()
        t.eq("restart: no (instance, seq) delivered twice", dups, 0)
        t.check("restart: no sanitizer report", not sanitizer_report(d2.stderr_text()),
                sanitizer_report(d2.stderr_text()))
        t.eq("restart: second daemon exits 0", d2.stop(timeout=8), 0)
    finally:
        d2.kill()
        d2.cleanup()


test_restart = timeout(40)(test_restart)


async def test_shutdown_with_receiver_down(t, d, args):
    RX_RS.stop()
    c = await Client.connect(d, "sd")
    _ = c
    t0 = time.monotonic()
    code = d.stop(timeout=8)
    took = time.monotonic() - t0
    t.check("shutdown: a down receiver does not hold the exit past the limit",
            code == 0 and took < 3.5, (code, took))
    t.check("shutdown: the undelivered events are logged",
            "undelivered" in d.stderr_text(), d.stderr_tail(5))
    RX_RS.start()


# --------------------------------------------------------------------------
# Group: examples/webhook_receiver.py keeps its SQLite table

EX_PORT = free_port()
EX_DIR = tempfile.mkdtemp(prefix="wh-example-")
atexit.register(shutil.rmtree, EX_DIR, ignore_errors=True)
EX_DB = os.path.join(EX_DIR, "app.db")


async def test_example_receiver(t, d, args):
    proc = d.example
    a = await Client.connect(d, "alice")
    b = await Client.connect(d, "bob")
    await a.send({"type": "status", "status": "idle"})
    await asyncio.sleep(0.1)
    await b.close()
    end = await last_seq(d)
    deadline = time.monotonic() + 8
    rows = {}
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(EX_DB) as db:
                rows = {r[0]: r for r in db.execute(
                    "SELECT id, status, last_online, version FROM users")}
                seq = db.execute("SELECT max(last_seq) FROM streams").fetchone()[0] or 0
            if seq >= end - 1 and "bob" in rows and rows["bob"][1] is None:
                break
        except sqlite3.Error:
            pass
        await asyncio.sleep(0.1)
    t.check("example: alice is idle with a last_online", rows.get("alice", (0, None, None))[1] == "idle"
            and rows["alice"][2], rows)
    t.check("example: bob went offline (status unset), last_online kept",
            "bob" in rows and rows["bob"][1] is None and rows["bob"][2], rows)
    # a replayed delivery (at-least-once) changes nothing
    with sqlite3.connect(EX_DB) as db:
        before = list(db.execute("SELECT * FROM users ORDER BY id"))
    body = json.dumps({"instance": "x", "first_seq": 1, "last_seq": 1, "events": [
        {"seq": 1, "type": "user.online", "ts": now_ms(), "reason": "connect",
         "user_id": "bob", "from": "offline", "to": "online", "version": 1}]}).encode()
    ts = str(now_ms())
    sig = "v1=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    st, _, _ = http_sync(EX_PORT, "POST", "/hook", {"Presence-Timestamp": ts, "Presence-Signature": sig,
                                                    "Content-Type": "application/json"}, body)
    st2, _, _ = http_sync(EX_PORT, "POST", "/hook", {"Presence-Timestamp": ts, "Presence-Signature": sig,
                                                     "Content-Type": "application/json"}, body)
    st3, _, _ = http_sync(EX_PORT, "POST", "/hook", {"Presence-Timestamp": ts,
                                                     "Presence-Signature": "v1=" + "0" * 64}, body)
    with sqlite3.connect(EX_DB) as db:
        after = list(db.execute("SELECT status FROM users WHERE id='bob'"))
    t.check("example: a bad signature is refused with 401", st3 == 401, st3)
    t.check("example: a new (instance, seq) applies, its replay is a no-op",
            st == 200 and st2 == 200 and after == [("online",)], (st, st2, after, before))
    await a.close()
    t.check("example: the receiver process is still running", proc.poll() is None)


def start_example(source_dir):
    return subprocess.Popen([sys.executable, os.path.join(source_dir, "examples", "webhook_receiver.py"),
                             "--port", str(EX_PORT), "--db", EX_DB, "--secret", SECRET],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def example_wrapper(t, d, args):
    proc = start_example(args.source_dir)
    try:
        for _ in range(100):
            try:
                socket.create_connection((HOST, EX_PORT), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        d.example = proc
        await test_example_receiver(t, d, args)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


example_wrapper.__name__ = "test_example_receiver"


if __name__ == "__main__":
    ex_spec = f"url=http://{HOST}:{EX_PORT}/hook,secret={SECRET},events=user.*|cleanup"
    run([
        ("webhook", dict(TUNING, **{"--webhook": RX.spec()}),
         [test_fresh_start_cleanup, test_order_batching_signature, test_retry_after_500, test_receiver_down_then_back,
          test_4xx_dropped, test_redirect_not_followed, test_url_checked_at_start,
          test_private_ca,
          test_slow_receiver_does_not_slow_clients,
          test_metrics_delivered]),
        ("webhook-filters", dict(TUNING, **{
            "--webhook": RX_USERS.spec(events="user.online|user.offline"),
            "--webhook=" + RX_FAIL.spec(name="failing"): "",
            "--webhook=" + RX_UWILD.spec(events="user.*", name="user-wildcard"): ""}),
         [test_filters_and_isolation, test_wildcard_events]),
        ("webhook-backlog", dict(TUNING, **{"--webhook": RX_BL.spec(), "--log-capacity": "16"}),
         [test_backlog_gap]),
        ("webhook-restart", dict(TUNING, **{"--webhook": RX_RS.spec()}),
         [test_restart], {"stopped_by_test": True}),
        ("webhook-shutdown", dict(TUNING, **{"--webhook": RX_RS.spec()}),
         [test_shutdown_with_receiver_down], {"stopped_by_test": True}),
        ("webhook-example", dict(TUNING, **{"--webhook": ex_spec, "--webhook-batch-max": "3"}),
         [example_wrapper]),
    ])
