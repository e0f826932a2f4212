"""`fwsiem report` on simulated data, opened in headless Chromium: every image loads, no console
errors, nothing fetched from outside the file; the screenshot goes to docs/report-screenshot.png."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from plugin.cli import cli
from plugin.setup import run_setup, template_mappings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "report-screenshot.png"

ANOMALIES = [
    {"@timestamp": "2024-03-04T00:21:00.000Z", "window": {"start": "2024-03-04T00:21:00.000Z",
                                                          "end": "2024-03-04T00:22:00.000Z"},
     "detector": {"name": "source_hst"}, "entity": {"type": "source", "value": "10.17.2.11"},
     "score": 0.97, "threshold": 0.8, "severity": "critical",
     "contributions": [{"feature": "drop_ratio", "observed": 0.98, "expected": 0.05,
                        "deviation": 12.0}],
     "drilldown": {"kql": 'source.ip: "10.17.2.11"'}, "feedback": {"status": "new"}},
    {"@timestamp": "2024-03-04T00:40:00.000Z", "window": {"start": "2024-03-04T00:40:00.000Z",
                                                          "end": "2024-03-04T00:41:00.000Z"},
     "detector": {"name": "port_hst"}, "entity": {"type": "service", "value": "10.16.3.11:445"},
     "score": 0.85, "threshold": 0.8, "severity": "medium",
     "contributions": [{"feature": "distinct_ports", "observed": 240, "expected": 3,
                        "deviation": 8.0}],
     "drilldown": {"kql": 'destination.ip: "10.16.3.11"'}, "feedback": {"status": "new"}},
]
RECOMMENDATIONS = [
    {"@timestamp": "2024-03-04T01:00:00.000Z", "kind": "quarantine", "severity": "high",
     "severity_score": 3, "confidence": 0.93, "title": "Deny spike from 10.17.2.11",
     "target": {"type": "host", "value": "10.17.2.11"},
     "period": {"start": "2024-03-04T00:00:00Z", "end": "2024-03-04T01:00:00Z"},
     "proposal": {"format": "iptables", "text": "-A FWSIEM -s 10.17.2.11 -j DROP"}},
    {"@timestamp": "2024-03-04T01:00:00.000Z", "kind": "allow_list", "severity": "low",
     "severity_score": 1, "confidence": 0.7, "title": "Allow-list for 10.16.1.10:443",
     "target": {"type": "endpoint", "value": "10.16.1.10:443"},
     "period": {"start": "2024-03-04T00:00:00Z", "end": "2024-03-04T01:00:00Z"},
     "proposal": {"format": "cidr", "cidrs": ["10.16.0.0/16", "10.17.1.0/24"]}},
]
INCIDENTS = [
    {"@timestamp": "2024-03-04T00:21:00.000Z", "severity": "critical",
     "event": {"severity": 4, "dataset": "fwsiem.incidents"},
     "incident": {"id": "i1", "kind": "many sources on one service",
                  "lead": {"type": "ip", "value": "10.16.9.9"},
                  "first_window": "2024-03-04T00:21:00.000Z",
                  "last_window": "2024-03-04T00:24:00.000Z"},
     "entities": {"targets": [{"value": "10.16.9.9:25565", "windows": 4}], "source_count": 37715,
                  "sources": []},
     "evidence": [{"entity": "10.16.9.9:25565", "feature": "src_ips", "observed": 37715,
                   "expected": 3, "deviation": 14.0}],
     "drilldown": {"kql": 'destination.ip: "10.16.9.9"'}},
]
MODELS = [{"@timestamp": "2024-03-04T01:05:00.000Z", "doc_type": "model",
           "model": {"name": "action-predictor", "version": 1, "status": "active"},
           "metrics": {"accuracy": 0.91, "f1_macro": 0.84}}]


@pytest.fixture(scope="module")
def report(engine, tmp_path_factory, event_actions):
    from ml.simulate import Simulation, load_scenario

    store = engine.store
    run_setup(store, engine.config(), skip_pipelines=True)
    p = "t" + hashlib.sha1(f"{__name__}-{engine.flavor}".encode()).hexdigest()[:8]
    names = {"events_pattern": f"fwsiem-events-{p}", "anomalies": f"fwsiem-anomalies-{p}",
             "recommendations": f"fwsiem-recommendations-{p}", "models": f"fwsiem-models-{p}",
             "incidents": f"fwsiem-incidents-{p}"}
    for name in names.values():
        store.delete_index(name)
    store.create_index(names["events_pattern"], {"mappings": template_mappings("fwsiem-events")})
    df = pd.concat(list(Simulation(load_scenario("default"), hours=1, seed=1).iter_events()),
                   ignore_index=True)
    res = store.bulk(event_actions(df, names["events_pattern"], network_bytes=True), refresh=True)
    assert not res.failed, res.failed[:3]
    docs = [(names["anomalies"], ANOMALIES), (names["recommendations"], RECOMMENDATIONS),
            (names["incidents"], INCIDENTS),
            (names["models"], MODELS)]
    res = store.bulk([{"_op_type": "index", "_index": i, "_source": d} for i, ds in docs for d in ds],
                     refresh=True)
    assert not res.failed, res.failed[:3]
    root = tmp_path_factory.mktemp(f"report-{engine.flavor}")
    cfg = root / "fwsiem.toml"
    cfg.write_text(f'[engine]\nurl = "{engine.url}"\n[indices]\n'
                   + "".join(f'{k} = "{v}"\n' for k, v in names.items()))
    out = root / "out"
    res = CliRunner().invoke(cli, ["--config", str(cfg), "report", "--out", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    yield out / "index.html", df, engine.flavor
    for name in names.values():
        store.delete_index(name)


def test_report_is_self_contained_and_has_every_section(report):
    path, df, _ = report
    text = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text), "external asset"
    assert "<script" not in text and "<link" not in text
    # incidents lead the report
    assert text.index("Top 1 incidents") < text.index("Top 10 rules by hits")
    for title in ("Top 10 rules by hits", "Action distribution", "Dropped traffic by destination IP",
                  "Dropped traffic by destination port", "Flows by protocol",
                  "Events over time by action", "Highest-hitting flows over time",
                  "Top sources by bytes",
                  "Top destinations by bytes", "Anomalies over time by severity",
                  "Recommendations by kind and severity", "Model registry"):
        assert title in text, title
    assert text.count('src="data:image/png;base64,') >= 10
    assert f"{len(df):,} events" in text  # the count the engine aggregated is the data's
    for needle in ("10.16.9.9:25565", "37,715", "10.17.2.11", "drop_ratio", "-A FWSIEM -s 10.17.2.11 -j DROP", "10.16.0.0/16",
                   "action-predictor", "accuracy 0.91"):
        assert needle in text, needle


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _driver(tmp_path, unavailable):
    try:
        from selenium import webdriver
    except ImportError as exc:
        unavailable(f"selenium is not installed: {exc}")
    from selenium.webdriver.chrome.service import Service

    browser, chromedriver = _chromium(), shutil.which("chromedriver")
    if not browser or not chromedriver:
        msg = "headless Chromium needs the Debian packages chromium and chromium-driver"
        unavailable(msg)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
                "--window-size=1280,3000", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(chromedriver), options=opts)


IMAGES_JS = """return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);"""


def _open(driver, path: Path):
    driver.get(path.as_uri())
    images = driver.execute_script(IMAGES_JS)
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    return images, errors


def test_report_renders_in_headless_chromium(report, tmp_path, unavailable):
    path, _, flavor = report
    driver = _driver(tmp_path, unavailable)
    try:
        # the checks themselves notice a broken image and a console error
        bad = tmp_path / "bad.html"
        bad.write_text('<img alt="x" src="data:image/png;base64,AAAA">'
                       "<script>console.error('boom')</script>")
        images, errors = _open(driver, bad)
        assert images and images[0][2] == 0 and errors

        images, errors = _open(driver, path)
        assert len(images) >= 10
        broken = [alt for alt, complete, width in images if not complete or width <= 0]
        assert not broken, broken
        assert not errors, errors
        if flavor == "opensearch":  # one screenshot for the docs, same content on both engines
            SCREENSHOT.parent.mkdir(exist_ok=True)
            driver.save_screenshot(str(SCREENSHOT))
            assert SCREENSHOT.stat().st_size > 10_000
    finally:
        driver.quit()
