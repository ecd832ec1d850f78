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
  one's taxon at r (1.0 = all agree);
- ``views``: for joint vectors (sequence evidence, below), the share of the two single views' nearest neighbours
  (among the same neighbours: by the model's embedding alone, by the k-mer profile alone;
  :func:`clibd_toolkit.kmers.view_leaders`) whose taxon at r is the nearest one's: 0.5 when one view points to
  another taxon, so that a name resting on one view only is trusted less; 1.0 for one view (photos, text, the
  embedding alone). Measured on the BOLD benchmark (three seeded splits, ``cpu`` runs with 5-mer evidence): on
  seed 2 a novel *Culex* species was named genus *Aedes* 379 times at confidence 0.99, the joint nearest a few
  *Aedes albopictus* records while the profile's nearest was *Culex*; of the names given when the views disagreed
  at genus, 2 of 250 were right. As a feature it raised the novel-family precision on every seed; README gives
  the figures. Calibrations saved before it (three coefficients per rank) are applied as they were fitted;
- ``centroid``: the cosine of the query to the centroid of the nearest one's taxon at r (the unit mean of that
  taxon's reference vectors, each species weighing the same: :func:`taxon_centroids`) minus its cosine to the
  nearest centroid of any other taxon at r (:func:`centroid_margins`): negative when the taxon's records are, on
  the whole, farther than another taxon's, as when the nearest records are a few mislabelled or contaminated ones.
  Real libraries hold such records: in the BOLD set four *Aedes albopictus* records sit in the BIN of *Culex
  tritaeniorhynchus* and two *Eupeodes corollae* and one *Syritta pipiens* in that of *Eristalis tenax*, so queries
  of those species, were they new, took a wrong genus from them at high confidence. Measured on the BOLD benchmark
  (three seeds, as for ``views``; README gives the figures), it raised the novel-family names from 40.6 % of the
  queries, right 0.947 of the time, to 56.0 % at 0.957, the novel-genus names from 67.0 % to 77.0 % at about the
  same precision (0.953, 0.949) and the novel-species precision from 0.877 to 0.938. Calibrations saved before it
  (four coefficients) are applied as fitted.

Measured and left out: SINTAX-style bootstrap support (over 50 fixed random eighths of the vector's dimensions,
the share won by the nearest one's taxon at r) as a further feature. On the BOLD benchmark's seed-1 split with a
``cpu`` run and 5-mer evidence it told right from wrong orders of novel-family queries better than the confidence
(AUC 0.83 vs 0.56, probed), but as a feature it raised novel-family precision only from 0.930 to 0.940 and lowered
novel-genus precision from 0.991 to 0.931 (at order only: 0.938, 3 points less coverage).

**Confidence** at rank r: a logistic regression on the five features (fitted on the simulation below), then an
isotonic regression of correctness on its score, so that the confidence is a *calibrated precision*: among names
reported with confidence c, a fraction c is right, in the simulation. Confidences are made non-increasing from
species up to order (a coarser name is right whenever a finer one is) by taking, at each rank, the maximum of its
own and every finer rank's.

**Decision**: the reported rank is the finest rank r whose confidence reaches its threshold t_r (a finer name
implies the coarser ones); finer ranks are left empty ("family known, genus unknown"); ``novel`` = the species is
not reported. The thresholds are fitted on the simulated queries (:func:`fit_thresholds`) so that for **every kind
of query** (novel order, novel family, novel genus, novel species, known species) the reported names are right at
least ``min_precision`` (default 0.95) of the time, counting a correct coarser name as right (a novel genus named
"family Tachinidae" is right); novel orders, where no name can be right, are named at most 1 - ``min_precision``
of the time; within those limits the names go as deep as possible. A survey made only of novel genera therefore
gets names that are right at least ``min_precision`` of the time (in the simulation), which one threshold on a
mixed-population confidence cannot promise. Because the queries of one held-out taxon are not independent (a
survey's precision depends on which genera happen to be new, and one odd genus can carry most wrong names), each
kind of query must reach ``min_precision`` at a lower bound, ``confidence_z`` (1.645) standard errors over the
held-out taxa below its simulated precision. Thresholds are stored for :data:`TARGETS` and the calibration's own
``min_precision``.

**Simulation** (per rank r, repeated ``n_repeats`` times with different seeds, queries capped per situation):

1. *novel at r*: hold out ``holdout_fraction`` of the taxa at r (at least one, never all): all their records are
   queries whose name at r cannot be right;
2. *known at r, novel below*: among the remaining taxa at r that have >= 2 children at the next finer rank, hold
   out ``holdout_fraction`` of those children (for species: nothing finer; skipped);
3. *known species*: among the remaining species with >= 2 records, hold out ``holdout_fraction`` of the records;
4. search every query against the rest; a query is *right at r* when the nearest key's taxon at r is its own.

**Taxa the model never saw.** A model trained on the reference embeds a held-out *trained* taxon more distinctly
than a truly unseen one, so a simulation with trained taxa is optimistic (measured with a ``cpu`` run trained on the
whole reference: novel-genus names 0.975 right in the simulation, 0.75 on genera it never saw). Given the ids the
model trained on (``trained_ids``; ``clibd identify --run`` reads the run's ``train_records.txt``), each rank's
novel taxa are the reference taxa without a trained record, novel-below taxa likewise, and known-species queries
are untrained records of trained species; a rank without untrained taxa (e.g. every order trained on) holds out
trained taxa at that rank as above, its other situations still untrained. ``untrained_taxa`` and
``diagnostics[rank]["untrained_taxa"]`` say which was used.

In the per-rank fit the three situations get equal total weight: the confidence is the precision under that mix,
which ``diagnostics`` reports per situation; ``diagnostics["groups"][target]`` gives the simulated outcome per kind
of query (share named, precision, depth) at each target precision, and ``diagnostics["n_taxa"]`` how many held-out
taxa each kind of query comes from. A bar resting on few taxa (fewer than :data:`FEW_TAXA` novel families, say) is
uncertain beyond its bound: measured on two seeded splits of the BOLD benchmark with runs trained on a 10 % hold-out
(9-10 simulated novel families), the novel-family names were right 0.973 of the time on one split and 0.877 on the
other; the calibration logs a warning then. A rank with fewer than two taxa in the reference (e.g. one order) cannot
be calibrated by leaving taxa out: its confidence is that of the next finer rank.

**Sequence evidence.** Calibrated on a reference whose DNA vectors carry k-mer evidence
(:func:`clibd_toolkit.kmers.with_sequence_evidence`), every similarity above is the mixed one, and the calibration
records the weight and k (``sequence_weight``, ``sequence_k``); :func:`clibd_toolkit.identification.identify`
refuses queries or keys with other evidence.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .config import Config
from .errors import ConfigError, DataError
from .index import NearestNeighbourIndex
from .schema import MODALITIES, RANKS
from .rank_thresholds import (  # noqa: F401  (the decision rule; re-exported for existing imports)
    GROUPS,
    MIN_GROUP,
    NEVER,
    TARGETS,
    decide,
    fit_thresholds,
    group_outcomes,
    naming_summary,
    reported_right,
    target_key,
)
from .store import EmbeddingSet

logger = logging.getLogger(__name__)

FEATURES: tuple[str, ...] = ("similarity", "margin", "agreement", "views", "centroid")
#: models saved before the ``views`` and ``centroid`` features hold this many coefficients (the first ones of
#: FEATURES); they are applied as fitted
LEGACY_FEATURES: tuple[int, ...] = (3, 4)
#: a simulated kind of novel query held out with fewer taxa than this gets a warning: its bar rests on a few taxa
FEW_TAXA = 20
SITUATIONS: tuple[str, ...] = ("novel", "novel_below", "known_species")


def rank_features(scores: np.ndarray, codes: np.ndarray, k_support: int, leaders: np.ndarray | None = None, *,
                  centroid: np.ndarray) -> np.ndarray:
    """(m, 5) features of one rank from the (m, K) neighbour similarities and (m, K) integer taxon codes at that
    rank (-1 = unlabelled; best first): similarity, margin to the first other taxon, agreement of the first
    ``k_support``, views: the share of the single views' nearest neighbours (``leaders``: (m, V) positions in
    the neighbour list, :func:`clibd_toolkit.kmers.view_leaders`) of the nearest one's taxon (1.0 without
    ``leaders``: one view), and ``centroid``: the (m,) centroid margins at that rank (:func:`centroid_margins`)
    (module docstring)."""
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
    if leaders is None:
        views = np.ones(len(scores))
    else:
        views = ((np.take_along_axis(codes, leaders, axis=1) == first) & (first >= 0)).mean(axis=1)
    centroid = np.asarray(centroid, dtype=np.float64)
    if centroid.shape != (len(scores),):
        raise DataError(f"centroid margins of shape {centroid.shape} for {len(scores)} queries; make them with "
                        "centroid_margins")
    return np.stack([scores[:, 0], margin, agreement, views, centroid], axis=1).astype(np.float64)


@dataclass(frozen=True)
class TaxonCentroids:
    """Per rank, the keys' taxon codes (``pd.factorize`` of the rank's column, -1 = unlabelled) and each taxon's
    centroid, a unit vector (:func:`taxon_centroids`)."""

    codes: dict[str, np.ndarray]
    vectors: dict[str, np.ndarray]


def taxon_centroids(vectors: np.ndarray, key_meta: pd.DataFrame, rows: np.ndarray | None = None) -> TaxonCentroids:
    """The centroid of every taxon at every rank among the keys ``vectors[rows]`` (all rows when None;
    ``key_meta`` has one row per key, in that order), with **each species weighing the same**: a species' centroid
    is the unit-length mean of its records' vectors, a genus', family's or order's the unit-length mean of its
    species' centroids (its records without a species label count as one more species). Weighting records instead
    lets the most-sampled species stand for the whole taxon: measured on the BOLD benchmark (seed 0), the Diptera
    centroid was then mostly that of the 10,822 Culicidae records, and a novel fungus-gnat family was named
    Coleoptera 116 times."""
    from scipy import sparse

    vectors = np.asarray(vectors)
    rows = np.arange(len(vectors)) if rows is None else np.asarray(rows)
    if len(rows) != len(key_meta):
        raise DataError(f"{len(rows)} key vectors but {len(key_meta)} key metadata rows; they must match")
    species = pd.factorize(key_meta["species"], use_na_sentinel=True)[0]
    codes, out = {}, {}
    for rank in RANKS:
        code = pd.factorize(key_meta[rank], use_na_sentinel=True)[0]
        labelled = code >= 0
        n_taxa = int(code.max()) + 1 if labelled.any() else 0
        # units: (taxon at this rank, species) pairs, unlabelled species one unit per taxon; unit means first
        pair = code[labelled].astype(np.int64) * (int(species.max()) + 2) + species[labelled] + 1
        _, unit = np.unique(pair, return_inverse=True)
        n_units = int(unit.max()) + 1 if len(unit) else 0
        member = sparse.csr_matrix((np.ones(len(unit), dtype=vectors.dtype), (unit, rows[labelled])),
                                   shape=(n_units, len(vectors)))
        units = _unit_rows(np.asarray(member @ vectors, dtype=np.float64))  # member has the vectors' dtype: no upcast
        unit_taxon = np.zeros(n_units, dtype=np.int64)
        unit_taxon[unit] = code[labelled]
        taxa = sparse.csr_matrix((np.ones(n_units), (unit_taxon, np.arange(n_units))), shape=(n_taxa, n_units))
        codes[rank], out[rank] = code, _unit_rows(np.asarray(taxa @ units)).astype(np.float32)
    return TaxonCentroids(codes, out)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def centroid_margins(queries: np.ndarray, centroids: TaxonCentroids, nearest: np.ndarray,
                     max_cells: int = 2**25) -> dict[str, np.ndarray]:
    """rank -> (m,) the ``centroid`` feature: the cosine of each query to the centroid of its nearest key's taxon
    at that rank minus its cosine to the nearest centroid of any other taxon at that rank (negative: another
    taxon's records are, on the whole, nearer than the nearest record's taxon, as when the nearest records are
    mislabelled or a stray lineage). ``nearest``: (m,) key positions; 0.0 where the nearest key has no label at the
    rank or the rank has one taxon."""
    queries = np.asarray(queries, dtype=np.float32)
    out = {}
    for rank in RANKS:
        cents, own_codes = centroids.vectors[rank], centroids.codes[rank][np.asarray(nearest)]
        margin = np.zeros(len(queries))
        if len(cents) >= 2:
            chunk = max(1, min(len(queries), max_cells // len(cents)))
            for start in range(0, len(queries), chunk):
                sims = queries[start:start + chunk] @ cents.T
                own = own_codes[start:start + chunk]
                at = (np.arange(len(sims)), np.maximum(own, 0))
                own_sim = sims[at].astype(np.float64)
                sims[at] = -np.inf
                margin[start:start + len(sims)] = np.where(own >= 0, own_sim - sims.max(axis=1), 0.0)
        out[rank] = margin
    return out


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
    confidence_z: float = 1.645  # bars hold at precision - z standard errors over held-out taxa (fit_thresholds)
    #: rank -> {"mean", "scale", "coef": [5], "intercept", "x", "y"} (standardisation, logistic regression,
    #: isotonic breakpoints); None = not
    #: calibratable (fewer than two taxa): the next finer rank's confidence is used
    models: dict[str, Any] = field(default_factory=dict)
    #: target precision (as text, e.g. "0.95") -> rank -> confidence a name at that rank needs (the decision rule)
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    #: whether novel taxa were simulated with taxa the model did not train on (False: every taxon was trained on
    #: or no training records were given: an optimistic calibration for a model trained on the reference)
    untrained_taxa: bool = False
    #: the k-mer profile's share of the similarity (:mod:`clibd_toolkit.kmers`; 0 = the model's embedding alone)
    #: and its k, as stamped on the reference it was fitted on; identification needs the same on both sides
    sequence_weight: float = 0.0
    sequence_k: int = 5
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
        self._require(0 <= self.confidence_z <= 5, "confidence_z", "a number in [0, 5]")
        self._require(_number(self.sequence_weight) and 0 <= self.sequence_weight < 1, "sequence_weight",
                      "a number in [0, 1) (0: the model's embedding alone)")
        self._require(isinstance(self.sequence_k, int) and 1 <= self.sequence_k <= 8, "sequence_k",
                      "an integer in 1..8")
        self._require(not self.sequence_weight or (self.query_modality, self.key_modality) == ("dna", "dna"),
                      "sequence_weight", "0 unless barcodes are searched against barcodes (dna -> dna)")
        if self.models:
            self._require(set(self.models) == set(RANKS), "models", f"one entry for each of {list(RANKS)}")
        for rank, model in self.models.items():
            self._require(model is None or _model_ok(model), "models",
                          "for each rank null or {mean, scale (> 0), coef: 5 numbers each (3 or 4 in older files); "
                          "intercept: a number; x (non-decreasing), y (in [0, 1]): equal-length lists of numbers} "
                          "(re-create the calibration)")
        for target, per_rank in self.thresholds.items():
            self._require(isinstance(per_rank, dict) and set(per_rank) == set(RANKS)
                          and all(_number(v) for v in per_rank.values()), "thresholds",
                          f"for each target precision, one number for each of {list(RANKS)}")

    def rank_thresholds(self) -> dict[str, float]:
        """rank -> the confidence a name at that rank needs at this ``min_precision`` (fitted in the simulation)."""
        key = target_key(self.min_precision)
        if key not in self.thresholds:
            raise ConfigError(f"this calibration holds decision thresholds for min_precision "
                              f"{sorted(self.thresholds)}, not {key}; use one of those, or calibrate again with "
                              f"min_precision={key} (clibd identify without --calibration)")
        return self.thresholds[key]

    def decide(self, confidence: dict[str, np.ndarray]) -> np.ndarray:
        """(m,) the finest rank whose confidence reaches its threshold (object array, NA for none)."""
        return decide(confidence, self.rank_thresholds())

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
            width = np.shape(features[rank])[1] if np.ndim(features[rank]) == 2 else None
            if width is None or width < len(model["coef"]):
                raise DataError(f"the {rank} features have {width} columns; this calibration's models take "
                                f"{len(model['coef'])} ({', '.join(FEATURES[:len(model['coef'])])}): make them "
                                "with rank_features")
            raw[rank] = _apply(model, features[rank])
        out: dict[str, np.ndarray] = {}
        running = np.zeros(len(next(iter(features.values()))))
        for rank in reversed(RANKS):
            if raw[rank] is not None:
                running = np.maximum(running, raw[rank])
            out[rank] = running.copy()
        return out

    def sequence_evidence(self) -> dict[str, Any] | None:
        """The ``{"weight", "k"}`` of the sequence evidence the reference carried (None: the embedding alone), as
        :func:`clibd_toolkit.kmers.sequence_evidence` reads it from a set."""
        return {"weight": float(self.sequence_weight), "k": int(self.sequence_k)} if self.sequence_weight else None

    def check_reference(self, reference: EmbeddingSet) -> None:
        """DataError unless this calibration was made on ``reference`` (same records and vectors, by checksum)."""
        if self.reference_checksum and self.reference_checksum != reference.checksum():
            raise DataError(f"this calibration was made on another reference library ({self.n_reference} records, "
                            f"checksum {self.reference_checksum[:12]}), not on this one ({len(reference)} records, "
                            f"{reference.checksum()[:12]}); calibrate again on this reference (drop --calibration)")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _model_ok(model: Any) -> bool:
    """Whether a saved per-rank model has the structure :func:`_apply` relies on."""
    if not isinstance(model, dict):
        return False
    vectors = [model.get(k) for k in ("mean", "scale", "coef")]
    if not all(isinstance(v, list) and all(map(_number, v)) for v in vectors):
        return False
    if len({len(v) for v in vectors}) != 1 or len(vectors[2]) not in (len(FEATURES), *LEGACY_FEATURES):
        return False
    x, y = model.get("x"), model.get("y")
    return (_number(model.get("intercept")) and isinstance(x, list) and isinstance(y, list) and len(x) == len(y) > 0
            and all(map(_number, x)) and all(map(_number, y)) and bool(np.all(np.diff(x) >= 0))
            and all(0.0 <= v <= 1.0 for v in y) and all(v > 0 for v in model["scale"]))


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
    """Calibrated confidence of one rank's model for (m, 4) features (a model saved with the first three only
    uses those)."""
    used = features[:, : len(model["coef"])]
    z = ((used - np.asarray(model["mean"])) / np.asarray(model["scale"])) @ np.asarray(model["coef"])
    return np.interp(z + model["intercept"], model["x"], model["y"])


def neighbourhood(index: NearestNeighbourIndex, key_meta: pd.DataFrame, queries: np.ndarray, n: int,
                  k_support: int, keys: np.ndarray, centroids: TaxonCentroids,
                  sequence_k: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """:func:`features_per_rank` of ``queries`` against an index over ``keys`` (the vectors it holds) with
    ``key_meta`` and their ``centroids``, searching the top ``n``; also the similarities and neighbour positions."""
    scores, neighbours = index.search(queries, min(n, len(key_meta)))
    feats = features_per_rank(queries, keys, scores, neighbours, k_support, centroids, sequence_k=sequence_k)
    return feats, scores, neighbours


def features_per_rank(queries: np.ndarray, keys: np.ndarray, scores: np.ndarray, neighbours: np.ndarray,
                      k_support: int, centroids: TaxonCentroids, *, sequence_k: int | None = None,
                      key_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """rank -> :func:`rank_features` of ``queries`` from their (m, K) neighbour similarities and positions among
    the keys that ``centroids`` were made of (:func:`taxon_centroids`; its codes give each neighbour's taxon).
    ``keys[key_rows]`` are those keys' vectors (``key_rows`` None: ``keys`` itself); ``sequence_k``: joint vectors
    of that k, whose two views give the ``views`` feature (without it it is 1.0)."""
    leaders = None
    if sequence_k is not None:
        from .kmers import view_leaders

        leaders = view_leaders(queries, keys, neighbours if key_rows is None else key_rows[neighbours], sequence_k)
    margins = centroid_margins(queries, centroids, neighbours[:, 0])
    return {rank: rank_features(scores, centroids.codes[rank][neighbours], min(k_support, neighbours.shape[1]),
                                leaders, centroid=margins[rank]) for rank in RANKS}


def _draw_untrained(meta: pd.DataFrame, rank: str, has_q: np.ndarray, has_k: np.ndarray, untrained: np.ndarray,
                    fraction: float, cap: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """Like :func:`_draw`, with the taxa the model never trained on: every taxon at ``rank`` without a trained
    record is novel; below, every such child taxon of a trained parent; known species: the untrained records of
    trained species. A rank without untrained taxa (e.g. every order trained on) holds out ``fraction`` of its
    trained taxa as the novel ones, the other situations still untrained. None when ``rank`` has fewer than two
    taxa or only untrained ones."""
    labels = meta[rank]
    present = labels.notna().to_numpy()
    trained_taxa = set(labels[~untrained & present].tolist())
    taxa = labels.dropna().unique()
    novel_taxa = [t for t in taxa if t not in trained_taxa]
    if len(taxa) < 2 or len(novel_taxa) == len(taxa):
        return None
    if not novel_taxa:  # e.g. every order trained on: trained taxa play the novel ones (optimistic), the rest not
        novel_taxa = list(rng.choice(taxa, min(len(taxa) - 1, max(1, round(fraction * len(taxa)))), replace=False))
    novel = labels.isin(set(novel_taxa)).to_numpy()
    held = novel.copy()
    situations = {"novel": novel}
    level = RANKS.index(rank)
    if level + 1 < len(RANKS):
        child = meta[RANKS[level + 1]]
        trained_children = set(child[~untrained & child.notna().to_numpy()].tolist())
        below = ~held & present & child.notna().to_numpy() & ~child.isin(trained_children).to_numpy()
        held |= below
        situations["novel_below"] = below
    species = meta["species"]
    trained_species = set(species[~untrained & species.notna().to_numpy()].tolist())
    known = ~held & untrained & species.isin(trained_species).to_numpy()
    held |= known
    situations["known_species"] = known
    queries = {}
    for name, mask in situations.items():
        rows = np.flatnonzero(mask & has_q & present)
        if len(rows) > cap:
            rows = np.sort(rng.choice(rows, cap, replace=False))
        queries[name] = rows
    return np.flatnonzero(has_k & ~held), queries


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise a == b for label arrays that may hold NA (NA equals nothing, not even NA)."""
    codes, _ = pd.factorize(np.concatenate([a, b]), use_na_sentinel=True)
    ca, cb = codes[: len(a)], codes[len(a):]
    return (ca == cb) & (ca >= 0)


def calibrate_ranks(reference: EmbeddingSet, *, query_modality: str, key_modality: str, min_precision: float = 0.95,
                    holdout_fraction: float = 0.2, n_repeats: int = 3, max_queries: int = 3000, n_neighbours: int = 20,
                    k_support: int = 5, seed: int = 0, backend: str = "exact",
                    trained_ids=None, confidence_z: float = 1.645) -> RankCalibration:
    """Fit the per-rank confidence models and decision thresholds on ``reference`` by leave-taxon-out simulation
    (module docstring).

    ``trained_ids``: record ids the model was trained on (a run's ``train_records.txt``). When the reference holds
    taxa the model never trained on, those are the simulated novel taxa (a model trained on a taxon embeds it
    more distinctly than an unseen one, so simulating novelty with trained taxa is optimistic); ranks without such
    taxa fall back to random hold-outs, and ``untrained_taxa`` says whether any rank used them.

    Raises:
        ConfigError: a modality the reference lacks (calibration simulates queries from the reference itself, so
            it needs both), or bad settings.
        DataError: fewer than two labelled species.
    """
    settings = RankCalibration(query_modality=query_modality, key_modality=key_modality, min_precision=min_precision,
                               holdout_fraction=holdout_fraction, n_repeats=n_repeats, max_queries=max_queries,
                               n_neighbours=n_neighbours, k_support=k_support, seed=seed, confidence_z=confidence_z)
    for modality in (query_modality, key_modality):
        if modality not in reference.modalities:
            raise ConfigError(
                f"calibrating {query_modality} queries against {key_modality} keys simulates queries from the "
                f"reference itself, so the reference needs {modality} embeddings too; it has "
                f"{list(reference.modalities)}. Use a reference with both, or identify without calibration "
                "(clibd identify --no-novelty)")
    from .kmers import sequence_evidence

    evidence = sequence_evidence(reference)
    if evidence and (query_modality, key_modality) != ("dna", "dna"):
        raise ConfigError(f"this reference's DNA vectors carry k-mer evidence ({evidence}), which only barcode "
                          f"queries against barcode keys can use, not {query_modality} -> {key_modality}; calibrate "
                          "on the model's own embeddings")
    if evidence:
        settings = settings.replace(sequence_weight=float(evidence["weight"]), sequence_k=int(evidence["k"]))
    meta = reference.metadata
    if meta["species"].nunique(dropna=True) < 2:
        raise DataError("calibration needs a reference with at least 2 labelled species")
    has_q, has_k = reference.has(query_modality), reference.has(key_modality)
    untrained = None
    if trained_ids is not None:
        untrained = ~meta["record_id"].astype(str).isin(set(map(str, trained_ids))).to_numpy()
        if not untrained.any() or untrained.all():
            untrained = None
    truth = {r: meta[r].to_numpy(dtype=object) for r in RANKS}
    models: dict[str, Any] = {}
    diagnostics: dict[str, Any] = {}
    # (group, features per rank, right (m, 4), the held-out taxon of each query: the cluster it belongs to)
    simulated: list[tuple[str, dict[str, np.ndarray], np.ndarray, np.ndarray]] = []
    any_untrained = False
    for rank in RANKS:
        level = RANKS.index(rank)
        pooled: dict[str, list] = {s: [] for s in SITUATIONS}
        used_untrained = novel_untrained = False
        for repeat in range(n_repeats):
            rng = np.random.default_rng([seed, level, repeat])
            drawn = (_draw_untrained(meta, rank, has_q, has_k, untrained, holdout_fraction, max_queries, rng)
                     if untrained is not None else None)
            used_untrained = drawn is not None
            if drawn is None:
                drawn = _draw(meta, rank, has_q, has_k, holdout_fraction, max_queries, rng)
            if drawn is None:
                break
            key_rows, queries = drawn
            # whether this rank's novel taxa were ones the model never saw (not a fallback hold-out of trained ones)
            novel_untrained = bool(untrained is not None and len(queries["novel"])
                                   and untrained[queries["novel"]].all())
            key_meta = meta.iloc[key_rows].reset_index(drop=True)
            keys = reference.vectors[key_modality][key_rows]
            index = NearestNeighbourIndex(backend).fit(keys)
            centroids = taxon_centroids(keys, key_meta)
            for situation, rows in queries.items():
                if not len(rows):
                    continue
                feats, _, neighbours = neighbourhood(index, key_meta, reference.vectors[query_modality][rows],
                                                     n_neighbours, k_support, keys, centroids,
                                                     sequence_k=int(evidence["k"]) if evidence else None)
                right = np.stack([_same(key_meta[r].to_numpy(dtype=object)[neighbours[:, 0]], truth[r][rows])
                                  for r in RANKS], axis=1)
                pooled[situation].append((feats[rank], right[:, level]))
                group = {"novel": f"novel_{rank}", "novel_below": f"novel_{RANKS[min(level + 1, len(RANKS) - 1)]}",
                         "known_species": "known_species"}[situation]
                cluster_rank = "species" if group == "known_species" else group[len("novel_"):]
                simulated.append((group, feats, right, truth[cluster_rank][rows]))
        any_untrained |= used_untrained
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
        diagnostics[rank] = {"calibrated": True, "untrained_taxa": used_untrained, "novel_untrained": novel_untrained,
                             "n": {s: len(parts[s][1]) for s in present},
                             "right_rate": {s: float(parts[s][1].mean()) for s in present}}
        diagnostics[rank]["_pool"] = (x, y, tags)
    calibration = settings.replace(models=models, untrained_taxa=any_untrained, n_reference=len(reference),
                                   reference_checksum=reference.checksum())
    conf = np.concatenate([np.stack([c[r] for r in RANKS], axis=1)
                           for c in (calibration.confidence(f) for _, f, _, _ in simulated)])
    right = np.concatenate([r for _, _, r, _ in simulated])
    groups = np.concatenate([[g] * len(r) for g, _, r, _ in simulated])
    clusters = np.concatenate([c for _, _, _, c in simulated]).astype(object)
    thresholds: dict[str, dict[str, float]] = {}
    floor = None
    for target in sorted({*TARGETS, float(min_precision)}):  # looser first: each target's thresholds floor the next
        floor = thresholds[target_key(target)] = fit_thresholds(conf, right, groups, target, floor,
                                                                clusters=clusters, z=confidence_z)
    calibration = calibration.replace(thresholds=thresholds)
    diagnostics["groups"] = {key: group_outcomes(conf, right, groups, np.array([t[r] for r in RANKS]))
                             for key, t in thresholds.items()}
    diagnostics["n_taxa"] = _taxa_per_group(groups, clusters)
    few = {g: n for g, n in diagnostics["n_taxa"].items()
           if g != "known_species" and n < FEW_TAXA and (groups == g).sum() >= MIN_GROUP}
    if few:
        untrained_groups = [g for g in few if diagnostics.get(g[len("novel_"):], {}).get("novel_untrained")]
        advice = []
        if untrained_groups:
            advice.append(f"For {', '.join(untrained_groups)} these are the reference taxa the model did not train "
                          "on: train on fewer of them (e.g. benchmarks/open_world.py --training-holdout).")
        if set(few) - set(untrained_groups):
            advice.append(f"For {', '.join(g for g in few if g not in untrained_groups)} the reference has few "
                          "such taxa to hold out (a larger reference, or a larger holdout_fraction, gives more).")
        logger.warning("the naming bars rest on few held-out taxa (%s): how often names of such new taxa are right "
                       "is uncertain beyond the simulation's bound. %s",
                       ", ".join(f"{g}: {n}" for g, n in few.items()), " ".join(advice))
    return calibration.replace(diagnostics=_diagnose(calibration, diagnostics))


def _taxa_per_group(groups: np.ndarray, clusters: np.ndarray) -> dict[str, int]:
    """Simulated kind of query -> the number of distinct held-out taxa its queries come from."""
    frame = pd.DataFrame({"group": groups, "taxon": pd.Series(clusters, dtype=object).astype(str).to_numpy()})
    return {str(g): int(n) for g, n in frame.groupby("group")["taxon"].nunique().items()}


def _diagnose(calibration: RankCalibration, diagnostics: dict[str, Any]) -> dict[str, Any]:
    """Per rank and situation, in the simulation: share named at that rank (confidence >= min_precision) and the
    precision of those names; plus the precision-coverage curve (for plots)."""
    out = {}
    for rank, info in diagnostics.items():
        if rank not in RANKS:
            out[rank] = info
            continue
        pool = info.pop("_pool", None)
        out[rank] = info
        if pool is None:
            continue
        x, y, tags = pool
        conf = _apply(calibration.models[rank], x)
        named = conf >= calibration.rank_thresholds()[rank]
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
