"""The reader of CLIBD's released embeddings, on fixtures written the way the official writer writes them.

:func:`write_official_release` re-types, step by step, what ``bioscan-ml/clibd`` (7d73f80) does between the model
outputs and the files: ``bioscanclip/epoch/inference_epoch.py: get_feature_and_label`` (``F.normalize``, ``.tolist()``,
``np.array``), ``bioscanclip/util/util.py: get_features_and_label`` (averaged, concatenated, all_key_features) and
the saving branch of ``scripts/inference_and_eval.py: main`` (h5py groups and datasets, the two json files).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import clibd_toolkit as ctk
from clibd_toolkit.errors import CheckpointError, ConfigError, DataError
from clibd_toolkit.evaluate import feature_vectors
from clibd_toolkit.released_embeddings import read_released_embeddings
from clibd_toolkit.splits import key_mask
from clibd_toolkit.embedding_files import load_embeddings
from clibd_toolkit.store import EmbeddingSet

# --- the official writer, re-typed ---------------------------------------------------------------------------------

# bioscanclip/util/util.py
All_TYPE_OF_FEATURES_OF_KEY = ["encoded_image_feature", "encoded_dna_feature", "encoded_language_feature",
                               "averaged_feature", "concatenated_feature", "all_key_features"]


def official_features_and_label(file_name_list, outputs, label_list, for_key_set=False):
    """``get_feature_and_label`` (inference_epoch.py) then ``get_features_and_label`` (util.py) for one split.

    ``outputs``: modality -> raw (n, d) float32 model output, or None when the model lacks that encoder.
    """
    lists = {"image": [], "dna": [], "text": []}
    for modality, output in outputs.items():
        if output is not None:  # encoded_*_feature_list.extend(F.normalize(output, dim=-1).cpu().tolist())
            lists[modality].extend(F.normalize(torch.from_numpy(output), dim=-1).cpu().tolist())
    arrays = {m: (None if len(v) == 0 else np.array(v)) for m, v in lists.items()}
    encoded_image_feature, encoded_dna_feature = arrays["image"], arrays["dna"]
    encoded_language_feature = arrays["text"]
    averaged_feature = None
    concatenated_feature = None
    all_key_features = None
    all_key_features_label = None
    if encoded_dna_feature is not None and encoded_image_feature is not None:
        averaged_feature = np.mean([encoded_image_feature, encoded_dna_feature], axis=0)
        concatenated_feature = np.concatenate((encoded_image_feature, encoded_dna_feature), axis=1)
    dictionary_of_split = {
        "file_name_list": file_name_list,
        "encoded_dna_feature": encoded_dna_feature,
        "encoded_image_feature": encoded_image_feature,
        "encoded_language_feature": encoded_language_feature,
        "averaged_feature": averaged_feature,
        "concatenated_feature": concatenated_feature,
        "label_list": label_list,
    }
    if (for_key_set and encoded_image_feature is not None and encoded_dna_feature is not None
            and encoded_language_feature is not None):
        for curr_feature in [encoded_image_feature, encoded_dna_feature, encoded_language_feature]:
            if all_key_features is None:
                all_key_features = curr_feature
                all_key_features_label = label_list
            else:
                all_key_features = np.concatenate((all_key_features, curr_feature), axis=0)
                all_key_features_label = all_key_features_label + label_list
    dictionary_of_split["all_key_features"] = all_key_features
    dictionary_of_split["all_key_features_label"] = all_key_features_label
    return dictionary_of_split


def write_official_release(folder_for_saving, seen_dict, unseen_dict, keys_dict, eval_on="test"):
    """The saving branch of ``inference_and_eval.py: main``; returns the HDF5 path."""
    labels_path = os.path.join(folder_for_saving, f"labels_{eval_on}.json")
    processed_id_path = os.path.join(folder_for_saving, f"processed_id_{eval_on}.json")
    extracted_features_path = os.path.join(folder_for_saving, f"extracted_feature_from_{eval_on}_split.hdf5")
    new_file = h5py.File(extracted_features_path, "w")
    name_of_splits = ["seen", "unseen", "key"]
    split_dicts = [seen_dict, unseen_dict, keys_dict]
    for split_name, split in zip(name_of_splits, split_dicts):
        group = new_file.create_group(split_name)
        for embedding_type in All_TYPE_OF_FEATURES_OF_KEY:
            if embedding_type in split.keys():
                try:
                    group.create_dataset(embedding_type, data=split[embedding_type])
                except (ValueError, TypeError, OSError):
                    pass  # official: print(f"Error in creating dataset for {embedding_type}"); None -> no dataset
    new_file.close()
    total_dict = {
        "seen_gt_dict": seen_dict["label_list"],
        "unseen_gt_dict": unseen_dict["label_list"],
        "key_gt_dict": keys_dict["label_list"],
    }
    with open(labels_path, "w") as json_file:
        json.dump(total_dict, json_file, indent=4)
    id_dict = {
        "seen_id_list": seen_dict["file_name_list"],
        "unseen_id_list": unseen_dict["file_name_list"],
        "key_id_list": keys_dict["file_name_list"],
    }
    with open(processed_id_path, "w") as json_file:
        json.dump(id_dict, json_file, indent=4)
    return Path(extracted_features_path)


# --- a small release: 3 seen and 3 unseen species, keys of both, clustered vectors --------------------------------

def taxonomy(species: int) -> dict[str, str]:
    genus = species // 2
    return {"order": f"O{genus // 4}", "family": f"F{genus // 2}", "genus": f"G{genus}", "species": f"S{species}"}


def make_release(folder: Path, *, modalities=("image", "dna", "text"), sizes=(12, 10, 24), dim=8, seed=0,
                 eval_on="test") -> tuple[Path, dict]:
    """Write a release into ``folder``; returns the HDF5 path and the official split dicts (seen, unseen, key)."""
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(6, dim))
    seen_species, unseen_species = [0, 1, 2], [3, 4, 5]
    plan = {"seen": (seen_species, sizes[0]), "unseen": (unseen_species, sizes[1]),
            "key": (seen_species + unseen_species, sizes[2])}
    dicts = {}
    for group, (species_pool, n) in plan.items():
        species = [species_pool[i % len(species_pool)] for i in range(n)]
        labels = [taxonomy(s) for s in species]
        if group == "key":
            labels[1] = {**labels[1], "genus": "not_classified"}  # a key with a missing rank
        outputs = {m: ((centroids[species] + 0.9 * rng.normal(size=(n, dim))) * rng.uniform(0.5, 3.0)).astype(
            np.float32) if m in modalities else None for m in ("image", "dna", "text")}
        ids = [f"{group.upper()}{i:03d}.jpg" for i in range(n)]
        dicts[group] = official_features_and_label(ids, outputs, labels, for_key_set=(group == "key"))
    folder.mkdir(parents=True, exist_ok=True)
    return write_official_release(str(folder), dicts["seen"], dicts["unseen"], dicts["key"], eval_on), dicts


@pytest.fixture
def release(tmp_path):
    return make_release(tmp_path / "image_dna_text")


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# --- reading --------------------------------------------------------------------------------------------------------

def test_official_file_is_float64_and_layout_as_documented(release):
    path, _ = release
    with h5py.File(path) as f:
        assert sorted(f) == ["key", "seen", "unseen"]
        assert sorted(f["key"]) == sorted(All_TYPE_OF_FEATURES_OF_KEY)
        assert "all_key_features" not in f["seen"]
        assert f["seen/encoded_image_feature"].dtype == np.float64
        assert f["key/all_key_features"].shape == (3 * 24, 8) and f["seen/concatenated_feature"].shape == (12, 16)


def test_reads_splits_ids_labels_vectors_and_provenance(release):
    path, dicts = release
    emb = read_released_embeddings(path)
    meta = emb.metadata
    assert len(emb) == 12 + 10 + 24 and emb.modalities == ("image", "dna", "text")
    assert meta["record_id"].tolist() == [i for g in ("seen", "unseen", "key") for i in dicts[g]["file_name_list"]]
    assert (meta["split"].iloc[:12] == "test_seen").all() and (meta["split"].iloc[12:22] == "test_unseen").all()
    keys = meta.iloc[22:]
    unseen_key = keys["species"].isin(["S3", "S4", "S5"])
    assert (keys.loc[unseen_key, "split"] == "test_unseen_keys").all() and unseen_key.sum() == 12
    assert (keys.loc[~unseen_key, "split"] == "seen_keys").all()
    assert key_mask(meta).sum() == 24  # the protocol pools every key, as CLIBD's all_keys
    # labels: as written, not_classified -> NA, no BIN
    assert meta.iloc[0][["order", "family", "genus", "species"]].tolist() == list(taxonomy(0).values())
    assert meta.iloc[23]["genus"] is pd.NA and meta.iloc[23]["species"] == "S1"
    assert meta["bin_uri"].isna().all()
    # vectors: float32, unit rows, the file's values
    with h5py.File(path) as f:
        for modality, name in [("image", "encoded_image_feature"), ("dna", "encoded_dna_feature"),
                               ("text", "encoded_language_feature")]:
            stored = np.concatenate([f[g][name][:] for g in ("seen", "unseen", "key")])
            assert emb.vectors[modality].dtype == np.float32
            np.testing.assert_allclose(emb.vectors[modality], stored, atol=1e-7)
            np.testing.assert_allclose(np.linalg.norm(emb.vectors[modality], axis=1), 1.0, atol=1e-6)
    cfg = emb.config
    assert cfg["source"] == "clibd-released-embeddings" and cfg["file"] == str(path.resolve())
    assert cfg["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert cfg["stage"] == "test" and cfg["groups"] == {"seen": 12, "unseen": 10, "key": 24}
    assert cfg["renamed_ids"] == 0 and cfg["labels"].endswith("labels_test.json")


def test_stored_fused_features_equal_the_toolkit_recomputation(release):
    path, _ = release
    emb = read_released_embeddings(path)
    split = emb.metadata["split"].to_numpy()
    groups = {"seen": split == "test_seen", "unseen": split == "test_unseen", "key": key_mask(emb.metadata)}
    with h5py.File(path) as f:
        for group, mask in groups.items():
            for feature, name in [("image+dna", "averaged_feature"), ("concat", "concatenated_feature")]:
                vectors, _ = feature_vectors(emb, feature, mask)
                np.testing.assert_allclose(vectors, f[group][name][:], atol=1e-6)
        stacked, rows = feature_vectors(emb, "all", groups["key"])
        np.testing.assert_allclose(stacked, f["key/all_key_features"][:], atol=1e-6)
        assert rows.tolist() == list(range(22, 46)) * 3  # each key record's labels, three times


def test_image_dna_model_has_no_text_and_no_stacked_keys(tmp_path):
    path, _ = make_release(tmp_path / "image_dna", modalities=("image", "dna"))
    with h5py.File(path) as f:
        assert "encoded_language_feature" not in f["key"] and "all_key_features" not in f["key"]
    emb = read_released_embeddings(path)
    assert emb.modalities == ("image", "dna")


def test_stage_and_json_paths_can_be_given(tmp_path, release):
    path, _ = release
    other = tmp_path / "elsewhere"
    other.mkdir()
    renamed = other / "embeddings.h5"
    shutil.copy(path, renamed)
    with pytest.raises(ConfigError, match="pass stage='val' or stage='test'"):
        read_released_embeddings(renamed)
    with pytest.raises(CheckpointError, match=r"labels_val.json, expected at .*elsewhere.*pass labels=PATH"):
        read_released_embeddings(renamed, stage="val")
    emb = read_released_embeddings(renamed, stage="val", labels=path.with_name("labels_test.json"),
                                   ids=path.with_name("processed_id_test.json"))
    assert set(emb.metadata["split"]) == {"val_seen", "val_unseen", "val_unseen_keys", "seen_keys"}
    with pytest.raises(ConfigError, match="'train' is not 'val' or 'test'"):
        read_released_embeddings(path, stage="train")


def test_repeated_ids_are_suffixed_with_their_group(release):
    path, dicts = release
    ids_path = path.with_name("processed_id_test.json")
    first_key = dicts["key"]["file_name_list"][0]

    def repeat(data):
        data["seen_id_list"][0] = first_key  # the same specimen as a seen query and a key
        data["key_id_list"][5] = data["key_id_list"][6]  # and twice among the keys

    edit_json(ids_path, repeat)
    emb = read_released_embeddings(path)
    ids = emb.metadata["record_id"].tolist()
    assert ids[0] == f"{first_key}@seen" and ids[22] == f"{first_key}@key"
    assert ids[22 + 5] == "KEY006.jpg@key#5" and ids[22 + 6] == "KEY006.jpg@key#6"
    assert len(set(ids)) == len(ids) and emb.config["renamed_ids"] == 4


def test_missing_json_files_say_where_they_are_expected(release):
    path, _ = release
    path.with_name("processed_id_test.json").unlink()
    with pytest.raises(CheckpointError, match=r"needs processed_id_test.json, expected at .*image_dna_text"):
        read_released_embeddings(path)


# --- malformed files: every case names the file, the group and the dataset (or list) ------------------------------

def _h5(change):
    def apply(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            change(f)
    return apply


def _replace(group: str, name: str, make):
    def change(f):
        data = f[group][name][:]
        del f[group][name]
        f[group].create_dataset(name, data=make(data))
    return _h5(change)


def _nan(data):
    data[3, 2] = np.nan
    return data


def _scaled(data):
    data[4] *= 2.0
    return data


def _shifted(data):
    data[2, 0] += 1e-3
    return data


MALFORMED = [
    ("missing group", _h5(lambda f: f.__delitem__("key")), CheckpointError, r"lacks group\(s\) \['key'\]"),
    ("dataset rows", _replace("seen", "encoded_image_feature", lambda d: d[:-1]), CheckpointError,
     r"group 'seen' dataset 'encoded_image_feature' has shape \(11, 8\); expected \(12, d\)"),
    ("dataset 1-D", _replace("unseen", "encoded_dna_feature", lambda d: d[:, 0]), CheckpointError,
     r"group 'unseen' dataset 'encoded_dna_feature' has shape \(10,\)"),
    ("dimension differs between groups", _replace("key", "encoded_dna_feature", lambda d: d[:, :6]),
     CheckpointError, r"group 'key' dataset 'encoded_dna_feature' has shape \(24, 6\); expected \(24, 8\)"),
    ("integer dtype", _replace("seen", "encoded_language_feature", lambda d: (d * 100).astype(np.int64)),
     CheckpointError, r"group 'seen' dataset 'encoded_language_feature' is int64; expected floating-point"),
    ("string dtype", _replace("key", "encoded_image_feature", lambda d: np.array([b"x"] * len(d))),
     CheckpointError, r"group 'key' dataset 'encoded_image_feature' is \|S1"),
    ("NaN", _replace("unseen", "encoded_image_feature", _nan), CheckpointError,
     r"group 'unseen' dataset 'encoded_image_feature' row 3 \(record 'UNSEEN003.jpg'\) holds NaN"),
    ("not unit length", _replace("key", "encoded_dna_feature", _scaled), CheckpointError,
     r"group 'key' dataset 'encoded_dna_feature' row 4 \(record 'KEY004.jpg'\) has L2 norm 2"),
    ("averaged inconsistent", _replace("seen", "averaged_feature", _shifted), CheckpointError,
     r"group 'seen' dataset 'averaged_feature' row 2 differs from its recomputation"),
    ("concatenated shape", _replace("unseen", "concatenated_feature", lambda d: d[:, :8]), CheckpointError,
     r"group 'unseen' dataset 'concatenated_feature' has shape \(10, 8\); expected \(10, 16\)"),
    ("stacked keys inconsistent", _replace("key", "all_key_features", lambda d: d[::-1].copy()), CheckpointError,
     r"group 'key' dataset 'all_key_features' row 0 differs"),
]


@pytest.mark.parametrize("change, error, match", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_hdf5_raises_naming_file_group_and_dataset(release, change, error, match):
    path, _ = release
    change(path)
    with pytest.raises(error, match=match) as info:
        read_released_embeddings(path)
    assert str(path) in str(info.value)


def _drop_label(data):
    data["unseen_gt_dict"].pop()


def _drop_id(data):
    data["key_id_list"].pop()


def _label_without_species(data):
    del data["key_gt_dict"][7]["species"]


def _null_id(data):
    data["seen_id_list"][2] = None


def _rename_list(data):
    data["seen_labels"] = data.pop("seen_gt_dict")


JSON_CASES = [
    ("label list length", "labels", _drop_label, CheckpointError,
     r"list 'unseen_id_list' has 10 ids but .*labels_test.json list 'unseen_gt_dict' has 9 labels"),
    ("id list length", "ids", _drop_id, CheckpointError, r"'key_id_list' has 23 ids but .* has 24 labels"),
    ("label entry lacks a rank", "labels", _label_without_species, DataError,
     r"labels_test.json list 'key_gt_dict' entry 7 \(record 'KEY007.jpg'\) .*expected an object with"),
    ("id entry is null", "ids", _null_id, DataError, r"processed_id_test.json list 'seen_id_list' entry 2 is None"),
    ("list missing", "labels", _rename_list, CheckpointError, r"labels_test.json lacks the list 'seen_gt_dict'"),
]


@pytest.mark.parametrize("which, change, error, match", [c[1:] for c in JSON_CASES], ids=[c[0] for c in JSON_CASES])
def test_malformed_json_raises_naming_file_and_list(release, which, change, error, match):
    path, _ = release
    name = "labels_test.json" if which == "labels" else "processed_id_test.json"
    edit_json(path.with_name(name), change)
    with pytest.raises(error, match=match):
        read_released_embeddings(path)


def test_not_hdf5_and_dataset_hdf5_are_refused(tmp_path, release):
    path, _ = release
    path.write_bytes(b"not an HDF5 file")
    with pytest.raises(CheckpointError, match="is not a readable HDF5 file"):
        read_released_embeddings(path)
    with h5py.File(path, "w") as f:  # the CLIBD dataset file has split groups instead
        f.create_group("all_keys")
        f.create_group("test_seen")
    with pytest.raises(CheckpointError, match=r"lacks group\(s\) \['seen', 'unseen', 'key'\].*load_records"):
        read_released_embeddings(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_released_embeddings(tmp_path / "extracted_feature_from_val_split.hdf5")


# --- load_embeddings ------------------------------------------------------------------------------------------------

def test_load_embeddings_dispatches_on_the_suffix(tmp_path, release):
    path, _ = release
    released = load_embeddings(path)
    assert released.config["source"] == "clibd-released-embeddings"
    saved = released.save(tmp_path / "emb.parquet")
    again = load_embeddings(saved)
    assert again.metadata.equals(released.metadata) and np.array_equal(again.vectors["dna"], released.vectors["dna"])
    assert again.config == released.config
    with pytest.raises(CheckpointError, match=r"suffix '.npy'.*expected a .parquet file"):
        load_embeddings(tmp_path / "emb.npy")
    assert ctk.load_embeddings is load_embeddings and ctk.read_released_embeddings is read_released_embeddings
    assert isinstance(released, EmbeddingSet)


def test_reading_in_small_chunks_gives_the_same_set_and_checks(release, monkeypatch):
    """Real files are read 65,536 rows at a time; here 5, so chunks cross the image/dna/text blocks of
    all_key_features (24 key rows each)."""
    import clibd_toolkit.released_embeddings as released

    path, _ = release
    whole = read_released_embeddings(path)
    monkeypatch.setattr(released, "_CHUNK_ROWS", 5)
    chunked = read_released_embeddings(path)
    assert chunked.metadata.equals(whole.metadata)
    for modality in whole.modalities:
        assert np.array_equal(chunked.vectors[modality], whole.vectors[modality])

    def shift_text_row(data):
        data[2 * 24 + 7, 1] += 1e-3  # row 7 of the text block
        return data

    _replace("key", "all_key_features", shift_text_row)(path)
    with pytest.raises(CheckpointError, match="dataset 'all_key_features' row 55 differs"):
        read_released_embeddings(path)
