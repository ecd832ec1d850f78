"""Embedding extraction: records -> embeddings (eval mode, no gradients), in memory, streamed to a file, or sharded.

Text embeddings are the embeddings of each record's own taxonomy string; records with no label at any rank get
no text vector (NaN row), like records without an image or a barcode for those modalities.

Three ways to run it, all giving bit-identical vectors for the same model, records and ``batch_size`` (batches
are cut at the same global record positions):

- :func:`extract_embeddings`: a records table -> an in-memory :class:`~clibd_toolkit.store.EmbeddingSet`;
- :func:`write_embeddings`: any stream of record chunks (e.g. :func:`~clibd_toolkit.readers.iter_record_chunks`)
  -> one embedding file, written by :class:`~clibd_toolkit.store.EmbeddingWriter`; memory stays one reader chunk
  plus one row group, whatever the number of records;
- :func:`embed_shard` + :func:`merge_shards`: for several jobs or ranks. The record stream is cut into *blocks*
  of ``block_size`` consecutive records (block ``j`` = records ``j*block_size ...``); shard ``i`` of ``n`` embeds
  the blocks with ``j % n == i``, each written atomically as ``OUT.shards/block-{j:06d}.parquet``. A job killed
  and run again skips every complete block (after checking its record ids against the stream and its checksum)
  and redoes the rest, so nothing is embedded twice or left out; a job that finished writes
  ``shard-{i:05d}-of-{n:05d}.json`` and a rerun of it returns at once. :func:`merge_shards` streams the blocks in
  order into ``OUT`` and verifies it. Blocks do not depend on ``n``: the shard count may change between reruns.

On the command line (``clibd embed``, :mod:`clibd_toolkit.cli.embed`): ``--shard i/n`` runs one shard, ``--merge`` merges; under ``torchrun``
without ``--shard`` every rank runs shard ``rank/world`` and rank 0 merges.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from .batching import make_batch, scatter_rows
from .config import parse_modalities
from .errors import CheckpointError, ConfigError, DataError
from .records import check_records
from .schema import RECORD_ID
from .store import META_COLUMNS, EmbeddingSet, EmbeddingWriter, iter_embeddings, read_header, verify_embedding_file

log = logging.getLogger(__name__)

#: records per shard block (a multiple of every usual batch size)
DEFAULT_BLOCK_SIZE = 16384
SHARD_FORMAT = "clibd_toolkit.embedding_shard/1"


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


# --- shards -------------------------------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``.

    Raises:
        ConfigError: anything else.
    """
    try:
        index, count = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard got {text!r}; expected i/n, e.g. 0/4 for the first of four shards") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard got {text!r}; expected i/n with 0 <= i < n (shards are numbered from 0)")
    return index, count


def shard_folder(out: str | Path) -> Path:
    """Where the shard blocks of the embedding file ``out`` live: ``OUT.shards/`` next to it."""
    out = Path(out)
    return out.with_name(out.name + ".shards")


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over every weight of ``model`` (names, dtypes, shapes, bytes): which model made a block."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _ids_digest(records: pd.DataFrame) -> str:
    return hashlib.sha256("\x1f".join(map(str, records[RECORD_ID].tolist())).encode("utf-8")).hexdigest()


def _manifest_path(folder: Path, index: int, count: int) -> Path:
    return folder / f"shard-{index:05d}-of-{count:05d}.json"


def _block_path(folder: Path, block: int) -> Path:
    return folder / f"block-{block:06d}.parquet"


def _block_is_done(path: Path, fingerprint: dict[str, Any], ids_digest: str, n: int) -> bool:
    """Whether ``path`` already holds this block, complete and intact; raises if it belongs to other work."""
    if not path.is_file():
        return False
    try:
        header = read_header(path)
        verify_embedding_file(path)
    except CheckpointError as exc:
        log.warning("redoing %s: %s", path.name, exc)
        return False
    shard_info = header["config"].get("shard", {})
    if shard_info.get("fingerprint") != fingerprint:
        raise CheckpointError(f"{path} was written by another model or other settings than this run (modalities, "
                              "block size, checkpoint); use another --out, or delete "
                              f"{path.parent} to start the sharded extraction afresh")
    if shard_info.get("ids_sha256") != ids_digest or header["n_records"] != n:
        raise CheckpointError(f"{path} holds other records than block {shard_info.get('block')} of the data now "
                              f"read (the data or the reader options changed); delete {path.parent} and rerun "
                              "every shard")
    return True


def embed_shard(model, records: pd.DataFrame | Iterable[pd.DataFrame], out: str | Path, shard: tuple[int, int] | str,
                *, modalities: Sequence[str] | str | None = None, batch_size: int = 64,
                block_size: int = DEFAULT_BLOCK_SIZE, config: dict[str, Any] | None = None,
                progress: bool = True, rejects=None) -> EmbedSummary:
    """Embed shard ``i`` of ``n`` of a record stream into ``OUT.shards/`` (resumable; see the module docstring).

    Every shard job reads the whole stream (record positions define the blocks) but embeds only its own blocks.

    Args:
        model: a :class:`~clibd_toolkit.model.CLIBDModel`.
        records: a records table or a stream of them; every shard job must read the same records.
        out: the final embedding file (the blocks go to :func:`shard_folder` of it).
        shard: ``(i, n)`` or ``"i/n"``.
        modalities: subset of the model's modalities (default: all).
        batch_size: records per forward pass; must divide ``block_size``.
        block_size: records per block (the unit of work that a rerun skips or redoes).
        config: extra provenance for the merged file's header.
        progress: show a progress bar.

    Returns:
        An :class:`EmbedSummary` of this shard (``path`` is the shard folder).

    Raises:
        ConfigError: bad ``shard`` or sizes.
        CheckpointError: the shard folder holds blocks of another model, settings or data.
    """
    index, count = parse_shard(shard) if isinstance(shard, str) else parse_shard(f"{shard[0]}/{shard[1]}")
    if block_size < 1 or batch_size < 1 or block_size % batch_size:
        raise ConfigError(f"block_size {block_size} must be a positive multiple of batch_size {batch_size} (so that "
                          "sharded and unsharded runs cut the same batches)")
    mods = _modalities(model, modalities)
    folder = shard_folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    dims = {m: model.config.embed_dim for m in mods}
    fingerprint = {"model_sha256": model_fingerprint(model), "modalities": list(mods), "block_size": block_size}
    base = {**_base_config(model, mods), **(config or {})}
    manifest = _manifest_path(folder, index, count)
    summary = EmbedSummary(folder, vectors={m: 0 for m in mods})
    if manifest.is_file():
        done = json.loads(manifest.read_text())
        own = range(index, done.get("n_blocks", 0), count)
        if done.get("fingerprint") == fingerprint and all(_block_path(folder, j).is_file() for j in own):
            log.info("shard %d/%d is already complete (%s)", index, count, manifest)
            summary.blocks_skipped = len(own)
            return summary
    n_total, n_blocks = 0, 0
    with _progress(progress, f"shard {index}/{count}") as bar:
        for j, block in enumerate(rebatch(_as_chunks(records), block_size)):
            n_total += len(block)
            n_blocks = j + 1
            if j % count != index:
                continue
            path = _block_path(folder, j)
            digest = _ids_digest(block)
            if _block_is_done(path, fingerprint, digest, len(block)):
                summary.blocks_skipped += 1
                continue
            block_config = {**base, "shard": {"fingerprint": fingerprint, "block": j, "ids_sha256": digest}}
            with EmbeddingWriter(path, dims, block_config) as writer:
                for part in iter_embedding_chunks(model, [block], modalities=mods, batch_size=batch_size,
                                                  rejects=rejects):
                    writer.write(part)
                    _count(summary, part)
                    bar.update(len(part))
            summary.blocks_written += 1
    from .io import atomic_write_text

    atomic_write_text(manifest, json.dumps({
        "format": SHARD_FORMAT, "shard": index, "of": count, "n_records": n_total, "n_blocks": n_blocks,
        "block_size": block_size, "fingerprint": fingerprint, "dims": dims, "config": base}, indent=2) + "\n")
    return summary


def merge_shards(out: str | Path, *, progress: bool = True) -> EmbedSummary:
    """Merge the blocks in ``OUT.shards/`` into the one embedding file ``out``, in record order, verified.

    Args:
        out: the embedding file to write (its shard folder must hold the blocks of every shard).
        progress: show a progress bar.

    Returns:
        An :class:`EmbedSummary` of the merged file.

    Raises:
        CheckpointError: no finished shard, shards of different runs, or blocks missing or corrupt (the message
            names the shards to run again).
    """
    out = Path(out)
    folder = shard_folder(out)
    manifests = [json.loads(p.read_text()) for p in sorted(folder.glob("shard-*-of-*.json"))]
    if not manifests:
        raise CheckpointError(f"no finished shard in {folder}; run `clibd embed ... --out {out} --shard i/n` for every "
                              "shard first")
    first = manifests[0]
    keys = ("fingerprint", "n_records", "n_blocks", "block_size")
    for m in manifests[1:]:
        if any(m[k] != first[k] for k in keys):
            raise CheckpointError(f"the shards in {folder} come from different runs (model, settings or data differ: "
                                  f"{[k for k in keys if m[k] != first[k]]}); delete the folder and rerun every shard")
    count = first["of"]
    missing = [j for j in range(first["n_blocks"]) if not _block_path(folder, j).is_file()]
    if missing:
        shards = sorted({j % count for j in missing})
        raise CheckpointError(f"{len(missing)} block(s) of {first['n_blocks']} are missing in {folder} (e.g. "
                              f"{_block_path(folder, missing[0]).name}); run shard(s) "
                              f"{', '.join(f'{s}/{count}' for s in shards)} (again) before merging")
    from .store import _Fingerprint

    summary = EmbedSummary(out, vectors={m: 0 for m in first["dims"]})
    with EmbeddingWriter(out, first["dims"], first["config"]) as writer, _progress(progress, "merging") as bar:
        for j in range(first["n_blocks"]):
            path = _block_path(folder, j)
            header = read_header(path)
            if header["config"].get("shard", {}).get("fingerprint") != first["fingerprint"]:
                raise CheckpointError(f"{path} was written by another run than the shard manifests; delete {folder} "
                                      "and rerun every shard")
            hasher, n = _Fingerprint(header["modalities"]), 0
            for part in iter_embeddings(path):
                hasher.update(part)
                n += len(part)
                writer.write(part)
                _count(summary, part)
                bar.update(len(part))
            if n != header["n_records"] or hasher.hexdigest() != header["sha256"]:
                raise CheckpointError(f"{path} is incomplete or corrupt; delete it and rerun shard "
                                      f"{j % count}/{count}")
    if summary.n_records != first["n_records"]:
        raise CheckpointError(f"merged {summary.n_records} records but the shards read {first['n_records']}; delete "
                              f"{folder} and rerun every shard")
    verify_embedding_file(out)
    return summary
