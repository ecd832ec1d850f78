"""Figures for the notebooks and reports: every ``plot_*`` function returns a :class:`plotly.graph_objects.Figure`.

Computation is kept apart from drawing (so both are testable outside a notebook):

- :func:`umap_project` embeds an :class:`~clibd_toolkit.store.EmbeddingSet` in 2-D (one row per point: a record's
  image, its barcode, or a taxonomy string), and :func:`plot_latent_space` draws such a table with WebGL
  (``Scattergl``), so 100,000 points stay responsive;
- the other ``plot_*`` functions draw the tables that :mod:`clibd_toolkit.evaluate`, :mod:`clibd_toolkit.cluster`,
  :mod:`clibd_toolkit.identification` and :mod:`clibd_toolkit.training` return.

Rendering: :func:`use_offline_renderer` makes notebook figures display through plotly's mimetype
(``application/vnd.plotly.v1+json``), which JupyterLab's plotly extension draws with its own plotly.js: no CDN,
nothing expected in the page, so figures survive a reload of the tab, a reopened notebook and a fresh kernel.
:func:`clibd_toolkit.report.export_html` turns those outputs into offline HTML sharing one plotly.js
(:func:`figure_dict_html`). Hover thumbnails of images live in the figure (``layout.meta.thumbnails``) and are shown
by a small script that :func:`figure_html`, the exported pages and (next to each such figure) the live renderer add.

One module per kind of figure: :mod:`.latent` (the shared space), :mod:`.accuracy` (training and retrieval
accuracy, per taxon), :mod:`.discovery` (unseen species, novelty, identification) and :mod:`.output` (rendering
and files); everything is importable from ``clibd_toolkit.viz``.
"""
from __future__ import annotations

from ._common import MODALITY_SYMBOLS, PROJECTION_COLUMNS, UNLABELLED
from .accuracy import (plot_accuracy_vs_references, plot_loss_curve, plot_metric_changes, plot_retrieval_accuracy,
                       plot_taxon_accuracy, taxon_accuracy_explorer, taxon_tree, worst_taxa)
from .discovery import (identification_table, plot_cluster_comparison, plot_cluster_scores, plot_neighbours,
                        plot_novelty_roc, plot_precision_coverage)
from .latent import (filter_projection, image_thumbnails, latent_space_explorer, link_lengths, plot_latent_space,
                     umap_project)
from .output import (HOVER_RENDERER, HOVER_THUMBNAIL_JS, PLOTLY_MIME, RENDERER, figure_dict_html, figure_html,
                     sortable_table_html, use_offline_renderer, write_figure, write_figures)

__all__ = [
    "HOVER_RENDERER", "HOVER_THUMBNAIL_JS", "MODALITY_SYMBOLS", "PLOTLY_MIME", "PROJECTION_COLUMNS", "RENDERER",
    "UNLABELLED", "figure_dict_html", "figure_html", "filter_projection", "identification_table", "image_thumbnails", "latent_space_explorer",
    "link_lengths", "plot_accuracy_vs_references", "plot_cluster_comparison", "plot_cluster_scores",
    "plot_latent_space", "plot_loss_curve", "plot_metric_changes", "plot_neighbours", "plot_novelty_roc",
    "plot_precision_coverage",
    "plot_retrieval_accuracy", "plot_taxon_accuracy", "sortable_table_html", "taxon_accuracy_explorer", "taxon_tree",
    "umap_project", "use_offline_renderer", "worst_taxa", "write_figure", "write_figures",
]
