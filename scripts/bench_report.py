"""Benchmark: `fwsiem report` and one pass of the alert definitions against a running cluster."""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time

from plugin import alerting
from plugin.config import load_config
from plugin.report import data_period, write_report
from plugin.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True, help="cluster URL")
    ap.add_argument("--events", default="logs-fwsiem.*", help="events index or pattern")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    config = load_config(env={}).with_overrides("engine", url=args.url).with_overrides(
        "indices", events_pattern=args.events)
    store = Store.connect(config.engine)
    n = store.count(args.events)
    span = data_period(store, args.events)
    print(f"{store.flavor} {store.version}: {n:,} events in {args.events}, {span}")
    with tempfile.TemporaryDirectory() as out:
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            path = write_report(store, config, out)
            times.append(time.perf_counter() - t)
        size = path.stat().st_size
    print(f"report: best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s, "
          f"{size / 1e6:.2f} MB HTML")
    now = span[1] if span else dt.datetime.now(dt.timezone.utc)
    for d in alerting.load_definitions():
        t = time.perf_counter()
        for _ in range(args.runs):
            result = alerting.evaluate(d, store, now, config)
        print(f"alert {d['id']:30} {(time.perf_counter() - t) / args.runs * 1000:7.1f} ms "
              f"per evaluation (fired={result.fired})")


if __name__ == "__main__":
    main()
