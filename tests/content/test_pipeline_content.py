"""House rules over every ingest pipeline and its samples, each rule reporting all offenders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from plugin.lines import HEADER_DEFAULTS, DeclaredHeader

PIPELINES = Path(__file__).resolve().parents[2] / "ingest_pipelines"
# Namespaces a pipeline may write: ECS field sets, the vendors' own, fwsiem's, and `_tmp` scratch
# space that the entry pipeline removes.
ALLOWED_ROOTS = {
    "@timestamp", "event", "source", "destination", "network", "rule", "observer", "host", "log",
    "error", "tags", "nsx", "iptables", "pfsense", "cisco", "panw", "fortinet", "nfdump", "pmacct",
    "zeek", "windows_firewall", "process", "http",
    "fwsiem", "_tmp", "_index", "message", "user", "url", "file", "cef", "leef",
}
GROK_FIELD = re.compile(r"%\{\w+:([\w.@]+)(?::\w+)?\}|\(\?<([\w.@]+)>")
PAINLESS_ASSIGN = re.compile(r"ctx\.([A-Za-z_@][\w]*)\s*=(?!=)")
# Processors that only add a field: when one fails, the event is kept and the failure recorded on
# it by this pipeline (tag fwsiem_enrichment_failed, fwsiem.enrichment_failures), never dead-lettered.
ENRICHMENT_FAILED = "fwsiem-enrichment-failed"
ENRICHMENT_PROCESSORS = {"community_id", "geoip", "user_agent", "network_direction",
                         "registered_domain", "uri_parts"}
# Pipelines that only add fields: they record their failures instead of dead-lettering.
ENRICHMENT_PIPELINES = {"fwsiem-community-id", "fwsiem-community-id-by-script"}


def _load() -> dict[Path, dict]:
    return {p: json.loads(p.read_text()) for p in sorted(PIPELINES.rglob("fwsiem-*.json"))}


PIPELINE_FILES = _load()


def _processors(body: dict):
    def walk(procs, where):
        for i, proc in enumerate(procs):
            for kind, conf in proc.items():
                yield f"{where}[{i}].{kind}", kind, conf
                yield from walk(conf.get("on_failure", []), f"{where}[{i}].on_failure")
    yield from walk(body.get("processors", []), "processors")
    yield from walk(body.get("on_failure", []), "on_failure")


def _records_enrichment_failure(on_failure: list[dict]) -> bool:
    return any(kind == "pipeline" and conf.get("name") == ENRICHMENT_FAILED
               for proc in on_failure for kind, conf in proc.items())


def _is_enrichment_pipeline(path: Path, body: dict) -> bool:
    """The recorder itself, or one of ENRICHMENT_PIPELINES, which must record its failures."""
    return path.stem == ENRICHMENT_FAILED or (
        path.stem in ENRICHMENT_PIPELINES and _records_enrichment_failure(body.get("on_failure", [])))


def test_there_is_an_entry_pipeline_and_one_per_format():
    names = {p.stem for p in PIPELINE_FILES}
    assert {"fwsiem-logs", "fwsiem-nsx-dfw", "fwsiem-iptables", "fwsiem-pfsense", "fwsiem-cisco-asa",
            "fwsiem-panos", "fwsiem-fortigate", "fwsiem-nfdump", "fwsiem-pmacct"} <= names


def test_every_pipeline_has_a_description_and_on_failure():
    offenders = [p.name for p, b in PIPELINE_FILES.items()
                 if not b.get("description") or not b.get("on_failure")]
    assert not offenders


def test_every_processor_has_a_unique_tag():
    offenders = []
    for path, body in PIPELINE_FILES.items():
        seen: dict[str, str] = {}
        for where, _kind, conf in _processors(body):
            tag = conf.get("tag")
            if not tag:
                offenders.append(f"{path.name} {where}: no tag")
            elif tag in seen:
                offenders.append(f"{path.name} {where}: tag {tag!r} also at {seen[tag]}")
            else:
                seen[tag] = where
    assert not offenders, "\n".join(offenders)


def test_on_failure_turns_the_document_into_a_dead_letter():
    offenders = []
    for path, body in PIPELINE_FILES.items():
        if _is_enrichment_pipeline(path, body):
            continue
        sets = {c.get("field"): c.get("value") for k, c in
                (next(iter(p.items())) for p in body.get("on_failure", [])) if k == "set"}
        needed = {"_index": "fwsiem-deadletter", "event.kind": "pipeline_error",
                  "error.message": "{{{_ingest.on_failure_message}}}",
                  "fwsiem.deadletter.processor": "{{{_ingest.on_failure_processor_type}}}",
                  "fwsiem.deadletter.processor_tag": "{{{_ingest.on_failure_processor_tag}}}"}
        for field, value in needed.items():
            if sets.get(field) != value:
                offenders.append(f"{path.name}: on_failure does not set {field} to {value}")
        if sets.get("fwsiem.deadletter.pipeline") != path.stem:
            offenders.append(f"{path.name}: on_failure does not name its pipeline")
    assert not offenders, "\n".join(offenders)


def test_a_failed_enrichment_is_recorded_on_the_event_never_dead_lettered():
    offenders = []
    for path, body in PIPELINE_FILES.items():
        enrichment_pipeline = _is_enrichment_pipeline(path, body)
        for where, kind, conf in _processors(body):
            if kind in ENRICHMENT_PROCESSORS and not enrichment_pipeline and \
                    not _records_enrichment_failure(conf.get("on_failure", [])):
                offenders.append(f"{path.name} {where}: on_failure does not call {ENRICHMENT_FAILED}")
    recorder = next(b for p, b in PIPELINE_FILES.items() if p.stem == ENRICHMENT_FAILED)
    kinds = {kind for where, kind, conf in _processors(recorder)}
    if not kinds <= {"append", "set"} or any(not conf.get("ignore_failure") for proc in
                                             recorder["on_failure"] for conf in proc.values()):
        offenders.append(f"{ENRICHMENT_FAILED}: only appends/sets, and its on_failure cannot fail")
    assert not offenders, "\n".join(offenders)


def _routes(body: dict, name: str) -> list[str]:
    """The pipelines a `pipeline` processor can call: its name, or for a name a script chose
    (`{{{_tmp.pipeline}}}`) every pipeline the body's scripts name in `params.pipelines`."""
    if "{{" not in name:
        return [name]
    return [target for _, kind, conf in _processors(body) if kind == "script"
            for target in conf.get("params", {}).get("pipelines", {}).values()]


def test_every_pipeline_processor_references_an_existing_pipeline():
    names = {p.stem for p in PIPELINE_FILES}
    offenders = [f"{p.name} {where}: {target}" for p, b in PIPELINE_FILES.items()
                 for where, kind, conf in _processors(b) if kind == "pipeline"
                 for target in _routes(b, conf["name"]) or ["(none)"] if target not in names]
    assert not offenders


def test_every_format_the_router_detects_has_a_pipeline():
    entry = json.loads((PIPELINES / "logs" / "fwsiem-logs.json").read_text())
    prepare = next(conf for _, kind, conf in _processors(entry) if conf.get("tag") == "prepare_line")
    source, pipelines = prepare["source"], prepare["params"]["pipelines"]
    detected = set(prepare["params"]["hints"].values()) | set(re.findall(r"f = '(\w+)'", source))
    assert detected <= set(pipelines), detected - set(pipelines)


def test_pipelines_sit_in_one_folder_per_format():
    offenders = [str(p.relative_to(PIPELINES)) for p in PIPELINE_FILES
                 if len(p.relative_to(PIPELINES).parts) not in (2, 3)]
    assert not offenders, "a pipeline lives in ingest_pipelines/<format>/ (or <format>/<flavor>/)"


def test_flavour_variants_replace_an_existing_pipeline():
    top = {p.stem: p.parent for p in PIPELINE_FILES if len(p.relative_to(PIPELINES).parts) == 2}
    offenders = [str(p.relative_to(PIPELINES)) for p in PIPELINE_FILES
                 if len(p.relative_to(PIPELINES).parts) == 3 and top.get(p.stem) != p.parent.parent]
    assert not offenders, "a flavour variant sits in the folder of the pipeline it replaces"


def test_every_sample_has_an_expected_file_and_every_expected_file_a_sample():
    samples = {str(p) for p in PIPELINES.rglob("test-*.log")}
    expected = {str(p)[: -len("-expected.json")] for p in PIPELINES.rglob("test-*.log-expected.json")}
    assert samples, "no samples"
    assert not samples ^ expected, sorted(samples ^ expected)


def test_every_format_folder_has_samples():
    folders = {p.parent for p in PIPELINE_FILES if len(p.relative_to(PIPELINES).parts) == 2}
    offenders = [f.name for f in folders if f.name != "network" and not list(f.glob("test-*.log"))]
    assert not offenders


def test_fields_written_are_ecs_or_a_vendor_namespace():
    offenders = []
    for path, body in PIPELINE_FILES.items():
        for where, kind, conf in _processors(body):
            fields = [conf.get(k) for k in ("field", "target_field") if kind != "grok"
                      and isinstance(conf.get(k), str)]
            if kind in ("grok",):
                for pattern in conf.get("patterns", []) + list(conf.get("pattern_definitions", {}).values()):
                    fields += [a or b for a, b in GROK_FIELD.findall(pattern)]
            if kind == "csv":
                fields += conf.get("target_fields", [])
            if kind == "script":
                fields += PAINLESS_ASSIGN.findall(conf.get("source", ""))
            if kind == "rename":
                fields = [conf["target_field"]]
            if kind == "remove":
                fields = []
            for field in fields:
                if field and field.split(".")[0] not in ALLOWED_ROOTS:
                    offenders.append(f"{path.name} {where}: {field}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("expected", sorted(PIPELINES.rglob("test-*.log-expected.json")),
                         ids=lambda p: p.name)
def test_expected_documents_match_their_sample_line_count(expected: Path):
    sample = expected.with_name(expected.name[: -len("-expected.json")])
    lines = sample.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    header = DeclaredHeader()
    lines = [line for line in lines if not header.consume(line)]  # W3C/Zeek headers: not events
    docs = json.loads(expected.read_text())
    assert len(docs) == len(lines)
    assert all(d.get("event", {}).get("original") is not None for d in docs)


@pytest.mark.parametrize(("fmt", "pipeline", "tag"), [
    ("w3c", "windows_firewall/fwsiem-windows-firewall.json", "parse_w3c_record"),
    ("zeek", "zeek/fwsiem-zeek.json", "parse_record"),
])
def test_standard_layout_of_declared_fields_agrees_with_the_shipper(fmt, pipeline, tag):
    """The shipper leaves a header's field list out when it is the standard layout, so the
    pipeline must split records by that same layout."""
    body = json.loads((PIPELINES / pipeline).read_text())
    script = next(p["script"] for p in body["processors"] if p.get("script", {}).get("tag") == tag)
    assert script["params"]["fields"] == HEADER_DEFAULTS[fmt]["fields"]
