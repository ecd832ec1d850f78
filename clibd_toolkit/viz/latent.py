"""The shared space in 2-D: UMAP projection, the latent-space scatter, links and the live explorer."""
from __future__ import annotations

import base64
import io
import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, DataError
from ..schema import BIN, MODALITIES, RANKS, RECORD_ID, SPLIT
from ._common import (MODALITY_SYMBOLS, PROJECTION_COLUMNS, UNLABELLED, _check_rank, _discrete_colorscale, _go,
                      _labels, _palette)

log = logging.getLogger(__name__)

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
    from ..config import parse_modalities

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
    from ..images import load_image
    from ..schema import IMAGE

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
        if sub.empty:
            out.append_stdout("no point matches this filter\n")
            return
        with out:
            display(plot_latent_space(sub, colour.value, thumbnails=thumbnails, **plot_options))

    for w in (colour, *filters.values()):
        w.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([colour, *filters.values()]), out])


