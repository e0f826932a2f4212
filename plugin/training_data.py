"""Training tables read from the cluster with aggregations (or point-in-time paging).

The action predictor reads distinct flow tuples per day with a composite aggregation over
(day, transport, source and destination address, ports, direction, action); the number of
events behind a tuple becomes its sample weight, so memory grows with the number of distinct
tuples, not of events. Source ports are read as 1024-wide buckets by default, which keeps the
port class (well-known, registered, ephemeral) the model uses and collapses the ephemeral ports
that would otherwise make almost every connection its own tuple.

The traffic classifier reads per-destination flow aggregates; the classifier comparison reads
any table of fields with point-in-time paging.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

import pandas as pd

from plugin.errors import InputError, InsufficientData

FLOW_DATASETS = ["fwsiem.nfdump", "fwsiem.pmacct", "fwsiem.pcap"]


def time_query(since: str | None = None, until: str | None = None,
               filters: Iterable[dict] = ()) -> dict:
    """A bool filter on ``@timestamp`` (``since`` inclusive, ``until`` exclusive, date math ok).

    >>> time_query("now-7d")["bool"]["filter"]
    [{'range': {'@timestamp': {'gte': 'now-7d'}}}]
    """
    clauses: list[dict] = []
    bounds = {}
    if since:
        bounds["gte"] = since
    if until:
        bounds["lt"] = until
    if bounds:
        clauses.append({"range": {"@timestamp": bounds}})
    clauses.extend(filters)
    return {"bool": {"filter": clauses}}


def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="event", unit_scale=True, disable=not enabled,
                leave=False)


def _reservoir(items: Iterator[dict], n: int | None, seed: int = 0) -> list[dict]:
    """All items, or a uniform sample of ``n`` of them in O(n) memory (algorithm R)."""
    if not n:
        return list(items)
    rng = random.Random(seed)
    kept: list[dict] = []
    for i, item in enumerate(items):
        if i < n:
            kept.append(item)
        else:
            j = rng.randint(0, i)
            if j < n:
                kept[j] = item
    return kept


def require_events(store, index: str, query: dict, *, needed: int, what: str) -> int:
    """The number of matching events; :class:`InsufficientData` if fewer than ``needed``."""
    n = store.count(index, query)
    if n < needed:
        raise InsufficientData(
            f"{index} at {store.safe_url} has {n} matching event{'s' if n != 1 else ''} for "
            f"{what}; at least {needed} are needed",
            hint="ingest more logs, widen --since/--until, or point --index at the right data")
    return n


def action_tuples(store, index: str, *, since: str | None = None, until: str | None = None,
                  min_events: int = 1000, sample: int | None = None,
                  exact_source_port: bool = False, progress: bool = False,
                  page_size: int = 5000) -> pd.DataFrame:
    """Distinct (day, tuple, direction, action) rows with their event counts as ``weight``.

    Returns a frame with the tuple columns of :mod:`ml.action` (``proto``, ``sip``, ``dip``,
    ``sport``, ``dport``, ``direction``), ``action``, ``timestamp`` (the day) and ``weight``.
    Raises :class:`InsufficientData` with the counts when there are fewer than ``min_events``
    events or fewer than two actions.
    """
    query = time_query(since, until, [{"exists": {"field": "event.action"}},
                                      {"exists": {"field": "source.ip"}},
                                      {"exists": {"field": "destination.ip"}}])
    n_events = require_events(store, index, query, needed=min_events,
                              what="training the action predictor (events with event.action)")
    sport = ({"terms": {"field": "source.port", "missing_bucket": True}} if exact_source_port
             else {"histogram": {"field": "source.port", "interval": 1024,
                                 "missing_bucket": True}})
    sources = [
        {"day": {"date_histogram": {"field": "@timestamp", "calendar_interval": "1d"}}},
        {"proto": {"terms": {"field": "network.transport", "missing_bucket": True}}},
        {"sip": {"terms": {"field": "source.ip"}}},
        {"dip": {"terms": {"field": "destination.ip"}}},
        {"sport": sport},
        {"dport": {"terms": {"field": "destination.port", "missing_bucket": True}}},
        {"direction": {"terms": {"field": "network.direction", "missing_bucket": True}}},
        {"action": {"terms": {"field": "event.action"}}},
    ]
    bar = _progress(n_events, "reading tuples", progress)

    def buckets():
        for b in store.composite(index, sources, query=query, size=page_size):
            bar.update(b["doc_count"])
            yield b

    rows = _reservoir(buckets(), sample)
    bar.close()
    frame = pd.DataFrame([{**b["key"], "weight": b["doc_count"]} for b in rows])
    if frame.empty or frame["action"].nunique() < 2:
        actions = sorted(frame["action"].unique()) if not frame.empty else []
        raise InsufficientData(
            f"{index} at {store.safe_url} has {n_events} events but only the action(s) "
            f"{actions}; the action predictor needs at least two different actions",
            hint="ingest logs with both passed and dropped traffic")
    frame["timestamp"] = pd.to_datetime(frame.pop("day"), unit="ms", utc=True)
    for col in ("sport", "dport"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").fillna(-1).astype("int64")
    if not exact_source_port:
        # A 1024-wide bucket stands for its last port: 0 -> 1023 (well-known), 49152 -> 50175.
        frame["sport"] = frame["sport"].where(frame["sport"] < 0, frame["sport"] + 1023)
    frame["sport"] = frame["sport"].clip(lower=0)
    frame["dport"] = frame["dport"].clip(lower=0)
    frame["proto"] = frame["proto"].fillna("unknown").astype(str)
    frame["direction"] = frame["direction"].fillna("unknown").astype(str)
    frame.attrs.update({"index": index, "n_events": n_events, "since": since, "until": until})
    return frame


def destination_aggregates(store, index: str, *, since: str | None = None,
                           until: str | None = None, datasets: list[str] | None = None,
                           window: str | None = None, min_events: int = 100,
                           progress: bool = False) -> pd.DataFrame:
    """Per-destination (and per window) flow aggregates of :mod:`ml.traffic` from the cluster.

    Returns ``destination.ip`` (and ``window``), then duration, flows, packets, bytes, pps, bps,
    bpp, and the service columns (distinct sources and destination ports, top port; the
    distinct counts are the engine's cardinality estimates, exact below 3000). The end of the last flow is ``event.end`` when the events carry it, else the last
    start plus the longest flow duration.
    """
    from ml.traffic import with_rates

    datasets = FLOW_DATASETS if datasets is None else datasets
    filters: list[dict] = [{"exists": {"field": "destination.ip"}}]
    if datasets:
        filters.append({"terms": {"event.dataset": datasets}})
    query = time_query(since, until, filters)
    n_events = require_events(store, index, query, needed=min_events,
                              what=f"training the traffic classifier (flow records of "
                                   f"{', '.join(datasets) or 'any dataset'})")
    sources = [{"destination.ip": {"terms": {"field": "destination.ip"}}}]
    if window:
        sources.append({"window": {"date_histogram": {"field": "@timestamp",
                                                      "fixed_interval": window}}})
    aggs = {
        "first": {"min": {"field": "@timestamp"}},
        "last_start": {"max": {"field": "@timestamp"}},
        "last_end": {"max": {"field": "event.end"}},
        "max_duration": {"max": {"field": "event.duration"}},
        "network_packets": {"sum": {"field": "network.packets"}},
        "network_bytes": {"sum": {"field": "network.bytes"}},
        "source_packets": {"sum": {"field": "source.packets"}},
        "source_bytes": {"sum": {"field": "source.bytes"}},
        "destination_packets": {"sum": {"field": "destination.packets"}},
        "destination_bytes": {"sum": {"field": "destination.bytes"}},
        "sources": {"cardinality": {"field": "source.ip"}},
        "dports": {"cardinality": {"field": "destination.port"}},
        "top_dport": {"terms": {"field": "destination.port", "size": 1}},
    }
    bar = _progress(n_events, "reading flows", progress)
    rows = []
    for b in store.composite(index, sources, aggs=aggs, query=query, size=2000):
        bar.update(b["doc_count"])

        def v(name, b=b):
            return b[name].get("value") or 0.0

        packets = v("network_packets") or v("source_packets") + v("destination_packets")
        byts = v("network_bytes") or v("source_bytes") + v("destination_bytes")
        last = b["last_end"].get("value") or (v("last_start") + v("max_duration") / 1e6)
        top = b["top_dport"]["buckets"]
        row = {**b["key"], "first": v("first"), "last": last, "flows": float(b["doc_count"]),
               "packets": float(packets), "bytes": float(byts), "sources": v("sources"),
               "dports": v("dports"), "top_dport": float(top[0]["key"]) if top else -1.0}
        rows.append(row)
    bar.close()
    frame = with_rates(pd.DataFrame(rows))
    if "window" in frame:
        frame["window"] = pd.to_datetime(frame["window"], unit="ms", utc=True)
    frame.attrs.update({"index": index, "n_events": n_events, "since": since, "until": until})
    return frame


def _flatten(doc: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def field_table(store, index: str, fields: list[str], label: str, *,
                since: str | None = None, until: str | None = None, sample: int | None = None,
                min_rows: int = 50, progress: bool = False) -> pd.DataFrame:
    """A table of ``fields`` plus ``label`` from the events, read with point-in-time paging.

    Rows without the label are skipped; list values are joined with ``,``. With ``sample``,
    a uniform sample of that many rows is kept (bounded memory).
    """
    if not fields:
        raise InputError("give the feature fields to read with --features f1,f2,...")
    query = time_query(since, until, [{"exists": {"field": label}}])
    n = require_events(store, index, query, needed=min_rows,
                       what=f"a labeled table (events with {label})")
    bar = _progress(n, "reading events", progress)

    def rows():
        for hit in store.scan(index, query=query, source=[*fields, label], size=2000):
            bar.update(1)
            flat = _flatten(hit.get("_source", {}))
            yield {f: (",".join(map(str, flat[f])) if isinstance(flat.get(f), list)
                       else flat.get(f)) for f in [*fields, label]}

    table = pd.DataFrame(_reservoir(rows(), sample), columns=[*fields, label])
    bar.close()
    return table
