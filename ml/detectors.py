"""Online window detectors (river): one per entity type, with baselines for explanations."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from river import anomaly, compose, preprocessing, stats
from river.base import AnomalyDetector
from scipy.special import betainc, gammainc, ndtri

from ml import features as F
from ml.features import SHARE_FEATURES

DETECTOR_VERSION = "2"
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


class EntityProfiles:
    """What is normal for each entity, and for each class of entities, feature by feature.

    Every feature gets a deviation on one scale, in standard deviations of a normal
    distribution (a tail probability ``p`` counts as ``-Φ⁻¹(p)``), by its kind
    (``ml.features.FEATURE_KINDS``):

    - ``volume`` (counts, bytes): log scale, against the entity's EW mean and variance; it
      counts only above the entity's highest value so far times ``e ** peak_margin`` (a
      nightly backup that has happened before is not news), and in part only for small
      volumes (``ml.features.VOLUME_EVIDENCE``);
    - ``share``: against the EW mean, weighted by how many events it is a share of, and
      only ``peak_margin`` above the entity's highest share so far;
    - ``count`` of rare events (denied attempts, new internal peers): the Poisson tail at the
      entity's long-run rate, shrunk towards its class's rate; for a recurring background
      (``ml.features.RECURRING``) the negative binomial tail with the entity's own spread where
      its counts come in bursts (wider than Poisson);
    - ``novelty`` (an external address or a service the estate has never seen): the Poisson
      tail at the rate such things appeared in the entity's class over the last
      ``rate_windows`` windows.

    An entity's spread is shrunk towards its class's (``variance_prior`` observations' worth),
    so a short, quiet history does not make every later value look extreme.

    An entity with fewer than ``min_history`` observations is compared with its class
    (``ml.features.entity_class``: internal sources with internal sources, egress services
    with egress services) instead of itself.

    The class statistics are learned from the rows of the class sample (``sample=True`` in
    :meth:`learn`; every row unless the run samples), the entities' own from the rows the
    worker owns (``own=True``): partitioned workers that learn the same sample keep the same
    class statistics. A row's rare counts join its class's rates when its window closes
    (:meth:`end_window`), unless its entity was alerted in that window.

    Examples
    --------
    >>> p = EntityProfiles("rule", ["hits", "denied_share"])
    >>> for n in (100, 110, 95, 105, 100, 98):
    ...     p.learn("r1", "rule", {"hits": n, "denied_share": 0.01})
    >>> z, known = p.deviations("r1", "rule", {"hits": 50_000, "denied_share": 0.01})
    >>> known, bool(z[0] > 4), bool(abs(z[1]) < 1)
    (True, True, True)
    """

    def __init__(self, entity_type: str, features: Sequence[str], *, alpha: float = 0.1,
                 rare_alpha: float = 7e-4, population_alpha: float = 1e-4,
                 min_history: int = 5, min_std: float = 1.0, population_min_std: float = 0.5,
                 share_std: float = 0.1, share_evidence: float = 4.0,
                 peak_margin: float = 0.69, prior_windows: float = 50.0,
                 rate_windows: int = 1440, prior_rows: float = 20.0, min_rate: float = 1e-6,
                 variance_prior: float = 20.0, novelty_windows: int = 60):
        self.features = list(features)
        kinds = [F.feature_kind(entity_type, f) for f in self.features]
        self._vol = np.array([k == "volume" for k in kinds])
        self._share = np.array([k == "share" for k in kinds])
        self._rare = np.array([k in ("count", "novelty") for k in kinds])
        self._novel = np.array([k == "novelty" for k in kinds])
        self._recurring = {cls: np.array([f in feats for f in self.features])
                           for cls, feats in F.RECURRING.get(entity_type, {}).items()}
        self._evidence = np.array([F.VOLUME_EVIDENCE.get(f, 0.0) if k == "volume" else 0.0
                                   for f, k in zip(self.features, kinds, strict=True)])
        basis = F.SHARE_BASIS.get(entity_type, {})
        self._basis = [(j, basis[f]) for j, f in enumerate(self.features) if f in basis]
        carried = F.CARRIED_BY.get(entity_type, {})
        self._carried = [(j, carried[f]) for j, f in enumerate(self.features) if f in carried]
        self._alpha = np.where(self._rare, rare_alpha, alpha)
        self._rate_alpha = rare_alpha if self._rare.any() else 0.0
        self.population_alpha = population_alpha
        self.min_history = min_history
        self._floor = np.where(self._share, share_std, min_std)
        self._pop_floor = np.where(self._share, share_std, population_min_std)
        self.share_evidence = share_evidence
        self.peak_margin = peak_margin
        self.prior_windows = prior_windows
        self.rate_windows = rate_windows
        self.prior_rows = prior_rows
        self.novelty_windows = novelty_windows
        prior = [F.population_prior(entity_type, f) for f in self.features]
        self._prior_mean = self.vector({f: m for f, (m, _) in zip(self.features, prior,
                                                                  strict=True)})
        self._prior_mean = np.where(self._rare, 0.0, self._prior_mean)
        self._prior_var = np.array([sd * sd for _, sd in prior])
        self._prior_rate = np.array([m if r else 0.0 for (m, _), r in zip(prior, self._rare,
                                                                           strict=True)])
        self.min_rate = min_rate
        self.variance_prior = variance_prior
        k = len(self.features)
        self._index: dict[str, int] = {}
        self._mean = np.zeros((0, k))
        self._var = np.zeros((0, k))
        self._peak = np.zeros((0, k))
        self._n = np.zeros(0, dtype=np.int32)     # observations learned (not alerted)
        self._rate_n = np.zeros(0)                # decayed observations behind rare rates
        self._population: dict[str, list] = {}    # class -> [mean, var, rows]
        self._rates: dict[str, list] = {}         # class -> [sum, rows, deque of windows]
        self._current: dict[str, list] = {}       # class -> [sum, sum of squares, rows]
        self._pending: list = []                  # (entity, class, rare counts) of this window
        self._alerted: set = set()                # entities learned alerted in this window
        self._known: set = set()                  # entities of the sample not learned here

    def __setstate__(self, state: dict) -> None:
        # a checkpoint from before the class sample: its window was closed when it was saved
        state.pop("_window", None)
        state.setdefault("_pending", [])
        state.setdefault("_alerted", set())
        state.setdefault("_known", set())
        self.__dict__.update(state)

    # -- vectors ----------------------------------------------------------------------------
    def vector(self, x: Mapping) -> np.ndarray:
        v = np.array([float(x.get(f, 0.0)) for f in self.features])
        return np.where(self._vol, np.log1p(np.maximum(v, 0.0)), v)

    def _row(self, entity: str) -> int:
        i = self._index.get(entity)
        if i is None:
            i = self._index[entity] = len(self._index)
            if i >= len(self._n):
                grow, k = max(16, len(self._n)), len(self.features)
                self._mean = np.vstack([self._mean, np.zeros((grow, k))])
                self._var = np.vstack([self._var, np.zeros((grow, k))])
                self._peak = np.vstack([self._peak, np.zeros((grow, k))])
                self._n = np.concatenate([self._n, np.zeros(grow, dtype=np.int32)])
                self._rate_n = np.concatenate([self._rate_n, np.zeros(grow)])
        return i

    def keeps(self, entity: str) -> bool:
        """Whether ``entity``'s own profile is kept here (by the worker that owns it)."""
        return entity in self._index

    def seen(self, entity: str) -> bool:
        """Whether ``entity`` was ever observed (its ``first_seen`` is 0)."""
        return entity in self._index or entity in self._known

    def class_rate(self, cls: str, exclude: np.ndarray | None = None) -> np.ndarray:
        """Rate per row of each rare feature in ``cls`` over the last ``rate_windows`` and
        the current window (without the row ``exclude``, the one being judged), starting from
        the prior's rate (``prior_rows`` rows' worth)."""
        total = self._prior_rate * self.prior_rows
        rows = self.prior_rows
        r = self._rates.get(cls)
        if r is not None:
            total, rows = total + r[0], rows + r[1]
        cur = self._current.get(cls)
        if cur is not None:
            total, rows = total + np.where(self._rare, cur[0], 0.0), rows + cur[2]
            if exclude is not None and cur[2]:
                total, rows = total - np.where(self._rare, exclude, 0.0), rows - 1
        return np.maximum(total, 0.0) / rows if rows > 0 else np.zeros(len(self.features))

    def watched(self, cls: str) -> int:
        """Windows of ``cls`` behind its rates: novelty means something only after a while."""
        r = self._rates.get(cls)
        return 0 if r is None else len(r[2])

    def begin_window(self, rows: Iterable[tuple[str, Mapping]]) -> None:
        """The window's own population, ``(class, features)`` of every row, before any row
        is judged: a new entity is compared with the others of its class in this window too,
        so the first window of a deployment already has a population."""
        cur: dict[str, list] = {}
        for cls, x in rows:
            v = self.vector(x)
            c = cur.setdefault(cls, [np.zeros_like(v), np.zeros_like(v), 0])
            c[0] += v
            c[1] += v * v
            c[2] += 1
        self._current = cur

    def population(self, cls: str, exclude: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance a new entity of ``cls`` is compared with: the class's long-run
        population, this window's other rows of the class (without ``exclude``, the row
        being judged) and the built-in prior, pooled by rows."""
        parts = [(self.prior_rows, self._prior_mean, self._prior_var)]
        pop = self._population.get(cls)
        if pop is not None:
            parts.append((float(pop[2]), pop[0], pop[1]))
        cur = self._current.get(cls)
        if cur is not None:
            total, squares, rows = cur
            if exclude is not None and rows:
                total, squares, rows = total - exclude, squares - exclude * exclude, rows - 1
            if rows > 0:
                m = total / rows
                parts.append((float(rows), m, np.maximum(squares / rows - m * m, 0.0)))
        n = sum(p[0] for p in parts)
        mean = sum(p[0] * p[1] for p in parts) / n
        var = sum(p[0] * (p[2] + (p[1] - mean) ** 2) for p in parts) / n
        return mean, var

    def _reference(self, entity: str, cls: str, v: np.ndarray | None = None):
        """(mean, var, peak or None, rate, floor) to compare ``entity`` (its vector ``v``)
        with."""
        rate = self.class_rate(cls, v)
        i = self._index.get(entity)
        if i is not None and self._n[i] >= self.min_history:
            # the entity's own rate, shrunk towards its class's (a Gamma prior)
            own = (self._mean[i] * self._rate_n[i] + self.prior_windows * rate) / (
                self._rate_n[i] + self.prior_windows)
            rate = np.where(self._novel, rate, own)
            var = self._var[i]
            pop = self._population.get(cls)
            if pop is not None and self.variance_prior > 0:
                # a short history knows little about its spread: lean on the class's
                n = float(self._n[i])
                var = (n * var + self.variance_prior * pop[1]) / (n + self.variance_prior)
            return self._mean[i], var, self._peak[i], rate, self._floor
        mean, var = self.population(cls, v)
        return mean, var, None, rate, self._pop_floor

    # -- scoring ----------------------------------------------------------------------------
    def deviations(self, entity: str, cls: str, x: Mapping, sample: bool = True
                   ) -> tuple[np.ndarray, bool]:
        """Upward deviation of every feature, and whether the entity's own history was used
        (``sample``: the row is one of the window's class rows, left out of them here)."""
        v = self.vector(x)
        mean, var, peak, rate, floor = self._reference(entity, cls, v if sample else None)
        z = np.zeros(len(self.features))
        gauss = ~self._rare
        z[gauss] = ((v - mean) / np.maximum(np.sqrt(var), floor))[gauss]
        raw = np.expm1(v)
        weight = np.where(self._evidence > 0, raw / (raw + np.maximum(self._evidence, 1e-9)), 1.0)
        z = np.where(self._vol, z * weight, z)
        for j, b in self._basis:
            n = float(x.get(b, 0.0))
            z[j] *= n / (n + self.share_evidence)
        for j, b in self._carried:
            n = float(x.get(b, 0.0))
            z[j] *= n / (n + F.CONNECTION_EVIDENCE)
        if peak is not None:
            z = np.where(gauss & (v <= peak + self.peak_margin), np.minimum(z, 0.0), z)
        lam = np.maximum(rate, self.min_rate)
        count = np.where(self._rare, v, 0.0)
        tail = gammainc(np.maximum(count, 1e-12), lam)      # P(X >= count), X ~ Poisson(lam)
        if peak is not None:
            # attempts come in bursts (a scanner's visit, a host's background probing): where
            # the entity's own counts spread wider than Poisson, the tail is the negative
            # binomial with that spread (a gamma mixture of Poisson rates)
            recurring = self._recurring.get(cls, self._recurring.get("", False))
            wide = recurring & (var > lam * 1.0001) & (count > 0)
            if wide.any():
                r = lam[wide] ** 2 / (var[wide] - lam[wide])
                tail[wide] = betainc(count[wide], r, lam[wide] / (r + lam[wide]))
        z = np.where(self._rare & (count > 0), -ndtri(np.clip(tail, 1e-300, 1.0)), z)
        if self.watched(cls) < self.novelty_windows:
            # before the estate has been watched a while, everything is a first
            z = np.where(self._novel, 0.0, z)
        return z, peak is not None

    def expected(self, entity: str, cls: str) -> dict[str, float]:
        """The reference value of each feature on its own scale (a rate for rare features)."""
        mean, _, _, rate, _ = self._reference(entity, cls)
        vals = np.where(self._vol, np.expm1(mean), np.where(self._rare, rate, mean))
        return dict(zip(self.features, vals.tolist(), strict=True))

    # -- learning ---------------------------------------------------------------------------
    def learn(self, entity: str, cls: str, x: Mapping, alerted: bool = False, *,
              own: bool = True, sample: bool = True) -> None:
        """Learn one observation; an alerted one of an entity with ``min_history`` windows only
        marks it seen and counts for its class, so an ongoing attack does not become its
        normal. ``own``: learn the entity's profile; ``sample``: learn its class."""
        v = self.vector(x)
        if alerted:
            self._alerted.add(entity)
        if sample:
            self._learn_class(entity, cls, v)
        if own:
            self._learn_entity(entity, v, alerted)
        elif sample:
            self._known.add(entity)

    def _learn_entity(self, entity: str, v: np.ndarray, alerted: bool) -> None:
        new = entity not in self._index
        i = self._row(entity)
        if new:
            self._mean[i], self._var[i], self._peak[i] = v, 0.0, v
        self._peak[i] = np.maximum(self._peak[i], v)
        # an ongoing attack does not become the normal of an entity with a history; a new
        # entity learns what it does even when flagged, so that a busy server that stands out
        # of its population in its first windows becomes its own reference
        if not alerted or self._n[i] < self.min_history:
            if not new:
                d = v - self._mean[i]
                self._mean[i] = self._mean[i] + self._alpha * d
                self._var[i] = (1 - self._alpha) * (self._var[i] + self._alpha * d * d)
            self._n[i] += 1
            # decayed observation count behind the rare-feature rates (their EW means)
            self._rate_n[i] = self._rate_n[i] * (1 - self._rate_alpha) + 1

    def _learn_class(self, entity: str, cls: str, v: np.ndarray) -> None:
        pop = self._population.get(cls)
        if pop is None:
            self._population[cls] = [v.copy(), np.zeros_like(v), 1]
        else:
            d = v - pop[0]
            a = max(self.population_alpha, 1.0 / (pop[2] + 1))   # a plain mean until then
            pop[0] = pop[0] + a * d
            pop[1] = (1 - a) * (pop[1] + a * d * d)
            pop[2] += 1
        self._pending.append((entity, cls, np.where(self._rare, v, 0.0)))

    def end_window(self, alerted: Iterable[str] = ()) -> None:
        """Close the window: the rare-event counts of its class rows join the sliding class
        rates, but those of entities learned alerted here or named in ``alerted`` (found by
        another worker): an ongoing attack does not become the rate of its class."""
        alerted = self._alerted.union(alerted)
        window: dict[str, list] = {}
        for entity, cls, rare in self._pending:
            if entity not in alerted:
                w = window.setdefault(cls, [np.zeros_like(rare), 0])
                w[0] += rare
                w[1] += 1
        for cls in set(window) | set(self._rates):
            total, rows = window.get(cls, (np.zeros(len(self.features)), 0))
            r = self._rates.setdefault(cls, [np.zeros(len(self.features)), 0, deque()])
            r[2].append((total, rows))
            r[0] = r[0] + total
            r[1] += rows
            while len(r[2]) > self.rate_windows:
                old_total, old_rows = r[2].popleft()
                r[0] = r[0] - old_total
                r[1] -= old_rows
        self._pending = []
        self._alerted = set()
        self._current = {}

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


def severity_of(deviation: float, levels: Sequence[float] = (3.0, 3.7, 6.0, 10.0)) -> str | None:
    """Severity from the deviation, or ``None`` below the lowest level.

    The default levels are tail probabilities of about 1e-3, 1e-4, 1e-9 and 1e-23.

    Examples
    --------
    >>> severity_of(2.0), severity_of(3.2), severity_of(5.0), severity_of(50)
    (None, 'low', 'medium', 'critical')
    """
    if deviation < levels[0]:
        return None
    sev = "low"
    for name, level in zip(SEVERITIES[1:], levels[1:], strict=False):
        if deviation >= level:
            sev = name
    return sev


def combined_score(features: Sequence[str], z: np.ndarray) -> float:
    """The strongest deviation, or the two strongest independent families together.

    Two moderate signals of different kinds (a new source whose few attempts are all denied
    *and* all go to hosts it never reached) are more than either alone: their sum over
    ``sqrt(2)`` (Stouffer) when that is larger than the strongest single one.

    >>> combined_score(["new_peers", "denied", "denied_share"], np.array([3.5, 2.7, 1.0]))
    4.38
    """
    best: dict[str, float] = {}
    for f, v in zip(features, z.tolist(), strict=True):
        fam = F.FEATURE_FAMILY.get(f, f)
        best[fam] = max(best.get(fam, 0.0), v)
    top = sorted(best.values(), reverse=True)[:2]
    single = float(max(z.max(initial=0.0), 0.0))
    if len(top) == 2 and top[1] > 0:
        return round(max(single, (top[0] + top[1]) / math.sqrt(2)), 2)
    return round(single, 2)


class ProfileDetector(AnomalyDetector):
    """:class:`EntityProfiles` with river's ``learn_one`` / ``score_one``.

    The profiles are per entity and per class, so ``x`` names them in two reserved keys,
    ``_entity`` and ``_class``; ``_alerted`` on ``learn_one`` keeps an alerted window out of
    the entity's baseline. The score is :func:`combined_score` of the deviations, which stay
    available as ``last_deviations`` to explain it.

    Examples
    --------
    >>> det = ProfileDetector("rule", ["hits", "denied_share"])
    >>> for n in (100, 110, 95, 105, 100, 98):
    ...     det.learn_one({"_entity": "r1", "_class": "rule", "hits": n, "denied_share": 0.0})
    >>> det.score_one({"_entity": "r1", "_class": "rule", "hits": 50_000,
    ...                "denied_share": 0.0}) > 4
    True
    """

    def __init__(self, entity_type: str, features: Sequence[str], prior_rows: float = 20.0):
        self.entity_type = entity_type
        self.features = list(features)
        self.prior_rows = prior_rows
        self.profiles = EntityProfiles(entity_type, self.features, prior_rows=prior_rows)
        self.last_deviations = np.zeros(len(self.features))

    def score_one(self, x: dict) -> float:
        z, _ = self.profiles.deviations(x["_entity"], x["_class"], x, x.get("_sample", True))
        self.last_deviations = z
        return combined_score(self.features, z)

    def learn_one(self, x: dict) -> None:
        self.profiles.learn(x["_entity"], x["_class"], x, alerted=bool(x.get("_alerted")),
                            own=x.get("_own", True), sample=x.get("_sample", True))


class WindowDetector:
    """The detector of one entity type: score, explain, threshold and learn, one window at a time.

    Each window every entity's features are compared with what is normal for it
    (:class:`EntityProfiles`). With ``kind="profile"`` (the default) that comparison is the
    score (:class:`ProfileDetector`); with ``hst``, ``loda`` or ``baseline`` a river pipeline
    shared by all entities of the type scores (:func:`make_pipeline`) and the profiles only
    explain. With a river detector the threshold is a running quantile ``q`` of its scores;
    with ``profile`` the profiles themselves adapt (per entity, per class) and the threshold
    is the lowest severity level. An entity is reported when its score is over the threshold
    *and* its deviation reaches the lowest severity level.
    Nothing is reported during the first ``warmup_windows`` windows.

    Parameters
    ----------
    entity_type
        ``source``, ``service``, ``rule``, ``host``.
    features
        Feature names, in order.
    kind
        ``profile``, or a river detector (``hst``, ``loda``, ``baseline``).
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

    def __init__(self, entity_type: str, features: Sequence[str], kind: str = "profile",
                 q: float = 0.99, warmup_windows: int = 0,
                 levels: Sequence[float] = (3.0, 3.7, 6.0, 10.0), top_k: int = 3,
                 seed: int = 42, prior_rows: float = 20.0):
        self.entity_type = entity_type
        self.features = list(features)
        self.kind = kind
        self.q = q
        self.warmup_windows = warmup_windows
        self.levels = tuple(levels)
        self.top_k = top_k
        if kind == "profile":
            self.model = ProfileDetector(entity_type, self.features, prior_rows)
            self.profiles = self.model.profiles
        else:
            self.model = make_pipeline(kind, seed)
            self.profiles = EntityProfiles(entity_type, self.features, prior_rows=prior_rows)
        self.quantile = stats.Quantile(q)
        self.windows_seen = 0

    @property
    def name(self) -> str:
        return f"window.{self.entity_type}"

    def process(self, rows: Iterable[tuple[str, dict]],
                suppressed: Mapping[str, set] | None = None, close: bool = True
                ) -> list[Finding]:
        """Score one window's rows, report findings, then learn the window.

        A row's ``_class`` (``ml.features.entity_class``) names the population it is
        compared with while it has no history. ``suppressed`` maps entities to feature names
        marked false positive: a finding whose leading feature is among them is not reported.

        A partitioned worker also reads rows it does not own (``_own`` false): the class
        sample (``_sample``), from which every worker learns the class statistics (and a
        river detector's model and threshold) alike; it scores and keeps profiles only for its
        own rows. With ``close=False`` the window stays open until :meth:`close` names the
        entities alerted in it by every worker.
        """
        warm = self.windows_seen >= self.warmup_windows
        profile = isinstance(self.model, ProfileDetector)
        if profile:
            # the profiles adapt per entity and per class; the lowest level is the threshold
            threshold = self.levels[0] if warm else math.inf
        else:
            threshold = self.quantile.get() if warm else math.inf
            threshold = math.inf if threshold is None else threshold
        findings: list[Finding] = []
        profiles = self.profiles
        prepared = []
        for entity, row in rows:
            cls = str(row.get("_class", self.entity_type))
            x = {f: float(row.get(f, 0.0)) for f in self.features}
            if "first_seen" in x:
                x["first_seen"] = 0.0 if profiles.seen(entity) else 1.0
            own, sample = row.get("_own", True), row.get("_sample", True)
            prepared.append((entity, cls, x, row | x | {"_entity": entity, "_class": cls},
                             own, sample))
        profiles.begin_window((cls, x) for _, cls, x, _, _, sample in prepared if sample)
        for entity, cls, x, full, own, sample in prepared:
            alerted = False
            if not profile and sample or own:
                if profile:
                    score = deviation = self.model.score_one(full)
                    z = self.model.last_deviations
                else:
                    z, _ = profiles.deviations(entity, cls, full, sample)
                    deviation = combined_score(self.features, z)
                    score = float(self.model.score_one(x))
            if own and score >= threshold:
                order = np.argsort(-z, kind="stable")[: self.top_k]
                sev = severity_of(deviation, self.levels)
                lead = self.features[int(order[0])]
                if sev and not (suppressed and lead in suppressed.get(entity, ())):
                    expected = profiles.expected(entity, cls)
                    findings.append(Finding(
                        self.entity_type, entity, score, threshold, sev, x, expected,
                        [{"feature": self.features[int(k)], "observed": x[self.features[int(k)]],
                          "expected": expected[self.features[int(k)]], "deviation": float(z[k])}
                         for k in order if z[k] > 0],
                        self.name))
                    alerted = True
            if profile:
                self.model.learn_one(full | {"_alerted": alerted})
            else:
                if sample:
                    if self.windows_seen >= self.warmup_windows // 2:
                        # a young model's first scores are erratic: keep them out of the
                        # threshold
                        self.quantile.update(score)
                    self.model.learn_one(x)
                profiles.learn(entity, cls, full, alerted=alerted, own=own, sample=sample)
        self.windows_seen += 1
        if close:
            self.close(f.entity for f in findings)
        return findings

    def close(self, alerted: Iterable[str]) -> None:
        """Close the window :meth:`process` left open: ``alerted`` are the entities of this
        type found in it (by any worker)."""
        self.profiles.end_window(alerted)
