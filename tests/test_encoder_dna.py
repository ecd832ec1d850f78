"""The k-mer BERT encoder's chunked eval-mode feed-forward gives the plain BERT's outputs; training is unchunked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clibd_toolkit.config import EncoderConfig, ModelConfig
from clibd_toolkit.encoders.dna import inference_ffn_chunk
from clibd_toolkit.model import CLIBDModel


def small_model(hidden: int = 64, max_length: int = 660) -> CLIBDModel:
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=16, dna=EncoderConfig(arch="bert_kmer", hidden_size=hidden, num_layers=2, num_heads=2,
                                                      intermediate_size=4 * hidden, pooling="mean_bag"),
                      dna_k=5, dna_max_length=max_length, dna_attention_mask=True)
    return CLIBDModel(cfg)


def barcodes(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(300, 700, n)  # some shorter than 660 nt: padded k-mers are masked
    return ["".join(rng.choice(list("ACGT"), int(length))) for length in lengths]


def test_chunk_rule_matches_hand_divisors():
    assert inference_ffn_chunk(133, 128) == 19  # 133 = 7 * 19: the cpu preset (660 nt, 5-mers, + CLS)
    assert inference_ffn_chunk(96, 128) == 32
    assert inference_ffn_chunk(131, 128) == 0  # prime: no divisor in 8..32, run unchunked
    assert inference_ffn_chunk(133, 768) == 0  # BarcodeBERT-sized encoders stay unchunked


def test_eval_forward_is_chunked_and_equals_plain_bert():
    model = small_model().eval()
    encoder = model.encoders["dna"]
    inputs = model.preprocess.dna(barcodes(12))
    with torch.no_grad():
        chunked = encoder(**inputs)
        chunks = {layer.chunk_size_feed_forward for layer in encoder.backbone.encoder.layer}
        # reference: the same weights through transformers' unchunked BERT, pooled by hand
        hidden = encoder.backbone(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    assert chunks == {19}
    for layer in encoder.backbone.encoder.layer:
        layer.chunk_size_feed_forward = 0
    with torch.no_grad():
        plain_hidden = encoder.backbone(input_ids=inputs["input_ids"],
                                        attention_mask=inputs["attention_mask"]).last_hidden_state
        weights = inputs["attention_mask"].float().unsqueeze(-1)
        pooled = (plain_hidden * weights).sum(1) / weights.sum(1)
        reference = encoder.head(torch.cat([pooled, encoder.bag(inputs["kmer_bag"])], dim=-1))
    torch.testing.assert_close(chunked, reference, rtol=1e-5, atol=1e-5)
    assert hidden.last_hidden_state.shape == plain_hidden.shape


def test_training_forward_is_unchunked():
    model = small_model().train()
    encoder = model.encoders["dna"]
    encoder(**model.preprocess.dna(barcodes(4)))
    assert {layer.chunk_size_feed_forward for layer in encoder.backbone.encoder.layer} == {0}


@pytest.mark.parametrize("max_length", [655, 650])  # 132 tokens (chunk 22) and 131 tokens (prime: unchunked)
def test_other_token_counts_run(max_length):
    model = small_model(max_length=max_length).eval()
    inputs = model.preprocess.dna(barcodes(3))
    with torch.no_grad():
        out = model.encoders["dna"](**inputs)
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    expected = inference_ffn_chunk(inputs["input_ids"].shape[1], 64)
    assert {layer.chunk_size_feed_forward for layer in model.encoders["dna"].backbone.encoder.layer} == {expected}


def test_chunking_can_be_switched_off():
    model = small_model().eval()
    encoder = model.encoders["dna"]
    inputs = model.preprocess.dna(barcodes(5))
    with torch.no_grad():
        chunked = encoder(**inputs)
        encoder.chunk_ffn = False
        plain = encoder(**inputs)
    assert {layer.chunk_size_feed_forward for layer in encoder.backbone.encoder.layer} == {0}
    torch.testing.assert_close(chunked, plain, rtol=1e-5, atol=1e-5)
