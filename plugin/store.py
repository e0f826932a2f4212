"""The store: the only module that talks to Elasticsearch 8 or OpenSearch 2, hiding the difference."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests

from plugin.config import EngineSettings
from plugin.errors import EngineRequestError, EngineUnavailable

log = logging.getLogger(__name__)
# OpenSearch warns on every PIT page sorted by _id, its only unique sortable tiebreaker.
warnings.filterwarnings("ignore", message="Loading the fielddata on the _id field")

RETRY_STATUSES = (429, 502, 503, 504)
HINT_UNREACHABLE = (
    "is the cluster running and is the URL right? Start a local one with "
    "`fwsiem engine start`, or set --url / FWSIEM_URL"
)


def redact_url(url: str) -> str:
    """The URL without any user:password part, safe for logs and messages.

    >>> redact_url("https://elastic:secret@es.example:9200/")
    'https://es.example:9200/'
    """
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


def doc_id(*parts: Any) -> str:
    """A deterministic document ``_id`` from what the document describes.

    >>> doc_id("anomaly", "10.0.0.1", 60) == doc_id("anomaly", "10.0.0.1", 60)
    True
    >>> len(doc_id("anomaly", "10.0.0.1", 60)), doc_id("a", "b") != doc_id("a b")
    (40, True)
    """
    raw = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha1(raw.encode("utf-8")).hexdigest()


@dataclass
class BulkResult:
    """What a bulk write did: ``conflicts`` are documents whose ``_id`` was already present."""

    created: int = 0
    updated: int = 0
    conflicts: int = 0
    failed: list[dict] = field(default_factory=list)
    failed_actions: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _detect(settings: EngineSettings) -> tuple[str, str]:
    """(flavour, version) from ``GET /``, falling back to the product header and the nodes API."""
    session = requests.Session()
    # Passed on every request: a session-level verify loses to $REQUESTS_CA_BUNDLE in requests.
    verify = settings.ca_certs or bool(settings.verify_certs)
    headers = {"accept": "application/json"}
    if settings.api_key:
        headers["authorization"] = f"ApiKey {_api_key_header(settings.api_key)}"
    elif settings.username:
        session.auth = (settings.username, settings.password)
    url = settings.url.rstrip("/")
    safe = redact_url(url)
    try:
        resp = session.get(url + "/", headers=headers, timeout=settings.timeout, verify=verify)
    except requests.exceptions.SSLError as exc:
        raise EngineUnavailable(
            f"TLS handshake with {safe} failed: {_short(exc)}",
            hint="pass the cluster's CA with --ca-certs, or --insecure to skip verification",
        ) from None
    except requests.exceptions.RequestException as exc:
        raise EngineUnavailable(f"cannot reach {safe}: {_short(exc)}", hint=HINT_UNREACHABLE) from None
    if resp.status_code == 401:
        raise EngineRequestError(
            f"{safe} rejected the credentials (HTTP 401)",
            hint="check --username/--password or --api-key",
        )
    if resp.status_code == 403:
        raise EngineRequestError(f"{safe} refused access (HTTP 403)", hint="the user lacks the monitor privilege")
    body: dict = {}
    try:
        body = resp.json() if resp.status_code == 200 else {}
    except ValueError:
        body = {}
    version = body.get("version", {}) if isinstance(body, dict) else {}
    if version.get("distribution") == "opensearch":
        return "opensearch", version.get("number", "")
    if version.get("number"):
        return "elasticsearch", version["number"]
    if resp.headers.get("X-Elastic-Product") == "Elasticsearch":
        # Distributions without the rest-root module answer GET / with 405; ask the node.
        nodes = session.get(url + "/_nodes/_local?filter_path=nodes.*.version", headers=headers,
                            timeout=settings.timeout, verify=verify)
        versions = [n.get("version", "") for n in nodes.json().get("nodes", {}).values()]
        return "elasticsearch", versions[0] if versions else ""
    raise EngineUnavailable(
        f"{safe} answered HTTP {resp.status_code} but is neither Elasticsearch nor OpenSearch",
        hint=HINT_UNREACHABLE,
    )


# -- what a refused bulk item is about ----------------------------------------------------------
# A per-item refusal in a ``_bulk`` answer is about the cluster (retry, then spool; never a dead
# letter) when its status says so (401, 403, 404, 408, 429, 5xx) or its error type names a state
# of the cluster: an index that is closed, blocked or missing, a missing pipeline, security,
# unassigned shards, a full queue or a tripped breaker. A mapping refusal is about the line only
# when the target index carries fwsiem's mappings; the shipper checks that (an index created
# while the templates were missing maps fields by guess and refuses good lines). Every other
# 4xx is about the line itself and becomes a dead letter.
CLUSTER_STATUSES = frozenset({401, 403, 404, 408, 429})
CLUSTER_ERROR_TYPES = frozenset({
    "cluster_block_exception", "index_closed_exception", "index_not_found_exception",
    "security_exception", "authorization_exception", "unavailable_shards_exception",
    "no_shard_available_action_exception", "primary_missing_action_exception",
    "es_rejected_execution_exception", "opensearch_rejected_execution_exception",
    "rejected_execution_exception", "circuit_breaking_exception",
    "process_cluster_event_timeout_exception", "cluster_manager_not_discovered_exception",
    "master_not_discovered_exception", "node_not_connected_exception",
    "node_closed_exception", "receive_timeout_transport_exception", "timeout_exception",
    "read_only_exception", "index_creation_exception", "invalid_index_template_exception",
})
CLUSTER_REASONS = ("pipeline with id [", "no matching index template", "blocked by:",
                   "no such index")
MAPPING_REASONS = ("mapper [", "Limit of total fields")
MAPPING_ERROR_TYPES = frozenset({
    "mapper_parsing_exception", "document_parsing_exception", "strict_dynamic_mapping_exception",
    "mapper_exception",
})


def bulk_item_fault(status: int, error: object) -> str:
    """What a refused ``_bulk`` item is about: ``"cluster"``, ``"mapping"`` or ``"line"``.

    >>> bulk_item_fault(400, {"type": "illegal_argument_exception",
    ...                       "reason": "pipeline with id [fwsiem-logs] does not exist"})
    'cluster'
    >>> bulk_item_fault(403, {"type": "cluster_block_exception", "reason": "index [x] blocked"})
    'cluster'
    >>> bulk_item_fault(400, {"type": "mapper_parsing_exception", "reason": "failed to parse"})
    'mapping'
    >>> bulk_item_fault(400, {"type": "illegal_argument_exception", "reason": "bad value"})
    'line'
    """
    if status in CLUSTER_STATUSES or status >= 500:
        return "cluster"
    etype, reason = "", ""
    while isinstance(error, dict):  # the outermost cause that names a cluster state wins
        etype = str(error.get("type", ""))
        reason = str(error.get("reason", ""))
        if etype in CLUSTER_ERROR_TYPES or any(r in reason for r in CLUSTER_REASONS):
            return "cluster"
        if etype in MAPPING_ERROR_TYPES or any(r in reason for r in MAPPING_REASONS):
            return "mapping"
        error = error.get("caused_by")
    if isinstance(error, str) and any(r in error for r in CLUSTER_REASONS):
        return "cluster"
    return "line"


def _api_key_header(api_key: str) -> str:
    if ":" in api_key:
        return base64.b64encode(api_key.encode()).decode()
    return api_key


def _short(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "certificate verify failed"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:200] if text else type(exc).__name__


class Store:
    """One interface over the ``elasticsearch`` 8.x and ``opensearch-py`` clients."""

    def __init__(self, settings: EngineSettings, flavor: str, version: str) -> None:
        self.settings = settings
        self.flavor = flavor
        self.version = version
        self.url = settings.url.rstrip("/")
        self.safe_url = redact_url(self.url)
        self._client = self._make_client()
        self._processors: set[str] | None = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def connect(cls, settings: EngineSettings) -> Store:
        if urlsplit(settings.url).scheme == "http" and (settings.username or settings.api_key):
            log.warning("credentials for %s are sent unencrypted over http://: anyone on the path "
                        "can read them; use an https:// URL", redact_url(settings.url))
        flavor, version = _detect(settings)
        store = cls(settings, flavor, version)
        log.debug("connected to %s %s at %s", flavor, version, store.safe_url)
        return store

    def _make_client(self):
        s = self.settings
        common: dict[str, Any] = {
            "verify_certs": bool(s.verify_certs),
            "max_retries": int(s.max_retries),
            "retry_on_status": RETRY_STATUSES,
            "retry_on_timeout": True,
        }
        if s.ca_certs:
            common["ca_certs"] = s.ca_certs
        if self.flavor == "elasticsearch":
            from elasticsearch import Elasticsearch

            kwargs = dict(common, request_timeout=float(s.timeout))
            if not s.verify_certs:
                kwargs["ssl_show_warn"] = False
            if s.api_key:
                kwargs["api_key"] = tuple(s.api_key.split(":", 1)) if ":" in s.api_key else s.api_key
            elif s.username:
                kwargs["basic_auth"] = (s.username, s.password)
            return Elasticsearch(self.url, **kwargs)
        from opensearchpy import OpenSearch

        kwargs = dict(common, timeout=float(s.timeout))
        if not s.verify_certs:
            kwargs["ssl_show_warn"] = False
        if s.api_key:
            kwargs["headers"] = {"authorization": f"ApiKey {_api_key_header(s.api_key)}"}
        elif s.username:
            kwargs["http_auth"] = (s.username, s.password)
        return OpenSearch(hosts=[self.url], **kwargs)

    def close(self) -> None:
        self._client.close()

    # -- the one request path -----------------------------------------------------------------
    def request(
        self, method: str, path: str, body: Any = None, params: dict | None = None,
        *, ignore: tuple[int, ...] = (),
    ) -> Any:
        """Send one request; connection errors and refusals become fwsiem errors.

        Statuses in ``ignore`` return ``None`` instead of raising (e.g. 404 for "absent").
        """
        what = f"{method} {path}"
        try:
            if self.flavor == "elasticsearch":
                headers = {"accept": "application/json"}
                if body is not None:
                    headers["content-type"] = (
                        "application/x-ndjson" if isinstance(body, (str, bytes)) else "application/json"
                    )
                resp = self._client.perform_request(method, path, params=params, headers=headers, body=body)
                return resp.body if hasattr(resp, "body") else resp
            return self._client.transport.perform_request(method, path, params=params, body=body)
        except Exception as exc:  # both clients' hierarchies are mapped in one place
            status = _status_of(exc)
            if status is not None and status in ignore:
                return None
            raise self._translate(exc, what) from None

    def _translate(self, exc: Exception, what: str) -> Exception:
        status = _status_of(exc)
        if status is None:
            return EngineUnavailable(f"cannot reach {self.safe_url} ({what}): {_short(exc)}", hint=HINT_UNREACHABLE)
        reason = _reason_of(exc)
        if status == 401:
            err = EngineRequestError(f"{self.safe_url} rejected the credentials on {what} (HTTP 401)",
                                     hint="check --username/--password or --api-key")
            err.status = status
            return err
        return self._status_error(status, what, reason,
                                  f", after {self.settings.max_retries} retries")

    def _status_error(self, status: int, what: str, reason: Any, retried: str = "") -> Exception:
        """The error for an HTTP status the engine answered ``what`` with."""
        if status in RETRY_STATUSES:
            return EngineUnavailable(f"{self.safe_url} is overloaded or unavailable on {what} "
                                     f"(HTTP {status}{retried}): {reason}")
        err = EngineRequestError(f"{self.safe_url} refused {what} (HTTP {status}): {reason}")
        err.status = status  # the shipper tells a refusal of the cluster from one of the data
        return err

    # -- cluster ------------------------------------------------------------------------------
    def health(self, wait_for_status: str | None = None, timeout: str = "30s") -> dict:
        """The cluster's health; with ``wait_for_status``, once that status is reached or after
        ``timeout`` (an engine duration such as ``"30s"``), ``timed_out`` saying which."""
        if not wait_for_status:
            return self.request("GET", "/_cluster/health")
        # in the path: both clients take a ``timeout`` parameter for their own read timeout
        query = urlencode({"wait_for_status": wait_for_status, "timeout": timeout})
        got = self.request("GET", f"/_cluster/health?{query}", ignore=(408,))
        return got if got is not None else {**self.request("GET", "/_cluster/health"),
                                            "timed_out": True}

    def ingest_processors(self) -> set[str]:
        """Processor types every ingest node of the cluster offers."""
        if self._processors is None:
            nodes = self.request("GET", "/_nodes/ingest", params={"filter_path": "nodes.*.ingest.processors"})
            sets = [
                {p["type"] for p in n.get("ingest", {}).get("processors", [])}
                for n in (nodes or {}).get("nodes", {}).values()
            ]
            self._processors = set.intersection(*sets) if sets else set()
        return self._processors

    # -- indices, templates, pipelines ----------------------------------------------------------
    def exists(self, index: str) -> bool:
        return bool(self.request("HEAD", f"/{index}", ignore=(404,)))

    def create_index(self, index: str, body: dict | None = None) -> None:
        self.request("PUT", f"/{index}", body=body or {}, ignore=(400,))

    def delete_index(self, pattern: str) -> None:
        """Delete the indices and data streams a name or pattern resolves to (nothing if none)."""
        resolved = self.request("GET", f"/_resolve/index/{pattern}", ignore=(404,)) or {}
        for stream in resolved.get("data_streams", []):
            # 405: a distribution without the data-streams module cannot delete them at all.
            if self.request("DELETE", f"/_data_stream/{stream['name']}", ignore=(404, 405)) is None:
                log.warning("%s cannot delete data stream %s (no data stream API)", self.safe_url,
                            stream["name"])
        for index in resolved.get("indices", []):
            if "data_stream" not in index:
                self.request("DELETE", f"/{index['name']}", ignore=(404,))

    def refresh(self, index: str) -> None:
        self.request("POST", f"/{index}/_refresh", params={"ignore_unavailable": "true",
                                                            "allow_no_indices": "true"})

    def put_index_template(self, name: str, body: dict) -> None:
        self.request("PUT", f"/_index_template/{name}", body=body)

    def get_index_template(self, name: str) -> dict | None:
        resp = self.request("GET", f"/_index_template/{name}", ignore=(404,))
        if not resp:
            return None
        for item in resp.get("index_templates", []):
            if item.get("name") == name:
                return item.get("index_template")
        return None

    def delete_index_template(self, name: str) -> None:
        self.request("DELETE", f"/_index_template/{name}", ignore=(404,))

    def put_pipeline(self, pipeline_id: str, body: dict) -> None:
        self.request("PUT", f"/_ingest/pipeline/{pipeline_id}", body=body)

    def get_pipeline(self, pipeline_id: str) -> dict | None:
        resp = self.request("GET", f"/_ingest/pipeline/{pipeline_id}", ignore=(404,))
        return (resp or {}).get(pipeline_id)

    def delete_pipeline(self, pipeline_id: str) -> None:
        self.request("DELETE", f"/_ingest/pipeline/{pipeline_id}", ignore=(404,))

    def simulate(self, pipeline_id: str, docs: list[dict], verbose: bool = False) -> list[dict]:
        """Run documents through an installed pipeline; one result per document, in order."""
        body = {"docs": [{"_index": "fwsiem-simulate", "_source": d} for d in docs]}
        resp = self.request("POST", f"/_ingest/pipeline/{pipeline_id}/_simulate", body=body,
                            params={"verbose": "true"} if verbose else None)
        return resp["docs"]

    # -- documents ----------------------------------------------------------------------------
    def index_doc(self, index: str, doc: dict, id: str | None = None, refresh: bool = False,
                  op_type: str | None = None) -> dict:
        params = {"refresh": "true"} if refresh else {}
        if op_type:
            params["op_type"] = op_type
        path = f"/{index}/_doc/{id}" if id else f"/{index}/_doc"
        return self.request("PUT" if id else "POST", path, body=doc, params=params or None)

    def get_doc(self, index: str, id: str) -> dict | None:
        resp = self.request("GET", f"/{index}/_doc/{id}", ignore=(404,))
        if not resp or not resp.get("found"):
            return None
        return resp["_source"]

    def update_doc(self, index: str, id: str, partial: dict, refresh: bool = False) -> dict:
        return self.request("POST", f"/{index}/_update/{id}", body={"doc": partial},
                            params={"refresh": "true"} if refresh else None)

    def delete_doc(self, index: str, id: str, refresh: bool = False) -> None:
        self.request("DELETE", f"/{index}/_doc/{id}", params={"refresh": "true"} if refresh else None,
                     ignore=(404,))

    def delete_by_query(self, index: str, query: dict, refresh: bool = True) -> int:
        resp = self.request("POST", f"/{index}/_delete_by_query", body={"query": query},
                            params={"refresh": "true" if refresh else "false", "conflicts": "proceed",
                                    "ignore_unavailable": "true", "allow_no_indices": "true"})
        return int((resp or {}).get("deleted", 0))

    def bulk(self, actions: Iterable[dict], *, pipeline: str | None = None, refresh: bool = False,
             chunk_size: int | None = None) -> BulkResult:
        """Write actions (elasticsearch-py helpers format) with retries and backoff on 429.

        Connection failures and 5xx are retried by the transport; what still fails is returned in
        ``failed``/``failed_actions`` so the caller can spool it, never silently dropped.
        """
        chunk = int(chunk_size or self.settings.bulk_chunk)
        result = BulkResult()
        # Actions in flight, by _id, so a failure can hand back its source for the spool; each is
        # dropped when its result arrives, so memory stays bounded by the chunks in flight.
        in_flight: dict[str, dict] = {}

        def tracked():
            for action in actions:
                if action.get("_id") is not None:
                    in_flight[str(action["_id"])] = action
                yield action

        kwargs: dict[str, Any] = dict(
            chunk_size=chunk, max_retries=int(self.settings.max_retries), initial_backoff=1,
            max_backoff=30, raise_on_error=False, raise_on_exception=False, yield_ok=True,
        )
        if pipeline:
            kwargs["pipeline"] = pipeline
        if refresh:
            kwargs["refresh"] = "true"
        if self.flavor == "elasticsearch":
            from elasticsearch.helpers import streaming_bulk
        else:
            from opensearchpy.helpers import streaming_bulk
        try:
            for ok, item in streaming_bulk(self._client, tracked(), **kwargs):
                op, info = next(iter(item.items()))
                status = info.get("status", 0)
                source = in_flight.pop(str(info.get("_id")), None)
                if ok and status == 201:
                    result.created += 1
                elif ok:
                    result.updated += 1
                elif status == 409:
                    result.conflicts += 1
                else:
                    result.failed.append({"_id": info.get("_id"), "_index": info.get("_index"),
                                          "status": status, "error": info.get("error") or info.get("exception")})
                    result.failed_actions.append(
                        source or {"_id": info.get("_id"), "op": op, "status": status})
        except Exception as exc:
            raise self._translate(exc, "POST /_bulk") from None
        return result

    # -- reads --------------------------------------------------------------------------------
    def search(self, index: str, body: dict, params: dict | None = None) -> dict:
        p = {"ignore_unavailable": "true", "allow_no_indices": "true"}
        p.update(params or {})
        return self.request("POST", f"/{index}/_search", body=body, params=p)

    def count(self, index: str, query: dict | None = None) -> int:
        body = {"query": query} if query else None
        resp = self.request("POST", f"/{index}/_count", body=body,
                            params={"ignore_unavailable": "true", "allow_no_indices": "true"})
        return int(resp["count"])

    @staticmethod
    def _aggregation_body(aggs: dict, query: dict | None) -> dict:
        body: dict[str, Any] = {"size": 0, "aggs": aggs, "track_total_hits": True}
        if query:
            body["query"] = query
        return body

    @staticmethod
    def _aggregations(resp: dict) -> dict:
        """A search response's aggregations, with its total hits under ``_total``."""
        out = resp.get("aggregations", {})
        out.setdefault("_total", resp["hits"]["total"]["value"])
        return out

    def aggregate(self, index: str, aggs: dict, query: dict | None = None) -> dict:
        return self._aggregations(self.search(index, self._aggregation_body(aggs, query)))

    def aggregate_many(self, index: str, requests: list[dict], query: dict | None = None
                       ) -> list[dict]:
        """:meth:`aggregate` of several aggregations over the same query, in one ``_msearch``.

        A search the cluster refuses fails the whole call, as :meth:`aggregate` would.
        """
        if not requests:
            return []
        head = json.dumps({"index": index, "ignore_unavailable": True,
                           "allow_no_indices": True})
        lines = []
        for aggs in requests:
            lines += [head, json.dumps(self._aggregation_body(aggs, query))]
        resp = self.request("POST", "/_msearch", body="\n".join(lines) + "\n")
        out = []
        for r in resp["responses"]:
            if "error" in r:
                error = r["error"]
                reason = error.get("reason", error) if isinstance(error, dict) else error
                raise self._status_error(int(r.get("status", 500)),
                                         f"a search of POST /_msearch on {index}", reason)
            out.append(self._aggregations(r))
        return out

    def composite(self, index: str, sources: list[dict], aggs: dict | None = None,
                  query: dict | None = None, size: int = 1000) -> Iterator[dict]:
        """Every bucket of a composite aggregation, paged with ``after_key``."""
        after = None
        while True:
            comp: dict[str, Any] = {"size": size, "sources": sources}
            if after:
                comp["after"] = after
            agg: dict[str, Any] = {"composite": comp}
            if aggs:
                agg["aggs"] = aggs
            body: dict[str, Any] = {"size": 0, "aggs": {"c": agg}}
            if query:
                body["query"] = query
            resp = self.search(index, body).get("aggregations", {}).get("c", {})
            buckets = resp.get("buckets", [])
            yield from buckets
            after = resp.get("after_key")
            if not buckets or not after:
                return

    def scan(self, index: str, query: dict | None = None, sort: list | None = None,
             size: int = 1000, source: list[str] | bool | None = None,
             keep_alive: str = "2m") -> Iterator[dict]:
        """Every matching hit through a point-in-time with ``search_after`` (a consistent view)."""
        pit = self._open_pit(index, keep_alive)
        if pit is None:
            return
        try:
            after = None
            while True:
                body: dict[str, Any] = {
                    "size": size,
                    "pit": {"id": pit, "keep_alive": keep_alive},
                    "sort": (sort or []) + [{self._tiebreaker: "asc"}],
                    "track_total_hits": False,
                }
                if query:
                    body["query"] = query
                if source is not None:
                    body["_source"] = source
                if after is not None:
                    body["search_after"] = after
                resp = self.request("POST", "/_search", body=body)
                hits = resp["hits"]["hits"]
                if not hits:
                    return
                pit = resp.get("pit_id", pit)
                yield from hits
                after = hits[-1]["sort"]
        finally:
            self._close_pit(pit)

    @property
    def _tiebreaker(self) -> str:
        # OpenSearch has no _shard_doc; _id is unique and sortable there.
        return "_shard_doc" if self.flavor == "elasticsearch" else "_id"

    def _open_pit(self, index: str, keep_alive: str) -> str | None:
        if self.flavor == "elasticsearch":
            resp = self.request("POST", f"/{index}/_pit", params={"keep_alive": keep_alive}, ignore=(404,))
            return (resp or {}).get("id")
        resp = self.request("POST", f"/{index}/_search/point_in_time", params={"keep_alive": keep_alive},
                            ignore=(404,))
        return (resp or {}).get("pit_id")

    def _close_pit(self, pit: str) -> None:
        try:
            if self.flavor == "elasticsearch":
                self.request("DELETE", "/_pit", body={"id": pit}, ignore=(404,))
            else:
                self.request("DELETE", "/_search/point_in_time", body={"pit_id": [pit]}, ignore=(404,))
        except Exception:  # closing is best effort; the PIT expires on its own
            log.debug("could not close point in time", exc_info=True)



def _status_of(exc: Exception) -> int | None:
    for attr in ("status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    meta = getattr(exc, "meta", None)
    status = getattr(meta, "status", None)
    return status if isinstance(status, int) else None


def _reason_of(exc: Exception) -> str:
    body = getattr(exc, "body", None) or getattr(exc, "info", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            root = (err.get("root_cause") or [err])[0]
            return f"{root.get('type', '')}: {root.get('reason', '')}".strip(": ")
        return str(err)[:300]
    return str(getattr(exc, "error", "") or exc)[:300]


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys), used for hashes of installed assets."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
