"""Rule hygiene against the simulator's truth, rule-set import formats, and the hygiene building blocks."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ml import hygiene as hy
from plugin.errors import InputError
from plugin.rules import as_hygiene_rule, read_rules


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    from ml.simulate import Simulation

    sim = Simulation("default", hours=4, seed=3)
    events = pd.concat(list(sim.iter_events()), ignore_index=True)
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(sim.ruleset.to_yaml())
    rules = [as_hygiene_rule(d) for d in read_rules(path)]
    findings = hy.rule_findings(rules, hy.stats_from_events(events), hy.flows_from_events(events))
    return sim.truth()["rules"], findings, rules, events


def _ids(findings, kind):
    return sorted(f["rule"] for f in findings if f["kind"] == kind)


def test_finds_every_unused_shadowed_and_dominant_rule_in_truth(simulated):
    truth, findings, _, _ = simulated
    assert _ids(findings, "unused") == sorted(truth["never_hit"])
    assert _ids(findings, "shadowed") == sorted(truth["shadowed"])
    shadowing = {f["rule"]: f["evidence"]["shadowed_by"] for f in findings
                 if f["kind"] == "shadowed"}
    assert shadowing == truth["shadowed"]
    assert _ids(findings, "dominant") == [truth["dominant"]]


def test_no_recommendation_contradicts_truth(simulated):
    truth, findings, _, _ = simulated
    hit = {rid for rid, n in truth["hits"].items() if n > 0}
    removals = [f["rule"] for f in findings if f["proposal"]["action"] == "remove_rule"]
    assert not set(removals) & hit, "a rule that carried traffic must never be proposed for removal"
    assert set(truth["overly_broad"]) <= set(_ids(findings, "overly_broad"))
    for f in findings:
        if f["kind"] == "overly_broad":
            assert f["rule"] in hit and f["rule"] not in truth["shadowed"]


def test_narrowed_rule_keeps_the_traffic_that_used_it(simulated):
    _, findings, rules, events = simulated
    by_id = {r.id: r for r in rules}
    for f in findings:
        if f["kind"] != "overly_broad":
            continue
        n = f["proposal"]["narrowed"]
        narrowed = hy.rule_from_dict({"id": n["id"], "action": n["action"], "sources": n["sources"],
                                      "destinations": n["destinations"], "services": n["services"]})
        used = events[events["rule.id"] == f["rule"]].head(300)
        for src, dst, proto, port in zip(used["source.ip"], used["destination.ip"],
                                         used["network.transport"], used["destination.port"],
                                         strict=True):
            if n["covers_share"] == 1.0:
                assert narrowed.matches(src, dst, proto, port)
        assert narrowed.port_space() <= by_id[f["rule"]].port_space()


def test_shadowing_needs_full_containment():
    rs = [hy.rule_from_dict({"id": "10", "sequence": 1, "sources": ["10.0.0.0/8"],
                             "services": ["tcp/22"]}),
          hy.rule_from_dict({"id": "11", "sequence": 2, "sources": ["10.1.0.0/16"],
                             "services": ["tcp/22", "tcp/80"]}),
          hy.rule_from_dict({"id": "12", "sequence": 3, "sources": ["10.2.0.0/16"],
                             "services": ["tcp/22"], "direction": "IN"}),
          hy.rule_from_dict({"id": "13", "sequence": 0, "disabled": True})]
    assert hy.find_shadowed(rs) == {"12": "10"}  # 11 also matches tcp/80; 13 is disabled


def test_deny_spike_and_top_dropped():
    h = pd.DataFrame({"vm": ["10.0.0.1"] * 24 + ["10.0.0.2"] * 24,
                      "hour": list(range(24)) * 2,
                      "denied": [3] * 23 + [400] + [60, 70, 65] * 8})  # .2 is steadily noisy
    spikes = hy.deny_spikes(h, factor=10, min_denied=50)
    assert [s["vm"] for s in spikes] == ["10.0.0.1"]
    assert spikes[0]["peak_hour"] == 23
    t = pd.DataFrame({"destination.ip": ["20.20.0.1", "20.20.0.1", "10.0.0.9"],
                      "destination.port": [80, 53, 53], "count": [70, 20, 10], "sources": [9, 3, 1]})
    top = hy.top_dropped(t, n=2)
    assert [d["target"] for d in top] == ["20.20.0.1:80", "20.20.0.1:53"]
    assert top[0]["share"] == pytest.approx(0.7)


def test_deny_spike_incident_is_a_quarantine_candidate(simulated):
    from ml.simulate import Simulation

    sim = Simulation("default", hours=24, seed=7)
    frames = []
    for chunk in sim.iter_events():
        denied = chunk[chunk["event.action"].isin(["drop", "reject"])
                       & chunk["source.ip"].str.startswith("10.")]
        hour_ms = (denied["@timestamp"].dt.floor("1h") - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(
            milliseconds=1)
        frames.append(denied.assign(hour=hour_ms)
                      .groupby(["source.ip", "hour"]).size().rename("denied").reset_index())
    hourly = pd.concat(frames).groupby(["source.ip", "hour"])["denied"].sum().reset_index()
    hourly = hourly.rename(columns={"source.ip": "vm"})
    incidents = [i for i in sim.truth()["incidents"] if i["kind"] == "deny_spike"]
    assert incidents, "the scenario should hold a deny-spike incident"
    flagged = {s["vm"] for s in hy.deny_spikes(hourly)}
    for inc in incidents:
        assert set(inc["entities"]["src_ips"]) <= flagged


NSX_EXPORT = {
    "resource_type": "Infra",
    "children": [{"resource_type": "ChildDomain", "Domain": {"id": "default", "children": [
        {"resource_type": "ChildGroup", "Group": {
            "resource_type": "Group", "id": "web", "path": "/infra/domains/default/groups/web",
            "expression": [{"resource_type": "IPAddressExpression",
                            "ip_addresses": ["10.16.1.10", "10.16.1.11"]}]}},
        {"resource_type": "ChildSecurityPolicy", "SecurityPolicy": {
            "resource_type": "SecurityPolicy", "id": "app", "sequence_number": 5, "rules": [
                {"resource_type": "Rule", "id": "deny-all", "rule_id": 1021, "sequence_number": 99,
                 "source_groups": ["ANY"], "destination_groups": ["ANY"], "services": ["ANY"],
                 "action": "DROP", "direction": "IN_OUT"},
                {"resource_type": "Rule", "id": "web-in", "rule_id": 1100, "sequence_number": 10,
                 "source_groups": ["ANY"],
                 "destination_groups": ["/infra/domains/default/groups/web"],
                 "services": ["/infra/services/HTTPS"], "action": "ALLOW", "direction": "IN"},
                {"resource_type": "Rule", "id": "ssh", "rule_id": 1101, "sequence_number": 20,
                 "source_groups": ["100.64.0.0/27"],
                 "destination_groups": ["/infra/domains/default/groups/web"], "services": [],
                 "service_entries": [{"resource_type": "L4PortSetServiceEntry",
                                      "l4_protocol": "TCP", "destination_ports": ["22"]}],
                 "action": "ALLOW", "direction": "IN"}]}}]}}],
}


def test_reads_nsx_policy_api_export_in_evaluation_order(tmp_path):
    p = tmp_path / "export.json"
    p.write_text(json.dumps(NSX_EXPORT))
    docs = read_rules(p)
    assert [d["rule"]["id"] for d in docs] == ["1100", "1101", "1021"]
    web = docs[0]
    assert web["action"] == "PASS" and web["services"] == ["tcp/443"]
    assert web["destinations"] == ["10.16.1.10", "10.16.1.11"] and web["sources"] == ["any"]
    assert docs[1]["services"] == ["tcp/22"] and docs[1]["sources"] == ["100.64.0.0/27"]
    rules = [as_hygiene_rule(d) for d in docs]
    assert rules[1].matches("100.64.0.5", "10.16.1.11", "tcp", 22, "ingress")
    assert not rules[1].matches("8.8.8.8", "10.16.1.11", "tcp", 22, "ingress")


def test_reads_csv_and_reports_bad_input_with_location(tmp_path):
    p = tmp_path / "rules.csv"
    p.write_text("id,name,sources,destinations,services,action,direction\n"
                 "1,dns,10.0.0.0/8,10.0.0.53,udp/53;tcp/53,ALLOW,OUT\n"
                 "2,default,any,any,any,DROP,IN_OUT\n")
    docs = read_rules(p)
    assert [(d["rule"]["id"], d["action"], d["services"]) for d in docs] == [
        ("1", "PASS", ["udp/53", "tcp/53"]), ("2", "DROP", ["any"])]
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: fwsiem-rules/1\nrules:\n- {id: '7', sources: [nogroup], action: PASS}\n")
    with pytest.raises(InputError, match=r"bad.yaml: rule 7: 'nogroup'"):
        read_rules(bad)
