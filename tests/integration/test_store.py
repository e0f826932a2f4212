"""The store against real engines: flavour detection, idempotent bulk, PIT scans, composite paging."""

from __future__ import annotations

import pytest

from plugin.errors import EngineRequestError
from plugin.store import Store, doc_id


def test_flavour_and_version_detected(engine):
    store = Store.connect(engine.config().engine)
    assert store.flavor == engine.flavor
    expected_major = "8" if engine.flavor == "elasticsearch" else "2"
    assert store.version.split(".")[0] == expected_major
    assert store.health()["status"] in ("yellow", "green")


def test_health_waits_for_a_status_and_says_when_it_did_not_come(engine, unique_prefix):
    store, index = engine.store, f"{unique_prefix}-health"
    store.delete_index(index)
    # a replica on a one-node engine is never assigned: the index stays yellow
    store.create_index(index, {"settings": {"number_of_shards": 1, "number_of_replicas": 1}})
    try:
        yellow = store.health("yellow", timeout="20s")
        assert yellow["timed_out"] is False and yellow["status"] in ("yellow", "green")
        green = store.health("green", timeout="1s")
        assert green["timed_out"] is True and green["status"] == "yellow"
    finally:
        store.delete_index(index)


def test_bulk_is_idempotent_with_derived_ids(engine, unique_prefix):
    store, index = engine.store, f"{unique_prefix}-bulk"
    store.delete_index(index)
    docs = [{"n": i, "k": f"key-{i % 7}"} for i in range(5000)]

    def actions():
        for d in docs:
            yield {"_op_type": "create", "_index": index, "_id": doc_id("t", d["n"]), "_source": d}

    first = store.bulk(actions(), refresh=True)
    second = store.bulk(actions(), refresh=True)
    assert (first.created, first.conflicts, first.failed) == (5000, 0, [])
    assert (second.created, second.conflicts) == (0, 5000)
    assert store.count(index) == 5000
    store.delete_index(index)


def test_bulk_reports_rejected_documents(engine, unique_prefix):
    store, index = engine.store, f"{unique_prefix}-reject"
    store.delete_index(index)
    store.create_index(index, {"mappings": {"properties": {"port": {"type": "long"}}}})
    result = store.bulk([{"_index": index, "_id": "ok", "_source": {"port": 80}},
                         {"_index": index, "_id": "bad", "_source": {"port": "eighty"}}], refresh=True)
    assert result.created == 1
    assert [f["_id"] for f in result.failed] == ["bad"]
    assert result.failed_actions[0]["_source"] == {"port": "eighty"}  # kept for the spool
    store.delete_index(index)


def test_scan_reads_everything_once_through_a_point_in_time(engine, unique_prefix):
    store, index = engine.store, f"{unique_prefix}-scan"
    store.delete_index(index)
    store.bulk(({"_index": index, "_id": str(i), "_source": {"n": i, "odd": i % 2}} for i in range(2345)),
               refresh=True)
    seen = [h["_source"]["n"] for h in store.scan(index, size=500)]
    assert sorted(seen) == list(range(2345))
    odd_desc = [h["_source"]["n"] for h in store.scan(index, query={"term": {"odd": 1}},
                                                      sort=[{"n": "desc"}], size=100)]
    assert odd_desc == sorted((n for n in range(2345) if n % 2), reverse=True)
    store.delete_index(index)


def test_composite_pages_through_every_bucket(engine, unique_prefix):
    store, index = engine.store, f"{unique_prefix}-comp"
    store.delete_index(index)
    store.bulk(({"_index": index, "_source": {"ip": f"10.0.{i % 3}.{i % 50}", "bytes": i}} for i in range(3000)),
               refresh=True)
    buckets = list(store.composite(index, [{"ip": {"terms": {"field": "ip.keyword"}}}],
                                   aggs={"b": {"sum": {"field": "bytes"}}}, size=17))
    assert len(buckets) == len({f"10.0.{i % 3}.{i % 50}" for i in range(3000)})
    assert sum(b["doc_count"] for b in buckets) == 3000
    assert sum(b["b"]["value"] for b in buckets) == sum(range(3000))
    store.delete_index(index)


def test_refused_request_names_url_and_reason(engine, unique_prefix):
    with pytest.raises(EngineRequestError) as err:
        engine.store.search(f"{unique_prefix}-x", {"query": {"no_such_query": {}}})
    assert engine.url in str(err.value) and "no_such_query" in str(err.value)
