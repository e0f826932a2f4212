"""Benchmark: action predictor training time and peak memory by size; warm predict latency.

    python scripts/bench_train.py --sizes 100000,1000000 [--per-line]

Rows are simulated NSX DFW lines (scenario ``seed000``, repeated with new seeds until the size
is reached). By default they are first aggregated to distinct tuples with event counts as
weights, as ``fwsiem train action`` reads them from the cluster (source ports in 1024-wide
buckets); ``--per-line`` fits one row per line instead. Each size runs in a fresh process so
its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def lines(n: int):
    import pandas as pd

    from ml.action import tuples_from_events
    from ml.simulate import Simulation, load_scenario

    parts, have, seed = [], 0, 1
    while have < n:
        sim = Simulation(load_scenario("seed000"), hours=24, seed=seed)
        for ev in sim.iter_events():
            parts.append(tuples_from_events(ev)[["timestamp", "proto", "sip", "dip", "sport",
                                                 "dport", "direction", "action"]])
            have += len(ev)
            if have >= n:
                break
        seed += 1
    return pd.concat(parts, ignore_index=True).iloc[:n]


def one(n: int, per_line: bool) -> dict:
    from ml.action import action_predictor, fit_weighted

    frame = lines(n)
    if not per_line:
        frame = frame.assign(sport=(frame["sport"] // 1024) * 1024 + 1023,
                             day=frame["timestamp"].dt.floor("D"))
        keys = ["day", "proto", "sip", "dip", "sport", "dport", "direction", "action"]
        frame = frame.groupby(keys, observed=True).size().rename("weight").reset_index()
    else:
        frame["weight"] = 1.0
    started = time.perf_counter()
    model = fit_weighted(action_predictor(), frame, frame["action"], frame["weight"])
    fit_s = time.perf_counter() - started
    probe = frame.iloc[:1]
    model.predict_proba(probe)
    t = time.perf_counter()
    for _ in range(50):
        model.predict_proba(probe)
    latency_ms = (time.perf_counter() - t) / 50 * 1000
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"events": n, "rows": len(frame), "fit_s": round(fit_s, 1),
            "peak_rss_mib": round(rss), "predict_ms": round(latency_ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--per-line", action="store_true")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.per_line)))
        return
    print("| events | training rows | fit s | peak RSS MiB | warm predict ms |")
    print("|---:|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--one", str(n)] + (["--per-line"] if args.per_line
                                                             else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {r['events']:,} | {r['rows']:,} | {r['fit_s']} | {r['peak_rss_mib']} | "
              f"{r['predict_ms']} |", flush=True)


if __name__ == "__main__":
    main()
