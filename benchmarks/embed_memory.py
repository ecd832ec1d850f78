"""Peak memory of `clibd embed` on simulated DNA-only surveys of 100,000 and 1,000,000 records.

Streaming claim (issue 6): reading, embedding and writing never hold the whole dataset, so the 1M run's peak
resident memory must stay within 1.5x the 100k run's. Each size runs `clibd embed` in its own process (the same
argument parser and run function as the CLI: :func:`clibd_toolkit.cli.embed.run_embed`), and its peak RSS is read from
the kernel (``wait4`` rusage) — the whole process: Python, torch, the model, reader chunks, writer buffers.

Inputs: ``tiny`` preset with random weights (seeded) embedding the ``dna`` modality, batch 256, reader chunks of
50,000 records, one torch thread; surveys from the built-in simulator (seed 0), cached in ``--workdir``.

    python benchmarks/embed_memory.py                       # 100k and 1M (1M: ~15 min on one core)
    python benchmarks/embed_memory.py --sizes 2000 20000    # quick check
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, conditions, emit, random_run, survey

# the same parser and run function that `clibd embed` uses
SHIM = ("import argparse, sys; from clibd_toolkit.cli.embed import add_embed_arguments, run_embed; "
        "p = argparse.ArgumentParser(prog='clibd embed'); add_embed_arguments(p); "
        "sys.exit(run_embed(p.parse_args(sys.argv[1:])))")


def measure(data: Path, run: Path, out: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-c", SHIM, "--data", str(data), "--run", str(run), "--out", str(out),
           "--modalities", "dna", "--batch-size", str(args.batch_size), "--chunk-size", str(args.chunk_size),
           "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"clibd embed failed ({proc.returncode}):\n{stderr[-3000:]}")
    report = json.loads(stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 1), "records": report["records"], "vectors": report["vectors"]}


def one_size(records: int, args: argparse.Namespace) -> None:
    """Child mode: embed one survey and print its measurements (peak RSS of the embed process included)."""
    import resource

    workdir = Path(args.workdir)
    data = survey(workdir, records, args.seed)
    run = random_run(workdir, "tiny", "dna,text", args.seed)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        result = measure(data, run, Path(tmp) / "emb.parquet", args)
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if peak_kib <= before:
            raise SystemExit("could not attribute the peak RSS to the embed process")
        size = (Path(tmp) / "emb.parquet").stat().st_size
    result.update({"peak_rss_mib": round(peak_kib / 1024, 1), "records_per_s": round(records / result["seconds"], 1),
                   "file_mib": round(size / 2**20, 1)})
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "clibd-bench"))
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    if args.child is not None:
        one_size(args.child, args)
        return
    runs = []
    for n in args.sizes:
        # a fresh interpreter per size: RUSAGE_CHILDREN keeps the max over all children ever waited for, so the
        # peaks of the two sizes must not share one parent process
        child = subprocess.run([sys.executable, __file__, "--child", str(n), "--seed", str(args.seed),
                                "--batch-size", str(args.batch_size), "--chunk-size", str(args.chunk_size),
                                "--threads", str(args.threads), "--workdir", args.workdir],
                               capture_output=True, text=True)
        if child.returncode != 0:
            raise SystemExit(child.stderr[-3000:])
        runs.append({"survey_records": n, **json.loads(child.stdout.strip().splitlines()[-1])})
    result = {"benchmark": "embed_memory", "command": "clibd embed --modalities dna (run_embed)", "preset": "tiny",
              "weights": "random (seeded)", "seed": args.seed, "batch_size": args.batch_size,
              "chunk_size": args.chunk_size, "threads": args.threads, "runs": runs}
    if len(runs) >= 2:
        ratio = runs[-1]["peak_rss_mib"] / runs[0]["peak_rss_mib"]
        result.update({"peak_ratio_largest_over_smallest": round(ratio, 3), "target_ratio_max": 1.5,
                       "meets_target": ratio <= 1.5})
    result["conditions"] = conditions()
    emit(result)


if __name__ == "__main__":
    main()
