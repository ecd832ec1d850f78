"""DNA encoders: BERT over non-overlapping k-mers (BarcodeBERT and smaller toolkit-pretrained variants).

``bert_kmer`` covers the paper's BarcodeBERT (BERT-base, 5-mers, 1,027 tokens) and the small k-mer transformers
the toolkit pretrains itself (:mod:`clibd_toolkit.pretrain`). Weights load into a stock transformers
``BertModel`` with the toolkit's own tokenizer (:class:`~clibd_toolkit.dna.KmerTokenizer`); no remote code.

Pooling (``EncoderConfig.pooling``):

- ``softmax_mean`` (CLIBD, reference 1.4): BarcodeBERT's MLM transform (dense + GELU + LayerNorm), a new
  ``Linear(hidden, embed_dim)`` in place of the MLM decoder, softmax over the embed_dim logits of each token, then
  the mean over all tokens (padding included, no attention mask);
- ``mean`` (default for other presets): mean of the last hidden states over real tokens (padding k-mers masked),
  then ``Linear(hidden, embed_dim)``;
- ``mean_bag`` (the ``cpu`` preset): ``mean`` concatenated with a linear projection of the barcode's bag of
  *overlapping* k-mer frequencies (:meth:`~clibd_toolkit.dna.KmerTokenizer.kmer_bag`), then
  ``Linear(2 * hidden, embed_dim)``. Non-overlapping k-mer tokens change completely when a read starts one base
  later, and real reference libraries (BOLD) hold reads trimmed at different positions; the bag is invariant to
  that, so species-level DNA-to-DNA retrieval stays as sharp as classical k-mer matching while the transformer
  adds context.

Inference speed: in eval mode, small encoders (hidden size <= 256, as in the ``cpu`` preset) run BERT's
feed-forward block in chunks of positions (transformers' ``chunk_size_feed_forward``), so the (batch, chunk,
intermediate) activations stay in cache; outputs are the same up to float rounding. On a 2-core CPU machine an
interleaved A/B of the ``cpu`` preset's DNA encoder measured 1.06-1.09x the records/s of the plain feed-forward at
batch 64 and 1.24x at batch 256 on one thread, 1.22x and 1.41x on two (``benchmarks/encoder_throughput.py``
reports both variants). Training runs unchunked (no speed gain there, measured), so dropout draws and gradients
are exactly those of the plain BERT.
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

BUNDLED_DNA_WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "dna_kmer_small.safetensors"


def kmer_bert_config(cfg: EncoderConfig, model_cfg: ModelConfig, defaults: dict[str, int]):
    """A transformers ``BertConfig`` for a k-mer encoder: vocabulary ``3 + 4**k`` (BarcodeBERT's), positions
    for ``max_length // k + 1`` tokens, sizes from ``cfg`` or ``defaults``."""
    from transformers import BertConfig

    n_tokens = model_cfg.dna_max_length // model_cfg.dna_k + 1
    hidden = pick(cfg.hidden_size, defaults["hidden"])
    return BertConfig(
        vocab_size=3 + 4**model_cfg.dna_k,
        hidden_size=hidden,
        num_hidden_layers=pick(cfg.num_layers, defaults["layers"]),
        num_attention_heads=pick(cfg.num_heads, defaults["heads"]),
        intermediate_size=pick(cfg.intermediate_size, defaults["ffn"]),
        # BarcodeBERT (BERT-base) keeps BERT's 512 positions; the toolkit's small encoders need only n_tokens
        max_position_embeddings=pick(cfg.max_positions, max(512 if hidden >= 768 else n_tokens, n_tokens)),
        pad_token_id=0,
    )


def inference_ffn_chunk(n_tokens: int, hidden_size: int) -> int:
    """Positions per feed-forward chunk in eval mode: the largest divisor of ``n_tokens`` in 8..32 for encoders
    of hidden size <= 256 (transformers requires a divisor), else 0 (no chunking: big encoders are matmul-bound).
    The ``cpu`` preset's 133 tokens give 19."""
    if hidden_size > 256:
        return 0
    return next((size for size in range(32, 7, -1) if n_tokens % size == 0), 0)


class KmerBertEncoder(nn.Module):
    """A BERT over non-overlapping k-mer tokens (BarcodeBERT) with a projection head into the shared space.

    Pooling: ``mean`` of the last hidden states over real tokens; ``mean_bag`` adds a learned projection of the
    barcode's overlapping k-mer frequencies; ``softmax_mean`` is CLIBD's (the MLM head transform, projected, a
    softmax per position, averaged over positions).
    """

    input_kind = "kmer"
    lora_targets = ("query", "value")

    def __init__(self, backbone: nn.Module, transform: nn.Module | None, embed_dim: int, pooling: str,
                 use_mask: bool):
        super().__init__()
        hidden = backbone.config.hidden_size
        self.backbone = backbone
        self.transform = transform
        self.pooling = pooling
        self.use_mask = use_mask
        self.bag = None
        if pooling == "mean_bag":
            n_kmers = backbone.config.vocab_size - 3
            self.bag = nn.Linear(n_kmers, hidden, bias=False)
            # a variance-preserving random projection of the (unit-norm) k-mer frequencies at initialisation
            nn.init.normal_(self.bag.weight, std=1.0)
        self.head = nn.Linear(hidden * (2 if pooling == "mean_bag" else 1), embed_dim)
        self.chunk_ffn = True  # False: always run the plain (unchunked) BERT feed-forward

    def _set_ffn_chunk(self, n_tokens: int) -> None:
        """Chunked feed-forward in eval mode only (see the module docstring), sized for this input's length."""
        chunk = 0
        if self.chunk_ffn and not self.training:
            chunk = inference_ffn_chunk(n_tokens, self.backbone.config.hidden_size)
        for layer in self.backbone.encoder.layer:
            layer.chunk_size_feed_forward = chunk

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                kmer_bag: torch.Tensor | None = None) -> torch.Tensor:
        mask = attention_mask if self.use_mask else None
        self._set_ffn_chunk(input_ids.shape[1])
        hidden = self.backbone(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if self.pooling == "softmax_mean":
            logits = self.head(self.transform(hidden))
            return logits.softmax(dim=-1).mean(dim=1)
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        if self.bag is not None:
            if kmer_bag is None:
                from ..errors import ConfigError

                raise ConfigError("this DNA encoder (pooling mean_bag) needs `kmer_bag` inputs; build them with "
                                  "model.preprocess.dna(...)")
            pooled = torch.cat([pooled, self.bag(kmer_bag.to(hidden.dtype))], dim=-1)
        return self.head(pooled)


def _split_mlm_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """BertForMaskedLM state dict -> (BertModel state, MLM transform state); prefixes like module. stripped."""
    bert, transform = {}, {}
    for key, value in state.items():
        key = re.sub(r"^(module\.|model\.)+", "", key)
        if key.startswith("bert."):
            bert[key[len("bert."):]] = value
        elif key.startswith("cls.predictions.transform."):
            transform[key[len("cls.predictions.transform."):]] = value
        elif key.startswith(("embeddings.", "encoder.")):
            bert[key] = value
    return bert, transform


@register_encoder("dna", "bert_kmer", "BERT over non-overlapping k-mers (BarcodeBERT scheme); sizes from the config")
def build_bert_kmer(cfg: EncoderConfig, model_cfg: ModelConfig) -> nn.Module:
    """Build the ``bert_kmer`` DNA encoder, loading bundled, hub or local BarcodeBERT weights when asked."""
    from transformers import BertModel
    from transformers.models.bert.modeling_bert import BertPredictionHeadTransform

    pooling = "mean" if cfg.pooling == "default" else cfg.pooling
    if pooling not in ("mean", "softmax_mean", "mean_bag"):
        raise ConfigError(f"`EncoderConfig.pooling` for bert_kmer got {cfg.pooling!r}; expected mean, mean_bag or "
                          "softmax_mean")
    defaults = {"hidden": 768, "layers": 12, "heads": 12, "ffn": 3072}
    state = None
    if cfg.pretrained is not None:
        path = BUNDLED_DNA_WEIGHTS if cfg.pretrained == "bundled" else Path(cfg.pretrained)
        if not path.is_file():
            raise CheckpointError(
                f"DNA weights {cfg.pretrained!r} not found ({path}); pass a BarcodeBERT / `clibd pretrain-dna` "
                "checkpoint file, or pretrained=None")
        state = load_tensors(path)
        emb = next((v for k, v in state.items() if k.endswith("word_embeddings.weight")), None)
        layers = {int(m.group(1)) for k in state for m in [re.search(r"encoder\.layer\.(\d+)\.", k)] if m}
        ffn = next((v.shape[0] for k, v in state.items() if k.endswith("intermediate.dense.weight")), None)
        if emb is None or not layers or ffn is None:
            raise CheckpointError(f"{path} does not hold BERT k-mer weights (no embeddings / encoder layers found)")
        if emb.shape[0] != 3 + 4**model_cfg.dna_k:
            raise CheckpointError(f"{path} has a vocabulary of {emb.shape[0]} tokens but dna_k={model_cfg.dna_k} "
                                  f"needs {3 + 4**model_cfg.dna_k}; use the k the weights were trained with")
        heads = int(state["__num_heads__"].item()) if "__num_heads__" in state else None
        defaults = {"hidden": emb.shape[1], "layers": max(layers) + 1,
                    "heads": heads or max(1, emb.shape[1] // 64), "ffn": ffn}
    bert_cfg = kmer_bert_config(cfg, model_cfg, defaults)
    backbone = BertModel(bert_cfg, add_pooling_layer=False)
    transform = BertPredictionHeadTransform(bert_cfg) if pooling == "softmax_mean" else None
    if state is not None:
        bert_state, transform_state = _split_mlm_state({k: v for k, v in state.items() if not k.startswith("__")})
        if "embeddings.position_ids" not in bert_state:
            bert_state["embeddings.position_ids"] = backbone.embeddings.position_ids
        missing, unexpected = backbone.load_state_dict(bert_state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing:
            raise CheckpointError(f"{cfg.pretrained}: {len(missing)} BERT weights missing, e.g. {missing[:3]}; "
                                  "check the encoder sizes match the checkpoint")
        if transform is not None and transform_state:
            transform.load_state_dict(transform_state)
    return KmerBertEncoder(backbone, transform, model_cfg.embed_dim, pooling, model_cfg.dna_attention_mask)
