"""CLIBD protocol metrics against a hand-computed table on a tiny example with known geometry."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from clibd_toolkit.errors import ConfigError, DataError
from clibd_toolkit.evaluate import (
    EvalConfig,
    compare_metrics,
    evaluate_embeddings,
    format_table,
    harmonic_mean,
    mean_top1,
    write_metrics,
)
from clibd_toolkit.store import EmbeddingSet

NA = pd.NA


def unit(deg: float) -> list[float]:
    """A 2-D unit vector at ``deg`` degrees: cosine similarity between two records = cos(angle between them)."""
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


# record_id, angle, order, family, genus, species, split
TINY = [
    ("K1", 0, "O1", "F1", "G1", "S1", "seen_keys"),
    ("K2", 40, "O1", "F1", "G1", "S2", "seen_keys"),
    ("K3", 100, "O1", "F2", "G2", "S3", "seen_keys"),
    ("K4", 200, "O2", "F3", "G3", "S4", "test_unseen_keys"),
    ("K5", 250, "O2", "F3", "G4", "S5", "test_unseen_keys"),
    ("K6", 150, "O1", "F2", "G2", NA, "seen_keys"),  # a key without species: never a species hit
    ("Q1", 5, "O1", "F1", "G1", "S1", "test_seen"),
    ("Q2", 35, "O1", "F1", "G1", "S1", "test_seen"),
    ("Q3", 110, "O1", "F2", "G2", "S3", "test_seen"),
    ("Q4", 60, "O1", "F1", "G1", "S2", "test_seen"),
    ("Q5", 215, "O2", "F3", "G3", "S4", "test_unseen"),
    ("Q6", 240, "O2", "F3", "G3", "S4", "test_unseen"),
    ("Q7", 290, "O2", "F3", "G4", "S5", "test_unseen"),
    ("Q8", 220, "O2", "F3", "G3", NA, "test_unseen"),  # no species label: left out at species only
    ("T1", 0, "O1", "F1", "G1", "S1", "train"),  # training record: neither key nor query
    ("V1", 180, "O2", "F3", "G3", "S4", "val_unseen"),  # other stage: ignored at test
]


def tiny_set(extra_modalities: dict[str, np.ndarray] | None = None) -> EmbeddingSet:
    meta = pd.DataFrame([{"record_id": r[0], "order": r[2], "family": r[3], "genus": r[4], "species": r[5],
                          "bin_uri": NA, "split": r[6]} for r in TINY])
    vectors = {"dna": np.array([unit(r[1]) for r in TINY], np.float32), **(extra_modalities or {})}
    return EmbeddingSet(meta, vectors)


def row(result, split, rank, k, query="dna", key="dna"):
    rows = result.rows
    sel = rows[(rows["query"] == query) & (rows["key"] == key) & (rows["split"] == split) & (rows["rank"] == rank)
               & (rows["k"] == k)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_micro_macro_and_harmonic_mean_against_hand_table():
    # Neighbours by angular distance (worked by hand):
    #  Q1(5):   K1 K2 K3          Q2(35):  K2 K1 K3         Q3(110): K3 K6 K2     Q4(60): K2 K3 K1
    #  Q5(215): K4 K5 K6          Q6(240): K5 K4 K6         Q7(290): K5 K1 K4     Q8(220): K4 K5 K6
    result = evaluate_embeddings(tiny_set(), EvalConfig(stage="test"))
    assert list(result.rows.columns) == ["query", "key", "split", "rank", "k", "micro", "macro", "n"]
    expected = {
        # seen species top-1: Q1 hit, Q2 miss (K2 is S2), Q3 hit, Q4 hit -> micro 3/4;
        # per class S1 = 1/2, S3 = 1, S2 = 1 -> macro (0.5 + 1 + 1) / 3
        ("seen", "species", 1): (3 / 4, (0.5 + 1 + 1) / 3, 4),
        # seen genus top-1: all four nearest keys carry the right genus
        ("seen", "genus", 1): (1.0, 1.0, 4),
        # unseen species top-1 (Q8 has no species, left out): Q5 hit, Q6 miss (K5 is S5), Q7 hit -> 2/3;
        # per class S4 = 1/2, S5 = 1 -> 0.75
        ("unseen", "species", 1): (2 / 3, 0.75, 3),
        # unseen genus top-1: Q5 G3 hit, Q6 G3 vs G4 miss, Q7 G4 hit, Q8 G3 hit -> 3/4;
        # per class G3 = 2/3, G4 = 1 -> (2/3 + 1) / 2
        ("unseen", "genus", 1): (3 / 4, (2 / 3 + 1) / 2, 4),
        # unseen family / order top-1: every nearest key of Q5..Q8 is F3 / O2
        ("unseen", "family", 1): (1.0, 1.0, 4),
        # top-3 species: Q2 finds K1 second, Q6 finds K4 second -> all hit
        ("seen", "species", 3): (1.0, 1.0, 4),
        ("unseen", "species", 3): (1.0, 1.0, 3),
    }
    for (split, rank, k), (micro, macro, n) in expected.items():
        got = row(result, split, rank, k)
        assert got["micro"] == pytest.approx(micro) and got["macro"] == pytest.approx(macro) and got["n"] == n, \
            (split, rank, k)
    # harmonic mean of species top-1: 2SU/(S+U) by hand
    hm = row(result, "harmonic_mean", "species", 1)
    assert hm["micro"] == pytest.approx(2 * 0.75 * (2 / 3) / (0.75 + 2 / 3))  # 0.70588
    assert hm["macro"] == pytest.approx(2 * (5 / 6) * 0.75 / (5 / 6 + 0.75))  # 0.78947
    assert hm["n"] == 4 + 3


def test_harmonic_mean_edge_cases():
    assert harmonic_mean(0.0, 0.9) == 0.0 and harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert math.isnan(harmonic_mean(math.nan, 0.5))


def test_seen_unseen_bookkeeping_pooled_keys_and_stage():
    result = evaluate_embeddings(tiny_set(), EvalConfig(stage="test", ks=(1,)))
    cov = result.coverage.set_index("split")
    # 6 keys pooled for both groups (train and val records are not keys); 4 seen and 4 unseen test queries
    assert cov.loc["seen", "n_keys_used"] == 6 and cov.loc["unseen", "n_keys_used"] == 6
    assert cov.loc["seen", "n_queries"] == 4 and cov.loc["unseen", "n_queries"] == 4
    # open-set: Q7 (unseen) has the seen key K1 second; at stage "val" only V1 is a query (unseen group only)
    val = evaluate_embeddings(tiny_set(), EvalConfig(stage="val", ks=(1,)))
    assert set(val.rows["split"]) == {"unseen"}
    # V1 at 180 deg: nearest key K4 (200, S4) -> hit
    assert row(val, "unseen", "species", 1)["micro"] == 1.0 and row(val, "unseen", "species", 1)["n"] == 1


def test_bioscan5m_layout_train_records_are_keys():
    data = tiny_set()
    meta = data.metadata.copy()
    meta["split"] = meta["split"].replace({"seen_keys": "train", "test_unseen_keys": "unseen_keys"})
    meta.loc[meta["record_id"] == "T1", "split"] = "pretrain"  # T1 (0 deg) would otherwise become a key
    result = evaluate_embeddings(EmbeddingSet(meta, data.vectors), EvalConfig(ks=(1,)))
    assert result.coverage["n_keys"].iloc[0] == 6
    assert row(result, "seen", "species", 1)["micro"] == pytest.approx(3 / 4)


def test_all_modality_pairs_text_keys_and_missing_modality_counted():
    data = tiny_set()
    image = data.vectors["dna"].copy()
    image[[r[0] for r in TINY].index("Q2")] = np.nan  # Q2 has no image
    # text keys: every record's taxonomy-text embedding; here species S1..S5 at fixed angles
    text = np.array([unit({"S1": 0, "S2": 40, "S3": 100, "S4": 200, "S5": 250}.get(r[5], 150)) for r in TINY],
                    np.float32)
    result = evaluate_embeddings(tiny_set({"image": image, "text": text}), EvalConfig(ks=(1,)))
    pairs = set(zip(result.rows["query"], result.rows["key"]))
    assert pairs == {(q, k) for q in ("image", "dna") for k in ("image", "dna", "text")}
    cov = result.coverage[(result.coverage["query"] == "image") & (result.coverage["split"] == "seen")]
    assert (cov["n_queries"] == 4).all() and (cov["n_queries_used"] == 3).all()
    # image->dna seen species without Q2 (the only miss): Q1, Q3, Q4 hit -> 3/3
    assert row(result, "seen", "species", 1, "image", "dna")["micro"] == 1.0
    assert row(result, "seen", "species", 1, "image", "dna")["n"] == 3


def test_per_taxon_table():
    result = evaluate_embeddings(tiny_set(), EvalConfig(ks=(1, 3)))
    pt = result.per_taxon
    assert list(pt.columns) == ["query", "key", "split", "rank", "taxon", "k", "accuracy", "n_queries", "n_keys"]
    s1 = pt[(pt["split"] == "seen") & (pt["rank"] == "species") & (pt["taxon"] == "S1") & (pt["k"] == 1)].iloc[0]
    assert (s1["accuracy"], s1["n_queries"], s1["n_keys"]) == (0.5, 2, 1)  # Q1 hit, Q2 miss; key K1
    g3 = pt[(pt["split"] == "unseen") & (pt["rank"] == "genus") & (pt["taxon"] == "G3") & (pt["k"] == 1)].iloc[0]
    assert g3["accuracy"] == pytest.approx(2 / 3) and (g3["n_queries"], g3["n_keys"]) == (3, 1)


def test_mean_top1_is_mean_of_seen_unseen_top1_micro_macro():
    result = evaluate_embeddings(tiny_set(), EvalConfig())
    top1 = [r for r in result.rows.itertuples() if r.k == 1 and r.split in ("seen", "unseen")]
    assert len(top1) == 4 * 2  # 4 ranks x seen/unseen, one pair
    assert mean_top1(result) == pytest.approx(np.mean([v for r in top1 for v in (r.micro, r.macro)]))


def test_write_metrics_and_table(tmp_path):
    result = evaluate_embeddings(tiny_set(), EvalConfig(ks=(1,)))
    paths = write_metrics(result, tmp_path / "out", {"model": {"preset": "tiny"}})
    data = json.loads(paths["metrics"].read_text())
    assert set(data) == {"config", "rows"} and data["config"] == {"model": {"preset": "tiny"}}
    first = data["rows"][0]
    assert list(first) == ["query", "key", "split", "rank", "k", "micro", "macro", "n"]
    assert {r["split"] for r in data["rows"]} == {"seen", "unseen", "harmonic_mean"}
    assert pd.read_csv(paths["per_taxon"]).shape[0] == len(result.per_taxon)
    table = format_table(result, k=1)
    species = next(line for line in table.splitlines() if line.startswith("| species"))
    # micro 75.0 / 66.7 / 70.6 and macro 83.3 / 75.0 / 78.9 (hand values of the first test)
    assert [c.strip() for c in species.split("|")[3:9]] == ["75.0", "66.7", "70.6", "83.3", "75.0", "78.9"]
    with pytest.raises(ConfigError, match="no rows with k=5"):
        format_table(result, k=5)


def test_compare_metrics():
    base = dict(query="dna", key="dna", rank="species", k=1, n=10)
    previous = [dict(base, split="seen", micro=0.5, macro=0.4), dict(base, split="unseen", micro=0.3, macro=0.3)]
    current = [dict(base, split="seen", micro=0.6, macro=0.4), dict(base, split="harmonic_mean", micro=0.2,
                                                                    macro=0.2)]
    out = compare_metrics(current, {"rows": previous}).set_index(["split", "metric"])
    assert out.loc[("seen", "micro"), "status"] == "improved"
    assert out.loc[("seen", "micro"), "delta"] == pytest.approx(0.1)
    assert out.loc[("seen", "macro"), "status"] == "unchanged"
    assert out.loc[("unseen", "micro"), "status"] == "removed"
    assert out.loc[("harmonic_mean", "macro"), "status"] == "new"
    worse = compare_metrics(previous, current).set_index(["split", "metric"])
    assert worse.loc[("seen", "micro"), "status"] == "regressed"


def test_errors():
    with pytest.raises(ConfigError, match="k=9 is larger than the number of dna keys"):
        evaluate_embeddings(tiny_set(), EvalConfig(ks=(1, 9)))
    with pytest.raises(ConfigError, match="expected a subset"):
        EvalConfig(ranks=("order", "subgenus"))
    with pytest.raises(ConfigError, match="QUERY->KEY"):
        EvalConfig(pairs=("all->dna",))  # the stacked key set is a key, never a query
    with pytest.raises(ConfigError, match="unknown EvalConfig key"):
        EvalConfig.from_dict({"stgae": "val"})
    with pytest.raises(ConfigError, match="lack"):
        evaluate_embeddings(tiny_set(), EvalConfig(pairs=("image->dna",)))
    no_keys = tiny_set()
    no_keys.metadata["split"] = "test_seen"
    with pytest.raises(DataError, match="no key records"):
        evaluate_embeddings(no_keys)
    assert EvalConfig.from_dict(EvalConfig(pairs=("dna->text",)).to_dict()) == EvalConfig(pairs=("dna->text",))
