"""``TrainConfig.num_workers`` (``clibd train --num-workers``): training batches built in DataLoader worker
processes are the batches built in the training process, bit for bit, so a run with workers ends with exactly the
weights and losses of a run without, and an image that fails only when decoded is skipped (and listed) or named the
same way."""
from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import clibd_toolkit as ctk
from clibd_toolkit import train_data
from clibd_toolkit.config import TrainConfig
from clibd_toolkit.demo import make_smoke_inputs
from clibd_toolkit.errors import DataError
from clibd_toolkit.io import load_tensors
from clibd_toolkit.training import train


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """The simulated smoke survey (32 px images, splits) with one training image truncated: its header reads, so
    the check before training passes it, and it fails when a batch decodes it."""
    root = tmp_path_factory.mktemp("workers")
    folder = root / "survey"
    shutil.copytree(make_smoke_inputs(root / "smoke")["data"], folder)
    records = pd.read_csv(folder / "records.csv")
    victim = records[(records["split"] == "train") & records["image"].notna()].iloc[0]
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="JPEG", quality=95)
    (folder / victim["image"]).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return {"records": ctk.load_records(folder), "victim": str(victim["record_id"]), "root": root}


CONFIG = TrainConfig(epochs=2, batch_size=32, lr=1e-3, seed=3, progress=False, device="cpu")


def _weights(run):
    return load_tensors(run / "checkpoints" / "epoch-0002" / "model.safetensors")


@pytest.fixture(scope="module")
def in_process(survey):
    run = survey["root"] / "run-w0"
    result = train(survey["records"], ctk.get_preset("tiny"), CONFIG, run, on_error="skip")
    return run, result


def test_workers_give_the_same_training_bit_for_bit(survey, in_process, monkeypatch):
    ref_run, ref = in_process
    # batches built in this process are counted: with workers there must be none (they are built in the workers)
    built_here = []
    real = train_data.build_train_batch
    monkeypatch.setattr(train_data, "build_train_batch", lambda *a, **k: built_here.append(1) or real(*a, **k))
    run = survey["root"] / "run-w2"
    result = train(survey["records"], ctk.get_preset("tiny"), CONFIG.replace(num_workers=2), run, on_error="skip")
    assert not built_here
    assert ref.steps == result.steps > 4
    assert ref.history["loss"].tolist() == result.history["loss"].tolist()
    a, b = _weights(ref_run), _weights(run)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the truncated image was met in a worker, skipped, and listed once, as without workers
    rejects = pd.read_csv(run / "rejects.csv")
    pd.testing.assert_frame_equal(rejects, pd.read_csv(ref_run / "rejects.csv"))
    assert rejects["record_id"].tolist() == [survey["victim"]]
    assert rejects["kind"].tolist() == ["decode"] and "truncated" in rejects["reason"].iloc[0]
    assert result.rejected == ref.rejected == 1


def test_a_run_resumed_with_other_workers_ends_the_same(survey, in_process):
    ref_run, _ = in_process
    run = survey["root"] / "run-resumed"
    shutil.copytree(ref_run, run)
    shutil.rmtree(run / "checkpoints" / "epoch-0002")  # as if stopped after epoch 1
    train(survey["records"], ctk.get_preset("tiny"), CONFIG.replace(num_workers=2), run, resume=True,
          on_error="skip")
    a, b = _weights(ref_run), _weights(run)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_undecodable_image_in_a_worker_is_named_with_the_fix(survey):
    with pytest.raises(DataError, match="truncated") as info:  # met in epoch 1 or 2 (the tail of each is unused)
        train(survey["records"], ctk.get_preset("tiny"), CONFIG.replace(num_workers=2),
              survey["root"] / "run-raise")
    assert info.value.record_id == survey["victim"]
    assert survey["victim"] in str(info.value) and "--on-error skip" in str(info.value)
