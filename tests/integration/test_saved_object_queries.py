"""Every dashboard panel's query, translated to query DSL, runs on the real engines over simulated data."""

from __future__ import annotations

import datetime as dt
import fnmatch
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from ml.detectors import Finding
from plugin.anomalies import anomaly_document
from plugin.kibana import load_objects, visualization_request
from plugin.recommend import Period, recommendation
from plugin.setup import run_setup

pytestmark = pytest.mark.integration

OBJECTS = load_objects(Path(__file__).resolve().parents[2] / "kibana_saved_objects")
INDEX_PATTERNS = {o["id"]: o for o in OBJECTS if o["type"] == "index-pattern"}
VISUALIZATIONS = [o for o in OBJECTS if o["type"] == "visualization"]
SEARCHES = [o for o in OBJECTS if o["type"] == "search"]
DENIED_ACTIONS = ("drop", "reject")
# Events a parser indexed without mapping their body, and events kept though an enrichment
# failed on them (docs/formats.md), as the pipelines tag them.
UNMAPPED = pd.DataFrame(
    [("Cisco", "fw-a", "999999", "fwsiem.cisco_asa", "informational", "Something new")] * 3
    + [("Cisco", "fw-b", "733100", "fwsiem.cisco_asa", "warning", "[Scanning] drop rate")] * 2
    + [("Fortinet", "fgt-1", "0100032001", "fwsiem.fortigate", "information", "admin login")],
    columns=["observer.vendor", "observer.hostname", "event.code", "event.dataset", "log.level",
             "message"])
ENRICHMENT_FAILED = pd.DataFrame(
    [("fwsiem.iptables", "compute_community_id_by_script")] * 2
    + [("fwsiem.nsx_dfw", "convert_counters_name_protocol_and_event_type")],
    columns=["event.dataset", "fwsiem.enrichment_failures.processor_tag"])
# What each Lucene query of the saved objects selects among the simulated events.
EVENT_QUERIES = {"": lambda df: df, "event.type:denied": lambda df: df[df["denied"]],
                 "tags:fwsiem_body_unmapped": lambda df: UNMAPPED,
                 "tags:fwsiem_enrichment_failed": lambda df: ENRICHMENT_FAILED}


def _event_docs(df: pd.DataFrame, index: str):
    """Parsed events as the NSX pipeline writes them (docs/fields.md)."""
    for row in df.to_dict("records"):
        term = row["nsx.dfw.line_kind"] == "term"
        doc = {k: v for k, v in row.items()
               if v != "" and k not in ("session.id", "incident.id", "denied", "@timestamp")}
        if not term:  # match lines carry only the packet length
            for k in ("source.bytes", "source.packets", "destination.bytes", "destination.packets"):
                doc.pop(k)
        else:
            doc["network.bytes"] = row["source.bytes"] + row["destination.bytes"]
            doc["network.packets"] = row["source.packets"] + row["destination.packets"]
        doc["@timestamp"] = row["@timestamp"].isoformat()
        doc.update({"event.kind": "event", "event.category": ["network"],
                    "event.type": ["connection", "denied" if row["denied"] else "allowed",
                                   "end" if term else "start"],
                    "event.outcome": "failure" if row["denied"] else "success",
                    "event.dataset": "fwsiem.nsx_dfw", "event.module": "fwsiem"})
        yield {"_op_type": "create", "_index": index, "_source": doc}


def _coverage_docs(index: str, at: dt.datetime):
    """The UNMAPPED and ENRICHMENT_FAILED events, with their tags, at one time."""
    for frame, tag in ((UNMAPPED, "fwsiem_body_unmapped"), (ENRICHMENT_FAILED,
                                                            "fwsiem_enrichment_failed")):
        for row in frame.to_dict("records"):
            doc = {"@timestamp": at.isoformat(), "event.kind": "event", "tags": [tag], **row}
            if tag == "fwsiem_enrichment_failed":
                doc["fwsiem.enrichment_failures"] = [{"processor_tag": doc.pop(
                    "fwsiem.enrichment_failures.processor_tag"), "message": "a reason"}]
            yield {"_op_type": "create", "_index": index, "_source": doc}


def _anomaly_docs(df: pd.DataFrame, start: dt.datetime) -> list[dict]:
    """Anomaly documents as `fwsiem run` writes them, about entities of the simulated traffic."""
    docs = []
    sources = df["source.ip"].value_counts().index[:4]
    for i, (ip, severity) in enumerate(zip(sources, ["low", "medium", "high", "critical"],
                                           strict=True)):
        finding = Finding("source.ip", ip, score=5.0 + i, threshold=4.0, severity=severity,
                          observed={"fanout": 40.0 + i}, expected={"fanout": 3.0},
                          contributors=[{"feature": "fanout", "observed": 40.0 + i,
                                         "expected": 3.0, "deviation": 9.0 + i}],
                          detector="fanout")
        start_ms = int(start.timestamp() * 1000) + i * 600_000
        docs.append(anomaly_document(finding, start_ms, start_ms + 60_000, kind="window"))
    docs[0]["feedback"]["status"] = "confirmed"
    del docs[1]["feedback"]  # not reviewed yet
    return docs


def _incident_docs(df: pd.DataFrame, start: dt.datetime) -> list[dict]:
    """Incident documents as `fwsiem run` writes them: a flood on the busiest service of the
    simulated traffic, many of whose sources were flagged too."""
    from ml.incidents import IncidentTracker
    from plugin.windows import window_documents

    top = df.groupby(["destination.ip", "destination.port"]).size().idxmax()
    service = f"{top[0]}:{int(top[1])}"
    sources = df[df["destination.ip"] == top[0]]["source.ip"].value_counts().index[:3]
    start_ms = int(start.timestamp() * 1000)
    found = [(Finding("service", service, 12.0, 3.0, "critical", {"src_ips": 900.0},
                      {"src_ips": 3.0}, [{"feature": "src_ips", "observed": 900.0,
                                          "expected": 3.0, "deviation": 12.0}],
                      "window.service"), "profile", [])]
    found += [(Finding("source", ip, 4.0, 3.0, "medium", {"events": 50.0}, {"events": 3.0},
                       [{"feature": "events", "observed": 50.0, "expected": 3.0,
                         "deviation": 4.0}], "window.source"), "profile", []) for ip in sources]
    links = {("source", ip): [top[0]] for ip in sources}
    docs = window_documents(found, links, IncidentTracker(60_000), start_ms, start_ms + 60_000)
    return [dict(d, _id=d["incident"]["id"]) for d in docs
            if d["event"]["dataset"] == "fwsiem.incidents"]


def _recommendation_docs(df: pd.DataFrame, period: Period) -> list[dict]:
    """An allow-list and rule-hygiene findings as `fwsiem recommend` writes them."""
    model = {"name": "test", "version": "1"}
    docs = []
    for rid in df["rule.id"].value_counts().index[-2:]:
        docs.append(recommendation(
            "unused", "rule", rid, period, evidence={"hits": 0}, proposal={"action": "remove"},
            severity="medium", confidence=0.9, model=model, data={}, title=f"rule {rid} unused"))
    top = df["rule.id"].value_counts()
    docs.append(recommendation(
        "dominant", "rule", top.index[0], period,
        evidence={"hits": int(top.iloc[0]), "last_seen": df["@timestamp"].max().isoformat(),
                  "share": round(float(top.iloc[0] / len(df)), 4)},
        proposal={"action": "investigate"}, severity="high", confidence=0.8, model=model,
        data={}, title=f"rule {top.index[0]} takes most hits"))
    dst = df[~df["denied"]]["destination.ip"].value_counts().index[0]
    docs.append(recommendation(
        "allowlist", "endpoint", f"{dst}:443", period, evidence={"remotes": 3},
        proposal={"action": "allow_list", "cidrs": ["10.20.0.0/24", "10.30.4.0/26"]},
        severity="low", confidence=0.93, model=model, data={}, title=f"{dst}:443 allow-list"))
    return docs


@pytest.fixture(scope="module")
def simulated():
    from ml.simulate import Simulation, load_scenario

    df = pd.concat(list(Simulation(load_scenario("default"), hours=1, seed=1).iter_events()),
                   ignore_index=True)
    df["denied"] = df["event.action"].isin(DENIED_ACTIONS)
    return df


@pytest.fixture(scope="module")
def loaded(engine, simulated):
    """Templates installed as `fwsiem setup --skip-pipelines` does, then data in fresh indices."""
    store = engine.store
    run_setup(store, engine.config(), skip_pipelines=True, only={"template"})
    tag = f"{os.getpid()}"
    indices = {"logs-fwsiem.*": f"logs-fwsiem.kso{tag}-default",
               "fwsiem-anomalies*": f"fwsiem-anomalies-kso{tag}",
               "fwsiem-incidents*": f"fwsiem-incidents-kso{tag}",
               "fwsiem-recommendations*": f"fwsiem-recommendations-kso{tag}"}
    for name in indices.values():
        store.delete_index(name)
    start = simulated["@timestamp"].min().to_pydatetime()
    end = simulated["@timestamp"].max().to_pydatetime() + dt.timedelta(seconds=1)
    events = store.bulk(_event_docs(simulated, indices["logs-fwsiem.*"]), refresh=True)
    assert not events.failed, events.failed[:3]
    coverage = store.bulk(_coverage_docs(indices["logs-fwsiem.*"], start), refresh=True)
    assert not coverage.failed, coverage.failed[:3]
    period = Period(start, end)
    for pattern, docs in (("fwsiem-anomalies*", _anomaly_docs(simulated, start)),
                          ("fwsiem-incidents*", _incident_docs(simulated, start)),
                          ("fwsiem-recommendations*", _recommendation_docs(simulated, period))):
        result = store.bulk([{"_op_type": "index", "_index": indices[pattern], "_id": d.pop("_id", None)
                              or str(i), "_source": d} for i, d in enumerate(docs)], refresh=True)
        assert not result.failed, result.failed[:3]
    now = dt.datetime.now(dt.timezone.utc)
    # Recommendations are stamped when they are written, the rest when it happened.
    time_ranges = {"logs-fwsiem.*": (start.isoformat(), end.isoformat()),
                   "fwsiem-anomalies*": (start.isoformat(), end.isoformat()),
                   "fwsiem-incidents*": (start.isoformat(), end.isoformat()),
                   "fwsiem-recommendations*": ((now - dt.timedelta(days=1)).isoformat(),
                                               (now + dt.timedelta(hours=1)).isoformat())}
    yield store, indices, time_ranges
    for name in indices.values():
        store.delete_index(name)


def _run(loaded, vis: dict) -> dict:
    store, indices, time_ranges = loaded
    title = INDEX_PATTERNS[vis["references"][0]["id"]]["attributes"]["title"]
    pattern, body = visualization_request(vis, INDEX_PATTERNS, time_ranges[title])
    index = indices[pattern]
    assert fnmatch.fnmatch(index, pattern)
    return store.search(index, body)


def _buckets(aggs: dict, path: list[str]) -> list[dict]:
    """Buckets of the innermost bucket aggregation, following the first bucket at each level."""
    level = aggs
    for depth, agg_id in enumerate(path):
        buckets = level[agg_id]["buckets"]
        if depth == len(path) - 1 or not buckets:
            return buckets
        level = buckets[0]
    return []


@pytest.mark.parametrize("vis", VISUALIZATIONS, ids=[v["id"] for v in VISUALIZATIONS])
def test_every_visualization_returns_buckets_at_every_level(loaded, vis):
    resp = _run(loaded, vis)
    aggs = [a for a in vis["attributes"]["visState"]["aggs"] if a["schema"] != "metric"]
    metrics = [a["id"] for a in vis["attributes"]["visState"]["aggs"]
               if a["schema"] == "metric" and a["type"] != "count"]
    path = [a["id"] for a in aggs]
    for depth in range(1, len(path) + 1):
        assert _buckets(resp["aggregations"], path[:depth]), f"no buckets for {path[:depth]}"
    leaf = _buckets(resp["aggregations"], path)[0]
    for m in metrics:
        assert leaf[m]["value"] is not None and not math.isnan(leaf[m]["value"])


def _first_level_terms(vis: dict) -> tuple[dict, dict | None] | None:
    aggs = vis["attributes"]["visState"]["aggs"]
    buckets = [a for a in aggs if a["schema"] != "metric"]
    metric = next(a for a in aggs if a["id"] == "1")
    if buckets[0]["type"] != "terms":
        return None
    return buckets[0], (None if metric["type"] == "count" else metric)


EVENT_TERMS = [v for v in VISUALIZATIONS
               if v["references"][0]["id"] == "fwsiem-events" and _first_level_terms(v)]


@pytest.mark.parametrize("vis", EVENT_TERMS, ids=[v["id"] for v in EVENT_TERMS])
def test_top_buckets_match_the_simulated_events(loaded, simulated, vis):
    """The panel shows the real top entries with their true counts or sums."""
    terms, metric = _first_level_terms(vis)
    query = vis["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"]["query"]["query"]
    df = EVENT_QUERIES[query](simulated)
    if metric is None:
        expected = df[terms["params"]["field"]].value_counts()
    else:
        term_lines = df[df["nsx.dfw.line_kind"] == "term"]
        expected = (term_lines["source.bytes"] + term_lines["destination.bytes"]).groupby(
            term_lines[terms["params"]["field"]]).sum()
        assert metric["params"]["field"] == "network.bytes"
    expected.index = expected.index.astype(str)
    buckets = _run(loaded, vis)["aggregations"][terms["id"]]["buckets"]
    got = {str(b["key"]): (b["doc_count"] if metric is None else b[metric["id"]]["value"])
           for b in buckets}
    assert len(got) == min(terms["params"]["size"], len(expected))
    assert {k: expected[k] for k in got} == pytest.approx(got)
    assert min(got.values()) >= max(expected.drop(list(got)), default=0)


@pytest.mark.parametrize("search", SEARCHES, ids=[s["id"] for s in SEARCHES])
def test_every_saved_search_finds_documents_with_its_columns(loaded, search):
    store, indices, _ = loaded
    attrs = search["attributes"]
    source = attrs["kibanaSavedObjectMeta"]["searchSourceJSON"]
    pattern = INDEX_PATTERNS[search["references"][0]["id"]]["attributes"]["title"]
    query = source["query"]["query"]
    body = {"size": 50, "sort": [{f: {"order": o}} for f, o in attrs["sort"]],
            "query": {"query_string": {"query": query}} if query else {"match_all": {}}}
    hits = store.search(indices[pattern], body)["hits"]["hits"]
    assert hits
    shown = set()
    for hit in hits:
        shown |= {c for c in attrs["columns"] if _get(hit["_source"], c) is not None}
    assert shown == set(attrs["columns"])


def _get(doc: dict, dotted: str):
    if dotted in doc:
        return doc[dotted]
    head, _, rest = dotted.partition(".")
    return _get(doc[head], rest) if rest and isinstance(doc.get(head), dict) else None
