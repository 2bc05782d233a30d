#!/usr/bin/env python3
"""Perplexity against bits per weight from `llama eval --json` (examples/llama).

    python3 scripts/plot_llama_eval.py EVAL.json OUT.svg

One line per scale policy and block length, from plain W4A8 (rank 0) through
the ranks in the table; the float model as a dashed line; llama.cpp's formats
(the "llama_cpp" entry that `llama eval --peers` copies in) as labelled points.
The SVG is written by hand (Python's standard library only), so the demo needs
nothing beyond python3; it is written to a temporary and renamed.
"""
import json
import math
import os
import sys
import tempfile

COLORS = {"plain": "#555555", "lqer": "#1f77b4", "l2qer": "#d62728", "rms": "#2ca02c", "whiten": "#9467bd"}
LABELS = {"lqer": "LQER", "l2qer": "L²QER", "rms": "rms", "whiten": "whiten"}
DASH = {16: "", 32: "6,3"}


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: plot_llama_eval.py EVAL.json OUT.svg")
    try:
        with open(argv[1], encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"plot_llama_eval.py: {argv[1]}: {e}")
    rows = data.get("rows")
    if not isinstance(rows, list) or not rows:
        sys.exit(f"plot_llama_eval.py: {argv[1]}: no \"rows\" (not `llama eval --json` output)")

    fp = next((r for r in rows if r["method"] == "float"), None)
    series = {}  # (method, block) -> [(bits, ppl, rank)]
    for r in rows:
        if r["method"] in ("float", "plain"):
            continue
        series.setdefault((r["method"], r["block"]), []).append((r["bits_per_weight"], r["perplexity"], r["rank"]))
    plains = {r["block"]: (r["bits_per_weight"], r["perplexity"], 0) for r in rows if r["method"] == "plain"}
    for (m, b), pts in series.items():
        if b in plains:
            pts.append(plains[b])
        pts.sort()
    peers = []
    for f in (data.get("llama_cpp") or {}).get("files", []):
        bits = f.get("bits_per_weight_linears")
        ppl = f.get("perplexity")
        if isinstance(bits, (int, float)) and isinstance(ppl, (int, float)):
            peers.append((bits, ppl, f.get("name", "?")))

    # A peer far right of lqer's rows (llama.cpp's Q8_0 at 8.5 bits) would squeeze every line
    # into the left edge: it is named in a note instead.
    ours = [p[0] for s in series.values() for p in s] + [p[0] for p in plains.values()]
    limit = (max(ours) + 1.0) if ours else float("inf")
    off_chart = [p for p in peers if p[0] > limit]
    peers = [p for p in peers if p[0] <= limit]
    pts_all = [p for s in series.values() for p in s] + list(plains.values()) + [(b, p, 0) for b, p, _ in peers]
    if not pts_all:
        sys.exit(f"plot_llama_eval.py: {argv[1]}: no quantized rows to plot")
    xs = [p[0] for p in pts_all]
    ys = [p[1] for p in pts_all] + ([fp["perplexity"]] if fp else [])
    x0, x1 = math.floor((min(xs) - 0.05) * 4) / 4, math.ceil((max(xs) + 0.05) * 4) / 4
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    W, H, L, R, T, B = 760, 480, 70, 190, 40, 55

    def sx(x):
        return L + (x - x0) / (x1 - x0 or 1) * (W - L - R)

    def sy(y):
        return H - B - (y - y0) / (y1 - y0) * (H - T - B)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{L}" y="22" font-size="14">{esc(data.get("title", "SmolLM2-135M through lqer: held-out perplexity against bits per weight"))}</text>']
    # Axes and grid.
    step = 0.25 if x1 - x0 <= 2 else 0.5
    x = x0
    while x <= x1 + 1e-9:
        out.append(f'<line x1="{sx(x):.1f}" y1="{T}" x2="{sx(x):.1f}" y2="{H - B}" stroke="#eee"/>')
        out.append(f'<text x="{sx(x):.1f}" y="{H - B + 16}" text-anchor="middle">{x:g}</text>')
        x += step
    ystep = 10 ** math.floor(math.log10((y1 - y0) / 5))
    for mult in (1, 2, 5, 10):
        if (y1 - y0) / (ystep * mult) <= 8:
            ystep *= mult
            break
    y = math.ceil(y0 / ystep) * ystep
    while y <= y1:
        out.append(f'<line x1="{L}" y1="{sy(y):.1f}" x2="{W - R}" y2="{sy(y):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{L - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += ystep
    out.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 15}" text-anchor="middle">bits per weight (codes, scales, A and B)</text>')
    out.append(f'<text transform="translate(18,{(T + H - B) / 2}) rotate(-90)" text-anchor="middle">perplexity</text>')
    if fp:
        out.append(f'<line x1="{L}" y1="{sy(fp["perplexity"]):.1f}" x2="{W - R}" y2="{sy(fp["perplexity"]):.1f}" '
                   f'stroke="#000" stroke-dasharray="2,3"/>')
        out.append(f'<text x="{W - R - 4}" y="{sy(fp["perplexity"]) - 5:.1f}" text-anchor="end">float {fp["perplexity"]:.2f}</text>')
    legend = []
    for (m, b), pts in sorted(series.items()):
        color, dash = COLORS.get(m, "#000"), DASH.get(b, "2,2")
        path = " ".join(f"{sx(p[0]):.1f},{sy(p[1]):.1f}" for p in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
        for p in pts:
            out.append(f'<circle cx="{sx(p[0]):.1f}" cy="{sy(p[1]):.1f}" r="3" fill="{color}"><title>'
                       f'{esc(LABELS.get(m, m))} block {b} rank {p[2]}: {p[1]:.3f} at {p[0]:.3f} bits</title></circle>')
        legend.append((f"{LABELS.get(m, m)}, block {b}", color, dash))
    for b, (bits, ppl, _) in sorted(plains.items()):
        out.append(f'<rect x="{sx(bits) - 4:.1f}" y="{sy(ppl) - 4:.1f}" width="8" height="8" fill="{COLORS["plain"]}"/>')
        out.append(f'<text x="{sx(bits) + 7:.1f}" y="{sy(ppl) + 4:.1f}">plain b{b}</text>')
    for bits, ppl, name in peers:
        out.append(f'<path d="M{sx(bits):.1f},{sy(ppl) - 6:.1f} l5,10 h-10 z" fill="#ff7f0e"/>')
        out.append(f'<text x="{sx(bits) + 8:.1f}" y="{sy(ppl) + 4:.1f}" fill="#b35900">llama.cpp {esc(name)}</text>')
    ly = T + 8
    for text, color, dash in legend:
        out.append(f'<line x1="{W - R + 12}" y1="{ly}" x2="{W - R + 40}" y2="{ly}" stroke="{color}" stroke-width="2" '
                   f'stroke-dasharray="{dash}"/>')
        out.append(f'<text x="{W - R + 46}" y="{ly + 4}">{esc(text)}</text>')
        ly += 18
    out.append(f'<text x="{W - R + 12}" y="{ly + 8}">■ plain W4A8 (rank 0)</text>')
    if peers:
        out.append(f'<text x="{W - R + 12}" y="{ly + 26}" fill="#b35900">▲ llama.cpp format</text>')
    for i, (bits, ppl, name) in enumerate(off_chart):
        out.append(f'<text x="{W - R + 12}" y="{ly + 44 + 16 * i}" fill="#b35900">llama.cpp {esc(name)}: {ppl:.2f}</text>')
        out.append(f'<text x="{W - R + 24}" y="{ly + 58 + 16 * i}" fill="#b35900">at {bits:.2f} bits (off the chart)</text>')
    out.append("</svg>\n")

    target = argv[2]
    d = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=".plot.", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(out))
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"plot_llama_eval.py: {target}")


if __name__ == "__main__":
    main(sys.argv)
