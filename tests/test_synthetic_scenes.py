"""The procedural scene generator: determinism, masks, classes, sizes, the Dataset, the examples."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conformer_xai.synthetic import (
    CLASS_NAMES,
    MEAN,
    NUM_CLASSES,
    PART_CLASSES,
    PART_LABELS,
    STD,
    SyntheticScenes,
    normalize,
    render_scene,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "scenes"


@pytest.fixture(scope="module")
def scenes() -> list:
    """Three scenes of every class from the test split."""
    data = SyntheticScenes(3 * NUM_CLASSES, seed=11, split="test")
    return [data.scene(i) for i in range(len(data))]


def _sobel(image: np.ndarray) -> np.ndarray:
    g = image.astype(np.float32).mean(axis=2)
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    gx[:, 1:-1] = g[:, 2:] - g[:, :-2]
    gy[1:-1, :] = g[2:, :] - g[:-2, :]
    return np.hypot(gx, gy)


def _boundary(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


# ------------------------------------------------------------------------------ determinism
def test_same_seed_gives_identical_images_and_masks():
    a = SyntheticScenes(12, seed=5, split="train")
    b = SyntheticScenes(12, seed=5, split="train")
    for i in (0, 7, 11):
        sa, sb = a.scene(i), b.scene(i)
        assert np.array_equal(sa.image, sb.image)
        assert np.array_equal(sa.object_mask, sb.object_mask)
        assert np.array_equal(sa.part_mask, sb.part_mask)
        assert sa.label == sb.label
    assert np.array_equal(render_scene(42).image, render_scene(42).image)


def test_sample_does_not_depend_on_access_order():
    data = SyntheticScenes(10, seed=2, split="val")
    backwards = {i: data[i]["pixels"] for i in reversed(range(10))}
    fresh = SyntheticScenes(10, seed=2, split="val")
    for i in (3, 9, 0):
        assert torch.equal(fresh[i]["pixels"], backwards[i])


def test_index_seed_and_split_change_the_scene():
    base = SyntheticScenes(20, seed=0, split="train").scene(4).image
    assert not np.array_equal(base, SyntheticScenes(20, seed=0, split="train").scene(14).image)
    assert not np.array_equal(base, SyntheticScenes(20, seed=1, split="train").scene(4).image)
    assert not np.array_equal(base, SyntheticScenes(20, seed=0, split="test").scene(4).image)
    images = [SyntheticScenes(20, seed=0, split="test").scene(i).image for i in range(20)]
    assert len({im.tobytes() for im in images}) == 20


# ------------------------------------------------------------------------------ masks
def test_object_mask_edges_are_image_edges(scenes):
    """The mask boundary lies on strong image edges; the same mask shifted by 6 px does not."""
    wins = 0
    for s in scenes:
        grad = _sobel(s.image)
        edge = grad[_boundary(s.object_mask)].mean()
        shifted = np.roll(s.object_mask, (6, -6), axis=(0, 1))
        wins += edge > 1.5 * grad[_boundary(shifted)].mean()
    assert wins >= 0.9 * len(scenes)


def test_object_is_large_and_inside_the_image(scenes):
    for s in scenes:
        side = s.image.shape[0]
        ys, xs = np.nonzero(s.object_mask)
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        assert 0.2 * side <= extent <= 0.65 * side, (s.class_name, extent)
        border = np.concatenate([s.object_mask[0], s.object_mask[-1],
                                 s.object_mask[:, 0], s.object_mask[:, -1]])
        assert not border.any()


def test_part_mask_is_a_small_part_inside_the_object(scenes):
    for s in scenes:
        if s.class_name in PART_CLASSES:
            assert s.has_part
            frac = s.part_mask.sum() / s.object_mask.sum()
            assert 0.05 <= frac <= 0.12, (s.class_name, frac)
            assert not (s.part_mask & ~s.object_mask).any()
        else:
            assert not s.has_part
            assert not s.part_mask.any()


def test_part_mask_covers_the_coloured_head(scenes):
    """Only the head's colour separates the two bird classes: red versus blue."""
    birds = [s for s in scenes if s.class_name in PART_CLASSES]
    assert {s.class_name for s in birds} == set(PART_CLASSES)
    for s in birds:
        core = s.part_mask & ~_boundary(s.part_mask)
        r, _, b = s.image[core].astype(np.float32).T
        red_share = float(np.mean(r > b))
        if s.class_name == "red_headed_bird":
            assert red_share > 0.6
        else:
            assert red_share < 0.4


# ------------------------------------------------------------------------------ classes
def test_classes_constants():
    assert 8 <= NUM_CLASSES == len(CLASS_NAMES) <= 10
    assert len(set(CLASS_NAMES)) == NUM_CLASSES
    assert len(PART_CLASSES) >= 2
    assert tuple(CLASS_NAMES.index(n) for n in PART_CLASSES) == PART_LABELS
    assert MEAN == (0.485, 0.456, 0.406) and STD == (0.229, 0.224, 0.225)


def test_dataset_labels_are_balanced_and_named():
    data = SyntheticScenes(2 * NUM_CLASSES, seed=0, split="test")
    scenes = [data.scene(i) for i in range(len(data))]
    assert Counter(s.label for s in scenes) == Counter({k: 2 for k in range(NUM_CLASSES)})
    assert all(s.class_name == CLASS_NAMES[s.label] for s in scenes)


def test_random_labels_are_balanced_ish():
    counts = Counter(render_scene(seed, size=64).label for seed in range(200))
    assert set(counts) == set(range(NUM_CLASSES))
    assert min(counts.values()) >= 8


# ------------------------------------------------------------------------------ sizes, errors
@pytest.mark.parametrize("size", [64, 160])
def test_other_sizes(size):
    s = render_scene(1, size=size, label=8)
    assert s.image.shape == (size, size, 3) and s.image.dtype == np.uint8
    assert s.object_mask.shape == s.part_mask.shape == (size, size)
    assert s.object_mask.dtype == s.part_mask.dtype == np.bool_
    assert s.part_mask.any()


@pytest.mark.parametrize("size", [100, 127, 32, 0, 128.0])
def test_size_must_be_a_multiple_of_32(size):
    with pytest.raises(ValueError, match="multiple of 32"):
        render_scene(0, size=size)
    with pytest.raises(ValueError, match="multiple of 32"):
        SyntheticScenes(4, size=size)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be one of"):
        SyntheticScenes(4, split="holdout")
    with pytest.raises(ValueError, match="label must be in 0..9"):
        render_scene(0, label=NUM_CLASSES)
    with pytest.raises(ValueError, match="non-negative"):
        SyntheticScenes(4, seed=-1)
    with pytest.raises(IndexError):
        SyntheticScenes(4).scene(4)


# ------------------------------------------------------------------------------ Dataset items
def test_item_is_normalised_and_consistent_with_the_scene():
    data = SyntheticScenes(4, seed=3, split="test")
    item = data[2]
    scene = data.scene(2)
    assert item["image"].shape == (3, 128, 128) and item["image"].dtype == torch.float32
    expected = (torch.from_numpy(scene.image).float().permute(2, 0, 1) / 255
                - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose(item["image"], expected, atol=1e-6)
    assert torch.equal(item["pixels"], torch.from_numpy(scene.image))
    assert torch.equal(item["object_mask"], torch.from_numpy(scene.object_mask))
    assert item["label"] == scene.label and item["class_name"] == scene.class_name
    assert torch.allclose(normalize(scene.image), expected, atol=1e-6)


def test_hflip_flips_image_and_masks_together():
    flipped = SyntheticScenes(40, seed=0, split="train", hflip=True)
    plain = SyntheticScenes(40, seed=0, split="train")
    n_flipped = 0
    for i in range(0, 40, 4):
        a, b = flipped[i], plain[i]
        if torch.equal(a["pixels"], b["pixels"]):
            assert torch.equal(a["object_mask"], b["object_mask"])
        else:
            n_flipped += 1
            assert torch.equal(a["pixels"], b["pixels"].flip(1))
            assert torch.equal(a["object_mask"], b["object_mask"].flip(1))
            assert torch.equal(a["part_mask"], b["part_mask"].flip(1))
    assert 0 < n_flipped < 10


def test_dataloader_collates_batches():
    loader = torch.utils.data.DataLoader(SyntheticScenes(6, seed=1), batch_size=3)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 128, 128)
    assert batch["object_mask"].shape == (3, 128, 128)
    assert batch["label"].tolist() == [0, 1, 2]
    assert batch["class_name"] == list(CLASS_NAMES[:3])


# ------------------------------------------------------------------------------ examples/scenes
def test_example_scenes_are_reproduced_by_the_generator():
    listing = json.loads((EXAMPLES / "scenes.json").read_text())
    entries = listing["scenes"]
    assert len(entries) >= 6
    assert {e["class_name"] for e in entries} >= set(PART_CLASSES)
    images = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix == ".png")
    assert images == sorted(e["image"] for e in entries)
    data = SyntheticScenes(listing["n"], seed=listing["seed"], split=listing["split"],
                           size=listing["size"])
    for e in entries:
        scene = data.scene(e["index"])
        assert e["label"] == scene.label and e["class_name"] == scene.class_name
        assert np.array_equal(np.asarray(Image.open(EXAMPLES / e["image"])), scene.image)
        mask = np.asarray(Image.open(EXAMPLES / e["object_mask"])) > 127
        assert np.array_equal(mask, scene.object_mask)
        if scene.has_part:
            part = np.asarray(Image.open(EXAMPLES / e["part_mask"])) > 127
            assert np.array_equal(part, scene.part_mask)
        else:
            assert e["part_mask"] is None
