"""CLIBD HDF5: files written here with h5py directly in the official layout (reference 4.3) from the real BIOSCAN
thumbnails, read lazily; and the streaming writer, round-tripped and checked against the layout."""
from __future__ import annotations

import io

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clibd_toolkit.errors import DataError
from clibd_toolkit.readers import detect_format, iter_record_chunks, read_records
from clibd_toolkit.hdf5_writer import write_clibd_hdf5
from clibd_toolkit.splits import key_mask, train_mask, train_records_are_keys

GROUPS_1M = ["no_split", "train_seen", "seen_keys", "val_seen", "test_seen", "val_unseen", "test_unseen",
             "val_unseen_keys", "test_unseen_keys", "single_species"]
EXPECTED_SPLIT = {"no_split": "pretrain", "train_seen": "train"}


def _jpeg(path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def thumbs(shared_data):
    folder = shared_data / "bioscan1m-retrieval-thumbs"
    labels = pd.read_csv(folder / "labels.csv", dtype=str)
    labels["jpeg"] = [_jpeg(folder / p) for p in labels["image"]]
    return labels


def _write_group(fh, name, rows, width):
    """One split group exactly as CLIBD's generate_hdf5_file scripts write it."""
    g = fh.create_group(name)
    n = len(rows)
    image = np.zeros((n, width), dtype=np.uint8)
    mask = np.zeros(n, dtype=int)
    for i, r in enumerate(rows):
        b = np.frombuffer(r["jpeg"], dtype=np.uint8)
        image[i, :len(b)] = b
        mask[i] = len(b)
    g.create_dataset("image", data=image)
    g.create_dataset("image_mask", data=mask)
    for col in ("barcode", "order", "family", "genus", "species", "sampleid", "processid", "image_file"):
        g.create_dataset(col, data=np.array([r[col] for r in rows], dtype="S"))
    ids = np.arange(n * 20).reshape(n, 20) % 997
    for col in ("input_ids", "token_type_ids", "attention_mask"):
        g.create_dataset(f"language_tokens_{col}", data=ids)


def _rows(labels, start, n, *, unlabelled=False):
    out = []
    for i in range(start, start + n):
        lab = labels.iloc[i]
        out.append({"jpeg": lab["jpeg"], "barcode": "ACGT" * (5 + i % 3), "order": lab["order"],
                    "family": lab["family"], "genus": "not_classified" if unlabelled else lab["genus"],
                    "species": "not_classified" if unlabelled else lab["species"], "sampleid": f"S{lab['image_id']}",
                    "processid": f"P{lab['image_id']}", "image_file": f"{lab['image_id']}.jpg"})
    return out


@pytest.fixture(scope="module")
def official_1m(thumbs, tmp_path_factory):
    path = tmp_path_factory.mktemp("h5") / "BIOSCAN_1M.hdf5"
    width = max(len(b) for b in thumbs["jpeg"]) + 11
    groups = {g: _rows(thumbs, 3 * k, 3, unlabelled=(g == "no_split")) for k, g in enumerate(GROUPS_1M)}
    with h5py.File(path, "w") as fh:
        for g, rows in groups.items():
            _write_group(fh, g, rows, width)
        _write_group(fh, "all_keys", groups["seen_keys"] + groups["val_unseen_keys"] + groups["test_unseen_keys"], width)
        _write_group(fh, "no_split_and_seen_train", groups["no_split"] + groups["train_seen"], width)
    return path, groups


def test_reads_official_1m_layout(official_1m):
    from clibd_toolkit.images import load_image

    path, groups = official_1m
    assert detect_format(path) == "clibd_hdf5"
    result = read_records(path)
    recs = result.records.set_index("record_id")
    assert result.n_read == len(recs) == 30 and len(result.rejects) == 0  # metasplit copies are not records again
    for g, rows in groups.items():
        for i, r in enumerate(rows):
            rec = recs.loc[r["processid"]]
            assert rec["split"] == EXPECTED_SPLIT.get(g, g) and rec["hdf5_group"] == g
            assert rec["dna_barcode"] == r["barcode"] and rec["family"] == r["family"]
            assert pd.isna(rec["species"]) if r["species"] == "not_classified" else rec["species"] == r["species"]
            assert rec["image"] == f"hdf5://{path}#{g}/{i}"
            assert rec["image_file"] == r["image_file"] and rec["sampleid"] == r["sampleid"]
    # the image behind a reference decodes to exactly what decoding the stored JPEG gives
    r = groups["val_unseen"][2]
    got = np.asarray(load_image(recs.loc[r["processid"], "image"]))
    assert np.array_equal(got, np.asarray(Image.open(io.BytesIO(r["jpeg"])).convert("RGB")))


def test_image_references_fetch_the_stored_bytes_and_name_bad_ones(official_1m):
    from clibd_toolkit.readers.clibd_hdf5 import fetch_hdf5_image, hdf5_image_ref

    path, groups = official_1m
    for g in ("train_seen", "test_unseen"):
        for i, r in enumerate(groups[g]):  # the group's datasets are looked up once, then reused
            assert fetch_hdf5_image(hdf5_image_ref(path, g, i)) == r["jpeg"]
    with pytest.raises(DataError, match=r"row 3 is past the end of group 'train_seen' \(3 rows\)"):
        fetch_hdf5_image(hdf5_image_ref(path, "train_seen", 3))
    with pytest.raises(DataError, match="has no group 'train_sen'"):
        fetch_hdf5_image(hdf5_image_ref(path, "train_sen", 0))


def test_reading_is_lazy_about_image_bytes(official_1m, monkeypatch):
    path, _ = official_1m
    touched = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        touched.append(self.name.rsplit("/", 1)[-1])
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    read_records(path)
    assert "image_mask" in touched and "image" not in touched


def test_streaming_chunks_and_groups_option(official_1m):
    path, groups = official_1m
    stream = iter_record_chunks(path, chunk_size=2)
    chunks = list(stream)
    assert max(len(c) for c in chunks) <= 2 and stream.n_read == 30
    whole = read_records(path).records
    assert pd.concat(chunks)["record_id"].tolist() == whole["record_id"].tolist()
    only = read_records(path, groups=["val_seen", "test_seen"]).records
    assert sorted(only["split"].unique()) == ["test_seen", "val_seen"] and len(only) == 6
    with pytest.raises(DataError, match=r"no group\(s\) \['val_sen'\]"):
        read_records(path, groups=["val_sen"])


def test_reads_official_5m_layout(thumbs, tmp_path):
    """BIOSCAN-5M files have no no_split/train_seen groups: train records are in seen_keys (and in
    no_split_and_seen_train with the pretrain records), unseen keys in unseen_keys."""
    path = tmp_path / "BIOSCAN_5M.hdf5"
    width = max(len(b) for b in thumbs["jpeg"])
    pretrain = _rows(thumbs, 0, 4, unlabelled=True)
    train = _rows(thumbs, 4, 4)
    parts = {"val_seen": _rows(thumbs, 8, 2), "test_seen": _rows(thumbs, 10, 2), "val_unseen": _rows(thumbs, 12, 2),
             "test_unseen": _rows(thumbs, 14, 2), "unseen_keys": _rows(thumbs, 16, 3), "other_heldout": _rows(thumbs, 19, 1)}
    with h5py.File(path, "w") as fh:
        _write_group(fh, "all_keys", parts["unseen_keys"] + train, width)
        _write_group(fh, "seen_keys", train, width)
        _write_group(fh, "no_split_and_seen_train", pretrain + train, width)
        for g, rows in parts.items():
            _write_group(fh, g, rows, width)
    recs = read_records(path).records
    assert len(recs) == 4 + 4 + 12
    split = dict(zip(recs["record_id"], recs["split"]))
    assert all(split[r["processid"]] == "pretrain" for r in pretrain)
    assert all(split[r["processid"]] == "train" for r in train)
    assert all(split[r["processid"]] == "unseen_keys" for r in parts["unseen_keys"])
    assert train_records_are_keys(recs)
    assert key_mask(recs).sum() == 4 + 3 and train_mask(recs).sum() == 8
    pretrain_row = recs[recs["record_id"] == pretrain[1]["processid"]]
    assert pretrain_row["image"].iat[0].endswith("#no_split_and_seen_train/1")


def test_not_an_hdf5_file(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_text("not hdf5")
    with pytest.raises(DataError, match="cannot be opened as HDF5"):
        read_records(bad)
    empty = tmp_path / "e.h5"
    with h5py.File(empty, "w") as fh:
        fh.create_group("something_else")
    with pytest.raises(DataError, match="no CLIBD split groups"):
        read_records(empty)


# --- the writer -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def canonical(thumbs, shared_data):
    folder = shared_data / "bioscan1m-retrieval-thumbs"
    splits = ["pretrain", "train", "train", "seen_keys", "val_seen", "test_seen", "val_unseen", "test_unseen",
              "val_unseen_keys", "test_unseen_keys", "single_species"]
    n = 33
    recs = pd.DataFrame({
        "record_id": [f"R{i:03d}" for i in range(n)],
        "dna_barcode": ["ACGTTGCA"[: 4 + i % 5] * 20 for i in range(n)],
        # every third image as ready JPEG bytes, the others as PNG files (re-encoded to JPEG by the writer)
        "image": [thumbs["jpeg"].iat[i] if i % 3 == 0 else str(folder / thumbs["image"].iat[i]) for i in range(n)],
        "order": thumbs["order"].head(n).tolist(), "family": thumbs["family"].head(n).tolist(),
        "genus": [None if i % 4 == 0 else g for i, g in enumerate(thumbs["genus"].head(n))],
        "species": [None if i % 4 == 0 else s for i, s in enumerate(thumbs["species"].head(n))],
        "bin_uri": [f"BOLD:AB{i:04d}" for i in range(n)],
        "split": [splits[i % len(splits)] for i in range(n)],
    })
    recs.loc[5, "image"] = None  # a record without an image
    from clibd_toolkit.records import normalise_records

    return normalise_records(recs)


def test_writer_roundtrip_in_chunks(canonical, tmp_path):
    from clibd_toolkit.images import load_image

    path = write_clibd_hdf5(tmp_path / "mine.h5", (canonical.iloc[i:i + 7] for i in range(0, len(canonical), 7)),
                            progress=False)
    back = read_records(path).records.set_index("record_id")
    src = canonical.set_index("record_id")
    assert sorted(back.index) == sorted(src.index)
    for col in ("dna_barcode", "order", "family", "genus", "species", "bin_uri", "split"):
        a, b = src[col], back.loc[src.index, col]
        assert ((a == b) | (a.isna() & b.isna())).all(), col
    assert pd.isna(back.loc["R005", "image"])
    # JPEG bytes are stored unchanged; PNG files are re-encoded (lossy): compare pixels loosely
    with h5py.File(path, "r") as fh:
        ref = back.loc["R000", "image"]
        group, row = ref.split("#")[1].split("/")
        stored = fh[group]["image"][int(row), : fh[group]["image_mask"][int(row)]].tobytes()
        assert stored == src.loc["R000", "image"]
    png = np.asarray(load_image(src.loc["R001", "image"]), dtype=float)
    assert np.abs(np.asarray(load_image(back.loc["R001", "image"]), dtype=float) - png).mean() < 6


def test_writer_layout_and_metasplits(canonical, tmp_path):
    path = write_clibd_hdf5(tmp_path / "mine.h5", canonical, progress=False)
    with h5py.File(path, "r") as fh:
        groups = set(fh.keys())
        assert {"no_split", "train_seen", "seen_keys", "all_keys", "no_split_and_seen_train"} <= groups
        for name in groups:
            g = fh[name]
            n = g["image_mask"].shape[0]
            assert g["image"].dtype == np.uint8 and g["image"].shape[0] == n
            assert g["image"].shape[1] >= g["image_mask"][:].max()
            for col in ("barcode", "order", "family", "genus", "species", "sampleid", "processid", "image_file"):
                assert g[col].shape == (n,)
            # zero padding after each image, official readers decode bytes with .decode("utf-8")
            lengths = g["image_mask"][:]
            for i in range(n):
                assert not g["image"][i, lengths[i]:].any()
            assert all(isinstance(v.decode("utf-8"), str) for v in g["processid"][:])
        pid = lambda name: sorted(v.decode() for v in fh[name]["processid"][:])  # noqa: E731
        assert pid("all_keys") == sorted(pid("seen_keys") + pid("val_unseen_keys") + pid("test_unseen_keys"))
        assert pid("no_split_and_seen_train") == sorted(pid("no_split") + pid("train_seen"))
        missing = [v.decode() for v in fh["no_split"]["species"][:]]
        assert set(missing) == {"not_classified"} or "not_classified" in missing


def test_writer_5m_style_all_keys_include_train(canonical, tmp_path):
    recs = canonical.copy()
    recs["split"] = ["pretrain", "train", "unseen_keys", "val_unseen", "test_seen"] * 6 + ["train"] * 3
    path = write_clibd_hdf5(tmp_path / "five.h5", recs, progress=False)
    with h5py.File(path, "r") as fh:
        keys = sorted(v.decode() for v in fh["all_keys"]["processid"][:])
    expected = sorted(recs.loc[recs["split"].isin(["train", "unseen_keys"]), "record_id"])
    assert keys == expected
    back = read_records(path).records
    assert train_records_are_keys(back) and key_mask(back).sum() == len(expected)


def test_writer_refuses_bad_records(canonical, tmp_path):
    no_split = canonical.copy()
    no_split.loc[3, "split"] = None
    with pytest.raises(DataError, match="have no split .*R003.*ensure_splits"):
        write_clibd_hdf5(tmp_path / "a.h5", no_split, progress=False)
    with pytest.raises(DataError, match="duplicate record_id 'R000'"):
        write_clibd_hdf5(tmp_path / "b.h5", [canonical.iloc[:5], canonical.iloc[:2]], progress=False)
    assert not (tmp_path / "a.h5").exists() and not (tmp_path / "b.h5").exists()  # nothing half-written
    broken = canonical.copy()
    broken.loc[2, "image"] = b"not an image"
    with pytest.raises(DataError, match="R002"):
        write_clibd_hdf5(tmp_path / "c.h5", broken, progress=False)


def test_writer_text_tokens(canonical, tmp_path):
    calls = []

    def tokenizer(texts, padding, max_length, truncation):
        calls.append(texts)
        ids = [[len(t) % 50] * max_length for t in texts]
        return {"input_ids": ids, "token_type_ids": [[0] * max_length for _ in texts],
                "attention_mask": [[1] * max_length for _ in texts]}

    path = write_clibd_hdf5(tmp_path / "t.h5", canonical, text_tokenizer=tokenizer, progress=False)
    with h5py.File(path, "r") as fh:
        g = fh["train_seen"]
        assert g["language_tokens_input_ids"].shape == (g["image_mask"].shape[0], 20)
    assert any("not_classified" in t for batch in calls for t in batch)


def test_folder_holding_one_hdf5_file(canonical, tmp_path):
    out = tmp_path / "survey"
    out.mkdir()
    write_clibd_hdf5(out / "survey.h5", canonical, progress=False)
    (out / "simulation.json").write_text("{}")
    assert detect_format(out) == "clibd_hdf5"
    assert len(read_records(out).records) == len(canonical)
