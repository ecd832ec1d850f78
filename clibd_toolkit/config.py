"""Validated, frozen configuration dataclasses.

Every config is a ``@dataclass(frozen=True, kw_only=True)`` subclass of :class:`Config`:

- every field has a default, so ``ModelConfig()`` is valid;
- ``__post_init__`` checks types, ranges and allowed values, and raises :class:`~clibd_toolkit.errors.ConfigError`
  naming the field, the value and what is allowed;
- :meth:`Config.from_dict` rejects unknown keys and suggests the closest valid one;
- :meth:`Config.to_dict` / :meth:`Config.save` write JSON stamped with the toolkit version. Checkpoints, embedding
  files and metrics all carry the config that produced them.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union

from .errors import ConfigError, short
from .schema import MODALITIES

C = TypeVar("C", bound="Config")


def _suggest(name: str, allowed: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _check_value(owner: str, name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the type ``hint``; return it, converted where the conversion is lossless
    (int -> float, list -> tuple, dict -> nested Config). Raise ConfigError otherwise."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    where = f"`{owner}.{name}`"
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own, more specific message
            return _check_value(owner, name, value, options[0])
        for option in args:
            if option is type(None):
                continue
            try:
                return _check_value(owner, name, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where} got {short(value)} of type {type(value).__name__}; expected {_type_name(hint)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{where} got {short(value)}; expected one of {list(args)}" + _suggest(str(value), map(str, args))
            )
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} got {short(value)}; expected a list of {_type_name(args[0])}")
        item_hint = args[0]
        return tuple(_check_value(owner, name, v, item_hint) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} got {short(value)}; expected a mapping")
        return dict(value)
    if isinstance(hint, type) and issubclass(hint, Config):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return hint.from_dict(value)
        raise ConfigError(f"{where} got {short(value)}; expected a {hint.__name__} or a mapping of its fields")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} got {short(value)} of type {type(value).__name__}; expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} got {short(value)} of type {type(value).__name__}; expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} got {short(value)} of type {type(value).__name__}; expected a number")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{where} got {value}; expected a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} got {short(value)} of type {type(value).__name__}; expected a string")
        return value
    return value


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(hint)[0])}"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


@dataclass(frozen=True, kw_only=True)
class Config:
    """Base of every config: type checking, validation, dict/JSON round trip with unknown-key errors."""

    #: kind stamped into saved JSON, so a file of one config type is not loaded as another
    kind: ClassVar[str] = "config"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            checked = _check_value(type(self).__name__, f.name, value, hints[f.name])
            if checked is not value:
                object.__setattr__(self, f.name, checked)
        self.validate()

    def validate(self) -> None:
        """Check ranges and combinations of fields; override in subclasses."""

    # --- helpers for validate() --------------------------------------------------------------------------
    def _require(self, ok: bool, name: str, expected: str) -> None:
        if not ok:
            raise ConfigError(
                f"`{type(self).__name__}.{name}` got {short(getattr(self, name))}; expected {expected}"
            )

    # --- (de)serialisation ---------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from a mapping; unknown keys are an error (with the closest valid name suggested)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} needs a mapping of its fields, got {short(data)}")
        data = {k: v for k, v in data.items() if k not in ("clibd_toolkit_version", "config_kind")}
        allowed = cls.field_names()
        for key in data:
            if key not in allowed:
                raise ConfigError(
                    f"unknown {cls.__name__} key {key!r}{_suggest(key, allowed)} (valid keys: {', '.join(allowed)})"
                )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Config):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def to_json_dict(self) -> dict[str, Any]:
        """``to_dict`` plus the toolkit version and config kind, as written to files."""
        from . import __version__

        return {"config_kind": self.kind, "clibd_toolkit_version": __version__, **self.to_dict()}

    def replace(self: C, **changes: Any) -> C:
        allowed = self.field_names()
        for key in changes:
            if key not in allowed:
                raise ConfigError(f"unknown {type(self).__name__} key {key!r}{_suggest(key, allowed)}")
        return dataclasses.replace(self, **changes)

    def save(self, path: str | Path) -> None:
        from .io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_json_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} holds a JSON {type(data).__name__}, not an object of settings")
        kind = data.get("config_kind", cls.kind)
        if kind != cls.kind:
            raise ConfigError(f"{path} holds a {kind!r} config, not a {cls.kind!r} config")
        return cls.from_dict(data)


# --- model ----------------------------------------------------------------------------------------------------

FinetuneMode = Literal["lora", "full", "frozen"]


@dataclass(frozen=True, kw_only=True)
class AdapterConfig(Config):
    """How one encoder is fine-tuned.

    ``mode="lora"`` inserts PEFT LoRA adapters (only they and the projection head train); ``"full"`` trains every
    weight; ``"frozen"`` trains only the projection head. CLIBD's LoRA used rank 4 on the query and value
    projections with no scaling, i.e. ``alpha == r`` (reference section 1.2).
    """

    kind: ClassVar[str] = "adapter"

    mode: FinetuneMode = "lora"  # lora | full | frozen
    r: int = 4  # LoRA rank
    alpha: float = 4.0  # LoRA alpha; the update is scaled by alpha / r (CLIBD: scale 1)
    dropout: float = 0.0  # dropout on the LoRA input
    target_modules: tuple[str, ...] | None = None  # module-name suffixes; None = the architecture's default

    def validate(self) -> None:
        self._require(self.r >= 1, "r", "an integer >= 1 (LoRA rank)")
        self._require(self.alpha > 0, "alpha", "a number > 0")
        self._require(0.0 <= self.dropout < 1.0, "dropout", "a number in [0, 1)")
        if self.target_modules is not None:
            self._require(len(self.target_modules) > 0, "target_modules", "a non-empty list or null")


@dataclass(frozen=True, kw_only=True)
class EncoderConfig(Config):
    """One modality's encoder: an architecture from the registry (:mod:`clibd_toolkit.encoders`), its size,
    where its weights come from, its pooling, and how it is fine-tuned."""

    kind: ClassVar[str] = "encoder"

    arch: str = "tiny"  # registry name, see `clibd presets` / encoders.list_architectures()
    pretrained: str | None = None  # None (random init), "bundled" (weights shipped offline), a hub id or a path
    hidden_size: int = 0  # 0 = the architecture's default
    num_layers: int = 0
    num_heads: int = 0
    intermediate_size: int = 0
    max_positions: int = 0  # position embeddings (0 = the architecture default); released CLIBD BERTs have 512
    pooling: str = "default"  # architecture-specific: default | mean | cls | softmax_mean (CLIBD DNA)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)

    def validate(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions"):
            self._require(getattr(self, name) >= 0, name, "an integer >= 0 (0 = architecture default)")
        self._require(bool(self.arch), "arch", "a registered architecture name")


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Config):
    """The whole CLIBD model: one encoder per modality (None = modality absent), the shared space and the
    input processing. Build with :func:`clibd_toolkit.create_model`; presets in :mod:`clibd_toolkit.presets`."""

    kind: ClassVar[str] = "model"

    preset: str = "custom"  # name of the preset this config came from (informational)
    embed_dim: int = 768  # dimension of the shared latent space
    image: EncoderConfig | None = None
    dna: EncoderConfig | None = None
    text: EncoderConfig | None = None
    # image input
    image_size: int = 224  # square side fed to the image encoder
    image_resize: int = 256  # eval: resize short side to this, then centre-crop image_size (CLIBD)
    image_normalize: Literal["none", "imagenet", "half"] = "none"  # CLIBD ViT: none (0..1 pixels)
    # eval resize: "pil" = PIL bilinear on the 8-bit image (the toolkit's models); "tensor" = to float first, then
    # antialiased bilinear resize of the tensor, as torchvision's ToTensor -> Resize(antialias=True) (released CLIBD)
    image_resample: Literal["pil", "tensor"] = "pil"
    # DNA input (BarcodeBERT 5-mer scheme, reference section 1.4)
    dna_k: int = 5  # k-mer length; tokens are non-overlapping (stride k)
    dna_max_length: int = 660  # nucleotides: truncate or right-pad with N to this length
    dna_attention_mask: bool = False  # CLIBD passes no mask (padding k-mers are attended); True masks them
    # "clean": gaps and whitespace removed before k-mers are cut (the toolkit's models); "raw": the stored string as
    # CLIBD tokenises it, gaps kept in place (they shift the k-mer frame), only upper-cased (see dna.KmerTokenizer)
    dna_cleaning: Literal["clean", "raw"] = "clean"
    # text input
    text_max_length: int = 20  # tokens, padded to this length (CLIBD)
    # contrastive temperature
    logit_scale_init: float = 1 / 0.07  # exp(logit_scale) at initialisation
    logit_scale_max: float = 100.0  # clamp of exp(logit_scale)

    def validate(self) -> None:
        self._require(self.embed_dim >= 1, "embed_dim", "an integer >= 1")
        self._require(len(self.modalities) >= 1, "image", "at least one of `image`, `dna`, `text` to be set")
        self._require(self.image_size >= 8, "image_size", "an integer >= 8")
        self._require(self.image_resize >= self.image_size, "image_resize", f"an integer >= image_size ({self.image_size})")
        self._require(1 <= self.dna_k <= 8, "dna_k", "an integer in 1..8")
        self._require(self.dna_max_length >= self.dna_k, "dna_max_length", f"an integer >= dna_k ({self.dna_k})")
        self._require(self.text_max_length >= 4, "text_max_length", "an integer >= 4")
        self._require(self.logit_scale_init > 0, "logit_scale_init", "a number > 0")
        self._require(self.logit_scale_max >= self.logit_scale_init, "logit_scale_max", ">= logit_scale_init")

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this model has, in canonical order."""
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)

    def encoder(self, modality: str) -> EncoderConfig:
        cfg = getattr(self, modality, None) if modality in MODALITIES else None
        if cfg is None:
            raise ConfigError(
                f"this model has no {modality!r} encoder; it has {list(self.modalities)}"
            )
        return cfg

    def with_modalities(self, modalities: typing.Iterable[str]) -> ModelConfig:
        """Keep only the encoders of ``modalities`` (e.g. ``("dna", "text")``)."""
        wanted = parse_modalities(modalities)
        missing = [m for m in wanted if getattr(self, m) is None]
        if missing:
            raise ConfigError(f"modalities {missing} are not in this model (it has {list(self.modalities)})")
        return self.replace(**{m: (getattr(self, m) if m in wanted else None) for m in MODALITIES})

    def with_adapter(self, adapter: AdapterConfig, modalities: typing.Iterable[str] | None = None) -> ModelConfig:
        """Set the fine-tuning mode of the given (default: all) encoders."""
        names = self.modalities if modalities is None else parse_modalities(modalities)
        return self.replace(**{m: self.encoder(m).replace(adapter=adapter) for m in names})


def parse_modalities(value: str | typing.Iterable[str]) -> tuple[str, ...]:
    """``"dna,text"`` or ``["text", "dna"]`` -> ``("dna", "text")`` (canonical order, no duplicates)."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    items = [v for v in items if v]
    if not items:
        raise ConfigError(f"empty modality set; expected a comma-separated subset of {list(MODALITIES)}")
    for item in items:
        if item not in MODALITIES:
            raise ConfigError(f"unknown modality {item!r}; expected a subset of {list(MODALITIES)}" + _suggest(item, MODALITIES))
    return tuple(m for m in MODALITIES if m in items)


# --- training -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    """Contrastive training (reference section 3): AdamW + one-cycle LR stepped per optimiser step."""

    kind: ClassVar[str] = "train"

    epochs: int = 10
    batch_size: int = 64  # records per optimiser step (before gradient accumulation), global under DDP
    grad_accum_steps: int = 1  # optimiser step every N batches
    lr: float = 5e-4  # peak learning rate of the one-cycle schedule (CLIBD: 5e-5 x batch/500)
    weight_decay: float = 0.01  # AdamW default, as in CLIBD
    pct_start: float = 0.3  # fraction of steps warming up (CLIBD)
    div_factor: float = 25.0  # start lr = lr / div_factor (PyTorch default, as in CLIBD)
    final_div_factor: float = 1e4
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on CUDA, fp32 elsewhere
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    seed: int = 42
    # records without a split column: apply the seeded CLIBD-style split (the one `clibd evaluate` applies by
    # default) and train on its pretrain + train part, holding out its queries and keys; True trains on every record
    all_records: bool = False
    split_seed: int = 42  # seed of that default split (evaluate's --split-seed default)
    num_workers: int = 0  # DataLoader worker processes building the batches (0: in-process); same results
    augment: bool = True  # image training augmentation (CLIBD: flips, rotation, random resized crop)
    eval_every: int = 1  # validate every N epochs (when the data has validation splits)
    select_metric: str = "mean_top1"  # best checkpoint: mean top-1 micro+macro accuracy on validation
    max_steps: int = 0  # stop after this many optimiser steps (0 = no limit); for smoke runs
    keep_checkpoints: int = 2  # per-epoch checkpoints kept on disk besides best and last (0 = all)
    progress: bool = True  # progress bar

    def validate(self) -> None:
        self._require(self.epochs >= 1, "epochs", "an integer >= 1")
        self._require(self.batch_size >= 2, "batch_size", "an integer >= 2 (a contrastive batch needs negatives)")
        self._require(self.grad_accum_steps >= 1, "grad_accum_steps", "an integer >= 1")
        self._require(self.lr > 0, "lr", "a number > 0 (learning rate)")
        self._require(self.weight_decay >= 0, "weight_decay", "a number >= 0")
        self._require(0 < self.pct_start < 1, "pct_start", "a number in (0, 1)")
        self._require(self.div_factor >= 1, "div_factor", "a number >= 1")
        self._require(self.final_div_factor >= 1, "final_div_factor", "a number >= 1")
        self._require(self.num_workers >= 0, "num_workers", "an integer >= 0")
        self._require(self.eval_every >= 1, "eval_every", "an integer >= 1")
        self._require(self.max_steps >= 0, "max_steps", "an integer >= 0")
        self._require(self.keep_checkpoints >= 0, "keep_checkpoints", "an integer >= 0")
        self._require(
            self.device == "auto" or self.device in ("cpu", "cuda", "mps") or self.device.startswith("cuda:"),
            "device",
            "auto, cpu, cuda, cuda:N or mps",
        )
