"""Encoder registry: one builder per architecture name, per modality.

An encoder is an ``nn.Module`` that maps a preprocessed batch of one modality to ``(batch, embed_dim)`` features
(not yet normalised; :class:`~clibd_toolkit.model.CLIBDModel` normalises). Every encoder has

- ``backbone``: the pretrained or random network (what LoRA adapts),
- ``head``: the new projection into the shared space (always trained),
- ``lora_targets``: default LoRA target module names for its architecture,
- ``input_kind``: which preprocessing it needs (``"image"``, ``"kmer"``, ``"text"``).

Register new architectures with :func:`register_encoder`; ``clibd presets`` lists them with parameter counts.
"""
from __future__ import annotations

import difflib

from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from .registry import REGISTRY as _REGISTRY
from .registry import EncoderSpec, pick, register_encoder

__all__ = ["EncoderSpec", "build_encoder", "list_architectures", "pick", "register_encoder"]


def _load_builtin() -> None:
    from . import dna, image, text  # noqa: F401  (registration side effect)


def list_architectures(modality: str | None = None) -> list[EncoderSpec]:
    """Registered encoder architectures, all or those of one modality."""
    _load_builtin()
    return [s for (m, _), s in sorted(_REGISTRY.items()) if modality is None or m == modality]


def build_encoder(modality: str, model_config: ModelConfig) -> nn.Module:
    """Build the encoder of ``modality`` described by ``model_config``."""
    _load_builtin()
    cfg = model_config.encoder(modality)
    spec = _REGISTRY.get((modality, cfg.arch))
    if spec is None:
        names = [s.name for s in list_architectures(modality)]
        match = difflib.get_close_matches(cfg.arch, names, n=1)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        raise ConfigError(f"unknown {modality} encoder architecture {cfg.arch!r}{hint} (available: {names})")
    return spec.builder(cfg, model_config)
