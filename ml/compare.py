"""Side-by-side comparison of classifiers on one labeled connection table (seed 002).

Every model gets the same preprocessing: constant columns dropped, categorical columns one-hot
encoded, numeric columns scaled for the models that need it (SVC, kNN, logistic regression).
Each model is scored with stratified k-fold cross-validation on the training part and once on
a stratified hold-out part, with its confusion matrix and per-class report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_selection import VarianceThreshold
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from ml.metrics import classification_scores

#: NSL-KDD column names: the 41 KDD connection features, then the label and the difficulty.
NSL_KDD_COLUMNS = [
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land",
    "wrong_fragment", "urgent", "hot", "num_failed_logins", "logged_in", "num_compromised",
    "root_shell", "su_attempted", "num_root", "num_file_creations", "num_shells",
    "num_access_files", "num_outbound_cmds", "is_host_login", "is_guest_login", "count",
    "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate", "srv_rerror_rate",
    "same_srv_rate", "diff_srv_rate", "srv_diff_host_rate", "dst_host_count",
    "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate",
    "label", "difficulty",
]

#: Models that are sensitive to feature scale get standardised numeric columns.
NEEDS_SCALING = {"svc", "knn", "logistic_regression"}


def load_nsl_kdd(path: str | Path, *, binary: bool = True) -> pd.DataFrame:
    """Read an NSL-KDD file (``KDDTrain+*.txt``): 41 features, ``label`` and ``difficulty``.

    Parameters
    ----------
    path : str or Path
        The comma-separated file without a header line.
    binary : bool
        Collapse every attack name to ``anomaly`` (as seed 002 does); ``normal`` stays.

    Returns
    -------
    pandas.DataFrame
        The features and ``label``; ``difficulty`` is dropped (it is not a connection feature).

    Examples
    --------
    >>> import io
    >>> row = "0,tcp,http,SF,181,5450" + ",0" * 35 + ",neptune,21\\n"
    >>> df = load_nsl_kdd(io.StringIO(row))
    >>> df.shape, df.loc[0, "label"]
    ((1, 42), 'anomaly')
    """
    df = pd.read_csv(path, header=None, names=NSL_KDD_COLUMNS)
    df = df.drop(columns=["difficulty"])
    if binary:
        df["label"] = np.where(df["label"] == "normal", "normal", "anomaly")
    return df


def default_models(random_state: int = 0) -> dict:
    """The seven classifiers of the comparison, keyed by a short name.

    Examples
    --------
    >>> sorted(default_models())[:3]
    ['decision_tree', 'gaussian_nb', 'hist_gradient_boosting']
    """
    return {
        "random_forest": RandomForestClassifier(n_estimators=100, n_jobs=1,
                                                random_state=random_state),
        "svc": SVC(kernel="rbf", random_state=random_state),
        "hist_gradient_boosting": HistGradientBoostingClassifier(random_state=random_state),
        "knn": KNeighborsClassifier(n_neighbors=5),
        "logistic_regression": LogisticRegression(max_iter=2000),
        "gaussian_nb": GaussianNB(),
        "decision_tree": DecisionTreeClassifier(criterion="gini", random_state=random_state),
    }


def preprocessor(scale: bool) -> ColumnTransformer:
    """One-hot encode text columns, drop constant numeric columns, optionally standardise.

    Examples
    --------
    >>> X = pd.DataFrame({"proto": ["tcp", "udp"], "bytes": [1.0, 3.0], "zero": [0, 0]})
    >>> preprocessor(scale=True).fit_transform(X).tolist()
    [[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]]
    """
    numeric_steps = [("constant", VarianceThreshold(0.0))]
    if scale:
        numeric_steps.append(("scale", StandardScaler()))
    return ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
             make_column_selector(dtype_include=["object", "category", "string", "bool"])),
            ("numeric", Pipeline(numeric_steps), make_column_selector(dtype_include="number")),
        ],
        sparse_threshold=0.0,
    )


def model_pipeline(name: str, estimator) -> Pipeline:
    """The comparison's preprocessing in front of ``estimator`` (scaled if the model needs it)."""
    return Pipeline([("prepare", preprocessor(scale=name in NEEDS_SCALING)), ("model", estimator)])


@dataclass
class ModelScores:
    """One model's figures in a comparison."""

    name: str
    cv_scores: list[float]
    holdout: dict
    fit_seconds: float

    @property
    def cv_mean(self) -> float:
        return float(np.mean(self.cv_scores))

    @property
    def cv_std(self) -> float:
        return float(np.std(self.cv_scores))

    def to_dict(self) -> dict:
        return {"name": self.name, "cv_scores": self.cv_scores, "cv_mean": self.cv_mean,
                "cv_std": self.cv_std, "holdout_accuracy": self.holdout["accuracy"],
                "holdout_macro_f1": self.holdout["macro_f1"], "holdout": self.holdout,
                "fit_seconds": self.fit_seconds}


@dataclass
class Comparison:
    """The result of :func:`compare_classifiers`."""

    models: list[ModelScores]
    n_rows: int
    n_train: int
    n_test: int
    cv_folds: int
    labels: list
    settings: dict = field(default_factory=dict)

    def best(self) -> ModelScores:
        return max(self.models, key=lambda m: (m.holdout["accuracy"], m.cv_mean))

    def to_dict(self) -> dict:
        return {"n_rows": self.n_rows, "n_train": self.n_train, "n_test": self.n_test,
                "cv_folds": self.cv_folds, "labels": self.labels, "settings": self.settings,
                "best": self.best().name, "models": [m.to_dict() for m in self.models]}

    def table_markdown(self) -> str:
        """One row per model: CV mean ± std, hold-out accuracy and macro F1, fit time."""
        lines = [f"| model | CV accuracy mean ± std ({self.cv_folds}-fold) | hold-out accuracy "
                 "| hold-out macro F1 | fit s |", "|---|---:|---:|---:|---:|"]
        for m in sorted(self.models, key=lambda m: -m.holdout["accuracy"]):
            lines.append(f"| {m.name} | {m.cv_mean:.4f} ± {m.cv_std:.4f} | "
                         f"{m.holdout['accuracy']:.4f} | {m.holdout['macro_f1']:.4f} | "
                         f"{m.fit_seconds:.1f} |")
        return "\n".join(lines)


def compare_classifiers(
    X: pd.DataFrame, y, *, models: dict | None = None, cv: int = 5, test_size: float = 0.3,
    random_state: int = 0, progress=None,
) -> Comparison:
    """Score each model with stratified k-fold CV and on a stratified hold-out split.

    Parameters
    ----------
    X : pandas.DataFrame
        Features; text/categorical columns are one-hot encoded, numeric ones used as they are
        (standardised for SVC, kNN and logistic regression).
    y : array-like
        Labels.
    models : dict, optional
        ``name -> estimator``; default :func:`default_models`.
    cv : int
        Number of stratified folds on the training part.
    test_size : float
        Fraction kept aside for the hold-out accuracy, confusion matrix and report.
    random_state : int
        Seed of the split, the folds and the models.
    progress : callable, optional
        Called with each model's name before it is scored.

    Returns
    -------
    Comparison

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> Xa, ya = make_classification(n_samples=200, n_features=5, random_state=0)
    >>> X = pd.DataFrame(Xa, columns=list("abcde"))
    >>> res = compare_classifiers(X, ya, models={"decision_tree": DecisionTreeClassifier()}, cv=3)
    >>> res.n_test, len(res.models[0].cv_scores)
    (60, 3)
    """
    models = default_models(random_state) if models is None else models
    y = np.asarray(y)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, stratify=y, random_state=random_state)
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    labels = sorted(set(y.tolist()), key=str)
    results = []
    for name, estimator in models.items():
        if progress is not None:
            progress(name)
        pipe = model_pipeline(name, estimator)
        started = time.perf_counter()
        scores = cross_val_score(pipe, X_train, y_train, cv=folds, scoring="accuracy", n_jobs=1)
        pipe.fit(X_train, y_train)
        elapsed = time.perf_counter() - started
        holdout = classification_scores(y_test, pipe.predict(X_test), labels=labels)
        results.append(ModelScores(name, [float(s) for s in scores], holdout, elapsed))
    return Comparison(results, n_rows=len(y), n_train=len(y_train), n_test=len(y_test),
                      cv_folds=cv, labels=labels,
                      settings={"test_size": test_size, "random_state": random_state})


def plot_cv_scores(comparison: Comparison, path: str | Path) -> Path:
    """Write a box plot of each model's cross-validation accuracies to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(comparison.models, key=lambda m: -m.cv_mean)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.boxplot([m.cv_scores for m in ordered], showmeans=True)
    ax.set_xticks(range(1, len(ordered) + 1), [m.name for m in ordered], rotation=20)
    ax.set_ylabel(f"accuracy ({comparison.cv_folds}-fold stratified CV)")
    ax.set_title(f"Classifier comparison, {comparison.n_train} training rows")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(comparison: Comparison, out_dir: str | Path, *, stem: str = "compare") -> dict:
    """Write ``<stem>.json`` (the summary) and ``<stem>.png`` (the box plot) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_cv_scores(comparison, out / f"{stem}.png")
    summary = comparison.to_dict()
    summary["plot"] = png.name
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2))
    return {"json": out / f"{stem}.json", "png": png}
