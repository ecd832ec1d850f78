"""How far a result stands above chance, and whether it is better than the last run (the evaluate stage's
baselines for reports and scheduled evaluations).

- :func:`chance_accuracy` gives the accuracy that random retrieval would reach, in the layout of the evaluation
  rows (:func:`clibd_toolkit.evaluate.evaluate_embeddings`), so that a report can show how far above chance a model
  is; :func:`compare_with_chance` and :func:`learning_summary` put the two side by side, and
  :func:`write_learning_summary` writes them (``vs_chance.csv``, ``learning.json``).
- :func:`compare_with_previous` compares an evaluation with an earlier ``metrics.json`` (``comparison.csv``);
  :func:`comparison_counts` counts what changed and :func:`check_regressions` raises on a regression, so that a
  scheduled papermill run exits non-zero.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import ClibdError, ConfigError
from .evaluate import GROUPS, HARMONIC_MEAN, ROW_COLUMNS, EvalConfig, compare_metrics, feature_rows, harmonic_mean
from .io import atomic_path, atomic_write_text
from .splits import key_mask, query_mask

# --- chance level -------------------------------------------------------------------------------------------------


def _p_hit(n_keys: int, n_class: np.ndarray, k: int) -> np.ndarray:
    """P(at least one of k keys drawn without replacement from n_keys is of the class), per class size."""
    miss = np.ones(len(n_class), dtype=np.float64)
    for i in range(min(k, n_keys)):
        miss *= np.clip((n_keys - n_class - i) / (n_keys - i), 0.0, 1.0)
    return 1.0 - miss


def chance_accuracy(embeddings, config=None) -> pd.DataFrame:
    """Expected top-k accuracy of a retrieval that returns keys uniformly at random, for every query/key pair,
    rank, k and split of the CLIBD protocol (same queries, keys and label rules as
    :func:`clibd_toolkit.evaluate.evaluate_embeddings`).

    For a query of class c with n_c of the N usable keys in c, the chance of a top-k hit is
    1 - C(N - n_c, k) / C(N, k); micro averages it over the labelled queries, macro over their classes; the
    harmonic-mean rows combine seen and unseen as the protocol does.

    Args:
        embeddings: the EmbeddingSet that was evaluated.
        config: the :class:`~clibd_toolkit.evaluate.EvalConfig` used (default ``EvalConfig()``).

    Returns:
        DataFrame with the columns of ``EvalResult.rows`` (query, key, split, rank, k, micro, macro, n).
    """
    config = config or EvalConfig()
    meta = embeddings.metadata
    keys = key_mask(meta)
    rows = []
    dims = {m: v.shape[1] for m, v in embeddings.vectors.items()}
    for q_mod, k_mod in config.modality_pairs(embeddings.modalities, dims):
        key_rows = feature_rows(embeddings, k_mod, keys)
        for group in GROUPS:
            q_rows = feature_rows(embeddings, q_mod, query_mask(meta, config.stage, group))
            if len(q_rows) == 0 or len(key_rows) == 0:
                continue
            for rank in config.ranks:
                q_labels = meta[rank].iloc[q_rows].dropna().astype(str)
                counts = meta[rank].iloc[key_rows].dropna().astype(str).value_counts()
                classes = q_labels.value_counts()
                n_class = counts.reindex(classes.index).fillna(0).to_numpy(dtype=np.float64)
                for k in config.ks:
                    p = _p_hit(len(key_rows), n_class, k)
                    n = int(classes.sum())
                    micro = float((p * classes.to_numpy()).sum() / n) if n else math.nan
                    macro = float(p.mean()) if n else math.nan
                    rows.append((q_mod, k_mod, group, rank, k, micro, macro, n))
    out = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    seen = out[out["split"] == "seen"].set_index(["query", "key", "rank", "k"])
    unseen = out[out["split"] == "unseen"].set_index(["query", "key", "rank", "k"])
    seen, unseen = seen.align(unseen, join="inner")
    if len(seen):
        hm = pd.DataFrame({"split": HARMONIC_MEAN,
                           "micro": [harmonic_mean(s, u) for s, u in zip(seen["micro"], unseen["micro"])],
                           "macro": [harmonic_mean(s, u) for s, u in zip(seen["macro"], unseen["macro"])],
                           "n": (seen["n"] + unseen["n"]).astype(int)}, index=seen.index).reset_index()
        out = pd.concat([out, hm[list(ROW_COLUMNS)]], ignore_index=True)
    return out


def compare_with_chance(rows: pd.DataFrame, chance: pd.DataFrame, *, k: int = 1, metric: str = "macro",
                        splits: tuple[str, ...] = ("seen", "unseen")) -> pd.DataFrame:
    """Achieved vs chance accuracy side by side: one row per (query, key, rank, split) with ``achieved``,
    ``chance`` and ``times_chance`` (achieved / chance), for top-``k`` ``metric``."""
    if metric not in ("micro", "macro"):
        raise ConfigError(f"metric {metric!r} is not 'micro' or 'macro'")
    cols = ["query", "key", "split", "rank"]
    a = rows[(rows["k"] == k) & rows["split"].isin(splits)][cols + [metric]].rename(columns={metric: "achieved"})
    c = chance[(chance["k"] == k) & chance["split"].isin(splits)][cols + [metric]].rename(columns={metric: "chance"})
    out = a.merge(c, on=cols, how="left")
    out["times_chance"] = out["achieved"] / out["chance"].where(out["chance"] > 0)
    return out.reset_index(drop=True)


# --- did the model learn? -----------------------------------------------------------------------------------------


def learning_summary(rows: pd.DataFrame, chance: pd.DataFrame, *, rank: str = "species", k: int = 1,
                     metric: str = "macro", split: str = "seen",
                     pairs: tuple[str, ...] = ("image->dna", "dna->image", "image->text", "dna->text")) -> dict[str, Any]:
    """Does the model show real learning? Cross-modal top-``k`` accuracy at ``rank`` next to chance.

    Returns:
        ``{"rank", "k", "metric", "split", "pairs": {pair: {"achieved", "chance", "times_chance"}}, "headline"}``
        where ``headline`` is one sentence such as "species top-1 macro accuracy, seen test queries: image->dna
        41.2% (chance 1.9%), ...". Pairs the model lacks are left out.
    """
    table = compare_with_chance(rows, chance, k=k, metric=metric, splits=(split,))
    table = table[table["rank"] == rank]
    found: dict[str, dict[str, float | None]] = {}
    for r in table.itertuples(index=False):
        pair = f"{r.query}->{r.key}"
        if pair in pairs:
            found[pair] = {"achieved": _num(r.achieved), "chance": _num(r.chance), "times_chance": _num(r.times_chance)}
    parts = [f"{p} {100 * v['achieved']:.1f}% (chance {100 * v['chance']:.1f}%)" for p, v in found.items()
             if v["achieved"] is not None and v["chance"] is not None]
    headline = (f"{rank} top-{k} {metric} accuracy, {split} test queries: " + ", ".join(parts)) if parts else \
        "no cross-modal pair was evaluated"
    return {"rank": rank, "k": k, "metric": metric, "split": split, "pairs": found, "headline": headline}


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def write_learning_summary(rows: pd.DataFrame, chance: pd.DataFrame, out_dir: str | Path, **options: Any) -> dict[str, Any]:
    """Write ``vs_chance.csv`` (every pair, rank and split, top-1 macro) and ``learning.json``
    (:func:`learning_summary`) into ``out_dir``; returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = learning_summary(rows, chance, **options)
    with atomic_path(out / "vs_chance.csv") as tmp:
        compare_with_chance(rows, chance, k=summary["k"], metric=summary["metric"]).to_csv(tmp, index=False)
    atomic_write_text(out / "learning.json", json.dumps(summary, indent=1) + "\n")
    return summary


# --- against the previous run -------------------------------------------------------------------------------------


def compare_with_previous(result, previous_metrics: str | Path, out_dir: str | Path, *,
                          tolerance: float = 0.0) -> pd.DataFrame | None:
    """Compare an evaluation with an earlier ``metrics.json`` and write ``comparison.csv`` to ``out_dir``.

    Args:
        result: the current :class:`~clibd_toolkit.evaluate.EvalResult`.
        previous_metrics: path of the earlier metrics.json; ``""`` = no comparison (returns None).
        tolerance: absolute change up to which a metric is unchanged.

    Returns:
        :func:`clibd_toolkit.evaluate.compare_metrics` rows, or None.

    Raises:
        ConfigError: ``previous_metrics`` does not exist.
    """
    if not str(previous_metrics).strip():
        return None
    path = Path(previous_metrics).expanduser()
    if not path.is_file():
        raise ConfigError(f"PREVIOUS_METRICS {str(previous_metrics)!r} is not a file; give the metrics.json of an "
                          "earlier evaluation, or '' for none")
    comparison = compare_metrics(result, path, tolerance=tolerance)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "comparison.csv") as tmp:
        comparison.to_csv(tmp, index=False)
    return comparison


def comparison_counts(comparison: pd.DataFrame | None) -> dict[str, int]:
    """How many metrics improved, regressed, stayed unchanged, are new or were removed."""
    if comparison is None:
        return {}
    counts = comparison["status"].value_counts()
    return {s: int(counts.get(s, 0)) for s in ("improved", "regressed", "unchanged", "new", "removed")}


def check_regressions(comparison: pd.DataFrame | None, *, fail: bool) -> pd.DataFrame:
    """The regressed rows of a comparison (empty when there is none). With ``fail=True`` and any regression, raise
    :class:`~clibd_toolkit.errors.ClibdError` listing them, so that a scheduled papermill run exits non-zero."""
    if comparison is None:
        return pd.DataFrame(columns=["query", "key", "split", "rank", "k", "metric", "previous", "current", "delta"])
    regressed = comparison[comparison["status"] == "regressed"].sort_values("delta")
    if fail and len(regressed):
        worst = "; ".join(f"{r.query}->{r.key} {r.split} {r.rank} top-{r.k} {r.metric} {100 * r.previous:.1f}% -> "
                          f"{100 * r.current:.1f}%" for r in regressed.head(5).itertuples(index=False))
        raise ClibdError(f"{len(regressed)} metric(s) regressed against the earlier run, e.g. {worst}")
    return regressed.reset_index(drop=True)
