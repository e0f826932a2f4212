"""A simulated quarter hour, every NSX variant plus flow records, through `fwsiem-logs` with zero
dead letters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.simulate import Simulation
from plugin.lines import line_document

PIPELINES = Path(__file__).resolve().parents[2] / "ingest_pipelines"
DEADLETTER = "fwsiem-deadletter"
PER_VARIANT = 60

pytestmark = pytest.mark.integration


def _variant(line: str) -> str:
    for key, name in (("FIREWALL [nsx@", "edge"), ("No(13)", "esxi8"), ("<99>", "vmc"),
                      ("FIREWALL_PKTLOG ", "rfc5424_underscore"), ("FIREWALL-PKTLOG ", "rfc5424"),
                      ("dfwpktlogs[", "syslog_bsd_pid"), ("dfwpktlogs:", "syslog_bsd")):
        if key in line:
            return name
    return "plain"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("simulate")
    Simulation("default", hours=0.25, seed=5).write(out)
    lines = (out / "nsx" / "dfwpktlogs.log").read_text().splitlines()
    picked: dict[str, list[str]] = {}
    for kind in ("match", "TERM"):
        for ln in lines:
            key = (_variant(ln), kind, "INET6" in ln, " PROTO " in ln, " ICMP " in ln)
            if f" {kind} " in ln or (kind == "match" and "reason-match" in ln):
                bucket = picked.setdefault("/".join(map(str, key)), [])
                if len(bucket) < PER_VARIANT // 4:
                    bucket.append(ln)
    nf = (out / "flows" / "nfdump.csv").read_text().splitlines()[1:-3][:PER_VARIANT]
    pm = (out / "flows" / "pmacct.json").read_text().splitlines()[:PER_VARIANT]
    return picked, nf, pm


def _install(engine) -> None:
    bodies = {p.stem: json.loads(p.read_text()) for p in sorted(PIPELINES.glob("*.json"))
              if not p.name.startswith("test-")}
    for p in sorted((PIPELINES / engine.flavor).glob("*.json")):
        bodies[p.stem] = json.loads(p.read_text())
    for name, body in bodies.items():
        engine.store.put_pipeline(name, body)


def _dead(engine, lines: list[str]) -> list[tuple[str, str]]:
    docs = [line_document(ln.encode()) for ln in lines]
    results = engine.store.simulate("fwsiem-logs", docs)
    bad = []
    for ln, res in zip(lines, results):
        doc = res.get("doc", {})
        if "error" in res or doc.get("_index") == DEADLETTER:
            msg = doc.get("_source", {}).get("error", {}).get("message") or res.get("error")
            bad.append((ln, str(msg)))
    return bad


def _check(engine, sample) -> None:
    picked, nf, pm = sample
    variants = {k.split("/")[0] for k in picked}
    assert variants == {"plain", "syslog_bsd", "syslog_bsd_pid", "rfc5424", "rfc5424_underscore",
                        "vmc", "esxi8", "edge"}
    assert any("/True/" in k for k in picked)  # IPv6 lines are in the sample
    _install(engine)
    lines = [ln for group in picked.values() for ln in group] + nf + pm
    bad = _dead(engine, lines)
    assert not bad, "\n".join(f"{msg}: {ln}" for ln, msg in bad[:10])


def test_simulated_lines_parse_without_dead_letters_on_opensearch(os_engine, sample):
    _check(os_engine, sample)


def test_simulated_lines_parse_without_dead_letters_on_each_engine(engine, sample):
    if "grok" not in engine.store.ingest_processors():
        pytest.skip(f"{engine.flavor} here has no grok processor (integration-test distribution)")
    _check(engine, sample)
