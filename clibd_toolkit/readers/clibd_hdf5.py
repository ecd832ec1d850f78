"""The official CLIBD HDF5 layout (reference section 4.3): a lazy reader and a streaming writer.

Layout: one group per split; per group the datasets ``image`` (uint8 JPEG bytes, zero-padded to a fixed width,
shape (n, width)), ``image_mask`` (the byte length of each image; 0 = no image), UTF-8 byte-string columns
``barcode``, ``order``, ``family``, ``genus``, ``species`` (missing ranks written ``not_classified``), ``sampleid``,
``processid``, ``image_file``, and optionally ``language_tokens_{input_ids,token_type_ids,attention_mask}`` (n, 20).
Groups: ``no_split``, ``train_seen``, ``seen_keys``, ``val_seen``, ``test_seen``, ``val_unseen``, ``test_unseen``,
``val_unseen_keys``, ``test_unseen_keys``, ``single_species`` (BIOSCAN-1M); ``unseen_keys``, ``other_heldout``
(BIOSCAN-5M); and the metasplits ``all_keys`` and ``no_split_and_seen_train``, which repeat records of the others.

Reading (:func:`read_clibd_hdf5_chunks`, format ``clibd_hdf5``) never loads image bytes: the ``image`` column holds
a reference ``hdf5://<absolute file>#<group>/<row>`` that :func:`clibd_toolkit.images.load_image` resolves on demand
through :func:`fetch_hdf5_image` (one read-only h5py handle per file and process, opened on first use, so it works
in data-loader workers). Split names: ``no_split``->``pretrain``, ``train_seen``->``train``, others unchanged. In a
BIOSCAN-5M file (an ``unseen_keys`` group and no ``train_seen`` group) the ``seen_keys`` group holds the 5M
``train`` records, which CLIBD trains on and uses as seen keys: they get split ``train``, and records found only in
``no_split_and_seen_train`` get ``pretrain``. Metasplit rows whose id is already in a split group are copies and are
not read again; records found only in ``all_keys`` get a missing split. The record id is ``processid`` (present in
both official files; ``image_file`` then ``sampleid`` are fallbacks, or choose with ``id_column=``).

Writing (:func:`write_clibd_hdf5`) packs canonical records chunk by chunk into the same layout with resizable
datasets (the image width grows to the longest JPEG), then adds the metasplit groups by copying rows within the file.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError, DataFileError
from ..schema import (
    BIN,
    DNA,
    IMAGE,
    RANKS,
    RECORD_ID,
    SPLIT,
    SPLIT_PRETRAIN,
    SPLIT_TRAIN,
    SPLITS,
)
from . import ReadContext, register_reader

logger = logging.getLogger(__name__)

HDF5_PREFIX = "hdf5://"
#: HDF5 group name of each split (the others are spelled the same)
GROUP_OF_SPLIT = {SPLIT_PRETRAIN: "no_split", SPLIT_TRAIN: "train_seen"}
SPLIT_OF_GROUP = {g: s for s, g in GROUP_OF_SPLIT.items()}
#: split groups, in reading order
SPLIT_GROUPS: tuple[str, ...] = tuple(GROUP_OF_SPLIT.get(s, s) for s in SPLITS)
METASPLIT_GROUPS = ("no_split_and_seen_train", "all_keys")
KEY_GROUPS = ("seen_keys", "val_unseen_keys", "test_unseen_keys", "unseen_keys")
STRING_COLUMNS = ("barcode", "order", "family", "genus", "species", "sampleid", "processid", "image_file")
TEXT_TOKEN_COLUMNS = ("language_tokens_input_ids", "language_tokens_token_type_ids", "language_tokens_attention_mask")
NOT_CLASSIFIED = "not_classified"


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a core dependency
        raise DataError("reading or writing CLIBD HDF5 files needs h5py (pip install h5py)") from None
    return h5py


# --- lazy image access --------------------------------------------------------------------------------------------

_HANDLES: dict[tuple[int, str], Any] = {}


def _handle(path: str):
    key = (os.getpid(), path)
    fh = _HANDLES.get(key)
    if fh is None or not fh.id.valid:
        if not os.path.isfile(path):
            raise DataFileError(f"HDF5 file {path} does not exist (referenced by an hdf5:// image)", value=path)
        try:
            fh = _h5py().File(path, "r")
        except OSError as exc:
            raise DataError(f"HDF5 file {path} cannot be opened ({exc})", value=path) from None
        _HANDLES[key] = fh
    return fh


def hdf5_image_ref(path: str | Path, group: str, row: int) -> str:
    """The reference string of one stored image: ``hdf5://<absolute path>#<group>/<row>``."""
    return f"{HDF5_PREFIX}{os.path.abspath(path)}#{group}/{row}"


def fetch_hdf5_image(ref: str) -> bytes:
    """The encoded image bytes behind an ``hdf5://`` reference (registered with
    :func:`clibd_toolkit.images.register_image_source`).

    Raises:
        DataFileError: the file does not exist.
        DataError: a malformed reference, a missing group or row, or a row without an image.
    """
    body = ref[len(HDF5_PREFIX):]
    path, sep, where = body.rpartition("#")
    group, _, row_text = where.rpartition("/")
    if not sep or not group or not row_text.isdigit():
        raise DataError(f"malformed HDF5 image reference {ref!r}; expected hdf5://<file>#<group>/<row>", value=ref)
    image, mask, n_rows = _image_datasets(path, group, ref)
    row = int(row_text)
    if row >= n_rows:
        raise DataError(f"{ref}: row {row} is past the end of group {group!r} ({n_rows} rows)", value=ref)
    length = int(mask[row])
    if length <= 0:
        raise DataError(f"{ref}: no image stored for this record (image_mask is 0)", value=ref)
    return image[row, :length].tobytes()


#: (process, file, group) -> (image dataset, image_mask dataset, rows): h5py's name lookups cost ~20 times the read
#: of one image row, so they are done once per group and process
_DATASETS: dict[tuple[int, str, str], tuple[Any, Any, int]] = {}


def _image_datasets(path: str, group: str, ref: str) -> tuple[Any, Any, int]:
    fh = _handle(path)
    key = (os.getpid(), path, group)
    found = _DATASETS.get(key)
    if found is not None and found[0].id.valid:
        return found
    if group not in fh or "image" not in fh[group] or "image_mask" not in fh[group]:
        raise DataError(f"{path} has no group {group!r} with image/image_mask datasets ({ref})", value=ref)
    g = fh[group]
    found = (g["image"], g["image_mask"], int(g["image_mask"].shape[0]))
    _DATASETS[key] = found
    return found


# --- reading ----------------------------------------------------------------------------------------------------


def _decode(values: np.ndarray) -> list[Any]:
    out: list[Any] = []
    for v in values.tolist():
        if isinstance(v, bytes):
            out.append(v.decode("utf-8", errors="replace"))
        elif v is None:
            out.append(None)
        else:
            out.append(str(v))
    return out


def _id_column(group: Any, id_column: str) -> str:
    if id_column != "auto":
        if id_column not in group:
            raise DataError(f"id_column {id_column!r} is not a dataset of group {group.name!r}; it has "
                            f"{sorted(group.keys())}")
        return id_column
    for name in ("processid", "image_file", "sampleid"):
        if name in group:
            return name
    raise DataError(f"group {group.name!r} has none of processid/image_file/sampleid to use as record id; pass "
                    "id_column=")


def _group_rows(path: Path, group: Any, gname: str, split: Any, id_col: str, start: int, stop: int,
                images: bool, only: np.ndarray | None = None) -> pd.DataFrame:
    data: dict[str, Any] = {RECORD_ID: _decode(group[id_col][start:stop])}
    if "barcode" in group:
        data[DNA] = _decode(group["barcode"][start:stop])
    for rank in RANKS:
        if rank in group:
            data[rank] = _decode(group[rank][start:stop])
    if "dna_bin" in group:
        data[BIN] = _decode(group["dna_bin"][start:stop])
    data[SPLIT] = [split] * (stop - start)
    if images and "image_mask" in group and "image" in group:
        lengths = np.asarray(group["image_mask"][start:stop])
        prefix = f"{HDF5_PREFIX}{os.path.abspath(path)}#{gname}/"
        data[IMAGE] = [f"{prefix}{start + i}" if n > 0 else None for i, n in enumerate(lengths.tolist())]
    for name in ("sampleid", "processid", "image_file"):
        if name in group and name != id_col:
            data[name] = _decode(group[name][start:stop])
    data["hdf5_group"] = [gname] * (stop - start)
    frame = pd.DataFrame(data)
    if IMAGE not in frame.columns:
        frame[IMAGE] = None
    if only is not None:
        frame = frame.loc[only]
    return frame


def _group_len(group: Any, id_col: str) -> int:
    return int(group[id_col].shape[0])


@register_reader("clibd_hdf5")
def read_clibd_hdf5_chunks(
    path: Path,
    ctx: ReadContext,
    *,
    chunk_size: int | None = None,
    groups: Sequence[str] | None = None,
    id_column: str = "auto",
    images: bool = True,
) -> Iterator[tuple[pd.DataFrame, list[int]]]:
    """Chunk source for CLIBD HDF5 files (or a folder holding exactly one, such as simulator output); images stay
    in the file (``hdf5://`` references).

    Args:
        groups: split groups to read (default: every split group, plus metasplit rows found nowhere else).
        id_column: dataset used as ``record_id`` (default: ``processid``, else ``image_file``, else ``sampleid``).
        images: ``False`` leaves the ``image`` column empty (DNA and labels only).

    Raises:
        DataError: not an HDF5 file, no split group, or an unknown group name.
    """
    from . import hdf5_files, register_image_sources

    if path.is_dir():
        found = hdf5_files(path)
        if len(found) != 1:
            raise DataError(f"{path}: expected exactly one HDF5 file in the folder, found {[p.name for p in found]}")
        path = found[0]
    h5py = _h5py()
    if images:
        register_image_sources()
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: cannot be opened as HDF5 ({exc})") from None
    with fh:
        present = [k for k in fh.keys() if isinstance(fh[k], h5py.Group)]
        known = set(SPLIT_GROUPS) | set(METASPLIT_GROUPS)
        if groups is not None:
            unknown = [g for g in groups if g not in present]
            if unknown:
                raise DataError(f"{path}: no group(s) {unknown}; the file has {present}")
            order = [g for g in list(SPLIT_GROUPS) + list(METASPLIT_GROUPS) if g in groups]
            order += [g for g in groups if g not in order]
        else:
            order = [g for g in list(SPLIT_GROUPS) + list(METASPLIT_GROUPS) if g in present]
            others = [g for g in present if g not in known]
            if others:
                logger.warning("%s: groups %s are not CLIBD split groups and are not read", path, others)
        if not order:
            raise DataError(f"{path}: no CLIBD split groups found (groups: {present}); expected some of "
                            f"{list(SPLIT_GROUPS) + list(METASPLIT_GROUPS)}")
        style_5m = "unseen_keys" in present and "train_seen" not in present
        split_of = dict(SPLIT_OF_GROUP)
        for g in SPLIT_GROUPS:
            split_of.setdefault(g, g)
        if style_5m:
            split_of["seen_keys"] = SPLIT_TRAIN
        split_of["no_split_and_seen_train"] = SPLIT_PRETRAIN
        split_of["all_keys"] = None
        base = [g for g in order if g not in METASPLIT_GROUPS]
        metas = [g for g in order if g in METASPLIT_GROUPS and _meta_needed(g, set(present))]
        base_ids: set[str] = set()
        size = chunk_size or 10**12
        row_no = 0
        for gname in base + metas:
            group = fh[gname]
            id_col = _id_column(group, id_column)
            n = _group_len(group, id_col)
            for start in range(0, n, size):
                stop = min(start + size, n)
                only = None
                if gname in METASPLIT_GROUPS:
                    ids = _decode(group[id_col][start:stop])
                    only = np.fromiter((i not in base_ids for i in ids), dtype=bool, count=len(ids))
                    if not only.any():
                        continue
                frame = _group_rows(path, group, gname, split_of.get(gname, gname), id_col, start, stop, images,
                                    only)
                if metas:
                    base_ids.update(x for x in frame[RECORD_ID].tolist() if x is not None)
                rows = list(range(row_no + 1, row_no + len(frame) + 1))
                row_no += len(frame)
                ctx.n_read += len(frame)
                yield frame, rows


def _meta_needed(gname: str, present: set[str]) -> bool:
    """Whether a metasplit group can hold records that no split group has."""
    if gname == "no_split_and_seen_train":
        return not {"no_split", "train_seen"} <= present
    return not ("seen_keys" in present and ({"val_unseen_keys", "test_unseen_keys"} <= present
                                              or "unseen_keys" in present))


# --- writing ----------------------------------------------------------------------------------------------------


def _jpeg_bytes(value: Any, record_id: Any, quality: int) -> bytes:
    """Encoded JPEG bytes of an image given as a path, bytes or reference; non-JPEG images are re-encoded."""
    from ..images import _IMAGE_SOURCES, load_image

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
    from ..io import atomic_path
    from ..records import check_records, taxonomy_text

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
