"""Every shipped recipe runs: two steps on generated data written in the recipe's own format (a VOC
tree or a COCO tree), with the recipe's class list, augmentation, loss and evaluation. Only what
cannot run in CI changes: no ImageNet download (backbone weights null), the smallest batch (1; 2 for
SSDLite, whose batch norm needs two values per channel on its 1x1 maps), one validation picture, no
workers. The networks keep their real size: VGG16 at 300 and 512 px is most of the cost."""

from __future__ import annotations

import json
import time

import pytest
import torch

from ssdkit.categories import COCO_CATEGORIES, VOC_CLASSES
from ssdkit.cli import main
from ssdkit.config import RunConfig, example_configs
from ssdkit.data.folders import write_shapes

RECIPES = ["voc0712_ssd300", "voc0712_ssd512", "coco_ssd300", "coco_ssdlite320"]
SMALL = (120, 160)  # generated pictures (h, w); the recipe resizes them to its input as it would VOC's


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    """A VOCdevkit-like folder: VOC2007 (trainval + test) and VOC2012 (trainval), VOC's 20 class names."""
    root = tmp_path_factory.mktemp("VOCdevkit")
    write_shapes(root / "VOC2007", "voc", num_images=2, val_images=1, image_size=SMALL, class_names=VOC_CLASSES)
    write_shapes(root / "VOC2012", "voc", num_images=2, val_images=0, image_size=SMALL, class_names=VOC_CLASSES, seed=1)
    return root


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    ids, names = zip(*COCO_CATEGORIES, strict=True)
    write_shapes(root, "coco", num_images=4, val_images=1, image_size=SMALL, class_names=names, category_ids=ids)
    return root


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_recipes_ship_and_name_their_sources():
    assert set(RECIPES) <= set(example_configs())
    for name in RECIPES:
        text = open(f"ssdkit/config/recipes/{name}.yaml").read()
        header = text.split("\nmodel:")[0]
        assert "Source" in header and "Reported accuracy" in header and "ssdkit train " + name in header
        cfg = RunConfig.from_file(name, variables={"VOC_ROOT": "/v", "COCO_ROOT": "/c"})
        names = VOC_CLASSES if name.startswith("voc") else [n for _, n in COCO_CATEGORIES]
        assert cfg.model.class_names == list(names) and cfg.model.num_classes == len(names) + 1


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_runs_two_steps_on_its_format(name, voc_root, coco_root, tmp_path, monkeypatch):
    root = voc_root if name.startswith("voc") else coco_root
    variable = "VOC_ROOT" if name.startswith("voc") else "COCO_ROOT"
    if name == "coco_ssdlite320":  # the data root from the command line (the others: from the environment)
        monkeypatch.delenv(variable, raising=False)
        given = ["--data-root", str(root)]
    else:
        monkeypatch.setenv(variable, str(root))
        given = []
    batch = 2 if "ssdlite" in name else 1
    small = [
        "train.max_steps=2",  # replaces the recipe's epochs
        f"data.batch_size={batch}",
        "data.val_batch_size=1",
        "data.num_workers=0",
        "model.backbone.weights=null",  # the recipe's ImageNet weights cannot be fetched in CI
        "train.device=cpu",
        "train.log_every=1",
    ]
    start, cpu = time.perf_counter(), time.process_time()
    code = main(
        ["train", name, "--out", str(tmp_path), "--no-progress", *given, *(x for s in small for x in ("--set", s))]
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert code == 0
    recipe = RunConfig.from_file(name, ["model.backbone.weights=null"], variables={variable: str(root)})
    ran = RunConfig.from_file(tmp_path / "config.yaml")
    # what ran is the recipe but for the overrides: data from the variable's folder, the recipe's classes
    assert ran.model.class_names == recipe.model.class_names
    assert ran.data.augment == recipe.data.augment and ran.eval == recipe.eval
    assert ran.model.loss == recipe.model.loss and ran.model.priors == recipe.model.priors
    assert str(root) in json.dumps(ran.data.train.model_dump())
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_lines = [d for d in lines if d["kind"] == "train"]
    assert [d["step"] for d in train_lines] == [1, 2] and all(d["loss"] > 0 for d in train_lines)
    # the linear scaling rule: the recipe's lr is for its reference batch, this run's total is `batch`
    want = recipe.train.lr * batch / recipe.train.lr_reference_batch
    expected_first = want * recipe.train.warmup_factor  # step 0 of the warm-up
    assert train_lines[0]["lr"] == pytest.approx(expected_first, rel=1e-6)
    evals = [d for d in lines if d["kind"] == "eval"]
    assert len(evals) == 1 and 0.0 <= evals[0]["map"] <= 1.0  # the recipe's protocol ran at the end
    assert set(evals[0]["per_class"]) <= set(recipe.model.class_names)
    print(f"{name}: two steps and an evaluation in {seconds:.1f} s ({cpu:.1f} s of CPU)")


def test_data_root_variables(monkeypatch):
    monkeypatch.delenv("VOC_ROOT", raising=False)
    with pytest.raises(ValueError, match=r"data\.train\.root\.0: \$\{VOC_ROOT\} is not set.*--data-root"):
        RunConfig.from_file("voc0712_ssd300")
    monkeypatch.setenv("VOC_ROOT", "/from/env")
    cfg = RunConfig.from_file("voc0712_ssd300")
    assert (
        cfg.data.train.root == ["/from/env/VOC2007", "/from/env/VOC2012"] and cfg.data.val.root == "/from/env/VOC2007"
    )
    given = RunConfig.from_file("voc0712_ssd300", variables={"VOC_ROOT": "/given"})  # --data-root wins
    assert given.data.val.root == "/given/VOC2007"
    # an override replaces the path outright; other strings are left alone
    cfg = RunConfig.from_file("voc0712_ssd300", ["data.val.root=/elsewhere", "train.out_dir=runs/$x"])
    assert cfg.data.val.root == "/elsewhere" and cfg.train.out_dir == "runs/$x"
