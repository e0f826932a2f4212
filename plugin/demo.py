"""`fwsiem demo`: the whole product end to end on a local engine and a simulated day."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from plugin.config import Config
from plugin.errors import EngineUnavailable, FwsiemError
from plugin.store import Store

log = logging.getLogger(__name__)

SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3, "critical": 4}


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


def invoke(args: list[str]) -> None:
    """Run one fwsiem command in this process, as a user would type it."""
    from plugin.cli import cli

    try:
        code = cli.main(args=args, prog_name="fwsiem", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
    if code not in (None, 0):
        raise FwsiemError(f"`fwsiem {' '.join(args)}` exited with {code}")


def invoke_parallel(commands: list[list[str]]) -> None:
    """Run fwsiem commands as concurrent processes (e.g. one ingest per file, so the engine's
    ingest pipelines run on every core); each prints its own summary."""
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-m", "plugin", *args]) for args in commands]
    failed = [" ".join(args) for args, p in zip(commands, procs, strict=True) if p.wait() != 0]
    if failed:
        raise FwsiemError(f"these commands failed: {'; '.join(failed)}")


def reachable_store(config: Config) -> Store | None:
    try:
        return Store.connect(config.engine)
    except EngineUnavailable:
        return None


def incident_matches(incident: dict, anomaly: dict, window_s: float, slack_windows: int = 2) -> bool:
    """Whether an anomaly document points at an incident: entity overlap, and a window that starts
    no earlier than one window before the incident and no later than ``slack_windows`` after it ends.

    >>> inc = {"start": "2020-12-05T10:00:00Z", "end": "2020-12-05T10:10:00Z",
    ...        "entities": {"src_ips": ["1.2.3.4"], "dst_ips": ["10.0.0.5"], "hosts": []}}
    >>> an = {"entity": {"type": "service", "value": "10.0.0.5:22"},
    ...       "window": {"start": "2020-12-05T10:01:00Z"}}
    >>> incident_matches(inc, an, 60)
    True
    >>> incident_matches(inc, {**an, "window": {"start": "2020-12-05T11:00:00Z"}}, 60)
    False
    """
    ents = incident.get("entities", {})
    values = {str(v) for key in ("src_ips", "dst_ips", "hosts") for v in ents.get(key, [])}
    value = str(anomaly.get("entity", {}).get("value", ""))
    candidates = {value, value.rsplit(":", 1)[0]} if ":" in value and value.count(":") == 1 else {value}
    if not candidates & values:
        return False
    start = _ts(incident["start"]) - window_s
    end = _ts(incident["end"]) + slack_windows * window_s
    win = anomaly.get("window", {}).get("start") or anomaly.get("@timestamp")
    return win is not None and start <= _ts(win) <= end


def _ts(value) -> float:
    if isinstance(value, (int, float)):
        return float(value) / (1000 if value > 1e11 else 1)
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def summarize(store: Store, config: Config, truth: dict, window_s: float) -> dict:
    """Incidents detected (by a medium-or-higher anomaly) and the top recommendations."""
    anomalies = [h["_source"] for h in store.scan(config.index("anomalies"), size=1000)]
    serious = [a for a in anomalies if SEVERITY_RANK.get(a.get("severity", ""), 0) >= 2]
    rows = []
    for inc in truth.get("incidents", []):
        hits = [a for a in serious if incident_matches(inc, a, window_s)]
        first = min((_ts(a["window"]["start"]) for a in hits if a.get("window")), default=None)
        rows.append({
            "id": inc.get("id"), "kind": inc["kind"], "start": inc["start"],
            "detected": bool(hits),
            "delay_windows": None if first is None else max(0.0, (first - _ts(inc["start"])) / window_s),
            "anomalies": len(hits),
            "top": max(hits, key=lambda a: a.get("score", 0)).get("entity", {}).get("value") if hits else None,
        })
    recs = store.search(config.index("recommendations"), {
        "size": 8, "sort": [{"severity_score": {"order": "desc", "unmapped_type": "long"}},
                            {"confidence": {"order": "desc", "unmapped_type": "double"}}]})
    return {
        "incidents": rows,
        "anomalies": len(anomalies),
        "serious_anomalies": len(serious),
        "false_serious": sum(1 for a in serious
                             if not any(incident_matches(i, a, window_s) for i in truth.get("incidents", []))),
        "recommendations": [h["_source"] for h in recs["hits"]["hits"]],
        "recommendation_count": recs["hits"]["total"]["value"],
    }


def print_summary(summary: dict, plan: DemoPlan, url: str, timings: list[tuple[str, float]]) -> None:
    rows = summary["incidents"]
    found = sum(r["detected"] for r in rows)
    click.secho(f"\nIncidents in the simulated day: {len(rows)}, detected: {found}", bold=True)
    for r in rows:
        mark = "detected" if r["detected"] else "missed"
        delay = f"after {r['delay_windows']:.0f} window(s), {r['anomalies']} anomalies, top {r['top']}" \
            if r["detected"] else ""
        click.echo(f"  {r['kind']:<22} {r['start'][:19]}  {mark:<9} {delay}")
    click.echo(f"Anomaly documents: {summary['anomalies']} "
               f"({summary['serious_anomalies']} medium or higher, {summary['false_serious']} of them "
               "outside any incident)")
    click.secho(f"\nRecommendations: {summary['recommendation_count']}; the top ones:", bold=True)
    for r in summary["recommendations"]:
        target = r.get("target", {})
        click.echo(f"  [{r.get('severity', ''):<6}] {r.get('kind', ''):<12} "
                   f"{target.get('value', target.get('rule_id', ''))!s:<24} {r.get('title', '')[:70]}")
    click.secho("\nWhere to look:", bold=True)
    click.echo(f"  report      {plan.report_dir / 'index.html'}")
    click.echo(f"  cluster     {url}  (indices logs-fwsiem.*, fwsiem-anomalies, fwsiem-recommendations)")
    click.echo(f"  simulation  {plan.sim_dir} (truth.json has the ground truth)")
    click.echo("  dashboards  fwsiem setup --kibana http://KIBANA:5601 imports them into Kibana")
    click.echo(f"  total time  {sum(t for _, t in timings):.0f} s")
