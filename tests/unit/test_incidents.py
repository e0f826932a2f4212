"""Incident grouping: one incident per attack, members below medium, stable across windows."""

from __future__ import annotations

from ml.detectors import Finding
from ml.incidents import IncidentTracker

W = 60_000


def finding(etype, entity, score, severity, **observed):
    return Finding(etype, entity, score, 3.0, severity, observed, {},
                   [{"feature": next(iter(observed), "events"), "observed": 1.0,
                     "expected": 0.0, "deviation": score}], f"window.{etype}")


def test_many_sources_on_one_target_are_one_incident_led_by_the_target():
    t = IncidentTracker(W, max_members=5)
    flood = finding("service", "10.0.0.5:80", 40.0, "critical", src_ips=900)
    bots = [finding("source", f"198.51.100.{i}", 4.0 + i / 100, "medium", events=50)
            for i in range(30)]
    links = {("source", b.entity): ["10.0.0.5"] for b in bots}
    members = t.update([*bots, flood], links, 0)
    assert {id(m.incident) for m in members} == {id(members[-1].incident)}
    inc = members[-1].incident
    assert inc.lead == "ip:10.0.0.5" and inc.kind.startswith("many sources")
    assert [m.severity for m in members if m.severity not in ("", "low")] == ["critical"]
    assert sum(m.severity == "low" for m in members) == 5      # the rest is folded
    assert inc.folded == 25 and inc.member_count == 31 and inc.max_sources == 900


def test_an_attack_going_on_stays_one_incident_and_a_long_pause_starts_another():
    t = IncidentTracker(W, gap_windows=3)
    scan = finding("source", "203.0.113.9", 8.0, "high", dst_ports=500)
    first = t.update([scan], {}, 0)[0].incident
    again = t.update([scan], {}, 2 * W)[0]
    assert again.incident is first and again.severity == "high"     # the lead keeps its level
    assert first.windows == [0, 2 * W] and first.last_ms == 2 * W
    later = t.update([scan], {}, 10 * W)[0].incident
    assert later is not first and later.first_ms == 10 * W


def test_a_host_under_standing_scanning_is_reported_again_only_when_it_gets_worse():
    t = IncidentTracker(W)
    probed = finding("target", "192.0.2.80", 5.0, "medium", unanswered_sources=12)
    out = [t.update([probed], {}, w * W)[0] for w in range(4)]
    assert len({id(m.incident) for m in out}) == 1
    assert [m.severity for m in out] == ["medium", "low", "low", "low"]
    worse = finding("target", "192.0.2.80", 12.0, "critical", unanswered_sources=400)
    assert t.update([worse], {}, 4 * W)[0].severity == "critical"


def test_a_flood_on_a_host_under_standing_scanning_keeps_its_severity():
    t = IncidentTracker(W)
    probed = finding("target", "192.0.2.80", 9.0, "high", unanswered_sources=30)
    t.update([probed], {}, 0)
    flood = finding("service", "192.0.2.80:443", 6.5, "high", src_ips=100)
    out = t.update([probed, flood], {}, W)
    assert out[0].incident is out[1].incident
    assert [m.severity for m in out] == ["low", "high"]     # the scanning goes on, the flood is new


def test_a_new_attacker_tied_to_a_host_under_standing_scanning_is_still_reported():
    t = IncidentTracker(W)
    probed = finding("target", "192.0.2.80", 9.0, "high", unanswered_sources=30)
    t.update([probed], {}, 0)
    brute = finding("source", "198.51.100.7", 7.0, "high", events=300)
    out = t.update([probed, brute], {("source", "198.51.100.7"): ["192.0.2.80"]}, W)
    assert out[0].incident is out[1].incident
    assert [m.severity for m in out] == ["low", "high"]
    assert not out[1].lead          # a member of the host's incident, at its own severity


def test_unrelated_attacks_are_separate_and_lows_open_nothing():
    t = IncidentTracker(W)
    a = finding("source", "203.0.113.9", 8.0, "high", dst_ports=500)
    b = finding("service", "10.0.0.7:22", 5.0, "medium", events=300)
    c = finding("source", "10.0.0.12", 3.2, "low", events=9)
    out = t.update([a, b, c], {}, 0)
    assert out[0].incident is not out[1].incident
    assert out[2].incident is None and out[2].severity == "low"


def test_a_finding_that_names_no_address_opens_no_incident_and_stays_low():
    t = IncidentTracker(W)
    ports = finding("ports", "all", 9.0, "high", **{"pps:dst:80": 900.0})
    [m] = t.update([ports], {}, 0)
    assert m.incident is None and m.severity == "low"
