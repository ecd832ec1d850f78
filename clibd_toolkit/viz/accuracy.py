"""Training curves, retrieval accuracy per modality pair, and per-taxon accuracy charts."""
from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from ..schema import RANKS
from ._common import UNLABELLED, _check_rank, _custom, _go, _palette

log = logging.getLogger(__name__)

# --- training ---------------------------------------------------------------------------------------------------


def plot_loss_curve(history: pd.DataFrame, *, title: str = "Contrastive training"):
    """Loss per optimiser step (with a per-epoch mean), learning rate and temperature from a
    :class:`~clibd_toolkit.training.TrainResult` ``history`` (or the run's ``history.csv``)."""
    go = _go()
    from plotly.subplots import make_subplots

    missing = [c for c in ("epoch", "step", "loss", "lr") if c not in history.columns]
    if missing:
        raise DataError(f"training history lacks columns {missing}; expected epoch, step, loss, lr, logit_scale")
    if history.empty:
        raise DataError("the training history is empty (no optimiser step was taken)")
    has_scale = "logit_scale" in history.columns
    rows = 3 if has_scale else 2
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        row_heights=[0.6, 0.2, 0.2] if has_scale else [0.7, 0.3])
    fig.add_trace(go.Scatter(x=history["step"], y=history["loss"], mode="lines", name="loss (step)",
                             line=dict(color="#9bb7d4", width=1)), row=1, col=1)
    per_epoch = history.groupby("epoch").agg(step=("step", "max"), loss=("loss", "mean")).reset_index()
    fig.add_trace(go.Scatter(x=per_epoch["step"], y=per_epoch["loss"], mode="lines+markers", name="loss (epoch mean)",
                             line=dict(color="#1f4e79", width=2),
                             customdata=per_epoch["epoch"], hovertemplate="epoch %{customdata}: %{y:.4f}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=history["step"], y=history["lr"], mode="lines", name="learning rate",
                             line=dict(color="#d62728")), row=2, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_yaxes(title_text="learning rate", exponentformat="e", row=2, col=1)
    if has_scale:
        fig.add_trace(go.Scatter(x=history["step"], y=history["logit_scale"], mode="lines", name="1 / temperature",
                                 line=dict(color="#2ca02c")), row=3, col=1)
        fig.update_yaxes(title_text="1/temperature", row=3, col=1)
    fig.update_xaxes(title_text="optimiser step", row=rows, col=1)
    fig.update_layout(title=title, height=560, template="plotly_white", hovermode="x unified")
    return fig


# --- retrieval accuracy -----------------------------------------------------------------------------------------


def _pair_labels(rows: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(f"{q}->{k}" for q, k in zip(rows["query"], rows["key"])))


def plot_retrieval_accuracy(rows: pd.DataFrame, chance: pd.DataFrame | None = None, *, k: int = 1,
                            metric: str = "macro", split: str = "seen", title: str | None = None):
    """Top-``k`` accuracy of every query->key pair at each rank (one panel per rank), with chance marked.

    Args:
        rows: ``EvalResult.rows`` (or the ``rows`` of a metrics.json as a DataFrame).
        chance: the same layout from :func:`clibd_toolkit.report.chance_accuracy`; drawn as black ticks.
        k: which top-k.
        metric: ``"micro"`` or ``"macro"``.
        split: ``"seen"``, ``"unseen"`` or ``"harmonic_mean"``.
    """
    go = _go()
    from plotly.subplots import make_subplots

    if metric not in ("micro", "macro"):
        raise ConfigError(f"metric {metric!r} is not 'micro' or 'macro'")
    sel = rows[(rows["k"] == k) & (rows["split"] == split)]
    if sel.empty:
        raise DataError(f"no metric rows with k={k} and split={split!r}")
    ranks = [r for r in RANKS if r in set(sel["rank"])]
    pairs = _pair_labels(sel)
    fig = make_subplots(rows=1, cols=len(ranks), shared_yaxes=True, subplot_titles=ranks, horizontal_spacing=0.02)
    colours = dict(zip(pairs, _palette(len(pairs))))
    for i, rank in enumerate(ranks, start=1):
        part = sel[sel["rank"] == rank]
        labels = [f"{q}->{kk}" for q, kk in zip(part["query"], part["key"])]
        fig.add_trace(go.Bar(x=labels, y=100 * part[metric].astype(float), name=rank, showlegend=False,
                             marker_color=[colours[p] for p in labels],
                             hovertemplate="%{x}: %{y:.1f}%<extra>" + rank + "</extra>"), row=1, col=i)
        if chance is not None:
            c = chance[(chance["k"] == k) & (chance["split"] == split) & (chance["rank"] == rank)]
            c_labels = [f"{q}->{kk}" for q, kk in zip(c["query"], c["key"])]
            fig.add_trace(go.Scatter(x=c_labels, y=100 * c[metric].astype(float), mode="markers", name="chance",
                                     showlegend=i == 1, legendgroup="chance",
                                     marker=dict(symbol="line-ew-open", size=28, color="black", line=dict(width=3)),
                                     hovertemplate="chance %{x}: %{y:.2f}%<extra></extra>"), row=1, col=i)
    fig.update_yaxes(title_text=f"top-{k} {metric} accuracy (%)", range=[0, 100], row=1, col=1)
    fig.update_layout(title=title or f"Retrieval accuracy, {split} queries (bars) vs chance (black ticks)",
                      height=460, template="plotly_white", bargap=0.25)
    return fig


def plot_metric_changes(comparison: pd.DataFrame, *, k: int = 1, metric: str = "macro",
                        splits: Sequence[str] = ("seen", "unseen", "harmonic_mean"), title: str | None = None):
    """Change of each metric against an earlier run (:func:`clibd_toolkit.evaluate.compare_metrics`): one bar per
    (pair, rank, split), green = improved, red = regressed, grey = unchanged, in percentage points."""
    go = _go()
    sel = comparison[(comparison["k"] == k) & (comparison["metric"] == metric) & comparison["split"].isin(splits)]
    sel = sel[sel["delta"].notna()]
    if sel.empty:
        raise DataError(f"no comparable {metric} rows with k={k} in the comparison (nothing in common with the "
                        "earlier run?)")
    labels = [f"{q}->{kk} {r} {s}" for q, kk, r, s in zip(sel["query"], sel["key"], sel["rank"], sel["split"])]
    colour = sel["status"].map({"improved": "#2ca02c", "regressed": "#d62728"}).fillna("#999999")
    fig = go.Figure(go.Bar(
        y=labels, x=100 * sel["delta"], orientation="h", marker_color=colour.tolist(),
        customdata=_custom(100 * sel["previous"], 100 * sel["current"], sel["status"]),
        hovertemplate="%{y}<br>%{customdata[0]:.1f}% -> %{customdata[1]:.1f}% (%{x:+.1f} points, "
                      "%{customdata[2]})<extra></extra>"))
    fig.update_layout(title=title or f"Top-{k} {metric} accuracy: change against the earlier run (points)",
                      height=max(300, 14 * len(labels) + 120), template="plotly_white",
                      xaxis=dict(title="change (percentage points)", zeroline=True, zerolinecolor="black"),
                      yaxis=dict(autorange="reversed"))
    return fig


# --- per-taxon accuracy -----------------------------------------------------------------------------------------


def _select_per_taxon(per_taxon: pd.DataFrame, query: str, key: str, split: str, k: int) -> pd.DataFrame:
    sel = per_taxon[(per_taxon["query"] == query) & (per_taxon["key"] == key) & (per_taxon["split"] == split)
                    & (per_taxon["k"] == k)]
    if sel.empty:
        have = sorted(set(zip(per_taxon["query"], per_taxon["key"], per_taxon["split"], per_taxon["k"])))
        raise DataError(f"no per-taxon rows for {query}->{key}, split {split!r}, k={k}; available (query, key, "
                        f"split, k): {have[:12]}")
    return sel


def taxon_tree(per_taxon: pd.DataFrame, lineage: pd.DataFrame, *, query: str, key: str, split: str,
               k: int = 1) -> pd.DataFrame:
    """The per-taxon table of one modality pair and split as a tree order -> family -> genus -> species.

    Args:
        per_taxon: ``EvalResult.per_taxon`` (or the per_taxon.csv).
        lineage: any table with the rank columns (e.g. the embeddings' metadata) giving each taxon's parents.

    Returns:
        One row per evaluated taxon: ``id`` (the path "order/family/..."), ``parent``, ``label``, ``rank``,
        ``accuracy`` (0-1), ``n_queries``, ``n_keys``. Taxa whose lineage is unknown hang under their
        first-seen parent path; a taxon name used under two parents (a homonym) keeps its first parent.
    """
    sel = _select_per_taxon(per_taxon, query, key, split, k)
    lin = lineage[list(RANKS)].astype(object).drop_duplicates()
    paths: dict[tuple[str, str], str] = {}
    for i, rank in enumerate(RANKS):
        for row in lin[lin[rank].notna()].itertuples(index=False):
            parts = [str(getattr(row, r)) if not pd.isna(getattr(row, r)) else UNLABELLED for r in RANKS[: i + 1]]
            paths.setdefault((rank, str(getattr(row, rank))), "/".join(parts))
    out = []
    for r in sel.itertuples(index=False):
        path = paths.get((r.rank, str(r.taxon)), f"{UNLABELLED}/{r.taxon}" if r.rank != RANKS[0] else str(r.taxon))
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        out.append((path, parent, str(r.taxon), r.rank, float(r.accuracy), int(r.n_queries), int(r.n_keys)))
    tree = pd.DataFrame(out, columns=["id", "parent", "label", "rank", "accuracy", "n_queries", "n_keys"])
    # a parent missing from the evaluated taxa (e.g. no query at that rank) is added so the tree stays connected
    known = set(tree["id"])
    extra = []
    for parent in sorted(set(tree["parent"]) - known - {""}):
        chain = parent.split("/")
        for depth in range(1, len(chain) + 1):
            pid = "/".join(chain[:depth])
            if pid not in known:
                known.add(pid)
                extra.append((pid, "/".join(chain[: depth - 1]), chain[depth - 1], RANKS[depth - 1], math.nan, 0, 0))
    if extra:
        tree = pd.concat([tree, pd.DataFrame(extra, columns=tree.columns)], ignore_index=True)
    return tree


def plot_taxon_accuracy(per_taxon: pd.DataFrame, lineage: pd.DataFrame, *, query: str, key: str, split: str,
                        k: int = 1, kind: str = "sunburst", title: str | None = None):
    """Order -> family -> genus -> species as a sunburst (or treemap), each taxon coloured by its top-``k``
    accuracy (red 0 -> green 1) and sized by its number of queries."""
    go = _go()
    if kind not in ("sunburst", "treemap"):
        raise ConfigError(f"kind {kind!r} is not 'sunburst' or 'treemap'")
    tree = taxon_tree(per_taxon, lineage, query=query, key=key, split=split, k=k)
    trace = go.Sunburst if kind == "sunburst" else go.Treemap
    acc = tree["accuracy"].fillna(-1.0)
    fig = go.Figure(trace(
        ids=tree["id"], parents=tree["parent"], labels=tree["label"], values=tree["n_queries"].clip(lower=0),
        branchvalues="remainder", customdata=_custom(tree["rank"], 100 * tree["accuracy"], tree["n_queries"], tree["n_keys"]),
        hovertemplate="<b>%{label}</b> (%{customdata[0]})<br>accuracy %{customdata[1]:.1f}%<br>"
                      "%{customdata[2]} queries, %{customdata[3]} keys<extra></extra>",
        marker=dict(colors=acc, colorscale=[[0, "#d9d9d9"], [1e-9, "#d73027"], [0.5, "#fee08b"], [1, "#1a9850"]],
                    cmin=-1e-9, cmax=1, colorbar=dict(title="accuracy")),
        maxdepth=4 if kind == "sunburst" else None))
    fig.update_layout(title=title or f"Top-{k} accuracy per taxon: {query}->{key}, {split} queries",
                      height=650, margin=dict(t=60, l=10, r=10, b=10))
    return fig


def plot_accuracy_vs_references(per_taxon: pd.DataFrame, *, query: str, key: str, split: str, rank: str = "species",
                                k: int = 1, title: str | None = None):
    """Accuracy of each taxon at ``rank`` against its number of reference (key) records, sized by queries."""
    go = _go()
    _check_rank(rank)
    sel = _select_per_taxon(per_taxon, query, key, split, k)
    sel = sel[sel["rank"] == rank]
    if sel.empty:
        raise DataError(f"no per-taxon rows at rank {rank!r} for {query}->{key}, split {split!r}")
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(sel))  # spread taxa with equal key counts
    fig = go.Figure(go.Scatter(
        x=sel["n_keys"] + jitter, y=100 * sel["accuracy"], mode="markers", text=sel["taxon"],
        marker=dict(size=6 + 3 * np.sqrt(sel["n_queries"]), color=100 * sel["accuracy"], colorscale="RdYlGn",
                    cmin=0, cmax=100, opacity=0.75, line=dict(width=0.5, color="#333")),
        customdata=_custom(sel["n_keys"], sel["n_queries"]),
        hovertemplate="<b>%{text}</b><br>accuracy %{y:.1f}%<br>%{customdata[0]} reference records, "
                      "%{customdata[1]} queries<extra></extra>"))
    fig.update_layout(title=title or f"{rank} accuracy vs reference records: {query}->{key}, {split} queries",
                      xaxis=dict(title=f"reference (key) records of the {rank}"),
                      yaxis=dict(title=f"top-{k} accuracy (%)", range=[-5, 105]), height=480, template="plotly_white")
    return fig


def worst_taxa(per_taxon: pd.DataFrame, *, query: str, key: str, split: str, rank: str = "species", k: int = 1,
               n: int = 25, min_queries: int = 1) -> pd.DataFrame:
    """The ``n`` least accurate taxa at ``rank`` (ties: more queries first), with at least ``min_queries``."""
    _check_rank(rank)
    sel = _select_per_taxon(per_taxon, query, key, split, k)
    sel = sel[(sel["rank"] == rank) & (sel["n_queries"] >= min_queries)]
    cols = ["taxon", "accuracy", "n_queries", "n_keys"]
    return (sel.sort_values(["accuracy", "n_queries", "taxon"], ascending=[True, False, True], kind="stable")
            .head(n)[cols].reset_index(drop=True))



# --- interactive (live Jupyter) ---------------------------------------------------------------------------------


def taxon_accuracy_explorer(per_taxon: pd.DataFrame, lineage: pd.DataFrame, *, k: int = 1, pair: str | None = None,
                            split: str = "unseen", chart: str = "sunburst"):
    """An ipywidgets panel over :func:`plot_taxon_accuracy` and :func:`plot_accuracy_vs_references`: choose the
    modality pair, the query split and the chart. Needs a live kernel (headless reports show fixed figures).

    Returns:
        an ``ipywidgets.VBox``.
    """
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:  # pragma: no cover - ipywidgets is in the notebooks extra
        raise ConfigError("the explorer needs ipywidgets; install clibd-toolkit[notebooks]") from None
    pairs = _pair_labels(per_taxon)
    if not pairs:
        raise DataError("the per-taxon table is empty")
    pair_w = widgets.Dropdown(options=pairs, value=pair if pair in pairs else pairs[0], description="pair")
    split_w = widgets.Dropdown(options=sorted(set(per_taxon["split"])), description="queries")
    if split in split_w.options:
        split_w.value = split
    chart_w = widgets.Dropdown(options=["sunburst", "treemap"], value=chart, description="chart")
    out = widgets.Output()

    def redraw(*_: Any) -> None:
        query, key = pair_w.value.split("->")
        out.clear_output(wait=True)
        with out:
            try:
                display(plot_taxon_accuracy(per_taxon, lineage, query=query, key=key, split=split_w.value, k=k,
                                            kind=chart_w.value))
                display(plot_accuracy_vs_references(per_taxon, query=query, key=key, split=split_w.value, k=k))
            except DataError as exc:  # e.g. a pair with no queries in this split: say so in the panel
                out.append_stdout(f"{exc}\n")

    for w in (pair_w, split_w, chart_w):
        w.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([pair_w, split_w, chart_w]), out])
