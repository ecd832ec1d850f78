"""Read the embeddings the official CLIBD code released (Hugging Face ``bioscan-ml/clibd``, ``extracted_embedding/``).

What the official writer does (``bioscan-ml/clibd`` 7d73f80, ``scripts/inference_and_eval.py: main``, with
``bioscanclip/util/util.py: get_features_and_label`` and ``bioscanclip/epoch/inference_epoch.py:
get_feature_and_label``), checked line by line:

- Files, in one folder ``extracted_embedding/<dataset>/<model_output_name>/`` (on the hub also under
  ``ver_1_0/``): ``extracted_feature_from_<stage>_split.hdf5``, ``labels_<stage>.json`` and
  ``processed_id_<stage>.json``, ``<stage>`` being ``val`` or ``test`` (``inference_and_eval_setting.eval_on``).
- HDF5 groups ``seen`` (the ``<stage>_seen`` queries), ``unseen`` (``<stage>_unseen`` queries) and ``key`` (the
  dataset's ``all_keys`` group: seen keys plus the val and test unseen keys of BIOSCAN-1M, or train plus
  ``unseen_keys`` of BIOSCAN-5M). Which key came from which key split is not stored.
- Datasets per group, among ``encoded_image_feature``, ``encoded_dna_feature``, ``encoded_language_feature``,
  ``averaged_feature``, ``concatenated_feature``, ``all_key_features`` (``All_TYPE_OF_FEATURES_OF_KEY``). Each
  encoder output is ``F.normalize``-d (L2, fp32 in torch), turned into Python floats with ``.tolist()`` and back
  into ``np.array``: the datasets are **float64** (``<f8``), shape (n, d), contiguous, uncompressed, rows unit
  length to float32 rounding. ``averaged_feature = np.mean([image, dna], axis=0)`` (not re-normalised; cosine
  search re-normalises it), ``concatenated_feature = np.concatenate((image, dna), axis=1)`` (n, 2d), both only
  when the model has image and DNA encoders. ``all_key_features`` (key group only, and only with all three
  encoders) stacks the key image, DNA and text rows, (3n, d); the official reader labels it
  ``key_gt_dict * 3``. A feature that is ``None`` (encoder absent) makes ``create_dataset`` raise, which the writer
  catches and prints: the dataset is simply missing.
- ``labels_<stage>.json``: ``{"seen_gt_dict", "unseen_gt_dict", "key_gt_dict"}``, lists of ``{"order", "family",
  "genus", "species"}`` in row order; missing ranks are the literal ``not_classified``.
- ``processed_id_<stage>.json``: ``{"seen_id_list", "unseen_id_list", "key_id_list"}``, the dataset HDF5's
  ``image_file`` (BIOSCAN-1M: image file names) or ``processid`` (BIOSCAN-5M) of each row.

What :func:`read_released_embeddings` makes of it, an :class:`~clibd_toolkit.store.EmbeddingSet`:

- Rows: the ``seen``, then ``unseen``, then ``key`` rows. Splits: ``seen`` -> ``<stage>_seen``, ``unseen`` ->
  ``<stage>_unseen``; a key whose species occurs among the unseen queries -> ``<stage>_unseen_keys``, every other
  key -> ``seen_keys``. :func:`clibd_toolkit.splits.key_mask` pools them all, as CLIBD does, so evaluation does not
  depend on this choice; only tools calibrated on seen keys do (and there BIOSCAN-1M's unseen keys of the other
  stage count as "seen" keys).
- Record ids are the official ids. An id that occurs more than once in the file (the splits are disjoint, so this
  should not happen) becomes ``<id>@<group>`` at every occurrence, and ``<id>@<group>#<row>`` if it repeats
  within a group; ``config["renamed_ids"]`` counts them. Labels go through
  :func:`~clibd_toolkit.records.clean_taxon` (``not_classified`` and empty -> NA); ``bin_uri`` is NA.
- Vectors: ``image``, ``dna`` and ``text`` only, as float32 re-normalised to unit length after checking that each
  row is finite and of L2 norm 1 within :data:`NORM_TOLERANCE`. A group lacking a modality another group has
  gets NaN rows. The fused features are not kept: :mod:`clibd_toolkit.evaluate` forms them (``image+dna``,
  ``concat``, ``all``); the file's ``averaged_feature``, ``concatenated_feature`` and ``all_key_features``, when
  present, are checked to equal that recomputation from the file's own image/DNA/text rows within
  :data:`FUSED_TOLERANCE` (the official writer's are exact).
- ``config``: ``{"source": "clibd-released-embeddings", "file", "sha256", "labels", "labels_sha256", "ids",
  "ids_sha256", "stage", "groups", "renamed_ids"}``.

Errors: a problem with a file as a whole (missing or unreadable file, missing group, a dataset of the wrong
shape or dtype, lists of the wrong length, non-finite or non-unit vectors, inconsistent fused features) raises
:class:`~clibd_toolkit.errors.CheckpointError`; a malformed label or id entry raises
:class:`~clibd_toolkit.errors.DataError`. Messages name the file, group, dataset and row.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import CheckpointError, ConfigError, DataError, short
from .records import clean_taxon
from .schema import BIN, MODALITIES, RANKS, RECORD_ID, SPLIT, SPLIT_SEEN_KEYS
from .store import META_COLUMNS, EmbeddingSet

logger = logging.getLogger(__name__)

SOURCE = "clibd-released-embeddings"
GROUPS: tuple[str, ...] = ("seen", "unseen", "key")
#: toolkit modality -> official dataset name
DATASET_OF_MODALITY: dict[str, str] = {"image": "encoded_image_feature", "dna": "encoded_dna_feature",
                                       "text": "encoded_language_feature"}
LABEL_LISTS: dict[str, str] = {"seen": "seen_gt_dict", "unseen": "unseen_gt_dict", "key": "key_gt_dict"}
ID_LISTS: dict[str, str] = {"seen": "seen_id_list", "unseen": "unseen_id_list", "key": "key_id_list"}
NORM_TOLERANCE = 1e-3  # |L2 norm - 1| allowed per stored row (the official rows are unit to ~1e-7)
FUSED_TOLERANCE = 1e-6  # largest |stored - recomputed| allowed in averaged / concatenated / all_key_features
_FILE_NAME = re.compile(r"extracted_feature_from_(val|test)_split\.(hdf5|h5)$")
_CHUNK_ROWS = 65536  # rows read at a time (memory: a few chunks of float64, whatever the file size)


def read_released_embeddings(path: str | Path, *, labels: str | Path | None = None, ids: str | Path | None = None,
                             stage: str | None = None) -> EmbeddingSet:
    """Read an official CLIBD embedding file (``extracted_feature_from_<stage>_split.hdf5``) as an EmbeddingSet.

    Args:
        path: the HDF5 file.
        labels: ``labels_<stage>.json``; default: the file of that name beside ``path``.
        ids: ``processed_id_<stage>.json``; default: the file of that name beside ``path``.
        stage: ``"val"`` or ``"test"``; default: taken from the file name.

    Returns:
        EmbeddingSet with image/dna/text vectors (float32, unit rows) and the splits of the module docstring.

    Raises:
        ConfigError: ``stage`` is not val/test, or not given and not in the file name.
        CheckpointError: a file is missing, unreadable or not in the official layout (see the module docstring).
        DataError: a label or id entry is malformed.

    Example:
        >>> emb = read_released_embeddings("image_dna_text/extracted_feature_from_test_split.hdf5")  # doctest: +SKIP
        >>> result = evaluate_embeddings(emb, EvalConfig(pairs="official"))  # doctest: +SKIP
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"released-embedding file {path} does not exist")
    stage = _stage(path, stage)
    labels_path = Path(labels) if labels is not None else path.with_name(f"labels_{stage}.json")
    ids_path = Path(ids) if ids is not None else path.with_name(f"processed_id_{stage}.json")
    label_lists = _read_lists(labels_path, LABEL_LISTS, path, "labels")
    id_lists = _read_lists(ids_path, ID_LISTS, path, "ids")
    sizes = {g: len(label_lists[g]) for g in GROUPS}
    for group in GROUPS:
        if len(id_lists[group]) != sizes[group]:
            raise CheckpointError(f"{ids_path} list {ID_LISTS[group]!r} has {len(id_lists[group])} ids but "
                                  f"{labels_path} list {LABEL_LISTS[group]!r} has {sizes[group]} labels; both "
                                  f"must describe the rows of group {group!r} of {path} in order")
    record_ids, renamed = _unique_ids(id_lists, path, ids_path)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise CheckpointError(f"{path} is not a readable HDF5 file ({exc})") from None
    with handle:
        missing = [g for g in GROUPS if g not in handle or not isinstance(handle[g], h5py.Group)]
        if missing:
            raise CheckpointError(f"{path} lacks group(s) {missing} of the CLIBD released-embedding layout (groups "
                                  f"seen, unseen, key; it has {sorted(handle)}); a CLIBD dataset HDF5 (images, "
                                  "barcodes) is read with load_records instead")
        vectors = _read_vectors(handle, path, sizes, record_ids)
    metadata = _metadata(label_lists, record_ids, stage, labels_path)
    config = {"source": SOURCE, "file": str(path.resolve()), "sha256": _sha256(path),
              "labels": str(labels_path.resolve()), "labels_sha256": _sha256(labels_path),
              "ids": str(ids_path.resolve()), "ids_sha256": _sha256(ids_path), "stage": stage, "groups": sizes,
              "renamed_ids": renamed}
    return EmbeddingSet(metadata, vectors, config)


# --- files and lists --------------------------------------------------------------------------------------------

def _stage(path: Path, stage: str | None) -> str:
    if stage is None:
        match = _FILE_NAME.search(path.name)
        if match is None:
            raise ConfigError(f"cannot tell the stage from the file name {path.name!r} (the official name is "
                              "extracted_feature_from_<val|test>_split.hdf5); pass stage='val' or stage='test'")
        return match.group(1)
    if stage not in ("val", "test"):
        raise ConfigError(f"stage {short(stage)} is not 'val' or 'test'")
    match = _FILE_NAME.search(path.name)
    if match is not None and match.group(1) != stage:
        logger.warning("%s is named for stage %r but is read as stage %r, as asked", path, match.group(1), stage)
    return stage


def _read_lists(json_path: Path, names: dict[str, str], hdf5_path: Path, argument: str) -> dict[str, list]:
    if not json_path.is_file():
        raise CheckpointError(f"{hdf5_path} needs {json_path.name}, expected at {json_path} (the official writer "
                              f"puts it beside the HDF5 file); download it too or pass {argument}=PATH")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{json_path} is not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{json_path} holds a {type(data).__name__}; expected an object with the lists "
                              f"{list(names.values())}")
    out = {}
    for group, name in names.items():
        if not isinstance(data.get(name), list):
            raise CheckpointError(f"{json_path} lacks the list {name!r} (rows of group {group!r}); it has "
                                  f"{sorted(data)}; expected {list(names.values())}")
        out[group] = data[name]
    return out


def _unique_ids(id_lists: dict[str, list], path: Path, ids_path: Path) -> tuple[dict[str, list[str]], int]:
    """Official ids, made unique over the file (module docstring); returns the ids per group and how many changed."""
    ids = {}
    for group in GROUPS:
        ids[group] = []
        for row, value in enumerate(id_lists[group]):
            if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
                raise DataError(f"{ids_path} list {ID_LISTS[group]!r} entry {row} is {short(value)}; expected a "
                                f"non-empty record id string (row {row} of group {group!r} of {path})", value=value)
            ids[group].append(str(value))
    counts = pd.Series([i for g in GROUPS for i in ids[g]], dtype=object).value_counts()
    repeated = set(counts.index[counts > 1])
    if not repeated:
        return ids, 0
    renamed = 0
    for group in GROUPS:
        in_group = pd.Series(ids[group], dtype=object)
        twice = set(in_group[in_group.duplicated(keep=False)])
        for row, value in enumerate(ids[group]):
            if value in repeated:
                ids[group][row] = f"{value}@{group}#{row}" if value in twice else f"{value}@{group}"
                renamed += 1
    all_ids = [i for g in GROUPS for i in ids[g]]
    if len(set(all_ids)) != len(all_ids):
        clash = pd.Series(all_ids).value_counts().index[0]
        raise DataError(f"{ids_path}: renaming repeated ids produced {clash!r}, which is already an id; make the ids "
                        "unique in the id file", record_id=clash)
    logger.info("%s: %d rows carry an id that occurs more than once; they are renamed <id>@<group>", path, renamed)
    return ids, renamed


def _metadata(label_lists: dict[str, list], record_ids: dict[str, list[str]], stage: str,
              labels_path: Path) -> pd.DataFrame:
    rows = []
    for group in GROUPS:
        for row, entry in enumerate(label_lists[group]):
            if not isinstance(entry, dict) or any(rank not in entry for rank in RANKS):
                raise DataError(f"{labels_path} list {LABEL_LISTS[group]!r} entry {row} (record "
                                f"{record_ids[group][row]!r}) is {short(entry)}; expected an object with "
                                f"{list(RANKS)}", record_id=record_ids[group][row], value=entry)
            bad = [r for r in RANKS if entry[r] is not None and not isinstance(entry[r], str)]
            if bad:
                raise DataError(f"{labels_path} list {LABEL_LISTS[group]!r} entry {row} (record "
                                f"{record_ids[group][row]!r}) has {bad[0]} {short(entry[bad[0]])}; expected a "
                                "name string or 'not_classified'", record_id=record_ids[group][row])
            rows.append({RECORD_ID: record_ids[group][row], **{r: clean_taxon(entry[r]) for r in RANKS},
                         BIN: pd.NA, SPLIT: group})
    meta = pd.DataFrame(rows, columns=list(META_COLUMNS)).astype(object)
    unseen_species = set(meta.loc[meta[SPLIT] == "unseen", "species"].dropna())
    is_key = meta[SPLIT] == "key"
    meta.loc[is_key, SPLIT] = np.where(meta.loc[is_key, "species"].isin(unseen_species), f"{stage}_unseen_keys",
                                       SPLIT_SEEN_KEYS)
    meta.loc[meta[SPLIT] == "seen", SPLIT] = f"{stage}_seen"
    meta.loc[meta[SPLIT] == "unseen", SPLIT] = f"{stage}_unseen"
    return meta.where(meta.notna(), pd.NA)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- vectors ----------------------------------------------------------------------------------------------------

def _dataset(handle, path: Path, group: str, name: str, rows: int, dim: int | None = None):
    """The dataset ``group/name`` after checking it is a floating (rows, d) array (None when absent)."""
    import h5py

    if name not in handle[group]:
        return None
    ds = handle[group][name]
    where = f"{path} group {group!r} dataset {name!r}"
    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind != "f":
        kind = ds.dtype if isinstance(ds, h5py.Dataset) else type(ds).__name__
        raise CheckpointError(f"{where} is {kind}; expected floating-point vectors (the official writer stores "
                              "float64)")
    if ds.ndim != 2 or ds.shape[0] != rows or ds.shape[1] < 1 or (dim is not None and ds.shape[1] != dim):
        expected = f"({rows}, {dim if dim is not None else 'd'})"
        raise CheckpointError(f"{where} has shape {ds.shape}; expected {expected}: one row per entry of the label "
                              "and id lists" + (f", dimension {dim} as in the other groups" if dim else ""))
    return ds


def _blocks(ds, start: int = 0, stop: int | None = None):
    stop = ds.shape[0] if stop is None else stop
    for a in range(start, stop, _CHUNK_ROWS):
        b = min(a + _CHUNK_ROWS, stop)
        yield a, b, np.asarray(ds[a:b], dtype=np.float64)


def _read_vectors(handle, path: Path, sizes: dict[str, int], record_ids: dict[str, list[str]]) -> dict[str, Any]:
    total = sum(sizes.values())
    found = {g: {m: _dataset(handle, path, g, name, sizes[g]) for m, name in DATASET_OF_MODALITY.items()}
             for g in GROUPS}
    dims: dict[str, int] = {}
    for group in GROUPS:
        for modality, ds in found[group].items():
            if ds is not None:
                dims.setdefault(modality, ds.shape[1])
                _dataset(handle, path, group, DATASET_OF_MODALITY[modality], sizes[group], dims[modality])
        if sizes[group] and all(ds is None for ds in found[group].values()):
            raise CheckpointError(f"{path} group {group!r} has {sizes[group]} rows in the label list but none of the "
                                  f"datasets {list(DATASET_OF_MODALITY.values())}")
    vectors = {m: np.full((total, dims[m]), np.nan, dtype=np.float32) for m in MODALITIES if m in dims}
    offset = 0
    for group in GROUPS:
        for modality, ds in found[group].items():
            if ds is None:
                if modality in dims and sizes[group]:
                    logger.warning("%s group %r has no %s: its %d rows get NaN %s vectors", path, group,
                                   DATASET_OF_MODALITY[modality], sizes[group], modality)
                continue
            for a, b, block in _blocks(ds):
                _check_unit(block, path, group, DATASET_OF_MODALITY[modality], a, record_ids[group])
                block /= np.linalg.norm(block, axis=1, keepdims=True)
                vectors[modality][offset + a: offset + b] = block
        _check_fused(handle, path, group, sizes[group], found[group])
        offset += sizes[group]
    return vectors


def _check_unit(block: np.ndarray, path: Path, group: str, name: str, start: int, ids: list[str]) -> None:
    where = f"{path} group {group!r} dataset {name!r}"
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        row = start + int(np.flatnonzero(~finite)[0])
        raise CheckpointError(f"{where} row {row} (record {ids[row]!r}) holds NaN or infinite values; the file is "
                              "corrupt, download it again")
    norms = np.linalg.norm(block, axis=1)
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        row = start + int(np.flatnonzero(off)[0])
        raise CheckpointError(f"{where} row {row} (record {ids[row]!r}) has L2 norm {norms[row - start]:.6g}; the "
                              f"official embeddings are unit vectors (|norm - 1| <= {NORM_TOLERANCE}), so this file "
                              "is not one, or is corrupt")


def _check_fused(handle, path: Path, group: str, rows: int, found: dict[str, Any]) -> None:
    """The stored fused features must equal what :mod:`clibd_toolkit.evaluate` recomputes from the same rows."""
    specs = {"averaged_feature": ("image", "dna"), "concatenated_feature": ("image", "dna")}
    if group == "key":
        specs["all_key_features"] = ("image", "dna", "text")
    for name, modalities in specs.items():
        if name not in handle[group]:
            continue
        where = f"{path} group {group!r} dataset {name!r}"
        parts = [found[m] for m in modalities]
        if any(part is None for part in parts):
            raise CheckpointError(f"{where} is present but not all of the datasets it is built from are: it needs "
                                  f"{[DATASET_OF_MODALITY[m] for m in modalities]}")
        dim = parts[0].shape[1]
        shape = {"averaged_feature": (rows, dim), "concatenated_feature": (rows, 2 * dim)}.get(name, (3 * rows, dim))
        ds = _dataset(handle, path, group, name, *shape)
        for a, b, block in _blocks(ds):
            diff = np.abs(block - _recompute(name, parts, rows, a, b)).max(axis=1, initial=0.0)
            bad = ~(diff <= FUSED_TOLERANCE)
            if bad.any():
                row = a + int(np.flatnonzero(bad)[0])
                raise CheckpointError(f"{where} row {row} differs from its recomputation from the image/DNA/text "
                                      f"rows by {diff[row - a]:.3g} (> {FUSED_TOLERANCE}); the file is inconsistent, "
                                      "download it again")


def _recompute(name: str, parts: list, rows: int, a: int, b: int) -> np.ndarray:
    """Rows [a, b) of a fused feature, formed as the official ``get_features_and_label`` forms it."""
    if name == "all_key_features":  # rows [i * rows, (i + 1) * rows) hold modality i: image, dna, text
        pieces = [np.asarray(part[max(a - i * rows, 0): min(b - i * rows, rows)], np.float64)
                  for i, part in enumerate(parts) if a < (i + 1) * rows and b > i * rows]
        return np.concatenate(pieces)
    image, dna = (np.asarray(part[a:b], np.float64) for part in parts)
    return np.mean([image, dna], axis=0) if name == "averaged_feature" else np.concatenate((image, dna), axis=1)
