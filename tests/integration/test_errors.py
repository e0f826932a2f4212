"""A user's mistake is one line naming what failed and where, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CASES = {
    "timeout-not-a-number": ({"FWSIEM_ENGINE_TIMEOUT": "abc"}, ["models", "list"],
                             "FWSIEM_ENGINE_TIMEOUT"),
    "quantile-not-a-number": ({"FWSIEM_RUN_QUANTILE": "x"}, ["models", "list"],
                              "FWSIEM_RUN_QUANTILE"),
    "verify-certs-not-a-boolean": ({"FWSIEM_ENGINE_VERIFY_CERTS": "enabled"}, ["models", "list"],
                                   "not a boolean"),
    "toml-value-of-the-wrong-type": ({"FWSIEM_CONFIG": "{tmp}/typed.toml"}, ["models", "list"],
                                     "typed.toml"),
    "config-not-utf8": ({"FWSIEM_CONFIG": "{tmp}/latin1.toml"}, ["models", "list"],
                        "latin1.toml"),
    "unknown-config-key": ({"FWSIEM_CONFIG": "{tmp}/typo.toml"}, ["models", "list"],
                           "did you mean url"),
    "malformed-url": ({}, ["--url", "http://[::1", "models", "list"], "http://[::1"),
    "rules-import-binary": ({}, ["rules", "import", "/bin/ls"], "/bin/ls"),
    "simulate-out-a-file": ({}, ["simulate", "--hours", "0.1", "--out", "/bin/ls"], "/bin/ls"),
    "simulate-scenario-binary": ({}, ["simulate", "--scenario", "/bin/ls", "--out",
                                      "{tmp}/sim"], "/bin/ls"),
    "report-out-unwritable": ({}, ["report", "--out", "/proc/x"], "/proc/x"),
    "run-without-events": ({"FWSIEM_INDICES_EVENTS_PATTERN": "no-such-events-*",
                            "FWSIEM_INDICES_STATE": "no-such-state",
                            "FWSIEM_INDICES_ANOMALIES": "no-such-anomalies"},
                           ["run", "--from", "2026-01-01T00:00:00Z", "--to",
                            "2026-01-01T01:00:00Z"], "no-such-events-*"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_user_mistake_is_one_line_without_a_traceback(os_engine, tmp_path, case):
    (tmp_path / "typed.toml").write_text('[engine]\ntimeout = "abc"\n')
    (tmp_path / "latin1.toml").write_bytes('[alert]\nemail_from = "sécurité@x"\n'.encode("latin-1"))
    (tmp_path / "typo.toml").write_text(f'[engine]\nurll = "{os_engine.url}"\n')
    env, args, named = CASES[case]
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    args = [a.format(tmp=tmp_path) for a in args]
    if "--url" not in args:
        args = ["--url", os_engine.url, *args]
    proc = subprocess.run([sys.executable, "-m", "plugin", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "FWSIEM_CONFIG": "", **env})
    assert proc.returncode not in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0], proc.stderr[-2000:]
