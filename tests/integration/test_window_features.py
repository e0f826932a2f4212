"""The window aggregations on a real engine: outbound volume, internal and external peers, egress."""

from __future__ import annotations

from ml import features as F
from plugin.setup import run_setup

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def doc(second: int, sip: str, dip: str, dport: int | None, *, out_bytes=0, denied=False):
    d = {"@timestamp": T0 + second * 1000,
         "source": {"ip": sip, "bytes": out_bytes, "packets": 1 if out_bytes else 0},
         "destination": {"ip": dip},
         "event": {"type": ["connection", "denied" if denied else "allowed"]}}
    if dport is not None:
        d["source"]["port"], d["destination"]["port"] = 40000 + second, dport
    return d


def test_source_and_service_features_split_inside_from_outside(engine, unique_prefix):
    run_setup(engine.store, engine.config(), only={"template"})
    index = f"logs-fwsiem.{unique_prefix}-default"
    docs = [
        doc(1, "10.0.0.1", "203.0.113.9", 443, out_bytes=50_000),    # out of the estate
        doc(2, "10.0.0.1", "203.0.113.9", 443, out_bytes=25_000),
        doc(3, "10.0.0.1", "10.0.0.2", 22, out_bytes=9_000_000),     # east-west backup
        doc(4, "10.0.0.1", "10.0.0.3", 445, denied=True),
        doc(5, "10.0.0.1", "224.0.0.251", 5353, out_bytes=100),      # multicast: neither
        doc(6, "81.2.3.4", "10.0.0.2", 22),                          # an internet client
        doc(7, "81.2.3.4", "10.0.0.2", 22),
        doc(70, "10.0.0.1", "198.51.100.7", 443, out_bytes=1),       # the next window
    ]
    res = engine.store.bulk([{"_op_type": "create", "_index": index, "_source": d}
                             for d in docs], refresh=True)
    assert not res.failed
    try:
        q = F.window_query(T0, T0 + 60_000)
        src = dict(F.entity_rows("source", engine.store.aggregate(
            index, F.entity_aggs("source", size=10), query=q)))
        vm = src["10.0.0.1"]
        assert vm["events"] == 5 and vm["denied"] == 1 and vm["dst_ips"] == 4
        assert vm["bytes_out"] == 75_000 and vm["packets_out"] == 2
        assert sorted(vm["_peers"]) == ["10.0.0.2", "10.0.0.3"]
        assert vm["_external_peers"] == ["203.0.113.9"]
        assert src["81.2.3.4"]["_peers"] == ["10.0.0.2"] and src["81.2.3.4"]["bytes_out"] == 0

        svc = dict(F.entity_rows("service", engine.store.aggregate(
            index, F.entity_aggs("service", size=10), query=q)))
        assert svc["203.0.113.9:443"]["from_inside"] == 2
        assert svc["10.0.0.2:22"]["from_inside"] == 1 and svc["10.0.0.2:22"]["src_ips"] == 2
        assert F.entity_class("service", "203.0.113.9:443", svc["203.0.113.9:443"]) == \
            "external<internal"

        memory = F.NoveltyMemory()
        first = dict(memory.apply("source", sorted(src.items())))
        assert first["10.0.0.1"]["new_external_peers"] == 1
        assert first["81.2.3.4"]["new_external_peers"] == 0
        later = dict(F.entity_rows("source", engine.store.aggregate(
            index, F.entity_aggs("source", size=10), query=F.window_query(T0 + 60_000,
                                                                           T0 + 120_000))))
        again = dict(memory.apply("source", sorted(later.items())))
        assert again["10.0.0.1"]["new_external_peers"] == 1   # 198.51.100.7 is new
        assert again["10.0.0.1"]["new_peers"] == 0
    finally:
        engine.store.delete_index(index)
