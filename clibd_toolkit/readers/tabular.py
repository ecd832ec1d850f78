"""Generic tables (CSV, TSV, Parquet) with any column names, plus an optional image folder.

- The delimiter of a text table is detected from its header line (comma, tab or semicolon, whichever splits it into
  the most columns; the file extension breaks ties), or given with ``sep=``. A header that stays one column while
  holding another delimiter is reported as a wrong delimiter.
- Columns are mapped to canonical names with ``columns={"record_id": "Sample ID", "image": "photo", ...}``
  (canonical name -> the file's column). Without a mapping, a missing canonical column is taken from one
  well-known alias when exactly one is present (:data:`COLUMN_ALIASES`, e.g. ``processid`` -> ``record_id``,
  ``nucleotides`` -> ``dna_barcode``); the alias used is logged.
- Image paths are resolved against ``image_root`` (default: the table's folder); a path that leaves the root
  (``../``, absolute paths elsewhere, a symbolic link pointing out) rejects its record, and so does an
  ``hdf5://<file>#<group>/<row>`` reference whose file lies outside it (:func:`resolve_image_path`). Strings with
  another registered image-source prefix are kept as they are.
- A folder holding ``records.csv`` (simulator output, canonical folders) or exactly one table file is read as that
  table, with the folder as image root.
"""
from __future__ import annotations

import difflib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

import pandas as pd

from ..errors import DataError
from ..schema import BIN, CANONICAL_COLUMNS, DNA, IMAGE, RECORD_ID
from .base import ReadContext, first_line, register_reader

logger = logging.getLogger(__name__)

#: canonical column -> names it is recognised under when the canonical column is absent (lower-case compare)
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    RECORD_ID: ("processid", "process_id", "sampleid", "sample_id", "id", "specimen_id"),
    DNA: ("nucleotides", "nuc", "nucraw", "dna", "barcode", "sequence", "dna_sequence"),
    IMAGE: ("image_path", "image_file", "filename", "file_name", "photo"),
    BIN: ("bin", "dna_bin", "uri"),
}
_DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon"}


def _suffix_sep(name: str) -> str:
    base = name[:-3] if name.endswith(".gz") else name
    return "\t" if base.endswith((".tsv", ".tab", ".txt")) else ","


def _choose_sep(path: Path, sep: str | None) -> str:
    header = first_line(path)
    counts = {d: header.count(d) for d in _DELIMITERS}
    if sep is None:
        best = max(counts.values())
        if best == 0:
            return _suffix_sep(path.name.lower())
        preferred = _suffix_sep(path.name.lower())
        return preferred if counts[preferred] == best else max(counts, key=lambda d: counts[d])
    if counts.get(sep, header.count(sep)) == 0:
        others = [name for d, name in _DELIMITERS.items() if d != sep and counts[d] > 0]
        if others:
            raise DataError(
                f"{path}: read with sep={sep!r}, the header is a single column {header[:60]!r}, but it contains "
                f"{others[0]}s; the file looks {others[0]}-separated (wrong delimiter): pass the right sep= or leave "
                "sep unset to detect it")
    return sep


def _iter_table(path: Path, sep: str | None, chunk_size: int | None) -> Iterator[pd.DataFrame]:
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            if pf.metadata.num_rows == 0:
                yield pf.schema_arrow.empty_table().to_pandas()
                return
            for batch in pf.iter_batches(batch_size=chunk_size or max(pf.metadata.num_rows, 1)):
                yield batch.to_pandas()
            return
        delim = _choose_sep(path, sep)
        reader = pd.read_csv(path, sep=delim, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                             compression="infer", chunksize=chunk_size or 10**12, encoding_errors="replace")
        got = False
        for chunk in reader:
            got = True
            yield chunk
        if not got:  # header only: pandas yields no chunk
            yield pd.read_csv(path, sep=delim, dtype=str, nrows=0, encoding="utf-8-sig", compression="infer")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; expected a header row and records") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as a table ({exc})") from None
    except Exception as exc:  # pyarrow raises its own errors for corrupt Parquet files
        if type(exc).__module__.startswith("pyarrow"):
            raise DataError(f"{path}: cannot be read as a Parquet table ({exc})") from None
        raise


def _column_mapping(columns: list[str], mapping: Mapping[str, str] | None, where: Path) -> dict[str, str]:
    """file column -> canonical name."""
    rename: dict[str, str] = {}
    if mapping:
        if not isinstance(mapping, Mapping):
            raise DataError(f"columns= must be a mapping of canonical name -> column name, got {mapping!r}")
        for target, src in mapping.items():
            if target not in CANONICAL_COLUMNS:
                match = difflib.get_close_matches(str(target), CANONICAL_COLUMNS, n=1, cutoff=0.5)
                hint = f"; did you mean {match[0]!r}?" if match else ""
                raise DataError(f"columns= maps to unknown canonical column {target!r}{hint} (canonical columns: "
                                f"{', '.join(CANONICAL_COLUMNS)}; other columns are kept under their own names)")
            if src not in columns:
                match = difflib.get_close_matches(str(src), columns, n=1, cutoff=0.5)
                hint = f"; did you mean {match[0]!r}?" if match else ""
                raise DataError(f"{where}: mapped column {src!r} (for {target!r}) is not in the file{hint}; the "
                                f"file's columns are {columns[:30]}")
            rename[src] = target
    for target, aliases in COLUMN_ALIASES.items():
        if target in columns or target in rename.values():
            continue
        found = [c for c in columns if c.strip().lower() in aliases and c not in rename]
        if len(found) == 1:
            logger.info("%s: using column %r as %r", where, found[0], target)
            rename[found[0]] = target
    return rename


def resolve_image_path(value: str, root: Path, *, record_id: Any = None) -> str:
    """Resolve an image reference from a data file against ``root``; it may not lead outside ``root``.

    A plain path and the file part of an ``hdf5://<file>#<group>/<row>`` reference are checked alike: first
    lexically (``..`` and absolute paths normalised), so that nothing outside ``root`` is touched, not even to test
    whether it exists; then with symbolic links followed (a link inside ``root`` pointing out is refused too). The
    message is the same whether or not the outside file exists.

    Raises:
        DataError: the reference points outside ``root``.
    """
    from .clibd_hdf5 import HDF5_PREFIX

    if value.startswith(HDF5_PREFIX):
        body = value[len(HDF5_PREFIX):]
        path, sep, where = body.rpartition("#")
        if not sep or not path:
            err = DataError(f"record {record_id}: malformed HDF5 image reference {value!r}; expected "
                            "hdf5://<file>#<group>/<row>", record_id=record_id, value=value)
            err.kind = "image_path"  # type: ignore[attr-defined]
            raise err
        try:
            return f"{HDF5_PREFIX}{resolve_image_path(path, root, record_id=record_id)}#{where}"
        except DataError:
            inner = path
    else:
        inner = value
    root_abs = os.path.abspath(root)
    full = os.path.normpath(inner if os.path.isabs(inner) else os.path.join(root_abs, inner))
    inside = os.path.commonpath([full, root_abs]) == root_abs
    if inside:  # lexically inside: now follow symbolic links (only paths under the root are looked at)
        real_root = os.path.realpath(root_abs)
        inside = os.path.commonpath([os.path.realpath(full), real_root]) == real_root
    if not inside:
        err = DataError(
            f"record {record_id}: image path {value!r} points outside the data root {root_abs}; image paths in data "
            "files must stay inside it (pass image_root= to choose the root)", record_id=record_id, value=value)
        err.kind = "image_path"  # type: ignore[attr-defined]
        raise err
    return full


def _image_prefixes() -> tuple[str, ...]:
    """Prefixes of lazy image references kept as they are (``hdf5://`` and any registered image source); looked up
    without importing :mod:`clibd_toolkit.images` (which imports torch)."""
    from .clibd_hdf5 import HDF5_PREFIX

    images = sys.modules.get("clibd_toolkit.images")
    return tuple({HDF5_PREFIX, *(getattr(images, "_IMAGE_SOURCES", {}) if images else {})})


@register_reader("table")
def read_table_chunks(
    path: Path,
    ctx: ReadContext,
    *,
    chunk_size: int | None = None,
    columns: Mapping[str, str] | None = None,
    image_root: str | Path | None = None,
    sep: str | None = None,
) -> Iterator[tuple[pd.DataFrame, list[int]]]:
    """Chunk source for CSV/TSV/Parquet tables (or a folder holding ``records.csv`` or a single table).

    Args:
        columns: mapping from canonical name to the file's column name, e.g. ``{"record_id": "Sample ID"}``.
        image_root: folder that relative image paths are resolved against (default: the table's folder).
        sep: delimiter of a text table (default: detected from the header line).

    Raises:
        DataError: an empty or unreadable file, a wrong delimiter, or a mapping naming unknown columns (with the
            closest match suggested).
    """
    if path.is_dir():
        folder = path
        table_path = path / "records.csv"
        if not table_path.exists():
            tables = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            tables = [p for p in tables if p.suffix.lower() in (".csv", ".tsv", ".txt", ".tab", ".parquet", ".gz")]
            if len(tables) != 1:
                raise DataError(f"{path}: expected records.csv or exactly one table file in the folder, found "
                                f"{[p.name for p in tables]}")
            table_path = tables[0]
    else:
        folder, table_path = path.parent, path
    root = Path(image_root).expanduser() if image_root is not None else folder
    prefixes = _image_prefixes()
    rename: dict[str, str] | None = None
    start = 0
    for frame in _iter_table(table_path, sep, chunk_size):
        if rename is None:
            cols = list(map(str, frame.columns))
            if len(cols) == 1 and sep is None:
                header = cols[0]
                for d, name in _DELIMITERS.items():
                    if d in header:
                        raise DataError(f"{table_path}: the header is one column {header[:60]!r} holding {name}s; "
                                        f"wrong delimiter? pass sep={d!r}")
            rename = _column_mapping(cols, columns, table_path)
        frame = frame.rename(columns=rename)
        rows = list(range(start + 1, start + len(frame) + 1))
        start += len(frame)
        ctx.n_read += len(frame)
        if IMAGE in frame.columns and len(frame):
            frame, rows = _resolve_images(frame, rows, root, prefixes, ctx)
        yield frame, rows


def _resolve_images(frame: pd.DataFrame, rows: list[int], root: Path, prefixes: tuple[str, ...],
                    ctx: ReadContext) -> tuple[pd.DataFrame, list[int]]:
    from .clibd_hdf5 import HDF5_PREFIX

    ids = frame[RECORD_ID].tolist() if RECORD_ID in frame.columns else [None] * len(frame)
    resolved: list[Any] = []
    bad: list[int] = []
    for i, (rid, value) in enumerate(zip(ids, frame[IMAGE].tolist())):
        if not isinstance(value, str) or not value.strip() or (value.startswith(prefixes)
                                                               and not value.startswith(HDF5_PREFIX)):
            resolved.append(value)  # other registered sources resolve their own references
            continue
        try:
            resolved.append(resolve_image_path(value.strip(), root, record_id=rid))
        except DataError as exc:
            ctx.fail(exc, row=rows[i], record_id=rid, column=IMAGE, value=value, kind="image_path")
            resolved.append(None)
            bad.append(i)
    frame = frame.copy()
    frame[IMAGE] = resolved
    if bad:
        bad_set = set(bad)
        keep = [i for i in range(len(frame)) if i not in bad_set]
        frame = frame.iloc[keep]
        rows = [rows[i] for i in keep]
    return frame, rows
