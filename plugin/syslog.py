"""A syslog receiver (UDP and TCP) that forwards lines through the shipper in batches."""

from __future__ import annotations

import logging
import queue
import socket
import socketserver
import threading
import time
import uuid

from plugin.lines import line_document
from plugin.shipping import LineBatcher, line_id

log = logging.getLogger(__name__)

MAX_DIGITS = 9  # an octet count longer than this is not a count


def _clean(msg: bytes) -> bytes:
    return msg.rstrip(b"\r\n\x00")


def split_datagram(data: bytes) -> list[bytes]:
    """Messages of one UDP datagram: normally one, several when a sender packs lines.

    >>> split_datagram(b"<14>a\\n<14>b\\n")
    [b'<14>a', b'<14>b']
    >>> split_datagram(b"<14>one\\x00")
    [b'<14>one']
    """
    return [m for m in (_clean(p) for p in data.split(b"\n")) if m]


class StreamFramer:
    """Splits a TCP byte stream into syslog messages.

    Both RFC 6587 framings are accepted, and may alternate: octet counting (``123 <14>1 ...``)
    and non-transparent framing (messages ended by LF, or NUL). A message longer than
    ``max_bytes`` without a terminator is cut there so memory stays bounded.

    >>> f = StreamFramer()
    >>> f.feed(b"11 <14>1 hello<13>old st")
    [b'<14>1 hello']
    >>> f.feed(b"yle\\n5 <1>ab")
    [b'<13>old style', b'<1>ab']
    """

    def __init__(self, max_bytes: int = 4 * 1024 * 1024) -> None:
        self.buf = bytearray()
        self.max_bytes = max_bytes

    def feed(self, data: bytes) -> list[bytes]:
        self.buf.extend(data)
        out: list[bytes] = []
        while self.buf:
            if self.buf[:1].isdigit():
                space = self.buf.find(b" ", 0, MAX_DIGITS + 1)
                if space > 0 and self.buf[:space].isdigit():
                    n = int(self.buf[:space])
                    if len(self.buf) < space + 1 + n:
                        break  # wait for the rest of the counted message
                    msg = bytes(self.buf[space + 1: space + 1 + n])
                    del self.buf[: space + 1 + n]
                    msg = _clean(msg)
                    if msg:
                        out.append(msg)
                    continue
                if space < 0 and len(self.buf) <= MAX_DIGITS and self.buf.isdigit():
                    break  # the count may still be arriving
            end = -1
            for term in (b"\n", b"\x00"):
                i = self.buf.find(term)
                if i >= 0 and (end < 0 or i < end):
                    end = i
            if end < 0:
                if len(self.buf) >= self.max_bytes:
                    out.append(bytes(self.buf[: self.max_bytes]))
                    del self.buf[: self.max_bytes]
                    continue
                break
            msg = _clean(bytes(self.buf[:end]))
            del self.buf[: end + 1]
            if msg:
                out.append(msg)
        return out

    def close(self) -> list[bytes]:
        """What is left when the sender closes the connection."""
        rest = _clean(bytes(self.buf))
        self.buf.clear()
        return [rest] if rest else []


class SyslogReceiver:
    """UDP and TCP listeners feeding one bounded queue, drained in batches by one shipper thread.

    When the queue is full the listeners wait (TCP senders are slowed down; UDP datagrams wait in
    the kernel's buffer). The shipper spools batches to disk while the engine is down and replays
    them when it is back, so a received line is either written or on disk.
    """

    def __init__(self, batcher: LineBatcher, *, host: str = "127.0.0.1", udp_port: int | None = 5514,
                 tcp_port: int | None = 5514, queue_size: int = 20000, flush_interval: float = 1.0,
                 replay_interval: float = 5.0) -> None:
        self.batcher = batcher
        self.host = host
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.flush_interval = flush_interval
        self.replay_interval = replay_interval
        self.run_id = uuid.uuid4().hex
        self._seq = 0
        self._stop = threading.Event()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._udp: socket.socket | None = None
        self._tcp: socketserver.ThreadingTCPServer | None = None
        self.received = 0
        if udp_port is not None:
            self._udp = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            self._udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            self._udp.bind((host, udp_port))
            self._udp.settimeout(0.5)
        if tcp_port is not None:
            self._tcp = _TCPServer((host, tcp_port), _Handler)
            self._tcp.receiver = self

    @property
    def udp_port(self) -> int | None:
        return self._udp.getsockname()[1] if self._udp else None

    @property
    def tcp_port(self) -> int | None:
        return self._tcp.server_address[1] if self._tcp else None

    # lifecycle
    def start(self) -> SyslogReceiver:
        if self._udp:
            self._spawn(self._udp_loop, "syslog-udp")
        if self._tcp:
            self._spawn(self._tcp.serve_forever, "syslog-tcp")
        self._spawn(self._ship_loop, "syslog-ship")
        return self

    def _spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        """Stop listening, ship everything already received, and return."""
        self._closing.set()
        if self._tcp:
            self._tcp.shutdown()
            self._tcp.server_close()  # waits for open connections to end
        for t in self._threads:
            if t.name != "syslog-ship":
                t.join(timeout=30)
        if self._udp:
            self._udp.close()
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)

    # receiving
    def put(self, msg: bytes, peer: str, transport: str) -> None:
        self.queue.put((msg, peer, transport))

    def _udp_loop(self) -> None:
        assert self._udp is not None
        while True:
            try:
                data, addr = self._udp.recvfrom(65535)
            except (TimeoutError, BlockingIOError):
                if self._closing.is_set():
                    return
                continue
            except OSError:
                return
            if self._closing.is_set():
                self._udp.setblocking(False)  # drain what the kernel holds, then stop
            for msg in split_datagram(data):
                self.put(msg, f"{addr[0]}:{addr[1]}", "udp")

    # shipping
    def _ship_loop(self) -> None:
        last_flush = time.monotonic()
        last_replay = 0.0
        shipper = self.batcher.shipper
        while True:
            try:
                msg, peer, transport = self.queue.get(timeout=0.2)
            except queue.Empty:
                msg = None
            if msg is not None:
                self._add(msg, peer, transport)
            now = time.monotonic()
            if now - last_flush >= self.flush_interval or (msg is None and self._stop.is_set()):
                self.batcher.flush()
                last_flush = now
            if shipper.down and now - last_replay >= self.replay_interval:
                last_replay = now
                shipper.replay()
            if msg is None and self._stop.is_set() and self.queue.empty():
                self.batcher.flush()
                return

    def _add(self, msg: bytes, peer: str, _transport: str) -> None:
        self._seq += 1
        self.received += 1
        doc = line_document(msg, module=self.batcher.module)
        doc.setdefault("log", {})["source"] = {"address": peer}
        self.batcher.add_document(doc, line_id(f"syslog:{self.run_id}", self._seq, msg))


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    receiver: SyslogReceiver


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        receiver: SyslogReceiver = self.server.receiver  # type: ignore[attr-defined]
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        framer = StreamFramer(receiver.batcher.settings.max_read_line_bytes)
        self.request.settimeout(1.0)
        while True:
            try:
                data = self.request.recv(65536)
            except TimeoutError:
                if receiver._closing.is_set():
                    break
                continue
            except OSError:
                break
            if not data:
                break
            for msg in framer.feed(data):
                receiver.put(msg, peer, "tcp")
        for msg in framer.close():
            receiver.put(msg, peer, "tcp")
