"""Traffic classifier: seed 004's aggregates computed right, and the log-feature model's gain."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from ml.metrics import classification_scores
from ml.traffic import (
    AGGREGATE_COLUMNS,
    SERVICE_COLUMNS,
    flow_aggregates,
    seed_knn,
    traffic_classifier,
)


@pytest.fixture(autouse=True)
def one_thread():
    # OpenMP threads of the boosted trees crawl on a busy 2-core machine; one is steadier.
    with threadpool_limits(1):
        yield


def test_aggregates_per_destination_match_a_hand_computation():
    flows = pd.DataFrame({
        "destination.ip": ["10.0.0.1", "10.0.0.1", "10.0.0.2"],
        "@timestamp": pd.to_datetime(["2024-01-01T00:00:00Z", "2024-01-01T00:00:30Z",
                                      "2024-01-01T00:00:00Z"]),
        "event.duration": [10e9, 30e9, 4e9],
        "source.packets": [10, 20, 3], "destination.packets": [10, 20, 1],
        "source.bytes": [1000, 3000, 300], "destination.bytes": [1000, 3000, 100],
    })
    agg = flow_aggregates(flows).set_index("destination.ip")
    first = agg.loc["10.0.0.1"]
    # 60 s from the first start to the last end; 60 packets, 8000 bytes in two flows
    assert (first["duration"], first["flows"], first["packets"], first["bytes"]) == (60, 2, 60, 8000)
    assert first["pps"] == 1.0 and first["bps"] == 8000 * 8 / 60 and first["bpp"] == 8000 / 60
    assert agg.loc["10.0.0.2", "bpp"] == 100.0


def test_aggregates_per_window_split_the_same_destination():
    flows = pd.DataFrame({"destination.ip": ["10.0.0.1"] * 2,
                          "@timestamp": pd.to_datetime(["2024-01-01T00:10:00Z",
                                                        "2024-01-01T01:10:00Z"]),
                          "event.duration": [1e9, 1e9], "network.packets": [5, 7],
                          "network.bytes": [500, 700]})
    agg = flow_aggregates(flows, window="1h")
    assert agg["packets"].tolist() == [5, 7]


def classes(n_per_class: int = 60, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Traffic whose classes differ in shape over orders of magnitude, as real flows do."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    shapes = {  # (flows, packets per flow, bytes per packet, seconds) medians
        "web": (200, 20, 600, 3600), "mail": (50, 40, 900, 3600),
        "backup": (3, 200000, 1450, 1800), "flood": (5000, 2, 60, 300),
        "dns": (3000, 2, 90, 3600),
    }
    for name, (flows, ppf, bpp, secs) in shapes.items():
        for _ in range(n_per_class):
            f = max(1.0, flows * rng.lognormal(0, 0.8))
            p = f * ppf * rng.lognormal(0, 0.5)
            b = p * bpp * rng.lognormal(0, 0.15)
            d = secs * rng.lognormal(0, 0.5)
            rows.append([d, f, p, b, p / d, 8 * b / d, b / p])
            labels.append(name)
    return pd.DataFrame(rows, columns=AGGREGATE_COLUMNS), np.array(labels)


def test_log_feature_classifier_reaches_the_goal_and_beats_seed_knn():
    X, y = classes()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y,
                                                        random_state=0)
    ours = classification_scores(y_test, traffic_classifier().fit(X_train, y_train).predict(X_test))
    raw = classification_scores(y_test, seed_knn(False).fit(X_train, y_train).predict(X_test))
    norm = classification_scores(y_test, seed_knn(True).fit(X_train, y_train).predict(X_test))
    assert ours["macro_f1"] >= 0.90
    assert ours["macro_f1"] > max(raw["macro_f1"], norm["macro_f1"])


def test_service_columns_count_sources_and_ports_and_name_the_top_port():
    flows = pd.DataFrame({
        "destination.ip": ["10.0.0.1"] * 4,
        "source.ip": ["10.1.0.1", "10.1.0.2", "10.1.0.2", "10.1.0.3"],
        "destination.port": [443, 443, 443, 80],
        "@timestamp": pd.to_datetime(["2024-01-01T00:00:00Z"] * 4),
        "event.duration": [1e9] * 4, "network.packets": [1] * 4, "network.bytes": [100] * 4,
    })
    row = flow_aggregates(flows).iloc[0]
    assert (row["sources"], row["dports"], row["top_dport"]) == (3, 2, 443)


def test_service_features_separate_classes_the_seven_aggregates_cannot():
    X, y = classes()
    # two services with identical volumes, told apart only by the port they are offered on
    same = X[y == "web"].copy()
    X2 = pd.concat([X[y == "web"], same]).reset_index(drop=True)
    y2 = np.array(["web"] * len(same) + ["app"] * len(same))
    X2["sources"], X2["dports"] = 10.0, 1.0
    X2["top_dport"] = np.where(y2 == "web", 443.0, 8080.0)
    X_train, X_test, y_train, y_test = train_test_split(X2, y2, test_size=0.3, stratify=y2,
                                                        random_state=0)
    cols = AGGREGATE_COLUMNS + SERVICE_COLUMNS
    with_service = traffic_classifier(service=True).fit(X_train[cols], y_train)
    assert (with_service.predict(X_test[cols]) == y_test).mean() == 1.0
