"""Evaluation: a model's detection metrics on a data set (`evaluate`), the metrics themselves
(`ssdkit.evaluation.metrics`: VOC AP, COCO mAP) and the report (table, JSON, precision-recall
curves). The prior-coverage analysis lives in `ssdkit.analysis`.

Importing this package loads neither matplotlib nor pycocotools: they are imported when a curve is
drawn or a COCO metric computed.
"""

from ssdkit.evaluation.evaluate import PROTOCOLS, collect_detections, evaluate
from ssdkit.evaluation.report import format_table, plot_pr_curves, write_json, write_report

__all__ = [
    "evaluate",
    "collect_detections",
    "PROTOCOLS",
    "format_table",
    "write_json",
    "plot_pr_curves",
    "write_report",
]
