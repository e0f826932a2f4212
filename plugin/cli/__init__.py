"""The ``fwsiem`` command line: one click root group, one module per command group.

Every module in this package that defines a module-level ``command`` (a click command or
group) is added to the root group, so a new command group is one new file.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import traceback

import click

from plugin import __version__
from plugin.config import Config, load_config
from plugin.errors import ConfigError, FwsiemError, InputError


class AppContext:
    """What every command gets: the configuration and, on first use, the store."""

    def __init__(self, config: Config, debug: bool = False) -> None:
        self.config = config
        self.debug = debug
        self._store = None

    @property
    def store(self):
        if self._store is None:
            from plugin.store import Store

            self._store = Store.connect(self.config.engine)
        return self._store


pass_app = click.make_pass_decorator(AppContext)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fwsiem")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="FWSIEM_CONFIG",
              help="TOML configuration file (default: ./fwsiem.toml if present, then built-in defaults).")
@click.option("--url", help="Cluster URL, e.g. https://es.example:9200 [env FWSIEM_URL].")
@click.option("--username", help="Basic-auth user [env FWSIEM_USERNAME].")
@click.option("--password", help="Basic-auth password; visible to other local users in `ps`: "
                                 "prefer --password-file or FWSIEM_PASSWORD.")
@click.option("--password-file", type=click.File("r", encoding="utf-8"),
              help="File whose first line is the basic-auth password (mode 600).")
@click.option("--api-key", help="API key, base64 'id:key' or 'id:key' [env FWSIEM_API_KEY].")
@click.option("--ca-certs", type=click.Path(dir_okay=False), help="PEM CA bundle for https [env FWSIEM_CA_CERTS].")
@click.option("--insecure", is_flag=True, help="Do not verify the cluster's TLS certificate.")
@click.option("--debug", is_flag=True, help="Verbose logs and full tracebacks on errors.")
@click.pass_context
def cli(ctx, config_path, url, username, password, password_file, api_key, ca_certs, insecure,
        debug):
    """fwsiem: firewall analytics for Elasticsearch and OpenSearch.

    Parses firewall logs into ECS with ingest pipelines, finds anomalies with online
    models, and recommends firewall rule changes.
    """
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not debug:
        for noisy in ("elastic_transport", "opensearch", "urllib3", "elasticsearch"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    if password is not None:
        logging.getLogger(__name__).warning(
            "--password on the command line is visible to other local users (ps); "
            "use --password-file or FWSIEM_PASSWORD")
    if password_file is not None:
        if password is not None:
            raise click.UsageError("give --password or --password-file, not both")
        password = password_file.readline().rstrip("\r\n")
        if not password:
            raise ConfigError(f"password file {password_file.name} is empty")
    config = load_config(config_path).with_overrides(
        "engine", url=url, username=username, password=password, api_key=api_key,
        ca_certs=ca_certs, verify_certs=False if insecure else None,
    )
    ctx.obj = AppContext(config, debug=debug)


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        command = getattr(module, "command", None)
        if isinstance(command, click.Command):
            cli.add_command(command)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point: one readable line and a non-zero exit code for user errors."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="fwsiem", standalone_mode=False)
    except FwsiemError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a path given to a command cannot be read or written
        if debug:
            traceback.print_exc()
        where = f" {exc.filename}" if exc.filename else ""
        click.echo(f"error: cannot use{where}: {exc.strerror or exc} (check the path and its "
                   "permissions)", err=True)
        sys.exit(InputError.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
