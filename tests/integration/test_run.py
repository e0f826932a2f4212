"""`fwsiem run` on real engines: anomalies found, exactly-once windows across a kill, outages."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
from click.testing import CliRunner

from plugin.checkpoint import load_checkpoint, state_key
from plugin.cli import cli
from plugin.config import load_config
from plugin.store import Store
from plugin.windows import WindowRunner

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
MIN = 60_000
CLIENTS = [f"10.1.0.{i}" for i in range(1, 21)]
SERVICES = [("10.2.0.1", 443), ("10.2.0.2", 443), ("10.2.0.3", 53), ("10.2.0.4", 22)]
SCANNER = "10.9.9.9"
SCAN_WINDOW = 14


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def event(ts: int, sip: str, dip: str, dport: int, *, denied=False, packets=6, rule="1001",
          host="esx-01") -> dict:
    return {
        "@timestamp": iso(ts), "event": {"kind": "event", "category": ["network"],
                                        "type": ["connection", "denied" if denied else "allowed"],
                                        "action": "drop" if denied else "pass",
                                        "dataset": "fwsiem.nsx_dfw", "module": "fwsiem"},
        "source": {"ip": sip, "port": 40000 + ts % 20000, "bytes": packets * 120,
                   "packets": packets},
        "destination": {"ip": dip, "port": dport},
        "network": {"transport": "tcp", "packets": packets, "bytes": packets * 120,
                    "type": "ipv4"},
        "rule": {"id": "9999" if denied else rule}, "observer": {"hostname": host},
    }


def synthetic_events(windows: int, seed: int = 7) -> list[dict]:
    """Quiet, regular traffic, and one vertical port scan (denied) in window SCAN_WINDOW."""
    rng = random.Random(seed)
    out = []
    for w in range(windows):
        base = T0 + w * MIN
        for c in CLIENTS:
            for _ in range(rng.randint(2, 5)):
                dip, port = rng.choice(SERVICES)
                out.append(event(base + rng.randrange(MIN), c, dip, port,
                                 host=f"esx-0{1 + CLIENTS.index(c) % 2}"))
        if w == SCAN_WINDOW:
            for port in range(1, 301):
                out.append(event(base + rng.randrange(MIN), SCANNER, "10.2.0.1", port,
                                 denied=True, packets=1))
    return out


def make_env(url: str, prefix: str, warmup: int = 8) -> dict:
    return {
        "FWSIEM_URL": url,
        "FWSIEM_INDICES_EVENTS_PATTERN": f"logs-fwsiem.{prefix}-events",
        "FWSIEM_INDICES_ANOMALIES": f"{prefix}-anomalies",
        "FWSIEM_INDICES_STATE": f"{prefix}-state",
        "FWSIEM_INDICES_INCIDENTS": f"{prefix}-incidents",
        "FWSIEM_RUN_WARMUP_WINDOWS": str(warmup),
        "FWSIEM_RUN_LAG": "0s",
        "FWSIEM_RUN_POLL_INTERVAL": "1s",
    }


def load_events(store: Store, index: str, docs: list[dict]) -> None:
    res = store.bulk([{"_op_type": "create", "_index": index, "_source": d} for d in docs],
                     refresh=True)
    assert not res.failed


def anomaly_sources(store: Store, index: str) -> dict:
    store.refresh(index)
    hits = store.search(index, {"size": 1000, "query": {"match_all": {}}})["hits"]["hits"]
    return {h["_id"]: h["_source"] for h in hits}


def make_dataset(eng):
    from plugin.setup import run_setup

    # The shipped templates (pattern logs-fwsiem.*) give the events their ECS types.
    run_setup(eng.store, eng.config(), only={"template"})
    prefix = f"runtest-{uuid.uuid4().hex[:8]}"
    config = load_config(env=make_env(eng.url, prefix))
    load_events(eng.store, config.index("events_pattern"), synthetic_events(24))
    return {"prefix": prefix, "url": eng.url, "store": eng.store}


@pytest.fixture
def dataset(engine):
    data = make_dataset(engine)
    yield data
    engine.store.delete_index(f"logs-fwsiem.{data['prefix']}-events")


@pytest.fixture
def os_dataset(os_engine):
    data = make_dataset(os_engine)
    yield data
    os_engine.store.delete_index(f"logs-fwsiem.{data['prefix']}-events")


def run_cli(env: dict, *args: str):
    return CliRunner().invoke(cli, ["run", *args], env=env, catch_exceptions=False)


def test_backfill_reports_the_scanner_and_only_once_per_window(dataset):
    prefix = dataset["prefix"] + "-a"
    env = make_env(dataset["url"], dataset["prefix"])
    env.update(FWSIEM_INDICES_ANOMALIES=f"{prefix}-anomalies", FWSIEM_INDICES_STATE=f"{prefix}-state")
    store = dataset["store"]
    try:
        res = run_cli(env, "--from", iso(T0), "--to", iso(T0 + 24 * MIN))
        assert res.exit_code == 0, res.output
        docs = anomaly_sources(store, f"{prefix}-anomalies")
        scanner = [d for d in docs.values() if d["entity"]["value"] == SCANNER]
        assert scanner, docs
        assert scanner[0]["window"]["start"] == iso(T0 + SCAN_WINDOW * MIN)
        assert scanner[0]["anomaly"]["severity"] in ("medium", "high", "critical")
        assert scanner[0]["contributions"][0]["feature"] in ("dst_ports", "events", "denied_share",
                                                            "denied")
        assert SCANNER in scanner[0]["drilldown"]["kql"]
        hits = store.count(f"logs-fwsiem.{dataset['prefix']}-events",
                           scanner[0]["drilldown"]["query"])
        assert hits == 300
        # a second run over the same range adds nothing: windows are checkpointed
        res = run_cli(env, "--from", iso(T0), "--to", iso(T0 + 24 * MIN))
        assert res.exit_code == 0
        assert anomaly_sources(store, f"{prefix}-anomalies") == docs
    finally:
        store.delete_index(f"{prefix}-*")


def test_feedback_suppresses_the_entity_and_pattern(dataset):
    prefix = dataset["prefix"] + "-f"
    env = make_env(dataset["url"], dataset["prefix"])
    env.update(FWSIEM_INDICES_ANOMALIES=f"{prefix}-anomalies", FWSIEM_INDICES_STATE=f"{prefix}-state")
    store = dataset["store"]
    try:
        assert run_cli(env, "--from", iso(T0), "--to", iso(T0 + 24 * MIN)).exit_code == 0
        docs = anomaly_sources(store, f"{prefix}-anomalies")
        [(aid, doc)] = [(k, d) for k, d in docs.items() if d["entity"]["value"] == SCANNER]
        res = CliRunner().invoke(cli, ["feedback", aid, "--false-positive", "--ttl", "7d"],
                                 env=env, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        marked = store.get_doc(f"{prefix}-anomalies", aid)
        assert marked["feedback"]["false_positive"] is True
        # re-process the same history from scratch: the marked pattern is not reported again
        store.delete_index(f"{prefix}-state")
        for other in docs:
            if other != aid:
                store.delete_doc(f"{prefix}-anomalies", other)
        assert run_cli(env, "--from", iso(T0), "--to", iso(T0 + 24 * MIN)).exit_code == 0
        again = anomaly_sources(store, f"{prefix}-anomalies")
        # the only scanner document is the marked one, still marked
        assert [k for k, d in again.items() if d["entity"]["value"] == SCANNER] == [aid]
        assert again[aid]["feedback"]["false_positive"] is True
    finally:
        store.delete_index(f"{prefix}-*")


def test_killed_backfill_resumes_with_every_window_exactly_once(os_dataset):
    dataset = os_dataset
    store = dataset["store"]
    ref, killed = dataset["prefix"] + "-ref", dataset["prefix"] + "-kill"
    base = make_env(dataset["url"], dataset["prefix"])
    args = ["--from", iso(T0), "--to", iso(T0 + 24 * MIN)]
    try:
        # the reference checkpoints once for the whole day, the killed run every 3 windows
        env = dict(base, FWSIEM_INDICES_ANOMALIES=f"{ref}-anomalies",
                   FWSIEM_INDICES_STATE=f"{ref}-state", FWSIEM_INDICES_INCIDENTS=f"{ref}-incidents",
                   FWSIEM_RUN_BACKFILL_BATCH="60")
        assert run_cli(env, *args).exit_code == 0
        env = dict(os.environ)
        env.update(base, FWSIEM_INDICES_ANOMALIES=f"{killed}-anomalies",
                   FWSIEM_INDICES_STATE=f"{killed}-state",
                   FWSIEM_INDICES_INCIDENTS=f"{killed}-incidents", FWSIEM_RUN_BACKFILL_BATCH="3")
        proc = subprocess.Popen([sys.executable, "-m", "plugin", "run", *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        config = load_config(env=env)
        done = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                cp = load_checkpoint(store, f"{killed}-state", 0, 1, state_key())
            except Exception:  # the index may not exist yet
                cp = None
            done = cp.windows_done if cp else 0
            if done >= 10:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 10 <= done < 24
        res = run_cli(env, *args)
        assert res.exit_code == 0, res.output
        a = load_checkpoint(store, f"{ref}-state", 0, 1, state_key())
        b = load_checkpoint(store, f"{killed}-state", 0, 1, state_key())
        assert (b.windows_done, b.chain, b.window_end_ms) == (a.windows_done, a.chain, a.window_end_ms)
        assert b.windows_done == 24
        assert anomaly_sources(store, f"{killed}-anomalies") == anomaly_sources(store, f"{ref}-anomalies")
        assert anomaly_sources(store, f"{killed}-incidents") == anomaly_sources(store, f"{ref}-incidents")
        assert WindowRunner(store, config).s.window_ms == MIN
    finally:
        store.delete_index(f"{ref}-*")
        store.delete_index(f"{killed}-*")


def test_a_crash_between_a_batch_and_its_checkpoint_rewrites_the_same_documents(os_dataset,
                                                                                  monkeypatch):
    """A backfill that dies after writing a batch's documents and before its checkpoint resumes
    at the previous checkpoint and processes the batch again: every document once, as in a run
    that never crashed."""
    import plugin.windows

    store = os_dataset["store"]
    ref, crashed = os_dataset["prefix"] + "-ref", os_dataset["prefix"] + "-crash"
    base = dict(make_env(os_dataset["url"], os_dataset["prefix"]), FWSIEM_RUN_BACKFILL_BATCH="8")
    args = ["--from", iso(T0), "--to", iso(T0 + 24 * MIN)]

    def names(prefix):
        return {f"FWSIEM_INDICES_{kind.upper()}": f"{prefix}-{kind}"
                for kind in ("anomalies", "state", "incidents")}

    class Crash(Exception):
        pass

    checkpoints = []
    save = plugin.windows.save_checkpoint

    def save_then_crash(*a, **kw):
        if len(checkpoints) == 1:
            raise Crash("killed after the second batch's documents, before its checkpoint")
        save(*a, **kw)
        checkpoints.append(a[4].windows_done)

    try:
        assert run_cli(dict(base, **names(ref)), *args).exit_code == 0
        monkeypatch.setattr(plugin.windows, "save_checkpoint", save_then_crash)
        env = dict(base, **names(crashed))
        with pytest.raises(Crash):
            run_cli(env, *args)
        monkeypatch.undo()
        assert load_checkpoint(store, f"{crashed}-state", 0, 1, state_key()).windows_done == 8
        # the scanner's window (14) lies in the second batch: its documents were written
        written = anomaly_sources(store, f"{crashed}-anomalies")
        assert any(d["entity"]["value"] == SCANNER for d in written.values())
        assert run_cli(env, *args).exit_code == 0
        a = load_checkpoint(store, f"{ref}-state", 0, 1, state_key())
        b = load_checkpoint(store, f"{crashed}-state", 0, 1, state_key())
        assert (b.windows_done, b.chain, b.window_end_ms) == (a.windows_done, a.chain,
                                                              a.window_end_ms) == (24, a.chain,
                                                                                   T0 + 24 * MIN)
        assert anomaly_sources(store, f"{crashed}-anomalies") == anomaly_sources(
            store, f"{ref}-anomalies")
        assert anomaly_sources(store, f"{crashed}-incidents") == anomaly_sources(
            store, f"{ref}-incidents")
    finally:
        store.delete_index(f"{ref}-*")
        store.delete_index(f"{crashed}-*")


def test_engine_outage_during_run_loses_no_window(tmp_path, dedicated_engine):
    """Stop the engine under a running `fwsiem run`, start it again: every window is done once."""
    from plugin.checkpoint import next_chain
    from plugin.windows import window_bounds

    eng = dedicated_engine("elasticsearch", "the outage test")
    proc = None
    try:
        win = 2000
        t0 = (int(time.time() * 1000) // win) * win - 6 * win
        to = t0 + 30 * win
        cfg = tmp_path / "fwsiem.toml"
        cfg.write_text(
            f'[engine]\nurl = "{eng.url}"\nmax_retries = 1\ntimeout = 5\n'
            '[indices]\nevents_pattern = "logs-fwsiem.outage-events"\n'
            'anomalies = "outage-anomalies"\nstate = "outage-state"\n'
            '[run]\nwindow = "2s"\nlag = "0s"\nwarmup_windows = 3\npoll_interval = "0.5s"\n'
            'retry_max = "2s"\n')
        config = load_config(cfg, env={})
        store = Store.connect(config.engine)
        from plugin.setup import run_setup

        run_setup(store, config, only={"template"})
        rng = random.Random(3)
        docs = [event(t0 + i * 200 + rng.randrange(200), rng.choice(CLIENTS), "10.2.0.1", 443)
                for i in range((to - t0) // 200)]
        load_events(store, "logs-fwsiem.outage-events", docs)
        env = dict(os.environ, FWSIEM_CONFIG=str(cfg))
        proc = subprocess.Popen([sys.executable, "-m", "plugin", "run", "--from", str(t0),
                                 "--to", str(to)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        done = 0
        while time.monotonic() < deadline and done < 8:
            try:
                cp = load_checkpoint(store, "outage-state", 0, 1, state_key())
                done = cp.windows_done if cp else 0
            except Exception:
                done = 0
            time.sleep(0.2)
        if proc.poll() is not None:
            pytest.fail(f"fwsiem run ended early: {proc.stderr.read()[-3000:]}")
        assert done >= 8
        eng.stop()
        time.sleep(3)
        eng.start()
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        store = Store.connect(config.engine)
        cp = load_checkpoint(store, "outage-state", 0, 1, state_key())
        expected = list(window_bounds(t0, to, win))
        chain = ""
        for s, e in expected:
            chain = next_chain(chain, s, e)
        assert (cp.windows_done, cp.window_end_ms, cp.chain) == (len(expected), to, chain)
        assert err.count("is unavailable") == 1, err[-3000:]
        assert err.count("is back after") == 1, err[-3000:]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
