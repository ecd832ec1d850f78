"""EmbeddingSet: the one file format for embeddings (ids, vectors per modality, taxonomy, config).

On disk it is a Parquet file (streamable by row group, readable by pandas/pyarrow/DuckDB, close to the
emb-explorer layout): one row per record with ``record_id``, the rank columns, ``bin_uri``, ``split``, and one
fixed-size float32 list column ``emb_<modality>`` per modality. File-level metadata holds the config that made
the embeddings, the record count and a SHA-256 of the vectors; :meth:`EmbeddingSet.load` verifies both, so a
truncated or tampered file is refused rather than half-used.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .errors import CheckpointError, DataError
from .schema import BIN, MODALITIES, RANKS, RECORD_ID, SPLIT

#: metadata columns carried next to the vectors
META_COLUMNS: tuple[str, ...] = (RECORD_ID, *RANKS, BIN, SPLIT)
FORMAT = "clibd_toolkit.embeddings/1"


@dataclass
class EmbeddingSet:
    """Embeddings of a set of records in the shared space.

    Attributes:
        metadata: DataFrame with :data:`META_COLUMNS` (one row per record, ``record_id`` unique).
        vectors: modality -> (n, d) float32, L2-normalised; rows of records that lack the modality are NaN.
        config: the model config (and run info) that produced the vectors.
    """

    metadata: pd.DataFrame
    vectors: dict[str, np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in META_COLUMNS if c not in self.metadata.columns]
        if missing:
            raise DataError(f"EmbeddingSet metadata lacks columns {missing}")
        self.metadata = self.metadata[list(META_COLUMNS)].reset_index(drop=True)
        n = len(self.metadata)
        for modality, arr in self.vectors.items():
            if modality not in MODALITIES:
                raise DataError(f"unknown modality {modality!r} in EmbeddingSet; expected one of {list(MODALITIES)}")
            if arr.ndim != 2 or arr.shape[0] != n:
                raise DataError(f"{modality} vectors have shape {arr.shape}; expected ({n}, d)")
            self.vectors[modality] = np.ascontiguousarray(arr, dtype=np.float32)

    # --- accessors ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.metadata)

    @property
    def record_ids(self) -> np.ndarray:
        return self.metadata[RECORD_ID].to_numpy(dtype=object)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.vectors)

    def has(self, modality: str) -> np.ndarray:
        """Boolean mask (n,) of records that have a vector for ``modality``."""
        if modality not in self.vectors:
            return np.zeros(len(self), dtype=bool)
        return ~np.isnan(self.vectors[modality]).any(axis=1)

    def subset(self, mask: np.ndarray | Iterable[int]) -> EmbeddingSet:
        """Rows selected by a boolean mask or integer positions."""
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(list(mask), dtype=np.int64)
        return EmbeddingSet(self.metadata.iloc[idx].reset_index(drop=True),
                            {m: v[idx] for m, v in self.vectors.items()}, dict(self.config))

    @staticmethod
    def concat(parts: list[EmbeddingSet]) -> EmbeddingSet:
        if not parts:
            raise DataError("cannot concatenate an empty list of EmbeddingSets")
        mods = parts[0].modalities
        for p in parts[1:]:
            if p.modalities != mods:
                raise DataError(f"EmbeddingSets have different modalities: {mods} vs {p.modalities}")
        meta = pd.concat([p.metadata for p in parts], ignore_index=True)
        return EmbeddingSet(meta, {m: np.concatenate([p.vectors[m] for p in parts]) for m in mods},
                            dict(parts[0].config))

    def checksum(self) -> str:
        digest = hashlib.sha256()
        for modality in self.modalities:
            digest.update(modality.encode())
            digest.update(np.ascontiguousarray(self.vectors[modality]).tobytes())
        digest.update("\x1f".join(map(str, self.metadata[RECORD_ID].tolist())).encode("utf-8"))
        return digest.hexdigest()

    # --- I/O -----------------------------------------------------------------------------------------------------
    def to_arrow(self):
        import pyarrow as pa

        columns = {c: pa.array([None if pd.isna(v) else str(v) for v in self.metadata[c]], type=pa.string())
                   for c in META_COLUMNS}
        for modality in self.modalities:
            arr = self.vectors[modality]
            flat = pa.array(arr.reshape(-1), type=pa.float32())
            columns[f"emb_{modality}"] = pa.FixedSizeListArray.from_arrays(flat, arr.shape[1])
        return pa.table(columns)

    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path`` (``.parquet``); returns the path."""
        import pyarrow.parquet as pq

        from .io import atomic_path

        path = Path(path)
        table = self.to_arrow()
        meta = {
            b"clibd_format": FORMAT.encode(),
            b"clibd_config": json.dumps(self.config, default=str).encode(),
            b"clibd_n_records": str(len(self)).encode(),
            b"clibd_sha256": self.checksum().encode(),
        }
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, row_group_size=65536)
        return path

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> EmbeddingSet:
        """Read an embedding file written by :meth:`save`, checking its record count and checksum."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"embedding file {path} does not exist")
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable embedding file ({exc})") from None
        meta = table.schema.metadata or {}
        if meta.get(b"clibd_format") != FORMAT.encode():
            raise CheckpointError(f"{path} is not a clibd_toolkit embedding file (no {FORMAT!r} marker)")
        metadata = pd.DataFrame({c: table.column(c).to_pylist() for c in META_COLUMNS}).astype(object)
        metadata = metadata.where(metadata.notna(), pd.NA)
        vectors = {}
        for modality in MODALITIES:
            name = f"emb_{modality}"
            if name in table.column_names:
                col = table.column(name).combine_chunks()
                dim = col.type.list_size
                vectors[modality] = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
        out = cls(metadata, vectors, json.loads(meta.get(b"clibd_config", b"{}")))
        if verify:
            expected_n = int(meta.get(b"clibd_n_records", b"-1"))
            if expected_n != len(out):
                raise CheckpointError(f"{path} holds {len(out)} records but its header says {expected_n}; the file "
                                      "is incomplete or corrupt, re-create it")
            if meta.get(b"clibd_sha256", b"").decode() != out.checksum():
                raise CheckpointError(f"{path} fails its checksum; the file is corrupt or was modified, re-create it")
        return out
