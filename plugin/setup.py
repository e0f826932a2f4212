"""Install what fwsiem needs in the cluster: index templates, indices and ingest pipelines."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from plugin.config import Config
from plugin.errors import EngineRequestError, FwsiemError
from plugin.store import Store, dumps

DEFAULT_DEADLETTER = "fwsiem-deadletter"
# template file stem -> (config key of the index or pattern, is it a pattern already)
TEMPLATE_TARGETS = {
    "fwsiem-events": ("events_pattern", True),
    "fwsiem-deadletter": ("deadletter", False),
    "fwsiem-anomalies": ("anomalies", False),
    "fwsiem-incidents": ("incidents", False),
    "fwsiem-recommendations": ("recommendations", False),
    "fwsiem-models": ("models", False),
    "fwsiem-state": ("state", False),
    "fwsiem-rules": ("rules", False),
}
PLAIN_INDICES = ("deadletter", "anomalies", "incidents", "recommendations", "models", "state", "rules")


@dataclass
class Asset:
    kind: str  # "template" | "pipeline" | "index"
    name: str
    body: dict
    source: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(dumps(self.body).encode()).hexdigest()[:16]


@dataclass
class Outcome:
    kind: str
    name: str
    status: str  # created | updated | unchanged | ok | missing | differs | skipped
    detail: str = ""


def asset_dir(name: str) -> Path:
    """A packaged asset folder (``templates``, ``ingest_pipelines``, ``kibana_saved_objects``...)."""
    return Path(str(resources.files("plugin").joinpath("assets", name)))


def template_mappings(name: str) -> dict:
    """The mappings of a shipped index template, e.g. ``template_mappings("fwsiem-events")``."""
    return json.loads((asset_dir("templates") / f"{name}.json").read_text())["template"]["mappings"]


def pipeline_files(flavor: str | None = None, root: Path | None = None) -> list[Path]:
    """Every pipeline definition, one folder per format (``ingest_pipelines/<format>/<id>.json``,
    or under ``root``); ``<format>/<flavor>/<id>.json`` replaces ``<id>.json`` for that flavour
    where the engines' processors differ."""
    files: dict[str, Path] = {}
    variants: dict[str, Path] = {}
    root = root or asset_dir("ingest_pipelines")
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files.update((p.stem, p) for p in folder.glob("fwsiem-*.json"))
        if flavor and (folder / flavor).is_dir():
            variants.update((p.stem, p) for p in (folder / flavor).glob("fwsiem-*.json"))
    files.update((k, v) for k, v in variants.items() if k in files)
    return [files[k] for k in sorted(files)]


#: A script whose source starts with this comment also gets the named Painless libraries'
#: functions (``ingest_pipelines/<folder>/painless-<name>.json``) and their params, so that one
#: script processor can do the work of several: on OpenSearch each script processor copies and
#: walks the whole document, which costs more than most scripts' own work.
INCLUDE = re.compile(r"\A/\*\s*fwsiem:include\s+([\w-]+(?:\s*,\s*[\w-]+)*)\s*\*/\s*")


def painless_libraries(root: Path | None = None) -> dict[str, dict]:
    """The Painless libraries under ``root`` (default: the packaged pipelines), by name."""
    root = root or asset_dir("ingest_pipelines")
    return {p.stem.removeprefix("painless-"): json.loads(p.read_text())
            for p in sorted(root.glob("*/painless-*.json"))}


def _included(conf: dict) -> tuple[list[str], str]:
    """The libraries a script names in its include comment, and its source after it."""
    source = conf.get("source") or ""
    match = INCLUDE.match(source)
    if not match:
        return [], source
    return [n.strip() for n in match.group(1).split(",")], source[match.end():]


def _resolved_script(conf: dict, libraries: dict[str, dict]) -> dict:
    names, rest = _included(conf)
    if not names:
        return conf
    order: list[str] = []  # every library once, each after the libraries it includes

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise FwsiemError(f"Painless library {name!r} includes itself; remove the cycle")
        if name in order:
            return
        if name not in libraries:
            raise FwsiemError(f"Painless library {name!r} not found: a script includes it; "
                              f"add ingest_pipelines/<folder>/painless-{name}.json")
        for dep in _included(libraries[name])[0]:
            visit(dep, (*path, name))
        order.append(name)

    for name in names:
        visit(name, ())
    params: dict = {}
    for part in [*(libraries[n].get("params") or {} for n in order), conf.get("params") or {}]:
        for key, value in part.items():
            if key in params and params[key] != value:
                raise FwsiemError(f"script param {key!r} differs between a script and a library "
                                  "it includes; rename one of them")
            params[key] = value
    out = {**conf, "source": " ".join([*(_included(libraries[n])[1] for n in order), rest])}
    if params:
        out["params"] = params
    return out


def resolve_includes(body: dict, libraries: dict[str, dict]) -> dict:
    """``body`` with every including script's source and params completed from ``libraries``.

    >>> libs = {"lib": {"source": "int two() { return 2; }", "params": {"k": 1}}}
    >>> resolve_includes({"processors": [{"script": {"source": "/* fwsiem:include lib */ "
    ...     "ctx.n = two();"}}]}, libs)["processors"][0]["script"]
    {'source': 'int two() { return 2; } ctx.n = two();', 'params': {'k': 1}}
    >>> libs["four"] = {"source": "/* fwsiem:include lib */ int four() { return two() * 2; }"}
    >>> resolve_includes({"processors": [{"script": {"source": "/* fwsiem:include four, lib */ "
    ...     "ctx.n = four();"}}]}, libs)["processors"][0]["script"]["source"]
    'int two() { return 2; } int four() { return two() * 2; } ctx.n = four();'
    """
    out = copy.deepcopy(body)
    for ptype, conf in processors(out):
        if ptype == "script":
            conf.update(_resolved_script(conf, libraries))
    return out


def pipeline_bodies(flavor: str | None = None, root: Path | None = None) -> dict[str, dict]:
    """Every pipeline as the engine gets it (`pipeline_files`, includes resolved), by id."""
    libraries = painless_libraries(root)
    return {p.stem: resolve_includes(json.loads(p.read_text()), libraries)
            for p in pipeline_files(flavor, root)}


def processors(body: dict) -> Iterator[tuple[str, dict]]:
    """Every processor of a pipeline as (type, options), on_failure handlers and foreach's
    processor included; the options are the body's own dicts.

    >>> [t for t, _ in processors({"processors": [{"set": {"on_failure": [{"fail": {}}]}}]})]
    ['set', 'fail']
    """
    def walk(procs):
        for proc in procs or []:
            for ptype, conf in proc.items():
                if not isinstance(conf, dict):
                    continue
                yield ptype, conf
                yield from walk(conf.get("on_failure"))
                if ptype == "foreach" and isinstance(conf.get("processor"), dict):
                    yield from walk([conf["processor"]])

    yield from walk(body.get("processors"))
    yield from walk(body.get("on_failure"))


def processors_used(body: dict) -> set[str]:
    """Every processor type a pipeline uses, on_failure handlers included.

    >>> sorted(processors_used({"processors": [{"grok": {}}, {"set": {"on_failure": [{"fail": {}}]}}]}))
    ['fail', 'grok', 'set']
    """
    return {ptype for ptype, _ in processors(body)}


def _retarget_deadletter(body: dict, index: str) -> dict:
    if index == DEFAULT_DEADLETTER:
        return body
    text = json.dumps(body).replace(f'"{DEFAULT_DEADLETTER}"', json.dumps(index))
    return json.loads(text)


def desired_assets(config: Config, flavor: str | None = None) -> list[Asset]:
    assets: list[Asset] = []
    for path in sorted(asset_dir("templates").glob("*.json")):
        body = json.loads(path.read_text())
        key, is_pattern = TEMPLATE_TARGETS[path.stem]
        target = config.index(key)
        body["index_patterns"] = [target if is_pattern else f"{target}*"]
        assets.append(Asset("template", path.stem, body, str(path)))
    deadletter = config.index("deadletter")
    bodies = pipeline_bodies(flavor)
    for path in pipeline_files(flavor):
        body = _retarget_deadletter(bodies[path.stem], deadletter)
        assets.append(Asset("pipeline", path.stem, body, str(path)))
    for key in PLAIN_INDICES:
        assets.append(Asset("index", config.index(key), {}, f"[indices] {key}"))
    return assets


def _installed_digest(store: Store, asset: Asset) -> str | None:
    """The digest recorded on the installed asset, '' when present but different, None if absent."""
    if asset.kind == "template":
        got = store.get_index_template(asset.name)
        if got is None:
            return None
        return (got.get("_meta") or {}).get("fwsiem_digest", "")
    if asset.kind == "pipeline":
        got = store.get_pipeline(asset.name)
        if got is None:
            return None
        return asset.digest if got == asset.body else ""
    return asset.digest if store.exists(asset.name) else None


def _put(store: Store, asset: Asset) -> None:
    if asset.kind == "template":
        body = copy.deepcopy(asset.body)
        body.setdefault("_meta", {})["fwsiem_digest"] = asset.digest
        store.put_index_template(asset.name, body)
    elif asset.kind == "pipeline":
        store.put_pipeline(asset.name, asset.body)
    else:
        store.create_index(asset.name)


def run_setup(store: Store, config: Config, *, check: bool = False, skip_pipelines: bool = False,
              only: set[str] | None = None) -> list[Outcome]:
    """Install (or with ``check`` only compare) every asset; unchanged assets are not touched.

    Pipelines that need processors the cluster lacks are refused up front with the list of what
    is missing, unless ``skip_pipelines``.
    """
    outcomes: list[Outcome] = []
    available = store.ingest_processors()
    assets = [a for a in desired_assets(config, store.flavor) if not only or a.kind in only]
    # Templates first, so indices created next pick up their mappings.
    assets.sort(key=lambda a: {"template": 0, "pipeline": 1, "index": 2}[a.kind])
    unsupported: dict[str, set[str]] = {}
    for asset in assets:
        if asset.kind == "pipeline":
            missing = processors_used(asset.body) - available
            if missing:
                unsupported[asset.name] = missing
    if unsupported and not skip_pipelines and not check:
        needed = sorted(set().union(*unsupported.values()))
        raise EngineRequestError(
            f"{store.safe_url} ({store.flavor} {store.version}) lacks the ingest processors "
            f"{', '.join(needed)} that {len(unsupported)} fwsiem pipelines need",
            hint="every standard Elasticsearch and OpenSearch distribution has them (module "
                 "ingest-common); use such a cluster, or --skip-pipelines to install the rest")
    for asset in assets:
        if asset.kind == "pipeline" and asset.name in unsupported and skip_pipelines:
            outcomes.append(Outcome(asset.kind, asset.name, "skipped",
                                    "cluster lacks " + ", ".join(sorted(unsupported[asset.name]))))
            continue
        have = _installed_digest(store, asset)
        if check:
            if have is None:
                outcomes.append(Outcome(asset.kind, asset.name, "missing", asset.source))
            elif have != asset.digest:
                outcomes.append(Outcome(asset.kind, asset.name, "differs", asset.source))
            else:
                outcomes.append(Outcome(asset.kind, asset.name, "ok"))
            continue
        if have == asset.digest:
            outcomes.append(Outcome(asset.kind, asset.name, "unchanged"))
            continue
        _put(store, asset)
        outcomes.append(Outcome(asset.kind, asset.name, "created" if have is None else "updated"))
    return outcomes
