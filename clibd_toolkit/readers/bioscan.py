"""BIOSCAN-5M and BIOSCAN-1M downloads, read with the ``bioscan-dataset`` package's own metadata loaders.

``load_bioscan5m_metadata`` / ``load_bioscan1m_metadata`` do the dataset-specific work (dtypes, DNA truncation to
660 nt, the CLIBD partition files, BIOSCAN-1M's ``not_classified`` placeholders and label fixes); this module only
maps their output onto the canonical records table:

=================  ===========================  ======================================================
canonical          BIOSCAN-5M column            BIOSCAN-1M column
=================  ===========================  ======================================================
``record_id``      ``processid``                ``processid``
``dna_barcode``    ``dna_barcode``              ``nucraw``
``bin_uri``        ``dna_bin``                  ``uri``
ranks              ``order`` ... ``species``    ``order`` ... ``species``
``image``          ``images/<package>/<split>/[<chunk>/]<processid>.jpg``   ``images/<package>/part<chunk_number>/<image_file>``
``split``          ``split`` (mapped below)     ``clibd_split`` (CLIBD partition, mapped below)
=================  ===========================  ======================================================

Split names: BIOSCAN-5M ``pretrain``->``pretrain``, ``train``->``train``, ``val``->``val_seen``, ``test``->
``test_seen``, ``key_unseen``->``unseen_keys``, ``val_unseen``, ``test_unseen``, ``other_heldout`` (unchanged; the
``train`` records are also the seen keys, as in CLIBD's 5M HDF5). BIOSCAN-1M CLIBD partition ``no_split``->
``pretrain``, ``train_seen``->``train``; ``seen_keys``, ``val_seen``, ``test_seen``, ``val_unseen``,
``test_unseen``, ``val_unseen_keys``, ``test_unseen_keys``, ``single_species`` unchanged. Without the CLIBD
partition files a BIOSCAN-1M ``split`` is left missing (apply :func:`clibd_toolkit.splits.ensure_splits`). The
original split names stay in the extra column ``bioscan_split``.

``bioscan-dataset`` imports torchvision at import time, only for its download helpers and the ``VisionDataset``
base class of its dataset classes, none of which is used here. When torchvision is not installed (our CPU
environment cannot have it), :func:`import_bioscan_dataset` provides minimal stand-ins for exactly the names it
imports while importing it, and removes them from ``sys.modules`` afterwards (see :func:`_torchvision_stand_ins`).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import types
from pathlib import Path
from typing import Any, Iterator

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
    SPLIT_OTHER_HELDOUT,
    SPLIT_PRETRAIN,
    SPLIT_SEEN_KEYS,
    SPLIT_SINGLE_SPECIES,
    SPLIT_TEST_SEEN,
    SPLIT_TEST_UNSEEN,
    SPLIT_TEST_UNSEEN_KEYS,
    SPLIT_TRAIN,
    SPLIT_UNSEEN_KEYS,
    SPLIT_VAL_SEEN,
    SPLIT_VAL_UNSEEN,
    SPLIT_VAL_UNSEEN_KEYS,
)
from .base import ReadContext, register_reader

BIOSCAN5M_SPLITS = {
    "pretrain": SPLIT_PRETRAIN, "train": SPLIT_TRAIN, "val": SPLIT_VAL_SEEN, "test": SPLIT_TEST_SEEN,
    "key_unseen": SPLIT_UNSEEN_KEYS, "val_unseen": SPLIT_VAL_UNSEEN, "test_unseen": SPLIT_TEST_UNSEEN,
    "other_heldout": SPLIT_OTHER_HELDOUT,
}
CLIBD1M_SPLITS = {
    "no_split": SPLIT_PRETRAIN, "train_seen": SPLIT_TRAIN, "seen_keys": SPLIT_SEEN_KEYS, "val_seen": SPLIT_VAL_SEEN,
    "test_seen": SPLIT_TEST_SEEN, "val_unseen": SPLIT_VAL_UNSEEN, "test_unseen": SPLIT_TEST_UNSEEN,
    "val_unseen_keys": SPLIT_VAL_UNSEEN_KEYS, "test_unseen_keys": SPLIT_TEST_UNSEEN_KEYS,
    "single_species": SPLIT_SINGLE_SPECIES,
}
METADATA_5M = "BIOSCAN_5M_Insect_Dataset_metadata.csv"
METADATA_1M = "BIOSCAN_Insect_Dataset_metadata.tsv"
CLIBD_PARTITIONING = "CLIBD_partitioning"


# --- importing bioscan-dataset without torchvision ----------------------------------------------------------------


def _needs_torchvision(*_: Any, **__: Any) -> Any:
    raise DataError("downloading BIOSCAN data needs torchvision, which is not installed; download the files with "
                    "bioscan-dataset in an environment that has torchvision, or from Zenodo / Hugging Face by hand, "
                    "then read the folder with clibd_toolkit")


def _check_integrity(fpath: str, md5: str | None = None) -> bool:
    """What torchvision's ``check_integrity`` does: the file exists and (if given) its MD5 matches."""
    if not os.path.isfile(fpath):
        return False
    if md5 is None:
        return True
    digest = hashlib.md5(usedforsecurity=False)
    with open(fpath, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest() == md5


class _VisionDataset:
    """Stand-in for ``torchvision.datasets.vision.VisionDataset``: stores root and transforms, nothing else."""

    def __init__(self, root: Any = None, transforms: Any = None, transform: Any = None,
                 target_transform: Any = None) -> None:
        self.root = root
        self.transforms = transforms
        self.transform = transform
        self.target_transform = target_transform


@contextlib.contextmanager
def _torchvision_stand_ins() -> Iterator[None]:
    """While active, ``import torchvision.datasets.utils`` / ``torchvision.datasets.vision`` resolve to minimal
    stand-ins providing exactly what bioscan-dataset imports: ``check_integrity`` (real MD5 check),
    ``download_url`` and ``download_and_extract_archive`` (raise a clear error: downloads need torchvision), and
    ``VisionDataset``. The stand-ins are removed from ``sys.modules`` on exit, so no other code sees a fake
    torchvision. Does nothing if torchvision is importable."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass
    else:
        yield
        return
    names = ("torchvision", "torchvision.datasets", "torchvision.datasets.utils", "torchvision.datasets.vision")
    mods = {name: types.ModuleType(name) for name in names}
    mods["torchvision.datasets.utils"].check_integrity = _check_integrity  # type: ignore[attr-defined]
    mods["torchvision.datasets.utils"].download_url = _needs_torchvision  # type: ignore[attr-defined]
    mods["torchvision.datasets.utils"].download_and_extract_archive = _needs_torchvision  # type: ignore[attr-defined]
    mods["torchvision.datasets.vision"].VisionDataset = _VisionDataset  # type: ignore[attr-defined]
    mods["torchvision"].datasets = mods["torchvision.datasets"]  # type: ignore[attr-defined]
    mods["torchvision.datasets"].utils = mods["torchvision.datasets.utils"]  # type: ignore[attr-defined]
    mods["torchvision.datasets"].vision = mods["torchvision.datasets.vision"]  # type: ignore[attr-defined]
    added = [n for n in names if n not in sys.modules]
    for name in added:
        sys.modules[name] = mods[name]
    try:
        yield
    finally:
        for name in added:
            if sys.modules.get(name) is mods[name]:
                del sys.modules[name]


def import_bioscan_dataset() -> types.ModuleType:
    """Import ``bioscan_dataset`` (with torchvision stand-ins when torchvision is missing).

    Raises:
        DataError: the package is not installed.
    """
    if "bioscan_dataset" in sys.modules:
        return sys.modules["bioscan_dataset"]
    try:
        with _torchvision_stand_ins():
            import bioscan_dataset
    except ImportError as exc:
        raise DataError(f"reading BIOSCAN data needs the bioscan-dataset package ({exc}); install it with "
                        "`pip install --no-deps bioscan-dataset` (its loaders need only pandas and numpy here)") from None
    return bioscan_dataset


# --- locating a download ------------------------------------------------------------------------------------------


def find_bioscan_metadata(folder: Path, fmt: str) -> Path | None:
    """The metadata file of a BIOSCAN download under ``folder`` (its root, or the ``bioscan5m``/``bioscan1m``
    folder itself), or None."""
    if fmt == "bioscan5m":
        candidates = [folder / "bioscan5m" / "metadata" / "csv" / METADATA_5M, folder / "metadata" / "csv" / METADATA_5M,
                      folder / METADATA_5M]
    else:
        candidates = [folder / "bioscan1m" / METADATA_1M, folder / METADATA_1M]
    return next((c for c in candidates if c.is_file()), None)


def sniff_bioscan(header: str) -> str | None:
    """``"bioscan5m"`` / ``"bioscan1m"`` if a header line has that metadata file's columns, else None."""
    cols = set(header.split(","))
    if {"processid", "dna_barcode", "dna_bin", "split", "chunk"} <= cols:
        return "bioscan5m"
    cols = set(header.split("\t"))
    if {"processid", "nucraw", "image_file", "chunk_number"} <= cols:
        return "bioscan1m"
    return None


def _metadata_path(path: Path, fmt: str) -> Path:
    if path.is_file():
        return path
    found = find_bioscan_metadata(path, fmt)
    if found is None:
        expected = ("bioscan5m/metadata/csv/" + METADATA_5M) if fmt == "bioscan5m" else ("bioscan1m/" + METADATA_1M)
        raise DataFileError(f"{path}: no {fmt} metadata found; expected {expected} under it (the layout "
                            "bioscan-dataset downloads), or pass the metadata file itself", value=str(path))
    return found


def _image_dir(meta: Path, fmt: str, image_package: str, image_root: str | Path | None, images: bool) -> Path | None:
    if not images:
        return None
    if image_root is not None:
        root = Path(image_root).expanduser()
    else:
        base = meta.parent.parent.parent if fmt == "bioscan5m" else meta.parent
        root = base / "images" / image_package
    if not root.is_dir():
        raise DataFileError(
            f"{fmt} image folder {root} does not exist; pass image_root= the folder holding the {image_package} "
            "images, or images=False to load DNA barcodes and labels only", value=str(root))
    return root


def _chunks(frame: pd.DataFrame, ctx: ReadContext, chunk_size: int | None,
            convert: Any) -> Iterator[tuple[pd.DataFrame, list[int]]]:
    index = frame.index
    numbered = index.is_unique and pd.api.types.is_integer_dtype(index)
    size = chunk_size or max(len(frame), 1)
    for start in range(0, len(frame), size):
        part = frame.iloc[start:start + size]
        ctx.n_read += len(part)
        rows = (np.asarray(part.index) + 1).tolist() if numbered else list(range(start + 1, start + len(part) + 1))
        yield convert(part), rows


def _as_objects(part: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    return {c: part[c].astype(object).where(part[c].notna(), None).to_numpy() for c in columns if c in part.columns}


def _loader_error(fmt: str, path: Path, exc: Exception) -> DataError:
    return DataError(f"{path}: bioscan-dataset could not load the {fmt} metadata ({type(exc).__name__}: {exc})")


@register_reader("bioscan5m")
def read_bioscan5m_chunks(
    path: Path,
    ctx: ReadContext,
    *,
    chunk_size: int | None = None,
    split: str | None = None,
    image_package: str = "cropped_256",
    images: bool = True,
    image_root: str | Path | None = None,
    max_nucleotides: int | None = 660,
    reduce_repeated_barcodes: bool = False,
) -> Iterator[tuple[pd.DataFrame, list[int]]]:
    """Chunk source for BIOSCAN-5M (a download root, its ``bioscan5m`` folder, or the metadata CSV).

    Args:
        split: BIOSCAN-5M split(s) to load, e.g. ``"pretrain+train"`` or ``"unseen"`` (bioscan-dataset syntax);
            ``None`` loads all.
        image_package: image folder under ``images/`` (``cropped_256`` is the one bioscan-dataset downloads).
        images: ``False`` loads DNA and labels only.
        image_root: the folder holding the package's ``<split>/[<chunk>/]<processid>.jpg`` tree (default: the
            download's ``images/<image_package>``).
        max_nucleotides, reduce_repeated_barcodes: passed to ``load_bioscan5m_metadata``.
    """
    meta = _metadata_path(path, "bioscan5m")
    image_dir = _image_dir(meta, "bioscan5m", image_package, image_root, images)
    bd = import_bioscan_dataset()
    try:
        df = bd.load_bioscan5m_metadata(str(meta), max_nucleotides=max_nucleotides,
                                        reduce_repeated_barcodes=reduce_repeated_barcodes, split=split)
    except (ValueError, KeyError, OSError, RuntimeError, TypeError, pd.errors.ParserError) as exc:
        raise _loader_error("BIOSCAN-5M", meta, exc) from None
    derived = [c for c in df.columns if c.endswith("_index") and c != "index_bioscan_1M_insect"]
    extra = [c for c in df.columns if c not in {"processid", "dna_barcode", "dna_bin", "split", "image_path",
                                                  *RANKS, *derived}]

    def convert(part: pd.DataFrame) -> pd.DataFrame:
        cols = _as_objects(part, ["processid", "dna_barcode", "dna_bin", *RANKS, "split", *extra])
        out = pd.DataFrame({
            RECORD_ID: cols["processid"], DNA: cols["dna_barcode"], BIN: cols["dna_bin"],
            **{r: cols[r] for r in RANKS},
            SPLIT: pd.Series(cols["split"], dtype=object).map(BIOSCAN5M_SPLITS).to_numpy(),
            IMAGE: (str(image_dir) + os.sep + part["image_path"].astype(str)).to_numpy(dtype=object)
            if image_dir is not None else None,
            "bioscan_split": cols["split"],
            **{c: cols[c] for c in extra},
        })
        return out

    yield from _chunks(df, ctx, chunk_size, convert)


@register_reader("bioscan1m")
def read_bioscan1m_chunks(
    path: Path,
    ctx: ReadContext,
    *,
    chunk_size: int | None = None,
    partitioning_version: str = "auto",
    split: str | None = None,
    image_package: str = "cropped_256",
    images: bool = True,
    image_root: str | Path | None = None,
    max_nucleotides: int | None = 660,
    clibd_partitioning_path: str | Path | None = None,
) -> Iterator[tuple[pd.DataFrame, list[int]]]:
    """Chunk source for BIOSCAN-1M (a download root, its ``bioscan1m`` folder, or the metadata TSV).

    Args:
        partitioning_version: ``"auto"`` uses the CLIBD partition when ``CLIBD_partitioning/`` is present next to
            the metadata (or at ``clibd_partitioning_path``) and no partition otherwise; ``"clibd"`` requires it;
            BIOSCAN-1M's own versions (``large_diptera_family``, ...) filter by ``split`` but leave our ``split``
            column missing (they are classification splits, not the retrieval protocol).
        split: split(s) to load (bioscan-dataset syntax, e.g. ``"no_split_and_seen_train"``); ``None`` loads all.
        image_package: image folder under ``images/`` (``cropped_256`` or ``original_256``).
        images: ``False`` loads DNA and labels only.
        image_root: the folder holding ``part<chunk_number>/<image_file>`` (default: ``images/<image_package>``).
        max_nucleotides: passed to ``load_bioscan1m_metadata``.
        clibd_partitioning_path: folder of the CLIBD partition files (default: ``CLIBD_partitioning`` next to the
            metadata).
    """
    meta = _metadata_path(path, "bioscan1m")
    image_dir = _image_dir(meta, "bioscan1m", image_package, image_root, images)
    if clibd_partitioning_path is not None:
        part_dir = Path(clibd_partitioning_path).expanduser()
        if not part_dir.is_dir():
            raise DataFileError(f"CLIBD partition folder {part_dir} does not exist", value=str(part_dir))
    else:
        part_dir = meta.parent / CLIBD_PARTITIONING
    version = partitioning_version
    if version == "auto":
        version = "clibd" if part_dir.is_dir() else "large_diptera_family"
    bd = import_bioscan_dataset()
    try:
        df = bd.load_bioscan1m_metadata(str(meta), max_nucleotides=max_nucleotides, split=split,
                                        partitioning_version=version,
                                        clibd_partitioning_path=str(part_dir) if part_dir.is_dir() else None)
    except (ValueError, KeyError, OSError, RuntimeError, TypeError, pd.errors.ParserError) as exc:
        raise _loader_error("BIOSCAN-1M", meta, exc) from None
    derived = [c for c in df.columns if c.endswith("_index")]
    extra = [c for c in df.columns if c not in {"processid", "nucraw", "uri", "clibd_split", *RANKS, *derived}]
    # our split column follows the CLIBD partition only when it is the partition asked for
    has_clibd = "clibd_split" in df.columns and version == "clibd"

    def convert(part: pd.DataFrame) -> pd.DataFrame:
        cols = _as_objects(part, ["processid", "nucraw", "uri", *RANKS, "clibd_split", *extra])
        if image_dir is not None:
            image = (str(image_dir) + os.sep + "part" + part["chunk_number"].astype(str) + os.sep
                     + part["image_file"].astype(str)).to_numpy(dtype=object)
        else:
            image = None
        return pd.DataFrame({
            RECORD_ID: cols["processid"], DNA: cols["nucraw"], BIN: cols["uri"],
            **{r: cols[r] for r in RANKS},
            SPLIT: pd.Series(cols["clibd_split"], dtype=object).map(CLIBD1M_SPLITS).to_numpy() if has_clibd else None,
            IMAGE: image,
            "bioscan_split": cols["clibd_split"] if "clibd_split" in cols else None,
            **{c: cols[c] for c in extra},
        })

    yield from _chunks(df, ctx, chunk_size, convert)
