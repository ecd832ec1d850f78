"""Property-based tests (issue 7 fuzzing): arbitrary input to the tokenizer, the FASTA/TSV readers and the splitter
either gives a consistent result or raises the toolkit's own error (ClibdError), never an unhandled exception."""
from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clibd_toolkit.dna import KmerTokenizer
from clibd_toolkit.errors import ClibdError
from clibd_toolkit.readers import read_records
from clibd_toolkit.records import MAX_BARCODE_LENGTH
from clibd_toolkit.schema import IUPAC_AMBIGUITY, NUCLEOTIDES, SPLITS
from clibd_toolkit.splits import SplitConfig, assign_splits

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID = set(NUCLEOTIDES + IUPAC_AMBIGUITY)
TOKENIZER = KmerTokenizer()
KMER_INDEX = {"".join(p): i + 3 for i, p in enumerate(itertools.product("ACGT", repeat=5))}

dna_like = st.text(alphabet="ACGTacgtNnRYU-. \n\r\t", max_size=40)
any_text = st.text(max_size=40)
lines = st.one_of(
    st.sampled_from([">", ">id1", ">id1|Aedes aegypti|COI-5P", ">id2|Culicidae|COI-5P", ">id3;Insecta;Diptera;"
                     "Culicidae;Aedes;Aedes aegypti", ">x k__A;o__B;s__", ">id4|x|ITS", ";comment", ""]),
    dna_like, any_text,
    st.builds(lambda s: ">" + s, any_text),
)


def _consistent(result) -> None:
    recs = result.records
    assert result.n_read == len(recs) + len(result.rejects)
    assert recs["record_id"].notna().all() and recs["record_id"].is_unique
    assert (recs["record_id"].str.len() > 0).all()
    for seq, img in zip(recs["dna_barcode"], recs["image"]):
        assert not (pd.isna(seq) and pd.isna(img))
        if not pd.isna(seq):
            assert set(seq) <= VALID and 0 < len(seq) <= MAX_BARCODE_LENGTH
    assert recs["split"].dropna().isin(SPLITS).all()
    rej = result.rejects.to_frame()
    assert rej["reason"].str.len().gt(0).all()


def _naive_ids(seq: str) -> list[int]:
    seq = (seq + "N" * 660)[:660]
    ids = [0]
    for i in range(0, 660, 5):
        kmer = seq[i:i + 5]
        ids.append(KMER_INDEX.get(kmer, 2))
    return ids


@FUZZ
@given(st.one_of(any_text, dna_like, st.binary(max_size=40)))
def test_tokenizer_arbitrary_input(value):
    try:
        enc = TOKENIZER.encode([value], ids=["fuzz"])
    except ClibdError as exc:
        assert "fuzz" in str(exc)
        return
    ids = enc.input_ids
    assert tuple(ids.shape) == (1, TOKENIZER.n_tokens)
    assert int(ids.min()) >= 0 and int(ids.max()) < TOKENIZER.vocab_size


@FUZZ
@given(st.text(alphabet="ACGT", min_size=5, max_size=700))
def test_tokenizer_matches_naive_kmer_indexing(seq):
    assert TOKENIZER.encode([seq]).input_ids[0].tolist() == _naive_ids(seq)


def _read(path: Path, **kwargs):
    try:
        return read_records(path, **kwargs)
    except ClibdError:
        return None


@FUZZ
@given(st.lists(lines, max_size=25), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_fasta_reader_arbitrary_text(body, newline, gz):
    import gzip

    text = newline.join(body)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("f.fasta.gz" if gz else "f.fasta")
        data = text.encode("utf-8", errors="surrogatepass")
        path.write_bytes(gzip.compress(data) if gz else data)
        skipped = _read(path, format="fasta", on_error="skip")
        strict = _read(path, format="fasta")
        if skipped is not None:
            _consistent(skipped)
            if strict is not None:  # no error raised: nothing was rejected, and both agree
                assert len(skipped.rejects) == 0
                assert strict.records["record_id"].tolist() == skipped.records["record_id"].tolist()
        else:
            assert strict is None


@FUZZ
@given(st.binary(max_size=200))
def test_fasta_reader_binary_garbage(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.fasta"
        path.write_bytes(data)
        result = _read(path, format="fasta", on_error="skip")
        if result is not None:
            _consistent(result)


cells = st.one_of(st.sampled_from(["", "NA", "not_classified", "Aedes aegypti", "ACGT", "acgt-n", "train", "tran",
                                   "r1", "r2", "img.jpg", "../x.jpg"]), st.text(alphabet=st.characters(
                                       blacklist_categories=("Cs",), blacklist_characters="\t\n\r\x00"), max_size=12))
columns = st.lists(st.sampled_from(["record_id", "dna_barcode", "species", "genus", "family", "order", "split",
                                    "image", "bin_uri", "extra", "processid", "nucleotides"]),
                   min_size=1, max_size=6, unique=True)


@FUZZ
@given(columns, st.data())
def test_tsv_reader_arbitrary_tables(cols, data):
    rows = data.draw(st.lists(st.lists(cells, min_size=len(cols), max_size=len(cols)), max_size=15))
    text = "\n".join("\t".join(r) for r in [cols, *rows]) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.tsv"
        path.write_text(text, encoding="utf-8")
        skipped = _read(path, format="table", on_error="skip")
        strict = _read(path, format="table")
        if skipped is not None:
            _consistent(skipped)
            if strict is not None:
                assert len(skipped.rejects) == 0 and len(strict.records) == len(skipped.records)


@FUZZ
@given(st.lists(st.one_of(st.none(), st.sampled_from([f"Sp {i}" for i in range(12)])), max_size=120),
       st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.2, 0.5, 0.9]), st.integers(2, 12),
       st.sampled_from([(0.7, 0.1, 0.1, 0.1), (1.0, 0.0, 0.0, 0.0), (0.25, 0.25, 0.25, 0.25)]),
       st.sampled_from([0.1, 0.5, 0.9]), st.sampled_from([0.0, 0.5, 1.0]))
def test_splitter_arbitrary_species(species, seed, unseen, tail, seen_fr, query, val):
    recs = pd.DataFrame({"record_id": [f"r{i}" for i in range(len(species))], "species": species})
    cfg = SplitConfig(seed=seed, unseen_species_fraction=unseen, tail_threshold=tail, seen_fractions=seen_fr,
                      unseen_query_fraction=query, unseen_val_fraction=val)
    out = assign_splits(recs, cfg)
    assert len(out) == len(recs) and out["split"].isin(SPLITS).all()
    assert (out["species"].isna() == (out["split"] == "pretrain")).all()
    groups = {
        "seen": {"train", "val_seen", "test_seen", "seen_keys"},
        "val_unseen": {"val_unseen", "val_unseen_keys"},
        "test_unseen": {"test_unseen", "test_unseen_keys"},
        "single": {"single_species"},
    }
    owner = {}
    for sp, split in zip(out["species"], out["split"]):
        if pd.isna(sp):
            continue
        group = next(g for g, names in groups.items() if split in names)
        assert owner.setdefault(sp, group) == group  # each species belongs to exactly one group


