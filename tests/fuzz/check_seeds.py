#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The fuzz seeds are what make_seeds.py writes, and its webhook seeds reach
past the secret's length check.

make_seeds.py is run into a temporary directory: every seed it writes must be
committed under tests/fuzz/corpus/ with the same bytes (rerun it and commit
after changing it). Then each configuration seed holding a webhook (a
--webhook flag or PRESENCED_WEBHOOK) is given to presenced --check-config,
argv and environment as fuzz_config reads them: presenced refuses a webhook
secret under 32 bytes (1435475), and seeds whose secrets are all that short
only ever exercise the refusal. A seed whose secrets are all 32 bytes or more
must not be refused as too short, and some seeds must be accepted.

The secrets the seeds are signed with are the harnesses' own: the JWT
secrets of make_seeds.py are fuzz_jwt.c's SECRETS, in order, and its
SECRET and API_KEY are fuzz_http.c's --jwt-secret and --api-key, each at
least presenced's minimum of 32 bytes (a token signed with another secret
only ever reaches the signature check).

  check_seeds.py --presenced BUILD/presenced --source-dir SRC
"""
import argparse
import os
import re
import runpy
import subprocess
import sys
import tempfile

ap = argparse.ArgumentParser()
ap.add_argument("--presenced", required=True)
ap.add_argument("--source-dir", required=True)
args = ap.parse_args()
fuzz = os.path.join(args.source_dir, "tests", "fuzz")
failed = []


def fail(msg):
    failed.append(msg)
    print("FAIL:", msg)


with tempfile.TemporaryDirectory() as out:
    os.environ["FUZZ_SEEDS_OUT"] = out
    made = runpy.run_path(os.path.join(fuzz, "make_seeds.py"), run_name="make_seeds")
    del os.environ["FUZZ_SEEDS_OUT"]
    seeds = {}
    for harness in sorted(os.listdir(out)):
        for name in sorted(os.listdir(os.path.join(out, harness))):
            with open(os.path.join(out, harness, name), "rb") as f:
                data = f.read()
            committed = os.path.join(fuzz, "corpus", harness, name)
            try:
                with open(committed, "rb") as f:
                    same = f.read() == data
            except FileNotFoundError:
                same = False
            if not same:
                fail(f"corpus/{harness}/{name} is not committed as make_seeds.py writes it")
            if harness == "fuzz_config":
                seeds[name] = data



def c_strings(text):
    """The bytes of each C string literal expression (adjacent literals
    joined) in text, by the escapes the harnesses use."""
    out = []
    for m in re.finditer(r'(?:"(?:[^"\\\n]|\\.)*"\s*)+', text):
        pieces = re.findall(r'"((?:[^"\\\n]|\\.)*)"', m.group(0))
        out.append(b"".join(p.encode("latin-1").decode("unicode_escape").encode("latin-1")
                            for p in pieces))
    return out


with open(os.path.join(fuzz, "fuzz_jwt.c")) as f:
    jwt_src = f.read()
table = re.search(r"SECRETS\[\d+\] = \{(.*?)\n\};", jwt_src, re.S)
harness = [c_strings(m)[0] for m in re.findall(r'S\(((?:\s*"(?:[^"\\\n]|\\.)*")+)\)',
                                                table.group(1))] if table else []
if harness != made["JWT_SECRETS"]:
    fail("make_seeds.py's JWT_SECRETS are not fuzz_jwt.c's SECRETS (in order)")
for k in made["JWT_SECRETS"]:
    if len(k) < 32:
        fail(f"a JWT secret of {len(k)} bytes: presenced refuses it (32 at least)")
with open(os.path.join(fuzz, "fuzz_http.c")) as f:
    http_src = f.read()
for field, want in (("api_key", made["API_KEY"].encode()), ("jwt_secret", made["SECRET"])):
    m = re.search(r'cfg\.%s =((?:\s*"(?:[^"\\\n]|\\.)*")+);' % field, http_src)
    if not m or c_strings(m.group(1))[0] != want:
        fail(f"fuzz_http.c's cfg.{field} is not make_seeds.py's")
    elif len(want) < 32:
        fail(f"fuzz_http.c's cfg.{field} is {len(want)} bytes: presenced refuses it")

accepted = 0
hooks = 0
for name, data in seeds.items():
    argv, envs = [], {}
    for part in data.decode().split("\0"):
        if part.startswith("="):
            k, _, v = part[1:].partition("=")
            envs[k] = v
        elif part:
            argv.append(part)
    specs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--webhook"]
    specs += [a[len("--webhook="):] for a in argv if a.startswith("--webhook=")]
    specs += [v for k, v in envs.items() if k == "PRESENCED_WEBHOOK"]
    if not specs:
        continue
    hooks += 1
    secrets = [m.group(1) for s in specs for m in re.finditer(r"(?:^|,)secret=([^,]*)", s)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **envs}
    r = subprocess.run([args.presenced, *argv, "--check-config"], env=env,
                       capture_output=True, text=True, timeout=20)
    short = "secret: too short" in r.stderr
    print(f"{name}: exit {r.returncode}{' (secret too short)' if short else ''}")
    if r.returncode == 0:
        accepted += 1
    if short and all(len(s) >= 32 for s in secrets):
        fail(f"{name}: refused as too short with secrets of {[len(s) for s in secrets]} bytes")
if hooks == 0:
    fail("no configuration seed holds a webhook")
if accepted == 0:
    fail(f"none of the {hooks} webhook seeds is accepted: they only exercise a refusal")
print(f"{hooks} webhook seeds, {accepted} accepted by presenced --check-config")
sys.exit(1 if failed else 0)
