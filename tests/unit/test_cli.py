"""The CLI: --help everywhere, one readable line and a non-zero exit code on errors."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from plugin.cli import cli


def _all_commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, prefix + (name,))


@pytest.mark.parametrize("path", [(), *sorted(_all_commands(cli))], ids=lambda p: " ".join(p) or "root")
def test_every_command_has_help(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert len(result.output.splitlines()) > 3


def test_unreachable_cluster_is_one_line_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "plugin", "--url", "http://127.0.0.1:1", "setup"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "127.0.0.1:1" in errors[0] and "fwsiem engine start" in errors[0]


def test_credentials_never_printed():
    proc = subprocess.run([sys.executable, "-m", "plugin", "--url", "http://soc:hunter2@127.0.0.1:1",
                           "--password", "hunter3", "setup"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "hunter2" not in proc.stderr + proc.stdout
    assert "hunter3" not in proc.stderr + proc.stdout


def test_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "plugin", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "fwsiem" in proc.stdout


def test_basic_auth_over_plain_http_is_warned_about():
    proc = subprocess.run([sys.executable, "-m", "plugin", "--url", "http://127.0.0.1:1",
                           "setup"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FWSIEM_USERNAME": "soc", "FWSIEM_PASSWORD": "s3",
                               "FWSIEM_CONFIG": ""})
    assert "unencrypted over http://" in proc.stderr
    assert "s3" not in proc.stderr


def test_password_from_a_file_and_a_warning_for_one_on_the_command_line(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("hunter4\n")
    proc = subprocess.run([sys.executable, "-m", "plugin", "--url", "https://127.0.0.1:1",
                           "--username", "soc", "--password-file", str(secret), "setup"],
                          capture_output=True, text=True, timeout=120)
    assert "visible to other local users" not in proc.stderr and "hunter4" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "plugin", "--url", "https://127.0.0.1:1",
                           "--username", "soc", "--password", "hunter5", "setup"],
                          capture_output=True, text=True, timeout=120)
    assert "visible to other local users" in proc.stderr and "hunter5" not in proc.stderr
