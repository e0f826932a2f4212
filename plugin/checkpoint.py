"""Per-window checkpoints of `fwsiem run`: window end and model state, saved in one write."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import pickle
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from plugin.errors import ArtifactIntegrityError, ConfigError, EngineUnavailable, FwsiemError

log = logging.getLogger(__name__)
T = TypeVar("T")

STATE_FORMAT = 2
#: Where the key that signs this machine's checkpoints lives unless ``[run] state_key_file``
#: says otherwise.
DEFAULT_KEY_FILE = "~/.config/fwsiem/run-state.key"


def checkpoint_id(partition: int, partitions: int) -> str:
    """One checkpoint document per worker: ``run-checkpoint-<I>-of-<N>``."""
    return f"run-checkpoint-{partition}-of-{partitions}"


def state_key(path: str | os.PathLike = "") -> bytes:
    """The local secret that signs checkpoints and model artifacts; created (32 random bytes,
    mode 0600) if missing.

    The models' state and the registry's artifacts are pickles, and unpickling runs code: they
    are loaded only when their HMAC under this key matches, so write access to the cluster is
    not enough to make fwsiem run anything. The key never leaves this machine.
    """
    file = Path(os.path.expanduser(str(path) or DEFAULT_KEY_FILE))
    try:
        if not file.exists():
            file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(os.urandom(32).hex() + "\n")
        text = file.read_text().strip()
    except FileExistsError:      # another worker created it a moment ago
        text = file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read or create the fwsiem key {file}: {exc.strerror}",
                          hint="set [run] state_key_file (or [models] key_file) to a writable "
                               "path") from None
    if len(text) < 32:
        raise ConfigError(f"the run-state key {file} is too short",
                          hint="delete it to have a new one made (existing checkpoints are then "
                               "refused and start afresh once deleted)")
    if file.stat().st_mode & 0o077:
        log.warning("the run-state key %s is readable by other users; chmod 600 it", file)
    return text.encode()


def sign(raw: bytes, key: bytes) -> str:
    """HMAC-SHA256 of ``raw`` under the local key: what makes a pickle from the cluster ours."""
    return hmac.new(key, raw, hashlib.sha256).hexdigest()


def verify(raw: bytes, mac: str, key: bytes, *, what: str, hint: str) -> None:
    """Raise :class:`ArtifactIntegrityError` unless ``mac`` is ``raw``'s signature under ``key``.

    Called before anything read from the cluster is unpickled.
    """
    if not hmac.compare_digest(sign(raw, key), str(mac or "")):
        raise ArtifactIntegrityError(f"{what} is not signed by this machine's fwsiem key; "
                                     "it is refused and nothing in it was run", hint=hint)


def encode_state(state: Any, key: bytes) -> tuple[str, str]:
    """Pickle, compress and base64 the state; also return its HMAC-SHA256 under ``key``."""
    # level 1: the state is written after every window, and level 6 took twice the time of
    # everything else in the checkpoint for 9% less size
    raw = zlib.compress(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), 1)
    return base64.b64encode(raw).decode("ascii"), sign(raw, key)


def decode_state(blob: str, mac: str, key: bytes, where: str) -> Any:
    raw = base64.b64decode(blob)
    verify(raw, mac, key, what=f"the run state in {where}",
           hint="a worker that moved machines needs its key file ([run] state_key_file); "
                "otherwise the state was changed: delete that document to start the models "
                "afresh")
    return pickle.loads(zlib.decompress(raw))  # noqa: S301 - our own state, HMAC-checked


@dataclass
class Checkpoint:
    """Where a worker is: the end of its last finished window and its models."""

    window_end_ms: int
    window_ms: int
    windows_done: int
    chain: str
    state: Any


def load_checkpoint(store, index: str, partition: int, partitions: int,
                    key: bytes) -> Checkpoint | None:
    """The worker's last checkpoint, or ``None`` when it never finished a window."""
    _id = checkpoint_id(partition, partitions)
    doc = store.get_doc(index, _id) if store.exists(index) else None
    if not doc:
        return None
    run = doc["run"]
    if int(run.get("state_format", 1)) != STATE_FORMAT:
        raise ArtifactIntegrityError(
            f"the run state in {index}/{_id} has format {run.get('state_format', 1)}, this "
            f"fwsiem reads {STATE_FORMAT}",
            hint="delete that document to start the models afresh")
    state = decode_state(run["state"], run.get("state_hmac", ""), key, f"{index}/{_id}")
    return Checkpoint(int(run["window_end_ms"]), int(run["window_ms"]),
                      int(run["windows_done"]), run["chain"], state)


def save_checkpoint(store, index: str, partition: int, partitions: int, cp: Checkpoint,
                    key: bytes) -> None:
    """Save in a single document write, so a kill leaves either the old or the new one."""
    blob, mac = encode_state(cp.state, key)
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
            "state_hmac": mac,
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
    """Retries engine calls through an outage with backoff, logging one line per outage (also
    when several threads wait through the same one).

    ``ready``, if given, is called once when the first call succeeds after an outage, before the
    outage is declared over: a restarted engine answers requests before its shards are
    allocated, and without the wait the next search fails again (HTTP 503) as a second outage.
    """

    def __init__(self, url: str, initial: float = 1.0, maximum: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep,
                 stop: Callable[[], bool] = lambda: False,
                 ready: Callable[[], object] | None = None) -> None:
        self.url = url
        self.ready = ready
        self.initial = initial
        self.maximum = maximum
        self.sleep = sleep
        self.stop = stop
        self.outages = 0
        self._lock = threading.Lock()
        self._down_since: float | None = None

    def __call__(self, what: str, fn: Callable[[], T]) -> T:
        delay = self.initial
        while True:
            try:
                result = fn()
            except EngineUnavailable as exc:
                with self._lock:
                    if self._down_since is None:
                        self._down_since = time.monotonic()
                        self.outages += 1
                        log.warning("engine at %s is unavailable while %s (%s); retrying with "
                                    "backoff until it is back", self.url, what, exc)
                if self.stop():
                    raise
                self.sleep(delay)
                delay = min(self.maximum, delay * 2)
                continue
            if self._down_since is not None:
                with self._lock:
                    if self._down_since is not None:
                        if self.ready is not None:
                            try:
                                self.ready()
                            except FwsiemError:
                                pass  # best effort: down again (the next call retries and
                                # reports it), or a user not allowed the cluster's health
                        log.warning("engine at %s is back after %.0f s; resuming %s", self.url,
                                    time.monotonic() - self._down_since, what)
                        self._down_since = None
            return result
