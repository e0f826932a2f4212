"""Firewall action predictor: the seed-000 baseline and fwsiem's model over flow tuples.

Both models take a table of flow tuples with the columns ``proto``, ``sip``, ``dip``,
``sport``, ``dport`` (optionally ``direction``) and predict the firewall action
(``pass``, ``drop``, ``reject`` ...). :func:`tuples_from_events` turns ECS event columns into
that table.

The seed baseline one-hot encodes the five raw values, so a host, port or source port it has
not seen carries no information. fwsiem's model describes a tuple by what generalises: the
protocol, the service behind the destination port, port classes, the /24 (or /64) networks,
internal/external and multicast addresses, the direction, and the *rule context*: how often
each action was taken, in training, for the same service, the same destination network and
service, and the same source and destination networks (target encoding with cross-fitting,
so a row never sees its own label).
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd
from sklearn import __version__ as _sklearn_version
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, TargetEncoder
from sklearn.tree import DecisionTreeClassifier

sklearn_version = tuple(int(p) for p in _sklearn_version.split(".")[:2])

#: The tuple columns of seed 000 (in its order).
TUPLE_COLUMNS = ["proto", "sip", "dip", "sport", "dport"]

#: ECS event field -> tuple column.
ECS_TUPLE_FIELDS = {
    "network.transport": "proto", "source.ip": "sip", "destination.ip": "dip",
    "source.port": "sport", "destination.port": "dport", "network.direction": "direction",
    "event.action": "action", "@timestamp": "timestamp", "rule.id": "rule",
}

#: Well-known services by destination port (independent of the machine's /etc/services).
SERVICES = {
    20: "ftp-data", 21: "ftp", 22: "ssh", 23: "telnet", 25: "smtp", 53: "dns", 67: "dhcp",
    68: "dhcp", 69: "tftp", 80: "http", 88: "kerberos", 110: "pop3", 111: "rpcbind",
    119: "nntp", 123: "ntp", 135: "msrpc", 137: "netbios", 138: "netbios", 139: "netbios",
    143: "imap", 161: "snmp", 162: "snmp", 179: "bgp", 389: "ldap", 443: "https", 445: "smb",
    465: "smtps", 500: "ike", 514: "syslog", 587: "submission", 636: "ldaps", 873: "rsync",
    902: "vmware", 993: "imaps", 995: "pop3s", 1194: "openvpn", 1433: "mssql", 1521: "oracle",
    1812: "radius", 2049: "nfs", 2379: "etcd", 3260: "iscsi", 3306: "mysql", 3389: "rdp",
    4789: "vxlan", 5060: "sip", 5432: "postgres", 5601: "kibana", 5672: "amqp", 5900: "vnc",
    5985: "winrm", 6379: "redis", 6443: "kube-api", 8080: "http-alt", 8443: "https-alt",
    9092: "kafka", 9200: "elasticsearch", 9887: "nsx", 11211: "memcached", 27017: "mongodb",
}


#: Address ranges counted as internal unless configured otherwise (RFC 1918, shared address
#: space, unique-local and link-local IPv6, IPv4 link-local).
INTERNAL_NETWORKS = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                     "169.254.0.0/16", "fc00::/7", "fe80::/10"]


def is_internal(address: str, networks: list[str] | None = None) -> bool:
    """Whether an address is in the internal ranges (default :data:`INTERNAL_NETWORKS`).

    Examples
    --------
    >>> is_internal("10.2.3.4"), is_internal("203.0.113.9"), is_internal("fd00::1")
    (True, False, True)
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    nets = [ipaddress.ip_network(n, strict=False) for n in (networks or INTERNAL_NETWORKS)]
    return any(ip in n for n in nets if n.version == ip.version)


def tuples_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """Rename ECS event columns to tuple columns; missing ports become 0 (as in seed 000).

    Examples
    --------
    >>> ev = pd.DataFrame({"network.transport": ["icmp"], "source.ip": ["10.0.0.1"],
    ...                    "destination.ip": ["10.0.0.2"], "event.action": ["pass"]})
    >>> print(*tuples_from_events(ev).loc[0, ["proto", "sport", "dport", "action"]])
    icmp 0 0 pass
    """
    out = events.rename(columns={k: v for k, v in ECS_TUPLE_FIELDS.items() if k in events})
    for col in ("sport", "dport"):
        if col not in out:
            out[col] = 0
        out[col] = pd.to_numeric(out[col], errors="coerce").fillna(0).astype("int64")
    for col in ("proto", "sip", "dip"):
        out[col] = out[col].astype(str).str.lower()
    return out


def _port_class(ports: np.ndarray) -> np.ndarray:
    return np.select([ports <= 0, ports < 1024, ports < 49152],
                     ["none", "well-known", "registered"], "ephemeral").astype(object)


class _IpFacts:
    """Per-address facts, computed once per distinct address (addresses repeat a lot)."""

    def __init__(self, internal: list) -> None:
        self.internal = internal

    def __call__(self, values: pd.Series) -> pd.DataFrame:
        codes, uniques = pd.factorize(values.astype(str))
        rows = [self._facts(u) for u in uniques]
        table = pd.DataFrame(rows, columns=["net", "internal", "multicast", "v6"])
        return table.iloc[codes].reset_index(drop=True)

    def _facts(self, text: str) -> tuple:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return ("invalid", 0, 0, 0)
        prefix = 24 if ip.version == 4 else 64
        net = str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
        internal = any(ip in n for n in self.internal if n.version == ip.version)
        multicast = ip.is_multicast or (ip.version == 4 and (text.endswith(".255")
                                                             or text == "255.255.255.255"))
        return (net, int(internal), int(multicast), int(ip.version == 6))


class ActionFeatures(TransformerMixin, BaseEstimator):
    """Describe flow tuples by features that generalise to unseen hosts and source ports.

    Parameters
    ----------
    internal_networks : list of str, optional
        CIDRs counted as internal; default :data:`INTERNAL_NETWORKS`.

    Examples
    --------
    >>> X = pd.DataFrame({"proto": ["tcp"], "sip": ["10.1.2.3"], "dip": ["8.8.8.8"],
    ...                   "sport": [51000], "dport": [53]})
    >>> row = ActionFeatures().fit_transform(X).iloc[0]
    >>> print(row["service"], row["src_internal"], row["dst_internal"], row["sport_class"])
    dns 1 0 ephemeral
    """

    categorical = ["proto", "service", "sport_class", "direction", "src_net", "dst_net"]
    context = ["ctx_service", "ctx_dst_service", "ctx_nets", "ctx_src_service"]
    numeric = ["dport", "src_internal", "dst_internal", "dst_multicast", "v6", "same_net",
               "sport_well_known"]

    def __init__(self, internal_networks: list[str] | None = None) -> None:
        self.internal_networks = internal_networks

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X) -> pd.DataFrame:
        X = pd.DataFrame(X).reset_index(drop=True)
        facts = _IpFacts([ipaddress.ip_network(n, strict=False)
                          for n in (self.internal_networks or INTERNAL_NETWORKS)])
        src, dst = facts(X["sip"]), facts(X["dip"])
        proto = X["proto"].astype(str).str.lower()
        dport = pd.to_numeric(X["dport"], errors="coerce").fillna(0).astype("int64").to_numpy()
        sport = pd.to_numeric(X["sport"], errors="coerce").fillna(0).astype("int64").to_numpy()
        service = pd.Series(dport).map(SERVICES)
        service = service.fillna(pd.Series(_port_class(dport))).astype(object)
        portless = ~proto.isin(["tcp", "udp", "sctp"]).to_numpy()
        service = np.where(portless, proto.to_numpy(), service.to_numpy())
        direction = (X["direction"].astype(str) if "direction" in X
                     else pd.Series("unknown", index=X.index))
        out = pd.DataFrame({
            "proto": proto.to_numpy(),
            "service": service,
            "sport_class": _port_class(sport),
            "direction": direction.to_numpy(),
            "src_net": src["net"].to_numpy(),
            "dst_net": dst["net"].to_numpy(),
            "dport": np.where(portless, -1, dport),
            "src_internal": src["internal"].to_numpy(),
            "dst_internal": dst["internal"].to_numpy(),
            "dst_multicast": dst["multicast"].to_numpy(),
            "v6": dst["v6"].to_numpy(),
            "same_net": (src["net"] == dst["net"]).astype(int).to_numpy(),
            "sport_well_known": ((sport > 0) & (sport < 1024)).astype(int),
        })
        out["ctx_service"] = out["proto"] + "/" + out["service"]
        out["ctx_dst_service"] = out["dst_net"] + "|" + out["ctx_service"]
        out["ctx_nets"] = out["src_net"] + ">" + out["dst_net"]
        out["ctx_src_service"] = (out["src_net"] + ">" + out["ctx_service"] + "|"
                                  + out["direction"])
        return out

    def get_feature_names_out(self, input_features=None):
        return np.array(self.categorical + self.numeric + self.context, dtype=object)


def _target_encoder(random_state: int | None) -> TargetEncoder:
    # scikit-learn >= 1.9 takes the fold splitter itself; older releases take shuffle/seed.
    if "shuffle" in getattr(TargetEncoder, "_parameter_constraints", {}) and \
            sklearn_version < (1, 9):
        return TargetEncoder(target_type="auto", cv=3, shuffle=True, random_state=random_state)
    return TargetEncoder(target_type="auto", cv=KFold(3, shuffle=True, random_state=random_state))


def seed_baseline(random_state: int | None = None) -> Pipeline:
    """Seed 000 as published: one-hot (proto, sip, dip, sport, dport), gini decision tree.

    Examples
    --------
    >>> X = pd.DataFrame({"proto": ["tcp", "udp"], "sip": ["a", "b"], "dip": ["c", "d"],
    ...                   "sport": [1, 2], "dport": [80, 53]})
    >>> seed_baseline(0).fit(X, ["pass", "drop"]).predict(X).tolist()
    ['pass', 'drop']
    """
    return Pipeline([
        ("encode", ColumnTransformer(
            [("onehot", OneHotEncoder(handle_unknown="ignore"), TUPLE_COLUMNS)])),
        ("tree", DecisionTreeClassifier(criterion="gini", random_state=random_state)),
    ])


def action_predictor(
    learner: str = "hist_gradient_boosting", *, internal_networks: list[str] | None = None,
    random_state: int | None = 0, max_iter: int = 200,
) -> Pipeline:
    """fwsiem's action predictor: :class:`ActionFeatures`, encoders, then a tree ensemble.

    Parameters
    ----------
    learner : {"hist_gradient_boosting", "random_forest", "decision_tree"}
        The estimator after the features.
    internal_networks : list of str, optional
        Passed to :class:`ActionFeatures`.
    random_state : int, optional
        Seed of the target encoder's folds and of the learner.
    max_iter : int
        Boosting iterations (``hist_gradient_boosting``) or trees (``random_forest``).

    Examples
    --------
    >>> X = pd.DataFrame({"proto": ["tcp"] * 4 + ["udp"] * 4,
    ...                   "sip": [f"10.0.0.{i}" for i in range(8)], "dip": ["10.0.1.9"] * 8,
    ...                   "sport": range(40000, 40008), "dport": [22] * 4 + [53] * 4})
    >>> y = ["pass"] * 4 + ["drop"] * 4
    >>> model = action_predictor("decision_tree").fit(X, y)
    >>> new = X.assign(sip="10.0.0.77", sport=50000)   # an unseen host and source port
    >>> model.predict(new).tolist() == y
    True
    """
    features = ActionFeatures(internal_networks=internal_networks)
    encode = ColumnTransformer(
        [
            ("categorical", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                           encoded_missing_value=-1, max_categories=200),
             ActionFeatures.categorical),
            ("context", _target_encoder(random_state), ActionFeatures.context),
            ("numeric", "passthrough", ActionFeatures.numeric),
        ],
        sparse_threshold=0.0,
    )
    if learner == "hist_gradient_boosting":
        estimator = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.1,
                                                   early_stopping=False,
                                                   random_state=random_state)
    elif learner == "random_forest":
        estimator = RandomForestClassifier(n_estimators=max_iter, min_samples_leaf=2, n_jobs=-1,
                                           random_state=random_state)
    elif learner == "decision_tree":
        estimator = DecisionTreeClassifier(criterion="gini", random_state=random_state)
    else:
        raise ValueError(f"unknown learner {learner!r}")
    return Pipeline([("features", features), ("encode", encode), ("model", estimator)])


def time_split(frame: pd.DataFrame, *, test_fraction: float = 0.2,
               column: str = "timestamp") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Earlier rows for training, the latest ``test_fraction`` of the time range for testing.

    The cut is at whole days when the data spans several days, else at the time quantile.

    Examples
    --------
    >>> f = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=5, freq="D")})
    >>> train, test = time_split(f, test_fraction=0.4)
    >>> len(train), len(test)
    (3, 2)
    """
    ts = pd.to_datetime(frame[column], utc=True)
    days = ts.dt.floor("D")
    distinct = np.sort(days.unique())
    if len(distinct) >= 3:
        n_test_days = max(1, int(round(len(distinct) * test_fraction)))
        cut = distinct[-n_test_days]
        mask = (days >= cut).to_numpy()
    else:
        cut = ts.quantile(1 - test_fraction)
        mask = (ts > cut).to_numpy()
    return frame[~mask], frame[mask]


def fit_weighted(model: Pipeline, X: pd.DataFrame, y, sample_weight=None) -> Pipeline:
    """Fit a pipeline, passing ``sample_weight`` to its final estimator.

    Examples
    --------
    >>> X = pd.DataFrame({"proto": ["tcp", "udp"], "sip": ["a", "b"], "dip": ["c", "d"],
    ...                   "sport": [1, 2], "dport": [80, 53]})
    >>> fit_weighted(seed_baseline(0), X, ["pass", "drop"], [3, 1]).predict(X).tolist()
    ['pass', 'drop']
    """
    if sample_weight is None:
        return model.fit(X, y)
    return model.fit(X, y, **{f"{model.steps[-1][0]}__sample_weight": np.asarray(sample_weight)})


def split_frame(frame: pd.DataFrame, split: str = "time", *, test_fraction: float = 0.2,
                random_state: int | None = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a tuple frame by time (``"time"``, see :func:`time_split`) or at random.

    Examples
    --------
    >>> f = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=10, freq="h")})
    >>> [len(p) for p in split_frame(f, "random", test_fraction=0.3)]
    [7, 3]
    """
    if split == "time":
        return time_split(frame, test_fraction=test_fraction)
    if split == "random":
        from sklearn.model_selection import train_test_split

        return train_test_split(frame, test_size=test_fraction, random_state=random_state)
    raise ValueError(f"unknown split {split!r}; use 'time' or 'random'")
