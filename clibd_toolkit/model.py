"""The CLIBD model: one encoder per modality, L2-normalised outputs in one shared space, a learned temperature.

>>> import clibd_toolkit as ctk
>>> model = ctk.create_model("tiny")
>>> model.encode_dna(["ACGT" * 160]).shape
torch.Size([1, 32])
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .dna import KmerTokenizer
from .encoders import build_encoder
from .errors import ConfigError
from .images import ImageTransform, load_image
from .lora import apply_adapter


class Preprocess:
    """Turns raw inputs into encoder inputs, as the model's config says (built by the model; plain callables)."""

    def __init__(self, config: ModelConfig, text_tokenizer: Any = None):
        self.config = config
        self.dna_tokenizer = KmerTokenizer(config.dna_k, config.dna_max_length, prefix_token=True,
                                           clean=config.dna_cleaning == "clean")
        self.image_eval = ImageTransform(config.image_size, config.image_resize, config.image_normalize, train=False,
                                         resample=config.image_resample)
        self.image_train = ImageTransform(config.image_size, config.image_resize, config.image_normalize, train=True)
        self.text_tokenizer = text_tokenizer

    def dna(self, sequences: Sequence[str], ids: Sequence[Any] | None = None) -> dict[str, torch.Tensor]:
        enc = self.dna_tokenizer.encode(sequences, ids)
        inputs = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
        if self.config.dna is not None and self.config.dna.pooling == "mean_bag":
            inputs["kmer_bag"] = self.dna_tokenizer.kmer_bag(sequences, ids)
        return inputs

    def text(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if self.text_tokenizer is None:
            raise ConfigError("this model has no text encoder")
        return self.text_tokenizer(texts, self.config.text_max_length)

    def images(self, sources: Sequence[Any], ids: Sequence[Any] | None = None, *, train: bool = False,
               rngs: Sequence[np.random.Generator] | None = None) -> torch.Tensor:
        """Load (path, bytes, PIL, array) and transform images -> (n, 3, size, size) float32."""
        ids = list(ids) if ids is not None else list(range(len(sources)))
        transform = self.image_train if train else self.image_eval
        out = []
        for i, (src, rid) in enumerate(zip(sources, ids)):
            img = load_image(src, record_id=rid)
            out.append(transform(img, rngs[i] if rngs is not None else None))
        if not out:
            size = self.config.image_size
            return torch.zeros(0, 3, size, size)
        return torch.stack(out)


class CLIBDModel(nn.Module):
    """Encoders by modality + learned logit scale. Build with :func:`create_model`.

    ``forward(batch)`` takes ``{modality: encoder inputs}`` and returns ``{modality: (n, d) L2-normalised}``; the
    ``encode_*`` methods take raw inputs (barcodes, images, taxonomy strings) for inference.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleDict()
        for modality in config.modalities:
            encoder = build_encoder(modality, config)
            self.encoders[modality] = apply_adapter(encoder, config.encoder(modality).adapter)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init), dtype=torch.float32))
        text_tok = getattr(self.encoders["text"], "tokenizer", None) if "text" in self.encoders else None
        self.preprocess = Preprocess(config, text_tok)
        #: where the weights came from (a training run, a released CLIBD file); recorded in every embedding file
        self.source: dict[str, Any] = {}

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.config.modalities

    def train(self, mode: bool = True) -> CLIBDModel:
        """Like ``nn.Module.train``, but frozen backbones stay in eval mode (no dropout, no BatchNorm updates):
        a frozen encoder is a fixed feature extractor."""
        super().train(mode)
        for modality, encoder in self.encoders.items():
            if self.config.encoder(modality).adapter.mode == "frozen":
                encoder.backbone.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped at ``config.logit_scale_max`` (open_clip clamps at 100 too)."""
        return self.logit_scale.clamp(max=math.log(self.config.logit_scale_max)).exp()

    def clamp_logit_scale(self) -> None:
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, math.log(self.config.logit_scale_max))

    # --- differentiable path -------------------------------------------------------------------------------------
    def encode_inputs(self, modality: str, inputs: Any) -> torch.Tensor:
        if modality not in self.encoders:
            raise ConfigError(f"this model has no {modality!r} encoder; it has {list(self.modalities)}")
        encoder = self.encoders[modality]
        # non_blocking: a pinned batch (training's DataLoader workers on CUDA) is copied while the GPU works
        if isinstance(inputs, dict):
            features = encoder(**{k: v.to(self.device, non_blocking=True) for k, v in inputs.items()})
        else:
            features = encoder(inputs.to(self.device, non_blocking=True))
        return F.normalize(features.float(), dim=-1)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {m: self.encode_inputs(m, inputs) for m, inputs in batch.items()}

    # --- inference from raw inputs -------------------------------------------------------------------------------
    @torch.no_grad()
    def _encode_raw(self, modality: str, items: Sequence[Any], prepare, batch_size: int) -> torch.Tensor:
        chunks = [self.encode_inputs(modality, prepare(items[i: i + batch_size], i)).cpu()
                  for i in range(0, len(items), batch_size)]
        if not chunks:
            return torch.zeros(0, self.config.embed_dim)
        return torch.cat(chunks)

    def encode_dna(self, sequences: Sequence[str] | str, *, batch_size: int = 256,
                   ids: Sequence[Any] | None = None) -> torch.Tensor:
        """Barcodes -> (n, d) float32 L2-normalised (CPU tensor; no gradients)."""
        seqs = [sequences] if isinstance(sequences, str) else list(sequences)
        names = list(ids) if ids is not None else list(range(len(seqs)))
        return self._encode_raw("dna", seqs, lambda part, i: self.preprocess.dna(part, names[i: i + len(part)]),
                                batch_size)

    def encode_image(self, images: Sequence[Any] | Any, *, batch_size: int = 64,
                     ids: Sequence[Any] | None = None) -> torch.Tensor:
        """Images (paths, bytes, PIL images or arrays) -> (n, d) float32 L2-normalised."""
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        names = list(ids) if ids is not None else list(range(len(items)))
        return self._encode_raw("image", items, lambda part, i: self.preprocess.images(part, names[i: i + len(part)]),
                                batch_size)

    def encode_text(self, texts: Sequence[str] | str, *, batch_size: int = 256) -> torch.Tensor:
        """Taxonomy strings ("order family genus species") -> (n, d) float32 L2-normalised."""
        items = [texts] if isinstance(texts, str) else list(texts)
        return self._encode_raw("text", items, lambda part, i: self.preprocess.text(part), batch_size)


def create_model(config: ModelConfig | str = "cpu", *, pretrained: bool | None = None,
                 device: str | torch.device = "cpu") -> CLIBDModel:
    """Build a :class:`CLIBDModel` from a ModelConfig or a preset name (``paper``, ``cpu``, ``tiny``).

    Args:
        pretrained: for a preset name, whether to load pretrained weights (preset default otherwise).
        device: where to put the model.
    """
    from .presets import get_preset

    if isinstance(config, str):
        config = get_preset(config, pretrained=pretrained)
    elif pretrained is not None:
        raise ConfigError("`pretrained` applies to preset names; a ModelConfig says per encoder what to load")
    model = CLIBDModel(config)
    return model.to(device)
