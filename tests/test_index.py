"""NearestNeighbourIndex against independent references: brute-force argsort and faiss vs numpy."""
from __future__ import annotations

import json

import numpy as np
import pytest

from clibd_toolkit.errors import CheckpointError, ConfigError, DataError, NotFittedError
from clibd_toolkit.index import NearestNeighbourIndex


def tie_rich_vectors(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors with exactly four entries of +-0.5: every dot product is a multiple of 0.25, computed
    exactly in float32 whatever the summation order, and many scores tie."""
    out = np.zeros((n, d), np.float32)
    for row in out:
        cols = rng.choice(d, 4, replace=False)
        row[cols] = rng.choice([-0.5, 0.5], 4)
    return out


def brute_force(queries: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: full float64 score matrix, stable argsort (ties -> lower key index first)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    kk = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ kk.astype(np.float64).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


@pytest.mark.parametrize("k", [1, 3, 20, 61])
def test_exact_equals_brute_force_with_ties_and_k_beyond_chunks(k):
    rng = np.random.default_rng(0)
    keys, queries = tie_rich_vectors(61, 6, rng), tie_rich_vectors(23, 6, rng)
    # chunks smaller than k on both axes: the running merge must keep index order among ties across blocks
    index = NearestNeighbourIndex(query_chunk_size=5, key_chunk_size=7).fit(keys)
    scores, indices = index.search(queries, k)
    ref_scores, ref_indices = brute_force(queries, keys, k)
    assert indices.dtype == np.int64 and scores.dtype == np.float32 and scores.shape == (23, k)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_array_equal(scores, ref_scores.astype(np.float32))


def test_exact_ties_inside_one_block_resolved_by_index():
    # 10 identical keys and one better key: k=4 must return the better key then the 3 lowest duplicates
    keys = np.zeros((11, 3), np.float32)
    keys[:, 0] = 1.0
    keys[7] = [0.0, 1.0, 0.0]
    index = NearestNeighbourIndex().fit(keys)
    scores, indices = index.search(np.array([[0.6, 0.8, 0.0]], np.float32), 4)
    assert indices.tolist() == [[7, 0, 1, 2]]
    np.testing.assert_allclose(scores, [[0.8, 0.6, 0.6, 0.6]], rtol=1e-6)


def test_exact_random_matches_brute_force_and_normalises():
    rng = np.random.default_rng(1)
    keys = rng.standard_normal((500, 32)).astype(np.float32) * 3.0  # not unit length: the index normalises
    queries = rng.standard_normal((40, 32)).astype(np.float32)
    scores, indices = NearestNeighbourIndex(query_chunk_size=16, key_chunk_size=100).fit(keys).search(queries, 10)
    ref_scores, ref_indices = brute_force(queries, keys, 10)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_faiss_flat_matches_numpy():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(2)
    keys = rng.standard_normal((800, 48)).astype(np.float32)
    queries = rng.standard_normal((50, 48)).astype(np.float32)
    scores, indices = NearestNeighbourIndex("faiss-flat").fit(keys).search(queries, 7)
    ref_scores, ref_indices = brute_force(queries, keys, 7)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


def test_faiss_ivf_probing_every_list_is_exact_and_hnsw_recall():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    keys = rng.standard_normal((2000, 16)).astype(np.float32)
    queries = rng.standard_normal((100, 16)).astype(np.float32)
    _, ref = brute_force(queries, keys, 5)
    ivf = NearestNeighbourIndex("faiss-ivf", nlist=20, nprobe=20).fit(keys)
    np.testing.assert_array_equal(ivf.search(queries, 5)[1], ref)
    hnsw = NearestNeighbourIndex("faiss-hnsw", ef_search=256).fit(keys)
    recall_at_1 = np.mean(hnsw.search(queries, 1)[1][:, 0] == ref[:, 0])
    assert recall_at_1 >= 0.95


@pytest.mark.parametrize("backend", ["exact", "faiss-flat"])
def test_save_load_round_trip(tmp_path, backend):
    if backend != "exact":
        pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    keys = rng.standard_normal((300, 24)).astype(np.float32)
    queries = rng.standard_normal((20, 24)).astype(np.float32)
    index = NearestNeighbourIndex(backend, key_chunk_size=64).fit(keys)
    folder = index.save(tmp_path / "idx")
    header = json.loads((folder / "index.json").read_text())
    assert (header["backend"], header["dim"], header["count"]) == (backend, 24, 300)
    for loaded in (NearestNeighbourIndex.load(folder), NearestNeighbourIndex.load(folder, mmap=True)):
        assert loaded.get_params() == index.get_params()
        for a, b in zip(loaded.search(queries, 5), index.search(queries, 5)):
            np.testing.assert_array_equal(a, b)


def test_load_refuses_tampered_or_incomplete(tmp_path):
    folder = NearestNeighbourIndex().fit(np.eye(4, dtype=np.float32)).save(tmp_path / "idx")
    data = folder / "keys.npy"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        NearestNeighbourIndex.load(folder)
    (folder / "index.json").unlink()
    with pytest.raises(CheckpointError, match="not a saved index"):
        NearestNeighbourIndex.load(folder)


def test_contract_errors():
    index = NearestNeighbourIndex()
    with pytest.raises(NotFittedError, match="not fitted"):
        index.search(np.ones((1, 3), np.float32), 1)
    assert index.fit(np.eye(3, dtype=np.float32)) is index
    with pytest.raises(ConfigError, match=r"k=5 is larger than the number of keys in the index \(3\)"):
        index.search(np.ones((1, 3), np.float32), 5)
    with pytest.raises(DataError, match="expected"):
        index.search(np.ones((1, 4), np.float32), 1)
    with pytest.raises(DataError, match="row 1 holds NaN"):
        NearestNeighbourIndex().fit(np.array([[1.0, 0.0], [np.nan, 1.0]], np.float32))
    with pytest.raises(DataError, match="zero vector"):
        index.search(np.zeros((1, 3), np.float32), 1)
    with pytest.raises(ConfigError, match="expected one of"):
        NearestNeighbourIndex("annoy")
    with pytest.raises(ConfigError, match="key_chunk_size"):
        NearestNeighbourIndex(key_chunk_size=0)
    assert "faiss-flat" in repr(NearestNeighbourIndex("faiss-flat"))


def test_refit_replaces_keys():
    index = NearestNeighbourIndex().fit(np.eye(3, dtype=np.float32))
    index.fit(np.array([[0.0, 1.0], [1.0, 0.0]], np.float32))
    assert index.n_keys_ == 2 and index.search(np.array([[1.0, 0.1]], np.float32), 1)[1].tolist() == [[1]]


def test_keys_are_copied_unless_asked_not_to():
    keys = np.eye(3, dtype=np.float32)
    index = NearestNeighbourIndex().fit(keys)
    keys[0] = [0.0, 0.0, 1.0]  # the caller changes its array afterwards
    assert index.search(np.array([[1.0, 0.0, 0.0]], np.float32), 1)[1].tolist() == [[0]]
    assert NearestNeighbourIndex(copy=False).fit(keys).keys_ is keys
