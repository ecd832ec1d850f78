"""PEFT LoRA per encoder: only adapters (and heads) train, init is a no-op, merging preserves outputs,
adapters save and load. Table-driven over the encoder architectures (peft's test_custom_models pattern)."""
from __future__ import annotations

import pytest
import torch

from clibd_toolkit.config import AdapterConfig, EncoderConfig, ModelConfig
from clibd_toolkit.lora import adapter_state_dict, load_adapters, merge_adapters, save_adapters
from clibd_toolkit.model import CLIBDModel

TINY_VIT = EncoderConfig(arch="vit_b16", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
CASES = [
    # (name, modality, encoder config, LoRA target modules expected to be adapted)
    ("kmer-bert", "dna", EncoderConfig(arch="bert_kmer", hidden_size=32, num_layers=2, num_heads=2,
                                       intermediate_size=64), ("query", "value")),
    ("text-bert", "text", EncoderConfig(arch="tiny_text"), ("query", "value")),
    ("vit", "image", TINY_VIT, ("q_proj", "v_proj")),
    ("cnn", "image", EncoderConfig(arch="tiny_cnn"), ("conv1", "conv2")),
]


def _inputs(model: CLIBDModel, modality: str):
    g = torch.Generator().manual_seed(0)
    if modality == "dna":
        return model.preprocess.dna(["ACGTTGCA" * 80, "TTGACCAG" * 70])
    if modality == "text":
        return model.preprocess.text(["Diptera Cecidomyiidae Asynapta Asynapta sp", "Coleoptera a b c"])
    return torch.rand(2, 3, model.config.image_size, model.config.image_size, generator=g)


def _model(modality, enc_cfg, adapter, image_size=32):
    encoders = {"text": EncoderConfig(arch="tiny_text"), modality: enc_cfg.replace(adapter=adapter)}
    cfg = ModelConfig(embed_dim=16, image_size=image_size, image_resize=image_size, **encoders)
    torch.manual_seed(0)
    return CLIBDModel(cfg).eval()


@pytest.mark.parametrize("name, modality, enc_cfg, targets", CASES, ids=[c[0] for c in CASES])
def test_lora_trains_only_adapters_and_head(name, modality, enc_cfg, targets):
    model = _model(modality, enc_cfg, AdapterConfig(mode="lora", r=2, alpha=2.0))
    enc = model.encoders[modality]
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable, "something must train"
    for n in trainable:
        assert "lora_" in n or n.startswith("head."), n
    adapted = {n.split(".lora_")[0].split(".")[-1] for n in trainable if "lora_" in n}
    assert adapted == set(targets)
    # every backbone weight that is not an adapter is frozen
    frozen = [n for n, p in enc.backbone.named_parameters() if "lora_" not in n]
    assert frozen and all(not dict(enc.backbone.named_parameters())[n].requires_grad for n in frozen)


@pytest.mark.parametrize("name, modality, enc_cfg, targets", CASES, ids=[c[0] for c in CASES])
def test_lora_init_is_identity_and_merge_preserves_outputs(name, modality, enc_cfg, targets):
    plain = _model(modality, enc_cfg, AdapterConfig(mode="full"))
    lora = _model(modality, enc_cfg, AdapterConfig(mode="lora", r=2, alpha=4.0))
    x = _inputs(plain, modality)
    with torch.no_grad():
        # same seed -> same base weights; LoRA B starts at zero, so outputs are identical at init
        assert torch.allclose(plain.encode_inputs(modality, x), lora.encode_inputs(modality, x), atol=1e-6)
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
        before = lora.encode_inputs(modality, x)
        assert not torch.allclose(before, plain.encode_inputs(modality, x), atol=1e-4)  # adapters now matter
    merge_adapters(lora)
    assert not any("lora_" in n for n, _ in lora.named_parameters())
    assert lora.config.encoder(modality).adapter.mode == "full"
    with torch.no_grad():
        assert torch.allclose(lora.encode_inputs(modality, x), before, atol=1e-5)


def test_frozen_mode_trains_only_the_head():
    model = _model("dna", CASES[0][2], AdapterConfig(mode="frozen"))
    names = {n for n, p in model.encoders["dna"].named_parameters() if p.requires_grad}
    assert names == {"head.weight", "head.bias"}


def test_adapters_save_and_load(tmp_path):
    enc_cfg = CASES[0][2]
    a = _model("dna", enc_cfg, AdapterConfig(mode="lora", r=2, alpha=2.0))
    with torch.no_grad():
        for n, p in a.named_parameters():
            if "lora_" in n or "head" in n:
                p.normal_()
    save_adapters(a, tmp_path / "adapters")
    b = _model("dna", enc_cfg, AdapterConfig(mode="lora", r=2, alpha=2.0))  # same base weights (seed), fresh adapters
    load_adapters(b, tmp_path / "adapters")
    sa, sb = adapter_state_dict(a), adapter_state_dict(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = _inputs(a, "dna")
    with torch.no_grad():
        assert torch.allclose(a.encode_inputs("dna", x), b.encode_inputs("dna", x))


def test_unknown_target_module_is_a_clear_error():
    from clibd_toolkit.errors import ConfigError

    with pytest.raises(ConfigError, match="do not exist"):
        _model("dna", CASES[0][2], AdapterConfig(mode="lora", target_modules=("qkv",)))


def test_frozen_text_encoder_caches_features_and_stays_in_eval_mode():
    """A frozen backbone is a fixed feature extractor: eval mode under model.train(), features computed once per
    distinct string (identical to an uncached forward), gradients only in the head."""
    cfg = ModelConfig(embed_dim=8, dna=CASES[0][2], text=EncoderConfig(arch="tiny_text", adapter=AdapterConfig(
        mode="frozen")))
    torch.manual_seed(0)
    model = CLIBDModel(cfg).train()
    enc = model.encoders["text"]
    assert not enc.backbone.training and model.encoders["dna"].backbone.training
    texts = ["Diptera Muscidae Musca domestica", "Coleoptera Carabidae", "Diptera Muscidae Musca domestica"]
    inputs = model.preprocess.text(texts)
    out = model.encode_inputs("text", inputs)
    assert len(enc._cache) == 2
    with torch.no_grad():
        reference = torch.nn.functional.normalize(enc.head(enc._pooled(**inputs)), dim=-1)
    assert torch.allclose(out, reference, atol=1e-6) and torch.allclose(out[0], out[2])
    out.sum().backward()
    assert enc.head.weight.grad is not None
    assert all(p.grad is None for p in enc.backbone.parameters())
