"""The official CLIBD HDF5 layout (reference section 4.3) and its lazy reader (the streaming writer is
:mod:`clibd_toolkit.hdf5_writer`).

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

Writing (:func:`clibd_toolkit.hdf5_writer.write_clibd_hdf5`) packs canonical records into the same layout.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

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
from .base import ReadContext, register_reader

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
    from .base import hdf5_files

    if path.is_dir():
        found = hdf5_files(path)
        if len(found) != 1:
            raise DataError(f"{path}: expected exactly one HDF5 file in the folder, found {[p.name for p in found]}")
        path = found[0]
    h5py = _h5py()
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
