"""Unseen species and identification: cluster comparisons, novelty ROC, a query's neighbours."""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError
from ..schema import BIN, RANKS, RECORD_ID
from ._common import UNLABELLED, _custom, _data_uri, _go, _label, _missing, _palette
from .latent import _check_projection, image_thumbnails

log = logging.getLogger(__name__)

# --- unseen species ---------------------------------------------------------------------------------------------


def plot_cluster_comparison(projection: pd.DataFrame, assignments: pd.DataFrame, *, title: str | None = None,
                            marker_size: float = 6):
    """Side by side: the unseen-species records in 2-D coloured by their cluster (left) and by their true species
    (right). Agreement of the two colourings = clusters that recover species.

    Args:
        projection: a :func:`umap_project` table of the clustered modality (one row per record).
        assignments: ``ClusterResult.assignments()`` (record_id, cluster, species, bin_uri).
    """
    go = _go()
    from plotly.subplots import make_subplots

    _check_projection(projection)
    merged = projection.drop(columns=["species", BIN]).merge(assignments, on=RECORD_ID, how="inner")
    if merged.empty:
        raise DataError("no clustered record appears in the projection; project the same records that were clustered")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("clusters", "true species"), horizontal_spacing=0.04)
    for col, field, name in ((1, "cluster", "cluster"), (2, "species", "species")):
        values = merged[field].map(lambda v: UNLABELLED if pd.isna(v) else ("noise" if v == -1 else str(v)))
        cats = values.value_counts().index.tolist()
        colour = dict(zip(cats, _palette(len(cats))))
        colour.update({UNLABELLED: "#b0b0b0", "noise": "#b0b0b0"})
        fig.add_trace(go.Scattergl(
            x=merged["x"].to_numpy(np.float32), y=merged["y"].to_numpy(np.float32), mode="markers", showlegend=False,
            marker=dict(color=values.map(colour).tolist(), size=marker_size, opacity=0.85),
            customdata=_custom(merged[RECORD_ID].astype(str), merged["cluster"].astype(str),
                               merged["species"].map(_label), merged[BIN].map(_label)),
            hovertemplate="record %{customdata[0]}<br>cluster %{customdata[1]}<br>species %{customdata[2]}<br>"
                          "BIN %{customdata[3]}<extra>" + name + "</extra>"), row=1, col=col)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(title=title or f"Unseen species: {merged['cluster'].nunique()} clusters vs "
                      f"{merged['species'].nunique()} true species ({len(merged)} records)", height=520,
                      template="plotly_white")
    return fig


def plot_cluster_scores(scores: Mapping[str, Any], *, metrics: Sequence[str] = ("ami", "ari", "v_measure"),
                        title: str | None = None):
    """AMI, ARI and V-measure of a clustering against species and BINs (``ClusterResult.scores``)."""
    go = _go()
    targets = [t for t in ("species", BIN) if t in scores]
    if not targets:
        raise DataError("the cluster scores have no target (species or bin_uri) to show")
    fig = go.Figure()
    for target, colour in zip(targets, ("#1f77b4", "#ff7f0e")):
        fig.add_trace(go.Bar(x=[m.upper().replace("_", "-") for m in metrics],
                             y=[scores[target][m] for m in metrics],
                             name=f"vs {target} ({scores[target]['n_true']} classes)", marker_color=colour,
                             hovertemplate="%{x}: %{y:.3f}<extra>" + target + "</extra>"))
    fig.update_layout(title=title or f"Clustering of unseen species: {scores.get('n_clusters', '?')} clusters, "
                      f"{scores.get('n_records', '?')} records", yaxis=dict(title="score", range=[min(0, -0.05), 1]),
                      barmode="group", height=420, template="plotly_white")
    return fig


def plot_novelty_roc(is_novel: Sequence[bool], novelty_score: Sequence[float], *, threshold: float | None = None,
                     title: str | None = None):
    """ROC curve of a novelty score (higher = more likely a species missing from the reference).

    Args:
        is_novel: truth per query (its species is absent from the reference library).
        novelty_score: ``identify(...)["novelty_score"]`` per query.
        threshold: the calibrated species threshold on *similarity*; its operating point is marked
            (novel when ``novelty_score > 1 - threshold``).
    """
    go = _go()
    from sklearn.metrics import roc_auc_score, roc_curve

    truth = np.asarray(is_novel, dtype=bool)
    score = np.asarray(novelty_score, dtype=np.float64)
    ok = ~np.isnan(score)
    truth, score = truth[ok], score[ok]
    if truth.all() or not truth.any():
        raise DataError(f"a ROC curve needs both novel and known queries; got {int(truth.sum())} novel of {len(truth)}")
    fpr, tpr, _ = roc_curve(truth, score)
    auc = roc_auc_score(truth, score)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance (AUROC 0.5)",
                             line=dict(color="#999", dash="dash")))
    fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"novelty score (AUROC {auc:.3f})",
                             line=dict(color="#1f77b4", width=3),
                             hovertemplate="false-novel rate %{x:.3f}<br>detection rate %{y:.3f}<extra></extra>"))
    if threshold is not None:
        flagged = score > 1.0 - threshold
        fig.add_trace(go.Scatter(x=[flagged[~truth].mean()], y=[flagged[truth].mean()], mode="markers",
                                 name=f"calibrated threshold (similarity < {threshold:.3f})",
                                 marker=dict(size=13, color="#d62728", symbol="x")))
    fig.update_layout(title=title or f"Novelty detection: {int(truth.sum())} novel-species vs "
                      f"{int((~truth).sum())} known-species queries",
                      xaxis=dict(title="false-novel rate (known species flagged)", range=[0, 1]),
                      yaxis=dict(title="detection rate (novel species flagged)", range=[0, 1.02]),
                      height=480, template="plotly_white")
    return fig


def plot_precision_coverage(calibration, *, title: str | None = None):
    """The trade-off a :class:`~clibd_toolkit.rank_calibration.RankCalibration` offers, per kind of query in its
    leave-taxon-out simulation (novel order, family, genus, species; known species): for each ``min_precision``
    setting, the share of such queries that get a name (at any rank) and how often those names are right; the
    current setting is marked with an x."""
    go = _go()
    outcomes = calibration.diagnostics.get("groups") or {}
    labels = {"novel_order": "novel order", "novel_family": "novel family", "novel_genus": "novel genus",
              "novel_species": "novel species", "known_species": "known species"}
    colours = dict(zip(labels, ("#7f7f7f", "#1f77b4", "#2ca02c", "#ff7f0e", "#d62728")))
    targets = sorted(outcomes, key=float)
    current = f"{round(float(calibration.min_precision), 4):g}"
    fig = go.Figure()
    for group, label in labels.items():
        points = [(t, outcomes[t][group]) for t in targets if group in outcomes[t]]
        points = [(t, o) for t, o in points if o["precision"] is not None]
        if not points:
            continue
        fig.add_trace(go.Scatter(
            x=[o["named"] for _, o in points], y=[o["precision"] for _, o in points], mode="lines+markers",
            name=label, line=dict(color=colours[group]), customdata=[[t, o["species"]] for t, o in points],
            hovertemplate=f"{label}<br>MIN_PRECISION %{{customdata[0]}}<br>named %{{x:.1%}} (to species "
                          "%{customdata[1]:.1%})<br>right %{y:.1%}<extra></extra>"))
        chosen = [(t, o) for t, o in points if t == current]
        if chosen:
            fig.add_trace(go.Scatter(x=[chosen[0][1]["named"]], y=[chosen[0][1]["precision"]], mode="markers",
                                     marker=dict(size=14, symbol="x", color=colours[group]), showlegend=False,
                                     hovertemplate=f"{label} at MIN_PRECISION {current}<extra></extra>"))
    fig.update_layout(title=title or f"How often a name is given, and how often it is right, per kind of query "
                      f"({calibration.query_modality} -> {calibration.key_modality}; x = MIN_PRECISION {current})",
                      xaxis=dict(title="share of simulated queries given a name (any rank)", range=[0, 1.02],
                                 tickformat=".0%"),
                      yaxis=dict(title="precision of those names", tickformat=".0%"),
                      height=460, template="plotly_white")
    return fig


# --- identification ---------------------------------------------------------------------------------------------


#: how a query of each modality is named in figure titles
QUERY_KINDS = {"image": "photo", "dna": "barcode", "text": "taxonomy text"}


def plot_neighbours(identification: pd.Series | Mapping[str, Any], reference: pd.DataFrame, *,
                    query_image: Any = None, queries: pd.DataFrame | None = None, thumbnail_size: int = 96,
                    title: str | None = None):
    """The nearest references of one identified query, left to right: each with its image (when it has one),
    its taxonomy on hover and under the picture, and its cosine similarity; the query's own image first.

    Args:
        identification: one row of :func:`clibd_toolkit.identification.identify` (``neighbour_ids``, ``neighbour_scores``,
            ``predicted_*``, ``novel``, ``identified_rank``; with ``query_modality``, as the notebooks' identification
            tables have, the title says whether the query was a photo or a barcode).
        reference: the reference records (canonical table: record_id, image, ranks), for images and taxonomy.
        query_image: the query's image (path, bytes or PIL image), shown first; None = none.
        queries: alternatively, the query records: the image of the row's ``record_id`` is shown first.
        thumbnail_size: pixels of the longest side of each picture.
    """
    go = _go()
    from plotly.subplots import make_subplots

    from ..identification import SEPARATOR

    row = dict(identification)
    if query_image is None and queries is not None:
        match = queries.loc[queries[RECORD_ID].astype(str) == str(row.get(RECORD_ID)), "image"]
        query_image = match.iloc[0] if len(match) else None
    ids = [] if _missing(row.get("neighbour_ids")) else str(row["neighbour_ids"]).split(SEPARATOR)
    scores = [] if _missing(row.get("neighbour_scores")) else [float(v) for v in str(row["neighbour_scores"]).split(SEPARATOR)]
    if not ids:
        raise DataError(f"query {row.get(RECORD_ID)!r} has no neighbours (no embedding for the query modality?)")
    thumbs = image_thumbnails(reference, [i for i in ids if i in set(reference[RECORD_ID].astype(str))],
                              size=thumbnail_size, max_images=None)
    meta = reference.set_index(reference[RECORD_ID].astype(str))
    panels: list[tuple[str, float | None, str | None]] = []
    if query_image is not None and not _missing(query_image):
        panels.append(("query", None, _data_uri(query_image, thumbnail_size)))
    panels += [(rid, score, thumbs.get(rid)) for rid, score in zip(ids, scores)]
    titles = ["<b>query</b>" if rid == "query" else f"#{i} sim {score:.3f}"
              for i, (rid, score, _) in enumerate(panels, start=0 if panels[0][0] == "query" else 1)]
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.015, subplot_titles=titles)
    for col, (rid, _, uri) in enumerate(panels, start=1):
        taxa = meta.loc[rid, list(RANKS)] if rid in meta.index else pd.Series({r: pd.NA for r in RANKS})
        text = "query" if rid == "query" else "<br>".join(f"{r}: {_label(taxa[r])}" for r in RANKS) + f"<br>record {rid}"
        if uri:
            fig.add_trace(go.Image(source=uri, hovertemplate=text + "<extra></extra>"), row=1, col=col)
        else:
            fig.add_trace(go.Scatter(x=[0.5], y=[0.5], mode="text", text=["no image"], showlegend=False,
                                     hovertemplate=text + "<extra></extra>"), row=1, col=col)
            fig.update_xaxes(range=[0, 1], row=1, col=col)
            fig.update_yaxes(range=[0, 1], row=1, col=col)
        if rid != "query":
            suffix = "" if col == 1 else str(col)
            fig.add_annotation(text="<br>".join(_label(taxa[r]) for r in ("family", "genus", "species")),
                               showarrow=False, xref=f"x{suffix} domain", yref=f"y{suffix} domain", x=0.5, y=-0.04,
                               yanchor="top", font=dict(size=10))
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    novel = row.get("novel")
    verdict = ("no novelty calibration" if _missing(novel) else
               f"likely a NEW species; reported to {_label(row.get('identified_rank'))} level" if bool(novel) else
               "known species")
    kind = QUERY_KINDS.get(str(row.get("query_modality")))
    asked = f"{row.get(RECORD_ID)} ({kind} query)" if kind else str(row.get(RECORD_ID))
    fig.update_layout(title=title or f"{asked}: nearest reference is "
                      f"{_label(row.get('predicted_species'))} (similarity {float(row.get('similarity', math.nan)):.3f}; "
                      f"{verdict})", height=340, margin=dict(t=80, b=90, l=10, r=10), template="plotly_white")
    return fig



def identification_table(identification: pd.Series | Mapping[str, Any]) -> pd.DataFrame:
    """One identified query as a small table: per rank the nearest reference's taxon, its neighbourhood support
    score, the calibrated confidence of that name (when the identification has one) and the taxon reported."""
    row = dict(identification)
    table = {
        "rank": list(RANKS),
        "predicted": [_label(row.get(f"predicted_{r}")) for r in RANKS],
        "support": [row.get(f"score_{r}") for r in RANKS],
    }
    if any(f"confidence_{r}" in row for r in RANKS):
        table["confidence"] = [row.get(f"confidence_{r}") for r in RANKS]
    table["reported"] = [_label(row.get(f"identified_{r}")) if not pd.isna(row.get(f"identified_{r}")) else "-"
                         for r in RANKS]
    return pd.DataFrame(table)


