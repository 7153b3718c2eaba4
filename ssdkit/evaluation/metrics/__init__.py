"""Detection metrics on plain per-image detections and ground truths (pixels, xyxy).

`voc_map`: PASCAL VOC AP at one IoU threshold (area or VOC2007 11-point); `coco_map`: COCO's
AP@[.5:.95], AP50, AP75 and size breakdown through pycocotools. Both take `preds` (one dict per image:
`boxes [N, 4]`, `scores [N]`, `labels [N]`) and `gts` (`boxes [G, 4]`, `labels [G]`, optional
`difficult`, `iscrowd`), and return `{"map": ..., "per_class": {label: AP}, ...}`.
"""

from ssdkit.evaluation.metrics.coco import coco_map, to_coco_json
from ssdkit.evaluation.metrics.voc import PRCurve, average_precision, precision_recall, voc_map

__all__ = ["voc_map", "coco_map", "precision_recall", "average_precision", "to_coco_json", "PRCurve"]
