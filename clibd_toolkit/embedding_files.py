"""Any embedding file the toolkit reads, by its suffix: the Parquet store (:mod:`clibd_toolkit.store`) or an
official CLIBD released-embedding HDF5 (:mod:`clibd_toolkit.released_embeddings`). Both formats sit below this
module; nothing below imports it."""
from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError
from .store import EmbeddingSet

def load_embeddings(path: str | Path) -> EmbeddingSet:
    """Load embeddings from a file of either kind the toolkit reads, chosen by the file's suffix.

    Args:
        path: a ``.parquet`` file written by ``clibd embed`` / :meth:`EmbeddingSet.save` (read and verified by
            :meth:`EmbeddingSet.load`), or an official CLIBD released-embedding file
            ``extracted_feature_from_<val|test>_split.hdf5`` (``.hdf5`` / ``.h5``; its ``labels_<stage>.json`` and
            ``processed_id_<stage>.json`` beside it), read by
            :func:`clibd_toolkit.released_embeddings.read_released_embeddings`.

    Raises:
        CheckpointError: another suffix, or the file is missing, unreadable or malformed.

    Example:
        >>> emb = load_embeddings("embeddings.parquet")  # doctest: +SKIP
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return EmbeddingSet.load(path)
    if suffix in (".hdf5", ".h5"):
        from .released_embeddings import read_released_embeddings

        return read_released_embeddings(path)
    raise CheckpointError(f"{path} is not an embedding file the toolkit reads (suffix {suffix or None!r}); expected "
                          "a .parquet file from `clibd embed` / EmbeddingSet.save, or a CLIBD released-embedding "
                          "file extracted_feature_from_<val|test>_split.hdf5 (.hdf5 or .h5)")
