"""Configuration: defaults, file, environment overrides and clear errors."""

from __future__ import annotations

import pytest

from plugin.config import load_config, parse_duration
from plugin.errors import ConfigError


def test_defaults_name_every_index():
    cfg = load_config(env={})
    for key in ("events", "deadletter", "anomalies", "recommendations", "models", "state", "rules"):
        assert cfg.index(key)
    assert cfg.engine.url == "http://127.0.0.1:9200"


def test_file_then_environment_override(tmp_path):
    path = tmp_path / "fwsiem.toml"
    path.write_text('[engine]\nurl = "https://es.example:9200"\ntimeout = 5\n[run]\nwindow = "5m"\n')
    cfg = load_config(path, env={"FWSIEM_RUN_WINDOW": "2m", "FWSIEM_ENGINE_TIMEOUT": "9"})
    assert cfg.engine.url == "https://es.example:9200"
    assert cfg.section("run")["window"] == "2m"
    assert cfg.engine.timeout == 9  # coerced to the type of the default


def test_short_environment_names(tmp_path):
    cfg = load_config(env={"FWSIEM_URL": "http://10.0.0.5:9200", "FWSIEM_PASSWORD": "s3cret",
                           "FWSIEM_USERNAME": "soc"})
    assert cfg.engine.url == "http://10.0.0.5:9200"
    assert cfg.engine.username == "soc"
    assert "s3cret" not in repr(cfg.engine)


def test_boolean_override():
    cfg = load_config(env={"FWSIEM_ENGINE_VERIFY_CERTS": "false"})
    assert cfg.engine.verify_certs is False


def test_missing_and_invalid_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[engine\nurl=")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(bad, env={})


def test_durations():
    assert parse_duration("90s") == 90
    assert parse_duration("1.5h") == 5400
    with pytest.raises(ConfigError):
        parse_duration("soon")


def test_unknown_index_is_a_config_error():
    with pytest.raises(ConfigError, match="no index named"):
        load_config(env={}).index("nope")


def test_list_values_from_the_environment():
    cfg = load_config(env={"FWSIEM_RUN_ENTITY_TYPES": "source,host", "FWSIEM_RUN_SEVERITY_LEVELS": "[3, 5, 8, 13]"})
    assert cfg.section("run")["entity_types"] == ["source", "host"]
    assert cfg.section("run")["severity_levels"] == [3, 5, 8, 13]
