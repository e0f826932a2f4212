"""Alert definitions: Watcher watches, OpenSearch Alerting monitors and the built-in alerter."""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import re
import smtplib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from importlib import resources
from pathlib import Path
from typing import Any

import requests

from plugin.config import Config, parse_duration
from plugin.errors import ConfigError, EngineRequestError
from plugin.store import Store, doc_id

log = logging.getLogger(__name__)

#: Placeholders a watch or monitor body carries until it is installed (filled from ``[alert]``).
PLACEHOLDER = re.compile(r"\$\{([a-z_]+)\}")
#: Time placeholders of each product; ``evaluate`` replaces them with the evaluation time.
WATCHER_NOW = "{{ctx.trigger.scheduled_time}}"
MONITOR_NOW = "{{period_end}}"
OPS = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
       "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "eq": lambda a, b: a == b}
PAINLESS_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "=="}
DEFAULTS = {"dashboard_url": "http://localhost:5601", "webhook": "", "email_to": "",
            "email_from": "fwsiem@localhost", "smtp_host": "", "smtp_port": 25,
            "webhook_channel": "fwsiem-webhook", "email_channel": "", "interval": "60s"}


# -- definitions --------------------------------------------------------------------------------
def alerting_dir() -> Path:
    """The ``alerting/`` folder: packaged under ``plugin/assets`` or beside the package."""
    packaged = Path(str(resources.files("plugin").joinpath("assets", "alerting")))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "alerting"


def load_definitions(directory: str | Path | None = None) -> list[dict]:
    """Every neutral alert definition (``alerting/rules/*.json``), sorted by id."""
    base = Path(directory) if directory else alerting_dir() / "rules"
    defs = []
    for path in sorted(base.glob("*.json")):
        try:
            definition = json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigError(f"alert definition {path} is not valid JSON: {exc}") from None
        definition["_source_file"] = str(path)
        defs.append(definition)
    if not defs:
        raise ConfigError(f"no alert definitions in {base}", hint="reinstall fwsiem")
    return sorted(defs, key=lambda d: d["id"])


def alert_settings(config: Config) -> dict:
    """``[alert]`` with defaults for keys the configuration does not set."""
    return {**DEFAULTS, **config.section("alert")}


def with_overrides(definition: dict, config: Config) -> dict:
    """The definition with ``[alert.rules.<id>]`` overrides (schedule, lookback, throttle, threshold)."""
    over = (config.section("alert").get("rules") or {}).get(definition["id"]) or {}
    out = copy.deepcopy(definition)
    for key in ("schedule", "lookback", "throttle"):
        if key in over:
            parse_duration(over[key])
            out[key] = over[key]
    if "threshold" in over:
        cond = next(iter(out["condition"].values()))
        op = next(k for k in cond if k in OPS)
        cond[op] = over["threshold"]
    return out


def _condition(definition: dict) -> tuple[str, dict, str, float]:
    """(kind, spec, operator, value) of a definition's condition."""
    (kind, spec), = definition["condition"].items()
    op = next(k for k in spec if k in OPS)
    return kind, spec, op, spec[op]


def search_body(definition: dict, now_expr: str, *, extra_range: dict | None = None) -> dict:
    """The search request of a definition: its query within ``[now - lookback, now]``.

    ``now_expr`` is the product's time placeholder or an absolute time. A bucket condition on
    ``doc_count`` becomes the aggregation's ``min_doc_count``, so every returned bucket is an
    event and the message lists only those.
    """
    search = copy.deepcopy(definition["search"])
    time_range = {"gte": f"{now_expr}||-{definition['lookback']}", "lte": now_expr}
    time_range.update(extra_range or {})
    query = search.pop("query", {"match_all": {}})
    search["query"] = {"bool": {"filter": [query, {"range": {definition["time_field"]: time_range}}]}}
    search["track_total_hits"] = True
    kind, spec, op, value = _condition(definition)
    if kind == "buckets" and spec["path"] == "doc_count" and op in ("gt", "gte"):
        terms = search["aggs"][spec["agg"]]["terms"]
        terms["min_doc_count"] = int(value) + (1 if op == "gt" else 0)
    return search


# -- rendering: Watcher and OpenSearch Alerting -------------------------------------------------
def _mustache_var(definition: dict, name: str) -> str:
    """The product-side mustache expression of one message variable."""
    ev = definition["event"]
    spec = ev.get(name)
    if isinstance(spec, dict):
        return str(spec["value"])
    if ev["each"] == "hit" and spec != "_id":
        spec = f"_source.{spec}"
    return "{{" + spec + "}}"


def _event_template(definition: dict) -> str:
    text = definition["message"]["event"].replace("{{lookback}}", definition["lookback"])
    return re.sub(r"\{\{(\w+)\}\}", lambda m: _mustache_var(definition, m.group(1)), text)


def _link(definition: dict) -> str:
    return "${dashboard_url}/app/dashboards#/view/" + definition["dashboard"]


def _events_path(definition: dict, root: str) -> str:
    ev = definition["event"]
    if ev["each"] == "hit":
        return f"{root}.hits.hits"
    return f"{root}.aggregations.{ev['agg']}.buckets"


def _message(definition: dict, root: str) -> str:
    section = _events_path(definition, root)
    return (f"{definition['message']['subject']}\n"
            f"{{{{#{section}}}}}- {_event_template(definition)}\n{{{{/{section}}}}}"
            f"Dashboard: {_link(definition)}")


def render_watch(definition: dict) -> dict:
    """The Elasticsearch Watcher watch (``PUT _watcher/watch/<id>``) of a definition."""
    kind, spec, op, value = _condition(definition)
    if kind == "hits":
        condition = {"compare": {"ctx.payload.hits.total": {op: value}}}
    else:
        path = f"ctx.payload.aggregations.{spec['agg']}.buckets"
        condition = {"array_compare": {path: {"path": spec["path"], op: {"value": value}}}}
    text = _message(definition, "ctx.payload")
    events = _events_path(definition, "ctx.payload")
    webhook_body = ('{"rule": "' + definition["id"] + '", "severity": "' + definition["severity"]
                    + '", "subject": "' + definition["message"]["subject"] + '", "link": "'
                    + _link(definition) + '", "events": {{#toJson}}' + events + '{{/toJson}}}')
    return {
        "metadata": {"fwsiem_rule": definition["id"], "name": definition["name"],
                     "description": definition["description"]},
        "trigger": {"schedule": {"interval": definition["schedule"]}},
        "input": {"search": {"request": {
            "indices": ["${index}"],
            "rest_total_hits_as_int": True,
            "body": search_body(definition, WATCHER_NOW),
        }}},
        "condition": condition,
        "throttle_period": definition["throttle"],
        "actions": {
            "log": {"logging": {"level": "warn", "text": text}},
            "webhook": {"webhook": {
                "method": "post", "url": "${webhook_url}",
                "headers": {"Content-Type": "application/json"},
                "body": webhook_body,
            }},
            "email": {"email": {
                "to": ["${email_to}"],
                "subject": definition["message"]["subject"],
                "body": {"text": text},
            }},
        },
    }


def _painless_condition(definition: dict) -> str:
    kind, spec, op, value = _condition(definition)
    sym = PAINLESS_OPS[op]
    if kind == "hits":
        return f"ctx.results[0].hits.total.value {sym} {value}"
    return (f"for (def b : ctx.results[0].aggregations.{spec['agg']}.buckets) "
            f"{{ if (b.{spec['path']} {sym} {value}) {{ return true; }} }} return false;")


def _interval(text: str) -> dict:
    seconds = parse_duration(text)
    for unit, size in (("DAYS", 86400), ("HOURS", 3600), ("MINUTES", 60)):
        if seconds % size == 0:
            return {"interval": int(seconds // size), "unit": unit}
    raise ConfigError(f"schedule {text!r} is not a whole number of minutes",
                      hint="OpenSearch Alerting schedules in minutes, hours or days")


def render_monitor(definition: dict) -> dict:
    """The OpenSearch Alerting query-level monitor (``POST _plugins/_alerting/monitors``)."""
    text = _message(definition, "ctx.results.0")
    throttle = _interval(definition["throttle"])
    throttle = {"value": throttle["interval"], "unit": throttle["unit"]}
    body = search_body(definition, MONITOR_NOW, extra_range={"format": "epoch_millis"})
    actions = [
        {"name": "webhook", "destination_id": "${webhook_channel}",
         "subject_template": {"source": definition["message"]["subject"], "lang": "mustache"},
         "message_template": {"source": text, "lang": "mustache"},
         "throttle_enabled": True, "throttle": throttle},
        {"name": "email", "destination_id": "${email_channel}",
         "subject_template": {"source": definition["message"]["subject"], "lang": "mustache"},
         "message_template": {"source": text, "lang": "mustache"},
         "throttle_enabled": True, "throttle": throttle},
    ]
    return {
        "type": "monitor",
        "monitor_type": "query_level_monitor",
        "name": definition["id"],
        "enabled": True,
        "schedule": {"period": _interval(definition["schedule"])},
        "inputs": [{"search": {"indices": ["${index}"], "query": body}}],
        "triggers": [{"query_level_trigger": {
            "name": definition["name"],
            "severity": "1" if definition["severity"] in ("high", "critical") else "3",
            "condition": {"script": {"source": _painless_condition(definition), "lang": "painless"}},
            "actions": actions,
        }}],
    }


def rendered_files(definitions: Iterable[dict] | None = None) -> dict[Path, str]:
    """``alerting/watcher/<name>.json`` and ``alerting/opensearch/<name>.json`` as they should be."""
    base = alerting_dir()
    out = {}
    for d in definitions if definitions is not None else load_definitions():
        name = Path(d["_source_file"]).stem
        out[base / "watcher" / f"{name}.json"] = json.dumps(render_watch(d), indent=2) + "\n"
        out[base / "opensearch" / f"{name}.json"] = json.dumps(render_monitor(d), indent=2) + "\n"
    return out


def fill(body: Any, values: dict[str, str]) -> Any:
    """Replace ``${name}`` placeholders in every string of a rendered body."""
    if isinstance(body, dict):
        return {k: fill(v, values) for k, v in body.items()}
    if isinstance(body, list):
        return [fill(v, values) for v in body]
    if isinstance(body, str):
        return PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), body)
    return body


def placeholder_values(definition: dict, config: Config) -> dict[str, str]:
    s = alert_settings(config)
    return {"index": config.index(definition["index"]), "webhook_url": s["webhook"],
            "email_to": s["email_to"], "dashboard_url": str(s["dashboard_url"]).rstrip("/"),
            "webhook_channel": s["webhook_channel"] if s["webhook"] else "",
            "email_channel": s["email_channel"]}


# -- evaluation on the real engine --------------------------------------------------------------
@dataclass
class AlertEvent:
    """One thing an alert is about: an anomaly, a recommendation, a pipeline, a VM."""

    rule: str
    key: str
    entity_type: str
    entity: str
    score: float
    severity: str
    detail: str
    message: str
    link: str
    source: dict = field(default_factory=dict)

    def payload(self, fired_at: str) -> dict:
        return {"rule": self.rule, "key": self.key, "entity": {"type": self.entity_type,
                                                                "value": self.entity},
                "score": self.score, "severity": self.severity, "detail": self.detail,
                "message": self.message, "link": self.link, "fired_at": fired_at,
                "event": self.source}


@dataclass
class Evaluation:
    rule: str
    fired: bool
    value: float
    events: list[AlertEvent]
    response: dict
    request: dict


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(obj, list):
            try:
                obj = obj[int(part)]
            except (ValueError, IndexError):
                return None
        elif isinstance(obj, dict):
            obj = obj.get(part)
        else:
            return None
        if obj is None:
            return None
    return obj


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def request_for(definition: dict, flavor: str, now: dt.datetime) -> dict:
    """The search body the installed watch (Elasticsearch) or monitor (OpenSearch) sends at ``now``."""
    if flavor == "opensearch":
        body = render_monitor(definition)["inputs"][0]["search"]["query"]
        stamp = str(int(now.timestamp() * 1000))
        return json.loads(json.dumps(body).replace(MONITOR_NOW, stamp))
    body = render_watch(definition)["input"]["search"]["request"]["body"]
    return json.loads(json.dumps(body).replace(WATCHER_NOW, _iso(now)))


def condition_value(definition: dict, response: dict) -> tuple[bool, float]:
    """Whether the condition holds on a search response, and the value it compared."""
    kind, spec, op, value = _condition(definition)
    if kind == "hits":
        total = _get(response, "hits.total")
        total = total.get("value", 0) if isinstance(total, dict) else (total or 0)
        return OPS[op](total, value), float(total)
    buckets = _get(response, f"aggregations.{spec['agg']}.buckets") or []
    seen = [float(b.get(spec["path"], 0) or 0) for b in buckets]
    best = max(seen, default=0.0)
    return any(OPS[op](v, value) for v in seen), best


def events_of(definition: dict, response: dict, link: str = "") -> list[AlertEvent]:
    """The events a firing produces: each hit, or each bucket that meets the condition."""
    ev = definition["event"]
    kind, spec, op, value = _condition(definition)
    if ev["each"] == "hit":
        items = [dict(h.get("_source", {}), _id=h["_id"]) for h in _get(response, "hits.hits") or []]
    else:
        items = [b for b in _get(response, f"aggregations.{ev['agg']}.buckets") or []
                 if OPS[op](float(b.get(spec["path"], 0) or 0), value)]

    def val(name: str, item: dict) -> Any:
        spec_ = ev.get(name)
        if isinstance(spec_, dict):
            return spec_["value"]
        return _get(item, spec_) if spec_ else None

    out = []
    for item in items:
        fields = {n: val(n, item) for n in ("key", "entity_type", "entity", "score", "severity",
                                             "detail")}
        text = definition["message"]["event"].replace("{{lookback}}", definition["lookback"])
        text = re.sub(r"\{\{(\w+)\}\}", lambda m, f=fields: "" if f.get(m.group(1)) is None
                      else str(f[m.group(1)]), text)
        score = fields["score"]
        out.append(AlertEvent(
            rule=definition["id"], key=str(fields["key"]), entity_type=str(fields["entity_type"]),
            entity=str(fields["entity"]), score=float(score) if score is not None else 0.0,
            severity=str(fields["severity"] or definition["severity"]),
            detail="" if fields["detail"] is None else str(fields["detail"]),
            message=f"{text} {link}".strip(), link=link, source=item))
    return out


def evaluate(definition: dict, store: Store, now: dt.datetime, config: Config | None = None) -> Evaluation:
    """Run a definition's query on the engine as its watch or monitor would at ``now``, and
    evaluate its condition exactly as the definition states it."""
    from plugin.config import load_config

    config = config or load_config()
    values = placeholder_values(definition, config)
    body = request_for(definition, store.flavor, now)
    response = store.search(values["index"], body)
    fired, value = condition_value(definition, response)
    link = fill(_link(definition), values)
    events = events_of(definition, response, link) if fired else []
    return Evaluation(definition["id"], fired, value, events, response, body)


# -- installation into Watcher / OpenSearch Alerting -------------------------------------------
@dataclass
class Detection:
    product: str | None  # "watcher" | "opensearch-alerting" | None
    detail: str


def detect_alerting(store: Store) -> Detection:
    """Which alerting the cluster offers, from ``GET _nodes/plugins`` (and ``GET _xpack``)."""
    nodes = store.request("GET", "/_nodes/plugins", ignore=(400, 403, 404)) or {}
    names: set[str] = set()
    for node in nodes.get("nodes", {}).values():
        for item in node.get("plugins", []) + node.get("modules", []):
            names.add(str(item.get("name", "")).lower())
            names.add(str(item.get("classname", "")).lower())
    if store.flavor == "opensearch":
        if any("alerting" in n for n in names):
            return Detection("opensearch-alerting", "the OpenSearch Alerting plugin is installed")
        return Detection(None, "this OpenSearch cluster has no Alerting plugin "
                               "(opensearch-alerting); run `fwsiem alert` to get alerts")
    if any("watcher" in n for n in names):
        xpack = store.request("GET", "/_xpack", ignore=(400, 404, 500)) or {}
        watcher = (xpack.get("features") or {}).get("watcher") or {}
        if watcher and not (watcher.get("available") and watcher.get("enabled")):
            return Detection(None, "Elasticsearch Watcher is present but not available "
                                   f"(license {(xpack.get('license') or {}).get('type', '?')}, "
                                   f"enabled={watcher.get('enabled')}); run `fwsiem alert` instead")
        return Detection("watcher", "Elasticsearch Watcher is available")
    return Detection(None, "this Elasticsearch cluster has no Watcher (x-pack-watcher); "
                           "run `fwsiem alert` to get alerts")


def _drop_unset_actions(product: str, body: dict, values: dict[str, str]) -> dict:
    """Leave out the webhook and email actions whose destination ``[alert]`` does not set."""
    wanted = {"webhook": values["webhook_channel" if product == "monitor" else "webhook_url"],
              "email": values["email_channel" if product == "monitor" else "email_to"]}
    if product == "watcher":
        body["actions"] = {k: v for k, v in body["actions"].items() if wanted.get(k, True)}
    else:
        trig = body["triggers"][0]["query_level_trigger"]
        trig["actions"] = [a for a in trig["actions"] if wanted.get(a["name"], True)]
    return body


def install(store: Store, config: Config, definitions: list[dict] | None = None) -> tuple[Detection, list[str]]:
    """Install every definition as a watch or monitor if the cluster can run them.

    Returns what was found and one line per definition (created, updated or why not).
    """
    found = detect_alerting(store)
    definitions = definitions or [with_overrides(d, config) for d in load_definitions()]
    lines: list[str] = []
    if found.product is None:
        return found, [f"{d['id']}: not installed ({found.detail})" for d in definitions]
    settings = alert_settings(config)
    if found.product == "opensearch-alerting" and settings["webhook"]:
        channel = {"config_id": settings["webhook_channel"], "config": {
            "name": "fwsiem webhook", "description": "fwsiem alerts",
            "config_type": "webhook", "is_enabled": True, "webhook": {"url": settings["webhook"]}}}
        path = f"/_plugins/_notifications/configs/{settings['webhook_channel']}"
        if store.request("GET", path, ignore=(404,)) is None:
            store.request("POST", "/_plugins/_notifications/configs", body=channel)
        else:
            store.request("PUT", path, body={"config": channel["config"]})
    for d in definitions:
        values = placeholder_values(d, config)
        if found.product == "watcher":
            body = _drop_unset_actions("watcher", fill(render_watch(d), values), values)
            store.request("PUT", f"/_watcher/watch/{d['id']}", body=body)
            lines.append(f"{d['id']}: watch installed (actions: {', '.join(body['actions'])})")
            continue
        body = _drop_unset_actions("monitor", fill(render_monitor(d), values), values)
        query = {"query": {"term": {"monitor.name.keyword": d["id"]}}}
        hits = (store.request("POST", "/_plugins/_alerting/monitors/_search", body=query,
                              ignore=(404,)) or {}).get("hits", {}).get("hits", [])
        if hits:
            store.request("PUT", f"/_plugins/_alerting/monitors/{hits[0]['_id']}", body=body)
            verb = "updated"
        else:
            store.request("POST", "/_plugins/_alerting/monitors", body=body)
            verb = "created"
        acts = [a["name"] for a in body["triggers"][0]["query_level_trigger"]["actions"]]
        lines.append(f"{d['id']}: monitor {verb} (actions: {', '.join(acts) or 'alert history only'})")
    return found, lines


# -- the built-in alerter (`fwsiem alert`) ------------------------------------------------------
def _parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class Alerter:
    """Runs definitions on their schedules, delivers each event once, honours throttling.

    State per definition (last run, last fired, when each event key last fired) lives in the
    ``fwsiem-state`` index as ``kind: alert`` documents, so a restart neither repeats nor
    loses alerts.
    """

    def __init__(self, store: Store, config: Config, definitions: list[dict] | None = None, *,
                 webhook: str | None = None, echo: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.config = config
        self.settings = alert_settings(config)
        self.definitions = definitions or [with_overrides(d, config) for d in load_definitions()]
        self.webhook = webhook if webhook is not None else self.settings["webhook"]
        self.state_index = config.index("state")
        self.echo = echo or (lambda line: log.warning("%s", line))
        self.session = requests.Session()

    # state
    def _state_id(self, rule: str) -> str:
        return doc_id("alert", rule)

    def load_state(self, rule: str) -> dict:
        doc = self.store.get_doc(self.state_index, self._state_id(rule)) if \
            self.store.exists(self.state_index) else None
        return (doc or {}).get("payload") or {"rule": rule, "fired": {}}

    def save_state(self, rule: str, state: dict, now: dt.datetime) -> None:
        doc = {"@timestamp": _iso(now), "kind": "alert", "worker": rule, "payload": state}
        self.store.index_doc(self.state_index, doc, id=self._state_id(rule), refresh=True)

    # scheduling
    def due(self, definition: dict, state: dict, now: dt.datetime) -> bool:
        last = _parse_time(state.get("last_run"))
        return last is None or (now - last).total_seconds() >= parse_duration(definition["schedule"])

    def next_due(self, now: dt.datetime) -> float:
        waits = []
        for d in self.definitions:
            last = _parse_time(self.load_state(d["id"]).get("last_run"))
            waits.append(0.0 if last is None else
                         parse_duration(d["schedule"]) - (now - last).total_seconds())
        return max(0.0, min(waits, default=60.0))

    # delivery
    def deliver(self, definition: dict, event: AlertEvent, now: dt.datetime) -> bool:
        """Log, post to the webhook and mail one event; False when the webhook refused it."""
        self.echo(f"[{event.severity}] {definition['id']}: {event.message}")
        ok = True
        if self.webhook:
            try:
                resp = self.session.post(self.webhook, json=event.payload(_iso(now)), timeout=10)
                ok = resp.status_code < 300
                if not ok:
                    log.error("webhook %s answered HTTP %s for %s", self.webhook, resp.status_code,
                              event.key)
            except requests.RequestException as exc:
                log.error("webhook %s unreachable for %s: %s", self.webhook, event.key, exc)
                ok = False
        if self.settings["email_to"] and self.settings["smtp_host"]:
            self._mail(definition, event)
        return ok

    def _mail(self, definition: dict, event: AlertEvent) -> None:
        msg = EmailMessage()
        msg["Subject"] = f"{definition['message']['subject']}: {event.entity}"
        msg["From"] = self.settings["email_from"]
        msg["To"] = self.settings["email_to"]
        msg.set_content(event.message)
        try:
            with smtplib.SMTP(self.settings["smtp_host"], int(self.settings["smtp_port"]),
                              timeout=10) as smtp:
                smtp.send_message(msg)
        except OSError as exc:
            log.error("mail to %s via %s failed: %s", self.settings["email_to"],
                      self.settings["smtp_host"], exc)

    def run_definition(self, definition: dict, now: dt.datetime) -> list[AlertEvent]:
        """Evaluate one definition and deliver its events not fired within the throttle."""
        state = self.load_state(definition["id"])
        result = evaluate(definition, self.store, now, self.config)
        throttle = parse_duration(definition["throttle"])
        fired_keys: dict[str, str] = state.get("fired", {})
        delivered = []
        for event in result.events:
            last = _parse_time(fired_keys.get(event.key))
            if last is not None and (now - last).total_seconds() < throttle:
                continue
            if self.deliver(definition, event, now):
                fired_keys[event.key] = _iso(now)
                delivered.append(event)
        horizon = throttle + parse_duration(definition["lookback"])
        state["fired"] = {k: v for k, v in fired_keys.items()
                          if (now - _parse_time(v)).total_seconds() < horizon}
        state["last_run"] = _iso(now)
        state["last_value"] = result.value
        if delivered:
            state["last_fired"] = _iso(now)
        self.save_state(definition["id"], state, now)
        return delivered

    def run_once(self, now: dt.datetime | None = None, *, only_due: bool = False) -> dict[str, list[AlertEvent]]:
        now = now or dt.datetime.now(dt.timezone.utc)
        out = {}
        for d in self.definitions:
            if only_due and not self.due(d, self.load_state(d["id"]), now):
                continue
            try:
                out[d["id"]] = self.run_definition(d, now)
            except EngineRequestError as exc:
                log.error("alert %s could not run: %s", d["id"], exc)
                out[d["id"]] = []
        return out

    def run_forever(self, stop: Callable[[], bool] = lambda: False) -> None:
        while not stop():
            self.run_once(only_due=True)
            cap = parse_duration(self.settings["interval"])
            time.sleep(min(max(self.next_due(dt.datetime.now(dt.timezone.utc)), 1.0), cap))


if __name__ == "__main__":  # python -m plugin.alerting: rewrite the rendered watches and monitors
    for path, text in rendered_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
