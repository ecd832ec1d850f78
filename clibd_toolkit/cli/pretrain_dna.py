"""``clibd pretrain-dna``: masked k-mer pretraining of the DNA encoder (:func:`clibd_toolkit.pretrain.pretrain_dna`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..pretrain import PretrainConfig, pretrain_dna
from ._common import add_overwrite_argument

#: what ``clibd pretrain-dna`` writes in its --out folder (a folder holding only these is its own earlier output)
PRETRAIN_FILES: tuple[str, ...] = ("dna_encoder.safetensors", "pretrain.json", "data-rejects.csv")


def add_pretrain_dna_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd pretrain-dna``."""
    from ._common import add_data_arguments

    d = PretrainConfig()
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder (dna_encoder.safetensors, pretrain.json)")
    parser.add_argument("--splits", default=None,
                        help="comma-separated split names to pretrain on (default: all records; e.g. pretrain,train "
                        "keeps evaluation species out)")
    for name in ("k", "max_length", "hidden_size", "num_layers", "num_heads", "intermediate_size", "epochs",
                 "batch_size", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    for name in ("mask_ratio", "lr", "weight_decay", "val_fraction"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name))
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--keep-duplicates", action="store_true", help="pretrain on identical barcodes repeatedly")
    parser.add_argument("--half", action="store_true", help="store float16 weights (half the file size)")
    add_overwrite_argument(parser, "a pretrained DNA encoder's files")
    parser.add_argument("--no-progress", action="store_true")


def run_pretrain_dna(args: argparse.Namespace) -> int:
    """``clibd pretrain-dna``: masked k-mer pretraining of the DNA encoder on the barcodes of ``--data``."""
    from ..schema import DNA, RECORD_ID, SPLIT
    from ._common import load_data

    fields = {k: getattr(args, k) for k in PretrainConfig.field_names() if hasattr(args, k) and k != "progress"}
    config = PretrainConfig(**fields, progress=not args.no_progress, deduplicate=not args.keep_duplicates)
    from ..io import refuse_foreign_folder

    refuse_foreign_folder(args.out, overwrite=args.overwrite, what="pretrained DNA encoder folder", own=PRETRAIN_FILES)
    records = load_data(args, rejects_path=Path(args.out) / "data-rejects.csv")
    info = {"source": str(args.data), "n_records": len(records)}
    if args.splits:
        from ..splits import SplitConfig, ensure_splits

        records, applied = ensure_splits(records)
        wanted = [s.strip() for s in args.splits.split(",") if s.strip()]
        records = records.loc[records[SPLIT].isin(wanted)]
        info.update(splits=wanted, default_split_applied=applied,
                    split_config=SplitConfig().to_dict() if applied else None)
    records = records.loc[records[DNA].notna()]
    summary = pretrain_dna(records[DNA].tolist(), config, args.out, ids=records[RECORD_ID].tolist(), half=args.half,
                           data_info=info)
    sys.stdout.write(json.dumps({"out": args.out, "n_barcodes": summary["n_barcodes"],
                                 "val_masked_accuracy": summary["val_masked_accuracy"]}) + "\n")
    return 0
