#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The table-driven malformed inputs of tests/data/malformed/ (format in its
README.md): every case against one daemon, each on a fresh connection, then
the daemon must still be alive and serve a fresh client."""

import asyncio
import glob
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *  # noqa: E402,F401,F403

FLAGS = {"--max-frame": "1024", "--max-message": "4096", "--max-header-bytes": "4096",
         "--max-body": "65536", "--max-msgs-per-sec": "1000"}

OPS = {"text": 1, "binary": 2, "cont": 0, "close": 8, "ping": 9, "pong": 10}


def load_case(path):
    with open(path, "rb") as f:
        raw = f.read().decode("utf-8")
    head, sep, payload = raw.partition("\n---\n")
    if not sep:
        raise ValueError(f"{path}: no --- line")
    meta = {"desc": ""}
    for line in head.split("\n"):
        if line.startswith("#"):
            meta["desc"] = meta["desc"] or line[1:].strip()
            continue
        if ":" in line:
            k, v = line.split(":", 1)
            meta[k.strip()] = v.strip()
    meta["payload"] = payload
    meta["name"] = os.path.basename(path)[:-5]
    exps = []
    for alt in meta["expect"].split("|"):
        parts = alt.split()
        if parts[0] == "http" and len(parts) == 2:
            parts.append(None)
        if parts[0] not in ("http", "error", "close", "reply") or len(parts) < 2:
            raise ValueError(f"{path}: bad expectation {alt!r}")
        exps.append(parts)
    meta["expects"] = exps
    return meta


def subst(text, d):
    text = text.replace("{HOST}", f"{HOST}:{d.port}").replace("{APIKEY}", API_KEY)
    text = text.replace("{TOKEN}", token("malformed"))
    text = re.sub(r"\{REPEAT:(\d+):([^}]*)\}", lambda m: m.group(2) * int(m.group(1)), text)
    now = int(time.time())
    text = re.sub(r"\$NOW([+-]\d+)?", lambda m: str(now + int(m.group(1) or 0)), text)
    return text


def http_bytes(payload, d):
    text = subst(payload, d)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    data = "".join(line + "\r\n" for line in lines)
    i = data.find("\r\n\r\n")
    if "{CONTENT_LENGTH}" in data:
        body_len = len(data[i + 4:].encode("utf-8")) if i >= 0 else 0
        data = data.replace("{CONTENT_LENGTH}", str(body_len))
    return data.encode("utf-8")


def build_token(payload, d):
    spec = {}
    for line in subst(payload, d).split("\n"):
        if not line.strip():
            continue
        if ":" in line:
            k, v = line.split(":", 1)
            spec[k.strip()] = v[1:] if v.startswith(" ") else v
        else:
            spec[line.strip()] = True
    if "omit" in spec:
        return None
    if "raw" in spec:
        return spec["raw"]
    header = spec.get("header", '{"alg":"HS256","typ":"JWT"}')
    claims = spec.get("claims", "{}")
    sign = spec.get("sign", "hs256")
    if sign == "wrong-secret":
        tok = make_jwt(claims, secret="not-the-secret", header=header)
    elif sign == "none":
        tok = make_jwt(claims, header=header, sign="none")
    else:
        tok = make_jwt(claims, header=header)
    if "tamper" in spec:
        h, _p, s = tok.split(".")
        tok = h + "." + b64url(spec["tamper"]) + "." + s
    if "append" in spec:
        tok += spec["append"]
    return tok


def frames_bytes(payload, d):
    out = b""
    for line in subst(payload, d).split("\n"):
        line = line.strip()
        if not line:
            continue
        if line.startswith("raw hex:"):
            out += bytes.fromhex(line[len("raw hex:"):].strip())
            continue
        head, _, pl = line.partition("payload=")
        kv = dict(x.split("=", 1) for x in head.split())
        op = kv.get("op", "text")
        op = OPS[op] if op in OPS else int(op)
        if pl.startswith("text:"):
            data = pl[5:].encode("utf-8")
        elif pl.startswith("hex:"):
            data = bytes.fromhex(pl[4:])
        elif pl.startswith("repeat:"):
            _, n, ch = pl.split(":", 2)
            data = ch.encode() * int(n)
        else:
            data = b""
        ln = int(kv["len"]) if "len" in kv else None
        out += ws_frame(op, data, fin=kv.get("fin", "1") == "1", rsv=int(kv.get("rsv", "0")),
                        mask=kv.get("mask", "1") == "1", length=ln)
    return out


def http_match(resp, exps):
    for e in exps:
        if e[0] == "http" and resp.status == int(e[1]) and (e[2] is None or resp.error_code == e[2]):
            return True
    return False


async def ws_outcome(ws, exps, timeout=3.0):
    """Read what the server answers; describe it and say if it matches."""
    want_reply = [e[1] for e in exps if e[0] == "reply"]
    want_error = [e[1] for e in exps if e[0] == "error"]
    want_close = [int(e[1]) for e in exps if e[0] == "close"]
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, f"no answer within {timeout}s; seen {seen}"
        try:
            m = await ws.recv(left)
        except asyncio.TimeoutError:
            return False, f"no answer within {timeout}s; seen {seen}"
        if m[0] == "eof":
            return False, f"connection ended without a close frame; seen {seen}"
        if m[0] == "close":
            return m[1] in want_close, f"close {m[1]} {m[2]!r}; seen {seen}"
        if m[0] != "text":
            seen.append(m)
            continue
        try:
            j = json.loads(m[1])
        except ValueError:
            seen.append(m[1])
            continue
        seen.append(j)
        if j.get("type") in want_reply:
            return True, j
        if j.get("type") == "error":
            if j.get("code") in want_error:
                # must stay open
                await ws.send_json({"type": "ping", "id": "after-error"})
                try:
                    p = await ws.recv_json(3)
                except asyncio.TimeoutError:
                    p = None
                ok = p is not None and p.get("type") == "pong" and p.get("id") == "after-error"
                return ok, f"{j}; then {'pong' if ok else p}"
            if not want_close:
                return False, j
            continue  # an error before the close is fine


async def run_case(t, d, c):
    kind = c["kind"]
    exps = c["expects"]
    label = f"{c['name']}: {c['desc']} -> {c['expect']}"
    try:
        if kind == "http":
            r = await http_raw(d.port, http_bytes(c["payload"], d))
            t.check(label, http_match(r, exps), r)
        elif kind == "token":
            tok = build_token(c["payload"], d)
            ws = await RawWS.open(d, tok=tok)
            r = ws.response()
            ws.close()
            t.check(label, http_match(r, exps), r)
        elif kind in ("ws-text", "ws-frames"):
            ws = await RawWS.open(d, tok=token("malformed"))
            if ws.status != 101:
                t.check(label, False, f"upgrade refused: {ws.response()}")
                return
            w = await ws.recv_json(3)
            if not w or w.get("type") != "welcome":
                t.check(label, False, f"no welcome: {w}")
                ws.close()
                return
            if kind == "ws-text":
                text = subst(c["payload"], d)
                if text.endswith("\n"):
                    text = text[:-1]
                await ws.send_text(text.encode("utf-8"))
            else:
                await ws.send_raw(frames_bytes(c["payload"], d))
            ok, detail = await ws_outcome(ws, exps)
            t.check(label, ok, detail)
            ws.close()
        else:
            t.check(label, False, f"unknown kind {kind}")
    except Exception as e:
        t.check(label, False, f"{type(e).__name__}: {e}")


async def test_malformed_table(t, d, args):
    files = sorted(glob.glob(os.path.join(args.source_dir, "tests", "data", "malformed", "*.case")))
    t.check("malformed: at least 30 cases in tests/data/malformed", len(files) >= 30, len(files))
    for f in files:
        try:
            c = load_case(f)
        except Exception as e:
            t.check(f"{os.path.basename(f)}: parses", False, e)
            continue
        await asyncio.wait_for(run_case(t, d, c), 10)
        if not d.alive():
            t.check(f"daemon still running after {c['name']}", False, d.stderr_tail())
            return
test_malformed_table.timeout = 240


if __name__ == "__main__":
    run([("malformed", FLAGS, [test_malformed_table])], file_timeout=280)
