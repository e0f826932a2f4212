"""The simulated datacenter: tenants, VMs on hypervisors, shared services and the internet side."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import numpy as np

from ml.simulate.scenario import Scenario

VM_KINDS = ("web", "app", "db", "mail")
PREFIX_STYLES = ("plain", "syslog_bsd", "syslog_bsd_pid", "rfc5424", "rfc5424_underscore",
                 "vmc", "esxi8", "edge")


def ipv6_text(addr: str) -> str:
    """IPv6 written the way NSX prints it: eight groups, no ``::``, no leading zeros.

    Examples
    --------
    >>> ipv6_text("fe80::68c2:8472:2364:9be")
    'fe80:0:0:0:68c2:8472:2364:9be'
    """
    groups = ipaddress.IPv6Address(addr).exploded.split(":")
    return ":".join(g.lstrip("0") or "0" for g in groups)


class AddressTable:
    """Every address the simulation uses, as index -> text / IPv4 integer / owner attributes."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.v4: list[int] = []
        self.v6: list[bool] = []
        self.org: list[int] = []
        self.vm: list[int] = []
        self.role: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, addr: str, *, role: str, org: int = -1, vm: int = -1) -> int:
        if addr in self._index:
            return self._index[addr]
        ip = ipaddress.ip_address(addr)
        idx = len(self.text)
        self._index[addr] = idx
        self.text.append(ipv6_text(addr) if ip.version == 6 else addr)
        self.v4.append(int(ip) if ip.version == 4 else 0)
        self.v6.append(ip.version == 6)
        self.org.append(org)
        self.vm.append(vm)
        self.role.append(role)
        return idx

    def index(self, addr: str) -> int:
        return self._index[addr]

    def __len__(self) -> int:
        return len(self.text)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"v4": np.asarray(self.v4, dtype=np.int64), "v6": np.asarray(self.v6, dtype=bool),
                "org": np.asarray(self.org, dtype=np.int32),
                "vm": np.asarray(self.vm, dtype=np.int32)}


@dataclass
class Host:
    """A hypervisor (or an edge node) that writes DFW packet logs."""

    name: str
    prefix: str          # one of PREFIX_STYLES
    pid: int
    edge_uuid: str = ""


@dataclass
class VM:
    name: str
    org: int
    kind: str
    addr: int            # index into the address table (IPv4)
    addr6: int           # link-local IPv6 address index
    host: int
    vif: str             # last 8 hex digits of the VIF id
    filter_hash: str     # decimal filter hash (NSX-V style)
    id_style: str        # vif | hash | none: what the host prints after the timestamp


@dataclass
class Datacenter:
    """The topology. ``pools`` maps a pool name to address indices (see docs/simulator.md)."""

    addresses: AddressTable
    hosts: list[Host]
    vms: list[VM]
    orgs: list[str]
    org_cidrs: list[str]
    pools: dict[str, np.ndarray] = field(default_factory=dict)
    offices: dict[int, list[str]] = field(default_factory=dict)     # org -> office CIDRs
    partners: dict[int, list[str]] = field(default_factory=dict)    # org -> partner CIDRs
    groups: dict[str, list[str]] = field(default_factory=dict)      # group -> members (CIDR/IP)

    def pool(self, name: str) -> np.ndarray:
        if name not in self.pools:
            raise KeyError(name)
        return self.pools[name]


def _random_hosts_in(rng: np.random.Generator, prefixes: list[str], n: int,
                     taken: set[str]) -> list[str]:
    nets = [ipaddress.ip_network(p) for p in prefixes]
    out: list[str] = []
    while len(out) < n:
        net = nets[int(rng.integers(len(nets)))]
        size = net.num_addresses
        off = int(rng.integers(1, max(2, size - 1)))
        addr = str(net.network_address + off)
        if addr not in taken:
            taken.add(addr)
            out.append(addr)
    return out


def _mix_assign(rng: np.random.Generator, mix: dict[str, float], n: int) -> list[str]:
    """n labels following ``mix``; every label with a positive share appears when n allows."""
    names = [k for k, v in mix.items() if v > 0]
    shares = np.array([mix[k] for k in names], dtype=float)
    shares = shares / shares.sum()
    out = list(names[:n])
    if n > len(out):
        out += list(rng.choice(names, size=n - len(out), p=shares))
    order = rng.permutation(n)
    return [str(out[i]) for i in order]


def build_datacenter(scenario: Scenario) -> Datacenter:
    """Build the topology from the scenario; depends only on ``[datacenter] topology_seed``.

    Examples
    --------
    >>> from ml.simulate.scenario import load_scenario
    >>> dc = build_datacenter(load_scenario("default"))
    >>> len(dc.pool("resolver")), len(dc.vms) > 20
    (1, True)
    """
    d = scenario.section("datacenter")
    net = scenario.section("internet")
    al = scenario.section("allowlists")
    out_cfg = scenario.section("output")
    rng = np.random.default_rng([int(d["topology_seed"]), 101])
    at = AddressTable()
    taken: set[str] = set()
    pools: dict[str, list[int]] = {}

    def put(pool: str, idx: int) -> None:
        pools.setdefault(pool, []).append(idx)

    # shared services
    for role in ("resolver", "ldap", "backup", "monitoring", "jump"):
        idx = at.add(d[role], role=role)
        put(role, idx)
        put("infra", idx)
    for ntp in d["ntp"]:
        idx = at.add(ntp, role="ntp")
        put("ntp", idx)
        put("infra", idx)

    # hypervisors
    n_hosts = int(d["hypervisors"])
    styles = _mix_assign(rng, out_cfg["format_mix"], n_hosts)
    hosts = []
    for n in range(n_hosts):
        style = styles[n]
        name = d["hostname_format"].format(n=n + 1)
        if style == "edge":
            name = f"edge-{n + 1:02d}.dc1.example.net" if "{n" in d["hostname_format"] else name
        uuid = rng.integers(0, 2**63, size=2)
        hosts.append(Host(name=name, prefix=style, pid=int(rng.integers(2_000_000, 2_200_000)),
                          edge_uuid=f"{int(uuid[0]):016x}:{int(uuid[1]):016x}"))

    # tenants and VMs
    orgs, org_cidrs, vms = [], [], []
    id_styles = d["id_styles"]
    id_names = list(id_styles)
    id_p = np.array([id_styles[k] for k in id_names], float)
    id_p /= id_p.sum()
    groups: dict[str, list[str]] = {}
    for k in range(int(d["orgs"])):
        orgs.append(f"org-{k + 1}")
        cidr = d["org_prefix"].format(org=int(d["first_org_octet"]) + k)
        org_cidrs.append(cidr)
        base = ipaddress.ip_network(cidr).network_address
        counts = {
            "web": int(rng.integers(d["web_vms"][0], d["web_vms"][1] + 1)),
            "app": int(rng.integers(d["app_vms"][0], d["app_vms"][1] + 1)),
            "db": int(rng.integers(d["db_vms"][0], d["db_vms"][1] + 1)),
            "mail": int(rng.random() < float(d["mail_share"])),
        }
        for tier_no, kind in enumerate(VM_KINDS, start=1):
            members = []
            for j in range(counts[kind]):
                addr = str(base + 256 * tier_no + 10 + j)
                vm_no = len(vms)
                a4 = at.add(addr, role=kind, org=k, vm=vm_no)
                a6 = -1
                if d["ipv6"]:
                    ll = f"fe80::250:56ff:fe{(vm_no >> 8) & 0xff:02x}:{vm_no & 0xff:02x}{k:02x}"
                    a6 = at.add(ll, role="vm6", org=k, vm=vm_no)
                    put("v6_vms", a6)
                host = int(rng.integers(n_hosts))
                while hosts[host].prefix == "edge" and rng.random() < 0.5:
                    host = int(rng.integers(n_hosts))
                vif = f"{int(rng.integers(0, 2**32)):08x}"
                fh = str(int(rng.integers(1000, 99999)))
                style = "none" if hosts[host].prefix == "edge" else str(rng.choice(id_names, p=id_p))
                vms.append(VM(name=f"{orgs[-1]}-{kind}-{j + 1:02d}", org=k, kind=kind, addr=a4,
                              addr6=a6, host=host, vif=vif, filter_hash=fh, id_style=style))
                put("vms", a4)
                put(kind, a4)
                put(orgs[-1], a4)
                put(f"{orgs[-1]}-{kind}", a4)
                members.append(addr)
            groups[f"{orgs[-1]}-{kind}"] = members
    # every log format in the mix gets traffic: a host without VMs takes one from a busy host
    for h in range(n_hosts):
        busy = {hosts[v.host].prefix for v in vms}
        if hosts[h].prefix in busy or not vms:
            continue
        load = np.bincount([v.host for v in vms], minlength=n_hosts)
        donor = next((v for v in vms if load[v.host] > 1), None)
        if donor is not None:
            donor.host = h
            if hosts[h].prefix == "edge":
                donor.id_style = "none"
            elif donor.id_style == "none":
                donor.id_style = "vif"
    groups["vms"] = [at.text[i] for i in pools["vms"]]
    groups["infra"] = [at.text[i] for i in pools["infra"]]
    for role in ("resolver", "ldap", "backup", "monitoring", "jump", "ntp"):
        groups[role] = [at.text[i] for i in pools[role]]
    groups["org-cidrs"] = list(org_cidrs)

    # internet side
    for a in _random_hosts_in(rng, net["client_prefixes"], int(net["clients"]), taken):
        put("clients", at.add(a, role="client"))
    for a in _random_hosts_in(rng, [net["crawler_prefix"]], int(net["crawlers"]), taken):
        put("crawlers", at.add(a, role="crawler"))
    for a in _random_hosts_in(rng, net["scanner_prefixes"], int(net["scanners"]), taken):
        put("scanners", at.add(a, role="scanner"))
    for a in _random_hosts_in(rng, net["server_prefixes"], int(net["servers"]), taken):
        put("servers", at.add(a, role="server"))
    offices: dict[int, list[str]] = {}
    partners: dict[int, list[str]] = {}
    office_net = ipaddress.ip_network(net["office_prefix"])
    partner_net = ipaddress.ip_network(net["partner_prefix"])
    office_subnets = list(office_net.subnets(new_prefix=27))
    partner_subnets = list(partner_net.subnets(new_prefix=29))
    n_off = int(al.get("offices_per_org", 2))
    n_par = int(net["partners_per_org"])
    for k in range(len(orgs)):
        offices[k] = [str(office_subnets[k * n_off + i]) for i in range(n_off)]
        partners[k] = [str(partner_subnets[k * n_par + i]) for i in range(n_par)]
        for cidr in offices[k]:
            hosts_in = list(ipaddress.ip_network(cidr).hosts())
            for h in rng.choice(len(hosts_in), size=4, replace=False):
                put("offices", at.add(str(hosts_in[int(h)]), role="office", org=k))
        for cidr in partners[k]:
            hosts_in = list(ipaddress.ip_network(cidr).hosts())
            for h in rng.choice(len(hosts_in), size=2, replace=False):
                put("partners", at.add(str(hosts_in[int(h)]), role="partner", org=k))
        groups[f"{orgs[k]}-offices"] = offices[k]
        groups[f"{orgs[k]}-partners"] = partners[k]

    # multicast and special addresses
    put("unspecified", at.add("0.0.0.0", role="unspecified"))
    put("igmp_all", at.add("224.0.0.1", role="multicast"))
    put("igmp_report", at.add("224.0.0.22", role="multicast"))
    put("mdns", at.add("224.0.0.251", role="multicast"))
    if d["ipv6"]:
        put("v6_dhcp", at.add("ff02::1:2", role="multicast6"))
        put("v6_allnodes", at.add("ff02::1", role="multicast6"))
        put("v6_allrouters", at.add("ff02::2", role="multicast6"))
        put("v6_mdns", at.add("ff02::fb", role="multicast6"))
    return Datacenter(addresses=at, hosts=hosts, vms=vms, orgs=orgs, org_cidrs=org_cidrs,
                      pools={k: np.asarray(v, dtype=np.int32) for k, v in pools.items()},
                      offices=offices, partners=partners, groups=groups)
