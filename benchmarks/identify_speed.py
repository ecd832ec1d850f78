"""Identification speed as a user meets it: 10,000 barcodes named by ``clibd identify`` against a saved 70,000-record
reference embedding with its saved calibration, beside SINTAX (``vsearch --sintax``) against the same reference in
the same run (issue 13).

Data: ``../shared/data/bold-insect-coi/bold_insect_coi5p.tsv.gz`` (75,750 real BOLD records). A seeded permutation:
the first ``--reference-size`` records are the reference library, the next ``--queries`` the queries; when the two
together exceed the data (70,000 + 10,000 > 75,750), the remaining queries are drawn from the reference records
(a search costs the same whether or not the answer is in the library; ``queries_in_reference`` says how many).

Every step is the command a user runs, timed as a whole process (start-up, model loading and file reading
included), with the run's model (``--run``, a ``clibd train --out`` folder):

1. library build: ``clibd embed`` of the reference (a .parquet embedding file), then a first ``clibd identify``
   with ``--reference-barcodes`` (the 5-mer sequence evidence, the default for barcodes) that calibrates and saves
   the calibration beside the embedding file; the calibration's share is that identify's time minus step 2's;
2. identification: ``clibd identify --calibration SAVED`` of the queries (a FASTA file), the timed figure;
3. SINTAX: ``vsearch --makeudb_usearch`` (its library build: the reference FASTA, taxonomy in the headers, indexed)
   then ``vsearch --sintax`` of the same FASTA queries against that index, bootstrap cutoff ``--sintax-cutoff``.

One JSON object on stdout: the seconds of each step, ``speedup`` (SINTAX's identification time over the
toolkit's) and, as a check that both did the work, how many queries each named at each rank.

    python benchmarks/identify_speed.py --run RUN          # about 8 minutes on 2 cores with a cpu-preset run
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import conditions, emit
from open_world import (DEFAULT_DATA, RANKS, VSEARCH_MISSING, read_sintax, sintax_command, write_query_fasta,
                        write_sintax_fasta)


def timed(cmd: list[str]) -> tuple[float, str]:
    """Run one command to completion; (its wall seconds, its stdout). A failure stops the benchmark with its stderr."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--run", required=True, help="a toolkit run (clibd train --out) whose model embeds")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="BOLD barcodes with taxonomy (default: %(default)s)")
    parser.add_argument("--reference-size", type=int, default=70_000, help="reference records (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=10_000, help="query barcodes (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the permutation (default: %(default)s)")
    parser.add_argument("--min-precision", type=float, default=0.95,
                        help="clibd identify's target precision (default: %(default)s)")
    parser.add_argument("--sintax-cutoff", type=float, default=0.8,
                        help="SINTAX bootstrap cutoff (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="vsearch threads (torch uses its default)")
    parser.add_argument("--workdir", default=None, help="keep the files here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.reference_size < 2 or args.queries < 1:
        parser.error(f"--reference-size {args.reference_size} / --queries {args.queries}: expected >= 2 and >= 1")

    import clibd_toolkit as ctk

    t_start = time.perf_counter()
    records = ctk.load_records(args.data)
    if args.reference_size > len(records):
        parser.error(f"--reference-size {args.reference_size} exceeds the {len(records):,} records of {args.data}")
    order = np.random.default_rng(args.seed).permutation(len(records))
    reference = records.iloc[order[:args.reference_size]].reset_index(drop=True)
    outside = order[args.reference_size:args.reference_size + args.queries]
    refill = np.random.default_rng([args.seed, 1]).choice(args.reference_size, args.queries - len(outside),
                                                            replace=False) if len(outside) < args.queries else []
    queries = pd.concat([records.iloc[outside], reference.iloc[refill]], ignore_index=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        ref_csv, ref_emb, query_fa = work / "reference.csv", work / "reference.parquet", work / "queries.fasta"
        reference.to_csv(ref_csv, index=False)
        write_query_fasta(queries, query_fa)
        clibd = [sys.executable, "-m", "clibd_toolkit.cli"]
        identify = [*clibd, "identify", "--run", args.run, "--reference", str(ref_emb), "--reference-barcodes",
                    str(ref_csv), "--query", str(query_fa), "--query-modality", "dna", "--key-modality", "dna",
                    "--min-precision", str(args.min_precision), "--no-progress"]
        embed_s, _ = timed([*clibd, "embed", "--run", args.run, "--data", str(ref_csv), "--out", str(ref_emb),
                            "--modalities", "dna", "--no-progress"])
        first_s, first_out = timed([*identify, "--out", str(work / "first.csv")])
        saved = json.loads(first_out.strip().splitlines()[-1])["calibration"]
        identify_s, out = timed([*identify, "--calibration", saved, "--out", str(work / "identified.csv")])
        ours = json.loads(out.strip().splitlines()[-1])
        toolkit = {"embed_reference_s": embed_s, "first_identify_s (calibrate + save + identify)": first_s,
                   "calibrate_s (first identify - identify)": first_s - identify_s,
                   "library_build_s (embed + calibrate)": embed_s + first_s - identify_s,
                   "identify_s (saved reference + saved calibration)": identify_s,
                   "reported_rank": ours["reported_rank"], "unnamed": ours["unnamed"],
                   "sequence_weight": ours["sequence_weight"]}
        exe = shutil.which("vsearch")
        if exe is None:
            sintax: dict = {"skipped": VSEARCH_MISSING}
        else:
            db_fa, udb, tsv = work / "reference.fa", work / "reference.udb", work / "sintax.tsv"
            write_sintax_fasta(reference, db_fa)
            build_s, _ = timed([exe, "--makeudb_usearch", str(db_fa), "--output", str(udb), "--quiet"])
            classify_s, _ = timed(sintax_command(exe, query_fa, udb, tsv, args.sintax_cutoff, args.threads))
            table = read_sintax(tsv, reference, queries)
            named = table["identified_rank"].value_counts().to_dict()
            sintax = {"library_build_s (makeudb_usearch)": build_s, "identify_s (sintax)": classify_s,
                      "reported_rank": {r: int(named.get(r, 0)) for r in RANKS},
                      "unnamed": int(table["identified_rank"].isna().sum())}
    out = {"benchmark": "identify_speed", "data": str(args.data), "run": str(args.run), "seed": args.seed,
           "n_reference": int(len(reference)), "n_queries": int(len(queries)),
           "queries_in_reference": int(len(refill)), "min_precision": args.min_precision,
           "sintax_cutoff": args.sintax_cutoff, "vsearch_threads": args.threads,
           "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
           "clibd": toolkit, "sintax": sintax,
           "speedup (sintax identify / clibd identify)": (sintax["identify_s (sintax)"] / identify_s
                                                          if "skipped" not in sintax else None),
           "total_seconds": time.perf_counter() - t_start, "conditions": conditions()}
    emit(out)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
