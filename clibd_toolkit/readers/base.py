"""What every reader shares, below the formats and the driver: the :class:`ReadContext` of one read, the registry of
chunk sources (:func:`register_reader`), and text/HDF5 file helpers. Format modules import from here; the package
(:mod:`clibd_toolkit.readers`) loads them and drives them."""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from ..errors import DataError
from ..records import OnError, Rejects


@dataclass
class ReadContext:
    """Shared book-keeping of one read: the error policy, the rejects and the count of records read.

    Chunk sources add every record they read to ``n_read`` (including records they reject themselves) and report
    unusable records through :meth:`fail`, which raises under ``on_error="raise"`` and records a reject otherwise.
    """

    source: str
    on_error: OnError = "raise"
    rejects: Rejects = field(default_factory=Rejects)
    n_read: int = 0

    def fail(self, exc: DataError, *, row: int | None = None, record_id: Any = None, column: str = "",
             value: Any = None, kind: str = "other") -> None:
        if self.on_error == "raise":
            raise exc
        self.rejects.add(row=row, record_id=record_id, column=column, value=value, reason=str(exc),
                         kind=getattr(exc, "kind", kind))


#: A chunk source yields (frame with canonical column names, 1-based row numbers of its rows in the source)
ChunkSource = Callable[..., Iterator[tuple[pd.DataFrame, list[int]]]]
READERS: dict[str, ChunkSource] = {}


def register_reader(name: str) -> Callable[[ChunkSource], ChunkSource]:
    """Register a chunk source ``fn(path, ctx, *, chunk_size, **options)`` under a format name."""

    def deco(fn: ChunkSource) -> ChunkSource:
        READERS[name] = fn
        return fn

    return deco



# --- files ------------------------------------------------------------------------------------------------------

_FASTA_SUFFIXES = (".fasta", ".fa", ".fas", ".fna", ".ffn", ".faa", ".fsa", ".seq")
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
_TABLE_SUFFIXES = (".tsv", ".txt", ".csv", ".tab")


def open_text(path: Path):
    """Open a text file, gzipped or not (detected from the magic bytes, not the name), UTF-8 with or without a
    byte-order mark; undecodable bytes become U+FFFD so that bad records can be reported instead of crashing."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace", newline=None)
    return open(path, encoding="utf-8-sig", errors="replace", newline=None)


def first_line(path: Path) -> str:
    """The first line of a (possibly gzipped) text file, or ``""``."""
    try:
        with open_text(path) as fh:
            return fh.readline().rstrip("\r\n")
    except (OSError, EOFError, zlib.error):
        return ""


def hdf5_files(folder: Path) -> list[Path]:
    """HDF5 files directly inside ``folder`` (e.g. a simulator output folder written with ``--format hdf5``)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(_HDF5_SUFFIXES))
