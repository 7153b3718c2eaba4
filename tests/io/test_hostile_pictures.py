"""Real-world pictures: phone photos with an EXIF orientation tag, odd pixel types, large files,
predict from several threads. One reader of pictures (ssdkit.io.pictures) serves predict, draw and
the data sets; its contract is checked here against pictures built independently with numpy.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import two_level_model
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import ssdkit
import ssdkit.io.pictures
import ssdkit.preprocess
from ssdkit.data import BadItemError, read_image


@pytest.fixture(scope="module", autouse=True)
def backbone(two_level_backbone):
    return two_level_backbone


@pytest.fixture(scope="module")
def model() -> ssdkit.SSD:
    # a low score threshold: every picture gives detections to compare
    return two_level_model(postprocess={"type": "hard", "score_threshold": 0.05})


def same(a: dict, b: dict) -> bool:
    return (
        torch.equal(a["labels"], b["labels"])
        and torch.allclose(a["boxes"], b["boxes"], atol=1e-3, rtol=0)
        and torch.allclose(a["scores"], b["scores"], atol=1e-5, rtol=0)
    )


# The stored pixels whose EXIF orientation tag k makes a viewer show `display` (EXIF 2.3, tag 0x0112),
# written with numpy alone: tag 6 = "rotate 90 degrees clockwise to display", so stored = display
# turned counter-clockwise (np.rot90 turns counter-clockwise).
STORED = {
    1: lambda d: d,
    2: lambda d: d[:, ::-1],
    3: lambda d: d[::-1, ::-1],
    4: lambda d: d[::-1],
    5: lambda d: d.transpose(1, 0, 2),
    6: lambda d: np.rot90(d, 1),
    7: lambda d: d[::-1, ::-1].transpose(1, 0, 2),
    8: lambda d: np.rot90(d, -1),
}


def tagged(stored: np.ndarray, tag: int) -> Image.Image:
    im = Image.fromarray(np.ascontiguousarray(stored))
    exif = Image.Exif()
    exif[ssdkit.io.pictures.EXIF_ORIENTATION] = tag
    im.info["exif"] = exif.tobytes()
    return im


def as_dtype(rgb: np.ndarray, dtype: str) -> np.ndarray:
    """The same picture in another pixel type of the contract."""
    if dtype == "uint8":
        return rgb
    if dtype == "uint16":
        return rgb.astype(np.uint16) * 257
    return (rgb.astype(np.float64) / 255).astype(dtype)


LAYOUTS = ["numpy", "tensor", "numpy batch", "tensor batch", "pil", "png file", "tiff file"]


@settings(max_examples=30, deadline=None)
@given(
    layout=st.sampled_from(LAYOUTS),
    dtype=st.sampled_from(["uint8", "uint16", "float16", "float32", "float64"]),
    tag=st.integers(1, 8),
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    seed=st.integers(0, 2**32 - 1),
)
def test_picture_contract_gives_the_boxes_of_the_upright_uint8_picture(
    model, tmp_path_factory, layout, dtype, tag, h, w, seed
):
    """Any accepted dtype, layout (HWC/CHW, batched or not), orientation tag and size: the same
    detections, in display pixels, as the canonical upright uint8 RGB array."""
    rng = np.random.default_rng(seed)
    display = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    expected = model.predict(display)
    assert expected["scores"].numel() > 0
    if dtype == "float16" and layout not in ("pil", "png file", "tiff file"):
        # half precision cannot hold every v/255: compare with a float64 picture of the values it holds
        expected = model.predict(as_dtype(display, "float16").astype(np.float64))
    if layout in ("pil", "png file", "tiff file"):
        picture = tagged(STORED[tag](display), tag)
        if layout != "pil":
            path = tmp_path_factory.mktemp("pic") / ("p.png" if layout == "png file" else "p.tiff")
            picture.save(path, exif=picture.info["exif"])
            picture = path
        got = model.predict(picture)
    else:
        arr = as_dtype(display, dtype)
        if layout.startswith("tensor"):
            arr = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        if layout.endswith("batch"):
            other = arr[..., ::-1].copy() if isinstance(arr, np.ndarray) else arr.flip(-1)
            batch = np.stack([other, arr]) if isinstance(arr, np.ndarray) else torch.stack([other, arr])
            results = model.predict(batch, batch_size=1)
            assert isinstance(results, list) and len(results) == 2
            got = results[1]
        else:
            got = model.predict(arr)
    assert same(got, expected), (layout, dtype, tag)


def test_phone_photo_boxes_are_in_the_displayed_orientation(model, tmp_path):
    """A JPEG stored sideways with tag 6 (as phones write them): boxes in the upright picture's pixels."""
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 256, (40, 90, 3), dtype=np.uint8)
    path = tmp_path / "phone.jpg"
    tagged(stored, 6).save(path, exif=tagged(stored, 6).info["exif"], quality=95)
    with Image.open(path) as im:  # decoded as stored, turned by hand
        display = np.ascontiguousarray(np.rot90(np.asarray(im.convert("RGB")), -1))
    assert display.shape[:2] == (90, 40)
    assert same(model.predict(path), model.predict(display))
    assert read_image(path).shape == (3, 90, 40)  # the data sets read it upright too
    assert ssdkit.draw(path, model.predict(path)).size == (40, 90)  # and draw


def test_broken_exif_block_is_read_as_stored(model, tmp_path):
    path = tmp_path / "odd.jpg"
    pixels = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f")
    check = model.predict(path)
    assert check["boxes"].shape[1] == 4


REFUSED = [
    (np.full((8, 8, 3), 200.0, np.float32), r"0\.\.1, this one spans 200\.\.200 \(0\.\.255 values\? divide by 255"),
    (torch.full((3, 8, 8), 2.0, dtype=torch.float64), r"0\.\.255 values\? divide by 255"),
    (np.full((8, 8, 3), -0.5, np.float32), r"spans -0\.5\.\.-0\.5 \(clip it to 0\.\.1\)"),
    (np.full((8, 8, 3), np.nan, np.float32), "NaN or infinite"),
    (torch.full((3, 8, 8), float("inf")), "NaN or infinite"),
    (np.zeros((8, 8, 3), np.int64), r"dtype int64 is not a picture type.*astype\(np\.uint8\)"),
    (np.zeros((8, 8, 3), np.int16), "dtype int16 is not a picture type"),
    (np.zeros((8, 8, 3), bool), "dtype bool is not a picture type"),
    (torch.zeros(3, 8, 8, dtype=torch.int32), "dtype torch.int32 is not a picture type"),
    (np.zeros((3, 8, 8, 8), np.uint8), "HWC with 1, 3 or 4 channels"),
]


@pytest.mark.parametrize(
    "picture, message", REFUSED, ids=[m.split()[0][:20] + str(i) for i, (_, m) in enumerate(REFUSED)]
)
def test_pixel_types_outside_the_contract_are_refused_with_a_remedy(model, picture, message):
    with pytest.raises(ValueError, match=message):
        model.predict(picture)


def test_sixteen_bit_array_is_not_read_as_eight_bit(model):
    rgb = np.random.default_rng(3).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    assert same(model.predict(rgb.astype(np.uint16) * 257), model.predict(rgb))
    assert same(model.predict(torch.from_numpy(rgb.astype(np.uint16) * 257).permute(2, 0, 1)), model.predict(rgb))


@pytest.mark.parametrize("batch_size", [-1, 0, 1.5, True, "2", None])
def test_batch_size_is_checked(model, batch_size):
    pictures = [np.zeros((8, 8, 3), np.uint8)] * 2
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        model.predict(pictures, batch_size=batch_size)


def test_batch_sizes_give_the_same_results(model):
    rng = np.random.default_rng(4)
    pictures = [rng.integers(0, 256, (20 + k, 30, 3), dtype=np.uint8) for k in range(5)]
    one = model.predict(pictures, batch_size=1)
    for n in (2, np.int64(3), 8):
        assert all(same(a, b) for a, b in zip(one, model.predict(pictures, batch_size=n), strict=True))


def test_large_pictures_never_exist_in_float64(model, monkeypatch):
    """Pixels become float a slice of rows at a time; the results are those of the whole picture at once."""
    seen = []
    real = ssdkit.preprocess.as_255

    def spy(pixels, wide=torch.float64):
        seen.append(pixels.numel())
        return real(pixels, wide)

    monkeypatch.setattr(ssdkit.preprocess, "as_255", spy)
    monkeypatch.setattr(ssdkit.io.pictures, "_CHUNK_PIXELS", 1000)
    picture = torch.rand(3, 300, 200, dtype=torch.float64)
    sliced = model.preprocessor.picture(picture)
    whole = model.preprocessor(picture * 255.0)
    assert torch.equal(sliced, whole)
    assert max(seen) <= 3 * 1000 and len(seen) == 60


def test_data_sets_apply_the_pixel_limit(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (50, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL alone would only warn up to 2000
    with pytest.raises(BadItemError, match=r"big\.png: cannot read the image: 50x40 pixels exceed"):
        read_image(path)


def test_sixteen_bit_file_in_a_data_set(tmp_path):
    grey = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    path = tmp_path / "deep.png"
    Image.fromarray(grey).save(path)
    image = read_image(path)
    expected = np.round(grey / 257).astype(np.uint8)
    assert image.dtype == torch.uint8 and torch.equal(image[1], torch.from_numpy(expected))


def bn_config() -> ssdkit.SSDConfig:
    """A small model with BatchNorm layers."""
    return ssdkit.SSDConfig(
        num_classes=3,
        image_size=64,
        backbone={"type": "tiny", "levels": 2},
        priors={"type": "ssd", "aspect_ratios": [[2], [2]], "scales": [0.2, 0.5, 0.9]},
        postprocess={"type": "hard", "score_threshold": 0.05},
        loss=None,
    )


def test_create_model_gives_an_eval_mode_model():
    assert not ssdkit.create_model("ssdlite320_mobilenet_v3", num_classes=3).training


def test_predict_from_threads_on_a_training_mode_model():
    """Several threads predicting on a model left in training mode (BatchNorm): the results of
    sequential calls, BatchNorm statistics untouched, and the model back in training mode."""
    torch.manual_seed(1)
    net = ssdkit.build_model(bn_config())
    rng = np.random.default_rng(5)
    pictures = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(4)]
    expected = [net.predict(p) for p in pictures]
    net.train()
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    results: dict[tuple[int, int], dict] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def work(t: int) -> None:
        start.wait()
        try:
            for k in range(6):
                i = (t + k) % 4
                results[(t, k)] = (i, net.predict(pictures[i]))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # intra-op threads would only add noise here
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        torch.set_num_threads(old)
    assert not errors, errors
    assert len(results) == 36
    assert all(same(det, expected[i]) for i, det in results.values())
    assert net.training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in stats.items())


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_views_with_negative_strides(model, dtype):
    """Flipped views (arr[::-1], as OpenCV users make) read like their copies."""
    rgb = as_dtype(np.random.default_rng(6).integers(0, 256, (30, 40, 3), dtype=np.uint8), dtype)
    for view in (rgb[::-1], rgb[:, ::-1], rgb[..., ::-1]):
        assert same(model.predict(view), model.predict(view.copy()))
