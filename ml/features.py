"""Per-window, per-entity features built from engine-side aggregations (never raw events)."""

from __future__ import annotations

import functools
import ipaddress
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

#: The entity types scored every window: the field that names an entity and the features.
ENTITY_FIELDS: dict[str, str] = {
    "source": "source.ip",
    "service": "destination.ip",
    "rule": "rule.id",
    "host": "observer.hostname",
    "target": "destination.ip",
}

FEATURES: dict[str, tuple[str, ...]] = {
    "source": ("events", "dst_ips", "dst_ports", "denied_share", "bytes_out", "packets_out",
               "new_peer_share", "denied", "new_peers", "new_external_peers"),
    "service": ("events", "src_ips", "packets", "bytes", "failed_share", "first_seen"),
    "rule": ("hits", "denied_share"),
    "host": ("events", "denied"),
    # a destination host as a whole: the distinct internet sources whose attempts on it went
    # unanswered, over all its ports and the last ``FAN_IN_WINDOWS`` windows (Internet
    # scanning spreads thinly over ports, sources and time)
    "target": ("unanswered_sources",),
}

#: Windows over which a target's unanswered sources add up (``NoveltyMemory``): scanners that
#: each try once or twice, a few a minute, are one attack on the host within 3 windows.
FAN_IN_WINDOWS = 3

#: How each feature is modelled (see ml.detectors.EntityProfiles):
#: ``volume`` counts and volumes on a log scale; ``share`` a share of ``SHARE_BASIS``;
#: ``count`` a count of rare events (Poisson, per entity); ``novelty`` something the whole
#: estate has never seen (Poisson, at the rate of its entity class).
FEATURE_KINDS: dict[str, dict[str, str]] = {
    "source": {"denied_share": "share", "new_peer_share": "share", "denied": "count",
               "new_peers": "count", "new_external_peers": "novelty"},
    "service": {"failed_share": "share", "first_seen": "novelty"},
    "rule": {"denied_share": "share"},
    "host": {},
    "target": {"unanswered_sources": "count"},
}

#: The count a share is taken of (its evidence: 1 denied of 1 event says little).
SHARE_BASIS: dict[str, dict[str, str]] = {
    "source": {"denied_share": "events", "new_peer_share": "peers"},
    "service": {"failed_share": "events"},
    "rule": {"denied_share": "hits"},
    "host": {},
    "target": {},
}

#: Rare counts of the Internet's recurring background, per entity type and class (``""``: any
#: class): an internet scanner's visits, the probing of an exposed host. Their bursts repeat, so
#: an entity whose counts spread wider than Poisson is judged with that spread
#: (``ml.detectors.EntityProfiles``). An internal host's refused attempts are its own doing and
#: first contacts (new peers) are new only once: they stay Poisson.
RECURRING: dict[str, dict[str, frozenset]] = {
    "source": {"external": frozenset({"denied"})},
    "target": {"": frozenset({"unanswered_sources"})},
}

#: Volumes that arrive with the connections that carried them: a service's packets and bytes
#: come on the lines (or flow records) that close its sessions, so one long session lands its
#: whole counter in one window. Their evidence grows with the connections behind them
#: (``n / (n + CONNECTION_EVIDENCE)`` of the basis count): one SSH session of hours ending is
#: a transfer, not a flood; a flood comes with connections.
CARRIED_BY: dict[str, dict[str, str]] = {"service": {"packets": "events", "bytes": "events"}}
CONNECTION_EVIDENCE = 1.0

#: Features that say the same thing twice (a count and its share, bytes and packets): the
#: evidence of separate families is combined, within a family only the strongest counts.
FEATURE_FAMILY: dict[str, str] = {
    "dst_ips": "fan_out", "dst_ports": "fan_out", "src_ips": "fan_in",
    "denied": "denied", "denied_share": "denied",
    "bytes_out": "volume", "packets_out": "volume", "bytes": "volume", "packets": "volume",
    "new_peers": "new_peers", "new_peer_share": "new_peers",
}

#: Volume below which a rise counts only in part (``v / (v + scale)``): 81 bytes where there
#: were none is not an incident, 450 MB is.
VOLUME_EVIDENCE: dict[str, float] = {
    "events": 3, "hits": 3, "denied": 3, "dst_ips": 2, "dst_ports": 2, "src_ips": 2,
    "bytes": 5000, "bytes_out": 5000, "packets": 50, "packets_out": 50,
}

#: The built-in population a new entity is compared with before its class has one of its own
#: (``ml.detectors.EntityProfiles.population``, ``prior_rows`` rows' worth): a small volume
#: (the ``VOLUME_EVIDENCE`` scale) with a spread of one e-fold per standard deviation, a
#: share of 0.2 give or take 0.3, and rare events at 0.1 per window.
PRIOR_VOLUME_STD = 1.0
PRIOR_SHARE = (0.2, 0.3)
PRIOR_RATE = 0.1


def population_prior(entity_type: str, feature: str) -> tuple[float, float]:
    """``(mean, standard deviation)`` of the built-in prior for one feature.

    The mean is on the feature's own scale (a rate for rare features); the deviation is on
    the scale the feature is judged on (log for volumes).

    >>> population_prior("source", "events"), population_prior("source", "denied")
    ((3, 1.0), (0.1, 0.0))
    """
    kind = feature_kind(entity_type, feature)
    if kind == "share":
        return PRIOR_SHARE
    if kind == "count":
        return PRIOR_RATE, 0.0
    if kind == "novelty":       # judged only once the estate has been watched a while
        return 0.0, 0.0
    return VOLUME_EVIDENCE.get(feature, 1.0), PRIOR_VOLUME_STD


#: Features that are shares in [0, 1]; all others are counts or volumes.
SHARE_FEATURES = frozenset(f for kinds in FEATURE_KINDS.values()
                           for f, k in kinds.items() if k == "share")

#: The estate's own address space by default (``[run] internal_networks``).
INTERNAL_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
#: Addresses that are neither internal nor external: unspecified, loopback, link-local,
#: multicast and broadcast.
LOCAL_NETWORKS = ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4",
                  "255.255.255.255/32", "::/128", "::1/128", "fe80::/10", "ff00::/8")

DENIED = {"term": {"event.type": "denied"}}
#: An attempt that did not become a conversation: denied, SYN only, or a tiny TCP flow.
FAILED = {
    "bool": {
        "should": [
            DENIED,
            {"term": {"nsx.dfw.tcp_flags": "S"}},
            {"bool": {"filter": [{"term": {"network.transport": "tcp"}},
                                 {"range": {"network.packets": {"lte": 2}}}]}},
        ],
        "minimum_should_match": 1,
    }
}


def feature_kind(entity_type: str, feature: str) -> str:
    """``volume``, ``share``, ``count`` or ``novelty``.

    >>> feature_kind("source", "bytes_out"), feature_kind("service", "first_seen")
    ('volume', 'novelty')
    """
    return FEATURE_KINDS.get(entity_type, {}).get(feature, "volume")


@functools.lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


@functools.lru_cache(maxsize=200_000)
def address_class(ip: str, internal: tuple[str, ...] = INTERNAL_NETWORKS) -> str:
    """``internal``, ``local`` or ``external`` for an address (``other`` if not an address).

    >>> address_class("10.1.2.3"), address_class("224.0.0.1"), address_class("8.8.8.8")
    ('internal', 'local', 'external')
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "other"
    if any(addr in n for n in _networks(tuple(internal)) if n.version == addr.version):
        return "internal"
    if any(addr in n for n in _networks(LOCAL_NETWORKS) if n.version == addr.version):
        return "local"
    return "external"


def entity_class(entity_type: str, entity: str, x: Mapping,
                 internal: tuple[str, ...] = INTERNAL_NETWORKS) -> str:
    """The population an entity is compared with while it has no history of its own.

    Sources by their address (an internal VM is not an internet client); services by their
    address and whether internal sources use them (``external<internal`` is egress).

    >>> entity_class("source", "10.0.0.5", {})
    'internal'
    >>> entity_class("service", "8.8.8.8:53", {"from_inside": 3})
    'external<internal'
    """
    if entity_type in ("source", "target"):
        return address_class(entity, internal)
    if entity_type == "service":
        side = address_class(entity.rsplit(":", 1)[0], internal)
        return f"{side}<{'internal' if x.get('from_inside', 0) else 'external'}"
    return entity_type


def window_query(start_ms: int, end_ms: int, extra: Sequence[dict] = ()) -> dict:
    """Query DSL for the events of the window ``[start_ms, end_ms)`` (epoch milliseconds).

    Examples
    --------
    >>> window_query(0, 60000)["bool"]["filter"][0]["range"]["@timestamp"]["lt"]
    60000
    """
    rng = {"range": {"@timestamp": {"gte": start_ms, "lt": end_ms, "format": "epoch_millis"}}}
    return {"bool": {"filter": [rng, *extra]}}


def partition_include(partition: int, num_partitions: int) -> dict | None:
    """The ``include`` clause of a terms aggregation for one hash partition (``None`` for 0/1)."""
    if num_partitions <= 1:
        return None
    return {"partition": int(partition), "num_partitions": int(num_partitions)}


def cardinality_aggs() -> dict:
    """One request that estimates how many entities of each type the window holds.

    Examples
    --------
    >>> sorted(cardinality_aggs())
    ['host', 'rule', 'service', 'source', 'target']
    """
    return {name: {"cardinality": {"field": field, "precision_threshold": 3000}}
            for name, field in ENTITY_FIELDS.items()}


def sub_partitions(cardinality: int, workers: int, size: int, slack: float = 1.3) -> int:
    """How many hash sub-partitions each worker needs so that one terms request fits ``size``.

    Worker ``I`` of ``N`` asks for partitions ``I, I+N, I+2N, ...`` of ``N * k``; since
    ``h mod (N*k) mod N == h mod N`` those are exactly the entities of its own partition.

    Examples
    --------
    >>> sub_partitions(100, 1, 5000), sub_partitions(12000, 2, 5000)
    (1, 2)
    """
    return max(1, math.ceil(cardinality * slack / max(1, workers) / max(1, size)))


def window_reads(cardinality: int, partition: int, partitions: int, sample: int,
                 size: int) -> list[tuple[dict | None, bool, bool]]:
    """The terms requests worker ``partition`` of ``partitions`` makes for one entity type:
    ``(include, own, in class sample)`` for each.

    The class sample is hash partition 0 of ``sample``, the same entities for every worker at
    any worker count (``1``: every entity). The entities are read in ``M`` hash partitions,
    ``M`` a multiple of both ``partitions`` and ``sample``, so each request is wholly in or out
    of the worker's share (``p mod partitions``) and of the sample (``p mod sample == 0``).
    One worker with ``sample = 1`` reads its ``k`` sub-partitions, all its own and sampled.

    Examples
    --------
    >>> window_reads(100, 0, 1, 1, 5000)
    [(None, True, True)]
    >>> [(inc["partition"], own, cls) for inc, own, cls in window_reads(100, 1, 3, 1, 5000)]
    [(0, False, True), (1, True, True), (2, False, True)]
    >>> [(inc["partition"], own, cls) for inc, own, cls in window_reads(100, 1, 2, 2, 5000)]
    [(0, False, True), (1, True, False), (2, False, True), (3, True, False)]
    """
    m = partitions * sample * sub_partitions(cardinality, partitions * sample, size)
    return [(partition_include(p, m), p % partitions == partition, p % sample == 0)
            for p in range(m) if p % partitions == partition or p % sample == 0]


def _ip_terms(field: str, cidrs: Sequence[str]) -> dict:
    return {"terms": {field: list(cidrs)}}


def external_filter(field: str, internal: Sequence[str] = INTERNAL_NETWORKS) -> dict:
    """Query for events whose ``field`` is an external address (not internal, not local).

    >>> external_filter("destination.ip", ["10.0.0.0/8"])["bool"]["must_not"][0]
    {'terms': {'destination.ip': ['10.0.0.0/8']}}
    """
    return {"bool": {"filter": [{"exists": {"field": field}}],
                     "must_not": [_ip_terms(field, internal), _ip_terms(field, LOCAL_NETWORKS)]}}


def entity_aggs(entity_type: str, *, size: int, include: dict | None = None,
                peer_sample: int = 20, ports_per_service: int = 20,
                internal: Sequence[str] = INTERNAL_NETWORKS) -> dict:
    """The aggregation that yields the features of every entity of ``entity_type``.

    Examples
    --------
    >>> a = entity_aggs("source", size=100, include={"partition": 0, "num_partitions": 2})
    >>> a["entities"]["terms"]["field"], a["entities"]["terms"]["include"]["num_partitions"]
    ('source.ip', 2)
    """
    terms: dict = {"field": ENTITY_FIELDS[entity_type], "size": size}
    if include is not None:
        terms["include"] = include
    if entity_type == "source":
        peers = {"terms": {"field": "destination.ip", "size": peer_sample}}
        sub = {
            "dst_ips": {"cardinality": {"field": "destination.ip"}},
            "dst_ports": {"cardinality": {"field": "destination.port"}},
            "denied": {"filter": DENIED},
            # bytes and packets sent out of the estate: east-west bulk transfers (backups)
            # are routine, an internal host sending to the internet is what leaks data
            "outbound": {"filter": external_filter("destination.ip", internal), "aggs": {
                "bytes_out": {"sum": {"field": "source.bytes"}},
                "packets_out": {"sum": {"field": "source.packets"}},
                "peers": peers}},
            "internal_peers": {"filter": _ip_terms("destination.ip", internal),
                               "aggs": {"peers": peers}},
        }
    elif entity_type == "service":
        sub = {"ports": {"terms": {"field": "destination.port", "size": ports_per_service},
                         "aggs": {
                             "src_ips": {"cardinality": {"field": "source.ip"}},
                             "packets": {"sum": {"field": "network.packets"}},
                             "bytes": {"sum": {"field": "network.bytes"}},
                             "failed": {"filter": FAILED},
                             "from_inside": {"filter": _ip_terms("source.ip", internal)},
                             # who is behind it, to tie the service to its sources' findings
                             "sources": {"terms": {"field": "source.ip", "size": 3}},
                         }}}
    elif entity_type in ("rule", "host"):
        sub = {"denied": {"filter": DENIED}}
    elif entity_type == "target":
        # unsolicited: from the internet (internal clients failing to reach a resolver or a
        # server that is down are an outage, not an attack)
        unsolicited = {"bool": {"filter": [FAILED, external_filter("source.ip", internal)]}}
        sub = {"unanswered": {"filter": unsolicited, "aggs": {
            "sources": {"cardinality": {"field": "source.ip"}}}}}
    else:
        raise ValueError(f"unknown entity type {entity_type!r}")
    return {"entities": {"terms": terms, "aggs": sub}}


def within(aggs: Mapping, query: dict) -> dict:
    """``aggs`` with every ``filter`` and ``filters`` aggregation also restricted by ``query``
    (the window's).

    The result is the same, since only the window's documents reach the aggregations, but the
    engine then matches each filter against those documents instead of finding its matches in
    the whole index on every request (a cost that grew with the index).

    >>> a = within({"x": {"filter": DENIED, "aggs": {"y": {"filter": DENIED}}}}, {"match_all": {}})
    >>> a["x"]["aggs"]["y"]["filter"]["bool"]["filter"]
    [{'match_all': {}}, {'term': {'event.type': 'denied'}}]
    """
    def scoped(q: dict) -> dict:
        return {"bool": {"filter": [query, q]}}

    out = {}
    for name, agg in aggs.items():
        agg = dict(agg)
        if "filter" in agg:
            agg["filter"] = scoped(agg["filter"])
        if "filters" in agg:
            named = agg["filters"]["filters"]
            agg["filters"] = {**agg["filters"], "filters": {
                k: scoped(q) for k, q in named.items()} if isinstance(named, Mapping) else [
                scoped(q) for q in named]}
        if "aggs" in agg:
            agg["aggs"] = within(agg["aggs"], query)
        out[name] = agg
    return out


def _key(bucket: Mapping) -> str:
    return str(bucket.get("key_as_string", bucket["key"]))


def _value(agg: Mapping | None) -> float:
    if not agg:
        return 0.0
    value = agg.get("value")
    return float(value) if value is not None else 0.0


def _peers(agg: Mapping | None) -> list[str]:
    return [_key(b) for b in (agg or {}).get("peers", {}).get("buckets", [])]


def entity_rows(entity_type: str, aggregations: Mapping) -> list[tuple[str, dict]]:
    """Turn the response of :func:`entity_aggs` into ``(entity, features)`` rows, sorted.

    The features that need memory across windows (``new_peer_share``, ``new_peers``,
    ``new_external_peers``, ``first_seen``) are left at 0 here; :class:`NoveltyMemory` and
    the detector fill them. The sampled peers are returned under ``"_peers"`` (internal)
    and ``"_external_peers"``, a service's top sources under ``"_sources"``.

    Examples
    --------
    >>> resp = {"entities": {"buckets": [{"key": "10.0.0.1", "doc_count": 4,
    ...     "denied": {"doc_count": 1}}]}}
    >>> entity_rows("rule", resp)
    [('10.0.0.1', {'hits': 4.0, 'denied_share': 0.25})]
    """
    rows: list[tuple[str, dict]] = []
    for bucket in aggregations.get("entities", {}).get("buckets", []):
        entity, n = _key(bucket), float(bucket["doc_count"])
        denied = float(bucket.get("denied", {}).get("doc_count", 0))
        if entity_type == "source":
            out = bucket.get("outbound", {})
            rows.append((entity, {
                "events": n,
                "dst_ips": _value(bucket.get("dst_ips")),
                "dst_ports": _value(bucket.get("dst_ports")),
                "denied_share": denied / n if n else 0.0,
                "bytes_out": _value(out.get("bytes_out")),
                "packets_out": _value(out.get("packets_out")),
                "new_peer_share": 0.0,
                "denied": denied,
                "new_peers": 0.0,
                "new_external_peers": 0.0,
                "_peers": _peers(bucket.get("internal_peers")),
                "_external_peers": _peers(out),
            }))
        elif entity_type == "service":
            for port in bucket.get("ports", {}).get("buckets", []):
                m = float(port["doc_count"])
                rows.append((f"{entity}:{_key(port)}", {
                    "events": m,
                    "src_ips": _value(port.get("src_ips")),
                    "packets": _value(port.get("packets")),
                    "bytes": _value(port.get("bytes")),
                    "failed_share": port.get("failed", {}).get("doc_count", 0) / m if m else 0.0,
                    "first_seen": 0.0,
                    "from_inside": float(port.get("from_inside", {}).get("doc_count", 0)),
                    "_sources": [_key(b) for b in port.get("sources", {}).get("buckets", [])],
                }))
        elif entity_type == "rule":
            rows.append((entity, {"hits": n, "denied_share": denied / n if n else 0.0}))
        elif entity_type == "host":
            rows.append((entity, {"events": n, "denied": denied}))
        elif entity_type == "target":
            rows.append((entity, {"unanswered_sources": _value(
                bucket.get("unanswered", {}).get("sources"))}))
        else:
            raise ValueError(f"unknown entity type {entity_type!r}")
    rows.sort(key=lambda r: r[0])
    return rows


def truncated(aggregations: Mapping) -> int:
    """Documents a terms request left out (``sum_other_doc_count``): > 0 means raise size."""
    return int(aggregations.get("entities", {}).get("sum_other_doc_count", 0) or 0)


class PeerMemory:
    """Bounded memory of the peers each entity has talked to, for ``new_peer_share``.

    Keeps at most ``max_peers`` peers per entity and ``max_entities`` entities (least
    recently seen are forgotten first), so memory stays bounded at any scale.

    Examples
    --------
    >>> m = PeerMemory()
    >>> m.observe("a", ["x", "y"]), m.observe("a", ["x", "z"])
    (1.0, 0.5)
    """

    def __init__(self, max_peers: int = 64, max_entities: int = 200_000) -> None:
        self.max_peers = max_peers
        self.max_entities = max_entities
        self._seen: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()

    def observe(self, entity: str, peers: Iterable[str]) -> float:
        """Share of ``peers`` never seen before for ``entity``; then remember them."""
        peers = list(peers)
        if not peers:
            return 0.0
        seen = _recent_entry(self._seen, entity, OrderedDict, self.max_entities)
        new = 0
        for p in peers:
            if p in seen:
                seen.move_to_end(p)
            else:
                new += 1
                seen[p] = None
                if len(seen) > self.max_peers:
                    seen.popitem(last=False)
        return new / len(peers)

    def __len__(self) -> int:
        return len(self._seen)


def _recent_entry(table: OrderedDict, key, factory, limit: int):
    """``table[key]``, made with ``factory()`` when absent, as the most recently used entry;
    the least recently used entry goes once ``table`` holds more than ``limit``.

    >>> t = OrderedDict()
    >>> _recent_entry(t, "a", list, 1).append(1); _ = _recent_entry(t, "b", list, 1)
    >>> list(t)
    ['b']
    """
    entry = table.get(key)
    if entry is None:
        entry = table[key] = factory()
        if len(table) > limit:
            table.popitem(last=False)
    else:
        table.move_to_end(key)
    return entry


class NoveltyMemory:
    """What the estate has seen: each entity's internal peers, and every external address
    any internal host has contacted (both bounded, least recently seen forgotten first).

    Examples
    --------
    >>> m = NoveltyMemory()
    >>> rows = [("10.0.0.1", {"_peers": ["10.0.0.2"], "_external_peers": ["8.8.8.8"]})]
    >>> m.apply("source", rows)[0][1]["new_external_peers"]
    1.0
    >>> m.apply("source", rows)[0][1]["new_external_peers"]
    0.0
    """

    def __init__(self, max_peers: int = 256, max_entities: int = 200_000,
                 max_external: int = 500_000, internal: tuple[str, ...] = INTERNAL_NETWORKS):
        self.peers = PeerMemory(max_peers=max_peers, max_entities=max_entities)
        self.external: OrderedDict[str, None] = OrderedDict()
        self.max_external = max_external
        self.max_entities = max_entities
        self.internal = tuple(internal)
        self.fan_in: OrderedDict[str, deque] = OrderedDict()   # target -> (window, count)
        self.windows = 0

    def _new_external(self, addresses: Iterable[str], remember: bool = True) -> int:
        new = 0
        for a in addresses:
            if a in self.external:
                if remember:
                    self.external.move_to_end(a)
                continue
            new += 1
            if not remember:
                continue
            self.external[a] = None
            if len(self.external) > self.max_external:
                self.external.popitem(last=False)
        return new

    def _fan_in(self, target: str, count: float) -> float:
        """``count`` plus the target's counts of the previous ``FAN_IN_WINDOWS - 1`` windows."""
        recent = _recent_entry(self.fan_in, target, deque, self.max_entities)
        recent.append((self.windows, count))
        while recent[0][0] <= self.windows - FAN_IN_WINDOWS:
            recent.popleft()
        return float(sum(c for _, c in recent))

    def apply(self, entity_type: str, rows: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
        """Fill the novelty features of source rows and add ``_class``; the peer samples stay
        (they tie findings of one attack together).

        What the estate has seen is learned from the class sample only (rows whose
        ``_sample`` is not ``False``; ``ml.features.window_reads``), so it is the same for
        every worker; the other rows are judged against it."""
        out = []
        if entity_type == "target":
            self.windows += 1
        for entity, feats in rows:
            feats = dict(feats)
            if entity_type == "target":
                feats["unanswered_sources"] = self._fan_in(entity, feats["unanswered_sources"])
            peers = feats.get("_peers")
            external = feats.get("_external_peers") or []
            feats["_class"] = entity_class(entity_type, entity, feats, self.internal)
            if peers is not None:
                before = len(peers)
                share = self.peers.observe(entity, peers)
                feats["new_peer_share"] = share
                feats["new_peers"] = round(share * before)
                feats["peers"] = float(before)
            if entity_type == "source":
                # an internal host reaching an address no internal host has reached before
                inside = feats["_class"] == "internal"
                feats["new_external_peers"] = float(self._new_external(
                    external, feats.get("_sample", True))) if inside else 0.0
            out.append((entity, feats))
        return out


# --- seed 003: global per-port vectors -------------------------------------------------------

#: Source ports at or above this are ephemeral (the client side of a session): which of them
#: is busy is chance, so they never enter the port vector.
EPHEMERAL_PORTS = 32768


def top_ports_aggs(n: int = 15) -> dict:
    """Top ``n`` source and destination ports by packets (the vector's fixed port set).

    Source ports are taken below :data:`EPHEMERAL_PORTS`: a client's ephemeral port says
    nothing, while a service answering from its own port (DNS, NTP) does.

    Examples
    --------
    >>> top_ports_aggs(3)["dst"]["terms"]["size"]
    3
    >>> top_ports_aggs(3)["src"]["filter"]
    {'range': {'source.port': {'lt': 32768}}}
    """
    order = {"packets": "desc"}
    sub = {"packets": {"sum": {"field": "network.packets", "missing": 1}}}
    return {"src": {"filter": {"range": {"source.port": {"lt": EPHEMERAL_PORTS}}}, "aggs": {
                "ports": {"terms": {"field": "source.port", "size": n, "order": order},
                          "aggs": sub}}},
            "dst": {"terms": {"field": "destination.port", "size": n, "order": order},
                    "aggs": sub}}


def top_ports(aggregations: Mapping) -> tuple[list[int], list[int]]:
    """The ``(source ports, destination ports)`` of a :func:`top_ports_aggs` response.

    Examples
    --------
    >>> top_ports({"src": {"ports": {"buckets": [{"key": 53}]}},
    ...            "dst": {"buckets": [{"key": 443}]}})
    ([53], [443])
    """
    return ([int(b["key"]) for b in aggregations["src"]["ports"]["buckets"]],
            [int(b["key"]) for b in aggregations["dst"]["buckets"]])


def port_vector_aggs(src_ports: Sequence[int], dst_ports: Sequence[int]) -> dict:
    """Packets and distinct peers per fixed port, as one ``filters`` aggregation.

    Examples
    --------
    >>> sorted(port_vector_aggs([53], [443])["ports"]["filters"]["filters"])
    ['dst:443', 'src:53']
    """
    filters = {f"src:{p}": {"term": {"source.port": p}} for p in src_ports}
    filters.update({f"dst:{p}": {"term": {"destination.port": p}} for p in dst_ports})
    return {"ports": {"filters": {"filters": filters}, "aggs": {
        "packets": {"sum": {"field": "network.packets", "missing": 1}},
        "src_peers": {"cardinality": {"field": "source.ip"}},
        "dst_peers": {"cardinality": {"field": "destination.ip"}},
    }}}


def port_vector_names(src_ports: Sequence[int], dst_ports: Sequence[int]) -> list[str]:
    """Names of the vector's dimensions, in order: pps then peers, source ports first.

    Examples
    --------
    >>> port_vector_names([53], [443])
    ['pps:src:53', 'pps:dst:443', 'peers:src:53', 'peers:dst:443']
    """
    keys = [f"src:{p}" for p in src_ports] + [f"dst:{p}" for p in dst_ports]
    return [f"pps:{k}" for k in keys] + [f"peers:{k}" for k in keys]


def port_vector(aggregations: Mapping, src_ports: Sequence[int], dst_ports: Sequence[int],
                seconds: float) -> np.ndarray:
    """Seed 003's vector: packets per second and distinct peers for each fixed port.

    A source port's peers are distinct destination IPs; a destination port's, distinct
    source IPs. Ports absent from the window count 0.

    Examples
    --------
    >>> resp = {"ports": {"buckets": {"dst:22": {"doc_count": 6, "packets": {"value": 120},
    ...     "src_peers": {"value": 3}, "dst_peers": {"value": 1}}}}}
    >>> port_vector(resp, [], [22], 60.0).tolist()
    [2.0, 3.0]
    """
    buckets = aggregations.get("ports", {}).get("buckets", {})
    keys = [("src", p) for p in src_ports] + [("dst", p) for p in dst_ports]
    pps, peers = [], []
    for side, p in keys:
        b = buckets.get(f"{side}:{p}", {})
        pps.append(_value(b.get("packets")) / seconds if b.get("doc_count") else 0.0)
        peers.append(_value(b.get("dst_peers" if side == "src" else "src_peers")))
    return np.asarray(pps + peers, dtype=float)
