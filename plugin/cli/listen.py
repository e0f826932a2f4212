"""``fwsiem listen``: receive syslog (UDP and TCP) and ship it through the ingest pipelines."""

from __future__ import annotations

import signal
import threading

import click

from plugin.cli import pass_app
from plugin.shipping import (
    LineBatcher,
    check_written,
    configured_shipper,
    summary_lines,
)
from plugin.syslog import DEFAULT_MAX_CONNECTIONS, SyslogReceiver

FORMATS = ("auto", "nsx", "iptables", "pfsense", "cisco-asa", "panos", "fortigate", "cef", "leef",
           "nfdump", "pmacct")


@click.command("listen")
@click.option("--host", default=None, help="Address to listen on [config listen.host, 127.0.0.1].")
@click.option("--udp-port", type=click.IntRange(-1, 65535), default=None,
              help="UDP port; -1 disables UDP [config listen.udp_port, 5514].")
@click.option("--tcp-port", type=click.IntRange(-1, 65535), default=None,
              help="TCP port (RFC 6587 octet counting or LF framing); -1 disables TCP "
                   "[config listen.tcp_port, 5514].")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
              help="Format hint sent with every line.")
@click.option("--status-every", type=float, default=60.0, show_default=True,
              help="Seconds between status lines on stderr (0: none).")
@pass_app
def command(app, host, udp_port, tcp_port, fmt, status_every):
    """Receive syslog from ESXi/NSX hosts and firewalls and ship it in batches until Ctrl-C.

    Lines go through the fwsiem-logs pipeline exactly like `fwsiem ingest`. While the engine
    is unavailable, batches are spooled to disk ([engine] spool_dir) and replayed when it is
    back; on exit, anything still spooled is named and the exit code is non-zero.
    """
    conf = app.config.section("listen")
    host = host or conf.get("host", "127.0.0.1")
    udp = udp_port if udp_port is not None else int(conf.get("udp_port", 5514))
    tcp = tcp_port if tcp_port is not None else int(conf.get("tcp_port", 5514))
    if udp < 0 and tcp < 0:
        raise click.UsageError("both UDP and TCP are disabled: nothing to listen on")
    settings, shipper = configured_shipper(app.config, lambda: app.store)
    stats = shipper.stats
    if shipper.spool.pending():
        shipper.replay()
    batcher = LineBatcher(shipper, settings, module=None if fmt == "auto" else fmt)
    receiver = SyslogReceiver(batcher, host=host, udp_port=udp if udp >= 0 else None,
                              tcp_port=tcp if tcp >= 0 else None,
                              flush_interval=settings.flush_interval,
                              max_connections=int(conf.get("max_connections",
                                                           DEFAULT_MAX_CONNECTIONS))).start()
    where = ", ".join(f"{proto} {host}:{port}" for proto, port in
                      (("udp", receiver.udp_port), ("tcp", receiver.tcp_port)) if port)
    click.echo(f"listening on {where}; shipping to {shipper.store_name()} (Ctrl-C to stop)", err=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(status_every if status_every > 0 else 3600):
            lost = f", NOT WRITTEN {stats.not_spooled:,}" if stats.not_spooled else ""
            click.echo(f"received {receiver.received:,}, indexed {stats.indexed:,}, dead-lettered "
                       f"{stats.dead_lettered:,}, spooled {stats.spooled:,}{lost}", err=True)
    except KeyboardInterrupt:
        pass
    click.echo("stopping: shipping what was received ...", err=True)
    receiver.stop()
    shipper.replay()
    for line in summary_lines(stats):
        click.echo(line)
    check_written(stats, shipper.store_name())
