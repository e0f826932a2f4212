"""Alert definitions on the real engines: queries run, conditions fire exactly when they should,
and `fwsiem alert` delivers each event once to a webhook, respecting throttling."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pandas as pd
import pytest
from click.testing import CliRunner

from plugin import alerting
from plugin.cli import cli
from plugin.setup import run_setup, template_mappings

pytestmark = pytest.mark.integration

T0 = dt.datetime(2024, 3, 4, tzinfo=dt.timezone.utc)  # the simulation's start
DEFS = {d["id"]: d for d in alerting.load_definitions()}


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _anomaly(minute: float, entity: str, severity: str, score: float) -> dict:
    t = at(minute)
    return {"@timestamp": iso(t), "window": {"start": iso(t), "end": iso(t + dt.timedelta(minutes=1))},
            "detector": {"name": "source_hst"}, "entity": {"type": "source", "value": entity},
            "score": score, "threshold": 0.8, "severity": severity,
            "feedback": {"status": "new"}}


def _recommendation(minute: float, target: str, severity: str, confidence: float) -> dict:
    return {"@timestamp": iso(at(minute)), "kind": "quarantine", "severity": severity,
            "target": {"type": "host", "value": target, "ip": target}, "confidence": confidence,
            "title": f"quarantine {target}"}


def _deadletter(minute: float, pipeline: str, n: int) -> list[dict]:
    return [{"@timestamp": iso(at(minute) + dt.timedelta(seconds=i % 60)),
             "event": {"kind": "pipeline_error", "original": f"garbage line {i}"},
             "error": {"message": "Provided Grok expressions do not match", "type": "illegal_argument_exception"},
             "fwsiem": {"deadletter": {"pipeline": pipeline, "processor": "grok"}}}
            for i in range(n)]


# anomalies: medium only at minute 5; high + critical at minute 30; an old high one at minute -60
ANOMALIES = [_anomaly(5, "10.16.1.10", "medium", 0.85), _anomaly(30, "10.17.2.11", "high", 0.93),
             _anomaly(31, "193.32.162.153", "critical", 0.99), _anomaly(-60, "10.18.1.10", "high", 0.9)]
RECOMMENDATIONS = [_recommendation(5, "10.16.1.10", "medium", 0.7),
                   _recommendation(30, "10.17.2.11", "high", 0.91)]
# dead letters: a trickle of 40 at minute 5; a broken parser (150 lines) at minute 30
DEADLETTERS = _deadletter(5, "fwsiem-iptables", 40) + _deadletter(30, "fwsiem-nsx-dfw", 150) + \
    _deadletter(30, "fwsiem-pfsense", 20)


@pytest.fixture(scope="module")
def simulated_events():
    from ml.simulate import Simulation, load_scenario

    sim = Simulation(load_scenario("default"), hours=1, seed=1)
    df = pd.concat(list(sim.iter_events()), ignore_index=True)
    window = (df["@timestamp"] >= at(5)) & (df["@timestamp"] < at(35))
    return df[window].reset_index(drop=True), sim.truth()


@pytest.fixture(scope="module")
def loaded(engine, simulated_events, event_actions):
    """Setup, then anomaly, recommendation, dead-letter and simulated event documents."""
    store = engine.store
    run_setup(store, engine.config(), skip_pipelines=True)
    p = "t" + hashlib.sha1(f"{__name__}-{engine.flavor}".encode()).hexdigest()[:8]
    names = {"anomalies": f"fwsiem-anomalies-{p}", "recommendations": f"fwsiem-recommendations-{p}",
             "deadletter": f"fwsiem-deadletter-{p}", "state": f"fwsiem-state-{p}",
             "events_pattern": f"fwsiem-events-{p}"}
    for name in names.values():
        store.delete_index(name)
    # A plain index with the events template's mappings: a data stream could not be deleted
    # afterwards on distributions without the data-stream API.
    store.create_index(names["events_pattern"], {"mappings": template_mappings("fwsiem-events")})
    events, truth = simulated_events
    docs = [(names["anomalies"], ANOMALIES), (names["recommendations"], RECOMMENDATIONS),
            (names["deadletter"], DEADLETTERS)]
    actions = [{"_op_type": "index", "_index": idx, "_source": d} for idx, ds in docs for d in ds]
    res = store.bulk(actions, refresh=True)
    assert not res.failed, res.failed[:3]
    res = store.bulk(event_actions(events, names["events_pattern"], op_type="create"), refresh=True)
    assert not res.failed, res.failed[:3]
    config = engine.config(**names)
    yield store, config, names, truth
    for name in names.values():
        store.delete_index(name)


def _truth_incident(truth: dict, kind: str) -> dict:
    return next(i for i in truth["incidents"] if i["kind"] == kind)


def _watch_condition_holds(watch: dict, response: dict) -> bool:
    """Watcher's documented compare / array_compare semantics over ``ctx.payload``."""
    ops = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
           "lte": lambda a, b: a <= b, "eq": lambda a, b: a == b}
    payload = copy.deepcopy(response)
    total = payload["hits"]["total"]
    payload["hits"]["total"] = total["value"] if isinstance(total, dict) else total
    ctx = {"ctx": {"payload": payload}}
    (kind, spec), = watch["condition"].items()
    (path, test), = spec.items()
    target = alerting._get(ctx, path)
    if kind == "compare":
        (op, value), = test.items()
        return ops[op](target, value)
    inner = {k: v for k, v in test.items() if k != "path"}
    (op, value), = inner.items()
    return any(ops[op](alerting._get(item, test["path"]), value["value"]) for item in target or [])


def _check(definition, store, config, now) -> alerting.Evaluation:
    """Evaluate, and check the rendered watch's condition agrees on the same real response."""
    result = alerting.evaluate(definition, store, now, config)
    watch = alerting.render_watch(definition)
    assert _watch_condition_holds(watch, result.response) == result.fired, definition["id"]
    if store.flavor == "opensearch":  # the monitor's Painless trigger, run by the engine itself
        script = alerting.render_monitor(definition)["triggers"][0]["query_level_trigger"][
            "condition"]["script"]["source"]
        resp = store.request("POST", "/_scripts/painless/_execute", body={"script": {
            "source": "def ctx = ['results': params.results]; " + script,
            "params": {"results": [result.response]}}})
        assert str(resp["result"]).lower() == str(result.fired).lower(), definition["id"]
    return result


def test_high_anomalies_fire_for_new_high_and_critical_only(loaded):
    store, config, _, _ = loaded
    d = DEFS["fwsiem-high-anomalies"]
    quiet = _check(d, store, config, at(6))  # only a medium anomaly is new
    assert not quiet.fired and not quiet.events
    busy = _check(d, store, config, at(32))
    assert busy.fired
    assert {(e.entity, e.severity) for e in busy.events} == {("10.17.2.11", "high"),
                                                             ("193.32.162.153", "critical")}
    for e in busy.events:
        assert e.entity in e.message and str(e.score) in e.message
        assert "/app/dashboards#/view/fwsiem-anomalies" in e.link
    # the old high anomaly (an hour before) is not new at minute 0
    assert not _check(d, store, config, at(0)).fired


def test_high_recommendation_fires_for_high_only(loaded):
    store, config, _, _ = loaded
    d = DEFS["fwsiem-high-recommendations"]
    assert not _check(d, store, config, at(6)).fired
    busy = _check(d, store, config, at(31))
    assert [e.entity for e in busy.events] == ["10.17.2.11"]
    assert busy.events[0].score == 0.91


def test_deadletter_spike_fires_for_the_broken_parser_only(loaded):
    store, config, _, _ = loaded
    d = DEFS["fwsiem-deadletter-spike"]
    threshold = d["condition"]["buckets"]["gte"]
    assert 40 < threshold <= 150  # the data below straddles the definition's threshold
    assert not _check(d, store, config, at(6)).fired  # 40 dead letters: a trickle
    busy = _check(d, store, config, at(31))
    assert [(e.entity, e.score) for e in busy.events] == [("fwsiem-nsx-dfw", 150.0)]
    assert busy.events[0].detail == "illegal_argument_exception"
    assert not _check(d, store, config, at(45)).fired  # the spike is over


def test_vm_denied_spike_fires_during_the_simulated_deny_spike_only(loaded):
    store, config, _, truth = loaded
    d = DEFS["fwsiem-vm-denied-spike"]
    incident = _truth_incident(truth, "deny_spike")
    start = dt.datetime.fromisoformat(incident["start"].replace("Z", "+00:00"))
    before = start - dt.timedelta(minutes=2)
    assert before > at(5) + dt.timedelta(minutes=5)  # a full quiet lookback window of traffic
    quiet = _check(d, store, config, before)
    assert not quiet.fired and quiet.response["hits"]["total"]["value"] > 0  # denied, no spike
    during = _check(d, store, config, start + dt.timedelta(minutes=6))
    assert during.fired
    assert {e.entity for e in during.events} == set(incident["entities"]["src_ips"])
    assert all(e.score >= d["condition"]["buckets"]["gte"] for e in during.events)


def _misspelled(definition: dict, good: str, bad: str) -> dict:
    """A copy whose query (search body) names ``bad`` where the definition names ``good``."""
    text = json.dumps(definition["search"])
    assert f'"{good}"' in text
    return dict(definition, search=json.loads(text.replace(f'"{good}"', f'"{bad}"')))


@pytest.mark.parametrize("rule,good,bad,minute", [
    ("fwsiem-high-anomalies", "severity", "severty", 32),
    ("fwsiem-deadletter-spike", "fwsiem.deadletter.pipeline", "fwsiem.deadleter.pipeline", 31),
    ("fwsiem-vm-denied-spike", "source.ip", "source_ip", 26),
])
def test_a_misspelled_field_stops_the_alert_firing(loaded, rule, good, bad, minute):
    store, config, _, _ = loaded
    d = DEFS[rule]
    assert alerting.evaluate(d, store, at(minute), config).fired
    assert not alerting.evaluate(_misspelled(d, good, bad), store, at(minute), config).fired


class _Receiver:
    """A local webhook endpoint that records every JSON body posted to it."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _alert(cfg_path, receiver, minute, *rules):
    args = ["--config", str(cfg_path), "alert", "--once", "--webhook", receiver.url,
            "--at", iso(at(minute))]
    for r in rules:
        args += ["--rule", r]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def _config_file(tmp_path, engine, names, extra=""):
    path = tmp_path / "fwsiem.toml"
    lines = [f'[engine]\nurl = "{engine.url}"\n[indices]'] + [f'{k} = "{v}"' for k, v in names.items()]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_fwsiem_alert_posts_each_event_once_and_respects_throttling(engine, loaded, tmp_path):
    store, _, names, truth = loaded
    store.delete_index(names["state"])
    cfg = _config_file(tmp_path, engine, names)
    with _Receiver() as rx:
        out = _alert(cfg, rx, 32)
        keys = [(p["rule"], p["entity"]["value"]) for p in rx.received]
        assert sorted(keys) == sorted([
            ("fwsiem-high-anomalies", "10.17.2.11"), ("fwsiem-high-anomalies", "193.32.162.153"),
            ("fwsiem-high-recommendations", "10.17.2.11"),
            ("fwsiem-deadletter-spike", "fwsiem-nsx-dfw"),
            ("fwsiem-vm-denied-spike", "10.17.2.11")])
        for p in rx.received:
            assert p["entity"]["value"] in p["message"] and "/app/dashboards#/view/" in p["link"]
        assert "10.17.2.11" in out
        rx.received.clear()
        _alert(cfg, rx, 33)  # same events still in their lookback: nothing is repeated
        assert rx.received == []
    state = store.get_doc(names["state"], alerting.Alerter(store, engine.config(**names))
                          ._state_id("fwsiem-vm-denied-spike"))
    assert state["kind"] == "alert" and "10.17.2.11" in state["payload"]["fired"]


def test_throttle_expiry_lets_an_ongoing_spike_alert_again(engine, loaded, tmp_path):
    store, _, names, truth = loaded
    store.delete_index(names["state"])
    rule = "fwsiem-vm-denied-spike"
    start = dt.datetime.fromisoformat(_truth_incident(truth, "deny_spike")["start"]
                                      .replace("Z", "+00:00"))
    first = (start - T0).total_seconds() / 60 + 6
    short = _config_file(tmp_path, engine, names,
                         f'[alert.rules.{rule}]\nthrottle = "3m"\n')
    with _Receiver() as rx:
        _alert(short, rx, first, rule)
        assert [p["entity"]["value"] for p in rx.received] == ["10.17.2.11"]
        _alert(short, rx, first + 2, rule)  # within 3 minutes: throttled
        assert len(rx.received) == 1
        _alert(short, rx, first + 4, rule)  # throttle expired, spike still on: alerts again
        assert len(rx.received) == 2


def test_install_says_which_alerting_the_cluster_has(engine, tmp_path):
    """Both engines here are the open-source builds: neither Watcher nor the Alerting plugin."""
    plugins = engine.store.request("GET", "/_nodes/plugins")
    names = json.dumps(plugins).lower()
    has = "watcher" in names if engine.flavor == "elasticsearch" else "alerting" in names
    cfg = _config_file(tmp_path, engine, {})
    res = CliRunner().invoke(cli, ["--config", str(cfg), "alert", "--install"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    product = "Watcher" if engine.flavor == "elasticsearch" else "Alerting plugin"
    assert product in res.output
    if not has:
        assert "fwsiem alert" in res.output
        assert res.output.count("not installed") == len(DEFS)
