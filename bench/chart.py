#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""bench/chart.py RESULTS.json OUT.svg: one SVG page of a bench run.

One panel per figure: presenced (blue) next to its baseline of the same run
(grey: bench/echo, or the bare table for the engine), bar = median of the
repeats, whisker = min..max of the repeats, dashed red line = the
target where there is one, and the ratio to the baseline in the panel's
subtitle. Standard library only, so it runs wherever the bench runs.
"""
import json
import math
import sys
from xml.sax.saxutils import escape

BLUE, GREY, RED, INK = "#3867b0", "#a6a6a6", "#c0392b", "#222"
PW, PH = 270, 250          # panel size
COLS = 4


def get(run, key):
    for part in key.split("."):
        run = run.get(part) if isinstance(run, dict) else None
    return run if isinstance(run, (int, float)) and run >= 0 else None


def stats(runs, key):
    vals = sorted(v for v in (get(r, key) for r in runs) if v is not None)
    if not vals:
        return None
    n = len(vals)
    med = vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2
    return med, vals[0], vals[-1]


def fmt(v):
    if v is None:
        return "n/a"
    if v == 0:
        return "0"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e4:
        return f"{v / 1e3:.1f} k"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


class Svg:
    def __init__(self, w, h):
        self.w, self.h, self.out = w, h, []

    def text(self, x, y, s, size=11, anchor="start", weight="normal",
             color=INK):
        self.out.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" '
            f'text-anchor="{anchor}" font-weight="{weight}" fill="{color}">'
            f'{escape(str(s))}</text>')

    def rect(self, x, y, w, h, fill, stroke="none", opacity=1.0):
        self.out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
                        f'height="{h:.1f}" fill="{fill}" stroke="{stroke}" '
                        f'fill-opacity="{opacity}"/>')

    def line(self, x1, y1, x2, y2, color=INK, width=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" '
                        f'y2="{y2:.1f}" stroke="{color}" '
                        f'stroke-width="{width}"{d}/>')

    def render(self):
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" '
                f'height="{self.h}" viewBox="0 0 {self.w} {self.h}" '
                'font-family="DejaVu Sans, Helvetica, Arial, sans-serif">\n'
                f'<rect width="100%" height="100%" fill="white"/>\n'
                + "\n".join(self.out) + "\n</svg>\n")


def panel(svg, px, py, title, unit, bars, target=None, target_label=None,
          log=False, note=None):
    """bars: [(label, (median, lo, hi) or None, colour)]"""
    svg.rect(px + 4, py + 4, PW - 8, PH - 8, "#fafafa", "#dddddd")
    svg.text(px + 14, py + 24, title, 13, weight="bold")
    if note:
        svg.text(px + 14, py + 40, note, 10.5, color="#555")
    x0, x1 = px + 52, px + PW - 16
    # Plot bottom and top; a target's legend takes a line above the plot.
    y0, y1 = py + PH - 42, py + (86 if target else 72)
    vals = [b[1][2] for b in bars if b[1]] + ([target] if target else [])
    vmax = max(vals) if vals else 1
    if log:
        vmin = min([b[1][1] for b in bars if b[1] and b[1][1] > 0] +
                   ([target] if target else []) + [vmax])
        lo = 10 ** math.floor(math.log10(vmin)) if vmin > 0 else 0.01
        hi = 10 ** math.ceil(math.log10(vmax * 1.05))

        def ypos(v):
            v = max(v, lo)
            return y0 - (math.log10(v) - math.log10(lo)) / \
                (math.log10(hi) - math.log10(lo)) * (y0 - y1)
        ticks = [10 ** e for e in range(int(math.log10(lo)),
                                        int(math.log10(hi)) + 1)]
    else:
        hi = vmax * 1.15 or 1
        step = 10 ** math.floor(math.log10(hi))
        if hi / step < 3:
            step /= 2

        def ypos(v):
            return y0 - v / hi * (y0 - y1)
        ticks = [i * step for i in range(int(hi / step) + 1)]
    for t in ticks:
        y = ypos(t)
        svg.line(x0, y, x1, y, "#e4e4e4")
        svg.text(x0 - 5, y + 4, fmt(t), 9.5, "end", color="#666")
    svg.line(x0, y0, x1, y0, "#888")
    svg.text(px + 14, py + 54, unit, 10, color="#666")
    n = len(bars)
    slot = (x1 - x0) / max(n, 1)
    bw = min(56, slot * 0.6)
    # The target first: the bars and their value labels go over it.
    if target:
        y = ypos(target)
        svg.line(x0, y, x1, y, RED, 1.5, "5,4")
        label = target_label or f"target {fmt(target)}"
        # A legend line of its own above the plot, with a sample of the
        # line: on the line itself it ran into the bars' value labels.
        svg.line(x1 - len(label) * 5.6 - 30, py + 66, x1 - len(label) * 5.6 - 8,
                 py + 66, RED, 1.5, "5,4")
        svg.text(x1, py + 69, label, 9.5, "end", color=RED)

    # Value labels (about 6 px per character at 10.5 px) wider than a slot
    # would run into their neighbours: every other one is raised a line.
    widest = max([len(fmt(b[1][0])) for b in bars if b[1]] or [0]) * 6.2
    stagger = widest > slot - 4
    for i, (label, st, colour) in enumerate(bars):
        cx = x0 + slot * (i + 0.5)
        svg.text(cx, y0 + 15, label, 10.5, "middle")
        if not st:
            svg.text(cx, y0 - 8, "n/a", 10, "middle", color="#888")
            continue
        med, lo_v, hi_v = st
        yt = ypos(med)
        svg.rect(cx - bw / 2, yt, bw, y0 - yt, colour)
        if hi_v > lo_v:
            svg.line(cx, ypos(lo_v), cx, ypos(hi_v), INK, 1.2)
            svg.line(cx - 5, ypos(hi_v), cx + 5, ypos(hi_v), INK, 1.2)
            svg.line(cx - 5, ypos(lo_v), cx + 5, ypos(lo_v), INK, 1.2)
        raise_by = 12 if stagger and i % 2 else 0
        ty = min(yt, ypos(hi_v)) - 5 - raise_by
        # On a white box, so a target line behind stays out of the digits.
        w = len(fmt(med)) * 6.4 + 4
        svg.rect(cx - w / 2, ty - 10, w, 13, "white", opacity=0.85)
        svg.text(cx, ty, fmt(med), 10.5, "middle", "bold")

def ratio(a, b):
    return f"{a[0] / b[0]:.2f}" if a and b and b[0] else "n/a"


def of_echo(e, k):
    """A target that is a ratio to the echo (issue 21): drawn at k times the
    echo's median of the same run."""
    if not e:
        return {}
    return dict(target=k * e[0], target_label=f"target {k} x echo")


def main():
    res = json.load(open(sys.argv[1]))
    sc = res["scenarios"]

    def pe(name, key):
        s = sc.get(name, {})
        return stats(s.get("presenced", []), key), stats(s.get("echo", []), key)

    panels = []
    p, e = pe("idle", "connect_rate_per_s")
    panels.append(dict(title="Connect storm", unit="sessions/s (to welcome)",
                       note=f"10k sessions; ratio to echo {ratio(p, e)}",
                       bars=[("presenced", p, BLUE), ("echo", e, GREY)],
                       **of_echo(e, 0.8)))
    p, e = pe("churn", "cycles_per_s")
    panels.append(dict(title="Churn", unit="connect+close cycles/s",
                       note=f"200 slots; ratio to echo {ratio(p, e)}",
                       bars=[("presenced", p, BLUE), ("echo", e, GREY)]))
    p, e = pe("flip", "changes_per_s")
    panels.append(dict(title="Flip throughput (wall clock)",
                       unit="status changes/s end to end",
                       note=f"1000 conns; ratio to echo {ratio(p, e)}",
                       bars=[("presenced", p, BLUE), ("echo", e, GREY)],
                       **of_echo(e, 0.9)))
    p, e = pe("flip", "changes_per_server_cpu_s")
    panels.append(dict(title="Flip per server CPU-second",
                       unit="changes per CPU-s of the server",
                       note=f"noise-proof capacity; ratio {ratio(p, e)}",
                       bars=[("presenced", p, BLUE), ("echo", e, GREY)],
                       **of_echo(e, 0.9)))
    lat = []
    for q in ("p50", "p99", "p999"):
        p, e = pe("latency", f"latency_ms.{q}")
        lat += [(f"{q}", p, BLUE), (f"{q}", e, GREY)]
    panels.append(dict(title="Status to presence delay", unit="ms (log scale)",
                       note="10k changes/s; blue presenced, grey echo",
                       bars=lat, target=5, target_label="target p99 < 5 ms",
                       log=True))
    p, e = pe("reconnect", "reconnect_rate_per_s")
    ov = max((r.get("listen_overflows_delta", 0)
              for r in sc.get("reconnect", {}).get("presenced", [])),
             default="n/a")
    panels.append(dict(title="Reconnect after restart",
                       unit="sessions back/s (10k clients)",
                       note=f"ListenOverflows +{ov}; ratio {ratio(p, e)}",
                       bars=[("presenced", p, BLUE), ("echo", e, GREY)],
                       target=10000, target_label="target 10 k/s"))
    p, e = pe("idle", "rss_per_conn_bytes")
    scale = stats(sc.get("scale", {}).get("presenced", []),
                  "rss_per_conn_bytes")
    sn = (sc.get("scale", {}).get("presenced") or [{}])[0].get("ready", 0)
    panels.append(dict(title="Idle memory", unit="server RSS bytes/connection",
                       note=f"10k held; {sn // 1000}k (scale) in 3rd bar",
                       bars=[("presenced", p, BLUE), ("echo", e, GREY),
                             (f"pd {sn // 1000}k", scale, BLUE)],
                       target=1000, target_label="target 1,000 B (10k)"))
    # The engine's operations apart (issue 21): 100,000 sessions, one per
    # user, each kind timed alone; the bare table's insert beside them.
    e1 = res.get("engine", {}).get("1_per_user_100k") or {}
    ops, tab = e1.get("ops_per_s") or {}, e1.get("table_ops_per_s") or {}

    def mlh(d):
        return (d["median"], d["min"], d["max"]) if d else None
    panels.append(dict(title="Core engine (bench_engine)",
                       unit="operations/s, one core",
                       note=("100k sessions, 1 per user; "
                             f"{e1.get('heap_bytes_per_session', 'n/a')} B each"
                             if e1 else "skipped"),
                       bars=[("connect", mlh(ops.get("connect")), BLUE),
                             ("status", mlh(ops.get("status_by_handle")), BLUE),
                             ("discon.", mlh(ops.get("disconnect_by_handle")),
                              BLUE),
                             ("table", mlh(tab.get("insert")), GREY)],
                       target=3e6 if e1 else None,
                       target_label="target: connect 3 M/s"))

    rows = math.ceil(len(panels) / COLS)
    W, top = COLS * PW + 20, 78
    svg = Svg(W, top + rows * PH + 56)
    m = res.get("machine", {})
    svg.text(14, 28, f"presenced benchmarks, {res.get('date')}", 18,
             weight="bold")
    la = m.get("loadavg_start", [0])[0], m.get("loadavg_end", [0])[0]
    svg.text(14, 48, f"{m.get('nproc')} cores (shared), kernel "
             f"{m.get('kernel')}, load average {la[0]:.1f} at start, "
             f"{la[1]:.1f} at end; bars: median of {res.get('repeats')} "
             "runs, whiskers: min..max", 11.5, color="#444")
    svg.text(14, 66, "Blue: presenced (memory store). Grey: its baseline in "
             "the same run (bench/echo, a bare libuv WebSocket echo; the "
             "bare table's insert for the engine). Dashed red: target.", 11.5,
             color="#444")
    for i, pnl in enumerate(panels):
        panel(svg, 10 + (i % COLS) * PW, top + (i // COLS) * PH, **pnl)
    summ = res.get("summary", {})
    fr = summ.get("flip_changes_per_s_redis_store")
    if fr:
        # a partial run (run.py --only) may have no embedded-store flip
        of = (f"{fr['ratio']:.2f} of the embedded store; "
              if fr.get("ratio") is not None else "")
        line = (f"presenced on the Redis store, flip: {fr['redis']:,.0f} "
                f"changes/s ({of}redis-server at "
                f"{fr['redis_server_cpu_share']:.2f} of a core)")
    else:
        line = ("presenced on the Redis store: "
                + str(res.get("redis", {}).get("skipped", "see JSON")))
    svg.text(14, top + rows * PH + 22, line, 11, color="#444")
    rs = summ.get("redis_store_ops_per_s")
    if rs:
        svg.text(14, top + rows * PH + 40,
                 f"The Redis store alone (bench_redis, 3 instances, one "
                 f"redis-server): {rs['store']:,.0f} session ops/s, "
                 f"{rs.get('redis_cpu_us_per_op') or 0:.2f} us of Redis CPU "
                 f"each (target 6); one unbatched connect "
                 f"{rs.get('unbatched_connect_us_per_call') or 0:.2f} us "
                 f"(target 15)", 11,
                 color="#444")
    with open(sys.argv[2], "w") as f:
        f.write(svg.render())


if __name__ == "__main__":
    main()
