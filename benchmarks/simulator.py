"""Benchmark of the survey simulator: records per second, DNA-only and DNA + images, generated and written.

Prints one JSON object. The inputs are named (sizes, seed, image size), so a rerun measures the same work:

    python benchmarks/simulator.py                          # 200,000 DNA-only + 3,000 with 128 px images
    python benchmarks/simulator.py --dna-records 1000000    # the 1M scale-test survey of issue 6
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc

from _common import conditions, emit
from clibd_toolkit.simulator import SimulatorConfig, simulate_records, write_survey


def _generate(cfg: SimulatorConfig) -> float:
    t0 = time.perf_counter()
    n = sum(len(chunk) for chunk in simulate_records(cfg))
    assert n == cfg.records
    return time.perf_counter() - t0


def _write(cfg: SimulatorConfig) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = write_survey(os.path.join(tmp, "survey"), cfg, progress=False)
        seconds = time.perf_counter() - t0
        size = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder) for f in files)
    return seconds, size


def _peak_mib(cfg: SimulatorConfig) -> float:
    tracemalloc.start()
    for _ in simulate_records(cfg):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return round(peak / 2**20, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dna-records", type=int, default=200_000)
    parser.add_argument("--image-records", type=int, default=3_000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dna = SimulatorConfig(records=args.dna_records, images=False, seed=args.seed)
    img = SimulatorConfig(records=args.image_records, image_size=args.image_size, seed=args.seed)
    dna_gen = _generate(dna)
    dna_write, dna_bytes = _write(dna)
    img_gen = _generate(img)
    img_write, img_bytes = _write(img)
    result = {
        "benchmark": "simulator",
        "inputs": {"seed": args.seed, "dna_records": args.dna_records, "image_records": args.image_records,
                   "image_size": args.image_size, "tree": {k: getattr(dna, k) for k in
                                                           ("orders", "families", "genera", "species")}},
        "dna_only": {"generate_records_per_s": round(args.dna_records / dna_gen),
                     "write_folder_records_per_s": round(args.dna_records / dna_write),
                     "write_seconds": round(dna_write, 2), "folder_mib": round(dna_bytes / 2**20, 1),
                     "peak_traced_mib_while_generating": _peak_mib(dna.replace(records=min(args.dna_records,
                                                                                         200_000)))},
        "dna_and_images": {"generate_records_per_s": round(args.image_records / img_gen, 1),
                           "write_folder_records_per_s": round(args.image_records / img_write, 1),
                           "write_seconds": round(img_write, 2), "folder_mib": round(img_bytes / 2**20, 1)},
        "conditions": conditions(),
    }
    emit(result)


if __name__ == "__main__":
    main()
