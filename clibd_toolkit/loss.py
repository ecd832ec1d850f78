"""CLIP contrastive loss over every pair of modalities (reference section 2).

For each unordered pair (a, b) of modalities present in the batch, with features L2-normalised and ``s`` the
learned logit scale, the loss adds ``CE(s * f_a f_b^T, I)`` and ``CE(s * f_b f_a^T, I)``: the positive of each row is
the same record in the other modality (labels are record indices; taxonomy does not define positives). The total
is the mean over all these terms, i.e. the mean of the symmetric CLIP losses of the pairs (I-D, I-T, D-T).

Records may lack a modality (``present`` masks); a pair is computed over the records that have both, and skipped
when fewer than two do. Under torch.distributed the features of every rank are gathered *with gradients* first, so
each rank's loss sees the global batch (open_clip ``gather_with_grad``, as the reference does).
"""
from __future__ import annotations

from itertools import combinations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, keeping gradients (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    from torch.distributed._functional_collectives import all_gather_tensor_autograd

    # backward is a sum reduce-scatter: each rank gets the gradient of the global loss w.r.t. its own rows from
    # every rank (DDP's gradient averaging then divides by the world size; test_distributed checks the result)
    return all_gather_tensor_autograd(tensor.contiguous(), 0, dist.group.WORLD)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' ``tensor`` concatenated along dim 0 (no gradient); the tensor itself when not distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


class ContrastiveLoss(nn.Module):
    """``loss(features, logit_scale, present=None) -> scalar`` (see module docstring).

    Args (of forward):
        features: modality -> (n, d) L2-normalised features of the local batch (same record order).
        logit_scale: exp of the learned log-scale, a scalar tensor.
        present: optional modality -> (n,) bool, records that really have that modality.
    """

    def forward(self, features: dict[str, torch.Tensor], logit_scale: torch.Tensor,
                present: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        feats = {m: gather_with_grad(f) for m, f in features.items()}
        masks = {}
        for m, f in feats.items():
            local = present.get(m) if present is not None else None
            if local is None:
                local = torch.ones(features[m].shape[0], dtype=torch.bool, device=f.device)
            masks[m] = gather_no_grad(local.to(f.device))
        terms = []
        for a, b in combinations(sorted(feats), 2):
            both = masks[a] & masks[b]
            if int(both.sum()) < 2:
                continue
            fa, fb = feats[a][both], feats[b][both]
            logits = logit_scale * fa @ fb.t()
            labels = torch.arange(fa.shape[0], device=fa.device)
            terms.append(F.cross_entropy(logits, labels))
            terms.append(F.cross_entropy(logits.t(), labels))
        if not terms:
            # nothing to contrast in this batch: a zero that still depends on the scale keeps autograd/DDP happy
            return logit_scale * 0.0
        return torch.stack(terms).mean()
