"""The syslog receiver: RFC 6587 framing, UDP and TCP, nothing lost on stop."""

from __future__ import annotations

import socket
import time

from plugin.shipping import LineBatcher, ShipSettings
from plugin.syslog import StreamFramer, SyslogReceiver, split_datagram


def test_octet_counted_messages_split_across_reads():
    msg = b"<14>1 2024-03-04T00:00:00Z esx-01 FIREWALL-PKTLOG - - - INET match PASS"
    framed = b"%d %s" % (len(msg), msg)
    framer = StreamFramer()
    got = []
    for i in range(0, len(framed) * 2, 7):
        got += framer.feed((framed * 2)[i:i + 7])
    assert got == [msg, msg]


def test_lf_and_nul_framing_and_a_message_that_starts_with_digits():
    framer = StreamFramer()
    assert framer.feed(b"<13>a\n<13>b\x002024-03-04T00:00:00Z host x\n") == [
        b"<13>a", b"<13>b", b"2024-03-04T00:00:00Z host x"]
    assert framer.feed(b"no terminator yet") == []
    assert framer.close() == [b"no terminator yet"]


def test_unterminated_stream_is_cut_at_the_limit_not_held_forever():
    framer = StreamFramer(max_bytes=10)
    assert framer.feed(b"<1>" + b"x" * 25) == [b"<1>xxxxxxx", b"x" * 10]


def test_a_datagram_with_several_lines_gives_several_messages():
    assert split_datagram(b"<14>one\r\n<14>two\n\n") == [b"<14>one", b"<14>two"]


def test_every_message_received_over_udp_and_tcp_is_shipped_once(collecting_shipper):
    shipper = collecting_shipper
    batcher = LineBatcher(shipper, ShipSettings(batch_docs=50), module="nsx")
    receiver = SyslogReceiver(batcher, udp_port=0, tcp_port=0, queue_size=10).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(100):
        udp.sendto(b"<14>udp %d\n" % i, ("127.0.0.1", receiver.udp_port))
    with socket.create_connection(("127.0.0.1", receiver.tcp_port)) as tcp:
        for i in range(100):
            m = b"<14>1 tcp %d" % i
            tcp.sendall(b"%d %s" % (len(m), m) if i % 2 else m + b"\n")
    # Datagrams still in the kernel's buffer when the socket closes are gone for any receiver;
    # give a busy machine time to read them before stopping.
    deadline = time.monotonic() + 30
    while receiver.received < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    receiver.stop()
    messages = sorted(d["message"] for d in shipper.sent)
    expected = sorted([f"<14>udp {i}" for i in range(100)] + [f"<14>1 tcp {i}" for i in range(100)])
    assert messages == expected
    assert len(shipper.ids) == 200
    assert all(d["event"]["module"] == "nsx" and d["log"]["source"]["address"] for d in shipper.sent)


def test_a_connection_still_in_the_accept_backlog_on_stop_is_read_not_reset(collecting_shipper):
    shipper = collecting_shipper
    batcher = LineBatcher(shipper, ShipSettings(batch_docs=50), module="nsx")
    receiver = SyslogReceiver(batcher, udp_port=None, tcp_port=0, queue_size=10,
                              max_connections=1).start()
    # one silent sender holds the only slot, so the next one waits in the kernel's backlog
    holder = socket.create_connection(("127.0.0.1", receiver.tcp_port))
    deadline = time.monotonic() + 30
    while receiver.connections < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    with socket.create_connection(("127.0.0.1", receiver.tcp_port)) as waiting:
        waiting.sendall(b"".join(b"<14>backlog %d\n" % i for i in range(20)))
    receiver.stop()
    holder.close()
    assert sorted(d["message"] for d in shipper.sent) == sorted(
        f"<14>backlog {i}" for i in range(20))
