#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Every function the public headers (include/*.h) declare is named in
docs/c-api.md or docs/man/libpresence.3, so a function added to a header
comes with its documentation. The names below were undocumented when this
check was written: a ratchet, not an allowance; document one and drop it
here (the check fails on a listed name that is documented, so the list only
shrinks). And every error code has a row in c-api.md's table of codes,
every member of presence_options_t one in its table of options, and each
prototype its code blocks show is the header's (parameter names aside).
Exits 1 and names each function and code missing.

    tests/docs/c_api.py [REPO_ROOT]
"""
import os
import re
import sys

UNDOCUMENTED = {
    "presence_availability_name", "presence_availability_parse",
    "presence_channel_check", "presence_cursor_copy", "presence_cursor_lag",
    "presence_epoch", "presence_redis_epoch", "presence_device_check",
    "presence_event_type_name", "presence_id_check", "presence_instance_id",
    "presence_message_check", "presence_reason_name", "presence_reason_parse",
    "presence_session_adopt", "presence_status_name", "presence_status_parse",
    "presence_redis_channel_shown", "presence_redis_cluster_stats",
    "presence_redis_debug_pause", "presence_redis_interest_free",
    "presence_redis_leave", "presence_redis_ready",
    "presence_store_memory_new",
}


def declared(path):
    """Names of the functions a header declares (a name followed by '('
    after its return type, at the start of a line: not calls in comments,
    not function-pointer members)."""
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
    return set(re.findall(r"^[a-z_][a-z0-9_ ]*[ *](presence_[a-z0-9_]+)\(",
                          text, flags=re.M))


def params_split(text):
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    return out + [cur]


def strip_param(a):
    """A parameter without its name (a function pointer's own parameters
    too)."""
    fp = re.match(r"(.*?)\(\s*\*\s*\w*\s*\)\s*\((.*)\)\s*$", a, re.S)
    if fp:
        inner = ", ".join(strip_param(x) for x in params_split(fp.group(2)))
        return " ".join(fp.group(1).replace("*", " * ").split()) + f" (*)({inner})"
    toks = re.findall(r"\w+|\.\.\.|[^\s\w]", a)
    if len(toks) > 1 and re.fullmatch(r"\w+", toks[-1]) and toks[-1] not in (
            "int", "char", "unsigned", "long", "void", "double"):
        toks = toks[:-1]
    return " ".join(toks)


def signature(decl):
    """A prototype without its parameters' names and spacing: what a
    caller must match."""
    name = re.search(r"(presence_\w+)\s*\(", decl)
    ret = " ".join(decl[:name.start()].replace("*", " * ").split())
    args = decl[name.end():decl.rindex(")")]
    return f"{ret} {name.group(1)}(" + ", ".join(strip_param(a) for a in params_split(args)) + ")"


PROTO = re.compile(r"^([a-z_][\w \*]*?\bpresence_\w+\s*\([^;{]*\))\s*;", re.M)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..")
    docs = ""
    for d in ("docs/c-api.md", "docs/man/libpresence.3"):
        with open(os.path.join(root, d), encoding="utf-8") as f:
            docs += f.read()
    inc = os.path.join(root, "include")
    bad = []
    for h in sorted(os.listdir(inc)):
        if not h.endswith(".h"):
            continue
        for name in sorted(declared(os.path.join(inc, h))):
            # A whole word: presence_redis_url_valid must not pass for
            # presence_redis_url_valid_x, nor the other way round.
            found = re.search(r"\b%s\b" % name, docs) is not None
            if not found and name not in UNDOCUMENTED:
                bad.append(f"include/{h}: {name} is not in docs/c-api.md "
                           "nor docs/man/libpresence.3")
            elif found and name in UNDOCUMENTED:
                bad.append(f"{name} is documented now: drop it from "
                           "UNDOCUMENTED in tests/docs/c_api.py")
    # Each prototype a ```c block of c-api.md shows is the header's, names
    # of parameters aside ("..." for parameters left out matches any).
    headers = ""
    for h in sorted(os.listdir(inc)):
        if h.endswith(".h"):
            with open(os.path.join(inc, h), encoding="utf-8") as f:
                headers += re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
    real = {}
    for m in PROTO.finditer(headers):
        sig = signature(m.group(1))
        real.setdefault(re.search(r"presence_\w+", sig).group(0), set()).add(sig)
    with open(os.path.join(root, "docs/c-api.md"), encoding="utf-8") as f:
        capi = f.read()
    for block in re.findall(r"```c\n(.*?)```", capi, re.S):
        for m in PROTO.finditer(re.sub(r"/\*.*?\*/", "", block, flags=re.S)):
            sig = signature(m.group(1))
            name = re.search(r"presence_\w+", sig).group(0)
            if "(...)" in sig:
                continue
            if sig not in real.get(name, ()):
                bad.append(f"docs/c-api.md: {sig}\n    the header: "
                           f"{' | '.join(sorted(real.get(name, ['(none)'])))}")
    # Every error code of PRESENCE_ERRNO_MAP has a row in section 2's table
    # of codes, where a caller looks up what a return value means.
    with open(os.path.join(inc, "presence.h"), encoding="utf-8") as f:
        codes = re.findall(r"XX\((E[A-Z]+),", f.read())
    with open(os.path.join(root, "docs/c-api.md"), encoding="utf-8") as f:
        rows = "\n".join(l for l in f if l.startswith("| `PRESENCE_E"))
    for code in codes:
        if f"`PRESENCE_{code}`" not in rows:
            bad.append(f"include/presence.h: PRESENCE_{code} has no row in the table of "
                       "codes of docs/c-api.md section 2")
    # Every member of presence_options_t has a row in section 3's table of
    # options (a function-pointer member by its name too).
    with open(os.path.join(inc, "presence.h"), encoding="utf-8") as f:
        m = re.search(r"typedef struct presence_options \{(.*?)\} presence_options_t;",
                      f.read(), re.S)
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    options = re.findall(r"(\w+)\s*;", body) + re.findall(r"\(\s*\*\s*(\w+)\s*\)", body)
    with open(os.path.join(root, "docs/c-api.md"), encoding="utf-8") as f:
        text = f.read()
    sec = text[text.index("## 3. Lifecycle"):text.index("## 4. Callbacks")]
    rows = [l.split("|")[1] for l in sec.splitlines() if l.startswith("| `")]
    for o in options:
        if not any(re.search(r"`%s[`.]" % o, r) for r in rows):
            bad.append(f"include/presence.h: presence_options_t.{o} has no row in the table "
                       "of options of docs/c-api.md section 3")
    # Every event type (src/core/names.c) is named, as it is spelt.
    with open(os.path.join(root, "src/core/names.c"), encoding="utf-8") as f:
        types = re.findall(r'"((?:session|user|channel)\.[a-z]+|cleanup)"', f.read())
    for t in types:
        if f"`{t}`" not in text:
            bad.append(f"src/core/names.c: the event type {t} is not in docs/c-api.md")
    for b in bad:
        print(b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
