"""``fwsiem feedback``: mark an anomaly as a false positive so its pattern stops alerting."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import click

from plugin.cli import AppContext, pass_app
from plugin.config import parse_duration
from plugin.errors import ConfigError, InputError


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@click.command("feedback")
@click.argument("anomaly_id")
@click.option("--false-positive", is_flag=True,
              help="The anomaly is not a threat: stop alerting on this entity and pattern.")
@click.option("--clear", is_flag=True, help="Remove an earlier false-positive mark.")
@click.option("--ttl", default=None, metavar="DURATION",
              help="How long the suppression lasts, e.g. 7d [config run.feedback_ttl].")
@click.option("--note", default="", help="Why, for the next analyst.")
@pass_app
def command(app: AppContext, anomaly_id, false_positive, clear, ttl, note):
    """Mark ANOMALY_ID (its _id in the anomalies index) as a false positive, or clear the mark.

    While the mark lasts, the detector does not report the same entity when the same
    feature leads the finding. The mark is kept on the anomaly document (feedback.*), so
    it is visible, and can be set, in Kibana too.
    """
    if false_positive == clear:
        raise ConfigError("say either --false-positive or --clear")
    index = app.config.index("anomalies")
    store = app.store
    doc = store.get_doc(index, anomaly_id) if store.exists(index) else None
    if doc is None:
        raise InputError(f"no anomaly {anomaly_id} in {index} at {store.safe_url}",
                         hint="copy the _id from Kibana or the anomalies index")
    now = datetime.now(timezone.utc)
    if clear:
        feedback = {"false_positive": False, "status": "open", "at": _iso(now), "until": None}
    else:
        seconds = parse_duration(ttl or app.config.section("run").get("feedback_ttl", "7d"))
        pattern = [c["feature"] for c in doc.get("contributions", [])[:1]]
        feedback = {"false_positive": True, "status": "false_positive", "at": _iso(now),
                    "ttl_seconds": seconds, "until": _iso(now + timedelta(seconds=seconds)),
                    "pattern": pattern, "note": note}
    store.update_doc(index, anomaly_id, {"feedback": feedback}, refresh=True)
    entity = doc.get("entity", {})
    if clear:
        click.echo(f"cleared the false-positive mark on {anomaly_id}")
    else:
        click.echo(f"{anomaly_id}: false positive; {entity.get('type')} {entity.get('value')} "
                   f"is not reported for {', '.join(feedback['pattern']) or 'this pattern'} "
                   f"until {feedback['until']}")
