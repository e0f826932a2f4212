"""``fwsiem recommend``: rule hygiene and learned allow-lists, written as recommendation documents."""

from __future__ import annotations

import json
from pathlib import Path

import click

from plugin import recommend as rec
from plugin.cli import AppContext, pass_app
from plugin.errors import InputError


def _labels(path: str | None) -> dict | None:
    """Allow-lists per endpoint from a JSON file: {"VM:PORT": [cidrs]} or a simulator truth.json."""
    if not path:
        return None
    data = rec.load_json(path)
    lists = data.get("allowlists", data) if isinstance(data, dict) else data
    if not isinstance(lists, (dict, list)) or (
            isinstance(lists, list) and not all(isinstance(e, dict) for e in lists)):
        raise InputError(f"{path}: labels must be a JSON object {{\"IP:PORT\": [CIDR...]}} or a "
                         "truth.json")
    out = {}
    items = lists.items() if isinstance(lists, dict) else ((e.get("endpoint"), e) for e in lists)
    for key, value in items:
        allowed = value.get("allowed", value.get("allow")) if isinstance(value, dict) else value
        if isinstance(value, dict) and value.get("labeled") is False:
            continue
        ip, _, port = str(key).rpartition(":")
        if not ip or not port.isdigit():
            raise InputError(f"{path}: endpoint {key!r} is not IP:PORT")
        out[(ip.strip("[]"), int(port))] = list(allowed or [])
    return out


@click.group("recommend", invoke_without_command=True)
@click.option("--kind", type=click.Choice(["hygiene", "allowlist", "all"]), default="all",
              show_default=True, help="Which recommendations to compute.")
@click.option("--since", help="Start of the period: ISO time, now-7d or 7d [default: [recommend] period].")
@click.option("--until", help="End of the period (default: now).")
@click.option("--labels", type=click.Path(dir_okay=False),
              help="Allow-lists per endpoint (JSON {\"IP:PORT\": [CIDR...]} or a truth.json); "
                   "default: read from the imported rule set.")
@click.option("--top", type=int, default=20, show_default=True, help="Rows in the printed table.")
@click.option("--dry-run", is_flag=True, help="Print, do not write documents.")
@click.pass_context
def command(ctx, kind, since, until, labels, top, dry_run) -> None:
    """Compute recommendations for a period, write them and print the top ones.

    \b
    hygiene:   unused, shadowed, overly broad and dominant rules, deny spikes per VM,
               destinations most dropped traffic targets
    allowlist: per endpoint (VM + port), which remote IPs to allow, grouped into CIDRs

    Re-running for the same period updates the same documents.
    """
    if ctx.invoked_subcommand is not None:
        return
    app = ctx.find_object(AppContext)
    s = rec.settings(app.config)
    period = rec.Period.of(since, until, default=s["period"])
    store = app.store
    docs = []
    if kind in ("hygiene", "all"):
        docs += rec.hygiene_recommendations(store, app.config, period)
    if kind in ("allowlist", "all"):
        try:
            docs += rec.allowlist_recommendations(store, app.config, period, labels=_labels(labels))
        except Exception as exc:  # noqa: BLE001 - an allow-list failure must not lose hygiene
            if kind == "allowlist":
                raise
            click.echo(f"allow-lists skipped: {exc}", err=True)
    index = app.config.index("recommendations")
    if not dry_run and docs:
        result = rec.write_recommendations(store, index, docs)
        if result.failed:
            raise click.ClickException(f"{len(result.failed)} documents refused by {index}: "
                                       f"{result.failed[0]}")
    click.echo(f"period {period.since.isoformat()} .. {period.until.isoformat()}: "
               f"{len(docs)} recommendations" + ("" if dry_run else f" written to {index}"))
    if docs:
        click.echo(rec.top_table(docs, top))


@command.command("export")
@click.option("--format", "fmt", type=click.Choice(["nsx", "iptables", "csv"]), required=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File (default: stdout).")
@click.option("--domain", default="default", show_default=True, help="NSX-T domain id.")
@pass_app
def export(app, fmt, output, domain) -> None:
    """Write the latest recommendations as rules a firewall can take.

    nsx: a hierarchical NSX-T Policy API body for PATCH /policy/api/v1/infra (groups, a security
    policy with ALLOW rules then a DROP per endpoint, tightened rules); iptables: iptables-restore
    input; csv: one row per recommendation (per CIDR for allow-lists).
    """
    docs = rec.latest_per_target(rec.read_recommendations(app.store,
                                                          app.config.index("recommendations")))
    if fmt == "nsx":
        text = json.dumps(rec.export_nsx(docs, domain=domain), indent=2) + "\n"
    elif fmt == "iptables":
        text = rec.export_iptables(docs)
    else:
        text = rec.export_csv(docs)
    if output:
        Path(output).write_text(text)
        click.echo(f"wrote {len(docs)} recommendations as {fmt} to {output}", err=True)
    else:
        click.echo(text, nl=False)


@command.command("whatif")
@click.option("--since", help="Start of the replayed period (default: [recommend] period ago).")
@click.option("--until", help="End of the replayed period (default: now).")
@click.option("--truth", type=click.Path(dir_okay=False),
              help="JSON with known-malicious sources (a simulator truth.json, or "
                   "{\"malicious\": [IP...]}).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@pass_app
def whatif(app, since, until, truth, as_json) -> None:
    """Replay logged traffic against the proposed allow-lists: what would have been blocked."""
    s = rec.settings(app.config)
    period = rec.Period.of(since, until, default=s["period"])
    docs = rec.latest_per_target(rec.read_recommendations(
        app.store, app.config.index("recommendations"), kinds=["allowlist"]))
    if not docs:
        raise InputError("no allow-list recommendations to replay",
                         hint="run `fwsiem recommend --kind allowlist` first")
    fine = rec.fine_table(app.store, app.config.index("events_pattern"), period,
                          s["internal_networks"], int(s["composite_size"]))
    bad = rec.malicious_sources(rec.load_json(truth)) if truth else []
    res = rec.whatif(fine, docs, bad)
    res["period"] = period.as_dict()
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(f"replayed {res['events']} events to {res['endpoints']} endpoints "
               f"({period.since.isoformat()} .. {period.until.isoformat()})")
    click.echo(f"would block {res['blocked']} events; legitimate traffic blocked "
               f"(service risk): {res['benign_blocked']} of {res['benign_events']} "
               f"({res.get('service_risk', 0):.2%})")
    if res["malicious_events"]:
        click.echo(f"known-malicious traffic stopped: {res['malicious_blocked']} of "
                   f"{res['malicious_events']} ({res['malicious_stopped']:.2%})")
    elif truth:
        click.echo("no traffic from the known-malicious sources reached these endpoints")
