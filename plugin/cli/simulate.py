"""``fwsiem simulate``: datacenter traffic with ground truth (NSX DFW logs, flows, rules, truth)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import click

from ml.errors import ModelInputError
from plugin.errors import InputError


def _format_mix(text: str | None) -> dict | None:
    if not text:
        return None
    mix = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        try:
            mix[name.strip()] = float(share)
        except ValueError as exc:
            raise InputError(f"--format-mix {text!r}: {part!r} is not NAME=SHARE",
                             hint="e.g. plain=0.5,rfc5424=0.5") from exc
    return mix


def _live(sim, rate: float, out: str | None, syslog: str | None) -> int:
    """Write (or send) the NSX lines in real time at ``rate`` lines per second."""
    sock = None
    fh = None
    if syslog:
        scheme, _, rest = syslog.partition("://")
        host, _, port = rest.rpartition(":")
        if scheme not in ("udp", "tcp") or not port.isdigit():
            raise InputError(f"--syslog {syslog!r} is not udp://HOST:PORT or tcp://HOST:PORT")
        kind = socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM
        sock = socket.socket(socket.AF_INET, kind)
        try:
            sock.connect((host, int(port)))
        except OSError as exc:
            raise InputError(f"cannot reach syslog receiver {syslog}: {exc}",
                             hint="start `fwsiem listen` first") from exc
    else:
        fh = open(out, "a", encoding="utf-8") if out else sys.stdout
    sent = 0
    t0 = time.monotonic()
    try:
        for chunk in sim.iter_nsx_lines():
            for line in chunk:
                if sock is not None:
                    data = (line + "\n").encode()
                    sock.send(data)
                else:
                    fh.write(line + "\n")
                sent += 1
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0.05:
                    if fh is not None:
                        fh.flush()
                    time.sleep(ahead)
    finally:
        if sock is not None:
            sock.close()
        if fh is not None and fh is not sys.stdout:
            fh.close()
    return sent


@click.command("simulate")
@click.option("--scenario", default="default", show_default=True,
              help="Packaged scenario name (default, seed000) or a scenario TOML file.")
@click.option("--preset", type=click.Choice(["seed000"]),
              help="Reproduce the shape of a seed data set (same as --scenario seed000).")
@click.option("--hours", type=float, help="Simulated hours [default: the scenario's].")
@click.option("--seed", type=int, default=0, show_default=True, help="Traffic seed.")
@click.option("--start", help="ISO-8601 start time [default: the scenario's].")
@click.option("--out", "out", type=click.Path(), help="Output directory (or file with --rate).")
@click.option("--format-mix", help="NSX line variants, e.g. plain=0.5,rfc5424=0.3,edge=0.2.")
@click.option("--per-host", is_flag=True, help="Also write one NSX log per hypervisor.")
@click.option("--rate", type=float, help="Real time: NSX lines per second to --out or --syslog.")
@click.option("--syslog", help="With --rate: send to udp://HOST:PORT or tcp://HOST:PORT.")
def command(scenario, preset, hours, seed, start, out, format_mix, per_host, rate, syslog):
    """Simulate datacenter traffic with ground truth.

    Writes NSX DFW packet logs, nfdump CSV and pmacct JSON flow records for the same sessions,
    the DFW rule set (rules.yaml) and truth.json (incidents, rule truth, allow-list and
    traffic-class labels). The same seed gives byte-identical output. See docs/simulator.md.
    """
    try:
        _simulate(scenario, preset, hours, seed, start, out, format_mix, per_host, rate, syslog)
    except ModelInputError as exc:
        raise InputError(exc.args[0], hint=exc.hint) from None


def _simulate(scenario, preset, hours, seed, start, out, format_mix, per_host, rate, syslog):
    from ml.simulate import Simulation, load_scenario

    try:
        sc = load_scenario(preset or scenario)
    except UnicodeDecodeError as exc:
        raise InputError(f"scenario {preset or scenario} is not UTF-8 text (byte {exc.start})",
                         hint="give a packaged scenario name or a scenario TOML file") from None
    mix = _format_mix(format_mix)
    if mix:
        sc = sc.with_overrides({"output": {"format_mix": mix}})
        sc.data["output"]["format_mix"] = mix
    sim = Simulation(sc, hours=hours, seed=seed, start=start)
    if rate:
        if rate <= 0:
            raise InputError("--rate must be positive")
        sent = _live(sim, rate, out, syslog)
        click.echo(f"sent {sent} lines", err=True)
        return
    if not out:
        raise InputError("--out DIR is required (or use --rate for a live stream)")
    counts = sim.write(Path(out), per_host=per_host, progress=sys.stderr.isatty())
    truth = sim.truth()
    click.echo(f"wrote {out}: {counts['nsx_lines']} NSX lines, {counts['flow_records']} flow "
               f"records, {len(truth['incidents'])} incidents, "
               f"{len(sim.ruleset.rules)} rules (dominant {truth['rules']['dominant']})")
