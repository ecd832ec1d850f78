"""Contrastive training (reference section 3): AdamW + one-cycle schedule, per-epoch atomic checkpoints, exact
resume, best checkpoint by validation metric, bf16 autocast on GPU, gradient accumulation, torchrun/DDP aware.

Determinism: the record order of each epoch, every augmentation and every dropout mask derive from
``(seed, epoch)``, so a run killed at any point and resumed with ``resume=True`` redoes the interrupted epoch from
the last complete checkpoint and ends with the same weights as an uninterrupted run (on CPU).

The pieces around the loop live beside it: :mod:`clibd_toolkit.training_setup` (the records to train on, checked,
and the run folder), :mod:`clibd_toolkit.train_step` (one step, single process or DDP) and
:mod:`clibd_toolkit.distributed` (process groups, :func:`~clibd_toolkit.distributed.resolve_device`);
``resolve_device``, ``check_trainable`` and ``TRAIN_IDS_FILE`` are importable from here as well.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from .checkpoint import (
    checkpoint_folder,
    list_epoch_checkpoints,
    load_model_state,
    load_trainer_state,
    prune_checkpoints,
    save_checkpoint,
    write_run_info,
)
from .config import ModelConfig, TrainConfig
from .distributed import broadcast_module, dist_info, distributed_session, resolve_device  # noqa: F401
from .errors import CheckpointError, ConfigError
from .loss import ContrastiveLoss
from .model import CLIBDModel
from .records import Rejects, check_records
from .schema import RECORD_ID
from .train_step import batch_loss, rank_slice, wrap_for_training
from .training_setup import (  # noqa: F401
    TRAIN_IDS_FILE,
    check_trainable,
    resume_checkpoint,
    training_records,
    write_train_ids,
)

log = logging.getLogger(__name__)


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


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


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
    resume_from = resume_checkpoint(run_dir, model_config, train_config, resume)
    records, train_records, rejects, split_info = training_records(records, model_config, train_config, run_dir,
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
        write_train_ids(run_dir, train_records[RECORD_ID])
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
