"""One event sent in a vendor's native form and in its CEF/LEEF form lands with the same ECS
fields, and a CEF/LEEF line from a vendor fwsiem has never heard of is an event, not a dead
letter."""

from __future__ import annotations

import pytest

from plugin.lines import line_document
from plugin.setup import pipeline_bodies, processors_used

pytestmark = pytest.mark.integration

SHARED = ("source.ip", "source.port", "destination.ip", "destination.port", "network.transport",
          "source.nat.ip", "source.nat.port", "source.bytes", "destination.bytes",
          "source.packets", "destination.packets", "event.action", "event.outcome", "event.type",
          "event.dataset", "event.code", "@timestamp", "observer.serial_number",
          "observer.hostname", "observer.ingress.interface.name", "rule.id", "user.name",
          "network.direction", "event.duration")

# FortiOS writes a traffic log as key=value or, with `set format cef`, as CEF (FTNTFGT* keys,
# `out` = bytes sent); the same session in both forms.
FORTIGATE_NATIVE = (
    '<189>date=2024-03-01 time=08:00:00 devname="FGT-T" devid="FGT60FTK0000TEST" '
    'eventtime=1709280000000000000 tz="+0000" logid="0000000013" type="traffic" '
    'subtype="forward" level="notice" vd="root" srcip=10.9.0.5 srcport=50001 srcintf="lan" '
    'srcintfrole="lan" dstip=192.0.2.9 dstport=443 dstintf="wan1" dstintfrole="wan" '
    'sessionid=1 proto=6 action="close" policyid=7 user="dana" service="HTTPS" trandisp="snat" '
    'transip=203.0.113.9 transport=60001 duration=5 sentbyte=100 rcvdbyte=900 sentpkt=3 '
    'rcvdpkt=4')
FORTIGATE_CEF = (
    '<189>Mar  1 08:00:00 FGT-T CEF:0|Fortinet|Fortigate|v7.2.5|00013|traffic:forward close|3|'
    'deviceExternalId=FGT60FTK0000TEST dvchost=FGT-T FTNTFGTlogid=0000000013 '
    'cat=traffic:forward FTNTFGTsubtype=forward FTNTFGTlevel=notice FTNTFGTvd=root '
    'FTNTFGTeventtime=1709280000000000000 FTNTFGTtz=+0000 src=10.9.0.5 spt=50001 '
    'deviceInboundInterface=lan FTNTFGTsrcintfrole=lan dst=192.0.2.9 dpt=443 '
    'deviceOutboundInterface=wan1 FTNTFGTdstintfrole=wan externalId=1 proto=6 act=close '
    'FTNTFGTpolicyid=7 suser=dana app=HTTPS FTNTFGTtrandisp=snat '
    'sourceTranslatedAddress=203.0.113.9 sourceTranslatedPort=60001 FTNTFGTduration=5 '
    'out=100 in=900 FTNTFGTsentpkt=3 FTNTFGTrcvdpkt=4')
PANOS_CEF = (
    '<14>Mar  1 08:00:00 PA-T CEF:0|Palo Alto Networks|PAN-OS|11.0.2|end|TRAFFIC|1|'
    'rt=Mar 01 2024 08:00:00 GMT deviceExternalId=0128TEST src=10.9.0.6 dst=192.0.2.10 '
    'sourceTranslatedAddress=203.0.113.10 cs1Label=Rule cs1=web suser=corp\\\\erin app=ssl '
    'deviceInboundInterface=ethernet1/2 spt=50002 dpt=443 sourceTranslatedPort=60002 '
    'proto=tcp act=allow in=200 out=800 PanOSPacketsSent=2 PanOSPacketsReceived=5 '
    'cn3Label=Elapsed time in seconds cn3=9 PanOSDeviceName=PA-T')
PANOS_LEEF = (
    '<14>Mar  1 08:00:00 PA-T LEEF:1.0|Palo Alto Networks|PAN-OS Syslog Integration|11.0.2|allow|'
    'cat=TRAFFIC|SerialNumber=0128TEST|Type=TRAFFIC|Subtype=end|'
    'devTime=Mar 01 2024 08:00:00 GMT|src=10.9.0.6|dst=192.0.2.10|srcPostNAT=203.0.113.10|'
    'RuleName=web|usrName=corp\\erin|Application=ssl|IngressInterface=ethernet1/2|'
    'srcPort=50002|dstPort=443|srcPostNATPort=60002|proto=tcp|action=allow|srcBytes=200|'
    'dstBytes=800|srcPackets=2|dstPackets=5|ElapsedTime=9|DeviceName=PA-T')


def _value(doc: dict, path: str):
    for key in path.split("."):
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


@pytest.fixture(scope="module")
def simulate(engine):
    bodies = pipeline_bodies(engine.flavor)
    missing = set().union(*(processors_used(b) for b in bodies.values()))
    missing -= engine.store.ingest_processors()
    if missing:
        pytest.skip(f"{engine.flavor} at {engine.url} lacks ingest processors {sorted(missing)}")
    for name, body in bodies.items():
        engine.store.put_pipeline(name, body)

    def run(*lines: str, module: str | None = None) -> list[dict]:
        docs = [line_document(x.encode(), module=module) for x in lines]
        results = engine.store.simulate("fwsiem-logs", docs)
        docs = [r["doc"] for r in results]
        assert all(d.get("_index") != "fwsiem-deadletter" for d in docs), docs
        return [d["_source"] for d in docs]

    return run


def test_fortigate_cef_has_the_fields_of_the_native_log(simulate):
    native, cef = simulate(FORTIGATE_NATIVE, FORTIGATE_CEF)
    assert native["source"]["bytes"] == 100, "sentbyte is the source's"
    differ = {f: (_value(native, f), _value(cef, f)) for f in SHARED
              if _value(native, f) != _value(cef, f)}
    assert not differ
    assert cef["cef"]["device"]["product"] == "Fortigate"


def test_fortigate_hint_on_a_cef_line_reads_it_as_cef(simulate):
    (hinted,) = simulate(FORTIGATE_CEF, module="fortigate")
    (detected,) = simulate(FORTIGATE_CEF)
    assert hinted["source"] == detected["source"]
    assert hinted["event"]["dataset"] == "fwsiem.fortigate"


def test_panos_cef_and_leef_give_the_same_fields(simulate):
    cef, leef = simulate(PANOS_CEF, PANOS_LEEF)
    assert cef["rule"]["name"] == "web" and cef["user"]["name"] == "corp\\erin"
    assert cef["event"]["duration"] == 9_000_000_000
    fields = SHARED + ("rule.name", "network.application", "event.duration")
    differ = {f: (_value(cef, f), _value(leef, f)) for f in fields
              if _value(cef, f) != _value(leef, f)}
    assert not differ


def test_unknown_cef_and_leef_vendors_are_events(simulate):
    cef, leef, bare = simulate(
        "CEF:0|Nobody Inc|Gizmo|0.1|42|Something happened|3|msg=hello\\=world x=1",
        "LEEF:1.0|Nobody Inc|Gizmo|0.1|42|\tsev=3\tmsg=hello",
        "CEF:0|Nobody Inc|Gizmo|0.1|43|Nothing to add|3|",
    )
    for doc in (cef, leef, bare):
        assert doc["event"]["kind"] == "event"
        assert doc["observer"]["vendor"] == "Nobody Inc"
        assert doc["event"]["code"] in ("42", "43")
    assert cef["message"] == "hello=world"
    assert cef["cef"]["extensions"]["x"] == "1"
    assert "fwsiem_body_unmapped" not in cef.get("tags", [])
    assert "fwsiem_body_unmapped" in bare["tags"], "a header without an extension"
