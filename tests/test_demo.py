"""The main job (clibd demo): its plan against the notebooks' declared parameters, the smoke inputs, and one real
run of the chain in SMOKE mode writing the report folder."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import papermill as pm
import pytest

import _notebook_runs as runs
from clibd_toolkit import demo
from clibd_toolkit.cli import demo as demo_cli
from clibd_toolkit.errors import ConfigError


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo_cli.add_demo_arguments(parser)
    return parser.parse_args(list(argv))


def test_plan_uses_only_declared_parameters(tmp_path):
    plan = demo.demo_plan(tmp_path, records=900, epochs=2, seed=3)
    assert [name for name, _ in plan] == list(demo.DEMO_NOTEBOOKS)
    for name, params in plan:
        declared = pm.inspect_notebook(str(demo.notebook_dir() / f"{name}.ipynb"))
        assert set(params) <= set(declared), name
        assert Path(params["OUTPUT_DIR"]).is_absolute() and Path(params["OUTPUT_DIR"]).parent == tmp_path.resolve()
        assert params["SEED"] == 3
    quick = dict(plan)["01_quickstart"]
    assert quick["RECORDS"] == 900 and quick["EPOCHS"] == 2
    latent = dict(plan)["04_latent_space"]
    assert latent["INTERACTIVE"] is False  # headless: static figures
    assert latent["EMBEDDINGS"] == str(tmp_path.resolve() / "01_quickstart" / "embeddings.parquet")


def test_arguments_and_unknown_notebook(tmp_path):
    args = _args()
    assert args.out == "clibd-output" and not args.smoke and args.records is None and args.device == "auto"
    with pytest.raises(ConfigError, match="unknown notebook"):
        demo_cli.run_demo(_args("--out", str(tmp_path), "--only", "01_quickstart,99_nope"))


def test_smoke_inputs_are_made_once(tmp_path):
    paths = demo.make_smoke_inputs(tmp_path, seed=1)
    assert (paths["data"] / "records.csv").is_file() and (paths["run"] / "run.json").is_file()
    stamp = paths["embeddings"].stat().st_mtime_ns
    assert demo.make_smoke_inputs(tmp_path, seed=1) == paths
    assert paths["embeddings"].stat().st_mtime_ns == stamp  # reused, not rebuilt


@pytest.mark.notebooks
def test_demo_smoke_run_writes_one_report_folder(tmp_path, capsys):
    """The main job's wiring, on the quickstart output the notebook tests already made (copied in place), running
    the evaluation notebook it feeds."""
    quick = runs.run("01_quickstart")
    assert quick.error is None, quick.error
    out = tmp_path / "demo"
    shutil.copytree(quick.output_dir, out / "01_quickstart")
    status = demo_cli.run_demo(_args("--out", str(out), "--smoke", "--only", "03_evaluate"))
    printed = capsys.readouterr().out
    assert status == 0
    assert f"report:    {out.resolve() / 'index.html'}" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == [] and [n["name"] for n in summary["notebooks"]] == ["03_evaluate"]
    assert {row["query"] + "->" + row["key"] for row in summary["vs_chance"]} >= {"image->dna", "dna->image"}
    assert summary["learning"]["headline"] in printed
    index = (out / "index.html").read_text()
    assert 'href="reports/03_evaluate.html"' in index and "chance" in index
    assert (out / "reports" / "03_evaluate.html").is_file() and (out / "notebooks" / "03_evaluate.ipynb").is_file()
    assert (out / "03_evaluate" / "metrics.json").is_file()
