"""Incident documents: one per attack, updated while it goes on, with its evidence and members."""

from __future__ import annotations

from ml.detectors import DETECTOR_VERSION, SEVERITIES
from ml.incidents import Incident
from plugin.anomalies import drilldown, iso
from plugin.store import doc_id

DATASET = "fwsiem.incidents"
#: Entities listed by name in an incident document; the rest are counted.
LISTED = 10


def incident_id(inc: Incident) -> str:
    """``_id`` of an incident: its lead address and first window, so re-runs overwrite.

    Partitioned workers group all the window's findings alike, so the id names no worker
    (``"0/1"`` keeps the ids one worker has always written)."""
    return doc_id("incident", "0/1", inc.key, inc.first_ms)


def _listed(counter) -> list[dict]:
    return [{"value": k, "windows": int(n)} for k, n in counter.most_common(LISTED)]


def _lead_terms(lead: str) -> tuple[list, list]:
    kind, _, value = lead.partition(":")
    if kind == "ip":
        return [], [("source.ip", value), ("destination.ip", value)]
    if kind == "rule":
        return [("rule.id", value)], []
    if kind == "host":
        return [("observer.hostname", value)], []
    return [], []


def incident_document(inc: Incident, window_ms: int, partition: str = "0/1") -> dict:
    """The ``fwsiem-incidents`` document of an incident as it stands now.

    Deterministic for the same incident state; written again (same ``_id``) every window
    the incident grows.
    """
    lead_type, _, lead_value = inc.lead.partition(":")
    end_ms = inc.last_ms + window_ms
    sources = max(len(inc.sources), inc.max_sources)
    ports = sorted({t.rsplit(":", 1)[1] for t in inc.targets if t.startswith(lead_value + ":")},
                   key=lambda p: (len(p), p))
    where = f"{lead_value}" + (f" port {', '.join(ports[:5])}" if ports else "")
    extra = f", {sources:,} sources" if sources > 1 else ""
    terms, any_of = _lead_terms(inc.lead)
    return {
        "@timestamp": iso(inc.first_ms),
        "message": f"{inc.severity} incident: {inc.kind} on {where}{extra}",
        "event": {"kind": "alert", "category": ["network"], "type": ["info"],
                  "module": "fwsiem", "dataset": DATASET,
                  "severity": 1 + SEVERITIES.index(inc.severity),
                  "start": iso(inc.first_ms), "end": iso(end_ms)},
        "incident": {
            "id": incident_id(inc), "kind": inc.kind,
            "lead": {"type": lead_type, "value": lead_value},
            "first_window": iso(inc.first_ms), "last_window": iso(inc.last_ms),
            "windows": len(inc.windows),
            "window_starts": [iso(w) for w in inc.windows],
            "status": "open" if inc.open else "closed",
        },
        "severity": inc.severity,
        "score": round(inc.score, 6),
        "entities": {
            "targets": _listed(inc.targets), "target_count": len(inc.targets),
            "sources": _listed(inc.sources), "source_count": sources,
        },
        "evidence": [{"entity": c["entity"], "feature": c["feature"],
                      "observed": round(float(c["observed"]), 6),
                      "expected": round(float(c["expected"]), 6),
                      "deviation": round(float(c["deviation"]), 3)} for c in inc.evidence],
        "members": {"count": inc.member_count, "folded": inc.folded,
                    "anomaly_ids": list(inc.members)},
        "detector": {"version": DETECTOR_VERSION, "partition": partition},
        "drilldown": drilldown(terms, inc.first_ms, end_ms, any_of),
        "feedback": {"false_positive": False, "status": "open"},
    }


def incident_actions(index: str, docs: list[dict]) -> list[dict]:
    """Bulk ``index`` actions: the latest state of each incident replaces the previous one."""
    return [{"_op_type": "index", "_index": index, "_id": d["incident"]["id"], "_source": d}
            for d in docs]
