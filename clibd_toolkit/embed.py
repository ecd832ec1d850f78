"""Embedding extraction: records -> :class:`~clibd_toolkit.store.EmbeddingSet` (eval mode, no gradients).

Text embeddings are the embeddings of each record's own taxonomy string; records with no label at any rank get
no text vector (NaN row), like records without an image or a barcode for those modalities.
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .batching import make_batch, scatter_rows
from .config import parse_modalities
from .records import check_records
from .store import META_COLUMNS, EmbeddingSet

log = logging.getLogger(__name__)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def embed_chunk(model, records: pd.DataFrame, modalities: Sequence[str]) -> dict[str, np.ndarray]:
    """Vectors of one chunk of records: modality -> (n, d) float32 (NaN rows where a record lacks it)."""
    batch = make_batch(model.preprocess, records, modalities)
    out = {}
    for modality in modalities:
        mask = batch.present[modality]
        if int(mask.sum()) == 0:
            out[modality] = np.full((len(records), model.config.embed_dim), np.nan, dtype=np.float32)
            continue
        feats = model.encode_inputs(modality, batch.inputs[modality]).float().cpu()
        out[modality] = scatter_rows(feats, mask).numpy()
    return out


def iter_embedding_chunks(model, chunks: Iterable[pd.DataFrame], *, modalities: Sequence[str] | str | None = None,
                          batch_size: int = 64) -> Iterable[EmbeddingSet]:
    """Embed an iterable of record chunks (streaming), yielding one EmbeddingSet per ``batch_size`` records."""
    mods = model.modalities if modalities is None else parse_modalities(modalities)
    config = {"model": model.config.to_json_dict(), "modalities": list(mods)}
    was_training = model.training
    model.eval()
    try:
        for chunk in chunks:
            for start in range(0, len(chunk), batch_size):
                part = chunk.iloc[start: start + batch_size]
                vectors = embed_chunk(model, part, mods)
                yield EmbeddingSet(part[list(META_COLUMNS)].reset_index(drop=True), vectors, config)
    finally:
        model.train(was_training)


def extract_embeddings(model, records: pd.DataFrame, *, modalities: Sequence[str] | str | None = None,
                       batch_size: int = 64, progress: bool = True) -> EmbeddingSet:
    """Embed every record in every modality the model has (or ``modalities``).

    Args:
        model: a :class:`~clibd_toolkit.model.CLIBDModel`.
        records: the canonical records table.
        batch_size: records per forward pass.
        progress: show a progress bar.

    Returns:
        An EmbeddingSet with one row per record, in the order of ``records``; its config holds the model config.

    Example:
        >>> emb = extract_embeddings(model, records)          # doctest: +SKIP
        >>> emb.save("embeddings.parquet")                    # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    check_records(records)
    mods = model.modalities if modalities is None else parse_modalities(modalities)
    missing = [m for m in mods if m not in model.modalities]
    if missing:
        from .errors import ConfigError

        raise ConfigError(f"the model has no {missing} encoder(s); it has {list(model.modalities)}")
    parts = []
    with tqdm(total=len(records), desc="embedding", unit="rec", disable=not progress, leave=False) as bar:
        for part in iter_embedding_chunks(model, [records], modalities=mods, batch_size=batch_size):
            parts.append(part)
            bar.update(len(part))
    if not parts:
        return EmbeddingSet(records[list(META_COLUMNS)].iloc[:0],
                            {m: np.zeros((0, model.config.embed_dim), np.float32) for m in mods},
                            {"model": model.config.to_json_dict(), "modalities": list(mods)})
    return EmbeddingSet.concat(parts)
