"""Headless HTML: the offline notebook renderer, standalone figure files, sortable tables."""
from __future__ import annotations

import html
import logging
from typing import Any, Mapping, Sequence

import pandas as pd

log = logging.getLogger(__name__)

RENDERER = "clibd_offline"

#: the plotly mimetype: JupyterLab's plotly extension (shipped inside the ``plotly`` package) draws it with its own
#: bundled plotly.js, so it needs nothing from the page (a reloaded tab, a reopened notebook, a fresh kernel)
PLOTLY_MIME = "application/vnd.plotly.v1+json"
#: name of the companion renderer that adds the live hover-thumbnail script next to figures that carry thumbnails
HOVER_RENDERER = "clibd_hover_thumbnails"
#: the ``text/html`` of a figure's output in a notebook: shown only where nothing draws the plotly mimetype (plain
#: ``jupyter nbconvert``, a JupyterLab whose environment lacks plotly); report.export_html replaces it with the figure
FIGURE_FALLBACK_HTML = ('<div class="clibd-plotly-fallback" style="padding:6px 10px;border-left:4px solid #999;'
                        'background:#f5f5f5;color:#444;font-size:90%">A plotly figure. JupyterLab draws it with '
                        "plotly's extension (install plotly in the environment JupyterLab runs from); an offline "
                        "HTML page of the notebook with its figures comes from <code>clibd report</code> or "
                        "<code>clibd_toolkit.report.export_html</code>.</div>")

# Attaches the hover thumbnail to one plotly graph div ``gd`` whose layout.meta.thumbnails maps record ids to
# images: an <img> overlay in the top-left corner of the plot area (clear of the legend, which sits right of the
# plot area), shown while a point with a thumbnail is hovered. Pure DOM, no relayout, so it stays fast with
# 100,000 WebGL points; idempotent (a graph gets one overlay however often this runs).
_ATTACH_THUMBNAIL_JS = """function (gd) {
  if (!gd || !gd.on || gd.__clibdHoverThumbnail) { return; }
  var meta = gd.layout && gd.layout.meta;
  if (!meta || !meta.thumbnails) { return; }
  var img = document.createElement('img');
  img.className = 'clibd-hover-thumbnail';
  img.style.cssText = 'position:absolute;width:96px;height:96px;border:1px solid #888;background:#fff;' +
                      'display:none;pointer-events:none;z-index:10';
  if (getComputedStyle(gd).position === 'static') { gd.style.position = 'relative'; }
  gd.appendChild(img);
  gd.__clibdHoverThumbnail = img;
  gd.on('plotly_hover', function (ev) {
    var thumbs = (gd.layout && gd.layout.meta && gd.layout.meta.thumbnails) || {};
    var p = ev && ev.points && ev.points[0];
    var id = p && p.customdata ? p.customdata[0] : null;
    if (id !== null && thumbs[id]) {
      var size = (gd._fullLayout && gd._fullLayout._size) || {l: 80, t: 100};
      img.style.left = (size.l + 8) + 'px';
      img.style.top = (size.t + 8) + 'px';
      img.src = thumbs[id];
      img.style.display = 'block';
    } else { img.style.display = 'none'; }
  });
  gd.on('plotly_unhover', function () { img.style.display = 'none'; });
}"""

#: ``post_script`` of a figure's HTML (offline pages): hover thumbnails of the figure just drawn
HOVER_THUMBNAIL_JS = "(" + _ATTACH_THUMBNAIL_JS + ")(document.getElementById('{plot_id}'));"

# Live notebooks (the plotly mimetype is drawn by JupyterLab's extension, which runs no figure script): shown as a
# small output next to each figure with thumbnails, it watches the page and attaches the overlay to every plotly
# graph with thumbnails, also ones drawn later (explorer redraws, a saved notebook's figure drawn on first hover).
# Each such output reinstalls it, so a reloaded tab gets it back with the next figure cell run.
_LIVE_HOVER_JS = """<script>
(function () {
  var attach = %s;
  var scan = function () { document.querySelectorAll('.js-plotly-plot').forEach(attach); };
  window.__clibdHoverThumbnailScan = scan;
  if (!window.__clibdHoverThumbnailObserver && window.MutationObserver) {
    var pending = null;
    window.__clibdHoverThumbnailObserver = new MutationObserver(function () {
      if (pending === null) { pending = setTimeout(function () { pending = null; window.__clibdHoverThumbnailScan(); }, 200); }
    });
    window.__clibdHoverThumbnailObserver.observe(document.body, {childList: true, subtree: true});
  }
  setTimeout(scan, 0);
})();
</script>""" % _ATTACH_THUMBNAIL_JS


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


def _has_thumbnails(fig_dict: Mapping[str, Any]) -> bool:
    meta = (fig_dict.get("layout") or {}).get("meta")
    return isinstance(meta, Mapping) and bool(meta.get("thumbnails"))


def use_offline_renderer() -> str:
    """Make plotly figures display through plotly's own mimetype renderer, offline, in every live situation.

    Each figure's output carries the figure as ``application/vnd.plotly.v1+json``, which JupyterLab's plotly
    extension (part of the ``plotly`` package) draws with its bundled plotly.js: nothing is fetched from a CDN or
    expected in the page, so figures render on the first run, after a reload of the tab, in a saved notebook
    reopened with its outputs and with a fresh kernel. The output's ``text/html`` is only a short note (see
    :data:`FIGURE_FALLBACK_HTML`); :func:`clibd_toolkit.report.export_html` turns the figures into offline HTML
    with one shared plotly.js (plotly 6+ drops mimetype-only figures from plain ``nbconvert`` HTML). Figures with
    hover thumbnails (``layout.meta.thumbnails``) get a small script output next to them that shows the thumbnails
    live.

    Returns:
        The renderer string, now ``plotly.io.renderers.default`` (:data:`RENDERER` plus the hover-thumbnail
        companion).
    """
    import plotly.io as pio
    from plotly.io._base_renderers import ExternalRenderer, PlotlyRenderer

    class OfflineMimetypeRenderer(PlotlyRenderer):
        """plotly's mimetype renderer, with the report height as default and a text/html note as fallback."""

        def to_mimebundle(self, fig_dict):
            layout = fig_dict.setdefault("layout", {})
            layout.setdefault("height", 525)  # what offline pages use; JupyterLab's extension would pick 360
            bundle = super().to_mimebundle(fig_dict)
            bundle["text/html"] = FIGURE_FALLBACK_HTML
            return bundle

    class HoverThumbnailRenderer(ExternalRenderer):
        """Displays the live hover-thumbnail script after a figure that has thumbnails (nothing otherwise)."""

        def render(self, fig_dict):
            if _has_thumbnails(fig_dict):
                from IPython.display import display_html

                display_html(_LIVE_HOVER_JS, raw=True)

    if RENDERER not in pio.renderers:
        pio.renderers[RENDERER] = OfflineMimetypeRenderer(config={"responsive": True})
    if HOVER_RENDERER not in pio.renderers:
        pio.renderers[HOVER_RENDERER] = HoverThumbnailRenderer()
    pio.renderers.default = f"{RENDERER}+{HOVER_RENDERER}"
    return pio.renderers.default


def figure_dict_html(fig_dict: Mapping[str, Any]) -> str:
    """The HTML fragment of a figure dict (as stored in a notebook under the plotly mimetype) for an offline page
    that loads plotly.js once elsewhere: a div and its ``Plotly.newPlot`` call, hover thumbnails enabled."""
    from plotly.io import to_html

    fig = dict(fig_dict)
    config = fig.pop("config", None) or {"responsive": True}
    return to_html(fig, config=config, include_plotlyjs=False, include_mathjax=False, post_script=[HOVER_THUMBNAIL_JS],
                   full_html=False, default_width="100%", default_height=525, validate=False)


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


