"""Embeddings know their model (issue 14, class 4): vectors made right after training (the model ``train``
returns) record the run's weights, and identify / the notebooks refuse them with another model, naming both."""
from __future__ import annotations

from clibd_toolkit import cli
from clibd_toolkit.checkpoint import load_run
from clibd_toolkit.config import TrainConfig
from clibd_toolkit.demo import make_smoke_inputs
from clibd_toolkit.embed import extract_embeddings
from clibd_toolkit.presets import get_preset
from clibd_toolkit.readers import load_records
from clibd_toolkit.training import train


def test_another_runs_embeddings_are_refused(tmp_path, capsys):
    inputs = make_smoke_inputs(tmp_path / "smoke")  # run A, and embeddings made by train()'s own model
    records = load_records(inputs["data"])
    other = train(records, get_preset("tiny"), TrainConfig(epochs=1, batch_size=32, max_steps=2, seed=5,
                                                           progress=False, device="cpu"), tmp_path / "b")
    assert other.model.source["model_sha256"] == load_run(tmp_path / "b").source["model_sha256"]
    emb_b = extract_embeddings(other.model, records.iloc[:60], progress=False)
    emb_b.save(tmp_path / "b.parquet")
    query = tmp_path / "q.fasta"
    query.write_text(f">q\n{records['dna_barcode'].dropna().iloc[0]}\n")
    assert cli.main(["identify", "--run", str(inputs["run"]), "--reference", str(tmp_path / "b.parquet"), "--query",
                     str(query), "--out", str(tmp_path / "ids.csv"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "were made by model" in err and str((tmp_path / "b").resolve()) in err and "not by the model" in err
    assert not (tmp_path / "ids.csv").exists()
    # the right model is accepted
    assert cli.main(["identify", "--run", str(tmp_path / "b"), "--reference", str(tmp_path / "b.parquet"),
                     "--query", str(query), "--out", str(tmp_path / "ok.csv"), "--no-progress"]) == 0
