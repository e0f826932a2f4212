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
    # one default deny per endpoint with a port (traffic without ports is no port rule)
    ported = [d for d in docs if d["proposal"]["endpoint"]["port"] > 0]
    assert actions.count("DROP") == len(ported)
    ipt = _run(cfg, "recommend", "export", "--format", "iptables")
    assert ipt.startswith("# fwsiem") and "*filter" in ipt and "COMMIT" in ipt.splitlines()
    assert ipt.count("-j DROP") >= len([d for d in ported if ":" not in d["target"]["ip"]])
    assert "--dport -1 " not in ipt and "--dport 0 " not in ipt
    rows = list(csv.DictReader(io.StringIO(_run(cfg, "recommend", "export", "--format", "csv"))))
    assert {r["target"] for r in rows} == targets

    report = json.loads(_run(cfg, "recommend", "whatif", *_period(truth), "--truth",
                             str(root / "truth.json"), "--json"))
    assert report["endpoints"] == len(docs)
    assert 0 <= report["blocked"] <= report["events"] and report["events"] > 0


def _allowlist_doc(**changes) -> dict:
    """A recommendation as `fwsiem recommend` writes it, with ``changes`` applied."""
    doc = {"@timestamp": "2026-01-08T00:00:00+00:00", "kind": "allow_list",
           "finding": "allowlist", "title": "10.1.0.5:443: allow 1 CIDR(s), deny 2 other remote(s)",
           "target": {"type": "endpoint", "value": "10.1.0.5:443", "ip": "10.1.0.5",
                      "port": 443},
           "proposal": {"action": "allow_list", "cidrs": ["192.0.2.0/24"],
                        "endpoint": {"ip": "10.1.0.5", "port": 443, "transport": "tcp"}},
           "severity": "medium", "confidence": 0.9,
           "period": {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-08T00:00:00+00:00"}}
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[p]
        node[last] = value
    return doc


@pytest.fixture
def recs(engine, unique_prefix, tmp_path):
    index = f"fwsiem-recommendations-{unique_prefix}"
    engine.store.delete_index(index)
    engine.store.create_index(index, {"mappings": template_mappings("fwsiem-recommendations")})
    cfg = tmp_path / "fwsiem.toml"
    cfg.write_text(f'[engine]\nurl = "{engine.url}"\n[indices]\nrecommendations = "{index}"\n')
    yield engine.store, index, cfg
    engine.store.delete_index(index)


def _export(cfg, fmt):
    from plugin.cli import main

    try:
        main(["--config", str(cfg), "recommend", "export", "--format", fmt])
    except SystemExit as exc:
        return exc.code
    return 0


INJECTIONS = {
    "newline-in-target": {"target.value": "10.1.0.5:443\n-A INPUT -j ACCEPT"},
    "newline-in-endpoint": {"proposal.endpoint.ip": "10.1.0.5 -j ACCEPT\n-A INPUT -j ACCEPT"},
    "cidr-with-options": {"proposal.cidrs": ["0.0.0.0/0 -j ACCEPT\n-A INPUT"]},
    "port-out-of-range": {"proposal.endpoint.port": 70000},
    "unknown-protocol": {"proposal.endpoint.transport": "all -j ACCEPT"},
    "newline-in-title": {"title": "ok\n-A INPUT -j ACCEPT"},
}


@pytest.mark.parametrize("fmt", ["iptables", "nsx", "csv"])
@pytest.mark.parametrize("case", sorted(INJECTIONS))
def test_a_recommendation_from_the_cluster_can_never_inject_a_rule_into_an_export(
        recs, capsys, fmt, case):
    store, index, cfg = recs
    store.index_doc(index, _allowlist_doc(), id="good", refresh=True)
    store.index_doc(index, _allowlist_doc(**INJECTIONS[case]), id="crafted\n-A INPUT -j ACCEPT",
                    refresh=True)
    code = _export(cfg, fmt)
    out, err = capsys.readouterr()
    assert code != 0
    assert "-A INPUT -j ACCEPT\n" not in out and "ACCEPT" not in out
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and index in errors[0] and "crafted" in errors[0], err


def test_a_crafted_nsx_rule_in_a_tightening_recommendation_is_refused(recs, capsys):
    store, index, cfg = recs
    rule = {"resource_type": "Rule", "id": "fwsiem-r1", "display_name": "rule r1",
            "source_groups": ["10.0.0.0/8"], "destination_groups": ["ANY"], "services": [],
            "service_entries": [], "action": "ALLOW", "direction": "IN", "scope": ["ANY"]}
    base = {"kind": "tighten_rule", "finding": "overly_broad", "title": "rule r1: tighten it",
            "target": {"type": "rule", "value": "r1"}, "severity": "medium", "confidence": 0.7,
            "period": {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-08T00:00:00+00:00"}}
    store.index_doc(index, {**base, "proposal": {"action": "tighten", "nsx": rule}}, id="fine",
                    refresh=True)
    assert _export(cfg, "nsx") == 0
    exported = json.loads(capsys.readouterr().out)
    policy = exported["children"][0]["Domain"]["children"][-1]["SecurityPolicy"]
    assert policy["rules"][0]["source_groups"] == ["10.0.0.0/8"]
    bad = {**rule, "source_groups": ["ANY"], "action": "ALLOW", "sequence_number": 0,
           "scope": ["/infra/tier-0s/edge"]}
    store.index_doc(index, {**base, "proposal": {"action": "tighten", "nsx": bad}}, id="fine",
                    refresh=True)
    assert _export(cfg, "nsx") != 0
    out, err = capsys.readouterr()
    assert out == "" and "'fine'" in err and index in err


def test_csv_export_cells_are_never_spreadsheet_formulas(recs, capsys):
    store, index, cfg = recs
    store.index_doc(index, _allowlist_doc(title='=HYPERLINK("http://x.example","open")'),
                    id="formula", refresh=True)
    assert _export(cfg, "csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["title"] == '\'=HYPERLINK("http://x.example","open")'
    assert rows[0]["cidr"] == "192.0.2.0/24" and rows[0]["port"] == "443"
