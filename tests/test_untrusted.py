"""Loading a checkpoint, weights or an embedding file never executes code from it."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from clibd_toolkit.errors import CheckpointError, UnsafeFileError
from clibd_toolkit.io import load_tensors
from clibd_toolkit.store import EmbeddingSet

MARKER = "clibd_pwned_marker"


class Payload:
    """Unpickling this calls os.system: the classic malicious pickle."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_pickle_carrying_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / MARKER
    evil = tmp_path / "model.pth"
    torch.save({"weight": torch.zeros(2), "payload": Payload(marker)}, evil)
    with pytest.raises(UnsafeFileError, match="would execute code"):
        load_tensors(evil)
    assert not marker.exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises((UnsafeFileError, CheckpointError)):
        load_tensors(raw)
    assert not marker.exists()


def test_plain_state_dicts_and_safetensors_load(tmp_path):
    from safetensors.torch import save_file

    torch.save({"model": {"w": torch.ones(3)}}, tmp_path / "ok.pth")
    assert torch.equal(load_tensors(tmp_path / "ok.pth")["w"], torch.ones(3))
    save_file({"w": torch.arange(4.0)}, str(tmp_path / "ok.safetensors"))
    assert torch.equal(load_tensors(tmp_path / "ok.safetensors")["w"], torch.arange(4.0))
    (tmp_path / "bad.safetensors").write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_tensors(tmp_path / "bad.safetensors")


def test_trainer_state_with_code_is_refused(tmp_path):
    from clibd_toolkit.checkpoint import load_trainer_state

    marker = tmp_path / MARKER
    torch.save({"epoch": 1, "x": Payload(marker)}, tmp_path / "trainer.pt")
    with pytest.raises(UnsafeFileError):
        load_trainer_state(tmp_path)
    assert not marker.exists()


def test_tampered_embedding_file_is_refused(tmp_path):
    import pyarrow.parquet as pq

    meta = pd.DataFrame({"record_id": ["a", "b"], "order": ["O", "O"], "family": ["F", "F"], "genus": ["G", "G"],
                         "species": ["s1", "s2"], "bin_uri": [None, None], "split": [None, None]})
    EmbeddingSet(meta, {"dna": np.eye(2, dtype=np.float32)}).save(tmp_path / "e.parquet")
    import pyarrow as pa

    table = pq.read_table(tmp_path / "e.parquet")
    header = pq.ParquetFile(tmp_path / "e.parquet").metadata.metadata  # every key-value pair, footer included
    # same header (count and checksum), one record id changed: the checksum no longer matches
    tampered = table.set_column(0, "record_id", pa.array(["a", "c"]))
    pq.write_table(tampered.replace_schema_metadata(header), tmp_path / "t.parquet")
    with pytest.raises(CheckpointError, match="checksum"):
        EmbeddingSet.load(tmp_path / "t.parquet")
