"""`fwsiem train` / `predict` / `models` against real engines, from events in the cluster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from plugin.cli import main
from plugin.store import doc_id

TEMPLATE = Path(__file__).resolve().parents[2] / "plugin/assets/templates/fwsiem-events.json"
SERVICES = [("10.1.1", "tcp", 443), ("10.1.2", "tcp", 8080), ("10.1.3", "tcp", 5432),
            ("10.1.3", "tcp", 22), ("10.1.2", "udp", 161)]
SOURCES = ["10.1.1", "10.1.2", "10.1.4", "203.0.113"]
RULES = {"pass": "1001", "drop": "1099", "reject": "1098"}


def policy(snet: str, dnet: str, dport: int) -> str:
    if dnet == "10.1.1" and dport == 443:
        return "pass"
    if (snet, dnet, dport) in {("10.1.1", "10.1.2", 8080), ("10.1.2", "10.1.3", 5432),
                               ("10.1.4", "10.1.3", 22)}:
        return "pass"
    return "reject" if dnet == "10.1.3" and snet.startswith("10.") else "drop"


def events(n: int, days: int = 4, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        day = int(rng.integers(days))
        snet = SOURCES[rng.integers(len(SOURCES))]
        dnet, proto, dport = SERVICES[rng.integers(len(SERVICES))]
        action = policy(snet, dnet, dport)
        ts = pd.Timestamp("2024-03-04", tz="UTC") + pd.Timedelta(days=day, seconds=i)
        out.append({
            "@timestamp": ts.isoformat().replace("+00:00", "Z"),
            "event": {"action": action, "dataset": "fwsiem.nsx_dfw"},
            "network": {"transport": proto, "direction": "ingress"},
            "source": {"ip": f"{snet}.{10 + 20 * day + int(rng.integers(20))}",
                       "port": int(rng.integers(49152, 65535))},
            "destination": {"ip": f"{dnet}.{10 + 20 * day + int(rng.integers(20))}",
                            "port": dport},
            "rule": {"id": RULES[action], "ruleset": "domain-c8"},
        })
    return out


def run(argv: list[str]) -> int:
    try:
        with threadpool_limits(1):
            main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture
def cluster(engine, unique_prefix, monkeypatch):
    """An events index with the events template's mappings and a private models index."""
    store = engine.store
    events_index, models_index = f"{unique_prefix}-events", f"{unique_prefix}-models"
    store.delete_index(f"{unique_prefix}-*")
    mappings = json.loads(TEMPLATE.read_text())["template"]["mappings"]
    store.create_index(events_index, {"mappings": mappings})
    monkeypatch.setenv("FWSIEM_CONFIG", "")
    monkeypatch.setenv("FWSIEM_INDICES_MODELS", models_index)

    def fill(docs):
        result = store.bulk(({"_index": events_index, "_source": d} for d in docs), refresh=True)
        assert result.ok

    yield engine, events_index, models_index, fill
    store.delete_index(f"{unique_prefix}-*")


def test_training_on_an_empty_index_says_how_much_data_is_missing(cluster, capsys):
    engine, events_index, _, _ = cluster
    code = run(["--url", engine.url, "train", "action", "--index", events_index])
    err = capsys.readouterr().err
    assert code != 0
    assert events_index in err and "has 0 matching events" in err and "at least 1000" in err


def test_training_on_a_tiny_index_exits_non_zero_with_the_counts(cluster, capsys):
    engine, events_index, _, fill = cluster
    fill(events(12))
    code = run(["--url", engine.url, "train", "action", "--index", events_index])
    err = capsys.readouterr().err
    assert code != 0
    assert "has 12 matching events" in err and "at least 1000" in err
    assert "Traceback" not in err


def test_train_promote_predict_and_refuse_a_tampered_artifact(cluster, capsys):
    engine, events_index, models_index, fill = cluster
    fill(events(1500))
    assert run(["--url", engine.url, "train", "action", "--index", events_index]) == 0
    out = capsys.readouterr().out
    assert "version 1 is now the active action model" in out

    assert run(["--url", engine.url, "models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "action" in listing and "active" in listing

    # external client to the web tier's HTTPS: the policy passes it; to the db tier it drops
    assert run(["--url", engine.url, "predict", "--proto", "tcp", "--src", "203.0.113.250",
                "--dst", "10.1.1.250", "--dport", "443", "--index", events_index, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["action"] == "pass"
    rules = {r["rule"] for ev in answer["evidence"] for r in ev.get("rules", [])}
    assert "1001" in rules
    assert run(["--url", engine.url, "predict", "--proto", "tcp", "--src", "203.0.113.250",
                "--dst", "10.1.3.250", "--dport", "5432", "--no-evidence", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "drop"

    chunk_id = doc_id("model-artifact", "action", 1, 0)
    chunk = engine.store.get_doc(models_index, chunk_id)
    data = chunk["chunk"]["data"]
    tampered = ("B" if data[20] == "A" else "A").join([data[:20], data[21:]])
    engine.store.update_doc(models_index, chunk_id, {"chunk": {"data": tampered}}, refresh=True)
    code = run(["--url", engine.url, "predict", "--proto", "tcp", "--src", "203.0.113.250",
                "--dst", "10.1.1.250", "--dport", "443", "--no-evidence"])
    err = capsys.readouterr().err
    assert code != 0 and "refused" in err and models_index in err


def test_compare_reads_a_labeled_table_from_the_events(cluster, capsys, tmp_path):
    engine, events_index, _, fill = cluster
    fill(events(300, days=1))
    code = run(["--url", engine.url, "train", "compare", "--index", events_index,
                "--field", "event.action", "--features",
                "network.transport,destination.port,network.direction", "--cv", "3",
                "--models", "decision_tree,gaussian_nb", "--out", str(tmp_path)])
    assert code == 0
    summary = json.loads((tmp_path / "compare.json").read_text())
    assert summary["n_rows"] == 300
    assert {m["name"] for m in summary["models"]} == {"decision_tree", "gaussian_nb"}
    assert set(summary["labels"]) <= {"pass", "drop", "reject"}


TRAFFIC = {  # class: (flows per hour, packets per flow, bytes per packet, seconds per flow)
    "web": (20, 12, 700, 2), "mail": (5, 40, 1000, 10), "backup": (1, 50000, 1450, 1200),
    "flood": (60, 1, 60, 0.01), "dns": (40, 2, 90, 0.05),
}


def flow_events(hours: int = 6, per_class: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    docs, labels = [], {}
    for c, (name, (fph, ppf, bpp, dur)) in enumerate(TRAFFIC.items()):
        for d in range(per_class):
            ip = f"10.9.{c}.{d + 1}"
            labels[ip] = name
            for h in range(hours):
                for _ in range(max(1, int(fph * rng.lognormal(0, 0.3)))):
                    pk = max(1, int(ppf * rng.lognormal(0, 0.3)))
                    start = pd.Timestamp("2024-03-04", tz="UTC") + pd.Timedelta(
                        hours=h, seconds=float(rng.uniform(0, 3000)))
                    docs.append({"@timestamp": start.isoformat().replace("+00:00", "Z"),
                                 "event": {"dataset": "fwsiem.nfdump",
                                           "duration": int(dur * 1e9 * rng.lognormal(0, 0.3))},
                                 "destination": {"ip": ip, "port": 443},
                                 "source": {"ip": "10.1.1.1", "port": 50000},
                                 "network": {"transport": "tcp", "packets": pk,
                                             "bytes": int(pk * bpp)}})
    return docs, labels


def test_traffic_classifier_trains_from_flow_records_and_labels(cluster, capsys, tmp_path):
    engine, events_index, models_index, fill = cluster
    docs, labels = flow_events()
    fill(docs)
    labels_csv = tmp_path / "classes.csv"
    pd.DataFrame({"destination.ip": list(labels), "class": list(labels.values())}).to_csv(
        labels_csv, index=False)
    code = run(["--url", engine.url, "train", "traffic", "--index", events_index, "--labels",
                str(labels_csv), "--window", "1h"])
    assert code == 0, capsys.readouterr().err
    assert "registered traffic version 1" in capsys.readouterr().out
    from plugin.registry import Registry

    model, record = Registry(engine.store, models_index).load("traffic")
    assert record.status == "active" and set(model.classes_) == set(TRAFFIC)
