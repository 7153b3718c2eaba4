"""State dicts of other SSD / VGG16 implementations -> ssdkit's key layout.

- `from_torchvision`: torchvision's ``ssd300_vgg16`` -> the ``ssd300_vgg16_coco`` preset, and its
  ``ssdlite320_mobilenet_v3_large`` -> the ``ssdlite320_mobilenet_v3`` preset.
- `from_ssd_pytorch`: amdegroot/ssd.pytorch's SSD300 (and SSD512 forks with 10 extra convs)
  -> the ``ssd300_vgg16`` (``ssd512_vgg16``) preset.
- `vgg16_to_backbone`: VGG16 base-network weights -> the ``vgg16`` backbone's keys.
- `load_pth`: read a torch pickle file without ever running code from it.

A TensorFlow Object Detection API frozen graph converts to a whole model, not a state dict:
that is `ssdkit.io.tfod.from_tf_object_detection` (it builds a model, so it lives a layer up).

Converters only rename (and, for VGG16 classifiers, subsample) tensors; they never
copy values they do not move. Every layout check raises ValueError listing the keys.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssdkit.text import shortlist

__all__ = [
    "load_pth",
    "from_torchvision",
    "from_torchvision_ssdlite",
    "from_ssd_pytorch",
    "vgg16_to_backbone",
    "reduce_fc",
    "num_classes_of",
    "detect_layout",
    "strip_prefix",
]

StateDict = dict[str, Tensor]

# Conv layers of VGG16's `features` (torchvision's indices; ssd.pytorch's `vgg` list uses the
# same ones, then pool5 = 30, fc6 = 31, fc7 = 33) and their names in the vgg16 backbone.
_FEATURE_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)
_CONV5 = {24: "conv5.conv5_1", 26: "conv5.conv5_2", 28: "conv5.conv5_3"}
_VGG_CONVS = {**{i: f"features.{i}" for i in _FEATURE_CONVS}, **_CONV5}
_PARAMS = ("weight", "bias")
_SHOWN = 8  # keys quoted in an error message


def strip_prefix(state: StateDict, prefix: str = "module.") -> StateDict:
    """Drop `prefix` (DataParallel's ``module.``) when every key carries it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


# torch.save writes zip entries uncompressed; a file whose entries unpack to much more than its
# own size is a compressed archive made to expand ("zip bomb"), not something torch wrote.
_UNPACK_SLACK = 1 << 20


def _what_it_is(head: bytes) -> str:
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "an HTML or XML page (a failed download saved as the weights?)"
    if not head.strip(b"\0"):
        return "only zero bytes (an incomplete copy or download?)"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text"
    return "in no format torch writes"


def _check_container(path: Path, max_bytes: int | None) -> None:
    """Refuse, before torch reads it, a file that is no torch file at all, or whose zip entries
    claim more bytes unpacked than its own size allows (or than `max_bytes`)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"\x80"):
        return  # torch's legacy (pre-1.6) format: a pickle, read with weights_only below
    if not head.startswith(b"PK\x03\x04"):
        raise ValueError(
            f"{path}: not a weights file at all: it is {_what_it_is(head)}, starting {head[:24]!r}. A torch "
            "weights file is a zip archive written by torch.save; fetch or copy it again"
        )
    try:
        with zipfile.ZipFile(path) as z:
            claimed = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable torch weights file (a damaged zip archive: {exc})") from None
    limit = 2 * path.stat().st_size + _UNPACK_SLACK
    if max_bytes is not None:
        limit = min(limit, max_bytes)
    if claimed > limit:
        raise ValueError(
            f"{path}: its entries claim {claimed:,} bytes once unpacked, more than the {limit:,} this file may "
            f"hold ({'twice its size: torch does not compress' if limit != max_bytes else 'for this model'}); "
            "refused before reading it (a decompression bomb, or the weights of a much larger model?)"
        )


def _reason(exc: BaseException) -> str:
    """torch's message without its advice to load with weights_only=False, which ssdkit never follows."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip() and "weights_only" not in ln]
    return f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__


def load_pth(path: str | Path, *, max_bytes: int | None = None) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True)` with clear errors.

    A pickle that would call anything but torch's tensor rebuilders (i.e. run code)
    is refused with ValueError, before any of it runs; so is a file that is no torch file at
    all, or one whose contents claim more memory than `max_bytes` (or twice its own size).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    _check_container(path, max_bytes)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
        if "weights_only" in detail:
            detail = ""
        raise ValueError(
            f"{path}: refused to load: it is not a plain weights file, and unpickling it would import or "
            f"run code{f' ({detail})' if detail else ''}. ssdkit loads only tensors (torch.load with "
            "weights_only=True, or .safetensors). If you trust the file's source, load it yourself and save "
            "its state dict with torch.save(model.state_dict(), ...) or safetensors."
        ) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{path}: not a readable torch weights file ({_reason(exc)})") from None


def _problem(kind: str, keys: list[str]) -> str:
    return f"{kind} ({len(keys)}): {shortlist(keys, _SHOWN)}"


def _rename(state: StateDict, rules: list[tuple[str, Any]], what: str) -> StateDict:
    """Apply the first matching (regex, target) rule to every key; unmatched keys are an error.
    `target` is a format string over the match groups, or a callable(match) -> str."""
    out: StateDict = {}
    unknown = []
    for key, value in state.items():
        for pattern, target in rules:
            m = re.fullmatch(pattern, key)
            if m:
                new = target(m) if callable(target) else target.format(*m.groups())
                if new is not None:
                    out[new] = value
                    break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"not a {what} state dict: {_problem('unknown keys', unknown)}")
    return out


def _backbone_keys(levels: int) -> list[str]:
    convs = [f"features.{i}" for i in _FEATURE_CONVS] + list(_CONV5.values()) + ["fc.fc6", "fc.fc7"]
    convs += [f"extras.{k}.conv{8 + k}_{j}" for k in range(levels - 2) for j in (1, 2)]
    return ["l2_scale"] + [f"{c}.{p}" for c in convs for p in _PARAMS]


def _model_keys(levels: int) -> list[str]:
    head = [f"head.{h}.{n}.{p}" for h in ("loc", "cls") for n in range(levels) for p in _PARAMS]
    return [f"backbone.{k}" for k in _backbone_keys(levels)] + head


def _check_complete(out: StateDict, levels: int, what: str) -> None:
    expected = _model_keys(levels)
    missing = [k for k in expected if k not in out]
    extra = sorted(set(out) - set(expected))
    problems = [_problem(kind, keys) for kind, keys in (("missing keys", missing), ("unexpected keys", extra)) if keys]
    if problems:
        raise ValueError(f"{what} state dict with {levels} levels: " + "; ".join(problems) + " (ssdkit names)")
    num_classes_of(out)


def num_classes_of(state: StateDict) -> int:
    """Classes (background included) of an ssdkit SSD state dict, from its head shapes:
    per level, loc has A * 4 output channels and cls A * C."""
    levels = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"head\.loc\.(\d+)\.weight", k)))
    if not levels:
        raise ValueError("no head.loc.N.weight in the state dict; cannot tell the number of classes")
    found = set()
    for n in levels:
        loc, cls = state[f"head.loc.{n}.weight"].shape[0], state[f"head.cls.{n}.weight"].shape[0]
        anchors = loc // 4
        if loc % 4 or cls % max(anchors, 1):
            raise ValueError(f"level {n}: loc has {loc} and cls {cls} output channels; need A * 4 and A * C")
        found.add(cls // anchors)
    if len(found) != 1:
        raise ValueError(f"the head levels disagree on the number of classes: {sorted(found)}")
    return found.pop()


def _levels(state: StateDict, pattern: str) -> int:
    idx = {int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))}
    return max(idx) + 1 if idx else 0


# ---------------------------------------------------------------- torchvision
def _rename_whole(
    state: StateDict, rules: list[tuple[str, Any]], head: tuple[str, str], what: str, short: str
) -> StateDict:
    """`_rename` by `rules` plus the head's: `head` = (loc, cls) key prefixes (regexes) of
    per-level convs ``{prefix}.N.{weight,bias}`` -> ``head.{loc,cls}.N.*``; then check that the
    result is a whole VGG16 SSD with as many levels as the source has loc convs."""
    p = r"(weight|bias)"
    loc, cls = head
    rules = rules + [(rf"{loc}\.(\d+)\.{p}", "head.loc.{0}.{1}"), (rf"{cls}\.(\d+)\.{p}", "head.cls.{0}.{1}")]
    out = _rename(state, rules, what)
    _check_complete(out, _levels(state, rf"{loc}\.(\d+)\.weight"), short)
    return out


def from_torchvision(state: StateDict) -> StateDict:
    """torchvision ``ssd300_vgg16`` state dict -> ssdkit (preset ``ssd300_vgg16_coco``);
    an ``ssdlite320_mobilenet_v3_large`` one goes to `from_torchvision_ssdlite`.

    torchvision groups pool4 .. conv5_3 and the fc layers as ``backbone.extra.0``
    (``.1/.3/.5`` conv5_K, ``.7.1`` fc6, ``.7.3`` fc7), the other extras as
    ``backbone.extra.K.{0,2}``, and the head convs as ``head.*_head.module_list.N``.
    The number of classes is whatever the head's shapes say (`num_classes_of`).
    """
    state = strip_prefix(dict(state))
    if _SSDLITE_HEAD in state:
        return from_torchvision_ssdlite(state)
    if any(k.startswith("backbone.extra.5.") for k in state):
        raise ValueError(
            "this is torchvision's SSD512-style (highres) layout, whose conv10-conv12 differ from the paper's "
            "SSD512 that ssdkit's vgg16 highres backbone builds; only torchvision's SSD300 converts"
        )

    def extra(m: re.Match) -> str:
        k, j = int(m.group(1)), int(m.group(2))
        return f"backbone.extras.{k - 1}.conv{7 + k}_{j // 2 + 1}.{m.group(3)}"

    p = r"(weight|bias)"
    rules: list[tuple[str, Any]] = [
        (rf"backbone\.features\.(\d+)\.{p}", "backbone.features.{0}.{1}"),
        (r"backbone\.scale_weight", "backbone.l2_scale"),
        (rf"backbone\.extra\.0\.([135])\.{p}", lambda m: f"backbone.{_CONV5[23 + int(m.group(1))]}.{m.group(2)}"),
        (
            rf"backbone\.extra\.0\.7\.([13])\.{p}",
            lambda m: f"backbone.fc.fc{5 + (int(m.group(1)) + 1) // 2}.{m.group(2)}",
        ),
        (rf"backbone\.extra\.([1-9]\d*)\.([02])\.{p}", extra),
    ]
    head = (r"head\.regression_head\.module_list", r"head\.classification_head\.module_list")
    return _rename_whole(state, rules, head, "torchvision ssd300_vgg16", "torchvision")


_SSDLITE_HEAD = "head.regression_head.module_list.0.0.0.weight"  # SSDLite's depthwise prediction block


def from_torchvision_ssdlite(state: StateDict) -> StateDict:
    """torchvision ``ssdlite320_mobilenet_v3_large`` state dict -> ssdkit (preset ``ssdlite320_mobilenet_v3``).

    torchvision splits MobileNetV3's ``features`` at the expansion conv of the last stride-2
    block (index c4): ``backbone.features.0`` holds blocks 0 .. c4-1 and that conv (as item c4),
    ``backbone.features.1.0`` the rest of block c4 (its own indices kept), ``backbone.features.1.K``
    block c4 + K. ssdkit keeps the classifier's numbering (``backbone.body.features.N``). Head
    blocks are (depthwise conv + BN + ReLU6, 1x1 conv): ``module_list.N.0.{0,1}`` / ``.1`` ->
    ``head.{loc,cls}.N.{0,1}`` / ``.3``. Only names change; the number of classes is the head's.
    """
    state = strip_prefix(dict(state))
    c4 = max((int(m.group(1)) for k in state if (m := re.match(r"backbone\.features\.0\.(\d+)\.", k))), default=0)

    def first(m: re.Match) -> str:
        i = int(m.group(1))
        return (
            f"backbone.body.features.{c4}.block.0.{m.group(2)}"
            if i == c4
            else f"backbone.body.features.{i}.{m.group(2)}"
        )

    heads = {"regression": "loc", "classification": "cls"}
    part = {"0.0": "0", "0.1": "1", "1": "3"}
    rules: list[tuple[str, Any]] = [
        (r"backbone\.features\.0\.(\d+)\.(.+)", first),
        (
            r"backbone\.features\.1\.0\.(\d+)\.(.+)",
            lambda m: f"backbone.body.features.{c4}.block.{m.group(1)}.{m.group(2)}",
        ),
        (
            r"backbone\.features\.1\.(\d+)\.(.+)",
            lambda m: f"backbone.body.features.{c4 + int(m.group(1))}.{m.group(2)}",
        ),
        (r"backbone\.extra\.(.+)", "backbone.extras.{0}"),
        (
            r"head\.(regression|classification)_head\.module_list\.(\d+)\.(0\.0|0\.1|1)\.(.+)",
            lambda m: f"head.{heads[m.group(1)]}.{m.group(2)}.{part[m.group(3)]}.{m.group(4)}",
        ),
    ]
    return _rename(state, rules, "torchvision ssdlite320_mobilenet_v3_large")


# ---------------------------------------------------------------- ssd.pytorch
def from_ssd_pytorch(state: StateDict) -> StateDict:
    """amdegroot/ssd.pytorch state dict -> ssdkit (preset ``ssd300_vgg16``).

    ssd.pytorch keeps VGG16 as one list ``vgg.N`` (fc6 = ``vgg.31``, fc7 = ``vgg.33``),
    ``L2Norm.weight``, the extras as alternating 1x1 / 3x3 convs ``extras.0..7`` and the
    head as ``loc.N`` / ``conf.N``. Ten extras (SSD512 forks) give the 7-level layout.
    """
    state = strip_prefix(dict(state))
    vgg = {**_VGG_CONVS, 31: "fc.fc6", 33: "fc.fc7"}

    def vgg_key(m: re.Match) -> str | None:
        name = vgg.get(int(m.group(1)))
        return None if name is None else f"backbone.{name}.{m.group(2)}"

    def extra(m: re.Match) -> str:
        j = int(m.group(1))
        return f"backbone.extras.{j // 2}.conv{8 + j // 2}_{j % 2 + 1}.{m.group(2)}"

    p = r"(weight|bias)"
    rules: list[tuple[str, Any]] = [
        (rf"vgg\.(\d+)\.{p}", vgg_key),
        (r"L2Norm\.weight", "backbone.l2_scale"),
        (rf"extras\.(\d+)\.{p}", extra),
    ]
    return _rename_whole(state, rules, (r"loc", r"conf"), "ssd.pytorch SSD", "ssd.pytorch")


# ---------------------------------------------------------------- VGG16 base network
def reduce_fc(fc6_w: Tensor, fc6_b: Tensor, fc7_w: Tensor, fc7_b: Tensor) -> StateDict:
    """VGG16's fc6 [4096, 25088] and fc7 [4096, 4096] -> SSD's conv fc6 [1024, 512, 3, 3] and fc7
    [1024, 1024, 1, 1], by subsampling as in the paper: every 4th output (and fc7 input)
    unit, and every 3rd of fc6's 7x7 spatial taps (which the dilated 3x3 conv spreads again)."""
    if tuple(fc6_w.shape) != (4096, 512 * 7 * 7) or tuple(fc7_w.shape) != (4096, 4096):
        raise ValueError(
            f"classifier.0.weight / classifier.3.weight have shapes {tuple(fc6_w.shape)} / {tuple(fc7_w.shape)}; "
            "VGG16's are (4096, 25088) / (4096, 4096)"
        )
    w6 = fc6_w.reshape(4096, 512, 7, 7)[::4, :, ::3, ::3]
    w7 = fc7_w[::4, ::4].reshape(1024, 1024, 1, 1)
    return {
        "fc.fc6.weight": w6.contiguous().clone(),
        "fc.fc6.bias": fc6_b[::4].contiguous().clone(),
        "fc.fc7.weight": w7.contiguous().clone(),
        "fc.fc7.bias": fc7_b[::4].contiguous().clone(),
    }


def vgg16_to_backbone(state: StateDict, fc: bool = True) -> StateDict:
    """VGG16 base weights -> keys of the ``vgg16`` backbone. Accepted layouts:

    - torchvision's VGG16 classifier (``features.N``, ``classifier.0/3/6``): convs renamed,
      fc6/fc7 subsampled by `reduce_fc`, the 1000-class ``classifier.6`` dropped;
    - ssd.pytorch's ``vgg16_reducedfc.pth`` (``N.weight`` for the `vgg` list, fc6 = 31, fc7 = 33);
    - the backbone's own keys (``features.N``, ``conv5.*``, ``fc.*``; extras and l2_scale optional).

    The result always holds every VGG conv, and fc6/fc7 unless `fc` is False (the classifier is then
    ignored, as torchvision's SSD300 ignores it) or the classifier's values are not finite (a
    features-only file); extras only if the input had them.
    """
    state = strip_prefix(dict(state))
    p = r"(weight|bias)"
    if any(k.startswith("classifier.") for k in state):
        fc_keys = [f"classifier.{i}.{q}" for i in (0, 3) for q in _PARAMS]
        missing = [k for k in fc_keys if k not in state]
        if missing:
            raise ValueError(f"torchvision VGG16 classifier state dict: {_problem('missing keys', missing)}")
        convs = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        unknown = [
            k for k in state if k.startswith("classifier.") and k not in fc_keys and not k.startswith("classifier.6.")
        ]
        if unknown:
            raise ValueError(f"torchvision VGG16 classifier state dict: {_problem('unknown keys', unknown)}")
        out = _rename(convs, [(rf"features\.(\d+)\.{p}", lambda m: _vgg_name(m, _VGG_CONVS))], "torchvision VGG16")
        fcs = [state[k] for k in fc_keys]
        # A features-only file (torchvision's VGG16_Weights.IMAGENET1K_FEATURES says its classifier has no
        # valid values): fc6/fc7 keep their initialisation, as in torchvision's SSD300.
        fc = fc and all(bool(t.isfinite().all()) for t in fcs)
        if fc:
            out.update(reduce_fc(*fcs))
    elif any(re.fullmatch(r"\d+\.(weight|bias)", k) for k in state):
        names = {**_VGG_CONVS, 31: "fc.fc6", 33: "fc.fc7"}
        out = _rename(state, [(rf"(\d+)\.{p}", lambda m: _vgg_name(m, names))], "ssd.pytorch reduced-fc VGG16")
    else:
        out = _rename(
            state,
            [
                (rf"(features\.\d+|conv5\.conv5_[123]|fc\.fc[67]|extras\.\d+\.conv\d+_[12])\.{p}", "{0}.{1}"),
                (r"l2_scale", "l2_scale"),
            ],
            "vgg16 backbone (nor a torchvision VGG16, nor an ssd.pytorch reduced-fc VGG16)",
        )
    required = [k for k in _backbone_keys(2) if k != "l2_scale" and (fc or not k.startswith("fc."))]
    missing = [k for k in required if k not in out]
    if missing:
        raise ValueError(f"VGG16 weights lack layers: {_problem('missing keys (ssdkit names)', missing)}")
    return out


def _vgg_name(m: re.Match, names: dict[int, str]) -> str | None:
    name = names.get(int(m.group(1)))
    return None if name is None else f"{name}.{m.group(2)}"


def detect_layout(state: StateDict) -> str:
    """Which implementation a full SSD state dict comes from: "torchvision", "ssd_pytorch" or "ssdkit"."""
    keys = strip_prefix(dict(state)).keys()
    if any(k.startswith("head.classification_head.") or k == "backbone.scale_weight" for k in keys):
        return "torchvision"
    if any(k == "L2Norm.weight" or k.startswith("vgg.") for k in keys):
        return "ssd_pytorch"
    return "ssdkit"
