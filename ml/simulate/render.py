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
# ".mmm" for milliseconds 0..999, and "" at 1000 (timestamps without milliseconds)
MS_TEXT = np.asarray([f".{m:03d}" for m in range(1000)] + [""], dtype=object)


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
    """Turns event columns into NSX lines from string tables indexed by integer codes.

    Every per-host, per-VM, per-rule, per-port and per-second piece of text is built once (or
    once per chunk for the seconds) and looked up with numpy; each line is then one string
    concatenation of about a dozen pieces, with no per-line branching or date formatting.
    """

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
        self._build_tables()

    def _build_tables(self) -> None:
        hosts, nvm, nr = self.hosts, len(self.vm_host), len(self.rule_tag)
        self._nr = nr
        vm_host = np.asarray(self.vm_host, dtype=np.int64)
        # per host: text before the timestamp, after it, and which timestamp form it prints
        before, after, bsd = [], [], []
        for h in hosts:
            st = h.prefix
            bsd.append(st in ("syslog_bsd", "syslog_bsd_pid"))
            before.append({"esxi8": "", "plain": "", "rfc5424": "<182>1 ",
                           "rfc5424_underscore": "<182>1 ", "vmc": "<99>",
                           "syslog_bsd": "<134>", "syslog_bsd_pid": "<134>"}.get(st, "<181>1 "))
            after.append({
                "plain": "Z ",
                "esxi8": f"Z No(13) FIREWALL-PKTLOG[{h.pid}]: ",
                "rfc5424": f"Z {h.name} FIREWALL-PKTLOG {h.pid} - - ",
                "rfc5424_underscore": f"Z {h.name} FIREWALL_PKTLOG {h.pid} - - ",
                "vmc": f"Z {h.name} FIREWALL_PKTLOG: ",
                "syslog_bsd": f" {h.name} dfwpktlogs: ",
                "syslog_bsd_pid": f" {h.name} dfwpktlogs[{h.pid}]: ",
            }.get(st, f"000+00:00 {h.name} NSX {h.pid} FIREWALL {EDGE_SD} <1 {h.edge_uuid}> "))
        self._vm_before = np.asarray(before, dtype=object)[vm_host]
        self._vm_bsd = np.asarray(bsd, dtype=bool)[vm_host]
        self._vm_edge = np.asarray([hosts[h].prefix == "edge" for h in self.vm_host], dtype=bool)
        # x1[vm, kind, fam, action]: after-timestamp text, id field, family, line kind, action
        x1 = np.empty((nvm, 2, 2, 3), dtype=object)
        for vm in range(nvm):
            h = self.vm_host[vm]
            aft, idf, edge = after[h], self.vm_idf[vm], hosts[h].prefix == "edge"
            term = " TERM PASS " if self.host_term_action[h] else " TERM "
            for f, fam in enumerate(("INET", "INET6")):
                for a, act in enumerate(ACTION_TEXT):
                    kw = "reason-match" if edge else "match"
                    x1[vm, 0, f, a] = f"{aft}{idf}{fam} {kw} {act} "
                    x1[vm, 1, f, a] = (f"{aft}{fam} TERM {act} " if edge
                                       else f"{aft}{idf}{fam}{term}")
        self._x1 = x1.reshape(-1)
        # x2[rstyle, rule(+1 for -1), dirn]: rule text and direction
        styles = ("bare", "ruleset", "mainrs")
        self._vm_rstyle = np.asarray([styles.index(s) for s in self.vm_rstyle], dtype=np.int64)
        x2 = np.empty((3, nr, 2), dtype=object)
        for s, name in enumerate(styles):
            for r, txt in enumerate(self.rule_text[name]):
                x2[s, r, 0] = f"{txt} IN "
                x2[s, r, 1] = f"{txt} OUT "
        self._x2 = x2.reshape(-1)
        # match-line tails: TCP flags and rule tag; TERM tails start with the counters
        tail = np.empty((len(FLAG_TEXT), nr), dtype=object)
        for f, ft in enumerate(FLAG_TEXT):
            for r, tag in enumerate(self.rule_tag):
                tail[f, r] = ft + tag
        self._match_tail = tail.reshape(-1)
        self._tag = np.asarray(self.rule_tag, dtype=object)
        # ports: "/p" for 0..65535, "" at 65536 (protocols without ports)
        self._port = np.asarray([f"/{p}" for p in range(65536)] + [""], dtype=object)
        self._src = np.asarray(self.addr, dtype=object)
        self._dst = np.asarray(["->" + a for a in self.addr], dtype=object)
        # TCP/UDP protocol text with the close reason: [udp?, close]
        self._ptcp = np.asarray([f"{p}{c} " for p in ("TCP", "UDP") for c in CLOSE_TEXT],
                                dtype=object)
        self._plen = np.asarray([], dtype=object)

    def _plen_proto_text(self, hi: int) -> np.ndarray:
        """``"n TCP FIN "``-style text, ``[(plen + 1) * 8 + k]`` for packet lengths 0..hi (grown
        on demand) and ``k`` = 4 * UDP + close reason; rows ``0..7`` have no packet length."""
        if len(self._plen) < (hi + 2) * 8:
            size = max(hi + 2, 2 * len(self._plen) // 8, 2048)
            lens = [""] + [f"{p} " for p in range(size - 1)]
            pt = self._ptcp.tolist()
            self._plen = np.asarray([a + b for a in lens for b in pt], dtype=object)
        return self._plen

    @staticmethod
    def _time_tables(t: np.ndarray, bsd: np.ndarray):
        """Per-line second text and millisecond text from epoch milliseconds."""
        sec = t // 1000
        s0 = int(sec.min())
        span = int(sec.max()) - s0 + 1
        base = np.arange(s0, s0 + span, dtype=np.int64)
        iso = np.datetime_as_string(base.astype("datetime64[s]"), unit="s").tolist()
        if bsd.any():
            day = {d: bsd_time(d + "T")[:7] for d in {s[:10] for s in iso}}
            iso = iso + [day[s[:10]] + s[11:] for s in iso]
        sec_tab = np.asarray(iso, dtype=object)
        si = (sec - s0) + np.where(bsd, span, 0)
        mi = np.where(bsd, 1000, t - sec * 1000)
        return sec_tab[si], MS_TEXT[mi]

    def lines(self, ev: dict[str, np.ndarray]) -> list[str]:
        """One line per event (``kind`` 0 = match, 1 = TERM), in the order given."""
        n = len(ev["t"])
        if n == 0:
            return []
        nr = self._nr
        vm = ev["vm"]
        kind = ev["kind"]
        proto = ev["proto"]
        dirn = ev["dirn"]
        rule = ev["rule"]
        rule = np.where(rule < 0, rule + nr, rule)
        term = kind == 1
        fam = self.v6[ev["src"]].astype(np.int64)
        bsd = self._vm_bsd[vm]
        secs, msec = self._time_tables(ev["t"], bsd)
        x1 = self._x1[((vm * 2 + kind) * 2 + fam) * 3 + ev["action"]]
        x2 = self._x2[(self._vm_rstyle[vm] * nr + rule) * 2 + dirn]
        plen = ev["plen"]
        # packet length (match lines) and protocol text: TCP/UDP from a table, the rest
        # (ICMP, PROTO n) line by line
        tcpudp = (proto == 6) | (proto == 17)
        edge_term = term & self._vm_edge[vm]
        close = np.where(term & ~edge_term, ev["close"], 0)
        lrow = np.where(term, 0, plen + 1)
        ptab = self._plen_proto_text(int(plen.max()))
        pt = ptab[lrow * 8 + np.where(proto == 17, 4, 0) + close]
        other = np.flatnonzero(~tcpudp)
        if len(other):
            show = (kind[other] | ev["tc"][other]).tolist()
            lens = ptab[lrow[other] * 8 + 4].tolist()   # "n UDP ": the length part is [:-4]
            pt[other] = [
                ln[:-4] + ((f"ICMP {it} {ic} " if sh else "ICMP ") if p == 1 else f"PROTO {p} ")
                for ln, p, it, ic, sh in zip(lens, proto[other].tolist(),
                                             ev["icmp_t"][other].tolist(),
                                             ev["icmp_c"][other].tolist(), show, strict=True)]
        sp = self._port[np.where(tcpudp, ev["sport"], 65536)]
        dp = self._port[np.where(tcpudp, ev["dport"], 65536)]
        src = self._src[ev["src"]]
        dst = self._dst[ev["dst"]]
        # tails: flags and tag (match), counters and tag (TERM), nothing (edge TERM)
        tail = self._match_tail[np.where(term, 0, ev["flags"]) * nr + rule]
        tidx = np.flatnonzero(term & ~edge_term)
        if len(tidx):
            out_ = dirn[tidx] == 1
            ps, pd_ = ev["pkt_s"][tidx], ev["pkt_d"][tidx]
            bs, bd = ev["byt_s"][tidx], ev["byt_d"][tidx]
            tail[tidx] = [f" {a}/{b} {c}/{e}{g}" for a, b, c, e, g in zip(
                np.where(out_, pd_, ps).tolist(), np.where(out_, ps, pd_).tolist(),
                np.where(out_, bd, bs).tolist(), np.where(out_, bs, bd).tolist(),
                self._tag[rule[tidx]].tolist(), strict=True)]
        if len(eidx := np.flatnonzero(edge_term)):
            tail[eidx] = ""
        before = self._vm_before[vm]
        return [f"{a}{b}{c}{d}{e}{g}{h}{i}{j}{k}{m}" for a, b, c, d, e, g, h, i, j, k, m in
                zip(before.tolist(), secs.tolist(), msec.tolist(), x1.tolist(), x2.tolist(),
                    pt.tolist(), src.tolist(), sp.tolist(), dst.tolist(),
                    dp.tolist(), tail.tolist(), strict=True)]

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
    for i, (src, dst, sp, dp, pr, pk, by, du, tf, rt) in enumerate(zip(*cols, strict=True)):
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
