"""DNA barcode tokenisation: BarcodeBERT's non-overlapping k-mer scheme (reference section 1.4).

For the CLIBD 5-mer checkpoint:

1. truncate the barcode to 660 nt, or right-pad it with ``N`` to 660 nt;
2. cut it into non-overlapping 5-mers (stride 5): 132 tokens;
3. a k-mer of only A/C/G/T maps to its index in ``itertools.product("ACGT", repeat=5)`` plus 3; any k-mer holding
   ``N``, another IUPAC code or any other symbol maps to ``<UNK>``;
4. prepend id 0 (``<MASK>``, which CLIBD uses as a CLS-like first token): 133 ids.

The vocabulary is ``<MASK>``=0, ``<CLS>``=1, ``<UNK>``=2, then the 4**k k-mers: 1,027 ids for k=5. No attention
mask is used by CLIBD (padding k-mers are attended); :attr:`KmerEncoding.attention_mask` is provided for models
that want one (``ModelConfig.dna_attention_mask``).

What is cut into k-mers (``clean``):

- ``clean=True`` (the toolkit's own models): the cleaned barcode, upper-case, ``U`` -> ``T``, gaps (``-``, ``.``) and
  whitespace removed (:func:`clibd_toolkit.records.clean_barcode`);
- ``clean=False`` (released CLIBD models, ``ModelConfig.dna_cleaning="raw"``): the barcode **as stored**, gaps kept in
  place, as CLIBD's ``PadSequence`` + ``KmerTokenizer`` see it: a gap shifts every later k-mer by one position, and
  each k-mer holding a gap becomes ``<UNK>``. Only line breaks/whitespace are removed and letters upper-cased
  (``U`` -> ``T``): the official pipeline would turn lower-case input into ``<UNK>`` k-mers, which no released model
  was trained on (BIOSCAN barcodes are upper-case), so a lower-case FASTA gets the embedding of its upper-case
  spelling instead of a meaningless one. Barcodes are still validated as in ``clean=True`` (same errors).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from .errors import DataError
from .records import clean_barcode, stored_barcode

SPECIAL_TOKENS = ("<MASK>", "<CLS>", "<UNK>")
MASK_ID, CLS_ID, UNK_ID = 0, 1, 2

# byte -> base code (A=0, C=1, G=2, T=3, everything else=4)
_CODE = np.full(256, 4, dtype=np.int64)
for _i, _c in enumerate("ACGT"):
    _CODE[ord(_c)] = _i


@dataclass(frozen=True)
class KmerEncoding:
    """Token ids of a batch of barcodes: ``input_ids`` and ``attention_mask``, both (n, n_tokens) int64."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor


class KmerTokenizer:
    """Non-overlapping k-mer tokenizer with BarcodeBERT/CLIBD's vocabulary.

    Args:
        k: k-mer length (CLIBD: 5).
        max_length: nucleotides kept; shorter barcodes are right-padded with ``N`` (CLIBD: 660).
        prefix_token: prepend id 0 (CLIBD's CLS-like first token).
        clean: cut the cleaned barcode (True) or the stored string with its gaps (False, released CLIBD models; see
            the module docstring).

    Example:
        >>> tok = KmerTokenizer()
        >>> tok.vocab_size, tok.n_tokens
        (1027, 133)
        >>> tok.encode(["ACGTA" * 3]).input_ids[0, :5].tolist()
        [0, 111, 111, 111, 2]
    """

    def __init__(self, k: int = 5, max_length: int = 660, prefix_token: bool = True, clean: bool = True):
        if not 1 <= k <= 8:
            raise DataError(f"k-mer length k={k} is out of range; expected 1..8")
        if max_length < k:
            raise DataError(f"max_length={max_length} is shorter than one k-mer (k={k})")
        self.k = k
        self.max_length = max_length
        self.prefix_token = prefix_token
        self.clean = clean
        self.kmers = ["".join(p) for p in itertools.product("ACGT", repeat=k)]
        self.vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
        self.vocab.update({kmer: i + len(SPECIAL_TOKENS) for i, kmer in enumerate(self.kmers)})
        self._weights = 4 ** np.arange(k - 1, -1, -1, dtype=np.int64)  # base-4 place values, first base highest

    # --- sizes -----------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(SPECIAL_TOKENS) + 4**self.k

    @property
    def n_kmers(self) -> int:
        return self.max_length // self.k

    @property
    def n_tokens(self) -> int:
        return self.n_kmers + (1 if self.prefix_token else 0)

    def __repr__(self) -> str:
        return (f"KmerTokenizer(k={self.k}, max_length={self.max_length}, prefix_token={self.prefix_token}, "
                f"clean={self.clean})")

    # --- encoding --------------------------------------------------------------------------------------------
    def _prepare(self, sequence: str, record_id: object) -> str:
        seq = clean_barcode(sequence, record_id=record_id)
        if not isinstance(seq, str):
            raise DataError(f"record {record_id}: empty barcode; a barcode needs at least {self.k} nucleotides",
                            record_id=None if record_id is None else str(record_id), value=sequence)
        if len(seq) < self.k:
            raise DataError(
                f"record {record_id}: barcode {seq!r} is {len(seq)} nt, shorter than one {self.k}-mer; "
                f"it carries no k-mer to encode", record_id=None if record_id is None else str(record_id), value=seq)
        if not self.clean:
            return stored_barcode(sequence)
        return seq

    def encode(self, sequences: Sequence[str], ids: Sequence[object] | None = None) -> KmerEncoding:
        """Encode barcodes (cleaned first: case, U->T, gaps and whitespace; with ``clean=False`` gaps stay).

        Args:
            sequences: barcodes.
            ids: record ids used in error messages (default: the position in ``sequences``).

        Raises:
            DataError: a barcode is empty, shorter than one k-mer, or holds non-nucleotide characters.
        """
        n = len(sequences)
        names = list(ids) if ids is not None else list(range(n))
        buf = np.full((n, self.max_length), ord("N"), dtype=np.uint8)
        lengths = np.zeros(n, dtype=np.int64)
        for i, (seq, rid) in enumerate(zip(sequences, names)):
            clean = self._prepare(seq, rid)[: self.max_length]
            raw = np.frombuffer(clean.encode("ascii"), dtype=np.uint8)
            buf[i, : len(raw)] = raw
            lengths[i] = len(raw)
        codes = _CODE[buf[:, : self.n_kmers * self.k]].reshape(n, self.n_kmers, self.k)
        kmer_ids = (np.minimum(codes, 3) * self._weights).sum(-1) + len(SPECIAL_TOKENS)
        kmer_ids[(codes == 4).any(-1)] = UNK_ID
        # a k-mer is real if it starts inside the sequence (padding-only k-mers are masked)
        starts = np.arange(self.n_kmers) * self.k
        mask = (starts[None, :] < lengths[:, None]).astype(np.int64)
        if self.prefix_token:
            kmer_ids = np.concatenate([np.full((n, 1), MASK_ID, dtype=np.int64), kmer_ids], axis=1)
            mask = np.concatenate([np.ones((n, 1), dtype=np.int64), mask], axis=1)
        return KmerEncoding(torch.from_numpy(kmer_ids), torch.from_numpy(mask))

    def __call__(self, sequences: Sequence[str] | str, ids: Sequence[object] | None = None) -> KmerEncoding:
        if isinstance(sequences, str):
            sequences = [sequences]
        return self.encode(sequences, ids)

    def kmer_bag(self, sequences: Sequence[str], ids: Sequence[object] | None = None) -> torch.Tensor:
        """Frequencies of the *overlapping* ACGT k-mers of each barcode, L2-normalised: (n, 4**k) float32.

        Unlike the non-overlapping tokens, this bag does not change when a read starts one base later. Barcodes are
        cleaned and truncated to ``max_length`` as for :meth:`encode`; k-mers holding N or IUPAC codes are skipped.
        """
        names = list(ids) if ids is not None else list(range(len(sequences)))
        out = np.zeros((len(sequences), 4**self.k), dtype=np.float32)
        for row, (seq, rid) in enumerate(zip(sequences, names)):
            seq = clean_barcode(self._prepare(seq, rid), record_id=rid)  # the bag never sees gaps
            codes = _CODE[np.frombuffer(seq[: self.max_length].encode("ascii"), dtype=np.uint8)]
            windows = np.lib.stride_tricks.sliding_window_view(codes, self.k)
            valid = (windows < 4).all(axis=1)
            out[row] = np.bincount(windows[valid] @ self._weights, minlength=4**self.k)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return torch.from_numpy(out / np.maximum(norms, 1e-12))

    def tokenize(self, sequence: str) -> list[str]:
        """The k-mer strings (``<UNK>`` for non-ACGT k-mers), without the prefix token. For inspection."""
        ids = self.encode([sequence]).input_ids[0].tolist()
        inverse = {i: t for t, i in self.vocab.items()}
        tokens = [inverse[i] for i in ids]
        return tokens[1:] if self.prefix_token else tokens

    def decode_kmers(self, ids: Iterable[int]) -> list[str]:
        inverse = {i: t for t, i in self.vocab.items()}
        return [inverse[int(i)] for i in ids]
