"""Firewall rule sets: read NSX-T Policy API exports and the fwsiem YAML/CSV format into rule documents."""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import yaml

from plugin.errors import InputError
from plugin.store import doc_id

#: Predefined NSX-T services by their policy path's last segment (the common ones).
NSX_SERVICES = {
    "HTTP": ["tcp/80"], "HTTPS": ["tcp/443"], "SSH": ["tcp/22"], "DNS": ["tcp/53"],
    "DNS-UDP": ["udp/53"], "NTP": ["udp/123"], "LDAP": ["tcp/389"], "LDAP-over-SSL": ["tcp/636"],
    "SMTP": ["tcp/25"], "SMTP_TLS": ["tcp/465"], "MySQL": ["tcp/3306"], "Postgres": ["tcp/5432"],
    "RDP": ["tcp/3389"], "ICMP-ALL": ["icmp"], "ICMP_Echo_Request": ["icmp"],
    "ICMPv6-ALL": ["ipv6-icmp"], "SNMP": ["udp/161"], "Syslog (UDP)": ["udp/514"],
    "FTP": ["tcp/21"], "Telnet": ["tcp/23"], "HTTP-ALT": ["tcp/8080"],
}
ACTIONS = {"allow": "PASS", "pass": "PASS", "accept": "PASS", "permit": "PASS", "drop": "DROP",
           "deny": "DROP", "reject": "REJECT", "jump_to_application": "PASS"}


def _action(value, where: str) -> str:
    a = ACTIONS.get(str(value).strip().lower())
    if a is None:
        raise InputError(f"{where}: unknown action {value!r}", hint="use ALLOW/PASS, DROP or REJECT")
    return a


def _direction(value) -> str:
    d = str(value or "IN_OUT").strip().upper()
    return d if d in ("IN", "OUT", "IN_OUT") else "IN_OUT"


def _check_terms(terms: list[str], groups: Mapping[str, list[str]], where: str) -> list[str]:
    """Group names resolved to CIDRs; ``["any"]`` for any."""
    out: list[str] = []
    for t in terms:
        t = str(t).strip()
        if t.lower() in ("any", "*", ""):
            return ["any"]
        if t in groups:
            members = groups[t]
            if any(str(m).lower() == "any" for m in members):
                return ["any"]
            out.extend(str(m) for m in members)
            continue
        try:
            out.append(str(ipaddress.ip_network(t, strict=False)))
        except ValueError:
            if "-" in t:  # an address range a-b, as NSX allows
                lo, _, hi = t.partition("-")
                try:
                    out.extend(str(n) for n in ipaddress.summarize_address_range(
                        ipaddress.ip_address(lo.strip()), ipaddress.ip_address(hi.strip())))
                    continue
                except ValueError:
                    pass
            raise InputError(f"{where}: {t!r} is neither a group, an address, a CIDR nor 'any'",
                             hint="define the group in the file, or use an address") from None
    return out or ["any"]


def rule_document(rule: Mapping, *, sequence: int, groups: Mapping[str, list[str]],
                  source: str, imported_at: str) -> dict:
    """The ``fwsiem-rules`` document of one rule (addresses resolved, order kept)."""
    rid = str(rule.get("id", "")).strip()
    where = f"{source}: rule {rid or '#' + str(sequence)}"
    if not rid:
        raise InputError(f"{where}: a rule has no id", hint="every rule needs the id the logs print")
    srcs = list(rule.get("sources") or ["any"])
    dsts = list(rule.get("destinations") or ["any"])
    services = [str(s).strip().lower() for s in (rule.get("services") or ["any"])]
    if any(s == "any" for s in services):
        services = ["any"]
    ruleset = str(rule.get("ruleset") or "")
    doc = {
        "rule": {"id": rid, "name": str(rule.get("name") or ""), "ruleset": ruleset or None,
                 "tag": str(rule.get("tag") or "") or None},
        "sequence": sequence,
        "action": _action(rule.get("action", "PASS"), where),
        "direction": _direction(rule.get("direction")),
        "source_terms": [str(s) for s in srcs],
        "destination_terms": [str(d) for d in dsts],
        "sources": _check_terms(srcs, groups, where),
        "destinations": _check_terms(dsts, groups, where),
        "services": services,
        "disabled": bool(rule.get("disabled", False)),
        "fwsiem": {"rules_file": source, "imported_at": imported_at},
    }
    return doc


def _fwsiem_rules(data: Mapping, source: str) -> tuple[list[Mapping], dict]:
    rules = data.get("rules")
    if not isinstance(rules, list):
        raise InputError(f"{source}: no 'rules' list", hint="see docs/rules-format.md")
    groups = {str(k): [str(m) for m in (v or [])] for k, v in (data.get("groups") or {}).items()}
    return rules, groups


def _split(cell: str) -> list[str]:
    return [p.strip() for p in str(cell or "").replace(";", " ").replace(",", " ").split()
            if p.strip()]


def _csv_rules(text: str, source: str) -> tuple[list[Mapping], dict]:
    reader = csv.DictReader(io.StringIO(text))
    need = {"id", "action"}
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise InputError(f"{source}: CSV needs a header with at least {sorted(need)}",
                         hint="columns: id,name,sources,destinations,services,action,direction,"
                              "ruleset,tag (lists separated by spaces or semicolons)")
    rules = []
    for row in reader:
        rules.append({"id": row.get("id"), "name": row.get("name"), "ruleset": row.get("ruleset"),
                      "tag": row.get("tag"), "action": row.get("action"),
                      "direction": row.get("direction"),
                      "sources": _split(row.get("sources")) or ["any"],
                      "destinations": _split(row.get("destinations")) or ["any"],
                      "services": _split(row.get("services")) or ["any"],
                      "disabled": str(row.get("disabled", "")).lower() in ("1", "true", "yes")})
    return rules, {}


def _walk(node) -> Iterator[Mapping]:
    if isinstance(node, Mapping):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _nsx_service_entries(entries: Iterable[Mapping]) -> list[str]:
    out = []
    for e in entries or []:
        rtype = e.get("resource_type", "")
        if rtype == "L4PortSetServiceEntry":
            proto = str(e.get("l4_protocol", "TCP")).lower()
            ports = e.get("destination_ports") or []
            out.extend(f"{proto}/{p}" for p in ports) if ports else out.append(proto)
        elif rtype in ("ICMPTypeServiceEntry",):
            out.append("ipv6-icmp" if "6" in str(e.get("protocol", "ICMPv4")) else "icmp")
        elif rtype == "IPProtocolServiceEntry":
            out.append(f"proto/{e.get('protocol_number')}")
        else:
            out.append("any")
    return out


def _nsx_rules(data, source: str) -> tuple[list[Mapping], dict]:
    """Rules of an NSX-T Policy API export (a SecurityPolicy, a list, or a hierarchical infra)."""
    groups: dict[str, list[str]] = {}
    services: dict[str, list[str]] = {}
    policies: list[Mapping] = []
    loose_rules: list[Mapping] = []
    for obj in _walk(data):
        rtype = obj.get("resource_type")
        if rtype == "Group" and obj.get("path"):
            members: list[str] = []
            for expr in _walk(obj.get("expression") or []):
                if expr.get("resource_type") == "IPAddressExpression":
                    members.extend(str(a) for a in expr.get("ip_addresses") or [])
            groups[obj["path"]] = members
            groups.setdefault(obj.get("id", obj["path"]), members)
        elif rtype == "Service" and obj.get("path"):
            services[obj["path"]] = _nsx_service_entries(obj.get("service_entries"))
        elif rtype in ("SecurityPolicy", "GatewayPolicy"):
            policies.append(obj)
        elif rtype == "Rule" and not policies:
            loose_rules.append(obj)
    ordered: list[tuple[float, float, Mapping, str]] = []
    for pol in policies:
        for r in pol.get("rules") or pol.get("children_rules") or []:
            ordered.append((float(pol.get("sequence_number", 0)), float(r.get("sequence_number", 0)),
                            r, str(pol.get("id", ""))))
        for child in pol.get("children") or []:
            r = child.get("Rule") if isinstance(child, Mapping) else None
            if r:
                ordered.append((float(pol.get("sequence_number", 0)),
                                float(r.get("sequence_number", 0)), r, str(pol.get("id", ""))))
    for r in loose_rules:
        ordered.append((0.0, float(r.get("sequence_number", 0)), r, ""))
    if not ordered:
        raise InputError(f"{source}: no NSX-T rules found",
                         hint="export with GET /policy/api/v1/infra/domains/<d>/security-policies"
                              "/<p> or a hierarchical GET /policy/api/v1/infra?filter=...")
    ordered.sort(key=lambda t: (t[0], t[1]))
    rules = []
    for _, _, r, policy in ordered:
        def terms(key: str, r=r) -> list[str]:
            vals = r.get(key) or ["ANY"]
            return ["any" if str(v).upper() == "ANY" else str(v) for v in vals]

        svc: list[str] = []
        paths = r.get("services") or ([] if r.get("service_entries") else ["ANY"])
        for path in paths:
            if str(path).upper() == "ANY":
                svc = ["any"]
                break
            name = str(path).rstrip("/").rsplit("/", 1)[-1]
            if path in services:
                svc.extend(services[path])
            elif name in NSX_SERVICES:
                svc.extend(NSX_SERVICES[name])
            else:
                raise InputError(f"{source}: rule {r.get('rule_id', r.get('id'))} names service "
                                 f"{path!r} that the export does not define",
                                 hint="include the Service objects in the export")
        svc.extend(_nsx_service_entries(r.get("service_entries")))
        rules.append({"id": str(r.get("rule_id", r.get("id"))), "name": r.get("display_name"),
                      "ruleset": policy or None, "tag": r.get("tag"), "action": r.get("action"),
                      "direction": r.get("direction"), "sources": terms("source_groups"),
                      "destinations": terms("destination_groups"), "services": svc or ["any"],
                      "disabled": bool(r.get("disabled", False))})
    return rules, groups


def read_rules(path: str | Path, *, now: str | None = None) -> list[dict]:
    """Rule documents from a file: fwsiem YAML/JSON (``format: fwsiem-rules/1``), CSV, or an
    NSX-T Policy API JSON export. Order in the list is evaluation order."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"rules file {p} does not exist", hint="check the path")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"rules file {p} is not UTF-8 text (byte {exc.start})",
                         hint="give an NSX-T JSON export, or fwsiem YAML/JSON/CSV rules") from None
    source = str(p)
    if p.suffix.lower() == ".csv":
        rules, groups = _csv_rules(text, source)
    else:
        try:
            data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise InputError(f"{source} is not valid {p.suffix.lstrip('.').upper() or 'YAML'}: "
                             f"{exc}", hint="export the rule set again") from None
        if isinstance(data, Mapping) and str(data.get("format", "")).startswith("fwsiem-rules"):
            rules, groups = _fwsiem_rules(data, source)
        elif isinstance(data, (Mapping, list)):
            rules, groups = _nsx_rules(data, source)
        else:
            raise InputError(f"{source}: not a rule set", hint="see docs/rules-format.md")
    now = now or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    docs = [rule_document(r, sequence=i, groups=groups, source=source, imported_at=now)
            for i, r in enumerate(rules)]
    seen: set[tuple] = set()
    for d in docs:
        key = (d["rule"]["ruleset"], d["rule"]["id"])
        if key in seen:
            raise InputError(f"{source}: rule id {d['rule']['id']} appears twice",
                             hint="rule ids must be unique within a rule set")
        seen.add(key)
    return docs


def rule_actions(docs: Iterable[dict], index: str) -> Iterator[dict]:
    """Bulk actions that index rule documents with ids from (ruleset, rule id)."""
    for d in docs:
        yield {"_op_type": "index", "_index": index,
               "_id": doc_id("rule", d["rule"]["ruleset"], d["rule"]["id"]), "_source": d}


def load_rules(store, index: str) -> list[dict]:
    """All rule documents from the rules index, in evaluation order."""
    if not store.exists(index):
        return []
    docs = [h["_source"] for h in store.scan(index) if not h["_source"].get("disabled")]
    return sorted(docs, key=lambda d: (d.get("sequence", 0), d["rule"]["id"]))


def as_hygiene_rule(doc: Mapping):
    """The :class:`ml.hygiene.Rule` for a rule document."""
    from ml.hygiene import rule_from_dict

    return rule_from_dict({"id": doc["rule"]["id"], "sequence": doc.get("sequence", 0),
                           "action": doc["action"], "direction": doc.get("direction"),
                           "sources": doc.get("sources"), "destinations": doc.get("destinations"),
                           "services": doc.get("services"), "name": doc["rule"].get("name"),
                           "disabled": doc.get("disabled", False)})
