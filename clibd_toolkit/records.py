"""The canonical records table: one row per specimen record.

Columns (:data:`clibd_toolkit.schema.CANONICAL_COLUMNS`): ``record_id``, ``dna_barcode``, ``image`` (path, bytes or
a lazy reference such as ``hdf5://file#group/row``), ``order``, ``family``, ``genus``, ``species``, ``bin_uri``,
``split``, then any extra metadata columns. Missing values are ``pd.NA``; placeholder strings such as
``"not_classified"`` or ``"NA"`` never survive normalisation, so the rest of the toolkit tests ``pd.isna`` and
nothing else.

Readers for every file format live in :mod:`clibd_toolkit.readers`, which imports this module and never the
reverse: their chunk sources return raw frames with canonical column names, the readers' driver passes each through
:func:`normalise_records` here, and :func:`clibd_toolkit.readers.load_records` is the one-call entry point.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import pandas as pd

from .errors import DataError, short
from .schema import (
    BIN,
    CANONICAL_COLUMNS,
    DNA,
    DNA_STORED,
    IMAGE,
    IUPAC_AMBIGUITY,
    MISSING_TAXON_PLACEHOLDERS,
    NUCLEOTIDES,
    RANKS,
    RECORD_ID,
    SPLIT,
    SPLITS,
)

OnError = Literal["raise", "skip"]

#: longest barcode accepted (nt); COI-5P is ~658 bp, whole mitogenomes are ~16 kb and are not barcodes
MAX_BARCODE_LENGTH = 10_000
_VALID_DNA = set(NUCLEOTIDES + IUPAC_AMBIGUITY)
_GAPS = re.compile(r"[-.\s]+")
_WS = re.compile(r"\s+")
# Fast path of clean_barcode for ASCII text: the same characters ``_GAPS`` removes within ASCII (re's ``\s`` also
# matches the separators 0x1c-0x1f), deleted with bytes.translate, which is ~5x faster than the regex.
_ASCII_GAPS = b"-. \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
_VALID_DNA_BYTES = (NUCLEOTIDES + IUPAC_AMBIGUITY).encode("ascii")

#: the kinds of problems a reject (or an inspection finding) can have
REJECT_KINDS = (
    "empty_id", "duplicate_id", "invalid_barcode", "barcode_too_long", "unknown_split", "no_modality",
    "lineage_conflict", "marker", "parse", "image_path", "decode", "other",
)


# --- rejects ------------------------------------------------------------------------------------------------


@dataclass
class Rejects:
    """Records left out under ``on_error="skip"``, each with its reason. Nothing is dropped silently.

    Each row has ``row`` (1-based data row or FASTA record number in the source, when known), ``record_id``,
    ``column``, ``value`` (shortened), ``reason`` (the full error message) and ``kind`` (one of
    :data:`REJECT_KINDS`).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, *, row: int | None, record_id: Any, column: str, value: Any, reason: str,
            kind: str = "other") -> None:
        self.rows.append(
            {"row": row, "record_id": None if _isna(record_id) else str(record_id), "column": column,
             "value": short(value, 80), "reason": reason, "kind": kind}
        )

    def __len__(self) -> int:
        return len(self.rows)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["row", "record_id", "column", "value", "reason", "kind"])

    def save(self, path: str | Path) -> None:
        """Write the rejects as CSV (atomically: the file appears only when complete)."""
        from .io import atomic_path

        with atomic_path(path) as tmp:
            self.to_frame().to_csv(tmp, index=False)


@dataclass
class LoadResult:
    """What a reader returns: the records, the rejects, and how many records were read.

    ``n_read == len(records) + len(rejects)`` always holds (the count check of the reliability contract).
    """

    records: pd.DataFrame
    rejects: Rejects
    n_read: int
    source: str = ""

    def summary(self) -> str:
        text = f"loaded {len(self.records)} of {self.n_read} records from {self.source or 'input'}"
        if len(self.rejects):
            text += f"; rejected {len(self.rejects)}"
        return text


# --- value cleaning -------------------------------------------------------------------------------------------


def _isna(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return False


def clean_taxon(value: Any) -> Any:
    """Strip and collapse whitespace; placeholders ("not_classified", "NA", "", ...) become ``pd.NA``."""
    if _isna(value):
        return pd.NA
    text = _WS.sub(" ", str(value)).strip()
    if text.lower() in MISSING_TAXON_PLACEHOLDERS:
        return pd.NA
    return text


def _tagged(exc: DataError, kind: str) -> DataError:
    exc.kind = kind  # type: ignore[attr-defined]  # read by normalise_records to classify rejects
    return exc


def clean_barcode(value: Any, *, record_id: Any = None) -> Any:
    """Normalise a DNA barcode: upper-case, U -> T, whitespace/line breaks and gaps (``-``, ``.``) removed.

    Returns ``pd.NA`` for a missing or empty barcode. IUPAC ambiguity codes (N, R, Y, ...) are kept; they become
    ``<UNK>`` k-mers at tokenisation, as in CLIBD.

    Raises:
        DataError: for characters that are not nucleotides (protein letters, digits, binary garbage, non-ASCII) or
            a sequence longer than :data:`MAX_BARCODE_LENGTH`; the message names the record and the character.
    """
    if _isna(value):
        return pd.NA
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise _tagged(DataError(
                f"record {record_id!s}: barcode is not ASCII text ({short(value)}); expected nucleotide letters "
                f"{NUCLEOTIDES}+{IUPAC_AMBIGUITY}", record_id=record_id, value=value), "invalid_barcode") from None
    seq = _GAPS.sub("", str(value)).upper().replace("U", "T")
    if not seq:
        return pd.NA
    bad = sorted(set(seq) - _VALID_DNA)
    if bad:
        pos = min(seq.find(c) for c in bad)
        raise _tagged(DataError(
            f"record {record_id!s}: barcode has invalid character(s) {''.join(bad)!r} (first at position {pos + 1}); "
            f"expected A, C, G, T or IUPAC codes {IUPAC_AMBIGUITY} (gaps '-' '.' and whitespace are removed)",
            record_id=record_id, value=short(value),
        ), "invalid_barcode")
    if len(seq) > MAX_BARCODE_LENGTH:
        raise _tagged(DataError(
            f"record {record_id!s}: barcode is {len(seq)} nt long; the limit is {MAX_BARCODE_LENGTH} nt "
            "(a COI-5P barcode is ~658 nt; split genomes into barcode regions first)",
            record_id=record_id, value=len(seq),
        ), "barcode_too_long")
    return seq


def stored_barcode(value: Any) -> str:
    """A barcode as CLIBD's released models read it: the stored string with whitespace and line breaks removed and
    letters upper-cased (``U`` -> ``T``); gaps (``-``, ``.``) and ambiguity codes stay in place. Validate it with
    :func:`clean_barcode` first."""
    text = value.decode("ascii") if isinstance(value, bytes) else str(value)
    return "".join(text.split()).upper().replace("U", "T")


def _stored_barcodes(raw: list[Any], cleaned: list[Any], previous: list[Any] | None) -> list[Any]:
    """The ``dna_barcode_stored`` column: the stored spelling where it differs from the cleaned barcode (it had
    gaps), else NA; a value the input table already carried is kept (re-normalising a table loses nothing)."""
    out = []
    for i, (value, clean) in enumerate(zip(raw, cleaned)):
        kept = previous[i] if previous is not None else pd.NA
        if not _isna(kept) and not _isna(clean):
            out.append(str(kept))
        elif _isna(clean) or not isinstance(value, (str, bytes)):
            out.append(pd.NA)
        elif isinstance(value, str) and "-" not in value and "." not in value:
            out.append(pd.NA)  # only gaps make the two spellings differ
        else:
            stored = stored_barcode(value)
            out.append(stored if stored != clean else pd.NA)
    return out


def _fast_barcode(value: Any) -> Any:
    """:func:`clean_barcode` for the common case (an ASCII ``str`` that cleans to a valid barcode), or ``None``
    when the value needs the full function (anything else, including every value that would raise)."""
    if type(value) is not str or not value.isascii():
        return None
    raw = value.encode("ascii").translate(None, _ASCII_GAPS).upper().replace(b"U", b"T")
    if not raw or len(raw) > MAX_BARCODE_LENGTH or raw.translate(None, _VALID_DNA_BYTES):
        return None
    return raw.decode("ascii")


def clean_split(value: Any, *, record_id: Any = None) -> Any:
    """Check a split name against :data:`~clibd_toolkit.schema.SPLITS`; empty or missing becomes ``pd.NA``."""
    if _isna(value):
        return pd.NA
    text = str(value).strip()
    if not text:
        return pd.NA
    if text not in SPLITS:
        match = difflib.get_close_matches(text, SPLITS, n=1)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        raise _tagged(DataError(
            f"record {record_id!s}: unknown split {text!r}{hint} (expected one of {', '.join(SPLITS)}, or empty)",
            record_id=record_id, value=text,
        ), "unknown_split")
    return text


def _map_unique(values: list[Any], fn: Any) -> list[Any]:
    """Apply a pure function once per distinct hashable value (taxa repeat a lot); NA-like values go through
    ``fn`` one by one."""
    cache: dict[Any, Any] = {}
    out = []
    for v in values:
        if v is None or v is pd.NA or (isinstance(v, float) and v != v):
            out.append(fn(v))
            continue
        try:
            out.append(cache[v])
        except KeyError:
            out.append(cache.setdefault(v, fn(v)))
        except TypeError:  # unhashable
            out.append(fn(v))
    return out


# --- the table ----------------------------------------------------------------------------------------------


def empty_records() -> pd.DataFrame:
    """A records table with the canonical columns and no rows."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in CANONICAL_COLUMNS})


def normalise_records(
    frame: pd.DataFrame,
    *,
    on_error: OnError = "raise",
    rejects: Rejects | None = None,
    source: str = "",
    row_numbers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Turn a DataFrame whose columns already carry canonical names into the canonical records table.

    Adds missing canonical columns (all ``pd.NA``), cleans barcodes, taxa and splits, checks that record ids are
    present and unique, and puts the canonical columns first (extra metadata columns are kept after them).

    Args:
        frame: input table; must have ``record_id`` and at least one of ``dna_barcode``/``image``.
        on_error: ``"raise"`` (default) stops at the first bad record with a :class:`DataError`; ``"skip"`` leaves
            bad records out and adds each to ``rejects`` with its reason.
        rejects: collector for skipped records (required with ``on_error="skip"``).
        source: file name used in messages.
        row_numbers: 1-based row number of each row in its source, used in messages and rejects (default
            ``1..len(frame)``); readers that stream chunks pass the file's numbering.

    Returns:
        A new DataFrame with a fresh RangeIndex. Canonical columns hold ``str`` values or NA (test with
        ``pd.isna``): pandas infers its string dtype for text columns, and a column without any value, like
        ``image`` (which may hold ``bytes``), stays ``object`` holding ``pd.NA``.

    Raises:
        DataError: a required column is missing, or (with ``on_error="raise"``) the first bad record, naming its
            row or id, the value and what is allowed.
    """
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if on_error == "skip" and rejects is None:
        raise DataError("on_error='skip' needs a Rejects collector to record what was skipped")
    where = f" in {source}" if source else ""
    if RECORD_ID not in frame.columns:
        cols = list(map(str, frame.columns))
        match = difflib.get_close_matches(RECORD_ID, cols, n=1, cutoff=0.4)
        hint = f"; did you mean {match[0]!r}? (map it with the reader's column options)" if match else ""
        raise DataError(f"missing required column {RECORD_ID!r}{where}; columns are {cols[:20]}{hint}")
    if DNA not in frame.columns and IMAGE not in frame.columns:
        raise DataError(
            f"no modality column{where}: need {DNA!r} and/or {IMAGE!r}; columns are {list(map(str, frame.columns))[:20]}"
        )

    n = len(frame)
    rows = list(range(1, n + 1)) if row_numbers is None else [int(r) for r in row_numbers]
    if len(rows) != n:
        raise DataError(f"row_numbers has {len(rows)} entries for {n} rows")
    df = frame.copy()
    df.index = pd.RangeIndex(n)
    for col in CANONICAL_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
        df[col] = df[col].astype("object")

    failures = _Failures(rows, on_error, rejects)
    new_ids = _normalise_ids(df, rows, where, failures)
    raw_dna = df[DNA].tolist()
    _clean_column(df, DNA, clean_barcode, _fast_barcode, new_ids, failures, source)
    stored = _stored_barcodes(raw_dna, df[DNA].tolist(), df[DNA_STORED].tolist() if DNA_STORED in df else None)
    if any(not _isna(v) for v in stored):
        df[DNA_STORED] = pd.Series(stored, dtype="object")
    elif DNA_STORED in df:
        df = df.drop(columns=[DNA_STORED])
    _clean_column(df, SPLIT, clean_split, lambda v: v if type(v) is str and v in SPLITS else None, new_ids,
                  failures, source)
    for col in (*RANKS, BIN):
        df[col] = _map_unique(df[col].tolist(), clean_taxon)
    df[IMAGE] = [_normalise_image(v) for v in df[IMAGE].tolist()]

    keep = failures.keep
    no_modality = np.flatnonzero(keep & df[DNA].isna().to_numpy() & df[IMAGE].isna().to_numpy())
    for i in no_modality:
        failures.fail(i, new_ids[i], f"{DNA}/{IMAGE}", pd.NA, DataError(
            f"record {new_ids[i]}{where}: has neither a barcode nor an image; every record needs at least one",
            record_id=new_ids[i]), "no_modality")

    df = df.loc[failures.keep]
    extra = [c for c in df.columns if c not in CANONICAL_COLUMNS]
    return df[list(CANONICAL_COLUMNS) + extra].reset_index(drop=True)


class _Failures:
    """Bad records met while normalising: raised at once (``on_error="raise"``) or left out and listed in
    ``rejects`` (``"skip"``); ``keep`` marks the rows still in."""

    def __init__(self, rows: list[int], on_error: OnError, rejects: Rejects | None):
        self.rows, self.on_error, self.rejects = rows, on_error, rejects
        self.keep = np.ones(len(rows), dtype=bool)

    def fail(self, i: int, rid: Any, column: str, value: Any, exc: DataError, kind: str) -> None:
        if self.on_error == "raise" or self.rejects is None:  # (skip without a collector is refused up front)
            raise exc
        self.rejects.add(row=self.rows[i], record_id=rid, column=column, value=value, reason=str(exc),
                         kind=getattr(exc, "kind", kind))
        self.keep[i] = False


def _normalise_ids(df: pd.DataFrame, rows: list[int], where: str, failures: _Failures) -> list[Any]:
    """Record ids: present, non-empty after stripping, unique (the first occurrence wins). Writes the stripped
    ids into ``df`` and returns them (NA for empty ones)."""
    raw_ids = df[RECORD_ID].tolist()
    new_ids: list[Any] = [pd.NA if _isna(v) else str(v).strip() for v in raw_ids]
    ids = pd.Series(new_ids, dtype=object)
    empty = ids.isna().to_numpy() | (ids == "").to_numpy()
    dup = ids.duplicated(keep="first").to_numpy() & ~empty
    if empty.any() or dup.any():
        first_row: dict[str, int] = {}
        for i in np.flatnonzero(~empty):
            first_row.setdefault(new_ids[i], i)
        for i in np.flatnonzero(empty | dup):
            if empty[i]:
                failures.fail(i, raw_ids[i], RECORD_ID, raw_ids[i], DataError(
                    f"row {rows[i]}{where}: empty {RECORD_ID}; every record needs a unique id", value=raw_ids[i]),
                    "empty_id")
                new_ids[i] = pd.NA
            else:
                text = new_ids[i]
                failures.fail(i, text, RECORD_ID, text, DataError(
                    f"row {rows[i]}{where}: duplicate {RECORD_ID} {text!r} (first seen at row "
                    f"{rows[first_row[text]]}); record ids must be unique", record_id=text, value=text),
                    "duplicate_id")
    df[RECORD_ID] = new_ids
    return new_ids


def _clean_column(df: pd.DataFrame, col: str, cleaner: Any, fast: Any, ids: list[Any], failures: _Failures,
                  source: str) -> None:
    """Clean ``df[col]`` in place with ``cleaner`` (``fast`` answers the common already-clean values, or None)."""
    out = []
    for i, (rid, value) in enumerate(zip(ids, df[col].tolist())):
        if not failures.keep[i] or _isna(value):
            out.append(pd.NA)
            continue
        quick = fast(value)
        if quick is not None:
            out.append(quick)
            continue
        try:
            out.append(cleaner(value, record_id=rid))
        except DataError as exc:
            if failures.on_error == "raise" and source:
                raise _tagged(DataError(f"{source}: {exc}", record_id=exc.record_id, value=exc.value),
                              getattr(exc, "kind", "other")) from None
            failures.fail(i, rid, col, value, exc, "other")
            out.append(pd.NA)
    df[col] = out


def _normalise_image(v: Any) -> Any:
    """An image cell: a non-blank path string, bytes, or NA."""
    if type(v) is str and v.strip():
        return v
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if v is None or _isna(v) or str(v).strip() == "":
        return pd.NA
    return str(v)


def check_records(records: pd.DataFrame, *, need: Iterable[str] = ()) -> None:
    """Cheap structural check at public entry points: canonical columns present and the ``need`` modalities
    available (``"dna"``, ``"image"``, ``"text"`` = at least one rank).

    Raises:
        DataError: naming the missing column or modality and how to fix it.
    """
    if not isinstance(records, pd.DataFrame):
        raise DataError(f"expected a records DataFrame, got {type(records).__name__}; load one with load_records()")
    missing = [c for c in CANONICAL_COLUMNS if c not in records.columns]
    if missing:
        raise DataError(
            f"records table lacks canonical columns {missing}; pass it through normalise_records() or load_records()"
        )
    for modality in need:
        if modality == "dna" and records[DNA].isna().all():
            raise DataError("no record has a DNA barcode, but the 'dna' modality was asked for")
        if modality == "image" and records[IMAGE].isna().all():
            raise DataError("no record has an image, but the 'image' modality was asked for")
        if modality == "text" and records[list(RANKS)].isna().all().all():
            raise DataError("no record has any taxonomic label, but the 'text' modality was asked for")


def taxonomy_text(records: pd.DataFrame, missing: str = "not_classified") -> list[str]:
    """CLIBD's text input: ``"order family genus species"``, one space between ranks.

    Missing ranks are written as ``missing`` (CLIBD: the literal ``not_classified``), so unlabelled records still
    have a text input during training (reference section 1.5).
    """
    cols = [records[r].tolist() for r in RANKS]
    return [" ".join(missing if _isna(v) else str(v) for v in values) for values in zip(*cols)]
