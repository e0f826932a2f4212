"""``fwsiem report``: a self-contained static HTML report for people without Kibana."""

from __future__ import annotations

import datetime as dt

import click

from plugin.cli import AppContext, pass_app
from plugin.config import parse_time
from plugin.errors import InputError
from plugin.report import write_report


@click.command("report")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write index.html into (created if missing).")
@click.option("--since", help="Start: ISO time, now-7d or 7d [default: the first event].")
@click.option("--until", help="End: ISO time or now-1h [default: the last event].")
@pass_app
def command(app: AppContext, out_dir, since, until) -> None:
    """Write the overview panels, anomalies, recommendations and model metrics as one HTML
    file with embedded plots (no external assets), from the cluster's aggregations."""
    now = dt.datetime.now(dt.timezone.utc)
    start, end = parse_time(since, now), parse_time(until, now)
    if start and end and start >= end:
        raise InputError(f"--since {since} is not before --until {until}")
    path = write_report(app.store, app.config, out_dir, start, end)
    click.echo(f"report written to {path}")
