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
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..config import EncoderConfig, ModelConfig
from ..errors import ConfigError


@dataclass(frozen=True)
class EncoderSpec:
    """A registered encoder architecture: its name, modality, builder and a one-line description."""

    name: str
    modality: str
    builder: Callable[[EncoderConfig, ModelConfig], nn.Module]
    description: str


_REGISTRY: dict[tuple[str, str], EncoderSpec] = {}


def register_encoder(modality: str, name: str, description: str = ""):
    """Decorator registering ``builder(encoder_cfg, model_cfg) -> nn.Module`` as architecture ``name``."""

    def deco(builder: Callable[[EncoderConfig, ModelConfig], nn.Module]):
        key = (modality, name)
        if key in _REGISTRY:
            raise ConfigError(f"encoder architecture {name!r} is already registered for {modality}")
        _REGISTRY[key] = EncoderSpec(name, modality, builder, description)
        return builder

    return deco


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


def pick(value: int, default: int) -> int:
    """An EncoderConfig size field: 0 means the architecture default."""
    return value if value > 0 else default
