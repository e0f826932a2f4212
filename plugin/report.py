"""The static HTML report: incidents, overview panels, anomalies, recommendations and model metrics in one file."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugin.config import Config
from plugin.store import Store

SEVERITIES = ["critical", "high", "medium", "low", "info"]
SEVERITY_COLORS = {"critical": "#7b1fa2", "high": "#d32f2f", "medium": "#f57c00", "low": "#fbc02d",
                   "info": "#90a4ae"}
ACTION_COLORS = {"pass": "#43a047", "accept": "#43a047", "allow": "#43a047", "drop": "#e53935",
                 "reject": "#fb8c00", "deny": "#e53935"}
#: Candidate bucket widths for time series; the smallest giving at most ``MAX_BUCKETS`` is used.
INTERVALS = [60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400]
MAX_BUCKETS = 120
DENIED = {"term": {"event.type": "denied"}}
# Rule ids and ports are labels; matplotlib notes at INFO that they look like numbers.
logging.getLogger("matplotlib.category").setLevel(logging.WARNING)


@dataclass
class Panel:
    """One plot (PNG) or table of the report."""

    title: str
    png: bytes | None = None
    table: list[dict] | None = None
    note: str = ""
    wide: bool = False


@dataclass
class Section:
    title: str
    panels: list[Panel] = field(default_factory=list)
    intro: str = ""


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _range(since: dt.datetime, until: dt.datetime, fieldname: str = "@timestamp") -> dict:
    return {"range": {fieldname: {"gte": _iso(since), "lt": _iso(until)}}}


def _query(since, until, *extra: dict) -> dict:
    return {"bool": {"filter": [_range(since, until), *extra]}}


def interval_seconds(since: dt.datetime, until: dt.datetime) -> int:
    """The bucket width for a time series over the period.

    >>> t = dt.datetime(2024, 3, 4, tzinfo=dt.timezone.utc)
    >>> interval_seconds(t, t + dt.timedelta(hours=1)), interval_seconds(t, t + dt.timedelta(days=1))
    (60, 900)
    """
    span = max((until - since).total_seconds(), 1)
    for width in INTERVALS:
        if span / width <= MAX_BUCKETS:
            return width
    return INTERVALS[-1]


# -- data from the engine -----------------------------------------------------------------------
def data_period(store: Store, index: str) -> tuple[dt.datetime, dt.datetime] | None:
    """First and last event time in an index (pattern), or None when it is empty."""
    aggs = store.aggregate(index, {"first": {"min": {"field": "@timestamp"}},
                                   "last": {"max": {"field": "@timestamp"}}})
    first, last = aggs.get("first", {}).get("value"), aggs.get("last", {}).get("value")
    if first is None or last is None:
        return None
    to = dt.datetime.fromtimestamp
    return (to(first / 1000, dt.timezone.utc),
            to(last / 1000, dt.timezone.utc) + dt.timedelta(milliseconds=1))


def _terms(store, index, fieldname, query, size=10, order_by_sum: str | None = None) -> list[tuple]:
    terms: dict[str, Any] = {"field": fieldname, "size": size}
    aggs: dict[str, Any] = {"t": {"terms": terms}}
    if order_by_sum:
        terms["order"] = {"s": "desc"}
        aggs["t"]["aggs"] = {"s": {"sum": {"field": order_by_sum}}}
    buckets = store.aggregate(index, aggs, query).get("t", {}).get("buckets", [])
    if order_by_sum:
        return [(b.get("key_as_string", b["key"]), b["s"]["value"]) for b in buckets]
    return [(b.get("key_as_string", b["key"]), b["doc_count"]) for b in buckets]


def _histogram(store, index, split_field, query, since, until) -> tuple[list, dict[str, list]]:
    """Times and, per value of ``split_field``, the count in each bucket (zeros filled)."""
    width = interval_seconds(since, until)
    aggs = {"h": {"date_histogram": {"field": "@timestamp", "fixed_interval": f"{width}s",
                                     "min_doc_count": 0,
                                     "extended_bounds": {"min": _iso(since), "max": _iso(until)}},
                  "aggs": {"s": {"terms": {"field": split_field, "size": 10}}}}}
    buckets = store.aggregate(index, aggs, query).get("h", {}).get("buckets", [])
    times = [dt.datetime.fromtimestamp(b["key"] / 1000, dt.timezone.utc) for b in buckets]
    series: dict[str, list] = {}
    for i, b in enumerate(buckets):
        for s in b["s"]["buckets"]:
            series.setdefault(str(s["key"]), [0] * len(buckets))[i] = s["doc_count"]
    return times, series


def top_flows(store, index, query, n: int = 5) -> list[tuple[tuple, int]]:
    """The ``n`` (source IP, destination IP, destination port) flows with the most events.

    Nested terms (the top sources, their top destinations and ports) rather than
    ``multi_terms``, which the open-source Elasticsearch builds lack.
    """
    aggs = {"s": {"terms": {"field": "source.ip", "size": 2 * n},
                  "aggs": {"d": {"terms": {"field": "destination.ip", "size": 3},
                                 "aggs": {"p": {"terms": {"field": "destination.port", "size": 3}}}}}}}
    flows = []
    for s in store.aggregate(index, aggs, query).get("s", {}).get("buckets", []):
        for d in s["d"]["buckets"]:
            for p in d["p"]["buckets"]:
                flows.append(((s["key"], d["key"], p["key"]), p["doc_count"]))
    return sorted(flows, key=lambda f: -f[1])[:n]


def _flow_series(store, index, flows, query, since, until) -> tuple[list, dict[str, list]]:
    """Events per time bucket of each flow, from one date histogram with a filters sub-aggregation."""
    width = interval_seconds(since, until)
    filters = {f"{s} → {d}:{p}": {"bool": {"filter": [
        {"term": {"source.ip": s}}, {"term": {"destination.ip": d}},
        {"term": {"destination.port": p}}]}} for (s, d, p), _ in flows}
    aggs = {"h": {"date_histogram": {"field": "@timestamp", "fixed_interval": f"{width}s",
                                     "min_doc_count": 0,
                                     "extended_bounds": {"min": _iso(since), "max": _iso(until)}},
                  "aggs": {"f": {"filters": {"filters": filters}}}}}
    buckets = store.aggregate(index, aggs, query).get("h", {}).get("buckets", [])
    times = [dt.datetime.fromtimestamp(b["key"] / 1000, dt.timezone.utc) for b in buckets]
    series = {name: [b["f"]["buckets"][name]["doc_count"] for b in buckets] for name in filters}
    return times, series


# -- plots --------------------------------------------------------------------------------------
def _figure(width=7.0, height=3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    ax.spines[["top", "right"]].set_visible(False)
    return plt, fig, ax


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def bar_png(items: list[tuple], xlabel: str = "", color: str | list = "#1976d2") -> bytes:
    """A horizontal bar chart, largest on top."""
    plt, fig, ax = _figure(5.8, max(2.0, 0.26 * len(items) + 0.9))
    labels = [str(k) for k, _ in items][::-1]
    values = [v for _, v in items][::-1]
    colors = color[::-1] if isinstance(color, list) else color
    ax.barh(labels, values, color=colors)
    ax.set_xlabel(xlabel)
    for y, v in enumerate(values):
        ax.text(v, y, f" {_human(v)}", va="center", fontsize=8)
    return _png(plt, fig)


def stacked_png(times: list, series: dict[str, list], colors: dict[str, str], ylabel: str,
                bars: bool = False) -> bytes:
    """Counts over time, one colour per series."""
    import matplotlib.dates as mdates

    plt, fig, ax = _figure(12.0, 3.0)
    bottom = [0] * len(times)
    width = (times[1] - times[0]).total_seconds() / 86400 * 0.9 if len(times) > 1 else 0.01
    order = sorted(series, key=lambda k: -sum(series[k]))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(order):
        color = colors.get(name, palette[i % len(palette)])
        if bars:
            ax.bar(times, series[name], width=width, bottom=bottom, color=color, label=name)
            bottom = [b + v for b, v in zip(bottom, series[name], strict=True)]
        else:
            ax.plot(times, series[name], color=color, label=name, linewidth=1.2)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    fig.autofmt_xdate()
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    return _png(plt, fig)


def grouped_png(rows: dict[str, dict[str, int]]) -> bytes:
    """Recommendation counts per kind, one bar per severity."""
    plt, fig, ax = _figure(8.0, 3.2)
    kinds = sorted(rows)
    sevs = [s for s in SEVERITIES if any(s in rows[k] for k in kinds)]
    n = max(len(sevs), 1)
    for j, sev in enumerate(sevs):
        xs = [i + (j - (n - 1) / 2) * 0.8 / n for i in range(len(kinds))]
        ax.bar(xs, [rows[k].get(sev, 0) for k in kinds], width=0.8 / n,
               color=SEVERITY_COLORS.get(sev), label=sev)
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_ylabel("recommendations")
    ax.legend(fontsize=8, frameon=False)
    return _png(plt, fig)


def _human(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.1f}{unit}"
    return f"{v:g}" if isinstance(v, float) else str(v)


# -- sections -----------------------------------------------------------------------------------
def overview_section(store: Store, index: str, since, until) -> Section:
    q = _query(since, until)
    sec = Section("Firewall overview", intro=f"Events in {index}.")
    total = store.count(index, q)
    if not total:
        sec.panels.append(Panel("Events", note="No firewall events in this period."))
        return sec
    sec.intro = f"{total:,} events in {index}."
    rules = _terms(store, index, "rule.id", q, 10)
    sec.panels.append(Panel("Top 10 rules by hits", bar_png(rules, "hits")))
    actions = _terms(store, index, "event.action", q, 10)
    sec.panels.append(Panel("Action distribution", bar_png(
        actions, "events", [ACTION_COLORS.get(str(k), "#1976d2") for k, _ in actions])))
    dq = _query(since, until, DENIED)
    dips = _terms(store, index, "destination.ip", dq, 10)
    dports = _terms(store, index, "destination.port", dq, 10)
    if dips:
        sec.panels.append(Panel("Dropped traffic by destination IP", bar_png(dips, "denied", "#e53935")))
        sec.panels.append(Panel("Dropped traffic by destination port",
                                bar_png(dports, "denied", "#fb8c00")))
    else:
        sec.panels.append(Panel("Dropped traffic", note="No denied traffic in this period."))
    protos = _terms(store, index, "network.transport", q, 10)
    sec.panels.append(Panel("Flows by protocol", bar_png(protos, "events", "#00897b")))
    times, series = _histogram(store, index, "event.action", q, since, until)
    sec.panels.append(Panel("Events over time by action",
                            stacked_png(times, series, ACTION_COLORS, "events"), wide=True))
    flows = top_flows(store, index, q)
    if flows:
        times, series = _flow_series(store, index, flows, q, since, until)
        sec.panels.append(Panel("Highest-hitting flows over time",
                                stacked_png(times, series, {}, "events"), wide=True))
    srcs = _terms(store, index, "source.ip", q, 10, order_by_sum="network.bytes")
    dsts = _terms(store, index, "destination.ip", q, 10, order_by_sum="network.bytes")
    if any(v for _, v in srcs):
        sec.panels.append(Panel("Top sources by bytes", bar_png(srcs, "bytes", "#5e35b1")))
        sec.panels.append(Panel("Top destinations by bytes", bar_png(dsts, "bytes", "#3949ab")))
    return sec


def _first(src: dict, *paths: str) -> Any:
    for path in paths:
        value: Any = src
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value not in (None, "", []):
            return value
    return None


def _explanation(src: dict) -> str:
    contribs = src.get("contributions") or []
    if contribs:
        c = contribs[0]
        return (f"{c.get('feature')} = {_human(c.get('observed'))} "
                f"(expected {_human(c.get('expected'))})")
    return str(src.get("message") or src.get("top_feature") or "")


def _documents_section(store: Store, title: str, index: str, since, until
                       ) -> tuple[Section, dict, int]:
    """A section over ``index`` for the period: its query and document count (0: a note)."""
    sec = Section(title)
    q = _query(since, until)
    n = store.count(index, q) if store.exists(index) else 0
    if not n:
        sec.panels.append(Panel(title, note=f"No {title.lower()} in {index} for this period."))
    return sec, q, n


def incidents_section(store: Store, index: str, since, until, top: int = 15) -> Section:
    """Incidents first: one row per attack, most severe and latest first."""
    sec, q, n = _documents_section(store, "Incidents", index, since, until)
    if not n:
        return sec
    sec.intro = (f"{n:,} incidents in {index}: each groups the anomalies of "
                 "one attack (its target or source, across windows).")
    hits = store.search(index, {"size": top, "query": q, "sort": [
        {"event.severity": {"order": "desc", "unmapped_type": "long"}},
        {"@timestamp": {"order": "desc"}}]})["hits"]["hits"]
    rows = []
    for h in hits:
        s = h["_source"]
        ents = s.get("entities", {})
        ev = (s.get("evidence") or [{}])[0]
        rows.append({
            "first window": _first(s, "incident.first_window") or "",
            "last window": _first(s, "incident.last_window") or "",
            "severity": s.get("severity", ""),
            "kind": _first(s, "incident.kind") or "",
            "on": _first(s, "incident.lead.value") or "",
            "targets": ", ".join(t["value"] for t in ents.get("targets", [])[:3]),
            "sources": f"{ents.get('source_count', 0):,}",
            "evidence": (f"{ev.get('feature')} = {_human(ev.get('observed'))} (expected "
                         f"{_human(ev.get('expected'))})") if ev else "",
            "drill-down": _first(s, "drilldown.kql") or "",
        })
    sec.panels.append(Panel(f"Top {len(rows)} incidents", table=rows, wide=True))
    return sec


def anomalies_section(store: Store, index: str, since, until, newest: int = 15) -> Section:
    sec, q, n = _documents_section(store, "Anomalies", index, since, until)
    if not n:
        return sec
    sec.intro = f"{n:,} anomalies in {index}."
    times, series = _histogram(store, index, "severity", q, since, until)
    sec.panels.append(Panel("Anomalies over time by severity",
                            stacked_png(times, series, SEVERITY_COLORS, "anomalies", bars=True),
                            wide=True))
    hits = store.search(index, {"size": newest, "query": q,
                                "sort": [{"@timestamp": {"order": "desc"}}]})["hits"]["hits"]
    rows = []
    for h in hits:
        s = h["_source"]
        rows.append({
            "time": s.get("@timestamp", ""),
            "severity": s.get("severity", ""),
            "entity": f"{_first(s, 'entity.type') or ''} {_first(s, 'entity.value') or ''}".strip(),
            "score": _human(s.get("score")),
            "detector": _first(s, "detector.name") or "",
            "explanation": _explanation(s),
            "drill-down": _first(s, "drilldown.kql") or "",
        })
    sec.panels.append(Panel(f"Newest {len(rows)} anomalies", table=rows))
    return sec


def _proposal(src: dict) -> str:
    p = src.get("proposal") or {}
    if p.get("text"):
        return str(p["text"])
    if p.get("cidrs"):
        return "allow " + ", ".join(map(str, p["cidrs"]))
    if p.get("json"):
        return json.dumps(p["json"], sort_keys=True)[:400]
    return json.dumps(p, sort_keys=True)[:400] if p else ""


def recommendations_section(store: Store, index: str, since, until, top: int = 15) -> Section:
    sec = Section("Recommendations")
    if not store.exists(index) or not store.count(index):
        sec.panels.append(Panel("Recommendations", note=f"No recommendations in {index}."))
        return sec
    # Recommendations describe a period: those written in this one or about a period overlapping it.
    overlaps = {"bool": {"filter": [{"range": {"period.start": {"lt": _iso(until)}}},
                                    {"range": {"period.end": {"gt": _iso(since)}}}]}}
    q = {"bool": {"should": [_range(since, until), overlaps], "minimum_should_match": 1}}
    aggs = {"k": {"terms": {"field": "kind", "size": 20},
                  "aggs": {"s": {"terms": {"field": "severity", "size": 10}}}}}
    buckets = store.aggregate(index, aggs, q).get("k", {}).get("buckets", [])
    rows = {b["key"]: {s["key"]: s["doc_count"] for s in b["s"]["buckets"]} for b in buckets}
    if not rows:
        sec.panels.append(Panel("Recommendations", note="No recommendations for this period."))
        return sec
    sec.intro = f"{sum(sum(r.values()) for r in rows.values()):,} recommendations in {index}."
    sec.panels.append(Panel("Recommendations by kind and severity", grouped_png(rows)))
    hits = store.search(index, {"size": top, "query": q, "sort": [
        {"severity_score": {"order": "desc", "unmapped_type": "long"}},
        {"confidence": {"order": "desc", "unmapped_type": "double"}}]})["hits"]["hits"]
    table = [{"severity": s.get("severity", ""), "kind": s.get("kind", ""),
              "target": _first(s, "target.value") or "",
              "confidence": _human(s.get("confidence")), "title": s.get("title", ""),
              "proposal": _proposal(s)} for s in (h["_source"] for h in hits)]
    sec.panels.append(Panel(f"Top {len(table)} recommendations", table=table))
    return sec


def models_section(store: Store, index: str) -> Section | None:
    if not store.exists(index):
        return None
    body = {"size": 100, "query": {"bool": {"must_not": [{"term": {"doc_type": "chunk"}},
                                                         {"exists": {"field": "chunk.data"}}]}},
            "_source": {"excludes": ["chunk", "artifact.data", "params_json", "report_json"]},
            "sort": [{"@timestamp": {"order": "desc", "unmapped_type": "date"}}]}
    hits = store.search(index, body)["hits"]["hits"]
    rows = []
    for h in hits:
        s = h["_source"]
        metrics = s.get("metrics") or {}
        if not isinstance(metrics, dict) or not metrics:
            continue
        rows.append({
            "model": _first(s, "model.name", "name") or "",
            "version": str(_first(s, "model.version", "version") or ""),
            "status": _first(s, "model.status", "status") or "",
            "trained": s.get("@timestamp", ""),
            "metrics": ", ".join(f"{k} {_human(round(v, 4)) if isinstance(v, (int, float)) else v}"
                                 for k, v in sorted(metrics.items())),
        })
    if not rows:
        return None
    return Section("Models", [Panel("Model registry", table=rows)],
                   intro=f"{len(rows)} model versions in {index}.")


# -- HTML -----------------------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#212121;
background:#f5f6f8}
header{background:#263238;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#cfd8dc;font-size:13px}
main{padding:12px 28px 40px}section{margin-top:18px}h2{font-size:18px;border-bottom:2px solid #cfd8dc;
padding-bottom:4px}.intro{color:#546e7a;font-size:13px;margin:4px 0 10px}
.grid{display:flex;flex-wrap:wrap;gap:14px}.panel{background:#fff;border:1px solid #e0e0e0;
border-radius:6px;padding:10px 12px;flex:1 1 540px;max-width:100%;box-sizing:border-box}
.panel.wide{flex-basis:100%}
.panel h3{font-size:14px;margin:0 0 6px}.panel img{max-width:100%;height:auto;display:block}
.note{color:#78909c;font-style:italic;font-size:13px}
table{border-collapse:collapse;font-size:12px;width:100%}th,td{border-bottom:1px solid #eceff1;
padding:4px 6px;text-align:left;vertical-align:top}th{background:#eceff1}
td.code{font-family:monospace;font-size:11px;word-break:break-all;max-width:420px}
.sev-critical{color:#7b1fa2;font-weight:bold}.sev-high{color:#d32f2f;font-weight:bold}
.sev-medium{color:#f57c00}.sev-low{color:#9e9d24}
"""


def _table_html(rows: list[dict]) -> str:
    if not rows:
        return '<p class="note">Nothing to show.</p>'
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = html.escape(str(r.get(c, "")))
            if c == "severity":
                cells.append(f'<td class="sev-{v}">{v}</td>')
            elif c in ("proposal", "drill-down"):
                cells.append(f'<td class="code">{v}</td>')
            else:
                cells.append(f"<td>{v}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(sections: list[Section], title: str, subtitle: str) -> str:
    """One self-contained HTML page: inline CSS, plots as PNG data URIs, no scripts."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
             f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header><main>"]
    for sec in sections:
        parts.append(f"<section><h2>{html.escape(sec.title)}</h2>")
        if sec.intro:
            parts.append(f'<p class="intro">{html.escape(sec.intro)}</p>')
        parts.append('<div class="grid">')
        for p in sec.panels:
            wide = " wide" if p.table is not None or p.wide else ""
            parts.append(f'<div class="panel{wide}"><h3>{html.escape(p.title)}</h3>')
            if p.png:
                data = base64.b64encode(p.png).decode("ascii")
                parts.append(f'<img alt="{html.escape(p.title)}" src="data:image/png;base64,{data}">')
            if p.table is not None:
                parts.append(_table_html(p.table))
            if p.note:
                parts.append(f'<p class="note">{html.escape(p.note)}</p>')
            parts.append("</div>")
        parts.append("</div></section>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def build_sections(store: Store, config: Config, since: dt.datetime, until: dt.datetime) -> list[Section]:
    sections = [
        incidents_section(store, config.index("incidents"), since, until),
        overview_section(store, config.index("events_pattern"), since, until),
        anomalies_section(store, config.index("anomalies"), since, until),
        recommendations_section(store, config.index("recommendations"), since, until),
    ]
    models = models_section(store, config.index("models"))
    if models:
        sections.append(models)
    return sections


def write_report(store: Store, config: Config, out_dir: str | Path,
                 since: dt.datetime | None = None, until: dt.datetime | None = None) -> Path:
    """Write ``index.html`` into ``out_dir`` and return its path.

    Without ``since``/``until`` the period is the whole span of the events.
    """
    events = config.index("events_pattern")
    if since is None or until is None:
        span = data_period(store, events)
        now = dt.datetime.now(dt.timezone.utc)
        first, last = span if span else (now - dt.timedelta(days=1), now)
        since, until = since or first, until or last
    sections = build_sections(store, config, since, until)
    subtitle = (f"{_iso(since)} to {_iso(until)} · {store.flavor} {store.version} at "
                f"{store.safe_url} · generated {_iso(dt.datetime.now(dt.timezone.utc))}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(render_html(sections, "fwsiem report", subtitle), encoding="utf-8")
    return path
