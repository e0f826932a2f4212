"""Action predictor: fwsiem's model generalises to hosts and days it has not seen; the seed does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from ml.action import (
    action_predictor,
    fit_weighted,
    seed_baseline,
    time_split,
    tuples_from_events,
)
from ml.metrics import classification_scores

SERVICES = [("10.1.1", "tcp", 443), ("10.1.1", "tcp", 80), ("10.1.2", "tcp", 8080),
            ("10.1.3", "tcp", 5432), ("10.1.3", "tcp", 22), ("10.1.2", "udp", 161),
            ("10.1.3", "tcp", 3306), ("10.1.1", "tcp", 3389)]
SOURCES = ["10.1.1", "10.1.2", "10.1.4", "203.0.113", "198.51.100"]


def policy(snet: str, dnet: str, proto: str, dport: int) -> str:
    """A small segmentation policy: web open to all, app from web, db from app, ssh from mgmt."""
    if dnet == "10.1.1" and proto == "tcp" and dport in (80, 443):
        return "pass"
    if snet.startswith("10.1."):
        if (snet, dnet, dport) in {("10.1.1", "10.1.2", 8080), ("10.1.2", "10.1.3", 5432)}:
            return "pass"
        if snet == "10.1.4" and dport == 22:
            return "pass"
        if dnet == "10.1.3":
            return "reject"
    return "drop"


def tuples(n: int = 3000, days: int = 5, seed: int = 0) -> pd.DataFrame:
    """Rule-decided tuples; every day brings hosts (last octets) that earlier days never had."""
    rng = np.random.default_rng(seed)
    day = rng.integers(0, days, n)
    host_lo = 10 + 30 * day
    snet = np.array(SOURCES)[rng.integers(0, len(SOURCES), n)]
    svc = [SERVICES[i] for i in rng.integers(0, len(SERVICES), n)]
    rows = []
    for i in range(n):
        dnet, proto, dport = svc[i]
        rows.append({
            "timestamp": pd.Timestamp("2024-03-04", tz="UTC") + pd.Timedelta(days=int(day[i]),
                                                                              minutes=i % 1440),
            "proto": proto, "sip": f"{snet[i]}.{host_lo[i] + rng.integers(0, 30)}",
            "dip": f"{dnet}.{host_lo[i] + rng.integers(0, 30)}",
            "sport": int(rng.integers(49152, 65535)), "dport": dport,
            "direction": "ingress", "action": policy(snet[i], dnet, proto, dport)})
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def one_thread():
    # OpenMP threads of the boosted trees crawl on a busy 2-core machine; one is steadier.
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def split():
    return time_split(tuples(), test_fraction=0.4)


def test_time_split_tests_on_later_days_only(split):
    train, test = split
    assert train["timestamp"].max() < test["timestamp"].min()
    assert len(train) and len(test)


def test_fwsiem_predictor_generalises_to_unseen_hosts_on_later_days(split):
    train, test = split
    assert len(set(test["dip"]) - set(train["dip"])) > len(set(test["dip"])) / 2
    model = fit_weighted(action_predictor(), train, train["action"])
    scores = classification_scores(test["action"], model.predict(test))
    assert scores["accuracy"] >= 0.95


def test_fwsiem_predictor_beats_the_seed_baseline_on_the_same_split(split):
    train, test = split
    ours = fit_weighted(action_predictor(), train, train["action"]).predict(test)
    seed = seed_baseline(0).fit(train, train["action"]).predict(test)
    assert (ours == test["action"]).mean() > (seed == test["action"]).mean()


def test_random_forest_learner_also_generalises(split):
    train, test = split
    model = fit_weighted(action_predictor("random_forest", max_iter=50), train, train["action"])
    assert (model.predict(test) == test["action"]).mean() >= 0.95


def test_sample_weights_count_as_repeated_events():
    frame = tuples(n=600, days=1)
    once = frame.drop_duplicates(subset=["proto", "sip", "dip", "sport", "dport"])
    flipped = once.iloc[:1].assign(action="reject")
    table = pd.concat([once, flipped])
    weights = np.r_[np.ones(len(once)), [1000.0]]
    model = fit_weighted(seed_baseline(0), table, table["action"], weights)
    assert model.predict(flipped)[0] == "reject"


def test_pipelines_clone_with_their_parameters():
    model = action_predictor("random_forest", max_iter=7, random_state=3)
    copy = clone(model)
    assert copy.get_params()["model__n_estimators"] == 7
    assert copy.get_params()["model__random_state"] == 3


def test_events_with_ecs_names_become_tuples():
    events = pd.DataFrame({"network.transport": ["TCP", "icmp"], "source.ip": ["10.0.0.1"] * 2,
                           "destination.ip": ["10.0.0.2"] * 2, "source.port": [40000, None],
                           "destination.port": [22, None], "event.action": ["pass", "drop"]})
    got = tuples_from_events(events)
    assert got["proto"].tolist() == ["tcp", "icmp"]
    assert got["dport"].tolist() == [22, 0]
    assert got["action"].tolist() == ["pass", "drop"]
