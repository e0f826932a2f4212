"""Packet captures to bidirectional flow events in ECS (``event.dataset: fwsiem.pcap``)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import socket
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

import dpkt

from plugin.errors import InputError
from plugin.store import doc_id

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",
               b"\x0a\x0d\x0d\x0a"}
TRANSPORTS = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 58: "ipv6-icmp",
              132: "sctp"}
# Flags in the order tcpdump prints them, with their bits.
TCP_FLAGS = (("F", 0x01), ("S", 0x02), ("R", 0x04), ("P", 0x08), ("A", 0x10), ("U", 0x20),
             ("E", 0x40), ("C", 0x80))
PORTED = (6, 17, 132)
ICMP_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17, 10: 9, 9: 10}
ICMP6_PAIRS = {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131, 131: 130,
               144: 145, 145: 144}


def is_pcap(path: str) -> bool:
    """Whether a regular file starts like a pcap or pcapng capture (a FIFO is never opened
    here: what this read would take from it would be lost to the line reader)."""
    try:
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as fh:
            return fh.read(4) in PCAP_MAGICS
    except OSError:
        return False


class _ShortReads:
    """A file whose reads note when they return less than asked and more than nothing, the
    mark of a capture cut in the middle of a packet."""

    def __init__(self, fh) -> None:
        self._fh = fh
        self.short = False

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        if n is not None and n > 0 and 0 < len(data) < n:
            self.short = True
        return data

    def __getattr__(self, name: str):
        return getattr(self._fh, name)


def flag_letters(bits: int) -> str:
    """TCP flag bits as letters.

    >>> flag_letters(0x12), flag_letters(0x11), flag_letters(0)
    ('SA', 'FA', '')
    """
    return "".join(letter for letter, bit in TCP_FLAGS if bits & bit)


def community_id(src: str, dst: str, proto: int, sport: int = 0, dport: int = 0,
                 seed: int = 0) -> str:
    """Community ID v1 of a flow (the same for both directions).

    >>> community_id("128.232.110.120", "66.35.250.204", 6, 34855, 80)
    '1:LQU9qZlK+B5F3KDmev6m5PMibrg='
    >>> community_id("66.35.250.204", "128.232.110.120", 6, 80, 34855)
    '1:LQU9qZlK+B5F3KDmev6m5PMibrg='
    """
    a, b = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    one_way = False
    if proto in (1, 58):  # ICMP: the type and its counterpart (or the code) stand in for ports
        pairs = ICMP6_PAIRS if proto == 58 else ICMP_PAIRS
        if sport in pairs:
            dport = pairs[sport]
        else:
            one_way = True
    if not one_way and (a, sport) > (b, dport):
        a, b, sport, dport = b, a, dport, sport
    data = struct.pack("!H", seed) + a + b + struct.pack("!BB", proto, 0)
    if proto in PORTED or proto in (1, 58):
        data += struct.pack("!HH", sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


@dataclass
class Flow:
    """One bidirectional flow: the initiator is the sender of the first packet seen."""

    proto: int
    src: str
    sport: int
    dst: str
    dport: int
    start: float
    end: float
    first_packet: int
    packets: list[int] = field(default_factory=lambda: [0, 0])
    bytes: list[int] = field(default_factory=lambda: [0, 0])
    flags: list[int] = field(default_factory=lambda: [0, 0])
    icmp: tuple[int, int] | None = None

    def add(self, direction: int, ts: float, size: int, flags: int = 0) -> None:
        self.packets[direction] += 1
        self.bytes[direction] += size
        self.flags[direction] |= flags
        self.end = max(self.end, ts)

    @property
    def closed(self) -> bool:
        """A TCP flow both sides finished, or one side reset."""
        if self.proto != 6:
            return False
        fin = self.flags[0] & 0x01 and self.flags[1] & 0x01
        return bool(fin or (self.flags[0] | self.flags[1]) & 0x04)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def flow_event(flow: Flow, path: str) -> dict:
    """The ECS flow event for one flow."""
    version = ipaddress.ip_address(flow.src).version
    transport = TRANSPORTS.get(flow.proto, str(flow.proto))
    src: dict = {"ip": flow.src, "packets": flow.packets[0], "bytes": flow.bytes[0]}
    dst: dict = {"ip": flow.dst, "packets": flow.packets[1], "bytes": flow.bytes[1]}
    if flow.proto in PORTED:
        src["port"], dst["port"] = flow.sport, flow.dport
    event = {
        "kind": "event", "category": ["network"], "type": ["connection"],
        "dataset": "fwsiem.pcap", "module": "fwsiem", "action": "flow",
        "start": _iso(flow.start), "end": _iso(flow.end),
        "duration": int(round((flow.end - flow.start) * 1e9)),
    }
    doc: dict = {
        "@timestamp": _iso(flow.start),
        "event": event,
        "source": src,
        "destination": dst,
        "network": {
            "transport": transport, "iana_number": str(flow.proto),
            "type": f"ipv{version}", "packets": sum(flow.packets), "bytes": sum(flow.bytes),
            "community_id": community_id(flow.src, flow.dst, flow.proto,
                                         *(flow.icmp or (flow.sport, flow.dport))),
        },
        "log": {"file": {"path": path}},
        "fwsiem": {"pcap": {}},
    }
    if flow.proto == 6:
        doc["fwsiem"]["pcap"] = {
            "tcp_flags": flag_letters(flow.flags[0] | flow.flags[1]),
            "source_tcp_flags": flag_letters(flow.flags[0]),
            "destination_tcp_flags": flag_letters(flow.flags[1]),
        }
    if flow.icmp is not None:
        doc["fwsiem"]["pcap"]["icmp"] = {"type": flow.icmp[0], "code": flow.icmp[1]}
    if not doc["fwsiem"]["pcap"]:
        del doc["fwsiem"]
    return doc


def _ip_layer(linktype: int, buf: bytes):
    """The IPv4/IPv6 packet inside a frame of the capture's link type, or None."""
    try:
        if linktype == dpkt.pcap.DLT_EN10MB:
            frame = dpkt.ethernet.Ethernet(buf)
            ip = frame.data
        elif linktype in (dpkt.pcap.DLT_RAW, 12, 14, 228, 229):
            ip = dpkt.ip.IP(buf) if buf[:1] and buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
        elif linktype == dpkt.pcap.DLT_LINUX_SLL:
            ip = dpkt.sll.SLL(buf).data
        elif linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
            ip = dpkt.loopback.Loopback(buf).data
        else:
            return None
    except (dpkt.UnpackError, IndexError, struct.error):
        return None
    return ip if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) else None


def _reader(fh):
    head = fh.read(4)
    fh.seek(0)
    if head == b"\x0a\x0d\x0d\x0a":
        return dpkt.pcapng.Reader(fh)
    return dpkt.pcap.Reader(fh)


@dataclass
class PcapStats:
    packets: int = 0
    skipped: int = 0  # not IP (ARP, STP ...) or truncated: not part of any flow
    flows: int = 0


def pcap_flows(path: str, *, idle_timeout: float = 120.0, max_active: int = 100_000,
               stats: PcapStats | None = None) -> Iterator[Flow]:
    """Bidirectional flows of a capture, each yielded once it ends.

    A flow ends when it has been idle ``idle_timeout`` seconds (capture time), when a TCP flow
    is closed (both FINs, or a RST), or at the end of the capture. At most ``max_active`` flows
    are held; beyond that the least recently seen one is ended, so memory stays bounded.
    """
    stats = stats or PcapStats()
    active: OrderedDict[tuple, Flow] = OrderedDict()
    try:
        fh = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from None
    truncated = False
    with fh:
        watched = _ShortReads(fh)
        try:
            reader = _reader(watched)
        except (ValueError, dpkt.UnpackError) as exc:
            raise InputError(f"{path}: not a pcap or pcapng capture ({exc})") from None
        linktype = reader.datalink()
        last_sweep = None
        packets = iter(reader)
        index = -1
        while True:
            try:
                ts, buf = next(packets)
            except StopIteration:
                break
            except (dpkt.UnpackError, ValueError, struct.error):
                truncated = True
                break
            index += 1
            stats.packets += 1
            ts = float(ts)
            ip = _ip_layer(linktype, buf)
            if ip is None:
                stats.skipped += 1
                continue
            v6 = isinstance(ip, dpkt.ip6.IP6)
            family = socket.AF_INET6 if v6 else socket.AF_INET
            src, dst = socket.inet_ntop(family, ip.src), socket.inet_ntop(family, ip.dst)
            proto = ip.nxt if v6 else ip.p
            l4 = ip.data
            sport = dport = flags = 0
            icmp = None
            if proto in PORTED and hasattr(l4, "sport"):
                sport, dport = l4.sport, l4.dport
                if proto == 6:
                    flags = l4.flags
            elif proto in (1, 58) and hasattr(l4, "type"):
                icmp = (l4.type, l4.code)
            size = len(buf)
            fwd = (proto, src, sport, dst, dport)
            rev = (proto, dst, dport, src, sport)
            for k in (fwd, rev):  # a packet after the idle timeout starts a new flow
                if k in active and ts - active[k].end >= idle_timeout:
                    stats.flows += 1
                    yield active.pop(k)
            if fwd in active:
                key, direction = fwd, 0
            elif rev in active:
                key, direction = rev, 1
            else:
                key, direction = fwd, 0
                active[key] = Flow(proto, src, sport, dst, dport, ts, ts, index, icmp=icmp)
            flow = active[key]
            flow.add(direction, ts, size, flags)
            active.move_to_end(key)
            if flow.closed:
                stats.flows += 1
                yield active.pop(key)
            if len(active) > max_active:
                stats.flows += 1
                yield active.popitem(last=False)[1]
            if last_sweep is None or ts - last_sweep >= 1.0:
                last_sweep = ts
                while active:
                    oldest = next(iter(active.values()))
                    if ts - oldest.end < idle_timeout:
                        break
                    stats.flows += 1
                    yield active.popitem(last=False)[1]
        truncated = truncated or watched.short
    for flow in active.values():
        stats.flows += 1
        yield flow
    if truncated:
        raise InputError(f"{path}: the capture is truncated after packet {stats.packets}; the "
                         f"flows of the packets before it were read")


def flow_id(path: str, flow: Flow) -> str:
    return doc_id("pcap", path, flow.proto, flow.src, flow.sport, flow.dst, flow.dport,
                  f"{flow.start:.6f}", flow.first_packet)


def ingest_pcap(path: str, shipper, settings, *, on_batch: Callable[[int], None] | None = None,
                idle_timeout: float = 120.0) -> PcapStats:
    """Flows of one capture, indexed directly (already ECS, no pipeline) through the shipper."""
    from plugin.shipping import Batch

    pstats = PcapStats()
    indexed_before = shipper.stats.indexed
    batch = Batch(None)
    try:
        for flow in pcap_flows(path, idle_timeout=idle_timeout, stats=pstats):
            doc = flow_event(flow, path)
            batch.add({"create": {"_index": settings.events_index, "_id": flow_id(path, flow)}},
                      doc, path, flow.first_packet, flow.first_packet)
            if len(batch) >= settings.batch_docs:
                _send(shipper, batch, on_batch)
                batch = Batch(None)
                if shipper.down:
                    shipper.stats.not_read.append(f"{path} after packet {flow.first_packet}")
                    return pstats
    except InputError as exc:  # unreadable or truncated: what was read is still shipped
        shipper.stats.damaged.append(str(exc))
    _send(shipper, batch, on_batch)
    new = shipper.stats.indexed - indexed_before
    shipper.stats.by_format["fwsiem.pcap"] = shipper.stats.by_format.get("fwsiem.pcap", 0) + new
    return pstats


def _send(shipper, batch, on_batch) -> None:
    if not batch.items:
        return
    shipper.stats.read += len(batch)
    shipper.send(batch)
    if on_batch:
        on_batch(len(batch))
