"""Identification, novelty flag and back-off on fixtures where the answer is known."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from clibd_toolkit.errors import ConfigError
from clibd_toolkit.identification import NoveltyCalibration, calibrate_novelty, evaluate_novelty, identify
from clibd_toolkit.store import EmbeddingSet

NA = pd.NA
RANK_NAMES = ("order", "family", "genus", "species")


def embedding_set(rows: list[dict], vectors: np.ndarray, modality: str = "dna") -> EmbeddingSet:
    meta = pd.DataFrame([{"record_id": r["id"], **{k: r.get(k, NA) for k in RANK_NAMES}, "bin_uri": NA,
                          "split": NA} for r in rows])
    return EmbeddingSet(meta, {modality: np.asarray(vectors, np.float32)})


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_backoff_with_hand_thresholds():
    # reference at 0 deg (full labels) and 90 deg (labelled to genus only)
    reference = embedding_set([dict(id="R1", order="O", family="F", genus="G", species="S"),
                               dict(id="R2", order="O", family="F", genus="H")], [unit(0), unit(90)])
    calibration = NoveltyCalibration(thresholds={"order": 0.2, "family": 0.5, "genus": 0.7, "species": 0.9})
    # similarity to the nearest reference = cos(angle): 10 deg -> 0.985, 40 -> 0.766, -50 -> 0.643 (nearest R1),
    # 80 deg -> nearest R2 at 0.985 but R2 has no species; 180 deg -> best 0.0 (R2, cos 90) below every threshold
    queries = embedding_set([dict(id=f"Q{i}") for i in range(5)], [unit(a) for a in (10, 40, -50, 80, 180)])
    out = identify(queries, reference, query_modality="dna", key_modality="dna", k=2, novelty=calibration)
    assert out["record_id"].tolist() == ["Q0", "Q1", "Q2", "Q3", "Q4"]
    assert out["identified_rank"].tolist()[:4] == ["species", "genus", "family", "genus"]
    assert pd.isna(out["identified_rank"].iloc[4])
    assert out["novel"].tolist() == [False, True, True, False, True]
    assert out["identified_species"].iloc[0] == "S" and pd.isna(out["identified_species"].iloc[1])
    assert out["identified_genus"].iloc[1] == "G" and pd.isna(out["identified_genus"].iloc[2])
    assert out["predicted_species"].iloc[1] == "S"  # the raw nearest-record prediction stays available
    assert out["identified_genus"].iloc[3] == "H" and pd.isna(out["identified_order"].iloc[4])
    np.testing.assert_allclose(out["similarity"], [math.cos(math.radians(a)) for a in (10, 40, 50, 10, 90)],
                               atol=1e-6)
    np.testing.assert_allclose(out["novelty_score"], 1 - out["similarity"])
    assert out["neighbour_ids"].iloc[0] == "R1|R2" and out["neighbour_species"].iloc[0] == "S|"
    # score at a rank: share of the 2 neighbours' similarity that agrees with the prediction.
    # Q1 (40 deg): sims cos40 (R1) and cos50 (R2); both genus-level differ (G vs H), family agrees (F, F)
    c40, c50 = math.cos(math.radians(40)), math.cos(math.radians(50))
    assert out["score_genus"].iloc[1] == pytest.approx(c40 / (c40 + c50), abs=1e-6)
    assert out["score_family"].iloc[1] == pytest.approx(1.0)


def test_without_calibration_only_missing_labels_back_off():
    reference = embedding_set([dict(id="R1", order="O", family="F", genus="G")], [unit(0)])
    queries = embedding_set([dict(id="Q")], [unit(170)])
    out = identify(queries, reference, query_modality="dna", key_modality="dna", k=1)
    assert out["identified_rank"].iloc[0] == "genus" and pd.isna(out["novel"].iloc[0])


def hierarchy(seed: int = 0, d: int = 32, per_species: int = 16):
    """2 orders x 2 families x 2 genera x 3 species; nested Gaussian offsets, so records of one species are much
    closer to each other (cos ~0.99) than to a sister species (cos ~0.9) or another genus."""
    rng = np.random.default_rng(seed)
    rows, vectors = [], []
    for o in range(2):
        oc = rng.standard_normal(d)
        for f in range(2):
            fc = oc + 0.8 * rng.standard_normal(d)
            for g in range(2):
                gc = fc + 0.5 * rng.standard_normal(d)
                for s in range(3):
                    sc = gc + 0.45 * rng.standard_normal(d)
                    for i in range(per_species):
                        name = f"O{o}F{f}G{g}S{s}"
                        rows.append(dict(id=f"{name}-{i}", order=f"O{o}", family=f"O{o}F{f}",
                                         genus=f"O{o}F{f}G{g}", species=name))
                        vectors.append(sc + 0.12 * rng.standard_normal(d))
    vectors = np.array(vectors)
    return rows, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_novel_species_flagged_and_backed_off_to_genus():
    rows, vectors = hierarchy()
    withheld = "O1F0G1S2"
    is_query = np.array([int(r["id"].split("-")[1]) >= 12 for r in rows])  # 4 records of each species
    in_reference = ~is_query & np.array([r["species"] != withheld for r in rows])
    reference = embedding_set([r for r, keep in zip(rows, in_reference) if keep], vectors[in_reference])
    queries = embedding_set([r for r, q in zip(rows, is_query) if q], vectors[is_query])
    calibration = calibrate_novelty(reference, query_modality="dna", key_modality="dna", seed=1)
    t = calibration.thresholds
    assert t["order"] <= t["family"] <= t["genus"] <= t["species"]
    assert calibration.diagnostics["species"]["false_novel_rate"] <= 0.05
    out = identify(queries, reference, query_modality="dna", key_modality="dna", novelty=calibration)
    novel_rows = out[queries.metadata["species"] == withheld]
    assert novel_rows["novel"].all()
    assert (novel_rows["identified_rank"] == "genus").all() and (novel_rows["identified_genus"] == "O1F0G1").all()
    known = out[queries.metadata["species"] != withheld]
    assert known["novel"].mean() <= 0.1
    assert (known["identified_species"] == queries.metadata["species"][known.index]).mean() >= 0.9
    scores = evaluate_novelty(queries, reference, calibration)
    assert scores["n_novel"] == 4 and scores["n_queries"] == 96
    assert scores["auroc"] > 0.95 and scores["detection_rate"] == 1.0
    assert scores["backoff_accuracy_novel"] == 1.0 and scores["backoff_accuracy"] >= 0.9
    # AUROC by hand (Mann-Whitney): share of (novel, known) pairs where the novel query scores higher
    truth_novel = (queries.metadata["species"] == withheld).to_numpy()
    s = out["novelty_score"].to_numpy()
    pairs = s[truth_novel][:, None] - s[~truth_novel][None, :]
    assert scores["auroc"] == pytest.approx(((pairs > 0) + 0.5 * (pairs == 0)).mean())


def test_calibration_balanced_accuracy_and_round_trip(tmp_path):
    rows, vectors = hierarchy(seed=3, per_species=8)
    reference = embedding_set(rows, vectors)
    calibration = calibrate_novelty(reference, query_modality="dna", key_modality="dna",
                                    method="balanced_accuracy", n_repeats=2)
    assert set(calibration.thresholds) == set(RANK_NAMES)
    assert calibration.diagnostics["species"]["n_novel"] > 0
    calibration.save(tmp_path / "novelty.json")
    assert NoveltyCalibration.load(tmp_path / "novelty.json") == calibration


def test_errors():
    reference = embedding_set([dict(id="R1", species="S")], [unit(0)])
    queries = embedding_set([dict(id="Q")], [unit(5)])
    with pytest.raises(ConfigError, match="non-decreasing"):
        NoveltyCalibration(thresholds={"order": 0.9, "family": 0.5, "genus": 0.7, "species": 0.95})
    with pytest.raises(ConfigError, match="image->dna"):
        identify(queries, reference, query_modality="dna", key_modality="dna",
                 novelty=NoveltyCalibration(query_modality="image"))
    with pytest.raises(ConfigError, match="holds no thresholds"):
        identify(queries, reference, query_modality="dna", key_modality="dna", novelty=NoveltyCalibration())
    with pytest.raises(ConfigError, match=r"k=3 is larger than the number of keys in the index \(1\)"):
        identify(queries, reference, query_modality="dna", key_modality="dna", k=3)
    with pytest.raises(ConfigError, match="no 'image' embeddings"):
        identify(queries, reference, query_modality="image", key_modality="dna")
