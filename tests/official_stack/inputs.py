"""The synthetic barcode edge cases of the official-stack fixtures, derived from real BOLD barcodes.

Plain Python (no torch, timm or transformers), imported by ``make_fixtures.py`` (side environment) and by the
toolkit's tests, so the derived sequences are rebuilt from ``../shared/data`` at test time instead of being copied
into the repository; the fixture manifest keeps only their SHA-256, which the tests check.
"""


def synthetic_barcodes(seqs):
    base = seqs["FBCOB539-10"]
    gapped = base[:7] + "-" + base[7:100] + "--" + base[100:333] + "-" + base[333:]
    cases = [
        (gapped, "FBCOB539-10 with '-' inserted after positions 7, 100 (two) and 333: gaps are NOT removed, "
                 "they shift the 5-mer frame and their k-mers map to <UNK>"),
        (base.lower(), "FBCOB539-10 lower-cased: every k-mer -> <UNK> (no upper-casing in the official pipeline)"),
        (base[:300] + "N" * 30 + base[330:], "FBCOB539-10 with positions 300-329 replaced by a run of 30 N "
                                              "(6 whole <UNK> k-mers)"),
        (base[:12], "12 nt (first 12 of FBCOB539-10): 2 real k-mers + 130 padding k-mers"),
        (seqs["CYTC7667-15"][:660], "exactly 660 nt (first 660 of CYTC7667-15, ACGT only): no padding, no truncation"),
        (seqs["GBMIN11835-13"][:700], "700 nt (first 700 of GBMIN11835-13, ACGT only): truncated to 660"),
        (base.replace("T", "U"), "FBCOB539-10 with U for T (RNA alphabet): k-mers with U -> <UNK>"),
        ("ACG", "3 nt, shorter than a k-mer: 'ACG'+657 N -> all 132 k-mers <UNK>; same ids as the empty string"),
        ("", "empty string: 660 N -> [0, 2 x 132]"),
    ]
    return cases
