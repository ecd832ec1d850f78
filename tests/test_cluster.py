"""Unseen-species clustering: metrics against hand values and scikit-learn, selection, guards, CLI."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from clibd_toolkit.cli.cluster import add_cluster_arguments, run_cluster
from clibd_toolkit.cluster import cluster_embeddings, clustering_scores
from clibd_toolkit.errors import ConfigError, DataError
from clibd_toolkit.store import EmbeddingSet


def blobs(seed: int = 0, per_species: int = 10, outliers: int = 0) -> EmbeddingSet:
    """3 unseen species as tight, well-separated blobs (+ 1 seen species that the default selection skips).
    Species S2 is split over two BINs."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:4] * 4.0
    rows, vectors = [], []
    for s, centre in enumerate(centres):
        for i in range(per_species):
            rows.append({"record_id": f"S{s}-{i}", "order": "O", "family": "F", "genus": "G", "species": f"S{s}",
                         "bin_uri": f"BOLD:{s}{i % 2 if s == 2 else 0}",
                         "split": "seen_keys" if s == 3 else ("test_unseen" if i % 2 else "test_unseen_keys")})
            vectors.append(centre + 0.1 * rng.standard_normal(8))
    for i in range(outliers):
        rows.append({"record_id": f"X{i}", "order": "O", "family": "F", "genus": "G", "species": "S0",
                     "bin_uri": pd.NA, "split": "val_unseen"})
        vectors.append(rng.standard_normal(8) * 3)
    vectors = np.array(vectors, np.float32)
    return EmbeddingSet(pd.DataFrame(rows), {"dna": vectors / np.linalg.norm(vectors, axis=1, keepdims=True)})


def test_clustering_scores_hand_computed():
    true = np.array(["a", "a", "a", "b", "b", "b"])
    pred = np.array([1, 1, 2, 2, 3, 3])
    scores = clustering_scores(true, pred)
    # ARI: sum_ij C(n_ij,2) = 2; rows sum C(3,2)*2 = 6; cols C(2,2)*3 = 3; C(6,2) = 15
    expected_index = 6 * 3 / 15
    assert scores["ari"] == pytest.approx((2 - expected_index) / ((6 + 3) / 2 - expected_index))
    # homogeneity: H(C|K) = (2/6) ln 2 (only cluster 2 is mixed), H(C) = ln 2 -> 1 - 1/3
    assert scores["homogeneity"] == pytest.approx(2 / 3)
    # completeness: H(K|C) = entropy(2/3, 1/3) for each class, H(K) = ln 3
    h_k_given_c = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    completeness = 1 - h_k_given_c / math.log(3)
    assert scores["completeness"] == pytest.approx(completeness)
    assert scores["v_measure"] == pytest.approx(2 * (2 / 3) * completeness / (2 / 3 + completeness))
    assert scores["ami"] == pytest.approx(metrics.adjusted_mutual_info_score(true, pred))


def test_agglomerative_recovers_unseen_species_and_scores_match_sklearn():
    data = blobs()
    result = cluster_embeddings(data)  # default: unseen records only, n_clusters = true number of species
    assert len(result.labels) == 30 and not any(r.startswith("S3") for r in result.record_ids)
    assert result.scores["n_clusters"] == 3 and result.settings["n_clusters"] == 3
    species = result.scores["species"]
    assert species["ami"] == pytest.approx(1.0) and species["ari"] == pytest.approx(1.0)
    assert species["ami"] == pytest.approx(metrics.adjusted_mutual_info_score(result.species.astype(str),
                                                                              result.labels))
    # BINs: S2 is split over two BINs, the clusters are not -> homogeneity 1 vs species, < 1 vs BIN
    bins = result.scores["bin_uri"]
    assert bins["n_true"] == 4
    assert bins["ari"] == pytest.approx(metrics.adjusted_rand_score(result.bins.astype(str), result.labels))
    assert bins["completeness"] == pytest.approx(1.0) and bins["homogeneity"] < 1.0
    frame = result.assignments()
    assert list(frame.columns) == ["record_id", "cluster", "species", "bin_uri"]
    assert set(result.scores_table()["target"]) == {"species", "bin_uri"}


def test_hdbscan_noise_and_clustered_scores():
    data = blobs(per_species=12, outliers=3)
    result = cluster_embeddings(data, method="hdbscan", min_cluster_size=5)
    noise = result.labels == -1
    assert result.scores["n_clusters"] == 3
    assert result.scores["unclustered_fraction"] == pytest.approx(noise.mean())
    sp = result.scores["species"]
    labelled = pd.notna(result.species)
    assert sp["ami"] == pytest.approx(metrics.adjusted_mutual_info_score(result.species[labelled].astype(str),
                                                                         result.labels[labelled]))
    keep = labelled & ~noise
    assert sp["ami_clustered"] == pytest.approx(metrics.adjusted_mutual_info_score(
        result.species[keep].astype(str), result.labels[keep]))
    with pytest.raises(ConfigError, match="leave n_clusters unset"):
        cluster_embeddings(data, method="hdbscan", n_clusters=3)


def test_umap_then_cluster():
    pytest.importorskip("umap")
    result = cluster_embeddings(blobs(), umap_dims=3, umap_neighbors=5, seed=0)
    assert result.scores["species"]["ami"] > 0.9 and result.settings["umap_dims"] == 3


def test_guards_and_selection():
    data = blobs()
    with pytest.raises(ConfigError, match=r"30 records needs a .* GB distance matrix"):
        cluster_embeddings(data, max_records=10)
    with pytest.raises(ConfigError, match="expected one of"):
        cluster_embeddings(data, method="kmeans")
    with pytest.raises(ConfigError, match=r"n_clusters=31 must be between 1 and the number of records \(30\)"):
        cluster_embeddings(data, n_clusters=31)
    with pytest.raises(ConfigError, match="HDBSCAN chooses the number of clusters itself"):
        cluster_embeddings(data, method="hdbscan", n_clusters=3)
    seen_only = EmbeddingSet(data.metadata.assign(split="train"), data.vectors)
    with pytest.raises(DataError, match="selection='all'"):
        cluster_embeddings(seen_only)
    assert len(cluster_embeddings(seen_only, selection="all").labels) == 40
    vectors = data.vectors["dna"].copy()
    vectors[0] = np.nan  # S0-0 (a test_unseen_keys record) has no DNA
    result = cluster_embeddings(EmbeddingSet(data.metadata, {"dna": vectors}))
    assert result.scores["n_without_modality"] == 1 and result.scores["n_records"] == 29


def test_cli(tmp_path):
    path = blobs().save(tmp_path / "emb.parquet")
    parser = argparse.ArgumentParser()
    add_cluster_arguments(parser)
    args = parser.parse_args(["--embeddings", str(path), "--out", str(tmp_path / "out")])
    assert run_cluster(args) == 0
    saved = json.loads((tmp_path / "out" / "cluster_scores.json").read_text())
    assert saved["scores"]["species"]["ami"] == pytest.approx(1.0) and saved["config"]["method"] == "agglomerative"
    assert len(pd.read_csv(tmp_path / "out" / "clusters.csv")) == 30
