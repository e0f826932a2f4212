"""``fwsiem alert``: run the alert definitions against the cluster and post to a webhook."""

from __future__ import annotations

import json

import click

from plugin import alerting
from plugin.cli import AppContext, pass_app
from plugin.config import parse_time
from plugin.errors import InputError


@click.command("alert")
@click.option("--once", is_flag=True, help="Run every definition once now and exit.")
@click.option("--webhook", metavar="URL", help="POST each alert event here as JSON "
              "[default: [alert] webhook].")
@click.option("--rule", "rules", multiple=True, metavar="ID",
              help="Only these definitions (repeatable), e.g. fwsiem-vm-denied-spike.")
@click.option("--at", "at", metavar="TIME", help="With --once: evaluate as of this ISO time "
              "instead of now (replays a past incident; state is still recorded).")
@click.option("--install", is_flag=True, help="Install the definitions as Watcher watches or "
              "OpenSearch Alerting monitors if the cluster has either, then exit.")
@click.option("--list", "list_", is_flag=True, help="List the definitions and exit.")
@click.option("--show", type=click.Choice(["watcher", "opensearch"]),
              help="Print each definition's watch or monitor body (placeholders filled) and exit.")
@pass_app
def command(app: AppContext, once, webhook, rules, at, install, list_, show) -> None:
    """Alerts for clusters without Watcher or the Alerting plugin.

    Runs each definition (new high or critical anomalies, a new high-severity
    recommendation, a dead-letter spike, a VM's denied-traffic spike) on its schedule,
    prints every event and POSTs it to the webhook once; an event that fired is not
    repeated within the definition's throttle. State lives in the fwsiem-state index.
    """
    definitions = [alerting.with_overrides(d, app.config) for d in alerting.load_definitions()]
    if rules:
        known = {d["id"] for d in definitions}
        unknown = sorted(set(rules) - known)
        if unknown:
            raise InputError(f"no alert definition {', '.join(unknown)}",
                             hint=f"known: {', '.join(sorted(known))}")
        definitions = [d for d in definitions if d["id"] in rules]
    if list_:
        for d in definitions:
            click.echo(f"{d['id']:30}  every {d['schedule']:>4}  lookback {d['lookback']:>4}  "
                       f"throttle {d['throttle']:>4}  {d['name']}")
        return
    if show:
        for d in definitions:
            values = alerting.placeholder_values(d, app.config)
            body = alerting.render_watch(d) if show == "watcher" else alerting.render_monitor(d)
            click.echo(json.dumps({d["id"]: alerting.fill(body, values)}, indent=2))
        return
    store = app.store
    if install:
        found, lines = alerting.install(store, app.config, definitions)
        click.echo(f"{store.safe_url} ({store.flavor} {store.version}): {found.detail}")
        for line in lines:
            click.echo(f"  {line}")
        return
    alerter = alerting.Alerter(store, app.config, definitions, webhook=webhook,
                               echo=lambda line: click.echo(line))
    target = alerter.webhook or "no webhook (printing only)"
    click.echo(f"fwsiem alert: {len(definitions)} definitions against {store.safe_url}, "
               f"delivering to {target}", err=True)
    if once:
        results = alerter.run_once(parse_time(at))
        total = sum(len(v) for v in results.values())
        click.echo(f"{total} alert events delivered "
                   f"({', '.join(f'{k}: {len(v)}' for k, v in results.items())})", err=True)
        return
    try:
        alerter.run_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
