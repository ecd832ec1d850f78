"""`clibd evaluate` and `clibd identify` end to end on the real BOLD fixture: the files the issue asks for, the
default-split note, leakage reporting, and identification with a known answer."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import clibd_toolkit as ctk
from clibd_toolkit.splits import assign_splits

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BOLD_SMALL = SHARED / "bold-insect-coi" / "bold_insect_coi5p_small.tsv"
pytestmark = pytest.mark.skipif(not BOLD_SMALL.is_file(), reason="../shared/data (real BOLD fixture) is not present")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clibd_toolkit.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run trained on every record of the fixture (8 records per species: the default split would hold every
    species out as unseen and leave nothing to train on)."""
    out = tmp_path_factory.mktemp("run") / "run"
    r = _cli("train", "--preset", "tiny", "--data", str(BOLD_SMALL), "--modalities", "dna,text", "--epochs", "1",
             "--out", str(out), "--no-progress", "--all-records")
    assert r.returncode == 0, r.stderr
    return out


def test_evaluate_writes_metrics_per_taxon_and_table(run_dir, tmp_path):
    out = tmp_path / "eval"
    r = _cli("evaluate", "--run", str(run_dir), "--data", str(BOLD_SMALL), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "applied the default CLIBD-style split (seed 42)" in r.stdout
    assert "| species | dna->dna" in r.stdout  # the paper-style table is printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"config", "rows"}
    assert metrics["config"]["default_split_applied"] is True
    row_keys = {"query", "key", "split", "rank", "k", "micro", "macro", "n"}
    assert metrics["rows"] and all(set(row) == row_keys for row in metrics["rows"])
    assert {(r["query"], r["key"]) for r in metrics["rows"]} == {("dna", "dna"), ("dna", "text")}
    assert {r["rank"] for r in metrics["rows"]} == {"order", "family", "genus", "species"}
    assert {r["k"] for r in metrics["rows"]} == {1, 3, 5}
    for row in metrics["rows"]:
        for field in ("micro", "macro"):
            assert row[field] is None or 0.0 <= row[field] <= 1.0
    # the fixture has 8 records per species, so the default split makes every species unseen (tail species)
    unseen = [r for r in metrics["rows"] if r["split"] == "unseen" and r["rank"] == "species" and r["k"] == 1]
    assert {r["n"] for r in unseen} == {120}
    per_taxon = pd.read_csv(out / "per_taxon.csv")
    assert {"query", "key", "split", "rank", "taxon", "k", "accuracy", "n_queries", "n_keys"} <= set(per_taxon.columns)
    species = per_taxon[(per_taxon["rank"] == "species") & (per_taxon.k == 1) & (per_taxon.key == "dna")]
    assert species.n_queries.sum() == 120
    # training used every record of the file (no split column), so the overlap is reported, not hidden
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_overlap_queries"] == 120
    assert "WARNING: 120 query records were used in training" in r.stdout


def test_evaluate_with_a_split_column_and_no_leakage(tmp_path):
    records = ctk.load_records(BOLD_SMALL)
    # 8 records per species: a lower tail threshold and 4/1/1/2 seen fractions give seen queries and keys
    split = assign_splits(records, ctk.SplitConfig(tail_threshold=5, seen_fractions=(0.5, 0.125, 0.125, 0.25)))
    split.to_csv(tmp_path / "data.csv", index=False)
    run = tmp_path / "run"
    r = _cli("train", "--preset", "tiny", "--data", str(tmp_path / "data.csv"), "--modalities", "dna,text",
             "--epochs", "1", "--out", str(run), "--no-progress")
    assert r.returncode == 0, r.stderr
    r = _cli("evaluate", "--run", str(run), "--data", str(tmp_path / "data.csv"), "--out", str(tmp_path / "ev"),
             "--no-progress")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["default_split_applied"] is False and summary["train_overlap_queries"] == 0
    rows = json.loads((tmp_path / "ev" / "metrics.json").read_text())["rows"]
    assert {r["split"] for r in rows} == {"seen", "unseen", "harmonic_mean"}
    novelty = json.loads((tmp_path / "ev" / "novelty.json").read_text())
    assert 0.0 <= novelty["dna->dna"]["auroc"] <= 1.0


def _doubled_fixture(tmp_path) -> tuple[Path, pd.DataFrame]:
    """The fixture with every record twice (new ids): 16 records per species, so the default split has seen species
    with training records, seen queries and keys, and unseen species."""
    records = ctk.load_records(BOLD_SMALL)
    twice = records.assign(record_id=records.record_id.astype(str) + "-b")
    data = pd.concat([records, twice], ignore_index=True)
    path = tmp_path / "doubled.csv"
    data.to_csv(path, index=False)
    return path, ctk.load_records(path)


def test_train_then_evaluate_on_data_without_splits_holds_out_the_evaluation(tmp_path):
    """Issue 14.6: train applies the seeded default split that evaluate applies, so the README's train -> evaluate
    path on a file without a split column gives honest numbers; --all-records trains on everything (and evaluate
    then says so); --split-seed travels from the run to evaluate."""
    path, records = _doubled_fixture(tmp_path)
    expected = assign_splits(records, ctk.SplitConfig(seed=42))  # the independent reference: the splitter itself
    trained = set(expected.loc[expected.split.isin(["train", "pretrain"]), "record_id"].astype(str))
    assert 0 < len(trained) < len(records)
    run = tmp_path / "run"
    r = _cli("train", "--preset", "tiny", "--data", str(path), "--modalities", "dna,text", "--epochs", "1",
             "--batch-size", "32", "--max-steps", "2", "--out", str(run), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "applied the default CLIBD-style split (seed 42)" in r.stderr
    assert set((run / "train_records.txt").read_text().split()) == trained
    info = json.loads((run / "run.json").read_text())
    assert info["data"]["default_split_applied"] is True and info["data"]["split_seed"] == 42
    assert info["train"]["all_records"] is False
    # validation ran on the split's val queries (none without splits): the best checkpoint carries its metric
    assert json.loads((run / "checkpoints" / "best" / "meta.json").read_text())["val_metric"] is not None
    r = _cli("evaluate", "--run", str(run), "--data", str(path), "--out", str(tmp_path / "ev"), "--no-progress",
             "--no-novelty")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["default_split_applied"] is True and summary["n_queries"] > 0
    assert summary["train_overlap_queries"] == 0 and summary["train_overlap_keys"] == 0
    assert "WARNING" not in r.stdout

    # another seed: evaluate without --split-seed takes the run's, and with the other seed it reports the overlap
    run7 = tmp_path / "run7"
    r = _cli("train", "--preset", "tiny", "--data", str(path), "--modalities", "dna,text", "--epochs", "1",
             "--batch-size", "32", "--max-steps", "1", "--split-seed", "7", "--out", str(run7), "--no-progress")
    assert r.returncode == 0, r.stderr
    r = _cli("evaluate", "--run", str(run7), "--data", str(path), "--out", str(tmp_path / "ev7"), "--no-progress",
             "--no-novelty")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "ev7" / "summary.json").read_text())
    assert summary["split_seed"] == 7 and summary["train_overlap_queries"] == 0
    r = _cli("evaluate", "--run", str(run7), "--data", str(path), "--out", str(tmp_path / "ev42"), "--no-progress",
             "--no-novelty", "--split-seed", "42")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "ev42" / "summary.json").read_text())["train_overlap_queries"] > 0

    # --all-records: every record trained on; evaluate on the same data warns that its queries were trained on
    run_all = tmp_path / "run-all"
    r = _cli("train", "--preset", "tiny", "--data", str(path), "--modalities", "dna,text", "--epochs", "1",
             "--batch-size", "32", "--max-steps", "1", "--all-records", "--out", str(run_all), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert set((run_all / "train_records.txt").read_text().split()) == set(records.record_id.astype(str))
    r = _cli("evaluate", "--run", str(run_all), "--data", str(path), "--out", str(tmp_path / "ev-all"),
             "--no-progress", "--no-novelty")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "ev-all" / "summary.json").read_text())
    assert summary["train_overlap_queries"] == summary["n_queries"] > 0
    assert "were used in training" in r.stdout


def test_train_on_data_too_small_for_the_default_split_says_what_to_do(tmp_path):
    r = _cli("train", "--preset", "tiny", "--data", str(BOLD_SMALL), "--modalities", "dna,text", "--epochs", "1",
             "--out", str(tmp_path / "run"), "--no-progress")
    assert r.returncode == 2
    assert "leaves no training records" in r.stderr and "--all-records" in r.stderr and "split column" in r.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_identify_a_reference_barcode_and_a_folder_of_photos(run_dir, tmp_path):
    records = ctk.load_records(BOLD_SMALL)
    row = records.iloc[17]
    out = tmp_path / "id.csv"
    r = _cli("identify", "--run", str(run_dir), "--reference", str(BOLD_SMALL), "--query", row.dna_barcode,
             "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(out)
    assert len(table) == 1
    # the query's own barcode is in the reference: similarity 1, and the nearest record has that exact barcode
    assert table.similarity[0] == pytest.approx(1.0, abs=1e-5)
    nearest = records.set_index("record_id").loc[table.nearest_id[0]]
    assert nearest.dna_barcode == row.dna_barcode and table.predicted_species[0] == nearest.species
    for col in ("novel", "identified_rank", "neighbour_ids", "score_species"):
        assert col in table.columns
    # the calibration made on this reference is saved beside the output (the reference is a records file) and named
    saved = json.loads(r.stdout.strip().splitlines()[-1])["calibration"]
    assert saved == str(out) + ".calibration-dna-dna.json" and Path(saved).is_file()
    # a model without an image encoder refuses photo queries with a clear message
    img_dir = tmp_path / "photos"
    img_dir.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 100, 50)).save(img_dir / "a.jpg")
    r = _cli("identify", "--run", str(run_dir), "--reference", str(BOLD_SMALL), "--query", str(img_dir),
             "--out", str(tmp_path / "x.csv"))
    assert r.returncode == 2 and "no 'image' encoder" in r.stderr


def _mutated(seq: str, n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    letters = np.array(list(seq))
    at = rng.choice([i for i, c in enumerate(seq) if c in "ACGT"], n, replace=False)
    letters[at] = [{"A": "C", "C": "G", "G": "T", "T": "A"}[c] for c in letters[at]]
    return "".join(letters)


def test_identify_from_an_embedding_file_matches_records_reference(run_dir, tmp_path):
    """The same answers from a saved embedding file (with its records file for the barcodes' k-mers) as from the
    records themselves, with and without sequence evidence; the similarity is the documented mixture."""
    emb = tmp_path / "ref.parquet"
    r = _cli("embed", "--run", str(run_dir), "--data", str(BOLD_SMALL), "--out", str(emb), "--no-progress")
    assert r.returncode == 0, r.stderr
    records = ctk.load_records(BOLD_SMALL)
    query = records.iloc[:5].copy()
    query["record_id"] = [f"q{i}" for i in range(5)]  # new specimens: barcodes a few substitutions away
    query["dna_barcode"] = [_mutated(s, 20, i) for i, s in enumerate(query.dna_barcode)]
    query.to_csv(tmp_path / "q.csv", index=False)
    tables, reports = {}, {}
    for name, ref, extra in (("emb", str(emb), ["--reference-barcodes", str(BOLD_SMALL)]),
                             ("records", str(BOLD_SMALL), []),
                             ("emb0", str(emb), ["--sequence-weight", "0"]),
                             ("records0", str(BOLD_SMALL), ["--sequence-weight", "0"])):
        out = tmp_path / f"{name}.csv"
        r = _cli("identify", "--run", str(run_dir), "--reference", ref, "--query", str(tmp_path / "q.csv"),
                 "--out", str(out), "--no-novelty", "--no-progress", *extra)
        assert r.returncode == 0, r.stderr
        tables[name], reports[name] = pd.read_csv(out), json.loads(r.stdout.strip().splitlines()[-1])
    for a, b in (("emb", "records"), ("emb0", "records0")):
        assert tables[a].nearest_id.tolist() == tables[b].nearest_id.tolist()
        assert tables[a].similarity.round(5).tolist() == tables[b].similarity.round(5).tolist()
    assert reports["emb"]["sequence_weight"] == reports["records"]["sequence_weight"] == 0.5
    assert reports["emb0"]["sequence_weight"] == reports["records0"]["sequence_weight"] == 0.0
    # independently: embedding cosine and 5-mer cosine of each query with the neighbour reported, mixed half and half
    from clibd_toolkit.embed import extract_embeddings
    from clibd_toolkit.kmers import kmer_profiles

    model = ctk.load_run(run_dir)
    by_id = records.set_index("record_id")
    for name, weight in (("records", 0.5), ("records0", 0.0)):
        nearest = by_id.loc[tables[name].nearest_id].reset_index()
        e_q = extract_embeddings(model, query, modalities=["dna"], progress=False).vectors["dna"]
        e_n = extract_embeddings(model, nearest, modalities=["dna"], progress=False).vectors["dna"]
        p_q, p_n = kmer_profiles(query.dna_barcode.tolist()), kmer_profiles(nearest.dna_barcode.tolist())
        want = (1 - weight) * (e_q * e_n).sum(1) + weight * (p_q * p_n).sum(1)
        np.testing.assert_allclose(tables[name].similarity, want, atol=1e-4)
    assert (tables["records"].similarity != tables["records0"].similarity).all()


def test_identify_sequence_evidence_calibration_and_errors(run_dir, tmp_path):
    records = ctk.load_records(BOLD_SMALL)
    query = tmp_path / "q.csv"
    records.iloc[:3].assign(record_id=["a", "b", "c"],
                            dna_barcode=[_mutated(s, 10, i) for i, s in enumerate(records.dna_barcode[:3])]
                            ).to_csv(query, index=False)
    out = tmp_path / "id.csv"
    r = _cli("identify", "--run", str(run_dir), "--reference", str(BOLD_SMALL), "--query", str(query),
             "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    saved = json.loads(Path(report["calibration"]).read_text())
    assert report["sequence_weight"] == saved["sequence_weight"] == 0.5 and saved["sequence_k"] == 5
    # the saved calibration is reused as it is: same answers, its weight taken, another weight refused
    again = tmp_path / "again.csv"
    r = _cli("identify", "--run", str(run_dir), "--reference", str(BOLD_SMALL), "--query", str(query),
             "--out", str(again), "--calibration", report["calibration"], "--no-progress")
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(again))
    r = _cli("identify", "--run", str(run_dir), "--reference", str(BOLD_SMALL), "--query", str(query),
             "--out", str(tmp_path / "x.csv"), "--calibration", report["calibration"], "--sequence-weight", "0")
    assert r.returncode == 2 and "differs from the calibration's 0.5" in r.stderr
    # an embedding file holds no barcodes: asking for their k-mers without the records file says how
    emb = tmp_path / "ref.parquet"
    r = _cli("embed", "--run", str(run_dir), "--data", str(BOLD_SMALL), "--out", str(emb), "--no-progress")
    assert r.returncode == 0, r.stderr
    r = _cli("identify", "--run", str(run_dir), "--reference", str(emb), "--query", str(query),
             "--out", str(tmp_path / "x.csv"), "--sequence-weight", "0.5")
    assert r.returncode == 2 and "--reference-barcodes FILE" in r.stderr
    r = _cli("identify", "--run", str(run_dir), "--reference", str(emb), "--query", str(query),
             "--out", str(tmp_path / "x.csv"), "--sequence-weight", "1")
    assert r.returncode == 2 and "expected a number in [0, 1)" in r.stderr
    # a barcode without one clean 5-mer has no profile: named (record, value, fixes), before anything is embedded
    (tmp_path / "bad.fasta").write_text(">fine\n" + records.dna_barcode[0] + "\n>junk\n" + "N" * 40 + "\n")
    r = _cli("identify", "--run", str(run_dir), "--reference", str(BOLD_SMALL), "--query", str(tmp_path / "bad.fasta"),
             "--out", str(tmp_path / "x.csv"))
    assert r.returncode == 2 and "record 'junk'" in r.stderr and "NNNN" in r.stderr and "--sequence-weight 0" in r.stderr
    assert not (tmp_path / "x.csv").exists()
