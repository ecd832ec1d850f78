"""Search speed: exact top-k over 1,000,000 x 768 float32 keys, the toolkit's exact path vs faiss, and an IVF index.

In one process, on the same keys and queries:

- ``exact``: :class:`clibd_toolkit.index.NearestNeighbourIndex` default backend (chunked ``torch.mm`` + top-k merge);
- ``faiss IndexFlatIP``: faiss's exact inner-product search (the reference speed);
- ``faiss-ivf``: ``NearestNeighbourIndex(backend="faiss-ivf")`` (IVF-Flat, ``--nlist`` lists, trained on a seeded
  sample), at each ``--nprobe``: recall@1 and recall@10 against the exact result and speed-up over exact search.

Exact and faiss are timed alternately (``--repeats`` each, median), so machine load affects both alike; the exact
path's extra memory while searching (peak RSS above the resident keys, sampled every 5 ms) shows it is bounded by
its block size, not by the number of keys.

Data (seeded): ``--keys`` unit vectors drawn around ``--clusters`` random centres (species-like clusters; noise
``--spread``), queries drawn the same way (new points, not copies of keys). Uniform random vectors, the worst
case for IVF, need a much larger ``nprobe`` for the same recall.

    python benchmarks/search.py                         # 1M x 768, 1,000 queries, k = 10
    python benchmarks/search.py --keys 100000 --queries 200
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np

from _common import conditions, emit


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        import os

        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory sampled in a background thread while the ``with`` block runs."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def make_data(args) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim), dtype=np.float32)

    def draw(n: int) -> np.ndarray:
        out = np.empty((n, args.dim), np.float32)
        for start in range(0, n, 100_000):
            stop = min(n, start + 100_000)
            block = centres[rng.integers(0, args.clusters, stop - start)]
            block += args.spread * rng.standard_normal(block.shape, dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start:stop] = block
        return out

    return draw(args.keys), draw(args.queries)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=20_000)
    parser.add_argument("--spread", type=float, default=0.6, help="noise around a cluster centre (per dimension)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import faiss

    from clibd_toolkit.index import NearestNeighbourIndex

    keys, queries = make_data(args)
    exact = NearestNeighbourIndex(copy=False).fit(keys)
    keys = exact.keys_  # the index's own (renormalised) array: one copy of the keys in memory, not two
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(exact.keys_)

    exact_s, faiss_s = [], []
    for _ in range(args.repeats):
        with PeakRSS() as mem:
            t, (ex_scores, ex_idx) = timed(lambda: exact.search(queries, args.k))
        exact_s.append(t)
        t, (fs_scores, fs_idx) = timed(lambda index=flat: index.search(queries, args.k))
        faiss_s.append(t)
    agree = float(np.mean(ex_idx[:, 0] == fs_idx[:, 0]))
    exact_qps = args.queries / statistics.median(exact_s)
    faiss_qps = args.queries / statistics.median(faiss_s)
    del flat

    t_build, ivf = timed(lambda: NearestNeighbourIndex("faiss-ivf", nlist=args.nlist, seed=args.seed).fit(keys))
    ivf_rows = []
    for nprobe in args.nprobe:
        ivf.set_params(nprobe=nprobe)
        ivf._apply_search_params(ivf.index_)
        t, (_, idx) = timed(lambda: ivf.search(queries, args.k))
        recall10 = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(idx, ex_idx)]))
        ivf_rows.append({"nprobe": nprobe, "queries_per_s": round(args.queries / t, 1),
                         "recall_at_1": round(float(np.mean(idx[:, 0] == ex_idx[:, 0])), 4),
                         "recall_at_10": round(recall10, 4),
                         "speedup_over_exact": round(args.queries / t / exact_qps, 2)})
    best = next((r for r in ivf_rows if r["recall_at_1"] >= 0.99), None)
    emit({
        "benchmark": "search", "keys": args.keys, "dim": args.dim, "queries": args.queries, "k": args.k,
        "data": f"unit vectors around {args.clusters} seeded random centres, spread {args.spread}", "seed": args.seed,
        "exact": {"backend": "NearestNeighbourIndex(backend='exact')", "queries_per_s": round(exact_qps, 1),
                  "seconds": [round(s, 2) for s in exact_s],
                  "extra_memory_mib_while_searching": round((mem.peak - mem.start) / 2**20, 1),
                  "key_matrix_mib": round(keys.nbytes / 2**20, 1),
                  "block": f"{exact.query_chunk_size} queries x {exact.key_chunk_size} keys"},
        "faiss_flat": {"queries_per_s": round(faiss_qps, 1), "seconds": [round(s, 2) for s in faiss_s]},
        "exact_over_faiss_speed": round(exact_qps / faiss_qps, 3), "target_min": 0.8,
        "meets_target": exact_qps / faiss_qps >= 0.8, "top1_agreement_exact_vs_faiss": agree,
        "ivf": {"nlist": args.nlist, "build_seconds": round(t_build, 1), "by_nprobe": ivf_rows,
                "smallest_nprobe_with_recall_at_1_0.99": best},
        "conditions": conditions(),
    })


if __name__ == "__main__":
    main()
