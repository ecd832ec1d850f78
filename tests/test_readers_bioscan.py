"""BIOSCAN-5M and BIOSCAN-1M downloads read through bioscan-dataset's loaders, on files written in the exact
metadata layouts (columns as in bioscan_dataset's COLUMN_DTYPES / the BIOSCAN metadata READMEs) with real BIOSCAN
thumbnails as images and real BOLD barcodes as DNA (same-format data, not same-specimen pairs)."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from clibd_toolkit.errors import DataError, DataFileError
from clibd_toolkit.readers import detect_format, read_records
from clibd_toolkit.readers.bioscan import BIOSCAN5M_SPLITS, CLIBD1M_SPLITS, _torchvision_stand_ins


COLUMNS_5M = ["processid", "sampleid", "taxon", "phylum", "class", "order", "family", "subfamily", "genus", "species",
              "dna_bin", "dna_barcode", "country", "province_state", "coord-lat", "coord-lon",
              "image_measurement_value", "area_fraction", "scale_factor", "inferred_ranks", "split",
              "index_bioscan_1M_insect", "chunk"]
COLUMNS_1M = ["sampleid", "processid", "uri", "name", "phylum", "class", "order", "family", "subfamily", "tribe",
              "genus", "species", "subspecies", "nucraw", "image_file", "large_diptera_family",
              "medium_diptera_family", "small_diptera_family", "large_insect_order", "medium_insect_order",
              "small_insect_order", "chunk_number", "copyright_license", "copyright_holder", "copyright_institution",
              "copyright_contact", "photographer", "author"]
SPLITS_5M = list(BIOSCAN5M_SPLITS)
SPLITS_1M = list(CLIBD1M_SPLITS)


@pytest.fixture(scope="module")
def sources(shared_data):
    labels = pd.read_csv(shared_data / "bioscan1m-retrieval-thumbs" / "labels.csv", dtype=str)
    with open(shared_data / "bold-insect-coi" / "bold_insect_coi5p_small.tsv", encoding="utf-8") as fh:
        bold = list(csv.DictReader(fh, delimiter="\t"))
    bold.sort(key=lambda r: -len(r["dna_barcode"]))  # the first barcode is longer than 660 nt
    assert len(bold[0]["dna_barcode"]) > 660
    thumbs = shared_data / "bioscan1m-retrieval-thumbs"
    return labels, bold, thumbs


def _save_jpeg(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").save(dst, format="JPEG", quality=90)


@pytest.fixture(scope="module")
def bioscan5m_root(sources, tmp_path_factory):
    labels, bold, thumbs = sources
    root = tmp_path_factory.mktemp("bio5m")
    base = root / "bioscan5m"
    meta = base / "metadata" / "csv"
    meta.mkdir(parents=True)
    rows = []
    for i in range(16):
        split = SPLITS_5M[i % 8]
        lab = labels.iloc[i]
        pid = f"BIOSCAN{i:04d}-22"
        chunk = f"{i % 3:02d}" if split == "pretrain" else ""
        labelled = split != "pretrain"
        rows.append({"processid": pid, "sampleid": f"BIOUG{i:05d}-A01", "taxon": lab["species"] if labelled else lab["family"],
                     "phylum": "Arthropoda", "class": "Insecta", "order": lab["order"], "family": lab["family"],
                     "subfamily": "", "genus": lab["genus"] if labelled else "",
                     "species": lab["species"] if labelled else "", "dna_bin": f"BOLD:AAA{i:04d}",
                     "dna_barcode": bold[i]["dna_barcode"], "country": "Canada", "province_state": "Ontario",
                     "coord-lat": "43.5", "coord-lon": "-80.2", "image_measurement_value": "1234",
                     "area_fraction": "0.1", "scale_factor": "1.5", "inferred_ranks": "0", "split": split,
                     "index_bioscan_1M_insect": str(i) if i % 2 else "", "chunk": chunk})
        img_dir = base / "images" / "cropped_256" / split / chunk if chunk else base / "images" / "cropped_256" / split
        _save_jpeg(thumbs / lab["image"], img_dir / f"{pid}.jpg")
    pd.DataFrame(rows, columns=COLUMNS_5M).to_csv(meta / "BIOSCAN_5M_Insect_Dataset_metadata.csv", index=False)
    return root, rows


def test_torchvision_stand_ins_are_temporary():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torchvision is installed: no stand-ins are needed")
    with _torchvision_stand_ins():
        from torchvision.datasets.utils import check_integrity, download_url
        from torchvision.datasets.vision import VisionDataset

        assert VisionDataset(root="x").root == "x"
        assert check_integrity(__file__) and not check_integrity(__file__, md5="0" * 32)
        with pytest.raises(DataError, match="downloading BIOSCAN data needs torchvision"):
            download_url("https://example.org/x.zip", ".")
    assert not any(name == "torchvision" or name.startswith("torchvision.") for name in sys.modules)
    with pytest.raises(ImportError):
        import torchvision  # noqa: F401,F811


def test_bioscan5m_download_layout(bioscan5m_root, sources):
    from clibd_toolkit.images import load_image

    root, rows = bioscan5m_root
    assert detect_format(root) == "bioscan5m"
    assert not any(n.startswith("torchvision") for n in sys.modules)  # the shim left nothing behind
    result = read_records(root)
    recs = result.records.set_index("record_id")
    assert result.n_read == 16 and len(recs) == 16
    for row in rows:
        r = recs.loc[row["processid"]]
        assert r["split"] == BIOSCAN5M_SPLITS[row["split"]] and r["bioscan_split"] == row["split"]
        assert r["dna_barcode"] == row["dna_barcode"][:660]  # bioscan-dataset truncates to 660 nt by default
        assert r["bin_uri"] == row["dna_bin"] and r["order"] == row["order"]
        assert pd.isna(r["species"]) if row["split"] == "pretrain" else r["species"] == row["species"]
        expected = Path(root, "bioscan5m", "images", "cropped_256", row["split"], row["chunk"], row["processid"] + ".jpg")
        assert Path(r["image"]) == expected
    img = load_image(recs["image"].iloc[0])
    assert img.size == (159, 159)
    assert {"val": "val_seen", "test": "test_seen", "key_unseen": "unseen_keys"}.items() <= BIOSCAN5M_SPLITS.items()


def test_bioscan5m_metadata_file_split_filter_and_options(bioscan5m_root):
    root, rows = bioscan5m_root
    meta = root / "bioscan5m" / "metadata" / "csv" / "BIOSCAN_5M_Insect_Dataset_metadata.csv"
    assert detect_format(meta) == "bioscan5m"
    sub = read_records(meta, split="pretrain+train").records
    assert sorted(sub["split"].unique()) == ["pretrain", "train"] and len(sub) == 4
    no_img = read_records(meta, images=False, max_nucleotides=None).records
    assert no_img["image"].isna().all()
    assert no_img["dna_barcode"].str.len().max() > 660
    with pytest.raises(DataFileError, match="images=False"):
        read_records(meta, image_package="original_full")
    with pytest.raises(DataError, match="bioscan-dataset could not load"):
        read_records(meta, split="nonsense")


@pytest.fixture(scope="module")
def bioscan1m_root(sources, tmp_path_factory):
    labels, bold, thumbs = sources
    root = tmp_path_factory.mktemp("bio1m")
    base = root / "bioscan1m"
    part = base / "CLIBD_partitioning"
    part.mkdir(parents=True)
    rows, members = [], {s: [] for s in SPLITS_1M}
    for i in range(20):
        split = SPLITS_1M[i % 10]
        lab = labels.iloc[20 + i]
        sid = f"BIOUG{70000 + i}-B0{i % 9}"
        chunk = 1 + i % 2
        labelled = split != "no_split"
        rows.append({"sampleid": sid, "processid": f"BIOSC{i:03d}-21", "uri": f"BOLD:ACX{i:04d}", "name": lab["order"],
                     "phylum": "Arthropoda", "class": "Insecta", "order": lab["order"], "family": lab["family"],
                     # some subfamilies present, some not (as in the real file; bioscan-dataset 1.3.0 on pandas 3
                     # fails when no record with a genus has a subfamily)
                     "subfamily": "not_classified" if i % 4 == 0 else lab["family"][:-4] + "inae",
                     "tribe": "not_classified",
                     "genus": "not_classified" if i == 3 else (lab["genus"] if labelled else "not_classified"),
                     "species": lab["species"] if labelled else "not_classified", "subspecies": "not_classified",
                     "nucraw": bold[40 + i]["dna_barcode"], "image_file": f"{sid}.jpg",
                     "large_diptera_family": "no_split", "medium_diptera_family": "no_split",
                     "small_diptera_family": "no_split", "large_insect_order": "train", "medium_insect_order": "train",
                     "small_insect_order": "train", "chunk_number": str(chunk), "copyright_license": "CC BY 3.0",
                     "copyright_holder": "CBG Photography Group", "copyright_institution": "Centre for Biodiversity Genomics",
                     "copyright_contact": "ccdbcol@uoguelph.ca", "photographer": "CBG Photography Group",
                     "author": "CBG"})
        members[split].append(sid)
        _save_jpeg(thumbs / lab["image"], base / "images" / "cropped_256" / f"part{chunk}" / f"{sid}.jpg")
    pd.DataFrame(rows, columns=COLUMNS_1M).to_csv(base / "BIOSCAN_Insect_Dataset_metadata.tsv", sep="\t", index=False)
    for split, ids in members.items():
        (part / f"{split}.txt").write_text("".join(f"{s}\n" for s in ids))
    return root, rows, members


def test_bioscan1m_with_clibd_partition(bioscan1m_root):
    root, rows, members = bioscan1m_root
    assert detect_format(root) == "bioscan1m"
    recs = read_records(root).records.set_index("record_id")
    assert len(recs) == 20
    split_of = {sid: s for s, ids in members.items() for sid in ids}
    for row in rows:
        r = recs.loc[row["processid"]]
        assert r["split"] == CLIBD1M_SPLITS[split_of[row["sampleid"]]]
        assert r["dna_barcode"] == row["nucraw"][:660] and r["bin_uri"] == row["uri"]
        assert r["sampleid"] == row["sampleid"]
        assert Path(r["image"]).is_file() and Path(r["image"]).parent.name == f"part{row['chunk_number']}"
        if row["species"] == "not_classified":
            assert pd.isna(r["species"])
    # bioscan-dataset's own fix: a missing genus is taken from the species name (its loader, not ours)
    r3 = recs.loc[rows[3]["processid"]]
    assert r3["genus"] == rows[3]["species"].split(" ")[0]
    assert recs["split"].value_counts().to_dict() == {CLIBD1M_SPLITS[s]: 2 for s in SPLITS_1M}


def test_bioscan1m_without_partition_leaves_split_missing(bioscan1m_root, tmp_path):
    import shutil

    root, rows, _ = bioscan1m_root
    meta = tmp_path / "BIOSCAN_Insect_Dataset_metadata.tsv"
    shutil.copy(root / "bioscan1m" / "BIOSCAN_Insect_Dataset_metadata.tsv", meta)  # no CLIBD_partitioning next to it
    recs = read_records(meta, images=False).records
    assert len(recs) == 20 and recs["split"].isna().all()
    with pytest.raises(DataFileError, match="CLIBD partition folder .* does not exist"):
        read_records(meta, clibd_partitioning_path=tmp_path / "absent", images=False)
    with pytest.raises(DataError, match="could not load"):
        read_records(meta, partitioning_version="clibd", images=False)
    # a BIOSCAN-1M classification partition filters rows but is not a retrieval split
    part = read_records(root, partitioning_version="large_insect_order", split="train", images=False).records
    assert len(part) == 20 and part["split"].isna().all()
