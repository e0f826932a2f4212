"""Online detection quality of `fwsiem run` on a simulated warm-up day plus an evaluation day.

Usage:
    python scripts/evaluate_detection.py --url http://127.0.0.1:9251 [--seed 11] [--write]

One command: simulate 48 h of the default scenario (day 1 is the warm-up day, day 2 is scored),
bulk-index the already-parsed events (ECS documents as the fwsiem pipelines write them) into the
data stream ``logs-fwsiem.<name>-default`` after installing the shipped templates, run the window
loop (`plugin.windows.WindowRunner`, the code behind `fwsiem run --from --to`) over both days
with the ``[run]`` defaults, and score the anomaly documents read back from the engine against
the simulator's truth:

- per incident kind: detected within 2 windows of its start (a medium+ anomaly whose entity
  overlaps the incident's entities and whose window starts <= 2 windows after the start);
- overall incident recall (within 2 windows, and at any time during the incident);
- precision of medium+ anomaly documents (share that overlap a true incident's entities and
  time).

The same table is computed for seed 003's autoencoder alone, and, on the same window
aggregations (read once from the engine), for each river detector per entity type, so the
choice of detector is made by these figures. ``--write`` puts the tables into the
"Online detection" section of EVALUATION.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import pickle
import sys
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
from doc_sections import replace_section  # noqa: E402

from ml import features as F
from ml.detectors import WindowDetector
from ml.scoring import epoch_ms, incidents, score, score_attacks
from plugin.anomalies import anomaly_document
from plugin.config import load_config
from plugin.setup import run_setup
from plugin.store import Store
from plugin.windows import AE_DETECTOR, RunSettings, WindowRunner, window_bounds

ROOT = Path(__file__).resolve().parents[1]
DAY_MS = 86_400_000
KINDS = ("profile", "hst", "baseline")


# -- events -------------------------------------------------------------------------------------

def _iso_series(ts: pd.Series) -> list[str]:
    return ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3].add("Z").tolist()


def parsed_documents(frame: pd.DataFrame) -> list[dict]:
    """The simulator's rows as the NSX DFW pipeline writes them (ECS, TERM counters summed)."""
    ts = _iso_series(frame["@timestamp"])
    recs = frame.to_dict("records")
    docs = []
    for t, r in zip(ts, recs, strict=True):
        term = r["nsx.dfw.line_kind"] == "term"
        denied = r["event.action"] in ("drop", "reject")
        src = {"ip": r["source.ip"]}
        dst = {"ip": r["destination.ip"]}
        if r["network.transport"] in ("tcp", "udp", "sctp"):
            src["port"], dst["port"] = int(r["source.port"]), int(r["destination.port"])
        net = {"direction": r["network.direction"], "transport": r["network.transport"],
               "iana_number": str(r["network.iana_number"]), "type": r["network.type"]}
        dfw: dict = {"line_kind": r["nsx.dfw.line_kind"]}
        if term:
            sp, sb = int(r["source.packets"]), int(r["source.bytes"])
            dp, db = int(r["destination.packets"]), int(r["destination.bytes"])
            src.update(packets=sp, bytes=sb)
            dst.update(packets=dp, bytes=db)
            net.update(packets=sp + dp, bytes=sb + db)
            if r["nsx.dfw.close_reason"]:
                dfw["close_reason"] = r["nsx.dfw.close_reason"]
        else:
            dfw["packet_length"] = int(r["nsx.dfw.packet_length"])
            if r["nsx.dfw.tcp_flags"]:
                dfw["tcp_flags"] = r["nsx.dfw.tcp_flags"]
        verdict = "denied" if denied else "allowed"
        docs.append({
            "@timestamp": t,
            "event": {"kind": "event", "category": ["network"],
                      "type": ["connection", verdict, "end" if term else "start"],
                      "action": "term" if term else r["event.action"],
                      "outcome": "failure" if denied else "success",
                      "dataset": "fwsiem.nsx_dfw", "module": "fwsiem"},
            "source": src, "destination": dst, "network": net,
            "rule": {"id": str(r["rule.id"]), "ruleset": r["rule.ruleset"]} if r["rule.ruleset"]
            else {"id": str(r["rule.id"])},
            "observer": {"hostname": r["observer.hostname"], "vendor": "VMware", "product": "NSX",
                         "type": "firewall"},
            "nsx": {"dfw": dfw},
        })
    return docs


def _bulk(store: Store, index: str, docs: list[dict], chunk: int = 5000) -> int:
    done = 0
    for i in range(0, len(docs), chunk):
        lines = []
        for d in docs[i:i + chunk]:
            lines.append('{"create":{}}')
            lines.append(json.dumps(d, separators=(",", ":")))
        resp = store.request("POST", f"/{index}/_bulk", body="\n".join(lines) + "\n")
        bad = [it for it in resp["items"] if next(iter(it.values()))["status"] >= 300]
        if bad:
            sys.exit(f"bulk refused {len(bad)} documents: {json.dumps(bad[0])[:500]}")
        done += len(resp["items"])
    return done


def simulate_and_index(store: Store, index: str, args) -> tuple[dict, dict]:
    """Simulate, index (unless the data stream already holds the run), return truth + extras."""
    from ml.simulate import Simulation, load_scenario

    sim = Simulation(load_scenario(args.scenario), hours=48, seed=args.seed, start=args.start)
    have = store.count(index) if store.exists(index) else 0
    index_it = have == 0
    if not index_it:
        print(f"{index} already holds {have:,} events: not re-indexed (delete it to redo)")
    extra: dict = defaultdict(lambda: {"rules": set(), "hosts": set(), "first": None,
                                       "last": None})
    total, t0 = 0, time.perf_counter()
    for frame in sim.iter_events():
        inc = frame[frame["incident.id"] != ""]
        for iid, g in inc.groupby("incident.id"):
            e = extra[iid]
            e["rules"].update(g["rule.id"].astype(str))
            e["hosts"].update(g["observer.hostname"])
            lo, hi = g["@timestamp"].min(), g["@timestamp"].max()
            e["first"] = lo if e["first"] is None else min(e["first"], lo)
            e["last"] = hi if e["last"] is None else max(e["last"], hi)
        total += len(frame)
        if index_it:
            _bulk(store, index, parsed_documents(frame))
    if index_it:
        store.refresh(index)
        print(f"indexed {total:,} events into {index} in {time.perf_counter() - t0:.0f} s")
    return sim.truth(), dict(extra), total


# -- truth --------------------------------------------------------------------------------------

def replay(reads: list, settings: RunSettings, etype: str, kind: str) -> list[dict]:
    """Anomaly documents of one entity type's detector ``kind`` over recorded windows."""
    det = WindowDetector(etype, F.FEATURES[etype], kind=kind, q=settings.quantile,
                         warmup_windows=settings.warmup_windows, levels=settings.levels,
                         seed=settings.seed)
    novelty = F.NoveltyMemory(internal=settings.internal_networks)
    docs = []
    for start, end, data in reads:
        rows = novelty.apply(etype, data["rows"].get(etype, []))
        for f in det.process(rows):
            docs.append(anomaly_document(f, start, end, kind=kind))
    return docs


def all_docs(store: Store, index: str) -> list[dict]:
    if not store.exists(index):
        return []
    store.refresh(index)
    return [h["_source"] for h in store.scan(index, query={"match_all": {}})]


# -- report -------------------------------------------------------------------------------------

def incident_table(docs: list[dict], found: list[dict], incs: list[dict], eval_from: int,
                   eval_to: int, window_ms: int) -> list[str]:
    """Truth incidents of day 2 named by fwsiem incidents, and the precision of those."""
    attacks = [{"name": i["kind"], "start": i["start"], "end": i["end"], "ips": i["ips"],
                "hosts": i["hosts"], "rules": i["rules"],
                "day2": eval_from <= i["start"] < eval_to} for i in incs]
    active = [i for i in found
              if epoch_ms(i["incident"]["last_window"]) + window_ms > eval_from
              and epoch_ms(i["incident"]["first_window"]) < eval_to]
    res = score_attacks(docs, active, attacks, window_ms)
    day2 = [r for r, a in zip(res["attacks"], attacks, strict=True) if a["day2"]]
    per_kind: dict = defaultdict(lambda: [0, 0, 0])
    for r in day2:
        k = per_kind[r["name"]]
        k[0] += 1
        k[1] += r["named_2w"]
        k[2] += r["incidents"]
    lines = ["| incident kind | incidents | named within 2 windows | fwsiem incidents about them |",
             "|---|---|---|---|"]
    lines += [f"| {k} | {n} | {e}/{n} | {m} |" for k, (n, e, m) in sorted(per_kind.items())]
    n = len(day2)
    recall = sum(r["named_2w"] for r in day2) / n if n else float("nan")
    true = res["incidents"] - res["false_incidents"]
    lines.append(f"| **all** | {n} | recall **{recall:.2f}** | |")
    lines.append("")
    lines.append(f"Precision of medium+ incidents: **{true / max(res['incidents'], 1):.2f}** "
                 f"({true} of {res['incidents']} name a truth incident; false ones by kind: "
                 f"{_fmt(res['false_kinds'])}).")
    print("\n".join(lines))
    return lines, (true, res["incidents"])


def combined_precision(docs: dict, incs: tuple[int, int]) -> str:
    """Precision over what an analyst reads at medium and above: the medium+ anomaly documents
    (an incident's members are written at low, so only its lead and unattached findings are
    among them) and the medium+ incidents, each counted once."""
    true, total = docs["true_docs"] + incs[0], docs["docs"] + incs[1]
    return (f"Precision of medium+ anomaly documents and incidents together: "
            f"**{true / max(total, 1):.2f}** ({true} of {total}: {docs['true_docs']} of "
            f"{docs['docs']} documents, {incs[0]} of {incs[1]} incidents).")


def kind_table(res: dict, kinds: list[str]) -> list[str]:
    lines = ["| incident kind | incidents | within 2 windows | detected at all | first window |",
             "|---|---|---|---|---|"]
    for kind in kinds:
        k = res["per_kind"].get(kind)
        if not k:
            continue
        delays = ", ".join(f"+{d}" for d in sorted(k["delays"])) or "-"
        lines.append(f"| {kind} | {k['n']} | {k['early']}/{k['n']} | {k['any']}/{k['n']} "
                     f"| {delays} |")
    lines.append(f"| **all** | {res['incidents']} | recall **{res['recall_2w']:.2f}** "
                 f"| {res['recall_any']:.2f} | |")
    lines.append("")
    lines.append(f"Precision of medium+ anomaly documents: **{res['precision']:.2f}** "
                 f"({res['true_docs']} of {res['docs']} overlap a true incident's entities and "
                 f"time; false ones by entity type: {_fmt(res['false_by_type'])}).")
    return lines


def _fmt(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("FWSIEM_URL", "http://127.0.0.1:9251"))
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--start", default="2024-03-04T00:00:00Z")
    ap.add_argument("--name", default="detecteval", help="logs-fwsiem.<name>-default")
    ap.add_argument("--reads", type=Path, help="Cache of the window aggregations: written, or read instead of the engine when present")
    ap.add_argument("--compare", action=argparse.BooleanOptionalAction, default=True,
                    help="Score each river detector per entity type on the same windows")
    ap.add_argument("--compare-kinds", default=",".join(KINDS),
                    help="River detectors to compare per entity type")
    ap.add_argument("--write", action="store_true", help="Update EVALUATION.md")
    ap.add_argument("--keep", action="store_true", help="Keep the events data stream")
    args = ap.parse_args()

    t_all = time.perf_counter()
    base = load_config(env={}).with_overrides("engine", url=args.url)
    store = Store.connect(base.engine)
    run_setup(store, base, only={"template"})
    index = f"logs-fwsiem.{args.name}-default"
    tag = f"{args.name}-{args.seed}"
    config = base.with_overrides("indices", events_pattern=index,
                                 anomalies=f"fwsiem-anomalies-{tag}", state=f"fwsiem-state-{tag}",
                                 incidents=f"fwsiem-incidents-{tag}")
    store.delete_index(config.index("anomalies"))
    store.delete_index(config.index("incidents"))
    store.delete_index(config.index("state"))
    print(f"engine: {store.flavor} {store.version} at {store.safe_url}")

    truth, extra, n_events = simulate_and_index(store, index, args)
    incs = incidents(truth, extra)
    t0 = epoch_ms(truth["start"])
    eval_from, eval_to = t0 + DAY_MS, t0 + 2 * DAY_MS

    settings = RunSettings.from_config(config)
    runner = WindowRunner(store, config, settings=settings)
    W = settings.window_ms
    bounds = list(window_bounds(t0, eval_to, W))
    if args.reads and args.reads.exists():
        reads, ports = pickle.loads(args.reads.read_bytes())
        read_s = float("nan")
        print(f"window aggregations loaded from {args.reads} (not read from the engine)")
    else:
        state = runner.new_state()
        runner._horizon = eval_to
        ports = runner.choose_ports(t0, eval_to)
        state.src_ports, state.dst_ports = ports
        t = time.perf_counter()
        reads = [(s, e, runner.read_window(s, e, state)) for s, e in bounds]
        read_s = time.perf_counter() - t
        if args.reads:
            args.reads.write_bytes(pickle.dumps((reads, ports)))
    print(f"{len(reads)} windows read in {read_s:.0f} s")

    # The window loop's compute and write steps (WindowRunner.detect, anomaly bulk writes);
    # checkpoints are left out here: they do not change what is detected.
    state = runner.new_state()
    state.src_ports, state.dst_ports = ports
    t = time.perf_counter()
    pending: list = []
    for start, end, data in reads:
        pending += runner.detect(start, end, copy.deepcopy(data), state)
        if len(pending) >= 500:
            store.bulk(runner.actions(pending))
            pending = []
    if pending:
        store.bulk(runner.actions(pending))
    run_s = time.perf_counter() - t
    print(f"detection over {len(reads)} windows in {run_s:.0f} s")

    docs = all_docs(store, config.index("anomalies"))
    found = all_docs(store, config.index("incidents"))
    by_incident, inc_true = incident_table(docs, found, incs, eval_from, eval_to, W)
    kinds = sorted({i["kind"] for i in incs})
    full = score([d for d in docs if d["detector"]["name"] != AE_DETECTOR], incs,
                 eval_from, eval_to, W)
    full_ae = score(docs, incs, eval_from, eval_to, W)
    ae = score([d for d in docs if d["detector"]["name"] == AE_DETECTOR], incs,
               eval_from, eval_to, W)

    compare_lines: list[str] = []
    if args.compare:
        compare_lines = ["| entity type | detector | incidents found (2 windows) | medium+ docs "
                         "| precision |", "|---|---|---|---|---|"]
        for etype in settings.entity_types:
            for kind in args.compare_kinds.split(","):
                r = score(replay(reads, settings, etype, kind), incs, eval_from,
                          eval_to, W)
                chosen = " (chosen)" if kind == settings.detector_for(etype) else ""
                found = sum(k["early"] for k in r["per_kind"].values())
                compare_lines.append(f"| {etype} | {kind}{chosen} | {found}/{r['incidents']} "
                                     f"| {r['docs']} | {r['precision']:.2f} |")
                print(compare_lines[-1])

    cmd = "python scripts/evaluate_detection.py --url " + args.url + (
        f" --seed {args.seed}" if args.seed != 11 else "") + (
        f" --reads {args.reads}" if args.reads else "") + (
        f" --compare-kinds {args.compare_kinds}" if args.compare_kinds != ",".join(KINDS)
        else "") + " --write"
    text = [
        f"Command: `{cmd}` ({store.flavor} {store.version}, one node; "
        f"date: {dt.date.today().isoformat()}; total run {time.perf_counter() - t_all:.0f} s).",
        "",
        f"Data: scenario `{args.scenario}`, seed {args.seed}, 48 h from {args.start}: "
        f"{n_events:,} parsed NSX DFW events bulk-indexed into `{index}`; day 1 is the warm-up "
        f"day, day 2 is scored ({len([i for i in incs if eval_from <= i['start'] < eval_to])} "
        f"incidents of {len({i['kind'] for i in incs if eval_from <= i['start'] < eval_to})} "
        f"kinds at the scenario's default intensity). `[run]` defaults: {W // 1000} s windows, "
        f"{settings.warmup_windows} warm-up windows, quantile {settings.quantile}, severity "
        f"levels {list(settings.levels)}, detectors {settings.detectors_text()}. "
        f"{len(reads)} windows: engine reads {read_s:.0f} s, detection {run_s:.0f} s.",
        "",
        "Scoring: an incident counts as detected within 2 windows when a medium-or-higher "
        "anomaly document's entity is one of the incident's entities (its source/destination "
        "IPs; for rule and host entities, the rule ids and hypervisors its events carry; for "
        "the autoencoder, a contributing port among the incident's ports) and the document's "
        "window starts at most 2 windows after the incident start. Precision: share of "
        "medium+ documents of day 2 whose entity and window overlap some incident (its span "
        "runs to the last event it produced).",
        "",
        "### Incidents (what `fwsiem run` writes to fwsiem-incidents)",
        "",
        "A truth incident is named within 2 windows when a medium+ fwsiem incident names one of "
        "its addresses and has an anomaly on one of them at most 2 windows after its start "
        "(`ml.scoring.score_attacks`, as on real traffic). Precision: share of the medium+ "
        "incidents active on day 2 that name some truth incident's addresses while it lasts.",
        "",
        *by_incident,
        "",
        "### Window detectors (source, service, rule, host, target)",
        "",
        *kind_table(full, kinds),
        "",
        combined_precision(full, inc_true),
        "",
        "### Seed 003's autoencoder alone (per-port vectors, baseline)",
        "",
        *kind_table(ae, kinds),
        "",
        "### Everything `fwsiem run` writes (window detectors + autoencoder)",
        "",
        *kind_table(full_ae, kinds),
    ]
    if compare_lines:
        text += ["", "### Choice of river detector per entity type",
                 "", "Each detector alone on the same window aggregations (same thresholds, "
                 "warm-up and severity levels):", "", *compare_lines]
    report = "\n".join(text)
    print(report)
    if args.write:
        replace_section(ROOT / "EVALUATION.md", "detection",
                        "## Online detection (`fwsiem run`)\n\n" + report, "# fwsiem model evaluation")
    if not args.keep:
        store.delete_index(config.index("state"))


if __name__ == "__main__":
    main()
