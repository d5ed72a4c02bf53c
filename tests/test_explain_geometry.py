"""Per-tap geometry (each grid upsampled by its own stride) and scale-free normalisation
(issue 12, items 1 and 2)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import timm
import torch
from conftest import make_tiny_conformer

from conformer_xai import Explainer
from conformer_xai.explain.result import is_constant, normalise_per_image, upsample_grid

SIZES = [(112, 320), (100, 150), (224, 200)]
METHODS = ("features", "gradcam", "rollout")


def _models():
    torch.manual_seed(0)
    return {
        "conformer": make_tiny_conformer(),
        "resnet": timm.create_model("resnet18", num_classes=4).eval(),
        "deit": timm.create_model("deit_tiny_patch16_224", img_size=64, num_classes=4,
                                  dynamic_img_size=True, dynamic_img_pad=True).eval(),
    }


@pytest.fixture(scope="module")
def models():
    return _models()


def measured_strides(explainer: Explainer, side: int = 256) -> dict[str, int]:
    """The true stride of each map: input side / grid side at a multiple of 32, where no tap
    pads or drops a pixel."""
    x = torch.randn(1, 3, side, side)
    methods = [m for m in METHODS if m in explainer.applicable_methods()]
    raw = explainer.explain(x, methods=methods, upsample=False).raw
    out = {}
    for key, r in raw.items():
        assert side % r.shape[-2] == 0 and r.shape[-2] == r.shape[-1], key
        out[key] = side // r.shape[-2]
    return out


def reference_upsample(grid: np.ndarray, size: tuple[int, int], stride: int) -> np.ndarray:
    """Bilinear interpolation written out: cell i's value sits at the centre (i + 0.5) * stride of
    the rows it covers; pixel p (centre p + 0.5) interpolates between the two nearest centres,
    clamped at the edges."""
    def axis(n_cells: int, n_pixels: int) -> np.ndarray:
        return np.clip((np.arange(n_pixels) + 0.5) / stride - 0.5, 0, n_cells - 1)

    rows, cols = axis(grid.shape[0], size[0]), axis(grid.shape[1], size[1])
    by_row = np.stack([np.interp(cols, np.arange(grid.shape[1]), r) for r in grid])
    return np.stack([np.interp(rows, np.arange(grid.shape[0]), c) for c in by_row.T], axis=1)


@pytest.mark.parametrize("family", ["conformer", "resnet", "deit"])
@pytest.mark.parametrize("size", SIZES)
def test_every_tap_is_upsampled_by_its_true_stride(models, family, size):
    model = models[family]
    explainer = Explainer(model)
    strides = measured_strides(explainer)
    methods = [m for m in METHODS if m in explainer.applicable_methods()]
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(5))
    exp = explainer.explain(x, methods=methods)
    geometry = exp.meta["geometry"]
    assert set(geometry) == set(exp.raw) == set(strides)
    for key, raw in exp.raw.items():
        s = strides[key]
        assert geometry[key]["stride"] == [s, s], key
        assert geometry[key]["grid"] == list(raw.shape[-2:]), key
        # every kept cell starts inside the input; no cell the input does not reach is kept
        assert (raw.shape[-2] - 1) * s < size[0] and (raw.shape[-1] - 1) * s < size[1], key
        expected = reference_upsample(raw[0].numpy().astype(np.float64), size, s)
        lo, hi = expected.min(), expected.max()
        expected = (expected - lo) / (hi - lo) if hi > lo else np.zeros_like(expected)
        np.testing.assert_allclose(exp.maps[key][0].numpy(), expected, atol=2e-5, err_msg=key)


def test_conformer_block_12_cells_are_32_pixels_at_112x320(models):
    """The README's --input-size 112x320: 4 rows of stride-32 cells (not 28-pixel rows)."""
    exp = Explainer(models["conformer"]).explain(torch.randn(1, 3, 112, 320),
                                                 methods=("gradcam",), blocks=[12])
    assert exp.meta["geometry"]["gradcam/fused/cnn/12"] == {"stride": [32, 32], "grid": [4, 10]}
    assert exp.meta["geometry"]["gradcam/fused/transformer/12"] == {"stride": [16, 16],
                                                                    "grid": [7, 20]}
    # a single hot cell in the last row is centred on rows 96..127 -> centre row 111.5
    grid = torch.zeros(1, 4, 10)
    grid[0, 3, 4] = 1.0
    up = upsample_grid(grid, (112, 320), (32, 32))[0]
    assert up.shape == (112, 320)
    col = up[:, 4 * 32 + 16]
    assert int(col.argmax()) >= 96 and float(col[96:].min()) > 0.5


def test_cell_centres_land_at_half_stride(models):
    """A hot cell i upsampled by stride s peaks symmetrically around pixel (i + 0.5) * s."""
    for s in (4, 8, 16, 32):
        grid = torch.zeros(1, 5, 5)
        grid[0, 2, 2] = 1.0
        up = upsample_grid(grid, (5 * s, 5 * s), (s, s))[0].numpy()
        profile = up[:, int(2.5 * s)]
        centre = (profile * (np.arange(5 * s) + 0.5)).sum() / profile.sum()
        assert math.isclose(centre, 2.5 * s, abs_tol=1e-4), s


def test_zarr_store_records_tap_and_geometry(tmp_path, models):
    from PIL import Image

    from conformer_xai.batch import run_dataset
    from conformer_xai.batch.store import MapStore

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((100, 150, 3)) * 255).astype(np.uint8)
                        ).save(folder / f"{i}.png")
    summary = run_dataset(folder, tmp_path / "maps.zarr", models["conformer"], batch_size=2,
                          num_workers=0, methods=["gradcam"], blocks=[12], input_size=(100, 150),
                          crop=False, device="cpu", tap="attention_input")
    store = MapStore(summary["store"])
    assert store.config["tap"] == "attention_input"
    geometry = store.config["geometry"]
    assert geometry["gradcam/fused/cnn/12"] == {"stride": [32, 32], "grid": [4, 5]}
    for key in store.map_keys:
        assert list(store.group[f"maps/{key}"].shape[1:]) == geometry[key]["grid"]


def test_saved_explanation_keeps_geometry(tmp_path, models):
    from conformer_xai.explain.result import Explanation

    exp = Explainer(models["conformer"]).explain(torch.randn(1, 3, 100, 150),
                                                 methods=("gradcam",), blocks=[12])
    exp.save(tmp_path / "e.npz")
    back = Explanation.load(tmp_path / "e.npz")
    assert back.meta["geometry"] == exp.meta["geometry"] and back.meta["tap"] == "residual"


# ---------------------------------------------------------------------- scale-free normalisation
def test_normalised_maps_do_not_depend_on_the_scale_of_the_logits():
    """Grad-CAM, LayerCAM and HiResCAM are linear in the gradient, so their normalised maps
    must not move when a head's weights shrink by 1e-10 (Grad-CAM++'s alpha and gradient
    rollout's identity term are not scale-free by their definitions)."""
    model = make_tiny_conformer()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    methods = ("gradcam", "layercam", "hirescam")
    heads = ("fused", "cnn", "transformer")
    with pytest.warns(UserWarning, match="signed"):
        before = Explainer(model).explain(x, target=[1, 3], head=heads, methods=methods)
    tiny = copy.deepcopy(model)
    with torch.no_grad():
        for head in (tiny.conv_cls_head, tiny.trans_cls_head):
            head.weight.mul_(1e-10)
            head.bias.mul_(1e-10)
    with pytest.warns(UserWarning, match="signed"):
        after = Explainer(tiny).explain(x, target=[1, 3], head=heads, methods=methods)
    assert after.raw["gradcam/fused/cnn/6"].abs().max() < 1e-8  # the raw maps did shrink
    nonzero = 0
    for key, m in before.maps.items():
        torch.testing.assert_close(after.maps[key], m, atol=1e-4, rtol=0, msg=key)
        nonzero += int(m.flatten(1).amax(1).gt(0).sum())
    assert nonzero > len(before.maps)  # most maps are not empty: the check means something


def test_tiny_maps_with_structure_are_not_zeroed():
    m = torch.tensor([[[8e-14, 7e-13], [3e-13, 1e-13]]])
    out = normalise_per_image(m)
    torch.testing.assert_close(out, (m - 8e-14) / (7e-13 - 8e-14))
    assert not bool(is_constant(m)[0])


def test_constant_maps_become_zero_at_any_scale():
    maps = torch.stack([torch.zeros(3, 3), torch.full((3, 3), 1e-20), torch.full((3, 3), 5e6),
                        torch.full((3, 3), 1.0) + 1e-9 * torch.arange(9.0).reshape(3, 3)])
    assert torch.count_nonzero(normalise_per_image(maps)) == 0
    assert is_constant(maps).all()
    assert not is_constant(torch.arange(9.0).reshape(1, 3, 3) * 1e-30).any()
