"""DNA pretraining (masked k-mer modelling): it learns, its output loads as a DNA encoder, and the bundled
`cpu` preset weights predict masked k-mers of real barcodes they never saw far above chance."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import clibd_toolkit as ctk
from clibd_toolkit.config import EncoderConfig, ModelConfig
from clibd_toolkit.dna import CLS_ID, KmerTokenizer
from clibd_toolkit.encoders.dna import BUNDLED_DNA_WEIGHTS
from clibd_toolkit.io import load_tensors
from clibd_toolkit.pretrain import PretrainConfig, mask_tokens, masked_accuracy, pretrain_dna

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BOLD = SHARED / "bold-insect-coi"
needs_shared = pytest.mark.skipif(not BOLD.is_dir(), reason="../shared/data (real BOLD barcodes) is not present")


def test_masking_only_touches_real_kmers():
    tok = KmerTokenizer()
    enc = tok.encode(["ACGTACGTAC" * 10, "ACGNNACGTA" * 3])
    masked, labels = mask_tokens(enc.input_ids, enc.attention_mask, 0.5, torch.Generator().manual_seed(0))
    chosen = labels != -100
    assert chosen.any()
    assert not chosen[:, 0].any()  # never the prefix token
    assert not (chosen & (enc.attention_mask == 0)).any()  # never padding
    assert not (chosen & (enc.input_ids == 2)).any()  # never <UNK>
    assert (masked[chosen] == CLS_ID).all() and torch.equal(labels[chosen], enc.input_ids[chosen])
    assert torch.equal(masked[~chosen], enc.input_ids[~chosen])


@needs_shared
def test_pretraining_learns_and_loads_as_a_dna_encoder(tmp_path):
    records = ctk.load_records(BOLD / "bold_insect_coi5p_small.tsv")
    cfg = PretrainConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, epochs=3, batch_size=32,
                         lr=3e-3, val_fraction=0.2, progress=False)
    summary = pretrain_dna(records.dna_barcode.tolist(), cfg, tmp_path)
    acc = [h["val_masked_accuracy"] for h in summary["history"]]
    # 1,024 possible k-mers: chance is 0.001; a few epochs on 480 barcodes already learn the base composition
    assert acc[-1] > 0.02 and acc[-1] > acc[0] * 0.9, acc
    assert json.loads((tmp_path / "pretrain.json").read_text())["n_unique"] <= 480
    model_cfg = ModelConfig(embed_dim=16, dna=EncoderConfig(arch="bert_kmer", pretrained=str(tmp_path / "dna_encoder.safetensors")),
                            text=EncoderConfig(arch="tiny_text"))
    model = ctk.create_model(model_cfg)
    state = load_tensors(tmp_path / "dna_encoder.safetensors")
    assert torch.equal(model.encoders["dna"].backbone.embeddings.word_embeddings.weight,
                       state["bert.embeddings.word_embeddings.weight"].float())
    assert model.encoders["dna"].backbone.config.num_attention_heads == 2


@needs_shared
def test_bundled_cpu_weights_predict_masked_kmers_of_unseen_barcodes():
    from transformers import BertConfig, BertForMaskedLM

    state = load_tensors(BUNDLED_DNA_WEIGHTS)
    heads = int(state.pop("__num_heads__").item())
    hidden = state["bert.embeddings.word_embeddings.weight"].shape[1]
    mlm = BertForMaskedLM(BertConfig(vocab_size=1027, hidden_size=hidden, num_hidden_layers=4,
                                     num_attention_heads=heads, intermediate_size=512, max_position_embeddings=133,
                                     pad_token_id=0))
    mlm.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    # test queries of the default split (seed 42): never used in pretraining
    records, _ = ctk.ensure_splits(ctk.load_records(BOLD / "bold_insect_coi5p.tsv.gz"), ctk.SplitConfig(seed=42))
    test = records[records.split.isin(["test_seen", "test_unseen"])].sample(200, random_state=0)
    enc = KmerTokenizer().encode(test.dna_barcode.tolist())
    ids, labels = mask_tokens(enc.input_ids, enc.attention_mask, 0.5, torch.Generator().manual_seed(1))
    acc = masked_accuracy(mlm, ids, enc.attention_mask, labels, 100, torch.device("cpu"))
    assert acc > 0.25, acc  # chance: 1/1024
