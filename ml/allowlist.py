"""Allow-list recommender (seed 001): per (endpoint, remote IP) features at four levels and models."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC

from ml.features import INTERNAL_NETWORKS, address_class

__all__ = [
    "FINE_COLUMNS", "LEVELS", "FEATURE_NAMES", "fine_table_from_events", "fine_table_from_buckets",
    "fine_aggregations", "pair_features", "class_balanced_weights", "split_endpoints",
    "SeenBaseline", "paper_model", "fwsiem_model", "weighted_auc", "evaluate", "label_pairs",
]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
PORTS = 65536

#: The finest grain read from the engine: one row per (remote, vm, port, hour).
FINE_COLUMNS = ["remote", "vm", "port", "hour", "sent", "sent_tcp", "sent_syn", "sent_rst",
                "sent_fin", "recv", "recv_tcp", "recv_syn", "recv_rst", "recv_fin", "sports"]

#: The four levels of seed 001 section 2.2, each with the keys that define a group.
LEVELS: dict[str, tuple[str, ...]] = {
    "cloud": ("remote",),
    "org": ("remote", "org"),
    "vm": ("remote", "vm"),
    "endpoint": ("remote", "vm", "port"),
}

#: Appendix A, computed at every level.
BASE_FEATURES = (
    "inactive_hours", "hourly_max_over_avg", "hourly_avg", "hourly_std",
    "daily_max_over_avg", "daily_avg", "daily_std",
    "sent_tcp", "sent_syn", "sent_rst", "sent_fin", "recv_tcp", "recv_syn", "recv_rst", "recv_fin",
    "vm_share", "vms_per_packet", "sports_share", "dports_share", "sports_per_packet",
    "dports_per_packet",
)
FEATURE_NAMES = [f"{level}.{name}" for level in LEVELS for name in BASE_FEATURES]

#: The estate's address space unless configured (the same default as `fwsiem run`'s).
DEFAULT_INTERNAL = INTERNAL_NETWORKS


def _flag_mask(flags: pd.Series, letter: str) -> np.ndarray:
    return flags.fillna("").astype(str).str.upper().str.contains(letter, regex=False).to_numpy()


def _internal_mask(ips: pd.Series, internal: Sequence[str]) -> np.ndarray:
    internal = tuple(internal)
    return ips.astype(str).map(lambda ip: address_class(ip, internal) == "internal"
                               ).to_numpy(dtype=bool)


def fine_table_from_events(events: pd.DataFrame, internal: Sequence[str] = DEFAULT_INTERNAL
                           ) -> pd.DataFrame:
    """The fine table from ECS events (tests, simulations): what :func:`fine_aggregations` reads.

    An endpoint is an internal destination (``destination.ip`` in ``internal``) and its port;
    the remote is the source. Traffic back from the endpoint (its IP and port as the source)
    counts as received by the remote.

    Parameters
    ----------
    events : pandas.DataFrame
        ECS columns ``@timestamp``, ``source.ip``, ``source.port``, ``destination.ip``,
        ``destination.port``, ``network.transport`` and ``nsx.dfw.tcp_flags``.
    internal : sequence of str
        CIDRs of the protected VMs.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`FINE_COLUMNS`.

    Examples
    --------
    >>> ev = pd.DataFrame({"@timestamp": pd.to_datetime(["2024-01-01T00:10Z", "2024-01-01T00:20Z"]),
    ...     "source.ip": ["8.8.8.8", "10.0.0.5"], "source.port": [5555, 443],
    ...     "destination.ip": ["10.0.0.5", "8.8.8.8"], "destination.port": [443, 5555],
    ...     "network.transport": ["tcp", "tcp"], "nsx.dfw.tcp_flags": ["S", "SA"]})
    >>> t = fine_table_from_events(ev)
    >>> t[["remote", "vm", "port", "sent", "sent_syn", "recv", "recv_syn"]].values.tolist()
    [['8.8.8.8', '10.0.0.5', 443, 1, 1, 1, 1]]
    """
    ts = pd.to_datetime(events["@timestamp"], utc=True)
    hour = (ts.astype("int64") // 10**6 // HOUR_MS * HOUR_MS).to_numpy()
    if ts.dt.unit != "ns":  # astype(int64) gives the unit's ticks
        factor = {"s": 10**3, "ms": 1, "us": 10**-3}[ts.dt.unit]
        hour = (ts.astype("int64").to_numpy() * factor).astype(np.int64) // HOUR_MS * HOUR_MS
    flags = events.get("nsx.dfw.tcp_flags", pd.Series([""] * len(events), index=events.index))
    tcp = (events["network.transport"].astype(str).str.lower() == "tcp").to_numpy()
    base = pd.DataFrame({
        "hour": hour, "tcp": tcp.astype(int), "syn": (_flag_mask(flags, "S") & tcp).astype(int),
        "rst": (_flag_mask(flags, "R") & tcp).astype(int),
        "fin": (_flag_mask(flags, "F") & tcp).astype(int),
    })
    parts = []
    for side, vm_col, port_col, remote_col, remote_port in (
            ("sent", "destination.ip", "destination.port", "source.ip", "source.port"),
            ("recv", "source.ip", "source.port", "destination.ip", "destination.port")):
        mask = _internal_mask(events[vm_col], internal)
        part = base[mask].copy()
        part["remote"] = events.loc[mask, remote_col].astype(str).to_numpy()
        part["vm"] = events.loc[mask, vm_col].astype(str).to_numpy()
        part["port"] = pd.to_numeric(events.loc[mask, port_col], errors="coerce").fillna(0).astype(
            np.int64).to_numpy()
        part["rport"] = events.loc[mask, remote_port].to_numpy()
        grouped = part.groupby(["remote", "vm", "port", "hour"], sort=True)
        agg = grouped.agg(n=("tcp", "size"), tcp=("tcp", "sum"), syn=("syn", "sum"),
                          rst=("rst", "sum"), fin=("fin", "sum"),
                          sports=("rport", "nunique")).reset_index()
        agg = agg.rename(columns={c: f"{side}_{c}" for c in ("tcp", "syn", "rst", "fin")})
        agg = agg.rename(columns={"n": side})
        if side == "recv":
            agg = agg.drop(columns=["sports"])
        parts.append(agg)
    sent, recv = parts
    keys = ["remote", "vm", "port", "hour"]
    fine = sent.merge(recv, on=keys, how="left")
    # an endpoint is something remotes connect to: replies alone do not make one
    for col in FINE_COLUMNS:
        if col not in fine:
            fine[col] = 0
    fine = fine[FINE_COLUMNS].fillna(0)
    for col in FINE_COLUMNS[4:]:
        fine[col] = fine[col].astype(np.int64)
    return fine.sort_values(keys, kind="stable").reset_index(drop=True)


def fine_aggregations(side: str, internal: Sequence[str] = DEFAULT_INTERNAL) -> dict:
    """Composite sources, sub-aggregations and filter that give the fine table from the engine.

    ``side`` is ``"sent"`` (remote is the source) or ``"recv"`` (remote is the destination).
    Pass the result to ``Store.composite(index, sources, aggs, query)`` and the buckets to
    :func:`fine_table_from_buckets`.

    Examples
    --------
    >>> spec = fine_aggregations("sent")
    >>> [list(s)[0] for s in spec["sources"]]
    ['remote', 'vm', 'port', 'hour']
    """
    if side == "sent":
        remote, vm, port, rport = "source.ip", "destination.ip", "destination.port", "source.port"
    elif side == "recv":
        remote, vm, port, rport = "destination.ip", "source.ip", "source.port", "destination.port"
    else:
        raise ValueError(f"side must be 'sent' or 'recv', got {side!r}")
    tcp = {"term": {"network.transport": "tcp"}}

    def flag(letter: str) -> dict:
        return {"filter": {"bool": {"filter": [
            tcp, {"wildcard": {"nsx.dfw.tcp_flags": {"value": f"*{letter}*"}}}]}}}

    aggs = {"tcp": {"filter": tcp}, "syn": flag("S"), "rst": flag("R"), "fin": flag("F")}
    if side == "sent":
        aggs["sports"] = {"cardinality": {"field": rport}}
    return {
        "sources": [{"remote": {"terms": {"field": remote}}}, {"vm": {"terms": {"field": vm}}},
                    {"port": {"terms": {"field": port}}},
                    {"hour": {"date_histogram": {"field": "@timestamp", "fixed_interval": "1h"}}}],
        "aggs": aggs,
        "query": {"bool": {"filter": [{"terms": {vm: list(internal)}},
                                      {"exists": {"field": remote}}]}},
    }


def fine_table_from_buckets(sent: Iterable[Mapping], recv: Iterable[Mapping]) -> pd.DataFrame:
    """The fine table from composite buckets of the two :func:`fine_aggregations` sides."""
    def rows(buckets, side):
        out = []
        for b in buckets:
            k = b["key"]
            row = {"remote": str(k["remote"]), "vm": str(k["vm"]), "port": int(k["port"]),
                   "hour": int(k["hour"]), side: int(b["doc_count"])}
            for f in ("tcp", "syn", "rst", "fin"):
                row[f"{side}_{f}"] = int(b[f]["doc_count"])
            if side == "sent":
                row["sports"] = int(b["sports"]["value"])
            out.append(row)
        return pd.DataFrame(out, columns=["remote", "vm", "port", "hour", side,
                                          f"{side}_tcp", f"{side}_syn", f"{side}_rst",
                                          f"{side}_fin"] + (["sports"] if side == "sent" else []))
    s, r = rows(sent, "sent"), rows(recv, "recv")
    keys = ["remote", "vm", "port", "hour"]
    fine = s.merge(r, on=keys, how="left").fillna(0)
    for col in FINE_COLUMNS[4:]:
        fine[col] = fine[col].astype(np.int64)
    fine["port"] = fine["port"].astype(np.int64)
    fine["hour"] = fine["hour"].astype(np.int64)
    return fine[FINE_COLUMNS].sort_values(keys, kind="stable").reset_index(drop=True)


def default_org(vm: str, prefixlen: int = 16) -> str:
    """The organisation of a VM when none is known: its enclosing ``/prefixlen`` network."""
    a = ipaddress.ip_address(vm)
    plen = prefixlen if a.version == 4 else min(128, prefixlen + 96)
    return str(ipaddress.ip_network(f"{vm}/{plen}", strict=False))


def _level_features(fine: pd.DataFrame, keys: list[str], hours: int, days: int,
                    scope_vms: pd.Series | int) -> pd.DataFrame:
    fine = fine.assign(packets=fine["sent"] + fine["recv"])
    hourly = fine.groupby(keys + ["hour"], sort=False)["packets"].sum()
    daily = fine.assign(day=fine["hour"] // DAY_MS).groupby(keys + ["day"], sort=False)[
        "packets"].sum()

    def stats(series: pd.Series, n: int, prefix: str) -> pd.DataFrame:
        g = series.groupby(level=list(range(len(keys))), sort=False)
        total = g.sum()
        sq = (series.astype(float) ** 2).groupby(level=list(range(len(keys))), sort=False).sum()
        mean = total / n
        std = np.sqrt(np.maximum(sq / n - mean ** 2, 0.0))
        out = pd.DataFrame({f"{prefix}_avg": mean, f"{prefix}_std": std,
                            f"{prefix}_max_over_avg": g.max() / mean.replace(0, np.nan)})
        out[f"{prefix}_active"] = g.size()
        return out

    h = stats(hourly, hours, "hourly")
    d = stats(daily, days, "daily").drop(columns=["daily_active"])
    g = fine.groupby(keys, sort=False)
    sums = g[["packets", "sent", "sent_tcp", "sent_syn", "sent_rst", "sent_fin", "recv",
              "recv_tcp", "recv_syn", "recv_rst", "recv_fin", "sports"]].sum()
    out = pd.DataFrame(index=sums.index)
    out["inactive_hours"] = 1.0 - h["hourly_active"] / hours
    for col in ("hourly_max_over_avg", "hourly_avg", "hourly_std"):
        out[col] = h[col]
    for col in ("daily_max_over_avg", "daily_avg", "daily_std"):
        out[col] = d[col]
    for side in ("sent", "recv"):
        denom = sums[side].replace(0, np.nan)
        for f in ("tcp", "syn", "rst", "fin"):
            out[f"{side}_{f}"] = (sums[f"{side}_{f}"] / denom).fillna(0.0)
    vms = g["vm"].nunique()
    dports = g["port"].nunique()
    pk = sums["packets"].replace(0, np.nan)
    if isinstance(scope_vms, pd.Series):
        scope_vms = scope_vms.reindex(out.index).to_numpy()
    out["vm_share"] = vms / scope_vms
    out["vms_per_packet"] = vms / pk
    out["sports_share"] = sums["sports"] / PORTS
    out["dports_share"] = dports / PORTS
    out["sports_per_packet"] = sums["sports"] / pk
    out["dports_per_packet"] = dports / pk
    return out[list(BASE_FEATURES)].fillna(0.0)


def pair_features(fine: pd.DataFrame, org_of: Callable[[str], str] | Mapping | None = None,
                  period: tuple[int, int] | None = None) -> pd.DataFrame:
    """One row per (vm, port, remote): :data:`FEATURE_NAMES`, ``events`` and ``importance``.

    Parameters
    ----------
    fine : pandas.DataFrame
        The fine table (:func:`fine_table_from_events` or :func:`fine_table_from_buckets`).
    org_of : callable or mapping, optional
        A VM's organisation (tenant); by default its /16.
    period : (start_ms, end_ms), optional
        The observed period; by default from the first to the last hour in ``fine``.

    Returns
    -------
    pandas.DataFrame
        Indexed by (vm, port, remote). ``events`` is the pair's traffic, ``importance`` the
        remote's share of the endpoint's traffic (seed 001 section 2.3).

    Examples
    --------
    >>> fine = pd.DataFrame([["1.1.1.1", "10.0.0.1", 22, 0, 3, 3, 1, 0, 0, 0, 0, 0, 0, 0, 2],
    ...                      ["2.2.2.2", "10.0.0.1", 22, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1]],
    ...                     columns=FINE_COLUMNS)
    >>> f = pair_features(fine)
    >>> f["importance"].tolist(), f["cloud.sent_rst"].tolist()
    ([0.75, 0.25], [0.0, 1.0])
    """
    if fine.empty:
        return pd.DataFrame(columns=FEATURE_NAMES + ["events", "importance"])
    if period is None:
        start, end = int(fine["hour"].min()), int(fine["hour"].max()) + HOUR_MS
    else:
        start, end = period
    hours = max(1, int(np.ceil((end - start) / HOUR_MS)))
    days = max(1, int(np.ceil((end - start) / DAY_MS)))
    if org_of is None:
        orgs = {vm: default_org(vm) for vm in fine["vm"].unique()}
    elif isinstance(org_of, Mapping):
        orgs = {vm: str(org_of.get(vm, default_org(vm))) for vm in fine["vm"].unique()}
    else:
        orgs = {vm: str(org_of(vm)) for vm in fine["vm"].unique()}
    fine = fine.assign(org=fine["vm"].map(orgs))
    all_vms = fine["vm"].nunique()
    org_vms = fine.groupby("org")["vm"].nunique()

    pairs = fine.groupby(["vm", "port", "remote"], sort=True)["sent"].sum().to_frame("sent")
    pairs["events"] = pairs["sent"] + fine.groupby(["vm", "port", "remote"], sort=True)[
        "recv"].sum()
    frame = pairs.reset_index()
    frame["org"] = frame["vm"].map(orgs)
    for level, keys in LEVELS.items():
        if level == "cloud":
            scope = pd.Series(all_vms, index=pd.Index(fine["remote"].unique(), name="remote"))
        elif level == "org":
            idx = pd.MultiIndex.from_frame(fine[["remote", "org"]].drop_duplicates())
            scope = pd.Series(org_vms.reindex(idx.get_level_values("org")).to_numpy(), index=idx)
        else:
            scope = 1  # a VM, an endpoint: the remote talks to it or the pair would not exist
        feats = _level_features(fine, list(keys), hours, days, scope)
        feats.columns = [f"{level}.{c}" for c in feats.columns]
        frame = frame.merge(feats, left_on=list(keys), right_index=True, how="left")
    endpoint_total = frame.groupby(["vm", "port"])["events"].transform("sum")
    frame["importance"] = frame["events"] / endpoint_total
    frame = frame.set_index(["vm", "port", "remote"]).sort_index()
    return frame[FEATURE_NAMES + ["events", "importance"]].fillna(0.0)


def label_pairs(index: pd.MultiIndex, allow: Mapping[tuple[str, int], Iterable[str]]) -> pd.Series:
    """1 where the remote is on the endpoint's expert allow-list, 0 where not, NaN if unlabeled.

    ``allow`` maps (vm, port) to allowed addresses or CIDRs.

    Examples
    --------
    >>> idx = pd.MultiIndex.from_tuples([("10.0.0.1", 22, "1.1.1.1"), ("10.0.0.1", 22, "9.9.9.9"),
    ...                                  ("10.0.0.2", 80, "1.1.1.1")], names=["vm", "port", "remote"])
    >>> label_pairs(idx, {("10.0.0.1", 22): ["1.1.1.0/24"]}).tolist()
    [1.0, 0.0, nan]
    """
    nets = {(str(vm), int(port)): [ipaddress.ip_network(n, strict=False) for n in cidrs]
            for (vm, port), cidrs in allow.items()}
    out = np.full(len(index), np.nan)
    for i, (vm, port, remote) in enumerate(index):
        allowed = nets.get((str(vm), int(port)))
        if allowed is None:
            continue
        a = ipaddress.ip_address(remote)
        out[i] = float(any(a.version == n.version and a in n for n in allowed))
    return pd.Series(out, index=index, name="label")


def class_balanced_weights(importance: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Importance normalised by the total of its class, so both classes weigh the same.

    Examples
    --------
    >>> class_balanced_weights(np.array([0.75, 0.25, 0.2]), np.array([1, 1, 0])).tolist()
    [0.75, 0.25, 1.0]
    """
    importance = np.asarray(importance, dtype=float)
    y = np.asarray(y)
    w = np.zeros_like(importance)
    for c in np.unique(y):
        mask = y == c
        total = importance[mask].sum()
        w[mask] = importance[mask] / total if total > 0 else 1.0 / mask.sum()
    return w


def split_endpoints(endpoints: Sequence, fractions=(0.6, 0.2, 0.2), random_state: int = 0):
    """Endpoints shuffled into train / validation / test groups (seed 001: 60/20/20).

    Examples
    --------
    >>> tr, va, te = split_endpoints([("10.0.0.%d" % i, 22) for i in range(10)])
    >>> len(tr), len(va), len(te), len(set(tr) | set(va) | set(te))
    (6, 2, 2, 10)
    """
    items = sorted(set(endpoints))
    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(items))
    n = len(items)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    pick = [items[i] for i in order]
    return pick[:n_train], pick[n_train:n_train + n_val], pick[n_train + n_val:]


class SeenBaseline(ClassifierMixin, BaseEstimator):
    """Seed 001's baseline: allow a remote iff it was seen talking to the endpoint.

    Its score is the pair's traffic (the ``events`` column), so sweeping the threshold gives
    "allow iff seen at least t times"; it learns nothing.

    Examples
    --------
    >>> X = pd.DataFrame({"events": [5, 0, 1]})
    >>> SeenBaseline().fit(X, [1, 0, 0]).decision_function(X).tolist()
    [5.0, 0.0, 1.0]
    """

    def __init__(self, column: str = "events") -> None:
        self.column = column

    def fit(self, X, y, sample_weight=None):
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.asarray(X[self.column], dtype=float)

    def predict(self, X) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(int)


def _log1p(X):
    return np.log1p(np.maximum(np.asarray(X, dtype=float), 0.0))


def paper_model(C: float = 1.0) -> Pipeline:
    """Seed 001's model: a weighted SVM with a quadratic polynomial kernel on scaled features.

    Fit with ``model.fit(X, y, svm__sample_weight=w)``.

    Examples
    --------
    >>> paper_model(C=2.0).named_steps["svm"].degree
    2
    """
    return Pipeline([
        ("log", FunctionTransformer(_log1p)),
        ("scale", StandardScaler()),
        ("svm", SVC(kernel="poly", degree=2, coef0=1.0, C=C, gamma="scale")),
    ])


def fwsiem_model(learning_rate: float = 0.1, max_iter: int = 300, random_state: int = 0
                 ) -> HistGradientBoostingClassifier:
    """fwsiem's model: weighted histogram gradient boosting, linear in the number of pairs.

    Fit with ``model.fit(X, y, sample_weight=w)``.

    Examples
    --------
    >>> fwsiem_model().max_iter
    300
    """
    return HistGradientBoostingClassifier(
        learning_rate=learning_rate, max_iter=max_iter, max_leaf_nodes=15, l2_regularization=1.0,
        early_stopping=False, random_state=random_state)


def _fit(model, X, y, w):
    if isinstance(model, Pipeline):
        return model.fit(X, y, **{f"{model.steps[-1][0]}__sample_weight": w})
    return model.fit(X, y, sample_weight=w)


def _score(model, X) -> np.ndarray:
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(X), dtype=float)
    return model.predict_proba(X)[:, 1]


def weighted_auc(y, score, importance) -> float:
    """ROC AUC with samples weighted by class-balanced importance (seed 001 section 4).

    Examples
    --------
    >>> weighted_auc([1, 1, 0, 0], [0.9, 0.2, 0.5, 0.1], [0.9, 0.1, 0.5, 0.5])
    0.95
    """
    y = np.asarray(y)
    return float(roc_auc_score(y, score, sample_weight=class_balanced_weights(importance, y)))


def evaluate(features: pd.DataFrame, labels: pd.Series, *, random_state: int = 0,
             svm_C: Sequence[float] = (0.1, 1.0, 10.0),
             gbm_learning_rate: Sequence[float] = (0.05, 0.1),
             max_svm_train: int = 20_000) -> dict:
    """Baseline vs paper model vs fwsiem model on held-out endpoints (60/20/20 split).

    Hyper-parameters (the SVM's C, the boosting learning rate) are chosen on the validation
    endpoints; the figures are on the test endpoints only.

    Returns
    -------
    dict
        ``{"auc": {name: float}, "roc": {name: (fpr, tpr)}, "params": {...}, "counts": {...},
        "models": {name: fitted model}, "scores": {name: test scores}, "test_index": index}``.
    """
    mask = labels.notna()
    X_all = features.loc[mask, FEATURE_NAMES]
    y_all = labels[mask].astype(int)
    imp = features.loc[mask, "importance"].to_numpy()
    endpoints = list({(vm, port) for vm, port, _ in X_all.index})
    train, val, test = split_endpoints(endpoints, random_state=random_state)
    ep = pd.Series(list(zip(X_all.index.get_level_values(0), X_all.index.get_level_values(1),
                            strict=True)), index=X_all.index)

    def part(group):
        m = ep.isin(set(group)).to_numpy()
        return X_all[m], y_all[m].to_numpy(), imp[m], m

    Xtr, ytr, itr, _ = part(train)
    Xva, yva, iva, _ = part(val)
    Xte, yte, ite, mte = part(test)
    for name, yy in (("train", ytr), ("validation", yva), ("test", yte)):
        if len(np.unique(yy)) < 2:
            raise ValueError(f"the {name} endpoints hold only one class; label more endpoints")
    wtr = class_balanced_weights(itr, ytr)
    out: dict = {"auc": {}, "roc": {}, "params": {}, "models": {}, "scores": {},
                 "counts": {"pairs": int(len(X_all)), "endpoints": len(endpoints),
                            "train_pairs": int(len(ytr)), "validation_pairs": int(len(yva)),
                            "test_pairs": int(len(yte)), "test_positive": int(yte.sum()),
                            "test_negative": int((1 - yte).sum())}}
    out["test_index"] = X_all.index[mte]

    # the SVM is quadratic in the number of samples: train it on at most max_svm_train pairs
    rng = np.random.default_rng(random_state)
    svm_rows = np.arange(len(ytr))
    if len(svm_rows) > max_svm_train:
        svm_rows = np.sort(rng.choice(svm_rows, max_svm_train, replace=False))
        out["params"]["svm_train_subsample"] = max_svm_train
    candidates = {
        "paper_svm": [(("C", c), lambda c=c: paper_model(C=c)) for c in svm_C],
        "fwsiem_gbm": [(("learning_rate", lr),
                        lambda lr=lr: fwsiem_model(learning_rate=lr, random_state=random_state))
                       for lr in gbm_learning_rate],
    }
    base = SeenBaseline().fit(features.loc[mask].iloc[:0], [])
    test_frame = features.loc[mask][mte]
    s = base.decision_function(test_frame)
    out["auc"]["baseline_seen"] = weighted_auc(yte, s, ite)
    out["scores"]["baseline_seen"] = s
    out["models"]["baseline_seen"] = base
    for name, options in candidates.items():
        best = None
        for (pname, pval), make in options:
            rows = svm_rows if name == "paper_svm" else np.arange(len(ytr))
            wt = class_balanced_weights(itr[rows], ytr[rows])
            model = _fit(make(), Xtr.iloc[rows], ytr[rows], wt)
            auc_val = weighted_auc(yva, _score(model, Xva), iva)
            if best is None or auc_val > best[0]:
                best = (auc_val, pname, pval, model)
        auc_val, pname, pval, model = best
        s = _score(model, Xte)
        out["auc"][name] = weighted_auc(yte, s, ite)
        out["params"][name] = {pname: pval, "validation_auc": auc_val}
        out["models"][name] = model
        out["scores"][name] = s
    for name, s in out["scores"].items():
        fpr, tpr, _ = roc_curve(yte, s, sample_weight=class_balanced_weights(ite, yte))
        out["roc"][name] = (fpr, tpr)
    del wtr
    return out
