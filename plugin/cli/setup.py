"""``fwsiem setup``: install or check index templates, indices and ingest pipelines."""

from __future__ import annotations

import click

from plugin.cli import pass_app
from plugin.setup import run_setup


@click.command("setup")
@click.option("--check", is_flag=True, help="Only report what is missing or differs; exit 1 if anything is.")
@click.option("--skip-pipelines", is_flag=True,
              help="Install everything else when the cluster lacks the ingest processors the pipelines need.")
@pass_app
def command(app, check, skip_pipelines):
    """Install fwsiem's index templates, indices and ingest pipelines (idempotent).

    Re-running changes nothing that is already as fwsiem ships it.
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
