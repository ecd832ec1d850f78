"""The notebooks: structure and parameters (without a kernel), then every notebook executed with its SMOKE
parameters through papermill, checking the files each writes and that their contents make sense."""
from __future__ import annotations

import ast
import json
import subprocess
import sys

import nbformat
import pandas as pd
import papermill as pm
import pytest

import _notebook_runs as runs
from clibd_toolkit import notebook_params as nbp
from clibd_toolkit.errors import ConfigError
from clibd_toolkit.io import fresh_folder
from clibd_toolkit.store import EmbeddingSet

CONFIGS = {name: nbp.NOTEBOOK_CONFIGS[f"{name}.ipynb"] for name in runs.NAMES}


def _read(name: str):
    return nbformat.read(str(runs.NOTEBOOK_DIR / f"{name}.ipynb"), as_version=4)


# --- structure, without a kernel ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", runs.NAMES)
def test_notebook_is_committed_clean_and_thin(name):
    nb = _read(name)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks with outputs stripped"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    for cell in code:  # logic lives in clibd_toolkit: no functions or classes defined in notebooks
        tree = ast.parse(cell.source)
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]


@pytest.mark.parametrize("name", runs.NAMES)
def test_parameters_cell_matches_the_config_class(name):
    """Every parameter is typed and commented, papermill sees all of them, and the defaults are the config's."""
    nb = _read(name)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = [ln for ln in cell.source.splitlines() if ln.strip()]
    assert all(":" in ln.split("=")[0] and "  # " in ln for ln in lines), "NAME: type = value  # help"
    declared = pm.inspect_notebook(str(runs.NOTEBOOK_DIR / f"{name}.ipynb"))
    assert len(declared) == len(lines), "papermill could not parse some parameter lines"
    config = CONFIGS[name]
    assert set(declared) == {f.upper() for f in config.field_names()}
    namespace: dict = {}
    exec(cell.source, {}, namespace)  # the literal defaults
    assert nbp.from_globals(config, namespace).to_parameters() == config().to_parameters()
    for common in ("OUTPUT_DIR", "DEVICE", "SEED", "SMOKE"):
        assert common in declared
    if name not in ("01_quickstart", "02_train"):
        assert {"DATA", "RUN", "CHECKPOINT", "EMBEDDINGS"} <= set(declared)


def test_injected_names_of_any_case_are_checked():
    """papermill's injected cell (in IPython's input history ``In``) may only bind declared names."""
    history = ["import x", "# Parameters\nks = 5\nOUTPUT_DIR = 'o'\n"]
    with pytest.raises(ConfigError, match="injected parameter 'ks'.*did you mean K\\?"):
        nbp.from_globals(nbp.IdentifyNotebookConfig, {"In": history, "OUTPUT_DIR": "o"})
    ok = ["# Parameters\nK = 3\nOUTPUT_DIR = 'o'\n", "# a cell of the notebook\nks = 1\n"]
    assert nbp.from_globals(nbp.IdentifyNotebookConfig, {"In": ok, "K": 3, "OUTPUT_DIR": "o"}).k == 3


def test_from_globals_rejects_unknown_and_ill_typed_parameters():
    from IPython.display import HTML

    base = {"OUTPUT_DIR": "o", "HTML": HTML, "json": json, "_": 1, "In": []}  # imports are not parameters
    assert nbp.from_globals(nbp.EvaluateNotebookConfig, base).output_dir == "o"
    with pytest.raises(ConfigError, match="unknown EvaluateNotebookConfig key 'stagee'; did you mean 'stage'"):
        nbp.from_globals(nbp.EvaluateNotebookConfig, {**base, "STAGEE": "val"})
    with pytest.raises(ConfigError, match=r"parameter EPOCHS.*expected an integer"):
        nbp.from_globals(nbp.QuickstartNotebookConfig, {"EPOCHS": "three"})
    with pytest.raises(ConfigError, match="expected one of \\['val', 'test'\\]"):
        nbp.from_globals(nbp.EvaluateNotebookConfig, {"STAGE": "train"})
    with pytest.raises(ConfigError, match="modality pair"):
        nbp.from_globals(nbp.PerTaxonNotebookConfig, {"PAIR": "dna->nope"})
    with pytest.raises(ConfigError, match="device"):
        nbp.from_globals(nbp.TrainNotebookConfig, {"DEVICE": "gpu"})
    assert nbp.EvaluateNotebookConfig(ks=[1, 5]).eval_config().ks == (1, 5)


def test_smoke_settings_are_small():
    quick = nbp.QuickstartNotebookConfig(smoke=True).effective()
    assert quick.preset == "tiny" and quick.records <= 300 and quick.max_steps <= 4
    assert nbp.QuickstartNotebookConfig().effective() == nbp.QuickstartNotebookConfig()
    train = nbp.TrainNotebookConfig(smoke=True, preset="paper").effective()
    assert train.preset == "tiny" and train.max_steps <= 3


def test_train_model_config_lora_settings():
    cfg = nbp.TrainNotebookConfig(preset="tiny", finetune="lora", finetune_modalities="dna,text", lora_r=8,
                                  lora_alpha=16.0, lora_dropout=0.1).model_config()
    modes = {m: cfg.encoder(m).adapter for m in cfg.modalities}
    assert modes["image"].mode == "full"  # not listed: keeps the preset's mode
    assert all((modes[m].mode, modes[m].r, modes[m].alpha, modes[m].dropout) == ("lora", 8, 16.0, 0.1)
               for m in ("dna", "text"))
    frozen = nbp.TrainNotebookConfig(preset="tiny", finetune="frozen", modalities="dna,text").model_config()
    assert frozen.modalities == ("dna", "text") and {frozen.encoder(m).adapter.mode for m in frozen.modalities} == {"frozen"}
    with pytest.raises(ConfigError, match="unknown modality"):
        nbp.TrainNotebookConfig(finetune_modalities="wings")
    with pytest.raises(ConfigError, match="two or more"):
        nbp.TrainNotebookConfig(modalities="dna")


def test_fresh_folder_replaces_only_its_own_output(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    (tmp_path / "run" / "old.txt").write_text("x")
    assert list(fresh_folder(tmp_path / "run").iterdir()) == []
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a previous output"):
        fresh_folder(tmp_path / "other")
    assert (tmp_path / "other" / "precious.txt").is_file()


# --- executed with papermill --------------------------------------------------------------------------------------


def _ok(name: str) -> runs.Run:
    result = runs.run(name)
    assert result.error is None, result.error
    assert result.notebook.is_file() and result.html.is_file()
    return result


def _figures(run: runs.Run, *names: str) -> None:
    folder = run.output_dir / "figures"
    assert (folder / "plotly.min.js").is_file()
    for n in names:
        text = (folder / f"{n}.html").read_text()
        assert "Plotly.newPlot" in text, n


def _check_metrics(path, pairs: set[str]) -> list[dict]:
    payload = json.loads(path.read_text())
    assert set(payload) == {"config", "rows"}
    rows = payload["rows"]
    assert rows and all(set(r) == {"query", "key", "split", "rank", "k", "micro", "macro", "n"} for r in rows)
    assert {r["split"] for r in rows} <= {"seen", "unseen", "harmonic_mean"}
    assert {f"{r['query']}->{r['key']}" for r in rows} == pairs
    for r in rows:
        for m in ("micro", "macro"):
            assert r[m] is None or 0.0 <= r[m] <= 1.0
    return rows


ALL_PAIRS = {"image->image", "image->dna", "image->text", "dna->image", "dna->dna", "dna->text"}


@pytest.mark.notebooks
def test_quickstart_end_to_end():
    run = _ok("01_quickstart")
    out = run.output_dir
    survey = pd.read_csv(out / "survey" / "records.csv")
    assert len(survey) == 300 and survey["split"].notna().all()
    emb = EmbeddingSet.load(out / "embeddings.parquet")
    assert list(emb.metadata["record_id"]) == list(survey["record_id"])
    assert emb.modalities == ("image", "dna", "text")
    _check_metrics(out / "metrics.json", ALL_PAIRS)
    per_taxon = pd.read_csv(out / "per_taxon.csv")
    assert {"taxon", "accuracy", "n_queries", "n_keys"} <= set(per_taxon.columns)
    assert per_taxon["accuracy"].between(0, 1).all()
    learning = json.loads((out / "learning.json").read_text())
    assert set(learning["pairs"]) == {"image->dna", "image->text", "dna->image", "dna->text"}
    for value in learning["pairs"].values():
        assert 0 < value["chance"] < 1
    assert (out / "run" / "checkpoints" / "best").is_dir()
    config = nbp.QuickstartNotebookConfig.load(out / "notebook_config.json")
    assert config.smoke and config.preset == "tiny"
    _figures(run, "loss_curve", "retrieval_seen", "retrieval_unseen")


@pytest.mark.notebooks
def test_train_notebook_makes_its_own_smoke_data():
    run = _ok("02_train")
    out = run.output_dir
    assert (out / "smoke-inputs" / "survey" / "records.csv").is_file()  # no DATA given: the SMOKE fallback
    history = pd.read_csv(out / "run" / "history.csv")
    summary = json.loads((out / "training_summary.json").read_text())
    assert 1 <= len(history) == summary["steps"] <= 3
    assert summary["last_loss"] == pytest.approx(history["loss"].iloc[-1])
    _figures(run, "loss_curve")


@pytest.mark.notebooks
def test_evaluate_notebook_via_papermill_cli():
    run = _ok("03_evaluate")
    rows = _check_metrics(run.output_dir / "metrics.json", ALL_PAIRS)
    # same embeddings and protocol as the quickstart: identical numbers, and the comparison says so
    before = json.loads((runs._quick() / "metrics.json").read_text())["rows"]
    assert rows == before
    comparison = pd.read_csv(run.output_dir / "comparison.csv")
    assert set(comparison["status"]) == {"unchanged"}
    assert len(pd.read_csv(run.output_dir / "per_taxon.csv")) > 0
    _figures(run, "accuracy")


@pytest.mark.notebooks
def test_unknown_parameter_makes_papermill_fail(tmp_path):
    """papermill only warns about an undeclared parameter; the notebook's config cell turns it into an error."""
    exe = [sys.executable, "-m", "papermill"]
    done = subprocess.run([*exe, str(runs.NOTEBOOK_DIR / "03_evaluate.ipynb"), str(tmp_path / "out.ipynb"),
                           "-p", "STAGEE", "val", "-p", "OUTPUT_DIR", str(tmp_path), "-k", "python3"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "did you mean 'stage'" in done.stderr + done.stdout
    # a lower-case name is no parameter either (papermill would inject it and only warn)
    done = subprocess.run([*exe, str(runs.NOTEBOOK_DIR / "03_evaluate.ipynb"), str(tmp_path / "out2.ipynb"),
                           "-p", "stage", "val", "-p", "OUTPUT_DIR", str(tmp_path), "-k", "python3"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "papermill injected parameter 'stage'" in done.stderr + done.stdout
    assert "did you mean STAGE?" in done.stderr + done.stdout


@pytest.mark.notebooks
def test_latent_space_notebook():
    run = _ok("04_latent_space")
    projection = pd.read_csv(run.output_dir / "projection.csv")
    survey = pd.read_csv(runs._quick() / "survey" / "records.csv")
    counts = projection["modality"].value_counts()
    assert counts["image"] == survey["image"].notna().sum() and counts["dna"] == survey["dna_barcode"].notna().sum()
    assert 0 < counts["text"] <= len(survey[["order", "family", "genus", "species"]].drop_duplicates())
    assert projection[["x", "y"]].notna().all().all()
    _figures(run, "latent_space", "latent_space_family", "latent_space_species")


@pytest.mark.notebooks
def test_unseen_species_notebook():
    run = _ok("05_unseen_species")
    out = run.output_dir
    scores = json.loads((out / "cluster_scores.json").read_text())["scores"]
    assert -1 <= scores["species"]["ari"] <= 1 and 0 <= scores["species"]["v_measure"] <= 1
    clusters = pd.read_csv(out / "clusters.csv")
    survey = pd.read_csv(runs._quick() / "survey" / "records.csv").set_index("record_id")
    assert survey.loc[clusters["record_id"], "split"].str.contains("unseen").all()
    novelty = json.loads((out / "novelty.json").read_text())
    assert novelty["n_novel"] > 0 and 0 <= novelty["auroc"] <= 1
    _figures(run, "cluster_scores", "clusters_vs_species", "novelty_roc")


@pytest.mark.notebooks
def test_per_taxon_notebook():
    run = _ok("06_per_taxon_accuracy")
    worst = pd.read_csv(run.output_dir / "worst_taxa.csv")
    assert worst["accuracy"].is_monotonic_increasing
    assert len(worst) <= 25
    _figures(run, "taxon_accuracy", "accuracy_vs_references")


@pytest.mark.notebooks
def test_identify_notebook_with_a_photo_and_a_barcode():
    run = _ok("07_identify")
    table = pd.read_csv(run.output_dir / "identifications.csv")
    assert sorted(zip(table["record_id"], table["query_modality"])) == [("query-barcode", "dna"),
                                                                       ("query-image", "image")]
    # the barcode was taken from a reference record: it must find that species with similarity ~1
    survey = pd.read_csv(runs._quick() / "survey" / "records.csv")
    source = survey[survey["dna_barcode"] == run.parameters["QUERY_BARCODE"]]
    barcode = table[table["record_id"] == "query-barcode"].iloc[0]
    assert barcode["predicted_species"] in set(source["species"])
    assert barcode["similarity"] == pytest.approx(1.0, abs=1e-4)
    # the barcode is searched with 5-mer evidence beside the embedding (the reference's barcodes are in DATA); the
    # photo by its embedding alone
    assert dict(zip(table["query_modality"], table["sequence_weight"])) == {"dna": 0.5, "image": 0.0}
    # how far the name goes is the calibration's call (a SMOKE model may not earn a species name even for an exact
    # match); whatever is reported is the nearest record's taxonomy down to that rank, and novel = no species name
    reported = barcode["identified_rank"]
    assert bool(barcode["novel"]) == (reported != "species")
    ranks = ["order", "family", "genus", "species"]
    for i, rank in enumerate(ranks):
        if isinstance(reported, str) and i <= ranks.index(reported):
            assert barcode[f"identified_{rank}"] == barcode[f"predicted_{rank}"]
        else:
            assert pd.isna(barcode[f"identified_{rank}"])
    _figures(run, "neighbours_0", "neighbours_1")
