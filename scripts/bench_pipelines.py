"""`_simulate` throughput (lines/s) of the fwsiem-logs pipeline per format, against one engine.

Usage: python scripts/bench_pipelines.py --url http://127.0.0.1:9233 --lines 10000
(installs the top-level pipeline files, i.e. the OpenSearch variants).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import requests

from plugin.lines import DeclaredHeader, line_document
from plugin.setup import pipeline_files

PIPELINES = Path(__file__).resolve().parents[1] / "ingest_pipelines"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:9251")
    parser.add_argument("--lines", type=int, default=20000, help="lines simulated per format")
    parser.add_argument("--batch", type=int, default=1000, help="documents per _simulate request")
    parser.add_argument("--warmup", type=int, default=2,
                        help="unmeasured _simulate requests per format before timing")
    args = parser.parse_args()
    session = requests.Session()
    for path in pipeline_files("opensearch"):
        body = json.loads(path.read_text())
        session.put(f"{args.url}/_ingest/pipeline/{path.stem}", json=body).raise_for_status()
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
