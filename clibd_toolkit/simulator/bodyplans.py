"""Insect body plans drawn as polygons: one drawing function per order's plan.

Coordinates are in the insect's own frame: x to the insect's right, y from head (negative) to tail (positive),
in units of the body length. :class:`Pen` maps them onto the canvas (scale, rotation, translation) and draws
with alpha blending, so wings can be translucent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import ImageDraw

RGB = tuple[int, int, int]


@dataclass
class Look:
    """Everything that decides how a species looks (shared by look-alike cryptic species)."""

    plan: str
    size: float  # body length as a fraction of the canvas side
    prop: dict[str, float]  # multipliers of the plan's default dimensions (abdomen, thorax, head, wing, leg, ...)
    base: RGB  # main body colour
    second: RGB  # pattern colour
    dark: RGB  # legs, antennae, outlines
    eye: RGB
    wing: tuple[int, int, int, int]  # wing membrane or scale colour with alpha
    pattern: str  # plain | bands | stripes | spots | margin | twotone
    pattern_n: int
    pattern_w: float  # relative width of bands / stripes / spots
    pattern_phase: float
    spots: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (k, 3): u >= 0, v, r (mirrored)
    mark: tuple[float, float, float] = (0.0, 0.0, 0.0)  # species mark on the thorax: x, y, radius (0 = none)
    mark_colour: RGB = (255, 255, 255)


@dataclass
class Pose:
    """Per-specimen variation: where and how the insect lies in the well."""

    angle: float  # radians
    scale: float  # multiplier of Look.size
    dx: float  # centre offset, fraction of the canvas
    dy: float
    leg_jitter: np.ndarray  # (6, 2) angle offsets (radians) of each leg's two joints
    wing_spread: float  # radians added to the wing angle
    colour_gain: float  # brightness of this specimen's colours


class Pen:
    """Draws insect-frame polygons onto an RGB canvas."""

    def __init__(self, draw: ImageDraw.ImageDraw, side: int, look: Look, pose: Pose):
        self.draw = draw
        self.length = side * look.size * pose.scale
        c, s = math.cos(pose.angle), math.sin(pose.angle)
        self.rot = np.array([[c, -s], [s, c]]) * self.length
        self.centre = np.array([side * (0.5 + pose.dx), side * (0.5 + pose.dy)])
        self.gain = pose.colour_gain

    def xy(self, pts: np.ndarray) -> list[float]:
        """Flat [x0, y0, x1, y1, ...] canvas coordinates (the form ImageDraw takes fastest)."""
        return (np.asarray(pts, dtype=float) @ self.rot.T + self.centre).ravel().tolist()

    def colour(self, rgb: tuple[int, ...]) -> tuple[int, ...]:
        head = tuple(min(255, int(v * self.gain)) for v in rgb[:3])
        return head + tuple(rgb[3:])

    def poly(self, pts: np.ndarray, fill: tuple[int, ...], outline: tuple[int, ...] | None = None) -> None:
        edge = None if outline is None else self.colour(outline)
        self.draw.polygon(self.xy(pts), fill=self.colour(fill), outline=edge)

    def line(self, pts: np.ndarray, fill: tuple[int, ...], width: float) -> None:
        self.draw.line(self.xy(pts), fill=self.colour(fill), width=max(1, round(width * self.length)), joint="curve")


# --- geometry -----------------------------------------------------------------------------------------------

_T = np.linspace(0, 2 * np.pi, 28, endpoint=False)
_COS, _SIN = np.cos(_T), np.sin(_T)


def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return np.column_stack((cx + rx * _COS, cy + ry * _SIN))


def tapered(cx: float, cy: float, rx: float, ry: float, taper: float) -> np.ndarray:
    """An egg shape: narrower towards the tail (+y) by ``taper`` in 0..1."""
    pts = ellipse(cx, cy, rx, ry)
    k = 1 - taper * np.clip((pts[:, 1] - cy) / ry, 0, 1)
    pts[:, 0] = cx + (pts[:, 0] - cx) * k
    return pts


def band(cx: float, cy: float, rx: float, ry: float, y0: float, y1: float, taper: float = 0.0) -> np.ndarray:
    """The part of an (egg-shaped) ellipse between heights y0 < y1 (absolute coordinates)."""
    y0, y1 = max(y0, cy - ry * 0.999), min(y1, cy + ry * 0.999)
    ys = np.linspace(y0, y1, 8)
    t = (ys - cy) / ry
    half = rx * np.sqrt(np.clip(1 - t**2, 0, 1)) * (1 - taper * np.clip(t, 0, 1))
    return np.concatenate((np.column_stack((cx + half, ys)), np.column_stack((cx - half, ys))[::-1]))


def stripe(cx: float, cy: float, rx: float, ry: float, x0: float, x1: float, taper: float = 0.0) -> np.ndarray:
    """The part of an (egg-shaped) ellipse between x0 < x1."""
    ys = np.linspace(cy - ry * 0.98, cy + ry * 0.98, 12)
    t = (ys - cy) / ry
    half = rx * np.sqrt(np.clip(1 - t**2, 0, 1)) * (1 - taper * np.clip(t, 0, 1))
    left, right = np.maximum(cx - half, cx + x0), np.minimum(cx + half, cx + x1)
    ok = right > left
    if ok.sum() < 2:
        return np.zeros((0, 2))
    return np.concatenate((np.column_stack((right[ok], ys[ok])), np.column_stack((left[ok], ys[ok]))[::-1]))


def scaled(pts: np.ndarray, origin: np.ndarray, k: float) -> np.ndarray:
    return origin + (pts - origin) * k


def mirrored(pts: np.ndarray) -> np.ndarray:
    return pts * np.array([-1.0, 1.0])


# --- shared parts ---------------------------------------------------------------------------------------------


def pattern_on(pen: Pen, look: Look, cx: float, cy: float, rx: float, ry: float, taper: float = 0.0) -> None:
    """The genus pattern, with the species' phase and spots, on an (egg-shaped) ellipse part."""
    n, w, ph, col = look.pattern_n, look.pattern_w, look.pattern_phase, look.second
    if look.pattern == "bands":
        for i in range(n):
            y0 = cy - ry + 2 * ry * (i + 0.5 + 0.4 * ph) / (n + 0.5)
            pen.poly(band(cx, cy, rx, ry, y0, y0 + 2 * ry * w / (n + 1), taper), col)
    elif look.pattern == "stripes":
        for i in range(n):
            x = (i + 0.5) / n - 0.5 + 0.15 * ph / n
            for sgn in ((1,) if abs(x) < 1e-6 else (1, -1)):
                xc = sgn * x * 2 * rx
                pts = stripe(cx, cy, rx, ry, xc - w * rx / n, xc + w * rx / n, taper)
                if len(pts):
                    pen.poly(pts, col)
    elif look.pattern == "margin":
        pen.poly(tapered(cx, cy, rx, ry, taper), col)
        pen.poly(tapered(cx, cy - ry * 0.05, rx * (0.85 - 0.3 * w), ry * (0.88 - 0.2 * w), taper), look.base)
    elif look.pattern == "twotone":
        pen.poly(band(cx, cy, rx, ry, cy + ry * (0.1 - 0.6 * w + 0.2 * ph), cy + ry, taper), col)
    if look.pattern in ("spots", "bands", "stripes", "margin", "twotone") and len(look.spots):
        for u, v, r in look.spots:
            for sgn in (1, -1):
                pen.poly(ellipse(cx + sgn * u * rx, cy + v * ry, r * rx, r * rx), col if look.pattern == "spots"
                         else look.dark)


def legs(pen: Pen, look: Look, pose: Pose, y: tuple[float, float, float], length: float, width: float,
         hind: float = 1.0, hind_width: float = 1.0, x0: float = 0.05, jumping: bool = False) -> None:
    """Three pairs of two-segment legs from the thorax; front legs point forward, hind legs back.

    ``jumping`` hind legs (grasshoppers) lie along the body with the tibia folded back under the femur."""
    base_angles = (-0.9, 0.15, 1.25 if jumping else 0.85)  # angle from the sideways direction, + = backwards
    for side in (1, -1):
        for k, (yk, a) in enumerate(zip(y, base_angles)):
            j = pose.leg_jitter[(0 if side > 0 else 3) + k]
            seg = length * (hind if k == 2 else 1.0)
            a1 = a + j[0]
            knee = np.array([side * (x0 + seg * 0.5 * math.cos(a1)), yk + seg * 0.5 * math.sin(a1)])
            a1 = a1 if not (k == 2 and jumping) else a1 - 0.4
            a2 = a1 + (2.6 if (k == 2 and jumping) else 0.7 if k == 2 else 0.5) * (1 if a >= 0 else -1) + j[1]
            tip = knee + np.array([side * seg * 0.55 * math.cos(a2), seg * 0.55 * math.sin(a2)])
            wdt = width * (hind_width if k == 2 else 1.0)
            pen.line(np.array([[side * x0 * 0.6, yk], knee]), look.dark, wdt)
            pen.line(np.array([knee, tip]), look.dark, wdt * 0.7)


def antennae(pen: Pen, look: Look, head: tuple[float, float], length: float, width: float, spread: float = 0.5,
             bend: float = 0.3) -> None:
    hx, hy = head
    for side in (1, -1):
        p0 = np.array([side * 0.02, hy])
        p1 = p0 + length * 0.5 * np.array([side * math.sin(spread), -math.cos(spread)])
        p2 = p1 + length * 0.5 * np.array([side * math.sin(spread + bend), -math.cos(spread + bend)])
        pen.line(np.array([p0, p1, p2]), look.dark, width)


def head_with_eyes(pen: Pen, look: Look, y: float, rx: float, ry: float, eye: float) -> None:
    pen.poly(ellipse(0, y, rx, ry), look.base)
    for side in (1, -1):
        pen.poly(ellipse(side * rx * 0.72, y - ry * 0.05, eye * 0.8, eye), look.eye)


def mark(pen: Pen, look: Look, cy: float, rx: float, ry: float) -> None:
    x, y, r = look.mark
    if r > 0:
        for sgn in (1, -1):
            pen.poly(ellipse(sgn * x * rx, cy + y * ry, r * rx, r * rx), look.mark_colour)


_WING_T = np.linspace(0, np.pi, 14)


def wing(base: np.ndarray, length: float, width: float, angle: float, side: int, tip_round: float = 0.5) -> np.ndarray:
    """A wing outline from ``base``, pointing back-and-out at ``angle`` from the body axis."""
    t = _WING_T
    # an elongated half-ellipse profile along the wing axis
    along = length * (1 - np.cos(t)) / 2
    across = width * np.sin(t) ** (0.6 + tip_round)
    pts = np.concatenate((np.column_stack((along, across * 0.35)), np.column_stack((along[::-1], -across[::-1]))))
    c, s = math.cos(angle), math.sin(angle)
    direction = np.array([side * s, c])  # angle 0 = straight back
    normal = np.array([side * c, -s])  # towards the leading (front, outer) edge
    return base + pts[:, :1] * direction + pts[:, 1:] * normal


# --- plans ------------------------------------------------------------------------------------------------------


def draw_fly(pen: Pen, look: Look, pose: Pose) -> None:
    p = look.prop
    ab_rx, ab_ry = 0.15 * p["abdomen_w"], 0.22 * p["abdomen_l"]
    legs(pen, look, pose, (-0.14, -0.08, -0.02), 0.42 * p["leg"], 0.022)
    for side in (1, -1):
        w = wing(np.array([side * 0.06, -0.12]), 0.62 * p["wing_l"], 0.13 * p["wing_w"],
                 0.42 + pose.wing_spread, side)
        pen.poly(w, look.wing, outline=look.dark + (110,))
        pen.line(np.array([w[2], w[9]]), look.dark + (90,), 0.006)
    pen.poly(tapered(0, 0.2, ab_rx, ab_ry, 0.35), look.base)
    pattern_on(pen, look, 0, 0.2, ab_rx, ab_ry, 0.35)
    pen.poly(ellipse(0, -0.08, 0.14 * p["thorax"], 0.13 * p["thorax"]), look.base)
    mark(pen, look, -0.08, 0.14 * p["thorax"], 0.13 * p["thorax"])
    antennae(pen, look, (0, -0.33), 0.08 * p["antenna"], 0.014, 0.4, 0.2)
    head_with_eyes(pen, look, -0.26, 0.12 * p["head"], 0.08 * p["head"], 0.065 * p["eye"])


def draw_wasp(pen: Pen, look: Look, pose: Pose) -> None:
    p = look.prop
    ab_rx, ab_ry = 0.12 * p["abdomen_w"], 0.25 * p["abdomen_l"]
    legs(pen, look, pose, (-0.2, -0.14, -0.09), 0.5 * p["leg"], 0.02, hind=1.25)
    for side in (1, -1):
        for k, (ln, wd, ang) in enumerate(((0.55, 0.09, 0.2), (0.4, 0.06, 0.3))):
            w = wing(np.array([side * 0.05, -0.2 + 0.04 * k]), ln * p["wing_l"], wd * p["wing_w"],
                     ang + pose.wing_spread, side)
            pen.poly(w, look.wing, outline=look.dark + (100,))
    pen.line(np.array([[0, -0.1], [0, 0.02]]), look.dark, 0.035)  # the narrow waist (petiole)
    pen.poly(tapered(0, 0.26, ab_rx, ab_ry, 0.6), look.base)
    pattern_on(pen, look, 0, 0.26, ab_rx, ab_ry, 0.6)
    pen.poly(ellipse(0, -0.17, 0.1 * p["thorax"], 0.11 * p["thorax"]), look.base)
    mark(pen, look, -0.17, 0.1 * p["thorax"], 0.11 * p["thorax"])
    antennae(pen, look, (0, -0.37), 0.34 * p["antenna"], 0.014, 0.35, 0.5)
    head_with_eyes(pen, look, -0.32, 0.09 * p["head"], 0.075 * p["head"], 0.04 * p["eye"])


def draw_bug(pen: Pen, look: Look, pose: Pose) -> None:
    p = look.prop
    w = 0.19 * p["abdomen_w"]
    legs(pen, look, pose, (-0.12, -0.04, 0.04), 0.42 * p["leg"], 0.022)
    antennae(pen, look, (0, -0.38), 0.28 * p["antenna"], 0.014, 0.5, 0.3)
    body = np.array([[0, -0.3], [w * 0.8, -0.24], [w, -0.12], [w * 1.02, 0.15], [w * 0.7, 0.36], [0, 0.42],
                     [-w * 0.7, 0.36], [-w * 1.02, 0.15], [-w, -0.12], [-w * 0.8, -0.24]])
    pen.poly(body, look.base, outline=look.dark)
    pattern_on(pen, look, 0, 0.1, w, 0.3, 0.2)
    for side in (1, -1):  # the membranous tips of the forewings (hemelytra) overlap at the back
        pen.poly(np.array([[0, 0.2], [side * w * 0.9, 0.22], [side * w * 0.5, 0.44], [-side * w * 0.1, 0.47]]),
                 look.wing, outline=look.dark + (120,))
    pen.poly(np.array([[-w * 0.55, -0.1], [w * 0.55, -0.1], [0, 0.16]]), look.second)  # scutellum
    pen.poly(np.array([[-w * 0.78, -0.26], [w * 0.78, -0.26], [w, -0.1], [-w, -0.1]]), look.base, outline=look.dark)
    mark(pen, look, -0.18, w * 0.8, 0.08)
    head_with_eyes(pen, look, -0.32, 0.08 * p["head"], 0.06 * p["head"], 0.03 * p["eye"])


def draw_beetle(pen: Pen, look: Look, pose: Pose) -> None:
    p = look.prop
    rx, ry, cy = 0.21 * p["abdomen_w"], 0.3 * p["abdomen_l"], 0.12
    legs(pen, look, pose, (-0.2, -0.06, 0.06), 0.36 * p["leg"], 0.028, x0=0.08)
    antennae(pen, look, (0, -0.42), 0.22 * p["antenna"], 0.016, 0.6, 0.3)
    head_with_eyes(pen, look, -0.37, 0.09 * p["head"], 0.07 * p["head"], 0.03 * p["eye"])
    pen.poly(ellipse(0, -0.24, 0.16 * p["thorax"], 0.1 * p["thorax"]), look.base, outline=look.dark)
    mark(pen, look, -0.24, 0.16 * p["thorax"], 0.1 * p["thorax"])
    pen.poly(ellipse(0, cy, rx, ry), look.base, outline=look.dark)
    pattern_on(pen, look, 0, cy, rx, ry)
    pen.line(np.array([[0, cy - ry], [0, cy + ry]]), look.dark, 0.012)  # elytral suture
    pen.poly(ellipse(-rx * 0.4, cy - ry * 0.35, rx * 0.18, ry * 0.3), (255, 255, 255, 70))  # shine of hard elytra


def draw_moth(pen: Pen, look: Look, pose: Pose) -> None:
    """Moths at rest with the wings spread: broad triangular forewings over rounded hindwings."""
    p = look.prop
    wl, ww, spread = p["wing_l"], p["wing_w"], pose.wing_spread
    for side in (1, -1):
        sx = np.array([side, 1.0])
        hind = np.array([[0.03, -0.04], [0.22 * wl, -0.02], [0.36 * wl, 0.08 * ww], [0.32 * wl, 0.2 * ww],
                         [0.18 * wl, 0.26 * ww], [0.05, 0.14]])
        fore = np.array([[0.03, -0.16], [0.25 * wl, -0.24 - 0.04 * ww], [0.5 * wl, -0.26 - 0.06 * ww],
                         [0.56 * wl, -0.2], [0.5 * wl, 0.0 + 0.06 * ww], [0.36 * wl, 0.1 * ww], [0.05, -0.02]])
        rot = np.array([[np.cos(spread), -side * np.sin(spread)], [side * np.sin(spread), np.cos(spread)]])
        hind, fore = (hind * sx) @ rot.T, (fore * sx) @ rot.T
        pen.poly(hind, _mix(look.wing[:3], look.base, 0.4) + (255,), outline=look.dark)
        pen.poly(fore, look.wing[:3] + (255,), outline=look.dark)
        origin = fore[0]
        if look.pattern in ("bands", "margin"):  # cross-lines: rings of the wing outline scaled about its base
            for i in range(look.pattern_n if look.pattern == "bands" else 1):
                k1 = 0.95 - (i + 0.4 * look.pattern_phase) * 0.6 / max(look.pattern_n, 1)
                k0 = k1 - 0.1 * (0.5 + look.pattern_w)
                pen.poly(scaled(fore, origin, k1), look.second + (255,))
                pen.poly(scaled(fore, origin, max(k0, 0.05)), look.wing[:3] + (255,))
        if look.pattern in ("spots", "stripes", "twotone"):
            for u, v, r in look.spots:  # eye spots on the forewing
                centre = origin + (fore[3] - origin) * (0.35 + 0.6 * u) + np.array([0, 0.08 * v])
                pen.poly(ellipse(centre[0], centre[1], 0.045 * (0.6 + r), 0.045 * (0.6 + r)), look.second)
                pen.poly(ellipse(centre[0], centre[1], 0.018 * (0.6 + r), 0.018 * (0.6 + r)), look.dark)
    pen.poly(tapered(0, 0.08, 0.055 * p["abdomen_w"], 0.22 * p["abdomen_l"], 0.4), look.base)
    pen.poly(ellipse(0, -0.14, 0.07 * p["thorax"], 0.09 * p["thorax"]), look.base)
    mark(pen, look, -0.14, 0.07 * p["thorax"], 0.09 * p["thorax"])
    for side in (1, -1):  # feathery antennae: a thick shaft
        shaft = np.array([[side * 0.02, -0.27], [side * 0.1 * p["antenna"], -0.27 - 0.16 * p["antenna"]]])
        pen.line(shaft, look.dark, 0.02)
    head_with_eyes(pen, look, -0.25, 0.06 * p["head"], 0.05 * p["head"], 0.03 * p["eye"])


def draw_tent(pen: Pen, look: Look, pose: Pose) -> None:
    """Roof-winged insects at rest (caddisflies, barklice): wings folded over the body, long antennae."""
    p = look.prop
    legs(pen, look, pose, (-0.16, -0.1, -0.04), 0.45 * p["leg"], 0.018)
    antennae(pen, look, (0, -0.36), 0.7 * p["antenna"], 0.01, 0.25, 0.15)
    head_with_eyes(pen, look, -0.3, 0.08 * p["head"], 0.07 * p["head"], 0.035 * p["eye"])
    pen.poly(ellipse(0, -0.17, 0.08 * p["thorax"], 0.08 * p["thorax"]), look.base)
    mark(pen, look, -0.17, 0.08 * p["thorax"], 0.08 * p["thorax"])
    w = 0.13 * p["wing_w"]
    for side in (1, -1):
        outline = np.array([[0, -0.12], [side * w, -0.05], [side * w * 1.1, 0.3 * p["wing_l"]],
                            [side * w * 0.4, 0.48 * p["wing_l"]], [0, 0.46 * p["wing_l"]]])
        pen.poly(outline, look.wing, outline=look.dark)
    pattern_on(pen, look, 0, 0.18, w * 1.05, 0.28 * p["wing_l"])


def draw_hopper(pen: Pen, look: Look, pose: Pose) -> None:
    """Grasshoppers and crickets: long body, saddle pronotum, big jumping hind legs."""
    p = look.prop
    legs(pen, look, pose, (-0.18, -0.1, -0.02), 0.3 * p["leg"], 0.022, hind=1.9, hind_width=2.2, jumping=True)
    antennae(pen, look, (0, -0.42), 0.3 * p["antenna"], 0.012, 0.3, 0.1)
    rx, ry = 0.1 * p["abdomen_w"], 0.3 * p["abdomen_l"]
    pen.poly(tapered(0, 0.12, rx, ry, 0.3), look.base, outline=look.dark)
    for side in (1, -1):
        pen.poly(np.array([[side * 0.01, -0.12], [side * rx * 0.95, -0.08], [side * rx * 0.7, 0.4 * p["wing_l"]],
                           [side * 0.01, 0.42 * p["wing_l"]]]), look.wing, outline=look.dark)
    pattern_on(pen, look, 0, 0.12, rx, ry, 0.3)
    pen.poly(np.array([[-0.09, -0.3], [0.09, -0.3], [0.11, -0.1], [-0.11, -0.1]]) * [p["thorax"], 1], look.base,
             outline=look.dark)
    mark(pen, look, -0.2, 0.1 * p["thorax"], 0.1)
    head_with_eyes(pen, look, -0.36, 0.08 * p["head"], 0.08 * p["head"], 0.035 * p["eye"])


def draw_dragonfly(pen: Pen, look: Look, pose: Pose) -> None:
    p = look.prop
    for side in (1, -1):
        for k, y in enumerate((-0.22, -0.14)):
            w = wing(np.array([side * 0.03, y]), 0.55 * p["wing_l"], 0.07 * p["wing_w"],
                     1.45 + 0.18 * k + pose.wing_spread, side, 0.4)
            pen.poly(w, look.wing, outline=look.dark + (110,))
    legs(pen, look, pose, (-0.2, -0.17, -0.14), 0.18 * p["leg"], 0.012)
    rx = 0.032 * p["abdomen_w"]
    pen.poly(np.array([[rx, -0.1], [rx * 0.8, 0.55], [0, 0.6], [-rx * 0.8, 0.55], [-rx, -0.1]]), look.base)
    pattern_on(pen, look, 0, 0.25, rx, 0.34)
    pen.poly(ellipse(0, -0.18, 0.07 * p["thorax"], 0.1 * p["thorax"]), look.base)
    mark(pen, look, -0.18, 0.07 * p["thorax"], 0.1 * p["thorax"])
    head_with_eyes(pen, look, -0.32, 0.09 * p["head"], 0.06 * p["head"], 0.06 * p["eye"])


def _mix(a: tuple[int, ...], b: tuple[int, ...], t: float) -> RGB:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a[:3], b[:3]))  # type: ignore[return-value]


PLANS: dict[str, Callable[[Pen, Look, Pose], None]] = {
    "fly": draw_fly, "wasp": draw_wasp, "bug": draw_bug, "beetle": draw_beetle, "moth": draw_moth,
    "tent": draw_tent, "hopper": draw_hopper, "dragonfly": draw_dragonfly,
}
