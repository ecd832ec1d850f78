"""``clibd cluster``: cluster unseen-species embeddings, scored against species and BINs (:mod:`clibd_toolkit.cluster`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cluster import (
    CLUSTER_FILES,
    MAX_AGGLOMERATIVE_RECORDS,
    METHODS,
    TARGETS,
    cluster_embeddings,
)
from ..errors import ConfigError
from ..schema import MODALITIES
from ..store import EmbeddingSet
from ._common import add_overwrite_argument


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd cluster``."""
    from ._common import add_data_arguments, add_model_arguments

    parser.add_argument("--embeddings", default=None, metavar="FILE",
                        help="embedding file: `clibd embed` Parquet or the official CLIBD HDF5 of released embeddings; "
                             "or embed --data now with --run/--model")
    add_data_arguments(parser, required=False)
    add_model_arguments(parser, required=False)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for cluster_scores.json and clusters.csv")
    parser.add_argument("--modality", choices=list(MODALITIES), default="dna", help="vectors to cluster (default dna)")
    parser.add_argument("--method", choices=list(METHODS), default="agglomerative",
                        help="agglomerative (default; n_clusters = true number of species) or hdbscan")
    parser.add_argument("--selection", choices=["unseen", "all"], default="unseen",
                        help="unseen-species records (default: splits val/test unseen and unseen keys) or all")
    parser.add_argument("--umap-dims", type=int, default=None, help="reduce with UMAP to this many dimensions first")
    parser.add_argument("--n-clusters", type=int, default=None, help="agglomerative clusters (default: true species)")
    parser.add_argument("--linkage", choices=["ward", "average", "complete", "single"], default="ward")
    parser.add_argument("--min-cluster-size", type=int, default=5, help="HDBSCAN min_cluster_size")
    parser.add_argument("--min-samples", type=int, default=None, help="HDBSCAN min_samples")
    parser.add_argument("--seed", type=int, default=0, help="UMAP seed")
    parser.add_argument("--max-records", type=int, default=MAX_AGGLOMERATIVE_RECORDS,
                        help="refuse agglomerative clustering above this many records (O(n^2) memory)")
    add_overwrite_argument(parser, "a clustering's files")


def run_cluster(args: argparse.Namespace) -> int:
    """``clibd cluster``: cluster an embedding file (or --data embedded now), write the scores and assignments,
    print a summary."""
    from ..io import refuse_foreign_folder

    refuse_foreign_folder(args.out, overwrite=args.overwrite, what="folder of clustering results", own=CLUSTER_FILES)
    embeddings = _cluster_input(args)
    result = cluster_embeddings(embeddings, modality=args.modality, method=args.method, selection=args.selection,
                                umap_dims=args.umap_dims, n_clusters=args.n_clusters, linkage=args.linkage,
                                min_cluster_size=args.min_cluster_size, min_samples=args.min_samples, seed=args.seed,
                                max_records=args.max_records)
    result.settings["embeddings"] = str(args.embeddings) if args.embeddings else None
    result.settings["model_source"] = embeddings.config.get("model_source")
    paths = result.save(args.out)
    s = result.scores
    lines = [f"{s['n_records']} records ({args.selection}, {args.modality}) -> {s['n_clusters']} clusters "
             f"({args.method}); unclustered {100 * s['unclustered_fraction']:.1f}%"]
    for target in TARGETS:
        if target in s:
            t = s[target]
            lines.append(f"  vs {target} ({t['n_true']} classes): AMI {t['ami']:.3f}  ARI {t['ari']:.3f}  "
                         f"V-measure {t['v_measure']:.3f}")
    lines.append(f"wrote {paths['scores']} and {paths['clusters']}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _cluster_input(args: argparse.Namespace) -> EmbeddingSet:
    """``--embeddings FILE``, or ``--data`` embedded now with ``--run``/``--model`` (the ``--modality`` only)."""
    if args.embeddings:
        if args.data or args.run or args.model:
            raise ConfigError("give either --embeddings FILE or --data with --run/--model, not both")
        from ..embedding_files import load_embeddings

        return load_embeddings(args.embeddings)
    if not args.data or not (args.run or args.model):
        raise ConfigError("clibd cluster needs --embeddings FILE, or --data DATA with --run RUN or --model NAME|PATH")
    from ..embed import extract_embeddings
    from ..distributed import resolve_device
    from ._common import load_data, load_model

    model = load_model(args, device=str(resolve_device("auto")))
    records = load_data(args, rejects_path=Path(args.out) / "data-rejects.csv")
    return extract_embeddings(model, records, modalities=[args.modality])
