"""Model registry against real engines: artifacts round-trip, tampering is refused, promotion is guarded."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from plugin.errors import ArtifactIntegrityError
from plugin.registry import PromotionRefused, Registry
from plugin.store import doc_id


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
