"""Writing the official CLIBD HDF5 layout (:mod:`clibd_toolkit.readers.clibd_hdf5` describes it and reads it):
:func:`write_clibd_hdf5` packs canonical records chunk by chunk into the layout with resizable datasets (the image
width grows to the longest JPEG), then adds the metasplit groups by copying rows within the file. It sits above the
reader, the records and the image decoding it uses."""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from .errors import DataError
from .readers.clibd_hdf5 import (
    GROUP_OF_SPLIT,
    HDF5_PREFIX,
    KEY_GROUPS,
    NOT_CLASSIFIED,
    STRING_COLUMNS,
    TEXT_TOKEN_COLUMNS,
    _h5py,
)
from .schema import BIN, DNA, IMAGE, RANKS, RECORD_ID, SPLIT, SPLITS

logger = logging.getLogger(__name__)

def _jpeg_bytes(value: Any, record_id: Any, quality: int) -> bytes:
    """Encoded JPEG bytes of an image given as a path, bytes or reference; non-JPEG images are re-encoded."""
    from .images import _IMAGE_SOURCES, load_image

    data: bytes | None = None
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str):
        fetch = next((f for p, f in _IMAGE_SOURCES.items() if value.startswith(p)), None)
        if fetch is not None:
            data = fetch(value)
        elif os.path.isfile(value):
            with open(value, "rb") as fh:
                data = fh.read()
    if data is not None and data[:3] == b"\xff\xd8\xff":
        return data
    img = load_image(data if data is not None else value, record_id=record_id)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class _GroupWriter:
    def __init__(self, fh: Any, name: str, h5py: Any, token_width: int | None) -> None:
        self.group = fh.require_group(name)
        self.n = 0
        str_dt = h5py.string_dtype(encoding="utf-8")
        g = self.group
        g.create_dataset("image", shape=(0, 1), maxshape=(None, None), dtype="uint8", chunks=(16, 8192),
                         fillvalue=0)
        g.create_dataset("image_mask", shape=(0,), maxshape=(None,), dtype="int64", chunks=(4096,))
        for col in (*STRING_COLUMNS, "dna_bin"):
            g.create_dataset(col, shape=(0,), maxshape=(None,), dtype=str_dt, chunks=(4096,))
        if token_width is not None:
            for col in TEXT_TOKEN_COLUMNS:
                g.create_dataset(col, shape=(0, token_width), maxshape=(None, token_width), dtype="int64",
                                 chunks=(4096, token_width))

    def append(self, columns: dict[str, Any], images: list[bytes | None], tokens: dict[str, np.ndarray] | None) -> None:
        g, start = self.group, self.n
        stop = start + len(images)
        width = max([len(b) for b in images if b is not None] + [g["image"].shape[1]])
        g["image"].resize((stop, width))
        g["image_mask"].resize((stop,))
        block = np.zeros((len(images), width), dtype=np.uint8)
        lengths = np.zeros(len(images), dtype=np.int64)
        for i, b in enumerate(images):
            if b:
                block[i, :len(b)] = np.frombuffer(b, dtype=np.uint8)
                lengths[i] = len(b)
        g["image"][start:stop] = block
        g["image_mask"][start:stop] = lengths
        for col, values in columns.items():
            g[col].resize((stop,))
            g[col][start:stop] = values
        if tokens is not None:
            for col, arr in tokens.items():
                g[col].resize((stop, arr.shape[1]))
                g[col][start:stop] = arr
        self.n = stop


def _string_columns(part: pd.DataFrame) -> dict[str, list[str]]:
    def text(col: str, missing: str = "") -> list[str]:
        if col not in part.columns:
            return [missing] * len(part)
        return [missing if pd.isna(v) else str(v) for v in part[col].tolist()]

    ids = text(RECORD_ID)
    image_file = []
    for rid, v in zip(ids, part[IMAGE].tolist() if IMAGE in part.columns else [None] * len(part)):
        image_file.append(os.path.basename(v) if isinstance(v, str) and not v.startswith(HDF5_PREFIX)
                          else f"{rid}.jpg")
    sampleid = text("sampleid") if "sampleid" in part.columns else ids
    sampleid = [s or r for s, r in zip(sampleid, ids)]
    out = {"barcode": text(DNA), "processid": ids, "sampleid": sampleid, "image_file": image_file,
           "dna_bin": text(BIN)}
    for rank in RANKS:
        out[rank] = text(rank, NOT_CLASSIFIED)
    return out


def write_clibd_hdf5(
    path: str | Path,
    chunks: Iterable[pd.DataFrame] | pd.DataFrame,
    *,
    metasplits: bool = True,
    text_tokenizer: Callable[..., Any] | None = None,
    text_max_length: int = 20,
    jpeg_quality: int = 95,
    progress: bool = True,
) -> Path:
    """Pack canonical records into the official CLIBD HDF5 layout, streaming chunk by chunk.

    Every record needs a ``split`` (apply :func:`clibd_toolkit.splits.ensure_splits` first); it goes to its split
    group (``pretrain`` -> ``no_split``, ``train`` -> ``train_seen``, others by name). Images (paths, bytes or
    ``hdf5://`` references) are stored as JPEG bytes, re-encoded only when they are not JPEG already; a record
    without an image gets ``image_mask`` 0. ``processid`` holds the ``record_id`` (so the file reads back with the
    same ids), ``sampleid`` the ``sampleid`` column when present, ``image_file`` the image's file name, and
    ``dna_bin`` the BIN (an addition to the official columns). Missing ranks are written ``not_classified`` as in
    CLIBD. With ``metasplits`` the groups ``all_keys`` (every key group, plus ``train_seen`` in BIOSCAN-5M style files
    that have ``unseen_keys`` and no ``seen_keys``) and ``no_split_and_seen_train`` are added at the end by copying
    rows. The file is written to a temporary name and renamed when complete.

    Args:
        path: output ``.h5`` file.
        chunks: canonical records tables (e.g. from :func:`~clibd_toolkit.readers.iter_record_chunks` or a
            simulator), or one DataFrame.
        metasplits: also write ``all_keys`` and ``no_split_and_seen_train``.
        text_tokenizer: optional Hugging Face-style tokenizer; when given, ``language_tokens_*`` datasets are
            written from the ``"order family genus species"`` text (CLIBD's BERT input, padded to
            ``text_max_length``). CLIBD's own loader needs them; this toolkit does not.
        jpeg_quality: quality of re-encoded images.
        progress: show a progress bar (tqdm) per chunk.

    Returns:
        The path written.

    Raises:
        DataError: a record without a split, an unknown split, a duplicate record id, or an unreadable image (each
            naming the record).
    """
    from .io import atomic_path
    from .records import check_records, taxonomy_text

    h5py = _h5py()
    path = Path(path)
    if isinstance(chunks, pd.DataFrame):
        chunks = [chunks]
    seen: set[str] = set()
    writers: dict[str, _GroupWriter] = {}
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as fh:
            fh.attrs["layout"] = "CLIBD HDF5 (written by clibd_toolkit)"
            iterator: Iterable[pd.DataFrame] = chunks
            if progress:
                from tqdm.auto import tqdm

                iterator = tqdm(chunks, desc=f"writing {path.name}", unit="chunk")
            for chunk in iterator:
                check_records(chunk)
                _check_chunk(chunk, seen)
                for split, part in chunk.groupby(SPLIT, sort=False):
                    gname = GROUP_OF_SPLIT.get(split, split)
                    tokens = None
                    if text_tokenizer is not None:
                        enc = text_tokenizer(taxonomy_text(part), padding="max_length", max_length=text_max_length,
                                             truncation=True)
                        tokens = {f"language_tokens_{k}": np.asarray(enc[k], dtype=np.int64)
                                  for k in ("input_ids", "token_type_ids", "attention_mask")}
                    if gname not in writers:
                        writers[gname] = _GroupWriter(fh, gname, h5py, text_max_length if tokens else None)
                    images = [None if (not isinstance(v, (bytes, bytearray)) and pd.isna(v))
                              else _jpeg_bytes(v, rid, jpeg_quality)
                              for rid, v in zip(part[RECORD_ID].tolist(), part[IMAGE].tolist())]
                    writers[gname].append(_string_columns(part), images, tokens)
            if metasplits:
                _write_metasplits(fh, h5py)
    return path


def _check_chunk(chunk: pd.DataFrame, seen: set[str]) -> None:
    missing = chunk[SPLIT].isna().to_numpy()
    if missing.any():
        ids = chunk.loc[missing, RECORD_ID].head(5).tolist()
        raise DataError(f"{int(missing.sum())} record(s) have no split (e.g. {ids}); every record written to a CLIBD "
                        "HDF5 file needs one: apply clibd_toolkit.splits.ensure_splits() first",
                        record_id=str(ids[0]))
    bad = ~chunk[SPLIT].isin(SPLITS).to_numpy()
    if bad.any():
        i = int(bad.nonzero()[0][0])
        raise DataError(f"record {chunk[RECORD_ID].iat[i]}: unknown split {chunk[SPLIT].iat[i]!r}; expected one of "
                        f"{', '.join(SPLITS)}", record_id=str(chunk[RECORD_ID].iat[i]))
    ids = chunk[RECORD_ID].tolist()
    dup = [i for i in ids if i in seen]
    if dup or len(set(ids)) != len(ids):
        first = dup[0] if dup else pd.Series(ids)[pd.Series(ids).duplicated()].iat[0]
        raise DataError(f"duplicate record_id {first!r}; record ids must be unique across all chunks",
                        record_id=str(first))
    seen.update(ids)


def _write_metasplits(fh: Any, h5py: Any, block: int = 4096) -> None:
    present = set(fh.keys())
    keys = [g for g in KEY_GROUPS if g in present]
    if "unseen_keys" in present and "seen_keys" not in present and "train_seen" in present:
        keys = ["train_seen"] + keys  # BIOSCAN-5M style: the train records are the seen keys
    plan = {"all_keys": keys, "no_split_and_seen_train": [g for g in ("no_split", "train_seen") if g in present]}
    for meta, sources in plan.items():
        if not sources:
            continue
        dst = fh.create_group(meta)
        width = max(fh[s]["image"].shape[1] for s in sources)
        total = sum(fh[s]["image_mask"].shape[0] for s in sources)
        for name, ds in fh[sources[0]].items():
            shape = (total, width) if name == "image" else (total,) + ds.shape[1:]
            dst.create_dataset(name, shape=shape, dtype=ds.dtype, chunks=True, fillvalue=0 if name == "image" else None)
        offset = 0
        for s in sources:
            src = fh[s]
            n = src["image_mask"].shape[0]
            for start in range(0, n, block):
                stop = min(start + block, n)
                for name in dst.keys():
                    if name not in src:
                        continue
                    if name == "image":
                        dst[name][offset + start:offset + stop, :src[name].shape[1]] = src[name][start:stop]
                    else:
                        dst[name][offset + start:offset + stop] = src[name][start:stop]
            offset += n
