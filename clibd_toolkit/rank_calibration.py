"""Open-world naming you can trust: per rank, a calibrated probability that the nearest reference's taxon is right.

A query takes the taxonomy of its nearest reference record (top-1, hierarchically consistent). Whether to *report*
that name at rank r is decided by a per-rank model of how often such a name is right, fitted on the reference
itself by leaving out whole taxa **at rank r** (:func:`calibrate_ranks`), so that it learns what "this genus is
absent" looks like at genus, "this family is absent" at family, and so on; the old leave-species-out calibration
learnt only the species case and named a wrong genus for most novel genera.

**Evidence** for rank r (:func:`rank_features`), from the top ``n_neighbours`` neighbours of the query:

- ``similarity``: cosine similarity of the nearest reference;
- ``margin``: that similarity minus the similarity of the first neighbour whose taxon at r differs from the
  nearest one's (the gap to the best competing taxon; the last neighbour's similarity when all agree);
- ``agreement``: the share of the first ``k_support`` neighbours' similarity held by neighbours of the nearest
  one's taxon at r (1.0 = all agree).

**Confidence** at rank r: a logistic regression on the three features (fitted on the simulation below), then an
isotonic regression of correctness on its score, so that the confidence is a *calibrated precision*: among names
reported with confidence c, a fraction c is right, in the simulation. Confidences are made non-increasing from
species up to order (a coarser name is right whenever a finer one is) by taking, at each rank, the maximum of its
own and every finer rank's.

**Decision**: the reported rank is the finest rank whose confidence reaches ``min_precision`` (default 0.95);
finer ranks are left empty ("family known, genus unknown"); ``novel`` = the species is not reported.

**Simulation** (per rank r, repeated ``n_repeats`` times with different seeds, queries capped per situation):

1. *novel at r*: hold out ``holdout_fraction`` of the taxa at r (at least one, never all): all their records are
   queries whose name at r cannot be right;
2. *known at r, novel below*: among the remaining taxa at r that have >= 2 children at the next finer rank, hold
   out ``holdout_fraction`` of those children (for species: nothing finer; skipped);
3. *known species*: among the remaining species with >= 2 records, hold out ``holdout_fraction`` of the records;
4. search every query against the rest; a query is *right at r* when the nearest key's taxon at r is its own.

The three situations get equal total weight in the fit (a prior of one in three novel at r; for species one in
two): the confidence is the precision under that mix, which ``diagnostics`` reports per situation, so that the
precision for a survey of almost only novel species can be read there. A rank with fewer than two taxa in the
reference (e.g. one order) cannot be calibrated by leaving taxa out: its confidence is that of the next finer rank.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .config import Config
from .errors import ConfigError, DataError
from .index import NearestNeighbourIndex
from .schema import MODALITIES, RANKS
from .store import EmbeddingSet

FEATURES: tuple[str, ...] = ("similarity", "margin", "agreement")
SITUATIONS: tuple[str, ...] = ("novel", "novel_below", "known_species")


def rank_features(scores: np.ndarray, codes: np.ndarray, k_support: int) -> np.ndarray:
    """(m, 3) features of one rank from the (m, K) neighbour similarities and (m, K) integer taxon codes at that
    rank (-1 = unlabelled; best first): similarity, margin to the first other taxon, agreement of the first
    ``k_support`` (module docstring)."""
    first = codes[:, :1]
    other = (codes != first) | (codes < 0)
    has_other = other.any(axis=1)
    j = np.where(has_other, other.argmax(axis=1), codes.shape[1] - 1)
    s_other = scores[np.arange(len(scores)), j]
    margin = scores[:, 0] - s_other
    weights = np.clip(scores[:, :k_support], 0.0, None)
    weights = np.where(weights.sum(1, keepdims=True) > 0, weights, 1.0)
    agree = (codes[:, :k_support] == first) & (first >= 0)
    agreement = (weights * agree).sum(1) / weights.sum(1)
    return np.stack([scores[:, 0], margin, agreement], axis=1).astype(np.float64)


@dataclass(frozen=True, kw_only=True)
class RankCalibration(Config):
    """Per-rank confidence models for naming (see the module docstring); saved as JSON beside a reference."""

    kind: ClassVar[str] = "rank_calibration"

    query_modality: str = "dna"
    key_modality: str = "dna"
    min_precision: float = 0.95  # report the finest rank whose calibrated confidence reaches this
    n_neighbours: int = 20  # neighbours searched for the margin feature
    k_support: int = 5  # neighbours of the agreement feature
    holdout_fraction: float = 0.2  # taxa (or records) held out per situation in each draw
    n_repeats: int = 3
    max_queries: int = 3000  # per situation and draw
    seed: int = 0
    #: rank -> {"mean", "scale", "coef": [3], "intercept", "x", "y"} (standardisation, logistic regression,
    #: isotonic breakpoints); None = not
    #: calibratable (fewer than two taxa): the next finer rank's confidence is used
    models: dict[str, Any] = field(default_factory=dict)
    n_reference: int = 0
    reference_checksum: str = ""  # EmbeddingSet.checksum() of the reference: a calibration belongs to one library
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for name in ("query_modality", "key_modality"):
            self._require(getattr(self, name) in MODALITIES, name, f"one of {list(MODALITIES)}")
        self._require(0 < self.min_precision < 1, "min_precision", "a number in (0, 1)")
        self._require(self.n_neighbours >= 2, "n_neighbours", "an integer >= 2")
        self._require(1 <= self.k_support <= self.n_neighbours, "k_support", "an integer in 1..n_neighbours")
        self._require(0 < self.holdout_fraction < 1, "holdout_fraction", "a number in (0, 1)")
        self._require(self.n_repeats >= 1, "n_repeats", "an integer >= 1")
        self._require(self.max_queries >= 10, "max_queries", "an integer >= 10")
        if self.models:
            self._require(set(self.models) == set(RANKS), "models", f"one entry for each of {list(RANKS)}")

    # --- applying it ------------------------------------------------------------------------------------------
    def confidence(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """rank -> (m,) calibrated confidence, non-increasing from species to order (module docstring)."""
        if not self.models:
            raise ConfigError("this rank calibration holds no models; build it with calibrate_ranks(reference, ...)")
        raw: dict[str, np.ndarray | None] = {}
        for rank in RANKS:
            model = self.models[rank]
            if model is None:
                raw[rank] = None
                continue
            raw[rank] = _apply(model, features[rank])
        out: dict[str, np.ndarray] = {}
        running = np.zeros(len(next(iter(features.values()))))
        for rank in reversed(RANKS):
            if raw[rank] is not None:
                running = np.maximum(running, raw[rank])
            out[rank] = running.copy()
        return out

    def check_reference(self, reference: EmbeddingSet) -> None:
        """DataError unless this calibration was made on ``reference`` (same records and vectors, by checksum)."""
        if self.reference_checksum and self.reference_checksum != reference.checksum():
            raise DataError(f"this calibration was made on another reference library ({self.n_reference} records, "
                            f"checksum {self.reference_checksum[:12]}), not on this one ({len(reference)} records, "
                            f"{reference.checksum()[:12]}); calibrate again on this reference (drop --calibration)")


def _draw(meta: pd.DataFrame, rank: str, has_q: np.ndarray, has_k: np.ndarray, fraction: float, cap: int,
          rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """One draw for ``rank``: (key rows, {situation: query rows}); None when the rank has < 2 taxa."""
    labels = meta[rank]
    taxa = labels.dropna().unique()
    if len(taxa) < 2:
        return None
    held = np.zeros(len(meta), dtype=bool)
    novel_taxa = rng.choice(taxa, min(len(taxa) - 1, max(1, round(fraction * len(taxa)))), replace=False)
    novel = labels.isin(set(novel_taxa.tolist())).to_numpy()
    held |= novel
    situations = {"novel": novel}
    level = RANKS.index(rank)
    if level + 1 < len(RANKS):
        child = meta[RANKS[level + 1]]
        below = np.zeros(len(meta), dtype=bool)
        remaining = ~held & labels.notna().to_numpy() & child.notna().to_numpy()
        pairs = pd.DataFrame({"parent": labels[remaining], "child": child[remaining]}).drop_duplicates()
        for _, group in pairs.groupby("parent"):
            if len(group) < 2:
                continue
            n_out = min(len(group) - 1, max(1, round(fraction * len(group))))
            out = rng.choice(group["child"].to_numpy(), n_out, replace=False)
            below |= remaining & child.isin(set(out.tolist())).to_numpy()
        held |= below
        situations["novel_below"] = below
    species = meta["species"]
    known = np.zeros(len(meta), dtype=bool)
    open_rows = np.flatnonzero(~held & species.notna().to_numpy())
    for rows in pd.Series(open_rows).groupby(species.to_numpy()[open_rows]).groups.values():
        rows = open_rows[np.asarray(list(rows))]
        if len(rows) < 2:
            continue
        candidates = rng.permutation(rows[has_q[rows]])
        chosen = candidates[: max(1, round(fraction * len(rows)))]
        if not has_k[np.setdiff1d(rows, chosen)].any():
            continue
        known[chosen] = True
    held |= known
    situations["known_species"] = known
    queries = {}
    for name, mask in situations.items():
        rows = np.flatnonzero(mask & has_q & labels.notna().to_numpy())
        if len(rows) > cap:
            rows = np.sort(rng.choice(rows, cap, replace=False))
        queries[name] = rows
    return np.flatnonzero(has_k & ~held), queries


def _fit(features: np.ndarray, right: np.ndarray, weight: np.ndarray) -> dict[str, Any]:
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    mean = np.average(features, axis=0, weights=weight)
    scale = np.sqrt(np.average((features - mean) ** 2, axis=0, weights=weight))
    scale = np.where(scale > 1e-9, scale, 1.0)  # features on one scale, so the regularisation treats them alike
    if right.all() or not right.any():  # one outcome only: a constant confidence
        value = float(right.mean())
        return {"mean": mean.tolist(), "scale": scale.tolist(), "coef": [0.0] * len(FEATURES), "intercept": 0.0,
                "x": [0.0, 1.0], "y": [value, value]}
    lr = LogisticRegression(C=10.0, max_iter=1000).fit((features - mean) / scale, right, sample_weight=weight)
    z = lr.decision_function((features - mean) / scale)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(z, right.astype(float),
                                                                             sample_weight=weight)
    return {"mean": mean.tolist(), "scale": scale.tolist(), "coef": lr.coef_[0].tolist(),
            "intercept": float(lr.intercept_[0]), "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}


def _apply(model: dict[str, Any], features: np.ndarray) -> np.ndarray:
    """Calibrated confidence of one rank's model for (m, 3) features."""
    z = ((features - np.asarray(model["mean"])) / np.asarray(model["scale"])) @ np.asarray(model["coef"])
    return np.interp(z + model["intercept"], model["x"], model["y"])


def neighbourhood(index: NearestNeighbourIndex, key_meta: pd.DataFrame, queries: np.ndarray, n: int,
                  k_support: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Features per rank of ``queries`` against an index over keys with ``key_meta``; also the similarities and
    neighbour positions."""
    n = min(n, len(key_meta))
    scores, neighbours = index.search(queries, n)
    feats = {}
    for rank in RANKS:
        codes = pd.factorize(key_meta[rank], use_na_sentinel=True)[0][neighbours]
        feats[rank] = rank_features(scores, codes, min(k_support, n))
    return feats, scores, neighbours


def calibrate_ranks(reference: EmbeddingSet, *, query_modality: str, key_modality: str, min_precision: float = 0.95,
                    holdout_fraction: float = 0.2, n_repeats: int = 3, max_queries: int = 3000, n_neighbours: int = 20,
                    k_support: int = 5, seed: int = 0, backend: str = "exact") -> RankCalibration:
    """Fit the per-rank confidence models on ``reference`` by leave-taxon-out simulation (module docstring).

    Raises:
        ConfigError: a modality the reference lacks (calibration simulates queries from the reference itself, so
            it needs both), or bad settings.
        DataError: fewer than two labelled species.
    """
    settings = RankCalibration(query_modality=query_modality, key_modality=key_modality, min_precision=min_precision,
                               holdout_fraction=holdout_fraction, n_repeats=n_repeats, max_queries=max_queries,
                               n_neighbours=n_neighbours, k_support=k_support, seed=seed)
    for modality in (query_modality, key_modality):
        if modality not in reference.modalities:
            raise ConfigError(
                f"calibrating {query_modality} queries against {key_modality} keys simulates queries from the "
                f"reference itself, so the reference needs {modality} embeddings too; it has "
                f"{list(reference.modalities)}. Use a reference with both, or identify without calibration "
                "(clibd identify --no-novelty)")
    meta = reference.metadata
    if meta["species"].nunique(dropna=True) < 2:
        raise DataError("calibration needs a reference with at least 2 labelled species")
    has_q, has_k = reference.has(query_modality), reference.has(key_modality)
    models: dict[str, Any] = {}
    diagnostics: dict[str, Any] = {}
    for rank in RANKS:
        pooled: dict[str, list] = {s: [] for s in SITUATIONS}
        for repeat in range(n_repeats):
            rng = np.random.default_rng([seed, RANKS.index(rank), repeat])
            drawn = _draw(meta, rank, has_q, has_k, holdout_fraction, max_queries, rng)
            if drawn is None:
                break
            key_rows, queries = drawn
            key_meta = meta.iloc[key_rows].reset_index(drop=True)
            index = NearestNeighbourIndex(backend).fit(reference.vectors[key_modality][key_rows])
            for situation, rows in queries.items():
                if not len(rows):
                    continue
                feats, _, neighbours = neighbourhood(index, key_meta, reference.vectors[query_modality][rows],
                                                     n_neighbours, k_support)
                predicted = key_meta[rank].to_numpy(dtype=object)[neighbours[:, 0]]
                right = predicted == meta[rank].to_numpy(dtype=object)[rows]
                pooled[situation].append((feats[rank], right))
        present = [s for s in SITUATIONS if pooled[s]]
        if not present:
            models[rank] = None
            diagnostics[rank] = {"calibrated": False, "reason": f"fewer than 2 taxa at {rank} in the reference"}
            continue
        parts = {s: (np.concatenate([f for f, _ in pooled[s]]), np.concatenate([r for _, r in pooled[s]]))
                 for s in present}
        x = np.concatenate([parts[s][0] for s in present])
        y = np.concatenate([parts[s][1] for s in present])
        tags = np.concatenate([[s] * len(parts[s][1]) for s in present])
        # every situation weighs the same in total (mean weight 1, the scale the regularisation expects)
        w = np.concatenate([np.full(len(parts[s][1]), len(y) / (len(present) * len(parts[s][1]))) for s in present])
        models[rank] = _fit(x, y, w)
        diagnostics[rank] = {"calibrated": True, "n": {s: len(parts[s][1]) for s in present},
                             "right_rate": {s: float(parts[s][1].mean()) for s in present}}
        diagnostics[rank]["_pool"] = (x, y, tags)
    calibration = settings.replace(models=models, n_reference=len(reference), reference_checksum=reference.checksum())
    return calibration.replace(diagnostics=_diagnose(calibration, diagnostics))


def _diagnose(calibration: RankCalibration, diagnostics: dict[str, Any]) -> dict[str, Any]:
    """Per rank and situation, in the simulation: share named at that rank (confidence >= min_precision) and the
    precision of those names; plus the precision-coverage curve (for plots)."""
    out = {}
    for rank, info in diagnostics.items():
        pool = info.pop("_pool", None)
        out[rank] = info
        if pool is None:
            continue
        x, y, tags = pool
        conf = _apply(calibration.models[rank], x)
        named = conf >= calibration.min_precision
        situations = [str(s) for s in np.unique(tags)]
        info["named_share"] = {s: float(named[tags == s].mean()) for s in situations}
        info["precision_of_named"] = {s: (float(y[named & (tags == s)].mean()) if (named & (tags == s)).any()
                                          else None) for s in situations}
        curve = []
        for p in np.round(np.linspace(0.5, 0.995, 34), 3).tolist():
            sel = conf >= p
            curve.append({"min_precision": p, "coverage": float(sel.mean()),
                          "precision": float(y[sel].mean()) if sel.any() else None})
        info["curve"] = curve
    return out


def decide(confidence: dict[str, np.ndarray], min_precision: float) -> np.ndarray:
    """(m,) the finest rank whose confidence reaches ``min_precision`` (object array, NA for none)."""
    out = np.full(len(next(iter(confidence.values()))), pd.NA, dtype=object)
    for rank in RANKS:  # confidences are non-increasing towards species: the accepted ranks form a prefix
        out[confidence[rank] >= min_precision] = rank
    return out


def naming_summary(identified: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Any]:
    """How far names went and how often they were right: ``identified`` (rows of :func:`identify
    <clibd_toolkit.identification.identify>`, or any table with ``identified_rank`` and ``identified_<rank>``) against
    the true labels in ``truth`` (same rows, rank columns).

    Returns:
        ``n``; ``reported_rank`` (share whose finest reported rank is each rank) and ``none``; ``named_at_or_below``
        (share named at that rank or finer); ``named``; ``precision`` (share of the reported names, at their reported
        rank, that equal the truth; None when nothing was named).
    """
    rank = identified["identified_rank"].to_numpy(dtype=object)
    right = np.zeros(len(rank), dtype=bool)
    for r in RANKS:
        sel = np.array([v is not pd.NA and v == r for v in rank], dtype=bool)
        right[sel] = identified[f"identified_{r}"].to_numpy(dtype=object)[sel] == truth[r].to_numpy(dtype=object)[sel]
    named = pd.notna(rank)
    is_rank = {r: np.array([v is not pd.NA and v == r for v in rank], dtype=bool) for r in RANKS}
    return {"n": int(len(rank)), "reported_rank": {r: float(is_rank[r].mean()) if len(rank) else 0.0 for r in RANKS},
            "none": float((~named).mean()) if len(rank) else 0.0,
            "named_at_or_below": {r: float(np.any([is_rank[x] for x in RANKS[RANKS.index(r):]], axis=0).mean())
                                  if len(rank) else 0.0 for r in RANKS},
            "named": float(named.mean()) if len(rank) else 0.0,
            "precision": float(right[named].mean()) if named.any() else None}
