"""Specimen photos rendered procedurally, in the style of BIOSCAN well photos.

What carries taxonomic signal, coarse to fine:

- order: the body plan (beetle, fly, moth, wasp, bug, roof-winged, hopper, dragonfly) and its palette range;
- family: proportions (abdomen, thorax, head, wings, legs, antennae, eyes), body size and colours;
- genus: the pattern (bands, stripes, spots, a margin, two-tone) and its count and width;
- species: small shifts of proportions, colour and pattern phase, spot positions and a mark on the thorax.
  Cryptic species copy their sister species' look exactly (they differ only in DNA).

Each record then gets its own pose (any rotation, scale, position), specimen colour, lighting gradient, a light
plate background with the well's rim, a few specks of debris and sensor noise.
"""
from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageDraw

from .bodyplans import PLANS, Look, Pen, Pose
from .taxonomy import Taxonomy

_PROPS = ("abdomen_w", "abdomen_l", "thorax", "head", "wing_l", "wing_w", "leg", "antenna", "eye")

#: per order: body plan, body length (fraction of the image side), palettes and the patterns its genera use
ORDER_STYLE: dict[str, dict] = {
    "Diptera": dict(plan="fly", size=0.7,
                    base=[(40, 35, 30), (95, 85, 72), (125, 92, 52), (185, 140, 45), (70, 70, 72)],
                    second=[(225, 185, 60), (160, 160, 155), (210, 120, 40), (30, 28, 26)],
                    wing=[(225, 225, 230, 90), (140, 125, 105, 120), (215, 210, 200, 70)],
                    eye=[(160, 45, 35), (70, 35, 30), (120, 70, 40)], patterns=["plain", "bands", "spots", "stripes"]),
    "Hymenoptera": dict(plan="wasp", size=0.74,
                        base=[(32, 26, 24), (150, 82, 32), (180, 122, 45), (92, 52, 30)],
                        second=[(232, 190, 45), (205, 105, 35), (236, 228, 200), (25, 22, 20)],
                        wing=[(215, 208, 192, 90), (120, 105, 85, 130)],
                        eye=[(40, 35, 30), (90, 60, 40)], patterns=["plain", "bands", "twotone"]),
    "Hemiptera": dict(plan="bug", size=0.72,
                      base=[(85, 128, 62), (122, 92, 60), (172, 62, 42), (190, 170, 112)],
                      second=[(32, 30, 28), (205, 62, 42), (230, 205, 125), (70, 100, 50)],
                      wing=[(205, 195, 175, 150), (150, 130, 100, 170)],
                      eye=[(150, 40, 35), (60, 40, 30)], patterns=["plain", "spots", "stripes", "margin"]),
    "Coleoptera": dict(plan="beetle", size=0.72,
                       base=[(30, 26, 25), (102, 62, 36), (182, 52, 32), (42, 92, 62), (42, 62, 112), (200, 122, 42)],
                       second=[(22, 20, 20), (232, 202, 82), (202, 42, 32), (240, 230, 210)],
                       wing=[(0, 0, 0, 0)],
                       eye=[(20, 20, 20), (60, 40, 30)], patterns=["plain", "spots", "stripes", "bands", "margin"]),
    "Lepidoptera": dict(plan="moth", size=0.62,
                        base=[(92, 72, 52), (110, 100, 90), (150, 120, 90), (70, 60, 50)],
                        second=[(60, 45, 35), (182, 122, 62), (240, 235, 220), (120, 60, 40)],
                        wing=[(152, 122, 92, 255), (112, 102, 92, 255), (202, 182, 132, 255), (222, 216, 200, 255),
                              (92, 72, 52, 255)],
                        eye=[(40, 30, 25), (90, 70, 50)], patterns=["plain", "bands", "spots", "margin"]),
    "Psocodea": dict(plan="tent", size=0.66,
                     base=[(172, 142, 102), (130, 110, 85), (190, 175, 140)],
                     second=[(60, 45, 35), (120, 90, 60)],
                     wing=[(222, 212, 192, 120), (180, 160, 130, 150)],
                     eye=[(40, 30, 30), (110, 40, 30)], patterns=["plain", "spots", "bands"]),
    "Trichoptera": dict(plan="tent", size=0.74,
                        base=[(100, 75, 50), (80, 70, 60), (130, 105, 70)],
                        second=[(210, 190, 140), (50, 40, 30), (160, 130, 90)],
                        wing=[(142, 112, 82, 235), (110, 95, 80, 235), (170, 145, 110, 235)],
                        eye=[(30, 25, 20)], patterns=["plain", "spots", "bands"]),
    "Orthoptera": dict(plan="hopper", size=0.72,
                       base=[(100, 140, 62), (140, 112, 72), (122, 116, 100), (170, 150, 100)],
                       second=[(60, 50, 40), (200, 180, 120), (80, 110, 50)],
                       wing=[(150, 150, 110, 200), (160, 130, 90, 200)],
                       eye=[(70, 55, 40)], patterns=["plain", "stripes", "bands"]),
    "Odonata": dict(plan="dragonfly", size=0.72,
                    base=[(62, 112, 172), (172, 52, 42), (62, 132, 82), (150, 120, 60)],
                    second=[(25, 25, 30), (200, 220, 230), (230, 200, 60)],
                    wing=[(232, 236, 242, 70), (200, 180, 120, 90)],
                    eye=[(50, 70, 110), (120, 40, 30), (40, 90, 60)], patterns=["bands", "plain", "twotone"]),
}


def _pick(rng: np.random.Generator, options: list) -> tuple:
    return tuple(options[int(rng.integers(len(options)))])


def _jitter(rng: np.random.Generator, rgb: tuple, amount: float) -> tuple:
    """Mostly a brightness change, with a little change of hue."""
    shift = rng.normal(0, amount)
    head = tuple(int(np.clip(v + shift + rng.normal(0, amount * 0.35), 0, 255)) for v in rgb[:3])
    return head + tuple(rgb[3:])


class Appearance:
    """Looks of the survey's species, derived lazily (and cached) from (seed, family, genus, species)."""

    def __init__(self, taxonomy: Taxonomy, seed: int):
        self.taxonomy = taxonomy
        self.seed = seed
        # per-instance caches (a class-level lru_cache would keep every Appearance alive)
        self.family = functools.lru_cache(maxsize=4096)(self._family)
        self.genus = functools.lru_cache(maxsize=8192)(self._genus)
        self.species = functools.lru_cache(maxsize=65536)(self._species)

    def _family(self, f: int) -> Look:
        style = ORDER_STYLE[self.taxonomy.orders[self.taxonomy.family_order[f]]]
        rng = np.random.default_rng([self.seed, 3, 1, f])
        prop = {k: float(rng.uniform(0.78, 1.25)) for k in _PROPS}
        base = _jitter(rng, _pick(rng, style["base"]), 14)
        return Look(plan=style["plan"], size=style["size"] * float(rng.uniform(0.85, 1.08)), prop=prop, base=base,
                    second=_jitter(rng, _pick(rng, style["second"]), 12), dark=tuple(int(v * 0.45) for v in base),
                    eye=_pick(rng, style["eye"]), wing=_jitter(rng, _pick(rng, style["wing"]), 10),
                    pattern="plain", pattern_n=0, pattern_w=0.0, pattern_phase=0.0)

    def _genus(self, g: int) -> Look:
        f = int(self.taxonomy.genus_family[g])
        look = self.family(f)
        style = ORDER_STYLE[self.taxonomy.orders[self.taxonomy.family_order[f]]]
        rng = np.random.default_rng([self.seed, 3, 2, g])
        pattern = str(style["patterns"][int(rng.integers(len(style["patterns"])))])
        n_spots = int(rng.integers(2, 5)) if pattern == "spots" else int(rng.integers(0, 2))
        spots = np.c_[rng.uniform(0.15, 0.6, n_spots), rng.uniform(-0.7, 0.7, n_spots), rng.uniform(0.1, 0.22, n_spots)]
        second = _jitter(rng, look.second, 25) if rng.random() < 0.5 else look.second
        prop = {k: v * float(rng.uniform(0.9, 1.1)) for k, v in look.prop.items()}
        return Look(plan=look.plan, size=look.size, prop=prop, base=_jitter(rng, look.base, 8), second=second,
                    dark=look.dark, eye=look.eye, wing=look.wing, pattern=pattern, pattern_n=int(rng.integers(1, 5)),
                    pattern_w=float(rng.uniform(0.3, 0.9)), pattern_phase=0.0, spots=spots)

    def _species(self, s: int) -> Look:
        s = int(self.taxonomy.look_of[s])  # cryptic species look exactly like their sister
        look = self.genus(int(self.taxonomy.species_genus[s]))
        rng = np.random.default_rng([self.seed, 3, 3, s])
        spots = look.spots.copy()
        if len(spots):
            spots[:, :2] += rng.normal(0, 0.08, (len(spots), 2))
            spots[:, 2] *= rng.uniform(0.8, 1.25, len(spots))
        has_mark = rng.random() < 0.6
        mark = (float(rng.uniform(0, 0.5)), float(rng.uniform(-0.5, 0.5)), float(rng.uniform(0.15, 0.3))) if has_mark \
            else (0.0, 0.0, 0.0)
        mark_colour = (235, 230, 215) if rng.random() < 0.5 else look.dark
        return Look(plan=look.plan, size=look.size * float(rng.uniform(0.93, 1.07)),
                    prop={k: v * float(rng.uniform(0.94, 1.06)) for k, v in look.prop.items()},
                    base=_jitter(rng, look.base, 10), second=_jitter(rng, look.second, 8), dark=look.dark,
                    eye=look.eye, wing=look.wing, pattern=look.pattern, pattern_n=look.pattern_n,
                    pattern_w=float(np.clip(look.pattern_w * rng.uniform(0.8, 1.2), 0.15, 1.0)),
                    pattern_phase=float(rng.uniform(0, 1)), spots=spots, mark=mark, mark_colour=mark_colour)


# --- background -------------------------------------------------------------------------------------------------

#: backgrounds per survey; each record takes one of them in one of 8 orientations, then its own lighting and noise
N_BACKDROPS = 32


def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    return (xs + 0.5) / side - 0.5, (ys + 0.5) / side - 0.5


def _backdrop(side: int, rng: np.random.Generator) -> np.ndarray:
    """(side, side, 3) uint8: a light plate with a slight blue tint, vignette and the bright rim of the well."""
    x, y = _grid(side)
    level = rng.uniform(196, 228)
    tint = np.array([0.965, 0.985, 1.03], dtype=np.float32) * rng.uniform(0.98, 1.02, 3).astype(np.float32)
    cx, cy = rng.uniform(-0.12, 0.12, 2)
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    radius = rng.uniform(0.55, 0.85)
    inside = 1.0 - 0.18 * (r / radius) ** 2
    outside = 0.82 - 0.1 * np.clip(r - radius, 0, 1)
    lum = np.where(r < radius, inside, outside)
    lum = lum + 0.12 * np.exp(-(((r - radius) / 0.012) ** 2))
    return np.clip((level * lum)[..., None] * tint, 0, 255).astype(np.uint8)


class Renderer:
    """Renders one specimen photo per record; deterministic given the survey seed and the record's generator."""

    def __init__(self, appearance: Appearance, size: int, image_format: str, jpeg_quality: int):
        self.appearance = appearance
        self.size = size
        self.format = image_format
        self.quality = jpeg_quality
        rng = np.random.default_rng([appearance.seed, 4, size])
        side = 2 * size  # drawn at twice the size, then downsampled (anti-aliasing)
        self._backdrops = [Image.fromarray(_backdrop(side, rng)) for _ in range(N_BACKDROPS)]
        # sensor noise: one tile per survey, cropped at a random offset per record (much cheaper than drawing it)
        self._noise = rng.normal(0, 2.5, (2 * size, 2 * size, 3)).astype(np.float32)
        self._x, self._y = _grid(size)

    def render(self, species: int, rng: np.random.Generator) -> Image.Image:
        """The photo of one specimen of ``species`` (an RGB image of ``size`` x ``size`` pixels)."""
        look = self.appearance.species(species)
        size, side = self.size, 2 * self.size
        pose = Pose(angle=float(rng.uniform(0, 2 * np.pi)), scale=float(rng.uniform(0.88, 1.1)),
                    dx=float(rng.uniform(-0.06, 0.06)), dy=float(rng.uniform(-0.06, 0.06)),
                    leg_jitter=rng.normal(0, 0.15, (6, 2)), wing_spread=float(rng.normal(0, 0.08)),
                    colour_gain=float(rng.uniform(0.88, 1.12)))
        canvas = self._backdrops[int(rng.integers(N_BACKDROPS))]
        turn = int(rng.integers(8))
        canvas = canvas.transpose(Image.Transpose(turn - 1)) if turn else canvas.copy()
        draw = ImageDraw.Draw(canvas, "RGBA")
        for _ in range(int(rng.poisson(1.0))):  # specks of debris in the well
            px, py, pr = rng.uniform(0, side), rng.uniform(0, side), rng.uniform(0.5, 2.0) * side / 128
            draw.ellipse((px - pr, py - pr, px + pr, py + pr), fill=(90, 80, 70, int(rng.integers(60, 160))))
        PLANS[look.plan](Pen(draw, side, look, pose), look, pose)
        arr = np.asarray(canvas.reduce(2), dtype=np.float32)
        # lighting: a brightness gradient in a random direction, contrast and exposure; then sensor noise
        theta = rng.uniform(0, 2 * np.pi)
        gain = (1.0 + rng.uniform(0.0, 0.16) * (np.cos(theta) * self._x + np.sin(theta) * self._y))
        contrast, exposure = rng.uniform(0.9, 1.1), rng.uniform(-8, 8)
        ox, oy = rng.integers(0, size, 2)
        arr = (arr * contrast + (128.0 * (1 - contrast) + exposure)) * gain[..., None]
        arr += self._noise[oy: oy + size, ox: ox + size]
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))

    def encode(self, img: Image.Image) -> bytes:
        """JPEG or PNG bytes of an image."""
        buf = io.BytesIO()
        if self.format == "jpeg":
            img.save(buf, format="JPEG", quality=self.quality)
        else:
            img.save(buf, format="PNG", compress_level=6)
        return buf.getvalue()
