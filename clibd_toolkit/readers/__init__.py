"""Readers: every supported data source -> the canonical records table (:mod:`clibd_toolkit.records`).

:func:`read_records` detects the format from the path (or takes ``format=``) and dispatches to one reader.
Each reader returns a :class:`~clibd_toolkit.records.LoadResult`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..errors import DataError, DataFileError
from ..records import LoadResult, OnError, Rejects, normalise_records

Reader = Callable[..., LoadResult]
_READERS: dict[str, Reader] = {}


def register_reader(name: str) -> Callable[[Reader], Reader]:
    def deco(fn: Reader) -> Reader:
        _READERS[name] = fn
        return fn

    return deco


def list_formats() -> list[str]:
    _load_all()
    return sorted(_READERS)


def _load_all() -> None:
    from . import bold, tabular  # noqa: F401  (registration side effect)


def detect_format(path: Path) -> str:
    """Guess the format of ``path`` from its name, and for tables from the header."""
    if path.is_dir():
        if (path / "records.csv").exists():
            return "table"
        raise DataError(
            f"cannot tell the format of folder {path}: expected a records.csv inside (simulator output / canonical "
            "folder); pass format= explicitly"
        )
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "table"
    if name.endswith((".tsv", ".tsv.gz", ".txt", ".txt.gz", ".csv", ".csv.gz")):
        from .bold import looks_like_bold

        return "bold" if looks_like_bold(path) else "table"
    raise DataError(f"cannot tell the format of {path} from its name; pass format= ({', '.join(list_formats())})")


def read_records(
    source: Any,
    *,
    format: str = "auto",
    on_error: OnError = "raise",
    **options: Any,
) -> LoadResult:
    """Read ``source`` into the canonical records table.

    Args:
        source: a path, or a DataFrame already using canonical column names.
        format: ``"auto"`` or one of :func:`list_formats`.
        on_error: ``"raise"`` stops at the first bad record; ``"skip"`` leaves bad records out and lists them in
            ``LoadResult.rejects`` (``n_read == len(records) + len(rejects)``).
        **options: reader-specific options (e.g. ``columns=`` mapping, ``image_root=``).
    """
    _load_all()
    if isinstance(source, pd.DataFrame):
        rejects = Rejects()
        records = normalise_records(source, on_error=on_error, rejects=rejects, source="DataFrame")
        return LoadResult(records, rejects, len(source), "DataFrame")
    path = Path(source).expanduser()
    if not path.exists():
        raise DataFileError(f"data source {path} does not exist", value=str(path))
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in _READERS:
        raise DataError(f"unknown format {fmt!r}; expected one of {list_formats()}")
    return _READERS[fmt](path, on_error=on_error, **options)
