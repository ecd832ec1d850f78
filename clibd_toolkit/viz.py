"""Figures for the notebooks and reports: every ``plot_*`` function returns a :class:`plotly.graph_objects.Figure`.

Computation is kept apart from drawing (so both are testable outside a notebook):

- :func:`umap_project` embeds an :class:`~clibd_toolkit.store.EmbeddingSet` in 2-D (one row per point: a record's
  image, its barcode, or a taxonomy string), and :func:`plot_latent_space` draws such a table with WebGL
  (``Scattergl``), so 100,000 points stay responsive;
- the other ``plot_*`` functions draw the tables that :mod:`clibd_toolkit.evaluate`, :mod:`clibd_toolkit.cluster`,
  :mod:`clibd_toolkit.identification` and :mod:`clibd_toolkit.training` return.

Headless HTML: :func:`use_offline_renderer` makes notebook figures render as HTML with plotly.js embedded once (no
CDN, no MathJax), which is what survives ``nbconvert`` and opens offline. Hover thumbnails of images live in the
figure (``layout.meta.thumbnails``) and are shown by a small script that this renderer and :func:`figure_html` add.
"""
from __future__ import annotations

import base64
import html
import io
import logging
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError
from .schema import BIN, MODALITIES, RANKS, RECORD_ID, SPLIT

log = logging.getLogger(__name__)

#: marker symbol of each modality in the latent-space figure (all supported by WebGL traces)
MODALITY_SYMBOLS = {"image": "circle", "dna": "diamond", "text": "square"}
#: label of points whose taxon is unknown at the colour rank
UNLABELLED = "(unlabelled)"
#: columns of the :func:`umap_project` table
PROJECTION_COLUMNS: tuple[str, ...] = (RECORD_ID, "modality", "x", "y", *RANKS, BIN, SPLIT)
#: name of the offline notebook renderer registered by :func:`use_offline_renderer`
RENDERER = "clibd_offline"

# Shown on hover over a point whose record id has a thumbnail in layout.meta.thumbnails: an <img> overlay in the
# plot's corner (pure DOM, no relayout, so it stays fast with 100,000 WebGL points).
HOVER_THUMBNAIL_JS = """
(function () {
  var gd = document.getElementById('{plot_id}');
  if (!gd || !gd.on) { return; }
  var thumbs = (gd.layout && gd.layout.meta && gd.layout.meta.thumbnails) || null;
  if (!thumbs) { return; }
  var img = document.createElement('img');
  img.className = 'clibd-hover-thumbnail';
  img.style.cssText = 'position:absolute;top:40px;right:10px;width:96px;height:96px;border:1px solid #888;' +
                      'background:#fff;display:none;pointer-events:none;z-index:10';
  if (getComputedStyle(gd).position === 'static') { gd.style.position = 'relative'; }
  gd.appendChild(img);
  gd.on('plotly_hover', function (ev) {
    var p = ev && ev.points && ev.points[0];
    var id = p && p.customdata ? p.customdata[0] : null;
    if (id !== null && thumbs[id]) { img.src = thumbs[id]; img.style.display = 'block'; }
    else { img.style.display = 'none'; }
  });
  gd.on('plotly_unhover', function () { img.style.display = 'none'; });
})();
"""


def _go():
    try:
        import plotly.graph_objects as go
    except ImportError:  # pragma: no cover - plotly is in the viz/notebooks extras
        raise ConfigError("figures need plotly; install it with `pip install clibd-toolkit[viz]`") from None
    return go


def _palette(n: int) -> list[str]:
    """``n`` distinct-looking colours (qualitative palettes first, then evenly spaced hues)."""
    from plotly.colors import qualitative

    base = list(dict.fromkeys(qualitative.Plotly + qualitative.D3 + qualitative.Dark24 + qualitative.Light24))
    if n <= len(base):
        return base[:n]
    extra = [f"hsl({int(360 * i / (n - len(base)))},65%,{45 + 15 * (i % 2)}%)" for i in range(n - len(base))]
    return base + extra


def _discrete_colorscale(colours: Sequence[str]) -> list[list]:
    """A stepwise plotly colour scale: with ``cmin=-0.5, cmax=len(colours)-0.5``, value ``i`` shows ``colours[i]``."""
    n = len(colours)
    scale: list[list] = []
    for i, colour in enumerate(colours):
        scale += [[i / n, colour], [(i + 1) / n, colour]]
    return scale


def _check_rank(rank: str, *, extra: Sequence[str] = ()) -> None:
    allowed = (*RANKS, *extra)
    if rank not in allowed:
        raise ConfigError(f"unknown rank {rank!r}; expected one of {list(allowed)}")


def _custom(*columns: Any) -> np.ndarray:
    """(n, c) object array for ``customdata`` (numbers stay numbers, so hover formats like ``:.1f`` work)."""
    cols = [np.asarray(c, dtype=object) for c in columns]
    out = np.empty((len(cols[0]), len(cols)), dtype=object)
    for i, c in enumerate(cols):
        out[:, i] = c
    return out


def _labels(values: pd.Series) -> pd.Series:
    """Vectorised :func:`_label`: strings, with missing values as :data:`UNLABELLED`."""
    return values.astype(object).where(values.notna(), UNLABELLED).astype(str)


def _label(value: Any) -> str:
    return UNLABELLED if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


# --- the shared space in 2-D ------------------------------------------------------------------------------------


def _sample_records(n: int, max_records: int | None, seed: int) -> np.ndarray:
    if max_records is None or n <= max_records:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_records, replace=False))


def umap_project(embeddings, modalities: Sequence[str] | str | None = None, *, seed: int = 0, n_neighbors: int = 15,
                 min_dist: float = 0.1, max_records: int | None = None, dedupe_text: bool = True,
                 record_ids: Iterable[Any] | None = None) -> pd.DataFrame:
    """Project the embeddings of several modalities jointly into 2-D with UMAP (they share one space).

    Args:
        embeddings: an :class:`~clibd_toolkit.store.EmbeddingSet`.
        modalities: which modalities to project (default: all the set has), e.g. ``("image", "dna", "text")``.
        seed: UMAP ``random_state`` (a seeded UMAP is deterministic and runs single-threaded) and the record sample.
        n_neighbors, min_dist: UMAP parameters (``n_neighbors`` is capped at the number of points minus one).
        max_records: project at most this many records (a seeded random sample); None = all.
        dedupe_text: one text point per distinct taxonomy (the text vector depends only on the labels), instead
            of one per record.
        record_ids: project only these records (e.g. the ones that were clustered); None = all.

    Returns:
        One row per point, columns :data:`PROJECTION_COLUMNS`: ``record_id`` (for a deduplicated text point, the
        first record with that taxonomy), ``modality``, ``x``, ``y`` (float32) and the record's taxonomy, BIN
        and split. Records lacking a modality have no point for it.

    Raises:
        ConfigError: a modality the embeddings lack, or umap-learn missing.
        DataError: fewer than 4 points to project.
    """
    from .config import parse_modalities

    mods = embeddings.modalities if modalities is None else parse_modalities(modalities)
    missing = [m for m in mods if m not in embeddings.modalities]
    if missing:
        raise ConfigError(f"the embeddings have no {missing} vectors; they have {list(embeddings.modalities)}")
    try:
        import umap
    except ImportError:  # pragma: no cover - umap-learn is in the viz/notebooks extras
        raise ConfigError("umap_project needs umap-learn; install it with `pip install clibd-toolkit[viz]`") from None
    if record_ids is not None:
        wanted = set(map(str, record_ids))
        embeddings = embeddings.subset(embeddings.metadata[RECORD_ID].astype(str).isin(wanted).to_numpy(dtype=bool))
    keep = _sample_records(len(embeddings), max_records, seed)
    meta = embeddings.metadata.iloc[keep].reset_index(drop=True)
    blocks, frames = [], []
    for modality in mods:
        has = embeddings.has(modality)[keep]
        rows = np.flatnonzero(has)
        if modality == "text" and dedupe_text and len(rows):
            labels = meta.iloc[rows][list(RANKS)].astype(object).fillna("\x00")
            rows = rows[~labels.duplicated(keep="first").to_numpy()]
        blocks.append(embeddings.vectors[modality][keep[rows]])
        frame = meta.iloc[rows][[RECORD_ID, *RANKS, BIN, SPLIT]].reset_index(drop=True)
        frame.insert(1, "modality", modality)
        frames.append(frame)
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, 1), np.float32)
    if len(vectors) < 4:
        raise DataError(f"only {len(vectors)} points to project; UMAP needs at least 4")
    # PCA initialisation: deterministic, and unlike the spectral default it does not fail (with a warning) on the
    # tight, disconnected species clusters a trained model produces
    reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(n_neighbors, len(vectors) - 1)), min_dist=min_dist,
                        random_state=seed, n_jobs=1, init="pca" if len(vectors) > 20 else "random")
    xy = reducer.fit_transform(vectors).astype(np.float32)
    out = pd.concat(frames, ignore_index=True)
    out.insert(2, "x", xy[:, 0])
    out.insert(3, "y", xy[:, 1])
    return out[list(PROJECTION_COLUMNS)]


def _check_projection(df: pd.DataFrame) -> None:
    missing = [c for c in PROJECTION_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"the projection table lacks columns {missing}; make it with umap_project()")


def filter_projection(df: pd.DataFrame, **taxa: str | None) -> pd.DataFrame:
    """Rows of a :func:`umap_project` table within the given taxa, e.g. ``filter_projection(df, order="Diptera",
    family=None)`` (None or ``"all"`` = no filter at that rank)."""
    _check_projection(df)
    mask = np.ones(len(df), dtype=bool)
    for rank, value in taxa.items():
        _check_rank(rank)
        if value is None or value == "all":
            continue
        mask &= (df[rank] == value).fillna(False).to_numpy(dtype=bool)
    return df.loc[mask].reset_index(drop=True)


def plot_latent_space(df: pd.DataFrame, color: str = "order", *, links: bool = True, max_links: int = 300,
                      thumbnails: Mapping[str, str] | None = None, max_legend: int = 40, marker_size: float = 5,
                      title: str | None = None, height: int = 650):
    """Draw a :func:`umap_project` table: one WebGL point per image, barcode and taxonomy string.

    Colour shows the taxon at ``color`` (a rank, ``"modality"`` or ``"split"``); the symbol shows the modality
    (circle image, diamond DNA, square text); hovering shows the record's taxonomy (and the image thumbnail when
    ``thumbnails`` has one). Thin grey lines join each specimen's image point to its DNA point: short lines mean
    the two modalities of one specimen landed together (contrastive spaces keep a "modality gap", so images and
    barcodes of a species often form neighbouring islands joined by parallel lines). With at most ``max_legend``
    taxa each taxon is one legend entry (click to hide, double-click to isolate); with more, the legend lists
    the modalities instead.

    Args:
        df: output of :func:`umap_project` (possibly filtered, see :func:`filter_projection`).
        color: rank (or ``"modality"``/``"split"``) that sets the colour.
        links: draw the image-DNA lines.
        max_links: draw at most this many lines (specimens spread evenly over the table).
        thumbnails: record_id -> image data URI (see :func:`image_thumbnails`) for hover previews.
        max_legend: most taxa listed individually in the legend.

    Returns:
        plotly Figure.
    """
    go = _go()
    _check_projection(df)
    _check_rank(color, extra=("modality", SPLIT))
    fig = go.Figure()
    groups = _labels(df[color]) if color != "modality" else df["modality"]
    names = groups.value_counts(sort=True).index.tolist()
    if UNLABELLED in names:  # unlabelled last, in grey
        names = [n for n in names if n != UNLABELLED] + [UNLABELLED]
    colours = dict(zip([n for n in names if n != UNLABELLED], _palette(len(names))))
    colours[UNLABELLED] = "#b0b0b0"
    custom = np.column_stack([_labels(df[c]).to_numpy(dtype=object) for c in (RECORD_ID, "modality", *RANKS, SPLIT)])
    hover = ("<b>%{customdata[5]}</b><br>order: %{customdata[2]}<br>family: %{customdata[3]}<br>"
             "genus: %{customdata[4]}<br>species: %{customdata[5]}<br>record: %{customdata[0]}<br>"
             "split: %{customdata[6]}<extra>%{customdata[1]}</extra>")
    x, y = df["x"].to_numpy(np.float32), df["y"].to_numpy(np.float32)
    modality = df["modality"].to_numpy(dtype=object)
    if links:
        _add_links(fig, df, max_links)
    # per-point colour strings and symbols are slow to validate (seconds per 100,000 points): each trace holds one
    # modality (one symbol) and either one taxon (one colour) or numeric colour codes on a discrete colour scale
    if len(names) <= max_legend:
        for name in names:
            in_group = (groups == name).to_numpy()
            first = True
            for mod in MODALITIES:
                sel = in_group & (modality == mod)
                if not sel.any():
                    continue
                fig.add_trace(go.Scattergl(
                    x=x[sel], y=y[sel], mode="markers", name=name, legendgroup=name, showlegend=first,
                    customdata=custom[sel], hovertemplate=hover,
                    marker=dict(color=colours[name], symbol=MODALITY_SYMBOLS[mod], size=marker_size, opacity=0.8,
                                line=dict(width=0))))
                first = False
    else:
        codes = pd.Categorical(groups, categories=names).codes.astype(np.int32)
        scale = _discrete_colorscale([colours[n] for n in names])
        for mod in MODALITIES:
            sel = modality == mod
            if not sel.any():
                continue
            fig.add_trace(go.Scattergl(
                x=x[sel], y=y[sel], mode="markers", name=f"{mod} ({len(names)} {color} taxa)",
                customdata=custom[sel], hovertemplate=hover,
                marker=dict(color=codes[sel], colorscale=scale, cmin=-0.5, cmax=len(names) - 0.5,
                            symbol=MODALITY_SYMBOLS[mod], size=marker_size, opacity=0.8, line=dict(width=0))))
    counts = df["modality"].value_counts()
    subtitle = ", ".join(f"{counts.get(m, 0):,} {m}" for m in MODALITIES if counts.get(m, 0))
    fig.update_layout(
        title=title or f"Shared latent space (UMAP), coloured by {color}: {subtitle}",
        height=height, hovermode="closest", legend=dict(title=color, itemsizing="constant"),
        xaxis=dict(title="UMAP 1", zeroline=False), yaxis=dict(title="UMAP 2", zeroline=False),
        template="plotly_white")
    if thumbnails:
        shown = set(df.loc[df["modality"] == "image", RECORD_ID].astype(str))
        fig.update_layout(meta={"thumbnails": {k: v for k, v in thumbnails.items() if str(k) in shown}})
    return fig


def _add_links(fig, df: pd.DataFrame, max_links: int) -> None:
    go = _go()
    image = df[df["modality"] == "image"].drop_duplicates(RECORD_ID).set_index(RECORD_ID)
    dna = df[df["modality"] == "dna"].drop_duplicates(RECORD_ID).set_index(RECORD_ID)
    both = image.index.intersection(dna.index)
    if len(both) > max_links:  # an even spread over the table, not just its first specimens
        both = both[np.linspace(0, len(both) - 1, max_links).round().astype(int)]
    if len(both) == 0:
        return
    xs = np.full(3 * len(both), np.nan, dtype=np.float64)
    ys = np.full(3 * len(both), np.nan, dtype=np.float64)
    xs[0::3], xs[1::3] = image.loc[both, "x"].to_numpy(), dna.loc[both, "x"].to_numpy()
    ys[0::3], ys[1::3] = image.loc[both, "y"].to_numpy(), dna.loc[both, "y"].to_numpy()
    fig.add_trace(go.Scattergl(x=xs, y=ys, mode="lines", name=f"image-DNA link ({len(both):,} specimens)",
                               line=dict(color="rgba(110,110,110,0.18)", width=1), hoverinfo="skip",
                               connectgaps=False))


def link_lengths(df: pd.DataFrame) -> pd.DataFrame:
    """Distance in the 2-D projection between each specimen's image point and its DNA point.

    Returns:
        DataFrame with ``record_id``, ``distance`` and the record's taxonomy (one row per specimen with both).
    """
    _check_projection(df)
    image = df[df["modality"] == "image"].drop_duplicates(RECORD_ID).set_index(RECORD_ID)
    dna = df[df["modality"] == "dna"].drop_duplicates(RECORD_ID).set_index(RECORD_ID)
    both = image.index.intersection(dna.index)
    d = np.hypot(image.loc[both, "x"].to_numpy(np.float64) - dna.loc[both, "x"].to_numpy(np.float64),
                 image.loc[both, "y"].to_numpy(np.float64) - dna.loc[both, "y"].to_numpy(np.float64))
    out = image.loc[both, list(RANKS)].reset_index()
    out.insert(1, "distance", d)
    return out


def image_thumbnails(records: pd.DataFrame, record_ids: Iterable[Any] | None = None, *, size: int = 64,
                     max_images: int | None = 2000, quality: int = 80) -> dict[str, str]:
    """Small JPEG data URIs of record images, for hover previews and galleries (they travel inside the HTML).

    Args:
        records: canonical records table (``image`` = path, bytes or reference).
        record_ids: which records (default: all with an image), in this order.
        size: longest side in pixels.
        max_images: stop after this many (keeps HTML reports small); None = no limit.

    Returns:
        record_id (str) -> ``"data:image/jpeg;base64,..."``; records without an image are left out.
    """
    from .images import load_image
    from .schema import IMAGE

    table = records.set_index(records[RECORD_ID].astype(str))
    ids = table.index.tolist() if record_ids is None else [str(r) for r in record_ids]
    out: dict[str, str] = {}
    for rid in ids:
        if max_images is not None and len(out) >= max_images:
            break
        if rid not in table.index:
            raise DataError(f"record {rid!r} is not in the records table", record_id=rid)
        source = table.at[rid, IMAGE]
        if source is None or (not isinstance(source, (bytes, str)) and pd.isna(source)):
            continue
        img = load_image(source, record_id=rid)
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        out[rid] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return out


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


_SORT_JS = """<script>
(function () {
  var table = document.getElementById('%s');
  if (!table) { return; }
  var heads = table.tHead.rows[0].cells;
  for (var c = 0; c < heads.length; c++) {
    (function (col) {
      heads[col].style.cursor = 'pointer';
      heads[col].title = 'click to sort';
      heads[col].addEventListener('click', function () {
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var asc = table.getAttribute('data-sort-col') != col || table.getAttribute('data-sort-dir') != 'asc';
        rows.sort(function (a, b) {
          var x = a.cells[col].getAttribute('data-value'), y = b.cells[col].getAttribute('data-value');
          var nx = parseFloat(x), ny = parseFloat(y);
          var r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
          return asc ? r : -r;
        });
        rows.forEach(function (row) { body.appendChild(row); });
        table.setAttribute('data-sort-col', col);
        table.setAttribute('data-sort-dir', asc ? 'asc' : 'desc');
      });
    })(c);
  }
})();
</script>"""


def sortable_table_html(df: pd.DataFrame, *, table_id: str | None = None, percent: Sequence[str] = ()) -> str:
    """An HTML table whose columns sort on a header click (plain inline JavaScript: works in JupyterLab and in
    offline HTML reports). Columns named in ``percent`` (0-1 values) are shown as percentages."""
    import uuid

    table_id = table_id or f"clibd-table-{uuid.uuid4().hex[:8]}"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for col, value in zip(df.columns, row):
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                cells.append('<td data-value="">-</td>')
                continue
            shown = f"{100 * float(value):.1f}%" if col in percent else (
                f"{value:.4g}" if isinstance(value, float) else str(value))
            cells.append(f'<td data-value="{html.escape(str(value))}">{html.escape(shown)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table id="{table_id}" class="clibd-sortable" border="1" style="border-collapse:collapse">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>" + _SORT_JS % table_id)


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


# --- identification ---------------------------------------------------------------------------------------------


def plot_neighbours(identification: pd.Series | Mapping[str, Any], reference: pd.DataFrame, *,
                    query_image: Any = None, queries: pd.DataFrame | None = None, thumbnail_size: int = 96,
                    title: str | None = None):
    """The nearest references of one identified query, left to right: each with its image (when it has one),
    its taxonomy on hover and under the picture, and its cosine similarity; the query's own image first.

    Args:
        identification: one row of :func:`clibd_toolkit.identification.identify` (``neighbour_ids``, ``neighbour_scores``,
            ``predicted_*``, ``novel``, ``identified_rank``).
        reference: the reference records (canonical table: record_id, image, ranks), for images and taxonomy.
        query_image: the query's image (path, bytes or PIL image), shown first; None = none.
        queries: alternatively, the query records: the image of the row's ``record_id`` is shown first.
        thumbnail_size: pixels of the longest side of each picture.
    """
    go = _go()
    from plotly.subplots import make_subplots

    from .identification import SEPARATOR

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
    fig.update_layout(title=title or f"{row.get(RECORD_ID)}: nearest reference is "
                      f"{_label(row.get('predicted_species'))} (similarity {float(row.get('similarity', math.nan)):.3f}; "
                      f"{verdict})", height=340, margin=dict(t=80, b=90, l=10, r=10), template="plotly_white")
    return fig


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _data_uri(source: Any, size: int) -> str:
    from .images import load_image

    img = load_image(source)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def identification_table(identification: pd.Series | Mapping[str, Any]) -> pd.DataFrame:
    """One identified query as a small table: per rank the nearest reference's taxon, its neighbourhood support
    score and the taxon reported after the novelty back-off."""
    row = dict(identification)
    return pd.DataFrame({
        "rank": list(RANKS),
        "predicted": [_label(row.get(f"predicted_{r}")) for r in RANKS],
        "support": [row.get(f"score_{r}") for r in RANKS],
        "reported": [_label(row.get(f"identified_{r}")) if not pd.isna(row.get(f"identified_{r}")) else "-"
                     for r in RANKS],
    })


# --- rendering --------------------------------------------------------------------------------------------------


def use_offline_renderer() -> str:
    """Make plotly figures display as self-contained HTML: plotly.js is embedded once (first figure) and never
    fetched from a CDN, no MathJax is requested, and hover thumbnails work. This is what survives ``nbconvert``
    to HTML and renders offline (plotly 6+ drops figures from nbconvert HTML under its default renderer).

    Returns:
        The renderer name (now ``plotly.io.renderers.default``).
    """
    import plotly.io as pio
    from plotly.io._base_renderers import NotebookRenderer

    class OfflineNotebookRenderer(NotebookRenderer):
        def to_mimebundle(self, fig_dict):
            from plotly.io import to_html

            return {"text/html": to_html(fig_dict, config=self.config, include_plotlyjs=False, include_mathjax=False,
                                         post_script=[HOVER_THUMBNAIL_JS], full_html=False, default_width="100%",
                                         default_height=525, validate=False)}

    if RENDERER not in pio.renderers:
        pio.renderers[RENDERER] = OfflineNotebookRenderer(config={"responsive": True})
    pio.renderers.default = RENDERER
    return RENDERER


def figure_html(fig, *, include_plotlyjs: bool | str = True, full_html: bool = True) -> str:
    """A figure as HTML with plotly.js embedded (default; works offline) and hover thumbnails enabled."""
    return fig.to_html(include_plotlyjs=include_plotlyjs, include_mathjax=False, full_html=full_html,
                       post_script=[HOVER_THUMBNAIL_JS], config={"responsive": True})


def write_figure(fig, path) -> Any:
    """Write a standalone, offline HTML file of ``fig`` (plotly.js embedded); returns the path."""
    from pathlib import Path

    from .io import atomic_write_text

    path = Path(path)
    atomic_write_text(path, figure_html(fig))
    return path


def write_figures(figures: Mapping[str, Any], folder) -> dict[str, Any]:
    """Write each figure as ``folder/NAME.html`` sharing one ``plotly.min.js`` in the folder (offline, and the
    library is stored once instead of ~4.6 MB per file). Returns NAME -> path."""
    from pathlib import Path

    from .io import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fig in figures.items():
        if fig is None:
            continue
        paths[name] = folder / f"{name}.html"
        atomic_write_text(paths[name], figure_html(fig, include_plotlyjs="directory"))
    if paths and not (folder / "plotly.min.js").is_file():
        from plotly.offline import get_plotlyjs

        atomic_write_text(folder / "plotly.min.js", get_plotlyjs())
    return paths


# --- interactive (live Jupyter) ---------------------------------------------------------------------------------


def latent_space_explorer(df: pd.DataFrame, *, thumbnails: Mapping[str, str] | None = None, color: str = "order",
                          **plot_options: Any):
    """An ipywidgets panel over :func:`plot_latent_space`: pick the colour rank and filter by order, family and
    genus (each list narrows to the taxa under the one chosen above). Needs a live kernel; in headless runs
    show :func:`plot_latent_space` figures instead (the notebooks' ``INTERACTIVE`` parameter).

    Returns:
        an ``ipywidgets.VBox``.
    """
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:  # pragma: no cover - ipywidgets is in the notebooks extra
        raise ConfigError("the explorer needs ipywidgets; install clibd-toolkit[notebooks]") from None
    _check_projection(df)
    colour = widgets.Dropdown(options=[*RANKS, "modality", SPLIT], value=color, description="colour by")
    filters = {r: widgets.Dropdown(options=["all"], value="all", description=r) for r in ("order", "family", "genus")}
    out = widgets.Output()

    def options_for(rank: str) -> list[str]:
        above = {r: w.value for r, w in filters.items() if RANKS.index(r) < RANKS.index(rank)}
        sub = filter_projection(df, **above)
        return ["all", *sorted(sub[rank].dropna().astype(str).unique())]

    def redraw(*_: Any) -> None:
        for rank, w in filters.items():
            opts = options_for(rank)
            if list(w.options) != opts:
                value = w.value if w.value in opts else "all"
                w.unobserve(redraw, names="value")
                w.options, w.value = opts, value
                w.observe(redraw, names="value")
        sub = filter_projection(df, **{r: w.value for r, w in filters.items()})
        out.clear_output(wait=True)
        with out:
            if sub.empty:
                print("no point matches this filter")
            else:
                display(plot_latent_space(sub, colour.value, thumbnails=thumbnails, **plot_options))

    for w in (colour, *filters.values()):
        w.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([colour, *filters.values()]), out])


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
            except DataError as exc:
                print(exc)

    for w in (pair_w, split_w, chart_w):
        w.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([pair_w, split_w, chart_w]), out])
