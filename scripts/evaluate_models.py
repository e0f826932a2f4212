"""Evaluate the batch models on simulated data and NSL-KDD; print the EVALUATION.md section.

    python scripts/evaluate_models.py [--action-hours 72] [--traffic-hours 48] [--skip-compare]
        [--write EVALUATION.md]

Action predictor: the seed-000 baseline and fwsiem's predictor on the same simulated NSX DFW
lines (scenario ``seed000``: the shape of seed 000's data), random 80/20 split and time split
(the last day held out). Traffic classifier: per-destination 5-minute flow aggregates of the
``default`` scenario, labelled with the simulator's traffic classes; seed 004's kNN raw and
normalised beside fwsiem's classifier. Classifier comparison: ``fwsiem train compare`` on the
full NSL-KDD 20% training file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from doc_sections import replace_section  # noqa: E402

from ml.action import action_predictor, seed_baseline, split_frame, tuples_from_events  # noqa: E402
from ml.metrics import classification_scores, scores_markdown  # noqa: E402
from ml.simulate import Simulation, load_scenario  # noqa: E402
from ml.traffic import (  # noqa: E402
    AGGREGATE_COLUMNS,
    SERVICE_COLUMNS,
    flow_aggregates,
    seed_knn,
    traffic_classifier,
)

NSL_KDD = REPO.parent / "shared/datasets/nsl-kdd/KDDTrain+_20Percent.txt"


def simulated_lines(scenario: str, hours: int, seed: int, sample: int | None) -> pd.DataFrame:
    sim = Simulation(load_scenario(scenario), hours=hours, seed=seed)
    events = pd.concat(list(sim.iter_events()), ignore_index=True)
    frame = tuples_from_events(events)
    frame["line_kind"] = events["nsx.dfw.line_kind"].to_numpy()
    if sample and sample < len(frame):
        frame = frame.sample(sample, random_state=0).sort_values("timestamp")
    return frame


def action_section(scenario: str, hours: int, seed: int, sample: int | None) -> str:
    frame = simulated_lines(scenario, hours, seed, sample)
    # Seed 000's label: the action of match lines, "term" for TERM lines.
    seed_label = np.where(frame["line_kind"] == "term", "term", frame["action"])
    lines = [f"### Action predictor (seed 000) — simulated `{scenario}` scenario, {hours} h, "
             f"seed {seed}: {len(frame):,} NSX DFW lines (match and TERM"
             + (f", a uniform sample of {sample:,}" if sample else "") + "), actions "
             + ", ".join(f"{k} {v:,}" for k, v in frame["action"].value_counts().items()), "",
             "| model | target | split | accuracy | macro F1 | train rows | test rows | fit s |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    details = []
    for target, labels in (("firewall action", frame["action"].to_numpy()),
                           ("seed 000 label (pass/drop/reject, TERM lines: term)", seed_label)):
        data = frame.assign(label=labels)
        for split in ("random", "time"):
            train, test = split_frame(data, split, test_fraction=0.2, random_state=0)
            for name, model in (("seed-000 baseline", seed_baseline(0)),
                                ("fwsiem hist gradient boosting", action_predictor()),
                                ("fwsiem random forest", action_predictor("random_forest",
                                                                          max_iter=100))):
                started = time.perf_counter()
                model.fit(train, train["label"])
                elapsed = time.perf_counter() - started
                scores = classification_scores(test["label"], model.predict(test))
                lines.append(f"| {name} | {target} | {split} | {scores['accuracy']:.4f} | "
                             f"{scores['macro_f1']:.4f} | {len(train):,} | {len(test):,} | "
                             f"{elapsed:.1f} |")
                if split == "time" and target == "firewall action" and "boosting" in name:
                    details.append(scores_markdown(scores, title=f"{name}, {target}, time split"))
                if split == "time" and target == "firewall action" and "baseline" in name:
                    details.append(scores_markdown(scores, title=f"{name}, {target}, time split"))
    lines += ["", "Random split: 80/20 of the lines. Time split: trained on the earlier days, "
              "tested on the last day (20% of the days).", ""]
    lines += sum(([d, ""] for d in details), [])
    return "\n".join(lines)


def traffic_frame(hours: int, seed: int, window: str) -> pd.DataFrame:
    sim = Simulation(load_scenario("default"), hours=hours, seed=seed)
    text = np.asarray(sim.dc.addresses.text, dtype=object)
    parts = []
    for _, fl in sim.iter_chunks():
        parts.append(pd.DataFrame({
            "destination.ip": text[fl["dst"]], "source.ip": text[fl["src"]],
            "destination.port": fl["dport"],
            "@timestamp": pd.to_datetime(fl["t"], unit="ms", utc=True),
            "event.duration": fl["dur"] * 1e6, "network.packets": fl["pkts"],
            "network.bytes": fl["byts"]}))
    flows = pd.concat(parts, ignore_index=True)
    truth = sim.truth()
    labels = {x["dst_ip"]: x["class"] for x in truth["traffic_classes"]}
    flows = flows[flows["destination.ip"].isin(labels)]
    agg = flow_aggregates(flows, window=window)
    agg["class"] = agg["destination.ip"].map(labels)
    # A flood's destination carries its flood label only while the flood lasts.
    keep = ~agg["class"].str.contains("flood")
    for inc in truth["incidents"]:
        if "flood" not in inc["kind"]:
            continue
        start, end = pd.Timestamp(inc["start"]), pd.Timestamp(inc["end"])
        hit = (agg["destination.ip"].isin(inc["entities"].get("dst_ips", []))
               & (agg["window"] >= start.floor(window)) & (agg["window"] < end))
        keep |= hit & agg["class"].str.contains("flood")
    return agg[keep].reset_index(drop=True)


def traffic_section(hours: int, seed: int, window: str) -> str:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    agg = traffic_frame(hours, seed, window)
    counts = agg["class"].value_counts()
    folds = StratifiedKFold(min(5, int(counts.min())), shuffle=True, random_state=0)
    lines = [f"### Traffic classifier (seed 004) — simulated `default` scenario, {hours} h, seed "
             f"{seed}: {len(agg):,} per-destination {window} flow aggregates, classes "
             + ", ".join(f"{k} {v}" for k, v in counts.items()), "",
             f"Every aggregate is predicted once by {folds.n_splits}-fold stratified "
             "cross-validation (the flood classes have only a few windows each).", "",
             "| model | features | macro F1 | accuracy | weighted F1 |", "|---|---|---:|---:|---:|"]
    best = None
    seven, service = AGGREGATE_COLUMNS, AGGREGATE_COLUMNS + SERVICE_COLUMNS
    for name, model, cols in (
            ("seed-004 kNN k=5, raw", seed_knn(False), seven),
            ("seed-004 kNN k=5, normalised", seed_knn(True), seven),
            ("fwsiem kNN k=5, log", traffic_classifier("knn"), seven),
            ("fwsiem random forest, log", traffic_classifier("random_forest"), seven),
            ("fwsiem hist gradient boosting, log + service",
             traffic_classifier("hist_gradient_boosting", service=True), service),
            ("fwsiem random forest, log + service (default)",
             traffic_classifier("random_forest", service=True), service)):
        predicted = cross_val_predict(model, agg[cols], agg["class"], cv=folds)
        scores = classification_scores(agg["class"], predicted)
        label = "seed's seven" if cols is seven else "seven + sources, ports, top port"
        lines.append(f"| {name} | {label} | {scores['macro_f1']:.4f} | {scores['accuracy']:.4f} "
                     f"| {scores['weighted_f1']:.4f} |")
        if "(default)" in name:
            best = scores
    lines += ["", scores_markdown(best, title="fwsiem random forest, log + service features "
                                              "(the `fwsiem train traffic` default)"), ""]
    return "\n".join(lines)


def compare_section(out_dir: Path, reuse: bool = False) -> str:
    cmd = [sys.executable, "-m", "plugin", "train", "compare", "--csv", str(NSL_KDD), "--cv", "5",
           "--test-size", "0.3", "--out", str(out_dir)]
    if not (reuse and (out_dir / "compare.json").is_file()):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, env=env)
    summary = json.loads((out_dir / "compare.json").read_text())
    from ml.compare import Comparison, ModelScores

    result = Comparison([ModelScores(m["name"], m["cv_scores"], m["holdout"], m["fit_seconds"])
                         for m in summary["models"]], summary["n_rows"], summary["n_train"],
                        summary["n_test"], summary["cv_folds"], summary["labels"])
    best = result.best()
    return "\n".join([
        f"### Classifier comparison (seed 002) — NSL-KDD `KDDTrain+_20Percent.txt`, "
        f"{result.n_rows:,} rows, label collapsed to normal/anomaly; {result.n_train:,} train "
        f"/ {result.n_test:,} hold-out", "",
        "Command: `fwsiem train compare --csv ../shared/datasets/nsl-kdd/KDDTrain+_20Percent.txt "
        f"--cv 5 --test-size 0.3 --out {out_dir.relative_to(REPO)}`", "",
        result.table_markdown(), "",
        f"Plot: `{out_dir.relative_to(REPO)}/compare.png`; summary "
        f"`{out_dir.relative_to(REPO)}/compare.json`.", "",
        scores_markdown(best.holdout, title=f"best on hold-out: {best.name}"), ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--action-hours", type=int, default=72)
    parser.add_argument("--default-hours", type=int, default=48)
    parser.add_argument("--default-sample", type=int, default=300000)
    parser.add_argument("--traffic-hours", type=int, default=48)
    parser.add_argument("--window", default="5min")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--reuse-compare", action="store_true",
                        help="Use the compare.json an earlier run of the same command wrote.")
    parser.add_argument("--write", type=Path, help="Replace the section in this Markdown file.")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    parts = ["## Batch models: action predictor, traffic classifier, classifier comparison", "",
             "Produced by `python scripts/evaluate_models.py"
             + (" --skip-compare" if args.skip_compare else "")
             + f" --action-hours {args.action_hours} --default-hours {args.default_hours} "
             f"--default-sample {args.default_sample} --traffic-hours {args.traffic_hours} "
             f"--window {args.window} --seed {args.seed}` on a 2-core machine "
             f"({time.strftime('%Y-%m-%d')}).", ""]
    with threadpool_limits(1):
        parts.append(action_section("seed000", args.action_hours, args.seed, None))
        if args.default_hours:
            parts.append(action_section("default", args.default_hours, args.seed,
                                        args.default_sample))
        parts.append(traffic_section(args.traffic_hours, args.seed, args.window))
    if not args.skip_compare:
        parts.append(compare_section(REPO / "docs/evaluation/compare-nsl-kdd",
                                     reuse=args.reuse_compare))
    text = "\n".join(parts)
    if args.write:
        replace_section(args.write, "batch-models", text, "# fwsiem model evaluation")
    print(text)


if __name__ == "__main__":
    main()
