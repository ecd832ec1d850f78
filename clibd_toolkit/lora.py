"""Per-encoder fine-tuning modes: PEFT LoRA, full fine-tuning, or frozen (reference section 1.2).

LoRA adapters are injected into the encoder's ``backbone`` with ``peft.inject_adapter_in_model`` (in place, so the
backbone keeps its type and forward signature); the projection ``head`` always trains. Adapters save to and load
from safetensors, and :func:`merge_adapters` folds them into the base weights (outputs unchanged).

Parity note: CLIBD's own LoRA adapted the query and value projections with rank 4 and no scaling; the default
``AdapterConfig(r=4, alpha=4)`` on ``("query", "value")`` is the same update (alpha / r = 1).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .config import AdapterConfig, ModelConfig
from .errors import CheckpointError, ConfigError


def apply_adapter(encoder: nn.Module, adapter: AdapterConfig) -> nn.Module:
    """Set up ``encoder`` for its fine-tuning mode; returns the same module (modified in place)."""
    from peft import LoraConfig, inject_adapter_in_model

    if adapter.mode == "lora":
        targets = list(adapter.target_modules or encoder.lora_targets)
        names = {name.split(".")[-1] for name, _ in encoder.backbone.named_modules()}
        unknown = [t for t in targets if t not in names]
        if unknown:
            raise ConfigError(f"LoRA target modules {unknown} do not exist in {type(encoder).__name__}'s backbone; "
                              f"defaults for it are {list(encoder.lora_targets)}")
        config = LoraConfig(r=adapter.r, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout,
                            target_modules=targets, init_lora_weights=True)
        encoder.backbone = inject_adapter_in_model(config, encoder.backbone)
        for name, param in encoder.backbone.named_parameters():
            param.requires_grad = "lora_" in name
    elif adapter.mode == "frozen":
        for param in encoder.backbone.parameters():
            param.requires_grad = False
    else:
        for param in encoder.backbone.parameters():
            param.requires_grad = True
    for name, module in encoder.named_children():
        if name != "backbone":
            for param in module.parameters():
                param.requires_grad = True
    return encoder


def trainable_summary(model: nn.Module) -> dict[str, dict[str, int]]:
    """Parameter counts per encoder: total and trainable."""
    out = {}
    for modality, enc in model.encoders.items():
        total = sum(p.numel() for p in enc.parameters())
        train = sum(p.numel() for p in enc.parameters() if p.requires_grad)
        out[modality] = {"total": total, "trainable": train}
    return out


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA adapter weights and the projection heads (what LoRA fine-tuning changes)."""
    state = {}
    for name, param in model.state_dict().items():
        if "lora_" in name or ".head." in name or name == "logit_scale":
            state[name] = param.detach().clone().contiguous()
    return state


def save_adapters(model: nn.Module, folder: str | Path) -> Path:
    """Write ``adapters.safetensors`` (LoRA weights + heads + temperature) and ``adapter_config.json``."""
    from safetensors.torch import save_file

    from .io import atomic_path, atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "adapters.safetensors") as tmp:
        save_file(adapter_state_dict(model), str(tmp))
    atomic_write_text(folder / "adapter_config.json", json.dumps(model.config.to_json_dict(), indent=2))
    return folder


def load_adapters(model: nn.Module, folder: str | Path) -> nn.Module:
    """Load adapters written by :func:`save_adapters` into a model built from the same ModelConfig."""
    from .io import load_tensors

    folder = Path(folder)
    saved = ModelConfig.load(folder / "adapter_config.json")
    if saved != model.config:
        raise CheckpointError(f"adapters in {folder} were trained for a different model config; build the model "
                              "from the adapter_config.json there (ModelConfig.load) first")
    state = load_tensors(folder / "adapters.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise CheckpointError(f"{folder}: {len(unexpected)} adapter weights do not fit this model, e.g. {unexpected[:3]}")
    return model


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base layer and remove the adapter modules (outputs unchanged).

    The encoders' configs switch to ``mode="full"`` (the merged weights are plain weights now).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for modality, enc in model.encoders.items():
        for name, module in list(enc.backbone.named_modules()):
            if isinstance(module, BaseTunerLayer):
                module.merge()
                parent_name, _, child = name.rpartition(".")
                parent = enc.backbone.get_submodule(parent_name) if parent_name else enc.backbone
                setattr(parent, child, module.get_base_layer())
        for param in enc.parameters():
            param.requires_grad = True
    cfg = model.config
    model.config = cfg.replace(**{m: cfg.encoder(m).replace(adapter=AdapterConfig(mode="full"))
                                  for m in cfg.modalities if cfg.encoder(m).adapter.mode == "lora"})
    return model
