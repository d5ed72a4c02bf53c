"""conformer_xai.data: preprocessing as timm does it, real image files of every kind, inputs,
input sizes and class names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import timm.data
import torch
from PIL import Image

import conformer_xai
from conformer_xai import data

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- fixtures
def tiny_conformer(**kwargs) -> torch.nn.Module:
    """A small Conformer with conformer_tiny_patch16's timm data config."""
    return timm.create_model("conformer_tiny_patch16", embed_dim=48, num_heads=2,
                             base_channel=8, **kwargs).eval()


def photo(width: int = 300, height: int = 200, seed: int = 0) -> Image.Image:
    """A deterministic RGB picture with smooth structure and noise (non-square)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 9.0)], axis=-1) * 200
    arr = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_conformer()


# --------------------------------------------------------------------------- preprocessing
def test_load_image_equals_timm_transform_for_conformer(tmp_path: Path, model) -> None:
    path = tmp_path / "photo.png"
    photo().save(path)
    x, image = conformer_xai.load_image(path, model)
    config = timm.data.resolve_data_config(model=model)
    assert config["interpolation"] == "bicubic" and config["crop_pct"] == 0.875
    with Image.open(path) as pil:
        expected = timm.data.create_transform(**config)(pil.convert("RGB"))
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    torch.testing.assert_close(x[0], expected, rtol=0, atol=1e-6)
    # the display image is the crop the model saw (resize shorter side to 256, centre 224)
    assert image.shape == (224, 224, 3) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    with Image.open(path) as pil:
        resized = pil.resize((384, 256), Image.BICUBIC)
    crop = np.asarray(resized, dtype=np.float32)[16:240, 80:304] / 255.0
    np.testing.assert_allclose(image, crop, atol=1e-6)
    mean = np.array(IMAGENET_MEAN, np.float32)
    std = np.array(IMAGENET_STD, np.float32)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), (image - mean) / std, atol=1e-5)


def test_data_config_and_input_size_overrides(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    photo(120, 90).save(path, quality=95)
    config = {"input_size": (3, 64, 96), "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5),
              "std": (0.25, 0.25, 0.25), "crop_pct": 1.0, "crop_mode": "center"}
    x, image = data.load_image(path, data_config=config)
    with Image.open(path) as pil:
        expected = timm.data.create_transform(**config)(pil.convert("RGB"))
    torch.testing.assert_close(x[0], expected, rtol=0, atol=1e-6)
    assert image.shape == (64, 96, 3)
    x2, image2 = data.load_image(path, data_config=config, input_size=(32, 48))
    assert x2.shape == (1, 3, 32, 48) and image2.shape == (32, 48, 3)
    with pytest.raises(ValueError, match="unknown data config keys"):
        data.load_image(path, data_config={"size": 3})
    with pytest.raises(ValueError, match="input_size"):
        data.load_image(path, input_size=(0, 4))
    for size in (True, 1.5, "96", (32, 4.5)):
        with pytest.raises(ValueError, match="input_size must be H or"):
            data.load_image(path, input_size=size)
    for bad, match in [({"interpolation": "nope"}, "unknown interpolation 'nope'; accepted: near"),
                       ({"crop_mode": "weird"}, "unknown crop_mode 'weird'; accepted: center"),
                       ({"crop_pct": 0}, r"crop_pct must be in \(0, 1\]"),
                       ({"std": (0, 0, 0)}, "std must be positive"),
                       ({"mean": (float("nan"),) * 3}, "mean must be finite")]:
        with pytest.raises(ValueError, match=match):
            data.load_image(path, data_config=bad)
    with pytest.raises(ValueError, match="load it first with conformer_xai.load_model"):
        data.load_image(path, "conformer_micro_patch16")


def test_no_crop_one_channel_non_square_spectrogram_input(tmp_path: Path) -> None:
    model = tiny_conformer(in_chans=1, num_classes=5)
    path = tmp_path / "spectrogram.png"
    gray = photo(200, 80).convert("L")
    gray.save(path)
    x, image = data.load_image(path, model, input_size=(64, 160), crop=False)
    assert x.shape == (1, 1, 64, 160)
    assert image.shape == (64, 160, 1)
    expected = np.asarray(gray.resize((160, 64), Image.BICUBIC), dtype=np.float32) / 255.0
    np.testing.assert_allclose(image[..., 0], expected, atol=1e-6)  # resized, nothing cropped
    mean, std = np.mean(IMAGENET_MEAN), np.mean(IMAGENET_STD)
    np.testing.assert_allclose(x[0, 0].numpy(), (expected - mean) / std, atol=1e-5)
    assert model(x).shape == (1, 5)
    config = data.resolve_data_config(model, input_size=(64, 160))
    assert config["input_size"] == (1, 64, 160)
    assert config["mean"] == pytest.approx((mean,)) and config["std"] == pytest.approx((std,))
    # a colour photo becomes grayscale (luma) for a 1-channel model
    colour = tmp_path / "colour.png"
    photo(200, 80).save(colour)
    x_c, _ = data.load_image(colour, model, input_size=(64, 160), crop=False)
    expected_c = np.asarray(photo(200, 80).convert("L").resize((160, 64), Image.BICUBIC),
                            dtype=np.float32) / 255.0
    np.testing.assert_allclose(x_c[0, 0].numpy(), (expected_c - mean) / std, atol=1e-5)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:20] = (230, 20, 20)  # red top half as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)
    _, image = data.load_image(path, input_size=(60, 40), crop=False)
    assert image.shape == (60, 40, 3)
    # displayed upright: 40 wide, 60 tall, the red half now on the right
    assert image[:, 25:, 0].mean() > 0.8 and image[:, :15, 0].mean() < 0.1


def test_rgba_composited_on_white_and_palette_images(tmp_path: Path) -> None:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :16] = (255, 0, 0, 0)  # fully transparent red -> white
    rgba[:, 16:] = (0, 0, 255, 255)  # opaque blue
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    _, image = data.load_image(path, input_size=32, crop=False)
    np.testing.assert_allclose(image[:, :14], 1.0, atol=1e-6)
    np.testing.assert_allclose(image[:, 18:], np.broadcast_to([0, 0, 1], (32, 14, 3)), atol=1e-6)

    palette = Image.fromarray(np.repeat(np.arange(4, dtype=np.uint8), 8)[None].repeat(32, 0), "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    p_path = tmp_path / "palette.png"
    palette.save(p_path)
    _, image = data.load_image(p_path, input_size=32, crop=False)
    np.testing.assert_allclose(image[:, 9:15], np.broadcast_to([1, 0, 0], (32, 6, 3)), atol=1e-6)
    palette.info["transparency"] = 3  # index 3 (blue) transparent -> white
    t_path = tmp_path / "palette_transparent.png"
    palette.save(t_path, transparency=3)
    _, image = data.load_image(t_path, input_size=32, crop=False)
    np.testing.assert_allclose(image[:, 26:], 1.0, atol=1e-6)


def test_sixteen_bit_and_grayscale_images(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 48 * 40).reshape(40, 48).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    _, image = data.load_image(path, input_size=(40, 48), crop=False)
    assert image.shape == (40, 48, 3)
    np.testing.assert_allclose(image[..., 0], ramp / 65535.0, atol=1e-5)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    # 16-bit precision survives: neighbouring values differ by less than one 8-bit step
    assert 0 < np.diff(image[0, :, 0]).max() < 1 / 255

    gray = tmp_path / "gray.png"
    photo(64, 48).convert("L").save(gray)
    x, image = data.load_image(gray, data_config={"input_size": (3, 32, 32)})
    assert x.shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(image[..., 0], image[..., 1])


def test_npy_arrays_as_images_with_as_image(tmp_path: Path) -> None:
    spec = np.linspace(-80.0, 0.0, 20 * 30).reshape(20, 30)
    path = tmp_path / "spec.npy"
    np.save(path, spec)
    x, image = data.load_image(path, data_config={"input_size": (1, 20, 30)}, crop=False,
                               as_image=True)
    assert x.shape == (1, 1, 20, 30)
    np.testing.assert_allclose(image[..., 0], (spec + 80.0) / 80.0, atol=1e-5)
    bad = tmp_path / "cube.npy"
    np.save(bad, np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"cube.npy: not an image file \(an array read as an "
                                         r"image must hold a non-empty 2-D"):
        data.load_image(bad, as_image=True)


def test_raw_arrays_are_model_inputs_as_they_are(tmp_path: Path) -> None:
    import torch

    spec = np.linspace(-80.0, 0.0, 40 * 50, dtype=np.float32).reshape(40, 50)
    for name, save, value in (("a.npy", np.save, spec), ("b.npy", np.save, spec[None]),
                              ("c.pt", lambda p, v: torch.save(v, p), torch.from_numpy(spec)[None])):
        np_path = tmp_path / name
        save(np_path, value)
        x, display = data.load_image(np_path)
        assert x.shape == (1, 1, 40, 50) and x.dtype == torch.float32
        np.testing.assert_array_equal(x[0, 0].numpy(), spec)  # no scaling, resizing, cropping
        np.testing.assert_allclose(display, (spec + 80.0) / 80.0, atol=1e-6)

    class Three(torch.nn.Module):
        in_chans = 3

    x3, _ = data.load_array(tmp_path / "a.npy", Three())
    assert x3.shape == (1, 3, 40, 50) and torch.equal(x3[0, 0], x3[0, 2])
    wrong = tmp_path / "two.npy"
    np.save(wrong, np.zeros((2, 40, 50), dtype=np.float32))
    with pytest.raises(ValueError, match=r"two.npy: the array has 2 channels .* the model "
                                         r"takes 3"):
        data.load_array(wrong, Three())
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((40, 50), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="nan.npy: the array holds NaN or infinite values"):
        data.load_image(nan)
    with pytest.raises(ValueError, match="input_size and crop=False do not apply"):
        data.load_image(tmp_path / "a.npy", input_size=(64, 64), crop=False)
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((20, 30), dtype=np.float32))
    with pytest.raises(ValueError, match="needs at least 32 x 32"):
        data.load_image(small)


def test_bad_files_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.png: no such file"):
        data.load_image(tmp_path / "missing.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.png: not an image file \(empty file\)"):
        data.load_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture at all\n")
    with pytest.raises(ValueError, match=r"notes.jpg: not an image file \(unknown or unsupported"):
        data.load_image(text)
    good = tmp_path / "good.png"
    photo(64, 64).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated.png: not an image file \(unreadable"):
        data.load_image(truncated)
    with pytest.raises(ValueError, match="it is a folder"):
        data.load_image(tmp_path)


# --------------------------------------------------------------------------- inputs
def _touch_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    photo(8, 8).save(path)
    return path


def test_find_images_mirrors_folders_and_never_collides(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _touch_png(root / "cat.png")
    _touch_png(root / "a" / "cat.png")
    _touch_png(root / "b" / "deep" / "cat.JPG")
    _touch_png(root / "b" / "dog.png")
    (root / "b" / "readme.txt").write_text("x")
    _touch_png(root / ".hidden" / "x.png")
    found = data.find_images(root)
    assert [(p.relative_to(root).as_posix(), s) for p, s in found] == [
        ("cat.png", "cat"), ("a/cat.png", "a/cat"), ("b/dog.png", "b/dog"),
        ("b/deep/cat.JPG", "b/deep/cat"),
    ]
    stems = [s for _, s in found]
    assert len(set(stems)) == len(stems) == 4


def test_find_images_files_globs_and_collisions(tmp_path: Path) -> None:
    one = _touch_png(tmp_path / "x" / "img.png")
    two = _touch_png(tmp_path / "y" / "img.png")
    assert data.find_images([one]) == [(one, "img")]
    assert data.find_images([one, two]) == [(one, "x/img"), (two, "y/img")]
    assert data.find_images([one, one]) == [(one, "img")]
    same_folder = [_touch_png(tmp_path / "z" / "pic.png"), tmp_path / "z" / "pic.jpg"]
    photo(8, 8).save(same_folder[1])
    assert sorted(s for _, s in data.find_images(tmp_path / "z")) == ["pic_jpg", "pic_png"]
    globbed = data.find_images(str(tmp_path / "*" / "img.png"))
    assert [s for _, s in globbed] == ["x/img", "y/img"]
    recursive = data.find_images(str(tmp_path / "**" / "*.png"))
    assert {s for _, s in recursive} == {"x/img", "y/img", "z/pic"}
    # a file named directly is kept whatever its extension (reading it then reports the problem)
    odd = tmp_path / "notes.txt"
    odd.write_text("x")
    assert data.find_images(odd) == [(odd, "notes")]


def test_find_images_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope: no such file or folder"):
        data.find_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="folder holds no image files"):
        data.find_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no files match"):
        data.find_images(str(tmp_path / "*.png"))
    with pytest.raises(ValueError, match="matches no image files"):
        data.find_images(str(tmp_path / "empty" / "*"))
    with pytest.raises(ValueError, match="no input paths"):
        data.find_images([])


# --------------------------------------------------------------------------- class names
def test_imagenet_class_names_from_timm() -> None:
    names = data.class_names_for(1000)
    assert len(names) == 1000
    assert names[:3] == ["tench", "goldfish", "great white shark"]
    assert names[281] == "tabby"
    model = tiny_conformer()
    assert data.class_names_for(model) == names


def test_labels_files_and_length_check(tmp_path: Path) -> None:
    txt = tmp_path / "labels.txt"
    txt.write_text("speech\nmusic\nnoise\n\n")
    assert data.class_names_for(3, txt) == ["speech", "music", "noise"]
    as_list = tmp_path / "labels.json"
    as_list.write_text(json.dumps(["a", "b"]))
    assert data.class_names_for(2, as_list) == ["a", "b"]
    as_dict = tmp_path / "map.json"
    as_dict.write_text(json.dumps({"1": "dog", "0": "cat"}))
    assert data.class_names_for(2, as_dict) == ["cat", "dog"]
    inverse = tmp_path / "inverse.json"
    inverse.write_text(json.dumps({"dog": 1, "cat": 0}))
    assert data.class_names_for(2, inverse) == ["cat", "dog"]
    with pytest.raises(ValueError, match="3 class names for a head with 5 classes"):
        data.class_names_for(5, txt)
    gaps = tmp_path / "gaps.json"
    gaps.write_text(json.dumps({"0": "a", "2": "c"}))
    with pytest.raises(ValueError, match="without gaps"):
        data.class_names_for(2, gaps)
    with pytest.raises(FileNotFoundError, match="no such labels file"):
        data.class_names_for(2, tmp_path / "none.txt")
    model = tiny_conformer(num_classes=3)
    assert data.class_names_for(model, ["x", "y", "z"]) == ["x", "y", "z"]
    assert data.class_names_for(model) == ["0", "1", "2"]  # unknown head: indices


def test_embedded_models_get_synthetic_class_names() -> None:
    from conformer_xai.synthetic import CLASS_NAMES

    model = timm.create_model("conformer_micro_patch16", num_classes=len(CLASS_NAMES))
    assert data.class_names_for(model) == list(CLASS_NAMES)
    other = tiny_conformer(num_classes=len(CLASS_NAMES))
    other.weights_source = "embedded"
    assert data.class_names_for(other) == list(CLASS_NAMES)
    other.weights_source = "random"
    assert data.class_names_for(other) == [str(i) for i in range(len(CLASS_NAMES))]
