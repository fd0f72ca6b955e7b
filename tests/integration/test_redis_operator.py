#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What an operator meets when the Redis settings are wrong, run as an
operator would: presenced started with a real redis-server, the mistakes
made one at a time, the exit status, stderr and presencectl read as a
person would read them.

- settings: a Redis setting where it does nothing (--redis-cluster or a
  password without a Redis --store, TLS files with a plain redis:// URL,
  sentinel credentials without sentinels), a TLS file that is missing or
  a directory, a client certificate without its key. Each is refused at
  once, by --check-config too, with exit status 2 and the flag named;
  before, --redis-cluster without --store ran the embedded store (each
  instance alone) and a missing CA file passed --check-config, then left
  the instance unready for ever. A --store URL that does not parse says
  what is wrong in it (the port, the database, an escape), not only the
  list of forms, and never its password. A configuration file saved with
  a UTF-8 byte-order mark reads as without it (its first key was refused
  as unknown, and not shown). A misspelt flag or key (--redis-pasword,
  redis_password_file) names the setting it likely meant.
- tls-hints: TLS and the port disagree, as the log line says it. A
  rediss:// URL to Redis's plain port, a redis:// URL to its tls-port, no
  client certificate for a Redis with tls-auth-clients, a CA that did not
  sign Redis's certificate, another host name: each attempt's line names
  the setting that mends it (before: "not ready within 2000 ms",
  "connection reset by peer", a bare OpenSSL reason).
- stats-outage: presencectl stats while Redis is away, when an operator
  most needs it, shows the figures (instance, sessions, Redis connections
  down) and that the store is not ready, and exits 1; before, it printed
  "unexpected answer HTTP 503" and nothing else. Once Redis is back, it
  exits 0 again.
- argv-password: a Redis password given on the command line (in the --store
  URL, --redis-password, --redis-password=..., --redis-sentinel-password)
  is blanked from /proc/PID/cmdline (what ps shows every local user) once
  presenced has read it, with a warning naming the flag and never the
  password, as the API key and the JWT secret already were
  (docs/security.md); presenced still reaches Redis with it.
- documented-keys: every setting the operator's documents name (a
  `--flag` or a `key` of presenced's prefixes in operations.md,
  configuration.md, scaling.md and presenced(8)) is one presenced --help-keys
  lists; operations.md named a `redis-stream-block-ms` that no flag sets.
  presenced(8) documents --store and the Redis credentials (it named
  --redis-shards, never --store).
- env-typos: a PRESENCED_* variable that is no setting (a typo in a systemd
  drop-in: PRESENCED_REDIS_PASWORD, PRESENCED_OFFLINE_GRACE without _MS)
  is warned of at startup and by --check-config, with the nearest real
  name and never the value; before, it was ignored without a word.
  PRESENCED_CHECK_CONFIG, which --help listed though --check-config is a
  flag only, turned every start into a check that exited 0 without
  serving; now it is such a variable, and presenced serves.
- acl-user-url: an ACL user in the URL and its password apart, as
  operations.md advises (--store redis://presenced@HOST:PORT/0 with
  PRESENCED_REDIS_PASSWORD or --redis-password-file): the instance
  registers. The URL's user was taken for a password, so AUTH went to the
  default user and Redis answered WRONGPASS for ever.
- sentinel-auth: sentinels with a password of their own, and presenced
  without it or with a wrong one: every line about a sentinel says that
  the sentinels' password goes apart from the URL's (the data nodes') and
  names the setting. Before, one line advised putting it in the URL (where
  it would be taken for the data nodes') and the other said the sentinel
  "names no primary for master" (it had refused to answer).
- conf-example: contrib/presenced.conf.example, what an operator copies to
  /etc/presenced/presenced.conf, passes --check-config as shipped and with
  every commented setting uncommented (the files it names made): a guard
  for the example's Redis lines, which name the store, the password file
  and the TLS CA. Checked without the secrets the unit would give, it
  says (as the start would) that the API and every client would be
  refused; it said only "ok".

Run: /usr/bin/python3 tests/integration/test_redis_operator.py --presenced PATH
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import API_KEY, Checks, Daemon, free_port, http_sync, parse_args  # noqa: E402
from test_redis_cluster import Redis, _make_certs  # noqa: E402

KEYS = {"PRESENCED_API_KEY": "k" * 40, "PRESENCED_JWT_SECRET": "s" * 40}


def env_clean(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCED_")}
    env.update(KEYS)
    env.update(extra or {})
    return env


def presenced(binary, *argv, timeout=5, env=None):
    """Run presenced to its end: (exit status or None if it had to be
    killed, stderr)."""
    try:
        p = subprocess.run([binary, "--listen", f"127.0.0.1:{free_port()}", *argv],
                           stdin=subprocess.DEVNULL, capture_output=True,
                           env=env_clean(env), timeout=timeout)
        return p.returncode, p.stdout.decode() + p.stderr.decode()
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        return None, out.decode()


def scenario_settings(t, args, certs):
    ca = os.path.join(certs, "ca.crt")
    crt = os.path.join(certs, "server.crt")
    key = os.path.join(certs, "server.key")
    both = os.path.join(certs, "both.pem")
    with open(both, "w") as f:
        f.write(open(crt).read() + open(key).read())
    missing = os.path.join(certs, "nope.crt")
    tls = "rediss://127.0.0.1:1/0"
    cases = [
        # (what, argv, flag the message must name, words it must hold)
        ("--redis-cluster without --store", ["--redis-cluster", "127.0.0.1:7000"],
         "--redis-cluster", "needs a Redis store"),
        ("--redis-password with the embedded store",
         ["--store", "memory", "--redis-password", "pw"], "--redis-password",
         "needs a Redis store"),
        ("--redis-shards 12 with the embedded store", ["--redis-shards", "12"],
         "--redis-shards", "needs a Redis store"),
        ("PRESENCED_REDIS_CLUSTER without a store", [], "--redis-cluster",
         "needs a Redis store", {"PRESENCED_REDIS_CLUSTER": "127.0.0.1:7000"}),
        ("--redis-tls-ca with a plain redis:// URL",
         ["--store", "redis://127.0.0.1:1/0", "--redis-tls-ca", ca], "--redis-tls-ca",
         "rediss://"),
        ("--redis-sentinel-password without sentinels",
         ["--store", "redis://127.0.0.1:1/0", "--redis-sentinel-password", "pw"],
         "--redis-sentinel-password", "redis+sentinel://"),
        ("a missing --redis-tls-ca file", ["--store", tls, "--redis-tls-ca", missing],
         "--redis-tls-ca", missing),
        ("a directory as --redis-tls-ca", ["--store", tls, "--redis-tls-ca", certs],
         "--redis-tls-ca", certs),
        ("a missing --redis-tls-key file",
         ["--store", tls, "--redis-tls-cert", crt, "--redis-tls-key", missing],
         "--redis-tls-key", missing),
        ("--redis-tls-cert holding no key, no --redis-tls-key",
         ["--store", tls, "--redis-tls-cert", crt], "--redis-tls-cert", "--redis-tls-key"),
        ("--redis-tls-key without --redis-tls-cert",
         ["--store", tls, "--redis-tls-key", key], "--redis-tls-key", "--redis-tls-cert"),
    ]
    for case in cases:
        what, argv, flag, words = case[:4]
        env = case[4] if len(case) > 4 else None
        for mode in (["--check-config"], []):
            rc, out = presenced(args.presenced, *argv, *mode, env=env)
            label = f"{what}{' (--check-config)' if mode else ''}"
            t.check(f"{label}: exit 2, not a start", rc == 2, f"rc={rc} {out[-400:]}")
            t.check(f"{label}: the message names {flag} and says why",
                    flag in out and words in out and "ok" not in out.split(), out[-400:])
    # A --store URL that does not parse says what is wrong in it, and never
    # its password.
    for url, why in (("redis://:Url-PW-77@127.0.0.1:99999/0", "the port must be 1-65535"),
                     ("redis://:Url-PW-77@127.0.0.1:6379/abc", "the database must be a number"),
                     ("redis://:Url%zzPW-77@127.0.0.1:6379/0", "%-escape"),
                     ("unix:redis.sock", "absolute socket path")):
        rc, out = presenced(args.presenced, "--store", url, "--check-config")
        t.check(f"--store {why}: exit 2, the reason given, the password not",
                rc == 2 and why in out and "Url-PW-77" not in out and "PW-77" not in out,
                f"rc={rc} {out[-300:]}")
    # A misspelt flag or key names the setting it likely meant, never the
    # value given with it.
    rc, out = presenced(args.presenced, "--redis-pasword=Typo-PW-31", "--check-config")
    t.check("--redis-pasword: exit 2, 'did you mean --redis-password?', the value not shown",
            rc == 2 and "did you mean --redis-password?" in out and "Typo-PW-31" not in out,
            f"rc={rc} {out[-300:]}")
    typo = os.path.join(certs, "typo.conf")
    with open(typo, "w") as f:
        f.write("redis_password_file = /etc/presenced/redis-password\n")
    rc, out = presenced(args.presenced, "--config", typo, "--check-config")
    t.check("redis_password_file in the file: exit 2, 'did you mean redis-password-file'",
            rc == 2 and "did you mean 'redis-password-file'?" in out, f"rc={rc} {out[-300:]}")
    # A file saved with a UTF-8 byte-order mark (Windows editors) reads as
    # without it.
    bom = os.path.join(certs, "bom.conf")
    with open(bom, "wb") as f:
        f.write(b"\xef\xbb\xbfoffline-grace-ms = 5000\r\nlog-format = logfmt\r\n")
    rc, out = presenced(args.presenced, "--config", bom, "--check-config")
    t.check("a configuration file with a UTF-8 byte-order mark: --check-config ok",
            rc == 0 and "ok" in out.splitlines(), f"rc={rc} {out[-300:]}")
    # What is right still passes.
    for what, argv in (("a certificate and its key", ["--store", tls, "--redis-tls-ca", ca,
                                                      "--redis-tls-cert", crt,
                                                      "--redis-tls-key", key]),
                       ("a certificate file holding its key",
                        ["--store", tls, "--redis-tls-cert", both]),
                       ("a password with a Redis store",
                        ["--store", "redis://127.0.0.1:1/0", "--redis-password", "pw"])):
        rc, out = presenced(args.presenced, *argv, "--check-config")
        t.check(f"{what}: --check-config ok", rc == 0 and "ok" in out.splitlines(),
                f"rc={rc} {out[-400:]}")


def first_connect_line(binary, argv, timeout=6.0):
    """Start presenced on a free port with argv; the first "cannot connect"
    (or "registered") line of its log, then stop it."""
    err = tempfile.NamedTemporaryFile(prefix="presenced-err-", delete=False)
    p = subprocess.Popen([binary, "--listen", f"127.0.0.1:{free_port()}",
                          "--redis-timeout-ms", "500", *argv],
                         stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env_clean())
    line = ""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not line and p.poll() is None:
            time.sleep(0.05)
            with open(err.name, errors="replace") as f:
                for ln in f:
                    if "cannot connect" in ln or "registered" in ln:
                        line = ln.strip()
                        break
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if not line:
            with open(err.name, errors="replace") as f:
                line = "(no such line) " + f.read()[-400:]
        os.unlink(err.name)
    return line


def scenario_tls_hints(t, args, certs):
    other = tempfile.mkdtemp(prefix="presence-ops-ca-")
    _make_certs(other)
    plain, tport = free_port(), free_port()
    redis = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(plain), "--bind", "127.0.0.1",
         "--tls-port", str(tport), "--tls-cert-file", os.path.join(certs, "server.crt"),
         "--tls-key-file", os.path.join(certs, "server.key"),
         "--tls-ca-cert-file", os.path.join(certs, "ca.crt"), "--tls-auth-clients", "yes",
         "--save", "", "--appendonly", "no", "--dir", certs],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        ca = ["--redis-tls-ca", os.path.join(certs, "ca.crt")]
        cert = ["--redis-tls-cert", os.path.join(certs, "server.crt"),
                "--redis-tls-key", os.path.join(certs, "server.key")]
        line = first_connect_line(args.presenced,
                                  ["--store", f"rediss://127.0.0.1:{tport}/0", *ca, *cert])
        t.check("TLS with the CA and a client certificate: registered",
                "registered" in line, line)
        cases = [
            ("rediss:// to the plain port", [f"rediss://127.0.0.1:{plain}/0", *ca, *cert],
             ["TLS handshake", "tls-port"]),
            ("redis:// to the TLS port", [f"redis://127.0.0.1:{tport}/0"],
             ["a TLS port? then rediss://"]),
            ("no client certificate for tls-auth-clients",
             [f"rediss://127.0.0.1:{tport}/0", *ca], ["client certificate", "--redis-tls-cert"]),
            ("a CA that did not sign the certificate",
             [f"rediss://127.0.0.1:{tport}/0", "--redis-tls-ca", os.path.join(other, "ca.crt"),
              *cert], ["certificate:", "--redis-tls-ca"]),
            ("a host name the certificate does not hold",
             [f"rediss://127.0.0.1:{tport}/0", *ca, *cert,
              "--redis-tls-server-name", "redis.other.test"],
             ["hostname mismatch", "--redis-tls-server-name"]),
        ]
        for what, store, words in cases:
            line = first_connect_line(args.presenced, ["--store", *store])
            t.check(f"{what}: the log line says what to change ({words[-1]})",
                    "cannot connect" in line and all(w in line for w in words), line)
    finally:
        redis.kill()
        redis.wait()
        shutil.rmtree(other, ignore_errors=True)


def ctl(args, d, *argv):
    binary = os.path.join(os.path.dirname(os.path.abspath(args.presenced)), "presencectl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCECTL_")}
    env["PRESENCECTL_URL"] = f"http://127.0.0.1:{d.port}"
    env["PRESENCECTL_API_KEY"] = API_KEY  # /metrics needs it (stats)
    p = subprocess.run([binary, *argv], stdin=subprocess.DEVNULL, capture_output=True,
                       env=env, timeout=15)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def healthz(d):
    try:
        return http_sync(d.port, "GET", "/healthz", timeout=2.0)[0]
    except OSError:
        return None


def wait_health(d, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthz(d) == want:
            return True
        time.sleep(0.05)
    return False


def scenario_stats_outage(t, args):
    redis = Redis()
    redis.start()
    d = Daemon(args.presenced, {**redis.store_flags(), "--redis-heartbeat-ms": "200",
                                "--redis-lease-ms": "1000", "--redis-timeout-ms": "500"})
    try:
        d.start()
        rc, out, err = ctl(args, d, "stats")
        t.check("stats, Redis up: exit 0, the store ready",
                rc == 0 and "redis, ready" in out, f"rc={rc} {out} {err}")
        redis.kill()
        t.check("Redis killed: /healthz answers 503", wait_health(d, 503))
        rc, out, err = ctl(args, d, "stats")
        t.eq("stats, Redis away: exit 1 (the instance is not ready)", rc, 1)
        for word in ("instance", "uptime", "sessions", "connections"):
            t.check(f"stats, Redis away: still shows {word}",
                    any(ln.startswith(word) for ln in out.splitlines()), out)
        t.check("stats, Redis away: says the store is not ready and its connections down",
                "NOT READY" in out and "commands 0" in out, out)
        t.check("stats, Redis away: stderr says why, not 'unexpected answer'",
                "not ready" in err and "unexpected" not in err, err)
        rc, out, err = ctl(args, d, "--json", "stats")
        try:
            j = json.loads(out)
        except ValueError:
            j = {}
        t.check("stats --json, Redis away: exit 1, store_ready false, the metrics",
                rc == 1 and j.get("store_ready") is False and j.get("store") == "redis"
                and "presenced_redis_up" in j.get("metrics", {}), f"rc={rc} {out[:300]} {err}")
        redis.start()
        t.check("Redis back: /healthz answers 200", wait_health(d, 200))
        rc, out, err = ctl(args, d, "stats")
        t.check("stats, Redis back: exit 0", rc == 0 and "redis, ready" in out,
                f"rc={rc} {out} {err}")
        t.eq("presenced stops with exit status 0", d.stop(), 0)
    finally:
        if t.failed:
            t.note(d.stderr_tail(15))
        d.cleanup()
        redis.cleanup()


def scenario_argv_password(t, args):
    pw = "Argv-Redis-PW-4417"
    redis = Redis()
    redis.start()
    redis.cli("CONFIG", "SET", "requirepass", pw)
    redis.cli("-a", pw, "--no-auth-warning", "PING")
    # Redis.cli talks over the unix socket without a password: from here on
    # every call needs it.
    port = free_port()
    redis.cli("-a", pw, "--no-auth-warning", "CONFIG", "SET", "port", str(port))
    sock = redis.sock
    cases = [
        ("the --store URL", {"--store": f"redis://:{pw}@127.0.0.1:{port}/0"}, "--store"),
        ("--redis-password", {"--store": f"unix:{sock}", "--redis-password": pw},
         "--redis-password"),
        ("--redis-password=", {"--store": f"unix:{sock}", f"--redis-password={pw}": ""},
         "--redis-password"),
    ]
    try:
        for what, flags, flag in cases:
            d = Daemon(args.presenced, {**flags, "--redis-heartbeat-ms": "200",
                                        "--redis-lease-ms": "1000"})
            try:
                d.start()
                with open(f"/proc/{d.pid}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace")
                t.check(f"{what}: the password is not in /proc/PID/cmdline", pw not in argv,
                        argv.replace("\0", " "))
                err = d.stderr_text()
                t.check(f"{what}: a warning names {flag}, not the password",
                        f"{flag} " in err and "command line" in err and pw not in err, err)
                t.check(f"{what}: the instance reached Redis with it (/healthz 200)",
                        healthz(d) == 200)
            finally:
                d.cleanup()
        rc, out = presenced(args.presenced, "--store",
                            "redis+sentinel://127.0.0.1:1/m", "--redis-sentinel-password", pw,
                            "--check-config")
        t.check("--redis-sentinel-password on the command line: warned of, not shown",
                rc == 0 and "--redis-sentinel-password given on the command line" in out
                and pw not in out, f"rc={rc} {out}")
    finally:
        redis.cleanup()


# Backticked words that look like settings but are programs or values.
NOT_SETTINGS = {"redis-server", "redis-cli", "redis-benchmark", "redis-py"}
SETTING = re.compile(r"(?<![#\w-])(?:`|\\-\\-|--)((?:redis|max|webhook|jwt|http|origin|backend|channel|"
                     r"offline|sse|shutdown|log|listen|api|heartbeat|timeout|connection|"
                     r"workers|message|expected|inactivity)(?:-|\\-)[a-z0-9\\-]*[a-z0-9])")


def scenario_documented_keys(t, args):
    p = subprocess.run([args.presenced, "--help-keys"], capture_output=True, timeout=10)
    keys = set(re.findall(r"^\| `([a-z0-9-]+)`", p.stdout.decode(), re.M))
    t.check("--help-keys lists the keys", "redis-lease-ms" in keys, sorted(keys)[:5])
    for doc in ("docs/operations.md", "docs/configuration.md", "docs/scaling.md",
                "docs/man/presenced.8"):
        with open(os.path.join(args.source_dir, doc), encoding="utf-8") as f:
            text = f.read()
        named = {m.replace("\\-", "-") for m in SETTING.findall(text)}
        # "--redis-*" and "--redis-tls-*" name families, not one setting.
        named = {k for k in named if k not in NOT_SETTINGS
                 and not any(x.startswith(k + "-") for x in keys)}
        unknown = sorted(named - keys)
        t.check(f"{doc}: every setting it names exists ({len(named)} named)", not unknown,
                unknown)
        if doc.endswith("presenced.8"):
            # The man page an operator reads first must say how to reach
            # Redis: it named --redis-shards but not --store.
            need = {"store", "redis-password-file", "redis-sentinel-password-file",
                    "redis-tls-ca", "redis-cluster"}
            has = named | ({"store"} if re.search(r"^\.BI \\-\\-store ", text, re.M)
                           else set())
            t.check("presenced(8) documents --store and the Redis credentials and TLS",
                    need <= has, sorted(need - has))


def scenario_env_typos(t, args):
    value = "Env-Typo-Value-9931"
    env = {"PRESENCED_REDIS_PASWORD": value, "PRESENCED_OFFLINE_GRACE": "5000",
           "PRESENCED_STORE": "memory", "PRESENCED_BENCH_NO_INTEREST": "1",
           "PRESENCED_URL": "http://127.0.0.1:7070"}
    for mode in (["--check-config"], []):
        rc, out = presenced(args.presenced, *mode, env=env, timeout=2)
        label = "--check-config" if mode else "a start"
        t.check(f"{label}: PRESENCED_REDIS_PASWORD warned of, PRESENCED_REDIS_PASSWORD suggested",
                re.search(r"PRESENCED_REDIS_PASWORD is not a setting.*PRESENCED_REDIS_PASSWORD\?",
                          out), out[-600:])
        t.check(f"{label}: PRESENCED_OFFLINE_GRACE warned of, PRESENCED_OFFLINE_GRACE_MS suggested",
                re.search(r"PRESENCED_OFFLINE_GRACE is not a setting.*PRESENCED_OFFLINE_GRACE_MS\?",
                          out), out[-600:])
        t.check(f"{label}: the value is not shown; real settings, PRESENCED_BENCH_* and "
                "a name near no setting (the SDKs' PRESENCED_URL) are not warned of",
                value not in out and "PRESENCED_STORE is" not in out
                and "PRESENCED_BENCH" not in out and "PRESENCED_URL" not in out, out[-600:])
    rc, out = presenced(args.presenced, "--check-config", env=env)
    t.check("--check-config: still ok (exit 0): the environment is shared with other programs",
            rc == 0 and "ok" in out.splitlines(), f"rc={rc} {out[-300:]}")
    d = Daemon(args.presenced, {}, env={"PRESENCED_CHECK_CONFIG": "1"})
    try:
        up = True
        try:
            d.start(timeout=5)
        except RuntimeError:
            up = False
        t.check("PRESENCED_CHECK_CONFIG=1 in the environment: presenced serves (/healthz 200)",
                up and healthz(d) == 200, d.stderr_tail(4))
        t.check("PRESENCED_CHECK_CONFIG: warned of as no setting",
                "PRESENCED_CHECK_CONFIG is not a setting" in d.stderr_text(), d.stderr_tail(4))
    finally:
        d.cleanup()
    helptext = subprocess.run([args.presenced, "--help"], capture_output=True).stdout.decode()
    t.check("--help does not offer PRESENCED_CHECK_CONFIG",
            "PRESENCED_CHECK_CONFIG" not in helptext and "--check-config" in helptext)


def scenario_acl_user_url(t, args):
    redis = Redis()
    redis.start()
    port = free_port()
    redis.cli("CONFIG", "SET", "port", str(port))
    redis.cli("ACL", "SETUSER", "presenced", "on", ">Acl-User-PW-2291", "~*", "&*", "+@all")
    redis.cli("ACL", "SETUSER", "default", "off")
    pwfile = os.path.join(redis.dir, "redis-password")
    with open(pwfile, "w") as f:
        f.write("Acl-User-PW-2291\n")
    os.chmod(pwfile, 0o600)
    store = f"redis://presenced@127.0.0.1:{port}/0"
    try:
        for what, flags, env in (
                ("PRESENCED_REDIS_PASSWORD", {"--store": store},
                 {"PRESENCED_REDIS_PASSWORD": "Acl-User-PW-2291"}),
                ("--redis-password-file", {"--store": store, "--redis-password-file": pwfile},
                 {})):
            d = Daemon(args.presenced, {**flags, "--redis-heartbeat-ms": "200",
                                        "--redis-lease-ms": "1000"}, env=env)
            try:
                up = True
                try:
                    d.start(timeout=5)
                except RuntimeError:
                    up = False
                t.check(f"the URL's user, the password in {what}: registered (/healthz 200)",
                        up and healthz(d) == 200, d.stderr_tail(4))
            finally:
                d.cleanup()
    finally:
        redis.cleanup()


def log_after(binary, argv, env, seconds=1.5):
    """presenced's log after it ran this long with argv, then stopped."""
    err = tempfile.NamedTemporaryFile(prefix="presenced-err-", delete=False)
    p = subprocess.Popen([binary, "--listen", f"127.0.0.1:{free_port()}",
                          "--redis-timeout-ms", "500", *argv],
                         stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env_clean(env))
    time.sleep(seconds)
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    with open(err.name, errors="replace") as f:
        text = f.read()
    os.unlink(err.name)
    return text


def scenario_sentinel_auth(t, args):
    work = tempfile.mkdtemp(prefix="presence-ops-sentinel-")
    data, sport = free_port(), free_port()
    exe = shutil.which("redis-server")
    procs = []
    try:
        procs.append(subprocess.Popen(
            [exe, "--port", str(data), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", work, "--requirepass", "Data-PW-1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        conf = os.path.join(work, "sentinel.conf")
        with open(conf, "w") as f:
            f.write(f"port {sport}\nbind 127.0.0.1\ndir {work}\nrequirepass Sent-PW-2\n"
                    f"sentinel monitor m1 127.0.0.1 {data} 1\n"
                    "sentinel auth-pass m1 Data-PW-1\n")
        procs.append(subprocess.Popen(
            [exe, conf, "--sentinel"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        store = ["--store", f"redis+sentinel://127.0.0.1:{sport}/m1"]
        text = log_after(args.presenced, store, {"PRESENCED_REDIS_PASSWORD": "Data-PW-1",
                                                 "PRESENCED_REDIS_SENTINEL_PASSWORD": "Sent-PW-2"})
        t.check("sentinels and data nodes each with their password: registered",
                "registered" in text, text[-400:])
        for what, env in (("no sentinel password", {"PRESENCED_REDIS_PASSWORD": "Data-PW-1"}),
                          ("a wrong sentinel password",
                           {"PRESENCED_REDIS_PASSWORD": "Data-PW-1",
                            "PRESENCED_REDIS_SENTINEL_PASSWORD": "wrong"})):
            text = log_after(args.presenced, store, env)
            lines = [ln for ln in text.splitlines() if "cannot connect to sentinel" in ln]
            t.check(f"{what}: the sentinel connections' lines say where the sentinels' "
                    "password goes", lines and all(
                        "--redis-sentinel-password-file" in ln and "give it in the URL" not in ln
                        and "names no primary" not in ln for ln in lines), text[-700:])
            t.check(f"{what}: no password in the log", "Data-PW-1" not in text
                    and "Sent-PW-2" not in text)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


def scenario_conf_example(t, args, certs):
    src = os.path.join(args.source_dir, "contrib", "presenced.conf.example")
    rc, out = presenced(args.presenced, "--config", src, "--check-config")
    t.check("presenced.conf.example as shipped: --check-config ok",
            rc == 0 and "ok" in out.splitlines(), f"rc={rc} {out}")
    # As shipped it names no secret file (the unit gives them): a check run
    # without them says what the start will warn of.
    p = subprocess.run([args.presenced, "--config", src, "--check-config"],
                       capture_output=True, env={k: v for k, v in os.environ.items()
                                                 if not k.startswith("PRESENCED_")},
                       timeout=10)
    err = p.stderr.decode()
    t.check("--check-config without an API key or a JWT secret: ok, and warned of both",
            p.returncode == 0 and "no --api-key" in err and "no --jwt-secret" in err, err)
    work = tempfile.mkdtemp(prefix="presence-ops-conf-")
    try:
        lines, n = [], 0
        for ln in open(src, encoding="utf-8").read().splitlines():
            m = re.match(r"^# ([a-z][a-z0-9-]*) = (.*)$", ln)
            if m:
                key, value = m.groups()
                # Each file it names, made: a secret of 64 hex digits, or a
                # CA (the PEM the store will be given).
                def made(path):
                    dst = os.path.join(work, os.path.basename(path))
                    if path.endswith(".pem"):
                        shutil.copy(os.path.join(certs, "ca.crt"), dst)
                    else:
                        with open(dst, "w") as f:
                            f.write("ab" * 32 + "\n")
                        os.chmod(dst, 0o600)
                    return dst
                value = re.sub(r"(/(?:etc|run)/[^,\s]+)", lambda mm: made(mm.group(1)), value)
                ln = f"{key} = {value}"
                n += 1
            lines.append(ln)
        conf = os.path.join(work, "presenced.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        rc, out = presenced(args.presenced, "--config", conf, "--check-config")
        t.check(f"presenced.conf.example with its {n} commented settings on: --check-config ok",
                n >= 5 and rc == 0 and "ok" in out.splitlines(), f"rc={rc} {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    args = parse_args()
    t = Checks()
    if not shutil.which("openssl"):
        print("ok   - SKIP: openssl not installed")
        print("1 passed, 0 failed")
        return 0
    certs = tempfile.mkdtemp(prefix="presence-ops-")
    try:
        _make_certs(certs)
        only = args.only
        if not only or only in "settings":
            scenario_settings(t, args, certs)
        if not only or only in "conf-example":
            scenario_conf_example(t, args, certs)
        if (not only or only in "tls-hints") and shutil.which("redis-server"):
            scenario_tls_hints(t, args, certs)
        if (not only or only in "stats-outage") and shutil.which("redis-server"):
            scenario_stats_outage(t, args)
        if (not only or only in "acl-user-url") and shutil.which("redis-server"):
            scenario_acl_user_url(t, args)
        if (not only or only in "sentinel-auth") and shutil.which("redis-server"):
            scenario_sentinel_auth(t, args)
        if not only or only in "env-typos":
            scenario_env_typos(t, args)
        if not only or only in "documented-keys":
            scenario_documented_keys(t, args)
        if (not only or only in "argv-password") and shutil.which("redis-server"):
            scenario_argv_password(t, args)
    finally:
        shutil.rmtree(certs, ignore_errors=True)
    print(f"{t.passed} passed, {t.failed} failed", flush=True)
    return 0 if t.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
