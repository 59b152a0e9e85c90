#!/usr/bin/env python3
"""Turns one bench/run.sh work dir (meta.txt, manifest.tsv, raw/*.txt) into the markdown section
appended to docs/benchmarks.md. Reads only; the analysis prose is written by hand afterwards.

p50 comes from sysbench's --histogram (it prints a single percentile, here the 95th); every
figure is the mean over the rounds of a cell, and the per-round TPS are listed next to it so
the spread is visible.
"""
import re
import sys
from collections import OrderedDict, defaultdict
from pathlib import Path

LABELS = OrderedDict([
    ("standalone", "standalone MariaDB (flush=1)"),
    ("standalone_f2", "standalone MariaDB (flush=2)"),
    ("certus_n1", "certus, all to n1"),
    ("certus_3", "certus, spread n1,n2,n3"),
    ("galera_f1_n1", "Galera flush=1, all to n1"),
    ("galera_f1_3", "Galera flush=1, spread"),
    ("galera_f2_n1", "Galera flush=2, all to n1"),
    ("galera_f2_3", "Galera flush=2, spread"),
])
HIST = re.compile(r"^\s*([0-9.]+) \|\**\s+(\d+)\s*$")


def per_sec(line):
    m = re.search(r"\(([0-9.]+) per sec", line)
    return float(m.group(1)) if m else None


def parse(path):
    r = {"ok": False, "tps": None, "qps": None, "avg": None, "p95": None, "p50": None,
         "err": 0, "err_s": 0.0}
    hist = []
    for line in Path(path).read_text(errors="replace").splitlines():
        s = line.strip()
        if s.startswith("transactions:"):
            r["tps"] = per_sec(s)
            r["txns"] = int(s.split()[1])
        elif s.startswith("queries:"):
            r["qps"] = per_sec(s)
        elif s.startswith("ignored errors:"):
            r["err"] = int(s.split()[2])
            r["err_s"] = per_sec(s) or 0.0
        elif s.startswith("avg:"):
            r["avg"] = float(s.split()[1])
        elif s.startswith("95th percentile:"):
            r["p95"] = float(s.split()[2])
        elif s.startswith("# exit="):
            r["ok"] = s == "# exit=0"
        else:
            m = HIST.match(line)
            if m:
                hist.append((float(m.group(1)), int(m.group(2))))
    total = sum(c for _, c in hist)
    if total:
        seen = 0
        for value, count in hist:
            seen += count
            if seen * 2 >= total:
                r["p50"] = value
                break
    r["ok"] = r["ok"] and r["tps"] is not None
    return r


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def load(work):
    meta = {}
    meta_file = work / "meta.txt"  # bench/commit_path.sh writes none
    for line in (meta_file.read_text().splitlines() if meta_file.exists() else []):
        k, _, v = line.partition("=")
        meta[k] = v
    meta = defaultdict(lambda: "?", meta)  # a run that stopped early still gets a report
    cells = OrderedDict()
    for line in (work / "manifest.tsv").read_text().splitlines():
        fields = line.split("\t")
        section, workload, threads, target, rnd, extra, loadavg, questions, path = fields[:9]
        key = (section, workload, extra, int(threads), target)
        runs = cells.setdefault(key, [])
        r = parse(path)
        r.update(round=int(rnd), load=loadavg.split()[0], questions=questions, cpu=None)
        # Optional 10th field: CPU clock ticks (1/100 s) of the target's processes, "proxy/server".
        if len(fields) > 9 and "/" in fields[9] and r.get("txns"):
            proxy, server = (int(x) for x in fields[9].split("/"))
            r["cpu"] = (proxy * 10.0 / r["txns"], server * 10.0 / r["txns"])
        runs.append(r)
    agg = {}
    for key, runs in cells.items():
        good = [r for r in runs if r["ok"]]
        agg[key] = {
            "n": len(runs), "good": len(good),
            "tps": mean([r["tps"] for r in good]), "p50": mean([r["p50"] for r in good]),
            "p95": mean([r["p95"] for r in good]), "avg": mean([r["avg"] for r in good]),
            "err_s": mean([r["err_s"] for r in good]), "err": sum(r["err"] for r in good),
            "rounds": [r["tps"] if r["ok"] else None for r in runs],
            "loads": [r["load"] for r in runs],
            "questions": [r["questions"] for r in runs if r["questions"] != "-"],
            "cpu": (mean([r["cpu"][0] for r in good if r["cpu"]]),
                    mean([r["cpu"][1] for r in good if r["cpu"]])),
        }
    return meta, agg


def f(x, digits=0):
    return "-" if x is None else f"{x:.{digits}f}"


def ratio(a, b):
    if not a or not b or a["tps"] is None or b["tps"] is None or b["tps"] == 0:
        return None
    return a["tps"] / b["tps"]


def tps_cell(a):
    if a["good"] == 0:
        return "FAILED"
    s = f(a["tps"], 0)
    return s if a["good"] == a["n"] else f"{s} ({a['n'] - a['good']} of {a['n']} failed)"


def cpu_cell(a, target):
    proxy, server = a["cpu"]
    if server is None:
        return "-"
    if target.startswith("certus"):
        return f"{proxy:.2f} + {server:.2f}"
    return f"{server:.2f}"


def row(a, label, threads, target):
    rounds = " / ".join("fail" if t is None else f"{t:.0f}" for t in a["rounds"])
    return (f"| {label} | {threads} | {tps_cell(a)} | {rounds} | {f(a['p50'], 2)} | "
            f"{f(a['p95'], 2)} | {f(a['err_s'], 2)} ({a['err']}) | {cpu_cell(a, target)} "
            f"| {min(a['loads'], key=float)}-{max(a['loads'], key=float)} |")


HEADER = ("| system | thr | TPS (mean) | TPS per round | p50 ms | p95 ms | ignored 1213/1205 per s (total) "
          "| CPU ms per trx (certus + mariadbd) | load avg (1 min) |\n|---|---:|---:|---|---:|---:|---:|---:|---|")


def raft_leaders(work):
    """Every "become leader id=N" line of the certus logs: which node led, and whether it changed."""
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    found = []
    for log in sorted((work / "logs").glob("certus_n*.log")):
        for line in log.read_text(errors="replace").splitlines():
            m = re.search(r"become leader id=(\d+)", ansi.sub("", line))
            if m:
                found.append((line[:40].strip(), m.group(1)))
    return [f"n{node}" for _, node in found]


def main():
    work = Path(sys.argv[1])
    meta, agg = load(work)
    leaders = raft_leaders(work)
    out = []
    p = out.append
    p("")
    p(f"## certus vs standalone MariaDB vs MariaDB Galera ({meta['start']}, `{meta['mode']}` mode)")
    p("")
    p(f"Command: `bench/run.sh {meta['mode']}` (certus {meta['commit']}, MariaDB {meta['mariadbd']}, "
      f"galera-4 {meta['galera']}, sysbench {meta['sysbench']}; {meta['nproc']} cores, shared). "
      f"Run {meta['start']} to {meta['end']}; {meta['secs']}.")
    p(f"Load average at start {meta['load_start']}, at end {meta['load_end']}. "
      f"4 KiB O_DSYNC write: {meta['dd_start']} ms at start, {meta['dd_end']} ms at end.")
    p("")
    p("Every sysbench command line:")
    p("")
    p("```")
    p(f"sysbench <workload> {meta['sb_common']} <CONN> --threads=<n> --time=<s> "
      "--report-interval=0 --histogram=on run")
    p("```")
    p("")
    p(f"certus Raft leader during the run: {', then '.join(leaders) if leaders else 'not found in the logs'} "
      "(a write sent to another node is forwarded to it).")
    p("")
    p(f"Rows before/after (per node, must stay 40000): standalone {meta['rows_before_standalone']} -> "
      f"{meta['rows_after_standalone']}, Galera {meta['rows_before_galera']} -> {meta['rows_after_galera']}, "
      f"certus {meta['rows_before_certus']} -> {meta['rows_after_certus']}.")
    p("")

    # ---- targets -----------------------------------------------------------------------------
    def g(section, workload, threads, target, extra=""):
        return agg.get((section, workload, extra, threads, target))

    p("### Issue 8 targets")
    p("")
    p("| target | measured | goal | met? |")
    p("|---|---:|---:|---|")

    def verdict(x, ok):
        return "-" if x is None else ("yes" if ok(x) else "**no**")

    for t in (1, 16):
        x = ratio(g("main", "oltp_point_select", t, "certus_n1"), g("main", "oltp_point_select", t, "standalone"))
        p(f"| point_select {t} thr, certus n1 / standalone (TPS) | {f(x, 2)} | >= 0.90 | {verdict(x, lambda v: v >= 0.90)} |")
    x = ratio(g("main", "oltp_write_only", 16, "certus_3"), g("main", "oltp_write_only", 16, "galera_f1_3"))
    p(f"| write_only 16 thr spread, certus / Galera flush=1 (TPS) | {f(x, 2)} | >= 1.2 | {verdict(x, lambda v: v >= 1.2)} |")
    c, gl = g("latency", "oltp_update_index", 1, "certus_n1"), g("latency", "oltp_update_index", 1, "galera_f1_n1")
    x = c["p50"] / gl["p50"] if c and gl and c["p50"] and gl["p50"] else None
    p(f"| 1-client commit p50, certus / Galera flush=1 | {f(x, 2)} | <= 0.8 | {verdict(x, lambda v: v <= 0.8)} |")
    for w in ("oltp_read_write", "oltp_write_only", "oltp_update_index"):
        c, gl = g("main", w, 16, "certus_3"), g("main", w, 16, "galera_f1_3")
        if c and gl and c["err_s"] is not None and gl["err_s"] is not None:
            p(f"| {w} 16 thr spread, ignored errors/s certus vs Galera flush=1 | {c['err_s']:.1f} vs {gl['err_s']:.1f} "
              f"| certus <= Galera | {verdict(c['err_s'], lambda v: v <= gl['err_s'])} |")
    p("")

    # ---- ratios --------------------------------------------------------------------------------
    p("### TPS ratios")
    p("")
    p("| workload | thr | certus n1 / standalone | certus spread / standalone | certus n1 / Galera f1 n1 "
      "| certus spread / Galera f1 spread | certus spread / Galera f2 spread |")
    p("|---|---:|---:|---:|---:|---:|---:|")
    for w in ("oltp_point_select", "oltp_read_write", "oltp_write_only", "oltp_update_index"):
        for t in (1, 16):
            sa = g("main", w, t, "standalone")
            cells = [ratio(g("main", w, t, "certus_n1"), sa), ratio(g("main", w, t, "certus_3"), sa),
                     ratio(g("main", w, t, "certus_n1"), g("main", w, t, "galera_f1_n1")),
                     ratio(g("main", w, t, "certus_3"), g("main", w, t, "galera_f1_3")),
                     ratio(g("main", w, t, "certus_3"), g("main", w, t, "galera_f2_3"))]
            p(f"| {w} | {t} | " + " | ".join(f(x, 2) for x in cells) + " |")
    p("")

    # ---- main matrix -----------------------------------------------------------------------------
    p("### sysbench OLTP, 1 and 16 threads")
    p("")
    p("CPU ms per trx: CPU time (user + system) of the system's server processes during the cell "
      "(all three nodes' mariadbd, plus the certus processes for certus), divided by the "
      "transactions sysbench completed. The box has 2 cores shared with other work, so at 16 "
      "threads this is what bounds throughput.")
    p("")
    p("Galera spread cells also list the per-node `Questions` deltas of round 1 (n1/n2/n3), which "
      "show how sysbench spread its connections.")
    for w in ("oltp_point_select", "oltp_read_write", "oltp_write_only", "oltp_update_index"):
        p("")
        p(f"#### {w}")
        p("")
        p(HEADER)
        notes = []
        for t in (1, 16):
            for target, label in LABELS.items():
                a = g("main", w, t, target)
                if a:
                    p(row(a, label, t, target))
                    if target.endswith("_3") and target.startswith("galera") and a["questions"]:
                        notes.append(f"{label} t{t}: Questions {a['questions'][0]}")
        if notes:
            p("")
            p("; ".join(notes) + ".")
    p("")

    # ---- latency ---------------------------------------------------------------------------------
    p("### 1-client commit latency (autocommit single-row UPDATE, `oltp_update_index`, 1 thread)")
    p("")
    p(HEADER)
    for target, label in LABELS.items():
        a = g("latency", "oltp_update_index", 1, target)
        if a:
            p(row(a, label, 1, target))
    p("")

    # ---- scaling ---------------------------------------------------------------------------------
    scale_targets = [t for t in LABELS if any(k[0] == "scale" and k[4] == t for k in agg)]
    rows_list = sorted({k[2] for k in agg if k[0] == "scale"}, key=lambda e: int(e.split("=")[1]))
    threads_list = sorted({k[3] for k in agg if k[0] == "scale"})
    if scale_targets:
        p("### Scaling: threads x rows per transaction (`bench/lua/txn_rows.lua`)")
        p("")
        p("One `UPDATE sbtestN SET k=k+1 WHERE id BETWEEN ? AND ?` of ROWS rows per transaction "
          "(BEGIN/COMMIT). Cell: TPS, p95 ms, ignored errors per second.")
        for extra in rows_list:
            p("")
            p(f"#### {extra.lstrip('-').replace('=', ' = ')}")
            p("")
            p("| thr | " + " | ".join(LABELS[t] for t in scale_targets) + " | certus / Galera f1 |")
            p("|---:|" + "---:|" * (len(scale_targets) + 1))
            for t in threads_list:
                cells = []
                for target in scale_targets:
                    a = g("scale", "txn_rows", t, target, extra)
                    cells.append("-" if not a else f"{tps_cell(a)}, {f(a['p95'], 2)} ms, {f(a['err_s'], 1)}/s")
                cert = next((g("scale", "txn_rows", t, c, extra) for c in ("certus_3", "certus_n1")
                             if g("scale", "txn_rows", t, c, extra)), None)
                p(f"| {t} | " + " | ".join(cells) + f" | {f(ratio(cert, g('scale', 'txn_rows', t, 'galera_f1_3', extra)), 2)} |")
        p("")

    # ---- configs ---------------------------------------------------------------------------------
    p("### Configuration")
    p("")
    p("Every system gets the same InnoDB sizing. The standalone server and the Galera nodes use the "
      "my.cnf below (Galera adds the wsrep lines); `innodb_flush_log_at_trx_commit` is switched at run "
      "time with `SET GLOBAL` for the flush=2 cells. certus generates its backend's my.cnf (shown "
      "for n1) and receives the same sizing with `--backend-option`.")
    p("")
    for name, title in (("galera_n1.my.cnf", "Galera n1 (standalone: the same without the wsrep lines)"),
                        ("certus_n1_backend.my.cnf", "certus n1 backend (generated)")):
        path = work / "raw" / name
        if path.exists():
            p(f"<details><summary>{title}</summary>")
            p("")
            p("```ini")
            p(path.read_text().rstrip())
            p("```")
            p("</details>")
            p("")
    p(f"certus node command (n1): `{meta.get('certus_cmd', '?').strip()}`")
    p("")
    stages = stage_table(work)
    if stages:
        p("Where certus commits spend their time, from the origin nodes' "
          "`certus_commit_stage_seconds` histograms (p50 / mean ms over all rounds of a cell; "
          "stages as in the commit-path section):")
        p("")
        p(stages)
        p("")
    return "\n".join(out)


def commit_path(work):
    """The table rows of bench/commit_path.sh: each stage and the p50 it adds to the one before."""
    _, agg = load(work)
    names = [("certus_backend", "backend directly (socket)"), ("certus_single", "one-node certus"),
             ("certus_leader", "3-node certus, Raft leader"), ("certus_follower", "3-node certus, follower")]
    rows, prev = [], None
    for target, label in names:
        a = agg.get(("commit", "oltp_update_index", "", 1, target))
        if not a:
            continue
        added = "-" if prev is None or a["p50"] is None else f"{a['p50'] - prev:+.2f}"
        cpu = cpu_cell(a, "x" if target == "certus_backend" else "certus")
        rows.append(f"| {label} | {tps_cell(a)} | {f(a['p50'], 2)} | {added} | {f(a['p95'], 2)} | {cpu} |")
        prev = a["p50"]
    return "\n".join(rows)


# ---- per-stage latency (certus /metrics, scraped before and after each cell) ----------------

STAGES = ["capture", "keys", "propose", "certify", "apply_queue", "apply", "outcome",
          "commit"]
PROM = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([-+0-9.eEinfINFNa]+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prom(path):
    """Sums every sample over the nodes in one scrape file: {(name, ((label, value), ...)): v}."""
    out = defaultdict(float)
    if not Path(path).exists():
        return out
    for line in Path(path).read_text(errors="replace").splitlines():
        m = PROM.match(line)
        if not m:
            continue
        labels = tuple(sorted((k, v) for k, v in LABEL.findall(m.group(2) or "") if k != "node"))
        out[(m.group(1), labels)] += float(m.group(3))
    return out


def histogram(delta, name, extra=()):
    """(count, sum, [(le, cumulative count)]) of one histogram in a delta."""
    extra = tuple(extra)
    count = delta.get((name + "_count", extra), 0.0)
    total = delta.get((name + "_sum", extra), 0.0)
    buckets = []
    for (n, labels), v in delta.items():
        if n != name + "_bucket":
            continue
        rest = tuple(kv for kv in labels if kv[0] != "le")
        le = dict(labels).get("le")
        if rest == extra and le is not None:
            buckets.append((float("inf") if le == "+Inf" else float(le), v))
    buckets.sort()
    return count, total, buckets


def quantile(buckets, count, q):
    """Linear interpolation inside the bucket that holds the q-quantile (as Prometheus does)."""
    if count <= 0:
        return None
    rank, prev_le, prev_c = q * count, 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 0)
        prev_le, prev_c = le, c
    return None


def total_time(path):
    """sysbench's "total time:" of one cell, in seconds."""
    if not Path(path).exists():
        return None
    m = re.search(r"total time:\s+([0-9.]+)s", Path(path).read_text(errors="replace"))
    return float(m.group(1)) if m else None


def stage_table(work, secs=0):
    """Markdown rows: per target, each stage's p50 and mean (ms) at the origin node(s), summed
    over the rounds; plus Raft entries per second and write sets per entry."""
    per_target = OrderedDict()
    for line in (work / "manifest.tsv").read_text().splitlines():
        fields = line.split("\t")
        section, workload, threads, target, path = fields[0], fields[1], fields[2], fields[3], fields[8]
        base = path[:-4] if path.endswith(".txt") else path
        before, after = parse_prom(base + ".before.prom"), parse_prom(base + ".after.prom")
        if not after:
            continue
        key = (section, workload, int(threads), target)
        acc = per_target.setdefault(key, {"delta": defaultdict(float), "runs": 0, "time": 0.0})
        acc["runs"] += 1
        acc["time"] += total_time(path) or secs
        for k, v in after.items():
            acc["delta"][k] += v - before.get(k, 0.0)
    rows = []
    for (section, workload, threads, target), acc in per_target.items():
        d, cells = acc["delta"], []
        for stage in STAGES:
            count, total, buckets = histogram(d, "certus_commit_stage_seconds", [("stage", stage)])
            p50 = quantile(buckets, count, 0.5)
            cells.append("-" if not count else f"{p50 * 1000:.2f} / {total / count * 1000:.2f}")
        entries = d.get(("certus_raft_entries_total", ()), 0.0)
        n_nodes = 3 if target == "certus_3" else 1  # every node applies every entry
        ws = histogram(d, "certus_raft_entry_write_sets")
        per_entry = f"{ws[1] / ws[0]:.2f}" if ws[0] else "-"
        rate = f"{entries / n_nodes / acc['time']:.0f}" if acc["time"] else "-"
        label = LABELS.get(target, target)
        rows.append(f"| {workload} t{threads} | {label} | " + " | ".join(cells)
                    + f" | {rate} | {per_entry} |")
    head = ("| workload | target | " + " | ".join(STAGES) + " | Raft entries/s | write sets/entry |\n"
            + "|---|---|" + "---:|" * (len(STAGES) + 2))
    return head + "\n" + "\n".join(rows) if rows else ""


LABELS.update({"certus_leader": "3-node certus, Raft leader", "certus_follower":
               "3-node certus, follower", "certus_single": "one-node certus"})


if __name__ == "__main__":
    if sys.argv[1] == "--commit-path":
        print(commit_path(Path(sys.argv[2])))
    elif sys.argv[1] == "--stages":
        print(stage_table(Path(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0))
    else:
        print(main())
