"""The DFW rule set: ordered rules with groups and services, evaluated first-match over numpy arrays."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import numpy as np
import yaml

from ml.errors import ModelInputError

PROTO_NUMBERS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50,
                 "ipv6-icmp": 58, "sctp": 132}
ACTIONS = ("PASS", "DROP", "REJECT")
DIRECTIONS = ("IN", "OUT", "IN_OUT")


@dataclass(frozen=True)
class Service:
    """One service term: a protocol number and an inclusive destination-port range (or any)."""

    proto: int | None          # None: any protocol
    lo: int = 0
    hi: int = 65535

    @classmethod
    def parse(cls, text: str) -> Service:
        """Parse ``tcp/443``, ``udp/1000-2000``, ``icmp``, ``proto/50`` or ``any``.

        Examples
        --------
        >>> Service.parse("tcp/8000-8100")
        Service(proto=6, lo=8000, hi=8100)
        >>> Service.parse("any").proto is None
        True
        """
        t = text.strip().lower()
        if t == "any":
            return cls(None)
        name, _, ports = t.partition("/")
        if name == "proto":
            return cls(int(ports))
        if name not in PROTO_NUMBERS:
            raise ModelInputError(f"unknown service {text!r}",
                             hint="use tcp/PORT, udp/PORT, icmp, igmp, ipv6-icmp, proto/N or any")
        proto = PROTO_NUMBERS[name]
        if not ports:
            return cls(proto)
        lo, _, hi = ports.partition("-")
        return cls(proto, int(lo), int(hi or lo))

    def text(self) -> str:
        if self.proto is None:
            return "any"
        name = {v: k for k, v in PROTO_NUMBERS.items()}.get(self.proto, None)
        if name is None:
            return f"proto/{self.proto}"
        if self.proto not in (6, 17, 132) or (self.lo, self.hi) == (0, 65535):
            return name
        return f"{name}/{self.lo}" if self.lo == self.hi else f"{name}/{self.lo}-{self.hi}"


@dataclass
class Rule:
    id: str
    name: str
    sources: list[str]
    destinations: list[str]
    services: list[str]
    action: str
    direction: str = "IN_OUT"
    ruleset: str = "domain-c8"
    tag: str = ""
    applied_to: list[str] = field(default_factory=lambda: ["DFW"])
    broad: bool = False          # scenario intent: an overly broad rule (recorded in truth)

    def as_dict(self) -> dict:
        d = {"id": self.id, "ruleset": self.ruleset, "name": self.name}
        if self.tag:
            d["tag"] = self.tag
        d.update({"sources": list(self.sources), "destinations": list(self.destinations),
                  "services": list(self.services), "action": self.action,
                  "direction": self.direction, "applied_to": list(self.applied_to)})
        return d


class RuleSet:
    """Ordered rules plus the groups they name; ``evaluate`` gives the first match per session.

    Examples
    --------
    >>> rs = RuleSet([Rule("1", "dns", ["10.0.0.0/8"], ["any"], ["udp/53"], "PASS"),
    ...               Rule("2", "default", ["any"], ["any"], ["any"], "DROP")], {})
    >>> import numpy as np
    >>> addr_v4 = np.array([int(ipaddress.ip_address("10.1.1.1")), 0x08080808])
    >>> rs.compile(addr_v4, np.array([False, False]), ["10.1.1.1", "8.8.8.8"])
    >>> idx, _ = rs.evaluate(np.array([0, 1]), np.array([1, 0]), np.array([17, 17]),
    ...                      np.array([53, 53]), np.array([1, 0]))
    >>> [rs.rules[i].id for i in idx]
    ['1', '2']
    """

    def __init__(self, rules: list[Rule], groups: dict[str, list[str]]) -> None:
        self.rules = rules
        self.groups = groups
        ids = [r.id for r in rules]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ModelInputError(f"rule ids are not unique: {dup}", hint="give every rule its own id")
        self._src: np.ndarray | None = None

    # -- matching ---------------------------------------------------------------------------
    def _members(self, term: str) -> list[str] | None:
        """Addresses/CIDRs a source or destination term stands for; None means any."""
        if term == "any":
            return None
        if term in self.groups:
            return self.groups[term]
        try:
            ipaddress.ip_network(term, strict=False)
        except ValueError as exc:
            raise ModelInputError(f"rule term {term!r} is neither a group, a CIDR nor 'any'",
                             hint="define the group under 'groups' in the rule set") from exc
        return [term]

    def _mask(self, terms: list[str], v4: np.ndarray, v6: np.ndarray, text: list[str]) -> np.ndarray:
        mask = np.zeros(len(v4), dtype=bool)
        for term in terms:
            members = self._members(term)
            if members is None:
                return np.ones(len(v4), dtype=bool)
            for m in members:
                net = ipaddress.ip_network(m, strict=False)
                if net.version == 4:
                    bits = 32 - net.prefixlen
                    hit = (~v6) & ((v4 >> bits) == (int(net.network_address) >> bits))
                    mask |= hit
                else:
                    for i in np.flatnonzero(v6):
                        if ipaddress.ip_address(_compress(text[i])) in net:
                            mask[i] = True
        return mask

    def compile(self, v4: np.ndarray, v6: np.ndarray, text: list[str]) -> None:
        """Precompute per-rule source/destination membership over the address table."""
        self._src = np.stack([self._mask(r.sources, v4, v6, text) for r in self.rules])
        self._dst = np.stack([self._mask(r.destinations, v4, v6, text) for r in self.rules])
        self._svc = [[Service.parse(s) for s in r.services] for r in self.rules]
        self._dir = [DIRECTIONS.index(r.direction) for r in self.rules]
        self._act = np.array([ACTIONS.index(r.action) for r in self.rules], dtype=np.int8)

    def evaluate(self, src: np.ndarray, dst: np.ndarray, proto: np.ndarray, dport: np.ndarray,
                 direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First-match rule index and action index (into ``ACTIONS``) for each session.

        ``direction`` is 0 for IN, 1 for OUT. A session no rule matches gets rule -1 and DROP.
        """
        assert self._src is not None, "call compile() first"
        n = len(src)
        rule = np.full(n, -1, dtype=np.int32)
        open_ = np.ones(n, dtype=bool)
        for r in range(len(self.rules)):
            if not open_.any():
                break
            d = self._dir[r]
            m = open_.copy()
            if d != 2:
                m &= direction == d
            m &= self._src[r][src]
            m &= self._dst[r][dst]
            svc_m = np.zeros(n, dtype=bool)
            for s in self._svc[r]:
                if s.proto is None:
                    svc_m[:] = True
                    break
                hit = proto == s.proto
                if s.proto in (6, 17, 132) and (s.lo, s.hi) != (0, 65535):
                    hit &= (dport >= s.lo) & (dport <= s.hi)
                svc_m |= hit
            m &= svc_m
            rule[m] = r
            open_ &= ~m
        action = np.where(rule >= 0, self._act[np.maximum(rule, 0)], 1).astype(np.int8)
        return rule, action

    # -- documents ----------------------------------------------------------------------------
    def as_dict(self) -> dict:
        return {"format": "fwsiem-rules/1", "groups": self.groups,
                "rules": [r.as_dict() for r in self.rules]}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.as_dict(), sort_keys=False, default_flow_style=None, width=100)


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _compress(text: str) -> str:
    return str(ipaddress.ip_address(text))


def covers(outer: list[str], inner: list[str], groups: dict[str, list[str]]) -> bool:
    """Whether the address terms ``outer`` cover every address of ``inner``.

    Examples
    --------
    >>> covers(["10.0.0.0/8"], ["10.1.2.3", "10.9.0.0/16"], {})
    True
    >>> covers(["10.0.0.0/8"], ["any"], {})
    False
    """
    def nets(terms):
        out = []
        for t in terms:
            if t == "any":
                return None
            for m in groups.get(t, [t]):
                out.append(ipaddress.ip_network(m, strict=False))
        return out

    o, i = nets(outer), nets(inner)
    if o is None:
        return True
    if i is None:
        return False
    return all(any(n.version == p.version and n.subnet_of(p) for p in o) for n in i)


def services_cover(outer: list[str], inner: list[str]) -> bool:
    """Whether the services ``outer`` cover every service in ``inner``.

    Examples
    --------
    >>> services_cover(["any"], ["tcp/22"]), services_cover(["tcp/1-1024"], ["tcp/22", "udp/53"])
    (True, False)
    """
    o = [Service.parse(s) for s in outer]
    if any(s.proto is None for s in o):
        return True
    for s in (Service.parse(x) for x in inner):
        if s.proto is None:
            return False
        if not any(p.proto == s.proto and p.lo <= s.lo and s.hi <= p.hi for p in o):
            return False
    return True


def build_ruleset(rules_cfg: dict, dc, allowlist_rules: list[Rule]) -> RuleSet:
    """Expand the scenario's ``[[rules.list]]`` (``for_each = "org"`` templates, the allow-list
    marker) into a RuleSet over the datacenter's groups."""
    ruleset = str(rules_cfg.get("ruleset", "domain-c8"))
    rules: list[Rule] = []
    for spec in rules_cfg.get("list", []):
        if spec.get("allowlists"):
            rules.extend(allowlist_rules)
            continue
        ks = range(len(dc.orgs)) if spec.get("for_each") == "org" else [None]
        for k in ks:
            def sub(s: str, k=k) -> str:
                return s if k is None else s.replace("{org}", dc.orgs[k])
            rid = str(spec["id"]) if k is None else str(int(spec["id"]) + k)
            srcs = [sub(s) for s in spec.get("sources", ["any"])]
            dsts = [sub(s) for s in spec.get("destinations", ["any"])]
            named = [t for t in srcs + dsts if t in dc.groups]
            if any(not dc.groups[t] for t in named):
                continue  # a template group this org does not have (e.g. no mail server)
            unknown = [t for t in srcs + dsts if t not in dc.groups and t != "any"
                       and not _is_network(t)]
            if unknown:
                raise ModelInputError(f"rule {rid}: unknown group(s) {unknown}",
                                 hint="see docs/simulator.md for the groups a scenario can name")
            rules.append(Rule(
                id=rid, name=sub(spec.get("name", f"rule-{rid}")), sources=srcs,
                destinations=dsts, services=list(spec.get("services", ["any"])),
                action=str(spec.get("action", "PASS")).upper(),
                direction=str(spec.get("direction", "IN_OUT")).upper(),
                ruleset=str(spec.get("ruleset", ruleset)), tag=sub(spec.get("tag", "")),
                broad=bool(spec.get("broad", False))))
    used = {t for r in rules for t in r.sources + r.destinations}
    groups = {g: m for g, m in dc.groups.items() if g in used}
    return RuleSet(rules, groups)
