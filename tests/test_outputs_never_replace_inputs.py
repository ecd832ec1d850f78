"""Outputs never replace inputs (issue 14, class 1): ``--out`` equal to an input of the same command, directly or
through a symlink, is refused before anything is written; ``clibd train`` refuses a non-empty folder that is not a
run unless told ``--overwrite``, and the message lists what is there."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from clibd_toolkit import cli

RECORDS = "record_id,dna_barcode,order,family,genus,species\nr1,ACGTACGTAC,O,F,G,G s\n"


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "records.csv"
    path.write_text(RECORDS)
    return path


def test_embed_out_equal_to_data_is_refused(data, tmp_path, capsys):
    link = tmp_path / "link.parquet"
    link.symlink_to(data)
    for out in (data, link, tmp_path / "." / data.name):
        assert cli.main(["embed", "--run", str(tmp_path / "no-run"), "--data", str(data), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "same file as --data" in err and "replace the input" in err
    assert data.read_text() == RECORDS


def test_identify_out_equal_to_query_or_reference_is_refused(data, tmp_path, capsys):
    query = tmp_path / "queries.fasta"
    query.write_text(">q1\nACGTACGTAC\n")
    for option, out in (("--query", query), ("--reference", data)):
        assert cli.main(["identify", "--run", str(tmp_path / "no-run"), "--reference", str(data), "--query",
                         str(query), "--out", str(out)]) == 2
        assert f"same file as {option}" in capsys.readouterr().err
    assert data.read_text() == RECORDS and query.read_text() == ">q1\nACGTACGTAC\n"
    # a DNA sequence given as --query is not a path: nothing to compare, the command goes on to load the model
    assert cli.main(["identify", "--run", str(tmp_path / "no-run"), "--reference", str(data), "--query",
                     "ACGT" * 200, "--out", str(tmp_path / "ids.csv")]) == 2
    assert "same file" not in capsys.readouterr().err


def test_train_into_a_foreign_folder_is_refused_and_nothing_is_touched(data, tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "checkpoints" / "best").mkdir(parents=True)
    (folder / "history.csv").write_text("my own notes\n")
    (folder / "checkpoints" / "best" / "weights.bin").write_bytes(b"\x00" * 16)
    before = _digest(folder)
    assert cli.main(["train", "--preset", "tiny", "--modalities", "dna,text", "--data", str(data), "--out",
                     str(folder), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is not empty and is not a training run" in err and "checkpoints/" in err and "history.csv" in err
    assert "--overwrite" in err
    assert _digest(folder) == before and sorted(p.name for p in folder.iterdir()) == ["checkpoints", "history.csv"]
    # --out naming the data file itself
    assert cli.main(["train", "--preset", "tiny", "--data", str(data), "--out", str(data)]) == 2
    assert "same file as --data" in capsys.readouterr().err and data.read_text() == RECORDS
