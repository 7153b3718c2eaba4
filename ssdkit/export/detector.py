"""`ExportableDetector`: an SSD with decoding and hard NMS in fixed-shape tensor ops.

`SSD.detect` returns a list of variable-length results and takes data-dependent
shortcuts, which neither ONNX nor TorchScript can hold. This module computes the same
detections with padded tensors: class scores (softmax, or sigmoid as the model says), a
per-(image, class) top-k of the candidates above the score threshold, decoding of those
candidates only, greedy NMS inside each (image, class) group, then the best
`max_detections` of each image.

Greedy NMS is the custom op `ssdkit::greedy_nms`: in PyTorch it runs `greedy_nms`
below, and the ONNX exporter writes it as ONNX's NonMaxSuppression (see
`ssdkit.export.onnx`), with one NMS "batch" per (image, class) group.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssdkit.boxes import box_rows, float32_threshold, iou_rows
from ssdkit.postprocess.nms import HardNMS
from ssdkit.registry import POSTPROCESS

__all__ = ["ExportableDetector", "greedy_nms"]


def greedy_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS in each row: boxes `[G, K, 4]` xyxy, scores `[G, K]` in decreasing order along
    each row -> keep `[G, K]` bool. Entries with score <= 0 take no part (never kept, never
    suppress). A box is dropped when a kept box earlier in its row overlaps it with
    IoU > iou_threshold (compared in float32; pass `float32_threshold(t)` for exact t).

    The keep mask is the fixed point of "kept = valid and not overlapped by an earlier kept
    box"; each pass settles at least one more box of every row, so it ends after at most
    (longest chain of overlaps + 1) passes, each `[G, K, K]` tensor work.
    """
    valid = scores > 0
    rows = box_rows(boxes)  # [5, G, K]
    iou = iou_rows(rows[:, :, :, None], rows[:, :, None, :])  # [G, K, K]: the post-processing's arithmetic
    k = scores.shape[1]
    later = torch.ones(k, k, dtype=torch.bool, device=scores.device).triu(1)
    over = (iou > iou_threshold) & later & valid[:, :, None]  # over[g, i, j]: box i would drop box j
    keep = valid
    for _ in range(k + 1):
        new_keep = valid & ~(over & keep[:, :, None]).any(dim=1)
        if bool(torch.equal(new_keep, keep)):
            break
        keep = new_keep
    return keep


@torch.library.custom_op("ssdkit::greedy_nms", mutates_args=())
def _greedy_nms_op(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    return greedy_nms(boxes, scores, iou_threshold)


@_greedy_nms_op.register_fake
def _(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    return torch.empty_like(scores, dtype=torch.bool)


_greedy_nms_scripted = None


def _scripted_greedy_nms():
    # Scripted once, lazily: a traced module that calls it keeps its loop (tracing would unroll it).
    global _greedy_nms_scripted
    if _greedy_nms_scripted is None:
        _greedy_nms_scripted = torch.jit.script(greedy_nms)
    return _greedy_nms_scripted


class ExportableDetector(nn.Module):
    """`model` + decoding + hard NMS, with the settings of `model.postprocess`.

    forward(x `[B, 3, H, W]`, the preprocessed input `model(x)` takes) ->
        boxes `[B, K, 4]` float32 xyxy normalised to [0, 1] of the network input,
        scores `[B, K]` float32, labels `[B, K]` int64 (1 .. C - 1),
        num_detections `[B]` int64;
    K = max_detections. Row b holds image b's detections in decreasing score order in its
    first num_detections[b] entries; the rest is zeros (label 0 = background).

    nms: "op" calls the custom op `ssdkit::greedy_nms` (what ONNX export needs), "script" a
    TorchScript function (what TorchScript export needs: no Python op at load time).
    """

    def __init__(self, model: nn.Module, nms: str = "op") -> None:
        super().__init__()
        pp = model.postprocess
        if not isinstance(pp, HardNMS):
            raise ValueError(
                f"export with post-processing supports the 'hard' NMS only; this model's postprocess is "
                f"'{POSTPROCESS.name_of(pp)}'. "
                "Export the network alone (without --with-postprocess) and run its post-processing yourself."
            )
        if nms not in ("op", "script"):
            raise ValueError(f"nms must be 'op' or 'script', got {nms!r}")
        self.model = model
        self.nms = nms
        self.score_threshold = float(pp.score_threshold)
        self.iou_threshold = float32_threshold(pp.iou_threshold)
        self.max_detections = int(pp.max_detections)
        self.clip_after_nms = pp.clip == "after_nms"
        self.num_priors = int(model.priors.shape[0])
        self.top_k = min(int(pp.top_k), self.num_priors)
        self.num_labels = int(model.num_classes) - 1
        # Python ints fixed here, not read from tensor shapes: a trace then holds no shape-derived constants.
        self.slots = min(self.max_detections, self.num_labels * self.top_k)
        self.register_buffer("priors", model.priors.detach().float().clone(), persistent=False)
        slot_label = torch.arange(self.num_labels * self.top_k, device=model.priors.device) // self.top_k
        self.register_buffer("slot_label", slot_label, persistent=False)  # [S]: label - 1 of each slot

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        loc, logits = self.model(x)
        return self.detect(loc, logits)

    def detect(self, loc: Tensor, logits: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Raw outputs loc `[B, P, 4]`, logits `[B, P, C]` -> (boxes, scores, labels, num_detections)."""
        loc, logits = loc.float(), logits.float()
        probs = self.model.scores(logits)[..., 1:].transpose(1, 2)  # [B, C - 1, P]: softmax or sigmoid
        # Candidates: finite and above the threshold; the others get -1 and take no part.
        probs = torch.where(torch.isfinite(probs) & (probs > self.score_threshold), probs, -1.0)
        k = self.top_k
        # Stable sorts throughout: equal scores keep prior order, then label order, as in model.detect.
        top, prior = probs.sort(dim=2, descending=True, stable=True)
        top, prior = top[..., :k], prior[..., :k]  # [B, C - 1, k]: the top-k of each class
        flat_prior = prior.flatten(1)  # [B, S], S = (C - 1) k slots; slot s holds label s // k + 1
        offsets = torch.gather(loc, 1, flat_prior.unsqueeze(-1).expand(-1, -1, 4))
        boxes = self.model.box_coder.decode(offsets, self.priors[flat_prior])  # [B, S, 4]
        finite = torch.isfinite(boxes).all(dim=-1)
        unclipped = torch.where(finite[..., None], boxes, 0.0)
        boxes = unclipped.clamp(0.0, 1.0)  # = clip_boxes
        scores = torch.where(finite, top.flatten(1), -1.0)
        # clip "after_nms" (TF OD API): NMS compares the unclipped boxes, and a survivor clipped to no area is dropped
        group_boxes = (unclipped if self.clip_after_nms else boxes).reshape(-1, k, 4)
        group_scores = scores.reshape(-1, k)
        if self.nms == "script":
            keep = _scripted_greedy_nms()(group_boxes, group_scores, self.iou_threshold)
        else:
            keep = torch.ops.ssdkit.greedy_nms(group_boxes, group_scores, self.iou_threshold)
        keep = keep.reshape(scores.shape)
        if self.clip_after_nms:
            keep = keep & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        kept_scores = torch.where(keep, scores, -1.0)
        # Best `slots` of each image by decreasing score, ties in (prior, label) order: slots sorted
        # by that (unique) key first, then a stable sort by score.
        by_key = (flat_prior * self.num_labels + self.slot_label).argsort(dim=1)
        best, rank = kept_scores.gather(1, by_key).sort(dim=1, descending=True, stable=True)
        best, which = best[:, : self.slots], by_key.gather(1, rank[:, : self.slots])
        found = best > 0
        out_scores = torch.where(found, best, 0.0)
        out_boxes = torch.where(found[..., None], torch.gather(boxes, 1, which.unsqueeze(-1).expand(-1, -1, 4)), 0.0)
        out_labels = torch.where(found, self.slot_label[which] + 1, 0)
        pad = self.max_detections - self.slots
        if pad > 0:  # fewer candidate slots than max_detections: pad to the documented K
            out_boxes = nn.functional.pad(out_boxes, (0, 0, 0, pad))
            out_scores = nn.functional.pad(out_scores, (0, pad))
            out_labels = nn.functional.pad(out_labels, (0, pad))
        return out_boxes, out_scores, out_labels, found.sum(dim=1)
