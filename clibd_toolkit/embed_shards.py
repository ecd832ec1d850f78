"""Sharded embedding extraction for several jobs or ranks (:func:`embed_shard` + :func:`merge_shards`), on top of
:mod:`clibd_toolkit.embed`.

The record stream is cut into *blocks* of ``block_size`` consecutive records (block ``j`` = records
``j*block_size ...``); shard ``i`` of ``n`` embeds the blocks with ``j % n == i``, each written atomically as
``OUT.shards/block-{j:06d}.parquet``. A job killed and run again skips every complete block (after checking its
record ids against the stream and its checksum) and redoes the rest, so nothing is embedded twice or left out; a job
that finished writes ``shard-{i:05d}-of-{n:05d}.json`` and a rerun of it returns at once. :func:`merge_shards`
streams the blocks in order into ``OUT`` and verifies it. Blocks do not depend on ``n``: the shard count may change
between reruns. The vectors are bit-identical to :func:`clibd_toolkit.embed.write_embeddings` for the same
``batch_size``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
import torch

from .embed import (
    DEFAULT_BLOCK_SIZE,
    EmbedSummary,
    _as_chunks,
    _base_config,
    _count,
    _modalities,
    _progress,
    iter_embedding_chunks,
    rebatch,
)
from .errors import CheckpointError, ConfigError
from .schema import RECORD_ID
from .store import EmbeddingWriter, iter_embeddings, read_header, verify_embedding_file

log = logging.getLogger(__name__)

SHARD_FORMAT = "clibd_toolkit.embedding_shard/1"



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
