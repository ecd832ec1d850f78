"""UMAP + plotting of 100,000 points end to end: embeddings -> 2-D -> plotly Scattergl figure -> HTML file.

Runs the toolkit's own path: :func:`clibd_toolkit.viz.umap_project` (seeded UMAP, PCA initialisation; a seeded
UMAP runs single-threaded) then :func:`clibd_toolkit.viz.plot_latent_space` (WebGL traces) and
:func:`clibd_toolkit.viz.figure_html`, written to a file. Numba compiles UMAP's kernels on first use: a warm-up
UMAP of 5,000 points (``--warmup-points``; above UMAP's 4,096-point exact-neighbour cut-off, so the same kernels
compile) runs first and is timed separately, so the figures show both the cold (first call in a session) and the
warm cost.

Inputs (seeded): ``--points`` DNA embeddings of dimension ``--dim`` (the cpu preset's 256), unit vectors drawn
around ``--species`` random centres grouped into 5 orders (colour = order).

    python benchmarks/umap_plot.py                    # 100,000 points
    python benchmarks/umap_plot.py --points 20000
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import conditions, emit


def embeddings(points: int, dim: int, species: int, seed: int):
    from clibd_toolkit.store import META_COLUMNS, EmbeddingSet

    rng = np.random.default_rng(seed)
    sp = rng.integers(0, species, points)
    centres = rng.standard_normal((species, dim), dtype=np.float32)
    vectors = centres[sp] + 0.7 * rng.standard_normal((points, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    genus = sp // 4
    meta = pd.DataFrame({"record_id": [f"R{i:07d}" for i in range(points)], "order": [f"Order{g % 5}" for g in genus],
                         "family": [f"Fam{g % 97}" for g in genus], "genus": [f"Gen{g}" for g in genus],
                         "species": [f"Gen{g} sp{s}" for g, s in zip(genus, sp)], "bin_uri": pd.NA,
                         "split": "train"})[list(META_COLUMNS)]
    return EmbeddingSet(meta, {"dna": vectors})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--species", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup-points", type=int, default=5000,
                        help="points of the JIT warm-up UMAP (0: none; the timed UMAP then includes compilation)")
    args = parser.parse_args()

    from clibd_toolkit import viz

    emb = embeddings(args.points, args.dim, args.species, args.seed)
    t0 = time.perf_counter()
    if args.warmup_points:  # > 4096 points: the NN-descent path, whose kernels the 100,000-point run uses
        viz.umap_project(embeddings(args.warmup_points, args.dim, 100, args.seed + 1), seed=args.seed)
    jit_warmup = time.perf_counter() - t0

    t0 = time.perf_counter()
    projection = viz.umap_project(emb, seed=args.seed)
    t_umap = time.perf_counter() - t0
    t1 = time.perf_counter()
    fig = viz.plot_latent_space(projection, "order", links=False)
    t_plot = time.perf_counter() - t1
    with tempfile.TemporaryDirectory() as tmp:
        t2 = time.perf_counter()
        path = Path(tmp) / "latent_space.html"
        path.write_text(viz.figure_html(fig), encoding="utf-8")
        t_html = time.perf_counter() - t2
        size = path.stat().st_size
    total = time.perf_counter() - t0
    emit({"benchmark": "umap_plot", "points": len(projection), "dim": args.dim, "species": args.species,
          "seed": args.seed, "umap": "clibd_toolkit.viz.umap_project (seeded: single-threaded, init=pca)",
          "figure": "clibd_toolkit.viz.plot_latent_space (Scattergl) -> figure_html",
          "seconds": {"umap": round(t_umap, 1), "figure_build": round(t_plot, 2), "html_write": round(t_html, 2),
                      "end_to_end_warm": round(total, 1), "numba_jit_first_call": round(jit_warmup, 1),
                      "end_to_end_cold": round(total + jit_warmup, 1),
                      "warmup_points": args.warmup_points},
          "traces": len(fig.data), "scattergl": all(tr.type == "scattergl" for tr in fig.data),
          "html_mib": round(size / 2**20, 1), "conditions": conditions()})


if __name__ == "__main__":
    main()
