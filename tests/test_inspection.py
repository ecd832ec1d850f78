"""``clibd inspect``: a deliberately messy file is reported problem by problem, with record ids, without crashing."""
from __future__ import annotations

import argparse
import json
import shutil

import pandas as pd
import pytest

from clibd_toolkit.errors import DataError, DataFileError
from clibd_toolkit.cli.inspect import add_inspect_arguments, run_inspect
from clibd_toolkit.inspection import inspect_records


@pytest.fixture()
def messy(shared_data, tmp_path):
    thumbs = shared_data / "bioscan1m-retrieval-thumbs" / "images"
    pngs = sorted(thumbs.glob("*.png"))[:4]
    img = tmp_path / "img"
    img.mkdir()
    for p in pngs:
        shutil.copy(p, img / p.name)
    (img / "empty.jpg").write_bytes(b"")
    (img / "text.jpg").write_text("this is not an image")
    jpeg = (shared_data / "bioscan1m-examples" / "sample_crops" / "BIOUG68001-C12.jpg").read_bytes()
    (img / "truncated.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])  # header intact, pixels cut
    good = "ACGT" * 20
    rows = [
        ("ok1", good, f"img/{pngs[0].name}", "Diptera", "Culicidae", "Aedes", "Aedes aegypti", "train"),
        ("ok2", good.lower(), f"img/{pngs[1].name}", "Diptera", "Culicidae", "Aedes", "Aedes aegypti", "seen_keys"),
        ("badchars", "ACGTXXACGT", "", "Diptera", "Culicidae", "Aedes", "", ""),
        ("nothing", "", "", "Diptera", "", "", "", ""),
        ("toolong", "A" * 10_050, "", "", "", "", "", ""),
        ("short", "ACG", "", "", "", "", "", ""),
        ("ok1", good, "", "", "", "", "", ""),  # duplicate id
        ("", good, "", "", "", "", "", ""),  # empty id
        ("badsplit", good, "", "", "", "", "", "tran"),
        ("conflict", good, f"img/{pngs[2].name}", "Diptera", "Muscidae", "Aedes", "", "train"),
        ("missingimg", good, "img/nope.jpg", "", "", "", "", ""),
        ("zeroimg", good, "img/empty.jpg", "", "", "", "", ""),
        ("textimg", good, "img/text.jpg", "", "", "", "", ""),
        ("truncimg", good, "img/truncated.jpg", "", "", "", "", ""),
        ("escape", good, "../outside.jpg", "", "", "", "", ""),
    ]
    table = pd.DataFrame(rows, columns=["record_id", "dna_barcode", "image", "order", "family", "genus", "species",
                                        "split"])
    path = tmp_path / "messy.tsv"
    table.to_csv(path, sep="\t", index=False)
    return path


EXPECTED = {
    ("badchars", "invalid_barcode"), ("nothing", "no_modality"), ("toolong", "barcode_too_long"),
    ("short", "short_barcode"), ("ok1", "duplicate_id"), ("", "empty_id"), ("badsplit", "unknown_split"),
    ("conflict", "lineage_conflict"), ("missingimg", "missing_image"), ("zeroimg", "unreadable_image"),
    ("textimg", "unreadable_image"), ("truncimg", "unreadable_image"), ("escape", "image_path"),
}


def test_messy_file_reports_every_problem_with_its_record(messy):
    report = inspect_records(messy, decode_sample=100, progress=False)
    found = {(str(r) if isinstance(r, str) else "", k) for r, k in zip(report.problems["record_id"],
                                                                        report.problems["kind"])}
    assert found == EXPECTED
    c = report.counts
    assert c["n_read"] == 15 and c["n_read"] == c["n_loaded"] + c["n_rejected"]
    assert c["n_rejected"] == 7  # badchars, nothing, toolong, duplicate ok1, empty id, badsplit, escape
    text = report.to_text()
    for rid, kind in EXPECTED:
        assert f"[{kind}]" in text and (rid in text)
    as_json = json.dumps(report.to_dict())
    assert "lineage_conflicts" in as_json and report.to_dict()["problem_counts"]["unreadable_image"] == 3
    assert report.image_sizes["width_min"] == 159
    assert report.sequence_lengths["min"] == 3


def test_header_mode_samples_decoding(messy):
    """With a decode sample of 0 only header checks run: the truncated JPEG (valid header) is not caught."""
    report = inspect_records(messy, decode_sample=0, progress=False)
    kinds = dict(zip(report.problems["record_id"], report.problems["kind"]))
    assert "truncimg" not in kinds and kinds["textimg"] == "unreadable_image"
    none = inspect_records(messy, images="none", progress=False)
    assert not set(none.problems["kind"]) & {"missing_image", "unreadable_image"}


def test_real_reference_set_is_clean(shared_data):
    report = inspect_records(shared_data / "bold-insect-coi" / "bold_insect_coi5p_small.tsv", progress=False)
    assert report.ok and report.counts["n_loaded"] == 480
    assert report.rank_counts.set_index("rank")["n_distinct"].to_dict() == {
        "order": 4, "family": 36, "genus": 54, "species": 60}


def test_short_barcode_is_refused_by_the_tokenizer_naming_the_record():
    from clibd_toolkit.dna import KmerTokenizer

    with pytest.raises(DataError, match="record short1: barcode 'ACG' is 3 nt, shorter than one 5-mer"):
        KmerTokenizer().encode(["ACGTACGT", "ACG"], ids=["ok", "short1"])


def test_cli_functions(messy, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_inspect_arguments(parser)
    out = tmp_path / "report.json"
    problems = tmp_path / "problems.csv"
    args = parser.parse_args(["--data", str(messy), "--json", str(out), "--problems", str(problems)])
    assert run_inspect(args) == 0
    printed = capsys.readouterr().out
    assert "problems: 13" in printed
    data = json.loads(out.read_text())
    assert data["counts"]["n_read"] == 15
    assert len(pd.read_csv(problems)) == 13
    strict = parser.parse_args(["--data", str(messy), "--strict", "--images", "none"])
    assert run_inspect(strict) == 1
    with pytest.raises(DataFileError):
        run_inspect(parser.parse_args(["--data", str(tmp_path / "absent.tsv")]))


def test_image_checks_can_be_limited(messy):
    report = inspect_records(messy, max_image_checks=2, progress=False)
    # loaded records with an image: ok1, ok2, conflict, missingimg, zeroimg, textimg, truncimg ("escape" is rejected)
    assert report.image_sizes["n_checked"] == 2 and report.image_sizes["n_with_image"] == 7
    assert "2 of 7 checked" in report.to_text()
