"""The library functions the notebooks call for their steps (issue 15.2: moved out of notebook_params into the
stage they serve), tested like any library function against hand-made inputs and naive references."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clibd_toolkit.errors import ConfigError, DataError
from clibd_toolkit.identification import is_novel, split_reference
from clibd_toolkit.protocol import example_queries
from clibd_toolkit.records import normalise_records
from clibd_toolkit.store import META_COLUMNS, EmbeddingSet

SPLITS = ["train", "train", "seen_keys", "test_seen", "test_unseen", "test_unseen", "unseen_keys", "pretrain"]
SPECIES = ["A a", "A b", "A a", "A b", "C c", None, "C c", None]


def _embeddings() -> EmbeddingSet:
    meta = pd.DataFrame({c: pd.Series([pd.NA] * len(SPLITS), dtype="object") for c in META_COLUMNS})
    meta["record_id"] = [f"r{i}" for i in range(len(SPLITS))]
    meta["split"] = SPLITS
    meta["species"] = pd.Series(SPECIES, dtype="object")
    vectors = {"dna": np.eye(len(SPLITS), 4, dtype=np.float32) + 0.1}
    return EmbeddingSet(meta, vectors, {})


def test_split_reference_keeps_labelled_reference_records_and_every_query():
    reference, queries = split_reference(_embeddings(), "pretrain,train,seen_keys", ["test_seen", "test_unseen"])
    # a naive loop over the records is the reference
    want_ref = [f"r{i}" for i, (s, sp) in enumerate(zip(SPLITS, SPECIES))
                if s in ("pretrain", "train", "seen_keys") and sp is not None]
    want_q = [f"r{i}" for i, s in enumerate(SPLITS) if s in ("test_seen", "test_unseen")]
    assert reference.record_ids.tolist() == want_ref and queries.record_ids.tolist() == want_q
    with pytest.raises(ConfigError, match="unknown split"):
        split_reference(_embeddings(), "train,tran", "test_seen")
    with pytest.raises(DataError, match="empty"):
        split_reference(_embeddings(), "val_seen", "test_seen")


def test_is_novel_is_species_absent_from_the_reference():
    reference, queries = split_reference(_embeddings(), "train,seen_keys", "test_seen,test_unseen")
    known = set(reference.metadata["species"].dropna())
    naive = [sp is not None and not pd.isna(sp) and sp not in known for sp in queries.metadata["species"]]
    assert is_novel(queries, reference).tolist() == naive == [False, True, False]  # unlabelled: not novel


def _records(n_seen: int, n_unseen: int) -> pd.DataFrame:
    rows = [{"record_id": f"s{i}", "dna_barcode": "ACGT" * 30, "image": f"s{i}.jpg", "species": "A a",
             "split": "test_seen"} for i in range(n_seen)]
    rows += [{"record_id": f"u{i}", "dna_barcode": "ACGT" * 30, "image": f"u{i}.jpg", "species": "C c",
              "split": "test_unseen"} for i in range(n_unseen)]
    rows += [{"record_id": "t0", "dna_barcode": "ACGT" * 30, "image": "t0.jpg", "species": "A a", "split": "train"},
             {"record_id": "s-noimg", "dna_barcode": "ACGT" * 30, "species": "A a", "split": "test_seen"}]
    return normalise_records(pd.DataFrame(rows))


def test_example_queries_alternate_seen_and_unseen_test_records_with_both_inputs():
    records = _records(3, 1)
    picked = example_queries(records, n=4, seed=0)
    splits = picked["split"].tolist()
    assert splits[:2] == ["test_seen", "test_unseen"] and splits[2:] == ["test_seen", "test_seen"]
    assert "s-noimg" not in set(picked["record_id"]) and "t0" not in set(picked["record_id"])
    assert example_queries(records, n=4, seed=0).equals(picked)  # seeded
    assert len(example_queries(records, n=2, seed=1)) == 2
    with pytest.raises(DataError, match="no test_seen/test_unseen record"):
        example_queries(records[records["split"] == "train"], n=2)


def test_example_queries_from_a_given_photo_or_barcode(tmp_path):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"\xff\xd8")
    given = example_queries(_records(1, 1), query_image=str(photo), query_barcode="ACGT" * 40)
    assert given["record_id"].tolist() == ["query-image", "query-barcode"]
    assert given.loc[0, "image"] == str(photo.resolve()) and given.loc[1, "dna_barcode"] == "ACGT" * 40
    with pytest.raises(ConfigError, match="is not a file"):
        example_queries(_records(1, 1), query_image=str(tmp_path / "absent.jpg"))
    with pytest.raises(DataError):
        example_queries(_records(1, 1), query_barcode="this is no barcode")
