"""Which records train, which are keys, which are queries (CLIBD protocol, reference sections 4 and 5).

The split column of the records table names each record's partition (:data:`clibd_toolkit.schema.SPLITS`).
Roles:

- training: ``pretrain`` (unlabelled) + ``train`` (seen species);
- keys: ``seen_keys`` + ``val_unseen_keys`` + ``test_unseen_keys`` (BIOSCAN-1M CLIBD partition, pooled into
  ``all_keys``), or BIOSCAN-5M style ``unseen_keys`` where the ``train`` records are also the seen keys;
- queries: ``val_seen`` / ``val_unseen`` (validation) and ``test_seen`` / ``test_unseen`` (test).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from .errors import DataError
from .schema import (
    KEY_SPLITS,
    QUERY_SPLITS,
    SPLIT,
    SPLIT_SEEN_KEYS,
    SPLIT_TRAIN,
    SPLIT_UNSEEN_KEYS,
    TRAIN_SPLITS,
)

Stage = Literal["val", "test"]
Group = Literal["seen", "unseen"]


def _split_values(records: pd.DataFrame) -> pd.Series:
    if SPLIT not in records.columns:
        raise DataError(f"records have no {SPLIT!r} column; assign splits first (clibd_toolkit.splits)")
    return records[SPLIT]


def has_splits(records: pd.DataFrame) -> bool:
    """True if at least one record has a split assigned."""
    return SPLIT in records.columns and bool(records[SPLIT].notna().any())


def train_mask(records: pd.DataFrame) -> np.ndarray:
    """Records used for contrastive training (``pretrain`` + ``train``)."""
    return _split_values(records).isin(TRAIN_SPLITS).to_numpy()


def train_records_are_keys(records: pd.DataFrame) -> bool:
    """BIOSCAN-5M layout: an ``unseen_keys`` split and no ``seen_keys``; the ``train`` records are the seen keys."""
    values = set(_split_values(records).dropna().unique())
    return SPLIT_UNSEEN_KEYS in values and SPLIT_SEEN_KEYS not in values


def key_mask(records: pd.DataFrame) -> np.ndarray:
    """The pooled reference set (CLIBD ``all_keys``), shared by seen and unseen queries and by val and test."""
    values = _split_values(records)
    mask = values.isin(KEY_SPLITS).to_numpy()
    if train_records_are_keys(records):
        mask |= (values == SPLIT_TRAIN).to_numpy()
    return mask


def query_mask(records: pd.DataFrame, stage: Stage, group: Group) -> np.ndarray:
    """Queries of one protocol cell, e.g. ``query_mask(records, "test", "unseen")``."""
    if (stage, group) not in QUERY_SPLITS:
        raise DataError(f"unknown query set ({stage!r}, {group!r}); stage is 'val' or 'test', group 'seen' or 'unseen'")
    return (_split_values(records) == QUERY_SPLITS[(stage, group)]).to_numpy()
