"""Hostile inputs: abusive config files, abusive pictures, non-finite network outputs.

Each gives a clear error (naming the file or field) or correct results; never a crash deep
inside torch, a hang or an out-of-memory kill.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pydantic
import pytest
import torch
import yaml
from conftest import two_level_model
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import ssdkit
import ssdkit.config.files

# ---------------------------------------------------------------- a tiny model


@pytest.fixture(scope="module", autouse=True)
def backbone(two_level_backbone):
    return two_level_backbone


@pytest.fixture(scope="module")
def model() -> ssdkit.SSD:
    return two_level_model().eval()


def same_detections(a: dict, b: dict) -> bool:
    return (
        torch.equal(a["labels"], b["labels"])
        and torch.allclose(a["boxes"], b["boxes"], atol=1e-3, rtol=0)
        and torch.allclose(a["scores"], b["scores"], atol=1e-5, rtol=0)
    )


def check_detections(det: dict, width: int, height: int, model: ssdkit.SSD) -> None:
    """What any picture's detections must satisfy."""
    boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
    n = scores.shape[0]
    assert boxes.shape == (n, 4) and labels.shape == (n,) and labels.dtype == torch.int64
    assert n <= model.postprocess.max_detections
    assert bool(torch.isfinite(boxes).all()) and bool(torch.isfinite(scores).all())
    assert bool((boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= width).all())
    assert bool((boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= height).all())
    assert bool((boxes[:, 2:] >= boxes[:, :2]).all())
    assert bool((scores > model.postprocess.score_threshold).all() and (scores <= 1).all())
    assert bool(((labels >= 1) & (labels < model.num_classes)).all())
    assert det["names"] == [model.class_names[i - 1] for i in labels.tolist()]


# ---------------------------------------------------------------- configs


@pytest.fixture
def base() -> dict:
    return ssdkit.presets.get("ssd300_vgg16").model_dump(mode="json")


def _set(path: str, value):
    def edit(d: dict) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[int(p)] if isinstance(d, list) else d[p]
        d[int(last) if isinstance(d, list) else last] = value

    return edit


CONFIG_ABUSE = [
    # unknown keys
    (_set("num_clases", 3), "num_clases"),
    (_set("backbone.highress", True), "backbone.highress"),
    (_set("postprocess.nms_threshold", 0.5), "postprocess.nms_threshold"),
    # wrong types
    (_set("num_classes", "many"), "num_classes"),
    (_set("num_classes", 3.5), "num_classes"),
    (_set("image_size", [300, "wide"]), "image_size.1"),
    (_set("image_size", [300, 300, 300]), "image_size"),
    (_set("priors", "ssd"), "priors"),
    (_set("class_names", 5), "class_names"),
    (_set("postprocess.top_k", 1.5), "postprocess.top_k"),
    (_set("postprocess.iou_threshold", "high"), "postprocess.iou_threshold"),
    (_set("preprocess.mean", [0.5, 0.5]), "preprocess.mean"),
    (_set("backbone", None), "backbone"),
    # absurd values
    (_set("image_size", 0), "image_size"),
    (_set("image_size", 100_000), "image_size"),
    (_set("image_size", [300, -300]), "image_size"),
    (_set("num_classes", 10**6), "num_classes"),
    (_set("num_classes", 0), "num_classes"),
    (_set("postprocess.score_threshold", -0.1), "postprocess.score_threshold"),
    (_set("postprocess.score_threshold", float("nan")), "postprocess.score_threshold"),
    (_set("postprocess.iou_threshold", -0.45), "postprocess.iou_threshold"),
    (_set("postprocess.top_k", 0), "postprocess.top_k"),
    (_set("postprocess.top_k", 10**9), "postprocess.top_k"),
    (_set("postprocess.max_detections", -200), "postprocess.max_detections"),
    (_set("matcher.iou_threshold", -0.5), "matcher.iou_threshold"),
    (_set("box_coder.variances", [0.1, 0.1, 0.0, 0.2]), "box_coder.variances"),
    (_set("box_coder.log_clamp", -1), "box_coder.log_clamp"),
    (_set("priors.aspect_ratios.0.0", 0), "priors.aspect_ratios.0.0"),
    (_set("priors.aspect_ratios.0.0", float("inf")), "priors.aspect_ratios.0.0"),
    (_set("priors.min_sizes.0", -30), "priors.min_sizes.0"),
    (_set("priors.steps.0", 0), "priors.steps.0"),
    (_set("priors.offset", 2.0), "priors.offset"),
    (_set("head.kernel_size", 10**6), "head.kernel_size"),
    (_set("preprocess.std", [0.2, 0.0, 0.2]), "preprocess.std"),
    (_set("preprocess.mean", [float("nan"), 0, 0]), "preprocess.mean.0"),
    (_set("preprocess.scale", float("inf")), "preprocess.scale"),
]


@pytest.mark.parametrize("edit, field", CONFIG_ABUSE, ids=[f for _, f in CONFIG_ABUSE])
def test_abusive_config_file_is_a_validation_error_naming_the_field(base, tmp_path, edit, field):
    edit(base)
    path = tmp_path / "abuse.yaml"
    path.write_text(yaml.safe_dump(base))
    for load in (ssdkit.SSDConfig.from_file, ssdkit.build_model):  # build_model(path) validates first
        with pytest.raises(pydantic.ValidationError) as err:
            load(path)
        assert any(".".join(map(str, e["loc"])).startswith(field) for e in err.value.errors()), err.value


HOSTILE_YAML = {
    "python object": ("num_classes: !!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
    "python name": ("backbone: !!python/name:os.system\n", "not valid YAML"),
    "alias bomb": (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
        + "class_names: *i\n",
        "aliases are expanded",
    ),
    "self-containing": ("class_names: &loop [*loop]\n", "aliases are expanded"),
    "top-level list": ("- num_classes: 3\n", "top level must be a mapping"),
    "binary junk": ("\x00\x01\x02 not yaml: [\n", "not valid YAML"),
}


@pytest.mark.parametrize("name", list(HOSTILE_YAML))
def test_hostile_yaml_is_refused_cheaply(tmp_path, name):
    text, message = HOSTILE_YAML[name]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        ssdkit.SSDConfig.from_file(path)
    assert "hostile.yaml" in str(err.value)


def test_oversized_config_file_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(ssdkit.config.files, "MAX_CONFIG_BYTES", 1000)
    path = tmp_path / "big.yaml"
    path.write_text("num_classes: 3\n" + "# padding\n" * 200)
    with pytest.raises(ValueError, match=r"big\.yaml: \d+ bytes is too large"):
        ssdkit.SSDConfig.from_file(path)


# ---------------------------------------------------------------- picture files


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels but holds only a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (96, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


BAD_FILES = {
    "truncated.jpg": (jpeg_bytes()[: len(jpeg_bytes()) // 2], "truncated"),
    "corrupt.jpg": (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "cannot read image"),
    "empty.png": (b"", "cannot identify image file"),
    "noise.png": (np.random.default_rng(0).bytes(5000), "cannot identify image file"),
    "bomb.png": (png_claiming(100_000, 100_000), "decompression bomb"),  # PIL refuses: > 2 x its limit
    "quiet_bomb.png": (png_claiming(10_000, 10_000), "MAX_IMAGE_PIXELS"),  # PIL would only warn: 1-2 x
    "no_pixels.png": (png_claiming(0, 10), "cannot read image"),
}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_picture_file_is_a_clear_error_naming_it(model, tmp_path, name):
    data, message = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message) as err:
        model.predict(path)
    assert f"cannot read image {path}" in str(err.value)
    with pytest.raises(ValueError, match=name):  # also inside a batch of good pictures
        model.predict([np.zeros((8, 8, 3), np.uint8), path])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pil_limit_is_the_callers_to_set(model, tmp_path, monkeypatch):
    path = tmp_path / "ok.png"
    Image.new("RGB", (50, 40), (10, 200, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"ok\.png.*50x40 pixels exceed PIL.Image.MAX_IMAGE_PIXELS \(1000\)"):
        model.predict(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # no limit: the caller trusts the files
    check_detections(model.predict(path), 50, 40, model)


def test_in_memory_pictures_without_pixels(model):
    for bad in (Image.new("RGB", (0, 5)), Image.new("L", (7, 0)), np.zeros((3, 0, 3), np.uint8), torch.zeros(3, 4, 0)):
        with pytest.raises(ValueError, match="no pixels"):
            model.predict(bad)


@pytest.mark.parametrize("size", [(1, 1), (1, 300), (300, 1), (2, 3)])
def test_tiny_and_thin_pictures(model, size, tmp_path):
    w, h = size
    path = tmp_path / "thin.png"
    Image.new("RGB", (w, h), (200, 100, 50)).save(path)
    det = model.predict(path)
    check_detections(det, w, h, model)
    assert same_detections(det, model.predict(np.full((h, w, 3), (200, 100, 50), np.uint8)))


# ---------------------------------------------------------------- picture modes


def picture(mode: str, w: int, h: int, seed: int) -> tuple[Image.Image, np.ndarray | None]:
    """A PIL picture of `mode`, and the RGB uint8 array it stands for, built without PIL's
    conversions (None where that is not defined independently: CMYK, YCbCr, I, F, La)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
    grey = rgb[..., :1]
    if mode == "RGB":
        return Image.frombytes("RGB", (w, h), rgb.tobytes()), rgb
    if mode in ("RGBA", "RGBX"):
        return Image.frombytes(mode, (w, h), np.concatenate((rgb, alpha), 2).tobytes()), rgb
    if mode == "L":
        return Image.frombytes("L", (w, h), grey.tobytes()), grey.repeat(3, 2)
    if mode == "LA":
        return Image.frombytes("LA", (w, h), np.concatenate((grey, alpha), 2).tobytes()), grey.repeat(3, 2)
    if mode == "1":
        bits = rgb[..., 0] > 127
        return Image.fromarray(bits), np.where(bits, 255, 0).astype(np.uint8)[..., None].repeat(3, 2)
    if mode in ("P", "PA"):
        index = rng.integers(0, 16, (h, w), dtype=np.uint8)
        palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
        im = Image.frombytes("P", (w, h), index.tobytes())
        im.putpalette(palette.tobytes())
        if mode == "PA":
            im = im.convert("PA")
        return im, palette[index]
    if mode.startswith("I;16"):
        wide = grey[..., 0].astype(np.uint16) * 257  # a 16-bit copy of an 8-bit picture
        raw = wide.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
        return Image.frombytes(mode, (w, h), raw), grey.repeat(3, 2)
    return Image.frombytes("RGB", (w, h), rgb.tobytes()).convert(mode), None


MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "I;16", "I;16B", "CMYK", "YCbCr", "I", "F", "La", "HSV"]


@given(st.sampled_from(MODES), st.integers(1, 90), st.integers(1, 90), st.integers(0, 2**32 - 1))
def test_any_mode_and_size_gives_valid_detections(model, mode, w, h, seed):
    """Random sizes and modes: detections inside the picture; where the mode has a defined RGB
    meaning, the same detections as that RGB picture."""
    im, rgb = picture(mode, w, h, seed)
    det = model.predict(im)
    check_detections(det, w, h, model)
    if rgb is not None:
        assert same_detections(det, model.predict(rgb)), mode


FILE_CASES = [
    ("L", "png"),
    ("LA", "png"),
    ("P", "png"),
    ("P", "gif"),
    ("RGBA", "png"),
    ("RGB", "bmp"),
    ("RGB", "tiff"),
    ("I;16", "png"),
    ("1", "png"),
    ("CMYK", "jpeg"),
    ("L", "jpeg"),
    ("RGBA", "webp"),
]


@pytest.mark.parametrize("mode, fmt", FILE_CASES, ids=[f"{m}-{f}" for m, f in FILE_CASES])
def test_picture_files_of_every_kind(model, tmp_path, mode, fmt):
    """Files in each mode: valid detections; lossless files give those of the RGB picture they hold."""
    im, rgb = picture(mode, 45, 30, seed=3)
    path = tmp_path / f"picture.{fmt}"
    im.save(path, lossless=True) if fmt == "webp" else im.save(path)
    det = model.predict(path)
    check_detections(det, 45, 30, model)
    if rgb is not None and fmt not in ("jpeg", "webp"):
        assert same_detections(det, model.predict(rgb))


# ---------------------------------------------------------------- non-finite network outputs


def test_nan_and_inf_logits_are_dropped_with_a_warning(model):
    torch.manual_seed(4)
    P, C = model.priors.shape[0], model.num_classes
    loc = torch.randn(2, P, 4) * 0.5
    logits = torch.randn(2, P, C) * 3
    bad = torch.randperm(P)[:60].view(3, 20)
    clean = logits.clone()
    clean[:, bad.flatten()] = torch.tensor([30.0] + [0.0] * (C - 1))  # those priors plain background
    hostile = logits.clone()
    hostile[:, bad[0], 1] = float("nan")
    hostile[:, bad[1], 2] = float("inf")
    hostile[:, bad[2], 0] = float("nan")
    with pytest.warns(RuntimeWarning, match=r"post-processing: 120 logits are NaN or infinite \(images \[0, 1\]\)"):
        got = model.detect(loc, hostile)
    expected = model.detect(loc, clean)
    for a, b in zip(got, expected, strict=True):
        assert bool(torch.isfinite(a["boxes"]).all()) and bool(torch.isfinite(a["scores"]).all())
        assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["boxes"], b["boxes"])
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        nothing = model.detect(loc, torch.full_like(logits, float("nan")))
    assert all(d["scores"].numel() == 0 for d in nothing)


def test_finite_logits_give_no_warning(model):
    torch.manual_seed(5)
    P, C = model.priors.shape[0], model.num_classes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.detect(torch.randn(2, P, 4), torch.randn(2, P, C) * 1e30)  # huge, but finite
