"""The three small models: timm registration, sizes, and the shipped (embedded) weights."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.models.resnet import Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer

import conformer_xai  # noqa: F401  (registers the small models with timm)
from conformer_xai.models import Conformer
from conformer_xai.models.micro import MICRO_MODELS
from conformer_xai.synthetic import CLASS_NAMES, NUM_CLASSES, SyntheticScenes, evaluate_accuracy

WEIGHTS = resources.files("conformer_xai") / "weights"
PARAMS = {"conformer_micro_patch16": 1_531_800, "resnet_micro": 1_989_066,
          "deit_micro_patch16": 1_423_402}
CLASSES = {"conformer_micro_patch16": Conformer, "resnet_micro": ResNet,
           "deit_micro_patch16": VisionTransformer}


def _meta(name: str) -> dict:
    return json.loads((WEIGHTS / f"{name}.json").read_text())


@pytest.mark.parametrize("name", MICRO_MODELS)
def test_builds_through_timm(name):
    torch.manual_seed(0)
    model = timm.create_model(name)
    assert type(model) is CLASSES[name]
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 128, 128) and cfg["crop_pct"] == 1.0
    assert cfg["interpolation"] == "bilinear" and cfg["num_classes"] == NUM_CLASSES
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["mean"] == (0.485, 0.456, 0.406) and data_cfg["std"] == (0.229, 0.224, 0.225)
    assert model.eval()(torch.zeros(1, 3, 128, 128)).shape == (1, NUM_CLASSES)


def test_names_are_listed_by_timm():
    assert set(timm.list_models("*micro*")) >= set(MICRO_MODELS)


def test_resnet_micro_has_bottleneck_stages():
    model = timm.create_model("resnet_micro")
    for i in range(1, 5):
        blocks = list(getattr(model, f"layer{i}"))
        assert len(blocks) == 2 and all(isinstance(b, Bottleneck) for b in blocks)
    assert model.num_features == 768


def test_structures_match_the_published_families():
    conformer = timm.create_model("conformer_micro_patch16")
    assert conformer.depth == 12 and conformer.patch_size == 16 and conformer.num_heads == 3
    assert conformer.embed_dim == 96
    deit = timm.create_model("deit_micro_patch16")
    assert len(deit.blocks) == 12 and deit.embed_dim == 96 and deit.global_pool == "token"
    assert deit(torch.zeros(1, 3, 96, 160)).shape == (1, NUM_CLASSES)  # dynamic image size


@pytest.mark.parametrize("name", MICRO_MODELS)
def test_pretrained_loads_the_shipped_weights(name):
    model = timm.create_model(name, pretrained=True)
    shipped = load_file(str(WEIGHTS / f"{name}.safetensors"))
    own = model.state_dict()
    assert set(own) == set(shipped)
    for key, value in shipped.items():
        assert torch.equal(own[key], value.float() if value.is_floating_point() else value), key


def test_pretrained_with_another_class_count_keeps_the_backbone():
    model = timm.create_model("resnet_micro", pretrained=True, num_classes=3)
    shipped = load_file(str(WEIGHTS / "resnet_micro.safetensors"))
    assert model.fc.weight.shape == (3, 768)
    assert torch.equal(model.conv1.weight, shipped["conv1.weight"].float())
    assert torch.equal(model.layer4[1].conv3.weight, shipped["layer4.1.conv3.weight"].float())


@pytest.mark.parametrize("name", MICRO_MODELS)
def test_shipped_files_and_metadata(name):
    meta = _meta(name)
    data = (WEIGHTS / f"{name}.safetensors").read_bytes()
    assert len(data) < 5_000_000
    assert hashlib.sha256(data).hexdigest() == meta["sha256"]
    assert meta["name"] == name and meta["classes"] == list(CLASS_NAMES)
    assert meta["dtype"] == "float16" and meta["parameters"] == PARAMS[name]
    assert meta["command"].startswith(f"conformer-xai train-synthetic --model {name} ")
    assert f"--steps {meta['steps']} --seed {meta['seed']}" in meta["command"]
    assert meta["test"]["split"] == "test" and meta["test"]["n"] == 1000
    assert meta["test"]["accuracy"] >= 0.5  # chance is 0.1


def test_model_card_reports_the_metadata():
    card = (WEIGHTS / "MODEL_CARD.md").read_text()
    for name in MICRO_MODELS:
        meta = _meta(name)
        assert name in card
        assert f"{100 * meta['test']['accuracy']:.1f} %" in card
        assert meta["command"] in card


@pytest.fixture(scope="module")
def test_subset():
    """The held-out scenes behind each model's reported subset accuracy (the same for all)."""
    subsets = {(m["test_subset"]["seed"], m["test_subset"]["n"]) for m in map(_meta, MICRO_MODELS)}
    assert len(subsets) == 1
    seed, n = subsets.pop()
    data = SyntheticScenes(n, seed=seed, split="test")
    batch = torch.utils.data.default_collate([data[i] for i in range(n)])
    return batch["image"], batch["label"]


@pytest.mark.parametrize("name", MICRO_MODELS)
def test_shipped_model_reaches_its_reported_accuracy(name, test_subset):
    """Re-evaluated on the same held-out scenes, within 2 points of the metadata."""
    images, labels = test_subset
    model = timm.create_model(name, pretrained=True).eval()
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x in images.split(100)])
    accuracy = (pred == labels).float().mean().item()
    assert abs(accuracy - _meta(name)["test_subset"]["accuracy"]) <= 0.02


def test_evaluate_accuracy_agrees_with_a_direct_evaluation(test_subset):
    images, labels = test_subset
    model = timm.create_model("deit_micro_patch16", pretrained=True).eval()
    with torch.no_grad():
        direct = (model(images[:40]).argmax(1) == labels[:40]).float().mean().item()
    meta = _meta("deit_micro_patch16")["test_subset"]
    assert evaluate_accuracy(model, n=40, seed=meta["seed"], split="test") == pytest.approx(direct)
