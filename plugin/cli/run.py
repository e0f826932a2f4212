"""``fwsiem run``: online anomaly detection over tumbling windows, live or over history."""

from __future__ import annotations

import logging
import signal
from datetime import datetime, timezone

import click

from plugin.cli import AppContext, pass_app
from plugin.config import parse_time
from plugin.errors import ConfigError, InputError
from plugin.windows import WindowRunner, parse_partition, window_bounds

log = logging.getLogger(__name__)


def parse_ms(text: str | None) -> int | None:
    """Epoch milliseconds of a --from/--to value (ISO 8601, epoch ms, now-1h ...).

    >>> parse_ms("1970-01-01T00:01:00Z"), parse_ms("60000")
    (60000, 60000)
    """
    t = parse_time(text)
    return None if t is None else int(t.timestamp() * 1000)


@click.command("run")
@click.option("--from", "from_", metavar="T",
              help="Start of the history to backfill (ISO-8601 or epoch ms). Default: resume at "
                   "the checkpoint, or start at the current window.")
@click.option("--to", metavar="T",
              help="End of the backfill; without it, keep following live data.")
@click.option("--partition", default="0/1", show_default=True, metavar="I/N",
              help="This worker's share of the entities (terms partitioning); each has its own "
                   "checkpoint.")
@pass_app
def command(app: AppContext, from_, to, partition):
    """Score every window of events with online models and write anomaly documents.

    Windows are [run] window long and are processed [run] lag after they end, from
    engine-side aggregations. After every window the models and the window end are
    checkpointed in the state index, so a restarted run resumes at the next window.
    """
    from_ms, to_ms = parse_ms(from_), parse_ms(to)
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise ConfigError("--to must be after --from")
    i, n = parse_partition(partition)
    events = app.config.index("events_pattern")
    # Events an ingest has just written are counted too (a backfill often follows one at once).
    if to_ms is not None:
        app.store.refresh(events)
    if to_ms is not None and not app.store.count(events):
        raise InputError(f"no events in {events} at {app.store.safe_url} to backfill",
                         hint="ingest logs with `fwsiem ingest` first, or check [indices] "
                              "events_pattern")
    stopping = {"flag": False}

    def on_term(signum, frame):
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    runner = WindowRunner(app.store, app.config, i, n, stop=lambda: stopping["flag"])
    cp = runner.load()
    if cp is not None:
        click.echo(f"resuming after window ending {_iso(cp.window_end_ms)} "
                   f"({cp.windows_done} windows done)", err=True)
    total = None
    if to_ms is not None:
        begin = cp.window_end_ms if cp is not None else (from_ms or to_ms)
        total = sum(1 for _ in window_bounds(begin, to_ms, runner.s.window_ms))
    done = 0
    with click.progressbar(length=total or 0, label="windows", file=None,
                           show_pos=True) if total else _Null() as bar:
        for batch in runner.batches(from_ms, to_ms):
            before = runner.cp.windows_done if runner.cp else 0
            docs = runner.process_batch(batch)
            # fewer than the batch when stopping, none when a partitioned worker skips a window
            n = (runner.cp.windows_done if runner.cp else 0) - before
            done += n
            bar.update(n)
            if to_ms is None:
                log.info("window %s: %d anomalies", _iso(batch[0][0]), len(docs))
    click.echo(f"{done} windows processed, {runner.anomalies_written} anomaly documents "
               f"written to {app.config.index('anomalies')}", err=True)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        pass
