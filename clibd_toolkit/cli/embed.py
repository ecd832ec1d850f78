"""``clibd embed``: embed records into one embedding file, streamed and shardable (:mod:`clibd_toolkit.embed`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..embed import DEFAULT_BLOCK_SIZE, EmbedSummary, write_embeddings
from ..embed_shards import embed_shard, merge_shards, parse_shard
from ..errors import ConfigError


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd embed``."""
    from ._common import add_data_arguments, add_model_arguments

    add_data_arguments(parser, required=False)
    add_model_arguments(parser, required=False, run_flags=("--run", "--run-dir"),  # --merge needs no model
                        run_help="not needed with --merge. Under torchrun write --run-dir (torchrun's own parser "
                                 "takes --run for an abbreviation of its --run-path)")
    parser.add_argument("--out", required=True, help="embedding file to write (.parquet)")
    parser.add_argument("--modalities", default=None, help="subset of the model's modalities (default: all)")
    parser.add_argument("--batch-size", type=int, default=64, help="records per forward pass (default 64)")
    parser.add_argument("--chunk-size", type=int, default=50_000,
                        help="records read from the data at a time (memory; default 50,000)")
    parser.add_argument("--device", default="auto")
    shards = parser.add_argument_group("sharding (several jobs or torchrun ranks)")
    shards.add_argument("--shard", default=None, metavar="I/N",
                        help="embed only shard I of N (0-based) into OUT.shards/; resumable; then run --merge")
    shards.add_argument("--merge", action="store_true", help="merge the finished shards in OUT.shards/ into OUT")
    shards.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE,
                        help=f"records per resumable block of a shard (default {DEFAULT_BLOCK_SIZE:,})")
    parser.add_argument("--no-progress", action="store_true")


def _record_stream(args: argparse.Namespace):
    from ..readers import iter_record_chunks

    options = {"image_root": args.image_root} if getattr(args, "image_root", None) else {}
    return iter_record_chunks(args.data, args.chunk_size, format=args.format, on_error=args.on_error, **options)


def _save_rejects(stream, out: Path, decoded=None, shard: tuple[int, int] | None = None) -> None:
    """List every record left out: those the reader refused (written once, by shard 0) and those whose input failed
    when decoded (each shard its own)."""
    from ..records import Rejects

    both = Rejects()
    if shard is None or shard[0] == 0:
        both.rows.extend(stream.rejects.rows)
    if decoded is not None:
        both.rows.extend(decoded.rows)
    if len(both):
        suffix = ".rejects.csv" if shard is None else f".rejects-{shard[0]}-of-{shard[1]}.csv"
        path = Path(str(out) + suffix)
        both.save(path)
        sys.stderr.write(f"left out {len(both)} unusable record(s), listed in {path}\n")


def run_embed(args: argparse.Namespace) -> int:
    """``clibd embed``: stream records through a trained model into an embedding file (or a shard of one)."""
    from ..distributed import distributed_session, launched_by_torchrun

    out = Path(args.out)
    progress = not args.no_progress
    if args.merge:
        if args.shard:
            raise ConfigError("--merge and --shard are separate steps: run every --shard i/n first, then --merge")
        summary = merge_shards(out, progress=progress)
        sys.stdout.write(json.dumps(summary.to_json_dict()) + "\n")
        return 0
    if not args.data or not (args.run or args.model):
        raise ConfigError("clibd embed needs --data and --run RUN or --model NAME|PATH (or --merge to merge finished "
                          "shards)")
    from ..io import refuse_replacing_inputs

    refuse_replacing_inputs(out, {"--data": args.data, "--model": getattr(args, "model", None)})
    shard = parse_shard(args.shard) if args.shard else None
    if shard is None and launched_by_torchrun():
        # one shard per rank, then rank 0 merges (gloo only for the barrier; ranks may finish far apart)
        with distributed_session(backend="gloo", timeout_s=7 * 24 * 3600.0) as info:
            summary = _embed(args, (info.rank, info.world_size), progress and info.is_main)
            from ..distributed import barrier

            barrier()
            if info.is_main:
                summary = merge_shards(out, progress=progress)
                sys.stdout.write(json.dumps(summary.to_json_dict()) + "\n")
        return 0
    summary = _embed(args, shard, progress)
    report = summary.to_json_dict()
    if shard is not None:
        report = {"shard": f"{shard[0]}/{shard[1]}", "folder": report.pop("out"), **report,
                  "blocks_written": summary.blocks_written, "blocks_skipped": summary.blocks_skipped}
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


def _embed(args: argparse.Namespace, shard: tuple[int, int] | None, progress: bool) -> EmbedSummary:
    from ..distributed import resolve_device
    from ._common import load_model, model_provenance

    model = load_model(args, device=str(resolve_device(args.device)))
    stream = _record_stream(args)
    provenance = {**model_provenance(args), "data": str(args.data)}
    out = Path(args.out)
    from ..records import Rejects

    decoded = Rejects() if args.on_error == "skip" else None  # inputs that fail only when decoded
    if shard is None:
        summary = write_embeddings(model, stream, out, modalities=args.modalities, batch_size=args.batch_size,
                                   config=provenance, progress=progress, rejects=decoded)
    else:
        summary = embed_shard(model, stream, out, shard, modalities=args.modalities, batch_size=args.batch_size,
                              block_size=args.block_size, config=provenance, progress=progress, rejects=decoded)
    if shard is None or shard[0] == 0 or (decoded is not None and len(decoded)):
        _save_rejects(stream, out, decoded, shard)
    if shard is None:  # records in = embedded + rejected
        summary.rejected = len(stream.rejects) + (len(decoded) if decoded is not None else 0)
    return summary
