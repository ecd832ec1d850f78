"""Against the real official stack: fixtures generated with timm 1.0.9 + transformers 4.29.2 + torchvision and the
official CLIBD classes (``tests/official_stack/``, see its README) on real images and barcodes from ../shared/data.

Checked: the toolkit's CLIBD preprocessing (pixels after ``ToTensor -> Resize(256, antialias) -> CenterCrop(224)``,
k-mer ids, WordPiece ids), the converted model's embeddings (<= 5e-5 per entry), and that the stack-free reference
of ``official_reference.py``, used by the other converter tests, reproduces the official forward too.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import official_reference as ref
from clibd_toolkit.errors import DataError
from clibd_toolkit.images import ImageTransform, load_image
from clibd_toolkit.official import load_official_checkpoint

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "official"
sys.path.insert(0, str(HERE / "official_stack"))
from inputs import synthetic_barcodes  # noqa: E402  (plain Python, shared with the fixture generator)

TOL = 5e-5
HEADS = {"image": 2, "dna": 2, "text": 2}
NO_KMER = {"ACG", ""}  # the toolkit refuses barcodes without one whole k-mer (the official code pads them to N)


class Fixture:
    def __init__(self, name: str, shared: Path, tmp: Path):
        self.meta = json.loads((FIXTURES / f"{name}.json").read_text())
        arrays = np.load(FIXTURES / f"{name}.npz")
        self.state = {k[len("state/"):]: torch.from_numpy(arrays[k]) for k in arrays.files if k.startswith("state/")}
        self.expected = {k[len("expected/"):]: arrays[k] for k in arrays.files if k.startswith("expected/")}
        self.file = tmp / f"{name}.pth"
        torch.save(self.state, self.file)
        inputs = self.meta["inputs"]
        self.images = []
        for entry in inputs["images"]:
            path = shared / entry["path"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], f"{path} changed"
            self.images.append(path)
        tsv = pd.read_csv(shared / inputs["bold_tsv"]["path"], sep="\t", dtype=str, keep_default_na=False)
        seqs = dict(zip(tsv["processid"], tsv["dna_barcode"]))
        synthetic = iter(s for s, _ in synthetic_barcodes(seqs))
        self.barcodes = [seqs[e["processid"]] if e["kind"] == "real" else next(synthetic) for e in inputs["barcodes"]]
        for seq, entry in zip(self.barcodes, inputs["barcodes"]):
            assert hashlib.sha256(seq.encode()).hexdigest() == entry["sha256"], entry
        self.texts = [e["text"] for e in inputs["texts"]]


@pytest.fixture(scope="module", params=["full", "lora"])
def fixture(request, shared_data, tmp_path_factory):
    return Fixture(request.param, shared_data, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def model(fixture):
    return load_official_checkpoint(fixture.file, num_heads=HEADS)


def test_fixture_came_from_the_official_stack(fixture):
    versions = fixture.meta["versions"]
    assert versions["timm"] == "1.0.9" and versions["transformers"] == "4.29.2" and "torchvision" in versions
    assert all(fixture.meta["self_check"]["bit_identical"].values())


def test_pixels_equal_torchvision(fixture):
    if "pixel_values" not in fixture.expected:
        pytest.skip("the lora fixture stores no pixel samples (same images and transform as full)")
    transform = ImageTransform(224, 256, "none", resample="tensor")
    index = torch.from_numpy(fixture.expected["pixel_index"])
    for i, path in enumerate(fixture.images):
        x = transform(load_image(path))
        assert x.shape == (3, 224, 224)
        assert (x.reshape(-1)[index].numpy() - fixture.expected["pixel_values"][i]).__abs__().max() <= 1e-6, path
        assert abs(float(x.double().sum()) - float(fixture.expected["pixel_sum"][i])) <= 1e-3, path


def test_image_embeddings_end_to_end(fixture, model):
    got = model.encode_image([str(p) for p in fixture.images]).numpy()
    assert np.abs(got - fixture.expected["image_embedding"]).max() <= TOL


def test_dna_ids_and_embeddings(fixture, model):
    want_ids = torch.from_numpy(fixture.expected["dna_ids"])
    usable = [i for i, s in enumerate(fixture.barcodes) if s not in NO_KMER]
    seqs = [fixture.barcodes[i] for i in usable]
    ids = model.preprocess.dna(seqs)["input_ids"]
    for row, i in enumerate(usable):
        seq = fixture.barcodes[i]
        if seq != seq.upper() or "U" in seq:
            # deliberate departure (dna.py): lower case and U are read as their upper-case DNA spelling, which the
            # official pipeline would turn into <UNK> k-mers
            same = fixture.barcodes.index(seq.upper().replace("U", "T"))
            assert torch.equal(ids[row], want_ids[same])
            assert not torch.equal(ids[row], want_ids[i])
        else:
            assert torch.equal(ids[row], want_ids[i]), fixture.meta["inputs"]["barcodes"][i]["why"]
    exact = [row for row, i in enumerate(usable) if fixture.barcodes[i] == fixture.barcodes[i].upper()
             and "U" not in fixture.barcodes[i]]
    got = model.encode_dna([seqs[r] for r in exact]).numpy()
    want = fixture.expected["dna_embedding"][[usable[r] for r in exact]]
    assert np.abs(got - want).max() <= TOL
    assert len(exact) >= 18  # every real barcode, the gapped one, the N run, 12 nt, 660 nt, 700 nt
    for seq in NO_KMER & set(fixture.barcodes):
        with pytest.raises(DataError):
            model.preprocess.dna([seq])


def test_text_ids_and_embeddings(fixture, model):
    tok = model.preprocess.text(fixture.texts)
    assert torch.equal(tok["input_ids"], torch.from_numpy(fixture.expected["text_input_ids"]))
    assert torch.equal(tok["attention_mask"], torch.from_numpy(fixture.expected["text_attention_mask"]))
    assert not fixture.expected["text_token_type_ids"].any()  # BERT's default zeros, as the toolkit passes
    got = model.encode_text(fixture.texts).numpy()
    assert np.abs(got - fixture.expected["text_embedding"]).max() <= TOL


def test_logit_scale(fixture, model):
    if "logit_scale" in fixture.expected:
        assert model.logit_scale.item() == pytest.approx(float(fixture.expected["logit_scale"]))
    else:
        assert "logit_scale" not in fixture.state and model.logit_scale.item() == pytest.approx(np.log(1 / 0.07))


def test_stack_free_reference_is_faithful(fixture):
    """official_reference.py with the fixture's weights reproduces the real official stack's outputs."""
    lora = fixture.meta["name"] == "lora"
    official = ref.build_official(ref.SMALL_SIZES, lora=lora, with_logit_scale=not lora)
    state = {}
    for key, value in fixture.state.items():
        if key.endswith("position_ids"):
            continue  # a persistent buffer in transformers 4.29.2 only
        for new, old in ref.OLD_PREFIXES.items():
            key = new + key[len(old):] if key.startswith(old) else key
        state[key] = value
    official.load_state_dict(state, strict=True)
    ids = ref.official_dna_ids(fixture.barcodes)
    assert torch.equal(ids, torch.from_numpy(fixture.expected["dna_ids"]))
    transform = ImageTransform(224, 256, "none", resample="tensor")
    pixels = torch.stack([transform(load_image(p)) for p in fixture.images])
    from test_official_checkpoints import _text_tokens

    with torch.no_grad():
        image = F.normalize(official.image_encoder(pixels), dim=-1).numpy()
        dna = F.normalize(official.dna_encoder(ids), dim=-1).numpy()
        text = F.normalize(official.language_encoder(_text_tokens(fixture.texts)), dim=-1).numpy()
    assert np.abs(image - fixture.expected["image_embedding"]).max() <= TOL
    assert np.abs(dna - fixture.expected["dna_embedding"]).max() <= TOL
    assert np.abs(text - fixture.expected["text_embedding"]).max() <= TOL
