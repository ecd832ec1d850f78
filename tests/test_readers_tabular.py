"""CSV/TSV/Parquet tables with any column names and an image folder; table bad input (issue 7)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clibd_toolkit.errors import DataError
from clibd_toolkit.readers import detect_format, iter_record_chunks, read_records


def _csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# --- real images + a spreadsheet ------------------------------------------------------------------------------


def test_real_thumbnails_with_their_labels_csv(shared_data):
    folder = shared_data / "bioscan1m-retrieval-thumbs"
    result = read_records(folder / "labels.csv", columns={"record_id": "image_id"})
    recs = result.records
    labels = pd.read_csv(folder / "labels.csv", dtype=str)
    assert len(recs) == len(labels) == 136
    assert recs["record_id"].tolist() == labels["image_id"].tolist()
    assert recs["species"].tolist() == labels["species"].tolist()
    assert all(Path(p).is_file() and Path(p).parent == folder / "images" for p in recs["image"])
    assert recs["species"].nunique() == 54 and recs["order"].nunique() == 8  # README counts


def test_user_spreadsheet_with_own_column_names_and_image_root(shared_data, tmp_path):
    from clibd_toolkit.images import load_image

    images = shared_data / "bioscan1m-retrieval-thumbs" / "images"
    labels = pd.read_csv(shared_data / "bioscan1m-retrieval-thumbs" / "labels.csv", dtype=str).head(12)
    sheet = pd.DataFrame({"Sample ID": labels["image_id"], "Photo": [Path(p).name for p in labels["image"]],
                          "Ordnung": labels["order"], "Familie": labels["family"], "Art": labels["species"],
                          "Notes": "field note"})
    path = tmp_path / "my survey.tsv"
    sheet.to_csv(path, sep="\t", index=False)
    recs = read_records(path, image_root=images, columns={
        "record_id": "Sample ID", "image": "Photo", "order": "Ordnung", "family": "Familie", "species": "Art"}).records
    assert recs["family"].tolist() == labels["family"].tolist()
    assert recs["Notes"].eq("field note").all()  # unmapped columns are kept under their own names
    img = load_image(recs["image"].iat[0], record_id=recs["record_id"].iat[0])
    assert img.size == (159, 159) and img.mode == "RGB"


def test_mapping_errors_suggest(tmp_path):
    path = _csv(tmp_path / "t.csv", "Sample ID,Seq\ns1,ACGT\n")
    with pytest.raises(DataError, match=r"mapped column 'Sample_ID' .* did you mean 'Sample ID'"):
        read_records(path, columns={"record_id": "Sample_ID", "dna_barcode": "Seq"})
    with pytest.raises(DataError, match="unknown canonical column 'recordid'; did you mean 'record_id'"):
        read_records(path, columns={"recordid": "Sample ID"})


def test_missing_required_column(tmp_path):
    path = _csv(tmp_path / "t.csv", "sample,seq\ns1,ACGT\n")
    with pytest.raises(DataError, match="missing required column 'record_id'"):
        read_records(path)


def test_known_aliases_are_used(tmp_path):
    path = _csv(tmp_path / "t.csv", "processid,nucleotides,bin\nP1,acgt,BOLD:AAA1\n")
    recs = read_records(path).records
    assert recs[["record_id", "dna_barcode", "bin_uri"]].iloc[0].tolist() == ["P1", "ACGT", "BOLD:AAA1"]


def test_empty_and_header_only_files(tmp_path):
    with pytest.raises(DataError, match="is empty"):
        read_records(_csv(tmp_path / "e.csv", ""))
    with pytest.raises(DataError, match="holds no records"):
        read_records(_csv(tmp_path / "h.csv", "record_id,dna_barcode\n"))


def test_wrong_delimiter(tmp_path):
    tsv_named_csv = _csv(tmp_path / "t.csv", "record_id\tdna_barcode\nr1\tACGT\n")
    assert read_records(tsv_named_csv).records["record_id"].tolist() == ["r1"]  # detected from the header
    with pytest.raises(DataError, match="tab-separated .*wrong delimiter"):
        read_records(tsv_named_csv, sep=",")
    semi = _csv(tmp_path / "s.csv", "record_id;dna_barcode\nr1;ACGT\n")
    assert read_records(semi).records["dna_barcode"].tolist() == ["ACGT"]


def test_byte_order_mark(tmp_path):
    path = _csv(tmp_path / "bom.csv", "record_id,dna_barcode\nr1,ACGT\n", encoding="utf-8-sig")
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    recs = read_records(path).records
    assert recs.columns[0] == "record_id" and recs["record_id"].tolist() == ["r1"]


def test_duplicate_ids(tmp_path):
    path = _csv(tmp_path / "d.csv", "record_id,dna_barcode\nr1,ACGT\nr2,ACGT\nr1,AAAA\n")
    with pytest.raises(DataError, match=r"row 3 in .*duplicate record_id 'r1' \(first seen at row 1\)"):
        read_records(path)
    result = read_records(path, on_error="skip")
    assert result.records["record_id"].tolist() == ["r1", "r2"] and len(result.rejects) == 1


def test_placeholder_and_empty_taxa(tmp_path):
    path = _csv(tmp_path / "p.csv", "record_id,dna_barcode,order,family,genus,species\n"
                                     "r1,ACGT,Diptera,not_classified,NA,\n"
                                     "r2,ACGT,n/a, ,None,Aedes aegypti\n")
    recs = read_records(path).records
    assert recs["order"].tolist()[0] == "Diptera" and pd.isna(recs["order"].iat[1])
    assert recs[["family", "genus"]].isna().all().all()
    assert pd.isna(recs["species"].iat[0]) and recs["species"].iat[1] == "Aedes aegypti"


def test_genus_under_two_families(tmp_path):
    path = _csv(tmp_path / "g.csv", "record_id,dna_barcode,family,genus\n"
                                     "r1,ACGT,Culicidae,Aedes\nr2,ACGT,Culicidae,Aedes\nr3,ACGT,Muscidae,Aedes\n")
    with pytest.raises(DataError, match=r"record r3: genus 'Aedes' is placed under family 'Muscidae', but record r1 "
                                        r"placed it under family 'Culicidae'"):
        read_records(path)
    result = read_records(path, on_error="skip")
    assert result.records["record_id"].tolist() == ["r1", "r2"]
    assert result.rejects.to_frame()[["record_id", "kind"]].values.tolist() == [["r3", "lineage_conflict"]]
    assert len(read_records(path, lineage="ignore").records) == 3


def test_unicode_and_very_long_names(tmp_path):
    long_species = "Battaristis " + "MalaiseMetz" * 40
    df = pd.DataFrame({"record_id": ["ü-1", "日本-2"], "dna_barcode": ["ACGT", "ACGT"],
                       "family": ["Ænigmatidae", "Culicidae"], "species": ["Ænigma blattoides", long_species]})
    path = tmp_path / "u.csv"
    df.to_csv(path, index=False)
    recs = read_records(path).records
    assert recs["record_id"].tolist() == ["ü-1", "日本-2"]
    assert recs["species"].tolist() == ["Ænigma blattoides", long_species]


def test_parquet_streams_by_row_group(tmp_path):
    n = 25
    table = pa.table({"record_id": [f"r{i}" for i in range(n)], "dna_barcode": ["acgt"] * n,
                      "species": ["Aedes aegypti"] * n, "count": list(range(n))})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=10)
    assert detect_format(path) == "table"
    stream = iter_record_chunks(path, chunk_size=10)
    sizes = [len(c) for c in stream]
    assert sizes == [10, 10, 5] and stream.n_read == 25
    whole = read_records(path).records
    assert whole["count"].tolist() == list(range(n)) and whole["dna_barcode"].eq("ACGT").all()


def test_csv_streaming_keeps_row_numbers(tmp_path):
    rows = "".join(f"r{i},ACGT\n" for i in range(12)) + "r14,ACXT\n"
    path = _csv(tmp_path / "c.csv", "record_id,dna_barcode\n" + rows)
    stream = iter_record_chunks(path, chunk_size=5, on_error="skip")
    assert sum(len(c) for c in stream) == 12
    rej = stream.rejects.to_frame()
    assert rej["row"].tolist() == [13] and rej["record_id"].tolist() == ["r14"]  # data row 13 of the file


def test_image_paths_cannot_escape_root(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "out.jpg").symlink_to("/etc/hostname")  # a link inside the root pointing out
    path = _csv(tmp_path / "data" / "t.csv",
                "record_id,image\nr1,img/a.jpg\nr2,../secret.jpg\nr3,/etc/passwd\nr4,hdf5:///x.h5#g/0\n"
                "r5,hdf5://cube.h5#g/0\nr6,out.jpg\nr7,hdf5:///etc/shadow#x/0\nr8,hdf5:///etc/no-such-file#x/0\n")
    with pytest.raises(DataError, match="points outside the data root"):
        read_records(path)
    result = read_records(path, on_error="skip")
    assert result.records["record_id"].tolist() == ["r1", "r5"]
    assert result.records["image"].tolist() == [str(tmp_path / "data" / "img" / "a.jpg"),
                                                f"hdf5://{tmp_path / 'data' / 'cube.h5'}#g/0"]
    rejects = result.rejects.to_frame().set_index("record_id")
    assert sorted(rejects.index) == ["r2", "r3", "r4", "r6", "r7", "r8"]
    assert set(rejects["kind"]) == {"image_path"}
    # whether a file outside exists does not show in the message
    shadow, missing = (str(rejects.loc[r, "reason"]).replace(v, "V") for r, v in
                       (("r7", "hdf5:///etc/shadow#x/0"), ("r8", "hdf5:///etc/no-such-file#x/0")))
    assert shadow.replace("r7", "R") == missing.replace("r8", "R")


def test_folder_with_records_csv(tmp_path):
    out = tmp_path / "survey"
    (out / "images").mkdir(parents=True)
    _csv(out / "records.csv", "record_id,dna_barcode,image,split\nr1,ACGT,images/r1.png,train\n")
    assert detect_format(out) == "table"
    recs = read_records(out).records
    assert recs["image"].iat[0] == str(out / "images" / "r1.png") and recs["split"].iat[0] == "train"


def test_rejects_from_cross_chunk_checks_carry_rows(tmp_path):
    path = _csv(tmp_path / "x.csv", "record_id,dna_barcode,family,genus\n"
                                     "a,ACGT,Culicidae,Aedes\nb,ACGT,Culicidae,Aedes\nc,ACGT,Muscidae,Aedes\na,ACGT,,\n")
    stream = iter_record_chunks(path, chunk_size=2, on_error="skip")
    assert [c["record_id"].tolist() for c in stream] == [["a", "b"]]
    rej = stream.rejects.to_frame()
    assert sorted(rej[["row", "record_id", "kind"]].values.tolist()) == [[3, "c", "lineage_conflict"],
                                                                          [4, "a", "duplicate_id"]]
    assert "__source_row__" not in read_records(path, on_error="skip").records.columns
