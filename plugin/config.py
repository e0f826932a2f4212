"""Configuration: one TOML file with defaults shipped in the package, overridden by the environment."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from plugin.errors import ConfigError, InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "FWSIEM_"
SHORT_ENV = {
    "FWSIEM_URL": ("engine", "url"),
    "FWSIEM_USERNAME": ("engine", "username"),
    "FWSIEM_PASSWORD": ("engine", "password"),
    "FWSIEM_API_KEY": ("engine", "api_key"),
    "FWSIEM_CA_CERTS": ("engine", "ca_certs"),
}


def default_config_text() -> str:
    return resources.files("plugin").joinpath("assets/fwsiem.toml").read_text()


def _coerce(value: str, like: Any) -> Any:
    if isinstance(like, list):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = [v.strip() for v in value.split(",") if v.strip()]
        return parsed if isinstance(parsed, list) else [parsed]
    if isinstance(like, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class EngineSettings:
    """How to reach the cluster. ``password`` and ``api_key`` never appear in ``repr``."""

    url: str = "http://127.0.0.1:9200"
    username: str = ""
    password: str = field(default="", repr=False)
    api_key: str = field(default="", repr=False)
    ca_certs: str = ""
    verify_certs: bool = True
    timeout: float = 30
    max_retries: int = 5
    bulk_chunk: int = 2000
    spool_dir: str = ".fwsiem/spool"


@dataclass(frozen=True)
class Config:
    """The merged configuration; ``section(name)`` gives any section as a dict."""

    data: dict
    source: str = "defaults"

    def section(self, name: str) -> dict:
        return dict(self.data.get(name, {}))

    @property
    def engine(self) -> EngineSettings:
        known = EngineSettings.__dataclass_fields__
        return EngineSettings(**{k: v for k, v in self.section("engine").items() if k in known})

    @property
    def indices(self) -> dict:
        return self.section("indices")

    def index(self, name: str) -> str:
        try:
            return self.data["indices"][name]
        except KeyError:
            raise ConfigError(f"no index named {name!r} in [indices] of {self.source}") from None

    def with_overrides(self, section: str, **values: Any) -> Config:
        clean = {k: v for k, v in values.items() if v is not None}
        return Config(_merge(self.data, {section: clean}), self.source)


def load_config(path: str | os.PathLike | None = None, env: dict | None = None) -> Config:
    """Defaults, then the file (``path``, ``$FWSIEM_CONFIG`` or ``./fwsiem.toml``), then the environment."""
    env = os.environ if env is None else env
    data = tomllib.loads(default_config_text())
    source = "defaults"
    candidate = path or env.get("FWSIEM_CONFIG") or ("fwsiem.toml" if Path("fwsiem.toml").is_file() else None)
    if candidate:
        p = Path(candidate)
        if not p.is_file():
            raise ConfigError(f"configuration file {p} does not exist", hint="check --config or FWSIEM_CONFIG")
        try:
            data = _merge(data, tomllib.loads(p.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {p} is not valid TOML: {exc}") from None
        source = str(p)
    for name, (section, key) in SHORT_ENV.items():
        if env.get(name):
            data.setdefault(section, {})[key] = env[name]
    pattern = re.compile(rf"^{ENV_PREFIX}([A-Z_]+?)_([A-Z0-9_]+)$")
    for name, value in env.items():
        m = pattern.match(name)
        if not m or name in SHORT_ENV:
            continue
        section, key = m.group(1).lower(), m.group(2).lower()
        if section in data and key in data[section]:
            data[section][key] = _coerce(value, data[section][key])
    return Config(data, source)


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration such as ``60s``, ``5m``, ``2h``, ``7d`` or a plain number.

    >>> parse_duration("5m"), parse_duration("7d"), parse_duration(30)
    (300.0, 604800.0, 30.0)
    """
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*", str(text))
    if not m:
        raise ConfigError(f"{text!r} is not a duration", hint="use a number with s, m, h, d or w, e.g. 60s")
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2) or "s"]
    return float(m.group(1)) * factor


def parse_time(text: str | int | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """An absolute UTC time from ISO 8601, epoch milliseconds, ``now``, ``now-7d`` or a bare
    duration meaning that long ago (``7d``); None for None or "".

    >>> t = dt.datetime(2024, 3, 5, 12, 30, tzinfo=dt.timezone.utc)
    >>> parse_time("now-1d", t).isoformat(), parse_time("2h", t).isoformat()
    ('2024-03-04T12:30:00+00:00', '2024-03-05T10:30:00+00:00')
    >>> parse_time("2024-03-04T00:00:00Z").isoformat(), parse_time("60000").isoformat()
    ('2024-03-04T00:00:00+00:00', '1970-01-01T00:01:00+00:00')
    """
    if text is None or text == "":
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    t = str(text).strip()
    if t.isdigit():
        return dt.datetime.fromtimestamp(int(t) / 1000, tz=dt.timezone.utc)
    if t == "now":
        return now
    m = re.fullmatch(r"now-(.+)", t)
    if m:
        return now - dt.timedelta(seconds=parse_duration(m.group(1)))
    if re.fullmatch(r"\d+(?:\.\d+)?\s*(ms|s|m|h|d|w)", t):
        return now - dt.timedelta(seconds=parse_duration(t))
    try:
        v = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{text!r} is not a time",
                         hint="use ISO 8601 (2024-03-04T00:00:00Z), epoch ms, now, now-7d or 7d") from None
    return v if v.tzinfo else v.replace(tzinfo=dt.timezone.utc)
