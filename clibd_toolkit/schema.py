"""Names defined once: taxonomic ranks, modalities, canonical record columns and split names.

Every other module imports these constants instead of spelling the strings again.
"""
from __future__ import annotations

from typing import Literal

# --- taxonomy ---------------------------------------------------------------------------------------------
#: Ranks used by CLIBD, coarse to fine. They are also the column names of the records table.
RANKS: tuple[str, ...] = ("order", "family", "genus", "species")
Rank = Literal["order", "family", "genus", "species"]

# --- modalities -------------------------------------------------------------------------------------------
MODALITIES: tuple[str, ...] = ("image", "dna", "text")
Modality = Literal["image", "dna", "text"]

# --- the canonical records table --------------------------------------------------------------------------
RECORD_ID = "record_id"  # unique id of a specimen record (BOLD processid, BIOSCAN processid, ...)
DNA = "dna_barcode"  # COI-5P barcode, upper-case nucleotides (IUPAC codes kept; gaps removed)
IMAGE = "image"  # path to an image file (str) or the encoded image bytes
BIN = "bin_uri"  # BOLD Barcode Index Number, e.g. "BOLD:AAA0001"
SPLIT = "split"  # partition name, see SPLITS below
#: optional column: the barcode as its source stored it (gaps kept, upper-cased), only where that differs from the
#: cleaned ``dna_barcode``; released CLIBD models (``ModelConfig.dna_cleaning="raw"``) read it, because gaps shift
#: their k-mer frame
DNA_STORED = "dna_barcode_stored"

#: Columns every records table has, in this order; missing values are ``pd.NA`` (never placeholder strings).
CANONICAL_COLUMNS: tuple[str, ...] = (RECORD_ID, DNA, IMAGE, *RANKS, BIN, SPLIT)

#: Which column carries each input modality (text is built from the rank columns).
MODALITY_COLUMN = {"image": IMAGE, "dna": DNA}

#: Strings that mean "no label" in the wild; readers turn them into ``pd.NA``. Compared case-insensitively
#: after stripping whitespace.
MISSING_TAXON_PLACEHOLDERS = frozenset(
    {"", "na", "n/a", "nan", "none", "null", "not_classified", "not classified", "unclassified", "-", "?"}
)

# --- splits (CLIBD partition, reference section 4) ----------------------------------------------------------
# Training records: labelled seen-species records plus unlabelled ones (CLIBD "no_split_and_seen_train").
SPLIT_PRETRAIN = "pretrain"  # unlabelled (no species) records used in contrastive training (CLIBD no_split)
SPLIT_TRAIN = "train"  # seen species, training records (CLIBD train_seen)
SPLIT_VAL_SEEN = "val_seen"
SPLIT_TEST_SEEN = "test_seen"
SPLIT_SEEN_KEYS = "seen_keys"
SPLIT_VAL_UNSEEN = "val_unseen"
SPLIT_TEST_UNSEEN = "test_unseen"
SPLIT_VAL_UNSEEN_KEYS = "val_unseen_keys"
SPLIT_TEST_UNSEEN_KEYS = "test_unseen_keys"
SPLIT_UNSEEN_KEYS = "unseen_keys"  # BIOSCAN-5M key_unseen: one unseen key set shared by val and test
SPLIT_SINGLE_SPECIES = "single_species"  # species with one record: neither trained on nor evaluated
SPLIT_OTHER_HELDOUT = "other_heldout"  # BIOSCAN-5M: for novelty-detector training, unused in the protocol

SPLITS: tuple[str, ...] = (
    SPLIT_PRETRAIN,
    SPLIT_TRAIN,
    SPLIT_VAL_SEEN,
    SPLIT_TEST_SEEN,
    SPLIT_SEEN_KEYS,
    SPLIT_VAL_UNSEEN,
    SPLIT_TEST_UNSEEN,
    SPLIT_VAL_UNSEEN_KEYS,
    SPLIT_TEST_UNSEEN_KEYS,
    SPLIT_UNSEEN_KEYS,
    SPLIT_SINGLE_SPECIES,
    SPLIT_OTHER_HELDOUT,
)
TRAIN_SPLITS: tuple[str, ...] = (SPLIT_PRETRAIN, SPLIT_TRAIN)
KEY_SPLITS: tuple[str, ...] = (SPLIT_SEEN_KEYS, SPLIT_VAL_UNSEEN_KEYS, SPLIT_TEST_UNSEEN_KEYS, SPLIT_UNSEEN_KEYS)
#: query split for each (stage, seen/unseen) pair of the protocol
QUERY_SPLITS: dict[tuple[str, str], str] = {
    ("val", "seen"): SPLIT_VAL_SEEN,
    ("val", "unseen"): SPLIT_VAL_UNSEEN,
    ("test", "seen"): SPLIT_TEST_SEEN,
    ("test", "unseen"): SPLIT_TEST_UNSEEN,
}

# --- DNA ----------------------------------------------------------------------------------------------------
NUCLEOTIDES = "ACGT"
#: IUPAC ambiguity codes accepted in barcodes (each becomes part of an <UNK> k-mer at tokenisation)
IUPAC_AMBIGUITY = "RYSWKMBDHVN"
