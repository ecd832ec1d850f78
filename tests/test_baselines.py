"""clibd_toolkit.baselines: chance levels against brute-force enumeration, the learning summary, and the comparison
with an earlier run (regressions); io.write_json's NaN handling."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from clibd_toolkit import baselines, report
from clibd_toolkit.errors import ClibdError, ConfigError
from clibd_toolkit.evaluate import EvalConfig, compare_metrics, evaluate_embeddings
from clibd_toolkit.io import write_json
from clibd_toolkit.store import META_COLUMNS, EmbeddingSet


def _tiny_embeddings() -> EmbeddingSet:
    """Keys: species a x3, b x2, c x1 (c lacks a DNA vector); seen queries a, a, b; unseen queries c, d."""
    rows = [("k1", "a", "seen_keys"), ("k2", "a", "seen_keys"), ("k3", "a", "seen_keys"), ("k4", "b", "seen_keys"),
            ("k5", "b", "test_unseen_keys"), ("k6", "c", "test_unseen_keys"), ("q1", "a", "test_seen"),
            ("q2", "a", "test_seen"), ("q3", "b", "test_seen"), ("q4", "c", "test_unseen"), ("q5", "d", "test_unseen"),
            ("t1", "a", "train")]
    meta = pd.DataFrame([{"record_id": r, "order": "O", "family": "F", "genus": f"G{s}", "species": s,
                          "bin_uri": pd.NA, "split": sp} for r, s, sp in rows], columns=list(META_COLUMNS))
    rng = np.random.default_rng(0)
    image = rng.normal(size=(len(rows), 4)).astype(np.float32)
    dna = rng.normal(size=(len(rows), 4)).astype(np.float32)
    dna[5] = np.nan
    return EmbeddingSet(meta, {"image": image / np.linalg.norm(image, axis=1, keepdims=True),
                               "dna": dna / np.linalg.norm(dna, axis=1, keepdims=True)})


def _brute_force(key_labels: list[str], query_labels: list[str], k: int) -> tuple[float, float]:
    """Average over every k-subset of keys (uniform random retrieval) of the hit indicator, per query."""
    subsets = list(itertools.combinations(range(len(key_labels)), k))
    per_query = [np.mean([any(key_labels[i] == q for i in s) for s in subsets]) for q in query_labels]
    classes = sorted(set(query_labels))
    macro = np.mean([np.mean([p for p, q in zip(per_query, query_labels) if q == c]) for c in classes])
    return float(np.mean(per_query)), float(macro)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_chance_accuracy_matches_enumeration(k):
    emb = _tiny_embeddings()
    chance = baselines.chance_accuracy(emb, EvalConfig(ks=(k,), ranks=("species",)))
    for q_mod, k_mod in (("image", "image"), ("image", "dna"), ("dna", "image")):
        keys = ["a", "a", "a", "b", "b", "c"] if k_mod == "image" else ["a", "a", "a", "b", "b"]
        for split, queries in (("seen", ["a", "a", "b"]), ("unseen", ["c", "d"])):
            micro, macro = _brute_force(keys, queries, k)
            row = chance[(chance["query"] == q_mod) & (chance["key"] == k_mod) & (chance["split"] == split)].iloc[0]
            assert row["micro"] == pytest.approx(micro) and row["macro"] == pytest.approx(macro)
            assert row["n"] == len(queries)
    hm = chance[(chance["split"] == "harmonic_mean") & (chance["query"] == "image") & (chance["key"] == "image")]
    s, u = (chance[(chance["split"] == g) & (chance["query"] == "image") & (chance["key"] == "image")]["macro"].iloc[0]
            for g in ("seen", "unseen"))
    assert hm["macro"].iloc[0] == pytest.approx(2 * s * u / (s + u))


def test_chance_rows_line_up_with_the_evaluation():
    emb = _tiny_embeddings()
    config = EvalConfig(ks=(1, 3))
    result = evaluate_embeddings(emb, config)
    chance = baselines.chance_accuracy(emb, config)
    keys = ["query", "key", "split", "rank", "k"]
    merged = result.rows.merge(chance, on=keys, suffixes=("", "_chance"))
    assert len(merged) == len(result.rows) == len(chance)
    assert (merged["n"] == merged["n_chance"]).all()  # same queries counted
    table = baselines.compare_with_chance(result.rows, chance, splits=("seen",))
    assert set(table["split"]) == {"seen"}
    row = table.iloc[0]
    assert row["times_chance"] == pytest.approx(row["achieved"] / row["chance"])


def test_learning_summary_headline(tmp_path):
    rows = pd.DataFrame([("image", "dna", "seen", "species", 1, 0.5, 0.4, 10),
                         ("dna", "text", "seen", "species", 1, 0.9, 0.8, 10),
                         ("dna", "dna", "seen", "species", 1, 1.0, 1.0, 10)],
                        columns=["query", "key", "split", "rank", "k", "micro", "macro", "n"])
    chance = rows.assign(micro=0.02, macro=0.04)
    summary = baselines.write_learning_summary(rows, chance, tmp_path)
    assert summary["pairs"]["image->dna"] == {"achieved": 0.4, "chance": 0.04, "times_chance": pytest.approx(10.0)}
    assert "dna->dna" not in summary["pairs"]  # not cross-modal
    assert "image->dna 40.0% (chance 4.0%)" in summary["headline"]
    assert json.loads((tmp_path / "learning.json").read_text())["headline"] == summary["headline"]
    assert len(pd.read_csv(tmp_path / "vs_chance.csv")) == 3


# --- comparison with an earlier run --------------------------------------------------------------------------------


def test_compare_with_previous_and_regressions(tmp_path):
    emb = _tiny_embeddings()
    result = evaluate_embeddings(emb, EvalConfig(ks=(1,)))
    assert baselines.compare_with_previous(result, "", tmp_path) is None
    assert baselines.check_regressions(None, fail=True).empty
    previous = {"config": {}, "rows": [dict(r, micro=None if pd.isna(r["micro"]) else min(1.0, r["micro"] + 0.5),
                                            macro=r["macro"]) for r in result.rows.to_dict(orient="records")]}
    (tmp_path / "old.json").write_text(json.dumps(previous))
    comparison = baselines.compare_with_previous(result, tmp_path / "old.json", tmp_path / "out")
    assert (tmp_path / "out" / "comparison.csv").is_file()
    counts = baselines.comparison_counts(comparison)
    expected = compare_metrics(result, tmp_path / "old.json")["status"].value_counts()
    assert counts["regressed"] == expected.get("regressed", 0) > 0
    regressed = baselines.check_regressions(comparison, fail=False)
    assert len(regressed) == counts["regressed"] and (regressed["delta"] < 0).all()
    with pytest.raises(ClibdError, match=r"metric\(s\) regressed"):
        baselines.check_regressions(comparison, fail=True)
    with pytest.raises(ConfigError, match="PREVIOUS_METRICS"):
        baselines.compare_with_previous(result, tmp_path / "missing.json", tmp_path)


def test_write_json_writes_nan_and_numpy_values_as_json(tmp_path):
    path = write_json({"a": math.nan, "b": np.float32(0.5), "c": [np.int64(3), (1, math.nan)], 4: "x"},
                      tmp_path / "out.json")
    assert json.loads(path.read_text()) == {"a": None, "b": 0.5, "c": [3, [1, None]], "4": "x"}


def test_report_still_offers_the_baselines_for_earlier_notebooks():
    for name in ("chance_accuracy", "compare_with_chance", "learning_summary", "write_learning_summary",
                 "compare_with_previous", "comparison_counts", "check_regressions"):
        assert getattr(report, name) is getattr(baselines, name)
    assert report.write_json is write_json
