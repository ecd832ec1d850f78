"""Records -> model inputs, batch by batch (shared by training and embedding extraction).

A batch holds the encoder inputs of each modality for the records that have it, plus ``present`` masks; rows of
records lacking a modality are filled in after encoding (see :func:`scatter_rows`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from .errors import DataError
from .records import taxonomy_text
from .schema import DNA, DNA_STORED, IMAGE, RANKS, RECORD_ID


@dataclass
class Batch:
    """Inputs of one batch: ``inputs[m]`` covers only the records with ``present[m]`` True."""

    inputs: dict[str, Any]
    present: dict[str, torch.Tensor]
    record_ids: list[str]

    def __len__(self) -> int:
        return len(self.record_ids)


def modality_present(records: pd.DataFrame, modality: str) -> np.ndarray:
    """Which records have ``modality``: a barcode, an image, or (text) at least one taxonomic label."""
    if modality == "dna":
        return records[DNA].notna().to_numpy()
    if modality == "image":
        return records[IMAGE].notna().to_numpy()
    if modality == "text":
        return records[list(RANKS)].notna().any(axis=1).to_numpy()
    raise DataError(f"unknown modality {modality!r}")


def barcodes_for(preprocess, records: pd.DataFrame) -> np.ndarray:
    """The barcode strings the model's tokenizer reads: the cleaned ``dna_barcode``, or, for released CLIBD models
    (``dna_cleaning="raw"``), the stored spelling with its gaps where the records kept one (``dna_barcode_stored``)."""
    values = records[DNA].to_numpy(dtype=object)
    if not preprocess.dna_tokenizer.clean and DNA_STORED in records.columns:
        stored = records[DNA_STORED].to_numpy(dtype=object)
        keep = pd.notna(stored)
        values = values.copy()
        values[keep] = stored[keep]
    return values


def make_batch(preprocess, records: pd.DataFrame, modalities: Sequence[str], *, train: bool = False,
               rngs: Sequence[np.random.Generator] | None = None, text_for_all: bool = False) -> Batch:
    """Build a :class:`Batch` from a chunk of the records table.

    Args:
        preprocess: the model's :class:`~clibd_toolkit.model.Preprocess`.
        train: use training-time image augmentation (with ``rngs``, one generator per record, for determinism).
        text_for_all: give every record a text input, unlabelled ranks written ``not_classified`` (CLIBD training);
            otherwise only records with at least one label have text.
    """
    ids = records[RECORD_ID].tolist()
    inputs: dict[str, Any] = {}
    present: dict[str, torch.Tensor] = {}
    for modality in modalities:
        mask = np.ones(len(records), dtype=bool) if (modality == "text" and text_for_all) else modality_present(
            records, modality)
        present[modality] = torch.from_numpy(np.array(mask, dtype=bool))
        rows = np.flatnonzero(mask)
        sub_ids = [ids[i] for i in rows]
        if modality == "dna":
            inputs["dna"] = preprocess.dna(barcodes_for(preprocess, records)[rows].tolist(), sub_ids)
        elif modality == "image":
            sub_rngs = [rngs[i] for i in rows] if rngs is not None else None
            inputs["image"] = preprocess.images(records[IMAGE].to_numpy()[rows].tolist(), sub_ids, train=train,
                                                rngs=sub_rngs)
        else:
            inputs["text"] = preprocess.text(taxonomy_text(records.iloc[rows]))
    return Batch(inputs, present, ids)


def scatter_rows(values: torch.Tensor, mask: torch.Tensor, fill: float = float("nan")) -> torch.Tensor:
    """(k, d) values of the ``mask`` rows -> (n, d), other rows ``fill``."""
    out = torch.full((mask.shape[0], values.shape[1]), fill, dtype=values.dtype, device=values.device)
    out[mask.to(values.device)] = values
    return out
