"""`fwsiem rules import` and `fwsiem recommend` end to end against real engines, on simulated traffic."""

from __future__ import annotations

import csv
import io
import json

import pandas as pd
import pytest
from click.testing import CliRunner

from ml import allowlist as al
from plugin.cli import cli
from plugin.setup import template_mappings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    from ml.simulate import Simulation, load_scenario

    sc = load_scenario("default").with_overrides({"datacenter": {"orgs": 2}})
    sim = Simulation(sc, hours=1, seed=3)
    events = pd.concat(list(sim.iter_events()), ignore_index=True)
    root = tmp_path_factory.mktemp("sim")
    (root / "rules.yaml").write_text(sim.ruleset.to_yaml())
    truth = sim.truth()
    (root / "truth.json").write_text(json.dumps(truth))
    return events, truth, root


@pytest.fixture
def loaded(engine, simulation, unique_prefix, tmp_path, event_actions):
    events, truth, root = simulation
    store = engine.store
    names = {"events": f"{unique_prefix}-events", "rules": f"fwsiem-rules-{unique_prefix}",
             "recs": f"fwsiem-recommendations-{unique_prefix}"}
    for n in names.values():
        store.delete_index(n)
    store.create_index(names["events"], {"mappings": template_mappings("fwsiem-events")})
    store.create_index(names["recs"], {"mappings": template_mappings(
        "fwsiem-recommendations")})
    result = store.bulk(event_actions(events, names["events"]), refresh=True)
    assert not result.failed
    cfg = tmp_path / "fwsiem.toml"
    cfg.write_text(f'[engine]\nurl = "{engine.url}"\n[indices]\n'
                   f'events_pattern = "{names["events"]}"\nrules = "{names["rules"]}"\n'
                   f'recommendations = "{names["recs"]}"\n')
    yield store, names, cfg, events, truth, root
    for n in names.values():
        store.delete_index(n)


def _run(cfg, *args):
    res = CliRunner().invoke(cli, ["--config", str(cfg), *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def _period(truth):
    return ["--since", truth["start"], "--until", truth["end"]]


def test_hygiene_from_aggregations_matches_truth_and_is_idempotent(loaded):
    store, names, cfg, events, truth, root = loaded
    out = _run(cfg, "rules", "import", str(root / "rules.yaml"))
    assert f"imported {len(truth['rules']['hits'])} rules" in out
    out = _run(cfg, "recommend", "--kind", "hygiene", *_period(truth))
    assert "severity" in out  # the table of top recommendations
    store.refresh(names["recs"])
    docs = [h["_source"] for h in store.scan(names["recs"])]
    by = {}
    for d in docs:
        by.setdefault(d["finding"], set()).add(d["target"]["value"])
    rt = truth["rules"]
    assert by.get("unused", set()) == set(rt["never_hit"])
    assert by.get("shadowed", set()) == set(rt["shadowed"])
    assert by.get("dominant") == {rt["dominant"]}
    assert set(rt["overly_broad"]) <= by.get("overly_broad", set())
    hit = {r for r, n in rt["hits"].items() if n}
    assert not (by.get("unused", set()) | by.get("shadowed", set())) & hit
    # the same period again updates the same documents
    _run(cfg, "recommend", "--kind", "hygiene", *_period(truth))
    store.refresh(names["recs"])
    assert store.count(names["recs"]) == len(docs)


def test_engine_fine_table_equals_the_event_computation(loaded):
    store, names, cfg, events, truth, root = loaded
    from plugin.recommend import Period, fine_table

    period = Period.of(truth["start"], truth["end"])
    got = fine_table(store, names["events"], period, al.DEFAULT_INTERNAL)
    want = al.fine_table_from_events(events)
    keys = ["remote", "vm", "port", "hour"]
    got, want = got.set_index(keys).sort_index(), want.set_index(keys).sort_index()
    assert got.index.equals(want.index)
    cols = [c for c in al.FINE_COLUMNS[4:] if c != "sports"]
    pd.testing.assert_frame_equal(got[cols], want[cols], check_dtype=False)


def test_allowlists_export_and_whatif(loaded, tmp_path):
    store, names, cfg, events, truth, root = loaded
    labeled = {f"{e['ip']}:{e['port']}": e["allowed"] for e in truth["allowlists"] if e["labeled"]}
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(labeled))
    out = _run(cfg, "recommend", "--kind", "allowlist", "--labels", str(labels), *_period(truth))
    store.refresh(names["recs"])
    docs = [h["_source"] for h in store.scan(names["recs"], query={"term": {
        "kind": "allow_list"}})]
    assert docs, out
    targets = {d["target"]["value"] for d in docs}
    assert not targets & set(labeled), "endpoints with an allow-list get no proposal"
    for d in docs:
        for cidr in d["proposal"]["cidrs"]:
            assert "/" in cidr
        assert 0.5 <= d["confidence"] <= 1

    nsx = json.loads(_run(cfg, "recommend", "export", "--format", "nsx"))
    policy = nsx["children"][0]["Domain"]["children"][-1]["SecurityPolicy"]
    actions = [r["action"] for r in policy["rules"]]
    assert actions.count("DROP") == len(docs)  # one default deny per endpoint
    ipt = _run(cfg, "recommend", "export", "--format", "iptables")
    assert ipt.startswith("# fwsiem") and "*filter" in ipt and "COMMIT" in ipt.splitlines()
    assert ipt.count("-j DROP") >= len([d for d in docs if ":" not in d["target"]["ip"]])
    rows = list(csv.DictReader(io.StringIO(_run(cfg, "recommend", "export", "--format", "csv"))))
    assert {r["target"] for r in rows} == targets

    report = json.loads(_run(cfg, "recommend", "whatif", *_period(truth), "--truth",
                             str(root / "truth.json"), "--json"))
    assert report["endpoints"] == len(docs)
    assert 0 <= report["blocked"] <= report["events"] and report["events"] > 0
