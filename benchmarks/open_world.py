"""Open-world identification on real barcodes: how often each method names a query, at which rank, and how often
that name is right, for queries of novel families, novel genera, novel species and known species (issue 13).

Data: ``../shared/data/bold-insect-coi/bold_insect_coi5p.tsv.gz`` (75,750 real BOLD records). Seeded
leave-taxon-out split (``--seed``): ``--fraction`` of the families (within orders that keep another family) are
*novel families*; of the other families' genera (within families that keep another genus) the same fraction are
*novel genera*; then *novel species* likewise within the remaining genera; of the remaining species with >= 2 records
the same fraction of records are *known species* queries. Everything else is the reference library. Each query
group is capped at ``--queries-per-group`` (seeded sample).

Methods:

- ``kmer/rank``: overlapping 5-mer frequency vectors, cosine kNN, the toolkit's per-rank calibrated naming
  (:mod:`clibd_toolkit.rank_calibration`, ``--min-precision``), calibrated on the reference;
- ``kmer/novelty``: the same vectors with the previous rule (leave-species-out similarity thresholds with a 5 %
  false-novel rate, back-off; :func:`clibd_toolkit.identification.calibrate_novelty`);
- ``clibd/rank``: with ``--run RUN``, a trained toolkit run's DNA embeddings with the per-rank naming;
- ``clibd+kmer/rank@S``: with ``--run RUN``, the toolkit's sequence evidence (:mod:`clibd_toolkit.kmers`, as
  ``clibd identify --sequence-weight S``): joint vectors of the run's DNA embedding and the 5-mer profile whose
  cosine is (1 - S) x the embedding's cosine + S x the 5-mer cosine, the same per-rank naming; one method per value
  of ``--sequence-weight`` (default 0.5). Its times include the model's embedding of the reference and queries
  (made once, shared with ``clibd/rank``);
- ``sintax``: ``vsearch --sintax`` (bootstrap cutoff ``--sintax-cutoff``, default 0.8) against the same reference,
  when ``vsearch`` is installed (Debian: ``apt-get install vsearch``); otherwise reported as skipped with that hint.

Per method and query group: the share whose reported (finest) rank is each rank or none, the share named at
species/genus/family/order or finer, the precision of the reported name at the reported rank, and the time (library
build: embedding + calibration; identification of all queries), and how much the precision rests on a few taxa
(``n_taxa`` held out, ``precision_se_over_taxa``: its standard error over those taxa, and the taxa behind most wrong
names: a group's precision is decided by which taxa happen to be new, so read it with that error), and how much of
the group shares its barcodes with other reference taxa (``bin_shared``: the share of queries whose BOLD BIN holds
reference records of another taxon at the group's rank, e.g. a novel species whose BIN a reference congener
shares; ``outside_shared_bins``: share named and precision over the other queries). Novelty AUROC
(species absent vs present) for the toolkit methods. One JSON object on stdout.

    python benchmarks/open_world.py                 # full data, about 10,000 queries
    python benchmarks/open_world.py --limit 4000    # a quick run

The ``clibd/rank`` run must not have trained on every reference record: a calibration simulates novel taxa by
leaving reference taxa out, and taxa the model trained on look more distinct than truly unseen ones (measured: the
simulated precision of novel-genus names 0.975, the real one 0.75). ``--write-training-data FILE`` writes the
reference minus a second seeded leave-taxon-out hold-out; train on it, and the calibration (told the run's
``train_records.txt``) simulates novelty with the held-out taxa only:

    python benchmarks/open_world.py --write-training-data /tmp/ow/train.csv --training-holdout 0.25
    clibd train --preset cpu --modalities dna,text --data /tmp/ow/train.csv --all-records --out /tmp/ow/run \
        --batch-size 256 --epochs 6 --lr 0.001 --max-steps 500
    python benchmarks/open_world.py --run /tmp/ow/run > /tmp/ow/seed0.json

``--training-holdout`` (default ``--fraction``) sets the share of taxa the run does not train on: the more, the more
untrained taxa the calibration can simulate novelty with (its bars rest on few novel families otherwise; it logs a
warning below 20). One split's precision depends on which few families are new: repeat with other ``--seed`` values
(each with its own training data and run) and pool the outputs with ``benchmarks/open_world_seeds.py``.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import REPO, conditions, emit

DEFAULT_DATA = REPO.parent / "shared" / "data" / "bold-insect-coi" / "bold_insect_coi5p.tsv.gz"
RANKS = ("order", "family", "genus", "species")
GROUPS = ("novel_family", "novel_genus", "novel_species", "known_species")


def split_open_world(records: pd.DataFrame, fraction: float, rng: np.random.Generator) -> pd.Series:
    """'reference' or a query group per record (module docstring)."""
    role = pd.Series("reference", index=records.index, dtype=object)
    for group, rank, parent in (("novel_family", "family", "order"), ("novel_genus", "genus", "family"),
                                ("novel_species", "species", "genus")):
        open_ = role == "reference"
        pairs = records.loc[open_, [parent, rank]].dropna().drop_duplicates()
        chosen = []
        for _, taxa in pairs.groupby(parent):
            if len(taxa) >= 2:
                n = min(len(taxa) - 1, max(0, int(rng.binomial(len(taxa), fraction))))
                chosen += list(rng.choice(taxa[rank].to_numpy(), n, replace=False))
        role[open_ & records[rank].isin(set(chosen))] = group
    open_ = role == "reference"
    for _, rows in records.loc[open_].groupby("species").groups.items():
        rows = np.asarray(rows)
        if len(rows) >= 2:
            n = min(len(rows) - 1, max(1, int(round(fraction * len(rows)))))
            role[rng.choice(rows, n, replace=False)] = "known_species"
    return role


def training_records(reference: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """The reference minus a second seeded leave-taxon-out hold-out (novel families, genera, species and some
    records of known species, as :func:`split_open_world` draws them): what a ``clibd/rank`` run trains on, so that
    the held-out taxa, still in the reference, show the calibration what unseen taxa look like to the model."""
    role = split_open_world(reference, fraction, np.random.default_rng([seed, 1]))
    return reference[role == "reference"].reset_index(drop=True)


def _sintax_name(value) -> str:
    return str(value).replace(",", "_").replace(":", "_").replace(";", "_").replace(" ", "_")


def write_sintax_fasta(reference: pd.DataFrame, path: Path) -> None:
    """The reference as a SINTAX database: one FASTA record per barcode, its taxonomy in the header."""
    with open(path, "w") as fh:
        for r in reference.itertuples(index=False):
            tax = ",".join(f"{p}:{_sintax_name(getattr(r, rank))}" for p, rank in zip("ofgs", RANKS)
                           if isinstance(getattr(r, rank), str))
            fh.write(f">{r.record_id};tax={tax};\n{r.dna_barcode}\n")


def write_query_fasta(queries: pd.DataFrame, path: Path) -> None:
    with open(path, "w") as fh:
        for r in queries.itertuples(index=False):
            fh.write(f">{r.record_id}\n{r.dna_barcode}\n")


def read_sintax(out: Path, reference: pd.DataFrame, queries: pd.DataFrame) -> pd.DataFrame:
    """SINTAX's tabbed output as the toolkit's identification columns (identified_rank, identified_<rank>), one row
    per query in ``queries``' order."""
    back = {_sintax_name(v): v for rank in RANKS for v in reference[rank].dropna().unique()}
    rows = {}
    for line in out.read_text().splitlines():
        parts = line.split("\t")
        kept = parts[3] if len(parts) > 3 else ""
        found = {}
        for item in filter(None, kept.split(",")):
            p, _, value = item.partition(":")
            found[RANKS["ofgs".index(p)]] = back.get(value, value)
        rows[parts[0]] = found
    table = []
    for rid in queries["record_id"]:
        found = rows.get(rid, {})
        finest = next((r for r in reversed(RANKS) if r in found), pd.NA)
        table.append({"identified_rank": finest, **{f"identified_{r}": found.get(r, pd.NA) for r in RANKS}})
    return pd.DataFrame(table)


def sintax_command(exe: str, queries: Path, db: Path, out: Path, cutoff: float, threads: int) -> list[str]:
    return [exe, "--sintax", str(queries), "--db", str(db), "--tabbedout", str(out), "--sintax_cutoff", str(cutoff),
            "--threads", str(threads), "--randseed", "1", "--quiet"]


VSEARCH_MISSING = "vsearch not installed (Debian/Ubuntu: apt-get install vsearch); SINTAX not run"


def run_sintax(reference: pd.DataFrame, queries: pd.DataFrame, cutoff: float, threads: int, workdir: Path) -> dict:
    exe = shutil.which("vsearch")
    if exe is None:
        return {"skipped": VSEARCH_MISSING}
    db, qf, out = workdir / "ref.fa", workdir / "queries.fa", workdir / "sintax.tsv"
    write_sintax_fasta(reference, db)
    write_query_fasta(queries, qf)
    t0 = time.perf_counter()
    subprocess.run(sintax_command(exe, qf, db, out, cutoff, threads), check=True)
    seconds = time.perf_counter() - t0
    return {"table": read_sintax(out, reference, queries), "seconds": seconds}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=0.1, help="taxa (records) held out per level")
    parser.add_argument("--queries-per-group", type=int, default=2500)
    parser.add_argument("--min-precision", type=float, default=0.95)
    parser.add_argument("--confidence-z", type=float, default=None, metavar="Z",
                        help="the per-rank rule's bars hold at Z standard errors over held-out taxa below the "
                             "simulated precision (default: the library's, 1.645)")
    parser.add_argument("--sintax-cutoff", type=float, default=0.8)
    parser.add_argument("--threads", type=int, default=2, help="vsearch threads (torch uses its default)")
    parser.add_argument("--run", default=None, help="a toolkit run (clibd train --out) to evaluate as clibd/rank")
    parser.add_argument("--sequence-weight", type=float, nargs="+", default=[0.5], metavar="S",
                        help="clibd+kmer/rank@S: the 5-mer profile's share of the similarity (the rest: the run's "
                             "embedding); several values, several methods (the embedding is made once)")
    parser.add_argument("--limit", type=int, default=0, help="use only this many records (quick runs)")
    parser.add_argument("--no-sintax", action="store_true")
    parser.add_argument("--write-training-data", default=None, metavar="FILE",
                        help="write the records to train a --run on (the reference minus held-out taxa; CSV) and stop")
    parser.add_argument("--training-holdout", type=float, default=None, metavar="F",
                        help="with --write-training-data: the share of the reference's taxa (per level) the run does "
                             "not train on, which the calibration then simulates novelty with (default: --fraction)")
    args = parser.parse_args(argv)
    if not all(0 < w < 1 for w in args.sequence_weight):
        parser.error(f"--sequence-weight got {args.sequence_weight}; expected numbers in (0, 1), e.g. 0.5")

    import clibd_toolkit as ctk
    from clibd_toolkit.identification import calibrate_novelty, identify
    from clibd_toolkit.kmers import barcodes_of, kmer_profiles, with_sequence_evidence
    from clibd_toolkit.rank_calibration import calibrate_ranks
    from clibd_toolkit.store import META_COLUMNS, EmbeddingSet

    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    records = ctk.load_records(args.data)
    if args.limit:
        records = records.sample(n=min(args.limit, len(records)), random_state=args.seed).reset_index(drop=True)
    role = split_open_world(records, args.fraction, rng)
    reference = records[role == "reference"].reset_index(drop=True)
    picked = []
    for group in GROUPS:
        rows = np.flatnonzero((role == group).to_numpy())
        if len(rows) > args.queries_per_group:
            rows = np.sort(rng.choice(rows, args.queries_per_group, replace=False))
        picked.append(records.iloc[rows].assign(_group=group))
    queries = pd.concat(picked, ignore_index=True)
    groups = queries.pop("_group").to_numpy()
    if args.write_training_data:
        holdout = args.fraction if args.training_holdout is None else args.training_holdout
        if not 0 < holdout < 1:
            parser.error(f"--training-holdout got {holdout}; expected a share in (0, 1), e.g. 0.2")
        train = training_records(reference, holdout, args.seed)
        train.to_csv(args.write_training_data, index=False)
        out = {"benchmark": "open_world", "wrote": args.write_training_data, "n_reference": int(len(reference)),
               "n_training": int(len(train)), "training_holdout": holdout}
        emit(out)
        return out
    results: dict[str, dict] = {}
    timing: dict[str, dict] = {}

    z = {} if args.confidence_z is None else {"confidence_z": args.confidence_z}

    def toolkit(name: str, ref_set, query_set, rule: str, trained_ids=None) -> None:
        """ref_set / query_set: () -> (EmbeddingSet, seconds spent elsewhere making it: the model's shared
        embedding, measured once)."""
        t0 = time.perf_counter()
        ref, ref_extra = ref_set()
        embed_s = time.perf_counter() - t0 + ref_extra
        t0 = time.perf_counter()
        cal = (calibrate_ranks(ref, query_modality="dna", key_modality="dna", min_precision=args.min_precision,
                               seed=args.seed, trained_ids=trained_ids, **z) if rule == "rank" else
               calibrate_novelty(ref, query_modality="dna", key_modality="dna", seed=args.seed))
        calibrate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        qset, query_extra = query_set()
        table = identify(qset, ref, query_modality="dna", key_modality="dna", k=5, novelty=cal)
        identify_s = time.perf_counter() - t0 + query_extra
        results[name] = _per_group(table, queries, groups, reference)
        from sklearn.metrics import roc_auc_score

        novel = ~queries["species"].isin(set(reference["species"].dropna())).to_numpy()
        results[name]["novelty_auroc"] = float(roc_auc_score(novel, table["novelty_score"]))
        if rule == "rank":  # the bars it fitted and how many held-out taxa of each kind they rest on
            results[name]["calibration"] = {"thresholds": cal.rank_thresholds(), "confidence_z": cal.confidence_z,
                                            "n_taxa": cal.diagnostics.get("n_taxa"),
                                            "untrained_taxa": cal.untrained_taxa}
        timing[name] = {"embed_reference_s": embed_s, "calibrate_s": calibrate_s,
                        "identify_s (embed queries + search + decide)": identify_s}

    def profiles(frame: pd.DataFrame):
        return lambda: (EmbeddingSet(frame[list(META_COLUMNS)], {"dna": kmer_profiles(frame.dna_barcode.tolist())}),
                        0.0)

    toolkit("kmer/rank", profiles(reference), profiles(queries), "rank")
    toolkit("kmer/novelty", profiles(reference), profiles(queries), "novelty")
    if args.run:
        from clibd_toolkit.embed import extract_embeddings
        from clibd_toolkit.training_setup import read_train_ids

        model = ctk.load_run(args.run)
        trained = read_train_ids(args.run)
        cache: dict[str, tuple[EmbeddingSet, float]] = {}

        def model_embedding(frame: pd.DataFrame, name: str) -> tuple[EmbeddingSet, float]:
            """(the set, 0.0) the first time (the caller's clock runs while it is made), then (the set, the
            seconds it took): each set is embedded once, and every method is charged for it once."""
            if name in cache:
                return cache[name]
            t0 = time.perf_counter()
            emb = extract_embeddings(model, frame, modalities=["dna"], progress=False)
            cache[name] = (emb, time.perf_counter() - t0)
            return emb, 0.0

        def embedded(frame: pd.DataFrame, name: str):
            return lambda: model_embedding(frame, name)

        def joint(frame: pd.DataFrame, name: str, weight: float):  # the library's k-mer evidence (clibd_toolkit.kmers)
            def make():
                emb, extra = model_embedding(frame, name)
                return with_sequence_evidence(emb, barcodes_of(frame), weight), extra
            return make

        toolkit("clibd/rank", embedded(reference, "reference"), embedded(queries, "queries"), "rank",
                trained_ids=trained)
        for weight in args.sequence_weight:
            toolkit(f"clibd+kmer/rank@{weight:g}", joint(reference, "reference", weight),
                    joint(queries, "queries", weight), "rank", trained_ids=trained)
        if trained is None or trained >= set(reference["record_id"]):
            results["clibd/rank"]["warning"] = ("the run trained on every reference record: its calibration is "
                                                "optimistic (train it on --write-training-data)")
    if not args.no_sintax:
        with tempfile.TemporaryDirectory() as tmp:
            sintax = run_sintax(reference, queries, args.sintax_cutoff, args.threads, Path(tmp))
        if "skipped" in sintax:
            results["sintax"] = sintax
        else:
            results["sintax"] = _per_group(sintax["table"], queries, groups, reference)
            timing["sintax"] = {"identify_s (index + classify)": sintax["seconds"]}
    out = {"benchmark": "open_world", "data": str(args.data), "seed": args.seed, "fraction": args.fraction,
           "n_records": int(len(records)), "n_reference": int(len(reference)),
           "queries": {g: int((groups == g).sum()) for g in GROUPS}, "min_precision": args.min_precision,
           "sintax_cutoff": args.sintax_cutoff, "results": results, "seconds": timing,
           "total_seconds": time.perf_counter() - t_start, "conditions": conditions()}
    emit(out)
    return out


def _per_group(table: pd.DataFrame, queries: pd.DataFrame, groups: np.ndarray, reference: pd.DataFrame) -> dict:
    from clibd_toolkit.rank_thresholds import naming_summary

    out = {}
    for g in GROUPS:
        m = groups == g
        if not m.any():
            continue
        sub, truth = table[m].reset_index(drop=True), queries[m].reset_index(drop=True)
        out[g] = naming_summary(sub, truth)
        out[g].update(_taxon_spread(sub, truth, CLUSTER_RANK[g]))
        out[g].update(_bin_sharing(sub, truth, reference, CLUSTER_RANK[g]))
    return out


def shared_bins(truth: pd.DataFrame, reference: pd.DataFrame, rank: str) -> np.ndarray:
    """(n,) whether each query's BOLD BIN (``bin_uri``: BOLD's clusters of near-identical barcodes) holds reference
    records of another taxon at ``rank`` than the query's own: a barcode shared across taxa, which no method that
    names by barcode similarity can tell apart (for a novel species, any reference record in its BIN)."""
    ref = reference.dropna(subset=["bin_uri", rank])
    held = ref.groupby("bin_uri")[rank].agg(frozenset).to_dict()
    return np.array([isinstance(b, str) and bool(held.get(b, frozenset()) - {t})
                     for b, t in zip(truth["bin_uri"], truth[rank])], dtype=bool)


def _bin_sharing(identified: pd.DataFrame, truth: pd.DataFrame, reference: pd.DataFrame, rank: str) -> dict:
    """How much of the group shares its barcode with other reference taxa (:func:`shared_bins`: ``bin_shared``,
    the share of queries) and the naming of the other queries (``outside_shared_bins``: n, share named, precision),
    so that a precision missed because barcodes are shared reads apart from one missed by the method."""
    from clibd_toolkit.rank_thresholds import naming_summary

    shared = shared_bins(truth, reference, rank)
    out: dict = {"bin_shared": float(shared.mean()) if len(shared) else 0.0}
    if (~shared).any():
        rest = naming_summary(identified[~shared].reset_index(drop=True), truth[~shared].reset_index(drop=True))
        out["outside_shared_bins"] = {"n": rest["n"], "named": rest["named"], "precision": rest["precision"]}
    return out


#: the taxon a query group's queries were held out by (queries of one taxon are not independent)
CLUSTER_RANK = {"novel_family": "family", "novel_genus": "genus", "novel_species": "species",
                "known_species": "species"}


def _taxon_spread(identified: pd.DataFrame, truth: pd.DataFrame, rank: str) -> dict:
    """How much the group's precision rests on a few taxa: the number of held-out taxa and the standard error of the
    precision over them (ratio estimator over taxa), and the taxa behind most wrong names."""
    from clibd_toolkit.rank_thresholds import reported_right

    named, right = reported_right(identified, truth)
    taxa = truth[rank].astype(str).to_numpy()
    frame = pd.DataFrame({"taxon": taxa, "named": named, "right": right & named})
    per = frame.groupby("taxon")[["named", "right"]].sum()
    total = per["named"].sum()
    if total == 0 or len(per) < 2:
        return {"n_taxa": int(len(per)), "precision_se_over_taxa": None, "taxa_with_most_wrong_names": {}}
    p = per["right"].sum() / total
    resid = per["right"] - p * per["named"]
    se = float(np.sqrt((resid ** 2).sum() * len(per) / (len(per) - 1)) / total)
    wrong = (per["named"] - per["right"]).sort_values(ascending=False)
    return {"n_taxa": int(len(per)), "precision_se_over_taxa": se,
            "taxa_with_most_wrong_names": {k: int(v) for k, v in wrong.head(3).items() if v > 0}}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
