"""Test fixtures: real Elasticsearch 8 and OpenSearch 2, started once per session through `fwsiem engine start`.

Set FWSIEM_TEST_ES_URL / FWSIEM_TEST_OS_URL to reuse engines that already run. When an engine
cannot be started, its tests fail under CI=true and are skipped (with the reason) elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from plugin.config import Config, load_config
from plugin.engine import OPENSEARCH_PORTS, LocalEngine, find_free_port
from plugin.setup import pipeline_bodies, processors_used
from plugin.store import Store

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FLAVORS = ("elasticsearch", "opensearch")
URL_ENV = {"elasticsearch": "FWSIEM_TEST_ES_URL", "opensearch": "FWSIEM_TEST_OS_URL"}


@dataclass
class Engine:
    """A running engine as tests see it."""

    flavor: str
    url: str
    store: Store
    home: Path | None = None
    port: int | None = None

    def config(self, **indices: str) -> Config:
        """The default configuration pointed at this engine, with optional index renames."""
        cfg = load_config(env={}).with_overrides("engine", url=self.url)
        return cfg.with_overrides("indices", **indices) if indices else cfg

    def has_processors(self, *names: str) -> bool:
        return set(names) <= self.store.ingest_processors()


def _fail_or_skip(message: str):
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def unavailable():
    """How a test says an engine or a tool it needs is missing: a failure under CI=true, where
    everything must be installed, a skip on a developer machine."""
    return _fail_or_skip


def _start(flavor: str, tmp_root: Path) -> tuple[str, Path, int]:
    home = tmp_root / flavor
    port = find_free_port(OPENSEARCH_PORTS if flavor == "opensearch" else None)
    cmd = [sys.executable, "-m", "plugin", "engine", "start", "--flavor", flavor, "--port", str(port),
           "--home", str(home), "--heap", os.environ.get("FWSIEM_TEST_HEAP", "768m")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "FWSIEM_CONFIG": ""})
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[1:])}` failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1], home, port


_engines: dict[str, Engine | str] = {}
_started: list[LocalEngine] = []


def _engine(flavor: str, tmp_root: Path) -> Engine:
    if flavor not in _engines:
        try:
            url = os.environ.get(URL_ENV[flavor])
            home = port = None
            if not url:
                url, home, port = _start(flavor, tmp_root)
                _started.append(LocalEngine(flavor, home, port))
            store = Store.connect(load_config(env={}).with_overrides("engine", url=url).engine)
            if store.flavor != flavor:
                raise RuntimeError(f"{url} is {store.flavor}, expected {flavor}")
            _engines[flavor] = Engine(flavor, url, store, home, port)
        except Exception as exc:  # remembered, so every test of this flavour reports the same cause
            _engines[flavor] = f"{flavor} engine unavailable: {exc}"
    got = _engines[flavor]
    if isinstance(got, str):
        _fail_or_skip(got)
    return got  # type: ignore[return-value]


@pytest.fixture(scope="session")
def engine_tmp_root():
    # Under /tmp: Elasticsearch runs as an unprivileged user when tests run as root.
    root = Path(tempfile.mkdtemp(prefix="fwsiem-test-engines-"))
    root.chmod(0o755)
    yield root
    for eng in _started:
        eng.stop()


@pytest.fixture(scope="session")
def es_engine(engine_tmp_root) -> Engine:
    return _engine("elasticsearch", engine_tmp_root)


@pytest.fixture(scope="session")
def os_engine(engine_tmp_root) -> Engine:
    return _engine("opensearch", engine_tmp_root)


@pytest.fixture(scope="session", params=FLAVORS)
def engine(request, engine_tmp_root) -> Engine:
    """Each integration test runs once per flavour; the test id names it."""
    return _engine(request.param, engine_tmp_root)


@pytest.fixture(scope="module")
def installed(engine):
    """The engine with every fwsiem pipeline of its flavour installed (a file in
    `ingest_pipelines/<format>/<flavor>/` replaces the one of the same id); skipped, with the
    processors it lacks named, on a build without ingest-common and Painless."""
    bodies = pipeline_bodies(engine.flavor)
    needed = set().union(*(processors_used(b) for b in bodies.values()))
    missing = sorted(needed - engine.store.ingest_processors())
    if missing:
        pytest.skip(f"{engine.flavor} at {engine.url} lacks ingest processors [{', '.join(missing)}] "
                    f"that the fwsiem pipelines need (install ingest-common and Painless)")
    for name, body in bodies.items():
        engine.store.put_pipeline(name, body)
    return engine


@pytest.fixture
def dedicated_engine():
    """Start an engine of the test's own (``dedicated_engine(flavor, purpose)``), for a test that
    stops and restarts it while the shared engines stay up; stopped and removed afterwards."""
    started: list[tuple[LocalEngine, Path]] = []

    def start(flavor: str, purpose: str) -> LocalEngine:
        # under /tmp and world-traversable: Elasticsearch runs as an unprivileged user under root
        home = Path(tempfile.mkdtemp(prefix="fwsiem-dedicated-"))
        home.chmod(0o755)
        ports = OPENSEARCH_PORTS if flavor == "opensearch" else None
        eng = LocalEngine(flavor, home, find_free_port(ports),
                          heap=os.environ.get("FWSIEM_TEST_HEAP", "512m"))
        started.append((eng, home))
        try:
            eng.start()
        except Exception as exc:  # the same rule as the shared fixtures
            _fail_or_skip(f"cannot start an engine for {purpose}: {exc}")
        return eng

    yield start
    for eng, home in started:
        eng.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def unique_prefix(request) -> str:
    """A short per-test prefix for index names, so tests never see each other's data."""
    import hashlib

    return "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


def simulated_event_actions(df, index: str, *, op_type: str = "index", network_bytes: bool = False):
    """Bulk actions for the simulator's event rows, shaped as the pipelines write them
    (``event.type`` says allowed or denied; the simulator's bookkeeping columns are left out)."""
    denied = df["event.action"].isin(["drop", "reject"])
    for row, is_denied in zip(df.to_dict("records"), denied, strict=True):
        doc = {k: v for k, v in row.items() if v != "" and k not in ("session.id", "incident.id")}
        doc["@timestamp"] = row["@timestamp"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        doc["event.type"] = ["connection", "denied" if is_denied else "allowed"]
        if network_bytes:
            doc["network.bytes"] = int(row["source.bytes"] or 0) + int(row["destination.bytes"] or 0)
        yield {"_op_type": op_type, "_index": index, "_source": doc}


@pytest.fixture(scope="session")
def event_actions():
    """``simulated_event_actions`` for tests that index simulated events."""
    return simulated_event_actions
