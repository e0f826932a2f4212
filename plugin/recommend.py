"""Recommendations from the cluster: rule hygiene and learned allow-lists, as documents and exports."""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml import allowlist as al
from ml import hygiene as hy
from ml.cidr import NoCoverError, group_cidrs
from plugin.config import Config, parse_duration, parse_time
from plugin.errors import InputError, InsufficientData
from plugin.rules import as_hygiene_rule, load_rules
from plugin.store import doc_id

log = logging.getLogger(__name__)

#: Defaults for the ``[recommend]`` configuration section.
DEFAULTS = {
    "period": "7d",
    "internal_networks": list(al.DEFAULT_INTERNAL),
    "org_prefixlen": 16,
    "dominant_share": 0.15,
    "dominant_ratio": 1.5,
    "broad_factor": 1000.0,
    "broad_min_hits": 20,
    "sensitive_ports": list(hy.SENSITIVE_PORTS),
    "spike_factor": 10.0,
    "spike_min_denied": 50,
    "top_dropped": 10,
    "max_cidrs": 10,
    "min_prefixlen": 24,
    "allow_threshold": 0.5,
    "composite_size": 2000,
}
SEVERITY_RANK = {"high": 3, "medium": 2, "low": 1, "info": 0}
KIND_OF = {"unused": "remove_rule", "shadowed": "remove_rule", "overly_broad": "tighten_rule",
           "dominant": "investigate", "top_dropped": "investigate", "deny_spike": "quarantine",
           "allowlist": "allow_list"}
DENIED = {"term": {"event.type": "denied"}}


def settings(config: Config) -> dict:
    out = dict(DEFAULTS)
    out.update(config.section("recommend"))
    return out


# -- the period ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Period:
    since: dt.datetime
    until: dt.datetime

    @classmethod
    def of(cls, since: str | None, until: str | None, default: str = "7d",
           now: dt.datetime | None = None) -> Period:
        """Relative times are floored to the hour so re-running within an hour gives the same ids."""
        now = now or dt.datetime.now(dt.timezone.utc)
        u = parse_time(until, now) or now
        s = parse_time(since, now) or (u - dt.timedelta(seconds=parse_duration(default)))
        if until is None or str(until).startswith("now"):
            u = u.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        if since is None or str(since).startswith("now") or not re.search(r"[T:-]", str(since)):
            s = s.replace(minute=0, second=0, microsecond=0)
        if s >= u:
            raise InputError(f"--since {s.isoformat()} is not before --until {u.isoformat()}")
        return cls(s, u)

    def query(self, *extra: dict) -> dict:
        rng = {"range": {"@timestamp": {"gte": self.since.isoformat(), "lt": self.until.isoformat()}}}
        return {"bool": {"filter": [rng, *extra]}}

    def as_dict(self) -> dict:
        return {"since": self.since.isoformat(), "until": self.until.isoformat()}

    @property
    def key(self) -> str:
        return f"{self.since.isoformat()}/{self.until.isoformat()}"


# -- aggregations ---------------------------------------------------------------------------------
def rule_stats(store, index: str, period: Period, size: int = 2000) -> pd.DataFrame:
    """Per rule: hits, allowed, denied, first and last hit, share of all hits."""
    rows = []
    aggs = {"denied": {"filter": DENIED}, "first": {"min": {"field": "@timestamp"}},
            "last": {"max": {"field": "@timestamp"}}}
    for b in store.composite(index, [{"rule": {"terms": {"field": "rule.id"}}}], aggs=aggs,
                             query=period.query(), size=size):
        n = int(b["doc_count"])
        d = int(b["denied"]["doc_count"])
        rows.append({"rule": str(b["key"]["rule"]), "hits": n, "denied": d, "allowed": n - d,
                     "first": b["first"].get("value_as_string"),
                     "last": b["last"].get("value_as_string")})
    df = pd.DataFrame(rows, columns=["rule", "hits", "denied", "allowed", "first", "last"])
    df = df.set_index("rule")
    total = df["hits"].sum()
    df["share"] = df["hits"] / total if total else 0.0
    return df


FLOW_SOURCES = [
    {"rule.id": {"terms": {"field": "rule.id"}}},
    {"source.ip": {"terms": {"field": "source.ip", "missing_bucket": True}}},
    {"destination.ip": {"terms": {"field": "destination.ip", "missing_bucket": True}}},
    {"network.transport": {"terms": {"field": "network.transport", "missing_bucket": True}}},
    {"destination.port": {"terms": {"field": "destination.port", "missing_bucket": True}}},
]


def rule_flows(store, index: str, period: Period, size: int = 2000) -> pd.DataFrame:
    """Per (rule, source, destination, transport, port): the count of events."""
    rows = [{**b["key"], "count": int(b["doc_count"])}
            for b in store.composite(index, FLOW_SOURCES, query=period.query(), size=size)]
    cols = [list(s)[0] for s in FLOW_SOURCES] + ["count"]
    df = pd.DataFrame(rows, columns=cols)
    df = df.dropna(subset=["source.ip", "destination.ip"])
    df["rule.id"] = df["rule.id"].astype(str)
    df["network.transport"] = df["network.transport"].fillna("")
    df["destination.port"] = df["destination.port"].fillna(0).astype(int)
    return df.reset_index(drop=True)


def deny_hourly(store, index: str, period: Period, internal: Sequence[str],
                size: int = 2000) -> pd.DataFrame:
    """Denied events per internal source VM and hour."""
    q = period.query(DENIED, {"terms": {"source.ip": list(internal)}})
    sources = [{"vm": {"terms": {"field": "source.ip"}}},
               {"hour": {"date_histogram": {"field": "@timestamp", "fixed_interval": "1h"}}}]
    rows = [{"vm": b["key"]["vm"], "hour": int(b["key"]["hour"]), "denied": int(b["doc_count"])}
            for b in store.composite(index, sources, query=q, size=size)]
    return pd.DataFrame(rows, columns=["vm", "hour", "denied"])


def dropped_targets(store, index: str, period: Period, size: int = 2000) -> pd.DataFrame:
    sources = [{"destination.ip": {"terms": {"field": "destination.ip"}}},
               {"destination.port": {"terms": {"field": "destination.port",
                                               "missing_bucket": True}}}]
    rows = [{"destination.ip": b["key"]["destination.ip"],
             "destination.port": b["key"]["destination.port"] or 0,
             "count": int(b["doc_count"]), "sources": int(b["src"]["value"])}
            for b in store.composite(index, sources, aggs={"src": {"cardinality": {
                "field": "source.ip"}}}, query=period.query(DENIED), size=size)]
    return pd.DataFrame(rows, columns=["destination.ip", "destination.port", "count", "sources"])


def fine_table(store, index: str, period: Period, internal: Sequence[str],
               size: int = 2000) -> pd.DataFrame:
    """The allow-list fine table (remote, vm, port, hour) from two composite aggregations."""
    parts = {}
    for side in ("sent", "recv"):
        spec = al.fine_aggregations(side, internal)
        q = period.query(*spec["query"]["bool"]["filter"])
        parts[side] = list(store.composite(index, spec["sources"], aggs=spec["aggs"], query=q,
                                           size=size))
    return al.fine_table_from_buckets(parts["sent"], parts["recv"])


# -- documents ------------------------------------------------------------------------------------
def recommendation(finding: str, target_type: str, target: str, period: Period, *,
                   evidence: dict, proposal: dict, severity: str, confidence: float,
                   model: dict, data: dict, title: str) -> dict:
    """A recommendation document (DESIGN.md "Data model") with its deterministic ``_id``."""
    return {
        "_id": doc_id("recommendation", finding, target_type, target, period.key),
        "@timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": KIND_OF[finding], "finding": finding, "title": title,
        "target": _target(target_type, target),
        "evidence": evidence, "proposal": proposal, "severity": severity,
        "severity_score": SEVERITY_RANK.get(severity, 0),
        "confidence": round(float(confidence), 4), "model": model, "data": data,
        "period": {"start": period.since.isoformat(), "end": period.until.isoformat()},
    }


def _target(target_type: str, value: str) -> dict:
    out = {"type": target_type, "value": value}
    if target_type == "rule":
        out["rule_id"] = value
    elif target_type in ("endpoint", "destination"):
        ip, _, port = value.rpartition(":")
        out.update({"ip": ip, "port": int(port)})
    elif target_type == "host":
        out["ip"] = value
    return out


def _rule_json(rule_doc: Mapping | None, narrowed: Mapping | None = None) -> dict:
    """An NSX-T Policy API rule body for a rule document (optionally narrowed)."""
    src = (narrowed or {}).get("sources") or (rule_doc or {}).get("sources") or ["any"]
    dst = (narrowed or {}).get("destinations") or (rule_doc or {}).get("destinations") or ["any"]
    svc = (narrowed or {}).get("services") or (rule_doc or {}).get("services") or ["any"]
    rid = (narrowed or {}).get("id") or (rule_doc or {}).get("rule", {}).get("id")
    action = str((rule_doc or {}).get("action") or (narrowed or {}).get("action") or "PASS")
    return {
        "resource_type": "Rule", "id": f"fwsiem-{rid}", "display_name": f"rule {rid}",
        "source_groups": ["ANY"] if "any" in src else src,
        "destination_groups": ["ANY"] if "any" in dst else dst,
        "services": ["ANY"] if "any" in svc else [],
        "service_entries": [] if "any" in svc else service_entries(svc),
        "action": {"PASS": "ALLOW", "ALLOW": "ALLOW", "ACCEPT": "ALLOW"}.get(action.upper(),
                                                                             action.upper()),
        "direction": (rule_doc or {}).get("direction", "IN_OUT"), "scope": ["ANY"],
    }


def service_entries(services: Iterable[str]) -> list[dict]:
    """NSX-T service entries for ``tcp/443``-style services."""
    out = []
    by_proto: dict[str, list[str]] = {}
    for s in services:
        proto, _, port = str(s).partition("/")
        if proto in ("tcp", "udp") and port:
            by_proto.setdefault(proto, []).append(port)
        elif proto in ("icmp", "ipv6-icmp"):
            out.append({"resource_type": "ICMPTypeServiceEntry", "id": proto,
                        "protocol": "ICMPv6" if proto == "ipv6-icmp" else "ICMPv4"})
        elif proto in ("tcp", "udp"):
            by_proto.setdefault(proto, [])
    for proto, ports in by_proto.items():
        out.append({"resource_type": "L4PortSetServiceEntry", "id": f"{proto}-ports",
                    "l4_protocol": proto.upper(), "destination_ports": ports})
    return out


def hygiene_recommendations(store, config: Config, period: Period) -> list[dict]:
    s = settings(config)
    events = config.index("events_pattern")
    size = int(s["composite_size"])
    rule_docs = load_rules(store, config.index("rules"))
    by_id = {d["rule"]["id"]: d for d in rule_docs}
    rules = [as_hygiene_rule(d) for d in rule_docs]
    stats = rule_stats(store, events, period, size)
    flows = rule_flows(store, events, period, size)
    total = int(stats["hits"].sum())
    data = {"index": events, "events": total, "rules_index": config.index("rules"),
            "rules": len(rules), **period.as_dict()}
    model = {"name": "hygiene", "version": "1"}
    out = []
    findings = hy.rule_findings(
        rules, stats[["hits", "allowed", "denied"]], flows,
        dominant_share=float(s["dominant_share"]), dominant_ratio=float(s["dominant_ratio"]),
        broad_factor=float(s["broad_factor"]), broad_min_hits=int(s["broad_min_hits"]),
        sensitive_ports=[int(p) for p in s["sensitive_ports"]],
        narrow_k=int(s["max_cidrs"]), narrow_min_prefixlen=int(s["min_prefixlen"]))
    for f in findings:
        rid = f["rule"]
        ev = dict(f["evidence"])
        if rid in stats.index:
            st = stats.loc[rid]
            ev.update({"hits": int(st["hits"]), "allowed": int(st["allowed"]),
                       "denied": int(st["denied"]), "first_seen": st["first"], "last_seen": st["last"],
                       "share": round(float(st["share"]), 4)})
            fr = flows[flows["rule.id"] == rid]
            if len(fr):
                ev["top_sources"] = _top(fr, "source.ip")
                ev["top_destinations"] = _top(fr, "destination.ip")
                ev["top_services"] = _top(fr.assign(service=fr["network.transport"] + "/" +
                                                    fr["destination.port"].astype(str)), "service")
        proposal = dict(f["proposal"])
        if f["kind"] == "overly_broad":
            proposal["nsx"] = _rule_json(by_id.get(rid), f["proposal"]["narrowed"])
        elif f["kind"] in ("unused", "shadowed"):
            proposal["nsx"] = {"method": "DELETE", "rule": _rule_json(by_id.get(rid))}
        title = {"unused": f"rule {rid} matched nothing: remove it",
                 "shadowed": f"rule {rid} is shadowed by rule {ev.get('shadowed_by')}: remove it",
                 "overly_broad": f"rule {rid} allows far more than its traffic: tighten it",
                 "dominant": f"rule {rid} takes {ev.get('share', 0):.0%} of all hits: "
                             "investigate"}[f["kind"]]
        conf = {"unused": 0.9 if total else 0.3, "shadowed": 0.99, "overly_broad": 0.7,
                "dominant": 0.8}[f["kind"]]
        out.append(recommendation(f["kind"], "rule", rid, period, evidence=ev, proposal=proposal,
                                  severity=f["severity"], confidence=conf, model=model,
                                  data=data, title=title))
    for spike in hy.deny_spikes(deny_hourly(store, events, period, s["internal_networks"], size),
                                factor=float(s["spike_factor"]),
                                min_denied=int(s["spike_min_denied"])):
        spike["peak_hour"] = dt.datetime.fromtimestamp(spike["peak_hour"] / 1000,
                                                       dt.timezone.utc).isoformat()
        out.append(recommendation(
            "deny_spike", "host", spike["vm"], period, evidence=spike,
            proposal={"action": "quarantine", "host": spike["vm"],
                      "nsx": {"resource_type": "Rule", "id": f"fwsiem-quarantine-{spike['vm']}",
                              "source_groups": [spike["vm"]], "destination_groups": ["ANY"],
                              "services": ["ANY"], "action": "DROP", "direction": "IN_OUT",
                              "scope": ["ANY"]},
                      "iptables": [f"-A FORWARD -s {spike['vm']} -j DROP"]},
            severity="high", confidence=min(0.99, 0.5 + spike["peak"] / (20 * max(
                1.0, spike["usual"]) * float(s["spike_factor"]))), model=model, data=data,
            title=f"{spike['vm']}: denied traffic spiked to {spike['peak']}/h "
                  f"(usually {spike['usual']:.0f}): quarantine candidate"))
    drops = dropped_targets(store, events, period, size)
    for d in hy.top_dropped(drops, n=int(s["top_dropped"])):
        out.append(recommendation(
            "top_dropped", "destination", d["target"], period, evidence=d,
            proposal={"action": "investigate", "destination": d["destination"], "port": d["port"],
                      "reason": "most dropped traffic targets it: a misconfigured client, a "
                                "missing rule or an attack"},
            severity="medium" if d["share"] >= 0.2 else "info", confidence=d["share"],
            model=model, data=data,
            title=f"{d['share']:.0%} of dropped traffic targets {d['target']} "
                  f"from {d['sources']} sources"))
    return out


def _top(df: pd.DataFrame, col: str, n: int = 5) -> list[dict]:
    top = df.groupby(col)["count"].sum().sort_values(ascending=False).head(n)
    return [{"value": str(k), "count": int(v)} for k, v in top.items()]


# -- allow-lists ----------------------------------------------------------------------------------
def rule_allowlists(rule_docs: Sequence[Mapping], endpoints: Iterable[tuple[str, int]]
                    ) -> dict[tuple[str, int], list[str]]:
    """Expert allow-lists read from the rule set: for each observed endpoint, the sources of the
    first PASS rule with specific sources that names the endpoint's address and port (and that no
    earlier rule with any source pre-empts)."""
    rules = [as_hygiene_rule(d) for d in rule_docs]
    out: dict[tuple[str, int], list[str]] = {}
    for vm, port in endpoints:
        allowed: list[str] = []
        for r in rules:
            if r.disabled or not r.destinations or not r.services:
                continue
            if not hy._in(vm, r.destinations) or not any(
                    s.matches("tcp", port) or s.matches("udp", port) for s in r.services):
                continue
            if any(s.lo == 0 and s.hi == 65535 for s in r.services):
                continue
            if not r.sources:
                break  # open to any source: not an allow-list
            if r.allows:
                allowed.extend(str(n) for n in r.sources)
            else:
                break
        if allowed:
            out[(vm, int(port))] = sorted(set(allowed))
    return out


def allowlist_recommendations(store, config: Config, period: Period, *,
                              labels: Mapping[tuple[str, int], list[str]] | None = None,
                              random_state: int = 0) -> list[dict]:
    """Train on endpoints with an allow-list, propose CIDR allow-lists for the others."""
    s = settings(config)
    events = config.index("events_pattern")
    fine = fine_table(store, events, period, s["internal_networks"], int(s["composite_size"]))
    if fine.empty:
        raise InsufficientData(f"no traffic to internal endpoints in {events} between "
                               f"{period.since.isoformat()} and {period.until.isoformat()}",
                               hint="widen --since/--until or check [recommend] internal_networks")
    feats = al.pair_features(fine, org_of=lambda vm: al.default_org(vm, int(s["org_prefixlen"])),
                             period=(int(period.since.timestamp() * 1000),
                                     int(period.until.timestamp() * 1000)))
    endpoints = sorted({(vm, int(p)) for vm, p, _ in feats.index})
    if labels is None:
        labels = rule_allowlists(load_rules(store, config.index("rules")), endpoints)
    y = al.label_pairs(feats.index, labels)
    known = y.notna()
    if known.sum() == 0 or y[known].nunique() < 2:
        raise InsufficientData(
            f"no endpoint in {events} has an allow-list with both allowed and other remotes",
            hint="import a rule set with `fwsiem rules import` whose PASS rules name specific "
                 "sources for an address and port, or pass --labels")
    Xk, yk = feats.loc[known, al.FEATURE_NAMES], y[known].astype(int).to_numpy()
    w = al.class_balanced_weights(feats.loc[known, "importance"].to_numpy(), yk)
    model = al.fwsiem_model(random_state=random_state).fit(Xk, yk, sample_weight=w)
    p = model.predict_proba(feats[al.FEATURE_NAMES])[:, 1]
    feats = feats.assign(p_allow=p)
    threshold = float(s["allow_threshold"])
    data = {"index": events, "pairs": int(len(feats)), "labeled_endpoints": len(labels),
            "labeled_pairs": int(known.sum()), **period.as_dict()}
    mdl = {"name": "allowlist-gbm", "version": "1", "features": len(al.FEATURE_NAMES),
           "threshold": threshold}
    out = []
    for (vm, port), g in feats.groupby(level=["vm", "port"]):
        if (vm, int(port)) in labels:
            continue  # already has an expert allow-list
        allowed = [r for r, pa in zip(g.index.get_level_values("remote"), g["p_allow"],
                                      strict=True) if pa >= threshold]
        denied = g[g["p_allow"] < threshold].sort_values("events", ascending=False)
        cidrs, noise = _group(allowed, int(s["max_cidrs"]), int(s["min_prefixlen"]))
        target = f"{vm}:{int(port)}"
        evidence = {"remotes": int(len(g)), "allowed_remotes": len(allowed),
                    "events": int(g["events"].sum()),
                    "allowed_events_share": round(float(g.loc[g["p_allow"] >= threshold,
                                                              "events"].sum() / g["events"].sum()), 4),
                    "denied_top": [{"remote": r, "events": int(e), "p_allow": round(float(pa), 4)}
                                   for (_, _, r), e, pa in zip(denied.index[:5], denied["events"][:5],
                                                               denied["p_allow"][:5], strict=True)],
                    "noise_addresses": int(noise)}
        confidence = float(np.average(np.maximum(g["p_allow"], 1 - g["p_allow"]),
                                      weights=g["importance"] + 1e-12))
        proposal = {"action": "allow_list", "endpoint": {"ip": vm, "port": int(port),
                                                         "transport": "tcp"},
                    "cidrs": cidrs}
        severity = "medium" if len(denied) else "low"
        out.append(recommendation(
            "allowlist", "endpoint", target, period, evidence=evidence, proposal=proposal,
            severity=severity, confidence=confidence, model=mdl, data=data,
            title=f"{target}: allow {len(cidrs)} CIDR(s), deny {len(denied)} other remote(s)"))
    return out


def _group(ips: list[str], k: int, min_prefixlen: int) -> tuple[list[str], int]:
    cidrs: list[str] = []
    noise = 0
    fam: dict[int, list[str]] = {}
    for ip in ips:
        fam.setdefault(ipaddress.ip_address(ip).version, []).append(ip)
    for version, members in sorted(fam.items()):
        mp = min_prefixlen if version == 4 else min(128, min_prefixlen + 96)
        try:
            cover = group_cidrs(members, k=k, min_prefixlen=mp)
        except NoCoverError as exc:
            cover = group_cidrs(members, k=exc.min_k, min_prefixlen=mp)
        cidrs += cover.cidrs
        noise += cover.noise
    return cidrs, noise


def write_recommendations(store, index: str, docs: Sequence[dict]):
    actions = [{"_op_type": "index", "_index": index, "_id": d["_id"],
                "_source": {k: v for k, v in d.items() if k != "_id"}} for d in docs]
    return store.bulk(actions, refresh=True)


def top_table(docs: Sequence[dict], n: int = 20) -> str:
    ranked = sorted(docs, key=lambda d: (-SEVERITY_RANK.get(d["severity"], 0), -d["confidence"],
                                         d["finding"], d["target"]["value"]))[:n]
    lines = [f"{'severity':8}  {'kind':12}  {'finding':12}  {'target':22}  {'conf':>5}  title"]
    for d in ranked:
        lines.append(f"{d['severity']:8}  {d['kind']:12}  {d['finding']:12}  "
                     f"{d['target']['value'][:22]:22}  {d['confidence']:5.2f}  {d['title']}")
    return "\n".join(lines)


# -- exports --------------------------------------------------------------------------------------
#: What an exported value may look like. A recommendation is data read back from the cluster,
#: which others can write: every value that reaches a rule set is checked, never passed through.
EXPORT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
WORD = re.compile(r"[a-z_]{0,32}")
TRANSPORTS = ("tcp", "udp")
NSX_ACTIONS = ("ALLOW", "DROP", "REJECT")
NSX_DIRECTIONS = ("IN", "OUT", "IN_OUT")
NSX_RULE_KEYS = {"resource_type", "id", "display_name", "source_groups", "destination_groups",
                 "services", "service_entries", "action", "direction", "scope"}
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _match(value, pattern: re.Pattern, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not of the form {pattern.pattern}")
    return value


def _one_of(value, allowed, what: str):
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of {sorted(allowed)}")
    return value


def _ip(value, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} {value!r} is not an IP address")
    return str(ipaddress.ip_address(value))


def _port(value, what: str, portless: bool = False) -> int:
    """A port 1-65535; with ``portless``, also 0 or -1, how traffic without ports (ICMP) is
    recorded."""
    lowest = -1 if portless else 1
    if isinstance(value, bool) or not isinstance(value, (int, str)) \
            or not re.fullmatch(r"-?\d{1,5}", str(value)) or not lowest <= int(value) <= 65535:
        raise ValueError(f"{what} {value!r} is not a port ({lowest}-65535)")
    return int(value)


def _port_range(value, what: str) -> str:
    lo, sep, hi = str(value).partition("-")
    ports = [_port(lo, what)] + ([_port(hi, what)] if sep else [])
    if ports != sorted(ports):
        raise ValueError(f"{what} {value!r} is not a port range")
    return "-".join(str(p) for p in ports)


def _address(value, what: str) -> str:
    """An address, a CIDR (no host bits) or an ``a-b`` range, as NSX groups take them."""
    if isinstance(value, str) and "-" in value:
        lo, _, hi = value.partition("-")
        return f"{_ip(lo, what)}-{_ip(hi, what)}"
    if not isinstance(value, str):
        raise ValueError(f"{what} {value!r} is not an address or CIDR")
    return str(ipaddress.ip_network(value))


def _endpoint(value, what: str) -> tuple[str, int]:
    ip, _, port = str(value).rpartition(":")
    return _ip(ip, what), _port(port, what, portless=True)


def _text(value, what: str, limit: int = 500) -> str:
    if not isinstance(value, str) or len(value) > limit or re.search(r"[\x00-\x1f\x7f]", value):
        raise ValueError(f"{what} {value!r} is not one line of at most {limit} characters")
    return value


def _nsx_rule(rule, rule_id: str) -> dict:
    if not isinstance(rule, Mapping) or set(rule) - NSX_RULE_KEYS:
        raise ValueError(f"NSX rule has fields {sorted(set(rule) - NSX_RULE_KEYS)} an export "
                         "never writes" if isinstance(rule, Mapping) else "NSX rule is no object")
    entries = []
    for e in rule.get("service_entries") or []:
        kind = _one_of(e.get("resource_type"), ("L4PortSetServiceEntry", "ICMPTypeServiceEntry"),
                       "service entry type")
        entry = {"resource_type": kind, "id": _match(e.get("id"), EXPORT_ID, "service entry id")}
        if kind == "ICMPTypeServiceEntry":
            entry["protocol"] = _one_of(e.get("protocol"), ("ICMPv4", "ICMPv6"), "ICMP protocol")
        else:
            entry["l4_protocol"] = _one_of(e.get("l4_protocol"), ("TCP", "UDP"), "protocol")
            entry["destination_ports"] = [_port_range(p, "destination port")
                                          for p in e.get("destination_ports") or []]
        entries.append(entry)
    groups = {k: ["ANY"] if rule.get(k) == ["ANY"] else [_address(a, k) for a in rule.get(k)]
              for k in ("source_groups", "destination_groups")}
    if rule.get("services") not in (["ANY"], []) or rule.get("scope") != ["ANY"]:
        raise ValueError("NSX rule services and scope must be ANY or empty")
    if rule.get("resource_type") != "Rule" or rule.get("id") != f"fwsiem-{rule_id}" or \
            rule.get("display_name") != f"rule {rule_id}":
        raise ValueError(f"NSX rule id {rule.get('id')!r} is not fwsiem-{rule_id}")
    return {"resource_type": "Rule", "id": f"fwsiem-{rule_id}", "display_name": f"rule {rule_id}",
            **groups, "services": list(rule["services"]), "service_entries": entries,
            "action": _one_of(rule.get("action"), NSX_ACTIONS, "NSX action"),
            "direction": _one_of(rule.get("direction"), NSX_DIRECTIONS, "NSX direction"),
            "scope": ["ANY"]}


def _exportable(d: Mapping) -> dict:
    finding = _one_of(d["finding"], KIND_OF, "finding")
    kind = _one_of(d["kind"], set(KIND_OF.values()), "kind")
    target_type = {"allowlist": "endpoint", "top_dropped": "destination",
                   "deny_spike": "host"}.get(finding, "rule")
    value = d["target"]["value"]
    if target_type == "host":
        value = _ip(value, "target")
    elif target_type == "rule":
        value = _match(value, RULE_ID, "rule id")
    else:
        ip, port = _endpoint(value, "target")
        value = f"{ip}:{port}"
    confidence = d["confidence"]
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
            or not 0 <= confidence <= 1:
        raise ValueError(f"confidence {confidence!r} is not a number from 0 to 1")
    proposal = d["proposal"]
    out = {"action": _match(proposal.get("action", ""), WORD, "action")}
    if finding == "allowlist":
        ep = proposal["endpoint"]
        ip = _ip(ep["ip"], "endpoint address")
        port = _port(ep["port"], "endpoint port", portless=True)
        if value != f"{ip}:{port}":
            raise ValueError(f"target {value!r} is not the endpoint {ip}:{port}")
        out["endpoint"] = {"ip": ip, "port": port,
                           "transport": _one_of(ep.get("transport", "tcp"), TRANSPORTS,
                                                "transport")}
        cidrs = proposal["cidrs"]
        if not isinstance(cidrs, list):
            raise ValueError(f"cidrs {cidrs!r} is not a list")
        out["cidrs"] = [str(ipaddress.ip_network(_text(c, "CIDR", 64))) for c in cidrs]
    elif finding == "overly_broad" and "nsx" in proposal:
        out["nsx"] = _nsx_rule(proposal["nsx"], value)
    return {"_id": _match(d["_id"], EXPORT_ID, "_id"), "kind": kind, "finding": finding,
            "title": _text(d["title"], "title"), "target": {"type": target_type, "value": value},
            "severity": _one_of(d["severity"], SEVERITY_RANK, "severity"),
            "confidence": float(confidence), "proposal": out,
            "period": {k: dt.datetime.fromisoformat(_text(d["period"][k], k, 64)).isoformat()
                       for k in ("start", "end")}}


def exportable(doc: Mapping, index: str) -> dict:
    """The recommendation with every value an export writes checked (addresses and CIDRs with
    :mod:`ipaddress`, ports, protocols and actions from fixed sets, ids against strict patterns,
    text on one line); a document that fails is refused with a one-line error naming it."""
    try:
        return _exportable(doc)
    except KeyError as exc:
        problem = f"it has no {exc}"
    except (TypeError, AttributeError, ValueError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    raise InputError(f"recommendation {doc.get('_id')!r} in {index} cannot be exported: {problem}",
                     hint="it was not written by `fwsiem recommend` or was changed since; "
                          "delete it and re-run `fwsiem recommend`")


def read_recommendations(store, index: str, kinds: Sequence[str] | None = None) -> list[dict]:
    """The recommendations in ``index``, each checked by :func:`exportable`."""
    if not store.exists(index):
        return []
    q = {"terms": {"finding": list(kinds)}} if kinds else None
    docs = [exportable({**h["_source"], "_id": h["_id"]}, index)
            for h in store.scan(index, query=q)]
    return sorted(docs, key=lambda d: (d["finding"], d["target"]["value"], d["period"]["end"]))


def latest_per_target(docs: Sequence[dict]) -> list[dict]:
    """Keep the most recent period's recommendation for each (finding, target)."""
    best: dict[tuple, dict] = {}
    for d in docs:
        key = (d["finding"], d["target"]["value"])
        if key not in best or d["period"]["end"] > best[key]["period"]["end"]:
            best[key] = d
    return [best[k] for k in sorted(best)]


def _portless(doc: Mapping) -> bool:
    """An allow-list for traffic recorded without a destination port (port 0 or -1): a port
    rule cannot express it, so the rule exports leave it out."""
    return doc["proposal"]["endpoint"]["port"] <= 0


def export_nsx(docs: Sequence[dict], domain: str = "default",
               policy: str = "fwsiem-recommended") -> dict:
    """A hierarchical NSX-T Policy API body (``PATCH /policy/api/v1/infra``): groups per endpoint
    and allow-list, a security policy with ALLOW rules then a DROP per endpoint, and the rule
    changes (tightened rules) from hygiene."""
    children, rules = [], []
    seq = 10
    for d in docs:
        if d["finding"] != "allowlist" or _portless(d):
            continue
        ep = d["proposal"]["endpoint"]
        slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{ep['ip']}-{ep['port']}").strip("-")
        gid_ep, gid_allow = f"fwsiem-ep-{slug}", f"fwsiem-allow-{slug}"
        for gid, addrs in ((gid_ep, [ep["ip"]]), (gid_allow, d["proposal"]["cidrs"])):
            children.append({"resource_type": "ChildGroup", "Group": {
                "resource_type": "Group", "id": gid, "display_name": gid,
                "expression": [{"resource_type": "IPAddressExpression", "ip_addresses": addrs}]}})
        path = f"/infra/domains/{domain}/groups/"
        entry = [{"resource_type": "L4PortSetServiceEntry", "id": f"tcp-{ep['port']}",
                  "l4_protocol": str(ep.get("transport", "tcp")).upper(),
                  "destination_ports": [str(ep["port"])]}]
        if d["proposal"]["cidrs"]:
            rules.append({"resource_type": "Rule", "id": f"{gid_allow}-allow",
                          "display_name": f"fwsiem allow-list {ep['ip']}:{ep['port']}",
                          "sequence_number": seq, "source_groups": [path + gid_allow],
                          "destination_groups": [path + gid_ep], "services": [],
                          "service_entries": entry, "action": "ALLOW", "direction": "IN",
                          "scope": ["ANY"], "logged": True,
                          "notes": f"fwsiem recommendation {d['_id']}"})
        rules.append({"resource_type": "Rule", "id": f"{gid_ep}-drop",
                      "display_name": f"fwsiem default deny {ep['ip']}:{ep['port']}",
                      "sequence_number": seq + 1, "source_groups": ["ANY"],
                      "destination_groups": [path + gid_ep], "services": [],
                      "service_entries": entry, "action": "DROP", "direction": "IN",
                      "scope": ["ANY"], "logged": True})
        seq += 10
    for d in docs:
        if d["finding"] == "overly_broad" and "nsx" in d["proposal"]:
            r = dict(d["proposal"]["nsx"])
            r["sequence_number"] = seq
            r["notes"] = f"fwsiem: replaces rule {d['target']['value']} ({d['_id']})"
            rules.append(r)
            seq += 10
    children.append({"resource_type": "ChildSecurityPolicy", "SecurityPolicy": {
        "resource_type": "SecurityPolicy", "id": policy, "display_name": policy,
        "category": "Application", "sequence_number": 1, "stateful": True, "rules": rules}})
    return {"resource_type": "Infra", "children": [{"resource_type": "ChildDomain", "Domain": {
        "resource_type": "Domain", "id": domain, "children": children}}]}


def export_iptables(docs: Sequence[dict], chain: str = "FWSIEM") -> str:
    """``iptables-restore`` input (IPv4; IPv6 allow-list entries go to ``ip6tables`` comments)."""
    lines = ["# fwsiem recommended allow-lists and rule changes",
             "# load with: iptables-restore --noflush < this-file", "*filter",
             f":{chain} - [0:0]", f"-A FORWARD -j {chain}", f"-A INPUT -j {chain}"]
    v6 = []
    for d in docs:
        if d["finding"] == "allowlist" and _portless(d):
            lines.append(f"# {d['target']['value']}: traffic without a destination port, not a "
                         "port rule; see the csv export")
        elif d["finding"] == "allowlist":
            ep = d["proposal"]["endpoint"]
            proto = ep.get("transport", "tcp")
            for cidr in d["proposal"]["cidrs"]:
                rule = (f"-A {chain} -s {cidr} -d {ep['ip']} -p {proto} --dport {ep['port']} "
                        f"-m comment --comment \"fwsiem {d['_id'][:12]}\" -j ACCEPT")
                (v6 if ":" in cidr or ":" in ep["ip"] else lines).append(rule)
            rule = f"-A {chain} -d {ep['ip']} -p {proto} --dport {ep['port']} -j DROP"
            (v6 if ":" in ep["ip"] else lines).append(rule)
        elif d["finding"] == "deny_spike":
            lines.append(f"-A {chain} -s {d['target']['value']} -m comment --comment "
                         f"\"fwsiem quarantine\" -j DROP")
    lines.append("COMMIT")
    if v6:
        lines += ["# ip6tables-restore:"] + [f"# {r}" for r in v6]
    return "\n".join(lines) + "\n"


def export_csv(docs: Sequence[dict]) -> str:
    rows = [["id", "kind", "finding", "target", "severity", "confidence", "action", "cidr",
             "port", "start", "end", "title"]]
    for d in docs:
        base = [d["_id"], d["kind"], d["finding"], d["target"]["value"], d["severity"],
                d["confidence"]]
        tail = [d["period"]["start"], d["period"]["end"], d["title"]]
        if d["finding"] == "allowlist":
            for cidr in d["proposal"]["cidrs"] or [""]:
                rows.append(base + ["allow", cidr, d["proposal"]["endpoint"]["port"]] + tail)
        else:
            rows.append(base + [d["proposal"].get("action", ""), "", ""] + tail)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([_csv_cell(v) for v in r] for r in rows)
    return buf.getvalue()


def _csv_cell(value):
    """A cell a spreadsheet shows as text, never evaluates as a formula (OWASP CSV injection)."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        return "'" + value
    return value


# -- what-if --------------------------------------------------------------------------------------
def whatif(fine: pd.DataFrame, docs: Sequence[dict],
           malicious: Iterable[str] = ()) -> dict:
    """Replay traffic (the fine table) against the proposed allow-lists.

    Returns counts of events to the covered endpoints, how many would have been blocked (service
    risk: blocked and not from a known-malicious source) and how much of the known-malicious
    traffic would have been stopped.
    """
    bad = {str(ipaddress.ip_address(m)) for m in malicious}
    lists = {(d["proposal"]["endpoint"]["ip"], int(d["proposal"]["endpoint"]["port"])):
             [ipaddress.ip_network(c) for c in d["proposal"]["cidrs"]]
             for d in docs if d["finding"] == "allowlist"}
    res = {"endpoints": len(lists), "events": 0, "blocked": 0, "benign_events": 0,
           "benign_blocked": 0, "malicious_events": 0, "malicious_blocked": 0}
    if fine.empty or not lists:
        return res
    ev = fine.assign(events=fine["sent"] + fine["recv"]).groupby(["vm", "port", "remote"])[
        "events"].sum()
    cache: dict[tuple, bool] = {}
    for (vm, port, remote), n in ev.items():
        nets = lists.get((vm, int(port)))
        if nets is None:
            continue
        key = (vm, int(port), remote)
        if key not in cache:
            a = ipaddress.ip_address(remote)
            cache[key] = not any(a.version == net.version and a in net for net in nets)
        blocked = cache[key]
        res["events"] += int(n)
        res["blocked"] += int(n) * blocked
        if remote in bad:
            res["malicious_events"] += int(n)
            res["malicious_blocked"] += int(n) * blocked
        else:
            res["benign_events"] += int(n)
            res["benign_blocked"] += int(n) * blocked
    res["service_risk"] = res["benign_blocked"] / res["benign_events"] if res[
        "benign_events"] else 0.0
    res["malicious_stopped"] = res["malicious_blocked"] / res["malicious_events"] if res[
        "malicious_events"] else None
    return res


def malicious_sources(truth: Mapping) -> list[str]:
    """Source addresses of the incidents (and scanners) a simulator truth file lists."""
    out: set[str] = set()
    for inc in truth.get("incidents", []):
        for key in ("sources", "source_ips", "attackers"):
            out.update(str(v) for v in inc.get(key, []) or [])
        if inc.get("source"):
            out.add(str(inc["source"]))
    for key in ("scanners", "malicious"):
        out.update(str(v) for v in truth.get(key, []) or [])
    return sorted(a for a in out if _is_ip(a))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:  # not UTF-8, or not JSON
        raise InputError(f"{path} is not a JSON file: {str(exc).splitlines()[0][:200]}",
                         hint="give the JSON file the option asks for") from None
