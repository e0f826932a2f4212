"""The shipper: raw lines from files, stdin or syslog to ``_bulk`` with idempotent ids and a spool."""

from __future__ import annotations

import fcntl
import glob
import gzip
import hashlib
import json
import logging
import os
import re
import select
import stat
import sys
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from plugin.config import Config, parse_duration
from plugin.errors import (
    ConfigError,
    EngineRequestError,
    EngineUnavailable,
    FwsiemError,
    InputError,
)
from plugin.lines import DeclaredHeader, line_document
from plugin.store import CLUSTER_STATUSES, bulk_item_fault, redact_url

log = logging.getLogger(__name__)

STDIN = "-"
STDIN_PATH = "stdin"
GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024
# Lines up to this size go to the pipeline whole (it dead-letters anything over its own limit);
# a longer line is dead-lettered by the shipper itself so that memory stays bounded.
DEFAULT_READ_LINE_BYTES = 4 * 1024 * 1024
SPOOL_SUFFIX = ".ndjson"
SPOOL_VERSION = 2
# An over-long line is skipped (not held) up to this many times the read limit; a source with no
# line end for that long is not a line-oriented log (a disk image, /dev/zero) and is abandoned.
SKIP_LIMIT_FACTOR = 16
# What a pipeline document from the shipper may carry (see plugin.lines.line_document).
PIPELINE_DOC_KEYS = frozenset({"message", "log", "event", "tags", "fwsiem"})
DOC_ID = re.compile(r"[0-9a-f]{40}")


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def line_id(identity: str, offset: int, raw: bytes) -> str:
    """The ``_id`` of one line: its source, its byte offset and its content.

    The same line of the same source always gets the same id, so re-ingesting adds nothing.

    >>> line_id("/var/log/a.log", 0, b"x") == line_id("/var/log/a.log", 0, b"x")
    True
    >>> line_id("/var/log/a.log", 0, b"x") != line_id("/var/log/a.log", 2, b"x")
    True
    """
    h = hashlib.sha1(identity.encode("utf-8", "surrogateescape"))
    h.update(b"\x1f%d\x1f" % offset)
    h.update(raw)
    return h.hexdigest()


# -- sources ----------------------------------------------------------------------------------
def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files named by paths, directories (recursively, sorted) and globs; ``-`` is stdin.

    A path named on its own may be any readable thing (a FIFO, ``/dev/stdin``, a process
    substitution); inside a folder only regular files are taken, and a dangling symlink is kept
    so that reading it reports it. Raises :class:`InputError` naming any argument that matches
    nothing.
    """
    out: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        key = p if p == STDIN else os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            out.append(key)

    for arg in paths:
        if arg == STDIN:
            add(STDIN)
            continue
        matches = sorted(glob.glob(arg, recursive=True)) if glob.has_magic(arg) else [arg]
        found = False
        for m in matches:
            if os.path.isdir(m):
                for root, dirs, files in os.walk(m):
                    dirs.sort()
                    for name in sorted(files):
                        full = os.path.join(root, name)
                        if name.startswith(".") or not (os.path.isfile(full)
                                                        or os.path.islink(full)):
                            continue  # a FIFO or socket in a folder would block or fail
                        add(full)
                        found = True
            elif os.path.exists(m):
                add(m)
                found = True
        if not found:
            raise InputError(f"{arg}: no such file, directory or matching glob",
                             hint="check the path; use - to read standard input")
    return out


def open_source(path: str, *, idle: float | None = None,
                on_idle: Callable[[], None] = lambda: None,
                should_stop: Callable[[], bool] = lambda: False) -> BinaryIO:
    """A binary stream over a file, transparently decompressing gzip (by its magic bytes).

    Standard input, FIFOs and devices are read as they come: when nothing arrives for ``idle``
    seconds ``on_idle`` runs (so a slow writer's lines are shipped), and ``should_stop`` is
    looked at while waiting.
    """
    if path == STDIN:
        fh = sys.stdin.buffer
    else:
        try:
            fh = open(path, "rb")  # noqa: SIM115 - the caller closes it
        except OSError as exc:
            what = "a dangling symlink" if os.path.islink(path) and not os.path.exists(path) \
                else exc.strerror
            raise InputError(f"{path}: cannot be read: {what}") from None
    try:
        regular = stat.S_ISREG(os.fstat(fh.fileno()).st_mode)
    except (OSError, ValueError):  # an in-memory stream stands in for stdin
        regular = True
    if not regular:
        return PipeStream(fh, idle=idle, on_idle=on_idle, should_stop=should_stop)
    if path != STDIN and fh.peek(2)[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


class PipeStream:
    """A pipe, FIFO or device read in chunks as they arrive, with ``readline(limit)``."""

    def __init__(self, fh: BinaryIO, *, idle: float | None, on_idle: Callable[[], None],
                 should_stop: Callable[[], bool]) -> None:
        self.fh = fh
        self.fd = fh.fileno()
        self.idle = idle
        self.on_idle = on_idle
        self.should_stop = should_stop
        self.buf = bytearray()
        self.pos = 0  # where the bytes not yet taken start
        self.eof = False

    def _take(self, n: int) -> bytes:
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def readline(self, limit: int = -1) -> bytes:
        while True:
            held = len(self.buf) - self.pos
            stop = self.pos + limit if 0 < limit < held else len(self.buf)
            end = self.buf.find(b"\n", self.pos, stop)
            if end >= 0:
                return self._take(end + 1 - self.pos)
            if (limit > 0 and held >= limit) or self.eof:
                return self._take(limit if limit > 0 else held)
            if self.should_stop():
                return b""
            ready, _, _ = select.select([self.fd], [], [], self.idle)
            if not ready:
                self.on_idle()
                continue
            data = os.read(self.fd, 1024 * 1024)
            if not data:
                self.eof = True
                continue
            del self.buf[:self.pos]  # drop what was taken before growing the buffer
            self.pos = 0
            self.buf += data

    def close(self) -> None:
        if self.fh is not sys.stdin.buffer:
            self.fh.close()


@dataclass
class Line:
    """One line read from a source: where it starts, its bytes (without the newline)."""

    offset: int
    raw: bytes
    length: int  # bytes consumed including the terminator
    overlong: bool = False


def read_lines(stream: BinaryIO, offset: int = 0, *, max_bytes: int = DEFAULT_READ_LINE_BYTES,
               keep_partial: bool = True) -> Iterator[Line]:
    """Lines of a binary stream with their byte offsets, in bounded memory.

    A line longer than ``max_bytes`` is not held whole: its first ``max_bytes`` bytes are kept and
    it is flagged ``overlong`` (its full length is in ``length``). A line with no end within
    ``SKIP_LIMIT_FACTOR`` times ``max_bytes`` is returned so, then :class:`InputError` says the
    source is not a line-oriented log. With ``keep_partial`` false, a last line without its
    newline is not returned (a writer may still be appending to it).

    >>> import io
    >>> [(ln.offset, ln.raw) for ln in read_lines(io.BytesIO(b"ab\\ncd\\r\\n\\nef"))]
    [(0, b'ab'), (3, b'cd'), (7, b''), (8, b'ef')]
    """
    while True:
        chunk = stream.readline(max_bytes + 1)
        if not chunk:
            return
        length = len(chunk)
        if chunk.endswith(b"\n"):
            raw = chunk[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            yield Line(offset, raw, length)
        elif length > max_bytes:
            head = chunk[:max_bytes]
            ended = False
            while length <= SKIP_LIMIT_FACTOR * max_bytes:  # skip the rest without keeping it
                more = stream.readline(1024 * 1024)
                if not more:
                    ended = True
                    break
                length += len(more)
                if more.endswith(b"\n"):
                    ended = True
                    break
            yield Line(offset, head, length, overlong=True)
            if not ended:
                raise InputError(f"no line end within {length:,} bytes from byte {offset}: not a "
                                 "line-oriented log; the rest was not read")
        else:
            if not keep_partial:
                return
            yield Line(offset, chunk, length)
        offset += length


# -- batches and results ------------------------------------------------------------------------
@dataclass
class Batch:
    """Bulk items ready to send: encoded action and source lines, and where they came from."""

    pipeline: str | None
    items: list[tuple[bytes, bytes]] = field(default_factory=list)
    nbytes: int = 0
    # per source: (first offset, end offset, lines)
    spans: dict[str, list[int]] = field(default_factory=dict)

    def add(self, action: dict, source: dict | bytes, where: str | None = None,
            offset: int | None = None, end: int | None = None) -> None:
        a = _dumps(action)
        s = source if isinstance(source, bytes) else _dumps(source)
        self.items.append((a, s))
        self.nbytes += len(a) + len(s) + 2
        if where is not None and offset is not None:
            span = self.spans.get(where)
            if span is None:
                self.spans[where] = [offset, end if end is not None else offset, 1]
            else:
                span[1] = max(span[1], end if end is not None else offset)
                span[2] += 1

    def __len__(self) -> int:
        return len(self.items)

    def body(self) -> bytes:
        return b"".join(a + b"\n" + s + b"\n" for a, s in self.items)

    def describe(self) -> str:
        if not self.spans:
            return f"{len(self)} documents"
        parts = [f"{path} bytes {lo}-{hi} ({n} lines)" for path, (lo, hi, n) in self.spans.items()]
        return "; ".join(parts)


@dataclass
class IngestStats:
    """Where every line went. ``read + replayed`` equals the sum of the outcomes (indexed,
    already present, dead-lettered, spooled, not spooled)."""

    read: int = 0
    bytes_read: int = 0
    indexed: int = 0
    already_present: int = 0
    dead_lettered: int = 0
    spooled: int = 0
    replayed: int = 0  # documents taken from the spool this run (their outcomes are counted too)
    retried: int = 0
    headers: int = 0  # header lines of files that declare their fields (W3C, Zeek): not events
    by_format: dict[str, int] = field(default_factory=dict)
    unmapped: dict[str, int] = field(default_factory=dict)  # "dataset code" -> events
    not_spooled: int = 0  # neither written nor spooled (the spool could not be written)
    spool_files: list[str] = field(default_factory=list)
    not_written: list[str] = field(default_factory=list)
    not_read: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # sources read in part or not at all
    quarantined: list[str] = field(default_factory=list)  # spool files refused as data
    stopped: str = ""  # why reading stopped before the end (a signal), if it did
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def written(self) -> int:
        return self.indexed + self.already_present + self.dead_lettered

    @property
    def ok(self) -> bool:
        return not self.spooled and not self.not_read and not self.not_spooled and not self.damaged

    def as_dict(self) -> dict:
        keys = ("read", "bytes_read", "indexed", "already_present", "dead_lettered", "headers",
                "spooled", "not_spooled", "replayed", "retried", "by_format", "unmapped",
                "spool_files", "not_written", "not_read", "damaged", "quarantined")
        return {k: getattr(self, k) for k in keys}


# -- the spool ----------------------------------------------------------------------------------
def spool_target(url: str) -> str:
    """The spool folder name of one cluster URL (its host and port, and a hash of the URL).

    >>> spool_target("https://user:pw@es.example:9200/").startswith("es.example_9200-")
    True
    >>> spool_target("https://es.example:9200") == spool_target("https://ES.example:9200/")
    True
    >>> spool_target("https://es.example:9200") != spool_target("http://es.example:9200")
    True
    """
    canonical = redact_url(url).rstrip("/").lower()
    parts = re.sub(r"^[a-z]+://", "", canonical).split("/", 1)[0]
    name = re.sub(r"[^a-z0-9.-]+", "_", parts).strip("_") or "cluster"
    return f"{name}-{hashlib.sha1(canonical.encode()).hexdigest()[:12]}"


class SpoolFileInvalid(FwsiemError):
    """A spool file is not a batch fwsiem wrote for this cluster, index and pipeline."""


class Spool:
    """Batches the engine could not take, one NDJSON file each, replayed oldest first.

    The spool of one cluster is its own folder (``spool_dir/<host>_<port>-<hash of the URL>``),
    so a batch is only ever replayed into the cluster it was meant for. A file holds one header
    line (format version, target, pipeline, what it contains) and the bulk body as it would have
    been sent; it is written owner-only (0600) to a temporary name and renamed, so a crash never
    leaves half a batch that looks whole. Ids are kept, so replaying twice never duplicates.
    Before a file is replayed it is checked as data (:meth:`load`): only the actions fwsiem
    writes, only into the events or dead-letter index, only through the configured pipeline; a
    file that fails is moved to ``quarantine/`` and never blocks the files after it.
    """

    def __init__(self, directory: str | os.PathLike, *, target: str = "",
                 events_index: str = "logs-fwsiem.events-default",
                 deadletter_index: str = "fwsiem-deadletter",
                 pipeline: str = "fwsiem-logs") -> None:
        self.root = Path(os.path.expanduser(str(directory)))
        self.target = target.rstrip("/")
        self.dir = self.root / spool_target(self.target) if self.target else self.root
        self.events_index = events_index
        self.deadletter_index = deadletter_index
        self.pipeline = pipeline
        self._seq = 0

    def write(self, batch: Batch, reason: str = "") -> Path:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._seq += 1
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        final = self.dir / f"batch-{stamp}-{os.getpid()}-{self._seq:06d}{SPOOL_SUFFIX}"
        tmp = final.with_suffix(".tmp")
        header = {"fwsiem_spool": SPOOL_VERSION, "target": self._target_name(),
                  "pipeline": batch.pipeline, "documents": len(batch), "what": batch.describe(),
                  "reason": reason[:500]}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(_dumps(header) + b"\n")
                fh.write(batch.body())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return final

    def _target_name(self) -> str:
        return redact_url(self.target)

    def pending(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob(f"batch-*{SPOOL_SUFFIX}"))

    def strays(self) -> list[Path]:
        """Spool files directly under the spool folder, bound to no cluster (older versions)."""
        if not self.target or not self.root.is_dir():
            return []
        return sorted(self.root.glob(f"batch-*{SPOOL_SUFFIX}"))

    def other_clusters(self) -> list[str]:
        """Folders of other cluster URLs that still hold spooled batches."""
        if not self.target or not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and p != self.dir and any(p.glob(f"batch-*{SPOOL_SUFFIX}")))

    def pending_documents(self) -> int:
        total = 0
        for p in self.pending():
            try:
                with open(p, "rb") as fh:
                    total += int(json.loads(fh.readline()).get("documents", 0))
            except (OSError, ValueError, AttributeError):
                continue
        return total

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move a refused spool file aside, where it is kept but never replayed."""
        folder = self.dir / "quarantine"
        folder.mkdir(mode=0o700, exist_ok=True)
        dest = folder / path.name
        os.replace(path, dest)
        log.warning("spool file %s is not replayed: %s; moved to %s", path, reason, dest)
        return dest

    def load(self, path: Path) -> Batch:
        """The batch of one spool file, checked as data; :class:`SpoolFileInvalid` otherwise."""
        def bad(why: str) -> SpoolFileInvalid:
            return SpoolFileInvalid(f"{path}: {why}")

        try:
            with open(path, "rb") as fh:
                lines = fh.read().split(b"\n")
        except OSError as exc:
            raise bad(f"cannot be read: {exc.strerror}") from None
        if lines and lines[-1] == b"":
            lines.pop()
        try:
            header = json.loads(lines[0]) if lines else None
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("fwsiem_spool") != SPOOL_VERSION:
            raise bad("no fwsiem spool header")
        if self.target and header.get("target") != self._target_name():
            raise bad(f"spooled for {header.get('target')!r}, not for {self._target_name()}")
        pipeline = header.get("pipeline")
        if pipeline not in (None, self.pipeline):
            raise bad(f"names pipeline {pipeline!r}; fwsiem sends through {self.pipeline!r}")
        body = lines[1:]
        if len(body) % 2 or len(body) // 2 != header.get("documents"):
            raise bad("is incomplete: its documents do not match its header")
        batch = Batch(pipeline)
        for i in range(0, len(body), 2):
            action, source = body[i], body[i + 1]
            why = self._refusal(action, source, pipeline)
            if why:
                raise bad(f"document {i // 2 + 1}: {why}")
            batch.items.append((action, source))
            batch.nbytes += len(action) + len(source) + 2
        return batch

    def _refusal(self, action: bytes, source: bytes, pipeline: str | None) -> str | None:
        """Why one action/document pair is not something fwsiem writes, or None."""
        try:
            act, doc = json.loads(action), json.loads(source)
        except ValueError:
            return "not JSON"
        if not isinstance(act, dict) or list(act) != ["create"] or not isinstance(doc, dict):
            return "not a create action with a document"
        op = act["create"]
        if not isinstance(op, dict) or set(op) != {"_index", "_id"}:
            return "the action carries more than an index and an id"
        if not isinstance(op["_id"], str) or not DOC_ID.fullmatch(op["_id"]):
            return "the id is not one fwsiem derives"
        index = op["_index"]
        if pipeline is not None:
            if index != self.events_index:
                return f"a pipeline document for index {index!r}, not {self.events_index!r}"
            if not set(doc) <= PIPELINE_DOC_KEYS or not isinstance(doc.get("message"), str):
                return "not a log line document"
        elif index == self.events_index:
            if (doc.get("event") or {}).get("dataset") != "fwsiem.pcap":
                return "an event that does not come from a pcap"
        elif index != self.deadletter_index:
            return f"index {index!r} is neither the events nor the dead-letter index"
        return None


# -- sending ------------------------------------------------------------------------------------
class Shipper:
    """Sends batches to ``_bulk`` and accounts for every document; spools what cannot be written.

    ``connect`` returns a store (it may raise :class:`EngineUnavailable`); the shipper connects
    lazily so that a cluster that is down at start still lets lines be spooled. Whole-request
    failures are retried with exponential backoff for up to ``retry_wait`` seconds, and so are
    items refused for a reason about the cluster (``plugin.store.bulk_item_fault``: a missing
    pipeline or index, a write block, security, overload); then what is still unwritten is
    spooled and the shipper is "down" until a later :meth:`replay` succeeds. Items refused for a
    reason about the line itself are written to the dead-letter index with the engine's reason;
    a dead letter the cluster will not take sends its line back to be retried and spooled, so no
    line is ever dropped and nothing recurses. :meth:`submit` keeps up to ``in_flight`` `_bulk`
    requests outstanding so that an engine with several cores runs pipelines on all of them;
    ids are idempotent, so the order in which they land does not matter.
    """

    def __init__(self, connect: Callable[[], object], *, events_index: str, deadletter_index: str,
                 spool: Spool, stats: IngestStats | None = None, retry_wait: float = 15.0,
                 probe_interval: float = 5.0, engine_name: str = "the engine",
                 in_flight: int = 1) -> None:
        self._connect = connect
        self.engine_name = engine_name
        self._store = None
        self.events_index = events_index
        self.deadletter_index = deadletter_index
        self.spool = spool
        self.stats = stats or IngestStats()
        self.retry_wait = retry_wait
        self.probe_interval = probe_interval
        self.down_reason: str | None = None
        self._down_at = 0.0
        # Up to ``in_flight`` `_bulk` requests outstanding; their results are accounted in the
        # order they were sent, on this thread (threads only wait for the engine's answer).
        self.in_flight = max(1, int(in_flight))
        self._pool: ThreadPoolExecutor | None = None
        self._sent: deque[tuple[Batch, Future]] = deque()

    # engine state
    @property
    def down(self) -> bool:
        return self.down_reason is not None

    @property
    def store(self):
        if self._store is None:
            self._store = self._connect()
        return self._store

    def store_name(self) -> str:
        return self._store.safe_url if self._store is not None else self.engine_name

    def _mark_down(self, reason: str) -> None:
        if self.down_reason is None:
            log.warning("engine cannot take data: %s; spooling to %s", reason, self.spool.dir)
        self.down_reason = reason
        self._down_at = time.monotonic()

    # public API
    def send(self, batch: Batch) -> None:
        """Write a batch, or spool it when the engine cannot take it, before returning."""
        self.submit(batch)
        self.drain()

    def submit(self, batch: Batch) -> None:
        """Start writing a batch while up to ``in_flight - 1`` earlier ones are still in flight.

        Memory stays bounded: with ``in_flight`` requests outstanding, this waits for the oldest
        and accounts for it (written, dead-lettered, retried or spooled) before sending. Every
        batch is accounted for once :meth:`drain` returns.
        """
        if not batch.items:
            return
        if self.in_flight == 1 or self.down:
            self.drain()
            self._send(batch, None)
            return
        try:
            _ = self.store  # connect here, not on a request thread
        except EngineUnavailable:
            self.drain()
            self._send(batch, None)
            return
        while len(self._sent) >= self.in_flight:
            self._send(*self._sent.popleft())
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="fwsiem-bulk")
        self._sent.append((batch, self._pool.submit(self._bulk, batch.body(), batch.pipeline)))

    def drain(self) -> None:
        """Wait for every batch in flight and account for it."""
        while self._sent:
            self._send(*self._sent.popleft())

    def _send(self, batch: Batch, sent: Future | None) -> None:
        """Account for a batch whose first request is ``sent`` (or send it now)."""
        if sent is None and self.down and time.monotonic() - self._down_at < self.probe_interval:
            self._spool(batch, self.down_reason or "engine unavailable")
            return
        budget = self.retry_wait if not self.down else 0.0
        try:
            self._write(batch, budget, first=sent)
        except EngineUnavailable as exc:
            self._mark_down(str(exc))
            self._spool(batch, str(exc))
            return
        if self.down:
            self.down_reason = None
            log.warning("engine is back; replaying the spool")
            self.replay()

    def replay(self) -> int:
        """Send spooled batches, oldest first; stop at the first the engine cannot take.

        Returns the number of documents replayed. A file another process is replaying is skipped;
        a file that is not a batch fwsiem wrote for this cluster is quarantined and skipped.
        """
        done = 0
        for stray in self.spool.strays():
            log.warning("spool file %s is bound to no cluster and is not replayed; move it into "
                        "the folder of the cluster it was meant for (%s for %s)", stray,
                        self.spool.dir, self.store_name())
        others = self.spool.other_clusters()
        if others:
            log.warning("%s also holds batches spooled for other cluster URLs (%s); they are "
                        "replayed only by a run with that --url", self.spool.root,
                        ", ".join(others))
        for path in self.spool.pending():
            try:
                fh = open(path, "rb")  # noqa: SIM115 - held open for its lock
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                if not path.exists():  # replayed and removed by someone else meanwhile
                    continue
                try:
                    batch = self.spool.load(path)
                    self._write(batch, self.retry_wait if not self.down else 0.0, replay=True)
                except SpoolFileInvalid as exc:
                    self.stats.quarantined.append(str(self.spool.quarantine(path, str(exc))))
                    continue
                except EngineUnavailable as exc:
                    self._mark_down(str(exc))
                    return done
                self.down_reason = None
                path.unlink()
                done += len(batch)
                self._replayed(str(path), len(batch))
            finally:
                fh.close()
        return done

    def _replayed(self, path: str, n: int) -> None:
        if path in self.stats.spool_files:  # spooled earlier in this run: written after all
            self.stats.spool_files.remove(path)
            self.stats.spooled -= n
            self.stats.not_written = [w for w in self.stats.not_written if not w.endswith(path)]
        else:
            self.stats.replayed += n

    # internals
    def _spool(self, batch: Batch, reason: str) -> None:
        try:
            path = self.spool.write(batch, reason)
        except OSError as exc:  # an unwritable folder, a full disk: counted and named, never lost
            self.stats.not_spooled += len(batch)
            why = exc.strerror or str(exc)
            self.stats.not_written.append(
                f"{batch.describe()} -> NOT SPOOLED either ({self.spool.dir}: {why})")
            log.error("cannot spool %d documents to %s: %s; they are not written", len(batch),
                      self.spool.dir, why)
            return
        self.stats.spooled += len(batch)
        self.stats.spool_files.append(str(path))
        self.stats.not_written.append(f"{batch.describe()} -> spooled to {path}")

    def _bulk(self, body: bytes, pipeline: str | None) -> dict:
        params = {"pipeline": pipeline} if pipeline else None
        return self.store.request("POST", "/_bulk", body=body, params=params)

    def _write(self, batch: Batch, budget: float, replay: bool = False,
               first: Future | None = None) -> None:
        """Write every item of a batch or raise EngineUnavailable (nothing counted twice).

        ``first`` is the batch's first `_bulk` request, already on its way. On
        EngineUnavailable, ``batch.items`` holds exactly the items still unwritten.
        """
        pending = list(batch.items)
        deadline = time.monotonic() + budget
        delay = 0.5
        mapped: dict[str, bool] = {}
        while pending:
            try:
                if first is not None:
                    resp, first = first.result(), None
                else:
                    body = b"".join(a + b"\n" + s + b"\n" for a, s in pending)
                    resp = self._bulk(body, batch.pipeline)
            except EngineUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    batch.items = pending  # spool only what is still unwritten
                    raise
                log.info("bulk failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            except EngineRequestError as exc:
                # The whole request was refused: nothing was written. Credentials, permissions
                # or a missing endpoint are about the cluster; anything else about a spool file's
                # content is about the file.
                batch.items = pending
                if replay and getattr(exc, "status", None) not in CLUSTER_STATUSES:
                    raise SpoolFileInvalid(f"the engine refused it: {exc}") from None
                raise EngineUnavailable(f"{exc}") from None
            retry: list[tuple[bytes, bytes]] = []
            refused: list[tuple[tuple[bytes, bytes], dict]] = []
            why = ""
            for item, sent in zip(resp.get("items", []), pending, strict=True):
                info = next(iter(item.values()))
                status = int(info.get("status", 0))
                if status in (200, 201):
                    if str(info.get("_index", "")).startswith(self.deadletter_index):
                        self.stats.dead_lettered += 1
                    else:
                        self.stats.indexed += 1
                    continue
                if status == 409:
                    self.stats.already_present += 1
                    continue
                fault = bulk_item_fault(status, info.get("error"))
                if fault == "mapping":
                    index = str(info.get("_index", ""))
                    if index not in mapped:
                        mapped[index] = self._has_fwsiem_mappings(index)
                    fault = "line" if mapped[index] else "cluster"
                if fault == "line":
                    refused.append((sent, info))
                else:
                    retry.append(sent)
                    why = why or _item_reason(info)
            if refused:
                retry += self._dead_letter_refused(refused, batch.pipeline)
                why = why or "the dead-letter index refused the dead letters"
            if retry:
                self.stats.retried += len(retry)
                if time.monotonic() + delay > deadline:
                    batch.items = retry
                    raise EngineUnavailable(
                        f"{self.store.safe_url} could not take {len(retry)} documents for "
                        f"{budget:.0f}s: {why}")
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
            pending = retry

    def _has_fwsiem_mappings(self, index: str) -> bool:
        """Whether an index maps fields as fwsiem's template does (else a mapping refusal is
        about how the index was made, not about the line)."""
        from plugin.setup import template_mappings

        name = "fwsiem-deadletter" if self.deadletter_index in index else "fwsiem-events"
        expected = _field_types(template_mappings(name).get("properties", {}))
        try:
            got = self.store.request("GET", f"/{index}/_mapping", ignore=(404,)) or {}
        except FwsiemError:
            return False
        for body in got.values():
            actual = _field_types((body.get("mappings") or {}).get("properties", {}))
            common = expected.keys() & actual.keys()
            if not common or any(expected[f] != actual[f] for f in common):
                log.warning("%s does not carry fwsiem's mappings; documents it refuses are "
                            "spooled, not dead-lettered (run `fwsiem setup` and roll the index "
                            "over)", index)
                return False
        return bool(got)

    def _dead_letter_refused(self, refused: list, pipeline: str | None) -> list:
        """Documents refused for a reason about the line become dead letters with the reason.

        Returns the refused documents whose dead letter was not written, for the caller to retry
        and then spool: a dead-letter index that refuses writes never loses a line.
        """
        letters = Batch(None)
        now = datetime.now(timezone.utc).isoformat()
        for (action, source), info in refused:
            reason = _item_reason(info)
            doc = json.loads(source)
            act = json.loads(action)
            op = next(iter(act.values()))
            letters.add({"create": {"_index": self.deadletter_index, "_id": op.get("_id")}},
                        dead_letter_document(doc, reason, "indexing_error",
                                             pipeline=pipeline or "", processor="index",
                                             timestamp=now))
        try:
            resp = self._bulk(letters.body(), None)
        except FwsiemError:
            return [sent for sent, _ in refused]
        back = []
        for item, (sent, _) in zip(resp.get("items", []), refused, strict=True):
            status = int(next(iter(item.values())).get("status", 0))
            if status in (200, 201):
                self.stats.dead_lettered += 1
            elif status == 409:
                self.stats.already_present += 1
            else:
                back.append(sent)
        return back


def _item_reason(info: dict) -> str:
    """The engine's reason for refusing one bulk item, as one line."""
    err = info.get("error") or {}
    reason = err.get("reason", str(err)) if isinstance(err, dict) else str(err)
    etype = err.get("type", "") if isinstance(err, dict) else ""
    return f"{etype}: {reason}".strip(": ")


def _field_types(properties: dict, prefix: str = "") -> dict[str, str]:
    """Leaf field name -> mapping type of a mapping's ``properties``."""
    out: dict[str, str] = {}
    for name, spec in properties.items():
        if not isinstance(spec, dict):
            continue
        if "properties" in spec:
            out.update(_field_types(spec["properties"], f"{prefix}{name}."))
        elif "type" in spec:
            out[f"{prefix}{name}"] = spec["type"]
    return out


def dead_letter_document(doc: dict, message: str, error_type: str, *, pipeline: str,
                         processor: str, timestamp: str | None = None) -> dict:
    """A dead letter for a shipper document (the pipeline's input or an ECS event)."""
    event = dict(doc.get("event") or {})
    original = doc.get("message", event.get("original"))
    if original is None:
        original = json.dumps(doc, ensure_ascii=False)[:65536]
    out: dict = {
        "@timestamp": timestamp or datetime.now(timezone.utc).isoformat(),
        "event": {"original": original, "kind": "pipeline_error"},
        "error": {"message": message[:8000], "type": error_type},
        "fwsiem": {"deadletter": {"pipeline": pipeline, "processor": processor,
                                  "processor_tag": "shipper"}},
    }
    if event.get("module"):
        out["event"]["module"] = event["module"]
    if doc.get("log"):
        out["log"] = {k: v for k, v in doc["log"].items() if k in ("file", "offset")}
    if doc.get("tags"):
        out["tags"] = doc["tags"]
    b64 = (doc.get("fwsiem") or {}).get("original_b64")
    if b64:
        out["fwsiem"]["original_b64"] = b64
    return out


# -- files to batches ---------------------------------------------------------------------------
@dataclass
class ShipSettings:
    """What ``fwsiem ingest`` reads from configuration (with defaults when a key is missing)."""

    events_index: str = "logs-fwsiem.events-default"
    deadletter_index: str = "fwsiem-deadletter"
    pipeline: str = "fwsiem-logs"
    spool_dir: str = ".fwsiem/spool"
    batch_docs: int = 2000
    batch_bytes: int = DEFAULT_BATCH_BYTES
    max_line_bytes: int = 65536
    max_read_line_bytes: int = DEFAULT_READ_LINE_BYTES
    retry_wait: float = 15.0
    poll_interval: float = 0.5
    flush_interval: float = 1.0
    in_flight: int = 3

    @classmethod
    def from_config(cls, config: Config) -> ShipSettings:
        indices = config.section("indices")
        engine = config.section("engine")
        ingest = config.section("ingest")
        return cls(
            events_index=indices.get("events", cls.events_index),
            deadletter_index=indices.get("deadletter", cls.deadletter_index),
            pipeline=ingest.get("pipeline", cls.pipeline),
            spool_dir=engine.get("spool_dir", cls.spool_dir),
            batch_docs=int(engine.get("bulk_chunk", cls.batch_docs)),
            batch_bytes=int(ingest.get("batch_bytes", cls.batch_bytes)),
            max_line_bytes=int(ingest.get("max_line_bytes", cls.max_line_bytes)),
            max_read_line_bytes=int(ingest.get("max_read_line_bytes", cls.max_read_line_bytes)),
            retry_wait=parse_duration(ingest.get("retry_wait", cls.retry_wait)),
            poll_interval=parse_duration(ingest.get("poll_interval", cls.poll_interval)),
            flush_interval=parse_duration(ingest.get("flush_interval", cls.flush_interval)),
            in_flight=_in_flight(ingest.get("in_flight", cls.in_flight)),
        )


def configured_shipper(config: Config, connect: Callable[[], object]) -> tuple[ShipSettings, Shipper]:
    """The shipping settings and a shipper as the configuration describes them."""
    settings = ShipSettings.from_config(config)
    spool = Spool(settings.spool_dir, target=config.engine.url,
                  events_index=settings.events_index, deadletter_index=settings.deadletter_index,
                  pipeline=settings.pipeline)
    shipper = Shipper(connect, events_index=settings.events_index,
                      deadletter_index=settings.deadletter_index, spool=spool,
                      stats=IngestStats(), retry_wait=settings.retry_wait,
                      engine_name=redact_url(config.engine.url), in_flight=settings.in_flight)
    return settings, shipper


def _in_flight(value: object) -> int:
    """``[ingest] in_flight``: how many `_bulk` requests a shipper keeps outstanding (>= 1)."""
    try:
        n = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ConfigError(f"[ingest] in_flight = {value!r} is not a whole number of 1 or more",
                          hint="set it to 1 (one request at a time) or more, e.g. 3")
    return n


class LineBatcher:
    """Turns lines into bounded batches of pipeline documents and hands them to a shipper."""

    def __init__(self, shipper: Shipper, settings: ShipSettings, module: str | None = None,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.shipper = shipper
        self.settings = settings
        self.module = module
        self.on_batch = on_batch
        self.batch = Batch(settings.pipeline)
        self.direct = Batch(None)  # shipper-made dead letters (overlong lines)

    def add_line(self, line: Line, path: str, identity: str,
                 header: DeclaredHeader | None = None) -> None:
        """One line of a source; ``header`` reads the source's declared fields (W3C, Zeek)."""
        stats = self.shipper.stats
        stats.read += 1
        stats.bytes_read += line.length
        if header is not None and not line.overlong and header.consume(line.raw):
            stats.headers += 1
            return
        if line.overlong:
            self._add_overlong(line, path, identity)
        else:
            doc = line_document(line.raw, path=path, offset=line.offset, module=self.module)
            if header is not None:
                header.annotate(doc)
            self.batch.add({"create": {"_index": self.settings.events_index,
                                       "_id": line_id(identity, line.offset, line.raw)}},
                           doc, path, line.offset, line.offset + line.length)
        if (len(self.batch) >= self.settings.batch_docs
                or self.batch.nbytes >= self.settings.batch_bytes):
            self._submit()

    def add_document(self, doc: dict, doc_id: str, where: str = "syslog") -> None:
        """A ready pipeline document (e.g. from the syslog receiver)."""
        self.shipper.stats.read += 1
        self.batch.add({"create": {"_index": self.settings.events_index, "_id": doc_id}}, doc)
        if (len(self.batch) >= self.settings.batch_docs
                or self.batch.nbytes >= self.settings.batch_bytes):
            self._submit()

    def _add_overlong(self, line: Line, path: str, identity: str) -> None:
        head = line.raw[: self.settings.max_line_bytes]
        doc = line_document(head, path=path, offset=line.offset, module=self.module)
        msg = (f"line of {line.length} bytes is longer than the shipper's read limit of "
               f"{self.settings.max_read_line_bytes} bytes; its first {len(head)} bytes are kept")
        letter = dead_letter_document(doc, msg, "rejected_line", pipeline="shipper",
                                      processor="read")
        ident = line_id(identity, line.offset, head + b"\x1f%d" % line.length)
        self.direct.add({"create": {"_index": self.settings.deadletter_index, "_id": ident}},
                        letter, path, line.offset, line.offset + line.length)

    def _submit(self) -> None:
        for b in (self.batch, self.direct):
            if b.items:
                n = len(b)
                self.shipper.submit(b)
                if self.on_batch:
                    self.on_batch(n)
        self.batch = Batch(self.settings.pipeline)
        self.direct = Batch(None)

    def flush(self) -> None:
        """Send what is batched and wait until every batch in flight is accounted for."""
        self._submit()
        self.shipper.drain()


def ingest_paths(paths: list[str], batcher: LineBatcher, *, stop_when_down: bool = True,
                 should_stop: Callable[[], bool] = lambda: False) -> None:
    """Read every source to its end through the batcher.

    With ``stop_when_down`` (files that can be read again), reading stops once the engine cannot
    take data: what was read is spooled and the unread rest of each source is reported. A source
    that cannot be read, or is damaged part-way (a truncated gzip), keeps what was read and is
    reported in ``damaged``; the next sources are read. When ``should_stop`` turns true (SIGTERM)
    what was read is shipped and the rest is reported as not read. Standard input, FIFOs and
    devices are shipped at least every ``flush_interval`` seconds while their writer is slow.
    """
    shipper = batcher.shipper
    stats = shipper.stats
    for i, path in enumerate(paths):
        shown = STDIN_PATH if path == STDIN else path
        if should_stop():
            stats.not_read.extend(STDIN_PATH if p == STDIN else p for p in paths[i:])
            break
        try:
            stream = open_source(path, idle=batcher.settings.flush_interval,
                                 on_idle=batcher.flush, should_stop=should_stop)
        except InputError as exc:
            stats.damaged.append(str(exc))
            continue
        end = 0
        header = DeclaredHeader()
        try:
            for line in read_lines(stream, max_bytes=batcher.settings.max_read_line_bytes):
                batcher.add_line(line, shown, shown, header)
                end = line.offset + line.length
                if (stop_when_down and shipper.down and path != STDIN) or should_stop():
                    batcher.flush()
                    stats.not_read.append(f"{shown} from byte {end}")
                    stats.not_read.extend(STDIN_PATH if p == STDIN else p
                                          for p in paths[i + 1:])
                    return
            if should_stop():  # stopped while waiting for a slow writer
                batcher.flush()
                stats.not_read.append(f"{shown} from byte {end}")
                stats.not_read.extend(STDIN_PATH if p == STDIN else p for p in paths[i + 1:])
                return
        except InputError as exc:
            stats.damaged.append(str(exc) if str(exc).startswith(shown) else f"{shown}: {exc}")
        except (EOFError, zlib.error, OSError) as exc:  # gzip.BadGzipFile is an OSError
            why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            stats.damaged.append(f"{shown}: damaged after byte {end} of its content ({why}); "
                                 "the lines before were read, the rest is lost")
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
    batcher.flush()


# -- following files across rotation -------------------------------------------------------------
@dataclass
class _Tail:
    path: str
    stream: BinaryIO | None = None
    inode: tuple[int, int] | None = None
    offset: int = 0
    header: DeclaredHeader = field(default_factory=DeclaredHeader)


def follow_paths(paths: list[str], batcher: LineBatcher, *, from_start: bool = True,
                 should_stop: Callable[[], bool] = lambda: False) -> None:
    """Read files and keep reading what is appended, across rotation and truncation.

    A rotated file (the path now names another inode) is read to its end before the new file is
    opened from its start; a truncated file (size below the offset read) is read again from 0.
    Partial batches are flushed whenever the files are idle.
    """
    tails = [_Tail(p) for p in paths if p != STDIN]
    for t in tails:
        _reopen(t, at_end=not from_start)
    settings = batcher.settings
    while not should_stop():
        progressed = False
        for t in tails:
            progressed |= _drain(t, batcher)
            try:
                st = os.stat(t.path)
            except FileNotFoundError:
                continue
            ident = (st.st_dev, st.st_ino)
            if t.inode is not None and ident != t.inode:
                progressed |= _drain(t, batcher, final=True)  # the rotated file's last lines
                _reopen(t, at_end=False)
                progressed = True
            elif t.stream is None or st.st_size < t.offset:
                _reopen(t, at_end=False)
                progressed = True
        if not progressed:
            batcher.flush()
            if batcher.shipper.down:
                batcher.shipper.replay()
            time.sleep(settings.poll_interval)
    for t in tails:
        if t.stream:
            t.stream.close()
    batcher.flush()


def _reopen(t: _Tail, at_end: bool) -> None:
    if t.stream:
        t.stream.close()
        t.stream = None
    try:
        fh = open(t.path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        t.inode = None
        t.offset = 0
        return
    st = os.fstat(fh.fileno())
    t.inode = (st.st_dev, st.st_ino)
    t.offset = st.st_size if at_end else 0
    t.header = DeclaredHeader()  # a rotated or truncated file writes its header again
    fh.seek(t.offset)
    t.stream = fh


def _drain(t: _Tail, batcher: LineBatcher, final: bool = False) -> bool:
    if t.stream is None:
        return False
    got = False
    t.stream.seek(t.offset)
    for line in read_lines(t.stream, t.offset, max_bytes=batcher.settings.max_read_line_bytes,
                           keep_partial=final):
        batcher.add_line(line, t.path, t.path, t.header)
        t.offset = line.offset + line.length
        got = True
    return got


# -- the summary --------------------------------------------------------------------------------
def format_counts(store, settings: ShipSettings, paths: Iterable[str], since: str,
                  tag: str | None = None) -> dict[str, int]:
    """Events written from these sources since ``since``, by ``event.dataset`` (one aggregation);
    with ``tag``, only the events carrying it, by ``"<event.dataset> <event.code>"``."""
    shown = [STDIN_PATH if p == STDIN else p for p in paths]
    store.refresh(settings.events_index)
    counts: dict[str, int] = {}
    for i in range(0, len(shown), 10000):
        query = {"bool": {"filter": [
            {"terms": {"log.file.path": shown[i:i + 10000]}},
            {"range": {"event.ingested": {"gte": since}}},
        ] + ([{"term": {"tags": tag}}] if tag else [])}}
        aggs = {"f": {"terms": {"field": "event.dataset", "size": 100, "missing": "(none)"}}}
        if tag:
            aggs["f"]["aggs"] = {"c": {"terms": {"field": "event.code", "size": 100,
                                                 "missing": "(none)"}}}
        res = store.aggregate(settings.events_index, aggs, query=query)
        for b in res.get("f", {}).get("buckets", []):
            for key, n in ([(f"{b['key']} {c['key']}", c["doc_count"]) for c in b["c"]["buckets"]]
                           if tag else [(b["key"], b["doc_count"])]):
                counts[key] = counts.get(key, 0) + int(n)
    return counts


def summary_lines(stats: IngestStats) -> list[str]:
    """The end-of-run summary a user reads."""
    out = [
        f"lines read:       {stats.read:,} ({stats.bytes_read:,} bytes)",
        f"indexed:          {stats.indexed:,}",
        f"already present:  {stats.already_present:,}",
        f"dead-lettered:    {stats.dead_lettered:,}",
    ]
    if stats.headers:
        out.append(f"header lines:     {stats.headers:,} (field declarations, not events)")
    if stats.replayed:
        out.append(f"replayed from spool: {stats.replayed:,} (included above)")
    if stats.by_format:
        out.append("indexed by format: " + ", ".join(
            f"{k} {v:,}" for k, v in sorted(stats.by_format.items(), key=lambda kv: -kv[1])))
    if stats.unmapped:
        out.append("indexed, message not mapped (tag fwsiem_body_unmapped), by format and code: "
                   + ", ".join(f"{k} {v:,}" for k, v in sorted(stats.unmapped.items(),
                                                               key=lambda kv: -kv[1])))
    if stats.spooled or stats.not_spooled:
        parts = []
        if stats.spooled:
            parts.append(f"{stats.spooled:,} spooled, replayed on the next run")
        if stats.not_spooled:
            parts.append(f"{stats.not_spooled:,} NOT SPOOLED either: the spool could not be "
                         "written")
        out.append(f"NOT WRITTEN:      {stats.spooled + stats.not_spooled:,} ({'; '.join(parts)})")
        out.extend(f"  {w}" for w in stats.not_written[:10])
        if len(stats.not_written) > 10:
            out.append(f"  ... and {len(stats.not_written) - 10} more batches")
    if stats.not_read:
        out.append("NOT READ (run again to continue; nothing will be duplicated):")
        out.extend(f"  {w}" for w in stats.not_read)
    if stats.damaged:
        out.append("DAMAGED OR UNREADABLE (what could be read was shipped):")
        out.extend(f"  {w}" for w in stats.damaged)
    if stats.quarantined:
        out.append("SPOOL FILES QUARANTINED (not replayed; see the warnings above):")
        out.extend(f"  {w}" for w in stats.quarantined)
    return out


class NotWritten(FwsiemError):
    """The engine could not take everything; what was not written is named and spooled."""

    exit_code = 3


def check_written(stats: IngestStats, engine: str) -> None:
    """Raise the error that says what was not written or read, if anything."""
    if stats.ok:
        return
    parts = []
    if stats.not_spooled:
        parts.append(f"{stats.not_spooled:,} lines neither written nor spooled "
                     "(see NOT WRITTEN)")
    if stats.spooled:
        parts.append(f"{stats.spooled:,} lines spooled ({len(stats.spool_files)} files under "
                     f"{os.path.dirname(stats.spool_files[0]) if stats.spool_files else '?'})")
    if stats.not_read:
        parts.append("not read: " + ", ".join(stats.not_read[:5])
                     + (" ..." if len(stats.not_read) > 5 else ""))
    if stats.damaged:
        parts.append(f"{len(stats.damaged)} source(s) damaged or unreadable: "
                     + "; ".join(stats.damaged[:3]) + (" ..." if len(stats.damaged) > 3 else ""))
    if stats.spooled or stats.not_spooled or (stats.not_read and not stats.stopped):
        raise NotWritten(f"{engine} could not take the data: " + "; ".join(parts),
                         hint="run the same command again when the engine is back; spooled lines "
                              "are replayed first and nothing is duplicated")
    if stats.not_read:
        raise NotWritten(f"{stats.stopped}: " + "; ".join(parts),
                         hint="run the same command again to continue; nothing is duplicated")
    raise InputError("; ".join(parts), hint="what could be read was shipped; the summary names "
                                            "each source")
