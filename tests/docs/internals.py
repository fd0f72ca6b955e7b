#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The internals documents describe the tree as it is: every source file of
src/core, src/server and src/store is named in the document of its part
(a file added without a line there is a room nobody can find), and every
file and identifier they name in a code span exists (a function renamed or
removed leaves the reader grepping for nothing).

    tests/docs/internals.py [REPO_ROOT]

Exits 1 and names each file missing from its document and each name of a
document found nowhere in the tree. README.md's Layout is checked the same
way: the paths it names exist, and every folder of src/ and tests/ is
named; and a code span of the documents a newcomer reads that is a path of
the tree names a file or folder that exists.
"""
import os
import re
import sys

# Which document describes which source files.
PARTS = [
    ("docs/internals/core.md", "src/core", r".*\.[ch]$"),
    ("docs/internals/core.md", "src/store", r"memory\.c$"),
    ("docs/internals/server.md", "src/server", r".*\.c$"),
    ("docs/internals/redis.md", "src/store", r"redis.*\.c$"),
]
DOCS = ["docs/internals/core.md", "docs/internals/server.md", "docs/internals/redis.md",
        "docs/internals/backend.md"]
# Where a name of the documents may live.
TREE = ["src", "include", "tests", "bench", "CMakeLists.txt", "Makefile", "scripts"]
# Names of libraries the documents mention beside ours (libuv's handle
# types: `uv_check`; hiredis's), not ours to find.
FOREIGN = re.compile(r"^uv_")
# Names that are not the tree's by design: Redis's Lua API, hiredis's TLS
# library, a field of a reply described in words.
OTHER = {"replicate_commands", "hiredis_ssl", "n_events"}


def tree_text(root):
    chunks = []  # the files' text, and their names (a test is named by its file)
    for top in TREE:
        path = os.path.join(root, top)
        if os.path.isfile(path):
            paths = [path]
        else:
            paths = [os.path.join(d, f) for d, dirs, files in os.walk(path)
                     for f in files if not d.split(os.sep)[-1].startswith("build")
                     and re.search(r"\.(c|h|lua|py|js|cmake|txt|sh)$", f)]
        for p in paths:
            if "/corpus/" in p or "/data/fuzz/" in p or "/node_modules/" in p:
                continue
            chunks.append(os.path.splitext(os.path.basename(p))[0])
            with open(p, encoding="utf-8", errors="replace") as f:
                chunks.append(f.read())
    return "\n".join(chunks)


def layout(root):
    """README.md's Layout: each path it names exists, and the folders of
    tests/ and src/ are all named (a suite nobody knows of is not run)."""
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    m = re.search(r"^## Layout\n+```\n(.*?)```", readme, re.S | re.M)
    if not m:
        yield "README.md: no Layout block"
        return
    block = m.group(1)
    named = set()
    for line in block.splitlines():
        top = re.match(r"([\w/.,-]+(?:, [\w/.,-]+)*)\s{2,}", line)
        for p in re.split(r",\s*", top.group(1)) if top else []:
            named.add(p.rstrip("/"))
            if not os.path.exists(os.path.join(root, p)):
                yield f"README.md Layout: {p}: no such path"
    # The folders named inside the descriptions ("unit/ (cmocka), ...").
    for d in ("tests", "src"):
        for sub in sorted(os.listdir(os.path.join(root, d))):
            full = os.path.join(root, d, sub)
            if os.path.isdir(full) and not sub.startswith(("build", "__")) \
                    and f"{d}/{sub}" not in named and not re.search(
                        r"(?<![\w/])" + re.escape(sub) + r"/", block):
                yield f"README.md Layout: {d}/{sub}/ is not named"


# The documents a newcomer reads, whose paths are checked too.
READER_DOCS = ["README.md", "docs/getting-started.md", "docs/concepts.md", "docs/c-api.md",
               "docs/webhooks.md", "docs/security.md", "docs/guides/meteor.md",
               "docs/guides/socketio.md"] + DOCS


_NAMES = set()


def basenames(root):
    if not _NAMES:
        for d, dirs, files in os.walk(root):
            dirs[:] = [x for x in dirs if not x.startswith(("build", ".")) and
                       x not in ("node_modules", "corpus")]
            _NAMES.update(files)
    return _NAMES


def paths_named(root):
    """A code span that is a path of the tree (`bench/engine.c`,
    `tests/docs/`) names something that exists: a reader opens it."""
    top = r"(?:src|include|tests|bench|examples|scripts|contrib|sdk|clients|web|docs)"
    for doc in READER_DOCS:
        with open(os.path.join(root, doc), encoding="utf-8") as f:
            text = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"),
                          f.read(), flags=re.S)
        for m in re.finditer(r"`(" + top + r"/[\w./-]*)`", text):
            if not os.path.exists(os.path.join(root, m.group(1))):
                line = text[:m.start()].count("\n") + 1
                yield f"{doc}:{line}: {m.group(1)}: no such file or folder"
        # A file named alone (`test_hostile.py`, `webhook_spec.c`): some
        # file of the tree has that name.
        for m in re.finditer(r"`([\w-]+\.(?:c|h|py|js|sh|lua))`", text):
            if m.group(1) not in basenames(root):
                line = text[:m.start()].count("\n") + 1
                yield f"{doc}:{line}: {m.group(1)}: no file of the tree has this name"


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), "..", ".."))
    bad = []
    for doc, src, pattern in PARTS:
        with open(os.path.join(root, doc), encoding="utf-8") as f:
            text = f.read()
        for name in sorted(os.listdir(os.path.join(root, src))):
            if re.match(pattern, name) and not re.search(r"(?<![\w/.])" + re.escape(name)
                                                          + r"(?![\w])", text) \
                    and f"{src}/{name}" not in text:
                bad.append(f"{doc}: {src}/{name} is not named")
    tree = tree_text(root)
    words = set(re.findall(r"\b\w+\b", tree))
    for doc in DOCS:
        with open(os.path.join(root, doc), encoding="utf-8") as f:
            text = f.read()
        for line_no, line in enumerate(text.splitlines(), 1):
            for m in re.finditer(r"`([^`]+)`", line):
                code = m.group(1)
                # A file of ours.
                for path in re.findall(r"\b((?:src|include|tests|bench)/[\w/.-]+\.\w+)", code):
                    if not os.path.exists(os.path.join(root, path)):
                        bad.append(f"{doc}:{line_no}: {path}: no such file")
                # An identifier: lower-case words joined by underscores (a
                # function, a type, a member), or a call written name().
                for name in re.findall(r"\b([a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?:\(\))?", code):
                    # tests/CMakeLists.txt names a suite's run over shards
                    # ${name}_shards.
                    if name.endswith("_shards") and name[:-len("_shards")] in words:
                        continue
                    if not FOREIGN.match(name) and name not in OTHER and name not in words:
                        bad.append(f"{doc}:{line_no}: `{name}` is nowhere in the tree")
    bad += list(layout(root))
    bad += list(paths_named(root))
    for b in bad:
        print(b)
    print(f"{len(bad)} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
