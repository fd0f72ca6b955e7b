# SPDX-License-Identifier: MIT
"""
Integration test harness for presenced.

Starts the real daemon on a free loopback port, talks to it with real clients
(the `websockets` asyncio package for well-behaved WebSocket clients, raw
sockets for everything a client library would refuse to send), and reports one
line per check plus a final "N passed, M failed" line.

Only the standard library and Debian's python3-websockets (10.4) are used; run
with /usr/bin/python3. Every test file is invoked by CTest as

    /usr/bin/python3 tests/integration/test_X.py --presenced PATH --source-dir DIR

and exits 0 when every check passed.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import http.server as httpserver
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

try:
    import websockets
    import websockets.exceptions
except ImportError:   # report it the way every test reports, then fail
    print("FAIL - the websockets package is importable (apt-get install python3-websockets; "
          "run with /usr/bin/python3)")
    print("0 passed, 1 failed")
    sys.exit(1)

API_KEY = "test-api-key-0123456789-abcdefghijkl"
JWT_SECRET = "test-jwt-secret-abcdefghijklmnop"
JWT_AUDIENCE = "presence-tests"
HOST = "127.0.0.1"

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Flags every daemon gets unless a test overrides them. Offline grace 0 so
# that user.offline follows the last disconnect immediately.
BASE_FLAGS = {
    "--api-key": API_KEY,
    "--jwt-secret": JWT_SECRET,
    "--jwt-audience": JWT_AUDIENCE,
    "--offline-grace-ms": "0",
}


def now_ms():
    return int(time.time() * 1000)


# --------------------------------------------------------------------------
# Checks and reporting


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
            print(f"ok   - {name}", flush=True)
        else:
            self.failed += 1
            self.failures.append(name)
            msg = f"FAIL - {name}"
            if detail != "":
                d = str(detail)
                if len(d) > 600:
                    d = d[:600] + "..."
                msg += f"  [{d}]"
            print(msg, flush=True)
        return bool(cond)

    def eq(self, name, got, want):
        return self.check(name, got == want, f"got {got!r}, want {want!r}")

    def note(self, text):
        print(f"#    {text}", flush=True)


# --------------------------------------------------------------------------
# JWT (HS256, signed here with hmac/hashlib)


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims, secret=JWT_SECRET, header=None, sign="hs256"):
    """claims: dict or raw JSON str. header: dict or raw JSON str.
    sign: "hs256" (with secret), "none" (empty signature), or a literal
    signature string."""
    if header is None:
        header = {"alg": "HS256", "typ": "JWT"}
    h = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    c = claims if isinstance(claims, str) else json.dumps(claims, separators=(",", ":"))
    signing_input = b64url(h) + "." + b64url(c)
    if sign == "hs256":
        key = secret.encode() if isinstance(secret, str) else secret
        sig = b64url(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())
    elif sign == "none":
        sig = ""
    else:
        sig = sign
    return signing_input + "." + sig


def token(sub, exp_in=3600, watch=None, meta=None, aud=JWT_AUDIENCE, nbf=None, extra=None,
          secret=JWT_SECRET, header=None):
    """aud: the daemons' --jwt-audience by default (required when one is
    configured); None leaves it out."""
    claims = {"sub": sub, "exp": int(time.time()) + exp_in}
    if watch is not None:
        claims["watch"] = watch
    if meta is not None:
        claims["meta"] = meta
    if aud is not None:
        claims["aud"] = aud
    if nbf is not None:
        claims["nbf"] = nbf
    if extra:
        claims.update(extra)
    return make_jwt(claims, secret=secret, header=header)


# --------------------------------------------------------------------------
# The daemon


def _die_with_parent():
    """In the child: SIGKILL it if the test script dies (e.g. killed by a CTest
    timeout), so that no daemon outlives its test."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:
        pass


# Where free_port() picks: below Linux's ephemeral range (32768-60999), which
# is where the kernel takes the local port of every outgoing connection. A
# port bound to 0 and closed again comes from that range, so a connection
# made before the daemon binds it (another test's, a redis-server's PING)
# could take it in between; a port below the range only another listener can
# take. 20000-22767 and 30000-32767 are the Redis Cluster tests' (nodes and
# their bus ports, test_redis_rcluster.py, tests/redis/test_rcluster.c);
# 12000-19999 the SDKs' and the browser suite's (their test libraries).
FREE_PORTS = (23000, 30000)


def free_port():
    """A loopback TCP port nothing listens on, for a server a test starts."""
    rnd = random.SystemRandom()
    for _ in range(200):
        port = rnd.randrange(*FREE_PORTS)
        s = socket.socket()
        try:
            s.bind((HOST, port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("free_port: no free port in %d-%d" % FREE_PORTS)


def _socket_inodes(pid):
    """Inodes of the sockets pid and its descendants hold (Linux /proc)."""
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    link = os.readlink(f"/proc/{p}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    out.add(link[8:-1])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def listens_on(pid, port):
    """Whether pid (or a child of it) has a TCP socket listening on port."""
    inodes = _socket_inodes(pid)
    want = ":%04X" % port
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    col = line.split()
                    # local address, state 0A (LISTEN), inode
                    if col[1].endswith(want) and col[3] == "0A" and col[9] in inodes:
                        return True
        except OSError:
            continue
    return False


class HookReceiver:
    """A webhook endpoint on 127.0.0.1 for the webhook suites: records every
    POST (arrival time, the status it answered, headers, body) and answers
    `status` after `delay` seconds (both settable while it runs)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.recs = []
        self.status = 200
        self.delay = 0.0
        rx = self

        class H(httpserver.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                with rx.lock:
                    status, delay = rx.status, rx.delay
                    rx.recs.append({"t": time.monotonic(), "status": status, "h": hdrs,
                                    "b": json.loads(raw), "raw": raw})
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class S(httpserver.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a killed or fenced sender cuts its connection

        self.port = free_port()
        self.server = S((HOST, self.port), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self):
        return f"http://{HOST}:{self.port}/hook"

    def records(self, since=0.0):
        with self.lock:
            return [r for r in self.recs if r["t"] >= since]

    def batches(self):
        """(headers, parsed body, raw body) of every POST, in order."""
        return [(r["h"], r["b"], r["raw"]) for r in self.records()]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Daemon:
    def __init__(self, binary, flags=None, name="presenced", env=None, listen_flag=True):
        self.binary = binary
        self.flags = dict(BASE_FLAGS)
        if flags:
            for k, v in flags.items():
                if v is None:
                    self.flags.pop(k, None)
                else:
                    self.flags[k] = str(v)
        self.name = name
        self.extra_env = env or {}
        self.listen_flag = listen_flag
        self.proc = None
        self.port = None
        self.errfile = None
        self.exit_code = None
        self.stop_seconds = None

    def argv(self):
        a = [self.binary]
        if self.listen_flag:
            a += ["--listen", f"{HOST}:{self.port}"]
        for k, v in self.flags.items():
            if v == "":
                a.append(k)
            else:
                a += [k, v]
        return a

    def start(self, timeout=10.0):
        last = ""
        for _attempt in range(3):
            self.port = free_port()
            self.errfile = tempfile.NamedTemporaryFile(prefix="presenced-err-", delete=False)
            env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCED_")}
            env.update({k: v.replace("{PORT}", str(self.port)) for k, v in self.extra_env.items()})
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=self.errfile, stderr=self.errfile, env=env,
                                         preexec_fn=_die_with_parent)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    st, _h, _b = http_sync(self.port, "GET", "/healthz", timeout=1.0)
                    # The answer must be this daemon's: a port another
                    # suite's server took between free_port() and the bind
                    # answers /healthz too while this one fails to bind.
                    if st == 200 and listens_on(self.proc.pid, self.port):
                        return True
                except OSError:
                    pass
                time.sleep(0.05)
            last = self.stderr_tail()
            self.kill()
            if self.proc.returncode is not None and "address" not in last.lower():
                break
        raise RuntimeError(f"presenced did not come up ({' '.join(self.argv())}): {last}")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self):
        if not self.errfile:
            return ""
        try:
            with open(self.errfile.name, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_tail(self, n=30):
        return "\n".join(self.stderr_text().splitlines()[-n:])

    def rss_kb(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def stop(self, timeout=5.0, sig=None):
        """SIGTERM (or sig), then SIGKILL after timeout. Returns the exit code.
        (sig's default is set inside: the class's signal method hides the
        module here.)"""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            t0 = time.monotonic()
            try:
                os.kill(self.proc.pid, sig or signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
            self.stop_seconds = time.monotonic() - t0
        self.exit_code = self.proc.returncode
        return self.exit_code

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def cleanup(self):
        self.kill()
        if self.errfile:
            try:
                os.unlink(self.errfile.name)
            except OSError:
                pass

    def ws_url(self, tok=None, path="/v1/ws"):
        if tok is None:
            return f"ws://{HOST}:{self.port}{path}"
        return f"ws://{HOST}:{self.port}{path}?token={tok}"


# --------------------------------------------------------------------------
# HTTP


def _parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    # The reason phrase under a name no header can have (names hold no ':').
    headers = {":reason": parts[2] if len(parts) > 2 else ""}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            k = k.strip().lower()
            v = v.strip()
            headers[k] = headers[k] + ", " + v if k in headers else v
    return status, headers


def _dechunk(body):
    out = b""
    while True:
        i = body.find(b"\r\n")
        if i < 0:
            return out, False
        size = int(body[:i].split(b";")[0], 16)
        if size == 0:
            return out, True
        if len(body) < i + 2 + size + 2:
            return out, False
        out += body[i + 2:i + 2 + size]
        body = body[i + 2 + size + 2:]


def http_sync(port, method, path, headers=None, body=None, timeout=5.0):
    """A blocking HTTP/1.1 request with Connection: close."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        req = build_request(method, path, headers, body)
        s.sendall(req)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            r = _try_complete(data)
            if r is not None:
                return r
        r = _try_complete(data, eof=True)
        if r is None:
            raise OSError("incomplete HTTP response")
        return r
    finally:
        s.close()


def build_request(method, path, headers=None, body=None):
    h = {"Host": f"{HOST}", "Connection": "close"}
    if body is not None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        elif isinstance(body, str):
            body = body.encode()
        h["Content-Length"] = str(len(body))
    if headers:
        for k, v in headers.items():
            if v is None:
                h.pop(k, None)
            else:
                h[k] = v
    req = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    return req.encode("latin-1") + (body or b"")


def _try_complete(data, eof=False):
    i = data.find(b"\r\n\r\n")
    if i < 0:
        return None
    status, headers = _parse_head(data[:i])
    body = data[i + 4:]
    if status in (101, 204, 304) or 100 <= status < 200:
        return status, headers, b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out, done = _dechunk(body)
        if done or eof:
            return status, headers, out
        return None
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(body) >= n:
            return status, headers, body[:n]
        return (status, headers, body) if eof else None
    return (status, headers, body) if eof else None


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def reason(self):
        return self.headers.get(":reason")

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except Exception:
            return None

    @property
    def error_code(self):
        j = self.json()
        try:
            return j["error"]["code"]
        except Exception:
            return None

    def __repr__(self):
        return f"<HTTP {self.status} {self.body[:300]!r}>"


async def http_raw(port, raw, timeout=5.0, rcv_eof_ok=True):
    """Send raw bytes, read one response. Returns Response or raises."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        writer.write(raw)
        try:
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        data = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError(f"HTTP response incomplete: {data[:200]!r}")
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except asyncio.TimeoutError:
                raise asyncio.TimeoutError(f"HTTP response incomplete: {data[:200]!r}")
            except (ConnectionError, OSError):
                chunk = b""
            if not chunk:
                r = _try_complete(data, eof=True)
                if r is None:
                    raise ConnectionError(f"connection closed without a response: {data[:200]!r}")
                return Response(*r)
            data += chunk
            r = _try_complete(data)
            if r is not None:
                return Response(*r)
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1)
        except Exception:
            pass


async def http(d, method, path, headers=None, body=None, auth=True, timeout=5.0):
    h = {}
    if auth is True:
        h["Authorization"] = f"Bearer {API_KEY}"
    elif isinstance(auth, str):
        h["Authorization"] = auth
    if headers:
        h.update(headers)
    return await http_raw(d.port, build_request(method, path, h, body), timeout)


# --------------------------------------------------------------------------
# WebSocket: a well-behaved client (websockets library)


class Client:
    """A real WebSocket client (websockets 10.4) with JSON helpers."""

    def __init__(self, ws, welcome, user):
        self.ws = ws
        self.welcome = welcome
        self.user = user
        self.session_id = (welcome or {}).get("session_id")
        self.backlog = []

    @classmethod
    async def connect(cls, d, user, watch=None, meta=None, tok=None, wait_welcome=True, **kw):
        if tok is None:
            tok = token(user, watch=watch, meta=meta)
        ws = await asyncio.wait_for(
            websockets.connect(d.ws_url(tok), ping_interval=None, close_timeout=2,
                               max_size=2 ** 24, open_timeout=5, **kw), 6)
        welcome = None
        if wait_welcome:
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
        return cls(ws, welcome, user)

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    async def recv(self, timeout=3.0):
        """Next JSON message (raises asyncio.TimeoutError / ConnectionClosed)."""
        if self.backlog:
            return self.backlog.pop(0)
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def expect(self, pred, timeout=3.0, what="message"):
        """Read until pred(msg) holds; returns (msg, skipped). Timeout -> (None, skipped)."""
        skipped = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.backlog = skipped + self.backlog
                return None, skipped
            try:
                m = await self.recv(left)
            except asyncio.TimeoutError:
                self.backlog = skipped + self.backlog
                return None, skipped
            if pred(m):
                self.backlog = skipped + self.backlog
                return m, skipped
            skipped.append(m)

    async def expect_type(self, typ, timeout=3.0, **match):
        def pred(m):
            if m.get("type") != typ:
                return False
            return all(m.get(k) == v for k, v in match.items())
        m, _ = await self.expect(pred, timeout)
        return m

    async def collect(self, duration):
        """Every message received within duration seconds."""
        out = list(self.backlog)
        self.backlog = []
        deadline = time.monotonic() + duration
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                out.append(json.loads(await asyncio.wait_for(self.ws.recv(), left)))
            except asyncio.TimeoutError:
                return out
            except websockets.exceptions.ConnectionClosed:
                return out

    async def changes(self, duration, user=None):
        """Presence changes (snapshot false) received within duration."""
        msgs = await self.collect(duration)
        out = []
        for m in msgs:
            if m.get("type") == "presence" and m.get("snapshot") is False:
                for u in m.get("users", []):
                    if user is None or u.get("user_id") == user:
                        out.append(m)
                        break
        return out

    async def change(self, user, timeout=3.0):
        """The next presence change for user (others are kept in the backlog)."""
        def pred(m):
            return (m.get("type") == "presence" and m.get("snapshot") is False
                    and any(u.get("user_id") == user for u in m.get("users", [])))
        m, _ = await self.expect(pred, timeout)
        if m is None:
            return None
        return m

    async def ping(self, ident="p", timeout=3.0):
        await self.send({"type": "ping", "id": ident})
        return await self.expect_type("pong", timeout, id=ident)

    async def wait_closed(self, timeout=5.0):
        """Wait until the server closes; return its close code (None on timeout)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                m = await asyncio.wait_for(self.ws.recv(), max(0.01, deadline - time.monotonic()))
                self.backlog.append(json.loads(m) if isinstance(m, str) else m)
        except websockets.exceptions.ConnectionClosed as e:
            return e.code
        except asyncio.TimeoutError:
            return None
        return None

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 3)
        except Exception:
            pass


# --------------------------------------------------------------------------
# WebSocket: raw client (any bytes, any frame)


def ws_frame(op, payload=b"", fin=True, rsv=0, mask=True, length=None, mask_key=None):
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (op & 0xF)
    n = len(payload) if length is None else length
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if mask:
        key = mask_key if mask_key is not None else os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    return head + payload


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


class RawWS:
    """A hand-made WebSocket client over asyncio streams."""

    def __init__(self):
        self.reader = None
        self.writer = None
        self.status = None
        self.headers = {}
        self.body = b""
        self.pings = 0
        self.buf = b""
        self.frames_log = []

    @classmethod
    async def open(cls, d, tok=None, path=None, headers=None, rcvbuf=None, handshake=True,
                   timeout=5.0):
        self = cls()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, (HOST, d.port)), timeout)
        limit = 2 ** 16 if rcvbuf else 2 ** 20
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=limit)
        if not handshake:
            return self
        if path is None:
            path = "/v1/ws" + (f"?token={tok}" if tok is not None else "")
        key = base64.b64encode(os.urandom(16)).decode()
        h = {
            "Host": f"{HOST}:{d.port}",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
        }
        if headers:
            for k, v in headers.items():
                if v is None:
                    h.pop(k, None)
                else:
                    h[k] = v
        req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        self.writer.write(req.encode("latin-1"))
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        self.status, self.headers = _parse_head(head[:-4])
        if self.status == 101:
            want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            if self.headers.get("sec-websocket-accept") != want:
                raise ConnectionError("bad Sec-WebSocket-Accept")
        else:
            n = int(self.headers.get("content-length", "0") or 0)
            if n:
                self.body = await asyncio.wait_for(self.reader.readexactly(n), timeout)
        return self

    def response(self):
        return Response(self.status, self.headers, self.body)

    async def send_raw(self, data):
        self.writer.write(data)
        await self.writer.drain()

    async def send_frame(self, op, payload=b"", **kw):
        await self.send_raw(ws_frame(op, payload, **kw))

    async def send_text(self, text):
        await self.send_frame(0x1, text if isinstance(text, bytes) else text.encode())

    async def send_json(self, obj):
        await self.send_text(json.dumps(obj))

    async def recv_frame(self, timeout=3.0):
        """(fin, opcode, payload) or None at EOF. Raises asyncio.TimeoutError."""
        try:
            h = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            fin = bool(h[0] & 0x80)
            op = h[0] & 0xF
            n = h[1] & 0x7F
            masked = h[1] & 0x80
            if n == 126:
                n = struct.unpack("!H", await asyncio.wait_for(self.reader.readexactly(2), timeout))[0]
            elif n == 127:
                n = struct.unpack("!Q", await asyncio.wait_for(self.reader.readexactly(8), timeout))[0]
            key = await asyncio.wait_for(self.reader.readexactly(4), timeout) if masked else None
            payload = await asyncio.wait_for(self.reader.readexactly(n), timeout) if n else b""
            if key:
                payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            return fin, op, payload
        except asyncio.TimeoutError:
            raise   # (a subclass of OSError since Python 3.11)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            if os.environ.get("HARNESS_DEBUG"):
                print("# recv_frame:", type(e).__name__, e)
            return None

    async def recv(self, timeout=3.0, auto_pong=True):
        """Next message: ("text", str) / ("binary", bytes) / ("close", code, reason) /
        ("eof",). Pings are answered (if auto_pong) and counted."""
        deadline = time.monotonic() + timeout
        parts = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError()
            f = await self.recv_frame(left)
            if f is None:
                return ("eof",)
            fin, op, payload = f
            if op == 0x9:
                self.pings += 1
                if auto_pong:
                    await self.send_frame(0xA, payload)
                continue
            if op == 0xA:
                continue
            if op == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return ("close", code, payload[2:].decode("utf-8", "replace"))
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                if op == 0x1 or (op == 0 and True):
                    return ("text", data.decode("utf-8", "replace"))
                return ("binary", data)

    async def recv_json(self, timeout=3.0, auto_pong=True):
        m = await self.recv(timeout, auto_pong)
        if m[0] != "text":
            return None
        try:
            return json.loads(m[1])
        except ValueError:
            return None

    async def until_close(self, timeout=5.0, auto_pong=True):
        """Read until a close frame or EOF. Returns (close_code or None, messages)."""
        msgs = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout", msgs
            try:
                m = await self.recv(left, auto_pong)
            except asyncio.TimeoutError:
                return "timeout", msgs
            if m[0] == "close":
                # answer the close as a client should, ignore errors
                try:
                    await self.send_frame(0x8, close_payload(m[1]))
                except Exception:
                    pass
                return m[1], msgs
            if m[0] == "eof":
                return None, msgs
            if m[0] == "text":
                try:
                    msgs.append(json.loads(m[1]))
                except ValueError:
                    msgs.append(m[1])
            else:
                msgs.append(m)

    async def drain_to_eof(self, timeout=30.0):
        """Read raw bytes as fast as possible until EOF, then parse the frames.
        Returns (close_code or None or "timeout", n_frames, n_bytes)."""
        data = bytearray()
        deadline = time.monotonic() + timeout
        eof = False
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(self.reader.read(1 << 20),
                                               max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            except (ConnectionError, OSError):
                eof = True
                break
            if not chunk:
                eof = True
                break
            data += chunk
        i, n, code = 0, 0, None
        while i + 2 <= len(data):
            op = data[i] & 0xF
            ln = data[i + 1] & 0x7F
            j = i + 2
            if ln == 126:
                ln = struct.unpack("!H", bytes(data[j:j + 2]))[0]
                j += 2
            elif ln == 127:
                ln = struct.unpack("!Q", bytes(data[j:j + 8]))[0]
                j += 8
            if data[i + 1] & 0x80:
                j += 4
            if j + ln > len(data):
                break
            n += 1
            if op == 0x8:
                code = struct.unpack("!H", bytes(data[j:j + 2]))[0] if ln >= 2 else 1005
            i = j + ln
        return (code if eof or code is not None else "timeout"), n, len(data)

    def close(self):
        try:
            self.writer.close()
        except Exception:
            pass


# --------------------------------------------------------------------------
# Server-Sent Events


class SSE:
    def __init__(self):
        self.reader = None
        self.writer = None
        self.status = None
        self.headers = {}
        self.body = b""
        self.chunked = False
        self.raw = b""
        self.text = ""
        self.comments = 0
        self.eof = False
        # As an EventSource: every id: line is the last event id, an
        # id-only block's too (no data: nothing dispatched); those counted.
        self.last_id = None
        self.id_only = 0
        self.id_only_with_event = False

    @classmethod
    async def open(cls, d, last_event_id=None, after=None, auth=True, timeout=5.0, path=None):
        self = cls()
        self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(HOST, d.port), timeout)
        if path is None:
            path = "/v1/events" + (f"?after={after}" if after is not None else "")
        h = {"Host": HOST, "Accept": "text/event-stream"}
        if auth is True:
            h["Authorization"] = f"Bearer {API_KEY}"
        elif isinstance(auth, str):
            h["Authorization"] = auth
        if last_event_id is not None:
            h["Last-Event-ID"] = str(last_event_id)
        req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        self.writer.write(req.encode())
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        self.status, self.headers = _parse_head(head[:-4])
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if self.status != 200:
            n = int(self.headers.get("content-length", "0") or 0)
            if n:
                self.body = await asyncio.wait_for(self.reader.readexactly(n), timeout)
        return self

    def response(self):
        return Response(self.status, self.headers, self.body)

    async def _more(self, timeout):
        if self.chunked:
            line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), timeout)
            size = int(line.strip().split(b";")[0] or b"0", 16)
            if size == 0:
                self.eof = True
                return False
            data = await asyncio.wait_for(self.reader.readexactly(size + 2), timeout)
            self.text += data[:-2].decode("utf-8")
            return True
        data = await asyncio.wait_for(self.reader.read(65536), timeout)
        if not data:
            self.eof = True
            return False
        self.text += data.decode("utf-8")
        return True

    async def next(self, timeout=3.0):
        """Next event as dict {id, event, data (parsed JSON or str)}; None at EOF.
        Raises asyncio.TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            self.text = self.text.replace("\r\n", "\n")
            i = self.text.find("\n\n")
            while i >= 0:
                block = self.text[:i]
                self.text = self.text[i + 2:]
                ev = {"id": None, "event": "message", "data": None}
                datas = []
                for line in block.split("\n"):
                    if line.startswith(":"):
                        self.comments += 1
                        continue
                    if ":" in line:
                        k, v = line.split(":", 1)
                        if v.startswith(" "):
                            v = v[1:]
                    else:
                        k, v = line, ""
                    if k == "id":
                        ev["id"] = self.last_id = v
                    elif k == "event":
                        ev["event"] = v
                    elif k == "data":
                        datas.append(v)
                if not datas and ev["id"] is not None:
                    self.id_only += 1
                    if ev["event"] != "message":
                        self.id_only_with_event = True
                if datas:
                    s = "\n".join(datas)
                    try:
                        ev["data"] = json.loads(s)
                    except ValueError:
                        ev["data"] = s
                    return ev
                i = self.text.find("\n\n")
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError()
            try:
                await self._more(left)
            except (asyncio.IncompleteReadError, ConnectionError):
                self.eof = True

    async def collect(self, duration):
        out = []
        deadline = time.monotonic() + duration
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            try:
                ev = await self.next(left)
            except asyncio.TimeoutError:
                return out
            if ev is None:
                return out
            out.append(ev)

    async def until(self, pred, timeout=5.0):
        """Events up to and including the first matching pred; (match, all)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, out
            try:
                ev = await self.next(left)
            except asyncio.TimeoutError:
                return None, out
            if ev is None:
                return None, out
            out.append(ev)
            if pred(ev):
                return ev, out

    def close(self):
        try:
            self.writer.close()
        except Exception:
            pass


def ev_is(ev, typ, **match):
    d = ev.get("data")
    if not isinstance(d, dict) or d.get("type") != typ:
        return False
    return all(d.get(k) == v for k, v in match.items())


def ev_brief(evs):
    out = []
    for e in evs:
        d = e.get("data")
        if isinstance(d, dict):
            out.append(f"{d.get('seq')}:{d.get('type')}:{d.get('user_id')}:{d.get('reason')}")
        else:
            out.append(f"{e.get('event')}:{d}")
    return out


# --------------------------------------------------------------------------
# Common checks


async def fresh_client_works(t, d, label):
    """The daemon still serves a fresh client: welcome, ping/pong, API."""
    try:
        c = await Client.connect(d, f"fresh-{int(time.time()*1000) % 100000}")
        ok = c.welcome and c.welcome.get("type") == "welcome"
        p = await c.ping("fresh")
        await c.close()
        t.check(f"{label}: daemon alive and serves a fresh client afterwards",
                ok and p is not None, f"welcome={c.welcome} pong={p}")
    except Exception as e:
        t.check(f"{label}: daemon alive and serves a fresh client afterwards", False,
                f"{type(e).__name__}: {e}; alive={d.alive()}")


# --------------------------------------------------------------------------
# Runner


def sanitizer_report(text):
    """The first lines of an ASan/UBSan/LSan report in text, or ""."""
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "ERROR: UndefinedBehaviorSanitizer"):
        i = text.find(marker)
        if i >= 0:
            return text[max(0, i - 100):i + 600]
    return ""


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presenced", required=False,
                    default=os.environ.get("PRESENCED", "build/presenced"))
    ap.add_argument("--source-dir", default=os.path.abspath(
        os.path.join(os.path.dirname(__file__), "..", "..")))
    ap.add_argument("--only", default=None, help="run only tests whose name contains this")
    ap.add_argument("--verbose", action="store_true")
    return ap.parse_args()


def run(groups, file_timeout=280.0):
    """groups: list of (label, daemon_flags, [async def test(t, d, args)], options).

    Each group gets its own daemon. Each test runs under its own time bound
    (attribute `timeout` on the function, default 30 s). After each group: the
    daemon must still be alive and serve a fresh client, then it is stopped
    (SIGTERM, SIGKILL after 5 s)."""
    args = parse_args()
    t = Checks()
    t0 = time.monotonic()

    async def main():
        for group in groups:
            label, flags, tests = group[0], group[1], group[2]
            opts = group[3] if len(group) > 3 else {}
            if args.only and not any(args.only in f.__name__ for f in tests):
                continue
            d = Daemon(args.presenced, flags, label)
            failed_before = t.failed
            try:
                d.start()
            except Exception as e:
                t.check(f"{label}: presenced starts and answers /healthz", False, str(e))
                d.cleanup()
                continue
            try:
                for fn in tests:
                    if args.only and args.only not in fn.__name__:
                        continue
                    if time.monotonic() - t0 > file_timeout:
                        t.check(f"{fn.__name__}: ran within the file's time budget", False)
                        continue
                    tmo = getattr(fn, "timeout", 30.0)
                    try:
                        await asyncio.wait_for(fn(t, d, args), tmo)
                    except asyncio.TimeoutError:
                        t.check(f"{fn.__name__}: finished within {tmo:.0f}s", False, "timed out")
                    except Exception as e:
                        t.check(f"{fn.__name__}: ran without exception", False,
                                f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
                if not opts.get("stopped_by_test"):
                    if d.alive() and opts.get("fresh_client", True):
                        await fresh_client_works(t, d, label)
                    elif not d.alive():
                        t.check(f"{label}: daemon still running after the tests", False,
                                f"exit={d.proc.returncode} stderr: {d.stderr_tail()}")
                    code = d.stop()
                    t.check(f"{label}: SIGTERM stops the daemon with exit status 0",
                            code == 0, f"exit={code}")
                t.check(f"{label}: no sanitizer report in the daemon's stderr",
                        not sanitizer_report(d.stderr_text()), sanitizer_report(d.stderr_text()))
            finally:
                if t.failed > failed_before or args.verbose:
                    t.note("daemon stderr tail:")
                    for line in d.stderr_tail(20).splitlines():
                        t.note(line)
                d.kill()
                d.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        t.check("interrupted", False)
    print(f"{t.passed} passed, {t.failed} failed", flush=True)
    sys.exit(0 if t.failed == 0 else 1)


def timeout(seconds):
    def deco(fn):
        fn.timeout = seconds
        return fn
    return deco
