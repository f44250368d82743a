#!/usr/bin/env python3
"""Turn criterion's saved estimates into the tables of docs/performance.md.

Usage (from the repository root, after the benchmark runs):

    cargo bench --bench bptt -- --save-baseline t1
    TAPEGRAD_BENCH_THREADS=2 cargo bench --bench bptt -- --save-baseline t2
    python3 scripts/perf_table.py [target/criterion]

Reads `<dir>/<group>/<function>/<config>/<baseline>/estimates.json` (the
median point estimate, in ns) for baselines t1 and t2 and prints Markdown.
"""
import json
import os
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
CONFIGS = {
    "S": dict(B=1, I=64, H=100, O=64, T=25),
    "M": dict(B=32, I=64, H=128, O=64, T=50),
    "L": dict(B=64, I=256, H=512, O=256, T=100),
}


def median_ns(group, func, cfg, base):
    path = os.path.join(ROOT, group, func, cfg, base, "estimates.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def flops(cell, c):
    b, i, h, o, t = c["B"], c["I"], c["H"], c["O"], c["T"]
    g = 4 if cell == "lstm" else 1
    forward = 2 * b * (g * h * i + g * h * h + o * h) * t
    return 3 * forward  # forward + two products per weight in backward


def fmt_time(ns):
    if ns is None:
        return "–"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e3:.1f} µs"


def gemm_rate(base):
    ns = median_ns("gemm", "512x512x512", "", base) or median_ns("gemm", "512x512x512", ".", base)
    path = os.path.join(ROOT, "gemm", "512x512x512", base, "estimates.json")
    if os.path.exists(path):
        with open(path) as f:
            ns = json.load(f)["median"]["point_estimate"]
    return None if ns is None else 2 * 512**3 / ns


for base in ["t1", "t2"]:
    peak = gemm_rate(base)
    print(f"\n### {base[1]} thread(s)" + (f" — GEMM 512³: {peak:.1f} GFLOP/s" if peak else ""))
    print("\n| cell | config | tape | hand | tape/hand | tape GFLOP/s | % of GEMM 512³ |")
    print("|---|---|---|---|---|---|---|")
    for cell in ["rnn", "lstm"]:
        for cfg, c in CONFIGS.items():
            tape = median_ns(f"{cell}_bptt", "tape", cfg, base)
            hand = median_ns(f"{cell}_bptt", "hand", cfg, base)
            ratio = f"{tape / hand:.2f}" if tape and hand else "–"
            rate = flops(cell, c) / tape if tape else None
            pct = f"{100 * rate / peak:.0f}%" if rate and peak else "–"
            print(
                f"| {cell} | {cfg} | {fmt_time(tape)} | {fmt_time(hand)} | {ratio} | "
                + (f"{rate:.1f}" if rate else "–")
                + f" | {pct} |"
            )

print("\n### Speed-up from 1 to 2 threads (tape)\n")
print("| cell | config | 1 thread | 2 threads | speed-up |")
print("|---|---|---|---|---|")
for cell in ["rnn", "lstm"]:
    for cfg in CONFIGS:
        a = median_ns(f"{cell}_bptt", "tape", cfg, "t1")
        b = median_ns(f"{cell}_bptt", "tape", cfg, "t2")
        s = f"{a / b:.2f}×" if a and b else "–"
        print(f"| {cell} | {cfg} | {fmt_time(a)} | {fmt_time(b)} | {s} |")
