"""Distributed training equals single-process training on the same global batch.

One ``torchrun --standalone --nproc_per_node 2`` launch of this file (gloo on CPU) runs :func:`_worker` on two
ranks: (A) the loss and the parameter gradients of one DDP step over a global batch split across the ranks, and
(B) a whole ``train()`` run of 2 epochs x 3 steps (dropout off so that the runs are comparable). The tests compare
both with the same computations in this (single) process: the gathered-with-gradients contrastive loss, the
all_gather backward (which sums each rank's copy of the global loss gradient onto the owner rank) and DDP's mean
over ranks must together give exactly the single-process gradient.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

WORLD = 2
SEED = 7


# --- the shared setup (used by both the workers and the single-process reference) ----------------------------


def _records(n: int) -> pd.DataFrame:
    from clibd_toolkit.simulator import SimulatorConfig, simulate_records
    from clibd_toolkit.schema import CANONICAL_COLUMNS

    frame = next(simulate_records(SimulatorConfig(records=n, images=False, seed=SEED), chunk_size=n))
    return frame[list(CANONICAL_COLUMNS)].reset_index(drop=True)


def _model_config():
    from clibd_toolkit.presets import get_preset

    return get_preset("tiny").with_modalities("dna,text")


def _grad_batches() -> list[pd.DataFrame]:
    """Two global batches of 8: one with two barcodes missing, one where all of rank 1's records lack a barcode
    (rank 1 then has no DNA input at all, the case that needs the placeholder forward)."""
    records = _records(16)
    first = records.iloc[:8].copy()
    first.loc[[2, 5], "dna_barcode"] = pd.NA
    second = records.iloc[8:].reset_index(drop=True).copy()
    second.loc[[1, 3, 5, 7], "dna_barcode"] = pd.NA  # rank 1 takes rows 1, 3, 5, 7 (every second record)
    return [first, second]


def _no_dropout_model_class():
    from clibd_toolkit.model import CLIBDModel

    class NoDropoutModel(CLIBDModel):
        def __init__(self, config):
            super().__init__(config)
            for module in self.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0

    return NoDropoutModel


def _step_grads(model, batch_records: pd.DataFrame) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and gradients of one step through the training code (``batch_loss`` + DDP when distributed)."""
    from clibd_toolkit.batching import make_batch
    from clibd_toolkit.loss import ContrastiveLoss
    from clibd_toolkit.train_step import batch_loss, wrap_for_training

    step = wrap_for_training(model, torch.device("cpu"))
    model.zero_grad(set_to_none=True)
    batch = make_batch(model.preprocess, batch_records, model.modalities, text_for_all=True)
    loss = batch_loss(step, ContrastiveLoss(), batch, model.modalities, device=torch.device("cpu"))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def _train_config(progress: bool = False):
    from clibd_toolkit.config import TrainConfig

    return TrainConfig(all_records=True, epochs=2, batch_size=8, lr=2e-3, seed=SEED, device="cpu", progress=progress)


# --- the worker, run by torchrun --------------------------------------------------------------------------------


def _worker(out: Path) -> None:
    import clibd_toolkit.training as train_module
    from clibd_toolkit.distributed import distributed_session
    from clibd_toolkit.model import CLIBDModel
    from clibd_toolkit.train_step import rank_slice

    with distributed_session() as info:
        assert info.world_size == WORLD and info.backend == "gloo"
        rank = info.rank
        # (A) one step's loss and gradients; eval mode = no dropout, so the ranks compute deterministic features
        torch.manual_seed(SEED + rank)  # different seeds: DDP must broadcast rank 0's weights
        model = CLIBDModel(_model_config()).eval()
        results = []
        for batch in _grad_batches():
            local = batch.iloc[rank_slice(np.arange(len(batch)), len(batch), rank, WORLD)]
            loss, grads = _step_grads(model, local)
            results.append({"loss": loss, "grads": grads})
        torch.save(results, out / f"grads-rank{rank}.pt")

        # (B) a whole training run through train(), dropout off
        train_module.CLIBDModel = _no_dropout_model_class()
        result = train_module.train(_records(24), _model_config(), _train_config(), out / "run")
        torch.save({"state": result.model.state_dict(), "history": result.history.to_dict("list"),
                    "steps": result.steps, "best_epoch": result.best_epoch}, out / f"train-rank{rank}.pt")


# --- the tests ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchrun_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           __file__, str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return out


def test_ddp_loss_and_gradients_equal_single_process(torchrun_out):
    from clibd_toolkit.model import CLIBDModel

    torch.manual_seed(SEED)  # rank 0's seed: the weights DDP broadcast to both ranks
    model = CLIBDModel(_model_config()).eval()
    ranks = [torch.load(torchrun_out / f"grads-rank{r}.pt") for r in range(WORLD)]
    for b, batch in enumerate(_grad_batches()):
        loss, grads = _step_grads(model, batch)
        for r in range(WORLD):
            got = ranks[r][b]
            # each rank computes the loss of the *global* batch
            assert got["loss"] == pytest.approx(loss, rel=1e-5), (b, r)
            assert set(got["grads"]) == set(grads), (b, r)
            for name, ref in grads.items():
                torch.testing.assert_close(got["grads"][name], ref, rtol=1e-4, atol=1e-6,
                                           msg=lambda m, n=name: f"batch {b} rank {r} {n}: {m}")
        # the logit scale and the DNA encoder really receive gradient (not a vacuous comparison of zeros)
        assert grads["logit_scale"].abs().item() > 0
        assert max(g.abs().max().item() for n, g in grads.items() if n.startswith("encoders.dna")) > 0


def test_ddp_training_run_equals_single_process(torchrun_out, tmp_path, monkeypatch):
    import clibd_toolkit.training as train_module

    monkeypatch.setattr(train_module, "CLIBDModel", _no_dropout_model_class())
    single = train_module.train(_records(24), _model_config(), _train_config(), tmp_path / "run")
    ranks = [torch.load(torchrun_out / f"train-rank{r}.pt") for r in range(WORLD)]
    assert single.steps == 6
    for r, got in enumerate(ranks):
        assert got["steps"] == single.steps
        np.testing.assert_allclose(got["history"]["loss"], single.history["loss"], rtol=1e-4)
        for name, ref in single.model.state_dict().items():
            torch.testing.assert_close(got["state"][name], ref, rtol=1e-4, atol=1e-5,
                                       msg=lambda m, n=name: f"rank {r} {n}: {m}")
    # training changed the weights (so equality above is not trivially the initial state)
    init = _no_dropout_model_class()(_model_config())
    assert not torch.allclose(init.state_dict()["logit_scale"], single.model.state_dict()["logit_scale"])


def test_ddp_run_writes_one_run_folder_from_rank_zero(torchrun_out):
    run = torchrun_out / "run"
    assert sorted(p.name for p in torchrun_out.iterdir() if p.is_dir()) == ["run"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "epoch-0001", "epoch-0002"]
    history = pd.read_csv(run / "history.csv")
    assert history["step"].tolist() == [1, 2, 3, 4, 5, 6]
    info = json.loads((run / "run.json").read_text())
    assert info["train"]["batch_size"] == 8
    assert len((run / "train_records.txt").read_text().split()) == 24


def test_rank_slice_reproduces_the_global_batches():
    from clibd_toolkit.train_step import rank_slice

    order = np.random.default_rng(0).permutation(50)
    per_rank, world = 4, 3
    n_used = (50 // (per_rank * world)) * per_rank * world
    slices = [rank_slice(order, n_used, r, world) for r in range(world)]
    assert {len(s) for s in slices} == {n_used // world}
    for b in range(n_used // (per_rank * world)):
        together = np.concatenate([s[b * per_rank:(b + 1) * per_rank] for s in slices])
        assert sorted(together) == sorted(order[b * per_rank * world:(b + 1) * per_rank * world])
    # fewer records than one global batch: every rank gets the same count (the feature gather needs it)
    short = [rank_slice(order[:7], 24, r, 2) for r in range(2)]
    assert [len(s) for s in short] == [3, 3]


def test_init_distributed_without_torchrun_is_a_no_op(monkeypatch):
    from clibd_toolkit.distributed import current, distributed_session, init_distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info, created = init_distributed()
    assert (info.rank, info.world_size, created) == (0, 1, False)
    with distributed_session() as info:
        assert info.is_main
    assert current().world_size == 1


def test_init_distributed_names_missing_torchrun_variables(monkeypatch):
    from clibd_toolkit.distributed import init_distributed
    from clibd_toolkit.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        init_distributed()


if __name__ == "__main__":  # launched by torchrun from the fixture above
    _worker(Path(sys.argv[1]))
