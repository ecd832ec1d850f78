"""clibd_toolkit: CLIBD-style multimodal biodiversity models (image + DNA barcode + taxonomy text).

The package is a thin library with one module per stage of the data flow::

    records -> tokenise/transform -> encode -> train -> embeddings -> index/retrieve -> evaluate -> visualise

Importing the package is cheap and has no side effects; heavy modules (torch, transformers) load on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it (loaded lazily, like pybioclip's module __getattr__)
_EXPORTS = {
    "RANKS": "schema",
    "MODALITIES": "schema",
    "ClibdError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
    "load_records": "readers",
    "normalise_records": "records",
    "ModelConfig": "config",
    "EncoderConfig": "config",
    "AdapterConfig": "config",
    "TrainConfig": "config",
    "KmerTokenizer": "dna",
    "load_image": "images",
    "create_model": "model",
    "CLIBDModel": "model",
    "list_presets": "presets",
    "get_preset": "presets",
    "train": "training",
    "load_run": "checkpoint",
    "load_pretrained": "pretrained",
    "list_pretrained": "pretrained",
    "load_official_checkpoint": "official",
    "convert_official_state_dict": "official",
    "extract_embeddings": "embed",
    "write_embeddings": "embed",
    "embed_shard": "embed_shards",
    "merge_shards": "embed_shards",
    "EmbeddingWriter": "store",
    "iter_embeddings": "store",
    "verify_embedding_file": "store",
    "EmbeddingSet": "store",
    "load_embeddings": "embedding_files",
    "read_released_embeddings": "released_embeddings",
    "SimulatorConfig": "simulator",
    "simulate_records": "simulator",
    "write_survey": "simulator",
    "read_records": "readers",
    "iter_record_chunks": "readers",
    "write_clibd_hdf5": "hdf5_writer",
    "ensure_splits": "splits",
    "split_summary": "splits",
    "inspect_records": "inspection",
    "NearestNeighbourIndex": "index",
    "EvalConfig": "evaluate",
    "evaluate_embeddings": "evaluate",
    "write_metrics": "evaluate",
    "format_table": "evaluate",
    "compare_metrics": "evaluate",
    "mean_top1": "evaluate",
    "identify": "identification",
    "calibrate_novelty": "identification",
    "calibrate_ranks": "rank_calibration",
    "RankCalibration": "rank_calibration",
    "NoveltyCalibration": "identification",
    "evaluate_novelty": "identification",
    "cluster_embeddings": "cluster",
    "evaluate_model": "protocol",
    "umap_project": "viz",
    "plot_latent_space": "viz",
    "identify_records": "protocol",
    "assign_splits": "splits",
    "SplitConfig": "splits",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clibd_toolkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
