"""The window loop of `fwsiem run`: tumbling windows, features from aggregations, detectors."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ml import features as F
from ml.autoencoder import PortVectorAutoencoder
from ml.detectors import DETECTOR_VERSION, Finding, WindowDetector, severity_of
from ml.incidents import IncidentTracker
from plugin.anomalies import (
    active_suppressions,
    anomaly_actions,
    anomaly_document,
    anomaly_id,
    iso,
    suppression_marks,
)
from plugin.checkpoint import (
    Checkpoint,
    OutageRetry,
    load_checkpoint,
    next_chain,
    save_checkpoint,
    state_key,
)
from plugin.config import parse_duration
from plugin.errors import ConfigError, EngineRequestError
from plugin.incidents import DATASET as INCIDENTS
from plugin.incidents import incident_actions, incident_document
from plugin.incidents import incident_id as incident_docid

log = logging.getLogger(__name__)

AE_DETECTOR = "window.ports.autoencoder"

#: Windows of findings each partitioned worker keeps for the others, as a ring of documents in
#: the state index: a worker that restarts from a checkpoint up to this many windows back
#: still finds what the others found.
EXCHANGE_WINDOWS = 1440


@dataclass(frozen=True)
class RunSettings:
    """The ``[run]`` configuration, with defaults for keys that are missing."""

    window_ms: int = 60_000
    lag_ms: int = 30_000
    poll_s: float = 10.0
    warmup_windows: int = 0
    detector: str = "profile"
    #: per entity type detector, overriding ``detector`` (``[run.detectors]``)
    detectors: tuple = ()
    quantile: float = 0.99
    levels: tuple = (3.0, 3.7, 6.0, 10.0)
    entity_types: tuple = ("source", "service", "rule", "host", "target")
    max_buckets: int = 5000
    peer_sample: int = 20
    #: class statistics are learned from one entity in ``class_sample`` (a hash sample, the
    #: same for every worker; 1 = every entity)
    class_sample: int = 1
    internal_networks: tuple = F.INTERNAL_NETWORKS
    ports_per_service: int = 20
    top_ports: int = 15
    autoencoder: bool = True
    ae_levels: tuple = (1.0, 2.0, 4.0, 8.0)
    ae_warmup_windows: int = 60
    ae_retrain_windows: int = 360
    ae_history_windows: int = 1440
    incident_gap_windows: int = 120
    incident_members: int = 20
    backfill_batch: int = 60
    read_ahead: int = 3
    feedback_ttl_s: float = 7 * 86400
    retry_max_s: float = 30.0
    seed: int = 42
    state_key_file: str = ""

    @classmethod
    def from_config(cls, config) -> RunSettings:
        run = config.section("run")
        d = cls()

        def dur(key, default_ms):
            return int(parse_duration(run[key]) * 1000) if key in run else default_ms

        kw = dict(
            window_ms=dur("window", d.window_ms), lag_ms=dur("lag", d.lag_ms),
            poll_s=dur("poll_interval", int(d.poll_s * 1000)) / 1000,
            warmup_windows=int(run.get("warmup_windows", d.warmup_windows)),
            detector=str(run.get("detector", d.detector)),
            detectors=tuple(sorted((str(k), str(v))
                                   for k, v in dict(run.get("detectors", {})).items())),
            quantile=float(run.get("quantile", d.quantile)),
            levels=tuple(float(v) for v in run.get("severity_levels", d.levels)),
            entity_types=tuple(run.get("entity_types", d.entity_types)),
            max_buckets=int(run.get("max_buckets", d.max_buckets)),
            peer_sample=int(run.get("peer_sample", d.peer_sample)),
            class_sample=int(run.get("class_sample", d.class_sample)),
            internal_networks=tuple(str(n) for n in run.get("internal_networks",
                                                          d.internal_networks)),
            ports_per_service=int(run.get("ports_per_service", d.ports_per_service)),
            top_ports=int(run.get("top_ports", d.top_ports)),
            autoencoder=bool(run.get("autoencoder", d.autoencoder)),
            ae_levels=tuple(float(v) for v in run.get("autoencoder_levels", d.ae_levels)),
            ae_warmup_windows=int(run.get("autoencoder_warmup_windows", d.ae_warmup_windows)),
            ae_retrain_windows=int(run.get("autoencoder_retrain_windows", d.ae_retrain_windows)),
            ae_history_windows=int(run.get("autoencoder_history_windows", d.ae_history_windows)),
            incident_gap_windows=int(run.get("incident_gap_windows", d.incident_gap_windows)),
            incident_members=int(run.get("incident_members", d.incident_members)),
            backfill_batch=int(run.get("backfill_batch", d.backfill_batch)),
            read_ahead=int(run.get("read_ahead", d.read_ahead)),
            feedback_ttl_s=parse_duration(run.get("feedback_ttl", "7d")),
            retry_max_s=parse_duration(run.get("retry_max", "30s")),
            seed=int(run.get("seed", d.seed)),
            state_key_file=str(run.get("state_key_file", d.state_key_file)),
        )
        for net in kw["internal_networks"]:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(f"[run] internal_networks has {net!r}, not a network",
                                  hint='e.g. internal_networks = ["10.0.0.0/8"]') from None
        unknown = set(kw["entity_types"]) - set(F.ENTITY_FIELDS)
        if unknown:
            raise ConfigError(f"[run] entity_types has unknown types {sorted(unknown)}",
                              hint=f"use some of {sorted(F.ENTITY_FIELDS)}")
        if kw["class_sample"] < 1:
            raise ConfigError("[run] class_sample must be 1 or more",
                              hint="1 learns the class statistics from every entity")
        if kw["window_ms"] <= 0:
            raise ConfigError("[run] window must be positive", hint="e.g. window = \"60s\"")
        unknown = {t for t, _ in kw["detectors"]} - set(F.ENTITY_FIELDS)
        if unknown:
            raise ConfigError(f"[run.detectors] has unknown entity types {sorted(unknown)}",
                              hint=f"use some of {sorted(F.ENTITY_FIELDS)}")
        return cls(**kw)

    def detector_for(self, entity_type: str) -> str:
        """The river detector of ``entity_type``: ``[run.detectors]``, else ``[run] detector``."""
        return dict(self.detectors).get(entity_type, self.detector)

    def detectors_text(self) -> str:
        return ", ".join(f"{t} {self.detector_for(t)}" for t in self.entity_types)


@dataclass
class RunState:
    """Everything a worker learns; pickled into its checkpoint after every window."""

    detectors: dict
    novelty: F.NoveltyMemory
    src_ports: list = field(default_factory=list)
    dst_ports: list = field(default_factory=list)
    vectors: deque = field(default_factory=deque)
    autoencoder: PortVectorAutoencoder | None = None
    ae_windows: int = 0
    incidents: IncidentTracker | None = None


def parse_partition(text: str) -> tuple[int, int]:
    """``"I/N"`` to ``(I, N)`` with ``0 <= I < N``."""
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise ConfigError(f"--partition {text!r} is not I/N", hint="e.g. --partition 0/2") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--partition {text!r}: need 0 <= I < N", hint="e.g. 0/2 and 1/2")
    return i, n


def window_bounds(from_ms: int, to_ms: int, window_ms: int) -> Iterator[tuple[int, int]]:
    """Windows aligned on multiples of ``window_ms`` that lie inside ``[from_ms, to_ms)``.

    >>> list(window_bounds(30_000, 200_000, 60_000))
    [(60000, 120000), (120000, 180000)]
    """
    start = -(-from_ms // window_ms) * window_ms
    while start + window_ms <= to_ms:
        yield start, start + window_ms
        start += window_ms


def row_links(etype: str, rows: list[tuple[str, dict]], focus: int = 3) -> dict:
    """``(entity type, entity) -> addresses`` that tie it to one attack: a service's top
    sources, and the peers of a source that talked to at most ``focus`` addresses (a flood bot
    or a brute-forcer is focused on its target; a scanner or a busy client is not)."""
    links = {}
    for entity, row in rows:
        if etype == "service":
            peers = list(row.get("_sources", []))
        else:
            peers = list(dict.fromkeys(row.get("_peers", []) + row.get("_external_peers", [])))
            if len(peers) > focus or row.get("dst_ips", 0) > focus:
                peers = []
        if peers:
            links[(etype, entity)] = peers
    return links


def window_documents(found: list[tuple[Finding, str, list]], links: dict,
                     tracker: IncidentTracker, start_ms: int, end_ms: int,
                     partition: str = "0/1", owners: list[str] | None = None) -> list[dict]:
    """One window's findings (with their detector kind and drill-down ports) grouped into
    incidents: the anomaly documents to write, then the incidents they touched.

    ``owners`` names the worker of each finding when the findings of several workers are
    grouped together: only ``partition``'s anomalies are returned, and the incidents only to
    worker 0 (every worker groups all of them alike)."""
    members = tracker.update([f for f, _, _ in found], links, start_ms)
    owners = owners or [partition] * len(found)
    docs, touched = [], {}
    for (finding, kind, any_of), m, owner in zip(found, members, owners, strict=True):
        if not m.severity:
            continue        # folded into its incident: counted there, not written
        finding.severity = m.severity
        doc = anomaly_document(finding, start_ms, end_ms, kind=kind, partition=owner,
                               any_of=any_of)
        if m.incident is not None:
            inc = m.incident
            doc["incident"] = {"id": incident_docid(inc), "role": "lead" if m.lead else "member"}
            if len(inc.members) < tracker.max_listed:
                inc.members.append(anomaly_id(finding.detector, finding.entity_type,
                                              finding.entity, start_ms))
            touched[id(inc)] = inc
        if owner == partition:
            docs.append(doc)
    if not partition.startswith("0/"):
        return docs
    return docs + [incident_document(inc, end_ms - start_ms, partition)
                   for inc in touched.values()]


class WindowRunner:
    """Processes windows for one worker (``partition`` of ``partitions``)."""

    def __init__(self, store, config, partition: int = 0, partitions: int = 1,
                 settings: RunSettings | None = None,
                 stop: Callable[[], bool] = lambda: False) -> None:
        self.store = store
        self.config = config
        self.partition, self.partitions = partition, partitions
        self.s = settings or RunSettings.from_config(config)
        self.events = config.index("events_pattern")
        self.anomalies = config.index("anomalies")
        self.incidents = config.index("incidents")
        self.state_index = config.index("state")
        self.stop = stop
        # once back, wait (at most 30 s) until the engine's shards are allocated again
        self.retry = OutageRetry(store.safe_url, maximum=self.s.retry_max_s, stop=stop,
                                 ready=lambda: store.health("yellow", "30s"))
        self.cp: Checkpoint | None = None
        self.anomalies_written = 0
        self.key = state_key(self.s.state_key_file)

    # -- state --------------------------------------------------------------------------------
    def new_detector(self, etype: str) -> WindowDetector:
        return WindowDetector(etype, F.FEATURES[etype], kind=self.s.detector_for(etype),
                              q=self.s.quantile, warmup_windows=self.s.warmup_windows,
                              levels=self.s.levels, seed=self.s.seed)

    def new_state(self) -> RunState:
        dets = {t: self.new_detector(t) for t in self.s.entity_types}
        return RunState(dets, F.NoveltyMemory(internal=self.s.internal_networks),
                        vectors=deque(maxlen=self.s.ae_history_windows),
                        incidents=IncidentTracker(self.s.window_ms, self.s.incident_gap_windows,
                                                  self.s.incident_members))

    def load(self) -> Checkpoint | None:
        cp = self.retry("reading the checkpoint", lambda: load_checkpoint(
            self.store, self.state_index, self.partition, self.partitions, self.key))
        if cp is not None and cp.window_ms != self.s.window_ms:
            raise ConfigError(
                f"the checkpoint in {self.state_index} was made with {cp.window_ms / 1000:g} s "
                f"windows, the configuration says {self.s.window_ms / 1000:g} s",
                hint="keep [run] window, or delete the checkpoint to start the models afresh")
        self.cp = cp
        return cp

    @property
    def uses_ports(self) -> bool:
        return self.s.autoencoder and self.partition == 0

    # -- reads --------------------------------------------------------------------------------
    def choose_ports(self, start_ms: int, horizon_ms: int) -> tuple[list, list]:
        span = self.s.ae_warmup_windows * self.s.window_ms
        q = F.window_query(start_ms - span, min(start_ms + span, horizon_ms))
        aggs = self.store.aggregate(self.events, F.top_ports_aggs(self.s.top_ports), query=q)
        return F.top_ports(aggs)

    def read_window(self, start_ms: int, end_ms: int, state: RunState,
                    marks: list | None = None) -> dict:
        """Every engine read a window needs; no state is changed here (safe to retry).

        ``marks``: the false-positive marks when the caller has read them already (once per
        batch of windows).
        """
        if marks is None:
            marks = suppression_marks(self.store, self.anomalies, self.s.feedback_ttl_s)
        q = F.window_query(start_ms, end_ms)
        aggs = F.cardinality_aggs()
        if self.uses_ports and state.src_ports + state.dst_ports:
            aggs.update(F.within(F.port_vector_aggs(state.src_ports, state.dst_ports), q))
        head = self.store.aggregate(self.events, aggs, query=q)
        rows: dict[str, list] = {etype: [] for etype in self.s.entity_types}
        requests: list[tuple] = []    # (entity type, own, sample, aggregation): one _msearch
        for etype in self.s.entity_types:
            card = int(head.get(etype, {}).get("value", 0) or 0)
            if card == 0:
                continue
            for include, own, sample in F.window_reads(card, self.partition, self.partitions,
                                                       self.s.class_sample, self.s.max_buckets):
                requests.append((etype, own, sample, F.within(F.entity_aggs(
                    etype, size=self.s.max_buckets, include=include,
                    peer_sample=self.s.peer_sample,
                    ports_per_service=self.s.ports_per_service,
                    internal=self.s.internal_networks), q)))
        found = self.store.aggregate_many(self.events, [r[-1] for r in requests], query=q)
        for (etype, own, sample, _), resp in zip(requests, found, strict=True):
            if F.truncated(resp):
                log.warning("window %s: %s entities truncated (%d events left out); raise "
                            "[run] max_buckets", start_ms, etype, F.truncated(resp))
            part = F.entity_rows(etype, resp)
            for _, feats in part:
                if not own:
                    feats["_own"] = False
                if not sample:
                    feats["_sample"] = False
            rows[etype].extend(part)
        for out in rows.values():
            out.sort(key=lambda r: r[0])
        vector = None
        if "ports" in head:
            vector = F.port_vector(head, state.src_ports, state.dst_ports,
                                   (end_ms - start_ms) / 1000)
        return {"rows": rows, "vector": vector, "suppressed": active_suppressions(marks, start_ms),
                "events": int(head.get("_total", 0))}

    def read_windows(self, bounds: list[tuple[int, int]], state: RunState,
                     marks: list) -> Iterator[dict]:
        """:meth:`read_window` of each window in order, with up to ``[run] read_ahead`` of
        them in flight, so the engine aggregates the next windows while this process scores
        the current one (reads change no state, their order does not matter)."""
        def read(start_ms: int, end_ms: int) -> dict:
            return self.retry(f"reading window {start_ms}-{end_ms}",
                              lambda: self.read_window(start_ms, end_ms, state, marks))

        if self.s.read_ahead <= 1 or len(bounds) == 1:
            yield from (read(*b) for b in bounds)
            return
        with ThreadPoolExecutor(self.s.read_ahead, thread_name_prefix="fwsiem-read") as pool:
            pending = deque(pool.submit(read, *b) for b in bounds[:self.s.read_ahead])
            for b in bounds[self.s.read_ahead:]:
                data = pending.popleft().result()
                pending.append(pool.submit(read, *b))
                yield data
            while pending:
                yield pending.popleft().result()

    # -- compute ------------------------------------------------------------------------------
    def detect(self, start_ms: int, end_ms: int, data: dict, state: RunState,
               chain: str = "") -> list[dict] | None:
        """Score and learn the window; returns its anomaly documents and the documents of the
        incidents they belong to (``event.dataset`` tells them apart; changes ``state``).

        A partitioned worker shares its findings with the others first (:meth:`exchange`;
        ``chain`` is its checkpoint's): ``None``, and the window is not written, when the run
        is stopped while it waits or when this worker's first window is before the first
        window of another worker that started afresh (following live data, workers started a
        moment apart may fall on either side of a window's end): the models then start afresh
        with the next window, so that all begin with the same one."""
        part = f"{self.partition}/{self.partitions}"
        found: list[tuple[Finding, str, list]] = []
        links: dict = {}
        alone = self.partitions == 1
        for etype, rows in data["rows"].items():
            if etype not in state.detectors:    # a checkpoint from before the type existed
                state.detectors[etype] = self.new_detector(etype)
            det: WindowDetector = state.detectors[etype]
            rows = state.novelty.apply(etype, rows)
            links.update(row_links(etype, rows))
            sup = {e: feats for (d, t, e), feats in data["suppressed"].items()
                   if d == det.name and t == etype}
            found += [(f, det.kind, []) for f in det.process(rows, suppressed=sup,
                                                             close=alone)]
        if data["vector"] is not None:
            hit = self._autoencoder_window(start_ms, end_ms, data["vector"], state,
                                           data["suppressed"])
            if hit:
                found.append((hit[0], "mlp-autoencoder", hit[1]))
        if state.incidents is None:     # a checkpoint from before incidents existed
            state.incidents = IncidentTracker(self.s.window_ms, self.s.incident_gap_windows,
                                              self.s.incident_members)
        owners = None
        if not alone:
            everyone = self.exchange(start_ms, chain, found, links)
            if everyone is None:
                return None
            found, links, owners = everyone
            for etype in data["rows"]:
                state.detectors[etype].close(f.entity for f, _, _ in found
                                             if f.entity_type == etype)
        return window_documents(found, links, state.incidents, start_ms, end_ms, part, owners)

    # -- partitioned workers ------------------------------------------------------------------
    def _exchange_tag(self, chain: str) -> str:
        settings = dataclasses.replace(self.s, state_key_file="", retry_max_s=0, poll_s=0,
                                       lag_ms=0)
        return hashlib.sha1(f"{settings!r}|{DETECTOR_VERSION}|{self.partitions}|{chain}"
                            .encode()).hexdigest()

    def _started_later(self, start_ms: int, tag: str, others: set[int],
                       ahead: int = 5) -> bool:
        """Whether one of ``others`` published the first window of a fresh start (``tag``)
        within ``ahead`` windows after ``start_ms``."""
        w = self.s.window_ms
        return any(p.get("tag") == tag and p.get("window_start_ms", 0) > start_ms
                   for p in self._published([(j, start_ms + w * k) for j in sorted(others)
                                             for k in range(1, ahead + 1)]))

    def _published(self, slots: list[tuple[int, int]]) -> list[dict]:
        """The exchange payloads in the slots of ``(partition, window start)`` (``{}`` where
        there is none yet), read in one request."""
        ids = [self._exchange_id(j, start) for j, start in slots]
        resp = self.retry("reading the findings of the other workers", lambda: self.store.request(
            "POST", f"/{self.state_index}/_mget", body={"ids": ids}, ignore=(404,)))
        return [(d.get("_source") or {}).get("payload") or {}
                for d in (resp or {}).get("docs", [{}] * len(ids))]

    def _exchange_id(self, partition: int, start_ms: int) -> str:
        slot = start_ms // self.s.window_ms % EXCHANGE_WINDOWS
        return f"run-findings-{partition}-of-{self.partitions}-{slot}"

    def exchange(self, start_ms: int, chain: str, found: list, links: dict
                 ) -> tuple[list, dict, list[str]] | None:
        """Publish this worker's findings of the window in the state index and wait for every
        other worker's: all the window's findings, in the order one worker finds them, with
        their links and workers; ``None`` when the run is stopped while waiting, or when this
        is the worker's first window and another started afresh after it (:meth:`detect`).

        Every worker then closes the window's class rates and groups the incidents alike.
        A document counts only from a worker with the same detection settings that has
        processed the same windows (``chain``, the digest of those before this one).
        """
        tag = self._exchange_tag(chain)
        mine = [{"finding": dataclasses.asdict(f), "kind": kind,
                 "any_of": [list(a) for a in any_of],
                 "links": links.get((f.entity_type, f.entity), [])}
                for f, kind, any_of in found]
        doc = {"@timestamp": iso(time.time() * 1000), "kind": "run-findings",
               "worker": f"{self.partition}/{self.partitions}",
               "payload": {"window_start_ms": start_ms, "tag": tag, "findings": mine}}
        self.retry(f"publishing the findings of window {start_ms}", lambda: self.store.index_doc(
            self.state_index, doc, id=self._exchange_id(self.partition, start_ms)))
        got = {self.partition: mine}
        delay, began, told = 0.02, time.monotonic(), 0.0
        while len(got) < self.partitions:
            missing = sorted(set(range(self.partitions)) - set(got))
            for j, payload in zip(missing, self._published([(j, start_ms) for j in missing]),
                                  strict=True):
                if payload.get("window_start_ms") == start_ms and payload.get("tag") == tag:
                    got[j] = payload["findings"]
            if len(got) == self.partitions:
                break
            if not chain and self._following and self._started_later(
                    start_ms, tag, set(range(self.partitions)) - set(got)):
                return None
            if self.stop():
                return None
            waited = time.monotonic() - began
            if waited - told >= 60:
                told = waited
                log.warning("window %s: waiting %.0f s for the findings of partition(s) %s of "
                            "%d: every worker must run, from the same window, with the same "
                            "[run] settings", start_ms, waited,
                            ", ".join(str(j) for j in range(self.partitions) if j not in got),
                            self.partitions)
            time.sleep(delay)
            delay = min(0.2, delay * 2)
        types = {t: n for n, t in enumerate(self.s.entity_types)}
        merged = sorted(((types.get(p["finding"]["entity_type"], len(types)),
                          p["finding"]["entity"], j, p) for j, ps in got.items() for p in ps),
                        key=lambda t: t[:2])
        found, links, owners = [], {}, []
        for _, _, j, p in merged:
            f = Finding(**p["finding"])
            found.append((f, p["kind"], [tuple(a) for a in p["any_of"]]))
            if p["links"]:
                links[(f.entity_type, f.entity)] = p["links"]
            owners.append(f"{j}/{self.partitions}")
        return found, links, owners

    def _autoencoder_window(self, start_ms, end_ms, vector, state: RunState, suppressed):
        names = F.port_vector_names(state.src_ports, state.dst_ports)
        doc = None
        ae = state.autoencoder
        flagged = False
        if ae is not None:
            err = float(ae.reconstruction_error(vector[None, :])[0])
            ratio = err / ae.threshold_ if ae.threshold_ > 0 else math.inf
            sev = severity_of(ratio, self.s.ae_levels)
            per_dim = ae.feature_errors(vector[None, :])[0]
            top = np.argsort(-per_dim)[:3]
            recon = ae.mlp_.predict(ae._inputs(vector[None, :]))
            expected = np.expm1(ae.scaler_.inverse_transform(recon))[0]
            lead = names[int(top[0])]
            blocked = lead in suppressed.get((AE_DETECTOR, "ports", "all"), set())
            if sev and not blocked:
                flagged = True
                finding = Finding(
                    "ports", "all", err, ae.threshold_, sev,
                    dict(zip(names, vector.tolist(), strict=True)),
                    dict(zip(names, np.maximum(expected, 0).tolist(), strict=True)),
                    [{"feature": names[int(i)], "observed": float(vector[int(i)]),
                      "expected": float(max(expected[int(i)], 0.0)),
                      "deviation": float(per_dim[int(i)])} for i in top],
                    AE_DETECTOR)
                ports = []
                for i in top:
                    _, side, port = names[int(i)].split(":")
                    ports.append(("source.port" if side == "src" else "destination.port",
                                  int(port)))
                doc = (finding, ports)
        if not flagged:
            state.vectors.append(vector)
        state.ae_windows += 1
        due = (ae is None and state.ae_windows >= self.s.ae_warmup_windows) or (
            ae is not None and state.ae_windows % self.s.ae_retrain_windows == 0)
        if due and len(state.vectors) >= 10:
            state.autoencoder = PortVectorAutoencoder(random_state=self.s.seed).fit(
                np.vstack(list(state.vectors)))
        return doc

    # -- writes -------------------------------------------------------------------------------
    def actions(self, docs: list[dict]) -> list[dict]:
        """Bulk actions for what :meth:`detect` returns: anomalies, then their incidents."""
        # an incident that grew in several windows of a batch: its latest state replaces the rest
        incidents = list({d["incident"]["id"]: d for d in docs
                          if d["event"]["dataset"] == INCIDENTS}.values())
        anomalies = [d for d in docs if d["event"]["dataset"] != INCIDENTS]
        return (anomaly_actions(self.anomalies, anomalies)
                + incident_actions(self.incidents, incidents))

    def write(self, docs: list[dict], cp: Checkpoint) -> None:
        if docs:
            res = self.store.bulk(self.actions(docs))
            if res.failed:
                raise EngineRequestError(
                    f"{len(res.failed)} anomaly or incident documents were refused by "
                    f"{self.anomalies} or {self.incidents}: {res.failed[0].get('error')}",
                    hint="check the index mapping (fwsiem setup)")
        save_checkpoint(self.store, self.state_index, self.partition, self.partitions, cp,
                        self.key)

    # -- windows ------------------------------------------------------------------------------
    def process(self, start_ms: int, end_ms: int) -> list[dict]:
        """Read, detect, write, checkpoint one window; exactly once across restarts."""
        return self.process_batch([(start_ms, end_ms)])

    def process_batch(self, bounds: list[tuple[int, int]]) -> list[dict]:
        """Read, detect and write consecutive windows, then checkpoint once after the last.

        Exactly once as with one checkpoint per window: a crash before the checkpoint leaves it
        at the batch's start, and the restart processes the same windows from the same state,
        which gives the same documents under the same ids, so what was written is overwritten,
        never duplicated.
        """
        cp = self.cp
        if cp is None:
            state = self.new_state()
            if self.uses_ports:
                state.src_ports, state.dst_ports = self.retry(
                    "choosing the top ports",
                    lambda: self.choose_ports(bounds[0][0], self._horizon))
            cp = Checkpoint(bounds[0][0], self.s.window_ms, 0, "", state)
        state, chain, docs, done = cp.state, cp.chain, [], 0
        # the false-positive marks, once per batch (each window applies those in force)
        marks = self.retry("reading the feedback", lambda: suppression_marks(
            self.store, self.anomalies, self.s.feedback_ttl_s))
        reads = self.read_windows(bounds, state, marks)
        try:
            for (start_ms, end_ms), data in zip(bounds, reads, strict=True):
                found = self.detect(start_ms, end_ms, data, state, chain)
                if found is None:
                    # stopped while waiting for the other workers, or they start with a later
                    # window: not this window (a first window's state is dropped)
                    break
                docs += found
                chain = next_chain(chain, start_ms, end_ms)
                done += 1
                if self.stop():
                    break       # asked to stop: checkpoint the windows done so far
        finally:
            reads.close()
        if not done:
            return []
        end_ms = bounds[done - 1][1]
        new = Checkpoint(end_ms, self.s.window_ms, cp.windows_done + done, chain, state)
        what = f"windows {bounds[0][0]}-{end_ms}"
        self.retry(f"writing {what}", lambda: self.write(docs, new))
        self.cp = new
        self.anomalies_written += sum(d["event"]["dataset"] != INCIDENTS for d in docs)
        return docs

    _horizon: int = 0
    _following: bool = False    # started without --from: following live data

    def batches(self, from_ms: int | None, to_ms: int | None,
                now: Callable[[], float] = time.time,
                sleep: Callable[[float], None] = time.sleep) -> Iterator[list[tuple[int, int]]]:
        """The windows still to process, backfilling to ``to_ms`` or following live data, in
        batches that share one checkpoint: in a backfill up to ``[run] backfill_batch`` windows
        that are all ready now, when following live data one window."""
        w = self.s.window_ms
        size = max(1, self.s.backfill_batch) if to_ms is not None else 1
        self._following = from_ms is None
        if self.cp is not None:
            start = self.cp.window_end_ms
            if from_ms is not None and from_ms > start:
                log.warning("checkpoint ends at %d, before --from %d: the windows between are "
                            "skipped", start, from_ms)
                start = -(-from_ms // w) * w
        elif from_ms is not None:
            start = -(-from_ms // w) * w
        else:
            start = (int(now() * 1000) - self.s.lag_ms) // w * w - w
        while not self.stop():
            end = start + w
            if to_ms is not None and end > to_ms:
                return
            # a window is ready [run] lag after it ends; a backfill into the future waits too
            ready = int(now() * 1000) - self.s.lag_ms
            self._horizon = min(ready, to_ms) if to_ms is not None else ready
            if end > ready:
                sleep(min(self.s.poll_s, (end - ready) / 1000))
                continue
            n = min(size, (self._horizon - start) // w)
            yield [(start + i * w, start + (i + 1) * w) for i in range(n)]
            # a batch cut short (stopping) resumes after its last checkpointed window
            done = self.cp.window_end_ms if self.cp is not None else start
            start = done if done > start else start + n * w
