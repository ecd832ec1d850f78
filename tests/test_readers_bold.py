"""BOLD TSV exports: the real reference set (mirror layout), the v4 "combined" layout and the BCDM layout."""
from __future__ import annotations

import csv
import gzip

import pandas as pd
import pytest

from clibd_toolkit.errors import DataError
from clibd_toolkit.readers import detect_format, iter_record_chunks, read_records

# The 55 columns of a BOLD v4 "combined" export, in order, as in the per-species exports the bold-insect-coi set
# was re-packed from (matteodegobbi/InsectClassification old/_csvs/*.tsv). Missing values are a single space.
V4_COLUMNS = (
    "processid sampleid recordID catalognum fieldnum institution_storing bin_uri phylum_taxID phylum_name "
    "class_taxID class_name order_taxID order_name family_taxID family_name subfamily_taxID subfamily_name "
    "genus_taxID genus_name species_taxID species_name subspecies_taxID subspecies_name identification_provided_by "
    "voucher_type tissue_type collectors collectiondate lifestage sex reproduction extrainfo notes lat lon "
    "coord_source coord_accuracy country province region exactsite sequenceID markercode genbank_accession "
    "nucleotides image_ids image_urls copyright_licenses trace_ids trace_links run_dates sequencing_centers "
    "directions seq_primers marker_codes"
).split()


@pytest.fixture(scope="module")
def small(shared_data):
    return shared_data / "bold-insect-coi" / "bold_insect_coi5p_small.tsv"


def _raw_rows(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_small_fixture_matches_independent_read(small):
    assert detect_format(small) == "bold"
    result = read_records(small)
    raw = _raw_rows(small)
    assert result.n_read == len(raw) == 480 and len(result.rejects) == 0
    rec = result.records.set_index("record_id")
    for row in raw[:: 37]:
        r = rec.loc[row["processid"]]
        assert r["dna_barcode"] == row["dna_barcode"].upper()
        assert (r["order"], r["family"], r["genus"], r["species"]) == (
            row["order"], row["family"], row["genus"], row["species"])
        assert pd.isna(r["bin_uri"]) if row["bin_uri"] == "" else r["bin_uri"] == row["bin_uri"]
    # README: 4 orders, 36 families, 54 genera, 60 species (8 records each)
    assert [result.records[c].nunique() for c in ("order", "family", "genus", "species")] == [4, 36, 54, 60]
    assert set(result.records["species"].value_counts()) == {8}


def test_full_export_counts_match_readme(shared_data):
    path = shared_data / "bold-insect-coi" / "bold_insect_coi5p.tsv.gz"
    result = read_records(path)
    recs = result.records
    assert result.n_read == len(recs) == 75_750
    assert [recs[c].nunique() for c in ("order", "family", "genus", "species", "bin_uri")] == [4, 94, 361, 1007, 1263]
    lengths = recs["dna_barcode"].str.len()
    assert (lengths.min(), int(lengths.median()), lengths.max()) == (127, 658, 1555)
    non_acgt = recs["dna_barcode"].str.contains("[^ACGT]", regex=True).mean()
    assert abs(non_acgt - 0.086) < 0.001  # README: 8.6 % contain IUPAC codes


def test_streaming_equals_whole_read(shared_data):
    path = shared_data / "bold-insect-coi" / "bold_insect_coi5p.tsv.gz"
    whole = read_records(path).records
    stream = iter_record_chunks(path, chunk_size=20_000)
    chunks = list(stream)
    assert [len(c) for c in chunks] == [20_000, 20_000, 20_000, 15_750]
    assert stream.n_read == 75_750 and len(stream.rejects) == 0
    joined = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(joined[["record_id", "dna_barcode", "species"]],
                                  whole[["record_id", "dna_barcode", "species"]], check_dtype=False)


def _write_v4(path, raw_rows, gaps=True):
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("\t".join(V4_COLUMNS) + "\n")
        for i, row in enumerate(raw_rows):
            values = {c: " " for c in V4_COLUMNS}
            values.update(processid=row["processid"], sampleid=row["sampleid"], bin_uri=row["bin_uri"] or " ",
                          phylum_name=row["phylum"], class_name=row["class"], order_name=row["order"],
                          family_name=row["family"], subfamily_name=row["subfamily"] or " ",
                          genus_name=row["genus"], species_name=row["species"] if i % 5 else " ",
                          markercode="COI-5P", genbank_accession=row["genbank_accession"], country=row["country"],
                          nucleotides=("--" + row["dna_barcode"].lower() + "---") if gaps else row["dna_barcode"],
                          marker_codes="COI-5P|COI-5P")
            fh.write("\t".join(values[c] for c in V4_COLUMNS) + "\n")


def test_v4_combined_layout(small, tmp_path):
    raw = _raw_rows(small)[:40]
    path = tmp_path / "bold_v4.tsv"
    _write_v4(path, raw)
    assert detect_format(path) == "bold"
    recs = read_records(path).records.set_index("record_id")
    assert len(recs) == 40
    for i, row in enumerate(raw):
        r = recs.loc[row["processid"]]
        assert r["dna_barcode"] == row["dna_barcode"]  # gaps removed, upper-cased
        assert r["genus"] == row["genus"] and r["order"] == row["order"]
        if i % 5 == 0:
            assert pd.isna(r["species"])  # BOLD's " " (missing) -> NA, not " "
        else:
            assert r["species"] == row["species"]
    assert "catalognum" in recs.columns and "order_name" not in recs.columns


def test_bcdm_layout_with_its_own_record_id(tmp_path):
    path = tmp_path / "bcdm.tsv"
    cols = ["processid", "record_id", "sampleid", "bin_uri", "kingdom", "phylum", "class", "order", "family", "genus",
            "species", "identification_rank", "nuc", "nuc_basecount", "marker_code"]
    rows = [["AB1-19", "AB1-19.COI-5P", "S1", "BOLD:AAA0001", "Animalia", "Arthropoda", "Insecta", "Diptera",
             "Culicidae", "Aedes", "Aedes aegypti", "species", "ACGT-ACGT", "8", "COI-5P"],
            ["AB2-19", "AB2-19.ITS", "S2", "", "Animalia", "Arthropoda", "Insecta", "Diptera", "Culicidae", "", "",
             "family", "ACGTAA", "6", "ITS"]]
    path.write_text("\n".join("\t".join(r) for r in [cols, *rows]) + "\n", encoding="utf-8")
    result = read_records(path, on_error="skip")
    assert result.records["record_id"].tolist() == ["AB1-19"]
    assert result.records["bold_record_id"].tolist() == ["AB1-19.COI-5P"]
    assert result.records["dna_barcode"].tolist() == ["ACGTACGT"]
    assert result.rejects.to_frame()["kind"].tolist() == ["marker"]
    kept = read_records(path, marker=None).records
    assert kept["record_id"].tolist() == ["AB1-19", "AB2-19"] and pd.isna(kept["genus"].iat[1])


def test_other_marker_raises_naming_record(small, tmp_path):
    text = small.read_text(encoding="utf-8").splitlines()
    cols = text[0].split("\t")
    parts = text[5].split("\t")
    parts[cols.index("marker")] = "COI-3P"
    text[5] = "\t".join(parts)
    path = tmp_path / "mixed.tsv"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"record {parts[0]} has marker 'COI-3P', not 'COI-5P'"):
        read_records(path)
    result = read_records(path, on_error="skip")
    assert result.n_read == 480 and len(result.records) == 479
    assert result.rejects.to_frame()["row"].tolist() == [5]


def test_not_bold_is_refused(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tb\n1\t2\n")
    with pytest.raises(DataError, match="not a BOLD export"):
        read_records(path, format="bold")


def test_unknown_option_suggests(small):
    with pytest.raises(DataError, match="did you mean 'marker'"):
        read_records(small, markr="COI-5P")
