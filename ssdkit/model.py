"""`SSD`: backbone + head + priors, with decoding and post-processing attached.

Coordinates: `model.priors` and everything `forward`/`detect` return are
normalised to [0, 1] of the network input; `predict` returns pixels of each
caller's own image (docs/coordinates.md).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor, nn

from ssdkit.boxes import cxcywh_to_xyxy
from ssdkit.postprocess.base import Detections
from ssdkit.roles import Backbone, BoxCoder, Head, Loss, Matcher, Postprocess, PriorGenerator

if TYPE_CHECKING:
    from ssdkit.preprocess import Preprocessor


class SSD(nn.Module):
    """A single-shot detector assembled from built components (their roles: `ssdkit.roles`).

    Args:
        backbone: module, [B, 3, H, W] -> list of L feature maps; has `.out_channels`.
        head: module, list of feature maps -> (loc [B, P, 4], logits [B, P, C]).
        prior_generator: has `.num_anchors` and `__call__(feature_sizes, image_size) -> [P, 4]`.
        box_coder: has `encode`/`decode` (offsets <-> xyxy boxes, against cxcywh priors).
        postprocess: (boxes [B, P, 4], probs [B, P, C]) -> list of detections.
        image_size: (height, width) of the network input.
        num_classes: including background (label 0).
        preprocessor: turns user pictures into the input batch (`ssdkit.preprocess.Preprocessor`).
        matcher: the matching rule the loss trains with (`build_model` gives the loss this same object:
            `model.loss.matcher is model.matcher`). The model never calls it; it is kept so that tools
            find the model's matching rule without reaching into a loss that may be absent (`ssdkit data`
            reads its `iou_threshold`).
        loss: used by `compute_loss()`; optional for inference-only models.
        class_names: names of labels 1 .. C - 1.
        score_activation: "softmax" (one distribution per prior, background at 0), or "sigmoid"
            for heads trained with independent per-class sigmoids (focal loss in sigmoid mode).
    """

    def __init__(
        self,
        backbone: Backbone,
        head: Head,
        prior_generator: PriorGenerator,
        box_coder: BoxCoder,
        postprocess: Postprocess,
        *,
        image_size: tuple[int, int],
        num_classes: int,
        preprocessor: Optional[Preprocessor] = None,
        matcher: Optional[Matcher] = None,
        loss: Optional[Loss] = None,
        class_names: Optional[list[str]] = None,
        score_activation: str = "softmax",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.prior_generator = prior_generator
        self.box_coder = box_coder
        self.postprocess = postprocess
        self.matcher = matcher
        self.loss = loss
        self.preprocessor = preprocessor
        if score_activation not in ("softmax", "sigmoid"):
            raise ValueError(f"score_activation must be 'softmax' or 'sigmoid', got {score_activation!r}")
        self.score_activation = score_activation
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(1, num_classes)]
        # False until weights are loaded (load_state_dict) or trained: predict then warns once.
        self.weights_loaded = False
        self._warned_random = False
        self.feature_sizes = self._probe_feature_sizes()
        priors = prior_generator(self.feature_sizes, self.image_size)
        self.register_buffer("priors", priors, persistent=False)
        # Where the priors are made, the one check that the generator's output fits its own `num_anchors`
        # (which sized the head): a plugin generator that miscounts fails here, not in the loss.
        expected = sum(h * w * a for (h, w), a in zip(self.feature_sizes, prior_generator.num_anchors, strict=True))
        if priors.shape[0] != expected:
            raise ValueError(
                f"prior generator made {priors.shape[0]} priors but the head predicts {expected} "
                f"(feature maps {self.feature_sizes}, priors per location {prior_generator.num_anchors})"
            )

    @torch.no_grad()
    def _probe_feature_sizes(self) -> list[tuple[int, int]]:
        """Run the backbone once on a blank input to learn its feature-map sizes: on fake tensors
        (shapes only, no memory: an 8192 x 8192 input would need gigabytes), or for real where a
        backbone cannot run on them."""
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            try:
                from torch._subclasses.fake_tensor import FakeTensorMode

                with FakeTensorMode(allow_non_fake_inputs=True):
                    feats = self.backbone(torch.zeros(1, 3, *self.image_size))
            except Exception:  # noqa: BLE001  (a plugin backbone doing what fake tensors cannot)
                feats = self.backbone(torch.zeros(1, 3, *self.image_size))
        finally:
            self.backbone.train(was_training)
        return [(int(f.shape[-2]), int(f.shape[-1])) for f in feats]

    @property
    def priors_xyxy(self) -> Tensor:
        """`[P, 4]` xyxy, normalised."""
        return cxcywh_to_xyxy(self.priors)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: preprocessed `[B, 3, H, W]` -> (loc `[B, P, 4]` offsets, logits `[B, P, C]`)."""
        if x.shape[-2:] != self.image_size:
            raise ValueError(
                f"input is {tuple(x.shape[-2:])} (h, w) but this model was built for {self.image_size}; "
                "use model.predict() to resize pictures, or resize the batch first"
            )
        return self.head(self.backbone(x))

    def decode(self, loc: Tensor) -> Tensor:
        """loc `[B, P, 4]` -> boxes `[B, P, 4]` xyxy, normalised (not clipped)."""
        return self.box_coder.decode(loc, self.priors.to(loc.dtype))

    @torch.no_grad()
    def detect(self, loc: Tensor, logits: Tensor) -> list[Detections]:
        """Raw outputs -> per image {boxes [N, 4] xyxy normalised, scores [N], labels [N]}."""
        loc, logits = loc.float(), logits.float()
        from_logits = getattr(self.postprocess, "from_logits", None)
        if from_logits is None or self.score_activation != "softmax":  # the fast path assumes softmax
            return self.postprocess(self.decode(loc), self.scores(logits))
        P = loc.shape[1]
        flat_loc, priors = loc.reshape(-1, 4), self.priors.to(loc.dtype)

        def boxes(img: Tensor, prior: Tensor) -> Tensor:
            # Only the candidates' boxes are decoded, not all B * P.
            return self.box_coder.decode(flat_loc.index_select(0, img * P + prior), priors.index_select(0, prior))

        return from_logits(boxes, logits)

    def scores(self, logits: Tensor) -> Tensor:
        """logits `[B, P, C]` -> class scores `[B, P, C]` in [0, 1] (column 0: background)."""
        return torch.softmax(logits, dim=-1) if self.score_activation == "softmax" else torch.sigmoid(logits)

    def compute_loss(self, loc: Tensor, logits: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Training loss terms and their sum under "loss"; see ssdkit.losses."""
        if self.loss is None:
            raise RuntimeError("this model was built without a loss; set `loss:` in its config")
        return self.loss(loc, logits, targets, self.priors)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.weights_loaded = True
        return result

    def predict(self, pictures: Any, batch_size: int = 8) -> Any:
        """Detections on pictures in their own pixels; see `ssdkit.predict.predict`."""
        from ssdkit.predict import predict

        if not self.weights_loaded and not self._warned_random:
            self._warned_random = True
            warnings.warn(
                "this model's weights are random (built from a config; no weights were loaded and it was not "
                "trained), so its detections mean nothing: load weights, e.g. "
                "ssdkit.create_model('ssdlite320_mobilenet_v3', weights='coco') or ssdkit.load('runs/NAME')",
                UserWarning,
                stacklevel=2,
            )
        return predict(self, pictures, batch_size=batch_size)
