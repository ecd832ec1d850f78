"""Embedding extraction: records -> embeddings (eval mode, no gradients), in memory, streamed to a file, or sharded.

Text embeddings are the embeddings of each record's own taxonomy string; records with no label at any rank get
no text vector (NaN row), like records without an image or a barcode for those modalities.

Three ways to run it, all giving bit-identical vectors for the same model, records and ``batch_size`` (batches
are cut at the same global record positions):

- :func:`extract_embeddings`: a records table -> an in-memory :class:`~clibd_toolkit.store.EmbeddingSet`;
- :func:`write_embeddings`: any stream of record chunks (e.g. :func:`~clibd_toolkit.readers.iter_record_chunks`)
  -> one embedding file, written by :class:`~clibd_toolkit.store.EmbeddingWriter`; memory stays one reader chunk
  plus one row group, whatever the number of records;
- :func:`clibd_toolkit.embed_shards.embed_shard` + :func:`~clibd_toolkit.embed_shards.merge_shards` (their own
  module, :mod:`clibd_toolkit.embed_shards`): for several jobs or ranks, resumable block by block.

On the command line (``clibd embed``, :mod:`clibd_toolkit.cli.embed`): ``--shard i/n`` runs one shard, ``--merge`` merges; under ``torchrun``
without ``--shard`` every rank runs shard ``rank/world`` and rank 0 merges.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from .batching import make_batch, scatter_rows
from .config import parse_modalities
from .errors import ConfigError, DataError
from .records import check_records
from .schema import RECORD_ID
from .store import META_COLUMNS, EmbeddingSet, EmbeddingWriter

log = logging.getLogger(__name__)

#: records per shard block (a multiple of every usual batch size)
DEFAULT_BLOCK_SIZE = 16384


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
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


def rebatch(chunks: Iterable[pd.DataFrame], size: int) -> Iterator[pd.DataFrame]:
    """Re-cut a stream of record tables into tables of exactly ``size`` records (the last may be shorter).

    Batches then start at global record positions ``0, size, 2*size, ...`` whatever the reader's chunking, which
    keeps the vectors of every extraction path bit-identical (BLAS results can depend on the batch).
    """
    held: list[pd.DataFrame] = []
    n_held = 0
    for chunk in chunks:
        start = 0
        while start < len(chunk):
            take = min(size - n_held, len(chunk) - start)
            held.append(chunk.iloc[start: start + take])
            n_held += take
            start += take
            if n_held == size:
                yield held[0].reset_index(drop=True) if len(held) == 1 else pd.concat(held, ignore_index=True)
                held, n_held = [], 0
    if n_held:
        yield held[0].reset_index(drop=True) if len(held) == 1 else pd.concat(held, ignore_index=True)


def _modalities(model, modalities: Sequence[str] | str | None) -> tuple[str, ...]:
    mods = tuple(model.modalities) if modalities is None else tuple(parse_modalities(modalities))
    missing = [m for m in mods if m not in model.modalities]
    if missing:
        raise ConfigError(f"the model has no {missing} encoder(s); it has {list(model.modalities)}")
    return mods


def _base_config(model, mods: Sequence[str]) -> dict[str, Any]:
    return {"model": model.config.to_json_dict(), "model_source": dict(getattr(model, "source", {}) or {}),
            "modalities": list(mods)}


def check_embeddings_model(embeddings, model, what: str) -> None:
    """DataError when the embedding file records a different model than ``model`` (by the SHA-256 of its weights
    file); files that record none (older files, released embeddings) are accepted."""
    def identity(s: dict) -> str | None:  # released file: its SHA-256; run checkpoint: its weights' SHA-256
        return s.get("sha256") or s.get("model_sha256")

    def name(s: dict) -> str:
        return s.get("name") or s.get("file") or s.get("run") or "?"

    made_by = (embeddings.config or {}).get("model_source") or {}
    source = getattr(model, "source", {}) or {}
    if identity(made_by) and identity(source) and identity(made_by) != identity(source):
        raise DataError(f"{what} were made by model {name(made_by)} ({identity(made_by)[:12]}), not by the model "
                        f"loaded now, {name(source)} ({identity(source)[:12]}); vectors of two models do not share a "
                        "space: embed the data with this model (notebooks: -p EMBEDDINGS '')")


def iter_embedding_chunks(model, chunks: Iterable[pd.DataFrame], *, modalities: Sequence[str] | str | None = None,
                          batch_size: int = 64, rejects=None) -> Iterator[EmbeddingSet]:
    """Embed a stream of record tables, yielding one EmbeddingSet per ``batch_size`` records (in order).

    Args:
        model: a :class:`~clibd_toolkit.model.CLIBDModel`.
        chunks: record tables (e.g. a :class:`~clibd_toolkit.readers.RecordStream`); batches may span chunks.
        modalities: subset of the model's modalities (default: all).
        batch_size: records per forward pass.
        rejects: a :class:`~clibd_toolkit.records.Rejects`: a record whose input fails only when it is decoded
            (a missing or corrupt image) is listed there with its reason and left out, instead of stopping.
    """
    mods = _modalities(model, modalities)
    config = _base_config(model, mods)
    was_training = model.training
    model.eval()
    try:
        for part in rebatch(chunks, batch_size):
            check_records(part)
            vectors = None
            while len(part):
                try:
                    vectors = embed_chunk(model, part, mods)
                    break
                except DataError as exc:
                    if rejects is None or exc.record_id is None:
                        raise
                    bad = np.flatnonzero(part[RECORD_ID].astype(str).to_numpy() == str(exc.record_id))
                    if not len(bad):
                        raise
                    rejects.add(row=None, record_id=exc.record_id, column="image" if "image" in str(exc) else "",
                                value=exc.value, reason=str(exc), kind="decode")
                    part = part.drop(part.index[bad[:1]]).reset_index(drop=True)
            if vectors is not None:
                yield EmbeddingSet(part[list(META_COLUMNS)].reset_index(drop=True), vectors, dict(config))
    finally:
        model.train(was_training)


def extract_embeddings(model, records: pd.DataFrame, *, modalities: Sequence[str] | str | None = None,
                       batch_size: int = 64, progress: bool = True, rejects=None) -> EmbeddingSet:
    """Embed every record in every modality the model has (or ``modalities``), in memory.

    For more records than fit in memory use :func:`write_embeddings` (same vectors, streamed to a file).

    Args:
        model: a :class:`~clibd_toolkit.model.CLIBDModel`.
        records: the canonical records table.
        modalities: subset of the model's modalities (default: all).
        batch_size: records per forward pass.
        progress: show a progress bar.
        rejects: skip records whose input fails when decoded, listing them here (:func:`iter_embedding_chunks`);
            the set then lacks those rows.

    Returns:
        An EmbeddingSet with one row per record, in the order of ``records``; its config holds the model config.

    Raises:
        ConfigError: a modality the model does not have.
        DataError: the records table is not canonical.

    Example:
        >>> emb = extract_embeddings(model, records)          # doctest: +SKIP
        >>> emb.save("embeddings.parquet")                    # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    check_records(records)
    mods = _modalities(model, modalities)
    parts = []
    with tqdm(total=len(records), desc="embedding", unit="rec", disable=not progress, leave=False) as bar:
        for part in iter_embedding_chunks(model, [records], modalities=mods, batch_size=batch_size, rejects=rejects):
            parts.append(part)
            bar.update(len(part))
    if not parts:
        return EmbeddingSet(records[list(META_COLUMNS)].iloc[:0],
                            {m: np.zeros((0, model.config.embed_dim), np.float32) for m in mods},
                            _base_config(model, mods))
    return EmbeddingSet.concat(parts)


# --- streaming to one file ----------------------------------------------------------------------------------


@dataclass
class EmbedSummary:
    """What a file-writing extraction did."""

    path: Path
    n_records: int = 0
    vectors: dict[str, int] = field(default_factory=dict)  # records with a vector, per modality
    blocks_written: int = 0
    blocks_skipped: int = 0
    rejected: int | None = None  # records left out (read + decode), when the command counted them

    def to_json_dict(self) -> dict[str, Any]:
        return {"out": str(self.path), "records": self.n_records, "vectors": self.vectors,
                **({"rejected": self.rejected} if self.rejected is not None else {}),
                **({"blocks_written": self.blocks_written, "blocks_skipped": self.blocks_skipped}
                   if self.blocks_written or self.blocks_skipped else {})}


def _as_chunks(records: pd.DataFrame | Iterable[pd.DataFrame]) -> Iterable[pd.DataFrame]:
    return [records] if isinstance(records, pd.DataFrame) else records


def _progress(progress: bool, desc: str, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="rec", disable=not progress, leave=False)


def write_embeddings(model, records: pd.DataFrame | Iterable[pd.DataFrame], out: str | Path, *, rejects=None,
                     modalities: Sequence[str] | str | None = None, batch_size: int = 64,
                     config: dict[str, Any] | None = None, progress: bool = True) -> EmbedSummary:
    """Embed a records table or a stream of record chunks straight into one embedding file.

    Memory stays one chunk of records plus one Parquet row group of vectors, whatever the number of records; the
    file appears at ``out`` only when complete (count and checksum in its footer).

    Args:
        model: a :class:`~clibd_toolkit.model.CLIBDModel`.
        records: a canonical records table, or an iterable of them (e.g. ``iter_record_chunks(path)``).
        out: the ``.parquet`` file to write.
        modalities: subset of the model's modalities (default: all).
        batch_size: records per forward pass.
        config: extra provenance stored in the file header (e.g. ``{"run": ..., "data": ...}``).
        progress: show a progress bar.
        rejects: skip records whose input fails when decoded, listing them here (:func:`iter_embedding_chunks`).

    Returns:
        An :class:`EmbedSummary`.

    Example:
        >>> from clibd_toolkit.readers import iter_record_chunks
        >>> write_embeddings(model, iter_record_chunks("survey/"), "emb.parquet")   # doctest: +SKIP
    """
    mods = _modalities(model, modalities)
    header = {**_base_config(model, mods), **(config or {})}
    summary = EmbedSummary(Path(out), vectors={m: 0 for m in mods})
    with EmbeddingWriter(out, {m: model.config.embed_dim for m in mods}, header) as writer, \
            _progress(progress, "embedding") as bar:
        for part in iter_embedding_chunks(model, _as_chunks(records), modalities=mods, batch_size=batch_size,
                                          rejects=rejects):
            writer.write(part)
            _count(summary, part)
            bar.update(len(part))
    return summary


def _count(summary: EmbedSummary, part: EmbeddingSet) -> None:
    summary.n_records += len(part)
    for m in part.modalities:
        summary.vectors[m] = summary.vectors.get(m, 0) + int(part.has(m).sum())
