"""EmbeddingSet: the one file format for embeddings (ids, vectors per modality, taxonomy, config).

On disk it is a Parquet file (streamable by row group, readable by pandas/pyarrow/DuckDB, close to the
emb-explorer layout): one row per record with ``record_id``, the rank columns, ``bin_uri``, ``split``, and one
fixed-size float32 list column ``emb_<modality>`` per modality. File-level metadata holds the config that made
the embeddings, the record count and a SHA-256 of the vectors; :meth:`EmbeddingSet.load` verifies both, so a
truncated or tampered file is refused rather than half-used.

Files of any size are written by :class:`EmbeddingWriter` (row group by row group; count and checksum computed as
the rows pass, written into the footer at the end) and read back by :func:`iter_embeddings` and checked by
:func:`verify_embedding_file` one batch at a time. Format 2 (current) differs from format 1 only in how the
checksum is formed (per-modality digests, so that it can be computed while streaming); format-1 files still load.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd

from .errors import CheckpointError, DataError
from .schema import BIN, MODALITIES, RANKS, RECORD_ID, SPLIT

#: metadata columns carried next to the vectors
META_COLUMNS: tuple[str, ...] = (RECORD_ID, *RANKS, BIN, SPLIT)
FORMAT = "clibd_toolkit.embeddings/2"


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
        """SHA-256 fingerprint of the vectors and record ids (format 2, computable while streaming).

        ``sha256(name_1 + sha256(vectors_1) + ... + sha256(ids joined by U+001F))`` over the modalities in
        :data:`~clibd_toolkit.schema.MODALITIES` order, each vector block as C-order float32 bytes, rows in file order;
        :class:`EmbeddingWriter` computes the same value chunk by chunk.
        """
        hasher = _Fingerprint(self.modalities)
        hasher.update(self)
        return hasher.hexdigest()

    def _checksum_v1(self) -> str:
        """The checksum of format-1 files (whole modality blocks hashed one after the other)."""
        digest = hashlib.sha256()
        for modality in self.modalities:
            digest.update(modality.encode())
            digest.update(np.ascontiguousarray(self.vectors[modality]).tobytes())
        digest.update("\x1f".join(map(str, self.metadata[RECORD_ID].tolist())).encode("utf-8"))
        return digest.hexdigest()

    # --- I/O -----------------------------------------------------------------------------------------------------
    def to_arrow(self):
        """This set as a pyarrow Table: string metadata columns, one fixed-size float32 list column per modality."""
        import pyarrow as pa

        columns = {c: _compact(pa.array(self.metadata[c].astype("string"), type=pa.string(), from_pandas=True))
                   for c in META_COLUMNS}
        for modality in self.modalities:
            arr = self.vectors[modality]
            flat = pa.array(arr.reshape(-1), type=pa.float32())
            columns[f"emb_{modality}"] = pa.FixedSizeListArray.from_arrays(flat, arr.shape[1])
        return pa.table(columns)

    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path`` (``.parquet``); returns the path."""
        with EmbeddingWriter(path, {m: v.shape[1] for m, v in self.vectors.items()}, self.config) as writer:
            writer.write(self)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> EmbeddingSet:
        """Read an embedding file written by :meth:`save` or :class:`EmbeddingWriter` (formats 1 and 2).

        Args:
            path: the ``.parquet`` file.
            verify: check the record count and checksum in the file's header against its content.

        Raises:
            CheckpointError: missing, unreadable, not an embedding file, incomplete or corrupt.
        """
        import pyarrow.parquet as pq

        path = Path(path)
        header = read_header(path)
        table = _guard(path, lambda: pq.read_table(path))
        out = _from_arrow(table, header["config"])
        if verify:
            if header["n_records"] != len(out):
                raise CheckpointError(f"{path} holds {len(out)} records but its header says {header['n_records']}; "
                                      "the file is incomplete or corrupt, re-create it")
            actual = out._checksum_v1() if header["format"] == FORMAT_V1 else out.checksum()
            if header["sha256"] != actual:
                raise CheckpointError(f"{path} fails its checksum; the file is corrupt or was modified, re-create it")
        return out


#: the writer copies its small incoming tables into one every this many records
_COMPACT_ROWS = 8192


def _compact(array):
    """``array`` in buffers of its own size: a slice of an Arrow-backed pandas column references the whole column
    it was cut from (zero-copy), so a writer buffering many small slices would pin every reader chunk."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if array.get_total_buffer_size() <= 2 * array.nbytes + 1024:
        return array
    return pc.take(array, pa.array(np.arange(len(array), dtype=np.int64)))


# --- reading ---------------------------------------------------------------------------------------------------

FORMAT_V1 = "clibd_toolkit.embeddings/1"
READABLE_FORMATS: tuple[str, ...] = (FORMAT_V1, FORMAT)


def _guard(path: Path, read):
    import pyarrow as pa

    try:
        return read()
    except (pa.ArrowInvalid, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable embedding file ({exc})") from None


def read_header(path: str | Path) -> dict[str, Any]:
    """The header of an embedding file without reading its vectors.

    Returns:
        ``{"format", "config", "n_records", "sha256", "modalities", "dims"}``.

    Raises:
        CheckpointError: missing, unreadable or not an embedding file.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"embedding file {path} does not exist")
    pf = _guard(path, lambda: pq.ParquetFile(path))
    meta = pf.metadata.metadata or {}
    fmt = meta.get(b"clibd_format", b"").decode()
    if fmt not in READABLE_FORMATS:
        raise CheckpointError(f"{path} is not a clibd_toolkit embedding file (format marker {fmt or None!r}; expected "
                              f"one of {list(READABLE_FORMATS)})")
    schema = pf.schema_arrow
    _check_schema(path, schema)
    mods = tuple(m for m in MODALITIES if f"emb_{m}" in schema.names)
    try:
        config = json.loads(meta.get(b"clibd_config", b"{}"))
        n_records = int(meta.get(b"clibd_n_records", b"-1"))
        sha = meta.get(b"clibd_sha256", b"").decode()
        if not isinstance(config, dict):
            raise ValueError("the config is not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: its header is damaged ({exc}); the file was modified, re-create it") from None
    return {"format": fmt, "config": config, "n_records": n_records, "sha256": sha,
            "modalities": mods, "dims": {m: schema.field(f"emb_{m}").type.list_size for m in mods},
            "rows": pf.metadata.num_rows}


def _check_schema(path: Path, schema) -> None:
    """CheckpointError unless every column the reader relies on has the type the writer gives it: the metadata
    columns text (or all-null), each ``emb_<modality>`` a fixed-size list of floats."""
    import pyarrow as pa

    for name in META_COLUMNS:
        if name not in schema.names:
            raise CheckpointError(f"{path} has no {name!r} column; it was modified, re-create it")
        kind = schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
            raise CheckpointError(f"{path}: column {name!r} is {kind}, expected text; the file was modified, "
                                  "re-create it")
    for modality in MODALITIES:
        name = f"emb_{modality}"
        if name not in schema.names:
            continue
        kind = schema.field(name).type
        if not (pa.types.is_fixed_size_list(kind) and kind.list_size > 0 and pa.types.is_floating(kind.value_type)):
            raise CheckpointError(f"{path}: column {name!r} is {kind}, expected a fixed-size list of floats (one "
                                  "vector per record); the file was modified, re-create it")


def _from_arrow(table, config: dict[str, Any]) -> EmbeddingSet:
    metadata = pd.DataFrame({c: table.column(c).to_pylist() for c in META_COLUMNS}).astype(object)
    metadata = metadata.where(metadata.notna(), pd.NA)
    vectors = {}
    for modality in MODALITIES:
        name = f"emb_{modality}"
        if name in table.column_names:
            col = table.column(name).combine_chunks()
            if col.null_count:
                raise CheckpointError(f"{name} holds {col.null_count} missing vector(s) where every record needs one; "
                                      "the file was modified, re-create it")
            dim = col.type.list_size
            vectors[modality] = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
    return EmbeddingSet(metadata, vectors, dict(config))


def iter_embeddings(path: str | Path, batch_size: int = 65536, *,
                    modalities: Iterable[str] | None = None) -> Iterator[EmbeddingSet]:
    """Stream an embedding file as EmbeddingSets of at most ``batch_size`` records (memory: one batch).

    Args:
        path: an embedding file.
        batch_size: records per yielded set.
        modalities: read only these vector columns (default: all).

    Raises:
        CheckpointError: missing, unreadable or not an embedding file.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    header = read_header(path)
    mods = header["modalities"] if modalities is None else tuple(modalities)
    unknown = [m for m in mods if m not in header["modalities"]]
    if unknown:
        raise CheckpointError(f"{path} has no {unknown} vectors; it holds {list(header['modalities'])}")
    columns = [*META_COLUMNS, *(f"emb_{m}" for m in mods)]
    pf = _guard(path, lambda: pq.ParquetFile(path))
    import pyarrow as pa

    for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
        yield _from_arrow(pa.Table.from_batches([batch]), header["config"])


def verify_embedding_file(path: str | Path, batch_size: int = 65536) -> int:
    """Check an embedding file's record count and checksum, streaming (format 2) — memory stays one batch.

    Returns:
        The number of records.

    Raises:
        CheckpointError: missing, unreadable, incomplete or corrupt.
    """
    path = Path(path)
    header = read_header(path)
    if header["format"] == FORMAT_V1:  # old files: whole-file checksum
        return len(EmbeddingSet.load(path))
    hasher = _Fingerprint(header["modalities"])
    n = 0
    for part in iter_embeddings(path, batch_size):
        hasher.update(part)
        n += len(part)
    if n != header["n_records"]:
        raise CheckpointError(f"{path} holds {n} records but its header says {header['n_records']}; the file is "
                              "incomplete or corrupt, re-create it")
    if hasher.hexdigest() != header["sha256"]:
        raise CheckpointError(f"{path} fails its checksum; the file is corrupt or was modified, re-create it")
    return n


# --- streaming writer ------------------------------------------------------------------------------------------


class _Fingerprint:
    """Incremental form of :meth:`EmbeddingSet.checksum`: one hasher per modality plus one for the ids."""

    def __init__(self, modalities: Iterable[str]):
        self.modalities = tuple(m for m in MODALITIES if m in tuple(modalities))
        self._vectors = {m: hashlib.sha256() for m in self.modalities}
        self._ids = hashlib.sha256()
        self._first = True

    def update(self, part: EmbeddingSet) -> None:
        for m in self.modalities:
            self._vectors[m].update(np.ascontiguousarray(part.vectors[m], dtype=np.float32).tobytes())
        ids = "\x1f".join(map(str, part.metadata[RECORD_ID].tolist()))
        if len(part):
            self._ids.update((ids if self._first else "\x1f" + ids).encode("utf-8"))
            self._first = False

    def hexdigest(self) -> str:
        digest = hashlib.sha256()
        for m in self.modalities:
            digest.update(m.encode())
            digest.update(self._vectors[m].digest())
        digest.update(self._ids.digest())
        return digest.hexdigest()


class EmbeddingWriter:
    """Write an embedding file chunk by chunk, never holding more than one row group of vectors.

    Rows are appended as Parquet row groups (pyarrow ``ParquetWriter``); the record count and the checksum are
    computed as the chunks pass and written into the file footer at :meth:`close`. The file is written under a
    temporary name and renamed into place by :meth:`close`, so ``path`` only ever holds a complete, verifiable
    file; a writer left by an exception (or a killed process) leaves nothing at ``path``.

    Args:
        path: the ``.parquet`` file to create (replaced if it exists).
        dims: modality -> vector dimension, the modalities every chunk must carry.
        config: JSON-serialisable provenance (model config, run, data) stored in the header.
        row_group_bytes: target size of one row group of vectors (bounds the writer's buffer).

    Example:
        >>> with EmbeddingWriter("emb.parquet", {"dna": 256}, config) as writer:  # doctest: +SKIP
        ...     for part in iter_embedding_chunks(model, stream):
        ...         writer.write(part)
    """

    def __init__(self, path: str | Path, dims: Mapping[str, int], config: Mapping[str, Any] | None = None, *,
                 row_group_bytes: int = 32 << 20):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .io import atomic_path

        unknown = [m for m in dims if m not in MODALITIES]
        if unknown or not dims:
            raise DataError(f"EmbeddingWriter dims {dict(dims)}: expected at least one of {list(MODALITIES)}")
        self.path = Path(path)
        self.dims = {m: int(dims[m]) for m in MODALITIES if m in dims}
        self.config = dict(config or {})
        width = 4 * sum(self.dims.values()) + 64
        self.row_group_rows = max(1024, row_group_bytes // width)
        fields = [pa.field(c, pa.string()) for c in META_COLUMNS]
        fields += [pa.field(f"emb_{m}", pa.list_(pa.float32(), d)) for m, d in self.dims.items()]
        schema = pa.schema(fields, metadata={b"clibd_format": FORMAT.encode(),
                                             b"clibd_config": json.dumps(self.config, default=str).encode()})
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        self._writer = pq.ParquetWriter(self._tmp, schema)
        self._schema = schema
        self._buffer: list = []  # compacted tables of about _COMPACT_ROWS rows
        self._pending: list = []  # the small tables of the latest chunks
        self._n_pending = 0
        self._buffered = 0
        self._hasher = _Fingerprint(self.dims)
        self.n_records = 0
        self.closed = False

    def write(self, part: EmbeddingSet) -> None:
        """Append the records of ``part`` (same modalities and dimensions as ``dims``)."""
        if self.closed:
            raise DataError(f"EmbeddingWriter for {self.path} is closed")
        dims = {m: v.shape[1] for m, v in part.vectors.items()}
        if dims != self.dims:
            raise DataError(f"chunk has vectors {dims}; this writer expects {self.dims}")
        if not len(part):
            return
        self._hasher.update(part)
        self._pending.append(part.to_arrow().cast(self._schema.remove_metadata()))
        self._n_pending += len(part)
        self._buffered += len(part)
        if self._n_pending >= _COMPACT_ROWS:
            self._compact_pending()
        self.n_records += len(part)
        if self._buffered >= self.row_group_rows:
            self._flush(final=False)

    def _flush(self, final: bool = True) -> None:
        """Write whole row groups of ``row_group_rows`` records (and, when ``final``, the remainder)."""
        import pyarrow as pa

        if not self._buffered:
            return
        self._compact_pending()
        table = pa.concat_tables(self._buffer)
        n_full = len(table) if final else len(table) - len(table) % self.row_group_rows
        if n_full:
            self._writer.write_table(table.slice(0, n_full), row_group_size=self.row_group_rows)
        rest = table.slice(n_full)
        self._buffer, self._buffered = ([rest], len(rest)) if len(rest) else ([], 0)

    def _compact_pending(self) -> None:
        """Copy the small pending tables into one: thousands of tiny long-lived buffers (a few per batch of a few
        hundred records) would each pin an allocator page, and the process's memory would grow with the buffer's
        record count many times faster than the data itself."""
        import pyarrow as pa

        if self._pending:
            self._buffer.append(pa.concat_tables(self._pending).combine_chunks())
            self._pending, self._n_pending = [], 0

    def checksum(self) -> str:
        """The checksum of the records written so far."""
        return self._hasher.hexdigest()

    def close(self) -> Path:
        """Flush, write the record count and checksum into the footer and move the file into place."""
        if self.closed:
            return self.path
        self._flush()
        self._writer.add_key_value_metadata({b"clibd_n_records": str(self.n_records).encode(),
                                             b"clibd_sha256": self.checksum().encode()})
        self._writer.close()
        self.closed = True
        self._stack.close()  # fsync + atomic rename
        return self.path

    def abort(self) -> None:
        """Discard everything written (the temporary file is deleted; ``path`` is untouched)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()
        self._stack.pop_all()

    def __enter__(self) -> EmbeddingWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
