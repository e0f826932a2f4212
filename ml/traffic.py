"""Traffic classifier over per-destination flow aggregates (seed 004) and fwsiem's model.

Seed 004 aggregates nfdump flows per destination address into seven numbers (duration, flows,
packets, bytes, packets per second, bits per second, bytes per packet) and labels them with
k-nearest neighbours (k=5), on raw and on normalised values. These numbers span many orders
of magnitude, so fwsiem's classifier works on their logarithms, adds per-flow shape (packets
and bytes per flow, flow duration) and uses gradient-boosted trees.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

#: The seven aggregate features of seed 004, in its order.
AGGREGATE_COLUMNS = ["duration", "flows", "packets", "bytes", "pps", "bps", "bpp"]

#: What fwsiem adds per destination: distinct sources, distinct destination ports and the
#: destination port most flows went to (the service the destination offers).
SERVICE_COLUMNS = ["sources", "dports", "top_dport"]


def flow_aggregates(flows: pd.DataFrame, *, by: str | list[str] = "destination.ip",
                    window: str | None = None) -> pd.DataFrame:
    """Aggregate flow records per destination (and per time window) into seed 004's features.

    Parameters
    ----------
    flows : pandas.DataFrame
        One row per flow with ``@timestamp`` (flow start), ``event.duration`` (ns),
        ``network.packets`` and ``network.bytes`` (or the ``source.*``/``destination.*``
        counters, which are summed), and the ``by`` column(s).
    by : str or list of str
        Grouping columns, by default the destination address (as ``nfdump -s dstip``).
    window : str, optional
        A pandas frequency (``"1h"``) to aggregate per window as well.

    Returns
    -------
    pandas.DataFrame
        The grouping columns (and ``window``), then :data:`AGGREGATE_COLUMNS`. ``duration`` is
        seconds from the first flow start to the last flow end (at least 1 ms); ``bpp`` is
        bytes per packet. With ``source.ip`` and ``destination.port`` columns in ``flows``,
        also :data:`SERVICE_COLUMNS`.

    Examples
    --------
    >>> f = pd.DataFrame({"destination.ip": ["10.0.0.1", "10.0.0.1"],
    ...                   "@timestamp": pd.to_datetime(["2024-01-01T00:00:00Z",
    ...                                                 "2024-01-01T00:00:08Z"]),
    ...                   "event.duration": [2e9, 2e9], "network.packets": [10, 10],
    ...                   "network.bytes": [5000, 5000]})
    >>> agg = flow_aggregates(f)
    >>> agg.loc[0, ["duration", "flows", "pps", "bpp"]].tolist()
    [10.0, 2.0, 2.0, 500.0]
    """
    by = [by] if isinstance(by, str) else list(by)
    f = flows.copy()
    f["@timestamp"] = pd.to_datetime(f["@timestamp"], utc=True)
    for total, parts in (("network.packets", ("source.packets", "destination.packets")),
                         ("network.bytes", ("source.bytes", "destination.bytes"))):
        if total not in f:
            f[total] = sum(pd.to_numeric(f.get(p, 0), errors="coerce").fillna(0) for p in parts)
        f[total] = pd.to_numeric(f[total], errors="coerce").fillna(0)
    dur = pd.to_numeric(f.get("event.duration", 0), errors="coerce").fillna(0)
    f["_end"] = f["@timestamp"] + pd.to_timedelta(dur, unit="ns")
    keys = list(by)
    if window:
        f["window"] = f["@timestamp"].dt.floor(window)
        keys.append("window")
    g = f.groupby(keys, sort=True, observed=True)
    out = pd.DataFrame({
        "first": g["@timestamp"].min(), "last": g["_end"].max(),
        "flows": g.size().astype(float),
        "packets": g["network.packets"].sum().astype(float),
        "bytes": g["network.bytes"].sum().astype(float),
    })
    if "source.ip" in f:
        out["sources"] = g["source.ip"].nunique().astype(float)
    if "destination.port" in f:
        out["dports"] = g["destination.port"].nunique().astype(float)
        per_port = f.groupby(keys + ["destination.port"], observed=True).size()
        per_port = per_port.sort_values(ascending=False, kind="stable")
        top = per_port.reset_index().drop_duplicates(subset=keys).set_index(keys)
        out["top_dport"] = top["destination.port"].astype(float)
    return with_rates(out.reset_index())


def with_rates(agg: pd.DataFrame) -> pd.DataFrame:
    """Add ``duration``, ``pps``, ``bps`` and ``bpp`` to a frame of first/last/flows/packets/bytes.

    ``first``/``last`` may be datetimes or epoch milliseconds; ``duration`` is in seconds.

    Examples
    --------
    >>> a = with_rates(pd.DataFrame({"first": [0], "last": [4000], "flows": [1],
    ...                              "packets": [8], "bytes": [800]}))
    >>> a.loc[0, ["duration", "pps", "bps", "bpp"]].tolist()
    [4.0, 2.0, 1600.0, 100.0]
    """
    out = agg.copy()
    span = out["last"] - out["first"]
    if pd.api.types.is_timedelta64_dtype(span):
        seconds = span.dt.total_seconds()
    else:
        seconds = pd.to_numeric(span, errors="coerce") / 1000.0
    out["duration"] = seconds.clip(lower=0.001).astype(float)
    out["pps"] = out["packets"] / out["duration"]
    out["bps"] = 8.0 * out["bytes"] / out["duration"]
    out["bpp"] = (out["bytes"] / out["packets"].where(out["packets"] > 0)).fillna(0.0)
    return out.drop(columns=["first", "last"])


def seed_knn(normalise: bool, n_neighbors: int = 5) -> Pipeline:
    """Seed 004's kNN (k=5) on the seven aggregates, raw or z-score normalised.

    Examples
    --------
    >>> seed_knn(normalise=True).steps[0][0], seed_knn(normalise=False).steps[0][0]
    ('scale', 'raw')
    """
    first = ("scale", StandardScaler()) if normalise else ("raw", "passthrough")
    return Pipeline([first, ("knn", KNeighborsClassifier(n_neighbors=n_neighbors))])


class TrafficFeatures(TransformerMixin, BaseEstimator):
    """Log-scaled aggregates plus per-flow shape: packets, bytes and seconds per flow.

    Parameters
    ----------
    service : bool
        Also use :data:`SERVICE_COLUMNS` (log distinct sources and ports, the top port).

    Examples
    --------
    >>> X = pd.DataFrame([[10.0, 2, 20, 10000, 2.0, 8000.0, 500.0]], columns=AGGREGATE_COLUMNS)
    >>> TrafficFeatures().fit_transform(X).shape
    (1, 10)
    >>> TrafficFeatures(service=True).fit_transform(X.assign(sources=3, dports=1,
    ...                                                      top_dport=443)).shape
    (1, 13)
    """

    def __init__(self, service: bool = False) -> None:
        self.service = service

    def fit(self, X, y=None):
        self.n_features_in_ = len(self._columns())
        return self

    def _columns(self) -> list[str]:
        return AGGREGATE_COLUMNS + (SERVICE_COLUMNS if self.service else [])

    def transform(self, X) -> np.ndarray:
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(X, columns=self._columns())
        base = X[AGGREGATE_COLUMNS].astype(float).clip(lower=0)
        flows = base["flows"].clip(lower=1)
        shape = pd.DataFrame({"packets_per_flow": base["packets"] / flows,
                              "bytes_per_flow": base["bytes"] / flows,
                              "seconds_per_flow": base["duration"] / flows})
        out = np.log1p(pd.concat([base, shape], axis=1).to_numpy())
        if self.service:
            counts = np.log1p(X[["sources", "dports"]].astype(float).clip(lower=0).to_numpy())
            port = X[["top_dport"]].astype(float).fillna(-1).to_numpy()
            out = np.hstack([out, counts, port])
        return out

    def get_feature_names_out(self, input_features=None):
        names = AGGREGATE_COLUMNS + ["packets_per_flow", "bytes_per_flow", "seconds_per_flow"]
        if self.service:
            names += ["log_sources", "log_dports", "top_dport"]
        return np.array(names, dtype=object)


def traffic_classifier(learner: str = "random_forest", *, service: bool = False,
                       random_state: int | None = 0) -> Pipeline:
    """fwsiem's traffic classifier: :class:`TrafficFeatures`, then the chosen learner.

    Parameters
    ----------
    learner : {"random_forest", "hist_gradient_boosting", "knn"}
        ``knn`` is seed 004's kNN (k=5) on standardised log features. The random forest is
        the default: boosting was unstable with classes of a handful of samples (floods).
    service : bool
        Also use :data:`SERVICE_COLUMNS`; the input must then have those columns.
    random_state : int, optional
        Seed of the learner.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> small = rng.lognormal(3, 0.2, (20, 7)); big = rng.lognormal(9, 0.2, (20, 7))
    >>> X = pd.DataFrame(np.vstack([small, big]), columns=AGGREGATE_COLUMNS)
    >>> y = ["web"] * 20 + ["backup"] * 20
    >>> traffic_classifier("knn").fit(X, y).score(X, y)
    1.0
    """
    if learner == "hist_gradient_boosting":
        model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1,
                                               random_state=random_state)
    elif learner == "random_forest":
        model = RandomForestClassifier(n_estimators=300, n_jobs=-1, random_state=random_state)
    elif learner == "knn":
        model = KNeighborsClassifier(n_neighbors=5)
    else:
        raise ValueError(f"unknown learner {learner!r}")
    return Pipeline([("features", TrafficFeatures(service=service)), ("scale", StandardScaler()),
                     ("model", model)])
