"""Per-window checkpoints of `fwsiem run`: window end and model state, saved in one write."""

from __future__ import annotations

import base64
import hashlib
import logging
import pickle
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from plugin.errors import ArtifactIntegrityError, EngineUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

STATE_FORMAT = 1


def checkpoint_id(partition: int, partitions: int) -> str:
    """One checkpoint document per worker: ``run-checkpoint-<I>-of-<N>``."""
    return f"run-checkpoint-{partition}-of-{partitions}"


def encode_state(state: Any) -> tuple[str, str]:
    """Pickle, compress and base64 the state; also return its sha256 (hex)."""
    raw = zlib.compress(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), 6)
    return base64.b64encode(raw).decode("ascii"), hashlib.sha256(raw).hexdigest()


def decode_state(blob: str, sha256: str, where: str) -> Any:
    raw = base64.b64decode(blob)
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise ArtifactIntegrityError(
            f"the run state in {where} does not match its sha256",
            hint="it was changed or truncated; delete that document to start the models afresh")
    return pickle.loads(zlib.decompress(raw))  # noqa: S301 - our own state, hash-checked


@dataclass
class Checkpoint:
    """Where a worker is: the end of its last finished window and its models."""

    window_end_ms: int
    window_ms: int
    windows_done: int
    chain: str
    state: Any


def load_checkpoint(store, index: str, partition: int, partitions: int) -> Checkpoint | None:
    """The worker's last checkpoint, or ``None`` when it never finished a window."""
    _id = checkpoint_id(partition, partitions)
    doc = store.get_doc(index, _id) if store.exists(index) else None
    if not doc:
        return None
    run = doc["run"]
    state = decode_state(run["state"], run["state_sha256"], f"{index}/{_id}")
    return Checkpoint(int(run["window_end_ms"]), int(run["window_ms"]),
                      int(run["windows_done"]), run["chain"], state)


def save_checkpoint(store, index: str, partition: int, partitions: int, cp: Checkpoint) -> None:
    """Save in a single document write, so a kill leaves either the old or the new one."""
    blob, sha = encode_state(cp.state)
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    doc = {
        "@timestamp": now,
        "kind": "run-checkpoint",
        "run": {
            "partition": f"{partition}/{partitions}",
            "window_end_ms": cp.window_end_ms,
            "window_end": datetime.fromtimestamp(cp.window_end_ms / 1000, tz=timezone.utc)
            .isoformat().replace("+00:00", "Z"),
            "window_ms": cp.window_ms,
            "windows_done": cp.windows_done,
            "chain": cp.chain,
            "state_format": STATE_FORMAT,
            "state_sha256": sha,
            "state_bytes": len(blob),
            "state": blob,
        },
    }
    store.index_doc(index, doc, id=checkpoint_id(partition, partitions))


def next_chain(chain: str, start_ms: int, end_ms: int) -> str:
    """A running digest of every window processed, in order: equal chains, equal histories.

    >>> next_chain("", 0, 60000) == next_chain("", 0, 60000) != next_chain("", 60000, 120000)
    True
    """
    return hashlib.sha1(f"{chain}|{start_ms}-{end_ms}".encode()).hexdigest()


class OutageRetry:
    """Retries engine calls through an outage with backoff, logging one line per outage."""

    def __init__(self, url: str, initial: float = 1.0, maximum: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep,
                 stop: Callable[[], bool] = lambda: False) -> None:
        self.url = url
        self.initial = initial
        self.maximum = maximum
        self.sleep = sleep
        self.stop = stop
        self.outages = 0

    def __call__(self, what: str, fn: Callable[[], T]) -> T:
        delay, began = self.initial, None
        while True:
            try:
                result = fn()
            except EngineUnavailable as exc:
                if began is None:
                    began = time.monotonic()
                    self.outages += 1
                    log.warning("engine at %s is unavailable while %s (%s); retrying with backoff "
                                "until it is back", self.url, what, exc)
                if self.stop():
                    raise
                self.sleep(delay)
                delay = min(self.maximum, delay * 2)
                continue
            if began is not None:
                log.warning("engine at %s is back after %.0f s; resuming %s", self.url,
                            time.monotonic() - began, what)
            return result
