"""Outputs never replace inputs (issue 14, class 1): ``--out`` equal to an input of the same command, directly or
through a symlink, is refused before anything is written; ``clibd train`` refuses a non-empty folder that is not a
run, and every other command that writes a folder (evaluate, cluster, pretrain-dna, report, demo) one that holds
files it does not write, unless told ``--overwrite``; the message lists what is there."""
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


def _barcodes(tmp_path: Path, n: int = 24) -> Path:
    import random

    rng = random.Random(0)
    lines = ["record_id,dna_barcode,order,family,genus,species"]
    for i in range(n):
        seq = "".join(rng.choice("ACGT") for _ in range(120))
        lines.append(f"r{i},{seq},O,F,G{i % 3},G{i % 3} s{i % 6}")
    path = tmp_path / "barcodes.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


#: every command that writes a folder, with the arguments it needs besides --out (they fail later, if at all)
FOLDER_COMMANDS = {
    "evaluate": ["evaluate", "--run", "NO_RUN", "--data", "DATA"],
    "cluster": ["cluster", "--embeddings", "NO_FILE.parquet"],
    "pretrain-dna": ["pretrain-dna", "--data", "DATA", "--epochs", "1"],
    "report": ["report", "NO_NOTEBOOK.ipynb"],
    "demo": ["demo", "--only", "99_nope"],
}


@pytest.mark.parametrize("command", sorted(FOLDER_COMMANDS))
def test_folder_outputs_refuse_a_foreign_folder_and_touch_nothing(command, data, tmp_path, capsys):
    """Class 1 for every command that writes a folder: a non-empty folder holding files the command does not write
    is refused before anything is read or written (not even data-rejects.csv), naming those files."""
    folder = tmp_path / "mine"
    (folder / "photos").mkdir(parents=True)
    (folder / "notes.txt").write_text("field notes\n")
    (folder / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    before = _digest(folder)
    args = [a.replace("DATA", str(data)).replace("NO_", str(tmp_path / "no-")) for a in FOLDER_COMMANDS[command]]
    assert cli.main([*args, "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "notes.txt" in err and "photos/" in err and "--overwrite" in err
    assert _digest(folder) == before and sorted(p.name for p in folder.iterdir()) == ["notes.txt", "photos"]
    # with --overwrite the folder check lets the command go on (here to its next error: the missing input)
    assert cli.main([*args, "--out", str(folder), "--overwrite"]) == 2
    assert "is not empty" not in capsys.readouterr().err


def test_a_command_writes_again_into_its_own_folder_and_overwrite_keeps_other_files(tmp_path, capsys):
    """A folder holding only what the command writes is its own earlier output: a rerun replaces those files; with
    --overwrite a foreign folder is written into and the user's other files stay."""
    barcodes = _barcodes(tmp_path)
    out = tmp_path / "encoder"
    args = ["pretrain-dna", "--data", str(barcodes), "--epochs", "1", "--hidden-size", "16", "--num-layers", "1",
            "--num-heads", "2", "--intermediate-size", "32", "--batch-size", "8", "--no-progress"]
    assert cli.main([*args, "--out", str(out)]) == 0
    first = (out / "pretrain.json").read_text()
    assert cli.main([*args, "--out", str(out), "--seed", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["dna_encoder.safetensors", "pretrain.json"]
    assert (out / "pretrain.json").read_text() != first  # the rerun replaced its own output
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("field notes\n")
    assert cli.main([*args, "--out", str(mine)]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert cli.main([*args, "--out", str(mine), "--overwrite"]) == 0
    assert (mine / "notes.txt").read_text() == "field notes\n" and (mine / "dna_encoder.safetensors").is_file()
