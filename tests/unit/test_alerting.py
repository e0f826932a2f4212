"""Alert definitions without an engine: conditions, events, overrides, placeholders, the report page."""

from __future__ import annotations

import copy

import pytest

from plugin import alerting
from plugin.config import load_config
from plugin.errors import ConfigError
from plugin.report import Panel, Section, render_html

DEFS = {d["id"]: d for d in alerting.load_definitions()}


def _buckets_response(agg: str, counts: dict[str, int]) -> dict:
    return {"hits": {"total": {"value": sum(counts.values())}, "hits": []},
            "aggregations": {agg: {"buckets": [
                {"key": k, "doc_count": v, "peers": {"value": 3},
                 "top_error": {"buckets": [{"key": "grok", "doc_count": v}]}}
                for k, v in counts.items()]}}}


def test_bucket_condition_fires_on_the_buckets_over_the_threshold_only():
    d = DEFS["fwsiem-vm-denied-spike"]
    limit = d["condition"]["buckets"]["gte"]
    resp = _buckets_response("by_vm", {"10.0.0.1": limit, "10.0.0.2": limit - 1})
    fired, value = alerting.condition_value(d, resp)
    assert fired and value == limit
    events = alerting.events_of(d, resp, "http://kibana/app/dashboards#/view/x")
    assert [e.entity for e in events] == ["10.0.0.1"]
    assert "10.0.0.1" in events[0].message and str(limit) in events[0].message
    below = _buckets_response("by_vm", {"10.0.0.2": limit - 1})
    assert alerting.condition_value(d, below) == (False, limit - 1)


def test_hits_condition_and_events_read_the_anomaly_fields():
    d = DEFS["fwsiem-high-anomalies"]
    hit = {"_id": "a1", "_source": {"entity": {"type": "source", "value": "10.1.1.1"},
                                    "score": 0.97, "severity": "critical",
                                    "detector": {"name": "hst"}}}
    resp = {"hits": {"total": {"value": 1}, "hits": [hit]}}
    assert alerting.condition_value(d, resp) == (True, 1.0)
    (event,) = alerting.events_of(d, resp)
    assert (event.key, event.entity, event.score, event.severity) == ("a1", "10.1.1.1", 0.97,
                                                                     "critical")
    assert "10.1.1.1" in event.message and "0.97" in event.message
    assert alerting.condition_value(d, {"hits": {"total": {"value": 0}, "hits": []}})[0] is False


def test_overrides_change_threshold_throttle_and_schedule():
    rule = "fwsiem-deadletter-spike"
    cfg = load_config(env={}).with_overrides("alert", rules={rule: {
        "threshold": 7, "throttle": "2h", "schedule": "5m"}})
    d = alerting.with_overrides(DEFS[rule], cfg)
    assert d["condition"]["buckets"]["gte"] == 7 and d["throttle"] == "2h"
    assert alerting.render_watch(d)["condition"]["array_compare"][
        "ctx.payload.aggregations.by_pipeline.buckets"]["gte"]["value"] == 7
    assert "b.doc_count >= 7" in alerting.render_monitor(d)["triggers"][0][
        "query_level_trigger"]["condition"]["script"]["source"]
    assert alerting.render_monitor(d)["schedule"]["period"] == {"interval": 5, "unit": "MINUTES"}
    assert DEFS[rule]["throttle"] != "2h"  # the loaded definition is untouched


def test_bad_duration_override_is_a_config_error():
    rule = "fwsiem-high-anomalies"
    cfg = load_config(env={}).with_overrides("alert", rules={rule: {"throttle": "soon"}})
    with pytest.raises(ConfigError):
        alerting.with_overrides(DEFS[rule], cfg)


def test_install_fills_placeholders_and_drops_unconfigured_actions():
    d = DEFS["fwsiem-high-anomalies"]
    cfg = load_config(env={}).with_overrides("alert", webhook="https://hooks.example/x",
                                             dashboard_url="https://kibana.example/")
    values = alerting.placeholder_values(d, cfg)
    watch = alerting._drop_unset_actions("watcher", alerting.fill(alerting.render_watch(d), values),
                                         values)
    assert set(watch["actions"]) == {"log", "webhook"}  # no email_to configured
    assert watch["actions"]["webhook"]["webhook"]["url"] == "https://hooks.example/x"
    assert watch["input"]["search"]["request"]["indices"] == [cfg.index("anomalies")]
    assert "https://kibana.example/app/dashboards#/view/fwsiem-anomalies" in \
        watch["actions"]["log"]["logging"]["text"]
    monitor = alerting._drop_unset_actions(
        "monitor", alerting.fill(alerting.render_monitor(d), values), values)
    actions = monitor["triggers"][0]["query_level_trigger"]["actions"]
    assert [a["name"] for a in actions] == ["webhook"]
    assert "${" not in str(watch) and "${" not in str(monitor)


def test_request_replaces_the_products_time_placeholder():
    import datetime as dt

    d = copy.deepcopy(DEFS["fwsiem-vm-denied-spike"])
    now = dt.datetime(2024, 3, 4, 0, 30, tzinfo=dt.timezone.utc)
    es = alerting.request_for(d, "elasticsearch", now)
    os_ = alerting.request_for(d, "opensearch", now)
    assert "{{" not in str(es) and "{{" not in str(os_)
    rng = es["query"]["bool"]["filter"][1]["range"]["@timestamp"]
    assert rng == {"gte": "2024-03-04T00:30:00.000Z||-5m", "lte": "2024-03-04T00:30:00.000Z"}
    assert os_["query"]["bool"]["filter"][1]["range"]["@timestamp"]["lte"] == str(
        int(now.timestamp() * 1000))


def test_report_page_escapes_text_and_embeds_images():
    page = render_html([Section("S", [Panel("p <1>", png=b"\x89PNG", table=[{"a": "<b>"}])])],
                       "t", "sub")
    assert "p &lt;1&gt;" in page and "&lt;b&gt;" in page and "<b>" not in page
    assert 'src="data:image/png;base64,iVBORw==' in page
