"""The main job (``clibd demo``): the whole toolkit on its embedded default, the built-in survey simulator.

It runs the quickstart notebook (simulate a survey, assign CLIBD splits, train the ``cpu`` preset on image + DNA +
taxonomy text, embed, evaluate with the CLIBD protocol) and the analysis notebooks it feeds (evaluation table,
latent space, unseen species, per-taxon accuracy, identification) headless with papermill, and leaves everything in
one folder::

    OUT/index.html                 start here: links to every report, achieved vs chance retrieval, timings
    OUT/summary.json               the same numbers for scripts
    OUT/reports/NN_name.html       offline HTML reports (plotly.js embedded, nothing fetched online)
    OUT/notebooks/NN_name.ipynb    the executed notebooks
    OUT/NN_name/                   each notebook's OUTPUT_DIR: metrics.json, per_taxon.csv, figures/*.html, ...
    OUT/01_quickstart/survey/      the simulated survey (records.csv + images/)
    OUT/01_quickstart/run/         the training run (checkpoints, history.csv)

:func:`make_smoke_inputs` builds the tiny survey + model that notebooks use under ``SMOKE=True``.
"""
from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: the notebooks of the main job, in order (the quickstart feeds the others)
DEMO_NOTEBOOKS: tuple[str, ...] = ("01_quickstart", "03_evaluate", "04_latent_space", "05_unseen_species",
                                   "06_per_taxon_accuracy", "07_identify")
#: the cross-modal pairs the summary reports against chance
HEADLINE_PAIRS: tuple[str, ...] = ("image->dna", "dna->image", "image->text", "dna->text", "image->image", "dna->dna")


def notebook_dir() -> Path:
    """The folder holding the toolkit's notebooks (``notebooks/`` of the source tree, or a copy in the package).

    Raises:
        ConfigError: neither exists (a non-editable install without the notebooks).
    """
    from .errors import ConfigError

    here = Path(__file__).resolve().parent
    for candidate in (here / "notebooks", here.parent / "notebooks"):
        if (candidate / "01_quickstart.ipynb").is_file():
            return candidate
    raise ConfigError(f"the notebooks were not found next to the package ({here / 'notebooks'} or "
                      f"{here.parent / 'notebooks'}); install clibd_toolkit from a clone with `pip install -e .`")


# --- smoke inputs ---------------------------------------------------------------------------------------------


def make_smoke_inputs(out_dir: str | Path, *, seed: int = 0, records: int = 300) -> dict[str, Path]:
    """A tiny simulated survey (32 px images, CLIBD splits) and a ``tiny`` model trained for a few steps, with the
    survey's embeddings: seconds on a CPU. Made once; a later call with the same folder reuses it.

    Returns:
        ``{"data": survey folder, "run": run folder, "embeddings": embeddings.parquet}``.
    """
    from .config import TrainConfig
    from .embed import extract_embeddings
    from .io import atomic_write_text
    from .presets import get_preset
    from .readers import load_records
    from .simulator import SimulatorConfig, write_survey
    from .training import train

    out = Path(out_dir)
    paths = {"data": out / "survey", "run": out / "run", "embeddings": out / "embeddings.parquet"}
    done = out / "smoke-inputs.json"
    settings = {"seed": seed, "records": records}
    if done.is_file() and json.loads(done.read_text()) == settings and all(p.exists() for p in paths.values()):
        return paths
    sim = SimulatorConfig(seed=seed, records=records, orders=3, families=3, genera=8, species=20, image_size=32,
                          abundance_sigma=0.3)
    write_survey(paths["data"], sim, splits=True, progress=False, overwrite=True)
    data = load_records(paths["data"])
    if paths["run"].exists():
        import shutil

        shutil.rmtree(paths["run"])
    result = train(data, get_preset("tiny"), TrainConfig(epochs=1, batch_size=32, max_steps=3, seed=seed,
                                                          progress=False, device="cpu"), paths["run"])
    extract_embeddings(result.model, data, progress=False).save(paths["embeddings"])
    atomic_write_text(done, json.dumps(settings) + "\n")
    return paths


# --- the plan -------------------------------------------------------------------------------------------------


#: what ``clibd demo`` writes in its --out folder (a folder holding only these is its own earlier output)
DEMO_ENTRIES: tuple[str, ...] = (*DEMO_NOTEBOOKS, "notebooks", "reports", "index.html", "summary.json")


def demo_plan(out: Path, *, smoke: bool = False, records: int | None = None, epochs: int | None = None,
              seed: int = 0, device: str = "auto", preset: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The notebooks of the main job with their papermill parameters (absolute paths inside ``out``)."""
    out = out.resolve()
    quick = out / "01_quickstart"
    qs: dict[str, Any] = {"OUTPUT_DIR": str(quick), "SEED": seed, "DEVICE": device, "SMOKE": smoke}
    if records is not None:
        qs["RECORDS"] = records
    if epochs is not None:
        qs["EPOCHS"] = epochs
    if preset is not None:
        qs["PRESET"] = preset
    shared = {"DATA": str(quick / "survey"), "RUN": str(quick / "run"), "EMBEDDINGS": str(quick / "embeddings.parquet"),
              "SEED": seed, "DEVICE": device, "SMOKE": smoke}
    plan: list[tuple[str, dict[str, Any]]] = [("01_quickstart", qs)]
    for name in DEMO_NOTEBOOKS[1:]:
        params = {**shared, "OUTPUT_DIR": str(out / name)}
        if name in ("04_latent_space", "06_per_taxon_accuracy"):
            params["INTERACTIVE"] = False
        plan.append((name, params))
    return plan


# --- summary --------------------------------------------------------------------------------------------------


def summarise(out: Path) -> dict[str, Any]:
    """Headline numbers from the quickstart's outputs: top-1 macro accuracy vs chance per pair and rank."""
    quick = out / "01_quickstart"
    summary: dict[str, Any] = {}
    path = quick / "vs_chance.csv"
    if path.is_file():
        import pandas as pd

        table = pd.read_csv(path)
        summary["vs_chance"] = table.to_dict(orient="records")
    learning = quick / "learning.json"
    if learning.is_file():
        summary["learning"] = json.loads(learning.read_text())
    return summary


def _fmt(value: Any, percent: bool = True) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "-"
    if v != v:
        return "-"
    return f"{100 * v:.1f}%" if percent else f"{v:.1f}x"


def write_index(out: Path, results: list[dict[str, Any]], summary: dict[str, Any], failures: list[str],
                seconds: float) -> Path:
    """``OUT/index.html``: links to the reports, achieved vs chance retrieval, timings (plain offline HTML)."""
    from .io import atomic_write_text

    rows = []
    for r in results:
        link = Path(r["html"]).relative_to(out).as_posix()
        nb = Path(r["notebook"]).relative_to(out).as_posix()
        state = "failed" if r.get("failed") else "ok"
        rows.append(f'<tr><td><a href="{html.escape(link)}">{html.escape(r["name"])}</a></td>'
                    f'<td><a href="{html.escape(nb)}">{html.escape(nb)}</a></td><td>{state}</td>'
                    f'<td style="text-align:right">{r["seconds"]:.0f} s</td></tr>')
    chance_rows = []
    for c in summary.get("vs_chance", []):
        if c.get("rank") not in ("order", "species"):
            continue
        chance_rows.append(f"<tr><td>{html.escape(str(c['query']))}-&gt;{html.escape(str(c['key']))}</td>"
                           f"<td>{html.escape(str(c['rank']))}</td><td>{html.escape(str(c['split']))}</td>"
                           f"<td style='text-align:right'>{_fmt(c['achieved'])}</td>"
                           f"<td style='text-align:right'>{_fmt(c['chance'])}</td>"
                           f"<td style='text-align:right'>{_fmt(c['times_chance'], False)}</td></tr>")
    learning = summary.get("learning", {})
    body = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>clibd_toolkit demo report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px}}th{{background:#eee}}.fail{{color:#b00}}</style></head><body>
<h1>clibd_toolkit: the main job on a simulated barcoding survey</h1>
<p>Images, DNA barcodes and taxonomy text of a simulated survey were aligned in one space by contrastive training,
then evaluated with the CLIBD protocol (queries vs the pooled keys). Total time {seconds:.0f} s.</p>
<p><b>Cross-modal retrieval:</b> {html.escape(str(learning.get('headline', 'not available')))}.</p>
{"<p class='fail'>Failed: " + html.escape(", ".join(failures)) + "</p>" if failures else ""}
<h2>Reports</h2><table><tr><th>report (HTML)</th><th>executed notebook</th><th>status</th><th>time</th></tr>
{''.join(rows)}</table>
<h2>Retrieval vs chance (top-1 macro accuracy, test queries)</h2>
<p>Chance = picking keys uniformly at random (expected accuracy given the key set's taxa).</p>
<table><tr><th>query-&gt;key</th><th>rank</th><th>split</th><th>achieved</th><th>chance</th><th>x chance</th></tr>
{''.join(chance_rows)}</table></body></html>
"""
    path = out / "index.html"
    atomic_write_text(path, body)
    return path
