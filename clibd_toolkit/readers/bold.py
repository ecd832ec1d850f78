"""BOLD public TSV exports (the "combined" format of BOLD Systems downloads), plain or gzipped."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import DataError
from ..records import LoadResult, OnError, Rejects, normalise_records
from ..schema import BIN, DNA, RANKS, RECORD_ID
from . import register_reader

# BOLD column -> canonical column. `nucleotides` is BOLD's own name; the mirrored export renames it dna_barcode.
BOLD_COLUMNS = {"processid": RECORD_ID, "nucleotides": DNA, "dna_barcode": DNA, "bin_uri": BIN}
BOLD_RANK_COLUMNS = {"order": "order_name", "family": "family_name", "genus": "genus_name", "species": "species_name"}


def _open_text(path: Path):
    raw = gzip.open(path, "rt", encoding="utf-8-sig") if path.name.lower().endswith(".gz") else open(
        path, encoding="utf-8-sig")
    return raw


def looks_like_bold(path: Path) -> bool:
    try:
        with _open_text(path) as fh:
            header = fh.readline().rstrip("\r\n").split("\t")
    except (OSError, UnicodeDecodeError):
        return False
    return "processid" in header and ("nucleotides" in header or "dna_barcode" in header)


@register_reader("bold")
def read_bold(path: Path, *, on_error: OnError = "raise", marker: str | None = "COI-5P", **_: Any) -> LoadResult:
    """Read a BOLD TSV export. Rows of another marker than ``marker`` are rejected (listed, not dropped
    silently); ``marker=None`` keeps every marker."""
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8-sig",
                            quoting=3, compression="infer")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as a BOLD TSV export ({exc})") from None
    n_read = len(frame)
    rename = {k: v for k, v in BOLD_COLUMNS.items() if k in frame.columns}
    for rank, bold_name in BOLD_RANK_COLUMNS.items():
        if rank not in frame.columns and bold_name in frame.columns:
            rename[bold_name] = rank
    frame = frame.rename(columns=rename)
    if "nucleotides" in frame.columns and DNA in frame.columns and "nucleotides" not in rename:
        frame = frame.drop(columns=["nucleotides"])
    rejects = Rejects()
    marker_col = "marker" if "marker" in frame.columns else ("markercode" if "markercode" in frame.columns else None)
    if marker is not None and marker_col is not None:
        other = frame[marker_col].str.strip().ne(marker) & frame[marker_col].str.strip().ne("")
        if other.any():
            if on_error == "raise":
                row = int(other.to_numpy().nonzero()[0][0])
                raise DataError(
                    f"{path}: record {frame[RECORD_ID].iloc[row]} has marker {frame[marker_col].iloc[row]!r}, not "
                    f"{marker!r}; pass marker=None to keep every marker, or on_error='skip' to leave them out",
                    record_id=frame[RECORD_ID].iloc[row])
            for i in other.to_numpy().nonzero()[0]:
                rejects.add(row=int(i), record_id=frame[RECORD_ID].iloc[i], column=marker_col,
                            value=frame[marker_col].iloc[i], reason=f"marker is not {marker}")
            frame = frame.loc[~other]
    records = normalise_records(frame, on_error=on_error, rejects=rejects, source=str(path))
    return LoadResult(records, rejects, n_read, str(path))
