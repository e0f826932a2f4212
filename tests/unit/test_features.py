"""Window features: aggregation requests and the pure functions that read their responses."""

from __future__ import annotations

import numpy as np
import pytest

from ml import features as F


def source_bucket(ip, n, denied, dst_ips, dst_ports, peers, external=(), out_bytes=1000.0):
    return {"key": ip, "doc_count": n, "denied": {"doc_count": denied},
            "dst_ips": {"value": dst_ips}, "dst_ports": {"value": dst_ports},
            "outbound": {"doc_count": len(external), "bytes_out": {"value": out_bytes},
                         "packets_out": {"value": 10.0},
                         "peers": {"buckets": [{"key": p, "doc_count": 1} for p in external]}},
            "internal_peers": {"doc_count": len(peers),
                               "peers": {"buckets": [{"key": p, "doc_count": 1} for p in peers]}}}


def test_source_rows_carry_fan_out_denied_and_outbound_volume():
    resp = {"entities": {"buckets": [source_bucket("10.0.0.9", 200, 150, 1, 180, ["10.0.1.1"]),
                                     source_bucket("10.0.0.1", 10, 0, 2, 2, ["10.0.1.2"],
                                                   ["8.8.8.8"], out_bytes=5e8)]}}
    rows = F.entity_rows("source", resp)
    assert [e for e, _ in rows] == ["10.0.0.1", "10.0.0.9"]  # sorted, deterministic
    scanner = dict(rows)["10.0.0.9"]
    assert scanner["events"] == 200 and scanner["dst_ports"] == 180
    assert scanner["denied_share"] == 150 / 200 and scanner["denied"] == 150
    assert set(F.FEATURES["source"]) <= set(scanner)
    sender = dict(rows)["10.0.0.1"]
    assert sender["bytes_out"] == 5e8
    assert sender["_peers"] == ["10.0.1.2"] and sender["_external_peers"] == ["8.8.8.8"]


def test_outbound_volume_and_peer_samples_split_internal_from_external_destinations():
    aggs = F.entity_aggs("source", size=10, internal=["10.0.0.0/8"])["entities"]["aggs"]
    outbound = aggs["outbound"]["filter"]["bool"]
    assert {"terms": {"destination.ip": ["10.0.0.0/8"]}} in outbound["must_not"]
    assert {"terms": {"destination.ip": list(F.LOCAL_NETWORKS)}} in outbound["must_not"]
    assert aggs["internal_peers"]["filter"] == {"terms": {"destination.ip": ["10.0.0.0/8"]}}
    svc = F.entity_aggs("service", size=10, internal=["10.0.0.0/8"])["entities"]["aggs"]
    assert svc["ports"]["aggs"]["from_inside"]["filter"] == {
        "terms": {"source.ip": ["10.0.0.0/8"]}}


def test_address_and_entity_classes():
    assert F.address_class("10.1.2.3") == "internal"
    assert F.address_class("fd00::5") == "internal"
    assert F.address_class("192.0.2.7") == "external"  # a documentation range is not inside
    assert F.address_class("ff02::1") == "local" and F.address_class("169.254.1.1") == "local"
    assert F.address_class("8.8.8.8", ("8.8.8.0/24",)) == "internal"
    assert F.entity_class("source", "81.2.3.4", {}) == "external"
    assert F.entity_class("service", "10.0.0.5:22", {"from_inside": 0}) == "internal<external"
    assert F.entity_class("service", "8.8.8.8:53", {"from_inside": 2}) == "external<internal"
    assert F.entity_class("rule", "1001", {}) == "rule"


def test_new_peers_count_only_peers_never_seen_before():
    memory = F.NoveltyMemory()
    first = memory.apply("source", [("10.0.0.1", {"_peers": ["10.0.0.2", "10.0.0.3"]})])
    second = memory.apply("source", [("10.0.0.1", {"_peers": ["10.0.0.2", "10.0.0.3",
                                                             "10.0.0.4", "10.0.0.5"]})])
    assert first[0][1]["new_peer_share"] == 1.0 and first[0][1]["new_peers"] == 2
    assert second[0][1]["new_peer_share"] == 0.5 and second[0][1]["new_peers"] == 2
    assert second[0][1]["peers"] == 4 and len(second[0][1]["_peers"]) == 4
    assert second[0][1]["_class"] == "internal"


def test_new_external_peers_are_new_to_the_whole_estate_and_only_for_internal_sources():
    memory = F.NoveltyMemory()
    a = memory.apply("source", [("10.0.0.1", {"_external_peers": ["203.0.113.9"]})])
    b = memory.apply("source", [("10.0.0.2", {"_external_peers": ["203.0.113.9", "8.8.8.8"]})])
    # an internet client's own peers are not "external destinations reached from inside"
    c = memory.apply("source", [("81.2.3.4", {"_external_peers": ["198.51.100.1"]})])
    d = memory.apply("source", [("10.0.0.3", {"_external_peers": ["198.51.100.1"]})])
    assert a[0][1]["new_external_peers"] == 1
    assert b[0][1]["new_external_peers"] == 1     # 203.0.113.9 was reached by 10.0.0.1
    assert c[0][1]["new_external_peers"] == 0
    assert d[0][1]["new_external_peers"] == 1


def test_peer_memory_stays_bounded():
    memory = F.PeerMemory(max_peers=4, max_entities=10)
    for i in range(100):
        memory.observe(f"e{i}", [f"p{j}" for j in range(20)])
    assert len(memory) == 10
    assert all(len(s) <= 4 for s in memory._seen.values())


def test_service_rows_are_ip_and_port_with_failed_share():
    resp = {"entities": {"buckets": [{"key": "10.0.1.1", "doc_count": 12, "ports": {"buckets": [
        {"key": 22, "doc_count": 10, "src_ips": {"value": 1}, "packets": {"value": 20},
         "bytes": {"value": 900}, "failed": {"doc_count": 9}},
        {"key": 443, "doc_count": 2, "src_ips": {"value": 2}, "packets": {"value": 40},
         "bytes": {"value": 9000}, "failed": {"doc_count": 0}}]}}]}}
    rows = dict(F.entity_rows("service", resp))
    assert set(rows) == {"10.0.1.1:22", "10.0.1.1:443"}
    assert rows["10.0.1.1:22"]["failed_share"] == 0.9
    assert rows["10.0.1.1:443"]["failed_share"] == 0.0


@pytest.mark.parametrize("workers,sample,cardinality", [
    (1, 1, 100), (1, 1, 20_000), (3, 1, 100), (3, 1, 20_000), (2, 4, 100), (3, 2, 50_000)])
def test_a_worker_reads_its_own_entities_and_the_class_sample_once_each(
        workers, sample, cardinality):
    # the engine puts an entity whose term hashes to h in partition h mod M
    size = 5000
    for worker in range(workers):
        reads = F.window_reads(cardinality, worker, workers, sample, size)
        m = reads[0][0]["num_partitions"] if reads[0][0] else 1
        assert cardinality * 1.3 / m <= size      # each request fits max_buckets
        got = {}
        for include, own, in_sample in reads:
            p = include["partition"] if include else 0
            for h in range(p, 2000, m):
                assert h not in got
                got[h] = (own, in_sample)
        assert got == {h: (h % workers == worker, h % sample == 0) for h in range(2000)
                       if h % workers == worker or h % sample == 0}
    # one worker that learns from every entity asks exactly what it always asked
    assert len(F.window_reads(cardinality, 0, 1, 1, size)) == F.sub_partitions(
        cardinality, 1, size)


def test_the_estate_remembers_external_addresses_only_from_the_class_sample():
    memory = F.NoveltyMemory()
    out = memory.apply("source", [
        ("10.0.0.1", {"_external_peers": ["203.0.113.9"], "_sample": False}),
        ("10.0.0.2", {"_external_peers": ["203.0.113.9"]}),
        ("10.0.0.3", {"_external_peers": ["203.0.113.9", "198.51.100.1"], "_sample": False}),
        ("10.0.0.4", {"_external_peers": ["198.51.100.1"]})])
    # outside the sample a host is judged against what the estate has seen, not remembered
    assert [f["new_external_peers"] for _, f in out] == [1, 1, 1, 1]


def test_port_vector_is_fixed_length_with_zeros_for_silent_ports():
    src, dst = [53, 123], [22, 443, 3389]
    resp = {"ports": {"buckets": {
        "dst:22": {"doc_count": 5, "packets": {"value": 600}, "src_peers": {"value": 4},
                   "dst_peers": {"value": 1}},
        "src:53": {"doc_count": 2, "packets": {"value": 60}, "src_peers": {"value": 1},
                   "dst_peers": {"value": 7}}}}}
    vec = F.port_vector(resp, src, dst, 60.0)
    names = F.port_vector_names(src, dst)
    assert vec.shape == (len(names),) == (2 * (len(src) + len(dst)),)
    got = dict(zip(names, vec.tolist(), strict=True))
    assert got["pps:dst:22"] == 10.0 and got["peers:dst:22"] == 4
    assert got["pps:src:53"] == 1.0 and got["peers:src:53"] == 7
    assert got["pps:dst:3389"] == 0 and np.count_nonzero(vec) == 4


def test_requests_filter_the_window_and_partition():
    q = F.window_query(1000, 61000)
    rng = q["bool"]["filter"][0]["range"]["@timestamp"]
    assert (rng["gte"], rng["lt"]) == (1000, 61000)
    aggs = F.entity_aggs("source", size=10, include=F.partition_include(1, 4))
    assert aggs["entities"]["terms"]["include"] == {"partition": 1, "num_partitions": 4}
    assert F.partition_include(0, 1) is None
