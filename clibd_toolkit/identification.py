"""Name specimens against a reference library, flag likely novel species and back off to a supported rank.

Two rules decide how far a name is reported: the default, a per-rank *calibrated precision*
(:mod:`clibd_toolkit.rank_calibration`, leave-taxon-out at every rank, ``min_precision``), which ``clibd identify``
and the notebooks use; and the older similarity thresholds described below (:class:`NoveltyCalibration`,
leave-species-out only), kept for the novelty-detection scores of ``clibd evaluate``.

**Prediction.** Each query takes the labels of its **nearest** reference record (top-1, as in the CLIBD protocol,
so the four ranks are hierarchically consistent). ``similarity`` is that record's cosine similarity and
``novelty_score = 1 - similarity``. ``score_<rank>`` says how much the top-k neighbourhood backs the prediction at
that rank: the share of the k neighbours' similarity (negative similarities count as 0) held by neighbours with
the predicted taxon (1.0 = all k agree).

**Novelty and back-off.** A :class:`NoveltyCalibration` holds one similarity threshold per rank,
non-decreasing from order to species. A query is accepted at a rank when ``similarity >= threshold[rank]``;
``novel`` (the species is likely absent from the reference) is ``similarity < threshold["species"]``, and the
reported taxon is backed off to the finest accepted rank (``identified_rank``; finer ``identified_*`` columns are
left empty; no accepted rank at all leaves every one empty).

**Calibration** (:func:`calibrate_novelty`), a leave-species-out simulation on the reference itself, repeated
``n_repeats`` times with different seeds:

1. Hold out ``holdout_species_fraction`` of the reference's labelled species entirely: their records play
   *novel-species* queries and leave the key set.
2. Of every remaining species with >= 2 records, hold out ``holdout_record_fraction`` of its records (at least
   one, always leaving one key): they play *known-species* queries and leave the key set too (so a record never
   finds itself, nor its own other-modality vector).
3. Search every held-out query against the reduced key set; ``similarity`` = top-1 cosine.
4. For each rank, a query is *known at that rank* when its taxon there occurs among the reduced keys, *novel*
   when it does not (so a held-out species whose genus is still represented is known at genus).
   ``method="target_rate"`` (default) sets the threshold at the ``target_false_novel_rate`` lower quantile of the
   known queries' similarities: at most that fraction of known queries falls below it (is wrongly called novel
   at that rank). ``method="balanced_accuracy"`` instead picks the threshold maximising
   (novel detection rate + known acceptance rate) / 2 (it needs novel queries at that rank; otherwise the rank
   falls back to the target rate).
5. Thresholds are made non-decreasing from order to species by a running minimum from species upwards (a
   coarser rank never demands more similarity than a finer one; this can only lower false-novel rates).

Per-rank counts, raw thresholds, achieved false-novel and detection rates and the AUROC are stored in
``NoveltyCalibration.diagnostics``. Caveat: calibration searches a reduced library (fewer species and records),
so applied to the full library similarities run slightly higher: the false-novel rate there is at most about
the target, and detection slightly lower than in the diagnostics. Thresholds belong to one model, one modality
pair and one kind of reference library; recalibrate when any changes.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

import numpy as np
import pandas as pd

from .config import Config
from .errors import ConfigError, DataError
from .index import NearestNeighbourIndex
from .schema import MODALITIES, RANKS, RECORD_ID, SPLIT
from .store import EmbeddingSet

logger = logging.getLogger(__name__)

CalibrationMethod = Literal["target_rate", "balanced_accuracy"]
SEPARATOR = "|"  # joins the neighbour lists in one CSV cell


@dataclass(frozen=True, kw_only=True)
class NoveltyCalibration(Config):
    """Per-rank similarity thresholds for the novelty flag and back-off (see the module docstring)."""

    kind: ClassVar[str] = "novelty_calibration"

    query_modality: str = "dna"  # modality of the queries it was calibrated for
    key_modality: str = "dna"  # modality of the reference keys
    thresholds: dict[str, float] = field(default_factory=dict)  # rank -> minimum top-1 cosine to accept the rank
    method: CalibrationMethod = "target_rate"  # target_rate | balanced_accuracy
    target_false_novel_rate: float = 0.05  # target share of known queries wrongly called novel, per rank
    holdout_species_fraction: float = 0.2  # species held out entirely to play "novel"
    holdout_record_fraction: float = 0.2  # records of the other species held out to play "known"
    n_repeats: int = 3  # independent hold-out draws pooled together
    seed: int = 0
    n_reference: int = 0  # records in the reference it was calibrated on (informational)
    reference_checksum: str = ""  # EmbeddingSet.checksum() of that reference (informational)
    diagnostics: dict[str, Any] = field(default_factory=dict)  # per rank: counts, rates, raw threshold, AUROC

    def validate(self) -> None:
        self._require(self.query_modality in MODALITIES, "query_modality", f"one of {list(MODALITIES)}")
        self._require(self.key_modality in MODALITIES, "key_modality", f"one of {list(MODALITIES)}")
        self._require(0 < self.target_false_novel_rate < 1, "target_false_novel_rate", "a number in (0, 1)")
        self._require(0 < self.holdout_species_fraction < 1, "holdout_species_fraction", "a number in (0, 1)")
        self._require(0 < self.holdout_record_fraction < 1, "holdout_record_fraction", "a number in (0, 1)")
        self._require(self.n_repeats >= 1, "n_repeats", "an integer >= 1")
        if self.thresholds:
            self._require(set(self.thresholds) == set(RANKS), "thresholds", f"one threshold for each of {list(RANKS)}")
            values = [self.thresholds[r] for r in RANKS]
            self._require(all(isinstance(v, (int, float)) and math.isfinite(v) for v in values), "thresholds",
                          "finite numbers")
            self._require(all(a <= b for a, b in zip(values, values[1:])), "thresholds",
                          "values non-decreasing from order to species (a coarser rank cannot need more similarity)")


def _reference_index(reference: EmbeddingSet, key_modality: str,
                     backend: str) -> tuple[np.ndarray, NearestNeighbourIndex]:
    if key_modality not in reference.modalities:
        raise ConfigError(f"the reference has no {key_modality!r} embeddings; it has {list(reference.modalities)}")
    rows = np.flatnonzero(reference.has(key_modality))
    if len(rows) < len(reference):
        logger.info("%d of %d reference records lack a %s embedding and are not searched", len(reference) - len(rows),
                    len(reference), key_modality)
    if len(rows) == 0:
        raise DataError(f"no reference record has a {key_modality} embedding")
    return rows, NearestNeighbourIndex(backend).fit(reference.vectors[key_modality][rows])


def _rank_support(codes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Share of the neighbours' (non-negative) similarity held by neighbours agreeing with the first one
    (``codes``: (m, k) integer labels, -1 = missing; a missing first label has no support)."""
    weights = np.clip(scores, 0.0, None)
    weights = np.where(weights.sum(1, keepdims=True) > 0, weights, 1.0)
    agree = (codes == codes[:, :1]) & (codes >= 0)
    return (weights * agree).sum(1) / weights.sum(1)


def _check_sequence_evidence(queries: EmbeddingSet, reference: EmbeddingSet, query_modality: str, key_modality: str,
                             calibration: Any) -> None:
    """ConfigError unless the queries' and the keys' DNA vectors (and a rank calibration) carry the same k-mer
    evidence (:mod:`clibd_toolkit.kmers`): joint vectors compare only with joint vectors of the same weight and k."""
    from .kmers import sequence_evidence

    ev_q = sequence_evidence(queries) if query_modality == "dna" else None
    ev_k = sequence_evidence(reference) if key_modality == "dna" else None
    if ev_q != ev_k:
        raise ConfigError(f"the {query_modality} queries carry k-mer evidence {ev_q} but the {key_modality} keys "
                          f"{ev_k}: joint vectors (clibd_toolkit.kmers) compare only with joint vectors of the same "
                          "weight, barcodes against barcodes; add the same evidence to both, or to neither")
    if calibration is not None and calibration.sequence_evidence() != ev_k:
        raise ConfigError(f"the calibration was fitted with k-mer evidence {calibration.sequence_evidence()}, the "
                          f"reference carries {ev_k}; use the same --sequence-weight as the calibration, or "
                          "calibrate again")


def identify(queries: EmbeddingSet, reference: EmbeddingSet, *, query_modality: str, key_modality: str, k: int = 5,
             novelty: Any = None, backend: str = "exact") -> pd.DataFrame:
    """Identify each query against the reference library (see the module docstring for every column).

    Args:
        queries: query embeddings (their taxonomy columns may be empty).
        reference: the reference library (labelled embeddings).
        query_modality, key_modality: e.g. ``"image"`` and ``"dna"``.
        k: neighbours listed and used for ``score_<rank>``.
        novelty: a :class:`~clibd_toolkit.rank_calibration.RankCalibration` (per-rank calibrated naming: adds
            ``confidence_<rank>`` and ``confidence``, the calibrated precision of the reported name; ``novel`` = the
            species is not reported), or the older :class:`NoveltyCalibration` (similarity thresholds); None = no
            novelty flag, no back-off beyond missing reference labels.
        backend: nearest-neighbour backend (:data:`clibd_toolkit.index.BACKENDS`).

    Returns:
        One row per query record (input order): ``record_id``, ``predicted_<rank>`` (nearest record),
        ``similarity``, ``score_<rank>``, ``novelty_score``, ``novel`` (bool; NA without calibration),
        ``identified_rank``, ``identified_<rank>``, ``nearest_id``, ``neighbour_ids``, ``neighbour_species``,
        ``neighbour_scores`` (``|``-joined, best first). Queries without a ``query_modality`` vector get empty
        predictions and ``identified_rank`` NA.

    Raises:
        ConfigError: missing modality, k larger than the reference, calibration for another modality pair.
    """
    from .rank_calibration import RankCalibration, features_per_rank, taxon_centroids

    ranked = isinstance(novelty, RankCalibration)
    if novelty is not None and (novelty.query_modality, novelty.key_modality) != (query_modality, key_modality):
        raise ConfigError(f"the novelty calibration is for {novelty.query_modality}->{novelty.key_modality} "
                          f"queries, not {query_modality}->{key_modality}; calibrate for this pair")
    if novelty is not None and not (novelty.models if ranked else novelty.thresholds):
        raise ConfigError("the calibration holds no thresholds or models; build it with calibrate_ranks(reference, "
                          "...) or calibrate_novelty(reference, ...)")
    if query_modality not in queries.modalities:
        raise ConfigError(f"the queries have no {query_modality!r} embeddings; they have {list(queries.modalities)}")
    _check_sequence_evidence(queries, reference, query_modality, key_modality, novelty if ranked else None)
    key_rows, index = _reference_index(reference, key_modality, backend)
    has = queries.has(query_modality)
    if not has.all():
        logger.warning("%d of %d queries lack a %s embedding; their rows stay empty", (~has).sum(), len(has),
                       query_modality)
    q_rows = np.flatnonzero(has)
    n_search = min(max(k, novelty.n_neighbours), len(key_rows)) if ranked else k
    all_scores, all_neighbours = index.search(queries.vectors[query_modality][q_rows], n_search)
    scores, neighbours = all_scores[:, :k], all_neighbours[:, :k]
    ref_meta = reference.metadata.iloc[key_rows].reset_index(drop=True)
    out = pd.DataFrame({RECORD_ID: queries.metadata[RECORD_ID].to_numpy(dtype=object)})
    n = len(out)

    def column(values: np.ndarray, dtype=object) -> np.ndarray:
        full = np.full(n, pd.NA if dtype is object else np.nan, dtype=dtype)
        full[q_rows] = values
        return full

    similarity = column(scores[:, 0].astype(np.float64), np.float64)
    for rank in RANKS:
        labels = ref_meta[rank].to_numpy(dtype=object)[neighbours]
        out[f"predicted_{rank}"] = column(labels[:, 0])
    out["similarity"] = similarity
    for rank in RANKS:
        codes = pd.factorize(ref_meta[rank], use_na_sentinel=True)[0][neighbours]
        out[f"score_{rank}"] = column(_rank_support(codes, scores).astype(np.float64), np.float64)
    out["novelty_score"] = 1.0 - similarity
    accepted = {r: ~np.isnan(similarity) for r in RANKS}
    if ranked:
        near = min(novelty.n_neighbours, n_search)  # the neighbourhood it was calibrated on, whatever k lists
        keys = reference.vectors[key_modality]
        centroids = taxon_centroids(keys, ref_meta, key_rows)
        sequence_k = novelty.sequence_k if novelty.sequence_weight else None  # joint vectors: two views
        feats = features_per_rank(queries.vectors[query_modality][q_rows], keys, all_scores[:, :near],
                                  all_neighbours[:, :near], novelty.k_support, centroids, sequence_k=sequence_k,
                                  key_rows=key_rows)
        confidence = novelty.confidence(feats)
        for r in RANKS:
            out[f"confidence_{r}"] = column(confidence[r], np.float64)
        finest = novelty.decide({r: out[f"confidence_{r}"].to_numpy(dtype=np.float64) for r in RANKS})
        depth = np.array([-1 if v is pd.NA else RANKS.index(v) for v in finest])
        accepted = {r: depth >= i for i, r in enumerate(RANKS)}  # a finer name implies the coarser ones
        out["novelty_score"] = 1.0 - out["confidence_species"]
        out["novel"] = pd.array(np.where(np.isnan(similarity), None, ~accepted["species"]), dtype="boolean")
    elif novelty is not None:
        accepted = {r: np.nan_to_num(similarity, nan=-np.inf) >= novelty.thresholds[r] for r in RANKS}
        out["novel"] = pd.array(np.where(np.isnan(similarity), None, ~accepted["species"]), dtype="boolean")
    else:
        out["novel"] = pd.array([pd.NA] * n, dtype="boolean")
    identified_rank = np.full(n, pd.NA, dtype=object)
    still = np.ones(n, dtype=bool)
    for rank in RANKS:  # the accepted ranks form a prefix from order; stop at a missing reference label too
        still &= accepted[rank] & out[f"predicted_{rank}"].notna().to_numpy()
        identified_rank[still] = rank
        out[f"identified_{rank}"] = out[f"predicted_{rank}"].where(still, pd.NA)
    out["identified_rank"] = identified_rank
    if ranked:  # the calibrated precision of the reported name
        conf = np.full(n, np.nan)
        for rank in RANKS:
            sel = np.array([v is not pd.NA and v == rank for v in identified_rank], dtype=bool)
            conf[sel] = out[f"confidence_{rank}"].to_numpy(dtype=np.float64)[sel]
        out["confidence"] = conf
    ids = ref_meta[RECORD_ID].to_numpy(dtype=object)[neighbours]
    species = ref_meta["species"].to_numpy(dtype=object)[neighbours]
    out["nearest_id"] = column(ids[:, 0])
    out["neighbour_ids"] = column(np.array([SEPARATOR.join(map(str, r)) for r in ids], dtype=object))
    out["neighbour_species"] = column(np.array([SEPARATOR.join("" if pd.isna(s) else str(s) for s in r)
                                                for r in species], dtype=object))
    out["neighbour_scores"] = column(np.array([SEPARATOR.join(f"{s:.4f}" for s in r) for r in scores], dtype=object))
    return out


# --- calibration ----------------------------------------------------------------------------------------------

def _holdout_draw(meta: pd.DataFrame, has_q: np.ndarray, has_k: np.ndarray, rng: np.random.Generator,
                  species_fraction: float, record_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """One leave-species-out draw: (key rows, query rows) of the reference."""
    species = meta["species"]
    names = species.dropna().unique()
    n_out = min(len(names) - 1, max(1, round(species_fraction * len(names))))
    novel = set(rng.choice(names, n_out, replace=False).tolist())
    held = species.isin(novel).to_numpy().copy()  # pandas 3 hands out read-only arrays
    queries = list(np.flatnonzero(held & has_q))
    for name, rows in species[~held & species.notna().to_numpy()].groupby(species, sort=True).groups.items():
        rows = np.asarray(rows)  # metadata has a RangeIndex: labels are row numbers
        if len(rows) < 2:
            continue
        candidates = rng.permutation(rows[has_q[rows]])
        chosen = list(candidates[: max(1, round(record_fraction * len(rows)))])
        while chosen and not has_k[np.setdiff1d(rows, chosen)].any():
            chosen.pop()
        queries += chosen
        held[chosen] = True
    return np.flatnonzero(has_k & ~held), np.asarray(sorted(queries), dtype=np.int64)


def _threshold(sim: np.ndarray, novel: np.ndarray, method: str, target: float) -> tuple[float, str]:
    known = np.sort(sim[~novel])
    by_rate = float(known[int(math.floor(target * len(known)))])
    if method == "target_rate" or not novel.any():
        return by_rate, "target_rate"
    # flag = sim < t; candidate t: every observed similarity and +inf (flag everything)
    candidates = np.unique(np.concatenate([sim, [np.inf]]))
    novel_sorted = np.sort(sim[novel])
    tpr = np.searchsorted(novel_sorted, candidates, side="left") / len(novel_sorted)
    tnr = 1.0 - np.searchsorted(known, candidates, side="left") / len(known)
    return float(candidates[int(np.argmax(tpr + tnr))]), "balanced_accuracy"


def calibrate_novelty(reference: EmbeddingSet, *, query_modality: str, key_modality: str,
                      method: CalibrationMethod = "target_rate", target_false_novel_rate: float = 0.05,
                      holdout_species_fraction: float = 0.2, holdout_record_fraction: float = 0.2, n_repeats: int = 3,
                      seed: int = 0, backend: str = "exact") -> NoveltyCalibration:
    """Calibrate per-rank novelty thresholds by leave-species-out simulation on ``reference`` (module docstring).

    Returns:
        A :class:`NoveltyCalibration` (save it with ``.save(path)``, load with ``NoveltyCalibration.load``).

    Raises:
        DataError: fewer than 2 labelled species, or no known queries at some rank (reference too small).
        ConfigError: bad fractions/rates or a missing modality.
    """
    from sklearn.metrics import roc_auc_score

    settings = NoveltyCalibration(query_modality=query_modality, key_modality=key_modality, method=method,
                                  target_false_novel_rate=target_false_novel_rate,
                                  holdout_species_fraction=holdout_species_fraction,
                                  holdout_record_fraction=holdout_record_fraction, n_repeats=n_repeats, seed=seed)
    for modality in (query_modality, key_modality):
        if modality not in reference.modalities:
            raise ConfigError(
                f"novelty calibration of {query_modality} queries against {key_modality} keys simulates queries from "
                f"the reference itself, so the reference needs {modality} embeddings too, and it has only "
                f"{list(reference.modalities)}; use a reference with both, or identify without the novelty flag "
                "(clibd identify --no-novelty)")
    meta = reference.metadata
    if meta["species"].nunique(dropna=True) < 2:
        raise DataError("novelty calibration needs a reference with at least 2 labelled species")
    has_q, has_k = reference.has(query_modality), reference.has(key_modality)
    pooled: dict[str, list] = {r: [] for r in RANKS}  # rank -> [(similarity, novel)]
    for repeat in range(n_repeats):
        rng = np.random.default_rng([seed, repeat])
        key_rows, query_rows = _holdout_draw(meta, has_q, has_k, rng, holdout_species_fraction, holdout_record_fraction)
        index = NearestNeighbourIndex(backend).fit(reference.vectors[key_modality][key_rows])
        sim = index.search(reference.vectors[query_modality][query_rows], 1)[0][:, 0].astype(np.float64)
        for rank in RANKS:
            truth = meta[rank].iloc[query_rows]
            labelled = truth.notna().to_numpy()
            novel = ~truth.isin(set(meta[rank].iloc[key_rows].dropna())).to_numpy()
            pooled[rank].append((sim[labelled], novel[labelled]))
    raw, diagnostics = {}, {}
    for rank in RANKS:
        sim = np.concatenate([s for s, _ in pooled[rank]])
        novel = np.concatenate([n for _, n in pooled[rank]])
        if not (~novel).any():
            raise DataError(f"no held-out query is known at {rank} level; the reference is too small to calibrate "
                            "(it needs species with >= 2 records)")
        raw[rank], used = _threshold(sim, novel, method, target_false_novel_rate)
        diagnostics[rank] = {"n_known": int((~novel).sum()), "n_novel": int(novel.sum()), "method": used,
                             "raw_threshold": raw[rank]}
    monotone, running = {}, math.inf
    for rank in reversed(RANKS):
        running = min(running, raw[rank])
        monotone[rank] = running
    thresholds = {rank: monotone[rank] for rank in RANKS}
    for rank in RANKS:
        sim = np.concatenate([s for s, _ in pooled[rank]])
        novel = np.concatenate([n for _, n in pooled[rank]])
        flagged = sim < thresholds[rank]
        diagnostics[rank].update(
            threshold=thresholds[rank], false_novel_rate=float(flagged[~novel].mean()),
            detection_rate=float(flagged[novel].mean()) if novel.any() else None,
            auroc=float(roc_auc_score(novel, 1 - sim)) if 0 < novel.sum() < len(novel) else None)
    return settings.replace(thresholds=thresholds, diagnostics=diagnostics, n_reference=len(reference),
                            reference_checksum=reference.checksum())


def evaluate_novelty(queries: EmbeddingSet, reference: EmbeddingSet, calibration: NoveltyCalibration, *, k: int = 5,
                     backend: str = "exact") -> dict[str, Any]:
    """Score novelty detection and back-off on labelled queries against a reference.

    A query is *truly novel* when its species (labelled) does not occur in the reference. Back-off is correct
    when the taxon reported at ``identified_rank`` equals the query's label there.

    Returns:
        dict with ``n_queries``, ``n_novel``, ``auroc`` (novelty score vs truly novel; None when one class is
        absent), ``false_novel_rate`` (known species flagged novel), ``detection_rate`` (novel species flagged),
        ``balanced_accuracy``, ``backoff_accuracy`` (over queries with an identified rank and a label there) and
        the same for ``_known`` / ``_novel`` queries, ``unidentified_fraction``, ``identified_rank_counts``, and
        ``species_top1_known`` (plain top-1 species accuracy of known queries).
    """
    from sklearn.metrics import roc_auc_score

    table = identify(queries, reference, query_modality=calibration.query_modality,
                     key_modality=calibration.key_modality, k=k, novelty=calibration, backend=backend)
    truth = queries.metadata
    usable = (truth["species"].notna() & table["similarity"].notna()).to_numpy()
    if not usable.any():
        raise DataError("no query has both a species label and a query embedding; novelty cannot be scored")
    ref_species = set(reference.metadata["species"][reference.has(calibration.key_modality)].dropna())
    novel = ~truth["species"].isin(ref_species).to_numpy()
    t, table, novel = truth[usable], table[usable].reset_index(drop=True), novel[usable]
    flagged = table["novel"].to_numpy(dtype=bool)
    rank = table["identified_rank"].to_numpy(dtype=object)
    correct = np.full(len(table), np.nan)
    for r in RANKS:
        sel = (rank == r) & t[r].notna().to_numpy()
        correct[sel] = (table[f"identified_{r}"].to_numpy(dtype=object)[sel] == t[r].to_numpy(dtype=object)[sel])

    def rate(values: np.ndarray) -> float | None:
        values = values[~np.isnan(values)] if values.dtype.kind == "f" else values
        return float(values.mean()) if len(values) else None

    fnr, det = rate(flagged[~novel]), rate(flagged[novel])
    return {
        "n_queries": int(len(table)), "n_novel": int(novel.sum()),
        "auroc": float(roc_auc_score(novel, table["novelty_score"])) if 0 < novel.sum() < len(novel) else None,
        "false_novel_rate": fnr, "detection_rate": det,
        "balanced_accuracy": None if fnr is None or det is None else (det + 1 - fnr) / 2,
        "backoff_accuracy": rate(correct), "backoff_accuracy_known": rate(correct[~novel]),
        "backoff_accuracy_novel": rate(correct[novel]),
        "unidentified_fraction": float(pd.isna(rank).mean()),
        "identified_rank_counts": {r: int((rank == r).sum()) for r in RANKS},
        "species_top1_known": rate((table["predicted_species"].to_numpy(dtype=object)
                                    == t["species"].to_numpy(dtype=object))[~novel]),
    }


def split_reference(embeddings, reference_splits: str | Sequence[str], query_splits: str | Sequence[str]):
    """Divide embeddings into a reference library and queries by split name.

    E.g. ``split_reference(emb, "pretrain,train,seen_keys", "test_seen,test_unseen")``: a library of the seen
    species only, so that the unseen-species queries are truly novel to it (the novelty-detection setting).

    Returns:
        ``(reference, queries)`` EmbeddingSets; the reference keeps only records with a species label.

    Raises:
        ConfigError: an unknown split name. DataError: an empty reference or query set.
    """
    from .errors import DataError
    from .schema import SPLITS

    def names(value: str | Sequence[str]) -> list[str]:
        items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
        bad = [v for v in items if v not in SPLITS]
        if bad:
            raise ConfigError(f"unknown split(s) {bad}; expected names from {list(SPLITS)}")
        return items

    meta = embeddings.metadata
    ref = (meta[SPLIT].isin(names(reference_splits)) & meta["species"].notna()).to_numpy(dtype=bool)
    qry = meta[SPLIT].isin(names(query_splits)).to_numpy(dtype=bool)
    if not ref.any() or not qry.any():
        raise DataError(f"the reference ({int(ref.sum())} labelled records in {reference_splits}) or the queries "
                        f"({int(qry.sum())} records in {query_splits}) are empty; check the splits of the data")
    return embeddings.subset(ref), embeddings.subset(qry)


def is_novel(queries, reference) -> Any:
    """(n,) bool: each query's species is absent from the reference library (unlabelled queries: False)."""
    known = set(reference.metadata["species"].dropna())
    species = queries.metadata["species"]
    return (species.notna() & ~species.isin(known)).to_numpy(dtype=bool)
