"""Sessions as numpy columns: the service catalogue, baseline traffic edges and their sampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.errors import ModelInputError

# name: proto, destination ports, source port (-1 ephemeral, -2 none, else fixed),
# first-packet lengths, median packets src->dst and dst->src, bytes per packet each way,
# median duration (s), log-normal sigma, traffic class label
SERVICES: dict[str, dict] = {
    "dns": dict(proto=17, ports=[53], sport=-1, plen=[60, 71, 81, 92], pk=(1, 1), bpp=(70, 130),
                dur=0.05, sigma=0.4, cls="dns"),
    "ntp": dict(proto=17, ports=[123], sport=123, plen=[76], pk=(1, 1), bpp=(76, 76), dur=0.02,
                sigma=0.2, cls="ntp"),
    "ldap": dict(proto=6, ports=[389, 636], sport=-1, plen=[60], pk=(8, 7), bpp=(120, 400),
                 dur=0.4, sigma=0.8, cls="ldap"),
    "tivoli": dict(proto=6, ports=[1500], sport=-1, plen=[60], pk=(60000, 30000),
                   bpp=(1420, 60), dur=900, sigma=0.9, cls="backup"),
    "http": dict(proto=6, ports=[80], sport=-1, plen=[60, 52], pk=(8, 9), bpp=(180, 900),
                 dur=1.5, sigma=1.2, cls="web"),
    "https": dict(proto=6, ports=[443], sport=-1, plen=[60, 52], pk=(12, 16), bpp=(200, 1100),
                  dur=4.0, sigma=1.3, cls="web"),
    "smtp": dict(proto=6, ports=[25, 587], sport=-1, plen=[60], pk=(18, 12), bpp=(700, 90),
                 dur=2.0, sigma=1.0, cls="mail"),
    "ssh": dict(proto=6, ports=[22], sport=-1, plen=[60], pk=(40, 35), bpp=(110, 140),
                dur=120, sigma=1.5, cls="ssh"),
    "rdp": dict(proto=6, ports=[3389], sport=-1, plen=[52], pk=(300, 500), bpp=(120, 700),
                dur=600, sigma=1.2, cls="rdp"),
    "api": dict(proto=6, ports=[8443], sport=-1, plen=[60], pk=(10, 10), bpp=(300, 800),
                dur=1.0, sigma=1.0, cls="web"),
    "app": dict(proto=6, ports=[8080], sport=-1, plen=[60], pk=(9, 9), bpp=(250, 700),
                dur=0.3, sigma=1.0, cls="app"),
    "postgres": dict(proto=6, ports=[5432], sport=-1, plen=[60], pk=(14, 14), bpp=(150, 600),
                     dur=0.8, sigma=1.2, cls="db"),
    "node_exporter": dict(proto=6, ports=[9100], sport=-1, plen=[60], pk=(6, 8), bpp=(90, 1200),
                          dur=0.1, sigma=0.5, cls="monitoring"),
    "icmp_echo": dict(proto=1, ports=[0], sport=-2, plen=[84], pk=(1, 1), bpp=(84, 84),
                      dur=0.01, sigma=0.1, cls="icmp", icmp=(8, 0)),
    "igmp_query": dict(proto=2, ports=[0], sport=-2, plen=[36, 32], pk=(1, 0), bpp=(36, 0),
                       dur=0.0, sigma=0.0, cls="multicast"),
    "igmp_report": dict(proto=2, ports=[0], sport=-2, plen=[40], pk=(1, 0), bpp=(40, 0),
                        dur=0.0, sigma=0.0, cls="multicast"),
    "mdns": dict(proto=17, ports=[5353], sport=5353, plen=[92], pk=(1, 0), bpp=(92, 0),
                 dur=0.0, sigma=0.0, cls="multicast"),
    "dhcpv6": dict(proto=17, ports=[547], sport=546, plen=[143], pk=(1, 0), bpp=(143, 0),
                   dur=0.0, sigma=0.0, cls="dhcp"),
    "icmpv6": dict(proto=58, ports=[0], sport=-2, plen=[76, 72], pk=(1, 0), bpp=(76, 0),
                   dur=0.0, sigma=0.0, cls="icmp"),
    "scan": dict(proto=6, ports=[22, 23, 80, 443, 445, 1433, 3306, 3389, 5432, 5900, 8080, 8443],
                 sport=-1, plen=[44, 60], pk=(1, 1), bpp=(44, 40), dur=0.01, sigma=0.3,
                 cls="scan"),
    "agent": dict(proto=6, ports=[9887], sport=-1, plen=[60], pk=(20, 16), bpp=(300, 250),
                  dur=8.0, sigma=1.0, cls="app"),
    "smb": dict(proto=6, ports=[445], sport=-1, plen=[52], pk=(3, 1), bpp=(52, 40), dur=0.5,
                sigma=0.5, cls="smb"),
}

COLUMNS = ("t", "dur", "src", "dst", "proto", "sport", "dport", "svc", "inc", "pkt_s", "pkt_d",
           "byt_s", "byt_d", "plen", "icmp_t", "icmp_c", "log_vm")
SERVICE_NAMES = tuple(SERVICES)


def empty_sessions() -> dict[str, np.ndarray]:
    return {c: np.zeros(0, dtype=np.int64) for c in COLUMNS}


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if len(p["t"])]
    if not parts:
        return empty_sessions()
    return {c: np.concatenate([p[c] for p in parts]).astype(np.int64) for c in COLUMNS}


def service_sessions(rng: np.random.Generator, service: str, t: np.ndarray, src: np.ndarray,
                     dst: np.ndarray, *, dport: np.ndarray | None = None,
                     scale: float = 1.0) -> dict[str, np.ndarray]:
    """Sessions of one service: ports, first-packet length, heavy-tailed counters and durations."""
    spec = SERVICES[service]
    n = len(t)
    ports = np.asarray(spec["ports"])
    if dport is None:
        dport = ports[rng.integers(0, len(ports), n)] if len(ports) > 1 else np.full(n, ports[0])
    sp = spec["sport"]
    if sp == -1:
        sport = rng.integers(32768, 61000, n)
    else:
        sport = np.full(n, sp)
    sigma = spec["sigma"]
    noise = rng.lognormal(0.0, sigma, n) if sigma > 0 else np.ones(n)
    ps = np.maximum(1, np.rint(spec["pk"][0] * scale * noise)).astype(np.int64)
    pd = np.rint(spec["pk"][1] * scale * noise * rng.uniform(0.8, 1.2, n)).astype(np.int64)
    if spec["pk"][1] > 0:
        pd = np.maximum(pd, 1)
    bs = ps * np.maximum(28, rng.normal(spec["bpp"][0], spec["bpp"][0] * 0.1, n)).astype(np.int64)
    bd = pd * np.maximum(28, rng.normal(spec["bpp"][1], max(1, spec["bpp"][1]) * 0.1, n)
                         ).astype(np.int64) if spec["bpp"][1] else np.zeros(n, np.int64)
    dur = np.rint(spec["dur"] * 1000 * noise).astype(np.int64)
    plen_choices = np.asarray(spec["plen"])
    plen = plen_choices[rng.integers(0, len(plen_choices), n)]
    icmp = spec.get("icmp", (-1, -1))
    return {
        "t": t.astype(np.int64), "dur": dur, "src": src.astype(np.int64),
        "dst": dst.astype(np.int64), "proto": np.full(n, spec["proto"]),
        "sport": sport, "dport": np.asarray(dport), "svc": np.full(n, SERVICE_NAMES.index(service)),
        "inc": np.full(n, -1), "pkt_s": ps, "pkt_d": pd, "byt_s": bs, "byt_d": bd, "plen": plen,
        "icmp_t": np.full(n, icmp[0]), "icmp_c": np.full(n, icmp[1]), "log_vm": np.full(n, -1),
    }


def zipf_weights(rng: np.random.Generator, n: int, alpha: float) -> np.ndarray:
    """Normalised weights 1/rank^alpha over a random ranking of n members."""
    if n == 0:
        return np.zeros(0)
    w = 1.0 / np.arange(1, n + 1) ** alpha
    w = w[rng.permutation(n)]
    return w / w.sum()


@dataclass
class Edge:
    """A baseline traffic relation: ``rate`` sessions per hour (at the diurnal mean) of a service
    from members of one pool to members of another."""

    name: str
    service: str
    src: np.ndarray
    dst: np.ndarray
    src_cdf: np.ndarray
    dst_cdf: np.ndarray
    rate: float
    same_org: bool
    diurnal: bool
    log_at: np.ndarray | None     # VM ids where sessions between non-VM addresses are logged
    dst_org: np.ndarray | None = None

    @classmethod
    def from_spec(cls, spec: dict, dc, rng: np.random.Generator, addr_org: np.ndarray) -> Edge:
        try:
            src = dc.pool(spec["from"])
            dst = dc.pool(spec["to"])
        except KeyError as exc:
            raise ModelInputError(f"traffic edge {spec}: unknown pool {exc}",
                             hint=f"pools: {', '.join(sorted(dc.pools))}") from exc
        service = spec["service"]
        if service not in SERVICES:
            raise ModelInputError(f"traffic edge {spec}: unknown service {service!r}",
                             hint=f"services: {', '.join(SERVICES)}")
        alpha = float(spec.get("skew", 1.0))
        log_at = None
        if "log_at" in spec:
            log_at = np.array([dc.addresses.vm[i] for i in dc.pool(spec["log_at"])], dtype=np.int64)
        return cls(name=spec.get("name", f"{spec['from']}->{spec['to']}:{service}"),
                   service=service, src=src, dst=dst,
                   src_cdf=np.cumsum(zipf_weights(rng, len(src), alpha)),
                   dst_cdf=np.cumsum(zipf_weights(rng, len(dst), float(spec.get("dst_skew", 0.5)))),
                   rate=float(spec["rate"]), same_org=bool(spec.get("same_org", False)),
                   diurnal=bool(spec.get("diurnal", True)), log_at=log_at,
                   dst_org=addr_org[dst])

    def _by_org(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Destinations grouped by organisation: sorted keys, group starts, sizes, members."""
        if getattr(self, "_org_groups", None) is None:
            keys, count = np.unique(self.dst_org, return_counts=True)
            flat = self.dst[np.argsort(self.dst_org, kind="stable")].astype(np.int64)
            start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
            self._org_groups = (keys, start, count.astype(np.int64), flat)
        return self._org_groups

    def sample(self, rng: np.random.Generator, t0: int, t1: int, mult: float,
               addr_org: np.ndarray) -> dict[str, np.ndarray]:
        hours = (t1 - t0) / 3_600_000
        lam = self.rate * hours * (mult if self.diurnal else 1.0)
        n = int(rng.poisson(lam))
        t = rng.integers(t0, t1, n)
        src = self.src[np.minimum(np.searchsorted(self.src_cdf, rng.random(n)), len(self.src) - 1)]
        if self.same_org:
            # a uniform destination of the source's organisation (none: the session is dropped)
            keys, start, count, flat = self._by_org()
            org = addr_org[src]
            u = rng.random(n)
            if len(keys):
                pos = np.minimum(np.searchsorted(keys, org), len(keys) - 1)
                cnt = np.where(keys[pos] == org, count[pos], 0)
                k = np.maximum(np.minimum((u * cnt).astype(np.int64), cnt - 1), 0)
                dst = np.where(cnt > 0, flat[start[pos] + k], -1)
            else:
                dst = np.full(n, -1, dtype=np.int64)
            keep = dst >= 0
            t, src, dst = t[keep], src[keep], dst[keep]
        else:
            dst = self.dst[np.minimum(np.searchsorted(self.dst_cdf, rng.random(n)),
                                      len(self.dst) - 1)]
        ok = src != dst
        s = service_sessions(rng, self.service, t[ok], src[ok], dst[ok])
        if self.log_at is not None and len(self.log_at):
            s["log_vm"] = self.log_at[rng.integers(0, len(self.log_at), len(s["t"]))]
        return s


def diurnal_multiplier(t_ms: float, amplitude: float, peak_hour: float,
                       weekend_factor: float) -> float:
    """Rate multiplier at a time: a daily cosine around ``peak_hour``, lower on weekends.

    Examples
    --------
    >>> round(diurnal_multiplier(14 * 3_600_000, 0.6, 14.0, 0.5), 2)  # Thursday 1970-01-01, 14h
    1.6
    """
    hour = (t_ms / 3_600_000) % 24
    m = 1.0 + amplitude * np.cos(2 * np.pi * (hour - peak_hour) / 24)
    weekday = int((t_ms // 86_400_000 + 3) % 7)    # 0 = Monday
    if weekday >= 5:
        m *= weekend_factor
    return float(m)
