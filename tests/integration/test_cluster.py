"""fwsiem on a real three-node OpenSearch cluster: replicas, partitioned workers, a node lost.

One cluster for the module, started through `fwsiem engine start --nodes 3`. Set
FWSIEM_TEST_CLUSTER_HOME to the home of a running multi-node cluster to reuse it (the tests stop
and start one of its nodes). When the cluster cannot start, the tests fail under CI=true and are
skipped (with the reason) elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugin.checkpoint import load_checkpoint, state_key
from plugin.config import load_config
from plugin.engine import OPENSEARCH_PORTS, LocalEngine, port_in_use
from plugin.store import Store

pytestmark = pytest.mark.timeout(1800)

REPO = Path(__file__).resolve().parents[2]
NODES = 3
FROM, TO = "2024-03-04T00:00:00Z", "2024-03-04T00:30:00Z"  # 30 one-minute windows
WINDOWS = 30


def _free_run(n: int) -> int:
    """The first of ``n`` consecutive free ports the embedded OpenSearch can serve HTTP on."""
    ports = list(OPENSEARCH_PORTS)
    for i in range(len(ports) - n + 1):
        if not any(port_in_use(p) for p in ports[i:i + n]):
            return ports[i]
    raise RuntimeError(f"no {n} consecutive free ports in {ports[0]}-{ports[-1]}")


class Cluster:
    """A running multi-node engine as the tests see it."""

    def __init__(self, engine: LocalEngine, url: str):
        self.engine, self.url = engine, url
        self.config = load_config(env={}).with_overrides("engine", url=url)
        self.store = Store.connect(self.config.engine)

    def cli(self, toml: Path, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "plugin", *args], env=fwsiem_env(toml),
                              capture_output=True, text=True, cwd=REPO, timeout=1200, **kw)

    def nodes_of(self, index: str) -> dict[str, int]:
        """Which node (1-based) holds the primary (``p``) and the replica (``r``) of ``index``."""
        shards = self.store.request("GET", f"/_cat/shards/{index}",
                                    params={"format": "json", "h": "prirep,node"})
        # the runner names its nodes "Node 1" .. "Node N"
        return {s["prirep"]: int(s["node"].split()[-1]) for s in shards}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, unavailable):
    home = os.environ.get("FWSIEM_TEST_CLUSTER_HOME")
    started = None
    try:
        if home:
            eng = LocalEngine("opensearch", Path(home), nodes=NODES)
            st = eng.running()
            if not st or int(st.get("nodes", 1)) < NODES:
                raise RuntimeError(f"no cluster of {NODES} nodes runs from {home}")
            eng.port, eng.nodes = int(st["port"]), int(st["nodes"])
            url = st["url"]
        else:
            home = tmp_path_factory.mktemp("cluster")
            port = _free_run(NODES)
            cmd = [sys.executable, "-m", "plugin", "engine", "start", "--nodes", str(NODES),
                   "--port", str(port), "--home", str(home),
                   "--heap", os.environ.get("FWSIEM_TEST_CLUSTER_HEAP", "1g")]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                                  env={**os.environ, "FWSIEM_CONFIG": ""})
            started = LocalEngine("opensearch", Path(home), port, nodes=NODES)
            if proc.returncode != 0:
                raise RuntimeError(f"`{' '.join(cmd[1:])}` failed ({proc.returncode}):\n"
                                   f"{proc.stderr[-3000:]}")
            eng, url = started, proc.stdout.strip().splitlines()[-1]
        cluster = Cluster(eng, url)
    except Exception as exc:
        if started is not None:
            started.stop()
        unavailable(f"three-node opensearch cluster unavailable: {exc}")
    yield cluster
    if started is not None:
        started.stop()


def fwsiem_env(toml: Path) -> dict:
    env = dict(os.environ, FWSIEM_CONFIG=str(toml))
    for key in [k for k in env if k.startswith("FWSIEM_") and k != "FWSIEM_CONFIG"]:
        env.pop(key)
    return env


def write_config(path: Path, url: str, tag: str, models: str = "") -> Path:
    """A configuration with indices of its own (``tag``) on the cluster.

    With ``models``, `fwsiem run` reads only the events of ``tag`` and keeps its anomalies,
    incidents and state in indices named after ``models`` (setup keeps the shipped template
    pattern).
    """
    lines = [f'[engine]\nurl = "{url}"\nspool_dir = "{path.parent / (tag + "-spool")}"',
             f'[indices]\nevents = "logs-fwsiem.{tag}-default"',
             '[ingest]\nretry_wait = "1s"',
             '[run]\nlag = "0s"\nwarmup_windows = 10']
    if models:
        lines.insert(2, f'events_pattern = "logs-fwsiem.{tag}-default"\n'
                        f'anomalies = "fwsiem-anomalies-{models}"\n'
                        f'incidents = "fwsiem-incidents-{models}"\nstate = "fwsiem-state-{models}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def nsx_lines(hours: float, seed: int) -> list[str]:
    from ml.simulate import Simulation, load_scenario

    sim = Simulation(load_scenario("default"), hours=hours, seed=seed, start=FROM)
    return [line for chunk in sim.iter_nsx_lines() for line in chunk]


def ingest_summary(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def wait_green(store: Store, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    health = store.health()
    while health["status"] != "green" and time.monotonic() < deadline:
        time.sleep(1)
        health = store.health()
    assert health["status"] == "green", health
    return health


def anomalies(store: Store, index: str) -> dict:
    store.refresh(index)
    return {h["_id"]: h["_source"] for h in store.scan(index)}


@pytest.fixture(scope="module")
def backfilled(cluster, tmp_path_factory):
    """Setup, 30 minutes of simulated NSX lines through `fwsiem ingest`, one `fwsiem run`."""
    tmp = tmp_path_factory.mktemp("backfill")
    tag = "clusterrun"
    toml = write_config(tmp / "fwsiem.toml", cluster.url, tag)
    store = cluster.store
    for name in (f"logs-fwsiem.{tag}-default", f"fwsiem-*-{tag}*"):
        store.delete_index(name)
    setup = cluster.cli(toml, "setup")
    assert setup.returncode == 0, setup.stderr[-3000:]
    lines = nsx_lines(0.5, seed=1)
    log = tmp / "dfw.log"
    log.write_text("\n".join(lines) + "\n")
    summary = ingest_summary(cluster.cli(toml, "ingest", "--json", "--no-progress", str(log)))
    run = cluster.cli(write_config(tmp / "run.toml", cluster.url, tag, tag), "run",
                      "--from", FROM, "--to", TO)
    yield {"toml": toml, "tag": tag, "lines": len(lines), "ingest": summary, "run": run,
           "tmp": tmp}
    for name in (f"logs-fwsiem.{tag}-default", f"fwsiem-*-{tag}*"):
        store.delete_index(name)


def test_setup_ingest_and_run_work_unchanged_with_replicas_on_other_nodes(cluster, backfilled):
    store, tag = cluster.store, backfilled["tag"]
    summary = backfilled["ingest"]
    assert summary["read"] == backfilled["lines"]
    # a batch the shipper sent again after a timeout is found already present, not doubled
    assert summary["indexed"] + summary.get("already_present", 0) == backfilled["lines"]
    assert summary["dead_lettered"] == 0
    run = backfilled["run"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{WINDOWS} windows processed" in run.stderr
    cp = load_checkpoint(store, f"fwsiem-state-{tag}", 0, 1, state_key())
    assert cp.windows_done == WINDOWS
    events = f"logs-fwsiem.{tag}-default"
    store.refresh(events)
    assert store.count(events) == backfilled["lines"]

    health = wait_green(store)
    assert health["number_of_nodes"] == NODES
    shards = store.request("GET", "/_cat/shards", params={"format": "json",
                                                          "h": "index,shard,prirep,state,node"})
    placed: dict[str, dict[str, list]] = {}
    for s in shards:
        assert s["state"] == "STARTED", s
        placed.setdefault(s["index"], {}).setdefault(s["prirep"], []).append(s["node"])
    ours = [i for i in placed if i.startswith((f".ds-{events}-", "fwsiem-"))]
    for must in (f".ds-{events}-", f"fwsiem-anomalies-{tag}", f"fwsiem-state-{tag}",
                 "fwsiem-deadletter"):
        assert any(i.startswith(must) for i in ours), (must, sorted(placed))
    for index in ours:
        copies = placed[index]
        assert len(copies.get("p", [])) == 1 and len(copies.get("r", [])) == 1, (index, copies)
        assert copies["p"] != copies["r"], (index, copies)  # a replica on another node


def entity_keys(store: Store) -> dict[str, set]:
    """Every entity of each type in the backfilled range, straight from the events; a service
    is an address with its ports (``ip:port`` in the models), all with the address's owner."""
    from ml.features import ENTITY_FIELDS

    q = {"range": {"@timestamp": {"gte": FROM, "lt": TO}}}
    aggs = {t: {"terms": {"field": f, "size": 10_000}} for t, f in ENTITY_FIELDS.items()}
    aggs["service"]["aggs"] = {"ports": {"terms": {"field": "destination.port", "size": 1000}}}
    resp = store.request("POST", "/logs-fwsiem.clusterrun-default/_search",
                         body={"size": 0, "query": q, "aggs": aggs})
    out: dict[str, dict] = {}
    for etype, agg in resp["aggregations"].items():
        for b in agg["buckets"]:
            keys = [f"{b['key']}:{p['key']}" for p in b["ports"]["buckets"]] \
                if etype == "service" else [str(b["key"])]
            out.setdefault(etype, {})[str(b["key"])] = keys
    return out


@pytest.fixture(scope="module")
def partitioned(cluster, backfilled):
    """Three `fwsiem run --partition I/3` processes started together over the same backfill."""
    tmp, tag = backfilled["tmp"], backfilled["tag"]
    toml = write_config(tmp / "three.toml", cluster.url, tag, f"{tag}-three")
    procs = [subprocess.Popen([sys.executable, "-m", "plugin", "run", "--from", FROM, "--to", TO,
                               "--partition", f"{i}/3"], env=fwsiem_env(toml), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    errs = [p.communicate(timeout=1200)[1] for p in procs]
    for p, err in zip(procs, errs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert f"{WINDOWS} windows processed" in err
    return {"one": f"fwsiem-anomalies-{tag}", "three": f"fwsiem-anomalies-{tag}-three",
            "incidents_one": f"fwsiem-incidents-{tag}",
            "incidents_three": f"fwsiem-incidents-{tag}-three",
            "state": f"fwsiem-state-{tag}-three"}


def test_three_partitioned_workers_share_the_entities_without_overlap(cluster, partitioned):
    store = cluster.store
    cps = [load_checkpoint(store, partitioned["state"], i, 3, state_key()) for i in range(3)]
    assert [cp.windows_done for cp in cps] == [WINDOWS] * 3
    for etype, entities in entity_keys(store).items():
        assert entities, etype
        for entity, keys in entities.items():
            if not keys:  # an address seen without ports (ICMP) is no service
                continue
            owners = {i for i, cp in enumerate(cps) for key in keys
                      if cp.state.detectors[etype].profiles.keeps(key)}
            assert len(owners) == 1, (etype, entity, owners)
    docs = anomalies(store, partitioned["three"])
    assert docs
    for d in docs.values():
        assert d["detector"]["partition"] in ("0/3", "1/3", "2/3")


def without_worker(docs: dict) -> dict:
    """The documents as they would be from any worker: without ``detector.partition``."""
    out = {}
    for key, doc in docs.items():
        doc = json.loads(json.dumps(doc))
        doc["detector"].pop("partition")
        out[key] = doc
    return out


def test_three_partitioned_workers_write_what_one_worker_writes(cluster, partitioned):
    one = anomalies(cluster.store, partitioned["one"])
    three = anomalies(cluster.store, partitioned["three"])
    assert one
    assert set(three) == set(one)
    assert {k: d["score"] for k, d in three.items()} == {k: d["score"] for k, d in one.items()}
    # the same severities, incident roles and drill-downs: the documents differ only in the
    # worker that wrote them
    assert without_worker(three) == without_worker(one)
    incidents = anomalies(cluster.store, partitioned["incidents_one"])
    assert incidents
    assert without_worker(anomalies(cluster.store, partitioned["incidents_three"])) == \
        without_worker(incidents)


def test_a_node_stopped_during_ingest_loses_and_duplicates_nothing(cluster, tmp_path):
    store, tag = cluster.store, "clusternode"
    toml = write_config(tmp_path / "fwsiem.toml", cluster.url, tag)
    events = f"logs-fwsiem.{tag}-default"
    store.delete_index(events)
    setup = cluster.cli(toml, "setup")
    assert setup.returncode == 0, setup.stderr[-3000:]
    store.request("PUT", f"/_data_stream/{events}")
    wait_green(store)
    held = cluster.nodes_of(events)
    # the node with the primary, unless it is node 1, the HTTP endpoint fwsiem talks to
    victim = held["p"] if held["p"] != 1 else held["r"]
    n = 50_000
    log = tmp_path / "dfw.log"
    log.write_text("\n".join(nsx_lines(2, seed=4)[:n]) + "\n")
    assert sum(1 for _ in log.open()) == n
    proc = subprocess.Popen([sys.executable, "-m", "plugin", "ingest", "--json", "--no-progress",
                             str(log)], env=fwsiem_env(toml), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = 0
        deadline = time.monotonic() + 600
        while proc.poll() is None and seen < n // 10 and time.monotonic() < deadline:
            time.sleep(0.5)
            store.refresh(events)
            seen = store.count(events)
        assert proc.poll() is None, "the ingest ended before a node could be stopped"
        cluster.engine.stop_node(victim)
        assert proc.poll() is None, "the ingest finished before the node was gone"
        time.sleep(5)
        cluster.engine.start_node(victim)
        out, err = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0:  # spooled while the cluster could not take writes: replay it
        assert proc.returncode == 3, err[-3000:]
        summary = ingest_summary(cluster.cli(toml, "ingest", "--json", "--no-progress"))
    else:
        summary = json.loads(out[out.index("{"):])
    assert summary["dead_lettered"] == 0, summary
    wait_green(store)
    store.refresh(events)
    assert store.count(events) == n
    offsets = [h["_source"]["log"]["offset"] for h in store.scan(events, source=["log.offset"])]
    assert len(offsets) == n and len(set(offsets)) == n
    store.delete_index(events)
