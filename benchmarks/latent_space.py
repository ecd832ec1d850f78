"""Latent-space figure at scale: build time, HTML size and headless-Chromium render time of
:func:`clibd_toolkit.viz.plot_latent_space` with 100,000 specimens (image + DNA points, plus taxonomy strings), and
the time of :func:`clibd_toolkit.viz.umap_project` on a smaller embedding set.

    python benchmarks/latent_space.py [--records 100000] [--umap-records 5000] [--no-browser]

Prints one JSON object. The figure is synthetic (random 2-D positions grouped by species), so only its size
matters; WebGL (Scattergl) is what keeps 200,000 points interactive.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import conditions, emit


def projection_table(records: int, species: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sp = rng.integers(0, species, records)
    centres = rng.normal(scale=20, size=(species, 2))
    frames = []
    for modality, shift in (("image", 0.0), ("dna", 3.0)):
        xy = centres[sp] + shift + rng.normal(size=(records, 2))
        frames.append(pd.DataFrame({"record_id": [f"R{i:07d}" for i in range(records)], "modality": modality,
                                    "x": xy[:, 0].astype(np.float32), "y": xy[:, 1].astype(np.float32),
                                    "species": [f"S{s}" for s in sp]}))
    text = pd.DataFrame({"record_id": [f"T{s}" for s in range(species)], "modality": "text",
                         "x": centres[:, 0].astype(np.float32), "y": centres[:, 1].astype(np.float32),
                         "species": [f"S{s}" for s in range(species)]})
    df = pd.concat(frames + [text], ignore_index=True)
    df["genus"] = df["species"].str[:3]
    df["family"] = df["species"].str[:2]
    df["order"] = "O" + (df["species"].str[1:].astype(int) % 5).astype(str)
    df["bin_uri"], df["split"] = pd.NA, "train"
    from clibd_toolkit.viz import PROJECTION_COLUMNS

    return df[list(PROJECTION_COLUMNS)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--species", type=int, default=2000)
    parser.add_argument("--umap-records", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()

    from clibd_toolkit import viz
    from clibd_toolkit.report import browser_check, find_chromium
    from clibd_toolkit.store import META_COLUMNS, EmbeddingSet

    result: dict = {"benchmark": "latent_space", "records": args.records, "species": args.species,
                    "conditions": conditions()}
    df = projection_table(args.records, args.species, args.seed)
    result["points"] = len(df)
    for colour in ("order", "species"):
        t = time.perf_counter()
        fig = viz.plot_latent_space(df, colour)
        build = time.perf_counter() - t
        t = time.perf_counter()
        html = viz.figure_html(fig)
        result[f"colour_{colour}"] = {"traces": len(fig.data), "build_s": round(build, 2),
                                      "to_html_s": round(time.perf_counter() - t, 2),
                                      "html_mb": round(len(html.encode()) / 1e6, 1)}
    if not args.no_browser and find_chromium():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "latent.html"
            path.write_text(html)
            t = time.perf_counter()
            found = browser_check(path, settle_ms=3000)
            result["chromium"] = {"wall_s_including_3s_settle": round(time.perf_counter() - t, 1),
                                  "errors": found["errors"], "drawn": found["drawn"],
                                  "webgl_figures": found["webgl_figures"]}
    # UMAP on a clustered embedding set (image + DNA + text vectors)
    rng = np.random.default_rng(args.seed)
    n = args.umap_records
    sp = rng.integers(0, max(2, n // 20), n)
    centres = rng.normal(size=(sp.max() + 1, 64))
    meta = pd.DataFrame({"record_id": [f"R{i}" for i in range(n)], "order": "O", "family": "F", "genus": "G",
                         "species": [f"S{s}" for s in sp], "bin_uri": pd.NA, "split": "train"})[list(META_COLUMNS)]

    def vecs(noise: float) -> np.ndarray:
        v = (centres[sp] + noise * rng.normal(size=(n, 64))).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    emb = EmbeddingSet(meta, {"image": vecs(0.5), "dna": vecs(0.2), "text": vecs(0.0)})
    t = time.perf_counter()
    proj = viz.umap_project(emb, seed=args.seed)
    result["umap"] = {"records": n, "points": len(proj), "seconds_including_numba_compile": round(time.perf_counter() - t, 1)}
    emit(result)


if __name__ == "__main__":
    main()
