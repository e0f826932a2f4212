"""Datacenter traffic simulator with ground truth: NSX DFW logs, flow records, rules and labels."""

from __future__ import annotations

from ml.simulate.scenario import INCIDENT_KINDS, Scenario, load_scenario, packaged_scenarios
from ml.simulate.simulation import Simulation

__all__ = ["INCIDENT_KINDS", "Scenario", "Simulation", "load_scenario", "packaged_scenarios"]
