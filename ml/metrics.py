"""Classification scores shared by the batch models: accuracy, macro F1, per-class report, confusion."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score


def classification_scores(
    y_true: Sequence, y_pred: Sequence, *, labels: Sequence | None = None,
    sample_weight: Sequence | None = None,
) -> dict:
    """Accuracy, macro F1, the per-class report and the confusion matrix as plain JSON types.

    Parameters
    ----------
    y_true, y_pred : sequence
        True and predicted labels.
    labels : sequence, optional
        Label order of the confusion matrix and report; default: the sorted union of both.
    sample_weight : sequence, optional
        Weight of each sample (for example the number of events an aggregated row stands for).

    Returns
    -------
    dict
        ``accuracy``, ``macro_f1``, ``weighted_f1``, ``labels``, ``confusion_matrix``
        (rows: true label, columns: predicted), ``report`` (per class: precision, recall,
        f1-score, support) and ``n`` (number of rows).

    Examples
    --------
    >>> s = classification_scores(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    >>> s["accuracy"], s["labels"], s["confusion_matrix"]
    (0.75, ['a', 'b'], [[1, 1], [0, 2]])
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if labels is None:
        labels = sorted(set(y_true.tolist()) | set(y_pred.tolist()), key=str)
    labels = list(labels)
    report = classification_report(
        y_true, y_pred, labels=labels, output_dict=True, zero_division=0,
        sample_weight=sample_weight,
    )
    matrix = confusion_matrix(y_true, y_pred, labels=labels, sample_weight=sample_weight)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred, sample_weight=sample_weight)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                   zero_division=0, sample_weight=sample_weight)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted",
                                      zero_division=0, sample_weight=sample_weight)),
        "labels": [_plain(v) for v in labels],
        "confusion_matrix": [[_plain(v) for v in row] for row in matrix.tolist()],
        "report": {str(k): {m: float(x) for m, x in v.items()} if isinstance(v, dict) else float(v)
                   for k, v in report.items()},
    }


def _plain(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def scores_markdown(scores: dict, *, title: str | None = None) -> str:
    """The per-class report and confusion matrix of :func:`classification_scores` as Markdown.

    Examples
    --------
    >>> md = scores_markdown(classification_scores(["a", "b"], ["a", "a"]))
    >>> "| a |" in md and "accuracy 0.500" in md
    True
    """
    lines = []
    if title:
        lines.append(f"**{title}** — accuracy {scores['accuracy']:.3f}, "
                     f"macro F1 {scores['macro_f1']:.3f}, n={scores['n']}")
    else:
        lines.append(f"accuracy {scores['accuracy']:.3f}, macro F1 {scores['macro_f1']:.3f}, "
                     f"n={scores['n']}")
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for label in scores["labels"]:
        r = scores["report"].get(str(label), {})
        lines.append(f"| {label} | {r.get('precision', 0):.3f} | {r.get('recall', 0):.3f} | "
                     f"{r.get('f1-score', 0):.3f} | {r.get('support', 0):g} |")
    labels = [str(v) for v in scores["labels"]]
    lines += ["", "confusion matrix (rows: true, columns: predicted)", "",
              "| true \\ predicted | " + " | ".join(labels) + " |",
              "|---|" + "---:|" * len(labels)]
    for label, row in zip(labels, scores["confusion_matrix"], strict=True):
        lines.append(f"| {label} | " + " | ".join(f"{v:g}" for v in row) + " |")
    return "\n".join(lines)
