"""Property-based tests (issue 14, class 5): embedding files and calibration files mutated in their schema or
their values are either read into a consistent result or refused with the toolkit's own error, never an
AttributeError or another traceback; the commands that read them (identify, cluster) exit 2."""
from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clibd_toolkit.errors import ClibdError, CheckpointError
from clibd_toolkit.rank_calibration import RankCalibration, calibrate_ranks
from clibd_toolkit.embedding_files import load_embeddings
from clibd_toolkit.store import EmbeddingSet

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])


def _embeddings(n: int = 24, dim: int = 8) -> EmbeddingSet:
    rng = np.random.default_rng(0)
    meta = pd.DataFrame({"record_id": [f"r{i}" for i in range(n)], "order": ["O"] * n,
                         "family": [f"F{i % 2}" for i in range(n)], "genus": [f"G{i % 4}" for i in range(n)],
                         "species": [f"S{i % 8}" for i in range(n)], "bin_uri": [pd.NA] * n, "split": [pd.NA] * n})
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return EmbeddingSet(meta, {"dna": v / np.linalg.norm(v, axis=1, keepdims=True)})


ORIGINAL = _embeddings()

mutations = st.sampled_from(["ragged_lists", "int_lists", "ids_as_ints", "drop_ids", "null_vector", "lists_of_str",
                             "bad_config", "config_list", "count_text", "species_as_lists"])


def _rewrite(path: Path, mutation: str, data) -> None:
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    n = table.num_rows
    if mutation == "ragged_lists":
        lengths = data.draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
        col = pa.array([[0.1] * k for k in lengths], type=pa.list_(pa.float32()))
        table = table.set_column(table.column_names.index("emb_dna"), "emb_dna", col)
    elif mutation == "int_lists":
        col = pa.array([[1] * 8 for _ in range(n)], type=pa.list_(pa.int64(), 8))
        table = table.set_column(table.column_names.index("emb_dna"), "emb_dna", col)
    elif mutation == "lists_of_str":
        col = pa.array([["x"] * 8 for _ in range(n)], type=pa.list_(pa.string(), 8))
        table = table.set_column(table.column_names.index("emb_dna"), "emb_dna", col)
    elif mutation == "null_vector":
        values = table.column("emb_dna").to_pylist()
        values[data.draw(st.integers(0, n - 1))] = None
        table = table.set_column(table.column_names.index("emb_dna"), "emb_dna",
                                 pa.array(values, type=table.schema.field("emb_dna").type))
    elif mutation == "ids_as_ints":
        table = table.set_column(0, "record_id", pa.array(list(range(n))))
    elif mutation == "species_as_lists":
        i = table.column_names.index("species")
        table = table.set_column(i, "species", pa.array([["a", "b"]] * n))
    elif mutation == "drop_ids":
        table = table.drop(["record_id"])
    elif mutation == "bad_config":
        meta[b"clibd_config"] = data.draw(st.binary(max_size=20))
    elif mutation == "config_list":
        meta[b"clibd_config"] = b"[1, 2]"
    elif mutation == "count_text":
        meta[b"clibd_n_records"] = data.draw(st.sampled_from([b"lots", b"", b"1e9", b"-"]))
    pq.write_table(table.replace_schema_metadata(meta), path)


@FUZZ
@given(mutation=mutations, data=st.data())
def test_mutated_embedding_files_are_read_or_refused(mutation, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "emb.parquet"
        ORIGINAL.save(path)
        _rewrite(path, mutation, data)
        try:
            loaded = load_embeddings(path)
        except ClibdError:
            return
        # read: then it is consistent (one vector row per record, finite floats of one width)
        vectors = loaded.vectors["dna"]
        assert vectors.ndim == 2 and len(vectors) == len(loaded) and vectors.dtype == np.float32


def test_variable_length_vectors_are_refused_by_the_commands(tmp_path, capsys):
    from clibd_toolkit import cli

    path = tmp_path / "emb.parquet"
    ORIGINAL.save(path)
    table = pq.read_table(path)
    col = pa.array([[0.1] * (1 + i % 3) for i in range(table.num_rows)], type=pa.list_(pa.float32()))
    pq.write_table(table.set_column(table.column_names.index("emb_dna"), "emb_dna", col), path)
    with pytest.raises(CheckpointError, match="emb_dna.*expected a fixed-size list of floats"):
        load_embeddings(path)
    assert cli.main(["cluster", "--embeddings", str(path), "--out", str(tmp_path / "c")]) == 2
    assert "fixed-size list of floats" in capsys.readouterr().err


@pytest.fixture(scope="module")
def saved_calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("cal") / "cal.json"
    calibrate_ranks(ORIGINAL, query_modality="dna", key_modality="dna", n_repeats=1).save(path)
    return json.loads(path.read_text())


def _paths(obj, prefix=()):
    """Every (path, value) inside a JSON object."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


junk = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=5),
                 st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=4),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@FUZZ
@given(data=st.data(), value=junk)
def test_mutated_calibration_files_are_read_or_refused(saved_calibration, data, value):
    doc = copy.deepcopy(saved_calibration)
    places = [p for p, _ in _paths(doc) if p and p[0] != "diagnostics"]
    place = data.draw(st.sampled_from(places))
    target = doc
    for key in place[:-1]:
        target = target[key]
    target[place[-1]] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cal.json"
        path.write_text(json.dumps(doc))
        try:
            cal = RankCalibration.load(path)
            feats = {r: np.array([[0.9, 0.1, 1.0], [0.2, 0.0, 0.2]]) for r in ("order", "family", "genus", "species")}
            conf = cal.confidence(feats)
            cal.decide(conf)
        except ClibdError:
            return
        assert all(np.all((c >= 0) & (c <= 1)) for c in conf.values())
