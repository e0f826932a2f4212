"""House rules over every alert definition and its rendered Watcher watch and OpenSearch monitor."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from plugin import alerting
from plugin.config import parse_duration
from plugin.setup import TEMPLATE_TARGETS, asset_dir

DEFINITIONS = alerting.load_definitions()
IDS = [d["id"] for d in DEFINITIONS]
REQUIRED = ("id", "name", "description", "index", "schedule", "lookback", "time_field",
            "throttle", "severity", "dashboard", "search", "condition", "event", "message",
            "actions")
AGGREGATABLE = {"keyword", "long", "integer", "short", "byte", "double", "float", "date", "ip",
                "boolean", "scaled_float", "unsigned_long"}
TEMPLATE_OF = {key: stem for stem, (key, _) in TEMPLATE_TARGETS.items()}


def _flatten(props: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for name, spec in props.items():
        if "properties" in spec:
            out.update(_flatten(spec["properties"], f"{prefix}{name}."))
        out[f"{prefix}{name}"] = spec.get("type", "object")
    return out


MAPPINGS = {
    key: _flatten(json.loads((asset_dir("templates") / f"{stem}.json").read_text())
                  ["template"]["mappings"]["properties"])
    for key, stem in TEMPLATE_OF.items()
}


def _query_fields(node) -> set[str]:
    """Every field a query DSL fragment names (term, terms, range, exists, match, ...)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("term", "terms", "range", "match", "match_phrase", "prefix", "wildcard"):
                found |= {f for f in value if f not in ("boost",)}
            elif key == "exists":
                found.add(value["field"])
            else:
                found |= _query_fields(value)
    elif isinstance(node, list):
        for item in node:
            found |= _query_fields(item)
    return found


def _agg_fields(aggs: dict) -> set[str]:
    found = set()
    for spec in (aggs or {}).values():
        for kind, body in spec.items():
            if kind == "aggs":
                found |= _agg_fields(body)
            elif isinstance(body, dict) and "field" in body:
                found.add(body["field"])
    return found


def _offenders(check) -> list[str]:
    return [f"{d['id']}: {msg}" for d in DEFINITIONS for msg in check(d) if msg]


def test_definitions_have_every_required_key():
    assert not _offenders(lambda d: [f"missing {k}" for k in REQUIRED if k not in d])


def test_ids_are_unique_prefixed_and_match_the_file_name():
    assert len(IDS) == len(set(IDS)), IDS
    assert not _offenders(lambda d: [
        "" if d["id"] == "fwsiem-" + Path(d["_source_file"]).stem
        else f"id does not match file {Path(d['_source_file']).name}"])


def test_the_four_alerts_of_the_issue_exist():
    assert {"fwsiem-high-anomalies", "fwsiem-high-recommendations", "fwsiem-deadletter-spike",
            "fwsiem-vm-denied-spike"} <= set(IDS)


def test_schedule_lookback_and_throttle_are_sane_durations():
    def check(d):
        sched, look, thr = (parse_duration(d[k]) for k in ("schedule", "lookback", "throttle"))
        return [
            "" if sched >= 60 and sched % 60 == 0 else "schedule must be whole minutes >= 1m",
            "" if look >= sched else "lookback shorter than schedule leaves gaps",
            "" if thr >= sched else "throttle shorter than schedule does not throttle",
        ]
    assert not _offenders(check)


def test_every_definition_has_log_webhook_and_email_actions():
    def check(d):
        watch, monitor = alerting.render_watch(d), alerting.render_monitor(d)
        trig = monitor["triggers"][0]["query_level_trigger"]
        return [
            "" if {"log", "webhook", "email"} <= set(d["actions"]) else "actions incomplete",
            "" if {"log", "webhook", "email"} <= set(watch["actions"]) else "watch actions",
            "" if {"webhook", "email"} <= {a["name"] for a in trig["actions"]} else "monitor actions",
            "" if all(a["throttle_enabled"] for a in trig["actions"]) else "monitor not throttled",
            "" if watch["throttle_period"] == d["throttle"] else "watch throttle differs",
        ]
    assert not _offenders(check)


def test_messages_name_the_entity_the_score_and_link_the_dashboard():
    def check(d):
        ev = d["message"]["event"]
        out = [m for m in ("{{entity}}", "{{score}}") if m not in ev]
        watch_text = alerting.render_watch(d)["actions"]["log"]["logging"]["text"]
        monitor_text = (alerting.render_monitor(d)["triggers"][0]["query_level_trigger"]
                        ["actions"][0]["message_template"]["source"])
        for name, text in (("watch", watch_text), ("monitor", monitor_text)):
            for var in ("entity", "score"):
                if alerting._mustache_var(d, var) not in text:
                    out.append(f"{name} message lacks {var}")
            if f"/app/dashboards#/view/{d['dashboard']}" not in text:
                out.append(f"{name} message lacks the dashboard link")
        return out
    assert not _offenders(check)


def test_every_queried_field_exists_in_the_index_template():
    def check(d):
        mapping = MAPPINGS[d["index"]]
        search = d["search"]
        fields = _query_fields(search.get("query")) | {d["time_field"]}
        sort = {next(iter(s)) for s in search.get("sort", [])}
        aggs = _agg_fields(search.get("aggs"))
        out = [f"queries unknown field {f}" for f in sorted(fields) if f not in mapping]
        out += [f"sorts or aggregates on {f}, which is not an aggregatable field "
                f"({mapping.get(f, 'absent')})" for f in sorted(sort | aggs)
                if mapping.get(f) not in AGGREGATABLE]
        ev = d["event"]
        if ev["each"] == "hit":
            for name in ("entity_type", "entity", "score", "severity", "detail"):
                if isinstance(ev.get(name), str) and ev[name] not in mapping:
                    out.append(f"event {name} reads unknown field {ev[name]}")
        return out
    assert not _offenders(check)


def test_conditions_refer_to_what_the_query_returns():
    def check(d):
        (kind, spec), = d["condition"].items()
        out = ["" if kind in ("hits", "buckets") else f"unknown condition {kind}"]
        out.append("" if sum(k in alerting.OPS for k in spec) == 1 else "one operator expected")
        if kind == "buckets":
            out.append("" if spec["agg"] in d["search"].get("aggs", {}) else
                       f"condition reads aggregation {spec['agg']} the query does not have")
            out.append("" if d["event"].get("agg") == spec["agg"] else "event agg differs")
        else:
            out.append("" if d["event"]["each"] == "hit" else "hits condition needs hit events")
        return out
    assert not _offenders(check)


def test_time_placeholders_are_the_products_own():
    for d in DEFINITIONS:
        watch = json.dumps(alerting.render_watch(d)["input"])
        monitor = json.dumps(alerting.render_monitor(d)["inputs"])
        assert alerting.WATCHER_NOW in watch and "period_end" not in watch, d["id"]
        assert alerting.MONITOR_NOW in monitor and "ctx.trigger" not in monitor, d["id"]


def test_only_known_placeholders_remain_in_rendered_bodies():
    known = {"index", "webhook_url", "email_to", "dashboard_url", "webhook_channel",
             "email_channel"}
    for path, text in alerting.rendered_files().items():
        assert set(re.findall(r"\$\{([a-z_]+)\}", text)) <= known, path


@pytest.mark.parametrize("path", sorted(alerting.rendered_files()), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_watches_and_monitors_are_rendered_from_the_definitions(path):
    expected = alerting.rendered_files()[path]
    assert path.is_file(), f"{path} missing: run `python -m plugin.alerting`"
    assert path.read_text() == expected, f"{path} is stale: run `python -m plugin.alerting`"


def test_every_alert_links_to_a_shipped_dashboard():
    import json
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    dashboards = {json.loads(p.read_text())["id"] for p in (repo / "kibana_saved_objects" / "dashboard").glob("*.json")}
    for path in sorted((repo / "alerting" / "rules").glob("*.json")):
        definition = json.loads(path.read_text())
        assert definition["dashboard"] in dashboards, f"{path.name} links to missing dashboard {definition['dashboard']}"
