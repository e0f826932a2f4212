"""Benchmark: lines through the fwsiem-logs pipelines vs bulk-indexing the same events already parsed.

Usage: python scripts/bench_ingest.py --url http://127.0.0.1:9201 [--lines 200000]
       [--format-lines 20000] [--formats nsx_dfw,cisco_asa,...] [--in-flight N] [--write]

One run, one engine. For every format the pipelines parse, two phases:

(A) lines go through the shipper that `fwsiem ingest` runs (plugin.shipping: the same batches,
    ids and retries, in this process so that interpreter start-up is not timed) and the
    `fwsiem-logs` pipelines;
(B) the documents phase A indexed (read back, unchanged) are bulk-indexed into another data
    stream without any pipeline: plain indexing of the same documents, pre-parsed, with as
    many `_bulk` requests in flight as the shipper keeps (`[ingest] in_flight`);
(E) the same bodies as B through a pipeline of one processor that changes nothing: what the
    engine's ingest framework costs before any parsing (the document made into a map, run and
    serialised again). B/E is the best rate ratio A/B any pipeline could reach on this engine.

NSX DFW lines come from the simulator (`--lines`); every other format from its samples
(`ingest_pipelines/<format>/test-*.log`, only the lines the samples expect as events), repeated
to `--format-lines` with their IPv4 addresses and ephemeral ports varied. Phase B's bodies are made
before it is timed. For NSX the simulator's own parsed rows are also bulk-indexed (phase B0) the
way the benchmarks before 2026-12 did: one request at a time, bodies made from the rows while
timed, so B0's rate is partly the client's.
Before its phases are measured, every format's first ``--warm-lines`` lines go through A, B and E,
round after round (not measured), until phase A's engine CPU per line is within 5% of the round
before (at most ``--warm-rounds``): the engine compiles the pipelines' scripts and its JIT
compiler settles on them. With a single round of 2,000 lines, the JIT compiler's own threads
still used 40-100 µs of engine CPU per line during a 20,000-line phase A.
Then A, B and E run in turn for ``--rounds`` rounds (each on its own copy of the file) and each
phase's figures are summed over the rounds, so the engine's background work (refreshes, merges)
falls on the three alike.
Engine CPU is read around each phase, once per engine process (scripts/engine_cpu.py: from
/proc/<pid>/stat for an engine on this host, else one node's `_nodes/stats/process` per process,
so nodes sharing one JVM are not counted once each); per line it is the figure the goal speaks
of (pipelines <= 2x plain indexing) and the rate ratio A/B the other (>= 0.7).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from doc_sections import replace_section
from engine_cpu import EngineCpu

from plugin.config import load_config
from plugin.lines import DeclaredHeader
from plugin.setup import run_setup
from plugin.shipping import (
    LineBatcher,
    ShipSettings,
    configured_shipper,
    ingest_paths,
    line_id,
)
from plugin.store import Store

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "ingest_pipelines"
NOT_FORMATS = {"logs", "network"}
IPV4 = re.compile(r"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# a port written after an address (NSX, ASA: a.b.c.d/port, a.b.c.d:port) or as a key=value
PORT = re.compile(r"(\d[/:]|\b(?:SPT|DPT|srcport|dstport|spt|dpt)=)(\d{4,5})\b")


def formats() -> list[str]:
    return sorted(p.name for p in PIPELINES.iterdir()
                  if p.is_dir() and p.name not in NOT_FORMATS and any(p.glob("test-*.log")))


def event_samples(fmt: str) -> list[tuple[list[str], list[str]]]:
    """Per sample file of a format: its header lines (a file that declares its fields, W3C or
    Zeek) and the lines its expected documents show as events."""
    out = []
    for log_path in sorted((PIPELINES / fmt).glob("test-*.log")):
        header, records, declared = [], [], DeclaredHeader()
        for line in log_path.read_text().splitlines():
            (header if declared.consume(line.encode()) else records).append(line)
        expected_path = log_path.with_name(log_path.name + "-expected.json")
        expected = json.loads(expected_path.read_text()) if expected_path.exists() else []
        if len(expected) != len(records):
            continue
        events = [ln for ln, doc in zip(records, expected, strict=True) if "_index" not in doc]
        if events:
            out.append((header, events))
    return out


def format_lines(fmt: str, n: int, seed: int) -> list[str]:
    """About ``n`` lines of a format: each sample file's header, then its event lines varied, in
    shares as large as the files' numbers of event lines."""
    # files without a header first: a header holds for the rest of the file it starts
    samples = sorted(event_samples(fmt), key=lambda sample: bool(sample[0]))
    total = sum(len(events) for _, events in samples)
    out: list[str] = []
    for i, (header, events) in enumerate(samples):
        out += header + varied_lines(events, max(1, n * len(events) // total), seed + i)
    return out


def _vary_ip(m: re.Match, rng: random.Random) -> str:
    octets = [int(g) for g in m.groups()]
    if max(octets) > 255 or octets[0] in (0, 255) or octets[1:] == [255, 255, 255]:
        return m.group(0)  # a mask or a broadcast: keep
    return f"{octets[0]}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _vary_port(m: re.Match, rng: random.Random) -> str:
    port = int(m.group(2))
    return m.group(1) + (str(rng.randrange(1024, 65536)) if 1024 <= port <= 65535 else m.group(2))


def varied_lines(samples: list[str], n: int, seed: int) -> list[str]:
    """``n`` lines cycling through ``samples``, each with its addresses and ephemeral ports varied.

    >>> varied_lines(["a 10.1.2.3/51234->8.8.8.8/53"], 2, 1)[0].endswith("/53")
    True
    """
    rng = random.Random(seed)
    out = []
    for i in range(n):
        line = IPV4.sub(lambda m: _vary_ip(m, rng), samples[i % len(samples)])
        out.append(PORT.sub(lambda m: _vary_port(m, rng), line))
    return out


def simulated(n: int, seed: int) -> tuple[list[str], pd.DataFrame]:
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


def simulator_bodies(index: str, frame: pd.DataFrame, chunk: int) -> Iterator[bytes]:
    """`_bulk` bodies of the simulator's parsed NSX rows, made as they are sent (so the client's
    time is in the phase, as in the benchmarks before 2026-12)."""
    cols = [c for c in frame.columns if c not in ("incident.id", "session.id")]
    for start in range(0, len(frame), chunk):
        body = []
        for i, row in enumerate(frame.iloc[start:start + chunk][cols].to_dict("records")):
            doc = _nest(row)
            doc.setdefault("event", {}).update({"kind": "event", "category": ["network"],
                                                "dataset": "fwsiem.nsx_dfw", "module": "fwsiem"})
            body.append(json.dumps({"create": {"_index": index,
                                               "_id": line_id("sim", start + i, b"")}}))
            body.append(json.dumps(doc))
        yield ("\n".join(body) + "\n").encode()


def indexed_bodies(store: Store, events: str, path: str, index: str, chunk: int) -> list[bytes]:
    """`_bulk` bodies of the documents the pipelines indexed from ``path``, unchanged."""
    store.refresh(events)
    bodies, body = [], []
    for hit in store.scan(events, query={"term": {"log.file.path": path}}, size=5000):
        body.append(json.dumps({"create": {"_index": index, "_id": hit["_id"]}}))
        body.append(json.dumps(hit["_source"]))
        if len(body) >= 2 * chunk:
            bodies.append(("\n".join(body) + "\n").encode())
            body = []
    if body:
        bodies.append(("\n".join(body) + "\n").encode())
    return bodies


def phase_pipeline(config, store: Store, cpu: EngineCpu, path: str) -> dict:
    """Phase A: the file through the shipper and the pipelines."""
    settings, shipper = configured_shipper(config, lambda: store)
    batcher = LineBatcher(shipper, settings)
    cpu0, own0, t = cpu.seconds(), time.process_time(), time.perf_counter()
    ingest_paths([path], batcher)
    wall = time.perf_counter() - t
    own, used = time.process_time() - own0, cpu.seconds() - cpu0
    s = shipper.stats
    if s.spooled or getattr(s, "not_spooled", 0):
        sys.exit(f"{path}: {s.spooled} lines spooled: the engine refused them; see the log")
    return {"lines": s.indexed + s.dead_lettered, "events": s.indexed, "dead": s.dead_lettered,
            "wall": wall,
            "client_cpu": own, "engine_cpu": used}


#: Phase E's pipeline: one processor that changes nothing
NOOP_PIPELINE = "fwsiem-bench-noop"
NOOP = {"description": "bench_ingest phase E: the ingest framework alone",
        "processors": [{"remove": {"field": "fwsiem_bench_absent", "ignore_missing": True,
                                   "tag": "noop"}}]}


def phase_plain(store: Store, cpu: EngineCpu, bodies: Iterable[bytes], in_flight: int = 1,
                pipeline: str | None = None) -> dict:
    """Phase B (E with ``pipeline``): ready documents to `_bulk`, ``in_flight`` requests at a
    time."""
    path = f"/_bulk?pipeline={pipeline}" if pipeline else "/_bulk"
    cpu0, own0, t = cpu.seconds(), time.process_time(), time.perf_counter()
    written = 0
    sent: deque[Future] = deque()

    def account(resp: dict) -> int:
        return sum(1 for it in resp["items"] if next(iter(it.values()))["status"] == 201)

    with ThreadPoolExecutor(in_flight) as pool:
        for body in bodies:
            if len(sent) >= in_flight:
                written += account(sent.popleft().result())
            sent.append(pool.submit(store.request, "POST", path, body=body))
        while sent:
            written += account(sent.popleft().result())
    wall = time.perf_counter() - t
    return {"docs": written, "wall": wall, "client_cpu": time.process_time() - own0,
            "engine_cpu": cpu.seconds() - cpu0}


def _add(total: dict, phase: dict) -> None:
    """Sum one round's phase figures into ``total``."""
    for key, value in phase.items():
        total[key] = total.get(key, 0) + value


def row(fmt: str, a: dict, b: dict, e: dict | None = None) -> dict:
    rate_a, rate_b = a["lines"] / a["wall"], b["docs"] / b["wall"]
    us_a, us_b = 1e6 * a["engine_cpu"] / a["lines"], 1e6 * b["engine_cpu"] / b["docs"]
    out = {"format": fmt, "lines": a["lines"], "dead": a["dead"], "rate_a": rate_a,
           "rate_b": rate_b, "us_a": us_a, "us_b": us_b, "cpu_x": us_a / us_b,
           "ratio": rate_a / rate_b, "ship_us": 1e6 * a["client_cpu"] / a["lines"]}
    if e is not None and e["docs"]:
        out["us_e"] = 1e6 * e["engine_cpu"] / e["docs"]
        out["floor"] = (e["docs"] / e["wall"]) / rate_b
    return out


def table(rows: list[dict]) -> str:
    out = ["| format | lines | dead letters | A: lines/s through the pipelines | B: docs/s plain "
           "| engine CPU/line A | engine CPU/doc B | CPU A/B (goal <= 2) | rate A/B (goal >= 0.7) "
           "| shipper CPU/line | E: engine CPU/doc, no-op pipeline | rate E/B |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        floor = (f"{r['us_e']:.0f} µs | {r['floor']:.2f}" if "us_e" in r else "- | -")
        out.append(f"| {r['format']} | {r['lines']:,} | {r['dead']:,} | {r['rate_a']:,.0f} | "
                   f"{r['rate_b']:,.0f} | {r['us_a']:.0f} µs | {r['us_b']:.0f} µs | "
                   f"{r['cpu_x']:.2f} | **{r['ratio']:.2f}** | {r['ship_us']:.0f} µs | {floor} |")
    return "\n".join(out)


def header(args, store: Store, cpu: EngineCpu, in_flight: int, load0: tuple) -> str:
    mem = Path("/proc/meminfo").read_text().split()[1]
    cmd = " ".join(["python", "scripts/bench_ingest.py", *sys.argv[1:]])
    return (f"## Ingest through the pipelines vs plain indexing, per format (current)\n\n"
            f"Command: `{cmd}` ({args.lines:,} NSX DFW lines from the simulator, "
            f"{args.format_lines:,} lines per other format varied from its samples; shipper "
            f"`[ingest] in_flight = {in_flight}`; before any phase is measured, "
            f"warm-up rounds of up to {args.warm_lines:,} lines per format through A, B and E "
            f"until A's engine CPU per line settles within 5%; then {args.rounds} rounds of A, B "
            f"and E in turn, summed). Engine: {store.flavor} {store.version}, "
            f"{cpu.nodes} node(s) in {cpu.processes} process(es) (`fwsiem engine start`). "
            f"Machine: {os.cpu_count()} cores, "
            f"{int(mem) // 2**20} GiB; load average "
            f"{load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end. Date: "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("FWSIEM_URL", "http://127.0.0.1:9201"))
    ap.add_argument("--lines", type=int, default=200_000, help="NSX DFW lines (simulated).")
    ap.add_argument("--format-lines", type=int, default=20_000,
                    help="Lines per other format (varied from its samples).")
    ap.add_argument("--formats", default="", help="Comma-separated formats (default: all).")
    ap.add_argument("--in-flight", type=int, default=None,
                    help="[ingest] in_flight for the shipper (default: the configuration's).")
    ap.add_argument("--warm-lines", type=int, default=20_000,
                    help="Lines of each format sent through phases A, B and E before any phase "
                         "is measured (default 20,000).")
    ap.add_argument("--warm-rounds", type=int, default=6,
                    help="At most this many warm-up rounds (default 6); they stop once phase "
                         "A's engine CPU per line is within 5%% of the round before. With one "
                         "round of 2,000 lines, phase A of a 20,000-line format measured the JIT "
                         "compiling its scripts as much as the pipelines.")
    ap.add_argument("--rounds", type=int, default=3,
                    help="Measured rounds of A, B and E in turn, summed (default 3).")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--write", action="store_true",
                    help="Write the table into BENCHMARKS.md (section `ingest`).")
    ap.add_argument("--keep", action="store_true", help="Keep the benchmark's data streams.")
    args = ap.parse_args()

    chosen = [f for f in args.formats.split(",") if f] or formats()
    tag = f"bench{int(time.time())}"
    piped, raw = f"logs-fwsiem.{tag}-pipeline", f"logs-fwsiem.{tag}-raw"
    noop = f"logs-fwsiem.{tag}-noop"
    load0 = os.getloadavg()
    tmp = tempfile.TemporaryDirectory()
    config = (load_config(env={}).with_overrides("engine", url=args.url,
                                                 spool_dir=f"{tmp.name}/spool")
              .with_overrides("indices", events=piped)
              .with_overrides("ingest", in_flight=args.in_flight))
    store = Store.connect(config.engine)
    run_setup(store, config)
    store.put_pipeline(NOOP_PIPELINE, NOOP)
    cpu = EngineCpu(store)
    chunk = int(config.engine.bulk_chunk)
    in_flight = ShipSettings.from_config(config).in_flight
    print(f"engine: {store.flavor} {store.version} at {store.safe_url}; formats {chosen}; "
          f"{args.lines:,} NSX lines, {args.format_lines:,} per other format; "
          f"in_flight {in_flight}", flush=True)

    rows = []
    for i, fmt in enumerate(chosen):
        frame = None
        if fmt == "nsx_dfw":
            lines, frame = simulated(args.lines, args.seed)
        else:
            lines = format_lines(fmt, args.format_lines, args.seed + 100 * i)
            if not lines:
                print(f"{fmt}: no sample lines expected as events; skipped")
                continue
        path = f"{tmp.name}/bench-{fmt}.log"
        Path(path).write_text("\n".join(lines) + "\n")
        # Warm-up, not measured: the engine compiles the pipelines' scripts and its JIT settles
        # on them and on the indexing path; a round is repeated until its engine CPU per line is
        # within 5% of the round before. Each round has its own file name, so that its lines get
        # new ids and are indexed, not refused as already present. Each format is measured right
        # after its own warm-up.
        last = None
        for r in range(args.warm_rounds):
            warm = f"{tmp.name}/warm-{fmt}-{r}.log"
            Path(warm).write_text("\n".join(lines[:args.warm_lines]) + "\n")
            a = phase_pipeline(config, store, cpu, warm)
            phase_plain(store, cpu, indexed_bodies(store, piped, warm, raw, chunk), in_flight)
            phase_plain(store, cpu, indexed_bodies(store, piped, warm, noop, chunk), in_flight,
                        pipeline=NOOP_PIPELINE)
            us = 1e6 * a["engine_cpu"] / max(a["lines"], 1)
            print(f"{fmt}: warm-up round {r + 1}: {us:.0f} µs of engine CPU per line", flush=True)
            if last is not None and abs(us - last) <= 0.05 * last:
                break
            last = us

        # A, B and E alternate over the rounds, each round with its own copy of the file, so
        # that the engine's background work (refreshes, merges) falls on all three alike.
        a, b, e = {}, {}, {}
        for r in range(args.rounds):
            copy = f"{path}.{r}"
            shutil.copyfile(path, copy)
            _add(a, phase_pipeline(config, store, cpu, copy))
            _add(b, phase_plain(store, cpu, indexed_bodies(store, piped, copy, raw, chunk),
                                in_flight))
            _add(e, phase_plain(store, cpu, indexed_bodies(store, piped, copy, noop, chunk),
                                in_flight, pipeline=NOOP_PIPELINE))
        rows.append(row(fmt, a, b, e))
        print(f"{fmt}: A {a['lines']:,} lines ({a['events']:,} events, {a['dead']:,} dead letters) "
              f"in {a['wall']:.1f}s, engine {a['engine_cpu']:.1f}s, shipper {a['client_cpu']:.1f}s"
              f"; B {b['docs']:,} docs in {b['wall']:.1f}s, engine {b['engine_cpu']:.1f}s, "
              f"client {b['client_cpu']:.1f}s; E {e['docs']:,} docs in {e['wall']:.1f}s, "
              f"engine {e['engine_cpu']:.1f}s; rate A/B {rows[-1]['ratio']:.2f}", flush=True)
        if frame is not None:
            b0 = phase_plain(store, cpu, simulator_bodies(raw, frame, chunk))
            rows.append(row("nsx_dfw vs B0 (simulator rows, made while timed, as before)", a, b0))
            print(f"nsx_dfw B0: {b0['docs']:,} simulator rows in {b0['wall']:.1f}s, engine "
                  f"{b0['engine_cpu']:.1f}s; rate A/B0 {rows[-1]['ratio']:.2f}", flush=True)
    text = table(rows)
    print(text)
    if args.write:
        replace_section(ROOT / "BENCHMARKS.md", "ingest", header(args, store, cpu, in_flight, load0)
                        + "\n\n" + text, "# Benchmarks")
    if not args.keep:
        store.delete_index(piped)
        store.delete_index(raw)
        store.delete_index(noop)
        store.delete_pipeline(NOOP_PIPELINE)
    tmp.cleanup()


if __name__ == "__main__":
    main()
