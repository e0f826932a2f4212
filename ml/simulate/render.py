"""Text output: NSX DFW packet-log lines (every variant), nfdump CSV rows and pmacct JSON."""

from __future__ import annotations

import numpy as np

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
ACTION_TEXT = ("PASS", "DROP", "REJECT")
PROTO_TEXT = {6: "TCP", 17: "UDP", 1: "ICMP"}
CLOSE_TEXT = ("", " FIN", " RST", " TIMEOUT")
FLAG_TEXT = ("", " S", " SEW")
EDGE_SD = ('[nsx@6876 comp="nsx-edge" subcomp="datapathd.firewallpkt" level="INFO"]')
NFDUMP_HEADER = ("ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,"
                 "dmk,dtos,dir,nh,nhb,svln,dvln,ismc,odmc,idmc,osmc,mpls1,mpls2,mpls3,mpls4,"
                 "mpls5,mpls6,mpls7,mpls8,mpls9,mpls10,cl,sl,al,ra,eng,exid,tr")
NFDUMP_TAIL = (",0.0.0.0,0.0.0.0,0,0,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,"
               "00:00:00:00:00:00" + ",0-0-0" * 10 + ",0.000,0.000,0.000,")
NF_PROTO = {6: "TCP", 17: "UDP", 1: "ICMP", 2: "IGMP", 58: "ICMP6", 47: "GRE", 50: "ESP"}
PM_PROTO = {6: "tcp", 17: "udp", 1: "icmp", 2: "igmp", 58: "ipv6-icmp", 47: "gre", 50: "esp"}


def iso_ms(t: np.ndarray) -> list[str]:
    """``YYYY-MM-DDTHH:MM:SS.mmm`` for epoch milliseconds (UTC).

    Examples
    --------
    >>> iso_ms(np.array([1508452685586]))
    ['2017-10-19T22:38:05.586']
    """
    return np.datetime_as_string(np.asarray(t, dtype="datetime64[ms]"), unit="ms").tolist()


def bsd_time(iso: str) -> str:
    """RFC 3164 timestamp (``Oct 19 22:38:05``; day padded with a space) from an ISO string.

    Examples
    --------
    >>> bsd_time("2024-03-04T00:00:01.123")
    'Mar  4 00:00:01'
    """
    return f"{MONTHS[int(iso[5:7]) - 1]} {int(iso[8:10]):2d} {iso[11:19]}"


class NsxRenderer:
    """Turns event columns into NSX lines; all per-VM / per-host / per-rule text is precomputed."""

    def __init__(self, dc, ruleset, output_cfg: dict) -> None:
        self.addr = dc.addresses.text
        self.v6 = np.asarray(dc.addresses.v6, dtype=bool)
        tags = bool(output_cfg.get("rule_tags", True))
        term_share = float(output_cfg.get("term_action_share", 0.3))
        self.hosts = dc.hosts
        self.vm_host = [v.host for v in dc.vms]
        self.vm_idf = []
        self.vm_rstyle = []
        for n, v in enumerate(dc.vms):
            if v.id_style == "vif":
                self.vm_idf.append(v.vif + " ")
                mainrs = (n * 37 % 100) < float(output_cfg.get("mainrs_share", 0.2)) * 100
                self.vm_rstyle.append("mainrs" if mainrs else "bare")
            elif v.id_style == "hash":
                self.vm_idf.append(v.filter_hash + " ")
                self.vm_rstyle.append("ruleset")
            else:
                self.vm_idf.append("")
                self.vm_rstyle.append("bare" if dc.hosts[v.host].prefix == "edge" else "ruleset")
        self.rule_text = {
            "bare": [r.id for r in ruleset.rules],
            "ruleset": [f"{r.ruleset}/{r.id}" for r in ruleset.rules],
            "mainrs": [f"mainrs/{r.id}" for r in ruleset.rules],
        }
        self.rule_tag = [(" " + r.tag) if (tags and r.tag) else "" for r in ruleset.rules]
        # hosts: how a line starts, and whether TERM lines carry the action
        self.host_term_action = [h.prefix == "edge" or (i * 7919 % 100) < term_share * 100
                                 for i, h in enumerate(dc.hosts)]
        self.icmp_tc_share = float(output_cfg.get("icmp_typecode_share", 0.5))

    def lines(self, ev: dict[str, np.ndarray]) -> list[str]:
        """One line per event (``kind`` 0 = match, 1 = TERM), in the order given."""
        n = len(ev["t"])
        if n == 0:
            return []
        iso = iso_ms(ev["t"])
        addr = self.addr
        v6 = self.v6[ev["src"]].tolist()
        hosts = self.hosts
        vm_host = self.vm_host
        vm_idf = self.vm_idf
        vm_rstyle = self.vm_rstyle
        rule_text = self.rule_text
        rule_tag = self.rule_tag
        term_act = self.host_term_action
        out = []
        append = out.append
        cols = [ev[c].tolist() for c in ("kind", "vm", "src", "dst", "proto", "sport", "dport",
                                         "dirn", "rule", "action", "plen", "flags", "close",
                                         "icmp_t", "icmp_c", "pkt_s", "pkt_d", "byt_s", "byt_d",
                                         "tc")]
        for i, (kind, vm, src, dst, proto, sport, dport, dirn, rule, action, plen, flags, close,
                it, ic, ps, pd, bs, bd, tc) in enumerate(zip(*cols)):
            h = vm_host[vm]
            host = hosts[h]
            style = host.prefix
            edge = style == "edge"
            fam = "INET6" if v6[i] else "INET"
            if proto == 6 or proto == 17:
                ptxt = "TCP" if proto == 6 else "UDP"
                ep = f"{addr[src]}/{sport}->{addr[dst]}/{dport}"
            elif proto == 1:
                ptxt = f"ICMP {it} {ic}" if (kind or tc) else "ICMP"
                ep = f"{addr[src]}->{addr[dst]}"
            else:
                ptxt = f"PROTO {proto}"
                ep = f"{addr[src]}->{addr[dst]}"
            rtxt = rule_text[vm_rstyle[vm]][rule]
            d = "OUT" if dirn else "IN"
            idf = vm_idf[vm]
            if kind == 0:
                body = (f"{idf}{fam} {'reason-match' if edge else 'match'} {ACTION_TEXT[action]} "
                        f"{rtxt} {d} {plen} {ptxt} {ep}{FLAG_TEXT[flags]}{rule_tag[rule]}")
            elif edge:
                body = f"{fam} TERM {ACTION_TEXT[action]} {rtxt} {d} {ptxt} {ep}"
            else:
                if dirn:
                    a, b, c, e = pd, ps, bd, bs
                else:
                    a, b, c, e = ps, pd, bs, bd
                term = " TERM PASS" if term_act[h] else " TERM"
                body = (f"{idf}{fam}{term} {rtxt} {d} {ptxt}{CLOSE_TEXT[close]} {ep} "
                        f"{a}/{b} {c}/{e}{rule_tag[rule]}")
            ts = iso[i]
            if style == "plain":
                append(f"{ts}Z {body}")
            elif style == "esxi8":
                append(f"{ts}Z No(13) FIREWALL-PKTLOG[{host.pid}]: {body}")
            elif style == "rfc5424":
                append(f"<182>1 {ts}Z {host.name} FIREWALL-PKTLOG {host.pid} - - {body}")
            elif style == "rfc5424_underscore":
                append(f"<182>1 {ts}Z {host.name} FIREWALL_PKTLOG {host.pid} - - {body}")
            elif style == "vmc":
                append(f"<99>{ts}Z {host.name} FIREWALL_PKTLOG: {body}")
            elif style == "syslog_bsd":
                append(f"<134>{bsd_time(ts)} {host.name} dfwpktlogs: {body}")
            elif style == "syslog_bsd_pid":
                append(f"<134>{bsd_time(ts)} {host.name} dfwpktlogs[{host.pid}]: {body}")
            else:  # edge
                append(f"<181>1 {ts}000+00:00 {host.name} NSX {host.pid} FIREWALL {EDGE_SD} "
                       f"<1 {host.edge_uuid}> {body}")
        return out

    def host_names(self, ev: dict[str, np.ndarray]) -> list[str]:
        names = [h.name for h in self.hosts]
        return [names[self.vm_host[v]] for v in ev["vm"].tolist()]


def _nf_time(t: np.ndarray) -> list[str]:
    return [s.replace("T", " ") for s in iso_ms(t)]


def tcp_flag_text(flags: int) -> str:
    """nfdump's six-character TCP flag field (``UAPRSF``, dots for unset flags).

    Examples
    --------
    >>> tcp_flag_text(0x1b)
    '.AP.SF'
    """
    return "".join(ch if flags & bit else "." for ch, bit in
                   (("U", 32), ("A", 16), ("P", 8), ("R", 4), ("S", 2), ("F", 1)))


def flow_records(fl: dict[str, np.ndarray], addr: list[str]) -> tuple[list[str], list[str]]:
    """nfdump CSV rows and pmacct JSON lines for flow records (one per direction with packets)."""
    n = len(fl["t"])
    if n == 0:
        return [], []
    ts = _nf_time(fl["t"])
    te = _nf_time(fl["t"] + fl["dur"])
    nf, pm = [], []
    cols = [fl[c].tolist() for c in ("src", "dst", "sport", "dport", "proto", "pkts", "byts",
                                     "dur", "tflags", "router")]
    for i, (src, dst, sp, dp, pr, pk, by, du, tf, rt) in enumerate(zip(*cols)):
        sp_ = max(sp, 0)
        dp_ = max(dp, 0)
        flg = tcp_flag_text(tf) if pr == 6 else "......"
        nf.append(f"{ts[i]},{te[i]},{du / 1000:.3f},{addr[src]},{addr[dst]},{sp_},{dp_},"
                  f"{NF_PROTO.get(pr, str(pr))},{flg},0,0,{pk},{by},0,0,{rt % 16 + 1},"
                  f"{(rt + 3) % 16 + 1},0,0,0,0,0,0{NFDUMP_TAIL}10.255.0.{rt % 250 + 1},0/0,0,"
                  f"1970-01-01 00:00:00.000")
        pm.append(f'{{"event_type": "purge", "ip_src": "{addr[src]}", "ip_dst": "{addr[dst]}", '
                  f'"port_src": {sp_}, "port_dst": {dp_}, "tcp_flags": "{tf if pr == 6 else 0}", '
                  f'"ip_proto": "{PM_PROTO.get(pr, str(pr))}", "timestamp_start": "{ts[i]}000", '
                  f'"timestamp_end": "{te[i]}000", "packets": {pk}, "bytes": {by}}}')
    return nf, pm


def nfdump_summary(flows: int, byts: int, pkts: int, seconds: float) -> list[str]:
    secs = max(seconds, 1e-3)
    return ["Summary", "flows,bytes,packets,avg_bps,avg_pps,avg_bpp",
            f"{flows},{byts},{pkts},{int(byts * 8 / secs)},{int(pkts / secs)},"
            f"{int(byts / pkts) if pkts else 0}"]
