#!/usr/bin/env python3
"""Summarise scripts/bench-cluster.sh's reports: medians over the runs.

Usage: bench-cluster-summary.py REPORTS.jsonl

The input is parley-bench's JSON lines, each tagged by bench-cluster.sh
with bench_run, bench_phase and load_before. The output is Markdown
tables (the figures of docs/performance.md, "Cluster: routing by
interest"): each cell is the median over the runs, with the runs' values
in brackets when there are several.
"""
import json
import statistics
import sys
from collections import defaultdict

ROOM_PHASES = ("single", "local", "cross")


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


def member_rate(s):
    """msg/s per member: the rate of the room spread over its members."""
    return s["rate_per_publisher"] * s["publishers_per_room"] / s["members"]


def steps(by, phase):
    """(member rate) -> [one step report per run], for the steps that ran."""
    out = defaultdict(list)
    for run in sorted(by.get(phase, {})):
        for s in by[phase][run]:
            if s.get("rate_per_publisher"):
                out[member_rate(s)].append(s)
    return out


def lat(s, key, q):
    return (s.get(key) or {}).get(q)


def node(s, i, key):
    n = s.get("nodes") or []
    return n[i].get(key) if i < len(n) else None


def per_s(s, v):
    return v / s["duration_s"] if s.get("duration_s") else None


def rooms_table(by):
    out = ["| phase | msg/s per member | delivered/s | p50 ms | p99 ms | p99 same node | p99 cross-node | CPU-µs/delivery, all nodes | node 0 / 1 / 2 CPU-µs/delivery | server cores | bench cores | postgres cores | nats-server cores | passed (p99 ≤ 20 ms, no loss) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for ph in ROOM_PHASES:
        for rate, ss in sorted(steps(by, ph).items()):
            pubs = ss[0]["publishers_per_room"]
            label = f"{rate:g}" if pubs == ss[0]["members"] else f"{rate:g} ({pubs} publishers × {ss[0]['rate_per_publisher']:g})"
            nodes = " / ".join(med([node(s, i, "cpu_us_per_delivery") for s in ss]) for i in range(len(ss[0].get("nodes") or [])))
            passed = sum(1 for s in ss if s.get("received") == s.get("expected") and (lat(s, "latency_ms", "p99") or 1e9) <= 20)
            out.append(f"| {ph} | {label} | {med([s.get('delivered_per_s') for s in ss], '{:.0f}')} "
                       f"| {med([lat(s, 'latency_ms', 'p50') for s in ss], '{:.1f}')} "
                       f"| {med([lat(s, 'latency_ms', 'p99') for s in ss], '{:.1f}')} "
                       f"| {med([lat(s, 'latency_same_node_ms', 'p99') for s in ss], '{:.1f}')} "
                       f"| {med([lat(s, 'latency_cross_node_ms', 'p99') if s.get('received_cross_node') else None for s in ss], '{:.1f}')} "
                       f"| {med([(s.get('server') or {}).get('cpu_us_per_delivery') for s in ss])} "
                       f"| {nodes or '-'} "
                       f"| {med([per_s(s, (s.get('server') or {}).get('cpu_s', 0)) for s in ss])} "
                       f"| {med([per_s(s, s.get('bench_cpu_s', 0)) for s in ss])} "
                       f"| {med([per_s(s, (s.get('aux_cpu_s') or {}).get('postgres')) if (s.get('aux_cpu_s') or {}).get('postgres') is not None else None for s in ss])} "
                       f"| {med([per_s(s, (s.get('aux_cpu_s') or {}).get('nats-server')) if (s.get('aux_cpu_s') or {}).get('nats-server') is not None else None for s in ss])} "
                       f"| {passed} of {len(ss)} |")
    return "\n".join(out)


def knees(by):
    out = ["| phase | knee per run: deliveries/s (msg/s per member), p99 ≤ 20 ms and no loss | median |", "|---|---|---:|"]
    for ph in ROOM_PHASES:
        runs = by.get(ph, {})
        if not runs:
            continue
        cells, vals = [], []
        for run in sorted(runs):
            ok = [s for s in runs[run] if s.get("received") == s.get("expected") and (lat(s, "latency_ms", "p99") or 1e9) <= 20]
            if ok:
                k = max(ok, key=lambda s: s["delivered_per_s"])
                cells.append(f"{k['delivered_per_s']:.0f} ({member_rate(k):g})")
                vals.append(k["delivered_per_s"])
            else:
                cells.append("none")
                vals.append(0)
        out.append(f"| {ph} | {', '.join(cells)} | {statistics.median(vals):.0f} |")
    return "\n".join(out)


def nats_table(by):
    out = ["| phase | msg/s per member | node | rooms | msgs in its rooms | msgs in the others' | NATS msgs received | NATS KiB received | subscriptions | outbound dropped | filled from store | store commits: ms each, messages each, over 25 ms |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for ph in ROOM_PHASES:
        for rate, ss in sorted(steps(by, ph).items()):
            for i in range(len(ss[0].get("nodes") or [])):
                p = lambda s: node(s, i, "phase") or {}
                out.append(f"| {ph} | {rate:g} | {i} | {med([node(s, i, 'rooms') for s in ss], '{:.0f}')} "
                           f"| {med([node(s, i, 'sent_in_its_rooms') or 0 for s in ss], '{:.0f}')} "
                           f"| {med([node(s, i, 'sent_in_other_rooms') or 0 for s in ss], '{:.0f}')} "
                           f"| {med([p(s).get('nats_msgs') for s in ss], '{:.0f}')} "
                           f"| {med([p(s).get('nats_bytes', 0) / 1024 for s in ss], '{:.0f}')} "
                           f"| {med([p(s).get('nats_subscriptions') for s in ss], '{:.0f}')} "
                           f"| {med([p(s).get('cluster_outbound_dropped') for s in ss], '{:.0f}')} "
                           f"| {med([p(s).get('store_filled_messages') for s in ss], '{:.0f}')} "
                           f"| {med([p(s).get('store_commit_mean_ms') for s in ss])}; {med([p(s).get('store_messages_per_commit') for s in ss], '{:.1f}')}; "
                           f"{med([p(s).get('store_commits_over_25ms') if p(s).get('store_commits') else None for s in ss], '{:.0f}')} |")
    return "\n".join(out)


def presence_table(by):
    runs = by.get("presence0", {})
    reps = [runs[r][0] for r in sorted(runs) if runs[r]]
    out = ["| node | connections | connect phase s | connecting: NATS KiB/s | connecting: NATS msgs/s | connecting: CPU cores | at rest: NATS bytes/s | at rest: NATS msgs/s | at rest: CPU cores | subscriptions |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i in range(len(reps[0].get("nodes") or [])):
        c = lambda s: s["nodes"][i].get("connect_phase") or {}
        p = lambda s: s["nodes"][i].get("phase") or {}
        conns = [rs[0].get("connections") for r, rs in sorted(by.get(f"presence{i}", {}).items()) if rs]
        out.append(f"| {i} | {med(conns, '{:.0f}')} | {med([c(s).get('seconds') for s in reps], '{:.1f}')} "
                   f"| {med([c(s).get('nats_bytes_per_s', 0) / 1024 for s in reps], '{:.1f}')} "
                   f"| {med([c(s).get('nats_msgs_per_s') for s in reps], '{:.0f}')} "
                   f"| {med([c(s).get('cpu_s', 0) / c(s)['seconds'] if c(s).get('seconds') else None for s in reps])} "
                   f"| {med([p(s).get('nats_bytes_per_s') for s in reps], '{:.0f}')} "
                   f"| {med([p(s).get('nats_msgs_per_s') for s in reps], '{:.1f}')} "
                   f"| {med([p(s).get('cpu_s', 0) / p(s)['seconds'] if p(s).get('seconds') else None for s in reps], '{:.3f}')} "
                   f"| {med([p(s).get('nats_subscriptions') for s in reps], '{:.0f}')} |")
    total = [sum(by[f"presence{k}"][r][0].get("connections", 0) for k in range(3) if by.get(f"presence{k}", {}).get(r))
             for r in sorted(runs)]
    rate = [t / s["nodes"][0]["connect_phase"]["seconds"] for t, s in zip(total, reps)]
    aux = lambda s, key, name, phase: ((s.get(key) or {}).get(name) or 0) / s["nodes"][0][phase]["seconds"]
    out.append(f"\nConnected in all: {med(total, '{:.0f}')}, {med(rate, '{:.0f}')} connects/s over the connect phase; "
               f"server RSS, all nodes: {med([(s.get('server') or {}).get('rss_mib') for s in reps], '{:.0f}')} MiB. "
               f"PostgreSQL cores while connecting {med([aux(s, 'aux_cpu_connect_s', 'postgres', 'connect_phase') for s in reps])}, at rest {med([aux(s, 'aux_cpu_s', 'postgres', 'phase') for s in reps], '{:.3f}')}; "
               f"nats-server cores while connecting {med([aux(s, 'aux_cpu_connect_s', 'nats-server', 'connect_phase') for s in reps])}, at rest {med([aux(s, 'aux_cpu_s', 'nats-server', 'phase') for s in reps], '{:.3f}')}.")
    return "\n".join(out)


def problems(by):
    out = []
    for ph in sorted(by):
        for run, rs in sorted(by[ph].items()):
            for s in rs:
                if s.get("problem"):
                    out.append(f"- {ph} run {run}, step {s.get('step')}: {s['problem']}")
    return "\n".join(out)


def loads(by):
    out = []
    for ph in sorted(by):
        vals = [rs[0].get("load_before") for run, rs in sorted(by[ph].items()) if rs]
        out.append(f"{ph} {', '.join(f'{v:.2f}' for v in vals)}")
    return "1-minute load average before each phase, by run: " + "; ".join(out)


def main():
    by = load(sys.argv[1])
    if any(p in by for p in ROOM_PHASES):
        print("## rooms: 10 members per room, everyone publishing (single: 200 rooms on one node; local: 600 rooms, 200 per node, each room on one node; cross: 600 rooms, a room's 5 publishers on one node, its 5 other members on the next)\n")
        print(rooms_table(by))
        print()
        print(knees(by))
        print("\n## NATS per node, each step\n")
        print(nats_table(by))
    if "presence0" in by:
        print("\n## presence: idle connections, one bench process per node\n")
        print(presence_table(by))
    print()
    print(loads(by))
    p = problems(by)
    if p:
        print("\nProblems:\n" + p)


if __name__ == "__main__":
    main()
