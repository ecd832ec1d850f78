"""The analysis notebooks with the published CLIBD models: ``MODEL`` instead of ``RUN`` (07_identify, the headline
use), the released CLIBD embeddings as ``EMBEDDINGS`` (03_evaluate, no model and no data needed), and an embedding
file of another model refused."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import _notebook_runs as runs
import official_reference as ref
from clibd_toolkit.errors import ClibdError
from clibd_toolkit.report import run_and_export
from clibd_toolkit.store import EmbeddingSet
from test_pretrained import HUB_SIZES

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    official = ref.fill_random(ref.build_official(HUB_SIZES), seed=11)
    return ref.save_released(official, tmp_path_factory.mktemp("released") / "best.pth")


@pytest.fixture(scope="module")
def quick():
    result = runs.run("01_quickstart")
    assert result.error is None, result.error
    return runs._quick()


def _run(name, params, tmp_path):
    params = {"SMOKE": False, "DEVICE": "cpu", "OUTPUT_DIR": str(tmp_path / "out"), **params}
    run_and_export(runs.NOTEBOOK_DIR / f"{name}.ipynb", tmp_path, params, name=name, cwd=tmp_path,
                   execution_timeout=runs.CELL_TIMEOUT)
    return tmp_path / "out"


def test_identify_with_a_released_model(released, quick, tmp_path):
    survey = pd.read_csv(quick / "survey" / "records.csv")
    key = survey[(survey["split"] == "seen_keys") & survey["dna_barcode"].notna()].iloc[0]
    photo = survey[survey["image"].notna()].iloc[0]
    out = _run("07_identify", {"DATA": str(quick / "survey"), "MODEL": str(released),
                               "QUERY_BARCODE": key["dna_barcode"], "QUERY_IMAGE": str(quick / "survey" / photo["image"])},
               tmp_path)
    table = pd.read_csv(out / "identifications.csv")
    barcode = table[table["record_id"] == "query-barcode"].iloc[0]
    # the barcode is a reference record's own: whatever the weights, it meets itself at similarity 1
    assert barcode["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert barcode["predicted_species"] in set(survey.loc[survey["dna_barcode"] == key["dna_barcode"], "species"])
    assert set(table["query_modality"]) == {"dna", "image"}
    emb = EmbeddingSet.load(out / "embeddings.parquet")  # DATA embedded now with MODEL, not the quickstart's file
    assert emb.config["model_source"]["kind"] == "clibd-released"
    assert json.loads((out / "notebook_config.json").read_text())["model"] == str(released)


def test_another_models_embeddings_are_refused(released, quick, tmp_path):
    from clibd_toolkit import extract_embeddings, load_official_checkpoint, load_records

    records = load_records(quick / "survey")
    path = tmp_path / "released-model-embeddings.parquet"
    extract_embeddings(load_official_checkpoint(released), records, progress=False).save(path)
    with pytest.raises(ClibdError, match="were made by model .*best.pth.*not by the model loaded now"):
        _run("07_identify", {"DATA": str(quick / "survey"), "RUN": str(quick / "run"), "EMBEDDINGS": str(path),
                             "QUERY_BARCODE": "ACGT" * 150}, tmp_path)


def test_evaluate_the_released_embeddings_with_the_official_pairs(tmp_path):
    from test_released_embeddings import make_release

    path, _ = make_release(tmp_path / "release", sizes=(14, 12, 30))
    out = _run("03_evaluate", {"EMBEDDINGS": str(path), "DATA": "does-not-exist", "RUN": "does-not-exist",
                               "PAIRS": "official", "KS": [1]}, tmp_path)
    rows = pd.DataFrame(json.loads((out / "metrics.json").read_text())["rows"])
    assert {"text", "image+dna", "concat"} <= set(rows["query"]) and "all" in set(rows["key"])
