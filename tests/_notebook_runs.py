"""Executes the notebooks in ``notebooks/`` once per test session with their SMOKE parameters (shared by
test_notebooks.py and test_report_browser.py, so the browser check opens the very reports the notebook tests made).

The quickstart runs first; the analysis notebooks read its survey, run and embeddings, as in the main job.
02_train gets no DATA, so it makes its own tiny survey (the SMOKE fallback). 03_evaluate runs through the papermill
*command line* with ``-p`` (the scheduled-evaluation path); the others through the Python API.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
#: seconds any one cell may run (a SMOKE cell takes seconds): a cell that hangs fails its test with the notebook and
#: cell named (execute_notebook's ClibdError) instead of stalling the suite until CI's own limit
CELL_TIMEOUT = 600
NAMES = ("01_quickstart", "02_train", "03_evaluate", "04_latent_space", "05_unseen_species", "06_per_taxon_accuracy",
         "07_identify")


@dataclass
class Run:
    name: str
    parameters: dict[str, Any]
    output_dir: Path
    notebook: Path  # executed copy
    html: Path
    seconds: float
    error: str | None = None


@functools.lru_cache(maxsize=1)
def root() -> Path:
    path = Path(tempfile.mkdtemp(prefix="clibd-notebook-tests-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _quick() -> Path:
    return root() / "01_quickstart"


def parameters(name: str) -> dict[str, Any]:
    """The SMOKE parameters each notebook is run with."""
    out = {"OUTPUT_DIR": str(root() / name), "SMOKE": True, "DEVICE": "cpu"}
    if name in ("01_quickstart", "02_train"):
        return out
    q = _quick()
    out.update(DATA=str(q / "survey"), RUN=str(q / "run"), EMBEDDINGS=str(q / "embeddings.parquet"))
    if name == "03_evaluate":
        out["PREVIOUS_METRICS"] = str(q / "metrics.json")
    if name == "04_latent_space":
        out["INTERACTIVE"] = False
    if name == "06_per_taxon_accuracy":
        out["INTERACTIVE"] = True  # the widget must degrade to a note in the HTML report
    if name == "07_identify":
        import pandas as pd

        survey = pd.read_csv(q / "survey" / "records.csv")
        seen_key = survey[(survey["split"] == "seen_keys") & survey["dna_barcode"].notna()].iloc[0]
        photo = survey[survey["image"].notna()].iloc[0]
        out.update(QUERY_BARCODE=seen_key["dna_barcode"], QUERY_IMAGE=str(q / "survey" / photo["image"]))
    return out


def _papermill_cli(notebook: Path, output: Path, params: dict[str, Any]) -> str | None:
    exe = Path(sys.executable).parent / "papermill"
    cmd = [str(exe), str(notebook), str(output), "-k", "python3", "--cwd", str(root()),
           "--execution-timeout", str(CELL_TIMEOUT)]
    for key, value in params.items():
        cmd += ["-p", key, str(value)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return None if done.returncode == 0 else f"papermill exited {done.returncode}: {done.stderr[-3000:]}"


@functools.lru_cache(maxsize=None)
def run(name: str) -> Run:
    """Execute one notebook (the quickstart first when needed) and export its HTML report."""
    from clibd_toolkit.errors import ClibdError
    from clibd_toolkit.report import export_html, run_and_export

    if name != "01_quickstart" and name != "02_train":
        quick = run("01_quickstart")
        if quick.error:
            return Run(name, {}, root() / name, Path(), Path(), 0.0, f"the quickstart failed: {quick.error}")
    params = parameters(name)
    notebook = NOTEBOOK_DIR / f"{name}.ipynb"
    start = time.perf_counter()
    executed, html = root() / "notebooks" / f"{name}.ipynb", root() / "reports" / f"{name}.html"
    error = None
    if name == "03_evaluate":
        executed.parent.mkdir(parents=True, exist_ok=True)
        error = _papermill_cli(notebook, executed, params)
        if executed.is_file():
            export_html(executed, html, title=name)
    else:
        try:
            run_and_export(notebook, root(), params, name=name, cwd=root(), execution_timeout=CELL_TIMEOUT)
        except ClibdError as exc:
            error = str(exc)
    return Run(name, params, Path(params["OUTPUT_DIR"]), executed, html, time.perf_counter() - start, error)
