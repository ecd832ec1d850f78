"""clibd_toolkit.training_setup: which records a run trains on, every unusable one found before any compute, the run
folder's checks and its list of trained ids, each against a hand-built case."""
from __future__ import annotations

import pandas as pd
import pytest

import clibd_toolkit as ctk
from clibd_toolkit.config import TrainConfig
from clibd_toolkit.errors import CheckpointError, DataError
from clibd_toolkit.records import Rejects
from clibd_toolkit.schema import SPLITS, TRAIN_SPLITS
from clibd_toolkit.splits import SplitConfig, ensure_splits
from clibd_toolkit.training_setup import (
    TRAIN_IDS_FILE,
    check_trainable,
    read_train_ids,
    resume_checkpoint,
    training_records,
    write_train_ids,
)

BARCODE = "ACGTTGCAAC" * 20


def _records(tmp_path) -> pd.DataFrame:
    """ok: barcode; short: 3 nt; gone: no barcode, a missing image; junk: no barcode, a file that is no image (a record
    with neither is refused earlier, by normalisation)."""
    junk = tmp_path / "junk.jpg"
    junk.write_text("not a picture")
    return ctk.normalise_records(pd.DataFrame({
        "record_id": ["ok", "short", "gone", "junk"],
        "dna_barcode": [BARCODE, "ACG", None, None],
        "image": [None, None, str(tmp_path / "missing.jpg"), str(junk)],
        "species": ["a", "b", "c", "d"]}))


def test_check_trainable_lists_every_unusable_record_with_its_reason(tmp_path):
    records = _records(tmp_path)
    with pytest.raises(DataError) as info:
        check_trainable(records, ("image", "dna", "text"), k=4)
    message = str(info.value)
    assert message.startswith("3 record(s) cannot be used for training")
    for expected in ("short: barcode is 3 nt, shorter than one 4-mer", "gone: image file does not exist",
                     "junk: not an image PIL can read"):
        assert expected in message
    rejects = Rejects()
    kept = check_trainable(records, ("image", "dna", "text"), k=4, on_error="skip", rejects=rejects)
    assert kept.record_id.tolist() == ["ok"]
    assert sorted(r["record_id"] for r in rejects.rows) == ["gone", "junk", "short"]
    # a DNA+text model does not look at images: the image-only records have none of its input modalities
    rejects = Rejects()
    kept = check_trainable(records, ("dna", "text"), k=4, on_error="skip", rejects=rejects)
    assert kept.record_id.tolist() == ["ok"]
    assert {r["record_id"]: r["reason"].split(" ")[0] for r in rejects.rows} == {
        "short": "barcode", "gone": "record", "junk": "record"}


def _table(n: int = 24) -> pd.DataFrame:
    return ctk.normalise_records(pd.DataFrame({
        "record_id": [f"r{i}" for i in range(n)], "dna_barcode": [BARCODE] * n,
        "order": ["O"] * n, "family": ["F"] * n, "genus": [f"G{i % 3}" for i in range(n)],
        "species": [f"s{i % 6}" for i in range(n)]}))


def test_training_records_follow_the_split_column_the_default_split_or_all_records(tmp_path):
    cfg = ctk.get_preset("tiny").with_modalities("dna,text")
    table = _table()
    with_splits = table.assign(split=[SPLITS[i % len(SPLITS)] for i in range(len(table))])
    _, train, rejects, info = training_records(with_splits, cfg, TrainConfig(), tmp_path, "raise", rank=0, world=1)
    expected = [rid for rid, split in zip(with_splits.record_id, with_splits.split) if split in TRAIN_SPLITS]
    assert train.record_id.tolist() == expected and len(rejects) == 0
    assert info == {"splits_from_data": True, "default_split_applied": False, "split_seed": None}

    _, train, _, info = training_records(table, cfg, TrainConfig(all_records=True), tmp_path, "raise", rank=0,
                                         world=1)
    assert train.record_id.tolist() == table.record_id.tolist() and not info["default_split_applied"]

    # 6 species of 4 records: all below the split's tail threshold, so all held out as unseen; nothing to train on
    with pytest.raises(DataError, match="leaves no training records.*--all-records"):
        training_records(table, cfg, TrainConfig(), tmp_path, "raise", rank=0, world=1)
    table = _table(120)  # 20 records per species
    split_table, train, _, info = training_records(table, cfg, TrainConfig(split_seed=3), tmp_path, "raise", rank=0,
                                                   world=1)
    reference, _ = ensure_splits(table, SplitConfig(seed=3))  # the split `clibd evaluate` applies to the same data
    assert split_table.split.tolist() == reference.split.tolist()
    assert train.record_id.tolist() == reference.record_id[reference.split.isin(TRAIN_SPLITS)].tolist()
    assert info == {"splits_from_data": False, "default_split_applied": True, "split_seed": 3}
    assert 0 < len(train) < len(table)

    with pytest.raises(DataError, match="only 1 training record"):
        training_records(table.head(1), cfg, TrainConfig(all_records=True), tmp_path, "raise", rank=0, world=1)


def test_run_folder_checks_and_the_trained_ids_round_trip(tmp_path):
    cfg = ctk.get_preset("tiny").with_modalities("dna,text")
    run = tmp_path / "run"
    assert resume_checkpoint(run, cfg, TrainConfig(), resume=False) is None  # a new folder: start afresh
    assert resume_checkpoint(run, cfg, TrainConfig(), resume=True) is None  # nothing to resume from yet
    assert read_train_ids(run) is None
    run.mkdir()
    path = write_train_ids(run, ["a", 2, "c"])
    assert path == run / TRAIN_IDS_FILE and path.read_text() == "a\n2\nc\n"
    assert read_train_ids(run) == {"a", "2", "c"}


def test_a_folder_holding_a_run_needs_resume(tmp_path):
    records = ctk.normalise_records(pd.DataFrame({"record_id": [f"r{i}" for i in range(4)],
                                                  "dna_barcode": [BARCODE] * 4, "order": ["A", "B"] * 2}))
    cfg = ctk.get_preset("tiny").with_modalities("dna,text")
    config = TrainConfig(all_records=True, epochs=1, batch_size=2, progress=False)
    ctk.train(records, cfg, config, tmp_path / "run")
    assert read_train_ids(tmp_path / "run") == set(records.record_id)
    with pytest.raises(CheckpointError, match="--resume"):
        resume_checkpoint(tmp_path / "run", cfg, config, resume=False)
    newest = resume_checkpoint(tmp_path / "run", cfg, config, resume=True)
    assert newest is not None and newest.parent.name == "checkpoints"
    with pytest.raises(CheckpointError, match="different settings"):
        resume_checkpoint(tmp_path / "run", cfg, config.replace(lr=1e-2), resume=True)
