"""FASTA reader: header layouts, the never-guess rule, line endings, gzip and bad input (issue 7)."""
from __future__ import annotations

import csv
import gzip

import pandas as pd
import pytest

from clibd_toolkit.errors import DataError
from clibd_toolkit.readers import detect_format, iter_record_chunks, read_records
from clibd_toolkit.readers.fasta import parse_header


def _write(path, text, *, gz=False, crlf=False):
    data = text.replace("\n", "\r\n") if crlf else text
    if gz:
        with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
            fh.write(data)
    else:
        path.write_bytes(data.encode("utf-8"))
    return path


@pytest.mark.parametrize("header, expected", [
    # BOLD style: the lowest taxon fills only its own rank
    ("ABC1-19|Aedes aegypti|COI-5P", {"species": "Aedes aegypti"}),
    ("ABC1-19|Asynapta sp. 1|COI-5P|MN123", {"species": "Asynapta sp. 1"}),
    ("ABC1-19|Battaristis MalaiseMetz3348|COI-5P", {"species": "Battaristis MalaiseMetz3348"}),
    ("ABC1-19|gelBioLep01 BioLep743|COI-5P", {"species": "gelBioLep01 BioLep743"}),  # BIOSCAN interim name
    ("ABC1-19|Cecidomyiidae|COI-5P", {"family": "Cecidomyiidae"}),
    ("ABC1-19|Diptera|COI-5P", {}),      # one word of unknown rank: nothing filled
    ("ABC1-19|Asynapta|COI-5P", {}),
    ("ABC1-19||COI-5P", {}),
    # plain lineage ending at species
    ("ID1;Insecta;Diptera;Cecidomyiidae;Asynapta;Asynapta sp. 1",
     {"order": "Diptera", "family": "Cecidomyiidae", "genus": "Asynapta", "species": "Asynapta sp. 1"}),
    # a subfamily between family and genus: order is not provable, family is
    ("ID1;Insecta;Coleoptera;Carabidae;Harpalinae;Abax;Abax parallelus",
     {"family": "Carabidae", "genus": "Abax", "species": "Abax parallelus"}),
    # genus field that is not the binomial's first word is not taken as the genus
    ("ID1;Diptera;Culicidae;Culex;Aedes aegypti", {"family": "Culicidae", "species": "Aedes aegypti"}),
    # lineage ending above species
    ("ID1;Insecta;Diptera;Culicidae", {"family": "Culicidae"}),
    # rank-prefixed lineages
    ("ID1 k__Animalia;p__Arthropoda;c__Insecta;o__Diptera;f__Culicidae;g__Aedes;s__Aedes_aegypti",
     {"order": "Diptera", "family": "Culicidae", "genus": "Aedes", "species": "Aedes aegypti"}),
    ("ID1;o__Diptera;f__Culicidae;g__Aedes;s__aegypti",
     {"order": "Diptera", "family": "Culicidae", "genus": "Aedes", "species": "Aedes aegypti"}),
    ("ID1;o__Diptera;f__;g__;s__", {"order": "Diptera"}),
    ("ID1;tax=k:Animalia,o:Diptera,f:Culicidae,g:Aedes,s:Aedes_albopictus;",
     {"order": "Diptera", "family": "Culicidae", "genus": "Aedes", "species": "Aedes albopictus"}),
    # no taxonomy
    ("ID1", {}),
    ("MN123.1 Aedes aegypti isolate X cytochrome oxidase subunit I gene", {}),
])
def test_header_rules(header, expected):
    rec = parse_header(header)
    ranks = {r: rec[r] for r in ("order", "family", "genus", "species") if r in rec}
    assert ranks == expected
    assert rec["record_id"] in ("ABC1-19", "ID1", "MN123.1")


def test_lineage_ranks_and_lowest_rank_options():
    rec = parse_header("ID1;Insecta;Coleoptera;Carabidae;Harpalinae;Abax;Abax parallelus",
                       lineage_ranks=("class", "order", "family", "subfamily", "genus", "species"))
    assert (rec["order"], rec["subfamily"], rec["species"]) == ("Coleoptera", "Harpalinae", "Abax parallelus")
    assert parse_header("A|Asynapta|COI-5P", lowest_rank="genus")["genus"] == "Asynapta"
    with pytest.raises(DataError, match="lineage has 3 fields"):
        parse_header("ID1;a;b;c", lineage_ranks=("order", "family"))


def test_windows_line_endings_gzip_and_lowercase(tmp_path):
    text = ">A1|Aedes aegypti|COI-5P\nacgt-acgt\nnnac\n>A2|Culicidae|COI-5P\nACGU\n"
    plain = read_records(_write(tmp_path / "a.fasta", text)).records
    crlf = read_records(_write(tmp_path / "b.fas", text, crlf=True)).records
    gz = read_records(_write(tmp_path / "c.fa.gz", text, gz=True, crlf=True)).records
    nosuffix = read_records(_write(tmp_path / "d.dat", text, gz=True), format="fasta").records
    for recs in (crlf, gz, nosuffix):
        pd.testing.assert_frame_equal(recs[["record_id", "dna_barcode", "species", "family"]],
                                      plain[["record_id", "dna_barcode", "species", "family"]])
    assert plain["dna_barcode"].tolist() == ["ACGTACGTNNAC", "ACGT"]
    assert detect_format(tmp_path / "d.dat") == "fasta"  # first line starts with '>' (after gunzip)


def test_no_header(tmp_path):
    path = _write(tmp_path / "x.fasta", "ACGTACGT\nACGT\n")
    with pytest.raises(DataError, match=r"line 1: sequence text before the first '>' header"):
        read_records(path)
    result = read_records(path, on_error="skip")
    assert result.n_read == 1 and len(result.records) == 0 and result.rejects.to_frame()["kind"].tolist() == ["parse"]


def test_text_before_first_header_and_empty_records(tmp_path):
    path = _write(tmp_path / "x.fasta", "junk\n>A1\n\n>A2|Aedes aegypti|COI-5P\nACGT\n>\nACGT\n>A4\n")
    with pytest.raises(DataError, match="sequence text before"):
        read_records(path)
    result = read_records(path, on_error="skip")
    assert result.records["record_id"].tolist() == ["A2"]
    rejects = result.rejects.to_frame()
    assert result.n_read == 5 == len(result.records) + len(rejects)
    got = sorted(zip(rejects["row"].fillna(0).astype(int), rejects["record_id"].fillna("-"), rejects["kind"]))
    # rows are FASTA record numbers; the text before the first header has none
    assert got == [(0, "-", "parse"), (1, "A1", "no_modality"), (3, "", "empty_id"), (4, "A4", "no_modality")]
    assert "A1 (line 2) has an empty sequence" in " ".join(rejects["reason"])


def test_headers_without_taxonomy_load_with_missing_ranks(tmp_path):
    path = _write(tmp_path / "x.fasta", ">s1\nACGTAC\n>s2 some description\nACGTTT\n")
    recs = read_records(path).records
    assert recs["record_id"].tolist() == ["s1", "s2"]
    assert recs[["order", "family", "genus", "species"]].isna().all().all()
    assert recs["description"].tolist()[1] == "some description"


def test_empty_file_and_duplicates(tmp_path):
    with pytest.raises(DataError, match="holds no records"):
        read_records(_write(tmp_path / "e.fasta", ""))
    dup = _write(tmp_path / "d.fasta", ">a\nACGT\n>a\nACGG\n")
    with pytest.raises(DataError, match="duplicate record_id 'a'"):
        read_records(dup)


def test_bad_barcode_names_record(tmp_path):
    path = _write(tmp_path / "p.fasta", ">ok\nACGT\n>prot\nMKVLAAGIW\n")
    with pytest.raises(DataError, match="record prot: barcode has invalid character"):
        read_records(path)


def test_streaming_chunks_and_cross_chunk_duplicates(tmp_path):
    body = "".join(f">r{i}\nACGTACGT\n" for i in range(25)) + ">r3\nACGT\n"
    path = _write(tmp_path / "s.fasta", body)
    stream = iter_record_chunks(path, chunk_size=10, on_error="skip")
    sizes = [len(c) for c in stream]
    assert sizes == [10, 10, 5]
    assert stream.n_read == 26 and stream.rejects.to_frame()["kind"].tolist() == ["duplicate_id"]


def test_bold_style_fasta_from_real_records_roundtrip(shared_data, tmp_path):
    """A FASTA written from the real BOLD records in BOLD's download layout reads back to the same ids, barcodes
    and species (and nothing above species: the header gives only the lowest taxon)."""
    src = shared_data / "bold-insect-coi" / "bold_insect_coi5p_small.tsv"
    with open(src, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    lines = []
    for row in rows:
        seq = row["dna_barcode"]
        lines.append(f">{row['processid']}|{row['species']}|COI-5P|{row['genbank_accession']}")
        lines += [seq[i:i + 60] for i in range(0, len(seq), 60)]
    path = _write(tmp_path / "bold.fasta.gz", "\n".join(lines) + "\n", gz=True)
    recs = read_records(path).records.set_index("record_id")
    assert len(recs) == len(rows)
    for row in rows:
        r = recs.loc[row["processid"]]
        assert r["dna_barcode"] == row["dna_barcode"] and r["species"] == row["species"]
        assert pd.isna(r["genus"]) and pd.isna(r["order"])
