#!/usr/bin/env python3
"""Tables and plot data from a results directory of bench/peers/run.sh.

Usage: report.py RESULTS_DIR

Reads every <system>[-<variant>]-r<N>.json there, takes the median over the
repeats of each figure, and prints markdown: the machine, each system's
durability setting, one table of the figures with shmsync's ratio to each
peer, and the losses. Writes, into the same directory, the data the plots
use (*.dat) and series.gp, which bench/peers/plots.gp loads.

Ratios are "times better for shmsync": the peer's latency, ns per get or
bytes over shmsync's, or shmsync's throughput over the peer's. Above 1.00x
shmsync wins; below, it loses (marked). Redis ran with its server on the
other CPU than its clients and on the same one; each Redis figure is the
better of the two (marked "1cpu" when that was the shared CPU).
"""
import glob
import json
import os
import re
import statistics
import sys

PEERS = ["lmdb", "redis", "sqlite"]
NAMES = {"shmsync": "shmsync", "lmdb": "LMDB", "redis": "Redis", "sqlite": "SQLite", "floor": "floor"}


def load(resdir):
    runs = {}
    for path in sorted(glob.glob(os.path.join(resdir, "*-r*.json"))):
        if not re.search(r"-r\d+\.json$", path):
            continue
        with open(path) as f:
            doc = json.load(f)
        group = doc["system"] + ("" if doc.get("variant", "default") == "default" else "/" + doc["variant"])
        runs.setdefault(group, []).append(doc)
    return runs


def flat(doc):
    """The scalar figures of one run, by name."""
    m = {}
    for mode, o in doc.get("prop", {}).items():
        for q in ("p50", "p99", "p999"):
            m[f"prop.{mode}.{q}"] = o[f"{q}_ns"]
    for w in doc.get("write", []):
        m[f"write.b{w['batch']}.w{w['writers']}"] = w["writes_per_s"]
        if "batch_wait" in w:  # runs before the waits were recorded have none
            m[f"wait.b{w['batch']}.w{w['writers']}.p99"] = w["batch_wait"]["p99_ns"]
            m[f"wait.b{w['batch']}.w{w['writers']}.max"] = w["batch_wait"]["max_ns"]
    for r in doc.get("read", []):
        k = f"read.{r['keys']}.r{r['readers']}"
        m[k + ".gets_per_s"] = r["gets_per_s"]
        m[k + ".ns_per_get"] = r["ns_per_get"]
        m[k + ".p50"] = r["p50_ns"]
        m[k + ".p99"] = r["p99_ns"]
    for name, o in doc.get("chase", {}).items():
        m[f"chase.{name}.ns_per_step"] = o["ns_per_step"]
    if "memory" in doc:
        m["memory.bytes_per_key"] = doc["memory"]["bytes_per_key"]
        m["memory.bytes_per_key_total"] = doc["memory"]["bytes_per_key_total"]
    if "churn" in doc:
        c = doc["churn"]
        m["churn.growth"] = c["bytes_peak"] - c["bytes_at_hold"]
        m["churn.at_hold"] = c["bytes_at_hold"]
        m["churn.end"] = c["bytes_end"]
        m["churn.end_over_hold"] = c["bytes_end"] - c["bytes_at_hold"]
    return m


def medians(docs):
    per = {}
    for d in docs:
        for k, v in flat(d).items():
            per.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in per.items()}


def higher_better(metric):
    return metric.startswith("write.") or metric.endswith("gets_per_s")


def pick(groups, system, metric):
    """(value, variant) for system: the better of its variants."""
    best = None
    for g, med in groups.items():
        if g.split("/")[0] != system or metric not in med:
            continue
        v, var = med[metric], (g.split("/")[1] if "/" in g else "")
        if best is None or (v > best[0] if higher_better(metric) else v < best[0]):
            best = (v, var)
    return best


def fmt(metric, v):
    if v is None:
        return "n/a"
    if metric.startswith("prop."):
        return f"{v / 1e3:.2f} µs" if v < 1e5 else f"{v / 1e3:.0f} µs"
    if metric.startswith("write.") or metric.endswith("gets_per_s"):
        return f"{v / 1e6:.2f} M/s" if v >= 1e6 else f"{v / 1e3:.1f} K/s"
    if metric.startswith("wait."):
        return f"{v / 1e3:.1f} µs" if v < 1e6 else f"{v / 1e6:.2f} ms"
    if metric.startswith("read.") or metric.startswith("chase."):
        return f"{v:.0f} ns" if v < 1e4 else f"{v / 1e3:.1f} µs"
    if metric.startswith("memory."):
        return f"{v:.0f} B"
    if metric.startswith("churn."):
        return f"{v / 1048576:+.1f} MiB" if "growth" in metric or "over" in metric else f"{v / 1048576:.1f} MiB"
    return f"{v:g}"


def ratio(metric, ours, theirs):
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return None
    return ours / theirs if higher_better(metric) else theirs / ours


# (workload, figure, metric, floor metric or None)
ROWS = [
    ("1. propagation, busy-polling", "round trip p50", "prop.poll.p50", None),
    ("", "round trip p99", "prop.poll.p99", None),
    ("", "round trip p999", "prop.poll.p999", None),
    ("1. propagation, sleeping", "round trip p50", "prop.sleep.p50", None),
    ("", "round trip p99", "prop.sleep.p99", None),
    ("", "round trip p999", "prop.sleep.p999", None),
    ("2. writes, KEYS keys in random order", "batch 1, 1 writer", "write.b1.w1", None),
    ("", "batch 1, 2 writers", "write.b1.w2", None),
    ("", "batch 256, 1 writer", "write.b256.w1", None),
    ("", "batch 256, 2 writers", "write.b256.w2", None),
    ("", "batch 1, 1 writer: batch wait p99", "wait.b1.w1.p99", None),
    ("", "batch 1, 1 writer: longest batch wait", "wait.b1.w1.max", None),
    ("", "batch 256, 1 writer: batch wait p99", "wait.b256.w1.p99", None),
    ("", "batch 256, 1 writer: longest batch wait", "wait.b256.w1.max", None),
    ("3. point lookups, KEYS keys", "uniform, 1 reader, gets/s", "read.uniform.r1.gets_per_s", None),
    ("", "uniform, 2 readers, gets/s", "read.uniform.r2.gets_per_s", None),
    ("", "hot 1K, 1 reader, gets/s", "read.hot.r1.gets_per_s", None),
    ("", "hot 1K, 2 readers, gets/s", "read.hot.r2.gets_per_s", None),
    ("", "uniform, ns per get (1 reader)", "read.uniform.r1.ns_per_get", "chase.uniform.ns_per_step"),
    ("", "uniform, sampled get p99", "read.uniform.r1.p99", None),
    ("", "hot 1K, ns per get (1 reader)", "read.hot.r1.ns_per_get", "chase.hot.ns_per_step"),
    ("", "hot 1K, sampled get p99", "read.hot.r1.p99", None),
    ("4. memory", "bytes per key at KEYS keys", "memory.bytes_per_key", None),
    ("", "the same, with the empty store's bytes", "memory.bytes_per_key_total", None),
    ("", "churn: growth while a snapshot is held", "churn.growth", None),
    ("", "churn: kept after the release (end - at hold)", "churn.end_over_hold", None),
]

FLOOR_ROWS = [
    ("cache-line round trip, busy-polled, 2 CPUs", "prop.cacheline_two_cpus"),
    ("cache-line round trip, busy-polled, 1 CPU (sched_yield)", "prop.cacheline_same_cpu"),
    ("futex sleep/wake round trip, 2 CPUs", "prop.futex_two_cpus"),
    ("futex sleep/wake round trip, 1 CPU", "prop.futex_same_cpu"),
]


def main():
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: report.py RESULTS_DIR")
    resdir = sys.argv[1]
    runs = load(resdir)
    if "shmsync" not in runs:
        sys.exit(f"report.py: no shmsync-r<N>.json in {resdir}")
    groups = {g: medians(d) for g, d in runs.items()}
    alldocs = [d for ds in runs.values() for d in ds]
    first = runs["shmsync"][0]
    out = []
    p = out.append
    dates = sorted(d["date"] for d in alldocs)
    loads = [d.get("loadavg_at_start", "").split(" ")[0] for d in alldocs]
    loads = sorted(float(x) for x in loads if x)
    nrep = max(len(v) for v in runs.values())
    p(f"Machine: {first['cpu_model']}, {first['online_cpus']} CPUs, kernel {first['kernel']}, "
      f"compiler {first['compiler']}; "
      f"runs {dates[0]} to {dates[-1]}; {nrep} repeat(s) per system, medians; "
      f"{first['params']['keys']} keys ({first['params']['key_bytes']}-byte keys, "
      f"{first['params']['value_bytes']}-byte values)"
      + (f"; load average at the start of each run {loads[0]:.2f} to {loads[-1]:.2f}" if loads else "")
      + ("; SMOKE RUN (figures not meaningful)" if first.get("smoke") else "") + ".")
    p("")
    p("| system | version | durability setting | processes for propagation |")
    p("|---|---|---|---|")
    for s in ["shmsync"] + PEERS:
        if s in runs:
            d = runs[s][0]
            p(f"| {NAMES[s]} | {d.get('version', '')} | {d['durability']} | {d.get('processes_for_propagation', '')} |")
    p("")
    p("Ratios: how many times better shmsync is (latency, ns and bytes: the peer's over shmsync's; "
      "throughput: shmsync's over the peer's). Below 1.00x is a **loss**. "
      "\"1cpu\": Redis's better figure came with its server on the same CPU as its clients.")
    p("")
    hdr = "| workload | figure | shmsync | " + " | ".join(NAMES[s] for s in PEERS) + " | floor | " + \
        " | ".join(f"vs {NAMES[s]}" for s in PEERS) + " |"
    p(hdr)
    p("|" + "---|" * (4 + 2 * len(PEERS)) )
    losses = []
    floor = groups.get("floor", {})
    snapshots = {g: d[0]["churn"]["reader_holds_snapshot"] for g, d in runs.items() if "churn" in d[0]}
    nkeys = first["params"]["keys"]
    keys = f"{nkeys // 1000000}M" if nkeys % 1000000 == 0 else f"{nkeys // 1000}K" if nkeys % 1000 == 0 else str(nkeys)
    for work, fig, metric, fmetric in ROWS:
        work, fig = work.replace("KEYS", keys), fig.replace("KEYS", keys)
        ours = pick(groups, "shmsync", metric)
        cells, rats = [], []
        for s in PEERS:
            t = pick(groups, s, metric)
            cells.append("n/a" if t is None else fmt(metric, t[0]) + (" 1cpu" if t[1] == "same-cpu" else ""))
            r = ratio(metric, ours[0] if ours else None, t[0] if t else None)
            # Churn: a ratio only means something between two systems whose
            # readers hold snapshots, and not for what is kept at the end
            # (near zero on both sides).
            if metric == "churn.end_over_hold" or (metric == "churn.growth" and not snapshots.get(s, True)):
                r = None
            if r is None:
                rats.append("")
            elif r < 1:
                rats.append(f"**{r:.2f}x loss**")
                losses.append((work or last_work, fig, NAMES[s], fmt(metric, ours[0]), fmt(metric, t[0]), r))
            else:
                rats.append(f"{r:.2f}x")
        fl = fmt(fmetric, floor.get(fmetric)) if fmetric and fmetric in floor else ""
        if work:
            last_work = work
        p(f"| {work} | {fig} | {fmt(metric, ours[0]) if ours else 'n/a'} | " + " | ".join(cells) +
          f" | {fl} | " + " | ".join(rats) + " |")
    p("")
    if floor:
        p("The floor, same runs (p50 / p99 / p999):")
        p("")
        p("| floor | p50 | p99 | p999 |")
        p("|---|---:|---:|---:|")
        for name, key in FLOOR_ROWS:
            if key + ".p50" in floor:
                p(f"| {name} | " + " | ".join(fmt("prop.", floor[f"{key}.{q}"]) for q in ("p50", "p99", "p999")) + " |")
        p("")
    p("shmsync's propagation placement: " + first["prop"].get("poll", {}).get("placement", "") + " (busy-polling); "
      + first["prop"].get("sleep", {}).get("placement", "") + " (sleeping).")
    p("")
    if losses:
        p("Losses (shmsync, peer):")
        p("")
        for work, fig, peer, a, b, r in losses:
            p(f"- {work}, {fig}: {a} against {peer}'s {b} ({r:.2f}x)")
    else:
        p("No losses.")
    print("\n".join(out))
    write_plot_data(resdir, runs)


def median_run(docs, key):
    """The run whose key(doc) is the median, for plots of one run's curve."""
    docs = [d for d in docs if key(d) is not None]
    if not docs:
        return None
    docs = sorted(docs, key=key)
    return docs[(len(docs) - 1) // 2]


def label(group):
    s = group.split("/")
    return NAMES.get(s[0], s[0]) + (" (server on the clients' CPU)" if len(s) > 1 and s[1] == "same-cpu" else "")


def write_plot_data(resdir, runs):
    def dat(name, rows):
        with open(os.path.join(resdir, name), "w") as f:
            for r in rows:
                f.write(" ".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in r) + "\n")
        return name

    cdf, wr, rd, mem = [], [], [], []
    order = ["shmsync", "lmdb", "redis", "redis/same-cpu", "sqlite", "floor"]
    for g in sorted(runs, key=lambda g: order.index(g) if g in order else 99):
        docs = runs[g]
        modes = {}
        for d in docs:
            for mode in d.get("prop", {}):
                modes[mode] = True
        for mode in modes:
            d = median_run(docs, lambda d: d.get("prop", {}).get(mode, {}).get("p50_ns"))
            o = d["prop"][mode]
            if "cdf" not in o:
                continue
            f = dat(f"cdf_{g.replace('/', '_')}_{mode}.dat", [(q[1] / 1e3, q[0]) for q in o["cdf"]])
            if g == "floor":
                t = {"cacheline_two_cpus": "floor: cache line, 2 CPUs", "cacheline_same_cpu": "floor: cache line, 1 CPU",
                     "futex_two_cpus": "floor: futex, 2 CPUs", "futex_same_cpu": "floor: futex, 1 CPU"}[mode]
            else:
                t = f"{label(g)}, {'busy-polling' if mode == 'poll' else 'sleeping'}"
            cdf.append((f, t, g, 1 if mode == "poll" else 2) if g != "floor" else (f, t, g + "/" + mode, 3))
        if g == "floor":
            continue
        med = medians(docs)
        for b in (1, 256):
            rows = [(w, med[f"write.b{b}.w{w}"]) for w in (1, 2) if f"write.b{b}.w{w}" in med]
            if rows:
                wr.append((dat(f"write_{g.replace('/', '_')}_b{b}.dat", rows), f"{label(g)}, batch {b}", g,
                           1 if b == 1 else 2))
        for k in ("uniform", "hot"):
            rows = [(r, med[f"read.{k}.r{r}.gets_per_s"]) for r in (1, 2) if f"read.{k}.r{r}.gets_per_s" in med]
            if rows:
                rd.append((dat(f"read_{g.replace('/', '_')}_{k}.dat", rows), f"{label(g)}, {k}", g,
                           1 if k == "uniform" else 2))
        d = median_run(docs, lambda d: d["churn"]["bytes_peak"] if "churn" in d else None)
        if d:
            c = d["churn"]
            mem.append((dat(f"churn_{g.replace('/', '_')}.dat", [(s[0], s[1] / 1048576) for s in c["samples"]]),
                        label(g) + ("" if c["reader_holds_snapshot"] else " (no snapshots: the hold does nothing)"),
                        g, 1))
            hold = (c["hold_from_cycle"], c["hold_to_cycle"])

    def cmd(items, style):
        # One line, for a gnuplot string variable: titles in escaped double
        # quotes (they may hold an apostrophe).
        # One colour per system, one dash type per variant of its figure.
        colours = {"shmsync": "#7b2cbf", "lmdb": "#2a9d8f", "redis": "#e76f51", "redis/same-cpu": "#b5651d",
                   "sqlite": "#1d70b8", "floor/cacheline_two_cpus": "#000000", "floor/cacheline_same_cpu": "#555555",
                   "floor/futex_two_cpus": "#999999", "floor/futex_same_cpu": "#bbbbbb"}
        parts = []
        for f, t, g, dt in items:
            parts.append(f"'{os.path.join(resdir, f)}' using 1:2 with {style} lw 2 dt {dt} "
                         f"lc rgb \\\"{colours.get(g, '#333333')}\\\" title \\\"{t}\\\"")
        return "plot " + ", ".join(parts) if parts else "plot 0 notitle"

    with open(os.path.join(resdir, "series.gp"), "w") as f:
        f.write(f"cdf_cmd = \"{cmd(cdf, 'lines')}\"\n")
        f.write(f"write_cmd = \"{cmd(wr, 'linespoints')}\"\n")
        f.write(f"read_cmd = \"{cmd(rd, 'linespoints')}\"\n")
        f.write(f"mem_cmd = \"{cmd(mem, 'lines')}\"\n")
        if mem:
            f.write(f"hold_from = {hold[0]}\nhold_to = {hold[1]}\n")
        else:
            f.write("hold_from = 0\nhold_to = 0\n")
        nk = runs["shmsync"][0]["params"]["keys"]
        f.write(f"keys_label = \"{nk // 1000000}M\"\n" if nk % 1000000 == 0 else f"keys_label = \"{nk}\"\n")
        f.write(f"title_note = \"{'SMOKE RUN, figures not meaningful; ' if runs['shmsync'][0].get('smoke') else ''}"
                f"{runs['shmsync'][0]['cpu_model']}, {runs['shmsync'][0]['online_cpus']} CPUs\"\n")


if __name__ == "__main__":
    main()
