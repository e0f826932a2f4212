"""``fwsiem train``: train the batch models from the cluster (or a CSV) and register them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np
import pandas as pd

from plugin.cli import pass_app
from plugin.errors import InputError, InsufficientData


def _train_settings(app) -> dict:
    return app.config.section("train")


def _events_index(app, index: str | None) -> str:
    return index or app.config.indices.get("events_pattern", "logs-fwsiem.*")


def _register_and_promote(app, name, model, metrics, holdout_metric, data, report,
                          promote: bool, force: bool):
    from plugin.registry import PromotionRefused, Registry

    registry = Registry.from_config(app.store, app.config)
    record = registry.register(name, model, metrics=metrics, holdout_metric=holdout_metric,
                               data=data, report=report)
    click.echo(f"registered {name} version {record.version} in {registry.index} "
               f"(sha256 {record.sha256[:12]}…)")
    if not promote:
        click.echo(f"version {record.version} stays a candidate "
                   f"(`fwsiem models promote {name} {record.version}`)")
        return record
    try:
        registry.promote(name, record.version, force=force)
        click.echo(f"version {record.version} is now the active {name} model")
    except PromotionRefused as exc:
        click.echo(f"not promoted: {exc}")
    return record


def _data_range(frame: pd.DataFrame, index: str, since, until) -> dict:
    out = {"index": index, "n_rows": int(len(frame)),
           "n_events": int(frame.attrs.get("n_events", len(frame)))}
    ts = frame.get("timestamp")
    if ts is not None and len(ts):
        out["since"] = since or pd.Timestamp(ts.min()).isoformat()
        out["until"] = until or (pd.Timestamp(ts.max()) + pd.Timedelta(days=1)).isoformat()
    else:
        out.update({k: v for k, v in (("since", since), ("until", until)) if v})
    return out


@click.group("train")
def command():
    """Train a batch model (action predictor, traffic classifier) or compare classifiers.

    Training data is read from the cluster with aggregations; the trained model is stored in
    the model registry and becomes active if it is not worse than the active one.
    """


def _range_options(f):
    f = click.option("--index", help="Events index or pattern [config indices.events_pattern].")(f)
    f = click.option("--until", help="End of the training range (exclusive), e.g. now-1d.")(f)
    f = click.option("--since", help="Start of the training range, e.g. now-30d or 2024-03-01.")(f)
    return f


@command.command("action")
@_range_options
@click.option("--sample", type=int, help="Train on a uniform sample of this many distinct tuples.")
@click.option("--learner", type=click.Choice(["hist_gradient_boosting", "random_forest"]),
              default="hist_gradient_boosting", show_default=True)
@click.option("--split", type=click.Choice(["time", "random"]), default="time", show_default=True,
              help="Hold-out: the latest days (time) or a random 20%.")
@click.option("--min-events", type=int, help="Refuse to train on fewer events [train.min_events].")
@click.option("--promote/--no-promote", default=True, show_default=True,
              help="Make the new version active if its hold-out accuracy is not worse.")
@click.option("--force", is_flag=True, help="Promote even if the hold-out accuracy is worse.")
@pass_app
def action(app, index, since, until, sample, learner, split, min_events, promote, force):
    """Train the firewall action predictor on (protocol, addresses, ports, direction) tuples."""
    from ml.action import action_predictor, fit_weighted, seed_baseline, split_frame
    from ml.metrics import classification_scores
    from plugin.training_data import action_tuples

    settings = _train_settings(app)
    index = _events_index(app, index)
    min_events = min_events or int(settings.get("min_events", 1000))
    frame = action_tuples(app.store, index, since=since, until=until, sample=sample,
                          min_events=min_events, progress=True)
    if split == "time" and frame["timestamp"].nunique() < 2:
        click.echo("the data spans one day: holding out a random 20% instead of later days",
                   err=True)
        split = "random"
    train, test = split_frame(frame, split, test_fraction=0.2, random_state=0)
    if train["action"].nunique() < 2 or len(test) == 0:
        raise InsufficientData(f"{index} at {app.store.safe_url}: the {split} split leaves "
                               f"{len(train)} training and {len(test)} test tuples with "
                               f"{train['action'].nunique()} action(s); need two actions and a "
                               "non-empty hold-out", hint="widen --since/--until")
    click.echo(f"{len(frame)} distinct tuples from {frame.attrs['n_events']} events; "
               f"{split} split: {len(train)} train / {len(test)} test tuples", err=True)
    model = fit_weighted(action_predictor(learner), train, train["action"], train["weight"])
    scores = classification_scores(test["action"], model.predict(test),
                                   sample_weight=test["weight"])
    baseline = fit_weighted(seed_baseline(0), train, train["action"], train["weight"])
    base_scores = classification_scores(test["action"], baseline.predict(test),
                                        sample_weight=test["weight"])
    click.echo(f"hold-out ({split} split, weighted by events): accuracy {scores['accuracy']:.4f}, "
               f"macro F1 {scores['macro_f1']:.4f}; seed-000 baseline accuracy "
               f"{base_scores['accuracy']:.4f}")
    final = fit_weighted(action_predictor(learner), frame, frame["action"], frame["weight"])
    metrics = {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
               "baseline_accuracy": base_scores["accuracy"]}
    _register_and_promote(app, "action", final, metrics, "accuracy",
                          {**_data_range(frame, index, since, until), "split": split},
                          {"holdout": scores, "baseline": base_scores}, promote, force)


def _read_labels(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"labels file {p} does not exist")
    if p.suffix == ".json":
        data = json.loads(p.read_text())
        labels = data.get("traffic_classes", data) if isinstance(data, dict) else data
        if isinstance(labels, dict):
            return {str(k): (v["class"] if isinstance(v, dict) else str(v))
                    for k, v in labels.items()}
        return {str(r.get("dst_ip") or r.get("destination.ip")): str(r["class"]) for r in labels}
    table = pd.read_csv(p)
    ip_col = next((c for c in ("destination.ip", "dst", "dip", "ip") if c in table), None)
    label_col = next((c for c in ("class", "label") if c in table), None)
    if ip_col is None or label_col is None:
        raise InputError(f"labels file {p} needs a destination column (destination.ip, dst) and "
                         f"a class column (class, label); it has {list(table.columns)}")
    return dict(zip(table[ip_col].astype(str), table[label_col].astype(str), strict=True))


@command.command("traffic")
@_range_options
@click.option("--labels", "labels_path", required=True, type=click.Path(dir_okay=False),
              help="Traffic class per destination: CSV (destination.ip,class) or JSON.")
@click.option("--window", help="Aggregate per destination and window (e.g. 1h) instead of "
                               "over the whole range.")
@click.option("--learner", type=click.Choice(["random_forest", "hist_gradient_boosting", "knn"]),
              default="random_forest", show_default=True)
@click.option("--service/--no-service", default=True, show_default=True,
              help="Also use distinct sources, distinct ports and the top port per destination "
                   "(off: seed 004's seven aggregates only).")
@click.option("--min-events", type=int, default=100, show_default=True)
@click.option("--promote/--no-promote", default=True, show_default=True)
@click.option("--force", is_flag=True, help="Promote even if the hold-out macro F1 is worse.")
@pass_app
def traffic(app, index, since, until, labels_path, window, learner, service, min_events, promote,
            force):
    """Train the traffic classifier on per-destination flow aggregates and known classes."""
    from sklearn.model_selection import train_test_split

    from ml.metrics import classification_scores
    from ml.traffic import AGGREGATE_COLUMNS, SERVICE_COLUMNS, seed_knn, traffic_classifier
    from plugin.training_data import destination_aggregates

    index = _events_index(app, index)
    labels = _read_labels(labels_path)
    agg = destination_aggregates(app.store, index, since=since, until=until, window=window,
                                 min_events=min_events, progress=True)
    agg["class"] = agg["destination.ip"].astype(str).map(labels)
    known = agg.dropna(subset=["class"])
    counts = known["class"].value_counts()
    if len(known) < 20 or counts.size < 2:
        raise InsufficientData(
            f"{index} at {app.store.safe_url}: {len(known)} of {len(agg)} destination "
            f"aggregates have a class in {labels_path} ({counts.size} classes); at least 20 "
            "labeled aggregates of two classes are needed",
            hint="use --window to get more aggregates, or label more destinations")
    known = known[known["class"].isin(counts[counts >= 2].index)]
    train, test = train_test_split(known, test_size=0.25, stratify=known["class"],
                                   random_state=0)
    columns = AGGREGATE_COLUMNS + (SERVICE_COLUMNS if service else [])
    model = traffic_classifier(learner, service=service).fit(train[columns], train["class"])
    scores = classification_scores(test["class"], model.predict(test[columns]))
    seed = seed_knn(True).fit(train[AGGREGATE_COLUMNS], train["class"])
    seed_scores = classification_scores(test["class"], seed.predict(test[AGGREGATE_COLUMNS]))
    click.echo(f"hold-out: macro F1 {scores['macro_f1']:.4f}, accuracy {scores['accuracy']:.4f};"
               f" seed-004 kNN (normalised) macro F1 {seed_scores['macro_f1']:.4f}")
    final = traffic_classifier(learner, service=service).fit(known[columns], known["class"])
    data = {"index": index, "n_rows": int(len(known)), "n_events": int(agg.attrs["n_events"]),
            **{k: v for k, v in (("since", since), ("until", until)) if v}}
    _register_and_promote(app, "traffic", final,
                          {"macro_f1": scores["macro_f1"], "accuracy": scores["accuracy"],
                           "baseline_macro_f1": seed_scores["macro_f1"]}, "macro_f1", data,
                          {"holdout": scores, "baseline": seed_scores}, promote, force)


@command.command("compare")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False),
              help="A labeled table (CSV with a header; NSL-KDD files are recognised).")
@click.option("--label", help="Label column of the CSV.")
@click.option("--index", help="Read the table from this index or pattern instead of a CSV.")
@click.option("--field", help="Label field of the index (e.g. event.action).")
@click.option("--features", help="Comma-separated feature fields to read from the index.")
@click.option("--since", help="Start of the range read from the index.")
@click.option("--until", help="End of the range read from the index.")
@click.option("--collapse", "normal_value",
              help="Two classes: this label value, and 'anomaly' for every other "
                   "(NSL-KDD: 'normal', the default for those files).")
@click.option("--sample", type=int, help="Use a uniform sample of this many rows.")
@click.option("--cv", "folds", type=int, default=5, show_default=True)
@click.option("--test-size", type=float, default=0.3, show_default=True)
@click.option("--models", "model_names", help="Comma-separated subset of: random_forest, svc, "
              "hist_gradient_boosting, knn, logistic_regression, gaussian_nb, decision_tree.")
@click.option("--out", "out_dir", default="compare-out", show_default=True,
              type=click.Path(file_okay=False), help="Where the PNG and JSON are written.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def compare(ctx, csv_path, label, index, field, features, since, until, normal_value, sample,
            folds, test_size, model_names, out_dir, seed):
    """Compare seven classifiers on one labeled table: CV scores, hold-out, confusion, plot."""
    from ml.compare import compare_classifiers, default_models, load_nsl_kdd, write_report
    from ml.metrics import scores_markdown

    if bool(csv_path) == bool(index):
        raise click.UsageError("give either --csv FILE --label COLUMN or --index PATTERN "
                               "--field FIELD --features F1,F2")
    if csv_path:
        table, label = _read_table(csv_path, label, load_nsl_kdd)
        if normal_value is None and label == "label" and _looks_nsl_kdd(csv_path):
            normal_value = "normal"
    else:
        from plugin.training_data import field_table

        if not field:
            raise click.UsageError("--index needs --field (the label field)")
        app = ctx.obj
        table = field_table(app.store, index, [f.strip() for f in (features or "").split(",")
                                               if f.strip()], field, since=since, until=until,
                            sample=sample, progress=True)
        label = field
    if sample and csv_path and sample < len(table):
        table = table.sample(sample, random_state=seed)
    y = table.pop(label).astype(str)
    if normal_value is not None:
        y = pd.Series(np.where(y == normal_value, normal_value, "anomaly"), index=y.index)
    counts = y.value_counts()
    if len(y) < folds * 4 or counts.size < 2 or counts.min() < folds:
        raise InsufficientData(f"the table has {len(y)} rows and classes {counts.to_dict()}; "
                               f"{folds}-fold comparison needs two classes with at least {folds} "
                               "rows each", hint="lower --cv or give more rows")
    models = default_models(seed)
    if model_names:
        wanted = [m.strip() for m in model_names.split(",") if m.strip()]
        unknown = sorted(set(wanted) - set(models))
        if unknown:
            raise click.BadParameter(f"unknown model(s) {unknown}; known: {sorted(models)}",
                                     param_hint="--models")
        models = {m: models[m] for m in wanted}
    with click.progressbar(length=len(models), label="comparing", file=sys.stderr) as bar:
        def step(name):
            bar.label = f"comparing ({name})"
            bar.update(1)

        result = compare_classifiers(table, y.to_numpy(), models=models, cv=folds,
                                     test_size=test_size, random_state=seed, progress=step)
    paths = write_report(result, out_dir)
    click.echo(f"{result.n_rows} rows ({result.n_train} train / {result.n_test} hold-out), "
               f"classes {counts.to_dict()}")
    click.echo(result.table_markdown())
    best = result.best()
    click.echo("")
    click.echo(scores_markdown(best.holdout, title=f"best on hold-out: {best.name}"))
    click.echo(f"\nwrote {paths['json']} and {paths['png']}")


def _looks_nsl_kdd(path: str) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline().strip().split(",")
    return len(first) == 43 and first[-1].isdigit() and first[1] in {"tcp", "udp", "icmp"}


def _read_table(path: str, label: str | None, load_nsl_kdd) -> tuple[pd.DataFrame, str]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"CSV file {p} does not exist")
    if _looks_nsl_kdd(path):
        return load_nsl_kdd(p, binary=False), label or "label"
    if not label:
        raise click.UsageError("--csv needs --label COLUMN")
    try:
        table = pd.read_csv(p)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"CSV file {p} cannot be read: {exc}") from None
    if label not in table:
        raise InputError(f"CSV file {p} has no column {label!r}; columns: {list(table.columns)}")
    return table, label
