#!/usr/bin/env python3
"""Summarise scripts/bench-cluster.sh's reports: medians over the runs.

Usage: bench-cluster-summary.py REPORTS.jsonl

The input is parley-bench's JSON lines, each tagged by bench-cluster.sh
with bench_run, bench_phase and load_before. The output is Markdown
tables (the figures of docs/performance.md, "Cluster: routing by
interest"); each cell is the median over the runs, with the runs' values
in brackets when there are several.
"""
import json
import statistics
import sys
from collections import defaultdict


def med(values, fmt="{:.2f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m = fmt.format(statistics.median(values))
    if len(values) > 1:
        m += " [" + ", ".join(fmt.format(v) for v in values) + "]"
    return m


def load(path):
    by = defaultdict(lambda: defaultdict(list))  # phase -> run -> reports
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                by[r["bench_phase"]][r["bench_run"]].append(r)
    return by


def knee(steps):
    ok = [s for s in steps if s.get("ok")]
    return max(ok, key=lambda s: s.get("delivered_per_s", 0)) if ok else None


def step_at(steps, rate):
    for s in steps:
        if s.get("rate_per_publisher") == rate:
            return s
    return None


def node_cpu(s, i):
    n = (s.get("nodes") or [])
    return n[i].get("cpu_us_per_delivery") if i < len(n) else None


def rooms_table(by, phases):
    out = ["| | " + " | ".join(phases) + " |", "|---" * (len(phases) + 1) + "|"]
    rows = []

    def row(name, f, fmt="{:.2f}"):
        cells = []
        for ph in phases:
            runs = by.get(ph, {})
            cells.append(med([f(runs[r]) for r in sorted(runs)], fmt))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")

    first = lambda steps: steps[0] if steps else None
    g = lambda f: (lambda steps: f(steps) if steps else None)
    row("load before the run", g(lambda st: st[0].get("load_before")))
    row("knee: deliveries/s (p99 <= 20 ms, no loss)", g(lambda st: (knee(st) or {}).get("delivered_per_s", 0)), "{:.0f}")
    row("knee: msg/s per member", g(lambda st: (knee(st) or {}).get("rate_per_publisher", 0)), "{:g}")
    row("highest step tried, msg/s per member", g(lambda st: st[-1].get("rate_per_publisher")), "{:g}")
    row("highest step: deliveries/s", g(lambda st: st[-1].get("delivered_per_s")), "{:.0f}")
    row("highest step: p99 ms", g(lambda st: (st[-1].get("latency_ms") or {}).get("p99")))
    row("first step: deliveries/s", g(lambda st: first(st).get("delivered_per_s")), "{:.0f}")
    row("first step: p50 ms", g(lambda st: (first(st).get("latency_ms") or {}).get("p50")))
    row("first step: p99 ms", g(lambda st: (first(st).get("latency_ms") or {}).get("p99")))
    row("first step: p99 ms, same node", g(lambda st: (first(st).get("latency_same_node_ms") or {}).get("p99")))
    row("first step: p99 ms, cross-node", g(lambda st: (first(st).get("latency_cross_node_ms") or {}).get("p99")))
    row("first step: server CPU-us/delivery (all nodes)", g(lambda st: (first(st).get("server") or {}).get("cpu_us_per_delivery")))
    for i in range(3):
        row(f"first step: node {i} CPU-us/delivery", g(lambda st, i=i: node_cpu(first(st), i)))
    per_s = lambda s, v: v / s["duration_s"] if s.get("duration_s") else None
    row("first step: server CPU-s / busy s (cores)", g(lambda st: per_s(first(st), (first(st).get("server") or {}).get("cpu_s", 0))))
    row("first step: bench CPU-s / busy s (cores)", g(lambda st: per_s(first(st), first(st).get("bench_cpu_s", 0))))
    out += rows
    problems = []
    for ph in phases:
        for r, st in sorted(by.get(ph, {}).items()):
            for s in st:
                if s.get("problem"):
                    problems.append(f"- {ph} run {r}, {s.get('rate_per_publisher')} msg/s: {s['problem']}")
    return "\n".join(out + ([""] + problems if problems else []))


def nats_table(by, phases):
    out = ["| phase | node | rooms | msgs in its rooms | msgs in the others' | NATS msgs received | NATS KiB received | subscriptions | CPU-us/delivery | outbound dropped | filled from store |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for ph in phases:
        runs = by.get(ph, {})
        if not runs:
            continue
        firsts = [runs[r][0] for r in sorted(runs) if runs[r]]
        for i in range(len(firsts[0].get("nodes") or [])):
            n = lambda s: s["nodes"][i]
            p = lambda s: s["nodes"][i].get("phase") or {}
            out.append(f"| {ph} | {i} | {med([n(s).get('rooms') for s in firsts], '{:.0f}')} "
                       f"| {med([n(s).get('sent_in_its_rooms', 0) for s in firsts], '{:.0f}')} "
                       f"| {med([n(s).get('sent_in_other_rooms', 0) for s in firsts], '{:.0f}')} "
                       f"| {med([p(s).get('nats_msgs') for s in firsts], '{:.0f}')} "
                       f"| {med([p(s).get('nats_bytes', 0) / 1024 for s in firsts], '{:.0f}')} "
                       f"| {med([p(s).get('nats_subscriptions') for s in firsts], '{:.0f}')} "
                       f"| {med([n(s).get('cpu_us_per_delivery') for s in firsts])} "
                       f"| {med([p(s).get('cluster_outbound_dropped') for s in firsts], '{:.0f}')} "
                       f"| {med([p(s).get('store_filled_messages') for s in firsts], '{:.0f}')} |")
    return "\n".join(out)


def presence_table(by):
    runs = by.get("presence0", {})
    if not runs:
        return ""
    reps = [runs[r][0] for r in sorted(runs) if runs[r]]
    out = ["| node | connections (all processes) | connect phase s | connecting: NATS KiB/s | connecting: NATS msgs/s | connecting: CPU cores | at rest: NATS KiB/s | at rest: NATS msgs/s | at rest: CPU cores | subscriptions |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    conns = defaultdict(list)
    for k in range(3):
        for r in sorted(by.get(f"presence{k}", {})):
            for rep in by[f"presence{k}"][r]:
                conns[(r, k)] = rep.get("connections", 0)
    for i in range(len(reps[0].get("nodes") or [])):
        c = lambda s: s["nodes"][i].get("connect_phase") or {}
        p = lambda s: s["nodes"][i].get("phase") or {}
        total = [conns.get((r, i)) for r in sorted(runs)]
        out.append(f"| {i} | {med(total, '{:.0f}')} | {med([c(s).get('seconds') for s in reps], '{:.1f}')} "
                   f"| {med([c(s).get('nats_bytes_per_s', 0) / 1024 for s in reps], '{:.1f}')} "
                   f"| {med([c(s).get('nats_msgs_per_s') for s in reps], '{:.0f}')} "
                   f"| {med([c(s).get('cpu_s', 0) / c(s)['seconds'] if c(s).get('seconds') else None for s in reps])} "
                   f"| {med([p(s).get('nats_bytes_per_s', 0) / 1024 for s in reps], '{:.1f}')} "
                   f"| {med([p(s).get('nats_msgs_per_s') for s in reps], '{:.1f}')} "
                   f"| {med([p(s).get('cpu_s', 0) / p(s)['seconds'] if p(s).get('seconds') else None for s in reps], '{:.3f}')} "
                   f"| {med([p(s).get('nats_subscriptions') for s in reps], '{:.0f}')} |")
    problems = []
    for k in range(3):
        for r, rs in sorted(by.get(f"presence{k}", {}).items()):
            for rep in rs:
                if rep.get("problem"):
                    problems.append(f"- presence process {k} run {r}: {rep['problem']}")
    return "\n".join(out + ([""] + problems if problems else []))


def main():
    by = load(sys.argv[1])
    print("## rooms: 200 rooms x 10 per node, everyone publishing (single: one node; local: 3 nodes, rooms local; cross: 3 nodes, publishers and members on different nodes)\n")
    print(rooms_table(by, [p for p in ("single", "local", "cross") if p in by]))
    print("\n## NATS per node, first step of each phase\n")
    print(nats_table(by, [p for p in ("single", "local", "cross") if p in by]))
    if "presence0" in by:
        print("\n## presence: idle connections, 3 bench processes (one per node)\n")
        print(presence_table(by))


if __name__ == "__main__":
    main()
