"""The evaluation and identification jobs: a trained model + data -> the CLIBD protocol's files, or per-specimen
identifications. Both ``clibd evaluate`` / ``clibd identify`` and the notebooks call these functions.

:func:`evaluate_model`: when the data has no split column, the toolkit's default CLIBD-style split (seeded) is
applied and the summary says so; when the run recorded its training records, any overlap between them and the
evaluation queries or keys is counted and reported (an honest evaluation has none).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ConfigError, DataError
from .evaluate import EvalConfig, EvalResult, evaluate_embeddings, format_table, write_metrics
from .schema import RANKS, RECORD_ID, SPLIT_SEEN_KEYS, SPLIT_TRAIN
from .store import EmbeddingSet

log = logging.getLogger(__name__)


@dataclass
class ModelEvaluation:
    """What :func:`evaluate_model` returns."""

    result: EvalResult
    embeddings: EmbeddingSet
    summary: dict[str, Any]
    novelty: dict[str, Any] = field(default_factory=dict)


def _training_overlap(records: pd.DataFrame, train_ids: set[str] | None) -> int | None:
    if train_ids is None:
        return None
    return int(records[RECORD_ID].astype(str).isin(train_ids).sum())


def evaluate_model(model, records: pd.DataFrame, config: EvalConfig | None = None, *,
                   split_seed: int = 42, train_ids: set[str] | None = None, novelty: bool = True,
                   batch_size: int = 64, progress: bool = True, rejects=None) -> ModelEvaluation:
    """Embed the keys and queries of ``records`` with ``model`` and run the CLIBD protocol.

    Args:
        model: a :class:`~clibd_toolkit.model.CLIBDModel` (e.g. from :func:`~clibd_toolkit.checkpoint.load_run`).
        records: the canonical records table; its split column is used, or the default seeded split is applied.
        config: protocol settings (stage val/test, ks, pairs).
        split_seed: seed of the default split when the data has none.
        train_ids: record ids the model was trained on (``RUN/train_records.txt``), to report overlap.
        novelty: also score novelty detection: calibrated on the seen keys (leave-species-out), then applied to the
            stage's seen queries (species present) and unseen queries (species absent from the seen keys).
        rejects: a :class:`~clibd_toolkit.records.Rejects`: records whose input fails when decoded (a missing or
            corrupt image) are listed there and left out of the protocol instead of stopping it.

    Returns:
        A :class:`ModelEvaluation`: the protocol result, the embeddings used, a summary and novelty scores.
    """
    from .embed import extract_embeddings
    from .splits import SplitConfig, ensure_splits, key_mask, query_mask, split_summary

    config = config or EvalConfig()
    records, applied = ensure_splits(records, SplitConfig(seed=split_seed) if not _has_split(records) else None)
    keys = key_mask(records)
    queries = query_mask(records, config.stage, "seen") | query_mask(records, config.stage, "unseen")
    if not keys.any() or not queries.any():
        raise DataError(f"the data has {int(keys.sum())} key and {int(queries.sum())} {config.stage} query records; "
                        "the protocol needs both (check the split column, or use more records per species)")
    subset = records.loc[keys | queries].reset_index(drop=True)
    emb = extract_embeddings(model, subset, batch_size=batch_size, progress=progress, rejects=rejects)
    result = evaluate_embeddings(emb, config, progress=progress)
    summary = {
        "stage": config.stage, "n_records": int(len(records)), "n_keys": int(keys.sum()),
        "n_queries": int(queries.sum()), "default_split_applied": bool(applied),
        "n_left_out_undecodable": int(len(subset) - len(emb)),
        "split_seed": split_seed if applied else None,
        "split_summary": split_summary(records).to_dict(orient="records"),
        "train_overlap_queries": _training_overlap(records.loc[queries], train_ids),
        "train_overlap_keys": _training_overlap(records.loc[keys], train_ids),
        "modalities": list(emb.modalities),
    }
    if applied:
        log.warning("the data has no split column: applied the default CLIBD-style split (seed %d)", split_seed)
    if summary["train_overlap_queries"]:
        log.warning("%d query records were used in training: the figures are optimistic",
                    summary["train_overlap_queries"])
    scores = _novelty_scores(emb, config.stage) if novelty else {}
    return ModelEvaluation(result, emb, summary, scores)


def evaluate_embedding_set(emb: EmbeddingSet, config: EvalConfig | None = None, *, novelty: bool = True,
                           progress: bool = True) -> ModelEvaluation:
    """The protocol on embeddings that are already made and carry their splits (an embedding file, or the
    official released CLIBD embeddings read by :func:`clibd_toolkit.embedding_files.load_embeddings`); no model needed."""
    from .splits import key_mask, query_mask

    config = config or EvalConfig()
    meta = emb.metadata
    queries = query_mask(meta, config.stage, "seen") | query_mask(meta, config.stage, "unseen")
    result = evaluate_embeddings(emb, config, progress=progress)
    summary = {"stage": config.stage, "n_records": len(emb), "n_keys": int(key_mask(meta).sum()),
               "n_queries": int(queries.sum()), "default_split_applied": False, "split_seed": None,
               "train_overlap_queries": None, "train_overlap_keys": None, "modalities": list(emb.modalities)}
    return ModelEvaluation(result, emb, summary, _novelty_scores(emb, config.stage) if novelty else {})


def _has_split(records: pd.DataFrame) -> bool:
    from .splits import has_splits

    return has_splits(records)


def _novelty_scores(emb: EmbeddingSet, stage: str) -> dict[str, Any]:
    from .identification import calibrate_novelty, evaluate_novelty
    from .splits import query_mask, train_records_are_keys

    meta = emb.metadata
    seen_split = SPLIT_TRAIN if train_records_are_keys(meta) else SPLIT_SEEN_KEYS
    reference = emb.subset((meta["split"] == seen_split).to_numpy())
    queries = emb.subset(query_mask(meta, stage, "seen") | query_mask(meta, stage, "unseen"))
    out: dict[str, Any] = {}
    for modality in ("dna", "image"):
        if modality not in emb.modalities or not reference.has(modality).any() or not queries.has(modality).any():
            continue
        try:
            calibration = calibrate_novelty(reference, query_modality=modality, key_modality=modality)
            out[f"{modality}->{modality}"] = evaluate_novelty(queries, reference, calibration)
        except (DataError, ConfigError) as exc:
            out[f"{modality}->{modality}"] = {"skipped": str(exc)}
    return out


def write_evaluation(evaluation: ModelEvaluation, out_dir: str | Path, config: dict[str, Any]) -> dict[str, Path]:
    """Write ``metrics.json``, ``per_taxon.csv``, ``table.txt``, ``summary.json`` (and ``novelty.json``)."""
    from .io import atomic_write_text

    out = Path(out_dir)
    paths = write_metrics(evaluation.result, out, config)
    paths["table"] = out / "table.txt"
    atomic_write_text(paths["table"], format_table(evaluation.result) + "\n")
    paths["summary"] = out / "summary.json"
    atomic_write_text(paths["summary"], json.dumps(evaluation.summary, indent=1, default=str) + "\n")
    if evaluation.novelty:
        paths["novelty"] = out / "novelty.json"
        atomic_write_text(paths["novelty"], json.dumps(evaluation.novelty, indent=1, default=str) + "\n")
    return paths


def read_train_ids(run_dir: str | Path) -> set[str] | None:
    """Record ids a run trained on (``train_records.txt``), or None for a run folder without the file."""
    from .training import TRAIN_IDS_FILE

    path = Path(run_dir) / TRAIN_IDS_FILE
    if not path.is_file():
        return None
    return {line for line in path.read_text().splitlines() if line}


# --- clibd evaluate ---------------------------------------------------------------------------------------------


#: what ``clibd evaluate`` writes in its --out folder (a folder holding only these is its own earlier output)
EVALUATION_FILES: tuple[str, ...] = ("metrics.json", "per_taxon.csv", "table.txt", "summary.json", "novelty.json",
                                     "data-rejects.csv", "decode-rejects.csv")


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd evaluate``."""
    from .cli import add_data_arguments, add_model_arguments

    add_data_arguments(parser, required=False)
    add_model_arguments(parser, required=False)
    parser.add_argument("--embeddings", default=None, metavar="FILE",
                        help="evaluate an embedding file instead of embedding --data with --run/--model: `clibd "
                             "embed` Parquet, or the official released CLIBD HDF5 (extracted_feature_from_*_split)")
    parser.add_argument("--out", required=True, help="output folder: metrics.json, per_taxon.csv, table.txt, ...")
    parser.add_argument("--stage", choices=["test", "val"], default="test", help="query sets (default: test)")
    parser.add_argument("--pairs", default="all",
                        help="'all' (the published pairs: image/dna queries against image/dna/text keys), 'official' "
                             "(every pair the official CLIBD script reports: also text queries and the fused "
                             "image+dna / concat features, all keys stacked), or comma-separated QUERY->KEY pairs")
    parser.add_argument("--ks", default="1,3,5", help="top-k accuracies to report (default: 1,3,5)")
    parser.add_argument("--split-seed", type=int, default=None,
                        help="data without a split column: seed of the default CLIBD-style split (default: the one "
                             "--run trained with, as recorded in its run.json, else 42)")
    parser.add_argument("--no-novelty", action="store_true", help="skip the novelty-detection scores")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an existing non-empty --out folder that holds other files than an evaluation's (files of "
                             "the same names are replaced); without it such a folder is refused")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")


def run_evaluate(args: argparse.Namespace) -> int:
    """``clibd evaluate``: the CLIBD protocol for a run on a dataset, written to ``--out``."""
    from .checkpoint import read_run_info
    from .cli import load_data, load_model, model_provenance
    from .training import resolve_device

    pairs = args.pairs if args.pairs in ("all", "official") else tuple(
        p.strip() for p in args.pairs.split(",") if p.strip())
    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError:
        raise ConfigError(f"--ks got {args.ks!r}; expected comma-separated integers such as 1,3,5") from None
    eval_cfg = EvalConfig(stage=args.stage, pairs=pairs, ks=ks)
    from .io import refuse_foreign_folder

    refuse_foreign_folder(args.out, overwrite=args.overwrite, what="folder of evaluation results",
                          own=EVALUATION_FILES)
    if args.embeddings:
        return _evaluate_file(args, eval_cfg)
    if not args.data or not (args.run or args.model):
        raise ConfigError("clibd evaluate needs --data with --run RUN or --model NAME|PATH, or --embeddings FILE")
    model = load_model(args, device=str(resolve_device(args.device)))
    # a released model's training data (BIOSCAN) is not on this machine: no overlap can be counted
    data_info = read_run_info(args.run)[2] if args.run else {"released": model.source.get("name")}
    records = load_data(args, rejects_path=Path(args.out) / "data-rejects.csv")
    if args.split_seed is None:  # the split the run held out when it trained on data without splits
        from .splits import SplitConfig

        args.split_seed = read_run_info(args.run)[1].split_seed if args.run else SplitConfig().seed
    from .records import Rejects

    decoded = Rejects() if args.on_error == "skip" else None
    evaluation = evaluate_model(model, records, eval_cfg, split_seed=args.split_seed,
                                train_ids=read_train_ids(args.run) if args.run else None, novelty=not args.no_novelty,
                                batch_size=args.batch_size, progress=not args.no_progress, rejects=decoded)
    if decoded is not None and len(decoded):
        Path(args.out).mkdir(parents=True, exist_ok=True)
        decoded.save(Path(args.out) / "decode-rejects.csv")
        sys.stderr.write(f"left out {len(decoded)} record(s) whose input could not be decoded, listed in "
                         f"{Path(args.out) / 'decode-rejects.csv'}\n")
    config = {"eval": eval_cfg.to_json_dict(), "model": model.config.to_json_dict(), "model_source": model.source,
              **model_provenance(args), "data": str(args.data), "train_data": data_info,
              "default_split_applied": evaluation.summary["default_split_applied"],
              "split_seed": evaluation.summary["split_seed"]}
    paths = write_evaluation(evaluation, args.out, config)
    s = evaluation.summary
    note = (f"no split column in {args.data}: applied the default CLIBD-style split (seed {args.split_seed})"
            if s["default_split_applied"] else f"splits from {args.data}")
    overlap = s["train_overlap_queries"]
    lines = [f"CLIBD protocol, {args.stage} queries ({s['n_queries']}) against all keys ({s['n_keys']}); {note}",
             "" if not overlap else f"WARNING: {overlap} query records were used in training; figures are optimistic",
             format_table(evaluation.result),
             f"wrote {', '.join(str(p) for p in paths.values())}"]
    sys.stdout.write("\n".join(line for line in lines if line) + "\n")
    return 0


def _evaluate_file(args: argparse.Namespace, eval_cfg: EvalConfig) -> int:
    """``clibd evaluate --embeddings FILE``: the protocol on an existing embedding file."""
    from .embedding_files import load_embeddings

    if args.data or args.run or args.model:
        raise ConfigError("--embeddings evaluates a file as it is: leave out --data, --run and --model")
    emb = load_embeddings(args.embeddings)
    evaluation = evaluate_embedding_set(emb, eval_cfg, novelty=not args.no_novelty, progress=not args.no_progress)
    config = {"eval": eval_cfg.to_json_dict(), "embeddings": str(args.embeddings), "embeddings_config": emb.config}
    paths = write_evaluation(evaluation, args.out, config)
    s = evaluation.summary
    sys.stdout.write(f"CLIBD protocol on {args.embeddings}: {args.stage} queries ({s['n_queries']}) against all keys "
                     f"({s['n_keys']})\n{format_table(evaluation.result)}\nwrote "
                     f"{', '.join(str(p) for p in paths.values())}\n")
    return 0


# --- clibd identify ---------------------------------------------------------------------------------------------


def load_queries(query: str, *, image_root: str | None = None) -> pd.DataFrame:
    """Queries for identification: an image file or folder of images, a FASTA file, a raw sequence, or any
    records file the readers know."""
    from .records import normalise_records
    from .readers import read_records

    image_ext = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}
    if len(query) >= 5 and set(query.upper()) <= set("ACGTURYSWKMBDHVN-.\n\r "):
        return normalise_records(pd.DataFrame({RECORD_ID: ["query"], "dna_barcode": [query]}))
    path = Path(query)
    if path.is_dir() and not (path / "records.csv").exists():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in image_ext)
        if not files:
            raise DataError(f"query folder {path} holds no images ({', '.join(sorted(image_ext))})")
        return normalise_records(pd.DataFrame({RECORD_ID: [str(p.relative_to(path)) for p in files],
                                               "image": [str(p.resolve()) for p in files]}))
    if path.is_file() and path.suffix.lower() in image_ext:
        return normalise_records(pd.DataFrame({RECORD_ID: [path.name], "image": [str(path.resolve())]}))
    if not path.exists():
        raise DataError(f"query {query!r} is neither an existing file or folder nor a DNA sequence")
    options = {"image_root": image_root} if image_root else {}
    return read_records(path, **options).records


def identify_records(model, queries: pd.DataFrame, reference: EmbeddingSet | pd.DataFrame, *,
                     query_modality: str | None = None, key_modality: str | None = None, k: int = 5,
                     calibration=None, calibrate: bool = True, min_precision: float = 0.95, batch_size: int = 64,
                     progress: bool = True, trained_ids=None) -> tuple[pd.DataFrame, Any]:
    """Identify query records against a reference library (records or an EmbeddingSet).

    The query modality defaults to DNA when the queries have barcodes, else image; the key modality defaults to
    the query modality. Names go as deep as the evidence allows while staying right at least ``min_precision`` of
    the time for every kind of query (:mod:`clibd_toolkit.rank_calibration`), with ``calibration`` (checked to
    belong to this reference) or, with ``calibrate``, a calibration fitted on the reference now by leaving out taxa at each rank (with
    ``trained_ids``, the record ids the model trained on, the reference taxa it never saw play the novel ones).

    Returns:
        (one row per query DataFrame, the calibration used or None)
    """
    from .batching import modality_present
    from .embed import check_embeddings_model, extract_embeddings
    from .identification import identify
    from .rank_calibration import RankCalibration, calibrate_ranks

    if query_modality is None:
        query_modality = "dna" if "dna" in model.modalities and modality_present(queries, "dna").any() else "image"
    if query_modality not in model.modalities:
        raise ConfigError(f"the model has no {query_modality!r} encoder; it has {list(model.modalities)}")
    key_modality = key_modality or query_modality
    if isinstance(reference, EmbeddingSet):
        check_embeddings_model(reference, model, "the reference embeddings")
    ref = reference if isinstance(reference, EmbeddingSet) else extract_embeddings(
        model, reference, modalities=[key_modality], batch_size=batch_size, progress=progress)
    if key_modality not in ref.modalities:
        raise ConfigError(f"the reference has no {key_modality!r} vectors; it has {list(ref.modalities)}")
    if isinstance(calibration, RankCalibration):
        calibration.check_reference(ref)
        calibration = calibration.replace(min_precision=min_precision)
        calibration.rank_thresholds()  # a target it holds thresholds for, or a clear error before any work
    q = extract_embeddings(model, queries, modalities=[query_modality], batch_size=batch_size, progress=progress)
    if len(q) and not q.has(query_modality).any():
        other = "image" if query_modality == "dna" else "dna"
        raise DataError(f"none of the {len(q)} queries has a usable {query_modality} input (e.g. record "
                        f"{q.metadata['record_id'].iloc[0]!r}), so nothing can be identified; give queries with "
                        f"{'barcodes' if query_modality == 'dna' else 'photos'}, or --query-modality {other}")
    if calibration is None and calibrate:
        calibration = calibrate_ranks(ref, query_modality=query_modality, key_modality=key_modality,
                                      min_precision=min_precision, trained_ids=trained_ids)
    table = identify(q, ref, query_modality=query_modality, key_modality=key_modality,
                     k=min(k, int(ref.has(key_modality).sum())), novelty=calibration)
    return table, calibration


def add_identify_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``clibd identify``."""
    from .cli import add_model_arguments

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
    parser.add_argument("--no-novelty", action="store_true",
                        help="no calibration: every query named by its nearest reference at every rank, no novelty flag")
    parser.add_argument("--image-root", default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")


def run_identify(args: argparse.Namespace) -> int:
    """``clibd identify``: name each query at every rank, with neighbours, scores and the novelty flag."""
    from .cli import load_model
    from .embedding_files import load_embeddings
    from .io import atomic_path
    from .readers import read_records
    from .training import resolve_device

    if args.k < 1:
        raise ConfigError(f"-k got {args.k}; expected an integer >= 1")
    from .io import refuse_replacing_inputs

    refuse_replacing_inputs(args.out, {"--query": args.query, "--reference": args.reference,
                                       "--calibration": args.calibration})
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
    table, calibration = identify_records(
        model, queries, reference, query_modality=args.query_modality, key_modality=args.key_modality, k=args.k,
        calibration=calibration, calibrate=not args.no_novelty, min_precision=args.min_precision,
        batch_size=args.batch_size, progress=not args.no_progress,
        trained_ids=read_train_ids(args.run) if getattr(args, "run", None) else None)
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
                                 "calibration": saved}) + "\n")
    return 0


def load_calibration(path: str | Path):
    """A saved calibration JSON: a :class:`~clibd_toolkit.rank_calibration.RankCalibration` or an older
    :class:`~clibd_toolkit.identification.NoveltyCalibration`, by the kind stamped in the file."""
    from .identification import NoveltyCalibration
    from .rank_calibration import RankCalibration

    try:
        kind = json.loads(Path(path).read_text()).get("config_kind")
    except FileNotFoundError:
        raise ConfigError(f"calibration file {path} does not exist") from None
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ConfigError(f"calibration file {path} is not a calibration JSON ({exc})") from None
    return NoveltyCalibration.load(path) if kind == NoveltyCalibration.kind else RankCalibration.load(path)


def _is_clibd_records_hdf5(path: Path) -> bool:
    """A CLIBD *dataset* HDF5 (records with images and barcodes), as opposed to released *embeddings*."""
    import h5py

    with h5py.File(path, "r") as fh:
        return not any(g in fh for g in ("seen", "unseen", "key"))
