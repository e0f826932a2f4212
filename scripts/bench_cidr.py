"""Benchmark of the exact CIDR grouping: 10,000 IPv4 addresses, k = 200 (goal: under 2 s)."""

from __future__ import annotations

import argparse
import ipaddress
import platform
import random
import statistics
import time

from ml.cidr import group_cidrs


def addresses(n: int, seed: int, clustered: bool) -> list[str]:
    """``n`` distinct IPv4 addresses: uniform over the space, or in a few hundred /22 clusters."""
    rng = random.Random(seed)
    out: set[int] = set()
    if clustered:
        bases = [rng.getrandbits(22) << 10 for _ in range(150)]
        while len(out) < n:
            out.add(rng.choice(bases) | rng.getrandbits(10))
    else:
        while len(out) < n:
            out.add(rng.getrandbits(32))
    return [str(ipaddress.IPv4Address(v)) for v in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--min-prefixlen", type=int, default=16,
                        help="size limit for the clustered case (the uniform case has none)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"n={args.n} k={args.k}")
    for clustered in (False, True):
        ips = addresses(args.n, seed=1, clustered=clustered)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            cover = group_cidrs(ips, k=args.k, min_prefixlen=args.min_prefixlen if clustered else 0)
            times.append(time.perf_counter() - t0)
        kind = f"clustered, /{args.min_prefixlen} max" if clustered else "uniform, no size limit"
        print(f"{kind:22s} median {statistics.median(times):.3f} s  max {max(times):.3f} s  "
              f"blocks {len(cover.blocks)}  noise {cover.noise}  smallest k {cover.min_k}")
    ips6 = [str(ipaddress.IPv6Address((0x20010DB8 << 96) | random.Random(2).getrandbits(64)
                                      | (i << 64))) for i in range(args.n)]
    t0 = time.perf_counter()
    cover = group_cidrs(ips6, k=args.k, min_prefixlen=48)
    print(f"{'IPv6 (2001:db8::/32)':22s} once   {time.perf_counter() - t0:.3f} s  "
          f"blocks {len(cover.blocks)}")


if __name__ == "__main__":
    main()
