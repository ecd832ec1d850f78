"""Generic tables (CSV, TSV, Parquet) with any column names, plus an optional image folder."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..errors import DataError, DataFileError
from ..records import LoadResult, OnError, Rejects, normalise_records
from ..schema import IMAGE
from . import register_reader


def _read_table(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        sep = "\t" if name.endswith((".tsv", ".tsv.gz", ".txt", ".txt.gz")) else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; expected a header row and records") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as a table ({exc})") from None


def resolve_image_path(value: str, root: Path, *, record_id: Any = None) -> str:
    """Resolve an image path from a data file against ``root``; paths may not escape ``root``."""
    candidate = Path(value)
    full = (candidate if candidate.is_absolute() else root / candidate).resolve()
    root_resolved = root.resolve()
    if os.path.commonpath([full, root_resolved]) != str(root_resolved):
        raise DataError(
            f"record {record_id}: image path {value!r} points outside the data root {root_resolved}; image paths "
            "in data files must stay inside it", record_id=record_id, value=value)
    return str(full)


@register_reader("table")
def read_table(
    path: Path,
    *,
    on_error: OnError = "raise",
    columns: Mapping[str, str] | None = None,
    image_root: str | Path | None = None,
    **_: Any,
) -> LoadResult:
    """Read a CSV/TSV/Parquet table (or a folder holding ``records.csv``).

    Args:
        columns: mapping from canonical name to the file's column name, e.g. ``{"record_id": "sample"}``.
        image_root: folder that relative image paths are resolved against (default: the table's folder).
    """
    folder = path if path.is_dir() else path.parent
    table_path = path / "records.csv" if path.is_dir() else path
    frame = _read_table(table_path)
    n_read = len(frame)
    if columns:
        missing = [src for src in columns.values() if src not in frame.columns]
        if missing:
            raise DataError(f"{table_path}: mapped columns {missing} are not in the file; it has {list(frame.columns)}")
        frame = frame.rename(columns={src: dst for dst, src in columns.items()})
    rejects = Rejects()
    root = Path(image_root) if image_root is not None else folder
    if IMAGE in frame.columns:
        resolved = []
        for i, (rid, value) in enumerate(zip(frame.get("record_id", [None] * n_read), frame[IMAGE].tolist())):
            if not isinstance(value, str) or not value.strip():
                resolved.append(value)
                continue
            resolved.append(resolve_image_path(value.strip(), root, record_id=rid))
        frame[IMAGE] = resolved
    records = normalise_records(frame, on_error=on_error, rejects=rejects, source=str(table_path))
    return LoadResult(records, rejects, n_read, str(table_path))
