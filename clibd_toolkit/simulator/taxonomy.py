"""The simulated taxonomy: orders -> families -> genera -> species, Latin-like names, abundances, BINs.

Everything here is a pure function of the config's tree settings and seed (never of the number of records),
so a survey can grow without changing its tree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import ORDER_NAMES, SimulatorConfig

#: share of survey records per order (BIOSCAN-like: flies and wasps dominate), renormalised over the orders used
ORDER_WEIGHT: dict[str, float] = {
    "Diptera": 0.34, "Hymenoptera": 0.20, "Hemiptera": 0.13, "Coleoptera": 0.12, "Lepidoptera": 0.10,
    "Psocodea": 0.04, "Trichoptera": 0.03, "Orthoptera": 0.02, "Odonata": 0.02,
}

#: genus-name endings per order, so names carry a little of their group's flavour (Musca/-myia, Noctua/-ia, ...)
_GENUS_ENDINGS: dict[str, tuple[str, ...]] = {
    "Diptera": ("myia", "mya", "ops", "a", "ella", "omyza", "ura"),
    "Hymenoptera": ("us", "ops", "ia", "idea", "ella", "on", "ites"),
    "Hemiptera": ("ocoris", "us", "ella", "ia", "aphis", "ops", "a"),
    "Coleoptera": ("us", "ius", "oderus", "ops", "idium", "a", "onus"),
    "Lepidoptera": ("ia", "ella", "ptera", "a", "ina", "ades", "odes"),
    "Psocodea": ("ocus", "opsis", "us", "ia", "ella"),
    "Trichoptera": ("ia", "opsyche", "ella", "us", "odes"),
    "Orthoptera": ("ippus", "us", "ella", "ia", "optera"),
    "Odonata": ("aeschna", "ia", "ura", "us", "ella"),
}
_EPITHET_ENDINGS = ("ensis", "i", "ata", "alis", "ella", "us", "a", "icus", "oides", "ipes", "iformis", "ana", "ae",
                    "ina", "osa", "ellus", "atus", "ii")
_ONSETS = ("b", "c", "ch", "d", "g", "l", "m", "n", "p", "ph", "r", "s", "t", "th", "v", "x", "z", "cr", "pl",
           "st", "tr", "br", "dr", "gl", "pr", "sc", "sp", "h", "ps", "rh")
_VOWELS = ("a", "e", "i", "o", "u", "y", "a", "e", "i", "o", "ae", "eu")
_CODAS = ("n", "r", "s", "l", "m", "x", "nt", "st", "rc", "c", "d", "t")

#: how deep the label goes for a record without species label: (order only, to family, to genus)
UNLABELLED_RANK_PROBS = (0.25, 0.40, 0.35)

#: BOLD refuses to assign a BIN to barcodes shorter than this (bp of unambiguous sequence)
BIN_MIN_LENGTH = 500


@dataclass(frozen=True)
class Taxonomy:
    """The tree and its per-species ground truth. Indices are positions in the name tuples."""

    orders: tuple[str, ...]
    families: tuple[str, ...]
    family_order: np.ndarray  # (n_families,) int: order of each family
    genera: tuple[str, ...]
    genus_family: np.ndarray  # (n_genera,) int
    species: tuple[str, ...]  # binomials "Genus epithet"
    species_genus: np.ndarray  # (n_species,) int
    species_weight: np.ndarray  # (n_species,) float64, sums to 1: chance that a record is of this species
    look_of: np.ndarray  # (n_species,) int: species whose appearance this species has (itself unless cryptic)
    cryptic_group: tuple[str | None, ...]  # shared id of look-alike species, None for the others
    close_to: np.ndarray  # (n_species,) int: congener whose BIN this species shares (-1: none)
    lineage_species: np.ndarray  # (n_lineages,) int: mitochondrial lineages; split species have two
    lineage_bin: np.ndarray  # (n_lineages,) int: BIN of each lineage
    lineage_weight: np.ndarray  # (n_lineages,) float: share of its species' records
    bins: tuple[str, ...]  # BIN URIs, "BOLD:ABC1234"

    @property
    def species_family(self) -> np.ndarray:
        return self.genus_family[self.species_genus]

    @property
    def species_order(self) -> np.ndarray:
        return self.family_order[self.species_family]


# --- names ----------------------------------------------------------------------------------------------------


class _Namer:
    """Latin-looking names, unique within the survey."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.used: set[str] = set(n.lower() for n in ORDER_NAMES)

    def _pick(self, options: tuple[str, ...]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def stem(self, syllables: int, coda: bool) -> str:
        text = "".join(self._pick(_ONSETS) + self._pick(_VOWELS) for _ in range(syllables))
        return text + (self._pick(_CODAS) if coda else "")

    def unique(self, make) -> str:  # noqa: ANN001 - a zero-argument callable returning a candidate
        for _ in range(10_000):
            name = make()
            if name.lower() not in self.used and len(name) >= 5:
                self.used.add(name.lower())
                return name
        raise RuntimeError("name space exhausted")  # pragma: no cover - 10^9 candidates per rank

    def family_stem(self) -> str:
        # family names are built on the stem of their type genus: Musc-a -> Musc-idae
        return self.unique(lambda: self.stem(int(self.rng.integers(1, 3)), coda=True).capitalize())

    def genus(self, order: str, stem: str | None = None) -> str:
        ending = lambda: self._pick(_GENUS_ENDINGS[order])  # noqa: E731
        if stem is not None:
            return self.unique(lambda: stem + ending())
        return self.unique(lambda: (self.stem(int(self.rng.integers(1, 3)), coda=True) + ending()).capitalize())


def _epithet(rng: np.random.Generator, used: set[str]) -> str:
    for _ in range(10_000):
        syl = int(rng.integers(1, 3))
        text = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] for _ in range(syl))
        text += _CODAS[rng.integers(len(_CODAS))] + _EPITHET_ENDINGS[rng.integers(len(_EPITHET_ENDINGS))]
        if text not in used and len(text) >= 5:
            used.add(text)
            return text
    raise RuntimeError("epithet space exhausted")  # pragma: no cover


def _bin_codes(rng: np.random.Generator, n: int) -> tuple[str, ...]:
    # BOLD BINs look like BOLD:AAA1234 (three letters, four digits); draw distinct codes at random
    space = 26**3 * 10**4
    codes = rng.choice(space, size=n, replace=False) if n <= space // 100 else rng.permutation(space)[:n]
    out = []
    for code in codes.tolist():
        letters, digits = divmod(code, 10**4)
        a, rest = divmod(letters, 26 * 26)
        b, c = divmod(rest, 26)
        out.append(f"BOLD:{chr(65 + a)}{chr(65 + b)}{chr(65 + c)}{digits:04d}")
    return tuple(out)


# --- tree -----------------------------------------------------------------------------------------------------


def _spread(n_children: int, parent_weight: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Parent index of each child: every parent gets one, the rest go unevenly (weighted, Dirichlet-skewed)."""
    n_parents = len(parent_weight)
    p = rng.dirichlet(np.full(n_parents, 0.8)) * parent_weight
    extra = rng.multinomial(n_children - n_parents, p / p.sum())
    return np.repeat(np.arange(n_parents), 1 + extra)


def _pairs_within(groups: np.ndarray, n_pairs: int, taken: np.ndarray,
                  rng: np.random.Generator) -> list[tuple[int, int]]:
    """Up to ``n_pairs`` disjoint pairs (a, b) of untaken items with the same group, chosen at random."""
    members: dict[int, list[int]] = {}
    for item in rng.permutation(len(groups)).tolist():
        if not taken[item]:
            members.setdefault(int(groups[item]), []).append(item)
    pairs: list[tuple[int, int]] = []
    for a in rng.permutation(len(groups)).tolist():
        if len(pairs) >= n_pairs:
            break
        pool = members.get(int(groups[a]), [])
        if taken[a] or len(pool) < 2:
            continue
        pool.remove(a)
        b = pool.pop(int(rng.integers(len(pool))))
        taken[a] = taken[b] = True
        pairs.append((a, b))
    return pairs


def build_taxonomy(config: SimulatorConfig) -> Taxonomy:
    """Build the tree, names, abundances, cryptic groups and BINs for ``config`` (deterministic by seed)."""
    rng = np.random.default_rng([config.seed, 1])
    orders = ORDER_NAMES[: config.orders]
    order_w = np.array([ORDER_WEIGHT[o] for o in orders])
    order_w = order_w / order_w.sum()
    # richness follows abundance, damped: flies have the most families, but not 34 % of them
    family_order = _spread(config.families, np.sqrt(order_w), rng)
    genus_family = _spread(config.genera, np.ones(config.families), rng)
    species_genus = _spread(config.species, np.ones(config.genera), rng)

    namer = _Namer(rng)
    family_stems = [namer.family_stem() for _ in range(config.families)]
    families = tuple(stem + "idae" for stem in family_stems)
    genera = []
    first_of_family: set[int] = set()
    for g, f in enumerate(genus_family.tolist()):
        order = orders[family_order[f]]
        if f not in first_of_family:  # the type genus gives the family its name
            first_of_family.add(f)
            genera.append(namer.genus(order, stem=family_stems[f]))
        else:
            genera.append(namer.genus(order))
    used_binomials: dict[int, set[str]] = {}
    species = tuple(
        f"{genera[g]} {_epithet(rng, used_binomials.setdefault(g, set()))}" for g in species_genus.tolist()
    )

    # abundance: log-normal within each order (many rare species, a few very common), orders scaled to ORDER_WEIGHT
    raw = np.exp(config.abundance_sigma * rng.standard_normal(config.species))
    sp_order = family_order[genus_family[species_genus]]
    per_order = np.bincount(sp_order, weights=raw, minlength=len(orders))
    weight = raw * order_w[sp_order] / per_order[sp_order]
    weight = weight / weight.sum()

    # special species, each in disjoint congeneric pairs: cryptic look-alikes and BIN-sharing close species
    taken = np.zeros(config.species, dtype=bool)
    cryptic = _pairs_within(species_genus, round(config.cryptic_fraction * config.species), taken, rng)
    sharing = _pairs_within(species_genus, round(config.bin_share_fraction * config.species), taken, rng)
    look_of = np.arange(config.species)
    cryptic_group: list[str | None] = [None] * config.species
    for k, (a, b) in enumerate(cryptic):
        look_of[b] = a
        cryptic_group[a] = cryptic_group[b] = f"CRY{k + 1:04d}"
    close_to = np.full(config.species, -1)
    for a, b in sharing:
        close_to[b] = a

    # mitochondrial lineages: split species have two deep lineages (two BINs); BIN-sharers reuse their mate's BIN
    free = np.flatnonzero(close_to < 0)
    n_split = min(round(config.bin_split_fraction * config.species), len(free))
    split = np.zeros(config.species, dtype=bool)
    split[rng.choice(free, size=n_split, replace=False)] = True
    n_lineages = 1 + split.astype(int)
    lineage_species = np.repeat(np.arange(config.species), n_lineages)
    major = rng.uniform(0.55, 0.85, size=config.species)
    lineage_weight = np.where(
        split[lineage_species],
        np.where(np.r_[True, lineage_species[1:] != lineage_species[:-1]], major[lineage_species],
                 1 - major[lineage_species]),
        1.0,
    )
    lineage_bin = np.full(len(lineage_species), -1)
    own = close_to[lineage_species] < 0
    lineage_bin[own] = np.arange(int(own.sum()))
    first_lineage = np.searchsorted(lineage_species, np.arange(config.species))
    for b in np.flatnonzero(close_to >= 0).tolist():
        lineage_bin[first_lineage[b]] = lineage_bin[first_lineage[close_to[b]]]
    bins = _bin_codes(rng, int(own.sum()))

    return Taxonomy(
        orders=orders, families=families, family_order=family_order, genera=tuple(genera),
        genus_family=genus_family, species=species, species_genus=species_genus, species_weight=weight,
        look_of=look_of, cryptic_group=tuple(cryptic_group), close_to=close_to, lineage_species=lineage_species,
        lineage_bin=lineage_bin, lineage_weight=lineage_weight, bins=bins,
    )
