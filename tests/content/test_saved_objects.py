"""House rules over the Kibana / OpenSearch Dashboards saved objects, each reporting all offenders."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

from plugin.kibana import JSON_TEXT_ATTRIBUTES, TYPE_ORDER, build_ndjson, load_objects

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "kibana_saved_objects"
TEMPLATES = REPO / "plugin" / "assets" / "templates"
AGGREGATABLE = {"keyword", "ip", "long", "integer", "short", "byte", "double", "float", "date",
                "boolean", "scaled_float"}
# Classic aggregation-based visualizations, which Kibana 8 and OpenSearch Dashboards 2 both import.
VIS_TYPES = {"histogram", "horizontal_bar", "line", "area", "pie", "table", "metric"}
LUCENE_FIELD = re.compile(r"(?<![\w.@])([A-Za-z@_][\w.@]*):")

OBJECTS = load_objects(ROOT)
BY_KEY = {(o["type"], o["id"]): o for o in OBJECTS}


def _flatten(props: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for name, spec in props.items():
        path = prefix + name
        if "properties" in spec:
            out.update(_flatten(spec["properties"], path + "."))
        if "type" in spec and "properties" not in spec:
            # A field without doc values cannot be aggregated or sorted on, whatever its type.
            out[path] = spec["type"] + (" without doc values" if spec.get("doc_values") is False
                                        else "")
        for sub, sub_spec in spec.get("fields", {}).items():
            out[f"{path}.{sub}"] = sub_spec["type"]
    return out


def _templates() -> list[tuple[list[str], dict[str, str]]]:
    out = []
    for path in sorted(TEMPLATES.glob("*.json")):
        body = json.loads(path.read_text())
        out.append((body["index_patterns"], _flatten(body["template"]["mappings"]["properties"])))
    return out


TEMPLATE_FIELDS = _templates()


def _fields_for(index_pattern_id: str) -> dict[str, str]:
    title = BY_KEY[("index-pattern", index_pattern_id)]["attributes"]["title"]
    for patterns, fields in TEMPLATE_FIELDS:
        if any(p == title or fnmatch.fnmatch(title.rstrip("*"), p) for p in patterns):
            return fields
    raise AssertionError(f"no index template covers data view {title}")


def _index_ref(obj: dict) -> str:
    ref_name = obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"]["indexRefName"]
    return next(r["id"] for r in obj["references"] if r["name"] == ref_name)


def _query_fields(obj: dict) -> list[str]:
    query = obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"].get("query", {})
    return LUCENE_FIELD.findall(query.get("query", ""))


def _of_type(kind: str) -> list[dict]:
    return [o for o in OBJECTS if o["type"] == kind]


def test_every_object_sits_in_its_type_folder_named_for_its_id():
    on_disk = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("*/*.json"))
    expected = sorted(f"{o['type']}/{o['id']}.json" for o in OBJECTS)
    assert on_disk == expected
    assert {o["type"] for o in OBJECTS} == set(TYPE_ORDER)


def test_every_id_is_unique():
    ids = [o["id"] for o in OBJECTS]
    assert sorted({i for i in ids if ids.count(i) > 1}) == []


def test_every_object_has_a_title_and_a_migration_version_both_products_know():
    offenders = [o["id"] for o in OBJECTS
                 if not o["attributes"].get("title")
                 or not set(o.get("migrationVersion", {}).values()) <= {"7.6.0", "7.9.3", "7.10.0"}]
    assert offenders == []


def test_every_reference_resolves_and_every_ref_name_has_a_reference():
    offenders = []
    for o in OBJECTS:
        names = [r["name"] for r in o["references"]]
        for r in o["references"]:
            if (r["type"], r["id"]) not in BY_KEY:
                offenders.append(f"{o['id']}: {r['type']} {r['id']} does not exist")
        if len(names) != len(set(names)):
            offenders.append(f"{o['id']}: duplicate reference names")
        attrs = o["attributes"]
        used = [p["panelRefName"] for p in attrs.get("panelsJSON", [])]
        source = attrs.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON", {})
        used += [source["indexRefName"]] if "indexRefName" in source else []
        offenders += [f"{o['id']}: {n} has no reference" for n in used if n not in names]
        offenders += [f"{o['id']}: reference {n} is unused" for n in names if n not in used]
    assert offenders == []


def test_every_data_view_is_covered_by_an_index_template_and_has_a_time_field():
    offenders = []
    for o in _of_type("index-pattern"):
        fields = _fields_for(o["id"])
        if fields.get(o["attributes"]["timeFieldName"]) != "date":
            offenders.append(o["id"])
    assert offenders == []


def test_every_field_a_visualization_aggregates_is_mapped_aggregatable():
    offenders = []
    for o in _of_type("visualization"):
        state = o["attributes"]["visState"]
        fields = _fields_for(_index_ref(o))
        used = [a["params"]["field"] for a in state["aggs"] if "field" in a.get("params", {})]
        for name in used:
            if fields.get(name) not in AGGREGATABLE:
                offenders.append(f"{o['id']}: {name} is {fields.get(name, 'not mapped')}")
        for name in _query_fields(o):
            if name not in fields:
                offenders.append(f"{o['id']}: query field {name} is not mapped")
    assert offenders == []


def test_every_saved_search_column_is_mapped_and_its_sort_is_sortable():
    offenders = []
    for o in _of_type("search"):
        fields = _fields_for(_index_ref(o))
        attrs = o["attributes"]
        offenders += [f"{o['id']}: column {c}" for c in attrs["columns"] if c not in fields]
        offenders += [f"{o['id']}: sort {f}" for f, _ in attrs["sort"]
                      if fields.get(f) not in AGGREGATABLE]
        offenders += [f"{o['id']}: query {f}" for f in _query_fields(o) if f not in fields]
    assert offenders == []


def test_visualizations_are_aggregation_based_with_a_title_matching_the_object():
    offenders = [o["id"] for o in _of_type("visualization")
                 if o["attributes"]["visState"]["type"] not in VIS_TYPES
                 or o["attributes"]["visState"]["title"] != o["attributes"]["title"]]
    assert offenders == []


def test_every_visualization_and_search_is_on_a_dashboard():
    shown = {(r["type"], r["id"]) for d in _of_type("dashboard") for r in d["references"]}
    offenders = [o["id"] for o in OBJECTS if o["type"] in ("visualization", "search")
                 and (o["type"], o["id"]) not in shown]
    assert offenders == []


def test_dashboard_panels_fit_the_grid_without_overlapping():
    offenders = []
    for d in _of_type("dashboard"):
        cells: dict[tuple[int, int], str] = {}
        for p in d["attributes"]["panelsJSON"]:
            g = p["gridData"]
            if g["x"] < 0 or g["x"] + g["w"] > 48 or g["i"] != p["panelIndex"]:
                offenders.append(f"{d['id']} panel {p['panelIndex']} outside the grid")
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        offenders.append(f"{d['id']}: panels {cells[(x, y)]} and {g['i']} overlap")
                    cells[(x, y)] = g["i"]
    assert sorted(set(offenders)) == []


def _dashboard_fields(title: str) -> set[tuple[str, str]]:
    """(field, query) of every aggregation and column on the dashboard with this title."""
    dash = next(d for d in _of_type("dashboard") if d["attributes"]["title"] == title)
    out = set()
    for r in dash["references"]:
        o = BY_KEY[(r["type"], r["id"])]
        query = o["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"]["query"]["query"]
        if o["type"] == "visualization":
            out |= {(a["params"]["field"], query) for a in o["attributes"]["visState"]["aggs"]
                    if "field" in a["params"]}
        else:
            out |= {(c, query) for c in o["attributes"]["columns"]}
    return out


def test_the_three_dashboards_show_the_panels_the_soc_relies_on():
    overview = _dashboard_fields("Firewall overview")
    assert {("rule.id", ""), ("event.action", ""), ("network.transport", ""),
            ("destination.ip", "event.type:denied"), ("destination.port", "event.type:denied"),
            ("@timestamp", ""), ("network.bytes", ""), ("source.ip", "")} <= overview
    anomalies = _dashboard_fields("Incidents and anomalies")
    assert {("@timestamp", ""), ("severity", ""), ("entity.type", ""), ("feedback.status", ""),
            ("drilldown.kql", ""), ("top_feature", "")} <= anomalies
    # incidents lead: one row per attack, with what it is about and how many sources
    assert {("incident.kind", ""), ("incident.lead.value", ""),
            ("entities.source_count", "")} <= anomalies
    dash = next(d for d in _of_type("dashboard") if d["id"] == "fwsiem-anomalies-dashboard")
    first = min(dash["attributes"]["panelsJSON"], key=lambda p: p["gridData"]["y"])
    assert [r["id"] for r in dash["references"] if r["name"] == first["panelRefName"]] == [
        "fwsiem-incidents-list"]
    recommendations = _dashboard_fields("Recommendations")
    assert {("kind", ""), ("severity", ""), ("proposal.cidrs", "kind:allow_list"),
            ("target.rule_id", "target.type:rule")} <= recommendations


def test_the_import_file_is_up_to_date_with_the_json_files():
    built = build_ndjson(ROOT)
    current = (ROOT / "build" / "fwsiem-kibana.ndjson").read_text()
    assert current == built, "run: python scripts/build_saved_objects.py"


def test_the_import_file_holds_every_object_with_json_text_attributes():
    lines = [json.loads(line) for line in (ROOT / "build" / "fwsiem-kibana.ndjson").read_text()
             .splitlines()]
    assert [(o["type"], o["id"]) for o in lines] == [(o["type"], o["id"]) for o in OBJECTS]
    offenders = []
    for o in lines:
        attrs = o["attributes"]
        for key in JSON_TEXT_ATTRIBUTES:
            if key in attrs and not isinstance(json.loads(attrs[key]), (dict, list)):
                offenders.append(f"{o['id']}.{key}")
        meta = attrs.get("kibanaSavedObjectMeta")
        if meta and not isinstance(json.loads(meta["searchSourceJSON"]), dict):
            offenders.append(f"{o['id']}.searchSourceJSON")
    assert offenders == []


def test_parsing_health_shows_unmapped_messages_and_enrichment_failures():
    health = _dashboard_fields("Parsing health")
    unmapped, failed = "tags:fwsiem_body_unmapped", "tags:fwsiem_enrichment_failed"
    assert {("observer.vendor", unmapped), ("event.code", unmapped), ("message", unmapped),
            ("fwsiem.enrichment_failures.processor_tag", failed)} <= health
