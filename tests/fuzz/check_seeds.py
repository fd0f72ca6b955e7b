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

  check_seeds.py --presenced BUILD/presenced --source-dir SRC
"""
import argparse
import os
import re
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
    env = dict(os.environ, FUZZ_SEEDS_OUT=out)
    subprocess.run([sys.executable, os.path.join(fuzz, "make_seeds.py")], env=env,
                   check=True, stdout=subprocess.DEVNULL)
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
