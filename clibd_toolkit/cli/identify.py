"""``clibd identify``: name specimens (photos or barcodes) against a reference library (:mod:`clibd_toolkit.protocol`, :mod:`clibd_toolkit.rank_calibration`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..protocol import (
    _is_clibd_records_hdf5,
    identify_records,
    load_calibration,
    load_queries,
)
from ..schema import RANKS
from ..training_setup import read_train_ids


def add_identify_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd identify``."""
    from ._common import add_model_arguments

    add_model_arguments(parser)
    parser.add_argument("--reference", required=True,
                        help="reference library: a records file (embedded now), an embedding file (.parquet) or "
                             "the official released CLIBD embeddings (.hdf5)")
    parser.add_argument("--query", required=True,
                        help="an image file or folder, a FASTA file, a DNA sequence, or a records file")
    parser.add_argument("--out", required=True, help="CSV to write (one row per query)")
    parser.add_argument("--query-modality", choices=["dna", "image"], default=None)
    parser.add_argument("--key-modality", choices=["dna", "image", "text"], default=None)
    parser.add_argument("-k", "--k", type=int, default=5, help="neighbours listed per query")
    parser.add_argument("--min-precision", type=float, default=0.95,
                        help="names as deep as the evidence allows while staying right at least this often for "
                             "every kind of query: novel order, family, genus, species and known species (default "
                             "0.95): 'family known, genus unknown' rather than a doubtful genus")
    parser.add_argument("--calibration", default=None,
                        help="a saved calibration JSON made on this same reference (default: calibrate now and save it "
                             "beside an embedding-file reference, or beside --out)")
    parser.add_argument("--sequence-weight", type=float, default=None, metavar="S",
                        help="barcodes against barcodes: the share of the similarity given to the barcodes' 5-mer "
                             "profiles beside the model's embedding (clibd_toolkit.kmers; 0 = the embedding alone). "
                             "Default: the calibration's with --calibration, else 0.5 when the reference's barcodes "
                             "are at hand (a records reference, or --reference-barcodes), else 0")
    parser.add_argument("--reference-barcodes", default=None, metavar="FILE",
                        help="the records file an embedding-file --reference was made from: its barcodes, by record "
                             "id, for --sequence-weight")
    parser.add_argument("--no-novelty", action="store_true",
                        help="no calibration: every query named by its nearest reference at every rank, no novelty flag")
    parser.add_argument("--image-root", default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")


def run_identify(args: argparse.Namespace) -> int:
    """``clibd identify``: name each query at every rank, with neighbours, scores and the novelty flag."""
    from ..embedding_files import load_embeddings
    from ..io import atomic_path
    from ..readers import read_records
    from ..distributed import resolve_device
    from ._common import load_model

    if args.k < 1:
        raise ConfigError(f"-k got {args.k}; expected an integer >= 1")
    from ..io import refuse_replacing_inputs

    refuse_replacing_inputs(args.out, {"--query": args.query, "--reference": args.reference,
                                       "--calibration": args.calibration,
                                       "--reference-barcodes": args.reference_barcodes})
    if args.sequence_weight is not None and not 0 <= args.sequence_weight < 1:
        raise ConfigError(f"--sequence-weight got {args.sequence_weight}; expected a number in [0, 1), e.g. 0.5 "
                          "(0: the model's embedding alone)")
    model = load_model(args, device=str(resolve_device(args.device)))
    ref_path = Path(args.reference)
    embedding_file = ref_path.is_file() and ref_path.suffix.lower() in (".parquet", ".hdf5", ".h5") and not (
        ref_path.suffix.lower() != ".parquet" and _is_clibd_records_hdf5(ref_path))
    reference: Any = (load_embeddings(ref_path) if embedding_file
                      else read_records(ref_path, **({"image_root": args.image_root} if args.image_root else {})).records)
    queries = load_queries(args.query, image_root=args.image_root)
    if not 0 < args.min_precision < 1:
        raise ConfigError(f"--min-precision got {args.min_precision}; expected a number in (0, 1), e.g. 0.95")
    calibration = load_calibration(args.calibration) if args.calibration else None
    barcodes = None
    if args.reference_barcodes:
        from ..kmers import barcodes_of

        barcodes = barcodes_of(read_records(args.reference_barcodes).records)
    table, calibration = identify_records(
        model, queries, reference, query_modality=args.query_modality, key_modality=args.key_modality, k=args.k,
        calibration=calibration, calibrate=not args.no_novelty, min_precision=args.min_precision,
        batch_size=args.batch_size, progress=not args.no_progress,
        trained_ids=read_train_ids(args.run) if getattr(args, "run", None) else None,
        sequence_weight=args.sequence_weight, reference_barcodes=barcodes)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    saved = args.calibration
    if calibration is not None and not args.calibration:
        name = f".calibration-{calibration.query_modality}-{calibration.key_modality}.json"
        saved = str(ref_path if embedding_file else Path(args.out)) + name
        try:  # beside an embedding-file reference, so that the next run can reuse it with --calibration
            calibration.save(saved)
        except OSError:  # a read-only reference folder: beside the output instead
            saved = str(args.out) + name
            calibration.save(saved)
    named = table["identified_rank"].value_counts().to_dict() if "identified_rank" in table else {}
    sys.stdout.write(json.dumps({"out": str(args.out), "queries": len(table),
                                 "flagged_novel": int(table["novel"].sum()) if "novel" in table else 0,
                                 "reported_rank": {r: int(named.get(r, 0)) for r in RANKS},
                                 "unnamed": int(table["identified_rank"].isna().sum()),
                                 "calibration": saved,
                                 "sequence_weight": table.attrs.get("sequence_weight", 0.0)}) + "\n")
    return 0
