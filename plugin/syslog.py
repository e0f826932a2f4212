"""A syslog receiver (UDP and TCP) that forwards lines through the shipper in batches."""

from __future__ import annotations

import logging
import queue
import selectors
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from plugin.errors import ConfigError
from plugin.lines import line_document
from plugin.shipping import LineBatcher, line_id

log = logging.getLogger(__name__)

MAX_DIGITS = 9  # an octet count longer than this is not a count
DEFAULT_MAX_CONNECTIONS = 512
IDLE_ON_STOP = 1.0  # on stop, a connection silent this long (seconds) has sent everything


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


def bind_socket(host: str, port: int, kind: int) -> socket.socket:
    """A socket bound to ``host:port`` (an address or a name), or a one-line :class:`ConfigError`."""
    proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, 0, kind, 0, socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host!r}: the address does not resolve "
                          f"({exc.strerror})", hint="give an IP address or a resolvable name "
                                                    "with --host or [listen] host") from None
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind(addr)
        if kind == socket.SOCK_STREAM:
            sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {proto} {host}:{port}: {exc.strerror}",
                          hint=f"another program may hold the port; choose another with "
                               f"--{proto}-port, or -1 to turn {proto.upper()} off") from None
    return sock


@dataclass
class _Conn:
    peer: str
    framer: StreamFramer
    last: float = field(default_factory=time.monotonic)


class SyslogReceiver:
    """UDP and TCP listeners feeding one bounded queue, drained in batches by one shipper thread.

    TCP connections are served by one thread with a selector, at most ``max_connections`` at a
    time; further clients wait in the kernel's accept backlog until one closes, so a burst of
    senders costs no thread and no memory beyond the cap. When the queue is full the listeners
    wait (TCP senders are slowed down; UDP datagrams wait in the kernel's buffer). The shipper
    spools batches to disk while the engine is down and replays them when it is back, so a
    received line is either written, on disk, or counted as NOT WRITTEN in the summary.
    """

    def __init__(self, batcher: LineBatcher, *, host: str = "127.0.0.1", udp_port: int | None = 5514,
                 tcp_port: int | None = 5514, queue_size: int = 20000, flush_interval: float = 1.0,
                 replay_interval: float = 5.0,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.batcher = batcher
        self.host = host
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.flush_interval = flush_interval
        self.replay_interval = replay_interval
        self.max_connections = max_connections
        self.run_id = uuid.uuid4().hex
        self._seq = 0
        self._stop = threading.Event()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self.received = 0
        self.connections = 0
        self.ship_errors = 0
        if udp_port is not None:
            self._udp = bind_socket(host, udp_port, socket.SOCK_DGRAM)
            self._udp.settimeout(0.5)
        if tcp_port is not None:
            try:
                self._tcp = bind_socket(host, tcp_port, socket.SOCK_STREAM)
            except ConfigError:
                if self._udp:
                    self._udp.close()
                raise
            self._tcp.setblocking(False)

    @property
    def udp_port(self) -> int | None:
        return self._udp.getsockname()[1] if self._udp else None

    @property
    def tcp_port(self) -> int | None:
        return self._tcp.getsockname()[1] if self._tcp else None

    # lifecycle
    def start(self) -> SyslogReceiver:
        if self._udp:
            self._spawn(self._udp_loop, "syslog-udp")
        if self._tcp:
            self._spawn(self._tcp_loop, "syslog-tcp")
        self._spawn(self._ship_loop, "syslog-ship")
        return self

    def _spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        """Stop listening, ship everything already received, and return."""
        self._closing.set()
        for t in self._threads:
            if t.name != "syslog-ship":
                t.join(timeout=60)
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

    def _tcp_loop(self) -> None:
        """Accept and read every TCP connection from one thread, with a cap on connections."""
        assert self._tcp is not None
        listener = self._tcp
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ, None)
        accepting = True
        max_bytes = self.batcher.settings.max_read_line_bytes
        try:
            while True:
                closing = self._closing.is_set()
                if closing and accepting:
                    # connections the kernel has already completed hold senders' lines too:
                    # take them (beyond the cap) before the listener closes and resets them
                    while self._accept(sel, listener, max_bytes):
                        pass
                    if listener in (k.fileobj for k in sel.get_map().values()):
                        sel.unregister(listener)
                    listener.close()
                    accepting = False
                conns = [k for k in sel.get_map().values() if k.data is not None]
                if closing:
                    now = time.monotonic()
                    for key in conns:  # senders silent for a while have sent everything
                        if now - key.data.last >= IDLE_ON_STOP:
                            self._close(sel, key)
                    if not any(k.data is not None for k in sel.get_map().values()):
                        return
                for key, _ in sel.select(timeout=0.2):
                    if key.data is None:
                        self._accept(sel, listener, max_bytes)
                    else:
                        self._read(sel, key)
                if accepting:
                    full = self.connections >= self.max_connections
                    registered = listener in (k.fileobj for k in sel.get_map().values())
                    if full and registered:  # later clients wait in the kernel's backlog
                        sel.unregister(listener)
                    elif not full and not registered:
                        sel.register(listener, selectors.EVENT_READ, None)
        finally:
            for key in [k for k in sel.get_map().values() if k.data is not None]:
                self._close(sel, key)
            sel.close()

    def _accept(self, sel, listener: socket.socket, max_bytes: int) -> bool:
        """Take one waiting connection; False when none waits."""
        try:
            conn, addr = listener.accept()
        except (BlockingIOError, InterruptedError):
            return False
        conn.setblocking(False)
        self.connections += 1
        sel.register(conn, selectors.EVENT_READ, _Conn(f"{addr[0]}:{addr[1]}",
                                                        StreamFramer(max_bytes)))
        return True

    def _read(self, sel, key) -> None:
        state: _Conn = key.data
        try:
            data = key.fileobj.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(sel, key)
            return
        state.last = time.monotonic()
        for msg in state.framer.feed(data):
            self.put(msg, state.peer, "tcp")

    def _close(self, sel, key) -> None:
        state: _Conn = key.data
        for msg in state.framer.close():
            self.put(msg, state.peer, "tcp")
        sel.unregister(key.fileobj)
        key.fileobj.close()
        self.connections -= 1

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
            try:
                if msg is not None:
                    self._add(msg, peer, transport)
                now = time.monotonic()
                if now - last_flush >= self.flush_interval or (msg is None and self._stop.is_set()):
                    self.batcher.flush()
                    last_flush = now
                if shipper.down and now - last_replay >= self.replay_interval:
                    last_replay = now
                    shipper.replay()
            except Exception:  # the thread never dies: what it could not ship is in the stats
                self.ship_errors += 1
                log.exception("shipping failed; the receiver keeps running")
                time.sleep(0.5)
            if msg is None and self._stop.is_set() and self.queue.empty():
                try:
                    self.batcher.flush()
                except Exception:
                    self.ship_errors += 1
                    log.exception("the last flush failed")
                return

    def _add(self, msg: bytes, peer: str, _transport: str) -> None:
        self._seq += 1
        self.received += 1
        doc = line_document(msg, module=self.batcher.module)
        doc.setdefault("log", {})["source"] = {"address": peer}
        self.batcher.add_document(doc, line_id(f"syslog:{self.run_id}", self._seq, msg))
