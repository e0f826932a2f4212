"""`fwsiem demo`: the whole product end to end on a local engine and a simulated day."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from plugin.config import Config, EngineSettings
from plugin.errors import EngineUnavailable, FwsiemError
from plugin.shipping import expand_paths
from plugin.store import Store

log = logging.getLogger(__name__)

@dataclass
class DemoPlan:
    """Where the demo writes and what it simulates (all overridable from the CLI)."""

    workdir: Path
    scenario: str = "demo"
    hours: float = 24
    seed: int = 1
    port: int = 9201

    @property
    def sim_dir(self) -> Path:
        return self.workdir / "simulation"

    @property
    def report_dir(self) -> Path:
        return self.workdir / "report"


@dataclass
class StepLog:
    """Prints numbered steps with their wall time, so progress is visible throughout."""

    total: int
    started: float = field(default_factory=time.monotonic)
    n: int = 0
    timings: list[tuple[str, float]] = field(default_factory=list)

    def run(self, title: str, fn: Callable[[], object]) -> object:
        self.n += 1
        click.secho(f"[{self.n}/{self.total}] {title} ...", bold=True, err=True)
        t0 = time.monotonic()
        out = fn()
        took = time.monotonic() - t0
        self.timings.append((title, took))
        click.echo(f"      done in {took:.1f} s (total {time.monotonic() - self.started:.0f} s)", err=True)
        return out


def engine_environment(settings: EngineSettings) -> dict[str, str]:
    """The cluster settings as the ``FWSIEM_*`` variables the nested steps read: environment,
    not arguments, so no password or key shows in ``ps`` for the steps run as processes."""
    env = {"FWSIEM_URL": settings.url,
           "FWSIEM_ENGINE_VERIFY_CERTS": "true" if settings.verify_certs else "false"}
    for name, value in (("FWSIEM_USERNAME", settings.username),
                        ("FWSIEM_PASSWORD", settings.password),
                        ("FWSIEM_API_KEY", settings.api_key),
                        ("FWSIEM_CA_CERTS", settings.ca_certs)):
        if value:
            env[name] = value
    return env


def invoke(args: list[str]) -> None:
    """Run one fwsiem command in this process, as a user would type it."""
    from plugin.cli import cli

    try:
        code = cli.main(args=args, prog_name="fwsiem", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
    if code not in (None, 0):
        raise FwsiemError(f"`fwsiem {' '.join(args)}` exited with {code}")


def invoke_parallel(commands: list[list[str]], env: dict[str, str] | None = None,
                    progress: Callable[[], str] | None = None, every: float = 10.0) -> None:
    """Run fwsiem commands as concurrent processes (e.g. one ingest per file, so the engine's
    ingest pipelines run on every core), with ``env`` added to their environment; each prints
    its own summary. While they run, ``progress()`` is printed every ``every`` seconds."""
    environ = {**os.environ, **(env or {})}
    procs = [subprocess.Popen([sys.executable, "-m", "plugin", *args], env=environ)
             for args in commands]
    due = time.monotonic() + every
    while any(p.poll() is None for p in procs):
        time.sleep(0.2)
        if progress is not None and time.monotonic() >= due:
            due += every
            try:
                click.echo(f"      {progress()}", err=True)
            except FwsiemError:     # the cluster is busy: the next report will tell
                pass
    failed = [" ".join(args) for args, p in zip(commands, procs, strict=True) if p.wait() != 0]
    if failed:
        raise FwsiemError(f"these commands failed: {'; '.join(failed)}")


def ingest_progress(store: Store, config: Config, paths: list[Path]) -> Callable[[], str]:
    """What the ingest step reports while its shippers run: the documents in the events and
    dead-letter indices against the lines in ``paths``."""
    total = 0
    for f in expand_paths(str(p) for p in paths):     # the files `fwsiem ingest` reads
        with open(f, "rb") as fh:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    indices = f"{config.index('events_pattern')},{config.index('deadletter')}"
    started = time.monotonic()

    def report() -> str:
        return (f"{store.count(indices):,} of {total:,} lines in the cluster "
                f"({time.monotonic() - started:.0f} s)")

    return report


def reachable_store(config: Config) -> Store | None:
    try:
        return Store.connect(config.engine)
    except EngineUnavailable:
        return None


def summarize(store: Store, config: Config, truth: dict, window_s: float) -> dict:
    """Incidents named and detected (the evaluation's own criteria, ml.scoring) and the top
    recommendations.

    A simulated incident is *named* when a medium+ fwsiem incident names one of its addresses
    and has an anomaly on one of them while it lasts (``ml.scoring.score_attacks``, as on real
    traffic): an incident that merely lists one of its addresses among its sources at some
    other time does not count.
    """
    from ml.scoring import MEDIUM_UP, epoch_ms, hit_windows, incidents, score, score_attacks

    window_ms = int(window_s * 1000)
    found = ([h["_source"] for h in store.scan(config.index("incidents"), size=1000)]
             if store.exists(config.index("incidents")) else [])
    anomalies = [h["_source"] for h in store.scan(config.index("anomalies"), size=1000)]
    serious = [dict(a) for a in anomalies if a.get("severity") in MEDIUM_UP]
    for a in serious:
        a["_ws"] = epoch_ms(a["window"]["start"])
    incs = incidents(truth, {})
    result = score(serious, incs, epoch_ms(truth["start"]), epoch_ms(truth["end"]) + window_ms,
                   window_ms)
    attacks = [{"name": i["kind"], "start": i["start"], "end": i["end"], "ips": i["ips"],
                "hosts": i["hosts"]} for i in incs]
    named = score_attacks(anomalies, found, attacks, window_ms)
    rows = []
    for inc, raw, att in zip(incs, truth.get("incidents", []), named["attacks"], strict=True):
        hits = hit_windows(serious, inc, window_ms)
        first = min(hits, default=None)
        top = max((a for a in serious if a["_ws"] in hits), key=lambda a: a.get("score", 0), default=None)
        rows.append({
            "incident": att["by"], "named_after_windows": att["delay"],
            "named_2w": att["named_2w"],
            "id": inc["id"], "kind": inc["kind"], "start": raw["start"], "detected": bool(hits),
            "delay_windows": None if first is None else max(0, (first - inc["start"]) // window_ms),
            "anomalies": len(hits), "top": top["entity"]["value"] if top else None,
        })
    recs = store.search(config.index("recommendations"), {
        "size": 8, "sort": [{"severity_score": {"order": "desc", "unmapped_type": "long"}},
                            {"confidence": {"order": "desc", "unmapped_type": "double"}}]})
    return {
        "incidents": rows,
        "fwsiem_incidents": named["incidents"],
        "false_incidents": named["false_incidents"],
        "recall_2w": result["recall_2w"], "recall_any": result["recall_any"],
        "precision": result["precision"],
        "anomalies": len(anomalies),
        "serious_anomalies": result["docs"],
        "false_serious": result["docs"] - result["true_docs"],
        "recommendations": [h["_source"] for h in recs["hits"]["hits"]],
        "recommendation_count": recs["hits"]["total"]["value"],
    }


def print_summary(summary: dict, plan: DemoPlan, url: str, timings: list[tuple[str, float]]) -> None:
    rows = summary["incidents"]
    named = sum(r["incident"] is not None for r in rows)
    early = sum(r["named_2w"] for r in rows)
    click.secho(f"\nIncidents in the simulated day: {len(rows)}, named by an fwsiem incident: "
                f"{named}, {early} of them within 2 windows (fwsiem wrote "
                f"{summary['fwsiem_incidents']} medium+ incidents, {summary['false_incidents']} "
                "of them about no simulated incident)", bold=True)
    for r in rows:
        mark = "named" if r["incident"] else "detected" if r["detected"] else "missed"
        what = r["incident"] or ""
        delay = (f"after {r['named_after_windows']:.0f} window(s): " if r["incident"] else
                 f"after {r['delay_windows']:.0f} window(s): " if r["detected"] else "")
        click.echo(f"  {r['kind']:<22} {r['start'][:19]}  {mark:<9} {delay}{what}")
    click.echo(f"Anomaly documents: {summary['anomalies']} "
               f"({summary['serious_anomalies']} medium or higher, {summary['false_serious']} of them "
               "outside any incident)")
    click.echo(f"Recall within 2 windows {summary['recall_2w']:.2f}, at any time {summary['recall_any']:.2f}; "
               f"precision of medium+ anomalies {summary['precision']:.2f} (EVALUATION.md has the full table)")
    click.secho(f"\nRecommendations: {summary['recommendation_count']}; the top ones:", bold=True)
    for r in summary["recommendations"]:
        target = r.get("target", {})
        click.echo(f"  [{r.get('severity', ''):<6}] {r.get('kind', ''):<12} "
                   f"{target.get('value', target.get('rule_id', ''))!s:<24} {r.get('title', '')[:70]}")
    click.secho("\nWhere to look:", bold=True)
    click.echo(f"  report      {plan.report_dir / 'index.html'}")
    click.echo(f"  cluster     {url}  (indices logs-fwsiem.*, fwsiem-incidents, fwsiem-anomalies, fwsiem-recommendations)")
    click.echo(f"  simulation  {plan.sim_dir} (truth.json has the ground truth)")
    click.echo("  dashboards  fwsiem setup --kibana http://KIBANA:5601 imports them into Kibana")
    click.secho("\nTime per step (s):", bold=True)
    for title, took in timings:
        click.echo(f"  {took:7.1f}  {title}")
    click.echo(f"  {sum(t for _, t in timings):7.1f}  total")
