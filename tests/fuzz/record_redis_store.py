#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes the seeds of fuzz_redis_store (tests/fuzz/corpus/fuzz_redis_store/):
what a real redis-server answers to the store's commands, so the fuzzer
starts past the startup handshake (FUNCTION LOAD, the script's register,
TIME, the reader's XREAD) and mutates answers to calls that happen.

Each plan below is run by the harness in its recorder mode against a
private redis-server (unix socket in a temporary directory, emptied before
each plan): the harness forwards every command the store sends to it and
writes the answers in its input encoding (fuzz_redis_store.c's header).
Replies that hold the time (TIME, registration) differ from run to run:
rerun and commit when the store's conversation changes.

  record_redis_store.py --harness BUILD/tests/fuzz/fuzz_redis_store
      [--redis-server redis-server] [--out tests/fuzz/corpus/fuzz_redis_store]
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
N_CALLS = 28  # fuzz_redis_store.c
CALLS = dict(open=0, status=1, join=2, user=3, members=4, sessions=5, log=6,
             leave=7, end=8, avail=9, message=10, kick=11, lease=12,
             graces=13, release=14, channels=15, uchannels=16, brief=17,
             touch=18, update=19, goodbye=20, track=21, reset=22,
             logof=23, openopts=24, leasetext=25, removeuser=26)


def call(name, sess=0, user=0, extra=0):
    """'c' and the selector byte: the call, session sess of SIDS, user
    user of USERS, extra the variant's other bits."""
    v = sess + 3 * user + 6 * extra
    b = CALLS[name] + N_CALLS * v
    assert b < 256, (name, sess, user, extra)
    return b"c" + bytes([b])


def steps(*names):
    out = b""
    for n in names:
        if isinstance(n, bytes):
            out += n
        else:
            out += call(*n) if isinstance(n, tuple) else call(n)
        out += b"ar"  # every answer, then the log reader's once
    return out


START = b"arar"  # connect, load, register, the reader's first reads
PLANS = {
    # the calls a WebSocket session makes, one instance, one shard
    "session-plain": (0x20, START + steps(
        ("open", 0, 0), ("status", 0, 0, 1), ("join", 0, 0, 1),
        ("update", 0, 0), ("user", 0, 0), ("members", 0, 0, 1),
        ("brief", 0, 0), ("sessions", 0, 0), ("uchannels", 0, 0),
        ("channels",), ("log",), ("leave", 0, 0), ("end", 0, 0)) + b"ta"),
    # offline grace and inactivity: deadlines the ticks reach
    "grace-inactivity": (0x26, START + steps(
        ("open", 1, 1), ("open", 2, 0), ("touch", 1, 1), ("end", 1, 1),
        ("avail", 0, 1), ("message", 0, 1), ("openopts", 0, 0, 1),
        ("removeuser", 0, 0)) + b"tatatarta"),
    # kicks, leases, graces ended, a clean leave (the kick stream in the
    # reader's XREAD)
    "kick-lease-leave": (0x22, START + steps(
        ("open", 0, 0), ("open", 1, 1), ("kick", 0, 0), ("lease", 0, 0),
        ("lease", 1, 0), ("leasetext", 0, 0), ("end", 1, 1), ("graces",),
        ("release",), ("track",), ("logof", 1, 0), ("reset",), ("goodbye",))),
    # two shards: two stores, their connections, the fan-out of queries
    "shards": (0x28, START + b"arar" + steps(
        ("open", 0, 0), ("open", 1, 1), ("join", 0, 0, 1), ("join", 1, 1),
        ("members", 0, 0, 1), ("channels",), ("user", 0, 1), ("track",),
        ("end", 0, 0)) + b"ta"),
    # SELECT 1 before anything, and the small reply limits
    "select-limits": (0x31, START + steps(
        ("open", 0, 0), ("join", 0, 0, 1), ("members", 0, 0, 1), ("log",))),
    # presenced --workers: this store reads the log for a follower (its
    # copies checked), then one that takes the log from the feed
    "feed-out": (0x60, START + steps(
        ("open", 0, 0), ("join", 0, 0, 1), ("end", 0, 0)) + b"ar"),
    "feed-in": (0xA0, START + steps(
        ("open", 0, 0), b"f", ("join", 0, 0, 1), b"f", ("user", 0, 0),
        ("end", 0, 0), b"f")),
    # an instance that died left sessions (BEFORE): this one reaps them once
    # its lease ran out ('w': 7 s on the real Redis's clock)
    "reap": (0x22, START + b"tawtatatarta" + steps(("user", 0, 0), ("members", 0, 0, 1))
             + b"tatarta"),
}
BEFORE = {
    "reap": (0x20, START + steps(("open", 0, 0), ("open", 1, 1),
                                 ("join", 0, 0, 1), ("join", 1, 1))),
}


def redis_cmd(path, *args):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    msg = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        msg += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(msg)
    data = s.recv(65536)
    s.close()
    return data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--harness", required=True)
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--out", default=os.path.join(HERE, "corpus", "fuzz_redis_store"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="rec-redis-")
    sock = os.path.join(tmp, "redis.sock")
    srv = subprocess.Popen(
        [args.redis_server, "--port", "0", "--unixsocket", sock, "--save", "",
         "--appendonly", "no", "--dir", tmp, "--logfile", "redis.log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                if redis_cmd(sock, "PING").startswith(b"+PONG"):
                    break
            except OSError:
                pass
            time.sleep(0.02)
        else:
            sys.exit("redis-server did not start")
        def run(cfg, plan, out, instance=None):
            plan_file = os.path.join(tmp, "plan")
            with open(plan_file, "wb") as f:
                f.write(bytes([cfg]) + plan)
            env = dict(os.environ, FUZZ_REDIS_RECORD=sock,
                       FUZZ_REDIS_RECORD_OUT=out)
            if instance:
                env["FUZZ_REDIS_INSTANCE"] = instance
            subprocess.run([args.harness, plan_file], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        for name, (cfg, plan) in PLANS.items():
            redis_cmd(sock, "FLUSHALL")
            redis_cmd(sock, "FUNCTION", "FLUSH")
            if name in BEFORE:
                # another instance's sessions, left behind when it "died"
                # (no leave), its lease run out by the time this one runs
                run(*BEFORE[name], os.path.join(tmp, "before"), "fuzz-0")
            out = os.path.join(args.out, name)
            run(cfg, plan, out)
            print(f"{name}: {os.path.getsize(out)} bytes")
    finally:
        srv.kill()
        srv.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
