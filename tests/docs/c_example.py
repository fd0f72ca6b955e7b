#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The C the documents show is examples/basic_usage.c, and it builds.

docs/c-api.md section 9 says its complete example is examples/basic_usage.c
without its printing, and README.md's tour step 4 quotes the same file: the
code of each (comments aside) must be the file's, in its order, so that a
change to one shows in the other. Then section 9's example is compiled as a
reader would, against the library that was built (-Wall -Werror), and run:
it must exit 0.

    tests/docs/c_example.py --cc cc --include include --lib build/libpresence.a

Exits 1 and names the first token of an example the file does not have, or
the compiler's complaint.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def tokens(c):
    c = re.sub(r"/\*.*?\*/", " ", c, flags=re.S)
    return re.findall(r"\w+|->|&&|\|\||[^\s\w]", c)


def missing(example, source):
    """The first token of example (and its place) that source does not have
    in order, or None when example is source with lines left out."""
    it, have = 0, tokens(source)
    want = tokens(example)
    for i, t in enumerate(want):
        while it < len(have) and have[it] != t:
            it += 1
        if it == len(have):
            return " ".join(want[max(0, i - 8):i + 1])
        it += 1
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cc", default="cc")
    ap.add_argument("--include", default=os.path.join(ROOT, "include"))
    ap.add_argument("--lib", required=True, help="the built libpresence.a")
    ap.add_argument("--cflags", default="", help="the build's own (a sanitizer's)")
    a = ap.parse_args()
    with open(os.path.join(ROOT, "examples", "basic_usage.c"), encoding="utf-8") as f:
        source = f.read()
    with open(os.path.join(ROOT, "docs", "c-api.md"), encoding="utf-8") as f:
        capi = f.read()
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    sec = re.search(r"^## 9\. A complete example.*?```c\n(.*?)```", capi, re.S | re.M)
    tour = re.search(r"^4\. Embed the library.*?```c\n(.*?)```", readme, re.S | re.M)
    bad = []
    if not sec or not tour:
        print("c_example.py: c-api.md section 9 or README's step 4 has no ```c block: "
              "the check needs updating")
        return 1
    for name, block in (("docs/c-api.md section 9", sec.group(1)),
                        ("README.md tour step 4", tour.group(1))):
        m = missing(block, source)
        if m:
            bad.append(f"{name}: not in examples/basic_usage.c from here: ... {m}")
    with tempfile.TemporaryDirectory(prefix="docs-c-example-") as tmp:
        src, exe = os.path.join(tmp, "app.c"), os.path.join(tmp, "app")
        with open(src, "w", encoding="utf-8") as f:
            f.write(sec.group(1))
        cc = subprocess.run([a.cc, "-std=c11", "-Wall", "-Werror", *a.cflags.split(), "-I",
                             a.include, src, a.lib, "-o", exe], capture_output=True, text=True)
        if cc.returncode:
            bad.append("docs/c-api.md section 9 does not build:\n" + cc.stderr[-2000:])
        else:
            run = subprocess.run([exe], capture_output=True, text=True, timeout=30)
            if run.returncode:
                bad.append(f"docs/c-api.md section 9 exits {run.returncode}: {run.stderr[-500:]}")
    for b in bad:
        print(b)
    print(f"{len(bad)} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
