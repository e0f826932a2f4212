"""Local engines: health, ingest simulation with grok and dissect, harmless restarts, clear errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from plugin.engine import OPENSEARCH_PORTS, LocalEngine, find_free_port
from plugin.errors import EngineLaunchError

REPO = Path(__file__).resolve().parents[2]

GROK_DISSECT = {
    "description": "grok + dissect smoke pipeline",
    "processors": [
        {"dissect": {"field": "message", "pattern": "%{ts} %{rest}"}},
        {"grok": {"field": "rest", "patterns": ["%{WORD:action} %{IP:src}->%{IP:dst}"]}},
    ],
}


def test_health_and_version(engine):
    health = engine.store.health()
    assert health["status"] in ("yellow", "green")
    assert health["number_of_nodes"] == 1


def test_simulate_with_grok_and_dissect(engine):
    if not engine.has_processors("grok", "dissect"):
        # Elastic publishes only its integration-test distribution on Maven Central; it has no
        # ingest-common module. Say so instead of pretending.
        pytest.skip(f"{engine.flavor} {engine.store.version} at {engine.url} has no grok/dissect "
                    f"processors (available: {sorted(engine.store.ingest_processors())})")
    engine.store.put_pipeline("fwsiem-smoke", GROK_DISSECT)
    docs = engine.store.simulate("fwsiem-smoke", [{"message": "2026-01-01T00:00:00Z PASS 10.0.0.1->10.0.0.2"}])
    src = docs[0]["doc"]["_source"]
    assert (src["ts"], src["action"], src["src"], src["dst"]) == (
        "2026-01-01T00:00:00Z", "PASS", "10.0.0.1", "10.0.0.2")
    engine.store.delete_pipeline("fwsiem-smoke")


def test_starting_twice_is_harmless(engine):
    if engine.home is None:
        pytest.skip("engine given by URL, not started by the tests")
    again = LocalEngine(engine.flavor, engine.home, engine.port).start(timeout=30)
    assert again["url"] == engine.url


def test_port_taken_is_a_clear_error(tmp_path):
    with socket.socket() as sock:
        port = find_free_port(OPENSEARCH_PORTS)
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
        with pytest.raises(EngineLaunchError, match=f"port {port} .* already in use"):
            LocalEngine("opensearch", tmp_path, port).start(timeout=5)


def test_bulk_through_a_pipeline_is_parsed_on_an_ingest_node(engine, unique_prefix):
    if not engine.has_processors("grok", "dissect"):
        pytest.skip(f"{engine.flavor} {engine.store.version} at {engine.url} has no grok/dissect processors")
    engine.store.put_pipeline("fwsiem-smoke-bulk", GROK_DISSECT)
    index = f"{unique_prefix}-piped"
    result = engine.store.bulk([{"_index": index, "_id": "1",
                                 "_source": {"message": "2026-01-01T00:00:00Z DROP 10.0.0.9->10.0.0.2"}}],
                               pipeline="fwsiem-smoke-bulk", refresh=True)
    assert result.created == 1, result.failed
    assert engine.store.get_doc(index, "1")["src"] == "10.0.0.9"
    engine.store.delete_index(index)
    engine.store.delete_pipeline("fwsiem-smoke-bulk")


def _fwsiem(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plugin", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "FWSIEM_CONFIG": ""}, timeout=120)


@pytest.fixture
def decoy(tmp_path):
    """An unrelated process in its own process group, as `setsid sleep` makes one."""
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True, cwd=tmp_path)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("recorded", [None, "1"], ids=["old-pid-file", "other-start-time"])
def test_engine_stop_with_a_stale_pid_file_never_kills_an_unrelated_process_group(
        tmp_path, decoy, recorded):
    eng = LocalEngine("opensearch", tmp_path / "home", 9299)
    eng.instance_dir.mkdir(parents=True)
    eng.state_file.write_text(json.dumps({"flavor": "opensearch", "pid": decoy.pid,
                                          "pid_start": recorded, "port": 9299,
                                          "url": "http://127.0.0.1:9299"}))
    proc = _fwsiem("engine", "stop", "--flavor", "opensearch", "--home", str(tmp_path / "home"))
    assert proc.returncode == 0, proc.stderr
    assert decoy.poll() is None, "engine stop killed a process that is not the engine"
    assert "no opensearch engine running" in proc.stdout
    assert not eng.state_file.exists()


def _recorded_engine(home: Path, url: str, proc: subprocess.Popen) -> None:
    """A pid file naming ``proc`` as this home's engine, with its start time, serving ``url``."""
    eng = LocalEngine("opensearch", home, 9299)
    eng.instance_dir.mkdir(parents=True, exist_ok=True)
    stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[-1].split()
    eng.state_file.write_text(json.dumps({"flavor": "opensearch", "pid": proc.pid,
                                          "pid_start": stat[19], "port": 9299, "url": url}))


def test_engine_status_exits_non_zero_when_the_engine_is_not_healthy(tmp_path, decoy,
                                                                      os_engine):
    _recorded_engine(tmp_path / "up", os_engine.url, decoy)
    healthy = _fwsiem("engine", "status", "--home", str(tmp_path / "up"))
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "healthy" in healthy.stdout and "NOT healthy" not in healthy.stdout
    with socket.socket() as sock:  # a port nothing answers on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    _recorded_engine(tmp_path / "down", closed, decoy)
    unhealthy = _fwsiem("engine", "status", "--home", str(tmp_path / "down"))
    assert unhealthy.returncode != 0
    assert "NOT healthy" in unhealthy.stdout
