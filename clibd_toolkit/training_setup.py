"""What a training run starts from, checked before any compute is spent: the records it trains on and the run folder
it writes (the train stage's set-up; the loop itself is :mod:`clibd_toolkit.training`).

- :func:`check_trainable` finds every record that cannot be trained on (a barcode shorter than one k-mer, a missing
  or unreadable image, none of the model's modalities) and raises one error listing them, or leaves them out into a
  rejects list;
- :func:`training_records` chooses the records to train on: the ``pretrain`` + ``train`` splits of the data's split
  column, of the seeded default split that ``clibd evaluate`` applies, or every record (``all_records``);
- :func:`resume_checkpoint` checks that the run folder may be used (empty for a new run; started with the same
  settings for ``resume``) and finds the checkpoint to resume from;
- :func:`write_train_ids` / :func:`read_train_ids`: the ids of the records a run trained on
  (``RUN/train_records.txt``), so that a later evaluation or calibration knows which taxa the model has seen.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import ModelConfig, TrainConfig
from .errors import CheckpointError, DataError
from .io import atomic_write_text
from .records import Rejects
from .schema import DNA, IMAGE, RECORD_ID
from .splits import SplitConfig, ensure_splits, has_splits, split_summary, train_mask

log = logging.getLogger(__name__)
#: the run folder's list of the record ids it trained on (read by evaluation and calibration; torch-free to read)
TRAIN_IDS_FILE = "train_records.txt"


# --- the records ----------------------------------------------------------------------------------------------


def check_trainable(records: pd.DataFrame, modalities: tuple[str, ...], k: int, *, on_error: str = "raise",
                    rejects: Rejects | None = None) -> pd.DataFrame:
    """Find every record that cannot be trained on (barcode shorter than one k-mer, missing image file or one that
    is no image at all (its header is read), no modality of the model at all), before any compute is spent. Raises one DataError listing all of them, or
    with ``on_error="skip"`` leaves them out and adds each to ``rejects``."""
    from .batching import modality_present  # torch: imported where needed, so reading train ids stays light

    problems: list[tuple[int, str, str, Any, str]] = []
    ids = records[RECORD_ID].tolist()
    if "dna" in modalities:
        for i, seq in enumerate(records[DNA].tolist()):
            if isinstance(seq, str) and len(seq) < k:
                problems.append((i, ids[i], DNA, seq, f"barcode is {len(seq)} nt, shorter than one {k}-mer"))
    if "image" in modalities:
        from PIL import Image

        for i, img in enumerate(records[IMAGE].tolist()):
            if not isinstance(img, str) or "://" in img:
                continue
            if not Path(img).is_file():
                problems.append((i, ids[i], IMAGE, img, "image file does not exist"))
                continue
            try:  # the header only (cheap): a file that is no image at all fails here, not mid-training
                with Image.open(img) as im:
                    im.size  # noqa: B018
            except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file
                problems.append((i, ids[i], IMAGE, img, f"not an image PIL can read ({type(exc).__name__})"))
    usable = np.zeros(len(records), dtype=bool)
    for m in modalities:
        if m != "text":
            usable |= modality_present(records, m)
    if set(modalities) <= {"text"}:
        usable[:] = True
    for i in np.flatnonzero(~usable):
        problems.append((int(i), ids[i], "/".join(m for m in modalities if m != "text"), None,
                         f"record has none of the model's input modalities {list(modalities)}"))
    if not problems:
        return records
    if on_error == "raise":
        listed = "; ".join(f"{rid}: {reason}" for _, rid, _, _, reason in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise DataError(f"{len(problems)} record(s) cannot be used for training: {listed}{more}. Fix them, or pass "
                        "on_error='skip' (--on-error skip) to leave them out and list them in a rejects file",
                        record_id=problems[0][1])
    bad = np.zeros(len(records), dtype=bool)
    for i, rid, col, value, reason in problems:
        if not bad[i]:
            rejects.add(row=i, record_id=rid, column=col, value=value, reason=reason)
        bad[i] = True
    return records.loc[~bad].reset_index(drop=True)


def training_records(records: pd.DataFrame, model_config: ModelConfig, train_config: TrainConfig, run_dir: Path,
                      on_error: str, *, rank: int, world: int) -> tuple[pd.DataFrame, pd.DataFrame, Rejects,
                                                                        dict[str, Any]]:
    """The records to train on, checked for trainability: the ``pretrain`` + ``train`` splits of the data's split
    column; without one, of the seeded default split that ``clibd evaluate`` applies (so that its queries and keys
    are held out), or every record when ``train_config.all_records``. Returns the records with their splits (for
    validation), the training records, the rejected ones (listed in ``run_dir/rejects.csv``) and what was done
    about splits (for ``run.json``)."""
    had_splits = has_splits(records)
    info: dict[str, Any] = {"splits_from_data": had_splits, "default_split_applied": False, "split_seed": None}
    if had_splits:
        train_records = records.loc[train_mask(records)].reset_index(drop=True)
    elif train_config.all_records:
        train_records = records
        if rank == 0:
            log.warning("the data has no split column and all_records is set: training on all %d records, with no "
                        "validation (the best checkpoint is the last); an evaluation on this data is optimistic",
                        len(records))
    else:
        records, _ = ensure_splits(records, SplitConfig(seed=train_config.split_seed))
        info.update(default_split_applied=True, split_seed=train_config.split_seed)
        train_records = records.loc[train_mask(records)].reset_index(drop=True)
        if train_records.empty:
            counts = split_summary(records)
            raise DataError(
                f"the data has no split column and the default CLIBD-style split (seed {train_config.split_seed}) "
                f"leaves no training records: species with fewer than {SplitConfig().tail_threshold} records are "
                "all held out as unseen (" + ", ".join(f"{r.split}: {r.n_records}" for r in counts.itertuples()
                                                      if r.split != "total")
                + "); give the data a split column (clibd_toolkit.splits.assign_splits), or train on every record "
                "with --all-records (TrainConfig.all_records) and expect optimistic evaluations")
        if rank == 0:
            log.warning("the data has no split column: applied the default CLIBD-style split (seed %d), as `clibd "
                        "evaluate` does; training on its %d pretrain + train records of %d (its queries and keys are "
                        "held out; --all-records trains on every record)", train_config.split_seed,
                        len(train_records), len(records))
    rejects = Rejects()
    train_records = check_trainable(train_records, model_config.modalities, model_config.dna_k, on_error=on_error,
                                    rejects=rejects)
    if len(rejects) and rank == 0:
        rejects.save(run_dir / "rejects.csv")
        log.warning("left out %d unusable records, listed in %s", len(rejects), run_dir / "rejects.csv")
    if len(train_records) < max(2, world):
        raise DataError(f"only {len(train_records)} training record(s); contrastive training needs at least 2 (and "
                        f"one per process: {world})")
    return records, train_records, rejects, info


# --- the run folder -----------------------------------------------------------------------------------------------


def resume_checkpoint(run_dir: Path, model_config: ModelConfig, train_config: TrainConfig,
                       resume: bool) -> Path | None:
    """The newest complete epoch checkpoint to resume from (None: start afresh), after checking that ``run_dir``
    may be used: a resumed run must have been started with the same settings, a new one needs an empty folder."""
    from .checkpoint import list_epoch_checkpoints, read_run_info

    existing = list_epoch_checkpoints(run_dir)
    if not resume:
        if existing:
            raise CheckpointError(f"{run_dir} already holds a training run; pass --resume to continue it or choose a "
                                  "new --out folder")
        return None
    if (run_dir / "run.json").is_file():
        saved_model, saved_train, _ = read_run_info(run_dir)
        # how batches are built and shown may change: the results do not depend on them
        same = saved_train.replace(progress=train_config.progress, num_workers=train_config.num_workers)
        if saved_model != model_config or same != train_config:
            raise CheckpointError(f"--resume: {run_dir} was started with different settings; resume with the "
                                  "same preset, modalities and training options, or use a new --out folder")
    return existing[-1] if existing else None


def write_train_ids(run_dir: str | Path, ids: Iterable[Any]) -> Path:
    """Write the ids of the records a run trains on to ``run_dir/train_records.txt`` (one per line, atomically)."""
    path = Path(run_dir) / TRAIN_IDS_FILE
    atomic_write_text(path, "\n".join(map(str, ids)) + "\n")
    return path


def read_train_ids(run_dir: str | Path) -> set[str] | None:
    """Record ids a run trained on (``train_records.txt``), or None for a run folder without the file."""
    path = Path(run_dir) / TRAIN_IDS_FILE
    if not path.is_file():
        return None
    return {line for line in path.read_text().splitlines() if line}
