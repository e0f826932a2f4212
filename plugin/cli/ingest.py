"""``fwsiem ingest``: ship log files, directories, globs, .gz, stdin or pcaps into the cluster."""

from __future__ import annotations

import json
import signal
import sys
from datetime import datetime, timezone

import click

from plugin.cli import pass_app
from plugin.shipping import (
    STDIN,
    IngestStats,
    LineBatcher,
    check_written,
    configured_shipper,
    expand_paths,
    follow_paths,
    format_counts,
    ingest_paths,
    summary_lines,
)

FORMATS = ("auto", "nsx", "iptables", "pfsense", "cisco-asa", "panos", "fortigate", "cef", "leef",
           "nfdump", "pmacct", "zeek", "windows-firewall", "pcap")


class _Progress:
    """A tqdm bar with lines/s on a terminal; nothing otherwise."""

    def __init__(self, stats: IngestStats, enabled: bool) -> None:
        self.stats = stats
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(unit=" lines", unit_scale=True, dynamic_ncols=True, file=sys.stderr,
                            desc="ingest")

    def __call__(self, _n: int) -> None:
        if self.bar is not None:
            self.bar.update(self.stats.read - self.bar.n)
            self.bar.set_postfix(indexed=self.stats.indexed, dead=self.stats.dead_lettered,
                                 present=self.stats.already_present, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self(0)
            self.bar.close()


@click.command("ingest")
@click.argument("paths", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
              help="Format hint sent with every line (auto: each line is recognised by content; "
                   "pcap files are recognised by their header).")
@click.option("--follow", "-f", is_flag=True,
              help="Keep reading what is appended, across rotation and truncation, until Ctrl-C.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar with lines/s [default: when stderr is a terminal].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
def command(app, paths, fmt, follow, progress, as_json):
    """Ship log lines to the cluster through the fwsiem-logs ingest pipeline.

    PATH may be files, directories (read recursively), globs, .gz files or - for standard input.
    Every line gets an _id from its source, byte offset and content, so running the same command
    twice adds nothing and says so. Lines no pipeline can parse are counted and kept in the
    dead-letter index. When the engine cannot take data (it is down, or refuses for a reason
    about the cluster: a missing pipeline, a write block), the unwritten batch is spooled to disk
    ([engine] spool_dir, one folder per cluster URL) and replayed first on the next run; the
    command then exits 3 and names what was not written. A damaged source (a truncated gzip or
    pcap, a dangling symlink) keeps what was read, is named, and the exit code is 2. SIGTERM
    stops reading, ships what was read and names the rest. Without PATH, only the spool is
    replayed. Guarantees: docs/threat-model.md.
    """
    settings, shipper = configured_shipper(app.config, lambda: app.store)
    stats = shipper.stats
    sources = expand_paths(paths) if paths else []
    started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    bar = _Progress(stats, sys.stderr.isatty() if progress is None else progress)
    stop = {"now": False}

    def on_term(_sig, _frame):
        stop["now"] = True
        stats.stopped = "stopped by SIGTERM before the end"

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        if shipper.spool.pending():
            click.echo(f"replaying {shipper.spool.pending_documents():,} spooled documents from "
                       f"{shipper.spool.dir}", err=True)
            shipper.replay()
        files = [s for s in sources if s != STDIN]
        if shipper.down and not any(s == STDIN for s in sources):
            stats.not_read.extend(files)
        else:
            _ingest(shipper, settings, sources, fmt, follow, bar, stop)
    except KeyboardInterrupt:
        click.echo("interrupted: what was read is accounted below", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
    if stop["now"] and not follow:
        click.echo("SIGTERM: what was read was shipped or spooled; the rest is named below",
                   err=True)
    if stats.indexed and fmt != "pcap" and not stats.by_format and not shipper.down:
        try:
            stats.by_format = format_counts(app.store, settings, sources, started)
            stats.unmapped = format_counts(app.store, settings, sources, started,
                                           tag="fwsiem_body_unmapped")
        except Exception:  # the counts are a courtesy; the outcome is already known
            pass
    if as_json:
        click.echo(json.dumps(stats.as_dict(), indent=2))
    else:
        for line in summary_lines(stats):
            click.echo(line)
    check_written(stats, shipper.store_name())


def _ingest(shipper, settings, sources, fmt, follow, bar, stop) -> None:
    from plugin.pcap import ingest_pcap, is_pcap

    module = None if fmt in ("auto", "pcap") else fmt
    pcaps = [s for s in sources if s != STDIN and (fmt == "pcap" or is_pcap(s))]
    lines = [s for s in sources if s not in pcaps]
    for path in pcaps:
        if shipper.down or stop["now"]:
            shipper.stats.not_read.extend(pcaps[pcaps.index(path):] + lines)
            return
        ingest_pcap(path, shipper, settings, on_batch=bar)
    batcher = LineBatcher(shipper, settings, module=module, on_batch=bar)
    if follow:
        stdin = [s for s in lines if s == STDIN]
        if stdin:
            ingest_paths(stdin, batcher, stop_when_down=False, should_stop=lambda: stop["now"])
        follow_paths([s for s in lines if s != STDIN], batcher, should_stop=lambda: stop["now"])
    else:
        ingest_paths(lines, batcher, stop_when_down=True, should_stop=lambda: stop["now"])
