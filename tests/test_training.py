"""Training: the loss goes down on real barcodes, checkpoints are complete and verified, and a run killed with
SIGKILL mid-epoch and resumed ends with exactly the weights of an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import clibd_toolkit as ctk
from clibd_toolkit.checkpoint import list_epoch_checkpoints, load_run
from clibd_toolkit.config import TrainConfig
from clibd_toolkit.errors import CheckpointError, DataError
from clibd_toolkit.io import load_tensors
from clibd_toolkit.training import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BOLD_SMALL = SHARED / "bold-insect-coi" / "bold_insect_coi5p_small.tsv"
needs_shared = pytest.mark.skipif(not BOLD_SMALL.is_file(), reason="../shared/data (real BOLD fixture) is not present")


@pytest.fixture(scope="module")
def bold_small():
    return ctk.load_records(BOLD_SMALL)


@needs_shared
def test_training_on_bold_dna_text_lowers_the_loss(bold_small, tmp_path):
    cfg = ctk.get_preset("tiny").with_modalities("dna,text")
    result = train(bold_small, cfg, TrainConfig(all_records=True, epochs=4, batch_size=32, lr=2e-3, progress=False),
                   tmp_path / "run")
    hist = result.history
    assert len(hist) == 4 * (480 // 32)
    first, last = hist[hist.epoch == 1].loss.mean(), hist[hist.epoch == 4].loss.mean()
    # chance level of a 32-way contrastive loss is log(32) = 3.47; training must get clearly below its start
    assert last < first - 0.3, (first, last)
    assert (tmp_path / "run" / "history.csv").is_file()
    # the saved best checkpoint reloads into an identical model
    reloaded = load_run(tmp_path / "run")
    for (k, a), (_, b) in zip(result.model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), k


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "clibd_toolkit.cli", *args]


TRAIN_ARGS = ["train", "--preset", "tiny", "--data", str(BOLD_SMALL), "--modalities", "dna,text", "--epochs", "3",
              "--batch-size", "16", "--lr", "1e-3", "--no-progress", "--all-records"]


@needs_shared
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli(*TRAIN_ARGS, "--out", str(straight)), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(_cli(*TRAIN_ARGS, "--out", str(killed)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "epoch-0001" / "meta.json").exists():
        assert proc.poll() is None, "training ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # well into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoints" / "epoch-0003").exists(), "the run finished before the kill; nothing tested"
    # a half-written checkpoint folder, as a kill during a checkpoint write leaves behind, must be ignored
    half = killed / "checkpoints" / ".epoch-0002.abc.tmp"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\x00" * 100)

    resumed = subprocess.run(_cli(*TRAIN_ARGS, "--out", str(killed), "--resume"), env=env, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = load_tensors(straight / "checkpoints" / "epoch-0003" / "model.safetensors")
    b = load_tensors(killed / "checkpoints" / "epoch-0003" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ha = pd.read_csv(straight / "history.csv")
    hb = pd.read_csv(killed / "history.csv")
    assert ha.loss.tolist() == hb.loss.tolist()


@needs_shared
def test_existing_run_needs_resume_and_same_settings(bold_small, tmp_path):
    cfg = ctk.get_preset("tiny").with_modalities("dna,text")
    tc = TrainConfig(all_records=True, epochs=1, batch_size=32, max_steps=2, progress=False)
    train(bold_small, cfg, tc, tmp_path / "run")
    with pytest.raises(CheckpointError, match="--resume"):
        train(bold_small, cfg, tc, tmp_path / "run")
    with pytest.raises(CheckpointError, match="different settings"):
        train(bold_small, cfg, tc.replace(lr=1e-2), tmp_path / "run", resume=True)


def test_corrupt_checkpoint_is_refused(tmp_path):
    records = pd.DataFrame({"record_id": [f"r{i}" for i in range(8)], "dna_barcode": ["ACGTTGCAAC" * 20] * 8,
                            "order": ["A", "B"] * 4})
    records = ctk.normalise_records(records)
    cfg = ctk.get_preset("tiny").with_modalities("dna,text")
    train(records, cfg, TrainConfig(all_records=True, epochs=1, batch_size=4, progress=False), tmp_path / "run")
    model_file = list_epoch_checkpoints(tmp_path / "run")[-1] / "model.safetensors"
    data = bytearray(model_file.read_bytes())
    data[-10] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_run(tmp_path / "run", "last")


def test_unusable_records_are_all_reported_or_skipped(tmp_path):
    records = ctk.normalise_records(pd.DataFrame({
        "record_id": ["ok1", "short", "ok2", "ok3", "noimg"],
        "dna_barcode": ["ACGTTGCAAC" * 20, "ACG", "TTGCAACGTA" * 20, "GGCCTTAAGC" * 20, "ACGTACGTAC" * 20],
        "image": [None, None, None, None, str(tmp_path / "missing.jpg")],
        "species": ["a", "b", "c", "d", "e"]}))
    cfg = ctk.get_preset("tiny")
    with pytest.raises(DataError, match="short: barcode is 3 nt") as info:
        train(records, cfg, TrainConfig(all_records=True, epochs=1, batch_size=2, progress=False), tmp_path / "r1")
    assert "noimg: image file does not exist" in str(info.value)
    result = train(records, cfg, TrainConfig(all_records=True, epochs=1, batch_size=2, progress=False),
                   tmp_path / "r2", on_error="skip")
    rejects = pd.read_csv(tmp_path / "r2" / "rejects.csv")
    assert sorted(rejects.record_id) == ["noimg", "short"]
    assert result.steps >= 1


@needs_shared
def test_cli_train_then_embed_gives_every_record_an_embedding(tmp_path):
    run, out = tmp_path / "run", tmp_path / "emb.parquet"
    r = subprocess.run(_cli("train", "--preset", "tiny", "--data", str(BOLD_SMALL), "--modalities", "dna,text",
                            "--epochs", "1", "--out", str(run), "--no-progress", "--all-records"),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(_cli("embed", "--run", str(run), "--data", str(BOLD_SMALL), "--out", str(out),
                            "--no-progress"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    emb = ctk.EmbeddingSet.load(out)
    records = ctk.load_records(BOLD_SMALL)
    assert emb.record_ids.tolist() == records.record_id.tolist()
    assert emb.has("dna").all() and emb.has("text").all()
    assert emb.vectors["dna"].shape == (480, 32)
    norms = (emb.vectors["dna"] ** 2).sum(1)
    assert abs(norms - 1).max() < 1e-5
    assert emb.config["model"]["preset"] == "tiny"


def test_cli_errors_are_one_line_and_nonzero(tmp_path):
    r = subprocess.run(_cli("train", "--preset", "tiny", "--data", str(tmp_path / "nope.tsv"), "--out",
                            str(tmp_path / "run")), capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(_cli("embed", "--run", str(tmp_path), "--data", str(tmp_path), "--out", "x.parquet"),
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_checkpoints_leave_out_frozen_pretrained_weights_and_check_them(tmp_path):
    """The cpu preset's frozen MiniLM is not copied into every checkpoint; it is reloaded from its package and
    verified against the SHA-256 recorded at training time."""
    from clibd_toolkit.checkpoint import checkpoint_folder, load_model_state
    from clibd_toolkit.model import CLIBDModel

    records = ctk.normalise_records(pd.DataFrame({"record_id": [f"r{i}" for i in range(8)],
                                                  "dna_barcode": ["ACGTTGCAAC" * 40] * 8, "species": list("abcdabcd")}))
    cfg = ctk.get_preset("cpu").with_modalities("dna,text")
    result = train(records, cfg, TrainConfig(all_records=True, epochs=1, batch_size=4, progress=False),
                   tmp_path / "run")
    folder = checkpoint_folder(tmp_path / "run")
    stored = load_tensors(folder / "model.safetensors")
    assert not any(k.startswith("encoders.text.backbone.") for k in stored)
    assert "encoders.text.head.weight" in stored and "encoders.dna.backbone.embeddings.word_embeddings.weight" in stored
    reloaded = load_run(tmp_path / "run")
    for (k, a), (_, b) in zip(result.model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), k
    other = CLIBDModel(cfg)
    with torch.no_grad():
        other.encoders["text"].backbone.embeddings.word_embeddings.weight[0, 0] += 1.0
    with pytest.raises(CheckpointError, match="frozen pretrained weights that differ"):
        load_model_state(folder, other)


def test_cli_train_on_a_messy_file_reports_every_problem_with_its_record_id(tmp_path):
    good = "ACGTTGCAACGGTTAACCGT" * 20
    rows = ["record_id\tdna_barcode\torder\tfamily\tgenus\tspecies",
            f"ok1\t{good}\tDiptera\tMuscidae\tMusca\tMusca domestica",
            f"bad-chars\tACGTXXQQ{good}\tDiptera\tMuscidae\tMusca\tMusca domestica",
            f"ok2\t{good[::-1]}\tColeoptera\tCarabidae\tCarabus\tCarabus nemoralis",
            f"ok2\t{good}\tColeoptera\tCarabidae\tCarabus\tCarabus nemoralis",
            f"long\t{'A' * 12000}\tDiptera\tMuscidae\tMusca\tMusca domestica",
            f"ok3\t{good}\tHymenoptera\tApidae\tApis\tApis mellifera"]
    path = tmp_path / "messy.tsv"
    path.write_text("\n".join(rows) + "\n")
    r = subprocess.run(_cli("train", "--preset", "tiny", "--data", str(path), "--modalities", "dna,text",
                            "--epochs", "1", "--out", str(tmp_path / "run"), "--all-records"), capture_output=True,
                       text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    for rid in ("bad-chars", "ok2", "long"):
        assert rid in r.stderr
    assert "3 of 6 records" in r.stderr
    rejects = pd.read_csv(tmp_path / "run" / "data-rejects.csv")
    assert len(rejects) == 3 and not (tmp_path / "run" / "checkpoints").exists()
    r = subprocess.run(_cli("train", "--preset", "tiny", "--data", str(path), "--modalities", "dna,text",
                            "--epochs", "1", "--batch-size", "2", "--out", str(tmp_path / "run2"), "--on-error", "skip",
                            "--no-progress", "--all-records"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "loaded 3 of 6 records" in r.stderr
    assert (tmp_path / "run2" / "train_records.txt").read_text().split() == ["ok1", "ok2", "ok3"]


@needs_shared
def test_divergence_stops_with_step_loss_and_rate_and_keeps_the_last_good_checkpoint(bold_small, tmp_path,
                                                                                   monkeypatch):
    from clibd_toolkit.errors import TrainingDivergedError

    cfg = ctk.get_preset("tiny").with_modalities("dna,text")
    with pytest.raises(TrainingDivergedError, match=r"diverged at step \d+: the loss became nan .*learning rate "
                                                    r".*no checkpoint was written yet.*Lower the learning rate"):
        train(bold_small, cfg, TrainConfig(all_records=True, epochs=2, batch_size=32, lr=1e6, progress=False), tmp_path / "wild")
    assert not list_epoch_checkpoints(tmp_path / "wild")
    # a run that breaks in its second epoch (here: every loss of epoch 2 made NaN) keeps epoch 1's checkpoint
    import clibd_toolkit.training as training

    real = training._Trainer._backward

    def poisoned(self, epoch, idx, *, sync):
        loss = real(self, epoch, idx, sync=sync)
        return loss * float("nan") if epoch == 1 else loss

    monkeypatch.setattr(training._Trainer, "_backward", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"at step 16: .*last good checkpoint is .*epoch-0001"):
        train(bold_small, cfg, TrainConfig(all_records=True, epochs=2, batch_size=32, progress=False), tmp_path / "run")
    assert [p.name for p in list_epoch_checkpoints(tmp_path / "run")] == ["epoch-0001"]
    load_run(tmp_path / "run", "epoch-0001")  # loads: it was written before anything went wrong
