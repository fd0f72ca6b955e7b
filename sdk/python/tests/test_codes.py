# SPDX-License-Identifier: MIT
"""Every error code presenced answers, as docs/api.md and docs/protocol.md
list them, has its constant in presenced.codes (as the Go SDK's Code...
constants and the Node SDK's ErrorCode / BackendErrorCode types): a caller
matching e.code had only string literals, misspelt without a word."""
import pathlib
import re

from presenced import codes

DOCS = pathlib.Path(__file__).resolve().parents[3] / "docs"


def _docs():
    return (DOCS / "api.md").read_text() + "\n" + (DOCS / "protocol.md").read_text()


def documented():
    text = _docs()
    want = set()
    # "| 400 | `bad_request` |", "400 `a`, `b`", "`503` `x`"
    for m in re.finditer(r"`?\b[45]\d\d\b`?(?: \|)? `([a-z_]+)`((?:(?:,| or|/)?\s*`[a-z_]+`)*)", text):
        want.add(m.group(1))
        want.update(re.findall(r"`([a-z_]+)`", m.group(2)))
    want.update(re.findall(r"`[45]\d\d ([a-z_]+)`", text))   # "`400 a`"
    # A browser's WebSocket refusals (/v1/ws): no SDK call gets them.
    want = {c for c in want if not c.startswith("token_") and c != "origin_not_allowed"}
    # protocol.md 5.2: the per-op and frame codes of a BackendConnection.
    sec = text[text.index("### 5.2 Batches"):text.index("### 5.3")]
    ops = {"open", "status", "close", "join", "update", "leave"}
    for row in re.findall(r"(?m)^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \|", sec):
        want.update(c for c in re.findall(r"`([a-z_]+)`", row) if c not in ops)
    return want


def test_every_documented_code_has_a_constant():
    want = documented()
    assert {"bad_origin", "session_owned", "rate_limited"} <= want and len(want) > 40, sorted(want)
    have = {v for k, v in vars(codes).items() if k.isupper() and isinstance(v, str)}
    assert sorted(want - have) == []


def test_each_constant_is_its_name():
    # NO_SESSION == "no_session": a constant that says another code than its
    # name would match the wrong errors.
    for k, v in vars(codes).items():
        if k.isupper():
            assert v == k.lower(), (k, v)
