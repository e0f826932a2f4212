"""Partitioned `fwsiem run` workers on one engine: they move window by window together."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from plugin.checkpoint import next_chain
from plugin.config import load_config
from plugin.setup import run_setup
from plugin.windows import WindowRunner

pytestmark = pytest.mark.timeout(600)

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
MIN = 60_000


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def events(windows: int) -> list[dict]:
    out = []
    for w in range(windows):
        for i in range(12):
            for port in (443, 53):
                out.append({"@timestamp": iso(T0 + w * MIN + i * 1000 + port),
                            "event": {"kind": "event", "type": ["connection", "allowed"]},
                            "source": {"ip": f"10.1.0.{i}", "port": 40000 + i},
                            "destination": {"ip": f"10.2.0.{i % 3}", "port": port},
                            "network": {"transport": "tcp", "packets": 6, "bytes": 700},
                            "rule": {"id": "1001"}, "observer": {"hostname": "esx-01"}})
    return out


@pytest.fixture
def partitioned(os_engine):
    store = os_engine.store
    run_setup(store, os_engine.config(), only={"template"})
    prefix = f"parttest-{uuid.uuid4().hex[:8]}"
    env = {"FWSIEM_URL": os_engine.url,
           "FWSIEM_INDICES_EVENTS_PATTERN": f"logs-fwsiem.{prefix}-events",
           "FWSIEM_INDICES_ANOMALIES": f"{prefix}-anomalies",
           "FWSIEM_INDICES_STATE": f"{prefix}-state",
           "FWSIEM_INDICES_INCIDENTS": f"{prefix}-incidents",
           "FWSIEM_RUN_LAG": "0s", "FWSIEM_RUN_AUTOENCODER": "false"}
    config = load_config(env=env)
    res = store.bulk([{"_op_type": "create", "_index": config.index("events_pattern"),
                       "_source": d} for d in events(4)], refresh=True)
    assert not res.failed
    yield store, config
    for name in (f"logs-fwsiem.{prefix}-events", f"{prefix}-*"):
        store.delete_index(name)


def test_workers_following_live_data_that_start_a_window_apart_begin_together(partitioned):
    store, config = partitioned
    stopped = threading.Event()
    a, b = (WindowRunner(store, config, i, 2, stop=stopped.is_set) for i in range(2))
    # started a moment apart across the end of a window: A's first window is one before B's
    [first_a] = next(a.batches(None, None, now=lambda: (T0 + 2 * MIN + 500) / 1000))
    [first_b] = next(b.batches(None, None, now=lambda: (T0 + 3 * MIN + 500) / 1000))
    assert (first_a[0], first_b[0]) == (T0 + MIN, T0 + 2 * MIN)
    written = {}

    def run(name, runner, windows):
        written[name] = [runner.process(start, end) for start, end in windows]

    workers = [threading.Thread(target=run, args=("a", a, [first_a, first_b])),
               threading.Thread(target=run, args=("b", b, [first_b]))]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    stopped.set()   # lets a worker that still waits give up, so the test ends either way
    for t in workers:
        t.join(timeout=60)
    # A drops the window B never saw and starts afresh with B's first window: both finish it
    assert written["a"][0] == [] and len(written["a"]) == 2 and len(written["b"]) == 1
    assert a.cp is not None and b.cp is not None
    assert (a.cp.windows_done, b.cp.windows_done) == (1, 1)
    assert a.cp.chain == b.cp.chain == next_chain("", T0 + 2 * MIN, T0 + 3 * MIN)
