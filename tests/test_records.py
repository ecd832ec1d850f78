"""The canonical records table: barcode/taxon/split cleaning, id checks, rejects, lineage consistency."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clibd_toolkit.errors import ClibdError, DataError
from clibd_toolkit.lineage import LineageChecker, lineage_conflicts
from clibd_toolkit.records import (
    MAX_BARCODE_LENGTH,
    Rejects,
    clean_barcode,
    clean_split,
    clean_taxon,
    normalise_records,
)
from clibd_toolkit.schema import CANONICAL_COLUMNS


# --- barcodes (issue 7) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, expected", [
    ("acgtacgt", "ACGTACGT"),                      # lowercase
    ("ACG T\tAC\nGT\r\nA", "ACGTACGTA"),           # whitespace and line breaks
    ("AC-GT..AC--GT", "ACGTACGT"),                 # alignment gaps - and .
    ("ACGTNRYKMSWBDHV", "ACGTNRYKMSWBDHV"),        # IUPAC ambiguity codes are kept
    ("ACGUACGu", "ACGTACGT"),                      # RNA: U -> T
    (b"acgt", "ACGT"),                             # ASCII bytes
])
def test_clean_barcode_normalises(raw, expected):
    assert clean_barcode(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "-- ..", None, float("nan"), pd.NA])
def test_clean_barcode_empty_is_missing(raw):
    assert clean_barcode(raw) is pd.NA


@pytest.mark.parametrize("raw, bad", [
    ("MKVLAAGIW", "I"),          # protein letters (I, L, E, ... are not nucleotide codes)
    ("ACGT\x00\x01ACGT", "\x00"),  # binary garbage
    ("ACGTÄCGT", "Ä"),           # non-ASCII
    ("ACGT1234", "1"),
])
def test_clean_barcode_rejects_invalid_characters_naming_record(raw, bad):
    with pytest.raises(DataError, match="rec7") as info:
        clean_barcode(raw, record_id="rec7")
    assert bad in str(info.value) or repr(bad)[1:-1] in str(info.value)
    assert "expected A, C, G, T or IUPAC" in str(info.value)
    assert info.value.record_id == "rec7"


def test_clean_barcode_binary_bytes():
    with pytest.raises(DataError, match="not ASCII"):
        clean_barcode(b"\xff\xfe\x00garbage", record_id="r1")


def test_clean_barcode_over_limit():
    clean_barcode("A" * MAX_BARCODE_LENGTH)  # at the limit is fine
    with pytest.raises(DataError, match=r"10001 nt long; the limit is 10000"):
        clean_barcode("A" * (MAX_BARCODE_LENGTH + 1), record_id="long1")


# --- taxa and splits ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["not_classified", "NA", "n/a", "  ", "", None, float("nan"), "None", "Not Classified"])
def test_placeholder_taxa_become_missing(raw):
    assert clean_taxon(raw) is pd.NA


def test_taxa_whitespace_and_unicode_kept():
    assert clean_taxon("  Aedes \t aegypti ") == "Aedes aegypti"
    assert clean_taxon("Ænigmatias blattoides") == "Ænigmatias blattoides"
    long_name = "Battaristis " + "x" * 500
    assert clean_taxon(long_name) == long_name


def test_unknown_split_suggests():
    with pytest.raises(DataError, match="did you mean 'val_seen'"):
        clean_split("val_sen", record_id="r")
    assert clean_split(" train ") == "train"


# --- the table ------------------------------------------------------------------------------------------------


def _frame(**cols):
    return pd.DataFrame(cols)


def test_normalise_columns_order_and_missing():
    df = _frame(record_id=["a", "b"], dna_barcode=["acgt", "ggcc"], country=["CA", "DE"], order=["Diptera", "NA"])
    out = normalise_records(df)
    assert list(out.columns) == list(CANONICAL_COLUMNS) + ["country"]
    assert out["dna_barcode"].tolist() == ["ACGT", "GGCC"]
    assert out["order"].iloc[0] == "Diptera" and pd.isna(out["order"].iloc[1])
    assert out["image"].isna().all() and out["split"].isna().all()


def test_missing_required_column_suggests():
    with pytest.raises(DataError, match="did you mean 'recordid'"):
        normalise_records(_frame(recordid=["a"], dna_barcode=["ACGT"]))
    with pytest.raises(DataError, match="no modality column"):
        normalise_records(_frame(record_id=["a"], species=["x"]))


def test_duplicate_and_empty_ids_raise_with_row():
    with pytest.raises(DataError, match=r"row 3 in f.tsv: duplicate record_id 'a' \(first seen at row 1\)"):
        normalise_records(_frame(record_id=["a", "b", "a"], dna_barcode=["ACGT"] * 3), source="f.tsv")
    with pytest.raises(DataError, match="row 2: empty record_id"):
        normalise_records(_frame(record_id=["a", " "], dna_barcode=["ACGT"] * 2))


def test_skip_lists_every_bad_record_with_reason_and_counts_add_up():
    df = _frame(
        record_id=["ok1", "dup", "dup", None, "bad", "none", "ok2", "sp"],
        dna_barcode=["acgt", "ACGT", "ACGT", "ACGT", "ACXT", None, "A-C-G-T", "ACGT"],
        split=[None, None, None, None, None, None, "train", "tran"],
    )
    rejects = Rejects()
    out = normalise_records(df, on_error="skip", rejects=rejects, row_numbers=range(11, 19))
    assert out["record_id"].tolist() == ["ok1", "dup", "ok2"]
    frame = rejects.to_frame()
    assert len(out) + len(frame) == len(df)
    got = dict(zip(frame["row"], frame["kind"]))
    assert got == {13: "duplicate_id", 14: "empty_id", 15: "invalid_barcode", 16: "no_modality", 18: "unknown_split"}
    assert frame.set_index("row").loc[15, "record_id"] == "bad"
    assert "'X'" in frame.set_index("row").loc[15, "reason"]


def test_rejects_save_roundtrip(tmp_path):
    rejects = Rejects()
    normalise_records(_frame(record_id=["a", "a"], dna_barcode=["ACGT", "ACGT"]), on_error="skip", rejects=rejects)
    rejects.save(tmp_path / "rejects.csv")
    back = pd.read_csv(tmp_path / "rejects.csv")
    assert back["record_id"].tolist() == ["a"] and back["kind"].tolist() == ["duplicate_id"]


def test_skip_needs_collector():
    with pytest.raises(DataError, match="Rejects collector"):
        normalise_records(_frame(record_id=["a"], dna_barcode=["ACGT"]), on_error="skip")


def test_image_bytes_and_paths_kept():
    df = _frame(record_id=["a", "b", "c"], image=[b"\xff\xd8x", "img/b.jpg", "  "], dna_barcode=[None, None, "ACGT"])
    out = normalise_records(df)
    assert out["image"].tolist()[:2] == [b"\xff\xd8x", "img/b.jpg"] and pd.isna(out["image"].iloc[2])


def test_vectorised_cleaning_matches_per_value_functions():
    """normalise_records' fast paths must give exactly what the per-value cleaners give."""
    rng = np.random.default_rng(0)
    alphabet = list("ACGTacgtuU-. \tN\nR")
    seqs = ["A" + "".join(rng.choice(alphabet, size=rng.integers(1, 40))) for _ in range(500)]
    taxa = [rng.choice(["Diptera", " Diptera", "NA", "not_classified", "Aedes  aegypti", None]) for _ in range(500)]
    out = normalise_records(_frame(record_id=[f"r{i}" for i in range(500)], dna_barcode=seqs, species=taxa))
    expected = [clean_barcode(s) for s in seqs]
    for got, exp in zip(out["dna_barcode"].tolist(), expected):
        assert (pd.isna(got) and exp is pd.NA) or got == exp
    for got, exp in zip(out["species"].tolist(), [clean_taxon(t) for t in taxa]):
        assert (pd.isna(got) and exp is pd.NA) or got == exp


# --- lineage ----------------------------------------------------------------------------------------------------


def _naive_conflicts(rows, child, parent):
    first = {}
    bad = []
    for rid, c, p in rows:
        if c is None or p is None:
            continue
        if c not in first:
            first[c] = p
        elif first[c] != p:
            bad.append(rid)
    return bad


def test_lineage_checker_matches_naive_first_placement_rule():
    rng = np.random.default_rng(1)
    n = 300
    genus = rng.choice(["G1", "G2", "G3", "G4", None], size=n)
    family = rng.choice(["F1", "F2", None], size=n)
    df = normalise_records(_frame(record_id=[f"r{i}" for i in range(n)], dna_barcode=["ACGT"] * n,
                                  genus=genus, family=family))
    # stream it in three chunks
    checker = LineageChecker()
    bad = []
    for start in range(0, n, 100):
        part = df.iloc[start:start + 100].reset_index(drop=True)
        bad += [part["record_id"].iat[i] for i, _ in checker.check(part)]
    rows = [(r, g, f) for r, g, f in zip(df["record_id"], genus, family)]
    assert bad == _naive_conflicts(rows, "genus", "family")


def test_lineage_conflicts_table():
    df = normalise_records(_frame(
        record_id=list("abcde"), dna_barcode=["ACGT"] * 5,
        order=["Diptera", "Diptera", "Diptera", "Coleoptera", "Diptera"],
        family=["Culicidae", "Culicidae", "Muscidae", "Culicidae", None],
        genus=["Aedes", "Aedes", "Aedes", "Aedes", "Aedes"]))
    table = lineage_conflicts(df)
    genus_rows = table[table["rank"] == "genus"]
    assert dict(zip(genus_rows["parent"], genus_rows["n_records"])) == {"Culicidae": 3, "Muscidae": 1}
    fam = table[table["rank"] == "family"]
    assert dict(zip(fam["parent"], fam["n_records"])) == {"Coleoptera": 1, "Diptera": 2}


def test_errors_are_toolkit_errors():
    assert issubclass(DataError, ClibdError)
