"""Nothing well-formed is lost: Community ID for every port, enrichment failures and unmapped
messages kept as events; only malformed or unrecognised lines are dead letters."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json

import pytest
from click.testing import CliRunner

from plugin.cli import cli
from plugin.setup import run_setup

DEADLETTER = "fwsiem-deadletter"
PORTS = (0, 1, 63342, 63343, 65535)
# Published Community ID v1 test vectors (seed 0), from corelight/community-id-spec,
# baseline/baseline_deflt.json at commit c4ec2bc40d65ddbcbdd642582bf5609797a80772:
# (protocol, source address, destination address, source port, destination port, id).
SPEC_VECTORS = (
    (6, "128.232.110.120", "66.35.250.204", 34855, 80, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
    (6, "66.35.250.204", "128.232.110.120", 80, 34855, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
    (17, "192.168.1.52", "8.8.8.8", 54585, 53, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
    (132, "192.168.170.8", "192.168.170.56", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="),
    (6, "2001:470:e5bf:dead:4957:2174:e82c:4887", "2607:f8b0:400c:c03::1a", 63943, 25,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="),
    (6, "2607:f8b0:400c:c03::1a", "2001:470:e5bf:dead:4957:2174:e82c:4887", 25, 63943,
     "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="),
)


def reference_community_id(proto: int, saddr: str, daddr: str, sport: int, dport: int) -> str:
    """Community ID v1, seed 0, as the specification defines it: SHA-1 over the seed, the
    (address, port) endpoints in ascending order, the protocol and a zero pad; base64; `1:`."""
    src = (ipaddress.ip_address(saddr).packed, sport)
    dst = (ipaddress.ip_address(daddr).packed, dport)
    (a, pa), (b, pb) = sorted((src, dst))
    data = b"\0\0" + a + b + bytes([proto, 0]) + pa.to_bytes(2, "big") + pb.to_bytes(2, "big")
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()


@pytest.mark.parametrize("vector", SPEC_VECTORS, ids=lambda v: f"{v[0]}-{v[1]}-{v[3]}")
def test_the_reference_implementation_gives_the_published_ids(vector):
    *tuple_, expected = vector
    assert reference_community_id(*tuple_) == expected


def _nsx_line(i: int, proto: str, src: str, sport: int, dst: str, dport: int) -> str:
    family = "INET6" if ":" in src else "INET"
    return (f"2026-03-04T05:06:{i:02d}.000Z 58734 {family} match PASS domain-c8/1006 OUT 60 "
            f"{proto} {src}/{sport}->{dst}/{dport}")


def _port_lines() -> list[tuple[str, tuple]]:
    """(line, (protocol number, source, destination, ports)) for each port on either side."""
    out = []
    for port in PORTS:
        out.append(("TCP", (6, "10.20.1.5", "172.16.9.4", port, 443)))
        out.append(("UDP", (17, "10.20.1.5", "172.16.9.4", 40000, port)))
    out.append(("TCP", (6, "2001:db8::10", "2001:db8::20", 65535, 22)))
    out.append(("UDP", (17, "2001:db8::10", "2001:db8::20", 53, 0)))
    return [(_nsx_line(i, name, t[1], t[3], t[2], t[4]), t) for i, (name, t) in enumerate(out)]


@pytest.fixture
def events(installed, unique_prefix, tmp_path):
    """Templates and pipelines installed as `fwsiem setup` does, and a fresh events stream."""
    stream = f"logs-fwsiem.{unique_prefix}-default"
    run_setup(installed.store, installed.config(events=stream))
    yield installed, stream, {"FWSIEM_INDICES_EVENTS": stream,
                              "FWSIEM_ENGINE_SPOOL_DIR": str(tmp_path / "spool")}
    installed.store.delete_index(stream)


def _ingest(events, path) -> dict:
    """`fwsiem ingest --json PATH` into the test's stream; its summary."""
    engine, _stream, env = events
    result = CliRunner().invoke(cli, ["--url", engine.url, "ingest", "--json", "--no-progress",
                                      str(path)], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def test_every_port_from_0_to_65535_gets_the_reference_community_id(events, tmp_path):
    engine, stream, _env = events
    lines = _port_lines()
    log = tmp_path / "ports.log"
    log.write_text("".join(line + "\n" for line, _ in lines))
    summary = _ingest(events, log)
    assert (summary["indexed"], summary["dead_lettered"]) == (len(lines), 0)
    engine.store.refresh(stream)
    got = {h["_source"]["event"]["original"]: h["_source"] for h in engine.store.scan(stream)}
    wrong = []
    for line, (proto, src, dst, sport, dport) in lines:
        doc = got[line]
        assert (doc["source"]["port"], doc["destination"]["port"]) == (sport, dport)
        expected = reference_community_id(proto, src, dst, sport, dport)
        if doc["network"].get("community_id") != expected or "tags" in doc:
            wrong.append(f"{line}: {doc['network'].get('community_id')} (expected {expected}), "
                         f"tags {doc.get('tags')}")
    assert not wrong, "\n".join(wrong)


def test_a_failed_enrichment_keeps_the_event_and_says_which_and_why(installed):
    """A format pipeline hands fwsiem-network events whose community id cannot be computed (an
    IPv4 and an IPv6 address; an ICMP type out of range) and a byte counter that is not a number."""
    def event(proto: str, destination: str, **tmp) -> dict:
        return {"event": {"original": "x", "kind": "event"}, "_tmp": {"proto": proto, **tmp},
                "source": {"ip": "10.1.1.1", "bytes": "n/a", "packets": "3"},
                "destination": {"ip": destination}}

    docs = []
    for sport in (40000, 65535):  # a port the processors take, and one OpenSearch's refuses
        doc = event("tcp", "2001:db8::1")
        doc["source"]["port"], doc["destination"]["port"] = sport, 443
        docs.append(doc)
    docs.append(event("icmp", "10.1.1.2", icmp_type="300", icmp_code="0"))
    results = installed.store.simulate("fwsiem-network", docs)
    reasons = []
    for result in results:
        doc = result["doc"]
        assert doc.get("_index") != DEADLETTER
        src = doc["_source"]
        assert src["tags"] == ["fwsiem_enrichment_failed"]
        failures = {f["processor_tag"]: f["message"] for f in src["fwsiem"]["enrichment_failures"]}
        assert set(failures) == {"convert_counters_name_protocol_and_event_type",
                                 "compute_community_id_by_script"}
        assert "[n/a]" in failures["convert_counters_name_protocol_and_event_type"]
        reasons.append(failures["compute_community_id_by_script"])
        assert "community_id" not in src["network"]
        assert "bytes" not in src["source"] and src["source"]["packets"] == 3
        assert src["source"]["ip"] == "10.1.1.1" and src["event"]["type"] == ["connection"]
    assert [r for r in reasons[:2] if "IP version" in r] == reasons[:2]
    assert "300" in reasons[2], "the processor's own reason is kept"


def test_a_known_vendor_message_not_mapped_is_an_event_and_a_malformed_line_a_dead_letter(
        events, tmp_path):
    engine, stream, _env = events
    unmapped = "Mar 04 2026 05:06:07 fw-edge-1 : %ASA-6-999999: A message no parser maps, user=bob"
    bad_address = ("2026-03-04T05:06:08.000Z 58734 INET match PASS domain-c8/1006 OUT 60 TCP "
                   "172.18.8.300/36485->172.18.8.119/22 S")
    unknown = "hello from a line no firewall wrote"
    log = tmp_path / "mixed.log"
    log.write_text(f"{unmapped}\n{bad_address}\n{unknown}\n")
    summary = _ingest(events, log)
    assert (summary["indexed"], summary["dead_lettered"]) == (1, 2)
    assert summary["unmapped"] == {"fwsiem.cisco_asa 999999": 1}

    engine.store.refresh(stream)
    (doc,) = [h["_source"] for h in engine.store.scan(stream)]
    assert doc["event"]["original"] == unmapped
    assert "fwsiem_body_unmapped" in doc["tags"]
    assert doc["@timestamp"].startswith("2026-03-04T05:06:07")
    assert (doc["event"]["kind"], doc["event"]["code"], doc["event"]["dataset"]) == \
        ("event", "999999", "fwsiem.cisco_asa")
    assert (doc["observer"]["vendor"], doc["observer"]["hostname"]) == ("Cisco", "fw-edge-1")
    assert doc["event"].get("severity") == 6 or doc.get("log", {}).get("level") == "informational"
    assert doc["message"].startswith("A message no parser maps")

    engine.store.refresh(DEADLETTER)
    letters = {h["_source"]["event"]["original"]: h["_source"] for h in engine.store.scan(
        DEADLETTER, query={"term": {"log.file.path": str(log)}})}
    assert set(letters) == {bad_address, unknown}
    assert "172.18.8.300" in letters[bad_address]["error"]["message"]
    assert letters[bad_address]["fwsiem"]["deadletter"]["processor_tag"] == "validate_source_ip"
    assert letters[unknown]["fwsiem"]["deadletter"]["processor_tag"] == "reject_unrecognised_line"
    assert all(d["event"]["kind"] == "pipeline_error" for d in letters.values())
