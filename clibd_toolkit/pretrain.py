"""DNA encoder pretraining: BarcodeBERT's masked k-mer modelling on any set of barcodes (``clibd pretrain-dna``).

A BERT (``BertForMaskedLM``) over non-overlapping k-mers (:class:`~clibd_toolkit.dna.KmerTokenizer`) learns to
predict masked k-mers. As in BarcodeBERT v1, a fraction of the real (non-padding, non-``<UNK>``) k-mer tokens is
replaced by id 1 and predicted; padding is masked out of attention. Reported: masked-token accuracy on held-out
barcodes (a fixed masking of a validation split, so epochs are comparable).

The output ``dna_encoder.safetensors`` loads as the DNA encoder of any preset:
``EncoderConfig(arch="bert_kmer", pretrained="OUT/dna_encoder.safetensors")``; the ``cpu`` preset's bundled weights
were made with this command (see ``clibd_toolkit/assets/README.md``).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import torch

from .config import Config
from .dna import CLS_ID, UNK_ID, KmerTokenizer
from .errors import DataError

log = logging.getLogger(__name__)
MASK_INPUT_ID = CLS_ID  # BarcodeBERT v1 writes masked positions as id 1 (reference section 1.4)


@dataclass(frozen=True, kw_only=True)
class PretrainConfig(Config):
    """Masked k-mer modelling settings (defaults: the ``cpu`` preset's small DNA encoder)."""

    kind: ClassVar[str] = "pretrain_dna"

    k: int = 5
    max_length: int = 660
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    mask_ratio: float = 0.5  # BarcodeBERT v1 masks 50 % of tokens
    epochs: int = 4
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    val_fraction: float = 0.05
    max_val: int = 2000  # at most this many held-out barcodes
    deduplicate: bool = True  # identical barcodes (after cleaning) are used once: same information, less compute
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def validate(self) -> None:
        self._require(1 <= self.k <= 8, "k", "an integer in 1..8")
        self._require(self.max_length >= self.k, "max_length", f">= k ({self.k})")
        self._require(self.hidden_size >= 8 and self.hidden_size % max(self.num_heads, 1) == 0, "hidden_size",
                      f"an integer >= 8 divisible by num_heads ({self.num_heads})")
        self._require(self.num_layers >= 1, "num_layers", "an integer >= 1")
        self._require(self.num_heads >= 1, "num_heads", "an integer >= 1")
        self._require(self.intermediate_size >= 1, "intermediate_size", "an integer >= 1")
        self._require(0.0 < self.mask_ratio < 1.0, "mask_ratio", "a number in (0, 1)")
        self._require(self.epochs >= 1, "epochs", "an integer >= 1")
        self._require(self.batch_size >= 1, "batch_size", "an integer >= 1")
        self._require(self.lr > 0, "lr", "a number > 0")
        self._require(0.0 <= self.val_fraction < 1.0, "val_fraction", "a number in [0, 1)")


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, ratio: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked inputs, labels): ``ratio`` of the real k-mer tokens (not the prefix, not padding, not ``<UNK>``)
    become :data:`MASK_INPUT_ID`; labels hold their ids, -100 elsewhere."""
    candidates = attention_mask.bool().clone()
    candidates[:, 0] = False
    candidates &= input_ids != UNK_ID
    chosen = (torch.rand(input_ids.shape, generator=generator) < ratio) & candidates
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    masked = torch.where(chosen, torch.full_like(input_ids, MASK_INPUT_ID), input_ids)
    return masked, labels


def _bert(config: PretrainConfig, tokenizer: KmerTokenizer):
    from transformers import BertConfig, BertForMaskedLM

    return BertForMaskedLM(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, intermediate_size=config.intermediate_size,
        max_position_embeddings=tokenizer.n_tokens, pad_token_id=0))


@torch.no_grad()
def masked_accuracy(model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, batch_size: int,
                    device: torch.device) -> float:
    """Share of masked tokens the MLM model predicts correctly (positions whose label is not -100)."""
    model.eval()
    hits = total = 0
    for i in range(0, len(ids), batch_size):
        logits = model(input_ids=ids[i:i + batch_size].to(device), attention_mask=mask[i:i + batch_size].to(device)).logits
        lab = labels[i:i + batch_size].to(device)
        sel = lab != -100
        hits += int((logits.argmax(-1)[sel] == lab[sel]).sum())
        total += int(sel.sum())
    model.train()
    return hits / max(total, 1)


def pretrain_dna(barcodes: Sequence[str], config: PretrainConfig, out_dir: str | Path,
                 ids: Sequence[str] | None = None, *, half: bool = False, data_info: dict | None = None) -> dict:
    """Pretrain a k-mer BERT on ``barcodes``; write ``out_dir/dna_encoder.safetensors`` and ``pretrain.json``.

    Args:
        half: store the weights in float16 (half the file size; they load into float32 models unchanged otherwise).
        data_info: description of the training data, stored in ``pretrain.json``.

    Returns:
        The summary written to ``pretrain.json``: config, counts, and masked-token accuracy per epoch.
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from .io import atomic_path, atomic_write_text
    from .distributed import resolve_device

    seqs = [s for s in barcodes if isinstance(s, str)]
    n_given = len(seqs)
    if ids is not None and len(ids) == len(barcodes):
        ids = [i for i, s in zip(ids, barcodes) if isinstance(s, str)]
    if config.deduplicate:
        first = {}
        for i, s in enumerate(seqs):
            first.setdefault(s, i)
        keep = sorted(first.values())
        seqs = [seqs[i] for i in keep]
        ids = [ids[i] for i in keep] if ids is not None and len(ids) == n_given else None
    if len(seqs) < 2:
        raise DataError(f"pretraining needs at least 2 barcodes, got {len(seqs)}")
    tokenizer = KmerTokenizer(config.k, config.max_length)
    enc = tokenizer.encode(seqs, ids if ids is not None and len(ids) == len(seqs) else None)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(seqs))
    n_val = min(config.max_val, int(round(len(seqs) * config.val_fraction))) if config.val_fraction > 0 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    gen = torch.Generator().manual_seed(config.seed)
    val_ids, val_labels = mask_tokens(enc.input_ids[val_idx], enc.attention_mask[val_idx], config.mask_ratio, gen)
    val_mask = enc.attention_mask[val_idx]

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = _bert(config, tokenizer).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / config.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps_per_epoch * config.epochs,
                                                    pct_start=0.1, anneal_strategy="cos", cycle_momentum=False)
    history = []
    for epoch in range(config.epochs):
        perm = torch.from_numpy(np.random.default_rng([config.seed, epoch]).permutation(train_idx))
        losses = []
        bar = tqdm(range(0, len(perm), config.batch_size), desc=f"pretrain epoch {epoch + 1}/{config.epochs}",
                   disable=not config.progress, leave=False)
        for start in bar:
            idx = perm[start: start + config.batch_size]
            masked, labels = mask_tokens(enc.input_ids[idx], enc.attention_mask[idx], config.mask_ratio, gen)
            out = model(input_ids=masked.to(device), attention_mask=enc.attention_mask[idx].to(device),
                        labels=labels.to(device))
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            losses.append(float(out.loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        acc = masked_accuracy(model, val_ids, val_mask, val_labels, 256, device) if n_val else None
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_masked_accuracy": acc})
        log.info("pretrain epoch %d: loss %.4f, held-out masked-token accuracy %s", epoch + 1, np.mean(losses), acc)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    state = {k: v.detach().cpu().to(dtype).contiguous().clone() for k, v in model.state_dict().items()}
    state["__num_heads__"] = torch.tensor([config.num_heads])
    with atomic_path(out_dir / "dna_encoder.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "clibd_toolkit.dna_encoder/1", "config": json.dumps(config.to_dict())})
    summary = {"config": config.to_json_dict(), "n_barcodes": n_given, "n_unique": len(seqs), "n_train": int(len(train_idx)),
               "n_val": int(n_val), "history": history, "data": data_info or {}, "dtype": str(dtype),
               "val_masked_accuracy": history[-1]["val_masked_accuracy"],
               "chance_accuracy": 1.0 / (4**config.k)}
    atomic_write_text(out_dir / "pretrain.json", json.dumps(summary, indent=2) + "\n")
    return summary
