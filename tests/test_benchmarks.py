"""Every benchmark script runs from the repository with small inputs and prints one JSON object naming its inputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BOLD = REPO.parent / "shared" / "data" / "bold-insect-coi"

SMALL = {
    "encoder_throughput": ["--threads", "1", "--modalities", "dna,text", "--batch-sizes", "4", "--repeats", "1",
                           "--min-seconds", "0.05", "--matmul-n", "128"],
    "train_throughput": ["--smoke"],
    "search": ["--keys", "3000", "--queries", "20", "--dim", "32", "--clusters", "50", "--nlist", "16",
               "--nprobe", "2", "--repeats", "1"],
    "embed_memory": ["--sizes", "300", "600", "--chunk-size", "200", "--batch-size", "64"],
    "umap_plot": ["--points", "400", "--dim", "16", "--species", "10", "--warmup-points", "0"],
    "latent_space": ["--records", "400", "--species", "10", "--umap-records", "200", "--no-browser"],
    "simulator": ["--dna-records", "300", "--image-records", "20", "--image-size", "32"],
    "released_model": ["--size", "small", "--repeats", "1", "--image-batch", "2", "--dna-batch", "4", "--text-batch", "4"],
}


def run_benchmark(name: str, args: list[str], tmp_path: Path) -> dict:
    if name == "embed_memory":
        args = [*args, "--workdir", str(tmp_path)]
    # one numba cache for the whole session: the UMAP benchmarks then compile their kernels once, not per script
    env = {**os.environ, "NUMBA_CACHE_DIR": str(Path(tempfile.gettempdir()) / "clibd-test-numba-cache")}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)  # exactly one JSON object on stdout


@pytest.mark.parametrize("name", sorted(SMALL))
def test_benchmark_prints_one_json_object(name, tmp_path):
    result = run_benchmark(name, SMALL[name], tmp_path)
    assert result["benchmark"] == name
    assert "conditions" in result and result["conditions"]["torch"]


def test_encoder_throughput_counts_attention(tmp_path):
    result = run_benchmark("encoder_throughput", SMALL["encoder_throughput"], tmp_path)
    dna = next(r for r in result["results"] if r["modality"] == "dna" and r["variant"] == "eager")
    # cpu preset DNA encoder, 133 tokens, hidden 128, 4 layers, FFN 512: linear layers 2 * (4 h^2 + 2 h f) per token
    # and layer, attention 4 * L^2 * h per layer, plus the k-mer bag projection (1,024 x 128) and the head (256 x 256)
    linear = 133 * 4 * 2 * (4 * 128 * 128 + 2 * 128 * 512)
    attention = 4 * 4 * 133 * 133 * 128
    heads = 2 * 1024 * 128 + 2 * 256 * 256
    assert dna["gflop_per_record"] == pytest.approx((linear + attention + heads) / 1e9, abs=1e-4)
    assert {r["variant"] for r in result["results"] if r["modality"] == "dna"} == {"eager", "unchunked-ffn"}


@pytest.mark.skipif(not BOLD.is_dir(), reason="real BOLD barcodes not present (../shared/data/bold-insect-coi)")
def test_bold_protocol_smoke(tmp_path):
    result = run_benchmark("bold_protocol", ["--limit", "3000", "--train-minutes", "0.2", "--epochs", "1",
                                             "--out", str(tmp_path / "out")], tmp_path)
    assert result["benchmark"] == "bold_protocol"
    assert (tmp_path / "out" / "bold_protocol.md").is_file()


@pytest.mark.skipif(not BOLD.is_dir(), reason="real BOLD barcodes not present (../shared/data/bold-insect-coi)")
def test_open_world_smoke(tmp_path):
    import shutil

    result = run_benchmark("open_world", ["--limit", "4000", "--queries-per-group", "60"], tmp_path)
    assert set(result["queries"]) == {"novel_family", "novel_genus", "novel_species", "known_species"}
    for method in ("kmer/rank", "kmer/novelty"):
        known = result["results"][method]["known_species"]
        assert sum(known["reported_rank"].values()) + known["none"] == pytest.approx(1.0)
        for group in result["results"][method].values():  # barcode sharing measured for every group
            if isinstance(group, dict) and "n" in group:
                assert 0.0 <= group["bin_shared"] <= 1.0
                rest = group.get("outside_shared_bins")
                assert rest is None or rest["n"] == round(group["n"] * (1 - group["bin_shared"]))
    calibration = result["results"]["kmer/rank"]["calibration"]  # the bars and the held-out taxa behind them
    assert set(calibration["thresholds"]) == {"order", "family", "genus", "species"}
    assert calibration["n_taxa"]["novel_family"] >= 1 and not calibration["untrained_taxa"]
    assert calibration["confidence_z"] == pytest.approx(1.645)  # the library's default unless --confidence-z
    sintax = result["results"]["sintax"]
    if shutil.which("vsearch"):  # .ci/run installs Debian's vsearch
        assert sintax["known_species"]["n"] == result["queries"]["known_species"]
        assert sintax["known_species"]["precision"] > 0.9  # SINTAX names known species right
    else:
        assert "apt-get install vsearch" in sintax["skipped"]


def test_shared_bins_by_hand(monkeypatch):
    """A query shares its barcode when its BIN holds reference records of another taxon at the rank."""
    import pandas as pd

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from open_world import shared_bins

    reference = pd.DataFrame({"bin_uri": ["B1", "B1", "B2", None, "B4"], "species": ["a", "b", "c", "d", None]})
    truth = pd.DataFrame({"bin_uri": ["B1", "B2", "B3", None, "B2", "B4"], "species": ["a", "c", "x", "a", "y", "z"]})
    # B1 holds a and b (a's query shares it with b); B2 only c; B3 is not in the reference; no BIN; y's query in
    # c's B2; B4's only reference record has no species
    assert shared_bins(truth, reference, "species").tolist() == [True, False, False, False, True, False]


@pytest.mark.skipif(not BOLD.is_dir(), reason="real BOLD barcodes not present (../shared/data/bold-insect-coi)")
def test_open_world_training_holdout(tmp_path):
    import pandas as pd

    written = {}
    for holdout in (None, 0.3):
        extra = [] if holdout is None else ["--training-holdout", str(holdout)]
        out = tmp_path / f"train-{holdout}.csv"
        written[holdout] = run_benchmark("open_world", ["--limit", "4000", "--write-training-data", str(out), *extra],
                                         tmp_path)
        assert written[holdout]["n_training"] == len(pd.read_csv(out))
    assert written[None]["training_holdout"] == 0.1 and written[0.3]["training_holdout"] == 0.3
    # the same reference; the larger hold-out leaves fewer records (and taxa) to train on
    assert written[None]["n_reference"] == written[0.3]["n_reference"]
    assert written[0.3]["n_training"] < written[None]["n_training"] < written[None]["n_reference"]


@pytest.mark.skipif(not BOLD.is_dir(), reason="real BOLD barcodes not present (../shared/data/bold-insect-coi)")
def test_identify_speed_smoke(tmp_path):
    import shutil

    import pandas as pd

    small = BOLD / "bold_insect_coi5p_small.tsv"
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "clibd_toolkit.cli", "train", "--preset", "tiny", "--data",
                           str(small), "--modalities", "dna,text", "--epochs", "1", "--all-records", "--out", str(run),
                           "--no-progress"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import clibd_toolkit as ctk

    n = len(ctk.load_records(small))
    work = tmp_path / "work"
    result = run_benchmark("identify_speed", ["--run", str(run), "--data", str(small), "--reference-size", str(n - 100),
                                              "--queries", "300", "--workdir", str(work)], tmp_path)
    assert (result["n_reference"], result["n_queries"], result["queries_in_reference"]) == (n - 100, 300, 200)
    clibd = result["clibd"]
    assert sum(clibd["reported_rank"].values()) + clibd["unnamed"] == 300
    # the timed identify reused the first one's saved calibration and names every query as that one did
    first, timed = pd.read_csv(work / "first.csv"), pd.read_csv(work / "identified.csv")
    pd.testing.assert_frame_equal(first, timed)
    assert clibd["sequence_weight"] == 0.5  # barcodes get the 5-mer evidence, as clibd identify's default
    if shutil.which("vsearch"):  # .ci/run installs Debian's vsearch
        assert sum(result["sintax"]["reported_rank"].values()) + result["sintax"]["unnamed"] == 300
        assert result["speedup (sintax identify / clibd identify)"] > 0
    else:
        assert "apt-get install vsearch" in result["sintax"]["skipped"]


RAW_WELLS = REPO.parent / "shared" / "data" / "bioscan1m-raw-wells" / "images"


@pytest.mark.skipif(not RAW_WELLS.is_dir(), reason="real BIOSCAN photos not present (../shared/data/bioscan1m-raw-wells)")
def test_data_pipeline_smoke(tmp_path):
    result = run_benchmark("data_pipeline", ["--smoke"], tmp_path)
    assert result["benchmark"] == "data_pipeline"
    # every source, in the training process and in a worker, built every timed record
    runs = {(r["source"], r["workers"]): r for r in result["results"]}
    assert set(runs) == {(s, w) for s in ("folder_original", "folder_256", "hdf5_256") for w in (0, 1)}
    assert all(r["samples"] == result["records_timed"] and r["samples_per_s"] > 0 for r in runs.values())
    gpu = result["gpu_jpeg_decode"]
    assert gpu["available"] or gpu["reason"]


@pytest.mark.skipif(not RAW_WELLS.is_dir(), reason="real BIOSCAN photos not present (../shared/data/bioscan1m-raw-wells)")
def test_train_throughput_with_real_data_smoke(tmp_path):
    result = run_benchmark("train_throughput", ["--smoke", "--preset", "tiny", "--real-data", str(RAW_WELLS),
                                                "--num-workers", "1"], tmp_path)
    real = result["real_data"]
    assert real["images"] == len(list(RAW_WELLS.glob("*.jpg"))) and real["num_workers"] == 1
    assert real["samples_per_s"] > 0 and 0 <= real["data_wait_fraction"] <= 1
    assert result["real_vs_synthetic"] == pytest.approx(real["samples_per_s"] / result["samples_per_s"], rel=1e-2)
    # without --real-data the output is what it was: synthetic inputs only
    assert "real_data" not in run_benchmark("train_throughput", ["--smoke", "--preset", "tiny"], tmp_path)


def _open_world_output(seed: int, family: tuple[float, float, float], sintax_family_named: float) -> dict:
    """A minimal benchmarks/open_world.py output: (named, precision, se over taxa) of the novel families; every
    other group named fully and right."""
    def group(named, precision, se=0.0, species=1.0):
        return {"n": 100, "named": named, "precision": precision, "precision_se_over_taxa": se, "n_taxa": 10,
                "named_at_or_below": {"order": named, "family": named, "genus": named, "species": species}}

    ours = {"novel_family": group(*family, species=0.0), "novel_genus": group(0.5, 1.0, species=0.0),
            "novel_species": group(0.5, 1.0, species=0.0), "known_species": group(1.0, 1.0, species=0.98),
            "novelty_auroc": 0.995 - 0.01 * seed}
    # seed 0: 10 of 100 novel-species queries share a BIN with a reference species, the other 90 named 0.5, all
    # right; seed 1: 30 share, the other 70 named 0.4, half right
    ours["novel_species"].update({"bin_shared": (0.1, 0.3)[seed], "outside_shared_bins": {
        "n": (90, 70)[seed], "named": (0.5, 0.4)[seed], "precision": (1.0, 0.5)[seed]}})
    theirs = {**{g: group(0.3, 1.0, species=0.0) for g in ("novel_genus", "novel_species")},
              "novel_family": group(sintax_family_named, 1.0, species=0.0), "known_species": group(1.0, 1.0)}
    return {"benchmark": "open_world", "seed": seed, "n_reference": 1000, "min_precision": 0.95,
            "results": {"clibd+kmer/rank@0.5": ours, "sintax": theirs},
            "seconds": {"clibd+kmer/rank@0.5": {"identify_s (embed queries + search + decide)": 10.0},
                        "sintax": {"identify_s (index + classify)": 12.0}}}


def test_open_world_seeds_pools_by_hand(tmp_path):
    files = []
    for seed, family, sintax_named in ((0, (0.2, 1.0, 0.0), 0.1), (1, (0.4, 0.75, 0.1), 0.2)):
        files.append(tmp_path / f"ow{seed}.json")
        files[-1].write_text(json.dumps(_open_world_output(seed, family, sintax_named)))
    result = run_benchmark("open_world_seeds", [str(f) for f in files], tmp_path)
    family = result["pooled"]["clibd+kmer/rank@0.5"]["novel_family"]
    # by hand: 20 + 40 of 200 named; 20 x 1.0 + 40 x 0.75 = 50 right of 60; se sqrt(0^2 + (0.1 x 40)^2) / 60
    assert family["named"] == pytest.approx(0.3) and family["precision"] == pytest.approx(50 / 60)
    assert family["precision_se_over_taxa"] == pytest.approx(4 / 60) and family["n_taxa"] == 20
    assert "bin_shared" not in family  # not measured in these outputs: not made up
    species = result["pooled"]["clibd+kmer/rank@0.5"]["novel_species"]
    # by hand: 10 + 30 of 200 share; outside them 45 + 28 of 160 named, 45 x 1.0 + 28 x 0.5 = 59 right
    assert species["bin_shared"] == pytest.approx(0.2)
    assert species["outside_shared_bins"] == pytest.approx({"n": 160, "named": 73 / 160, "precision": 59 / 73})
    targets = result["targets"]
    assert targets["novel_family_precision"]["met_pooled"] is False  # 0.833 < 0.95
    assert targets["novel_family_precision"]["met_on_every_seed"] is False  # seed 1: 0.75
    assert result["per_seed"]["0"]["targets"]["novel_family_precision"]["met"] is True
    assert targets["novel_family_named_vs_sintax"]["met_pooled"] is True  # 0.30 > 0.15
    assert targets["known_named_to_species"]["met_pooled"] and targets["known_named_to_species"]["met_on_every_seed"]
    assert targets["novelty_auroc"]["value"] == pytest.approx(0.985) and not targets["novelty_auroc"]["met_pooled"]
    assert targets["identify_not_slower_than_sintax"]["value"] == pytest.approx(20.0)
    assert targets["identify_not_slower_than_sintax"]["met_on_every_seed"]
    # one split twice is refused: the pooled error would count its taxa twice
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "open_world_seeds.py"), str(files[0]),
                           str(files[0])], capture_output=True, text=True)
    assert proc.returncode == 2 and "repeat a seed" in proc.stderr
