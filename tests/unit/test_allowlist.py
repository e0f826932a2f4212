"""Allow-list recommender: features at four levels, weights, splits and models on synthetic traffic."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from ml import allowlist as al


def synthetic_events(seed: int = 0, n_vms: int = 24, hours: int = 48) -> tuple[pd.DataFrame, dict]:
    """SSH endpoints reached by their org's admins (routine, full sessions), by scanners
    (one SYN to many VMs, often reset) and by brute-forcers (heavy bursts against a few VMs,
    out-talking the admins), with each endpoint's allow-list = its admins."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-03-04T00:00:00Z")
    rows = []
    allow = {}
    scanners = [f"71.6.{rng.integers(128, 255)}.{i}" for i in range(12)]
    for v in range(n_vms):
        org = v % 4
        vm = f"10.{16 + org}.1.{10 + v}"
        admins = [f"100.64.{org}.{a}" for a in range(1, 4)]
        allow[(vm, 22)] = [f"100.64.{org}.0/27"]
        for h in range(hours):
            for a in admins:
                if rng.random() < 0.5:
                    for _ in range(int(rng.integers(1, 4))):
                        sp = int(rng.integers(32768, 60999))
                        ts = t0 + pd.Timedelta(hours=h, minutes=int(rng.integers(60)))
                        rows.append((ts, a, sp, vm, 22, "S"))
                        rows.append((ts, vm, 22, a, sp, "SA"))
                        rows.append((ts + pd.Timedelta(minutes=1), a, sp, vm, 22, "FA"))
        for s in scanners:
            for _ in range(int(rng.integers(0, 3))):
                ts = t0 + pd.Timedelta(hours=int(rng.integers(hours)), minutes=int(rng.integers(60)))
                sp = int(rng.integers(1024, 65535))
                rows.append((ts, s, sp, vm, 22, "S"))
                if rng.random() < 0.5:
                    rows.append((ts, vm, 22, s, sp, "R"))
    # brute-forcers: heavy bursts of short sessions against a few VMs, within an hour or two
    for b in range(4):
        src = f"80.82.64.{b + 1}"
        for v in rng.choice(n_vms, 3, replace=False):
            vm = f"10.{16 + v % 4}.1.{10 + v}"
            start = int(rng.integers(hours - 2))
            for _ in range(150):
                ts = t0 + pd.Timedelta(hours=start, minutes=float(rng.uniform(0, 90)))
                sp = int(rng.integers(1024, 65535))
                rows.append((ts, src, sp, vm, 22, "S"))
                rows.append((ts, vm, 22, src, sp, "SA"))
                rows.append((ts, src, sp, vm, 22, "R"))
    df = pd.DataFrame(rows, columns=["@timestamp", "source.ip", "source.port", "destination.ip",
                                     "destination.port", "nsx.dfw.tcp_flags"])
    df["network.transport"] = "tcp"
    return df, allow


@pytest.fixture(scope="module")
def data():
    df, allow = synthetic_events()
    fine = al.fine_table_from_events(df)
    feats = al.pair_features(fine)
    return df, allow, fine, feats


def test_fine_table_counts_every_event_once(data):
    df, _, fine, _ = data
    # every event is either sent to an endpoint or a reply from one: nothing lost, nothing doubled
    assert fine["sent"].sum() + fine["recv"].sum() == len(df)
    syn_sent = ((df["nsx.dfw.tcp_flags"] == "S") & df["destination.ip"].str.startswith("10.")).sum()
    assert fine["sent_syn"].sum() == syn_sent


def test_levels_see_a_scanner_as_broad_and_an_admin_as_local(data):
    _, _, _, feats = data
    remotes = feats.index.get_level_values("remote")
    scan = feats[remotes.str.startswith("71.6.")]
    brute = feats[remotes.str.startswith("80.82.")]
    # brute-forcers out-talk the admins: traffic volume alone would allow them
    assert brute["importance"].median() > feats[remotes.str.startswith("100.64.")][
        "importance"].median()
    admin = feats[remotes.str.startswith("100.64.")]
    # cloud level: a scanner talks to far more of the VMs than an admin does
    assert scan["cloud.vm_share"].min() > admin["cloud.vm_share"].max()
    # an admin's share of its organisation's VMs is high although its cloud share is low
    assert (admin["org.vm_share"] > admin["cloud.vm_share"]).all()
    # VM and endpoint level: the remote always talks to that one VM
    assert (feats["vm.vm_share"] == 1).all() and (feats["endpoint.vm_share"] == 1).all()
    # scanners send SYNs and get resets; admins also finish their sessions
    assert scan["endpoint.sent_fin"].max() == 0 and admin["endpoint.sent_fin"].min() > 0
    assert set(al.FEATURE_NAMES) <= set(feats.columns)
    assert len(al.FEATURE_NAMES) == 4 * len(al.BASE_FEATURES)


def test_importance_is_the_share_of_the_endpoint_traffic(data):
    df, _, _, feats = data
    sums = feats.groupby(level=["vm", "port"])["importance"].sum()
    assert np.allclose(sums, 1.0)
    vm, port, remote = feats.index[0]
    pair = ((df["source.ip"] == remote) & (df["destination.ip"] == vm)) | (
        (df["destination.ip"] == remote) & (df["source.ip"] == vm))
    endpoint = ((df["destination.ip"] == vm) & (df["destination.port"] == port)) | (
        (df["source.ip"] == vm) & (df["source.port"] == port))
    assert feats["importance"].iloc[0] == pytest.approx(pair.sum() / endpoint.sum())


def test_time_features_match_a_direct_count(data):
    df, _, _, feats = data
    vm, port, remote = feats.index[0]
    mask = (df["source.ip"] == remote) | (df["destination.ip"] == remote)
    hourly = df[mask].set_index("@timestamp").resample("1h").size()
    # the observed period runs from the first to the last hour with any traffic
    hours = pd.date_range(df["@timestamp"].min().floor("1h"), df["@timestamp"].max().floor("1h"),
                          freq="1h")
    hourly = hourly.reindex(hours, fill_value=0)
    row = feats.loc[(vm, port, remote)]
    assert row["cloud.hourly_avg"] == pytest.approx(hourly.mean())
    assert row["cloud.hourly_std"] == pytest.approx(hourly.std(ddof=0))
    assert row["cloud.inactive_hours"] == pytest.approx((hourly == 0).mean())
    assert row["cloud.hourly_max_over_avg"] == pytest.approx(hourly.max() / hourly.mean())


def test_weighted_auc_matches_pairwise_definition():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    s = rng.normal(size=60) + y
    imp = rng.random(60)
    w = al.class_balanced_weights(imp, y)
    assert w[y == 1].sum() == pytest.approx(1) and w[y == 0].sum() == pytest.approx(1)
    num = sum(w[i] * w[j] * ((s[i] > s[j]) + 0.5 * (s[i] == s[j]))
              for i, j in itertools.product(np.flatnonzero(y == 1), np.flatnonzero(y == 0)))
    assert al.weighted_auc(y, s, imp) == pytest.approx(num / (w[y == 1].sum() * w[y == 0].sum()))


def test_split_keeps_endpoints_whole_and_disjoint():
    eps = [(f"10.0.0.{i}", p) for i in range(20) for p in (22, 443)]
    tr, va, te = al.split_endpoints(eps, random_state=3)
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert len(tr) == 24 and len(va) == 8 and len(te) == 8
    assert al.split_endpoints(eps, random_state=3) == (tr, va, te)


def test_learned_models_beat_allow_if_seen(data):
    _, allow, _, feats = data
    labels = al.label_pairs(feats.index, allow)
    assert labels.notna().all()
    res = al.evaluate(feats, labels, random_state=0, svm_C=(1.0,), gbm_learning_rate=(0.1,))
    auc = res["auc"]
    assert set(auc) == {"baseline_seen", "paper_svm", "fwsiem_gbm"}
    # test endpoints are unseen in training: no endpoint leaks between the splits
    test_eps = {(v, p) for v, p, _ in res["test_index"]}
    assert res["counts"]["test_pairs"] == len(res["test_index"]) and len(test_eps) >= 2
    assert auc["paper_svm"] > auc["baseline_seen"] + 0.1
    assert auc["fwsiem_gbm"] > auc["baseline_seen"] + 0.1
    fpr, tpr = res["roc"]["fwsiem_gbm"]
    assert fpr[0] == 0 and tpr[-1] == pytest.approx(1)


def test_models_follow_scikit_learn_conventions():
    from sklearn.base import clone

    m = al.paper_model(C=3.0)
    assert clone(m).get_params()["svm__C"] == 3.0
    g = al.fwsiem_model(learning_rate=0.2)
    assert clone(g).get_params()["learning_rate"] == 0.2
    assert not hasattr(al.SeenBaseline(), "classes_")
