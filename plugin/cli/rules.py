"""``fwsiem rules``: load a firewall rule set so recommendations can reason about rules."""

from __future__ import annotations

import click

from plugin.cli import pass_app
from plugin.rules import read_rules, rule_actions


@click.group("rules")
def command() -> None:
    """Firewall rule sets (NSX-T Policy API exports, fwsiem YAML/CSV)."""


@command.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--replace/--merge", default=True, show_default=True,
              help="Replace the rule set(s) in the file, or only add/update rules.")
@pass_app
def import_rules(app, file: str, replace: bool) -> None:
    """Load FILE into the rules index.

    FILE is an NSX-T Policy API JSON export (a security policy or a hierarchical infra
    export), or the fwsiem rules format (YAML or JSON with ``format: fwsiem-rules/1``, see
    docs/rules-format.md) or CSV. Rule order in the file is evaluation order.
    """
    docs = read_rules(file)
    index = app.config.index("rules")
    store = app.store
    if replace and store.exists(index):
        rulesets = sorted({d["rule"]["ruleset"] for d in docs if d["rule"]["ruleset"]})
        if rulesets:
            store.delete_by_query(index, {"terms": {"rule.ruleset": rulesets}})
        if any(d["rule"]["ruleset"] is None for d in docs):
            store.delete_by_query(index, {"bool": {"must_not": {"exists": {
                "field": "rule.ruleset"}}}})
    result = store.bulk(rule_actions(docs, index), refresh=True)
    if result.failed:
        first = result.failed[0]
        raise click.ClickException(f"{len(result.failed)} rule(s) were refused by {index}: {first}")
    click.echo(f"imported {len(docs)} rules from {file} into {index} "
               f"({result.created} new, {result.updated} updated)")
