"""Evaluate the allow-list recommender on simulated traffic; write EVALUATION.md's section and the ROC plot.

    python scripts/evaluate_allowlist.py --hours 24 --seed 7 --orgs 12
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from doc_sections import markers, replace_section  # noqa: E402

from ml import allowlist as al  # noqa: E402
from ml.cidr import NoCoverError, group_cidrs  # noqa: E402
from ml.simulate import Simulation, load_scenario  # noqa: E402
from plugin.recommend import whatif  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
START, END = markers("allowlist")
NAMES = {"baseline_seen": "baseline: allow iff seen (seed 001 §2.3.1)",
         "paper_svm": "paper: weighted SVM, quadratic polynomial kernel",
         "fwsiem_gbm": "fwsiem: weighted histogram gradient boosting"}


def fine_from_simulation(sim: Simulation) -> pd.DataFrame:
    """The fine table, chunk by chunk (only the hour rows of a chunk are summed afterwards)."""
    parts = [al.fine_table_from_events(chunk) for chunk in sim.iter_events()]
    fine = pd.concat(parts, ignore_index=True)
    keys = ["remote", "vm", "port", "hour"]
    return fine.groupby(keys, sort=True, as_index=False)[al.FINE_COLUMNS[4:]].sum()


def propose(scores: pd.Series, k: int, min_prefixlen: int, threshold: float) -> list[dict]:
    docs = []
    for (vm, port), g in scores.groupby(level=["vm", "port"]):
        allowed = [r for (_, _, r), s in g.items() if s >= threshold]
        cidrs = []
        if allowed:
            try:
                cidrs = group_cidrs(allowed, k=k, min_prefixlen=min_prefixlen).cidrs
            except NoCoverError as exc:
                cidrs = group_cidrs(allowed, k=exc.min_k, min_prefixlen=min_prefixlen).cidrs
        docs.append({"finding": "allowlist",
                     "proposal": {"endpoint": {"ip": vm, "port": int(port)}, "cidrs": cidrs}})
    return docs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--orgs", type=int, default=12, help="tenants in the simulated datacenter")
    ap.add_argument("--k", type=int, default=10, help="max CIDRs per endpoint allow-list")
    ap.add_argument("--min-prefixlen", type=int, default=24)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    command = ("python scripts/evaluate_allowlist.py " + f"--scenario {args.scenario} "
               f"--hours {args.hours:g} --seed {args.seed} --orgs {args.orgs} --k {args.k} "
               f"--min-prefixlen {args.min_prefixlen}")
    t0 = time.time()
    sc = load_scenario(args.scenario).with_overrides({"datacenter": {"orgs": args.orgs}})
    sim = Simulation(sc, hours=args.hours, seed=args.seed)
    fine = fine_from_simulation(sim)
    truth = sim.truth()
    t_sim = time.time() - t0
    feats = al.pair_features(fine)
    allow = {(e["ip"], int(e["port"])): e["allowed"] for e in truth["allowlists"]}
    labels = al.label_pairs(feats.index, allow)
    t1 = time.time()
    res = al.evaluate(feats, labels, random_state=0)
    t_eval = time.time() - t1
    auc, counts = res["auc"], res["counts"]
    for name in NAMES:
        print(f"{NAMES[name]:55s} weighted ROC AUC {auc[name]:.3f}")
    print(counts, res["params"])

    # what-if on the held-out endpoints: propose allow-lists, replay the same period
    test_idx = res["test_index"]
    malicious = sorted({ip for inc in truth["incidents"] for ip in inc["entities"]["src_ips"]})
    test_eps = {(v, int(p)) for v, p, _ in test_idx}
    fine_test = fine[[(v, int(p)) in test_eps for v, p in zip(fine["vm"], fine["port"],
                                                               strict=True)]]
    gbm = res["models"]["fwsiem_gbm"]
    scores = pd.Series(gbm.predict_proba(feats.loc[test_idx, al.FEATURE_NAMES])[:, 1],
                       index=test_idx)
    wi = {}
    wi["fwsiem"] = whatif(fine_test, propose(scores, args.k, args.min_prefixlen, 0.5), malicious)
    seen = pd.Series(1.0, index=test_idx)
    wi["baseline"] = whatif(fine_test, propose(seen, args.k, args.min_prefixlen, 0.5), malicious)
    expert = pd.Series(labels.loc[test_idx].to_numpy(), index=test_idx)
    wi["expert"] = whatif(fine_test, propose(expert, args.k, args.min_prefixlen, 0.5), malicious)
    # "benign" for service risk = remotes the expert allow-list admits
    for name, docs_scores in (("fwsiem", scores), ("baseline", seen), ("expert", expert)):
        docs = propose(docs_scores, args.k, args.min_prefixlen, 0.5)
        allowed_fine = fine_test.merge(
            labels.rename("label").reset_index(), on=["vm", "port", "remote"])
        ok = allowed_fine[allowed_fine["label"] == 1]
        r = whatif(ok, docs)
        wi[name]["expert_allowed_events"] = r["events"]
        wi[name]["expert_allowed_blocked"] = r["blocked"]
        wi[name]["cidrs"] = sum(len(d["proposal"]["cidrs"]) for d in docs)
    for name, r in wi.items():
        print(name, r)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name in NAMES:
        fpr, tpr = res["roc"][name]
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc[name]:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls="--")
    ax.set_xlabel("weighted false positive rate (deny-list IPs allowed)")
    ax.set_ylabel("weighted true positive rate (allow-list IPs allowed)")
    ax.set_title("Allow-list recommendation, held-out endpoints")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    png = ROOT / "docs" / "allowlist_roc.png"
    if not args.no_write:
        fig.savefig(png, dpi=110)

    today = dt.date.today().isoformat()

    def pct(a, b):
        return f"{a / b:.1%}" if b else "n/a"

    rows = "\n".join(f"| {NAMES[n]} | {auc[n]:.3f} |" for n in NAMES)
    wrows = "\n".join(
        f"| {label} | {wi[n]['cidrs']} | {pct(wi[n]['expert_allowed_blocked'], wi[n]['expert_allowed_events'])} "
        f"({wi[n]['expert_allowed_blocked']} of {wi[n]['expert_allowed_events']}) | "
        f"{pct(wi[n]['malicious_blocked'], wi[n]['malicious_events'])} "
        f"({wi[n]['malicious_blocked']} of {wi[n]['malicious_events']}) | "
        f"{pct(wi[n]['blocked'], wi[n]['events'])} |"
        for n, label in (("baseline", "allow iff seen"), ("fwsiem", "fwsiem model (p ≥ 0.5)"),
                         ("expert", "the expert allow-lists themselves")))
    goal = "met" if auc["fwsiem_gbm"] >= 0.95 else "NOT met"
    section = f"""{START}
## Allow-list recommender (seed 001)

Command: `{command}` ({today}, {platform.python_version()}, 2-core 24 GiB machine; simulation
{t_sim:.0f} s, features + training + evaluation {t_eval:.0f} s).

Data: the simulator's `{args.scenario}` scenario with {args.orgs} tenants, {args.hours:g} h,
seed {args.seed}; one sample per (endpoint = VM + port, remote IP) pair with traffic;
labels from the expert allow-lists in `truth.json` (every allow-list endpoint). Features: seed 001
Appendix A (time distribution, traffic type with SYN/RST/FIN shares, breadth) at the four levels
cloud / organisation / VM / endpoint ({len(al.FEATURE_NAMES)} features); samples weighted by the
remote's share of the endpoint's traffic, normalised per class. Split by endpoint 60/20/20
({counts['endpoints']} endpoints, {counts['pairs']} pairs; test: {counts['test_pairs']} pairs,
{counts['test_positive']} allowed / {counts['test_negative']} not); hyper-parameters chosen on the
validation endpoints ({res['params']}); figures on the test endpoints only.

| model | weighted ROC AUC (held-out endpoints) |
|---|---|
{rows}

The paper reports 0.92 (SVM) vs 0.58 (baseline) on its data. Goal for fwsiem's model on simulated
data: ≥ 0.95 — **{goal}**. ROC curves: [docs/allowlist_roc.png](docs/allowlist_roc.png).

Read with care: in the simulation, allow-listed remotes (the tenant's office networks, the jump
host, partners) behave very differently from the internet clients, scanners and attackers that
reach the same ports, so both learned models separate the classes almost perfectly and this data
does not rank the paper's model against fwsiem's; the paper's real data is harder (0.92). fwsiem
uses gradient boosting because it trains in time linear in the number of pairs, while the kernel
SVM is quadratic (here it is capped at 20,000 training pairs), at equal AUC on this data.

What-if on the held-out endpoints: each proposed allow-list grouped into at most {args.k} CIDRs
(no block larger than /{args.min_prefixlen}), then the same period's traffic replayed against it
(`ml`/`plugin.recommend.whatif`; `fwsiem recommend whatif` does this against the cluster).
Service risk = traffic from remotes on the expert allow-list that would be blocked; malicious =
traffic from the sources of the simulated incidents (scans, brute force, floods).

| allow-list | CIDRs | expert-allowed traffic blocked (service risk) | incident traffic stopped | all traffic blocked |
|---|---|---|---|---|
{wrows}
{END}"""
    if args.no_write:
        print(section)
        return
    path = ROOT / "EVALUATION.md"
    replace_section(path, "allowlist", section.replace(START, "").replace(END, ""),
                    "# fwsiem model evaluation")
    print(f"wrote {path} and {png}")
    np.seterr(all="ignore")


if __name__ == "__main__":
    main()
