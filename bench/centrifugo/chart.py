#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/centrifugo/chart.py RESULTS.json OUT.svg: presenced (blue) beside
Centrifugo (orange), one panel per row of bench/centrifugo/run.py; bar =
median of the interleaved rounds, whisker = min..max. Draws with
bench/chart.py's panels (standard library only)."""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import chart  # noqa: E402

ORANGE = "#e67e22"


def main():
    res = json.load(open(sys.argv[1]))
    panels = []
    for r in res["summary"]:
        p, c = r["presenced"], r["centrifugo"]
        bars = [("presenced", (p["median"], p["min"], p["max"]) if p else None,
                 chart.BLUE),
                ("centrifugo", (c["median"], c["min"], c["max"]) if c else None,
                 ORANGE)]
        title, _, unit = r["figure"].partition(" (")
        store = "Redis store / engine" if r["store"] == "redis" else "memory"
        # The store is on the panel's unit line; a title too long for a
        # panel (~30 characters at 13 px) leaves its tail to the note.
        if title.startswith("Redis: "):
            title = title[len("Redis: "):]
        head, _, tail = title.partition(", ")
        if head == "the same" and panels:
            # "the same, <what differs>": the row above's figure.
            title = head = panels[-1]["title"]
        elif len(title) > 30 and tail:
            title = head
        else:
            tail = ""
        rt = r["ratio"]
        if rt is None:
            rs = "presenced only"
        elif rt > 50 or rt < 0.02:
            rs = "Centrifugo's is ~0 here" if rt > 50 else "ratio < 0.02"
        else:
            rs = f"ratio {rt:g}"
        note = f"{r['better']} is better; {rs}" if rt is not None else rs
        panels.append(dict(
            title=title, unit=(unit.rstrip(")") + ", " if unit else "") + store,
            note=(tail + "; " if tail else "") + note,
            bars=bars, log=r["key"].startswith("rss") and False))
    rows = math.ceil(len(panels) / chart.COLS)
    W, top = chart.COLS * chart.PW + 20, 78
    svg = chart.Svg(W, top + rows * chart.PH + 20)
    m = res.get("machine", {})
    svg.text(14, 28, f"presenced vs Centrifugo {res['centrifugo']['module'].split('@')[-1]}, "
             f"{res.get('date')}", 18, weight="bold")
    svg.text(14, 48, f"{m.get('nproc')} cores (shared), load average "
             f"{m['loadavg_start'][0]:.1f} at start, {m['loadavg_end'][0]:.1f} "
             f"at end; bars: median of {res.get('rounds')} interleaved rounds, "
             "whiskers: min..max", 11.5, color="#444")
    svg.text(14, 66, "Blue: presenced (channels: join where Centrifugo's "
             "client subscribes; the list row: one user's 10,000 sessions). "
             "Orange: Centrifugo. Same load generator, same tokens.", 11.5,
             color="#444")
    for i, pnl in enumerate(panels):
        chart.panel(svg, 10 + (i % chart.COLS) * chart.PW,
                    top + (i // chart.COLS) * chart.PH, **pnl)
    with open(sys.argv[2], "w") as f:
        f.write(svg.render())


if __name__ == "__main__":
    main()
