"""The simulation: chunked, seeded generation of sessions, log lines, flow records and truth."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ml.errors import ModelInputError
from ml.simulate.datacenter import build_datacenter
from ml.simulate.incidents import SIGNALS, incident_sessions, schedule
from ml.simulate.render import NFDUMP_HEADER, NsxRenderer, flow_records, iso_ms, nfdump_summary
from ml.simulate.rules import ACTIONS, Rule, build_ruleset
from ml.simulate.scenario import Scenario, load_scenario
from ml.simulate.sessions import SERVICE_NAMES, SERVICES, Edge, concat, diurnal_multiplier

HOUR = 3_600_000
EVENT_COLS = ("t", "kind", "vm", "src", "dst", "proto", "sport", "dport", "dirn", "rule",
              "action", "plen", "flags", "close", "icmp_t", "icmp_c", "pkt_s", "pkt_d", "byt_s",
              "byt_d", "tc", "inc", "sid", "svc")
FLOW_COLS = ("t", "dur", "src", "dst", "sport", "dport", "proto", "pkts", "byts", "tflags",
             "router", "inc")
TRANSPORT = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 58: "ipv6-icmp",
             132: "sctp"}


def parse_time(text: str | datetime) -> int:
    """Epoch milliseconds from an ISO-8601 time (UTC when no offset is given).

    Examples
    --------
    >>> parse_time("1970-01-01T00:00:01Z")
    1000
    """
    if isinstance(text, datetime):
        dt = text
    else:
        try:
            dt = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError as exc:
            raise ModelInputError(f"start time {text!r} is not ISO-8601",
                             hint="e.g. 2024-03-04T00:00:00Z") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _take(cols: dict[str, np.ndarray], idx) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in cols.items()}


def _cat(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([a[k], b[k]]) for k in a}


class Simulation:
    """A seeded simulation of ``hours`` of datacenter traffic from a scenario.

    Parameters
    ----------
    scenario : Scenario or str
        A loaded scenario, a packaged scenario name or a TOML path.
    hours : float, optional
        Simulated duration; the scenario's ``hours`` when omitted.
    seed : int
        Traffic seed (the topology comes from ``[datacenter] topology_seed``).
    start : str, optional
        ISO-8601 start; the scenario's ``start`` when omitted.

    Examples
    --------
    >>> sim = Simulation("default", hours=0.5, seed=1)
    >>> lines = [ln for chunk in sim.iter_nsx_lines() for ln in chunk]
    >>> len(lines) > 1000 and lines[0][:4] in ("2024", "<134", "<182", "<99>", "<181")
    True
    >>> sorted(sim.truth())[:3]
    ['allowlists', 'counts', 'datacenter']
    """

    def __init__(self, scenario: Scenario | str, hours: float | None = None, seed: int = 0,
                 start: str | datetime | None = None) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        sc = self.scenario
        self.hours = float(hours if hours is not None else sc.data.get("hours", 24))
        if self.hours <= 0:
            raise ModelInputError(f"--hours must be positive, got {self.hours}")
        self.seed = int(seed)
        self.start = parse_time(start if start is not None else sc.data["start"])
        self.end = self.start + int(round(self.hours * HOUR))
        self.chunk_ms = int(float(sc.section("output")["chunk_minutes"]) * 60_000)
        self.dc = build_datacenter(sc)
        at = self.dc.addresses
        # allow-list endpoints and their labels (topology-seeded, so equal across traffic seeds)
        self._endpoints, allow_rules = self._allowlists()
        labeled_ssh = {e["addr"] for e in self._endpoints if e["labeled"] and e["port"] == 22}
        self.incidents = schedule(np.random.default_rng([self.seed, 7]), sc, self.dc,
                                  self.start, self.end, labeled_ssh)
        self.ruleset = build_ruleset(sc.section("rules"), self.dc, allow_rules)
        arr = at.arrays()
        self._addr_v6 = arr["v6"]
        self._addr_vm = arr["vm"]
        self._addr_org = arr["org"]
        self.ruleset.compile(arr["v4"], arr["v6"], at.text)
        erng = np.random.default_rng([int(sc.section("datacenter")["topology_seed"]), 202])
        self.edges = [Edge.from_spec(e, self.dc, erng, self._addr_org)
                      for e in sc.section("traffic")["edges"]]
        self.renderer = NsxRenderer(self.dc, self.ruleset, sc.section("output"))
        self._truth: dict | None = None

    # -- allow-lists (seed 001) -------------------------------------------------------------
    def _allowlists(self) -> tuple[list[dict], list[Rule]]:
        sc = self.scenario
        al = sc.section("allowlists")
        rng = np.random.default_rng([int(sc.section("datacenter")["topology_seed"]), 303])
        at = self.dc.addresses
        jump = [at.text[i] for i in self.dc.pool("jump")]
        endpoints, rules = [], []
        ports = al.get("ports", {})
        base = int(al.get("rule_id_base", 5000))
        share = float(al.get("labeled_share", 0.3))
        for vm in self.dc.vms:
            for port in ports.get(vm.kind, []):
                allowed = list(self.dc.offices[vm.org]) + [f"{j}/32" for j in jump]
                if port != 22:
                    allowed += list(self.dc.partners[vm.org])
                labeled = bool(rng.random() < share)
                ep = {"addr": vm.addr, "ip": at.text[vm.addr], "port": int(port), "proto": "tcp",
                      "org": self.dc.orgs[vm.org], "vm": vm.name, "labeled": labeled,
                      "allowed": allowed}
                endpoints.append(ep)
                if labeled:
                    rid = base + len(rules)
                    name = f"{vm.name}-{port}"
                    rules.append(Rule(str(rid), f"allow-{name}", allowed, [f"{ep['ip']}/32"],
                                      [f"tcp/{port}"], "PASS", "IN", tag=f"allowlist_{name}"))
                    rules.append(Rule(str(rid + 1), f"deny-{name}", ["any"], [f"{ep['ip']}/32"],
                                      [f"tcp/{port}"], "DROP", "IN", tag=f"allowlist_{name}"))
        return endpoints, rules

    # -- generation ---------------------------------------------------------------------------
    def _chunk_sessions(self, c: int, t0: int, t1: int) -> dict[str, np.ndarray]:
        tr = self.scenario.section("traffic")
        rng = np.random.default_rng([self.seed, c, 1])
        mult = diurnal_multiplier((t0 + t1) / 2, float(tr["diurnal_amplitude"]),
                                  float(tr["peak_hour"]), float(tr["weekend_factor"]))
        parts = [e.sample(rng, t0, t1, mult, self._addr_org) for e in self.edges]
        for inc in self.incidents:
            if inc.start < t1 and inc.end > t0:
                irng = np.random.default_rng([self.seed, c, 1000 + inc.id])
                s = incident_sessions(irng, inc, t0, t1, self._addr_v6)
                if s is not None:
                    parts.append(s)
        s = concat(parts)
        order = np.argsort(s["t"], kind="stable")
        return _take(s, order)

    def _chunk_events(self, c: int, t0: int, t1: int):
        s = self._chunk_sessions(c, t0, t1)
        n = len(s["t"])
        rng = np.random.default_rng([self.seed, c, 2])
        vm_s = self._addr_vm[s["src"]]
        vm_d = self._addr_vm[s["dst"]]
        vm = np.where(vm_s >= 0, vm_s, np.where(vm_d >= 0, vm_d, s["log_vm"]))
        dirn = (vm_s >= 0).astype(np.int64)
        keep = vm >= 0
        s = _take(s, keep)
        vm, dirn = vm[keep], dirn[keep]
        n = len(s["t"])
        rule, action = self.ruleset.evaluate(s["src"], s["dst"], s["proto"], s["dport"], dirn)
        action = action.astype(np.int64)
        noise = float(self.scenario.section("traffic")["noise"])
        flip = rng.random(n) < noise
        action = np.where(flip & (action == 0), 1, np.where(flip & (action != 0), 0, action))
        out_cfg = self.scenario.section("output")
        tcp = s["proto"] == 6
        flags = np.where(tcp, np.where(rng.random(n) < float(out_cfg["sew_share"]), 2, 1), 0)
        u = rng.random(n)
        close = np.where(tcp, np.where(u < 0.85, 1, np.where(u < 0.97, 2, 3)), 0)
        tc = (rng.random(n) < float(out_cfg["icmp_typecode_share"])).astype(np.int64)
        sid = (np.int64(c) << 32) + np.arange(n, dtype=np.int64)
        passed = action == 0
        # a dropped session is one packet; a reject answers with one
        pkt_s = np.where(passed, s["pkt_s"], 1)
        byt_s = np.where(passed, s["byt_s"], s["plen"])
        pkt_d = np.where(passed, s["pkt_d"], (action == 2).astype(np.int64))
        byt_d = np.where(passed, s["byt_d"], np.where(action == 2, 40, 0))
        dur = np.where(passed, np.maximum(s["dur"], 1), 0)
        base = {"vm": vm, "src": s["src"], "dst": s["dst"], "proto": s["proto"],
                "sport": s["sport"], "dport": s["dport"], "dirn": dirn, "rule": rule.astype(np.int64),
                "action": action, "plen": s["plen"], "flags": flags, "close": close,
                "icmp_t": s["icmp_t"], "icmp_c": s["icmp_c"], "pkt_s": pkt_s, "pkt_d": pkt_d,
                "byt_s": byt_s, "byt_d": byt_d, "tc": tc, "inc": s["inc"], "sid": sid,
                "svc": s["svc"]}
        match = dict(base, t=s["t"], kind=np.zeros(n, np.int64))
        has_term = passed & (pkt_d > 0) & np.isin(s["proto"], (1, 6, 17, 58))
        term = _take(dict(base, t=s["t"] + dur, kind=np.ones(n, np.int64)), has_term)
        events = _cat({k: match[k] for k in EVENT_COLS}, {k: term[k] for k in EVENT_COLS})
        # flow records: forward always, reverse when the destination sent packets
        tflags_f = np.where(tcp, np.where(passed, 0x1B, 0x02), 0)
        tflags_r = np.where(tcp, np.where(passed, 0x1B, 0x14), 0)
        router = vm % 8
        fwd = {"t": s["t"], "dur": dur, "src": s["src"], "dst": s["dst"], "sport": s["sport"],
               "dport": s["dport"], "proto": s["proto"], "pkts": pkt_s, "byts": byt_s,
               "tflags": tflags_f, "router": router, "inc": s["inc"]}
        rev = {"t": s["t"] + np.minimum(dur, 5), "dur": np.maximum(dur - 5, 0), "src": s["dst"],
               "dst": s["src"], "sport": s["dport"], "dport": s["sport"], "proto": s["proto"],
               "pkts": pkt_d, "byts": byt_d, "tflags": tflags_r, "router": router,
               "inc": s["inc"]}
        flows = _cat(fwd, _take(rev, pkt_d > 0))
        flows["tend"] = flows["t"] + flows["dur"]
        self._account(s, rule, action, dirn, vm, flip)
        return events, flows

    def _release(self, pending, new, key, until):
        both = new if pending is None else _cat(pending, new)
        order = np.argsort(both[key], kind="stable")
        both = _take(both, order)
        cut = int(np.searchsorted(both[key], until, side="left"))
        return _take(both, slice(0, cut)), _take(both, slice(cut, None))

    def iter_chunks(self) -> Iterator[tuple[dict, dict]]:
        """(events, flows) column dicts per time chunk, each in time order (TERM lines and flow
        records are released in the chunk in which their session ends)."""
        self._reset_accounting()
        pend_ev = pend_fl = None
        c = 0
        t0 = self.start
        while t0 < self.end:
            t1 = min(self.end, t0 + self.chunk_ms)
            ev, fl = self._chunk_events(c, t0, t1)
            ready_ev, pend_ev = self._release(pend_ev, ev, "t", t1)
            ready_fl, pend_fl = self._release(pend_fl, fl, "tend", t1)
            self._account_lines(ready_ev, ready_fl)
            yield ready_ev, ready_fl
            t0 = t1
            c += 1
        self._finish_truth()

    def iter_nsx_lines(self) -> Iterator[list[str]]:
        """NSX DFW lines per chunk, in time order, without newlines."""
        for ev, _ in self.iter_chunks():
            yield self.renderer.lines(ev)

    def iter_events(self):
        """One pandas DataFrame per chunk, one row per NSX line (columns in docs/simulator.md)."""
        import pandas as pd

        at = self.dc.addresses
        text = np.asarray(at.text, dtype=object)
        rules = self.ruleset.rules
        rid = np.asarray([r.id for r in rules], dtype=object)
        rset = np.asarray([r.ruleset for r in rules], dtype=object)
        vif = np.asarray([v.vif for v in self.dc.vms], dtype=object)
        hostn = np.asarray([self.dc.hosts[v.host].name for v in self.dc.vms], dtype=object)
        for ev, _ in self.iter_chunks():
            term = ev["kind"] == 1
            out_ = ev["dirn"] == 1
            proto = ev["proto"]
            ported = np.isin(proto, (6, 17))
            inc_ids = ev["inc"]
            src_p = np.where(term, np.where(out_, ev["pkt_d"], ev["pkt_s"]), 0)
            yield pd.DataFrame({
                "@timestamp": pd.to_datetime(ev["t"], unit="ms", utc=True),
                "host.id": vif[ev["vm"]], "observer.hostname": hostn[ev["vm"]],
                "nsx.dfw.line_kind": np.where(term, "term", "match"),
                "event.action": np.asarray(["pass", "drop", "reject"])[ev["action"]],
                "rule.id": rid[ev["rule"]], "rule.ruleset": rset[ev["rule"]],
                "network.direction": np.where(out_, "egress", "ingress"),
                "network.transport": [TRANSPORT.get(p, str(p)) for p in proto.tolist()],
                "network.iana_number": proto.astype(str),
                "network.type": np.where(self._addr_v6[ev["src"]], "ipv6", "ipv4"),
                "source.ip": text[ev["src"]],
                "source.port": np.where(ported, ev["sport"], -1),
                "destination.ip": text[ev["dst"]],
                "destination.port": np.where(ported, ev["dport"], -1),
                "source.packets": np.where(term, ev["pkt_s"], 0),
                "source.bytes": np.where(term, ev["byt_s"], 0),
                "destination.packets": np.where(term, ev["pkt_d"], 0),
                "destination.bytes": np.where(term, ev["byt_d"], 0),
                "nsx.dfw.packet_length": np.where(term, 0, ev["plen"]),
                "nsx.dfw.tcp_flags": np.asarray(["", "S", "SEW"])[np.where(term, 0, ev["flags"])],
                "nsx.dfw.close_reason": np.asarray(["", "FIN", "RST", "TIMEOUT"])[
                    np.where(term, ev["close"], 0)],
                "incident.id": np.where(inc_ids >= 0, inc_ids.astype(str), ""),
                "session.id": ev["sid"],
            })
            del src_p

    # -- truth --------------------------------------------------------------------------------
    def _reset_accounting(self) -> None:
        nr = len(self.ruleset.rules)
        self._hits = np.zeros(nr, dtype=np.int64)
        self._act_hits = Counter()
        self._broad_used: dict[int, dict[str, set]] = {
            i: {"services": set(), "sources": set(), "destinations": set()}
            for i, r in enumerate(self.ruleset.rules) if r.broad}
        self._inc_sessions = Counter()
        self._inc_lines = Counter()
        na = len(self.dc.addresses.text)
        self._dst_flows = np.zeros(na, dtype=np.int64)
        self._dst_pkts = np.zeros(na, dtype=np.int64)
        self._dst_bytes = np.zeros(na, dtype=np.int64)
        self._dst_first = np.full(na, np.iinfo(np.int64).max, dtype=np.int64)
        self._dst_last = np.full(na, np.iinfo(np.int64).min, dtype=np.int64)
        self._counts = Counter()
        self._hosts_seen: set[int] = set()

    def _account(self, s, rule, action, dirn, vm, flip) -> None:
        valid = rule >= 0
        self._hits += np.bincount(rule[valid], minlength=len(self._hits))
        for a, cnt in zip(*np.unique(action, return_counts=True), strict=True):
            self._act_hits[ACTIONS[int(a)]] += int(cnt)
        self._counts["sessions"] += len(rule)
        self._counts["noise_flipped"] += int(flip.sum())
        for i, used in self._broad_used.items():
            m = rule == i
            if not m.any():
                continue
            svc = np.unique(np.stack([s["proto"][m], s["dport"][m]]), axis=1)
            for p, port in svc.T.tolist():
                used["services"].add(f"{TRANSPORT.get(p, p)}/{port}" if p in (6, 17)
                                     else TRANSPORT.get(p, str(p)))
            used["sources"].update(np.unique(s["src"][m]).tolist())
            used["destinations"].update(np.unique(s["dst"][m]).tolist())
        inc = s["inc"]
        for i, cnt in zip(*np.unique(inc[inc >= 0], return_counts=True), strict=True):
            self._inc_sessions[int(i)] += int(cnt)
        self._hosts_seen.update(np.unique(np.asarray([self.dc.vms[v].host for v in
                                                      np.unique(vm).tolist()])).tolist())

    def _account_lines(self, ev, fl) -> None:
        self._counts["nsx_lines"] += len(ev["t"])
        self._counts["match_lines"] += int((ev["kind"] == 0).sum())
        self._counts["term_lines"] += int((ev["kind"] == 1).sum())
        self._counts["flow_records"] += len(fl["t"])
        self._counts["flow_bytes"] += int(fl["byts"].sum())
        self._counts["flow_packets"] += int(fl["pkts"].sum())
        inc = ev["inc"]
        for i, cnt in zip(*np.unique(inc[inc >= 0], return_counts=True), strict=True):
            self._inc_lines[int(i)] += int(cnt)
        # per-destination aggregates (seed 004): flows, packets, bytes, first, last
        if len(fl["t"]):
            d = fl["dst"]
            na = len(self._dst_flows)
            self._dst_flows += np.bincount(d, minlength=na)
            # float sums as before: exact for per-chunk totals below 2**53
            self._dst_pkts += np.bincount(d, weights=fl["pkts"], minlength=na).astype(np.int64)
            self._dst_bytes += np.bincount(d, weights=fl["byts"], minlength=na).astype(np.int64)
            np.minimum.at(self._dst_first, d, fl["t"])
            np.maximum.at(self._dst_last, d, fl["tend"])

    def _finish_truth(self) -> None:
        self._truth = self._build_truth()

    def _build_truth(self) -> dict:
        at = self.dc.addresses
        rules = self.ruleset.rules
        hits = {r.id: int(h) for r, h in zip(rules, self._hits, strict=True)}
        from ml.simulate.rules import covers, services_cover

        shadowed, never = {}, []
        for i, r in enumerate(rules):
            if self._hits[i]:
                continue
            for s in rules[:i]:
                if (covers(s.sources, r.sources, self.ruleset.groups)
                        and covers(s.destinations, r.destinations, self.ruleset.groups)
                        and services_cover(s.services, r.services)
                        and s.direction in ("IN_OUT", r.direction)):
                    shadowed[r.id] = s.id
                    break
            else:
                never.append(r.id)
        broad = {}
        for i, used in self._broad_used.items():
            if self._hits[i]:
                broad[rules[i].id] = {
                    "services": sorted(rules[i].services),
                    "services_used": sorted(used["services"]),
                    "sources_used": sorted(at.text[a] for a in used["sources"])[:200],
                    "destinations_used": sorted(at.text[a] for a in used["destinations"])[:200],
                    "distinct_sources_used": len(used["sources"]),
                    "distinct_destinations_used": len(used["destinations"]),
                }
        dominant = rules[int(np.argmax(self._hits))].id if len(rules) else ""
        iso = iso_ms(np.array([self.start, self.end]))
        incidents = []
        for inc in self.incidents:
            t = iso_ms(np.array([inc.start, inc.end]))
            incidents.append({
                "id": inc.id, "kind": inc.kind, "start": t[0] + "Z", "end": t[1] + "Z",
                "intensity": inc.intensity, "detectability": inc.detectability(),
                "signals": SIGNALS[inc.kind],
                "entities": {
                    "src_ips": [at.text[a] for a in inc.src],
                    "dst_ips": [at.text[a] for a in inc.dst],
                    "dst_ports": list(inc.ports) if inc.kind != "port_scan_vertical"
                    else list(range(inc.ports[0], inc.ports[1] + 1))[:0] or inc.ports,
                    "proto": TRANSPORT.get(inc.proto, str(inc.proto)),
                    "hosts": sorted({self.dc.hosts[self.dc.vms[at.vm[a]].host].name
                                     for a in inc.src + inc.dst if at.vm[a] >= 0})[:50],
                    "vms": sorted({self.dc.vms[at.vm[a]].name for a in inc.src + inc.dst
                                   if at.vm[a] >= 0})[:50],
                },
                "params": inc.params,
                "sessions": self._inc_sessions.get(inc.id, 0),
                "lines": self._inc_lines.get(inc.id, 0),
            })
        classes = self._traffic_classes()
        return {
            "scenario": self.scenario.name, "seed": self.seed, "start": iso[0] + "Z",
            "end": iso[1] + "Z", "hours": self.hours,
            "counts": dict(sorted(self._counts.items())) | {
                "actions": dict(sorted(self._act_hits.items())),
                "active_hosts": len(self._hosts_seen)},
            "datacenter": {
                "orgs": [{"name": o, "cidr": c, "offices": self.dc.offices[k],
                          "partners": self.dc.partners[k]}
                         for k, (o, c) in enumerate(zip(self.dc.orgs, self.dc.org_cidrs, strict=True))],
                "hosts": [{"name": h.name, "format": h.prefix} for h in self.dc.hosts],
                "vms": [{"name": v.name, "ip": at.text[v.addr], "org": self.dc.orgs[v.org],
                         "kind": v.kind, "host": self.dc.hosts[v.host].name, "vif": v.vif}
                        for v in self.dc.vms],
                "resolver": at.text[int(self.dc.pool("resolver")[0])],
            },
            "incidents": incidents,
            "rules": {"hits": hits, "never_hit": never, "shadowed": shadowed,
                      "overly_broad": broad, "dominant": dominant},
            "allowlists": [{k: v for k, v in e.items() if k != "addr"} for e in self._endpoints],
            "traffic_classes": classes,
        }

    def _traffic_classes(self) -> list[dict]:
        at = self.dc.addresses
        label: dict[int, str] = {}
        for pool, cls in (("web", "web"), ("mail", "mail"), ("backup", "backup"),
                          ("resolver", "dns"), ("ldap", "ldap"), ("db", "db"), ("app", "app"),
                          ("ntp", "ntp")):
            for a in self.dc.pools.get(pool, []):
                label[int(a)] = cls
        for inc in self.incidents:
            if inc.kind == "udp_flood_small":
                label[inc.dst[0]] = "small_flood"
            elif inc.kind == "udp_flood_large":
                label[inc.dst[0]] = "large_flood"
            elif inc.kind == "syn_flood":
                label[inc.dst[0]] = "incoming_flood"
        out = []
        for a in np.flatnonzero(self._dst_flows).tolist():
            if a not in label:
                continue
            flows, pkts, byts = (int(self._dst_flows[a]), int(self._dst_pkts[a]),
                                 int(self._dst_bytes[a]))
            first, last = int(self._dst_first[a]), int(self._dst_last[a])
            dur = max(0.001, (last - first) / 1000)
            out.append({"dst_ip": at.text[a], "class": label[a], "flows": flows,
                        "packets": pkts, "bytes": byts, "duration": round(dur, 3),
                        "pps": round(pkts / dur, 3), "bps": round(byts * 8 / dur, 3),
                        "bpp": round(byts / pkts, 3) if pkts else 0.0})
        return out

    def truth(self) -> dict:
        """The truth.json content; runs a generation pass first if none has completed."""
        if self._truth is None:
            for _ in self.iter_chunks():
                pass
        return self._truth

    # -- files ----------------------------------------------------------------------------------
    def write(self, out: str | Path, *, per_host: bool = False, progress: bool = False) -> dict:
        """Write the output directory (see docs/simulator.md); return the counts."""
        out = Path(out)
        (out / "nsx").mkdir(parents=True, exist_ok=True)
        (out / "flows").mkdir(parents=True, exist_ok=True)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=int((self.end - self.start) / self.chunk_ms) + 1, unit="chunk",
                       desc="simulate")
        host_files: dict[str, object] = {}
        n_flows = n_bytes = n_pkts = 0
        with open(out / "nsx" / "dfwpktlogs.log", "w", encoding="utf-8", newline="\n") as log, \
                open(out / "flows" / "nfdump.csv", "w", encoding="utf-8", newline="\n") as nf, \
                open(out / "flows" / "pmacct.json", "w", encoding="utf-8", newline="\n") as pm:
            nf.write(NFDUMP_HEADER + "\n")
            for ev, fl in self.iter_chunks():
                lines = self.renderer.lines(ev)
                if lines:
                    log.write("\n".join(lines) + "\n")
                if per_host and lines:
                    (out / "nsx" / "hosts").mkdir(exist_ok=True)
                    names = self.renderer.host_names(ev)
                    by: dict[str, list[str]] = {}
                    for name, line in zip(names, lines, strict=True):
                        by.setdefault(name, []).append(line)
                    for name, ls in by.items():
                        if name not in host_files:
                            host_files[name] = open(out / "nsx" / "hosts" / f"{name}.log", "w",
                                                    encoding="utf-8", newline="\n")
                        host_files[name].write("\n".join(ls) + "\n")
                rows, js = flow_records(fl, self.dc.addresses.text)
                if rows:
                    nf.write("\n".join(rows) + "\n")
                    pm.write("\n".join(js) + "\n")
                n_flows += len(rows)
                n_bytes += int(fl["byts"].sum())
                n_pkts += int(fl["pkts"].sum())
                if bar is not None:
                    bar.update(1)
            nf.write("\n".join(nfdump_summary(n_flows, n_bytes, n_pkts,
                                              (self.end - self.start) / 1000)) + "\n")
        for f in host_files.values():
            f.close()
        if bar is not None:
            bar.close()
        (out / "rules.yaml").write_text(self.ruleset.to_yaml())
        truth = self.truth()
        (out / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=False) + "\n")
        return truth["counts"]


def ip_in(addr: str, cidr: str) -> bool:
    return ipaddress.ip_address(addr) in ipaddress.ip_network(cidr, strict=True)


__all__ = ["Simulation", "parse_time", "SERVICES", "SERVICE_NAMES"]
