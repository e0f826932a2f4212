"""Measure the pipelines on logs fwsiem did not write; print (or write) the EVALUATION.md table.

    python scripts/evaluate_parsing.py --url http://127.0.0.1:9201 [--datasets ../shared/datasets]
        [--vendor cisco_asa ...] [--baseline-ref REV] [--write EVALUATION.md]

Two corpora, both read from ``../shared/datasets`` (never copied into the repository):

- ``vendor-logs/elastic-integrations``: Elastic's own pipeline test inputs per vendor (every line
  of ``test-*.log``, every ``message`` of ``test-*.json``), sent with ``_bulk?pipeline=fwsiem-logs``
  into a scratch data stream exactly as the shipper sends a line. Per vendor: the share indexed as
  events, the share of those tagged ``fwsiem_body_unmapped``, the share dead-lettered, the share
  refused (lost). Where Elastic's ``*-expected.json`` documents exist, the agreement of fwsiem's
  documents with them on the 5-tuple and the outcome (and on ``event.action`` where both name it).
- ``real-logs``: real firewall log files, shipped with ``fwsiem ingest`` itself (the command a
  user runs, header handling included) into the scratch data stream: every line is well formed,
  so none may be dead-lettered.

``--baseline-ref REV`` first measures the pipelines of an earlier commit on the same engine, so the
table shows before and after from one run. Everything the run writes is deleted at the end.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from doc_sections import replace_section  # noqa: E402

from plugin.config import load_config  # noqa: E402
from plugin.lines import line_document  # noqa: E402
from plugin.setup import pipeline_bodies, processors_used, run_setup  # noqa: E402
from plugin.store import Store  # noqa: E402

# Elastic's package folder -> the vendor name in the table.
VENDORS = {
    "cisco_asa": "Cisco ASA", "cisco_ftd": "Cisco FTD", "fortinet_fortigate": "FortiGate",
    "panw": "PAN-OS", "pfsense": "pfSense/OPNsense", "iptables": "iptables", "zeek": "Zeek conn",
}
FIVE_TUPLE = ("source.ip", "source.port", "destination.ip", "destination.port",
              "network.transport")
COMPARED = (*FIVE_TUPLE, "event.outcome")
UNMAPPED_TAG = "fwsiem_body_unmapped"
ENRICHMENT_TAG = "fwsiem_enrichment_failed"
DEADLETTER = "fwsiem-deadletter"


@dataclass
class Tally:
    """What became of one vendor's lines."""

    lines: int = 0
    events: int = 0
    unmapped: int = 0
    enrichment_failed: int = 0
    dead: int = 0
    compared_docs: int = 0
    fields: Counter = field(default_factory=Counter)      # field -> compared
    agree: Counter = field(default_factory=Counter)       # field -> equal
    action_compared: int = 0
    action_agree: int = 0
    reasons: Counter = field(default_factory=Counter)
    disagreements: list = field(default_factory=list)

    @property
    def refused(self) -> int:
        return self.lines - self.events - self.dead

    def agreement(self, names: tuple[str, ...] = FIVE_TUPLE) -> float | None:
        n = sum(self.fields[f] for f in names)
        return sum(self.agree[f] for f in names) / n if n else None


def get(doc: dict | None, dotted: str):
    """A field of a nested or dotted document, or None."""
    if doc is None:
        return None
    if dotted in doc:
        return doc[dotted]
    node = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def normal(name: str, value):
    """A field value in one comparable form (addresses canonical, ports numbers, words lower)."""
    if value is None:
        return None
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else tuple(normal(name, v) for v in value)
    if name.endswith(".ip"):
        try:
            return str(ipaddress.ip_address(str(value).split("%")[0]))
        except ValueError:
            return str(value)
    if name.endswith(".port"):
        try:
            return int(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value).lower()


def corpus_inputs(package_dir: Path) -> list[tuple[str, list[str], list | None]]:
    """(file name, messages, Elastic's expected documents or None) for every input file."""
    out = []
    for path in sorted(package_dir.rglob("test-*")):
        if path.name.endswith(("-expected.json", "-config.yml", "-config.json")):
            continue
        if path.suffix == ".log":
            raw = path.read_bytes().split(b"\n")
            if raw and raw[-1] == b"":
                raw.pop()
            messages = [r.decode("utf-8", errors="replace").rstrip("\r") for r in raw]
        elif path.suffix == ".json":
            events = json.loads(path.read_text()).get("events", [])
            messages = [e.get("message", "") for e in events]
        else:
            continue
        expected_path = path.with_name(path.name + "-expected.json")
        expected = None
        if expected_path.exists():
            expected = json.loads(expected_path.read_text()).get("expected")
            if expected is not None and len(expected) < len(messages):
                expected = expected + [None] * (len(messages) - len(expected))
        out.append((path.name, messages, expected))
    return out


def install_pipelines(store: Store, root: Path) -> None:
    """Install every pipeline under ``root`` (flavour variants for this engine win)."""
    bodies = pipeline_bodies(store.flavor, root)
    missing = set().union(*(processors_used(b) for b in bodies.values())) - store.ingest_processors()
    if missing:
        sys.exit(f"error: {store.safe_url} lacks the ingest processors {sorted(missing)}: "
                 "measure on an engine that runs pipelines (OpenSearch here)")
    for name, body in bodies.items():
        store.put_pipeline(name, body)


def measure_vendor_corpora(store: Store, root: Path, packages: list[str], stream: str,
                           run: str) -> dict[str, Tally]:
    tallies: dict[str, Tally] = {}
    for package in packages:
        tally = tallies.setdefault(package, Tally())
        actions, expected_by_id = [], {}
        for name, messages, expected in corpus_inputs(root / package):
            for n, message in enumerate(messages):
                doc = line_document(message.encode("utf-8"), path=f"{run}/{package}/{name}",
                                    offset=n)
                doc_id = f"{run}:{package}:{name}:{n}"
                actions.append({"_op_type": "create", "_index": stream, "_id": doc_id,
                                "_source": doc})
                if expected is not None:
                    expected_by_id[doc_id] = expected[n]
        tally.lines = len(actions)
        store.bulk(actions, pipeline="fwsiem-logs")
        store.refresh(stream)
        store.refresh(DEADLETTER)
        prefix = {"prefix": {"log.file.path": f"{run}/{package}/"}}
        for hit in store.scan(DEADLETTER, query=prefix):
            tally.dead += 1
            reason = str(get(hit["_source"], "error.message") or "")[:110]
            tally.reasons[reason] += 1
        indexed = {}
        for hit in store.scan(stream, query=prefix):
            src = indexed[hit["_id"]] = hit["_source"]
            tally.events += 1
            tags = src.get("tags") or []
            tally.unmapped += UNMAPPED_TAG in tags
            tally.enrichment_failed += ENRICHMENT_TAG in tags
        # A line with a reference document that fwsiem did not index as an event disagrees on
        # every field the reference has.
        for doc_id, ref in expected_by_id.items():
            if ref is None:
                continue
            src = indexed.get(doc_id)
            tally.compared_docs += 1
            for name in COMPARED:
                want = normal(name, get(ref, name))
                if want is None:
                    continue
                got = normal(name, get(src, name))
                tally.fields[name] += 1
                if got == want:
                    tally.agree[name] += 1
                elif len(tally.disagreements) < 200:
                    tally.disagreements.append((doc_id, name, got, want))
            want_action, got_action = get(ref, "event.action"), get(src, "event.action")
            if want_action is not None and got_action is not None:
                tally.action_compared += 1
                tally.action_agree += normal("a", want_action) == normal("a", got_action)
        # Refused lines are lost lines: name them.
        if tally.refused:
            tally.reasons[f"REFUSED by the engine: {tally.refused}"] += tally.refused
    return tallies


def measure_real_logs(store: Store, url_env: dict, root: Path, stream: str, run: str,
                      workdir: Path) -> dict[str, Tally]:
    """Ship each real log file with ``fwsiem ingest``, as a user would."""
    tallies: dict[str, Tally] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix == ".log"):
        name = path.parent.name
        copy = workdir / run / name / path.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        env = dict(url_env, FWSIEM_INDICES_EVENTS=stream,
                   FWSIEM_ENGINE_SPOOL_DIR=str(workdir / "spool"))
        proc = subprocess.run([sys.executable, "-m", "plugin", "ingest", str(copy)], env=env,
                              capture_output=True, text=True, cwd=REPO)
        tally = tallies.setdefault(name, Tally())
        # Header lines (W3C `#Fields:`, Zeek `#fields`) describe the file; they are not events.
        tally.lines = sum(1 for line in path.read_bytes().split(b"\n")
                          if line.strip() and not line.startswith(b"#"))
        store.refresh(stream)
        store.refresh(DEADLETTER)
        query = {"prefix": {"log.file.path": str(copy.parent) + "/"}}
        tally.events = store.count(stream, query)
        for hit in store.scan(DEADLETTER, query=query):
            if str(get(hit["_source"], "event.original") or "").startswith("#"):
                tally.reasons["a header line was dead-lettered"] += 1
                continue
            tally.dead += 1
            tally.reasons[str(get(hit["_source"], "error.message") or "")[:110]] += 1
        tally.unmapped = store.count(stream, {"bool": {"filter": [
            query, {"term": {"tags": UNMAPPED_TAG}}]}})
        tally.enrichment_failed = store.count(stream, {"bool": {"filter": [
            query, {"term": {"tags": ENRICHMENT_TAG}}]}})
        if proc.returncode != 0:
            tally.reasons[f"fwsiem ingest exited {proc.returncode}: "
                          f"{proc.stderr.strip().splitlines()[-1:]}"] += 1
    return tallies


def pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "-"


def share(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(tallies: dict[str, Tally], labels: dict[str, str], before: dict[str, Tally] | None,
          compare: bool) -> list[str]:
    head = "| corpus | lines | indexed as events | of which unmapped | dead-lettered | refused |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if compare:
        head += (" lines with Elastic's document | 5-tuple agreement | event.outcome agreement |"
                 " event.action agreement |")
        sep += "---:|---:|---:|---:|"
    if before is not None:
        head += " before: indexed as events |" + (" before: 5-tuple agreement |" if compare else "")
        sep += "---:|" + ("---:|" if compare else "")
    rows = [head, sep]
    for key, t in tallies.items():
        row = (f"| {labels.get(key, key)} | {t.lines:,} | {pct(t.events, t.lines)} | "
               f"{pct(t.unmapped, t.events)} | {pct(t.dead, t.lines)} | {t.refused:,} |")
        if compare:
            row += (f" {t.compared_docs:,} | {share(t.agreement())} |"
                    f" {share(t.agreement(('event.outcome',)))} |"
                    f" {pct(t.action_agree, t.action_compared)} |")
        if before is not None:
            b = before.get(key, Tally())
            row += f" {pct(b.events, b.lines)} |"
            if compare:
                row += f" {share(b.agreement())} |"
        rows.append(row)
    return rows


def field_table(tallies: dict[str, Tally], labels: dict[str, str]) -> list[str]:
    rows = ["| vendor | " + " | ".join(COMPARED) + " |", "|---|" + "---:|" * len(COMPARED)]
    for key, t in tallies.items():
        if not t.compared_docs:
            continue
        cells = [f"{t.agree[f]}/{t.fields[f]}" if t.fields[f] else "-" for f in COMPARED]
        rows.append(f"| {labels.get(key, key)} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("FWSIEM_URL", "http://127.0.0.1:9201"),
                        help="an engine that runs ingest pipelines (credentials from the usual "
                             "FWSIEM_* variables or config file)")
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--vendor", action="append", choices=sorted(VENDORS),
                        help="only this Elastic package (repeatable); default all")
    parser.add_argument("--no-real-logs", action="store_true")
    parser.add_argument("--baseline-ref", help="also measure the pipelines of this git revision")
    parser.add_argument("--details", type=int, default=5,
                        help="print this many dead-letter reasons and disagreements per vendor")
    parser.add_argument("--write", type=Path, help="write the table into this EVALUATION.md")
    args = parser.parse_args()

    url_env = dict(os.environ, FWSIEM_URL=args.url, PYTHONPATH=str(REPO))
    config = load_config(env=url_env)
    store = Store.connect(config.engine)
    run_setup(store, config)
    vendor_root = args.datasets / "vendor-logs" / "elastic-integrations"
    real_root = args.datasets / "real-logs"
    packages = args.vendor or [p for p in VENDORS if (vendor_root / p).is_dir()]
    run = f"parseeval-{uuid.uuid4().hex[:8]}"
    stream = f"logs-fwsiem.{run}"
    results: dict[str, tuple[dict, dict]] = {}
    streams: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="fwsiem-parseeval-"))
    try:
        revisions = [("before", args.baseline_ref)] if args.baseline_ref else []
        revisions.append(("now", None))
        for label, rev in revisions:
            root = REPO / "ingest_pipelines"
            if rev:
                root = workdir / "baseline"
                archive = subprocess.run(["git", "archive", rev, "ingest_pipelines"], cwd=REPO,
                                         check=True, capture_output=True).stdout
                root.mkdir()
                subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
            install_pipelines(store, root)
            # A data stream per revision: the mappings one revision's documents create must not
            # decide what the other's may write.
            streams.append(f"{stream}-{label}")
            vendor = measure_vendor_corpora(store, vendor_root, packages, streams[-1],
                                            f"{run}-{label}")
            real = {} if args.no_real_logs else measure_real_logs(
                store, url_env, real_root, streams[-1], f"{run}-{label}", workdir)
            results[label] = (vendor, real)
    finally:
        # Leave the engine as `fwsiem setup` installs it, without this run's documents.
        for name, body in pipeline_bodies(store.flavor).items():
            store.put_pipeline(name, body)
        for name in streams:
            store.request("DELETE", f"/_data_stream/{name}", ignore=(404,))
        store.delete_by_query(DEADLETTER, {"prefix": {"log.file.path": f"{run}-"}})
        store.delete_by_query(DEADLETTER, {"prefix": {"log.file.path": str(workdir)}})
        shutil.rmtree(workdir, ignore_errors=True)

    vendor, real = results["now"]
    before_vendor, before_real = results.get("before", (None, None))
    labels = {**VENDORS, "iptables": "iptables", "ufw": "Ubuntu UFW",
              "windows-firewall": "Windows Defender Firewall"}
    for key, t in {**vendor, **real}.items():
        print(f"\n{labels.get(key, key)}: {t.events}/{t.lines} events, {t.dead} dead letters, "
              f"{t.refused} refused, {t.unmapped} unmapped")
        for reason, n in t.reasons.most_common(args.details):
            print(f"  {n:5d} x {reason}")
        for doc_id, name, got, want in t.disagreements[: args.details]:
            print(f"  differs {doc_id} {name}: fwsiem {got!r}, Elastic {want!r}")

    command = "python scripts/evaluate_parsing.py --url URL" + (
        f" --baseline-ref {args.baseline_ref}" if args.baseline_ref else "") + " --write EVALUATION.md"
    text = "\n".join([
        "## Parsing logs fwsiem did not write",
        "",
        f"`{command}` on {store.flavor} {store.version}: every input line of Elastic's own "
        "pipeline tests (`../shared/datasets/vendor-logs/`) sent through `fwsiem-logs` as the "
        "shipper sends it, and each real log file (`../shared/datasets/real-logs/`) shipped with "
        "`fwsiem ingest`. *Indexed as events* counts documents in the events data stream; "
        "*of which unmapped* are events of a recognised vendor whose message body fwsiem does "
        f"not map yet (tag `{UNMAPPED_TAG}`: header fields only); *refused* lines would be lost. "
        "The agreement compares fwsiem's documents with the documents Elastic's own pipelines "
        "produce from the same lines (the peer), over the fields Elastic's document has: the "
        "5-tuple (`" + "`, `".join(FIVE_TUPLE) + "`), `event.outcome` on its own, and "
        "`event.action` where both name one (the two projects word actions differently, so it "
        "is shown, not aimed at). A line with an Elastic document that fwsiem did not index as "
        "an event counts as disagreeing on every field."
        + (f" *Before* is the same run on the pipelines of `{args.baseline_ref}`."
           if args.baseline_ref else ""),
        "",
        "Vendor test corpora (Elastic's inputs, Elastic's documents as the peer):",
        "",
        *table(vendor, labels, before_vendor, compare=True),
        "",
        "Per field, fwsiem's value equal to Elastic's (equal / compared):",
        "",
        *field_table(vendor, labels),
    ])
    if real:
        text += "\n\n" + "\n".join([
            "Real log files (unlabeled; every line is a well-formed event):",
            "",
            *table(real, labels, before_real, compare=False),
        ])
    print("\n" + text)
    if args.write:
        replace_section(args.write, "parsing", text, "# Evaluation")
        print(f"\nwrote the parsing section of {args.write}")


if __name__ == "__main__":
    main()
