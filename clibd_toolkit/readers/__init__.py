"""Readers: every supported data source -> the canonical records table (:mod:`clibd_toolkit.records`).

Two entry points share one code path:

- :func:`read_records` loads a whole source into a :class:`~clibd_toolkit.records.LoadResult`;
- :func:`iter_record_chunks` streams it as canonical DataFrames of at most ``chunk_size`` records, so a file of
  millions of records never sits in memory at once (table, BOLD, FASTA and CLIBD HDF5 read lazily; BIOSCAN
  metadata is loaded by ``bioscan-dataset`` in one piece and then sliced).

Each format registers a *chunk source* with :func:`register_reader`: a generator that reads the file, counts what it
reads, reports records it cannot parse through a :class:`ReadContext`, and yields DataFrames with canonical column
names. The driver then normalises each chunk (:func:`~clibd_toolkit.records.normalise_records`), checks that record
ids are unique across chunks and (by default) that lineages are consistent, and keeps the books:
``n_read == records + rejects`` always.

Formats: ``bold`` (BOLD TSV exports), ``table`` (CSV/TSV/Parquet with any column names, or a folder holding
``records.csv``), ``fasta``, ``bioscan5m``, ``bioscan1m``, ``clibd_hdf5``; see :func:`list_formats`.
"""
from __future__ import annotations

import difflib
import inspect
import logging
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import pandas as pd

from ..errors import DataError, DataFileError
from ..lineage import LineageChecker
from ..records import LoadResult, OnError, Rejects, empty_records, normalise_records
from ..schema import RECORD_ID
from .base import (  # noqa: F401  (re-exported: the readers' shared helpers)
    _FASTA_SUFFIXES,
    _HDF5_SUFFIXES,
    _TABLE_SUFFIXES,
    READERS,
    ChunkSource,
    ReadContext,
    first_line,
    hdf5_files,
    open_text,
    register_reader,
)

logger = logging.getLogger(__name__)

Lineage = Literal["check", "ignore"]
#: default number of records per chunk for :func:`iter_record_chunks`
DEFAULT_CHUNK_SIZE = 50_000
_ROW = "__source_row__"  # internal column carrying source row numbers through a chunk


# --- the read context -------------------------------------------------------------------------------------------


def _load_all() -> None:
    from . import bioscan, bold, clibd_hdf5, fasta, tabular  # noqa: F401  (registration side effect)


def list_formats() -> list[str]:
    """Names accepted by ``format=``."""
    _load_all()
    return sorted(READERS)


def reader_options(fmt: str) -> list[str]:
    """The options (keyword arguments) the reader of ``fmt`` accepts."""
    _load_all()
    params = inspect.signature(READERS[fmt]).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "chunk_size"]


# --- format detection -------------------------------------------------------------------------------------------

def detect_format(path: Path) -> str:
    """Guess the format of ``path`` from its name, its first line, or (for folders) what it contains.

    Raises:
        DataError: when the format cannot be told; the message lists the formats to pass as ``format=``.
    """
    path = Path(path)
    if path.is_dir():
        from .bioscan import find_bioscan_metadata

        if (path / "records.csv").exists():
            return "table"
        for fmt in ("bioscan5m", "bioscan1m"):
            if find_bioscan_metadata(path, fmt) is not None:
                return fmt
        tables = [p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(
            tuple(s + z for s in (*_TABLE_SUFFIXES, ".parquet") for z in ("", ".gz")))]
        if len(tables) == 1:
            return "table"
        if not tables and len(hdf5_files(path)) == 1:
            return "clibd_hdf5"
        raise DataError(
            f"cannot tell the format of folder {path}: expected records.csv (simulator output / canonical folder), a "
            "BIOSCAN-5M/1M download, or exactly one table or HDF5 file inside; pass format= "
            f"({', '.join(list_formats())})"
        )
    name = path.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(_HDF5_SUFFIXES):
        return "clibd_hdf5"
    if base.endswith((".parquet", ".pq")):
        return "table"
    if base.endswith(_FASTA_SUFFIXES):
        return "fasta"
    header = first_line(path)
    if header.startswith(">"):
        return "fasta"
    if base.endswith(_TABLE_SUFFIXES) or header:
        from .bioscan import sniff_bioscan
        from .bold import looks_like_bold

        fmt = sniff_bioscan(header)
        if fmt is not None:
            return fmt
        if looks_like_bold(header):
            return "bold"
        if base.endswith(_TABLE_SUFFIXES):
            return "table"
    raise DataError(f"cannot tell the format of {path} from its name or first line; pass format= "
                    f"({', '.join(list_formats())})")


# --- the driver -----------------------------------------------------------------------------------------------


class RecordStream:
    """An iterator over canonical record chunks, keeping the books of the read.

    Attributes:
        source: what is read (a path or ``"DataFrame"``).
        format: the format name used.
        rejects: records left out (``on_error="skip"``), filled while iterating.
        n_read: records read so far; after the last chunk ``n_read == n_loaded + len(rejects)``.
        n_loaded: records yielded so far.
    """

    def __init__(self, chunks: Iterator[tuple[pd.DataFrame, list[int]]], ctx: ReadContext, *, fmt: str,
                 lineage: Lineage, require_records: bool) -> None:
        self._chunks = chunks
        self._ctx = ctx
        self.format = fmt
        self.lineage = lineage
        self.require_records = require_records
        self.n_loaded = 0
        self._seen: set[str] = set()
        self._checker = LineageChecker() if lineage == "check" else None
        self._iter = self._run()

    @property
    def source(self) -> str:
        return self._ctx.source

    @property
    def rejects(self) -> Rejects:
        return self._ctx.rejects

    @property
    def n_read(self) -> int:
        return self._ctx.n_read

    def __iter__(self) -> RecordStream:
        return self

    def __next__(self) -> pd.DataFrame:
        return next(self._iter)

    def _run(self) -> Iterator[pd.DataFrame]:
        ctx = self._ctx
        for frame, rows in self._chunks:
            # carry each row's source number through normalisation, for the messages of the checks below
            frame = frame.assign(**{_ROW: rows})
            records = normalise_records(frame, on_error=ctx.on_error, rejects=ctx.rejects, source=ctx.source,
                                        row_numbers=rows)
            records = self._drop_cross_chunk_duplicates(records)
            if self._checker is not None and len(records):
                bad = self._checker.check(records)
                if bad:
                    for i, exc in bad:
                        ctx.fail(exc, row=int(records[_ROW].iat[i]), record_id=records[RECORD_ID].iat[i],
                                 column="lineage", value=exc.value, kind="lineage_conflict")
                    records = records.drop(index=[i for i, _ in bad]).reset_index(drop=True)
            records = records.drop(columns=[_ROW])
            self.n_loaded += len(records)
            if len(records):
                yield records
        if self.n_read != self.n_loaded + len(ctx.rejects):  # an internal invariant, not a user error
            raise RuntimeError(f"record accounting broke for {ctx.source}: read {self.n_read}, loaded "
                               f"{self.n_loaded}, rejected {len(ctx.rejects)}")
        if self.require_records and self.n_read == 0:
            raise DataError(f"{ctx.source} holds no records (empty file, or a header without rows); nothing to load")

    def _drop_cross_chunk_duplicates(self, records: pd.DataFrame) -> pd.DataFrame:
        ids = records[RECORD_ID].tolist()
        seen = self._seen
        # a set lookup per id (Series.isin(set) on Arrow strings converts the whole set for every chunk)
        dup = np.fromiter((rid in seen for rid in ids), dtype=bool, count=len(ids))
        if dup.any():
            for i in dup.nonzero()[0]:
                rid = ids[i]
                row = int(records[_ROW].iat[i])
                self._ctx.fail(DataError(
                    f"row {row} in {self._ctx.source}: duplicate {RECORD_ID} {rid!r} (already read in an earlier "
                    "chunk); record ids must be unique", record_id=rid, value=rid), row=row, record_id=rid,
                    column=RECORD_ID, value=rid, kind="duplicate_id")
            records = records.loc[~dup].reset_index(drop=True)
        seen.update(records[RECORD_ID].tolist())
        return records


def _check_options(fmt: str, options: dict[str, Any]) -> None:
    allowed = reader_options(fmt)
    for key in options:
        if key not in allowed:
            match = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
            hint = f"; did you mean {match[0]!r}?" if match else ""
            raise DataError(f"unknown option {key!r} for format {fmt!r}{hint} (options: {', '.join(allowed) or 'none'})")


def _frame_chunks(frame: pd.DataFrame, ctx: ReadContext, chunk_size: int | None):
    size = len(frame) if chunk_size is None else chunk_size
    for start in range(0, len(frame), max(size, 1)):
        part = frame.iloc[start:start + size]
        ctx.n_read += len(part)
        yield part, list(range(start + 1, start + len(part) + 1))


def iter_record_chunks(
    source: Any,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    *,
    format: str = "auto",
    on_error: OnError = "raise",
    lineage: Lineage = "check",
    **options: Any,
) -> RecordStream:
    """Stream ``source`` as canonical records tables of at most ``chunk_size`` records.

    Args:
        source: a path (file or folder) or a DataFrame using canonical column names.
        chunk_size: records per chunk; ``None`` reads everything as one chunk.
        format: ``"auto"`` (see :func:`detect_format`) or one of :func:`list_formats`.
        on_error: ``"raise"`` stops at the first bad record; ``"skip"`` leaves bad records out and lists each in
            ``stream.rejects`` with its reason.
        lineage: ``"check"`` (default) treats a name placed under two parents (a genus under two families, a
            species under two genera, a family under two orders) as a bad record — the later one; ``"ignore"``
            keeps such records.
        **options: reader options, e.g. ``columns={"record_id": "Sample ID"}`` and ``image_root=`` for tables,
            ``marker=`` for BOLD and FASTA; see each reader. Unknown options are an error.

    Returns:
        A :class:`RecordStream`: iterate it for DataFrames; ``stream.rejects`` and ``stream.n_read`` fill as it
        goes. Record ids are checked for uniqueness across chunks (a set of the ids read so far is kept).

    Raises:
        DataFileError: the source does not exist.
        DataError: unknown format or option, an unreadable file, or (``on_error="raise"``) the first bad record.
    """
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if lineage not in ("check", "ignore"):
        raise DataError(f"lineage must be 'check' or 'ignore', got {lineage!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise DataError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    _load_all()
    if isinstance(source, pd.DataFrame):
        if options:
            raise DataError(f"options {sorted(options)} do not apply to a DataFrame source (its columns must already "
                            "carry canonical names)")
        ctx = ReadContext("DataFrame", on_error)
        return RecordStream(_frame_chunks(source, ctx, chunk_size), ctx, fmt="dataframe", lineage=lineage,
                            require_records=False)
    if isinstance(source, (bytes, bytearray)) or not isinstance(source, (str, Path)):
        raise DataError(f"data source must be a path or a DataFrame, got {type(source).__name__}")
    path = Path(source).expanduser()
    if not path.exists():
        raise DataFileError(f"data source {path} does not exist", value=str(path))
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in READERS:
        match = difflib.get_close_matches(str(fmt), list(READERS), n=1)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        raise DataError(f"unknown format {fmt!r}{hint}; expected one of {list_formats()}")
    _check_options(fmt, options)
    ctx = ReadContext(str(path), on_error)
    chunks = READERS[fmt](path, ctx, chunk_size=chunk_size, **options)
    logger.debug("reading %s as %s", path, fmt)
    return RecordStream(chunks, ctx, fmt=fmt, lineage=lineage, require_records=True)


def read_records(
    source: Any,
    *,
    format: str = "auto",
    on_error: OnError = "raise",
    lineage: Lineage = "check",
    **options: Any,
) -> LoadResult:
    """Read ``source`` into the canonical records table.

    Args:
        source: a path (BOLD TSV, CSV/TSV/Parquet, FASTA, CLIBD HDF5, BIOSCAN-5M/1M folder or metadata file, a folder
            with ``records.csv`` such as simulator output) or a DataFrame already using canonical column names.
        format: ``"auto"`` or one of :func:`list_formats`.
        on_error: ``"raise"`` stops at the first bad record; ``"skip"`` leaves bad records out and lists them in
            ``LoadResult.rejects`` (``n_read == len(records) + len(rejects)``; save them with
            ``result.rejects.save("rejects.csv")``).
        lineage: ``"check"`` or ``"ignore"`` lineage conflicts (see :func:`iter_record_chunks`).
        **options: reader-specific options (e.g. ``columns=`` mapping, ``image_root=``).

    Returns:
        A :class:`~clibd_toolkit.records.LoadResult`.

    Raises:
        DataFileError: the source does not exist.
        DataError: an unknown format or option, an unreadable file, or (``on_error="raise"``) the first bad record.

    Example:
        >>> result = read_records("bold_export.tsv", on_error="skip")  # doctest: +SKIP
        >>> result.rejects.save("rejects.csv")  # doctest: +SKIP
    """
    stream = iter_record_chunks(source, chunk_size=None, format=format, on_error=on_error, lineage=lineage,
                                **options)
    frames = list(stream)
    if not frames:
        records = empty_records()
    elif len(frames) == 1:
        records = frames[0]
    else:
        records = pd.concat(frames, ignore_index=True)
    return LoadResult(records, stream.rejects, stream.n_read, stream.source)


def load_records(source: Any, **options: Any) -> pd.DataFrame:
    """Load any supported data source into the canonical records table (see :mod:`clibd_toolkit.records`).

    ``source`` is a path (BOLD TSV, CSV/TSV/Parquet, FASTA, CLIBD HDF5, BIOSCAN folder, simulator output folder)
    or a DataFrame. Raises :class:`DataError` on the first bad record; use :func:`read_records` with
    ``on_error="skip"`` to skip and report them instead.
    """
    return read_records(source, **options).records
