"""Headless HTML: the offline notebook renderer, standalone figure files, sortable tables."""
from __future__ import annotations

import html
import logging
from typing import Any, Mapping, Sequence

import pandas as pd

log = logging.getLogger(__name__)

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

    from ..io import atomic_write_text

    path = Path(path)
    atomic_write_text(path, figure_html(fig))
    return path


def write_figures(figures: Mapping[str, Any], folder) -> dict[str, Any]:
    """Write each figure as ``folder/NAME.html`` sharing one ``plotly.min.js`` in the folder (offline, and the
    library is stored once instead of ~4.6 MB per file). Returns NAME -> path."""
    from pathlib import Path

    from ..io import atomic_write_text

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


