"""Configuration: one TOML file with defaults shipped in the package, overridden by the environment."""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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

#: FWSIEM_* variables that are not configuration keys.
NOT_CONFIG_ENV = {"FWSIEM_CONFIG", "FWSIEM_ENGINE_CACHE", "FWSIEM_GENERATE"}
NOT_CONFIG_ENV_PREFIXES = ("FWSIEM_TEST_",)
#: Keys a file may set that have no default, with a value of their type: absent, they follow
#: another setting (``[kibana] verify_certs`` follows ``[engine]``; ``[alert.rules.<id>]``
#: overrides one alert definition).
OPTIONAL_KEYS = {"kibana": {"verify_certs": True}, "alert": {"rules": {}}}
BOOLEANS = {"true": True, "1": True, "yes": True, "on": True,
            "false": False, "0": False, "no": False, "off": False}


def default_config_text() -> str:
    return resources.files("plugin").joinpath("assets/fwsiem.toml").read_text()


def _closest(word: str, known) -> str:
    match = difflib.get_close_matches(word, list(known), n=1, cutoff=0.5)
    return f" (did you mean {match[0]}?)" if match else ""


def _kind(like: Any) -> str:
    if isinstance(like, bool):
        return "a boolean (true or false)"
    if isinstance(like, int):
        return "a whole number"
    if isinstance(like, float):
        return "a number"
    if isinstance(like, list):
        return "a list"
    if isinstance(like, dict):
        return "a table"
    return "a string"


def _fits(value: Any, like: Any) -> bool:
    """Whether a TOML value has the type of the default it replaces."""
    if isinstance(like, bool):
        return isinstance(value, bool)
    if isinstance(like, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(like, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(like))


def _coerce(value: str, like: Any, where: str) -> Any:
    """An environment variable's text as the type of the default it replaces."""
    text = value.strip()
    if isinstance(like, bool):
        if text.lower() not in BOOLEANS:
            raise ConfigError(f"{where}={value!r} is not a boolean",
                              hint="use true/false, 1/0, yes/no or on/off")
        return BOOLEANS[text.lower()]
    try:
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
        if isinstance(like, dict):
            parsed = json.loads(text)
            if not isinstance(parsed, dict):
                raise ValueError
            return parsed
    except ValueError:
        raise ConfigError(f"{where}={value!r} is not {_kind(like)}") from None
    if isinstance(like, list):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = [v.strip() for v in text.split(",") if v.strip()]
        return parsed if isinstance(parsed, list) else [parsed]
    return value


def _known(defaults: dict, section: str) -> dict:
    return {**OPTIONAL_KEYS.get(section, {}), **defaults.get(section, {})}


def _check_file(data: dict, defaults: dict, source: str) -> None:
    """Every section and key of a configuration file is known and has its default's type."""
    for section, values in data.items():
        if section not in defaults:
            raise ConfigError(f"unknown section [{section}] in {source}"
                              f"{_closest(section, defaults)}",
                              hint=f"sections are {', '.join(defaults)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] in {source} must be a table, not a value")
        known = _known(defaults, section)
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown key {key!r} in [{section}] of {source}"
                                  f"{_closest(key, known)}",
                                  hint=f"keys of [{section}]: {', '.join(known)}")
            if not _fits(value, known[key]):
                raise ConfigError(f"{key} in [{section}] of {source} is {value!r}, which is not "
                                  f"{_kind(known[key])}")


def _env_key(name: str, defaults: dict) -> tuple[str, str]:
    """The (section, key) a FWSIEM_<SECTION>_<KEY> variable sets; sections may hold ``_``."""
    rest = name[len(ENV_PREFIX):].lower()
    every = {f"{ENV_PREFIX}{s}_{k}".upper(): (s, k)
             for s in defaults for k in _known(defaults, s)}
    if name in every:
        return every[name]
    section = next((s for s in sorted(defaults, key=len, reverse=True)
                    if rest.startswith(f"{s}_")), None)
    where = f"environment variable {name}"
    if section is None:
        raise ConfigError(f"{where} names no configuration section{_closest(name, every)}",
                          hint=f"sections are {', '.join(defaults)}")
    raise ConfigError(f"{where} names no key of [{section}]{_closest(name, every)}",
                      hint=f"keys of [{section}]: {', '.join(_known(defaults, section))}")


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

    def __post_init__(self) -> None:
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as exc:
            raise ConfigError(f"cluster URL {self.url!r} is malformed: {exc}",
                              hint="use http(s)://host:port, e.g. https://es.example:9200") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"cluster URL {self.url!r} is not an http:// or https:// URL "
                              "with a host", hint="e.g. https://es.example:9200")


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
    defaults = tomllib.loads(default_config_text())
    data = copy.deepcopy(defaults)
    source = "defaults"
    candidate = path or env.get("FWSIEM_CONFIG") or ("fwsiem.toml" if Path("fwsiem.toml").is_file() else None)
    if candidate:
        p = Path(candidate)
        if not p.is_file():
            raise ConfigError(f"configuration file {p} does not exist", hint="check --config or FWSIEM_CONFIG")
        try:
            loaded = tomllib.loads(p.read_bytes().decode("utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {p} is not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"configuration file {p} is not UTF-8 text (byte {exc.start})",
                              hint="save it as UTF-8") from None
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {p}: {exc.strerror}") from None
        _check_file(loaded, defaults, str(p))
        data = _merge(data, loaded)
        source = str(p)
    for name, (section, key) in SHORT_ENV.items():
        if env.get(name):
            data.setdefault(section, {})[key] = env[name]
    for name, value in env.items():
        if (not name.startswith(ENV_PREFIX) or name in SHORT_ENV or name in NOT_CONFIG_ENV
                or name.startswith(NOT_CONFIG_ENV_PREFIXES)):
            continue
        section, key = _env_key(name, defaults)
        like = _known(defaults, section)[key]
        data.setdefault(section, {})[key] = _coerce(value, like, name)
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
