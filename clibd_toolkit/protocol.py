"""The evaluation and identification jobs: a trained model + data -> the CLIBD protocol's files, or per-specimen
identifications. ``clibd evaluate`` / ``clibd identify`` (:mod:`clibd_toolkit.cli.evaluate`,
:mod:`clibd_toolkit.cli.identify`) and the notebooks call these functions.

:func:`evaluate_model`: when the data has no split column, the toolkit's default CLIBD-style split (seeded) is
applied and the summary says so; when the run recorded its training records, any overlap between them and the
evaluation queries or keys is counted and reported (an honest evaluation has none).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ConfigError, DataError
from .evaluate import EvalConfig, EvalResult, evaluate_embeddings, format_table, write_metrics
from .schema import RECORD_ID, SPLIT_SEEN_KEYS, SPLIT_TRAIN
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


# --- identification ---------------------------------------------------------------------------------------------


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
                     progress: bool = True, trained_ids=None, sequence_weight: float | None = None,
                     reference_barcodes=None) -> tuple[pd.DataFrame, Any]:
    """Identify query records against a reference library (records or an EmbeddingSet).

    The query modality defaults to DNA when the queries have barcodes, else image; the key modality defaults to
    the query modality. Names go as deep as the evidence allows while staying right at least ``min_precision`` of
    the time for every kind of query (:mod:`clibd_toolkit.rank_calibration`), with ``calibration`` (checked to
    belong to this reference) or, with ``calibrate``, a calibration fitted on the reference now by leaving out taxa at each rank (with
    ``trained_ids``, the record ids the model trained on, the reference taxa it never saw play the novel ones).

    **Sequence evidence** (:mod:`clibd_toolkit.kmers`), barcodes against barcodes only: ``sequence_weight`` is the
    k-mer profile's share of the similarity (0 = the model's embedding alone). ``None`` (default) takes the
    calibration's weight when one is given, else :data:`~clibd_toolkit.kmers.DEFAULT_SEQUENCE_WEIGHT` when the
    reference's barcodes are at hand (a records reference, or ``reference_barcodes``: record id -> barcode, e.g. the
    records file an embedding reference was made from), else 0.

    Returns:
        (one row per query DataFrame, the calibration used or None)

    Raises:
        ConfigError: a weight that differs from the calibration's, or sequence evidence asked for photos, or
            without the reference's barcodes.
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
    from .kmers import DEFAULT_K, barcodes_of, kmer_profiles, sequence_evidence, with_sequence_evidence

    k_mer = calibration.sequence_k if isinstance(calibration, RankCalibration) else DEFAULT_K
    carried = sequence_evidence(reference) if key_modality == "dna" and isinstance(reference, EmbeddingSet) else None
    if carried is not None:  # a reference already joined (with_sequence_evidence): the queries get the same
        if sequence_weight is not None and float(sequence_weight) != carried["weight"]:
            raise ConfigError(f"the reference's DNA vectors already carry k-mer evidence {carried}; sequence_weight "
                              f"{sequence_weight} differs: pass the model's own embeddings, or drop sequence_weight")
        sequence_weight, k_mer = carried["weight"], int(carried["k"])
    if reference_barcodes is None and isinstance(reference, pd.DataFrame):  # a records reference brings its own
        reference_barcodes = barcodes_of(reference)
        reference_barcodes = reference_barcodes if reference_barcodes.size else None
    weight = _sequence_weight(sequence_weight, calibration, query_modality, key_modality,
                              carried is not None or reference_barcodes is not None)
    if weight:  # a barcode without a k-mer profile is named now, before any embedding
        query_barcodes = barcodes_of(queries)
        kmer_profiles(query_barcodes.tolist(), k_mer, ids=query_barcodes.index.tolist())
    if isinstance(reference, EmbeddingSet):
        check_embeddings_model(reference, model, "the reference embeddings")
    ref = reference if isinstance(reference, EmbeddingSet) else extract_embeddings(
        model, reference, modalities=[key_modality], batch_size=batch_size, progress=progress)
    if key_modality not in ref.modalities:
        raise ConfigError(f"the reference has no {key_modality!r} vectors; it has {list(ref.modalities)}")
    if weight and carried is None:
        ref = with_sequence_evidence(ref, reference_barcodes, weight, k_mer)
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
    if weight:
        q = with_sequence_evidence(q, barcodes_of(queries), weight, k_mer)
    if calibration is None and calibrate:
        calibration = calibrate_ranks(ref, query_modality=query_modality, key_modality=key_modality,
                                      min_precision=min_precision, trained_ids=trained_ids)
    table = identify(q, ref, query_modality=query_modality, key_modality=key_modality,
                     k=min(k, int(ref.has(key_modality).sum())), novelty=calibration)
    table.attrs["sequence_weight"] = weight
    return table, calibration


def _sequence_weight(requested: float | None, calibration: Any, query_modality: str, key_modality: str,
                     have: bool) -> float:
    """The k-mer evidence weight :func:`identify_records` uses (its docstring; ``have``: the reference's barcodes
    are at hand), or a ConfigError naming the fix."""
    from .kmers import DEFAULT_SEQUENCE_WEIGHT
    from .rank_calibration import RankCalibration

    barcodes = query_modality == key_modality == "dna"
    if calibration is not None:
        saved = calibration.sequence_weight if isinstance(calibration, RankCalibration) else 0.0
        if requested is not None and float(requested) != saved:
            raise ConfigError(f"--sequence-weight {requested} differs from the calibration's {saved} (the weight its "
                              "confidences were fitted with); drop --sequence-weight, or calibrate again")
        requested = saved
    if requested is None:
        return DEFAULT_SEQUENCE_WEIGHT if barcodes and have else 0.0
    if not requested:
        return 0.0
    if not barcodes:
        raise ConfigError(f"sequence evidence (--sequence-weight {requested}) compares barcodes with barcodes; these "
                          f"are {query_modality} queries against {key_modality} keys: use --sequence-weight 0")
    if not have:
        raise ConfigError(f"sequence evidence (--sequence-weight {requested}) needs the reference's barcodes: give the "
                          "records file the reference embeddings were made from (--reference-barcodes FILE), a "
                          "records reference, or --sequence-weight 0")
    return float(requested)


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


def example_queries(records: pd.DataFrame, *, query_image: str = "", query_barcode: str = "", n: int = 4,
                    seed: int = 0) -> pd.DataFrame:
    """The records to identify: the photo ``query_image`` and/or the sequence ``query_barcode`` as new records
    (ids ``query-image`` / ``query-barcode``), or, when neither is given, ``n`` example test queries of
    ``records``, alternating seen and unseen species (their labels kept, to compare with the answer; drawn with
    ``seed``).

    Raises:
        ConfigError: a ``query_image`` path that does not exist.
        DataError: a barcode that is not a DNA sequence, or no test query records to take examples from.
    """
    import numpy as np

    from .records import normalise_records
    from .schema import DNA, IMAGE, SPLIT, SPLIT_TEST_SEEN, SPLIT_TEST_UNSEEN

    rows = []
    if query_image:
        path = Path(query_image).expanduser()
        if not path.is_file():
            raise ConfigError(f"QUERY_IMAGE {query_image!r} is not a file")
        rows.append({RECORD_ID: "query-image", IMAGE: str(path.resolve())})
    if query_barcode:
        rows.append({RECORD_ID: "query-barcode", DNA: query_barcode})
    if rows:
        return normalise_records(pd.DataFrame(rows), source="notebook query")
    picks = []
    pools = [records.index[(records[SPLIT] == s).to_numpy() & records[IMAGE].notna().to_numpy()
                           & records[DNA].notna().to_numpy()] for s in (SPLIT_TEST_SEEN, SPLIT_TEST_UNSEEN)]
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(p)) for p in pools]
    while len(picks) < n and any(pools):
        for pool in pools:
            if pool and len(picks) < n:
                picks.append(pool.pop(0))
    if not picks:
        raise DataError("DATA has no test_seen/test_unseen record with both an image and a barcode to use as an "
                        "example query; pass -p QUERY_IMAGE PATH or -p QUERY_BARCODE SEQUENCE")
    return records.loc[picks].reset_index(drop=True)


def identify_queries(model, queries, reference, *, key_modality: str, k: int = 5, min_precision: float = 0.95,
                     seed: int = 0, reference_barcodes=None, sequence_weight: float | None = None) -> Any:
    """Identify query records against the reference embeddings, each name reported at the finest rank whose
    calibrated precision reaches ``min_precision`` (:mod:`clibd_toolkit.rank_calibration`), through each query
    modality they have: a photo through ``image``, a barcode through ``dna`` (one row per query and modality).

    Args:
        model: the CLIBDModel that made ``reference``; it embeds the queries.
        queries: query records (e.g. from :func:`example_queries`).
        reference: the reference library (EmbeddingSet).
        reference_barcodes: record id -> barcode of the reference (e.g.
            :func:`clibd_toolkit.kmers.barcodes_of` of its records): barcode queries against barcode keys then add
            5-mer sequence evidence with ``sequence_weight`` (default
            :data:`~clibd_toolkit.kmers.DEFAULT_SEQUENCE_WEIGHT`; :func:`identify_records`).

    Returns:
        :func:`clibd_toolkit.protocol.identify_records` rows plus ``query_modality``, ``key_modality`` and
        ``sequence_weight``; the
        calibration of each query modality is in ``.attrs["calibrations"]`` (for
        :func:`clibd_toolkit.viz.plot_precision_coverage`).
    """
    import numpy as np

    from .batching import modality_present
    from .rank_calibration import calibrate_ranks

    tables, calibrations = [], {}
    for modality in ("image", "dna"):
        present = np.asarray(modality_present(queries, modality), dtype=bool)
        if modality not in model.modalities or not present.any():
            continue
        library = reference
        weight = _sequence_weight(sequence_weight if modality == "dna" else None, None, modality, key_modality,
                                  reference_barcodes is not None)
        if weight:
            from .kmers import with_sequence_evidence

            library = with_sequence_evidence(reference, reference_barcodes, weight)
        calibration = calibrate_ranks(library, query_modality=modality, key_modality=key_modality,
                                      min_precision=min_precision, seed=seed)
        table, _ = identify_records(model, queries.loc[present].reset_index(drop=True), library,
                                    query_modality=modality, key_modality=key_modality, k=k,
                                    calibration=calibration, min_precision=min_precision, progress=False)
        table.insert(1, "query_modality", modality)
        table.insert(2, "key_modality", key_modality)
        table.insert(3, "sequence_weight", weight)  # the 5-mer evidence's share of the similarity (kmers)
        tables.append(table)
        calibrations[modality] = calibration
    if not tables:
        raise DataError(f"no query has an input the model can embed (it has {list(model.modalities)}); give a photo "
                        "or a barcode")
    out = pd.concat(tables, ignore_index=True)
    out.attrs["calibrations"] = calibrations
    return out
