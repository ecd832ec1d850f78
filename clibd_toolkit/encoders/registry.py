"""The encoder registry itself: :func:`register_encoder` and the specs it keeps. The builtin architectures
(:mod:`.dna`, :mod:`.image`, :mod:`.text`) register here; :mod:`clibd_toolkit.encoders` loads them and builds."""
from __future__ import annotations

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


REGISTRY: dict[tuple[str, str], EncoderSpec] = {}


def register_encoder(modality: str, name: str, description: str = ""):
    """Decorator registering ``builder(encoder_cfg, model_cfg) -> nn.Module`` as architecture ``name``."""

    def deco(builder: Callable[[EncoderConfig, ModelConfig], nn.Module]):
        key = (modality, name)
        if key in REGISTRY:
            raise ConfigError(f"encoder architecture {name!r} is already registered for {modality}")
        REGISTRY[key] = EncoderSpec(name, modality, builder, description)
        return builder

    return deco


def pick(value: int, default: int) -> int:
    """An EncoderConfig size field: 0 means the architecture default."""
    return value if value > 0 else default
