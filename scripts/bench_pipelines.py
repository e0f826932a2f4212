"""`_simulate` throughput (lines/s) of the fwsiem-logs pipeline per format, or (`--cpu`) the
engine CPU per line that the pipelines cost, per format, against one engine.

Usage: python scripts/bench_pipelines.py --url http://127.0.0.1:9233 --lines 10000
       python scripts/bench_pipelines.py --url ... --cpu [--lines 20000] [--rounds 3]
              [--formats nsx_dfw,iptables]
       python scripts/bench_pipelines.py --url ... --script-cost [--formats zeek]
(installs the top-level pipeline files, i.e. the OpenSearch variants, or with --flavor the
engine's own).

`--cpu`: per format, the lines that scripts/bench_ingest.py sends (NSX DFW from the simulator,
other formats varied from their samples) go through `_bulk?pipeline=` into a copy of
`fwsiem-logs` that ends in `drop`, so nothing is indexed, and the engine CPU around each
request series (scripts/engine_cpu.py) over the lines is the figure; the same documents through
a pipeline holding only `drop` give the cost of the bulk request itself, which is subtracted.
Formats alternate within each round after a warm-up round, and the median and range over the
rounds are printed: on a shared machine, compare ranges, not single runs. `--before DIR` also
installs the pipelines of an older `ingest_pipelines` folder (ids prefixed `bench-before-`) and
measures them alternately with the current ones, line for line the same. A line that does not
reach `drop` (a dead letter) is counted and reported.

`--script-cost`: the engine CPU of one script processor whose script changes nothing, on the
document the shipper sends for a line and on the event the pipelines make of it (each through a
pipeline of `--scripts` such processors and `drop`, less the `drop`-only pipeline): on
OpenSearch 2.x a script processor copies the whole document before its script runs and walks it
after, so its cost grows with the document, which is why the pipelines run one script processor
per event where they can (docs/formats.md, "Keeping the pipelines fast").
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import requests

from plugin.lines import DeclaredHeader, line_document
from plugin.setup import pipeline_bodies

CPU_PREFIX, BEFORE_PREFIX = "bench-cpu-", "bench-before-"
DROP_PIPELINE, CPU_INDEX = "bench-drop", "fwsiem-bench-cpu"

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


def _renamed(node, prefix: str):
    """A pipeline definition whose calls to other fwsiem pipelines carry ``prefix``."""
    if isinstance(node, list):
        return [_renamed(x, prefix) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _renamed(v, prefix) for k, v in node.items()}
    if isinstance(out.get("pipeline"), dict) and "name" in out["pipeline"]:
        # a templated name too: the prefix goes before what it renders
        out["pipeline"]["name"] = prefix + out["pipeline"]["name"]
    return out


def install_cpu_pipelines(session: requests.Session, url: str, flavor: str, root: Path | None,
                          prefix: str) -> str:
    """The pipelines under ``root`` (default: this tree's) as ``prefix``<id>, and an entry
    pipeline ending in `drop`; returns the entry pipeline's id."""
    for name, body in pipeline_bodies(flavor, root).items():
        body = _renamed(body, prefix)
        if name == "fwsiem-logs":
            body["processors"].append({"drop": {"tag": "drop_after_pipelines"}})
        session.put(f"{url}/_ingest/pipeline/{prefix}{name}", json=body).raise_for_status()
    return f"{prefix}fwsiem-logs"


def install_pipelines(session: requests.Session, url: str, flavor: str) -> None:
    """This tree's pipelines under their own ids, as `fwsiem setup` installs them."""
    for name, body in pipeline_bodies(flavor).items():
        session.put(f"{url}/_ingest/pipeline/{name}", json=body).raise_for_status()


def _summary(us: list[float]) -> str:
    us = sorted(us)
    return f"{statistics.median(us):.1f} ({us[0]:.1f}-{us[-1]:.1f})"


def processor_times(session: requests.Session, url: str, prefix: str) -> None:
    """Per processor of the ``prefix`` pipelines: calls and wall µs per call since the engine
    started (`_nodes/stats/ingest`; a nested pipeline's time includes its processors')."""
    stats = session.get(f"{url}/_nodes/stats/ingest").json()
    for node in stats["nodes"].values():
        for pipeline, body in sorted(node["ingest"]["pipelines"].items()):
            if not pipeline.startswith(prefix):
                continue
            for proc in body.get("processors", []):
                (name, value), = proc.items()
                calls = value["stats"]["count"]
                if calls:
                    print(f"  {pipeline.removeprefix(prefix):<34}{name:<52}{calls:>9}"
                          f"{1000 * value['stats']['time_in_millis'] / calls:>9.1f} µs")
        break  # the nodes run the same pipelines; one node's figures show the shape


def cpu_mode(args, session: requests.Session) -> None:
    """Engine CPU per line of the pipelines, per format (see the module's docstring)."""
    from bench_ingest import formats
    from engine_cpu import EngineCpu

    from plugin.config import load_config
    from plugin.store import Store

    pipelines = {"now": install_cpu_pipelines(session, args.url, args.flavor, None, CPU_PREFIX)}
    if args.before:
        pipelines["before"] = install_cpu_pipelines(session, args.url, args.flavor,
                                                    Path(args.before), BEFORE_PREFIX)
    session.put(f"{args.url}/_ingest/pipeline/{DROP_PIPELINE}", json={
        "description": "benchmark: the bulk request's own cost",
        "processors": [{"drop": {"tag": "drop_only"}}]}).raise_for_status()
    cpu = EngineCpu(Store.connect(load_config(env={}).with_overrides("engine", url=args.url).engine))
    chosen = [f for f in args.formats.split(",") if f] or formats()
    bodies = {fmt: bulk_bodies(fmt, args.lines, args.batch) for fmt in chosen}
    net: dict[tuple[str, str], list[float]] = {}
    bare: dict[str, list[float]] = {fmt: [] for fmt in chosen}
    kept: dict[tuple[str, str], int] = {}
    for rnd in range(args.rounds + 1):  # round 0 warms up: scripts compiled and JIT-ed
        for fmt in chosen:
            us0, _ = cpu_per_line(session, args.url, cpu, DROP_PIPELINE, bodies[fmt])
            for name, pipeline in pipelines.items():  # alternated, so both see the same load
                us, dead = cpu_per_line(session, args.url, cpu, pipeline, bodies[fmt])
                if rnd:
                    net.setdefault((fmt, name), []).append(us - us0)
                    kept[fmt, name] = kept.get((fmt, name), 0) + dead
            if rnd:
                bare[fmt].append(us0)
    print("engine CPU µs per line, median (range) over the rounds, bulk request's own cost "
          "subtracted")
    print(f"{'format':<18}{'lines':>7}" + "".join(f"{name:>26}" for name in pipelines)
          + f"{'bulk only':>16}{'not dropped':>13}")
    for fmt in chosen:
        lines = sum(body.count(b"\n") for body in bodies[fmt]) // 2
        print(f"{fmt:<18}{lines:>7}" + "".join(f"{_summary(net[fmt, n]):>26}" for n in pipelines)
              + f"{_summary(bare[fmt]):>16}"
              + f"{'/'.join(str(kept[fmt, n]) for n in pipelines):>13}", flush=True)
    if args.processors:
        print("per processor (current pipelines): calls, wall µs per call")
        processor_times(session, args.url, CPU_PREFIX)


SCRIPTS_PIPELINE = "bench-empty-scripts"


def script_cost_mode(args, session: requests.Session) -> None:
    """Engine CPU of one script processor whose script does (almost) nothing, on the document
    the shipper sends and on the event the pipelines make of it: what a script processor costs
    before its script's own work (on OpenSearch 2.x it copies the document and walks it)."""
    from engine_cpu import EngineCpu

    from plugin.config import load_config
    from plugin.store import Store

    store = Store.connect(load_config(env={}).with_overrides("engine", url=args.url).engine)
    cpu = EngineCpu(store)
    install_pipelines(session, args.url, args.flavor)
    fmt = (args.formats or "nsx_dfw").split(",")[0]
    raw = bulk_bodies(fmt, args.lines, args.batch)
    docs = [json.loads(line) for body in raw for line in body.decode().splitlines()[1::2]]
    mapped = [r["doc"]["_source"] for r in store.simulate("fwsiem-logs", docs[:args.batch])]
    action = json.dumps({"index": {"_index": CPU_INDEX}})
    mapped_bodies = [("".join(f"{action}\n{json.dumps(mapped[j % len(mapped)])}\n"
                              for j in range(i, min(i + args.batch, len(docs))))).encode()
                     for i in range(0, len(docs), args.batch)]
    k = args.scripts
    empty = {"description": f"benchmark: {k} script processors that change nothing, then drop",
             "processors": [{"script": {"tag": f"empty_{i}", "source": "ctx.remove('_bench')"}}
                            for i in range(k)] + [{"drop": {"tag": "drop_after_scripts"}}]}
    session.put(f"{args.url}/_ingest/pipeline/{SCRIPTS_PIPELINE}", json=empty).raise_for_status()
    session.put(f"{args.url}/_ingest/pipeline/{DROP_PIPELINE}", json={
        "description": "benchmark: the bulk request's own cost",
        "processors": [{"drop": {"tag": "drop_only"}}]}).raise_for_status()
    sizes = {"line document": len(json.dumps(docs[0])), "mapped event": len(json.dumps(mapped[0]))}
    per: dict[str, list[float]] = {}
    for rnd in range(args.rounds + 1):  # round 0 warms up
        for label, bodies in (("line document", raw), ("mapped event", mapped_bodies)):
            us0, _ = cpu_per_line(session, args.url, cpu, DROP_PIPELINE, bodies)
            us, _ = cpu_per_line(session, args.url, cpu, SCRIPTS_PIPELINE, bodies)
            if rnd:
                per.setdefault(label, []).append((us - us0) / k)
    print(f"engine CPU µs per script processor that changes nothing ({fmt}, {len(docs)} "
          f"documents, {k} such processors, median (range) over {args.rounds} rounds)")
    for label, us in per.items():
        print(f"  {label:<16}{sizes[label]:>6} bytes of JSON{_summary(us):>24}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:9251")
    parser.add_argument("--lines", type=int, default=20000, help="lines simulated per format")
    parser.add_argument("--batch", type=int, default=1000, help="documents per _simulate (--cpu: _bulk) request")
    parser.add_argument("--warmup", type=int, default=2,
                        help="unmeasured _simulate requests per format before timing")
    parser.add_argument("--cpu", action="store_true",
                        help="engine CPU per line through the pipelines (ending in drop)")
    parser.add_argument("--rounds", type=int, default=3, help="--cpu: measured rounds")
    parser.add_argument("--formats", default="", help="--cpu: comma-separated (default: all)")
    parser.add_argument("--flavor", default="opensearch", help="which pipeline variants")
    parser.add_argument("--processors", action="store_true",
                        help="--cpu: also print the wall time per call of every processor")
    parser.add_argument("--script-cost", action="store_true",
                        help="engine CPU of one script processor that changes nothing, on the "
                             "shipper's line document and on the mapped event (first of "
                             "--formats, default nsx_dfw)")
    parser.add_argument("--scripts", type=int, default=4,
                        help="--script-cost: script processors in the measured pipeline")
    parser.add_argument("--before", default="",
                        help="--cpu: an older ingest_pipelines folder measured alternately "
                             "(e.g. from `git archive main ingest_pipelines | tar -x -C DIR`)")
    args = parser.parse_args()
    session = requests.Session()
    if args.cpu:
        cpu_mode(args, session)
        return
    if args.script_cost:
        script_cost_mode(args, session)
        return
    install_pipelines(session, args.url, args.flavor)
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
