"""ContrastiveLoss against a naive per-row loop."""
from __future__ import annotations

import math
from itertools import combinations

import torch
import torch.nn.functional as F

from clibd_toolkit.loss import ContrastiveLoss


def naive_clip_loss(features: dict[str, torch.Tensor], scale: float) -> float:
    """Mean over ordered modality pairs (a, b) of mean_i -log softmax_j(s * <a_i, b_j>)[i], by explicit loops."""
    terms = []
    for a, b in combinations(sorted(features), 2):
        for x, y in ((features[a], features[b]), (features[b], features[a])):
            rows = []
            for i in range(x.shape[0]):
                logits = [scale * float(x[i] @ y[j]) for j in range(y.shape[0])]
                m = max(logits)
                log_z = m + math.log(sum(math.exp(v - m) for v in logits))
                rows.append(log_z - logits[i])
            terms.append(sum(rows) / len(rows))
    return sum(terms) / len(terms)


def _feats(n: int, d: int, mods: tuple[str, ...], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: F.normalize(torch.randn(n, d, generator=g), dim=-1) for m in mods}


def test_two_modalities_equal_naive_loop():
    feats = _feats(6, 8, ("dna", "text"))
    got = ContrastiveLoss()(feats, torch.tensor(14.285))
    assert abs(float(got) - naive_clip_loss(feats, 14.285)) < 1e-5


def test_three_modalities_is_mean_of_the_three_symmetric_losses():
    feats = _feats(5, 4, ("image", "dna", "text"), seed=1)
    got = float(ContrastiveLoss()(feats, torch.tensor(7.0)))
    assert abs(got - naive_clip_loss(feats, 7.0)) < 1e-5
    pairs = [naive_clip_loss({a: feats[a], b: feats[b]}, 7.0) for a, b in combinations(feats, 2)]
    assert abs(got - sum(pairs) / 3) < 1e-5


def test_missing_modality_rows_are_left_out_of_their_pairs():
    feats = _feats(6, 8, ("image", "dna"), seed=2)
    present = {"image": torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool), "dna": torch.ones(6, dtype=torch.bool)}
    got = float(ContrastiveLoss()(feats, torch.tensor(10.0), present))
    keep = present["image"]
    expected = naive_clip_loss({m: f[keep] for m, f in feats.items()}, 10.0)
    assert abs(got - expected) < 1e-5


def test_perfectly_aligned_pairs_have_lower_loss_than_shuffled():
    feats = _feats(8, 16, ("dna", "text"), seed=3)
    aligned = {"dna": feats["dna"], "text": feats["dna"].clone()}
    shuffled = {"dna": feats["dna"], "text": feats["dna"][torch.randperm(8)]}
    loss = ContrastiveLoss()
    assert float(loss(aligned, torch.tensor(20.0))) < float(loss(shuffled, torch.tensor(20.0)))


def test_gradient_flows_to_features_and_scale():
    feats = {m: f.requires_grad_(True) for m, f in _feats(4, 4, ("dna", "text")).items()}
    scale = torch.tensor(5.0, requires_grad=True)
    ContrastiveLoss()(feats, scale).backward()
    assert feats["dna"].grad is not None and scale.grad is not None
