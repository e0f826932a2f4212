"""Every sample line of every format through the real `fwsiem-logs` pipeline, field by field.

`FWSIEM_GENERATE=1 pytest tests/integration/test_pipelines.py -k opensearch` rewrites the
`test-*.log-expected.json` files from the engine, so a parser change is reviewed as a JSON diff.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from plugin.lines import DeclaredHeader, line_document

PIPELINES = Path(__file__).resolve().parents[2] / "ingest_pipelines"
ENTRY = "fwsiem-logs"
DEADLETTER = "fwsiem-deadletter"
# Values that change on every run: compared for presence only.
VOLATILE = ("event.ingested",)
VOLATILE_DEADLETTER = ("@timestamp",)
GENERATE = os.environ.get("FWSIEM_GENERATE", "") not in ("", "0", "false")

pytestmark = pytest.mark.integration


def sample_files() -> list[Path]:
    return sorted(PIPELINES.rglob("test-*.log"))


def sample_documents(path: Path) -> list[dict]:
    """The shipper's documents for a sample file: bytes split on newlines, one per line; the
    header lines of a file that declares its fields (W3C, Zeek) are read as the shipper reads
    them, not sent."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    docs, offset, header = [], 0, DeclaredHeader()
    for line in lines:
        if not header.consume(line):
            doc = line_document(line, path=f"/var/log/fwsiem-samples/{path.name}", offset=offset)
            docs.append(header.annotate(doc))
        offset += len(line) + 1
    return docs


def flatten(doc: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def result_document(result: dict) -> dict:
    """What a simulated line becomes: `_source`, plus `_index` when it was dead-lettered."""
    if "error" in result:
        return {"_simulate_error": result["error"]}
    doc = dict(result["doc"]["_source"])
    if result["doc"].get("_index") == DEADLETTER:
        doc["_index"] = DEADLETTER
    return doc


def volatile_fields(flat: dict) -> tuple[str, ...]:
    """Fields that change on every run: event.ingested; @timestamp of a dead letter or of a line
    without a time of its own (tagged fwsiem_time_from_ingest)."""
    from_ingest = "fwsiem_time_from_ingest" in (flat.get("tags") or [])
    return VOLATILE + (VOLATILE_DEADLETTER if flat.get("_index") == DEADLETTER or from_ingest
                       else ())


def differences(expected: dict, actual: dict) -> list[str]:
    exp, act = flatten(expected), flatten(actual)
    volatile = volatile_fields(exp)
    out = []
    for name in sorted(set(exp) | set(act)):
        if name in volatile:
            if name not in act:
                out.append(f"{name}: missing")
            continue
        if name not in act:
            out.append(f"{name}: missing, expected {exp[name]!r}")
        elif name not in exp:
            out.append(f"{name}: unexpected {act[name]!r}")
        elif exp[name] != act[name]:
            out.append(f"{name}: {act[name]!r}, expected {exp[name]!r}")
    return out


def strip_volatile(doc: dict) -> dict:
    volatile = volatile_fields(flatten(doc))
    doc = json.loads(json.dumps(doc))
    for name in volatile:
        *parents, leaf = name.split(".")
        node = doc
        for p in parents:
            node = node.get(p, {})
        if leaf in node:
            node[leaf] = "<volatile>"
    return doc


@pytest.mark.parametrize("sample", sample_files(), ids=lambda p: p.name)
def test_sample_parses_to_expected_documents(installed, sample: Path):
    docs = sample_documents(sample)
    results = installed.store.simulate(ENTRY, docs)
    actual = [result_document(r) for r in results]
    expected_path = sample.with_name(sample.name + "-expected.json")
    if GENERATE:
        expected_path.write_text(json.dumps([strip_volatile(d) for d in actual], indent=2,
                                            sort_keys=True, ensure_ascii=False) + "\n")
    assert expected_path.exists(), f"{expected_path.name} is missing: run with FWSIEM_GENERATE=1"
    expected = json.loads(expected_path.read_text())
    assert len(expected) == len(actual), f"{len(actual)} documents, expected {len(expected)}"
    problems = []
    for number, (exp, act) in enumerate(zip(expected, actual, strict=True), start=1):
        diffs = differences(exp, act)
        if diffs:
            original = str(exp.get("event", {}).get("original", ""))[:120]
            problems.append(f"line {number} ({original!r}):\n    " + "\n    ".join(diffs))
    assert not problems, f"{sample.name}: {len(problems)} lines differ\n" + "\n".join(problems)


@pytest.mark.parametrize("sample", sample_files(), ids=lambda p: p.name)
def test_only_malformed_samples_are_dead_lettered(installed, sample: Path):
    results = installed.store.simulate(ENTRY, sample_documents(sample))
    actual = [result_document(r) for r in results]
    assert not [d for d in actual if "_simulate_error" in d], "a line failed outside on_failure"
    dead = [d for d in actual if d.get("_index") == DEADLETTER]
    if sample.name.startswith("test-deadletter"):
        assert len(dead) == len(actual), "every malformed line must be dead-lettered"
        for doc in dead:
            assert doc["error"]["message"], "a dead letter says why"
            assert doc["event"]["kind"] == "pipeline_error"
            assert "original" in doc["event"], "a dead letter keeps the raw line"
            assert doc["fwsiem"]["deadletter"]["pipeline"]
            assert doc["fwsiem"]["deadletter"]["processor_tag"]
            assert not {"source", "destination", "network", "rule"} & set(doc), \
                "partially parsed fields are removed"
    else:
        assert not dead, "\n".join(f"{d['event'].get('original', '')[:120]!r}: "
                                    f"{d['error']['message']}" for d in dead)
        for doc in actual:
            assert doc["event"]["original"], "the raw line is kept"
            assert doc["event"]["module"] == "fwsiem"


def _simulated(installed, lines: list[str]) -> list[dict]:
    docs = [line_document(line.encode(), path="/var/log/asa.log", offset=n)
            for n, line in enumerate(lines)]
    return [result_document(r) for r in installed.store.simulate(ENTRY, docs)]


def test_cisco_lines_without_a_timestamp_are_events_stamped_at_ingest(installed):
    before = datetime.now(timezone.utc) - timedelta(minutes=5)
    docs = _simulated(installed, [
        'LOCAL4.WARNING: fw-7 %ASA-4-106023: Deny udp src outside:198.51.100.9/5000 dst '
        'inside:10.0.0.9/53 by access-group "outside_in" [0x0, 0x0]',
        "<163>%FTD-3-305006: regular translation creation failed for icmp src "
        "inside:10.0.0.8 dst outside:198.51.100.8 (type 8, code 0)",
    ])
    assert [d.get("_index") for d in docs] == [None, None]
    for doc in docs:
        stamp = datetime.fromisoformat(doc["@timestamp"].replace("Z", "+00:00")[:26] + "+00:00")
        assert stamp > before
    assert docs[0]["observer"]["hostname"] == "fw-7"
    assert (docs[0]["source"]["ip"], docs[0]["destination"]["port"]) == ("198.51.100.9", 53)
    assert (docs[1]["event"]["code"], docs[1]["log"]["level"]) == ("305006", "errors")
    assert docs[1]["cisco"]["asa"]["icmp"] == {"type": 8, "code": 0}


def test_cisco_names_odd_ports_and_multiline_bodies_never_dead_letter(installed):
    docs = _simulated(installed, [
        "<166>Mar  4 2024 12:00:00 fw-7 : %ASA-6-302021: Teardown ICMP connection for "
        "faddr web01.example.org/0 gaddr 203.0.113.9/3 laddr 10.0.0.7/3 type 0 code 0",
        "<166>Mar  4 2024 12:00:01 fw-7 : %ASA-6-110002: Failed to locate egress interface "
        "for UDP from inside:10.0.0.6/5000 to 198.51.100.6/70000",
        "<164>Mar  4 2024 12:00:02 fw-7 : %ASA-4-733100: [ 198.51.100.5\n   ] drop rate-1 "
        "exceeded. Current burst rate is 9 per second, max configured rate is 8; Current average "
        "rate is 2 per second, max configured rate is 1; Cumulative total count is 500",
    ])
    assert [d.get("_index") for d in docs] == [None, None, None]
    assert docs[0]["destination"] == {"address": "web01.example.org"}
    assert (docs[0]["source"]["ip"], docs[0]["source"]["nat"]["ip"]) == ("10.0.0.7", "203.0.113.9")
    assert docs[1]["destination"] == {"ip": "198.51.100.6"}, "a port over 65535 is left out"
    assert docs[2]["source"]["ip"] == "198.51.100.5"
    assert docs[2]["cisco"]["asa"]["total_count"] == 500
    assert "fwsiem_body_unmapped" not in docs[2].get("tags", [])


PF_CSV = ("5,,,1000000103,igb1,match,block,in,4,0x0,,64,12345,0,DF,6,tcp,60,203.0.113.50,"
          "192.168.1.10,51234,22,0,S,123456789,,64240,,mss;sackOK;TS;nop;wscale")
PF_LOGIN = "Accepted publickey for admin from 192.168.1.5 port 50022 ssh2"
PF_DHCP = "DHCPACK on 192.168.1.50 to 02:00:00:00:00:50 (laptop) via igb1"


@pytest.mark.parametrize(("common", "other"), [
    # a host name that is an IPv6 address: the grok reads the header, the same library maps it
    (f"<134>Mar  5 10:00:22 fw-1 filterlog[1111]: {PF_CSV}",
     f"<134>Mar  5 10:00:22 2001:db8::1 filterlog[1111]: {PF_CSV}"),
    (f"<190>Mar  5 10:00:19 fw-1 dhcpd[4444]: {PF_DHCP}",
     f"<190>Mar  5 10:00:19 2001:db8::1 dhcpd[4444]: {PF_DHCP}"),
    # an offset without its colon: the date processor reads the time, the separate processors map
    (f"<134>2023-10-19T22:38:12.500+00:00 fw-1 filterlog[12345]: {PF_CSV}",
     f"<134>2023-10-19T22:38:12.5+0000 fw-1 filterlog[12345]: {PF_CSV}"),
    (f"<38>2024-03-05T10:00:15+00:00 fw-1 sshd[999]: {PF_LOGIN}",
     f"<38>2024-03-05T10:00:15+0000 fw-1 sshd[999]: {PF_LOGIN}"),
], ids=["filterlog-ipv6-host", "dhcpd-ipv6-host", "filterlog-offset", "sshd-offset"])
def test_pfsense_header_shapes_the_scan_leaves_to_the_grok_give_the_same_event(
        installed, common, other):
    docs = _simulated(installed, [common, other])
    assert [d.get("_index") for d in docs] == [None, None]
    for doc in docs:
        doc["event"].pop("original")
        doc["event"].pop("ingested")
        doc["log"].pop("offset")
        doc["observer"].pop("hostname")
    assert docs[0] == docs[1]
    assert {"pfsense", "process"} & set(docs[0]), "the body is mapped, not only the header"
