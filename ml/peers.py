"""Peer detectors for the evaluation: Random Cut Forest (rrcf) and PyOD's ECOD on the same rows.

They take the window rows :class:`ml.detectors.WindowDetector` takes and return
:class:`ml.detectors.Finding` objects, so the same severity levels and the same incident
grouping apply. Their raw scores have no common scale, so each score becomes a deviation the
same way for both: a robust z-score (median and MAD) of its logarithm among the detector's
recent scores, including this window's.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np

from ml import features as F
from ml.detectors import Finding, severity_of

PEER_KINDS = ("rcf", "ecod")


class PeerDetector:
    """Random Cut Forest (``rcf``, streaming, as OpenSearch Anomaly Detection) or ECOD
    (``ecod``, PyOD, refitted every window on recent rows plus the window) over one entity
    type's window rows.

    Examples
    --------
    >>> det = PeerDetector("rule", ["hits", "denied_share"], kind="ecod")
    >>> for w in range(30):
    ...     _ = det.process([(f"r{i}", {"hits": 100 + (w + i) % 7, "denied_share": 0.02})
    ...                      for i in range(20)])
    >>> rows = [(f"r{i}", {"hits": 100 + i % 7, "denied_share": 0.02}) for i in range(20)]
    >>> [f.entity for f in det.process(rows + [("odd", {"hits": 90000, "denied_share": 1})])]
    ['odd']
    """

    def __init__(self, entity_type: str, features: Sequence[str], kind: str = "rcf",
                 levels: Sequence[float] = (3.0, 3.7, 6.0, 10.0), num_trees: int = 20,
                 tree_size: int = 256, history: int = 4000, per_window: int = 400,
                 scores_kept: int = 20000, seed: int = 42):
        if kind not in PEER_KINDS:
            raise ValueError(f"unknown peer detector {kind!r}: use one of {PEER_KINDS}")
        self.entity_type = entity_type
        self.features = list(features)
        self.kind = kind
        self.levels = tuple(levels)
        self.num_trees, self.tree_size = num_trees, tree_size
        self.per_window = per_window
        self.rng = np.random.default_rng(seed)
        self._vol = np.array([F.feature_kind(entity_type, f) == "volume" for f in self.features])
        self.history: deque = deque(maxlen=history)
        self.scores: deque = deque(maxlen=scores_kept)
        self.seen: set = set()
        self._forest = None
        self._t = 0

    @property
    def name(self) -> str:
        return f"window.{self.entity_type}.{self.kind}"

    def _vector(self, x: dict) -> np.ndarray:
        v = np.array([float(x.get(f, 0.0)) for f in self.features])
        return np.where(self._vol, np.log1p(np.maximum(v, 0.0)), v)

    def _rcf(self, X: np.ndarray) -> np.ndarray:
        """Streaming RCF codisp; identical rows of a window are inserted and scored once
        (pure-Python trees cannot take 37,000 identical spoofed sources in reasonable time)."""
        import rrcf

        if self._forest is None:
            self._forest = [rrcf.RCTree() for _ in range(self.num_trees)]
        unique, inverse = np.unique(np.round(X, 6), axis=0, return_inverse=True)
        out = np.zeros(len(unique))
        jitter = self.rng.normal(0, 1e-9, unique.shape)     # no exact duplicates in a tree
        for i, x in enumerate(unique + jitter):
            total = 0.0
            for tree in self._forest:
                if len(tree.leaves) >= self.tree_size:
                    tree.forget_point(min(tree.leaves))
                tree.insert_point(x, index=self._t)
                total += tree.codisp(self._t)
            out[i] = total / self.num_trees
            self._t += 1
        return out[np.ravel(inverse)]

    def _ecod(self, X: np.ndarray) -> np.ndarray:
        from pyod.models.ecod import ECOD

        past = np.array(self.history) if self.history else np.zeros((0, X.shape[1]))
        data = np.vstack([past, X])
        if len(data) < 3:
            return np.zeros(len(X))
        model = ECOD().fit(data)
        return np.asarray(model.decision_scores_[-len(X):], dtype=float)

    def process(self, rows: Iterable[tuple[str, dict]], suppressed=None) -> list[Finding]:
        """Score one window's rows; findings for those at a severity level or above."""
        rows = list(rows)
        if not rows:
            return []
        xs = []
        for entity, row in rows:
            x = {f: float(row.get(f, 0.0)) for f in self.features}
            if "first_seen" in x:
                x["first_seen"] = 0.0 if entity in self.seen else 1.0
            xs.append(x)
        X = np.vstack([self._vector(x) for x in xs])
        scores = self._rcf(X) if self.kind == "rcf" else self._ecod(X)
        logs = np.log1p(np.maximum(scores, 0.0))
        self.scores.extend(logs.tolist())
        ref = np.array(self.scores)
        med = float(np.median(ref))
        mad = float(np.median(np.abs(ref - med))) * 1.4826
        z = (logs - med) / max(mad, 1e-6) if len(ref) >= 10 else np.zeros(len(logs))
        mean = X.mean(axis=0) if not self.history else np.array(self.history).mean(axis=0)
        spread = np.maximum(X.std(axis=0) if not self.history
                            else np.array(self.history).std(axis=0), 0.5)
        findings = []
        for (entity, _), x, v, s, d in zip(rows, xs, X, scores, z, strict=True):
            sev = severity_of(float(d), self.levels)
            if not sev or not math.isfinite(d):
                continue
            k = int(np.argmax((v - mean) / spread))
            lead = self.features[k]
            findings.append(Finding(self.entity_type, entity, float(s), 0.0, sev, x, {}, [
                {"feature": lead, "observed": x[lead], "expected": float(
                    np.expm1(mean[k]) if self._vol[k] else mean[k]), "deviation": float(d)}],
                self.name))
        take = X if len(X) <= self.per_window else X[self.rng.choice(
            len(X), self.per_window, replace=False)]
        self.history.extend(take)
        self.seen.update(e for e, _ in rows)
        return findings
