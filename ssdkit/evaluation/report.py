"""What an evaluation shows and leaves behind: a table, `eval.json`, and precision-recall curves (PNG).

Plots use matplotlib's Agg canvas directly (no pyplot): nothing global changes in the caller's
session, and it works without a display.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Optional

import torch

from ssdkit.evaluation.metrics import to_coco_json
from ssdkit.evaluation.metrics.voc import PRCurve, interpolated_precision
from ssdkit.io.paths import atomic_write
from ssdkit.text import count

__all__ = ["format_table", "write_json", "plot_pr_curves", "write_coco_detections", "write_report"]

_MAX_POINTS = 4000  # points drawn per curve; a long curve is thinned (the envelope is exact at them)


def _fmt(v: Any, width: int = 11, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"{'-':>{width}}"
    if isinstance(v, int):
        return f"{v:>{width}d}"
    return f"{v:>{width}.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """Per-class and overall numbers of an `evaluate` result, as fixed-width text."""
    voc, coco = result.get("voc"), result.get("coco")
    names = list(result["per_class"])
    width = max([5, *(len(n) for n in names)])
    cols: list[tuple[str, dict[str, Any], Any]] = []
    if voc is not None:
        cols.append(("GT", voc["num_gt"], None))
        cols.append(("dets", voc["num_det"], None))
        cols.append((f"VOC AP{round(voc['iou_threshold'] * 100)}", voc["per_class"], voc["map"]))
    if coco is not None:
        cols.append(("COCO AP", coco["per_class"], coco["map"]))
        cols.append(("COCO AP50", coco["per_class_50"], coco["map_50"]))
    lines = []
    what = []
    if voc is not None:
        how = "VOC2007 11-point" if voc["method"] == "11point" else "area under the curve"
        other = "map_area" if voc["method"] == "11point" else "map_11point"
        also = f"; {'area' if other == 'map_area' else '11-point'} mAP {_fmt(voc[other], 0)}" if other in voc else ""
        what.append(f"VOC AP at IoU > {voc['iou_threshold']:g} ({how}, difficult boxes ignored{also})")
    if coco is not None:
        what.append(f"COCO AP@[.5:.95] and AP50 ({coco.get('backend', 'COCOeval')})")
    lines.append(
        "; ".join(what)
        + f" on {count(result['images'], 'image')}"
        + (f" ({result['skipped']} unreadable, skipped)" if result.get("skipped") else "")
    )
    lines.append(f"{'class':<{width}}" + "".join(f"{h:>11}" for h, _, _ in cols))
    for n in names:
        lines.append(f"{n:<{width}}" + "".join(_fmt(values.get(n)) for _, values, _ in cols))
    total = []
    for _, values, overall in cols:
        if overall is None:
            total.append(_fmt(sum(v for v in values.values() if isinstance(v, int))))
        else:
            total.append(_fmt(overall))
    lines.append(f"{'all':<{width}}" + "".join(total))
    if coco is not None:
        keys = [("AP", "map"), ("AP50", "map_50"), ("AP75", "map_75"), ("APs", "map_small")]
        keys += [("APm", "map_medium"), ("APl", "map_large"), ("AR1", "mar_1"), ("AR10", "mar_10")]
        keys += [("AR100", "mar_100"), ("ARs", "mar_small"), ("ARm", "mar_medium"), ("ARl", "mar_large")]
        lines.append("COCO: " + "  ".join(f"{k} {_fmt(coco[v], 0)}" for k, v in keys))
    return "\n".join(lines)


def _plain(obj: Any) -> Any:
    """JSON-ready copy: NaN/inf -> null (strict JSON has no NaN), tensors -> lists, keys -> str."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _plain(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _plain(obj.item())
    return obj


def _atomic_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def write_json(obj: Any, path: str | Path) -> Path:
    """Write `obj` as strict JSON (NaN as null), atomically."""
    return _atomic_text(Path(path), json.dumps(_plain(obj), indent=2, allow_nan=False) + "\n")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "class"


def _thin(curve: PRCurve) -> tuple[Any, Any, Any, Any]:
    """(recall, precision, step recall, step envelope) as numpy, at most _MAX_POINTS points each.

    The step pair draws the interpolated precision (with `where="pre"`): at recall r, the best
    precision at any point reaching r; the area under it is the "area" AP.
    """
    rec, prec = curve.recall, curve.precision
    env = interpolated_precision(rec, prec, rec)  # envelope at each point's own recall
    n = rec.numel()
    if n > _MAX_POINTS:
        keep = torch.unique(torch.linspace(0, n - 1, _MAX_POINTS).round().long())
        rec, prec, env = rec[keep], prec[keep], env[keep]
    if n == 0:
        return rec.numpy(), prec.numpy(), rec.numpy(), env.numpy()
    step_rec = torch.cat((rec.new_zeros(1), rec))
    step_env = torch.cat((env[:1], env))
    return rec.numpy(), prec.numpy(), step_rec.numpy(), step_env.numpy()


def _figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_pr_curves(
    curves: dict[int, PRCurve],
    names: list[str],
    folder: str | Path,
    *,
    ap: Optional[dict[str, float]] = None,
    subtitle: str = "",
) -> list[Path]:
    """One PNG per class with ground truth (`NN_name.png`: precision and its envelope against
    recall) and `all.png` with every class's envelope; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    overview = _figure((7, 5))
    ax_all = overview.add_subplot(1, 1, 1)
    drawn = 0
    for label in sorted(curves):
        curve = curves[label]
        if curve.num_gt == 0:
            continue
        name = names[label - 1] if 1 <= label <= len(names) else str(label)
        rec, prec, step_rec, step_env = _thin(curve)
        value = (ap or {}).get(name)
        shown = f"AP {value:.3f}" if value is not None and math.isfinite(value) else "AP -"
        fig = _figure((5, 4))
        ax = fig.add_subplot(1, 1, 1)
        if len(rec):
            ax.plot(rec, prec, color="0.6", linewidth=1, label="precision")
            ax.step(step_rec, step_env, where="pre", color="C0", linewidth=2, label="interpolated (what AP measures)")
        ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision")
        title = f"{name}: {shown}, {count(curve.num_gt, 'box', 'boxes')}"
        ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
        ax.grid(alpha=0.3)
        if len(rec):
            ax.legend(loc="lower left", fontsize=8)
        fig.subplots_adjust(left=0.14, right=0.96, bottom=0.13, top=0.86)  # fixed: tight_layout costs a draw
        path = folder / f"{label:02d}_{_safe(name)}.png"
        fig.savefig(path)
        written.append(path)
        if len(rec):
            ax_all.step(step_rec, step_env, where="pre", linewidth=1.5, label=f"{name} ({shown})")
            drawn += 1
    ax_all.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="interpolated precision")
    ax_all.set_title("precision-recall, all classes" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax_all.grid(alpha=0.3)
    if 0 < drawn <= 20:
        ax_all.legend(loc="lower left", fontsize=8)
    overview.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.9)
    path = folder / "all.png"
    overview.savefig(path)
    written.append(path)
    return written


def write_coco_detections(
    preds: list[dict[str, Any]], gts: list[dict[str, Any]], category_ids: Optional[dict[int, int]], path: str | Path
) -> Path:
    """The detections as a COCO results file (image ids and category ids of the data set where known)."""
    ids = [g.get("image_id") for g in gts]
    image_ids = ids if all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids) else None
    _, results = to_coco_json(preds, gts, image_ids=image_ids, category_ids=category_ids)
    return _atomic_text(Path(path), json.dumps(results) + "\n")


def write_report(
    result: dict[str, Any],
    curves: dict[str, Any],
    names: list[str],
    out_dir: str | Path,
    *,
    coco_detections: Optional[tuple[list, list, Optional[dict[int, int]]]] = None,
) -> dict[str, Any]:
    """Write `eval.json`, the PR curves (`pr_curves/`) and, if given, `coco_detections.json` into
    `out_dir`; returns {"json": path, "pr_curves": [paths], "coco_detections": path}."""
    out_dir = Path(out_dir)
    files: dict[str, Any] = {"json": str(out_dir / "eval.json")}
    if curves.get("by_label"):
        if curves["source"] == "voc":
            voc = result["voc"]
            how = "11-point" if voc["method"] == "11point" else "area"
            subtitle, ap = f"VOC, IoU > {voc['iou_threshold']:g}, {how}", voc["per_class"]
        else:
            subtitle, ap = "COCO, IoU 0.50, 101 recall points", result["coco"]["per_class_50"]
        paths = plot_pr_curves(curves["by_label"], names, out_dir / "pr_curves", ap=ap, subtitle=subtitle)
        files["pr_curves"] = [str(p) for p in paths]
    if coco_detections is not None:
        preds, gts, cat = coco_detections
        files["coco_detections"] = str(write_coco_detections(preds, gts, cat, out_dir / "coco_detections.json"))
    write_json({**result, "files": files}, out_dir / "eval.json")
    return files
