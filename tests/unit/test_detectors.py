"""Window detectors: river conventions, warm-up, explanations, suppression, serialisation."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from ml.autoencoder import PortVectorAutoencoder
from ml.detectors import BaselineDeviation, WindowDetector, make_pipeline

FEATS = ["events", "dst_ports", "denied_share"]


def normal_window(rng, n=30):
    return [(f"10.0.0.{i}", {"events": rng.randint(5, 15), "dst_ports": rng.randint(1, 3),
                             "denied_share": rng.random() * 0.05}) for i in range(n)]


def test_baseline_deviation_follows_river_conventions():
    # river.checks.check_estimator downloads data sets, so the conventions are checked here
    det = BaselineDeviation(alpha=0.2, min_std=0.3, grace_period=2)
    assert det._get_params() == {"alpha": 0.2, "min_std": 0.3, "grace_period": 2}
    for n in (10, 11, 12):
        assert det.learn_one({"events": n}) is None
    fresh = det.clone()
    assert fresh._get_params() == det._get_params() and fresh.score_one({"events": 10}) == 0
    assert det.score_one({"events": 5000}) > det.score_one({"events": 11}) >= 0


@pytest.mark.parametrize("kind", ["hst", "loda", "baseline"])
def test_pipelines_learn_and_score_one_dict_at_a_time(kind):
    model = make_pipeline(kind)
    rng = random.Random(0)
    for _, x in normal_window(rng, 200):
        model.learn_one(x)
    normal = model.score_one({"events": 10, "dst_ports": 2, "denied_share": 0.0})
    odd = model.score_one({"events": 9000, "dst_ports": 800, "denied_share": 1.0})
    assert odd >= normal


def test_nothing_is_reported_during_warm_up():
    det = WindowDetector("source", FEATS, warmup_windows=10)
    rng = random.Random(1)
    for _ in range(10):
        rows = normal_window(rng) + [("10.9.9.9", {"events": 5000, "dst_ports": 900,
                                                  "denied_share": 1.0})]
        assert det.process(rows) == []


def test_a_scanner_is_reported_with_its_leading_feature_and_expected_values():
    det = WindowDetector("source", FEATS, warmup_windows=20)
    rng = random.Random(2)
    for _ in range(40):
        det.process(normal_window(rng))
    scan = {"events": 400, "dst_ports": 400, "denied_share": 0.95}
    found = det.process(normal_window(rng) + [("10.9.9.9", scan)])
    assert [f.entity for f in found] == ["10.9.9.9"]
    f = found[0]
    assert f.severity in ("medium", "high", "critical")
    assert f.score >= f.threshold
    assert f.contributors[0]["feature"] in FEATS
    assert f.contributors[0]["observed"] > f.contributors[0]["expected"]


def test_quiet_windows_raise_no_medium_findings():
    det = WindowDetector("source", FEATS, warmup_windows=20)
    rng = random.Random(3)
    medium = []
    for _ in range(300):
        medium += [f for f in det.process(normal_window(rng)) if f.severity != "low"]
    assert medium == []


def test_suppressed_pattern_is_not_reported_but_other_patterns_are():
    det = WindowDetector("source", FEATS, warmup_windows=20)
    rng = random.Random(4)
    for _ in range(40):
        det.process(normal_window(rng))
    scan = {"events": 400, "dst_ports": 400, "denied_share": 0.95}
    clone = pickle.loads(pickle.dumps(det))
    lead = det.process([("10.9.9.9", scan)])[0].contributors[0]["feature"]
    assert clone.process([("10.9.9.9", scan)], suppressed={"10.9.9.9": {lead}}) == []
    other = pickle.loads(pickle.dumps(clone))
    assert other.process([("10.9.9.9", scan)], suppressed={"10.9.9.9": {"nothing"}})


def test_state_round_trips_through_pickle_with_identical_scores():
    det = WindowDetector("source", FEATS, warmup_windows=5)
    rng = random.Random(5)
    for _ in range(20):
        det.process(normal_window(rng))
    copy = pickle.loads(pickle.dumps(det))
    rows = normal_window(random.Random(9)) + [("x", {"events": 999, "dst_ports": 99,
                                                     "denied_share": 1.0})]
    a, b = det.process(rows), copy.process(rows)
    assert [(f.entity, f.score, f.severity) for f in a] == [(f.entity, f.score, f.severity)
                                                             for f in b]


def test_autoencoder_flags_a_flood_vector_and_follows_sklearn_conventions():
    rng = np.random.default_rng(0)
    X = rng.poisson(30, size=(300, 8)).astype(float)
    ae = PortVectorAutoencoder(max_iter=300, random_state=0)
    assert ae.fit(X) is ae
    assert hasattr(ae, "threshold_")
    flood = X[:1].copy()
    flood[0, 2] = 50_000
    assert ae.predict(flood).tolist() == [-1]
    assert (ae.predict(X) == 1).mean() > 0.95
    assert ae.reconstruction_error(flood)[0] > ae.threshold_
    assert np.argmax(ae.feature_errors(flood)[0]) == 2
