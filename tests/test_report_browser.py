"""The HTML reports in a real headless Chromium (Debian's ``chromium``), with the network blocked: every plotly
figure is drawn, WebGL figures get their canvas, hover thumbnails are attached, and no script fails or needs a CDN.

Driven through ``chromium --headless --dump-dom`` with a probe script (clibd_toolkit.report.browser_check); no
selenium/playwright needed. Skipped, with the reason, when no Chromium is installed.
"""
from __future__ import annotations

import pytest

import _notebook_runs as runs
from clibd_toolkit import report

pytestmark = [pytest.mark.browser]

if report.find_chromium() is None:
    pytest.skip("headless Chromium not found on PATH (Debian: apt-get install -y chromium chromium-driver; .ci/run "
                "installs it)", allow_module_level=True)

#: figures each notebook's report must show (at least), and how many of them are WebGL
EXPECTED = {"01_quickstart": (3, 0), "02_train": (1, 0), "03_evaluate": (1, 0), "04_latent_space": (3, 3),
            "05_unseen_species": (3, 1), "06_per_taxon_accuracy": (2, 0), "07_identify": (2, 0)}


def test_probe_sees_script_errors_and_network_use(tmp_path):
    """The check itself can fail: a throwing script and a CDN script are both reported."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head><script src=\"https://cdn.plot.ly/plotly-2.0.0.min.js\"></script>"
                    "</head><body><div class=\"plotly-graph-div\"></div><script>undefinedFunction();</script>"
                    "</body></html>")
    found = report.browser_check(page, settle_ms=500)
    assert any("undefinedFunction" in e for e in found["errors"])
    assert any("cdn.plot.ly" in e for e in found["errors"])
    assert found["figures"] == 1 and found["drawn"] == 0 and not found["plotly"]


@pytest.mark.notebooks
@pytest.mark.parametrize("name", runs.NAMES)
def test_report_renders_offline(name):
    run = runs.run(name)
    assert run.error is None, run.error
    found = report.browser_check(run.html)
    assert found["errors"] == []
    assert found["plotly"]
    figures, webgl = EXPECTED[name]
    assert found["figures"] >= figures
    assert found["drawn"] == found["figures"]  # every plotly div got its SVG plot
    assert found["webgl_figures"] >= webgl
    if name == "04_latent_space":
        assert found["hover_thumbnails"] >= 1  # image previews attached to the latent-space figures
    text = run.html.read_text()
    if name == "06_per_taxon_accuracy":  # INTERACTIVE=True: the widget became a readable note
        assert "Interactive control (ipywidgets)" in text


@pytest.mark.notebooks
def test_figure_files_render_offline():
    """The figures/*.html files next to the metrics (one shared plotly.min.js) render too."""
    run = runs.run("04_latent_space")
    assert run.error is None, run.error
    found = report.browser_check(run.output_dir / "figures" / "latent_space.html")
    assert found["errors"] == [] and found["figures"] == found["drawn"] == found["webgl_figures"] == 1
