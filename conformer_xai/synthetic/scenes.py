"""Procedural scenes with ground-truth masks: one labelled object over clutter, plus distractors.

Every class is an object defined by its shape and its texture. Two classes, the part-and-body
("bird") classes, share the same large body and differ only in a small head (about 5-10 % of the
object's area), so that only that part decides between them: the setting of the Conformer paper's
"local part versus whole object" claim. Distractors use shapes (hexagon, crescent, blob, bar) and
surfaces (flat colour, smooth noise, gradient) that belong to no class and are smaller than the
labelled object, so the label is never ambiguous.

Backgrounds mix crops of scikit-image's bundled images (brick, grass, gravel, moon, cell; coffee,
chelsea, rocket, astronaut, Hubble deep field, immunohistochemistry), fractal noise and gradients.
Nothing is downloaded; a scene is a pure function of its random generator.
"""

from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass

import numpy as np

#: The class names, in label order.
CLASS_NAMES: tuple[str, ...] = (
    "striped_disc",
    "dotted_disc",
    "checkered_square",
    "striped_square",
    "dotted_triangle",
    "zigzag_star",
    "hatched_ring",
    "wavy_cross",
    "red_headed_bird",
    "blue_headed_bird",
)
NUM_CLASSES = len(CLASS_NAMES)
#: Part-and-body classes: same body (a scaled ellipse), only the head's colour differs.
PART_CLASSES: tuple[str, ...] = ("red_headed_bird", "blue_headed_bird")
#: Labels of :data:`PART_CLASSES`.
PART_LABELS: tuple[int, ...] = tuple(CLASS_NAMES.index(n) for n in PART_CLASSES)
#: Normalisation used in training (ImageNet's, so that timm's data config applies unchanged).
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Labelled object's size (its extent) as a fraction of the image side.
OBJECT_SCALE = (0.30, 0.58)
#: The same for the (elongated) bird classes.
BIRD_SCALE = (0.40, 0.62)
#: Distractor size as a fraction of the image side.
DISTRACTOR_SCALE = (0.14, 0.26)

# shape and texture of each non-bird class
_CLASS_SPEC: dict[str, tuple[str, str]] = {
    "striped_disc": ("disc", "stripes"),
    "dotted_disc": ("disc", "dots"),
    "checkered_square": ("square", "checker"),
    "striped_square": ("square", "stripes"),
    "dotted_triangle": ("triangle", "dots"),
    "zigzag_star": ("star", "zigzag"),
    "hatched_ring": ("ring", "hatch"),
    "wavy_cross": ("cross", "wavy"),
}
# head hue ranges of the bird classes (HSV hue in [0, 1))
_HEAD_HUE: dict[str, tuple[float, float]] = {
    "red_headed_bird": (-0.03, 0.03),
    "blue_headed_bird": (0.58, 0.66),
}
_GRAY_TEXTURES = ("brick", "grass", "gravel", "moon", "cell")
_COLOR_PHOTOS = ("coffee", "chelsea", "rocket", "astronaut", "hubble_deep_field",
                 "immunohistochemistry")


@dataclass(frozen=True)
class Scene:
    """One generated scene.

    Attributes:
        image: (H, W, 3) uint8 RGB image.
        label: Class index into :data:`CLASS_NAMES`.
        class_name: ``CLASS_NAMES[label]``.
        object_mask: (H, W) bool, the labelled object's pixels (part included).
        part_mask: (H, W) bool, the discriminative part's pixels; all False for classes
            without a part.
    """

    image: np.ndarray
    label: int
    class_name: str
    object_mask: np.ndarray
    part_mask: np.ndarray

    @property
    def has_part(self) -> bool:
        """Whether the class is a part-and-body class."""
        return self.class_name in PART_CLASSES


def check_size(size: int) -> int:
    """Return ``size`` if it is a valid scene size (a multiple of 32, at least 64).

    Raises:
        ValueError: otherwise.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size must be an int multiple of 32 (64, 96, 128, ...), got {size!r}")
    if size < 64 or size % 32 != 0:
        raise ValueError(f"size must be a multiple of 32 and at least 64 (64, 96, 128, ...), "
                         f"got {size}")
    return int(size)


def render_scene(rng: np.random.Generator | int, size: int = 128,
                 label: int | None = None) -> Scene:
    """Render one scene.

    Args:
        rng: A numpy Generator, or an int seed for ``np.random.default_rng``.
        size: Image side in pixels, a multiple of 32 (at least 64).
        label: Class to draw; drawn uniformly from ``rng`` when None.

    Returns:
        The :class:`Scene`.

    Raises:
        ValueError: on a bad size or label.
    """
    size = check_size(size)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    if label is None:
        label = int(rng.integers(NUM_CLASSES))
    elif not (0 <= int(label) < NUM_CLASSES):
        raise ValueError(f"label must be in 0..{NUM_CLASSES - 1}, got {label}")
    label = int(label)
    name = CLASS_NAMES[label]
    image = _background(rng, size)

    # the labelled object: fully inside the image
    if name in PART_CLASSES:
        obj = _bird(rng, size, rng.uniform(*BIRD_SCALE) * size, name)
    else:
        shape, texture = _CLASS_SPEC[name]
        obj = _object(rng, size, rng.uniform(*OBJECT_SCALE) * size, shape, texture)
    alpha, colour, part_mask = obj
    object_mask = alpha >= 0.5

    # distractors, drawn under the labelled object and mostly beside it
    for _ in range(int(rng.integers(1, 3))):
        d_alpha, d_colour = _distractor(rng, size, object_mask)
        image = image * (1.0 - d_alpha[..., None]) + d_colour * d_alpha[..., None]
    image = image * (1.0 - alpha[..., None]) + colour * alpha[..., None]

    # global photometric variation and sensor noise
    gain = rng.uniform(0.85, 1.15)
    bias = rng.uniform(-0.06, 0.06)
    image = image * gain + bias
    image = image + rng.uniform(0.0, 0.03) * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Scene(image=image, label=label, class_name=name, object_mask=object_mask,
                 part_mask=part_mask)


# ------------------------------------------------------------------------------ geometry
@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xx, yy


def _frame(size: int, cx: float, cy: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in the object's frame (centred, rotated by ``theta``)."""
    xx, yy = _grid(size)
    dx, dy = xx - cx, yy - cy
    c, s = math.cos(theta), math.sin(theta)
    return c * dx + s * dy, -s * dx + c * dy


def _polygon_sdf(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Signed distance to a simple polygon (negative inside)."""
    d = (u - verts[0, 0]) ** 2 + (v - verts[0, 1]) ** 2
    inside = np.zeros(u.shape, dtype=bool)
    n = len(verts)
    for i in range(n):
        (xi, yi), (xj, yj) = verts[i], verts[i - 1]
        ex, ey = xj - xi, yj - yi
        wx, wy = u - xi, v - yi
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        bx, by = wx - ex * t, wy - ey * t
        d = np.minimum(d, bx * bx + by * by)
        c1 = v >= yi
        c2 = v < yj
        c3 = ex * wy > ey * wx
        inside ^= (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
    return np.where(inside, -1.0, 1.0) * np.sqrt(d)


def _regular(n: int, radius: float, phase: float = -math.pi / 2) -> np.ndarray:
    a = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _star(radius: float, inner: float, points: int = 5) -> np.ndarray:
    a = -math.pi / 2 + math.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, radius, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _cross(radius: float, arm: float) -> np.ndarray:
    r, w = radius, arm
    return np.array([[w, -r], [w, -w], [r, -w], [r, w], [w, w], [w, r],
                     [-w, r], [-w, w], [-r, w], [-r, -w], [-w, -w], [-w, -r]])


def _shape_sdf(shape: str, u: np.ndarray, v: np.ndarray, r: float,
               rng: np.random.Generator) -> np.ndarray:
    """Signed distance (pixels, negative inside) to ``shape`` of half-size ``r`` in the object frame."""
    if shape == "disc":
        return np.hypot(u, v) - r
    if shape == "ring":
        rho = np.hypot(u, v)
        return np.abs(rho - 0.77 * r) - 0.23 * r
    if shape == "square":
        h = 0.78 * r
        return _polygon_sdf(u, v, np.array([[-h, -h], [h, -h], [h, h], [-h, h]]))
    if shape == "triangle":
        return _polygon_sdf(u, v, _regular(3, 1.05 * r))
    if shape == "star":
        return _polygon_sdf(u, v, _star(1.05 * r, 0.48 * r))
    if shape == "cross":
        return _polygon_sdf(u, v, _cross(r, 0.32 * r))
    if shape == "hexagon":
        return _polygon_sdf(u, v, _regular(6, r))
    if shape == "crescent":
        return np.maximum(np.hypot(u, v) - r, 0.82 * r - np.hypot(u - 0.45 * r, v))
    if shape == "blob":
        ang = np.arctan2(v, u)
        rad = np.ones_like(ang)
        for k in (2, 3, 4):
            rad += rng.uniform(0.0, 0.14) * np.cos(k * ang + rng.uniform(0, 2 * math.pi))
        return np.hypot(u, v) - 0.85 * r * rad
    if shape == "bar":
        hl, hw = 0.8 * r, 0.22 * r
        qx = np.maximum(np.abs(u) - hl, 0.0)
        return np.hypot(qx, v) - hw
    raise ValueError(f"unknown shape {shape!r}")


# largest distance from the centre, as a multiple of R (so objects stay inside the image)
_EXTENT = {"disc": 1.0, "ring": 1.0, "square": 1.11, "triangle": 1.05, "star": 1.05,
           "cross": 1.05, "hexagon": 1.0, "crescent": 1.0, "blob": 1.3, "bar": 1.02}


def _alpha(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels."""
    return np.clip(0.5 - sdf, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------ textures
def _soft(x: np.ndarray, k: float = 2.5) -> np.ndarray:
    return np.clip(0.5 + k * x, 0.0, 1.0)


def _texture(kind: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Two-tone pattern in [0, 1] on object-frame coordinates."""
    p = period
    tau = 2 * math.pi
    if kind == "stripes":
        return _soft(np.sin(tau * u / p))
    if kind == "dots":
        sp = 1.35 * p
        fx = (u / sp) % 1.0 - 0.5
        fy = (v / sp) % 1.0 - 0.5
        return np.clip(0.5 + (0.3 * sp - np.hypot(fx, fy) * sp), 0.0, 1.0)
    if kind == "checker":
        c = 0.8 * p
        return _soft(np.sin(math.pi * u / c) * np.sin(math.pi * v / c), 3.0)
    if kind == "zigzag":
        q = 1.2 * p
        tri = 2.0 * np.abs((v / q) % 1.0 - 0.5)
        return _soft(np.sin(tau * (u + 0.7 * p * tri) / p))
    if kind == "wavy":
        return _soft(np.sin(tau * (u + 0.35 * p * np.sin(tau * v / (3.0 * p))) / p))
    if kind == "hatch":
        a = (u + v) / math.sqrt(2.0)
        b = (u - v) / math.sqrt(2.0)
        la = 0.5 + 0.14 * p - np.abs((a / p) % 1.0 - 0.5) * p
        lb = 0.5 + 0.14 * p - np.abs((b / p) % 1.0 - 0.5) * p
        return np.clip(np.maximum(la, lb), 0.0, 1.0)
    if kind == "scales":
        sp = 1.4 * p
        row = np.floor(v / sp)
        fx = ((u / sp + 0.5 * (row % 2)) % 1.0 - 0.5) * sp
        fy = ((v / sp) % 1.0) * sp
        d = np.hypot(fx, fy)
        return np.clip(0.5 + 0.1 * sp - np.abs(d - 0.5 * sp), 0.0, 1.0)
    raise ValueError(f"unknown texture {kind!r}")


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _two_tone(rng: np.random.Generator, sat: tuple[float, float] = (0.45, 1.0)) -> tuple:
    """Two colours that differ strongly in brightness and hue."""
    h = rng.uniform()
    light = _hsv(h, rng.uniform(*sat), rng.uniform(0.72, 1.0))
    dark = _hsv(h + rng.uniform(0.25, 0.75), rng.uniform(*sat), rng.uniform(0.05, 0.4))
    return (light, dark) if rng.uniform() < 0.5 else (dark, light)


def _shade(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """A gentle linear lighting ramp across the object."""
    a = rng.uniform(0, 2 * math.pi)
    ramp = (math.cos(a) * u + math.sin(a) * v) / max(r, 1.0)
    return (1.0 + rng.uniform(0.05, 0.18) * ramp)[..., None]


# ------------------------------------------------------------------------------ objects
def _place(rng: np.random.Generator, size: int, reach: float) -> tuple[float, float]:
    lo, hi = reach + 1.0, size - reach - 1.0
    return rng.uniform(lo, max(lo, hi)), rng.uniform(lo, max(lo, hi))


def _object(rng: np.random.Generator, size: int, extent: float, shape: str,
            texture: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = extent / 2.0
    cx, cy = _place(rng, size, r * _EXTENT[shape])
    u, v = _frame(size, cx, cy, rng.uniform(0, 2 * math.pi))
    alpha = _alpha(_shape_sdf(shape, u, v, r, rng))
    tu, tv = _frame(size, cx + rng.uniform(-8, 8), cy + rng.uniform(-8, 8),
                    rng.uniform(0, 2 * math.pi))
    t = _texture(texture, tu, tv, rng.uniform(6.0, 10.0))[..., None]
    c1, c2 = _two_tone(rng)
    colour = (c1 * t + c2 * (1.0 - t)) * _shade(rng, u, v, r)
    return alpha, colour, np.zeros((size, size), dtype=bool)


def _bird(rng: np.random.Generator, size: int, extent: float,
          name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scaled elliptical body (shared by both bird classes) with a coloured head."""
    a = extent / 2.0 / 1.12           # body semi-major axis
    b = 0.6 * a                       # body semi-minor axis
    hr = 0.24 * a                     # head radius
    hd = a + 0.2 * hr                 # head centre's distance from the body centre
    # the span along the axis is (-a, hd + hr); centre that span in the placement
    span_mid = (hd + hr - a) / 2.0
    half = (a + hd + hr) / 2.0
    mx, my = _place(rng, size, half)
    theta = rng.uniform(0, 2 * math.pi)
    cx, cy = mx - span_mid * math.cos(theta), my - span_mid * math.sin(theta)
    u, v = _frame(size, cx, cy, theta)
    body = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    body_alpha = _alpha((body - 1.0) * b)
    hu, hv = u - hd, v
    head_sdf = np.hypot(hu, hv) - hr
    head_alpha = _alpha(head_sdf)

    tu, tv = _frame(size, cx, cy, theta + rng.uniform(-0.3, 0.3))
    t = _texture("scales", tu, tv, rng.uniform(6.0, 10.0))[..., None]
    c1, c2 = _two_tone(rng, sat=(0.1, 0.45))
    colour = (c1 * t + c2 * (1.0 - t)) * _shade(rng, u, v, a)
    lo, hi = _HEAD_HUE[name]
    head = _hsv(rng.uniform(lo, hi), rng.uniform(0.85, 1.0), rng.uniform(0.8, 1.0))
    eye = _alpha(np.hypot(hu - 0.25 * hr, hv - 0.3 * hr * rng.choice([-1, 1])) - 0.28 * hr)
    head_colour = head * (1.0 - eye[..., None]) + 0.05 * eye[..., None]
    colour = colour * (1.0 - head_alpha[..., None]) + head_colour * head_alpha[..., None]
    alpha = np.maximum(body_alpha, head_alpha)
    return alpha, colour, head_sdf <= 0.0


def _distractor(rng: np.random.Generator, size: int,
                object_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A smaller object of no class: hexagon, crescent, blob or bar, flat/noisy/gradient."""
    shape = ("hexagon", "crescent", "blob", "bar")[int(rng.integers(4))]
    r = rng.uniform(*DISTRACTOR_SCALE) * size / 2.0
    theta = rng.uniform(0, 2 * math.pi)
    best = None
    for _ in range(8):
        cx, cy = rng.uniform(0, size), rng.uniform(0, size)
        u, v = _frame(size, cx, cy, theta)
        alpha = _alpha(_shape_sdf(shape, u, v, r, rng))
        inside = alpha >= 0.5
        area = max(int(inside.sum()), 1)
        overlap = int((inside & object_mask).sum()) / area
        if best is None or overlap < best[0]:
            best = (overlap, alpha, u, v)
        if overlap <= 0.2:
            break
    _, alpha, u, v = best
    c1 = _hsv(rng.uniform(), rng.uniform(0.05, 0.6), rng.uniform(0.15, 0.95))
    c2 = _hsv(rng.uniform(), rng.uniform(0.05, 0.6), rng.uniform(0.15, 0.95))
    kind = int(rng.integers(3))
    if kind == 0:    # flat
        colour = np.broadcast_to(c1, (size, size, 3)).astype(np.float32)
    elif kind == 1:  # smooth noise
        n = _fractal_noise(rng, size, octaves=3, base=4)[..., None]
        colour = c1 * n + c2 * (1.0 - n)
    else:            # gradient
        g = np.clip(0.5 + u / (2.0 * r), 0.0, 1.0)[..., None]
        colour = c1 * g + c2 * (1.0 - g)
    return alpha, colour


# ------------------------------------------------------------------------------ backgrounds
@functools.cache
def _skimage_pyramid(name: str) -> tuple[np.ndarray, ...]:
    """A bundled scikit-image picture and its successive 2x box-filtered reductions."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 3:
        img = img[..., :3]
    levels = [img.astype(np.float32)]
    while min(levels[-1].shape[:2]) >= 128:
        a = levels[-1]
        h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
        levels.append(a[:h, :w].reshape(h // 2, 2, w // 2, 2, *a.shape[2:]).mean(axis=(1, 3)))
    return tuple(levels)


def _resize(img: np.ndarray, size: int, smooth: bool = False) -> np.ndarray:
    """Square image (s, s[, c]) -> (size, size[, c]): integer box-filter, then (bi)linear.

    ``smooth`` uses smoothstep weights instead of linear ones (value noise without creases).
    Pure numpy, so scenes do not depend on an image library's version or thread count.
    """
    img = img.astype(np.float32, copy=False)
    f = img.shape[0] // size
    if f > 1:
        s = (img.shape[0] // f) * f
        img = img[:s, :s].reshape(s // f, f, s // f, f, *img.shape[2:]).mean(axis=(1, 3))
    n = img.shape[0]
    pos = np.clip((np.arange(size, dtype=np.float32) + 0.5) * n / size - 0.5, 0.0, n - 1.0)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    w = pos - i0
    if smooth:
        w = w * w * (3.0 - 2.0 * w)
    wy = w.reshape(-1, 1, *([1] * (img.ndim - 2)))
    wx = w.reshape(1, -1, *([1] * (img.ndim - 2)))
    rows = img[i0] * (1.0 - wy) + img[i1] * wy
    return rows[:, i0] * (1.0 - wx) + rows[:, i1] * wx


def _crop(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    """A random square crop of a bundled picture, resized to ``size``, rotated/flipped, in [0, 1]."""
    levels = _skimage_pyramid(name)
    h, w = levels[0].shape[:2]
    side = rng.uniform(min(size, h, w) * 0.9, min(h, w))
    y, x = rng.uniform(0, h - side), rng.uniform(0, w - side)
    level = 0
    while level + 1 < len(levels) and side / 2 ** (level + 1) >= size:
        level += 1
    k = 2 ** level
    img = levels[level]
    s = min(int(side / k), img.shape[0], img.shape[1])
    y0, x0 = min(int(y / k), img.shape[0] - s), min(int(x / k), img.shape[1] - s)
    crop = _resize(img[y0:y0 + s, x0:x0 + s], size)
    crop = np.rot90(crop, int(rng.integers(4)))
    if rng.uniform() < 0.5:
        crop = crop[:, ::-1]
    return crop / 255.0


def _fractal_noise(rng: np.random.Generator, size: int, octaves: int = 4,
                   base: int = 3) -> np.ndarray:
    out = np.zeros((size, size), dtype=np.float32)
    amp = 1.0
    for o in range(octaves):
        n = base * 2 ** o
        out += amp * _resize(rng.random((n, n), dtype=np.float32), size, smooth=True)
        amp *= 0.55
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _tint(rng: np.random.Generator, gray: np.ndarray) -> np.ndarray:
    c1 = _hsv(rng.uniform(), rng.uniform(0.0, 0.7), rng.uniform(0.0, 0.45))
    c2 = _hsv(rng.uniform(), rng.uniform(0.0, 0.7), rng.uniform(0.55, 1.0))
    g = gray[..., None]
    return c1 * (1.0 - g) + c2 * g


def _one_background(rng: np.random.Generator, size: int) -> np.ndarray:
    kind = int(rng.integers(4))
    if kind == 0:    # a bundled grey texture, tinted
        name = _GRAY_TEXTURES[int(rng.integers(len(_GRAY_TEXTURES)))]
        gray = _crop(rng, name, size)
        mean, std = float(gray.mean()), float(gray.std())
        return _tint(rng, np.clip(0.5 + (gray - mean) / max(4.0 * std, 1e-3), 0.0, 1.0))
    if kind == 1:    # a bundled colour photograph, channels shuffled, partly desaturated
        name = _COLOR_PHOTOS[int(rng.integers(len(_COLOR_PHOTOS)))]
        img = _crop(rng, name, size)[..., rng.permutation(3)]
        grey = img.mean(axis=2, keepdims=True)
        s = rng.uniform(0.3, 1.0)
        return grey + s * (img - grey)
    if kind == 2:    # fractal noise, tinted
        return _tint(rng, _fractal_noise(rng, size, octaves=int(rng.integers(3, 6))))
    # smooth gradient with fine noise
    u, _ = _frame(size, size / 2, size / 2, rng.uniform(0, 2 * math.pi))
    g = np.clip(0.5 + u / size, 0.0, 1.0)
    g = np.clip(g + 0.25 * (_fractal_noise(rng, size, octaves=2, base=16) - 0.5), 0.0, 1.0)
    return _tint(rng, g)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    bg = _one_background(rng, size)
    if rng.uniform() < 0.5:
        w = rng.uniform(0.2, 0.5)
        bg = (1.0 - w) * bg + w * _one_background(rng, size)
    mean = bg.mean(axis=(0, 1), keepdims=True)
    return (mean + rng.uniform(0.45, 0.9) * (bg - mean)).astype(np.float32)
