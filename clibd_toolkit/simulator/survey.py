"""Simulated barcoding surveys: records generated lazily in chunks, written as a folder or a CLIBD HDF5 file.

Record ``i`` of a survey depends only on the config and ``i``: its species, barcode, labels and artefacts come
from the generator of its block of :data:`BLOCK` records (seeded with ``(seed, block)``), and its image from a
generator seeded with ``(seed, i)``. So the chunk size never changes the output, and growing ``records`` keeps
the records already generated.
"""
from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..schema import BIN, CANONICAL_COLUMNS, DNA, IMAGE, RANKS, RECORD_ID, SPLIT
from .barcodes import BarcodePool, build_barcodes, draw_barcodes
from .config import SimulatorConfig
from .images import Appearance, Renderer
from .taxonomy import BIN_MIN_LENGTH, UNLABELLED_RANK_PROBS, Taxonomy, build_taxonomy

logger = logging.getLogger(__name__)

#: records per random block: the unit of reproducibility (never change it; it would change every survey)
BLOCK = 1024
#: extra ground-truth columns written after the canonical ones
TRUTH_COLUMNS = ("true_species", "identified_to", "cryptic_group", "artefacts")
#: records per image folder (images/000/, images/001/, ...)
IMAGES_PER_FOLDER = 1000
DEFAULT_CHUNK_SIZE = 4096
SurveyFormat = Literal["folder", "hdf5"]

_ARTEFACT_NAMES = ("truncated", "n_run", "ambiguity")
_ARTEFACT_TEXT = np.array(
    [";".join(n for k, n in enumerate(_ARTEFACT_NAMES) if code >> k & 1) or pd.NA for code in range(8)], dtype=object)


@dataclass(frozen=True)
class _Block:
    species: np.ndarray
    depth: np.ndarray  # deepest labelled rank: 0 order .. 3 species
    barcodes: list[str]
    bins: np.ndarray  # BIN index, -1 = none (read too short)
    artefacts: np.ndarray  # 3-bit code: truncated | n_run << 1 | ambiguity << 2


class Survey:
    """The survey's fixed world (tree, barcodes, looks) and its record generator."""

    def __init__(self, config: SimulatorConfig):
        self.config = config
        self.taxonomy: Taxonomy = build_taxonomy(config)
        self.pool: BarcodePool = build_barcodes(self.taxonomy, config.seed)
        self.renderer = Renderer(Appearance(self.taxonomy, config.seed), config.image_size, config.image_format,
                                 config.jpeg_quality) if config.images else None
        tax = self.taxonomy
        self._cum_weight = np.cumsum(tax.species_weight)
        self._names = {
            "order": np.array(tax.orders, dtype=object)[tax.species_order],
            "family": np.array(tax.families, dtype=object)[tax.species_family],
            "genus": np.array(tax.genera, dtype=object)[tax.species_genus],
            "species": np.array(tax.species, dtype=object),
        }
        self._bins = np.array(list(tax.bins) + [pd.NA], dtype=object)  # index -1 -> NA
        self._cryptic = np.array([pd.NA if c is None else c for c in tax.cryptic_group], dtype=object)
        self._depth_names = np.array(RANKS, dtype=object)
        self._width = max(6, len(str(config.records - 1)))

    # --- records ----------------------------------------------------------------------------------------------
    def record_id(self, i: int) -> str:
        return f"SIM{i:0{self._width}d}"

    def image_path(self, i: int) -> str:
        """Image path of record ``i`` relative to the survey folder, e.g. ``images/000/SIM000123.jpg``."""
        return f"images/{i // IMAGES_PER_FOLDER:03d}/{self.record_id(i)}{self.config.image_extension}"

    def _block(self, b: int) -> _Block:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 10, b])
        # a full block is always drawn, so a survey's last partial block equals the same block of a longer survey
        species = np.minimum(np.searchsorted(self._cum_weight, rng.random(BLOCK), side="right"),
                             len(self._cum_weight) - 1)
        unlabelled = rng.random(BLOCK) < cfg.unlabelled_fraction
        depth = np.where(unlabelled, rng.choice(3, size=BLOCK, p=UNLABELLED_RANK_PROBS), 3)
        block = draw_barcodes(self.pool, species, rng, truncated_rate=cfg.truncated_rate,
                              n_run_rate=cfg.n_run_rate, ambiguity_rate=cfg.ambiguity_rate)
        bins = np.where(block.readable_length >= BIN_MIN_LENGTH, self.taxonomy.lineage_bin[block.lineage], -1)
        artefacts = block.truncated.astype(int) | block.n_run.astype(int) << 1 | block.ambiguous.astype(int) << 2
        return _Block(species=species, depth=depth, barcodes=block.strings(), bins=bins, artefacts=artefacts)

    def frame(self, start: int, stop: int, block_cache: dict[int, _Block] | None = None) -> pd.DataFrame:
        """Records ``start..stop-1`` as a canonical records table (images as encoded bytes, or missing)."""
        cache = {} if block_cache is None else block_cache
        parts: list[tuple[_Block, slice]] = []
        for b in range(start // BLOCK, (stop - 1) // BLOCK + 1):
            if b not in cache:
                cache.clear()  # chunks arrive in order: one block is all that needs keeping
                cache[b] = self._block(b)
            lo, hi = max(start, b * BLOCK) - b * BLOCK, min(stop, (b + 1) * BLOCK) - b * BLOCK
            parts.append((cache[b], slice(lo, hi)))
        species = np.concatenate([blk.species[s] for blk, s in parts])
        depth = np.concatenate([blk.depth[s] for blk, s in parts])
        bins = np.concatenate([blk.bins[s] for blk, s in parts])
        artefacts = np.concatenate([blk.artefacts[s] for blk, s in parts])
        barcodes = [seq for blk, s in parts for seq in blk.barcodes[s]]
        n = stop - start
        data: dict[str, Any] = {
            RECORD_ID: [self.record_id(i) for i in range(start, stop)],
            DNA: barcodes,
            IMAGE: self._images(start, species) if self.renderer is not None else [pd.NA] * n,
        }
        for k, rank in enumerate(RANKS):
            names = self._names[rank][species]
            names[depth < k] = pd.NA
            data[rank] = names
        data[BIN] = self._bins[bins]
        data[SPLIT] = [pd.NA] * n
        data["true_species"] = self._names["species"][species]
        data["identified_to"] = self._depth_names[depth]
        data["cryptic_group"] = self._cryptic[species]
        data["artefacts"] = _ARTEFACT_TEXT[artefacts]
        # text columns get pandas' string dtype (what normalise_records() infers for them), fixed so that every
        # chunk has the same dtypes even when a column happens to be all-missing in it
        frame = pd.DataFrame({k: pd.Series(list(v), dtype=object if k in (IMAGE, SPLIT) else "str")
                              for k, v in data.items()})
        return frame[list(CANONICAL_COLUMNS) + list(TRUTH_COLUMNS)]

    def _images(self, start: int, species: np.ndarray) -> list[bytes]:
        if self.renderer is None:
            raise ConfigError("this simulated survey has no images (SimulatorConfig(images=False)); "
                              "simulate with images=True to render them")
        out = []
        for offset, s in enumerate(species.tolist()):
            rng = np.random.default_rng([self.config.seed, 11, start + offset])
            out.append(self.renderer.encode(self.renderer.render(s, rng)))
        return out

    def chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE, start: int = 0, stop: int | None = None
               ) -> Iterator[pd.DataFrame]:
        stop = self.config.records if stop is None else stop
        cache: dict[int, _Block] = {}
        for lo in range(start, stop, chunk_size):
            yield self.frame(lo, min(lo + chunk_size, stop), cache)


def simulate_records(
    config: SimulatorConfig | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[pd.DataFrame]:
    """Generate a simulated survey lazily, as canonical records tables of ``chunk_size`` records.

    Memory stays bounded whatever ``config.records`` is: only the tree (a few kB per species) and one chunk are
    held at a time.

    Args:
        config: the survey (default: ``SimulatorConfig()``, 3,000 records with 128 px images).
        chunk_size: records per yielded table; it does not change the records.
        start: index of the first record to generate (e.g. to regenerate part of a large survey).
        stop: index after the last record (default: ``config.records``).

    Returns:
        An iterator of DataFrames with the canonical columns (``image`` holds encoded JPEG/PNG bytes, or
        ``pd.NA`` when ``config.images`` is false; ``split`` is empty) followed by the ground-truth columns
        ``true_species`` (the species of every record, labelled or not), ``identified_to`` (deepest labelled rank),
        ``cryptic_group`` (id shared by look-alike species) and ``artefacts`` (``truncated;n_run;ambiguity``).

    Raises:
        ConfigError: a bad ``chunk_size``, ``start`` or ``stop``.

    Example:
        >>> chunk = next(simulate_records(SimulatorConfig(records=500, images=False), chunk_size=100))
        >>> len(chunk)
        100
    """
    config = SimulatorConfig() if config is None else config
    stop = config.records if stop is None else stop
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"`chunk_size` got {chunk_size!r}; expected a positive integer")
    if not (0 <= start <= stop <= config.records):
        raise ConfigError(f"`start`/`stop` got {start}/{stop}; expected 0 <= start <= stop <= records "
                          f"({config.records})")
    return Survey(config).chunks(chunk_size, start, stop)


# --- writing ----------------------------------------------------------------------------------------------------


class _Tally:
    """Summary counts accumulated while a survey is written."""

    def __init__(self) -> None:
        self.records = 0
        self.images = 0
        self.labelled = Counter()
        self.identified_to = Counter()
        self.artefacts = Counter()
        self.species = Counter()
        self.bins: set[str] = set()
        self.cryptic_records = 0
        self.splits = Counter()

    def add(self, frame: pd.DataFrame) -> None:
        self.records += len(frame)
        self.images += int(frame[IMAGE].notna().sum())
        for rank in RANKS:
            self.labelled[rank] += int(frame[rank].notna().sum())
        self.identified_to.update(frame["identified_to"].tolist())
        for text in frame["artefacts"].dropna().tolist():
            self.artefacts.update(text.split(";"))
        self.species.update(frame["true_species"].tolist())
        self.bins.update(frame[BIN].dropna().tolist())
        self.cryptic_records += int(frame["cryptic_group"].notna().sum())
        self.splits.update(frame[SPLIT].dropna().tolist())

    def summary(self, survey: Survey) -> dict[str, Any]:
        tax = survey.taxonomy
        per_species = np.array(sorted(self.species.values(), reverse=True)) if self.species else np.zeros(1, int)
        genus_of = {name: tax.genera[g] for name, g in zip(tax.species, tax.species_genus.tolist())}
        family_of = {tax.genera[g]: tax.families[f] for g, f in enumerate(tax.genus_family.tolist())}
        order_of = {tax.families[f]: tax.orders[o] for f, o in enumerate(tax.family_order.tolist())}
        genera = {genus_of[s] for s in self.species}
        families = {family_of[g] for g in genera}
        return {
            "records": self.records,
            "records_with_image": self.images,
            "labelled_records": dict(self.labelled),
            "identified_to": {k: self.identified_to.get(k, 0) for k in RANKS},
            "artefacts": {k: self.artefacts.get(k, 0) for k in _ARTEFACT_NAMES},
            "records_in_cryptic_species": self.cryptic_records,
            "tree": {"orders": len(tax.orders), "families": len(tax.families), "genera": len(tax.genera),
                     "species": len(tax.species), "bins": len(tax.bins),
                     "cryptic_groups": sum(1 for c in set(tax.cryptic_group) if c is not None),
                     "species_split_across_two_bins": int((np.bincount(tax.lineage_species) > 1).sum()),
                     "species_sharing_a_bin": int((tax.close_to >= 0).sum()) * 2},
            "observed": {"orders": len({order_of[f] for f in families}), "families": len(families),
                         "genera": len(genera), "species": len(self.species), "bins": len(self.bins)},
            "records_per_species": {"max": int(per_species.max()), "median": float(np.median(per_species)),
                                    "species_with_1": int((per_species == 1).sum()),
                                    "species_with_10_or_more": int((per_species >= 10).sum())},
            "splits": dict(sorted(self.splits.items())),
        }


def _prepare_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "simulation.json").is_file():
            raise ConfigError(f"output folder {out} is not empty and holds no simulated survey (no simulation.json); "
                              "choose an empty or new folder")
        if not overwrite:
            raise ConfigError(f"output folder {out} already holds a simulated survey; pass overwrite=True "
                              "(--overwrite) to replace it, or choose another folder")
        shutil.rmtree(out / "images", ignore_errors=True)
        for name in ("records.csv", "simulation.json", "survey.h5"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def write_survey(
    out_dir: str | Path,
    config: SimulatorConfig | None = None,
    *,
    format: SurveyFormat = "folder",
    progress: bool = True,
    overwrite: bool = False,
    splits: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Path:
    """Simulate a survey and write it to ``out_dir``, streaming chunk by chunk (memory stays bounded).

    ``format="folder"`` writes ``records.csv`` (canonical columns + ground truth; ``image`` holds paths like
    ``images/000/SIM000123.jpg`` relative to the folder) and the image files; the folder loads with
    ``clibd_toolkit.load_records(out_dir)``. ``format="hdf5"`` writes ``survey.h5`` in the official CLIBD HDF5
    layout, whose groups are splits, so records always get CLIBD splits there (see :func:`survey_splits`). Both
    write ``simulation.json``: the config and summary counts. Files appear complete or not at all.

    Args:
        out_dir: folder to create (or empty, or a previous survey with ``overwrite=True``).
        config: the survey (default: ``SimulatorConfig()``).
        format: ``"folder"`` or ``"hdf5"``.
        progress: show a progress bar.
        overwrite: replace a survey already in ``out_dir``.
        splits: fill the ``split`` column with CLIBD splits (:func:`survey_splits`); by default it is left empty
            for the splitter of the training run (always filled for ``"hdf5"``).
        chunk_size: records generated at a time (does not change the output).

    Returns:
        What ``load_records`` reads: the folder (``"folder"``) or the ``survey.h5`` file (``"hdf5"``).

    Raises:
        ConfigError: an unknown format, or ``out_dir`` is not empty (and not a survey to overwrite).
    """
    from ..io import atomic_path, atomic_write_text

    config = SimulatorConfig() if config is None else config
    if format not in ("folder", "hdf5"):
        raise ConfigError(f"`format` got {format!r}; expected 'folder' or 'hdf5'")
    out = Path(out_dir).expanduser()
    _prepare_folder(out, overwrite)
    survey = Survey(config)
    tally = _Tally()
    split_values = survey_splits(config, chunk_size) if (splits or format == "hdf5") else None
    bar = _progress(config.records, progress)
    if format == "folder":
        target = out
        with atomic_path(out / "records.csv") as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
            for k, frame in enumerate(survey.chunks(chunk_size)):
                if split_values is not None:
                    frame[SPLIT] = split_values[k * chunk_size: k * chunk_size + len(frame)]
                tally.add(frame)
                if survey.renderer is not None:
                    frame[IMAGE] = _write_images(out, survey, frame, start=k * chunk_size)
                frame.to_csv(fh, index=False, header=k == 0, lineterminator="\n")
                bar.update(len(frame))
    else:
        target = _write_hdf5(out / "survey.h5", survey, tally, bar, chunk_size, split_values)
    bar.close()
    summary = {"config": config.to_json_dict(), "summary": tally.summary(survey),
               "files": {"records": "records.csv" if format == "folder" else "survey.h5",
                         "images": "images/" if (format == "folder" and config.images) else None}}
    atomic_write_text(out / "simulation.json", json.dumps(summary, indent=2) + "\n")
    logger.info("wrote a simulated survey of %d records to %s", config.records, target)
    return target


def _write_images(out: Path, survey: Survey, frame: pd.DataFrame, start: int) -> list[str]:
    paths = []
    for offset, data in enumerate(frame[IMAGE].tolist()):
        rel = survey.image_path(start + offset)
        path = out / rel
        if offset == 0 or (start + offset) % IMAGES_PER_FOLDER == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(rel)
    return paths


def _write_hdf5(path: Path, survey: Survey, tally: _Tally, bar: Any, chunk_size: int,
                splits: np.ndarray) -> Path:
    from ..hdf5_writer import write_clibd_hdf5

    def chunks() -> Iterator[pd.DataFrame]:
        for k, frame in enumerate(survey.chunks(chunk_size)):
            frame[SPLIT] = splits[k * chunk_size: k * chunk_size + len(frame)]
            tally.add(frame)
            bar.update(len(frame))
            yield frame

    return write_clibd_hdf5(path, chunks(), jpeg_quality=survey.config.jpeg_quality, progress=False)


def survey_splits(config: SimulatorConfig, chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """The CLIBD split of every record of a survey (:func:`clibd_toolkit.splits.assign_splits`, default
    :class:`~clibd_toolkit.splits.SplitConfig`), from a first pass over the labels only (no images).

    Returns:
        (records,) object array of split names, in record order.
    """
    from ..splits import assign_splits

    labels = pd.concat([f[[RECORD_ID, "species"]] for f in Survey(config.replace(images=False)).chunks(chunk_size)],
                       ignore_index=True)
    return assign_splits(labels)[SPLIT].to_numpy(dtype=object)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="simulating survey", unit="rec")
