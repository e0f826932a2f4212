"""Incidents with ground truth: scheduling, entities and the sessions each kind adds."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import numpy as np

from ml.simulate.sessions import service_sessions

MINUTE = 60_000

# what a detector should see, per kind (window features of docs/fields.md / seed 003)
SIGNALS = {
    "port_scan_horizontal": ["source_distinct_destinations", "drop_ratio", "new_peers"],
    "port_scan_vertical": ["source_distinct_ports", "drop_ratio"],
    "syn_flood": ["destination_port_pps", "destination_distinct_sources", "syn_only_sessions"],
    "udp_flood_small": ["source_bytes_out", "destination_port_pps", "bytes_per_packet"],
    "udp_flood_large": ["source_bytes_out", "destination_port_pps", "bytes_per_packet"],
    "ssh_bruteforce": ["destination_port_sessions", "short_sessions", "rst_ratio"],
    "lateral_movement": ["source_distinct_destinations", "east_west_new_peers", "drop_ratio"],
    "exfiltration": ["source_bytes_out", "rare_destination"],
    "beaconing": ["periodic_sessions", "rare_destination"],
    "deny_spike": ["drop_ratio", "rule_hit_rate", "source_distinct_destinations"],
}
LOUD = {"port_scan_horizontal", "port_scan_vertical", "syn_flood", "udp_flood_large",
        "deny_spike", "ssh_bruteforce"}
DEFAULT_MINUTES = {"beaconing": 180.0, "exfiltration": 60.0, "udp_flood_small": 15.0,
                   "udp_flood_large": 10.0}
ATTACK_PREFIXES = ["5.188.0.0/16", "45.95.168.0/22", "193.32.162.0/24", "89.248.160.0/20",
                   "141.98.10.0/24", "91.240.118.0/24"]
RARE_PREFIXES = ["185.220.100.0/22", "23.129.64.0/24", "37.120.0.0/16", "146.70.0.0/16"]


@dataclass
class Incident:
    id: int
    kind: str
    start: int                       # ms since epoch
    end: int
    intensity: float
    src: list[int] = field(default_factory=list)     # address indices
    dst: list[int] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    proto: int = 6
    params: dict = field(default_factory=dict)

    def detectability(self) -> str:
        if self.intensity < 0.3:
            return "low"
        if self.kind in LOUD and self.intensity >= 0.7:
            return "high"
        return "medium"


def _new_addresses(rng, at, prefixes: list[str], n: int, role: str) -> list[int]:
    nets = [ipaddress.ip_network(p) for p in prefixes]
    out: list[int] = []
    while len(out) < n:
        net = nets[int(rng.integers(len(nets)))]
        addr = str(net.network_address + int(rng.integers(1, net.num_addresses - 1)))
        if addr in at._index:
            continue
        out.append(at.add(addr, role=role))
    return out


def schedule(rng: np.random.Generator, scenario, dc, start: int, end: int,
             labeled_ssh: set[int]) -> list[Incident]:
    """Place the enabled incidents in time (after the warm-up) and pick their entities."""
    cfg = scenario.incidents()
    hours = (end - start) / 3_600_000
    warm = min(float(scenario.section("incidents").get("warmup_hours", 3.0)), hours / 4)
    w0 = start + int(warm * 3_600_000)
    at = dc.addresses
    vm_addr = np.array([v.addr for v in dc.vms])
    vm_kind = np.array([v.kind for v in dc.vms])
    out: list[Incident] = []
    for kind, c in cfg.items():
        if not c["enabled"]:
            continue
        n = max(1, int(round(float(c["per_day"]) * hours / 24)))
        minutes = float(c.get("duration_minutes_" + kind, c.get("duration_minutes")))
        if "duration_minutes" not in scenario.section("incidents").get(kind, {}):
            minutes = DEFAULT_MINUTES.get(kind, minutes)
        dur = int(min(minutes * MINUTE, max(MINUTE, end - w0)))
        for _ in range(n):
            t0 = int(rng.integers(w0, max(w0 + 1, end - dur)))
            inc = Incident(id=len(out) + 1, kind=kind, start=t0, end=min(end, t0 + dur),
                           intensity=float(c["intensity"]))
            k = inc.intensity
            if kind == "port_scan_horizontal":
                inc.src = _new_addresses(rng, at, ATTACK_PREFIXES, 1, "scanner")
                m = min(len(vm_addr), max(10, int(40 * k)))
                inc.dst = [int(a) for a in rng.choice(vm_addr, m, replace=False)]
                inc.ports = [int(rng.choice([22, 23, 445, 3389, 5900]))]
            elif kind == "port_scan_vertical":
                inc.src = _new_addresses(rng, at, ATTACK_PREFIXES, 1, "scanner")
                inc.dst = [int(rng.choice(vm_addr))]
                inc.params["max_port"] = int(min(65535, max(200, 1024 * k)))
                inc.ports = [1, inc.params["max_port"]]
            elif kind == "syn_flood":
                inc.src = _new_addresses(rng, at, ATTACK_PREFIXES, max(20, int(200 * k)), "botnet")
                inc.dst = [int(rng.choice(vm_addr[vm_kind == "web"]))]
                inc.ports = [443]
                inc.params["sessions_per_minute"] = 1500 * k
            elif kind in ("udp_flood_small", "udp_flood_large"):
                n_src = 1 if kind == "udp_flood_small" else 3
                cand = vm_addr[np.isin(vm_kind, ["web", "app"])]
                inc.src = [int(a) for a in rng.choice(cand, n_src, replace=False)]
                inc.dst = _new_addresses(rng, at, RARE_PREFIXES, 1, "flood_target")
                inc.ports = [int(rng.choice([8090, 27015, 3074, 19132]))]
                inc.proto = 17
                inc.params["pps"] = (5000 if kind == "udp_flood_small" else 60000) * k
            elif kind == "ssh_bruteforce":
                cand = [int(a) for a in vm_addr if int(a) not in labeled_ssh]
                inc.src = _new_addresses(rng, at, ATTACK_PREFIXES, 1, "attacker")
                inc.dst = [int(rng.choice(cand if cand else vm_addr))]
                inc.ports = [22]
                inc.params["attempts_per_minute"] = 20 * k
            elif kind == "lateral_movement":
                src = int(rng.choice(vm_addr[vm_kind == "web"]))
                others = vm_addr[vm_addr != src]
                inc.src = [src]
                inc.dst = [int(a) for a in rng.choice(others, min(len(others), max(8, int(30 * k))),
                                                      replace=False)]
                inc.ports = [22, 135, 445, 3389, 5985]
            elif kind == "exfiltration":
                inc.src = [int(rng.choice(vm_addr[vm_kind == "db"]))]
                inc.dst = _new_addresses(rng, at, RARE_PREFIXES, 1, "exfil")
                inc.ports = [443]
                inc.params["bytes"] = int(2e9 * k)
            elif kind == "beaconing":
                inc.src = [int(rng.choice(vm_addr))]
                inc.dst = _new_addresses(rng, at, RARE_PREFIXES, 1, "c2")
                inc.ports = [int(rng.choice([443, 8443, 8080]))]
                inc.params["period_s"] = int(rng.choice([30, 60, 120, 300]))
            elif kind == "deny_spike":
                inc.src = [int(rng.choice(vm_addr))]
                inc.dst = [int(a) for a in vm_addr if a != inc.src[0]]
                inc.ports = [23, 135, 139, 445]
                inc.params["sessions_per_minute"] = 200 * k
            out.append(inc)
    out.sort(key=lambda i: (i.start, i.kind))
    for n, inc in enumerate(out, start=1):
        inc.id = n
    return out


def incident_sessions(rng: np.random.Generator, inc: Incident, t0: int, t1: int,
                      addr_v6: np.ndarray) -> dict[str, np.ndarray] | None:
    """The sessions incident ``inc`` adds in the chunk [t0, t1)."""
    a, b = max(t0, inc.start), min(t1, inc.end)
    if a >= b:
        return None
    span_min = (b - a) / MINUTE
    total_min = max(1e-9, (inc.end - inc.start) / MINUTE)
    kind = inc.kind
    src = np.asarray(inc.src)
    dst = np.asarray(inc.dst)

    def times(n):
        return np.sort(rng.integers(a, b, n))

    if kind == "port_scan_horizontal":
        n = rng.poisson(2 * len(dst) * span_min / total_min)
        t = times(n)
        s = service_sessions(rng, "scan", t, np.full(n, src[0]), dst[rng.integers(0, len(dst), n)],
                             dport=np.full(n, inc.ports[0]))
    elif kind == "port_scan_vertical":
        n = rng.poisson(inc.params["max_port"] * span_min / total_min)
        t = times(n)
        s = service_sessions(rng, "scan", t, np.full(n, src[0]), np.full(n, dst[0]),
                             dport=rng.integers(1, inc.params["max_port"] + 1, n))
    elif kind == "syn_flood":
        n = rng.poisson(inc.params["sessions_per_minute"] * span_min)
        t = times(n)
        s = service_sessions(rng, "https", t, src[rng.integers(0, len(src), n)], np.full(n, dst[0]))
        s["pkt_s"] = rng.integers(1, 4, n)
        s["byt_s"] = s["pkt_s"] * 60
        s["pkt_d"] = np.zeros(n, np.int64)
        s["byt_d"] = np.zeros(n, np.int64)
        s["plen"] = np.full(n, 60)
        s["dur"] = rng.integers(1000, 30000, n)
    elif kind in ("udp_flood_small", "udp_flood_large"):
        n = max(1, int(round(span_min * len(src))))
        t = times(n)
        s = service_sessions(rng, "dns", t, src[rng.integers(0, len(src), n)], np.full(n, dst[0]),
                             dport=np.full(n, inc.ports[0]))
        dur_s = np.minimum(60.0, (b - t) / 1000.0)
        pkts = np.maximum(1, (inc.params["pps"] / len(src) * dur_s
                              * rng.uniform(0.8, 1.2, n)).astype(np.int64))
        s["pkt_s"] = pkts
        s["byt_s"] = pkts * rng.integers(1300, 1420, n)
        s["pkt_d"] = np.ones(n, np.int64)
        s["byt_d"] = np.full(n, 56)
        s["dur"] = (dur_s * 1000).astype(np.int64)
        s["plen"] = np.full(n, 1386)
    elif kind == "ssh_bruteforce":
        n = rng.poisson(inc.params["attempts_per_minute"] * span_min)
        t = times(n)
        s = service_sessions(rng, "ssh", t, np.full(n, src[0]), np.full(n, dst[0]))
        s["pkt_s"] = rng.integers(10, 18, n)
        s["pkt_d"] = rng.integers(8, 14, n)
        s["byt_s"] = s["pkt_s"] * 95
        s["byt_d"] = s["pkt_d"] * 130
        s["dur"] = rng.integers(1500, 6000, n)
    elif kind == "lateral_movement":
        n = rng.poisson(2 * len(dst) * span_min / total_min)
        t = times(n)
        ports = np.asarray(inc.ports)
        s = service_sessions(rng, "smb", t, np.full(n, src[0]), dst[rng.integers(0, len(dst), n)],
                             dport=ports[rng.integers(0, len(ports), n)])
    elif kind == "exfiltration":
        n = max(1, rng.poisson(4 * span_min / total_min))
        t = times(n)
        s = service_sessions(rng, "https", t, np.full(n, src[0]), np.full(n, dst[0]))
        s["byt_s"] = np.full(n, inc.params["bytes"] // 4, dtype=np.int64)
        s["pkt_s"] = s["byt_s"] // 1400 + 1
        s["dur"] = np.minimum((b - t), rng.integers(300_000, 900_000, n))
    elif kind == "beaconing":
        period = inc.params["period_s"] * 1000
        first = inc.start + ((a - inc.start + period - 1) // period) * period
        base = np.arange(first, b, period, dtype=np.int64)
        t = base + rng.integers(-period // 40, period // 40 + 1, len(base))
        t = np.clip(t, a, b - 1)
        n = len(t)
        s = service_sessions(rng, "https", t, np.full(n, src[0]), np.full(n, dst[0]),
                             dport=np.full(n, inc.ports[0]))
        s["pkt_s"] = rng.integers(5, 8, n)
        s["pkt_d"] = rng.integers(4, 7, n)
        s["byt_s"] = s["pkt_s"] * 120
        s["byt_d"] = s["pkt_d"] * 150
        s["dur"] = rng.integers(200, 900, n)
    elif kind == "deny_spike":
        n = rng.poisson(inc.params["sessions_per_minute"] * span_min)
        t = times(n)
        ports = np.asarray(inc.ports)
        s = service_sessions(rng, "smb", t, np.full(n, src[0]), dst[rng.integers(0, len(dst), n)],
                             dport=ports[rng.integers(0, len(ports), n)])
    else:  # pragma: no cover
        raise ValueError(kind)
    s["inc"] = np.full(len(s["t"]), inc.id)
    return s
