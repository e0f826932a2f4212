"""Cisco ASA/FTD: a body the header script's scan reads gives the same document as the family
pipeline's grok reading it, and the scan leaves to the grok what it does not read exactly."""

from __future__ import annotations

import copy

import pytest

from plugin.lines import line_document
from plugin.setup import pipeline_bodies

pytestmark = pytest.mark.integration

GROK_ONLY = "test-fwsiem-cisco-asa-grok-only"
HEADER = "<166>Mar  4 2024 07:05:03 fw01 : %"
# message tag and body as firewalls write them, with the variants the scan must read exactly as
# the groks do (IPv6, names for addresses, notes and users in brackets, reasons, ICMP type and
# code, hashes) and ones it must leave to them (an interface name with a space, an IPv4-mapped
# IPv6 address, `for user`, a non-ASCII user, an empty hash or user, `User IP`)
MESSAGES = [
    'ASA-6-302013: Built inbound TCP connection 4001 for outside:2001:db8::70/51234 (2001:db8::70/51234) to dmz:2001:db8:1::10/443 (2001:db8:1::10/443)',
    'ASA-6-302013: Built inbound TCP connection 4002 for outside:198.51.100.7/51234 (203.0.113.9/40000)(LOCAL\\alice, 17:Contractors) to inside:10.1.1.5/443 (10.1.1.5/443)(LOCAL\\bob) (carol)',
    'ASA-6-302013: Built outbound UDP connection 4003 for outside:8.8.8.8/53 (8.8.8.8/53) to inside:10.1.1.6/53000 (198.51.100.1/41000) (type 3)',
    'ASA-6-302013: Built inbound TCP connection 4004 for outside:::ffff:198.51.100.7/51234 (::ffff:198.51.100.7/51234) to inside:10.1.1.5/443 (10.1.1.5/443)',
    'ASA-6-302015: Built inbound UDP connection 4005 for my outside:198.51.100.7/5353 (198.51.100.7/5353) to inside:10.1.1.5/5353 (10.1.1.5/5353)',
    'ASA-6-302014: Teardown TCP connection 4006 for outside:198.51.100.7/51234 to inside:10.1.1.5/443 duration 1:02:03 bytes 4567 TCP Reset-O from outside (LOCAL\\dave)',
    'ASA-6-302014: Teardown TCP connection 4007 for outside:198.51.100.7/51234(LOCAL\\erin) to inside:web01/443 duration 0:00:00:01 bytes 0 SYN Timeout',
    'ASA-6-302016: Teardown UDP connection 4008 for outside:198.51.100.7/5060 user1 to inside:10.1.1.5/5060 user2 duration 0:02:00 bytes 100 (frank)',
    'ASA-6-302016: Teardown UDP connection 4009 for outside:198.51.100.7/5060 to inside:10.1.1.5/5060 duration 0:02:00 bytes 100',
    'ASA-6-302014: Teardown TCP connection 4010 for outside:198.51.100.7/51234 to inside:10.1.1.5/443 duration 0:00:09 bytes 1200 TCP FINs (Jörg)',
    'ASA-6-302020: Built inbound ICMP connection for faddr 198.51.100.7/0(LOCAL\\gina) gaddr 203.0.113.5/0 laddr 10.1.1.5/0 (hank) type 8 code 0',
    'ASA-6-302021: Teardown ICMP connection for faddr 2001:db8::7/0 gaddr 2001:db8::5/0 laddr 2001:db8::5/0 type 129 code 0',
    'ASA-6-305011: Built dynamic TCP translation from inside:10.1.1.5/51234 to outside:203.0.113.5/40001',
    'ASA-6-305012: Teardown static UDP translation from inside:10.1.1.5/53(LOCAL\\ivan) to outside:203.0.113.5/53 duration 0:10:00',
    'ASA-3-305006: regular translation creation failed for icmp src inside:10.1.1.5 dst outside:198.51.100.7 (type 8, code 0)',
    'ASA-3-305006: portmap translation creation failed for tcp src inside:10.1.1.5/51234 dst outside:198.51.100.7/443',
    'ASA-4-106023: Deny icmp src outside:198.51.100.7 dst inside:10.1.1.5 (type 8, code 0) by access-group "outside_in" [0x1a2b3c4d, 0x0]',
    'ASA-4-106023: Deny protocol 47 src outside:198.51.100.7(LOCAL\\judy) dst inside:10.1.1.5 by access-group "outside_in" []',
    'ASA-4-106023: Deny tcp src outside:2001:db8::7/51234 dst inside:2001:db8::5/22 by access-group "outside_in" [0x0, 0x0] extra text',
    'ASA-6-106100: access-list inside_in permitted udp inside/10.1.1.5(5353)(LOCAL\\kim) -> outside/224.0.0.251(5353) hit-cnt 12 300-second interval [0x5e6f, 0x0]',
    'ASA-6-106100: access-list inside_in est-allowed tcp inside/10.1.1.5(51234) -> outside/198.51.100.7(443) hit-cnt 1 first hit [a] [0x5e6f, 0x0]',
    "ASA-5-106103: access-list vpn_filter denied tcp for user 'j.doe' outside/198.51.100.70(51000) -> inside/10.20.1.23(3389) hit-cnt 1 first hit [0x9a8b7c6d, 0x0]",
    'ASA-4-106006: Deny inbound UDP from 198.51.100.7/137 to 10.1.1.5/137 due to DNS Response.',
    'ASA-2-106007: Deny inbound UDP from 198.51.100.7/53 to 10.1.1.5/53 on interface outside.',
    'ASA-6-106015: Deny TCP (no connection) from 10.1.1.5/51234 to 198.51.100.7/443 flags FIN ACK  on interface inside',
    'ASA-2-106016: Deny IP spoof from (0.0.0.0) to 10.1.1.255 on interface inside',
    'ASA-4-733100: [  Scanning ] drop rate-1 exceeded. Current burst rate is -1 per second, max configured rate is 10; Current average rate is 5 per second, max configured rate is 5; Cumulative total count is 3009',
    'ASA-4-733101: Subnet 10.1.1.0 is targeted. Current burst rate is 200 per second, max configured rate is 0; Cumulative total count is 6000',
    'ASA-3-313005: No matching connection for ICMP error message: icmp src outside:198.51.100.7 dst inside:10.1.1.5 (type 3, code 3) on outside interface.  Original IP payload: udp src 10.1.1.5/53 dst 198.51.100.7/40000.',
    'ASA-5-722037: Group <GroupPolicy Employee> User <foo.bar@example.com> IP <192.168.0.1> SVC '
    'closing connection: DPD failure.',
    'ASA-6-716059: Group GROUP_1 User USER_1 IP 2001:db8::9, AnyConnect session resumed.',
    'ASA-6-113039: Group <Staff> User IP <198.51.100.7> AnyConnect parent session started.',
    'ASA-4-722051: Group <Staff> User <j.doe> IP <198.51.100.70> IPv4 Address <10.250.0.17> '
    'IPv6 address <::> assigned to session',
    'ASA-6-113005: AAA user authentication Rejected : reason = Invalid password : server = '
    '10.0.1.20 : user = j doe  : user IP = 2001:db8::30',
    'ASA-6-113004: AAA user authorization Successful: server = radius01 , User = alice',
    'ASA-6-605004: Login denied from 198.51.100.73/52000 to outside:203.0.113.1/ssh for user ""',
    'ASA-6-737026: IPAA: Client assigned 10.250.0.17 from local pool',
    'ASA-6-602303: IPSEC: An outbound LAN-to-LAN SA (SPI= 0x0A1B2C3D) between 203.0.113.1 and '
    '198.51.100.126 (user= branch-1) has been created.',
]
SCANNED = [not any(x in m for x in ("my outside", "::ffff:", "for user", "Jörg", "[]", "User IP",
                                   'user ""'))
           for m in MESSAGES]


@pytest.fixture(scope="module")
def grok_only(installed):
    """fwsiem-logs with Cisco lines routed to a copy of fwsiem-cisco-asa that scans no body."""
    bodies = pipeline_bodies(installed.flavor)
    asa = copy.deepcopy(bodies["fwsiem-cisco-asa"])
    header = next(p["script"] for p in asa["processors"]
                  if p.get("script", {}).get("tag") == "parse_cisco_header")
    header["params"]["scan_ids"] = []
    logs = copy.deepcopy(bodies["fwsiem-logs"])
    prepare = next(p["script"] for p in logs["processors"]
                   if p.get("script", {}).get("tag") == "prepare_line")
    prepare["params"]["pipelines"]["cisco_asa"] = GROK_ONLY
    installed.store.put_pipeline(GROK_ONLY, asa)
    installed.store.put_pipeline(GROK_ONLY + "-logs", logs)
    yield GROK_ONLY + "-logs"
    for name in (GROK_ONLY, GROK_ONLY + "-logs"):
        installed.store.request("DELETE", f"/_ingest/pipeline/{name}")


def _documents(engine, pipeline: str) -> list[dict]:
    docs = [line_document((HEADER + m).encode()) for m in MESSAGES]
    out = []
    for result in engine.store.simulate(pipeline, docs):
        source = result["doc"]["_source"]
        source["event"].pop("ingested")
        out.append(source)
    return out


def test_the_scan_and_the_grok_give_the_same_document(installed, grok_only):
    scanned, grokked = _documents(installed, "fwsiem-logs"), _documents(installed, grok_only)
    for message, a, b in zip(MESSAGES, scanned, grokked, strict=True):
        assert a == b, message
        assert "fwsiem_body_unmapped" not in a.get("tags", []), message


def test_the_scan_reads_the_common_bodies_and_leaves_the_others_to_the_grok(installed):
    docs = [line_document((HEADER + m).encode()) for m in MESSAGES]
    results = installed.store.simulate("fwsiem-logs", docs, verbose=True)
    for message, scanned, result in zip(MESSAGES, SCANNED, results, strict=True):
        ran = {p.get("tag") for p in result["processor_results"] if p.get("status") != "skipped"}
        assert ("route_body_family" not in ran) == scanned, message
