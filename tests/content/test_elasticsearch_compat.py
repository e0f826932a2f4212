"""The pipelines `fwsiem setup` installs on Elasticsearch use only what Elasticsearch 8 accepts.

No Elasticsearch 8 that runs ingest pipelines can be had here, so the pipelines are checked
against Elasticsearch's own ingest API specification, kept as facts in
`elasticsearch8-ingest.json` (its source repository, path and commit are in the file).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from plugin.setup import painless_libraries, pipeline_files, resolve_includes

SPEC = json.loads((Path(__file__).with_name("elasticsearch8-ingest.json")).read_text())
PROCESSORS: dict[str, dict] = SPEC["processors"]
COMMON = set(SPEC["common_options"])
# A class named in Painless code (a capitalised name that is not a member or an ALL_CAPS constant).
PAINLESS_CLASS = re.compile(r"(?<![\w.])([A-Z][A-Za-z0-9_]*[a-z][A-Za-z0-9_]*)")
PAINLESS_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def _walk(procs, where):
    for i, proc in enumerate(procs or []):
        for kind, conf in proc.items():
            yield f"{where}[{i}].{kind}", kind, conf
            if isinstance(conf, dict):
                yield from _walk(conf.get("on_failure"), f"{where}[{i}].{kind}.on_failure")
                if kind == "foreach" and isinstance(conf.get("processor"), dict):
                    yield from _walk([conf["processor"]], f"{where}[{i}].foreach.processor")


def _installed_on_elasticsearch():
    """(file, where, processor type, options) of every processor installed on Elasticsearch."""
    libraries = painless_libraries()
    for path in pipeline_files("elasticsearch"):
        body = resolve_includes(json.loads(path.read_text()), libraries)
        name = str(path.relative_to(path.parents[1]))
        for part in ("processors", "on_failure"):
            for where, kind, conf in _walk(body.get(part), part):
                yield name, where, kind, conf


def test_the_facts_come_from_the_8x_specification():
    assert SPEC["source"]["repository"] == "elastic/elasticsearch-specification"
    assert re.fullmatch(r"[0-9a-f]{40}", SPEC["source"]["commit"])
    assert {"grok", "dissect", "kv", "script", "community_id", "pipeline"} <= set(PROCESSORS)
    assert "cef" not in PROCESSORS, "cef is a 9.x processor: these facts must be the 8.x line"


def test_every_processor_and_option_is_one_elasticsearch_8_accepts():
    refused = []
    for name, where, kind, conf in _installed_on_elasticsearch():
        if kind not in PROCESSORS:
            refused.append(f"{name} {where}: processor `{kind}` does not exist in Elasticsearch 8")
            continue
        spec = PROCESSORS[kind]
        for option in sorted(set(conf) - set(spec["options"]) - COMMON):
            refused.append(f"{name} {where}: `{kind}` has no option `{option}` in Elasticsearch 8")
        for option in spec["required"]:
            if option not in conf:
                refused.append(f"{name} {where}: `{kind}` needs `{option}` in Elasticsearch 8")
        if kind == "convert" and conf.get("type") not in SPEC["enums"]["convert.type"]:
            refused.append(f"{name} {where}: convert type `{conf.get('type')}` is not one of "
                           f"{SPEC['enums']['convert.type']}")
        if "if" in conf and not isinstance(conf["if"], str):
            refused.append(f"{name} {where}: `if` is a Painless string in the 8.x specification")
    assert not refused, "Elasticsearch 8 would refuse:\n" + "\n".join(refused)


def test_painless_scripts_use_only_classes_elasticsearch_8_allows():
    allowed = set(SPEC["painless"]["classes"])
    offenders = []
    for name, where, kind, conf in _installed_on_elasticsearch():
        sources = [conf.get("source", "")] if kind == "script" else []
        sources += [conf["if"]] if isinstance(conf.get("if"), str) else []
        for source in sources:
            code = PAINLESS_STRING.sub("''", source)
            used = set(PAINLESS_CLASS.findall(code)) - allowed
            offenders += [f"{name} {where}: {cls}" for cls in sorted(used)]
    assert not offenders, ("classes not checked against Elasticsearch 8's Painless allowlist "
                           "(see painless.about in elasticsearch8-ingest.json):\n"
                           + "\n".join(offenders))
