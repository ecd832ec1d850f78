"""Sequence evidence for barcode-to-barcode naming: overlapping k-mer profiles, and joint vectors that add them to
a model's DNA embedding (the transform stage, beside the tokenisers).

A **k-mer profile** of a barcode counts its overlapping k-mers (default k = 5, 4**5 = 1,024 counts) over the
unambiguous nucleotides A, C, G, T (a window holding an IUPAC code, N or a gap is skipped), L2-normalised. The
cosine of two profiles is high when the sequences share most of their k-mers: a fast stand-in for sequence
identity, the evidence alignment tools (SINTAX, BLAST) rest on.

A **joint vector** places the model's (unit) DNA embedding ``e`` and the (unit) profile ``p`` side by side, scaled
``[sqrt(1 - s) e, sqrt(s) p]`` with ``s`` the **sequence weight**. Its norm is 1, and the cosine of two joint
vectors is exactly ``(1 - s) cos(e1, e2) + s cos(p1, p2)``: the nearest reference, the neighbourhood features and
the per-rank calibration (:mod:`clibd_toolkit.rank_calibration`) all see that mixed similarity. Measured on real
BOLD barcodes (``benchmarks/open_world.py``, README), the mixture names novel families and genera more reliably
than either part alone: the embedding knows which barcodes belong to one taxon, the profile how close two
sequences really are.

Only barcode queries against barcode keys can use it (photos have no sequence); the reference's barcodes must be
at hand when the library is built and when it is searched (``clibd identify --reference-barcodes`` for a saved
embedding file). :func:`with_sequence_evidence` stamps the weight and k into the set's ``config`` under
:data:`CONFIG_KEY`, a calibration fitted on such a set stores them, and identification refuses to mix sets made
with different settings.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError
from .schema import RECORD_ID

DEFAULT_K = 5
#: share of the joint cosine carried by the k-mer profile when the evidence is used (``clibd identify``'s default
#: for barcode queries against barcode keys; chosen with benchmarks/open_world.py, README)
DEFAULT_SEQUENCE_WEIGHT = 0.5
#: where :func:`with_sequence_evidence` records its settings in ``EmbeddingSet.config``
CONFIG_KEY = "sequence_evidence"

_CODE = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate("ACGT"):
    _CODE[ord(_c)] = _i
    _CODE[ord(_c.lower())] = _i


def kmer_profiles(sequences: Sequence[str], k: int = DEFAULT_K, *, ids: Sequence[Any] | None = None,
                  chunk: int = 4096) -> np.ndarray:
    """(n, 4**k) float32 L2-normalised counts of each sequence's overlapping ACGT k-mers (module docstring).

    ``ids`` name the records in errors (default: their positions).

    Raises:
        ConfigError: ``k`` outside 1..8.
        DataError: a sequence that is missing, not text, or holds no k consecutive A/C/G/T (named with its record).
    """
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= 8:
        raise ConfigError(f"k-mer length k got {k!r}; expected an integer in 1..8 (default {DEFAULT_K})")
    n = len(sequences)
    weights = 4 ** np.arange(k - 1, -1, -1, dtype=np.int64)
    size = 4**k
    out = np.zeros((n, size), dtype=np.float32)
    for start in range(0, n, chunk):
        flat: list[np.ndarray] = []
        for row in range(start, min(start + chunk, n)):
            seq = sequences[row]
            if not isinstance(seq, str):
                raise DataError(f"record {_name(ids, row)!r} has no barcode ({seq!r}); k-mer evidence needs one for "
                                "every record searched by barcode: give its sequence, or drop the record")
            codes = _CODE[np.frombuffer(seq.encode("ascii", errors="replace"), dtype=np.uint8)]
            if len(codes) >= k:
                windows = np.lib.stride_tricks.sliding_window_view(codes, k)
                found = windows[(windows >= 0).all(axis=1)] @ weights
            else:
                found = np.empty(0, dtype=np.int64)
            if not len(found):
                raise DataError(f"record {_name(ids, row)!r}: barcode {seq[:40]!r}{'...' if len(seq) > 40 else ''} "
                                f"holds no {k} consecutive A/C/G/T, so it has no k-mer profile; fix the sequence, "
                                "drop the record, or identify without sequence evidence (--sequence-weight 0)")
            flat.append((row - start) * size + found)
        counts = np.bincount(np.concatenate(flat), minlength=len(flat) * size).reshape(len(flat), size)
        out[start:start + len(flat)] = counts
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _name(ids: Sequence[Any] | None, row: int) -> Any:
    return ids[row] if ids is not None else f"#{row}"


def joint_vectors(embeddings: np.ndarray, profiles: np.ndarray, sequence_weight: float) -> np.ndarray:
    """(n, d + 4**k) float32 ``[sqrt(1 - s) e, sqrt(s) p]`` of unit embeddings ``e`` and profiles ``p``, with ``s``
    = ``sequence_weight``: cosine = (1 - s) cos(e) + s cos(p). Rows whose embedding is missing (NaN) stay NaN."""
    _check_weight(sequence_weight)
    e = np.asarray(embeddings, dtype=np.float64)
    p = np.asarray(profiles, dtype=np.float64)
    if e.ndim != 2 or p.ndim != 2 or len(e) != len(p):
        raise DataError(f"embeddings {e.shape} and k-mer profiles {p.shape} must be 2-D with one row per record")
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    out = np.concatenate([np.sqrt(1 - sequence_weight) * e, np.sqrt(sequence_weight) * p], axis=1)
    return out.astype(np.float32)


def view_leaders(queries: np.ndarray, keys: np.ndarray, neighbours: np.ndarray, k: int = DEFAULT_K,
                 chunk: int = 1024) -> np.ndarray:
    """(m, 2) for joint vectors: the position, in each query's neighbour list (``neighbours``: (m, K) rows of
    ``keys``, best first by the joint cosine), of the neighbour nearest by the model's embedding alone (column 0) and
    by the k-mer profile alone (column 1). Where the two views and their mixture point to different taxa, the
    nearest one's name rests on one view only (:mod:`clibd_toolkit.rank_calibration`, feature ``views``)."""
    queries, keys = np.asarray(queries), np.asarray(keys)
    split = queries.shape[1] - 4**k
    if split < 1 or keys.shape[1] != queries.shape[1]:
        raise DataError(f"joint vectors of k = {k} hold a model embedding and {4**k} k-mer counts; got queries of "
                        f"{queries.shape[1]} and keys of {keys.shape[1]} dimensions")
    out = np.zeros((len(neighbours), 2), dtype=np.int64)
    for start in range(0, len(neighbours), chunk):
        q = queries[start:start + chunk]
        near = keys[neighbours[start:start + chunk]]  # (c, K, d + 4**k)
        out[start:start + len(q), 0] = np.einsum("cd,ckd->ck", q[:, :split], near[:, :, :split]).argmax(1)
        out[start:start + len(q), 1] = np.einsum("cd,ckd->ck", q[:, split:], near[:, :, split:]).argmax(1)
    return out


def _check_weight(sequence_weight: float) -> None:
    if not isinstance(sequence_weight, (int, float)) or isinstance(sequence_weight, bool) \
            or not 0 < sequence_weight < 1:
        raise ConfigError(f"sequence weight got {sequence_weight!r}; expected a number in (0, 1) (the k-mer "
                          f"profile's share of the similarity, default {DEFAULT_SEQUENCE_WEIGHT}), or 0 for none")


def sequence_evidence(embeddings) -> dict[str, Any] | None:
    """The ``{"weight", "k"}`` a set was made with by :func:`with_sequence_evidence`, or None."""
    return (getattr(embeddings, "config", None) or {}).get(CONFIG_KEY)


def with_sequence_evidence(embeddings, barcodes: Mapping[str, str] | pd.Series, sequence_weight: float,
                           k: int = DEFAULT_K):
    """A copy of an :class:`~clibd_toolkit.store.EmbeddingSet` whose ``dna`` vectors are joint vectors (module
    docstring) of the model's DNA embedding and the k-mer profile of each record's barcode.

    Args:
        embeddings: the set (needs ``dna`` vectors; records without one stay without).
        barcodes: record id -> barcode, for (at least) every record with a ``dna`` vector (a Series indexed by
            record id, or a dict).
        sequence_weight: the profile's share of the similarity, in (0, 1).

    Raises:
        ConfigError: no ``dna`` vectors, a set that already holds joint vectors, or a bad weight.
        DataError: records with a DNA embedding but no barcode among ``barcodes`` (the first few named), or a
            barcode without a k-mer profile.
    """
    from .store import EmbeddingSet

    _check_weight(sequence_weight)
    if "dna" not in embeddings.modalities:
        raise ConfigError(f"sequence evidence joins barcodes to DNA embeddings; this set has only "
                          f"{list(embeddings.modalities)}")
    if sequence_evidence(embeddings):
        raise ConfigError(f"this set already holds joint vectors ({sequence_evidence(embeddings)}); add sequence "
                          "evidence to the model's own embeddings once")
    lookup = barcodes if isinstance(barcodes, pd.Series) else pd.Series(dict(barcodes), dtype=object)
    lookup = pd.Series(lookup.to_numpy(dtype=object), index=lookup.index.astype(str))
    lookup = lookup[~lookup.index.duplicated(keep="first")]
    rows = np.flatnonzero(embeddings.has("dna"))
    ids = embeddings.metadata[RECORD_ID].to_numpy(dtype=object)[rows]
    found = lookup.reindex(pd.Index(ids.astype(str))).to_numpy(dtype=object)
    missing = [i for i, s in zip(ids, found) if not isinstance(s, str) or not s]
    if missing:
        raise DataError(f"{len(missing)} of {len(rows)} records with a DNA embedding have no barcode to take k-mers "
                        f"from (e.g. {', '.join(map(repr, missing[:3]))}); give the records file the embeddings were "
                        "made from (clibd identify --reference-barcodes FILE), or --sequence-weight 0")
    vectors = dict(embeddings.vectors)
    joint = np.full((len(embeddings), vectors["dna"].shape[1] + 4**k), np.nan, dtype=np.float32)
    joint[rows] = joint_vectors(vectors["dna"][rows], kmer_profiles(list(found), k, ids=list(ids)), sequence_weight)
    vectors["dna"] = joint
    config = {**embeddings.config, CONFIG_KEY: {"weight": float(sequence_weight), "k": int(k)}}
    return EmbeddingSet(embeddings.metadata.copy(), vectors, config)


def barcodes_of(records: pd.DataFrame) -> pd.Series:
    """record id -> barcode of a records table (rows without a barcode left out)."""
    from .schema import DNA

    if DNA not in records.columns:
        return pd.Series(dtype=object)
    table = records[[RECORD_ID, DNA]].dropna()
    return pd.Series(table[DNA].to_numpy(dtype=object), index=table[RECORD_ID].astype(str).to_numpy())
