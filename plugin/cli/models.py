"""``fwsiem models``: list, show, promote and roll back models in the cluster's registry."""

from __future__ import annotations

import json

import click

from plugin.cli import pass_app


def _registry(app):
    from plugin.registry import Registry

    return Registry.from_config(app.store, app.config)


@click.group("models")
def command():
    """Models in the registry (the models index): versions, metrics, provenance, promotion."""


@command.command("list")
@click.argument("name", required=False)
@pass_app
def list_models(app, name):
    """List every version (newest first), or the versions of NAME."""
    records = _registry(app).records(name)
    if not records:
        click.echo("no models registered" + (f" under {name!r}" if name else ""))
        return
    click.echo(f"{'name':<10} {'ver':>4} {'status':<12} {'hold-out':<20} {'rows':>9} "
               f"{'created':<24} sha256")
    for r in records:
        h = r.doc.get("holdout") or {}
        holdout = f"{h.get('metric', '')} {h.get('value', float('nan')):.4f}"
        click.echo(f"{r.name:<10} {r.version:>4} {r.status:<12} {holdout:<20} "
                   f"{r.doc.get('data', {}).get('n_rows', ''):>9} "
                   f"{r.doc['model'].get('created', ''):<24} {r.sha256[:12]}")


@command.command("show")
@click.argument("name")
@click.argument("version", type=int, required=False)
@pass_app
def show(app, name, version):
    """Show a version's record as JSON (default: the active one); the artifact is not printed."""
    record = _registry(app).get(name, version)
    doc = dict(record.doc)
    for key in ("params_json", "report_json"):
        if key in doc:
            doc[key[:-5]] = json.loads(doc.pop(key))
    click.echo(json.dumps(doc, indent=2, default=str))


@command.command("promote")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--force", is_flag=True, help="Promote even if its hold-out metric is worse.")
@pass_app
def promote(app, name, version, force):
    """Make VERSION the active NAME model (refused if worse than the active one)."""
    record = _registry(app).promote(name, version, force=force)
    click.echo(f"{name} version {record.version} is active")


@command.command("rollback")
@click.argument("name")
@pass_app
def rollback(app, name):
    """Retire the active NAME model and reactivate the version it replaced."""
    record = _registry(app).rollback(name)
    click.echo(f"{name} version {record.version} is active again")
