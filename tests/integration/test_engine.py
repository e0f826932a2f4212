"""Local engines: health, ingest simulation with grok and dissect, harmless restarts, clear errors."""

from __future__ import annotations

import socket

import pytest

from plugin.engine import OPENSEARCH_PORTS, LocalEngine, find_free_port
from plugin.errors import EngineLaunchError

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
