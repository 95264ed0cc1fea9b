"""Synthetic May-Grünwald-Giemsa-like white-cell images: default training data and fast test fixtures.

Each image is a pale pink smear background with a few red blood cells and one centred white cell (or, for
"platelet", a few small purple fragments).  The eight classes differ loosely as real ones do: nucleus shape,
size and colour, cytoplasm colour and granules.  Only numpy and Pillow are used; drawing is vectorised over
coordinate grids, so a 128 px image takes about 5 ms on one CPU core.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from bmcell.core.errors import BmcellError

SYNTH_CLASSES: tuple[str, ...] = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)

# Relative class frequencies, loosely those of public peripheral-blood sets: most common / rarest is about 3.
SYNTH_WEIGHTS: dict[str, float] = {
    "basophil": 0.35,
    "eosinophil": 1.0,
    "erythroblast": 0.5,
    "ig": 0.9,
    "lymphocyte": 0.4,
    "monocyte": 0.45,
    "neutrophil": 1.0,
    "platelet": 0.7,
}

MIN_SIZE = 32
MIN_IMAGES_PER_CLASS = 4
JPEG_QUALITY = 90
SYNTH_COMMENT = b"bmcell synth"  # the JPEG comment of every image written here: a release credits them as synthetic

_Colour = tuple[float, float, float]
_Region = tuple[slice, slice]

# Cell radius as a fraction of the image side (before the ±15% scale jitter), and how far from the cell
# centre, in cell radii, its drawing may reach (platelet fragments are scattered a few radii apart).
_CELL_FRAME: dict[str, tuple[float, float]] = {
    "basophil": (0.23, 1.3),
    "eosinophil": (0.26, 1.3),
    "erythroblast": (0.16, 1.3),
    "ig": (0.29, 1.3),
    "lymphocyte": (0.17, 1.3),
    "monocyte": (0.30, 1.3),
    "neutrophil": (0.25, 1.3),
    "platelet": (0.045, 4.5),
}

_BACKGROUND: _Colour = (0.95, 0.87, 0.84)
_RBC: _Colour = (0.89, 0.64, 0.64)
_RBC_PALLOR: _Colour = (0.95, 0.82, 0.80)


class SynthError(BmcellError):
    """Arguments the synthetic generator cannot honour."""


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre x and y coordinates of a size x size image."""
    centres = np.arange(size, dtype=np.float32) + 0.5
    return centres[None, :].repeat(size, axis=0), centres[:, None].repeat(size, axis=1)


def _box(x: float, y: float, half: float, size: int) -> _Region:
    """Rows and columns of a size x size image within `half` pixels of (x, y), clipped to the image."""
    return (
        slice(max(0, math.floor(y - half)), min(size, math.ceil(y + half) + 1)),
        slice(max(0, math.floor(x - half)), min(size, math.ceil(x + half) + 1)),
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth random field in [0, 1] of the given (rows, columns) shape, about `cells` blobs across."""
    coarse = Image.fromarray(rng.random((cells, cells), dtype=np.float32), mode="F")
    smooth = coarse.resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    return np.asarray(smooth, dtype=np.float32).clip(0.0, 1.0)


def _soft_ellipse(dx: np.ndarray, dy: np.ndarray, a: float, b: float, px_per_unit: float) -> np.ndarray:
    """Anti-aliased mask of the axis-aligned ellipse with semi-axes a, b centred at dx = dy = 0."""
    q = np.sqrt((dx / a) ** 2 + (dy / b) ** 2)
    return np.clip((1.0 - q) * (min(a, b) * px_per_unit) + 0.5, 0.0, 1.0)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """Samples of exp(-x^2 / 2 sigma^2) at integer x out to 2.5 sigma (peak 1, not normalised)."""
    r = max(1, math.ceil(2.5 * sigma))
    return np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float32) / sigma) ** 2)


def _convolve_valid(padded: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' convolution of the last two axes of `padded` with `kernel` along each."""
    n = len(kernel) - 1
    h, w = padded.shape[-2] - n, padded.shape[-1] - n
    rows = sum(k * padded[..., :, j : j + w] for j, k in enumerate(kernel))
    return sum(k * rows[..., j : j + h, :] for j, k in enumerate(kernel))


def _gaussian_stamps(shape: tuple[int, int], xs: np.ndarray, ys: np.ndarray, sigma: float) -> np.ndarray:
    """Mask of the given shape with one round Gaussian dot (peak 1, overlaps clipped) at each (xs, ys)."""
    kernel = _gaussian_kernel(sigma)
    r = len(kernel) // 2
    h, w = shape
    acc = np.zeros((h + 2 * r, w + 2 * r), dtype=np.float32)
    xi = np.floor(xs).astype(np.int64) + r
    yi = np.floor(ys).astype(np.int64) + r
    inside = (xi >= 0) & (xi < w + 2 * r) & (yi >= 0) & (yi < h + 2 * r)
    np.add.at(acc, (yi[inside], xi[inside]), 1.0)
    return np.minimum(_convolve_valid(acc, kernel), 1.0)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 3 x H x W image, edges extended."""
    kernel = _gaussian_kernel(sigma)
    r = len(kernel) // 2
    return _convolve_valid(np.pad(image, ((0, 0), (r, r), (r, r)), mode="edge"), kernel / kernel.sum())


class _Canvas:
    """A float RGB image (3 x H x W) plus a rotated, scaled frame in which one cell is drawn.

    Cell masks cover only the frame's region (the box around the cell), which keeps drawing cheap.
    """

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        self.rng = rng
        self.rgb = np.empty((3, size, size), dtype=np.float32)
        self.rgb[:] = np.asarray(_BACKGROUND, dtype=np.float32)[:, None, None]
        self.rgb += (_smooth_noise(rng, (size, size), 5) - 0.5) * 0.05
        self.cx = self.cy = size / 2.0
        self.cos, self.sin, self.radius = 1.0, 0.0, 1.0
        self.region: _Region = (slice(0, size), slice(0, size))
        self.u = self.v = np.zeros((size, size), dtype=np.float32)

    def paint(self, mask: np.ndarray, colour: _Colour | np.ndarray, region: _Region | None = None) -> None:
        """Blend `colour` (an RGB triple or a per-pixel 3 x h x w array) where `mask` is set in `region`."""
        colour = np.asarray(colour, dtype=np.float32)
        target = self.rgb[(slice(None), *(region or self.region))]
        target += ((colour.reshape(3, 1, 1) if colour.ndim == 1 else colour) - target) * mask

    def red_blood_cells(self) -> None:
        """Scatter a few pale discs with lighter centres around the image, mostly away from its centre."""
        rng, size = self.rng, self.size
        xx, yy = _pixel_grid(size)
        for _ in range(int(rng.integers(2, 6))):
            angle = rng.uniform(0.0, 2.0 * np.pi)
            dist = rng.uniform(0.3, 0.7) * size
            x0, y0 = size / 2 + dist * math.cos(angle), size / 2 + dist * math.sin(angle)
            rx = rng.uniform(0.09, 0.12) * size
            ry = rx * rng.uniform(0.88, 1.0)
            box = _box(x0, y0, rx + 1.0, size)
            dx, dy = xx[box] - x0, yy[box] - y0
            if dx.size:
                self.paint(_soft_ellipse(dx, dy, rx, ry, 1.0), _RBC, box)
                pallor = np.clip(1.0 - np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2) / 0.6, 0.0, 1.0)
                self.paint(0.8 * pallor, _RBC_PALLOR, box)

    def set_frame(self, cx: float, cy: float, angle: float, radius: float, extent: float) -> None:
        """Centre the cell frame at pixel (cx, cy), turned by `angle`, 1 unit = `radius` px, reaching `extent` units."""
        self.cx, self.cy, self.radius = cx, cy, radius
        self.cos, self.sin = math.cos(angle), math.sin(angle)
        self.region = _box(cx, cy, extent * radius + 1.0, self.size)
        xx, yy = _pixel_grid(self.size)
        dx, dy = xx[self.region] - cx, yy[self.region] - cy
        self.u = (dx * self.cos + dy * self.sin) / radius
        self.v = (-dx * self.sin + dy * self.cos) / radius

    def ellipse(
        self, x: float, y: float, a: float, b: float, angle: float = 0.0, wobble: float = 0.0
    ) -> np.ndarray:
        """Mask of an ellipse in cell units, optionally with a randomly wobbly (irregular) outline."""
        x, y, a, b = float(x), float(y), float(a), float(b)  # numpy scalars would promote the float32 grids
        du, dv = self.u - x, self.v - y
        if angle:
            c, s = math.cos(angle), math.sin(angle)
            du, dv = du * c + dv * s, -du * s + dv * c
        if not wobble:
            return _soft_ellipse(du, dv, a, b, self.radius)
        # cos/sin of 2, 3 and 4 times the polar angle, from the unit direction (c, s), without arctan2.
        r = np.sqrt((du / a) ** 2 + (dv / b) ** 2) + 1e-6
        c, s = du / (a * r), dv / (b * r)
        c2, s2 = c * c - s * s, 2.0 * c * s
        harmonics = (c2, s2, c * c2 - s * s2, s * c2 + c * s2, c2 * c2 - s2 * s2, 2.0 * c2 * s2)
        weights = (self.rng.uniform(-1.0, 1.0, len(harmonics)) * wobble / 2.0).tolist()
        outline = 1.0 + sum(w * h for w, h in zip(weights, harmonics))
        return _soft_ellipse(du / outline, dv / outline, a, b, self.radius)

    def lobes(self, centres: list[tuple[float, float]], a: float, b: float, strand: float) -> np.ndarray:
        """Mask of nuclear lobes at `centres` (cell units) joined in order by thin chromatin strands."""
        rng = self.rng
        mask = np.zeros_like(self.u)
        for x, y in centres:
            lobe = self.ellipse(x, y, a * rng.uniform(0.9, 1.1), b * rng.uniform(0.9, 1.1), rng.uniform(0, np.pi), 0.1)
            mask = np.maximum(mask, lobe)
        for (x0, y0), (x1, y1) in zip(centres, centres[1:]):
            half = 0.5 * math.hypot(x1 - x0, y1 - y0)
            joint = self.ellipse((x0 + x1) / 2, (y0 + y1) / 2, half, strand, math.atan2(y1 - y0, x1 - x0))
            mask = np.maximum(mask, joint)
        return mask

    def granules(self, count: int, extent: float, sigma: float, x: float = 0.0, y: float = 0.0) -> np.ndarray:
        """Mask of `count` round granules (`sigma` px at 128 px) spread uniformly within `extent` units of (x, y)."""
        rng = self.rng
        r = extent * np.sqrt(rng.random(count))
        t = rng.uniform(0.0, 2.0 * np.pi, count)
        pu, pv = x + r * np.cos(t), y + r * np.sin(t)
        xs = self.cx + self.radius * (pu * self.cos - pv * self.sin) - self.region[1].start
        ys = self.cy + self.radius * (pu * self.sin + pv * self.cos) - self.region[0].start
        return _gaussian_stamps(self.u.shape, xs, ys, sigma * self.size / 128.0)

    def chromatin(self, colour: _Colour, contrast: float) -> np.ndarray:
        """Per-pixel nucleus colour: `colour` mottled by smooth noise of relative amplitude `contrast`."""
        cells = max(3, round(12 * self.u.shape[1] / self.size))
        texture = _smooth_noise(self.rng, self.u.shape, cells)
        return np.asarray(colour, dtype=np.float32)[:, None, None] * (1.0 + contrast * (texture - 0.5))


def _draw_lymphocyte(c: _Canvas) -> None:
    """Small cell: round dark-purple nucleus filling most of it, thin sky-blue rim."""
    rng = c.rng
    cell = c.ellipse(0.0, 0.0, 1.0, rng.uniform(0.9, 1.0), wobble=0.04)
    c.paint(cell, (0.62, 0.76, 0.93))
    nucleus = c.ellipse(rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08), 0.82, rng.uniform(0.74, 0.82), wobble=0.05)
    c.paint(nucleus * cell, c.chromatin((0.30, 0.17, 0.47), 0.3))


def _draw_monocyte(c: _Canvas) -> None:
    """Large cell: grey-blue cytoplasm, lighter purple kidney- or horseshoe-shaped nucleus."""
    rng = c.rng
    cell = c.ellipse(0.0, 0.0, 1.0, rng.uniform(0.85, 1.0), wobble=0.08)
    c.paint(cell, (0.71, 0.73, 0.86))
    body = c.ellipse(-0.05, 0.0, 0.62, rng.uniform(0.5, 0.58), wobble=0.06)
    notch = c.ellipse(rng.uniform(0.5, 0.65), 0.0, rng.uniform(0.22, 0.32), rng.uniform(0.3, 0.42), wobble=0.1)
    c.paint(body * (1.0 - notch), c.chromatin((0.55, 0.42, 0.69), 0.35))


def _draw_neutrophil(c: _Canvas) -> None:
    """Medium cell: pale pink finely granular cytoplasm, 3-4 connected purple lobes."""
    rng = c.rng
    cell = c.ellipse(0.0, 0.0, 1.0, rng.uniform(0.9, 1.0), wobble=0.04)
    c.paint(cell, (0.92, 0.80, 0.85))
    c.paint(0.5 * c.granules(120, 0.95, 0.7) * cell, (0.78, 0.58, 0.74))
    count = int(rng.integers(3, 5))
    span = rng.uniform(2.4, 3.6)
    angles = np.linspace(-span / 2, span / 2, count)
    arc = rng.uniform(0.38, 0.46)
    centres = [(arc * np.cos(t) - arc * 0.5, arc * np.sin(t)) for t in angles]
    c.paint(c.lobes(centres, 0.24, 0.19, 0.06), c.chromatin((0.38, 0.22, 0.53), 0.25))


def _draw_eosinophil(c: _Canvas) -> None:
    """Medium cell: cytoplasm packed with orange-red granules, two-lobed nucleus."""
    rng = c.rng
    cell = c.ellipse(0.0, 0.0, 1.0, rng.uniform(0.9, 1.0), wobble=0.04)
    c.paint(cell, (0.96, 0.78, 0.68))
    c.paint(0.9 * c.granules(240, 0.95, 1.1) * cell, (0.92, 0.40, 0.26))
    gap = rng.uniform(0.32, 0.42)
    tilt = rng.uniform(-0.15, 0.15)
    c.paint(c.lobes([(-gap, -tilt), (gap, tilt)], 0.3, 0.25, 0.07), c.chromatin((0.36, 0.21, 0.52), 0.25))


def _draw_basophil(c: _Canvas) -> None:
    """Medium cell: lavender cytoplasm, nucleus hidden under dense dark-purple granules."""
    rng = c.rng
    cell = c.ellipse(0.0, 0.0, 1.0, rng.uniform(0.88, 1.0), wobble=0.06)
    c.paint(cell, (0.78, 0.67, 0.83))
    nucleus = c.ellipse(rng.uniform(-0.1, 0.1), 0.0, 0.6, rng.uniform(0.45, 0.55), wobble=0.15)
    c.paint(nucleus, c.chromatin((0.40, 0.24, 0.55), 0.3))
    c.paint(0.95 * c.granules(110, 0.85, 1.3) * cell, (0.20, 0.07, 0.30))


def _draw_erythroblast(c: _Canvas) -> None:
    """Small cell: bluish-to-pink cytoplasm, very dark small round nucleus."""
    rng = c.rng
    cell = c.ellipse(0.0, 0.0, 1.0, rng.uniform(0.92, 1.0), wobble=0.03)
    ripeness = rng.uniform(0.0, 1.0)
    cytoplasm = (1.0 - ripeness) * np.array([0.52, 0.60, 0.86]) + ripeness * np.array([0.86, 0.64, 0.76])
    c.paint(cell, cytoplasm)
    nucleus = c.ellipse(rng.uniform(-0.12, 0.12), rng.uniform(-0.12, 0.12), 0.56, rng.uniform(0.5, 0.56), wobble=0.03)
    c.paint(nucleus, c.chromatin((0.16, 0.08, 0.22), 0.2))


def _draw_ig(c: _Canvas) -> None:
    """Large cell: bluish cytoplasm with a few granules, lighter purple oval eccentric nucleus."""
    rng = c.rng
    cell = c.ellipse(0.0, 0.0, 1.0, rng.uniform(0.82, 0.95), wobble=0.05)
    c.paint(cell, (0.64, 0.70, 0.90))
    c.paint(0.7 * c.granules(18, 0.9, 0.9) * cell, (0.70, 0.42, 0.64))
    nucleus = c.ellipse(rng.uniform(-0.38, -0.28), 0.0, rng.uniform(0.5, 0.58), rng.uniform(0.36, 0.44), wobble=0.05)
    c.paint(nucleus, c.chromatin((0.50, 0.36, 0.66), 0.3))


def _draw_platelet(c: _Canvas) -> None:
    """No white cell: one to three small irregular purple fragments with darker granular centres."""
    rng = c.rng
    for _ in range(int(rng.integers(1, 4))):
        spread, angle = 2.5 * math.sqrt(rng.random()), rng.uniform(0.0, 2.0 * np.pi)
        x, y = spread * math.cos(angle), spread * math.sin(angle)
        a = rng.uniform(0.7, 1.1)
        fragment = c.ellipse(x, y, a, a * rng.uniform(0.6, 0.95), rng.uniform(0, np.pi), wobble=0.25)
        c.paint(fragment, (0.64, 0.50, 0.77))
        c.paint(0.8 * c.granules(6, 0.6 * a, 0.9, x, y) * fragment, (0.42, 0.26, 0.58))


_DRAWERS: dict[str, Callable[[_Canvas], None]] = {
    "basophil": _draw_basophil,
    "eosinophil": _draw_eosinophil,
    "erythroblast": _draw_erythroblast,
    "ig": _draw_ig,
    "lymphocyte": _draw_lymphocyte,
    "monocyte": _draw_monocyte,
    "neutrophil": _draw_neutrophil,
    "platelet": _draw_platelet,
}


def _check_size(size: int) -> None:
    """Refuse images too small to draw a recognisable cell."""
    if size < MIN_SIZE:
        raise SynthError(f"synthetic image size must be at least {MIN_SIZE} pixels, got {size}; pass a larger size")


def render_cell(cls: str, rng: np.random.Generator, size: int = 128) -> Image.Image:
    """Render one RGB synthetic cell of class `cls`."""
    if cls not in _DRAWERS:
        raise SynthError(f"unknown synthetic cell class {cls!r}; choose one of: {', '.join(SYNTH_CLASSES)}")
    _check_size(size)
    canvas = _Canvas(size, rng)
    canvas.red_blood_cells()
    radius, extent = _CELL_FRAME[cls]
    canvas.set_frame(
        cx=size * (0.5 + rng.uniform(-0.1, 0.1)),
        cy=size * (0.5 + rng.uniform(-0.1, 0.1)),
        angle=rng.uniform(0.0, 2.0 * np.pi),
        radius=size * radius * rng.uniform(0.85, 1.15),
        extent=extent,
    )
    _DRAWERS[cls](canvas)
    stain = (1.0 + rng.normal(0.0, 0.02, 3)) * (1.0 + rng.normal(0.0, 0.04)) * 255.0
    blurred = _blur(canvas.rgb * stain.astype(np.float32)[:, None, None], rng.uniform(0.4, 0.8) * size / 128)
    noisy = blurred + (rng.random((3, size, size), dtype=np.float32) - 0.5) * 10.0  # uniform, sd ~3 levels
    rgb = np.clip(noisy + 0.5, 0.0, 255.0).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(rgb.transpose(1, 2, 0)), mode="RGB")


def synthetic_counts(per_class: int) -> dict[str, int]:
    """Images per class for `per_class` images of the most frequent class (never fewer than 4, nor than per_class)."""
    if per_class < 1:
        raise SynthError(f"per_class must be at least 1, got {per_class}")
    floor = min(MIN_IMAGES_PER_CLASS, per_class)
    top = max(SYNTH_WEIGHTS.values())
    return {cls: max(floor, round(per_class * SYNTH_WEIGHTS[cls] / top)) for cls in SYNTH_CLASSES}


def write_synthetic_dataset(out: Path, per_class: int = 80, size: int = 128, seed: int = 0) -> dict[str, int]:
    """Write a class-per-folder JPEG dataset (out/<class>/<class>_<NNNN>.jpg) and return images per class."""
    out = Path(out)
    counts = synthetic_counts(per_class)
    _check_size(size)
    if seed < 0:
        raise SynthError(f"seed must be a non-negative integer, got {seed}")
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out} exists and is not a folder; choose a new folder for the synthetic dataset")
    if out.is_dir() and any(out.iterdir()):
        raise SynthError(f"{out} already exists and is not empty; choose a new or empty folder for synthetic data")
    for ci, cls in enumerate(SYNTH_CLASSES):
        folder = out / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(counts[cls]):
            image = render_cell(cls, np.random.default_rng([seed, ci, i]), size)
            image.save(folder / f"{cls}_{i:04d}.jpg", format="JPEG", quality=JPEG_QUALITY, comment=SYNTH_COMMENT)
    return counts


def is_synthetic_image(path: Path) -> bool:
    """True for an image written by write_synthetic_dataset (its JPEG comment says so)."""
    try:
        with Image.open(path) as image:
            return image.info.get("comment") == SYNTH_COMMENT
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
