"""Draw detections (or ground truth) on a picture: a colour per class, readable labels inside the picture."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import torch
from PIL import Image, ImageColor, ImageDraw, ImageFont

from ssdkit.preprocess import to_tensor

__all__ = ["draw", "class_colour"]

RGB = tuple[int, int, int]
Colours = Union[None, str, RGB, Sequence[Any], Mapping[Any, Any]]

_GOLDEN = (math.sqrt(5) - 1) / 2  # hue steps of the golden ratio: neighbouring labels get far-apart hues


def class_colour(label: int) -> RGB:
    """The fixed colour of class `label`: the same in every picture and every run."""
    hue = (0.08 + label * _GOLDEN) % 1.0
    value = 1.0 if label % 2 else 0.8  # alternate brightness too, so close hues still differ
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return round(r * 255), round(g * 255), round(b * 255)


def _colour_of(colours: Colours, label: int, name: str) -> Any:
    if colours is None:
        return class_colour(label)
    if isinstance(colours, Mapping):  # by label or by class name; others keep the palette
        return colours.get(name, colours.get(label, class_colour(label)))
    if isinstance(colours, str) or (isinstance(colours, tuple) and len(colours) == 3 and isinstance(colours[0], int)):
        return colours  # one colour for every box
    return colours[label % len(colours)]  # a list indexed by label


def _rgb(colour: Any) -> RGB:
    """Any PIL colour (a name, "#rrggbb", an RGB tuple) as an RGB tuple."""
    if isinstance(colour, str):
        return ImageColor.getrgb(colour)[:3]
    r, g, b = colour[:3]
    return int(r), int(g), int(b)


def _text_colour(fill: RGB) -> RGB:
    """Black or white, whichever contrasts more with `fill` (relative luminance, WCAG)."""

    def linear(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    lum = 0.2126 * linear(fill[0]) + 0.7152 * linear(fill[1]) + 0.0722 * linear(fill[2])
    return (0, 0, 0) if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else (255, 255, 255)


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _as_list(value: Any) -> list:
    return value.detach().cpu().tolist() if isinstance(value, torch.Tensor) else list(value)


def draw(
    picture: Any,
    detections: Mapping[str, Any],
    score_threshold: float = 0.3,
    path: Optional[str | Path] = None,
    width: Optional[int] = None,
    *,
    colours: Colours = None,
    font_size: Optional[int] = None,
    show_scores: bool = True,
) -> Image.Image:
    """Boxes with "name score" labels on a copy of `picture`; returns a PIL image, saved to `path` if given.

    Args:
        picture: a path, PIL image, `[3, H, W]` tensor or HWC array (what `predict` accepts).
        detections: `boxes [N, 4]` xyxy in the picture's pixels, `labels [N]`, and optionally `scores [N]`
            (ground truth has none: every box is drawn, unlabelled by score) and `names` (one per box;
            default: the label number), as `model.predict` returns them.
        score_threshold: boxes scoring below it are left out.
        width: line width in pixels (default: scaled to the picture, 1 px per ~250 px of its shorter side).
        colours: None: a fixed colour per class (`class_colour`); one colour (a name or RGB) for all;
            a list indexed by label; or a mapping from label or class name to colour.
        font_size: label text height in pixels (default: scaled to the picture, at least 10).
        show_scores: append the score to each label.

    Labels sit on a filled band of the box's colour, in black or white text (whichever reads better),
    above the box, or inside it where the box touches the top edge, and never run off the picture.
    Higher scores are drawn last, so their labels stay on top.
    """
    canvas = Image.fromarray(to_tensor(picture).clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    W, H = canvas.size
    boxes = torch.as_tensor(detections["boxes"], dtype=torch.float64).reshape(-1, 4).tolist()
    labels = [int(v) for v in _as_list(detections["labels"])]
    scores = _as_list(detections["scores"]) if detections.get("scores") is not None else None
    names = detections.get("names") or [str(v) for v in labels]
    short = min(W, H)
    width = width if width is not None else max(1, round(short / 250))
    size = font_size if font_size is not None else max(10, round(short / 40))
    font = _font(size)
    pen = ImageDraw.Draw(canvas)

    order = range(len(boxes)) if scores is None else sorted(range(len(boxes)), key=lambda i: scores[i])
    for i in order:
        if scores is not None and scores[i] < score_threshold:
            continue
        x1, y1, x2, y2 = boxes[i]
        colour = _colour_of(colours, labels[i], names[i])
        pen.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = f"{names[i]} {scores[i]:.2f}" if scores is not None and show_scores else str(names[i])
        left, top, right, bottom = pen.textbbox((0, 0), text, font=font)
        tw, th, pad = right - left, bottom - top, max(1, size // 5)
        bw, bh = tw + 2 * pad, th + 2 * pad
        bx = min(max(x1, 0), max(W - bw, 0))  # slide left to stay inside the picture
        by = y1 - bh if y1 - bh >= 0 else max(min(y1, H - bh), 0)  # above the box, else just inside its top
        fill = _rgb(colour)
        pen.rectangle((bx, by, bx + bw - 1, by + bh - 1), fill=fill)
        pen.text((bx + pad - left, by + pad - top), text, fill=_text_colour(fill), font=font)
    if path is not None:
        canvas.save(path)
    return canvas
