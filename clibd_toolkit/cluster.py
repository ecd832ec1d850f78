"""Unseen-species clustering of embeddings, scored against species and BINs (BIOSCAN-5M zero-shot protocol).

Protocol (BIOSCAN-5M paper section 5.2, ``zs-ssl-clustering``): embed -> optionally ``umap.UMAP(n_neighbors=30,
n_components=umap_dims, min_dist=0.0, random_state=seed)`` -> ``AgglomerativeClustering(n_clusters=<true number of
species>, linkage="ward")`` (or ``sklearn.cluster.HDBSCAN``) -> scores from :mod:`sklearn.metrics`.

- **Selection** (default ``"unseen"``): records whose species is unseen in training, i.e. whose split is one of
  :data:`UNSEEN_SPLITS` (unseen queries and unseen keys of val and test, BIOSCAN-5M ``unseen_keys``).
  ``"all"`` clusters every record with the modality; a boolean mask selects any subset.
- Records without the chosen modality are left out (counted in ``scores["n_without_modality"]``).
- **Scores** per target (``species``; ``bin_uri`` where any record has one), over the selected records that
  have a label for that target: AMI, ARI, V-measure, homogeneity, completeness, number of true classes.
  HDBSCAN noise (label -1) counts as one more cluster in those scores, as in ``zs-ssl-clustering``; the
  ``*_clustered`` scores repeat them on the clustered records only, and ``unclustered_fraction`` says how many
  were noise.
- **Memory guard**: agglomerative clustering (scipy linkage under scikit-learn) needs an O(n^2) distance matrix,
  8 bytes x n(n-1)/2 (3.6 GB at 30,000 records, 40 GB at 100,000). Above ``max_records`` (default
  :data:`MAX_AGGLOMERATIVE_RECORDS`) :func:`cluster_embeddings` raises a ConfigError instead of exhausting memory;
  use ``method="hdbscan"`` (after UMAP), a subset, or raise ``max_records`` on a big machine.
"""
from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError
from .schema import (
    BIN,
    RECORD_ID,
    SPLIT,
    SPLIT_TEST_UNSEEN,
    SPLIT_TEST_UNSEEN_KEYS,
    SPLIT_UNSEEN_KEYS,
    SPLIT_VAL_UNSEEN,
    SPLIT_VAL_UNSEEN_KEYS,
)
from .store import EmbeddingSet

logger = logging.getLogger(__name__)

UNSEEN_SPLITS: tuple[str, ...] = (SPLIT_VAL_UNSEEN, SPLIT_TEST_UNSEEN, SPLIT_VAL_UNSEEN_KEYS, SPLIT_TEST_UNSEEN_KEYS,
                                  SPLIT_UNSEEN_KEYS)
METHODS: tuple[str, ...] = ("agglomerative", "hdbscan")
MAX_AGGLOMERATIVE_RECORDS = 30_000
TARGETS: tuple[str, ...] = ("species", BIN)


@dataclass
class ClusterResult:
    """Outcome of :func:`cluster_embeddings`.

    Attributes:
        labels: (n,) int cluster of each clustered record (-1 = HDBSCAN noise).
        record_ids: (n,) ids of the clustered records, same order.
        species, bins: (n,) their species and BIN labels (object, NA where missing).
        scores: ``n_records``, ``n_without_modality``, ``n_clusters``, ``unclustered_fraction`` and one dict of
            metrics per target present (``species``, ``bin_uri``).
        settings: the parameters used (JSON-safe).
    """

    labels: np.ndarray
    record_ids: np.ndarray
    species: np.ndarray
    bins: np.ndarray
    scores: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    def assignments(self) -> pd.DataFrame:
        """One row per clustered record: record_id, cluster, species, bin_uri."""
        return pd.DataFrame({RECORD_ID: self.record_ids, "cluster": self.labels, "species": self.species,
                             BIN: self.bins})

    def scores_table(self) -> pd.DataFrame:
        """Tidy scores: columns target, metric, value."""
        rows = [(t, m, v) for t in TARGETS if t in self.scores for m, v in self.scores[t].items()]
        return pd.DataFrame(rows, columns=["target", "metric", "value"])

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``cluster_scores.json`` ({"config", "scores"}) and ``clusters.csv``; returns their paths."""
        from .io import atomic_path, atomic_write_text

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"scores": out / CLUSTER_FILES[0], "clusters": out / CLUSTER_FILES[1]}
        atomic_write_text(paths["scores"], json.dumps({"config": self.settings, "scores": self.scores}, indent=1)
                          + "\n")
        with atomic_path(paths["clusters"]) as tmp:
            self.assignments().to_csv(tmp, index=False)
        return paths


def clustering_scores(true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """AMI, ARI, V-measure, homogeneity and completeness of ``predicted`` against ``true`` (scikit-learn)."""
    from sklearn import metrics

    homogeneity, completeness, v_measure = metrics.homogeneity_completeness_v_measure(true, predicted)
    return {"ami": float(metrics.adjusted_mutual_info_score(true, predicted)),
            "ari": float(metrics.adjusted_rand_score(true, predicted)),
            "v_measure": float(v_measure), "homogeneity": float(homogeneity), "completeness": float(completeness)}


def _select(embeddings: EmbeddingSet, selection: str | np.ndarray) -> np.ndarray:
    if isinstance(selection, str):
        if selection == "all":
            return np.ones(len(embeddings), dtype=bool)
        if selection == "unseen":
            mask = embeddings.metadata[SPLIT].isin(UNSEEN_SPLITS).to_numpy()
            if not mask.any():
                raise DataError(f"no unseen-species records (splits {list(UNSEEN_SPLITS)}); assign splits first or "
                                "pass selection='all'")
            return mask
        raise ConfigError(f"selection {selection!r} is not 'unseen', 'all' or a boolean mask")
    mask = np.asarray(selection)
    if mask.dtype != bool or mask.shape != (len(embeddings),):
        raise ConfigError(f"a selection mask must be boolean of shape ({len(embeddings)},), got {mask.dtype} "
                          f"{mask.shape}")
    return mask


def _reduce(vectors: np.ndarray, umap_dims: int, n_neighbors: int, seed: int) -> np.ndarray:
    try:
        import umap
    except ImportError:  # pragma: no cover - umap-learn is installed in the test environment
        raise ConfigError("umap_dims needs umap-learn; install it with `pip install clibd-toolkit[viz]` or set "
                          "umap_dims=None") from None
    if umap_dims >= len(vectors) - 1:
        raise ConfigError(f"umap_dims={umap_dims} must be smaller than the number of records minus 1 "
                          f"({len(vectors) - 1})")
    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(vectors) - 1), n_components=umap_dims, min_dist=0.0,
                        random_state=seed, n_jobs=1)  # a seeded UMAP runs single-threaded anyway
    return reducer.fit_transform(vectors).astype(np.float32)


def cluster_embeddings(embeddings: EmbeddingSet, *, modality: str = "dna",
                       method: Literal["agglomerative", "hdbscan"] = "agglomerative",
                       selection: str | np.ndarray = "unseen", umap_dims: int | None = None,
                       n_clusters: int | None = None, linkage: str = "ward", min_cluster_size: int = 5,
                       min_samples: int | None = None, umap_neighbors: int = 30, seed: int = 0,
                       max_records: int = MAX_AGGLOMERATIVE_RECORDS) -> ClusterResult:
    """Cluster the selected records' embeddings and score the clusters (see the module docstring).

    Args:
        embeddings: an EmbeddingSet (with a split column for the default selection).
        modality: which vectors to cluster.
        method: ``"agglomerative"`` (needs ``n_clusters``; default the true number of species, as in the
            BIOSCAN-5M protocol) or ``"hdbscan"`` (finds the number itself; ``n_clusters`` must be None).
        selection: ``"unseen"`` (default), ``"all"`` or a boolean mask over the records.
        umap_dims: reduce to this many dimensions with UMAP first (None = cluster the raw embeddings).
        n_clusters: number of agglomerative clusters.
        linkage: agglomerative linkage: ward (default), average, complete, single.
        min_cluster_size, min_samples: HDBSCAN parameters.
        umap_neighbors: UMAP ``n_neighbors`` (30 in the protocol).
        seed: UMAP seed (seeded UMAP runs single-threaded).
        max_records: agglomerative size guard (O(n^2) memory).

    Returns:
        ClusterResult.

    Raises:
        ConfigError: bad parameters, too many records for agglomerative, missing umap-learn.
        DataError: nothing to cluster.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown clustering method {method!r}; expected one of {list(METHODS)}")
    if modality not in embeddings.modalities:
        raise ConfigError(f"the embeddings have no {modality!r} vectors; they have {list(embeddings.modalities)}")
    selected = _select(embeddings, selection)
    has = embeddings.has(modality)
    rows = np.flatnonzero(selected & has)
    n_without = int((selected & ~has).sum())
    if n_without:
        logger.warning("%d selected records lack a %s embedding and are not clustered", n_without, modality)
    if len(rows) < 2:
        raise DataError(f"{len(rows)} selected records have a {modality} embedding; clustering needs at least 2")
    meta = embeddings.metadata.iloc[rows].reset_index(drop=True)
    vectors = embeddings.vectors[modality][rows]
    if umap_dims is not None:
        vectors = _reduce(vectors, umap_dims, umap_neighbors, seed)
    if method == "agglomerative" and n_clusters is None:
        n_clusters = int(meta["species"].nunique(dropna=True))
        if n_clusters < 1:
            raise ConfigError("no selected record has a species label; pass n_clusters")
    labels = _fit_labels(vectors, method, n_clusters=n_clusters, linkage=linkage, min_cluster_size=min_cluster_size,
                         min_samples=min_samples, max_records=max_records)
    scores = _score_clusters(labels, meta, hdbscan=method == "hdbscan", n_without=n_without)
    settings = {"modality": modality, "method": method,
                "selection": selection if isinstance(selection, str) else "mask", "umap_dims": umap_dims,
                "n_clusters": n_clusters, "linkage": linkage if method == "agglomerative" else None,
                "min_cluster_size": min_cluster_size if method == "hdbscan" else None,
                "min_samples": min_samples if method == "hdbscan" else None,
                "umap_neighbors": umap_neighbors if umap_dims else None, "seed": seed}
    return ClusterResult(labels=labels.astype(np.int64), record_ids=meta[RECORD_ID].to_numpy(dtype=object),
                         species=meta["species"].to_numpy(dtype=object), bins=meta[BIN].to_numpy(dtype=object),
                         scores=scores, settings=settings)


def _fit_labels(vectors: np.ndarray, method: str, *, n_clusters: int | None, linkage: str, min_cluster_size: int,
                min_samples: int | None, max_records: int) -> np.ndarray:
    """Cluster labels of ``vectors`` (-1: HDBSCAN noise), after checking the parameters against the data size."""
    from sklearn.cluster import HDBSCAN, AgglomerativeClustering

    n = len(vectors)
    if method == "agglomerative":
        if not 1 <= n_clusters <= n:
            raise ConfigError(f"n_clusters={n_clusters} must be between 1 and the number of records ({n})")
        if n > max_records:
            gigabytes = 8 * n * (n - 1) / 2 / 1e9
            raise ConfigError(f"agglomerative clustering of {n} records needs a {gigabytes:.1f} GB distance "
                              f"matrix (limit max_records={max_records}); use method='hdbscan' with umap_dims=50, "
                              "cluster a subset, or raise max_records on a machine with enough memory")
        return AgglomerativeClustering(n_clusters=n_clusters, linkage=linkage).fit_predict(vectors)
    if n_clusters is not None:
        raise ConfigError("HDBSCAN chooses the number of clusters itself; leave n_clusters unset")
    options = {"copy": True} if "copy" in inspect.signature(HDBSCAN).parameters else {}  # sklearn >= 1.5
    return HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, **options).fit_predict(vectors)


def _score_clusters(labels: np.ndarray, meta: pd.DataFrame, *, hdbscan: bool, n_without: int) -> dict[str, Any]:
    """Cluster counts, and AMI/ARI/V-measure against each target (species, BIN) over its labelled records; for
    HDBSCAN also over the labelled records it did cluster (``*_clustered``)."""
    clustered = labels >= 0
    scores: dict[str, Any] = {"n_records": len(labels), "n_without_modality": n_without,
                              "n_clusters": int(len(np.unique(labels[clustered]))),
                              "unclustered_fraction": float(1 - clustered.mean())}
    for target in TARGETS:
        truth = meta[target]
        labelled = truth.notna().to_numpy()
        if not labelled.any():
            continue
        true = truth[labelled].astype(str).to_numpy()
        entry: dict[str, Any] = {"n_labelled": int(labelled.sum()), "n_true": int(len(np.unique(true))),
                                 **clustering_scores(true, labels[labelled])}
        if hdbscan:
            both = labelled & clustered
            if both.any():
                entry.update({f"{k}_clustered": v for k, v in
                              clustering_scores(truth[both].astype(str).to_numpy(), labels[both]).items()})
        scores[target] = entry
    return scores


# --- output files ---------------------------------------------------------------------------------------------

#: what ``clibd cluster`` writes in its --out folder (a folder holding only these is its own earlier output)
CLUSTER_FILES: tuple[str, ...] = ("cluster_scores.json", "clusters.csv", "data-rejects.csv")
