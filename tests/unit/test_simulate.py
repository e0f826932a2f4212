"""The simulator's promises, checked from its written output with an independent parser."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from ml.simulate import Simulation

# an NSX DFW line body, written here from the NSX documentation, not from the generator
BODY = re.compile(
    r"(?P<fam>INET6?) (?:(?:reason-)?match (?P<act>PASS|DROP|REJECT)|TERM(?: PASS)?) "
    r"(?:[\w-]+/)?(?P<rule>\d+) (?P<dir>IN|OUT) (?:\d+ )?"
    r"(?P<proto>TCP|UDP|ICMP|PROTO \d+)(?: \d+ \d+)?(?: FIN| RST| TIMEOUT)? "
    r"(?P<src>[0-9a-f.:]+?)(?:/(?P<sp>\d+))?->(?P<dst>[0-9a-f.:]+?)(?:/(?P<dp>\d+))?(?: |$)")
ISO = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})")
BSD = re.compile(r"^<\d+>(\w{3}) +(\d+) (\d\d:\d\d:\d\d) ")
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
PROTO = {"TCP": 6, "UDP": 17, "ICMP": 1}


def parse(line: str, year: int) -> dict:
    m = BODY.search(line)
    assert m, f"not an NSX DFW line: {line}"
    d = m.groupdict()
    t = ISO.search(line)
    if t:
        d["t"] = datetime.fromisoformat(t.group(1)).replace(tzinfo=timezone.utc)
    else:
        b = BSD.match(line)
        d["t"] = datetime.strptime(f"{year} {MONTHS.index(b.group(1)) + 1} {b.group(2)} "
                                   f"{b.group(3)}", "%Y %m %d %H:%M:%S").replace(
                                       tzinfo=timezone.utc)
    p = d["proto"]
    d["pnum"] = int(p.split()[1]) if p.startswith("PROTO") else PROTO[p]
    d["src"] = str(ipaddress.ip_address(d["src"]))
    d["dst"] = str(ipaddress.ip_address(d["dst"]))
    d["kind"] = "term" if " TERM" in line else "match"
    return d


def digest(path) -> dict:
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "a"
    Simulation("default", hours=2, seed=11).write(out)
    lines = (out / "nsx" / "dfwpktlogs.log").read_text().splitlines()
    truth = json.loads((out / "truth.json").read_text())
    rules = yaml.safe_load((out / "rules.yaml").read_text())
    return out, [parse(ln, 2024) for ln in lines], truth, rules


def test_same_seed_gives_byte_identical_output(run, tmp_path):
    out, *_ = run
    Simulation("default", hours=2, seed=11).write(tmp_path / "b")
    assert digest(out) == digest(tmp_path / "b")


def test_other_seed_gives_other_bytes_with_the_same_statistics(run, tmp_path):
    out, events, truth, _ = run
    Simulation("default", hours=2, seed=12).write(tmp_path / "c")
    assert digest(out)["nsx/dfwpktlogs.log"] != digest(tmp_path / "c")["nsx/dfwpktlogs.log"]
    other = [parse(ln, 2024) for ln in
             (tmp_path / "c" / "nsx" / "dfwpktlogs.log").read_text().splitlines()]
    assert abs(len(other) - len(events)) / len(events) < 0.15

    def shares(evs):
        c = Counter(e["act"] for e in evs if e["kind"] == "match")
        n = sum(c.values())
        return {a: c[a] / n for a in ("PASS", "DROP")}

    for action, share in shares(events).items():
        assert abs(share - shares(other)[action]) < 0.05

    def dns_share(evs):
        m = [e for e in evs if e["kind"] == "match"]
        return sum(e["dp"] == "53" for e in m) / len(m)

    assert abs(dns_share(events) - dns_share(other)) < 0.05


def test_lines_are_in_time_order(run):
    _, events, _, _ = run
    times = [e["t"].replace(microsecond=0) for e in events]
    assert all(a <= b for a, b in zip(times, times[1:], strict=False))


def test_every_incident_has_events_in_its_time_range_and_entities(run):
    _, events, truth, _ = run
    kinds = {i["kind"] for i in truth["incidents"]}
    assert len(kinds) == 10, kinds
    for inc in truth["incidents"]:
        start = datetime.fromisoformat(inc["start"].replace("Z", "+00:00")) - timedelta(seconds=1)
        end = datetime.fromisoformat(inc["end"].replace("Z", "+00:00")) + timedelta(minutes=16)
        src, dst = set(inc["entities"]["src_ips"]), set(inc["entities"]["dst_ips"])
        hits = [e for e in events if start <= e["t"] <= end and e["src"] in src
                and e["dst"] in dst]
        assert hits, f"incident {inc['id']} {inc['kind']} has no lines"
        if inc["kind"] in ("port_scan_horizontal", "ssh_bruteforce", "syn_flood"):
            assert {int(e["dp"]) for e in hits} <= set(inc["entities"]["dst_ports"])


def _member(ip: str, terms: list[str], groups: dict) -> bool:
    if "any" in terms:
        return True
    addr = ipaddress.ip_address(ip)
    for t in terms:
        for m in groups.get(t, [t]):
            net = ipaddress.ip_network(m, strict=False)
            if net.version == addr.version and addr in net:
                return True
    return False


def _service(pnum: int, dport, services: list[str]) -> bool:
    names = {"tcp": 6, "udp": 17, "icmp": 1, "igmp": 2}
    for s in services:
        if s == "any":
            return True
        name, _, ports = s.partition("/")
        if names.get(name) != pnum:
            continue
        if not ports:
            return True
        lo, _, hi = ports.partition("-")
        if dport is not None and int(lo) <= int(dport) <= int(hi or lo):
            return True
    return False


def _matches(rule: dict, e: dict, groups: dict) -> bool:
    return (rule["direction"] in ("IN_OUT", e["dir"])
            and _member(e["src"], rule["sources"], groups)
            and _member(e["dst"], rule["destinations"], groups)
            and _service(e["pnum"], e["dp"], rule["services"]))


def test_rule_truth_holds_in_the_output(run):
    _, events, truth, rules = run
    matches = [e for e in events if e["kind"] == "match"]
    hits = Counter(e["rule"] for e in matches)
    rt = truth["rules"]
    assert rt["never_hit"] and rt["shadowed"] and rt["overly_broad"]
    for rid in rt["never_hit"] + list(rt["shadowed"]):
        assert hits[rid] == 0, rid
    by_id = {r["id"]: r for r in rules["rules"]}
    for shadowed, shadowing in rt["shadowed"].items():
        covered = [e for e in matches if _matches(by_id[shadowed], e, rules["groups"])]
        assert covered, f"no traffic would match shadowed rule {shadowed}"
        assert {e["rule"] for e in covered} == {shadowing}
    for rid, broad in rt["overly_broad"].items():
        used = {f"{'tcp' if e['pnum'] == 6 else 'udp'}/{e['dp']}" if e["dp"] else "other"
                for e in matches if e["rule"] == rid}
        assert used == set(broad["services_used"])
    assert hits.most_common(1)[0][0] == rt["dominant"]


def test_first_match_decides_the_action(run):
    _, events, _, rules = run
    order = rules["rules"]
    for e in [e for e in events if e["kind"] == "match"][::50]:
        first = next(r for r in order if _matches(r, e, rules["groups"]))
        assert first["id"] == e["rule"]


def test_allowlist_labels_name_org_vm_and_allowed_cidrs(run):
    _, _, truth, _ = run
    labeled = [a for a in truth["allowlists"] if a["labeled"]]
    assert labeled and len(labeled) < len(truth["allowlists"])
    for a in labeled:
        assert a["org"] and a["vm"] and a["port"] > 0
        assert all(ipaddress.ip_network(c) for c in a["allowed"])


def test_traffic_classes_label_destinations(run):
    _, _, truth, _ = run
    classes = {c["class"] for c in truth["traffic_classes"]}
    assert {"web", "dns", "backup", "small_flood", "incoming_flood"} <= classes


def test_seed000_preset_has_the_shape_of_the_data_set(tmp_path):
    sim = Simulation("seed000", seed=1)
    sim.write(tmp_path)
    events = [parse(ln, 2020) for ln in
              (tmp_path / "nsx" / "dfwpktlogs.log").read_text().splitlines()]
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert 60_000 < len(events) < 95_000
    assert 70 <= truth["counts"]["active_hosts"] <= 90
    matches = [e for e in events if e["kind"] == "match"]
    assert Counter(e["rule"] for e in matches).most_common(1)[0][0] == "1018"
    assert sum(e["act"] == "DROP" for e in matches) / len(matches) > 0.25
    assert {e["dst"] for e in matches if e["dp"] == "53"} == {"20.20.0.1"}
    assert any(e["pnum"] == 2 for e in matches)
