#!/usr/bin/env python3
"""Turns the output of `cargo bench --bench storage` into the Markdown table of BENCHMARKS.md.

    cargo bench --bench storage | tee bench.log
    python3 scripts/bench-summary.py bench.log

Criterion prints, per benchmark, `time: [low estimate high]` and `thrpt: [low estimate high]`;
the table keeps the estimate and the interval, converts throughput to MB/s (10^6 bytes, as dd
reports it) and puts the dd references measured in the same run beside them.
"""
import re
import sys

UNITS = {"B/s": 1, "KiB/s": 1024, "MiB/s": 1024**2, "GiB/s": 1024**3}


def mbps(value, unit):
    return float(value) * UNITS[unit] / 1e6


def main(path):
    text = open(path, encoding="utf-8").read()
    refs = re.findall(r"^reference (dd .*?):\s+(\d+) MB/s", text, re.M)
    print("| benchmark | time per op | throughput (MB/s) |")
    print("|---|---|---|")
    name = None
    time = None
    for line in text.splitlines():
        m = re.match(r"^(\S+/\S+)\s+time:\s+\[(.*?)\]", line) or re.match(r"^(\S+/\S+)\s*$", line)
        if m and not line.startswith("Benchmarking"):
            name = m.group(1)
            time = m.group(2) if m.lastindex == 2 else None
            continue
        t = re.match(r"^\s+time:\s+\[(.*?)\]", line)
        if t and name:
            time = t.group(1)
            continue
        th = re.match(r"^\s+thrpt:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]", line)
        if th and name and time:
            lo, mid, hi = mbps(th.group(1), th.group(2)), mbps(th.group(3), th.group(4)), mbps(th.group(5), th.group(6))
            est = time.split()[2] + " " + time.split()[3]
            print(f"| {name} | {est} | **{mid:,.0f}** ({lo:,.0f}–{hi:,.0f}) |")
            name = time = None
        elif time and name and re.match(r"^\s*$", line) and name.startswith("reopen"):
            est = time.split()[2] + " " + time.split()[3]
            print(f"| {name} | {est} | |")
            name = time = None
    for label, rate in refs:
        print(f"| reference `{label}` | | **{int(rate):,}** |")


if __name__ == "__main__":
    main(sys.argv[1])
