"""Model registry in the cluster: trained models with their provenance, artifacts and promotion.

Every trained model is one document in the models index (``[indices] models``,
``fwsiem-models``): its name and version, the estimator's parameters, the data range it saw,
its metrics, the library versions, the sha256 of its artifact and the artifact's HMAC under
this machine's fwsiem key (:func:`plugin.checkpoint.state_key`, the key that signs run
checkpoints). The artifact (a joblib pickle) is stored beside it as base64 chunks, so any
sidecar connected to the cluster and holding the key can load it without a shared filesystem.
Unpickling runs code, and anyone who can write to the models index can write a record and its
sha256: an artifact is unpickled only after its HMAC, which binds it to the model's name and
version, matches under the local key; otherwise :class:`~plugin.errors.ArtifactIntegrityError`
is raised and nothing in it runs.

One version per model name is ``active``. A new version becomes active only if its hold-out
metric is not worse than the active one's by more than a tolerance (or when forced); the
version it replaced is remembered, so ``rollback`` can bring it back.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from plugin.checkpoint import sign, state_key, verify
from plugin.errors import ArtifactIntegrityError, FwsiemError, InputError
from plugin.setup import template_mappings
from plugin.store import Store, doc_id

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.01
DEFAULT_CHUNK_BYTES = 512 * 1024
ARTIFACT_FORMAT = "joblib+hmac-sha256"

#: Mapping of the models index. Parameters and reports stay in ``_source`` only.




class PromotionRefused(FwsiemError):
    """A model version was not promoted because its hold-out metric is worse than the active one."""

    exit_code = 8


class ModelNotFound(InputError):
    """No model (or no such version) in the registry."""


def library_versions() -> dict:
    """Versions of the libraries a pickled model depends on."""
    import numpy
    import pandas
    import sklearn

    from plugin import __version__

    return {"python": platform.python_version(), "scikit-learn": sklearn.__version__,
            "numpy": numpy.__version__, "pandas": pandas.__version__, "fwsiem": __version__}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


@dataclass
class ModelRecord:
    """A registry document, as stored (``doc``) with convenient accessors."""

    doc: dict

    @property
    def name(self) -> str:
        return self.doc["model"]["name"]

    @property
    def version(self) -> int:
        return int(self.doc["model"]["version"])

    @property
    def status(self) -> str:
        return self.doc["model"]["status"]

    @property
    def holdout_value(self) -> float | None:
        value = (self.doc.get("holdout") or {}).get("value")
        return None if value is None else float(value)

    @property
    def sha256(self) -> str:
        return self.doc["artifact"]["sha256"]


class Registry:
    """Store, list, promote, roll back and load models in the cluster's models index."""

    def __init__(self, store: Store, index: str = "fwsiem-models", *, key: bytes | None = None,
                 tolerance: float = DEFAULT_TOLERANCE,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.store = store
        self.index = index
        self._key = key
        self.tolerance = float(tolerance)
        self.chunk_bytes = int(chunk_bytes)

    @classmethod
    def from_config(cls, store: Store, config) -> Registry:
        section = config.section("models")
        key_file = section.get("key_file") or config.section("run").get("state_key_file", "")
        return cls(store, config.indices.get("models", "fwsiem-models"), key=state_key(key_file),
                   tolerance=section.get("promotion_tolerance", DEFAULT_TOLERANCE),
                   chunk_bytes=section.get("artifact_chunk_bytes", DEFAULT_CHUNK_BYTES))

    @property
    def key(self) -> bytes:
        """The local key that signs artifacts (the default key file unless one was given)."""
        if self._key is None:
            self._key = state_key()
        return self._key

    @staticmethod
    def _signed(name: str, version: int, blob: bytes) -> bytes:
        # the name and version are signed with the artifact, so a signed artifact cannot be
        # relabelled as another model or version
        return f"fwsiem-model\n{name}\n{int(version)}\n".encode() + blob

    # -- writing ------------------------------------------------------------------------------
    def ensure_index(self) -> None:
        if not self.store.exists(self.index):
            self.store.create_index(self.index, {"mappings": template_mappings("fwsiem-models")})

    def next_version(self, name: str) -> int:
        aggs = self.store.aggregate(
            self.index, {"v": {"max": {"field": "model.version"}}},
            query={"bool": {"filter": [{"term": {"model.name": name}},
                                       {"term": {"doc_type": "model"}}]}})
        current = (aggs.get("v") or {}).get("value")
        return 1 if current is None else int(current) + 1

    def register(self, name: str, estimator, *, metrics: dict, holdout_metric: str,
                 data: dict | None = None, params: dict | None = None,
                 report: dict | None = None) -> ModelRecord:
        """Store a trained estimator as a new ``candidate`` version and return its record.

        ``metrics`` holds plain numbers (``accuracy``, ``macro_f1`` ...); ``holdout_metric``
        names the one used for promotion (higher is better).
        """
        import joblib

        if holdout_metric not in metrics:
            raise InputError(f"metric {holdout_metric!r} is not among the metrics "
                             f"{sorted(metrics)} of model {name!r}")
        self.ensure_index()
        buffer = io.BytesIO()
        joblib.dump(estimator, buffer, compress=3)
        blob = buffer.getvalue()
        sha = hashlib.sha256(blob).hexdigest()
        version = self.next_version(name)
        chunks = [blob[i:i + self.chunk_bytes] for i in range(0, len(blob), self.chunk_bytes)]
        now = _now()
        if params is None and hasattr(estimator, "get_params"):
            params = {k: _jsonable(v) for k, v in estimator.get_params(deep=True).items()
                      if not hasattr(v, "get_params")}
        doc = {
            "@timestamp": now,
            "doc_type": "model",
            "model": {"name": name, "version": version, "status": "candidate", "created": now,
                      "estimator": f"{type(estimator).__module__}.{type(estimator).__name__}"},
            "data": data or {},
            "metrics": {k: float(v) for k, v in metrics.items()},
            "holdout": {"metric": holdout_metric, "value": float(metrics[holdout_metric])},
            "params_json": json.dumps(params or {}, default=repr, sort_keys=True),
            "report_json": json.dumps(report or {}, default=repr),
            "libraries": library_versions(),
            "artifact": {"sha256": sha, "size": len(blob), "chunks": len(chunks),
                         "format": ARTIFACT_FORMAT,
                         "hmac": sign(self._signed(name, version, blob), self.key)},
        }
        actions = [{"_op_type": "index", "_index": self.index,
                    "_id": doc_id("model-artifact", name, version, i),
                    "_source": {"doc_type": "chunk", "@timestamp": now,
                                "model": {"name": name, "version": version},
                                "chunk": {"index": i,
                                          "data": base64.b64encode(c).decode("ascii")}}}
                   for i, c in enumerate(chunks)]
        result = self.store.bulk(actions, refresh=True, chunk_size=4)
        if not result.ok:
            raise FwsiemError(f"could not store the artifact of model {name!r} version {version} "
                              f"in {self.index} at {self.store.safe_url}: {result.failed[:1]}")
        self.store.index_doc(self.index, doc, id=self._id(name, version), refresh=True,
                             op_type="create")
        return ModelRecord(doc)

    @staticmethod
    def _id(name: str, version: int) -> str:
        return doc_id("model", name, int(version))

    # -- reading ------------------------------------------------------------------------------
    def records(self, name: str | None = None) -> list[ModelRecord]:
        """All versions (newest first), of one model name or of all."""
        if not self.store.exists(self.index):
            return []
        filters: list[dict] = [{"term": {"doc_type": "model"}}]
        if name:
            filters.append({"term": {"model.name": name}})
        resp = self.store.search(self.index, {
            "size": 1000, "query": {"bool": {"filter": filters}},
            "sort": [{"model.name": "asc"}, {"model.version": "desc"}]})
        return [ModelRecord(h["_source"]) for h in resp["hits"]["hits"]]

    def get(self, name: str, version: int | None = None) -> ModelRecord:
        """One version; without ``version`` the active one (or the newest if none is active)."""
        if version is not None:
            doc = (self.store.get_doc(self.index, self._id(name, version))
                   if self.store.exists(self.index) else None)
            if doc is None:
                raise ModelNotFound(f"model {name!r} has no version {version} in {self.index} at "
                                    f"{self.store.safe_url}", hint="see `fwsiem models list`")
            return ModelRecord(doc)
        records = self.records(name)
        if not records:
            raise ModelNotFound(f"no model {name!r} in {self.index} at {self.store.safe_url}",
                                hint=f"train one with `fwsiem train {name}`")
        active = [r for r in records if r.status == "active"]
        return active[0] if active else records[0]

    def active(self, name: str) -> ModelRecord | None:
        return next((r for r in self.records(name) if r.status == "active"), None)

    def artifact_bytes(self, record: ModelRecord) -> bytes:
        """The artifact, reassembled from its chunks, checked against the recorded sha256 and
        its signature under the local key."""
        where = (f"model {record.name!r} version {record.version} in {self.index} at "
                 f"{self.store.safe_url}")
        artifact = record.doc.get("artifact") or {}
        if artifact.get("format") != ARTIFACT_FORMAT or not artifact.get("hmac"):
            raise ArtifactIntegrityError(
                f"{where} has no signed artifact (format {artifact.get('format')!r}, stored by an "
                "older fwsiem or by someone else); it is refused and nothing in it was run",
                hint=f"retrain with `fwsiem train {record.name}`")
        n = int(artifact["chunks"])
        parts = []
        for i in range(n):
            chunk = self.store.get_doc(self.index, doc_id("model-artifact", record.name,
                                                          record.version, i))
            if chunk is None:
                raise ArtifactIntegrityError(
                    f"artifact of model {record.name!r} version {record.version} is incomplete "
                    f"in {self.index} at {self.store.safe_url} (chunk {i} of {n} is missing)",
                    hint=f"retrain with `fwsiem train {record.name}` or roll back")
            parts.append(base64.b64decode(chunk["chunk"]["data"]))
        blob = b"".join(parts)
        actual = hashlib.sha256(blob).hexdigest()
        if actual != record.sha256:
            raise ArtifactIntegrityError(
                f"artifact of model {record.name!r} version {record.version} in {self.index} at "
                f"{self.store.safe_url} has sha256 {actual[:16]}…, the registry records "
                f"{record.sha256[:16]}…; it was changed after training and is refused",
                hint=f"retrain with `fwsiem train {record.name}` or "
                     f"`fwsiem models rollback {record.name}`")
        verify(self._signed(record.name, record.version, blob), artifact["hmac"], self.key,
               what=f"the artifact of {where}",
               hint=f"a model trained on another workstation loads only with that "
                    f"workstation's key ([models] key_file, docs/threat-model.md); otherwise "
                    f"retrain with `fwsiem train {record.name}`")
        return blob

    def load(self, name: str, version: int | None = None):
        """The estimator of a version (default: the active one) and its record."""
        import joblib

        record = self.get(name, version)
        blob = self.artifact_bytes(record)
        trained = record.doc.get("libraries", {})
        here = library_versions()
        differ = {k: (trained[k], here[k]) for k in ("scikit-learn", "numpy")
                  if trained.get(k) and trained[k] != here[k]}
        if differ:
            log.warning("model %r version %s was trained with %s; this process has %s: "
                        "retrain if its predictions look wrong", name, record.version,
                        {k: v[0] for k, v in differ.items()}, {k: v[1] for k, v in differ.items()})
        return joblib.load(io.BytesIO(blob)), record

    # -- lifecycle ----------------------------------------------------------------------------
    def promote(self, name: str, version: int, *, force: bool = False) -> ModelRecord:
        """Make ``version`` active unless its hold-out metric is worse than the active one's."""
        record = self.get(name, version)
        current = self.active(name)
        if current is not None and current.version == record.version:
            return record
        if current is not None and not force:
            new, old = record.holdout_value, current.holdout_value
            if new is not None and old is not None and new < old - self.tolerance:
                metric = record.doc["holdout"]["metric"]
                raise PromotionRefused(
                    f"model {name!r} version {version} has hold-out {metric} {new:.4f}, worse "
                    f"than active version {current.version} ({old:.4f}) by more than the "
                    f"tolerance {self.tolerance:g}; version {version} stays a candidate",
                    hint=f"`fwsiem models promote {name} {version} --force` to promote anyway")
        now = _now()
        if current is not None:
            self.store.update_doc(self.index, self._id(name, current.version),
                                  {"model": {"status": "retired", "retired_at": now}},
                                  refresh=True)
        self.store.update_doc(self.index, self._id(name, version), {"model": {
            "status": "active", "promoted_at": now,
            "previous": current.version if current is not None else None}}, refresh=True)
        return self.get(name, version)

    def rollback(self, name: str) -> ModelRecord:
        """Retire the active version and make the one it replaced active again."""
        current = self.active(name)
        if current is None:
            raise ModelNotFound(f"model {name!r} has no active version in {self.index} at "
                                f"{self.store.safe_url}; nothing to roll back")
        previous = current.doc["model"].get("previous")
        if previous is None:
            raise ModelNotFound(f"active version {current.version} of model {name!r} replaced "
                                "no earlier version; nothing to roll back to",
                                hint=f"promote a version with `fwsiem models promote {name} V`")
        now = _now()
        self.store.update_doc(self.index, self._id(name, current.version),
                              {"model": {"status": "rolled_back", "retired_at": now}},
                              refresh=True)
        self.store.update_doc(self.index, self._id(name, previous),
                              {"model": {"status": "active", "promoted_at": now}}, refresh=True)
        return self.get(name, previous)
