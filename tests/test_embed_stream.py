"""Streaming and sharded embedding extraction, and the streaming embedding file writer.

References: the in-memory ``extract_embeddings`` (vectors must match bit for bit), a hand-built format-1 file
with its checksum computed here, and plain record-id bookkeeping for the resume-after-a-kill checks.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import clibd_toolkit.embed_shards as shards_module
from clibd_toolkit.cli.embed import add_embed_arguments, run_embed
from clibd_toolkit.embed import extract_embeddings, rebatch, write_embeddings
from clibd_toolkit.embed_shards import (
    embed_shard,
    merge_shards,
    parse_shard,
    shard_folder,
)
from clibd_toolkit.errors import CheckpointError, ConfigError
from clibd_toolkit.schema import CANONICAL_COLUMNS, RECORD_ID
from clibd_toolkit.store import (
    FORMAT,
    META_COLUMNS,
    EmbeddingSet,
    EmbeddingWriter,
    iter_embeddings,
    read_header,
    verify_embedding_file,
)

N_RECORDS, BATCH, BLOCK = 96, 16, 32  # 3 blocks of 32 records, 2 batches each


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    from clibd_toolkit.simulator import SimulatorConfig, simulate_records

    frame = next(simulate_records(SimulatorConfig(records=N_RECORDS, images=False, seed=11), chunk_size=N_RECORDS))
    frame = frame[list(CANONICAL_COLUMNS)].reset_index(drop=True)
    frame.loc[[3, 40], "dna_barcode"] = pd.NA  # records without a barcode get NaN DNA rows
    return frame


@pytest.fixture(scope="module")
def model():
    from clibd_toolkit.model import CLIBDModel
    from clibd_toolkit.presets import get_preset

    torch.manual_seed(0)
    return CLIBDModel(get_preset("tiny").with_modalities("dna,text")).eval()


@pytest.fixture(scope="module")
def reference(model, records) -> EmbeddingSet:
    return extract_embeddings(model, records, batch_size=BATCH, progress=False)


def _chunks(records: pd.DataFrame, sizes=(7, 30, 1, 25)) -> list[pd.DataFrame]:
    """Reader-like chunks of uneven sizes (not aligned with batches or blocks)."""
    out, start, k = [], 0, 0
    while start < len(records):
        size = sizes[k % len(sizes)]
        out.append(records.iloc[start:start + size])
        start, k = start + size, k + 1
    return out


def _assert_same_embeddings(got: EmbeddingSet, want: EmbeddingSet) -> None:
    assert got.record_ids.tolist() == want.record_ids.tolist()
    assert got.modalities == want.modalities
    for m in want.modalities:
        np.testing.assert_array_equal(got.vectors[m], want.vectors[m])  # bit-identical (NaN rows equal)
    assert got.checksum() == want.checksum()


# --- rebatching and streaming --------------------------------------------------------------------------------


def test_rebatch_cuts_at_global_positions(records):
    parts = list(rebatch(_chunks(records), 20))
    assert [len(p) for p in parts] == [20, 20, 20, 20, 16]
    assert pd.concat(parts)[RECORD_ID].tolist() == records[RECORD_ID].tolist()
    assert list(rebatch([], 5)) == []


def test_streamed_file_equals_in_memory_extraction(model, records, reference, tmp_path, monkeypatch):
    drawn = {"chunks": 0}

    def counting(chunks):
        for chunk in chunks:
            drawn["chunks"] += 1
            yield chunk

    seen_at_first_write = []
    original = EmbeddingWriter.write

    def spy(self, part):
        if not seen_at_first_write:
            seen_at_first_write.append(drawn["chunks"])
        original(self, part)

    monkeypatch.setattr(EmbeddingWriter, "write", spy)
    out = tmp_path / "emb.parquet"
    summary = write_embeddings(model, counting(_chunks(records)), out, batch_size=BATCH, config={"data": "sim"},
                               progress=False)
    # streaming: the first vectors were written after reading 1-2 chunks of 15, not after reading everything
    assert seen_at_first_write[0] <= 2 < drawn["chunks"]
    assert summary.n_records == N_RECORDS
    assert summary.vectors == {"dna": N_RECORDS - 2, "text": N_RECORDS}
    loaded = EmbeddingSet.load(out)
    _assert_same_embeddings(loaded, reference)
    assert loaded.config["data"] == "sim" and loaded.config["model"]["preset"] == "tiny"
    assert np.isnan(loaded.vectors["dna"][[3, 40]]).all() and not np.isnan(loaded.vectors["dna"][0]).any()


# --- shards ----------------------------------------------------------------------------------------------------


def test_sharded_equals_unsharded_exactly(model, records, reference, tmp_path):
    out = tmp_path / "emb.parquet"
    written = [embed_shard(model, _chunks(records), out, (i, 2), batch_size=BATCH, block_size=BLOCK,
                           progress=False) for i in range(2)]
    assert [s.blocks_written for s in written] == [2, 1]  # blocks 0, 2 and block 1
    assert sorted(p.name for p in shard_folder(out).iterdir()) == [
        "block-000000.parquet", "block-000001.parquet", "block-000002.parquet",
        "shard-00000-of-00002.json", "shard-00001-of-00002.json"]
    summary = merge_shards(out, progress=False)
    assert summary.n_records == N_RECORDS
    merged = EmbeddingSet.load(out)
    _assert_same_embeddings(merged, reference)
    assert "shard" not in merged.config  # block bookkeeping stays out of the merged header
    # and the unsharded streamed file is the same file content
    write_embeddings(model, _chunks(records), tmp_path / "plain.parquet", batch_size=BATCH, progress=False)
    assert read_header(tmp_path / "plain.parquet")["sha256"] == read_header(out)["sha256"]


class _Killed(Exception):
    pass


def test_killed_shard_job_resumes_without_duplicates_or_gaps(model, records, reference, tmp_path, monkeypatch):
    out = tmp_path / "emb.parquet"
    n_shards, block = 2, 16  # 6 blocks: shard 0 owns blocks 0, 2, 4
    original = EmbeddingWriter.write

    def dies_in_block_2(self, part):
        if self.path.name == "block-000002.parquet":
            raise _Killed
        original(self, part)

    monkeypatch.setattr(EmbeddingWriter, "write", dies_in_block_2)
    with pytest.raises(_Killed):
        embed_shard(model, _chunks(records), out, (0, n_shards), batch_size=BATCH, block_size=block, progress=False)
    monkeypatch.setattr(EmbeddingWriter, "write", original)
    folder = shard_folder(out)
    assert sorted(p.name for p in folder.iterdir()) == ["block-000000.parquet"]  # no manifest: not finished
    # a SIGKILL mid-write leaves a temporary file behind; it must not count as a block
    (folder / ".block-000002.parquet.abc123.tmp").write_bytes(b"PAR1 half a file")
    first = (folder / "block-000000.parquet").stat()

    embedded = []
    real_iter = shards_module.iter_embedding_chunks

    def spy(model_, chunks, **kw):
        chunks = list(chunks)
        embedded.extend(pd.concat(chunks)[RECORD_ID].tolist())
        return real_iter(model_, chunks, **kw)

    monkeypatch.setattr(shards_module, "iter_embedding_chunks", spy)
    rerun = embed_shard(model, _chunks(records), out, (0, n_shards), batch_size=BATCH, block_size=block,
                        progress=False)
    ids = records[RECORD_ID].tolist()
    assert (rerun.blocks_skipped, rerun.blocks_written) == (1, 2)
    assert embedded == ids[32:48] + ids[64:80]  # blocks 2 and 4 only: block 0 was not embedded again
    assert (folder / "block-000000.parquet").stat().st_mtime_ns == first.st_mtime_ns
    # a finished shard run again returns at once, embedding nothing
    embedded.clear()
    again = embed_shard(model, _chunks(records), out, (0, n_shards), batch_size=BATCH, block_size=block,
                        progress=False)
    assert embedded == [] and again.blocks_skipped == 3
    embed_shard(model, _chunks(records), out, (1, n_shards), batch_size=BATCH, block_size=block, progress=False)
    merge_shards(out, progress=False)
    merged = EmbeddingSet.load(out)
    assert merged.record_ids.tolist() == ids  # every record once, in order
    _assert_same_embeddings(merged, reference)


def test_merge_names_the_shards_still_to_run(model, records, tmp_path):
    out = tmp_path / "emb.parquet"
    with pytest.raises(CheckpointError, match="no finished shard"):
        merge_shards(out, progress=False)
    embed_shard(model, _chunks(records), out, (1, 3), batch_size=BATCH, block_size=BLOCK, progress=False)
    with pytest.raises(CheckpointError, match=r"run shard\(s\) 0/3, 2/3"):
        merge_shards(out, progress=False)
    assert not out.exists()


def test_corrupt_block_is_redone_and_foreign_blocks_are_refused(model, records, reference, tmp_path):
    out = tmp_path / "emb.parquet"
    for i in range(2):
        embed_shard(model, _chunks(records), out, (i, 2), batch_size=BATCH, block_size=BLOCK, progress=False)
    folder = shard_folder(out)
    block = folder / "block-000002.parquet"
    block.write_bytes(block.read_bytes()[:-200])  # truncated
    (folder / "shard-00000-of-00002.json").unlink()  # as if shard 0 had not finished
    rerun = embed_shard(model, _chunks(records), out, (0, 2), batch_size=BATCH, block_size=BLOCK, progress=False)
    assert (rerun.blocks_skipped, rerun.blocks_written) == (1, 1)
    merge_shards(out, progress=False)
    _assert_same_embeddings(EmbeddingSet.load(out), reference)
    # a different model must not mix its blocks with these
    from clibd_toolkit.model import CLIBDModel

    torch.manual_seed(1)
    other = CLIBDModel(model.config).eval()
    (folder / "shard-00000-of-00002.json").unlink()
    with pytest.raises(CheckpointError, match="another model"):
        embed_shard(other, _chunks(records), out, (0, 2), batch_size=BATCH, block_size=BLOCK, progress=False)


def test_shard_arguments_are_checked(model, records, tmp_path):
    assert parse_shard("2/8") == (2, 8)
    for bad in ("8/8", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(ConfigError, match="multiple of batch_size"):
        embed_shard(model, records, tmp_path / "e.parquet", (0, 1), batch_size=BATCH, block_size=40)
    # under torchrun, --run is taken by torchrun's own parser (an abbreviation of --run-path): --run-dir works
    parser = argparse.ArgumentParser()
    add_embed_arguments(parser)
    assert parser.parse_args(["--out", "e.parquet", "--run-dir", "RUN"]).run == "RUN"


# --- the file format --------------------------------------------------------------------------------------------


def _small_set(n: int = 50, seed: int = 0) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({c: [f"id{i}" if c == RECORD_ID else ("Diptera" if i % 2 else pd.NA) for i in range(n)]
                         for c in META_COLUMNS})
    dna = rng.standard_normal((n, 8)).astype(np.float32)
    dna[4] = np.nan
    return EmbeddingSet(meta, {"dna": dna, "text": rng.standard_normal((n, 4)).astype(np.float32)}, {"k": 1})


def test_writer_streams_row_groups_and_verifies(tmp_path):
    emb = _small_set(3000)
    path = tmp_path / "e.parquet"
    with EmbeddingWriter(path, {"dna": 8, "text": 4}, {"k": 1}, row_group_bytes=1) as writer:
        for start in range(0, 3000, 250):
            writer.write(emb.subset(np.arange(start, min(3000, start + 250))))
    assert pq.ParquetFile(path).metadata.num_row_groups == 3  # 1024-record row groups, not one big table
    assert verify_embedding_file(path) == 3000
    header = read_header(path)
    assert header["format"] == FORMAT and header["n_records"] == 3000 and header["dims"] == {"dna": 8, "text": 4}
    # the checksum written while streaming is the one of the whole set
    assert header["sha256"] == emb.checksum()
    parts = list(iter_embeddings(path, batch_size=700, modalities=["text"]))
    assert max(map(len, parts)) == 700 and sum(map(len, parts)) == 3000
    np.testing.assert_array_equal(np.concatenate([p.vectors["text"] for p in parts]), emb.vectors["text"])


def test_tampered_or_truncated_files_are_refused(tmp_path):
    emb = _small_set()
    path = emb.save(tmp_path / "e.parquet")
    table = pq.read_table(path)
    vectors = table.column("emb_text").combine_chunks()
    flat = vectors.flatten().to_numpy().copy()
    flat[0] += 1.0
    changed = table.set_column(table.column_names.index("emb_text"), "emb_text",
                               pa.FixedSizeListArray.from_arrays(pa.array(flat), 4))
    metadata = pq.ParquetFile(path).metadata.metadata
    pq.write_table(changed.replace_schema_metadata({k: v for k, v in metadata.items() if k != b"ARROW:schema"}),
                   tmp_path / "tampered.parquet")
    with pytest.raises(CheckpointError, match="checksum"):
        EmbeddingSet.load(tmp_path / "tampered.parquet")
    with pytest.raises(CheckpointError, match="checksum"):
        verify_embedding_file(tmp_path / "tampered.parquet")
    (tmp_path / "cut.parquet").write_bytes(path.read_bytes()[:-300])
    with pytest.raises(CheckpointError, match="not a readable"):
        EmbeddingSet.load(tmp_path / "cut.parquet")


def test_format_1_files_still_load(tmp_path):
    emb = _small_set()
    # a format-1 file as the first release wrote it: metadata in the schema, checksum over whole blocks
    digest = hashlib.sha256()
    for m in ("dna", "text"):
        digest.update(m.encode())
        digest.update(emb.vectors[m].tobytes())
    digest.update("\x1f".join(emb.record_ids.tolist()).encode())
    table = emb.to_arrow().replace_schema_metadata({
        b"clibd_format": b"clibd_toolkit.embeddings/1", b"clibd_config": json.dumps({"k": 1}).encode(),
        b"clibd_n_records": b"50", b"clibd_sha256": digest.hexdigest().encode()})
    pq.write_table(table, tmp_path / "v1.parquet")
    loaded = EmbeddingSet.load(tmp_path / "v1.parquet")
    np.testing.assert_array_equal(loaded.vectors["dna"], emb.vectors["dna"])
    assert verify_embedding_file(tmp_path / "v1.parquet") == 50
    bad = table.replace_schema_metadata({**table.schema.metadata, b"clibd_sha256": b"0" * 64})
    pq.write_table(bad, tmp_path / "v1bad.parquet")
    with pytest.raises(CheckpointError, match="checksum"):
        EmbeddingSet.load(tmp_path / "v1bad.parquet")


def test_writer_interrupted_leaves_no_file(tmp_path):
    emb = _small_set()
    path = tmp_path / "e.parquet"
    with pytest.raises(RuntimeError):
        with EmbeddingWriter(path, {"dna": 8, "text": 4}) as writer:
            writer.write(emb)
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []
    with pytest.raises(Exception, match="expects"):
        with EmbeddingWriter(path, {"dna": 16}) as writer:
            writer.write(emb)
    assert os.listdir(tmp_path) == []


# --- the command line functions ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_and_data(tmp_path_factory, model):
    """A run folder holding ``model`` (as `clibd train` writes it) and a simulated DNA-only survey folder."""
    from clibd_toolkit.checkpoint import save_checkpoint, write_run_info
    from clibd_toolkit.config import TrainConfig
    from clibd_toolkit.simulator import SimulatorConfig, write_survey

    root = tmp_path_factory.mktemp("cli")
    write_run_info(root / "run", model.config, TrainConfig(), {})
    save_checkpoint(root / "run", "best", model, trainer_state=None, meta={"epoch": 1})
    data = write_survey(root / "survey", SimulatorConfig(records=N_RECORDS, images=False, seed=11), progress=False)
    return root / "run", data


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_embed_arguments(parser)
    return run_embed(parser.parse_args(list(argv)))


def test_cli_streams_shards_and_merges(run_and_data, tmp_path, capsys):
    run, data = run_and_data
    common = ["--data", str(data), "--run", str(run), "--batch-size", str(BATCH), "--chunk-size", "25",
              "--device", "cpu", "--no-progress"]
    assert _cli(*common, "--out", str(tmp_path / "plain.parquet")) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["records"] == N_RECORDS
    for i in range(3):
        assert _cli(*common, "--out", str(tmp_path / "sharded.parquet"), "--shard", f"{i}/3",
                    "--block-size", str(BLOCK)) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["shard"] for r in reports] == ["0/3", "1/3", "2/3"]
    assert sum(r["records"] for r in reports) == N_RECORDS
    assert _cli("--out", str(tmp_path / "sharded.parquet"), "--merge", "--no-progress") == 0
    a, b = EmbeddingSet.load(tmp_path / "plain.parquet"), EmbeddingSet.load(tmp_path / "sharded.parquet")
    _assert_same_embeddings(b, a)
    assert a.config["data"] == str(data) and a.config["run"] == str(run)
    with pytest.raises(ConfigError, match="--data and --run"):
        _cli("--out", str(tmp_path / "x.parquet"))
