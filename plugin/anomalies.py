"""Anomaly documents: what was seen, what was expected, why, and where to look."""

from __future__ import annotations

from datetime import datetime, timezone

from ml.detectors import DETECTOR_VERSION, Finding
from plugin.store import doc_id

#: How an entity of each type is found among the raw events.
ENTITY_TERMS = {
    "source": lambda v: [("source.ip", v)],
    "service": lambda v: [("destination.ip", v.rsplit(":", 1)[0]),
                          ("destination.port", int(v.rsplit(":", 1)[1]))],
    "rule": lambda v: [("rule.id", v)],
    "host": lambda v: [("observer.hostname", v)],
    "target": lambda v: [("destination.ip", v)],
}


def iso(ms: int) -> str:
    """Epoch milliseconds as an ISO-8601 UTC timestamp with milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _kql_value(value) -> str:
    if isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def drilldown(terms: list[tuple[str, object]], start_ms: int, end_ms: int,
              any_of: list[tuple[str, object]] = ()) -> dict:
    """KQL and the equivalent query DSL for the raw events behind an anomaly.

    ``terms`` must all match; at least one of ``any_of`` must match when given.

    >>> d = drilldown([("source.ip", "10.0.0.1")], 0, 60000)
    >>> d["kql"]
    'source.ip: "10.0.0.1" and @timestamp >= "1970-01-01T00:00:00.000Z" and @timestamp < "1970-01-01T00:01:00.000Z"'
    """
    start, end = iso(start_ms), iso(end_ms)
    parts = [f"{f}: {_kql_value(v)}" for f, v in terms]
    if any_of:
        parts.append("(" + " or ".join(f"{f}: {_kql_value(v)}" for f, v in any_of) + ")")
    parts += [f'@timestamp >= "{start}"', f'@timestamp < "{end}"']
    flt: list[dict] = [{"term": {f: v}} for f, v in terms]
    if any_of:
        flt.append({"bool": {"should": [{"term": {f: v}} for f, v in any_of],
                             "minimum_should_match": 1}})
    flt.append({"range": {"@timestamp": {"gte": start, "lt": end}}})
    return {"kql": " and ".join(parts), "query": {"bool": {"filter": flt}}}


def anomaly_id(detector: str, entity_type: str, entity: str, start_ms: int) -> str:
    """``_id`` of the anomaly of one detector, entity and window: re-runs overwrite."""
    return doc_id("anomaly", detector, entity_type, entity, start_ms)


def _round(d: dict) -> dict:
    return {k: round(float(v), 6) for k, v in d.items()}


def _summary(finding: Finding) -> str:
    lead = finding.contributors[0] if finding.contributors else None
    why = (f": {lead['feature']} {lead['observed']:.4g} (expected {lead['expected']:.4g})"
           if lead else "")
    return f"{finding.severity} anomaly on {finding.entity_type} {finding.entity}{why}"


def anomaly_document(finding: Finding, start_ms: int, end_ms: int, *, kind: str,
                     partition: str = "0/1", any_of: list[tuple[str, object]] = ()) -> dict:
    """The ``fwsiem-anomalies`` document of one finding in the window ``[start_ms, end_ms)``.

    Deterministic: the same finding in the same window gives the same document.
    """
    if finding.entity_type in ENTITY_TERMS:
        terms = ENTITY_TERMS[finding.entity_type](finding.entity)
    else:
        terms = []
    return {
        "@timestamp": iso(start_ms),
        "message": _summary(finding),
        "event": {"kind": "alert", "category": ["network"], "type": ["info"],
                  "module": "fwsiem", "dataset": "fwsiem.anomalies",
                  "severity": 1 + ["low", "medium", "high", "critical"].index(finding.severity)},
        "window": {"start": iso(start_ms), "end": iso(end_ms),
                   "seconds": (end_ms - start_ms) / 1000},
        "detector": {"name": finding.detector, "version": DETECTOR_VERSION, "kind": kind,
                     "partition": partition},
        "entity": {"type": finding.entity_type, "value": finding.entity},
        "score": round(float(finding.score), 6),
        "threshold": round(float(finding.threshold), 6),
        "severity": finding.severity,
        "top_feature": finding.contributors[0]["feature"] if finding.contributors else None,
        "anomaly": {"score": round(float(finding.score), 6),
                    "threshold": round(float(finding.threshold), 6),
                    "severity": finding.severity},
        "observed": _round(finding.observed),
        "expected": _round(finding.expected),
        "contributions": [{"feature": c["feature"], "observed": round(float(c["observed"]), 6),
                          "expected": round(float(c["expected"]), 6),
                          "deviation": round(float(c["deviation"]), 3)}
                         for c in finding.contributors],
        "drilldown": drilldown(terms, start_ms, end_ms, any_of),
        "feedback": {"false_positive": False, "status": "open"},
    }


def anomaly_actions(index: str, docs: list[dict]) -> list[dict]:
    """Bulk ``index`` actions with ids from detector, entity and window."""
    out = []
    for d in docs:
        start_ms = int(datetime.fromisoformat(d["window"]["start"].replace("Z", "+00:00"))
                       .timestamp() * 1000)
        _id = anomaly_id(d["detector"]["name"], d["entity"]["type"], d["entity"]["value"], start_ms)
        out.append({"_op_type": "index", "_index": index, "_id": _id, "_source": d})
    return out


def suppression_marks(store, index: str, default_ttl_s: float) -> list[tuple]:
    """Every false-positive mark: ``((detector, entity_type, entity), until_ms, features)``.

    A mark set by hand in Kibana without ``feedback.until`` lasts ``default_ttl_s`` from the
    anomaly's window.
    """
    body = {"size": 10000, "query": {"term": {"feedback.false_positive": True}},
            "_source": ["detector.name", "entity", "contributions.feature", "feedback",
                        "window.end"]}
    if not store.exists(index):
        return []
    out = []
    for hit in store.search(index, body)["hits"]["hits"]:
        src = hit["_source"]
        fb = src.get("feedback", {})
        until = fb.get("until")
        if until:
            until_ms = datetime.fromisoformat(until.replace("Z", "+00:00")).timestamp() * 1000
        else:
            end = datetime.fromisoformat(src["window"]["end"].replace("Z", "+00:00"))
            until_ms = end.timestamp() * 1000 + default_ttl_s * 1000
        pattern = fb.get("pattern") or [c["feature"] for c in src.get("contributions", [])[:1]]
        key = (src["detector"]["name"], src["entity"]["type"], src["entity"]["value"])
        out.append((key, until_ms, pattern))
    return out


def active_suppressions(marks: list[tuple], at_ms: int) -> dict:
    """The :func:`suppression_marks` still in force at ``at_ms``:
    ``{(detector, entity_type, entity): {feature, ...}}``."""
    out: dict = {}
    for key, until_ms, pattern in marks:
        if until_ms >= at_ms:
            out.setdefault(key, set()).update(pattern)
    return out
