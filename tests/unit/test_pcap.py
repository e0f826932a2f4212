"""pcap import: packets to bidirectional flows to ECS flow events."""

from __future__ import annotations

import socket

import dpkt
import pytest

from plugin.errors import InputError
from plugin.pcap import community_id, flow_event, is_pcap, pcap_flows

CLIENT, SERVER, DNS = "10.0.0.5", "10.0.0.80", "10.0.0.53"
MAC = b"\x00\x11\x22\x33\x44\x55"


def _frame(src, dst, l4, proto):
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, data=l4)
    ip.len += len(bytes(l4))
    return bytes(dpkt.ethernet.Ethernet(src=MAC, dst=MAC, type=dpkt.ethernet.ETH_TYPE_IP, data=ip))


def _tcp(src, dst, sport, dport, flags, payload=b""):
    return _frame(src, dst, dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, data=payload),
                  dpkt.ip.IP_PROTO_TCP)


def _udp(src, dst, sport, dport, payload):
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen += len(payload)
    return _frame(src, dst, udp, dpkt.ip.IP_PROTO_UDP)


def _write(path, packets):
    with open(path, "wb") as fh:
        writer = dpkt.pcap.Writer(fh)
        for ts, buf in packets:
            writer.writepkt(buf, ts=ts)


@pytest.fixture
def capture(tmp_path):
    S, A, F, P = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN, dpkt.tcp.TH_PUSH
    packets = [
        (100.0, _tcp(CLIENT, SERVER, 40000, 443, S)),
        (100.1, _tcp(SERVER, CLIENT, 443, 40000, S | A)),
        (100.2, _tcp(CLIENT, SERVER, 40000, 443, A)),
        (100.3, _udp(CLIENT, DNS, 5353, 53, b"q" * 30)),
        (100.4, _tcp(CLIENT, SERVER, 40000, 443, P | A, b"x" * 500)),
        (100.5, _udp(DNS, CLIENT, 53, 5353, b"r" * 90)),
        (101.0, _tcp(SERVER, CLIENT, 443, 40000, P | A, b"y" * 1500)),
        (101.5, _tcp(CLIENT, SERVER, 40000, 443, F | A)),
        (102.0, _tcp(SERVER, CLIENT, 443, 40000, F | A)),
    ]
    path = tmp_path / "small.pcap"
    _write(path, packets)
    return str(path), packets


def test_packets_become_bidirectional_flows_with_per_direction_counters(capture):
    path, packets = capture
    flows = {f.proto: f for f in pcap_flows(path)}
    assert set(flows) == {6, 17}
    tcp = flows[6]
    assert (tcp.src, tcp.sport, tcp.dst, tcp.dport) == (CLIENT, 40000, SERVER, 443)
    def sent_by(host):
        return [b for _, b in packets if dpkt.ethernet.Ethernet(b).data.p == 6
                and socket.inet_ntoa(dpkt.ethernet.Ethernet(b).data.src) == host]

    client_pkts, server_pkts = sent_by(CLIENT), sent_by(SERVER)
    assert tcp.packets == [len(client_pkts), len(server_pkts)]
    assert tcp.bytes == [sum(map(len, client_pkts)), sum(map(len, server_pkts))]
    assert (tcp.start, tcp.end) == (100.0, 102.0)
    udp = flows[17]
    assert (udp.src, udp.dst, udp.packets) == (CLIENT, DNS, [1, 1])


def test_flow_event_is_ecs(capture):
    path, _ = capture
    tcp = next(f for f in pcap_flows(path) if f.proto == 6)
    doc = flow_event(tcp, path)
    assert doc["event"]["dataset"] == "fwsiem.pcap"
    assert doc["event"]["category"] == ["network"] and "connection" in doc["event"]["type"]
    assert doc["event"]["duration"] == 2_000_000_000
    assert doc["network"]["transport"] == "tcp" and doc["network"]["iana_number"] == "6"
    assert doc["network"]["type"] == "ipv4"
    assert doc["network"]["packets"] == doc["source"]["packets"] + doc["destination"]["packets"]
    assert doc["network"]["bytes"] == doc["source"]["bytes"] + doc["destination"]["bytes"]
    assert doc["source"]["port"] == 40000 and doc["destination"]["port"] == 443
    assert doc["fwsiem"]["pcap"]["source_tcp_flags"] == "FSPA"
    assert doc["fwsiem"]["pcap"]["destination_tcp_flags"] == "FSPA"
    assert doc["@timestamp"].startswith("1970-01-01T00:01:40")


def test_idle_flows_end_and_a_new_flow_starts(tmp_path):
    path = tmp_path / "idle.pcap"
    _write(path, [(0.0, _udp(CLIENT, DNS, 1000, 53, b"a")),
                  (500.0, _udp(CLIENT, DNS, 1000, 53, b"b"))])
    flows = list(pcap_flows(str(path), idle_timeout=120))
    assert len(flows) == 2 and all(f.packets == [1, 0] for f in flows)


def test_community_id_is_the_same_both_ways_and_differs_by_port():
    a = community_id(CLIENT, SERVER, 6, 40000, 443)
    assert a == community_id(SERVER, CLIENT, 6, 443, 40000)
    assert a != community_id(CLIENT, SERVER, 6, 40001, 443)


def test_non_captures_are_refused_by_name(tmp_path):
    bogus = tmp_path / "not.pcap"
    bogus.write_bytes(b"hello world, not a capture")
    assert not is_pcap(str(bogus))
    with pytest.raises(InputError, match="not.pcap"):
        list(pcap_flows(str(bogus)))
