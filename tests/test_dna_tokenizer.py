"""KmerTokenizer against hand-computed references (BarcodeBERT/CLIBD 5-mer scheme, reference section 1.4)."""
from __future__ import annotations

import itertools

import pytest
import torch

from clibd_toolkit.dna import KmerTokenizer, MASK_ID, UNK_ID
from clibd_toolkit.errors import DataError


def kmer_id(kmer: str) -> int:
    """Independent reference: position in itertools.product('ACGT', repeat=5) after the 3 special tokens."""
    return 3 + ["".join(p) for p in itertools.product("ACGT", repeat=len(kmer))].index(kmer)


def test_vocabulary_is_clibd_1027_with_specials_first():
    tok = KmerTokenizer()
    assert tok.vocab_size == 1027
    assert [tok.vocab[s] for s in ("<MASK>", "<CLS>", "<UNK>")] == [0, 1, 2]
    assert tok.vocab["AAAAA"] == 3 and tok.vocab["AAAAC"] == 4 and tok.vocab["TTTTT"] == 1026
    assert tok.n_tokens == 133  # 660 / 5 = 132 k-mers + the prefix id 0


def test_hand_computed_example_with_padding():
    tok = KmerTokenizer()
    # 12 nt -> k-mers ACGTA, CCGTT, GG+NNN (padding N -> <UNK>), then 129 all-N k-mers
    enc = tok.encode(["ACGTACCGTTGG"])
    ids = enc.input_ids[0].tolist()
    assert ids[:4] == [MASK_ID, kmer_id("ACGTA"), kmer_id("CCGTT"), UNK_ID]
    assert ids[4:] == [UNK_ID] * 129
    assert len(ids) == 133
    # hand values: ACGTA = 0*256 + 1*64 + 2*16 + 3*4 + 0 = 108 (+3); CCGTT = 1*256+1*64+2*16+3*4+3 = 367 (+3)
    assert ids[1] == 111 and ids[2] == 370
    # attention mask: prefix + the 3 k-mers that start inside the 12-nt sequence
    assert enc.attention_mask[0].tolist() == [1, 1, 1, 1] + [0] * 129


@pytest.mark.parametrize(
    "raw, expected_first_kmers",
    [
        ("acgtaccgtt", ["ACGTA", "CCGTT"]),  # lowercase
        ("ACG-TA.CCGTT", ["ACGTA", "CCGTT"]),  # gaps removed before cutting
        ("ACGUACCGUU", ["ACGTA", "CCGTT"]),  # RNA U read as T
        ("ACGTA\nCCG TT\r\n", ["ACGTA", "CCGTT"]),  # whitespace and line breaks
        ("ACGNACCGTT", ["<UNK>", "CCGTT"]),  # N inside a k-mer -> <UNK>
        ("ACGTRCCGTY", ["<UNK>", "<UNK>"]),  # IUPAC ambiguity codes -> <UNK>
    ],
)
def test_cleaning_and_unknown_kmers(raw, expected_first_kmers):
    tok = KmerTokenizer()
    ids = tok.encode([raw]).input_ids[0, 1:3].tolist()
    expected = [UNK_ID if k == "<UNK>" else kmer_id(k) for k in expected_first_kmers]
    assert ids == expected


def test_long_sequence_is_truncated_to_660():
    tok = KmerTokenizer()
    seq = "ACGTA" * 200  # 1000 nt
    enc = tok.encode([seq])
    assert enc.input_ids.shape == (1, 133)
    assert enc.input_ids[0, 1:].tolist() == [kmer_id("ACGTA")] * 132
    assert int(enc.attention_mask.sum()) == 133


def test_non_multiple_max_length_drops_partial_tail():
    tok = KmerTokenizer(k=4, max_length=10)  # 2 full 4-mers; the last 2 nt are not a k-mer
    assert tok.n_tokens == 3 and tok.vocab_size == 3 + 256
    ids = tok.encode(["ACGTTTTTGG"]).input_ids[0].tolist()
    assert ids == [0, kmer_id("ACGT"), kmer_id("TTTT")]


@pytest.mark.parametrize("bad, match", [
    ("", "empty barcode"),
    ("ACG", "shorter than one 5-mer"),
    ("ACGTXQZ", "invalid character"),
    ("MKVLAAGIW" * 3, "invalid character"),  # protein letters (E, I, L, ... are not IUPAC nucleotide codes)
    ("ACGTÄACGT", "invalid character"),
])
def test_bad_barcodes_raise_with_record_id(bad, match):
    with pytest.raises(DataError, match=match) as info:
        KmerTokenizer().encode([bad], ids=["REC-7"])
    assert "REC-7" in str(info.value)


def test_batch_encoding_matches_one_by_one():
    tok = KmerTokenizer()
    seqs = ["ACGTACGTAC" * 30, "TTTTTGGGGG", "ACGNN" * 200]
    batch = tok.encode(seqs).input_ids
    singles = torch.cat([tok.encode([s]).input_ids for s in seqs])
    assert torch.equal(batch, singles)


def test_tokenize_returns_kmer_strings():
    assert KmerTokenizer().tokenize("ACGTACCGTT")[:3] == ["ACGTA", "CCGTT", "<UNK>"]


def test_kmer_bag_counts_overlapping_kmers_and_ignores_the_start_offset():
    tok = KmerTokenizer()
    bag = tok.kmer_bag(["ACGTACGTAN", "CGTACGTA", "AAAAAAA"])
    # hand count: ACGTA x2, CGTAC, GTACG, TACGT (CGTAN holds N: skipped) -> norm sqrt(4 + 1 + 1 + 1)
    first = {tok.vocab[k] - 3: v for k, v in {"ACGTA": 2, "CGTAC": 1, "GTACG": 1, "TACGT": 1}.items()}
    expected = torch.zeros(1024)
    for i, v in first.items():
        expected[i] = v
    assert torch.allclose(bag[0], expected / expected.norm())
    # the same read starting one base later shares every k-mer but one occurrence of ACGTA
    assert float(bag[0] @ bag[1]) > 0.9
    assert torch.allclose(bag[2], torch.nn.functional.one_hot(torch.tensor(0), 1024).float())
