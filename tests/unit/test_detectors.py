"""Window detectors: river conventions, warm-up, explanations, suppression, serialisation."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from ml import features as F
from ml.autoencoder import PortVectorAutoencoder
from ml.detectors import BaselineDeviation, ProfileDetector, WindowDetector, make_pipeline

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


def test_profile_detector_follows_river_conventions():
    det = ProfileDetector("source", ["events", "dst_ports"], prior_rows=5)
    assert det._get_params() == {"entity_type": "source", "features": ["events", "dst_ports"],
                                 "prior_rows": 5}
    rng = random.Random(0)
    for _ in range(40):
        for ip in ("10.0.0.1", "10.0.0.2"):
            x = {"_entity": ip, "_class": "internal", "events": rng.randint(8, 12),
                 "dst_ports": 2}
            assert det.learn_one(x) is None
    fresh = det.clone()
    assert fresh._get_params() == det._get_params() and len(fresh.profiles) == 0
    usual = det.score_one({"_entity": "10.0.0.1", "_class": "internal", "events": 10,
                           "dst_ports": 2})
    odd = det.score_one({"_entity": "10.0.0.1", "_class": "internal", "events": 9000,
                         "dst_ports": 900})
    assert odd > 6 > usual
    assert det.last_deviations.argmax() in (0, 1)


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


# -- profiles: what is normal per entity and per class ------------------------------------------

SRC = list(F.FEATURES["source"])


def vm_row(rng, i, **extra):
    row = {"events": rng.randint(8, 14), "dst_ips": rng.randint(2, 4), "dst_ports": 2,
           "denied_share": 0.0, "bytes_out": rng.randint(2000, 4000), "packets_out": 20,
           "new_peer_share": 0.0, "denied": 0, "new_peers": 0, "new_external_peers": 0,
           "peers": 3, "_class": "internal"}
    row.update(extra)
    return (f"10.0.0.{i}", row)


def client_row(rng, i):
    # internet clients: now and then one is refused, or reaches a web server it never used
    denied, new = int(rng.random() < 0.2), int(rng.random() < 0.3)
    return (f"81.2.0.{i}", {"events": 1 + denied, "dst_ips": 1, "dst_ports": 1,
                            "denied_share": denied / (1 + denied), "bytes_out": 0,
                            "packets_out": 0, "new_peer_share": float(new), "denied": denied,
                            "new_peers": new, "new_external_peers": 0, "peers": 1,
                            "_class": "external"})


def estate(rng, w):
    return [vm_row(rng, i) for i in range(20)] + [client_row(rng, (w * 7 + i) % 200)
                                                   for i in range(10)]


def warm_source_detector(windows=300, seed=0):
    det = WindowDetector("source", SRC, warmup_windows=30)
    rng = random.Random(seed)
    for w in range(windows):
        assert [f for f in det.process(estate(rng, w)) if f.severity != "low"] == []
    return det, rng


def test_a_new_internet_source_probing_hosts_is_compared_with_other_internet_sources():
    det, rng = warm_source_detector()
    # three denied attempts, each to an internal host it never reached: no single feature is
    # extreme, together they are (a slow horizontal scan)
    probe = ("45.95.168.7", {"events": 3, "dst_ips": 3, "dst_ports": 1, "denied_share": 1.0,
                             "bytes_out": 0, "packets_out": 0, "new_peer_share": 1.0,
                             "denied": 3, "new_peers": 3, "new_external_peers": 0, "peers": 3,
                             "_class": "external"})
    found = det.process(estate(rng, 300) + [probe])
    assert [f.entity for f in found if f.severity != "low"] == ["45.95.168.7"]
    assert {c["feature"] for c in found[0].contributors} & {"new_peers", "denied"}


def test_a_volume_seen_before_is_not_news_but_a_new_record_is():
    det = WindowDetector("source", SRC, warmup_windows=30)
    rng = random.Random(1)
    reported = []
    for w in range(600):
        rows = estate(rng, w)
        if w % 100 == 50:   # a nightly transfer out of the estate, always about 40 MB
            rows[0] = vm_row(rng, 0, bytes_out=40_000_000, packets_out=30_000)
        reported += [(w, f.entity) for f in det.process(rows) if f.severity != "low"]
    assert all(w < 100 for w, _ in reported)   # at most the first one
    leak = vm_row(rng, 0, bytes_out=4_000_000_000, packets_out=3_000_000)
    found = det.process([leak] + estate(rng, 600)[1:])
    assert [(f.entity, f.contributors[0]["feature"]) for f in found] in (
        [("10.0.0.0", "bytes_out")], [("10.0.0.0", "packets_out")])


def test_a_tiny_volume_where_there_was_none_is_not_reported_but_a_large_one_is():
    det = WindowDetector("source", SRC, warmup_windows=30)
    rng = random.Random(1)
    for w in range(300):   # 10.0.0.3 never sends anything out of the estate
        rows = estate(rng, w)
        rows[3] = vm_row(rng, 3, bytes_out=0, packets_out=0)
        det.process(rows)
    rows = estate(rng, 300)
    rows[3] = vm_row(rng, 3, bytes_out=300, packets_out=3)
    assert [f for f in det.process(rows) if f.severity != "low"] == []
    rows[3] = vm_row(rng, 3, bytes_out=90_000_000, packets_out=70_000)
    assert [f.entity for f in det.process(rows) if f.severity != "low"] == ["10.0.0.3"]


def test_first_contact_with_an_external_address_depends_on_how_rare_that_is():
    quiet, rng = warm_source_detector(seed=2)
    first = vm_row(rng, 4, new_external_peers=1)
    rows = estate(rng, 300)
    rows[4] = first
    assert [f.entity for f in quiet.process(rows) if f.severity != "low"] == ["10.0.0.4"]
    # where hosts reach new addresses all the time, one more is not an anomaly
    busy = WindowDetector("source", SRC, warmup_windows=30)
    rng = random.Random(2)
    for w in range(300):
        rows = estate(rng, w)
        rows[w % 20] = vm_row(rng, w % 20, new_external_peers=1)
        busy.process(rows)
    rows = estate(rng, 300)
    rows[4] = first
    assert [f for f in busy.process(rows) if f.severity != "low"] == []


def test_rare_denied_attempts_are_judged_by_the_entitys_own_rate():
    det, rng = warm_source_detector(seed=3)
    rows = estate(rng, 300)
    rows[5] = vm_row(rng, 5, denied=6, denied_share=0.5)
    found = det.process(rows)
    assert [f.entity for f in found if f.severity != "low"] == ["10.0.0.5"]
    assert found[0].contributors[0]["feature"] in ("denied", "denied_share")


def test_a_short_quiet_history_leans_on_its_class_for_the_spread():
    from ml.detectors import EntityProfiles

    def fed(variance_prior):
        p = EntityProfiles("service", ["events", "bytes"],
                           variance_prior=variance_prior)
        rng = random.Random(6)
        for i in range(400):   # busy egress services in general: bytes vary over orders of magnitude
            p.learn(f"s{i % 40}", "external<internal",
                    {"events": 900, "bytes": 10 ** rng.uniform(2, 6)})
        for _ in range(6):     # one mail server seen a few times, always with ~1 kB
            p.learn("mx:587", "external<internal", {"events": 900, "bytes": 1000})
        z, known = p.deviations("mx:587", "external<internal", {"events": 900, "bytes": 60_000})
        return known, float(z[1])

    assert fed(0.0)[0] and fed(0.0)[1] > 3.7          # alone, six quiet windows say "critical"
    assert fed(20.0)[0] and fed(20.0)[1] < 3.0        # with the class's spread, not even medium


def test_internet_scanning_of_one_host_is_one_incident_from_its_first_windows():
    # a few internet sources a minute, each trying one port once: no source or service stands
    # out, the exposed host as a whole does; quiet hosts beside it stay quiet
    from ml.incidents import IncidentTracker

    rng = random.Random(5)
    memory = F.NoveltyMemory()
    det = WindowDetector("target", F.FEATURES["target"])
    tracker = IncidentTracker(60_000)
    reported, incidents = [], set()
    for w in range(40):
        rows = [(f"198.51.100.{i}", {"unanswered_sources": 0.0}) for i in range(1, 6)]
        if w >= 20:     # the scanning starts in window 20 and goes on
            rows.append(("203.0.113.80", {"unanswered_sources": float(rng.randint(1, 3))}))
        rows = memory.apply("target", rows)
        for m in tracker.update(det.process(rows), {}, w * 60_000):
            if m.incident is not None:
                incidents.add(m.incident.key)
            if m.severity in ("medium", "high", "critical"):
                reported.append((w, m.finding.entity))
    assert incidents == {"ip:203.0.113.80"}
    assert reported and reported[0][0] <= 22 and {e for _, e in reported} == {"203.0.113.80"}
    assert len(reported) <= 3          # one incident carries the ongoing attack


def test_a_targets_unanswered_sources_add_up_over_three_windows():
    memory = F.NoveltyMemory()
    sums = [memory.apply("target", [("192.0.2.7", {"unanswered_sources": n})])[0][1]
            ["unanswered_sources"] for n in (1.0, 2.0, 3.0, 0.0, 0.0)]
    assert sums == [1.0, 3.0, 6.0, 5.0, 3.0]


def test_one_long_session_landing_on_a_service_is_not_a_flood_but_many_connections_are():
    svc = list(F.FEATURES["service"])
    det = WindowDetector("service", svc)
    rng = random.Random(3)

    def ssh(events, packets):
        return ("10.0.0.9:22", {"events": events, "src_ips": 1, "packets": packets,
                                "bytes": packets * 120, "failed_share": 0.0, "from_inside": events,
                                "_class": "internal<internal"})

    for _ in range(300):    # a few short admin sessions a minute
        n = rng.randint(0, 2)
        det.process([ssh(n, n * rng.randint(10, 40))] if n else [])
    # a session held open for hours ends: its whole counter lands in this window, on one line
    assert [f for f in det.process([ssh(1, 11_000)]) if f.severity != "low"] == []
    # the same packets on three hundred connections are a flood
    found = det.process([ssh(300, 11_000)])
    assert [f.entity for f in found if f.severity != "low"] == ["10.0.0.9:22"]


def test_a_scanners_usual_bursts_are_not_news_but_a_deny_spike_is():
    from ml.detectors import EntityProfiles

    p = EntityProfiles("source", ["events", "denied"])
    rng = random.Random(4)
    for _ in range(3000):   # a background scanner: mostly one denied attempt, now and then a few
        k = rng.choice((1, 1, 1, 1, 2, 2, 3, 5, 8))
        p.learn("80.82.67.95", "external", {"events": k, "denied": k})
        p.end_window()
    usual, known = p.deviations("80.82.67.95", "external", {"events": 12, "denied": 12})
    assert known and usual[1] < 3.0        # Poisson at its mean rate would say 4.2 (medium)
    spike, _ = p.deviations("80.82.67.95", "external", {"events": 300, "denied": 300})
    assert spike[1] > 10.0


@pytest.mark.parametrize("kind,sample", [("profile", 1), ("profile", 2), ("baseline", 1)])
def test_partitioned_workers_learning_the_same_class_sample_find_what_one_worker_finds(
        kind, sample):
    # one worker owns every row; three own a third each and also read the others' rows of
    # the class sample; after each window all three learn which entities were alerted
    def detector():
        return WindowDetector("source", SRC, kind=kind, warmup_windows=30)

    one, three = detector(), [detector() for _ in range(3)]
    rng = random.Random(5)
    owner = {}
    for w in range(260):
        rows = estate(rng, w)
        if w % 9 == 4:      # probes now and then: findings, kept out of the class rates
            rows.append((f"45.95.168.{w % 50}", {
                "events": 3, "dst_ips": 3, "dst_ports": 1, "denied_share": 1.0,
                "denied": 3, "new_peers": 3, "new_peer_share": 1.0, "peers": 3,
                "_class": "external"}))
        if w % 23 == 7:
            rows[w % 20] = vm_row(rng, w % 20, denied=5, denied_share=0.4,
                                  new_external_peers=2, bytes_out=60_000_000)
        rows.sort(key=lambda r: r[0])
        flags = [owner.setdefault(e, len(owner) % 3) for e, _ in rows]
        sampled = [n % sample == 0 for n in range(len(rows))]
        expected = one.process([(e, r | {"_sample": s}) for (e, r), s in
                                zip(rows, sampled, strict=True)])
        found = []
        for i, det in enumerate(three):
            found += det.process([(e, r | {"_own": o == i, "_sample": s})
                                  for (e, r), o, s in zip(rows, flags, sampled, strict=True)
                                  if o == i or s], close=False)
        for det in three:
            det.close(f.entity for f in found)
        assert sorted((f.entity, f.score, f.severity) for f in found) == sorted(
            (f.entity, f.score, f.severity) for f in expected), w
