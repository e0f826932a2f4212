"""Benchmark: `fwsiem ingest` through the pipelines vs bulk-indexing the same events already parsed.

Usage: python scripts/bench_ingest.py --url http://127.0.0.1:9201 [--lines 1000000]

Both phases run against the same engine in one run: (A) NSX DFW lines from the simulator go
through `fwsiem ingest` (a subprocess) and the fwsiem-logs pipelines; (B) the same events, already
parsed (the simulator's ECS rows), are bulk-indexed without any pipeline. Prints both rates,
their ratio (goal >= 0.7) and the CPU seconds of the shipper and of the engine in each phase.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from plugin.config import load_config
from plugin.setup import run_setup
from plugin.shipping import line_id
from plugin.store import Store


def engine_cpu_ms(store: Store) -> int:
    stats = store.request("GET", "/_nodes/stats/process", params={"filter_path": "nodes.*.process.cpu"})
    return sum(int(n["process"]["cpu"]["total_in_millis"]) for n in stats["nodes"].values())


def simulated(n: int, seed: int):
    from ml.simulate import Simulation, load_scenario

    sim = Simulation(load_scenario("default"), hours=24 * 7, seed=seed)
    lines: list[str] = []
    for chunk in sim.iter_nsx_lines():
        lines.extend(chunk[: n - len(lines)])
        if len(lines) >= n:
            break
    frames, rows = [], 0
    for frame in sim.iter_events():
        frames.append(frame.iloc[: n - rows])
        rows += len(frames[-1])
        if rows >= n:
            break
    return lines, pd.concat(frames, ignore_index=True)


def _nest(row: dict) -> dict:
    doc: dict = {}
    for key, value in row.items():
        if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
            continue
        if isinstance(value, pd.Timestamp):
            value = value.isoformat()
        elif isinstance(value, np.generic):
            value = value.item()
        parts = key.split(".")
        cur = doc
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
    return doc


def bulk_parsed(store: Store, index: str, frame: pd.DataFrame, chunk: int) -> int:
    written = 0
    cols = [c for c in frame.columns if c not in ("incident.id", "session.id")]
    for start in range(0, len(frame), chunk):
        part = frame.iloc[start:start + chunk][cols].to_dict("records")
        body = []
        for i, row in enumerate(part):
            doc = _nest(row)
            doc.setdefault("event", {}).update({"kind": "event", "category": ["network"],
                                                "dataset": "fwsiem.nsx_dfw", "module": "fwsiem"})
            body.append(json.dumps({"create": {"_index": index,
                                               "_id": line_id("bench", start + i, b"")}}))
            body.append(json.dumps(doc))
        resp = store.request("POST", "/_bulk", body="\n".join(body) + "\n")
        written += sum(1 for it in resp["items"] if next(iter(it.values()))["status"] == 201)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("FWSIEM_URL", "http://127.0.0.1:9201"))
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--keep", action="store_true", help="Keep the benchmark's data streams.")
    args = ap.parse_args()

    config = load_config(env={}).with_overrides("engine", url=args.url)
    store = Store.connect(config.engine)
    tag = f"bench{int(time.time())}"
    piped, raw = f"logs-fwsiem.{tag}-pipeline", f"logs-fwsiem.{tag}-raw"
    run_setup(store, config.with_overrides("indices", events=piped))
    print(f"engine: {store.flavor} {store.version} at {store.safe_url}; {args.lines:,} lines")

    t = time.perf_counter()
    lines, frame = simulated(args.lines, args.seed)
    print(f"simulated {len(lines):,} lines and {len(frame):,} parsed events in "
          f"{time.perf_counter() - t:.1f}s")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dfwpktlogs.log"
        path.write_text("\n".join(lines) + "\n")
        del lines
        toml = Path(tmp) / "fwsiem.toml"
        toml.write_text(f'[engine]\nurl = "{args.url}"\nspool_dir = "{tmp}/spool"\n'
                        f'[indices]\nevents = "{piped}"\n')
        env = dict(os.environ, FWSIEM_CONFIG=str(toml))
        env.pop("FWSIEM_URL", None)

        cpu0, child0 = engine_cpu_ms(store), resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "plugin", "ingest", "--json", "--no-progress",
                              str(path)], env=env, capture_output=True, text=True)
        wall_a = time.perf_counter() - t
        child1, cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN), engine_cpu_ms(store)
        if out.returncode != 0:
            sys.exit(f"fwsiem ingest failed ({out.returncode}): {out.stderr[-2000:]}")
        summary = json.loads(out.stdout[out.stdout.index("{"):])
    ship_cpu_a = (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
    eng_cpu_a = (cpu1 - cpu0) / 1000
    done_a = summary["indexed"] + summary["dead_lettered"]

    self0, cpu0 = resource.getrusage(resource.RUSAGE_SELF), engine_cpu_ms(store)
    t = time.perf_counter()
    done_b = bulk_parsed(store, raw, frame, int(config.engine.bulk_chunk))
    wall_b = time.perf_counter() - t
    self1, cpu1 = resource.getrusage(resource.RUSAGE_SELF), engine_cpu_ms(store)
    ship_cpu_b = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    eng_cpu_b = (cpu1 - cpu0) / 1000

    rate_a, rate_b = done_a / wall_a, done_b / wall_b
    print(f"A  fwsiem ingest + pipelines: {done_a:,} docs ({summary['indexed']:,} events, "
          f"{summary['dead_lettered']:,} dead letters) in {wall_a:.1f}s = {rate_a:,.0f} lines/s; "
          f"CPU shipper {ship_cpu_a:.1f}s, engine {eng_cpu_a:.1f}s")
    print(f"B  parsed events, no pipeline: {done_b:,} docs in {wall_b:.1f}s = {rate_b:,.0f} docs/s; "
          f"CPU bulk client {ship_cpu_b:.1f}s, engine {eng_cpu_b:.1f}s")
    print(f"ratio A/B = {rate_a / rate_b:.2f} (goal >= 0.7); shipper CPU / engine CPU in A = "
          f"{ship_cpu_a / max(eng_cpu_a, 1e-9):.2f} (goal < 1)")
    if not args.keep:
        store.delete_index(piped)
        store.delete_index(raw)


if __name__ == "__main__":
    main()
