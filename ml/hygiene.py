"""Rule hygiene (seed 000): unused, shadowed, overly broad and dominant rules, deny spikes, top drops."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml.cidr import NoCoverError, group_cidrs

__all__ = ["Service", "Rule", "rule_from_dict", "contains", "find_shadowed", "rule_findings",
           "narrowed_rule", "deny_spikes", "top_dropped"]

ALLOW_ACTIONS = {"allow", "pass", "accept", "permit"}
#: Administrative and database ports that should never be open to any source.
SENSITIVE_PORTS = (22, 23, 135, 139, 445, 1433, 1521, 2375, 3306, 3389, 5432, 5900, 5985, 6379,
                   9200, 11211, 27017)
_PROTO = {"6": "tcp", "17": "udp", "1": "icmp", "58": "ipv6-icmp"}


@dataclass(frozen=True)
class Service:
    """A protocol and destination port range; ``proto`` None means any protocol.

    Examples
    --------
    >>> Service.parse("tcp/8000-8080").covers(Service.parse("tcp/8443"))
    False
    >>> Service.parse("any").covers(Service.parse("udp/53"))
    True
    """

    proto: str | None = None
    lo: int = 0
    hi: int = 65535

    @classmethod
    def parse(cls, text: str | Mapping) -> Service:
        if isinstance(text, Mapping):
            proto = text.get("protocol") or text.get("proto") or text.get("l4_protocol")
            ports = text.get("ports") or text.get("port") or text.get("destination_ports")
            if isinstance(ports, (list, tuple)):
                ports = ports[0] if len(ports) == 1 else None  # callers split multi-port lists
            text = f"{proto or 'any'}/{ports}" if ports not in (None, "", "any") else str(
                proto or "any")
        t = str(text).strip().lower()
        if t in ("", "any", "*"):
            return cls()
        proto, _, ports = t.partition("/")
        if proto == "proto":  # an IP protocol number, e.g. proto/50
            return cls(_PROTO.get(ports, ports))
        proto = _PROTO.get(proto, proto)
        if proto in ("any", "*"):
            proto = None
        if not ports or ports in ("any", "*"):
            return cls(proto)
        lo, _, hi = ports.partition("-")
        return cls(proto, int(lo), int(hi or lo))

    @property
    def is_any(self) -> bool:
        return self.proto is None and self.lo == 0 and self.hi == 65535

    def covers(self, other: Service) -> bool:
        if self.proto is not None and self.proto != other.proto:
            return False
        return self.lo <= other.lo and other.hi <= self.hi

    def matches(self, proto: str, port: int | None) -> bool:
        if self.proto is not None and self.proto != proto:
            return False
        if self.lo == 0 and self.hi == 65535:
            return True
        return port is not None and self.lo <= int(port) <= self.hi

    def size(self) -> int:
        """Number of (protocol, port) pairs; protocols without ports count once."""
        if self.proto is None:
            return 65536 * 2 + 254
        if self.proto not in ("tcp", "udp", "sctp"):
            return 1
        return self.hi - self.lo + 1

    def __str__(self) -> str:
        if self.is_any:
            return "any"
        if self.lo == 0 and self.hi == 65535:
            return str(self.proto)
        ports = str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"
        return f"{self.proto or 'any'}/{ports}"


def _nets(values: Iterable[str] | None) -> tuple:
    if not values:
        return ()
    out = []
    for v in values:
        v = str(v).strip()
        if v.lower() in ("any", "*", "0.0.0.0/0", "::/0"):
            return ()
        out.append(ipaddress.ip_network(v, strict=False))
    return tuple(out)


@dataclass(frozen=True)
class Rule:
    """A firewall rule in evaluation order; empty ``sources``/``destinations``/``services`` = any.

    Examples
    --------
    >>> r = Rule("1", 10, "allow", destinations=_nets(["10.0.0.0/24"]),
    ...          services=(Service.parse("tcp/22"),))
    >>> r.matches("8.8.8.8", "10.0.0.5", "tcp", 22), r.matches("8.8.8.8", "10.0.1.5", "tcp", 22)
    (True, False)
    """

    id: str
    sequence: int
    action: str
    sources: tuple = ()
    destinations: tuple = ()
    services: tuple = ()
    direction: str = "in_out"
    name: str = ""
    disabled: bool = False
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def allows(self) -> bool:
        return self.action.lower() in ALLOW_ACTIONS

    def matches(self, src: str, dst: str, proto: str, port: int | None,
                direction: str | None = None) -> bool:
        if self.disabled:
            return False
        if direction and self.direction not in ("in_out", direction):
            return False
        return (_in(src, self.sources) and _in(dst, self.destinations)
                and (not self.services or any(s.matches(proto, port) for s in self.services)))

    def address_space(self, which: str) -> int:
        nets = self.sources if which == "sources" else self.destinations
        return sum(n.num_addresses for n in nets) if nets else 2 ** 32

    def port_space(self) -> int:
        return sum(s.size() for s in self.services) if self.services else Service().size()


def _in(ip: str, nets: tuple) -> bool:
    if not nets:
        return True
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(a.version == n.version and a in n for n in nets)


def rule_from_dict(d: Mapping, sequence: int | None = None) -> Rule:
    """A :class:`Rule` from the documented rules format (docs/rules-format.md) or an index doc.

    Examples
    --------
    >>> r = rule_from_dict({"id": "1006", "sequence": 5, "action": "ALLOW",
    ...                     "sources": ["any"], "destinations": ["10.1.0.0/16"],
    ...                     "services": ["tcp/443", "tcp/80"]})
    >>> r.allows, [str(s) for s in r.services], r.sources
    (True, ['tcp/443', 'tcp/80'], ())
    """
    services = []
    for s in d.get("services") or []:
        if isinstance(s, Mapping) and isinstance(s.get("ports"), (list, tuple)) and len(
                s["ports"]) > 1:
            services.extend(Service.parse({"protocol": s.get("protocol"), "ports": p})
                            for p in s["ports"])
        else:
            services.append(Service.parse(s))
    if any(s.is_any for s in services):
        services = []
    seq = d.get("sequence", d.get("sequence_number", sequence))
    direction = str(d.get("direction") or "in_out").lower()
    direction = {"in": "ingress", "out": "egress", "ingress": "ingress", "egress": "egress"}.get(
        direction, "in_out")
    return Rule(
        id=str(d.get("id") or d.get("rule_id")), sequence=int(seq if seq is not None else 0),
        action=str(d.get("action", "allow")).lower(), sources=_nets(d.get("sources")),
        destinations=_nets(d.get("destinations")), services=tuple(services),
        direction=direction, name=str(d.get("name") or d.get("display_name") or ""),
        disabled=bool(d.get("disabled", False)))


def _nets_cover(a: tuple, b: tuple) -> bool:
    if not a:
        return True
    if not b:
        return False
    return all(any(x.version == y.version and x.subnet_of(y) for y in a) for x in b)


def contains(a: Rule, b: Rule) -> bool:
    """True when every flow ``b`` matches is also matched by ``a`` (by the definitions).

    Examples
    --------
    >>> wide = rule_from_dict({"id": "1", "sources": ["10.0.0.0/8"], "services": ["tcp/1-1024"]})
    >>> narrow = rule_from_dict({"id": "2", "sources": ["10.1.0.0/16"], "services": ["tcp/22"]})
    >>> contains(wide, narrow), contains(narrow, wide)
    (True, False)
    """
    if a.direction not in ("in_out", b.direction):
        return False
    if not (_nets_cover(a.sources, b.sources) and _nets_cover(a.destinations, b.destinations)):
        return False
    if not a.services:
        return True
    if not b.services:
        return False
    return all(any(sa.covers(sb) for sa in a.services) for sb in b.services)


def find_shadowed(rules: Sequence[Rule]) -> dict[str, str]:
    """Rule id -> id of the earlier enabled rule that matches every flow it would match.

    Examples
    --------
    >>> rs = [rule_from_dict({"id": "a", "sequence": 1, "destinations": ["10.0.0.0/8"]}),
    ...       rule_from_dict({"id": "b", "sequence": 2, "destinations": ["10.2.0.0/16"],
    ...                       "services": ["tcp/22"]})]
    >>> find_shadowed(rs)
    {'b': 'a'}
    """
    ordered = sorted((r for r in rules if not r.disabled), key=lambda r: (r.sequence, r.id))
    out: dict[str, str] = {}
    for j, later in enumerate(ordered):
        for earlier in ordered[:j]:
            if contains(earlier, later):
                out[later.id] = earlier.id
                break
    return out


def narrowed_rule(rule: Rule, flows: pd.DataFrame, k: int = 8, min_prefixlen: int = 24,
                  max_services: int = 16) -> dict:
    """The rule cut down to the traffic that used it: CIDR-grouped sources and destinations.

    ``flows`` has columns ``source.ip``, ``destination.ip``, ``network.transport``,
    ``destination.port`` and ``count`` (flows matched by the rule).

    Examples
    --------
    >>> r = rule_from_dict({"id": "7", "action": "allow"})
    >>> f = pd.DataFrame({"source.ip": ["10.0.0.1", "10.0.0.2"], "destination.ip": ["10.9.0.1"] * 2,
    ...                   "network.transport": ["tcp", "tcp"], "destination.port": [443, 443],
    ...                   "count": [5, 7]})
    >>> n = narrowed_rule(r, f)
    >>> n["sources"], n["destinations"], n["services"]
    (['10.0.0.1/32', '10.0.0.2/32'], ['10.9.0.1/32'], ['tcp/443'])
    """
    def group(ips: Iterable[str]) -> list[str]:
        out: list[str] = []
        by_family: dict[int, list[str]] = {}
        for ip in ips:
            by_family.setdefault(ipaddress.ip_address(ip).version, []).append(ip)
        for version, members in sorted(by_family.items()):
            mp = min_prefixlen if version == 4 else min(128, min_prefixlen + 96)
            try:
                out += group_cidrs(members, k=k, min_prefixlen=mp).cidrs
            except NoCoverError as exc:
                out += group_cidrs(members, k=exc.min_k, min_prefixlen=mp).cidrs
        return out

    svc = (flows.groupby(["network.transport", "destination.port"])["count"].sum()
           .sort_values(ascending=False))
    services = [f"{p}/{int(port)}" if p in ("tcp", "udp", "sctp") else str(p)
                for (p, port) in svc.index[:max_services]]
    services = list(dict.fromkeys(services))
    return {"id": rule.id, "name": rule.name, "action": rule.action,
            "sources": group(flows["source.ip"].unique()),
            "destinations": group(flows["destination.ip"].unique()),
            "services": services, "direction": rule.direction,
            "covers_share": float(svc.iloc[:max_services].sum() / max(1, svc.sum()))}


def rule_findings(rules: Sequence[Rule], stats: pd.DataFrame, flows: pd.DataFrame | None = None,
                  *, dominant_share: float = 0.15, dominant_ratio: float = 1.5,
                  broad_factor: float = 1000.0, broad_min_hits: int = 20,
                  sensitive_ports: Iterable[int] = SENSITIVE_PORTS,
                  narrow_k: int = 8, narrow_min_prefixlen: int = 24) -> list[dict]:
    """Findings over a period: ``unused``, ``shadowed``, ``overly_broad``, ``dominant``.

    Parameters
    ----------
    rules : sequence of Rule
        The rule set in force (empty: only traffic-based findings).
    stats : pandas.DataFrame
        Per rule id (index): ``hits``, ``allowed``, ``denied``, ``first``, ``last``.
    flows : pandas.DataFrame, optional
        Per (``rule.id``, ``source.ip``, ``destination.ip``, ``network.transport``,
        ``destination.port``) the ``count`` of events: the traffic behind each rule.

    Returns
    -------
    list of dict
        Each with ``kind``, ``rule`` (id), ``severity``, ``evidence`` and ``proposal``.

    Examples
    --------
    >>> rs = [rule_from_dict({"id": "1", "sequence": 1, "destinations": ["10.0.0.0/8"]}),
    ...       rule_from_dict({"id": "2", "sequence": 2, "destinations": ["10.1.0.0/16"]}),
    ...       rule_from_dict({"id": "3", "sequence": 3, "sources": ["192.0.2.0/24"]})]
    >>> st = pd.DataFrame({"hits": [90, 0, 0], "allowed": [90, 0, 0], "denied": [0, 0, 0]},
    ...                   index=["1", "2", "3"])
    >>> sorted((f["kind"], f["rule"]) for f in rule_findings(rs, st))
    [('dominant', '1'), ('shadowed', '2'), ('unused', '3')]
    """
    stats = stats.copy()
    stats.index = stats.index.astype(str)
    total = float(stats["hits"].sum()) if len(stats) else 0.0
    out: list[dict] = []
    shadowed = find_shadowed(rules)
    by_id = {r.id: r for r in rules}
    for r in sorted(rules, key=lambda r: (r.sequence, r.id)):
        if r.disabled:
            continue
        hits = int(stats["hits"].get(r.id, 0)) if len(stats) else 0
        if r.id in shadowed:
            earlier = by_id[shadowed[r.id]]
            matched = 0
            if flows is not None and len(flows):
                f = flows[flows["rule.id"].astype(str) == earlier.id]
                inside = [r.matches(s, d, t, p) for s, d, t, p in zip(
                    f["source.ip"], f["destination.ip"], f["network.transport"],
                    f["destination.port"], strict=True)]
                matched = int(f.loc[inside, "count"].sum()) if len(f) else 0
            out.append({"kind": "shadowed", "rule": r.id, "severity": "medium",
                        "evidence": {"hits": hits, "shadowed_by": earlier.id,
                                     "shadowed_by_sequence": earlier.sequence,
                                     "flows_it_would_match_taken_earlier": matched},
                        "proposal": {"action": "remove_rule", "rule": r.id,
                                     "reason": f"every flow it matches is matched earlier by "
                                               f"rule {earlier.id}"}})
        elif hits == 0:
            out.append({"kind": "unused", "rule": r.id, "severity": "low",
                        "evidence": {"hits": 0},
                        "proposal": {"action": "remove_rule", "rule": r.id,
                                     "reason": "no traffic matched it in the period"}})
    if total > 0:
        ranked = stats["hits"].sort_values(ascending=False)
        top_id, top_hits = str(ranked.index[0]), float(ranked.iloc[0])
        runner = float(ranked.iloc[1]) if len(ranked) > 1 else 0.0
        share = top_hits / total
        strong = share >= dominant_share and top_hits >= dominant_ratio * runner
        out.append({"kind": "dominant", "rule": top_id, "severity": "medium" if strong else "info",
                    "evidence": {"hits": int(top_hits), "share": round(share, 4),
                                 "runner_up_hits": int(runner), "total_hits": int(total),
                                 "dominant_by_far": bool(strong)},
                    "proposal": {"action": "investigate", "rule": top_id,
                                 "reason": f"takes {share:.0%} of all hits "
                                           f"({top_hits / max(runner, 1):.1f}x the next rule); "
                                           "check whether it is broader than intended or "
                                           "carries a flow that deserves its own rule"}})
    if flows is not None and len(flows):
        sensitive = set(int(p) for p in sensitive_ports)
        for r in rules:
            if r.disabled or not r.allows or r.id in shadowed:
                continue
            f = flows[flows["rule.id"].astype(str) == r.id]
            hits = int(f["count"].sum())
            if hits < broad_min_hits:
                continue
            used_svc = len(f.groupby(["network.transport", "destination.port"]))
            reasons = []
            svc_ratio = r.port_space() / max(used_svc, 1)
            if svc_ratio >= broad_factor:
                reasons.append(f"allows {r.port_space()} services, traffic used {used_svc}")
            open_sensitive = sorted(
                p for p in sensitive if any(s.matches("tcp", p) for s in r.services)
            ) if r.services else []
            if not r.sources and open_sensitive:
                reasons.append(f"opens administrative/database port(s) {open_sensitive} to any "
                               "source")
            if not reasons:
                continue
            out.append({"kind": "overly_broad", "rule": r.id, "severity": "high" if len(
                reasons) > 1 or open_sensitive else "medium",
                        "evidence": {"hits": hits, "reasons": reasons,
                                     "distinct_sources": int(f["source.ip"].nunique()),
                                     "distinct_destinations": int(f["destination.ip"].nunique()),
                                     "distinct_services": int(used_svc),
                                     "defined_services": int(r.port_space())},
                        "proposal": {"action": "tighten_rule", "rule": r.id,
                                     "narrowed": narrowed_rule(r, f, k=narrow_k,
                                                               min_prefixlen=narrow_min_prefixlen)}})
    return out


def deny_spikes(hourly: pd.DataFrame, *, factor: float = 10.0, min_denied: int = 50) -> list[dict]:
    """VMs whose denied traffic in one hour jumps far above their usual level (quarantine).

    ``hourly`` has columns ``vm``, ``hour`` (epoch ms) and ``denied``; hours without denials
    may be absent. A VM is flagged when its worst hour has at least ``min_denied`` denials and
    at least ``factor`` times its median hour (absent hours count as zero).

    Examples
    --------
    >>> h = pd.DataFrame({"vm": ["10.0.0.5"] * 4 + ["10.0.0.6"] * 4, "hour": [0, 1, 2, 3] * 2,
    ...                   "denied": [2, 1, 300, 2, 40, 50, 45, 60]})
    >>> [(s["vm"], s["peak"]) for s in deny_spikes(h)]
    [('10.0.0.5', 300)]
    """
    if hourly.empty:
        return []
    hours = np.sort(hourly["hour"].unique())
    out = []
    for vm, g in hourly.groupby("vm", sort=True):
        series = g.set_index("hour")["denied"].reindex(hours, fill_value=0)
        peak = int(series.max())
        usual = float(np.median(series.to_numpy()))
        if peak >= min_denied and peak >= factor * max(usual, 1.0):
            out.append({"vm": str(vm), "peak": peak, "peak_hour": int(series.idxmax()),
                        "usual": usual, "denied_total": int(series.sum())})
    return sorted(out, key=lambda s: -s["peak"])


def top_dropped(table: pd.DataFrame, n: int = 10) -> list[dict]:
    """The destinations and ports most dropped traffic targets, with their share of drops.

    ``table`` has ``destination.ip``, ``destination.port``, ``count`` and ``sources``.

    Examples
    --------
    >>> t = pd.DataFrame({"destination.ip": ["20.20.0.1", "10.0.0.9"], "destination.port": [80, 53],
    ...                   "count": [90, 10], "sources": [40, 2]})
    >>> top_dropped(t, n=1)[0]["target"], top_dropped(t, n=1)[0]["share"]
    ('20.20.0.1:80', 0.9)
    """
    if table.empty:
        return []
    total = float(table["count"].sum())
    top = table.sort_values(["count", "destination.ip"], ascending=[False, True]).head(n)
    return [{"target": f"{ip}:{int(port)}", "destination": str(ip), "port": int(port),
             "count": int(c), "share": round(c / total, 4), "sources": int(s)}
            for ip, port, c, s in zip(top["destination.ip"], top["destination.port"], top["count"],
                                      top["sources"], strict=True)]


def stats_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """Per-rule ``hits``/``allowed``/``denied``/``first``/``last`` from ECS events (what the
    engine's per-rule aggregation gives), for tests and simulations.

    Examples
    --------
    >>> ev = pd.DataFrame({"rule.id": ["1", "1", "2"], "event.action": ["pass", "drop", "drop"],
    ...                    "@timestamp": pd.to_datetime([1, 2, 3], unit="s", utc=True)})
    >>> stats_from_events(ev)[["hits", "denied"]].values.tolist()
    [[2, 1], [1, 1]]
    """
    denied = events["event.action"].astype(str).str.lower().isin(["drop", "reject", "deny"])
    g = events.assign(_denied=denied.astype(int)).groupby(events["rule.id"].astype(str))
    out = pd.DataFrame({"hits": g.size(), "denied": g["_denied"].sum(),
                        "first": g["@timestamp"].min(), "last": g["@timestamp"].max()})
    out["allowed"] = out["hits"] - out["denied"]
    out.index.name = "rule"
    return out


def flows_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """Per (rule, source, destination, transport, port) event counts from ECS events.

    Examples
    --------
    >>> ev = pd.DataFrame({"rule.id": ["1", "1"], "source.ip": ["a", "a"],
    ...                    "destination.ip": ["b", "b"], "network.transport": ["tcp", "tcp"],
    ...                    "destination.port": [22, 22]})
    >>> flows_from_events(ev)["count"].tolist()
    [2]
    """
    keys = ["rule.id", "source.ip", "destination.ip", "network.transport", "destination.port"]
    ev = events[keys].copy()
    ev["rule.id"] = ev["rule.id"].astype(str)
    ev["destination.port"] = pd.to_numeric(ev["destination.port"], errors="coerce").fillna(0
                                                                                         ).astype(int)
    ev["network.transport"] = ev["network.transport"].fillna("").astype(str)
    return ev.groupby(keys, sort=True).size().rename("count").reset_index()
