"""What an analysis works on, from paths: records, a model and embeddings (:func:`resolve_inputs`), as the analysis
notebooks' common parameters (``DATA`` / ``RUN`` / ``CHECKPOINT`` / ``MODEL`` / ``EMBEDDINGS`` / ``SMOKE``,
validated by :mod:`clibd_toolkit.notebook_params`) point at them, so that a notebook stays one call per step."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .notebook_params import _InputsConfig, _smoke_or
from .schema import SPLIT

log = logging.getLogger(__name__)


@dataclass
class NotebookInputs:
    """What an analysis notebook works on (see :func:`resolve_inputs`)."""

    records: Any  # pandas DataFrame: canonical records with splits
    embeddings: Any  # EmbeddingSet of the records
    model: Any = None  # CLIBDModel (None when embeddings were loaded and no model was asked for)
    split_applied: bool = False  # True when DATA had no split column and the default CLIBD split was assigned
    sources: dict[str, str] | None = None  # where each input came from


def resolve_inputs(config: _InputsConfig, *, need_model: bool = False, progress: bool = True) -> NotebookInputs:
    """Load the records, the model and the embeddings that an analysis notebook's parameters point at.

    - ``SMOKE=True`` with the quickstart's default paths absent: a tiny simulated survey and a briefly trained
      ``tiny`` model are made once in ``OUTPUT_DIR/smoke-inputs`` (:func:`clibd_toolkit.demo.make_smoke_inputs`).
    - The model is ``MODEL`` (a released CLIBD model, :func:`clibd_toolkit.pretrained.load_pretrained`) when it is
      set, else ``RUN``/``CHECKPOINT``. With ``MODEL`` set and ``EMBEDDINGS`` left at its default (the quickstart
      run's file), DATA is embedded with the released model.
    - ``DATA`` without a split column gets the default CLIBD split (seeded with ``SEED``) and ``split_applied``.
    - ``EMBEDDINGS`` (a file) is loaded and checked to hold exactly DATA's records and, when a model is loaded too,
      to come from that model; when it is ``""`` or missing, DATA is embedded with the model (and written to
      ``OUTPUT_DIR/embeddings.parquet``). The official released CLIBD embeddings (``.hdf5``) are read with their
      own labels and splits; ``records`` then holds only those (no barcodes or images) and DATA is not read.

    Raises:
        ConfigError: a path that does not exist (with the parameter to fix).
        DataError: embeddings that do not match the records or the model.
    """
    from .embed import check_embeddings_model, extract_embeddings
    from .embedding_files import load_embeddings
    from .errors import DataError
    from .readers import load_records
    from .schema import RECORD_ID
    from .splits import SplitConfig, ensure_splits

    defaults = _InputsConfig()
    embeddings = config.embeddings
    if config.model and embeddings == defaults.embeddings:
        embeddings = ""  # the quickstart's file was made by its own run, not by MODEL
    embeddings = _smoke_or(config, embeddings, defaults.embeddings, "embeddings")
    have_file = bool(embeddings) and Path(embeddings).expanduser().is_file()
    released = have_file and Path(embeddings).suffix.lower() in (".hdf5", ".h5")
    data = None if released else _smoke_or(config, config.data, defaults.data, "data")
    if data is not None and not Path(data).expanduser().exists():
        raise ConfigError(f"DATA {data!r} does not exist; run 01_quickstart first (it writes {defaults.data}), pass "
                          "-p DATA PATH, or -p SMOKE True for a tiny self-made example")
    model, sources = None, {}
    if need_model or not have_file:
        model, sources["model"] = _load_model(config, defaults)
    if released:
        emb = load_embeddings(embeddings)
        records, applied = _records_of(emb), False
        sources.update(embeddings=f"{embeddings} (released CLIBD embeddings; labels and splits from the file)")
        return NotebookInputs(records=records, embeddings=emb, model=model, sources=sources)
    records = load_records(data)
    records, applied = ensure_splits(records, SplitConfig(seed=config.seed))
    if applied:
        log.warning("DATA %s has no split column: the default CLIBD split (seed %d) was assigned", data, config.seed)
    sources["data"] = str(data)
    if have_file:
        emb = load_embeddings(embeddings)
        if list(map(str, emb.metadata[RECORD_ID])) != list(map(str, records[RECORD_ID])):
            raise DataError(f"EMBEDDINGS {embeddings} do not hold exactly the records of DATA {data} in the same "
                            "order; pass the embeddings made from this DATA, or -p EMBEDDINGS '' to embed it now")
        if model is not None:
            check_embeddings_model(emb, model, f"EMBEDDINGS {embeddings}")
        if applied:  # the embeddings file carries the splits of the records it was made from
            emb.metadata[SPLIT] = records[SPLIT].to_numpy()
        sources["embeddings"] = str(embeddings)
    else:
        emb = extract_embeddings(model, records, progress=progress)
        path = config.output_path / "embeddings.parquet"
        config.output_path.mkdir(parents=True, exist_ok=True)
        emb.save(path)
        sources["embeddings"] = f"{path} (embedded now with {sources['model']})"
    return NotebookInputs(records=records, embeddings=emb, model=model, split_applied=applied, sources=sources)


def _load_model(config: _InputsConfig, defaults: _InputsConfig) -> tuple[Any, str]:
    """The MODEL (released) or RUN/CHECKPOINT model, and how to name it in ``sources``."""
    from .distributed import resolve_device

    device = str(resolve_device(config.device))
    if config.model:
        from .pretrained import load_pretrained

        return load_pretrained(config.model, device=device), f"{config.model} (released CLIBD model)"
    from .checkpoint import load_run

    run = _smoke_or(config, config.run, defaults.run, "run")
    if not Path(run).expanduser().is_dir():
        raise ConfigError(f"RUN {run!r} is not a training run folder; run 01_quickstart or 02_train first, pass "
                          "-p RUN FOLDER, or -p MODEL NAME for a released CLIBD model (`clibd models`)")
    return load_run(run, config.checkpoint, device=device), f"{run} ({config.checkpoint})"


def _records_of(embeddings) -> Any:
    """A records table of the embedded records (labels and splits; no barcodes or images)."""
    import pandas as pd

    from .schema import CANONICAL_COLUMNS

    meta = embeddings.metadata
    return pd.DataFrame({c: (meta[c].to_numpy(dtype=object) if c in meta else pd.Series([pd.NA] * len(meta),
                                                                                          dtype="object"))
                         for c in CANONICAL_COLUMNS})
