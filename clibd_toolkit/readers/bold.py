"""BOLD Systems TSV exports, plain or gzipped, in the three layouts users hold:

- the v4 "combined" export (``processid``, ``order_name`` ... ``species_name``, ``bin_uri``, ``markercode``,
  ``nucleotides``; missing values are a single space), as downloaded from boldsystems.org v4 and by the ``bold``
  R package;
- the BCDM / v5 data-package layout (``processid``, ``order`` ... ``species``, ``bin_uri``, ``marker_code``, ``nuc``);
- mirrors that rename the sequence column ``dna_barcode`` and the marker column ``marker`` (e.g. the reference set
  ``bold-insect-coi``).

Rows of a marker other than ``marker`` (default ``COI-5P``) are rejected with that reason (never dropped
silently); ``marker=None`` keeps every marker. All other columns are kept as extra metadata.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd

from ..errors import DataError
from ..schema import BIN, DNA, RANKS, RECORD_ID
from .base import ReadContext, register_reader

#: BOLD sequence columns by layout, in order of preference
SEQUENCE_COLUMNS = ("nucleotides", "nuc", "dna_barcode")
MARKER_COLUMNS = ("markercode", "marker_code", "marker")
#: v4 names of the rank columns (BCDM and mirrors use the plain rank names)
V4_RANK_COLUMNS = {rank: f"{rank}_name" for rank in RANKS}


def looks_like_bold(header: str) -> bool:
    """True if a TSV header line has BOLD's ``processid`` and one of its sequence columns."""
    cols = header.split("\t")
    return "processid" in cols and any(c in cols for c in SEQUENCE_COLUMNS)


def _rename_map(columns: list[str]) -> dict[str, str]:
    # BCDM has its own `record_id` column (e.g. "ABC123-19.COI-5P"); it is kept as `bold_record_id`
    rename: dict[str, str] = {RECORD_ID: "bold_record_id"} if RECORD_ID in columns else {}
    rename["processid"] = RECORD_ID
    seq = next((c for c in SEQUENCE_COLUMNS if c in columns), None)
    if seq is not None and seq != DNA:
        rename[seq] = DNA
    if "bin_uri" in columns:
        rename["bin_uri"] = BIN
    for rank, v4 in V4_RANK_COLUMNS.items():
        if rank not in columns and v4 in columns:
            rename[v4] = rank
    return rename


@register_reader("bold")
def read_bold_chunks(
    path: Path,
    ctx: ReadContext,
    *,
    chunk_size: int | None = None,
    marker: str | None = "COI-5P",
) -> Iterator[tuple[pd.DataFrame, list[int]]]:
    """Chunk source for BOLD TSV exports.

    Args:
        marker: keep only rows of this marker code; ``None`` keeps every marker.

    Raises:
        DataError: the file is not a BOLD TSV (no ``processid`` or sequence column), cannot be parsed, or (with
            ``on_error="raise"``) holds a record of another marker.
    """
    try:
        reader = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8-sig", quoting=3,
                             compression="infer", chunksize=chunk_size or 10**12, encoding_errors="replace")
        chunks = iter(reader)
        first = next(chunks, None)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; expected a BOLD TSV export with a header row") from None
    except (pd.errors.ParserError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as a BOLD TSV export ({exc})") from None
    if first is None:
        return
    columns = list(first.columns)
    if "processid" not in columns or not any(c in columns for c in SEQUENCE_COLUMNS):
        raise DataError(
            f"{path}: not a BOLD export; expected columns 'processid' and one of {list(SEQUENCE_COLUMNS)}, got "
            f"{columns[:12]}{' ...' if len(columns) > 12 else ''}; read other tables with format='table'")
    rename = _rename_map(columns)
    marker_col = next((c for c in MARKER_COLUMNS if c in columns), None)
    start = 0
    frame: pd.DataFrame | None = first
    while frame is not None:
        rows = list(range(start + 1, start + len(frame) + 1))
        start += len(frame)
        ctx.n_read += len(frame)
        frame = frame.rename(columns=rename)
        drop = [c for c in SEQUENCE_COLUMNS if c in frame.columns and c != DNA]
        frame = frame.drop(columns=drop)
        if marker is not None and marker_col is not None:
            codes = frame[marker_col].str.strip()
            other = (codes.ne(marker) & codes.ne("")).to_numpy()
            for i in other.nonzero()[0]:
                rid = frame[RECORD_ID].iat[i]
                ctx.fail(DataError(
                    f"{path}: record {rid} has marker {frame[marker_col].iat[i]!r}, not {marker!r}; pass "
                    "marker=None to keep every marker, or on_error='skip' to leave them out", record_id=rid,
                    value=frame[marker_col].iat[i]), row=rows[i], record_id=rid, column=marker_col,
                    value=frame[marker_col].iat[i], kind="marker")
            if other.any():
                frame = frame.loc[~other]
                rows = [r for r, o in zip(rows, other) if not o]
        yield frame, rows
        try:
            frame = next(chunks, None)
        except (pd.errors.ParserError, ValueError) as exc:
            raise DataError(f"{path}: cannot be parsed after data row {start} ({exc})") from None
