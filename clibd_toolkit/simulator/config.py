"""Configuration of the barcoding-survey simulator."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from ..config import Config

#: the insect orders the simulator can draw, most abundant first (BIOSCAN-1M order of abundance, roughly)
ORDER_NAMES: tuple[str, ...] = (
    "Diptera",
    "Hymenoptera",
    "Hemiptera",
    "Coleoptera",
    "Lepidoptera",
    "Psocodea",
    "Trichoptera",
    "Orthoptera",
    "Odonata",
)

#: the largest number of records one survey may hold (record ids and image folders are sized for it)
MAX_RECORDS = 100_000_000
#: the largest tree (BIOSCAN-5M has ~22,000 species); building it holds ~10 kB per species (50,000: ~0.5 GB, ~12 s)
MAX_SPECIES = 50_000
MAX_IMAGE_SIZE = 256
MIN_IMAGE_SIZE = 32


@dataclass(frozen=True, kw_only=True)
class SimulatorConfig(Config):
    """A simulated barcoding survey: taxonomy tree, barcodes, images, artefacts and label coverage.

    The same config (same ``seed``) always produces byte-identical records and images. Record ``i`` depends only
    on the config and ``i``, so ``records`` can grow without changing the records already generated.

    The tree is given by its total size per rank: every order gets at least one family, every family one
    genus and every genus one species; the rest are spread unevenly, so some genera are species-rich.
    """

    kind: ClassVar[str] = "simulator"

    seed: int = 0  # everything derives from this
    records: int = 3000  # records in the survey
    orders: int = 5  # insect orders, taken from ORDER_NAMES in that order (1..9)
    families: int = 24  # families in the whole tree (>= orders)
    genera: int = 60  # genera in the whole tree (>= families)
    species: int = 160  # species in the whole tree (>= genera)
    abundance_sigma: float = 1.5  # log-normal spread of species abundances: larger = longer tail of rare species
    unlabelled_fraction: float = 0.3  # records identified only to genus, family or order (no species label)
    cryptic_fraction: float = 0.05  # fraction of species that look exactly like a congeneric sister (DNA differs)
    bin_split_fraction: float = 0.05  # fraction of species with two deep mitochondrial lineages (two BINs)
    bin_share_fraction: float = 0.04  # fraction of species that share a BIN with a very close congener
    truncated_rate: float = 0.04  # fraction of barcodes cut short (failed reads at either end)
    n_run_rate: float = 0.03  # fraction of barcodes with a run of N (unreadable stretch)
    ambiguity_rate: float = 0.02  # fraction of barcodes with IUPAC ambiguity codes (R, Y, ...)
    images: bool = True  # render specimen images; false = DNA-only survey (fast, for million-record tests)
    image_size: int = 128  # image side in pixels (square), 32..256
    image_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = 90  # JPEG quality 1..95

    def validate(self) -> None:
        self._require(1 <= self.records <= MAX_RECORDS, "records", f"an integer in 1..{MAX_RECORDS:,}")
        self._require(1 <= self.orders <= len(ORDER_NAMES), "orders",
                      f"an integer in 1..{len(ORDER_NAMES)} (the simulator draws {', '.join(ORDER_NAMES)})")
        self._require(self.families >= self.orders, "families", f"an integer >= orders ({self.orders})")
        self._require(self.genera >= self.families, "genera", f"an integer >= families ({self.families})")
        self._require(self.species >= self.genera, "species", f"an integer >= genera ({self.genera})")
        self._require(self.species <= MAX_SPECIES, "species", f"an integer <= {MAX_SPECIES:,}")
        self._require(0.0 <= self.abundance_sigma <= 4.0, "abundance_sigma", "a number in [0, 4] (0 = even)")
        for name in ("unlabelled_fraction", "truncated_rate", "n_run_rate", "ambiguity_rate"):
            self._require(0.0 <= getattr(self, name) <= 1.0, name, "a fraction in [0, 1]")
        for name in ("cryptic_fraction", "bin_split_fraction", "bin_share_fraction"):
            self._require(0.0 <= getattr(self, name) <= 0.5, name, "a fraction of species in [0, 0.5]")
        self._require(self.cryptic_fraction + self.bin_share_fraction <= 0.5, "bin_share_fraction",
                      f"cryptic_fraction + bin_share_fraction <= 0.5 (cryptic_fraction is {self.cryptic_fraction})")
        self._require(MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE, "image_size",
                      f"an integer in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} (pixels)")
        self._require(1 <= self.jpeg_quality <= 95, "jpeg_quality", "an integer in 1..95")

    @property
    def image_extension(self) -> str:
        return ".jpg" if self.image_format == "jpeg" else ".png"
