"""Scoring anomaly documents against incident ground truth: detection delay, recall, precision.

One definition, used by the evaluation (scripts/evaluate_detection.py) and by `fwsiem demo`.
An incident is detected when a medium-or-higher anomaly document's entity is one of the
incident's entities (its IPs; for rule and host entities the rules and hosts its events touched;
for the port-vector autoencoder the ports it names) and its window overlaps the incident.

Examples
--------
>>> truth = {"incidents": [{"id": 1, "kind": "port_scan_vertical", "start": "2024-03-04T10:00:00Z",
...          "end": "2024-03-04T10:05:00Z", "entities": {"src_ips": ["1.2.3.4"], "dst_ips": ["10.0.0.5"],
...          "dst_ports": [1, 1024]}}]}
>>> incs = incidents(truth, {})
>>> doc = {"severity": "high", "entity": {"type": "source", "value": "1.2.3.4"},
...        "window": {"start": "2024-03-04T10:01:00Z"}}
>>> res = score([doc], incs, incs[0]["start"] - 3_600_000, incs[0]["end"] + 3_600_000, 60_000)
>>> res["recall_2w"], res["precision"]
(1.0, 1.0)
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import pandas as pd

MEDIUM_UP = ("medium", "high", "critical")


def epoch_ms(text) -> int:
    if isinstance(text, pd.Timestamp):
        return int(text.value // 1_000_000)
    return int(dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp() * 1000)


def _as_list(v) -> list:
    if isinstance(v, (list, tuple)):
        return list(v)
    return [] if v is None else [v]


def incidents(truth: dict, extra: dict) -> list[dict]:
    """Truth incidents with their entity sets and the time span their events cover."""
    out = []
    for i in truth["incidents"]:
        ent = i["entities"]
        ips = {str(x) for x in _as_list(ent.get("src_ips")) + _as_list(ent.get("dst_ips"))}
        ports = [int(p) for p in _as_list(ent.get("dst_ports"))]
        if i["kind"] == "port_scan_vertical" and len(ports) == 2:
            ports = list(range(ports[0], ports[1] + 1))
        e = extra.get(str(i["id"]), extra.get(i["id"], {})) if "id" in i else {}
        start, end = epoch_ms(i["start"]), epoch_ms(i["end"])
        if e.get("last") is not None:
            end = max(end, epoch_ms(e["last"]))
        out.append({"id": i.get("id"), "kind": i["kind"], "start": start, "end": end,
                    "ips": ips, "ports": set(ports),
                    "hosts": set(_as_list(ent.get("hosts"))) | set(e.get("hosts", ())),
                    "rules": set(e.get("rules", ()))})
    return out


def overlaps(doc: dict, inc: dict) -> bool:
    """Whether an anomaly document's entity is one of the incident's entities."""
    etype, value = doc["entity"]["type"], str(doc["entity"]["value"])
    if etype in ("source", "target"):
        return value in inc["ips"]
    if etype == "service":
        return value.rsplit(":", 1)[0] in inc["ips"]
    if etype == "rule":
        return value in inc["rules"]
    if etype == "host":
        return value in inc["hosts"]
    if etype == "ports":
        ports = {int(c["feature"].rsplit(":", 1)[1]) for c in doc.get("contributions", [])}
        return bool(ports & inc["ports"])
    return False


def hit_windows(docs: list[dict], inc: dict, window_ms: int) -> list[int]:
    """Window starts (ms) of the documents (with ``_ws`` set) that point at an incident."""
    return [d["_ws"] for d in docs if overlaps(d, inc)
            and d["_ws"] + window_ms > inc["start"] and d["_ws"] <= inc["end"]]


def score(docs: list[dict], incs: list[dict], eval_from: int, eval_to: int,
          window_ms: int) -> dict:
    """Per-kind detection within 2 windows, recall and precision over the evaluation day."""
    docs = [d for d in docs if d["severity"] in MEDIUM_UP]
    for d in docs:
        d["_ws"] = epoch_ms(d["window"]["start"])
    day = [d for d in docs if eval_from <= d["_ws"] < eval_to]
    scored = [i for i in incs if eval_from <= i["start"] < eval_to]
    per_kind: dict = defaultdict(lambda: {"n": 0, "early": 0, "any": 0, "delays": []})
    for inc in scored:
        k = per_kind[inc["kind"]]
        k["n"] += 1
        hits = hit_windows(docs, inc, window_ms)
        if hits:
            k["any"] += 1
            first = min(hits)
            delay = max(0, (first - inc["start"]) // window_ms + (first > inc["start"]))
            if first <= inc["start"] + 2 * window_ms:
                k["early"] += 1
            k["delays"].append(int(delay))
    true = [d for d in day if any(overlaps(d, i) and d["_ws"] + window_ms > i["start"]
                                  and d["_ws"] <= i["end"] for i in incs)]
    n = len(scored)
    return {
        "per_kind": dict(per_kind),
        "incidents": n,
        "recall_2w": sum(k["early"] for k in per_kind.values()) / n if n else float("nan"),
        "recall_any": sum(k["any"] for k in per_kind.values()) / n if n else float("nan"),
        "docs": len(day), "true_docs": len(true),
        "precision": len(true) / len(day) if day else float("nan"),
        "false_by_type": _count(d["entity"]["type"] for d in day if d not in true),
    }


def _count(items) -> dict:
    out: dict = defaultdict(int)
    for x in items:
        out[x] += 1
    return dict(out)


# -- runs ---------------------------------------------------------------------------------------


# -- real captures: attacks named by incidents ---------------------------------------------------

def incident_names(inc: dict, ips: set, hosts: set = frozenset(),
                   rules: set = frozenset()) -> bool:
    """Whether an incident document names one of ``ips`` (its lead, a target or a source), or
    is led by one of ``hosts`` or ``rules`` (a hypervisor's or a rule's deny spike is the same
    attack seen from the firewall that logged it, as for anomaly documents in :func:`overlaps`).
    """
    lead = inc["incident"]["lead"]
    if (lead.get("type") == "host" and str(lead["value"]) in hosts) or (
            lead.get("type") == "rule" and str(lead["value"]) in rules):
        return True
    named = {str(lead["value"])}
    ents = inc.get("entities", {})
    named |= {str(t["value"]).rsplit(":", 1)[0] for t in ents.get("targets", [])}
    named |= {str(s["value"]) for s in ents.get("sources", [])}
    return bool(named & ips)


def _span(inc: dict, window_ms: int) -> tuple[int, int]:
    return (epoch_ms(inc["incident"]["first_window"]),
            epoch_ms(inc["incident"]["last_window"]) + window_ms)


def score_attacks(anomalies: list[dict], incs: list[dict], attacks: list[dict],
                  window_ms: int) -> dict:
    """Per attack: named within 2 windows of its start, and the documents it caused.

    An attack (``start``, ``end`` in ms, ``ips``: its attackers and targets) is *named* when a
    medium-or-higher incident names one of its addresses and one of that incident's anomaly
    documents (any severity: members are reported low) points at one of them in a window
    starting at most 2 windows after the attack's start. Its documents are the medium+
    incidents and anomalies that name its addresses while it lasts (an attack may also carry
    the ``hosts`` and ``rules`` that logged it: an incident led by one of them is about it).
    Every other medium+ incident is a false one.

    >>> inc = {"severity": "high", "incident": {"id": "i1", "lead": {"value": "10.0.0.5"},
    ...        "first_window": "2024-01-01T00:01:00Z", "last_window": "2024-01-01T00:02:00Z"}}
    >>> ano = {"severity": "high", "incident": {"id": "i1"}, "window": {"start":
    ...        "2024-01-01T00:01:00Z"}, "entity": {"type": "service", "value": "10.0.0.5:80"}}
    >>> att = {"name": "flood", "start": epoch_ms("2024-01-01T00:00:30Z"),
    ...        "end": epoch_ms("2024-01-01T00:02:30Z"), "ips": {"10.0.0.5"}}
    >>> r = score_attacks([ano], [inc], [att], 60_000)
    >>> r["attacks"][0]["named_2w"], r["attacks"][0]["incidents"], r["false_incidents"]
    (True, 1, 0)
    """
    serious = [i for i in incs if i.get("severity") in MEDIUM_UP]
    by_incident: dict = defaultdict(list)
    for a in anomalies:
        if a.get("incident"):
            by_incident[a["incident"]["id"]].append(a)
    rows, true_ids = [], set()
    for att in attacks:
        lo, hi = att["start"], att["end"]
        mine = [i for i in serious
                if incident_names(i, att["ips"], att.get("hosts", ()), att.get("rules", ()))
                and _span(i, window_ms)[0] <= hi and _span(i, window_ms)[1] > lo]
        true_ids |= {i["incident"]["id"] for i in mine}
        first, by = None, None
        for i in mine:
            for a in by_incident.get(i["incident"]["id"], []):
                ws = epoch_ms(a["window"]["start"])
                if (overlaps_ips(a, att["ips"]) and ws + window_ms > lo and ws <= hi
                        and (first is None or ws < first)):
                    first, by = ws, i
        docs = [a for a in anomalies if a.get("severity") in MEDIUM_UP
                and overlaps_ips(a, att["ips"])
                and epoch_ms(a["window"]["start"]) + window_ms > lo
                and epoch_ms(a["window"]["start"]) <= hi]
        rows.append({"name": att["name"], "named": first is not None,
                     "named_2w": first is not None and first <= lo + 2 * window_ms,
                     "delay": None if first is None else max(0, (first - lo) // window_ms),
                     "by": None if by is None else by.get("message", by["incident"]["id"]),
                     "incidents": len(mine), "anomalies": len(docs)})
    false = [i for i in serious if i["incident"]["id"] not in true_ids]
    return {"attacks": rows, "false_incidents": len(false), "incidents": len(serious),
            "anomalies": sum(a.get("severity") in MEDIUM_UP for a in anomalies),
            "false_kinds": _count(i["incident"]["kind"] for i in false)}


def overlaps_ips(doc: dict, ips: set) -> bool:
    """Whether an anomaly document's entity (a source, or a service's address) is in ``ips``."""
    etype, value = doc["entity"]["type"], str(doc["entity"]["value"])
    if etype in ("source", "target"):
        return value in ips
    if etype == "service":
        return value.rsplit(":", 1)[0] in ips
    return False
