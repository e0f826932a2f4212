"""Detection on real labeled captures: fwsiem beside Random Cut Forest and ECOD, per attack.

Usage:
    python scripts/evaluate_real.py --url http://127.0.0.1:9281 [--reads DIR] [--write]

One command: for each capture in ``../shared/datasets/real-flows/`` (its README names the
labels and hosts), ingest it with ``fwsiem ingest`` (through the real pipelines) into its own
data stream ``logs-fwsiem.real<name>-default``, then run the window loop of ``fwsiem run``
(``plugin.windows.WindowRunner``) over the whole capture with the default settings in a fresh
state, and score what it wrote against the labels (``ml.scoring.score_attacks``): per attack,
whether an incident named its attacker or target within 2 windows of its start, and how many
medium+ incident and anomaly documents it caused; on traffic without attacks, the false
incidents per day. On the same window rows, Random Cut Forest (``rrcf``, the algorithm of
OpenSearch Anomaly Detection) and PyOD's ECOD replace the profiles, with the same severity
levels and the same incident grouping (``ml.peers``). ``--write`` puts the table into the
"real traffic" section of EVALUATION.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

from doc_sections import replace_section  # noqa: E402

from ml import features as F
from ml.incidents import IncidentTracker
from ml.peers import PEER_KINDS, PeerDetector
from ml.scoring import score_attacks
from plugin.config import load_config
from plugin.setup import run_setup
from plugin.store import Store
from plugin.windows import RunSettings, WindowRunner, row_links, window_bounds, window_documents

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FWSIEM_TEST_REAL_FLOWS",
                           ROOT.parent / "shared" / "datasets" / "real-flows"))  # or --data
DAY_MS = 86_400_000

#: name, file, attacks for pcaps (no labels in the file: from the dataset README), benign
CAPTURES = [
    ("iot23-34-1", "iot23-34-1/conn.log.labeled", None),
    ("stratosphere-normal-40", "stratosphere-normal-40-day1/conn.log.labeled", None),
    ("sme11-benign", "stratosphere-sme11-benign/conn.log.labeled", None),
    ("ssh-bruteforce", "pcaps/malicious-ssh-bruteforce.pcap",
     {"password brute force": {"147.32.80.40", "147.32.80.37"}}),
    ("syn-flood", "pcaps/pkt.TCP.synflood.spoofed.pcap",
     {"spoofed SYN flood": {"10.10.10.10"}}),
]


def labeled_attacks(path: Path, name: str) -> list[dict]:
    """Attacks of a labeled Zeek conn.log: one per malicious detailed label, except that the
    Stratosphere day's inbound scanning of its host is one ongoing attack on that host."""
    fields: list[str] = []
    spans: dict = {}
    for raw in path.open():
        raw = raw.rstrip("\n")
        if raw.startswith("#fields"):
            fields = re.split(r"\t| {3}", raw)[1:]
            continue
        if raw.startswith("#") or not raw:
            continue
        row = dict(zip(fields, re.split(r"\t| {3}", raw), strict=False))
        if row.get("label", "").lower() != "malicious":
            continue
        what = row.get("detailed-label") or row.get("detailedlabel") or "malicious"
        ts = int(float(row["ts"]) * 1000)
        s = spans.setdefault(what, {"name": what, "start": ts, "end": ts, "ips": set(),
                                    "rows": 0})
        s["start"], s["end"] = min(s["start"], ts), max(s["end"], ts)
        s["ips"] |= {row["id.orig_h"], row["id.resp_h"]}
        s["rows"] += 1
    attacks = list(spans.values())
    if name == "stratosphere-normal-40":
        for a in attacks:   # the attack is on the exposed host; its 1,599 scanners come and go
            a["ips"] = {"147.32.81.167"} | a["ips"]
    return attacks


def ingest(url: str, index: str, path: Path) -> None:
    env = dict(os.environ, FWSIEM_URL=url, FWSIEM_INDICES_EVENTS=index,
               FWSIEM_INDICES_EVENTS_PATTERN=index, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "plugin", "ingest", "--no-progress", str(path)],
                   env=env, check=True)


def span(store: Store, index: str) -> tuple[int, int]:
    aggs = store.aggregate(index, {"lo": {"min": {"field": "@timestamp"}},
                                   "hi": {"max": {"field": "@timestamp"}}})
    return int(aggs["lo"]["value"]), int(aggs["hi"]["value"])


def replay_peer(reads: list, settings: RunSettings, kind: str) -> list[dict]:
    """What the window loop writes with ``kind`` in place of the profiles, all entity types."""
    dets = {t: PeerDetector(t, F.FEATURES[t], kind=kind, levels=settings.levels,
                            seed=settings.seed) for t in settings.entity_types}
    novelty = F.NoveltyMemory(internal=settings.internal_networks)
    tracker = IncidentTracker(settings.window_ms, settings.incident_gap_windows,
                              settings.incident_members)
    docs: list[dict] = []
    for start, end, data in reads:
        found, links = [], {}
        for etype, rows in data["rows"].items():
            rows = novelty.apply(etype, rows)
            links.update(row_links(etype, rows))
            found += [(f, kind, []) for f in dets[etype].process(rows)]
        docs += window_documents(found, links, tracker, start, end)
    return latest(docs)


def latest(docs: list[dict]) -> list[dict]:
    """Anomaly documents, and the last state of each incident (as the index keeps it)."""
    out, incidents = [], {}
    for d in docs:
        if d["event"]["dataset"] == "fwsiem.incidents":
            incidents[d["incident"]["id"]] = d
        else:
            out.append(d)
    return out + list(incidents.values())


def split(docs: list[dict]) -> tuple[list[dict], list[dict]]:
    inc = [d for d in docs if d["event"]["dataset"] == "fwsiem.incidents"]
    return [d for d in docs if d["event"]["dataset"] != "fwsiem.incidents"], inc


def evaluate(store: Store, base, url: str, name: str, rel: str, pcap_attacks, args) -> dict:
    path = args.data / rel
    index = f"logs-fwsiem.real{name.replace('-', '')}-default"
    tag = f"real-{name}"
    config = base.with_overrides("indices", events=index, events_pattern=index,
                                 anomalies=f"fwsiem-anomalies-{tag}",
                                 incidents=f"fwsiem-incidents-{tag}", state=f"fwsiem-state-{tag}")
    for key in ("anomalies", "incidents", "state"):
        store.delete_index(config.index(key))
    have = store.count(index) if store.exists(index) else 0
    if have == 0:
        ingest(url, index, path)
        store.refresh(index)
    else:
        print(f"{index} already holds {have:,} events: not re-ingested (delete it to redo)")
    if store.count(index) == 0:
        sys.exit(f"{path}: no events were indexed into {index} (see the dead letters)")
    lo, hi = span(store, index)
    settings = RunSettings.from_config(config)
    W = settings.window_ms
    bounds = list(window_bounds(lo // W * W, (hi // W + 1) * W, W))
    runner = WindowRunner(store, config, settings=settings)
    cache = args.reads / f"{name}.pkl" if args.reads else None
    if cache and cache.exists():
        reads, ports = pickle.loads(cache.read_bytes())
    else:
        state = runner.new_state()
        runner._horizon = bounds[-1][1]
        ports = runner.choose_ports(bounds[0][0], bounds[-1][1])
        state.src_ports, state.dst_ports = ports
        reads = [(s, e, runner.read_window(s, e, state)) for s, e in bounds]
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(pickle.dumps((reads, ports)))
    state = runner.new_state()
    state.src_ports, state.dst_ports = ports
    t = time.perf_counter()
    pending = []
    for s, e, data in reads:
        pending += runner.detect(s, e, copy.deepcopy(data), state)
    store.bulk(runner.actions(pending))
    took = time.perf_counter() - t
    for key in ("anomalies", "incidents"):
        store.refresh(config.index(key))
    anomalies = [h["_source"] for h in store.scan(config.index("anomalies"))]
    incidents = [h["_source"] for h in store.scan(config.index("incidents"))]
    if pcap_attacks:
        attacks = [{"name": n, "start": lo, "end": hi, "ips": ips}
                   for n, ips in pcap_attacks.items()]
    else:
        attacks = labeled_attacks(path, name)
    results = {"fwsiem": score_attacks(anomalies, incidents, attacks, W)}
    for kind in PEER_KINDS:
        a, i = split(replay_peer(reads, settings, kind))
        results[kind] = score_attacks(a, i, attacks, W)
    return {"name": name, "events": store.count(index), "windows": len(reads),
            "days": (hi - lo) / DAY_MS, "results": results, "seconds": took}


def table(runs: list[dict]) -> list[str]:
    det = ("fwsiem", *PEER_KINDS)
    head = " | ".join(f"{d}: named ≤ 2 windows / incidents / anomalies" for d in det)
    lines = [f"| capture | attack | {head} |", "|---|---|" + "---|" * len(det)]
    for run in runs:
        res = run["results"]
        for k, att in enumerate(res["fwsiem"]["attacks"]):
            cells = []
            for d in det:
                a = res[d]["attacks"][k]
                named = ("yes" if a["named_2w"] else f"after {a['delay']}" if a["named"]
                         else "no")
                cells.append(f"{named} / {a['incidents']} / {a['anomalies']}")
            lines.append(f"| {run['name']} | {att['name']} | " + " | ".join(cells) + " |")
        cells = []
        for d in det:
            r = res[d]
            rate = (f" ({r['false_incidents'] / run['days']:.1f}/day)" if run["days"] >= 0.5
                    else "")
            cells.append(f"{r['false_incidents']} false incidents{rate} of "
                         f"{r['incidents']}; {r['anomalies']} medium+ anomalies")
        lines.append(f"| {run['name']} | (all, {run['events']:,} events, {run['windows']} "
                     f"windows) | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("FWSIEM_URL", "http://127.0.0.1:9201"))
    ap.add_argument("--only", help="Comma-separated capture names")
    ap.add_argument("--data", type=Path, default=DATA, help="The real-flows folder")
    ap.add_argument("--reads", type=Path, help="Directory caching each capture's window "
                    "aggregations (written, or read instead of the engine when present)")
    ap.add_argument("--write", action="store_true", help="Update EVALUATION.md")
    args = ap.parse_args()
    t_all = time.perf_counter()
    base = load_config(env={}).with_overrides("engine", url=args.url)
    store = Store.connect(base.engine)
    run_setup(store, base)      # templates (the per-capture indices match them), pipelines
    wanted = set(args.only.split(",")) if args.only else None
    runs = []
    for name, rel, attacks in CAPTURES:
        if wanted and name not in wanted:
            continue
        runs.append(evaluate(store, base, args.url, name, rel, attacks, args))
        print("\n".join(table(runs[-1:])), flush=True)
    lines = table(runs)
    settings = RunSettings.from_config(base)
    text = [
        "## Real traffic (`fwsiem run` on labeled captures, beside RCF and ECOD)",
        "",
        f"Command: `python scripts/evaluate_real.py --url {args.url}"
        + (f" --reads {args.reads}" if args.reads else "") + " --write` "
        f"({store.flavor} {store.version}, one node; date: {dt.date.today().isoformat()}; "
        f"total run {time.perf_counter() - t_all:.0f} s).",
        "",
        "Data: `../shared/datasets/real-flows/` (its README has the sources and labels), each "
        "capture ingested with `fwsiem ingest` into its own data stream, then the window loop "
        f"of `fwsiem run` over the whole capture in a fresh state with the `[run]` defaults "
        f"({settings.window_ms // 1000} s windows, {settings.warmup_windows} warm-up windows, "
        f"severity levels {list(settings.levels)}, internal networks "
        f"{', '.join(settings.internal_networks)}).",
        "",
        "Each cell: named within 2 windows of the attack's start (a medium+ incident names its "
        "attacker or target, with an anomaly on one of them by then; `after N`: named later) "
        "/ medium+ incident documents naming its addresses while it lasts / medium+ anomaly "
        "documents on them. The last row of each capture: medium+ incidents naming no attack "
        "(false), per day of capture. `rcf`: Random Cut Forest (`rrcf`, 20 trees of 256 "
        "points, streaming, as OpenSearch Anomaly Detection); `ecod`: PyOD's ECOD refitted "
        "every window on up to 4,000 recent rows plus the window. Both score the same window "
        "rows; their score becomes a deviation as a robust z-score (median, MAD) of its log "
        "among their recent scores, then the same severity levels and incident grouping apply.",
        "",
        *lines,
    ]
    report = "\n".join(text)
    print(report)
    if args.write:
        replace_section(ROOT / "EVALUATION.md", "real-traffic", report,
                        "# fwsiem model evaluation")


if __name__ == "__main__":
    main()
