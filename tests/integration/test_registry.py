"""Model registry against real engines: artifacts round-trip, tampering is refused, promotion is guarded."""

from __future__ import annotations

import base64
import hashlib
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from plugin.errors import ArtifactIntegrityError
from plugin.registry import PromotionRefused, Registry
from plugin.store import doc_id

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def registry(engine, unique_prefix):
    index = f"{unique_prefix}-models"
    engine.store.delete_index(index)
    # small chunks, so even a tiny model spans several documents
    yield Registry(engine.store, index, tolerance=0.01, chunk_bytes=256)
    engine.store.delete_index(index)


def _model(seed: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 3))
    return DecisionTreeClassifier(random_state=seed).fit(X, X[:, 0] > 0), X


def test_a_registered_model_loads_back_with_the_same_predictions(registry):
    model, X = _model(0)
    record = registry.register("action", model, metrics={"accuracy": 0.9},
                               holdout_metric="accuracy",
                               data={"index": "logs-fwsiem.*", "n_rows": 60})
    assert record.doc["artifact"]["chunks"] > 1
    loaded, got = registry.load("action", record.version)
    assert got.sha256 == record.sha256
    assert (loaded.predict(X) == model.predict(X)).all()
    assert got.doc["libraries"]["scikit-learn"]
    assert got.doc["data"]["index"] == "logs-fwsiem.*"


def test_a_tampered_artifact_is_refused(registry, engine):
    model, _ = _model(0)
    record = registry.register("action", model, metrics={"accuracy": 0.9},
                               holdout_metric="accuracy")
    chunk_id = doc_id("model-artifact", "action", record.version, 1)
    chunk = engine.store.get_doc(registry.index, chunk_id)
    data = bytearray(chunk["chunk"]["data"].encode())
    data[10] = ord("A") if data[10] != ord("A") else ord("B")
    engine.store.update_doc(registry.index, chunk_id, {"chunk": {"data": data.decode()}},
                            refresh=True)
    with pytest.raises(ArtifactIntegrityError, match="refused"):
        registry.load("action", record.version)


def test_a_missing_chunk_is_refused(registry, engine):
    model, _ = _model(0)
    record = registry.register("action", model, metrics={"accuracy": 0.9},
                               holdout_metric="accuracy")
    engine.store.delete_doc(registry.index, doc_id("model-artifact", "action", record.version, 0),
                            refresh=True)
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        registry.load("action", record.version)


def test_promotion_refuses_a_worse_model_unless_forced_and_rollback_restores(registry):
    first = registry.register("action", _model(0)[0], metrics={"accuracy": 0.95},
                              holdout_metric="accuracy")
    registry.promote("action", first.version)
    within = registry.register("action", _model(1)[0], metrics={"accuracy": 0.945},
                               holdout_metric="accuracy")
    registry.promote("action", within.version)  # worse, but within the tolerance
    assert registry.active("action").version == within.version
    worse = registry.register("action", _model(2)[0], metrics={"accuracy": 0.80},
                              holdout_metric="accuracy")
    with pytest.raises(PromotionRefused, match="tolerance"):
        registry.promote("action", worse.version)
    assert registry.active("action").version == within.version
    registry.promote("action", worse.version, force=True)
    assert registry.active("action").version == worse.version
    assert registry.rollback("action").version == within.version
    assert registry.active("action").version == within.version
    statuses = {r.version: r.status for r in registry.records("action")}
    assert statuses == {first.version: "retired", within.version: "active",
                        worse.version: "rolled_back"}


def test_a_model_signed_with_another_key_is_refused_until_that_key_is_given(engine,
                                                                            unique_prefix):
    index = f"{unique_prefix}-keys"
    engine.store.delete_index(index)
    try:
        theirs = Registry(engine.store, index, key=b"k" * 64)
        record = theirs.register("action", _model(0)[0], metrics={"accuracy": 0.9},
                                 holdout_metric="accuracy")
        ours = Registry(engine.store, index, key=b"o" * 64)
        with pytest.raises(ArtifactIntegrityError, match="not signed by this machine"):
            ours.load("action", record.version)
        loaded, _ = Registry(engine.store, index, key=b"k" * 64).load("action", record.version)
        assert loaded.get_params()["random_state"] == 0
    finally:
        engine.store.delete_index(index)


class _Payload:
    """What a cluster writer would store: unpickling it calls exec."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


@pytest.mark.parametrize("signature", [None, "0" * 64], ids=["unsigned", "forged"])
def test_a_crafted_pickle_in_the_models_index_never_runs_on_predict(os_engine, unique_prefix,
                                                                    tmp_path, signature):
    """The registry probe: a chunk holding an exec pickle and an active record with its sha256."""
    index = f"{unique_prefix}-{'forged' if signature else 'unsigned'}-models"
    store = os_engine.store
    store.delete_index(index)
    Registry(store, index).ensure_index()
    marker = tmp_path / "payload-ran"
    blob = pickle.dumps(_Payload(str(marker)))
    artifact = {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob), "chunks": 1,
                "format": "joblib"}
    if signature:
        artifact.update(format="joblib+hmac-sha256", hmac=signature)
    store.index_doc(index, {"doc_type": "chunk", "model": {"name": "action", "version": 1},
                            "chunk": {"index": 0, "data": base64.b64encode(blob).decode()}},
                    id=doc_id("model-artifact", "action", 1, 0), refresh=True)
    store.index_doc(index, {"doc_type": "model", "@timestamp": "2026-01-01T00:00:00Z",
                            "model": {"name": "action", "version": 1, "status": "active"},
                            "holdout": {"metric": "accuracy", "value": 1.0},
                            "artifact": artifact}, id=doc_id("model", "action", 1), refresh=True)
    try:
        env = {**os.environ, "FWSIEM_CONFIG": "", "FWSIEM_INDICES_MODELS": index,
               "FWSIEM_MODELS_KEY_FILE": str(tmp_path / "fwsiem.key")}
        proc = subprocess.run(
            [sys.executable, "-m", "plugin", "--url", os_engine.url, "predict", "--proto", "tcp",
             "--src", "10.0.0.1", "--dst", "10.0.0.2", "--dport", "22", "--no-evidence"],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    finally:
        store.delete_index(index)
    assert not marker.exists(), "the pickle from the cluster was run"
    assert proc.returncode == ArtifactIntegrityError.exit_code, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "refused" in errors[0] and index in errors[0], proc.stderr
    assert proc.stdout == ""


def test_a_signed_artifact_copied_to_another_version_is_refused(registry, engine):
    """A writer who copies a genuine artifact and record to another version cannot reuse the
    signature: it binds the name and version."""
    record = registry.register("action", _model(0)[0], metrics={"accuracy": 0.9},
                               holdout_metric="accuracy")
    store = engine.store
    for i in range(record.doc["artifact"]["chunks"]):
        chunk = store.get_doc(registry.index, doc_id("model-artifact", "action", 1, i))
        chunk["model"]["version"] = 7
        store.index_doc(registry.index, chunk, id=doc_id("model-artifact", "action", 7, i))
    copied = {**record.doc, "model": {**record.doc["model"], "version": 7}}
    store.index_doc(registry.index, copied, id=doc_id("model", "action", 7), refresh=True)
    with pytest.raises(ArtifactIntegrityError, match="not signed"):
        registry.load("action", 7)
