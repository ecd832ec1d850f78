"""Released CLIBD checkpoints: every file variant converts and embeds exactly as the official model tree does.

The reference is the official module tree re-typed in ``official_reference.py`` (stack-free; its own faithfulness
to timm 1.0.9 + transformers 4.29.2 + torchvision is tested in ``test_official_stack.py`` against fixtures the real
official stack generated). Embeddings must agree within 5e-5 per entry; the DNA tokens are compared with CLIBD's
own pipeline re-typed (``PadSequence`` + ``KmerTokenizer`` + torchtext vocabulary).
"""
from __future__ import annotations

import gzip
import io
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import official_reference as ref
from clibd_toolkit.errors import CheckpointError, UnsafeFileError
from clibd_toolkit.official import convert_official_state_dict, load_official_checkpoint, official_model_config

TOL = 5e-5
HEADS = {"image": 2, "dna": 2, "text": 2}  # the small reference has 16-d heads (released models: 64)
TEXTS = ["Lepidoptera Noctuidae Agrotis ipsilon", "Diptera Cecidomyiidae not_classified not_classified",
         "Coleoptera Carabidae Bembidion Bembidion quadrimaculatum oppositum extra words to pass twenty tokens",
         "not_classified not_classified not_classified not_classified"]
BARCODES = ["ACGT" * 170, "ACGTTGCA" * 20, "AC-GTNNNNACGTACGTAC" * 10, "AACATTATATTTTATTTTTGGAATTTG", "ACGTACGTAC"]


@pytest.fixture(scope="module")
def official():
    return ref.fill_random(ref.build_official(), seed=1)


@pytest.fixture(scope="module")
def released_file(official, tmp_path_factory):
    return ref.save_released(official, tmp_path_factory.mktemp("released") / "best.pth")


@pytest.fixture(scope="module")
def converted(released_file):
    return load_official_checkpoint(released_file, num_heads=HEADS)


def _official_text(official, texts):
    tok = _text_tokens(texts)
    with torch.no_grad():
        return F.normalize(official.language_encoder(tok), dim=-1)


def _text_tokens(texts):
    from transformers import BertTokenizer

    from clibd_toolkit.encoders.text import bert_small_vocab

    enc = BertTokenizer(vocab=str(bert_small_vocab()))(texts, padding="max_length", max_length=20, truncation=True,
                                                        return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}


def _check_all(official, model, modalities=("image", "dna", "text"), seed=0):
    """Every modality of ``model`` equals the official forward on the same inputs (<= TOL per entry)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if "image" in modalities:
            pixels = torch.rand(3, 3, 224, 224, generator=gen)
            want = F.normalize(official.image_encoder(pixels), dim=-1)
            assert (model.encode_inputs("image", pixels) - want).abs().max() <= TOL
        if "dna" in modalities:
            ids = ref.official_dna_ids(BARCODES)
            assert torch.equal(model.preprocess.dna(BARCODES)["input_ids"], ids)
            want = F.normalize(official.dna_encoder(ids), dim=-1)
            assert (model.encode_dna(BARCODES) - want).abs().max() <= TOL
        if "text" in modalities:
            assert (model.encode_text(TEXTS) - _official_text(official, TEXTS)).abs().max() <= TOL


# --- every variant of the released layout --------------------------------------------------------------------


def test_old_key_names_all_three_encoders(official, converted):
    assert converted.source["key_spelling"] == "old" and converted.source["logit_scale"]
    assert converted.source["image_lora_merged_layers"] == 2  # the LoRA tensors of every ViT block were merged
    _check_all(official, converted)
    assert converted.logit_scale.item() == pytest.approx(official.logit_scale.item())


def test_current_key_names(official, tmp_path):
    path = ref.save_released(official, tmp_path / "best.pth", old_names=False)
    model = load_official_checkpoint(path, num_heads=HEADS)
    assert model.source["key_spelling"] == "current"
    _check_all(official, model)


@pytest.mark.parametrize("modalities", [("image", "dna"), ("image", "text")])
def test_two_modality_files(modalities, tmp_path):
    official = ref.fill_random(ref.build_official(modalities=modalities), seed=2)
    model = load_official_checkpoint(ref.save_released(official, tmp_path / "best.pth"), num_heads=HEADS)
    assert model.modalities == modalities
    _check_all(official, model, modalities)


def test_lora_mode_file_without_logit_scale(tmp_path):
    official = ref.fill_random(ref.build_official(lora=True, with_logit_scale=False), seed=3)
    state = ref.released_state_dict(official)
    assert any(k.endswith("attention.self.query.w_b.weight") for k in state) and "logit_scale" not in state
    torch.save(state, tmp_path / "lora.pth")
    model = load_official_checkpoint(tmp_path / "lora.pth", num_heads=HEADS)
    assert model.source["dna_layout"] == model.source["text_layout"] == "lora"
    assert model.source["dna_lora_merged"] == 4 and model.source["text_lora_merged"] == 4  # q and v, 2 layers
    assert not model.source["logit_scale"]
    assert model.logit_scale.item() == pytest.approx(np.log(1 / 0.07))
    _check_all(official, model)


def test_without_position_ids_with_ddp_prefix_and_as_safetensors(official, tmp_path):
    from safetensors.torch import save_file

    state = {k: v for k, v in ref.released_state_dict(official).items() if not k.endswith("position_ids")}
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pth")
    model = load_official_checkpoint(tmp_path / "ddp.pth", num_heads=HEADS)
    assert model.source["ddp_prefix_stripped"]
    _check_all(official, model)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "best.safetensors"))
    _check_all(official, load_official_checkpoint(tmp_path / "best.safetensors", num_heads=HEADS))


def test_wrapped_state_dict(official, tmp_path):
    torch.save({"state_dict": ref.released_state_dict(official)}, tmp_path / "wrapped.pth")
    _check_all(official, load_official_checkpoint(tmp_path / "wrapped.pth", num_heads=HEADS), ("dna",))


def test_lora_merge_is_unscaled(official):
    """The merged query weight is W + B A exactly (CLIBD adds B(Ax), no alpha/r factor): a hand computation."""
    state = ref.released_state_dict(official)
    p = "image_encoder.lora_vit.blocks.0.attn.qkv."
    d = state[p + "qkv.weight"].shape[1]
    out = convert_official_state_dict(state, num_heads=HEADS).state
    want_q = state[p + "qkv.weight"][:d] + state[p + "linear_b_q.weight"] @ state[p + "linear_a_q.weight"]
    want_k = state[p + "qkv.weight"][d:2 * d]
    want_v = state[p + "qkv.weight"][2 * d:] + state[p + "linear_b_v.weight"] @ state[p + "linear_a_v.weight"]
    base = "encoders.image.backbone.layers.0.attention."
    torch.testing.assert_close(out[base + "q_proj.weight"], want_q, rtol=0, atol=1e-7)
    assert torch.equal(out[base + "k_proj.weight"], want_k)
    torch.testing.assert_close(out[base + "v_proj.weight"], want_v, rtol=0, atol=1e-7)
    assert torch.equal(out[base + "q_proj.bias"], state[p + "qkv.bias"][:d])


def test_config_records_clibd_behaviour_and_round_trips(converted):
    cfg = converted.config
    assert (cfg.image_resample, cfg.image_normalize, cfg.image_resize, cfg.image_size) == ("tensor", "none", 256, 224)
    assert (cfg.dna_cleaning, cfg.dna_attention_mask, cfg.dna_max_length, cfg.dna_k) == ("raw", False, 660, 5)
    assert (cfg.text_max_length, cfg.text.pooling, cfg.dna.pooling) == (20, "mean", "softmax_mean")
    assert cfg.dna.max_positions == 512 and cfg.embed_dim == 24
    assert type(cfg).from_dict(cfg.to_dict()) == cfg


def test_gapped_barcodes_keep_their_frame_through_the_records_table(official, converted):
    """A stored barcode with gaps is tokenised as CLIBD does (the gap shifts the frame) when it comes through the
    records table, whose dna_barcode column itself is cleaned."""
    from clibd_toolkit import extract_embeddings
    from clibd_toolkit.records import normalise_records

    gapped = "ACGTA-CGTACGT--ACGTNNACGT" * 20
    records = normalise_records(pd.DataFrame({"record_id": ["g", "plain"], "dna_barcode": [gapped, "acgt" * 100]}))
    assert records.loc[0, "dna_barcode"] == gapped.replace("-", "")
    emb = extract_embeddings(converted, records, modalities=["dna"], progress=False)
    with torch.no_grad():
        want = F.normalize(official.dna_encoder(ref.official_dna_ids([gapped, "ACGT" * 100])), dim=-1).numpy()
    assert np.abs(emb.vectors["dna"] - want).max() <= TOL


# --- strictness: every rejected case names the key, its shape and the file ------------------------------------


def _save(state, tmp_path, name="bad.pth"):
    torch.save(state, tmp_path / name)
    return tmp_path / name


def test_unknown_key_is_named_with_shape_and_file(official, tmp_path):
    state = ref.released_state_dict(official)
    state["dna_encoder.lora_barcode_bert.classifier.weight"] = torch.zeros(3, 5)
    path = _save(state, tmp_path)
    with pytest.raises(CheckpointError, match=r"bad\.pth.*'dna_encoder\.lora_barcode_bert\.classifier\.weight' "
                                              r"\(shape \[3, 5\]\)"):
        load_official_checkpoint(path, num_heads=HEADS)


def test_key_outside_every_encoder(official, tmp_path):
    state = {**ref.released_state_dict(official), "open_clip_model.visual.proj": torch.zeros(2)}
    with pytest.raises(CheckpointError, match=r"'open_clip_model\.visual\.proj' \(shape \[2\]\).*CLIBD"):
        load_official_checkpoint(_save(state, tmp_path), num_heads=HEADS)


def test_missing_key(official, tmp_path):
    state = ref.released_state_dict(official)
    del state["dna_encoder.lora_barcode_bert.bert.encoder.layer.1.output.dense.weight"]
    with pytest.raises(CheckpointError, match=r"bad\.pth.*missing key "
                                              r"'dna_encoder\.lora_barcode_bert\.bert\.encoder\.layer\.1\.output\.dense"
                                              r"\.weight'"):
        load_official_checkpoint(_save(state, tmp_path), num_heads=HEADS)


def test_missing_text_head(official, tmp_path):
    state = {k: v for k, v in ref.released_state_dict(official).items() if not k.startswith("language_encoder.proj")}
    with pytest.raises(CheckpointError, match=r"bad\.pth.*text encoder lacks its projection head"):
        load_official_checkpoint(_save(state, tmp_path), num_heads=HEADS)


def test_wrong_shape(official, tmp_path):
    state = ref.released_state_dict(official)
    key = "language_encoder.lora_bert.encoder.layer.0.attention.output.dense.weight"
    state[key] = torch.zeros(32, 31)
    with pytest.raises(CheckpointError, match=rf"bad\.pth.*{key.replace('.', '[.]')}' has shape \[32, 31\]"):
        load_official_checkpoint(_save(state, tmp_path), num_heads=HEADS)


def test_partial_lora_block_in_the_vit(official, tmp_path):
    state = ref.released_state_dict(official)
    del state["image_encoder.lora_vit.blocks.1.attn.qkv.linear_b_v.weight"]
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn\.qkv has the LoRA tensors .* but not "
                                              r"\['linear_b_v'\]"):
        load_official_checkpoint(_save(state, tmp_path), num_heads=HEADS)


def test_lora_tensor_of_the_wrong_shape(tmp_path):
    official = ref.fill_random(ref.build_official(modalities=("dna",), lora=True), seed=4)
    state = ref.released_state_dict(official)
    state["dna_encoder.lora_barcode_bert.bert.encoder.layer.0.attention.self.value.w_b.weight"] = torch.zeros(32, 5)
    with pytest.raises(CheckpointError, match=r"LoRA tensors of .*layer\.0\.attention\.self\.value have shapes "
                                              r"A \[4, 32\], B \[32, 5\]"):
        load_official_checkpoint(_save(state, tmp_path), num_heads=HEADS)


def test_both_spellings_of_one_key(official, tmp_path):
    state = ref.released_state_dict(official)
    key = "dna_encoder.lora_barcode_bert.cls.predictions.decoder.bias"
    state[key.replace("lora_barcode_bert", "base_dna_encoder")] = state[key]
    with pytest.raises(CheckpointError, match="both the old and the current prefix"):
        load_official_checkpoint(_save(state, tmp_path), num_heads=HEADS)


def test_wrong_dna_vocabulary(official, tmp_path):
    state = ref.released_state_dict(official)
    key = "dna_encoder.lora_barcode_bert.bert.embeddings.word_embeddings.weight"
    state[key] = state[key][:259]  # a 4-mer vocabulary
    with pytest.raises(CheckpointError, match="vocabulary of 259 tokens; CLIBD's BarcodeBERT has 1027"):
        load_official_checkpoint(_save(state, tmp_path), num_heads=HEADS)


def test_heads_must_be_inferable(released_file):
    with pytest.raises(CheckpointError, match=r"cannot infer the attention heads of the image encoder: its hidden "
                                              r"size 32 is not a multiple of 64"):
        load_official_checkpoint(released_file)


def test_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_official_checkpoint(tmp_path / "list.pth")
    torch.save({"foo": torch.zeros(2)}, tmp_path / "foo.pth")
    with pytest.raises(CheckpointError, match=r"'foo' \(shape \[2\]\) is not part of a released CLIBD model"):
        load_official_checkpoint(tmp_path / "foo.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_official_checkpoint(tmp_path / "nothing.pth")


class _Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_pickle_carrying_code_is_refused_without_running_it(tmp_path, capsys):
    torch.save({"logit_scale": torch.zeros(()), "x": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeFileError, match="refused"):
        load_official_checkpoint(tmp_path / "evil.pth")
    raw = io.BytesIO()
    pickle.dump({"x": _Payload()}, raw, protocol=2)
    (tmp_path / "legacy.pth").write_bytes(raw.getvalue())  # a non-zip (legacy) pickle file
    with pytest.raises(UnsafeFileError, match="GLOBAL"):
        load_official_checkpoint(tmp_path / "legacy.pth")
    assert "this ran" not in capsys.readouterr().out


def test_official_model_config_validates():
    cfg = official_model_config(embed_dim=8, dna={"hidden": 64, "layers": 1, "heads": 1, "intermediate": 32,
                                                  "positions": 512})
    assert cfg.modalities == ("dna",) and cfg.dna_cleaning == "raw"


# --- real barcodes and taxonomy strings from ../shared/data -----------------------------------------------------


@pytest.fixture(scope="module")
def bold_small(shared_data):
    return pd.read_csv(shared_data / "bold-insect-coi" / "bold_insect_coi5p_small.tsv", sep="\t", dtype=str,
                       keep_default_na=False)


def test_real_barcodes_short_long_n_runs_and_gaps(official, converted, bold_small):
    seqs = bold_small["dna_barcode"]
    lengths = seqs.str.len()
    picked = list(seqs[lengths.sort_values().index[:3]])  # the shortest
    picked += list(seqs[lengths > 660][:3])  # longer than 660 nt (cut)
    picked += list(seqs[seqs.str.contains("N")][:3])  # ambiguity codes
    base = picked[0]
    picked += [base[:100] + "N" * 30 + base[100:], base[:50] + "-" * 3 + base[50:300] + "-" + base[300:],
               base[:12], base + base]
    assert min(map(len, picked)) < 660 < max(map(len, picked))
    ids = ref.official_dna_ids(picked)
    assert torch.equal(converted.preprocess.dna(picked)["input_ids"], ids)
    with torch.no_grad():
        want = F.normalize(official.dna_encoder(ids), dim=-1)
    assert (converted.encode_dna(picked) - want).abs().max() <= TOL


def test_real_taxonomy_strings_with_missing_ranks(official, converted, bold_small):
    from clibd_toolkit.records import normalise_records, taxonomy_text

    rows = pd.concat([bold_small.head(4), bold_small[bold_small["species"] == ""].head(2),
                      bold_small[bold_small["genus"] == ""].head(2)])
    texts = [ref.official_text(*r) for r in rows[["order", "family", "genus", "species"]].itertuples(index=False)]
    records = normalise_records(rows.rename(columns={"processid": "record_id"})[
        ["record_id", "dna_barcode", "order", "family", "genus", "species"]])
    assert taxonomy_text(records) == texts
    assert (converted.encode_text(texts) - _official_text(official, texts)).abs().max() <= TOL


# --- the real-size paper architecture ---------------------------------------------------------------------------


def test_real_size_released_layout(tmp_path):
    """ViT-B/16 + BarcodeBERT-base + bert-small at their real shapes (random weights): every key of the documented
    layout converts, heads are inferred (64-d), and the three encoders match the official forward."""
    official = ref.fill_random(ref.build_official(ref.PAPER_SIZES), seed=5, std=0.02)
    state = ref.released_state_dict(official)
    assert len(state) == 480  # the I+D+T key count of official-checkpoints.md section 2.1
    path = ref.save_released(official, tmp_path / "best.pth")
    del state
    model = load_official_checkpoint(path)
    assert model.config.embed_dim == 768
    assert [model.config.encoder(m).num_heads for m in ("image", "dna", "text")] == [12, 12, 8]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        pixels = torch.rand(2, 3, 224, 224, generator=gen)
        assert (model.encode_inputs("image", pixels)
                - F.normalize(official.image_encoder(pixels), dim=-1)).abs().max() <= TOL
        ids = ref.official_dna_ids(BARCODES[:2])
        assert (model.encode_dna(BARCODES[:2]) - F.normalize(official.dna_encoder(ids), dim=-1)).abs().max() <= TOL
        assert (model.encode_text(TEXTS[:2]) - _official_text(official, TEXTS[:2])).abs().max() <= TOL


def test_gzip_is_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pth").write_bytes(gzip.compress(b"not a checkpoint"))
    with pytest.raises(CheckpointError, match="not a readable weights file"):
        load_official_checkpoint(tmp_path / "x.pth")
