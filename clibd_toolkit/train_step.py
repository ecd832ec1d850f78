"""One contrastive training step, single process or DistributedDataParallel: the module DDP wraps
(:class:`TrainStep`, encoders and learned temperature in one forward), the loss of a batch that may lack a modality
(:func:`batch_loss`), and each rank's share of an epoch (:func:`rank_slice`). The loop around it (epochs,
checkpoints, validation, resume) is :mod:`clibd_toolkit.training`; ``benchmarks/train_throughput.py`` times exactly
these steps.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .distributed import dist_info
from .loss import ContrastiveLoss
from .model import CLIBDModel


class TrainStep(torch.nn.Module):
    """The module DDP wraps: the encoders *and* the logit scale in one forward.

    DDP all-reduces the gradient of a parameter only if it is reached from the forward's outputs; the learned
    temperature is used by the loss, so it is returned from here rather than read from the model outside forward
    (which breaks DDP's unused-parameter bookkeeping).
    """

    def __init__(self, model: CLIBDModel):
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self.model(inputs), self.model.scale()


def wrap_for_training(model: CLIBDModel, device: torch.device) -> torch.nn.Module:
    """:class:`TrainStep` around ``model``, inside DistributedDataParallel when a process group of >1 ranks exists.

    DDP broadcasts rank 0's weights at construction, so every rank starts from the same model.
    """
    step = TrainStep(model)
    _, world = dist_info()
    if world == 1:
        return step
    # every encoder runs at every step (see batch_loss), so DDP needs the per-step search for unused parameters
    # (an extra autograd-graph traversal) only if some trainable weight is never used by a forward at all
    return torch.nn.parallel.DistributedDataParallel(
        step, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=bool(unused_parameters(model)))


def unused_parameters(model: CLIBDModel) -> list[str]:
    """Names of trainable weights that get no gradient from a forward of every encoder (one placeholder input each).

    Runs in eval mode (no batch-norm statistics or dropout state change) and leaves no gradients behind.
    """
    was_training = model.training
    model.eval()
    try:
        feats = model({m: _placeholder_inputs(model, m) for m in model.modalities})
        total = sum(f.float().sum() for f in feats.values()) + model.scale()
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(total, [p for _, p in params], allow_unused=True)
        return [n for (n, _), g in zip(params, grads) if g is None]
    finally:
        model.train(was_training)


def rank_slice(order: np.ndarray, n_used: int, rank: int, world: int) -> np.ndarray:
    """This rank's records of an epoch permutation: every ``world``-th of its first ``n_used`` (DistributedSampler).

    Local batch ``b`` of all ranks together is then exactly records ``order[b*B*world:(b+1)*B*world]``, the global
    batch a single process with batch ``B*world`` would take. With fewer records than one global batch, all
    ranks get the same number of records (a multiple of ``world`` is used), as the feature gather needs.
    """
    if len(order) < n_used or n_used == 0:
        n_used = len(order) - len(order) % world if world > 1 else len(order)
    return order[:n_used][rank::world]


def _placeholder_inputs(model: CLIBDModel, modality: str) -> Any:
    """One dummy input of ``modality`` (used when a rank's batch lacks the modality; see :func:`batch_loss`)."""
    if modality == "dna":
        return model.preprocess.dna(["A" * model.config.dna_k], ["placeholder"])
    if modality == "image":
        size = model.config.image_size
        return torch.zeros(1, 3, size, size)
    return model.preprocess.text([""])


def batch_loss(step_module: torch.nn.Module, loss_fn: ContrastiveLoss, batch, modalities: tuple[str, ...], *,
               device: torch.device, bf16: bool = False) -> torch.Tensor:
    """Contrastive loss of one (local) batch; under DDP the loss of the global batch (features gathered).

    Under DDP every rank must build the same autograd graph, or the collectives of the backward pass (DDP's
    all-reduce, the all-gather's backward) pair up differently on different ranks and hang. So when this rank's
    batch has no record of a modality that others may have, its encoder still runs on one placeholder input
    whose output enters the loss multiplied by zero (no effect on values or gradients).
    """
    _, world = dist_info()
    model = step_module.module.model if hasattr(step_module, "module") else step_module.model
    present = {m: batch.present[m] for m in modalities}
    inputs = {m: batch.inputs[m] for m in modalities if bool(present[m].any())}
    placeholders = [m for m in modalities if m not in inputs and world > 1]
    for m in placeholders:
        inputs[m] = _placeholder_inputs(model, m)
    n = len(batch)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
        feats, scale = step_module(inputs)
        full = {}
        for m in modalities:
            if m in placeholders:
                full[m] = feats[m].new_zeros((n, feats[m].shape[1])) + 0.0 * feats[m].sum()
            elif m in feats:
                full[m] = _scatter_zero(feats[m], present[m])
            else:
                full[m] = torch.zeros(n, model.config.embed_dim, device=device)
        return loss_fn(full, scale, {m: present[m].to(device) for m in modalities})


def _scatter_zero(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(k, d) features of the present rows -> (n, d) with zero rows elsewhere (masked out of the loss)."""
    out = values.new_zeros((mask.shape[0], values.shape[1]))
    out[mask.to(values.device)] = values
    return out
