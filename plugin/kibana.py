"""Kibana / OpenSearch Dashboards saved objects: the import file, their queries, and the import API."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import re
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import requests

from plugin.config import Config
from plugin.errors import ConfigError, EngineRequestError, EngineUnavailable

FLAVORS = ("kibana", "opensearch-dashboards")
XSRF_HEADER = {"kibana": "kbn-xsrf", "opensearch-dashboards": "osd-xsrf"}
NDJSON = "build/fwsiem-kibana.ndjson"
#: Import order: what others reference comes first, as in a Kibana export.
TYPE_ORDER = ("index-pattern", "search", "visualization", "dashboard")
#: Attributes that Kibana stores as JSON text; the readable files keep them as JSON.
JSON_TEXT_ATTRIBUTES = ("visState", "uiStateJSON", "panelsJSON", "optionsJSON", "fields",
                        "fieldFormatMap")
RETRY_PAUSE = 2.0  # seconds between attempts while the product starts
INTERVALS = (("1m", 60), ("5m", 300), ("10m", 600), ("30m", 1800), ("1h", 3600),
             ("3h", 10800), ("12h", 43200), ("1d", 86400), ("7d", 604800))


# -- the objects --------------------------------------------------------------------------------
def saved_objects_dir() -> Path:
    """The folder of readable saved objects: ``<type>/<id>.json``, one object per file."""
    return Path(str(resources.files("plugin").joinpath("assets", "kibana_saved_objects")))


def load_objects(root: Path | None = None) -> list[dict]:
    """Every readable saved object, in import order (type, then id)."""
    root = root or saved_objects_dir()
    objects = []
    for kind in TYPE_ORDER:
        for path in sorted((root / kind).glob("*.json")):
            try:
                objects.append(json.loads(path.read_text()))
            except ValueError as exc:
                raise ConfigError(f"saved object {path} is not valid JSON: {exc}") from None
    return objects


def to_saved_object(obj: dict) -> dict:
    """The object as Kibana's import API takes it: JSON-valued attributes become JSON text.

    >>> to_saved_object({"type": "visualization", "attributes": {"visState": {"aggs": []}}})
    {'type': 'visualization', 'attributes': {'visState': '{"aggs":[]}'}}
    """
    out = copy.deepcopy(obj)
    attrs = out.get("attributes", {})
    for key in JSON_TEXT_ATTRIBUTES:
        if key in attrs and not isinstance(attrs[key], str):
            attrs[key] = _compact(attrs[key])
    meta = attrs.get("kibanaSavedObjectMeta", {})
    if "searchSourceJSON" in meta and not isinstance(meta["searchSourceJSON"], str):
        meta["searchSourceJSON"] = _compact(meta["searchSourceJSON"])
    return out


def build_ndjson(root: Path | None = None) -> str:
    """The import file: one saved object per line, in import order."""
    return "".join(_compact(to_saved_object(o)) + "\n" for o in load_objects(root))


def ndjson_path(root: Path | None = None) -> Path:
    return (root or saved_objects_dir()) / NDJSON


def _compact(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# -- what a visualization asks the engine ---------------------------------------------------------
def visualization_request(vis: dict, index_patterns: dict[str, dict],
                          time_range: tuple[str, str] | None = None) -> tuple[str, dict]:
    """(index pattern, search body) that a classic aggregation-based visualization sends.

    Bucket aggregations nest in the order the visualization lists them, each carrying every
    metric; the search source's Lucene query and the time range filter the events.
    """
    attrs = vis["attributes"]
    state = attrs["visState"]
    source = attrs["kibanaSavedObjectMeta"]["searchSourceJSON"]
    refs = {r["name"]: r["id"] for r in vis.get("references", [])}
    pattern = index_patterns[refs[source["indexRefName"]]]["attributes"]
    aggs = [a for a in state["aggs"] if a.get("enabled", True)]
    metrics = {a["id"]: _metric_agg(a) for a in aggs if a["schema"] == "metric"}
    count_ids = {k for k, v in metrics.items() if v is None} | {"_count"}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    inner: dict = dict(metrics)
    for agg in reversed([a for a in aggs if a["schema"] != "metric"]):
        body = _bucket_agg(agg, time_range, count_ids)
        if inner:
            body["aggs"] = inner
        inner = {agg["id"]: body, **metrics}
    filters = []
    query = source.get("query", {})
    if query.get("query"):
        if query.get("language") != "lucene":
            raise ConfigError(f"visualization {vis['id']}: only Lucene queries are translated")
        filters.append({"query_string": {"query": query["query"], "analyze_wildcard": True}})
    if time_range and pattern.get("timeFieldName"):
        filters.append({"range": {pattern["timeFieldName"]: {
            "gte": time_range[0], "lte": time_range[1], "format": "strict_date_optional_time"}}})
    return pattern["title"], {"size": 0, "track_total_hits": True,
                              "query": {"bool": {"filter": filters}}, "aggs": inner}


def _metric_agg(agg: dict) -> dict | None:
    if agg["type"] == "count":
        return None  # every bucket's doc_count
    if agg["type"] in ("sum", "avg", "min", "max", "cardinality", "value_count"):
        return {agg["type"]: {"field": agg["params"]["field"]}}
    raise ConfigError(f"metric aggregation {agg['type']!r} is not translated")


def _bucket_agg(agg: dict, time_range: tuple[str, str] | None, count_ids: set[str]) -> dict:
    p = agg["params"]
    if agg["type"] == "terms":
        order_by = p.get("orderBy", "_count")
        key = "_count" if order_by in count_ids else order_by
        body = {"field": p["field"], "size": p.get("size", 5), "order": {key: p.get("order", "desc")}}
        if p.get("missingBucket"):
            body["missing"] = "__missing__"
        return {"terms": body}
    if agg["type"] == "date_histogram":
        interval = p.get("interval", "auto")
        if interval == "auto":
            interval = auto_interval(time_range)
        return {"date_histogram": {"field": p["field"], "fixed_interval": interval,
                                   "min_doc_count": p.get("min_doc_count", 1)}}
    if agg["type"] == "histogram":
        return {"histogram": {"field": p["field"], "interval": p["interval"],
                              "min_doc_count": p.get("min_doc_count", 1)}}
    raise ConfigError(f"bucket aggregation {agg['type']!r} is not translated")


def auto_interval(time_range: tuple[str, str] | None, buckets: int = 100) -> str:
    """The smallest round interval giving at most ``buckets`` buckets over the range.

    >>> auto_interval(("2024-03-04T00:00:00Z", "2024-03-05T00:00:00Z"))
    '30m'
    >>> auto_interval(None)
    '1h'
    """
    if not time_range:
        return "1h"
    start, end = (dt.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in time_range)
    span = (end - start).total_seconds()
    for name, seconds in INTERVALS:
        if span / seconds <= buckets:
            return name
    return INTERVALS[-1][0]


# -- the import API -----------------------------------------------------------------------------
@dataclass(frozen=True)
class KibanaSettings:
    """How to reach Kibana: ``[kibana]`` keys, each falling back to ``[engine]``'s."""

    url: str
    username: str = ""
    password: str = field(default="", repr=False)
    api_key: str = field(default="", repr=False)
    ca_certs: str = ""
    verify_certs: bool = True
    timeout: float = 60


def kibana_settings(config: Config, url: str | None = None) -> KibanaSettings:
    """Settings from ``[kibana]``; credentials, CA and verification default to ``[engine]``'s."""
    section = config.section("kibana")
    engine = config.engine
    url = url or section.get("url") or ""
    if not url:
        raise ConfigError("no Kibana URL given", hint="pass --kibana URL or set url in [kibana]")
    if section.get("api_key") or section.get("username"):
        creds = {"api_key": section.get("api_key", ""), "username": section.get("username", ""),
                 "password": section.get("password", "")}
    else:
        creds = {"api_key": engine.api_key, "username": engine.username,
                 "password": engine.password}
    return KibanaSettings(
        url=url.rstrip("/"), **creds,
        ca_certs=section.get("ca_certs") or engine.ca_certs,
        verify_certs=bool(section.get("verify_certs", engine.verify_certs)),
        timeout=float(section.get("timeout", max(engine.timeout, 60))))


@dataclass
class ObjectError:
    """One saved object the import refused, and why."""

    type: str
    id: str
    title: str
    reason: str

    def __str__(self) -> str:
        return f"{self.type} {self.id} ({self.title}): {self.reason}"


@dataclass
class ImportResult:
    url: str
    flavor: str
    sent: int
    success_count: int
    errors: list[ObjectError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.success_count == self.sent

    def summary(self) -> str:
        product = "Kibana" if self.flavor == "kibana" else "OpenSearch Dashboards"
        text = f"imported {self.success_count} of {self.sent} saved objects into {product} at {self.url}"
        return text + (f"; {len(self.errors)} refused" if self.errors else "")


class SavedObjectsImportError(EngineRequestError):
    """Kibana answered, but refused some or all of the saved objects."""

    def __init__(self, message: str, result: ImportResult, **kw) -> None:
        super().__init__(message, **kw)
        self.result = result


def import_saved_objects(config: Config, url: str | None = None, flavor: str | None = None, *,
                         engine_flavor: str | None = None, wait: float | None = None,
                         ndjson: str | None = None) -> ImportResult:
    """Import fwsiem's saved objects with overwrite; raise a one-line error unless all went in.

    ``flavor`` is ``kibana`` or ``opensearch-dashboards``; it decides the anti-CSRF header the
    product requires. Default: ``[kibana] flavor``, else the one that goes with
    ``engine_flavor`` (``opensearch`` → OpenSearch Dashboards), else Kibana. ``wait`` (default
    ``[kibana] wait``, 0) is how many seconds to keep retrying while the product is not up yet.
    """
    settings = kibana_settings(config, url)
    section = config.section("kibana")
    flavor = (flavor or section.get("flavor")
              or ("opensearch-dashboards" if engine_flavor == "opensearch" else "kibana"))
    wait = float(section.get("wait", 0) if wait is None else wait)
    if flavor not in FLAVORS:
        raise ConfigError(f"unknown dashboards flavor {flavor!r}", hint=f"use one of {', '.join(FLAVORS)}")
    if ndjson is None:
        path = ndjson_path()
        if not path.is_file():
            raise ConfigError(f"saved-objects file {path} is missing",
                              hint="run scripts/build_saved_objects.py")
        ndjson = path.read_text()
    sent = sum(1 for line in ndjson.splitlines() if line.strip())
    safe = _redact(settings.url)
    endpoint = settings.url + "/api/saved_objects/_import"
    headers = {XSRF_HEADER[flavor]: "true", "accept": "application/json"}
    auth = None
    if settings.api_key:
        headers["authorization"] = f"ApiKey {_api_key_header(settings.api_key)}"
    elif settings.username:
        auth = (settings.username, settings.password)
    deadline = time.monotonic() + wait
    while True:
        try:
            resp = requests.post(
                endpoint, params={"overwrite": "true"}, headers=headers, auth=auth,
                files={"file": ("fwsiem-kibana.ndjson", ndjson.encode(), "application/ndjson")},
                verify=settings.ca_certs or settings.verify_certs, timeout=settings.timeout)
        except requests.exceptions.SSLError as exc:
            raise EngineUnavailable(f"TLS handshake with {safe} failed: {_first_line(exc)}",
                                    hint="set ca_certs in [kibana] or verify_certs = false") from None
        except requests.exceptions.RequestException as exc:
            if time.monotonic() < deadline:
                time.sleep(RETRY_PAUSE)
                continue
            raise EngineUnavailable(f"cannot reach {flavor} at {safe}: {_first_line(exc)}",
                                    hint="is it running and is --kibana URL right?") from None
        if resp.status_code in (502, 503, 504) and time.monotonic() < deadline:
            time.sleep(RETRY_PAUSE)  # still starting (Kibana answers 503 until it is ready)
            continue
        break
    _raise_for_status(resp, safe, flavor)
    try:
        body = resp.json()
    except ValueError:
        raise EngineRequestError(f"{safe} answered the saved-objects import with no JSON",
                                 hint="is the URL Kibana / OpenSearch Dashboards?") from None
    result = ImportResult(safe, flavor, sent, int(body.get("successCount", 0)),
                          [_object_error(e) for e in body.get("errors") or []])
    if not result.ok:
        shown = "; ".join(str(e) for e in result.errors[:5])
        more = f" and {len(result.errors) - 5} more" if len(result.errors) > 5 else ""
        raise SavedObjectsImportError(
            f"{flavor} at {safe} imported {result.success_count} of {sent} saved objects; "
            f"refused {shown or 'the rest without saying why'}{more}", result,
            hint="check the product's version (Kibana 8, OpenSearch Dashboards 2) and its log")
    return result


def _raise_for_status(resp: requests.Response, safe: str, flavor: str) -> None:
    if resp.status_code < 400:
        return
    try:
        detail = resp.json().get("message") or resp.text
    except ValueError:
        detail = resp.text
    detail = _first_line(detail)[:300]
    where = f"{flavor} at {safe}"
    if resp.status_code == 401:
        raise EngineRequestError(f"{where} rejected the credentials (HTTP 401)",
                                 hint="set username/password or api_key in [kibana]")
    if resp.status_code == 403:
        raise EngineRequestError(f"{where} refused the saved-objects import (HTTP 403): {detail}",
                                 hint="the user needs write access to saved objects")
    if resp.status_code == 404:
        raise EngineRequestError(f"{where} has no saved-objects import API (HTTP 404)",
                                 hint="is the URL the product's base URL, with its base path?")
    hint = None
    if resp.status_code == 400 and "xsrf" in detail.lower():
        other = FLAVORS[1 - FLAVORS.index(flavor)]
        hint = f"is it {other}? try --dashboards-flavor {other}"
    raise EngineRequestError(f"{where} refused the saved-objects import (HTTP {resp.status_code}): "
                             f"{detail}", hint=hint)


def _object_error(err: dict) -> ObjectError:
    e = err.get("error") or {}
    kind = e.get("type", "unknown")
    if kind == "missing_references":
        refs = ", ".join(f"{r.get('type')} {r.get('id')}" for r in e.get("references", []))
        reason = f"missing references: {refs}"
    elif kind == "conflict":
        reason = "conflicts with an existing object"
    elif kind == "unsupported_type":
        reason = "unsupported type"
    else:
        reason = e.get("message") or kind
    title = err.get("title") or (err.get("meta") or {}).get("title") or ""
    return ObjectError(err.get("type", "?"), err.get("id", "?"), title, reason)


def _api_key_header(api_key: str) -> str:
    return base64.b64encode(api_key.encode()).decode() if ":" in api_key else api_key


def _redact(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//", url)


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else ""
