"""ssdkit.draw: colours per class, labels on filled bands inside the picture, sizes scaled to the picture."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ssdkit.draw import class_colour, draw

GREY = (128, 128, 128)


def _picture(w: int = 400, h: int = 300) -> np.ndarray:
    return np.full((h, w, 3), GREY, dtype=np.uint8)


def _dets(boxes, labels, scores=None, names=None):
    d = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}
    if scores is not None:
        d["scores"] = torch.tensor(scores)
    if names is not None:
        d["names"] = names
    return d


def _px(img, x, y):
    return tuple(np.asarray(img)[y, x])


def test_each_class_its_own_fixed_colour():
    colours = [class_colour(label) for label in range(1, 21)]
    assert len(set(colours)) == 20  # twenty classes, twenty colours
    assert colours == [class_colour(label) for label in range(1, 21)]  # the same every time
    img = draw(_picture(), _dets([[50, 100, 150, 200], [200, 100, 300, 200]], [1, 2], [0.9, 0.8]))
    assert _px(img, 50, 150) == class_colour(1)  # left edges of the two boxes
    assert _px(img, 200, 150) == class_colour(2)
    assert _px(img, 100, 150) == GREY  # inside a box: untouched


def test_labels_sit_on_a_filled_band_with_contrasting_text():
    yellow, navy = (250, 230, 20), (20, 20, 110)
    for colour, dark_text in ((yellow, True), (navy, False)):
        img = np.asarray(draw(_picture(), _dets([[100, 100, 300, 250]], [1], [0.9], ["cat"]), colours=colour))
        band = img[80:100, 100:140].reshape(-1, 3).astype(int)  # just above the box's top-left corner
        values = {tuple(v) for v in band.tolist()}
        assert colour in values  # the band's fill
        assert GREY not in {tuple(v) for v in img[95:99, 101:110].reshape(-1, 3).tolist()}  # filled, not outlined
        # (anti-aliased) text in black on yellow, in white on navy
        if dark_text:
            assert band.sum(axis=1).min() < 40
        else:
            assert band.min(axis=1).max() > 215


def test_labels_stay_inside_the_picture():
    w, h = 400, 300
    long_name = "a rather long class name"
    dets = _dets([[0, 0, 100, 80], [330, 150, 399, 299]], [1, 2], [0.9, 0.8], ["top", long_name])
    img = np.asarray(draw(_picture(w, h), dets))
    # A box touching the top edge: its label goes inside it, just under the top line.
    assert tuple(img[5, 20]) == class_colour(1)
    # A box at the right edge with a label wider than the box: the band slides left to end at the edge.
    colour = class_colour(2)
    band_rows = [y for y in range(h) if tuple(img[y, w - 1]) == colour and tuple(img[y, 300]) == colour]
    assert band_rows and max(band_rows) < 150  # above the box, from left of it (x 300) to the last column


def test_sizes_scale_with_the_picture():
    small = np.asarray(draw(_picture(200, 150), _dets([[20, 20, 180, 130]], [1], [0.9])))
    large = np.asarray(draw(_picture(2000, 1500), _dets([[200, 200, 1800, 1300]], [1], [0.9])))

    def line_width(img, x, y0):  # run of box-coloured pixels going right from the left edge
        n = 0
        while tuple(img[y0, x + n]) == class_colour(1):
            n += 1
        return n

    assert line_width(small, 20, 75) == 1 and line_width(large, 200, 750) == 6  # 1 px per 250 px
    assert draw(_picture(), _dets([[50, 50, 150, 150]], [1], [0.9]), width=3).getpixel((52, 100)) == class_colour(1)


def test_score_threshold_ground_truth_and_colour_options():
    dets = _dets([[50, 100, 150, 200], [200, 100, 300, 200]], [1, 2], [0.9, 0.2], ["cat", "dog"])
    img = draw(_picture(), dets, score_threshold=0.5)
    assert _px(img, 50, 150) == class_colour(1) and _px(img, 200, 150) == GREY  # 0.2 < 0.5: not drawn
    truth = {k: v for k, v in dets.items() if k != "scores"}  # ground truth: no scores, all drawn
    img = draw(_picture(), truth)
    assert _px(img, 200, 150) == class_colour(2)
    img = draw(_picture(), dets, score_threshold=0, colours={"dog": "red"})  # by name; others keep the palette
    assert _px(img, 200, 150) == (255, 0, 0) and _px(img, 50, 150) == class_colour(1)
    img = draw(_picture(), dets, score_threshold=0, colours=(0, 0, 255))  # one colour for all
    assert _px(img, 200, 150) == _px(img, 50, 150) == (0, 0, 255)


def test_saves_to_path_and_leaves_the_input_alone(tmp_path):
    pic = _picture()
    out = tmp_path / "out.png"
    img = draw(pic, _dets([[50, 100, 150, 200]], [1], [0.9]), path=out)
    assert out.is_file() and np.array_equal(np.asarray(img), np.asarray(Image.open(out).convert("RGB")))
    assert (pic == 128).all()
