"""Contrastive training (reference section 3): AdamW + one-cycle schedule, per-epoch atomic checkpoints, exact
resume, best checkpoint by validation metric, bf16 autocast on GPU, gradient accumulation, torchrun/DDP aware.

Determinism: the record order of each epoch, every augmentation and every dropout mask derive from
``(seed, epoch)``, so a run killed at any point and resumed with ``resume=True`` redoes the interrupted epoch from
the last complete checkpoint and ends with the same weights as an uninterrupted run (on CPU).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from .batching import modality_present
from .checkpoint import (
    checkpoint_folder,
    list_epoch_checkpoints,
    load_model_state,
    load_trainer_state,
    prune_checkpoints,
    read_run_info,
    save_checkpoint,
    write_run_info,
)
from .config import ModelConfig, TrainConfig
from .distributed import broadcast_module, distributed_session
from .errors import CheckpointError, ConfigError, DataError
from .loss import ContrastiveLoss
from .model import CLIBDModel
from .records import Rejects, check_records
from .schema import DNA, IMAGE, RECORD_ID

log = logging.getLogger(__name__)
TRAIN_IDS_FILE = "train_records.txt"


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    model: CLIBDModel
    epochs: int
    steps: int
    history: pd.DataFrame
    best_epoch: int
    best_metric: float | None
    val_metrics: list[dict[str, Any]] = field(default_factory=list)
    #: records left out (``on_error="skip"``): unusable before training plus undecodable during it; each is listed
    #: in ``run_dir/rejects.csv``
    rejected: int = 0


# --- devices and distributed --------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda (LOCAL_RANK under torchrun), else mps, else cpu; explicit names are checked."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available; use device='auto' or 'cpu'")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for but is not available; use device='auto' or 'cpu'")
    return torch.device(device)


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


# --- data checks --------------------------------------------------------------------------------------------


def check_trainable(records: pd.DataFrame, modalities: tuple[str, ...], k: int, *, on_error: str = "raise",
                    rejects: Rejects | None = None) -> pd.DataFrame:
    """Find every record that cannot be trained on (barcode shorter than one k-mer, missing image file or one that
    is no image at all (its header is read), no modality of the model at all), before any compute is spent. Raises one DataError listing all of them, or
    with ``on_error="skip"`` leaves them out and adds each to ``rejects``."""
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


# --- validation ---------------------------------------------------------------------------------------------


def _validation_metric(model: CLIBDModel, records: pd.DataFrame) -> tuple[float | None, dict[str, Any]]:
    """CLIBD checkpoint selection: mean top-1 micro+macro accuracy over every pair, seen+unseen, 4 ranks (val)."""
    from .embed import extract_embeddings
    from .evaluate import EvalConfig, evaluate_embeddings, mean_top1
    from .splits import has_splits, key_mask, query_mask

    if not has_splits(records):
        return None, {}
    keys = key_mask(records)
    queries = query_mask(records, "val", "seen") | query_mask(records, "val", "unseen")
    if not keys.any() or not queries.any():
        return None, {}
    subset = records.loc[keys | queries].reset_index(drop=True)
    from .records import Rejects

    undecodable = Rejects()  # validation is a side measurement: a record whose image fails is left out, and said
    emb = extract_embeddings(model, subset, progress=False, rejects=undecodable)
    if len(undecodable):
        log.warning("validation left out %d record(s) whose input could not be decoded (first: %s)",
                    len(undecodable), undecodable.rows[0]["reason"])
    result = evaluate_embeddings(emb, EvalConfig(stage="val"))
    value = mean_top1(result)
    return value, {"mean_top1": value, "n_queries": int(queries.sum()), "n_keys": int(keys.sum())}


# --- the loop -----------------------------------------------------------------------------------------------


def train(
    records: pd.DataFrame,
    model_config: ModelConfig,
    train_config: TrainConfig = TrainConfig(),
    run_dir: str | Path = "run",
    *,
    resume: bool = False,
    on_error: str = "raise",
    data_info: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a CLIBD model contrastively on ``records`` and write the run folder.

    Training records are the ``pretrain`` + ``train`` splits (validation then uses ``val_seen``/``val_unseen``
    queries against the pooled keys to pick the best checkpoint): of the table's split column, or, without one, of
    the seeded default split (``train_config.split_seed``) that ``clibd evaluate`` applies to the same records, so
    that the evaluation's queries and keys are held out; ``train_config.all_records`` trains on every record of a
    table without splits instead (no validation; evaluations on that data are then optimistic). The ids of the records trained on are written to ``run_dir/train_records.txt`` so that a later evaluation can
    report any overlap between its queries and the training data.

    Under ``torchrun --nproc_per_node N`` (one process per GPU, or N CPU processes with gloo) the processes join one
    process group (:mod:`clibd_toolkit.distributed`) and train with DistributedDataParallel: ``batch_size`` is the
    global batch (``batch_size // N`` records per rank), the contrastive loss sees the features of all ranks
    (gathered with gradients), each epoch reshuffles with the epoch's seed, and only rank 0 validates, logs and
    writes the run folder; at the end every rank holds rank 0's best weights.

    Args:
        records: canonical records table (see :func:`clibd_toolkit.load_records`).
        model_config: which encoders (and so which modalities) to train; see :mod:`clibd_toolkit.presets`.
        train_config: optimisation settings.
        run_dir: output folder (created); must not hold another run unless ``resume``.
        resume: continue from the newest complete checkpoint in ``run_dir`` with the same configs.
        on_error: ``"skip"`` leaves out unusable records (listed in ``run_dir/rejects.csv``) instead of raising.

    Returns:
        A :class:`TrainResult` with the trained model (best checkpoint loaded) and the loss history.

    Raises:
        ConfigError, DataError, CheckpointError: bad settings, unusable records, or a run folder that does not fit.
    """
    with distributed_session():
        return _train(records, model_config, train_config, Path(run_dir), resume=resume, on_error=on_error,
                      data_info=data_info)


def _train(records: pd.DataFrame, model_config: ModelConfig, train_config: TrainConfig, run_dir: Path, *,
           resume: bool, on_error: str, data_info: dict[str, Any] | None) -> TrainResult:
    rank, world = dist_info()
    check_records(records, need=model_config.modalities)
    if len(model_config.modalities) < 2:
        raise ConfigError("contrastive training needs at least two modalities; the model has "
                          f"{list(model_config.modalities)}")
    resume_from = _resume_checkpoint(run_dir, model_config, train_config, resume)
    records, train_records, rejects, split_info = _training_records(records, model_config, train_config, run_dir,
                                                                    on_error, rank=rank, world=world)
    n_rejected = len(rejects)
    trainer = _Trainer(model_config, train_config, train_records, rank=rank, world=world, on_error=on_error,
                       rejects=rejects)
    trainer.run_dir = run_dir
    if resume_from is not None:
        trainer.restore(resume_from)
        trainer.skip_rejected_before(run_dir / "rejects.csv")
        log.info("resuming %s from epoch %d (step %d)", run_dir, trainer.progress.epoch, trainer.progress.global_step)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        info = {"n_records": len(records), "n_train": len(train_records), "n_rejected": n_rejected, **split_info,
                **(data_info or {})}
        write_run_info(run_dir, model_config, train_config, info)
        from .io import atomic_write_text

        atomic_write_text(run_dir / TRAIN_IDS_FILE, "\n".join(map(str, train_records[RECORD_ID])) + "\n")
    trainer.step_module = wrap_for_training(trainer.model, trainer.device)  # DDP under torchrun

    done = trainer.progress.global_step >= trainer.total_steps
    for epoch in range(trainer.progress.epoch, train_config.epochs):
        if done:
            break
        done = trainer.run_epoch(epoch)
        trainer.end_epoch(epoch, records, run_dir, done=done)
        if world > 1:
            dist.barrier()
    return trainer.finish(run_dir)


def _resume_checkpoint(run_dir: Path, model_config: ModelConfig, train_config: TrainConfig,
                       resume: bool) -> Path | None:
    """The newest complete epoch checkpoint to resume from (None: start afresh), after checking that ``run_dir``
    may be used: a resumed run must have been started with the same settings, a new one needs an empty folder."""
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


def _training_records(records: pd.DataFrame, model_config: ModelConfig, train_config: TrainConfig, run_dir: Path,
                      on_error: str, *, rank: int, world: int) -> tuple[pd.DataFrame, pd.DataFrame, Rejects,
                                                                        dict[str, Any]]:
    """The records to train on, checked for trainability: the ``pretrain`` + ``train`` splits of the data's split
    column; without one, of the seeded default split that ``clibd evaluate`` applies (so that its queries and keys
    are held out), or every record when ``train_config.all_records``. Returns the records with their splits (for
    validation), the training records, the rejected ones (listed in ``run_dir/rejects.csv``) and what was done
    about splits (for ``run.json``)."""
    from .splits import SplitConfig, ensure_splits, has_splits, split_summary, train_mask

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


@dataclass
class _Progress:
    """Where training stands: what an epoch checkpoint carries besides the weights and optimiser state."""

    epoch: int = 0  # epochs completed
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    val_metrics: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int = 0

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "_Progress":
        return cls(epoch=int(state["epoch"]), global_step=int(state["global_step"]),
                   history=list(state.get("history", [])), val_metrics=list(state.get("val_metrics", [])),
                   best_metric=state.get("best_metric"), best_epoch=int(state.get("best_epoch", 0)))

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "global_step": self.global_step, "history": self.history,
                "val_metrics": self.val_metrics, "best_metric": self.best_metric, "best_epoch": self.best_epoch}


class _Trainer:
    """The model, optimiser, schedule and progress of one training run (one process of it under torchrun)."""

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig, train_records: pd.DataFrame, *,
                 rank: int, world: int, on_error: str = "raise", rejects: Rejects | None = None):
        self.model_config, self.cfg, self.records = model_config, train_config, train_records
        self.rank, self.world = rank, world
        # on_error="skip": a record whose input fails only when decoded (e.g. a truncated JPEG) is left out of its
        # batch and of every later one, and listed in rejects.csv (kind "decode") at the end of the epoch
        self.on_error, self.rejects = on_error, rejects if rejects is not None else Rejects()
        self.undecodable: set[str] = set()
        self.run_dir: Path | None = None  # set by train(); named in a divergence error
        self.device = resolve_device(train_config.device)
        self.bf16 = train_config.precision == "bf16" or (train_config.precision == "auto"
                                                         and self.device.type == "cuda")
        if self.bf16 and self.device.type == "cpu":
            log.info("bf16 autocast on CPU")
        _seed_everything(train_config.seed)
        self.model = CLIBDModel(model_config).to(self.device)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=train_config.lr, weight_decay=train_config.weight_decay)

        self.per_rank_batch = max(2, train_config.batch_size // world)
        # fewer records than one global batch: one (smaller) batch per epoch
        self.n_batches = max(1, len(train_records) // (self.per_rank_batch * world))
        self.steps_per_epoch = max(1, self.n_batches // train_config.grad_accum_steps)
        self.total_steps = self.steps_per_epoch * train_config.epochs
        if train_config.max_steps:
            self.total_steps = min(self.total_steps, train_config.max_steps)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=train_config.lr, total_steps=max(self.total_steps, 2),
            pct_start=train_config.pct_start, anneal_strategy="cos", cycle_momentum=False,
            div_factor=train_config.div_factor, final_div_factor=train_config.final_div_factor)
        self.progress = _Progress()
        self.step_module: torch.nn.Module | None = None  # set by _train after any restore (DDP under torchrun)
        self.loss_fn = ContrastiveLoss()

    def restore(self, checkpoint: Path) -> None:
        state = load_trainer_state(checkpoint)
        load_model_state(checkpoint, self.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.progress = _Progress.from_state(state)

    def skip_rejected_before(self, rejects_csv: Path) -> None:
        """On resume: the records an earlier part of the run found undecodable stay left out (and listed)."""
        if self.on_error != "skip" or not rejects_csv.is_file():
            return
        earlier = pd.read_csv(rejects_csv, dtype=str, keep_default_na=False)
        for row in earlier.loc[earlier["kind"] == "decode"].to_dict(orient="records"):
            if row["record_id"] not in self.undecodable:
                self.undecodable.add(row["record_id"])
                self.rejects.add(row=None, record_id=row["record_id"], column=row["column"], value=row["value"],
                                 reason=row["reason"], kind="decode")

    def run_epoch(self, epoch: int) -> bool:
        """Train one epoch (or up to ``total_steps``); returns whether training is done."""
        from tqdm.auto import tqdm

        cfg, progress, model = self.cfg, self.progress, self.model
        epoch_seed = _epoch_seed(cfg.seed, epoch)
        # dropout masks: the epoch's seed, offset by rank so that ranks do not share masks (rank 0 = single process)
        torch.manual_seed(epoch_seed + self.rank)
        order = torch.randperm(len(self.records), generator=torch.Generator().manual_seed(epoch_seed)).numpy()
        order = rank_slice(order, self.n_batches * self.per_rank_batch * self.world, self.rank, self.world)
        model.train()
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not (cfg.progress and self.rank == 0), leave=False)
        self.optimizer.zero_grad(set_to_none=True)
        accum, done = 0, False
        batches = self._epoch_batches(epoch, order)
        try:
            for built in batches:
                loss = self._backward(epoch, built, sync=accum + 1 >= cfg.grad_accum_steps or self.world == 1)
                if loss is None:  # every record of the micro-batch but one was undecodable (on_error="skip")
                    continue
                accum += 1
                if accum < cfg.grad_accum_steps:
                    continue
                step_lr = self.optimizer.param_groups[0]["lr"]  # the learning rate this step used
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                model.clamp_logit_scale()
                accum = 0
                progress.global_step += 1
                progress.history.append({"epoch": epoch + 1, "step": progress.global_step,
                                         "loss": float(loss.detach()), "lr": step_lr,
                                         "logit_scale": float(model.scale().detach())})
                if not math.isfinite(progress.history[-1]["loss"]):
                    bar.close()
                    self._diverged(f"the loss became {progress.history[-1]['loss']}", step_lr)
                bar.update(1)
                bar.set_postfix(loss=f"{progress.history[-1]['loss']:.4f}")
                if progress.global_step >= self.total_steps:
                    done = True
                    break
        finally:
            batches.close()  # stops the DataLoader workers (also when max_steps ends the epoch early)
        bar.close()
        bad = [name for name, p in model.named_parameters() if not torch.isfinite(p.detach()).all()]
        if bad:
            self._diverged(f"{len(bad)} weight tensor(s) are no longer finite (e.g. {bad[0]})",
                           self.optimizer.param_groups[0]["lr"])
        return done

    def _diverged(self, what: str, lr: float) -> None:
        """Stop training: nothing of this epoch is saved, the checkpoints of earlier epochs stay."""
        from .errors import TrainingDivergedError

        last = self.progress.history[-1] if self.progress.history else {}
        kept = ""
        if self.run_dir is not None:
            saved = list_epoch_checkpoints(self.run_dir)
            kept = (f"; the last good checkpoint is {saved[-1]}" if saved else "; no checkpoint was written yet")
        raise TrainingDivergedError(
            f"training diverged at step {self.progress.global_step}: {what} (loss {last.get('loss')}, learning "
            f"rate {lr:.3g}){kept}. Lower the learning rate (--lr; now {self.cfg.lr:g}) and train again")

    def _epoch_batches(self, epoch: int, order: np.ndarray):
        """This rank's micro-batches of the epoch (record positions from ``order``, records found undecodable
        earlier left out), built in ``cfg.num_workers`` DataLoader workers (0: here, one at a time); see
        :mod:`clibd_toolkit.train_data`. A generator: close it to stop the workers."""
        from .train_data import TrainBatches, iter_batches

        cfg = self.cfg
        ids = self.records[RECORD_ID].astype(str).to_numpy()
        plan = []
        for b in range(0, len(order), self.per_rank_batch):
            idx = order[b: b + self.per_rank_batch]
            if len(idx) < 2 and self.world == 1:
                continue
            if self.undecodable:
                idx = idx[~np.isin(ids[idx], list(self.undecodable))]
            plan.append(idx)
        dataset = TrainBatches(self.model.preprocess, self.records, self.model_config.modalities, plan,
                               seed=cfg.seed, epoch=epoch, augment=cfg.augment, on_error=self.on_error,
                               world=self.world)
        return iter_batches(dataset, num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
                            seed=_epoch_seed(cfg.seed, epoch) + self.rank)

    def _backward(self, epoch: int, built, *, sync: bool) -> torch.Tensor | None:
        """Forward and backward of one micro-batch of ``epoch`` (a :class:`~clibd_toolkit.train_data.BuiltBatch`,
        built by :meth:`_epoch_batches`); returns its
        loss, or None when fewer than two of its records could be decoded (``on_error="skip"``: the rest are
        listed as rejects and left out of later epochs)."""
        cfg = self.cfg
        for r in built.rejected:
            if r.record_id in self.undecodable:
                continue
            self.undecodable.add(r.record_id)
            self.rejects.add(row=None, record_id=r.record_id, column=r.column, value=r.value, reason=r.reason,
                             kind="decode")
            log.warning("left out record %s from training (epoch %d): %s", r.record_id, epoch + 1, r.reason)
        built.raise_error()
        if built.batch is None:
            return None
        batch = built.batch
        # gradient accumulation under DDP: all-reduce only on the micro-batch that ends the step
        with (contextlib.nullcontext() if sync else self.step_module.no_sync()):
            loss = batch_loss(self.step_module, self.loss_fn, batch, self.model_config.modalities,
                              device=self.device, bf16=self.bf16)
            (loss / cfg.grad_accum_steps).backward()
        return loss

    def end_epoch(self, epoch: int, records: pd.DataFrame, run_dir: Path, *, done: bool) -> None:
        """Validate when due (rank 0), then write the epoch checkpoint, ``best`` when it improved, history.csv."""
        cfg, progress, is_main = self.cfg, self.progress, self.rank == 0
        progress.epoch = epoch + 1
        metric = None
        if ((epoch + 1) % cfg.eval_every == 0 or done or epoch + 1 == cfg.epochs) and is_main:
            metric, detail = _validation_metric(self.model, records)
            if detail:
                progress.val_metrics.append({"epoch": epoch + 1, **detail})
        improved = metric is None or progress.best_metric is None or metric > progress.best_metric
        if improved:
            progress.best_metric, progress.best_epoch = metric, epoch + 1
        if not is_main:
            return
        meta = {"epoch": epoch + 1, "global_step": progress.global_step, "val_metric": metric,
                "model_config": self.model_config.to_json_dict(), "train_config": cfg.to_json_dict()}
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 **progress.state()}
        save_checkpoint(run_dir, f"epoch-{epoch + 1:04d}", self.model, trainer_state=state, meta=meta)
        if improved:
            save_checkpoint(run_dir, "best", self.model, trainer_state=None, meta=meta)
        pd.DataFrame(progress.history).to_csv(run_dir / "history.csv", index=False)
        if self.undecodable:
            self.rejects.save(run_dir / "rejects.csv")
        prune_checkpoints(run_dir, cfg.keep_checkpoints)

    def finish(self, run_dir: Path) -> TrainResult:
        """Load the best checkpoint (rank 0; the other ranks take its weights) and return the result."""
        progress, model = self.progress, self.model
        if self.rank == 0:
            if not (run_dir / "checkpoints" / "best").is_dir() and list_epoch_checkpoints(run_dir):
                raise CheckpointError(f"{run_dir}: no best checkpoint was written")
            meta = load_model_state(checkpoint_folder(run_dir, "best"), model)
            # the same identity load_run gives it, so that embeddings made with this model record which model it is
            model.source = {"kind": "run", "run": str(Path(run_dir).resolve()), "checkpoint": "best",
                            "model_sha256": meta.get("model_sha256")}
        if self.world > 1:
            # the other ranks take rank 0's best weights and bookkeeping (no shared file system needed)
            broadcast_module(model)
            shared = [progress.best_epoch, progress.best_metric, progress.val_metrics]
            dist.broadcast_object_list(shared, src=0)
            progress.best_epoch, progress.best_metric, progress.val_metrics = shared
        model.eval()
        return TrainResult(run_dir, model, epochs=self.cfg.epochs, steps=progress.global_step,
                           history=pd.DataFrame(progress.history), best_epoch=progress.best_epoch,
                           best_metric=progress.best_metric, val_metrics=progress.val_metrics,
                           rejected=len(self.rejects))


# --- one training step, single process or DDP ------------------------------------------------------------


class TrainStep(torch.nn.Module):
    """The module DDP wraps: the encoders *and* the logit scale in one forward.

    DDP all-reduces the gradient of a parameter only if it is reached from the forward's outputs; the learned
    temperature is used by the loss, so it is returned from here rather than read from the model outside forward
    (which breaks DDP's unused-parameter bookkeeping).
    """

    def __init__(self, model: CLIBDModel):
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return self.model(inputs), self.model.scale()


def wrap_for_training(model: CLIBDModel, device: torch.device) -> torch.nn.Module:
    """:class:`TrainStep` around ``model``, inside DistributedDataParallel when a process group of >1 ranks exists.

    DDP broadcasts rank 0's weights at construction, so every rank starts from the same model.
    """
    step = TrainStep(model)
    _, world = dist_info()
    if world == 1:
        return step
    # every encoder runs at every step (see batch_loss), so DDP needs the per-step search for unused parameters
    # (an extra autograd-graph traversal) only if some trainable weight is never used by a forward at all
    return torch.nn.parallel.DistributedDataParallel(
        step, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=bool(unused_parameters(model)))


def unused_parameters(model: CLIBDModel) -> list[str]:
    """Names of trainable weights that get no gradient from a forward of every encoder (one placeholder input each).

    Runs in eval mode (no batch-norm statistics or dropout state change) and leaves no gradients behind.
    """
    was_training = model.training
    model.eval()
    try:
        feats = model({m: _placeholder_inputs(model, m) for m in model.modalities})
        total = sum(f.float().sum() for f in feats.values()) + model.scale()
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(total, [p for _, p in params], allow_unused=True)
        return [n for (n, _), g in zip(params, grads) if g is None]
    finally:
        model.train(was_training)


def rank_slice(order: np.ndarray, n_used: int, rank: int, world: int) -> np.ndarray:
    """This rank's records of an epoch permutation: every ``world``-th of its first ``n_used`` (DistributedSampler).

    Local batch ``b`` of all ranks together is then exactly records ``order[b*B*world:(b+1)*B*world]``, the global
    batch a single process with batch ``B*world`` would take. With fewer records than one global batch, all
    ranks get the same number of records (a multiple of ``world`` is used), as the feature gather needs.
    """
    if len(order) < n_used or n_used == 0:
        n_used = len(order) - len(order) % world if world > 1 else len(order)
    return order[:n_used][rank::world]


def _placeholder_inputs(model: CLIBDModel, modality: str) -> Any:
    """One dummy input of ``modality`` (used when a rank's batch lacks the modality; see :func:`batch_loss`)."""
    if modality == "dna":
        return model.preprocess.dna(["A" * model.config.dna_k], ["placeholder"])
    if modality == "image":
        size = model.config.image_size
        return torch.zeros(1, 3, size, size)
    return model.preprocess.text([""])


def batch_loss(step_module: torch.nn.Module, loss_fn: ContrastiveLoss, batch, modalities: tuple[str, ...], *,
               device: torch.device, bf16: bool = False) -> torch.Tensor:
    """Contrastive loss of one (local) batch; under DDP the loss of the global batch (features gathered).

    Under DDP every rank must build the same autograd graph, or the collectives of the backward pass (DDP's
    all-reduce, the all-gather's backward) pair up differently on different ranks and hang. So when this rank's
    batch has no record of a modality that others may have, its encoder still runs on one placeholder input
    whose output enters the loss multiplied by zero (no effect on values or gradients).
    """
    _, world = dist_info()
    model = step_module.module.model if hasattr(step_module, "module") else step_module.model
    present = {m: batch.present[m] for m in modalities}
    inputs = {m: batch.inputs[m] for m in modalities if bool(present[m].any())}
    placeholders = [m for m in modalities if m not in inputs and world > 1]
    for m in placeholders:
        inputs[m] = _placeholder_inputs(model, m)
    n = len(batch)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
        feats, scale = step_module(inputs)
        full = {}
        for m in modalities:
            if m in placeholders:
                full[m] = feats[m].new_zeros((n, feats[m].shape[1])) + 0.0 * feats[m].sum()
            elif m in feats:
                full[m] = _scatter_zero(feats[m], present[m])
            else:
                full[m] = torch.zeros(n, model.config.embed_dim, device=device)
        return loss_fn(full, scale, {m: present[m].to(device) for m in modalities})


def _scatter_zero(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(k, d) features of the present rows -> (n, d) with zero rows elsewhere (masked out of the loss)."""
    out = values.new_zeros((mask.shape[0], values.shape[1]))
    out[mask.to(values.device)] = values
    return out
