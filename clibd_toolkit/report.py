"""Headless notebook runs and HTML reports: execute with papermill, export with nbconvert, nothing fetched online.

- :func:`execute_notebook` runs a notebook with parameters (papermill, kernel ``python3`` by default). Unknown
  parameters are refused before any cell runs (papermill itself only warns); a failing cell raises a
  :class:`~clibd_toolkit.errors.ClibdError` naming the cell, while the executed notebook is still written with the
  failing cell marked (a CI artifact).
- :func:`export_html` writes the executed notebook as one self-contained HTML file: plotly figures (stored under
  plotly's mimetype by :func:`clibd_toolkit.viz.use_offline_renderer`) become HTML figures sharing one plotly.js
  embedded in the page, and the page loads nothing from a CDN (no require.js, MathJax, mermaid or widget manager). Interactive widget outputs, which
  need a live kernel, become a short note; the static figures next to them carry the content.
- :func:`find_chromium` and :func:`browser_check` open an exported page in headless Chromium and report what it
  shows (figures drawn, errors).

The numbers a report shows beside the figures (chance level, learning summary, comparison with an earlier run) are
:mod:`clibd_toolkit.baselines`; they are importable from here as well, for existing callers.
"""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Mapping

# The evaluate stage's baselines and the JSON writer, importable from here as well (notebooks written before they
# moved call them as ``report.*``); defined in clibd_toolkit.baselines and clibd_toolkit.io.
from .baselines import (  # noqa: F401
    chance_accuracy,
    check_regressions,
    compare_with_chance,
    compare_with_previous,
    comparison_counts,
    learning_summary,
    write_learning_summary,
)
from .errors import ClibdError, ConfigError
from .io import write_json  # noqa: F401

log = logging.getLogger(__name__)

DEFAULT_KERNEL = "python3"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ('<div class="clibd-widget-note" style="padding:6px 10px;border-left:4px solid #999;'
               'background:#f5f5f5;color:#444;font-size:90%">Interactive control (ipywidgets): it needs a live '
               "kernel. Open the notebook in JupyterLab to use it; the figures in this report show the same "
               "data.</div>")

# An nbconvert template without any network dependency: the lab template minus require.js, MathJax, mermaid and
# the widget manager (all loaded from CDNs by default).
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js -%}
{{ super() }}
{%- if resources.clibd_plotlyjs %}
<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>
<script type="text/javascript">{{ resources.clibd_plotlyjs }}</script>
{%- endif -%}
{%- endblock html_head_js -%}
"""


# --- running notebooks --------------------------------------------------------------------------------------------


def notebook_parameters(notebook: str | Path) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares (name -> papermill's inferred type, default and help)."""
    import papermill as pm

    return dict(pm.inspect_notebook(str(notebook)))


def _quiet_kernel_arguments(argv: list[str]) -> list[str]:
    """Kernel start-up arguments that keep an IPython kernel's own log to errors: ipykernel >= 7 warns on every start
    that its local TCP sockets are unencrypted, which would print once per notebook of every run. The notebook's own
    warnings and errors still reach its outputs; kernels other than ipykernel get no extra arguments."""
    return ["--IPKernelApp.log_level=ERROR"] if any("ipykernel" in part for part in argv) else []


def execute_notebook(notebook: str | Path, output: str | Path, parameters: Mapping[str, Any] | None = None, *,
                     kernel_name: str = DEFAULT_KERNEL, cwd: str | Path | None = None,
                     execution_timeout: int | None = None, progress: bool = False) -> Path:
    """Execute ``notebook`` with ``parameters`` and write the executed copy to ``output`` (papermill).

    Args:
        notebook: the .ipynb to run (it must have a cell tagged ``parameters``).
        output: where the executed notebook goes (folders are created).
        parameters: NAME -> value; every NAME must be declared in the notebook's parameters cell.
        kernel_name: Jupyter kernel (``python3`` = ipykernel of this environment).
        cwd: working folder of the kernel (default: the caller's).
        execution_timeout: seconds allowed per cell (None = no limit).
        progress: papermill's progress bar.

    Returns:
        ``output``.

    Raises:
        ConfigError: a parameter the notebook does not declare (before anything runs).
        ClibdError: a cell failed; the message names the cell and error, and ``output`` holds the executed
            notebook up to the failing cell. Also when a cell runs past ``execution_timeout`` or the kernel dies
            (then no executed copy is written; the message names the cell).
    """
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    notebook, output = Path(notebook), Path(output)
    if not notebook.is_file():
        raise ConfigError(f"notebook {notebook} does not exist")
    declared = notebook_parameters(notebook)
    unknown = [name for name in (parameters or {}) if name not in declared]
    if unknown:
        import difflib

        hints = {u: difflib.get_close_matches(u.upper(), list(declared), n=1) for u in unknown}
        said = ", ".join(f"{u!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for u, h in hints.items())
        raise ConfigError(f"{notebook.name} has no parameter {said}; it declares {', '.join(declared)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise ConfigError(f"no Jupyter kernel named {kernel_name!r}; install ipykernel in this environment "
                          "(pip install 'clibd-toolkit[notebooks]') for 'python3', or name an installed kernel "
                          "(jupyter kernelspec list)") from None
    try:
        pm.execute_notebook(str(notebook), str(output), parameters=dict(parameters or {}), kernel_name=kernel_name,
                            cwd=str(cwd) if cwd is not None else None, execution_timeout=execution_timeout,
                            progress_bar=progress, log_output=False, request_save_on_cell_execute=False,
                            extra_arguments=_quiet_kernel_arguments(spec.argv))
    except PapermillExecutionError as exc:
        evalue = " ".join(str(exc.evalue).split())
        raise ClibdError(f"{notebook.name} failed in cell {exc.exec_count} ({exc.ename}: {evalue}); the executed "
                         f"notebook with the failing cell marked is {output}") from None
    except CellTimeoutError as exc:
        # papermill passes these on as they are and writes no executed copy
        cell = " ".join(str(exc).split("-------------------")[1].split()) if "-------------------" in str(exc) else ""
        raise ClibdError(f"{notebook.name} stopped: a cell ran longer than execution_timeout={execution_timeout} s"
                         + (f" (the cell starting {cell[:160]!r})" if cell else "")
                         + f"; no executed copy was written to {output}. Allow more time (execution_timeout, "
                         "or --cell-timeout on the command line; None = no limit) or run the notebook in JupyterLab "
                         "to see where it waits") from None
    except DeadKernelError as exc:
        raise ClibdError(f"{notebook.name} stopped: its kernel died ({' '.join(str(exc).split())}), often out of "
                         f"memory; no executed copy was written to {output}. Run it with smaller inputs (SMOKE=True) "
                         "or on a machine with more memory") from None
    return output


# --- HTML export --------------------------------------------------------------------------------------------------


_TQDM_TEXT = re.compile(r"\d+%\|")  # tqdm's meter, the text/plain of its notebook progress-bar widget


def _strip_widgets(nb) -> int:
    """Replace widget-view outputs with a static note (progress bars, which say nothing once finished, are dropped)
    and drop the saved widget state; returns how many outputs were replaced or dropped."""
    changed = 0
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data and WIDGET_MIME in data:
                changed += 1
                text = data.get("text/plain", "")
                if _TQDM_TEXT.search("".join(text) if isinstance(text, list) else str(text)):
                    continue
                data.pop(WIDGET_MIME)
                data.pop("text/plain", None)
                data["text/html"] = WIDGET_NOTE
            kept.append(out)
        if "outputs" in cell:
            cell["outputs"] = kept
    return changed


def _plotly_to_html(nb) -> tuple[int, bool]:
    """Give every plotly-mimetype output an HTML figure (its ``text/html``: a div and its ``Plotly.newPlot`` call,
    without plotly.js). Returns (figures converted, whether an output already embeds plotly.js itself: notebooks
    executed with the earlier renderer carry it once)."""
    from plotly.offline import get_plotlyjs

    from .viz.output import PLOTLY_MIME, figure_dict_html

    library_start = get_plotlyjs()[:200]
    converted, embedded = 0, False
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data") or {}
            if PLOTLY_MIME in data:
                data["text/html"] = figure_dict_html(data.pop(PLOTLY_MIME))
                data.pop("image/png", None)  # JupyterLab's snapshot of the drawn figure
                converted += 1
            elif "text/html" in data:
                text = data["text/html"]
                text = "".join(text) if isinstance(text, list) else str(text)
                embedded = embedded or (len(text) > 1_000_000 and library_start in text)
    return converted, embedded


def export_html(notebook: str | Path, html_path: str | Path, *, hide_input: bool = False,
                title: str | None = None) -> Path:
    """Export an executed notebook as one offline HTML file (see the module docstring).

    Args:
        notebook: the executed .ipynb.
        html_path: the .html to write.
        hide_input: leave the code cells out (a report for readers who do not need the code).
        title: page title (default: the notebook's file name).

    Returns:
        ``html_path``.
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    from .io import atomic_write_text

    nb = nbformat.read(str(notebook), as_version=4)
    _strip_widgets(nb)
    figures, embedded = _plotly_to_html(nb)
    resources: dict[str, Any] = {"metadata": {"name": Path(notebook).stem}}
    if figures and not embedded:
        from plotly.offline import get_plotlyjs

        resources["clibd_plotlyjs"] = get_plotlyjs()  # once, in <head>: every figure of the page shares it
    if title:
        nb.metadata["title"] = title
    exporter = HTMLExporter(template_name="lab", extra_loaders=[jinja2.DictLoader({"clibd_offline.j2": _OFFLINE_TEMPLATE})],
                            template_file="clibd_offline.j2", exclude_input=hide_input,
                            exclude_input_prompt=hide_input, exclude_output_prompt=hide_input)
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    html_path = Path(html_path)
    atomic_write_text(html_path, body)
    return html_path


def run_and_export(notebook: str | Path, out_dir: str | Path, parameters: Mapping[str, Any] | None = None, *,
                   name: str | None = None, kernel_name: str = DEFAULT_KERNEL, cwd: str | Path | None = None,
                   execution_timeout: int | None = None, hide_input: bool = False) -> dict[str, Any]:
    """Execute a notebook into ``out_dir/notebooks/NAME.ipynb`` and export ``out_dir/reports/NAME.html``.

    The HTML is written even when a cell fails (then showing the error), and the error is raised afterwards.

    Returns:
        ``{"name", "notebook", "html", "seconds"}``.
    """
    notebook = Path(notebook)
    name = name or notebook.stem
    out_dir = Path(out_dir)
    executed = out_dir / "notebooks" / f"{name}.ipynb"
    html_path = out_dir / "reports" / f"{name}.html"
    start = time.perf_counter()
    try:
        execute_notebook(notebook, executed, parameters, kernel_name=kernel_name, cwd=cwd,
                         execution_timeout=execution_timeout)
    except ClibdError:
        if executed.is_file():
            export_html(executed, html_path, hide_input=hide_input, title=f"{name} (FAILED)")
        raise
    export_html(executed, html_path, hide_input=hide_input, title=name)
    return {"name": name, "notebook": executed, "html": html_path, "seconds": time.perf_counter() - start}


# --- checking a report in a real browser -------------------------------------------------------------------------

# Injected first into <head>: records script errors and failed resource loads (capture phase), then, after the
# page has loaded and plotly has drawn, writes what it found into the DOM for --dump-dom to return.
_BROWSER_PROBE = """<script>
window.__clibdErrors = [];
window.addEventListener('error', function (e) {
  var where = e.filename || (e.target && (e.target.src || e.target.href)) || '';
  window.__clibdErrors.push(String(e.message || ('failed to load ' + (e.target && e.target.tagName))) + ' @ ' + where);
}, true);
window.addEventListener('unhandledrejection', function (e) { window.__clibdErrors.push('unhandled rejection: ' + e.reason); });
window.addEventListener('load', function () {
  setTimeout(function () {
    var divs = document.querySelectorAll('.plotly-graph-div');
    var drawn = 0, gl = 0, thumbs = document.querySelectorAll('img.clibd-hover-thumbnail').length;
    divs.forEach(function (d) {
      if (d.querySelector('.plot-container svg.main-svg')) { drawn += 1; }
      if (d.querySelector('canvas')) { gl += 1; }
    });
    var out = document.createElement('pre');
    out.id = 'clibd-browser-check';
    out.textContent = JSON.stringify({errors: window.__clibdErrors, figures: divs.length, drawn: drawn,
                                      webgl_figures: gl, hover_thumbnails: thumbs,
                                      plotly: typeof window.Plotly !== 'undefined'});
    document.body.appendChild(out);
  }, %d);
});
</script>"""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable on PATH (Debian's ``chromium`` first), or None."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_check(html_path: str | Path, *, chromium: str | None = None, settle_ms: int = 3000,
                  timeout: int = 180) -> dict[str, Any]:
    """Open an HTML report in headless Chromium with the network blocked, and report what rendered.

    A copy of the page (written next to it for a moment, so relative resources resolve) gets a probe script that
    records script errors and failed loads; Chromium runs the page (``--dump-dom`` with a virtual-time budget) and
    the probe's findings come back from the DOM.

    Returns:
        ``{"errors": [...], "figures": n plotly divs, "drawn": n with an SVG plot drawn, "webgl_figures": n with a
        WebGL canvas, "hover_thumbnails": n thumbnail overlays attached, "plotly": plotly.js loaded}``.

    Raises:
        ConfigError: no Chromium found (install Debian's ``chromium``).
        ClibdError: Chromium failed or the probe result is missing.
    """
    import subprocess
    import tempfile
    import uuid

    chromium = chromium or find_chromium()
    if chromium is None:
        raise ConfigError("no Chromium found on PATH; install it (Debian: apt-get install chromium)")
    source = Path(html_path).read_text(encoding="utf-8")
    head = source.find("<head>")
    if head < 0:
        raise ClibdError(f"{html_path} has no <head>; not an HTML report")
    probe = _BROWSER_PROBE % settle_ms
    # the probed copy sits next to the original, so that relative resources (figures/plotly.min.js) resolve
    page = Path(html_path).resolve().with_name(f".clibd-browser-check-{uuid.uuid4().hex[:12]}.html")
    try:
        page.write_text(source[: head + 6] + probe + source[head + 6:], encoding="utf-8")
        with tempfile.TemporaryDirectory(prefix="clibd-browser-") as tmp:
            cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--no-first-run", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
                   f"--user-data-dir={tmp}/profile", f"--virtual-time-budget={settle_ms + 20000}", "--dump-dom",
                   page.as_uri()]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise ClibdError(f"Chromium did not finish rendering {html_path} within {timeout} s") from None
    finally:
        page.unlink(missing_ok=True)
    match = re.search(r'<pre id="clibd-browser-check">(.*?)</pre>', done.stdout, re.S)
    if not match:
        raise ClibdError(f"Chromium returned no result for {html_path} (exit {done.returncode}): "
                         f"{done.stderr.strip()[-500:]}")
    import html as html_lib

    return json.loads(html_lib.unescape(match.group(1)))
