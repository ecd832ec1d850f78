"""clibd_toolkit.report: offline HTML export, notebook execution errors, and the `clibd report` options (the chance
levels and regression checks it shows are tests/test_baselines.py)."""
from __future__ import annotations

import re
import time

import nbformat
import plotly.graph_objects as go
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from clibd_toolkit import report, viz
from clibd_toolkit.cli import report as report_cli
from clibd_toolkit.errors import ClibdError, ConfigError

# --- HTML export ----------------------------------------------------------------------------------------------------


def _executed_notebook(tmp_path, *, legacy: bool = False):
    """An executed-looking notebook: two plotly figures through the offline renderer (plotly mimetype; with
    ``legacy``, the earlier renderer's HTML with plotly.js displayed once before), a widget view, a table."""
    import plotly.io as pio

    figures = [go.Figure(go.Scattergl(x=[1, 2, 3], y=[3, 1, 2])), go.Figure(go.Bar(y=[1, 2]))]
    previous = pio.renderers.default
    try:
        viz.use_offline_renderer()
        bundles = [pio.renderers._build_mime_bundle(f.to_dict()) for f in figures]
    finally:
        pio.renderers.default = previous
    from plotly.offline import get_plotlyjs

    cells = []
    if legacy:
        cells.append(new_code_cell("init", outputs=[new_output("display_data", data={
            "text/html": f"<script>{get_plotlyjs()}</script>"})]))
        bundles = [{"text/html": viz.figure_html(f, include_plotlyjs=False, full_html=False)} for f in figures]
    else:
        bundles[1]["image/png"] = "iVBORw0KGgo="  # JupyterLab's snapshot of a drawn figure
    nb = new_notebook(cells=[
        *cells,
        new_code_cell("fig", outputs=[new_output("display_data", data=bundles[0])]),
        new_code_cell("widget", outputs=[new_output("display_data", data={
            report.WIDGET_MIME: {"model_id": "abc", "version_major": 2, "version_minor": 0},
            "text/plain": "VBox(children=(...))"})]),
        new_code_cell("print(1)", outputs=[new_output("stream", name="stdout", text="hello report\n")]),
        new_code_cell("bar", outputs=[new_output("display_data", data={
            report.WIDGET_MIME: {"model_id": "def", "version_major": 2, "version_minor": 0},
            "text/plain": "embedding:  40%|####      | 120/300 [00:02<00:03, 55.1rec/s]"})]),
        new_code_cell("fig2", outputs=[new_output("display_data", data=bundles[1])]),
    ])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / ("legacy.ipynb" if legacy else "executed.ipynb")
    nbformat.write(nb, str(path))
    return path


def test_export_html_is_offline(tmp_path):
    from plotly.offline import get_plotlyjs

    path = report.export_html(_executed_notebook(tmp_path), tmp_path / "out.html", title="My report")
    text = path.read_text()
    assert "<title>My report</title>" in text
    assert "hello report" in text and text.count("Plotly.newPlot") == 2  # both mimetype figures became HTML
    assert text.count(get_plotlyjs()[:200]) == 1  # one plotly.js for the page, in <head> before the figures
    assert text.index(get_plotlyjs()[:200]) < text.index("</head>") < text.index("Plotly.newPlot")
    assert "clibd-plotly-fallback" not in text and "iVBORw0KGgo=" not in text
    external = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?:[^"]*)"', text)
    assert external == []  # no require.js, MathJax, mermaid or widget manager from a CDN
    assert "require.min.js" not in text and "html-manager" not in text
    assert text.count("Interactive control (ipywidgets)") == 1 and "VBox(children" not in text
    assert "120/300" not in text  # a tqdm progress-bar widget is dropped, not turned into a note
    hidden = report.export_html(_executed_notebook(tmp_path), tmp_path / "hidden.html", hide_input=True).read_text()
    assert "print(1)" not in hidden and "hello report" in hidden


def test_export_html_of_a_notebook_run_with_the_earlier_renderer(tmp_path):
    """Notebooks executed before the mimetype renderer carry plotly.js once themselves: not added a second time."""
    from plotly.offline import get_plotlyjs

    text = report.export_html(_executed_notebook(tmp_path, legacy=True), tmp_path / "old.html").read_text()
    assert text.count(get_plotlyjs()[:200]) == 1 and text.count("Plotly.newPlot") == 2


def test_export_html_without_figures_has_no_plotly_js(tmp_path):
    from plotly.offline import get_plotlyjs

    nb = new_notebook(cells=[new_code_cell("print(1)", outputs=[new_output("stream", name="stdout", text="1\n")])])
    nbformat.write(nb, str(tmp_path / "plain.ipynb"))
    text = report.export_html(tmp_path / "plain.ipynb", tmp_path / "plain.html").read_text()
    assert get_plotlyjs()[:200] not in text and len(text) < 1_000_000


# --- executing notebooks ------------------------------------------------------------------------------------------


def _notebook(tmp_path, body: str):
    params = new_code_cell("VALUE: int = 1  # a number")
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_unknown_parameter_is_refused_before_running(tmp_path):
    path = _notebook(tmp_path, "raise SystemExit('must not run')")
    assert set(report.notebook_parameters(path)) == {"VALUE"}
    with pytest.raises(ConfigError, match=r"no parameter 'VALEU' \(did you mean 'VALUE'\?\)"):
        report.execute_notebook(path, tmp_path / "out.ipynb", {"VALEU": 2})
    assert not (tmp_path / "out.ipynb").exists()
    with pytest.raises(ConfigError, match="does not exist"):
        report.execute_notebook(tmp_path / "nope.ipynb", tmp_path / "out.ipynb")
    with pytest.raises(ConfigError, match="no Jupyter kernel named 'no-such-kernel'"):
        report.execute_notebook(path, tmp_path / "out.ipynb", kernel_name="no-such-kernel")


def test_failing_cell_raises_and_still_writes_both_files(tmp_path):
    path = _notebook(tmp_path, "assert VALUE == 1, f'VALUE was {VALUE}'")
    with pytest.raises(ClibdError, match="failed in cell 3 .*AssertionError: VALUE was 7") as info:
        report.run_and_export(path, tmp_path / "out", {"VALUE": 7}, name="check")
    assert "out/notebooks/check.ipynb" in str(info.value)
    executed = nbformat.read(str(tmp_path / "out" / "notebooks" / "check.ipynb"), as_version=4)
    assert any(o.get("ename") == "AssertionError" for c in executed.cells for o in c.get("outputs", []))
    html = (tmp_path / "out" / "reports" / "check.html").read_text()
    assert "check (FAILED)" in html and "VALUE was 7" in html
    ok = report.run_and_export(path, tmp_path / "out2", {"VALUE": 1})
    assert ok["html"].is_file() and ok["notebook"].is_file() and ok["seconds"] > 0


def test_a_cell_past_its_time_limit_is_a_clear_error(tmp_path):
    path = _notebook(tmp_path, "import time\ntime.sleep(60)")
    started = time.perf_counter()
    with pytest.raises(ClibdError, match=r"nb.ipynb stopped: a cell ran longer than execution_timeout=2 s "
                                         r"\(the cell starting 'import time time.sleep\(60\)'\).*Allow more time"):
        report.execute_notebook(path, tmp_path / "out.ipynb", {"VALUE": 1}, execution_timeout=2)
    assert time.perf_counter() - started < 50  # stopped at the limit, not after the sleep
    assert not (tmp_path / "out.ipynb").exists()


def test_parse_value_like_papermill():
    assert report_cli._parse_value("True") is True and report_cli._parse_value("None") is None
    assert report_cli._parse_value("3") == 3 and isinstance(report_cli._parse_value("3"), int)
    assert report_cli._parse_value("1e-3") == pytest.approx(0.001)
    assert report_cli._parse_value("dna->dna") == "dna->dna"


def test_report_cli_arguments():
    import argparse

    parser = argparse.ArgumentParser()
    report_cli.add_report_arguments(parser)
    args = parser.parse_args(["nb.ipynb", "--out", "o", "-p", "EPOCHS", "3", "-r", "SEED_TEXT", "7", "--hide-input"])
    assert args.parameter == [["EPOCHS", "3"]] and args.raw_parameter == [["SEED_TEXT", "7"]] and args.hide_input


def test_kernel_start_up_log_stays_quiet_but_notebook_warnings_are_kept(tmp_path, capfd):
    path = _notebook(tmp_path, "import warnings; warnings.warn(f'notebook warning {VALUE}')")
    report.execute_notebook(path, tmp_path / "out.ipynb", {"VALUE": 3})
    err = capfd.readouterr().err  # the kernel process writes its log to the inherited stderr
    assert "without encryption" not in err and "IPKernelApp" not in err
    executed = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    texts = [o.get("text", "") for c in executed.cells for o in c.get("outputs", [])]
    assert any("notebook warning 3" in t for t in texts)
    assert report._quiet_kernel_arguments(["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    assert report._quiet_kernel_arguments(["R", "--slave", "-e", "IRkernel::main()"]) == []
