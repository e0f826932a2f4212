"""The vendor pipelines read a line's time in Painless exactly as the engine's date processor
reads it (the processor configured in the same pipeline for the shapes the script leaves)."""

from __future__ import annotations

import json

import pytest

from plugin.lines import line_document
from plugin.setup import asset_dir

pytestmark = pytest.mark.integration
PIPELINES = asset_dir("ingest_pipelines")

CEF_TIMES = [
    "1707128430000", "2024-02-05T10:41:00Z", "2024-02-05T10:41:00.123+01:00",
    "2024-02-05T10:41:00", "2024-02-05T10:41:00.123456789-03:30", "2024-02-05T10:41:00+0100",
    "Feb 05 2024 10:41:00", "Feb 05 2024 10:41:00.123", "Feb 5 2024 10:41:00",
    "Feb 05 2024 10:41:00 UTC", "Feb 05 2024 10:41:00 GMT", "Feb 05 2024 10:41:00 CET",
    "Jul 05 2024 10:41:00 CEST", "Jul 05 2024 10:41:00.250 EST", "Nov 03 2024 01:30:00 PST",
    "Mar 10 2024 02:30:00 PDT", "Oct 27 2024 02:30:00 CEST", "Jan 15 2024 10:00:00 JST",
    "Jan 15 2024 10:00:00 Europe/Berlin", "Jan 15 2024 10:00:00 IST", "Feb 05 10:41:00",
    "Feb 05 10:41:00 UTC", "Feb 05 10:41:00 CET", "Feb 29 10:41:00", "Feb 05 10:41:00.123",
    "2024/02/05 10:41:00", "2024-02-05 10:41:00", "Feb 29 2025 10:41:00", "FEB 05 2024 10:41:00",
    "Feb 05 2024 24:00:00", "2024-13-05T10:41:00Z",
]
CISCO_TIMES = [
    ("Feb 5 2024 10:41:00", None), ("Feb 05 2024 10:41:00.123", None), ("Feb 5 10:41:00", None),
    ("Feb 29 10:41:00", None), ("2024-02-05T10:41:00Z", None),
    ("2024-02-05T10:41:00.5+01:00", None), ("Feb 5 2024 10:41:00", "CET"),
    ("Jul 5 2024 10:41:00", "EDT"), ("2024-02-05T10:41:00", "PST"),
    ("Feb 5 10:41:00.123", "JST"),
]
FORTIGATE_TIMES = [("2024-02-05", "10:41:00", "+0100"), ("2024-02-05", "10:41:00", "-0330"),
                   ("2024-07-05", "23:59:59", "+0000"), ("2024/02/05", "10:41:00", "+0200"),
                   ("2024-02-05", "10:41:00", "CET")]


def _processor(path: str, tag: str) -> dict:
    body = json.loads((PIPELINES / path).read_text())
    for proc in body["processors"]:
        (kind, conf), = proc.items()
        if conf.get("tag") == tag:
            assert kind == "date"
            return {k: v for k, v in conf.items()
                    if k in ("formats", "locale", "timezone", "output_format")}
    raise AssertionError(f"{path} has no date processor {tag}")


def _date_processor(engine, config: dict, docs: list[dict]) -> list[str | None]:
    """What the engine's date processor makes of ``docs[i]['v']`` (None: it cannot read it)."""
    pipeline = {"processors": [{"date": {**config, "field": "v", "target_field": "out"}}]}
    resp = engine.store.request("POST", "/_ingest/pipeline/_simulate",
                                body={"pipeline": pipeline, "docs": [{"_source": d} for d in docs]})
    return [r.get("doc", {}).get("_source", {}).get("out") for r in resp["docs"]]


def _through_fwsiem(engine, lines: list[str]) -> list[dict]:
    results = engine.store.simulate("fwsiem-logs", [line_document(x.encode()) for x in lines])
    return [r["doc"]["_source"] for r in results]


def test_cef_times_read_as_the_date_processor_reads_them(installed):
    config = _processor("cef/fwsiem-cef-fields.json", "parse_event_time")
    expected = _date_processor(installed, config, [{"v": v} for v in CEF_TIMES])
    assert sum(e is not None for e in expected) >= 20, "most shapes are ones the processor reads"
    lines = [f"CEF:0|Acme|FW|1.0|100|Blocked|5|src=10.0.0.1 dst=10.0.0.2 spt=1234 dpt=80 "
             f"proto=TCP act=deny start={v} rt={v}" for v in CEF_TIMES]
    for value, want, doc in zip(CEF_TIMES, expected, _through_fwsiem(installed, lines),
                                strict=True):
        if want is None:
            assert "fwsiem_time_unparsed" in doc.get("tags", []), value
        else:
            assert (doc["@timestamp"], doc["event"]["start"]) == (want, want), value
            assert "fwsiem_time_unparsed" not in doc.get("tags", []), value


def test_cisco_header_times_read_as_the_date_processor_reads_them(installed):
    config = _processor("cisco_asa/fwsiem-cisco-asa.json", "parse_timestamp")
    header = json.loads((PIPELINES / "cisco_asa/fwsiem-cisco-asa.json").read_text())
    zones = header["processors"][0]["script"]["params"]["zones"]
    docs = [{"v": v, "_tmp": {"tz": zones[z] if z else "UTC"}} for v, z in CISCO_TIMES]
    config["timezone"] = "{{{_tmp.tz}}}"
    expected = _date_processor(installed, config, docs)
    assert None not in expected
    lines = [f"<166>{v}{' ' + z if z else ''}: fw01 : %ASA-6-302013: Built inbound TCP connection "
             f"1 for outside:10.0.0.1/1234 (10.0.0.1/1234) to inside:10.0.0.2/80 (10.0.0.2/80)"
             for v, z in CISCO_TIMES]
    got = [doc["@timestamp"] for doc in _through_fwsiem(installed, lines)]
    assert got == expected


FORTIGATE_LINES = {
    "fortigate/fwsiem-fortigate.json": (
        'date={d} time={t} tz="{z}" devname=fw01 devid=FG100F logid=0000000013 type=traffic '
        "subtype=forward level=notice srcip=10.0.0.1 srcport=1234 dstip=10.0.0.2 dstport=80 "
        "proto=6 action=deny"),
    "fortigate/fwsiem-fortigate-fields.json": (
        "CEF:0|Fortinet|Fortigate|v7.2.5|00013|traffic:forward deny|3|deviceExternalId=FG100F "
        "FTNTFGTlogid=0000000013 cat=traffic:forward FTNTFGTlevel=notice FTNTFGTdate={d} "
        "FTNTFGTtime={t} FTNTFGTtz={z} src=10.0.0.1 spt=1234 dst=10.0.0.2 dpt=80 proto=6 act=deny"),
}


@pytest.mark.parametrize("path", sorted(FORTIGATE_LINES))
def test_fortigate_date_and_time_read_as_the_date_processor_reads_them(installed, path):
    """The native log (fwsiem-fortigate) and FortiGate CEF (fwsiem-fortigate-fields, after
    parse_cef) each end with the date processor for the times the mapping script leaves."""
    config = _processor(path, "parse_date_time")
    expected = _date_processor(installed, config,
                               [{"v": f"{d} {t} {z}"} for d, t, z in FORTIGATE_TIMES])
    assert None not in expected
    lines = [FORTIGATE_LINES[path].format(d=d, t=t, z=z) for d, t, z in FORTIGATE_TIMES]
    assert [doc["@timestamp"] for doc in _through_fwsiem(installed, lines)] == expected
