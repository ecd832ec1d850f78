"""The decision rule of per-rank naming (:mod:`clibd_toolkit.rank_calibration` fits the confidences): per rank a
bar on the calibrated confidence, fitted so that every simulated kind of query (novel order, family, genus,
species; known species) gets names right at least the target precision, at a lower confidence bound over held-out
taxa (:func:`fit_thresholds`); :func:`decide` applies the bars (a finer name implies the coarser ones), and
:func:`reported_right` / :func:`naming_summary` score reported names against the truth (one definition of "the
reported name is right": correct at the reported rank, e.g. a correct "family X, genus unknown").
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .schema import RANKS


def decide(confidence: dict[str, np.ndarray], thresholds: float | dict[str, float]) -> np.ndarray:
    """(m,) the finest rank whose confidence reaches its threshold (one number for every rank, or rank -> number);
    object array, NA for none. A finer name implies the coarser ones, so a query named at genus is reported at
    order, family and genus even when one of those confidences alone would not pass."""
    if not isinstance(thresholds, dict):
        thresholds = {r: float(thresholds) for r in RANKS}
    out = np.full(len(next(iter(confidence.values()))), pd.NA, dtype=object)
    for rank in RANKS:
        out[np.nan_to_num(confidence[rank], nan=-1.0) >= thresholds[rank]] = rank
    return out


def target_key(min_precision: float) -> str:
    """The text key of a target precision in :attr:`RankCalibration.thresholds` (e.g. ``"0.95"``)."""
    return f"{round(float(min_precision), 4):g}"


#: target precisions every calibration fits decision thresholds for (besides its own ``min_precision``)
TARGETS: tuple[float, ...] = (0.8, 0.85, 0.9, 0.95, 0.97, 0.99)
#: a simulated query group smaller than this does not constrain the thresholds
MIN_GROUP = 30
GROUPS: tuple[str, ...] = tuple(f"novel_{r}" for r in RANKS) + ("known_species",)
_GRID = np.round(np.concatenate([np.linspace(0.5, 0.99, 50), [0.995, 0.999]]), 4)
NEVER = 2.0  # a threshold no confidence reaches


def _finest(conf: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(n,) index of the finest rank whose (n, 4) confidence reaches its threshold; -1 for none."""
    ok = conf >= thresholds[None, :]
    return np.where(ok.any(1), len(RANKS) - 1 - np.argmax(ok[:, ::-1], axis=1), -1)


def group_outcomes(conf: np.ndarray, right: np.ndarray, groups: np.ndarray, thresholds: np.ndarray) -> dict:
    """Per simulated group: ``named`` share, ``precision`` of the reported names at their reported rank (None when
    nothing was named), mean naming ``depth`` (0 = nothing, 1 = named to species) and ``species`` share."""
    finest = _finest(conf, thresholds)
    correct = right[np.arange(len(finest)), np.clip(finest, 0, None)] & (finest >= 0)
    out = {}
    for g in np.unique(groups):
        m = groups == g
        named = finest[m] >= 0
        out[str(g)] = {"n": int(m.sum()), "named": float(named.mean()),
                       "precision": float(correct[m].sum() / named.sum()) if named.any() else None,
                       "depth": float((finest[m] + 1).mean() / len(RANKS)),
                       "species": float((finest[m] == len(RANKS) - 1).mean())}
    return out


def fit_thresholds(conf: np.ndarray, right: np.ndarray, groups: np.ndarray, target: float,
                   floor: dict[str, float] | None = None, clusters: np.ndarray | None = None,
                   z: float = 0.0) -> dict[str, float]:
    """Per-rank thresholds on the (n, 4) confidences of simulated queries such that in every simulated group the
    reported names are right at least ``target`` of the time (novel orders, where no name can be right: at most
    1 - ``target`` of them named at all), naming as deep as possible on average over the groups (coordinate ascent
    over a grid, from the thresholds all equal to ``target``). ``floor``: no threshold below these (the thresholds of
    a looser target), so that a stricter target never names a query deeper than a looser one.

    ``clusters`` (the held-out taxon of each query) and ``z`` > 0 make the test conservative: queries of one taxon
    are not independent (a survey's precision depends on *which* genera are new to the library), so each group's
    precision must reach ``target`` with its lower bound, precision - z * standard error, the standard error of a
    ratio estimated over taxa (clusters) rather than over queries."""
    low = np.array([floor[r] for r in RANKS]) if floor else np.zeros(len(RANKS))
    names, codes = np.unique(groups, return_inverse=True)
    sizes = np.bincount(codes, minlength=len(names))
    rows = np.arange(len(codes))
    checked = sizes >= MIN_GROUP
    is_order = names == f"novel_{RANKS[0]}"
    if clusters is not None and z > 0:
        pairs = pd.factorize(pd.Series(codes.astype(str)) + "\x1f" + pd.Series(clusters).astype(str))[0]
        pair_group = np.zeros(pairs.max() + 1, dtype=np.int64)
        pair_group[pairs] = codes
        pair_size = np.bincount(pairs)
        n_clusters = np.bincount(pair_group, minlength=len(names))
    else:
        pairs = None

    def spread(per_pair: np.ndarray, ratio: np.ndarray, base: np.ndarray, total: np.ndarray) -> np.ndarray:
        """Standard error over clusters of the ratio sum(per_pair) / sum(base) per group."""
        resid = per_pair - ratio[pair_group] * base
        c = np.maximum(n_clusters, 2)
        return np.sqrt(np.bincount(pair_group, weights=resid ** 2, minlength=len(names)) * c / (c - 1)) / np.maximum(
            total, 1)

    def value(t: np.ndarray) -> float:
        finest = _finest(conf, t)
        is_named = finest >= 0
        is_right = right[rows, np.clip(finest, 0, None)] & is_named
        named = np.bincount(codes, weights=is_named, minlength=len(names))
        correct = np.bincount(codes, weights=is_right, minlength=len(names))
        share = named / sizes
        precision = np.where(named > 0, correct / np.maximum(named, 1), 1.0)
        if pairs is not None:
            pn = np.bincount(pairs, weights=is_named)
            pk = np.bincount(pairs, weights=is_right)
            share = share + z * spread(pn, share, pair_size, sizes)
            precision = precision - z * spread(pk, precision, pn, named)
        if np.any(checked & is_order & (share > 1 - target)):
            return -1.0
        if np.any(checked & ~is_order & (named > 0) & (precision < target)):
            return -1.0
        return float(np.mean(np.bincount(codes, weights=finest + 1, minlength=len(names)) / sizes) / len(RANKS))

    t = np.maximum(np.full(len(RANKS), float(target)), low)
    best = value(t)
    if best < 0:
        t, best = np.full(len(RANKS), NEVER), 0.0
    for _ in range(4):
        moved = False
        for j in range(len(RANKS)):
            for v in _GRID[_GRID >= low[j]]:
                trial = t.copy()
                trial[j] = v
                score = value(trial)
                if score > best + 1e-9:
                    best, t, moved = score, trial, True
        if not moved:
            break
    return {r: float(x) for r, x in zip(RANKS, t)}


def reported_right(identified: pd.DataFrame, truth: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(named, right) per row: whether a name was reported, and whether it equals the truth at its reported rank."""
    rank = identified["identified_rank"].to_numpy(dtype=object)
    right = np.zeros(len(rank), dtype=bool)
    for r in RANKS:
        sel = np.array([v is not pd.NA and v == r for v in rank], dtype=bool)
        right[sel] = identified[f"identified_{r}"].to_numpy(dtype=object)[sel] == truth[r].to_numpy(dtype=object)[sel]
    return pd.notna(rank), right


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
    named, right = reported_right(identified, truth)
    is_rank = {r: np.array([v is not pd.NA and v == r for v in rank], dtype=bool) for r in RANKS}
    return {"n": int(len(rank)), "reported_rank": {r: float(is_rank[r].mean()) if len(rank) else 0.0 for r in RANKS},
            "none": float((~named).mean()) if len(rank) else 0.0,
            "named_at_or_below": {r: float(np.any([is_rank[x] for x in RANKS[RANKS.index(r):]], axis=0).mean())
                                  if len(rank) else 0.0 for r in RANKS},
            "named": float(named.mean()) if len(rank) else 0.0,
            "precision": float(right[named].mean()) if named.any() else None}
