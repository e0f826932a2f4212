"""Online window detectors (river): one per entity type, with baselines for explanations."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from river import anomaly, compose, preprocessing, stats
from river.base import AnomalyDetector

from ml.features import SHARE_FEATURES

DETECTOR_VERSION = "1"
SEVERITIES = ("low", "medium", "high", "critical")


def _log_features(x: dict) -> dict:
    """log1p of counts and volumes; shares stay in [0, 1]."""
    return {k: (v if k in SHARE_FEATURES else math.log1p(max(v, 0.0))) for k, v in x.items()}


class BaselineDeviation(AnomalyDetector):
    """Largest upward deviation of any feature from its exponentially weighted baseline.

    Counts are compared on a log scale, shares as they are; each feature's spread has a
    floor (``min_std``) so that a quiet stream does not make every small change infinite.

    Parameters
    ----------
    alpha
        Weight of the newest observation in the EW mean and variance.
    min_std
        Floor of the standard deviation on the log scale.
    grace_period
        Observations before the score is anything but 0.

    Examples
    --------
    >>> det = BaselineDeviation(grace_period=3)
    >>> for n in (10, 12, 11, 10, 12):
    ...     det.learn_one({"events": n})
    >>> det.score_one({"events": 11}) < 1 < det.score_one({"events": 5000})
    True
    """

    def __init__(self, alpha: float = 0.05, min_std: float = 0.5, grace_period: int = 10):
        self.alpha = alpha
        self.min_std = min_std
        self.grace_period = grace_period
        self._mean: dict = {}
        self._var: dict = {}
        self._n = 0

    def learn_one(self, x: dict) -> None:
        for k, v in _log_features(x).items():
            if k not in self._mean:
                self._mean[k], self._var[k] = v, 0.0
                continue
            d = v - self._mean[k]
            self._mean[k] += self.alpha * d
            self._var[k] = (1 - self.alpha) * (self._var[k] + self.alpha * d * d)
        self._n += 1

    def score_one(self, x: dict) -> float:
        if self._n < self.grace_period:
            return 0.0
        best = 0.0
        for k, v in _log_features(x).items():
            if k not in self._mean:
                continue
            floor = self.min_std * (0.2 if k in SHARE_FEATURES else 1.0)
            z = (v - self._mean[k]) / max(math.sqrt(self._var[k]), floor)
            best = max(best, z)
        return best


def make_pipeline(kind: str = "loda", seed: int = 42):
    """A river pipeline: log transform, scaling and the detector ``kind``.

    ``kind`` is ``hst`` (HalfSpaceTrees on min-max scaled logs), ``loda`` (LODA on standard
    scaled logs) or ``baseline`` (:class:`BaselineDeviation`, which scales by itself).

    Examples
    --------
    >>> model = make_pipeline("loda")
    >>> for n in range(300):
    ...     model.learn_one({"events": 10 + n % 5, "denied_share": 0.1 + n % 3 / 100})
    >>> model.score_one({"events": 12, "denied_share": 0.1}) < model.score_one(
    ...     {"events": 9000, "denied_share": 0.9})
    True
    """
    log = compose.FuncTransformer(_log_features)
    if kind == "hst":
        return log | preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
            n_trees=15, height=8, window_size=250, seed=seed)
    if kind == "loda":
        return log | preprocessing.StandardScaler() | anomaly.LODA(seed=seed)
    if kind == "baseline":
        return BaselineDeviation()
    raise ValueError(f"unknown detector kind {kind!r}: use hst, loda or baseline")


class EntityBaselines:
    """Per-entity EW mean and variance of every feature, in compact arrays.

    Used to explain a score ("dst_ports 480, expected 3") and to keep alerts to entities
    that really changed. Entities without enough history are compared with the
    population baseline of their type.

    Examples
    --------
    >>> b = EntityBaselines(["events"], alpha=0.5)
    >>> for n in (10, 10, 10):
    ...     b.update("a", {"events": n})
    >>> round(b.expected("a")["events"], 3)
    10.0
    """

    def __init__(self, features: Sequence[str], alpha: float = 0.1, min_history: int = 5,
                 min_std: float = 0.5):
        self.features = list(features)
        self.alpha = alpha
        self.min_history = min_history
        self.min_std = min_std
        k = len(self.features)
        self._index: dict[str, int] = {}
        self._mean = np.zeros((0, k))
        self._var = np.zeros((0, k))
        self._n = np.zeros(0, dtype=np.int32)
        self._pop_mean = np.zeros(k)
        self._pop_var = np.zeros(k)
        self._pop_n = 0
        self._share = np.array([f in SHARE_FEATURES for f in self.features])
        self._floor = np.where(self._share, min_std * 0.2, min_std)

    def _vector(self, x: Mapping) -> np.ndarray:
        v = np.array([float(x.get(f, 0.0)) for f in self.features])
        return np.where(self._share, v, np.log1p(np.maximum(v, 0.0)))

    def _row(self, entity: str) -> int:
        i = self._index.get(entity)
        if i is None:
            i = self._index[entity] = len(self._index)
            if i >= len(self._n):
                grow = max(16, len(self._n))
                k = len(self.features)
                self._mean = np.vstack([self._mean, np.zeros((grow, k))])
                self._var = np.vstack([self._var, np.zeros((grow, k))])
                self._n = np.concatenate([self._n, np.zeros(grow, dtype=np.int32)])
        return i

    @staticmethod
    def _ew(mean, var, v, alpha):
        d = v - mean
        return mean + alpha * d, (1 - alpha) * (var + alpha * d * d)

    def update(self, entity: str, x: Mapping) -> None:
        v = self._vector(x)
        i = self._row(entity)
        if self._n[i] == 0:
            self._mean[i], self._var[i] = v, 0.0
        else:
            self._mean[i], self._var[i] = self._ew(self._mean[i], self._var[i], v, self.alpha)
        self._n[i] += 1
        self.update_population(v)

    def update_population(self, v: np.ndarray) -> None:
        if self._pop_n == 0:
            self._pop_mean, self._pop_var = v.copy(), np.zeros_like(v)
        else:
            self._pop_mean, self._pop_var = self._ew(self._pop_mean, self._pop_var, v, 0.01)
        self._pop_n += 1

    def _reference(self, entity: str) -> tuple[np.ndarray, np.ndarray, bool]:
        i = self._index.get(entity)
        if i is not None and self._n[i] >= self.min_history:
            return self._mean[i], self._var[i], True
        return self._pop_mean, self._pop_var, False

    def deviations(self, entity: str, x: Mapping) -> dict[str, float]:
        """Signed deviation of each feature, in baseline standard deviations."""
        mean, var, _ = self._reference(entity)
        z = (self._vector(x) - mean) / np.maximum(np.sqrt(var), self._floor)
        return dict(zip(self.features, z.tolist(), strict=True))

    def expected(self, entity: str) -> dict[str, float]:
        """The baseline value of each feature, back on the features' own scale."""
        mean, _, _ = self._reference(entity)
        vals = np.where(self._share, mean, np.expm1(mean))
        return dict(zip(self.features, vals.tolist(), strict=True))

    def known(self, entity: str) -> bool:
        return self._reference(entity)[2]

    def __len__(self) -> int:
        return len(self._index)


@dataclass
class Finding:
    """One entity over its type's threshold in one window."""

    entity_type: str
    entity: str
    score: float
    threshold: float
    severity: str
    observed: dict
    expected: dict
    contributors: list = field(default_factory=list)
    detector: str = ""


def severity_of(deviation: float, levels: Sequence[float] = (4.0, 6.0, 10.0, 20.0)) -> str | None:
    """Severity from the largest deviation, or ``None`` below the lowest level.

    Examples
    --------
    >>> severity_of(3.0), severity_of(5.0), severity_of(7.5), severity_of(50)
    (None, 'low', 'medium', 'critical')
    """
    if deviation < levels[0]:
        return None
    sev = "low"
    for name, level in zip(SEVERITIES[1:], levels[1:], strict=False):
        if deviation >= level:
            sev = name
    return sev


class WindowDetector:
    """The detector of one entity type: score, explain, threshold and learn, one window at a time.

    Each window, every entity's features are scored by a river pipeline (see
    :func:`make_pipeline`) shared by all entities of the type; the threshold is a running
    quantile ``q`` of all scores. An entity is reported when its score is over the threshold
    *and* one of its features deviates upwards by at least the lowest severity level from the
    entity's own baseline (or the population's, for entities without history). Nothing is
    reported during the first ``warmup_windows`` windows.

    Parameters
    ----------
    entity_type
        ``source``, ``service``, ``rule``, ``host``.
    features
        Feature names, in order.
    kind
        The river detector (``hst``, ``loda``, ``baseline``).
    q
        Quantile of the running score distribution used as threshold.
    warmup_windows
        Windows learned before anything is reported.
    levels
        Deviations that make a finding low, medium, high, critical.
    top_k
        Contributing features kept per finding.

    Examples
    --------
    >>> det = WindowDetector("rule", ["hits", "denied_share"], warmup_windows=20)
    >>> for w in range(40):
    ...     found = det.process([("r1", {"hits": 100 + w % 7, "denied_share": 0.02}),
    ...                          ("r2", {"hits": 50 + w % 3, "denied_share": 0.5})])
    >>> found
    []
    >>> [f.entity for f in det.process([("r1", {"hits": 9000, "denied_share": 0.95}),
    ...                                 ("r2", {"hits": 51, "denied_share": 0.5})])]
    ['r1']
    """

    def __init__(self, entity_type: str, features: Sequence[str], kind: str = "loda",
                 q: float = 0.99, warmup_windows: int = 60,
                 levels: Sequence[float] = (4.0, 6.0, 10.0, 20.0), top_k: int = 3,
                 alpha: float = 0.1, seed: int = 42):
        self.entity_type = entity_type
        self.features = list(features)
        self.kind = kind
        self.q = q
        self.warmup_windows = warmup_windows
        self.levels = tuple(levels)
        self.top_k = top_k
        self.model = make_pipeline(kind, seed)
        self.quantile = stats.Quantile(q)
        self.baselines = EntityBaselines(self.features, alpha=alpha)
        self.windows_seen = 0

    @property
    def name(self) -> str:
        return f"window.{self.entity_type}"

    def process(self, rows: Iterable[tuple[str, dict]],
                suppressed: Mapping[str, set] | None = None) -> list[Finding]:
        """Score one window's rows, report findings, then learn the window.

        ``suppressed`` maps entities to feature names marked false positive: a finding
        whose leading feature is among them is not reported.
        """
        warm = self.windows_seen >= self.warmup_windows
        threshold = self.quantile.get() if warm else math.inf
        threshold = math.inf if threshold is None else threshold
        findings: list[Finding] = []
        for entity, x in rows:
            x = {f: float(x.get(f, 0.0)) for f in self.features}
            score = float(self.model.score_one(x))
            alerted = False
            if score >= threshold:
                z = self.baselines.deviations(entity, x)
                top = sorted(z.items(), key=lambda kv: -kv[1])[: self.top_k]
                sev = severity_of(top[0][1], self.levels) if top else None
                if sev and not (suppressed and top[0][0] in suppressed.get(entity, ())):
                    expected = self.baselines.expected(entity)
                    findings.append(Finding(
                        self.entity_type, entity, score, threshold, sev, x, expected,
                        [{"feature": k, "observed": x[k], "expected": expected[k],
                          "deviation": v} for k, v in top if v > 0],
                        self.name))
                    alerted = True
            if self.windows_seen >= self.warmup_windows // 2:
                # the first scores of a young model are erratic: keep them out of the threshold
                self.quantile.update(score)
            self.model.learn_one(x)
            if not alerted:
                self.baselines.update(entity, x)
        self.windows_seen += 1
        return findings
