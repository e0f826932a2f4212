"""Benchmark of `fwsiem run`: sidecar CPU per window, backfill throughput, peak RSS at scale.

Usage: python scripts/bench_run.py --url http://127.0.0.1:9251 [--write]

Three measurements on a real engine, each on data of its own (data streams
``logs-fwsiem.benchrun*-default``, deleted afterwards unless ``--keep``):

1. Sidecar CPU time per window at 10k, 100k and 1M events in the window with a fixed set of
   entities (``--sources`` sources, ``--services`` services, 50 rules, 12 hosts): the same
   window is processed ``--repeat`` times by `WindowRunner.process` (read, detect, write,
   checkpoint) and the median CPU time of this process is reported, next to the wall time
   (which includes the engine's aggregation time). Features come from aggregations, so the
   sidecar's CPU should stay nearly flat while events grow 100-fold.
2. Backfill throughput: ``fwsiem run --from --to`` as a subprocess over ``--backfill-hours``
   of the evaluation data (``logs-fwsiem.detecteval-default`` from
   scripts/evaluate_detection.py when present, else a freshly simulated and indexed span), in
   events of covered data per second of wall time.
3. Peak RSS of ``fwsiem run`` (a subprocess, ``ru_maxrss``) over windows that each hold
   100k active source IPs and 100k active services.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from doc_sections import replace_section  # noqa: E402

from plugin.config import load_config
from plugin.setup import run_setup
from plugin.store import Store
from plugin.windows import WindowRunner

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_709_510_400_000  # 2024-03-04T00:00:00Z
W = 60_000


def _iso(ms: np.ndarray) -> list[str]:
    return np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms").tolist()


def synthetic(n: int, start_ms: int, sources: int, services: int, seed: int,
              distinct: bool = False) -> list[str]:
    """``n`` parsed events in one window, as NDJSON source lines.

    With ``distinct`` every event has its own source IP and service (n active entities each).
    """
    rng = np.random.default_rng(seed)
    ts = _iso(start_ms + rng.integers(0, W, n))
    if distinct:
        s_idx = np.arange(n)
        d_idx = np.arange(n)
    else:
        # every entity of the fixed set occurs in every window, the rest is skewed
        s_idx = np.concatenate([np.arange(sources), rng.zipf(1.6, n) % sources])[:n]
        d_idx = np.concatenate([np.arange(services), rng.zipf(1.4, n) % services])[:n]
    denied = rng.random(n) < 0.05
    rules = rng.integers(0, 50, n)
    hosts = rng.integers(0, 12, n)
    pk = rng.integers(1, 40, n)
    sport = rng.integers(1024, 65535, n)
    ports = np.array([443, 80, 53, 22, 8080, 3306, 25, 123])
    out = []
    for i in range(n):
        s, d = int(s_idx[i]), int(d_idx[i])
        dport = int(ports[d % len(ports)])
        out.append(json.dumps({
            "@timestamp": ts[i] + "Z",
            "event": {"kind": "event", "category": ["network"],
                      "type": ["connection", "denied" if denied[i] else "allowed", "end"],
                      "action": "drop" if denied[i] else "term", "dataset": "fwsiem.nsx_dfw"},
            "source": {"ip": f"10.{64 + s // 65536}.{s // 256 % 256}.{s % 256}",
                       "port": int(sport[i]), "packets": int(pk[i]), "bytes": int(pk[i]) * 90},
            "destination": {"ip": f"172.{16 + d // 65536}.{d // 256 % 256}.{d % 256}",
                            "port": dport},
            "network": {"transport": "tcp", "packets": int(pk[i]) * 2,
                        "bytes": int(pk[i]) * 180, "type": "ipv4"},
            "rule": {"id": str(1000 + int(rules[i]))},
            "observer": {"hostname": f"esx-{int(hosts[i]):02d}.bench"},
        }, separators=(",", ":")))
    return out


def bulk_lines(store: Store, index: str, lines: list[str], chunk: int = 10_000) -> None:
    for i in range(0, len(lines), chunk):
        body = "".join('{"create":{}}\n' + x + "\n" for x in lines[i:i + chunk])
        resp = store.request("POST", f"/{index}/_bulk", body=body)
        if resp.get("errors"):
            bad = next(it for it in resp["items"] if next(iter(it.values()))["status"] >= 300)
            sys.exit(f"bulk refused documents in {index}: {json.dumps(bad)[:400]}")
    store.refresh(index)


def cpu_per_window(store: Store, base, sizes: list[int], args) -> list[dict]:
    rows = []
    for n in sizes:
        index = f"logs-fwsiem.benchrun{n}-default"
        store.delete_index(index)
        t = time.perf_counter()
        bulk_lines(store, index, synthetic(n, T0, args.sources, args.services, seed=n))
        index_s = time.perf_counter() - t
        config = base.with_overrides("indices", events_pattern=index,
                                     anomalies=f"fwsiem-anomalies-benchrun{n}",
                                     incidents=f"fwsiem-incidents-benchrun{n}",
                                     state=f"fwsiem-state-benchrun{n}")
        runner = WindowRunner(store, config)
        runner.process(T0, T0 + W)  # first window also chooses the top ports
        cpu, wall = [], []
        for _ in range(args.repeat):
            c, t = time.process_time(), time.perf_counter()
            runner.process(T0, T0 + W)
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - t)
        ents = {k: len(v) for k, v in runner.read_window(T0, T0 + W, runner.cp.state)["rows"]
                .items()}
        rows.append({"events": n, "entities": ents, "cpu_ms": 1000 * statistics.median(cpu),
                     "wall_ms": 1000 * statistics.median(wall), "index_s": index_s})
        print(rows[-1], flush=True)
        if not args.keep:
            for name in (index, config.index("anomalies"), config.index("incidents"),
                         config.index("state")):
                store.delete_index(name)
    return rows


def heap_gib(store: Store) -> float:
    """The engine's JVM heap (largest node), in GiB."""
    nodes = store.request("GET", "/_nodes/jvm").get("nodes", {})
    return max((n["jvm"]["mem"]["heap_max_in_bytes"] for n in nodes.values()), default=0) / 2**30


def run_cli(env: dict, *args: str) -> tuple[float, float, int, str]:
    """Run ``fwsiem run`` in a subprocess: wall seconds, CPU seconds, peak RSS (MB), stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "plugin", "run", *args], env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"fwsiem run failed ({out.returncode}): {out.stderr[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, after.ru_maxrss // 1024, out.stderr


def cli_env(url: str, events: str, tag: str) -> dict:
    env = dict(os.environ)
    env.update({"FWSIEM_URL": url, "FWSIEM_INDICES_EVENTS_PATTERN": events,
                "FWSIEM_INDICES_ANOMALIES": f"fwsiem-anomalies-{tag}",
                "FWSIEM_INDICES_INCIDENTS": f"fwsiem-incidents-{tag}",
                "FWSIEM_INDICES_STATE": f"fwsiem-state-{tag}", "FWSIEM_RUN_LAG": "0s"})
    return env


def simulated_span(store: Store, start: int, end: int) -> str:
    """Simulate the default scenario over ``[start, end)`` and index it parsed."""
    import importlib.util

    from ml.simulate import Simulation, load_scenario

    spec = importlib.util.spec_from_file_location("evaluate_detection",
                                                  ROOT / "scripts" / "evaluate_detection.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    index = "logs-fwsiem.benchrunbackfill-default"
    store.delete_index(index)
    start_iso = np.datetime_as_string(np.datetime64(start, "ms"), unit="s") + "Z"
    sim = Simulation(load_scenario("default"), hours=(end - start) / 3_600_000, seed=5,
                     start=start_iso)
    for frame in sim.iter_events():
        mod._bulk(store, index, mod.parsed_documents(frame))
    store.refresh(index)
    return index


def backfill(store: Store, args) -> dict:
    index = "logs-fwsiem.detecteval-default"
    start = T0 + 24 * 3_600_000  # the evaluation day, models start cold
    end = start + int(args.backfill_hours * 3_600_000)
    if not (store.exists(index) and store.count(index) > 0):
        index = simulated_span(store, start, end)
    q = {"range": {"@timestamp": {"gte": start, "lt": end, "format": "epoch_millis"}}}
    events = store.count(index, q)
    tag = "benchrun-backfill"
    for name in (f"fwsiem-anomalies-{tag}", f"fwsiem-incidents-{tag}", f"fwsiem-state-{tag}"):
        store.delete_index(name)
    wall, cpu, rss, err = run_cli(cli_env(args.url, index, tag), "--from", str(start),
                                  "--to", str(end))
    windows = int(re.search(r"(\d+) windows processed", err).group(1))
    for name in (f"fwsiem-anomalies-{tag}", f"fwsiem-incidents-{tag}", f"fwsiem-state-{tag}"):
        store.delete_index(name)
    res = {"hours": args.backfill_hours, "events": events, "windows": windows, "wall_s": wall,
           "cpu_s": cpu, "rss_mb": rss, "events_per_s": events / wall,
           "windows_per_s": windows / wall}
    print(res, flush=True)
    return res


def peak_rss(store: Store, args) -> dict:
    index = "logs-fwsiem.benchrunrss-default"
    store.delete_index(index)
    n = args.entities
    t = time.perf_counter()
    for k in range(args.rss_windows):
        bulk_lines(store, index, synthetic(n, T0 + k * W, 0, 0, seed=k, distinct=True))
    index_s = time.perf_counter() - t
    tag = "benchrun-rss"
    wall, cpu, rss, err = run_cli(cli_env(args.url, index, tag), "--from", str(T0),
                                  "--to", str(T0 + args.rss_windows * W))
    res = {"entities": n, "windows": args.rss_windows, "wall_s": wall, "cpu_s": cpu,
           "rss_mb": rss, "index_s": index_s}
    print(res, flush=True)
    if not args.keep:
        for name in (index, f"fwsiem-anomalies-{tag}", f"fwsiem-incidents-{tag}",
                     f"fwsiem-state-{tag}"):
            store.delete_index(name)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("FWSIEM_URL", "http://127.0.0.1:9251"))
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--services", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--backfill-hours", type=float, default=3.0)
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--rss-windows", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--write", action="store_true", help="Update BENCHMARKS.md")
    args = ap.parse_args()

    base = load_config(env={}).with_overrides("engine", url=args.url)
    store = Store.connect(base.engine)
    run_setup(store, base, only={"template"})
    print(f"engine: {store.flavor} {store.version} at {store.safe_url}", flush=True)
    t_all = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",")]
    cpu_rows = cpu_per_window(store, base, sizes, args)
    # RSS first: ru_maxrss of the children is a maximum over all of them
    rss = peak_rss(store, args)
    bf = backfill(store, args)

    cmd = f"python scripts/bench_run.py --url {args.url} --write"
    lines = [
        f"Command: `{cmd}` ({store.flavor} {store.version}, one node, {heap_gib(store):g} GiB "
        "heap, on the same "
        f"host; machine: 2-core, 24 GiB, shared with other work; date: "
        f"{time.strftime('%Y-%m-%d')}; whole benchmark {time.perf_counter() - t_all:.0f} s).",
        "",
        "Sidecar CPU time per 60 s window (`WindowRunner.process`: aggregations read, features, "
        f"river detectors, anomaly and checkpoint writes; median of {args.repeat}; the engine's "
        "own time is in the wall column only):",
        "",
        "| events in the window | entities (source / service / rule / host) | sidecar CPU ms "
        "| wall ms |",
        "|---|---|---|---|",
    ]
    for r in cpu_rows:
        e = r["entities"]
        lines.append(f"| {r['events']:,} | {e.get('source', 0):,} / {e.get('service', 0):,} / "
                     f"{e.get('rule', 0)} / {e.get('host', 0)} | {r['cpu_ms']:.0f} "
                     f"| {r['wall_ms']:.0f} |")
    lines += [
        "",
        f"Backfill (`fwsiem run --from --to`, subprocess, {bf['hours']:g} h of the simulated "
        f"evaluation day, {bf['windows']} windows, {bf['events']:,} events): "
        f"**{bf['events_per_s']:,.0f} events/s** of covered data ({bf['windows_per_s']:.1f} "
        f"windows/s; sidecar CPU {bf['cpu_s']:.0f} s of {bf['wall_s']:.0f} s wall).",
        "",
        f"Peak RSS of `fwsiem run` over {rss['windows']} windows with "
        f"{rss['entities']:,} active source IPs and {rss['entities']:,} active services each: "
        f"**{rss['rss_mb']} MB** (goal <= 1024 MB; {rss['wall_s']:.0f} s wall, "
        f"{rss['cpu_s']:.0f} s CPU).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        replace_section(ROOT / "BENCHMARKS.md", "run",
                        "## Online detection (`fwsiem run`)\n\n" + text, "# Benchmarks")


if __name__ == "__main__":
    main()
