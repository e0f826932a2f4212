"""Configuration: defaults, file, environment overrides and clear errors."""

from __future__ import annotations

import pytest

from plugin.config import EngineSettings, load_config, parse_duration
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


@pytest.mark.parametrize("word", ["enabled", "", "ture", "2", "disable"])
def test_tls_verification_is_never_turned_off_by_a_word_that_is_not_a_boolean(word):
    with pytest.raises(ConfigError, match="FWSIEM_ENGINE_VERIFY_CERTS.*not a boolean"):
        load_config(env={"FWSIEM_ENGINE_VERIFY_CERTS": word})


@pytest.mark.parametrize(("word", "verify"), [("false", False), ("0", False), ("No", False),
                                              ("off", False), ("TRUE", True), ("1", True),
                                              ("yes", True), ("on", True)])
def test_boolean_words_are_read_strictly(word, verify):
    assert load_config(env={"FWSIEM_ENGINE_VERIFY_CERTS": word}).engine.verify_certs is verify


@pytest.mark.parametrize(("name", "value"), [("FWSIEM_ENGINE_TIMEOUT", "abc"),
                                             ("FWSIEM_RUN_QUANTILE", "x"),
                                             ("FWSIEM_RUN_WARMUP_WINDOWS", "1.5"),
                                             ("FWSIEM_RUN_DETECTORS", "[1]")])
def test_a_badly_typed_environment_value_is_a_one_line_config_error(name, value):
    with pytest.raises(ConfigError, match=name):
        load_config(env={name: value})


@pytest.mark.parametrize("text", ['[engine]\ntimeout = "abc"\n', "[engine]\nverify_certs = \"no\"\n",
                                  "[run]\nwarmup_windows = 1.5\n", "[indices]\nevents = 3\n",
                                  "engine = 1\n"])
def test_a_badly_typed_file_value_is_a_config_error_naming_the_file(tmp_path, text):
    path = tmp_path / "fwsiem.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path, env={})


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "fwsiem.toml"
    path.write_bytes(b'[engine]\nurl = "http://\xff:9200"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, env={})


@pytest.mark.parametrize(("text", "named", "closest"), [
    ('[engine]\nurll = "http://es:9200"\n', "'urll'", "did you mean url"),
    ('[engin]\nurl = "http://es:9200"\n', "[engin]", "did you mean engine"),
    ("[run]\nwarmup_window = 3\n", "'warmup_window'", "did you mean warmup_windows"),
])
def test_an_unknown_key_or_section_is_an_error_naming_the_closest_known_one(tmp_path, text,
                                                                            named, closest):
    path = tmp_path / "fwsiem.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert named in str(info.value) and closest in str(info.value)


@pytest.mark.parametrize(("name", "closest"), [("FWSIEM_ENGINE_URLL", "FWSIEM_ENGINE_URL"),
                                               ("FWSIEM_ENGIN_URL", "FWSIEM_ENGINE_URL"),
                                               ("FWSIEM_RUN_WINDOWS", "FWSIEM_RUN_WINDOW")])
def test_an_unknown_environment_variable_is_an_error_naming_the_closest_known_one(name,
                                                                                  closest):
    with pytest.raises(ConfigError, match=f"{name} .*did you mean {closest}\\?"):
        load_config(env={name: "x"})


def test_section_names_with_underscores_apply_from_the_environment():
    config = load_config(env={"FWSIEM_LOCAL_ENGINE_HEAP": "2g",
                              "FWSIEM_LOCAL_ENGINE_START_TIMEOUT": "300"})
    assert config.section("local_engine")["heap"] == "2g"
    assert config.section("local_engine")["start_timeout"] == 300.0


def test_optional_keys_and_alert_overrides_are_accepted(tmp_path):
    path = tmp_path / "fwsiem.toml"
    path.write_text('[kibana]\nverify_certs = false\n[alert.rules.deny-spike]\nthreshold = 5\n')
    config = load_config(path, env={"FWSIEM_CONFIG": "x", "FWSIEM_TEST_OS_URL": "x"})
    assert config.section("kibana")["verify_certs"] is False
    assert config.section("alert")["rules"]["deny-spike"]["threshold"] == 5


@pytest.mark.parametrize("url", ["http://[::1", "http://es:notaport", "es.example:9200", "ftp://es"])
def test_a_malformed_cluster_url_is_a_config_error(url):
    with pytest.raises(ConfigError, match="cluster URL"):
        EngineSettings(url=url)
