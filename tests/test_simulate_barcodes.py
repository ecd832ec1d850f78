"""Simulated barcodes against independent references: hand-written p-distances, codon positions, stop codons,
artefact rates measured on the sequences themselves, and the taxonomy they were evolved along."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from clibd_toolkit.simulator import SimulatorConfig, simulate_records
from clibd_toolkit.simulator.survey import Survey

IUPAC_TWO_BASE = set("RYSWKM")


def p_distance(a: str, b: str) -> float:
    """Plain p-distance of two equal-length sequences: the share of differing sites (a naive loop)."""
    assert len(a) == len(b)
    return sum(x != y for x, y in zip(a, b)) / len(a)


@pytest.fixture(scope="module")
def clean_survey() -> pd.DataFrame:
    # every record labelled and no read artefacts, so every pair can be classified by its ranks
    cfg = SimulatorConfig(records=4000, images=False, orders=5, families=30, genera=90, species=300, seed=11,
                          abundance_sigma=0.7, unlabelled_fraction=0.0, truncated_rate=0.0, n_run_rate=0.0,
                          ambiguity_rate=0.0)
    return pd.concat(simulate_records(cfg), ignore_index=True)


@pytest.fixture(scope="module")
def pair_distances(clean_survey: pd.DataFrame) -> pd.DataFrame:
    df = clean_survey
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(df), (2, 12000))
    keep = i != j
    i, j = i[keep], j[keep]
    seqs = df["dna_barcode"].tolist()
    rows = {"d": [p_distance(seqs[a], seqs[b]) for a, b in zip(i, j)]}
    for col in ("order", "family", "genus", "species", "bin_uri"):
        v = df[col].to_numpy()
        rows[f"same_{col}"] = v[i] == v[j]
    out = pd.DataFrame(rows)
    out["i"], out["j"] = i, j
    return out


def _sel(pairs: pd.DataFrame, level: str) -> np.ndarray:
    s = pairs
    if level == "species":  # same species and lineage (split species carry two deep lineages, one BIN each)
        m = s.same_species & s.same_bin_uri
    elif level == "genus":  # congeneric species, except the close pairs that share a BIN
        m = s.same_genus & ~s.same_species & ~s.same_bin_uri
    elif level == "family":
        m = s.same_family & ~s.same_genus
    elif level == "order":
        m = s.same_order & ~s.same_family
    else:
        m = ~s.same_order
    d = s.d[m].to_numpy()
    assert len(d) >= 100, f"too few {level} pairs for a statistic: {len(d)}"
    return d


def test_full_length_at_rich_and_only_nucleotides(clean_survey):
    seqs = clean_survey["dna_barcode"]
    assert (seqs.str.len() == 658).all()
    assert seqs.str.fullmatch("[ACGT]+").all()
    joined = "".join(seqs.head(1000))
    at = (joined.count("A") + joined.count("T")) / len(joined)
    assert 0.62 <= at <= 0.72  # insect COI-5P is ~65-70 % A+T


def test_divergence_ranges_like_real_barcodes(pair_distances):
    within = _sel(pair_distances, "species")
    congeneric = _sel(pair_distances, "genus")
    confamilial = _sel(pair_distances, "family")
    same_order = _sel(pair_distances, "order")
    cross_order = _sel(pair_distances, "cross")
    # within species: ~0-2 %
    assert np.median(within) <= 0.01
    assert np.percentile(within, 95) <= 0.02
    assert within.max() <= 0.03
    # between congeneric species: several % to ~15 %
    assert np.percentile(congeneric, 5) >= 0.02
    assert 0.04 <= np.median(congeneric) <= 0.12
    assert np.percentile(congeneric, 95) <= 0.17
    # deeper ranks are further apart, and saturate (never near the 75 % of random sequences)
    medians = [np.median(x) for x in (within, congeneric, confamilial, same_order, cross_order)]
    assert medians == sorted(medians) and len(set(medians)) == 5
    assert 0.14 <= np.median(cross_order) <= 0.27
    assert cross_order.max() < 0.35
    # a DNA barcode gap: almost no conspecific pair is as far apart as a typical congeneric pair
    assert (within >= np.percentile(congeneric, 10)).mean() < 0.01


def test_third_codon_positions_change_fastest(clean_survey, pair_distances):
    seqs = clean_survey["dna_barcode"].tolist()
    pairs = pair_distances[pair_distances.same_genus & ~pair_distances.same_species]
    diffs = np.zeros(3)
    sites = np.zeros(3)
    for a, b in zip(pairs.i.head(300), pairs.j.head(300)):
        for k, (x, y) in enumerate(zip(seqs[a], seqs[b])):
            pos = (k - 1) % 3  # reading frame 2: site 0 is the last base of a codon
            diffs[pos] += x != y
            sites[pos] += 1
    first, second, third = diffs / sites
    assert third > 3 * first > 0
    assert first > second


def test_no_stop_codons_in_frame(clean_survey):
    # invertebrate mitochondrial code: TAA and TAG are stops (TGA is tryptophan)
    for seq in clean_survey["dna_barcode"].head(1500):
        codons = [seq[k: k + 3] for k in range(1, 656, 3)]
        assert len(codons) == 219
        assert not {"TAA", "TAG"} & set(codons)


def test_bins_follow_lineages(clean_survey):
    df = clean_survey
    assert df["bin_uri"].str.fullmatch(r"BOLD:[A-Z]{3}\d{4}").all()
    bins_per_species = df.groupby("species")["bin_uri"].nunique()
    species_per_bin = df.groupby("bin_uri")["species"].nunique()
    # mostly one BIN per species; some species split across two, some BINs shared by two species
    assert (bins_per_species == 1).mean() > 0.85
    assert set(bins_per_species.unique()) <= {1, 2} and (bins_per_species == 2).any()
    assert set(species_per_bin.unique()) <= {1, 2} and (species_per_bin == 2).any()
    # species sharing a BIN are congeneric and close; the two BINs of a split species are deep lineages
    seqs = df.groupby(["species", "bin_uri"])["dna_barcode"].first()
    for b in species_per_bin[species_per_bin == 2].index:
        (sa, a), (sb, bseq) = seqs.xs(b, level="bin_uri").items()
        assert sa.split()[0] == sb.split()[0]
        assert p_distance(a, bseq) < 0.025
    for sp in bins_per_species[bins_per_species == 2].index:
        a, bseq = seqs.xs(sp, level="species").tolist()
        assert 0.015 < p_distance(a, bseq) < 0.09


def test_artefact_rates_match_config():
    cfg = SimulatorConfig(records=20000, images=False, seed=3, truncated_rate=0.1, n_run_rate=0.05,
                          ambiguity_rate=0.04, unlabelled_fraction=0.4)
    df = pd.concat(simulate_records(cfg, chunk_size=5000), ignore_index=True)
    n = len(df)
    seqs = df["dna_barcode"]

    def close(observed: float, rate: float) -> bool:  # within 4 binomial standard errors
        return abs(observed - rate) <= 4 * np.sqrt(rate * (1 - rate) / n)

    truncated = seqs.str.len() < 658
    assert close(truncated.mean(), 0.1)
    assert seqs.str.len().min() >= 200
    assert close(seqs.str.contains("N").mean(), 0.05)
    runs = seqs[seqs.str.contains("N")].map(lambda s: max(len(m) for m in re.findall("N+", s)))
    assert runs.max() <= 60 and runs.median() > 2  # runs, not scattered Ns
    assert close(seqs.map(lambda s: bool(IUPAC_TWO_BASE & set(s))).mean(), 0.04)
    # the ground-truth column says the same as the sequences
    assert (df["artefacts"].fillna("").str.contains("truncated") == truncated).all()
    # labels: 40 % of records lack a species name; every record keeps its order
    assert close(df["species"].isna().mean(), 0.4)
    assert df["order"].notna().all()
    assert (df["species"].isna() == (df["identified_to"] != "species")).all()
    # BOLD assigns no BIN to barcodes with under 500 readable bases
    readable = seqs.str.replace("N", "").str.len()
    assert (df["bin_uri"].isna() == (readable < 500)).all()


def test_species_abundances_are_long_tailed():
    def counts(sigma: float) -> np.ndarray:
        cfg = SimulatorConfig(records=6000, images=False, species=200, genera=60, abundance_sigma=sigma, seed=2)
        df = pd.concat(simulate_records(cfg), ignore_index=True)
        return df["true_species"].value_counts().to_numpy()

    tailed, even = counts(1.5), counts(0.0)

    def top_share(c: np.ndarray) -> float:  # share of the records held by the 10 % most common species
        return np.sort(c)[::-1][: len(c) // 10].sum() / c.sum()

    # many rare species and a few very common ones, against a control without the log-normal spread (which keeps
    # only the per-order weights)
    assert tailed.max() / np.median(tailed) > 2 * even.max() / np.median(even)
    assert (tailed <= 5).sum() >= 30 > (even <= 5).sum()
    assert top_share(tailed) > top_share(even) + 0.1


def test_taxonomy_is_a_consistent_tree():
    survey = Survey(SimulatorConfig(records=10, images=False, orders=9, families=40, genera=120, species=400, seed=9))
    tax = survey.taxonomy
    df = pd.DataFrame({"species": tax.species, "genus": np.array(tax.genera)[tax.species_genus],
                       "family": np.array(tax.families)[tax.species_family],
                       "order": np.array(tax.orders)[tax.species_order]})
    assert len(set(tax.species)) == 400 and len(set(tax.genera)) == 120 and len(set(tax.families)) == 40
    assert df.groupby("genus")["family"].nunique().max() == 1
    assert df.groupby("family")["order"].nunique().max() == 1
    assert df["order"].nunique() == 9 and df["family"].nunique() == 40 and df["genus"].nunique() == 120
    assert set(tax.orders) == {"Diptera", "Hymenoptera", "Hemiptera", "Coleoptera", "Lepidoptera", "Psocodea",
                               "Trichoptera", "Orthoptera", "Odonata"}
    assert all(re.fullmatch(r"[A-Z][a-z]+idae", f) for f in tax.families)
    assert all(re.fullmatch(r"[A-Z][a-z]+", g) for g in tax.genera)
    for name, genus in zip(df["species"], df["genus"]):
        parts = name.split(" ")
        assert len(parts) == 2 and parts[0] == genus and re.fullmatch(r"[a-z]+", parts[1])
    # family names come from the stem of their type genus (Musca -> Muscidae)
    for f, family in enumerate(tax.families):
        first_genus = tax.genera[int(np.flatnonzero(tax.genus_family == f)[0])]
        assert first_genus.startswith(family[: -len("idae")])
