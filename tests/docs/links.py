#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Every relative link in the project's Markdown leads somewhere: the file
exists, and an anchor (#...) names a heading of that file, spelled as GitHub
makes it (lower case, punctuation dropped, spaces to hyphens; a repeated
heading gets -1, -2, ...). Links inside code blocks and code spans are not
links. And every document under docs/ is linked from docs/README.md, the
index; numbered sections count without a gap; the pictures of docs/img
show what their Graphviz sources say. Exits 1 and names each problem.

    tests/docs/links.py [REPO_ROOT]
"""
import html
import os
import re
import sys

SKIP_DIRS = {".git", "node_modules", "fuzz-corpus"}


def anchor(title):
    t = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return t.replace(" ", "-")


_HEADINGS = {}  # path -> its anchors, read once


def headings(path):
    if path not in _HEADINGS:
        seen, out, fence = {}, set(), False
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("```"):
                    fence = not fence
                elif not fence and re.match(r"#{1,6} ", line):
                    a = anchor(line.lstrip("#"))
                    n = seen.get(a, 0)
                    seen[a] = n + 1
                    out.add(a if n == 0 else f"{a}-{n}")
        _HEADINGS[path] = out
    return _HEADINGS[path]


def markdown_files(root):
    for d, dirs, files in os.walk(root):
        # Build trees (build, build-asan, ...) hold copies and downloads.
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS
                   and not x.startswith("build")]
        for f in files:
            if f.endswith(".md"):
                yield os.path.join(d, f)


def broken_links(root, paths):
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        text = re.sub(r"```.*?```", "", text, flags=re.S)
        text = re.sub(r"`[^`\n]*`", "", text)
        for m in re.finditer(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
            url = m.group(1)
            if re.match(r"[a-zA-Z][a-zA-Z+.-]*:", url):
                continue  # http:, https:, mailto:
            target, _, frag = url.partition("#")
            dest = (os.path.normpath(os.path.join(os.path.dirname(path), target))
                    if target else path)
            rel = os.path.relpath(path, root)
            if not os.path.exists(dest):
                yield f"{rel}: {url}: no such file"
            elif frag and dest.endswith(".md") and frag not in headings(dest):
                yield f"{rel}: {url}: no such heading"


def unindexed(root):
    """The documents under docs/ that docs/README.md, the index, does not
    link: a reader who starts there never finds them."""
    index = os.path.join(root, "docs", "README.md")
    with open(index, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    linked = {os.path.normpath(os.path.join(root, "docs", m.group(1).partition("#")[0]))
              for m in re.finditer(r"\]\(([^)\s]+)\)", text)}
    for path in sorted(markdown_files(os.path.join(root, "docs"))):
        if path != index and os.path.normpath(path) not in linked:
            yield f"docs/README.md: {os.path.relpath(path, root)} is not in the index"


def bad_sections(root, paths):
    """A document's numbered sections ("## 3. Limits", "### 4.3 Server
    messages") count from 1 without a gap, and its "section N" names one of
    them: a reader sent to section 2 finds it."""
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
        nums = re.findall(r"^#{2,4} (\d+[a-z]?(?:\.\d+)*)\.? ", text, flags=re.M)
        if not nums:
            continue
        rel = os.path.relpath(path, root)
        top = [int(n) for n in nums if re.fullmatch(r"\d+", n)]
        if top != list(range(1, len(top) + 1)):
            yield f"{rel}: its sections are numbered {top}"
        for m in re.finditer(r"\bsection (\d+[a-z]?(?:\.\d+)*)", text):
            # Only this document's: "protocol.md 6.1" or "c-api.md section
            # 8" name another's.
            before = text[max(0, m.start() - 40):m.start()]
            if re.search(r"\.md\)?,? *$", before):
                continue
            if m.group(1) not in nums:
                line = text[:m.start()].count("\n") + 1
                yield f"{rel}:{line}: section {m.group(1)}: no such section"


def stale_pictures(root):
    """Each picture of docs/img is drawn from its Graphviz source: every
    line of every label in the .dot is a text of the committed .svg, so a
    source changed without `make docs-images` shows the old picture."""
    img = os.path.join(root, "docs", "img")
    for name in sorted(os.listdir(img)):
        if not name.endswith(".dot"):
            continue
        with open(os.path.join(img, name), encoding="utf-8") as f:
            dot = f.read()
        svg_path = os.path.join(img, name[:-4] + ".svg")
        if not os.path.exists(svg_path):
            yield f"docs/img/{name}: no {name[:-4]}.svg drawn from it"
            continue
        with open(svg_path, encoding="utf-8") as f:
            texts = {" ".join(html.unescape(t).split())
                     for t in re.findall(r">([^<>]*)</text>", f.read())}
        for label in re.findall(r'label="((?:[^"\\]|\\.)*)"', dot):
            for line in re.split(r"\\[nlr]", label):
                line = " ".join(line.replace('\\"', '"').split())
                if line and line not in texts:
                    yield f"docs/img/{name}: \"{line}\" is not in {name[:-4]}.svg (make docs-images)"


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), "..", ".."))
    paths = sorted(markdown_files(root))
    bad = list(broken_links(root, paths)) + list(unindexed(root)) + \
        list(bad_sections(root, paths)) + list(stale_pictures(root))
    for b in bad:
        print(b)
    print(f"{len(paths)} Markdown files, {len(bad)} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
