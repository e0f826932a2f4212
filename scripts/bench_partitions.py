"""Benchmark of partitioned `fwsiem run` workers: windows per second and engine CPU per window.

Usage: python scripts/bench_partitions.py --url http://127.0.0.1:9291 [--url URL ...] [--write]

On each engine (a multi-node cluster from `fwsiem engine start --nodes 3`, a single node, ...)
``--hours`` of the simulated default scenario are indexed parsed (the same events on every
engine), then the same backfill (``fwsiem run --from --to``, one-minute windows) is run by 1
worker and by N workers started together (``--partition I/N``, real processes). Reported per
run: windows per second of wall time (every worker covers every window, for its share of the
entities), the engine's CPU time per window (scripts/engine_cpu.py: each engine process counted
once, a cluster that runs its nodes in one JVM being one process) and the workers' CPU time per
window.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench_run import heap_gib, simulated_span  # noqa: E402
from doc_sections import replace_section  # noqa: E402
from engine_cpu import EngineCpu

from plugin.config import load_config
from plugin.setup import run_setup
from plugin.store import Store

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_709_510_400_000 + 24 * 3_600_000  # 2024-03-05T00:00:00Z, the span bench_run simulates


def backfill(url: str, index: str, workers: int, start: int, end: int, cpu: EngineCpu) -> dict:
    """``workers`` partitioned `fwsiem run` processes over ``[start, end)``, started together."""
    tag = f"benchpart{workers}"
    store = Store.connect(load_config(env={}).with_overrides("engine", url=url).engine)
    ours = [f"fwsiem-{what}-{tag}" for what in ("anomalies", "incidents", "state")]
    for name in ours:
        store.delete_index(name)
    env = dict(os.environ, FWSIEM_URL=url, FWSIEM_INDICES_EVENTS_PATTERN=index,
               FWSIEM_INDICES_ANOMALIES=ours[0], FWSIEM_INDICES_INCIDENTS=ours[1],
               FWSIEM_INDICES_STATE=ours[2], FWSIEM_RUN_LAG="0s")
    env.pop("FWSIEM_CONFIG", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    engine_before = cpu.seconds()
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "plugin", "run", "--from", str(start),
                               "--to", str(end), "--partition", f"{i}/{workers}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(workers)]
    errs = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t
    engine = cpu.seconds() - engine_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for p, err in zip(procs, errs, strict=True):
        if p.returncode != 0:
            sys.exit(f"fwsiem run failed ({p.returncode}): {err[-2000:]}")
    windows = {int(re.search(r"(\d+) windows processed", e).group(1)) for e in errs}
    if len(windows) != 1:
        sys.exit(f"the workers processed different numbers of windows: {sorted(windows)}")
    [n] = windows
    sidecar = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    for name in ours:
        store.delete_index(name)
    res = {"workers": workers, "windows": n, "wall_s": wall, "windows_per_s": n / wall,
           "engine_cpu_ms_per_window": 1000 * engine / n,
           "sidecar_cpu_ms_per_window": 1000 * sidecar / n}
    print(res, flush=True)
    return res


def bench_engine(url: str, args) -> dict:
    config = load_config(env={}).with_overrides("engine", url=url)
    store = Store.connect(config.engine)
    run_setup(store, config, only={"template"})
    nodes = len(store.request("GET", "/_nodes", params={"filter_path": "nodes.*.name"})["nodes"])
    end = T0 + int(args.hours * 3_600_000)
    index = simulated_span(store, T0, end)
    events = store.count(index)
    cpu = EngineCpu(store)
    print(f"{url}: {store.flavor} {store.version}, {nodes} node(s) in {cpu.processes} "
          f"process(es), {events:,} events", flush=True)
    runs = [backfill(url, index, w, T0, end, cpu) for w in args.workers]
    if not args.keep:
        store.delete_index(index)
    return {"url": url, "nodes": nodes, "heap": heap_gib(store), "flavor": store.flavor,
            "version": store.version, "events": events, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", action="append", help="An engine on this host (repeatable).")
    ap.add_argument("--hours", type=float, default=1.0, help="Simulated hours (60 windows each).")
    ap.add_argument("--workers", default="1,3", help="Worker counts to compare.")
    ap.add_argument("--keep", action="store_true", help="Keep the simulated events.")
    ap.add_argument("--write", action="store_true", help="Update BENCHMARKS.md")
    args = ap.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    urls = args.url or [os.environ.get("FWSIEM_URL", "http://127.0.0.1:9201")]
    load = os.getloadavg()[0]
    t_all = time.perf_counter()
    results = [bench_engine(url, args) for url in urls]

    cmd = "python scripts/bench_partitions.py " + " ".join(f"--url {u}" for u in urls) + \
        (f" --hours {args.hours:g}" if args.hours != 1.0 else "") + " --write"
    lines = [
        f"Command: `{cmd}` (machine: 2 cores, 24 GiB, engines and workers on the same host; "
        f"load average {load:.1f} at the start{', shared with other work' if load > 3 else ''}"
        f"; date: {time.strftime('%Y-%m-%d')}; whole benchmark "
        f"{time.perf_counter() - t_all:.0f} s).",
        "",
        f"The same backfill ({args.hours:g} h of the simulated default scenario, one-minute "
        "windows) by one `fwsiem run` and by workers started together with `--partition I/N`. "
        "Windows per second count every window once (each worker covers every window for its "
        "share of the entities); the engine CPU is the engine process's user + system time "
        "(/proc) per window, the workers' CPU is the sum over the workers.",
        "",
        "| engine | events | workers | windows/s | engine CPU ms / window "
        "| workers' CPU ms / window |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        what = (f"{r['flavor']} {r['version']}, {r['nodes']} node{'s' if r['nodes'] > 1 else ''} "
                f"({r['heap']:g} GiB heap in all)")
        for run in r["runs"]:
            lines.append(f"| {what} | {r['events']:,} | {run['workers']} "
                         f"| {run['windows_per_s']:.2f} | {run['engine_cpu_ms_per_window']:.0f} "
                         f"| {run['sidecar_cpu_ms_per_window']:.0f} |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        replace_section(ROOT / "BENCHMARKS.md", "partitions",
                        "## Partitioned workers (`fwsiem run --partition I/N`)\n\n" + text,
                        "# Benchmarks")


if __name__ == "__main__":
    main()
