"""`fwsiem setup` on real engines: idempotent, checkable, clear about what a cluster lacks."""

from __future__ import annotations

import uuid

from click.testing import CliRunner

from plugin.cli import cli
from plugin.setup import pipeline_bodies, processors_used


def _setup_args(engine):
    args = ["setup"]
    if not engine.has_processors(*set().union(*(processors_used(b)
                                                 for b in pipeline_bodies().values()))):
        args.append("--skip-pipelines")
    return args


def test_setup_twice_then_check_passes(engine):
    runner = CliRunner()
    args = _setup_args(engine)
    first = runner.invoke(cli, ["--url", engine.url, *args])
    assert first.exit_code == 0, first.output
    second = runner.invoke(cli, ["--url", engine.url, *args])
    assert second.exit_code == 0, second.output
    assert "created" not in second.output and "updated" not in second.output
    check = runner.invoke(cli, ["--url", engine.url, *args, "--check"])
    assert check.exit_code == 0, check.output
    assert "fwsiem-events" in check.output


def test_check_names_a_deleted_template(engine):
    runner = CliRunner()
    args = _setup_args(engine)
    assert runner.invoke(cli, ["--url", engine.url, *args]).exit_code == 0
    engine.store.delete_index_template("fwsiem-anomalies")
    check = runner.invoke(cli, ["--url", engine.url, *args, "--check"])
    assert check.exit_code != 0
    missing = [line for line in check.stdout.splitlines() if line.endswith("missing") or "missing  (" in line]
    assert missing and all("fwsiem-anomalies" in line for line in missing)
    assert runner.invoke(cli, ["--url", engine.url, *args]).exit_code == 0
    assert runner.invoke(cli, ["--url", engine.url, *args, "--check"]).exit_code == 0


def test_events_template_maps_ecs_types(engine, unique_prefix):
    assert CliRunner().invoke(cli, ["--url", engine.url, *_setup_args(engine)]).exit_code == 0
    store = engine.store
    stream = f"logs-fwsiem.{unique_prefix}{uuid.uuid4().hex[:6]}-default"
    store.delete_index(stream)
    store.index_doc(stream, {"@timestamp": "2026-01-01T00:00:00Z",
                                                      "source": {"ip": "10.1.2.3", "port": 443}},
                    op_type="create", refresh=True)
    mapping = store.request("GET", f"/{stream}/_mapping")
    props = next(iter(mapping.values()))["mappings"]["properties"]
    assert props["source"]["properties"]["ip"]["type"] == "ip"
    assert props["source"]["properties"]["port"]["type"] == "long"
    assert props["@timestamp"]["type"] == "date"
    assert props["rule"]["properties"]["id"]["type"] == "keyword"
    hits = store.search(stream, {"query": {"term": {"source.ip": "10.1.0.0/16"}}})
    assert hits["hits"]["total"]["value"] == 1  # CIDR queries work because source.ip is an ip
    store.delete_index(stream)


def test_vendor_fields_that_look_like_dates_never_refuse_a_later_event(engine, unique_prefix):
    # Vendor keys (cef.extensions.rt, fortinet.firewall.*, ...) carry times in any form: the first
    # one seen must not fix the field as a date and make the engine refuse the next event.
    assert CliRunner().invoke(cli, ["--url", engine.url, *_setup_args(engine)]).exit_code == 0
    store = engine.store
    stream = f"logs-fwsiem.{unique_prefix}{uuid.uuid4().hex[:6]}-default"
    store.delete_index(stream)
    for value in ("2024-02-05T10:45:00Z", "Feb 05 2024 10:45:00 GMT"):
        store.index_doc(stream, {"@timestamp": "2026-01-01T00:00:00Z",
                                 "cef": {"extensions": {"rt": value}}}, op_type="create",
                        refresh=True)
    assert store.count(stream) == 2
    store.delete_index(stream)


def test_cluster_without_ingest_processors_is_refused_with_the_list(engine):
    needed = set().union(*(processors_used(b) for b in pipeline_bodies().values()))
    if engine.has_processors(*needed):
        result = CliRunner().invoke(cli, ["--url", engine.url, "setup"])
        assert result.exit_code == 0, result.output
        return
    result = CliRunner().invoke(cli, ["--url", engine.url, "setup"])
    assert result.exit_code != 0
    missing = sorted(needed - engine.store.ingest_processors())
    assert all(name in str(result.exception) for name in missing)
