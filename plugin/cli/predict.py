"""``fwsiem predict``: the firewall action for a flow tuple, with its probability and evidence."""

from __future__ import annotations

import ipaddress
import json
import sys

import click
import pandas as pd

from plugin.cli import pass_app
from plugin.errors import InputError

CSV_ALIASES = {"src": "sip", "source.ip": "sip", "dst": "dip", "destination.ip": "dip",
               "source.port": "sport", "destination.port": "dport",
               "network.transport": "proto", "network.direction": "direction"}


def _check_ip(value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise InputError(f"{what} {value!r} is not an IP address") from None


def _default_direction(sip: str, dip: str) -> str:
    """Traffic from outside to an internal address enters (ingress), the reverse leaves."""
    from ml.action import is_internal

    src, dst = is_internal(sip), is_internal(dip)
    if src != dst:
        return "ingress" if dst else "egress"
    return "unknown"


def _probabilities(model, frame: pd.DataFrame):
    """Class probabilities; when the direction is unknown it is inferred from the addresses
    (outside to inside: ingress), else the probabilities of both directions are averaged."""
    frame = frame.copy()
    if "direction" not in frame:
        frame["direction"] = "unknown"
    frame["direction"] = frame["direction"].fillna("unknown").astype(str)
    unknown = ~frame["direction"].isin(["ingress", "egress"])
    if unknown.any():
        frame.loc[unknown, "direction"] = [_default_direction(a, b) for a, b in
                                           zip(frame.loc[unknown, "sip"], frame.loc[unknown, "dip"],
                                               strict=True)]
        unknown = frame["direction"] == "unknown"
    proba = model.predict_proba(frame)
    if unknown.any():
        both = [model.predict_proba(frame[unknown].assign(direction=d))
                for d in ("ingress", "egress")]
        proba[unknown.to_numpy()] = (both[0] + both[1]) / 2
    return proba


def _predict(model, frame: pd.DataFrame) -> pd.DataFrame:
    proba = _probabilities(model, frame)
    classes = list(model.classes_)
    best = proba.argmax(axis=1)
    out = frame.copy()
    out["action"] = [classes[i] for i in best]
    out["probability"] = proba.max(axis=1).round(4)
    return out


def _network(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False))


def evidence(store, index: str, tup: dict, *, top: int = 5) -> list[dict]:
    """Past events like the tuple: same addresses, same destination, same destination network.

    For each scope: the number of events, the actions taken, the rules that took them and
    when the tuple was last seen.
    """
    scopes = [
        ("same source, destination and service", [
            {"term": {"source.ip": tup["sip"]}}, {"term": {"destination.ip": tup["dip"]}}]),
        ("any source to this destination and service", [
            {"term": {"destination.ip": tup["dip"]}}]),
        (f"any source to {_network(tup['dip'])} and this service", [
            {"term": {"destination.ip": _network(tup["dip"])}}]),
    ]
    service = [{"term": {"network.transport": tup["proto"]}}]
    if tup.get("dport"):
        service.append({"term": {"destination.port": int(tup["dport"])}})
    aggs = {
        "actions": {"terms": {"field": "event.action", "size": 10}},
        "rules": {"terms": {"field": "rule.id", "size": top},
                  "aggs": {"action": {"terms": {"field": "event.action", "size": 3}},
                           "ruleset": {"terms": {"field": "rule.ruleset", "size": 1}}}},
        "last": {"max": {"field": "@timestamp"}},
    }
    out = []
    for scope, filters in scopes:
        res = store.aggregate(index, aggs, query={"bool": {"filter": filters + service}})
        total = int(res.get("_total", 0))
        if not total:
            out.append({"scope": scope, "events": 0})
            continue
        out.append({
            "scope": scope, "events": total,
            "actions": {b["key"]: b["doc_count"] for b in res["actions"]["buckets"]},
            "rules": [{"rule": b["key"], "events": b["doc_count"],
                       "ruleset": next((r["key"] for r in b["ruleset"]["buckets"]), None),
                       "actions": {a["key"]: a["doc_count"] for a in b["action"]["buckets"]}}
                      for b in res["rules"]["buckets"]],
            "last_seen": res["last"].get("value_as_string"),
        })
    return out


def _read_csv(path: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"CSV file {path} does not exist") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"CSV file {path} cannot be read: {exc}") from None
    frame = frame.rename(columns={c: CSV_ALIASES.get(c, c) for c in frame.columns})
    missing = [c for c in ("proto", "sip", "dip", "dport") if c not in frame]
    if missing:
        raise InputError(f"CSV file {path} lacks the column(s) {missing}; it needs proto, src, "
                         "dst, dport and optionally sport, direction")
    if "sport" not in frame:
        frame["sport"] = 0
    frame["proto"] = frame["proto"].astype(str).str.lower()
    for col in ("sport", "dport"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").fillna(0).astype("int64")
    return frame


@click.command("predict")
@click.option("--proto", help="Transport: tcp, udp, icmp ...")
@click.option("--src", help="Source IP address.")
@click.option("--dst", help="Destination IP address.")
@click.option("--dport", type=int, default=0, show_default=True, help="Destination port.")
@click.option("--sport", type=int, default=50000, show_default=True,
              help="Source port (default: an ephemeral port).")
@click.option("--direction", type=click.Choice(["ingress", "egress", "unknown"]),
              default="unknown", show_default=True)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False),
              help="Predict every row of a CSV (proto,src,dst,sport,dport[,direction]); "
                   "writes CSV with action and probability to stdout.")
@click.option("--version", "version", type=int, help="Model version (default: the active one).")
@click.option("--evidence/--no-evidence", "with_evidence", default=True, show_default=True,
              help="Look up past events and rules for the tuple (single predictions).")
@click.option("--index", help="Events index or pattern for the evidence.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def command(app, proto, src, dst, dport, sport, direction, csv_path, version, with_evidence,
            index, as_json):
    """Predict the firewall action for a flow tuple with the active action model."""
    from plugin.registry import Registry

    if csv_path is None and not (proto and src and dst):
        raise click.UsageError("give --proto, --src and --dst (and --dport), or --csv FILE")
    registry = Registry.from_config(app.store, app.config)
    model, record = registry.load("action", version)
    if csv_path:
        result = _predict(model, _read_csv(csv_path))
        result.to_csv(sys.stdout, index=False)
        return
    tup = {"proto": proto.lower(), "sip": _check_ip(src, "--src"),
           "dip": _check_ip(dst, "--dst"), "sport": sport, "dport": dport,
           "direction": direction}
    row = _predict(model, pd.DataFrame([tup])).iloc[0]
    proba = dict(zip(model.classes_, _probabilities(model, pd.DataFrame([tup]))[0].round(4),
                     strict=True))
    out = {"tuple": tup, "action": row["action"], "probability": float(row["probability"]),
           "probabilities": {k: float(v) for k, v in proba.items()},
           "model": {"name": "action", "version": record.version,
                     "holdout": record.doc.get("holdout")}}
    if with_evidence:
        index = index or app.config.indices.get("events_pattern", "logs-fwsiem.*")
        out["evidence"] = evidence(app.store, index, tup)
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
        return
    port = f"/{dport}" if dport else ""
    click.echo(f"{tup['proto']} {tup['sip']} -> {tup['dip']}{port}: {out['action']} "
               f"(probability {out['probability']:.3f}; action model v{record.version})")
    for ev in out.get("evidence", []):
        if not ev["events"]:
            click.echo(f"  {ev['scope']}: no past events")
            continue
        acts = ", ".join(f"{k} {v}" for k, v in ev["actions"].items())
        click.echo(f"  {ev['scope']}: {ev['events']} events ({acts}), last {ev['last_seen']}")
        for r in ev["rules"]:
            ruleset = f"{r['ruleset']}/" if r.get("ruleset") else ""
            racts = ", ".join(f"{k} {v}" for k, v in r["actions"].items())
            click.echo(f"    rule {ruleset}{r['rule']}: {r['events']} events ({racts})")
