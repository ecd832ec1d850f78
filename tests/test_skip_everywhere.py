"""``--on-error skip`` holds in every command that reads records (issue 14, class 3), including images that fail
only when decoded: each bad record is listed with its reason and the counts add up (records in = used +
rejected)."""
from __future__ import annotations

import json
import shutil

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
