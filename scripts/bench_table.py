#!/usr/bin/env python3
"""Turns bench_linear's Google Benchmark JSON into the README's tables.

    python3 scripts/bench_table.py build/bench/linear.json [more.json ...]

Per (K, N, M, hot/cold), 2 threads, wall time: GOPS (2·M·N·K / s) of
  b16 r0 / r32   lqer W4A8, MXINT4/MXINT8 block 16, LQER rule (4.5 bits/weight), rank 0 / 32
  b32 r0 / r32   lqer W4A8, OCP MXINT4/MXINT8 block 32 (4.25 bits/weight), rank 0 / 32
  oneDNN         u8s8f32 matmul, int8 weights prepacked by oneDNN (same run)
  ggml           Q4_0 in ggml's repack buffer (its interleaved AVX-512 layout, 4.5 bits/weight),
                 when bench_linear was built against ggml (same run)
and the ratios the issue asks about: lqer / oneDNN, the rank-32 overhead, and for
cold M = 1 the fraction of the measured DRAM bandwidth on every byte read.
Repetitions of one benchmark: the median is used (aggregate rows when present,
else the median of the iteration rows).
"""
import json
import re
import statistics
import sys
from collections import defaultdict


def load(paths):
    rows = defaultdict(list)
    for p in paths:
        for b in json.load(open(p))["benchmarks"]:
            if b.get("run_type") == "aggregate":
                continue
            rows[b["run_name"]].append(b)
    return rows


def median(rows, name, key):
    vals = [b[key] for b in rows.get(name, []) if key in b]
    return statistics.median(vals) if vals else None


def main(paths):
    rows = load(paths)
    peak = {t: median(rows, f"BM_peak_int8_vnni/threads:{t}/iterations:1", "GOPS") for t in (1, 2)}
    dram = {t: median(rows, f"BM_peak_dram_read/threads:{t}/iterations:1", "GB/s") for t in (1, 2)}
    print("Measured in this run: int8 vpdpbusd peak "
          + ", ".join(f"{t} thread{'s' if t > 1 else ''} {peak[t]:.0f} GOPS" for t in (1, 2) if peak[t])
          + "; DRAM read "
          + ", ".join(f"{t} thread{'s' if t > 1 else ''} {dram[t]:.1f} GB/s" for t in (1, 2) if dram[t]))
    print()

    def lq(fmt, M, K, N, rank, threads, cold, key="GOPS"):
        return median(rows, f"BM_lqer_w4a8_{fmt}/M:{M}/K:{K}/N:{N}/rank:{rank}/threads:{threads}/cold:{cold}/real_time",
                      key)

    def dnn(M, K, N, threads, cold, key="GOPS"):
        return median(rows, f"BM_onednn_u8s8f32/M:{M}/K:{K}/N:{N}/threads:{threads}/cold:{cold}/real_time", key)

    def gg(M, K, N, threads, cold, key="GOPS"):
        return median(rows, f"BM_ggml_q4_0/M:{M}/K:{K}/N:{N}/threads:{threads}/cold:{cold}/repack:1/real_time", key)

    have_ggml = any(k.startswith("BM_ggml_q4_0/") for k in rows)
    f = lambda x: f"{x:.0f}" if x else "–"
    r = lambda a, b: f"{a / b:.2f}" if a and b else "–"
    pct = lambda a, b: f"{(a / b - 1) * 100:+.1f}%" if a and b else "–"
    for threads in (2, 1):
        shapes = [(K, N, M, cold) for K, N in ((4096, 4096), (4096, 11008), (11008, 4096)) for cold in (1, 0)
                  for M in (1, 8, 32, 128, 512) if not (cold and M > 8)]
        if not any(lq("b16", M, K, N, 0, threads, cold) for K, N, M, cold in shapes):
            continue
        print(f"GOPS, {threads} thread{'s' if threads > 1 else ''} (wall time; lqer includes quantizing x, oneDNN does not)")
        print()
        print("| K × N | M | weights | b16 r0 | b16 r32 | b32 r0 | b32 r32 | oneDNN u8s8 | b16 r32 / oneDNN "
              "| b32 r32 / oneDNN | r32 cost (b16) | r32 DRAM use (b16, b32) |"
              + (" ggml q4_0 repack | b32 r32 / ggml |" if have_ggml else ""))
        print("|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if have_ggml else ""))
        for K, N, M, cold in shapes:
            v = [lq("b16", M, K, N, 0, threads, cold), lq("b16", M, K, N, 32, threads, cold),
                 lq("b32", M, K, N, 0, threads, cold), lq("b32", M, K, N, 32, threads, cold),
                 dnn(M, K, N, threads, cold)]
            if all(x is None for x in v):
                continue
            bw = "–"
            if cold and M == 1:
                b16 = lq("b16", M, K, N, 32, threads, cold, "frac_bw")
                b32 = lq("b32", M, K, N, 32, threads, cold, "frac_bw")
                bw = ", ".join(f"{x * 100:.0f}%" for x in (b16, b32) if x is not None) or "–"
            g = gg(M, K, N, threads, cold)
            print(f"| {K} × {N} | {M} | {'cold' if cold else 'hot'} | " + " | ".join(f(x) for x in v)
                  + f" | {r(v[1], v[4])} | {r(v[3], v[4])} | {pct(v[0], v[1])} | {bw} |"
                  + (f" {f(g)} | {r(v[3], g)} |" if have_ggml else ""))
        print()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
