"""Shared pieces of the figure modules: marker symbols, palettes, label handling, image thumbnails."""
from __future__ import annotations

import base64
import io
import logging
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..schema import BIN, RANKS, RECORD_ID, SPLIT

log = logging.getLogger(__name__)

#: marker symbol of each modality in the latent-space figure (all supported by WebGL traces)
MODALITY_SYMBOLS = {"image": "circle", "dna": "diamond", "text": "square"}
#: label of points whose taxon is unknown at the colour rank
UNLABELLED = "(unlabelled)"
#: columns of the :func:`umap_project` table
PROJECTION_COLUMNS: tuple[str, ...] = (RECORD_ID, "modality", "x", "y", *RANKS, BIN, SPLIT)
#: name of the offline notebook renderer registered by :func:`use_offline_renderer`

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



def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _data_uri(source: Any, size: int) -> str:
    from ..images import load_image

    img = load_image(source)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


