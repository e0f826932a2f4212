"""Incidents: the findings of one attack, across entities and windows, grouped into one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ml.detectors import SEVERITIES, Finding

MEDIUM_UP = frozenset(SEVERITIES[1:])
#: Entity types that name an address, rule or host an analyst can act on: only their findings
#: open an incident (the port-vector autoencoder's "all ports" joins one, or stands alone
#: at ``low``).
ADDRESSED = frozenset({"source", "service", "rule", "host", "target"})

#: Entity types whose findings describe a standing condition of an address rather than one
#: burst: once reported, their lead documents are written again only when the level rises.
STANDING = frozenset({"target"})

#: What an incident is called, from its leading finding: (entity type, leading feature).
KINDS: dict[tuple[str, str], str] = {
    ("source", "events"): "connection burst",
    ("source", "dst_ips"): "horizontal scan",
    ("source", "dst_ports"): "port scan",
    ("source", "denied_share"): "denied attempts",
    ("source", "denied"): "denied attempts",
    ("source", "bytes_out"): "outbound transfer",
    ("source", "packets_out"): "outbound transfer",
    ("source", "new_peer_share"): "lateral movement",
    ("source", "new_peers"): "lateral movement",
    ("source", "new_external_peers"): "new external contact",
    ("service", "events"): "flood or brute force",
    ("service", "src_ips"): "many sources on one service",
    ("service", "packets"): "flood",
    ("service", "bytes"): "volume spike",
    ("service", "failed_share"): "failed connections",
    ("service", "first_seen"): "new service",
    ("rule", "hits"): "rule hit spike",
    ("rule", "denied_share"): "rule deny spike",
    ("host", "events"): "event spike",
    ("host", "denied"): "deny spike",
    ("target", "unanswered_sources"): "many sources probing one host",
}


def node(finding: Finding) -> str:
    """The address (or rule, host) a finding is about: the grouping key of its attack.

    >>> from ml.detectors import Finding
    >>> node(Finding("service", "10.0.0.5:22", 5, 3, "medium", {}, {}))
    'ip:10.0.0.5'
    """
    if finding.entity_type in ("source", "target"):
        return f"ip:{finding.entity}"
    if finding.entity_type == "service":
        return f"ip:{finding.entity.rsplit(':', 1)[0]}"
    return f"{finding.entity_type}:{finding.entity}"


@dataclass
class Incident:
    """One attack: where it started, what it touches, and the findings behind it."""

    key: str
    first_ms: int
    last_ms: int
    lead: str
    kind: str
    severity: str = "low"
    score: float = 0.0
    evidence: list = field(default_factory=list)
    keys: set = field(default_factory=set)
    sources: Counter = field(default_factory=Counter)
    targets: Counter = field(default_factory=Counter)
    max_sources: int = 0
    windows: list = field(default_factory=list)
    members: list = field(default_factory=list)
    member_count: int = 0
    folded: int = 0
    reported: int = 0           # the highest severity (index) of a lead document written
    open: bool = True


@dataclass
class Member:
    """A finding with the incident it belongs to and the severity it is reported with."""

    finding: Finding
    incident: Incident | None
    severity: str
    lead: bool


class IncidentTracker:
    """Groups each window's findings into incidents, one per attack.

    Findings belong together when they are about the same address (a target service, a
    source) or are linked by the traffic between them (a source's sampled peers, a service's
    top sources), in the same window or within ``gap_windows`` of the incident's last one.
    Many sources on one target therefore make one incident on that target.

    An incident is opened by a medium-or-higher finding on an address, rule or host; its lead
    is that of its strongest such finding. In every window, the strongest burst on the lead
    address (or, when the lead shows only its standing condition, the strongest burst tied to
    it) keeps its severity, and so does its strongest ``STANDING`` condition when that raises
    the incident's (its first window, an escalation); every other member is reported at
    ``low`` (the incident carries the severity), and beyond ``max_members`` per window members
    are only counted (folded).

    Examples
    --------
    >>> from ml.detectors import Finding
    >>> t = IncidentTracker(window_ms=60_000)
    >>> flood = Finding("service", "10.0.0.5:80", 40, 3, "critical", {"src_ips": 900}, {})
    >>> bots = [Finding("source", f"203.0.113.{i}", 4, 3, "medium", {}, {}) for i in range(3)]
    >>> links = {("source", f"203.0.113.{i}"): ["10.0.0.5"] for i in range(3)}
    >>> out = t.update([flood, *bots], links, 0)
    >>> len({m.incident.key for m in out}), [m.severity for m in out]
    (1, ['critical', 'low', 'low', 'low'])
    """

    def __init__(self, window_ms: int, gap_windows: int = 120, max_members: int = 20,
                 max_listed: int = 200):
        self.window_ms = window_ms
        self.gap_windows = gap_windows
        self.max_members = max_members
        self.max_listed = max_listed
        self.open: list[Incident] = []

    def _expire(self, start_ms: int) -> None:
        horizon = start_ms - (self.gap_windows + 1) * self.window_ms
        for inc in self.open:
            if inc.last_ms < horizon:
                inc.open = False
        self.open = [i for i in self.open if i.open]

    def update(self, findings: Iterable[Finding], links: Mapping[tuple[str, str], list],
               start_ms: int) -> list[Member]:
        """Assign one window's findings to incidents; returns them in order, with the
        severity each is to be reported with."""
        self._expire(start_ms)
        findings = list(findings)
        parent: dict[str, str] = {}

        def find(a: str) -> str:
            while parent.setdefault(a, a) != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        def union(a: str, b: str) -> None:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)

        # an incident goes on through its lead address (members come and go with the attack)
        by_key = {inc.lead: inc for inc in sorted(self.open, key=lambda i: -i.first_ms)}
        nodes = {node(f) for f in findings}
        for f in findings:
            a = node(f)
            find(a)
            for peer in links.get((f.entity_type, f.entity), ()):
                b = f"ip:{peer}"
                if b in nodes or b in by_key:
                    union(a, b)
        groups: dict[str, list[Finding]] = {}
        for f in findings:
            groups.setdefault(find(node(f)), []).append(f)
        out: dict[int, Member] = {}
        for root, group in groups.items():
            keys = {k for k in parent if find(k) == root}
            touched = [by_key[k] for k in keys if k in by_key]
            inc = min(touched, key=lambda i: i.first_ms) if touched else None
            if inc is None:
                if not any(f.severity in MEDIUM_UP and f.entity_type in ADDRESSED
                           for f in group):
                    for f in group:     # what names no address is not an alert on its own
                        sev = f.severity if f.entity_type in ADDRESSED else "low"
                        out[id(f)] = Member(f, None, sev, False)
                    continue
                strongest = max((f for f in group if f.entity_type in ADDRESSED),
                                key=lambda f: f.score)
                lead = node(strongest)
                inc = Incident(key=lead, first_ms=start_ms, last_ms=start_ms, lead=lead,
                               kind=_kind(strongest))
                self.open.append(inc)
            self._add(inc, group, keys, start_ms, out)
        return [out[id(f)] for f in findings]

    def _add(self, inc: Incident, group: list[Finding], keys: set, start_ms: int,
             out: dict) -> None:
        inc.keys |= keys
        inc.last_ms = max(inc.last_ms, start_ms)
        on_lead = [f for f in group if node(f) == inc.lead]
        # the strongest burst and the strongest standing condition on the lead address are
        # judged apart: a flood on a host under background scanning is still reported, and so
        # is a new attacker tied to a host whose only finding is its standing scanning
        standing = [f for f in on_lead if f.entity_type in STANDING]
        bursts = [f for f in on_lead if f.entity_type not in STANDING] or [
            f for f in group if f.entity_type in ADDRESSED - STANDING]
        tops = {id(max(fs, key=lambda f: f.score)) for fs in (standing, bursts) if fs}
        written = 0
        serious = False
        for f in sorted(group, key=lambda f: -f.score):
            serious |= f.severity in MEDIUM_UP
            if SEVERITIES.index(f.severity) > SEVERITIES.index(inc.severity):
                inc.severity = f.severity
            if f.score > inc.score:
                inc.score = float(f.score)
                inc.evidence = [dict(c, entity=f.entity) for c in f.contributors]
            if f.entity_type == "source":
                _count(inc.sources, f.entity, self.max_listed)
            elif f.entity_type == "service":
                _count(inc.targets, f.entity, self.max_listed)
                inc.max_sources = max(inc.max_sources, int(f.observed.get("src_ips", 0)))
            elif f.entity_type != "target":     # a probed host: the lead names it
                _count(inc.targets, f"{f.entity_type}:{f.entity}", self.max_listed)
            inc.member_count += 1
            top = id(f) in tops
            if top and (f.entity_type not in STANDING
                        or SEVERITIES.index(f.severity) > inc.reported):
                # a standing condition (a host under Internet scanning for hours) is reported
                # when it raises the incident's severity; while it goes on the incident
                # carries it. Other leads keep their severity every window.
                inc.reported = max(inc.reported, SEVERITIES.index(f.severity))
                out[id(f)] = Member(f, inc, f.severity, node(f) == inc.lead)
            elif top:
                out[id(f)] = Member(f, inc, "low", True)
            elif written < self.max_members:
                out[id(f)] = Member(f, inc, "low", False)
                written += 1
            else:
                out[id(f)] = Member(f, inc, "", False)     # folded: counted, not written
                inc.folded += 1
        if serious and (not inc.windows or inc.windows[-1] != start_ms):
            inc.windows.append(start_ms)
            del inc.windows[: -self.max_listed]


def _count(counter: Counter, key: str, limit: int) -> None:
    """Count ``key``; past ``limit`` distinct keys, new ones count under ``"(others)"``."""
    if key in counter or len(counter) < limit:
        counter[key] += 1
    else:
        counter["(others)"] += 1


def _kind(finding: Finding) -> str:
    lead = finding.contributors[0]["feature"] if finding.contributors else ""
    return KINDS.get((finding.entity_type, lead), f"{finding.entity_type} anomaly")
