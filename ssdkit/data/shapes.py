"""`shapes`: a detection data set drawn on the fly, the default since nothing can be downloaded.

Item i of a seed is always the same picture: coloured shapes (circles, squares, triangles, ...)
of many sizes, small ones included, on textured backgrounds (noise, gradients, stripes,
blotches), with `min_objects`..`max_objects` shapes (0 allowed: pictures with no object).
Shapes are drawn largest first, so a smaller one is never hidden; a shape's box may be covered
by later (smaller) shapes up to `max_overlap` of its area, so every label stays learnable.
The plan (boxes, labels, colours) comes from its own random stream, so `ground_truth()` reads
every box without drawing a picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch
from PIL import Image, ImageChops, ImageDraw
from pydantic import Field, field_validator, model_validator
from torchvision import tv_tensors

from ssdkit.config.model import image_size_type
from ssdkit.data.base import DetectionDataset, Record
from ssdkit.registry import DATASETS, ComponentConfig, part_config

__all__ = ["ShapesConfig", "ShapesDataset", "SHAPE_KINDS", "BACKGROUND_KINDS"]


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    angles = [-math.pi / 2 + k * math.pi / points for k in range(2 * points)]
    radii = [1.0 if k % 2 == 0 else inner for k in range(2 * points)]
    pts = [(r * math.cos(a), r * math.sin(a)) for r, a in zip(radii, angles, strict=True)]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, y0, w, h = min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)
    return [((x - x0) / w, (y - y0) / h) for x, y in pts]  # touches all four sides of the unit box


_T = 1 / 3  # arm thickness of the cross, as a fraction of its box
# Each kind: polygon in the unit box touching all four sides ("ellipse" = PIL ellipse, "rect" = box),
# and the range of its aspect ratio w / h (a range (a, b) with a > 1 means "a..b or its inverse").
_KINDS: dict[str, tuple[object, tuple[float, float]]] = {
    "circle": ("ellipse", (1.0, 1.0)),
    "square": ("rect", (1.0, 1.0)),
    "triangle": ([(0.0, 1.0), (1.0, 1.0), (0.5, 0.0)], (0.85, 1.2)),
    "ellipse": ("ellipse", (1.7, 2.6)),
    "rectangle": ("rect", (1.7, 2.6)),
    "diamond": ([(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)], (0.8, 1.25)),
    "cross": (
        [
            (_T, 0.0),
            (1 - _T, 0.0),
            (1 - _T, _T),
            (1.0, _T),
            (1.0, 1 - _T),
            (1 - _T, 1 - _T),
            (1 - _T, 1.0),
            (_T, 1.0),
            (_T, 1 - _T),
            (0.0, 1 - _T),
            (0.0, _T),
            (_T, _T),
        ],
        (1.0, 1.0),
    ),  # fmt: skip
    "star": (_star(), (1.0, 1.0)),
}
SHAPE_KINDS = tuple(_KINDS)
BACKGROUND_KINDS = ("noise", "gradient", "stripes", "blotches")
_PLACE_TRIES = 20
_COLOUR_TRIES = 12
_FAR = 160  # L1 distance (0..765) a shape colour should keep from what lies under it


# A generated picture: (height, width), each side in [16, 4096] pixels.
ShapesSize = image_size_type(4096)


class ShapesConfig(ComponentConfig):
    """Generated shapes; sizes are fractions of the picture's shorter side."""

    type: Literal["shapes"] = "shapes"
    num_images: int = Field(1000, ge=1, le=10_000_000, description="items per epoch (drawn on the fly)")
    seed: int = Field(0, ge=0, description="item i of a seed is always the same picture")
    image_size: ShapesSize = Field(
        (160, 160),
        description="(height, width) of the pictures; an int = square. In a run config, left out: the model's image_size",
    )
    classes: list[str] = Field(
        ["circle", "square", "triangle"], min_length=1, description=f"class names, any of {', '.join(SHAPE_KINDS)}"
    )
    min_objects: int = Field(0, ge=0, description="fewest shapes in a picture (0: some have none)")
    max_objects: int = Field(6, ge=0, le=200)
    min_size: float = Field(0.04, gt=0, le=1, description="smallest shape side (geometric mean of w and h)")
    max_size: float = Field(0.5, gt=0, le=1)
    max_overlap: float = Field(0.3, ge=0, le=1, description="most of a shape's box that shapes on top may cover")
    backgrounds: list[Literal["noise", "gradient", "stripes", "blotches"]] = Field(list(BACKGROUND_KINDS), min_length=1)
    noise: float = Field(8.0, ge=0, le=128, description="std of the pixel noise over the picture (0..255 units)")

    @field_validator("classes")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [c for c in v if c not in _KINDS]
        if unknown:
            raise ValueError(f"unknown shape(s) {unknown}; known: {', '.join(SHAPE_KINDS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"classes lists a shape twice: {v}")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> ShapesConfig:
        if self.max_objects < self.min_objects:
            raise ValueError(f"max_objects ({self.max_objects}) < min_objects ({self.min_objects})")
        if self.max_size < self.min_size:
            raise ValueError(f"max_size ({self.max_size}) < min_size ({self.min_size})")
        return self


@dataclass
class _Plan:
    """What to draw: boxes `[N, 4]` int xyxy pixels (largest first), kinds, colours `[N, 3]`, background."""

    boxes: np.ndarray
    kinds: list[int]
    colours: np.ndarray
    background: str
    bg_colours: np.ndarray  # [2, 3]
    angle: float
    period: float


def _coverage(cand: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """`[T, N]`: area of each candidate box `[T, 4]` inside each placed box `[N, 4]`, over the placed box's area."""
    lt = np.maximum(placed[None, :, :2], cand[:, None, :2])
    rb = np.minimum(placed[None, :, 2:], cand[:, None, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    return inter / (placed[:, 2:] - placed[:, :2]).prod(axis=1)


@DATASETS.register("shapes")
class ShapesDataset(DetectionDataset):
    """Pictures of coloured shapes; `class_names` = the configured `classes` (label k = classes[k - 1])."""

    def __init__(self, cfg: ShapesConfig | None = None) -> None:
        """cfg: what to draw and how many (None: `ShapesConfig()`, the defaults)."""
        self.config = part_config(cfg, ShapesConfig)
        self.class_names = list(self.config.classes)
        self.image_size = self.config.image_size
        self._kind_ids = [SHAPE_KINDS.index(c) for c in self.config.classes]
        self._bank: Optional[tuple[np.ndarray, Image.Image]] = None  # noise, made on first use

    def __len__(self) -> int:
        return self.config.num_images

    # ---------- the plan: boxes, labels, colours ----------
    def _plan(self, index: int) -> tuple[_Plan, np.ndarray]:
        c = self.config
        h, w = c.image_size
        rng = np.random.default_rng([c.seed, index, 0])
        n = int(rng.integers(c.min_objects, c.max_objects + 1))
        labels = rng.integers(0, len(c.classes), size=n)
        short = min(h, w)
        side = np.exp(rng.uniform(math.log(c.min_size), math.log(c.max_size), size=n)) * short
        lo = np.array([_KINDS[c.classes[k]][1][0] for k in labels])
        hi = np.array([_KINDS[c.classes[k]][1][1] for k in labels])
        aspect = rng.uniform(lo, hi)
        aspect = np.where((lo > 1) & (rng.random(n) < 0.5), 1 / aspect, aspect)  # wide or tall
        bw = np.clip(np.round(side * np.sqrt(aspect)), 3, w).astype(np.int64)
        bh = np.clip(np.round(side / np.sqrt(aspect)), 3, h).astype(np.int64)
        order = np.argsort(-(bw * bh), kind="stable")  # largest first: smaller ones are drawn on top

        bg = rng.integers(30, 226, size=3).astype(np.float64)
        bg2 = np.clip(bg + rng.uniform(-60, 60, size=3), 0, 255)
        background = c.backgrounds[int(rng.integers(len(c.backgrounds)))]
        angle = float(rng.uniform(0, math.pi))
        period = float(rng.uniform(4, 24))

        # Candidate corners for every shape and try at once (one draw each, cheap), placed in order.
        tries = rng.random((len(order), _PLACE_TRIES, 2))
        palette = rng.integers(0, 256, size=(len(order), _COLOUR_TRIES, 3)).astype(np.float64)
        boxes = np.zeros((0, 4), dtype=np.int64)
        colours = np.zeros((0, 3))
        cover = np.zeros(0)  # [placed] part of each placed box covered by the ones drawn after it
        kept: list[int] = []
        for j, k in enumerate(order):
            x0 = (tries[j, :, 0] * (w - bw[k] + 1)).astype(np.int64)
            y0 = (tries[j, :, 1] * (h - bh[k] + 1)).astype(np.int64)
            cand = np.stack((x0, y0, x0 + bw[k], y0 + bh[k]), axis=1)  # [T, 4]
            frac = _coverage(cand, boxes)  # [T, placed]
            fits = (cover + frac <= c.max_overlap).all(axis=1)
            if not fits.any():
                continue  # no room left for it: the picture gets one shape fewer
            t = int(np.argmax(fits))
            # A colour far (L1) from the background's and from the shapes it lies on.
            others = np.concatenate((np.stack([bg, bg2]), colours[frac[t] > 0]))
            dist = np.abs(palette[j][:, None, :] - others[None]).sum(axis=2).min(axis=1)
            far = dist >= _FAR
            colours = np.concatenate(
                (colours, palette[j][int(np.argmax(far)) if far.any() else int(np.argmax(dist))][None])
            )
            cover = np.append(cover + frac[t], 0.0)
            boxes = np.concatenate((boxes, cand[t][None]))
            kept.append(int(k))
        plan = _Plan(
            boxes=boxes,
            kinds=[self._kind_ids[labels[k]] for k in kept],
            colours=colours.astype(np.uint8),
            background=background,
            bg_colours=np.stack([bg, bg2]),
            angle=angle,
            period=period,
        )
        return plan, labels[kept].astype(np.int64) + 1

    def record(self, index: int) -> Record:
        plan, labels = self._plan(index)
        h, w = self.config.image_size
        n = len(labels)
        path = f"shapes:seed={self.config.seed}/{index}"
        return Record(
            path=path,
            image_id=index,
            boxes=torch.from_numpy(plan.boxes.astype(np.float32)),
            labels=torch.from_numpy(labels),
            difficult=torch.zeros(n, dtype=torch.bool),
            iscrowd=torch.zeros(n, dtype=torch.bool),
            size=(h, w),
            source=path,
            extra=plan,
        )

    # ---------- drawing ----------
    def _window(self, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """A random picture-sized window (left, top, right, bottom) of the noise banks."""
        h, w = self.config.image_size
        x, y = int(rng.integers(0, w + 1)), int(rng.integers(0, h + 1))
        return x, y, x + w, y + h

    def _banks(self) -> tuple[np.ndarray, Image.Image]:
        """Noise drawn once per data set (fresh normals for every picture would cost more than all the
        rest): `[2h, 2w]` float32 standard normals, and the same as an RGB image 128 + noise * std."""
        if self._bank is None:
            h, w = self.config.image_size
            normals = np.random.default_rng([self.config.seed, 2**31]).standard_normal((2 * h, 2 * w), dtype=np.float32)
            grey = np.clip(np.round(128 + normals * self.config.noise), 0, 255).astype(np.uint8)
            self._bank = (normals, Image.fromarray(np.repeat(grey[..., None], 3, axis=2)))
        return self._bank

    def _background(self, plan: _Plan, rng: np.random.Generator) -> Image.Image:
        """An RGB texture: a field t in [0, 1] looked up in a 256-step ramp between the two colours."""
        h, w = self.config.image_size
        if plan.background == "noise":
            x0, y0, x1, y1 = self._window(rng)
            t = np.clip(0.5 + 0.25 * self._banks()[0][y0:y1, x0:x1], 0.0, 1.0)
        elif plan.background == "blotches":
            small = rng.random((max(2, h // 16), max(2, w // 16)), dtype=np.float32)
            t = np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.BILINEAR))
        else:
            xs = np.arange(w, dtype=np.float32)[None, :] * np.float32(math.cos(plan.angle))
            ys = np.arange(h, dtype=np.float32)[:, None] * np.float32(math.sin(plan.angle))
            proj = xs + ys  # [h, w] position along the texture's direction
            if plan.background == "gradient":
                t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1.0)
            else:  # stripes
                t = np.floor(proj / np.float32(plan.period / 2)) % 2
        c0, c1 = plan.bg_colours
        ramp = np.round(c0 + (c1 - c0) * np.linspace(0.0, 1.0, 256)[:, None]).astype(np.uint8)  # [256, 3]
        # A palette picture does the lookup in C (numpy's ramp[index] is ten times slower).
        picture = Image.frombytes("P", (w, h), (t * 255).astype(np.uint8).tobytes())
        picture.putpalette(ramp.tobytes())
        return picture.convert("RGB")

    def load_image(self, rec: Record) -> tv_tensors.Image:
        plan: _Plan = rec.extra
        rng = np.random.default_rng([self.config.seed, rec.image_id, 1])  # pixels: a stream of their own
        canvas = self._background(plan, rng)
        pen = ImageDraw.Draw(canvas)
        for box, kind, colour in zip(plan.boxes.tolist(), plan.kinds, plan.colours.tolist(), strict=True):
            x0, y0, x1, y1 = box
            fill = tuple(colour)
            shape = _KINDS[SHAPE_KINDS[kind]][0]
            # PIL's corners are inclusive pixels: the box [x0, x1) ends at pixel x1 - 1.
            if shape == "ellipse":
                pen.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
            elif shape == "rect":
                pen.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
            else:
                sx, sy = x1 - 1 - x0, y1 - 1 - y0
                pen.polygon([(x0 + u * sx, y0 + v * sy) for u, v in shape], fill=fill)  # type: ignore[union-attr]
        if self.config.noise > 0:  # canvas + (128 + noise) - 128, clipped, in one pass of PIL's C code
            canvas = ImageChops.add(canvas, self._banks()[1].crop(self._window(rng)), scale=1.0, offset=-128)
        arr = np.array(canvas)  # a writable copy: torch wants one
        return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1))
