"""PAN-OS through the real `fwsiem-logs` pipeline: every layout, header and JSON form of a log."""

from __future__ import annotations

import json

import pytest

from plugin.lines import line_document
from plugin.setup import pipeline_bodies, template_mappings

pytestmark = pytest.mark.integration

# One TRAFFIC session (columns 1-47 are the same in every PAN-OS release from 6.1 to 11.1).
SESSION = (
    "1,2024/05/06 07:08:09,013201001234,TRAFFIC,end,2561,2024/05/06 07:08:09,10.1.1.5,"
    "198.51.100.9,203.0.113.4,198.51.100.9,web-out,corp\\dana,,ssl,vsys1,trust,untrust,"
    "ethernet1/2,ethernet1/1,fwd,2024/05/06 07:08:09,9001,1,50000,443,41000,443,0x400053,tcp,"
    "allow,1500,500,1000,12,2024/05/06 07:07:59,10,any,0,123456,0x0,10.0.0.0-10.255.255.255,"
    "Germany,0,5,7,tcp-fin"
)
# Columns PAN-OS 8.1 (18 more), 9.1 (+11) and 11.1 (+42) append after Session End Reason.
TAIL_81 = ",0,0,0,0,,pa-01,from-policy,,,0,,0,,N/A,0,0,0,0"
TAIL_91 = TAIL_81 + ",0c8d2e4f-1a2b-4c3d-8e9f-0a1b2c3d4e5f,0,0,,,,,,,,"
TAIL_11 = TAIL_91 + "," * 27 + "2024-05-06T07:08:09.250+00:00" + "," * 13 + "NonProxyTraffic,"


@pytest.fixture(scope="module")
def simulate(os_engine):
    store = os_engine.store
    if not {"script", "json", "date", "community_id"} <= store.ingest_processors():
        pytest.fail(f"{os_engine.url} lacks the ingest processors the PAN-OS pipeline needs")
    for name, body in pipeline_bodies("opensearch").items():
        store.put_pipeline(name, body)

    def run(*lines: str) -> list[dict]:
        results = store.simulate("fwsiem-logs", [line_document(x.encode()) for x in lines])
        docs = [r["doc"] for r in results]
        assert all(d.get("_index") != "fwsiem-deadletter" for d in docs), docs
        return [d["_source"] for d in docs]

    return run


def core(doc: dict) -> tuple:
    return (doc["source"]["ip"], doc["source"]["port"], doc["destination"]["ip"],
            doc["destination"]["port"], doc["network"]["transport"], doc["event"]["outcome"],
            doc["source"]["nat"], doc["source"]["bytes"], doc["destination"]["bytes"],
            doc["source"]["packets"], doc["destination"]["packets"], doc["event"]["duration"],
            doc["rule"]["name"], doc["user"]["name"], doc["network"]["direction"])


def test_every_release_layout_and_header_gives_the_same_session(simulate):
    docs = simulate(
        SESSION,
        "Mar  4 10:15:31 pa-01 " + SESSION + TAIL_81,
        "<14>May  6 07:08:09 pa-01 " + SESSION + TAIL_91,
        "<14>1 2024-05-06T07:08:09Z pa-01 - - - - " + SESSION + TAIL_11,
        "2024-05-06T07:08:09+00:00 pa-01 " + SESSION + TAIL_11 + ",future,columns",
    )
    expected = ("10.1.1.5", 50000, "198.51.100.9", 443, "tcp", "success",
                {"ip": "203.0.113.4", "port": 41000}, 500, 1000, 5, 7, 10_000_000_000,
                "web-out", "corp\\dana", "outbound")
    assert [core(d) for d in docs] == [expected] * 5
    assert [d["observer"].get("hostname") for d in docs] == [None, "pa-01", "pa-01", "pa-01",
                                                             "pa-01"]
    assert docs[3]["@timestamp"] == "2024-05-06T07:08:09.250Z"
    assert docs[3]["panw"]["panos"]["flow_type"] == "NonProxyTraffic"


def test_quoted_fields_with_commas_keep_every_later_column_in_place(simulate):
    quoted = SESSION.replace(",web-out,corp\\dana,", ',"web-out, ""dmz"" rule","corp\\dana, ops",')
    (doc,) = simulate(quoted + TAIL_81)
    assert doc["rule"]["name"] == 'web-out, "dmz" rule'
    assert doc["user"]["name"] == "corp\\dana, ops"
    assert (doc["source"]["port"], doc["destination"]["port"], doc["network"]["transport"]) == (
        50000, 443, "tcp")
    assert doc["observer"]["hostname"] == "pa-01"


def test_strata_logging_service_json_maps_like_the_syslog_line(simulate):
    query_names = {
        "log_type": {"value": "traffic"}, "sub_type": {"value": "end"},
        "time_generated": 1714979289000000, "log_source_id": "013201001234",
        "source_ip": {"value": "10.1.1.5"}, "dest_ip": {"value": "198.51.100.9"},
        "source_port": 50000, "dest_port": 443, "nat_source": {"value": "203.0.113.4"},
        "nat_source_port": 41000, "protocol": {"value": "tcp"}, "action": {"value": "allow"},
        "bytes_sent": 500, "bytes_received": 1000, "packets_sent": 5, "packets_received": 7,
        "total_time_elapsed": 10, "rule_matched": "web-out", "source_user": "corp\\dana",
        "from_zone": "trust", "to_zone": "untrust"}
    https_names = {
        "LogType": "TRAFFIC", "Subtype": "end", "TimeGenerated": "2024-05-06T07:08:09.000000Z",
        "DeviceSN": "013201001234", "SourceAddress": "10.1.1.5",
        "DestinationAddress": "198.51.100.9", "SourcePort": 50000, "DestinationPort": 443,
        "NATSource": "203.0.113.4", "NATSourcePort": 41000, "Protocol": "tcp", "Action": "allow",
        "BytesSent": 500, "BytesReceived": 1000, "PacketsSent": 5, "PacketsReceived": 7,
        "SessionDuration": 10, "Rule": "web-out", "SourceUser": "corp\\dana",
        "FromZone": "trust", "ToZone": "untrust"}
    csv, *jsons = simulate(SESSION, json.dumps(query_names), json.dumps(https_names))
    for doc in jsons:
        assert core(doc) == core(csv)
        assert doc["@timestamp"] == "2024-05-06T07:08:09.000Z"
        assert doc["observer"]["serial_number"] == "013201001234"
        assert doc["network"]["community_id"] == csv["network"]["community_id"]


def test_every_log_type_is_an_event_and_an_unknown_type_is_tagged_not_lost(simulate):
    head = "1,2024/05/06 07:08:09,013201001234,{},{},2561,2024/05/06 07:08:09,"
    lines = {
        "THREAT": head.format("THREAT", "vulnerability")
        + "10.1.1.5,198.51.100.9,,,web-out,,,web-browsing,vsys1,trust,untrust,e1,e2,fwd,,9001,1,"
        + "50000,443,0,0,0x0,tcp,reset-both,/admin,Some Exploit(91001),any,critical,c2s,7,0x0",
        "SYSTEM": head.format("SYSTEM", "general") + ",general,,0,0,general,high,\"disk 91%, full\"",
        "CONFIG": head.format("CONFIG", "0") + "10.9.9.9,vsys1,edit,admin,Web,Succeeded,rules x",
        "GLOBALPROTECT": head.format("GLOBALPROTECT", "0")
        + "vsys1,gateway-auth,login,LDAP,,dana,DE,LT-1,192.0.2.8,,,,id,,6.2,,,1,,,,failure",
        "USERID": head.format("USERID", "login") + "vsys1,10.1.1.5,corp\\dana,dc1,0,1,2700",
        "HIPMATCH": head.format("HIPMATCH", "0") + "corp\\dana,vsys1,LT-1,Windows,10.1.1.5,hip,1",
        "IPTAG": head.format("IPTAG", "0") + "vsys1,10.1.1.5,quarantine,Register,1,3600",
        "AUTHENTICATION": head.format("AUTHENTICATION", "0")
        + "vsys1,10.1.1.5,dana,corp\\dana,obj,mfa,1,77,Okta,fwd,okta,push ok,Web,auth-success",
        "CORRELATION": head.format("CORRELATION", "0") + "10.1.1.5,corp\\dana,vsys1,c2,high",
        "NEWTYPE": head.format("NEWTYPE", "x") + "a,b",
    }
    docs = dict(zip(lines, simulate(*lines.values()), strict=True))
    assert {t: d["panw"]["panos"]["type"] for t, d in docs.items()} == {t: t for t in lines}
    assert all(d["event"]["kind"] == "event" for d in docs.values())
    assert docs["THREAT"]["panw"]["panos"]["threat"] == {"id": "91001", "name": "Some Exploit"}
    assert docs["THREAT"]["event"]["severity"] == 5
    assert docs["SYSTEM"]["message"] == "disk 91%, full"
    assert (docs["CONFIG"]["user"]["name"], docs["CONFIG"]["event"]["outcome"]) == ("admin",
                                                                                   "success")
    assert (docs["GLOBALPROTECT"]["source"]["ip"], docs["GLOBALPROTECT"]["event"]["outcome"]) == (
        "192.0.2.8", "failure")
    assert docs["AUTHENTICATION"]["event"]["outcome"] == "success"
    assert {docs[t]["source"]["ip"] for t in ("USERID", "HIPMATCH", "IPTAG", "CORRELATION")} == {
        "10.1.1.5"}
    assert docs["NEWTYPE"]["tags"] == ["fwsiem_body_unmapped"]
    assert "fwsiem_body_unmapped" not in docs["SYSTEM"].get("tags", [])


def test_time_columns_in_different_forms_are_all_stored(os_engine, simulate, unique_prefix):
    """A column that holds a slash date in one log and an ISO date (or anything) in the next must
    not be refused by the index: vendor fields are stored as sent."""
    index = f"{unique_prefix}-panos-events"
    store = os_engine.store
    store.request("PUT", f"/{index}", body={"mappings": template_mappings("fwsiem-events")})
    lines = [
        SESSION + TAIL_81,
        "1,2021-10-22T16:10:10.000000Z,no-serial,GLOBALPROTECT,0,9.1,2021-10-22T16:10:05.000000Z,"
        "vsys1,gateway-connected,connected,,,dana,,LT-1,192.0.2.8",
        SESSION.replace("2024/05/06 07:07:59", "2024-05-06T07:07:59.000-07:00"),
        SESSION.replace("2024/05/06 07:07:59", "1000"),
    ]
    actions = [{"_index": index, "_op_type": "create", "_id": str(n),
                "_source": line_document(x.encode())} for n, x in enumerate(lines)]
    result = store.bulk(actions, pipeline="fwsiem-logs", refresh=True)
    try:
        assert not result.failed, result.failed
        assert store.count(index) == len(lines)
    finally:
        store.delete_index(index)
