"""The canonical records table: one row per specimen record.

Columns (:data:`clibd_toolkit.schema.CANONICAL_COLUMNS`): ``record_id``, ``dna_barcode``, ``image`` (path or
bytes), ``order``, ``family``, ``genus``, ``species``, ``bin_uri``, ``split``, then any extra metadata columns.
Missing values are ``pd.NA``; placeholder strings such as ``"not_classified"`` or ``"NA"`` never survive
normalisation, so the rest of the toolkit tests ``pd.isna`` and nothing else.

Readers for every file format live in :mod:`clibd_toolkit.readers`; they all end in :func:`normalise_records`.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import pandas as pd

from .errors import DataError, short
from .schema import (
    BIN,
    CANONICAL_COLUMNS,
    DNA,
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


# --- rejects ------------------------------------------------------------------------------------------------


@dataclass
class Rejects:
    """Records left out under ``on_error="skip"``, each with its reason. Nothing is dropped silently."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, *, row: int | None, record_id: Any, column: str, value: Any, reason: str) -> None:
        self.rows.append(
            {"row": row, "record_id": None if _isna(record_id) else str(record_id), "column": column,
             "value": short(value, 80), "reason": reason}
        )

    def __len__(self) -> int:
        return len(self.rows)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["row", "record_id", "column", "value", "reason"])

    def save(self, path: str | Path) -> None:
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
            raise DataError(
                f"record {record_id!s}: barcode is not ASCII text ({short(value)}); expected nucleotide letters "
                f"{NUCLEOTIDES}+{IUPAC_AMBIGUITY}", record_id=record_id, value=value) from None
    seq = _GAPS.sub("", str(value)).upper().replace("U", "T")
    if not seq:
        return pd.NA
    bad = sorted(set(seq) - _VALID_DNA)
    if bad:
        pos = min(seq.find(c) for c in bad)
        raise DataError(
            f"record {record_id!s}: barcode has invalid character(s) {''.join(bad)!r} (first at position {pos + 1}); "
            f"expected A, C, G, T or IUPAC codes {IUPAC_AMBIGUITY} (gaps '-' '.' and whitespace are removed)",
            record_id=record_id, value=short(value),
        )
    if len(seq) > MAX_BARCODE_LENGTH:
        raise DataError(
            f"record {record_id!s}: barcode is {len(seq)} nt long; the limit is {MAX_BARCODE_LENGTH} nt "
            "(a COI-5P barcode is ~658 nt; split genomes into barcode regions first)",
            record_id=record_id, value=len(seq),
        )
    return seq


def clean_split(value: Any, *, record_id: Any = None) -> Any:
    if _isna(value):
        return pd.NA
    text = str(value).strip()
    if not text:
        return pd.NA
    if text not in SPLITS:
        match = difflib.get_close_matches(text, SPLITS, n=1)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        raise DataError(
            f"record {record_id!s}: unknown split {text!r}{hint} (expected one of {', '.join(SPLITS)}, or empty)",
            record_id=record_id, value=text,
        )
    return text


# --- the table ----------------------------------------------------------------------------------------------


def empty_records() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in CANONICAL_COLUMNS})


def normalise_records(
    frame: pd.DataFrame,
    *,
    on_error: OnError = "raise",
    rejects: Rejects | None = None,
    source: str = "",
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

    Returns:
        A new DataFrame with a fresh RangeIndex; all canonical columns have dtype ``object`` holding ``str`` or
        ``pd.NA`` (``image`` may hold ``bytes``).
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

    df = frame.copy()
    df.index = pd.RangeIndex(len(df))
    for col in CANONICAL_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
        df[col] = df[col].astype("object")

    keep = np.ones(len(df), dtype=bool)

    def fail(i: int, rid: Any, column: str, value: Any, exc: DataError) -> None:
        if on_error == "raise":
            raise exc
        assert rejects is not None
        rejects.add(row=i, record_id=rid, column=column, value=value, reason=str(exc))
        keep[i] = False

    ids = df[RECORD_ID].tolist()
    seen: dict[str, int] = {}
    new_ids: list[Any] = []
    for i, rid in enumerate(ids):
        text = None if _isna(rid) else str(rid).strip()
        if not text:
            fail(i, rid, RECORD_ID, rid, DataError(
                f"row {i + 1}{where}: empty {RECORD_ID}; every record needs a unique id", value=rid))
            new_ids.append(pd.NA)
            continue
        if text in seen:
            fail(i, text, RECORD_ID, text, DataError(
                f"row {i + 1}{where}: duplicate {RECORD_ID} {text!r} (first seen at row {seen[text] + 1}); "
                "record ids must be unique", record_id=text, value=text))
        else:
            seen[text] = i
        new_ids.append(text)
    df[RECORD_ID] = new_ids

    for col, cleaner in ((DNA, clean_barcode), (SPLIT, clean_split)):
        values = df[col].tolist()
        out = []
        for i, (rid, value) in enumerate(zip(new_ids, values)):
            if not keep[i]:
                out.append(pd.NA)
                continue
            try:
                out.append(cleaner(value, record_id=rid))
            except DataError as exc:
                if on_error == "raise" and source:
                    raise DataError(f"{source}: {exc}", record_id=exc.record_id, value=exc.value) from None
                fail(i, rid, col, value, exc)
                out.append(pd.NA)
        df[col] = out

    for col in (*RANKS, BIN):
        df[col] = [clean_taxon(v) for v in df[col].tolist()]

    image_values = df[IMAGE].tolist()
    df[IMAGE] = [pd.NA if (v is None or (not isinstance(v, (bytes, bytearray)) and (_isna(v) or str(v).strip() == "")))
                 else (bytes(v) if isinstance(v, (bytes, bytearray)) else str(v)) for v in image_values]

    no_modality = [i for i in range(len(df)) if keep[i] and _isna(df.at[i, DNA]) and _isna(df.at[i, IMAGE])]
    for i in no_modality:
        fail(i, new_ids[i], f"{DNA}/{IMAGE}", pd.NA, DataError(
            f"record {new_ids[i]}{where}: has neither a barcode nor an image; every record needs at least one",
            record_id=new_ids[i]))

    df = df.loc[keep]
    extra = [c for c in df.columns if c not in CANONICAL_COLUMNS]
    return df[list(CANONICAL_COLUMNS) + extra].reset_index(drop=True)


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


def load_records(source: Any, **options: Any) -> pd.DataFrame:
    """Load any supported data source into the canonical records table (see :mod:`clibd_toolkit.readers`).

    ``source`` is a path (BOLD TSV, CSV/TSV/Parquet, FASTA, CLIBD HDF5, BIOSCAN folder, simulator output folder)
    or a DataFrame. Raises :class:`DataError` on the first bad record; use
    :func:`clibd_toolkit.readers.read_records` with ``on_error="skip"`` to skip and report them instead.
    """
    from .readers import read_records

    return read_records(source, **options).records
