"""Benchmark: NSX lines per second of `fwsiem simulate` generation on one core, and peak memory."""

from __future__ import annotations

import argparse
import resource
import time

from ml.simulate import Simulation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    sim = Simulation(args.scenario, hours=args.hours, seed=args.seed)
    t0 = time.perf_counter()
    c0 = time.process_time()
    n = 0
    nbytes = 0
    for chunk in sim.iter_nsx_lines():
        n += len(chunk)
        nbytes += sum(map(len, chunk)) + len(chunk)
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scenario={args.scenario} hours={args.hours} lines={n} bytes={nbytes} "
          f"seconds={dt:.2f} cpu_seconds={cpu:.2f} lines_per_s={n / dt:,.0f} "
          f"lines_per_cpu_s={n / cpu:,.0f} MB_per_s={nbytes / dt / 1e6:.1f} "
          f"peak_rss_MB={rss:.0f}")


if __name__ == "__main__":
    main()
