"""Sequence evidence (clibd_toolkit.kmers): k-mer profiles against a naive count, the joint cosine against its
formula, the set transform's bookkeeping and errors, and the guards that keep joint and plain vectors apart in
calibration and identification."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from clibd_toolkit.errors import ConfigError, DataError
from clibd_toolkit.identification import identify
from clibd_toolkit.kmers import (
    CONFIG_KEY,
    barcodes_of,
    joint_vectors,
    kmer_profiles,
    sequence_evidence,
    view_leaders,
    with_sequence_evidence,
)
from clibd_toolkit.rank_calibration import RankCalibration, calibrate_ranks, rank_features
from clibd_toolkit.store import META_COLUMNS, EmbeddingSet


def _naive_profile(seq: str, k: int) -> np.ndarray:
    """Count every window of k letters that are all A/C/G/T, by a dict over the k-mer strings in lexical order."""
    index = {"".join(p): i for i, p in enumerate(itertools.product("ACGT", repeat=k))}
    v = np.zeros(4**k)
    for i in range(len(seq) - k + 1):
        word = seq[i:i + k].upper()
        if word in index:
            v[index[word]] += 1
    return v / np.linalg.norm(v)


def test_profile_by_hand():
    # ACGTAC, k = 2: AC twice, CG, GT, TA once each; AC is index 0*4+1
    p = kmer_profiles(["ACGTAC"], k=2)[0]
    want = np.zeros(16)
    want[[1, 6, 11, 12]] = [2, 1, 1, 1]
    np.testing.assert_allclose(p, want / np.sqrt(7), rtol=1e-6)


def test_profiles_match_a_naive_count_with_ambiguity_codes_and_gaps():
    rng = np.random.default_rng(0)
    letters, p = list("ACGTacgtNRY-"), [0.22] * 4 + [0.02] * 4 + [0.01] * 4
    seqs = ["".join(rng.choice(letters, p=p, size=int(n))) for n in rng.integers(40, 300, size=50)]
    for k in (3, 5):
        got = kmer_profiles(seqs, k=k, chunk=7)  # chunks of 7: the chunked count must not mix rows
        want = np.stack([_naive_profile(s, k) for s in seqs])
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert got.dtype == np.float32 and got.shape == (50, 4**k)


def test_profile_errors_name_the_record():
    with pytest.raises(DataError, match=r"'rec-2'.*no 5 consecutive A/C/G/T.*--sequence-weight 0"):
        kmer_profiles(["ACGTACGTAC", "ACGTNACGTN"], ids=["rec-1", "rec-2"])
    with pytest.raises(DataError, match=r"'b' has no barcode"):
        kmer_profiles(["ACGTACGT", None], ids=["a", "b"])
    with pytest.raises(ConfigError, match="1..8"):
        kmer_profiles(["ACGT"], k=9)


def test_joint_cosine_is_the_weighted_sum_of_the_two_cosines():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(6, 8))
    p = np.abs(rng.normal(size=(6, 16)))
    for s in (0.2, 0.5, 0.9):
        j = joint_vectors(e, p, s).astype(np.float64)
        assert np.allclose(np.linalg.norm(j, axis=1), 1.0, atol=1e-6)
        for a, b in [(0, 1), (2, 5), (3, 3)]:
            cos = lambda x, y: float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
            assert j[a] @ j[b] == pytest.approx((1 - s) * cos(e[a], e[b]) + s * cos(p[a], p[b]), abs=1e-6)
    for bad in (0, 1, -0.1, True):
        with pytest.raises(ConfigError, match="expected a number in"):
            joint_vectors(e, p, bad)


def _set(ids, dna, species=None, image=None) -> EmbeddingSet:
    meta = pd.DataFrame({c: [None] * len(ids) for c in META_COLUMNS})
    meta["record_id"] = ids
    if species is not None:
        meta["species"] = species
        meta["genus"] = [s.split()[0] for s in species]
        meta["family"] = ["F" + s[0] for s in species]
        meta["order"] = "O"
    vectors = {"dna": np.asarray(dna, dtype=np.float32)}
    if image is not None:
        vectors["image"] = np.asarray(image, dtype=np.float32)
    return EmbeddingSet(meta, vectors, {"model": "x"})


def test_with_sequence_evidence_joins_by_record_id_and_stamps_the_setting():
    rng = np.random.default_rng(2)
    dna = rng.normal(size=(3, 4))
    dna /= np.linalg.norm(dna, axis=1, keepdims=True)
    dna[1] = np.nan  # a record without a DNA embedding needs no barcode and stays without
    seqs = {"r0": "ACGTTGCAACGT", "r2": "TTTTGGGGCCCCAAAA", "other": "ACGT" * 5}
    out = with_sequence_evidence(_set(["r0", "r1", "r2"], dna), seqs, 0.25, k=3)
    assert sequence_evidence(out) == out.config[CONFIG_KEY] == {"weight": 0.25, "k": 3} and out.config["model"] == "x"
    assert out.vectors["dna"].shape == (3, 4 + 64)
    assert np.isnan(out.vectors["dna"][1]).all() and out.has("dna").tolist() == [True, False, True]
    want = joint_vectors(dna[[0, 2]], kmer_profiles([seqs["r0"], seqs["r2"]], k=3), 0.25)
    np.testing.assert_allclose(out.vectors["dna"][[0, 2]], want, atol=1e-6)
    with pytest.raises(ConfigError, match="already holds joint vectors"):
        with_sequence_evidence(out, seqs, 0.25, k=3)
    with pytest.raises(DataError, match=r"1 of 2 records .* no barcode .*'r2'.*--reference-barcodes"):
        with_sequence_evidence(_set(["r0", "r1", "r2"], dna), {"r0": seqs["r0"]}, 0.5)


def test_barcodes_of_a_records_table():
    records = pd.DataFrame({"record_id": ["a", "b", "c"], "dna_barcode": ["ACGT", None, "GGCC"]})
    assert barcodes_of(records).to_dict() == {"a": "ACGT", "c": "GGCC"}
    assert barcodes_of(pd.DataFrame({"record_id": ["a"]})).empty


def _library(n_species=6, per=5, seed=3):
    """Barcodes of species in two genera each, DNA embeddings as random unit vectors near a species centre."""
    rng = np.random.default_rng(seed)
    ids, species, seqs, dna = [], [], [], []
    for s in range(n_species):
        base = rng.choice(list("ACGT"), size=120)
        centre = rng.normal(size=8)
        for r in range(per):
            seq = base.copy()
            seq[rng.integers(0, 120, size=3)] = rng.choice(list("ACGT"), size=3)
            ids.append(f"s{s}-{r}")
            species.append(f"G{s % 2}{'AB'[s % 2]} sp{s}" if s > 1 else f"G{s} sp{s}")
            seqs.append("".join(seq))
            dna.append(centre + rng.normal(scale=0.3, size=8))
    dna = np.asarray(dna)
    dna /= np.linalg.norm(dna, axis=1, keepdims=True)
    return ids, species, dict(zip(ids, seqs)), dna


def test_calibration_records_the_evidence_and_identification_refuses_a_mismatch():
    ids, species, seqs, dna = _library()
    plain = _set(ids, dna, species, image=dna)
    joint = with_sequence_evidence(plain, seqs, 0.5)
    cal = calibrate_ranks(joint, query_modality="dna", key_modality="dna", n_repeats=1, max_queries=50)
    assert (cal.sequence_weight, cal.sequence_k) == (0.5, 5)
    assert RankCalibration.from_dict(cal.to_dict()).sequence_evidence() == {"weight": 0.5, "k": 5}
    plain_cal = calibrate_ranks(plain, query_modality="dna", key_modality="dna", n_repeats=1, max_queries=50)
    assert plain_cal.sequence_weight == 0.0 and plain_cal.sequence_evidence() is None
    queries = with_sequence_evidence(plain.subset([0, 7]), seqs, 0.5)
    table = identify(queries, joint, query_modality="dna", key_modality="dna", k=3, novelty=cal)
    assert table.nearest_id.tolist() == [ids[0], ids[7]] and table.similarity.round(5).tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match="compare only with joint vectors"):
        identify(plain.subset([0]), joint, query_modality="dna", key_modality="dna", k=3)
    with pytest.raises(ConfigError, match="compare only with joint vectors"):  # photos against joint DNA keys
        identify(plain.subset([0]), joint, query_modality="image", key_modality="dna", k=3)
    with pytest.raises(ConfigError, match="calibration was fitted with k-mer evidence None"):
        identify(queries, joint, query_modality="dna", key_modality="dna", k=3, novelty=plain_cal)
    with pytest.raises(ConfigError, match="only barcode queries against barcode keys"):
        calibrate_ranks(joint, query_modality="image", key_modality="dna", n_repeats=1, max_queries=50)
    with pytest.raises(ConfigError, match="sequence_weight"):
        RankCalibration(query_modality="image", key_modality="dna", sequence_weight=0.5)


def test_view_leaders_match_a_naive_loop_over_the_two_parts():
    """Each view's nearest neighbour, found among the joint neighbours by the embedding's and the profile's own
    cosines (computed from the unjoined parts), including queries where the two views disagree."""
    rng = np.random.default_rng(5)
    e_keys, e_q = rng.normal(size=(40, 6)), rng.normal(size=(9, 6))
    p_keys, p_q = np.abs(rng.normal(size=(40, 4**2))), np.abs(rng.normal(size=(9, 4**2)))
    keys, queries = joint_vectors(e_keys, p_keys, 0.5), joint_vectors(e_q, p_q, 0.5)
    neighbours = np.argsort(-(queries @ keys.T), axis=1)[:, :7]
    got = view_leaders(queries, keys, neighbours, k=2, chunk=4)  # chunks of 4 queries: the seams are covered
    def cos(x, y):
        return x @ y / np.linalg.norm(x) / np.linalg.norm(y)

    for i in range(len(queries)):
        want = [int(np.argmax([cos(e[i], ek[j]) for j in neighbours[i]]))
                for e, ek in ((e_q, e_keys), (p_q, p_keys))]
        assert got[i].tolist() == want
    assert (got[:, 0] != got[:, 1]).any() and (got != 0).any()  # the case is not trivial
    with pytest.raises(DataError, match="joint vectors of k = 5"):
        view_leaders(queries, keys, neighbours, k=5)


def test_identification_uses_both_views_as_calibrated():
    """With joint vectors, the confidences identify reports are the calibration's models applied to features
    whose views column comes from each view's own nearest neighbour (recomputed here by brute force)."""
    ids, species, seqs, dna = _library()
    joint = with_sequence_evidence(_set(ids, dna, species), seqs, 0.5)
    cal = calibrate_ranks(joint, query_modality="dna", key_modality="dna", n_repeats=1, max_queries=50)
    assert all(len(m["coef"]) == 5 for m in cal.models.values() if m)
    rng = np.random.default_rng(9)
    q_dna = dna[[1, 8, 17]] + rng.normal(scale=0.4, size=(3, dna.shape[1]))
    q_ids = ["q0", "q1", "q2"]
    q_seqs = {q: seqs[ids[i]] for q, i in zip(q_ids, (20, 8, 3))}  # barcodes of other records: views can differ
    queries = with_sequence_evidence(_set(q_ids, q_dna / np.linalg.norm(q_dna, axis=1, keepdims=True)), q_seqs, 0.5)
    table = identify(queries, joint, query_modality="dna", key_modality="dna", k=3, novelty=cal)
    Q, K = queries.vectors["dna"].astype(np.float64), joint.vectors["dna"].astype(np.float64)
    n = min(cal.n_neighbours, len(ids))
    order = np.argsort(-(Q @ K.T), axis=1, kind="stable")[:, :n]
    scores = np.take_along_axis(Q @ K.T, order, axis=1)
    split = K.shape[1] - 4**5
    leaders = np.stack([np.argmax((Q[:, None, :split] * K[order][:, :, :split]).sum(-1), axis=1),
                        np.argmax((Q[:, None, split:] * K[order][:, :, split:]).sum(-1), axis=1)], axis=1)
    meta = joint.metadata

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    def centroid_margin(rank: str) -> np.ndarray:  # the joint vectors' taxon centroids, species alike, by brute force
        taxa = np.asarray(meta[rank].unique(), dtype=object)
        cents = np.stack([unit(np.mean([unit(K[((meta[rank] == t) & (meta["species"] == s)).to_numpy()].mean(0))
                                        for s in meta.loc[meta[rank] == t, "species"].unique()], axis=0))
                          for t in taxa])
        sims = Q @ cents.T
        own = taxa[None, :] == meta[rank].to_numpy(dtype=object)[order[:, 0]][:, None]
        return sims[own] - np.where(own, -np.inf, sims).max(1)

    feats = {r: rank_features(scores, pd.factorize(meta[r])[0][order], min(cal.k_support, n), leaders,
                              centroid=centroid_margin(r)) for r in ("order", "family", "genus", "species")}
    want = cal.confidence(feats)
    for r, values in want.items():
        np.testing.assert_allclose(table[f"confidence_{r}"].to_numpy(dtype=float), values, atol=1e-5)
