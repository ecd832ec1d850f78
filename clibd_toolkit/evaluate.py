"""The CLIBD evaluation protocol (reference section 5) on an :class:`~clibd_toolkit.store.EmbeddingSet`.

- **Queries**: the ``val_seen`` / ``val_unseen`` records (``stage="val"``) or ``test_seen`` / ``test_unseen``
  (``stage="test"``); **keys**: the single pooled reference set (:func:`clibd_toolkit.splits.key_mask`, CLIBD
  ``all_keys``), shared by seen and unseen queries, so the search is open-set.
- For every modality pair the embeddings have (query modality in image, dna; key modality in image, dna, text;
  text keys are the key records' taxonomy-text embeddings, one per key record as in CLIBD): exact cosine kNN
  (:class:`~clibd_toolkit.index.NearestNeighbourIndex`), ``max(ks)`` neighbours. That is ``pairs="all"``, the
  default; ``"QUERY->KEY"`` strings may also name the other features of CLIBD's ``scripts/inference_and_eval.py``
  (``bioscanclip/util/util.py``: ``get_features_and_label``, ``inference_and_print_result``):

  - ``text`` as a query (each query record's own taxonomy-text embedding);
  - ``image+dna`` (CLIBD ``averaged_feature``): the mean of a record's L2-normalised image and DNA vectors, searched
    by cosine, i.e. re-normalised, as CLIBD's ``make_prediction`` normalises both sides before ``IndexFlatIP``;
  - ``concat`` (``concatenated_feature``): the image and DNA vectors side by side, dimension 2d;
  - ``all`` (``all_key_features``), keys only: the key records' image, DNA and text vectors stacked into one key
    set (up to 3 vectors per record, each with its record's labels); ``n_keys_used`` (coverage) and ``n_keys``
    (per-taxon) then count key vectors.

  Fused features exist only for records that have both image and DNA. ``pairs="official"`` evaluates every pair
  CLIBD computes, in its order: queries image, dna, text, image+dna, concat x keys image, dna, text, image+dna,
  concat, all, leaving out pairs whose dimensions differ (CLIBD skips them: ``concat`` only meets ``concat``) and
  features the embeddings cannot form (``all`` needs all three modalities). With it :func:`mean_top1` is CLIBD's
  checkpoint-selection metric (``scripts/train_cl.py: compute_overall_acc``).
- **Top-k hit** at a rank: the query's label appears among the labels of its first k keys, computed
  independently per rank. At k=1 the prediction is the nearest key's labels, hierarchically consistent.
- **Micro** = hits / queries; **macro** = mean over the ground-truth classes present in that query set of the
  per-class recall. Queries without a label at a rank are left out at that rank (and ``n`` counts the rest); keys
  without a label there never count as a hit.
- **Harmonic mean** H = 2SU / (S + U), 0 when S or U is 0, for micro and macro alike; its ``n`` is
  ``n_seen + n_unseen``.
- Records lacking the query (or key) modality are left out of that pair; :attr:`EvalResult.coverage` counts them.
- A metric with no query to average over (``n == 0``) is NaN in the DataFrames and ``null`` in ``metrics.json``.
- One difference from CLIBD's code: it compares label strings, so a query whose rank is ``not_classified`` hits a
  ``not_classified`` key; here such queries are left out at that rank. CLIBD's own query sets are species-labelled.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

import numpy as np
import pandas as pd

from .config import Config, _suggest
from .errors import ConfigError, DataError
from .index import BACKENDS, NearestNeighbourIndex
from .schema import RANKS
from .splits import key_mask, query_mask
from .store import EmbeddingSet

logger = logging.getLogger(__name__)

QUERY_MODALITIES: tuple[str, ...] = ("image", "dna")  # queries of the default pairs ("all")
KEY_MODALITIES: tuple[str, ...] = ("image", "dna", "text")  # keys of the default pairs
AVERAGED = "image+dna"  # CLIBD averaged_feature: mean of the image and DNA vectors
CONCATENATED = "concat"  # CLIBD concatenated_feature: image and DNA vectors side by side
STACKED_KEYS = "all"  # CLIBD all_key_features: image, DNA and text key vectors stacked (keys only)
#: every feature, in the order of CLIBD's All_TYPE_OF_FEATURES_OF_QUERY / All_TYPE_OF_FEATURES_OF_KEY
QUERY_FEATURES: tuple[str, ...] = ("image", "dna", "text", AVERAGED, CONCATENATED)
KEY_FEATURES: tuple[str, ...] = (*QUERY_FEATURES, STACKED_KEYS)
#: the modalities each feature is built from
FEATURE_MODALITIES: dict[str, tuple[str, ...]] = {
    "image": ("image",), "dna": ("dna",), "text": ("text",), AVERAGED: ("image", "dna"),
    CONCATENATED: ("image", "dna"), STACKED_KEYS: ("image", "dna", "text")}
PAIR_PRESETS: tuple[str, ...] = ("all", "official")
GROUPS: tuple[str, ...] = ("seen", "unseen")
HARMONIC_MEAN = "harmonic_mean"
ROW_COLUMNS: tuple[str, ...] = ("query", "key", "split", "rank", "k", "micro", "macro", "n")
PER_TAXON_COLUMNS: tuple[str, ...] = ("query", "key", "split", "rank", "taxon", "k", "accuracy", "n_queries",
                                      "n_keys")
COVERAGE_COLUMNS: tuple[str, ...] = ("query", "key", "split", "n_queries", "n_queries_used", "n_keys",
                                     "n_keys_used")


def parse_pair(text: str) -> tuple[str, str]:
    """``"image->dna"`` -> ``("image", "dna")``: QUERY in :data:`QUERY_FEATURES`, KEY in :data:`KEY_FEATURES`.

    Raises:
        ConfigError: anything else.
    """
    parts = [p.strip() for p in str(text).split("->")]
    if len(parts) != 2 or parts[0] not in QUERY_FEATURES or parts[1] not in KEY_FEATURES:
        raise ConfigError(f"modality pair {text!r} is not 'QUERY->KEY' with QUERY in {list(QUERY_FEATURES)} and "
                          f"KEY in {list(KEY_FEATURES)}, e.g. 'dna->dna', 'image->text' or 'image+dna->all' "
                          f"({AVERAGED}: mean of image and DNA; {CONCATENATED}: both side by side, only against "
                          f"{CONCATENATED}; {STACKED_KEYS}: image, DNA and text keys stacked)")
    return parts[0], parts[1]


def feature_dim(dims: Mapping[str, int], feature: str) -> int | None:
    """Dimension of ``feature`` given modality -> vector dimension; None when it cannot be formed (a modality is
    missing, or ``image+dna`` / ``all`` over modalities of different dimensions)."""
    parts = [dims.get(m) for m in FEATURE_MODALITIES[feature]]
    if None in parts:
        return None
    if feature == CONCATENATED:
        return parts[0] + parts[1]
    return parts[0] if len(set(parts)) == 1 else None


def feature_rows(embeddings: EmbeddingSet, feature: str, mask: np.ndarray) -> np.ndarray:
    """Record positions (m,) of the ``feature`` vectors of the records selected by ``mask``, in vector order.

    A record has a fused feature when it has every modality it is built from; for ``all`` the positions are those
    of the records with an image, then with DNA, then with text (a record can appear up to 3 times).
    """
    if feature == STACKED_KEYS:
        return np.concatenate([feature_rows(embeddings, m, mask) for m in FEATURE_MODALITIES[feature]])
    usable = np.array(mask, dtype=bool)
    for modality in FEATURE_MODALITIES[feature]:
        usable &= embeddings.has(modality)
    return np.flatnonzero(usable)


def feature_vectors(embeddings: EmbeddingSet, feature: str, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``feature`` vectors of the records selected by ``mask`` (see the module docstring).

    Returns:
        ``(vectors, rows)``: (m, d) float32 (``image+dna`` is (image + dna) / 2, not re-normalised: the index
        normalises; ``concat`` is (m, 2d)) and the record position of each vector (:func:`feature_rows`).
    """
    if feature == STACKED_KEYS:
        parts = [feature_vectors(embeddings, m, mask) for m in FEATURE_MODALITIES[feature]]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    rows = feature_rows(embeddings, feature, mask)
    vectors = embeddings.vectors
    if feature == AVERAGED:
        return (vectors["image"][rows] + vectors["dna"][rows]) / np.float32(2), rows
    if feature == CONCATENATED:
        return np.concatenate([vectors["image"][rows], vectors["dna"][rows]], axis=1), rows
    return vectors[feature][rows], rows


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Config):
    """Settings of :func:`evaluate_embeddings` (the CLIBD protocol)."""

    kind: ClassVar[str] = "eval"

    stage: Literal["val", "test"] = "test"  # val: val_seen/val_unseen queries; test: test_seen/test_unseen
    ks: tuple[int, ...] = (1, 3, 5)  # top-k accuracies reported (CLIBD: 1, 3, 5)
    ranks: tuple[str, ...] = RANKS  # ranks evaluated, coarse to fine
    # "all" (image, dna queries x image, dna, text keys), "official" (every feature pair CLIBD's script computes)
    # or a list of "QUERY->KEY" such as ["dna->dna", "image->text", "image+dna->all"] (names: module docstring)
    pairs: tuple[str, ...] | str = "all"
    index_backend: str = "exact"  # nearest-neighbour backend (exact is the protocol; faiss-flat equals it)
    per_taxon: bool = True  # also compute the per-taxon table

    def validate(self) -> None:
        self._require(len(self.ks) > 0 and all(k >= 1 for k in self.ks) and len(set(self.ks)) == len(self.ks),
                      "ks", "a non-empty list of distinct integers >= 1")
        for rank in self.ranks:
            if rank not in RANKS:
                raise ConfigError(f"`EvalConfig.ranks` has unknown rank {rank!r}; expected a subset of "
                                  f"{list(RANKS)}" + _suggest(rank, RANKS))
        self._require(len(self.ranks) > 0, "ranks", f"a non-empty subset of {list(RANKS)}")
        if isinstance(self.pairs, str):
            self._require(self.pairs in PAIR_PRESETS, "pairs", "'all', 'official' or a list of 'QUERY->KEY' strings")
        else:
            self._require(len(self.pairs) > 0, "pairs", "'all' or a non-empty list of 'QUERY->KEY' strings")
            for pair in self.pairs:
                parse_pair(pair)
        if self.index_backend not in BACKENDS:
            raise ConfigError(f"`EvalConfig.index_backend` got {self.index_backend!r}; expected one of "
                              f"{list(BACKENDS)}" + _suggest(self.index_backend, BACKENDS))

    def modality_pairs(self, available: tuple[str, ...],
                       dims: Mapping[str, int] | None = None) -> list[tuple[str, str]]:
        """The (query, key) feature pairs to evaluate given the modalities the embeddings have.

        Args:
            available: the embeddings' modalities.
            dims: modality -> vector dimension (default: one dimension for all, a shared space). ``"official"``
                leaves out pairs whose feature dimensions differ; an explicit such pair raises ConfigError.
        """
        if self.pairs == "all":
            return [(q, k) for q in QUERY_MODALITIES if q in available for k in KEY_MODALITIES if k in available]
        dims = {m: (dims[m] if dims is not None else 1) for m in available}
        dim = {f: feature_dim(dims, f) for f in KEY_FEATURES}
        if self.pairs == "official":
            return [(q, k) for q in QUERY_FEATURES for k in KEY_FEATURES if dim[q] is not None and dim[q] == dim[k]]
        pairs = [parse_pair(p) for p in self.pairs]
        missing = sorted({m for pair in pairs for f in pair for m in FEATURE_MODALITIES[f] if m not in available})
        if missing:
            raise ConfigError(f"`EvalConfig.pairs` asks for modalities {missing} that the embeddings lack; they "
                              f"have {list(available)}")
        for q, k in pairs:
            if dim[q] is None or dim[k] is None or dim[q] != dim[k]:
                raise ConfigError(f"`EvalConfig.pairs` has {q}->{k}, but {q} vectors have dimension {dim[q]} and {k} "
                                  f"vectors {dim[k]} (modality dimensions {dims}); a pair needs one dimension on both "
                                  f"sides ({CONCATENATED} only against {CONCATENATED})")
        return pairs


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate_embeddings`.

    Attributes:
        rows: one row per (query, key, split, rank, k); columns :data:`ROW_COLUMNS`; split is seen, unseen or
            harmonic_mean.
        per_taxon: accuracy per ground-truth taxon; columns :data:`PER_TAXON_COLUMNS` (``n_keys`` = key records
            of that taxon having the key modality). Empty when ``config.per_taxon`` is False.
        coverage: per (query, key, split): records in the role and how many had the modality; columns
            :data:`COVERAGE_COLUMNS` (``split`` is seen/unseen for queries; ``n_keys*`` repeat per row).
        config: the EvalConfig used.
    """

    rows: pd.DataFrame
    per_taxon: pd.DataFrame
    coverage: pd.DataFrame
    config: EvalConfig


def harmonic_mean(seen: float, unseen: float) -> float:
    """2SU/(S+U); 0 when either is 0; NaN when either is NaN."""
    if math.isnan(seen) or math.isnan(unseen):
        return math.nan
    if seen == 0 or unseen == 0:
        return 0.0
    return 2 * seen * unseen / (seen + unseen)


def topk_hits(query_codes: np.ndarray, neighbour_codes: np.ndarray, k: int) -> np.ndarray:
    """(m,) bool: the query's class code appears among its first ``k`` neighbours' codes (code -1 = no label)."""
    return (neighbour_codes[:, :k] == query_codes[:, None]).any(axis=1) & (query_codes >= 0)


def micro_macro(query_codes: np.ndarray, hits: np.ndarray) -> tuple[float, float, int]:
    """Micro and macro accuracy over the labelled queries (code >= 0), and their number."""
    valid = query_codes >= 0
    n = int(valid.sum())
    if n == 0:
        return math.nan, math.nan, 0
    codes, h = query_codes[valid], hits[valid].astype(np.float64)
    per_class_n = np.bincount(codes)
    present = per_class_n > 0
    per_class_recall = np.bincount(codes, weights=h)[present] / per_class_n[present]
    return float(h.mean()), float(per_class_recall.mean()), n


def _codes(key_labels: pd.Series, query_labels: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shared integer codes (-1 = missing) for key and query labels, plus the code -> label array."""
    codes, uniques = pd.factorize(pd.concat([key_labels, query_labels], ignore_index=True), use_na_sentinel=True)
    return codes[: len(key_labels)], codes[len(key_labels):], np.asarray(uniques, dtype=object)


def evaluate_embeddings(embeddings: EmbeddingSet, config: EvalConfig | None = None, *,
                        progress: bool = False) -> EvalResult:
    """Run the CLIBD protocol (see the module docstring) on embeddings that carry a ``split`` column.

    Args:
        embeddings: records of the key and query splits with their vectors (other splits are ignored).
        config: protocol settings; default ``EvalConfig()`` (test stage, k = 1, 3, 5, all pairs, 4 ranks).
        progress: log and show a progress bar over modality pairs.

    Returns:
        EvalResult with ``rows``, ``per_taxon``, ``coverage`` and ``config``.

    Raises:
        DataError: no key records, no query records for the stage, or no usable modality pair.
        ConfigError: ``max(ks)`` larger than the number of usable keys, or pairs the embeddings lack.

    Example:
        >>> result = evaluate_embeddings(embeddings, EvalConfig(stage="val"))
        >>> print(format_table(result))
    """
    config = config or EvalConfig()
    meta = embeddings.metadata
    keys = key_mask(meta)
    if not keys.any():
        raise DataError("no key records (splits seen_keys / val_unseen_keys / test_unseen_keys / unseen_keys, or "
                        "train records in the BIOSCAN-5M layout); the protocol needs a reference set")
    groups = {g: query_mask(meta, config.stage, g) for g in GROUPS}
    groups = {g: m for g, m in groups.items() if m.any()}
    if not groups:
        raise DataError(f"no {config.stage}_seen or {config.stage}_unseen query records; check the split column "
                        "or evaluate the other stage")
    for g in GROUPS:
        if g not in groups:
            logger.warning("no %s_%s queries: %s rows and the harmonic mean are left out", config.stage, g, g)
    pairs = config.modality_pairs(embeddings.modalities, {m: v.shape[1] for m, v in embeddings.vectors.items()})
    if not pairs:
        raise DataError(f"no modality pair to evaluate: the embeddings have {list(embeddings.modalities)}; queries "
                        f"need one of {list(QUERY_MODALITIES)}, keys one of {list(KEY_MODALITIES)}")
    rows, per_taxon, coverage = [], [], []
    key_cache: dict[str, tuple[np.ndarray, NearestNeighbourIndex | None]] = {}
    iterator = pairs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(pairs, desc="evaluate", unit="pair")
    for q_mod, k_mod in iterator:
        if k_mod not in key_cache:
            key_vectors, key_rows = feature_vectors(embeddings, k_mod, keys)
            index = NearestNeighbourIndex(config.index_backend).fit(key_vectors) if len(key_rows) else None
            key_cache[k_mod] = (key_rows, index)
            del key_vectors
        key_rows, index = key_cache[k_mod]
        for group, mask in groups.items():
            q_vectors, q_rows = feature_vectors(embeddings, q_mod, mask)
            coverage.append((q_mod, k_mod, group, int(mask.sum()), len(q_rows), int(keys.sum()), len(key_rows)))
            if len(q_rows) < mask.sum():
                logger.info("%s->%s %s: %d of %d queries lack a %s embedding and are left out", q_mod, k_mod, group,
                            mask.sum() - len(q_rows), mask.sum(), q_mod)
            if index is None or len(q_rows) == 0:
                rows += [(q_mod, k_mod, group, r, k, math.nan, math.nan, 0) for r in config.ranks for k in config.ks]
                continue
            if max(config.ks) > len(key_rows):
                raise ConfigError(f"k={max(config.ks)} is larger than the number of {k_mod} keys ({len(key_rows)}); "
                                  f"use ks <= {len(key_rows)}")
            _, neighbours = index.search(q_vectors, max(config.ks))
            for rank in config.ranks:
                k_codes, q_codes, names = _codes(meta[rank].iloc[key_rows], meta[rank].iloc[q_rows])
                n_codes = k_codes[neighbours]
                for k in config.ks:
                    hits = topk_hits(q_codes, n_codes, k)
                    micro, macro, n = micro_macro(q_codes, hits)
                    rows.append((q_mod, k_mod, group, rank, k, micro, macro, n))
                    if config.per_taxon:
                        per_taxon += _per_taxon_rows((q_mod, k_mod, group, rank), q_codes, k_codes, names, k, hits)
    rows_df = _add_harmonic_means(pd.DataFrame(rows, columns=list(ROW_COLUMNS)))
    return EvalResult(rows=rows_df, per_taxon=pd.DataFrame(per_taxon, columns=list(PER_TAXON_COLUMNS)),
                      coverage=pd.DataFrame(coverage, columns=list(COVERAGE_COLUMNS)), config=config)


def _per_taxon_rows(prefix: tuple, q_codes: np.ndarray, k_codes: np.ndarray, names: np.ndarray, k: int,
                    hits: np.ndarray) -> list[tuple]:
    valid = q_codes >= 0
    size = len(names)
    n_q = np.bincount(q_codes[valid], minlength=size)
    n_hit = np.bincount(q_codes[valid], weights=hits[valid].astype(np.float64), minlength=size)
    n_k = np.bincount(k_codes[k_codes >= 0], minlength=size)
    return [(*prefix, names[c], k, n_hit[c] / n_q[c], int(n_q[c]), int(n_k[c])) for c in np.flatnonzero(n_q)]


def _add_harmonic_means(rows: pd.DataFrame) -> pd.DataFrame:
    by_group = {g: rows[rows["split"] == g].set_index(["query", "key", "rank", "k"]) for g in GROUPS}
    if by_group["seen"].empty or by_group["unseen"].empty:
        return rows
    seen, unseen = by_group["seen"].align(by_group["unseen"], join="inner")
    hm = pd.DataFrame({
        "split": HARMONIC_MEAN,
        "micro": [harmonic_mean(s, u) for s, u in zip(seen["micro"], unseen["micro"])],
        "macro": [harmonic_mean(s, u) for s, u in zip(seen["macro"], unseen["macro"])],
        "n": (seen["n"] + unseen["n"]).astype(int),
    }, index=seen.index).reset_index()
    out = pd.concat([rows, hm[list(ROW_COLUMNS)]], ignore_index=True)
    # group the rows of one (pair, rank, k) together: seen, unseen, harmonic_mean
    order = {"seen": 0, "unseen": 1, HARMONIC_MEAN: 2}
    out["_pair"] = out.groupby(["query", "key"], sort=False).ngroup()
    out["_rank"] = out["rank"].map({r: i for i, r in enumerate(RANKS)})
    out["_split"] = out["split"].map(order)
    out = out.sort_values(["_pair", "_rank", "k", "_split"], kind="stable")
    return out.drop(columns=["_pair", "_rank", "_split"]).reset_index(drop=True)


def mean_top1(result: EvalResult | pd.DataFrame) -> float:
    """CLIBD checkpoint-selection metric: mean of every top-1 micro and macro accuracy over all query/key pairs,
    seen and unseen (not the harmonic mean), all evaluated ranks. NaN entries (no query) are skipped. CLIBD
    averages over its feature pairs: evaluate with ``EvalConfig(pairs="official")`` for its exact value."""
    rows = result.rows if isinstance(result, EvalResult) else result
    top1 = rows[(rows["k"] == 1) & rows["split"].isin(GROUPS)]
    values = pd.concat([top1["micro"], top1["macro"]]).astype(float).to_numpy()
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else math.nan


# --- output -------------------------------------------------------------------------------------------------------

def _json_number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def metrics_rows(result: EvalResult) -> list[dict[str, Any]]:
    """``rows`` as the list of dicts written to ``metrics.json`` (NaN -> None)."""
    return [{"query": r.query, "key": r.key, "split": r.split, "rank": r.rank, "k": int(r.k),
             "micro": _json_number(r.micro), "macro": _json_number(r.macro), "n": int(r.n)}
            for r in result.rows.itertuples(index=False)]


def write_metrics(result: EvalResult, out_dir: str | Path,
                  config_dict: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``metrics.json`` (``{"config": ..., "rows": [...]}``) and ``per_taxon.csv`` into ``out_dir``.

    Args:
        result: from :func:`evaluate_embeddings`.
        out_dir: output folder (created).
        config_dict: what to store under ``"config"`` (e.g. the model and eval configs of the run); default
            ``result.config.to_json_dict()``.

    Returns:
        ``{"metrics": path, "per_taxon": path}``.
    """
    from .io import atomic_path, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"config": config_dict if config_dict is not None else result.config.to_json_dict(),
               "rows": metrics_rows(result)}
    paths = {"metrics": out / "metrics.json", "per_taxon": out / "per_taxon.csv"}
    atomic_write_text(paths["metrics"], json.dumps(payload, indent=1, default=str, allow_nan=False) + "\n")
    with atomic_path(paths["per_taxon"]) as tmp:
        result.per_taxon.to_csv(tmp, index=False)
    return paths


def format_table(result: EvalResult, k: int = 1) -> str:
    """The paper-style table for top-``k``: one line per rank x modality pair; micro and macro, each seen /
    unseen / H.M., in percent with one decimal ("-" where not computed)."""
    rows = result.rows[result.rows["k"] == k]
    if rows.empty:
        raise ConfigError(f"no rows with k={k}; the evaluation computed ks={list(result.config.ks)}")
    lookup = {(r.rank, r.query, r.key, r.split): (r.micro, r.macro) for r in rows.itertuples(index=False)}
    header = ["rank", "query->key", "micro seen", "micro unseen", "micro H.M.", "macro seen", "macro unseen",
              "macro H.M."]
    lines = []
    pairs = list(dict.fromkeys(zip(rows["query"], rows["key"])))
    for rank in [r for r in RANKS if r in set(rows["rank"])]:
        for q, kk in pairs:
            cells = [rank, f"{q}->{kk}"]
            for i in (0, 1):  # micro, macro
                for split in (*GROUPS, HARMONIC_MEAN):
                    value = lookup.get((rank, q, kk, split), (math.nan, math.nan))[i]
                    cells.append("-" if pd.isna(value) else f"{100 * value:.1f}")
            lines.append(cells)
    widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(len(header))]
    fmt = lambda cells: "| " + " | ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)  # noqa: E731
                                           for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    title = f"Top-{k} accuracy (%), {result.config.stage}: seen / unseen / harmonic mean"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([title, fmt(header), rule, *map(fmt, lines)])


def _as_rows(rows: Any) -> pd.DataFrame:
    if isinstance(rows, EvalResult):
        return rows.rows
    if isinstance(rows, (str, Path)):
        rows = json.loads(Path(rows).read_text())
    if isinstance(rows, dict):
        if "rows" not in rows:
            raise DataError("a metrics mapping needs a 'rows' list (the metrics.json layout)")
        rows = rows["rows"]
    frame = pd.DataFrame(rows)
    missing = [c for c in ROW_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"metric rows lack columns {missing}; expected {list(ROW_COLUMNS)}")
    return frame


def compare_metrics(current_rows: Any, previous_rows: Any, *, tolerance: float = 0.0) -> pd.DataFrame:
    """Compare two evaluations row by row (e.g. this week's scheduled run against last week's).

    Args:
        current_rows, previous_rows: an EvalResult, its ``rows`` DataFrame, the ``rows`` list of a
            ``metrics.json``, the parsed file, or its path.
        tolerance: absolute change up to which a metric counts as unchanged.

    Returns:
        One row per (query, key, split, rank, k, metric) with columns query, key, split, rank, k, metric
        (micro|macro), previous, current, delta (current - previous) and status: improved, regressed,
        unchanged, new (only in current) or removed (only in previous).
    """
    keys = ["query", "key", "split", "rank", "k"]
    long = []
    for frame in (_as_rows(current_rows), _as_rows(previous_rows)):
        melted = frame[keys + ["micro", "macro"]].melt(id_vars=keys, var_name="metric", value_name="value")
        long.append(melted.astype({"value": float}))
    merged = long[0].merge(long[1], on=keys + ["metric"], how="outer", suffixes=("_current", "_previous"),
                           indicator=True)
    out = merged.rename(columns={"value_current": "current", "value_previous": "previous"})
    out["delta"] = out["current"] - out["previous"]
    status = np.where(out["delta"] > tolerance, "improved",
                      np.where(out["delta"] < -tolerance, "regressed", "unchanged"))
    # a metric that only one side has (other side missing or NaN) is new or removed
    only_current = (out["_merge"] == "left_only") | (out["previous"].isna() & out["current"].notna())
    only_previous = (out["_merge"] == "right_only") | (out["current"].isna() & out["previous"].notna())
    status = np.where(only_current, "new", np.where(only_previous, "removed", status))
    out["status"] = status
    return out[keys + ["metric", "previous", "current", "delta", "status"]].reset_index(drop=True)
