"""``--on-error skip`` holds in every command that reads records (issue 14, class 3), including images that fail
only when decoded: each bad record is listed with its reason and the counts add up (records in = used +
rejected)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from clibd_toolkit import cli
from clibd_toolkit.demo import make_smoke_inputs


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = tmp_path_factory.mktemp("skip")
    inputs = make_smoke_inputs(root / "smoke")
    survey = root / "survey"
    shutil.copytree(inputs["data"], survey)
    records = pd.read_csv(survey / "records.csv")
    with_image = records[records["image"].notna()]
    test = with_image[with_image["split"].str.startswith("test")].iloc[:2]
    train = with_image[with_image["split"] == "train"].iloc[:1]
    (survey / test["image"].iloc[0]).unlink()                                 # missing
    (survey / test["image"].iloc[1]).write_bytes(b"not an image at all")      # no image
    (survey / train["image"].iloc[0]).write_bytes(b"\xff\xd8\xff garbage")    # a JPEG header, then junk
    bad = {"missing": test["record_id"].iloc[0], "junk": test["record_id"].iloc[1], "train": train["record_id"].iloc[0]}
    return {"survey": survey, "run": inputs["run"], "n": len(records), "bad": bad, "root": root}


def test_embed_skips_undecodable_images_and_counts_add_up(broken, capsys):
    out = broken["root"] / "emb.parquet"
    assert cli.main(["embed", "--run", str(broken["run"]), "--data", str(broken["survey"]), "--out", str(out),
                     "--on-error", "skip", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rejects = pd.read_csv(str(out) + ".rejects.csv")
    assert set(rejects["record_id"]) == set(broken["bad"].values())
    assert summary["records"] + summary["rejected"] == broken["n"] and summary["rejected"] == 3
    assert "does not exist" in rejects.set_index("record_id").loc[broken["bad"]["missing"], "reason"]
    # without skip the first such record stops the command, naming it
    assert cli.main(["embed", "--run", str(broken["run"]), "--data", str(broken["survey"]), "--out",
                     str(broken["root"] / "e2.parquet"), "--no-progress"]) == 2
    assert "record SIM" in capsys.readouterr().err


def test_evaluate_and_train_skip_them_too(broken, capsys):
    ev = broken["root"] / "ev"
    assert cli.main(["evaluate", "--run", str(broken["run"]), "--data", str(broken["survey"]), "--out", str(ev),
                     "--on-error", "skip", "--no-progress"]) == 0
    listed = pd.read_csv(ev / "decode-rejects.csv")
    assert set(listed["record_id"]) == {broken["bad"]["missing"], broken["bad"]["junk"]}
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["n_left_out_undecodable"] == 2
    run = broken["root"] / "run2"
    assert cli.main(["train", "--preset", "tiny", "--data", str(broken["survey"]), "--out", str(run), "--epochs", "1",
                     "--batch-size", "32", "--on-error", "skip", "--no-progress"]) == 0
    rejects = pd.read_csv(run / "rejects.csv")
    assert broken["bad"]["train"] in set(rejects["record_id"])
    assert "not an image PIL can read" in rejects.set_index("record_id").loc[broken["bad"]["train"], "reason"]
    capsys.readouterr()


def test_train_skips_an_image_that_fails_only_mid_training(broken, capsys):
    """A truncated JPEG passes the header check before training and fails when decoded inside a batch: with
    --on-error skip it is left out of that batch and later ones and listed (kind decode); without, training stops
    naming it."""
    import io

    from PIL import Image

    survey = broken["root"] / "truncated-survey"
    shutil.copytree(broken["survey"], survey)
    records = pd.read_csv(survey / "records.csv")
    train = records[(records["split"] == "train") & records["image"].notna()]
    victim = train[train["record_id"] != broken["bad"]["train"]].iloc[0]
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="JPEG", quality=95)  # noise: the header is a small part of the file
    (survey / victim["image"]).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with Image.open(survey / victim["image"]) as im:  # the header reads: the pre-training check cannot see it
        assert im.size == (128, 128)
    run = broken["root"] / "run-truncated"
    assert cli.main(["train", "--preset", "tiny", "--data", str(survey), "--out", str(run), "--epochs", "2",
                     "--batch-size", "32", "--on-error", "skip", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rejects = pd.read_csv(run / "rejects.csv").set_index("record_id")
    assert rejects.loc[victim["record_id"], "kind"] == "decode"
    assert "truncated" in rejects.loc[victim["record_id"], "reason"]
    assert broken["bad"]["train"] in rejects.index  # the one found before training is still listed
    assert summary["rejected"] == len(rejects) == 2  # listed once, though both epochs met it
    trained = set((run / "train_records.txt").read_text().split())
    assert victim["record_id"] in trained  # it was chosen for training; the rejects file says why it was left out
    # without skip (and with the junk image found before training mended), training stops at that batch, naming it
    junk = records.set_index("record_id").loc[broken["bad"]["train"], "image"]
    Image.fromarray(noise).save(survey / junk, format=Image.open(survey / victim["image"]).format)
    assert cli.main(["train", "--preset", "tiny", "--data", str(survey), "--out", str(broken["root"] / "run-t2"),
                     "--epochs", "1", "--batch-size", "32", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert victim["record_id"] in err and "truncated" in err and "--on-error skip" in err
