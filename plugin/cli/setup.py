"""``fwsiem setup``: install or check index templates, indices, ingest pipelines and dashboards."""

from __future__ import annotations

import click

from plugin.alerting import install as install_alerting
from plugin.cli import pass_app
from plugin.kibana import FLAVORS, import_saved_objects
from plugin.setup import run_setup


@click.command("setup")
@click.option("--check", is_flag=True, help="Only report what is missing or differs; exit 1 if anything is.")
@click.option("--skip-pipelines", is_flag=True,
              help="Install everything else when the cluster lacks the ingest processors the pipelines need.")
@click.option("--kibana", "kibana_url", metavar="URL",
              help="Also import the dashboards into Kibana / OpenSearch Dashboards at URL "
                   "(default: [kibana] url, if set).")
@click.option("--dashboards-flavor", type=click.Choice(FLAVORS), default=None,
              help="The product at --kibana (default: [kibana] flavor, else the one that goes "
                   "with the cluster).")
@click.option("--kibana-wait", type=float, default=None, metavar="SECONDS",
              help="Keep retrying this long while Kibana is still starting (default: [kibana] wait).")
@pass_app
def command(app, check, skip_pipelines, kibana_url, dashboards_flavor, kibana_wait):
    """Install fwsiem's index templates, indices, ingest pipelines and dashboards (idempotent).

    Re-running changes nothing that is already as fwsiem ships it; dashboards are re-imported
    with overwrite.
    """
    store = app.store
    click.echo(f"{'checking' if check else 'setting up'} {store.flavor} {store.version} at {store.safe_url}",
               err=True)
    outcomes = run_setup(store, app.config, check=check, skip_pipelines=skip_pipelines)
    bad = 0
    for o in outcomes:
        if o.status in ("missing", "differs"):
            bad += 1
        line = f"{o.kind:<9} {o.name:<34} {o.status}"
        click.echo(line + (f"  ({o.detail})" if o.detail else ""))
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    click.echo(", ".join(f"{n} {s}" for s, n in sorted(counts.items())), err=True)
    if check and bad:
        raise SystemExit(1)
    if not check:
        found, lines = install_alerting(store, app.config)
        click.echo(f"alerting  {found.detail}", err=True)
        for line in lines:
            click.echo(f"alert     {line}")
    if not check and (kibana_url or app.config.section("kibana").get("url")):
        result = import_saved_objects(app.config, kibana_url, dashboards_flavor,
                                      engine_flavor=store.flavor, wait=kibana_wait)
        click.echo(f"{'dashboards':<9} {result.url:<34} {result.success_count} imported")
        click.echo(result.summary(), err=True)
