"""Painless libraries: what a script that includes one is installed as, and the mistakes refused."""

from __future__ import annotations

import json

import pytest

from plugin.errors import FwsiemError
from plugin.setup import painless_libraries, pipeline_bodies, resolve_includes


def _script(source: str, **conf) -> dict:
    return {"processors": [{"script": {"tag": "s", "source": source, **conf}}]}


def _resolved(body: dict, libraries: dict) -> dict:
    return resolve_includes(body, libraries)["processors"][0]["script"]


LIBS = {
    "base": {"source": "int one() { return 1; }", "params": {"names": {"6": "tcp"}}},
    "mid": {"source": "/* fwsiem:include base */ int two() { return one() + one(); }"},
}


def test_a_library_and_what_it_includes_come_first_once_each_with_their_params():
    got = _resolved(_script("/* fwsiem:include mid, base */ ctx.n = two();",
                            params={"k": [1]}), LIBS)
    assert got["source"] == ("int one() { return 1; } int two() { return one() + one(); } "
                             "ctx.n = two();")
    assert got["params"] == {"names": {"6": "tcp"}, "k": [1]}


def test_a_script_without_the_include_comment_is_installed_as_written():
    body = _script("ctx.n = 1; /* fwsiem:include base */")
    assert resolve_includes(body, LIBS) == body


def test_on_failure_handlers_are_resolved_too():
    body = {"processors": [{"set": {"field": "a", "value": 1, "on_failure": [
        {"script": {"source": "/* fwsiem:include base */ ctx.n = one();"}}]}}]}
    handler = resolve_includes(body, LIBS)["processors"][0]["set"]["on_failure"][0]["script"]
    assert handler["source"] == "int one() { return 1; } ctx.n = one();"


@pytest.mark.parametrize("source, conf, message", [
    ("/* fwsiem:include nowhere */ ctx.n = 1;", {}, "'nowhere' not found"),
    ("/* fwsiem:include base */ ctx.n = 1;", {"params": {"names": {}}}, "param 'names' differs"),
])
def test_a_missing_library_or_a_clashing_param_is_refused_by_name(source, conf, message):
    with pytest.raises(FwsiemError, match=message):
        _resolved(_script(source, **conf), LIBS)


def test_a_library_that_includes_itself_is_refused():
    libs = {"a": {"source": "/* fwsiem:include b */ int a() { return 1; }"},
            "b": {"source": "/* fwsiem:include a */ int b() { return 2; }"}}
    with pytest.raises(FwsiemError, match="includes itself"):
        _resolved(_script("/* fwsiem:include a */ ctx.n = a();"), libs)


def test_every_shipped_pipeline_installs_without_an_unresolved_include():
    libraries = painless_libraries()
    assert {"network", "nsx-map", "event-outcome"} <= set(libraries)
    for name, body in pipeline_bodies().items():
        assert "fwsiem:include" not in json.dumps(body), name
