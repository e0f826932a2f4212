"""`_simulate` throughput (lines/s) of the fwsiem-logs pipeline per format, or (`--cpu`) the
engine CPU per line that the pipelines cost, per format, against one engine.

Usage: python scripts/bench_pipelines.py --url http://127.0.0.1:9233 --lines 10000
       python scripts/bench_pipelines.py --url ... --cpu [--lines 20000] [--rounds 3]
              [--formats nsx_dfw,iptables]
(installs the top-level pipeline files, i.e. the OpenSearch variants, or with --flavor the
engine's own).

`--cpu`: per format, the lines that scripts/bench_ingest.py sends (NSX DFW from the simulator,
other formats varied from their samples) go through `_bulk?pipeline=` into a copy of
`fwsiem-logs` that ends in `drop`, so nothing is indexed, and the engine CPU around each
request series (scripts/engine_cpu.py) over the lines is the figure; the same documents through
a pipeline holding only `drop` give the cost of the bulk request itself, which is subtracted.
Formats alternate within each round after a warm-up round, and the median and range over the
rounds are printed: on a shared machine, compare ranges, not single runs. A line that does not
reach `drop` (a dead letter) is counted and reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import requests

from plugin.lines import DeclaredHeader, line_document
from plugin.setup import pipeline_files

CPU_PIPELINE, DROP_PIPELINE, CPU_INDEX = "fwsiem-bench-cpu", "fwsiem-bench-drop", "fwsiem-bench-cpu"

PIPELINES = Path(__file__).resolve().parents[1] / "ingest_pipelines"


def bulk_bodies(fmt: str, n: int, batch: int) -> list[bytes]:
    """`_bulk` bodies of about ``n`` documents of a format, as the shipper makes them."""
    from bench_ingest import format_lines, simulated

    lines = simulated(n, 17)[0] if fmt == "nsx_dfw" else format_lines(fmt, n, 17)
    header, docs = DeclaredHeader(), []
    for line in lines:
        raw = line.encode()
        if not header.consume(raw):
            docs.append(header.annotate(line_document(raw, path=f"/bench/{fmt}.log")))
    action = json.dumps({"index": {"_index": CPU_INDEX}})
    return [("".join(f"{action}\n{json.dumps(d)}\n" for d in docs[i:i + batch])).encode()
            for i in range(0, len(docs), batch)]


def cpu_per_line(session: requests.Session, url: str, cpu, pipeline: str,
                 bodies: list[bytes]) -> tuple[float, int]:
    """Engine CPU µs per document of ``bodies`` through ``pipeline``, and how many documents
    did not end in `drop`."""
    docs, kept = 0, 0
    before = cpu.seconds()
    for body in bodies:
        resp = session.post(f"{url}/_bulk", params={"pipeline": pipeline}, data=body,
                            headers={"Content-Type": "application/x-ndjson"})
        resp.raise_for_status()
        for item in resp.json()["items"]:
            docs += 1
            kept += next(iter(item.values())).get("result") != "noop"
    return 1e6 * (cpu.seconds() - before) / docs, kept


def cpu_mode(args, session: requests.Session) -> None:
    """Engine CPU per line of the pipelines, per format (see the module's docstring)."""
    from bench_ingest import formats
    from engine_cpu import EngineCpu

    from plugin.config import load_config
    from plugin.store import Store

    entry = json.loads((PIPELINES / "logs" / "fwsiem-logs.json").read_text())
    entry["processors"].append({"drop": {"tag": "drop_after_pipelines"}})
    session.put(f"{args.url}/_ingest/pipeline/{CPU_PIPELINE}", json=entry).raise_for_status()
    session.put(f"{args.url}/_ingest/pipeline/{DROP_PIPELINE}", json={
        "description": "benchmark: the bulk request's own cost",
        "processors": [{"drop": {"tag": "drop_only"}}]}).raise_for_status()
    cpu = EngineCpu(Store.connect(load_config(env={}).with_overrides("engine", url=args.url).engine))
    chosen = [f for f in args.formats.split(",") if f] or formats()
    bodies = {fmt: bulk_bodies(fmt, args.lines, args.batch) for fmt in chosen}
    totals: dict[str, list[float]] = {fmt: [] for fmt in chosen}
    bare: dict[str, list[float]] = {fmt: [] for fmt in chosen}
    kept: dict[str, int] = dict.fromkeys(chosen, 0)
    for rnd in range(args.rounds + 1):  # round 0 warms up: scripts compiled and JIT-ed
        for fmt in chosen:
            us, dead = cpu_per_line(session, args.url, cpu, CPU_PIPELINE, bodies[fmt])
            us0, _ = cpu_per_line(session, args.url, cpu, DROP_PIPELINE, bodies[fmt])
            if rnd:
                totals[fmt].append(us)
                bare[fmt].append(us0)
                kept[fmt] += dead
    print(f"{'format':<18}{'lines':>7}{'pipelines µs/line':>26}{'bulk only µs/line':>22}"
          f"{'not dropped':>13}")
    for fmt in chosen:
        net = sorted(t - b for t, b in zip(totals[fmt], bare[fmt], strict=True))
        lines = sum(body.count(b"\n") for body in bodies[fmt]) // 2
        print(f"{fmt:<18}{lines:>7}{statistics.median(net):>10.1f} ({net[0]:.1f}-{net[-1]:.1f})"
              f"{statistics.median(bare[fmt]):>22.1f}{kept[fmt]:>13}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:9251")
    parser.add_argument("--lines", type=int, default=20000, help="lines simulated per format")
    parser.add_argument("--batch", type=int, default=1000, help="documents per _simulate request")
    parser.add_argument("--warmup", type=int, default=2,
                        help="unmeasured _simulate requests per format before timing")
    parser.add_argument("--cpu", action="store_true",
                        help="engine CPU per line through the pipelines (ending in drop)")
    parser.add_argument("--rounds", type=int, default=3, help="--cpu: measured rounds")
    parser.add_argument("--formats", default="", help="--cpu: comma-separated (default: all)")
    parser.add_argument("--flavor", default="opensearch", help="which pipeline variants")
    args = parser.parse_args()
    session = requests.Session()
    for path in pipeline_files(args.flavor):
        body = json.loads(path.read_text())
        session.put(f"{args.url}/_ingest/pipeline/{path.stem}", json=body).raise_for_status()
    if args.cpu:
        cpu_mode(args, session)
        return
    print(f"{'format':<14}{'lines':>8}{'seconds':>10}{'lines/s':>10}")
    for sample in sorted(PIPELINES.rglob("test-*.log")):
        if sample.name.startswith("test-deadletter"):
            continue
        header = DeclaredHeader()  # W3C/Zeek header lines are not sent, as the shipper does
        lines = [ln for ln in sample.read_bytes().split(b"\n") if ln and not header.consume(ln)]
        docs = [{"_source": header.annotate(line_document(ln))} for ln in lines]
        batch = (docs * (args.batch // len(docs) + 1))[: args.batch]
        rounds = max(1, args.lines // args.batch)
        for _ in range(args.warmup):  # not measured: lets the engine compile the hot paths
            session.post(f"{args.url}/_ingest/pipeline/fwsiem-logs/_simulate",
                         json={"docs": batch}).raise_for_status()
        started = time.perf_counter()
        for _ in range(rounds):
            resp = session.post(f"{args.url}/_ingest/pipeline/fwsiem-logs/_simulate", json={"docs": batch})
            resp.raise_for_status()
        elapsed = time.perf_counter() - started
        done = rounds * args.batch
        name = sample.stem.removeprefix("test-")
        print(f"{name:<14}{done:>8}{elapsed:>10.2f}{done / elapsed:>10.0f}")


if __name__ == "__main__":
    main()
