"""A simulated hour, every NSX line variant plus nfdump and pmacct flow records, through
`fwsiem-logs` (installed as `fwsiem setup` installs it) with zero dead letters.

Sending all ~110,000 lines of the hour takes minutes on two cores, so the test sends every
distinct line shape of the hour (header variant, line kind, protocol, flags, counters, tag...,
up to `PER_SHAPE` lines each) plus every `STRIDE`-th line."""

from __future__ import annotations

import json
import re

import pytest

from ml.simulate import Simulation
from plugin.lines import line_document
from plugin.setup import pipeline_bodies, processors_used

DEADLETTER = "fwsiem-deadletter"
BATCH = 2000
PER_SHAPE = 4
STRIDE = 50
VARIANTS = {"plain", "syslog_bsd", "syslog_bsd_pid", "rfc5424", "rfc5424_underscore", "vmc",
            "esxi8", "edge"}

pytestmark = pytest.mark.integration


def _variant(line: str) -> str:
    for key, name in (("FIREWALL [nsx@", "edge"), ("No(13)", "esxi8"), ("<99>", "vmc"),
                      ("FIREWALL_PKTLOG ", "rfc5424_underscore"), ("FIREWALL-PKTLOG ", "rfc5424"),
                      ("dfwpktlogs[", "syslog_bsd_pid"), ("dfwpktlogs:", "syslog_bsd")):
        if key in line:
            return name
    return "plain"


def _kind(line: str) -> str:
    return "term" if " TERM " in line else "match"


def _token(tok: str) -> str:
    if "->" in tok:
        return ("A6" if ":" in tok else "A4") + ("p" if "/" in tok else "")
    if tok.isdigit():
        return "N"
    if re.fullmatch(r"\d+/\d+", tok):
        return "C"
    if re.fullmatch(r"[A-Z0-9]+", tok):
        return tok
    return "R" if "/" in tok else "w"


def _nsx_shape(line: str) -> tuple:
    """Header variant plus the body's tokens with numbers, addresses and names abstracted."""
    return (_variant(line), *(_token(t) for t in line[line.index(" INET"):].split()))


def _nfdump_shape(record: str) -> tuple:
    cols = record.split(",")
    return cols[7], cols[8], ":" in cols[3]


def _pmacct_shape(record: str) -> tuple:
    doc = json.loads(record)
    return tuple(sorted(doc)), doc.get("ip_proto"), doc.get("tcp_flags"), ":" in doc["ip_src"]


def _pick(lines: list[str], shape) -> list[str]:
    """Up to PER_SHAPE lines of every shape, plus every STRIDE-th line, in file order."""
    counts: dict[tuple, int] = {}
    picked = []
    for n, line in enumerate(lines):
        key = shape(line)
        counts[key] = counts.get(key, 0) + 1
        if counts[key] <= PER_SHAPE or n % STRIDE == 0:
            picked.append(line)
    return picked


@pytest.fixture(scope="module")
def hour(tmp_path_factory):
    """One simulated hour: (NSX lines, nfdump CSV records, pmacct JSON records)."""
    out = tmp_path_factory.mktemp("simulate")
    Simulation("default", hours=1, seed=5).write(out)
    nsx = (out / "nsx" / "dfwpktlogs.log").read_text().splitlines()
    nf = (out / "flows" / "nfdump.csv").read_text().splitlines()
    # nfdump without -q writes a header and a summary; fwsiem parses `nfdump -q` output only.
    assert nf[0].startswith("ts,te,") and nf[-3] == "Summary"
    pm = (out / "flows" / "pmacct.json").read_text().splitlines()
    return nsx, nf[1:-3], pm


def _install(engine) -> None:
    bodies = pipeline_bodies(engine.flavor)
    missing = set().union(*map(processors_used, bodies.values())) - engine.store.ingest_processors()
    if missing and engine.flavor == "elasticsearch":
        pytest.skip(f"elasticsearch at {engine.url} lacks ingest processors "
                    f"{sorted(missing)} (integration-test distribution)")
    for name, body in bodies.items():
        engine.store.put_pipeline(name, body)


def _dead(engine, lines: list[str]) -> list[tuple[str, str]]:
    bad = []
    for start in range(0, len(lines), BATCH):
        chunk = lines[start:start + BATCH]
        results = engine.store.simulate("fwsiem-logs", [line_document(ln.encode()) for ln in chunk])
        assert len(results) == len(chunk)
        for ln, res in zip(chunk, results, strict=True):
            doc = res.get("doc", {})
            if "error" in res or doc.get("_index") == DEADLETTER:
                msg = doc.get("_source", {}).get("error", {}).get("message") or res.get("error")
                bad.append((ln, str(msg)))
    return bad


def _check(engine, hour) -> None:
    nsx, nf, pm = hour
    seen = {(_variant(ln), _kind(ln)) for ln in nsx}
    assert seen == {(v, k) for v in VARIANTS for k in ("match", "term")}, \
        "the simulated hour has match and TERM lines of every NSX variant"
    assert any(" INET6 " in ln for ln in nsx) and nf and pm
    _install(engine)
    sent = {"nsx": _pick(nsx, _nsx_shape), "nfdump": _pick(nf, _nfdump_shape),
            "pmacct": _pick(pm, _pmacct_shape)}
    assert {(_variant(ln), _kind(ln)) for ln in sent["nsx"]} == seen
    bad, where = [], {}
    for name, lines in sent.items():
        for line, msg in _dead(engine, lines):
            key = _variant(line) if name == "nsx" else name
            where[key] = where.get(key, 0) + 1
            bad.append((line, msg))
    assert not bad, f"{len(bad)} dead letters {where}:\n" + "\n".join(
        f"{msg}: {ln}" for ln, msg in bad[:10])


def test_simulated_hour_parses_without_dead_letters_on_opensearch(os_engine, hour):
    _check(os_engine, hour)


def test_simulated_hour_parses_without_dead_letters_on_elasticsearch(es_engine, hour):
    _check(es_engine, hour)
