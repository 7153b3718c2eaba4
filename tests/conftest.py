"""Shared hypothesis settings and strategies.

Profiles (pick with SSDKIT_HYPOTHESIS_PROFILE): "ci" (the default: 100 examples, CI), "dev" (20, quick
local runs), "thorough" (2000, before a release). deadline=None: torch's first call on a shape
can take far longer than the next one, and timing is not what these tests check.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from torch import nn

from ssdkit.registry import BACKBONES, ComponentConfig

settings.register_profile(
    "ci", max_examples=100, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=20, deadline=None, print_blob=True)
settings.register_profile("thorough", max_examples=2000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("SSDKIT_HYPOTHESIS_PROFILE", "ci"))


def unit_rows(
    n: int | None = None, *, min_n: int = 1, max_n: int = 8, width: int = 4, grid: int | None = None
) -> st.SearchStrategy[torch.Tensor]:
    """float64 `[k, width]` values in [0, 1] (16-bit resolution), k = n or in [min_n, max_n].

    All values come from ONE binary draw: a draw per float costs hypothesis ~0.1 ms, which would
    dominate these tests. It shrinks towards all zeros. With `grid`, an example may snap every value
    to i / grid, so that exact ties and shared edges (what tie-breaking code gets wrong) show up.
    """
    most = max_n if n is None else n
    count = st.just(n) if n is not None else st.integers(min_n, max_n)
    snap = st.booleans() if grid else st.just(False)

    def build(args: tuple[int, bytes, bool]) -> torch.Tensor:
        k, raw, snapped = args
        u = torch.from_numpy(np.frombuffer(raw, dtype="<u2").astype(np.float64) / 65535.0)[: k * width]
        if snapped:
            u = torch.round(u * grid) / grid
        return u.reshape(k, width)

    return st.tuples(count, st.binary(min_size=2 * width * most, max_size=2 * width * most), snap).map(build)


def boxes(
    n: int | None = None,
    *,
    min_n: int = 1,
    max_n: int = 8,
    lo: float = 0.0,
    hi: float = 1.0,
    min_size: float = 1e-3,
    max_size: float = 1.0,
    grid: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> st.SearchStrategy[torch.Tensor]:
    """`[n, 4]` xyxy boxes: top-left corner in [lo, hi]^2, width and height in [min_size, max_size]."""

    def build(u: torch.Tensor) -> torch.Tensor:
        xy = lo + (hi - lo) * u[:, :2]
        wh = min_size + (max_size - min_size) * u[:, 2:]
        return torch.cat((xy, xy + wh), dim=1).to(dtype)

    return unit_rows(n, min_n=min_n, max_n=max_n, grid=grid).map(build)


def cxcywh_boxes(
    n: int | None = None,
    *,
    min_n: int = 1,
    max_n: int = 8,
    min_size: float = 1e-2,
    max_size: float = 1.0,
    grid: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> st.SearchStrategy[torch.Tensor]:
    """`[n, 4]` cxcywh boxes with centres in [0, 1]^2 and sides in [min_size, max_size] (e.g. priors)."""

    def build(u: torch.Tensor) -> torch.Tensor:
        return torch.cat((u[:, :2], min_size + (max_size - min_size) * u[:, 2:]), dim=1).to(dtype)

    return unit_rows(n, min_n=min_n, max_n=max_n, grid=grid).map(build)


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tiny-tensor tests on one intra-op thread: on a small shared CI machine,
    waking a thread pool for a [5, 24] reduction costs milliseconds, far more than the work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- a backbone small enough for any test


class TwoLevelConfig(ComponentConfig):
    type: str = "two_level_test"
    relu: bool = True
    zero_bias: bool = False

    def num_levels(self) -> int:
        return 2


class TwoLevelNet(nn.Module):
    """Two 8-channel feature maps, strides 8 and 16. `zero_bias`: a blank input gives zero features."""

    def __init__(self, relu: bool = True, zero_bias: bool = False) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, stride=8, padding=1)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        if zero_bias:
            nn.init.zeros_(self.a.bias)
            nn.init.zeros_(self.b.bias)
        self.act = nn.ReLU() if relu else nn.Identity()
        self.out_channels = [8, 8]

    def forward(self, x):
        a = self.act(self.a(x))
        return [a, self.act(self.b(a))]


@pytest.fixture(scope="module")
def two_level_backbone():
    """Registers TwoLevelNet as backbone type "two_level_test" for the module using it."""
    BACKBONES.register("two_level_test", config=TwoLevelConfig)(TwoLevelNet)
    yield "two_level_test"
    BACKBONES.unregister("two_level_test")


def two_level_model(**overrides):
    """A seeded 3-class, 64x64 SSD on the "two_level_test" backbone (register it with the
    `two_level_backbone` fixture), without a loss; `overrides` replace config fields."""
    import ssdkit

    torch.manual_seed(0)
    fields = {
        "num_classes": 3,
        "image_size": 64,
        "backbone": {"type": "two_level_test"},
        "priors": {"type": "ssd", "aspect_ratios": [[2], [2]], "scales": [0.2, 0.5, 0.9]},
        "loss": None,
    }
    return ssdkit.build_model(ssdkit.SSDConfig(**{**fields, **overrides}))


# ---------------------------------------------------------------- detections against a peer's


def unmatched_detections(ours: dict, theirs: dict, score_tol: float, box_tol: float) -> list[int]:
    """Indices of `theirs` with no detection of `ours` (each used once) of the same label, a score
    within score_tol and a box within box_tol px. Matching instead of comparing two sorted lists
    keeps near-equal scores, which float rounding may order either way, from failing the test."""
    ok = (
        (theirs["labels"][:, None] == ours["labels"][None, :])
        & ((theirs["scores"][:, None] - ours["scores"][None, :]).abs() <= score_tol)
        & ((theirs["boxes"][:, None, :] - ours["boxes"][None, :, :]).abs().amax(-1) <= box_tol)
    )
    used = torch.zeros(ok.shape[1], dtype=torch.bool)
    missing = []
    for i in range(ok.shape[0]):
        free = (ok[i] & ~used).nonzero().flatten()
        if len(free):
            used[free[0]] = True
        else:
            missing.append(i)
    return missing


# ---------------------------------------------------------------- a torch.hub cache without network


def _perturbed(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """`model`'s state dict with random batch-norm statistics and biases, so that loading the wrong
    tensor, or none, shows."""
    g = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for k, v in state.items():
        if k.endswith("running_mean") or k.endswith(".bias"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
        elif k.endswith("running_var"):
            v.copy_(0.5 + torch.rand(v.shape, generator=g))
    return state


def _fake_state(name: str) -> dict[str, torch.Tensor]:
    import torchvision

    det = torchvision.models.detection
    torch.manual_seed(0)
    if name == "ssd300_vgg16_coco":
        tv = det.ssd300_vgg16(weights=None, weights_backbone=None)
        with torch.no_grad():  # spread the class scores (as test_parity_torchvision does)
            for conv in tv.head.classification_head.module_list:
                conv.weight.mul_(0.3)
        return _perturbed(tv, 1)
    if name == "ssdlite320_mobilenet_v3_coco":
        return _perturbed(det.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None), 2)
    if name == "vgg16_imagenet":
        from torchvision.models.vgg import cfgs, make_layers

        # torchvision's VGG16 `features`, and, as in VGG16_Weights.IMAGENET1K_FEATURES, a classifier without
        # valid values (one NaN each, viewed at full shape: no 500 MB to build and write)
        state = {f"features.{k}": v for k, v in _perturbed(make_layers(cfgs["D"]), 3).items()}
        shapes = {"0.weight": (4096, 25088), "0.bias": (4096,), "3.weight": (4096, 4096), "3.bias": (4096,),
                  "6.weight": (1000, 4096), "6.bias": (1000,)}  # fmt: skip
        nan = torch.tensor(float("nan"))
        return {**state, **{f"classifier.{k}": nan.expand(shape) for k, shape in shapes.items()}}
    if name == "mobilenet_v3_large_imagenet":
        return _perturbed(torchvision.models.mobilenet_v3_large(), 4)
    if name == "resnet50_imagenet":
        return _perturbed(torchvision.models.resnet50(), 5)
    raise KeyError(name)


class FakeTorchHome:
    """A TORCH_HOME whose torch.hub cache holds, under the exact file names torchvision expects,
    random tensors of the right shapes for ssdkit's named weights. Files are written on first
    request (SSD300 is large), once per session; torch.hub does not re-check a cached file's hash."""

    def __init__(self, root) -> None:
        self.root = root

    def add(self, name: str):
        from ssdkit.io import pretrained

        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TORCH_HOME", str(self.root))
            path = pretrained.get(name).cache_path()
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(_fake_state(name), path)
        return path


@pytest.fixture(scope="session")
def fake_hub(tmp_path_factory):
    return FakeTorchHome(tmp_path_factory.mktemp("torch_home"))


@pytest.fixture
def torch_home(fake_hub, monkeypatch):
    """TORCH_HOME set to the session's fake cache, with downloads off (SSDKIT_OFFLINE)."""
    monkeypatch.setenv("TORCH_HOME", str(fake_hub.root))
    monkeypatch.setenv("SSDKIT_OFFLINE", "1")
    return fake_hub
