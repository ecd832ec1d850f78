"""The notebooks in a live JupyterLab, driven through Debian's headless Chromium with Playwright (no browser is
downloaded: ``executable_path`` is the system Chromium), as a person would use them:

- 04_latent_space and 06_per_taxon_accuracy run top to bottom with SMOKE inputs; every figure is drawn;
- an explorer dropdown redraws its figure (04: colour by family changes the traces and legend; 06: the chart
  becomes a treemap);
- after a reload of the browser tab (the kernel keeps running) a single figure cell re-run renders again;
- nothing is requested from anywhere but the local server (no CDN) and no script fails.

Skipped, with the reason, when Chromium or the ``playwright`` package is absent (``.ci/run`` installs Debian's
chromium; playwright comes with the ``test`` extra).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from clibd_toolkit import report

pytestmark = [pytest.mark.browser, pytest.mark.notebooks, pytest.mark.slow]

CHROMIUM = report.find_chromium()
if CHROMIUM is None:
    pytest.skip("headless Chromium not found on PATH (Debian: apt-get install -y chromium; .ci/run installs it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (it is in the "
                               "`test` extra: scripts/setup-venv.sh test)")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
#: JavaScript: every plotly figure inside the elements matching a selector, with what was drawn
#: the notebook in front (JupyterLab restores the tabs of earlier sessions behind it)
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
FIGURES_JS = """([selector, source]) => Array.from(document.querySelectorAll(selector)).filter(
    (host) => !source || (host.closest('.jp-Cell').querySelector('.jp-InputArea') || {}).textContent.includes(source)
    ).flatMap((host) => Array.from(host.querySelectorAll('.js-plotly-plot'))).map((gd) => ({
        drawn: !!gd.querySelector('.main-svg'),
        traces: (gd.data || []).length,
        type: gd.data && gd.data.length ? gd.data[0].type : null,
        legend: gd.querySelectorAll('.legend .traces').length,
        legend_title: (gd.querySelector('.legend .legendtitletext') || {}).textContent || null,
        title: (gd.querySelector('.gtitle') || {}).textContent || null}))"""
#: JavaScript: hover a point that has a thumbnail in the first figure with thumbnails; where the overlay and the
#: legend are (page coordinates), or null when no figure has thumbnails
HOVER_JS = """() => {
    const gd = Array.from(document.querySelectorAll('%s .js-plotly-plot')).find(
        (g) => g.layout && g.layout.meta && g.layout.meta.thumbnails && g.querySelector('.legend'));
    if (!gd) { return null; }
    const id = Object.keys(gd.layout.meta.thumbnails)[0];
    gd.emit('plotly_hover', {points: [{customdata: [id]}]});
    const img = gd.querySelector('img.clibd-hover-thumbnail');
    const box = (el) => { const r = el.getBoundingClientRect();
                          return {left: r.left, top: r.top, right: r.right, bottom: r.bottom}; };
    return {shown: !!img && getComputedStyle(img).display !== 'none' && !!img.src, overlay: img ? box(img) : null,
            legend: box(gd.querySelector('.legend')), graph: box(gd)};
}""" % PANEL
#: user settings of the test's JupyterLab: no autosave (a reload shows the notebook as last saved), no news fetch
SETTINGS = {"@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
            "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                               "checkForUpdates": False}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 (free port, random token) over a folder holding 04 and 06 with their
    parameters injected (papermill --prepare-only): SMOKE inputs made once, INTERACTIVE on."""
    import papermill as pm

    from clibd_toolkit.demo import make_smoke_inputs

    root = tmp_path_factory.mktemp("lab")
    inputs = make_smoke_inputs(root / "smoke-inputs", seed=0)
    for name in ("04_latent_space", "06_per_taxon_accuracy"):
        params = {"DATA": str(inputs["data"]), "RUN": str(inputs["run"]), "EMBEDDINGS": str(inputs["embeddings"]),
                  "OUTPUT_DIR": str(root / f"{name}-output"), "SMOKE": True, "DEVICE": "cpu", "INTERACTIVE": True}
        pm.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(root / f"{name}.ipynb"), parameters=params,
                            prepare_only=True, progress_bar=False)
    settings = root / ".lab-settings"
    for rel, value in SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(root / ".workspaces"),
               JUPYTER_RUNTIME_DIR=str(root / ".runtime"), PYTHONHASHSEED="0")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(root / "jupyterlab.log", "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"JupyterLab did not start: {(root / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.3)
        yield {"base": base, "token": token, "root": root}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-dev-shm-usage", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"])
        try:
            yield chromium
        finally:
            chromium.close()


class Session:
    """One browser tab on the lab, recording script errors and every request that left the local server."""

    def __init__(self, browser, lab):
        self.lab = lab
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(f"console: {msg.text}"))
        self.page.on("dialog", lambda dialog: dialog.accept())  # "leave the page?" on reload with unsaved changes

    def _route(self, route):
        if route.request.url.startswith(self.lab["base"]) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.context.close()

    def open(self, notebook: str) -> None:
        # a workspace of its own, reset: no tab of another session is restored next to the notebook
        workspace = f"test-{secrets.token_hex(4)}"
        self.page.goto(f"{self.lab['base']}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.lab['token']}")
        self.wait_idle(notebook)

    def wait_idle(self, notebook: str, timeout: float = 60) -> None:
        self.page.locator(f"{PANEL} .jp-Notebook").wait_for(timeout=timeout * 1000)
        self.page.wait_for_function("""(panel) => {
            const s = document.querySelector(panel + ' .jp-Notebook-ExecutionIndicator');
            return s && s.getAttribute('data-status') === 'idle'; }""", arg=PANEL, timeout=timeout * 1000)
        # and the status bar reports the kernel (it does once the page is connected to it)
        self.page.locator(".jp-StatusBar-Item", has_text=re.compile(r"\|\s*Idle")).first.wait_for(
            timeout=timeout * 1000)

    def menu(self, menu: str, item: str) -> None:
        self.page.get_by_role("menuitem", name=menu, exact=True).click()
        self.page.get_by_role("menuitem", name=item, exact=True).click()

    def run_all(self, timeout: float = 240) -> None:
        # a Run All sent while the page is still connecting to the kernel can be lost: until a cell starts, retry
        for _ in range(4):
            self.menu("Run", "Run All Cells")
            try:
                self.page.wait_for_function("""(panel) => Array.from(document.querySelectorAll(
                    panel + ' .jp-CodeCell .jp-InputPrompt')).some((p) => /\\[(\\*|\\d+)\\]/.test(p.textContent))""",
                                            arg=PANEL, timeout=15_000, polling=250)
                break
            except sync_api.TimeoutError:
                continue
        self.wait_done("", timeout)

    def wait_done(self, source: str, timeout: float) -> None:
        """Until every code cell (or the one whose code holds ``source``) has run and the kernel is idle, or a cell
        failed."""
        try:
            self.page.wait_for_function("""([panel, source]) => {
                const nb = document.querySelector(panel);
                if (!nb) { return false; }
                if (nb.querySelector('.jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]')) {
                    return true;  // a cell failed: the caller reports its traceback
                }
                const s = nb.querySelector('.jp-Notebook-ExecutionIndicator');
                const cells = Array.from(nb.querySelectorAll('.jp-CodeCell')).filter(
                    (c) => !source || (c.querySelector('.jp-InputArea') || {}).textContent.includes(source));
                return s && s.getAttribute('data-status') === 'idle' && cells.length > 0 && cells.every(
                    (c) => /\\[\\d+\\]/.test((c.querySelector('.jp-InputPrompt') || {}).textContent || ''));
            }""", arg=[PANEL, source], timeout=timeout * 1000, polling=500)
        except sync_api.TimeoutError:
            state = self.page.evaluate("""(panel) => ({
                status: (document.querySelector(panel + ' .jp-Notebook-ExecutionIndicator') || {
                    getAttribute: () => null}).getAttribute('data-status'),
                prompts: Array.from(document.querySelectorAll(panel + ' .jp-CodeCell .jp-InputPrompt')).map(
                    (p) => p.textContent)})""", PANEL)
            shot = self.lab["root"] / f"timeout-{int(time.time())}.png"
            self.page.screenshot(path=str(shot))
            pytest.fail(f"cells still running after {timeout} s: {state}; screenshot {shot}; errors {self.errors}")

    def cell(self, source_start: str):
        return self.page.locator(f"{PANEL} .jp-CodeCell",
                                 has=self.page.locator(".jp-InputArea", has_text=source_start))

    def run_cell(self, source_start: str, timeout: float = 60) -> None:
        cell = self.cell(source_start)
        cell.scroll_into_view_if_needed()
        cell.locator(".jp-InputArea-prompt").click()  # select the cell (command mode)
        self.page.keyboard.press("Control+Enter")
        self.wait_done(source_start, timeout)

    def figures(self, selector: str, *, source: str = "", wait_for: int = 1, timeout: float = 30) -> list[dict]:
        """The plotly figures inside ``selector`` (in the cell whose code holds ``source``, when given), once at
        least ``wait_for`` of them are drawn (or after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.page.evaluate(FIGURES_JS, [f"{PANEL} {selector}", source])
            if sum(f["drawn"] for f in found) >= wait_for or time.monotonic() > deadline:
                return found
            self.page.wait_for_timeout(300)

    def failed_cells(self) -> list[str]:
        """Tracebacks shown in the notebook."""
        return self.page.locator(f'{PANEL} .jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]'
                                 ).all_inner_texts()


def _plotly_errors(errors: list[str]) -> list[str]:
    return [e for e in errors if "plotly" in e.lower() or "pageerror" in e]


def test_latent_space_explorer_and_reload(lab, browser):
    with Session(browser, lab) as s:
        start = time.monotonic()
        s.open("04_latent_space.ipynb")
        s.run_all()
        assert s.failed_cells() == []
        static = s.figures(".jp-Cell:not(:has(.widget-output)) .jp-OutputArea", wait_for=3)
        assert len(static) >= 3 and all(f["drawn"] for f in static), static
        assert {f["type"] for f in static} == {"scattergl"}
        hovered = s.page.evaluate(HOVER_JS)  # an image point: its thumbnail shows, inside the figure, off the legend
        assert hovered and hovered["shown"], hovered
        img, legend, graph = hovered["overlay"], hovered["legend"], hovered["graph"]
        assert graph["left"] <= img["left"] and img["right"] <= graph["right"] and graph["top"] <= img["top"]
        assert (img["right"] <= legend["left"] or legend["right"] <= img["left"] or img["bottom"] <= legend["top"]
                or legend["bottom"] <= img["top"]), hovered
        explorer = ".widget-output"
        before = s.figures(explorer)
        assert len(before) == 1 and before[0]["drawn"] and before[0]["legend_title"] == "order", before
        s.page.locator(f"{PANEL} .widget-dropdown", has_text="colour by").locator("select").select_option("family")
        deadline = time.monotonic() + 30
        while (after := s.figures(explorer))[0]["legend_title"] != "family" and time.monotonic() < deadline:
            s.page.wait_for_timeout(300)
        assert after[0]["drawn"] and after[0]["legend_title"] == "family", after
        assert after[0]["traces"] != before[0]["traces"] and after[0]["legend"] != before[0]["legend"]

        # reload the tab (the kernel keeps running) and re-run a single figure cell: it must render again
        s.page.reload()
        s.wait_idle("04_latent_space.ipynb")
        s.run_cell("fig_family = viz.plot_latent_space")
        again = s.figures(".jp-Cell .jp-OutputArea", source="fig_family = viz.plot_latent_space")
        assert len(again) == 1 and again[0]["drawn"] and again[0]["legend_title"] == "family", (again, s.errors)
        assert _plotly_errors(s.errors) == []
        assert s.outside == []  # nothing fetched from the network (no CDN)
        assert time.monotonic() - start < 120


def test_per_taxon_explorer(lab, browser):
    with Session(browser, lab) as s:
        s.open("06_per_taxon_accuracy.ipynb")
        s.run_all()
        assert s.failed_cells() == []
        static = s.figures(".jp-Cell:not(:has(.widget-output)) .jp-OutputArea", wait_for=2)
        assert len(static) >= 2 and all(f["drawn"] for f in static), static
        explorer = ".widget-output"
        before = s.figures(explorer, wait_for=2)
        assert [f["type"] for f in before] == ["sunburst", "scatter"], before
        s.page.locator(f"{PANEL} .widget-dropdown", has_text="chart").locator("select").select_option("treemap")
        deadline = time.monotonic() + 30
        while (after := s.figures(explorer, wait_for=2))[0]["type"] != "treemap" and time.monotonic() < deadline:
            s.page.wait_for_timeout(300)
        assert [f["type"] for f in after] == ["treemap", "scatter"] and all(f["drawn"] for f in after), after
        assert s.page.locator(f"{PANEL} table.clibd-sortable").count() == 1
        assert _plotly_errors(s.errors) == [] and s.outside == []
