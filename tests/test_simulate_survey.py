"""The survey generator and writer: determinism, chunking, bounded memory, the canonical table, loading, CLI."""
from __future__ import annotations

import argparse
import hashlib
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clibd_toolkit import load_records
from clibd_toolkit.errors import ConfigError
from clibd_toolkit.images import load_image
from clibd_toolkit.records import normalise_records
from clibd_toolkit.schema import CANONICAL_COLUMNS
from clibd_toolkit.cli.simulate import add_simulate_arguments, run_simulate
from clibd_toolkit.simulator import TRUTH_COLUMNS, SimulatorConfig, simulate_records, write_survey

SMALL = dict(records=150, image_size=48, species=40, genera=15, families=8, orders=4)


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` except simulation.json (it carries the toolkit version)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "simulation.json"}


def test_same_seed_gives_byte_identical_survey_and_different_seed_differs(tmp_path):
    a = write_survey(tmp_path / "a", SimulatorConfig(seed=4, **SMALL), progress=False)
    b = write_survey(tmp_path / "b", SimulatorConfig(seed=4, **SMALL), progress=False, chunk_size=37)
    c = write_survey(tmp_path / "c", SimulatorConfig(seed=5, **SMALL), progress=False)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert len(da) == 151  # records.csv + one image per record
    assert da == db
    assert da["records.csv"] != dc["records.csv"]
    assert sum(da[k] != dc.get(k) for k in da) > 140  # nearly every image differs too


def test_chunk_size_and_range_do_not_change_records():
    cfg = SimulatorConfig(seed=1, **{**SMALL, "records": 2500, "image_size": 32})
    whole = pd.concat(simulate_records(cfg.replace(images=False), chunk_size=2500), ignore_index=True)
    pieces = pd.concat(simulate_records(cfg.replace(images=False), chunk_size=333), ignore_index=True)
    pd.testing.assert_frame_equal(whole, pieces)
    # a range across a block boundary, with images, equals the same records of the whole survey
    part = pd.concat(simulate_records(cfg, chunk_size=17, start=1000, stop=1100), ignore_index=True)
    full = pd.concat(simulate_records(cfg, chunk_size=600, stop=1200), ignore_index=True).iloc[1000:1100]
    pd.testing.assert_frame_equal(part, full.reset_index(drop=True))
    # a longer survey starts with the records of the shorter one
    longer = pd.concat(simulate_records(cfg.replace(records=4000, images=False)), ignore_index=True)
    pd.testing.assert_frame_equal(whole, longer.iloc[:2500].reset_index(drop=True))


def test_chunks_are_canonical_records_tables():
    chunk = next(simulate_records(SimulatorConfig(**SMALL), chunk_size=60))
    assert list(chunk.columns) == list(CANONICAL_COLUMNS) + list(TRUTH_COLUMNS)
    assert chunk["record_id"].is_unique
    assert all(isinstance(v, bytes) and v[:3] == b"\xff\xd8\xff" for v in chunk["image"])  # JPEG
    assert chunk["split"].isna().all()
    # already normalised: the toolkit's own normaliser changes no value
    pd.testing.assert_frame_equal(normalise_records(chunk), chunk, check_dtype=False)
    dna_only = next(simulate_records(SimulatorConfig(**SMALL, images=False), chunk_size=60))
    assert dna_only["image"].isna().all()
    pd.testing.assert_frame_equal(dna_only.drop(columns="image"), chunk.drop(columns="image"))


def _peak_bytes(records: int) -> int:
    cfg = SimulatorConfig(records=records, images=False, seed=0)
    tracemalloc.start()
    n = 0
    for chunk in simulate_records(cfg, chunk_size=4096):
        n += len(chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == records
    return peak


def test_memory_is_bounded_independent_of_size():
    small, large = _peak_bytes(20_000), _peak_bytes(200_000)
    # 10x the records, same peak (one chunk of ~4k barcodes is a few MB; all of 200k would be > 130 MB)
    assert large < 1.25 * small
    assert large < 40e6


def test_folder_loads_with_load_records(tmp_path):
    cfg = SimulatorConfig(seed=2, **SMALL)
    folder = write_survey(tmp_path / "survey", cfg, progress=False)
    records = load_records(folder)
    generated = pd.concat(simulate_records(cfg), ignore_index=True)
    assert len(records) == cfg.records
    for col in ("record_id", "dna_barcode", "order", "family", "genus", "species", "bin_uri"):
        assert records[col].tolist() == generated[col].tolist(), col
    # image paths resolve inside the folder, to the very bytes that were generated
    for path, data in zip(records["image"].head(20), generated["image"].head(20)):
        assert Path(path).is_file() and Path(path).resolve().is_relative_to(folder.resolve())
        assert Path(path).read_bytes() == data
        assert load_image(path).size == (48, 48)
    csv = pd.read_csv(folder / "records.csv", dtype=str, keep_default_na=False)
    assert csv["image"].str.fullmatch(r"images/000/SIM\d{6}\.jpg").all()
    meta = json.loads((folder / "simulation.json").read_text())
    assert SimulatorConfig.from_dict(meta["config"]) == cfg
    assert meta["summary"]["records"] == cfg.records
    assert meta["summary"]["labelled_records"]["species"] == int(generated["species"].notna().sum())
    assert meta["summary"]["observed"]["species"] == generated["true_species"].nunique()


def test_refuses_to_clobber_and_overwrites_only_a_survey(tmp_path):
    cfg = SimulatorConfig(**{**SMALL, "records": 20}, images=False)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        write_survey(other, cfg, progress=False)
    assert (other / "notes.txt").read_text() == "keep me"
    folder = write_survey(tmp_path / "s", cfg, progress=False)
    with pytest.raises(ConfigError, match="overwrite"):
        write_survey(folder, cfg, progress=False)
    write_survey(folder, cfg.replace(records=10), progress=False, overwrite=True)
    assert len(load_records(folder)) == 10


@pytest.mark.parametrize("bad, match", [
    (dict(records=0), "records"),
    (dict(orders=10), "orders"),
    (dict(families=3, orders=5), "families"),
    (dict(species=10, genera=60), "species"),
    (dict(image_size=300), "image_size"),
    (dict(image_format="gif"), "image_format"),
    (dict(unlabelled_fraction=1.5), "unlabelled_fraction"),
    (dict(cryptic_fraction=0.4, bin_share_fraction=0.2), "bin_share_fraction"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ConfigError, match=match):
        SimulatorConfig(**bad)


def test_config_rejects_unknown_keys_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'species'"):
        SimulatorConfig.from_dict({"specis": 10})
    with pytest.raises(ConfigError, match="chunk_size"):
        next(simulate_records(SimulatorConfig(records=5), chunk_size=0))


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser)
    return parser.parse_args(argv)


def test_cli_writes_survey_and_reuses_its_config(tmp_path, capsys):
    out = tmp_path / "cli"
    code = run_simulate(_cli(["--out", str(out), "--records", "40", "--species", "30", "--genera", "10",
                              "--families", "6", "--image-size", "32", "--seed", "7", "--no-progress"]))
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["records"] == 40 and line["images"] == 40
    assert len(load_records(out)) == 40
    # --config with the survey's own simulation.json reproduces it byte for byte
    again = tmp_path / "again"
    assert run_simulate(_cli(["--out", str(again), "--config", str(out / "simulation.json"), "--no-progress"])) == 0
    assert _digest(out) == _digest(again)
    # flags override the config file
    dna = tmp_path / "dna"
    run_simulate(_cli(["--out", str(dna), "--config", str(out / "simulation.json"), "--no-images",
                       "--records", "25", "--no-progress"]))
    assert load_records(dna)["image"].isna().all() and len(load_records(dna)) == 25


def test_hdf5_survey_has_clibd_splits(tmp_path):
    from clibd_toolkit.splits import assign_splits

    cfg = SimulatorConfig(seed=3, **{**SMALL, "records": 400})
    path = write_survey(tmp_path / "h5", cfg, format="hdf5", progress=False, chunk_size=150)
    assert path.name == "survey.h5"
    records = load_records(path)
    generated = pd.concat(simulate_records(cfg), ignore_index=True)
    expected = assign_splits(generated).set_index("record_id")  # the splitter on the whole table at once
    assert len(records) == cfg.records
    got = records.set_index("record_id").loc[expected.index]
    assert got["split"].tolist() == expected["split"].tolist()
    assert got["dna_barcode"].tolist() == expected["dna_barcode"].tolist()
    assert (got.loc[expected["species"].isna(), "split"] == "pretrain").all()
    assert np.asarray(load_image(got["image"].iloc[0])).shape == (48, 48, 3)
    assert len(load_records(path.parent)) == cfg.records  # the output folder itself loads too
    # the folder format fills the same splits on request
    folder = write_survey(tmp_path / "f", cfg, progress=False, splits=True)
    assert load_records(folder).set_index("record_id").loc[expected.index, "split"].tolist() == \
        expected["split"].tolist()
    meta = json.loads((folder / "simulation.json").read_text())
    assert meta["summary"]["splits"] == expected["split"].value_counts().to_dict()


def test_cli_bad_option_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="records"):
        run_simulate(_cli(["--out", str(tmp_path / "x"), "--records", "0", "--no-progress"]))
    with pytest.raises(ConfigError, match="does not exist"):
        run_simulate(_cli(["--out", str(tmp_path / "y"), "--config", str(tmp_path / "missing.json")]))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
