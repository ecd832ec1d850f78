"""Released CLIBD checkpoints (``bioscan-ml/clibd``) in the toolkit's ``paper`` architecture, run exactly.

A released file is the flat ``state_dict()`` of the official ``SimpleCLIP`` saved with ``torch.save`` (no wrapper,
fp32). :func:`convert_official_state_dict` maps every key of it onto a :class:`~clibd_toolkit.model.CLIBDModel`
built by :func:`official_model_config` (sizes read from the tensors, so reduced-width test files work too), and
:func:`load_official_checkpoint` does both from a file, loading it weights-only (a pickle that would run code is
refused). The layout (``shared/docs/official-checkpoints.md`` sections 1-2, checked against the official code):

- prefixes: ``image_encoder.lora_vit.`` / ``dna_encoder.lora_barcode_bert.`` / ``language_encoder.lora_bert.``
  (files saved before the April 2025 "Naming refactor", i.e. every released model) or the current
  ``image_encoder.base_image_encoder.`` / ``dna_encoder.base_dna_encoder.`` /
  ``language_encoder.base_language_encoder.``;
  a leading ``module.`` (DDP) is stripped;
- image: a timm ``VisionTransformer`` whose every ``blocks.N.attn.qkv`` is CLIBD's LoRA wrapper, even in the full
  fine-tunes (``CLIBDImageEncoder`` tests ``if lora_layer:`` and ``[]`` is falsy): ``attn.qkv.qkv.{weight,bias}``
  plus ``linear_a_q``/``linear_b_q``/``linear_a_v``/``linear_b_v``. The forward adds ``B @ A x`` to the query and
  value thirds with **no scaling**, so the merged weight is ``W[:d] += B_q A_q`` and ``W[-d:] += B_v A_v`` (bias
  unchanged), then split into q, k, v; ``head.*`` is the trained 768-d projection (applied to the CLS token);
- DNA: ``BertForMaskedLM`` (``bert.*``) whose MLM decoder CLIBD replaced by ``Linear(hidden, 768)``:
  ``cls.predictions.transform.*`` + ``cls.predictions.decoder.*`` are the projection; the embedding is the mean over
  all 133 positions of ``softmax(decoder(transform(h)))`` (the ``softmax_mean`` pooling), no attention mask;
- text: bert-small ``BertModel``; ``language_encoder.proj.*`` (no inner prefix) is the projection of the mean over
  all 20 positions;
- LoRA-mode files (v1 / ``lora_*`` configs): DNA and text ``attention.self.{query,value}`` are CLIBD's
  ``_LoRALayer``: ``.w.{weight,bias}``, ``.w_a.weight`` [r, h], ``.w_b.weight`` [h, r], merged as
  ``W = w + w_b @ w_a`` (no scaling);
- ``logit_scale`` (log of the inverse temperature) is absent from v1 files; the default log(1/0.07) is used then.

Strict: every key is mapped or on the ignore list :data:`IGNORED_KEYS` (``*position_ids`` buffers, which
transformers 4.29.2 still saved; ``cls.predictions.bias``, the MLM vocabulary bias left unused when CLIBD replaced
the decoder; ``pooler.*``, bert-small's unused pooler). Any other key, a missing key or a wrong shape is a
:class:`~clibd_toolkit.errors.CheckpointError` naming the key, its shape and the file.

The converted model behaves as the official one at evaluation time (its :class:`~clibd_toolkit.config.ModelConfig`
says so and is saved with everything made from it): images ``ToTensor -> Resize(256, antialias) ->
CenterCrop(224)``, no normalisation (``image_resample="tensor"``); barcodes tokenised from the stored string with
its gaps (``dna_cleaning="raw"``), 660 nt, non-overlapping 5-mers, prefix id 0, no mask; text ``"order family
genus species"`` (``not_classified`` for missing ranks), bert-small WordPiece, 20 tokens, mean over all positions.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .config import AdapterConfig, EncoderConfig, ModelConfig
from .errors import CheckpointError

#: the encoder prefixes of a released file: (modality, old spelling, current spelling)
PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("image", "image_encoder.lora_vit.", "image_encoder.base_image_encoder."),
    ("dna", "dna_encoder.lora_barcode_bert.", "dna_encoder.base_dna_encoder."),
    ("text", "language_encoder.lora_bert.", "language_encoder.base_language_encoder."),
)
TEXT_HEAD_PREFIX = "language_encoder.proj."
#: keys of a released file that carry nothing the model uses (patterns on the key after its encoder prefix)
IGNORED_KEYS: tuple[str, ...] = ("*position_ids", "cls.predictions.bias", "pooler.*")
_IGNORED = re.compile(r"^(?:.*position_ids|cls\.predictions\.bias|(?:bert\.)?pooler\..*)$")
#: head size of every released CLIBD encoder (ViT-B/16: 768/12, BERT-base: 768/12, bert-small: 512/8)
HEAD_DIM = 64
#: how CLIBD tokenises and crops (reference sections 1.3-1.5): fixed for every released model
DNA_K, DNA_MAX_LENGTH, TEXT_MAX_LENGTH, IMAGE_RESIZE = 5, 660, 20, 256
_FULL = AdapterConfig(mode="full")


@dataclass(frozen=True)
class ConvertedCheckpoint:
    """What :func:`convert_official_state_dict` returns.

    Attributes:
        config: the ModelConfig of the released model (sizes from its tensors, CLIBD's input processing).
        state: the state dict in :class:`~clibd_toolkit.model.CLIBDModel` names, ready for a strict load.
        info: how the file was read: modalities, key spelling (``old``/``current``), fine-tuning layout
            (``full`` or ``lora`` per DNA/text encoder), whether it had ``logit_scale`` and ``position_ids``, and
            the keys ignored.
        origin: for each converted key, the key of the file it came from (error messages name that one).
    """

    config: ModelConfig
    state: dict[str, torch.Tensor]
    info: dict[str, Any]
    origin: dict[str, str]


def _error(source: str, key: str, value: torch.Tensor | None, what: str) -> CheckpointError:
    shape = "" if value is None else f" (shape {list(value.shape)})"
    return CheckpointError(f"{source}: key {key!r}{shape} {what}")


def _split_by_encoder(state: Mapping[str, torch.Tensor],
                      source: str) -> tuple[dict[str, dict], torch.Tensor | None, dict[str, Any]]:
    """({modality: {inner key: tensor}} with the text head under ``proj.``, the logit_scale or None, facts)."""
    parts: dict[str, dict[str, torch.Tensor]] = {"image": {}, "dna": {}, "text": {}}
    spellings: set[str] = set()
    logit_scale = None
    keys = list(state)
    strip_module = bool(keys) and all(k.startswith("module.") for k in keys)
    for raw_key, value in state.items():
        key = raw_key[len("module."):] if strip_module else raw_key
        if not isinstance(value, torch.Tensor):
            raise _error(source, raw_key, None, f"holds a {type(value).__name__}, not a tensor; this is not a "
                         "released CLIBD state dict")
        if key == "logit_scale":
            logit_scale = value
            continue
        if key.startswith(TEXT_HEAD_PREFIX):
            parts["text"]["proj." + key[len(TEXT_HEAD_PREFIX):]] = value
            continue
        for modality, old, new in PREFIXES:
            if key.startswith((old, new)):
                spelling = "old" if key.startswith(old) else "current"
                spellings.add(spelling)
                inner = key[len(old if spelling == "old" else new):]
                if inner in parts[modality]:
                    raise _error(source, raw_key, value, "appears under both the old and the current prefix")
                parts[modality][inner] = value
                break
        else:
            raise _error(source, raw_key, value, "is not part of a released CLIBD model (expected keys under "
                         f"{', '.join(p for _, o, n in PREFIXES for p in (o, n))}, {TEXT_HEAD_PREFIX} or "
                         "logit_scale); is this a CLIBD checkpoint?")
    info = {"modalities": [m for m in parts if parts[m]],
            "key_spelling": "/".join(sorted(spellings)) or "none", "logit_scale": logit_scale is not None,
            "ddp_prefix_stripped": strip_module}
    return {m: p for m, p in parts.items() if p}, logit_scale, info


class _Tracked:
    """Converted tensors of one encoder, remembering which key of the file each came from (for messages)."""

    def __init__(self, origin: dict[str, str], prefix: str):
        self.values: dict[str, torch.Tensor] = {}
        self.origin, self.prefix = origin, prefix

    def put(self, key: str, value: torch.Tensor, source_key: str, *, absolute: bool = False) -> None:
        self.values[key] = value
        self.origin[key] = source_key if absolute else self.prefix + source_key


def _lora_merge(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, where: str, source: str) -> torch.Tensor:
    """``weight + b @ a`` (CLIBD's unscaled LoRA) with shape checks."""
    if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != tuple(weight.shape):
        raise CheckpointError(f"{source}: LoRA tensors of {where} have shapes A {list(a.shape)}, B {list(b.shape)} "
                              f"that do not fit its weight {list(weight.shape)}")
    return weight + b.to(weight.dtype) @ a.to(weight.dtype)


# --- image ------------------------------------------------------------------------------------------------------

_VIT_TOP = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
            "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
            "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
            "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
_VIT_BLOCK = {"norm1.": "layernorm_before.", "norm2.": "layernorm_after.", "attn.proj.": "attention.o_proj.",
              "mlp.fc1.": "mlp.fc1.", "mlp.fc2.": "mlp.fc2."}
_VIT_LORA = ("linear_a_q", "linear_b_q", "linear_a_v", "linear_b_v")


def _convert_image(part: dict[str, torch.Tensor], source: str, prefix: str,
                   origin: dict[str, str]) -> tuple[dict, dict[str, Any]]:
    out = _Tracked(origin, prefix)
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in part.items():
        name = prefix + key
        if _IGNORED.match(key):
            continue
        if key in _VIT_TOP:
            out.put("backbone." + _VIT_TOP[key], value, key)
            continue
        if key in ("head.weight", "head.bias"):
            out.put(key, value, key)
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if m is None:
            raise _error(source, name, value, "is not a key of CLIBD's timm ViT image encoder")
        layer, rest = int(m.group(1)), m.group(2)
        lora = re.fullmatch(r"attn\.qkv\.(?:qkv\.(weight|bias)|(linear_[ab]_[qv])\.weight)", rest)
        plain = re.fullmatch(r"attn\.qkv\.(weight|bias)", rest)
        if lora or plain:
            slot = (lora.group(1) or lora.group(2)) if lora else plain.group(1)
            qkv.setdefault(layer, {})[slot] = value
            continue
        for src, dst in _VIT_BLOCK.items():
            if rest.startswith(src) and rest[len(src):] in ("weight", "bias"):
                out.put(f"backbone.layers.{layer}.{dst}{rest[len(src):]}", value, key)
                break
        else:
            raise _error(source, name, value, "is not a key of CLIBD's timm ViT image encoder")
    lora_layers = 0
    for layer, slots in sorted(qkv.items()):
        where = f"{prefix}blocks.{layer}.attn.qkv"
        if "weight" not in slots or "bias" not in slots:
            raise CheckpointError(f"{source}: {where} lacks its fused qkv weight or bias (keys "
                                  f"{sorted(slots)} present)")
        weight, bias = slots["weight"], slots["bias"]
        present = [s for s in _VIT_LORA if s in slots]
        if present and len(present) != len(_VIT_LORA):
            raise CheckpointError(f"{source}: {where} has the LoRA tensors {present} but not "
                                  f"{[s for s in _VIT_LORA if s not in slots]}; a CLIBD LoRA block has all four")
        if weight.ndim != 2 or weight.shape[0] != 3 * weight.shape[1] or bias.shape != (weight.shape[0],):
            raise CheckpointError(f"{source}: {where} has weight {list(weight.shape)} and bias {list(bias.shape)}; "
                                  "expected [3d, d] and [3d] (timm's fused qkv)")
        if present:
            d = weight.shape[1]
            weight = weight.clone()
            weight[:d] = _lora_merge(weight[:d], slots["linear_a_q"], slots["linear_b_q"], where + " (query)", source)
            weight[-d:] = _lora_merge(weight[-d:], slots["linear_a_v"], slots["linear_b_v"], where + " (value)",
                                      source)
            lora_layers += 1
        fused = f"blocks.{layer}.attn.qkv." + ("qkv." if present else "")
        for name, w, b in zip(("q_proj", "k_proj", "v_proj"), weight.chunk(3, dim=0), bias.chunk(3, dim=0)):
            out.put(f"backbone.layers.{layer}.attention.{name}.weight", w.contiguous(), fused + "weight")
            out.put(f"backbone.layers.{layer}.attention.{name}.bias", b.contiguous(), fused + "bias")
    return out.values, {"image_lora_merged_layers": lora_layers}


def _image_sizes(part: dict[str, torch.Tensor], source: str, prefix: str) -> dict[str, int]:
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "head.weight"):
        if key not in part:
            raise CheckpointError(f"{source}: missing key {prefix + key!r} of the image encoder")
    patch = part["patch_embed.proj.weight"]
    tokens = part["pos_embed"].shape[1] - 1
    side = math.isqrt(tokens)
    if patch.shape[-2:] != (16, 16) or side * side != tokens or side * 16 != 224:
        raise CheckpointError(f"{source}: the image encoder has {list(patch.shape[-2:])} patches and {tokens} "
                              "patch positions; CLIBD's ViT-B/16 has 16x16 patches of a 224-pixel image (196)")
    layers = {int(m.group(1)) for k in part for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
    fc1 = next((v for k, v in part.items() if k.endswith("mlp.fc1.weight")), None)
    if not layers or fc1 is None:
        raise CheckpointError(f"{source}: the image encoder has no transformer blocks ({prefix}blocks.N.*)")
    return {"hidden": int(part["cls_token"].shape[-1]), "layers": max(layers) + 1,
            "intermediate": int(fc1.shape[0]), "embed_dim": int(part["head.weight"].shape[0])}


# --- DNA and text (BERT) ------------------------------------------------------------------------------------------

_BERT_LORA = re.compile(r"(.*\.attention\.self\.(?:query|value))\.(w\.weight|w\.bias|w_a\.weight|w_b\.weight)$")


def _merge_bert_lora(part: dict[str, torch.Tensor], source: str, prefix: str) -> tuple[dict, int]:
    """Fold CLIBD's ``_LoRALayer`` (``query``/``value`` -> ``.w``, ``.w_a``, ``.w_b``) into plain Linear keys."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in part.items():
        m = _BERT_LORA.match(key)
        if m:
            groups.setdefault(m.group(1), {})[m.group(2)] = value
        else:
            out[key] = value
    for base, slots in groups.items():
        where = prefix + base
        if set(slots) != {"w.weight", "w.bias", "w_a.weight", "w_b.weight"}:
            raise CheckpointError(f"{source}: {where} is a CLIBD LoRA layer with only {sorted(slots)}; it needs "
                                  "w.weight, w.bias, w_a.weight and w_b.weight")
        if base + ".weight" in out or base + ".bias" in out:
            raise CheckpointError(f"{source}: {where} has both a plain and a LoRA weight")
        out[base + ".weight"] = _lora_merge(slots["w.weight"], slots["w_a.weight"], slots["w_b.weight"], where,
                                            source)
        out[base + ".bias"] = slots["w.bias"]
    return out, len(groups)


def _convert_dna(part: dict[str, torch.Tensor], source: str, prefix: str,
                 origin: dict[str, str]) -> tuple[dict, dict[str, Any]]:
    merged, n_lora = _merge_bert_lora(part, source, prefix)
    out = _Tracked(origin, prefix)
    for key, value in merged.items():
        if _IGNORED.match(key):
            continue
        if key.startswith("bert."):
            out.put("backbone." + key[len("bert."):], value, key)
        elif key.startswith("cls.predictions.transform."):
            out.put("transform." + key[len("cls.predictions.transform."):], value, key)
        elif key in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
            out.put("head." + key.rsplit(".", 1)[1], value, key)
        else:
            raise _error(source, prefix + key, value, "is not a key of CLIBD's BarcodeBERT DNA encoder")
    return out.values, {"dna_layout": "lora" if n_lora else "full", "dna_lora_merged": n_lora}


def _convert_text(part: dict[str, torch.Tensor], source: str, prefix: str,
                  origin: dict[str, str]) -> tuple[dict, dict[str, Any]]:
    merged, n_lora = _merge_bert_lora(part, source, prefix)
    out = _Tracked(origin, prefix)
    for key, value in merged.items():
        if key.startswith("proj."):
            head_key = TEXT_HEAD_PREFIX + key[len("proj."):]
            if key not in ("proj.weight", "proj.bias"):
                raise _error(source, head_key, value, "is not part of the text head")
            out.put("head." + key[len("proj."):], value, head_key, absolute=True)
        elif _IGNORED.match(key):
            continue
        elif key.startswith(("embeddings.", "encoder.")):
            out.put("backbone." + key, value, key)
        else:
            raise _error(source, prefix + key, value, "is not a key of CLIBD's bert-small text encoder")
    return out.values, {"text_layout": "lora" if n_lora else "full", "text_lora_merged": n_lora}


def _bert_sizes(state: dict[str, torch.Tensor], source: str, what: str, head: str) -> dict[str, int]:
    words = state.get("backbone.embeddings.word_embeddings.weight")
    positions = state.get("backbone.embeddings.position_embeddings.weight")
    ffn = next((v for k, v in state.items() if k.endswith("intermediate.dense.weight")), None)
    layers = {int(m.group(1)) for k in state for m in [re.search(r"encoder\.layer\.(\d+)\.", k)] if m}
    if words is None or positions is None or ffn is None or not layers or head not in state:
        missing = [n for n, v in (("word_embeddings", words), ("position_embeddings", positions),
                                  ("encoder layers", ffn if layers else None), ("projection head", state.get(head)))
                   if v is None]
        raise CheckpointError(f"{source}: the {what} encoder lacks its {', '.join(missing)}; the file is incomplete")
    return {"vocab": int(words.shape[0]), "hidden": int(words.shape[1]), "layers": max(layers) + 1,
            "intermediate": int(ffn.shape[0]), "positions": int(positions.shape[0]),
            "embed_dim": int(state[head].shape[0])}


# --- the model ---------------------------------------------------------------------------------------------------


def _heads(modality: str, hidden: int, num_heads: Mapping[str, int] | None, source: str) -> int:
    if num_heads and modality in num_heads:
        return int(num_heads[modality])
    if hidden % HEAD_DIM:
        raise CheckpointError(f"{source}: cannot infer the attention heads of the {modality} encoder: its hidden size "
                              f"{hidden} is not a multiple of {HEAD_DIM}, the head size of every released CLIBD "
                              f"encoder; pass num_heads={{{modality!r}: N}}")
    return hidden // HEAD_DIM


def official_model_config(*, embed_dim: int, image: dict[str, int] | None = None, dna: dict[str, int] | None = None,
                          text: dict[str, int] | None = None, logit_scale: float | None = None,
                          name: str = "clibd-released") -> ModelConfig:
    """The ModelConfig of a released CLIBD model with the given encoder sizes (``hidden``, ``layers``, ``heads``,
    ``intermediate``, and ``positions`` for the BERTs): CLIBD's architecture and evaluation-time input processing
    (module docstring), full fine-tuning adapters, ``preset=name``."""
    def encoder(arch: str, sizes: dict[str, int] | None, **extra: Any) -> EncoderConfig | None:
        if sizes is None:
            return None
        return EncoderConfig(arch=arch, hidden_size=sizes["hidden"], num_layers=sizes["layers"],
                             num_heads=sizes["heads"], intermediate_size=sizes["intermediate"],
                             max_positions=sizes.get("positions", 0), adapter=_FULL, **extra)

    scale = math.exp(logit_scale) if logit_scale is not None else 1 / 0.07
    return ModelConfig(
        preset=name, embed_dim=embed_dim,
        image=encoder("vit_b16", image), dna=encoder("bert_kmer", dna, pooling="softmax_mean"),
        text=encoder("bert", text, pooling="mean"),
        image_size=224, image_resize=IMAGE_RESIZE, image_normalize="none", image_resample="tensor",
        dna_k=DNA_K, dna_max_length=DNA_MAX_LENGTH, dna_attention_mask=False, dna_cleaning="raw",
        text_max_length=TEXT_MAX_LENGTH, logit_scale_max=max(100.0, scale),
    )


def convert_official_state_dict(state: Mapping[str, torch.Tensor], *, source: str = "state dict",
                                num_heads: Mapping[str, int] | None = None,
                                name: str = "clibd-released") -> ConvertedCheckpoint:
    """Map a released CLIBD state dict onto the toolkit's model (see the module docstring for every rule).

    Args:
        state: the flat state dict (``torch.load`` of a released ``best.pth``).
        source: the file name, used in every error message.
        num_heads: attention heads per modality when the hidden size is not a multiple of 64 (test files).
        name: recorded as the config's ``preset``.

    Raises:
        CheckpointError: an unknown key, a missing key, a wrong shape or an inconsistent LoRA block, naming the
            key, its shape and ``source``.
    """
    parts, logit, info = _split_by_encoder(state, source)
    if "image" not in parts and "dna" not in parts and "text" not in parts:
        raise CheckpointError(f"{source}: no CLIBD encoder keys found (image_encoder.*, dna_encoder.*, "
                              "language_encoder.*); is this a CLIBD checkpoint?")
    prefix = {m: (old if info["key_spelling"] != "current" else new) for m, old, new in PREFIXES}
    converted: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    sizes: dict[str, dict[str, int]] = {}
    for modality, convert in (("image", _convert_image), ("dna", _convert_dna), ("text", _convert_text)):
        if modality not in parts:
            continue
        inner_origin: dict[str, str] = {}
        out, facts = convert(parts[modality], source, prefix[modality], inner_origin)
        origin.update({f"encoders.{modality}.{k}": v for k, v in inner_origin.items()})
        info.update(facts)
        if modality == "image":
            sizes[modality] = _image_sizes(parts[modality], source, prefix[modality])
        else:
            sizes[modality] = _bert_sizes(out, source, modality, "head.weight")
        sizes[modality]["heads"] = _heads(modality, sizes[modality]["hidden"], num_heads, source)
        converted.update({f"encoders.{modality}.{k}": v for k, v in out.items()})
    dims = {m: s["embed_dim"] for m, s in sizes.items()}
    if len(set(dims.values())) != 1:
        raise CheckpointError(f"{source}: the encoders project into spaces of different sizes {dims}; a CLIBD "
                              "model has one shared space")
    if "dna" in sizes and sizes["dna"]["vocab"] != 3 + 4 ** DNA_K:
        raise CheckpointError(f"{source}: the DNA encoder has a vocabulary of {sizes['dna']['vocab']} tokens; "
                              f"CLIBD's BarcodeBERT has {3 + 4 ** DNA_K} (3 specials + every {DNA_K}-mer)")
    if logit is not None:
        if logit.numel() != 1:
            raise _error(source, "logit_scale", logit, "should be a scalar")
        converted["logit_scale"] = logit.reshape(()).float()
        origin["logit_scale"] = "logit_scale"
    else:  # v1 files: CLIBD's initial temperature (SimpleCLIP's init_logit_scale)
        converted["logit_scale"] = torch.tensor(math.log(1 / 0.07), dtype=torch.float32)
    config = official_model_config(embed_dim=next(iter(dims.values())), image=sizes.get("image"),
                                   dna=sizes.get("dna"), text=sizes.get("text"),
                                   logit_scale=None if logit is None else float(logit), name=name)
    info["ignored_keys"] = sorted(k for k in state if _IGNORED.match(_inner_key(k)))
    return ConvertedCheckpoint(config, converted, info, origin)


def _file_key(key: str, info: dict[str, Any]) -> str:
    """The file key (old spelling unless the file used the current one) that would have held model key ``key``."""
    parts = key.split(".", 2)
    if len(parts) < 3 or parts[0] != "encoders":
        return key
    modality, rest = parts[1], parts[2]
    old, new = next((o, n) for m, o, n in PREFIXES if m == modality)
    prefix = new if info.get("key_spelling") == "current" else old
    if modality == "image":
        m = re.fullmatch(r"backbone\.layers\.(\d+)\.attention\.[qkv]_proj\.(weight|bias)", rest)
        if m:
            return f"{prefix}blocks.{m.group(1)}.attn.qkv.qkv.{m.group(2)}"
        back = {v: k for k, v in _VIT_TOP.items()}
        if rest.startswith("backbone.") and rest[len("backbone."):] in back:
            return prefix + back[rest[len("backbone."):]]
        m = re.fullmatch(r"backbone\.layers\.(\d+)\.(.+)", rest)
        if m:
            for src, dst in _VIT_BLOCK.items():
                if m.group(2).startswith(dst):
                    return f"{prefix}blocks.{m.group(1)}.{src}{m.group(2)[len(dst):]}"
        return prefix + rest
    if modality == "dna":
        if rest.startswith("backbone."):
            return prefix + "bert." + rest[len("backbone."):]
        if rest.startswith("transform."):
            return prefix + "cls.predictions." + rest
        return prefix + "cls.predictions.decoder." + rest.rsplit(".", 1)[-1]
    if rest.startswith("head."):
        return TEXT_HEAD_PREFIX + rest[len("head."):]
    return prefix + rest[len("backbone."):]


def _inner_key(key: str) -> str:
    key = key[len("module."):] if key.startswith("module.") else key
    for _, old, new in PREFIXES:
        for p in (old, new):
            if key.startswith(p):
                return key[len(p):]
    return key


def read_official_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a released checkpoint file weights-only (memory-mapped when it is a zip ``torch.save`` file).

    Raises:
        CheckpointError: missing, unreadable, or not a flat state dict of tensors.
        UnsafeFileError: the file is a pickle that would run code (refused, never executed).
    """
    import pickle

    from .io import load_tensors, unpickling_error

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_tensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise unpickling_error(path, exc) from None
    except (RuntimeError, EOFError, OSError, ValueError):
        return load_tensors(path)  # not a zip archive (legacy torch.save): read it without mmap, same checks
    if isinstance(state, dict) and len(state) == 1 and isinstance(next(iter(state.values())), dict):
        state = next(iter(state.values()))  # a {"state_dict": ...} / {"model": ...} wrapper
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def load_official_checkpoint(path: str | Path, *, device: str | torch.device = "cpu",
                             num_heads: Mapping[str, int] | None = None, name: str | None = None):
    """Build the toolkit model of a released CLIBD checkpoint file and load its weights (strict).

    Args:
        path: a released ``best.pth`` (or the same state dict as ``.safetensors``).
        device: where to put the model.
        num_heads: see :func:`convert_official_state_dict`.
        name: a registry name to record (default: the file name).

    Returns:
        A :class:`~clibd_toolkit.model.CLIBDModel` in eval mode; ``model.source`` records the file, its SHA-256
        and how it was read (embedding files and outputs carry it).
    """
    from .io import sha256_file
    from .model import CLIBDModel

    path = Path(path)
    state = read_official_state(path)
    converted = convert_official_state_dict(state, source=str(path), num_heads=num_heads,
                                            name=name or "clibd-released")
    model = CLIBDModel(converted.config)
    load_converted(model, converted, str(path))
    model.source = {"kind": "clibd-released", "name": name, "file": str(path.resolve()),
                    "sha256": sha256_file(path), **converted.info}
    model.eval()
    return model.to(device)


def load_converted(model, converted: ConvertedCheckpoint, source: str) -> None:
    """Strictly load a converted state dict: every model weight must come from the file with its exact shape."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in converted.state]
    if missing:
        names = [_file_key(k, converted.info) for k in missing[:3]]
        raise CheckpointError(f"{source}: {len(missing)} weights of the model are not in the file, e.g. missing key "
                              f"{', '.join(map(repr, names))}; the file is incomplete or not a released CLIBD "
                              "checkpoint")
    extra = [k for k in converted.state if k not in expected]
    if extra:
        raise CheckpointError(f"{source}: converted keys {extra[:3]} have no place in the model")
    for key, value in converted.state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            name = converted.origin.get(key, key)
            raise CheckpointError(f"{source}: key {name!r} has shape {list(value.shape)} but the model it describes "
                                  f"needs {list(expected[key].shape)} there (its other tensors fix the sizes); the "
                                  "file is inconsistent")
    model.load_state_dict(converted.state, strict=True)
