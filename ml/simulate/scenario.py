"""Scenario files: a TOML description of the simulated datacenter, its traffic and incidents."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ml.errors import ModelInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

INCIDENT_KINDS = (
    "port_scan_horizontal",
    "port_scan_vertical",
    "syn_flood",
    "udp_flood_small",
    "udp_flood_large",
    "ssh_bruteforce",
    "lateral_movement",
    "exfiltration",
    "beaconing",
    "deny_spike",
)

DEFAULTS: dict = {
    "name": "unnamed",
    "description": "",
    "start": "2024-03-04T00:00:00Z",
    "hours": 24.0,
    "datacenter": {
        "topology_seed": 1,
        "orgs": 4,
        "web_vms": [2, 4],
        "app_vms": [1, 3],
        "db_vms": [1, 2],
        "mail_share": 0.5,
        "hypervisors": 8,
        "hostname_format": "esx-{n:02d}.dc1.example.net",
        "org_prefix": "10.{org}.0.0/16",
        "first_org_octet": 16,
        "infra_prefix": "10.0.0.0/24",
        "resolver": "10.0.0.53",
        "ntp": ["10.0.0.123"],
        "ldap": "10.0.0.10",
        "backup": "10.0.0.20",
        "monitoring": "10.0.0.30",
        "jump": "10.0.0.40",
        "ipv6": True,
        "id_styles": {"vif": 0.6, "hash": 0.3, "none": 0.1},
    },
    "internet": {
        "clients": 2000,
        "client_prefixes": ["81.2.0.0/16", "94.23.0.0/16", "151.101.0.0/16", "203.0.113.0/24",
                            "198.51.100.0/24", "185.12.0.0/16", "45.33.0.0/16"],
        "crawlers": 8,
        "crawler_prefix": "66.249.64.0/19",
        "scanners": 16,
        "scanner_prefixes": ["71.6.128.0/17", "80.82.64.0/20", "185.142.236.0/22",
                             "162.142.125.0/24"],
        "partners_per_org": 2,
        "partner_prefix": "192.0.2.0/24",
        "office_prefix": "100.64.0.0/16",
        "servers": 300,
        "server_prefixes": ["13.32.0.0/15", "104.16.0.0/13", "140.82.112.0/20", "52.84.0.0/15"],
    },
    "traffic": {
        "diurnal_amplitude": 0.6,
        "peak_hour": 14.0,
        "weekend_factor": 0.6,
        "noise": 0.002,
        "edges": [],
    },
    "rules": {
        "ruleset": "domain-c8",
        "dominant": "",
        "list": [],
    },
    "allowlists": {
        "labeled_share": 0.3,
        "ports": {"web": [22], "app": [8443, 22], "db": [5432]},
        "offices_per_org": 2,
    },
    "output": {
        "chunk_minutes": 10,
        "format_mix": {"plain": 0.4, "syslog_bsd": 0.1, "syslog_bsd_pid": 0.05,
                       "rfc5424": 0.15, "rfc5424_underscore": 0.05, "vmc": 0.05,
                       "esxi8": 0.15, "edge": 0.05},
        "term_action_share": 0.3,
        "icmp_typecode_share": 0.5,
        "sew_share": 0.2,
        "rule_tags": True,
        "mainrs_share": 0.2,
    },
    "incidents": {"warmup_hours": 3.0},
}

INCIDENT_DEFAULTS: dict = {"enabled": True, "per_day": 1.0, "intensity": 1.0,
                           "duration_minutes": 20.0}


REPLACED = {"format_mix", "id_styles", "ports"}   # tables a scenario replaces, never merges


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in REPLACED:
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Scenario:
    """A loaded scenario: the merged TOML data (defaults filled in) and where it came from.

    Examples
    --------
    >>> sc = load_scenario("default")
    >>> sc.name
    'default'
    >>> sc.section("output")["chunk_minutes"] > 0
    True
    """

    data: dict
    source: str = "<defaults>"

    @property
    def name(self) -> str:
        return str(self.data.get("name", "unnamed"))

    def section(self, name: str) -> dict:
        return self.data.get(name, {})

    def incidents(self) -> dict[str, dict]:
        """Incident kind -> its settings (defaults filled in), in a fixed kind order."""
        raw = self.data.get("incidents", {})
        out = {}
        for kind in INCIDENT_KINDS:
            if isinstance(raw.get(kind), dict):
                out[kind] = _merge(INCIDENT_DEFAULTS, raw[kind])
        return out

    def with_overrides(self, over: dict) -> Scenario:
        return Scenario(_merge(self.data, over), self.source)


def packaged_scenarios() -> list[str]:
    """Names of the scenarios shipped with fwsiem.

    Examples
    --------
    >>> "default" in packaged_scenarios() and "seed000" in packaged_scenarios()
    True
    """
    root = resources.files("ml").joinpath("scenarios")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a packaged scenario by name (``default``, ``seed000``) or a TOML file by path.

    Examples
    --------
    >>> load_scenario("seed000").section("rules")["dominant"]
    '1018'
    """
    text = None
    source = str(name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ModelInputError(f"scenario file {path} does not exist",
                             hint=f"packaged scenarios: {', '.join(packaged_scenarios())}")
        text = path.read_text()
    else:
        res = resources.files("ml").joinpath(f"scenarios/{name_or_path}.toml")
        if not res.is_file():
            raise ModelInputError(f"no scenario named {name_or_path!r}",
                             hint=f"use one of {', '.join(packaged_scenarios())} or a .toml path")
        text = res.read_text()
        source = f"ml/scenarios/{name_or_path}.toml"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelInputError(f"scenario {source} is not valid TOML: {exc}",
                         hint="fix the file; docs/simulator.md lists every key") from exc
    unknown = set(data.get("incidents", {})) - set(INCIDENT_KINDS) - {"warmup_hours"}
    if unknown:
        raise ModelInputError(f"scenario {source}: unknown incident kind(s) {sorted(unknown)}",
                         hint=f"known kinds: {', '.join(INCIDENT_KINDS)}")
    return Scenario(_merge(DEFAULTS, data), source)
