"""Training batches built ahead of the training step, in DataLoader worker processes (``TrainConfig.num_workers``).

Each item of :class:`TrainBatches` is one whole micro-batch of an epoch (its record positions are fixed by the
epoch's seeded permutation before any worker starts), built by :func:`build_train_batch`: image decoding and
augmentation, k-mer tokenisation, text tokenisation (:func:`clibd_toolkit.batching.make_batch`). Every record's
augmentation generator is ``np.random.default_rng([seed, epoch, position])``, so a batch is the same whichever
process builds it and in whatever order: training with ``num_workers=N`` gives bit-identical batches, in the same
order, to ``num_workers=0`` (batches built in the training process, one at a time, as before).

A record whose image fails only when decoded (e.g. a truncated JPEG) is not raised inside the worker: under
``on_error="skip"`` it is dropped from its batch, the batch is rebuilt without it, and it is reported in
:attr:`BuiltBatch.rejected` for the training process to list in ``rejects.csv`` and leave out of later epochs;
otherwise :attr:`BuiltBatch.error` carries the error (naming the record and the fix) for the training process to
raise, so it is the toolkit's :class:`~clibd_toolkit.errors.DataError` and not a DataLoader worker traceback.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from .batching import Batch, make_batch
from .errors import DataError
from .schema import IMAGE, RECORD_ID

SKIP_HINT = ("pass --on-error skip (on_error='skip') to leave such records out of training and list them in "
             "rejects.csv")


@dataclass
class DecodeReject:
    """A record left out of a batch because its input could not be decoded (``on_error="skip"``)."""

    record_id: str
    column: str
    value: Any
    reason: str


@dataclass
class BuiltBatch:
    """What a worker hands the training process for one micro-batch.

    ``batch`` is None when fewer than two records of the micro-batch could be used (nothing to contrast);
    ``rejected`` lists the records dropped from it; ``error`` is ``(message, record_id, value)`` of a
    :class:`~clibd_toolkit.errors.DataError` the training process must raise (see :meth:`raise_error`).
    """

    batch: Batch | None
    rejected: list[DecodeReject] = field(default_factory=list)
    error: tuple[str, str | None, Any] | None = None

    def raise_error(self) -> None:
        """Raise the batch's DataError in the calling (training) process, if it has one."""
        if self.error is not None:
            message, record_id, value = self.error
            raise DataError(message, record_id=record_id, value=value)

    def pin_memory(self) -> BuiltBatch:
        """Page-locked copies of the batch tensors (called by the DataLoader's pinning thread on CUDA), so that the
        host-to-GPU copy can overlap the step."""
        if self.batch is None:
            return self
        batch = Batch(_pin(self.batch.inputs), _pin(self.batch.present), self.batch.record_ids)
        return BuiltBatch(batch, self.rejected, self.error)


def _pin(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.pin_memory()
    if isinstance(value, dict):
        return {k: _pin(v) for k, v in value.items()}
    return value


def build_train_batch(preprocess, records: pd.DataFrame, modalities: Sequence[str], idx: np.ndarray, *, seed: int,
                      epoch: int, augment: bool, on_error: str = "raise", world: int = 1) -> BuiltBatch:
    """Build the training micro-batch of record positions ``idx`` of ``records`` (see the module docstring).

    Records whose input fails to decode are dropped (``on_error="skip"``, single process) and the batch rebuilt from
    the rest with the same per-record generators; under ``torchrun`` (``world > 1``) or ``on_error="raise"`` the
    first such record ends in :attr:`BuiltBatch.error`. A DataError naming no record of the batch is raised as is.
    """
    ids = records[RECORD_ID].astype(str).to_numpy()
    rejected: list[DecodeReject] = []
    idx = np.asarray(idx)
    while True:
        if len(idx) < 2 and world == 1:
            return BuiltBatch(None, rejected)
        rngs = [np.random.default_rng([seed, epoch, int(i)]) for i in idx]
        try:
            batch = make_batch(preprocess, records.iloc[idx], modalities, train=augment, rngs=rngs, text_for_all=True)
            return BuiltBatch(batch, rejected)
        except DataError as exc:
            hit = np.flatnonzero(ids[idx] == str(exc.record_id)) if exc.record_id is not None else []
            if not len(hit):
                raise
            if on_error != "skip":
                return BuiltBatch(None, rejected, (f"{exc}; {SKIP_HINT}", exc.record_id, exc.value))
            if world > 1:  # every process must contribute the same batch size to the gathered loss
                return BuiltBatch(None, rejected, (
                    f"{exc} (under torchrun an undecodable record cannot be skipped mid-training: remove it from "
                    "the data, or train it in one process)", exc.record_id, exc.value))
            rejected.append(DecodeReject(str(exc.record_id), IMAGE if "image" in str(exc) else "", exc.value,
                                         str(exc)))
            idx = np.delete(idx, hit)


class TrainBatches(torch.utils.data.Dataset):
    """The micro-batches of one epoch, item ``j`` = :func:`build_train_batch` of ``plan[j]`` (map-style, so that
    a DataLoader with ``batch_size=None`` returns them in plan order whatever the number of workers)."""

    def __init__(self, preprocess, records: pd.DataFrame, modalities: Sequence[str], plan: Sequence[np.ndarray], *,
                 seed: int, epoch: int, augment: bool, on_error: str = "raise", world: int = 1):
        self.preprocess, self.records, self.modalities = preprocess, records, tuple(modalities)
        self.plan = [np.asarray(p) for p in plan]
        self.seed, self.epoch, self.augment, self.on_error, self.world = seed, epoch, augment, on_error, world

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, j: int) -> BuiltBatch:
        return build_train_batch(self.preprocess, self.records, self.modalities, self.plan[j], seed=self.seed,
                                 epoch=self.epoch, augment=self.augment, on_error=self.on_error, world=self.world)


def iter_batches(dataset: torch.utils.data.Dataset, *, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int = 2, seed: int = 0) -> Iterator[Any]:
    """Items of ``dataset`` in order: built in this process one at a time (``num_workers=0``), or by a DataLoader
    with ``num_workers`` worker processes, each keeping ``prefetch_factor`` items ready, pinned for CUDA when
    ``pin_memory``. The DataLoader draws its worker seeds from its own generator (``seed``), never from the global
    torch generator, which drives dropout. Close the iterator (or exhaust it) to stop the workers."""
    if num_workers == 0:
        for j in range(len(dataset)):
            yield dataset[j]
        return
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                                         pin_memory=pin_memory, prefetch_factor=prefetch_factor,
                                         persistent_workers=False, generator=torch.Generator().manual_seed(seed))
    iterator = iter(loader)
    try:
        yield from iterator
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
