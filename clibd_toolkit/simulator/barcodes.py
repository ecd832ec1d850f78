"""COI-like barcodes evolved along the simulated tree, and the sequencing artefacts of real reads.

Model (a per-site F81 process, vectorised with numpy):

- 658 bp in reading frame 2 (like BOLD's COI-5P: the first base is the last base of a codon), so 219 full codons;
- each site has its own base composition (drawn around the mean composition of its codon position, measured on
  real insect COI-5P barcodes: third positions are ~88 % A+T) and its own rate (codon-position multiplier x a
  gamma-distributed factor): third positions change ~10x faster than first ones, second positions are the
  slowest, and many first/second sites almost never change, as amino acids are conserved;
- along a branch of length ``d`` (expected changes per site at the mean rate), each site is redrawn from its
  composition with probability ``1 - exp(-rate * d)``, so divergence saturates between distant taxa;
- a change that would create a stop codon (TAA or TAG in the invertebrate mitochondrial code) is undone;
- the tree is nearly ultrametric: each rank has a crown age, jittered per node, and every branch gets its own
  rate multiplier, so distances spread like real ones.

Within a species, records carry one of a few haplotypes (star-shaped around a dominant one, as in real COI
haplotype networks) plus rare private mutations.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .taxonomy import Taxonomy

#: barcode length (bp), the COI-5P barcode region
BARCODE_LENGTH = 658
_ASCII = np.frombuffer(b"ACGT", dtype=np.uint8)
A, C, G, T = 0, 1, 2, 3
#: codon position (0 = first, 1 = second, 2 = third) of each site: frame 2, site 0 ends a codon
CODON_POSITION = (np.arange(BARCODE_LENGTH) - 1) % 3
#: mean base composition (A, C, G, T) per codon position, measured on 29,591 full-length insect COI-5P barcodes
#: of the bold-insect-coi reference set (../shared/data)
POSITION_COMPOSITION = np.array([
    [0.296, 0.160, 0.279, 0.264],  # first
    [0.140, 0.251, 0.173, 0.436],  # second
    [0.460, 0.083, 0.034, 0.423],  # third
])
#: relative substitution rate per codon position (mean 1 over the three)
POSITION_RATE = np.array([0.50, 0.09, 2.41])
#: gamma shape of among-site rate variation within a codon position (small = many nearly invariable sites)
GAMMA_SHAPE = 0.5
#: Dirichlet concentration of per-site composition around the position mean (small = strong site preferences)
SITE_CONCENTRATION = np.array([1.2, 1.2, 30.0])

# crown ages (expected changes per site at the mean rate, from a node to its tips); calibrated so that p-distances
# fall where real insect barcodes fall (bold-insect-coi: congeneric median ~8 %, across orders ~20 %)
ROOT_AGE = 0.85
ORDER_AGE = 0.34
FAMILY_AGE = 0.26
GENUS_AGE = 0.15
#: shortest branch from a genus to one of its species
MIN_SPECIES_BRANCH = 0.05
#: deep intraspecific split of a two-BIN species, and the branch of a BIN-sharing close species
SPLIT_LINEAGE_BRANCH = (0.030, 0.050)
CLOSE_SPECIES_BRANCH = (0.004, 0.015)
#: within-species haplotypes: branch from the dominant haplotype, and the mean number of extra haplotypes
HAPLOTYPE_BRANCH_MEAN = 0.005
EXTRA_HAPLOTYPES_MEAN = 3.0
#: mean number of private mutations per record (on top of its haplotype)
PRIVATE_MUTATIONS_MEAN = 0.4
#: sd of the log of each branch's rate multiplier, and of each order's overall rate (some orders evolve faster)
BRANCH_RATE_SD = 0.30
ORDER_RATE_SD = 0.25
#: spread of node ages around their rank's crown age (uniform factor range)
AGE_SPREAD = {"order": (0.8, 1.2), "family": (0.7, 1.3), "genus": (0.35, 1.7), "species": (0.3, 1.1)}

#: IUPAC code for a pair of bases (an ambiguous call between the true base and another)
_IUPAC_PAIR = {frozenset("AG"): "R", frozenset("CT"): "Y", frozenset("CG"): "S", frozenset("AT"): "W",
               frozenset("GT"): "K", frozenset("AC"): "M"}
_IUPAC_TABLE = np.zeros((4, 4), dtype=np.uint8)
for _i, _a in enumerate("ACGT"):
    for _j, _b in enumerate("ACGT"):
        _IUPAC_TABLE[_i, _j] = ord(_IUPAC_PAIR.get(frozenset(_a + _b), _a))
_CODE_OF_ASCII = np.zeros(256, dtype=np.uint8)
_CODE_OF_ASCII[_ASCII] = np.arange(4)


@dataclass(frozen=True)
class SiteModel:
    """Per-site rates (L,) and base compositions (L, 4), cumulative (L, 4) for sampling."""

    rates: np.ndarray
    composition: np.ndarray
    cumulative: np.ndarray

    @classmethod
    def create(cls, rng: np.random.Generator) -> SiteModel:
        pos = CODON_POSITION
        gamma = rng.gamma(GAMMA_SHAPE, 1.0 / GAMMA_SHAPE, size=BARCODE_LENGTH)
        rates = POSITION_RATE[pos] * gamma
        alpha = POSITION_COMPOSITION[pos] * SITE_CONCENTRATION[pos][:, None]
        composition = np.stack([rng.dirichlet(a) for a in alpha])
        cumulative = np.cumsum(composition, axis=1)
        cumulative[:, -1] = 1.0
        return cls(rates=rates, composition=composition, cumulative=cumulative)

    def draw(self, u: np.ndarray, sites: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Base codes drawn from the composition of ``sites`` given uniforms ``u`` (inverse CDF)."""
        cum = self.cumulative[sites]
        return (u[..., None] > cum[..., :3]).sum(axis=-1).astype(np.uint8)


def stop_codons(codes: np.ndarray) -> np.ndarray:
    """(n, 219) bool: which full codons of (n, 658) base codes are TAA or TAG (invertebrate mitochondrial stops)."""
    first, second, third = codes[:, 1::3], codes[:, 2::3], codes[:, 3::3]
    n = third.shape[1]
    return (first[:, :n] == T) & (second[:, :n] == A) & ((third == A) | (third == G))


def _undo_stops(child: np.ndarray, parent: np.ndarray) -> None:
    rows, codon = np.nonzero(stop_codons(child))
    for offset in (1, 2, 3):
        child[rows, 3 * codon + offset] = parent[rows, 3 * codon + offset]


def evolve(parent: np.ndarray, branch: np.ndarray, model: SiteModel, rng: np.random.Generator,
           rows_per_step: int = 4096) -> np.ndarray:
    """Evolve (n, L) base codes along branches of length ``branch`` (n,); stop codons are never created.

    Works ``rows_per_step`` rows at a time, so temporaries stay small for large trees."""
    child = np.empty_like(parent)
    rates = model.rates.astype(np.float32)
    for lo in range(0, len(parent), rows_per_step):
        par = parent[lo: lo + rows_per_step]
        p_change = -np.expm1(-np.outer(branch[lo: lo + rows_per_step].astype(np.float32), rates))
        rows, sites = np.nonzero(rng.random(par.shape, dtype=np.float32) < p_change)
        out = par.copy()
        out[rows, sites] = model.draw(rng.random(len(rows)), sites)  # redraw only the sites that change
        _undo_stops(out, par)
        child[lo: lo + rows_per_step] = out
    return child


def _root(model: SiteModel, rng: np.random.Generator) -> np.ndarray:
    root = model.draw(rng.random((1, BARCODE_LENGTH)))
    # no stop codon at the root: TAA/TAG -> TAT/TAC (tyrosine)
    rows, codon = np.nonzero(stop_codons(root))
    root[rows, 3 * codon + 3] = np.where(rng.random(len(codon)) < 0.5, T, C)
    return root


@dataclass(frozen=True)
class BarcodePool:
    """Haplotypes of every species, ready for drawing records.

    ``haplotypes`` (H, 658) uint8 ASCII; ``haplotype_lineage`` (H,); ``species_cumulative`` (H,) float: species
    index + cumulative haplotype share within the species, so ``searchsorted(species_cumulative, s + u)`` draws a
    haplotype of species ``s``.
    """

    model: SiteModel
    haplotypes: np.ndarray
    haplotype_lineage: np.ndarray
    species_cumulative: np.ndarray


def _branch(rng: np.random.Generator, lengths: np.ndarray, rate: np.ndarray) -> np.ndarray:
    return np.maximum(lengths, 0.0) * rate * np.exp(BRANCH_RATE_SD * rng.standard_normal(len(lengths)))


def build_barcodes(taxonomy: Taxonomy, seed: int) -> BarcodePool:
    """Evolve barcodes down the tree: root -> orders -> families -> genera -> species -> lineages -> haplotypes."""
    rng = np.random.default_rng([seed, 2])
    model = SiteModel.create(rng)
    root = _root(model, rng)
    n_orders = len(taxonomy.orders)
    order_rate = np.exp(ORDER_RATE_SD * rng.standard_normal(n_orders))
    order_age = ORDER_AGE * rng.uniform(*AGE_SPREAD["order"], n_orders)
    orders = evolve(np.repeat(root, n_orders, axis=0), _branch(rng, ROOT_AGE - order_age, order_rate), model, rng)
    fam_parent = taxonomy.family_order
    fam_rate = order_rate[fam_parent]
    fam_age = np.minimum(FAMILY_AGE * rng.uniform(*AGE_SPREAD["family"], len(fam_parent)), 0.9 * order_age[fam_parent])
    families = evolve(orders[fam_parent], _branch(rng, order_age[fam_parent] - fam_age, fam_rate), model, rng)
    gen_parent = taxonomy.genus_family
    gen_rate = fam_rate[gen_parent]
    gen_age = np.minimum(GENUS_AGE * rng.uniform(*AGE_SPREAD["genus"], len(gen_parent)), 0.9 * fam_age[gen_parent])
    genera = evolve(families[gen_parent], _branch(rng, fam_age[gen_parent] - gen_age, gen_rate), model, rng)
    sp_parent = taxonomy.species_genus
    # species within a genus: a per-species spread of the branch keeps congeneric distances from all being equal
    sp_branch = gen_age[sp_parent] * rng.uniform(*AGE_SPREAD["species"], len(sp_parent))
    # a floor keeps distinct species apart by more than a BIN threshold (~2 %), except the close pairs below
    sp_branch = np.maximum(_branch(rng, sp_branch, gen_rate[sp_parent]), MIN_SPECIES_BRANCH)
    species = evolve(genera[sp_parent], sp_branch, model, rng)
    close = np.flatnonzero(taxonomy.close_to >= 0)
    if len(close):  # BIN-sharing species: a recent offshoot of its congener
        species[close] = evolve(species[taxonomy.close_to[close]], rng.uniform(*CLOSE_SPECIES_BRANCH, len(close)),
                                model, rng)

    lin_sp = taxonomy.lineage_species
    split = np.bincount(lin_sp, minlength=len(taxonomy.species))[lin_sp] > 1
    lin_branch = np.where(split, rng.uniform(*SPLIT_LINEAGE_BRANCH, len(lin_sp)), 0.0)
    lineages = evolve(species[lin_sp], lin_branch, model, rng)

    n_extra = np.minimum(rng.poisson(EXTRA_HAPLOTYPES_MEAN, len(lin_sp)), 12)
    hap_lineage = np.repeat(np.arange(len(lin_sp)), 1 + n_extra)
    is_dominant = np.r_[True, hap_lineage[1:] != hap_lineage[:-1]]
    hap_branch = np.where(is_dominant, 0.0, rng.exponential(HAPLOTYPE_BRANCH_MEAN, len(hap_lineage)))
    haplotypes = evolve(lineages[hap_lineage], hap_branch, model, rng)
    # haplotype shares: the dominant one carries about half of its lineage's records
    share = np.where(is_dominant, 1.0, rng.gamma(0.6, 1.0 / (1 + n_extra[hap_lineage])))
    share = share / np.bincount(hap_lineage, weights=share)[hap_lineage] * taxonomy.lineage_weight[hap_lineage]
    hap_species = lin_sp[hap_lineage]
    within = np.cumsum(share) - np.r_[0.0, np.cumsum(np.bincount(hap_species, weights=share))][hap_species]
    cumulative = hap_species + np.minimum(within, 1.0)
    last = np.r_[hap_species[1:] != hap_species[:-1], True]
    cumulative[last] = hap_species[last] + 1.0  # exact upper edge, so u < 1 always lands in the species
    return BarcodePool(model=model, haplotypes=_ASCII[haplotypes], haplotype_lineage=hap_lineage,
                       species_cumulative=cumulative)


# --- records ----------------------------------------------------------------------------------------------------


@dataclass
class BarcodeBlock:
    """Barcodes of a block of records: (n, 658) ASCII with 0 bytes after the end of truncated reads."""

    sequences: np.ndarray
    lineage: np.ndarray  # (n,) lineage index of each record
    truncated: np.ndarray  # (n,) bool
    n_run: np.ndarray  # (n,) bool
    ambiguous: np.ndarray  # (n,) bool
    readable_length: np.ndarray  # (n,) bases that are not N

    def strings(self) -> list[str]:
        return [b.decode("ascii") for b in self.sequences.view(f"S{BARCODE_LENGTH}").ravel().tolist()]


def draw_barcodes(pool: BarcodePool, species: np.ndarray, rng: np.random.Generator, *, truncated_rate: float,
                  n_run_rate: float, ambiguity_rate: float) -> BarcodeBlock:
    """Barcodes for records of the given species: a haplotype, private mutations, then read artefacts.

    The draws are made in a fixed order from ``rng``, so a block's records are reproducible from the block's
    generator alone.
    """
    n = len(species)
    L = BARCODE_LENGTH
    hap = np.searchsorted(pool.species_cumulative, species + rng.random(n), side="right")
    hap = np.minimum(hap, len(pool.haplotypes) - 1)
    seqs = pool.haplotypes[hap].copy()
    # private mutations: rate-weighted sites, new base from the site's composition, never a stop codon
    n_mut = rng.poisson(PRIVATE_MUTATIONS_MEAN, n)
    rows = np.repeat(np.arange(n), n_mut)
    weights = pool.model.rates / pool.model.rates.sum()
    sites = np.searchsorted(np.cumsum(weights), rng.random(len(rows)) * (1 - 1e-12), side="right")
    before = seqs[rows].copy() if len(rows) else seqs[:0]
    seqs[rows, sites] = _ASCII[pool.model.draw(rng.random(len(rows)), sites)]
    if len(rows):
        codes = _CODE_OF_ASCII[seqs[rows]]
        bad = stop_codons(codes).any(axis=1)
        seqs[rows[bad]] = before[bad]

    # read artefacts; truncation first, so N runs and ambiguities fall inside the part that was read
    u = rng.random((3, n))
    truncated = u[0] < truncated_rate
    kept = np.where(truncated, rng.integers(200, 621, n), L)
    start = np.where(rng.random(n) < 0.5, 0, L - kept)  # which end failed
    n_run = u[1] < n_run_rate
    run_len = np.minimum(1 + rng.geometric(1 / 10, n), 60)
    run_len = np.minimum(run_len, kept)
    run_start = start + (rng.random(n) * (kept - run_len + 1)).astype(int)
    ambiguous = u[2] < ambiguity_rate
    amb_count = rng.integers(1, 4, n)
    amb_pos = start[:, None] + (rng.random((n, 3)) * kept[:, None]).astype(int)
    amb_other = rng.integers(0, 3, (n, 3))

    for i in np.flatnonzero(ambiguous).tolist():
        for k in range(amb_count[i]):
            pos = amb_pos[i, k]
            base = _CODE_OF_ASCII[seqs[i, pos]]
            other = (base + 1 + amb_other[i, k]) % 4
            seqs[i, pos] = _IUPAC_TABLE[base, other]
    for i in np.flatnonzero(n_run).tolist():
        seqs[i, run_start[i]: run_start[i] + run_len[i]] = ord("N")
    for i in np.flatnonzero(truncated).tolist():
        seqs[i, : kept[i]] = seqs[i, start[i]: start[i] + kept[i]].copy()
        seqs[i, kept[i]:] = 0
    readable = kept - np.where(n_run, run_len, 0)
    return BarcodeBlock(sequences=seqs, lineage=pool.haplotype_lineage[hap], truncated=truncated, n_run=n_run,
                        ambiguous=ambiguous, readable_length=readable)
