"""CLIBD-style splits: which records train, which are keys, which are queries (reference sections 4 and 5).

The split column of the records table names each record's partition (:data:`clibd_toolkit.schema.SPLITS`).
Roles:

- training: ``pretrain`` (unlabelled) + ``train`` (seen species);
- keys: ``seen_keys`` + ``val_unseen_keys`` + ``test_unseen_keys`` (BIOSCAN-1M CLIBD partition, pooled into
  ``all_keys``), or BIOSCAN-5M style ``unseen_keys`` where the ``train`` records are also the seen keys;
- queries: ``val_seen`` / ``val_unseen`` (validation) and ``test_seen`` / ``test_unseen`` (test);
- neither: ``single_species`` (species with one record) and ``other_heldout`` (BIOSCAN-5M).

:func:`assign_splits` makes such a partition for any records table with the BIOSCAN-1M algorithm of CLIBD's
``dataset/create_splits.py`` (reference 4.1), seeded and deterministic; :func:`ensure_splits` keeps a dataset's own
split column when it has one; :func:`split_summary` counts records and species per split.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Literal

import numpy as np
import pandas as pd

from .config import Config
from .errors import DataError
from .schema import (
    KEY_SPLITS,
    QUERY_SPLITS,
    RECORD_ID,
    SPLIT,
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
    SPLITS,
    TRAIN_SPLITS,
)

logger = logging.getLogger(__name__)

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
    mask = values.isin(KEY_SPLITS).to_numpy(copy=True)  # copy: pandas may hand out a read-only view
    if train_records_are_keys(records):
        mask |= (values == SPLIT_TRAIN).to_numpy()
    return mask


def query_mask(records: pd.DataFrame, stage: Stage, group: Group) -> np.ndarray:
    """Queries of one protocol cell, e.g. ``query_mask(records, "test", "unseen")``."""
    if (stage, group) not in QUERY_SPLITS:
        raise DataError(f"unknown query set ({stage!r}, {group!r}); stage is 'val' or 'test', group 'seen' or 'unseen'")
    return (_split_values(records) == QUERY_SPLITS[(stage, group)]).to_numpy()


# --- the splitter ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SplitConfig(Config):
    """Parameters of the CLIBD BIOSCAN-1M splitting algorithm (reference section 4.1); defaults are CLIBD's.

    Fractions are applied per group with ``floor`` (exact decimal arithmetic, as CLIBD's ``int()`` on ``Decimal``
    ratios), the remainder going to the last part: e.g. a seen species of 15 records gives 10 train, 1 val, 1 test and
    3 keys; an unseen species of 5 records gives 2 queries and 3 keys.
    """

    kind: ClassVar[str] = "split"

    seed: int = 42  # random seed; same seed + same records -> same splits (row order does not matter)
    unseen_species_fraction: float = 0.2  # share of common species (>= tail_threshold records) held out as unseen
    tail_threshold: int = 10  # species with fewer records (but >= 2) are "tail" species and all become unseen
    seen_fractions: tuple[float, ...] = (0.7, 0.1, 0.1, 0.1)  # per seen species: train, val_seen, test_seen, seen_keys
    unseen_query_fraction: float = 0.5  # per unseen species: share of its records that are queries (rest: keys)
    unseen_val_fraction: float = 0.5  # share of unseen species (common and tail separately) used for validation

    def validate(self) -> None:
        self._require(0.0 <= self.unseen_species_fraction < 1.0, "unseen_species_fraction", "a number in [0, 1)")
        self._require(self.tail_threshold >= 2, "tail_threshold", "an integer >= 2")
        self._require(len(self.seen_fractions) == 4, "seen_fractions",
                      "4 numbers (train, val_seen, test_seen, seen_keys)")
        self._require(all(f >= 0 for f in self.seen_fractions), "seen_fractions", "numbers >= 0")
        self._require(sum(Decimal(str(f)) for f in self.seen_fractions) == 1, "seen_fractions", "numbers summing to 1")
        self._require(0.0 < self.unseen_query_fraction < 1.0, "unseen_query_fraction", "a number in (0, 1)")
        self._require(0.0 <= self.unseen_val_fraction <= 1.0, "unseen_val_fraction", "a number in [0, 1]")


def _boundaries(n: int, fractions: list[Decimal]) -> list[int]:
    """Cut points of ``n`` items into parts of ``floor(f * n)`` items (the last part takes the remainder)."""
    sizes = [int(f * n) for f in fractions[:-1]]
    return list(np.cumsum(sizes)) if sizes else []


def _sorted_names(values: pd.Index | list) -> list:
    return sorted(values, key=str)


def assign_splits(records: pd.DataFrame, config: SplitConfig | None = None) -> pd.DataFrame:
    """Assign every record one split with CLIBD's BIOSCAN-1M algorithm (reference 4.1).

    1. records without a species label -> ``pretrain`` (unlabelled contrastive training);
    2. species with one record -> ``single_species`` (neither trained on nor evaluated);
    3. "tail" species (2 .. ``tail_threshold - 1`` records) all become unseen;
    4. common species (>= ``tail_threshold`` records) are split by species: ``unseen_species_fraction`` unseen, the
       rest seen;
    5. each seen species' records -> ``train`` / ``val_seen`` / ``test_seen`` / ``seen_keys`` by ``seen_fractions``;
    6. unseen species (common and tail separately) are split by species into validation and test
       (``unseen_val_fraction``), and each unseen species' records into queries (``val_unseen``/``test_unseen``,
       ``unseen_query_fraction``) and keys (``val_unseen_keys``/``test_unseen_keys``).

    Deterministic: species are shuffled in sorted-name order and records in ``record_id`` order with one
    ``numpy.random.default_rng(seed)``, so the result depends on the seed and the records, not on row order.

    Args:
        records: a records table with ``record_id`` and ``species`` columns.
        config: a :class:`SplitConfig` (default: CLIBD's parameters, seed 42).

    Returns:
        A copy of ``records`` with the ``split`` column set for every record (any previous value is replaced).

    Raises:
        DataError: ``record_id`` or ``species`` column missing.
    """
    cfg = config if config is not None else SplitConfig()
    if not isinstance(cfg, SplitConfig):
        raise DataError(f"config must be a SplitConfig, got {type(cfg).__name__}")
    for col in (RECORD_ID, "species"):
        if col not in records.columns:
            raise DataError(f"records have no {col!r} column; load them with clibd_toolkit.load_records()")
    n = len(records)
    out = records.copy()
    split = np.full(n, SPLIT_PRETRAIN, dtype=object)
    species = out["species"]
    labelled = species.notna().to_numpy()
    ids = out[RECORD_ID].astype(str).to_numpy()
    positions = pd.Series(np.arange(n)[labelled]).groupby(species[labelled].to_numpy()).apply(list).to_dict() \
        if labelled.any() else {}
    counts = {sp: len(p) for sp, p in positions.items()}
    single = [sp for sp, c in counts.items() if c == 1]
    tail = _sorted_names([sp for sp, c in counts.items() if 2 <= c < cfg.tail_threshold])
    common = _sorted_names([sp for sp, c in counts.items() if c >= cfg.tail_threshold])
    rng = np.random.default_rng(cfg.seed)

    def ordered(sp) -> np.ndarray:
        pos = np.asarray(positions[sp])
        return pos[np.argsort(ids[pos], kind="stable")]

    def split_species(names: list, fraction: Decimal) -> tuple[list, list]:
        shuffled = [names[i] for i in rng.permutation(len(names))]
        cut = int(fraction * len(shuffled))
        return shuffled[:cut], shuffled[cut:]

    def split_records(names: list, parts: tuple[str, ...], fractions: list[Decimal]) -> None:
        for sp in _sorted_names(names):
            pos = rng.permutation(ordered(sp))
            for name, chunk in zip(parts, np.split(pos, _boundaries(len(pos), fractions))):
                split[chunk] = name

    for sp in single:
        split[positions[sp]] = SPLIT_SINGLE_SPECIES
    seen, unseen = split_species(common, 1 - Decimal(str(cfg.unseen_species_fraction)))
    val_fraction = Decimal(str(cfg.unseen_val_fraction))
    val_common, test_common = split_species(unseen, val_fraction)
    val_tail, test_tail = split_species(tail, val_fraction)
    split_records(seen, (SPLIT_TRAIN, SPLIT_VAL_SEEN, SPLIT_TEST_SEEN, SPLIT_SEEN_KEYS),
                  [Decimal(str(f)) for f in cfg.seen_fractions])
    q = Decimal(str(cfg.unseen_query_fraction))
    split_records(val_common + val_tail, (SPLIT_VAL_UNSEEN, SPLIT_VAL_UNSEEN_KEYS), [q, 1 - q])
    split_records(test_common + test_tail, (SPLIT_TEST_UNSEEN, SPLIT_TEST_UNSEEN_KEYS), [q, 1 - q])
    out[SPLIT] = split
    return out


def _role(split: object) -> str:
    if split in TRAIN_SPLITS:
        return "train"
    if split in KEY_SPLITS:
        return "key"
    if split in QUERY_SPLITS.values():
        return "query"
    return "none" if pd.isna(split) else "other"


def split_summary(records: pd.DataFrame) -> pd.DataFrame:
    """Records and species per split, in :data:`~clibd_toolkit.schema.SPLITS` order.

    Returns:
        DataFrame with columns ``split``, ``role`` (train/key/query/other/none), ``n_records``, ``n_species``
        (distinct species labels) and ``n_unlabelled`` (records without a species); records without a split are
        counted under split ``<none>``, and a final ``total`` row sums the records (species counted once).

    Raises:
        DataError: no ``split`` column.
    """
    values = _split_values(records)
    species = records["species"] if "species" in records.columns else pd.Series(pd.NA, index=records.index)
    rows = []
    present = set(values.dropna().unique())
    order = [s for s in SPLITS if s in present] + sorted(str(s) for s in present - set(SPLITS))
    for name in order + ([None] if values.isna().any() else []):
        mask = values.isna() if name is None else values == name
        sp = species[mask]
        rows.append({"split": "<none>" if name is None else name, "role": _role(name),
                     "n_records": int(mask.sum()), "n_species": int(sp.nunique(dropna=True)),
                     "n_unlabelled": int(sp.isna().sum())})
    rows.append({"split": "total", "role": "", "n_records": int(len(records)),
                 "n_species": int(species.nunique(dropna=True)), "n_unlabelled": int(species.isna().sum())})
    return pd.DataFrame(rows, columns=["split", "role", "n_records", "n_species", "n_unlabelled"])


def ensure_splits(records: pd.DataFrame, config: SplitConfig | None = None) -> tuple[pd.DataFrame, bool]:
    """Keep the dataset's own split column when it has one; otherwise apply :func:`assign_splits`.

    Args:
        records: a records table.
        config: splitter parameters used when no split column is present (default :class:`SplitConfig`).

    Returns:
        ``(records, applied)``: the table (a new one when splits were assigned) and whether the default seeded split
        was applied.

    Raises:
        DataError: the split column is only partly filled (records without a split would silently take no part);
            the message names some of them and the two fixes.
    """
    if has_splits(records):
        missing = records[SPLIT].isna().to_numpy()
        if missing.any():
            ids = records.loc[missing, RECORD_ID].head(5).tolist() if RECORD_ID in records.columns else []
            raise DataError(
                f"{int(missing.sum())} of {len(records)} records have no split (e.g. {ids}) while the others have "
                "one; fill the split column for every record, or drop it to let assign_splits() split everything",
                record_id=str(ids[0]) if ids else None)
        if config is not None:
            logger.info("the records carry their own split column; the SplitConfig is not applied")
        return records, False
    out = assign_splits(records, config)
    logger.info("no split column: applied the seeded CLIBD-style split (seed %d)",
                (config or SplitConfig()).seed)
    return out, True
