"""Incidents on a real engine: a spoofed SYN flood from 37,000 sources is one incident on its target."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from plugin.cli import cli
from plugin.setup import run_setup

REAL_FLOWS = Path(os.environ.get(
    "FWSIEM_TEST_REAL_FLOWS",
    Path(__file__).resolve().parents[3] / "shared" / "datasets" / "real-flows"))
SYN_FLOOD = REAL_FLOWS / "pcaps" / "pkt.TCP.synflood.spoofed.pcap"
MEDIUM_UP = ["medium", "high", "critical"]


@pytest.mark.skipif(not SYN_FLOOD.exists(), reason=f"{SYN_FLOOD} is not present")
def test_a_spoofed_syn_flood_is_one_incident_on_its_target(os_engine):
    store = os_engine.store
    prefix = f"flood-{uuid.uuid4().hex[:8]}"
    env = {
        "FWSIEM_URL": os_engine.url,
        "FWSIEM_INDICES_EVENTS": f"logs-fwsiem.{prefix}-default",
        "FWSIEM_INDICES_EVENTS_PATTERN": f"logs-fwsiem.{prefix}-default",
        "FWSIEM_INDICES_ANOMALIES": f"{prefix}-anomalies",
        "FWSIEM_INDICES_INCIDENTS": f"{prefix}-incidents",
        "FWSIEM_INDICES_STATE": f"{prefix}-state",
        "FWSIEM_RUN_LAG": "0s",
    }
    run_setup(store, os_engine.config())
    try:
        res = CliRunner().invoke(cli, ["ingest", "--no-progress", str(SYN_FLOOD)], env=env,
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
        # the capture runs from 10:30:21 to 10:30:45; a few quiet windows either side
        res = CliRunner().invoke(cli, ["run", "--from", "2021-04-28T10:25:00Z",
                                       "--to", "2021-04-28T10:35:00Z"], env=env,
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
        for index in (f"{prefix}-anomalies", f"{prefix}-incidents"):
            if store.exists(index):
                store.refresh(index)
        incidents = [h["_source"] for h in store.scan(f"{prefix}-incidents")]
        assert len(incidents) == 1, [i["message"] for i in incidents]
        [inc] = incidents
        assert inc["severity"] in MEDIUM_UP
        assert inc["incident"]["lead"]["value"] == "10.10.10.10"
        assert [t["value"] for t in inc["entities"]["targets"]] == ["10.10.10.10:25565"]
        assert inc["entities"]["source_count"] > 30_000
        serious = {"terms": {"severity": MEDIUM_UP}}
        anomalies = store.count(f"{prefix}-anomalies", serious) if store.exists(
            f"{prefix}-anomalies") else 0
        assert anomalies + 1 <= 20
        # the drill-down finds the flood's events
        assert store.count(f"logs-fwsiem.{prefix}-default", inc["drilldown"]["query"]) > 30_000
    finally:
        store.delete_index(f"{prefix}-*")
        store.delete_index(f"logs-fwsiem.{prefix}-default")
