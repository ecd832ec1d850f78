"""``clibd evaluate``: the CLIBD protocol for a run, a released model or an embedding file (:mod:`clibd_toolkit.protocol`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from ..evaluate import EvalConfig, format_table
from ..protocol import (
    evaluate_embedding_set,
    evaluate_model,
    write_evaluation,
)
from ..training_setup import read_train_ids
from ._common import add_overwrite_argument

#: what ``clibd evaluate`` writes in its --out folder (a folder holding only these is its own earlier output)
EVALUATION_FILES: tuple[str, ...] = ("metrics.json", "per_taxon.csv", "table.txt", "summary.json", "novelty.json",
                                     "data-rejects.csv", "decode-rejects.csv")


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd evaluate``."""
    from ._common import add_data_arguments, add_model_arguments

    add_data_arguments(parser, required=False)
    add_model_arguments(parser, required=False)
    parser.add_argument("--embeddings", default=None, metavar="FILE",
                        help="evaluate an embedding file instead of embedding --data with --run/--model: `clibd "
                             "embed` Parquet, or the official released CLIBD HDF5 (extracted_feature_from_*_split)")
    parser.add_argument("--out", required=True, help="output folder: metrics.json, per_taxon.csv, table.txt, ...")
    parser.add_argument("--stage", choices=["test", "val"], default="test", help="query sets (default: test)")
    parser.add_argument("--pairs", default="all",
                        help="'all' (the published pairs: image/dna queries against image/dna/text keys), 'official' "
                             "(every pair the official CLIBD script reports: also text queries and the fused "
                             "image+dna / concat features, all keys stacked), or comma-separated QUERY->KEY pairs")
    parser.add_argument("--ks", default="1,3,5", help="top-k accuracies to report (default: 1,3,5)")
    parser.add_argument("--split-seed", type=int, default=None,
                        help="data without a split column: seed of the default CLIBD-style split (default: the one "
                             "--run trained with, as recorded in its run.json, else 42)")
    parser.add_argument("--no-novelty", action="store_true", help="skip the novelty-detection scores")
    add_overwrite_argument(parser, "an evaluation's files")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")


def run_evaluate(args: argparse.Namespace) -> int:
    """``clibd evaluate``: the CLIBD protocol for a run on a dataset, written to ``--out``."""
    from ..checkpoint import read_run_info
    from ..distributed import resolve_device
    from ._common import load_data, load_model, model_provenance

    pairs = args.pairs if args.pairs in ("all", "official") else tuple(
        p.strip() for p in args.pairs.split(",") if p.strip())
    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError:
        raise ConfigError(f"--ks got {args.ks!r}; expected comma-separated integers such as 1,3,5") from None
    eval_cfg = EvalConfig(stage=args.stage, pairs=pairs, ks=ks)
    from ..io import refuse_foreign_folder

    refuse_foreign_folder(args.out, overwrite=args.overwrite, what="folder of evaluation results",
                          own=EVALUATION_FILES)
    if args.embeddings:
        return _evaluate_file(args, eval_cfg)
    if not args.data or not (args.run or args.model):
        raise ConfigError("clibd evaluate needs --data with --run RUN or --model NAME|PATH, or --embeddings FILE")
    model = load_model(args, device=str(resolve_device(args.device)))
    # a released model's training data (BIOSCAN) is not on this machine: no overlap can be counted
    data_info = read_run_info(args.run)[2] if args.run else {"released": model.source.get("name")}
    records = load_data(args, rejects_path=Path(args.out) / "data-rejects.csv")
    if args.split_seed is None:  # the split the run held out when it trained on data without splits
        from ..splits import SplitConfig

        args.split_seed = read_run_info(args.run)[1].split_seed if args.run else SplitConfig().seed
    from ..records import Rejects

    decoded = Rejects() if args.on_error == "skip" else None
    evaluation = evaluate_model(model, records, eval_cfg, split_seed=args.split_seed,
                                train_ids=read_train_ids(args.run) if args.run else None, novelty=not args.no_novelty,
                                batch_size=args.batch_size, progress=not args.no_progress, rejects=decoded)
    if decoded is not None and len(decoded):
        Path(args.out).mkdir(parents=True, exist_ok=True)
        decoded.save(Path(args.out) / "decode-rejects.csv")
        sys.stderr.write(f"left out {len(decoded)} record(s) whose input could not be decoded, listed in "
                         f"{Path(args.out) / 'decode-rejects.csv'}\n")
    config = {"eval": eval_cfg.to_json_dict(), "model": model.config.to_json_dict(), "model_source": model.source,
              **model_provenance(args), "data": str(args.data), "train_data": data_info,
              "default_split_applied": evaluation.summary["default_split_applied"],
              "split_seed": evaluation.summary["split_seed"]}
    paths = write_evaluation(evaluation, args.out, config)
    s = evaluation.summary
    note = (f"no split column in {args.data}: applied the default CLIBD-style split (seed {args.split_seed})"
            if s["default_split_applied"] else f"splits from {args.data}")
    overlap = s["train_overlap_queries"]
    lines = [f"CLIBD protocol, {args.stage} queries ({s['n_queries']}) against all keys ({s['n_keys']}); {note}",
             "" if not overlap else f"WARNING: {overlap} query records were used in training; figures are optimistic",
             format_table(evaluation.result),
             f"wrote {', '.join(str(p) for p in paths.values())}"]
    sys.stdout.write("\n".join(line for line in lines if line) + "\n")
    return 0


def _evaluate_file(args: argparse.Namespace, eval_cfg: EvalConfig) -> int:
    """``clibd evaluate --embeddings FILE``: the protocol on an existing embedding file."""
    from ..embedding_files import load_embeddings

    if args.data or args.run or args.model:
        raise ConfigError("--embeddings evaluates a file as it is: leave out --data, --run and --model")
    emb = load_embeddings(args.embeddings)
    evaluation = evaluate_embedding_set(emb, eval_cfg, novelty=not args.no_novelty, progress=not args.no_progress)
    config = {"eval": eval_cfg.to_json_dict(), "embeddings": str(args.embeddings), "embeddings_config": emb.config}
    paths = write_evaluation(evaluation, args.out, config)
    s = evaluation.summary
    sys.stdout.write(f"CLIBD protocol on {args.embeddings}: {args.stage} queries ({s['n_queries']}) against all keys "
                     f"({s['n_keys']})\n{format_table(evaluation.result)}\nwrote "
                     f"{', '.join(str(p) for p in paths.values())}\n")
    return 0
